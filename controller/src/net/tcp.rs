//! TCP transport for Wi-Fi and LAN links: one outgoing connection per peer, each frame sent
//! with a 4-byte big-endian length prefix; inbound connections only ever deliver frames.
//!
//! Responses travel back over the responder's own outgoing connection, so each side owns the
//! connection it writes to and reconnects it on its own, with exponential backoff. No HTTP
//! stack is involved in Raft traffic.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt, BufWriter};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use super::transport::{InboundTx, LinkStats, Transport};
use ghatta_proto::frame::{MAX_FRAME_BYTES, MIN_FRAME_BYTES};

/// Frames queued per peer while its connection is down or slow. 1,024 frames of heartbeats and
/// appends is minutes of traffic; beyond that old frames are worthless and new ones are dropped.
pub const OUTBOUND_QUEUE_FRAMES: usize = 1024;
/// First reconnect delay.
pub const RECONNECT_BACKOFF_MIN: Duration = Duration::from_millis(100);
/// Longest reconnect delay: a peer that is down is retried at least this often.
pub const RECONNECT_BACKOFF_MAX: Duration = Duration::from_secs(5);
/// Give up a connection attempt after this long.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Inbound connections accepted at once; more are refused. A cluster has a handful of peers;
/// the cap stops a scan or a flood from exhausting file descriptors.
pub const MAX_INBOUND_CONNECTIONS: usize = 64;

struct Peer {
    tx: mpsc::Sender<Vec<u8>>,
    addr: Arc<Mutex<String>>,
    writer: tokio::task::JoinHandle<()>,
}

/// The TCP transport of one node.
pub struct TcpTransport {
    peers: Mutex<HashMap<u64, Peer>>,
    stats: Arc<LinkStats>,
    acceptor: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl std::fmt::Debug for TcpTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcpTransport").finish_non_exhaustive()
    }
}

impl TcpTransport {
    /// Listen on `listener` (already bound, so the caller reports bind errors with the config
    /// key) and deliver every received frame to `inbound`.
    pub fn start(listener: TcpListener, inbound: InboundTx) -> Arc<Self> {
        let t = Arc::new(TcpTransport {
            peers: Mutex::new(HashMap::new()),
            stats: Arc::default(),
            acceptor: Mutex::new(None),
        });
        let acceptor = tokio::spawn(accept_loop(listener, inbound, t.stats.clone()));
        if let Ok(mut a) = t.acceptor.lock() {
            *a = Some(acceptor);
        }
        t
    }

    /// Link counters.
    pub fn stats(&self) -> &Arc<LinkStats> {
        &self.stats
    }

    fn peer_tx(&self, to: u64) -> Option<mpsc::Sender<Vec<u8>>> {
        self.peers.lock().ok()?.get(&to).map(|p| p.tx.clone())
    }
}

impl Transport for TcpTransport {
    fn send(&self, to: u64, frame: Vec<u8>) {
        match self.peer_tx(to) {
            Some(tx) => {
                if tx.try_send(frame).is_err() {
                    LinkStats::add(&self.stats.send_dropped, 1);
                }
            }
            None => LinkStats::add(&self.stats.send_dropped, 1),
        }
    }

    fn set_peer_addr(&self, peer: u64, addr: &str) {
        let Ok(mut peers) = self.peers.lock() else {
            return;
        };
        if let Some(p) = peers.get(&peer) {
            if let Ok(mut a) = p.addr.lock()
                && *a != addr
            {
                *a = addr.to_string();
            }
            return;
        }
        let (tx, rx) = mpsc::channel(OUTBOUND_QUEUE_FRAMES);
        let addr = Arc::new(Mutex::new(addr.to_string()));
        let writer = tokio::spawn(writer_loop(peer, addr.clone(), rx, self.stats.clone()));
        peers.insert(peer, Peer { tx, addr, writer });
    }

