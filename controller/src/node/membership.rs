//! Membership changes an operator asks for, carried out so that none can wedge the cluster.
//!
//! The wedge this prevents (issue 26): a learner added at an address where nothing listens,
//! then promoted, made a voter set of four with one dead; its commit needed every one of the
//! three live voters, so one slow radio froze the commit index, and every later change was
//! refused because that one was still in flight. So here:
//!
//! - a new node must answer a probe over the cluster's own links (and, sealed, have its key
//!   listed) before it is added, and it is added without waiting for it to catch up;
//! - a learner is promoted only once it has caught up ([`PROMOTE_LAG_ENTRIES_MAX`]) and
//!   answered the leader recently ([`PROMOTE_ACK_HEARTBEATS_MAX`]), so the joint
//!   configuration's quorum never waits on a node that is not there;
//! - a promotion adds one voter and a removal removes one (openraft's `AddVoterIds` and
//!   `RemoveVoters`, computed by the leader's Raft core from the membership it holds), never a
//!   voter set computed elsewhere;
//! - a change that has not committed within [`MEMBER_COMMIT_WAIT`] is answered "in progress"
//!   (openraft carries on with it) rather than left to the caller's timeout.
//!
//! The decisions are plain functions of what the leader knows ([`check_promotion`]); `Node`
//! gathers that and talks to Raft.

use std::time::Duration;

pub use crate::rpc::wire::{MemberOutcome, MemberState};

/// How long the leader waits for a new node to answer the probe before `member add`: one
/// round trip on the link, and on the 800 ms radio (`LinkProfile::Radio`) several with the
/// link's repeats of lost fragments; short enough that an operator at the CLI hears back.
pub const MEMBER_PROBE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the leader waits for a membership change to commit before answering "in
/// progress": a joint and a uniform entry, two commits of a few round trips each on the
/// radio; a change that takes longer waits for a node that is down or a lossy link, and the
/// operator is better told so than kept waiting.
pub const MEMBER_COMMIT_WAIT: Duration = Duration::from_secs(8);
/// Deadline of a membership change forwarded to the leader: the leader's probe and commit
/// wait, plus a few seconds of round trips.
pub const MEMBER_FORWARD_TIMEOUT: Duration =
    Duration::from_secs(MEMBER_PROBE_TIMEOUT.as_secs() + MEMBER_COMMIT_WAIT.as_secs() + 4);
/// How long a node looks for a leader to carry out a change. With [`MEMBER_FORWARD_TIMEOUT`]
/// for an attempt started just before it runs out, the answer comes within the CLI's
/// `ADMIN_CALL_TIMEOUT` (40 s).
pub const MEMBER_LEADER_WAIT: Duration = Duration::from_secs(15);
/// A learner is promoted only when its matched log index is at most this many entries behind
/// the leader's last: `max_payload_entries` (`raft::timing`), one append's worth, so the joint
/// configuration commits after at most one more append to the new voter.
pub const PROMOTE_LAG_ENTRIES_MAX: u64 = 64;
/// A learner is promoted only when it acknowledged the leader within this many heartbeat
/// intervals: two heartbeats lost on a lossy radio are normal, four in a row mean the node is
/// down or cut off, and a voter that is down from the start is what wedges a change.
pub const PROMOTE_ACK_HEARTBEATS_MAX: u32 = 4;

/// What the leader knows of a learner it is asked to promote (from its replication metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LearnerProgress {
    /// The learner's matched log index (`None`: nothing matched yet).
    pub matched: Option<u64>,
    /// The leader's last log index.
    pub leader_last: u64,
    /// Time since the learner last acknowledged the leader (`None`: never).
    pub acked_ago: Option<Duration>,
}

