//! Prepaid credit in an island: the node cuts a prepaid customer locally when the last
//! committed balance, minus the energy metered here since, reaches the floor; and hands the
//! decision back to billing when it rejoins.
//!
//! # The approach
//!
//! The billing actor's accounts are internal to it (a fixed binary layout in actor state), so
//! this module does not decode them. It derives what it needs from what billing *commits*:
//!
//! - **Balance**: the `balance_after_mpaisa` of the customer's latest committed ledger record
//!   (any kind: charge, fee, top-up, disconnect), with its log index.
//! - **Committed register**: the register of this node's own meter reads whose proposal has
//!   committed, taken only once the local state machine has applied (and this module has
//!   read) the outbox up to that proposal's log index. Every read with a positive delta
//!   produces its charge record at the same index, so "balance at index I" and "register
//!   committed at or before I" describe the same moment.
//! - **Rate**: amount / energy of the customer's latest committed charge with a non-zero
//!   amount (a free tier block's zero charge does not erase the rate).
//! - **Prepaid or postpaid**: billing's evidence. A charge in friendly hours, a zero-credit
//!   disconnect or a credit-restored reconnect happen only to prepaid accounts; a charge that
//!   leaves a supplied account at or below the floor with no disconnect in the same entry
//!   happens only to a postpaid one (outside friendly hours).
//!
//! While the node has not committed anything for longer than `grace_ms` (an island), the
//! estimate is `balance - ceil((local register - committed register) x rate)`, and the
//! customer's relay is opened (reason billing, marked local, cause `IslandCredit`) when it is
//! at or below `floor_mpaisa`, outside the friendly hours configured here, for an account
//! that is supplied in the committed state, not known to be postpaid, and was either in
//! credit at its last committed record or is known to be prepaid (a postpaid account in debt
//! looks the same as a prepaid one in friendly-hours debt otherwise). When the node has
//! rejoined and its journal has drained (every island read committed and applied here), the
//! local cuts are lifted and the committed relay state rules again: billing has by then
//! charged the island's energy and cut whoever it should.
//!
//! # Limits
//!
//! - Conservative by construction: a lost acknowledgement, a duplicate receipt or an outbox
//!   not yet applied make the committed register older, so the estimate lower.
//! - Needs one committed charge (for the rate) and one committed read from this node since
//!   its journal was created; before that the customer is not enforced locally.
//! - A tiered tariff is estimated at the last charge's average rate; energy that crosses into
//!   a dearer block in the island is under-charged until billing reconciles.
//! - Friendly hours, the grid's UTC offset and the floor are billing's own, as last committed
//!   (`BillingConfig`, read from billing's replicated state through [`Consensus`]; billing's
//!   defaults before any is committed): one source, so an operator who changes the billing
//!   configuration changes the island rule with it, at the index where billing accepted it.
//!
//! [`Consensus`]: super::consensus::Consensus
//! - A postpaid account with positive credit and no charge yet committed cannot be told
//!   from a prepaid one, and would be cut in an island when its estimate reaches the floor.
//! - Flat tariffs charge no energy: nothing to estimate, never cut locally.

use std::collections::BTreeMap;

use ghatta_actor_sdk as sdk;
use serde::{Deserialize, Serialize};

/// Pending register confirmations kept per customer (proposals committed but not yet seen in
/// the local outbox). One a second at most, and the outbox is read every second: 8 is room
/// for a lagging state machine; dropping the oldest keeps an older (so lower) register, which
/// only makes the estimate more conservative.
pub const PENDING_REGISTERS_MAX: usize = 8;
/// Minutes in a day.
const MINUTES_PER_DAY: i64 = 1_440;

/// `[field.credit]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CreditConfig {
    /// Enforce prepaid credit locally in an island.
    pub enabled: bool,
    /// No commit for this long before local enforcement starts, ms.
    pub grace_ms: u64,
    /// Keys this section had before the island rule followed billing's committed
    /// configuration: still read, so a board's old node.toml loads, and otherwise ignored
    /// ([`CreditConfig::ignored_keys`] names them for a warning).
    #[serde(skip_serializing)]
    pub floor_mpaisa: Option<i64>,
    /// See `floor_mpaisa`.
    #[serde(skip_serializing)]
    pub utc_offset_min: Option<i32>,
    /// See `floor_mpaisa`.
    #[serde(skip_serializing)]
    pub friendly_start_min: Option<u16>,
    /// See `floor_mpaisa`.
    #[serde(skip_serializing)]
    pub friendly_end_min: Option<u16>,
}

impl Default for CreditConfig {
    fn default() -> Self {
        CreditConfig {
            enabled: true,
            // Two minutes: longer than an election on the radio profile (election timeout up
            // to 12 s) plus the proposer's 30 s deadline and a retry, so a leader change never
            // cuts anyone; short against an island's hours.
            grace_ms: 120_000,
            floor_mpaisa: None,
            utc_offset_min: None,
            friendly_start_min: None,
            friendly_end_min: None,
        }
    }
}

