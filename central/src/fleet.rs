//! The fleet view and the events: what the office sees of every grid at a glance (last
//! upload, WAN lag, recent alarms, today's energy and revenue in the grid's local day, silent
//! grids first), and a grid's alarms and relay commands decoded from its events stream.
//! Built on [`Store`] alone, so both stores answer the same.

use std::collections::BTreeMap;

use futures::{StreamExt, TryStreamExt};
use ghatta_actor_sdk::{self as sdk, codec as sdk_codec};
use ghatta_proto::outbox::Stream;
use serde::Serialize;

use crate::DAY_MS;
use crate::backend::Store;
use crate::error::StoreError;
use crate::localtime::{date_text, local_day};
use crate::store::{FleetRow, LedgerRow, StoredRecord, TimeRange};

/// One hour, ms.
pub const HOUR_MS: u64 = 3_600_000;

/// The outbox carries alarms as one-shot events, with no record that clears one; "active"
/// alarms are those logged in the last day of the grid's own log time (its newest record):
/// a day covers a night's outages and a day's operator shift, and a silent grid still shows
/// what it was raising when last heard.
pub const ALARM_RECENT_MS: u64 = 24 * HOUR_MS;
/// Most recent events read per grid for its alarms: a grid raising more than this in a day
/// shows this many (the count says "at least").
pub const ALARM_SCAN_MAX: usize = 1_000;
/// A grid with no upload for this long is listed first as silent unless the request says
/// otherwise (`?silent_hours=`): uploads come every few minutes when the link is up, and a
/// satellite or GSM outage of a few hours is weather, not yet a trip to the valley.
pub const SILENT_HOURS_DEFAULT: u64 = 6;
/// Grids whose day the fleet view reads at once. Each read is three short queries on
/// PostgreSQL (a loopback round trip each, one pooled connection) or a blocking-pool task on
/// redb: a few at once hide the round trips and use both cores, while half of
/// `pg::POOL_CONNECTIONS_MAX` leaves the other half to ingest, which must not wait behind the
/// office's page (BENCHMARKS.md, "A week per grid, the full fleet view").
pub const FLEET_READS_CONCURRENT: usize = 8;

/// What the retention setting removed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Pruned {
    /// Records deleted (redb).
    pub records: u64,
    /// Ledger lines deleted (redb).
    pub ledger: u64,
    /// Energy hours deleted (redb).
    pub energy_hours: u64,
    /// Folded days deleted (both stores: PostgreSQL keeps them in one small table).
    pub folded_days: u64,
    /// Monthly partitions detached and dropped (PostgreSQL), by name.
    pub partitions: Vec<String>,
}

/// A ledger line's revenue, mpaisa: what a charge or a fee took from the customer (billing
/// writes their amounts positive and takes them from the credit); top-ups, credits and other
/// lines bring none.
pub fn revenue_mpaisa(row: &LedgerRow) -> i64 {
    match row.kind.as_str() {
        "Charge" | "Fee" => row.amount_mpaisa,
        _ => 0,
    }
}

/// A grid's day so far in its local time.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct GridToday {
    /// The grid's UTC offset now (that of its newest energy hour), minutes.
    pub utc_offset_min: i32,
    /// Today in the grid's local time, `YYYY-MM-DD`.
    pub local_date: String,
    /// Energy billed by ledger charges logged today, Wh.
    pub energy_wh: u64,
    /// Charges and fees logged today, mpaisa.
    pub revenue_mpaisa: i64,
    /// Alarms logged in the last [`ALARM_RECENT_MS`] of the grid's log time, count by code.
    pub alarms: BTreeMap<String, u64>,
}

/// The start (Unix ms) of local day `day` under `utc_offset_min`.
fn local_day_start_ms(day: u64, utc_offset_min: i32) -> u64 {
    day.saturating_mul(DAY_MS)
        .saturating_add_signed(-i64::from(utc_offset_min) * 60_000)
}

/// `grid`'s day so far at `now_ms`, and its recent alarms before `newest_time_ms`.
pub async fn today<S: Store>(
    s: &S,
    grid: u64,
    newest_time_ms: u64,
    now_ms: u64,
) -> Result<GridToday, StoreError> {
    let utc_offset_min = s
        .utc_offsets_at(grid, vec![now_ms])
        .await?
        .first()
        .copied()
        .unwrap_or(0);
    let day = local_day(now_ms, utc_offset_min);
    let range = TimeRange {
        from_ms: local_day_start_ms(day, utc_offset_min),
        to_ms: local_day_start_ms(day + 1, utc_offset_min),
    };
    let (energy_wh, revenue_mpaisa) = s.ledger_sums(grid, range).await?;
    let mut alarms = BTreeMap::new();
    for (_, rec) in s
        .recent_records(
            grid,
            Stream::Events.id(),
            newest_time_ms.saturating_sub(ALARM_RECENT_MS),
            ALARM_SCAN_MAX,
        )
        .await?
    {
        if let Some(sdk::Output::Alarm(a)) = sdk_codec::decode::<sdk::Output>(&rec.output) {
            *alarms.entry(format!("{:?}", a.code)).or_insert(0) += 1;
        }
    }
    Ok(GridToday {
        utc_offset_min,
        local_date: date_text(day),
        energy_wh,
        revenue_mpaisa,
        alarms,
    })
}

