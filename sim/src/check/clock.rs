//! Log time, friendly hours and actor timers judged against the world's true time.

use super::{Checker, Violation, violation};
use crate::observe::Observation;

/// How far log time may run ahead of true time, ms: the node's bound is one
/// `LOG_TIME_STEP_MS` (5 minutes) ahead of real time per leader term, with the leader's clock
/// trusted within `CLOCK_SKEW_MS_MAX` (2 minutes) of its members' (`ghatta::state::logtime`;
/// this crate depends on no node crate, so the sum is restated here). A leader a day fast
/// that moved log time with its clock is off by a day.
pub const LOG_TIME_AHEAD_MS_MAX: u64 = 7 * 60 * 1000;

/// How early an actor timer may fire, ms, against true time: a tick is due by log time,
/// which may run ahead of true time by [`LOG_TIME_AHEAD_MS_MAX`]. A daily fee fired by a
/// leader's fast clock fires hours or a day early.
pub const TIMER_EARLY_MS_MAX: u64 = LOG_TIME_AHEAD_MS_MAX;

/// A charge applied this close to the start or end of friendly hours (true time) is not
/// judged, ms: its entry was stamped up to a commit's time before the reference replica
/// applied it (seconds; up to an election after a leader loss) and log time may run up to
/// [`LOG_TIME_AHEAD_MS_MAX`] ahead; ten minutes covers both.
pub const FRIENDLY_EDGE_MS: u64 = 10 * 60 * 1000;

const DAY_MS: u64 = 86_400_000;
const HOUR_MS: u64 = 3_600_000;

/// The world's true calendar: what the clock checker judges against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(unpredictable_function_pointer_comparisons)]
pub struct TrueCalendar {
    /// Unix ms at simulated time zero (what a true clock reads then).
    pub start_unix_ms: u64,
    /// Local time of day at simulated time zero, ms since local midnight.
    pub start_local_ms: u64,
    /// Friendly hours, local `[start, end)` hours (may wrap midnight); `None`: none.
    pub friendly_hours: Option<[u32; 2]>,
    /// Whether a customer's account is prepaid: only a prepaid account's charges carry the
    /// friendly flag (a postpaid one is never disconnected, so its charges never do).
    pub is_prepaid: fn(u64) -> bool,
}

impl TrueCalendar {
    fn local_ms_of_day(&self, t_ms: u64) -> u64 {
        (self.start_local_ms + t_ms) % DAY_MS
    }

    fn friendly_at(&self, t_ms: u64) -> bool {
        let hour = (self.local_ms_of_day(t_ms) / HOUR_MS) as u32;
        match self.friendly_hours {
            Some([a, b]) if a <= b => (a..b).contains(&hour),
            Some([a, b]) => hour >= a || hour < b,
            None => false,
        }
    }

    /// Distance from `t_ms` (true local time) to the nearest start or end of friendly hours.
    fn ms_from_friendly_edge(&self, t_ms: u64) -> u64 {
        let Some([a, b]) = self.friendly_hours else {
            return u64::MAX;
        };
        let now = self.local_ms_of_day(t_ms);
        [a, b]
            .iter()
            .map(|h| {
                let edge = u64::from(*h) * HOUR_MS;
                let d = now.abs_diff(edge);
                d.min(DAY_MS - d)
            })
            .min()
            .unwrap_or(u64::MAX)
    }
}

/// **Time follows the world's true time, whatever one board's clock says** (issue 20's
/// log-time bound, seen from outside the node). Over the reference replica's applied
/// entries:
///
/// - log time is never more than [`LOG_TIME_AHEAD_MS_MAX`] ahead of true time;
/// - an actor timer never fires more than [`TIMER_EARLY_MS_MAX`] before it is due by true
///   time (late ticks are liveness: no leader, no tick, and the liveness checker covers that);
/// - a charge for energy carries the friendly-hours flag of the true local time at which it
///   was applied (not the actor's own view of time), except within [`FRIENDLY_EDGE_MS`] of
///   the window's start or end.
///
/// Memory: constant.
#[derive(Clone, Debug)]
pub struct ClockTruth {
    calendar: TrueCalendar,
    entries: u64,
    ticks: u64,
    charges_judged: u64,
}

impl ClockTruth {
    /// A checker against `calendar`.
    pub fn new(calendar: TrueCalendar) -> Self {
        Self {
            calendar,
            entries: 0,
            ticks: 0,
            charges_judged: 0,
        }
    }

    /// Charges whose friendly flag was judged (not near an edge).
    pub fn charges_judged(&self) -> u64 {
        self.charges_judged
    }

    /// Ticks that fired a timer.
    pub fn ticks(&self) -> u64 {
        self.ticks
    }
}