/// Why a membership change was refused before anything was proposed. Each says what, to
/// which node, and what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MemberRefusal {
    /// The new node did not answer the probe.
    #[error(
        "node {id} at {addr} did not answer within {timeout_s} s, so it was not added; start `ghatta run` on it (with this cluster's name, and this node among its peers), check the address, then retry"
    )]
    NoAnswer {
        /// The node.
        id: u64,
        /// The address tried.
        addr: String,
        /// The probe's limit, s.
        timeout_s: u64,
    },
    /// Something answered at the address, but as another node.
    #[error(
        "the node at {addr} answered as node {answered}, not {id}; check the id and the address, then retry"
    )]
    WrongNode {
        /// The node asked for.
        id: u64,
        /// The address.
        addr: String,
        /// The id that answered.
        answered: u64,
    },
    /// Sealed links, and the new node's public key is not listed.
    #[error(
        "node {id} has no public_key in this node's [[peers]], so no frame to or from it would open; run `ghatta keygen` on node {id}, add its id, addr and public_key to every member's node.toml, restart them one at a time, then retry"
    )]
    KeyNotListed {
        /// The node.
        id: u64,
    },
    /// The node to add is a voter already.
    #[error("node {id} is already a voter; nothing to add")]
    AlreadyVoter {
        /// The node.
        id: u64,
    },
    /// Promotion of a node that is not a learner.
    #[error(
        "node {id} is not a learner; add it first with `ghatta member add --id {id} --addr HOST:PORT`"
    )]
    NotALearner {
        /// The node.
        id: u64,
    },
    /// The learner's log is too far behind to promote it.
    #[error(
        "node {id} is not caught up (its log matches up to {matched}, the leader's reaches {leader_last}; at most {PROMOTE_LAG_ENTRIES_MAX} entries behind may be promoted): wait until `ghatta status` on the leader shows it closer, then retry"
    )]
    NotCaughtUp {
        /// The node.
        id: u64,
        /// Its matched index (0: nothing).
        matched: u64,
        /// The leader's last index.
        leader_last: u64,
    },
    /// The learner has not answered the leader lately.
    #[error(
        "node {id} has not answered the leader {ago}, so promoting it could leave the cluster waiting on a node that is down; check that it runs and is reachable, then retry"
    )]
    NotAnswering {
        /// The node.
        id: u64,
        /// "for N ms" or "since it was added".
        ago: String,
    },
    /// The node to remove is not a member.
    #[error("node {id} is not a member (voters {voters:?}, learners {learners:?}); check the id")]
    NotAMember {
        /// The node.
        id: u64,
        /// The voters.
        voters: Vec<u64>,
        /// The learners.
        learners: Vec<u64>,
    },
    /// Removing the only voter would leave no cluster.
    #[error("node {id} is the only voter; add and promote another node before removing it")]
    LastVoter {
        /// The node.
        id: u64,
    },
    /// A change is being committed; openraft allows one at a time.
    #[error(
        "a membership change is still being committed (voter sets {configs:?}); it completes once a majority of each set is up: wait and check `ghatta status`, or start the nodes that are down, then retry"
    )]
    InFlight {
        /// The voter sets of the change (two while joint).
        configs: Vec<Vec<u64>>,
    },
}

/// Whether a learner may be promoted, judged from its progress; `ack_window` is
/// [`PROMOTE_ACK_HEARTBEATS_MAX`] heartbeats.
pub fn check_promotion(
    id: u64,
    p: LearnerProgress,
    ack_window: Duration,
) -> Result<(), MemberRefusal> {
    match p.acked_ago {
        None => {
            return Err(MemberRefusal::NotAnswering {
                id,
                ago: "since it was added".into(),
            });
        }
        Some(ago) if ago > ack_window => {
            return Err(MemberRefusal::NotAnswering {
                id,
                ago: format!("for {} ms", ago.as_millis()),
            });
        }
        Some(_) => {}
    }
    let matched = p.matched.unwrap_or(0);
    if p.matched.is_none() || p.leader_last.saturating_sub(matched) > PROMOTE_LAG_ENTRIES_MAX {
        return Err(MemberRefusal::NotCaughtUp {
            id,
            matched,
            leader_last: p.leader_last,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const WINDOW: Duration = Duration::from_secs(2);

    fn progress(matched: Option<u64>, leader_last: u64, acked_ms: Option<u64>) -> LearnerProgress {
        LearnerProgress {
            matched,
            leader_last,
            acked_ago: acked_ms.map(Duration::from_millis),
        }
    }

    #[test]
    fn a_learner_is_promoted_only_when_caught_up_and_answering() {
        assert_eq!(
            check_promotion(4, progress(Some(100), 100, Some(10)), WINDOW),
            Ok(())
        );
        let edge = 100 + PROMOTE_LAG_ENTRIES_MAX;
        assert_eq!(
            check_promotion(4, progress(Some(100), edge, Some(10)), WINDOW),
            Ok(())
        );
        assert_eq!(
            check_promotion(4, progress(Some(100), edge + 1, Some(10)), WINDOW),
            Err(MemberRefusal::NotCaughtUp {
                id: 4,
                matched: 100,
                leader_last: edge + 1
            })
        );
        // Nothing matched: not caught up even on a short log.
        assert!(matches!(
            check_promotion(4, progress(None, 3, Some(10)), WINDOW),
            Err(MemberRefusal::NotCaughtUp { .. })
        ));
        // The wedge: a learner at an address where nothing listens never acknowledged.
        let never = check_promotion(4, progress(None, 50, None), WINDOW).unwrap_err();
        assert!(never.to_string().contains("since it was added"), "{never}");
        // A learner that was caught up and then went down.
        let gone = check_promotion(4, progress(Some(50), 50, Some(2_001)), WINDOW).unwrap_err();
        assert!(
            matches!(gone, MemberRefusal::NotAnswering { .. })
                && gone.to_string().contains("2001 ms"),
            "{gone}"
        );
    }

    #[test]
    fn refusals_say_what_to_do() {
        let e = MemberRefusal::NoAnswer {
            id: 4,
            addr: "10.0.0.9:7000".into(),
            timeout_s: 5,
        }
        .to_string();
        assert!(
            e.contains("node 4 at 10.0.0.9:7000") && e.contains("start `ghatta run`"),
            "{e}"
        );
        let e = MemberRefusal::InFlight {
            configs: vec![vec![1, 2, 3], vec![1, 2, 3, 4]],
        }
        .to_string();
        assert!(
            e.contains("[[1, 2, 3], [1, 2, 3, 4]]") && e.contains("start the nodes"),
            "{e}"
        );
    }
}