impl CreditConfig {
    /// The keys set in this section that no longer do anything, for a warning at start.
    pub fn ignored_keys(&self) -> Vec<&'static str> {
        [
            ("field.credit.floor_mpaisa", self.floor_mpaisa.is_some()),
            ("field.credit.utc_offset_min", self.utc_offset_min.is_some()),
            (
                "field.credit.friendly_start_min",
                self.friendly_start_min.is_some(),
            ),
            (
                "field.credit.friendly_end_min",
                self.friendly_end_min.is_some(),
            ),
        ]
        .into_iter()
        .filter_map(|(k, set)| set.then_some(k))
        .collect()
    }
}

/// Whether billing's friendly hours hold at wall time `now_ms` under `terms` (billing's
/// committed configuration): the same rule as billing's own, on the node's clock.
pub fn friendly(terms: &sdk::BillingConfig, now_ms: u64) -> bool {
    let utc_min = (now_ms / 60_000) as i64;
    let local = (utc_min + i64::from(terms.utc_offset_min)).rem_euclid(MINUTES_PER_DAY);
    let (s, e) = (
        i64::from(terms.friendly_start_min),
        i64::from(terms.friendly_end_min),
    );
    if s == e {
        false
    } else if s < e {
        (s..e).contains(&local)
    } else {
        local >= s || local < e
    }
}

/// What billing's records say about an account's mode.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum ModeEvidence {
    /// Nothing conclusive yet.
    #[default]
    Unknown,
    /// Seen only on prepaid accounts.
    Prepaid,
    /// Seen only on postpaid accounts.
    Postpaid,
}

/// A register value and the log index at which it is known committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Register {
    /// Log index.
    pub index: u64,
    /// Register, Wh.
    pub total_wh: u64,
}

/// A charge rate as billing last applied it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rate {
    /// Amount charged, mpaisa.
    pub amount_mpaisa: i64,
    /// For this much energy, Wh.
    pub energy_wh: u64,
}

impl Rate {
    /// The cost of `wh`, rounded up (conservative).
    pub fn cost_mpaisa(&self, wh: u64) -> i64 {
        if self.energy_wh == 0 || self.amount_mpaisa <= 0 {
            return 0;
        }
        let num = u128::from(wh) * self.amount_mpaisa as u128;
        let cost = num.div_ceil(u128::from(self.energy_wh));
        i64::try_from(cost).unwrap_or(i64::MAX)
    }
}

/// What the node knows of one customer's account.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    /// Balance after the latest committed ledger record, mpaisa.
    pub balance_mpaisa: Option<i64>,
    /// That record's log index.
    pub balance_index: u64,
    /// Latest non-zero charge rate.
    pub rate: Option<Rate>,
    /// Mode evidence.
    pub mode: ModeEvidence,
    /// A non-friendly charge left the balance at or below the floor at this index; a
    /// disconnect in the same entry means prepaid, none means postpaid.
    pub below_floor_at: Option<u64>,
    /// Register committed and covered by the processed outbox.
    pub committed: Option<Register>,
    /// Registers committed but not yet covered.
    pub pending: Vec<Register>,
    /// Latest register read from the board (not saved: re-read within a second).
    #[serde(skip)]
    pub local_wh: Option<u64>,
}

impl Account {
    /// Estimated balance now, if there is enough to estimate.
    pub fn estimate_mpaisa(&self) -> Option<i64> {
        let balance = self.balance_mpaisa?;
        let rate = self.rate?;
        let committed = self.committed?;
        let local = self.local_wh.unwrap_or(committed.total_wh);
        let since = local.saturating_sub(committed.total_wh);
        Some(balance.saturating_sub(rate.cost_mpaisa(since)))
    }
}

/// A change of local cuts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CreditChange {
    /// Cut this customer (grid id) locally.
    Cut {
        /// Grid customer id.
        customer: u32,
        /// The estimate that cut it, mpaisa.
        estimated_mpaisa: i64,
    },
    /// Lift the local cut.
    Lift {
        /// Grid customer id.
        customer: u32,
    },
}

/// Island credit tracking for the customers on this board.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreditTracker {
    /// Accounts by grid customer id.
    pub accounts: BTreeMap<u32, Account>,
    /// Customers cut locally, with the estimate that cut them.
    pub cuts: BTreeMap<u32, i64>,
}

