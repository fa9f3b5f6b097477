//! Log-time arithmetic for billing: local days, billing periods, local minutes and the friendly
//! hours window. Everything derives from the committed entry's `log_time_ms` and the grid's
//! committed `utc_offset_min`, never a clock: days and periods start at local midnight.

use ghatta_actor_sdk::BillingConfig;

/// Milliseconds in a minute.
pub const MINUTE_MS: u64 = 60_000;
/// Minutes in a day; local minutes of the day run `0..MINUTES_PER_DAY`.
pub const MINUTES_PER_DAY: u16 = 1_440;
/// Milliseconds in a day. Days are local days of log time under the committed offset
/// (`(log_time_ms + offset) / DAY_MS`), so every replica agrees on the boundary: the offset is
/// replicated state, changed only by a committed `SetBillingConfig`.
pub const DAY_MS: u64 = 86_400_000;
/// Days in a billing period of a tiered tariff (the SDK's `TariffKind::Tiered` contract).
pub const PERIOD_DAYS: u64 = 30;
/// Milliseconds in a billing period.
pub const PERIOD_MS: u64 = PERIOD_DAYS * DAY_MS;
/// Largest UTC offset accepted, minutes: UTC+14 (Line Islands) is the furthest east in use.
pub const UTC_OFFSET_MIN_MAX: i32 = 14 * 60;
/// Smallest UTC offset accepted, minutes: UTC-12 is the furthest west in use.
pub const UTC_OFFSET_MIN_MIN: i32 = -12 * 60;
/// Every UTC offset in use is a whole number of these minutes (Nepal +5:45, Chatham +12:45),
/// so local hours and days start on a quarter hour of UTC; the host's energy hours rely on it.
pub const UTC_OFFSET_STEP_MIN: i32 = 15;

/// Nepal Standard Time, UTC+5:45 (the SDK's default, which the host's energy hours share).
pub const NEPAL_UTC_OFFSET_MIN: i32 = ghatta_actor_sdk::UTC_OFFSET_MIN_DEFAULT;
/// Default friendly hours start: 18:00 local. Evening and night are when a household most
/// needs light and when no token vendor is open to sell credit, so nobody is cut then.
pub const DEFAULT_FRIENDLY_START_MIN: u16 = 18 * 60;
/// Default friendly hours end: 06:00 local, when shops reopen.
pub const DEFAULT_FRIENDLY_END_MIN: u16 = 6 * 60;

pub use ghatta_actor_sdk::PLAUSIBLE_MARGIN_PCT_DEFAULT;
/// Smallest margin accepted: below 100 % even an honest full draw would be held.
pub const PLAUSIBLE_MARGIN_PCT_MIN: u32 = 100;
/// Largest margin accepted: 100x is no check at all any more.
pub const PLAUSIBLE_MARGIN_PCT_MAX: u32 = 10_000;

/// The configuration used until an operator commits one: Nepal time, friendly hours
/// 18:00-06:00 local, disconnection at zero credit.
pub fn default_config() -> BillingConfig {
    BillingConfig {
        utc_offset_min: NEPAL_UTC_OFFSET_MIN,
        friendly_start_min: DEFAULT_FRIENDLY_START_MIN,
        friendly_end_min: DEFAULT_FRIENDLY_END_MIN,
        disconnect_at_mpaisa: 0,
        plausible_margin_pct: PLAUSIBLE_MARGIN_PCT_DEFAULT,
    }
}

/// Whether an operator's configuration is usable: minutes within a day, offset within the
/// offsets in use on Earth and a whole number of quarter hours.
pub fn config_is_valid(cfg: &BillingConfig) -> bool {
    cfg.friendly_start_min < MINUTES_PER_DAY
        && cfg.friendly_end_min < MINUTES_PER_DAY
        && (UTC_OFFSET_MIN_MIN..=UTC_OFFSET_MIN_MAX).contains(&cfg.utc_offset_min)
        && cfg.utc_offset_min % UTC_OFFSET_STEP_MIN == 0
        && (PLAUSIBLE_MARGIN_PCT_MIN..=PLAUSIBLE_MARGIN_PCT_MAX).contains(&cfg.plausible_margin_pct)
}

