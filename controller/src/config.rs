//! Node configuration (`node.toml`): parsing and validation with errors that name the file,
//! the key and what is wrong.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::actors::ActorLimits;
use crate::field::FieldConfig;
use crate::net::LinkProfile;
use crate::raft::timing::{HEARTBEAT_MS_MIN, Timing};

/// A configuration problem, naming the file, the key and what to do.
#[derive(Debug, thiserror::Error)]
#[error("{file}: {key}: {problem}")]
pub struct ConfigError {
    /// The file.
    pub file: String,
    /// The key (dotted path), or "-" for the whole file.
    pub key: String,
    /// What is wrong and what to do.
    pub problem: String,
}

/// One cluster member as the config lists it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerConfig {
    /// Node id.
    pub id: u64,
    /// Raft TCP address (host:port).
    pub addr: String,
    /// The node's X25519 public key as `ghatta keygen` prints it (base64 or hex): only
    /// frames sealed with a listed key open. Required for every peer when `key_file` is set.
    #[serde(default)]
    pub public_key: Option<String>,
}

/// Explicit Raft timing, overriding the link profile.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimingConfig {
    /// Heartbeat, ms.
    pub heartbeat_ms: u64,
    /// Election timeout lower bound, ms.
    pub election_timeout_ms_min: u64,
    /// Election timeout upper bound, ms.
    pub election_timeout_ms_max: u64,
}

/// Which hardware the node drives (`[board]`, chosen by `kind`).
///
/// In node.toml the kind is a key inside the table (`kind = "sim"`); [`NodeConfig::parse`]
/// moves it outside (`{ sim = { ... } }`) before deserializing, because serde's internally
/// tagged enums buffer the table and lose the positions of its keys: an error inside
/// `[board]` then pointed at the `[board]` line, not at the key that was wrong.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
pub enum BoardConfig {
    /// A real board: relays on the GPIO character device, an ADS1115 on I2C, PZEM-004T
    /// meters on a Modbus-RTU serial line (`[board.relays]`, `[board.analog]`,
    /// `[board.modbus]`, `[board.grid]`; see `ghatta_hal::LinuxBoardConfig`). Customer
    /// numbers in it are grid customer ids.
    Linux(Box<ghatta_hal::LinuxBoardConfig>),
    /// Readings recorded in CSV files, fed to the field loop one grid row per sample (see
    /// `ghatta_hal::ReplayBoard`): replay an incident through protection and billing.
    /// Customer numbers in the meter file are grid customer ids.
    Replay {
        /// The grid recording.
        grid: PathBuf,
        /// The meter recording, if any.
        #[serde(default)]
        meters: Option<PathBuf>,
    },
    /// A built-in simulated village (demo, bench, development).
    Sim {
        /// Households on this board.
        #[serde(default = "default_sim_customers")]
        customers: u32,
        /// First customer id (ids are `first_customer..first_customer+customers`).
        #[serde(default = "default_first_customer")]
        first_customer: u32,
        /// Seed of the simulated loads.
        #[serde(default)]
        seed: u64,
        /// Plant time per real second (1 = real time; the demo uses 60 so meters move).
        #[serde(default = "default_speed")]
        speed: u32,
        /// Customers (grid ids) whose meters never answer: a meter fault to rehearse the
        /// alarms and pages with (`meter_silent`), or to test them.
        #[serde(default)]
        silent_meters: Vec<u32>,
    },
}

fn default_sim_customers() -> u32 {
    100
}
fn default_first_customer() -> u32 {
    1
}
fn default_speed() -> u32 {
    1
}

impl Default for BoardConfig {
    fn default() -> Self {
        BoardConfig::Sim {
            customers: default_sim_customers(),
            first_customer: 1,
            seed: 0,
            speed: 1,
            silent_meters: Vec::new(),
        }
    }
}

