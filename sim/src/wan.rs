//! A satellite WAN link as a TCP connection experiences it, in simulated time: connections are
//! ordered, reliable byte pipes (both directions) whose bytes arrive a one-way latency after
//! they were serialised at the link's line rate, and which break when the link drops.
//!
//! Why not [`crate::net::SimNet`]: SimNet carries datagrams between node ids; the WAN
//! uploader and the central speak over a byte stream (TCP in the field). TCP hides loss below
//! it as delay (retransmission) and surfaces a dead link as a broken connection or a connect
//! that fails, so that is what this models, not individual packets:
//!
//! - **Latency**: each segment's one-way delay is `one_way_ms ± jitter_ms` (uniform, from the
//!   link's seed). Bytes never overtake each other within a connection (TCP reorders nothing
//!   for its reader), so a late segment delays those behind it.
//! - **Line rate**: per direction, shared by every connection on the link: a segment occupies
//!   the line for `(payload + header) * 8 / rate_bps` seconds and later segments queue behind.
//! - **Window**: a connection takes at most [`WINDOW_BYTES`] that its reader has not read yet
//!   (TCP's flow control: a writer blocks when the receiver does not keep up).
//! - **Drops**: outages, scheduled ([`WanLinkConfig::outages`]), random from the seed
//!   ([`WanLinkConfig::random_outages`]: exponential up and down periods) or set by hand
//!   ([`WanLink::set_down`]). When an outage starts every live connection breaks (reads fail
//!   with `ConnectionReset`, writes with `BrokenPipe`, whatever was in flight is lost); while it
//!   lasts, a connect fails after one round trip with `ConnectionRefused` (the ground
//!   station's modem answering "unreachable").
//!
//! Everything runs on tokio's clock (the simulator's paused one) and draws its randomness from
//! the link's seed, so the same seed and the same writes give the same deliveries. Bytes are
//! counted per direction ([`WanStats`]).

use std::collections::{BTreeMap, VecDeque};
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::mpsc;
use tokio::time::{Duration, Instant, Sleep};

use crate::rng::SimRng;

/// Default one-way latency: half of an 800 ms geostationary round trip (550-800 ms RTT per
/// the satellite figures in DOMAIN.md; the top of the range is the case to tune for).
pub const ONE_WAY_MS_DEFAULT: u32 = 400;
/// Default jitter, ± ms around the one-way latency (uniform): a loaded satellite modem's
/// queueing varies by tens of ms.
pub const JITTER_MS_DEFAULT: u32 = 50;
/// Default line rate per direction: 256 kbit/s, the grid's share of a VSAT link (DOMAIN.md).
pub const RATE_BPS_DEFAULT: u64 = 256_000;
/// Payload per segment: TCP's MSS on a 1,500-byte MTU with the timestamp option.
pub const SEGMENT_BYTES: usize = 1_448;
/// Header bytes each segment costs on the line (IPv4 20 + TCP 20 + timestamps 12): they take
/// line time but are not counted as payload in [`WanStats`].
pub const SEGMENT_HEADER_BYTES: u64 = 52;
/// Bytes a connection may have written that its reader has not read yet, per direction: a
/// 64 KiB receive window, two seconds at 256 kbit/s, above the 800 ms bandwidth-delay product
/// (26 KB) so one connection can fill the line.
pub const WINDOW_BYTES: usize = 64 * 1024;
/// Connections accepted by the link but not yet taken by [`WanListener::accept`]; further
/// connects are refused (a listen backlog).
pub const ACCEPT_BACKLOG: usize = 128;
/// Longest one-way latency accepted (10 s): beyond any satellite path, so a larger value is a
/// typo (seconds for milliseconds).
pub const ONE_WAY_MS_MAX: u32 = 10_000;

/// One scheduled outage, ms since the link was made: down in `[start_ms, end_ms)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Outage {
    /// Start, ms since the link was made.
    pub start_ms: u64,
    /// End (exclusive), ms since the link was made.
    pub end_ms: u64,
}

/// Random outages: the link alternates up and down periods whose lengths are exponentially
/// distributed with these means (a flapping satellite link), drawn from the link's seed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RandomOutages {
    /// Mean length of an up period, ms.
    pub mean_up_ms: u64,
    /// Mean length of a down period, ms.
    pub mean_down_ms: u64,
    /// No random outage starts before this, ms since the link was made (a test's own phase
    /// before it, e.g. a long scheduled outage, stays undisturbed).
    pub from_ms: u64,
}

