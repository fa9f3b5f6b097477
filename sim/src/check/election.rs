//! Election Safety: leader ids are (term, node) and each node's term only grows.

use std::collections::{BTreeMap, BTreeSet};

use super::{Checker, Violation, violation};
use crate::net::NodeId;
use crate::observe::{Observation, Role};

/// **Election Safety** (Raft paper §5.2, Figure 3), as openraft's default "advanced" leader
/// id states it: a leader is identified by `(term, node)`, so a term may see several
/// leaders, and a vote only grows in that order (a quorum that granted `(2, 4)` can no
/// longer grant `(2, 3)`). Which of two such leaders the world *sees* elected first says
/// nothing about that order: a candidate's last grant may arrive seconds late on a slow
/// radio, after a higher leader of the same term was elected by grants given later (seen in
/// flapping-radio seed 27: `(1, 2)` elected 100 ms after `(1, 3)`, both quorums through
/// node 1, which granted `(1, 2)` first). A lower leader of this kind cannot commit: every
/// quorum holds a node whose vote is higher, and the `log` checker would see two entries at
/// one index if it did.
///
/// What is checked here is what the votes rest on (§5.1, Figure 2): a node's current term
/// is persisted and never decreases, across crashes and power cuts too. A term seen going
/// back means a vote was lost, and with it the guarantee that one quorum cannot elect two
/// leaders with the same id. Elections are counted as distinct leader ids.
///
/// Memory: one entry per node and one set per term that had a leader.
#[derive(Clone, Debug, Default)]
pub struct ElectionSafety {
    /// Per term, the nodes elected leader in it.
    leaders: BTreeMap<u64, BTreeSet<NodeId>>,
    /// Per node, the highest term it was seen in.
    terms: BTreeMap<NodeId, u64>,
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
        // A replaced board starts from term 0 under the same id: it was removed from the
        // membership first (the scenario's to see to), so no vote of its counts any more.
        if let Observation::NodeReplaced { node, .. } = *obs {
            self.terms.remove(&node);
            return;
        }
        let Observation::RoleChange {
            t_ms,
            node,
            term,
            role,
        } = *obs
        else {
            return;
        };
        let name = self.name();
        let seen = self.terms.entry(node).or_insert(term);
        if term < *seen {
            out.push(violation(
                name,
                t_ms,
                format!(
                    "node {node}'s term went back from {seen} to {term} (a term is persisted \
                     and only grows: a vote was lost)"
                ),
            ));
        } else {
            *seen = term;
        }
        if role == Role::Leader && self.leaders.entry(term).or_default().insert(node) {
            self.elections += 1;
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
    fn leaders_of_one_term_may_be_seen_in_any_order_but_a_term_never_goes_back() {
        let mut c = ElectionSafety::new();
        let mut out = Vec::new();
        c.observe(&leader(1, 3, 2), &mut out);
        c.observe(&leader(2, 3, 2), &mut out);
        c.observe(&leader(3, 4, 2), &mut out);
        // A lower leader id of the same term, elected by grants that arrived late.
        c.observe(&leader(4, 2, 2), &mut out);
        assert!(out.is_empty(), "{out:?}");
        assert_eq!(c.elections(), 3);
        c.observe(&leader(5, 4, 3), &mut out);
        assert!(out.is_empty(), "{out:?}");
        // Node 4 back in term 2 after term 3: its persisted vote was lost.
        c.observe(
            &Observation::RoleChange {
                t_ms: 6,
                node: 4,
                term: 2,
                role: Role::Follower,
            },
            &mut out,
        );
        assert_eq!(out.len(), 1, "{out:?}");
        assert!(out[0].message.contains("went back from 3 to 2"), "{out:?}");
        // A replaced board (blank disks) starts again from term 0 without a violation.
        out.clear();
        c.observe(&Observation::NodeReplaced { t_ms: 7, node: 4 }, &mut out);
        c.observe(
            &Observation::RoleChange {
                t_ms: 8,
                node: 4,
                term: 0,
                role: Role::Learner,
            },
            &mut out,
        );
        assert!(out.is_empty(), "{out:?}");
    }
}
