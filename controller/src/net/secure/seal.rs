//! The sealed frame, the pair keys, the replay window and [`SecureLink`], which seals and
//! opens frames for one node.
//!
//! ```text
//! +-------+-----------+------+-----+------------+----------+---------+------------+-----+
//! | magic | version 2 | from | to  | from_epoch | to_epoch | counter | ciphertext | tag |
//! +-------+-----------+------+-----+------------+----------+---------+------------+-----+
//!   1 B      1 B       varint varint  varint      varint     varint                16 B
//! ```
//!
//! Everything before the ciphertext is the AEAD's associated data; the nonce is `from_epoch`
//! (4 bytes LE) then `counter` (8 bytes LE), under the key of the ordered pair (from, to). The
//! tag replaces the plain frame's CRC: it rejects corruption as well as forgery. A frame with
//! an empty plaintext is a *hello*: it only tells the receiver the sender's epochs.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chacha20poly1305::aead::AeadInPlace;
use chacha20poly1305::{ChaCha20Poly1305, KeyInit, Nonce, Tag};
use hkdf::Hkdf;
use sha2::Sha256;

use super::{BootEpoch, SealStats, SealStatsSnapshot};
use ghatta_proto::frame::{self, get_varint, put_varint};
use ghatta_proto::keys::{PublicKey, SecretKey};

/// Frame version of a sealed frame (a plain frame is [`frame::FRAME_VERSION`], 1).
pub const SEALED_VERSION: u8 = 2;
/// Poly1305 tag bytes.
pub const TAG_BYTES: usize = 16;
/// Longest sealed header: magic, version, two u64 varints (10 bytes each), two u32 varints
/// (5 each), a u64 varint counter.
pub const MAX_SEALED_HEADER_BYTES: usize = 2 + 10 + 10 + 5 + 5 + 10;
/// The most a sealed frame adds to its payload (header and tag). A plain frame adds 8 bytes
/// for small node ids (header 4, CRC 4); a sealed one 23 in a cluster of small ids whose
/// nodes restarted fewer than 128 times, for the first 127 frames per peer and boot (2 + 5
/// one-byte varints + 16), 24 up to 16,383 frames, 25 up to 2 million.
pub const SEAL_OVERHEAD_BYTES: usize = MAX_SEALED_HEADER_BYTES + TAG_BYTES;
/// Smallest sealed frame: a header of one-byte varints and a tag (a hello).
pub const MIN_SEALED_FRAME_BYTES: usize = 2 + 5 + TAG_BYTES;
/// Largest sealed frame: every link's frame limit (TCP refuses longer length prefixes), so
/// the largest payload sealed is [`MAX_SEALED_PAYLOAD_BYTES`]; Raft messages stay far below
/// (snapshot chunks are 64 KiB).
pub const MAX_SEALED_FRAME_BYTES: usize = frame::MAX_FRAME_BYTES;
/// Largest payload that can be sealed.
pub const MAX_SEALED_PAYLOAD_BYTES: usize = MAX_SEALED_FRAME_BYTES - SEAL_OVERHEAD_BYTES;
/// Counters tracked per peer behind the highest one seen. 1,024 frames is far more reordering
/// than any of our links produces (TCP none; the radio's ARQ a few frames); older frames are
/// dropped as out of window, which Raft treats as loss.
pub const REPLAY_WINDOW: u64 = 1024;
/// Farthest a peer's word may move this node's boot epoch ahead of its own. A lost or
/// restored epoch file is behind by the boots since the backup, not by millions (a board
/// that restarts hourly uses 8,760 epochs a year); a member that claims more is lying or
/// broken, and taking its word would exhaust the epochs (the node then cannot start).
pub const EPOCH_RAISE_STEP_MAX: u32 = 1_000_000;
/// At most one hello per peer this often. A hello answers a burst of stale frames; a second a
/// peer bounds what a replaying attacker can make this node send to one small frame per peer
/// per second.
pub const HELLO_INTERVAL: Duration = Duration::from_secs(1);
/// Frames kept per peer, while this node does not yet know the peer's epoch, to send again
/// once it does: every frame sent before that is dropped by the peer (it names no epoch of
/// the peer), so without this a cluster's first vote requests would be lost and the first
/// election would wait a whole election timeout. Four covers a vote, a pre-vote and their
/// retries.
pub const RESEND_FRAMES: usize = 4;
/// Largest payload kept for sending again (votes and heartbeats are tens of bytes; a large
/// append is left to Raft's own retry).
pub const RESEND_PAYLOAD_BYTES_MAX: usize = 4096;
/// HKDF salt prefix; the cluster name follows (length-prefixed), so two clusters sharing keys
/// by mistake still cannot open each other's frames.
const KDF_SALT_PREFIX: &[u8] = b"ghatta seal v1 cluster";
/// HKDF info prefix; the sender and receiver ids follow.
const KDF_INFO_PREFIX: &[u8] = b"ghatta frame key";

