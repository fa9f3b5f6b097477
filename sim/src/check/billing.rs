//! Every meter read billed exactly once.

use std::collections::BTreeMap;

use super::{Checker, Violation, violation};
use crate::observe::Observation;

/// What the first committed register of a customer counts from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum BillingBaseline {
    /// The first committed read is the baseline; only energy after it is billed.
    #[default]
    FirstRead,
    /// Registers start at zero; the first read's whole register is billed.
    Zero,
}

#[derive(Clone, Copy, Debug)]
struct Account {
    first_wh: u64,
    last_wh: u64,
    billed_wh: u64,
    held_wh: u64,
}

/// **Every meter read billed exactly once** (the project's rule that nothing
/// metered is lost or counted twice, which is what proposals idempotent by
/// `(node, seq)` exist for). Per customer, over the committed stream of the
/// reference replica:
///
/// - registers never go backwards (cumulative counters stay monotonic);
/// - billed plus held energy never exceeds what committed reads account for (no
///   charge without a read, no double charge);
/// - at the end, billed plus held energy equals last register minus the
///   baseline (no read left unbilled). Held energy is what billing's plausibility
///   rule kept back from a read beyond the connection's draw: metered, not
///   charged, reported apart ([`MeterBilling::held_wh`]).
///
/// Memory: four words per customer.
#[derive(Clone, Debug, Default)]
pub struct MeterBilling {
    baseline: BillingBaseline,
    accounts: BTreeMap<u64, Account>,
    billed_wh: u64,
    held_wh: u64,
    reads: u64,
    charges: u64,
}

impl MeterBilling {
    /// A fresh checker.
    pub fn new(baseline: BillingBaseline) -> Self {
        Self {
            baseline,
            ..Self::default()
        }
    }

    /// Energy billed over every customer.
    pub fn billed_wh(&self) -> u64 {
        self.billed_wh
    }

    /// Energy metered but held for review over every customer (not charged).
    pub fn held_wh(&self) -> u64 {
        self.held_wh
    }

    /// Committed meter reads seen.
    pub fn reads(&self) -> u64 {
        self.reads
    }

    /// Charges seen.
    pub fn charges(&self) -> u64 {
        self.charges
    }
}

impl Checker for MeterBilling {
    fn name(&self) -> &'static str {
        "meter_billing"
    }

    fn observe(&mut self, obs: &Observation, out: &mut Vec<Violation>) {
        match *obs {
            Observation::MeterReadCommitted {
                t_ms,
                customer,
                total_wh,
            } => {
                self.reads += 1;
                let base = match self.baseline {
                    BillingBaseline::FirstRead => total_wh,
                    BillingBaseline::Zero => 0,
                };
                let acct = self.accounts.entry(customer).or_insert(Account {
                    first_wh: base,
                    last_wh: total_wh,
                    billed_wh: 0,
                    held_wh: 0,
                });
                if total_wh < acct.last_wh {
                    out.push(violation(
                        "meter_billing",
                        t_ms,
                        format!(
                            "customer {customer}: committed register went back from {} to \
                             {total_wh} Wh",
                            acct.last_wh
                        ),
                    ));
                } else {
                    acct.last_wh = total_wh;
                }
            }
            Observation::EnergyHeld {
                t_ms,
                customer,
                energy_wh,
            } => {
                self.held_wh += energy_wh;
                match self.accounts.get_mut(&customer) {
                    None => out.push(violation(
                        "meter_billing",
                        t_ms,
                        format!("customer {customer}: {energy_wh} Wh held with no committed read"),
                    )),
                    Some(acct) => {
                        acct.held_wh += energy_wh;
                        let metered = acct.last_wh - acct.first_wh;
                        if acct.billed_wh + acct.held_wh > metered {
                            out.push(violation(
                                "meter_billing",
                                t_ms,
                                format!(
                                    "customer {customer}: billed {} Wh and held {} Wh but committed \
                                     reads account for {metered} Wh",
                                    acct.billed_wh, acct.held_wh
                                ),
                            ));
                        }
                    }
                }
            }
            Observation::LedgerCharge {
                t_ms,
                customer,
                energy_wh,
                ..
            } => {
                self.charges += 1;
                self.billed_wh += energy_wh;
                match self.accounts.get_mut(&customer) {
                    None if energy_wh > 0 => out.push(violation(
                        "meter_billing",
                        t_ms,
                        format!(
                            "customer {customer} charged for {energy_wh} Wh with no committed read"
                        ),
                    )),
                    None => {}
                    Some(acct) => {
                        acct.billed_wh += energy_wh;
                        let metered = acct.last_wh - acct.first_wh;
                        if acct.billed_wh + acct.held_wh > metered {
                            out.push(violation(
                                "meter_billing",
                                t_ms,
                                format!(
                                    "customer {customer} billed {} Wh but committed reads account \
                                     for {metered} Wh: a read billed twice or a charge without a read",
                                    acct.billed_wh
                                ),
                            ));
                        }
                    }
                }
            }
            _ => {}
        }
    }

    fn finish(&mut self, end_t_ms: u64, out: &mut Vec<Violation>) {
        for (customer, acct) in &self.accounts {
            let metered = acct.last_wh - acct.first_wh;
            if acct.billed_wh + acct.held_wh < metered {
                out.push(violation(
                    self.name(),
                    end_t_ms,
                    format!(
                        "customer {customer}: committed reads account for {metered} Wh but only \
                         {} Wh were billed and {} Wh held",
                        acct.billed_wh, acct.held_wh
                    ),
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(customer: u64, total_wh: u64) -> Observation {
        Observation::MeterReadCommitted {
            t_ms: 1,
            customer,
            total_wh,
        }
    }

    fn charge(customer: u64, energy_wh: u64) -> Observation {
        Observation::LedgerCharge {
            t_ms: 2,
            customer,
            energy_wh,
            amount_mpaisa: 0,
            balance_after_mpaisa: 0,
            friendly: false,
        }
    }

    fn held(customer: u64, energy_wh: u64) -> Observation {
        Observation::EnergyHeld {
            t_ms: 3,
            customer,
            energy_wh,
        }
    }

    fn run(obs: &[Observation]) -> (Vec<Violation>, MeterBilling) {
        let mut c = MeterBilling::new(BillingBaseline::FirstRead);
        let mut out = Vec::new();
        for o in obs {
            c.observe(o, &mut out);
        }
        c.finish(10, &mut out);
        (out, c)
    }

    #[test]
    fn held_energy_accounts_for_a_read_apart_from_billed_energy() {
        // A corrupted register: 10^9 Wh reported, 18,001 billed, the rest held.
        let jump = 1_000_000_000;
        let (v, c) = run(&[
            read(1, 0),
            read(1, jump),
            charge(1, 18_001),
            held(1, jump - 18_001),
        ]);
        assert!(v.is_empty(), "{v:?}");
        assert_eq!((c.billed_wh(), c.held_wh()), (18_001, jump - 18_001));
        // Without the held line the read is unbilled; with too much held, counted twice.
        let (v, _) = run(&[read(1, 0), read(1, 100), charge(1, 40)]);
        assert_eq!(v.len(), 1, "{v:?}");
        let (v, _) = run(&[read(1, 0), read(1, 100), charge(1, 40), held(1, 61)]);
        assert_eq!(v.len(), 1, "{v:?}");
        let (v, _) = run(&[held(2, 5)]);
        assert_eq!(v.len(), 1, "held with no read: {v:?}");
    }
}
