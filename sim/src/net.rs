//! `SimNet`: the simulated network between nodes, on tokio's paused clock.
//!
//! `send` never blocks: it decides the frame's fate (partition, MTU, queue,
//! loss, duplication, corruption, latency) with the link's own seeded RNG and
//! pushes it onto one heap keyed by `(deliver_at, from, to, link sequence)`.
//! Only the sender touches its links' RNGs, so a frame's fate is a function of
//! the seed and of the order of that sender's own `send` calls. Every delivery
//! and every drop is recorded as a trace event; events are folded into the
//! trace hash in time order (ties broken by link and sequence), never in the
//! order threads or tasks happened to record them.
//!
//! Two ways to run it:
//! - **one runtime** ([`SimNet::new`]): a scheduler task on the caller's
//!   runtime pops due frames and puts them in the receivers' inboxes;
//! - **lockstep** ([`SimNet::new_lockstep`]): every node runs on its own
//!   paused-clock runtime (possibly on another thread), and the world advances
//!   them all in windows no longer than the shortest one-way latency. Frames
//!   sent in one window cannot be due before the next, so at each barrier the
//!   world moves the frames due in the next window to the receivers
//!   ([`SimNet::deliver_window`]), and each node's [`SimNet::delivery_task`]
//!   hands them to its inbox at their time. Times are kept on the world's
//!   epoch; each node's runtime clock is translated through its own epoch.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::{Notify, mpsc};
use tokio::time::{Duration, Instant};

use crate::link::{Direction, LinkCounters, LinkModel};
use crate::rng::SimRng;
use crate::time::Epoch;

/// A node's id on the simulated network (the controller's Raft node id).
pub type NodeId = u64;

/// Frames a node's inbox holds before new ones are dropped (and counted as
/// `dropped_inbox`). 4,096 frames is minutes of Raft traffic for a 5-node
/// group; a node that lets its inbox fill is not reading its socket, which a
/// real kernel would punish the same way.
pub const INBOX_FRAMES: usize = 4_096;

/// Largest number of frames in flight at once across the whole network. A
/// bound on the scheduler heap so a runaway sender fails loudly instead of
/// eating memory; 1,000,000 frames is far above any sane 5-node workload.
pub const IN_FLIGHT_FRAMES_MAX: usize = 1_000_000;

/// Shortest flap period, so a mis-set flap cannot spin the state machine.
const FLAP_PERIOD_MS_MIN: f64 = 1.0;

/// What a node receives: the sender and the frame's bytes (possibly corrupted).
pub type Datagram = (NodeId, Vec<u8>);

/// A node's receiving end of the network.
#[derive(Debug)]
pub struct Endpoint {
    node: NodeId,
    rx: mpsc::Receiver<Datagram>,
}

impl Endpoint {
    /// The node this endpoint belongs to.
    pub fn node(&self) -> NodeId {
        self.node
    }

    /// Waits for the next frame; `None` when the endpoint was replaced (the
    /// node was given a new endpoint, e.g. after a restart).
    pub async fn recv(&mut self) -> Option<Datagram> {
        self.rx.recv().await
    }

    /// The next frame if one is waiting.
    pub fn try_recv(&mut self) -> Option<Datagram> {
        self.rx.try_recv().ok()
    }

    /// The underlying channel, for code that wants a plain `mpsc::Receiver`.
    pub fn into_receiver(self) -> mpsc::Receiver<Datagram> {
        self.rx
    }
}

/// A frame waiting for its delivery time.
#[derive(Debug)]
struct Pending {
    at: Instant,
    seq: u64,
    from: NodeId,
    to: NodeId,
    corrupted: bool,
    bytes: Vec<u8>,
}

impl Pending {
    /// The heap order: delivery time, then link and the link's own sequence, all fixed by
    /// the sender alone (a global send counter would depend on which thread sent first).
    fn key(&self) -> (Instant, NodeId, NodeId, u64) {
        (self.at, self.from, self.to, self.seq)
    }
}

impl PartialEq for Pending {
    fn eq(&self, o: &Self) -> bool {
        self.key() == o.key()
    }
}
impl Eq for Pending {}
impl PartialOrd for Pending {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Pending {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        self.key().cmp(&o.key())
    }
}

