//! systemd's service notification protocol (`sd_notify(3)`), and the watchdog loop that pings
//! systemd only while the node is healthy.
//!
//! The protocol is one datagram of `KEY=VALUE` lines to the Unix socket named by
//! `$NOTIFY_SOCKET` (a path, or an abstract-namespace name written with a leading `@`). It is
//! small enough to speak directly, so no C library or crate is linked for it: the binary stays
//! free of libsystemd, which a board image may not have.
//!
//! `deploy/ghatta.service` runs `ghatta run` as `Type=notify` with `WatchdogSec=`: systemd
//! waits for `READY=1` before it calls the unit started, and kills and restarts the service when
//! `WATCHDOG=1` stops arriving. [`watchdog_loop`] sends `READY=1` once, then `WATCHDOG=1` only
//! after every health probe passed ([`Health::check`]): the Raft core and the state machine
//! worker both answer a request, and (with [`watchdog_loop_with_field`]) the field loop keeps
//! turning and its grid samples succeed: a loop that turns but whose samples all fail (the
//! Modbus adapter gone, the generator meter dead) is unhealthy once they have failed for
//! `field::GRID_UNHEALTHY_AFTER_MS`, so systemd restarts a node whose sensors are dead
//! instead of feeding it forever. A node cut off from its quorum is healthy: an island keeps the grid safe on its
//! own (DESIGN principle 2), so losing the leader never stops the pings.

use std::io;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use openraft_rt::WatchReceiver;

use crate::field::FieldStats;
use crate::node::{Node, Role};

/// The variable systemd sets to the notification socket of a `Type=notify` service.
pub const NOTIFY_SOCKET_VAR: &str = "NOTIFY_SOCKET";
/// The variable carrying the watchdog interval in microseconds (`WatchdogSec=`).
pub const WATCHDOG_USEC_VAR: &str = "WATCHDOG_USEC";
/// The variable naming the process the watchdog is meant for; when it is set and names another
/// process (a child that inherited the environment), the watchdog is not ours.
pub const WATCHDOG_PID_VAR: &str = "WATCHDOG_PID";

/// Pings per watchdog interval. sd_watchdog_enabled(3) asks for at least two; the probes
/// themselves may take part of an interval on a busy board, so four leave a margin.
pub const PINGS_PER_WATCHDOG_INTERVAL: u32 = 4;
/// How often to report status when systemd has no watchdog for us (STATUS= only).
pub const STATUS_INTERVAL_NO_WATCHDOG: Duration = Duration::from_secs(10);
/// A field loop that has neither taken nor failed a grid sample for this long is wedged (the
/// loop samples every 100 ms to 1 s; a Modbus read with all its retries takes a few seconds).
pub const FIELD_STALL_MAX: Duration = Duration::from_secs(60);
/// The longest a health probe may wait for the Raft core or the state machine worker. A
/// billing tick over thousands of accounts on a slow board takes a few seconds; a worker
/// that does not answer in half a minute is stuck, and the watchdog will say so.
pub const PROBE_TIMEOUT_MAX: Duration = Duration::from_secs(30);
/// Longest datagram sent; STATUS= lines are cut to fit (the kernel's limit is far larger,
/// this only keeps a runaway status string from being sent).
pub const MESSAGE_MAX_BYTES: usize = 4096;

/// Where notifications go: the socket systemd gave this service.
#[derive(Debug)]
pub struct Notifier {
    addr: SocketAddr,
    socket: UnixDatagram,
}

impl Notifier {
    /// The notifier for `$NOTIFY_SOCKET`, or `None` when not started by systemd as a
    /// `Type=notify` service (then every notification is a no-op).
    pub fn from_env() -> io::Result<Option<Notifier>> {
        match std::env::var_os(NOTIFY_SOCKET_VAR) {
            None => Ok(None),
            Some(v) if v.is_empty() => Ok(None),
            Some(v) => {
                let name = v.to_str().ok_or_else(|| {
                    io::Error::new(
                        io::ErrorKind::InvalidInput,
                        format!("{NOTIFY_SOCKET_VAR} is not valid UTF-8: {v:?}"),
                    )
                })?;
                Notifier::new(name).map(Some)
            }
        }
    }

