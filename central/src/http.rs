//! The query API (HTTP/JSON and CSV, axum): status, a grid's state, ledgers, energy per day
//! and per hour, exports. Keep it on loopback; operators reach it through SSH.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};

use crate::DAY_MS;
use crate::store::{EnergyHourRow, Inner, LedgerRow};

type HttpError = (StatusCode, Json<serde_json::Value>);

fn http_err(e: impl std::fmt::Display) -> HttpError {
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        Json(serde_json::json!({ "error": format!("central store read failed: {e}") })),
    )
}

pub(crate) fn router(inner: Arc<Inner>) -> Router {
    Router::new()
        .route("/v1/status", get(http_status))
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
        .with_state(inner)
}

async fn http_status(State(i): State<Arc<Inner>>) -> Json<serde_json::Value> {
    Json(serde_json::json!({
        "public_key": i.secret.public().to_base64(),
        "grids": i.grids.keys().collect::<Vec<_>>(),
        "stats": i.stats.snapshot(),
    }))
}

async fn http_grid(
    State(i): State<Arc<Inner>>,
    Path(grid): Path<u64>,
) -> Result<Json<serde_json::Value>, HttpError> {
    match i.grid_state(grid).map_err(http_err)? {
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
) -> Result<Json<Vec<LedgerRow>>, HttpError> {
    Ok(Json(i.ledger(grid, Some(customer)).map_err(http_err)?))
}

async fn http_energy(
    State(i): State<Arc<Inner>>,
    Path(grid): Path<u64>,
) -> Result<Json<serde_json::Value>, HttpError> {
    let days: Vec<_> = i
        .energy_per_day(grid)
        .map_err(http_err)?
        .into_iter()
        .map(|(day, wh)| serde_json::json!({ "utc_day_start_ms": day * DAY_MS, "energy_wh": wh }))
        .collect();
    Ok(Json(serde_json::json!(days)))
}

async fn http_energy_hours(
    State(i): State<Arc<Inner>>,
    Path(grid): Path<u64>,
) -> Result<Json<Vec<EnergyHourRow>>, HttpError> {
    Ok(Json(i.energy_hours(grid).map_err(http_err)?))
}

async fn http_energy_hours_csv(
    State(i): State<Arc<Inner>>,
    Path(grid): Path<u64>,
) -> Result<Response, HttpError> {
    let rows = i.energy_hours(grid).map_err(http_err)?;
    Ok((
        [(header::CONTENT_TYPE, "text/csv")],
        energy_hours_csv(grid, &rows),
    )
        .into_response())
}

/// The CSV form of hourly energy rows.
pub fn energy_hours_csv(grid: u64, rows: &[EnergyHourRow]) -> String {
    let mut csv = String::from("grid,hour_start_ms,kind,id,feeder,energy_wh,seq,backfill\n");
    for r in rows {
        csv.push_str(&format!(
            "{grid},{},{},{},{},{},{},{}\n",
            r.hour_start_ms, r.kind, r.id, r.feeder, r.energy_wh, r.seq, r.backfill
        ));
    }
    csv
}

async fn http_export_json(
    State(i): State<Arc<Inner>>,
    Path(grid): Path<u64>,
) -> Result<Json<Vec<LedgerRow>>, HttpError> {
    Ok(Json(i.ledger(grid, None).map_err(http_err)?))
}

async fn http_export_csv(
    State(i): State<Arc<Inner>>,
    Path(grid): Path<u64>,
) -> Result<Response, HttpError> {
    let rows = i.ledger(grid, None).map_err(http_err)?;
    let mut csv = String::from(
        "grid,customer,seq,at_ms,kind,energy_wh,amount_mpaisa,balance_after_mpaisa,tariff_version,backfill\n",
    );
    for r in rows {
        csv.push_str(&format!(
            "{grid},{},{},{},{},{},{},{},{},{}\n",
            r.customer,
            r.seq,
            r.at_ms,
            r.kind,
            r.energy_wh,
            r.amount_mpaisa,
            r.balance_after_mpaisa,
            r.tariff_version,
            r.backfill
        ));
    }
    Ok(([(header::CONTENT_TYPE, "text/csv")], csv).into_response())
}