/// One direction of one link.
#[derive(Debug)]
struct LinkState {
    model: LinkModel,
    /// Set by `set_link`; such links ignore later `set_default` calls.
    overridden: bool,
    rng: SimRng,
    /// End times of frames still being serialised or queued (bandwidth model).
    tx_ends: VecDeque<Instant>,
    busy_until: Instant,
    flap: FlapSchedule,
    /// Whether the burst-loss chain ([`LinkModel::burst`]) is in its bad state; starts good,
    /// and again whenever the model changes.
    burst_bad: bool,
    /// Frames scheduled on this link so far (the heap's tie-breaker).
    seq: u64,
    counters: LinkCounters,
}

/// A link's flap cycle: the times it toggles, drawn from its own RNG, so whether the link
/// is up at a time does not depend on when, or in which order, anyone asked (a sender at
/// its send time, the world at a frame's delivery time, possibly later in wall time).
#[derive(Debug)]
struct FlapSchedule {
    rng: SimRng,
    /// When the current cycle started (up); `None` until first asked after a model change.
    start: Option<Instant>,
    /// Toggle times after `start`, drawn as far as anyone has asked.
    toggles: Vec<Instant>,
}

impl FlapSchedule {
    /// Forgets the cycle (the link's model changed); the next question starts a new one.
    fn reset(&mut self) {
        self.start = None;
        self.toggles.clear();
    }

    /// Whether the cycle has the link up at `t` (the cycle starts up, at the first question).
    fn is_up(&mut self, flap: crate::link::Flap, t: Instant) -> bool {
        let start = *self.start.get_or_insert(t);
        if t < start {
            return true;
        }
        loop {
            let last = self.toggles.last().copied().unwrap_or(start);
            if last > t {
                break;
            }
            // After an even number of toggles the link is up and stays up for an up period.
            let mean = if self.toggles.len().is_multiple_of(2) {
                flap.up_ms
            } else {
                flap.down_ms
            };
            self.toggles.push(last + period(&mut self.rng, mean));
        }
        self.toggles.partition_point(|&x| x <= t).is_multiple_of(2)
    }
}

impl LinkState {
    fn new(model: LinkModel, rng: SimRng, flap_rng: SimRng, now: Instant) -> Self {
        Self {
            model,
            overridden: false,
            rng,
            tx_ends: VecDeque::new(),
            busy_until: now,
            flap: FlapSchedule {
                rng: flap_rng,
                start: None,
                toggles: Vec::new(),
            },
            burst_bad: false,
            seq: 0,
            counters: LinkCounters::default(),
        }
    }

    /// Whether the flap cycle has the link up at `t`.
    fn flap_is_up(&mut self, t: Instant) -> bool {
        match self.model.flap {
            Some(flap) => self.flap.is_up(flap, t),
            None => true,
        }
    }

    /// Steps the burst-loss chain for one frame on the air and says whether its state loses
    /// it. Draws nothing without burst loss, so links without it keep their old draws.
    fn burst_loses(&mut self) -> bool {
        let Some(b) = self.model.burst else {
            return false;
        };
        let leave = if self.burst_bad {
            b.bad_to_good
        } else {
            b.good_to_bad
        };
        if self.rng.chance(leave) {
            self.burst_bad = !self.burst_bad;
        }
        self.rng.chance(if self.burst_bad {
            b.loss_bad
        } else {
            b.loss_good
        })
    }

    fn one_way_latency(&mut self) -> Duration {
        let m = &self.model;
        let (base, jitter) = (f64::from(m.latency_ms), f64::from(m.jitter_ms));
        let total_ms = if m.jitter_uniform {
            (base + jitter * (2.0 * self.rng.next_f64() - 1.0)).max(0.0)
        } else {
            base + self.rng.exponential(jitter)
        }
        .min(f64::from(m.latency_cap_ms));
        Duration::from_micros((total_ms * 1_000.0) as u64)
    }
}

fn period(rng: &mut SimRng, mean_ms: u64) -> Duration {
    let ms = rng.exponential(mean_ms as f64).max(FLAP_PERIOD_MS_MIN);
    Duration::from_micros((ms * 1_000.0) as u64)
}

/// Trace event kinds folded into the hash.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
enum TraceKind {
    Delivered = 1,
    DroppedPartition = 2,
    DroppedMtu = 3,
    DroppedQueue = 4,
    DroppedLoss = 5,
    DroppedInbox = 6,
}

