//! Membership and snapshots: add a learner, promote it, remove a node; the issue-26 wedge
//! (a node added where nothing listens, promoted, removed) refused step by step, a learner
//! that went down refused promotion, a dead voter removed; a lagging node whose log was
//! purged receives the leader's snapshot as a stream of chunks and installs it.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ghatta::actors::{ActorHost, ActorLimits};
use ghatta::node::membership::{MemberOutcome, MemberState, PROMOTE_ACK_HEARTBEATS_MAX};
use ghatta::node::{MembershipError, SnapshotTuning};
use ghatta::observe::NodeObserver;
use ghatta::rpc::wire::MemberOp;

use crate::harness::{Cluster, field_batch, run, setup_inputs};

#[test]
fn add_learner_promote_and_remove() {
    run(31, async {
        let mut c = Cluster::start(3).await;
        let leader = c.wait_leader(Duration::from_secs(20)).await;
        c.node(leader)
            .propose_inputs(setup_inputs(10))
            .await
            .expect("setup");

        // Node 4 starts empty and joins as a learner through a follower's admin path.
        c.start_node(4).await;
        let addr = c.peers[&4].addr.clone();
        let follower = (1..=3).find(|id| *id != leader).unwrap();
        c.node(follower)
            .member(MemberOp::AddLearner { id: 4, addr })
            .await
            .expect("add learner");
        let s = c.node(leader).status();
        assert_eq!(s.learners, vec![4]);

        promote_once_caught_up(&c, follower, 4).await;
        let voters: BTreeSet<u64> = c.node(leader).status().voters.into_iter().collect();
        assert_eq!(voters, BTreeSet::from([1, 2, 3, 4]));

        // Remove a follower that is not the leader; the cluster keeps committing.
        let removed = (1..=3).find(|id| *id != leader && *id != follower).unwrap();
        c.node(leader)
            .member(MemberOp::Remove { id: removed })
            .await
            .expect("remove");
        c.stop_node(removed).await;
        let voters: BTreeSet<u64> = c.node(leader).status().voters.into_iter().collect();
        assert!(
            !voters.contains(&removed) && voters.contains(&4),
            "{voters:?}"
        );
        c.node(4)
            .propose_inputs(field_batch(1, 20, 10, 4))
            .await
            .expect("commits after the change");
        let (_, hashes) = c.wait_converged(Duration::from_secs(30)).await;
        assert_eq!(
            hashes.values().collect::<BTreeSet<_>>().len(),
            1,
            "{hashes:?}"
        );
        c.shutdown().await;
    });
}

/// Promotes learner `id` through node `via`, retrying while it is refused as not caught up
/// (the node was just added, or has not acknowledged the leader yet); any other refusal fails.
async fn promote_once_caught_up(c: &Cluster, via: u64, id: u64) -> MemberOutcome {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        match c.node(via).member(MemberOp::Promote { id }).await {
            Ok(o) => {
                assert_eq!(o.state, MemberState::Committed, "{o:?}");
                return o;
            }
            Err(MembershipError::Refused(why))
                if (why.contains("not caught up") || why.contains("has not answered"))
                    && tokio::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("promote {id}: {e}"),
        }
    }
}

fn voters_of(c: &Cluster, id: u64) -> BTreeSet<u64> {
    c.node(id).status().voters.into_iter().collect()
}

