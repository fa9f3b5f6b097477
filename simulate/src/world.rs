//! The world loop: real nodes on simulated disks, links, clocks and boards, stepped every
//! 100 ms of simulated time through a scenario's faults, with every observation checked.
//!
//! One barrier: the nodes run to it (100 ms; in lockstep a window of up to
//! [`LOCKSTEP_WINDOW_MS_MAX`]) -> feed the nodes' observations and role changes to the
//! checkers -> poll the fault driver and carry out its node actions -> step the plants
//! through their boards, 100 ms at a time, to the next barrier -> report each plant's true
//! frequency. At the end of the fault phase every fault heals; the settle phase follows;
//! then the proposers stop and the world waits for the replicas to converge before the
//! end-of-run checks.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::Context;
use ghatta_actor_sdk as sdk;
use ghatta_hal::{SimBoard, SimBoardState};
use ghatta_sim::board::PlantBoard;
use ghatta_sim::check::{Suite, SuiteConfig, Violation};
use ghatta_sim::disk::{SimDisk, SyncFault};
use ghatta_sim::fault::{FaultDriver, NodeAction};
use ghatta_sim::link::LinkModel;
use ghatta_sim::net::SimNet;
use ghatta_sim::observe::{Observation, Role as SimRole};
use ghatta_sim::plant::{Grid, Plant, PlantTruth};
use ghatta_sim::plot::PlotRecorder;
use ghatta_sim::report::{FieldSummary, SecuritySummary};
use ghatta_sim::report::{FinishInfo, Report};
use ghatta_sim::scenario::{REKEY_GAP_S, Scenario};
use ghatta_sim::time::Epoch;
use openraft_rt::WatchReceiver;
use tokio::task::JoinHandle;
use tokio::time::Duration;

use super::clock::SimClock;
use super::deploy;
use super::lock;
use super::lockstep::{self, Engine};
use super::member;
use super::observer::{Shared, SimObserver};
use super::rogue;
use super::setup;
use super::transport::{SealWith, SimTransport, TransportStats, node_links};
use crate::replay::ReplayCache;
use ghatta::actors::{ActorHost, ActorLimits};
use ghatta::field::FieldConfig;
use ghatta::field::{self, CustomerMap, FieldStats};
use ghatta::journal::Journal;
use ghatta::net::secure::SealStats;
use ghatta::net::transport::{Transport, inbound_queue};
use ghatta::node::{Node, NodeBuilder};
use ghatta::observe::TestFaults;
use ghatta::raft::timing::Timing;
use ghatta::raft::{Body, PeerInfo};
use ghatta::storage::{self, Stores};
use ghatta_sim::check::JournalDrain;

/// One world step: the plant model's supervision period (DOMAIN: the firmware supervises at
/// 100 ms - 1 s) and the granularity of fault times and frequency samples.
pub const STEP_MS: u64 = 100;
/// Unix time of simulated time zero's calendar day: 2026-01-07T00:00Z, the first day of a
/// 30-day billing period (period 682 since the Unix epoch), so the accounts open at a period's
/// start; the tariff oracle follows the periods after it (`setup::tariff_oracle`).
pub const CALENDAR_START_UNIX_MS: u64 = 682 * 30 * 86_400_000;
/// How long the world waits, once the proposers stop, for every replica to apply the same
/// index: proposals already in flight retry for up to 4 x 30 s (the field loop's retries at
/// the proposer's deadline), and a lagging follower catches up within a few heartbeats.
pub const QUIESCE_MS_MAX: u64 = 180_000;
/// Replicas must agree for this long before the world calls them converged (a proposal
/// still in flight would move them apart again).
pub const QUIET_MS: u64 = 5_000;
/// How often the operator sells top-ups to accounts at or below the disconnect threshold
/// (a village agent's rounds).
pub const TOPUP_INTERVAL: Duration = Duration::from_secs(3_600);
/// Top-ups per round at most (one proposal of at most this many inputs).
pub const TOPUPS_PER_ROUND_MAX: usize = 100;
/// Wait between attempts of an operator proposal that did not commit.
const OPERATOR_RETRY: Duration = Duration::from_secs(1);

/// How long systemd waits for a watchdog ping before it kills the node (`WatchdogSec=` in
/// `deploy/ghatta.service`): a node whose Raft core stopped (a storage error is fatal to
/// openraft) fails its health probe (`sd_notify::Health`) and stops pinging.
pub const WATCHDOG_MS: u64 = 30_000;
/// How long systemd waits before it starts the killed node again (`RestartSec=`).
pub const RESTART_MS: u64 = 10_000;

/// How often the world samples the links' byte count in a scenario with deploys (a deploy's
/// background is read from the samples, to this precision).
pub const AIR_SAMPLE_MS: u64 = 1_000;

/// A deliberate bug switched on in every node (mutation tests).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Mutation {
    /// No bug.
    #[default]
    None,
    /// Apply a retried `(origin, seq)` again (breaks exactly-once).
    SkipDedupe,
    /// Acknowledge log appends before they are fsynced (breaks durability).
    AckBeforeFsync,
    /// The leader appends a retried proposal again while its first copy is in flight (the
    /// behaviour before `node::inflight`; breaks "one copy in the log").
    AppendRetries,
    /// Log time follows the leader's wall clock unbounded (the behaviour before
    /// `state::logtime`; breaks "time follows true time", the `clock_truth` checker).
    UnboundedLogTime,
    /// A node on a blank state database numbers its proposals from 1 at once (the behaviour
    /// before `node::proposer::SeqFloor`; breaks exactly-once for a replaced board, the
    /// `acked_proposals` checker).
    BlankSeqFromOne,
    /// The simulated central acknowledges every second batch of new records without storing it (a central
    /// that acks before its commit; breaks `wan_exactly_once`, and the grid then prunes what
    /// the central never had, `wan_prune`). Not the node's bug: the checkers' own test.
    CentralAcksUnstored,
}

/// One run's inputs.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// The scenario (possibly shortened).
    pub scenario: Scenario,
    /// The world seed.
    pub seed: u64,
    /// A deliberate bug, for mutation tests.
    pub mutation: Mutation,
    /// Record the SVG plot.
    pub plot: bool,
    /// Raft timing; `None`: derived from the scenario's default link ([`timing_for`]).
    pub timing: Option<Timing>,
    /// Write every observation, in the order the checkers saw it, to this file (JSON
    /// lines): two runs that should replay each other can be diffed to the first divergence.
    pub trace_path: Option<std::path::PathBuf>,
    /// Share actor executions between replicas (`actors::replay`): same outcomes, same trace
    /// hash, a fraction of the interpreting.
    pub actor_replay: bool,
    /// Run each node on its own runtime, in lockstep windows, on this many threads
    /// (`lockstep`); `None`: every node on the world's one runtime. Only for scenarios whose
    /// links are all at least a window long ([`lockstep_allowed`]). The thread count changes
    /// the speed, never the trace.
    pub lockstep_threads: Option<usize>,
}

/// Longest lockstep window. Within a window the nodes run apart: the plants are stepped
/// (every 100 ms, as always) at the window's start from the relay positions the nodes had
/// set by then, and each reading reaches its node's board at its own time
/// ([`ghatta_sim::board::BoardFeed`]), so a relay the node moves reaches the plant up to a
/// window late (up to a step on one runtime). 400 ms keeps that lag under protection's
/// shortest trip delay (500 ms, `FieldConfig::grid_interval_ms`'s five samples) and takes
/// the five-node scenario's windows from 100 ms to 400 ms, which made its runs markedly
/// faster (BENCHMARKS.md, "Lockstep windows of 400 ms").
pub const LOCKSTEP_WINDOW_MS_MAX: u64 = 400;

/// Whether a scenario can run in lockstep: every frame's one-way latency is at least one
/// world step, so nothing sent in a window is due within it.
pub fn lockstep_allowed(scenario: &Scenario) -> bool {
    // The WAN link model and its central run on the world's runtime, the uploaders on the
    // nodes': one clock for both only on one runtime.
    scenario.min_one_way_latency_ms() >= STEP_MS && scenario.wan.is_none()
}

/// A lockstep window for `scenario`: the longest whole number of world steps no longer than
/// any link's one-way latency (nothing sent in a window is due within it) nor
/// [`LOCKSTEP_WINDOW_MS_MAX`]. It depends on the scenario only, never on the thread count,
/// so the trace does not either.
pub fn lockstep_window_ms(scenario: &Scenario) -> u64 {
    let latency = scenario.min_one_way_latency_ms();
    (latency.min(LOCKSTEP_WINDOW_MS_MAX) / STEP_MS).max(1) * STEP_MS
}

/// What a run produced.
#[derive(Debug)]
pub struct SimOutcome {
    /// The report.
    pub report: Report,
    /// The plot, when asked for.
    pub plot_svg: Option<String>,
    /// How the field loops' journals filled and drained.
    pub journal: JournalDrain,
    /// The actor replay cache's counters (`None` without it).
    pub actor_replay: Option<crate::replay::ReplayStats>,
}

/// Bytes of a typical append on the wire: a few entries of field batches (telemetry plus a
/// handful of meter reads). On a slow radio its air time, not the latency, dominates the
/// round trip an append needs.
pub const TYPICAL_APPEND_BYTES: u64 = 4_096;

