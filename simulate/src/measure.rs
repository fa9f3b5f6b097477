//! `ghatta-sim measure`: what Raft costs and how fast it is on a scenario's links, measured on
//! real nodes (no plants, no field loop: the proposals are the harness's own, so every byte is
//! accounted for): idle bytes per second per peer, bytes on the link per committed entry,
//! commit latency at the leader and forwarded from a follower against its floor (1 and 2
//! RTTs), leader loss to the next commit, and elections over a long quiet run.
//!
//! The protocol ([`measure`]) is written against [`Bed`], so the same phases run on the
//! simulator's links ([`SimBed`], simulated time: deterministic for a seed, immune to the
//! machine's load) and over the radio channel emulator on pseudo-terminals (`ghatta-sim
//! radio-measure`, real time).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::Context;
use ghatta_actor_sdk as sdk;
use ghatta_sim::disk::SimDisk;
use ghatta_sim::net::SimNet;
use ghatta_sim::rng::SimRng;
use ghatta_sim::scenario::Scenario;
use ghatta_sim::time::Epoch;
use serde::Serialize;
use tokio::task::JoinHandle;
use tokio::time::{Duration, Instant};

use super::clock::SimClock;
use super::transport::{SealWith, SimTransport, TransportStats, node_links};
use super::world::CALENDAR_START_UNIX_MS;
use ghatta::actors::{ActorHost, ActorLimits};
use ghatta::net::LinkProfile;
use ghatta::net::transport::inbound_queue;
use ghatta::node::{Node, NodeBuilder, Role};
use ghatta::raft::PeerInfo;
use ghatta::raft::timing::Timing;
use ghatta::storage::{self, Stores};

/// How often the harness looks at the nodes. 50 ms is well under every round trip measured
/// (a LAN's is ~5 ms, but its elections are not what this harness is for).
pub const POLL: Duration = Duration::from_millis(50);
/// Longest wait for a cluster to settle (a leader all agree on, every replica applied).
pub const SETTLE_MAX: Duration = Duration::from_secs(300);
/// Longest a failover trial waits for a commit after the leader is lost.
pub const FAILOVER_MAX: Duration = Duration::from_secs(180);
/// During a failover trial each survivor proposes, waits for the answer, then pauses this
/// long: a steady trickle, like the field loop's drain, so a commit is never far away.
pub const FAILOVER_PROPOSE_GAP: Duration = Duration::from_secs(1);
/// In the long run one proposal is made every this often (from each node in turn), so the
/// run is not only heartbeats.
pub const DAY_PROPOSE_EVERY: Duration = Duration::from_secs(60);

/// What the phases are told.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Design round trip the latency floors are counted in, ms.
    pub rtt_ms: u64,
    /// Idle window.
    pub idle: Duration,
    /// Proposals per latency phase (at the leader, then forwarded from a follower).
    pub proposals: usize,
    /// Proposals of the stream phase: made at the leader one every `stream_gap` without
    /// waiting for the earlier ones (0: skipped).
    pub stream: usize,
    /// Time between two proposals of the stream phase.
    pub stream_gap: Duration,
    /// Inputs per proposal (each a meter read of ~25 bytes).
    pub inputs_per_entry: usize,
    /// Leader-loss trials.
    pub failovers: usize,
    /// Length of the quiet run in which elections are counted (zero: skipped).
    pub day: Duration,
    /// Seed of the harness's own choices (gaps between proposals, when to crash).
    pub seed: u64,
}

/// A cluster the protocol can measure.
pub trait Bed {
    /// The running nodes by id.
    fn nodes(&self) -> BTreeMap<u64, Node>;
    /// Bytes each node has put on its links so far (monotonic, across restarts).
    fn bytes_sent(&self) -> BTreeMap<u64, u64>;
    /// Kills node `id` as a crash would.
    fn crash(&mut self, id: u64) -> impl std::future::Future<Output = ()>;
    /// Starts node `id` again from its disks; `false` when this bed cannot.
    fn restart(&mut self, id: u64) -> impl std::future::Future<Output = bool>;
}

