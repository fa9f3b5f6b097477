//! `SimTransport`: the node's [`Transport`] over the simulator's `SimNet`, with the link-driver
//! duties a radio modem's driver would have (fragmenting frames to the link's MTU and
//! reassembling them) and the slow-disk stand-in (holding back a node's outgoing frames).
//!
//! One transport per node *incarnation*: when the world crashes a node it clears the
//! incarnation's `alive` flag, so tasks the dead process left behind (a proposal retry loop,
//! say) can no longer put anything on the air.
//!
//! Fragmentation lives here because the node's frame layer does not fragment yet (the radio
//! transport of issue 5 will); a frame that fits the link's MTU passes through untouched, so
//! once the node fragments for itself this layer does nothing. Fragments carry no
//! retransmission: losing one loses the frame, as on a radio without link-layer ARQ, and
//! the RPC layer and openraft retry.

use std::collections::BTreeMap;
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
/// Fragment header: magic, message id (u32 LE), fragment index (u16 LE), fragment count (u16 LE).
pub const FRAGMENT_HEADER_BYTES: usize = 1 + 4 + 2 + 2;
/// Most fragments one frame may be cut into. At a 100-byte MTU that is ~90 KiB, more than
/// any Raft message a radio link can carry in a useful time; a larger frame is dropped and
/// counted rather than flooding the link.
pub const FRAGMENTS_PER_FRAME_MAX: usize = 1_024;
/// Frames being reassembled at once per receiving node. Raft keeps one or two messages in
/// flight per peer; 64 leaves room for retries and duplicates, and bounds memory against a
/// peer whose fragments mostly get lost.
pub const PARTIAL_FRAMES_MAX: usize = 64;
/// A frame whose fragments have not all arrived after this long is abandoned: every RPC
/// deadline is shorter, so nobody is waiting for it any more.
pub const PARTIAL_FRAME_TTL: Duration = Duration::from_secs(60);
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
    /// Frames reassembled from fragments.
    pub frames_reassembled: AtomicU64,
    /// Frames dropped: too large to fragment, delay queue full, or sent by a dead incarnation.
    pub frames_dropped: AtomicU64,
    /// Fragments dropped on receive (malformed, inconsistent, or their frame abandoned).
    pub fragments_dropped: AtomicU64,
    /// Received frames the node's inbound queue had no room for.
    pub inbound_full: AtomicU64,
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// Extra time, per node, before its outgoing frames leave (the slow-disk model; see
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

/// One incarnation's transport.
#[derive(Debug)]
pub struct SimTransport {
    me: NodeId,
    net: SimNet,
    alive: Arc<AtomicBool>,
    delay: Arc<SendDelay>,
    delayed_tx: mpsc::UnboundedSender<(Instant, NodeId, Vec<u8>)>,
    delayed: Arc<AtomicUsize>,
    next_message: AtomicU32,
    stats: Arc<TransportStats>,
}

impl SimTransport {
    /// Starts a transport for node `me`: frames received on `endpoint` go (reassembled) into
    /// `inbound`. Returns the transport and its two tasks (the receive pump and the delay
    /// line), which the world aborts when the incarnation dies.
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
        let delayed = Arc::new(AtomicUsize::new(0));
        let t = Arc::new(SimTransport {
            me,
            net: net.clone(),
            alive: alive.clone(),
            delay,
            delayed_tx,
            delayed: delayed.clone(),
            next_message: AtomicU32::new(0),
            stats: stats.clone(),
        });
        let pump = tokio::spawn(pump(endpoint, inbound, alive, stats));
        let line = tokio::spawn(delay_line(t.clone(), delayed_rx));
        (t, vec![pump, line])
    }

    /// Puts one frame on the link to `to`, fragmented to the link's MTU if it must be.
    fn put_on_link(&self, to: NodeId, frame: Vec<u8>) {
        if !self.alive.load(Ordering::Relaxed) {
            bump(&self.stats.frames_dropped);
            return;
        }
        let mtu = self.net.link_model(self.me, to).mtu_bytes as usize;
        if mtu == 0 || frame.len() <= mtu || mtu <= FRAGMENT_HEADER_BYTES {
            bump(&self.stats.frames_whole);
            self.net.send(self.me, to, frame);
            return;
        }
        let chunk = mtu - FRAGMENT_HEADER_BYTES;
        let count = frame.len().div_ceil(chunk);
        if count > FRAGMENTS_PER_FRAME_MAX {
            bump(&self.stats.frames_dropped);
            return;
        }
        bump(&self.stats.frames_fragmented);
        let id = self.next_message.fetch_add(1, Ordering::Relaxed);
        for (i, part) in frame.chunks(chunk).enumerate() {
            let mut f = Vec::with_capacity(FRAGMENT_HEADER_BYTES + part.len());
            f.push(FRAGMENT_MAGIC);
            f.extend_from_slice(&id.to_le_bytes());
            f.extend_from_slice(&(i as u16).to_le_bytes());
            f.extend_from_slice(&(count as u16).to_le_bytes());
            f.extend_from_slice(part);
            self.net.send(self.me, to, f);
        }
    }
}

