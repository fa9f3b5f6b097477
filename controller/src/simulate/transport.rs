//! `SimTransport`: the node's [`Transport`] over the simulator's `SimNet`, with the duties a
//! link driver has on a slow radio (fragmenting frames to the link's MTU, pacing fragments
//! at the link's air rate, repeating lost fragments) and the slow-disk stand-in (holding back
//! a node's outgoing frames).
//!
//! One transport per node *incarnation*: when the world crashes a node it clears the
//! incarnation's `alive` flag, so tasks the dead process left behind (a proposal retry loop,
//! say) can no longer put anything on the air.
//!
//! The link driver lives here because the node's frame layer does not fragment yet (the
//! radio transport of issue 5 will, with its own retransmission policy); it is a stand-in
//! with a stated policy, so the radio scenarios test Raft over a usable link rather than
//! over a link that silently drops every frame above 100 bytes:
//!
//! - a frame that fits the MTU goes on the air at once (heartbeats, votes, small answers:
//!   they never wait behind bulk data);
//! - a larger frame is cut into fragments, queued per peer and released one at a time as the
//!   modem finishes the previous one (never overflowing the modem's small queue);
//! - the receiver answers the last fragment of each round with a bitmap of what it holds;
//!   the sender repeats what is missing, for at most [`ARQ_ROUNDS_MAX`] rounds, then gives
//!   the frame up (Raft's own retries take over). Selective repeat costs one bitmap per
//!   round instead of one acknowledgement per fragment, which matters at 64 kbit/s.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};

use ghatta_sim::net::{Endpoint, NodeId, SimNet};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::{Duration, Instant};

use crate::net::transport::{InboundTx, Transport};

/// First byte of a fragment. Differs from the frame magic (`net::frame::FRAME_MAGIC`, 0x67),
/// so whole frames and fragments share the link; a corrupted first byte only sends a frame
/// down the wrong path, where the frame CRC rejects it anyway.
pub const FRAGMENT_MAGIC: u8 = 0xF7;
/// First byte of a fragment bitmap (the receiver's answer to a round).
pub const BITMAP_MAGIC: u8 = 0xF8;
/// Fragment header: magic, message id (u32 LE), index (u16 LE), count (u16 LE), flags.
pub const FRAGMENT_HEADER_BYTES: usize = 1 + 4 + 2 + 2 + 1;
/// Flag: the last fragment of a round; the receiver answers it with a bitmap.
const FLAG_LAST_IN_ROUND: u8 = 1;
/// Bitmap header: magic, message id (u32 LE), fragment count (u16 LE).
const BITMAP_HEADER_BYTES: usize = 1 + 4 + 2;
/// Most fragments one frame may be cut into. At a 100-byte MTU that is ~90 KiB, more than
/// any Raft message a radio link can carry in a useful time; a larger frame is dropped and
/// counted rather than flooding the link.
pub const FRAGMENTS_PER_FRAME_MAX: usize = 1_024;
/// Rounds of selective repeat per frame. At 20 % loss a fragment is still missing after six
/// sends with probability 0.2^6 = 6e-5, so a 100-fragment frame arrives 99.4 % of the time;
/// more rounds would keep repeating frames Raft has long given up on.
pub const ARQ_ROUNDS_MAX: u32 = 6;
/// Frames being sent in fragments at once per peer; older ones are abandoned when more come
/// (Raft has retried them by then), which bounds the driver's memory.
pub const OUTGOING_FRAMES_PER_PEER_MAX: usize = 16;
/// Frames being reassembled at once per receiving node. Raft keeps one or two messages in
/// flight per peer; 64 leaves room for retries and duplicates, and bounds memory against a
/// peer whose fragments mostly get lost.
pub const PARTIAL_FRAMES_MAX: usize = 64;
/// A frame whose fragments have not all arrived after this long is abandoned: every RPC
/// deadline is shorter, so nobody is waiting for it any more.
pub const PARTIAL_FRAME_TTL: Duration = Duration::from_secs(60);
/// Completed frames remembered per receiving node, so a round repeated because its bitmap
/// was lost is answered again without delivering the frame twice.
const COMPLETED_REMEMBERED: usize = 256;
/// Frames a slow node may hold back at once (a disk queue); more are dropped, as a full
/// socket buffer would drop them.
pub const DELAYED_FRAMES_MAX: usize = 4_096;

