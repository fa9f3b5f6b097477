//! The bus scheduler for the shared Modbus line: which customer meter to read next, and until
//! when, so the grid sample (generator and feeder meters, read first in every tick) keeps the
//! protection's rate whatever the customer meters do. Logic without I/O: the field loop passes
//! the time in, makes the reads and reports how they went.
//!
//! - Round-robin: every meter has one slot per `meter_interval_ms`. With many meters a tick
//!   owes `ceil(n x grid_interval_ms / meter_interval_ms)` slots (the loop's long-standing
//!   share); with fewer meters than ticks per interval, one slot every
//!   `meter_interval_ms / n`, so each meter is read once per interval, not once per tick.
//! - A budget per tick: customer reads may use the bus until [`bus_budget_ms`] after the tick
//!   began, each read with that deadline as its own timeout, and a read is started only if
//!   its expected cost fits. A slot that does not fit stays owed (at most one cycle of them)
//!   and the tick is counted as deferred.
//! - A meter that stops answering is skipped exponentially: its slots pass without bus time
//!   until its next probe, [`METER_SKIP_FIRST_MS`] after the failure, doubling up to
//!   [`METER_SKIP_MS_MAX`]. The first failure of an episode and the first answer after it
//!   are reported once, as [`BusEvent`]s for the loop to log.
//!
//! Worst case: the grid sample, then customer reads cut at the budget, so a tick's bus time
//! is at most `max(grid sample, bus_budget_ms)`, whether one, five or every customer meter is
//! silent (tested below with a fake clock and bus).

/// Share of each grid interval kept free of customer reads, percent: the rest of the loop's
/// work (outbox, relays, the shipper's queue) and the timer's wake-up jitter fit in 10 ms of a
/// 100 ms tick, so the next grid sample starts on time.
pub const TICK_RESERVE_PCT: u64 = 10;
/// First skip of a meter that did not answer, ms: two read intervals at the default 1 s, so a
/// single lost read (already retried by the Modbus driver) costs one missed reading, not a
/// timeout in every tick.
pub const METER_SKIP_FIRST_MS: u64 = 2_000;
/// Longest skip, ms: a meter a technician has repowered is read again within a minute, while a
/// dead one costs one timeout a minute on the shared line.
pub const METER_SKIP_MS_MAX: u64 = 60_000;
/// Expected cost of a read before any has been measured, ms: a PZEM-004T read at 9,600 bit/s
/// is an 8-byte request (9 ms) and a 25-byte reply (26 ms) plus the meter's turnaround and a
/// USB adapter's 16 ms latency timer.
pub const READ_COST_MS_INITIAL: u64 = 50;

/// The most bus time customer reads may take in a tick, measured from the tick's start, ms.
pub fn bus_budget_ms(grid_interval_ms: u64) -> u64 {
    grid_interval_ms - grid_interval_ms * TICK_RESERVE_PCT / 100
}

/// The skip before the probe that follows `failures` consecutive failed reads.
pub fn skip_ms(failures: u32) -> u64 {
    let doublings = failures.saturating_sub(1).min(20);
    METER_SKIP_FIRST_MS
        .saturating_mul(1u64 << doublings)
        .min(METER_SKIP_MS_MAX)
}

/// The periods the scheduler works to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BusConfig {
    /// Grid sample period, ms (`field.grid_interval_ms`).
    pub grid_interval_ms: u64,
    /// Each customer meter once per this period, ms (`field.meter_interval_ms`).
    pub meter_interval_ms: u64,
}

/// One read to make.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadSlot {
    /// Index of the meter in the list the scheduler was made with.
    pub meter: usize,
    /// Give up on the read at this time, ms (the tick's bus budget).
    pub deadline_ms: u64,
    /// The meter has not answered lately: this read is a probe.
    pub probe: bool,
}

/// Something to log, once per episode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BusEvent {
    /// A meter that answered did not: it is skipped until `next_probe_ms`.
    Silent {
        /// Meter index.
        meter: usize,
        /// When it is probed next, ms.
        next_probe_ms: u64,
    },
    /// A silent meter answered again after `silent_ms`.
    Answering {
        /// Meter index.
        meter: usize,
        /// How long it was silent, ms.
        silent_ms: u64,
    },
    /// Reads are owed that the bus had no time for (the grid sample takes the whole tick,
    /// or reads cost more than the budget leaves): meters are read less often than asked.
    Starved {
        /// Slots owed now.
        owed: usize,
    },
    /// Owed reads caught up.
    Unstarved,
}

