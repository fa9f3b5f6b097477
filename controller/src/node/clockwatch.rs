//! The leader's count of its members' clocks: what time the quorum thinks it is.
//!
//! Every forwarded proposal carries its origin's wall clock (`Forward::origin_time_ms`); the
//! leader keeps the latest reading per member with its own monotonic time of arrival and,
//! when stamping an entry, projects each reading to now by the monotonic time since and takes
//! the median with its own wall clock (`LeaderClock::quorum_ms`). Projecting by the monotonic
//! clock, not by an offset from the leader's wall clock, is what makes a step of the
//! leader's own wall clock show: an offset taken before the step would move with it. The state machine
//! then bounds log time by it (`state::logtime`): a leader whose clock is a day fast is
//! outvoted by two members whose clocks are right. No I/O: times are passed in.

use std::collections::BTreeMap;

/// A member's reading older than this on the leader's monotonic clock is not counted, ms:
/// members with a field loop forward a batch every second or so; a member silent for five
/// minutes is down or cut off, and its clock may have moved since.
pub const CLOCK_SAMPLE_FRESH_MS: u64 = 5 * 60 * 1000;

/// Members whose readings are kept at most: a grid has a handful of boards; the leader
/// forgets the stalest reading beyond this, so forwards from ids that are not (or no longer)
/// members cannot grow the map.
pub const CLOCK_SAMPLES_MAX: usize = 32;

#[derive(Debug, Clone, Copy)]
struct Sample {
    /// The member's wall clock, Unix ms.
    origin_ms: u64,
    /// The leader's monotonic clock when it arrived, ms.
    at_mono_ms: u64,
}

/// The latest reading of each member's clock, relative to the leader's.
#[derive(Debug, Default)]
pub struct ClockWatch {
    samples: BTreeMap<u64, Sample>,
}

impl ClockWatch {
    /// A forwarded proposal from `origin` said its clock read `origin_ms` when it was sent;
    /// it arrived at the leader's monotonic `mono_ms`. A reading from a retried forward is up
    /// to its retry deadline old: it makes the member look slow by that much, well inside
    /// `state::logtime::CLOCK_SKEW_MS_MAX`.
    pub fn record(&mut self, origin: u64, origin_ms: u64, mono_ms: u64) {
        self.samples.insert(
            origin,
            Sample {
                origin_ms,
                at_mono_ms: mono_ms,
            },
        );
        while self.samples.len() > CLOCK_SAMPLES_MAX {
            let stalest = self
                .samples
                .iter()
                .min_by_key(|(_, s)| s.at_mono_ms)
                .map(|(id, _)| *id);
            match stalest {
                Some(id) => self.samples.remove(&id),
                None => break,
            };
        }
    }

    /// The voters' time now, Unix ms: the median of `voters`' clocks (`me`'s is `now_ms`,
    /// the others' from fresh readings), or `None` while fewer than a majority of voters are
    /// counted. With an even count the lower middle is taken: a wrong clock that is fast
    /// does the harm (fees charged early), so ties go to the slower reading.
    pub fn quorum_ms(&self, me: u64, voters: &[u64], now_ms: u64, mono_ms: u64) -> Option<u64> {
        let mut clocks: Vec<u64> = voters
            .iter()
            .filter_map(|v| {
                if *v == me {
                    return Some(now_ms);
                }
                self.samples
                    .get(v)
                    .filter(|s| {
                        mono_ms >= s.at_mono_ms && mono_ms - s.at_mono_ms <= CLOCK_SAMPLE_FRESH_MS
                    })
                    .map(|s| s.origin_ms.saturating_add(mono_ms - s.at_mono_ms))
            })
            .collect();
        if clocks.is_empty() || clocks.len() < voters.len() / 2 + 1 {
            return None;
        }
        clocks.sort_unstable();
        Some(clocks[(clocks.len() - 1) / 2])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_780_000_000_000;
    const DAY: u64 = 86_400_000;

    #[test]
    fn two_true_members_outvote_a_fast_leader() {
        let mut w = ClockWatch::default();
        w.record(2, NOW - DAY + 300, 1_000);
        w.record(3, NOW - DAY - 200, 1_000);
        let q = w.quorum_ms(1, &[1, 2, 3], NOW, 1_000).unwrap();
        assert_eq!(q, NOW - DAY + 300, "the median of three");
    }

    #[test]
    fn a_step_of_the_leaders_own_clock_after_the_readings_shows() {
        // Regression: readings kept as offsets from the leader's wall clock moved with the
        // leader's step, so a leader stepped six hours ahead counted its members six hours
        // ahead too (the clock-step scenario's first run).
        let mut w = ClockWatch::default();
        w.record(2, NOW, 1_000);
        w.record(3, NOW, 1_000);
        let q = w.quorum_ms(1, &[1, 2, 3], NOW + 6 * 3_600_000 + 2_000, 3_000);
        assert_eq!(q, Some(NOW + 2_000));
    }

    #[test]
    fn no_quorum_time_without_a_majority_of_fresh_readings() {
        let mut w = ClockWatch::default();
        assert_eq!(w.quorum_ms(1, &[1, 2, 3], NOW, 0), None);
        w.record(2, NOW, 0);
        // Leader and one member: a majority of three.
        assert_eq!(w.quorum_ms(1, &[1, 2, 3], NOW, 10), Some(NOW));
        // The reading goes stale.
        assert_eq!(
            w.quorum_ms(1, &[1, 2, 3], NOW, CLOCK_SAMPLE_FRESH_MS + 1),
            None
        );
        // Readings from non-voters are not counted.
        let mut w = ClockWatch::default();
        w.record(9, NOW, 0);
        assert_eq!(w.quorum_ms(1, &[1, 2, 3], NOW, 0), None);
    }

    #[test]
    fn ties_go_to_the_slower_clock_and_garbage_does_not_panic() {
        let mut w = ClockWatch::default();
        w.record(2, NOW - DAY, 0);
        assert_eq!(w.quorum_ms(1, &[1, 2], NOW, 0), Some(NOW - DAY));
        w.record(2, u64::MAX, 0);
        w.record(3, 0, 5);
        assert!(w.quorum_ms(1, &[1, 2, 3], NOW, 10).is_some());
        // A reading from the leader's monotonic future (cannot happen) is not counted.
        assert_eq!(w.quorum_ms(1, &[1, 3], NOW, 1), None);
    }

    #[test]
    fn the_map_is_bounded() {
        let mut w = ClockWatch::default();
        for id in 0..1_000u64 {
            w.record(id, NOW, id);
        }
        assert_eq!(w.samples.len(), CLOCK_SAMPLES_MAX);
        assert!(w.samples.contains_key(&999));
    }
}
