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

/// A follower whose data directory went back (restored from an older copy, then its
/// `raft-log.redb` lost, as after an SD card failure) restarts under the same id. The leader must notice that
/// the follower's log went backwards and send it the log again, rather than answer for it
/// from what it acknowledged before: once the third node is stopped, the leader and the
/// wiped follower alone must keep committing, and no acknowledged entry may be lost when the
/// leader is lost after that.
#[test]
fn a_follower_whose_log_was_lost_is_sent_the_log_again_and_nothing_acknowledged_is_lost() {
    run(13, async {
        let mut c = Cluster::start(3).await;
        let leader = c.wait_leader(Duration::from_secs(20)).await;
        c.node(leader)
            .propose_inputs(setup_inputs(CUSTOMERS))
            .await
            .expect("setup commits");
        commit_rounds(&c, leader, 1..6).await;

        let mut others = (1..=3).filter(|id| *id != leader);
        let (wiped, third) = (others.next().unwrap(), others.next().unwrap());
        // A copy of the follower's data directory taken now is restored later: its log and
        // its state machine both go back.
        c.stop_node(wiped).await;
        let backup = c.dir(wiped).with_extension("backup");
        copy_dir(&c.dir(wiped), &backup);
        c.start_node(wiped).await;
        commit_rounds(&c, leader, 6..9).await;
        c.stop_node(wiped).await;
        std::fs::remove_dir_all(c.dir(wiped)).expect("remove the data directory");
        copy_dir(&backup, &c.dir(wiped));
        // And the restored log is lost as well (an SD card that failed twice).
        std::fs::remove_file(c.dir(wiped).join(ghatta::storage::LOG_FILE_NAME))
            .expect("delete the follower's raft log");
        c.start_node(wiped).await;
        commit_rounds(&c, leader, 9..12).await;

        // Only the leader and the wiped follower remain: every commit from here needs the
        // follower to hold the log for real.
        c.stop_node(third).await;
        let acknowledged = commit_rounds(&c, leader, 12..16).await;
        assert!(acknowledged > 0);
        let committed = c.node(leader).status().commit_index;

        // The leader is lost; the third node comes back and, with the wiped follower, must
        // elect a leader whose log holds everything acknowledged.
        c.stop_node(leader).await;
        c.start_node(third).await;
        let new_leader = c.wait_leader(Duration::from_secs(30)).await;
        assert_ne!(new_leader, leader);
        commit_rounds(&c, new_leader, 16..18).await;
        let (applied, hashes) = c.wait_converged(Duration::from_secs(60)).await;
        assert!(
            applied > committed,
            "applied {applied} after the leader's loss, acknowledged up to {committed}"
        );
        let distinct: std::collections::BTreeSet<_> = hashes.values().collect();
        assert_eq!(distinct.len(), 1, "state hashes differ: {hashes:?}");

        // The old leader comes back under a lower term and joins.
        c.start_node(leader).await;
        let (_, hashes) = c.wait_converged(Duration::from_secs(60)).await;
        let distinct: std::collections::BTreeSet<_> = hashes.values().collect();
        assert_eq!(distinct.len(), 1, "state hashes differ: {hashes:?}");
        c.shutdown().await;
    });
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).expect("create the copy");
    for e in std::fs::read_dir(from).expect("read the data directory") {
        let e = e.expect("entry");
        std::fs::copy(e.path(), to.join(e.file_name())).expect("copy a file");
    }
}
