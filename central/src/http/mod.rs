//! The query API (HTTP/JSON and CSV, axum): status, a grid's state, ledgers, energy per day
//! and per hour, the days a grid folded, exports. Every route but the health check needs the bearer token
//! ([`access`]); ledgers, energy hours and exports come in pages bounded in rows and by a time
//! range ([`page`]), never a grid's whole history in one response. Keep it on loopback;
//! operators reach it through SSH.

pub mod access;
pub mod html;
pub mod page;
pub mod stream;

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;

use self::access::HttpAccess;
use self::page::Cursor;
use crate::DAY_MS;
use crate::backend::Store;
use crate::fleet::{EventRow, FleetEntry, HOUR_MS, SILENT_HOURS_DEFAULT, event_row, fleet_view};
use crate::localtime::{date_text, iso_local};
use crate::setup::{SetupRow, setup_row};
use crate::store::{
    EnergyHourRow, FoldedDayRow, HourKey, Inner, LedgerKey, LedgerRow, Page, StoredRecord,
    TimeRange,
};
use ghatta_proto::outbox::Stream;

/// The response header that carries a CSV page's cursor (JSON pages carry `next` in the body).
pub const NEXT_CURSOR_HEADER: &str = "x-next-cursor";

type HttpError = (StatusCode, Json<serde_json::Value>);

fn http_err(e: impl std::fmt::Display) -> HttpError {
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        Json(serde_json::json!({ "error": format!("central store read failed: {e}") })),
    )
}

pub(crate) fn router(inner: Arc<Inner>, access: HttpAccess) -> Router {
    Router::new()
        .route(access::HEALTH_PATH, get(http_health))
        .route("/v1/status", get(http_status))
        .route("/v1/grids", get(http_fleet))
        .route("/v1/grids/{grid}", get(http_grid))
        .route(
            "/v1/grids/{grid}/customers/{customer}/ledger",
            get(http_ledger),
        )
        .route(
            "/v1/grids/{grid}/customers/{customer}/ledger.csv",
            get(http_ledger_csv),
        )
        .route(
            "/v1/grids/{grid}/customers/{customer}/energy",
            get(http_customer_energy),
        )
        .route(
            "/v1/grids/{grid}/customers/{customer}/energy.csv",
            get(http_customer_energy_csv),
        )
        .route(
            "/v1/grids/{grid}/customers/{customer}/folded-days",
            get(http_customer_folded),
        )
        .route(
            "/v1/grids/{grid}/customers/{customer}/folded-days.csv",
            get(http_customer_folded_csv),
        )
        .route("/v1/grids/{grid}/folded-days", get(http_folded))
        .route("/v1/grids/{grid}/folded-days.csv", get(http_folded_csv))
        .route("/v1/grids/{grid}/events", get(http_events))
        .route("/v1/grids/{grid}/events.csv", get(http_events_csv))
        .route("/v1/grids/{grid}/setup", get(http_setup))
        .route("/v1/grids/{grid}/setup.csv", get(http_setup_csv))
        .route(access::UI_PREFIX, get(ui_fleet))
        .route("/ui/grids/{grid}", get(ui_grid))
        .route("/v1/grids/{grid}/energy-per-day", get(http_energy))
        .route("/v1/grids/{grid}/energy-hours", get(http_energy_hours))
        .route(
            "/v1/grids/{grid}/energy-hours.csv",
            get(http_energy_hours_csv),
        )
        .route("/v1/grids/{grid}/export.json", get(http_export_json))
        .route("/v1/grids/{grid}/export.csv", get(http_export_csv))
        .layer(axum::middleware::from_fn_with_state(
            access,
            access::require_access,
        ))
        .with_state(inner)
}

fn bad_request(message: String) -> HttpError {
    (
        StatusCode::BAD_REQUEST,
        Json(serde_json::json!({ "error": message })),
    )
}

/// A page as JSON: `{"rows": [...], "next": "<cursor>" | null}`.
fn json_page<T: Serialize, K: Cursor>(p: Page<T, K>) -> Json<serde_json::Value> {
    Json(serde_json::json!({
        "rows": p.rows,
        "next": p.next.map(|k| k.to_text()),
    }))
}