/// How a WAN link behaves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WanLinkConfig {
    /// One-way latency, ms.
    pub one_way_ms: u32,
    /// Uniform jitter, ± ms (at most `one_way_ms`).
    pub jitter_ms: u32,
    /// Line rate per direction, bit/s; 0 = unlimited.
    pub rate_bps: u64,
    /// Scheduled outages.
    pub outages: Vec<Outage>,
    /// Random outages, if any.
    pub random_outages: Option<RandomOutages>,
}

impl Default for WanLinkConfig {
    fn default() -> Self {
        Self::satellite()
    }
}

impl WanLinkConfig {
    /// A single-hop geostationary link: 800 ms RTT ± 100 ms, 256 kbit/s each way, no outages.
    pub fn satellite() -> Self {
        WanLinkConfig {
            one_way_ms: ONE_WAY_MS_DEFAULT,
            jitter_ms: JITTER_MS_DEFAULT,
            rate_bps: RATE_BPS_DEFAULT,
            outages: Vec::new(),
            random_outages: None,
        }
    }

    /// Why this configuration cannot be used, if it cannot.
    ///
    /// # Errors
    /// A latency above [`ONE_WAY_MS_MAX`], jitter above the latency, an outage that ends
    /// before it starts, or random outages with a zero mean.
    pub fn validate(&self) -> Result<(), WanConfigError> {
        if self.one_way_ms > ONE_WAY_MS_MAX {
            return Err(WanConfigError::Latency(self.one_way_ms));
        }
        if self.jitter_ms > self.one_way_ms {
            return Err(WanConfigError::Jitter {
                jitter_ms: self.jitter_ms,
                one_way_ms: self.one_way_ms,
            });
        }
        if let Some(o) = self.outages.iter().find(|o| o.end_ms <= o.start_ms) {
            return Err(WanConfigError::Outage {
                start_ms: o.start_ms,
                end_ms: o.end_ms,
            });
        }
        if let Some(r) = self.random_outages
            && (r.mean_up_ms == 0 || r.mean_down_ms == 0)
        {
            return Err(WanConfigError::RandomOutages);
        }
        Ok(())
    }
}

/// A WAN link configuration that cannot be used, saying which value and what to give.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WanConfigError {
    /// A latency beyond any satellite's.
    #[error("one_way_ms {0} is above {ONE_WAY_MS_MAX} ms; latencies are in milliseconds")]
    Latency(u32),
    /// Jitter larger than the latency.
    #[error(
        "jitter_ms {jitter_ms} exceeds one_way_ms {one_way_ms}: a segment cannot arrive before it was sent"
    )]
    Jitter {
        /// The jitter given.
        jitter_ms: u32,
        /// The latency given.
        one_way_ms: u32,
    },
    /// An outage that ends before it starts.
    #[error("outage [{start_ms}, {end_ms}) ms is empty or reversed; give start_ms < end_ms")]
    Outage {
        /// Its start.
        start_ms: u64,
        /// Its end.
        end_ms: u64,
    },
    /// Random outages with a zero mean.
    #[error("random outages need mean_up_ms and mean_down_ms above 0 (leave them out for none)")]
    RandomOutages,
}

/// Counters of a link since it was made.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WanStats {
    /// Payload bytes written client -> server (grid -> central), lost ones included.
    pub bytes_up: u64,
    /// Payload bytes written server -> client.
    pub bytes_down: u64,
    /// Connections established.
    pub connects: u64,
    /// Connects refused (link down, or the backlog full).
    pub refused: u64,
    /// Connections broken by an outage.
    pub broken: u64,
}

/// Direction index: client -> server.
const UP: usize = 0;
/// Direction index: server -> client.
const DOWN: usize = 1;

#[derive(Default)]
struct Dir {
    /// Segments in flight or delivered and not fully read: (arrival, bytes).
    segments: VecDeque<(Instant, Vec<u8>)>,
    /// Bytes of the front segment already read.
    read_off: usize,
    /// Bytes written and not read yet (the window's use).
    unread: usize,
    /// Arrival of the last segment (nothing arrives before it: in order).
    last_at: Option<Instant>,
    /// The writer shut down or dropped: EOF after the last segment.
    writer_closed: bool,
    /// The reader dropped: writes fail.
    reader_gone: bool,
    reader_waker: Option<Waker>,
    writer_waker: Option<Waker>,
}

struct Conn {
    opened_ms: u64,
    broken: bool,
    dirs: [Dir; 2],
    /// Halves not yet dropped (four at first); the connection is forgotten at zero.
    halves: u8,
}

