//! Scenarios as TOML: nodes, links, plant, customers, a timed fault schedule,
//! random fault rates, duration and the liveness bound.
//!
//! Node numbers in a scenario are indexes `0..nodes.count`; the controller
//! maps them to its node ids. A fault may name a node symbolically
//! (`"leader"`, `"follower"`, `"random"`), resolved when the fault fires (see
//! [`crate::fault::FaultDriver`]).

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::link::{BurstLoss, Direction, Flap, LinkModel};
use crate::net::{NodeId, SimNet};
use crate::plant::PlantConfig;

/// Most nodes a scenario may have: Raft groups of more than 7 voters buy
/// nothing for a village grid and cost quadratic heartbeat traffic.
pub const NODES_MAX: u32 = 9;
/// Longest scenario: a simulated month, the longest a grid's outbox is shown bounded without a
/// central (issue 25: `month-without-wan`); EN 50160 measures over a week.
pub const DURATION_S_MAX: f64 = 31.0 * 86_400.0;
/// Longest extra time per fsync a slow disk may be given: an SD card near the end of its life
/// stalls writes for seconds; 10 s per commit is a node that barely keeps its log.
pub const SYNC_DELAY_MS_MAX: u64 = 10_000;
/// Largest clock step (`clock_step`'s `step_ms`, `clock_drift`'s `offset_ms`), ms either way:
/// 400 days covers a board whose RTC lost a year and a leader "30 days fast"; larger steps
/// would put a node's clock before the simulated calendar's start or past what its arithmetic
/// is tested for, and test nothing a 400-day step does not.
pub const CLOCK_STEP_MS_MAX: i64 = 400 * 86_400_000;
/// Default quiet period after the last scheduled fault in which the cluster
/// must converge (acked proposals applied on every up node). Several
/// election timeouts at 10x a 2 s RTT (etcd's tuning rule).
pub const SETTLE_S_DEFAULT: f64 = 300.0;
/// Default liveness bound: an election at 10x RTT (etcd's rule; 2 s worst
/// RTT -> 20 s timeout), a few rounds of pre-vote/vote with randomised
/// timeouts, and one commit round trip fit well inside 2 minutes.
pub const LIVENESS_BOUND_S_DEFAULT: f64 = 120.0;
/// How long a crashed or power-cut node stays down when the fault gives no
/// `duration_s`: a watchdog reboot of a Raspberry Pi takes ~30 s.
pub const DOWN_S_DEFAULT: f64 = 30.0;
/// Customer ids of node `i`'s plant start at `i * CUSTOMER_ID_STRIDE`, so ids
/// never collide between plants (a plant has at most `HOUSEHOLDS_MAX`).
pub const CUSTOMER_ID_STRIDE: u64 = 100_000;
/// Default interval between scheduled meter reads: 15 minutes, a common
/// smart-meter load-profile interval.
pub const METER_READ_INTERVAL_S_DEFAULT: u64 = 900;
/// How often the simulated operator retries a membership change that was refused or has not
/// committed yet: `ghatta member` answers within `MEMBER_FORWARD_TIMEOUT` (17 s), and an
/// operator at the CLI retries a refusal ("not caught up") after a few seconds.
pub const MEMBER_RETRY_S: f64 = 5.0;
/// How long the simulated operator keeps at a membership change when the fault gives no
/// `duration_s`: a learner catching up on a lossy link takes minutes, not an hour.
pub const MEMBER_PATIENCE_S_DEFAULT: f64 = 600.0;
/// Time between the restarts of a replaced node's peers that teach them its new key: long
/// enough for each restarted member to rejoin (a few election timeouts at 10x a 2 s RTT) before
/// the next goes down, so a rolling restart never costs two members at once.
pub const REKEY_GAP_S: f64 = 60.0;
/// How often the simulated operator retries a deploy that did not commit: `ghatta actor
/// deploy` answers when its deploy entry commits or its proposals' deadline passes, and an
/// operator at the CLI runs it again after a short look at `ghatta status`.
pub const DEPLOY_RETRY_S: f64 = 10.0;
/// How long the simulated operator keeps at a deploy when the fault gives no `duration_s`: a
/// 64 KiB module is ~150 chunk entries, minutes over a lossy 9,600 bit/s radio.
pub const DEPLOY_PATIENCE_S_DEFAULT: f64 = 1_200.0;
/// The actors a `deploy` fault may name (`ActorKind`'s names in `ghatta-proto`, which this
/// crate does not import).
pub const DEPLOYABLE_ACTORS: [&str; 3] = ["balancing", "billing", "demand-response"];
/// Largest rate of random faults per hour per kind (a fault every 36 s is
/// already a storm; more would leave no time to observe anything).
pub const FAULTS_PER_HOUR_MAX: f64 = 100.0;

/// A scenario file could not be used.
#[derive(Debug, thiserror::Error)]
#[error("{file}: {key}: {problem}")]
pub struct ScenarioError {
    /// The file (or name) the scenario came from.
    pub file: String,
    /// The key (dotted path) at fault, or the location for syntax errors.
    pub key: String,
    /// What is wrong and, where possible, what would be right.
    pub problem: String,
}

/// A node named in a fault: an index, or a role resolved when the fault fires.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Target {
    /// Node index.
    Index(u32),
    /// A symbolic target.
    Symbol(Symbol),
}

impl<'de> Deserialize<'de> for Target {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Target;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(r#"a node index or one of "leader", "follower", "random""#)
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Target, E> {
                u32::try_from(v)
                    .map(Target::Index)
                    .map_err(|_| E::custom(format!("node index {v} is out of range")))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Target, E> {
                u32::try_from(v)
                    .map(Target::Index)
                    .map_err(|_| E::custom(format!("node index {v} is out of range")))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Target, E> {
                match v {
                    "leader" => Ok(Target::Symbol(Symbol::Leader)),
                    "follower" => Ok(Target::Symbol(Symbol::Follower)),
                    "random" => Ok(Target::Symbol(Symbol::Random)),
                    other => Err(E::custom(format!(
                        r#"unknown node {other:?}: use a node index or "leader", "follower", "random""#
                    ))),
                }
            }
        }
        d.deserialize_any(V)
    }
}

/// Symbolic fault targets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Symbol {
    /// The current leader (a random node if there is none).
    Leader,
    /// A random node other than the leader.
    Follower,
    /// Any node, at random.
    Random,
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Index(i) => write!(f, "node {i}"),
            Target::Symbol(Symbol::Leader) => write!(f, "the leader"),
            Target::Symbol(Symbol::Follower) => write!(f, "a follower"),
            Target::Symbol(Symbol::Random) => write!(f, "a random node"),
        }
    }
}

