//! Log time: how far one entry may move the replicated clock, decided from the log alone.
//!
//! Every actor reads time only as the entry's log time, so a leader whose wall clock is a day
//! fast must not move log time a day: flat fees for the day would all be charged at once and
//! friendly hours judged at the wrong hour, on every replica, for good. The rule runs in
//! `apply.rs` on every replica, so it uses only what the log carries: the previous entry's log
//! time, the entry's term, the leader's wall clock (`Proposal::time_ms`), its monotonic clock
//! and its count of the members' clocks (`Proposal::clock`, a `raft::LeaderClock`).
//!
//! The rule, for an entry of term `T` stamped with wall clock `w`, monotonic `m` and members'
//! time `q` (when a majority of voters reported), after log time `prev`:
//!
//! 1. The first entry of a term anchors the term: `anchor = (prev, m)` (the log's very first
//!    entry, with no log time before it, anchors at its stamp).
//! 2. With `q`: the leader's clock is trusted only within [`CLOCK_SKEW_MS_MAX`] of `q`;
//!    further off, the entry is stamped `q` instead (and a `ClockSkew` alarm raised once per
//!    term). `q` also re-anchors the term at `max(prev, min(w, q))`: the members agree on
//!    that time, so log time may catch up to it (after a whole-grid outage, say).
//! 3. Without `q`, the leader's clock is taken as it is, up to the cap.
//! 4. Cap: `anchor_log + (m - anchor_mono) + LOG_TIME_STEP_MS`: log time runs at most as fast
//!    as real time elapsed since the anchor, plus one step. A wall clock stepped forward
//!    while the leader leads is caught by its monotonic clock (and alarmed when it is more
//!    than [`CLOCK_SKEW_MS_MAX`] past the cap).
//! 5. `log = max(prev, min(stamp, cap))`: never backwards.
//!
//! What it costs: a term adds at most one [`LOG_TIME_STEP_MS`] ahead of real time, so only
//! many elections in a row with a fast leader each time could push log time further (each
//! is seconds long, and a median of members' clocks pulls the stamp back as soon as they
//! report). A slow leader's clock holds log time back only until the members' time corrects
//! its stamp (rule 2). Without members' time, a new term's log time starts from the previous
//! entry's, so it may lag real time by the gap before the term's first entry less one step,
//! until members report (each forwarded field batch does, about every second). Everything
//! here comes from the leader: a compromised leader can write
//! any evidence, as it can write any entry; this bounds a wrong clock, not a hostile node.
//!
//! Why a constant and not a node.toml key: every replica must apply the same rule to the same
//! entry, and a per-node setting that differs between two boards would make their state
//! hashes part. A change to these numbers is a change of the replicated state machine.

use serde::{Deserialize, Serialize};

use crate::raft::LeaderClock;

/// How far log time may run ahead of real time elapsed in one leader term, ms. Five minutes:
/// far above the drift of any working board's crystal over a term (1,000 ppm over a day is
/// 86 s) and the few seconds a slow link adds, far below the hour that friendly hours and
/// energy hours are judged in, and a day's flat fee is never charged early by it.
pub const LOG_TIME_STEP_MS: u64 = 5 * 60 * 1000;

/// How far the leader's wall clock may be from the members' (`LeaderClock::quorum_ms`)
/// before it is not used to stamp entries and a `ClockSkew` alarm is raised, ms. Two minutes:
/// the members' readings arrive up to a forward's retry deadline late (30 s) over links of
/// seconds, and NTP-less boards drift apart by seconds a day; a minute-level disagreement is
/// already a broken clock for billing by the hour.
pub const CLOCK_SKEW_MS_MAX: u64 = 2 * 60 * 1000;

/// The rule's state, carried in the replicated state (every replica holds the same).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogClock {
    /// Term of the anchor (0: none yet).
    pub term: u64,
    /// Log time at the anchor, Unix ms.
    pub anchor_log_ms: u64,
    /// The leader's monotonic clock at the anchor, ms.
    pub anchor_mono_ms: u64,
    /// A `ClockSkew` alarm was raised in this term already.
    pub skew_alarmed: bool,
}

/// What [`LogClock::advance`] decided for one entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Advance {
    /// The entry's log time, Unix ms.
    pub log_time_ms: u64,
    /// Raise a `ClockSkew` alarm: the leader's wall clock was this far off (ms, positive:
    /// fast) from the members' time, or from the term's cap when no members' time was known.
    pub skew_alarm_ms: Option<i64>,
}

fn signed_diff(a: u64, b: u64) -> i64 {
    let d = i128::from(a) - i128::from(b);
    d.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64
}

