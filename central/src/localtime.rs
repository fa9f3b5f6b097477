//! Local time at the central: a grid's records carry log time in Unix ms and, for energy, the
//! grid's UTC offset in minutes; this turns them into local days and ISO-8601 text with the
//! offset (`2026-12-05T18:30:00+05:45`), as the exports and energy per day show them.

use crate::DAY_MS;

/// One minute, ms.
const MINUTE_MS: i64 = 60_000;

/// `t_ms` moved by `utc_offset_min`, saturating at both ends (a hostile record cannot wrap).
fn local_ms(t_ms: u64, utc_offset_min: i32) -> u64 {
    t_ms.saturating_add_signed(i64::from(utc_offset_min) * MINUTE_MS)
}

/// The local day (days since 1970-01-01 in local time) of `t_ms` under `utc_offset_min`.
pub fn local_day(t_ms: u64, utc_offset_min: i32) -> u64 {
    local_ms(t_ms, utc_offset_min) / DAY_MS
}

/// (year, month 1..=12, day 1..=31) of a day number since 1970-01-01 (Howard Hinnant's
/// civil_from_days).
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// The date of a local day number, `YYYY-MM-DD`.
pub fn date_text(day: u64) -> String {
    let (y, m, d) = civil_from_days(i64::try_from(day).unwrap_or(i64::MAX / 2));
    format!("{y:04}-{m:02}-{d:02}")
}

/// `t_ms` as local ISO-8601 with its offset, to the second: `2026-12-05T18:30:00+05:45`
/// (`Z` for UTC).
pub fn iso_local(t_ms: u64, utc_offset_min: i32) -> String {
    let local = local_ms(t_ms, utc_offset_min);
    let secs = (local % DAY_MS) / 1_000;
    let zone = if utc_offset_min == 0 {
        "Z".to_string()
    } else {
        let sign = if utc_offset_min < 0 { '-' } else { '+' };
        let a = utc_offset_min.unsigned_abs();
        format!("{sign}{:02}:{:02}", a / 60, a % 60)
    };
    format!(
        "{}T{:02}:{:02}:{:02}{zone}",
        date_text(local / DAY_MS),
        secs / 3_600,
        secs / 60 % 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nepal_text_and_days() {
        // 2026-12-05T12:45:00Z is 18:30 in Nepal.
        let t = 1_796_474_700_000;
        assert_eq!(iso_local(t, 0), "2026-12-05T12:45:00Z");
        assert_eq!(iso_local(t, 345), "2026-12-05T18:30:00+05:45");
        assert_eq!(iso_local(t, -570), "2026-12-05T03:15:00-09:30");
        // Local midnight in Nepal is 18:15 UTC the day before.
        let midnight = 1_796_515_200_000 - 345 * 60_000;
        assert_eq!(iso_local(midnight, 345), "2026-12-06T00:00:00+05:45");
        assert_eq!(local_day(midnight - 1, 345) + 1, local_day(midnight, 345));
        assert_eq!(date_text(local_day(midnight, 345)), "2026-12-06");
        assert_eq!(date_text(0), "1970-01-01");
        // Hostile values neither wrap nor panic.
        let _ = iso_local(u64::MAX, 14 * 60);
        assert_eq!(local_day(0, -720), 0);
        let _ = date_text(u64::MAX);
    }
}
