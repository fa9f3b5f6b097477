//! Clocks: the node reads wall time only through [`Clock`], so the simulator can run it on
//! simulated time (with drift) and the leader's timestamps stay testable.

use std::sync::OnceLock;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// Wall-clock time for a node.
pub trait Clock: Send + Sync + 'static {
    /// Now, Unix milliseconds.
    fn now_ms(&self) -> u64;
    /// Milliseconds on a monotonic clock from an arbitrary origin fixed for the process: never
    /// stepped (NTP, an operator, a dead RTC battery step only the wall clock), so the
    /// difference of two readings is real time elapsed, up to the crystal's rate error. The
    /// leader carries it in every entry it stamps (`raft::LeaderClock`) so the state machine
    /// can bound how far log time moves (`state::logtime`).
    fn mono_ms(&self) -> u64;
}

/// The operating system's clock (a board with NTP or GPS time).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)
    }

    fn mono_ms(&self) -> u64 {
        static ORIGIN: OnceLock<Instant> = OnceLock::new();
        ORIGIN.get_or_init(Instant::now).elapsed().as_millis() as u64
    }
}

/// A clock that follows tokio's monotonic clock from a fixed epoch, optionally drifting.
/// Under a paused tokio runtime this is simulated time; otherwise it advances with real time.
#[derive(Debug, Clone, Copy)]
pub struct TokioClock {
    epoch_ms: u64,
    start: tokio::time::Instant,
    /// Drift in parts per million (positive runs fast).
    drift_ppm: i64,
}

impl TokioClock {
    /// A clock reading `epoch_ms` now.
    pub fn new(epoch_ms: u64, drift_ppm: i64) -> Self {
        TokioClock {
            epoch_ms,
            start: tokio::time::Instant::now(),
            drift_ppm,
        }
    }
}

impl TokioClock {
    /// Drifted ms since this clock was made.
    fn drifted_ms(&self) -> i64 {
        let elapsed = self.start.elapsed().as_millis() as i64;
        elapsed + elapsed * self.drift_ppm / 1_000_000
    }
}

impl Clock for TokioClock {
    fn now_ms(&self) -> u64 {
        (self.epoch_ms as i64 + self.drifted_ms()).max(0) as u64
    }

    fn mono_ms(&self) -> u64 {
        self.drifted_ms().max(0) as u64
    }
}