struct State {
    epoch: Instant,
    cfg: WanLinkConfig,
    jitter_rng: SimRng,
    outage_rng: SimRng,
    /// Scheduled outages and those set by hand, [start, end) ms; `u64::MAX` as end while one
    /// set by hand lasts.
    outages: Vec<(u64, u64)>,
    /// Random outages generated so far, [start, end) ms.
    random: Vec<(u64, u64)>,
    /// End of the last random outage generated, and its start.
    random_cursor_ms: u64,
    random_last_start_ms: Option<u64>,
    /// Line busy until, per direction.
    free_at: [Instant; 2],
    conns: BTreeMap<u64, Conn>,
    next_conn: u64,
    stats: WanStats,
    backlog: mpsc::Sender<(WanRead, WanWrite)>,
}

impl State {
    fn ms(&self, t: Instant) -> u64 {
        u64::try_from(t.saturating_duration_since(self.epoch).as_millis()).unwrap_or(u64::MAX)
    }

    /// Generate random outages until one starts after `now_ms` (so the next start is known).
    fn extend_random(&mut self, now_ms: u64) {
        let Some(r) = self.cfg.random_outages else {
            return;
        };
        while self.random_last_start_ms.is_none_or(|s| s <= now_ms) {
            let up = (self.outage_rng.exponential(r.mean_up_ms as f64) as u64).max(1);
            let down = (self.outage_rng.exponential(r.mean_down_ms as f64) as u64).max(1);
            let start = self.random_cursor_ms.max(r.from_ms) + up;
            self.random.push((start, start + down));
            self.random_cursor_ms = start + down;
            self.random_last_start_ms = Some(start);
        }
    }

    fn all(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.outages.iter().chain(&self.random).copied()
    }

    fn down_at(&mut self, ms: u64) -> bool {
        self.extend_random(ms);
        self.all().any(|(s, e)| s <= ms && ms < e)
    }

    /// Whether an outage started in `(from_ms, to_ms]`.
    fn outage_started(&mut self, from_ms: u64, to_ms: u64) -> bool {
        self.extend_random(to_ms);
        self.all().any(|(s, _)| from_ms < s && s <= to_ms)
    }

    /// The next outage start after `now_ms`, as an instant.
    fn next_outage(&mut self, now_ms: u64) -> Option<Instant> {
        self.extend_random(now_ms);
        self.all()
            .map(|(s, _)| s)
            .filter(|&s| s > now_ms)
            .min()
            .map(|s| self.epoch + Duration::from_millis(s))
    }

    /// Whether connection `id` is broken at `now` (marks it and wakes both ends if it just
    /// broke).
    fn check_broken(&mut self, id: u64, now: Instant) -> bool {
        let now_ms = self.ms(now);
        let Some(opened) = self.conns.get(&id).map(|c| (c.opened_ms, c.broken)) else {
            return true;
        };
        if opened.1 {
            return true;
        }
        if self.down_at(now_ms) || self.outage_started(opened.0, now_ms) {
            self.stats.broken += 1;
            if let Some(c) = self.conns.get_mut(&id) {
                c.broken = true;
                wake_all(c);
            }
            return true;
        }
        false
    }

    /// Connection `id` if it is not broken at `now`, with the next outage start (when a
    /// waiting half must look again).
    fn live(&mut self, id: u64, now: Instant) -> Option<(&mut Conn, Option<Instant>)> {
        if self.check_broken(id, now) {
            return None;
        }
        let next = self.next_outage(self.ms(now));
        self.conns.get_mut(&id).map(|c| (c, next))
    }

    /// One-way delay of a segment.
    fn latency(&mut self) -> Duration {
        let base = u64::from(self.cfg.one_way_ms);
        let j = u64::from(self.cfg.jitter_ms);
        let ms = base - j + self.jitter_rng.range_inclusive(0, 2 * j);
        Duration::from_millis(ms)
    }
}

fn wake_all(c: &mut Conn) {
    for d in &mut c.dirs {
        if let Some(w) = d.reader_waker.take() {
            w.wake();
        }
        if let Some(w) = d.writer_waker.take() {
            w.wake();
        }
    }
}

/// A simulated WAN link; clones share it. Make it inside the simulator's runtime.
#[derive(Clone)]
pub struct WanLink {
    state: Arc<Mutex<State>>,
}