/// The nodes of the world.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Nodes {
    /// Number of nodes (indexes `0..count`).
    pub count: u32,
    /// Node indexes whose board drives a plant (default: every node).
    #[serde(default)]
    pub plants: Option<Vec<u32>>,
    /// Whether the plants are tied into one synchronous island.
    #[serde(default)]
    pub interconnected: bool,
}

/// A partial link model: each field set overrides the base.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkSpec {
    /// Base model: `perfect`, `lan`, `satellite` or `radio` (default `satellite`).
    pub preset: Option<String>,
    /// See [`LinkModel::latency_ms`].
    pub latency_ms: Option<u32>,
    /// See [`LinkModel::jitter_ms`].
    pub jitter_ms: Option<u32>,
    /// See [`LinkModel::jitter_uniform`].
    pub jitter_uniform: Option<bool>,
    /// See [`LinkModel::latency_cap_ms`].
    pub latency_cap_ms: Option<u32>,
    /// See [`LinkModel::loss`].
    pub loss: Option<f64>,
    /// See [`LinkModel::duplicate`].
    pub duplicate: Option<f64>,
    /// See [`LinkModel::corrupt`].
    pub corrupt: Option<f64>,
    /// See [`LinkModel::bandwidth_bps`].
    pub bandwidth_bps: Option<u64>,
    /// See [`LinkModel::mtu_bytes`].
    pub mtu_bytes: Option<u32>,
    /// See [`LinkModel::queue_frames`].
    pub queue_frames: Option<u32>,
    /// Flapping: mean up period, seconds (with `flap_down_s`).
    pub flap_up_s: Option<f64>,
    /// Flapping: mean down period, seconds (with `flap_up_s`).
    pub flap_down_s: Option<f64>,
}

impl LinkSpec {
    /// Applies this spec over `base` (or over its preset, if it names one).
    pub fn apply(&self, base: LinkModel) -> Result<LinkModel, (String, String)> {
        let mut m = match self.preset.as_deref() {
            None => base,
            Some("perfect") => LinkModel::perfect(),
            Some("lan") => LinkModel::lan(),
            Some("satellite") => LinkModel::satellite(),
            Some("radio") => LinkModel::radio_sik(),
            Some(other) => {
                return Err((
                    "preset".into(),
                    format!("unknown preset {other:?}; use perfect, lan, satellite or radio"),
                ));
            }
        };
        macro_rules! set {
            ($($f:ident),*) => { $( if let Some(v) = self.$f { m.$f = v; } )* };
        }
        set!(
            latency_ms,
            jitter_ms,
            jitter_uniform,
            latency_cap_ms,
            loss,
            duplicate,
            corrupt,
            bandwidth_bps,
            mtu_bytes,
            queue_frames
        );
        // A latency above the default cap raises the cap unless one was given.
        if self.latency_cap_ms.is_none() {
            m.latency_cap_ms = m.latency_cap_ms.max(m.latency_ms);
        }
        match (self.flap_up_s, self.flap_down_s) {
            (Some(up), Some(down)) => {
                m.flap = Some(Flap {
                    up_ms: (up * 1_000.0) as u64,
                    down_ms: (down * 1_000.0) as u64,
                });
            }
            (None, None) => {}
            _ => {
                return Err((
                    "flap_up_s".into(),
                    "flap_up_s and flap_down_s go together".into(),
                ));
            }
        }
        m.validate().map_err(|(k, p)| (k.to_string(), p))?;
        Ok(m)
    }
}

/// A per-pair link override: `a`, `b`, `both_ways` and any [`LinkSpec`] key.
/// (Spelled out rather than `#[serde(flatten)]`ed, because serde cannot deny
/// unknown keys through a flatten, and a typo here must not pass silently.)
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PairSpec {
    /// One node index.
    pub a: u32,
    /// The other node index.
    pub b: u32,
    /// Apply to both directions (default) or only `a -> b`.
    #[serde(default = "yes")]
    pub both_ways: bool,
    /// See [`LinkSpec::preset`].
    pub preset: Option<String>,
    /// See [`LinkModel::latency_ms`].
    pub latency_ms: Option<u32>,
    /// See [`LinkModel::jitter_ms`].
    pub jitter_ms: Option<u32>,
    /// See [`LinkModel::jitter_uniform`].
    pub jitter_uniform: Option<bool>,
    /// See [`LinkModel::latency_cap_ms`].
    pub latency_cap_ms: Option<u32>,
    /// See [`LinkModel::loss`].
    pub loss: Option<f64>,
    /// See [`LinkModel::duplicate`].
    pub duplicate: Option<f64>,
    /// See [`LinkModel::corrupt`].
    pub corrupt: Option<f64>,
    /// See [`LinkModel::bandwidth_bps`].
    pub bandwidth_bps: Option<u64>,
    /// See [`LinkModel::mtu_bytes`].
    pub mtu_bytes: Option<u32>,
    /// See [`LinkModel::queue_frames`].
    pub queue_frames: Option<u32>,
    /// See [`LinkSpec::flap_up_s`].
    pub flap_up_s: Option<f64>,
    /// See [`LinkSpec::flap_down_s`].
    pub flap_down_s: Option<f64>,
}

impl PairSpec {
    /// The link part of this override.
    pub fn link(&self) -> LinkSpec {
        LinkSpec {
            preset: self.preset.clone(),
            latency_ms: self.latency_ms,
            jitter_ms: self.jitter_ms,
            jitter_uniform: self.jitter_uniform,
            latency_cap_ms: self.latency_cap_ms,
            loss: self.loss,
            duplicate: self.duplicate,
            corrupt: self.corrupt,
            bandwidth_bps: self.bandwidth_bps,
            mtu_bytes: self.mtu_bytes,
            queue_frames: self.queue_frames,
            flap_up_s: self.flap_up_s,
            flap_down_s: self.flap_down_s,
        }
    }
}

fn yes() -> bool {
    true
}

/// The network.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Links {
    /// Every link not overridden.
    #[serde(default)]
    pub default: LinkSpec,
    /// Per-pair overrides (applied over the default).
    #[serde(default)]
    pub pair: Vec<PairSpec>,
    /// Seal every frame as `ghatta run` does with a key (the controller's `net::secure`:
    /// per-pair AEAD keys, boot epochs, replay windows), so the simulated links' losses,
    /// duplicates, reordering and corruption and the nodes' restarts reach the real opener
    /// (`ghatta-sim run` and `ghatta-sim measure`). Off: plain frames.
    #[serde(default)]
    pub sealed: bool,
}