    /// A notifier for a socket name as systemd writes it: a filesystem path, or `@name` for an
    /// abstract-namespace socket.
    pub fn new(name: &str) -> io::Result<Notifier> {
        let addr = if let Some(abstract_name) = name.strip_prefix('@') {
            abstract_addr(abstract_name.as_bytes())?
        } else if name.starts_with('/') {
            SocketAddr::from_pathname(name)?
        } else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "{NOTIFY_SOCKET_VAR}={name:?} is neither an absolute path nor an @abstract \
                     socket name; systemd sets it, so unset it when not running under systemd"
                ),
            ));
        };
        Ok(Notifier {
            addr,
            socket: UnixDatagram::unbound()?,
        })
    }

    /// Send one notification (newline-separated `KEY=VALUE` lines).
    pub fn send(&self, message: &str) -> io::Result<()> {
        let bytes = message.as_bytes();
        let bytes = &bytes[..bytes.len().min(MESSAGE_MAX_BYTES)];
        let sent = self.socket.send_to_addr(bytes, &self.addr)?;
        if sent != bytes.len() {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                format!(
                    "notification cut short: {sent} of {} bytes sent",
                    bytes.len()
                ),
            ));
        }
        Ok(())
    }
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn abstract_addr(name: &[u8]) -> io::Result<SocketAddr> {
    #[cfg(target_os = "android")]
    use std::os::android::net::SocketAddrExt;
    #[cfg(target_os = "linux")]
    use std::os::linux::net::SocketAddrExt;
    SocketAddr::from_abstract_name(name)
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn abstract_addr(_name: &[u8]) -> io::Result<SocketAddr> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "abstract Unix sockets exist only on Linux",
    ))
}

/// Send `message` to `$NOTIFY_SOCKET`; `Ok(false)` when there is no socket (not under
/// systemd), so callers need not check first.
pub fn notify(message: &str) -> io::Result<bool> {
    match Notifier::from_env()? {
        Some(n) => n.send(message).map(|()| true),
        None => Ok(false),
    }
}

/// Tell systemd start-up is complete (`READY=1`).
pub fn notify_ready() -> io::Result<bool> {
    notify("READY=1")
}

/// Tell systemd the service is alive (`WATCHDOG=1`). Send only after checking that it is.
pub fn notify_watchdog() -> io::Result<bool> {
    notify("WATCHDOG=1")
}

/// Set the one-line status `systemctl status` shows (`STATUS=...`).
pub fn notify_status(status: &str) -> io::Result<bool> {
    notify(&status_message(status))
}

/// Tell systemd the service is stopping (`STOPPING=1`).
pub fn notify_stopping() -> io::Result<bool> {
    notify("STOPPING=1")
}

/// `STATUS=` with the text on one line (the protocol is line-based).
fn status_message(status: &str) -> String {
    format!("STATUS={}", status.replace(['\n', '\r'], " "))
}

/// The watchdog interval systemd expects pings within, if it watches this process: parsed
/// from `$WATCHDOG_USEC`, honouring `$WATCHDOG_PID` as sd_watchdog_enabled(3) does.
pub fn watchdog_enabled() -> Option<Duration> {
    let usec = std::env::var(WATCHDOG_USEC_VAR).ok();
    let pid = std::env::var(WATCHDOG_PID_VAR).ok();
    parse_watchdog(usec.as_deref(), pid.as_deref(), std::process::id())
}

/// The parsing behind [`watchdog_enabled`], separated so tests need not set variables.
fn parse_watchdog(usec: Option<&str>, pid: Option<&str>, my_pid: u32) -> Option<Duration> {
    let usec: u64 = usec?.trim().parse().ok()?;
    if usec == 0 {
        return None;
    }
    if let Some(pid) = pid
        && pid.trim().parse::<u32>().ok()? != my_pid
    {
        return None;
    }
    Some(Duration::from_micros(usec))
}

