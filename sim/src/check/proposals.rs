//! No acknowledged proposal lost, and every proposal applied exactly once.

use std::collections::{BTreeMap, BTreeSet};

use super::{Checker, Violation, violation};
use crate::net::NodeId;
use crate::observe::Observation;

/// **Durability of acknowledged writes** (Raft §5.3-5.4: an entry is
/// acknowledged only once committed, and Leader Completeness keeps committed
/// entries in every later leader's log) plus the project's exactly-once rule
/// (proposals are idempotent by `(origin, seq)`):
///
/// - every acknowledged `(origin, seq)` is applied somewhere, at an index no
///   later than the one its ack named (applied later means the acked entry
///   was lost and only a retry landed: an ack before fsync);
/// - every node up at the end has applied it;
/// - no `(origin, seq)` is applied at two different indexes (a retried
///   proposal must be a no-op);
/// - a board replaced under the same id (`Observation::NodeReplaced`) never has a proposal
///   acknowledged under a sequence number its old board's proposals were applied under: the
///   leader answers such a reuse as a retry (a duplicate), so the new board's input is
///   dropped while it believes it committed.
///
/// Memory: one map entry per proposal, the price of checking exactly-once.
#[derive(Clone, Debug, Default)]
pub struct AckedProposals {
    acked: BTreeMap<(NodeId, u64), (u64, u64)>,
    applied: BTreeMap<(NodeId, u64), u64>,
    last_applied: BTreeMap<NodeId, u64>,
    down: BTreeSet<NodeId>,
    /// Per replaced node: when, and the proposals of its old boards applied by then.
    replaced: BTreeMap<NodeId, (u64, BTreeSet<u64>)>,
}

impl AckedProposals {
    /// A fresh checker.
    pub fn new() -> Self {
        Self::default()
    }

    /// Proposals acknowledged so far.
    pub fn acked(&self) -> usize {
        self.acked.len()
    }
}

impl Checker for AckedProposals {
    fn name(&self) -> &'static str {
        "acked_proposals"
    }

    fn observe(&mut self, obs: &Observation, out: &mut Vec<Violation>) {
        match *obs {
            Observation::ProposalAcked {
                t_ms,
                origin,
                seq,
                index,
            } => {
                self.acked.entry((origin, seq)).or_insert((index, t_ms));
                if let Some((at, old)) = self.replaced.get(&origin)
                    && old.contains(&seq)
                {
                    out.push(violation(
                        self.name(),
                        t_ms,
                        format!(
                            "proposal ({origin}, {seq}) of node {origin}'s new board (replaced at \
                             t={at} ms) was acknowledged at index {index}, but ({origin}, {seq}) \
                             was the old board's, applied before: a reused sequence number, \
                             dropped as a duplicate"
                        ),
                    ));
                }
            }
            Observation::NodeReplaced { t_ms, node } => {
                let old = self
                    .applied
                    .range((node, 0)..=(node, u64::MAX))
                    .map(|(&(_, seq), _)| seq)
                    .collect();
                self.replaced.insert(node, (t_ms, old));
            }
            Observation::ProposalApplied {
                t_ms,
                node,
                origin,
                seq,
                index,
            } => match self.applied.get(&(origin, seq)) {
                Some(&first) if first != index => out.push(violation(
                    self.name(),
                    t_ms,
                    format!(
                        "proposal ({origin}, {seq}) applied at index {index} on node {node} but \
                         at index {first} before: applied twice (dedupe by (node, seq) skipped?)"
                    ),
                )),
                Some(_) => {}
                None => {
                    self.applied.insert((origin, seq), index);
                }
            },
            Observation::EntryApplied { node, index, .. }
            | Observation::SnapshotInstalled { node, index, .. } => {
                self.last_applied.insert(node, index);
            }
            Observation::NodeCrash { node, .. } => {
                self.down.insert(node);
            }
            Observation::NodeRestart { node, .. } => {
                self.down.remove(&node);
            }
            _ => {}
        }
    }

    fn finish(&mut self, end_t_ms: u64, out: &mut Vec<Violation>) {
        let mut required = 0;
        for (&(origin, seq), &(ack_index, ack_t_ms)) in &self.acked {
            match self.applied.get(&(origin, seq)) {
                None => out.push(violation(
                    self.name(),
                    end_t_ms,
                    format!(
                        "proposal ({origin}, {seq}) acked at index {ack_index} (t={ack_t_ms} ms) \
                         was never applied: lost"
                    ),
                )),
                Some(&applied) if applied > ack_index => out.push(violation(
                    self.name(),
                    end_t_ms,
                    format!(
                        "proposal ({origin}, {seq}) acked at index {ack_index} but first applied \
                         at {applied}: the acked entry was lost and only a retry landed"
                    ),
                )),
                Some(&applied) => required = required.max(applied),
            }
        }
        for (&node, &last) in &self.last_applied {
            if !self.down.contains(&node) && last < required {
                out.push(violation(
                    self.name(),
                    end_t_ms,
                    format!(
                        "node {node} is up at the end but applied only up to {last}; acked \
                         proposals reach index {required}"
                    ),
                ));
            }
        }
    }
}

