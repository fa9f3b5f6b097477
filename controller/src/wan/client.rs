//! The uploader: on the leader, streams committed outbox records to the central in compressed
//! batches over an encrypted, mutually authenticated channel (`ghatta_proto::wan::channel`), several in flight, under a bandwidth cap, and commits the central's
//! acknowledged cursor through Raft (`Body::OutboxAck`) so any node resumes there.
//!
//! Resumption: each connection starts at max(committed cursor, last ack this process saw).
//! After a WAN drop, a crash or a leader change the next uploader starts at the committed
//! cursor, which may lag the central by what was acked but not yet committed: those records
//! are sent again and the central drops them as duplicates (idempotent by (grid, stream, seq)).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Mutex, mpsc, watch};
use tokio::time::Instant;

use super::connector::{Connector, TcpConnector};
use crate::net::secure::{PublicKey, SecretKey};
use crate::node::Node;
use crate::raft::Body;
use crate::state::OutboxRecord;
use ghatta_proto::outbox::Stream;
use ghatta_proto::wan::channel::{self, ChannelError};
use ghatta_proto::wan::{self as proto, AckBody, BatchBody, Msg};

/// Batches in flight per stream. At 800 ms RTT and 256 kbit/s (32 KB/s) the bandwidth-delay
/// product is ~26 KB; 8 compressed batches (8-16 KB each when full) keep the pipe full even on
/// a 2 s double-hop peak, while bounding what one link cut wastes.
pub const WINDOW_BATCHES: usize = 8;
/// Outbox records scanned per batch at most (also bounds one redb read).
pub const MAX_SCAN_PER_BATCH: usize = 4096;
/// No ack for this long with batches in flight: the link is dead or black-holed; reconnect.
/// 30 s covers a 2 s satellite peak plus a full window queued behind a 256 kbit/s cap.
pub const ACK_TIMEOUT: Duration = Duration::from_secs(30);
/// First wait after a failed connection; doubles up to [`BACKOFF_MAX`].
pub const BACKOFF_MIN: Duration = Duration::from_millis(500);
/// Longest wait between reconnection attempts: one SYN a minute costs nothing on the
/// satellite link, and an outage of hours is back in service within a minute of its end.
pub const BACKOFF_MAX: Duration = Duration::from_secs(60);
/// Longest a stream holds back, by default, a batch of no records, one that only moves its
/// cursor past records the other streams carry: such a range is sent with the stream's next
/// records, or alone after this long. The cursor matters only for pruning (a day after the central has a
/// record) and for the central's view of the grid's progress, so a minute's lag costs nothing,
/// while sending one at every look sent a batch, and committed an `OutboxAck`, per stream
/// every few seconds on a grid whose meters are read often (BENCHMARKS.md, "WAN uploader:
/// cursor-only batches"). Also well under the central's 15-minute idle limit.
pub const CURSOR_ONLY_EVERY: Duration = Duration::from_secs(60);
/// How often an idle uploader looks for new outbox records or a change of leadership.
pub const POLL_INTERVAL: Duration = Duration::from_millis(200);
/// Connecting to the central may take this long (TCP handshake over 1-2 s RTT, SYN retries).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// A session with nothing in flight and nothing to send for this long ends, and the next one
/// opens when the outbox has records again: below the central's 15-minute idle timeout
/// (`ghatta_central::IDLE_TIMEOUT`), so a quiet grid hangs up cleanly instead of being cut off
/// and counting an error, and an idle satellite link carries nothing at all.
pub const SESSION_IDLE_CLOSE: Duration = Duration::from_secs(10 * 60);