/// Counters of the link-driver layer.
#[derive(Debug, Default)]
pub struct TransportStats {
    /// Frames handed to the network whole.
    pub frames_whole: AtomicU64,
    /// Frames cut into fragments.
    pub frames_fragmented: AtomicU64,
    /// Fragments sent again after a bitmap or a timeout.
    pub fragments_repeated: AtomicU64,
    /// Frames reassembled from fragments.
    pub frames_reassembled: AtomicU64,
    /// Frames given up: too large, out of rounds, displaced, queue full, or sent by a dead
    /// incarnation.
    pub frames_dropped: AtomicU64,
    /// Fragments dropped on receive (malformed, inconsistent, or their frame abandoned).
    pub fragments_dropped: AtomicU64,
    /// Received frames the node's inbound queue had no room for.
    pub inbound_full: AtomicU64,
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// Extra time, per node, before its outgoing frames leave (the slow-disk model; see the
/// `simulate` module docs). Kept per node, not per incarnation: a slow SD card stays slow
/// across a restart.
#[derive(Debug, Default)]
pub struct SendDelay {
    delay_us: AtomicU64,
}

impl SendDelay {
    /// Sets the delay.
    pub fn set(&self, d: Duration) {
        self.delay_us.store(
            u64::try_from(d.as_micros()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    fn get(&self) -> Duration {
        Duration::from_micros(self.delay_us.load(Ordering::Relaxed))
    }
}

/// Work for the link driver task.
enum DriverCmd {
    /// A frame larger than the link's MTU, for `to`.
    Send { to: NodeId, frame: Vec<u8> },
    /// `from` holds these fragments of our message `id`.
    Bitmap {
        from: NodeId,
        id: u32,
        count: usize,
        bits: Vec<u8>,
    },
}

/// One incarnation's transport.
#[derive(Debug)]
pub struct SimTransport {
    me: NodeId,
    net: SimNet,
    alive: Arc<AtomicBool>,
    delay: Arc<SendDelay>,
    delayed_tx: mpsc::UnboundedSender<(Instant, NodeId, Vec<u8>)>,
    delayed: AtomicUsize,
    driver_tx: mpsc::UnboundedSender<DriverCmd>,
    next_message: AtomicU32,
    stats: Arc<TransportStats>,
}

impl std::fmt::Debug for DriverCmd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DriverCmd::Send { to, frame } => write!(f, "Send({to}, {} bytes)", frame.len()),
            DriverCmd::Bitmap { from, id, .. } => write!(f, "Bitmap({from}, {id})"),
        }
    }
}

impl SimTransport {
    /// Starts a transport for node `me`: frames received on `endpoint` go (reassembled) into
    /// `inbound`. Returns the transport and its tasks (receive pump, delay line, link
    /// driver), which the world aborts when the incarnation dies.
    pub fn start(
        me: NodeId,
        net: SimNet,
        endpoint: Endpoint,
        inbound: InboundTx,
        alive: Arc<AtomicBool>,
        delay: Arc<SendDelay>,
        stats: Arc<TransportStats>,
    ) -> (Arc<SimTransport>, Vec<JoinHandle<()>>) {
        let (delayed_tx, delayed_rx) = mpsc::unbounded_channel();
        let (driver_tx, driver_rx) = mpsc::unbounded_channel();
        let t = Arc::new(SimTransport {
            me,
            net,
            alive,
            delay,
            delayed_tx,
            delayed: AtomicUsize::new(0),
            driver_tx,
            next_message: AtomicU32::new(0),
            stats,
        });
        let pump = tokio::spawn(pump(t.clone(), endpoint, inbound));
        let line = tokio::spawn(delay_line(t.clone(), delayed_rx));
        let driver = tokio::spawn(Driver::new(t.clone()).run(driver_rx));
        (t, vec![pump, line, driver])
    }

    fn alive(&self) -> bool {
        self.alive.load(Ordering::Relaxed)
    }

