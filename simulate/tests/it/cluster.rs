//! Three-node clusters over TCP on loopback: commit, lose the leader, restart from redb, and
//! end with byte-identical state hashes; a replica restarted mid-run with cold caches.

use std::time::Duration;

use crate::harness::{Cluster, field_batch, run, setup_inputs};

const CUSTOMERS: u32 = 50;
const BATCH: usize = 50;

async fn commit_rounds(c: &Cluster, via: u64, rounds: std::ops::Range<u64>) -> u64 {
    let mut messages = 0;
    for round in rounds {
        let receipt = c
            .node(via)
            .propose_inputs(field_batch(round, BATCH, CUSTOMERS, via))
            .await
            .expect("proposal commits");
        assert!(!receipt.duplicate);
        assert_eq!(receipt.trapped, 0, "no actor may trap on well-formed input");
        assert_eq!((receipt.handled + receipt.rejected) as usize, BATCH);
        messages += BATCH as u64;
    }
    messages
}

#[test]
fn cluster_survives_leader_loss_and_restart_with_equal_hashes() {
    run(11, async {
        let mut c = Cluster::start(3).await;
        let leader = c.wait_leader(Duration::from_secs(20)).await;
        c.node(1)
            .propose_inputs(setup_inputs(CUSTOMERS))
            .await
            .expect("setup commits");

        // 600 actor messages, proposed through a follower and the leader.
        let follower = (1..=3).find(|id| *id != leader).unwrap();
        let mut messages = commit_rounds(&c, follower, 1..7).await;
        messages += commit_rounds(&c, leader, 7..13).await;

        // Lose the leader; a new one is elected and the cluster goes on committing.
        c.stop_node(leader).await;
        let new_leader = c.wait_leader(Duration::from_secs(30)).await;
        assert_ne!(new_leader, leader);
        let survivor = (1..=3).find(|id| *id != leader).unwrap();
        messages += commit_rounds(&c, survivor, 13..21).await;
        assert!(messages >= 1_000, "committed {messages} actor messages");

        // The lost node restarts from its redb files and catches up.
        c.start_node(leader).await;
        let (applied, hashes) = c.wait_converged(Duration::from_secs(60)).await;
        assert!(applied > 20, "applied index {applied}");
        let distinct: std::collections::BTreeSet<_> = hashes.values().collect();
        assert_eq!(
            distinct.len(),
            1,
            "state hashes differ at index {applied}: {hashes:?}"
        );
        assert_eq!(hashes.len(), 3);
        c.shutdown().await;
    });
}

#[test]
fn replica_restarted_mid_run_with_cold_caches_reaches_same_hash() {
    run(12, async {
        let mut c = Cluster::start(3).await;
        let leader = c.wait_leader(Duration::from_secs(20)).await;
        c.node(leader)
            .propose_inputs(setup_inputs(CUSTOMERS))
            .await
            .expect("setup commits");
        commit_rounds(&c, leader, 1..5).await;

        // Restart a follower while proposals keep flowing: its new actor host compiles the
        // modules from scratch and it re-applies committed entries with cold caches.
        let follower = (1..=3).find(|id| *id != leader).unwrap();
        c.stop_node(follower).await;
        commit_rounds(&c, leader, 5..8).await;
        c.start_node(follower).await;
        commit_rounds(&c, leader, 8..12).await;

        let (applied, hashes) = c.wait_converged(Duration::from_secs(60)).await;
        let distinct: std::collections::BTreeSet<_> = hashes.values().collect();
        assert_eq!(
            distinct.len(),
            1,
            "state hashes differ at index {applied}: {hashes:?}"
        );
        c.shutdown().await;
    });
}

/// A follower running a ghatta from before `AppendProbe` (simulated: it leaves them
/// unanswered) is still replicated: after `PROBE_FAILURES_MAX` unanswered probes the leader
/// sends it plain appends (rpc/network.rs), so a board-by-board upgrade keeps every replica.
#[test]
fn a_follower_that_never_answers_append_probes_still_gets_the_log() {
    run(12, async {
        let mut c = Cluster::empty(
            3,
            std::sync::Arc::new(|| {
                ghatta::actors::ActorHost::with_embedded(ghatta::actors::ActorLimits::default())
                    .expect("embedded actors")
            }),
            None,
        );
        let old = std::sync::Arc::new(ghatta::observe::TestFaults::default());
        old.ignore_append_probe
            .store(true, std::sync::atomic::Ordering::Relaxed);
        c.faults.insert(3, old);
        let mut c = c.start_all().await;
        let mut leader = c.wait_leader(Duration::from_secs(20)).await;
        if leader == 3 {
            // The old node must follow: let another lead, then bring it back.
            c.stop_node(3).await;
            leader = c.wait_leader(Duration::from_secs(30)).await;
            c.start_node(3).await;
        }
        c.node(leader)
            .propose_inputs(setup_inputs(CUSTOMERS))
            .await
            .expect("setup commits");
        commit_rounds(&c, leader, 1..4).await;
        let (applied, hashes) = c.wait_converged(Duration::from_secs(60)).await;
        assert!(applied >= 4, "applied index {applied}");
        assert_eq!(hashes.len(), 3, "every replica, node 3 too: {hashes:?}");
        let distinct: std::collections::BTreeSet<_> = hashes.values().collect();
        assert_eq!(distinct.len(), 1, "at index {applied}: {hashes:?}");
        c.shutdown().await;
    });
}