impl std::fmt::Debug for WanLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = self.lock();
        f.debug_struct("WanLink")
            .field("cfg", &s.cfg)
            .field("stats", &s.stats)
            .finish_non_exhaustive()
    }
}

/// The server end of a link: where connections arrive.
pub struct WanListener {
    rx: mpsc::Receiver<(WanRead, WanWrite)>,
}

impl WanListener {
    /// The next connection (server halves), or `None` once every [`WanLink`] is dropped.
    pub async fn accept(&mut self) -> Option<(WanRead, WanWrite)> {
        self.rx.recv().await
    }
}

impl WanLink {
    /// A link behaving as `cfg`, its randomness from `seed`; time zero is now.
    ///
    /// # Errors
    /// When `cfg` does not validate ([`WanLinkConfig::validate`]).
    pub fn new(cfg: WanLinkConfig, seed: u64) -> Result<(WanLink, WanListener), WanConfigError> {
        cfg.validate()?;
        let (tx, rx) = mpsc::channel(ACCEPT_BACKLOG);
        let now = Instant::now();
        let outages = cfg.outages.iter().map(|o| (o.start_ms, o.end_ms)).collect();
        let state = State {
            epoch: now,
            jitter_rng: SimRng::derive(seed, "wan-jitter", 0),
            outage_rng: SimRng::derive(seed, "wan-outage", 0),
            cfg,
            outages,
            random: Vec::new(),
            random_cursor_ms: 0,
            random_last_start_ms: None,
            free_at: [now; 2],
            conns: BTreeMap::new(),
            next_conn: 0,
            stats: WanStats::default(),
            backlog: tx,
        };
        Ok((
            WanLink {
                state: Arc::new(Mutex::new(state)),
            },
            WanListener { rx },
        ))
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counters so far.
    pub fn stats(&self) -> WanStats {
        self.lock().stats
    }

    /// Whether the link is up now.
    pub fn is_up(&self) -> bool {
        let mut s = self.lock();
        let now = s.ms(Instant::now());
        !s.down_at(now)
    }

    /// Take the link down from now until [`WanLink::set_up`]: live connections break.
    pub fn set_down(&self) {
        let mut s = self.lock();
        let now = s.ms(Instant::now());
        if s.outages.iter().any(|&(_, e)| e == u64::MAX) {
            return;
        }
        s.outages.push((now, u64::MAX));
        let ids: Vec<u64> = s.conns.keys().copied().collect();
        let at = Instant::now();
        for id in ids {
            s.check_broken(id, at);
        }
    }

    /// End an outage [`WanLink::set_down`] began (scheduled and random ones keep their times).
    pub fn set_up(&self) {
        let mut s = self.lock();
        let now = s.ms(Instant::now());
        for o in &mut s.outages {
            if o.1 == u64::MAX {
                // An outage set and ended within the same millisecond still lasts one.
                o.1 = now.max(o.0 + 1);
            }
        }
    }

    /// Schedule an outage starting `after` from now and `lasting` that long.
    pub fn add_outage(&self, after: Duration, lasting: Duration) {
        let mut s = self.lock();
        let now = s.ms(Instant::now());
        let start = now + u64::try_from(after.as_millis()).unwrap_or(u64::MAX / 2);
        let len = u64::try_from(lasting.as_millis())
            .unwrap_or(u64::MAX / 2)
            .max(1);
        s.outages.push((start, start.saturating_add(len)));
    }

    /// From now on, drop at random: up and down periods exponentially distributed with these
    /// means, drawn from the link's seed (replacing any random outages configured before).
    ///
    /// # Errors
    /// When a mean is 0.
    pub fn start_random_outages(
        &self,
        mean_up_ms: u64,
        mean_down_ms: u64,
    ) -> Result<(), WanConfigError> {
        let mut s = self.lock();
        let now = s.ms(Instant::now());
        let r = RandomOutages {
            mean_up_ms,
            mean_down_ms,
            from_ms: now,
        };
        let mut cfg = s.cfg.clone();
        cfg.random_outages = Some(r);
        cfg.validate()?;
        // Random outages generated for later times under the old settings are forgotten.
        s.random.retain(|&(start, _)| start <= now);
        s.cfg = cfg;
        s.random_cursor_ms = now;
        s.random_last_start_ms = None;
        Ok(())
    }

    /// Outages that have started so far (scheduled, random and set by hand).
    pub fn outages_started(&self) -> u64 {
        let mut s = self.lock();
        let now = s.ms(Instant::now());
        s.extend_random(now);
        s.all().filter(|&(start, _)| start <= now).count() as u64
    }

    /// Open a connection (client halves; the server halves go to the [`WanListener`]). Takes
    /// one round trip (the SYN and its answer).
    ///
    /// # Errors
    /// `ConnectionRefused` after a round trip when the link is down (or goes down meanwhile),
    /// or when the listener's backlog is full or it is gone.
    pub async fn connect(&self) -> io::Result<(WanRead, WanWrite)> {
        let (start, rtt) = {
            let mut s = self.lock();
            let rtt = s.latency() + s.latency();
            (Instant::now(), rtt)
        };
        tokio::time::sleep(rtt).await;
        let mut s = self.lock();
        let (start_ms, now_ms) = (s.ms(start), s.ms(Instant::now()));
        let refuse = |s: &mut State, why: String| {
            s.stats.refused += 1;
            Err(io::Error::new(io::ErrorKind::ConnectionRefused, why))
        };
        if s.down_at(start_ms) || s.down_at(now_ms) || s.outage_started(start_ms, now_ms) {
            return refuse(
                &mut s,
                format!("WAN link down at {now_ms} ms (simulated outage)"),
            );
        }
        let id = s.next_conn;
        s.next_conn += 1;
        s.conns.insert(
            id,
            Conn {
                opened_ms: now_ms,
                broken: false,
                dirs: [Dir::default(), Dir::default()],
                halves: 4,
            },
        );
        let half = |dir| Half {
            link: self.clone(),
            id,
            dir,
            sleep: Box::pin(tokio::time::sleep(Duration::ZERO)),
        };
        let backlog = s.backlog.clone();
        // Halves lock the link when dropped: unlock before any can be.
        drop(s);
        let server = (WanRead(half(UP)), WanWrite(half(DOWN)));
        let client = (WanRead(half(DOWN)), WanWrite(half(UP)));
        if let Err(e) = backlog.try_send(server) {
            let why = match e {
                mpsc::error::TrySendError::Full(_) => {
                    format!("WAN link's listener backlog of {ACCEPT_BACKLOG} is full")
                }
                mpsc::error::TrySendError::Closed(_) => "nothing listens on the WAN link".into(),
            };
            drop(client);
            return refuse(&mut self.lock(), why);
        }
        self.lock().stats.connects += 1;
        Ok(client)
    }
}

/// What both halves hold.
struct Half {
    link: WanLink,
    id: u64,
    /// The direction this half reads or writes.
    dir: usize,
    /// Wakes this half at the next arrival or outage.
    sleep: Pin<Box<Sleep>>,
}

impl Half {
    /// Wait until `cx` is woken by the other end, or at `deadline`.
    fn park(&mut self, cx: &mut Context<'_>, deadline: Option<Instant>) {
        if let Some(d) = deadline {
            self.sleep.as_mut().reset(d);
            if self.sleep.as_mut().poll(cx).is_ready() {
                cx.waker().wake_by_ref();
            }
        }
    }

