//! Command-line helpers: shutdown signals, human formatting, argument parsing.

pub mod accounts;
pub mod actor;
pub mod bench;
pub mod demo;
pub mod selftest;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use ghatta::clock::utc_text;
use ghatta::config::PeerConfig;
use serde_json::Value;

/// Where `ghatta run`'s config lives on a board (install.sh puts it there).
pub const NODE_CONFIG_DEFAULT: &str = "/etc/ghatta/node.toml";

/// The admin token for a change: `token_file` when given, else `admin.token` in the data
/// directory that the node's `config` names. Never a path the server names: whoever
/// answers on the admin port could otherwise make the CLI read and send any small file.
pub fn admin_token(token_file: Option<&Path>, config: &Path) -> anyhow::Result<String> {
    let path = match token_file {
        Some(p) => p.to_path_buf(),
        None => {
            let cfg = ghatta::config::NodeConfig::load(config).context(
                "cannot find the admin token: pass --token-file, or --config with the node's config",
            )?;
            cfg.data_dir.join(ghatta::admin::auth::TOKEN_FILE)
        }
    };
    Ok(ghatta::admin::auth::read_token(&path)?)
}

/// Where a read command finds the admin token (`--token-file`, `--config`).
#[derive(clap::Args, Debug, Clone)]
pub struct TokenArgs {
    /// The admin token file (default: `admin.token` in the data directory of --config); a
    /// node answers reads from another machine only with it.
    #[arg(long)]
    pub token_file: Option<PathBuf>,
    /// The node's config, whose data directory holds the admin token.
    #[arg(long, default_value = NODE_CONFIG_DEFAULT)]
    pub config: PathBuf,
}

impl TokenArgs {
    /// The token a read from `admin` carries (see [`read_token_for`]).
    pub fn for_read(&self, admin: &str) -> anyhow::Result<Option<String>> {
        read_token_for(admin, self.token_file.as_deref(), &self.config)
    }
}

/// The admin token a read from the node at `admin` carries. A node answers reads from
/// another machine only with it (`admin::auth`), so for any address but loopback, or when
/// `--token-file` is given, it is required and read as for a change. On loopback reads are
/// open: the token goes along when this user can read the node's, and the read goes without
/// it otherwise (an operator not in the node's group can still look).
pub fn read_token_for(
    admin: &str,
    token_file: Option<&Path>,
    config: &Path,
) -> anyhow::Result<Option<String>> {
    if token_file.is_some() || !is_loopback(admin) {
        return admin_token(token_file, config).map(Some).with_context(|| {
            format!(
                "a read from {admin}, which is not this machine, needs the node's admin token: \
                 pass --token-file with a copy of its admin.token (mode 0600)"
            )
        });
    }
    let Ok(cfg) = ghatta::config::NodeConfig::load(config) else {
        return Ok(None);
    };
    let path = cfg.data_dir.join(ghatta::admin::auth::TOKEN_FILE);
    if std::fs::File::open(&path).is_err() {
        return Ok(None);
    }
    Ok(Some(ghatta::admin::auth::read_token(&path)?))
}

/// Whether `addr` (`host:port`) names this machine: a loopback address or `localhost`.
pub fn is_loopback(addr: &str) -> bool {
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The operator-credit token: `token_file` when given, else `operator-credit.token` in the data
/// directory of the node's `config` (read as the admin token is, never from a path the server
/// names).
pub fn credit_token(token_file: Option<&Path>, config: &Path) -> anyhow::Result<String> {
    let path = match token_file {
        Some(p) => p.to_path_buf(),
        None => {
            let cfg = ghatta::config::NodeConfig::load(config).context(
                "cannot find the operator-credit token: pass --credit-token-file, or --config with the node's config",
            )?;
            cfg.data_dir.join(ghatta::admin::auth::CREDIT_TOKEN_FILE)
        }
    };
    Ok(ghatta::admin::auth::read_token(&path)?)
}

/// Most digits in an OpenPAYGO Token of the standard form.
pub const TOKEN_CODE_DIGITS_MAX: usize = 9;

/// A token code as a person types it: digits, with spaces and dashes (as printed on slips)
/// ignored.
pub fn parse_token_code(typed: &str) -> anyhow::Result<u32> {
    let digits: String = typed.chars().filter(|c| !matches!(c, ' ' | '-')).collect();
    if digits.is_empty()
        || digits.len() > TOKEN_CODE_DIGITS_MAX
        || !digits.bytes().all(|b| b.is_ascii_digit())
    {
        anyhow::bail!(
            "--code {typed:?} is not a token: a token is up to {TOKEN_CODE_DIGITS_MAX} digits \
             (spaces and dashes allowed); check the SMS or slip and type it again"
        );
    }
    Ok(digits.parse()?)
}

/// A free TCP port on loopback, for the local clusters of `demo` and `selftest`.
pub fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")
        .context("cannot bind a loopback port; is the loopback interface up?")?
        .local_addr()?
        .port())
}

