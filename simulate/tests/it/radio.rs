//! Serial radio links end to end: three nodes on real pseudo-terminals, opened by path like a
//! modem, joined by a user-space radio channel (800 ms RTT, 9,600 bit/s shared, loss,
//! corruption, garbage); and several links per node (TCP preferred, radio on failover).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use ghatta::net::LinkProfile;
use ghatta::net::radio::link::RadioStatsSnapshot;
use ghatta::net::radio::serial::{RadioConfig, SerialTransport};
use ghatta::net::transport::inbound_queue;
use ghatta::node::{Node, NodeBuilder, Role};
use ghatta::raft::PeerInfo;
use ghatta::raft::timing::Timing;
use ghatta_simulate::emulator::radio::{ChannelConfig, RadioChannel};

use crate::harness::{run, setup_inputs};

/// The hostile channel at `bitrate_bps`, shared by all nodes: 800 ms RTT on average
/// (each packet 200-600 ms one way after its air time, the +/-50 % of the radio profile's
/// design, as `sim/scenarios/radio-800ms.toml`), 5 % loss, 5 % corruption and 5 % garbage
/// bursts per reception.
fn hostile(seed: u64, bitrate_bps: u64) -> ChannelConfig {
    ChannelConfig {
        one_way: Duration::from_millis(200),
        jitter: Duration::from_millis(400),
        bitrate_bps,
        loss: 0.05,
        corrupt: 0.05,
        garbage: 0.05,
        seed,
    }
}

/// Raft timing for the hostile channel: the radio profile as shipped (`raft/timing.rs`).
fn serial_timing() -> Timing {
    Timing::for_profile(LinkProfile::Radio)
}

fn radio_cfg(device: &str, me: u64, n: u64, baud: u32) -> RadioConfig {
    RadioConfig {
        device: device.into(),
        baud,
        air_bitrate: u64::from(baud),
        mtu: 100,
        peers: (1..=n).filter(|&p| p != me).collect(),
        rtt_ms: None,
    }
}

async fn start_node(
    id: u64,
    dir: &std::path::Path,
    transport: Arc<dyn ghatta::net::transport::Transport>,
    rx: ghatta::net::transport::InboundRx,
) -> Node {
    let stores = ghatta::storage::open_dir(&dir.join(format!("node-{id}"))).expect("stores");
    NodeBuilder::new(id, "radio")
        .timing(serial_timing())
        .seed(id * 7_919)
        .start(stores, transport, rx)
        .await
        .expect("node starts")
}