/// Customers and billing policy, for the controller's billing setup and the
/// credit checker.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Customers {
    /// Prepaid credit every customer starts with, in milli-paisa.
    pub initial_credit_mpaisa: i64,
    /// Debt allowed outside friendly hours (the checker's limit), milli-paisa.
    pub debt_limit_mpaisa: i64,
    /// Friendly hours `[start, end)` in local hours (wrapping past midnight):
    /// no disconnection, usage becomes debt.
    pub friendly_hours: Option<[u32; 2]>,
    /// Interval between scheduled meter reads.
    pub meter_read_interval_s: u64,
}

impl Default for Customers {
    fn default() -> Self {
        Self {
            // 500 rupees = 50,000 paisa = 50,000,000 milli-paisa: a month's
            // top-up for a ~40 W-average household at ~10 Rs/kWh.
            initial_credit_mpaisa: 50_000_000,
            debt_limit_mpaisa: 0,
            friendly_hours: None,
            meter_read_interval_s: METER_READ_INTERVAL_S_DEFAULT,
        }
    }
}

/// What a fault does.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum FaultKind {
    /// Cut the pair (both ways unless `direction` says otherwise).
    Partition {
        /// One node.
        a: Target,
        /// The other.
        b: Target,
        /// `both`, `a_to_b` or `b_to_a`.
        #[serde(default = "both")]
        direction: Direction,
    },
    /// Cut the named nodes off from the rest (both ways).
    Split {
        /// One side of the split.
        nodes: Vec<Target>,
        /// Also open the tie lines between the two sides' plants, so each side runs as its
        /// own electrical island (a landslide that takes the power line with the cable next
        /// to it). The ties close again when the fault ends. Only meaningful with
        /// `nodes.interconnected`.
        #[serde(default)]
        open_ties: bool,
    },
    /// Cut one node off from every other.
    Isolate {
        /// The node.
        node: Target,
    },
    /// Heal every partition (ends every open network fault).
    HealAll,
    /// The node's process dies (page cache survives); restarts after `duration_s`.
    Crash {
        /// The node.
        node: Target,
    },
    /// The node loses power (unsynced writes lost); restarts after `duration_s`.
    PowerCut {
        /// The node.
        node: Target,
        /// Cut in the middle of the node's next fsync of its Raft log, so that commit is
        /// partly or not durable and never acknowledged (`SimDisk::fail_next_sync`); if no
        /// fsync comes within [`crate::fault::SYNC_CUT_WAIT_MS`], the cut lands then anyway.
        #[serde(default)]
        in_sync: bool,
    },
    /// The node is stopped gracefully (its shutdown runs: openraft's core stops, its
    /// databases close; nothing written is lost) and restarts after `duration_s`: an
    /// operator's `systemctl restart`, an upgrade.
    Stop {
        /// The node.
        node: Target,
    },
    /// Restart a node that is down.
    Restart {
        /// The node.
        node: Target,
    },
    /// The node's clock drifts and/or steps.
    ClockDrift {
        /// The node.
        node: Target,
        /// Rate error, ppm.
        #[serde(default)]
        ppm: i64,
        /// Step, ms (at most [`CLOCK_STEP_MS_MAX`] either way).
        #[serde(default)]
        offset_ms: i64,
    },
    /// The node goes rogue until the fault ends (or its incarnation does): keeping its key
    /// and running honestly otherwise, it also sends its peers forgeries through its own
    /// sealed link every second (another member's top-up, the WAN cursor to the end, a timer
    /// tick, a snapshot under a higher vote of its own; `ghatta_simulate::rogue`). The
    /// checkers must stay green and the peers count each refusal (`security.refused`).
    Rogue {
        /// The node.
        node: Target,
    },
    /// The node's wall clock steps by `step_ms` (forward when positive) at `at_s` and steps
    /// back to true time when the fault ends: an NTP server or operator setting the wrong
    /// date, then correcting it. Its monotonic clock does not step (a board's never does);
    /// the clock runs true during the step (a drift of its own is `clock_drift`).
    ClockStep {
        /// The node.
        node: Target,
        /// Step, ms (at most [`CLOCK_STEP_MS_MAX`] either way).
        step_ms: i64,
    },
    /// An operator adds the node as a learner (`ghatta member add`), through the node's own
    /// membership path (`Node::member` on a running member, which forwards it to the leader):
    /// the leader probes it over the cluster's links first. The operator retries a refusal
    /// every [`MEMBER_RETRY_S`] until the node is a committed learner, for `duration_s` at
    /// most (default [`MEMBER_PATIENCE_S_DEFAULT`]); not done by then is a violation.
    MemberAdd {
        /// The node (an index: the same board the world already has).
        node: Target,
    },
    /// An operator promotes the learner to voter (`ghatta member promote`): the leader refuses
    /// until it has caught up and answers. Retried as `member_add` is.
    MemberPromote {
        /// The node.
        node: Target,
    },
    /// An operator removes the node from the cluster (`ghatta member remove`), voter or
    /// learner. Retried as `member_add` is.
    MemberRemove {
        /// The node.
        node: Target,
    },
    /// An operator takes a board out of service for good (`systemctl disable --now`, after
    /// `member_remove`): it is stopped gracefully and never started again, the fault phase's
    /// end included. At the end of the run no running member may list it in its membership.
    Decommission {
        /// The node (an index: a symbol would not name the board the removal named).
        node: Target,
    },
    /// The node's board is replaced: the power goes off (a hard cut, if it runs), its disks are
    /// replaced by blank ones and it gets a new key pair under the same id; the new board starts
    /// after `duration_s` (default [`DOWN_S_DEFAULT`]). Its peers learn the new public key as an
    /// operator would tell them in the field: the key in each member's `[[peers]]`, then each
    /// restarted, one at a time ([`REKEY_GAP_S`] apart; a member that is down learns it when it
    /// comes back). The membership is the scenario's to change: a wiped voter must be removed
    /// before and added and promoted after (Raft forbids a voter that forgot its vote).
    ReplaceNode {
        /// The node.
        node: Target,
    },
    /// The node's next fsync of its Raft log fails with an I/O error (an SD card's EIO): the
    /// append it carried is not durable and must not be acknowledged. openraft stops a core
    /// whose storage failed, so the node's health probe fails and systemd's watchdog kills and
    /// restarts it (the world plays systemd: `WatchdogSec` and `RestartSec` of
    /// `deploy/ghatta.service`). An instant: `duration_s` is not used.
    DiskIoError {
        /// The node.
        node: Target,
    },
    /// An operator deploys a new version of an actor module (`ghatta actor deploy`), asked of
    /// `node` (default: a follower) through the node's own deploy path (`Node::deploy_actor`,
    /// the admin API's): the signer list seeded if empty, the module's chunks, the signed deploy
    /// entry. The module is the actor's built wasm with a custom section naming `version`, so
    /// each version is a module of its own (same behaviour, another hash), signed by the
    /// world's operator key, which every node lists in its `actor_signers`. The operator retries
    /// a deploy that did not commit every [`DEPLOY_RETRY_S`] (through another running node if
    /// the asked one went down) for `duration_s` at most (default
    /// [`DEPLOY_PATIENCE_S_DEFAULT`]); the world then holds every node to the same active
    /// version and cut-over index at the end. An instant: the request.
    Deploy {
        /// The actor: `balancing`, `billing` or `demand-response`.
        actor: String,
        /// The version deployed (above every version deployed before in the scenario).
        version: u32,
        /// The node asked.
        #[serde(default = "follower")]
        node: Target,
    },
    /// The node's SD card is full from `at_s` until the fault ends (default: the rest of the
    /// fault phase): every write to any of its databases fails with ENOSPC
    /// (`SimDisk::set_full`). The node must acknowledge nothing it did not persist and apply
    /// nothing it did not store; openraft stops a core whose storage failed, systemd's
    /// watchdog (played by the world) kills it, and each restart fails while the card is
    /// full, with an error naming the database and saying to free space, until space returns.
    DiskFull {
        /// The node.
        node: Target,
    },
    /// One bit flips in a page of one of the node's databases (a worn SD card): the node's
    /// power is cut, the bit flipped on the medium (`SimDisk::flip_bit_in_newest`: a page its
    /// newest commit wrote, chosen from the seed), and the node started again when the fault
    /// ends (default
    /// [`DOWN_S_DEFAULT`]). It must refuse to start with an error naming the file and saying
    /// what to do, or start on a database redb verified (a rolled-back commit, or a flip in a
    /// page no tree uses); it must never apply what the flip changed.
    DiskCorrupt {
        /// The node.
        node: Target,
        /// The database: `raft_log` (default) or `state`.
        #[serde(default)]
        file: DiskFile,
    },
    /// The node's disk syncs slowly.
    SlowDisk {
        /// The node.
        node: Target,
        /// Extra time per sync.
        sync_delay_ms: u64,
    },
    /// The pair's links flap (each direction on its own schedule).
    FlapLink {
        /// One node.
        a: Target,
        /// The other.
        b: Target,
        /// `both` (default), `a_to_b` or `b_to_a`: which directions flap.
        #[serde(default = "both")]
        direction: Direction,
        /// Mean up period.
        up_s: f64,
        /// Mean down period.
        down_s: f64,
    },
    /// The pair's links change model.
    Link {
        /// One node.
        a: Target,
        /// The other.
        b: Target,
        /// `both` (default), `a_to_b` or `b_to_a`: which directions change.
        #[serde(default = "both")]
        direction: Direction,
        /// The new model over the current one, as an inline table
        /// (`link = { loss = 0.3 }`).
        link: LinkSpec,
    },
    /// The pair's links lose frames in bursts (Gilbert-Elliott, see [`BurstLoss`]), on top
    /// of their independent loss.
    BurstLoss {
        /// One node.
        a: Target,
        /// The other.
        b: Target,
        /// `both` (default), `a_to_b` or `b_to_a`: which directions.
        #[serde(default = "both")]
        direction: Direction,
        /// Loss rate in the good state (default 0).
        #[serde(default)]
        loss_good: f64,
        /// Loss rate in the bad state.
        loss_bad: f64,
        /// Per-frame probability of going from good to bad.
        good_to_bad: f64,
        /// Per-frame probability of going from bad to good (> 0).
        bad_to_good: f64,
    },
    /// The plant behind a node sees its load multiplied (a festival evening).
    Overload {
        /// The node whose plant it is.
        node: Target,
        /// Load multiplier.
        load_scale: f64,
        /// Seconds to get there, and back at the end (default 0: a step; real loads rise
        /// over minutes as lights and appliances come on one by one).
        #[serde(default)]
        ramp_s: f64,
    },
    /// The plant behind a node gets less water.
    Drought {
        /// The node whose plant it is.
        node: Target,
        /// Fraction of rated water flow.
        water_factor: f64,
        /// Seconds to get there, and back at the end (default 0: a step; a river's flow
        /// falls over minutes to hours, a blocked intake within seconds).
        #[serde(default)]
        ramp_s: f64,
    },
}

