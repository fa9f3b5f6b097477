//! `LinkDriver`: the radio link layer as a state machine without IO (addressing, priority
//! queues, fragmentation, selective-repeat ARQ, pacing), driven by `SerialTransport` on a
//! board and by `SimTransport` in the simulator, so both run exactly this code.
//!
//! The caller feeds it frames to send ([`LinkDriver::send`]) and packets received
//! ([`LinkDriver::receive`]), takes packets to put on the air while
//! [`LinkDriver::poll_transmit`] yields them, and sleeps until [`LinkDriver::next_wake`].
//! Time is always passed in, so tests run it on tokio's paused clock.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};
use tokio::time::{Duration, Instant};

use super::cobs;
use super::pacing::{TokenBucket, air_time};
use super::packet::{
    self, BITMAP_HEADER_BYTES, BROADCAST, Body, CRC_BYTES, FLAG_LAST_IN_ROUND,
    FRAGMENT_HEADER_BYTES, FRAGMENTS_PER_FRAME_MAX, Packet, PacketError,
};
use super::reassembly::{Reassembled, Reassembly};
use ghatta_proto::frame::MAX_FRAME_BYTES;

/// Rounds of selective repeat per fragmented frame. At 20 % loss a fragment is still missing
/// after six sends with probability 0.2^6 = 6e-5, so a 100-fragment frame arrives 99.4 % of
/// the time; more rounds would keep repeating frames Raft has long given up on.
pub const ARQ_ROUNDS_MAX: u32 = 6;
/// Fragmented frames in flight per peer; the oldest is abandoned when more come (Raft has
/// retried it by then). 16 appends of 512 bytes is 7 s of a 9,600 bit/s channel.
pub const OUTGOING_FRAMES_PER_PEER_MAX: usize = 16;
/// Whole frames and bitmaps waiting for air time per peer. 32 heartbeats, votes and answers
/// is seconds of a slow channel; more means the channel is saturated, and new small frames
/// are dropped (and counted) rather than queued behind stale ones.
pub const URGENT_PACKETS_PER_PEER_MAX: usize = 32;
/// Burst the pacer allows back to back: two full packets, so a bitmap or a heartbeat can
/// follow a fragment without waiting, while the modem's buffer (SiK: a few hundred bytes)
/// never fills faster than the air drains it.
pub const BURST_PACKETS: usize = 2;
/// Smallest MTU the driver accepts: the largest headers (two 10-byte node ids, a fragment
/// header, the CRC) plus at least 16 data bytes, so every frame can be fragmented.
pub const MTU_BYTES_MIN: usize = packet::ADDRESS_BYTES_MAX + FRAGMENT_HEADER_BYTES + CRC_BYTES + 16;

/// How one peer is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkParams {
    /// Largest packet (before COBS), bytes.
    pub mtu_bytes: usize,
    /// Air rate the pacer holds to (0: unlimited), bit/s.
    pub bitrate_bps: u64,
    /// How long to wait for a round's bitmap after its last fragment left: the round trip
    /// plus the air time of the answer.
    pub round_timeout: Duration,
}

/// The driver's settings.
#[derive(Debug, Clone, Copy)]
pub struct DriverConfig {
    /// This node.
    pub me: u64,
    /// Parameters for peers without their own.
    pub defaults: LinkParams,
    /// One transmitter for all peers (a radio channel: one pacer), or one per peer (the
    /// simulator's point-to-point links: one pacer each).
    pub shared_medium: bool,
    /// Frame packets with COBS and delimiters (a byte stream) or not (datagrams).
    pub cobs: bool,
    /// First message id. A restarted node must not reuse the ids its peers remember as
    /// completed, so boards start from a random id and the simulator from its incarnation.
    pub first_message_id: u32,
    /// Largest packet accepted on receive, bytes: the channel's MTU (every node on a channel
    /// uses the same), or the largest a simulated link may carry.
    pub receive_limit_bytes: usize,
}