/// One trace event, waiting to be folded into the hash in order. The field order is the
/// fold order: time first, then everything else, so equal times fold the same way whatever
/// order threads recorded them in.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct TraceEvent {
    t_us: u64,
    from: NodeId,
    to: NodeId,
    kind: TraceKind,
    seq: u64,
    len: u64,
    /// The delivered bytes' hash (deliveries and inbox drops only).
    content: Option<[u8; 32]>,
}

/// Lockstep mode's state: each node's epoch and its frames due in the current window.
#[derive(Debug, Default)]
struct Lockstep {
    /// Each node's runtime epoch (its simulated time zero on its own clock).
    epochs: BTreeMap<NodeId, Epoch>,
    /// Frames handed to each node for the current window, in delivery order.
    due: BTreeMap<NodeId, Arc<Due>>,
}

/// One node's frames due in the current window, and the wake-up of its delivery task.
#[derive(Debug, Default)]
struct Due {
    frames: Mutex<VecDeque<Pending>>,
    wake: Notify,
}

#[derive(Debug)]
struct NetState {
    seed: u64,
    epoch: Instant,
    default: LinkModel,
    links: BTreeMap<(NodeId, NodeId), LinkState>,
    /// Directed pairs whose frames are dropped.
    cut: BTreeSet<(NodeId, NodeId)>,
    down: BTreeSet<NodeId>,
    nodes: BTreeSet<NodeId>,
    inboxes: BTreeMap<NodeId, mpsc::Sender<Datagram>>,
    heap: BinaryHeap<Reverse<Pending>>,
    trace: blake3::Hasher,
    trace_events: u64,
    /// Events recorded since the last fold.
    pending_events: Vec<TraceEvent>,
    lockstep: Option<Lockstep>,
}

impl NetState {
    fn link(&mut self, from: NodeId, to: NodeId) -> &mut LinkState {
        // A link made during the run starts with its transmitter idle at the world's time
        // zero; only its sender's sends move it on.
        let (seed, default, start) = (self.seed, self.default, self.epoch);
        self.links.entry((from, to)).or_insert_with(|| {
            LinkState::new(
                default,
                SimRng::derive(seed, "link", (from << 32) ^ to),
                SimRng::derive(seed, "flap", (from << 32) ^ to),
                start,
            )
        })
    }

    /// The time now on `node`'s clock, on the world's epoch: in lockstep each node's runtime
    /// has its own clock (and epoch); with one runtime, everyone's clock is the same.
    fn now_of(&self, node: NodeId) -> Instant {
        match self.lockstep.as_ref().and_then(|l| l.epochs.get(&node)) {
            Some(e) => self.epoch + Instant::now().duration_since(e.start()),
            None => Instant::now(),
        }
    }

    /// Records a trace event at `at`: `seq` is the link's send count for drops at send and
    /// the frame's sequence for deliveries; `content` is the delivered bytes' hash.
    #[allow(clippy::too_many_arguments)]
    fn trace(
        &mut self,
        at: Instant,
        kind: TraceKind,
        from: NodeId,
        to: NodeId,
        seq: u64,
        len: usize,
        content: Option<[u8; 32]>,
    ) {
        let t_us = at.duration_since(self.epoch).as_micros() as u64;
        self.pending_events.push(TraceEvent {
            t_us,
            from,
            to,
            kind,
            seq,
            len: len as u64,
            content,
        });
        self.trace_events += 1;
    }

    /// Folds every recorded event into the hash, in event order. Called when no event
    /// earlier than those recorded can still come: by the world at a barrier, and by the
    /// digest.
    fn fold_trace(&mut self) {
        let mut events = std::mem::take(&mut self.pending_events);
        events.sort_unstable();
        for e in &events {
            self.trace.update(&[e.kind as u8]);
            self.trace.update(&e.t_us.to_le_bytes());
            self.trace.update(&e.from.to_le_bytes());
            self.trace.update(&e.to.to_le_bytes());
            self.trace.update(&e.len.to_le_bytes());
            if matches!(e.kind, TraceKind::Delivered)
                && let Some(c) = &e.content
            {
                self.trace.update(c);
            }
        }
        events.clear();
        self.pending_events = events;
    }