/// Counters of the scheduler (monotonic unless said otherwise).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BusStats {
    /// Reads started.
    pub reads: u64,
    /// Reads that failed or were cut at the budget.
    pub failures: u64,
    /// Of the reads, probes of silent meters.
    pub probes: u64,
    /// Slots of silent meters passed without a read.
    pub skipped: u64,
    /// Ticks that ended with reads owed for lack of bus time.
    pub ticks_deferred: u64,
    /// Meters silent now (gauge).
    pub silent_now: u64,
    /// Episodes of a meter going silent.
    pub silent_episodes: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Meter {
    Answering,
    Silent {
        since_ms: u64,
        failures: u32,
        probe_at_ms: u64,
    },
}

/// The scheduler for one line's customer meters.
#[derive(Clone, Debug)]
pub struct BusScheduler {
    cfg: BusConfig,
    meters: Vec<Meter>,
    cursor: usize,
    /// Slots due and not yet taken (at most one cycle).
    owed: usize,
    /// With fewer meters than ticks per interval: when the next slot falls due, in
    /// thousandths of a ms (so `meter_interval_ms / n` needs no rounding).
    next_slot_ums: Option<u64>,
    tick_deadline_ms: u64,
    /// Expected cost of one read, ms (a moving average of answered reads).
    cost_ms: u64,
    starved: bool,
    stats: BusStats,
}

impl BusScheduler {
    /// A scheduler for `meters` meters, all presumed answering.
    pub fn new(meters: usize, cfg: BusConfig) -> BusScheduler {
        BusScheduler {
            cfg: BusConfig {
                grid_interval_ms: cfg.grid_interval_ms.max(1),
                meter_interval_ms: cfg.meter_interval_ms.max(1),
            },
            meters: vec![Meter::Answering; meters],
            cursor: 0,
            owed: 0,
            next_slot_ums: None,
            tick_deadline_ms: 0,
            cost_ms: READ_COST_MS_INITIAL,
            starved: false,
            stats: BusStats::default(),
        }
    }

    /// The counters.
    pub fn stats(&self) -> BusStats {
        self.stats
    }

    /// Whether meter `meter` is silent now.
    pub fn is_silent(&self, meter: usize) -> bool {
        matches!(self.meters.get(meter), Some(Meter::Silent { .. }))
    }

    /// A tick began at `tick_start_ms` (its grid sample is taken first): add the slots that
    /// fell due and set the tick's bus deadline.
    pub fn begin_tick(&mut self, tick_start_ms: u64) {
        let n = self.meters.len();
        self.tick_deadline_ms = tick_start_ms + bus_budget_ms(self.cfg.grid_interval_ms);
        if n == 0 {
            return;
        }
        let (g, m) = (self.cfg.grid_interval_ms, self.cfg.meter_interval_ms);
        let due = if n as u64 * g >= m {
            // Many meters: a fixed share per tick (what the loop has always read, so a board
            // with healthy meters reads them in the same ticks as before).
            (n as u64 * g).div_ceil(m) as usize
        } else {
            // Few meters: one slot per meter_interval / n, so each meter once per interval.
            let spacing_ums = m * 1_000 / n as u64;
            let now_ums = tick_start_ms * 1_000;
            let mut next = self.next_slot_ums.unwrap_or(now_ums);
            // After a stall, do not burst: at most one cycle is owed anyway.
            if now_ums > next + spacing_ums * n as u64 {
                next = now_ums;
            }
            let mut due = 0;
            while next <= now_ums {
                due += 1;
                next += spacing_ums;
            }
            self.next_slot_ums = Some(next);
            due
        };
        self.owed = (self.owed + due).min(n);
    }

    /// The next read to make at `now_ms`, or `None` when nothing is owed or the next read
    /// would not fit before the tick's deadline (it stays owed). Slots of silent meters not
    /// yet due for a probe are passed over without a read.
    pub fn next(&mut self, now_ms: u64) -> Option<ReadSlot> {
        let n = self.meters.len();
        while self.owed > 0 && n > 0 {
            let i = self.cursor % n;
            let probe = match self.meters[i] {
                Meter::Silent { probe_at_ms, .. } if now_ms < probe_at_ms => {
                    self.stats.skipped += 1;
                    self.take_slot();
                    continue;
                }
                Meter::Silent { .. } => true,
                Meter::Answering => false,
            };
            if now_ms + self.cost_ms > self.tick_deadline_ms {
                return None;
            }
            self.take_slot();
            self.stats.reads += 1;
            if probe {
                self.stats.probes += 1;
            }
            return Some(ReadSlot {
                meter: i,
                deadline_ms: self.tick_deadline_ms,
                probe,
            });
        }
        None
    }