/// The members `1..=nodes` of a local cluster on loopback, each with a free port and a
/// throwaway key pair written under `dir/keys-ID`, so the cluster's links are sealed as a real
/// grid's are. Returns the peers (addresses and public keys) and, in the same order, each
/// node's private key file.
pub fn loopback_peers_with_keys(
    dir: &Path,
    nodes: u64,
) -> anyhow::Result<(Vec<PeerConfig>, Vec<PathBuf>)> {
    let mut peers = Vec::new();
    let mut key_files = Vec::new();
    for id in 1..=nodes {
        let keys = ghatta_proto::keys::generate_into(&dir.join(format!("keys-{id}")))?;
        peers.push(PeerConfig {
            id,
            addr: format!("127.0.0.1:{}", free_port()?),
            public_key: Some(keys.public.to_base64()),
        });
        key_files.push(keys.private_path);
    }
    Ok((peers, key_files))
}

/// Wait for Ctrl-C or SIGTERM (systemd's stop).
pub async fn wait_for_shutdown() {
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                    return;
                }
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}

/// Parse "20s", "2m", "500ms", "1h" or plain seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = s
        .find(|c: char| !c.is_ascii_digit())
        .map(|i| s.split_at(i))
        .unwrap_or((s, "s"));
    let n: u64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a duration like 20s, 2m, 500ms"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" | "" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        "h" => Ok(Duration::from_secs(n * 3600)),
        _ => Err(format!("`{s}`: unknown unit `{unit}` (use ms, s, m or h)")),
    }
}

/// Parse "A:B,C:D" into pairs of integers.
pub fn parse_pairs(s: &str) -> anyhow::Result<Vec<(u64, u64)>> {
    s.split(',')
        .map(|p| {
            let (a, b) = p
                .split_once(':')
                .ok_or_else(|| anyhow::anyhow!("`{p}` is not A:B"))?;
            Ok((a.trim().parse()?, b.trim().parse()?))
        })
        .collect()
}

/// One-line human form of a node status.
pub fn format_status(s: &Value) -> String {
    let g = |k: &str| s.get(k).cloned().unwrap_or(Value::Null);
    let sealed = match s.get("security") {
        Some(sec) if sec.is_object() => {
            let n = |k: &str| sec.get(k).and_then(Value::as_u64).unwrap_or(0);
            let dropped: u64 = [
                "truncated",
                "unsealed",
                "unknown_sender",
                "not_for_me",
                "forged",
                "replayed",
                "out_of_window",
                "older_epoch",
                "stale_receiver_epoch",
            ]
            .iter()
            .map(|k| n(k))
            .sum();
            format!(
                " | sealed: epoch {} opened {} dropped {dropped} (forged {}, replayed {}, unknown sender {}, unsealed {})",
                n("boot_epoch"),
                n("opened"),
                n("forged"),
                n("replayed"),
                n("unknown_sender"),
                n("unsealed")
            )
        }
        _ => " | links NOT sealed (no key_file)".to_string(),
    };
    let line = format!(
        "node {} {} term {} leader {} commit {} applied {} hash {} | customers {} ({} disconnected) | voters {} learners {} | frames in {} rejected {}",
        g("id"),
        g("role").as_str().unwrap_or("?"),
        g("term"),
        g("leader"),
        g("commit_index"),
        g("applied_index"),
        g("state_hash")
            .as_str()
            .map(|h| &h[..h.len().min(16)])
            .unwrap_or("?"),
        g("customers"),
        g("disconnected"),
        g("voters"),
        g("learners"),
        s.pointer("/link/frames_received")
            .cloned()
            .unwrap_or(Value::Null),
        s.pointer("/link/rejected").cloned().unwrap_or(Value::Null),
    );
    line + &sealed + &format_radios(s) + &format_field(s)
}

