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

/// A Unix time in ms as `YYYY-MM-DD HH:MM:SS UTC` (log time is UTC; no time-zone database on
/// the board). Days to a civil date: H. Hinnant's algorithm.
pub fn utc_text(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        rem / 3_600,
        rem % 3_600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod utc_tests {
    use super::*;

    #[test]
    fn utc_text_matches_known_dates() {
        assert_eq!(utc_text(0), "1970-01-01 00:00:00 UTC");
        // 2024-02-29 12:34:56 UTC, a leap day.
        assert_eq!(utc_text(1_709_210_096_000), "2024-02-29 12:34:56 UTC");
        // 2026-12-05 00:00:00 UTC.
        assert_eq!(utc_text(1_796_428_800_000), "2026-12-05 00:00:00 UTC");
    }
}