    fn take_slot(&mut self) {
        self.cursor = (self.cursor + 1) % self.meters.len().max(1);
        self.owed -= 1;
    }

    /// How the read of `slot`, started at `started_ms`, went (`answered`), at `now_ms`.
    pub fn finish(
        &mut self,
        slot: ReadSlot,
        started_ms: u64,
        now_ms: u64,
        answered: bool,
    ) -> Option<BusEvent> {
        let was = *self.meters.get(slot.meter)?;
        if answered {
            // Moving average over about four reads: one slow read does not stop the others.
            let took = now_ms.saturating_sub(started_ms);
            self.cost_ms = (3 * self.cost_ms + took).div_ceil(4);
            self.meters[slot.meter] = Meter::Answering;
            return match was {
                Meter::Silent { since_ms, .. } => {
                    self.stats.silent_now -= 1;
                    Some(BusEvent::Answering {
                        meter: slot.meter,
                        silent_ms: now_ms.saturating_sub(since_ms),
                    })
                }
                Meter::Answering => None,
            };
        }
        self.stats.failures += 1;
        match was {
            Meter::Answering => {
                let next_probe_ms = now_ms + skip_ms(1);
                self.meters[slot.meter] = Meter::Silent {
                    since_ms: now_ms,
                    failures: 1,
                    probe_at_ms: next_probe_ms,
                };
                self.stats.silent_now += 1;
                self.stats.silent_episodes += 1;
                Some(BusEvent::Silent {
                    meter: slot.meter,
                    next_probe_ms,
                })
            }
            Meter::Silent {
                since_ms, failures, ..
            } => {
                let failures = failures.saturating_add(1);
                self.meters[slot.meter] = Meter::Silent {
                    since_ms,
                    failures,
                    probe_at_ms: now_ms + skip_ms(failures),
                };
                None
            }
        }
    }

    /// The line itself came back (the grid meters answer again after the adapter was away):
    /// meters that fell silent with it are probed in their next slot, not after their
    /// grown skips. A meter still silent then starts its backoff again from where it was.
    pub fn probe_silent_now(&mut self) {
        for m in &mut self.meters {
            if let Meter::Silent { probe_at_ms, .. } = m {
                *probe_at_ms = 0;
            }
        }
    }