/// Raft timing for a link: `Timing::for_rtt` of a high percentile of the time an append and
/// its answer take: the base latency plus three mean jitters each way (the 95th percentile
/// of an exponential tail, capped as the link caps it), plus twice the air time of a typical
/// append (sending it, and one round of repeated fragments at the link driver). Timing for
/// the mean RTT would let a third of the heartbeats on a satellite link outlive their own
/// deadline (openraft's RPC deadline is the heartbeat).
pub fn timing_for(link: &LinkModel) -> Timing {
    let one_way =
        (link.latency_ms + 3 * link.jitter_ms).min(link.latency_cap_ms.max(link.latency_ms));
    let air_ms = TYPICAL_APPEND_BYTES * 8 * 1_000 / link.bandwidth_bps.max(1);
    let air_ms = if link.bandwidth_bps == 0 { 0 } else { air_ms };
    Timing::for_rtt(2 * u64::from(one_way) + 2 * air_ms)
}

/// A link at most this fast is a radio for the deployment settings (SiK's highest air rate
/// is 250 kbit/s; Wi-Fi bridges start in the Mbit/s).
pub const RADIO_BPS_MAX: u64 = 250_000;

/// Whether a scenario's links are radio-class (slow air rate or small frames): the nodes are
/// then configured as a radio deployment would be.
pub fn is_radio(link: &LinkModel) -> bool {
    (link.bandwidth_bps > 0 && link.bandwidth_bps <= RADIO_BPS_MAX)
        || (link.mtu_bytes > 0 && link.mtu_bytes <= 252)
}

/// The field loop's configuration in a scenario: production defaults, the scenario's billing
/// read interval, and on radio-class links the settings the field loop documents for radios
/// (small proposals, a slow journal drain).
pub fn field_config_for(scenario: &Scenario) -> FieldConfig {
    let defaults = FieldConfig::default();
    let journal_ms = scenario
        .customers
        .meter_read_interval_s
        .saturating_mul(1_000);
    let mut cfg = FieldConfig {
        meter_journal_interval_ms: journal_ms,
        meter_journal_interval_ms_over_limit: defaults
            .meter_journal_interval_ms_over_limit
            .max(journal_ms),
        ..defaults
    };
    if let Some(ms) = scenario.telemetry_interval_ms {
        cfg.telemetry_interval_ms = ms;
    }
    if is_radio(&scenario.default_link()) {
        cfg.proposal_bytes_max = Some(ghatta::field::shipper::PROPOSAL_BYTES_MAX_RADIO);
        cfg.drain_interval_ms = RADIO_DRAIN_INTERVAL_MS;
    }
    cfg
}

/// Journal drain period on a radio: the field loop's documented setting for 64 kbit/s
/// ("5000 or more so the drain leaves room for heartbeats").
pub const RADIO_DRAIN_INTERVAL_MS: u64 = 5_000;

/// Runs one seed of a scenario on a fresh paused-clock runtime, inside openraft's seeded RNG
/// scope (and in lockstep, each node on its own; see `lockstep`). Measures the wall time for
/// the report (the world itself never reads it).
///
/// # Errors
/// When a runtime cannot be built, lockstep is asked for a scenario with links shorter than
/// a window, or the world fails to start.
pub fn run(cfg: &SimConfig) -> anyhow::Result<SimOutcome> {
    let rt = ghatta_sim::time::seeded_runtime(cfg.seed)
        .context("cannot build the simulator's runtime")?;
    let wall = std::time::Instant::now();
    let seed = cfg.seed;
    let mut out = match cfg.lockstep_threads {
        None => rt.block_on(ghatta::raft::Runtime::scope(seed, async {
            let engine = Engine::Single {
                epoch: Epoch::now(),
            };
            world(cfg.clone(), engine).await
        }))?,
        Some(threads) => {
            if !lockstep_allowed(&cfg.scenario) {
                anyhow::bail!(
                    "scenario {} has links as short as {} ms one way, under the lockstep \
                     window of {STEP_MS} ms: run it without lockstep",
                    cfg.scenario.name,
                    cfg.scenario.min_one_way_latency_ms()
                );
            }
            let n = usize::try_from(cfg.scenario.nodes.count).unwrap_or(0);
            let nodes = lockstep::node_runtimes(n, seed)?;
            let cfg = cfg.clone();
            lockstep::run_lockstep(&rt, nodes, threads, move |engine| {
                ghatta::raft::Runtime::scope(seed, world(cfg, engine))
            })?
        }
    };
    out.report.wall_seconds = wall.elapsed().as_secs_f64();
    // Tasks left behind by killed incarnations die with the runtime.
    drop(rt);
    Ok(out)
}

/// The openers' counters over every node and incarnation.
fn security_summary(slots: &[Slot]) -> SecuritySummary {
    let mut sum = SecuritySummary::default();
    for st in slots.iter().flat_map(|s| &s.seal_stats) {
        let c = st.snapshot(0);
        sum.sealed += c.sealed;
        sum.opened += c.opened;
        sum.rejected += c.rejected();
        sum.forged += c.forged;
        sum.replayed += c.replayed;
        sum.out_of_window += c.out_of_window;
        sum.stale_epoch += c.older_epoch + c.stale_receiver_epoch + c.before_introduction;
        sum.hellos_sent += c.hellos_sent;
    }
    for s in slots {
        sum.rogue_sent += s.rogue_sent.load(Ordering::Relaxed);
        sum.refused += s.refused;
    }
    sum
}

/// A running incarnation of a node.
struct Incarnation {
    node: Node,
    alive: Arc<AtomicBool>,
    tasks: Vec<JoinHandle<()>>,
    field: Option<JoinHandle<()>>,
    /// The node's links (sealed when the scenario is): a rogue's forgeries go out here.
    transport: Arc<dyn Transport>,
    /// The forgeries of a node gone rogue (`kind = "rogue"`), while they run.
    rogue: Option<JoinHandle<()>>,
    /// Its WAN uploader (`[wan]`); dropped with the incarnation, which aborts it.
    _uploader: Option<ghatta::wan::Uploader>,
}

/// Everything a new incarnation is started from, owned, so the start can run on the node's
/// own runtime (in lockstep, on another thread): its tasks must live there.
struct StartPlan {
    id: u64,
    net: SimNet,
    alive: Arc<AtomicBool>,
    link_stats: Arc<TransportStats>,
    /// The world seed, when the links are sealed.
    seal: Option<u64>,
    members: Vec<u64>,
    /// Key generations of replaced boards (`transport::sim_secret_of`).
    key_gens: Vec<(u64, u32)>,
    cluster_name: String,
    timing: Timing,
    /// openraft's seed for this node.
    seed: u64,
    stores: Stores,
    clock: Arc<SimClock>,
    observer: Arc<SimObserver>,
    faults: Arc<TestFaults>,
    host: Arc<ActorHost>,
    /// Form the cluster (the first start of every node).
    initialize: bool,
    /// node.toml's `actor_signers`: the world operator's public key.
    actor_signers: Vec<ghatta::actors::deploy::SignerKey>,
    /// The field loop's board, journal, configuration and counters (plant nodes).
    field: Option<(SimBoard, Journal, FieldConfig, Arc<FieldStats>)>,
    /// The WAN uploader's settings and its way to the central (`[wan]`).
    wan: Option<(
        ghatta::wan::UploaderConfig,
        Arc<dyn ghatta::wan::connector::Connector>,
    )>,
}

impl StartPlan {
    /// Starts the incarnation on the current runtime: transport, sealing, the node, the
    /// cluster (first start), the field loop. Returns it and its openers' counters.
    async fn start(self) -> anyhow::Result<(Incarnation, Vec<Arc<SealStats>>)> {
        let StartPlan {
            id,
            net,
            alive,
            link_stats,
            seal,
            members,
            key_gens,
            cluster_name,
            timing,
            seed,
            stores,
            clock,
            observer,
            faults,
            host,
            initialize,
            actor_signers,
            field,
            wan,
        } = self;
        let (tx, rx) = inbound_queue();
        let endpoint = net.endpoint(id);
        let (plain, tasks) =
            SimTransport::start(id, net, endpoint, tx, alive.clone(), link_stats.clone());
        let links = node_links(
            id,
            plain,
            rx,
            &link_stats,
            seal.map(|seed| SealWith {
                seed,
                members: &members,
                cluster: &cluster_name,
                key_gens: &key_gens,
            }),
        )?;
        let mut builder = NodeBuilder::new(id, cluster_name)
            .timing(timing)
            .seed(seed)
            .clock(clock)
            .observer(Some(observer))
            .faults(faults)
            .actor_host(host)
            .actor_signers(actor_signers);
        if initialize {
            builder =
                builder.initialize(members.iter().map(|&m| (m, PeerInfo::default())).collect());
        }
        let transport = links.transport.clone();
        let node = match builder.start(stores, links.transport, links.inbound).await {
            Ok(n) => n,
            Err(e) => {
                alive.store(false, Ordering::Relaxed);
                for t in tasks {
                    t.abort();
                }
                return Err(e.into());
            }
        };
        let field = field.map(|(board, journal, cfg, stats)| {
            tokio::spawn(field::run_with(
                node.clone(),
                board,
                journal,
                cfg,
                CustomerMap { first_customer: 1 },
                stats,
            ))
        });
        // Every node runs an uploader, as `ghatta run` with `[wan]` does; only the leader's
        // uploads.
        let uploader = wan
            .map(|(cfg, connector)| ghatta::wan::Uploader::spawn_via(node.clone(), cfg, connector));
        Ok((
            Incarnation {
                node,
                alive,
                tasks,
                field,
                transport,
                rogue: None,
                _uploader: uploader,
            },
            links.seal_stats.into_iter().collect(),
        ))
    }
}