/// Percentiles of a sample, in ms and as a multiple of a floor.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Latency {
    /// Samples taken.
    pub n: usize,
    /// Samples that failed (no commit within the proposer's deadline).
    pub failed: usize,
    /// Median, ms.
    pub p50_ms: u64,
    /// 99th percentile, ms.
    pub p99_ms: u64,
    /// Largest, ms.
    pub max_ms: u64,
    /// The floor, ms.
    pub floor_ms: u64,
    /// Median over the floor.
    pub p50_x_floor: f64,
    /// 99th percentile over the floor.
    pub p99_x_floor: f64,
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    // Nearest rank.
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

impl Latency {
    /// Percentiles of `ms` (with `failed` samples that have none) against `floor_ms`.
    pub fn of(mut ms: Vec<u64>, failed: usize, floor_ms: u64) -> Latency {
        ms.sort_unstable();
        let (p50, p99) = (percentile(&ms, 50.0), percentile(&ms, 99.0));
        let x = |v: u64| (v as f64 / floor_ms.max(1) as f64 * 100.0).round() / 100.0;
        Latency {
            n: ms.len(),
            failed,
            p50_ms: p50,
            p99_ms: p99,
            max_ms: ms.last().copied().unwrap_or(0),
            floor_ms,
            p50_x_floor: x(p50),
            p99_x_floor: x(p99),
        }
    }
}

/// One latency phase.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Proposals {
    /// Commit latency as the proposer saw it.
    pub latency: Latency,
    /// Bytes every node put on the links during the phase, over the entries committed.
    pub bytes_per_entry: u64,
    /// The same less what the links carry idle in as long (heartbeats): what an entry adds.
    pub bytes_per_entry_above_idle: u64,
    /// Encoded size of one entry's proposal body, bytes.
    pub entry_body_bytes: usize,
}

/// One leader-loss trial, ms after the leader died.
#[derive(Debug, Clone, Serialize)]
pub struct Failover {
    /// Every survivor follows one new leader.
    pub new_leader_ms: Option<u64>,
    /// A survivor's proposal is committed past everything committed before the loss (its
    /// proposer has the answer).
    pub commit_ms: Option<u64>,
    /// A survivor's commit index first passes what was committed before the loss (the new
    /// leader's own entry counts).
    pub commit_index_ms: Option<u64>,
}

/// Everything measured.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Measurements {
    /// Raft timing the nodes ran with.
    pub heartbeat_ms: u64,
    /// Election timeout range, ms.
    pub election_timeout_ms: [u64; 2],
    /// Time from start to a settled cluster with a leader, ms.
    pub first_leader_ms: u64,
    /// Idle window, s.
    pub idle_s: u64,
    /// Bytes per second one leader-follower pair exchanges idle (both directions): every
    /// node's bytes over the idle window, over the followers.
    pub idle_bytes_per_s_per_peer: f64,
    /// Idle bytes per second on each directed link, where the bed can tell.
    pub idle_bytes_per_s_by_link: BTreeMap<String, f64>,
    /// Terms started during the idle window.
    pub idle_elections: u64,
    /// Proposals at the leader (floor: 1 RTT).
    pub at_leader: Proposals,
    /// Proposals at a follower, forwarded to the leader (floor: 2 RTT).
    pub forwarded: Proposals,
    /// Proposals at the leader, one every `Plan::stream_gap`, each made without waiting for
    /// the earlier ones (floor: 1 RTT).
    pub streamed: Proposals,
    /// Leader-loss trials.
    pub failovers: Vec<Failover>,
    /// Leader loss to the next commit over the trials (floor: 1 RTT).
    pub failover_commit: Latency,
    /// Leader loss to a new leader over the trials.
    pub failover_leader: Latency,
    /// Length of the quiet run, s (0: not run).
    pub day_s: u64,
    /// Terms started during the quiet run (every one spurious: no node failed).
    pub day_elections: u64,
    /// Times the leader changed during the quiet run.
    pub day_leader_changes: u64,
    /// Proposals committed during the quiet run, and those that failed.
    pub day_proposals: [u64; 2],
    /// Bytes per second per peer over the quiet run (heartbeats and its few proposals).
    pub day_bytes_per_s_per_peer: f64,
}