/// What the uploader needs to know.
#[derive(Debug, Clone)]
pub struct UploaderConfig {
    /// This grid's id at the central.
    pub grid: u64,
    /// The private key this uploader authenticates with (the grid's key, or this node's: the
    /// central lists the public half under the grid id).
    pub secret: SecretKey,
    /// The central's public key (`ghatta-central --key-file`'s public half): only a peer
    /// holding its private half can open what the uploader sends or ack anything.
    pub central_key: PublicKey,
    /// The central's batch listener (`ghatta-central --listen`), host:port: what
    /// [`Uploader::spawn`] connects to over TCP ([`Uploader::spawn_via`] takes any connector).
    pub central_addr: String,
    /// Bandwidth cap for all streams together, bytes/s (256 kbit/s = 32,000 B/s), so billing
    /// traffic does not starve the operators' other uses of the link. 0 = no cap.
    pub rate_bytes_per_s: u64,
    /// Batches in flight per stream.
    pub window_batches: usize,
    /// Uncompressed batch size limit.
    pub max_batch_raw_bytes: usize,
    /// Longest a stream holds back a batch of no records ([`CURSOR_ONLY_EVERY`] by default).
    pub cursor_only_every: Duration,
}

impl UploaderConfig {
    /// Defaults for a grid.
    pub fn new(
        grid: u64,
        secret: SecretKey,
        central_key: PublicKey,
        central_addr: impl Into<String>,
    ) -> Self {
        UploaderConfig {
            grid,
            secret,
            central_key,
            central_addr: central_addr.into(),
            rate_bytes_per_s: 0,
            window_batches: WINDOW_BATCHES,
            max_batch_raw_bytes: proto::MAX_BATCH_RAW_BYTES,
            cursor_only_every: CURSOR_ONLY_EVERY,
        }
    }
}

/// A token bucket shared by the streams: bytes/s with a burst of one full frame.
#[derive(Debug)]
pub struct TokenBucket {
    rate_bytes_per_s: u64,
    burst_bytes: f64,
    state: Mutex<(f64, Instant)>,
}

impl TokenBucket {
    /// A bucket; rate 0 means unlimited.
    pub fn new(rate_bytes_per_s: u64) -> Self {
        let burst_bytes = channel::sealed_len(proto::MAX_WAN_FRAME_BYTES) as f64;
        TokenBucket {
            rate_bytes_per_s,
            burst_bytes,
            // Start empty: a reconnect after an outage must not burst above the cap.
            state: Mutex::new((0.0, Instant::now())),
        }
    }

    /// Wait until `bytes` may be sent.
    pub async fn take(&self, bytes: usize) {
        if self.rate_bytes_per_s == 0 {
            return;
        }
        let rate = self.rate_bytes_per_s as f64;
        // Holding the lock while sleeping queues the streams fairly (FIFO mutex).
        let mut s = self.state.lock().await;
        let now = Instant::now();
        let (tokens, last) = *s;
        let mut tokens =
            (tokens + rate * now.duration_since(last).as_secs_f64()).min(self.burst_bytes);
        let need = bytes as f64;
        if tokens < need {
            let wait = Duration::from_secs_f64((need - tokens) / rate);
            tokio::time::sleep(wait).await;
            tokens = need;
        }
        *s = (tokens - need, Instant::now());
    }
}

/// Counters of one uploader (all streams).
#[derive(Debug, Default)]
pub struct UploadStats {
    /// Bytes written after the handshakes: sealed records with their length prefixes.
    pub bytes_sent: std::sync::atomic::AtomicU64,
    /// Batches written (retransmissions included).
    pub batches_sent: std::sync::atomic::AtomicU64,
    /// Records written (retransmissions included).
    pub records_sent: std::sync::atomic::AtomicU64,
    /// Batches written with no record: they only move the stream's cursor past records the
    /// other streams carry (retransmissions included).
    pub cursor_only_batches_sent: std::sync::atomic::AtomicU64,
    /// Connections that ended in an error.
    pub session_errors: std::sync::atomic::AtomicU64,
    /// Connections this uploader closed after [`SESSION_IDLE_CLOSE`] with nothing to send.
    pub sessions_idle_closed: std::sync::atomic::AtomicU64,
}

/// A running uploader; dropping it stops it (its tasks are aborted: like a crash).
pub struct Uploader {
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// Counters.
    pub stats: Arc<UploadStats>,
    acked: Vec<watch::Receiver<u64>>,
}

