//! Energy per local hour per customer, feeder and plant, derived from the committed log
//! alone, so every replica writes the same `Output::EnergyLocal` records into its outbox at the
//! same sequence numbers and any node can take over the upload.
//!
//! - **Customers**: the `energy_wh` of the billing actor's `Charge` ledger records produced
//!   while applying entries of the hour (so the hours of a customer add up to its ledger, to
//!   the watt-hour).
//! - **Feeders and plants**: each node's committed telemetry integrated over log time with a
//!   zero-order hold: a sample's feeder loads and generation count from its entry's log time
//!   until the node's next sample, for at most [`SAMPLE_HOLD_MAX_MS`] (a node that falls
//!   silent is not credited with energy it did not report). Sums are kept in W·ms, and what
//!   is below one Wh at the end of an hour carries into the next, so the hours of a feeder
//!   add up to its integral within 1 Wh.
//!
//! **Hours are local hours and close by log time**, never by a wall clock: the first entry
//! whose log time (monotonic, stamped by the leader) falls in a later local hour closes the
//! open one before the entry itself is applied, and the hold of every node's last sample is
//! integrated up to the hour's end first. Subjects with zero energy in an hour get no record.
//! An hour with no entries at all closes when the next entry arrives (hours later, after an
//! outage).
//!
//! **Local** is the grid's UTC offset ([`LocalHours`]), replicated state: billing's
//! `SetBillingConfig` is the one input that sets it, taken by the host at the index where
//! billing accepted it. Every offset in use is a whole number of quarter hours, so a local hour
//! starts on a UTC quarter hour, and a local day is a whole number of local hours: the central
//! rebuilds local days from the records alone. Each record carries the offset its hour opened
//! under; an hour open when the offset changes ends at the first local-hour boundary under the
//! new offset (so it is shorter, never longer, than an hour). Local hours rather than 15-minute
//! buckets: a quarter of the records on the satellite link, in the outbox and in every
//! snapshot (ARCHITECTURE.md, `state/`).

use std::collections::BTreeMap;

use ghatta_actor_sdk as sdk;
use serde::{Deserialize, Serialize};

/// One hour of log time, ms.
pub const HOUR_MS: u64 = 3_600_000;
/// One minute, ms (offsets are in minutes).
const MINUTE_MS: i128 = 60_000;

/// The grid's local time as the energy hours need it (replicated: kept in the actor state under
/// a host key, `apply::LOCAL_HOURS_KEY`, so state written before it still decodes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct LocalHours {
    /// The offset in force, minutes: billing's last accepted `utc_offset_min`.
    pub utc_offset_min: i32,
    /// The offset the open hour opened under; `None` for an hour opened before local hours
    /// (a UTC hour: labelled offset 0).
    pub open_offset_min: Option<i32>,
}

impl Default for LocalHours {
    fn default() -> Self {
        LocalHours {
            utc_offset_min: sdk::UTC_OFFSET_MIN_DEFAULT,
            open_offset_min: None,
        }
    }
}

/// The start, in log time, of the local hour under `utc_offset_min` that holds `t_ms`
/// (clamped to the u64 range: hostile offsets and times cannot wrap).
pub(crate) fn local_hour_start(t_ms: u64, utc_offset_min: i32) -> u64 {
    let off = i128::from(utc_offset_min) * MINUTE_MS;
    let local = i128::from(t_ms) + off;
    let start = local - local.rem_euclid(i128::from(HOUR_MS)) - off;
    u64::try_from(start.max(0)).unwrap_or(u64::MAX)
}
/// Longest a telemetry sample is held: a field loop proposes a batch about every second, so
/// 60 s covers a slow radio round and a leader change; beyond it the node is presumed silent.
pub const SAMPLE_HOLD_MAX_MS: u64 = 60_000;
/// W·ms in one Wh.
const WMS_PER_WH: u64 = HOUR_MS;

/// A subject of the telemetry integrals (customers are summed in Wh directly).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
enum Metered {
    /// A node's plant.
    Plant(u64),
    /// (node, feeder).
    Feeder(u64, u16),
}