/// The leader every running node follows, once all agree and every replica has applied the
/// same index.
fn settled(nodes: &BTreeMap<u64, Node>) -> Option<u64> {
    let st: Vec<_> = nodes.values().map(Node::status).collect();
    let leader = st.iter().find(|s| s.role == Role::Leader)?.id;
    let agree = st.iter().all(|s| s.leader == Some(leader));
    let applied = st.first()?.applied_index;
    let caught_up = st
        .iter()
        .all(|s| s.applied_index == applied && s.commit_index == applied);
    (agree && caught_up).then_some(leader)
}

async fn wait_settled<B: Bed>(bed: &B, max: Duration) -> anyhow::Result<u64> {
    let deadline = Instant::now() + max;
    loop {
        if let Some(l) = settled(&bed.nodes()) {
            return Ok(l);
        }
        if Instant::now() >= deadline {
            let st: Vec<_> = bed
                .nodes()
                .values()
                .map(|n| {
                    let s = n.status();
                    (
                        s.id,
                        s.role,
                        s.term,
                        s.leader,
                        s.commit_index,
                        s.applied_index,
                    )
                })
                .collect();
            anyhow::bail!("the cluster did not settle within {max:?}: {st:?}");
        }
        tokio::time::sleep(POLL).await;
    }
}

fn max_term(nodes: &BTreeMap<u64, Node>) -> u64 {
    nodes.values().map(|n| n.status().term).max().unwrap_or(0)
}

fn total(m: &BTreeMap<u64, u64>) -> u64 {
    m.values().sum()
}

/// One proposal's inputs: `n` meter reads (customers that do not exist: billing rejects them
/// deterministically, which costs the log exactly what an accepted read costs).
pub fn entry_inputs(n: usize, salt: u64) -> Vec<Vec<u8>> {
    (0..n.max(1))
        .map(|i| {
            sdk::codec::encode(&sdk::Input::MeterRead(sdk::MeterRead {
                customer: sdk::CustomerId(900_000 + i as u32),
                // Wrapping: a salt only has to make entries differ.
                total_wh: salt.wrapping_add(1_000_000),
                read_at_ms: salt
                    .wrapping_mul(1_000)
                    .wrapping_add(CALENDAR_START_UNIX_MS),
            }))
        })
        .collect()
}

/// A latency phase under way: its proposer, and the links' bytes and the time at its start.
struct Phase {
    node: Node,
    entry_body_bytes: usize,
    bytes_before: u64,
    started: Instant,
}

impl Phase {
    fn start<B: Bed>(bed: &B, plan: &Plan, proposer: u64) -> anyhow::Result<Phase> {
        let node = bed
            .nodes()
            .get(&proposer)
            .cloned()
            .with_context(|| format!("the proposer, node {proposer}, is not running"))?;
        let body = ghatta::raft::Body::Inputs(entry_inputs(plan.inputs_per_entry, 0));
        Ok(Phase {
            node,
            entry_body_bytes: ghatta_proto::codec::encode(&body).map_or(0, |b| b.len()),
            bytes_before: total(&bed.bytes_sent()),
            started: Instant::now(),
        })
    }

    /// The phase's numbers from its commit latencies `ms` and the `failed` proposals.
    fn finish<B: Bed>(
        self,
        bed: &B,
        ms: Vec<u64>,
        failed: usize,
        floor_ms: u64,
        idle_rate: f64,
    ) -> Proposals {
        let bytes = total(&bed.bytes_sent()) - self.bytes_before;
        let committed = ms.len().max(1) as f64;
        let idle_bytes = idle_rate * self.started.elapsed().as_secs_f64();
        Proposals {
            latency: Latency::of(ms, failed, floor_ms),
            bytes_per_entry: (bytes as f64 / committed).round() as u64,
            bytes_per_entry_above_idle: ((bytes as f64 - idle_bytes).max(0.0) / committed).round()
                as u64,
            entry_body_bytes: self.entry_body_bytes,
        }
    }
}