impl Drop for Uploader {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Uploader {
    /// Start uploading every stream of `node`'s outbox (active only while `node` leads), over
    /// TCP to `cfg.central_addr`.
    pub fn spawn(node: Node, cfg: UploaderConfig) -> Uploader {
        let tcp = Arc::new(TcpConnector::new(cfg.central_addr.clone()));
        Self::spawn_via(node, cfg, tcp)
    }

    /// As [`Uploader::spawn`], reaching the central through `connector` (the simulator's WAN
    /// link model, for one); `cfg.central_addr` is not used.
    pub fn spawn_via(node: Node, cfg: UploaderConfig, connector: Arc<dyn Connector>) -> Uploader {
        let cfg = Arc::new(cfg);
        let bucket = Arc::new(TokenBucket::new(cfg.rate_bytes_per_s));
        let stats = Arc::new(UploadStats::default());
        let mut tasks = Vec::new();
        let mut acked = Vec::new();
        for stream in Stream::ALL {
            let start = node.state_machine().outbox_ack(stream.id());
            let (tx, rx) = watch::channel(start);
            acked.push(rx.clone());
            tasks.push(tokio::spawn(commit_loop(node.clone(), stream, rx)));
            tasks.push(tokio::spawn(stream_loop(
                node.clone(),
                cfg.clone(),
                connector.clone(),
                stream,
                bucket.clone(),
                stats.clone(),
                tx,
            )));
        }
        Uploader {
            tasks,
            stats,
            acked,
        }
    }