    fn send(&mut self, from: NodeId, to: NodeId, bytes: Vec<u8>) {
        let now = self.now_of(from);
        let blocked =
            self.down.contains(&from) || self.down.contains(&to) || self.cut.contains(&(from, to));
        let link = self.link(from, to);
        link.counters.sent += 1;
        link.counters.bytes_sent += bytes.len() as u64;
        let sent = link.counters.sent;
        if blocked || !link.flap_is_up(now) {
            link.counters.dropped_partition += 1;
            self.trace(
                now,
                TraceKind::DroppedPartition,
                from,
                to,
                sent,
                bytes.len(),
                None,
            );
            return;
        }
        let m = link.model;
        if m.mtu_bytes > 0 && bytes.len() > m.mtu_bytes as usize {
            link.counters.dropped_mtu += 1;
            self.trace(
                now,
                TraceKind::DroppedMtu,
                from,
                to,
                sent,
                bytes.len(),
                None,
            );
            return;
        }
        let mut base = now;
        if m.bandwidth_bps > 0 {
            while link.tx_ends.front().is_some_and(|&end| end <= now) {
                link.tx_ends.pop_front();
            }
            if link.tx_ends.len() >= m.queue_frames.max(1) as usize {
                link.counters.dropped_queue += 1;
                self.trace(
                    now,
                    TraceKind::DroppedQueue,
                    from,
                    to,
                    sent,
                    bytes.len(),
                    None,
                );
                return;
            }
            let start = link.busy_until.max(now);
            let tx_nanos = (bytes.len() as u128 * 8 * 1_000_000_000) / u128::from(m.bandwidth_bps);
            let end = start + Duration::from_nanos(u64::try_from(tx_nanos).unwrap_or(u64::MAX));
            link.busy_until = end;
            link.tx_ends.push_back(end);
            base = end;
        }
        // Lost in the air: it still occupied the link. The burst chain steps for every
        // frame on the air, whatever the independent loss does.
        let burst_lost = link.burst_loses();
        if link.rng.chance(m.loss) || burst_lost {
            link.counters.dropped_loss += 1;
            self.trace(
                now,
                TraceKind::DroppedLoss,
                from,
                to,
                sent,
                bytes.len(),
                None,
            );
            return;
        }
        let copies = if link.rng.chance(m.duplicate) {
            link.counters.duplicated += 1;
            2
        } else {
            1
        };
        let mut payloads = Vec::with_capacity(copies);
        if copies == 2 {
            payloads.push(bytes.clone());
        }
        payloads.push(bytes);
        let mut scheduled = Vec::with_capacity(copies);
        for mut payload in payloads {
            let at = base + link.one_way_latency();
            let mut corrupted = false;
            if !payload.is_empty() && link.rng.chance(m.corrupt) {
                let flips = link.rng.range_inclusive(1, 3);
                for _ in 0..flips {
                    let bit = link.rng.below(payload.len() as u64 * 8);
                    payload[(bit / 8) as usize] ^= 1 << (bit % 8);
                }
                corrupted = true;
            }
            link.seq += 1;
            scheduled.push((at, link.seq, corrupted, payload));
        }
        for (at, seq, corrupted, payload) in scheduled {
            assert!(
                self.heap.len() < IN_FLIGHT_FRAMES_MAX,
                "more than {IN_FLIGHT_FRAMES_MAX} frames in flight: a sender is running away"
            );
            self.heap.push(Reverse(Pending {
                at,
                seq,
                from,
                to,
                corrupted,
                bytes: payload,
            }));
        }
    }

    /// Delivers every frame due at or before `now`; returns the next due time.
    fn deliver_due(&mut self, now: Instant) -> Option<Instant> {
        while let Some(Reverse(top)) = self.heap.peek() {
            if top.at > now {
                return Some(top.at);
            }
            let Some(Reverse(p)) = self.heap.pop() else {
                break;
            };
            if let Some(p) = self.pass_delivery_checks(p) {
                self.hand_over(p);
            }
        }
        None
    }

