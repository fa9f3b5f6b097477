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
use ghatta_proto::frame::MIN_FRAME_BYTES;

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
/// Longest frame a TCP peer may declare. What a member sends is at most an append of
/// `rpc::network::APPEND_BYTES_MAX` (1 MiB) of entries, each one proposal bounded by
/// `node::proposer::PROPOSAL_INPUT_BYTES_MAX`, with headers and the seal, or a 64 KiB
/// snapshot chunk; 2 MiB leaves room for both. Anything longer is not from a member, and the
/// connection is dropped before any of it is read (the codec's own 16 MiB limit is for
/// decoding, not for what a stranger may make this node hold).
pub const TCP_FRAME_BYTES_MAX: usize = 2 * 1024 * 1024;
/// Bytes read into a frame at a time: a declared length costs memory only as its bytes
/// arrive, so a peer that declares 2 MiB and sends ten bytes holds ten bytes, not 2 MiB.
const READ_CHUNK_BYTES: usize = 64 * 1024;
/// A frame's bytes must all arrive within this after its length: a 2 MiB append over a
/// 1 Mbit/s Wi-Fi link takes 17 s. A connection that stops mid-frame is closed, so a
/// half-sent frame cannot hold its buffer for ever.
pub const FRAME_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// An inbound connection that brings no frame for this long is closed. Followers talk to
/// each other only in elections, so a member's connection may legitimately idle for long;
/// closing it costs that member one reconnect when it next sends. Five minutes keeps a
/// stranger's idle connections from holding the [`MAX_INBOUND_CONNECTIONS`] slots.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(300);
/// Inbound connections from one address at once. A member holds one (two while it
/// reconnects); several members can share an address (behind NAT, or on one test machine).
/// The cap keeps one stranger from taking every one of [`MAX_INBOUND_CONNECTIONS`].
pub const MAX_INBOUND_PER_ADDRESS: usize = 16;
/// Bytes of frames being read, over all inbound connections, before any of them is checked:
/// what a stranger can make this node hold at most, whatever lengths it declares and however
/// many connections it opens. A member's largest frame (an append, 1 MiB) fits eight times;
/// a flood from one address can take only its share ([`INBOUND_BUFFER_BYTES_PER_ADDRESS`]).
pub const INBOUND_BUFFER_BYTES_MAX: usize = 8 * 1024 * 1024;
/// One address's share of [`INBOUND_BUFFER_BYTES_MAX`]: half, so a stranger at one address
/// can never take the room the members' frames need (a member's largest frame, 1 MiB, fits
/// four times).
pub const INBOUND_BUFFER_BYTES_PER_ADDRESS: usize = INBOUND_BUFFER_BYTES_MAX / 2;

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
        if frame.len() > TCP_FRAME_BYTES_MAX {
            // The peer would drop the connection on reading its length, and the writer would
            // send it again after every reconnect: the link would be dead for good.
            tracing::warn!(
                to,
                bytes = frame.len(),
                "a frame longer than TCP_FRAME_BYTES_MAX was dropped; please report this"
            );
            LinkStats::add(&self.stats.send_dropped, 1);
            return;
        }
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

/// What the acceptor shares with its readers: how many connections each address holds, and
/// the bytes of frames being read before anything about them is known.
struct Inbound {
    tx: InboundTx,
    stats: Arc<LinkStats>,
    /// Per address: open connections, and that address's share of the budget.
    per_address: Mutex<HashMap<std::net::IpAddr, (usize, Arc<tokio::sync::Semaphore>)>>,
    buffered: Arc<tokio::sync::Semaphore>,
}

