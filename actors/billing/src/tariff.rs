//! Tariff arithmetic: validation of operator tariffs and exact integer prices in mpaisa.
//!
//! A rate in paisa per kWh applied to watt-hours gives milli-paisa exactly
//! (`energy_wh * rate_paisa_per_kwh`), so no rounding happens anywhere. Products are taken in
//! `u128` and clamped to `i64::MAX`, so hostile readings or rates can never wrap or panic.

use ghatta_actor_sdk::{FlatBand, Tariff, TariffKind, TierBlock};

/// Most blocks a tiered tariff may have. Tariffs in use have two to five blocks; the bound
/// keeps the per-read work and the stored tariff small.
pub const TIER_BLOCKS_MAX: usize = 16;
/// Most bands a flat tariff may have. Connection-size ("cut-out") tariffs have a handful of
/// sizes; same reasoning as [`TIER_BLOCKS_MAX`].
pub const FLAT_BANDS_MAX: usize = 16;
/// mpaisa in a paisa.
pub const MPAISA_PER_PAISA: i64 = 1_000;

/// Whether an operator's tariff is usable: a flat tariff has 1..=[`FLAT_BANDS_MAX`] bands; a
/// tiered tariff has 1..=[`TIER_BLOCKS_MAX`] blocks whose bounds strictly increase (the last
/// block's bound is ignored, it is unbounded).
pub fn is_valid(tariff: &Tariff) -> bool {
    match &tariff.kind {
        TariffKind::PerKwh { .. } => true,
        TariffKind::Flat { bands } => !bands.is_empty() && bands.len() <= FLAT_BANDS_MAX,
        TariffKind::Tiered { blocks, .. } => {
            let bounded = blocks.len().saturating_sub(1);
            let bounds = blocks.iter().take(bounded).map(|b| b.up_to_wh);
            !blocks.is_empty()
                && blocks.len() <= TIER_BLOCKS_MAX
                && bounds.clone().zip(bounds.skip(1)).all(|(lo, hi)| lo < hi)
        }
    }
}

/// Clamp an exact non-negative amount to what the ledger can hold.
fn clamp_mpaisa(amount: u128) -> i64 {
    i64::try_from(amount).unwrap_or(i64::MAX)
}

/// A paisa amount in mpaisa.
pub fn paisa_to_mpaisa(paisa: u32) -> i64 {
    i64::from(paisa) * MPAISA_PER_PAISA
}

/// Energy at one rate: `energy_wh * rate_paisa_per_kwh` mpaisa.
pub fn energy_charge_mpaisa(energy_wh: u64, rate_paisa_per_kwh: u32) -> i64 {
    clamp_mpaisa(u128::from(energy_wh) * u128::from(rate_paisa_per_kwh))
}

/// Energy `delta_wh` consumed after `used_wh` already consumed in the period, split across the
/// blocks it falls into.
pub fn tiered_charge_mpaisa(blocks: &[TierBlock], used_wh: u64, delta_wh: u64) -> i64 {
    let start_wh = used_wh;
    let end_wh = used_wh.saturating_add(delta_wh);
    let mut lower_wh = 0u64;
    let mut total: u128 = 0;
    for (i, block) in blocks.iter().enumerate() {
        let upper_wh = if i + 1 == blocks.len() {
            u64::MAX
        } else {
            block.up_to_wh.max(lower_wh)
        };
        let lo = start_wh.max(lower_wh);
        let hi = end_wh.min(upper_wh);
        if hi > lo {
            total += u128::from(hi - lo) * u128::from(block.rate_paisa_per_kwh);
        }
        lower_wh = upper_wh;
        if lower_wh >= end_wh {
            break;
        }
    }
    clamp_mpaisa(total)
}

/// The daily fee of a flat tariff for a connection size: the first band large enough, or the
/// largest band when the connection exceeds every band (an operator error that must not make
/// the connection free).
pub fn flat_daily_fee_mpaisa(bands: &[FlatBand], connection_w: u32) -> i64 {
    bands
        .iter()
        .find(|b| b.up_to_w >= connection_w)
        .or(bands.last())
        .map_or(0, |b| paisa_to_mpaisa(b.daily_fee_paisa))
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    fn blocks() -> alloc::vec::Vec<TierBlock> {
        vec![
            TierBlock {
                up_to_wh: 10_000,
                rate_paisa_per_kwh: 0,
            },
            TierBlock {
                up_to_wh: 50_000,
                rate_paisa_per_kwh: 800,
            },
            TierBlock {
                up_to_wh: 0,
                rate_paisa_per_kwh: 1_200,
            },
        ]
    }

    #[test]
    fn per_kwh_is_exact() {
        // 1 kWh at 1,000 paisa/kWh = 10 NPR = 1,000 paisa = 1,000,000 mpaisa.
        assert_eq!(energy_charge_mpaisa(1_000, 1_000), 1_000_000);
        assert_eq!(energy_charge_mpaisa(1, 1), 1);
        assert_eq!(energy_charge_mpaisa(u64::MAX, u32::MAX), i64::MAX);
    }

    #[test]
    fn tiered_within_and_across_blocks() {
        let b = blocks();
        assert_eq!(tiered_charge_mpaisa(&b, 0, 10_000), 0);
        assert_eq!(tiered_charge_mpaisa(&b, 9_000, 2_000), 1_000 * 800);
        // 45,000 -> 60,000: 5,000 Wh at 800 + 10,000 Wh at 1,200.
        assert_eq!(
            tiered_charge_mpaisa(&b, 45_000, 15_000),
            5_000 * 800 + 10_000 * 1_200
        );
        // Spanning all three blocks from zero.
        assert_eq!(
            tiered_charge_mpaisa(&b, 0, 60_000),
            40_000 * 800 + 10_000 * 1_200
        );
        assert_eq!(tiered_charge_mpaisa(&b, u64::MAX - 1, u64::MAX), 1_200);
    }

    #[test]
    fn flat_band_selection() {
        let bands = vec![
            FlatBand {
                up_to_w: 100,
                daily_fee_paisa: 500,
            },
            FlatBand {
                up_to_w: 500,
                daily_fee_paisa: 2_000,
            },
        ];
        assert_eq!(flat_daily_fee_mpaisa(&bands, 100), 500_000);
        assert_eq!(flat_daily_fee_mpaisa(&bands, 101), 2_000_000);
        assert_eq!(flat_daily_fee_mpaisa(&bands, 5_000), 2_000_000);
        assert_eq!(flat_daily_fee_mpaisa(&[], 5_000), 0);
    }

    #[test]
    fn validation() {
        let t = |kind| Tariff {
            id: 1,
            version: 1,
            kind,
        };
        assert!(is_valid(&t(TariffKind::Tiered {
            blocks: blocks(),
            period_charge_paisa: 0
        })));
        let mut unordered = blocks();
        unordered[1].up_to_wh = 5_000;
        assert!(!is_valid(&t(TariffKind::Tiered {
            blocks: unordered,
            period_charge_paisa: 0
        })));
        assert!(!is_valid(&t(TariffKind::Tiered {
            blocks: vec![],
            period_charge_paisa: 0
        })));
        assert!(!is_valid(&t(TariffKind::Flat { bands: vec![] })));
        let single = vec![TierBlock {
            up_to_wh: 0,
            rate_paisa_per_kwh: 5,
        }];
        assert!(is_valid(&t(TariffKind::Tiered {
            blocks: single,
            period_charge_paisa: 0
        })));
    }
}