    /// The highest cursor the central acknowledged to this uploader, per stream (in
    /// [`Stream::ALL`] order).
    pub fn acked(&self) -> Vec<u64> {
        self.acked.iter().map(|r| *r.borrow()).collect()
    }
}

/// Propose each new acknowledged cursor through Raft (`OutboxAck`).
async fn commit_loop(node: Node, stream: Stream, mut acked: watch::Receiver<u64>) {
    loop {
        let want = *acked.borrow_and_update();
        if want > node.state_machine().outbox_ack(stream.id()) {
            let body = Body::OutboxAck {
                stream: stream.id(),
                upto_seq: want,
            };
            // Sequence 0: not deduplicated; the ack is idempotent by itself (a monotonic max).
            if let Err(e) = node.propose_with_seq(0, body).await {
                tracing::debug!(stream = stream.id(), error = %e, "outbox ack not committed; will retry");
                tokio::time::sleep(POLL_INTERVAL).await;
                continue;
            }
        }
        if acked.changed().await.is_err() {
            return;
        }
    }
}

async fn stream_loop(
    node: Node,
    cfg: Arc<UploaderConfig>,
    connector: Arc<dyn Connector>,
    stream: Stream,
    bucket: Arc<TokenBucket>,
    stats: Arc<UploadStats>,
    acked: watch::Sender<u64>,
) {
    let mut backoff = BACKOFF_MIN;
    let mut held = CursorOnly::new(cfg.cursor_only_every);
    loop {
        if !node.is_leader() {
            tokio::time::sleep(POLL_INTERVAL).await;
            continue;
        }
        let start = node
            .state_machine()
            .outbox_ack(stream.id())
            .max(*acked.borrow());
        let acked_before = *acked.borrow();
        let link = Link {
            connector: connector.as_ref(),
            bucket: &bucket,
            stats: &stats,
        };
        let result = session(&node, &cfg, link, stream, &acked, start, &mut held).await;
        // A session whose acks moved the cursor proves the link works, however it ended: the
        // next attempt waits the shortest backoff. (Resetting only on a clean end let a link
        // that drops every few seconds push the wait to BACKOFF_MAX between sessions that each
        // made progress, so a flapping satellite link uploaded a few seconds a minute.)
        if *acked.borrow() > acked_before {
            backoff = BACKOFF_MIN;
        }
        match result {
            Ok(SessionEnd::NotLeader) => {}
            Ok(SessionEnd::Idle) => {
                stats
                    .sessions_idle_closed
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                backoff = BACKOFF_MIN;
                wait_for_records(&node, &cfg, stream, &acked).await;
            }
            Err(e) => {
                stats
                    .session_errors
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if matches!(
                    e,
                    proto::ProtoError::Channel(
                        ChannelError::Refused(_) | ChannelError::Handshake(_)
                    )
                ) {
                    // Configuration, not weather: say so loudly, keep retrying (the central
                    // may be fixed without restarting the grid).
                    tracing::warn!(stream = stream.id(), central = %connector.describe(), error = %e, ?backoff, "WAN upload refused");
                } else {
                    tracing::info!(stream = stream.id(), central = %connector.describe(), error = %e, ?backoff, "WAN upload interrupted; retrying");
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
        }
    }
}

/// After an idle close: wait, without a connection, until the outbox has something past the
/// acknowledged cursor (or leadership moves: the loop then waits as a follower).
async fn wait_for_records(
    node: &Node,
    cfg: &UploaderConfig,
    stream: Stream,
    acked: &watch::Sender<u64>,
) {
    loop {
        tokio::time::sleep(POLL_INTERVAL).await;
        if !node.is_leader() {
            return;
        }
        let from = node
            .state_machine()
            .outbox_ack(stream.id())
            .max(*acked.borrow());
        match crate::storage::blocking(|| next_batch(node, cfg, stream, from)) {
            Ok(None) => continue,
            // Records to send, or a read error the session will meet and report.
            Ok(Some(_)) | Err(_) => return,
        }
    }
}

/// Read the next batch of `stream` from the outbox, starting at `from`.
fn next_batch(
    node: &Node,
    cfg: &UploaderConfig,
    stream: Stream,
    from: u64,
) -> std::io::Result<Option<BatchBody>> {
    let scanned: Vec<(u64, OutboxRecord)> =
        node.state_machine().outbox_from(from, MAX_SCAN_PER_BATCH)?;
    let Some(last) = scanned.last().map(|(s, _)| *s) else {
        return Ok(None);
    };
    let mut body = BatchBody {
        stream: stream.id(),
        first_seq: from,
        end_seq: last + 1,
        records: Vec::new(),
    };
    let mut raw_bytes = 0usize;
    for (seq, rec) in scanned {
        if !stream.carries(&rec) {
            continue;
        }
        // Rough per-record size (bincode adds a few bytes of varints).
        let size = rec.output.len() + 24;
        if raw_bytes + size > cfg.max_batch_raw_bytes && !body.records.is_empty() {
            body.end_seq = seq;
            break;
        }
        raw_bytes += size;
        body.records.push((seq, rec));
    }
    Ok(Some(body))
}

/// What one session sends through: the way to the central and what its streams share.
#[derive(Clone, Copy)]
struct Link<'a> {
    connector: &'a dyn Connector,
    bucket: &'a TokenBucket,
    stats: &'a UploadStats,
}

/// How a session ended without an error.
enum SessionEnd {
    /// This node no longer leads.
    NotLeader,
    /// Nothing in flight and nothing to send for [`SESSION_IDLE_CLOSE`].
    Idle,
}

/// One connection: send windows of batches, read acks (each one moves `acked`). Returns how it
/// ended cleanly (leadership lost, idle), or an error when the link failed.
async fn session(
    node: &Node,
    cfg: &UploaderConfig,
    link: Link<'_>,
    stream: Stream,
    acked: &watch::Sender<u64>,
    start: u64,
    held: &mut CursorOnly,
) -> Result<SessionEnd, proto::ProtoError> {
    use std::sync::atomic::Ordering::Relaxed;
    let Link {
        connector,
        bucket,
        stats,
    } = link;
    let (mut rd, mut wr) = tokio::time::timeout(CONNECT_TIMEOUT, connector.connect())
        .await
        .map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!(
                    "connecting to {} timed out after {CONNECT_TIMEOUT:?}",
                    connector.describe()
                ),
            )
        })??;
    let handshake = channel::connect(&mut rd, &mut wr, &cfg.secret, &cfg.central_key, cfg.grid);
    let (mut sealer, mut opener) = tokio::time::timeout(CONNECT_TIMEOUT, handshake)
        .await
        .map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("handshake with {} timed out", connector.describe()),
            )
        })??;
    // Acks are read by their own task: read_exact is not cancel-safe inside a select.
    let (ack_tx, mut ack_rx) = mpsc::channel::<Result<Vec<u8>, ChannelError>>(64);
    let reader = tokio::spawn(async move {
        loop {
            let r = opener.read_frame(&mut rd).await;
            let stop = r.is_err();
            if ack_tx.send(r).await.is_err() || stop {
                return;
            }
        }
    });
    struct AbortOnDrop(tokio::task::JoinHandle<()>);
    impl Drop for AbortOnDrop {
        fn drop(&mut self) {
            self.0.abort();
        }
    }
    let _reader = AbortOnDrop(reader);

    let mut next_send = start;
    let mut in_flight: VecDeque<(u64, u64)> = VecDeque::new();
    let mut last_progress = Instant::now();
    let mut idle_since = Instant::now();
    held.new_session();
    loop {
        if !node.is_leader() {
            return Ok(SessionEnd::NotLeader);
        }
        let mut drained = false;
        while in_flight.len() < cfg.window_batches.max(1) {
            let batch = crate::storage::blocking(|| next_batch(node, cfg, stream, next_send))?;
            let batch = match batch {
                Some(b) if b.records.is_empty() => {
                    // Only the other streams' records: scan on, and send the range later.
                    held.hold(b.first_seq, Instant::now());
                    next_send = b.end_seq;
                    continue;
                }
                Some(mut b) => {
                    b.first_seq = held.take().unwrap_or(b.first_seq);
                    b
                }
                None => match held.due(Instant::now()) {
                    Some(from) => {
                        held.take();
                        BatchBody {
                            stream: stream.id(),
                            first_seq: from,
                            end_seq: next_send,
                            records: Vec::new(),
                        }
                    }
                    None => {
                        drained = true;
                        break;
                    }
                },
            };
            let frame = proto::encode_batch(cfg.grid, &batch)?;
            bucket.take(channel::sealed_len(frame.len())).await;
            let wrote = sealer.write_frame(&mut wr, &frame).await?;
            stats.bytes_sent.fetch_add(wrote as u64, Relaxed);
            stats.batches_sent.fetch_add(1, Relaxed);
            if batch.records.is_empty() {
                stats.cursor_only_batches_sent.fetch_add(1, Relaxed);
            }
            stats
                .records_sent
                .fetch_add(batch.records.len() as u64, Relaxed);
            if in_flight.is_empty() {
                last_progress = Instant::now();
            }
            in_flight.push_back((batch.first_seq, batch.end_seq));
            next_send = batch.end_seq;
        }
        if !(drained && in_flight.is_empty()) {
            idle_since = Instant::now();
        } else if idle_since.elapsed() >= SESSION_IDLE_CLOSE {
            return Ok(SessionEnd::Idle);
        }
        if !in_flight.is_empty() && last_progress.elapsed() > ACK_TIMEOUT {
            return Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("{} sent no ack for {ACK_TIMEOUT:?}", connector.describe()),
            )
            .into());
        }
        let frame = tokio::select! {
            f = ack_rx.recv() => f,
            _ = tokio::time::sleep(POLL_INTERVAL) => continue,
        };
        let Some(frame) = frame else {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "ack reader stopped",
            )
            .into());
        };
        let msg = proto::decode(&frame?, cfg.grid)?;
        let Msg::Ack { body, .. } = msg else {
            return Err(proto::ProtoError::Body(
                "central sent a batch, not an ack".into(),
            ));
        };
        let sent_to = next_send;
        handle_ack(body, stream, acked, &mut in_flight, &mut next_send)?;
        if next_send != sent_to {
            held.rescan();
        }
        last_progress = Instant::now();
    }
}