/// A node's hardware, which outlives its incarnations: disks, clock, board, link driver state.
struct Slot {
    id: u64,
    log_disk: SimDisk,
    state_disk: SimDisk,
    /// The field loop's `journal.redb`: meter reads survive a crash or a power cut as far as
    /// they were fsynced, exactly as on a board.
    journal_disk: SimDisk,
    clock: Arc<SimClock>,
    link_stats: Arc<TransportStats>,
    field_stats: Arc<FieldStats>,
    /// The opener's counters of every incarnation (sealed links only).
    seal_stats: Vec<Arc<SealStats>>,
    /// Index of this node's plant in the grid, if it has one.
    plant: Option<usize>,
    run: Option<Incarnation>,
    role: Option<(SimRole, u64)>,
    /// A `rogue` fault is open on this node: every incarnation forges while it is.
    rogue_on: bool,
    /// Forgeries sent, over every incarnation.
    rogue_sent: Arc<AtomicU64>,
    /// Requests this node refused (`status().refused`), over ended incarnations.
    refused: u64,
    /// Boards this node has had replaced (`replace_node`): its key pair's generation.
    key_gen: u32,
    /// When the world first saw this incarnation's Raft core stopped (the watchdog's count).
    unhealthy_since: Option<u64>,
    /// When systemd starts the node again after its watchdog killed it.
    watchdog_restart_ms: Option<u64>,
    /// Its card is full (`disk_full`): a start that fails meanwhile is retried, as systemd's
    /// `Restart=` does, every [`RESTART_MS`].
    disk_full: bool,
    /// A bit of this database was flipped (`disk_corrupt`) and no start has met it yet.
    corrupted: Option<ghatta_sim::scenario::DiskFile>,
    /// The error its last start failed with (noted once, not at every retry).
    last_start_error: Option<String>,
}

/// The running incarnations the operator may propose through: node id -> (slot, incarnation,
/// node).
pub(crate) type Running = Arc<Mutex<BTreeMap<u64, (usize, u64, Node)>>>;

struct World {
    cfg: SimConfig,
    epoch: Epoch,
    engine: Engine,
    net: SimNet,
    shared: Arc<Shared>,
    host: Arc<ActorHost>,
    /// The host's replay cache (`--actor-replay`), kept for its counters.
    replay: Option<Arc<ReplayCache>>,
    switches: Arc<TestFaults>,
    timing: Timing,
    field_cfg: FieldConfig,
    slots: Vec<Slot>,
    grid: Grid,
    boards: Vec<PlantBoard>,
    running: Running,
    suite: Suite,
    plot: Option<PlotRecorder>,
    extra: Vec<Violation>,
    proposers_on: bool,
    incarnations: u64,
    trace: Option<std::io::BufWriter<std::fs::File>>,
    journal: JournalDrain,
    /// Simulated ms between barriers: a world step on one runtime, [`lockstep_window_ms`]
    /// in lockstep.
    window_ms: u64,
    /// Per plant, in lockstep windows longer than a step: the readings stepped ahead, on
    /// their way to the node's board.
    feeds: Vec<Option<ghatta_sim::board::BoardFeed>>,
    /// The plants' true values stepped ahead, observed once their time has come.
    plants_ahead: Vec<(u64, Vec<PlantTruth>)>,
    /// Restarts that teach members a replaced board's new key: (due ms, slot), in due order.
    rekeys: std::collections::VecDeque<(u64, usize)>,
    /// The operator's membership changes and how they went.
    member_log: member::MemberLog,
    /// Leaders last reported cut off from a quorum: node -> last log index reported.
    leaders_cut: BTreeMap<u64, u64>,
    /// The operator's actor deploys and how they went.
    deploy_log: deploy::DeployLog,
    /// The operator's module signing key (`deploy::operator_key`).
    operator_key: Arc<ghatta::actors::deploy::OperatorKey>,
    /// (simulated ms, payload bytes all links carried by then), sampled every
    /// [`AIR_SAMPLE_MS`] in scenarios with deploys, for each deploy's background.
    air_samples: Vec<(u64, u64)>,
    /// The scenario has `deploy` faults.
    has_deploys: bool,
    /// What the world saw that breaks no invariant but a reader of the report wants: a node
    /// refusing to start on a corrupted or full card, and its error.
    notes: Vec<String>,
    /// The nodes' outboxes and snapshots (`outbox.rs`).
    outbox: super::outbox::OutboxWatch,
    /// The WAN link and the central at its end (`[wan]`, `central.rs`).
    central: Option<super::central::SimCentral>,
    /// Nodes taken out of service for good (`decommission`), in order.
    decommissioned: Vec<u64>,
}

/// The slow-disk knob as the node's log store reads it: after each durable commit it waits
/// the disk's sync delay, in simulated time. (A wrapper: the trait is the node's, the disk the
/// sim crate's.)
#[derive(Debug, Clone)]
pub struct DiskLatency(pub SimDisk);

impl storage::SyncLatency for DiskLatency {
    fn sync_delay(&self) -> Duration {
        self.0.sync_delay()
    }
}