/// Counters of the radio link layer (monotonic).
#[derive(Debug, Default)]
pub struct RadioStats {
    /// Packets put on the air.
    pub packets_sent: AtomicU64,
    /// Bytes put on the air (after COBS).
    pub bytes_sent: AtomicU64,
    /// Packets received and accepted (CRC good, for us).
    pub packets_received: AtomicU64,
    /// Bytes received (all, garbage included).
    pub bytes_received: AtomicU64,
    /// Packets refused for a bad CRC.
    pub crc_rejected: AtomicU64,
    /// Packets refused as malformed (COBS, size, kind, header) or garbage on the line.
    pub malformed: AtomicU64,
    /// Packets for another node (or our own echo), dropped.
    pub not_for_us: AtomicU64,
    /// Frames sent in one packet.
    pub frames_whole: AtomicU64,
    /// Frames cut into fragments.
    pub frames_fragmented: AtomicU64,
    /// Fragments sent again after a bitmap or a timeout.
    pub fragments_repeated: AtomicU64,
    /// Fragmented frames the peer confirmed whole.
    pub frames_acked: AtomicU64,
    /// Frames reassembled from fragments and delivered.
    pub frames_reassembled: AtomicU64,
    /// Frames given up on send: too large, out of rounds, displaced or queue full.
    pub frames_dropped: AtomicU64,
    /// Fragments dropped on receive (inconsistent, no room) and frames abandoned.
    pub fragments_dropped: AtomicU64,
}

/// A point-in-time copy of [`RadioStats`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[allow(missing_docs)]
pub struct RadioStatsSnapshot {
    pub packets_sent: u64,
    pub bytes_sent: u64,
    pub packets_received: u64,
    pub bytes_received: u64,
    pub crc_rejected: u64,
    pub malformed: u64,
    pub not_for_us: u64,
    pub frames_whole: u64,
    pub frames_fragmented: u64,
    pub fragments_repeated: u64,
    pub frames_acked: u64,
    pub frames_reassembled: u64,
    pub frames_dropped: u64,
    pub fragments_dropped: u64,
}

impl RadioStats {
    /// Copy the counters.
    pub fn snapshot(&self) -> RadioStatsSnapshot {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        RadioStatsSnapshot {
            packets_sent: g(&self.packets_sent),
            bytes_sent: g(&self.bytes_sent),
            packets_received: g(&self.packets_received),
            bytes_received: g(&self.bytes_received),
            crc_rejected: g(&self.crc_rejected),
            malformed: g(&self.malformed),
            not_for_us: g(&self.not_for_us),
            frames_whole: g(&self.frames_whole),
            frames_fragmented: g(&self.frames_fragmented),
            fragments_repeated: g(&self.fragments_repeated),
            frames_acked: g(&self.frames_acked),
            frames_reassembled: g(&self.frames_reassembled),
            frames_dropped: g(&self.frames_dropped),
            fragments_dropped: g(&self.fragments_dropped),
        }
    }
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// A frame being sent in fragments.
#[derive(Debug)]
struct Outgoing {
    parts: Vec<Vec<u8>>,
    held: Vec<bool>,
    rounds: u32,
    /// When to repeat the round if no bitmap comes (set once its last fragment is on the air).
    retry_at: Option<Instant>,
    /// Fragments of this frame still queued.
    queued: usize,
}

/// A packet to put on the air.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outbound {
    /// The peer it is for (the simulator routes by it; a radio just transmits).
    pub to: u64,
    /// Wire bytes (COBS-framed when the driver frames).
    pub bytes: Vec<u8>,
}

/// The link layer of one radio (or of one simulated node's links).
#[derive(Debug)]
pub struct LinkDriver {
    cfg: DriverConfig,
    peers: BTreeMap<u64, LinkParams>,
    next_id: u32,
    urgent: BTreeMap<u64, VecDeque<Vec<u8>>>,
    bulk: BTreeMap<u64, VecDeque<(u32, usize, bool)>>,
    out: BTreeMap<(u64, u32), Outgoing>,
    /// Pacers by lane: one (key [`BROADCAST`]) on a shared medium, else one per peer.
    buckets: BTreeMap<u64, TokenBucket>,
    reassembly: Reassembly,
    abandoned_seen: u64,
    /// Round-robin cursor over peers for bulk data.
    cursor: u64,
    stats: Arc<RadioStats>,
}

impl LinkDriver {
    /// A driver with `cfg`, counting into `stats`.
    pub fn new(cfg: DriverConfig, stats: Arc<RadioStats>) -> Self {
        LinkDriver {
            cfg,
            peers: BTreeMap::new(),
            next_id: cfg.first_message_id,
            urgent: BTreeMap::new(),
            bulk: BTreeMap::new(),
            out: BTreeMap::new(),
            buckets: BTreeMap::new(),
            reassembly: Reassembly::default(),
            abandoned_seen: 0,
            cursor: 0,
            stats,
        }
    }