/// The radio modems' part of the status line (`radio` in the JSON), one part per modem.
/// What a radio drops never reaches the frame layer's `rejected`, so it is shown here.
fn format_radios(s: &Value) -> String {
    let Some(radios) = s.get("radio").and_then(Value::as_array) else {
        return String::new();
    };
    radios
        .iter()
        .map(|r| {
            let n = |k: &str| {
                r.pointer(&format!("/counters/{k}"))
                    .and_then(Value::as_u64)
                    .unwrap_or(0)
            };
            format!(
                " | radio {}: packets in {} out {} crc errors {} malformed {} not for us {} fragments dropped {} frames dropped {}",
                r.get("device").and_then(Value::as_str).unwrap_or("?"),
                n("packets_received"),
                n("packets_sent"),
                n("crc_rejected"),
                n("malformed"),
                n("not_for_us"),
                n("fragments_dropped"),
                n("frames_dropped"),
            )
        })
        .collect()
}

/// The field loop's part of the status line (`field` in the JSON), if the node runs one.
fn format_field(s: &Value) -> String {
    let Some(f) = s.get("field").filter(|f| f.is_object()) else {
        return String::new();
    };
    let n = |k: &str| f.get(k).and_then(Value::as_u64).unwrap_or(0);
    let grid = if n("grid_healthy") == 1 {
        "ok".to_string()
    } else {
        format!("FAILING for {} ms", n("grid_failing_ms"))
    };
    let mut out = format!(
        " | grid {grid}: samples {} failed {} | meters: reads {} failed {} silent {}",
        n("samples"),
        n("read_errors"),
        n("meter_reads"),
        n("meter_read_errors"),
        n("meters_silent"),
    );
    // The journal: meter reads waiting to be committed (the backlog an island builds up),
    // and how many were written and drained since start.
    out += &format!(
        " | journal: backlog {} reads ({} bytes), journaled {} drained {}, telemetry {}, errors {}{}",
        n("journal_reads"),
        n("journal_reads_bytes"),
        n("reads_journaled"),
        n("reads_committed"),
        n("journal_telemetry"),
        n("journal_errors"),
        if n("journal_over_limit") == 1 {
            ", OVER ITS LIMIT"
        } else {
            ""
        },
    );
    if n("modbus_requests") > 0 || n("modbus_disconnects") > 0 {
        out += &format!(
            " | modbus: requests {} ok {} timeouts {} crc {} io {} adapter gone {} reopened {}",
            n("modbus_requests"),
            n("modbus_ok"),
            n("modbus_timeouts"),
            n("modbus_crc_errors"),
            n("modbus_io_errors"),
            n("modbus_disconnects"),
            n("modbus_reopens"),
        );
    }
    out
}

/// Human form of a proposal receipt, and whether the actor took the input. A node answers a
/// refused input with 422 and the actor's reason (the CLI then fails with it); this judges a
/// 2xx answer too, so a refusal never reads as success.
pub fn format_receipt(r: &Value, what: &str) -> (String, bool) {
    let n = |k: &str| r.get(k).and_then(Value::as_u64).unwrap_or(0);
    let reasons: Vec<&str> = r
        .get("refusals")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(|x| x.get("text")?.as_str()).collect())
        .unwrap_or_default();
    if r.get("duplicate").and_then(Value::as_bool) == Some(true) {
        (
            format!("{what}: already applied (duplicate), index {}", n("index")),
            true,
        )
    } else if n("rejected") > 0 {
        let why = if reasons.is_empty() {
            "no reason given".to_string()
        } else {
            reasons.join("; ")
        };
        (
            format!(
                "{what}: committed at index {} but REFUSED by the actor: {why}",
                n("index")
            ),
            false,
        )
    } else if n("trapped") > 0 {
        (
            format!(
                "{what}: committed at index {} but the actor trapped; nothing changed",
                n("index")
            ),
            false,
        )
    } else {
        (format!("{what}: applied at index {}", n("index")), true)
    }
}