async fn world(cfg: SimConfig, engine: Engine) -> anyhow::Result<SimOutcome> {
    let scenario = cfg.scenario.clone();
    let seed = cfg.seed;
    let epoch = engine.world_epoch();
    let n = scenario.nodes.count;
    let ids: Vec<u64> = (1..=u64::from(n)).collect();
    let net = if engine.is_lockstep() {
        let epochs = ids
            .iter()
            .enumerate()
            .map(|(i, &id)| (id, engine.epoch_of(i)))
            .collect();
        let net = scenario.build_lockstep_net(seed, &ids, epochs);
        for (i, &id) in ids.iter().enumerate() {
            // Lives as long as the node's runtime, across its incarnations.
            drop(engine.spawn_on(i, net.delivery_task(id)));
        }
        net
    } else {
        scenario.build_net(seed, &ids)
    };
    let mut faults = FaultDriver::new(&scenario, seed, ids.clone());
    // Before the nodes: the link's time zero is the run's.
    let central = scenario
        .wan
        .as_ref()
        .map(|w| {
            super::central::SimCentral::start(
                w,
                seed,
                cfg.mutation == Mutation::CentralAcksUnstored,
            )
        })
        .transpose()
        .context("cannot make the scenario's WAN link")?;
    let shared = Shared::new();
    let host =
        ActorHost::with_embedded(ActorLimits::default()).context("cannot load the actors")?;
    let replay = cfg.actor_replay.then(|| Arc::new(ReplayCache::default()));
    let host = Arc::new(match &replay {
        Some(cache) => host.with_delivery_cache(cache.clone()),
        None => host,
    });
    let switches = Arc::new(TestFaults::default());
    match cfg.mutation {
        Mutation::None => {}
        Mutation::SkipDedupe => switches.skip_dedupe.store(true, Ordering::Relaxed),
        Mutation::AckBeforeFsync => switches.ack_before_fsync.store(true, Ordering::Relaxed),
        Mutation::AppendRetries => switches.append_retries.store(true, Ordering::Relaxed),
        Mutation::UnboundedLogTime => {
            switches.unbounded_log_time.store(true, Ordering::Relaxed);
        }
        Mutation::BlankSeqFromOne => {
            switches.blank_seq_from_one.store(true, Ordering::Relaxed);
        }
        Mutation::CentralAcksUnstored => {}
    }
    let timing = cfg.timing.unwrap_or_else(|| match scenario.timing {
        Some(t) => Timing {
            heartbeat_ms: t.heartbeat_ms,
            election_timeout_ms_min: t.election_timeout_ms_min,
            election_timeout_ms_max: t.election_timeout_ms_max,
        },
        None => timing_for(&scenario.default_link()),
    });
    let field_cfg = field_config_for(&scenario);
    // Calendar: the nodes' clocks read local time of day `start_time_of_day_s` at time zero
    // (the plants' load profiles use local time), in Nepal's time zone.
    let day_ms = 86_400_000i64;
    let local_start_ms = scenario.plant.start_time_of_day_s as i64 * 1_000
        - i64::from(setup::UTC_OFFSET_MIN) * 60_000;
    let start_unix_ms = CALENDAR_START_UNIX_MS + local_start_ms.rem_euclid(day_ms) as u64;

    // Plants, in node order; customer ids start at 1 on node 0 (the field loop's customer
    // map has no customer 0), `index * CUSTOMER_ID_STRIDE + 1` on node `index`.
    let mut plants = Vec::new();
    let mut boards = Vec::new();
    let mut plant_of = BTreeMap::new();
    for i in scenario.plant_nodes() {
        let Some(mut pc) = scenario.plant_config(i) else {
            continue;
        };
        pc.first_customer_id += 1;
        let mut plant = Plant::new(pc, seed);
        let board = PlantBoard::attach(&mut plant, SimBoard::new(SimBoardState::new()));
        plant_of.insert(i, plants.len());
        plants.push(plant);
        boards.push(board);
    }
    let mut grid = Grid::new(plants);
    if scenario.nodes.interconnected {
        grid.interconnect_all();
    }

    let slots: Vec<Slot> = ids
        .iter()
        .enumerate()
        .map(|(i, &id)| Slot {
            id,
            log_disk: SimDisk::new(),
            state_disk: SimDisk::new(),
            journal_disk: SimDisk::new(),
            clock: Arc::new(SimClock::new(engine.epoch_of(i), start_unix_ms)),
            link_stats: Arc::default(),
            field_stats: Arc::default(),
            seal_stats: Vec::new(),
            plant: plant_of.get(&(i as u32)).copied(),
            run: None,
            role: None,
            rogue_on: false,
            rogue_sent: Arc::default(),
            refused: 0,
            key_gen: 0,
            unhealthy_since: None,
            watchdog_restart_ms: None,
            disk_full: false,
            corrupted: None,
            last_start_error: None,
        })
        .collect();

    let mut suite_cfg = SuiteConfig::for_scenario(&scenario);
    suite_cfg.tariff = Some(setup::tariff_oracle());
    // Postpaid accounts owe by design once their period's free block is used (a week in).
    suite_cfg.credit_prepaid = Some(|c| u32::try_from(c).is_ok_and(setup::is_prepaid));
    // openraft's quorum lease is its longest election timeout (`docs::protocol::check_quorum`).
    suite_cfg.isolated_leader_bound_ms =
        Some(timing.election_timeout_ms_max + ghatta_sim::check::APPEND_AFTER_LEASE_MS_MAX);
    suite_cfg.calendar = Some(ghatta_sim::check::TrueCalendar {
        start_unix_ms,
        start_local_ms: (scenario.plant.start_time_of_day_s as i64 * 1_000).rem_euclid(day_ms)
            as u64,
        friendly_hours: scenario.customers.friendly_hours,
        is_prepaid: |c| u32::try_from(c).is_ok_and(setup::is_prepaid),
    });
    let plot = cfg
        .plot
        .then(|| PlotRecorder::new(&scenario.name, scenario.total_ms()));

    let window_ms = if engine.is_lockstep() {
        lockstep_window_ms(&scenario)
    } else {
        STEP_MS
    };
    // Readings stepped ahead of a window reach each node's board on the node's own clock.
    let mut feeds = vec![None; boards.len()];
    if window_ms > STEP_MS {
        for (i, s) in slots.iter().enumerate() {
            if let Some(p) = s.plant {
                let feed = ghatta_sim::board::BoardFeed::default();
                let task = feed.task(boards[p].board().clone(), engine.epoch_of(i));
                drop(engine.spawn_on(i, task));
                feeds[p] = Some(feed);
            }
        }
    }

    let trace = match &cfg.trace_path {
        Some(p) => Some(std::io::BufWriter::new(
            std::fs::File::create(p).with_context(|| format!("cannot create {}", p.display()))?,
        )),
        None => None,
    };
    let mut w = World {
        cfg,
        epoch,
        engine,
        net,
        shared,
        host,
        replay,
        switches,
        timing,
        field_cfg,
        slots,
        grid,
        boards,
        running: Arc::default(),
        suite: Suite::new(suite_cfg),
        plot,
        extra: Vec::new(),
        proposers_on: true,
        incarnations: 0,
        trace,
        journal: JournalDrain::default(),
        window_ms,
        feeds,
        plants_ahead: Vec::new(),
        rekeys: Default::default(),
        member_log: Arc::default(),
        leaders_cut: BTreeMap::new(),
        deploy_log: Arc::default(),
        operator_key: Arc::new(deploy::operator_key(seed)),
        air_samples: Vec::new(),
        has_deploys: scenario
            .faults
            .iter()
            .any(|f| matches!(f.kind, ghatta_sim::scenario::FaultKind::Deploy { .. })),
        notes: Vec::new(),
        outbox: Default::default(),
        central,
        decommissioned: Vec::new(),
    };

    for i in 0..w.slots.len() {
        w.start(i, true).await;
    }
    let setup_inputs = setup::setup_inputs(&scenario, &plants_of(&w));
    let proposal_bytes_max = w
        .field_cfg
        .proposal_bytes_max
        .unwrap_or(ghatta::field::shipper::PROPOSAL_BYTES_MAX_DEFAULT);
    let operator = tokio::spawn(operator(
        w.engine.clone(),
        w.running.clone(),
        w.shared.clone(),
        setup_inputs,
        usize::try_from(proposal_bytes_max).unwrap_or(usize::MAX),
    ));
    let mut agents = scenario.tokens.clone().map(|t| {
        tokio::spawn(super::agents::token_agents(
            w.engine.clone(),
            w.running.clone(),
            w.shared.clone(),
            w.epoch,
            t,
            setup::token_customers(&scenario, &plants_of(&w)),
            w.cfg.seed,
        ))
    });

    // The first window's later steps (time 0 is the boards' first readings): from here on
    // each barrier steps the plants from its own time to the next barrier's.
    w.step_plants(0, 1);
    let fault_end_ms = (scenario.duration_s * 1_000.0) as u64;
    let total_ms = scenario.total_ms();
    let mut healed = false;
    let mut next_ms = 0;
    let mut quiet_since: Option<(u64, Vec<u64>)> = None;
    let mut operator = Some(operator);
    loop {
        next_ms += w.window_ms;
        w.engine.advance_to(next_ms).await;
        let t_ms = w.epoch.elapsed_ms();
        w.feed_node_observations();
        w.land_sync_cuts(t_ms, &mut faults).await;
        let leader = w.poll_roles(t_ms);
        faults.set_membership_in_flight(member::in_flight(&w.member_log));
        let tick = if t_ms >= fault_end_ms && !healed {
            healed = true;
            faults.heal_everything(t_ms, &w.net)
        } else {
            faults.poll(t_ms, &w.net, leader)
        };
        for o in &tick.observations {
            w.observe(o);
            if matches!(o, Observation::FaultEnd { .. }) {
                w.journal.last_heal_ms = Some(t_ms);
                w.journal.drained_after_heal_ms = None;
            }
        }
        w.watch_journals(t_ms);
        for a in tick.actions {
            w.act(a).await;
        }
        w.rekey_due(t_ms).await;
        w.watchdog(t_ms).await;
        w.watch_deploys(t_ms);
        w.step_plants(t_ms, 0);
        w.next_window(t_ms);
        for r in w.slots.iter().filter_map(|s| s.run.as_ref()) {
            w.outbox.sample(t_ms, &r.node);
        }
        if let Some(c) = w.central.as_mut() {
            let nodes: Vec<&Node> = w
                .slots
                .iter()
                .filter_map(|s| Some(&s.run.as_ref()?.node))
                .collect();
            c.watch(t_ms, &nodes);
        }
        if t_ms < total_ms {
            continue;
        }
        if w.proposers_on {
            // The settle phase is over: stop proposing and let the replicas converge.
            w.proposers_on = false;
            if let Some(op) = operator.take() {
                op.abort();
            }
            if let Some(a) = agents.take() {
                a.abort();
            }
            for s in &mut w.slots {
                if let Some(f) = s.run.as_mut().and_then(|r| r.field.take()) {
                    f.abort();
                }
            }
        }
        let applied = w.applied_indexes();
        let agreed = applied.windows(2).all(|p| p[0] == p[1]);
        quiet_since = match quiet_since.take() {
            Some((since, prev)) if agreed && prev == applied => Some((since, prev)),
            _ if agreed => Some((t_ms, applied)),
            _ => None,
        };
        // With a WAN, the run also waits for the central to hold everything committed.
        let wan_caught_up = w.central.as_ref().is_none_or(|c| {
            w.slots
                .iter()
                .find_map(|s| s.run.as_ref())
                .is_none_or(|r| c.caught_up(&r.node))
        });
        let converged = wan_caught_up
            && quiet_since
                .as_ref()
                .is_some_and(|(since, _)| t_ms - since >= QUIET_MS);
        if converged || t_ms >= total_ms + QUIESCE_MS_MAX {
            break;
        }
    }
    w.feed_node_observations();
    let end_t_ms = w.epoch.elapsed_ms();
    w.poll_roles(end_t_ms);
    w.watch_deploys(end_t_ms);
    if !lock(&w.deploy_log).is_empty() {
        let views: Vec<(u64, ghatta::state::ActorModules)> = w
            .slots
            .iter()
            .filter_map(|s| Some((s.id, s.run.as_ref()?.node.state_machine().actor_modules())))
            .collect();
        w.extra.extend(deploy::registries_agree(&views, end_t_ms));
    }
    let counters = w.net.total_counters();
    let digest = w.net.trace_digest();
    let metered_wh = w.grid.plants().iter().map(Plant::metered_energy_wh).sum();
    // The reference node's outbox, read before the nodes shut down.
    let outbox_node = w
        .slots
        .iter()
        .find_map(|s| s.run.as_ref().map(|r| r.node.clone()));
    let wan = w
        .central
        .as_mut()
        .map(|c| c.finish(end_t_ms, outbox_node.as_ref()));
    // Every running member's view of the membership, before the nodes shut down.
    let views: Vec<(u64, ghatta::node::NodeStatus)> = w
        .slots
        .iter()
        .filter_map(|s| Some((s.id, s.run.as_ref()?.node.status())))
        .collect();
    let listed = member::decommissioned_listed(&w.decommissioned, &views, end_t_ms);
    w.extra.extend(listed);
    for i in 0..w.slots.len() {
        if let Some(r) = w.slots[i].run.take() {
            r.alive.store(false, Ordering::Relaxed);
            w.slots[i].refused += rogue::refused_total(&r.node);
            for t in r.tasks.into_iter().chain(r.field).chain(r.rogue) {
                t.abort();
            }
            let node = r.node;
            w.engine
                .run_on(i, async move { node.shutdown().await })
                .await;
        }
    }
    let mut journal = w.journal;
    let (mut ufls_trips, mut ballast_switched_in) = (0, 0);
    for s in &w.slots {
        let st = &s.field_stats;
        journal.reads_journaled += st.reads_journaled.load(Ordering::Relaxed);
        journal.reads_committed += st.reads_committed.load(Ordering::Relaxed);
        ufls_trips += st.ufls_trips.load(Ordering::Relaxed);
        ballast_switched_in += st.ballast_switched_in.load(Ordering::Relaxed);
    }
    if let Some(v) = journal.check_drain(w.cfg.scenario.journal_drain_bound_s, end_t_ms) {
        w.extra.push(v);
    }
    for message in faults.never_fired() {
        w.extra.push(Violation {
            checker: "trigger".into(),
            t_ms: end_t_ms,
            message: message.clone(),
        });
    }
    let unfinished = member::unfinished(&w.member_log, end_t_ms);
    w.extra.extend(unfinished);
    let unfinished = deploy::unfinished(&w.deploy_log, end_t_ms);
    w.extra.extend(unfinished);
    let deploys = deploy::summaries(&w.deploy_log);
    let notes = std::mem::take(&mut w.notes);
    let security = w
        .cfg
        .scenario
        .links
        .sealed
        .then(|| security_summary(&w.slots));
    let actor_replay = w.replay.as_ref().map(|c| c.stats());
    let engine_lockstep = w.engine.is_lockstep();
    let World {
        cfg,
        suite,
        plot,
        mut extra,
        outbox,
        central,
        ..
    } = w;
    let mut report = suite.finish(FinishInfo {
        scenario: cfg.scenario.name.clone(),
        seed: cfg.seed,
        end_t_ms,
        wall_seconds: 0.0,
        net_trace_digest: Some(digest),
        net_counters: Some(counters),
        metered_wh,
    });
    report.field = Some(FieldSummary {
        peak_reads: journal.peak_reads,
        drained_after_heal_s: journal.drained_after_heal_ms.map(|ms| ms as f64 / 1_000.0),
        reads_journaled: journal.reads_journaled,
        reads_committed: journal.reads_committed,
        ufls_trips,
        ballast_switched_in,
    });
    let (summary, fold_violation) = outbox.finish(
        end_t_ms,
        outbox_node.as_ref(),
        central.as_ref().map(|c| c.committed()),
        &report.ledger,
    );
    report.outbox = Some(summary);
    extra.extend(fold_violation);
    if let Some((summary, violations)) = wan {
        report.wan = Some(summary);
        extra.extend(violations);
    }
    report.security = security;
    report.notes = notes;
    report.deploys = deploys;
    report.engine = Some(
        if engine_lockstep {
            "lockstep"
        } else {
            "single"
        }
        .into(),
    );
    if !extra.is_empty() {
        report.passed = false;
        report.violations.extend(extra);
    }
    Ok(SimOutcome {
        report,
        plot_svg: plot.map(|p| p.render()),
        journal,
        actor_replay,
    })
}