/// A page as CSV, its cursor in [`NEXT_CURSOR_HEADER`] when more rows follow. Only the first
/// page (no `after`) has the header line, so pages appended in order make one CSV file.
fn csv_page<K: Cursor>(csv: String, first: bool, next: Option<K>) -> Response {
    let csv = if first {
        csv
    } else {
        csv.split_once('\n')
            .map(|(_, rows)| rows.to_string())
            .unwrap_or_default()
    };
    let mut r = ([(header::CONTENT_TYPE, "text/csv")], csv).into_response();
    if let Some(Ok(v)) = next.map(|k| HeaderValue::from_str(&k.to_text())) {
        r.headers_mut().insert(NEXT_CURSOR_HEADER, v);
    }
    r
}

/// The page of a grid's ledger (one customer's with `Some`) a query string asks for, and
/// whether it is the first page.
async fn ledger_for(
    i: &Inner,
    grid: u64,
    customer: Option<u32>,
    q: &BTreeMap<String, String>,
) -> Result<(bool, Page<LedgerRow, LedgerKey>), HttpError> {
    let r = page::parse(q).map_err(bad_request)?;
    let p = i
        .backend
        .ledger_page(grid, customer, r.range, r.after, r.limit)
        .await
        .map_err(http_err)?;
    Ok((r.after.is_none(), p))
}

/// The page of a grid's hourly energy a query string asks for, and whether it is the first.
async fn hours_for(
    i: &Inner,
    grid: u64,
    q: &BTreeMap<String, String>,
) -> Result<(bool, Page<EnergyHourRow, HourKey>), HttpError> {
    let r = page::parse(q).map_err(bad_request)?;
    let p = i
        .backend
        .energy_hours_page(grid, r.range, r.after, r.limit)
        .await
        .map_err(http_err)?;
    Ok((r.after.is_none(), p))
}

async fn http_health() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "ok": true }))
}

async fn http_status(State(i): State<Arc<Inner>>) -> Json<serde_json::Value> {
    Json(serde_json::json!({
        "public_key": i.secret.public().to_base64(),
        "grids": i.grids.keys().collect::<Vec<_>>(),
        "stats": i.stats.snapshot(),
    }))
}

/// `?silent_hours=N` of the fleet view and page (default [`SILENT_HOURS_DEFAULT`]).
fn silent_hours(q: &BTreeMap<String, String>) -> Result<u64, HttpError> {
    if let Some(k) = q.keys().find(|k| k.as_str() != "silent_hours") {
        return Err(bad_request(format!(
            "unknown query parameter `{k}`; this route takes silent_hours"
        )));
    }
    match q.get("silent_hours") {
        None => Ok(SILENT_HOURS_DEFAULT),
        Some(v) => v.parse().map_err(|_| {
            bad_request(format!(
                "silent_hours=`{v}` is not a whole number of hours (grids without an upload for longer are listed first)"
            ))
        }),
    }
}

/// The fleet view: every grid that uploaded, silent ones first (no upload for more than
/// `silent_hours`), each with its last upload, WAN lag, recent alarms, and today's energy and
/// revenue in its local day.
async fn http_fleet(
    State(i): State<Arc<Inner>>,
    Query(q): Query<BTreeMap<String, String>>,
) -> Result<Json<serde_json::Value>, HttpError> {
    let hours = silent_hours(&q)?;
    let (rows, truncated) = fleet_view(
        &i.backend,
        crate::store::now_ms(),
        hours.saturating_mul(HOUR_MS),
    )
    .await
    .map_err(http_err)?;
    Ok(Json(serde_json::json!({
        "grids": rows,
        "truncated": truncated,
        "silent_hours": hours,
    })))
}

/// The fleet page (HTML).
async fn ui_fleet(
    State(i): State<Arc<Inner>>,
    Query(q): Query<BTreeMap<String, String>>,
) -> Result<Html<String>, HttpError> {
    let hours = silent_hours(&q)?;
    let (rows, truncated) = fleet_view(
        &i.backend,
        crate::store::now_ms(),
        hours.saturating_mul(HOUR_MS),
    )
    .await
    .map_err(http_err)?;
    Ok(Html(html::fleet_page(&rows, truncated, hours)))
}