fn both() -> Direction {
    Direction::Both
}

/// One of a node's databases on its card.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DiskFile {
    /// `raft-log.redb`: the Raft log, its vote and committed marker.
    #[default]
    RaftLog,
    /// `state.redb`: the state machine.
    State,
}

fn follower() -> Target {
    Target::Symbol(Symbol::Follower)
}

impl FaultKind {
    /// The burst-loss model of a `burst_loss` fault (`None` for other kinds).
    pub fn burst_loss(&self) -> Option<BurstLoss> {
        match *self {
            FaultKind::BurstLoss {
                loss_good,
                loss_bad,
                good_to_bad,
                bad_to_good,
                ..
            } => Some(BurstLoss {
                loss_good,
                loss_bad,
                good_to_bad,
                bad_to_good,
            }),
            _ => None,
        }
    }
}

/// A node state a fault waits for (`when = { state = "leader", node = 2 }`): the fault is
/// armed at its `at_s` and starts at the first world step, from then on, at which the state
/// holds; its `duration_s` counts from that start. One that never starts by the end of the
/// fault phase is a violation (`trigger`): the scenario did not test what it says.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case", deny_unknown_fields)]
pub enum Trigger {
    /// Node `node` (an index) leads (the leader of the highest term the world sees).
    Leader {
        /// The node.
        node: u32,
    },
    /// An operator's membership change (`member_add`, `member_promote`, `member_remove`) was
    /// asked and is not yet committed.
    MembershipChange,
}

impl std::fmt::Display for Trigger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Trigger::Leader { node } => write!(f, "when node {node} leads"),
            Trigger::MembershipChange => f.write_str("while a membership change is in flight"),
        }
    }
}