impl World {
    /// Ends a world step: the trace events so far are final; in lockstep, the frames due in
    /// the next window go to their receivers.
    fn next_window(&mut self, t_ms: u64) {
        if self.engine.is_lockstep() {
            self.net.deliver_window(t_ms, t_ms + self.window_ms);
        } else {
            self.net.fold_trace();
        }
    }

    fn observe(&mut self, o: &Observation) {
        if let Some(t) = self.trace.as_mut() {
            use std::io::Write;
            let line = serde_json::to_string(o).unwrap_or_default();
            if writeln!(t, "{line}").is_err() {
                self.trace = None;
            }
        }
        self.suite.observe(o);
        if let Some(p) = self.plot.as_mut() {
            p.observe(o);
        }
    }

    /// Samples the journals' backlog: its peak, and when it first emptied after the last heal.
    fn watch_journals(&mut self, t_ms: u64) {
        let waiting: u64 = self
            .slots
            .iter()
            .filter(|s| s.plant.is_some())
            .map(|s| s.field_stats.journal_reads.load(Ordering::Relaxed))
            .sum();
        let j = &mut self.journal;
        j.peak_reads = j.peak_reads.max(waiting);
        if let Some(heal) = j.last_heal_ms
            && j.drained_after_heal_ms.is_none()
            && waiting == 0
        {
            j.drained_after_heal_ms = Some(t_ms - heal);
        }
    }

    fn feed_node_observations(&mut self) {
        for o in self.shared.drain() {
            self.observe(&o);
        }
    }

    /// Reports role and term changes; returns the leader of the highest term, if any.
    fn poll_roles(&mut self, t_ms: u64) -> Option<u64> {
        let mut changes = Vec::new();
        let mut leader: Option<(u64, u64)> = None;
        let mut leading = Vec::new();
        for s in &mut self.slots {
            let Some(r) = &s.run else {
                continue;
            };
            let (role, term) = {
                let m = r.node.raft().metrics();
                let m = m.borrow_watched();
                if m.state == openraft::ServerState::Leader {
                    let voters: Vec<u64> = m.membership_config.membership().voter_ids().collect();
                    leading.push((s.id, m.current_term, voters, m.last_log_index.unwrap_or(0)));
                }
                let role = match m.state {
                    openraft::ServerState::Leader => SimRole::Leader,
                    openraft::ServerState::Follower => SimRole::Follower,
                    openraft::ServerState::Candidate => SimRole::Candidate,
                    openraft::ServerState::Learner => SimRole::Learner,
                    openraft::ServerState::Shutdown => SimRole::Shutdown,
                };
                (role, m.current_term)
            };
            if role == SimRole::Leader && leader.is_none_or(|(t, _)| term > t) {
                leader = Some((term, s.id));
            }
            if s.role != Some((role, term)) {
                s.role = Some((role, term));
                changes.push(Observation::RoleChange {
                    t_ms,
                    node: s.id,
                    term,
                    role,
                });
            }
        }
        for o in &changes {
            self.observe(o);
        }
        self.report_leader_reach(t_ms, leading);
        leader.map(|(_, id)| id)
    }

    /// For the `isolated_leader` checker: each node that leads, whether the network lets it
    /// reach a quorum of its voters (both directions open, the voter up), reported when that
    /// changes and, while cut off, when its log grows. A leader never cut off is not reported,
    /// so scenarios without partitions keep their traces.
    fn report_leader_reach(&mut self, t_ms: u64, leading: Vec<(u64, u64, Vec<u64>, u64)>) {
        let was_cut = std::mem::take(&mut self.leaders_cut);
        for (node, term, voters, last_log_index) in leading {
            let reached = voters
                .iter()
                .filter(|&&v| {
                    v == node
                        || (self.slot_of(v).is_some_and(|j| self.slots[j].run.is_some())
                            && !self.net.is_node_down(v)
                            && !self.net.is_cut(node, v)
                            && !self.net.is_cut(v, node))
                })
                .count();
            let cut = reached * 2 <= voters.len();
            let before = was_cut.get(&node).copied();
            if cut {
                self.leaders_cut.insert(node, last_log_index);
            }
            if (cut && before != Some(last_log_index)) || (!cut && before.is_some()) {
                self.observe(&Observation::LeaderReach {
                    t_ms,
                    node,
                    term,
                    cut,
                    last_log_index,
                });
            }
        }
    }

    fn slot_of(&self, node: u64) -> Option<usize> {
        self.slots.iter().position(|s| s.id == node)
    }

    /// Starts the operator's deploy of `actor` at `version` through `node` (`deploy` faults).
    fn deploy(&mut self, node: u64, actor: &str, version: u32, patience: Duration) {
        let t_ms = self.epoch.elapsed_ms();
        // Validated with the scenario (`DEPLOYABLE_ACTORS`).
        let Some(kind) = ghatta::actors::ActorKind::by_name(actor) else {
            return;
        };
        let module = match deploy::module_for(kind, version) {
            Ok(m) => m,
            Err(e) => {
                self.extra.push(Violation {
                    checker: "deploy".into(),
                    t_ms,
                    message: format!("{e:#}"),
                });
                return;
            }
        };
        let manifest = self.operator_key.sign(actor, version, &module);
        let air_now = self.net.total_counters().bytes_sent;
        let at = {
            let mut log = lock(&self.deploy_log);
            log.push(deploy::DeployRequest {
                actor: kind,
                version,
                module_bytes: module.len() as u64,
                asked_ms: t_ms,
                committed_ms: None,
                refusal: None,
                attempts: 0,
                last_error: None,
                active_first_ms: None,
                active_everywhere_ms: None,
                active_since_index: None,
                air_bytes_asked: air_now,
                air_bytes_active: air_now,
                air_bytes_before: None,
            });
            log.len() - 1
        };
        drop(tokio::spawn(deploy::carry_out(
            self.engine.clone(),
            self.running.clone(),
            self.epoch,
            self.deploy_log.clone(),
            at,
            node,
            Arc::new(module),
            manifest,
            patience,
        )));
    }

    /// While deploys are pending: samples the links' bytes, and marks each deploy active
    /// everywhere once every node runs and its registry shows the version active (a violation
    /// if they show it active from different indexes).
    fn watch_deploys(&mut self, t_ms: u64) {
        if !self.has_deploys {
            return;
        }
        let air_now = self.net.total_counters().bytes_sent;
        if self
            .air_samples
            .last()
            .is_none_or(|&(t, _)| t + AIR_SAMPLE_MS <= t_ms)
        {
            self.air_samples.push((t_ms, air_now));
        }
        let pending: Vec<(usize, ghatta::actors::ActorKind, u32)> = lock(&self.deploy_log)
            .iter()
            .enumerate()
            .filter(|(_, r)| r.active_everywhere_ms.is_none())
            .map(|(i, r)| (i, r.actor, r.version))
            .collect();
        if pending.is_empty() {
            return;
        }
        let all_up = self.slots.iter().all(|s| s.run.is_some());
        let views: Vec<ghatta::state::ActorModules> = self
            .slots
            .iter()
            .filter_map(|s| Some(s.run.as_ref()?.node.state_machine().actor_modules()))
            .collect();
        for (i, actor, version) in pending {
            let since: Vec<Option<u64>> = views
                .iter()
                .map(|m| deploy::active_since(m, actor, version))
                .collect();
            let mut log = lock(&self.deploy_log);
            let r = &mut log[i];
            if r.active_first_ms.is_none() && since.iter().any(Option::is_some) {
                r.active_first_ms = Some(t_ms);
            }
            if !all_up || since.iter().any(Option::is_none) {
                continue;
            }
            r.active_everywhere_ms = Some(t_ms);
            r.active_since_index = since[0];
            r.air_bytes_active = air_now;
            // The background: the rate over the time before the request (as long as the
            // deploy took, or the second half of the run so far if shorter: the first holds
            // the set-up), over the deploy's window.
            let window = t_ms - r.asked_ms;
            let span = window.min(r.asked_ms / 2);
            r.air_bytes_before = (span > 0)
                .then(|| {
                    let from = r.asked_ms - span;
                    let &(ts, then) = self.air_samples.iter().find(|&&(ts, _)| ts >= from)?;
                    let span = r.asked_ms.checked_sub(ts).filter(|&s| s > 0)?;
                    let bytes = r.air_bytes_asked.saturating_sub(then);
                    Some(
                        u64::try_from(u128::from(bytes) * u128::from(window) / u128::from(span))
                            .unwrap_or(u64::MAX),
                    )
                })
                .flatten();
            if since.windows(2).any(|p| p[0] != p[1]) {
                let message = format!(
                    "{} v{version} became active at different indexes: {since:?} (node order)",
                    actor.name()
                );
                drop(log);
                self.extra.push(Violation {
                    checker: "deploy".into(),
                    t_ms,
                    message,
                });
            }
        }
    }