/// A node's last telemetry sample.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Sample {
    /// Integrated up to this log time.
    done_ms: u64,
    /// Held until this log time at most.
    until_ms: u64,
    generation_w: u32,
    feeders: Vec<(u16, u32)>,
}

/// [`EnergyState`] without its customers, borrowed: what `sm_meta` stores of it (the
/// customers have a table of their own, `layout.rs`).
#[derive(Serialize)]
pub(crate) struct EnergyRestRef<'a> {
    open_hour_ms: &'a Option<u64>,
    metered: &'a BTreeMap<Metered, u64>,
    samples: &'a BTreeMap<u64, Sample>,
}

/// [`EnergyRestRef`] read back.
#[derive(Deserialize)]
pub(crate) struct EnergyRest {
    open_hour_ms: Option<u64>,
    metered: BTreeMap<Metered, u64>,
    samples: BTreeMap<u64, Sample>,
}

/// The aggregation state (replicated: persisted with the state machine and in snapshots).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct EnergyState {
    /// Start of the hour being summed; `None` before the first entry with a log time.
    open_hour_ms: Option<u64>,
    /// Wh billed per customer in the open hour (an entry per customer: stored a row per
    /// entry, only the changed ones after each batch, see `layout.rs`).
    customers: super::tracked::Tracked<u32, u64>,
    /// W·ms per plant and feeder in the open hour, including the carried sub-Wh remainder.
    metered: BTreeMap<Metered, u64>,
    /// Last sample per reporting node.
    samples: BTreeMap<u64, Sample>,
}

impl Sample {
    /// Add the held power over [done_ms, min(to_ms, until_ms)) and advance `done_ms`.
    fn integrate(&mut self, node: u64, to_ms: u64, metered: &mut BTreeMap<Metered, u64>) {
        let end = to_ms.min(self.until_ms);
        if end > self.done_ms {
            let dt = end - self.done_ms;
            if self.generation_w > 0 {
                *metered.entry(Metered::Plant(node)).or_default() +=
                    u64::from(self.generation_w) * dt;
            }
            for (feeder, load_w) in &self.feeders {
                if *load_w > 0 {
                    *metered.entry(Metered::Feeder(node, *feeder)).or_default() +=
                        u64::from(*load_w) * dt;
                }
            }
        }
        self.done_ms = self.done_ms.max(to_ms);
    }
}

impl EnergyState {
    /// Log time has reached `now_ms` (before the entry at that time is applied), under the
    /// local time `lh`. Returns the records of the hours this closes, each with the offset it
    /// opened under, in a deterministic order: customers by id, then plants and feeders by node.
    pub(crate) fn advance(
        &mut self,
        now_ms: u64,
        lh: &mut LocalHours,
    ) -> Vec<(sdk::EnergyHour, i32)> {
        let off = lh.utc_offset_min;
        let hour = local_hour_start(now_ms, off);
        let mut out = Vec::new();
        loop {
            let Some(open) = self.open_hour_ms else {
                self.open_hour_ms = Some(hour);
                lh.open_offset_min = Some(off);
                return out;
            };
            if hour <= open {
                return out;
            }
            // The first local-hour boundary after `open` under the offset in force: `open` +
            // 1 h unless the offset changed while the hour was open. At most `hour`, since
            // `hour` is such a boundary after `open`.
            let end = local_hour_start(open, off)
                .saturating_add(HOUR_MS)
                .min(hour);
            let label = lh.open_offset_min.unwrap_or(0);
            self.close(open, end, label, &mut out);
            // A hold that reaches past the hour's end belongs to the next hour, even when no
            // entry falls in it (log time jumped): close that one too. Holds are shorter than
            // an hour, so this repeats at most once more.
            let held = self.samples.values().any(|s| s.until_ms > end);
            self.open_hour_ms = Some(if held { end } else { hour });
            lh.open_offset_min = Some(off);
        }
    }