    /// Puts one frame (whole, a fragment or a bitmap) on the air.
    fn air(&self, to: NodeId, frame: Vec<u8>) {
        if self.alive() {
            self.net.send(self.me, to, frame);
        }
    }

    /// Sends a frame now: whole if it fits the link's MTU, else through the link driver.
    fn dispatch(&self, to: NodeId, frame: Vec<u8>) {
        if !self.alive() {
            bump(&self.stats.frames_dropped);
            return;
        }
        let mtu = self.net.link_model(self.me, to).mtu_bytes as usize;
        if mtu == 0 || frame.len() <= mtu || mtu <= FRAGMENT_HEADER_BYTES {
            bump(&self.stats.frames_whole);
            self.air(to, frame);
            return;
        }
        if self.driver_tx.send(DriverCmd::Send { to, frame }).is_err() {
            bump(&self.stats.frames_dropped);
        }
    }
}

impl Transport for SimTransport {
    fn send(&self, to: u64, frame: Vec<u8>) {
        let delay = self.delay.get();
        let queued = self.delayed.load(Ordering::Relaxed);
        if delay.is_zero() && queued == 0 {
            self.dispatch(to, frame);
            return;
        }
        // Behind a slow disk, or behind frames that are: keep the order.
        if queued >= DELAYED_FRAMES_MAX {
            bump(&self.stats.frames_dropped);
            return;
        }
        self.delayed.fetch_add(1, Ordering::Relaxed);
        if self
            .delayed_tx
            .send((Instant::now() + delay, to, frame))
            .is_err()
        {
            self.delayed.fetch_sub(1, Ordering::Relaxed);
            bump(&self.stats.frames_dropped);
        }
    }
}

/// Releases held-back frames in order, each at its time.
async fn delay_line(
    t: Arc<SimTransport>,
    mut rx: mpsc::UnboundedReceiver<(Instant, NodeId, Vec<u8>)>,
) {
    while let Some((at, to, frame)) = rx.recv().await {
        tokio::time::sleep_until(at).await;
        t.delayed.fetch_sub(1, Ordering::Relaxed);
        t.dispatch(to, frame);
    }
}

/// A frame being sent in fragments.
struct Outgoing {
    /// Payload of each fragment (without header).
    parts: Vec<Vec<u8>>,
    held: Vec<bool>,
    rounds: u32,
    /// When to repeat the round if no bitmap comes (set once its last fragment is on the air).
    retry_at: Option<Instant>,
    /// Fragments of this frame still in the peer's queue.
    queued: usize,
}

/// The sending half of the link driver: per-peer fragment queues paced at the air rate, and
/// selective repeat.
struct Driver {
    t: Arc<SimTransport>,
    /// Fragments waiting for air time, per peer: (message id, index, last in round).
    queues: BTreeMap<NodeId, VecDeque<(u32, usize, bool)>>,
    /// When each peer's modem finishes what it was given.
    busy_until: BTreeMap<NodeId, Instant>,
    out: BTreeMap<(NodeId, u32), Outgoing>,
}

impl Driver {
    fn new(t: Arc<SimTransport>) -> Self {
        Driver {
            t,
            queues: BTreeMap::new(),
            busy_until: BTreeMap::new(),
            out: BTreeMap::new(),
        }
    }

    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<DriverCmd>) {
        loop {
            self.release(Instant::now());
            let wake = self.next_wake();
            tokio::select! {
                biased;
                cmd = rx.recv() => match cmd {
                    Some(c) => self.handle(c),
                    None => return,
                },
                _ = sleep_until_opt(wake) => self.expire(Instant::now()),
            }
        }
    }

    fn handle(&mut self, cmd: DriverCmd) {
        match cmd {
            DriverCmd::Send { to, frame } => self.send(to, frame),
            DriverCmd::Bitmap {
                from,
                id,
                count,
                bits,
            } => self.bitmap(from, id, count, &bits),
        }
    }

