//! The simulated operator's membership changes (`member_add`, `member_promote`,
//! `member_remove` faults): asked of a running member through `Node::member`, the path the
//! admin API and `ghatta member` take, and retried as a person at the CLI would until the
//! membership shows the change committed.

use std::sync::{Arc, Mutex};

use ghatta::node::NodeStatus;
use ghatta::rpc::wire::MemberOp;
use ghatta_sim::check::Violation;
use ghatta_sim::fault::MemberChange;
use ghatta_sim::scenario::MEMBER_RETRY_S;
use ghatta_sim::time::Epoch;
use tokio::time::Duration;

use super::lock;
use super::lockstep::Engine;
use super::world::Running;

/// One change the operator asked for, and how it went.
#[derive(Clone, Debug)]
pub struct MemberRequest {
    /// The node added, promoted or removed.
    pub node: u64,
    /// What was asked.
    pub change: MemberChange,
    /// When it was asked, simulated ms.
    pub asked_ms: u64,
    /// When the membership first showed it committed (`None`: not yet).
    pub done_ms: Option<u64>,
    /// Attempts made (each one `Node::member` call).
    pub attempts: u32,
    /// The last refusal or error, for the violation if it never completes.
    pub last_error: Option<String>,
}

/// Every request of a run, in the order asked.
pub type MemberLog = Arc<Mutex<Vec<MemberRequest>>>;

/// Whether a member's view (`NodeStatus`'s voters, learners and `membership_in_progress`)
/// shows `change` of `node` done and committed.
pub fn holds(
    (voters, learners, in_progress): (&[u64], &[u64], bool),
    node: u64,
    change: MemberChange,
) -> bool {
    if in_progress {
        return false;
    }
    let voter = voters.contains(&node);
    let learner = learners.contains(&node);
    match change {
        // A node promoted since counts: the learner it was added as is now a voter.
        MemberChange::Add => voter || learner,
        MemberChange::Promote => voter,
        MemberChange::Remove => !voter && !learner,
    }
}

fn view(s: &NodeStatus) -> (&[u64], &[u64], bool) {
    (&s.voters, &s.learners, s.membership_in_progress)
}

fn op_of(node: u64, change: MemberChange) -> MemberOp {
    match change {
        // Simulated links route by id; an empty address keeps the one the node has.
        MemberChange::Add => MemberOp::AddLearner {
            id: node,
            addr: String::new(),
        },
        MemberChange::Promote => MemberOp::Promote { id: node },
        MemberChange::Remove => MemberOp::Remove { id: node },
    }
}

/// Carries out one request (entry `at` of `log`): through the lowest-numbered running member
/// other than the node itself, until a member's view shows it committed or `patience` runs
/// out. Runs on the world's runtime; each attempt on the runtime of the node it goes through.
pub async fn carry_out(
    engine: Engine,
    running: Running,
    epoch: Epoch,
    log: MemberLog,
    at: usize,
    patience: Duration,
) {
    let (node, change) = {
        let l = lock(&log);
        (l[at].node, l[at].change)
    };
    let deadline = tokio::time::Instant::now() + patience;
    let retry = Duration::from_millis((MEMBER_RETRY_S * 1_000.0) as u64);
    while tokio::time::Instant::now() < deadline {
        let through = lock(&running)
            .iter()
            .find(|(id, _)| **id != node)
            .map(|(_, (slot, _, n))| (*slot, n.clone()));
        if let Some((slot, member)) = through {
            let attempt = async move {
                if holds(view(&member.status()), node, change) {
                    return Ok(true);
                }
                member
                    .member(op_of(node, change))
                    .await
                    .map(|_| false)
                    .map_err(|e| e.to_string())
            };
            match engine.spawn_on(slot, attempt).await {
                Ok(Ok(true)) => {
                    lock(&log)[at].done_ms = Some(epoch.elapsed_ms());
                    return;
                }
                Ok(Ok(false)) => lock(&log)[at].attempts += 1,
                Ok(Err(e)) => {
                    let mut l = lock(&log);
                    l[at].attempts += 1;
                    l[at].last_error = Some(e);
                }
                // The member's runtime dropped the attempt (it was killed): ask another.
                Err(_) => {}
            }
        }
        tokio::time::sleep(retry).await;
    }
}

/// Whether a request was asked and is not yet seen committed.
pub fn in_flight(log: &MemberLog) -> bool {
    lock(log).iter().any(|r| r.done_ms.is_none())
}

/// A violation for every request that never completed.
pub fn unfinished(log: &MemberLog, end_ms: u64) -> Vec<Violation> {
    lock(log)
        .iter()
        .filter(|r| r.done_ms.is_none())
        .map(|r| Violation {
            checker: "membership".into(),
            t_ms: end_ms,
            message: format!(
                "{} of node {} asked at t={} ms was not committed by the end ({} attempts; last \
                 answer: {})",
                r.change,
                r.node,
                r.asked_ms,
                r.attempts,
                r.last_error.as_deref().unwrap_or("none")
            ),
        })
        .collect()
}

/// At the end of a run: every node taken out of service (`decommission`) must be gone from
/// every running member's committed membership (`views`: node id and its status), neither
/// voter nor learner, with no change in flight that could still bring it back.
pub fn decommissioned_listed(
    gone: &[u64],
    views: &[(u64, NodeStatus)],
    end_ms: u64,
) -> Vec<Violation> {
    let mut out = Vec::new();
    for &node in gone {
        for (member, st) in views {
            if !holds(view(st), node, MemberChange::Remove) {
                out.push(Violation {
                    checker: "membership".into(),
                    t_ms: end_ms,
                    message: format!(
                        "node {node}, taken out of service, is still in node {member}'s                          membership at the end (voters {:?}, learners {:?}, change in flight:                          {})",
                        st.voters, st.learners, st.membership_in_progress
                    ),
                });
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status<'a>(
        voters: &'a [u64],
        learners: &'a [u64],
        in_progress: bool,
    ) -> (&'a [u64], &'a [u64], bool) {
        (voters, learners, in_progress)
    }

    #[test]
    fn a_change_holds_only_once_committed() {
        let add = MemberChange::Add;
        assert!(holds(status(&[1, 2, 3], &[4], false), 4, add));
        assert!(!holds(status(&[1, 2, 3], &[4], true), 4, add), "in flight");
        assert!(!holds(status(&[1, 2, 3], &[], false), 4, add));
        assert!(
            holds(status(&[1, 2, 3, 4], &[], false), 4, add),
            "since promoted"
        );
        let promote = MemberChange::Promote;
        assert!(!holds(status(&[1, 2, 3], &[4], false), 4, promote));
        assert!(holds(status(&[1, 2, 3, 4], &[], false), 4, promote));
        let remove = MemberChange::Remove;
        assert!(!holds(status(&[1, 2, 3, 4], &[], false), 4, remove));
        assert!(
            !holds(status(&[1, 2, 3], &[4], false), 4, remove),
            "still a learner"
        );
        assert!(holds(status(&[1, 2, 3], &[], false), 4, remove));
        assert!(
            !holds(status(&[1, 2, 3], &[], true), 4, remove),
            "in flight"
        );
    }
}
