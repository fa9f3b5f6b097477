//! `SimNet`: the simulated network between nodes, on tokio's paused clock.
//!
//! `send` never blocks: it decides the frame's fate (partition, MTU, queue,
//! loss, duplication, corruption, latency) with the link's own seeded RNG and
//! pushes it onto one heap keyed by `(deliver_at, sequence)`. A single
//! scheduler task pops due frames in that order and puts them in the
//! receiver's inbox, so the delivery order is a function of the seed and the
//! order of `send` calls, never of task scheduling. Every delivery and every
//! drop is folded into a running trace hash.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::{Notify, mpsc};
use tokio::time::{Duration, Instant};

use crate::link::{Direction, LinkCounters, LinkModel};
use crate::rng::SimRng;

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

impl PartialEq for Pending {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.seq) == (o.at, o.seq)
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
        (self.at, self.seq).cmp(&(o.at, o.seq))
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
    flap_up: bool,
    flap_next: Option<Instant>,
    counters: LinkCounters,
}

impl LinkState {
    fn new(model: LinkModel, rng: SimRng, now: Instant) -> Self {
        Self {
            model,
            overridden: false,
            rng,
            tx_ends: VecDeque::new(),
            busy_until: now,
            flap_up: true,
            flap_next: None,
            counters: LinkCounters::default(),
        }
    }

    /// Whether the flap cycle has the link up at `now` (advancing it lazily).
    fn flap_is_up(&mut self, now: Instant) -> bool {
        let Some(flap) = self.model.flap else {
            return true;
        };
        let next = match self.flap_next {
            Some(n) => n,
            None => {
                self.flap_up = true;
                let first = now + period(&mut self.rng, flap.up_ms);
                self.flap_next = Some(first);
                first
            }
        };
        let mut next = next;
        while next <= now {
            self.flap_up = !self.flap_up;
            let mean = if self.flap_up {
                flap.up_ms
            } else {
                flap.down_ms
            };
            next += period(&mut self.rng, mean);
        }
        self.flap_next = Some(next);
        self.flap_up
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
#[derive(Clone, Copy)]
#[repr(u8)]
enum TraceKind {
    Delivered = 1,
    DroppedPartition = 2,
    DroppedMtu = 3,
    DroppedQueue = 4,
    DroppedLoss = 5,
    DroppedInbox = 6,
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
    next_seq: u64,
    trace: blake3::Hasher,
    trace_events: u64,
}

impl NetState {
    fn link(&mut self, from: NodeId, to: NodeId) -> &mut LinkState {
        let (seed, default, now) = (self.seed, self.default, Instant::now());
        self.links.entry((from, to)).or_insert_with(|| {
            LinkState::new(
                default,
                SimRng::derive(seed, "link", (from << 32) ^ to),
                now,
            )
        })
    }

    fn trace(&mut self, kind: TraceKind, from: NodeId, to: NodeId, bytes: &[u8]) {
        let t_us = Instant::now().duration_since(self.epoch).as_micros() as u64;
        self.trace.update(&[kind as u8]);
        self.trace.update(&t_us.to_le_bytes());
        self.trace.update(&from.to_le_bytes());
        self.trace.update(&to.to_le_bytes());
        self.trace.update(&(bytes.len() as u64).to_le_bytes());
        if matches!(kind, TraceKind::Delivered) {
            self.trace.update(bytes);
        }
        self.trace_events += 1;
    }

    fn send(&mut self, from: NodeId, to: NodeId, bytes: Vec<u8>) {
        let now = Instant::now();
        let blocked =
            self.down.contains(&from) || self.down.contains(&to) || self.cut.contains(&(from, to));
        let link = self.link(from, to);
        link.counters.sent += 1;
        link.counters.bytes_sent += bytes.len() as u64;
        if blocked || !link.flap_is_up(now) {
            link.counters.dropped_partition += 1;
            self.trace(TraceKind::DroppedPartition, from, to, &bytes);
            return;
        }
        let m = link.model;
        if m.mtu_bytes > 0 && bytes.len() > m.mtu_bytes as usize {
            link.counters.dropped_mtu += 1;
            self.trace(TraceKind::DroppedMtu, from, to, &bytes);
            return;
        }
        let mut base = now;
        if m.bandwidth_bps > 0 {
            while link.tx_ends.front().is_some_and(|&end| end <= now) {
                link.tx_ends.pop_front();
            }
            if link.tx_ends.len() >= m.queue_frames.max(1) as usize {
                link.counters.dropped_queue += 1;
                self.trace(TraceKind::DroppedQueue, from, to, &bytes);
                return;
            }
            let start = link.busy_until.max(now);
            let tx_nanos = (bytes.len() as u128 * 8 * 1_000_000_000) / u128::from(m.bandwidth_bps);
            let end = start + Duration::from_nanos(u64::try_from(tx_nanos).unwrap_or(u64::MAX));
            link.busy_until = end;
            link.tx_ends.push_back(end);
            base = end;
        }
        // Lost in the air: it still occupied the link.
        if link.rng.chance(m.loss) {
            link.counters.dropped_loss += 1;
            self.trace(TraceKind::DroppedLoss, from, to, &bytes);
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
            scheduled.push((at, corrupted, payload));
        }
        for (at, corrupted, payload) in scheduled {
            assert!(
                self.heap.len() < IN_FLIGHT_FRAMES_MAX,
                "more than {IN_FLIGHT_FRAMES_MAX} frames in flight: a sender is running away"
            );
            let seq = self.next_seq;
            self.next_seq += 1;
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
            let cut = self.down.contains(&p.to) || self.cut.contains(&(p.from, p.to));
            let link = self.link(p.from, p.to);
            if cut || !link.flap_is_up(now) {
                link.counters.dropped_partition += 1;
                self.trace(TraceKind::DroppedPartition, p.from, p.to, &p.bytes);
                continue;
            }
            let len = p.bytes.len() as u64;
            let content = blake3::hash(&p.bytes);
            let (from, to, corrupted) = (p.from, p.to, p.corrupted);
            let delivered = match self.inboxes.get(&to) {
                Some(tx) => tx.try_send((from, p.bytes)).is_ok(),
                None => false,
            };
            if delivered {
                let c = &mut self.link(from, to).counters;
                c.delivered += 1;
                c.bytes_delivered += len;
                if corrupted {
                    c.corrupted += 1;
                }
                self.trace(TraceKind::Delivered, from, to, content.as_bytes());
            } else {
                self.link(from, to).counters.dropped_inbox += 1;
                self.trace(TraceKind::DroppedInbox, from, to, content.as_bytes());
            }
        }
        None
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
        let now = Instant::now();
        let shared = Arc::new(Shared {
            state: Mutex::new(NetState {
                seed,
                epoch: now,
                default,
                links: BTreeMap::new(),
                cut: BTreeSet::new(),
                down: BTreeSet::new(),
                nodes: BTreeSet::new(),
                inboxes: BTreeMap::new(),
                heap: BinaryHeap::new(),
                next_seq: 0,
                trace: blake3::Hasher::new(),
                trace_events: 0,
            }),
            wake: Notify::new(),
        });
        let weak = Arc::downgrade(&shared);
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
        Self { shared }
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
        link.flap_next = None;
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
            link.flap_next = None;
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

    /// The running hash over every delivery and drop so far.
    pub fn trace_digest(&self) -> [u8; 32] {
        *self.state().trace.clone().finalize().as_bytes()
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