/// The authenticated header of a sealed frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SealedHeader {
    /// Sender.
    pub from: u64,
    /// Receiver.
    pub to: u64,
    /// The sender's boot epoch (1 or more).
    pub from_epoch: u32,
    /// The receiver's boot epoch as the sender last saw it (0: not yet).
    pub to_epoch: u32,
    /// Per (sender epoch, receiver) counter, from 0.
    pub counter: u64,
}

impl SealedHeader {
    fn encode_into(&self, out: &mut Vec<u8>) {
        out.push(frame::FRAME_MAGIC);
        out.push(SEALED_VERSION);
        put_varint(out, self.from);
        put_varint(out, self.to);
        put_varint(out, u64::from(self.from_epoch));
        put_varint(out, u64::from(self.to_epoch));
        put_varint(out, self.counter);
    }

    /// Parse the header at the start of `buf`; returns it and its length.
    fn parse(buf: &[u8]) -> Option<(SealedHeader, usize)> {
        if buf.first() != Some(&frame::FRAME_MAGIC) || buf.get(1) != Some(&SEALED_VERSION) {
            return None;
        }
        let mut pos = 2;
        let from = get_varint(buf, &mut pos)?;
        let to = get_varint(buf, &mut pos)?;
        let from_epoch = u32::try_from(get_varint(buf, &mut pos)?).ok()?;
        let to_epoch = u32::try_from(get_varint(buf, &mut pos)?).ok()?;
        let counter = get_varint(buf, &mut pos)?;
        // Epochs start at 1; the last counter is never used, so `counter + 1` cannot overflow.
        if from_epoch == 0 || counter == u64::MAX {
            return None;
        }
        Some((
            SealedHeader {
                from,
                to,
                from_epoch,
                to_epoch,
                counter,
            },
            pos,
        ))
    }

    fn nonce(&self) -> Nonce {
        let mut n = [0u8; 12];
        n[..4].copy_from_slice(&self.from_epoch.to_le_bytes());
        n[4..].copy_from_slice(&self.counter.to_le_bytes());
        n.into()
    }
}

/// The (sender, receiver) a frame claims, sealed or plain, verifying nothing: a hint for the
/// link layer (which path a peer was last heard on, e.g. `MultiTransport` under a sealed
/// link), never a reason to trust the frame; only [`SecureLink::open`] authenticates.
pub fn claimed_route(buf: &[u8]) -> Option<(u64, u64)> {
    if let Some((h, _)) = SealedHeader::parse(buf) {
        return Some((h.from, h.to));
    }
    frame::decode(buf).ok().map(|f| (f.from, f.to))
}

/// A sliding window of counters already accepted in one sender epoch.
#[derive(Debug, Clone, Default)]
pub(crate) struct ReplayWindow {
    /// One past the highest counter accepted (0: none yet).
    top: u64,
    /// Bit `c % REPLAY_WINDOW` is set when counter `c` (within the window) was accepted.
    bits: [u64; (REPLAY_WINDOW / 64) as usize],
}

/// Why a counter is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WindowVerdict {
    Fresh,
    Replayed,
    OutOfWindow,
}

impl ReplayWindow {
    fn bit(c: u64) -> (usize, u64) {
        let i = c % REPLAY_WINDOW;
        ((i / 64) as usize, 1u64 << (i % 64))
    }

    pub(crate) fn check(&self, c: u64) -> WindowVerdict {
        if c >= self.top {
            return WindowVerdict::Fresh;
        }
        if self.top - c > REPLAY_WINDOW {
            return WindowVerdict::OutOfWindow;
        }
        let (w, m) = Self::bit(c);
        if self.bits[w] & m != 0 {
            WindowVerdict::Replayed
        } else {
            WindowVerdict::Fresh
        }
    }

    /// Record `c` (call only after [`check`](Self::check) said fresh and the tag verified).
    pub(crate) fn accept(&mut self, c: u64) {
        if c >= self.top {
            let advance = c + 1 - self.top;
            if advance >= REPLAY_WINDOW {
                self.bits = Default::default();
            } else {
                // Counters top..=c reuse the bits of counters that just left the window.
                for x in self.top..=c {
                    let (w, m) = Self::bit(x);
                    self.bits[w] &= !m;
                }
            }
            self.top = c + 1;
        }
        let (w, m) = Self::bit(c);
        self.bits[w] |= m;
    }
}

struct PeerState {
    /// Key for frames this node sends to the peer.
    tx: ChaCha20Poly1305,
    /// Key for frames the peer sends to this node.
    rx: ChaCha20Poly1305,
    /// The epoch `next_counter` belongs to (never decreases).
    tx_epoch: u32,
    next_counter: u64,
    /// The peer's highest authentic epoch (0: none yet).
    peer_epoch: u32,
    window: ReplayWindow,
    last_hello: Option<tokio::time::Instant>,
    /// Payloads sealed before the peer's epoch was known (they will not open there).
    unheard: std::collections::VecDeque<Vec<u8>>,
    /// Those payloads, to send again now that the peer's epoch is known.
    resend: Vec<Vec<u8>>,
}