/// A grid's page (HTML).
async fn ui_grid(
    State(i): State<Arc<Inner>>,
    Path(grid): Path<u64>,
) -> Result<Html<String>, HttpError> {
    let b = &i.backend;
    let Some((state, customers)) = b.grid_state(grid).await.map_err(http_err)? else {
        return Err(not_uploaded(grid));
    };
    let now = crate::store::now_ms();
    let row = crate::store::FleetRow {
        grid,
        // The grid's upload time is kept with the fleet's rows (one short read per grid).
        last_upload_ms: b
            .fleet(crate::FLEET_GRIDS_MAX)
            .await
            .map_err(http_err)?
            .iter()
            .find(|r| r.grid == grid)
            .map_or(0, |r| r.last_upload_ms),
        newest_time_ms: state.newest_time_ms,
        records: state.records,
        cursors: state.cursors.clone(),
    };
    let today = crate::fleet::today(b, grid, row.newest_time_ms, now)
        .await
        .map_err(http_err)?;
    let since_upload_ms = now.saturating_sub(row.last_upload_ms);
    let entry = FleetEntry {
        since_upload_ms,
        wan_lag_ms: now.saturating_sub(row.newest_time_ms),
        silent: since_upload_ms > SILENT_HOURS_DEFAULT * HOUR_MS,
        today,
        row,
    };
    let days = b.energy_per_day(grid).await.map_err(http_err)?;
    let events: Vec<EventRow> = b
        .recent_records(grid, Stream::Events.id(), 0, html::PAGE_EVENTS)
        .await
        .map_err(http_err)?
        .iter()
        .filter_map(|(seq, r)| event_row(*seq, r))
        .collect();
    Ok(Html(html::grid_page(&html::GridPage {
        entry: &entry,
        state: &state,
        customers: &customers,
        days: &days,
        events: &events,
    })))
}

fn not_uploaded(grid: u64) -> HttpError {
    (
        StatusCode::NOT_FOUND,
        Json(serde_json::json!({ "error": format!("grid {grid} has not uploaded anything yet") })),
    )
}

async fn http_grid(
    State(i): State<Arc<Inner>>,
    Path(grid): Path<u64>,
) -> Result<Json<serde_json::Value>, HttpError> {
    match i.backend.grid_state(grid).await.map_err(http_err)? {
        Some((state, customers)) => Ok(Json(
            serde_json::json!({ "state": state, "customers": customers }),
        )),
        None => Err(not_uploaded(grid)),
    }
}

/// How a streamed route writes its rows: JSON, or CSV lines (each with the grid's UTC offset
/// at the row's time when `at` names that time; rows that carry their own offset, energy
/// hours, need no lookup).
struct RowForm<T> {
    /// One row as JSON.
    json: fn(&T) -> String,
    /// The CSV header line.
    csv_head: &'static str,
    /// One row as a CSV line, given the grid and the offset.
    csv_line: fn(u64, &T, i32) -> String,
    /// The row's time, for its offset (`Store::utc_offsets_at`), or `None`.
    at: Option<fn(&T) -> u64>,
}