/// Which loop of the node is unhealthy, and how: what the watchdog withholds its ping for
/// (systemd then restarts the node) and what it logs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unhealthy {
    /// openraft's core has stopped with a fatal error.
    #[error("Raft has stopped: {0}")]
    RaftStopped(String),
    /// openraft's core does not turn.
    #[error("Raft core did not answer within {waited_s} s")]
    RaftStuck {
        /// How long the probe waited, s.
        waited_s: u64,
    },
    /// The state machine worker has stopped.
    #[error("state machine worker stopped: {0}")]
    ApplyStopped(String),
    /// Applying committed entries makes no progress.
    #[error("state machine worker did not answer within {waited_s} s (applying is stuck)")]
    ApplyStuck {
        /// How long the probe waited, s.
        waited_s: u64,
    },
    /// The field loop stopped sampling.
    #[error("field loop has not sampled the grid for {for_s} s")]
    FieldStalled {
        /// Since when, s.
        for_s: u64,
    },
    /// The field loop turns but its grid samples fail (a meter or the Modbus line is dead):
    /// protection is blind.
    #[error(
        "grid samples have failed for {failing_ms} ms (check the generator meter and the Modbus adapter)"
    )]
    GridFailing {
        /// How long, ms (when last seen failing).
        failing_ms: u64,
    },
}

/// What the health probes last saw, and what they compare against next time.
#[derive(Debug)]
pub struct Health {
    field: Option<Arc<FieldStats>>,
    field_beats: u64,
    field_beat_at: tokio::time::Instant,
    probe_timeout: Duration,
}

impl Health {
    /// Probes for `node`; with `field`, also the field loop's liveness. `probe_timeout` bounds
    /// each request to the Raft core and the state machine worker.
    pub fn new(field: Option<Arc<FieldStats>>, probe_timeout: Duration) -> Health {
        let field_beats = field.as_deref().map(field_beats).unwrap_or(0);
        Health {
            field,
            field_beats,
            field_beat_at: tokio::time::Instant::now(),
            probe_timeout,
        }
    }

    /// Check every loop of the node; `Err` says which one is unhealthy and how.
    pub async fn check(&mut self, node: &Node) -> Result<(), Unhealthy> {
        let raft = node.raft();
        let running = raft.metrics().borrow_watched().running_state.clone();
        if let Err(fatal) = running {
            return Err(Unhealthy::RaftStopped(fatal.to_string()));
        }
        // A request through the Raft core's queue: answered only if the core loop turns.
        match tokio::time::timeout(self.probe_timeout, raft.with_raft_state(|_| ())).await {
            Ok(Ok(())) => {}
            Ok(Err(fatal)) => return Err(Unhealthy::RaftStopped(fatal.to_string())),
            Err(_) => {
                return Err(Unhealthy::RaftStuck {
                    waited_s: self.probe_timeout.as_secs(),
                });
            }
        }
        // A request through the state machine worker's queue, behind any apply in progress:
        // answered only if applying committed entries (and the actors in it) makes progress.
        let sm_probe = raft.with_state_machine(|_| {
            let done: openraft_rt::BoxFuture<'static, ()> = Box::pin(async {});
            done
        });
        match tokio::time::timeout(self.probe_timeout, sm_probe).await {
            Ok(Ok(())) => {}
            Ok(Err(fatal)) => return Err(Unhealthy::ApplyStopped(fatal.to_string())),
            Err(_) => {
                return Err(Unhealthy::ApplyStuck {
                    waited_s: self.probe_timeout.as_secs(),
                });
            }
        }
        self.check_field(tokio::time::Instant::now())
    }