/// Proposes `plan.proposals` entries at `proposer` one at a time, each after a random pause.
async fn propose_phase<B: Bed>(
    bed: &B,
    plan: &Plan,
    rng: &mut SimRng,
    proposer: u64,
    floor_ms: u64,
    idle_rate: f64,
) -> anyhow::Result<Proposals> {
    let phase = Phase::start(bed, plan, proposer)?;
    let node = phase.node.clone();
    let mut ms = Vec::new();
    let mut failed = 0;
    for i in 0..plan.proposals {
        // A pause of 1-3 RTTs: the link is idle again, and the proposal lands at a random
        // phase of the heartbeat.
        let pause = plan.rtt_ms + rng.below(2 * plan.rtt_ms + 1);
        tokio::time::sleep(Duration::from_millis(pause)).await;
        let t = Instant::now();
        match node
            .propose_inputs(entry_inputs(plan.inputs_per_entry, i as u64))
            .await
        {
            Ok(_) => ms.push(t.elapsed().as_millis() as u64),
            Err(_) => failed += 1,
        }
    }
    Ok(phase.finish(bed, ms, failed, floor_ms, idle_rate))
}

/// Proposes `plan.stream` entries at the leader, one every `plan.stream_gap`, each on its own
/// task (a steady stream, as a busy grid's field loops make), and times each to its commit.
async fn stream_phase<B: Bed>(
    bed: &B,
    plan: &Plan,
    leader: u64,
    idle_rate: f64,
) -> anyhow::Result<Proposals> {
    let phase = Phase::start(bed, plan, leader)?;
    let gap = plan.stream_gap.max(Duration::from_millis(1));
    let mut tasks = Vec::with_capacity(plan.stream);
    for i in 0..plan.stream {
        let (node, inputs) = (phase.node.clone(), plan.inputs_per_entry);
        tasks.push(tokio::spawn(async move {
            let t = Instant::now();
            // Salts apart from the other phases' (their entries must differ).
            let r = node
                .propose_inputs(entry_inputs(inputs, 1 << 40 | i as u64))
                .await;
            r.ok().map(|_| t.elapsed().as_millis() as u64)
        }));
        tokio::time::sleep(gap).await;
    }
    let mut ms = Vec::new();
    let mut failed = 0;
    for t in tasks {
        match t.await {
            Ok(Some(m)) => ms.push(m),
            _ => failed += 1,
        }
    }
    Ok(phase.finish(bed, ms, failed, plan.rtt_ms, idle_rate))
}

/// Kills the leader while the survivors propose, and times the way back.
async fn failover_trial<B: Bed>(
    bed: &mut B,
    plan: &Plan,
    rng: &mut SimRng,
    trial: usize,
) -> anyhow::Result<Failover> {
    let leader = wait_settled(bed, SETTLE_MAX).await?;
    let acks: Arc<Mutex<Vec<(Instant, u64)>>> = Arc::default();
    let mut proposers: Vec<JoinHandle<()>> = Vec::new();
    for (id, node) in bed.nodes() {
        if id == leader {
            continue;
        }
        let acks = acks.clone();
        let inputs = plan.inputs_per_entry;
        proposers.push(tokio::spawn(async move {
            let mut i = 0u64;
            loop {
                if let Ok(r) = node
                    .propose_inputs(entry_inputs(inputs, (trial as u64) << 32 | i))
                    .await
                    && let Ok(mut a) = acks.lock()
                {
                    a.push((Instant::now(), r.index));
                }
                i += 1;
                tokio::time::sleep(FAILOVER_PROPOSE_GAP).await;
            }
        }));
    }
    // The loss comes at a random moment (a random phase of heartbeats and proposals).
    let lead_in = 2 * plan.rtt_ms + rng.below(4 * plan.rtt_ms + 1);
    tokio::time::sleep(Duration::from_millis(lead_in)).await;
    let committed_before = bed
        .nodes()
        .values()
        .map(|n| n.status().commit_index)
        .max()
        .unwrap_or(0);
    bed.crash(leader).await;
    let lost_at = Instant::now();
    let mut out = Failover {
        new_leader_ms: None,
        commit_ms: None,
        commit_index_ms: None,
    };
    while lost_at.elapsed() < FAILOVER_MAX && out.commit_ms.is_none() {
        tokio::time::sleep(POLL).await;
        if out.commit_index_ms.is_none()
            && bed
                .nodes()
                .values()
                .any(|n| n.status().commit_index > committed_before)
        {
            out.commit_index_ms = Some(lost_at.elapsed().as_millis() as u64);
        }
        if out.new_leader_ms.is_none() {
            let nodes = bed.nodes();
            let st: Vec<_> = nodes.values().map(Node::status).collect();
            if let Some(l) = st.iter().find(|s| s.role == Role::Leader).map(|s| s.id)
                && st.iter().all(|s| s.leader == Some(l))
            {
                out.new_leader_ms = Some(lost_at.elapsed().as_millis() as u64);
            }
        }
        let first = acks
            .lock()
            .ok()
            .and_then(|a| {
                a.iter()
                    .filter(|(t, idx)| *t >= lost_at && *idx > committed_before)
                    .map(|(t, _)| *t)
                    .min()
            })
            .map(|t| t.duration_since(lost_at).as_millis() as u64);
        out.commit_ms = first;
    }
    for p in proposers {
        p.abort();
    }
    bed.restart(leader).await;
    Ok(out)
}