    fn send(&mut self, to: NodeId, frame: Vec<u8>) {
        let stats = &self.t.stats;
        let mtu = self.t.net.link_model(self.t.me, to).mtu_bytes as usize;
        let chunk = mtu.saturating_sub(FRAGMENT_HEADER_BYTES).max(1);
        let count = frame.len().div_ceil(chunk);
        if count > FRAGMENTS_PER_FRAME_MAX {
            bump(&stats.frames_dropped);
            return;
        }
        bump(&stats.frames_fragmented);
        // Too many frames in flight to this peer: give up the oldest.
        let mine: Vec<u32> = self
            .out
            .range((to, 0)..=(to, u32::MAX))
            .map(|(&(_, id), _)| id)
            .collect();
        if mine.len() >= OUTGOING_FRAMES_PER_PEER_MAX {
            let oldest = self.oldest(&mine);
            self.out.remove(&(to, oldest));
            bump(&stats.frames_dropped);
        }
        let id = self.t.next_message.fetch_add(1, Ordering::Relaxed);
        let parts: Vec<Vec<u8>> = frame.chunks(chunk).map(<[u8]>::to_vec).collect();
        let q = self.queues.entry(to).or_default();
        for i in 0..count {
            q.push_back((id, i, i + 1 == count));
        }
        self.out.insert(
            (to, id),
            Outgoing {
                parts,
                held: vec![false; count],
                rounds: 1,
                retry_at: None,
                queued: count,
            },
        );
    }

    /// The oldest of `ids` (message ids wrap, so "oldest" is the furthest behind the next id).
    fn oldest(&self, ids: &[u32]) -> u32 {
        let next = self.t.next_message.load(Ordering::Relaxed);
        ids.iter()
            .copied()
            .max_by_key(|&id| next.wrapping_sub(id))
            .unwrap_or(0)
    }

    fn bitmap(&mut self, from: NodeId, id: u32, count: usize, bits: &[u8]) {
        let Some(o) = self.out.get_mut(&(from, id)) else {
            return;
        };
        if count != o.parts.len() {
            return;
        }
        for (i, h) in o.held.iter_mut().enumerate() {
            if bits.get(i / 8).is_some_and(|b| b & (1 << (i % 8)) != 0) {
                *h = true;
            }
        }
        if o.held.iter().all(|&h| h) {
            self.out.remove(&(from, id));
            return;
        }
        // Repeat what is missing, unless the round is still going out.
        if o.queued == 0 {
            self.repeat(from, id);
        }
    }

    /// Queues the fragments of `(to, id)` the peer lacks, as a new round.
    fn repeat(&mut self, to: NodeId, id: u32) {
        let Some(o) = self.out.get_mut(&(to, id)) else {
            return;
        };
        if o.rounds >= ARQ_ROUNDS_MAX {
            self.out.remove(&(to, id));
            bump(&self.t.stats.frames_dropped);
            return;
        }
        o.rounds += 1;
        o.retry_at = None;
        let missing: Vec<usize> = (0..o.held.len()).filter(|&i| !o.held[i]).collect();
        o.queued = missing.len();
        let q = self.queues.entry(to).or_default();
        for (k, &i) in missing.iter().enumerate() {
            bump(&self.t.stats.fragments_repeated);
            q.push_back((id, i, k + 1 == missing.len()));
        }
    }

    /// Puts queued fragments on the air while each peer's modem is free.
    fn release(&mut self, now: Instant) {
        let peers: Vec<NodeId> = self.queues.keys().copied().collect();
        for to in peers {
            loop {
                let busy = self.busy_until.get(&to).copied().unwrap_or(now);
                if busy > now {
                    break;
                }
                let Some((id, i, last)) = self.queues.get_mut(&to).and_then(VecDeque::pop_front)
                else {
                    break;
                };
                let Some(o) = self.out.get_mut(&(to, id)) else {
                    continue;
                };
                o.queued = o.queued.saturating_sub(1);
                let count = o.parts.len();
                let mut f = Vec::with_capacity(FRAGMENT_HEADER_BYTES + o.parts[i].len());
                f.push(FRAGMENT_MAGIC);
                f.extend_from_slice(&id.to_le_bytes());
                f.extend_from_slice(&(i as u16).to_le_bytes());
                f.extend_from_slice(&(count as u16).to_le_bytes());
                f.push(if last { FLAG_LAST_IN_ROUND } else { 0 });
                f.extend_from_slice(&o.parts[i]);
                let model = self.t.net.link_model(self.t.me, to);
                let air = air_time(f.len(), model.bandwidth_bps);
                let done = busy.max(now) + air;
                self.busy_until.insert(to, done);
                if last {
                    o.retry_at = Some(done + round_trip(&model));
                }
                self.t.air(to, f);
            }
        }
        self.queues.retain(|_, q| !q.is_empty());
    }