/// A frame that opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Opened {
    /// A message for the RPC layer.
    Message {
        /// Sender.
        from: u64,
        /// This node.
        to: u64,
        /// The plaintext (an encoded wire message).
        payload: Vec<u8>,
    },
    /// A hello (consumed here).
    Hello {
        /// Sender.
        from: u64,
    },
}

/// Why a received frame was dropped (each reason has its counter in [`SealStats`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejected {
    /// Too short, too long, or a malformed header.
    Truncated,
    /// A plain frame.
    Unsealed,
    /// From a node whose key is not listed.
    UnknownSender,
    /// For another node.
    NotForMe,
    /// The tag did not verify.
    Forged,
    /// Counter already seen.
    Replayed,
    /// Counter older than the window.
    OutOfWindow,
    /// Authentic, from an older boot of `from`.
    OlderEpoch {
        /// The sender.
        from: u64,
    },
    /// Authentic, for an older boot of this node.
    StaleReceiverEpoch {
        /// The sender.
        from: u64,
    },
}

impl Rejected {
    /// The authentic peer that should get a hello, if any.
    pub fn hello_to(&self) -> Option<u64> {
        match *self {
            Rejected::OlderEpoch { from } | Rejected::StaleReceiverEpoch { from } => Some(from),
            _ => None,
        }
    }
}

/// Why a frame could not be sealed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    /// No key for the peer.
    #[error("no public key for node {0}: add it to peers in node.toml (id, addr, public_key)")]
    UnknownPeer(u64),
    /// The payload is over the limit.
    #[error("a {0}-byte message is over the sealed frame limit")]
    TooLarge(usize),
    /// The AEAD refused (cannot happen below the size limit).
    #[error("encryption failed")]
    Aead,
}

/// A sealing set-up problem (from node.toml's keys).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecureLinkError {
    /// A peer's public key is a low-order point.
    #[error(
        "the public_key of node {peer} is not a usable X25519 key (a low-order point); run `ghatta keygen` on node {peer} and copy the public key it prints"
    )]
    WeakKey {
        /// The peer.
        peer: u64,
    },
    /// The config lists another key for this node than its key file holds.
    #[error(
        "this node's key file holds public key {actual}, but peers lists {listed} for node {me}; fix key_file or that public_key"
    )]
    OwnKeyMismatch {
        /// This node.
        me: u64,
        /// The key in the key file.
        actual: PublicKey,
        /// The key in the config.
        listed: PublicKey,
    },
}

/// Seals and opens frames for one node: its keys, epoch, per-peer counters and windows.
pub struct SecureLink {
    me: u64,
    epoch: BootEpoch,
    peers: HashMap<u64, Mutex<PeerState>>,
    stats: Arc<SealStats>,
}