    /// The checks a frame meets at its delivery time: the receiver down, the link cut or
    /// flapped down. Returns the frame if it gets through.
    fn pass_delivery_checks(&mut self, p: Pending) -> Option<Pending> {
        let cut = self.down.contains(&p.to) || self.cut.contains(&(p.from, p.to));
        let link = self.link(p.from, p.to);
        if cut || !link.flap_is_up(p.at) {
            link.counters.dropped_partition += 1;
            let len = p.bytes.len();
            self.trace(
                p.at,
                TraceKind::DroppedPartition,
                p.from,
                p.to,
                p.seq,
                len,
                None,
            );
            return None;
        }
        Some(p)
    }

    /// Puts a frame in its receiver's inbox (at its delivery time), counting and tracing it.
    fn hand_over(&mut self, p: Pending) {
        let len = p.bytes.len();
        let content = *blake3::hash(&p.bytes).as_bytes();
        let (at, from, to, seq, corrupted) = (p.at, p.from, p.to, p.seq, p.corrupted);
        let delivered = match self.inboxes.get(&to) {
            Some(tx) => tx.try_send((from, p.bytes)).is_ok(),
            None => false,
        };
        let c = &mut self.link(from, to).counters;
        let kind = if delivered {
            c.delivered += 1;
            c.bytes_delivered += len as u64;
            if corrupted {
                c.corrupted += 1;
            }
            TraceKind::Delivered
        } else {
            c.dropped_inbox += 1;
            TraceKind::DroppedInbox
        };
        self.trace(at, kind, from, to, seq, len, Some(content));
    }
}

#[derive(Debug)]
struct Shared {
    state: Mutex<NetState>,
    wake: Notify,
}

/// The simulated network. Cheap to clone (a handle to shared state).
#[derive(Clone, Debug)]
pub struct SimNet {
    shared: Arc<Shared>,
}

impl SimNet {
    /// A network whose every link starts as `default`, with all randomness
    /// derived from `seed`.
    ///
    /// # Panics
    /// Outside a tokio runtime: the scheduler task is spawned here. Build the
    /// world inside [`crate::time::runtime`].
    pub fn new(seed: u64, default: LinkModel) -> Self {
        let net = Self::with_state(seed, default, None);
        let weak = Arc::downgrade(&net.shared);
        tokio::spawn(async move {
            loop {
                let Some(shared) = weak.upgrade() else {
                    return;
                };
                let next = lock(&shared.state).deliver_due(Instant::now());
                match next {
                    Some(at) => {
                        tokio::select! {
                            biased;
                            _ = shared.wake.notified() => {}
                            _ = tokio::time::sleep_until(at) => {}
                        }
                    }
                    None => shared.wake.notified().await,
                }
            }
        });
        net
    }

    /// A network for lockstep runs: node `n` runs on its own runtime whose simulated time
    /// zero is `epochs[n]` on that runtime's clock; the caller's runtime (the world's) has
    /// its time zero now. No scheduler task: the world calls [`SimNet::deliver_window`] at
    /// every barrier and spawns each node's [`SimNet::delivery_task`] on its runtime.
    ///
    /// The world must keep its windows no longer than the shortest one-way latency of any
    /// link ([`SimNet::deliver_window`] refuses a frame due inside a window already run).
    pub fn new_lockstep(seed: u64, default: LinkModel, epochs: BTreeMap<NodeId, Epoch>) -> Self {
        let due = epochs.keys().map(|&n| (n, Arc::default())).collect();
        Self::with_state(seed, default, Some(Lockstep { epochs, due }))
    }

    fn with_state(seed: u64, default: LinkModel, lockstep: Option<Lockstep>) -> Self {
        let shared = Arc::new(Shared {
            state: Mutex::new(NetState {
                seed,
                epoch: Instant::now(),
                default,
                links: BTreeMap::new(),
                cut: BTreeSet::new(),
                down: BTreeSet::new(),
                nodes: BTreeSet::new(),
                inboxes: BTreeMap::new(),
                heap: BinaryHeap::new(),
                trace: blake3::Hasher::new(),
                trace_events: 0,
                pending_events: Vec::new(),
                lockstep,
            }),
            wake: Notify::new(),
        });
        Self { shared }
    }