    fn release(&mut self, reader: bool) {
        let mut s = self.link.lock();
        let Some(c) = s.conns.get_mut(&self.id) else {
            return;
        };
        let d = &mut c.dirs[self.dir];
        if reader {
            d.reader_gone = true;
            if let Some(w) = d.writer_waker.take() {
                w.wake();
            }
        } else {
            d.writer_closed = true;
            if let Some(w) = d.reader_waker.take() {
                w.wake();
            }
        }
        c.halves -= 1;
        if c.halves == 0 {
            s.conns.remove(&self.id);
        }
    }
}

/// The reading half of a WAN connection.
pub struct WanRead(Half);

/// The writing half of a WAN connection.
pub struct WanWrite(Half);

impl std::fmt::Debug for Half {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let dir = if self.dir == UP { "up" } else { "down" };
        write!(f, "WAN connection {} ({dir})", self.id)
    }
}

impl std::fmt::Debug for WanRead {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "reader of {:?}", self.0)
    }
}

impl std::fmt::Debug for WanWrite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "writer of {:?}", self.0)
    }
}

impl Drop for WanRead {
    fn drop(&mut self) {
        self.0.release(true);
    }
}

impl Drop for WanWrite {
    fn drop(&mut self) {
        self.0.release(false);
    }
}

fn broken(kind: io::ErrorKind) -> io::Error {
    io::Error::new(kind, "WAN connection broken by a link outage")
}

