//! The query API (HTTP/JSON and CSV, axum): status, a grid's state, ledgers, energy per day
//! and per hour, exports. Every route but the health check needs the bearer token
//! ([`access`]); ledgers, energy hours and exports come in pages bounded in rows and by a time
//! range ([`page`]), never a grid's whole history in one response. Keep it on loopback;
//! operators reach it through SSH.

pub mod access;
pub mod page;

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;

use self::access::HttpAccess;
use self::page::Cursor;
use crate::DAY_MS;
use crate::backend::Store;
use crate::localtime::{date_text, iso_local};
use crate::store::{EnergyHourRow, HourKey, Inner, LedgerKey, LedgerRow, Page};

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

/// The fleet view: every grid that uploaded, its last upload (and how long ago), its newest
/// log time and its cursor per stream, by grid id.
async fn http_fleet(State(i): State<Arc<Inner>>) -> Result<Json<serde_json::Value>, HttpError> {
    let grids = i
        .backend
        .fleet(crate::FLEET_GRIDS_MAX + 1)
        .await
        .map_err(http_err)?;
    let truncated = grids.len() > crate::FLEET_GRIDS_MAX;
    let now = crate::store::now_ms();
    let rows: Vec<_> = grids
        .iter()
        .take(crate::FLEET_GRIDS_MAX)
        .map(|g| {
            serde_json::json!({
                "grid": g.grid,
                "last_upload_ms": g.last_upload_ms,
                "since_upload_ms": now.saturating_sub(g.last_upload_ms),
                "newest_time_ms": g.newest_time_ms,
                "records": g.records,
                "cursors": g.cursors,
            })
        })
        .collect();
    Ok(Json(
        serde_json::json!({ "grids": rows, "truncated": truncated }),
    ))
}

async fn http_grid(
    State(i): State<Arc<Inner>>,
    Path(grid): Path<u64>,
) -> Result<Json<serde_json::Value>, HttpError> {
    match i.backend.grid_state(grid).await.map_err(http_err)? {
        Some((state, customers)) => Ok(Json(
            serde_json::json!({ "state": state, "customers": customers }),
        )),
        None => Err((
            StatusCode::NOT_FOUND,
            Json(
                serde_json::json!({ "error": format!("grid {grid} has not uploaded anything yet") }),
            ),
        )),
    }
}

async fn http_ledger(
    State(i): State<Arc<Inner>>,
    Path((grid, customer)): Path<(u64, u32)>,
    Query(q): Query<BTreeMap<String, String>>,
) -> Result<Json<serde_json::Value>, HttpError> {
    let (_, p) = ledger_for(&i, grid, Some(customer), &q).await?;
    Ok(json_page(p))
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

/// The CSV form of hourly energy rows: each hour's start as local ISO-8601 with the offset it
/// carries (`hour_start_local`), then as Unix ms.
pub fn energy_hours_csv(grid: u64, rows: &[EnergyHourRow]) -> String {
    let mut csv = String::from(
        "grid,hour_start_local,hour_start_ms,utc_offset_min,kind,id,feeder,energy_wh,seq,backfill\n",
    );
    for r in rows {
        csv.push_str(&format!(
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
        ));
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

/// The CSV form of ledger rows, each line's time as local ISO-8601 under the grid's offset in
/// force then (`offsets`, one per row: `Store::utc_offsets_at`), then as Unix ms.
pub fn ledger_csv(grid: u64, rows: &[LedgerRow], offsets: &[i32]) -> String {
    let mut csv = String::from(
        "grid,customer,seq,at_local,at_ms,kind,energy_wh,amount_mpaisa,balance_after_mpaisa,tariff_version,backfill\n",
    );
    for (n, r) in rows.iter().enumerate() {
        csv.push_str(&format!(
            "{grid},{},{},{},{},{},{},{},{},{},{}\n",
            r.customer,
            r.seq,
            iso_local(r.at_ms, offsets.get(n).copied().unwrap_or(0)),
            r.at_ms,
            r.kind,
            r.energy_wh,
            r.amount_mpaisa,
            r.balance_after_mpaisa,
            r.tariff_version,
            r.backfill
        ));
    }
    csv
}