    /// The field loop's part of [`Health::check`]: it turns (samples taken or failed), and
    /// its grid samples succeed.
    pub fn check_field(&mut self, now: tokio::time::Instant) -> Result<(), Unhealthy> {
        let Some(stats) = &self.field else {
            return Ok(());
        };
        let beats = field_beats(stats);
        if beats != self.field_beats {
            self.field_beats = beats;
            self.field_beat_at = now;
        } else if now.duration_since(self.field_beat_at) > FIELD_STALL_MAX {
            return Err(Unhealthy::FieldStalled {
                for_s: now.duration_since(self.field_beat_at).as_secs(),
            });
        }
        // The failing time, not the `grid_healthy` gauge: a loop that has not started yet
        // (the gauge still 0) has not failed anything.
        let failing_ms = stats.grid_failing_ms.load(Ordering::Relaxed);
        if failing_ms > crate::field::GRID_UNHEALTHY_AFTER_MS {
            return Err(Unhealthy::GridFailing { failing_ms });
        }
        Ok(())
    }
}

/// Grid samples taken or failed: either moves while the field loop turns.
fn field_beats(stats: &FieldStats) -> u64 {
    stats
        .samples
        .load(Ordering::Relaxed)
        .wrapping_add(stats.read_errors.load(Ordering::Relaxed))
}

/// One-line node summary for `STATUS=`.
fn status_line(node: &Node) -> String {
    let s = node.status();
    let role = match s.role {
        Role::Leader => "leader",
        Role::Follower => "follower",
        Role::Candidate => "candidate (no leader)",
        Role::Learner => "learner",
        Role::Shutdown => "shut down",
    };
    let leader = s
        .leader
        .map(|l| l.to_string())
        .unwrap_or_else(|| "none".into());
    format!(
        "node {} {role}, term {}, leader {leader}, applied {}/{}, customers {}",
        s.id, s.term, s.applied_index, s.commit_index, s.customers
    )
}

/// Tell systemd the node is ready, then ping its watchdog for as long as the node's Raft core
/// and state machine worker answer. Spawn it once the node has started (`ghatta run`); it
/// returns at once when the process is not a systemd `Type=notify` service.
pub async fn watchdog_loop(node: Node) {
    run_loop(node, None).await
}

/// As [`watchdog_loop`], also requiring the field loop to keep sampling the grid.
pub async fn watchdog_loop_with_field(node: Node, field: Arc<FieldStats>) {
    run_loop(node, Some(field)).await
}

async fn run_loop(node: Node, field: Option<Arc<FieldStats>>) {
    let notifier = match Notifier::from_env() {
        Ok(Some(n)) => n,
        Ok(None) => return,
        Err(e) => {
            tracing::error!(error = %e, "cannot reach systemd's notification socket; systemd will not see the node as started");
            return;
        }
    };
    let watchdog = watchdog_enabled();
    run_with(node, field, notifier, watchdog).await
}

