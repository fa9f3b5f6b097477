//! Guest SDK for ghatta actors: the message types shared with the host, the host ABI and
//! the `export_actor!` macro.
//!
//! An actor is a deterministic state machine. The host hands it one [`Delivery`] (the committed
//! log entry's context plus one typed [`Input`]); the actor reads and writes its own key-value
//! state through a [`Host`] and emits [`Output`]s (relay commands, ballast set-points, ledger
//! records, alarms, timers). Everything is integers: no floats, no clock, no randomness, so every
//! replica reaches byte-identical state.
//!
//! The same actor code runs natively (with [`MemHost`], for unit tests and the native
//! baseline of the benchmark) and inside wasmi (the [`export_actor!`] macro binds [`Host`] to the
//! imports of the `ghatta` module).
//!
//! ```
//! use ghatta_actor_sdk::{Actor, Context, Delivery, Host, Input, MemHost, Outcome, NodeId};
//!
//! struct Counter;
//! impl Actor for Counter {
//!     fn handle(host: &mut dyn Host, d: &Delivery) -> Outcome {
//!         let n: u64 = host.get_value(b"n").unwrap_or(0);
//!         host.set_value(b"n", &(n + 1));
//!         Outcome::Handled
//!     }
//! }
//!
//! let mut host = MemHost::default();
//! let d = Delivery { ctx: Context { log_index: 1, log_time_ms: 0, origin: NodeId(1) }, input: Input::Noop };
//! Counter::handle(&mut host, &d);
//! assert_eq!(host.get_value::<u64>(b"n"), Some(1));
//! ```
// Denied everywhere but the ABI module (`abi.rs`), the guest side of raw wasm memory, which
// allows it for itself.
#![deny(unsafe_code)]
#![no_std]

extern crate alloc;

#[allow(unsafe_code)]
pub mod abi;
pub mod codec;
mod host;
pub mod messages;

pub use host::{Host, MemHost};
pub use messages::*;

/// What an actor says about one delivery. Either way its state writes and outputs are kept;
/// only a trap (or running out of fuel or memory) discards them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The input was acted upon.
    Handled,
    /// The input was refused for a reason the actor records (e.g. a replayed token).
    Rejected(RejectReason),
}

impl Outcome {
    /// The status code carried across the ABI: 0 for handled, the reason's code otherwise.
    pub fn code(self) -> i32 {
        match self {
            Outcome::Handled => 0,
            Outcome::Rejected(r) => r as i32,
        }
    }
}

/// An actor: a pure function of (its state, one delivery) to (new state, outputs).
pub trait Actor {
    /// Handle one delivery. Must be deterministic: use only `d` and `host`.
    fn handle(host: &mut dyn Host, d: &Delivery) -> Outcome;
}
