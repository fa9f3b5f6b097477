//! The link abstraction the node talks through: best-effort delivery of frames to a peer.
//!
//! A transport may drop, delay, duplicate or reorder frames (the simulator does all of that on
//! purpose; a radio does it by nature); the RPC layer above copes with deadlines and openraft
//! retries. Received frames go into the node's inbound queue as raw bytes; the RPC layer
//! verifies them.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;
use tokio::sync::mpsc;

/// Frames waiting to be handled by the node. 4,096 frames: a burst of heartbeats and append
/// responses from a few peers is tens of frames; a full queue drops (and counts) the excess
/// rather than letting a flood grow memory without bound.
pub const INBOUND_QUEUE_FRAMES: usize = 4096;

/// Where frames go to, and come in from.
pub trait Transport: Send + Sync + 'static {
    /// Queue an encoded frame for `to`. Never blocks; drops (and counts) when the link's
    /// queue is full or the peer is unknown.
    fn send(&self, to: u64, frame: Vec<u8>);

    /// Tell the transport how to reach a peer (address from the membership or config).
    /// Transports that route otherwise (the simulator) ignore it.
    fn set_peer_addr(&self, _peer: u64, _addr: &str) {}

    /// Stop the transport's tasks and release its sockets (the node is shutting down).
    fn shutdown(&self) {}

    /// The sealing layer's counters, when this transport seals its frames
    /// ([`SealedTransport`](super::secure::SealedTransport)); `None` for a plain link.
    fn security(&self) -> Option<super::secure::SealStatsSnapshot> {
        None
    }

    /// Whether this transport can seal frames to `peer`: `Some(false)` when it seals and holds
    /// no key for it (every frame to it would be dropped), `None` for a plain link.
    fn seals_to(&self, _peer: u64) -> Option<bool> {
        None
    }

    /// The sealing layer above says that `frame`, exactly as this transport delivered it,
    /// opened under `from`'s key. A link that picks among paths by what it hears
    /// (`radio::multi`) may then trust the path the frame came on; others ignore it.
    fn frame_opened(&self, _from: u64, _frame: &[u8]) {}

    /// The counters of the radio modems under this transport (`[[radio]]`), one per modem;
    /// empty for a transport without radios. Garbage, bad CRCs and lost fragments on a radio
    /// are dropped there, below the frame layer, so [`LinkStats::rejected`] never sees them.
    fn radios(&self) -> Vec<super::radio::RadioLinkSnapshot> {
        Vec::new()
    }

    /// The bit rate a frame to `peer` goes out at, when it is slow enough for a frame's air
    /// time to count in an RPC's deadline (a serial radio); `None` for a fast link.
    fn bitrate_bps(&self, _peer: u64) -> Option<u64> {
        None
    }
}

/// The sending half of the inbound queue, handed to transports.
pub type InboundTx = mpsc::Sender<Vec<u8>>;
/// The receiving half, read by the RPC dispatcher.
pub type InboundRx = mpsc::Receiver<Vec<u8>>;

/// A new inbound queue.
pub fn inbound_queue() -> (InboundTx, InboundRx) {
    mpsc::channel(INBOUND_QUEUE_FRAMES)
}

/// Counters every link layer keeps (monotonic; shown by `status`).
#[derive(Debug, Default)]
pub struct LinkStats {
    /// Frames sent.
    pub frames_sent: AtomicU64,
    /// Bytes sent.
    pub bytes_sent: AtomicU64,
    /// Frames received and accepted by the frame layer.
    pub frames_received: AtomicU64,
    /// Bytes received.
    pub bytes_received: AtomicU64,
    /// Frames dropped on send (queue full, peer unknown, link down).
    pub send_dropped: AtomicU64,
    /// Frames refused on receive (CRC, magic, version, size, not for us, undecodable) by the
    /// frame layer. What a radio drops (garbage, bad CRC, lost fragments) never reaches it:
    /// see `radio` in the status; replays are dropped by sealing (`security.replayed`).
    pub rejected: AtomicU64,
    /// Connections (re)established.
    pub connects: AtomicU64,
}

/// A point-in-time copy of [`LinkStats`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct LinkStatsSnapshot {
    /// Frames sent.
    pub frames_sent: u64,
    /// Bytes sent.
    pub bytes_sent: u64,
    /// Frames received.
    pub frames_received: u64,
    /// Bytes received.
    pub bytes_received: u64,
    /// Frames dropped on send.
    pub send_dropped: u64,
    /// Frames refused on receive.
    pub rejected: u64,
    /// Connections established.
    pub connects: u64,
}

impl LinkStats {
    /// Copy the counters.
    pub fn snapshot(&self) -> LinkStatsSnapshot {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        LinkStatsSnapshot {
            frames_sent: g(&self.frames_sent),
            bytes_sent: g(&self.bytes_sent),
            frames_received: g(&self.frames_received),
            bytes_received: g(&self.bytes_received),
            send_dropped: g(&self.send_dropped),
            rejected: g(&self.rejected),
            connects: g(&self.connects),
        }
    }

    /// Add `n` to a counter.
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}
