//! Liveness: once every fault has healed, the cluster commits again within a bound.

use std::collections::BTreeSet;

use super::{Checker, Violation, violation};
use crate::observe::Observation;

/// **Liveness after healing** (Raft §5.2 and §9.3: with a quorum connected
/// and timeouts well above the broadcast time, a leader is elected and makes
/// progress). Each time the set of open faults becomes empty (the start of a
/// run counts as such a moment), a *new* entry (an index above every index
/// applied before) must be applied somewhere within `bound_ms`, unless a new
/// fault starts first. A crash counts as a fault until the node restarts.
/// Protects against a cluster that is safe but stuck (e.g. endless elections
/// on long-RTT links, or a node that never catches up after a power cut).
///
/// Memory: the set of open faults.
#[derive(Clone, Debug)]
pub struct Liveness {
    bound_ms: u64,
    open: BTreeSet<(u8, u64)>,
    max_index: u64,
    /// (deadline, index to beat, when the quiet period began)
    pending: Option<(u64, u64, u64)>,
    last_heal_ms: u64,
}

const FAULT: u8 = 0;
const CRASH: u8 = 1;

impl Liveness {
    /// A checker requiring progress within `bound_ms` after each heal.
    pub fn new(bound_ms: u64) -> Self {
        Self {
            bound_ms,
            open: BTreeSet::new(),
            max_index: 0,
            pending: Some((bound_ms, 0, 0)),
            last_heal_ms: 0,
        }
    }

    /// When the last fault healed (0 if none ever started).
    pub fn last_heal_ms(&self) -> u64 {
        self.last_heal_ms
    }

    fn check_deadline(&mut self, now_ms: u64, out: &mut Vec<Violation>) {
        if let Some((deadline, beat, since)) = self.pending
            && now_ms > deadline
        {
            out.push(violation(
                "liveness",
                deadline,
                format!(
                    "no new commit (index > {beat}) within {} s of every fault healing at \
                     t={since} ms",
                    self.bound_ms / 1_000
                ),
            ));
            self.pending = None;
        }
    }

    fn open_fault(&mut self, key: (u8, u64)) {
        self.open.insert(key);
        self.pending = None;
    }

    fn close_fault(&mut self, key: (u8, u64), t_ms: u64) {
        if self.open.remove(&key) && self.open.is_empty() {
            self.last_heal_ms = t_ms;
            self.pending = Some((t_ms + self.bound_ms, self.max_index, t_ms));
        }
    }
}

impl Checker for Liveness {
    fn name(&self) -> &'static str {
        "liveness"
    }

    fn observe(&mut self, obs: &Observation, out: &mut Vec<Violation>) {
        self.check_deadline(obs.t_ms(), out);
        match *obs {
            Observation::EntryApplied { index, .. } => {
                if let Some((_, beat, _)) = self.pending
                    && index > beat
                {
                    self.pending = None;
                }
                self.max_index = self.max_index.max(index);
            }
            Observation::SnapshotInstalled { index, .. } => {
                self.max_index = self.max_index.max(index);
            }
            Observation::FaultStart { id, .. } => self.open_fault((FAULT, id)),
            Observation::FaultEnd { t_ms, id } => self.close_fault((FAULT, id), t_ms),
            Observation::NodeCrash { node, .. } => self.open_fault((CRASH, node)),
            Observation::NodeRestart { t_ms, node } => self.close_fault((CRASH, node), t_ms),
            _ => {}
        }
    }

    fn finish(&mut self, end_t_ms: u64, out: &mut Vec<Violation>) {
        self.check_deadline(end_t_ms, out);
    }
}
