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
use ghatta::admin::client;

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

/// A 3-node cluster with billing's set-up committed: (key, cluster, leader, a follower).
async fn set_up() -> (OperatorKey, Cluster, u64, u64) {
    let key = OperatorKey::generate().unwrap();
    let c = cluster(3, &key, None).await;
    let leader = c.wait_leader(Duration::from_secs(20)).await;
    let follower = (1..=3).find(|id| *id != leader).unwrap();
    c.node(leader)
        .propose_inputs(setup_inputs(CUSTOMERS))
        .await
        .expect("setup");
    (key, c, leader, follower)
}

fn taken(r: &Receipt) {
    assert_eq!((r.handled, r.rejected), (1, 0), "{r:?}");
}

#[test]
fn a_deploy_under_load_cuts_over_at_one_index_on_every_node() {
    run(41, async {
        let (key, c, leader, follower) = set_up().await;
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
        // The third actor, shipped only by deployment, joins while the load runs.
        let dr = std::fs::read(ghatta::actors::embedded::DEMAND_RESPONSE_WASM_PATH).unwrap();
        let r_dr = c
            .node(leader)
            .deploy_actor(&dr, key.sign("demand-response", 1, &dr))
            .await
            .expect("the deploy entry commits");
        taken(&r_dr);
        let rounds = load.await.unwrap();
        assert!(rounds > 400);
        let since = assert_same_everywhere(&c, Some(1)).await;
        assert_eq!(since, r.index, "the cut-over is the deploy's own index");
        for n in c.nodes.values() {
            let m = n.state_machine().actor_modules();
            let (_, reg) = m
                .actors
                .iter()
                .find(|(k, _)| *k == ActorKind::DemandResponse)
                .unwrap();
            assert_eq!((reg.active, reg.active_since_index), (Some(1), r_dr.index));
        }
        c.shutdown().await;
    });
}