/// A streamed route's answer (`http/stream.rs`): the rows `fetch(store, after, n)` hands over,
/// by the query string's range, cursor and limit, as CSV when `csv`, else JSON.
fn streamed<T, K, F, Fut>(
    i: &Inner,
    grid: u64,
    q: &BTreeMap<String, String>,
    csv: bool,
    form: RowForm<T>,
    fetch: F,
) -> Result<Response, HttpError>
where
    T: Send + 'static,
    K: page::Cursor + Clone + Send + 'static,
    F: Fn(crate::Backend, TimeRange, Option<K>, usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<Page<T, K>, crate::StoreError>> + Send + 'static,
{
    let r = stream::parse::<K>(q).map_err(bad_request)?;
    let (b, range) = (i.backend.clone(), r.range);
    let fetch = std::sync::Arc::new(fetch);
    if !csv {
        return Ok(stream::respond(
            move |after, n| fetch(b.clone(), range, after, n),
            r.after,
            r.limit,
            stream::Format::Json,
            move |row: &T| (form.json)(row),
        ));
    }
    let at = form.at;
    Ok(stream::respond(
        move |after, n| {
            let (b, fetch) = (b.clone(), fetch.clone());
            async move {
                let p = fetch(b.clone(), range, after, n).await?;
                let offsets = match at {
                    Some(at) => {
                        b.utc_offsets_at(grid, p.rows.iter().map(at).collect())
                            .await?
                    }
                    None => vec![0; p.rows.len()],
                };
                Ok(Page {
                    rows: p.rows.into_iter().zip(offsets).collect(),
                    next: p.next,
                })
            }
        },
        r.after,
        r.limit,
        stream::Format::Csv(form.csv_head),
        move |(row, off): &(T, i32)| (form.csv_line)(grid, row, *off),
    ))
}

/// A customer's ledger lines.
fn ledger_form() -> RowForm<LedgerRow> {
    RowForm {
        json: |r| serde_json::to_string(r).unwrap_or_default(),
        csv_head: LEDGER_CSV_HEAD,
        csv_line: ledger_csv_line,
        at: Some(|r| r.at_ms),
    }
}

/// A customer's energy hours (each carries its offset).
fn hours_form() -> RowForm<EnergyHourRow> {
    RowForm {
        json: |r| serde_json::to_string(r).unwrap_or_default(),
        csv_head: ENERGY_HOURS_CSV_HEAD,
        csv_line: |grid, r, _| energy_hour_csv_line(grid, r),
        at: None,
    }
}

/// A grid's events.
fn events_form() -> RowForm<EventRow> {
    RowForm {
        json: |r| serde_json::to_string(r).unwrap_or_default(),
        csv_head: EVENTS_CSV_HEAD,
        csv_line: event_csv_line,
        at: Some(|r| r.at_ms),
    }
}

/// One customer's ledger by time range, streamed (JSON, or CSV with `csv`).
fn ledger_stream(
    i: &Inner,
    grid: u64,
    customer: u32,
    q: &BTreeMap<String, String>,
    csv: bool,
) -> Result<Response, HttpError> {
    streamed(
        i,
        grid,
        q,
        csv,
        ledger_form(),
        move |b, range, after, n| async move {
            b.ledger_page(grid, Some(customer), range, after, n).await
        },
    )
}

/// One customer's energy hours by time range, streamed; the cursor is the last row's hour.
fn customer_energy_stream(
    i: &Inner,
    grid: u64,
    customer: u32,
    q: &BTreeMap<String, String>,
    csv: bool,
) -> Result<Response, HttpError> {
    streamed(
        i,
        grid,
        q,
        csv,
        hours_form(),
        move |b, range, after, n| async move {
            b.customer_hours_page(grid, customer, range, after, n).await
        },
    )
}

/// A grid's events (alarms and relay commands) by log-time range, streamed; the cursor is the
/// last row's seq.
fn events_stream(
    i: &Inner,
    grid: u64,
    q: &BTreeMap<String, String>,
    csv: bool,
) -> Result<Response, HttpError> {
    decoded_stream(i, grid, q, csv, events_form(), Stream::Events, event_row)
}

/// A grid's billing set-up (tariff versions, configurations) by log-time range, streamed; the
/// cursor is the last row's seq. The records are among the ledger stream's lines, so this
/// reads the stream's records of the range (as an export of the range does).
fn setup_stream(
    i: &Inner,
    grid: u64,
    q: &BTreeMap<String, String>,
    csv: bool,
) -> Result<Response, HttpError> {
    decoded_stream(i, grid, q, csv, setup_form(), Stream::Ledger, setup_row)
}

/// The records of one of a grid's streams that `decode` makes a row of, streamed by log-time
/// range; the cursor is the last record's seq.
fn decoded_stream<T: Send + 'static>(
    i: &Inner,
    grid: u64,
    q: &BTreeMap<String, String>,
    csv: bool,
    form: RowForm<T>,
    stream: Stream,
    decode: fn(u64, &StoredRecord) -> Option<T>,
) -> Result<Response, HttpError> {
    streamed(
        i,
        grid,
        q,
        csv,
        form,
        move |b, range, after, n| async move {
            let p = b.records_page(grid, stream.id(), range, after, n).await?;
            Ok(Page {
                rows: p
                    .rows
                    .iter()
                    .filter_map(|(seq, r)| decode(*seq, r))
                    .collect(),
                next: p.next,
            })
        },
    )
}

