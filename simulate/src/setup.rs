//! What the operator commits before and during a simulated run: tariffs, billing and balancing
//! configuration, one account per simulated household, and top-ups for accounts that run low;
//! plus the tariff oracle the credit checker holds every charge to.
//!
//! The set-up mirrors `ghatta demo`'s (cli/demo.rs) with the scenario's billing policy; the
//! oracle is written from the tariff's definition, not from the billing actor's code, so a
//! billing bug cannot agree with itself.

use ghatta_actor_sdk as sdk;
use ghatta_sim::check::{ChargeContext, Tariff as TariffOracle};
use ghatta_sim::scenario::Scenario;

/// The per-kWh tariff most accounts are on: NPR 15/kWh (the demo's).
pub const TARIFF_PER_KWH: u16 = 1;
/// Its rate, paisa per kWh.
pub const RATE_PAISA_PER_KWH: u32 = 1_500;
/// The tiered tariff postpaid accounts are on (first 10 kWh free, then 8 and 12 NPR/kWh).
pub const TARIFF_TIERED: u16 = 2;
/// Its demand charge per 30-day billing period, paisa.
pub const TIERED_PERIOD_CHARGE_PAISA: u32 = 5_000;
/// Milli-paisa per paisa (the ledger's unit; see `ghatta_actor_sdk::messages`).
pub const MPAISA_PER_PAISA: i64 = 1_000;

/// Every `POSTPAID_EVERY`th account is postpaid on the tiered tariff (as in the demo).
pub const POSTPAID_EVERY: u32 = 7;
/// Every `LOW_CREDIT_EVERY`th prepaid account opens with [`LOW_CREDIT_MPAISA`] instead of the
/// scenario's credit, so disconnection, top-ups and reconnection happen within a day.
pub const LOW_CREDIT_EVERY: u32 = 10;
/// Opening credit of low-credit accounts: NPR 8, about half a day of a large household.
pub const LOW_CREDIT_MPAISA: i64 = 800_000;
/// Prepaid accounts are disconnected at NPR 5 of credit or less, not at zero: the margin
/// absorbs the energy used between the last committed read and the relay opening (a 135 W
/// household for ~2.5 h, longer than any partition in the shipped scenarios), so the credit
/// checker's limit of no debt outside friendly hours holds.
pub const DISCONNECT_AT_MPAISA: i64 = 500_000;
/// A top-up the operator sells to an account at or below the disconnect threshold: NPR 10.
pub const TOPUP_MPAISA: i64 = 1_000_000;
/// Inputs per set-up proposal (as the demo): keeps an entry far below the 64 KiB entry budget.
pub const SETUP_INPUTS_PER_PROPOSAL: usize = 100;
/// Nepal's offset from UTC, minutes (the billing actor's local time for friendly hours).
pub const UTC_OFFSET_MIN: i32 = 345;

/// The three tariffs the demo defines (ids 1-3).
fn tariffs() -> Vec<sdk::Input> {
    vec![
        sdk::Input::SetTariff(sdk::Tariff {
            id: TARIFF_PER_KWH,
            version: 1,
            kind: sdk::TariffKind::PerKwh {
                rate_paisa_per_kwh: RATE_PAISA_PER_KWH,
            },
        }),
        sdk::Input::SetTariff(sdk::Tariff {
            id: TARIFF_TIERED,
            version: 1,
            kind: sdk::TariffKind::Tiered {
                blocks: tier_blocks(),
                period_charge_paisa: TIERED_PERIOD_CHARGE_PAISA,
            },
        }),
    ]
}

fn tier_blocks() -> Vec<sdk::TierBlock> {
    vec![
        sdk::TierBlock {
            up_to_wh: 10_000,
            rate_paisa_per_kwh: 0,
        },
        sdk::TierBlock {
            up_to_wh: 50_000,
            rate_paisa_per_kwh: 800,
        },
        sdk::TierBlock {
            up_to_wh: u64::MAX,
            rate_paisa_per_kwh: 1_200,
        },
    ]
}

/// How account `customer` is set up: mode, tariff, opening credit.
pub fn account_plan(customer: u32, scenario_credit_mpaisa: i64) -> (sdk::AccountMode, u16, i64) {
    if customer.is_multiple_of(POSTPAID_EVERY) {
        (sdk::AccountMode::Postpaid, TARIFF_TIERED, 0)
    } else if customer.is_multiple_of(LOW_CREDIT_EVERY) {
        (sdk::AccountMode::Prepaid, TARIFF_PER_KWH, LOW_CREDIT_MPAISA)
    } else {
        (
            sdk::AccountMode::Prepaid,
            TARIFF_PER_KWH,
            scenario_credit_mpaisa,
        )
    }
}