/// One scheduled fault. (Unknown keys are rejected by `FaultKind`, which
/// receives every key but these three.)
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Fault {
    /// When it starts (with `when`: when it is armed), seconds after the run starts.
    pub at_s: f64,
    /// How long it lasts; absent: until `heal_all` (network faults), until
    /// restarted after `DOWN_S_DEFAULT` (crash, power cut, stop), or for the rest
    /// of the run (the others).
    #[serde(default)]
    pub duration_s: Option<f64>,
    /// A node state the fault waits for once armed (absent: it starts at `at_s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub when: Option<Trigger>,
    /// What happens.
    #[serde(flatten)]
    pub kind: FaultKind,
}

/// Longest election timeout a scenario may set: etcd's tuning guide's upper limit (50 s);
/// longer would leave a grid without a leader for minutes after every crash.
pub const ELECTION_TIMEOUT_MS_MAX: u64 = 50_000;

/// Raft timing for every node of a scenario (`[timing]`), instead of the timing derived from
/// its default link (`ghatta-simulate`'s `timing_for`); `--link-profile` overrides both.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimingSpec {
    /// Heartbeat interval, ms (also every Raft RPC's deadline).
    pub heartbeat_ms: u64,
    /// Election timeout lower bound, ms.
    pub election_timeout_ms_min: u64,
    /// Election timeout upper bound, ms (also the leader's quorum lease).
    pub election_timeout_ms_max: u64,
}

impl TimingSpec {
    /// Raft's rule, broadcast time << election timeout (and openraft's own checks): a
    /// heartbeat shorter than the shortest election timeout, the range not empty, and the
    /// longest at most [`ELECTION_TIMEOUT_MS_MAX`].
    pub fn validate(&self) -> Result<(), (String, String)> {
        let t = self;
        if t.heartbeat_ms == 0 || t.heartbeat_ms >= t.election_timeout_ms_min {
            return Err((
                "timing.heartbeat_ms".into(),
                format!(
                    "{} ms must be above 0 and below election_timeout_ms_min ({} ms)",
                    t.heartbeat_ms, t.election_timeout_ms_min
                ),
            ));
        }
        if t.election_timeout_ms_max <= t.election_timeout_ms_min
            || t.election_timeout_ms_max > ELECTION_TIMEOUT_MS_MAX
        {
            return Err((
                "timing.election_timeout_ms_max".into(),
                format!(
                    "{} ms must be above election_timeout_ms_min ({} ms) and at most \
                     {ELECTION_TIMEOUT_MS_MAX} ms",
                    t.election_timeout_ms_max, t.election_timeout_ms_min
                ),
            ));
        }
        Ok(())
    }
}

/// Random faults: Poisson processes with these rates inside a window.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RandomFaults {
    /// No random fault starts before this.
    pub start_s: f64,
    /// No random fault starts after this (absent: `duration_s`).
    pub end_s: Option<f64>,
    /// Mean fault duration (exponential).
    pub mean_duration_s: f64,
    /// Process crashes per hour.
    pub crash_per_hour: f64,
    /// Power cuts per hour.
    pub power_cut_per_hour: f64,
    /// Pair partitions per hour.
    pub partition_per_hour: f64,
    /// Isolations (half of them of the leader) per hour.
    pub isolate_per_hour: f64,
    /// Slow-disk episodes per hour.
    pub slow_disk_per_hour: f64,
    /// Clock steps per hour.
    pub clock_drift_per_hour: f64,
}

impl Default for RandomFaults {
    fn default() -> Self {
        Self {
            start_s: 0.0,
            end_s: None,
            mean_duration_s: 60.0,
            crash_per_hour: 0.0,
            power_cut_per_hour: 0.0,
            partition_per_hour: 0.0,
            isolate_per_hour: 0.0,
            slow_disk_per_hour: 0.0,
            clock_drift_per_hour: 0.0,
        }
    }
}

/// A whole scenario.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Short name (defaults to the file stem).
    #[serde(default)]
    pub name: String,
    /// What the scenario is about.
    #[serde(default)]
    pub description: String,
    /// Simulated length of the fault phase.
    pub duration_s: f64,
    /// Quiet tail after `duration_s`: every fault healed, the cluster converges.
    #[serde(default = "settle_default")]
    pub settle_s: f64,
    /// After every fault heals, a new commit must happen within this.
    #[serde(default = "liveness_default")]
    pub liveness_bound_s: f64,
    /// After the last fault heals, every field loop's journal must have emptied (every meter
    /// read taken while islanded committed) within this; absent: not checked.
    #[serde(default)]
    pub journal_drain_bound_s: Option<f64>,
    /// The nodes.
    pub nodes: Nodes,
    /// The network.
    #[serde(default)]
    pub links: Links,
    /// Every plant's configuration (`first_customer_id` is set per node).
    #[serde(default)]
    pub plant: PlantConfig,
    /// Customers and billing policy.
    #[serde(default)]
    pub customers: Customers,
    /// Scheduled faults.
    #[serde(default)]
    pub faults: Vec<Fault>,
    /// Random faults.
    #[serde(default)]
    pub random_faults: RandomFaults,
    /// Agents typing OpenPAYGO tokens at the nodes; absent: none.
    #[serde(default)]
    pub tokens: Option<TokenAgents>,
    /// Raft timing (`[timing]`); absent: derived from the default link.
    #[serde(default)]
    pub timing: Option<TimingSpec>,
    /// The field loops' batch period, ms; absent: the node's default (a batch a second). A
    /// month-long scenario batches less often so that it runs in minutes, not hours.
    #[serde(default)]
    pub telemetry_interval_ms: Option<u64>,
    /// The grid's WAN uplink to a central (`[wan]`); absent: no central, nothing is ever
    /// acknowledged or pruned.
    #[serde(default)]
    pub wan: Option<WanSpec>,
}

/// The grid's WAN uplink (`[wan]`): every node runs the real uploader, as `ghatta run` with a
/// `[wan]` section does (only the leader's uploads), through [`crate::wan::WanLink`] to a
/// central at its far end. Defaults are the satellite link of DOMAIN.md.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WanSpec {
    /// One-way latency, ms (half the round trip).
    #[serde(default = "wan_one_way_default")]
    pub one_way_ms: u32,
    /// Uniform jitter, +/- ms.
    #[serde(default = "wan_jitter_default")]
    pub jitter_ms: u32,
    /// Line rate per direction, bit/s (0: unlimited).
    #[serde(default = "wan_rate_default")]
    pub rate_bps: u64,
    /// The uploader's cap, bytes/s (0: none; a grid sets its share of the line).
    #[serde(default = "wan_upload_cap_default")]
    pub upload_bytes_per_s: u64,
    /// Scheduled outages of the link: live connections break, connects are refused. Each
    /// must end within the fault phase (the settle phase is for catching up).
    #[serde(default)]
    pub outages: Vec<WanOutage>,
}