/// The whole node configuration.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// This node's id (1 or more; unique in the cluster; never reuse a removed node's id).
    pub id: u64,
    /// Cluster name.
    #[serde(default = "default_cluster_name")]
    pub cluster_name: String,
    /// Data directory (redb database).
    pub data_dir: PathBuf,
    /// Raft listener (host:port).
    pub raft_listen: String,
    /// Admin API listener; loopback unless you know why.
    #[serde(default = "default_admin_listen")]
    pub admin_listen: String,
    /// A second listener for the cockpit's pages (and the same API), e.g. on the powerhouse
    /// LAN: "0.0.0.0:8080". None by default. From any address but the board's own, reading
    /// needs a login with the admin token and changing needs the token (`admin::auth`).
    #[serde(default)]
    pub dashboard_listen: Option<String>,
    /// Link profile deriving the Raft timing.
    #[serde(default = "default_profile")]
    pub link_profile: LinkProfile,
    /// Explicit timing (overrides `link_profile`).
    #[serde(default)]
    pub timing: Option<TimingConfig>,
    /// Form the cluster from `peers` on first start (every founding member may say true).
    #[serde(default)]
    pub bootstrap: bool,
    /// Founding members, including this node.
    #[serde(default)]
    pub peers: Vec<PeerConfig>,
    /// Actor limits.
    #[serde(default)]
    pub actors: ActorLimits,
    /// Hardware.
    #[serde(default)]
    pub board: BoardConfig,
    /// Field loop.
    #[serde(default)]
    pub field: FieldConfig,
    /// Serial radio modems (`[[radio]]`), used beside TCP: each lists the peers it reaches.
    #[serde(default)]
    pub radio: Vec<crate::net::radio::serial::RadioConfig>,
    /// This node's private key (`ghatta keygen --out DIR` writes DIR/node.key). When set,
    /// every frame on every link is sealed and `peers` must list every member's public key.
    /// Required by `ghatta run` unless `allow_unsealed` says otherwise.
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// Run with unsealed links (no `key_file`): anyone who reaches `raft_listen` can then vote,
    /// append and forward proposals. For a test bench on an isolated network only; off by
    /// default, so a forgotten key stops the node instead of opening the grid.
    #[serde(default)]
    pub allow_unsealed: bool,
    /// Upload of committed records to the central data center (`[wan]`); none when absent.
    #[serde(default)]
    pub wan: Option<crate::wan::WanConfig>,
    /// Levels of this board's alarm rules (`[alarms.frequency_low]` ...: `raise`, `clear`,
    /// `raise_after_s`, `clear_after_s`); rules not listed keep their defaults
    /// (`notify::rules`).
    #[serde(default)]
    pub alarms: std::collections::BTreeMap<String, crate::notify::RuleLevels>,
    /// A GSM modem that sends alarm changes by SMS (`[sms]`); none when absent. One board of a
    /// grid is enough: each board with one sends its own alarms.
    #[serde(default)]
    pub sms: Option<crate::notify::sms::SmsConfig>,
    /// Public keys (base64, `ghatta actor keygen`'s operator.pub) whose signatures deploy
    /// actor modules. Only the cluster's first list counts: it is proposed into the log by
    /// the first node that needs it, and replicas check deploys against the replicated list,
    /// never this one (ARCHITECTURE.md, "Deployed actors").
    #[serde(default)]
    pub actor_signers: Vec<String>,
    /// How the node's database files use memory (`[storage]`).
    #[serde(default)]
    pub storage: StorageConfig,
}

/// `[storage]`: memory of the node's database files.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageConfig {
    /// redb's cache for each of `raft-log.redb`, `state.redb` and `journal.redb`, KiB. Three
    /// of these are most of what a node's resident memory grows by after its start
    /// (BENCHMARKS.md, "Resident memory of a node"); a larger cache buys little, since the
    /// working set (recent log entries, a few hundred accounts) is small.
    #[serde(default = "default_cache_kib")]
    pub cache_kib: u32,
}