    /// Close the hour [`open`, `end`): integrate holds to its end, emit its records labelled
    /// with the offset `utc_offset_min`.
    fn close(
        &mut self,
        open: u64,
        end: u64,
        utc_offset_min: i32,
        out: &mut Vec<(sdk::EnergyHour, i32)>,
    ) {
        for (node, s) in &mut self.samples {
            s.integrate(*node, end, &mut self.metered);
        }
        for (c, wh) in self.customers.take() {
            if wh > 0 {
                out.push((
                    sdk::EnergyHour {
                        hour_start_ms: open,
                        subject: sdk::EnergySubject::Customer(sdk::CustomerId(c)),
                        energy_wh: wh,
                    },
                    utc_offset_min,
                ));
            }
        }
        for (m, wms) in &mut self.metered {
            let wh = *wms / WMS_PER_WH;
            *wms %= WMS_PER_WH;
            if wh > 0 {
                out.push((
                    sdk::EnergyHour {
                        hour_start_ms: open,
                        subject: match *m {
                            Metered::Plant(n) => sdk::EnergySubject::Plant(sdk::NodeId(n)),
                            Metered::Feeder(n, f) => sdk::EnergySubject::Feeder {
                                node: sdk::NodeId(n),
                                feeder: f,
                            },
                        },
                        energy_wh: wh,
                    },
                    utc_offset_min,
                ));
            }
        }
        // Samples whose hold has ended are done; the remainders stay with their subjects.
        self.samples.retain(|_, s| s.until_ms > end);
    }

    /// A committed telemetry input at log time `now_ms`.
    pub(crate) fn on_telemetry(&mut self, t: &sdk::Telemetry, now_ms: u64) {
        let node = t.node.0;
        if let Some(s) = self.samples.get_mut(&node) {
            s.integrate(node, now_ms, &mut self.metered);
        }
        self.samples.insert(
            node,
            Sample {
                done_ms: now_ms,
                until_ms: now_ms + SAMPLE_HOLD_MAX_MS,
                generation_w: t.generation_w,
                // Bounded by the input size limit; duplicates of a feeder each count as sent.
                feeders: t.feeders.iter().map(|f| (f.feeder, f.load_w)).collect(),
            },
        );
    }