async fn accept_loop(listener: TcpListener, inbound: InboundTx, stats: Arc<LinkStats>) {
    let open = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let shared = Arc::new(Inbound {
        tx: inbound,
        stats,
        per_address: Mutex::new(HashMap::new()),
        buffered: Arc::new(tokio::sync::Semaphore::new(INBOUND_BUFFER_BYTES_MAX)),
    });
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
        let share = {
            let mut per = shared.per_address.lock().unwrap_or_else(|e| e.into_inner());
            let (n, share) = per.entry(peer.ip()).or_insert_with(|| {
                (
                    0,
                    Arc::new(tokio::sync::Semaphore::new(
                        INBOUND_BUFFER_BYTES_PER_ADDRESS,
                    )),
                )
            });
            if *n >= MAX_INBOUND_PER_ADDRESS {
                tracing::debug!(%peer, "refusing connection: {MAX_INBOUND_PER_ADDRESS} already open from this address");
                continue;
            }
            *n += 1;
            share.clone()
        };
        open.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (shared, open) = (shared.clone(), open.clone());
        readers.spawn(async move {
            if let Err(e) = read_frames(stream, &shared, &share).await {
                tracing::debug!(%peer, error = %e, "inbound connection closed");
            }
            open.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
            let mut per = shared.per_address.lock().unwrap_or_else(|e| e.into_inner());
            if let Some((n, _)) = per.get_mut(&peer.ip()) {
                *n -= 1;
                if *n == 0 {
                    per.remove(&peer.ip());
                }
            }
        });
    }
}

/// Budget paid for a frame being read: its address's share and the node's total, returned
/// when the frame is handed on (or the connection drops).
struct Paid {
    share: tokio::sync::OwnedSemaphorePermit,
    total: tokio::sync::OwnedSemaphorePermit,
}

/// Reads a frame body of `len` bytes, growing the buffer as bytes arrive; each chunk is paid
/// for first from the sender address's `share`, then from the node's `total`.
async fn read_frame_body(
    stream: &mut TcpStream,
    len: usize,
    share: &Arc<tokio::sync::Semaphore>,
    total: &Arc<tokio::sync::Semaphore>,
) -> std::io::Result<(Vec<u8>, Option<Paid>)> {
    let closed = |_| std::io::Error::other("the inbound budget is closed");
    let mut buf = Vec::with_capacity(len.min(READ_CHUNK_BYTES));
    let mut paid: Option<Paid> = None;
    while buf.len() < len {
        let want = (len - buf.len()).min(READ_CHUNK_BYTES);
        // `want` is at most READ_CHUNK_BYTES, so the casts cannot truncate.
        let chunk = Paid {
            share: share
                .clone()
                .acquire_many_owned(want as u32)
                .await
                .map_err(closed)?,
            total: total
                .clone()
                .acquire_many_owned(want as u32)
                .await
                .map_err(closed)?,
        };
        match &mut paid {
            Some(p) => {
                p.share.merge(chunk.share);
                p.total.merge(chunk.total);
            }
            None => paid = Some(chunk),
        }
        let n = (&mut *stream)
            .take(want as u64)
            .read_to_end(&mut buf)
            .await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
    }
    Ok((buf, paid))
}

async fn read_frames(
    mut stream: TcpStream,
    shared: &Inbound,
    share: &Arc<tokio::sync::Semaphore>,
) -> std::io::Result<()> {
    let stats = &shared.stats;
    let _ = stream.set_nodelay(true);
    let timed_out =
        |what: &str| std::io::Error::new(std::io::ErrorKind::TimedOut, what.to_string());
    loop {
        let mut len = [0u8; 4];
        tokio::time::timeout(IDLE_TIMEOUT, stream.read_exact(&mut len))
            .await
            .map_err(|_| timed_out("idle connection closed"))??;
        let len = u32::from_be_bytes(len) as usize;
        if !(MIN_FRAME_BYTES..=TCP_FRAME_BYTES_MAX).contains(&len) {
            // A length we will never accept means the stream is out of sync or hostile:
            // drop the connection rather than allocate.
            LinkStats::add(&stats.rejected, 1);
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("frame length {len} out of range"),
            ));
        }
        let (buf, _paid) = tokio::time::timeout(
            FRAME_READ_TIMEOUT,
            read_frame_body(&mut stream, len, share, &shared.buffered),
        )
        .await
        .map_err(|_| timed_out("a frame's bytes did not arrive in time"))??;
        LinkStats::add(&stats.bytes_received, len as u64 + 4);
        if shared.tx.try_send(buf).is_err() {
            LinkStats::add(&stats.rejected, 1);
        }
    }
}
