//! A token bucket in its GCRA form: packets leave no faster than the link's bit rate, with a
//! small burst allowance, so the modem's buffer never overflows and the channel is shared.
//!
//! The bucket keeps one instant, the *theoretical arrival time* (TAT): when the link will have
//! finished everything admitted so far if it ran at exactly the configured rate. A packet may
//! go when TAT minus the burst allowance is not in the future; it then pushes TAT on by its
//! own air time. Over any window of `t` seconds at most `burst + rate * t` bytes leave.

use tokio::time::{Duration, Instant};

/// A pacer for one transmitter.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    bitrate_bps: u64,
    burst: Duration,
    tat: Option<Instant>,
}

impl TokenBucket {
    /// A bucket at `bitrate_bps` (0 = unlimited) that lets `burst_bytes` go back to back.
    pub fn new(bitrate_bps: u64, burst_bytes: usize) -> Self {
        TokenBucket {
            bitrate_bps,
            burst: air_time(burst_bytes, bitrate_bps),
            tat: None,
        }
    }

    /// The configured rate.
    pub fn bitrate_bps(&self) -> u64 {
        self.bitrate_bps
    }

    /// When a packet of `bytes` may go: `now` or later.
    pub fn ready_at(&self, bytes: usize, now: Instant) -> Instant {
        let Some(tat) = self.tat else {
            return now;
        };
        // A packet costing more than the burst must still go once the link is idle.
        let allowance = self.burst.saturating_sub(air_time(bytes, self.bitrate_bps));
        let at = tat.checked_sub(allowance).unwrap_or(tat);
        at.max(now)
    }

    /// Take `bytes` if the bucket allows them now.
    pub fn try_take(&mut self, bytes: usize, now: Instant) -> bool {
        if self.ready_at(bytes, now) > now {
            return false;
        }
        let start = self.tat.map_or(now, |t| t.max(now));
        self.tat = Some(start + air_time(bytes, self.bitrate_bps));
        true
    }

    /// When everything admitted so far has left the modem.
    pub fn idle_at(&self, now: Instant) -> Instant {
        self.tat.map_or(now, |t| t.max(now))
    }
}

/// Time `bytes` take at `bps` (zero for an unlimited link).
pub fn air_time(bytes: usize, bps: u64) -> Duration {
    if bps == 0 {
        return Duration::ZERO;
    }
    Duration::from_nanos((bytes as u64 * 8).saturating_mul(1_000_000_000) / bps)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn air_time_follows_the_bit_rate() {
        assert_eq!(air_time(100, 64_000), Duration::from_micros(12_500));
        assert_eq!(air_time(1_200, 9_600), Duration::from_secs(1));
        assert_eq!(air_time(100, 0), Duration::ZERO);
    }

    #[test]
    fn the_bucket_allows_a_burst_then_the_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(9_600, 200);
        // 200 bytes back to back, then the next 100 only after their air time.
        assert!(b.try_take(100, t0));
        assert!(b.try_take(100, t0));
        assert!(!b.try_take(100, t0));
        let at = b.ready_at(100, t0);
        assert_eq!(at - t0, air_time(100, 9_600));
        assert!(b.try_take(100, at));
        // An idle link earns no more than the burst.
        let later = at + Duration::from_secs(60);
        assert!(b.try_take(100, later) && b.try_take(100, later));
        assert!(!b.try_take(100, later));
        // A packet larger than the burst goes once the link is idle.
        let big = b.idle_at(later);
        assert!(b.try_take(1_000, big));
    }
}