impl Checker for ClockTruth {
    fn name(&self) -> &'static str {
        "clock_truth"
    }

    fn observe(&mut self, obs: &Observation, out: &mut Vec<Violation>) {
        match *obs {
            Observation::EntryTime {
                t_ms,
                index,
                log_time_ms,
                tick_due_ms,
            } => {
                self.entries += 1;
                let true_ms = self.calendar.start_unix_ms + t_ms;
                if log_time_ms > true_ms + LOG_TIME_AHEAD_MS_MAX {
                    out.push(violation(
                        "clock_truth",
                        t_ms,
                        format!(
                            "entry {index}: log time is {} s ahead of true time (bound {} s)",
                            (log_time_ms - true_ms) / 1000,
                            LOG_TIME_AHEAD_MS_MAX / 1000
                        ),
                    ));
                }
                if let Some(due) = tick_due_ms {
                    self.ticks += 1;
                    if due > true_ms + TIMER_EARLY_MS_MAX {
                        out.push(violation(
                            "clock_truth",
                            t_ms,
                            format!(
                                "entry {index}: an actor timer fired {} s before it was due by \
                                 true time (bound {} s)",
                                (due - true_ms) / 1000,
                                TIMER_EARLY_MS_MAX / 1000
                            ),
                        ));
                    }
                }
            }
            Observation::LedgerCharge {
                t_ms,
                customer,
                energy_wh,
                friendly,
                ..
            } if energy_wh > 0 => {
                // Fees (no energy) carry no friendly flag.
                if self.calendar.ms_from_friendly_edge(t_ms) < FRIENDLY_EDGE_MS {
                    return;
                }
                self.charges_judged += 1;
                let want = self.calendar.friendly_at(t_ms) && (self.calendar.is_prepaid)(customer);
                if friendly != want {
                    let local_min = self.calendar.local_ms_of_day(t_ms) / 60_000;
                    out.push(violation(
                        "clock_truth",
                        t_ms,
                        format!(
                            "customer {customer}: a charge at true local time {:02}:{:02} was \
                             billed {} friendly hours",
                            local_min / 60,
                            local_min % 60,
                            if friendly { "in" } else { "outside" }
                        ),
                    ));
                }
            }
            _ => {}
        }
    }

    fn finish(&mut self, _end_t_ms: u64, _out: &mut Vec<Violation>) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    const START: u64 = 1_780_000_000_000;

    fn checker() -> ClockTruth {
        ClockTruth::new(TrueCalendar {
            start_unix_ms: START,
            // 17:00 local.
            start_local_ms: 17 * HOUR_MS,
            friendly_hours: Some([18, 6]),
            is_prepaid: |c| c % 7 != 0,
        })
    }

    fn run(c: &mut ClockTruth, obs: Observation) -> Vec<Violation> {
        let mut out = Vec::new();
        c.observe(&obs, &mut out);
        out
    }

    fn charge(t_ms: u64, friendly: bool) -> Observation {
        Observation::LedgerCharge {
            t_ms,
            customer: 1,
            energy_wh: 10,
            amount_mpaisa: 100,
            balance_after_mpaisa: 0,
            friendly,
        }
    }

    fn entry(t_ms: u64, log_time_ms: u64, tick_due_ms: Option<u64>) -> Observation {
        Observation::EntryTime {
            t_ms,
            index: 1,
            log_time_ms,
            tick_due_ms,
        }
    }

    #[test]
    fn log_time_a_day_ahead_is_caught_a_few_minutes_is_not() {
        let mut c = checker();
        let t = 3_600_000;
        assert!(run(&mut c, entry(t, START + t + 60_000, None)).is_empty());
        assert_eq!(run(&mut c, entry(t, START + t + DAY_MS, None)).len(), 1);
    }

    #[test]
    fn a_timer_fired_early_by_true_time_is_caught() {
        let mut c = checker();
        let t = 3_600_000;
        // Due an hour from now by true time, fired now.
        let v = run(&mut c, entry(t, START + t, Some(START + t + HOUR_MS)));
        assert_eq!(v.len(), 1, "{v:?}");
        // Due a minute ago: fine.
        assert!(run(&mut c, entry(t, START + t, Some(START + t - 60_000))).is_empty());
        assert_eq!(c.ticks(), 2);
    }

    #[test]
    fn friendly_flags_are_judged_by_true_local_time() {
        let mut c = checker();
        // 17:30 local: not friendly.
        assert!(run(&mut c, charge(HOUR_MS / 2, false)).is_empty());
        assert_eq!(run(&mut c, charge(HOUR_MS / 2, true)).len(), 1);
        // 19:00: friendly.
        assert!(run(&mut c, charge(2 * HOUR_MS, true)).is_empty());
        assert_eq!(run(&mut c, charge(2 * HOUR_MS, false)).len(), 1);
        // 18:02: too close to the edge to judge.
        assert!(run(&mut c, charge(HOUR_MS + 120_000, false)).is_empty());
        assert_eq!(c.charges_judged(), 4);
    }
}