    /// The counters.
    pub fn stats(&self) -> &Arc<RadioStats> {
        &self.stats
    }

    /// Set how `peer` is reached (the simulator's links differ per pair and change).
    pub fn set_peer(&mut self, peer: u64, params: LinkParams) {
        self.peers.insert(peer, params);
    }

    fn params(&self, peer: u64) -> LinkParams {
        self.peers.get(&peer).copied().unwrap_or(self.cfg.defaults)
    }

    fn lane(&self, peer: u64) -> u64 {
        if self.cfg.shared_medium {
            BROADCAST
        } else {
            peer
        }
    }

    fn bucket(&mut self, peer: u64) -> &mut TokenBucket {
        let lane = self.lane(peer);
        let p = self.params(if self.cfg.shared_medium {
            BROADCAST
        } else {
            peer
        });
        let burst = self.wire_len_max(p.mtu_bytes) * BURST_PACKETS;
        let b = self
            .buckets
            .entry(lane)
            .or_insert_with(|| TokenBucket::new(p.bitrate_bps, burst));
        if b.bitrate_bps() != p.bitrate_bps {
            *b = TokenBucket::new(p.bitrate_bps, burst);
        }
        b
    }

    fn wire_len_max(&self, packet_len: usize) -> usize {
        if self.cfg.cobs {
            cobs::framed_len_max(packet_len)
        } else {
            packet_len
        }
    }

    fn wire(&self, p: &Packet) -> Vec<u8> {
        let raw = packet::encode(p);
        if self.cfg.cobs {
            cobs::frame(&raw)
        } else {
            raw
        }
    }

    fn queue_urgent(&mut self, to: u64, p: &Packet) -> bool {
        let bytes = self.wire(p);
        let q = self.urgent.entry(to).or_default();
        if q.len() >= URGENT_PACKETS_PER_PEER_MAX {
            return false;
        }
        q.push_back(bytes);
        true
    }

    /// Queue a node frame for `to`: in one packet if it fits the MTU (ahead of all bulk
    /// data), else in fragments under selective repeat.
    pub fn send(&mut self, to: u64, frame: Vec<u8>, now: Instant) {
        let _ = now;
        let me = self.cfg.me;
        let p = self.params(to);
        if frame.is_empty() || frame.len() > MAX_FRAME_BYTES {
            bump(&self.stats.frames_dropped);
            return;
        }
        let address = packet::address_bytes(to, me);
        if address + frame.len() + CRC_BYTES <= p.mtu_bytes {
            let pkt = Packet {
                dst: to,
                src: me,
                body: Body::Frame(frame),
            };
            if self.queue_urgent(to, &pkt) {
                bump(&self.stats.frames_whole);
            } else {
                bump(&self.stats.frames_dropped);
            }
            return;
        }
        let chunk = p
            .mtu_bytes
            .saturating_sub(address + FRAGMENT_HEADER_BYTES + CRC_BYTES);
        if chunk == 0 {
            bump(&self.stats.frames_dropped);
            return;
        }
        let count = frame.len().div_ceil(chunk);
        if count > FRAGMENTS_PER_FRAME_MAX {
            bump(&self.stats.frames_dropped);
            return;
        }
        bump(&self.stats.frames_fragmented);
        let mine: Vec<u32> = self
            .out
            .range((to, 0)..=(to, u32::MAX))
            .map(|(&(_, id), _)| id)
            .collect();
        if mine.len() >= OUTGOING_FRAMES_PER_PEER_MAX {
            // The oldest is the furthest behind the next id (ids wrap).
            let next = self.next_id;
            if let Some(oldest) = mine.iter().copied().max_by_key(|&id| next.wrapping_sub(id)) {
                self.out.remove(&(to, oldest));
                bump(&self.stats.frames_dropped);
            }
        }
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1);
        let parts: Vec<Vec<u8>> = frame.chunks(chunk).map(<[u8]>::to_vec).collect();
        let q = self.bulk.entry(to).or_default();
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