/// One WAN outage, from `at_s` for `duration_s`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WanOutage {
    /// Start, simulated seconds.
    pub at_s: f64,
    /// Length, seconds.
    pub duration_s: f64,
}

fn wan_one_way_default() -> u32 {
    crate::wan::ONE_WAY_MS_DEFAULT
}

fn wan_jitter_default() -> u32 {
    crate::wan::JITTER_MS_DEFAULT
}

fn wan_rate_default() -> u64 {
    crate::wan::RATE_BPS_DEFAULT
}

/// The uploader's default cap: the whole default line (256 kbit/s = 32,000 B/s), as the WAN
/// benchmarks run it.
fn wan_upload_cap_default() -> u64 {
    crate::wan::RATE_BPS_DEFAULT / 8
}

impl WanSpec {
    /// The link model this section describes.
    pub fn link_config(&self) -> crate::wan::WanLinkConfig {
        crate::wan::WanLinkConfig {
            one_way_ms: self.one_way_ms,
            jitter_ms: self.jitter_ms,
            rate_bps: self.rate_bps,
            outages: self
                .outages
                .iter()
                .map(|o| crate::wan::Outage {
                    start_ms: (o.at_s * 1_000.0) as u64,
                    end_ms: ((o.at_s + o.duration_s) * 1_000.0) as u64,
                })
                .collect(),
            random_outages: None,
        }
    }

    fn validate(&self, duration_s: f64) -> Result<(), (String, String)> {
        for (i, o) in self.outages.iter().enumerate() {
            let ok = o.at_s.is_finite()
                && o.duration_s.is_finite()
                && o.at_s >= 0.0
                && o.duration_s > 0.0
                && o.at_s + o.duration_s <= duration_s;
            if !ok {
                return Err((
                    format!("wan.outages[{i}]"),
                    format!(
                        "[{}, {} + {}) s must lie within the fault phase (0..={duration_s} s),                          with a duration above 0",
                        o.at_s, o.at_s, o.duration_s
                    ),
                ));
            }
        }
        self.link_config()
            .validate()
            .map_err(|e| ("wan".to_string(), e.to_string()))
    }
}

/// Most customers the token agents serve: each holds a token count the agents advance, and a
/// few dozen keep partitions' duplicates on the same accounts.
pub const TOKEN_CUSTOMERS_MAX: u32 = 1_000;

/// Village agents selling OpenPAYGO tokens (issue 21): every `interval_s` an agent types the
/// next add-credit token of one of the first `customers` prepaid accounts at a random running
/// node, or, with probability `everywhere_share`, the same token at every running node (so on
/// both sides of any split).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenAgents {
    /// Time between two tokens.
    pub interval_s: f64,
    /// Share of tokens typed at every running node, 0..=1.
    #[serde(default)]
    pub everywhere_share: f64,
    /// Accounts served (the first prepaid ones), 1..=`TOKEN_CUSTOMERS_MAX`.
    pub customers: u32,
}

fn settle_default() -> f64 {
    SETTLE_S_DEFAULT
}

fn liveness_default() -> f64 {
    LIVENESS_BOUND_S_DEFAULT
}