async fn wait_leader(nodes: &BTreeMap<u64, Node>, timeout: Duration) -> u64 {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let leaders: Vec<u64> = nodes
            .values()
            .filter(|n| n.status().role == Role::Leader)
            .map(|n| n.id())
            .collect();
        if let [l] = leaders[..]
            && nodes.values().all(|n| n.status().leader == Some(l))
        {
            return l;
        }
        let s: Vec<_> = nodes
            .values()
            .map(|n| (n.id(), n.status().role, n.status().term))
            .collect();
        assert!(
            tokio::time::Instant::now() < deadline,
            "no leader within {timeout:?}: {s:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn wait_converged(nodes: &BTreeMap<u64, Node>, timeout: Duration) -> BTreeMap<u64, String> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let s: Vec<_> = nodes.values().map(|n| n.status()).collect();
        let max = s.iter().map(|x| x.commit_index).max().unwrap_or(0);
        if s.iter().all(|x| x.applied_index == max) {
            return s.iter().map(|x| (x.id, x.state_hash.clone())).collect();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not converged: {:?}",
            s.iter()
                .map(|x| (x.id, x.commit_index, x.applied_index))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn total(stats: &[RadioStatsSnapshot], f: impl Fn(&RadioStatsSnapshot) -> u64) -> u64 {
    stats.iter().map(f).sum()
}

/// Leader loss to the next commit (forwarded from a survivor) that the pty tests hold to, at
/// either rate. The issue-5 goal is 10 s (BENCHMARKS.md, "Radio at 800 ms RTT"), about the
/// median in the simulator's 20 trials a seed, whose slowest trials took 18-35 s (a lost
/// pre-vote or first append waits out a timeout). On the ptys at 57,600 bit/s one run in ten
/// took 40.7 s (new leader after 12.5 s, then 28 s to commit the forwarded proposal; not
/// traced, BENCHMARKS.md, "Radio links on pseudo-terminals"), so one real-time trial on a CI
/// box that runs other tests beside it is held to 60 s: a cluster that does not fail over
/// at all. What the issue saw, vote rounds lost to their own deadline, shows as terms: see
/// [`TERMS_PER_FAILOVER_MAX`].
const FAILOVER_BOUND: Duration = Duration::from_secs(60);
/// Terms one leader loss may take: one election, and one more for a vote round lost to the
/// channel's loss after its pre-vote succeeded. The failover went from term 1 to 5:
/// votes cut at 1.35 s against the round trip with its jitter.
const TERMS_PER_FAILOVER_MAX: u64 = 2;

#[test]
fn serial_only_cluster_on_ptys_at_9600_commits_fails_over_and_never_accepts_corruption() {
    serial_only_cluster(51, 9_600);
}

/// The channel: at 57,600 bit/s vote requests timed out after 1.35 s (3/4 of the
/// 1.8 s election timeout) against the round trip with its jitter, and terms went 1 -> 5
/// before a leader held (20-24 s from leader loss to the next commit).
#[test]
fn serial_only_cluster_on_ptys_at_57600_fails_over_within_the_bound() {
    serial_only_cluster(53, 57_600);
}

fn serial_only_cluster(seed: u64, baud: u32) {
    run(seed, async {
        let tmp = tempfile::tempdir().expect("tempdir");
        // Three pty pairs. The node side is opened again by its path, as a modem would be,
        // through the same code `ghatta run` uses for `[[radio]] device`.
        let mut masters = Vec::new();
        let mut devices = Vec::new();
        for _ in 0..3 {
            let (master, slave) = tokio_serial::SerialStream::pair().expect("pty pair");
            use tokio_serial::SerialPort;
            devices.push(slave.name().expect("pty path"));
            drop(slave);
            masters.push(master);
        }
        let mut nodes = BTreeMap::new();
        let mut radios = BTreeMap::new();
        for id in 1..=3u64 {
            let (tx, rx) = inbound_queue();
            let cfg = radio_cfg(&devices[id as usize - 1], id, 3, baud);
            let radio = SerialTransport::open(id, &cfg, tx).expect("open the pty by path");
            let node = start_node(id, tmp.path(), radio.clone(), rx).await;
            radios.insert(id, radio);
            nodes.insert(id, node);
        }
        let channel = RadioChannel::start(masters, hostile(seed, u64::from(baud)));
        let members: BTreeMap<u64, PeerInfo> = (1..=3)
            .map(|id| {
                (
                    id,
                    PeerInfo {
                        addr: format!("radio:{id}"),
                    },
                )
            })
            .collect();
        for n in nodes.values() {
            n.initialize(members.clone()).await.expect("initialize");
        }

        let started = tokio::time::Instant::now();
        let leader = wait_leader(&nodes, Duration::from_secs(90)).await;
        let elected_in = started.elapsed();
        let t = tokio::time::Instant::now();
        let r = match nodes[&leader].propose_inputs(setup_inputs(2)).await {
            Ok(r) => r,
            Err(e) => {
                let st: Vec<_> = nodes
                    .values()
                    .map(|n| {
                        let s = n.status();
                        (s.id, s.role, s.term, s.commit_index, s.leader)
                    })
                    .collect();
                let rs: Vec<_> = radios.values().map(|r| r.stats().snapshot()).collect();
                let ch = &channel.stats;
                let load =
                    |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
                panic!(
                    "a proposal does not commit over the radio: {e}; nodes {st:?}; channel {} packets {} bytes {} lost {} overflow; radios {rs:?}",
                    load(&ch.packets),
                    load(&ch.bytes),
                    load(&ch.lost),
                    load(&ch.overflow)
                );
            }
        };
        assert_eq!(r.trapped, 0);
        let first_commit = t.elapsed();

        // Lose the leader: its node stops and its port closes.
        let term_before = nodes[&leader].status().term;
        let old = nodes.remove(&leader).expect("leader");
        old.shutdown().await;
        let lost_at = tokio::time::Instant::now();
        // Re-election over this channel with the radio profile takes seconds
        // (`ghatta-sim radio-measure`; BENCHMARKS.md, "Radio at 800 ms RTT"). The bound is
        // about 10x the slowest measured: the channel
        // emulator and the nodes run in real time, and on a CI box running the simulator
        // tests beside this one a starved emulator stretches every round trip.
        let new_leader = wait_leader(&nodes, Duration::from_secs(120)).await;
        let reelected_in = lost_at.elapsed();
        assert_ne!(new_leader, leader);
        let follower = *nodes
            .keys()
            .find(|&&id| id != new_leader)
            .expect("survivor");
        // Forwarded from the follower: two hops over the radio.
        let r = nodes[&follower]
            .propose_inputs(setup_inputs(3))
            .await
            .expect("the new leader commits");
        assert_eq!(r.trapped, 0);
        let loss_to_commit = lost_at.elapsed();
        let terms: Vec<u64> = nodes.values().map(|n| n.status().term).collect();

        let hashes = wait_converged(&nodes, Duration::from_secs(60)).await;
        let distinct: BTreeSet<_> = hashes.values().collect();
        assert_eq!(distinct.len(), 1, "state hashes differ: {hashes:?}");

        let stats: Vec<RadioStatsSnapshot> =
            radios.values().map(|r| r.stats().snapshot()).collect();
        let ch = &channel.stats;
        let load = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
        eprintln!(
            "{baud} bit/s: elected in {elected_in:?}, first commit {first_commit:?}, leader loss to new leader {reelected_in:?}, to commit {loss_to_commit:?}, terms after {terms:?}; \
             channel: {} packets {} bytes, {} lost, {} corrupted, {} garbage, {} overflow; radios: {stats:?}",
            load(&ch.packets),
            load(&ch.bytes),
            load(&ch.lost),
            load(&ch.corrupted),
            load(&ch.garbage),
            load(&ch.overflow)
        );
        assert!(
            loss_to_commit <= FAILOVER_BOUND,
            "{baud} bit/s: leader loss to the next commit took {loss_to_commit:?} (new leader after {reelected_in:?}, terms {terms:?}); bound {FAILOVER_BOUND:?}"
        );
        assert!(
            terms
                .iter()
                .all(|&t| t <= term_before + TERMS_PER_FAILOVER_MAX),
            "{baud} bit/s: terms {terms:?} after a leader of term {term_before} was lost"
        );
        // The channel really was hostile, and the link layer caught every corruption: CRC
        // rejections at the packet layer, and not one bad frame reaching the frame layer
        // above it (whose own CRC would have counted it as rejected).
        assert!(load(&ch.corrupted) > 0 && load(&ch.lost) > 0 && load(&ch.garbage) > 0);
        assert!(total(&stats, |s| s.crc_rejected) > 0, "{stats:?}");
        assert!(
            total(&stats, |s| s.malformed) > 0,
            "garbage was seen: {stats:?}"
        );
        for n in nodes.values() {
            assert_eq!(
                n.status().link.rejected,
                0,
                "node {} accepted a bad frame",
                n.id()
            );
        }
        // Three nodes on one channel: each hears packets meant for the others.
        assert!(total(&stats, |s| s.not_for_us) > 0);
        for n in nodes.into_values() {
            n.shutdown().await;
        }
    });
}

/// A link that can be cut (Wi-Fi dropping) and restored.
struct Gate {
    inner: Arc<dyn ghatta::net::transport::Transport>,
    up: Arc<std::sync::atomic::AtomicBool>,
}

impl ghatta::net::transport::Transport for Gate {
    fn send(&self, to: u64, frame: Vec<u8>) {
        if self.up.load(std::sync::atomic::Ordering::Relaxed) {
            self.inner.send(to, frame);
        }
    }
    fn set_peer_addr(&self, peer: u64, addr: &str) {
        self.inner.set_peer_addr(peer, addr);
    }
    fn shutdown(&self) {
        self.inner.shutdown();
    }
}

async fn wait_path(
    multis: &BTreeMap<u64, Arc<ghatta::net::radio::multi::MultiTransport>>,
    from: u64,
    path: &str,
    timeout: Duration,
) {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let now: Vec<_> = multis
            .keys()
            .filter(|&&p| p != from)
            .map(|&p| multis[&from].current_path(p))
            .collect();
        if now.iter().all(|p| p.as_deref() == Some(path)) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "node {from} still on {now:?}, not {path}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[test]
fn multi_path_prefers_tcp_fails_over_to_the_radio_and_switches_back() {
    use ghatta::net::radio::multi::{MultiConfig, MultiTransport, Path};
    run(52, async {
        let tmp = tempfile::tempdir().expect("tempdir");
        let wifi_up = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let mut listeners = BTreeMap::new();
        let mut addrs = BTreeMap::new();
        for id in 1..=3u64 {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            addrs.insert(id, l.local_addr().expect("addr").to_string());
            listeners.insert(id, l);
        }
        // A clean, fast radio channel: this test is about path choice, not about loss.
        let mut channel_ends = Vec::new();
        let mut multis = BTreeMap::new();
        let mut nodes = BTreeMap::new();
        for id in 1..=3u64 {
            let (tcp_tx, tcp_rx) = inbound_queue();
            let tcp = ghatta::net::tcp::TcpTransport::start(listeners.remove(&id).unwrap(), tcp_tx);
            let (radio_tx, radio_rx) = inbound_queue();
            let (node_end, channel_end) = tokio::io::duplex(4_096);
            channel_ends.push(channel_end);
            let mut cfg = radio_cfg("duplex", id, 3, 115_200);
            cfg.air_bitrate = 64_000;
            cfg.rtt_ms = Some(100);
            let radio = SerialTransport::start(id, &cfg, node_end, radio_tx);
            let (tx, rx) = inbound_queue();
            let multi = MultiTransport::start(
                id,
                MultiConfig {
                    fresh: Duration::from_secs(1),
                    probe_interval: Duration::from_millis(500),
                    // Unsealed links here: only the claimed sender is there to go by.
                    verified: false,
                },
                vec![
                    Path {
                        name: "tcp".into(),
                        transport: Arc::new(Gate {
                            inner: tcp,
                            up: wifi_up.clone(),
                        }),
                        reaches: None,
                        inbound: tcp_rx,
                    },
                    Path {
                        name: "radio".into(),
                        transport: radio,
                        reaches: Some(cfg.peers.iter().copied().collect()),
                        inbound: radio_rx,
                    },
                ],
                tx,
            );
            for (&p, a) in &addrs {
                if p != id {
                    ghatta::net::transport::Transport::set_peer_addr(&*multi, p, a);
                }
            }
            let stores =
                ghatta::storage::open_dir(&tmp.path().join(format!("n{id}"))).expect("stores");
            let node = NodeBuilder::new(id, "multi")
                .timing(Timing::for_profile(LinkProfile::Wifi))
                .seed(id * 31)
                .start(stores, multi.clone(), rx)
                .await
                .expect("node starts");
            multis.insert(id, multi);
            nodes.insert(id, node);
        }
        let _channel = RadioChannel::start(
            channel_ends,
            ChannelConfig {
                one_way: Duration::from_millis(20),
                jitter: Duration::ZERO,
                bitrate_bps: 64_000,
                loss: 0.0,
                corrupt: 0.0,
                garbage: 0.0,
                seed: 52,
            },
        );
        let members: BTreeMap<u64, PeerInfo> = addrs
            .iter()
            .map(|(&id, a)| (id, PeerInfo { addr: a.clone() }))
            .collect();
        for n in nodes.values() {
            n.initialize(members.clone()).await.expect("initialize");
        }

        // Wi-Fi up: the leader reaches both followers over TCP.
        let leader = wait_leader(&nodes, Duration::from_secs(30)).await;
        nodes[&leader]
            .propose_inputs(setup_inputs(2))
            .await
            .expect("commit over TCP");
        wait_path(&multis, leader, "tcp", Duration::from_secs(10)).await;
        let radio_before = multis[&leader].path_stats()[1].frames_sent;

        // Wi-Fi drops: the cluster keeps committing over the radio.
        wifi_up.store(false, std::sync::atomic::Ordering::Relaxed);
        let t = tokio::time::Instant::now();
        let leader = wait_leader(&nodes, Duration::from_secs(30)).await;
        nodes[&leader]
            .propose_inputs(setup_inputs(3))
            .await
            .expect("commit over the radio");
        wait_path(&multis, leader, "radio", Duration::from_secs(10)).await;
        eprintln!(
            "failover to radio: committed {:?} after Wi-Fi dropped",
            t.elapsed()
        );
        let radio_after = multis[&leader].path_stats()[1].frames_sent;
        assert!(
            radio_after > radio_before,
            "{radio_before} -> {radio_after}"
        );

        // Wi-Fi returns: probes find it and traffic moves back.
        wifi_up.store(true, std::sync::atomic::Ordering::Relaxed);
        let t = tokio::time::Instant::now();
        wait_path(&multis, leader, "tcp", Duration::from_secs(15)).await;
        eprintln!(
            "switched back to TCP {:?} after Wi-Fi returned",
            t.elapsed()
        );
        nodes[&leader]
            .propose_inputs(setup_inputs(4))
            .await
            .expect("commit over TCP again");
        let hashes = wait_converged(&nodes, Duration::from_secs(30)).await;
        let distinct: BTreeSet<_> = hashes.values().collect();
        assert_eq!(distinct.len(), 1, "{hashes:?}");
        let stats = multis[&leader].path_stats();
        eprintln!("leader's paths: {stats:?}");
        assert!(
            stats[0].switches_to >= 2 && stats[1].switches_to >= 1,
            "{stats:?}"
        );
        assert!(stats[0].probes > 0, "{stats:?}");
        for n in nodes.into_values() {
            n.shutdown().await;
        }
    });
}
