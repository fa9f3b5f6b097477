//! The grid's recent history on the board, for the cockpit's charts: one sample a second for
//! the last hour, and per-minute minimum, mean and maximum for the last day, in memory.
//!
//! Bounded in entries (so in bytes: [`HISTORY_BYTES_MAX`]). The closed minutes also go to disk
//! (`store.rs`, a week of them), from which a restart takes the day back; the seconds start
//! empty. Logic only: samples and their times are passed in.

use std::collections::VecDeque;

/// One-second samples kept: an hour, the window an operator looks back over after a trip.
pub const SECONDS_KEPT: usize = 3_600;
/// One-minute aggregates kept: a day, to see the evening peak and the night's lows.
pub const MINUTES_KEPT: usize = 1_440;
/// What the history holds at most: [`SECONDS_KEPT`] samples and [`MINUTES_KEPT`]
/// aggregates of the sizes below (~340 KiB), small beside the node's ~23 MiB.
pub const HISTORY_BYTES_MAX: usize =
    SECONDS_KEPT * std::mem::size_of::<Sample>() + MINUTES_KEPT * std::mem::size_of::<Minute>();

/// One reading of the grid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    /// Unix ms.
    pub t_ms: u64,
    /// Frequency, mHz.
    pub frequency_mhz: u64,
    /// Voltage, dV.
    pub voltage_dv: u64,
    /// UFLS stages tripped.
    pub ufls_stages: u64,
    /// Ballast stages held by protection.
    pub ballast_stages: u64,
    /// Generation, load and ballast, W.
    pub power_w: Power,
}

/// Generation, the closed feeders' load and the ballast's draw, W (a sample's, or a minute's
/// means).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Power {
    /// Generation.
    pub generation: u64,
    /// Load of the closed feeders.
    pub load: u64,
    /// Ballast draw.
    pub ballast: u64,
}

/// A minute of samples of one quantity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    /// Lowest.
    pub min: u64,
    /// Mean (rounded down).
    pub mean: u64,
    /// Highest.
    pub max: u64,
}

/// A minute's aggregates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Minute {
    /// Start of the minute, Unix ms.
    pub t_ms: u64,
    /// Frequency, mHz.
    pub frequency_mhz: Span,
    /// Voltage, dV.
    pub voltage_dv: Span,
    /// The minute's mean power, W.
    pub power_w: Power,
}

/// The history.
#[derive(Debug, Default)]
pub struct History {
    seconds: VecDeque<Sample>,
    minutes: VecDeque<Minute>,
    /// Samples of the minute being gathered.
    open: Vec<Sample>,
}

const MINUTE_MS: u64 = 60_000;
/// How far back a sample may be stamped and still be taken for jitter (ignored) rather than a
/// corrected clock (the history from the future dropped).
pub const CLOCK_JITTER_MS_MAX: u64 = MINUTE_MS;

fn span(xs: impl Iterator<Item = u64> + Clone) -> Span {
    let n = xs.clone().count().max(1) as u64;
    Span {
        min: xs.clone().min().unwrap_or(0),
        mean: xs.clone().sum::<u64>() / n,
        max: xs.max().unwrap_or(0),
    }
}

impl History {
    /// Adds a sample; one a little older than the newest is ignored (jitter); one more than
    /// [`CLOCK_JITTER_MS_MAX`] older means the clock was set back, and what came after it goes.
    /// Returns the minute the sample closed, if it opened a new one.
    pub fn push(&mut self, s: Sample) -> Option<Minute> {
        if let Some(b) = self.seconds.back()
            && s.t_ms < b.t_ms
        {
            if b.t_ms - s.t_ms <= CLOCK_JITTER_MS_MAX {
                return None;
            }
            // A clock set right after running fast (an operator, NTP after a GPS fault):
            // what was stamped in the future goes, or the charts would wait for real time to
            // catch up with the error.
            self.seconds.clear();
            self.open.clear();
            self.minutes
                .retain(|m| m.t_ms < s.t_ms / MINUTE_MS * MINUTE_MS);
        }
        let mut closed = None;
        if let Some(first) = self.open.first()
            && s.t_ms / MINUTE_MS != first.t_ms / MINUTE_MS
        {
            let m = Minute {
                t_ms: first.t_ms / MINUTE_MS * MINUTE_MS,
                frequency_mhz: span(self.open.iter().map(|x| x.frequency_mhz)),
                voltage_dv: span(self.open.iter().map(|x| x.voltage_dv)),
                power_w: Power {
                    generation: span(self.open.iter().map(|x| x.power_w.generation)).mean,
                    load: span(self.open.iter().map(|x| x.power_w.load)).mean,
                    ballast: span(self.open.iter().map(|x| x.power_w.ballast)).mean,
                },
            };
            if self.minutes.len() == MINUTES_KEPT {
                self.minutes.pop_front();
            }
            self.minutes.push_back(m);
            self.open.clear();
            closed = Some(m);
        }
        self.open.push(s);
        if self.seconds.len() == SECONDS_KEPT {
            self.seconds.pop_front();
        }
        self.seconds.push_back(s);
        closed
    }