/// Regression (issue 26): `member add --id 4 --addr <nothing listening>` added the learner
/// after a CLI timeout, `member promote --id 4` made node 4 a voter though it never answered,
/// the commit index froze, and `member remove --id 4` was refused as "already undergoing a
/// configuration change". Now each step is refused with its reason before anything is
/// proposed, a learner that stopped answering is not promoted, a dead voter can be removed,
/// and the cluster commits throughout.
#[test]
fn a_member_that_never_answers_cannot_wedge_the_cluster() {
    run(33, async {
        let mut c = Cluster::start(3).await;
        let leader = c.wait_leader(Duration::from_secs(20)).await;
        let follower = (1..=3).find(|id| *id != leader).unwrap();
        c.node(leader)
            .propose_inputs(setup_inputs(10))
            .await
            .expect("setup");
        let refused = |r: Result<MemberOutcome, MembershipError>| match r {
            Err(MembershipError::Refused(why)) => why,
            other => panic!("expected a refusal, got {other:?}"),
        };

        // The reported sequence, through a follower as the CLI's admin node might be.
        let nothing = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().to_string()
        };
        let why = refused(
            c.node(follower)
                .member(MemberOp::AddLearner {
                    id: 4,
                    addr: nothing.clone(),
                })
                .await,
        );
        assert!(
            why.contains(&format!("node 4 at {nothing} did not answer"))
                && why.contains("start `ghatta run`"),
            "{why}"
        );
        assert!(c.node(leader).status().learners.is_empty());
        let why = refused(c.node(follower).member(MemberOp::Promote { id: 4 }).await);
        assert!(
            why.contains("not a learner") && why.contains("member add"),
            "{why}"
        );
        let why = refused(c.node(follower).member(MemberOp::Remove { id: 4 }).await);
        assert!(why.contains("not a member"), "{why}");
        assert_eq!(voters_of(&c, leader), BTreeSet::from([1, 2, 3]));
        c.node(follower)
            .propose_inputs(field_batch(1, 20, 10, follower))
            .await
            .expect("the cluster commits after the refused changes");

        // A learner that answered when added and then went down is not promoted.
        c.start_node(4).await;
        let addr = c.peers[&4].addr.clone();
        let added = c
            .node(follower)
            .member(MemberOp::AddLearner {
                id: 4,
                addr: addr.clone(),
            })
            .await
            .expect("a node that answers is added");
        assert_eq!(added.state, MemberState::Committed, "{added:?}");
        assert!(
            added.note.contains("catching up") && added.learners == vec![4],
            "{added:?}"
        );
        c.stop_node(4).await;
        let window = Duration::from_millis(300) * PROMOTE_ACK_HEARTBEATS_MAX;
        tokio::time::sleep(window + Duration::from_millis(500)).await;
        for round in 2..=4 {
            c.node(leader)
                .propose_inputs(field_batch(round, 20, 10, leader))
                .await
                .expect("commits with a learner down");
        }
        let why = refused(c.node(follower).member(MemberOp::Promote { id: 4 }).await);
        assert!(why.contains("node 4 has not answered the leader"), "{why}");
        assert_eq!(voters_of(&c, leader), BTreeSet::from([1, 2, 3]));
        let gone = c
            .node(follower)
            .member(MemberOp::Remove { id: 4 })
            .await
            .expect("a learner that is down is removed");
        assert_eq!(gone.state, MemberState::Committed, "{gone:?}");
        assert!(gone.learners.is_empty(), "{gone:?}");

        // A voter that goes down after its promotion is removed without it: the joint
        // configuration needs a majority of {1,2,3,4} and of {1,2,3}, which 1-3 are.
        c.start_node(4).await;
        c.node(leader)
            .member(MemberOp::AddLearner { id: 4, addr })
            .await
            .expect("re-added");
        let promoted = promote_once_caught_up(&c, follower, 4).await;
        assert_eq!(promoted.voters, vec![1, 2, 3, 4], "{promoted:?}");
        c.stop_node(4).await;
        let removed = c
            .node(follower)
            .member(MemberOp::Remove { id: 4 })
            .await
            .expect("a dead voter is removed");
        assert_eq!(removed.state, MemberState::Committed, "{removed:?}");
        assert_eq!(voters_of(&c, leader), BTreeSet::from([1, 2, 3]));
        assert!(!c.node(leader).status().membership_in_progress);
        for round in 5..=7 {
            c.node(follower)
                .propose_inputs(field_batch(round, 20, 10, follower))
                .await
                .expect("the cluster commits after the changes");
        }
        let (_, hashes) = c.wait_converged(Duration::from_secs(30)).await;
        assert_eq!(
            hashes.values().collect::<BTreeSet<_>>().len(),
            1,
            "{hashes:?}"
        );
        c.shutdown().await;
    });
}