/// How long `ghatta member` watches a change the node reported in progress (or could not
/// confirm) before saying so: a change waits for a quorum of the old and the new voters, which
/// on a radio with a node restarting takes tens of seconds; longer, and the operator is better
/// told "in progress" with the membership as it stands.
pub const MEMBER_SETTLE_WAIT: Duration = Duration::from_secs(30);
/// How often it looks (`/status` is a cheap read).
pub const MEMBER_POLL_INTERVAL: Duration = Duration::from_millis(500);
/// Exit status of `ghatta member` when the change was made but had not committed by the end
/// of [`MEMBER_SETTLE_WAIT`] (0: committed; 1: refused or failed).
pub const MEMBER_IN_PROGRESS_EXIT: u8 = 2;

/// A membership change, as the CLI judges whether it is done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberGoal {
    /// `id` is a member (a learner, or a voter already).
    Added(u64),
    /// `id` is a voter.
    Voter(u64),
    /// `id` is not a member.
    Gone(u64),
}

/// Whether a node's `/status` shows the change done and committed.
pub fn member_settled(goal: MemberGoal, status: &Value) -> bool {
    let ids = |k: &str| -> Vec<u64> {
        status
            .get(k)
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_u64).collect())
            .unwrap_or_default()
    };
    let (voters, learners) = (ids("voters"), ids("learners"));
    let in_progress = status
        .get("membership_in_progress")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    !in_progress
        && match goal {
            MemberGoal::Added(id) => voters.contains(&id) || learners.contains(&id),
            MemberGoal::Voter(id) => voters.contains(&id),
            MemberGoal::Gone(id) => !voters.contains(&id) && !learners.contains(&id),
        }
}

/// What `ghatta member` prints and exits with, from the node's answer (`None`: the admin call
/// itself timed out): committed at once, or watched on `admin`'s `/status` for up to
/// [`MEMBER_SETTLE_WAIT`], then committed or "in progress" with the membership as it stands.
pub async fn member_outcome(
    admin: &str,
    token: &str,
    goal: MemberGoal,
    answer: Option<Value>,
) -> anyhow::Result<std::process::ExitCode> {
    let list = |v: &Value, k: &str| v.get(k).cloned().unwrap_or(Value::Null);
    let (state, note) = match &answer {
        Some(a) => (
            a.get("state")
                .and_then(Value::as_str)
                .unwrap_or("unconfirmed"),
            a.get("note")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
        ),
        None => (
            "unconfirmed",
            "the node did not answer in time: the change may or may not have been made".into(),
        ),
    };
    if state == "committed" {
        let a = answer.as_ref().unwrap_or(&Value::Null);
        println!(
            "committed: {note} (voters {}, learners {})",
            list(a, "voters"),
            list(a, "learners")
        );
        return Ok(std::process::ExitCode::SUCCESS);
    }
    eprintln!(
        "{note}; watching the membership for up to {} s",
        MEMBER_SETTLE_WAIT.as_secs()
    );
    let deadline = tokio::time::Instant::now() + MEMBER_SETTLE_WAIT;
    let mut last = Value::Null;
    loop {
        if let Ok(s) =
            ghatta::admin::client::call_with_token(admin, "GET", "/status", None, Some(token)).await
        {
            if member_settled(goal, &s) {
                println!(
                    "committed: voters {}, learners {}",
                    list(&s, "voters"),
                    list(&s, "learners")
                );
                return Ok(std::process::ExitCode::SUCCESS);
            }
            last = s;
        }
        if tokio::time::Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(MEMBER_POLL_INTERVAL).await;
    }
    println!(
        "in progress: {note}; after {} s the membership is voters {}, learners {}{}: it completes once a majority of the old and of the new voters answer; check `ghatta status`",
        MEMBER_SETTLE_WAIT.as_secs(),
        list(&last, "voters"),
        list(&last, "learners"),
        if last.get("membership_in_progress").and_then(Value::as_bool) == Some(true) {
            " (a change still being committed)"
        } else {
            ""
        }
    );
    Ok(std::process::ExitCode::from(MEMBER_IN_PROGRESS_EXIT))
}

