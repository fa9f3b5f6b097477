//! Credit arithmetic, the tariff, and the credit limit.

use std::collections::BTreeMap;

use super::{Checker, Violation, violation};
use crate::observe::Observation;

/// What a tariff oracle is asked about one charge.
#[derive(Clone, Copy, Debug)]
pub struct ChargeContext {
    /// Simulated time of the charge.
    pub t_ms: u64,
    /// Customer.
    pub customer: u64,
    /// Energy the charge covers.
    pub energy_wh: u64,
    /// Energy billed to this customer before this charge.
    pub billed_before_wh: u64,
    /// Charged in friendly hours.
    pub friendly: bool,
    /// Log time of the entry that made the charge, Unix ms (the last `EntryTime` observed
    /// before it: every entry's comes before its ledger records); `None` before any. Billing's
    /// days and periods are counted in it, so an oracle that follows periods reads it.
    pub log_time_ms: Option<u64>,
}

/// The tariff the billing actor should have applied: returns the expected
/// amount in milli-paisa. The controller passes the real tariff function.
pub type Tariff = Box<dyn FnMut(&ChargeContext) -> i64>;

/// The lowest balance a customer may reach outside friendly hours.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CreditLimit {
    /// Debt allowed, in milli-paisa (positive: a balance of `-debt_mpaisa_max`
    /// is still allowed). It must include the one-read-interval overdraft the
    /// billing actor tolerates before the relay opens.
    pub debt_mpaisa_max: i64,
}

/// **Credit never below the allowed limit except friendly-hours debt**, and
/// **charges equal the tariff applied to metered energy**: per customer,
/// every charge lowers the balance by exactly its amount and every credit
/// raises it by exactly its amount; the amount matches the tariff oracle (if
/// one is given); outside friendly hours a charge never leaves the balance
/// below `-debt_mpaisa_max`. Protects customers from being overcharged and
/// the operator from unbounded debt.
///
/// Memory: two words per customer.
pub struct CreditChecker {
    limit: CreditLimit,
    tariff: Option<Tariff>,
    accounts: BTreeMap<u64, (i64, u64)>,
    /// Which accounts the limit binds (`None`: all): a postpaid account's balance goes
    /// negative by design once its use passes what its period gives free.
    prepaid: Option<fn(u64) -> bool>,
    /// The log time of the last entry observed (for [`ChargeContext::log_time_ms`]).
    log_time_ms: Option<u64>,
}

impl std::fmt::Debug for CreditChecker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreditChecker")
            .field("limit", &self.limit)
            .field("tariff", &self.tariff.is_some())
            .field("customers", &self.accounts.len())
            .finish()
    }
}

impl CreditChecker {
    /// A checker with a limit and an optional tariff oracle.
    pub fn new(limit: CreditLimit, tariff: Option<Tariff>) -> Self {
        Self {
            limit,
            tariff,
            accounts: BTreeMap::new(),
            prepaid: None,
            log_time_ms: None,
        }
    }

    /// Holds only the accounts `is_prepaid` names to the limit (postpaid balances owe by
    /// design; a run of more than a week reaches that, issue 25's month without a central).
    pub fn prepaid_only(mut self, is_prepaid: fn(u64) -> bool) -> Self {
        self.prepaid = Some(is_prepaid);
        self
    }
}

impl Checker for CreditChecker {
    fn name(&self) -> &'static str {
        "credit"
    }

    fn observe(&mut self, obs: &Observation, out: &mut Vec<Violation>) {
        match *obs {
            Observation::EntryTime { log_time_ms, .. } => self.log_time_ms = Some(log_time_ms),
            Observation::LedgerCharge {
                t_ms,
                customer,
                energy_wh,
                amount_mpaisa,
                balance_after_mpaisa,
                friendly,
            } => {
                let entry = self
                    .accounts
                    .entry(customer)
                    .or_insert((balance_after_mpaisa + amount_mpaisa, 0));
                let expected = entry.0 - amount_mpaisa;
                if balance_after_mpaisa != expected {
                    out.push(violation(
                        "credit",
                        t_ms,
                        format!(
                            "customer {customer}: balance {} - charge {amount_mpaisa} should be \
                             {expected}, ledger says {balance_after_mpaisa}",
                            entry.0
                        ),
                    ));
                }
                if let Some(tariff) = self.tariff.as_mut() {
                    let want = tariff(&ChargeContext {
                        t_ms,
                        customer,
                        energy_wh,
                        billed_before_wh: entry.1,
                        friendly,
                        log_time_ms: self.log_time_ms,
                    });
                    if want != amount_mpaisa {
                        out.push(violation(
                            "credit",
                            t_ms,
                            format!(
                                "customer {customer}: {energy_wh} Wh charged {amount_mpaisa} \
                                 mpaisa, the tariff gives {want}"
                            ),
                        ));
                    }
                }
                if !friendly
                    && self.prepaid.is_none_or(|p| p(customer))
                    && balance_after_mpaisa < -self.limit.debt_mpaisa_max
                {
                    out.push(violation(
                        "credit",
                        t_ms,
                        format!(
                            "customer {customer}: balance {balance_after_mpaisa} mpaisa is below \
                             the limit -{} outside friendly hours",
                            self.limit.debt_mpaisa_max
                        ),
                    ));
                }
                entry.0 = balance_after_mpaisa;
                entry.1 += energy_wh;
            }
            Observation::Credit {
                t_ms,
                customer,
                amount_mpaisa,
                balance_after_mpaisa,
            } => {
                let entry = self
                    .accounts
                    .entry(customer)
                    .or_insert((balance_after_mpaisa - amount_mpaisa, 0));
                let expected = entry.0 + amount_mpaisa;
                if balance_after_mpaisa != expected || amount_mpaisa < 0 {
                    out.push(violation(
                        "credit",
                        t_ms,
                        format!(
                            "customer {customer}: balance {} + credit {amount_mpaisa} should be \
                             {expected}, ledger says {balance_after_mpaisa}",
                            entry.0
                        ),
                    ));
                }
                entry.0 = balance_after_mpaisa;
            }
            _ => {}
        }
    }

    fn finish(&mut self, _end_t_ms: u64, _out: &mut Vec<Violation>) {}
}