/// Smallest `[storage] cache_kib`, KiB: 64 of redb's 4 KiB pages, room for the B-tree paths
/// a commit touches, so a small cache does not send every write back to the card for reads
/// (not measured below the 1 MiB default).
pub const STORAGE_CACHE_KIB_MIN: u32 = 256;
/// Largest `[storage] cache_kib`, KiB: three of these must fit well inside the unit's
/// `MemoryHigh=96M` (deploy/ghatta.service).
pub const STORAGE_CACHE_KIB_MAX: u32 = 16 * 1024;

fn default_cache_kib() -> u32 {
    (crate::storage::REDB_CACHE_BYTES / 1024) as u32
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            cache_kib: default_cache_kib(),
        }
    }
}

impl StorageConfig {
    /// `cache_kib` in bytes.
    pub fn cache_bytes(&self) -> usize {
        self.cache_kib as usize * 1024
    }
}

impl NodeConfig {
    /// `actor_signers` as keys (checked by `validate`; an unparsable one is left out).
    pub fn actor_signer_keys(&self) -> Vec<crate::actors::deploy::SignerKey> {
        self.actor_signers
            .iter()
            .filter_map(|k| crate::actors::deploy::parse_signer(k).ok())
            .collect()
    }
}

fn default_cluster_name() -> String {
    "ghatta".into()
}
fn default_admin_listen() -> String {
    "127.0.0.1:7100".into()
}
fn default_profile() -> LinkProfile {
    LinkProfile::Wifi
}

/// The kinds `[board]` may name, as `kind = "..."`.
const BOARD_KINDS: &str = "\"linux\", \"replay\" or \"sim\"";

/// `[board]` with `kind = "sim"` inside, rewritten as `{ sim = { ...the other keys } }` with
/// every key's position kept (see [`BoardConfig`]); or the position and text of what is wrong.
fn board_by_kind(
    board: toml::Spanned<toml::de::DeValue<'_>>,
) -> Result<toml::Spanned<toml::de::DeValue<'_>>, (std::ops::Range<usize>, String)> {
    let span = board.span();
    let toml::de::DeValue::Table(mut table) = board.into_inner() else {
        return Err((
            span,
            format!("[board] must be a table with kind = {BOARD_KINDS}"),
        ));
    };
    let Some((key, kind)) = table.remove_entry("kind") else {
        return Err((span, format!("missing; set kind = {BOARD_KINDS}")));
    };
    let Some(name) = kind.get_ref().as_str().map(str::to_owned) else {
        return Err((kind.span(), format!("must be a string: {BOARD_KINDS}")));
    };
    let mut outer = toml::de::DeTable::new();
    outer.insert(
        toml::Spanned::new(key.span(), name.into()),
        toml::Spanned::new(span.clone(), toml::de::DeValue::Table(table)),
    );
    Ok(toml::Spanned::new(span, toml::de::DeValue::Table(outer)))
}