    async fn act(&mut self, a: NodeAction) {
        match a {
            NodeAction::Crash { node } => {
                if let Some(i) = self.slot_of(node) {
                    self.kill(i, false).await;
                }
            }
            NodeAction::PowerCut { node } => {
                if let Some(i) = self.slot_of(node) {
                    self.kill(i, true).await;
                }
            }
            NodeAction::ArmSyncCut { node } => {
                if let Some(i) = self.slot_of(node) {
                    // The log's fsyncs are the ones an acknowledgement waits for.
                    self.slots[i].log_disk.fail_next_sync(SyncFault::PowerCut);
                }
            }
            NodeAction::Stop { node } => {
                if let Some(i) = self.slot_of(node) {
                    self.stop(i).await;
                }
            }
            NodeAction::Decommission { node } => {
                if let Some(i) = self.slot_of(node) {
                    self.stop(i).await;
                    self.decommissioned.push(node);
                }
            }
            NodeAction::Restart { node } => {
                if let Some(i) = self.slot_of(node) {
                    if self.slots[i].run.is_none() {
                        self.start(i, false).await;
                    } else {
                        // An armed cut that never landed (healed first): the node runs on.
                        self.slots[i].log_disk.disarm();
                    }
                }
            }
            NodeAction::Replace { node } => {
                if let Some(i) = self.slot_of(node) {
                    self.replace(i).await;
                }
            }
            NodeAction::Member {
                node,
                change,
                patience,
            } => {
                let at = {
                    let mut log = lock(&self.member_log);
                    log.push(member::MemberRequest {
                        node,
                        change,
                        asked_ms: self.epoch.elapsed_ms(),
                        done_ms: None,
                        attempts: 0,
                        last_error: None,
                    });
                    log.len() - 1
                };
                drop(tokio::spawn(member::carry_out(
                    self.engine.clone(),
                    self.running.clone(),
                    self.epoch,
                    self.member_log.clone(),
                    at,
                    patience,
                )));
            }
            NodeAction::Deploy {
                node,
                actor,
                version,
                patience,
            } => self.deploy(node, &actor, version, patience),
            NodeAction::FailSyncIo { node } => {
                if let Some(i) = self.slot_of(node) {
                    self.slots[i].log_disk.fail_next_sync_io();
                }
            }
            NodeAction::SetClock { node, clock } => {
                if let Some(i) = self.slot_of(node) {
                    let now = self.epoch.elapsed_ms();
                    self.slots[i].clock.set_at(clock, now);
                }
            }
            NodeAction::SetRogue { node, on } => {
                if let Some(i) = self.slot_of(node) {
                    self.slots[i].rogue_on = on;
                    if on {
                        self.start_rogue(i);
                    } else if let Some(t) = self.slots[i].run.as_mut().and_then(|r| r.rogue.take())
                    {
                        t.abort();
                    }
                }
            }
            NodeAction::SetDiskFull { node, full } => {
                if let Some(i) = self.slot_of(node) {
                    let s = &mut self.slots[i];
                    s.disk_full = full;
                    // One card holds all three databases.
                    for d in [&s.log_disk, &s.state_disk, &s.journal_disk] {
                        d.set_full(full);
                    }
                }
            }
            NodeAction::Corrupt { node, file, pick } => {
                if let Some(i) = self.slot_of(node) {
                    self.kill(i, true).await;
                    let s = &mut self.slots[i];
                    let disk = match file {
                        ghatta_sim::scenario::DiskFile::RaftLog => &s.log_disk,
                        ghatta_sim::scenario::DiskFile::State => &s.state_disk,
                    };
                    let flipped = disk.flip_bit_in_newest(pick);
                    s.corrupted = Some(file);
                    let t_ms = self.epoch.elapsed_ms();
                    self.notes.push(format!(
                        "t={t_ms} ms: node {node}'s {file:?} database: bit flipped at {flipped:?} \
                         (byte, bit)"
                    ));
                }
            }
            NodeAction::SetSyncDelay { node, delay } => {
                if let Some(i) = self.slot_of(node) {
                    // One card holds all three databases; the node waits on the log's fsyncs
                    // (`storage::SyncLatency`), the ones its peers' commits wait for.
                    let s = &self.slots[i];
                    for d in [&s.log_disk, &s.state_disk, &s.journal_disk] {
                        d.set_sync_delay(delay);
                    }
                }
            }
            NodeAction::SetLoadScale { node, scale, ramp } => {
                if let Some(p) = self.plant_mut(node) {
                    p.ramp_load_scale(scale, ramp.as_millis() as u64);
                }
            }
            NodeAction::SetWaterFactor { node, factor, ramp } => {
                if let Some(p) = self.plant_mut(node) {
                    p.ramp_water_factor(factor, ramp.as_millis() as u64);
                }
            }
            NodeAction::SetTie { a, b, closed } => {
                // Plants that were never tied (a scenario without `interconnected`) stay apart.
                let plant_of = |n| self.slot_of(n).and_then(|i| self.slots[i].plant);
                if self.cfg.scenario.nodes.interconnected
                    && let (Some(pa), Some(pb)) = (plant_of(a), plant_of(b))
                {
                    self.grid.set_tie(pa, pb, closed);
                }
            }
        }
    }

    fn plant_mut(&mut self, node: u64) -> Option<&mut Plant> {
        let i = self.slot_of(node)?;
        let p = self.slots[i].plant?;
        self.grid.plant_mut(p)
    }

    /// Starts an incarnation of node `i` on its disks (after a fault, redb recovers them).
    async fn start(&mut self, i: usize, first: bool) {
        let t_ms = self.epoch.elapsed_ms();
        let id = self.slots[i].id;
        match self.start_inner(i, first).await {
            Ok(inc) => {
                self.incarnations += 1;
                lock(&self.running).insert(id, (i, self.incarnations, inc.node.clone()));
                self.slots[i].run = Some(inc);
                if self.slots[i].rogue_on {
                    self.start_rogue(i);
                }
            }
            Err(e) => {
                let error = format!("{e:#}");
                // It is down, whatever the fault driver's restart said.
                self.observe(&Observation::NodeCrash { t_ms, node: id });
                let s = &mut self.slots[i];
                if s.corrupted.is_some() || s.disk_full {
                    // Expected of a damaged or full card, if the operator is told which file
                    // and what to do; a full card's node is started again by systemd.
                    let why = if s.disk_full { "full" } else { "corrupted" };
                    if s.disk_full {
                        s.watchdog_restart_ms = Some(t_ms + RESTART_MS);
                    }
                    if s.last_start_error.as_ref() != Some(&error) {
                        s.last_start_error = Some(error.clone());
                        self.notes.push(format!(
                            "t={t_ms} ms: node {id} refused to start on its {why} card (again \
                             at each restart while it is): {error}"
                        ));
                    }
                    if let Some(problem) = unhelpful_start_error(&error) {
                        self.extra.push(Violation {
                            checker: "restart".into(),
                            t_ms,
                            message: format!(
                                "node {id}'s start on its {why} card failed with an error that \
                                 {problem}: {error}"
                            ),
                        });
                    }
                } else {
                    // A node that cannot come back from its own disks has lost data.
                    self.extra.push(Violation {
                        checker: "restart".into(),
                        t_ms,
                        message: format!("node {id} could not start from its disks: {error}"),
                    });
                }
            }
        }
        if self.slots[i].run.is_some() {
            self.slots[i].last_start_error = None;
        }
        if self.slots[i].run.is_some()
            && let Some(file) = self.slots[i].corrupted.take()
        {
            self.notes.push(format!(
                "t={t_ms} ms: node {id} started on its {file:?} database with a flipped bit \
                 (redb verified it: the flip was in a page no tree uses, or, in the state \
                 database, its newest commit was rolled back; the Raft log refuses that)"
            ));
        }
    }

