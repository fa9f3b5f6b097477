//! Actor modules deployed through the log on 3-node clusters over loopback TCP: under load,
//! refused alike, with the leader crashing between the module's chunks, and onto a replica
//! that missed the deploy and installs a snapshot; equal state hashes in every case.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use ghatta::actors::deploy::OperatorKey;
use ghatta::actors::embedded::BILLING_WASM;
use ghatta::actors::{ActorHost, ActorKind, ActorLimits};
use ghatta::node::SnapshotTuning;
use ghatta::raft::Receipt;
use openraft_rt::WatchReceiver;

use crate::harness::{Cluster, HostFactory, field_batch, run, setup_inputs};

const CUSTOMERS: u32 = 30;

fn embedded() -> HostFactory {
    Arc::new(|| ActorHost::with_embedded(ActorLimits::default()).expect("embedded actors"))
}

/// A cluster of `n` whose nodes list `key` in their actor_signers.
async fn cluster(n: u64, key: &OperatorKey, snapshot: Option<SnapshotTuning>) -> Cluster {
    let mut c = Cluster::empty(n, embedded(), snapshot);
    c.actor_signers = vec![key.public()];
    c.start_all().await
}

/// Every node's billing registry (active version and its index) and state hash agree.
async fn assert_same_everywhere(c: &Cluster, version: Option<u32>) -> u64 {
    let (applied, hashes) = c.wait_converged(Duration::from_secs(60)).await;
    assert_eq!(
        hashes.values().collect::<BTreeSet<_>>().len(),
        1,
        "hashes differ at {applied}: {hashes:?}"
    );
    let regs: BTreeSet<String> = c
        .nodes
        .values()
        .map(|n| {
            let m = n.state_machine().actor_modules();
            format!("{:?}", m.actors)
        })
        .collect();
    assert_eq!(regs.len(), 1, "registries differ: {regs:?}");
    let billing = c
        .nodes
        .values()
        .next()
        .unwrap()
        .state_machine()
        .actor_modules()
        .actors
        .into_iter()
        .find(|(k, _)| *k == ActorKind::Billing)
        .unwrap()
        .1;
    assert_eq!(billing.active, version);
    billing.active_since_index
}

fn taken(r: &Receipt) {
    assert_eq!((r.handled, r.rejected), (1, 0), "{r:?}");
}

#[test]
fn a_deploy_under_load_cuts_over_at_one_index_on_every_node() {
    run(41, async {
        let key = OperatorKey::generate().unwrap();
        let c = cluster(3, &key, None).await;
        let leader = c.wait_leader(Duration::from_secs(20)).await;
        let follower = (1..=3).find(|id| *id != leader).unwrap();
        c.node(leader)
            .propose_inputs(setup_inputs(CUSTOMERS))
            .await
            .expect("setup");
        // Field batches keep committing through another node while the module is deployed.
        let load_node = c.node(follower).clone();
        let load = tokio::spawn(async move {
            let mut round = 1;
            loop {
                let r = load_node
                    .propose_inputs(field_batch(round, 30, CUSTOMERS, load_node.id()))
                    .await
                    .expect("load commits");
                assert_eq!(r.trapped, 0);
                round += 1;
                if round > 400 {
                    break round;
                }
            }
        });
        tokio::time::sleep(Duration::from_millis(200)).await;
        // A module that is not one: refused alike, and billing goes on.
        let junk = b"\0asm\x01\0\0\0not a module".to_vec();
        let r = c
            .node(follower)
            .deploy_actor(&junk, key.sign("billing", 1, &junk))
            .await
            .expect("the deploy entry commits");
        assert!(
            r.refusals[0].text.contains("not a valid WebAssembly"),
            "{r:?}"
        );
        let started = std::time::Instant::now();
        let r = c
            .node(follower)
            .deploy_actor(BILLING_WASM, key.sign("billing", 1, BILLING_WASM))
            .await
            .expect("the deploy entry commits");
        taken(&r);
        println!(
            "deploy of {} bytes: active at index {} after {:?} (applied on the proposing node)",
            BILLING_WASM.len(),
            r.index,
            started.elapsed()
        );
        let rounds = load.await.unwrap();
        assert!(rounds > 400);
        let since = assert_same_everywhere(&c, Some(1)).await;
        assert_eq!(since, r.index, "the cut-over is the deploy's own index");
        c.shutdown().await;
    });
}

#[test]
fn the_leader_crashing_between_chunks_does_not_stop_the_deploy() {
    run(43, async {
        let key = OperatorKey::generate().unwrap();
        let mut c = cluster(3, &key, None).await;
        let leader = c.wait_leader(Duration::from_secs(20)).await;
        let follower = (1..=3).find(|id| *id != leader).unwrap();
        c.node(leader)
            .propose_inputs(setup_inputs(CUSTOMERS))
            .await
            .expect("setup");
        let proposer = c.node(follower).clone();
        let deploy = tokio::spawn(async move {
            proposer
                .deploy_actor(BILLING_WASM, key.sign("billing", 1, BILLING_WASM))
                .await
        });
        // Crash the leader once some chunks are staged on it, not all.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let staged = c
                .node(leader)
                .state_machine()
                .actor_state()
                .map
                .keys()
                .filter(|k| k.starts_with(b"\xffhost/actor-chunk/"))
                .count();
            if staged >= 10 {
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "no chunk staged");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        c.stop_node(leader).await;
        let r = deploy
            .await
            .unwrap()
            .expect("the deploy completes under the next leader");
        taken(&r);
        c.start_node(leader).await;
        assert_same_everywhere(&c, Some(1)).await;
        c.shutdown().await;
    });
}

#[test]
fn a_replica_that_missed_the_deploy_installs_a_snapshot_with_the_module() {
    run(47, async {
        let key = OperatorKey::generate().unwrap();
        let tuning = SnapshotTuning {
            every_entries: 20,
            keep_entries: 5,
        };
        let mut c = cluster(3, &key, Some(tuning)).await;
        let leader = c.wait_leader(Duration::from_secs(20)).await;
        let lagging = (1..=3).find(|id| *id != leader).unwrap();
        c.stop_node(lagging).await;
        c.node(leader)
            .propose_inputs(setup_inputs(CUSTOMERS))
            .await
            .expect("setup");
        let r = c
            .node(leader)
            .deploy_actor(BILLING_WASM, key.sign("billing", 1, BILLING_WASM))
            .await
            .expect("deploys on two of three");
        taken(&r);
        for round in 1..=60 {
            c.node(leader)
                .propose_inputs(field_batch(round, 30, CUSTOMERS, leader))
                .await
                .expect("commits");
        }
        let deadline =
            tokio::time::Instant::now() + ghatta::node::snapshots::SNAPSHOT_POLL_INTERVAL * 10;
        loop {
            let purged = c.node(leader).raft().metrics().borrow_watched().purged;
            if purged.is_some_and(|p| p.index > r.index) {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "leader purged only {purged:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        c.start_node(lagging).await;
        assert_same_everywhere(&c, Some(1)).await;
        // And it runs the deployed module from there on, alike.
        for round in 61..=70 {
            c.node(lagging)
                .propose_inputs(field_batch(round, 30, CUSTOMERS, lagging))
                .await
                .expect("commits");
        }
        assert_same_everywhere(&c, Some(1)).await;
        c.shutdown().await;
    });
}
