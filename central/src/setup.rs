//! Billing's set-up as the office reads it: the tariff versions and billing configurations a
//! grid's billing accepted (`Output::TariffSet`, `Output::BillingConfigSet`, on the ledger
//! stream), served by the set-up route beside the ledger so that an auditor can rebuild every
//! charge from reads and tariffs alone.

use ghatta_actor_sdk::{self as sdk, codec as sdk_codec};
use serde::Serialize;

use crate::store::StoredRecord;

/// One tariff version or billing configuration, as the set-up route serves it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SetupRow {
    /// Outbox sequence at the grid, on the ledger stream (the route's cursor).
    pub seq: u64,
    /// Raft log index at the grid of the entry that set it.
    pub log_index: u64,
    /// Log time at the grid from which it is in force, Unix ms.
    pub at_ms: u64,
    /// "Tariff" or "BillingConfig".
    pub kind: String,
    /// Its fields as `key=value` pairs joined by `;` (see [`tariff_detail`],
    /// [`config_detail`]).
    pub detail: String,
    /// Arrived as back-fill.
    pub backfill: bool,
}

/// A tariff's whole schedule: `id`, `version`, `kind` (`PerKwh`, `Tiered`, `Flat`), then
/// `rate_paisa_per_kwh`; or `period_charge_paisa` and `blocks` as `up_to_wh:rate_paisa_per_kwh`
/// pairs separated by spaces (the last block is unbounded whatever its `up_to_wh`); or `bands`
/// as `up_to_w:daily_fee_paisa` pairs.
pub fn tariff_detail(t: &sdk::Tariff) -> String {
    let head = format!("id={};version={}", t.id, t.version);
    match &t.kind {
        sdk::TariffKind::PerKwh { rate_paisa_per_kwh } => {
            format!("{head};kind=PerKwh;rate_paisa_per_kwh={rate_paisa_per_kwh}")
        }
        sdk::TariffKind::Tiered {
            blocks,
            period_charge_paisa,
        } => {
            let blocks: Vec<String> = blocks
                .iter()
                .map(|b| format!("{}:{}", b.up_to_wh, b.rate_paisa_per_kwh))
                .collect();
            format!(
                "{head};kind=Tiered;period_charge_paisa={period_charge_paisa};blocks={}",
                blocks.join(" ")
            )
        }
        sdk::TariffKind::Flat { bands } => {
            let bands: Vec<String> = bands
                .iter()
                .map(|b| format!("{}:{}", b.up_to_w, b.daily_fee_paisa))
                .collect();
            format!("{head};kind=Flat;bands={}", bands.join(" "))
        }
    }
}

/// A billing configuration: `utc_offset_min`, `friendly_start_min`, `friendly_end_min` (local
/// minutes of the day, the window `[start, end)` may wrap midnight, equal: none),
/// `disconnect_at_mpaisa`, `plausible_margin_pct`.
pub fn config_detail(c: &sdk::BillingConfig) -> String {
    format!(
        "utc_offset_min={};friendly_start_min={};friendly_end_min={};disconnect_at_mpaisa={};plausible_margin_pct={}",
        c.utc_offset_min,
        c.friendly_start_min,
        c.friendly_end_min,
        c.disconnect_at_mpaisa,
        c.plausible_margin_pct
    )
}

/// A stored ledger-stream record as a [`SetupRow`]; `None` for a ledger line (or a record this
/// build cannot decode).
pub fn setup_row(seq: u64, rec: &StoredRecord) -> Option<SetupRow> {
    let (kind, detail) = match sdk_codec::decode::<sdk::Output>(&rec.output)? {
        sdk::Output::TariffSet(t) => ("Tariff", tariff_detail(&t)),
        sdk::Output::BillingConfigSet(c) => ("BillingConfig", config_detail(&c)),
        _ => return None,
    };
    Some(SetupRow {
        seq,
        log_index: rec.index,
        at_ms: rec.time_ms,
        kind: kind.into(),
        detail,
        backfill: rec.backfill,
    })
}