impl NodeConfig {
    /// Load and validate a config file.
    pub fn load(path: &Path) -> Result<NodeConfig, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: file.clone(),
            key: "-".into(),
            problem: format!("cannot read: {e}; pass the node's config with --config FILE"),
        })?;
        Self::parse(&text, &file)
    }

    /// Parse and validate config text; `file` names it in errors.
    pub fn parse(text: &str, file: &str) -> Result<NodeConfig, ConfigError> {
        let at = |span: Option<std::ops::Range<usize>>, problem: String| {
            let (line, col) = span
                .map(|s| {
                    let before = &text[..s.start.min(text.len())];
                    (
                        before.matches('\n').count() + 1,
                        s.start - before.rfind('\n').map(|i| i + 1).unwrap_or(0) + 1,
                    )
                })
                .unwrap_or((0, 0));
            ConfigError {
                file: file.into(),
                key: format!("line {line} column {col}"),
                problem,
            }
        };
        let toml_err = |e: toml::de::Error| at(e.span(), e.message().to_string());
        let mut root = toml::de::DeTable::parse(text).map_err(toml_err)?;
        if let Some(board) = root.get_mut().remove("board") {
            let board = board_by_kind(board).map_err(|(span, problem)| {
                let mut e = at(Some(span), problem);
                e.key = format!("board.kind ({})", e.key);
                e
            })?;
            root.get_mut()
                .insert(toml::Spanned::new(0..0, "board".into()), board);
        }
        let cfg = NodeConfig::deserialize(toml::de::Deserializer::from(root)).map_err(toml_err)?;
        cfg.validate(file)?;
        Ok(cfg)
    }

    fn validate(&self, file: &str) -> Result<(), ConfigError> {
        let err = |key: &str, problem: String| ConfigError {
            file: file.into(),
            key: key.into(),
            problem,
        };
        if self.id == 0 {
            return Err(err("id", "must be 1 or more (0 is reserved)".into()));
        }
        if !(STORAGE_CACHE_KIB_MIN..=STORAGE_CACHE_KIB_MAX).contains(&self.storage.cache_kib) {
            return Err(err(
                "storage.cache_kib",
                format!(
                    "{} KiB is outside {STORAGE_CACHE_KIB_MIN}..={STORAGE_CACHE_KIB_MAX}; the default is {} KiB (remove the key to use it)",
                    self.storage.cache_kib,
                    default_cache_kib()
                ),
            ));
        }
        self.raft_listen.parse::<SocketAddr>().map_err(|e| {
            err(
                "raft_listen",
                format!(
                    "`{}` is not host:port ({e}), e.g. \"0.0.0.0:7000\"",
                    self.raft_listen
                ),
            )
        })?;
        let admin: SocketAddr = self.admin_listen.parse().map_err(|e| {
            err(
                "admin_listen",
                format!(
                    "`{}` is not host:port ({e}), e.g. \"127.0.0.1:7100\"",
                    self.admin_listen
                ),
            )
        })?;
        if !admin.ip().is_loopback() {
            tracing::warn!(
                "{file}: admin_listen {admin} is not loopback: the admin API will be reachable from the network (reads need a login from other addresses, changes the admin token)"
            );
        }
        if let Some(d) = &self.dashboard_listen {
            let dash: SocketAddr = d.parse().map_err(|e| {
                err(
                    "dashboard_listen",
                    format!("`{d}` is not host:port ({e}), e.g. \"0.0.0.0:8080\""),
                )
            })?;
            if dash == admin {
                return Err(err(
                    "dashboard_listen",
                    format!(
                        "`{d}` is admin_listen's address too: give it another port, or leave it out"
                    ),
                ));
            }
            if !dash.ip().is_loopback() {
                tracing::warn!(
                    "{file}: dashboard_listen {dash} is reachable from the network: readers there must log in with the admin token, sent in clear over plain HTTP (deploy/README.md)"
                );
            }
        }
        if self.data_dir.as_os_str().is_empty() {
            // An empty path is the working directory: the redb files and admin.token would
            // land wherever the node happened to be started.
            return Err(err(
                "data_dir",
                "is empty; set it to the node's own directory, e.g. \"/var/lib/ghatta\" (deploy/README.md)".into(),
            ));
        }
        if let Some(t) = &self.timing {
            if t.heartbeat_ms < HEARTBEAT_MS_MIN {
                return Err(err(
                    "timing.heartbeat_ms",
                    format!(
                        "{} ms is below the minimum of {HEARTBEAT_MS_MIN} ms (every Raft RPC's deadline is the heartbeat, and an append's answer includes an fsync); set at least {HEARTBEAT_MS_MIN}, or remove [timing] to derive it from link_profile",
                        t.heartbeat_ms
                    ),
                ));
            }
            if t.election_timeout_ms_min <= t.heartbeat_ms
                || t.election_timeout_ms_max <= t.election_timeout_ms_min
            {
                return Err(err(
                    "timing",
                    "need heartbeat_ms < election_timeout_ms_min < election_timeout_ms_max".into(),
                ));
            }
        }
        if self.bootstrap && !self.peers.iter().any(|p| p.id == self.id) {
            return Err(err(
                "peers",
                format!(
                    "bootstrap is true but this node (id {}) is not listed in peers",
                    self.id
                ),
            ));
        }
        let mut seen = std::collections::BTreeSet::new();
        for (i, p) in self.peers.iter().enumerate() {
            if p.id == 0 || !seen.insert(p.id) {
                return Err(err(
                    &format!("peers[{i}].id"),
                    format!("{} is 0 or listed twice", p.id),
                ));
            }
            if p.addr.parse::<SocketAddr>().is_err() && !p.addr.contains(':') {
                return Err(err(
                    &format!("peers[{i}].addr"),
                    format!("`{}` is not host:port", p.addr),
                ));
            }
        }
        self.validate_keys(file)?;
        if self.actor_signers.len() > crate::actors::deploy::SIGNERS_MAX {
            return Err(err(
                "actor_signers",
                format!(
                    "{} keys listed; at most {}",
                    self.actor_signers.len(),
                    crate::actors::deploy::SIGNERS_MAX
                ),
            ));
        }
        for (i, k) in self.actor_signers.iter().enumerate() {
            if let Err(e) = crate::actors::deploy::parse_signer(k) {
                return Err(err(&format!("actor_signers[{i}]"), e));
            }
        }
        if self.actors.fuel_per_delivery == 0 || self.actors.memory_bytes < 64 * 1024 {
            return Err(err(
                "actors",
                "fuel_per_delivery must be > 0 and memory_bytes at least 65536 (one wasm page)"
                    .into(),
            ));
        }
        self.field
            .validate()
            .map_err(|(key, problem)| err(&key, problem))?;
        let mut devices = std::collections::BTreeSet::new();
        for (i, r) in self.radio.iter().enumerate() {
            r.validate(self.id)
                .map_err(|(key, problem)| err(&format!("radio[{i}].{key}"), problem))?;
            if !devices.insert(r.device.as_str()) {
                return Err(err(
                    &format!("radio[{i}].device"),
                    format!("{} is listed twice; one [[radio]] per modem", r.device),
                ));
            }
        }
        if let Some(wan) = &self.wan {
            wan.validate()
                .map_err(|(key, problem)| err(&key, problem))?;
        }
        crate::notify::AlarmRules::new(&self.alarms)
            .map_err(|e| err(&format!("alarms.{}", e.rule), e.why))?;
        if let Some(sms) = &self.sms {
            sms.check().map_err(|problem| err("sms", problem))?;
        }
        if let BoardConfig::Linux(board) = &self.board {
            board.validate().map_err(|e| {
                err(
                    &format!("board.{}", e.device),
                    format!("{}: {}", e.kind, e.detail),
                )
            })?;
        }
        Ok(())
    }

    fn validate_keys(&self, file: &str) -> Result<(), ConfigError> {
        let err = |key: String, problem: String| ConfigError {
            file: file.into(),
            key,
            problem,
        };
        for (i, p) in self.peers.iter().enumerate() {
            match &p.public_key {
                Some(k) => {
                    crate::net::secure::PublicKey::parse(k).map_err(|e| {
                        err(
                            format!("peers[{i}].public_key"),
                            format!("{e}; copy the key `ghatta keygen` printed on node {}", p.id),
                        )
                    })?;
                }
                None if self.key_file.is_some() => {
                    return Err(err(
                        format!("peers[{i}].public_key"),
                        format!(
                            "missing for node {}: with key_file set, every member's public key must be listed (run `ghatta keygen --out DIR` on node {} and copy the key it prints)",
                            p.id, p.id
                        ),
                    ));
                }
                None => {}
            }
        }
        if self.key_file.is_none() && self.peers.iter().any(|p| p.public_key.is_some()) {
            return Err(err(
                "key_file".into(),
                "peers list public keys but this node has no key_file, so its links would not be sealed; set key_file to the node.key `ghatta keygen` wrote".into(),
            ));
        }
        Ok(())
    }

    /// The members' public keys by node id (empty without `key_file`; validated at load).
    pub fn peer_keys(&self) -> Result<Vec<(u64, crate::net::secure::PublicKey)>, ConfigError> {
        self.peers
            .iter()
            .enumerate()
            .filter_map(|(i, p)| p.public_key.as_ref().map(|k| (i, p.id, k)))
            .map(|(i, id, k)| {
                crate::net::secure::PublicKey::parse(k)
                    .map(|k| (id, k))
                    .map_err(|e| ConfigError {
                        file: "node.toml".into(),
                        key: format!("peers[{i}].public_key"),
                        problem: e.to_string(),
                    })
            })
            .collect()
    }

    /// The Raft timing in force.
    pub fn timing(&self) -> Timing {
        match &self.timing {
            Some(t) => Timing {
                heartbeat_ms: t.heartbeat_ms,
                election_timeout_ms_min: t.election_timeout_ms_min,
                election_timeout_ms_max: t.election_timeout_ms_max,
            },
            None => Timing::for_profile(self.link_profile),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
id = 2
data_dir = "/tmp/x"
raft_listen = "127.0.0.1:7002"
bootstrap = true
peers = [{ id = 1, addr = "127.0.0.1:7001" }, { id = 2, addr = "127.0.0.1:7002" }]
"#;

    #[test]
    fn good_config_parses() {
        let c = NodeConfig::parse(GOOD, "node.toml").unwrap();
        assert_eq!(c.id, 2);
        assert_eq!(c.timing(), Timing::for_profile(LinkProfile::Wifi));
    }

    #[test]
    fn keys_are_checked_with_the_fix_named() {
        let k1 = crate::net::secure::SecretKey::from_bytes([1; 32]).public();
        let k2 = crate::net::secure::SecretKey::from_bytes([2; 32]).public();
        let keyed = GOOD
            .replace(
                "addr = \"127.0.0.1:7001\" }",
                &format!("addr = \"127.0.0.1:7001\", public_key = \"{k1}\" }}"),
            )
            .replace(
                "addr = \"127.0.0.1:7002\" }",
                &format!(
                    "addr = \"127.0.0.1:7002\", public_key = \"{}\" }}",
                    k2.to_hex()
                ),
            );
        let with_key = format!("key_file = \"/etc/ghatta/node.key\"\n{keyed}");
        let c = NodeConfig::parse(&with_key, "n.toml").unwrap();
        assert_eq!(c.peer_keys().unwrap(), vec![(1, k1), (2, k2)]);
        // Keys listed but no key_file: the links would silently stay open.
        let e = NodeConfig::parse(&keyed, "n.toml").unwrap_err();
        assert_eq!(e.key, "key_file");
        // key_file set, one key missing.
        let one = format!(
            "key_file = \"k\"\n{}",
            GOOD.replace(
                "addr = \"127.0.0.1:7001\" }",
                &format!("addr = \"127.0.0.1:7001\", public_key = \"{k1}\" }}"),
            )
        );
        let e = NodeConfig::parse(&one, "n.toml").unwrap_err();
        assert_eq!(e.key, "peers[1].public_key");
        assert!(e.problem.contains("ghatta keygen"), "{e}");
        let bad = with_key.replace(&k1.to_string(), "AAAA");
        let e = NodeConfig::parse(&bad, "n.toml").unwrap_err();
        assert_eq!(e.key, "peers[0].public_key");
        // Existing configs without keys still load.
        assert!(
            NodeConfig::parse(GOOD, "n.toml")
                .unwrap()
                .key_file
                .is_none()
        );
    }

    #[test]
    fn errors_name_file_and_key() {
        let e = NodeConfig::parse(&GOOD.replace("id = 2", "id = 0"), "node.toml").unwrap_err();
        assert_eq!((e.file.as_str(), e.key.as_str()), ("node.toml", "id"));
        let e = NodeConfig::parse(
            &GOOD.replace("127.0.0.1:7002\"\nbootstrap", "localhost\"\nbootstrap"),
            "n.toml",
        )
        .unwrap_err();
        assert_eq!(e.key, "raft_listen");
        let e = NodeConfig::parse(&format!("{GOOD}\nbogus = 1\n"), "n.toml").unwrap_err();
        assert!(e.to_string().contains("bogus"), "{e}");
        assert!(e.key.starts_with("line "), "{e}");
        let e = NodeConfig::parse(&GOOD.replace("{ id = 2, addr", "{ id = 3, addr"), "n.toml")
            .unwrap_err();
        assert_eq!(e.key, "peers");
    }

    /// Errors inside `[board]` pointed at the `[board]` line, not at the key (issue 26):
    /// serde's internally tagged enum buffered the table and lost the keys' positions.
    #[test]
    fn errors_inside_board_point_at_the_key() {
        let line_of = |text: &str, needle: &str| {
            text.lines()
                .position(|l| l.starts_with(needle))
                .map(|i| i + 1)
                .expect("needle in text")
        };
        let cases = [
            (
                "[board]\nkind = \"sim\"\ncustomers = \"many\"\n",
                "customers",
            ),
            (
                "[board]\nkind = \"sim\"\nseed = 1\ncustomerz = 3\n",
                "customerz",
            ),
            (
                "[board]\nkind = \"linux\"\n[board.modbus]\nport = \"/dev/ttyUSB0\"\nbaudd = 9600\n",
                "baudd",
            ),
            ("[board]\nseed = 1\nkind = \"moon\"\n", "kind"),
        ];
        for (board, key) in cases {
            let text = format!("{GOOD}\n{board}");
            let e = NodeConfig::parse(&text, "n.toml").unwrap_err();
            let want = format!("line {} column", line_of(&text, key));
            assert!(e.key.contains(&want), "{board}: wanted {want}: {e}");
        }
        let e = NodeConfig::parse(&format!("{GOOD}\n[board]\nseed = 1\n"), "n.toml").unwrap_err();
        assert!(e.key.starts_with("board.kind"), "{e}");
        assert!(e.problem.contains("\"sim\""), "{e}");
        // The shapes that were valid still are.
        let c = NodeConfig::parse(
            &format!("{GOOD}\n[board]\nkind = \"sim\"\ncustomers = 3\n"),
            "n.toml",
        )
        .unwrap();
        assert!(matches!(c.board, BoardConfig::Sim { customers: 3, .. }));
        let c = NodeConfig::parse(
            &format!("{GOOD}\n[board]\nkind = \"replay\"\ngrid = \"g.csv\"\n"),
            "n.toml",
        )
        .unwrap();
        assert!(matches!(c.board, BoardConfig::Replay { .. }));
        assert_eq!(
            NodeConfig::parse(GOOD, "n.toml").unwrap().board,
            BoardConfig::default()
        );
    }

    /// `data_dir = ""` was accepted and the node wrote its redb files and admin.token into
    /// whatever directory it was started from (issue 26).
    #[test]
    fn empty_data_dir_is_refused() {
        let e = NodeConfig::parse(
            &GOOD.replace("data_dir = \"/tmp/x\"", "data_dir = \"\""),
            "n.toml",
        )
        .unwrap_err();
        assert_eq!(e.key, "data_dir", "{e}");
        assert!(e.problem.contains("/var/lib/ghatta"), "{e}");
    }

    /// `[storage] cache_kib` sizes redb's cache per file; outside its range it is refused
    /// with the range and the default named (issue 25 item 3).
    #[test]
    fn storage_cache_is_sized_in_config_and_bounded() {
        let c = NodeConfig::parse(GOOD, "n.toml").unwrap();
        assert_eq!(c.storage.cache_bytes(), crate::storage::REDB_CACHE_BYTES);
        let with = |kib: u32| format!("{GOOD}\n[storage]\ncache_kib = {kib}\n");
        let c = NodeConfig::parse(&with(512), "n.toml").unwrap();
        assert_eq!(c.storage.cache_bytes(), 512 * 1024);
        for bad in [STORAGE_CACHE_KIB_MIN - 1, STORAGE_CACHE_KIB_MAX + 1] {
            let e = NodeConfig::parse(&with(bad), "n.toml").unwrap_err();
            assert_eq!(e.key, "storage.cache_kib", "{e}");
            assert!(
                e.problem.contains(&STORAGE_CACHE_KIB_MIN.to_string()),
                "{e}"
            );
            assert!(e.problem.contains("default"), "{e}");
        }
    }

    /// A 10 ms heartbeat was accepted though the documented minimum is
    /// [`HEARTBEAT_MS_MIN`] (issue 26).
    #[test]
    fn heartbeat_below_the_minimum_is_refused() {
        let timing = |h: u64| {
            format!(
                "{GOOD}\n[timing]\nheartbeat_ms = {h}\nelection_timeout_ms_min = 2000\nelection_timeout_ms_max = 4000\n"
            )
        };
        let e = NodeConfig::parse(&timing(10), "n.toml").unwrap_err();
        assert_eq!(e.key, "timing.heartbeat_ms", "{e}");
        assert!(e.problem.contains(&HEARTBEAT_MS_MIN.to_string()), "{e}");
        let e = NodeConfig::parse(&timing(HEARTBEAT_MS_MIN - 1), "n.toml").unwrap_err();
        assert_eq!(e.key, "timing.heartbeat_ms", "{e}");
        let c = NodeConfig::parse(&timing(HEARTBEAT_MS_MIN), "n.toml").unwrap();
        assert_eq!(c.timing().heartbeat_ms, HEARTBEAT_MS_MIN);
        let e = NodeConfig::parse(&timing(2000), "n.toml").unwrap_err();
        assert_eq!(e.key, "timing", "{e}");
    }

    #[test]
    fn radio_sections_parse_and_errors_name_the_key() {
        let radio = "\n[[radio]]\ndevice = \"/dev/ttyUSB0\"\nbaud = 57600\nair_bitrate = 64000\nmtu = 100\npeers = [1]\n";
        let c = NodeConfig::parse(&format!("{GOOD}{radio}"), "node.toml").unwrap();
        assert_eq!(c.radio.len(), 1);
        assert_eq!(
            c.radio[0].link_params().bitrate_bps,
            46_080,
            "the 57,600 8N1 line is slower"
        );
        for (from, to, key) in [
            ("mtu = 100", "mtu = 9000", "radio[0].mtu"),
            ("baud = 57600", "baud = 57000", "radio[0].baud"),
            ("peers = [1]", "peers = [2]", "radio[0].peers[0]"),
            ("peers = [1]", "peers = []", "radio[0].peers"),
            (
                "air_bitrate = 64000",
                "air_bitrate = 5",
                "radio[0].air_bitrate",
            ),
        ] {
            let e = NodeConfig::parse(&format!("{GOOD}{}", radio.replace(from, to)), "node.toml")
                .unwrap_err();
            assert_eq!((e.file.as_str(), e.key.as_str()), ("node.toml", key), "{e}");
        }
        let e = NodeConfig::parse(&format!("{GOOD}{radio}{radio}"), "n.toml").unwrap_err();
        assert_eq!(e.key, "radio[1].device", "{e}");
    }
}