    async fn start_inner(&mut self, i: usize, first: bool) -> anyhow::Result<Incarnation> {
        let s = &self.slots[i];
        let id = s.id;
        let log = storage::open_log_backend(s.log_disk.clone(), &format!("node-{id}/raft-log"))?;
        let state = storage::open_backend(s.state_disk.clone(), &format!("node-{id}/state"))?;
        // The production field loop's own durable journal (after a fault, redb recovers it
        // from what the disk kept), opened before the node so a failure leaves nothing running.
        let journal = match (s.plant, self.proposers_on) {
            (Some(_), true) => Some(Journal::open_backend(
                s.journal_disk.clone(),
                &format!("node-{id}/journal"),
                self.field_cfg.journal.clone(),
            )?),
            _ => None,
        };
        let alive = Arc::new(AtomicBool::new(true));
        let cluster_name = format!("sim-{}", self.cfg.scenario.name);
        let members: Vec<u64> = self.slots.iter().map(|p| p.id).collect();
        let key_gens = self
            .slots
            .iter()
            .filter(|p| p.key_gen > 0)
            .map(|p| (p.id, p.key_gen))
            .collect();
        let plan = StartPlan {
            id,
            net: self.net.clone(),
            alive: alive.clone(),
            link_stats: s.link_stats.clone(),
            seal: self.cfg.scenario.links.sealed.then_some(self.cfg.seed),
            members,
            key_gens,
            cluster_name,
            timing: self.timing,
            seed: self.cfg.seed ^ id,
            stores: Stores {
                log,
                state,
                log_sync: Some(Arc::new(DiskLatency(s.log_disk.clone()))),
            },
            clock: s.clock.clone(),
            observer: Arc::new(SimObserver::new(
                id,
                alive.clone(),
                self.shared.clone(),
                self.engine.epoch_of(i),
            )),
            faults: self.switches.clone(),
            host: self.host.clone(),
            initialize: first,
            actor_signers: vec![self.operator_key.public()],
            field: match (s.plant, journal) {
                (Some(p), Some(journal)) => Some((
                    self.boards[p].board().clone(),
                    journal,
                    self.field_cfg.clone(),
                    s.field_stats.clone(),
                )),
                _ => None,
            },
            wan: self.central.as_ref().map(|c| c.uploader()),
        };
        let (inc, seal_stats) = self.engine.run_on(i, plan.start()).await?;
        self.slots[i].seal_stats.extend(seal_stats);
        Ok(inc)
    }

    /// Kills node `i`'s process at this instant, as a crash or a power cut does: the disks
    /// are cut first (a power cut keeps only what was fsynced; a crash, the page cache too),
    /// fencing the dead process's handles, and only then is the node stopped, without its
    /// shutdown on the world's time. What the node did and the observer saw before the cut
    /// stays valid; nothing it does after reaches a disk, a link or a checker.
    async fn kill(&mut self, i: usize, power_cut: bool) {
        let t_ms = self.epoch.elapsed_ms();
        let s = &mut self.slots[i];
        let Some(r) = s.run.take() else {
            return;
        };
        // A cut armed for an fsync that did not come in time lands now instead.
        s.log_disk.disarm();
        for d in [&s.log_disk, &s.state_disk, &s.journal_disk] {
            if power_cut {
                d.power_cut();
            } else {
                d.crash();
            }
        }
        let node = self.end_incarnation(i, r, t_ms);
        // The dead process's Raft core must stop so that it stops using CPU and timers; it
        // stops in the background, on fenced disks and a dead transport, while the world
        // goes on (a real process does nothing at all after the cut; this one can do
        // nothing that anyone sees).
        drop(
            self.engine
                .spawn_on(i, async move { node.shutdown().await }),
        );
    }

    /// Replaces node `i`'s board (`replace_node`): its power is cut if it runs, its disks
    /// are swapped for blank ones, it gets a new key pair, and every other member is due a
    /// restart that teaches it the key, one every [`REKEY_GAP_S`] (the new board starts at the
    /// fault's end, on the blank disks, and joins nothing until an operator adds it).
    async fn replace(&mut self, i: usize) {
        self.kill(i, true).await;
        let t_ms = self.epoch.elapsed_ms();
        let s = &mut self.slots[i];
        s.log_disk = SimDisk::new();
        s.state_disk = SimDisk::new();
        s.journal_disk = SimDisk::new();
        s.corrupted = None;
        s.disk_full = false;
        s.key_gen += 1;
        let node = s.id;
        self.observe(&Observation::NodeReplaced { t_ms, node });
        let gap_ms = (REKEY_GAP_S * 1_000.0) as u64;
        let due = (0..self.slots.len()).filter(|&j| j != i);
        for (k, j) in (1..).zip(due) {
            self.rekeys.push_back((t_ms + k * gap_ms, j));
        }
    }

    /// Carries out the key restarts due by `t_ms`: each member that runs is stopped and
    /// started again with every member's current key, as `systemctl restart` after an
    /// operator edited its `[[peers]]` (one that is down reads the keys when it comes back).
    async fn rekey_due(&mut self, t_ms: u64) {
        while let Some(&(due, j)) = self.rekeys.front() {
            if due > t_ms {
                break;
            }
            self.rekeys.pop_front();
            if self.slots[j].run.is_none() {
                continue;
            }
            let id = self.slots[j].id;
            self.observe(&Observation::NodeCrash { t_ms, node: id });
            self.stop(j).await;
            self.start(j, false).await;
            self.observe(&Observation::NodeRestart { t_ms, node: id });
        }
    }

    /// systemd's watchdog: a node whose Raft core has stopped is killed [`WATCHDOG_MS`] after
    /// the world first saw it stopped (its health probe fails, so it stops pinging), as a crash
    /// (the machine keeps power), and started again [`RESTART_MS`] later unless a fault's
    /// restart came first.
    async fn watchdog(&mut self, t_ms: u64) {
        for i in 0..self.slots.len() {
            let s = &mut self.slots[i];
            if let Some(due) = s.watchdog_restart_ms
                && due <= t_ms
            {
                s.watchdog_restart_ms = None;
                if s.run.is_none() {
                    let node = s.id;
                    self.start(i, false).await;
                    self.observe(&Observation::NodeRestart { t_ms, node });
                }
                continue;
            }
            let s = &mut self.slots[i];
            let Some(r) = &s.run else {
                s.unhealthy_since = None;
                continue;
            };
            let stopped = r
                .node
                .raft()
                .metrics()
                .borrow_watched()
                .running_state
                .is_err();
            if !stopped {
                s.unhealthy_since = None;
                continue;
            }
            let since = *s.unhealthy_since.get_or_insert(t_ms);
            if t_ms - since >= WATCHDOG_MS {
                s.unhealthy_since = None;
                s.watchdog_restart_ms = Some(t_ms + RESTART_MS);
                let node = s.id;
                self.observe(&Observation::NodeCrash { t_ms, node });
                self.kill(i, false).await;
            }
        }
    }

    /// Starts node `i`'s forgeries on its runtime, if it runs and they do not yet.
    fn start_rogue(&mut self, i: usize) {
        let members: Vec<u64> = self.slots.iter().map(|s| s.id).collect();
        let s = &mut self.slots[i];
        let Some(r) = s.run.as_mut().filter(|r| r.rogue.is_none()) else {
            return;
        };
        r.rogue = Some(self.engine.spawn_on(
            i,
            rogue::run(
                s.id,
                members,
                r.transport.clone(),
                r.node.clone(),
                s.rogue_sent.clone(),
            ),
        ));
    }

    /// The end of node `i`'s incarnation `r` at `t_ms`, after a kill or a stop: its tasks
    /// are dropped, it leaves the running set and the observer sees it shut down. Returns
    /// the node, for a kill to stop its core.
    fn end_incarnation(&mut self, i: usize, r: Incarnation, t_ms: u64) -> Node {
        r.alive.store(false, Ordering::Relaxed);
        for t in r.tasks.into_iter().chain(r.field).chain(r.rogue) {
            t.abort();
        }
        let s = &mut self.slots[i];
        s.refused += rogue::refused_total(&r.node);
        lock(&self.running).remove(&s.id);
        let term = s.role.map_or(0, |(_, t)| t);
        s.role = Some((SimRole::Shutdown, term));
        let o = Observation::RoleChange {
            t_ms,
            node: s.id,
            term,
            role: SimRole::Shutdown,
        };
        self.observe(&o);
        r.node
    }

    /// Stops node `i` gracefully, as `systemctl stop` does: its shutdown runs to the end
    /// (openraft's core stops, its databases close) while it is still observed, then its
    /// tasks are dropped and its disks' handles fenced. Nothing written is lost: the board
    /// keeps power, and its page cache with it.
    async fn stop(&mut self, i: usize) {
        let Some(r) = self.slots[i].run.take() else {
            return;
        };
        let node = r.node.clone();
        self.engine
            .run_on(i, async move { node.shutdown().await })
            .await;
        let t_ms = self.epoch.elapsed_ms();
        drop(self.end_incarnation(i, r, t_ms));
        let s = &self.slots[i];
        for d in [&s.log_disk, &s.state_disk, &s.journal_disk] {
            d.fence();
        }
    }

    /// Cuts every node whose armed `in_sync` power cut fired in an fsync since the last
    /// barrier, and tells the fault driver. (The node's log database refused every write
    /// after its failed commit, as redb does after an I/O error, so it acknowledged nothing
    /// more meanwhile.)
    async fn land_sync_cuts(&mut self, t_ms: u64, faults: &mut FaultDriver) {
        for i in 0..self.slots.len() {
            if self.slots[i].log_disk.take_tripped().is_none() {
                continue;
            }
            self.kill(i, true).await;
            let tick = faults.sync_cut_landed(t_ms, self.slots[i].id, &self.net);
            for o in &tick.observations {
                self.observe(o);
            }
        }
    }