#[test]
fn the_leader_crashing_between_chunks_does_not_stop_the_deploy() {
    run(43, async {
        let (key, mut c, leader, follower) = set_up().await;
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

/// The operator's path end to end: `ghatta actor keygen`, `deploy` (refused when signed by an
/// unlisted key, or not above the active version, with exit status 1 and the reason), `list
/// --json`, `rollback`, and `ghatta actor --help` naming the commands.
#[test]
fn the_cli_deploys_lists_and_rolls_back_an_actor() {
    let tmp = tempfile::tempdir().unwrap();
    let ghatta = crate::harness::workspace_bin("ghatta");
    let help = std::process::Command::new(&ghatta)
        .args(["actor", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    for cmd in ["deploy", "list", "rollback", "keygen"] {
        assert!(help.contains(cmd), "{help}");
    }
    let keygen = |dir: &std::path::Path| {
        let out = std::process::Command::new(&ghatta)
            .args(["actor", "keygen", "--out"])
            .arg(dir)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        let text = std::fs::read_to_string(dir.join("operator.pub")).unwrap();
        text.lines()
            .find(|l| !l.starts_with('#'))
            .unwrap()
            .to_string()
    };
    let operator = keygen(&tmp.path().join("operator"));
    keygen(&tmp.path().join("stranger"));
    run(67, async move {
        let raft = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().to_string()
        };
        let toml = format!(
            "id = 1\ndata_dir = \"{}\"\nraft_listen = \"{raft}\"\nadmin_listen = \"127.0.0.1:0\"\nbootstrap = true\nallow_unsealed = true\nactor_signers = [\"{operator}\"]\npeers = [{{ id = 1, addr = \"{raft}\" }}]\n[board]\nkind = \"sim\"\ncustomers = 5\n",
            tmp.path().join("data").display(),
        );
        let cfg = ghatta::config::NodeConfig::parse(&toml, "node.toml").expect("config");
        let running = ghatta::runner::start(&cfg, Arc::new(ghatta::clock::SystemClock), 7)
            .await
            .expect("node starts");
        let admin = running.admin_addr.to_string();
        let token_file = cfg.data_dir.join(ghatta::admin::auth::TOKEN_FILE);
        let cli = |args: Vec<String>| {
            let (ghatta, admin, token_file) = (ghatta.clone(), admin.clone(), token_file.clone());
            async move {
                tokio::task::spawn_blocking(move || {
                    std::process::Command::new(ghatta)
                        .args(&args)
                        .arg("--admin")
                        .arg(admin)
                        .args(
                            (args[1] != "list")
                                .then(|| ["--token-file".into(), token_file.display().to_string()])
                                .into_iter()
                                .flatten(),
                        )
                        .output()
                        .unwrap()
                })
                .await
                .unwrap()
            }
        };
        let wasm = ghatta::actors::embedded::DEMAND_RESPONSE_WASM_PATH.to_string();
        let deploy = |key: &str, version: &str| {
            [
                "actor",
                "deploy",
                "--name",
                "demand-response",
                "--wasm",
                &wasm,
                "--version",
                version,
                "--sign-key",
            ]
            .iter()
            .map(|s| s.to_string())
            .chain([tmp
                .path()
                .join(key)
                .join("operator.key")
                .display()
                .to_string()])
            .collect::<Vec<String>>()
        };
        let out = cli(deploy("stranger", "1")).await;
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains("not in the replicated actor signer list"),
            "{err}"
        );
        for version in ["1", "2"] {
            let out = cli(deploy("operator", version)).await;
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let out = cli(deploy("operator", "2")).await;
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains("not above v2"),
            "{err}"
        );
        let list = |out: std::process::Output| -> serde_json::Value {
            assert!(out.status.success(), "{out:?}");
            serde_json::from_slice(&out.stdout).unwrap()
        };
        let dr = |v: &serde_json::Value| v["actors"][2].clone();
        let rollback: Vec<String> = ["actor", "rollback", "--name", "demand-response"]
            .map(String::from)
            .to_vec();
        let l = list(cli(vec!["actor".into(), "list".into(), "--json".into()]).await);
        assert_eq!(dr(&l)["name"], "demand-response");
        assert_eq!(dr(&l)["version"], 2);
        assert_eq!(dr(&l)["signer"], operator.as_str());
        assert_eq!(l["local_signers_match"], true);
        let out = cli(rollback.clone()).await;
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let l = list(cli(vec!["actor".into(), "list".into(), "--json".into()]).await);
        assert_eq!(dr(&l)["version"], 1);
        assert_eq!(dr(&l)["versions"].as_array().unwrap().len(), 2);
        // A deploy for an hour of log time from now is checked and scheduled; a rollback
        // cancels it.
        let mut later = deploy("operator", "3");
        later.extend(["--at-log-time".to_string(), "+1h".to_string()]);
        let out = cli(later).await;
        let said = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && said.contains("cuts over at log time"),
            "{out:?}"
        );
        let l = list(cli(vec!["actor".into(), "list".into(), "--json".into()]).await);
        assert_eq!(
            (dr(&l)["version"].clone(), dr(&l)["scheduled"][0].clone()),
            (1.into(), 3.into())
        );
        let out = cli(rollback.clone()).await;
        assert!(out.status.success(), "{out:?}");
        let l = list(cli(vec!["actor".into(), "list".into(), "--json".into()]).await);
        assert_eq!(
            (dr(&l)["version"].clone(), dr(&l)["scheduled"].clone()),
            (1.into(), serde_json::Value::Null)
        );
        // The refusals are in the event log.
        let events = client::call(&admin, "GET", "/events?limit=20", None)
            .await
            .unwrap();
        assert!(
            events
                .to_string()
                .contains("not in the replicated actor signer list"),
            "{events}"
        );
        running.stop().await;
    });
}

/// The numbers BENCHMARKS.md quotes ("Deploying an actor"): on an idle 3-node loopback
/// cluster, from `deploy_actor` on a follower until every node runs the new module, and the
/// bytes all nodes sent meanwhile per KiB of module (the follower's forwards, the leader's
/// appends to two followers, acks and heartbeats). Fails if a deploy costs more than
/// `BYTES_PER_MODULE_KIB_MAX` (a chunking or encoding regression).
#[test]
fn deploy_time_and_bytes_per_module_kib_on_loopback() {
    /// Each module byte crosses the wire three times (forward, two appends) plus framing and
    /// acks: about 3.5 KiB per KiB; twice that is a regression.
    const BYTES_PER_MODULE_KIB_MAX: u64 = 7 * 1024;
    run(53, async {
        let key = OperatorKey::generate().unwrap();
        let c = cluster(3, &key, None).await;
        let leader = c.wait_leader(Duration::from_secs(20)).await;
        let follower = (1..=3).find(|id| *id != leader).unwrap();
        c.node(leader)
            .seed_actor_signers()
            .await
            .expect("signers seeded");
        let dr = std::fs::read(ghatta::actors::embedded::DEMAND_RESPONSE_WASM_PATH).unwrap();
        for (name, module) in [("billing", BILLING_WASM.to_vec()), ("demand-response", dr)] {
            c.wait_converged(Duration::from_secs(20)).await;
            let kind = ActorKind::by_name(name).unwrap();
            let sent =
                |c: &Cluster| -> u64 { c.nodes.values().map(|n| n.status().link.bytes_sent).sum() };
            let before = sent(&c);
            let t0 = std::time::Instant::now();
            let r = c
                .node(follower)
                .deploy_actor(&module, key.sign(name, 1, &module))
                .await
                .expect("deploys");
            taken(&r);
            let applied = t0.elapsed();
            loop {
                let everywhere = c.nodes.values().all(|n| {
                    n.state_machine()
                        .actor_modules()
                        .actors
                        .iter()
                        .any(|(k, reg)| *k == kind && reg.active == Some(1))
                });
                if everywhere {
                    break;
                }
                assert!(
                    t0.elapsed() < Duration::from_secs(30),
                    "not active everywhere"
                );
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            let everywhere = t0.elapsed();
            let bytes = sent(&c) - before;
            let per_kib = bytes * 1024 / module.len() as u64;
            println!(
                "BENCH deploy {name}: {} bytes, {} chunk entries; active on the proposer after {:.0} ms, on every node after {:.0} ms; {bytes} bytes sent by all nodes, {per_kib} bytes per KiB of module",
                module.len(),
                module
                    .len()
                    .div_ceil(ghatta::actors::deploy::CHUNK_BYTES_MAX),
                applied.as_secs_f64() * 1e3,
                everywhere.as_secs_f64() * 1e3,
            );
            assert!(
                per_kib < BYTES_PER_MODULE_KIB_MAX,
                "{per_kib} bytes per KiB"
            );
        }
        c.shutdown().await;
    });
}