/// Runs every phase on `bed`.
pub async fn measure<B: Bed>(
    bed: &mut B,
    plan: &Plan,
    timing: Timing,
    link_bytes: impl Fn(&B) -> BTreeMap<String, u64>,
) -> anyhow::Result<Measurements> {
    let mut rng = SimRng::derive(plan.seed, "measure", 0);
    let mut m = Measurements {
        heartbeat_ms: timing.heartbeat_ms,
        election_timeout_ms: [
            timing.election_timeout_ms_min,
            timing.election_timeout_ms_max,
        ],
        ..Default::default()
    };
    let t0 = Instant::now();
    let leader = wait_settled(bed, SETTLE_MAX).await?;
    // One commit first (the new leader's own entry is committed; the first proposal also
    // reserves sequence numbers), then quiet.
    bed.nodes()[&leader]
        .propose_inputs(entry_inputs(1, u64::MAX >> 1))
        .await
        .context("the first proposal did not commit")?;
    m.first_leader_ms = t0.elapsed().as_millis() as u64;
    let followers = (bed.nodes().len().max(2) - 1) as f64;

    // Idle.
    let mut idle_rate = 0.0;
    if !plan.idle.is_zero() {
        idle_rate = idle_phase(bed, plan, timing, &link_bytes, followers, &mut m).await;
    }

    // Latency at the leader, then forwarded from a follower.
    if plan.proposals > 0 {
        let leader = wait_settled(bed, SETTLE_MAX).await?;
        m.at_leader = propose_phase(bed, plan, &mut rng, leader, plan.rtt_ms, idle_rate).await?;
        let leader = wait_settled(bed, SETTLE_MAX).await?;
        let follower = bed
            .nodes()
            .keys()
            .copied()
            .find(|&id| id != leader)
            .context("no follower")?;
        m.forwarded =
            propose_phase(bed, plan, &mut rng, follower, 2 * plan.rtt_ms, idle_rate).await?;
    }
    if plan.stream > 0 {
        let leader = wait_settled(bed, SETTLE_MAX).await?;
        m.streamed = stream_phase(bed, plan, leader, idle_rate).await?;
    }

    // Leader loss.
    for trial in 0..plan.failovers {
        let f = failover_trial(bed, plan, &mut rng, trial).await?;
        m.failovers.push(f);
    }
    let ms = |f: fn(&Failover) -> Option<u64>| -> (Vec<u64>, usize) {
        let got: Vec<u64> = m.failovers.iter().filter_map(f).collect();
        let missing = m.failovers.len() - got.len();
        (got, missing)
    };
    let (c, cf) = ms(|f| f.commit_ms);
    m.failover_commit = Latency::of(c, cf, plan.rtt_ms);
    let (l, lf) = ms(|f| f.new_leader_ms);
    m.failover_leader = Latency::of(l, lf, plan.rtt_ms);

    // The quiet run.
    if !plan.day.is_zero() {
        wait_settled(bed, SETTLE_MAX).await?;
        let (b0, start) = (total(&bed.bytes_sent()), Instant::now());
        let mut term = max_term(&bed.nodes());
        let mut leader = settled(&bed.nodes());
        let mut next_proposal = start + DAY_PROPOSE_EVERY;
        let mut turn = 0usize;
        let mut pending: Option<JoinHandle<bool>> = None;
        let mut ok = 0;
        let mut failed = 0;
        while start.elapsed() < plan.day {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let nodes = bed.nodes();
            let t = max_term(&nodes);
            m.day_elections += t.saturating_sub(term);
            term = term.max(t);
            let l = nodes
                .values()
                .find(|n| n.status().role == Role::Leader)
                .map(Node::id);
            if l.is_some() && l != leader {
                if leader.is_some() {
                    m.day_leader_changes += 1;
                }
                leader = l;
            }
            if pending.as_ref().is_some_and(JoinHandle::is_finished)
                && let Some(p) = pending.take()
            {
                if p.await.unwrap_or(false) {
                    ok += 1;
                } else {
                    failed += 1;
                }
            }
            if Instant::now() >= next_proposal && pending.is_none() {
                next_proposal += DAY_PROPOSE_EVERY;
                let ids: Vec<u64> = nodes.keys().copied().collect();
                let node = nodes[&ids[turn % ids.len()]].clone();
                turn += 1;
                let inputs = entry_inputs(plan.inputs_per_entry, turn as u64);
                pending = Some(tokio::spawn(async move {
                    node.propose_inputs(inputs).await.is_ok()
                }));
            }
        }
        if let Some(p) = pending.take() {
            if p.await.unwrap_or(false) {
                ok += 1;
            } else {
                failed += 1;
            }
        }
        let secs = start.elapsed().as_secs_f64();
        m.day_s = secs as u64;
        m.day_proposals = [ok, failed];
        m.day_bytes_per_s_per_peer =
            round1((total(&bed.bytes_sent()) - b0) as f64 / secs / followers);
    }
    Ok(m)
}

