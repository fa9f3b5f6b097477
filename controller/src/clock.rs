//! Clocks: the node reads wall time only through [`Clock`], so the simulator can run it on
//! simulated time (with drift) and the leader's timestamps stay testable.

use std::time::{SystemTime, UNIX_EPOCH};

/// Wall-clock time for a node.
pub trait Clock: Send + Sync + 'static {
    /// Now, Unix milliseconds.
    fn now_ms(&self) -> u64;
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

impl Clock for TokioClock {
    fn now_ms(&self) -> u64 {
        let elapsed = self.start.elapsed().as_millis() as i64;
        let drifted = elapsed + elapsed * self.drift_ppm / 1_000_000;
        (self.epoch_ms as i64 + drifted).max(0) as u64
    }
}