/// Whether `customer` is prepaid (and so may need top-ups).
pub fn is_prepaid(customer: u32) -> bool {
    !customer.is_multiple_of(POSTPAID_EVERY)
}

/// The whole set-up: tariffs, billing and balancing configuration, then the accounts of every
/// plant's households. `plants` lists (node id, feeder count, customer ids).
pub fn setup_inputs(scenario: &Scenario, plants: &[(u64, usize, Vec<u32>)]) -> Vec<sdk::Input> {
    let mut setup = tariffs();
    let (start_min, end_min) = match scenario.customers.friendly_hours {
        Some([a, b]) => ((a * 60) as u16, (b * 60) as u16),
        None => (0, 0),
    };
    setup.push(sdk::Input::SetBillingConfig(sdk::BillingConfig {
        utc_offset_min: UTC_OFFSET_MIN,
        friendly_start_min: start_min,
        friendly_end_min: end_min,
        disconnect_at_mpaisa: DISCONNECT_AT_MPAISA,
        plausible_margin_pct: sdk::PLAUSIBLE_MARGIN_PCT_DEFAULT,
    }));
    let priorities = plants
        .iter()
        .flat_map(|(node, feeders, _)| {
            (0..*feeders as u16).map(move |f| sdk::FeederRef {
                node: sdk::NodeId(*node),
                feeder: f,
            })
        })
        .collect();
    // The demo's balancing settings: shed below 49.2 Hz (ABB's first UFLS step), restore
    // above 49.8 Hz with 1.5 kW of ballast in hand, at most one restore per 30 s.
    setup.push(sdk::Input::SetBalancingConfig(sdk::BalancingConfig {
        nominal_mhz: 50_000,
        shed_below_mhz: 49_200,
        restore_above_mhz: 49_800,
        restore_margin_w: 1_500,
        restore_interval_ms: 30_000,
        priorities,
    }));
    let served = token_customers(scenario, plants);
    for (node, _, customers) in plants {
        for &c in customers {
            let (mode, tariff, credit) = account_plan(c, scenario.customers.initial_credit_mpaisa);
            setup.push(sdk::Input::UpsertCustomer(sdk::CustomerSpec {
                id: sdk::CustomerId(c),
                node: sdk::NodeId(*node),
                mode,
                tariff,
                connection_w: 250,
                opening_credit_mpaisa: credit,
                token: served.binary_search(&c).is_ok().then(|| sdk::TokenKey {
                    secret_key: token_key(c),
                    starting_code: 0,
                    unit_mpaisa: TOKEN_UNIT_MPAISA,
                }),
            }));
        }
    }
    setup
}

/// What one unit of an agent's token is worth, mpaisa: 1 NPR.
pub const TOKEN_UNIT_MPAISA: i64 = 100_000;
/// The value of every token the agents sell, units: 200 NPR, a few weeks of a household's
/// light.
pub const TOKEN_VALUE_UNITS: u32 = 200;

/// The OpenPAYGO secret key of `customer`'s account in a world with token agents (the
/// office's, made up from the id: a world has no secrets to keep).
pub fn token_key(customer: u32) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..4].copy_from_slice(&customer.to_le_bytes());
    k[4..].copy_from_slice(b"ghatta-agent");
    k
}

/// The accounts the scenario's token agents serve: the first `tokens.customers` prepaid ones
/// in id order (none without `[tokens]`).
pub fn token_customers(scenario: &Scenario, plants: &[(u64, usize, Vec<u32>)]) -> Vec<u32> {
    let Some(t) = &scenario.tokens else {
        return Vec::new();
    };
    let mut ids: Vec<u32> = plants
        .iter()
        .flat_map(|(_, _, c)| c.iter().copied())
        .filter(|&c| is_prepaid(c))
        .collect();
    ids.sort_unstable();
    ids.truncate(t.customers as usize);
    ids
}

/// A top-up for `customer` with token `token_id`.
pub fn topup(customer: u32, token_id: u64) -> sdk::Input {
    sdk::Input::TopUp(sdk::TopUp {
        customer: sdk::CustomerId(customer),
        token_id,
        amount_mpaisa: TOPUP_MPAISA,
    })
}

/// The charge the tariff definition gives for energy `delta_wh` after `used_wh` in the period.
fn tiered_mpaisa(used_wh: u64, delta_wh: u64) -> i64 {
    let blocks = tier_blocks();
    let mut total: u128 = 0;
    let mut lower = 0u64;
    for (i, b) in blocks.iter().enumerate() {
        let upper = if i + 1 == blocks.len() {
            u64::MAX
        } else {
            b.up_to_wh
        };
        let lo = used_wh.max(lower);
        let hi = used_wh.saturating_add(delta_wh).min(upper);
        if hi > lo {
            total += u128::from(hi - lo) * u128::from(b.rate_paisa_per_kwh);
        }
        lower = upper;
    }
    i64::try_from(total).unwrap_or(i64::MAX)
}