/// One grid in the fleet view.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FleetEntry {
    /// Grid id, last upload, records, cursors.
    #[serde(flatten)]
    pub row: FleetRow,
    /// Since its last upload, ms.
    pub since_upload_ms: u64,
    /// How far the central is behind the grid: now minus the newest log time stored, ms.
    pub wan_lag_ms: u64,
    /// No upload for longer than the request's silence threshold.
    pub silent: bool,
    /// Its local day so far and its recent alarms.
    pub today: GridToday,
}

/// The fleet at `now_ms`: every grid (at most [`crate::FLEET_GRIDS_MAX`]; the flag says the
/// list was cut short), grids silent for more than `silent_after_ms` first (longest silent
/// first), then the others by grid id.
pub async fn fleet_view<S: Store>(
    s: &S,
    now_ms: u64,
    silent_after_ms: u64,
) -> Result<(Vec<FleetEntry>, bool), StoreError> {
    let mut rows = s.fleet(crate::FLEET_GRIDS_MAX + 1).await?;
    let truncated = rows.len() > crate::FLEET_GRIDS_MAX;
    rows.truncate(crate::FLEET_GRIDS_MAX);
    // Bounded, in order: at most `FLEET_READS_CONCURRENT` grids' days are read at once.
    let mut out: Vec<FleetEntry> = futures::stream::iter(rows)
        .map(|row| async move {
            let today = today(s, row.grid, row.newest_time_ms, now_ms).await?;
            let since_upload_ms = now_ms.saturating_sub(row.last_upload_ms);
            Ok::<_, StoreError>(FleetEntry {
                since_upload_ms,
                wan_lag_ms: now_ms.saturating_sub(row.newest_time_ms),
                silent: since_upload_ms > silent_after_ms,
                today,
                row,
            })
        })
        .buffered(FLEET_READS_CONCURRENT)
        .try_collect()
        .await?;
    out.sort_by(|a, b| {
        b.silent
            .cmp(&a.silent)
            .then(if a.silent {
                b.since_upload_ms.cmp(&a.since_upload_ms)
            } else {
                std::cmp::Ordering::Equal
            })
            .then(a.row.grid.cmp(&b.row.grid))
    });
    Ok((out, truncated))
}

/// One alarm or relay command of a grid's events stream, as the events route serves it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EventRow {
    /// Outbox sequence at the grid (the events route's cursor).
    pub seq: u64,
    /// Raft log index at the grid.
    pub log_index: u64,
    /// Log time at the grid, Unix ms.
    pub at_ms: u64,
    /// "alarm" or "relay".
    pub kind: String,
    /// The alarm code, or the relay's reason.
    pub code: String,
    /// Node concerned (0: none given).
    pub node: u64,
    /// Alarm: its subject (customer, feeder, ...); relay: the relay (`Feeder(2)`, ...).
    pub subject: String,
    /// Alarm: its value; relay: 1 closed (supply), 0 open (cut).
    pub value: i64,
    /// Alarm: its text; relay: empty.
    pub text: String,
    /// Arrived as back-fill.
    pub backfill: bool,
}

/// A stored events-stream record as an [`EventRow`]; `None` for an output that is neither
/// (a record this build cannot decode is still stored and served by the raw routes).
pub fn event_row(seq: u64, rec: &StoredRecord) -> Option<EventRow> {
    let base = |kind: &str, code: String, node: u64, subject: String, value, text| EventRow {
        seq,
        log_index: rec.index,
        at_ms: rec.time_ms,
        kind: kind.into(),
        code,
        node,
        subject,
        value,
        text,
        backfill: rec.backfill,
    };
    match sdk_codec::decode::<sdk::Output>(&rec.output)? {
        sdk::Output::Alarm(a) => Some(base(
            "alarm",
            format!("{:?}", a.code),
            a.node.map_or(0, |n| n.0),
            a.subject.to_string(),
            a.value,
            a.text,
        )),
        sdk::Output::Relay(r) => Some(base(
            "relay",
            format!("{:?}", r.reason),
            r.node.0,
            match r.relay {
                sdk::RelayId::Customer(c) => format!("Customer({})", c.0),
                other => format!("{other:?}"),
            },
            i64::from(r.closed),
            String::new(),
        )),
        _ => None,
    }
}
