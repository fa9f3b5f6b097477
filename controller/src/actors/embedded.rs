//! The actors built into this binary: compiled to wasm32 by `controller/build.rs` from
//! `actors/balancing` and `actors/billing`, embedded so a board needs no separate files.

/// balancing.wasm
pub const BALANCING_WASM: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/balancing.wasm"));
/// billing.wasm
pub const BILLING_WASM: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/billing.wasm"));
