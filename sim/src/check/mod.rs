//! Invariant checkers: one per property, fed observations one at a time.
//!
//! Each checker keeps O(1) or O(log n) work per observation; the ones that
//! must remember every committed index keep 8 bytes per index. A [`Suite`]
//! runs them all, keeps the trace hash and turns the run into a
//! [`crate::report::Report`].

mod billing;
mod clock;
mod credit;
mod election;
mod frequency;
mod journal;
mod leader;
mod liveness;
mod log;
mod proposals;
mod state;
mod suite;
mod tokens;

pub use billing::{BillingBaseline, MeterBilling};
pub use clock::{
    ClockTruth, FRIENDLY_EDGE_MS, LOG_TIME_AHEAD_MS_MAX, TIMER_EARLY_MS_MAX, TrueCalendar,
};
pub use credit::{ChargeContext, CreditChecker, CreditLimit, Tariff};
pub use election::ElectionSafety;
pub use frequency::{FrequencyBand, FrequencyQuality, FrequencyStats};
pub use journal::JournalDrain;
pub use leader::{APPEND_AFTER_LEASE_MS_MAX, IsolatedLeader};
pub use liveness::Liveness;
pub use log::LogMatching;
pub use proposals::{AckedProposals, OneCopyInLog};
pub use state::StateAgreement;
pub use suite::{Suite, SuiteConfig};
pub use tokens::TokenOnce;

use serde::{Deserialize, Serialize};

use crate::observe::{Digest, Observation};

/// A broken invariant.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Violation {
    /// The checker's name.
    pub checker: String,
    /// Simulated time at which it was detected.
    pub t_ms: u64,
    /// What broke, with the values involved.
    pub message: String,
}

/// One property over a run.
pub trait Checker {
    /// A short, stable name (used in reports).
    fn name(&self) -> &'static str;
    /// Feeds one observation; pushes any violation it reveals.
    fn observe(&mut self, obs: &Observation, out: &mut Vec<Violation>);
    /// The run ended at `end_t_ms`; pushes violations only visible at the end.
    fn finish(&mut self, end_t_ms: u64, out: &mut Vec<Violation>);
}

fn violation(checker: &str, t_ms: u64, message: String) -> Violation {
    Violation {
        checker: checker.to_string(),
        t_ms,
        message,
    }
}

/// Largest log index the per-index checkers track (8 bytes each, so 160 MB
/// at the cap). A simulated day commits a few hundred thousand entries; an
/// index beyond this is itself a sign of a runaway proposer and is reported.
pub const TRACKED_INDEX_MAX: u64 = 20_000_000;

/// A dense map from log index to an 8-byte fingerprint of a digest.
#[derive(Clone, Debug, Default)]
struct IndexFingerprints {
    slots: Vec<u64>,
}

/// What storing a fingerprint found.
enum Slot {
    New,
    Same,
    Different,
    Untracked,
}

fn fingerprint(d: &Digest) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&d[..8]);
    // 0 marks an empty slot; forcing the low bit keeps real fingerprints non-zero.
    u64::from_le_bytes(b) | 1
}

impl IndexFingerprints {
    fn put(&mut self, index: u64, d: &Digest) -> Slot {
        if index > TRACKED_INDEX_MAX {
            return Slot::Untracked;
        }
        let i = index as usize;
        if self.slots.len() <= i {
            self.slots.resize(i + 1, 0);
        }
        let fp = fingerprint(d);
        match self.slots[i] {
            0 => {
                self.slots[i] = fp;
                Slot::New
            }
            old if old == fp => Slot::Same,
            _ => Slot::Different,
        }
    }
}
