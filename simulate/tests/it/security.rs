//! Sealed links against a rogue node: a 3-node cluster over TCP with every frame sealed, and a
//! node whose key is not listed trying to vote, append, join and forward entries, plus replays
//! and bit flips of genuine frames. Everything must be dropped and counted, and the cluster's
//! leader, term and commit index must not move. And a compromised member (a stolen board
//! that keeps its valid key): what it forwards in another node's name, or that only the
//! leader may commit, is refused, counted and changes nothing.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ghatta::clock::SystemClock;
use ghatta::net::secure::{
    BootEpoch, PublicKey, SealStatsSnapshot, SealedTransport, SecretKey, SecureLink,
};
use ghatta::net::tcp::TcpTransport;
use ghatta::net::transport::{Transport, inbound_queue};
use ghatta::node::{Node, NodeBuilder, Role};
use ghatta::raft::timing::Timing;
use ghatta::raft::{Body, PeerInfo};
use ghatta::rpc::wire::{Forward, MemberOp, Request, WireBody, WireMessage};
use ghatta_proto::codec;
use ghatta_proto::frame;
use openraft::vote::RaftLeaderId;
use openraft_rt::WatchReceiver;
use serde_json::Value;
use tokio::io::AsyncWriteExt;

use crate::harness;

/// Frames each tap keeps: the election and the first appends are in the first few dozen.
const TAP_FRAMES: usize = 512;
const CLUSTER: &str = "test";

/// Records the first frames a node hands to the link below it, then passes them on.
struct Tap<T: Transport + ?Sized> {
    inner: Arc<T>,
    seen: Mutex<Vec<(u64, Vec<u8>)>>,
}

impl<T: Transport + ?Sized> Tap<T> {
    fn new(inner: Arc<T>) -> Arc<Self> {
        Arc::new(Tap {
            inner,
            seen: Mutex::new(Vec::new()),
        })
    }

    fn frames(&self) -> Vec<(u64, Vec<u8>)> {
        self.seen.lock().unwrap().clone()
    }
}

impl<T: Transport + ?Sized> Transport for Tap<T> {
    fn send(&self, to: u64, frame: Vec<u8>) {
        {
            let mut s = self.seen.lock().unwrap();
            if s.len() < TAP_FRAMES {
                s.push((to, frame.clone()));
            }
        }
        self.inner.send(to, frame);
    }
    fn set_peer_addr(&self, peer: u64, addr: &str) {
        self.inner.set_peer_addr(peer, addr);
    }
    fn shutdown(&self) {
        self.inner.shutdown();
    }
    fn security(&self) -> Option<SealStatsSnapshot> {
        self.inner.security()
    }
}

type SealedTap = SealedTransport<Tap<TcpTransport>>;

struct Member {
    node: Node,
    /// Plain frames the RPC layer sent (real wire messages).
    plain: Arc<Tap<SealedTap>>,
    /// The same frames as sealed on the link.
    sealed: Arc<Tap<TcpTransport>>,
}

fn key(id: u64) -> SecretKey {
    SecretKey::from_bytes([id as u8; 32])
}

fn free_addr() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    format!("127.0.0.1:{}", l.local_addr().expect("addr").port())
}

async fn start_member(
    id: u64,
    dir: &std::path::Path,
    peers: &BTreeMap<u64, PeerInfo>,
    keys: &[(u64, PublicKey)],
) -> Member {
    let stores = ghatta::storage::open_dir(dir).expect("stores");
    let listener = tokio::net::TcpListener::bind(&peers[&id].addr)
        .await
        .expect("listen");
    let (raw_tx, raw_rx) = inbound_queue();
    let sealed = Tap::new(TcpTransport::start(listener, raw_tx));
    let epoch = BootEpoch::advance(dir).expect("epoch");
    let link =
        Arc::new(SecureLink::new(id, CLUSTER, &key(id), keys.to_vec(), epoch).expect("keys"));
    let (sealed_t, inbound) = SealedTransport::start(sealed.clone(), raw_rx, link);
    let plain = Tap::new(sealed_t);
    for (p, info) in peers {
        if *p != id {
            plain.set_peer_addr(*p, &info.addr);
        }
    }
    let node = NodeBuilder::new(id, CLUSTER)
        .seed(id * 7919)
        .start(stores, plain.clone(), inbound)
        .await
        .expect("node starts");
    Member {
        node,
        plain,
        sealed,
    }
}

