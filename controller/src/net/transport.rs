//! The link abstraction the node talks through: best-effort delivery of frames to a peer.
//!
//! A transport may drop, delay, duplicate or reorder frames (the simulator does all of that on
//! purpose; a radio does it by nature); the RPC layer above copes with deadlines and openraft
//! retries. Received frames go into the node's inbound queue as raw bytes; the RPC layer
//! verifies them.

use std::sync::Arc;
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

/// Bytes of frames waiting in one inbound queue. Frames are queued before they are opened
/// (sealing sits between this queue and the dispatcher), so a stranger's frames wait here
/// too: 4,096 frames of up to 2 MiB (`tcp::TCP_FRAME_BYTES_MAX`) would be 8 GiB. 16 MiB holds
/// what members send in one burst (appends paced to ~1 MiB, a few in flight per peer,
/// snapshot chunks of 64 KiB) and is an eighth of the unit's `MemoryMax`; past it frames
/// are dropped and counted like a full queue's.
pub const INBOUND_QUEUE_BYTES_MAX: usize = 16 << 20;

/// The sending half of the inbound queue, handed to transports: bounded in frames
/// ([`INBOUND_QUEUE_FRAMES`]) and in bytes ([`INBOUND_QUEUE_BYTES_MAX`]).
#[derive(Debug, Clone)]
pub struct InboundTx {
    tx: mpsc::Sender<Vec<u8>>,
    bytes: Arc<tokio::sync::Semaphore>,
}

/// The receiving half, read by the RPC dispatcher.
#[derive(Debug)]
pub struct InboundRx {
    rx: mpsc::Receiver<Vec<u8>>,
    bytes: Arc<tokio::sync::Semaphore>,
}

/// A frame the inbound queue did not take: it is full (in frames or bytes) or closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the inbound queue is full or closed; the frame is dropped")]
pub struct NotQueued;

/// Permits a frame of `len` bytes takes (all of the budget at most, so any frame fits an
/// empty queue).
fn permits(len: usize) -> u32 {
    len.min(INBOUND_QUEUE_BYTES_MAX) as u32
}

impl InboundTx {
    /// Queues a frame if there is room; never waits.
    pub fn try_send(&self, frame: Vec<u8>) -> Result<(), NotQueued> {
        let n = permits(frame.len());
        let permit = self.bytes.try_acquire_many(n).map_err(|_| NotQueued)?;
        self.tx.try_send(frame).map_err(|_| NotQueued)?;
        // Given back by the receiver when it takes the frame.
        permit.forget();
        Ok(())
    }

    /// Queues a frame, waiting for room.
    pub async fn send(&self, frame: Vec<u8>) -> Result<(), NotQueued> {
        let n = permits(frame.len());
        let permit = self.bytes.acquire_many(n).await.map_err(|_| NotQueued)?;
        self.tx.send(frame).await.map_err(|_| NotQueued)?;
        permit.forget();
        Ok(())
    }
}

impl InboundRx {
    /// The next frame; `None` once every sender is gone.
    pub async fn recv(&mut self) -> Option<Vec<u8>> {
        let frame = self.rx.recv().await?;
        self.bytes.add_permits(permits(frame.len()) as usize);
        Some(frame)
    }
}

/// A new inbound queue.
pub fn inbound_queue() -> (InboundTx, InboundRx) {
    let (tx, rx) = mpsc::channel(INBOUND_QUEUE_FRAMES);
    let bytes = Arc::new(tokio::sync::Semaphore::new(INBOUND_QUEUE_BYTES_MAX));
    (
        InboundTx {
            tx,
            bytes: bytes.clone(),
        },
        InboundRx { rx, bytes },
    )
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_inbound_queue_is_bounded_in_bytes_and_frees_them_as_frames_are_taken() {
        let (tx, mut rx) = inbound_queue();
        let big = 2 << 20;
        for _ in 0..INBOUND_QUEUE_BYTES_MAX / big {
            tx.try_send(vec![0; big]).expect("room");
        }
        // A stranger's ninth maximal frame is dropped, though the queue has frames to spare.
        assert_eq!(tx.try_send(vec![0; big]), Err(NotQueued));
        assert_eq!(tx.try_send(vec![0; 1]), Err(NotQueued));
        assert_eq!(rx.recv().await.map(|f| f.len()), Some(big));
        tx.try_send(vec![0; big]).expect("room again");
        // A frame longer than the whole budget still fits an empty queue.
        let (tx, mut rx) = inbound_queue();
        tx.send(vec![0; INBOUND_QUEUE_BYTES_MAX + 1]).await.unwrap();
        assert!(rx.recv().await.is_some());
        tx.send(vec![0; 10]).await.unwrap();
    }
}
