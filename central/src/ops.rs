//! Operations: the retention setting (what is old enough to go, and the daily task that
//! removes it) and `ghatta-central check` (is the store reachable, is its schema this build's,
//! is every grid uploading), each problem said with what to do.

use std::time::Duration;

use serde::Serialize;

use crate::DAY_MS;
use crate::backend::{Backend, Store};
use crate::error::StoreError;
use crate::fleet::HOUR_MS;
use crate::localtime::civil_from_days;

/// How often a central with a retention setting looks for months to remove: partitions
/// are whole months, so a day's delay keeps at most a day more than asked.
pub const RETENTION_EVERY: Duration = Duration::from_secs(24 * 3_600);

/// The start (Unix ms, UTC) of the month `months` whole months before the one holding
/// `now_ms`: with a retention of `months`, what was logged before it goes. Whole UTC months,
/// as PostgreSQL's partitions are, so both stores keep the same rows.
pub fn retention_cutoff_ms(now_ms: u64, months: u32) -> u64 {
    let day = i64::try_from(now_ms / DAY_MS).unwrap_or(i64::MAX / 2);
    let (y, m, _) = civil_from_days(day);
    let index = y * 12 + i64::from(m) - 1 - i64::from(months);
    let (y, m) = (index.div_euclid(12), index.rem_euclid(12) as u32 + 1);
    u64::try_from(crate::pg::days_from_civil(y, m))
        .unwrap_or(0)
        .saturating_mul(DAY_MS)
}

/// Applies the retention of `months` now, then every [`RETENTION_EVERY`], until dropped.
pub async fn retention_task(store: Backend, months: u32) {
    let mut tick = tokio::time::interval(RETENTION_EVERY);
    loop {
        tick.tick().await;
        let cutoff = retention_cutoff_ms(crate::store::now_ms(), months);
        match store.prune_before(cutoff).await {
            Ok(p) => tracing::info!(
                months,
                cutoff_ms = cutoff,
                records = p.records,
                ledger = p.ledger,
                energy_hours = p.energy_hours,
                partitions = ?p.partitions,
                "retention applied"
            ),
            Err(e) => tracing::error!(
                months,
                error = %e,
                "retention failed; it is tried again in a day (the store keeps the rows meanwhile)"
            ),
        }
    }
}

/// One grid as `check` sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GridLag {
    /// Grid id.
    pub grid: u64,
    /// Since its last upload, ms.
    pub since_upload_ms: u64,
    /// Now minus the newest log time stored, ms.
    pub wan_lag_ms: u64,
}

/// What `check` found: the problems (each says what to do) and each grid's lag.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CheckReport {
    /// The store and its schema, in words.
    pub store: String,
    /// Every grid's lag.
    pub grids: Vec<GridLag>,
    /// What is wrong, each with what to do; empty when all is well.
    pub problems: Vec<String>,
}

/// Checks the grids' lag on `store` at `now_ms`: a grid with no upload for more than
/// `lag_hours` is a problem.
pub async fn check_grids<S: Store>(
    store: &S,
    now_ms: u64,
    lag_hours: u64,
    report: &mut CheckReport,
) -> Result<(), StoreError> {
    for row in store.fleet(crate::FLEET_GRIDS_MAX).await? {
        let lag = GridLag {
            grid: row.grid,
            since_upload_ms: now_ms.saturating_sub(row.last_upload_ms),
            wan_lag_ms: now_ms.saturating_sub(row.newest_time_ms),
        };
        if lag.since_upload_ms > lag_hours.saturating_mul(HOUR_MS) {
            report.problems.push(format!(
                "grid {}: no upload for {} h (its newest record is {} h old): check the grid's WAN link and uploader (`ghatta status` on one of its nodes shows the WAN cursor), or raise --lag-hours if it is known to be offline",
                row.grid,
                lag.since_upload_ms / HOUR_MS,
                lag.wan_lag_ms / HOUR_MS
            ));
        }
        report.grids.push(lag);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cutoff_is_a_month_start_counted_back_from_this_month() {
        // 2026-12-05T01:00Z: this month is December 2026.
        let now = 1_796_428_800_000 + 3_600_000;
        assert_eq!(retention_cutoff_ms(now, 0), 1_796_083_200_000); // 2026-12-01
        assert_eq!(retention_cutoff_ms(now, 1), 1_793_491_200_000); // 2026-11-01
        assert_eq!(retention_cutoff_ms(now, 12), 1_764_547_200_000); // 2025-12-01
        // Across a year boundary and from the epoch.
        assert_eq!(retention_cutoff_ms(now, 11), 1_767_225_600_000); // 2026-01-01
        assert_eq!(retention_cutoff_ms(0, 0), 0);
        assert_eq!(retention_cutoff_ms(0, 5), 0, "before 1970 is the epoch");
    }
}