impl CreditTracker {
    /// A committed ledger record at `index` for a customer on this board.
    pub fn on_ledger(&mut self, index: u64, rec: &sdk::LedgerRecord, floor_mpaisa: i64) {
        let a = self.accounts.entry(rec.customer.0).or_default();
        // A pending "below the floor" charge from an earlier entry with no disconnect in it.
        if let Some(at) = a.below_floor_at
            && at < index
        {
            a.mode = ModeEvidence::Postpaid;
            a.below_floor_at = None;
        }
        a.balance_mpaisa = Some(rec.balance_after_mpaisa);
        a.balance_index = index;
        match &rec.kind {
            sdk::LedgerKind::Charge {
                energy_wh,
                amount_mpaisa,
                friendly,
            }
            | sdk::LedgerKind::ChargeRead {
                energy_wh,
                amount_mpaisa,
                friendly,
                ..
            } => {
                if *energy_wh > 0 && *amount_mpaisa > 0 {
                    a.rate = Some(Rate {
                        amount_mpaisa: *amount_mpaisa,
                        energy_wh: *energy_wh,
                    });
                }
                if *friendly {
                    a.mode = ModeEvidence::Prepaid;
                } else if rec.balance_after_mpaisa <= floor_mpaisa {
                    a.below_floor_at = Some(index);
                }
            }
            sdk::LedgerKind::Disconnect {
                reason: sdk::RelayReason::ZeroCredit,
            }
            | sdk::LedgerKind::Reconnect {
                reason: sdk::RelayReason::CreditRestored,
            } => {
                a.mode = ModeEvidence::Prepaid;
                a.below_floor_at = None;
            }
            _ => {}
        }
    }

    /// The outbox has been processed through every entry up to `index`.
    pub fn on_processed(&mut self, index: u64, supplied: impl Fn(u32) -> bool) {
        for (c, a) in self.accounts.iter_mut() {
            if let Some(at) = a.below_floor_at
                && at <= index
            {
                // The whole entry was read and had no disconnect. If billing believed the
                // customer cut already, a disconnect would not repeat: no evidence then.
                if supplied(*c) {
                    a.mode = ModeEvidence::Postpaid;
                }
                a.below_floor_at = None;
            }
            // Called once a second for every account on the board: most have nothing
            // pending, and those that do keep their registers in place (no allocation).
            if a.pending.is_empty() {
                continue;
            }
            // The covered register with the highest (total, index), the last of equals.
            let mut best: Option<Register> = None;
            a.pending.retain(|r| {
                if r.index > index {
                    return true;
                }
                if best.is_none_or(|b| (r.total_wh, r.index) >= (b.total_wh, b.index)) {
                    best = Some(*r);
                }
                false
            });
            if let Some(best) = best
                && a.committed.is_none_or(|c| best.total_wh >= c.total_wh)
            {
                a.committed = Some(best);
            }
        }
    }

    /// This node's read of `customer` committed at `index` (or, for a duplicate receipt,
    /// at or before it).
    pub fn on_commit(&mut self, customer: u32, index: u64, total_wh: u64) {
        let a = self.accounts.entry(customer).or_default();
        if let Some(p) = a.pending.iter_mut().find(|p| p.index == index) {
            p.total_wh = p.total_wh.max(total_wh);
            return;
        }
        a.pending.push(Register { index, total_wh });
        if a.pending.len() > PENDING_REGISTERS_MAX {
            a.pending.remove(0);
        }
    }

    /// The board read `customer`'s register.
    pub fn on_local_read(&mut self, customer: u32, total_wh: u64) {
        let a = self.accounts.entry(customer).or_default();
        a.local_wh = Some(total_wh);
    }