/// A grid's billing set-up.
fn setup_form() -> RowForm<SetupRow> {
    RowForm {
        json: |r| serde_json::to_string(r).unwrap_or_default(),
        csv_head: SETUP_CSV_HEAD,
        csv_line: setup_csv_line,
        at: Some(|r| r.at_ms),
    }
}

async fn http_setup(
    State(i): State<Arc<Inner>>,
    Path(grid): Path<u64>,
    Query(q): Query<BTreeMap<String, String>>,
) -> Result<Response, HttpError> {
    setup_stream(&i, grid, &q, false)
}

async fn http_setup_csv(
    State(i): State<Arc<Inner>>,
    Path(grid): Path<u64>,
    Query(q): Query<BTreeMap<String, String>>,
) -> Result<Response, HttpError> {
    setup_stream(&i, grid, &q, true)
}

/// The set-up CSV's header line.
pub const SETUP_CSV_HEAD: &str = "grid,seq,log_index,at_local,at_ms,kind,detail,backfill\n";

/// One set-up record as a CSV line.
pub fn setup_csv_line(grid: u64, r: &SetupRow, utc_offset_min: i32) -> String {
    format!(
        "{grid},{},{},{},{},{},{},{}\n",
        r.seq,
        r.log_index,
        iso_local(r.at_ms, utc_offset_min),
        r.at_ms,
        r.kind,
        csv_field(&r.detail),
        r.backfill
    )
}

async fn http_ledger(
    State(i): State<Arc<Inner>>,
    Path((grid, customer)): Path<(u64, u32)>,
    Query(q): Query<BTreeMap<String, String>>,
) -> Result<Response, HttpError> {
    ledger_stream(&i, grid, customer, &q, false)
}

async fn http_ledger_csv(
    State(i): State<Arc<Inner>>,
    Path((grid, customer)): Path<(u64, u32)>,
    Query(q): Query<BTreeMap<String, String>>,
) -> Result<Response, HttpError> {
    ledger_stream(&i, grid, customer, &q, true)
}

async fn http_customer_energy(
    State(i): State<Arc<Inner>>,
    Path((grid, customer)): Path<(u64, u32)>,
    Query(q): Query<BTreeMap<String, String>>,
) -> Result<Response, HttpError> {
    customer_energy_stream(&i, grid, customer, &q, false)
}

async fn http_customer_energy_csv(
    State(i): State<Arc<Inner>>,
    Path((grid, customer)): Path<(u64, u32)>,
    Query(q): Query<BTreeMap<String, String>>,
) -> Result<Response, HttpError> {
    customer_energy_stream(&i, grid, customer, &q, true)
}

/// A grid's folded days (one customer's with `Some`), streamed by the day's start; the cursor
/// is the last row's `DAY_START_MS.SEQ`.
fn folded_stream(
    i: &Inner,
    grid: u64,
    customer: Option<u32>,
    q: &BTreeMap<String, String>,
    csv: bool,
) -> Result<Response, HttpError> {
    streamed(
        i,
        grid,
        q,
        csv,
        RowForm {
            json: |r| serde_json::to_string(r).unwrap_or_default(),
            csv_head: FOLDED_CSV_HEAD,
            csv_line: |grid, r, _| folded_csv_line(grid, r),
            at: None,
        },
        move |b, range, after, n| async move {
            b.folded_days_page(grid, customer, range, after, n).await
        },
    )
}

async fn http_folded(
    State(i): State<Arc<Inner>>,
    Path(grid): Path<u64>,
    Query(q): Query<BTreeMap<String, String>>,
) -> Result<Response, HttpError> {
    folded_stream(&i, grid, None, &q, false)
}

async fn http_folded_csv(
    State(i): State<Arc<Inner>>,
    Path(grid): Path<u64>,
    Query(q): Query<BTreeMap<String, String>>,
) -> Result<Response, HttpError> {
    folded_stream(&i, grid, None, &q, true)
}