impl Transport for SimTransport {
    fn send(&self, to: u64, frame: Vec<u8>) {
        let delay = self.delay.get();
        let queued = self.delayed.load(Ordering::Relaxed);
        if delay.is_zero() && queued == 0 {
            self.put_on_link(to, frame);
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
        t.put_on_link(to, frame);
    }
}

/// A frame whose fragments are arriving.
struct Partial {
    parts: Vec<Option<Vec<u8>>>,
    missing: usize,
    started: Instant,
}

/// Reassembles fragments per sender; bounded by [`PARTIAL_FRAMES_MAX`] and [`PARTIAL_FRAME_TTL`].
#[derive(Default)]
pub struct Reassembly {
    partials: BTreeMap<(NodeId, u32), Partial>,
}

impl Reassembly {
    /// Takes one fragment from `from`; returns the whole frame when this was its last
    /// missing piece, `Err(())` when the fragment was malformed or inconsistent.
    #[allow(clippy::result_unit_err)]
    pub fn push(&mut self, from: NodeId, frag: &[u8], now: Instant) -> Result<Option<Vec<u8>>, ()> {
        if frag.len() <= FRAGMENT_HEADER_BYTES || frag[0] != FRAGMENT_MAGIC {
            return Err(());
        }
        let id = u32::from_le_bytes([frag[1], frag[2], frag[3], frag[4]]);
        let index = usize::from(u16::from_le_bytes([frag[5], frag[6]]));
        let count = usize::from(u16::from_le_bytes([frag[7], frag[8]]));
        if count < 2 || count > FRAGMENTS_PER_FRAME_MAX || index >= count {
            return Err(());
        }
        self.partials
            .retain(|_, p| now.duration_since(p.started) < PARTIAL_FRAME_TTL);
        let key = (from, id);
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
                    parts: vec![None; count],
                    missing: count,
                    started: now,
                },
            );
        }
        let Some(p) = self.partials.get_mut(&key) else {
            return Err(());
        };
        if p.parts.len() != count {
            return Err(());
        }
        if p.parts[index].is_none() {
            p.parts[index] = Some(frag[FRAGMENT_HEADER_BYTES..].to_vec());
            p.missing -= 1;
        }
        if p.missing > 0 {
            return Ok(None);
        }
        let Some(p) = self.partials.remove(&key) else {
            return Err(());
        };
        Ok(Some(p.parts.into_iter().flatten().flatten().collect()))
    }
}

/// Moves frames from the network endpoint into the node's inbound queue.
async fn pump(
    mut endpoint: Endpoint,
    inbound: InboundTx,
    alive: Arc<AtomicBool>,
    stats: Arc<TransportStats>,
) {
    let mut reassembly = Reassembly::default();
    while let Some((from, bytes)) = endpoint.recv().await {
        if !alive.load(Ordering::Relaxed) {
            return;
        }
        let frame = if bytes.first() == Some(&FRAGMENT_MAGIC) {
            match reassembly.push(from, &bytes, Instant::now()) {
                Ok(Some(frame)) => {
                    bump(&stats.frames_reassembled);
                    frame
                }
                Ok(None) => continue,
                Err(()) => {
                    bump(&stats.fragments_dropped);
                    continue;
                }
            }
        } else {
            bytes
        };
        // A full queue drops, as a kernel drops datagrams nobody reads.
        if inbound.try_send(frame).is_err() {
            bump(&stats.inbound_full);
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
                f.extend_from_slice(part);
                f
            })
            .collect()
    }

    #[test]
    fn fragments_reassemble_in_any_order_with_duplicates() {
        let frame: Vec<u8> = (0..1_000u32).map(|i| i as u8).collect();
        let mut frags = fragments(&frame, 100);
        frags.reverse();
        let dup = frags[3].clone();
        frags.insert(5, dup);
        let now = Instant::now();
        let mut r = Reassembly::default();
        let mut out = None;
        for f in &frags {
            if let Some(done) = r.push(1, f, now).expect("well-formed") {
                out = Some(done);
            }
        }
        assert_eq!(out.as_deref(), Some(frame.as_slice()));
        assert!(r.partials.is_empty());
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
            assert_eq!(r.push(1, &f, now), Ok(None));
        }
        assert_eq!(r.partials.len(), PARTIAL_FRAMES_MAX);
    }
}