    /// Take one received packet (COBS already removed). Returns a frame for the node when
    /// the packet completes one; everything else is absorbed and counted.
    pub fn receive(&mut self, bytes: &[u8], now: Instant) -> Option<(u64, Vec<u8>)> {
        let pkt = match packet::decode(bytes, self.cfg.receive_limit_bytes) {
            Ok(p) => p,
            Err(PacketError::BadCrc) => {
                bump(&self.stats.crc_rejected);
                return None;
            }
            Err(e) => {
                tracing::trace!(error = %e, "radio packet refused");
                bump(&self.stats.malformed);
                return None;
            }
        };
        if pkt.src == self.cfg.me || (pkt.dst != self.cfg.me && pkt.dst != BROADCAST) {
            bump(&self.stats.not_for_us);
            return None;
        }
        bump(&self.stats.packets_received);
        let from = pkt.src;
        match pkt.body {
            Body::Frame(f) => Some((from, f)),
            Body::Fragment {
                id,
                index,
                count,
                flags,
                data,
            } => {
                let (index, count) = (usize::from(index), usize::from(count));
                let result = self.reassembly.push(from, id, index, count, &data, now);
                let abandoned = self.reassembly.abandoned - self.abandoned_seen;
                self.abandoned_seen = self.reassembly.abandoned;
                self.stats
                    .fragments_dropped
                    .fetch_add(abandoned, Ordering::Relaxed);
                let done = matches!(result, Ok(Reassembled::Complete(_) | Reassembled::Again));
                if (flags & FLAG_LAST_IN_ROUND != 0 || done)
                    && let Some(bits) = self.reassembly.bitmap(from, id, count)
                {
                    let answer = Packet {
                        dst: from,
                        src: self.cfg.me,
                        body: Body::Bitmap {
                            id,
                            count: count as u16,
                            bits,
                        },
                    };
                    // A full queue loses the bitmap; the sender's round timer repeats.
                    let _ = self.queue_urgent(from, &answer);
                }
                match result {
                    Ok(Reassembled::Complete(frame)) => {
                        bump(&self.stats.frames_reassembled);
                        Some((from, frame))
                    }
                    Ok(_) => None,
                    Err(_) => {
                        bump(&self.stats.fragments_dropped);
                        None
                    }
                }
            }
            Body::Bitmap { id, count, bits } => {
                self.bitmap(from, id, usize::from(count), &bits);
                None
            }
        }
    }

