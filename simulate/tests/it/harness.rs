//! An in-process cluster over real TCP on 127.0.0.1, with real redb files, for the tests.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ghatta::actors::{ActorHost, ActorLimits};
use ghatta::net::tcp::TcpTransport;
use ghatta::net::transport::{Transport, inbound_queue};
use ghatta::node::{Node, NodeBuilder, Role, SnapshotTuning};
use ghatta::observe::{NodeObserver, TestFaults};
use ghatta::raft::PeerInfo;
use ghatta_actor_sdk as sdk;

/// A binary of this workspace (`ghatta`, `ghatta-central`), built beside this test: `cargo
/// test --workspace` builds every package's binaries before it runs a test.
pub fn workspace_bin(name: &str) -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("the test binary knows its path");
    // target/<profile>/deps/it-<hash> -> target/<profile>/<name>
    let dir = exe
        .parent()
        .and_then(std::path::Path::parent)
        .expect("the test binary lives in target/<profile>/deps");
    let bin = dir.join(name);
    assert!(
        bin.exists(),
        "{} is not built; run `cargo test --workspace` (or `cargo build -p {name}` first)",
        bin.display()
    );
    bin
}

/// Run an async test body on a multi-threaded runtime inside openraft's seeded scope.
pub fn run<F: std::future::Future<Output = ()>>(seed: u64, f: F) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(ghatta::raft::Runtime::scope(seed, f));
}

/// Makes the actor host each node starts with (fresh per start: cold caches).
pub type HostFactory = Arc<dyn Fn() -> ActorHost + Send + Sync>;

/// A cluster of nodes in this process.
pub struct Cluster {
    pub tmp: tempfile::TempDir,
    pub peers: BTreeMap<u64, PeerInfo>,
    pub nodes: BTreeMap<u64, Node>,
    pub host: HostFactory,
    pub snapshot: Option<SnapshotTuning>,
    pub observer: Option<Arc<dyn NodeObserver>>,
    /// Test switches per node (default: none).
    pub faults: BTreeMap<u64, Arc<TestFaults>>,
    /// Every node's node.toml `actor_signers` (default: none).
    pub actor_signers: Vec<ghatta::actors::deploy::SignerKey>,
}

fn free_addr() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    format!("127.0.0.1:{}", l.local_addr().expect("addr").port())
}

impl Cluster {
    /// `n` founding members with the embedded actors.
    pub async fn start(n: u64) -> Cluster {
        Self::start_with(
            n,
            Arc::new(|| ActorHost::with_embedded(ActorLimits::default()).expect("embedded actors")),
            None,
        )
        .await
    }

    /// `n` founding members with a given host factory and snapshot tuning.
    pub async fn start_with(
        n: u64,
        host: HostFactory,
        snapshot: Option<SnapshotTuning>,
    ) -> Cluster {
        Cluster::empty(n, host, snapshot).start_all().await
    }

    /// Starts and initialises every member of [`Cluster::empty`] (after setting `faults`).
    pub async fn start_all(mut self) -> Cluster {
        let ids: Vec<u64> = self.peers.keys().copied().collect();
        for id in ids {
            self.start_node(id).await;
        }
        let members = self.peers.clone();
        for node in self.nodes.values() {
            node.initialize(members.clone()).await.expect("initialize");
        }
        self
    }

    /// The cluster's directories and addresses, with no node running yet.
    pub fn empty(n: u64, host: HostFactory, snapshot: Option<SnapshotTuning>) -> Cluster {
        let peers = (1..=n)
            .map(|id| (id, PeerInfo { addr: free_addr() }))
            .collect();
        Cluster {
            tmp: tempfile::tempdir().expect("tempdir"),
            peers,
            nodes: BTreeMap::new(),
            host,
            snapshot,
            observer: None,
            faults: BTreeMap::new(),
            actor_signers: Vec::new(),
        }
    }

    pub fn dir(&self, id: u64) -> PathBuf {
        self.tmp.path().join(format!("node-{id}"))
    }