impl Scenario {
    /// Reads and validates a scenario file.
    ///
    /// # Errors
    /// A [`ScenarioError`] naming the file, the key and the problem.
    pub fn load(path: &Path) -> Result<Self, ScenarioError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ScenarioError {
            file: file.clone(),
            key: "-".into(),
            problem: format!("cannot read the file: {e}"),
        })?;
        let mut s = Self::parse(&text, &file)?;
        if s.name.is_empty() {
            s.name = path
                .file_stem()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_default();
        }
        Ok(s)
    }

    /// Parses and validates scenario text; `file` names it in errors.
    ///
    /// # Errors
    /// A [`ScenarioError`] naming the file, the key and the problem.
    pub fn parse(text: &str, file: &str) -> Result<Self, ScenarioError> {
        let s: Scenario = toml::from_str(text).map_err(|e| syntax_error(file, text, &e))?;
        s.validate().map_err(|(key, problem)| ScenarioError {
            file: file.to_string(),
            key,
            problem,
        })?;
        Ok(s)
    }

    /// Checks every value's range and every node reference.
    pub fn validate(&self) -> Result<(), (String, String)> {
        let n = self.nodes.count;
        if n == 0 || n > NODES_MAX {
            return Err((
                "nodes.count".into(),
                format!("{n} is not in 1..={NODES_MAX}"),
            ));
        }
        let positive = |key: &str, v: f64, max: f64| {
            if v.is_finite() && v > 0.0 && v <= max {
                Ok(())
            } else {
                Err((key.to_string(), format!("{v} is not in (0, {max}]")))
            }
        };
        positive("duration_s", self.duration_s, DURATION_S_MAX)?;
        if let Some(t) = &self.tokens {
            positive("tokens.interval_s", t.interval_s, DURATION_S_MAX)?;
            if !(0.0..=1.0).contains(&t.everywhere_share) {
                return Err((
                    "tokens.everywhere_share".into(),
                    format!("{} is not in [0, 1]", t.everywhere_share),
                ));
            }
            if !(1..=TOKEN_CUSTOMERS_MAX).contains(&t.customers) {
                return Err((
                    "tokens.customers".into(),
                    format!("{} is not in 1..={TOKEN_CUSTOMERS_MAX}", t.customers),
                ));
            }
        }
        positive("liveness_bound_s", self.liveness_bound_s, DURATION_S_MAX)?;
        if let Some(b) = self.journal_drain_bound_s {
            positive("journal_drain_bound_s", b, DURATION_S_MAX)?;
        }
        if !(self.settle_s >= 0.0 && self.settle_s <= DURATION_S_MAX) {
            return Err((
                "settle_s".into(),
                format!("{} is not in [0, {DURATION_S_MAX}]", self.settle_s),
            ));
        }
        let ramp_ok = |key: &str, v: f64| {
            if v.is_finite() && (0.0..=DURATION_S_MAX).contains(&v) {
                Ok(())
            } else {
                Err((
                    key.to_string(),
                    format!("{v} is not in [0, {DURATION_S_MAX}]"),
                ))
            }
        };
        let check_index = |key: &str, i: u32| {
            if i < n {
                Ok(())
            } else {
                Err((
                    key.to_string(),
                    format!("node {i} does not exist (nodes 0..{n})"),
                ))
            }
        };
        if let Some(plants) = &self.nodes.plants {
            for (k, &p) in plants.iter().enumerate() {
                check_index(&format!("nodes.plants[{k}]"), p)?;
            }
        }
        self.plant
            .validate()
            .map_err(|(k, p)| (format!("plant.{k}"), p))?;
        let default = self
            .links
            .default
            .apply(LinkModel::default())
            .map_err(|(k, p)| (format!("links.default.{k}"), p))?;
        for (i, pair) in self.links.pair.iter().enumerate() {
            check_index(&format!("links.pair[{i}].a"), pair.a)?;
            check_index(&format!("links.pair[{i}].b"), pair.b)?;
            pair.link()
                .apply(default)
                .map_err(|(k, p)| (format!("links.pair[{i}].{k}"), p))?;
        }
        if let Some([a, b]) = self.customers.friendly_hours
            && (a > 23 || b > 23)
        {
            return Err((
                "customers.friendly_hours".into(),
                format!("[{a}, {b}] are not hours 0..=23"),
            ));
        }
        if self.customers.meter_read_interval_s == 0 {
            return Err((
                "customers.meter_read_interval_s".into(),
                "must be > 0".into(),
            ));
        }
        for (i, f) in self.faults.iter().enumerate() {
            let key = |k: &str| format!("faults[{i}].{k}");
            if !(f.at_s.is_finite() && f.at_s >= 0.0 && f.at_s <= self.duration_s) {
                return Err((
                    key("at_s"),
                    format!("{} is not within the run (0..={})", f.at_s, self.duration_s),
                ));
            }
            if let Some(d) = f.duration_s {
                positive(&key("duration_s"), d, DURATION_S_MAX)?;
            }
            if let Some(Trigger::Leader { node }) = f.when {
                check_index(&key("when.node"), node)?;
            }
            let targets: Vec<(&str, Target)> = match &f.kind {
                FaultKind::Partition { a, b, .. }
                | FaultKind::FlapLink { a, b, .. }
                | FaultKind::Link { a, b, .. }
                | FaultKind::BurstLoss { a, b, .. } => vec![("a", *a), ("b", *b)],
                FaultKind::Split { nodes, .. } => nodes.iter().map(|&t| ("nodes", t)).collect(),
                FaultKind::Isolate { node }
                | FaultKind::Crash { node }
                | FaultKind::PowerCut { node, .. }
                | FaultKind::Stop { node }
                | FaultKind::Restart { node }
                | FaultKind::ClockDrift { node, .. }
                | FaultKind::ClockStep { node, .. }
                | FaultKind::SlowDisk { node, .. }
                | FaultKind::Rogue { node }
                | FaultKind::Overload { node, .. }
                | FaultKind::Drought { node, .. }
                | FaultKind::MemberAdd { node }
                | FaultKind::MemberPromote { node }
                | FaultKind::MemberRemove { node }
                | FaultKind::Decommission { node }
                | FaultKind::ReplaceNode { node }
                | FaultKind::DiskIoError { node }
                | FaultKind::Deploy { node, .. }
                | FaultKind::DiskFull { node }
                | FaultKind::DiskCorrupt { node, .. } => vec![("node", *node)],
                FaultKind::HealAll => vec![],
            };
            for (k, t) in targets {
                if let Target::Index(idx) = t {
                    check_index(&key(k), idx)?;
                }
            }
            match &f.kind {
                FaultKind::ClockDrift { ppm, .. }
                    if ppm.abs() > crate::time::CLOCK_DRIFT_PPM_MAX =>
                {
                    return Err((
                        key("ppm"),
                        format!("{ppm} exceeds +/-{} ppm", crate::time::CLOCK_DRIFT_PPM_MAX),
                    ));
                }
                FaultKind::ClockDrift { offset_ms: v, .. }
                | FaultKind::ClockStep { step_ms: v, .. }
                    if v.abs() > CLOCK_STEP_MS_MAX =>
                {
                    let k = match f.kind {
                        FaultKind::ClockStep { .. } => "step_ms",
                        _ => "offset_ms",
                    };
                    return Err((
                        key(k),
                        format!(
                            "{v} ms exceeds the +/-{CLOCK_STEP_MS_MAX} ms (400 days) a clock may \
                             be stepped; use a smaller step"
                        ),
                    ));
                }
                FaultKind::SlowDisk { sync_delay_ms, .. } if *sync_delay_ms > SYNC_DELAY_MS_MAX => {
                    return Err((
                        key("sync_delay_ms"),
                        format!("{sync_delay_ms} exceeds {SYNC_DELAY_MS_MAX} ms"),
                    ));
                }
                FaultKind::FlapLink { up_s, down_s, .. } => {
                    positive(&key("up_s"), *up_s, DURATION_S_MAX)?;
                    positive(&key("down_s"), *down_s, DURATION_S_MAX)?;
                }
                FaultKind::Link { link, .. } => {
                    link.apply(default).map_err(|(k, p)| (key(&k), p))?;
                }
                FaultKind::BurstLoss { .. } => {
                    if let Some(b) = f.kind.burst_loss() {
                        b.validate().map_err(|(k, p)| (key(k), p))?;
                    }
                }
                FaultKind::Overload {
                    load_scale, ramp_s, ..
                } => {
                    positive(&key("load_scale"), *load_scale, 10.0)?;
                    ramp_ok(&key("ramp_s"), *ramp_s)?;
                }
                FaultKind::Drought {
                    water_factor,
                    ramp_s,
                    ..
                } => {
                    positive(&key("water_factor"), *water_factor, 1.5)?;
                    ramp_ok(&key("ramp_s"), *ramp_s)?;
                }
                FaultKind::PowerCut { in_sync: true, .. }
                    if f.duration_s.unwrap_or(DOWN_S_DEFAULT) * 1_000.0
                        <= crate::fault::SYNC_CUT_WAIT_MS as f64 =>
                {
                    return Err((
                        key("duration_s"),
                        format!(
                            "an in_sync power cut may wait up to {} ms for its fsync, so it \
                             must last longer than that; raise duration_s or drop in_sync",
                            crate::fault::SYNC_CUT_WAIT_MS
                        ),
                    ));
                }
                FaultKind::Deploy { actor, version, .. }
                    if !DEPLOYABLE_ACTORS.contains(&actor.as_str()) || *version == 0 =>
                {
                    return Err((
                        key("actor"),
                        format!(
                            "{actor:?} version {version}: deploy one of {DEPLOYABLE_ACTORS:?}, \
                             at a version of 1 or more (0 is the compiled-in module)"
                        ),
                    ));
                }
                FaultKind::Decommission {
                    node: Target::Symbol(_),
                } => {
                    return Err((
                        key("node"),
                        "name the board by its index: the one a member_remove before it named"
                            .into(),
                    ));
                }
                FaultKind::Split { nodes, .. } if nodes.is_empty() => {
                    return Err((key("nodes"), "a split needs at least one node".into()));
                }
                _ => {}
            }
        }
        if let Some(t) = &self.timing {
            t.validate()?;
        }
        if let Some(w) = &self.wan {
            w.validate(self.duration_s)?;
        }
        let r = &self.random_faults;
        for (k, v) in [
            ("crash_per_hour", r.crash_per_hour),
            ("power_cut_per_hour", r.power_cut_per_hour),
            ("partition_per_hour", r.partition_per_hour),
            ("isolate_per_hour", r.isolate_per_hour),
            ("slow_disk_per_hour", r.slow_disk_per_hour),
            ("clock_drift_per_hour", r.clock_drift_per_hour),
        ] {
            if !(0.0..=FAULTS_PER_HOUR_MAX).contains(&v) {
                return Err((
                    format!("random_faults.{k}"),
                    format!("{v} is not in [0, {FAULTS_PER_HOUR_MAX}]"),
                ));
            }
        }
        positive(
            "random_faults.mean_duration_s",
            r.mean_duration_s,
            DURATION_S_MAX,
        )?;
        Ok(())
    }

    /// The default link model.
    pub fn default_link(&self) -> LinkModel {
        self.links
            .default
            .apply(LinkModel::default())
            .unwrap_or_default()
    }

    /// Builds the network: the default model plus per-pair overrides. Node
    /// index `i` is `node_ids[i]`. Call inside the sim runtime.
    pub fn build_net(&self, seed: u64, node_ids: &[NodeId]) -> SimNet {
        self.configure_net(SimNet::new(seed, self.default_link()), node_ids)
    }

    /// [`Scenario::build_net`] for a lockstep world: node `n` keeps time on `epochs[n]`.
    pub fn build_lockstep_net(
        &self,
        seed: u64,
        node_ids: &[NodeId],
        epochs: std::collections::BTreeMap<NodeId, crate::time::Epoch>,
    ) -> SimNet {
        let net = SimNet::new_lockstep(seed, self.default_link(), epochs);
        self.configure_net(net, node_ids)
    }

    /// The shortest one-way latency any frame can have in this scenario, in ms: over the
    /// default link, the per-pair links and every link a fault sets (applied over each of
    /// those). A lockstep world needs its windows no longer than this (a frame sent in a
    /// window must not be due in it); bandwidth only adds to it.
    pub fn min_one_way_latency_ms(&self) -> u64 {
        let default = self.default_link();
        let mut bases = vec![default];
        bases.extend(
            self.links
                .pair
                .iter()
                .map(|p| p.link().apply(default).unwrap_or(default)),
        );
        let mut models = bases.clone();
        for f in &self.faults {
            if let FaultKind::Link { link, .. } = &f.kind {
                models.extend(bases.iter().map(|&b| link.apply(b).unwrap_or(b)));
            }
        }
        models
            .iter()
            .map(|m| {
                let low = if m.jitter_uniform {
                    m.latency_ms.saturating_sub(m.jitter_ms)
                } else {
                    m.latency_ms
                };
                u64::from(low.min(m.latency_cap_ms))
            })
            .min()
            .unwrap_or(0)
    }

    fn configure_net(&self, net: SimNet, node_ids: &[NodeId]) -> SimNet {
        let default = self.default_link();
        for &id in node_ids {
            net.add_node(id);
        }
        for pair in &self.links.pair {
            let (Some(&a), Some(&b)) =
                (node_ids.get(pair.a as usize), node_ids.get(pair.b as usize))
            else {
                continue;
            };
            let m = pair.link().apply(default).unwrap_or(default);
            net.set_link(a, b, m);
            if pair.both_ways {
                net.set_link(b, a, m);
            }
        }
        net
    }

    /// Node indexes that have a plant.
    pub fn plant_nodes(&self) -> Vec<u32> {
        match &self.nodes.plants {
            Some(p) => p.clone(),
            None => (0..self.nodes.count).collect(),
        }
    }

    /// The plant configuration for node `index` (`None` if it has no plant).
    pub fn plant_config(&self, index: u32) -> Option<PlantConfig> {
        self.plant_nodes().contains(&index).then(|| PlantConfig {
            first_customer_id: u64::from(index) * CUSTOMER_ID_STRIDE,
            ..self.plant.clone()
        })
    }

    /// Total simulated time: the fault phase plus the settle tail, in ms.
    pub fn total_ms(&self) -> u64 {
        ((self.duration_s + self.settle_s) * 1_000.0) as u64
    }

    /// Whether local hour `hour` falls in friendly hours.
    pub fn is_friendly_hour(&self, hour: u32) -> bool {
        match self.customers.friendly_hours {
            Some([a, b]) if a <= b => (a..b).contains(&hour),
            Some([a, b]) => hour >= a || hour < b,
            None => false,
        }
    }
}