    /// Steps the plants through the window starting at `t_ms`, one world step at a time
    /// (the `first`-th to the last), from the relays the nodes have set by now: step 0's
    /// readings (the plants at `t_ms`) go on the boards at once; in a longer lockstep window
    /// the later ones go to the boards' feeds, for the nodes' runtimes to put there at their
    /// times, and their true values are observed at the next barrier (every observation up
    /// to a barrier comes before the next).
    fn step_plants(&mut self, t_ms: u64, first: u64) {
        for (t, truths) in std::mem::take(&mut self.plants_ahead) {
            self.observe_plants(t, &truths);
        }
        for k in first..self.window_ms / STEP_MS {
            let at = t_ms + k * STEP_MS;
            for (i, b) in self.boards.iter_mut().enumerate() {
                if let Some(p) = self.grid.plant_mut(i) {
                    b.before_step(p, STEP_MS);
                }
            }
            self.grid.step(STEP_MS);
            debug_assert!(
                self.grid.plants().iter().all(|p| p.t_ms() == at),
                "the plants' clocks follow the world's"
            );
            for (i, b) in self.boards.iter_mut().enumerate() {
                let Some(p) = self.grid.plant_mut(i) else {
                    continue;
                };
                match self.feeds.get(i).and_then(Option::as_ref) {
                    Some(feed) if k > 0 => feed.push(at, b.update_after_step(p, STEP_MS)),
                    _ => b.after_step(p, STEP_MS),
                }
            }
            let truths: Vec<_> = self.grid.plants().iter().map(Plant::truth).collect();
            if k == 0 {
                self.observe_plants(at, &truths);
            } else {
                self.plants_ahead.push((at, truths));
            }
        }
    }

    /// Reports the plants' true frequencies at `t_ms` (and records them for the plot).
    fn observe_plants(&mut self, t_ms: u64, truths: &[PlantTruth]) {
        for (i, tr) in truths.iter().enumerate() {
            let o = Observation::Frequency {
                t_ms,
                plant: i as u32,
                mhz: tr.frequency_mhz,
            };
            self.observe(&o);
        }
        if let Some(p) = self.plot.as_mut() {
            p.record_plants(t_ms, truths);
        }
    }

    /// Applied index of every running node, in node order.
    fn applied_indexes(&self) -> Vec<u64> {
        self.slots
            .iter()
            .filter_map(|s| s.run.as_ref())
            .map(|r| r.node.state_machine().status().borrow().applied_index)
            .collect()
    }
}

/// What an error a node refused to start with lacks, if anything: the operator must learn
/// which database (by its file name) and what to do.
fn unhelpful_start_error(error: &str) -> Option<&'static str> {
    let names_file = ["raft-log", "state", "journal"]
        .iter()
        .any(|f| error.contains(f));
    let says_what_to_do = ["free space", "restore", "remove", "replace"]
        .iter()
        .any(|w| error.contains(w));
    match (names_file, says_what_to_do) {
        (true, true) => None,
        (false, _) => Some("does not name the database file"),
        (true, false) => Some("does not say what to do"),
    }
}

/// Every plant's (node id, feeder count, customer ids), as the set-up takes them.
fn plants_of(w: &World) -> Vec<(u64, usize, Vec<u32>)> {
    w.slots
        .iter()
        .filter_map(|s| {
            let p = &w.grid.plants()[s.plant?];
            let customers = p
                .customer_ids()
                .filter_map(|c| u32::try_from(c).ok())
                .collect();
            Some((s.id, p.feeder_count(), customers))
        })
        .collect()
}

/// The operator: commits the set-up (in proposals of at most `proposal_bytes_max` encoded
/// bytes, as the field loop sizes its own), then every [`TOPUP_INTERVAL`] sells a top-up to every
/// prepaid account at or below the disconnect threshold. It runs on the world's runtime; each
/// proposal runs on the runtime of the node it goes through.
async fn operator(
    engine: Engine,
    running: Running,
    shared: Arc<Shared>,
    setup_inputs: Vec<sdk::Input>,
    proposal_bytes_max: usize,
) {
    let mut chunk: Vec<Vec<u8>> = Vec::new();
    let mut bytes = 0;
    for input in &setup_inputs {
        let encoded = sdk::codec::encode(input);
        let full = chunk.len() >= setup::SETUP_INPUTS_PER_PROPOSAL
            || bytes + encoded.len() > proposal_bytes_max;
        if full && !chunk.is_empty() {
            commit(&engine, &running, std::mem::take(&mut chunk)).await;
            bytes = 0;
        }
        bytes += encoded.len();
        chunk.push(encoded);
    }
    if !chunk.is_empty() {
        commit(&engine, &running, chunk).await;
    }
    let mut token_id = 1u64;
    loop {
        tokio::time::sleep(TOPUP_INTERVAL).await;
        let low: Vec<u32> = shared
            .accounts_at_or_below(setup::DISCONNECT_AT_MPAISA)
            .into_iter()
            .filter(|&c| setup::is_prepaid(c))
            .take(TOPUPS_PER_ROUND_MAX)
            .collect();
        if low.is_empty() {
            continue;
        }
        let inputs = low
            .iter()
            .map(|&c| {
                token_id += 1;
                sdk::codec::encode(&setup::topup(c, token_id))
            })
            .collect();
        commit(&engine, &running, inputs).await;
    }
}

/// Commits `inputs` through the lowest-numbered running node, exactly once: one sequence
/// number per node tried, retried until that node commits it or dies (then the next node
/// proposes the same inputs under its own sequence number; the set-up inputs and top-ups are
/// idempotent, the latter by token id, so a double commit changes nothing).
async fn commit(engine: &Engine, running: &Running, inputs: Vec<Vec<u8>>) {
    loop {
        let node = lock(running).values().next().cloned();
        let Some((slot, incarnation, node)) = node else {
            tokio::time::sleep(OPERATOR_RETRY).await;
            continue;
        };
        let attempt = propose_through(running.clone(), incarnation, node, inputs.clone());
        match engine.spawn_on(slot, attempt).await {
            Ok(true) => return,
            // That incarnation died (or could not reserve a number): try the next node.
            Ok(false) | Err(_) => tokio::time::sleep(OPERATOR_RETRY).await,
        }
    }
}

/// Proposes `inputs` through `node` under one sequence number until it commits (`true`) or
/// the incarnation dies (`false`). Runs on the node's runtime.
pub(crate) async fn propose_through(
    running: Running,
    incarnation: u64,
    node: Node,
    inputs: Vec<Vec<u8>>,
) -> bool {
    let Ok(seq) = node.next_seq() else {
        return false;
    };
    loop {
        match node
            .propose_with_seq(seq, Body::Inputs(inputs.clone()))
            .await
        {
            Ok(_) => return true,
            Err(e) => tracing::debug!(error = %e, "operator proposal not committed; retrying"),
        }
        tokio::time::sleep(OPERATOR_RETRY).await;
        let alive = lock(&running)
            .get(&node.id())
            .is_some_and(|(_, i, _)| *i == incarnation);
        if !alive {
            return false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lockstep_window_is_whole_steps_within_the_links_and_the_cap() {
        let window = |latency_ms: u32| {
            let scenario = Scenario::parse(
                &format!(
                    "duration_s = 60\n[nodes]\ncount = 3\n[links.default]\n\
                     preset = \"satellite\"\nlatency_ms = {latency_ms}\njitter_ms = 10\n"
                ),
                "window.toml",
            )
            .expect("scenario");
            (lockstep_allowed(&scenario), lockstep_window_ms(&scenario))
        };
        assert_eq!(window(150), (true, 100));
        assert_eq!(
            window(260),
            (true, 200),
            "rounded down to whole world steps"
        );
        assert_eq!(window(400), (true, 400));
        assert_eq!(window(1_000), (true, LOCKSTEP_WINDOW_MS_MAX), "capped");
        assert!(
            !window(50).0,
            "links shorter than a step cannot run in lockstep"
        );
        let five_node = Scenario::load(std::path::Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../sim/scenarios/five-node-leader-isolated.toml"
        )))
        .expect("five-node scenario");
        assert_eq!(lockstep_window_ms(&five_node), 400);
    }

    #[test]
    fn a_short_calm_run_passes() {
        let scenario = Scenario::parse(
            "duration_s = 60\nsettle_s = 30\nliveness_bound_s = 30\n[nodes]\ncount = 3\n\
             [plant]\nhouseholds_per_feeder = [10, 10]\n[links.default]\npreset = \"lan\"\n",
            "smoke.toml",
        )
        .expect("scenario");
        let out = run(&SimConfig {
            scenario,
            seed: 1,
            mutation: Mutation::None,
            plot: false,
            timing: None,
            trace_path: None,
            actor_replay: true,
            lockstep_threads: None,
        })
        .expect("run");
        eprintln!("{}", out.report.to_json());
        assert!(out.report.passed);
    }

    #[test]
    fn the_actor_replay_cache_changes_nothing_but_the_work() {
        // A crash and a restart on the way, so a replica re-applies entries on older state.
        let scenario = Scenario::parse(
            "duration_s = 60\nsettle_s = 30\nliveness_bound_s = 30\n[nodes]\ncount = 3\n\
             [plant]\nhouseholds_per_feeder = [10, 10]\n[links.default]\npreset = \"lan\"\n\
             [[faults]]\nat_s = 20\nduration_s = 10\nkind = \"power_cut\"\nnode = 1\n",
            "replay.toml",
        )
        .expect("scenario");
        let cfg = |actor_replay| SimConfig {
            scenario: scenario.clone(),
            seed: 3,
            mutation: Mutation::None,
            plot: false,
            timing: None,
            trace_path: None,
            actor_replay,
            lockstep_threads: None,
        };
        let with = run(&cfg(true)).expect("run");
        let without = run(&cfg(false)).expect("run");
        assert!(with.report.passed, "{}", with.report.to_json());
        assert_eq!(with.report.trace_hash, without.report.trace_hash);
        assert_eq!(with.report.commits, without.report.commits);
        assert!(without.actor_replay.is_none());
        let stats = with.actor_replay.expect("stats");
        // Three replicas: most deliveries are answered by the first replica's run.
        assert!(stats.hits > stats.misses, "{stats:?}");
    }
}
