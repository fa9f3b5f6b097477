//! Pure grid arithmetic for balancing: totals over the nodes' latest reports and the split of
//! surplus generation across ballast loads. Integer-only, so every replica gets the same watts.

use alloc::vec::Vec;

use ghatta_actor_sdk::{FeederRef, NodeId};

use crate::state::NodeReport;

/// Lower edge of the statutory frequency band, mHz: 50 Hz - 2.5 % (Nepal Electricity
/// Regulations, rule 43).
pub const BAND_LOW_MHZ: u32 = 48_750;
/// Upper edge of the statutory frequency band, mHz: 50 Hz + 2.5 %.
pub const BAND_HIGH_MHZ: u32 = 51_250;

/// Whether a reported frequency is a measurement: boards without a frequency input (feeder-only
/// nodes) report 0, which must neither shed load nor raise band alarms.
pub fn is_measured(frequency_mhz: u32) -> bool {
    frequency_mhz != 0
}

/// Whether a measured frequency is outside the statutory band.
pub fn out_of_band(frequency_mhz: u32) -> bool {
    !(BAND_LOW_MHZ..=BAND_HIGH_MHZ).contains(&frequency_mhz)
}

/// Grid totals over the fresh reports, W (u64: a sum of u32s cannot overflow it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Totals {
    /// Generation.
    pub generation_w: u64,
    /// Load on closed feeders, not counting feeders balancing has shed (their contactors are
    /// commanded open even if the report predates the command).
    pub load_w: u64,
    /// Ballast capacity.
    pub ballast_capacity_w: u64,
}

impl Totals {
    /// Generation left for ballast once the load is served (0 when short).
    pub fn surplus_w(&self) -> u64 {
        self.generation_w.saturating_sub(self.load_w)
    }

    /// Whether the load exceeds generation.
    pub fn short(&self) -> bool {
        self.load_w > self.generation_w
    }
}

/// Sum the reports, skipping shed feeders' load.
pub fn totals(reports: &[(NodeId, NodeReport)], shed: &[FeederRef]) -> Totals {
    let mut t = Totals::default();
    for (node, r) in reports {
        t.generation_w += u64::from(r.generation_w);
        t.ballast_capacity_w += u64::from(r.ballast_capacity_w);
        for f in &r.feeders {
            let this = FeederRef {
                node: *node,
                feeder: f.feeder,
            };
            if f.closed && !shed.contains(&this) {
                t.load_w += u64::from(f.load_w);
            }
        }
    }
    t
}

/// Split `surplus_w` across ballast loads in proportion to their capacity, clamped to each
/// capacity, never negative, and exact: the set-points sum to `min(surplus, total capacity)`.
/// `capacities` are `(node, capacity)` in node order; the watts that proportional rounding
/// leaves over go one each to the first nodes with room, so the split is deterministic.
pub fn ballast_setpoints(surplus_w: u64, capacities: &[(NodeId, u32)]) -> Vec<(NodeId, u32)> {
    let capacity_w: u64 = capacities.iter().map(|&(_, c)| u64::from(c)).sum();
    let target_w = surplus_w.min(capacity_w);
    let mut out: Vec<(NodeId, u32)> = capacities
        .iter()
        .map(|&(node, cap)| {
            let share = if capacity_w == 0 {
                0
            } else {
                u128::from(target_w) * u128::from(cap) / u128::from(capacity_w)
            };
            // share <= cap because target_w <= capacity_w.
            (node, u32::try_from(share).unwrap_or(cap).min(cap))
        })
        .collect();
    let given_w: u64 = out.iter().map(|&(_, s)| u64::from(s)).sum();
    let mut left_w = target_w.saturating_sub(given_w);
    for (i, (_, setpoint_w)) in out.iter_mut().enumerate() {
        if left_w == 0 {
            break;
        }
        let cap = capacities.get(i).map_or(0, |&(_, c)| c);
        if *setpoint_w < cap {
            *setpoint_w += 1;
            left_w -= 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    #[test]
    fn shares_follow_capacity_and_sum_exactly() {
        let caps = [(NodeId(1), 10_000), (NodeId(2), 20_000), (NodeId(3), 3)];
        let sp = ballast_setpoints(10_001, &caps);
        let sum: u64 = sp.iter().map(|&(_, s)| u64::from(s)).sum();
        assert_eq!(sum, 10_001);
        // floor(10_001 * 10_000 / 30_003) = 3_333, floor(.. * 20_000 ..) = 6_666,
        // floor(.. * 3 ..) = 1 exactly; the 1 W left goes to the first node.
        assert_eq!(
            sp,
            vec![(NodeId(1), 3_334), (NodeId(2), 6_666), (NodeId(3), 1)]
        );
    }

    #[test]
    fn clamped_to_capacity_and_zero_when_short() {
        let caps = [(NodeId(1), 1_000), (NodeId(2), 500)];
        assert_eq!(
            ballast_setpoints(9_999, &caps),
            vec![(NodeId(1), 1_000), (NodeId(2), 500)]
        );
        assert_eq!(
            ballast_setpoints(0, &caps),
            vec![(NodeId(1), 0), (NodeId(2), 0)]
        );
        assert_eq!(ballast_setpoints(5, &[]), vec![]);
        assert_eq!(
            ballast_setpoints(5, &[(NodeId(1), 0)]),
            vec![(NodeId(1), 0)]
        );
    }

    #[test]
    fn huge_values_do_not_overflow() {
        let caps = [(NodeId(1), u32::MAX), (NodeId(2), u32::MAX)];
        let sp = ballast_setpoints(u64::MAX, &caps);
        assert_eq!(sp, vec![(NodeId(1), u32::MAX), (NodeId(2), u32::MAX)]);
    }

    #[test]
    fn band_edges() {
        assert!(!out_of_band(48_750));
        assert!(!out_of_band(51_250));
        assert!(out_of_band(48_749));
        assert!(out_of_band(51_251));
    }
}