async fn wait_leader(members: &BTreeMap<u64, Member>, timeout: Duration) -> u64 {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let leaders: Vec<u64> = members
            .values()
            .filter(|m| m.node.status().role == Role::Leader)
            .map(|m| m.node.id())
            .collect();
        if let [l] = leaders[..]
            && members.values().all(|m| m.node.status().leader == Some(l))
        {
            return l;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no leader over sealed links within {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn wait_applied(members: &BTreeMap<u64, Member>, index: u64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !members
        .values()
        .all(|m| m.node.status().applied_index >= index)
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "index {index} not applied everywhere"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Three sealed members over loopback TCP, the cluster formed and five customers committed.
struct SealedCluster {
    _tmp: tempfile::TempDir,
    peers: BTreeMap<u64, PeerInfo>,
    keys: Vec<(u64, PublicKey)>,
    members: BTreeMap<u64, Member>,
    leader: u64,
}

async fn sealed_cluster() -> SealedCluster {
    let tmp = tempfile::tempdir().unwrap();
    let peers: BTreeMap<u64, PeerInfo> = (1..=3)
        .map(|id| (id, PeerInfo { addr: free_addr() }))
        .collect();
    let keys: Vec<(u64, PublicKey)> = (1..=3).map(|id| (id, key(id).public())).collect();
    let mut members = BTreeMap::new();
    for id in 1..=3 {
        let dir = tmp.path().join(format!("node-{id}"));
        members.insert(id, start_member(id, &dir, &peers, &keys).await);
    }
    for m in members.values() {
        m.node.initialize(peers.clone()).await.expect("initialize");
    }
    let leader = wait_leader(&members, Duration::from_secs(20)).await;
    let r = members[&leader]
        .node
        .propose_inputs(harness::setup_inputs(5))
        .await
        .expect("commit over sealed links");
    wait_applied(&members, r.index).await;
    SealedCluster {
        _tmp: tmp,
        peers,
        keys,
        members,
        leader,
    }
}

/// A settled sealed cluster, its leader's status, and a follower: the member that turns rogue.
async fn cluster_with_rogue() -> (SealedCluster, ghatta::node::NodeStatus, u64) {
    let cluster = sealed_cluster().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = cluster.members[&cluster.leader].node.status();
    let leader = cluster.leader;
    let rogue = *cluster
        .members
        .keys()
        .find(|&&id| id != leader)
        .expect("a follower");
    (cluster, before, rogue)
}

/// Member `from` forwards `f` to `to` through its own sealing: the frame opens under its real
/// key.
fn forward_as(members: &BTreeMap<u64, Member>, from: u64, to: u64, id: u64, f: Forward) {
    let payload = codec::encode(&WireMessage {
        id,
        body: WireBody::Request(Request::Forward(f)),
    })
    .unwrap();
    members[&from]
        .plain
        .send(to, frame::encode(from, to, &payload));
}

/// Set every `term` in a JSON image of a wire message to `term` and every `node_id` to `id`.
fn forge_json(v: &mut Value, term: u64, id: u64) {
    match v {
        Value::Object(m) => {
            for (k, x) in m.iter_mut() {
                match (k.as_str(), &x) {
                    ("term", Value::Number(_)) => *x = Value::from(term),
                    ("node_id", Value::Number(_)) => *x = Value::from(id),
                    _ => forge_json(x, term, id),
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(|x| forge_json(x, term, id)),
        _ => {}
    }
}

/// A genuine request of the wanted kind from the taps, re-made by the rogue with its own term
/// and id (through serde, so the result is exactly the real wire encoding).
fn forged_request(
    members: &BTreeMap<u64, Member>,
    want: fn(&Request) -> bool,
    term: u64,
    rogue: u64,
) -> Request {
    for m in members.values() {
        for (_, bytes) in m.plain.frames() {
            let f = frame::decode(&bytes).expect("our own plain frame");
            let msg: WireMessage = codec::decode(&f.payload).expect("our own message");
            if let WireBody::Request(r) = msg.body
                && want(&r)
            {
                let mut j = serde_json::to_value(&r).expect("to json");
                forge_json(&mut j, term, rogue);
                return serde_json::from_value(j).expect("forged request decodes");
            }
        }
    }
    panic!("no genuine request of that kind captured");
}

/// Send frames to `addr` as a TCP peer does (4-byte big-endian length, then the frame).
async fn inject(addr: &str, frames: &[Vec<u8>]) {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    for f in frames {
        s.write_all(&(f.len() as u32).to_be_bytes()).await.unwrap();
        s.write_all(f).await.unwrap();
    }
    s.flush().await.unwrap();
    // Let the reader drain before the connection closes.
    tokio::time::sleep(Duration::from_millis(200)).await;
}

fn snap(m: &Member) -> SealStatsSnapshot {
    m.node
        .status()
        .security
        .expect("sealed node reports its counters")
}

#[test]
fn a_rogue_node_over_tcp_can_neither_vote_append_join_nor_inject() {
    harness::run(51, async {
        let SealedCluster {
            _tmp,
            peers,
            keys,
            members,
            leader,
        } = sealed_cluster().await;
        // Let heartbeats settle, then take the baseline.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let before: BTreeMap<u64, _> = members
            .iter()
            .map(|(id, m)| (*id, (m.node.status(), snap(m))))
            .collect();
        let term = before[&leader].0.term;

        // The rogue: key 99, listed nowhere. It knows every member's public key (they are no
        // secret) and speaks the real wire encoding.
        let rogue_key = SecretKey::from_bytes([99; 32]);
        let vote = forged_request(&members, |r| matches!(r, Request::Vote(_)), term + 50, 4);
        let pre_vote = match &vote {
            Request::Vote(v) => Request::PreVote(v.clone()),
            _ => unreachable!(),
        };
        let append = forged_request(
            &members,
            |r| matches!(r, Request::Append(a) if !a.entries.is_empty()),
            term + 50,
            4,
        );
        let requests = [
            vote,
            pre_vote,
            append,
            Request::Member(MemberOp::AddLearner {
                id: 4,
                addr: "127.0.0.1:9".into(),
            }),
            Request::Forward(Forward {
                origin: 4,
                seq: 1,
                origin_time_ms: 0,
                body: Body::Inputs(harness::setup_inputs(1)),
            }),
        ];
        let payloads: Vec<Vec<u8>> = requests
            .iter()
            .enumerate()
            .map(|(i, r)| {
                codec::encode(&WireMessage {
                    id: 1_000 + i as u64,
                    body: WireBody::Request(r.clone()),
                })
                .unwrap()
            })
            .collect();
        let n = payloads.len() as u64;
        let mut sent: BTreeMap<u64, (u64, u64, u64, u64, u64)> = BTreeMap::new();
        for (&id, info) in &peers {
            // As node 4 (not a member), as node `other` (a member's id, the rogue's key), and
            // as plain unsealed frames.
            let other = if id == 1 { 2 } else { 1 };
            let as4 = SecureLink::new(
                4,
                CLUSTER,
                &rogue_key,
                keys.clone(),
                BootEpoch::in_memory(1),
            )
            .unwrap();
            let as_member = SecureLink::new(
                other,
                CLUSTER,
                &rogue_key,
                [(id, key(id).public())],
                BootEpoch::in_memory(9),
            )
            .unwrap();
            let mut frames = Vec::new();
            for p in &payloads {
                frames.push(as4.seal(id, p).unwrap());
                frames.push(as_member.seal(id, p).unwrap());
                frames.push(frame::encode(4, id, p));
            }
            // Replays of genuine sealed frames captured on their way to this node, and the
            // same frames with one bit flipped in the ciphertext or tag.
            let genuine: Vec<Vec<u8>> = members
                .values()
                .flat_map(|m| m.sealed.frames())
                .filter(|(to, _)| *to == id)
                .map(|(_, f)| f)
                .take(40)
                .collect();
            assert!(genuine.len() >= 10, "too few genuine frames captured");
            let mut flipped = 0;
            for (i, f) in genuine.iter().enumerate() {
                frames.push(f.clone());
                let mut g = f.clone();
                // The last 16 bytes are the tag; flip in the tag or the ciphertext before it.
                let at = g.len() - 1 - (i * 7) % 20.min(g.len() - 8);
                g[at] ^= 1 << (i % 8);
                frames.push(g);
                flipped += 1;
            }
            inject(&info.addr, &frames).await;
            sent.insert(id, (n, n, n, genuine.len() as u64, flipped));
        }
        tokio::time::sleep(Duration::from_secs(1)).await;

        for (id, m) in &members {
            let (s0, c0) = &before[id];
            let (s1, c1) = (m.node.status(), snap(m));
            let (unknown, forged_as_member, unsealed, replays, flips) = sent[id];
            assert_eq!(
                c1.unknown_sender - c0.unknown_sender,
                unknown,
                "node {id}: {c1:?}"
            );
            assert_eq!(c1.unsealed - c0.unsealed, unsealed, "node {id}: {c1:?}");
            // Flipped bits in the ciphertext fail the tag; flips in the header name another
            // epoch/counter and fail it too (the window check needs no crypto only for exact
            // replays).
            let dropped_forged = c1.forged - c0.forged;
            let dropped_replay =
                (c1.replayed - c0.replayed) + (c1.out_of_window - c0.out_of_window);
            assert_eq!(
                dropped_forged + dropped_replay,
                forged_as_member + replays + flips,
                "node {id}: {c0:?} -> {c1:?}"
            );
            assert!(dropped_forged >= forged_as_member, "node {id}: {c1:?}");
            assert!(dropped_replay >= replays, "node {id}: {c1:?}");
            // Nothing the rogue sent reached Raft.
            assert_eq!(s1.term, s0.term, "node {id}: term moved");
            assert_eq!(s1.leader, Some(leader), "node {id}: leader changed");
            assert_eq!(s1.commit_index, s0.commit_index, "node {id}: commit moved");
            assert_eq!(s1.voters, vec![1, 2, 3]);
            assert!(s1.learners.is_empty(), "node {id}: rogue joined");
            // The counters are in the admin JSON.
            let j = serde_json::to_value(&s1).unwrap();
            assert_eq!(j["security"]["unknown_sender"], c1.unknown_sender);
        }

        // The cluster still commits.
        let r = members[&leader]
            .node
            .propose_inputs(harness::setup_inputs(1))
            .await
            .expect("commit after the attack");
        wait_applied(&members, r.index).await;
        for m in members.values() {
            m.node.shutdown().await;
        }
    });
}

/// A member board that is stolen, or runs a bug, still holds a valid key: its sealed frames
/// open. Through its own sealed link it forwards, to the leader, a top-up in another node's
/// name (which would also slide that node's dedupe window over its real meter reads), a WAN
/// cursor past the end of the outbox (which would stop the upload for good and prune unsent
/// records) and a timer tick. The leader refuses each, counts it by reason, and commits
/// nothing; the cluster still commits afterwards.
#[test]
fn a_compromised_member_can_neither_forge_origins_nor_commit_the_leaders_proposals() {
    harness::run(53, async {
        let (cluster, before, rogue) = cluster_with_rogue().await;
        let SealedCluster {
            members, leader, ..
        } = &cluster;
        let (members, leader) = (members, *leader);
        let victim = *members
            .keys()
            .find(|&&id| id != leader && id != rogue)
            .expect("another follower");

        let top_up = ghatta_actor_sdk::codec::encode(&ghatta_actor_sdk::Input::TopUp(
            ghatta_actor_sdk::TopUp {
                customer: ghatta_actor_sdk::CustomerId(1),
                token_id: 77,
                amount_mpaisa: 1_000_000_000,
            },
        ));
        let forged = [
            Forward {
                origin: victim,
                seq: 1_000_000,
                origin_time_ms: 0,
                body: Body::Inputs(vec![top_up]),
            },
            Forward {
                origin: rogue,
                seq: 0,
                origin_time_ms: 0,
                body: Body::OutboxAck {
                    stream: 0,
                    upto_seq: u64::MAX,
                },
            },
            Forward {
                origin: rogue,
                seq: 0,
                origin_time_ms: 0,
                body: Body::Tick { timer_id: 1 },
            },
        ];
        for (i, f) in forged.into_iter().enumerate() {
            forward_as(members, rogue, leader, 9_000 + i as u64, f);
        }
        // Forged snapshots to another follower, through the rogue's own sealing: one under a
        // higher vote of its own, whose last log id openraft would take and whose garbage
        // image would fail the install (a fatal storage error: the victim would stop), and
        // one in the leader's name.
        let term = members[&victim]
            .node
            .raft()
            .metrics()
            .borrow_watched()
            .current_term;
        let forged_snapshot =
            |vote: ghatta::raft::Vote, id: u64| ghatta::rpc::wire::SnapshotChunk {
                vote,
                meta: ghatta::raft::SnapshotMeta {
                    last_log_id: Some(ghatta::raft::LogId::new(
                        vote.leader_id().to_committed(),
                        1_000_000,
                    )),
                    last_membership: Default::default(),
                },
                total_len: 3,
                offset: 0,
                data: vec![id as u8; 3],
            };
        let leaders_vote = members[&victim].node.raft().metrics().borrow_watched().vote;
        for (i, chunk) in [
            forged_snapshot(ghatta::raft::Vote::new_committed(term + 10, rogue), 1),
            forged_snapshot(leaders_vote, 2),
        ]
        .into_iter()
        .enumerate()
        {
            let payload = codec::encode(&WireMessage {
                id: 9_100 + i as u64,
                body: WireBody::Request(Request::Snapshot(chunk)),
            })
            .unwrap();
            members[&rogue]
                .plain
                .send(victim, frame::encode(rogue, victim, &payload));
        }
        tokio::time::sleep(Duration::from_secs(1)).await;

        let hit = members[&victim].node.status();
        assert_eq!(hit.refused.snapshot_refused, 2, "{:?}", hit.refused);
        assert_eq!(
            members[&victim]
                .node
                .raft()
                .metrics()
                .borrow_watched()
                .current_term,
            term,
            "a forged snapshot moved the victim's term"
        );

        let after = members[&leader].node.status();
        assert_eq!(after.refused.forged_origin, 1, "{:?}", after.refused);
        assert_eq!(after.refused.forwarded_outbox_ack, 1, "{:?}", after.refused);
        assert_eq!(after.refused.forwarded_tick, 1, "{:?}", after.refused);
        assert_eq!(
            after.commit_index, before.commit_index,
            "a forged proposal committed"
        );
        assert_eq!(after.state_hash, before.state_hash);
        let j = serde_json::to_value(&after).unwrap();
        assert_eq!(j["refused"]["forged_origin"], 1, "status JSON: {j}");

        // The cluster still commits, and every replica agrees.
        let r = members[&leader]
            .node
            .propose_inputs(harness::setup_inputs(1))
            .await
            .expect("commit after the attack");
        wait_applied(members, r.index).await;
        let hashes: std::collections::BTreeSet<String> = members
            .values()
            .map(|m| m.node.status().state_hash)
            .collect();
        assert_eq!(hashes.len(), 1, "{hashes:?}");
        for m in members.values() {
            m.node.shutdown().await;
        }
    });
}

/// A member that floods the leader with forwarded proposals of its own (a bug in its field
/// loop, or a stolen board) is held to its rate (`node::forward_rate`): its first burst is
/// written, the rest refused and counted (`refused.forward_rate_limited`, which `/metrics`
/// exports), and once it slows down its proposals commit again, as do everyone else's.
#[test]
fn a_member_flooding_the_leader_with_forwards_is_held_to_its_rate() {
    use ghatta::node::forward_rate::{FORWARD_BURST_TOKENS, FORWARD_TOKENS_PER_S};
    harness::run(55, async {
        let (cluster, before, rogue) = cluster_with_rogue().await;
        let SealedCluster {
            members, leader, ..
        } = &cluster;
        let (members, leader) = (members, *leader);
        let flood = 2 * FORWARD_BURST_TOKENS;
        let started = tokio::time::Instant::now();
        let own = |i: u64| Forward {
            origin: rogue,
            seq: 5_000_000 + i,
            origin_time_ms: 0,
            body: Body::Inputs(vec![]),
        };
        for i in 0..flood {
            forward_as(members, rogue, leader, 20_000 + i, own(i));
        }
        // Until every forward was answered one way or the other.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        let (refused, committed) = loop {
            let s = members[&leader].node.status();
            let refused = s.refused.forward_rate_limited;
            let committed = s.commit_index - before.commit_index;
            if refused + committed >= flood || tokio::time::Instant::now() >= deadline {
                break (refused, committed);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let elapsed_s = started.elapsed().as_secs() + 1;
        assert!(refused > 0, "nothing refused of {flood} forwards");
        assert!(
            committed <= FORWARD_BURST_TOKENS + FORWARD_TOKENS_PER_S * elapsed_s,
            "{committed} of {flood} forwards committed in {elapsed_s} s"
        );
        let j = serde_json::to_value(members[&leader].node.status()).unwrap();
        assert_eq!(
            j["refused"]["forward_rate_limited"], refused,
            "status JSON: {j}"
        );

        // The member slowed down: a second later its next forward is written again. (Not its
        // proposer's own: the flood's numbers moved its dedupe window past them.)
        tokio::time::sleep(Duration::from_secs(1)).await;
        let at = members[&leader].node.status();
        forward_as(members, rogue, leader, 20_000 + flood, own(flood));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while members[&leader].node.status().commit_index == at.commit_index {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the member's forward after the flood did not commit"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(
            members[&leader].node.status().refused.forward_rate_limited,
            refused
        );
        let r = members[&leader]
            .node
            .propose_inputs(harness::setup_inputs(1))
            .await
            .expect("commit after the flood");
        wait_applied(members, r.index).await;
        for m in members.values() {
            m.node.shutdown().await;
        }
    });
}

/// The test process's resident memory, bytes (every member runs in it).
fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS");
    kb * 1024
}

/// A TCP connection to `addr` from the loopback address `from` (the kernel routes all of
/// 127.0.0.0/8 locally), so a stranger's connections are told apart from the members'.
async fn connect_from(from: &str, addr: &str) -> Option<tokio::net::TcpStream> {
    let s = tokio::net::TcpSocket::new_v4().ok()?;
    s.bind(format!("{from}:0").parse().ok()?).ok()?;
    s.connect(addr.parse().ok()?).await.ok()
}

/// Before anything is authenticated, a stranger on the network spends next to nothing of a
/// node's: against each member of a 3-node cluster, 200 idle connections and 20 frames that
/// declare the longest length a member may send and stop half-way (1 MiB sent, then silence).
/// The process holding all three members grows by less than 16 MiB per member, and the
/// cluster keeps committing while the connections are held.
#[test]
fn a_flood_of_idle_and_half_sent_connections_costs_little_and_the_cluster_commits() {
    harness::run(54, async {
        let SealedCluster {
            _tmp,
            peers,
            keys: _,
            members,
            leader,
        } = sealed_cluster().await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let rss_before = rss_bytes();

        let mut held = Vec::new();
        let mut writers = Vec::new();
        for info in peers.values() {
            for _ in 0..200 {
                if let Some(c) = connect_from("127.0.0.2", &info.addr).await {
                    held.push(c);
                }
            }
            for _ in 0..20 {
                let Some(mut c) = connect_from("127.0.0.3", &info.addr).await else {
                    continue;
                };
                writers.push(tokio::spawn(async move {
                    let declared = ghatta::net::tcp::TCP_FRAME_BYTES_MAX as u32;
                    let _ = c.write_all(&declared.to_be_bytes()).await;
                    let _ = c.write_all(&vec![7u8; 1 << 20]).await;
                    // Hold the connection, half-sent, until the test ends.
                    tokio::time::sleep(Duration::from_secs(3_600)).await;
                    drop(c);
                }));
            }
        }
        tokio::time::sleep(Duration::from_secs(2)).await;

        // The cluster commits while the flood is held, and promptly: the strangers' frames
        // take only their own address's share of each node's read budget.
        let t0 = std::time::Instant::now();
        let r = members[&leader]
            .node
            .propose_inputs(harness::setup_inputs(1))
            .await
            .expect("commit during the flood");
        wait_applied(&members, r.index).await;
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "the commit took {:?} under the flood",
            t0.elapsed()
        );
        let grown = rss_bytes().saturating_sub(rss_before);
        assert!(
            grown < 3 * 16 * 1024 * 1024,
            "the flood grew the process by {} MiB for three members",
            grown >> 20
        );
        eprintln!("flood: resident memory grew by {} KiB", grown >> 10);
        for w in writers {
            w.abort();
        }
        drop(held);
        for m in members.values() {
            m.node.shutdown().await;
        }
    });
}

/// `ghatta keygen` through the binary, then a node started the way `ghatta run` starts one,
/// with its key: links sealed, reads open, changes refused without the admin token and
/// accepted with it (found the way the CLI finds it).
#[test]
fn keygen_then_a_sealed_run_whose_changes_need_the_admin_token() {
    use ghatta::admin::client;
    use std::process::Command;

    let tmp = tempfile::tempdir().unwrap();
    let keys = tmp.path().join("keys");
    let ghatta = harness::workspace_bin("ghatta");
    let out = Command::new(&ghatta)
        .args(["keygen", "--out"])
        .arg(&keys)
        .output()
        .expect("run ghatta keygen");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{stdout}");
    let public = stdout
        .lines()
        .find_map(|l| l.strip_prefix("public key (base64): "))
        .expect("keygen prints the public key")
        .to_string();
    let again = Command::new(&ghatta)
        .args(["keygen", "--out"])
        .arg(&keys)
        .output()
        .expect("run ghatta keygen");
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("never overwrites"));

    harness::run(52, async move {
        let raft = free_addr();
        let toml = format!(
            "id = 1\ndata_dir = \"{}\"\nraft_listen = \"{raft}\"\nadmin_listen = \"127.0.0.1:0\"\nbootstrap = true\nkey_file = \"{}\"\npeers = [{{ id = 1, addr = \"{raft}\", public_key = \"{public}\" }}]\n[board]\nkind = \"sim\"\ncustomers = 5\n",
            tmp.path().join("data").display(),
            keys.join("node.key").display(),
        );
        let cfg = ghatta::config::NodeConfig::parse(&toml, "node.toml").expect("config");
        let running = ghatta::runner::start(&cfg, Arc::new(SystemClock), 7)
            .await
            .expect("node starts with its key");
        let admin = running.admin_addr.to_string();
        let status = client::call(&admin, "GET", "/status", None)
            .await
            .expect("reads need no token");
        assert!(
            status["security"]["boot_epoch"].as_u64() >= Some(1),
            "{status}"
        );
        let body = serde_json::json!({ "customer": 1, "code": 123_456_789 });
        let e = client::call(&admin, "POST", "/topup", Some(&body))
            .await
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("(401)") && e.contains("admin.token") && e.contains("needs the admin token"),
            "{e}"
        );
        let e = client::call_with_token(&admin, "POST", "/topup", Some(&body), Some("0badc0de"))
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("wrong admin token"), "{e}");
        // As the CLI finds it: in the data directory its config names, never a path the
        // server names.
        let token =
            ghatta::admin::auth::read_token(&cfg.data_dir.join(ghatta::admin::auth::TOKEN_FILE))
                .expect("the CLI finds and reads the token");
        // Carried out: committed, and answered with the billing actor's verdict (customer 1
        // was never created on this node).
        let e = client::call_with_token(&admin, "POST", "/topup", Some(&body), Some(&token))
            .await
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("(422)")
                && e.contains("committed at index")
                && e.contains("unknown customer"),
            "{e}"
        );
        running.stop().await;
    });
}

/// A clean shared radio channel: the test is about sealing, not about loss (the radio tests
/// cover that); 115,200 bit/s and 20 ms each way keep it to seconds.
fn clean_channel() -> ghatta_simulate::emulator::radio::ChannelConfig {
    ghatta_simulate::emulator::radio::ChannelConfig {
        one_way: Duration::from_millis(20),
        jitter: Duration::ZERO,
        bitrate_bps: 115_200,
        loss: 0.0,
        corrupt: 0.0,
        garbage: 0.0,
        seed: 53,
    }
}

fn serial_cfg(device: &str, me: u64, peers: &[u64]) -> ghatta::net::radio::serial::RadioConfig {
    ghatta::net::radio::serial::RadioConfig {
        device: device.into(),
        baud: 115_200,
        air_bitrate: 115_200,
        mtu: 100,
        peers: peers.iter().copied().filter(|&p| p != me).collect(),
        rtt_ms: Some(200),
    }
}

/// The same attack over a serial radio: three sealed nodes and a rogue radio (node id 4, key
/// outside the membership) on one shared channel between pseudo-terminals. The rogue's link
/// layer delivers its frames (a radio channel is open to anyone); sealing drops them.
#[test]
fn a_rogue_radio_on_a_pty_can_neither_vote_append_nor_inject() {
    use ghatta::net::radio::serial::SerialTransport;
    use ghatta_simulate::emulator::radio::RadioChannel;
    use tokio_serial::SerialPort;

    harness::run(53, async {
        let tmp = tempfile::tempdir().unwrap();
        let mut masters = Vec::new();
        let mut devices = Vec::new();
        for _ in 0..4 {
            let (master, slave) = tokio_serial::SerialStream::pair().expect("pty pair");
            devices.push(slave.name().expect("pty path"));
            drop(slave);
            masters.push(master);
        }
        let keys: Vec<(u64, PublicKey)> = (1..=3).map(|id| (id, key(id).public())).collect();
        let all = [1, 2, 3, 4];
        let mut nodes = BTreeMap::new();
        let mut taps = BTreeMap::new();
        for id in 1..=3u64 {
            let dir = tmp.path().join(format!("node-{id}"));
            let (raw_tx, raw_rx) = inbound_queue();
            let radio =
                SerialTransport::open(id, &serial_cfg(&devices[id as usize - 1], id, &all), raw_tx)
                    .expect("open the pty by path");
            let tap = Tap::new(radio);
            let link = Arc::new(
                SecureLink::new(
                    id,
                    CLUSTER,
                    &key(id),
                    keys.clone(),
                    BootEpoch::advance(&dir).unwrap(),
                )
                .unwrap(),
            );
            let (sealed, inbound) = SealedTransport::start(tap.clone(), raw_rx, link);
            let node = NodeBuilder::new(id, CLUSTER)
                .timing(Timing::for_rtt(500))
                .seed(id * 7919)
                .start(
                    ghatta::storage::open_dir(&dir).expect("stores"),
                    sealed,
                    inbound,
                )
                .await
                .expect("node starts");
            nodes.insert(id, node);
            taps.insert(id, tap);
        }
        let (rogue_tx, _rogue_rx) = inbound_queue();
        let rogue_radio = SerialTransport::open(4, &serial_cfg(&devices[3], 4, &all), rogue_tx)
            .expect("rogue opens its pty");
        let _channel = RadioChannel::start(masters, clean_channel());
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
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        let leader = loop {
            let leaders: Vec<u64> = nodes
                .values()
                .filter(|n| n.status().role == Role::Leader)
                .map(|n| n.id())
                .collect();
            if let [l] = leaders[..]
                && nodes.values().all(|n| n.status().leader == Some(l))
            {
                break l;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no leader over sealed radios"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let r = nodes[&leader]
            .propose_inputs(harness::setup_inputs(2))
            .await
            .expect("commit over sealed radios");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while !nodes.values().all(|n| n.status().applied_index >= r.index) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "not applied everywhere"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        let before: BTreeMap<u64, _> = nodes
            .iter()
            .map(|(id, n)| (*id, (n.status(), n.status().security.unwrap())))
            .collect();
        let term = before[&leader].0.term;

        let rogue_key = SecretKey::from_bytes([99; 32]);
        let vote = openraft::raft::VoteRequest::new(ghatta::raft::Vote::new(term + 50, 4), None);
        let requests = [
            Request::Vote(vote.clone()),
            Request::PreVote(vote),
            Request::Append(openraft::raft::AppendEntriesRequest {
                vote: ghatta::raft::Vote::new_committed(term + 50, 4),
                prev_log_id: None,
                entries: vec![],
                leader_commit: None,
            }),
            Request::Forward(Forward {
                origin: 4,
                seq: 1,
                origin_time_ms: 0,
                body: Body::Inputs(harness::setup_inputs(1)),
            }),
        ];
        for id in 1..=3u64 {
            let other = if id == 1 { 2 } else { 1 };
            let as4 = SecureLink::new(
                4,
                CLUSTER,
                &rogue_key,
                keys.clone(),
                BootEpoch::in_memory(1),
            )
            .unwrap();
            let as_member = SecureLink::new(
                other,
                CLUSTER,
                &rogue_key,
                [(id, key(id).public())],
                BootEpoch::in_memory(9),
            )
            .unwrap();
            for (i, r) in requests.iter().enumerate() {
                let p = codec::encode(&WireMessage {
                    id: 2_000 + i as u64,
                    body: WireBody::Request(r.clone()),
                })
                .unwrap();
                rogue_radio.send(id, as4.seal(id, &p).unwrap());
                rogue_radio.send(id, as_member.seal(id, &p).unwrap());
                rogue_radio.send(id, frame::encode(4, id, &p));
            }
            // Replays of genuine sealed frames heard on the air, whole and with a bit flipped.
            let genuine: Vec<Vec<u8>> = taps
                .values()
                .flat_map(|t| t.frames())
                .filter(|(to, f)| *to == id && f.len() < 200)
                .map(|(_, f)| f)
                .take(5)
                .collect();
            assert!(
                !genuine.is_empty(),
                "no genuine frame to node {id} captured"
            );
            for f in genuine {
                let mut g = f.clone();
                let last = g.len() - 1;
                g[last] ^= 0x10;
                rogue_radio.send(id, f);
                rogue_radio.send(id, g);
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        // Let the channel deliver everything (a few kB at 115,200 bit/s).
        tokio::time::sleep(Duration::from_secs(3)).await;
        for (id, n) in &nodes {
            let (s0, c0) = &before[id];
            let (s1, c1) = (n.status(), n.status().security.unwrap());
            assert!(
                c1.unknown_sender > c0.unknown_sender,
                "node {id}: {c0:?} -> {c1:?}"
            );
            assert!(c1.forged > c0.forged, "node {id}: {c0:?} -> {c1:?}");
            assert!(c1.unsealed > c0.unsealed, "node {id}: {c0:?} -> {c1:?}");
            assert!(
                c1.replayed + c1.out_of_window > c0.replayed + c0.out_of_window,
                "node {id}: {c0:?} -> {c1:?}"
            );
            assert_eq!(s1.term, s0.term, "node {id}: term moved");
            assert_eq!(s1.leader, Some(leader), "node {id}: leader changed");
            assert_eq!(s1.commit_index, s0.commit_index, "node {id}: commit moved");
            assert_eq!(s1.voters, vec![1, 2, 3]);
        }
        let r = nodes[&leader]
            .propose_inputs(harness::setup_inputs(1))
            .await
            .expect("commit after the attack");
        assert!(r.index > before[&leader].0.commit_index);
        for n in nodes.values() {
            n.shutdown().await;
        }
        rogue_radio.shutdown();
    });
}