    /// Decide local cuts. `terms`: billing's committed configuration (friendly hours, offset,
    /// floor). `island_ms`: how long the node has gone without a commit while it had
    /// something to commit (0 when connected). `reconciled`: the node is connected, its
    /// journal has drained and the outbox is processed past the last commit. `supplied`: the
    /// committed relay state of a customer.
    pub fn evaluate(
        &mut self,
        cfg: &CreditConfig,
        terms: &sdk::BillingConfig,
        wall_ms: u64,
        island_ms: u64,
        reconciled: bool,
        supplied: impl Fn(u32) -> bool,
    ) -> Vec<CreditChange> {
        let mut changes = Vec::new();
        if reconciled || !cfg.enabled {
            for customer in std::mem::take(&mut self.cuts).into_keys() {
                changes.push(CreditChange::Lift { customer });
            }
            return changes;
        }
        if island_ms < cfg.grace_ms || friendly(terms, wall_ms) {
            return changes;
        }
        for (c, a) in &self.accounts {
            if self.cuts.contains_key(c) || !supplied(*c) || a.mode == ModeEvidence::Postpaid {
                continue;
            }
            let Some(balance) = a.balance_mpaisa else {
                continue;
            };
            if balance <= terms.disconnect_at_mpaisa && a.mode != ModeEvidence::Prepaid {
                continue;
            }
            let Some(estimated_mpaisa) = a.estimate_mpaisa() else {
                continue;
            };
            if estimated_mpaisa <= terms.disconnect_at_mpaisa {
                changes.push(CreditChange::Cut {
                    customer: *c,
                    estimated_mpaisa,
                });
            }
        }
        for ch in &changes {
            if let CreditChange::Cut {
                customer,
                estimated_mpaisa,
            } = ch
            {
                self.cuts.insert(*customer, *estimated_mpaisa);
            }
        }
        changes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn charge(c: u32, wh: u64, amount: i64, balance: i64, friendly: bool) -> sdk::LedgerRecord {
        sdk::LedgerRecord {
            customer: sdk::CustomerId(c),
            at_ms: 0,
            kind: sdk::LedgerKind::Charge {
                energy_wh: wh,
                amount_mpaisa: amount,
                friendly,
            },
            balance_after_mpaisa: balance,
            tariff_version: 1,
        }
    }

    #[test]
    fn cost_rounds_up() {
        let r = Rate {
            amount_mpaisa: 10,
            energy_wh: 3,
        };
        assert_eq!(r.cost_mpaisa(1), 4);
        assert_eq!(r.cost_mpaisa(3), 10);
        assert_eq!(r.cost_mpaisa(0), 0);
    }

    #[test]
    fn friendly_hours_wrap_midnight_in_local_time() {
        let mut terms = ghatta_billing::clock::default_config();
        terms.utc_offset_min = 0;
        let at = |h: u64| h * 3_600_000;
        assert!(friendly(&terms, at(19)));
        assert!(friendly(&terms, at(2)));
        assert!(!friendly(&terms, at(12)));
        // Nepal (UTC+5:45): 12:30 UTC is 18:15 local, inside; 00:30 UTC is 06:15, outside.
        terms.utc_offset_min = 345;
        assert!(friendly(&terms, at(12) + 30 * 60_000));
        assert!(!friendly(&terms, 30 * 60_000));
        // Equal ends: no friendly hours at all.
        terms.friendly_end_min = terms.friendly_start_min;
        assert!(!friendly(&terms, at(19)));
    }

    #[test]
    fn old_keys_of_the_section_load_and_are_named_for_a_warning() {
        let c: CreditConfig =
            toml::from_str("grace_ms = 60000\nutc_offset_min = 345\nfloor_mpaisa = 0\n")
                .expect("an old section still loads");
        assert_eq!(c.grace_ms, 60_000);
        assert_eq!(
            c.ignored_keys(),
            ["field.credit.floor_mpaisa", "field.credit.utc_offset_min"]
        );
        assert!(CreditConfig::default().ignored_keys().is_empty());
    }

    #[test]
    fn a_charge_below_the_floor_without_disconnect_marks_postpaid() {
        let mut t = CreditTracker::default();
        t.on_ledger(5, &charge(1, 10, 100, -50, false), 0);
        t.on_processed(5, |_| true);
        assert_eq!(t.accounts[&1].mode, ModeEvidence::Postpaid);
        // With a disconnect in the same entry it is prepaid.
        t.on_ledger(6, &charge(2, 10, 100, -50, false), 0);
        t.on_ledger(
            6,
            &sdk::LedgerRecord {
                kind: sdk::LedgerKind::Disconnect {
                    reason: sdk::RelayReason::ZeroCredit,
                },
                ..charge(2, 0, 0, -50, false)
            },
            0,
        );
        t.on_processed(6, |_| true);
        assert_eq!(t.accounts[&2].mode, ModeEvidence::Prepaid);
    }

    #[test]
    fn registers_count_only_once_the_outbox_covers_them() {
        let mut t = CreditTracker::default();
        t.on_commit(1, 10, 500);
        t.on_processed(9, |_| true);
        assert_eq!(t.accounts[&1].committed, None);
        t.on_processed(10, |_| true);
        assert_eq!(
            t.accounts[&1].committed,
            Some(Register {
                index: 10,
                total_wh: 500
            })
        );
    }

    #[test]
    fn the_highest_covered_register_counts_and_later_ones_wait() {
        let mut t = CreditTracker::default();
        t.on_commit(1, 11, 700);
        t.on_commit(1, 12, 650);
        t.on_commit(1, 14, 900);
        t.on_processed(13, |_| true);
        let a = &t.accounts[&1];
        assert_eq!(
            a.committed,
            Some(Register {
                index: 11,
                total_wh: 700
            })
        );
        assert_eq!(
            a.pending,
            vec![Register {
                index: 14,
                total_wh: 900
            }]
        );
        // A lower register covered later never replaces a higher one.
        t.on_commit(1, 15, 600);
        t.on_processed(15, |_| true);
        let a = &t.accounts[&1];
        assert_eq!(a.committed.map(|r| r.total_wh), Some(900));
        assert!(a.pending.is_empty());
    }
}
