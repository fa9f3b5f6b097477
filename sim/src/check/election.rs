//! Election Safety: at most one leader per term.

use std::collections::BTreeMap;

use super::{Checker, Violation, violation};
use crate::net::NodeId;
use crate::observe::{Observation, Role};

/// **Election Safety** (Raft paper §5.2, Figure 3): at most one leader can be
/// elected in a given term. Protects everything downstream: two leaders in a
/// term could commit different entries at the same index.
///
/// Memory: one map entry per term that had a leader.
#[derive(Clone, Debug, Default)]
pub struct ElectionSafety {
    leaders: BTreeMap<u64, NodeId>,
}

impl ElectionSafety {
    /// A fresh checker.
    pub fn new() -> Self {
        Self::default()
    }

    /// Terms that had a leader (the report's `elections`).
    pub fn elections(&self) -> u64 {
        self.leaders.len() as u64
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
                Some(&other) if other != node => out.push(violation(
                    self.name(),
                    t_ms,
                    format!("term {term} has two leaders: node {other} and node {node}"),
                )),
                Some(_) => {}
                None => {
                    self.leaders.insert(term, node);
                }
            }
        }
    }

    fn finish(&mut self, _end_t_ms: u64, _out: &mut Vec<Violation>) {}
}