/// **One copy in the log**: a proposal `(origin, seq)` is appended by a leader at most once
/// while it is not yet applied (`node::inflight` in the controller), so no entry that reaches
/// a state machine carries a proposal applied before. A second copy is dropped at apply, so
/// state stays right, but copies are what turned retries into a storm on lossy links: each
/// one costs log space and link time, and under loss the cost kept commits slower than the
/// retry period (issue 27).
///
/// Reported once per `(origin, seq)`; memory: one entry per reported pair.
#[derive(Clone, Debug, Default)]
pub struct OneCopyInLog {
    reported: BTreeSet<(NodeId, u64)>,
}

impl OneCopyInLog {
    /// A fresh checker.
    pub fn new() -> Self {
        Self::default()
    }
}

impl Checker for OneCopyInLog {
    fn name(&self) -> &'static str {
        "one_copy_in_log"
    }

    fn observe(&mut self, obs: &Observation, out: &mut Vec<Violation>) {
        if let Observation::RetryApplied {
            t_ms,
            node,
            origin,
            seq,
            index,
        } = *obs
            && self.reported.insert((origin, seq))
        {
            out.push(violation(
                self.name(),
                t_ms,
                format!(
                    "proposal ({origin}, {seq}) reached the committed log twice: node {node} \
                     applied a second copy at index {index} (a leader appended a retry again)"
                ),
            ));
        }
    }

    fn finish(&mut self, _end_t_ms: u64, _out: &mut Vec<Violation>) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_copy_is_reported_once_per_proposal() {
        let mut c = OneCopyInLog::new();
        let mut out = Vec::new();
        let applied = Observation::ProposalApplied {
            t_ms: 1,
            node: 1,
            origin: 2,
            seq: 7,
            index: 10,
        };
        c.observe(&applied, &mut out);
        assert!(out.is_empty(), "the first copy is fine");
        for node in 1..=3 {
            c.observe(
                &Observation::RetryApplied {
                    t_ms: 2,
                    node,
                    origin: 2,
                    seq: 7,
                    index: 12,
                },
                &mut out,
            );
        }
        assert_eq!(out.len(), 1, "{out:?}");
        assert!(out[0].message.contains("(2, 7)"), "{out:?}");
    }

    /// Caught by replace-node (issue 27): a replaced board numbered its proposals from 1 again
    /// on blank disks, the leader took them for its old board's retries, and for minutes its
    /// reads were acknowledged and dropped.
    #[test]
    fn a_replaced_board_reusing_its_old_boards_sequence_numbers_is_caught() {
        let mut c = AckedProposals::new();
        let mut out = Vec::new();
        for (seq, index) in [(1, 10), (2, 11)] {
            c.observe(
                &Observation::ProposalApplied {
                    t_ms: 5,
                    node: 1,
                    origin: 5,
                    seq,
                    index,
                },
                &mut out,
            );
        }
        c.observe(&Observation::NodeReplaced { t_ms: 20, node: 5 }, &mut out);
        let ack = |seq, index| Observation::ProposalAcked {
            t_ms: 30,
            origin: 5,
            seq,
            index,
        };
        // A sequence number past the old board's is new: fine.
        c.observe(&ack(3, 40), &mut out);
        assert!(out.is_empty(), "{out:?}");
        c.observe(&ack(2, 41), &mut out);
        assert_eq!(out.len(), 1, "{out:?}");
        assert!(
            out[0].message.contains("(5, 2)") && out[0].message.contains("reused"),
            "{out:?}"
        );
    }
}