/// The idle window: bytes on the links with no proposals; returns all nodes' bytes per second.
async fn idle_phase<B: Bed>(
    bed: &B,
    plan: &Plan,
    timing: Timing,
    link_bytes: &impl Fn(&B) -> BTreeMap<String, u64>,
    followers: f64,
    m: &mut Measurements,
) -> f64 {
    // Let the first commit's traffic drain.
    tokio::time::sleep(Duration::from_millis(4 * timing.heartbeat_ms)).await;
    let (b0, l0, term0) = (
        total(&bed.bytes_sent()),
        link_bytes(bed),
        max_term(&bed.nodes()),
    );
    tokio::time::sleep(plan.idle).await;
    let idle_s = plan.idle.as_secs_f64().max(1e-9);
    let idle_total = (total(&bed.bytes_sent()) - b0) as f64;
    m.idle_s = plan.idle.as_secs();
    m.idle_bytes_per_s_per_peer = round1(idle_total / idle_s / followers);
    m.idle_bytes_per_s_by_link = link_bytes(bed)
        .into_iter()
        .map(|(k, v)| {
            let before = l0.get(&k).copied().unwrap_or(0);
            (k, round1((v - before) as f64 / idle_s))
        })
        .collect();
    m.idle_elections = max_term(&bed.nodes()) - term0;
    idle_total / idle_s
}

fn round1(v: f64) -> f64 {
    (v * 10.0).round() / 10.0
}

/// A node's hardware in the simulator (outlives its incarnations).
struct SimSlot {
    id: u64,
    log_disk: SimDisk,
    state_disk: SimDisk,
    clock: Arc<SimClock>,
    link_stats: Arc<TransportStats>,
    run: Option<(Node, Arc<AtomicBool>, Vec<JoinHandle<()>>)>,
}

/// Real nodes on a scenario's simulated links, without plants.
pub struct SimBed {
    net: SimNet,
    host: Arc<ActorHost>,
    timing: Timing,
    seed: u64,
    /// Seal the links (`links.sealed`), as `ghatta-sim run` does.
    sealed: bool,
    slots: Vec<SimSlot>,
}

