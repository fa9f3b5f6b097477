//! Election Safety: at most one leader per leader id, and leader ids only grow within a term.

use std::collections::BTreeMap;

use super::{Checker, Violation, violation};
use crate::net::NodeId;
use crate::observe::{Observation, Role};

/// **Election Safety** (Raft paper §5.2, Figure 3), as openraft's default
/// "advanced" leader id states it: a leader is identified by `(term, node)`,
/// and a vote only grows in that order, so a term may see a second leader, but
/// only one with a higher node id than the first (a quorum that granted
/// `(2, 4)` can no longer grant `(2, 3)`). Violations: a leader elected in a
/// term after a leader with a higher node id. Two leaders with the same
/// leader id cannot be told apart here, and are one leader. Protects
/// everything downstream: leaders that are not ordered could commit
/// different entries at the same index (which `log` checks directly).
///
/// Memory: one map entry per term that had a leader.
#[derive(Clone, Debug, Default)]
pub struct ElectionSafety {
    /// Per term, the highest node elected leader in it.
    leaders: BTreeMap<u64, NodeId>,
    elections: u64,
}

impl ElectionSafety {
    /// A fresh checker.
    pub fn new() -> Self {
        Self::default()
    }

    /// Leader ids that led (the report's `elections`).
    pub fn elections(&self) -> u64 {
        self.elections
    }
}

impl Checker for ElectionSafety {
    fn name(&self) -> &'static str {
        "election_safety"
    }

    fn observe(&mut self, obs: &Observation, out: &mut Vec<Violation>) {
        if let Observation::RoleChange {
            t_ms,
            node,
            term,
            role: Role::Leader,
        } = *obs
        {
            match self.leaders.get(&term) {
                Some(&other) if node < other => out.push(violation(
                    self.name(),
                    t_ms,
                    format!(
                        "term {term}: node {node} elected after node {other}, a higher leader \
                         id (votes only grow)"
                    ),
                )),
                Some(&other) if node == other => {}
                _ => {
                    self.leaders.insert(term, node);
                    self.elections += 1;
                }
            }
        }
    }

    fn finish(&mut self, _end_t_ms: u64, _out: &mut Vec<Violation>) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leader(t_ms: u64, node: NodeId, term: u64) -> Observation {
        Observation::RoleChange {
            t_ms,
            node,
            term,
            role: Role::Leader,
        }
    }

    #[test]
    fn a_higher_leader_id_may_follow_in_a_term_but_not_a_lower_one() {
        let mut c = ElectionSafety::new();
        let mut out = Vec::new();
        c.observe(&leader(1, 3, 2), &mut out);
        c.observe(&leader(2, 3, 2), &mut out);
        c.observe(&leader(3, 4, 2), &mut out);
        assert!(out.is_empty(), "{out:?}");
        assert_eq!(c.elections(), 2);
        c.observe(&leader(4, 3, 2), &mut out);
        assert_eq!(out.len(), 1, "{out:?}");
    }
}