    fn shutdown(&self) {
        if let Ok(mut a) = self.acceptor.lock()
            && let Some(h) = a.take()
        {
            h.abort();
        }
        if let Ok(mut peers) = self.peers.lock() {
            for (_, p) in peers.drain() {
                p.writer.abort();
            }
        }
    }
}

async fn writer_loop(
    peer: u64,
    addr: Arc<Mutex<String>>,
    mut rx: mpsc::Receiver<Vec<u8>>,
    stats: Arc<LinkStats>,
) {
    let mut backoff = RECONNECT_BACKOFF_MIN;
    // A frame taken from the queue but not yet written survives a reconnect.
    let mut pending: Option<Vec<u8>> = None;
    loop {
        let target = addr.lock().map(|a| a.clone()).unwrap_or_default();
        let stream = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&target)).await
        {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                tracing::debug!(peer, %target, error = %e, "connect failed; retrying in {backoff:?}");
                if rx.is_closed() {
                    return;
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(RECONNECT_BACKOFF_MAX);
                continue;
            }
            Err(_) => {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(RECONNECT_BACKOFF_MAX);
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        LinkStats::add(&stats.connects, 1);
        backoff = RECONNECT_BACKOFF_MIN;
        let mut w = BufWriter::new(stream);
        loop {
            let frame = match pending.take() {
                Some(f) => f,
                None => match rx.recv().await {
                    Some(f) => f,
                    None => return,
                },
            };
            let len = (frame.len() as u32).to_be_bytes();
            let res = async {
                w.write_all(&len).await?;
                w.write_all(&frame).await?;
                // Flush only when nothing else is queued: batches bursts into few segments.
                if rx.is_empty() {
                    w.flush().await?;
                }
                Ok::<_, std::io::Error>(())
            }
            .await;
            match res {
                Ok(()) => {
                    LinkStats::add(&stats.frames_sent, 1);
                    LinkStats::add(&stats.bytes_sent, frame.len() as u64 + 4);
                }
                Err(e) => {
                    tracing::debug!(peer, error = %e, "connection lost; reconnecting");
                    pending = Some(frame);
                    break;
                }
            }
        }
    }
}

async fn accept_loop(listener: TcpListener, inbound: InboundTx, stats: Arc<LinkStats>) {
    let open = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    // Readers live in a JoinSet owned by this task: aborting the acceptor (node shutdown)
    // drops the set, which aborts every reader and closes its socket, so peers notice and
    // reconnect to whatever listens next on this address.
    let mut readers = tokio::task::JoinSet::new();
    loop {
        while readers.try_join_next().is_some() {}
        let (stream, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        if open.load(std::sync::atomic::Ordering::Relaxed) >= MAX_INBOUND_CONNECTIONS {
            tracing::warn!(%peer, "refusing connection: {MAX_INBOUND_CONNECTIONS} already open");
            continue;
        }
        open.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (inbound, stats, open) = (inbound.clone(), stats.clone(), open.clone());
        readers.spawn(async move {
            if let Err(e) = read_frames(stream, &inbound, &stats).await {
                tracing::debug!(%peer, error = %e, "inbound connection closed");
            }
            open.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        });
    }
}

async fn read_frames(
    mut stream: TcpStream,
    inbound: &InboundTx,
    stats: &LinkStats,
) -> std::io::Result<()> {
    let _ = stream.set_nodelay(true);
    loop {
        let mut len = [0u8; 4];
        stream.read_exact(&mut len).await?;
        let len = u32::from_be_bytes(len) as usize;
        if !(MIN_FRAME_BYTES..=MAX_FRAME_BYTES).contains(&len) {
            // A length we will never accept means the stream is out of sync or hostile:
            // drop the connection rather than allocate.
            LinkStats::add(&stats.rejected, 1);
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("frame length {len} out of range"),
            ));
        }
        let mut buf = vec![0u8; len];
        stream.read_exact(&mut buf).await?;
        LinkStats::add(&stats.bytes_received, len as u64 + 4);
        if inbound.try_send(buf).is_err() {
            LinkStats::add(&stats.rejected, 1);
        }
    }
}