impl LogClock {
    /// Log time of an entry of `term` stamped `wall_ms` with `clock`, after log time
    /// `prev_ms`; updates the anchor. Pure: the same inputs give the same answer on every
    /// replica.
    pub fn advance(
        &mut self,
        prev_ms: u64,
        term: u64,
        wall_ms: u64,
        clock: &LeaderClock,
    ) -> Advance {
        // A new term, or a monotonic clock that went backwards (it cannot within one
        // leader's term; input from the log is still never trusted to be sane).
        if term != self.term || clock.mono_ms < self.anchor_mono_ms {
            *self = LogClock {
                term,
                anchor_log_ms: prev_ms,
                anchor_mono_ms: clock.mono_ms,
                skew_alarmed: self.skew_alarmed && term == self.term,
            };
        }
        // Genesis: no log time yet, nothing to bound against; the first entry of the log sets
        // it (a grid is formed by an operator, who checks the date, `ghatta status`).
        if prev_ms == 0 && self.anchor_log_ms == 0 {
            self.anchor_log_ms = wall_ms;
        }
        let mut skew = None;
        let stamp = match clock.quorum_ms {
            Some(q) => {
                let off = signed_diff(wall_ms, q);
                // Members' time re-anchors the term: they agree it is at least this late.
                let agreed = prev_ms.max(wall_ms.min(q));
                if agreed > self.anchor_log_ms {
                    self.anchor_log_ms = agreed;
                    self.anchor_mono_ms = clock.mono_ms;
                }
                if off.unsigned_abs() > CLOCK_SKEW_MS_MAX {
                    skew = Some(off);
                    q
                } else {
                    wall_ms
                }
            }
            None => wall_ms,
        };
        let elapsed = clock.mono_ms - self.anchor_mono_ms;
        let cap = self
            .anchor_log_ms
            .saturating_add(elapsed)
            .saturating_add(LOG_TIME_STEP_MS);
        if skew.is_none() && stamp > cap.saturating_add(CLOCK_SKEW_MS_MAX) {
            skew = Some(signed_diff(stamp, cap.saturating_sub(LOG_TIME_STEP_MS)));
        }
        let log_time_ms = prev_ms.max(stamp.min(cap));
        let skew_alarm_ms = match skew {
            Some(off) if !self.skew_alarmed => {
                self.skew_alarmed = true;
                Some(off)
            }
            _ => None,
        };
        Advance {
            log_time_ms,
            skew_alarm_ms,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY_MS: u64 = 24 * 3600 * 1000;
    const T0: u64 = 1_780_000_000_000;

    fn clock(mono_ms: u64, quorum_ms: Option<u64>) -> LeaderClock {
        LeaderClock { mono_ms, quorum_ms }
    }

    #[test]
    fn a_true_clock_is_followed_exactly() {
        let mut c = LogClock::default();
        let mut prev = T0;
        for s in 1..1000u64 {
            let a = c.advance(prev, 3, T0 + s * 1000, &clock(50_000 + s * 1000, None));
            assert_eq!(a.log_time_ms, T0 + s * 1000);
            assert_eq!(a.skew_alarm_ms, None);
            prev = a.log_time_ms;
        }
    }

    #[test]
    fn a_leader_a_day_fast_moves_log_time_by_real_time_plus_one_step() {
        let mut c = LogClock::default();
        let mut prev = T0;
        let mut alarms = 0;
        // An hour of entries, one a second, from a leader whose wall clock is a day ahead and
        // no members' time known (they have not reported).
        for s in 1..=3600u64 {
            let a = c.advance(prev, 7, T0 + DAY_MS + s * 1000, &clock(s * 1000, None));
            alarms += usize::from(a.skew_alarm_ms.is_some());
            prev = a.log_time_ms;
        }
        assert!(prev <= T0 + 3600 * 1000 + LOG_TIME_STEP_MS, "{prev}");
        assert_eq!(alarms, 1, "one alarm per term");
    }

    #[test]
    fn members_time_replaces_a_skewed_leader_clock_both_ways() {
        for wall_off in [DAY_MS as i64, -(DAY_MS as i64)] {
            let mut c = LogClock::default();
            let mut prev = T0;
            for s in 1..=100u64 {
                let truth = T0 + s * 1000;
                let wall = (truth as i64 + wall_off) as u64;
                let a = c.advance(prev, 2, wall, &clock(s * 1000, Some(truth)));
                assert_eq!(a.log_time_ms, truth, "offset {wall_off}");
                assert_eq!(a.skew_alarm_ms.is_some(), s == 1);
                prev = a.log_time_ms;
            }
        }
    }

    #[test]
    fn log_time_catches_up_with_the_members_after_a_whole_grid_outage() {
        let mut c = LogClock::default();
        // Log time stopped a day ago; the new leader and its members all say it is now.
        let now = T0 + DAY_MS;
        let a = c.advance(T0, 9, now, &clock(10, Some(now - 500)));
        assert_eq!(a.log_time_ms, now);
        assert_eq!(a.skew_alarm_ms, None);
        // Without members' time, only one step.
        let mut c = LogClock::default();
        let a = c.advance(T0, 9, now, &clock(10, None));
        assert_eq!(a.log_time_ms, T0 + LOG_TIME_STEP_MS);
    }

    #[test]
    fn log_time_never_goes_backwards() {
        let mut c = LogClock::default();
        let a = c.advance(T0, 1, T0 - DAY_MS, &clock(5, None));
        assert_eq!(a.log_time_ms, T0);
        // A monotonic clock that went backwards re-anchors instead of underflowing.
        let a = c.advance(T0, 1, T0 + 1000, &clock(1, None));
        assert_eq!(a.log_time_ms, T0 + 1000);
    }

    #[test]
    fn each_new_term_adds_at_most_one_step() {
        let mut c = LogClock::default();
        let mut prev = T0;
        for term in 1..=10u64 {
            let a = c.advance(prev, term, T0 + DAY_MS, &clock(term * 1000, None));
            prev = a.log_time_ms;
        }
        assert_eq!(prev, T0 + 10 * LOG_TIME_STEP_MS);
    }
}