/// A change that cannot commit (both followers down) is answered "in progress" within
/// `MEMBER_COMMIT_WAIT`, not left to the caller's timeout, and completes, the joint entry and
/// the uniform one after it, once a majority of each voter set is back.
#[test]
fn a_change_without_a_quorum_is_in_progress_and_completes_when_a_node_returns() {
    run(34, async {
        let mut c = Cluster::start(3).await;
        let leader = c.wait_leader(Duration::from_secs(20)).await;
        let others: Vec<u64> = (1..=3).filter(|id| *id != leader).collect();
        let (gone, back) = (others[0], others[1]);
        c.stop_node(gone).await;
        c.stop_node(back).await;
        let asked = tokio::time::Instant::now();
        let outcome = c
            .node(leader)
            .member(MemberOp::Remove { id: gone })
            .await
            .expect("proposed, not refused");
        assert_eq!(outcome.state, MemberState::InProgress, "{outcome:?}");
        assert!(
            asked.elapsed() < ghatta::node::membership::MEMBER_COMMIT_WAIT + Duration::from_secs(3),
            "answered after {:?}",
            asked.elapsed()
        );
        assert!(c.node(leader).status().membership_in_progress);
        // A second change is refused with what completes the first.
        let why = match c.node(leader).member(MemberOp::Remove { id: back }).await {
            Err(MembershipError::Refused(why)) => why,
            other => panic!("expected a refusal, got {other:?}"),
        };
        assert!(
            why.contains("still being committed") && why.contains("start the nodes"),
            "{why}"
        );

        c.start_node(back).await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let s = c.node(leader).status();
            if !s.membership_in_progress && !s.voters.contains(&gone) {
                assert_eq!(s.voters.len(), 2, "{s:?}");
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "{s:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let leader = c.wait_leader(Duration::from_secs(20)).await;
        c.node(leader)
            .propose_inputs(setup_inputs(3))
            .await
            .expect("commits with the two voters left");
        c.shutdown().await;
    });
}

#[derive(Default)]
struct Snapshots(Mutex<Vec<(u64, u64)>>);

impl NodeObserver for Snapshots {
    fn snapshot_installed(&self, node: u64, index: u64, _hash: [u8; 32]) {
        self.0.lock().unwrap().push((node, index));
    }
}

#[test]
fn lagging_node_receives_and_installs_a_streamed_snapshot() {
    run(32, async {
        let tuning = SnapshotTuning {
            every_entries: 20,
            keep_entries: 5,
        };
        let host: crate::harness::HostFactory =
            Arc::new(|| ActorHost::with_embedded(ActorLimits::default()).unwrap());
        let mut c = Cluster::empty(3, host, Some(tuning));
        let seen = Arc::new(Snapshots::default());
        c.observer = Some(seen.clone());
        for id in 1..=3 {
            c.start_node(id).await;
        }
        let members = c.peers.clone();
        for n in c.nodes.values() {
            n.initialize(members.clone()).await.unwrap();
        }
        let leader = c.wait_leader(Duration::from_secs(20)).await;
        let lagging = (1..=3).find(|id| *id != leader).unwrap();
        c.stop_node(lagging).await;

        c.node(leader)
            .propose_inputs(setup_inputs(30))
            .await
            .expect("setup");
        for round in 1..=60 {
            c.node(leader)
                .propose_inputs(field_batch(round, 30, 30, leader))
                .await
                .expect("commits");
        }
        // The leader snapshots (its policy looks once per SNAPSHOT_POLL_INTERVAL) and purges
        // what the lagging node lacks.
        let deadline =
            tokio::time::Instant::now() + ghatta::node::snapshots::SNAPSHOT_POLL_INTERVAL * 10;
        let purged = loop {
            let purged = c.node(leader).raft().metrics().borrow_watched().purged;
            if purged.is_some_and(|p| p.index > 10) || tokio::time::Instant::now() > deadline {
                break purged;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert!(
            purged.is_some_and(|p| p.index > 10),
            "leader purged {purged:?}"
        );

        c.start_node(lagging).await;
        let (applied, hashes) = c.wait_converged(Duration::from_secs(60)).await;
        assert_eq!(
            hashes.values().collect::<BTreeSet<_>>().len(),
            1,
            "hashes differ at {applied}: {hashes:?}"
        );
        let installs = seen.0.lock().unwrap().clone();
        assert!(
            installs.iter().any(|(n, i)| *n == lagging && *i > 10),
            "snapshot installs: {installs:?}"
        );
        c.shutdown().await;
    });
}

use openraft_rt::WatchReceiver as _;