/// Billing's period for tiered tariffs: 30 local days (`ghatta_billing`'s `clock::PERIOD_MS`,
/// restated here so that the oracle is written from the tariff's definition).
pub const PERIOD_MS: u64 = 30 * 86_400_000;

/// The 30-local-day period a log time falls in (local: Nepal's offset, [`UTC_OFFSET_MIN`]).
fn period_of(log_time_ms: u64) -> u64 {
    let local = i128::from(log_time_ms) + i128::from(UTC_OFFSET_MIN) * 60_000;
    u64::try_from(local.max(0)).unwrap_or(0) / PERIOD_MS
}

/// The oracle for the credit checker. A per-kWh charge is the energy at the rate. A tiered
/// account's energy is counted per 30-local-day period, by the log time of the entry that
/// bills it (the read's period: "energy is attributed to the period of the read that reports
/// it"), so its free block comes back each period; a zero-energy charge of a tiered account is
/// its period charge. The world's calendar starts at a period's first day, where the accounts
/// are opened, so a customer's first charge is in its account's first period.
pub fn tariff_oracle() -> TariffOracle {
    // Per tiered customer: (period, energy billed in it so far).
    let mut periods: std::collections::BTreeMap<u64, (u64, u64)> = Default::default();
    Box::new(move |c: &ChargeContext| {
        let customer = u32::try_from(c.customer).unwrap_or(u32::MAX);
        if is_prepaid(customer) {
            return i64::try_from(u128::from(c.energy_wh) * u128::from(RATE_PAISA_PER_KWH))
                .unwrap_or(i64::MAX);
        }
        // Before any entry's log time was observed (never, for a charge), the cumulative
        // energy stands in for the period's.
        let Some(log_time_ms) = c.log_time_ms else {
            return if c.energy_wh == 0 {
                i64::from(TIERED_PERIOD_CHARGE_PAISA) * MPAISA_PER_PAISA
            } else {
                tiered_mpaisa(c.billed_before_wh, c.energy_wh)
            };
        };
        let period = period_of(log_time_ms);
        let (p, used) = periods.entry(c.customer).or_insert((period, 0));
        if *p != period {
            *p = period;
            *used = 0;
        }
        if c.energy_wh == 0 {
            i64::from(TIERED_PERIOD_CHARGE_PAISA) * MPAISA_PER_PAISA
        } else {
            let amount = tiered_mpaisa(*used, c.energy_wh);
            *used += c.energy_wh;
            amount
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiered_oracle_splits_across_blocks() {
        assert_eq!(tiered_mpaisa(0, 10_000), 0);
        assert_eq!(tiered_mpaisa(9_000, 2_000), 1_000 * 800);
        assert_eq!(tiered_mpaisa(49_000, 2_000), 1_000 * 800 + 1_000 * 1_200);
    }

    fn charge(customer: u64, energy_wh: u64, log_time_ms: u64) -> ChargeContext {
        ChargeContext {
            t_ms: 0,
            customer,
            energy_wh,
            billed_before_wh: 0,
            friendly: false,
            log_time_ms: Some(log_time_ms),
        }
    }

    /// A tiered account's free block comes back in the next local period, whose start is
    /// local midnight (18:15 UTC the day before in Nepal), not UTC's.
    #[test]
    fn tiered_oracle_follows_local_periods() {
        let postpaid = u64::from(POSTPAID_EVERY); // customer 7: postpaid, tiered
        assert!(!is_prepaid(POSTPAID_EVERY));
        let mut oracle = tariff_oracle();
        let start = crate::world::CALENDAR_START_UNIX_MS;
        let local_next = start + PERIOD_MS - u64::from(UTC_OFFSET_MIN.unsigned_abs()) * 60_000;
        assert_eq!(oracle(&charge(postpaid, 9_000, start + 1_000)), 0);
        assert_eq!(
            oracle(&charge(postpaid, 2_000, local_next - 1)),
            1_000 * 800,
            "the second read of the first period passes the free 10 kWh"
        );
        assert_eq!(
            oracle(&charge(postpaid, 0, local_next)),
            i64::from(TIERED_PERIOD_CHARGE_PAISA) * MPAISA_PER_PAISA
        );
        assert_eq!(
            oracle(&charge(postpaid, 2_000, local_next)),
            0,
            "free again in the next period"
        );
    }
}