    /// Lockstep barrier: the world's clock is at `now_ms` and every node's is too. Moves
    /// every frame due before `until_ms` (the end of the next window) to its receiver's
    /// delivery task, after the checks a frame meets at its delivery time (the partitions
    /// and down nodes the world set at this barrier hold for the whole window; flapping is
    /// a function of time). Then folds the trace events of the window just run.
    ///
    /// # Panics
    /// On a network not made with [`SimNet::new_lockstep`], or when a frame is due before
    /// `now_ms`: a link shorter than the window broke lockstep's premise and the run
    /// cannot be trusted.
    pub fn deliver_window(&self, now_ms: u64, until_ms: u64) {
        let mut s = self.state();
        let (now, until) = (
            s.epoch + Duration::from_millis(now_ms),
            s.epoch + Duration::from_millis(until_ms),
        );
        let mut handed: Vec<Pending> = Vec::new();
        while let Some(Reverse(top)) = s.heap.peek() {
            if top.at >= until {
                break;
            }
            let Some(Reverse(p)) = s.heap.pop() else {
                break;
            };
            assert!(
                p.at >= now,
                "a frame from node {} to node {} was due {:?} before the lockstep barrier: a \
                 link is faster than the window; run this scenario on one runtime",
                p.from,
                p.to,
                now - p.at
            );
            if let Some(p) = s.pass_delivery_checks(p) {
                handed.push(p);
            }
        }
        s.fold_trace();
        let Some(l) = s.lockstep.as_ref() else {
            panic!("deliver_window on a network that is not in lockstep mode");
        };
        let mut woken = BTreeSet::new();
        for p in handed {
            if let Some(d) = l.due.get(&p.to) {
                woken.insert(p.to);
                lock(&d.frames).push_back(p);
            }
        }
        for n in woken {
            if let Some(d) = l.due.get(&n) {
                d.wake.notify_one();
            }
        }
    }

    /// Node `node`'s delivery task (lockstep): puts each frame the world handed it in its
    /// inbox at the frame's time on the node's clock. Spawn it once on the node's runtime;
    /// it outlives the node's incarnations (an inbox replaced at a restart is the one used).
    pub fn delivery_task(
        &self,
        node: NodeId,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        let weak = Arc::downgrade(&self.shared);
        async move {
            let (due, epoch, world_epoch) = {
                let Some(shared) = weak.upgrade() else {
                    return;
                };
                let s = lock(&shared.state);
                let Some(l) = s.lockstep.as_ref() else {
                    return;
                };
                let (Some(due), Some(&epoch)) = (l.due.get(&node), l.epochs.get(&node)) else {
                    return;
                };
                (due.clone(), epoch, s.epoch)
            };
            loop {
                let next = lock(&due.frames).front().map(|p| p.at);
                let Some(at) = next else {
                    due.wake.notified().await;
                    continue;
                };
                tokio::time::sleep_until(epoch.start() + at.duration_since(world_epoch)).await;
                let Some(p) = lock(&due.frames).pop_front() else {
                    continue;
                };
                let Some(shared) = weak.upgrade() else {
                    return;
                };
                lock(&shared.state).hand_over(p);
            }
        }
    }