/// `ghatta alarms` for a person: one line per alarm, newest first, and a note when older
/// ones may exist beyond what the node searched.
pub fn format_alarms(reply: &Value) -> String {
    let alarms = reply
        .get("alarms")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let active = reply
        .get("active")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut out = String::new();
    if !active.is_empty() {
        out.push_str("raised now (committed):\n");
        for a in &active {
            let s = |k: &str| a.get(k).and_then(Value::as_str).unwrap_or("?");
            let n = |k: &str| a.get(k).and_then(Value::as_u64).unwrap_or(0);
            out.push_str(&format!(
                "  node {} {:<18} since {}: {}\n",
                n("node"),
                s("rule"),
                utc_text(n("since_ms")),
                s("text")
            ));
        }
        out.push_str("history:\n");
    }
    if alarms.is_empty() {
        out.push_str("no alarms in the committed outbox");
        return out;
    }
    for a in &alarms {
        let n = |k: &str| a.get(k).and_then(Value::as_i64).unwrap_or(0);
        let s = |k: &str| a.get(k).and_then(Value::as_str).unwrap_or("?");
        let node = a
            .get("node")
            .and_then(Value::as_u64)
            .map_or(String::new(), |n| format!(" node {n}"));
        out.push_str(&format!(
            "{}  {:<18} {}{} subject {} value {}: {}\n",
            utc_text(n("time_ms").max(0) as u64),
            s("code"),
            s("actor"),
            node,
            n("subject"),
            n("value"),
            s("text")
        ));
        if n("repeats") > 0 {
            out.push_str(&format!(
                "    and {} more time(s) since, the last at {} (counted, not stored each time)\n",
                n("repeats"),
                utc_text(n("last_repeat_ms").max(0) as u64)
            ));
        }
    }
    if reply.get("limited").and_then(Value::as_bool) == Some(true) {
        out.push_str(&format!(
            "(the newest {}; ask for more with --limit)\n",
            alarms.len()
        ));
    } else if reply.get("whole_outbox").and_then(Value::as_bool) == Some(false) {
        out.push_str("(older alarms may exist: the node searched its newest outbox records only; the central keeps them all)\n");
    }
    out.trim_end().to_string()
}

/// `ghatta events` for a person: one line per event, newest first.
pub fn format_events(reply: &Value) -> String {
    let events = reply
        .get("events")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if events.is_empty() {
        return "no events in the committed outbox".into();
    }
    let mut out = String::new();
    for e in &events {
        let s = |k: &str| e.get(k).and_then(Value::as_str).unwrap_or("?");
        let t = e.get("time_ms").and_then(Value::as_u64).unwrap_or(0);
        out.push_str(&format!(
            "{}  {:<6} {:<9} {}\n",
            utc_text(t),
            s("kind"),
            s("actor"),
            s("what")
        ));
    }
    if reply.get("limited").and_then(Value::as_bool) == Some(true) {
        out.push_str(&format!(
            "(the newest {}; ask for more with --limit)\n",
            events.len()
        ));
    }
    out.trim_end().to_string()
}