impl std::fmt::Debug for SecureLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecureLink")
            .field("me", &self.me)
            .field("epoch", &self.epoch.get())
            .field("peers", &self.peers.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

fn pair_key(shared: &[u8; 32], cluster: &str, from: u64, to: u64) -> ChaCha20Poly1305 {
    let mut salt = Vec::with_capacity(KDF_SALT_PREFIX.len() + 4 + cluster.len());
    salt.extend_from_slice(KDF_SALT_PREFIX);
    salt.extend_from_slice(&(cluster.len() as u32).to_le_bytes());
    salt.extend_from_slice(cluster.as_bytes());
    let mut info = Vec::with_capacity(KDF_INFO_PREFIX.len() + 16);
    info.extend_from_slice(KDF_INFO_PREFIX);
    info.extend_from_slice(&from.to_le_bytes());
    info.extend_from_slice(&to.to_le_bytes());
    let mut okm = [0u8; 32];
    Hkdf::<Sha256>::new(Some(&salt), shared)
        .expand(&info, &mut okm)
        .expect("32 bytes is a valid HKDF-SHA256 output length");
    let key = ChaCha20Poly1305::new(&okm.into());
    okm.fill(0);
    key
}

impl SecureLink {
    /// Keys for node `me` of `cluster` with its `secret` and every member's public key
    /// (`me`'s own entry, if listed, must match `secret`).
    pub fn new(
        me: u64,
        cluster: &str,
        secret: &SecretKey,
        peers: impl IntoIterator<Item = (u64, PublicKey)>,
        epoch: BootEpoch,
    ) -> Result<SecureLink, SecureLinkError> {
        let mut map = HashMap::new();
        for (id, public) in peers {
            if id == me {
                let actual = secret.public();
                if actual != public {
                    return Err(SecureLinkError::OwnKeyMismatch {
                        me,
                        actual,
                        listed: public,
                    });
                }
                continue;
            }
            let mut shared = secret
                .agree(&public)
                .ok_or(SecureLinkError::WeakKey { peer: id })?;
            let state = PeerState {
                tx: pair_key(&shared, cluster, me, id),
                rx: pair_key(&shared, cluster, id, me),
                tx_epoch: 0,
                next_counter: 0,
                peer_epoch: 0,
                window: ReplayWindow::default(),
                last_hello: None,
                unheard: Default::default(),
                resend: Vec::new(),
            };
            shared.fill(0);
            map.insert(id, Mutex::new(state));
        }
        Ok(SecureLink {
            me,
            epoch,
            peers: map,
            stats: Arc::default(),
        })
    }

    /// This node.
    pub fn me(&self) -> u64 {
        self.me
    }

    /// Whether `peer`'s public key is listed (frames to and from it can be sealed and opened).
    pub fn knows(&self, peer: u64) -> bool {
        self.peers.contains_key(&peer)
    }

    /// This node's boot epoch.
    pub fn epoch(&self) -> u32 {
        self.epoch.get()
    }

    /// The counters.
    pub fn stats(&self) -> &Arc<SealStats> {
        &self.stats
    }

    /// A copy of the counters.
    pub fn snapshot(&self) -> SealStatsSnapshot {
        self.stats.snapshot(self.epoch.get())
    }

    /// Seal `payload` for `to` (an empty payload is a hello).
    pub fn seal(&self, to: u64, payload: &[u8]) -> Result<Vec<u8>, SealError> {
        let r = self.seal_inner(to, payload);
        SealStats::bump(match r {
            Ok(_) => &self.stats.sealed,
            Err(_) => &self.stats.seal_failed,
        });
        r
    }

    fn seal_inner(&self, to: u64, payload: &[u8]) -> Result<Vec<u8>, SealError> {
        if payload.len() > MAX_SEALED_PAYLOAD_BYTES {
            return Err(SealError::TooLarge(payload.len()));
        }
        let peer = self.peers.get(&to).ok_or(SealError::UnknownPeer(to))?;
        let mut st = peer.lock().map_err(|_| SealError::Aead)?;
        // Read the epoch under the peer's lock: a raise elsewhere restarts the counter once,
        // and `tx_epoch` never goes back, so no (epoch, counter) is used twice.
        let e = self.epoch.get();
        if e > st.tx_epoch {
            st.tx_epoch = e;
            st.next_counter = 0;
        }
        let h = SealedHeader {
            from: self.me,
            to,
            from_epoch: st.tx_epoch,
            to_epoch: st.peer_epoch,
            counter: st.next_counter,
        };
        st.next_counter += 1;
        if st.peer_epoch == 0 && !payload.is_empty() && payload.len() <= RESEND_PAYLOAD_BYTES_MAX {
            if st.unheard.len() == RESEND_FRAMES {
                st.unheard.pop_front();
            }
            st.unheard.push_back(payload.to_vec());
        }
        let mut out = Vec::with_capacity(MAX_SEALED_HEADER_BYTES + payload.len() + TAG_BYTES);
        h.encode_into(&mut out);
        let aad_len = out.len();
        out.extend_from_slice(payload);
        let (aad, body) = out.split_at_mut(aad_len);
        let tag = st
            .tx
            .encrypt_in_place_detached(&h.nonce(), aad, body)
            .map_err(|_| SealError::Aead)?;
        drop(st);
        out.extend_from_slice(&tag);
        Ok(out)
    }

    /// Open a received frame; every refusal is counted.
    pub fn open(&self, buf: &[u8]) -> Result<Opened, Rejected> {
        let r = self.open_inner(buf);
        let s = &self.stats;
        SealStats::bump(match &r {
            Ok(Opened::Message { .. }) => &s.opened,
            Ok(Opened::Hello { .. }) => &s.hellos_received,
            Err(Rejected::Truncated) => &s.truncated,
            Err(Rejected::Unsealed) => &s.unsealed,
            Err(Rejected::UnknownSender) => &s.unknown_sender,
            Err(Rejected::NotForMe) => &s.not_for_me,
            Err(Rejected::Forged) => &s.forged,
            Err(Rejected::Replayed) => &s.replayed,
            Err(Rejected::OutOfWindow) => &s.out_of_window,
            Err(Rejected::OlderEpoch { .. }) => &s.older_epoch,
            // A sender that has not heard this node yet names epoch 0: its first frames
            // after a start, not frames for an older boot (which is what a replay would be).
            Err(Rejected::StaleReceiverEpoch { .. })
                if SealedHeader::parse(buf).is_some_and(|(h, _)| h.to_epoch == 0) =>
            {
                &s.before_introduction
            }
            Err(Rejected::StaleReceiverEpoch { .. }) => &s.stale_receiver_epoch,
        });
        r
    }

    fn open_inner(&self, buf: &[u8]) -> Result<Opened, Rejected> {
        if buf.len() >= 2 && buf[0] == frame::FRAME_MAGIC && buf[1] == frame::FRAME_VERSION {
            return Err(Rejected::Unsealed);
        }
        if !(MIN_SEALED_FRAME_BYTES..=MAX_SEALED_FRAME_BYTES).contains(&buf.len()) {
            return Err(Rejected::Truncated);
        }
        let (h, hlen) = SealedHeader::parse(buf).ok_or(Rejected::Truncated)?;
        if buf.len() < hlen + TAG_BYTES {
            return Err(Rejected::Truncated);
        }
        if h.to != self.me {
            return Err(Rejected::NotForMe);
        }
        let peer = self.peers.get(&h.from).ok_or(Rejected::UnknownSender)?;
        let mut st = peer.lock().map_err(|_| Rejected::Forged)?;
        // Replays of the current epoch are refused before any cryptography.
        if h.from_epoch == st.peer_epoch {
            match st.window.check(h.counter) {
                WindowVerdict::Fresh => {}
                WindowVerdict::Replayed => return Err(Rejected::Replayed),
                WindowVerdict::OutOfWindow => return Err(Rejected::OutOfWindow),
            }
        }
        let (aad, rest) = buf.split_at(hlen);
        let (ct, tag) = rest.split_at(rest.len() - TAG_BYTES);
        let mut payload = ct.to_vec();
        st.rx
            .decrypt_in_place_detached(&h.nonce(), aad, &mut payload, Tag::from_slice(tag))
            .map_err(|_| Rejected::Forged)?;
        // Authentic from here on.
        if h.from_epoch < st.peer_epoch {
            return Err(Rejected::OlderEpoch { from: h.from });
        }
        if h.from_epoch > st.peer_epoch {
            if st.peer_epoch == 0 {
                let unheard: Vec<Vec<u8>> = st.unheard.drain(..).collect();
                st.resend = unheard;
            }
            st.peer_epoch = h.from_epoch;
            st.window = ReplayWindow::default();
        }
        st.window.accept(h.counter);
        drop(st);
        let mine = self.epoch.get();
        if h.to_epoch != mine {
            if h.to_epoch > mine {
                self.raise_epoch(h.from, h.to_epoch);
            }
            return Err(Rejected::StaleReceiverEpoch { from: h.from });
        }
        if payload.is_empty() {
            return Ok(Opened::Hello { from: h.from });
        }
        Ok(Opened::Message {
            from: h.from,
            to: h.to,
            payload,
        })
    }

    /// An authentic peer has seen epoch `seen` of ours, above the one in force: our epoch
    /// file was lost or restored from an old backup. Move past it so no nonce repeats.
    fn raise_epoch(&self, peer: u64, seen: u32) {
        if seen.saturating_sub(self.epoch.get()) > EPOCH_RAISE_STEP_MAX {
            SealStats::bump(&self.stats.epoch_raise_refused);
            tracing::warn!(
                peer,
                seen,
                epoch = self.epoch.get(),
                "node {peer} claims to have seen boot epoch {seen} of this node, more than {EPOCH_RAISE_STEP_MAX} ahead of ours: not taken; check that board"
            );
            return;
        }
        let Some(next) = seen.checked_add(1) else {
            tracing::error!(
                peer,
                "node {peer} has seen boot epoch {seen} of ours, the last one; generate a new key for this node"
            );
            return;
        };
        match self.epoch.raise(next) {
            Ok(true) => {
                SealStats::bump(&self.stats.epoch_raised);
                tracing::warn!(
                    peer,
                    epoch = next,
                    "node {peer} had seen boot epoch {seen} of this node, above ours: the epoch file was lost or restored; moved to {next}"
                );
            }
            Ok(false) => {}
            Err(e) => tracing::error!(peer, error = %e, "cannot raise the boot epoch"),
        }
    }

    /// Whether a hello to `peer` is due (at most one per [`HELLO_INTERVAL`]); marks it sent.
    pub fn hello_due(&self, peer: u64) -> bool {
        let Some(p) = self.peers.get(&peer) else {
            return false;
        };
        let Ok(mut st) = p.lock() else {
            return false;
        };
        let now = tokio::time::Instant::now();
        if st
            .last_hello
            .is_some_and(|t| now.duration_since(t) < HELLO_INTERVAL)
        {
            return false;
        }
        st.last_hello = Some(now);
        true
    }

    /// Payloads sent to `peer` before its epoch was known, now that it is (each once; seal
    /// them again to send them).
    pub fn take_resend(&self, peer: u64) -> Vec<Vec<u8>> {
        self.peers
            .get(&peer)
            .and_then(|p| p.lock().ok())
            .map(|mut st| std::mem::take(&mut st.resend))
            .unwrap_or_default()
    }

    /// Count a hello handed to the link.
    pub(crate) fn count_hello_sent(&self) {
        SealStats::bump(&self.stats.hellos_sent);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u8) -> SecretKey {
        SecretKey::from_bytes([n; 32])
    }

    /// Nodes 1..=n of cluster "c" with keys [i; 32], each at epoch `epoch`.
    fn links(n: u64, epoch: u32) -> Vec<SecureLink> {
        let pubs: Vec<(u64, PublicKey)> = (1..=n).map(|i| (i, key(i as u8).public())).collect();
        (1..=n)
            .map(|i| {
                SecureLink::new(
                    i,
                    "c",
                    &key(i as u8),
                    pubs.clone(),
                    BootEpoch::in_memory(epoch),
                )
                .unwrap()
            })
            .collect()
    }

    /// Exchange one frame each way so both sides know each other's epoch.
    fn introduce(a: &SecureLink, b: &SecureLink) {
        let f = a.seal(b.me(), b"x").unwrap();
        assert_eq!(
            b.open(&f),
            Err(Rejected::StaleReceiverEpoch { from: a.me() })
        );
        let hello = b.seal(a.me(), &[]).unwrap();
        assert_eq!(a.open(&hello), Ok(Opened::Hello { from: b.me() }));
    }

    #[test]
    fn seal_open_round_trip_after_introduction() {
        let l = links(2, 1);
        introduce(&l[0], &l[1]);
        let f = l[0].seal(2, b"append entries").unwrap();
        assert_eq!(
            l[1].open(&f),
            Ok(Opened::Message {
                from: 1,
                to: 2,
                payload: b"append entries".to_vec()
            })
        );
        // The first frame named no epoch of node 2: dropped, but counted apart from the
        // faults (a clean start reported "frames dropped", issue 26).
        let s = l[1].snapshot();
        assert_eq!(
            (
                s.opened,
                s.before_introduction,
                s.stale_receiver_epoch,
                s.rejected()
            ),
            (1, 1, 0, 0)
        );
    }

    #[test]
    fn replays_are_dropped_and_reordering_within_the_window_is_not() {
        let l = links(2, 1);
        introduce(&l[0], &l[1]);
        let frames: Vec<_> = (0..10).map(|i| l[0].seal(2, &[i + 1]).unwrap()).collect();
        for f in frames.iter().rev() {
            assert!(matches!(l[1].open(f), Ok(Opened::Message { .. })));
        }
        for f in &frames {
            assert_eq!(l[1].open(f), Err(Rejected::Replayed));
        }
        assert_eq!(l[1].snapshot().replayed, 10);
    }

    #[test]
    fn frames_older_than_the_window_are_dropped() {
        let l = links(2, 1);
        introduce(&l[0], &l[1]);
        let old = l[0].seal(2, b"old").unwrap();
        for _ in 0..REPLAY_WINDOW {
            let f = l[0].seal(2, b"n").unwrap();
            l[1].open(&f).unwrap();
        }
        assert_eq!(l[1].open(&old), Err(Rejected::OutOfWindow));
    }

    #[test]
    fn every_single_bit_flip_is_rejected() {
        let l = links(2, 1);
        introduce(&l[0], &l[1]);
        let f = l[0].seal(2, b"vote for me").unwrap();
        for i in 0..f.len() * 8 {
            let mut g = f.clone();
            g[i / 8] ^= 1 << (i % 8);
            assert!(l[1].open(&g).is_err(), "bit {i} flip accepted");
        }
        // The genuine frame still opens: flips consumed no counter.
        assert!(matches!(l[1].open(&f), Ok(Opened::Message { .. })));
    }

    #[test]
    fn truncations_unknown_senders_and_misaddressed_frames_are_dropped() {
        let l = links(3, 1);
        introduce(&l[0], &l[1]);
        let f = l[0].seal(2, b"abc").unwrap();
        for n in 0..f.len() {
            assert!(l[1].open(&f[..n]).is_err(), "{n}-byte prefix accepted");
        }
        // For node 2, delivered to node 3.
        assert_eq!(l[2].open(&f), Err(Rejected::NotForMe));
        // A key outside the membership, claiming to be node 9 and node 1.
        let rogue_pubs = [(2, key(2).public())];
        let rogue9 =
            SecureLink::new(9, "c", &key(99), rogue_pubs, BootEpoch::in_memory(1)).unwrap();
        assert_eq!(
            l[1].open(&rogue9.seal(2, b"vote").unwrap()),
            Err(Rejected::UnknownSender)
        );
        let rogue1 =
            SecureLink::new(1, "c", &key(99), rogue_pubs, BootEpoch::in_memory(5)).unwrap();
        assert_eq!(
            l[1].open(&rogue1.seal(2, b"vote").unwrap()),
            Err(Rejected::Forged)
        );
        // A plain frame on a sealed link.
        assert_eq!(
            l[1].open(&frame::encode(1, 2, b"hi")),
            Err(Rejected::Unsealed)
        );
        let s = l[1].snapshot();
        assert_eq!((s.unknown_sender, s.unsealed, s.opened), (1, 1, 0), "{s:?}");
        // Prefixes shorter than a header and a tag are truncated; longer ones fail the tag,
        // as does the rogue claiming node 1's id.
        assert_eq!(s.truncated + s.forged, f.len() as u64 + 1, "{s:?}");
        assert_eq!(s.truncated, MIN_SEALED_FRAME_BYTES as u64, "{s:?}");
    }

    #[test]
    fn another_cluster_name_cannot_open() {
        let pubs = [(1, key(1).public()), (2, key(2).public())];
        let a = SecureLink::new(1, "valley-a", &key(1), pubs, BootEpoch::in_memory(1)).unwrap();
        let b = SecureLink::new(2, "valley-b", &key(2), pubs, BootEpoch::in_memory(1)).unwrap();
        assert_eq!(b.open(&a.seal(2, b"x").unwrap()), Err(Rejected::Forged));
    }

    #[test]
    fn a_restarted_sender_is_accepted_and_its_old_frames_are_not() {
        let pubs = [(1, key(1).public()), (2, key(2).public())];
        let a1 = SecureLink::new(1, "c", &key(1), pubs, BootEpoch::in_memory(1)).unwrap();
        let b = SecureLink::new(2, "c", &key(2), pubs, BootEpoch::in_memory(1)).unwrap();
        introduce(&a1, &b);
        let old = a1.seal(2, b"old").unwrap();
        // Node 1 restarts with epoch 2; it knows node 2's epoch again after one hello.
        let a2 = SecureLink::new(1, "c", &key(1), pubs, BootEpoch::in_memory(2)).unwrap();
        introduce(&a2, &b);
        assert!(matches!(
            b.open(&a2.seal(2, b"new").unwrap()),
            Ok(Opened::Message { .. })
        ));
        assert_eq!(b.open(&old), Err(Rejected::OlderEpoch { from: 1 }));
    }

    #[test]
    fn frames_captured_before_the_receiver_restarted_do_not_open_after() {
        let pubs = [(1, key(1).public()), (2, key(2).public())];
        let a = SecureLink::new(1, "c", &key(1), pubs, BootEpoch::in_memory(1)).unwrap();
        let b1 = SecureLink::new(2, "c", &key(2), pubs, BootEpoch::in_memory(1)).unwrap();
        introduce(&a, &b1);
        let captured = a.seal(2, b"remove node 3").unwrap();
        assert!(matches!(b1.open(&captured), Ok(Opened::Message { .. })));
        // Node 2 restarts (its replay window is gone) with a new epoch.
        let b2 = SecureLink::new(2, "c", &key(2), pubs, BootEpoch::in_memory(2)).unwrap();
        assert_eq!(
            b2.open(&captured),
            Err(Rejected::StaleReceiverEpoch { from: 1 })
        );
    }

    #[test]
    fn a_lost_epoch_file_is_corrected_by_peers() {
        let pubs = [(1, key(1).public()), (2, key(2).public())];
        let a = SecureLink::new(1, "c", &key(1), pubs, BootEpoch::in_memory(1)).unwrap();
        let b = SecureLink::new(2, "c", &key(2), pubs, BootEpoch::in_memory(50)).unwrap();
        introduce(&a, &b);
        // Node 2 loses its epoch file and comes back at 1: node 1 still says 50.
        let b_lost = SecureLink::new(2, "c", &key(2), pubs, BootEpoch::in_memory(1)).unwrap();
        let from_a = a.seal(2, b"hb").unwrap();
        assert_eq!(
            b_lost.open(&from_a),
            Err(Rejected::StaleReceiverEpoch { from: 1 })
        );
        assert_eq!(b_lost.epoch(), 51);
        assert_eq!(b_lost.snapshot().epoch_raised, 1);
    }

    /// A member that claims to have seen an epoch far beyond this node's (one that would
    /// exhaust its epochs, so it could never start again) is not taken at its word.
    #[test]
    fn a_peer_cannot_raise_the_epoch_to_the_end() {
        let pubs = [(1, key(1).public()), (2, key(2).public())];
        let a = SecureLink::new(1, "c", &key(1), pubs, BootEpoch::in_memory(1)).unwrap();
        let b = SecureLink::new(2, "c", &key(2), pubs, BootEpoch::in_memory(u32::MAX - 1)).unwrap();
        introduce(&a, &b);
        let victim = SecureLink::new(2, "c", &key(2), pubs, BootEpoch::in_memory(3)).unwrap();
        assert_eq!(
            victim.open(&a.seal(2, b"hb").unwrap()),
            Err(Rejected::StaleReceiverEpoch { from: 1 })
        );
        assert_eq!(
            victim.epoch(),
            3,
            "the epoch moved at a peer's word to the end"
        );
        assert_eq!(victim.snapshot().epoch_raise_refused, 1);
        assert_eq!(victim.snapshot().epoch_raised, 0);
    }

    #[test]
    fn a_listed_own_key_must_match_and_weak_peer_keys_are_refused() {
        let e = SecureLink::new(
            1,
            "c",
            &key(1),
            [(1, key(2).public())],
            BootEpoch::in_memory(1),
        )
        .unwrap_err();
        assert!(matches!(e, SecureLinkError::OwnKeyMismatch { .. }));
        let e = SecureLink::new(
            1,
            "c",
            &key(1),
            [(2, PublicKey([0; 32]))],
            BootEpoch::in_memory(1),
        )
        .unwrap_err();
        assert_eq!(e, SecureLinkError::WeakKey { peer: 2 });
    }

    #[test]
    fn the_claimed_route_is_read_from_sealed_and_plain_frames() {
        let l = links(2, 1);
        assert_eq!(claimed_route(&l[0].seal(2, b"x").unwrap()), Some((1, 2)));
        assert_eq!(claimed_route(&frame::encode(3, 1, b"y")), Some((3, 1)));
        assert_eq!(claimed_route(b"garbage"), None);
    }

    #[test]
    fn frames_sent_before_the_peers_epoch_was_known_are_sent_again_once() {
        let l = links(2, 1);
        let first = l[0].seal(2, b"vote for me").unwrap();
        assert_eq!(
            l[1].open(&first),
            Err(Rejected::StaleReceiverEpoch { from: 1 })
        );
        assert!(
            l[0].take_resend(2).is_empty(),
            "node 2's epoch not known yet"
        );
        assert_eq!(
            l[0].open(&l[1].seal(1, &[]).unwrap()),
            Ok(Opened::Hello { from: 2 })
        );
        let again = l[0].take_resend(2);
        assert_eq!(again, vec![b"vote for me".to_vec()]);
        assert!(l[0].take_resend(2).is_empty(), "each payload once");
        assert!(matches!(
            l[1].open(&l[0].seal(2, &again[0]).unwrap()),
            Ok(Opened::Message { .. })
        ));
    }

    #[test]
    fn hellos_are_rate_limited() {
        let l = links(2, 1);
        assert!(l[0].hello_due(2));
        assert!(!l[0].hello_due(2));
        assert!(!l[0].hello_due(7));
    }

    /// Bytes a sealed frame adds over the plain frame it replaces, and the time to seal and
    /// open one (printed; `cargo test --release -p ghatta --lib net::secure::seal::tests::
    /// overhead -- --nocapture` gives the figures in BENCHMARKS.md).
    #[test]
    fn overhead_bytes_per_frame_and_seal_open_time() {
        let l = links(2, 1);
        introduce(&l[0], &l[1]);
        for len in [0usize, 40, 100, 1000, 64 * 1024] {
            let payload = vec![0x5a; len];
            let plain = frame::encode(1, 2, &payload);
            let sealed = l[0].seal(2, &payload).unwrap();
            // Magic and version 2 + from, to, two epochs, counter (1 byte each here) + tag 16
            // = 23, instead of magic, version, from, to + CRC 4 = 8: 15 bytes more.
            assert_eq!(sealed.len() - plain.len(), 15, "{len}-byte payload");
        }
        // Counters grow to 2 bytes at 128 frames and 3 at 16,384 per peer and boot.
        for _ in 0..200 {
            l[0].seal(2, b"x").unwrap();
        }
        let sealed = l[0].seal(2, b"x").unwrap();
        assert_eq!(sealed.len() - frame::encode(1, 2, b"x").len(), 16);
        for len in [100usize, 1000] {
            let payload = vec![0x5a; len];
            let n: u32 = 1_000;
            let t = std::time::Instant::now();
            let frames: Vec<_> = (0..n).map(|_| l[0].seal(2, &payload).unwrap()).collect();
            let seal_us = t.elapsed().as_secs_f64() * 1e6 / f64::from(n);
            let t = std::time::Instant::now();
            for f in &frames {
                assert!(matches!(l[1].open(f), Ok(Opened::Message { .. })));
            }
            let open_us = t.elapsed().as_secs_f64() * 1e6 / f64::from(n);
            eprintln!("{len}-byte payload: seal {seal_us:.2} us, open {open_us:.2} us per frame");
        }
    }

    #[test]
    fn the_window_slides() {
        let mut w = ReplayWindow::default();
        assert_eq!(w.check(5), WindowVerdict::Fresh);
        w.accept(5);
        assert_eq!(w.check(5), WindowVerdict::Replayed);
        assert_eq!(w.check(4), WindowVerdict::Fresh);
        w.accept(5 + REPLAY_WINDOW);
        assert_eq!(w.check(5), WindowVerdict::OutOfWindow);
        assert_eq!(w.check(6), WindowVerdict::Fresh);
        w.accept(6);
        assert_eq!(w.check(6), WindowVerdict::Replayed);
        w.accept(10 * REPLAY_WINDOW);
        assert_eq!(w.check(10 * REPLAY_WINDOW - 1), WindowVerdict::Fresh);
        assert_eq!(w.check(5 + REPLAY_WINDOW), WindowVerdict::OutOfWindow);
    }
}