    fn state(&self) -> MutexGuard<'_, NetState> {
        lock(&self.shared.state)
    }

    /// Sends a frame from `from` to `to`. Never blocks; the frame's fate is
    /// decided now and its delivery scheduled on the simulated clock.
    pub fn send(&self, from: NodeId, to: NodeId, bytes: Vec<u8>) {
        self.state().send(from, to, bytes);
        self.shared.wake.notify_one();
    }

    /// A fresh receiving endpoint for `node`, replacing any earlier one (whose
    /// `recv` then returns `None`). Also registers the node for `isolate`.
    pub fn endpoint(&self, node: NodeId) -> Endpoint {
        let (tx, rx) = mpsc::channel(INBOX_FRAMES);
        let mut s = self.state();
        s.nodes.insert(node);
        s.inboxes.insert(node, tx);
        Endpoint { node, rx }
    }

    /// Registers a node without an endpoint (so `isolate` knows about it).
    pub fn add_node(&self, node: NodeId) {
        self.state().nodes.insert(node);
    }

    /// Sets the model of the directed link `a -> b`.
    pub fn set_link(&self, a: NodeId, b: NodeId, model: LinkModel) {
        let mut s = self.state();
        let link = s.link(a, b);
        link.model = model;
        link.overridden = true;
        link.flap.reset();
        link.burst_bad = false;
    }

    /// Sets the model of both directions between `a` and `b`.
    pub fn set_link_both(&self, a: NodeId, b: NodeId, model: LinkModel) {
        self.set_link(a, b, model);
        self.set_link(b, a, model);
    }

    /// The model currently used for `a -> b`.
    pub fn link_model(&self, a: NodeId, b: NodeId) -> LinkModel {
        self.state().link(a, b).model
    }

    /// Changes the default model, for every link not set with `set_link`.
    pub fn set_default(&self, model: LinkModel) {
        let mut s = self.state();
        s.default = model;
        for link in s.links.values_mut().filter(|l| !l.overridden) {
            link.model = model;
            link.flap.reset();
            link.burst_bad = false;
        }
    }

    /// Cuts the pair in the given direction(s). Frames already in flight on a
    /// cut direction are lost too.
    pub fn partition(&self, a: NodeId, b: NodeId, direction: Direction) {
        let mut s = self.state();
        if matches!(direction, Direction::Both | Direction::AToB) {
            s.cut.insert((a, b));
        }
        if matches!(direction, Direction::Both | Direction::BToA) {
            s.cut.insert((b, a));
        }
    }

    /// Cuts every pair between the two groups, both ways.
    pub fn partition_groups(&self, left: &[NodeId], right: &[NodeId]) {
        for &a in left {
            for &b in right {
                self.partition(a, b, Direction::Both);
            }
        }
    }

    /// Cuts `node` from every other known node, both ways.
    pub fn isolate(&self, node: NodeId) {
        let mut s = self.state();
        let others: Vec<NodeId> = s.nodes.iter().copied().filter(|&n| n != node).collect();
        for other in others {
            s.cut.insert((node, other));
            s.cut.insert((other, node));
        }
    }

    /// Restores both directions between `a` and `b`.
    pub fn heal(&self, a: NodeId, b: NodeId) {
        let mut s = self.state();
        s.cut.remove(&(a, b));
        s.cut.remove(&(b, a));
    }

    /// Restores every link `node` has.
    pub fn heal_node(&self, node: NodeId) {
        self.state().cut.retain(|&(a, b)| a != node && b != node);
    }

    /// Removes every partition (flapping links keep flapping; down nodes stay down).
    pub fn heal_all(&self) {
        self.state().cut.clear();
    }

    /// Whether `a -> b` is currently cut by a partition.
    pub fn is_cut(&self, a: NodeId, b: NodeId) -> bool {
        self.state().cut.contains(&(a, b))
    }

    /// Whether a node is marked down (see [`SimNet::set_node_down`]).
    pub fn is_node_down(&self, node: NodeId) -> bool {
        self.state().down.contains(&node)
    }

    /// Marks a node crashed (`true`) or running. A down node's traffic is
    /// dropped both ways, including frames in flight to it.
    pub fn set_node_down(&self, node: NodeId, down: bool) {
        let mut s = self.state();
        if down {
            s.down.insert(node);
        } else {
            s.down.remove(&node);
        }
    }

    /// Counters of the directed link `a -> b`.
    pub fn counters(&self, a: NodeId, b: NodeId) -> LinkCounters {
        self.state()
            .links
            .get(&(a, b))
            .map(|l| l.counters)
            .unwrap_or_default()
    }

    /// Counters summed over every link.
    pub fn total_counters(&self) -> LinkCounters {
        let s = self.state();
        let mut total = LinkCounters::default();
        for l in s.links.values() {
            total.add(&l.counters);
        }
        total
    }

    /// Frames scheduled but not yet delivered.
    pub fn in_flight(&self) -> usize {
        self.state().heap.len()
    }

    /// Folds the trace events recorded so far into the hash. Call it when no earlier event
    /// can come any more (the world does at every step), so the buffer stays small.
    pub fn fold_trace(&self) {
        self.state().fold_trace();
    }

    /// The running hash over every delivery and drop so far.
    pub fn trace_digest(&self) -> [u8; 32] {
        let mut s = self.state();
        s.fold_trace();
        *s.trace.clone().finalize().as_bytes()
    }

    /// Number of events folded into the trace hash.
    pub fn trace_events(&self) -> u64 {
        self.state().trace_events
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock already failed the run; keep going to report it.
    m.lock().unwrap_or_else(|e| e.into_inner())
}