/// Turns a TOML error into file, key and problem, finding the key from the
/// error's position (the table header above it and the key on its line).
fn syntax_error(file: &str, text: &str, e: &toml::de::Error) -> ScenarioError {
    let (mut key, mut location) = ("-".to_string(), String::new());
    if let Some(span) = e.span() {
        let start = span.start.min(text.len());
        let line_no = text[..start].matches('\n').count() + 1;
        let line_start = text[..start].rfind('\n').map_or(0, |i| i + 1);
        let line = text[line_start..].lines().next().unwrap_or("");
        let header = |l: &str| l.trim_matches(|c| c == '[' || c == ']').to_string();
        key = if line.trim_start().starts_with('[') {
            header(line.trim())
        } else {
            let table = text[..line_start]
                .lines()
                .rev()
                .map(str::trim)
                .find(|l| l.starts_with('['))
                .map(header);
            let k = line.split('=').next().unwrap_or("").trim();
            let k = (line.contains('=') && !k.is_empty()).then_some(k);
            match (table, k) {
                (Some(t), Some(k)) => format!("{t}.{k}"),
                (Some(t), None) => t,
                (None, Some(k)) => k.to_string(),
                (None, None) => "-".into(),
            }
        };
        location = format!("line {line_no}: ");
    }
    ScenarioError {
        file: file.to_string(),
        key,
        problem: format!("{location}{}", e.message().trim()),
    }
}
