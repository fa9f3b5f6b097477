//! State agreement: equal state hashes at equal applied index.

use super::{Checker, IndexFingerprints, Slot, Violation, violation};
use crate::observe::Observation;

/// **State Machine Safety** (§5.4.3) made observable: replicas that applied
/// the same prefix of the log must hold byte-identical state, so the state
/// hash after applying index `i` is the same on every node (and on the same
/// node after a restart). Protects the determinism of the actors (no wall
/// clock, no host randomness, fuel that does not depend on a cold cache).
///
/// Memory: 8 bytes per applied index.
#[derive(Clone, Debug, Default)]
pub struct StateAgreement {
    hashes: IndexFingerprints,
}

impl StateAgreement {
    /// A fresh checker.
    pub fn new() -> Self {
        Self::default()
    }
}

impl Checker for StateAgreement {
    fn name(&self) -> &'static str {
        "state_agreement"
    }

    fn observe(&mut self, obs: &Observation, out: &mut Vec<Violation>) {
        let (t_ms, node, index, hash) = match obs {
            Observation::EntryApplied {
                t_ms,
                node,
                index,
                state_hash,
                ..
            }
            | Observation::SnapshotInstalled {
                t_ms,
                node,
                index,
                state_hash,
            } => (*t_ms, *node, *index, state_hash),
            _ => return,
        };
        if let Slot::Different = self.hashes.put(index, hash) {
            out.push(violation(
                self.name(),
                t_ms,
                format!("node {node} has a different state hash at applied index {index}"),
            ));
        }
    }

    fn finish(&mut self, _end_t_ms: u64, _out: &mut Vec<Violation>) {}
}
