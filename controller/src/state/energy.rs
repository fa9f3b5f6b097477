//! Hourly energy aggregates per customer, feeder and plant, derived from the committed log
//! alone, so every replica writes the same `Output::EnergyHour` records into its outbox at the
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
//! **Hours close by log time**, never by a wall clock: the first entry whose log time
//! (monotonic, stamped by the leader) falls in a later UTC hour closes the open one before the
//! entry itself is applied, and the hold of every node's last sample is integrated up to the
//! hour's end first. Subjects with zero energy in an hour get no record. An hour with no
//! entries at all closes when the next entry arrives (hours later, after an outage).

use std::collections::BTreeMap;

use ghatta_actor_sdk as sdk;
use serde::{Deserialize, Serialize};

/// One hour of log time, ms.
pub const HOUR_MS: u64 = 3_600_000;
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
    /// Log time has reached `now_ms` (before the entry at that time is applied). Returns the
    /// records of the hour this closes, if it closes one, in a deterministic order:
    /// customers by id, then plants and feeders by node.
    pub(crate) fn advance(&mut self, now_ms: u64) -> Vec<sdk::EnergyHour> {
        let hour = now_ms - now_ms % HOUR_MS;
        let mut out = Vec::new();
        loop {
            let Some(open) = self.open_hour_ms else {
                self.open_hour_ms = Some(hour);
                return out;
            };
            if hour <= open {
                return out;
            }
            let end = open + HOUR_MS;
            self.close(open, &mut out);
            // A hold that reaches past the hour's end belongs to the next hour, even when no
            // entry falls in it (log time jumped): close that one too. Holds are shorter than
            // an hour, so this repeats at most once more.
            let held = self.samples.values().any(|s| s.until_ms > end);
            self.open_hour_ms = Some(if held { end } else { hour });
        }
    }

    /// Close the hour starting at `open`: integrate holds to its end, emit its records.
    fn close(&mut self, open: u64, out: &mut Vec<sdk::EnergyHour>) {
        let end = open + HOUR_MS;
        for (node, s) in &mut self.samples {
            s.integrate(*node, end, &mut self.metered);
        }
        for (c, wh) in self.customers.take() {
            if wh > 0 {
                out.push(sdk::EnergyHour {
                    hour_start_ms: open,
                    subject: sdk::EnergySubject::Customer(sdk::CustomerId(c)),
                    energy_wh: wh,
                });
            }
        }
        for (m, wms) in &mut self.metered {
            let wh = *wms / WMS_PER_WH;
            *wms %= WMS_PER_WH;
            if wh > 0 {
                out.push(sdk::EnergyHour {
                    hour_start_ms: open,
                    subject: match *m {
                        Metered::Plant(n) => sdk::EnergySubject::Plant(sdk::NodeId(n)),
                        Metered::Feeder(n, f) => sdk::EnergySubject::Feeder {
                            node: sdk::NodeId(n),
                            feeder: f,
                        },
                    },
                    energy_wh: wh,
                });
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
        if let sdk::LedgerKind::Charge { energy_wh, .. } = l.kind
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
        let mut e = EnergyState::default();
        assert!(e.advance(t0).is_empty());
        // 36 kW generation, 3.6 kW feeder, sampled every 30 s for the whole hour, the last
        // sample 30 s before the hour ends (its hold reaches the boundary).
        let mut now = t0;
        while now < t0 + HOUR_MS {
            assert!(e.advance(now).is_empty());
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
        let closed = e.advance(t0 + 3 * HOUR_MS + 5);
        let get = |s: sdk::EnergySubject| {
            closed
                .iter()
                .find(|h| h.subject == s)
                .map(|h| (h.hour_start_ms, h.energy_wh))
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
            .filter(|h| h.hour_start_ms == t0 + HOUR_MS)
            .map(|h| h.energy_wh)
            .collect();
        assert_eq!(next, vec![300, 30]);
        assert_eq!(closed.len(), 5);
        // Nothing is held into the later hours: the node fell silent.
        assert!(e.advance(t0 + 5 * HOUR_MS).is_empty());
    }

    #[test]
    fn a_sample_held_over_the_boundary_splits_between_the_hours() {
        let t0 = 7 * HOUR_MS;
        let mut e = EnergyState::default();
        e.advance(t0);
        // One sample 20 s before the end of the hour, the next 20 s after it.
        let s1 = t0 + HOUR_MS - 20_000;
        e.advance(s1);
        e.on_telemetry(&telemetry(1, 3_600_000, 0), s1);
        let closed = e.advance(t0 + HOUR_MS + 20_000);
        // 3.6 MW for 20 s = 20 kWh in the first hour.
        assert_eq!(closed.len(), 1);
        assert_eq!(closed[0].energy_wh, 20_000);
        e.on_telemetry(&telemetry(1, 0, 0), t0 + HOUR_MS + 20_000);
        let closed = e.advance(t0 + 2 * HOUR_MS);
        assert_eq!(closed[0].energy_wh, 20_000, "the other 20 s");
    }
}