async fn http_customer_folded(
    State(i): State<Arc<Inner>>,
    Path((grid, customer)): Path<(u64, u32)>,
    Query(q): Query<BTreeMap<String, String>>,
) -> Result<Response, HttpError> {
    folded_stream(&i, grid, Some(customer), &q, false)
}

async fn http_customer_folded_csv(
    State(i): State<Arc<Inner>>,
    Path((grid, customer)): Path<(u64, u32)>,
    Query(q): Query<BTreeMap<String, String>>,
) -> Result<Response, HttpError> {
    folded_stream(&i, grid, Some(customer), &q, true)
}

/// The folded days' CSV header line.
pub const FOLDED_CSV_HEAD: &str = "grid,local_date,day_start_ms,utc_offset_min,kind,id,feeder,seq,first_seq,end_seq,records,energy_wh,ledger_lines,charged_wh,charged_mpaisa,fees_mpaisa,credited_mpaisa,held_wh,alarms,relay_commands,backfill\n";

/// One folded day as a CSV line: its local date under the offset it carries, then its sums.
pub fn folded_csv_line(grid: u64, r: &FoldedDayRow) -> String {
    format!(
        "{grid},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{}\n",
        date_text(r.local_day()),
        r.day_start_ms,
        r.utc_offset_min,
        r.kind,
        r.id,
        r.feeder,
        r.seq,
        r.first_seq,
        r.end_seq,
        r.records,
        r.energy_wh,
        r.ledger_lines,
        r.charged_wh,
        r.charged_mpaisa,
        r.fees_mpaisa,
        r.credited_mpaisa,
        r.held_wh,
        r.alarms,
        r.relay_commands,
        r.backfill
    )
}

async fn http_events(
    State(i): State<Arc<Inner>>,
    Path(grid): Path<u64>,
    Query(q): Query<BTreeMap<String, String>>,
) -> Result<Response, HttpError> {
    events_stream(&i, grid, &q, false)
}

async fn http_events_csv(
    State(i): State<Arc<Inner>>,
    Path(grid): Path<u64>,
    Query(q): Query<BTreeMap<String, String>>,
) -> Result<Response, HttpError> {
    events_stream(&i, grid, &q, true)
}

/// The events CSV's header line.
pub const EVENTS_CSV_HEAD: &str =
    "grid,seq,log_index,at_local,at_ms,kind,code,node,subject,value,text,backfill\n";

/// A CSV field: quoted when it holds a comma, a quote or a line break (an alarm's text).
fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// One event as a CSV line.
pub fn event_csv_line(grid: u64, e: &EventRow, utc_offset_min: i32) -> String {
    format!(
        "{grid},{},{},{},{},{},{},{},{},{},{},{}\n",
        e.seq,
        e.log_index,
        iso_local(e.at_ms, utc_offset_min),
        e.at_ms,
        e.kind,
        csv_field(&e.code),
        e.node,
        csv_field(&e.subject),
        e.value,
        csv_field(&e.text),
        e.backfill
    )
}

async fn http_energy(
    State(i): State<Arc<Inner>>,
    Path(grid): Path<u64>,
) -> Result<Json<serde_json::Value>, HttpError> {
    let days: Vec<_> = i
        .backend
        .energy_per_day(grid)
        .await
        .map_err(http_err)?
        .into_iter()
        .map(|(day, wh)| {
            serde_json::json!({
                "local_date": date_text(day),
                "local_day": day,
                "local_day_start_ms": day.saturating_mul(DAY_MS),
                "energy_wh": wh,
            })
        })
        .collect();
    Ok(Json(serde_json::json!(days)))
}

async fn http_energy_hours(
    State(i): State<Arc<Inner>>,
    Path(grid): Path<u64>,
    Query(q): Query<BTreeMap<String, String>>,
) -> Result<Json<serde_json::Value>, HttpError> {
    let (_, p) = hours_for(&i, grid, &q).await?;
    Ok(json_page(p))
}

async fn http_energy_hours_csv(
    State(i): State<Arc<Inner>>,
    Path(grid): Path<u64>,
    Query(q): Query<BTreeMap<String, String>>,
) -> Result<Response, HttpError> {
    let (first, p) = hours_for(&i, grid, &q).await?;
    Ok(csv_page(energy_hours_csv(grid, &p.rows), first, p.next))
}