    /// All but the customers (see [`EnergyRestRef`]).
    pub(crate) fn rest(&self) -> EnergyRestRef<'_> {
        EnergyRestRef {
            open_hour_ms: &self.open_hour_ms,
            metered: &self.metered,
            samples: &self.samples,
        }
    }

    /// The state stored as `rest` and `customers` (as stored: no changes to write).
    pub(crate) fn from_parts(rest: EnergyRest, customers: BTreeMap<u32, u64>) -> Self {
        EnergyState {
            open_hour_ms: rest.open_hour_ms,
            customers: customers.into(),
            metered: rest.metered,
            samples: rest.samples,
        }
    }

    /// Wh billed per customer in the open hour.
    pub(crate) fn customers(&self) -> &BTreeMap<u32, u64> {
        &self.customers
    }

    /// The customers whose open-hour energy changed since the last call, with their Wh now
    /// (`None`: removed), to store (see `Tracked::take_changes`).
    pub(crate) fn take_customer_changes(&mut self) -> impl Iterator<Item = (u32, Option<u64>)> {
        self.customers
            .take_changes()
            .map(|(c, wh)| (c, wh.copied()))
    }

    /// A ledger record committed in the open hour.
    pub(crate) fn on_ledger(&mut self, l: &sdk::LedgerRecord) {
        if let Some((energy_wh, _, _)) = l.kind.charge()
            && energy_wh > 0
        {
            let e = self.customers.entry_or_default(l.customer.0);
            *e = e.saturating_add(energy_wh);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Local time at UTC+0, so hours read plainly.
    fn utc() -> LocalHours {
        LocalHours {
            utc_offset_min: 0,
            open_offset_min: None,
        }
    }

    fn telemetry(node: u64, gen_w: u32, feeder_w: u32) -> sdk::Telemetry {
        sdk::Telemetry {
            node: sdk::NodeId(node),
            frequency_mhz: 50_000,
            voltage_dv: 2_300,
            generation_w: gen_w,
            ballast_w: 0,
            ballast_capacity_w: 0,
            feeders: vec![sdk::FeederLoad {
                feeder: 1,
                load_w: feeder_w,
                closed: true,
            }],
        }
    }

    #[test]
    fn hours_close_by_log_time_and_integrate_held_telemetry_across_the_boundary() {
        let t0 = 100 * HOUR_MS;
        let mut utc = utc();
        let mut e = EnergyState::default();
        assert!(e.advance(t0, &mut utc).is_empty());
        // 36 kW generation, 3.6 kW feeder, sampled every 30 s for the whole hour, the last
        // sample 30 s before the hour ends (its hold reaches the boundary).
        let mut now = t0;
        while now < t0 + HOUR_MS {
            assert!(e.advance(now, &mut utc).is_empty());
            e.on_telemetry(&telemetry(2, 36_000, 3_600), now);
            now += 30_000;
        }
        let charge = sdk::LedgerRecord {
            customer: sdk::CustomerId(9),
            at_ms: t0,
            kind: sdk::LedgerKind::Charge {
                energy_wh: 123,
                amount_mpaisa: 1,
                friendly: false,
            },
            balance_after_mpaisa: 0,
            tariff_version: 1,
        };
        e.on_ledger(&charge);
        e.on_ledger(&charge);
        // The next entry is 3 hours later (an outage): the open hour closes, nothing else.
        let closed = e.advance(t0 + 3 * HOUR_MS + 5, &mut utc);
        let get = |s: sdk::EnergySubject| {
            closed
                .iter()
                .find(|(h, _)| h.subject == s)
                .map(|(h, _)| (h.hour_start_ms, h.energy_wh))
        };
        assert_eq!(
            get(sdk::EnergySubject::Customer(sdk::CustomerId(9))),
            Some((t0, 246))
        );
        assert_eq!(
            get(sdk::EnergySubject::Plant(sdk::NodeId(2))),
            Some((t0, 36_000))
        );
        assert_eq!(
            get(sdk::EnergySubject::Feeder {
                node: sdk::NodeId(2),
                feeder: 1
            }),
            Some((t0, 3_600))
        );
        // The last sample's hold ran 30 s into the next hour (no entry in it): 300 Wh of
        // generation and 30 Wh of feeder there, closed by the same entry.
        let next: Vec<_> = closed
            .iter()
            .filter(|(h, _)| h.hour_start_ms == t0 + HOUR_MS)
            .map(|(h, _)| h.energy_wh)
            .collect();
        assert_eq!(next, vec![300, 30]);
        assert_eq!(closed.len(), 5);
        // Nothing is held into the later hours: the node fell silent.
        assert!(e.advance(t0 + 5 * HOUR_MS, &mut utc).is_empty());
    }

    #[test]
    fn a_sample_held_over_the_boundary_splits_between_the_hours() {
        let t0 = 7 * HOUR_MS;
        let mut utc = utc();
        let mut e = EnergyState::default();
        e.advance(t0, &mut utc);
        // One sample 20 s before the end of the hour, the next 20 s after it.
        let s1 = t0 + HOUR_MS - 20_000;
        e.advance(s1, &mut utc);
        e.on_telemetry(&telemetry(1, 3_600_000, 0), s1);
        let closed = e.advance(t0 + HOUR_MS + 20_000, &mut utc);
        // 3.6 MW for 20 s = 20 kWh in the first hour.
        assert_eq!(closed.len(), 1);
        assert_eq!(closed[0].0.energy_wh, 20_000);
        e.on_telemetry(&telemetry(1, 0, 0), t0 + HOUR_MS + 20_000);
        let closed = e.advance(t0 + 2 * HOUR_MS, &mut utc);
        assert_eq!(closed[0].0.energy_wh, 20_000, "the other 20 s");
    }

    fn charge(customer: u32, energy_wh: u64) -> sdk::LedgerRecord {
        sdk::LedgerRecord {
            customer: sdk::CustomerId(customer),
            at_ms: 0,
            kind: sdk::LedgerKind::Charge {
                energy_wh,
                amount_mpaisa: 1,
                friendly: false,
            },
            balance_after_mpaisa: 0,
            tariff_version: 1,
        }
    }

    #[test]
    fn nepal_hours_start_at_a_quarter_past_utc() {
        const MIN: u64 = 60_000;
        assert_eq!(local_hour_start(10 * HOUR_MS, 345), 9 * HOUR_MS + 15 * MIN);
        assert_eq!(
            local_hour_start(10 * HOUR_MS + 15 * MIN, 345),
            10 * HOUR_MS + 15 * MIN
        );
        assert_eq!(local_hour_start(10 * HOUR_MS, -570), 9 * HOUR_MS + 30 * MIN);
        // Hostile ends clamp instead of wrapping.
        assert_eq!(local_hour_start(0, 345), 0);
        assert_eq!(local_hour_start(u64::MAX, 0), u64::MAX - u64::MAX % HOUR_MS);
        let mut lh = LocalHours::default();
        let mut e = EnergyState::default();
        let t0 = 100 * HOUR_MS + 20 * MIN; // 05:05 local
        e.advance(t0, &mut lh);
        e.on_ledger(&charge(1, 10));
        // 10:14 UTC is still 15:59 local of the same hour: nothing closes.
        assert!(e.advance(100 * HOUR_MS + 74 * MIN, &mut lh).is_empty());
        e.on_ledger(&charge(1, 5));
        let closed = e.advance(101 * HOUR_MS + 15 * MIN, &mut lh);
        let hour = sdk::EnergyHour {
            hour_start_ms: 100 * HOUR_MS + 15 * MIN,
            subject: sdk::EnergySubject::Customer(sdk::CustomerId(1)),
            energy_wh: 15,
        };
        assert_eq!(closed, vec![(hour, 345)]);
    }

    #[test]
    fn an_offset_change_ends_the_open_hour_at_the_new_boundary() {
        const MIN: u64 = 60_000;
        let mut lh = LocalHours::default();
        let mut e = EnergyState::default();
        // Open at 10:15 UTC (16:00 local at +5:45).
        e.advance(10 * HOUR_MS + 20 * MIN, &mut lh);
        e.on_ledger(&charge(1, 7));
        // The grid moves to +6:00 at 10:30: local hours now start on the UTC hour, so the
        // open hour ends at 11:00 (45 minutes), labelled with the offset it opened under.
        lh.utc_offset_min = 360;
        assert!(e.advance(10 * HOUR_MS + 59 * MIN, &mut lh).is_empty());
        let closed = e.advance(11 * HOUR_MS, &mut lh);
        assert_eq!(closed.len(), 1);
        assert_eq!(closed[0].0.hour_start_ms, 10 * HOUR_MS + 15 * MIN);
        assert_eq!(closed[0].1, 345);
        e.on_ledger(&charge(1, 3));
        let closed = e.advance(12 * HOUR_MS + 5, &mut lh);
        assert_eq!(
            (closed[0].0.hour_start_ms, closed[0].1),
            (11 * HOUR_MS, 360)
        );
    }

    #[test]
    fn an_hour_opened_before_local_hours_closes_as_a_utc_hour() {
        const MIN: u64 = 60_000;
        // State written before local hours: a UTC hour open, no offset recorded.
        let mut e = EnergyState::default();
        let mut old = utc();
        e.advance(10 * HOUR_MS + 5 * MIN, &mut old);
        e.on_ledger(&charge(1, 4));
        let mut lh = LocalHours::default();
        let closed = e.advance(10 * HOUR_MS + 16 * MIN, &mut lh);
        // [10:00, 10:15) UTC, labelled UTC; local hours from then on.
        assert_eq!(closed.len(), 1);
        assert_eq!((closed[0].0.hour_start_ms, closed[0].1), (10 * HOUR_MS, 0));
        assert_eq!(lh.open_offset_min, Some(345));
    }
}