/// A range of the outbox holding only other streams' records, not sent yet: it goes with
/// the stream's next batch of records (which then starts at the range), or alone once the
/// stream has held one for `every` (`UploaderConfig::cursor_only_every`). Logic only: the
/// caller passes the time in. The range is the session's (a new one scans again from the
/// committed cursor), but the time it has been held outlives the session: on a link that
/// breaks every few seconds the range would otherwise never wait long enough to go, and the
/// cursor would stop.
#[derive(Debug)]
struct CursorOnly {
    every: Duration,
    /// Where this session's held range starts.
    from: Option<u64>,
    /// Since when the stream holds a range, across sessions.
    since: Option<Instant>,
}

impl CursorOnly {
    fn new(every: Duration) -> Self {
        CursorOnly {
            every,
            from: None,
            since: None,
        }
    }

    /// A new session: its range starts where it finds one.
    fn new_session(&mut self) {
        self.from = None;
    }

    /// Holds the range from `from` on (kept from its first start if one is held already).
    fn hold(&mut self, from: u64, now: Instant) {
        self.from.get_or_insert(from);
        self.since.get_or_insert(now);
    }

    /// Where the held range starts, if it has waited long enough to go alone.
    fn due(&self, now: Instant) -> Option<u64> {
        let since = self.since?;
        self.from
            .filter(|_| now.duration_since(since) >= self.every)
    }