/// `&since_ms=T` for `--since D` (T: this machine's clock less D), or nothing.
pub fn since_query(since: Option<Duration>) -> String {
    let Some(d) = since else {
        return String::new();
    };
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|t| t.as_millis() as u64)
        .unwrap_or(0);
    format!("&since_ms={}", now_ms.saturating_sub(d.as_millis() as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_addresses_are_this_machine_and_others_are_not() {
        for a in [
            "127.0.0.1:7100",
            "127.0.0.2:1",
            "[::1]:7100",
            "localhost:7100",
        ] {
            assert!(is_loopback(a), "{a}");
        }
        for a in [
            "192.168.4.20:7100",
            "[fe80::1]:7100",
            "board-3.local:7100",
            "10.0.0.1",
        ] {
            assert!(!is_loopback(a), "{a}");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("20s"), Ok(Duration::from_secs(20)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("7"), Ok(Duration::from_secs(7)));
        assert!(parse_duration("x").is_err());
        assert!(parse_duration("3 weeks").is_err());
    }

    #[test]
    fn a_refused_receipt_never_reads_as_success() {
        let ok = serde_json::json!({ "index": 7, "handled": 1, "rejected": 0 });
        assert_eq!(
            format_receipt(&ok, "top-up"),
            ("top-up: applied at index 7".into(), true)
        );
        let refused = serde_json::json!({
            "index": 8, "rejected": 1,
            "refusals": [{ "text": "top-up token already used; no credit given" }]
        });
        let (line, accepted) = format_receipt(&refused, "top-up");
        assert!(
            !accepted && line.contains("REFUSED") && line.contains("token already used"),
            "{line}"
        );
    }

    #[test]
    fn a_member_change_is_settled_only_when_committed() {
        let s = |voters: &[u64], learners: &[u64], in_progress: bool| {
            serde_json::json!({
                "voters": voters, "learners": learners, "membership_in_progress": in_progress
            })
        };
        assert!(member_settled(
            MemberGoal::Added(4),
            &s(&[1, 2, 3], &[4], false)
        ));
        assert!(!member_settled(
            MemberGoal::Added(4),
            &s(&[1, 2, 3], &[], false)
        ));
        assert!(member_settled(
            MemberGoal::Voter(4),
            &s(&[1, 2, 3, 4], &[], false)
        ));
        // Joint: 4 shows among the voters before the change is done.
        assert!(!member_settled(
            MemberGoal::Voter(4),
            &s(&[1, 2, 3, 4], &[], true)
        ));
        assert!(!member_settled(
            MemberGoal::Voter(4),
            &s(&[1, 2, 3], &[4], false)
        ));
        assert!(member_settled(
            MemberGoal::Gone(4),
            &s(&[1, 2, 3], &[], false)
        ));
        assert!(!member_settled(
            MemberGoal::Gone(4),
            &s(&[1, 2, 3], &[4], false)
        ));
        assert!(!member_settled(MemberGoal::Gone(3), &s(&[1, 2], &[], true)));
    }

    #[test]
    fn status_line_shows_sealing_or_its_absence() {
        let sealed = serde_json::json!({
            "id": 1, "role": "leader",
            "security": { "boot_epoch": 4, "opened": 10, "forged": 2, "replayed": 1 }
        });
        let line = format_status(&sealed);
        assert!(
            line.contains("sealed: epoch 4 opened 10 dropped 3 (forged 2, replayed 1"),
            "{line}"
        );
        let open = format_status(&serde_json::json!({ "id": 1, "security": null }));
        assert!(open.contains("NOT sealed"), "{open}");
    }

    /// Issue 26: radio-link and journal counters were kept but shown nowhere, and
    /// `link.rejected` stayed 0 through garbage on the radio (dropped below the frame layer).
    #[test]
    fn status_line_shows_radio_and_journal_counters() {
        let s = serde_json::json!({
            "id": 1, "role": "follower", "security": null,
            "radio": [{ "device": "/dev/ttyUSB0", "counters": {
                "packets_received": 40, "packets_sent": 50, "crc_rejected": 3,
                "malformed": 7, "not_for_us": 2, "fragments_dropped": 5, "frames_dropped": 1
            }}],
            "field": {
                "grid_healthy": 1, "journal_reads": 12, "journal_reads_bytes": 480,
                "reads_journaled": 100, "reads_committed": 88, "journal_telemetry": 4,
                "journal_errors": 0, "journal_over_limit": 0
            }
        });
        let line = format_status(&s);
        assert!(
            line.contains("radio /dev/ttyUSB0: packets in 40 out 50 crc errors 3 malformed 7 not for us 2 fragments dropped 5 frames dropped 1"),
            "{line}"
        );
        assert!(
            line.contains("journal: backlog 12 reads (480 bytes), journaled 100 drained 88, telemetry 4, errors 0 |")
                || line.ends_with("journal: backlog 12 reads (480 bytes), journaled 100 drained 88, telemetry 4, errors 0"),
            "{line}"
        );
        assert!(!line.contains("OVER ITS LIMIT"), "{line}");
        let no_radio = format_status(&serde_json::json!({ "id": 1, "radio": [] }));
        assert!(!no_radio.contains("radio"), "{no_radio}");
    }
}