/// The energy-hours CSV's header line.
pub const ENERGY_HOURS_CSV_HEAD: &str =
    "grid,hour_start_local,hour_start_ms,utc_offset_min,kind,id,feeder,energy_wh,seq,backfill\n";

/// One energy hour as a CSV line: its start as local ISO-8601 with the offset it carries
/// (`hour_start_local`), then as Unix ms.
pub fn energy_hour_csv_line(grid: u64, r: &EnergyHourRow) -> String {
    format!(
        "{grid},{},{},{},{},{},{},{},{},{}\n",
        iso_local(r.hour_start_ms, r.utc_offset_min),
        r.hour_start_ms,
        r.utc_offset_min,
        r.kind,
        r.id,
        r.feeder,
        r.energy_wh,
        r.seq,
        r.backfill
    )
}

/// The CSV form of hourly energy rows.
pub fn energy_hours_csv(grid: u64, rows: &[EnergyHourRow]) -> String {
    let mut csv = String::from(ENERGY_HOURS_CSV_HEAD);
    for r in rows {
        csv.push_str(&energy_hour_csv_line(grid, r));
    }
    csv
}

async fn http_export_json(
    State(i): State<Arc<Inner>>,
    Path(grid): Path<u64>,
    Query(q): Query<BTreeMap<String, String>>,
) -> Result<Json<serde_json::Value>, HttpError> {
    let (_, p) = ledger_for(&i, grid, None, &q).await?;
    Ok(json_page(p))
}

async fn http_export_csv(
    State(i): State<Arc<Inner>>,
    Path(grid): Path<u64>,
    Query(q): Query<BTreeMap<String, String>>,
) -> Result<Response, HttpError> {
    let (first, p) = ledger_for(&i, grid, None, &q).await?;
    let offsets = i
        .backend
        .utc_offsets_at(grid, p.rows.iter().map(|r| r.at_ms).collect())
        .await
        .map_err(http_err)?;
    Ok(csv_page(ledger_csv(grid, &p.rows, &offsets), first, p.next))
}

/// The ledger CSV's header line.
pub const LEDGER_CSV_HEAD: &str = "grid,customer,seq,at_local,at_ms,kind,energy_wh,amount_mpaisa,balance_after_mpaisa,tariff_version,backfill,stream,log_index,friendly,detail,read_from_wh,read_to_wh,read_at_ms\n";

/// One ledger line as a CSV line, its time as local ISO-8601 under `utc_offset_min` (the
/// grid's offset then: `Store::utc_offsets_at`), then as Unix ms; then what an auditor ties
/// it to the grid with: the stream and the log index (with `seq`), the friendly flag and the
/// line's own fields (`LedgerRow::detail`), and the meter read it was billed from (empty
/// columns for a line with none).
pub fn ledger_csv_line(grid: u64, r: &LedgerRow, utc_offset_min: i32) -> String {
    let opt = |v: Option<u64>| v.map(|v| v.to_string()).unwrap_or_default();
    format!(
        "{grid},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{}\n",
        r.customer,
        r.seq,
        iso_local(r.at_ms, utc_offset_min),
        r.at_ms,
        r.kind,
        r.energy_wh,
        r.amount_mpaisa,
        r.balance_after_mpaisa,
        r.tariff_version,
        r.backfill,
        Stream::Ledger.id(),
        r.log_index,
        r.friendly,
        csv_field(&r.detail),
        opt(r.read_from_wh),
        opt(r.read_to_wh),
        opt(r.read_at_ms)
    )
}

/// The CSV form of ledger rows, one offset per row (`Store::utc_offsets_at`).
pub fn ledger_csv(grid: u64, rows: &[LedgerRow], offsets: &[i32]) -> String {
    let mut csv = String::from(LEDGER_CSV_HEAD);
    for (n, r) in rows.iter().enumerate() {
        csv.push_str(&ledger_csv_line(
            grid,
            r,
            offsets.get(n).copied().unwrap_or(0),
        ));
    }
    csv
}