impl SimBed {
    /// Starts `scenario`'s nodes on its links with `timing` and forms the cluster.
    pub async fn start(scenario: &Scenario, seed: u64, timing: Timing) -> anyhow::Result<SimBed> {
        let ids: Vec<u64> = (1..=u64::from(scenario.nodes.count)).collect();
        let epoch = Epoch::now();
        let net = scenario.build_net(seed, &ids);
        let host = Arc::new(
            ActorHost::with_embedded(ActorLimits::default()).context("cannot load the actors")?,
        );
        let slots = ids
            .iter()
            .map(|&id| SimSlot {
                id,
                log_disk: SimDisk::new(),
                state_disk: SimDisk::new(),
                clock: Arc::new(SimClock::new(epoch, CALENDAR_START_UNIX_MS)),
                link_stats: Arc::default(),
                run: None,
            })
            .collect();
        let mut bed = SimBed {
            net,
            host,
            timing,
            seed,
            sealed: scenario.links.sealed,
            slots,
        };
        for id in ids.clone() {
            bed.start_node(id).await?;
        }
        let members: BTreeMap<u64, PeerInfo> =
            ids.iter().map(|&id| (id, PeerInfo::default())).collect();
        for node in bed.nodes().values() {
            node.initialize(members.clone())
                .await
                .map_err(|e| anyhow::anyhow!("cannot form the cluster: {e}"))?;
        }
        Ok(bed)
    }

    async fn start_node(&mut self, id: u64) -> anyhow::Result<()> {
        let members: Vec<u64> = self.slots.iter().map(|s| s.id).collect();
        let s = self
            .slots
            .iter_mut()
            .find(|s| s.id == id)
            .context("no such node")?;
        let log = storage::open_backend(s.log_disk.clone(), &format!("node-{id}/raft-log"))?;
        let state = storage::open_backend(s.state_disk.clone(), &format!("node-{id}/state"))?;
        let alive = Arc::new(AtomicBool::new(true));
        let (tx, rx) = inbound_queue();
        let (plain, tasks) = SimTransport::start(
            id,
            self.net.clone(),
            self.net.endpoint(id),
            tx,
            alive.clone(),
            s.link_stats.clone(),
        );
        let cluster_name = "sim-measure";
        let links = node_links(
            id,
            plain,
            rx,
            &s.link_stats,
            self.sealed.then_some(SealWith {
                seed: self.seed,
                members: &members,
                cluster: cluster_name,
                key_gens: &[],
            }),
        )?;
        let stores = Stores {
            log,
            state,
            log_sync: Some(Arc::new(crate::world::DiskLatency(s.log_disk.clone()))),
        };
        let node = NodeBuilder::new(id, cluster_name)
            .timing(self.timing)
            .seed(self.seed ^ id)
            .clock(s.clock.clone())
            .actor_host(self.host.clone())
            .start(stores, links.transport, links.inbound)
            .await?;
        s.run = Some((node, alive, tasks));
        Ok(())
    }

    /// Bytes handed to each directed link so far, keyed "a->b".
    pub fn link_bytes(&self) -> BTreeMap<String, u64> {
        let mut out = BTreeMap::new();
        for a in &self.slots {
            for b in &self.slots {
                if a.id != b.id {
                    let c = self.net.counters(a.id, b.id);
                    out.insert(format!("{}->{}", a.id, b.id), c.bytes_sent);
                }
            }
        }
        out
    }

    /// Node `id`'s wall clock (log time at its leader), to step it as a clock fault would:
    /// the WAN resync test in simulated time advances every clock an hour per round of reads.
    pub fn clock(&self, id: u64) -> Option<Arc<SimClock>> {
        self.slots
            .iter()
            .find(|s| s.id == id)
            .map(|s| s.clock.clone())
    }

    /// Stops every node.
    pub async fn stop(&mut self) {
        for s in &mut self.slots {
            if let Some((node, alive, tasks)) = s.run.take() {
                alive.store(false, Ordering::Relaxed);
                for t in tasks {
                    t.abort();
                }
                node.shutdown().await;
            }
        }
    }
}

impl Bed for SimBed {
    fn nodes(&self) -> BTreeMap<u64, Node> {
        self.slots
            .iter()
            .filter_map(|s| s.run.as_ref().map(|r| (s.id, r.0.clone())))
            .collect()
    }

    fn bytes_sent(&self) -> BTreeMap<u64, u64> {
        self.slots
            .iter()
            .map(|a| {
                let sent = self
                    .slots
                    .iter()
                    .filter(|b| b.id != a.id)
                    .map(|b| self.net.counters(a.id, b.id).bytes_sent)
                    .sum();
                (a.id, sent)
            })
            .collect()
    }