/// Log time shifted to local time, ms (saturating at both ends: hostile times cannot wrap).
fn local_ms(log_time_ms: u64, utc_offset_min: i32) -> u64 {
    log_time_ms.saturating_add_signed(i64::from(utc_offset_min) * MINUTE_MS as i64)
}

/// The local day (days since 1970-01-01 local) of a log time.
pub fn log_day(log_time_ms: u64, utc_offset_min: i32) -> u64 {
    local_ms(log_time_ms, utc_offset_min) / DAY_MS
}

/// The log time of the local midnight after `log_time_ms`.
pub fn next_day_start_ms(log_time_ms: u64, utc_offset_min: i32) -> u64 {
    let local_next = log_day(log_time_ms, utc_offset_min)
        .saturating_add(1)
        .saturating_mul(DAY_MS);
    // Back to log time; never at or before `log_time_ms`, even saturated at the ends.
    local_next
        .saturating_add_signed(-i64::from(utc_offset_min) * MINUTE_MS as i64)
        .max(log_time_ms.saturating_add(1))
}

/// The billing period (of a tiered tariff) containing a log time: 30 local days.
pub fn period(log_time_ms: u64, utc_offset_min: i32) -> u64 {
    local_ms(log_time_ms, utc_offset_min) / PERIOD_MS
}

/// Local minute of the day at a log time.
pub fn local_minute(log_time_ms: u64, utc_offset_min: i32) -> u16 {
    // u64::MAX / MINUTE_MS is far below i64::MAX, so the cast is exact.
    let utc_min = (log_time_ms / MINUTE_MS) as i64;
    let local = (utc_min + i64::from(utc_offset_min)).rem_euclid(i64::from(MINUTES_PER_DAY));
    local as u16
}

/// Whether a local minute lies in the window `[start, end)`, which may wrap midnight.
/// Equal bounds mean no window.
pub fn in_window(minute: u16, start_min: u16, end_min: u16) -> bool {
    if start_min <= end_min {
        start_min <= minute && minute < end_min
    } else {
        minute >= start_min || minute < end_min
    }
}

/// Whether friendly hours (no disconnection) are in force at a log time.
pub fn in_friendly_hours(log_time_ms: u64, cfg: &BillingConfig) -> bool {
    in_window(
        local_minute(log_time_ms, cfg.utc_offset_min),
        cfg.friendly_start_min,
        cfg.friendly_end_min,
    )
}