    /// The tick's reads are done: counts a tick that left reads owed, and reports the start
    /// and the end of an episode of them.
    pub fn end_tick(&mut self) -> Option<BusEvent> {
        if self.owed > 0 {
            self.stats.ticks_deferred += 1;
        }
        // Reads owed piling up to half a cycle means the bus cannot keep up, not one slow
        // tick (a probe's, or a meter's first failure, leaves a few owed for the next).
        let n = self.meters.len();
        if !self.starved && n > 0 && self.owed >= n.div_ceil(2).max(1) && self.owed > 1 {
            self.starved = true;
            return Some(BusEvent::Starved { owed: self.owed });
        }
        if self.starved && self.owed == 0 {
            self.starved = false;
            return Some(BusEvent::Unstarved);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use super::*;

    const GRID_MS: u64 = 100;
    const METER_MS: u64 = 1_000;

    fn cfg() -> BusConfig {
        BusConfig {
            grid_interval_ms: GRID_MS,
            meter_interval_ms: METER_MS,
        }
    }

    /// What a fake bus did over a run.
    #[derive(Default)]
    struct Run {
        /// Reads per meter.
        reads: BTreeMap<usize, u64>,
        /// Times of each meter's reads.
        read_at: BTreeMap<usize, Vec<u64>>,
        grid_samples: u64,
        /// Longest bus time of one tick, ms (grid sample and customer reads).
        tick_bus_ms_max: u64,
        events: Vec<(u64, BusEvent)>,
    }

    /// Runs the loop on a fake clock for `duration_ms`: every tick a grid sample of `grid_ms`,
    /// then customer reads of `read_ms` each; a silent meter's read lasts until its deadline
    /// (the driver's own timeout is longer than any budget). Ticks are delayed, never
    /// skipped, like the loop's interval timer.
    fn run(
        s: &mut BusScheduler,
        silent: &BTreeSet<usize>,
        grid_ms: u64,
        read_ms: u64,
        (from_ms, to_ms): (u64, u64),
    ) -> Run {
        let mut out = Run::default();
        let mut tick_at = from_ms;
        while tick_at < to_ms {
            let mut now = tick_at + grid_ms;
            out.grid_samples += 1;
            s.begin_tick(tick_at);
            while let Some(slot) = s.next(now) {
                let start = now;
                let answered = !silent.contains(&slot.meter);
                now = if answered {
                    (now + read_ms).min(slot.deadline_ms)
                } else {
                    slot.deadline_ms
                };
                *out.reads.entry(slot.meter).or_default() += 1;
                out.read_at.entry(slot.meter).or_default().push(start);
                if let Some(ev) = s.finish(slot, start, now, answered) {
                    out.events.push((now, ev));
                }
            }
            if let Some(ev) = s.end_tick() {
                out.events.push((now, ev));
            }
            out.tick_bus_ms_max = out.tick_bus_ms_max.max(now - tick_at);
            // The next tick: on time, or as soon as this one ends if it overran.
            tick_at = (tick_at + GRID_MS).max(now);
        }
        out
    }

    #[test]
    fn budget_is_the_grid_interval_less_the_reserve() {
        assert_eq!(bus_budget_ms(100), 90);
        assert_eq!(bus_budget_ms(1_000), 900);
    }

    #[test]
    fn many_meters_keep_the_share_per_tick_the_loop_always_read() {
        // 300 meters at 10 Hz: 30 a tick, in order, each once a second.
        let mut s = BusScheduler::new(300, cfg());
        s.begin_tick(0);
        let firsts: Vec<usize> = std::iter::from_fn(|| s.next(0).map(|r| r.meter)).collect();
        assert_eq!(firsts, (0..30).collect::<Vec<_>>());
        let r = run(
            &mut BusScheduler::new(300, cfg()),
            &BTreeSet::new(),
            0,
            0,
            (0, 10_000),
        );
        assert!(r.reads.values().all(|&n| n == 10), "{:?}", r.reads);
        // 35 meters: ceil(3.5) = 4 a tick, a little more often than asked, as before.
        let r = run(
            &mut BusScheduler::new(35, cfg()),
            &BTreeSet::new(),
            0,
            0,
            (0, 8_750),
        );
        assert!(
            r.reads.values().all(|&n| n == 11 || n == 10),
            "{:?}",
            r.reads
        );
    }

    /// Regression: with fewer meters than ticks per interval each was read every tick (ten
    /// times a second) instead of once per `meter_interval_ms`.
    #[test]
    fn few_meters_are_each_read_once_per_meter_interval() {
        for n in [1, 3, 7] {
            let mut s = BusScheduler::new(n, cfg());
            let r = run(&mut s, &BTreeSet::new(), 10, 5, (0, 10_000));
            for m in 0..n {
                assert_eq!(r.reads[&m], 10, "{n} meters: meter {m} {:?}", r.read_at[&m]);
                // Evenly: consecutive reads of a meter about one interval apart.
                for w in r.read_at[&m].windows(2) {
                    let gap = w[1] - w[0];
                    assert!((900..=1_100).contains(&gap), "{n} meters: gap {gap}");
                }
            }
            assert_eq!(r.grid_samples, 100);
        }
    }

    #[test]
    fn a_silent_meter_is_skipped_with_doubling_probes_up_to_the_cap_and_reported_once() {
        let mut s = BusScheduler::new(3, cfg());
        let silent = BTreeSet::from([1]);
        let r = run(&mut s, &silent, 10, 5, (0, 300_000));
        let at = &r.read_at[&1];
        // Read in its first slot, then probed after 2, 4, 8, 16, 32 s and every 60 s after.
        let gaps: Vec<u64> = at.windows(2).map(|w| w[1] - w[0]).collect();
        let expect = [2_000, 4_000, 8_000, 16_000, 32_000, 60_000, 60_000, 60_000];
        assert_eq!(gaps.len(), expect.len(), "{gaps:?}");
        for (gap, want) in gaps.iter().zip(expect) {
            // A probe waits for the meter's next slot after its skip (up to one interval).
            assert!((want..=want + METER_MS).contains(gap), "{gaps:?}");
        }
        let silent_events = r
            .events
            .iter()
            .filter(|(_, e)| matches!(e, BusEvent::Silent { meter: 1, .. }))
            .count();
        assert_eq!(silent_events, 1, "{:?}", r.events);
        let st = s.stats();
        assert_eq!((st.silent_now, st.silent_episodes), (1, 1));
        assert_eq!(st.probes, expect.len() as u64);
        assert!(st.skipped >= 290, "{st:?}");
        // The live meters are read once a second throughout.
        assert_eq!((r.reads[&0], r.reads[&2]), (300, 300));
    }

    #[test]
    fn meters_silent_with_the_line_are_probed_in_their_next_slot_when_it_is_back() {
        let mut s = BusScheduler::new(4, cfg());
        let all = BTreeSet::from([0, 1, 2, 3]);
        run(&mut s, &all, 10, 5, (0, 40_000));
        assert_eq!(s.stats().silent_now, 4);
        s.probe_silent_now();
        // Within one interval every meter is read again and answers.
        let r = run(&mut s, &BTreeSet::new(), 10, 5, (40_000, 41_000));
        assert_eq!(r.reads.len(), 4, "{:?}", r.reads);
        assert_eq!(s.stats().silent_now, 0);
    }

    #[test]
    fn a_meter_that_answers_again_ends_its_episode() {
        let mut s = BusScheduler::new(2, cfg());
        run(&mut s, &BTreeSet::from([0]), 10, 5, (0, 10_000));
        assert!(s.is_silent(0));
        let r = run(&mut s, &BTreeSet::new(), 10, 5, (10_000, 30_000));
        assert!(!s.is_silent(0));
        let answered: Vec<_> = r
            .events
            .iter()
            .filter(|(_, e)| matches!(e, BusEvent::Answering { meter: 0, .. }))
            .collect();
        assert_eq!(answered.len(), 1);
        assert_eq!(s.stats().silent_now, 0);
    }

    /// The budget: with one, five or all customer meters silent, every tick's bus time stays
    /// within the grid interval, so grid samples keep the protection's rate (10 Hz), and the
    /// live meters are still read once per interval.
    #[test]
    fn silent_meters_never_slow_the_grid_samples() {
        const N: usize = 30;
        // A generator meter at 9,600 bit/s, and reads on a fast adapter: three reads a tick
        // fit the budget (30 + 3 x 15 = 75 ms), as the share of 30 meters at 10 Hz needs.
        const GRID_SAMPLE_MS: u64 = 30;
        const READ_MS: u64 = 15;
        for silent_n in [1, 5, N] {
            let silent: BTreeSet<usize> = (0..silent_n).map(|i| i * N / silent_n).collect();
            let mut s = BusScheduler::new(N, cfg());
            let r = run(&mut s, &silent, GRID_SAMPLE_MS, READ_MS, (0, 60_000));
            assert!(
                r.tick_bus_ms_max <= bus_budget_ms(GRID_MS),
                "{silent_n} silent: a tick took {} ms",
                r.tick_bus_ms_max
            );
            assert_eq!(r.grid_samples, 600, "{silent_n} silent");
            for m in (0..N).filter(|m| !silent.contains(m)) {
                // Once a second, give or take the slots a probe's tick pushed to the next.
                let n = r.reads[&m];
                assert!(
                    (55..=60).contains(&n),
                    "{silent_n} silent: meter {m} read {n} times"
                );
            }
            for m in &silent {
                // The first read and probes only: at most log2(60 s / 2 s) + 2 in a minute.
                assert!(
                    r.reads[m] <= 7,
                    "silent meter {m} read {} times",
                    r.reads[m]
                );
            }
            assert_eq!(s.stats().silent_now, silent_n as u64);
        }
    }

    #[test]
    fn a_bus_too_slow_for_its_meters_defers_reads_and_says_so_once() {
        // The grid sample alone takes 85 of the 90 ms: no read of 50 ms fits.
        let mut s = BusScheduler::new(20, cfg());
        let r = run(&mut s, &BTreeSet::new(), 85, 50, (0, 5_000));
        assert!(r.reads.is_empty());
        assert_eq!(r.grid_samples, 50);
        let starved = r
            .events
            .iter()
            .filter(|(_, e)| matches!(e, BusEvent::Starved { .. }))
            .count();
        assert_eq!(starved, 1, "{:?}", r.events);
        assert_eq!(s.stats().ticks_deferred, 50);
        // Owed reads never exceed one cycle: the bus is not flooded when it frees up.
        let r = run(&mut s, &BTreeSet::new(), 10, 5, (5_000, 6_000));
        assert!(r.reads.values().all(|&n| n <= 2), "{:?}", r.reads);
        assert!(r.events.iter().any(|(_, e)| *e == BusEvent::Unstarved));
    }
}