    async fn crash(&mut self, id: u64) {
        let Some(s) = self.slots.iter_mut().find(|s| s.id == id) else {
            return;
        };
        if let Some((node, alive, tasks)) = s.run.take() {
            alive.store(false, Ordering::Relaxed);
            for t in tasks {
                t.abort();
            }
            node.shutdown().await;
            s.log_disk.crash();
            s.state_disk.crash();
        }
    }

    async fn restart(&mut self, id: u64) -> bool {
        self.start_node(id).await.is_ok()
    }
}

/// Arguments of `ghatta-sim measure`.
#[derive(clap::Args, Debug, Clone)]
pub struct MeasureArgs {
    /// Scenario file (TOML) whose nodes and links to use, e.g. sim/scenarios/radio-800ms.toml
    /// (its plants, customers and faults are not used).
    #[arg(long)]
    pub scenario: PathBuf,
    /// The world seed.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Raft timing from a named link profile (default: derived from the scenario's links, as
    /// `ghatta-sim run` does).
    #[arg(long, value_enum)]
    pub link_profile: Option<super::cli::LinkProfileArg>,
    /// Idle window, simulated seconds.
    #[arg(long, default_value_t = 600)]
    pub idle_s: u64,
    /// Proposals per latency phase.
    #[arg(long, default_value_t = 100)]
    pub proposals: usize,
    /// Proposals of the stream phase (at the leader without waiting for the earlier ones;
    /// 0: skip).
    #[arg(long, default_value_t = 60)]
    pub stream: usize,
    /// Time between two proposals of the stream phase, ms (default: one round trip, so a
    /// proposal finds the append of the one before still on the link).
    #[arg(long)]
    pub stream_gap_ms: Option<u64>,
    /// Meter reads per proposal (1: the smallest entry; 16: ~500 bytes, a radio field batch).
    #[arg(long, default_value_t = 1)]
    pub inputs_per_entry: usize,
    /// Leader-loss trials.
    #[arg(long, default_value_t = 20)]
    pub failovers: usize,
    /// Length of the quiet run counting elections, simulated hours (0: skip).
    #[arg(long, default_value_t = 24.0)]
    pub day_hours: f64,
}

/// Runs the measurement on its own paused-clock runtime and prints the result as JSON.
pub fn run_blocking(args: MeasureArgs) -> anyhow::Result<ExitCode> {
    let scenario = Scenario::load(&args.scenario)?;
    let timing = match args.link_profile {
        Some(p) => Timing::for_profile(LinkProfile::from(p)),
        None => super::timing_for(&scenario.default_link()),
    };
    let rtt_ms = match args.link_profile {
        Some(p) => LinkProfile::from(p).rtt_ms(),
        None => {
            let l = scenario.default_link();
            2 * u64::from(l.latency_ms)
        }
    };
    let plan = Plan {
        rtt_ms,
        idle: Duration::from_secs(args.idle_s),
        proposals: args.proposals,
        stream: args.stream,
        stream_gap: Duration::from_millis(args.stream_gap_ms.unwrap_or(rtt_ms)),
        inputs_per_entry: args.inputs_per_entry,
        failovers: args.failovers,
        day: Duration::from_secs_f64((args.day_hours * 3_600.0).max(0.0)),
        seed: args.seed,
    };
    let _log = super::cli::quiet_logs();
    let rt = ghatta_sim::time::seeded_runtime(args.seed)
        .context("cannot build the simulator's runtime")?;
    let wall = std::time::Instant::now();
    let m = rt.block_on(ghatta::raft::Runtime::scope(args.seed, async move {
        let mut bed = SimBed::start(&scenario, args.seed, timing).await?;
        let m = measure(&mut bed, &plan, timing, SimBed::link_bytes).await;
        bed.stop().await;
        m
    }))?;
    drop(rt);
    println!(
        "{}",
        serde_json::to_string_pretty(&m).context("cannot encode the measurements")?
    );
    eprintln!(
        "measured in {:.1} s wall (seed {})",
        wall.elapsed().as_secs_f64(),
        args.seed
    );
    Ok(ExitCode::SUCCESS)
}

/// `ghatta-sim measure`, from the async CLI (the simulated world needs a runtime of its own).
pub async fn run_cmd(args: MeasureArgs) -> anyhow::Result<ExitCode> {
    tokio::task::spawn_blocking(move || run_blocking(args))
        .await
        .context("the measurement thread panicked")?
}