    /// Takes minutes kept from before a restart (`store.rs`), oldest first, as the day's
    /// history; only the newest [`MINUTES_KEPT`] stay.
    pub fn restore_minutes(&mut self, minutes: impl IntoIterator<Item = Minute>) {
        for m in minutes {
            if self.minutes.back().is_some_and(|b| m.t_ms <= b.t_ms) {
                continue;
            }
            if self.minutes.len() == MINUTES_KEPT {
                self.minutes.pop_front();
            }
            self.minutes.push_back(m);
        }
    }

    /// The one-second samples, oldest first.
    pub fn seconds(&self) -> impl Iterator<Item = &Sample> {
        self.seconds.iter()
    }

    /// The closed minutes, oldest first.
    pub fn minutes(&self) -> impl Iterator<Item = &Minute> {
        self.minutes.iter()
    }

    /// The newest sample.
    pub fn latest(&self) -> Option<&Sample> {
        self.seconds.back()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(t_ms: u64, f: u64) -> Sample {
        Sample {
            t_ms,
            frequency_mhz: f,
            voltage_dv: 2_300,
            ufls_stages: 0,
            ballast_stages: 0,
            power_w: Power::default(),
        }
    }

    #[test]
    fn an_hour_of_seconds_and_a_day_of_minutes_and_no_more() {
        let mut h = History::default();
        let t0 = 1_700_000_000_000 / MINUTE_MS * MINUTE_MS;
        let mut closed = 0;
        for i in 0..(MINUTES_KEPT as u64 + 10) * 60 {
            closed += usize::from(h.push(at(t0 + i * 1_000, 50_000 + i % 60)).is_some());
        }
        assert_eq!(
            closed,
            MINUTES_KEPT + 9,
            "each minute closes once, the last still open"
        );
        assert_eq!(h.seconds().count(), SECONDS_KEPT);
        assert_eq!(h.minutes().count(), MINUTES_KEPT);
        let m = h.minutes().last().unwrap();
        assert_eq!(
            m.frequency_mhz,
            Span {
                min: 50_000,
                mean: 50_029,
                max: 50_059
            }
        );
        assert_eq!(m.t_ms % MINUTE_MS, 0);
        // A step back of the wall clock is ignored.
        let n = h.seconds().count();
        let last = h.latest().unwrap().t_ms;
        assert_eq!(h.push(at(last - 5_000, 1)), None);
        assert_eq!(h.latest().unwrap().t_ms, last);
        assert_eq!(h.seconds().count(), n);
        // A clock set back by a day: the history from the "future" goes, new samples count.
        let back = last - 24 * 3_600_000;
        assert_eq!(h.push(at(back, 50_000)), None);
        assert_eq!(h.latest().unwrap().t_ms, back);
        assert!(h.minutes().all(|m| m.t_ms < back / MINUTE_MS * MINUTE_MS));
        assert!(
            h.push(at(back + 60_000, 50_000)).is_some(),
            "minutes close again"
        );
        // After a restart, the stored day comes back; a repeat of a minute held is skipped.
        let day: Vec<Minute> = h.minutes().copied().collect();
        let mut again = History::default();
        again.restore_minutes(day.iter().copied().chain(day.iter().copied()));
        assert!(again.minutes().copied().eq(day.iter().copied()));
    }
}
