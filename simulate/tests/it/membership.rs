//! Membership and snapshots: add a learner, promote it, remove a node; a lagging node whose
//! log was purged receives the leader's snapshot as a stream of chunks and installs it.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ghatta::actors::{ActorHost, ActorLimits};
use ghatta::node::SnapshotTuning;
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

        c.node(follower)
            .member(MemberOp::Promote { id: 4 })
            .await
            .expect("promote");
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