/// The loop behind [`watchdog_loop`], on a given socket and interval (tests use their own).
pub async fn run_with(
    node: Node,
    field: Option<Arc<FieldStats>>,
    notifier: Notifier,
    watchdog: Option<Duration>,
) {
    let period = match watchdog {
        Some(w) => w / PINGS_PER_WATCHDOG_INTERVAL,
        None => STATUS_INTERVAL_NO_WATCHDOG,
    };
    let probe_timeout = watchdog.unwrap_or(PROBE_TIMEOUT_MAX).min(PROBE_TIMEOUT_MAX);
    let mut health = Health::new(field, probe_timeout);
    let mut ready_sent = false;
    let mut last_problem: Option<Unhealthy> = None;
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let verdict = health.check(&node).await;
        let message = match &verdict {
            Ok(()) => {
                if last_problem.take().is_some() {
                    tracing::warn!("node healthy again; watchdog pings resumed");
                }
                let mut m = String::new();
                if !ready_sent {
                    m.push_str("READY=1\n");
                }
                if watchdog.is_some() {
                    m.push_str("WATCHDOG=1\n");
                }
                m.push_str(&status_message(&status_line(&node)));
                m
            }
            Err(problem) => {
                if last_problem.as_ref() != Some(problem) {
                    tracing::error!(
                        %problem,
                        "node unhealthy: withholding systemd watchdog pings (systemd restarts the service after WatchdogSec)"
                    );
                }
                last_problem = Some(problem.clone());
                status_message(&format!("UNHEALTHY: {problem}"))
            }
        };
        match notifier.send(&message) {
            Ok(()) => ready_sent |= verdict.is_ok(),
            Err(e) => tracing::warn!(error = %e, "cannot notify systemd"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watchdog_interval_parses_and_honours_pid() {
        assert_eq!(
            parse_watchdog(Some("30000000"), None, 7),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_watchdog(Some("30000000"), Some("7"), 7),
            Some(Duration::from_secs(30))
        );
        assert_eq!(parse_watchdog(Some("30000000"), Some("8"), 7), None);
        assert_eq!(parse_watchdog(Some("0"), None, 7), None);
        assert_eq!(parse_watchdog(Some("soon"), None, 7), None);
        assert_eq!(parse_watchdog(None, Some("7"), 7), None);
    }

    #[test]
    fn notifier_sends_to_a_path_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let server = UnixDatagram::bind(&path).unwrap();
        let n = Notifier::new(path.to_str().unwrap()).unwrap();
        n.send("READY=1\nSTATUS=ok").unwrap();
        let mut buf = [0u8; 64];
        let len = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"READY=1\nSTATUS=ok");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn notifier_sends_to_an_abstract_socket() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("ghatta-test-{}", std::process::id());
        let server =
            UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes()).unwrap())
                .unwrap();
        let n = Notifier::new(&format!("@{name}")).unwrap();
        n.send("WATCHDOG=1").unwrap();
        let mut buf = [0u8; 64];
        let len = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"WATCHDOG=1");
    }

    #[test]
    fn relative_socket_names_are_refused() {
        let e = Notifier::new("notify.sock").unwrap_err();
        assert!(e.to_string().contains("absolute path"), "{e}");
    }

    #[tokio::test(start_paused = true)]
    async fn failing_grid_samples_are_unhealthy_though_the_loop_turns() {
        // Before the loop has started: nothing has failed.
        let stats = Arc::new(FieldStats::default());
        let mut h = Health::new(Some(stats.clone()), PROBE_TIMEOUT_MAX);
        let t0 = tokio::time::Instant::now();
        stats.samples.fetch_add(1, Ordering::Relaxed);
        assert_eq!(h.check_field(t0), Ok(()));
        // The loop keeps turning (failed samples move the beats) but nothing is sampled.
        stats.read_errors.fetch_add(30, Ordering::Relaxed);
        stats.grid_failing_ms.store(1_500, Ordering::Relaxed);
        assert_eq!(
            h.check_field(t0 + Duration::from_secs(2)),
            Ok(()),
            "within the bound"
        );
        stats.grid_failing_ms.store(3_000, Ordering::Relaxed);
        assert_eq!(
            h.check_field(t0 + Duration::from_secs(3)),
            Err(Unhealthy::GridFailing { failing_ms: 3_000 })
        );
        // Samples are back.
        stats.samples.fetch_add(1, Ordering::Relaxed);
        stats.grid_failing_ms.store(0, Ordering::Relaxed);
        assert_eq!(h.check_field(t0 + Duration::from_secs(4)), Ok(()));
        // A loop that stops turning altogether is still caught.
        let later = t0 + Duration::from_secs(4) + FIELD_STALL_MAX + Duration::from_secs(1);
        assert!(matches!(
            h.check_field(later),
            Err(Unhealthy::FieldStalled { .. })
        ));
    }

    #[test]
    fn status_is_one_line() {
        assert_eq!(status_message("a\nb\r"), "STATUS=a b ");
    }
}