impl AsyncRead for WanRead {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let h = &mut self.get_mut().0;
        let now = Instant::now();
        let link = h.link.clone();
        let mut s = link.lock();
        let Some((c, next_outage)) = s.live(h.id, now) else {
            return Poll::Ready(Err(broken(io::ErrorKind::ConnectionReset)));
        };
        let d = &mut c.dirs[h.dir];
        let mut copied = 0;
        while buf.remaining() > 0 {
            let Some((at, bytes)) = d.segments.front() else {
                break;
            };
            if *at > now {
                break;
            }
            let n = buf.remaining().min(bytes.len() - d.read_off);
            buf.put_slice(&bytes[d.read_off..d.read_off + n]);
            d.read_off += n;
            copied += n;
            if d.read_off == bytes.len() {
                d.segments.pop_front();
                d.read_off = 0;
            }
        }
        if copied > 0 {
            d.unread -= copied;
            if let Some(w) = d.writer_waker.take() {
                w.wake();
            }
            return Poll::Ready(Ok(()));
        }
        if d.segments.is_empty() && d.writer_closed {
            return Poll::Ready(Ok(())); // EOF
        }
        d.reader_waker = Some(cx.waker().clone());
        let arrival = d.segments.front().map(|(at, _)| *at);
        let deadline = match (arrival, next_outage) {
            (Some(a), Some(o)) => Some(a.min(o)),
            (a, o) => a.or(o),
        };
        drop(s);
        h.park(cx, deadline);
        Poll::Pending
    }
}