    /// Where the held range starts, letting it go with a batch.
    fn take(&mut self) -> Option<u64> {
        self.since = None;
        self.from.take()
    }

    /// The uploader went back: it scans the range again (the wait goes on).
    fn rescan(&mut self) {
        self.from = None;
    }
}

fn handle_ack(
    ack: AckBody,
    stream: Stream,
    acked: &watch::Sender<u64>,
    in_flight: &mut VecDeque<(u64, u64)>,
    next_send: &mut u64,
) -> Result<(), proto::ProtoError> {
    if ack.stream != stream.id() {
        return Err(proto::ProtoError::Body(format!(
            "central acked stream {} on the stream-{} connection",
            ack.stream,
            stream.id()
        )));
    }
    acked.send_if_modified(|v| {
        if ack.next_seq > *v {
            *v = ack.next_seq;
            true
        } else {
            false
        }
    });
    if ack.gap {
        // Go back N, but only for a batch still in flight: the gap acks of batches sent
        // before an earlier go-back are stale.
        if in_flight.iter().any(|(f, _)| *f == ack.batch_first_seq) {
            in_flight.clear();
            *next_send = ack.next_seq;
        }
    } else {
        while in_flight
            .front()
            .is_some_and(|(_, end)| *end <= ack.next_seq)
        {
            in_flight.pop_front();
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_only_range_goes_with_records_or_alone_after_its_wait_across_sessions() {
        let t0 = Instant::now();
        let every = CURSOR_ONLY_EVERY;
        let mut c = CursorOnly::new(every);
        assert_eq!(c.due(t0 + every * 2), None, "nothing held");
        c.hold(10, t0);
        c.hold(20, t0 + Duration::from_secs(5));
        assert_eq!(c.due(t0 + every - Duration::from_millis(1)), None);
        assert_eq!(c.due(t0 + every), Some(10), "from its first start");
        // A session broke before it went: the next one finds its range anew, but the wait
        // counts from the first hold.
        c.new_session();
        assert_eq!(c.due(t0 + every), None, "no range in this session yet");
        c.hold(15, t0 + every);
        assert_eq!(c.due(t0 + every), Some(15));
        // It goes with a batch of records: nothing held, the wait starts again.
        assert_eq!(c.take(), Some(15));
        c.hold(30, t0 + every * 2);
        assert_eq!(c.due(t0 + every * 2 + Duration::from_secs(1)), None);
        // A go-back scans it again, still waiting since its first hold.
        c.rescan();
        c.hold(25, t0 + every * 3);
        assert_eq!(c.due(t0 + every * 3), Some(25));
    }
}