    /// Start (or restart) node `id` from its data directory.
    pub async fn start_node(&mut self, id: u64) {
        let addr = self
            .peers
            .entry(id)
            .or_insert_with(|| PeerInfo { addr: free_addr() })
            .addr
            .clone();
        // The previous incarnation may still be releasing its files and port.
        let mut tries = 0;
        let (stores, listener) = loop {
            let stores = ghatta::storage::open_dir(&self.dir(id));
            let listener = tokio::net::TcpListener::bind(&addr).await;
            match (stores, listener) {
                (Ok(s), Ok(l)) => break (s, l),
                (s, l) if tries > 100 => {
                    panic!("node {id} cannot restart: {:?} / {:?}", s.err(), l.err())
                }
                _ => {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        };
        let (tx, rx) = inbound_queue();
        let transport = TcpTransport::start(listener, tx);
        for (p, info) in &self.peers {
            if *p != id {
                transport.set_peer_addr(*p, &info.addr);
            }
        }
        let node = NodeBuilder::new(id, "test")
            .seed(id * 7919)
            .snapshot(self.snapshot)
            .observer(self.observer.clone())
            .faults(self.faults.get(&id).cloned().unwrap_or_default())
            .actor_signers(self.actor_signers.clone())
            .actor_host(Arc::new((self.host)()))
            .start(stores, transport, rx)
            .await
            .expect("node starts");
        self.nodes.insert(id, node);
    }

    /// Stop node `id`, keeping its files.
    pub async fn stop_node(&mut self, id: u64) {
        if let Some(n) = self.nodes.remove(&id) {
            n.shutdown().await;
        }
    }

    pub fn node(&self, id: u64) -> &Node {
        self.nodes.get(&id).expect("node running")
    }

    /// Wait until one running node leads and the others agree; return its id.
    pub async fn wait_leader(&self, timeout: Duration) -> u64 {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let leaders: Vec<u64> = self
                .nodes
                .values()
                .filter(|n| n.status().role == Role::Leader)
                .map(|n| n.id())
                .collect();
            if let [l] = leaders[..]
                && self.nodes.values().all(|n| n.status().leader == Some(l))
            {
                return l;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no leader within {timeout:?}: {:?}",
                self.statuses()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Wait until every running node has applied the same index as the leader committed;
    /// return (applied index, state hashes by node).
    pub async fn wait_converged(&self, timeout: Duration) -> (u64, BTreeMap<u64, String>) {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let s: Vec<_> = self.nodes.values().map(|n| n.status()).collect();
            let max_commit = s.iter().map(|x| x.commit_index).max().unwrap_or(0);
            if s.iter().all(|x| x.applied_index == max_commit) {
                return (
                    max_commit,
                    s.iter().map(|x| (x.id, x.state_hash.clone())).collect(),
                );
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "not converged within {timeout:?}: {:?}",
                self.statuses()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn statuses(&self) -> Vec<(u64, Role, u64, u64, Option<u64>)> {
        self.nodes
            .values()
            .map(|n| n.status())
            .map(|s| (s.id, s.role, s.commit_index, s.applied_index, s.leader))
            .collect()
    }

    pub async fn shutdown(mut self) {
        let ids: Vec<u64> = self.nodes.keys().copied().collect();
        for id in ids {
            self.stop_node(id).await;
        }
    }
}

/// Tariff, billing config and `n` prepaid customers (ids 1..=n, on node 1), as inputs.
pub fn setup_inputs(n: u32) -> Vec<Vec<u8>> {
    let mut v = vec![
        sdk::Input::SetTariff(sdk::Tariff {
            id: 1,
            version: 1,
            kind: sdk::TariffKind::PerKwh {
                rate_paisa_per_kwh: 1_500,
            },
        }),
        sdk::Input::SetBillingConfig(sdk::BillingConfig {
            utc_offset_min: 345,
            friendly_start_min: 0,
            friendly_end_min: 0,
            disconnect_at_mpaisa: 0,
            plausible_margin_pct: 10_000,
        }),
    ];
    for id in 1..=n {
        v.push(sdk::Input::UpsertCustomer(sdk::CustomerSpec {
            id: sdk::CustomerId(id),
            node: sdk::NodeId(1),
            mode: sdk::AccountMode::Prepaid,
            tariff: 1,
            // The synthetic registers climb 1 kWh a round, rounds milliseconds of log time
            // apart: no real connection draws that. An unbounded connection keeps billing's
            // plausibility rule (tested in the billing actor's own tests) out of these.
            connection_w: u32::MAX,
            opening_credit_mpaisa: 50_000_000,
            token: None,
        }));
    }
    v.iter().map(sdk::codec::encode).collect()
}

/// A batch of `n` actor messages: meter reads (billing) and telemetry (balancing), with
/// registers growing with `round` so every read is billed.
pub fn field_batch(round: u64, n: usize, customers: u32, node: u64) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| {
            let input = if i % 10 == 0 {
                sdk::Input::Telemetry(sdk::Telemetry {
                    node: sdk::NodeId(node),
                    frequency_mhz: 49_900 + (round % 100) as u32,
                    voltage_dv: 2_300,
                    generation_w: 30_000,
                    ballast_w: 5_000,
                    ballast_capacity_w: 30_000,
                    feeders: vec![sdk::FeederLoad {
                        feeder: 1,
                        load_w: 25_000,
                        closed: true,
                    }],
                })
            } else {
                let customer = (i as u32 % customers) + 1;
                sdk::Input::MeterRead(sdk::MeterRead {
                    customer: sdk::CustomerId(customer),
                    total_wh: round * 1_000 + i as u64,
                    read_at_ms: 0,
                })
            };
            sdk::codec::encode(&input)
        })
        .collect()
}

/// Polls `f` every 200 ms until it holds; fails the test naming `what` after `timeout`.
pub async fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + timeout;
    while !f() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