/// The first log time after `log_time_ms` at which the local minute is the window's end, i.e.
/// when friendly hours that are in force now will have ended.
pub fn next_friendly_end_ms(log_time_ms: u64, cfg: &BillingConfig) -> u64 {
    let now_min = local_minute(log_time_ms, cfg.utc_offset_min);
    let mut ahead_min = (i32::from(cfg.friendly_end_min) - i32::from(now_min))
        .rem_euclid(i32::from(MINUTES_PER_DAY));
    if ahead_min == 0 {
        ahead_min = i32::from(MINUTES_PER_DAY);
    }
    (log_time_ms / MINUTE_MS)
        .saturating_add(ahead_min as u64)
        .saturating_mul(MINUTE_MS)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(start: u16, end: u16, offset: i32) -> BillingConfig {
        BillingConfig {
            utc_offset_min: offset,
            friendly_start_min: start,
            friendly_end_min: end,
            disconnect_at_mpaisa: 0,
            plausible_margin_pct: PLAUSIBLE_MARGIN_PCT_DEFAULT,
        }
    }

    #[test]
    fn nepal_local_minute() {
        // 00:00 UTC is 05:45 in Nepal.
        assert_eq!(local_minute(0, 345), 345);
        // 18:15 UTC is 00:00 the next day in Nepal.
        assert_eq!(local_minute((18 * 60 + 15) * MINUTE_MS, 345), 0);
        // Negative offsets wrap backwards.
        assert_eq!(local_minute(0, -60), 23 * 60);
    }

    #[test]
    fn window_wraps_midnight() {
        assert!(in_window(18 * 60, 18 * 60, 6 * 60));
        assert!(in_window(0, 18 * 60, 6 * 60));
        assert!(in_window(6 * 60 - 1, 18 * 60, 6 * 60));
        assert!(!in_window(6 * 60, 18 * 60, 6 * 60));
        assert!(!in_window(12 * 60, 18 * 60, 6 * 60));
        assert!(in_window(9 * 60, 9 * 60, 17 * 60));
        assert!(!in_window(17 * 60, 9 * 60, 17 * 60));
        assert!(
            !in_window(9 * 60, 9 * 60, 9 * 60),
            "equal bounds: no window"
        );
    }

    #[test]
    fn friendly_end_is_the_next_end_minute() {
        let c = cfg(18 * 60, 6 * 60, 0);
        // 20:00 UTC -> 06:00 UTC next day.
        let at = 20 * 60 * MINUTE_MS + 30_000;
        assert_eq!(next_friendly_end_ms(at, &c), DAY_MS + 6 * 60 * MINUTE_MS);
        assert!(!in_friendly_hours(next_friendly_end_ms(at, &c), &c));
        // Exactly at the end minute: the next one is a day later.
        assert_eq!(
            next_friendly_end_ms(6 * 60 * MINUTE_MS, &c),
            DAY_MS + 6 * 60 * MINUTE_MS
        );
    }

    #[test]
    fn config_validation() {
        assert!(config_is_valid(&default_config()));
        assert!(!config_is_valid(&cfg(1_440, 0, 0)));
        assert!(!config_is_valid(&cfg(0, 1_440, 0)));
        assert!(!config_is_valid(&cfg(0, 0, 15 * 60)));
        assert!(!config_is_valid(&cfg(0, 0, -13 * 60)));
        assert!(config_is_valid(&cfg(0, 0, 345)));
        assert!(!config_is_valid(&cfg(0, 0, 340)), "not a quarter hour");
    }

    #[test]
    fn hostile_times_do_not_overflow() {
        let c = cfg(18 * 60, 6 * 60, UTC_OFFSET_MIN_MAX);
        let _ = local_minute(u64::MAX, UTC_OFFSET_MIN_MIN);
        let _ = next_friendly_end_ms(u64::MAX, &c);
        assert_eq!(next_day_start_ms(u64::MAX, 0), u64::MAX);
        assert_eq!(next_day_start_ms(u64::MAX, UTC_OFFSET_MIN_MIN), u64::MAX);
        let _ = period(u64::MAX, UTC_OFFSET_MIN_MAX);
        assert_eq!(log_day(0, UTC_OFFSET_MIN_MIN), 0);
    }

    #[test]
    fn days_and_periods_start_at_local_midnight() {
        // Local midnight in Nepal is 18:15 UTC the day before.
        let midnight = 10 * DAY_MS - 345 * MINUTE_MS;
        assert_eq!(log_day(midnight - 1, 345), 9);
        assert_eq!(log_day(midnight, 345), 10);
        assert_eq!(next_day_start_ms(midnight - 1, 345), midnight);
        assert_eq!(next_day_start_ms(midnight, 345), midnight + DAY_MS);
        let period_start = 30 * DAY_MS - 345 * MINUTE_MS;
        assert_eq!(period(period_start - 1, 345), 0);
        assert_eq!(period(period_start, 345), 1);
        // West of Greenwich the local day starts after UTC's.
        assert_eq!(next_day_start_ms(DAY_MS, -60), DAY_MS + 60 * MINUTE_MS);
    }
}