    fn bitmap(&mut self, from: u64, id: u32, count: usize, bits: &[u8]) {
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
            bump(&self.stats.frames_acked);
            return;
        }
        // Repeat what is missing, unless the round is still going out.
        if o.queued == 0 {
            self.repeat(from, id);
        }
    }

    /// Queue the fragments of `(to, id)` the peer lacks, as a new round.
    fn repeat(&mut self, to: u64, id: u32) {
        let Some(o) = self.out.get_mut(&(to, id)) else {
            return;
        };
        if o.rounds >= ARQ_ROUNDS_MAX {
            self.out.remove(&(to, id));
            bump(&self.stats.frames_dropped);
            return;
        }
        o.rounds += 1;
        o.retry_at = None;
        let missing: Vec<usize> = (0..o.held.len()).filter(|&i| !o.held[i]).collect();
        o.queued = missing.len();
        let q = self.bulk.entry(to).or_default();
        for (k, &i) in missing.iter().enumerate() {
            bump(&self.stats.fragments_repeated);
            q.push_back((id, i, k + 1 == missing.len()));
        }
    }

    /// Rounds whose bitmap never came: repeat them.
    fn expire(&mut self, now: Instant) {
        let due: Vec<(u64, u32)> = self
            .out
            .iter()
            .filter(|(_, o)| o.retry_at.is_some_and(|t| t <= now))
            .map(|(&k, _)| k)
            .collect();
        for (to, id) in due {
            self.repeat(to, id);
        }
    }

    /// Peers in round-robin order, starting after the last one served.
    fn peers_from_cursor(&self, keys: Vec<u64>) -> Vec<u64> {
        let (after, before): (Vec<u64>, Vec<u64>) =
            keys.into_iter().partition(|&k| k > self.cursor);
        after.into_iter().chain(before).collect()
    }

    /// The next packet allowed on the air now, if any: whole frames and bitmaps first (in
    /// peer round-robin), then fragments (in peer round-robin), each within its pacer.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<Outbound> {
        self.expire(now);
        let mut blocked: Vec<u64> = Vec::new();
        let urgent_peers = self.peers_from_cursor(
            self.urgent
                .iter()
                .filter(|(_, q)| !q.is_empty())
                .map(|(&k, _)| k)
                .collect(),
        );
        for to in urgent_peers {
            let lane = self.lane(to);
            if blocked.contains(&lane) {
                continue;
            }
            let len = self
                .urgent
                .get(&to)
                .and_then(|q| q.front())
                .map_or(0, Vec::len);
            if !self.bucket(to).try_take(len, now) {
                blocked.push(lane);
                continue;
            }
            let bytes = self.urgent.get_mut(&to).and_then(VecDeque::pop_front)?;
            self.cursor = to;
            return Some(self.sent(to, bytes));
        }
        let bulk_peers = self.peers_from_cursor(
            self.bulk
                .iter()
                .filter(|(_, q)| !q.is_empty())
                .map(|(&k, _)| k)
                .collect(),
        );
        for to in bulk_peers {
            let lane = self.lane(to);
            if blocked.contains(&lane) {
                continue;
            }
            // Skip fragments of frames abandoned since they were queued.
            while let Some(&(id, _, _)) = self.bulk.get(&to).and_then(|q| q.front()) {
                if self.out.contains_key(&(to, id)) {
                    break;
                }
                self.bulk.get_mut(&to).and_then(VecDeque::pop_front);
            }
            let Some(&(id, i, last)) = self.bulk.get(&to).and_then(|q| q.front()) else {
                continue;
            };
            let Some(o) = self.out.get(&(to, id)) else {
                continue;
            };
            let pkt = Packet {
                dst: to,
                src: self.cfg.me,
                body: Body::Fragment {
                    id,
                    index: i as u16,
                    count: o.parts.len() as u16,
                    flags: if last { FLAG_LAST_IN_ROUND } else { 0 },
                    data: o.parts[i].clone(),
                },
            };
            let bytes = self.wire(&pkt);
            if !self.bucket(to).try_take(bytes.len(), now) {
                blocked.push(lane);
                continue;
            }
            self.bulk.get_mut(&to).and_then(VecDeque::pop_front);
            let params = self.params(to);
            let done = self.bucket(to).idle_at(now);
            if let Some(o) = self.out.get_mut(&(to, id)) {
                o.queued = o.queued.saturating_sub(1);
                if last {
                    o.retry_at = Some(done + params.round_timeout);
                }
            }
            self.cursor = to;
            return Some(self.sent(to, bytes));
        }
        self.urgent.retain(|_, q| !q.is_empty());
        self.bulk.retain(|_, q| !q.is_empty());
        None
    }

    fn sent(&self, to: u64, bytes: Vec<u8>) -> Outbound {
        bump(&self.stats.packets_sent);
        self.stats
            .bytes_sent
            .fetch_add(bytes.len() as u64, Ordering::Relaxed);
        Outbound { to, bytes }
    }

    /// When [`poll_transmit`](Self::poll_transmit) may next yield something (a pacer
    /// refilling, a round timing out); `None` when idle.
    pub fn next_wake(&mut self, now: Instant) -> Option<Instant> {
        let mut wake: Option<Instant> = self.out.values().filter_map(|o| o.retry_at).min();
        let mut consider = |at: Instant| {
            wake = Some(wake.map_or(at, |w| w.min(at)));
        };
        let urgent: Vec<(u64, usize)> = self
            .urgent
            .iter()
            .filter_map(|(&k, q)| q.front().map(|b| (k, b.len())))
            .collect();
        for (to, len) in urgent {
            consider(self.bucket(to).ready_at(len, now));
        }
        let bulk: Vec<u64> = self
            .bulk
            .iter()
            .filter(|(_, q)| !q.is_empty())
            .map(|(&k, _)| k)
            .collect();
        for to in bulk {
            // The largest a fragment can be: waking no earlier than it could go.
            let len = self.wire_len_max(self.params(to).mtu_bytes);
            consider(self.bucket(to).ready_at(len, now));
        }
        wake
    }

    /// True when nothing is queued or awaiting a bitmap.
    pub fn is_idle(&self) -> bool {
        self.out.is_empty()
            && self.urgent.values().all(VecDeque::is_empty)
            && self.bulk.values().all(VecDeque::is_empty)
    }

    /// Air time of `bytes` on the default link (for callers sizing timeouts).
    pub fn air_time(&self, bytes: usize) -> Duration {
        air_time(bytes, self.cfg.defaults.bitrate_bps)
    }
}

/// Bitmap packets are small; this is their size for a frame of `count` fragments.
pub fn bitmap_packet_bytes(dst: u64, src: u64, count: usize) -> usize {
    packet::address_bytes(dst, src) + BITMAP_HEADER_BYTES + count.div_ceil(8) + CRC_BYTES
}
