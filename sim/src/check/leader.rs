//! An isolated leader stops acting as leader: cut off from a quorum for longer than its lease,
//! it appends nothing more to its log.

use std::collections::BTreeMap;

use super::{Checker, Violation, violation};
use crate::net::NodeId;
use crate::observe::{Observation, Role};

/// How much later than its lease a cut-off leader may still append: an append accepted just
/// inside the lease is written after the disk's fsync, and a slow disk delays that by up to
/// [`crate::scenario::SYNC_DELAY_MS_MAX`] (10 s), plus a lockstep window (400 ms) before the
/// world sees the log grow.
pub const APPEND_AFTER_LEASE_MS_MAX: u64 = crate::scenario::SYNC_DELAY_MS_MAX + 1_000;

/// **An isolated leader stops acting as leader** (Raft dissertation §6.2, "leader lease" and
/// CheckQuorum: a leader that has not heard from a quorum for an election timeout must stop
/// serving). openraft 0.10 keeps such a node in `ServerState::Leader` until it hears a higher
/// vote, but refuses every new proposal once its quorum lease (`election_timeout_max`) has run
/// out (`docs::protocol::check_quorum`): no relay command, timer tick, field batch or WAN ack
/// enters its log. What the node does as leader is append; so this checker fails when a node
/// that reports itself leader and has been cut off from a quorum of its voters (by the world's
/// partitions and down nodes, `Observation::LeaderReach`) for longer than `bound_ms` (its
/// lease plus [`APPEND_AFTER_LEASE_MS_MAX`]) appends an entry it did not have by then.
///
/// Memory: one entry per node that leads while cut off.
#[derive(Clone, Debug)]
pub struct IsolatedLeader {
    bound_ms: u64,
    /// Per node cut off while leading: (term, cut since, last log index by the bound, reported).
    cut: BTreeMap<NodeId, Cut>,
}

#[derive(Clone, Copy, Debug)]
struct Cut {
    term: u64,
    since_ms: u64,
    index_by_bound: u64,
    reported: bool,
}

impl IsolatedLeader {
    /// A checker allowing a cut-off leader `bound_ms` of appends (its lease and the slack).
    pub fn new(bound_ms: u64) -> Self {
        Self {
            bound_ms,
            cut: BTreeMap::new(),
        }
    }
}

impl Checker for IsolatedLeader {
    fn name(&self) -> &'static str {
        "isolated_leader"
    }

    fn observe(&mut self, obs: &Observation, out: &mut Vec<Violation>) {
        match *obs {
            Observation::LeaderReach {
                t_ms,
                node,
                term,
                cut,
                last_log_index,
            } => {
                if !cut {
                    self.cut.remove(&node);
                    return;
                }
                let fresh = Cut {
                    term,
                    since_ms: t_ms,
                    index_by_bound: last_log_index,
                    reported: false,
                };
                let c = self.cut.entry(node).or_insert(fresh);
                if c.term != term {
                    *c = fresh;
                }
                if t_ms <= c.since_ms + self.bound_ms {
                    c.index_by_bound = c.index_by_bound.max(last_log_index);
                } else if last_log_index > c.index_by_bound && !c.reported {
                    c.reported = true;
                    out.push(violation(
                        "isolated_leader",
                        t_ms,
                        format!(
                            "node {node}, leader of term {term}, cut off from a quorum since \
                             t={} ms, appended up to index {last_log_index} {} s later (it had \
                             {} by the bound of {} s): it still acts as leader",
                            c.since_ms,
                            (t_ms - c.since_ms) / 1_000,
                            c.index_by_bound,
                            self.bound_ms / 1_000
                        ),
                    ));
                }
            }
            Observation::RoleChange { node, role, .. } if role != Role::Leader => {
                self.cut.remove(&node);
            }
            _ => {}
        }
    }

    fn finish(&mut self, _end_t_ms: u64, _out: &mut Vec<Violation>) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reach(t_ms: u64, cut: bool, last_log_index: u64) -> Observation {
        Observation::LeaderReach {
            t_ms,
            node: 3,
            term: 2,
            cut,
            last_log_index,
        }
    }

    #[test]
    fn a_cut_off_leader_may_append_within_its_bound_and_never_after() {
        let mut c = IsolatedLeader::new(30_000);
        let mut out = Vec::new();
        c.observe(&reach(1_000, true, 100), &mut out);
        c.observe(&reach(20_000, true, 105), &mut out);
        c.observe(&reach(31_000, true, 107), &mut out);
        assert!(out.is_empty(), "inside the bound: {out:?}");
        // Reported after the bound but with nothing new: the same index is no append.
        c.observe(&reach(40_000, true, 107), &mut out);
        assert!(out.is_empty(), "{out:?}");
        c.observe(&reach(41_000, true, 108), &mut out);
        assert_eq!(out.len(), 1, "{out:?}");
        assert!(out[0].message.contains("since t=1000 ms"), "{out:?}");
        // One report per cut.
        c.observe(&reach(42_000, true, 109), &mut out);
        assert_eq!(out.len(), 1, "{out:?}");
    }

    #[test]
    fn a_heal_or_a_lost_leadership_starts_the_count_again() {
        let mut c = IsolatedLeader::new(30_000);
        let mut out = Vec::new();
        c.observe(&reach(1_000, true, 100), &mut out);
        c.observe(&reach(10_000, false, 100), &mut out);
        c.observe(&reach(20_000, true, 100), &mut out);
        c.observe(&reach(45_000, true, 120), &mut out);
        assert!(out.is_empty(), "cut again at 20 s, bound at 50 s: {out:?}");
        c.observe(
            &Observation::RoleChange {
                t_ms: 46_000,
                node: 3,
                term: 3,
                role: Role::Follower,
            },
            &mut out,
        );
        c.observe(
            &Observation::LeaderReach {
                t_ms: 90_000,
                node: 3,
                term: 4,
                cut: true,
                last_log_index: 130,
            },
            &mut out,
        );
        assert!(out.is_empty(), "a new term is a new cut: {out:?}");
    }
}
