//! The actors built into this binary: compiled to wasm32 by `controller/build.rs` from
//! `actors/balancing` and `actors/billing`, embedded so a board needs no separate files; and
//! where the same build left `actors/demand-response`, which is shipped by deployment.

/// balancing.wasm
pub const BALANCING_WASM: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/balancing.wasm"));
/// billing.wasm
pub const BILLING_WASM: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/billing.wasm"));

/// demand-response.wasm on the machine that built this binary (not embedded: the actor is
/// shipped by `ghatta actor deploy`; tests and `ghatta demo` read it from here).
pub const DEMAND_RESPONSE_WASM_PATH: &str = env!("GHATTA_DEMAND_RESPONSE_WASM");