    /// Rounds whose bitmap never came: repeat them (their last fragment or the bitmap was lost).
    fn expire(&mut self, now: Instant) {
        let due: Vec<(NodeId, u32)> = self
            .out
            .iter()
            .filter(|(_, o)| o.retry_at.is_some_and(|t| t <= now))
            .map(|(&k, _)| k)
            .collect();
        for (to, id) in due {
            self.repeat(to, id);
        }
    }

    fn next_wake(&self) -> Option<Instant> {
        let modem = self
            .queues
            .keys()
            .filter_map(|p| self.busy_until.get(p).copied());
        let retries = self.out.values().filter_map(|o| o.retry_at);
        modem.chain(retries).min()
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Time `bytes` take on a link of `bps` (zero for an unlimited link).
fn air_time(bytes: usize, bps: u64) -> Duration {
    if bps == 0 {
        return Duration::ZERO;
    }
    Duration::from_nanos((bytes as u64 * 8).saturating_mul(1_000_000_000) / bps)
}

/// How long to wait for a round's bitmap: a round trip at the link's latency plus three
/// mean jitters each way (the tail a bitmap may take), as a real driver is configured with.
fn round_trip(m: &ghatta_sim::link::LinkModel) -> Duration {
    let one_way = (m.latency_ms + 3 * m.jitter_ms).min(m.latency_cap_ms.max(m.latency_ms));
    Duration::from_millis(2 * u64::from(one_way)) + air_time(64, m.bandwidth_bps)
}

/// A frame whose fragments are arriving.
struct Partial {
    parts: Vec<Option<Vec<u8>>>,
    missing: usize,
    started: Instant,
}

/// What a fragment did to its frame.
#[derive(Debug, PartialEq, Eq)]
pub enum Reassembled {
    /// More fragments are needed.
    Pending,
    /// This was the last missing fragment: the whole frame.
    Complete(Vec<u8>),
    /// The frame was completed before (a repeated round): nothing to deliver.
    Again,
}

/// A parsed fragment header.
struct FragmentHeader {
    id: u32,
    index: usize,
    count: usize,
}

fn parse_fragment(frag: &[u8]) -> Option<FragmentHeader> {
    if frag.len() <= FRAGMENT_HEADER_BYTES || frag[0] != FRAGMENT_MAGIC {
        return None;
    }
    let h = FragmentHeader {
        id: u32::from_le_bytes([frag[1], frag[2], frag[3], frag[4]]),
        index: usize::from(u16::from_le_bytes([frag[5], frag[6]])),
        count: usize::from(u16::from_le_bytes([frag[7], frag[8]])),
    };
    (h.count >= 2 && h.count <= FRAGMENTS_PER_FRAME_MAX && h.index < h.count).then_some(h)
}

/// Reassembles fragments per sender; bounded by [`PARTIAL_FRAMES_MAX`] and [`PARTIAL_FRAME_TTL`].
#[derive(Default)]
pub struct Reassembly {
    partials: BTreeMap<(NodeId, u32), Partial>,
    completed: VecDeque<(NodeId, u32)>,
    completed_set: BTreeSet<(NodeId, u32)>,
}

impl Reassembly {
    /// Takes one fragment from `from`; `Err(())` when it is malformed or inconsistent.
    #[allow(clippy::result_unit_err)]
    pub fn push(&mut self, from: NodeId, frag: &[u8], now: Instant) -> Result<Reassembled, ()> {
        let h = parse_fragment(frag).ok_or(())?;
        let key = (from, h.id);
        if self.completed_set.contains(&key) {
            return Ok(Reassembled::Again);
        }
        self.partials
            .retain(|_, p| now.duration_since(p.started) < PARTIAL_FRAME_TTL);
        if !self.partials.contains_key(&key) {
            if self.partials.len() >= PARTIAL_FRAMES_MAX {
                // Abandon the oldest (ties broken by key, so the choice is deterministic).
                let oldest = self
                    .partials
                    .iter()
                    .min_by_key(|(k, p)| (p.started, **k))
                    .map(|(k, _)| *k);
                if let Some(k) = oldest {
                    self.partials.remove(&k);
                }
            }
            self.partials.insert(
                key,
                Partial {
                    parts: vec![None; h.count],
                    missing: h.count,
                    started: now,
                },
            );
        }
        let Some(p) = self.partials.get_mut(&key) else {
            return Err(());
        };
        if p.parts.len() != h.count {
            return Err(());
        }
        if p.parts[h.index].is_none() {
            p.parts[h.index] = Some(frag[FRAGMENT_HEADER_BYTES..].to_vec());
            p.missing -= 1;
        }
        if p.missing > 0 {
            return Ok(Reassembled::Pending);
        }
        let Some(p) = self.partials.remove(&key) else {
            return Err(());
        };
        self.completed.push_back(key);
        self.completed_set.insert(key);
        if self.completed.len() > COMPLETED_REMEMBERED
            && let Some(old) = self.completed.pop_front()
        {
            self.completed_set.remove(&old);
        }
        Ok(Reassembled::Complete(
            p.parts.into_iter().flatten().flatten().collect(),
        ))
    }

    /// The bitmap answering fragment `frag` of `from`'s frame: which fragments are held.
    fn bitmap(&self, from: NodeId, frag: &[u8]) -> Option<Vec<u8>> {
        let h = parse_fragment(frag)?;
        let key = (from, h.id);
        let mut bits = vec![0u8; h.count.div_ceil(8)];
        if self.completed_set.contains(&key) {
            for i in 0..h.count {
                bits[i / 8] |= 1 << (i % 8);
            }
        } else {
            let p = self.partials.get(&key)?;
            for (i, part) in p.parts.iter().enumerate() {
                if part.is_some() {
                    bits[i / 8] |= 1 << (i % 8);
                }
            }
        }
        let mut out = Vec::with_capacity(BITMAP_HEADER_BYTES + bits.len());
        out.push(BITMAP_MAGIC);
        out.extend_from_slice(&h.id.to_le_bytes());
        out.extend_from_slice(&(h.count as u16).to_le_bytes());
        out.extend_from_slice(&bits);
        Some(out)
    }
}

fn parse_bitmap(from: NodeId, b: &[u8]) -> Option<DriverCmd> {
    if b.len() <= BITMAP_HEADER_BYTES || b[0] != BITMAP_MAGIC {
        return None;
    }
    let count = usize::from(u16::from_le_bytes([b[5], b[6]]));
    let bits = b[BITMAP_HEADER_BYTES..].to_vec();
    (bits.len() == count.div_ceil(8)).then(|| DriverCmd::Bitmap {
        from,
        id: u32::from_le_bytes([b[1], b[2], b[3], b[4]]),
        count,
        bits,
    })
}

/// Moves frames from the network endpoint into the node's inbound queue, reassembling
/// fragments and answering rounds with bitmaps.
async fn pump(t: Arc<SimTransport>, mut endpoint: Endpoint, inbound: InboundTx) {
    let mut reassembly = Reassembly::default();
    while let Some((from, bytes)) = endpoint.recv().await {
        if !t.alive() {
            return;
        }
        let frame = match bytes.first() {
            Some(&FRAGMENT_MAGIC) => {
                let result = reassembly.push(from, &bytes, Instant::now());
                let last = bytes.get(9).is_some_and(|f| f & FLAG_LAST_IN_ROUND != 0);
                let done = matches!(
                    result,
                    Ok(Reassembled::Complete(_)) | Ok(Reassembled::Again)
                );
                if (last || done)
                    && let Some(b) = reassembly.bitmap(from, &bytes)
                {
                    t.air(from, b);
                }
                match result {
                    Ok(Reassembled::Complete(frame)) => {
                        bump(&t.stats.frames_reassembled);
                        frame
                    }
                    Ok(_) => continue,
                    Err(()) => {
                        bump(&t.stats.fragments_dropped);
                        continue;
                    }
                }
            }
            Some(&BITMAP_MAGIC) => {
                if let Some(cmd) = parse_bitmap(from, &bytes) {
                    let _ = t.driver_tx.send(cmd);
                } else {
                    bump(&t.stats.fragments_dropped);
                }
                continue;
            }
            _ => bytes,
        };
        // A full queue drops, as a kernel drops datagrams nobody reads.
        if inbound.try_send(frame).is_err() {
            bump(&t.stats.inbound_full);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fragments(frame: &[u8], mtu: usize) -> Vec<Vec<u8>> {
        let chunk = mtu - FRAGMENT_HEADER_BYTES;
        let count = frame.len().div_ceil(chunk);
        frame
            .chunks(chunk)
            .enumerate()
            .map(|(i, part)| {
                let mut f = vec![FRAGMENT_MAGIC];
                f.extend_from_slice(&7u32.to_le_bytes());
                f.extend_from_slice(&(i as u16).to_le_bytes());
                f.extend_from_slice(&(count as u16).to_le_bytes());
                f.push(u8::from(i + 1 == count));
                f.extend_from_slice(part);
                f
            })
            .collect()
    }

    #[test]
    fn fragments_reassemble_in_any_order_with_duplicates_and_once() {
        let frame: Vec<u8> = (0..1_000u32).map(|i| i as u8).collect();
        let mut frags = fragments(&frame, 100);
        frags.reverse();
        let dup = frags[3].clone();
        frags.insert(5, dup);
        let now = Instant::now();
        let mut r = Reassembly::default();
        let mut out = Vec::new();
        for f in &frags {
            if let Reassembled::Complete(done) = r.push(1, f, now).expect("well-formed") {
                out.push(done);
            }
        }
        assert_eq!(out, vec![frame]);
        assert!(r.partials.is_empty());
        // A repeated round after completion is answered, not delivered again.
        assert_eq!(r.push(1, &frags[0], now), Ok(Reassembled::Again));
        let b = r.bitmap(1, &frags[0]).expect("bitmap");
        assert!(b[BITMAP_HEADER_BYTES..].iter().take(1).all(|&x| x == 0xFF));
    }

    #[test]
    fn a_bitmap_names_exactly_the_fragments_held() {
        let frags = fragments(&[9u8; 500], 100);
        let now = Instant::now();
        let mut r = Reassembly::default();
        for i in [0, 2, 5] {
            assert_eq!(r.push(2, &frags[i], now), Ok(Reassembled::Pending));
        }
        let b = r.bitmap(2, &frags[5]).expect("bitmap");
        let Some(DriverCmd::Bitmap { count, bits, .. }) = parse_bitmap(2, &b) else {
            panic!("unparsable bitmap");
        };
        assert_eq!(count, frags.len());
        assert_eq!(bits, vec![0b0010_0101]);
    }

    #[test]
    fn malformed_fragments_are_refused_and_memory_is_bounded() {
        let now = Instant::now();
        let mut r = Reassembly::default();
        assert!(r.push(1, &[FRAGMENT_MAGIC, 0, 0], now).is_err());
        let mut bad = fragments(&[1u8; 300], 100)[0].clone();
        bad[7] = 0; // count 0
        bad[8] = 0;
        assert!(r.push(1, &bad, now).is_err());
        for id in 0..(PARTIAL_FRAMES_MAX as u32 * 2) {
            let mut f = fragments(&[2u8; 300], 100)[0].clone();
            f[1..5].copy_from_slice(&id.to_le_bytes());
            assert_eq!(r.push(1, &f, now), Ok(Reassembled::Pending));
        }
        assert_eq!(r.partials.len(), PARTIAL_FRAMES_MAX);
    }

    #[test]
    fn air_time_follows_the_bit_rate() {
        assert_eq!(air_time(100, 64_000), Duration::from_micros(12_500));
        assert_eq!(air_time(100, 0), Duration::ZERO);
    }
}