impl AsyncWrite for WanWrite {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let h = &mut self.get_mut().0;
        let now = Instant::now();
        let link = h.link.clone();
        let mut s = link.lock();
        let Some((c, next_outage)) = s.live(h.id, now) else {
            return Poll::Ready(Err(broken(io::ErrorKind::BrokenPipe)));
        };
        let d = &mut c.dirs[h.dir];
        if d.reader_gone {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "the other end of the WAN connection closed it",
            )));
        }
        if d.writer_closed {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "write after shutdown on a WAN connection",
            )));
        }
        let space = WINDOW_BYTES - d.unread;
        if space == 0 {
            d.writer_waker = Some(cx.waker().clone());
            drop(s);
            h.park(cx, next_outage);
            return Poll::Pending;
        }
        let n = buf.len().min(space);
        let mut segments = Vec::new();
        for chunk in buf[..n].chunks(SEGMENT_BYTES) {
            let start = s.free_at[h.dir].max(now);
            let bits = (chunk.len() as u64 + SEGMENT_HEADER_BYTES) * 8;
            // Rate 0: unlimited, no line time.
            let line_time = Duration::from_nanos(
                (bits * 1_000_000_000)
                    .checked_div(s.cfg.rate_bps)
                    .unwrap_or(0),
            );
            let sent = start + line_time;
            s.free_at[h.dir] = sent;
            let at = sent + s.latency();
            segments.push((at, chunk.to_vec()));
        }
        if h.dir == UP {
            s.stats.bytes_up += n as u64;
        } else {
            s.stats.bytes_down += n as u64;
        }
        let Some(c) = s.conns.get_mut(&h.id) else {
            return Poll::Ready(Err(broken(io::ErrorKind::BrokenPipe)));
        };
        let d = &mut c.dirs[h.dir];
        for (at, bytes) in segments {
            let at = d.last_at.map_or(at, |last| at.max(last));
            d.last_at = Some(at);
            d.segments.push_back((at, bytes));
        }
        d.unread += n;
        if let Some(w) = d.reader_waker.take() {
            w.wake();
        }
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let h = &self.get_mut().0;
        let mut s = h.link.lock();
        if let Some(c) = s.conns.get_mut(&h.id) {
            let d = &mut c.dirs[h.dir];
            d.writer_closed = true;
            if let Some(w) = d.reader_waker.take() {
                w.wake();
            }
        }
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn quiet(one_way_ms: u32, rate_bps: u64) -> WanLinkConfig {
        WanLinkConfig {
            one_way_ms,
            jitter_ms: 0,
            rate_bps,
            outages: Vec::new(),
            random_outages: None,
        }
    }

    /// Runs `f` on the simulator's paused-clock runtime.
    fn sim<F: std::future::Future<Output = ()>>(f: F) {
        time::runtime().expect("runtime").block_on(f);
    }

    #[test]
    fn connect_takes_a_round_trip_and_bytes_take_the_one_way_latency() {
        sim(async {
            let (link, mut listener) = WanLink::new(quiet(400, 0), 1).expect("valid");
            let t0 = Instant::now();
            let (mut rd, mut wr) = link.connect().await.expect("connects");
            assert_eq!(t0.elapsed(), Duration::from_millis(800), "one RTT");
            let (mut srd, mut swr) = listener.accept().await.expect("accepted");
            let t1 = Instant::now();
            wr.write_all(b"hello").await.expect("write");
            let mut got = [0u8; 5];
            srd.read_exact(&mut got).await.expect("read");
            assert_eq!(&got, b"hello");
            assert_eq!(t1.elapsed(), Duration::from_millis(400), "one way up");
            swr.write_all(b"ack").await.expect("write");
            let mut got = [0u8; 3];
            rd.read_exact(&mut got).await.expect("read");
            assert_eq!(t1.elapsed(), Duration::from_millis(800), "and one way down");
            let st = link.stats();
            assert_eq!((st.bytes_up, st.bytes_down, st.connects), (5, 3, 1));
        });
    }

    #[test]
    fn line_rate_is_honoured_and_shared_by_connections() {
        sim(async {
            // 256 kbit/s: 64,000 payload bytes over two connections (32,000 each) take
            // 64,000 B + headers at 32,000 B/s, about 2.07 s, plus the 400 ms latency.
            let (link, mut listener) = WanLink::new(quiet(400, 256_000), 2).expect("valid");
            let mut readers = Vec::new();
            let mut writers = Vec::new();
            for _ in 0..2 {
                let (crd, wr) = link.connect().await.expect("connects");
                let (srd, swr) = listener.accept().await.expect("accepted");
                writers.push(wr);
                readers.push((srd, crd, swr));
            }
            let t0 = Instant::now();
            for wr in &mut writers {
                wr.write_all(&[7u8; 32_000]).await.expect("write");
            }
            for (srd, _, _) in &mut readers {
                let mut got = vec![0u8; 32_000];
                srd.read_exact(&mut got).await.expect("read");
                assert!(got.iter().all(|b| *b == 7));
            }
            let took = t0.elapsed().as_secs_f64();
            let segments = 2.0 * (32_000f64 / SEGMENT_BYTES as f64).ceil();
            let want = (64_000.0 + segments * SEGMENT_HEADER_BYTES as f64) * 8.0 / 256_000.0 + 0.4;
            assert!(
                (took - want).abs() < 0.01,
                "took {took:.3} s, the line rate gives {want:.3} s"
            );
        });
    }

    #[test]
    fn jitter_never_reorders_bytes_and_replays_from_the_seed() {
        async fn run(seed: u64) -> Vec<u64> {
            let mut cfg = quiet(400, 0);
            cfg.jitter_ms = 200;
            let (link, mut listener) = WanLink::new(cfg, seed).expect("valid");
            let (_rd, mut wr) = link.connect().await.expect("connects");
            let (mut srd, _swr) = listener.accept().await.expect("accepted");
            let t0 = Instant::now();
            let mut arrivals = Vec::new();
            for i in 0..50u8 {
                wr.write_all(&[i]).await.expect("write");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            for i in 0..50u8 {
                let b = srd.read_u8().await.expect("read");
                assert_eq!(b, i, "in order");
                arrivals.push(t0.elapsed().as_millis() as u64);
            }
            arrivals
        }
        sim(async {
            let a = run(5).await;
            assert_eq!(a, run(5).await, "same seed, same arrivals");
            assert_ne!(a, run(6).await, "another seed, other jitter");
            assert!(a.windows(2).all(|w| w[0] <= w[1]));
        });
    }

    #[test]
    fn an_outage_breaks_live_connections_and_refuses_new_ones_until_it_ends() {
        sim(async {
            let mut cfg = quiet(400, 0);
            cfg.outages = vec![Outage {
                start_ms: 5_000,
                end_ms: 65_000,
            }];
            let (link, mut listener) = WanLink::new(cfg, 3).expect("valid");
            let (mut rd, _wr) = link.connect().await.expect("connects before the outage");
            let (_srd, mut swr) = listener.accept().await.expect("accepted");
            // A reader waiting for bytes that never come fails when the outage starts.
            let err = rd.read_u8().await.expect_err("broken");
            assert_eq!(err.kind(), io::ErrorKind::ConnectionReset);
            assert!(!link.is_up());
            assert_eq!(
                swr.write_all(b"x").await.expect_err("broken").kind(),
                io::ErrorKind::BrokenPipe
            );
            let e = link.connect().await.expect_err("refused while down");
            assert_eq!(e.kind(), io::ErrorKind::ConnectionRefused);
            tokio::time::sleep_until(link_time(&link, 65_000)).await;
            assert!(link.is_up());
            link.connect().await.expect("connects after the outage");
            let st = link.stats();
            assert_eq!((st.connects, st.refused, st.broken), (2, 1, 1));
        });
    }

    fn link_time(link: &WanLink, ms: u64) -> Instant {
        link.lock().epoch + Duration::from_millis(ms)
    }

    #[test]
    fn set_down_breaks_at_once_and_set_up_restores() {
        sim(async {
            let (link, mut listener) = WanLink::new(quiet(400, 0), 4).expect("valid");
            let (mut rd, _wr) = link.connect().await.expect("connects");
            let _server = listener.accept().await.expect("accepted");
            let l2 = link.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_secs(3)).await;
                l2.set_down();
            });
            let t0 = Instant::now();
            assert!(rd.read_u8().await.is_err());
            assert_eq!(t0.elapsed(), Duration::from_secs(3), "broken when cut");
            assert!(link.connect().await.is_err());
            link.set_up();
            link.connect().await.expect("connects once up");
            // A scheduled one, from now.
            let (mut rd, _wr) = link.connect().await.expect("connects");
            link.add_outage(Duration::from_secs(2), Duration::from_secs(1));
            let t1 = Instant::now();
            assert!(rd.read_u8().await.is_err());
            assert_eq!(
                t1.elapsed(),
                Duration::from_secs(2),
                "broken when it starts"
            );
            assert_eq!(link.outages_started(), 2);
        });
    }

    #[test]
    fn random_outages_come_from_the_seed_and_start_after_from_ms() {
        fn starts(seed: u64) -> Vec<u64> {
            let mut cfg = quiet(400, 0);
            cfg.random_outages = Some(RandomOutages {
                mean_up_ms: 10_000,
                mean_down_ms: 2_000,
                from_ms: 60_000,
            });
            let rt = time::runtime().expect("runtime");
            rt.block_on(async {
                let (link, _l) = WanLink::new(cfg, seed).expect("valid");
                let mut s = link.lock();
                s.extend_random(600_000);
                s.random.iter().map(|o| o.0).collect()
            })
        }
        let a = starts(9);
        assert_eq!(a, starts(9));
        assert_ne!(a, starts(10));
        assert!(a.len() > 20, "about one per 12 s over 540 s: {}", a.len());
        assert!(a.iter().all(|s| *s > 60_000));
    }

    #[test]
    fn a_full_window_blocks_the_writer_until_the_reader_reads() {
        sim(async {
            let (link, mut listener) = WanLink::new(quiet(10, 0), 5).expect("valid");
            let (_rd, mut wr) = link.connect().await.expect("connects");
            let (mut srd, _swr) = listener.accept().await.expect("accepted");
            wr.write_all(&vec![1u8; WINDOW_BYTES])
                .await
                .expect("fills the window");
            let blocked = tokio::time::timeout(Duration::from_secs(5), wr.write_all(&[2u8])).await;
            assert!(blocked.is_err(), "a full window blocks");
            let mut got = vec![0u8; 1000];
            srd.read_exact(&mut got).await.expect("read");
            wr.write_all(&[2u8]).await.expect("room again");
        });
    }

    #[test]
    fn closing_the_writer_is_an_eof_after_the_data() {
        sim(async {
            let (link, mut listener) = WanLink::new(quiet(100, 0), 6).expect("valid");
            let (_rd, mut wr) = link.connect().await.expect("connects");
            let (mut srd, _swr) = listener.accept().await.expect("accepted");
            wr.write_all(b"last").await.expect("write");
            drop(wr);
            let mut all = Vec::new();
            srd.read_to_end(&mut all).await.expect("reads to EOF");
            assert_eq!(all, b"last");
        });
    }

    #[test]
    fn bad_configs_are_refused_with_the_reason() {
        let mut c = WanLinkConfig::satellite();
        c.jitter_ms = 500;
        assert!(c.validate().unwrap_err().to_string().contains("jitter_ms"));
        let mut c = WanLinkConfig::satellite();
        c.outages = vec![Outage {
            start_ms: 5,
            end_ms: 5,
        }];
        assert!(c.validate().unwrap_err().to_string().contains("outage"));
        let mut c = WanLinkConfig::satellite();
        c.one_way_ms = 400_000;
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("milliseconds")
        );
    }
}
