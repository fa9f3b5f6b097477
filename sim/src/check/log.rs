//! Log Matching and State Machine Safety over applied entries: committed
//! entries are never lost or changed, on any node, across restarts.

use std::collections::BTreeMap;

use super::{Checker, IndexFingerprints, Slot, Violation, violation};
use crate::net::NodeId;
use crate::observe::Observation;

#[derive(Clone, Copy, Debug, Default)]
struct NodeApply {
    last_applied: u64,
    /// Whether the node applied (or installed) anything yet: openraft's log starts at index
    /// 0 (the initial membership), so a first apply at 0 is not a re-apply.
    applied_any: bool,
    /// Set by a restart: the node may re-apply from its durable state.
    restarted: bool,
}

/// **Log Matching** (§5.3) and **State Machine Safety** (§5.4.3, Leader
/// Completeness §5.4): if a node applies an entry at an index, no node ever
/// applies a different entry at that index. Also checks each node applies
/// indexes in order without gaps (a gap means entries skipped, i.e. lost, on
/// that replica) and never re-applies an index except after a restart (a
/// re-apply in a live process is a double application).
///
/// Memory: 8 bytes per committed index plus a few words per node.
#[derive(Clone, Debug, Default)]
pub struct LogMatching {
    digests: IndexFingerprints,
    nodes: BTreeMap<NodeId, NodeApply>,
    max_index: u64,
    reported_untracked: bool,
}

impl LogMatching {
    /// A fresh checker.
    pub fn new() -> Self {
        Self::default()
    }

    /// Highest index applied anywhere (the report's `commits`).
    pub fn max_index(&self) -> u64 {
        self.max_index
    }

    /// Last index each node applied.
    pub fn last_applied(&self, node: NodeId) -> u64 {
        self.nodes.get(&node).map_or(0, |n| n.last_applied)
    }
}

impl Checker for LogMatching {
    fn name(&self) -> &'static str {
        "log_matching"
    }

    fn observe(&mut self, obs: &Observation, out: &mut Vec<Violation>) {
        match obs {
            Observation::EntryApplied {
                t_ms,
                node,
                index,
                entry_digest,
                ..
            } => {
                let (t_ms, node, index) = (*t_ms, *node, *index);
                match self.digests.put(index, entry_digest) {
                    Slot::Different => out.push(violation(
                        self.name(),
                        t_ms,
                        format!(
                            "node {node} applied a different entry at index {index} than \
                             another node (or itself before a restart) did"
                        ),
                    )),
                    Slot::Untracked if !self.reported_untracked => {
                        self.reported_untracked = true;
                        out.push(violation(
                            self.name(),
                            t_ms,
                            format!("index {index} beyond TRACKED_INDEX_MAX; not checked further"),
                        ));
                    }
                    _ => {}
                }
                self.max_index = self.max_index.max(index);
                let n = self.nodes.entry(node).or_default();
                let expected = if n.applied_any {
                    n.last_applied + 1
                } else {
                    index.min(1)
                };
                if index > expected {
                    out.push(violation(
                        "log_matching",
                        t_ms,
                        format!(
                            "node {node} applied index {index} after {}: entries {expected}..{index} \
                             skipped",
                            n.last_applied
                        ),
                    ));
                } else if index < expected && !n.restarted {
                    out.push(violation(
                        "log_matching",
                        t_ms,
                        format!(
                            "node {node} applied index {index} again (last applied {}) without a \
                             restart: double application",
                            n.last_applied
                        ),
                    ));
                }
                n.last_applied = index;
                n.applied_any = true;
                n.restarted = false;
            }
            Observation::SnapshotInstalled { node, index, .. } => {
                let n = self.nodes.entry(*node).or_default();
                n.last_applied = *index;
                n.applied_any = true;
                n.restarted = false;
            }
            Observation::NodeRestart { node, .. } => {
                self.nodes.entry(*node).or_default().restarted = true;
            }
            // Blank disks: the new board applies from the start (or a snapshot) again.
            Observation::NodeReplaced { node, .. } => {
                self.nodes.insert(*node, NodeApply::default());
            }
            _ => {}
        }
    }

    fn finish(&mut self, _end_t_ms: u64, _out: &mut Vec<Violation>) {}
}
