//! The node: one controller's Raft member, state machine, RPC endpoint, proposer and timers,
//! wired together over whatever clock, links and storage it is given.
//!
//! The same `Node` runs on a board (file-backed redb, TCP, system clock), in the 3-process
//! demo, and inside the simulator (simulated disk, simulated links, simulated time): only
//! what [`NodeBuilder`] is given differs.

mod amnesia;
mod builder;
pub mod clockwatch;
mod deploy;
pub mod forward_rate;
pub mod guard;
mod handler;
mod inflight;
pub mod membership;
mod proposer;
mod snapshot_in;
pub mod snapshots;
mod timers;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use openraft::ChangeMembers;
use openraft_rt::{Instant as _, WatchReceiver};
use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;

pub use self::builder::NodeBuilder;
pub use self::deploy::{DEPLOY_CHUNKS_IN_FLIGHT, DeployError};
use self::membership::{MEMBER_COMMIT_WAIT, MemberOutcome, MemberRefusal, MemberState};
pub use self::proposer::{ProposeError, SEQ_RESERVE_BLOCK};
use crate::actors::{ActorHost, ActorLimits};
use crate::clock::Clock;
use crate::net::transport::{InboundRx, LinkStatsSnapshot, Transport};
use crate::observe::{NodeObserver, TestFaults};
use crate::raft::log_store::LogStore;
use crate::raft::timing::Timing;
use crate::raft::{Body, PeerInfo, Receipt, TypeConfig};
use crate::rpc::Rpc;
use crate::rpc::network::NetworkFactory;
use crate::rpc::wire::{ForwardError, MemberOp, Request, Response};
use crate::state::{SmStatus, StateMachine};
use crate::storage::Stores;

/// The Raft handle for our state machine.
pub type Raft = openraft::Raft<TypeConfig, StateMachine>;

/// What a node is, independent of where it runs (set through [`NodeBuilder`]).
#[derive(Debug, Clone)]
struct NodeOptions {
    /// This node's id (unique in the cluster, stable across restarts).
    pub id: u64,
    /// Cluster name (guards against joining the wrong cluster).
    pub cluster_name: String,
    /// Raft timing.
    pub timing: Timing,
    /// Actor limits (must match on every member).
    pub actor_limits: ActorLimits,
    /// Seed for openraft's randomness (election timeouts).
    pub seed: u64,
    /// Snapshot policy override (tests force frequent snapshots); `None` keeps the defaults.
    pub snapshot: Option<SnapshotTuning>,
    /// node.toml's `actor_signers`: what this node proposes as the first replicated signer
    /// list when there is none yet (`node::deploy`).
    pub actor_signers: Vec<crate::actors::deploy::SignerKey>,
}

/// When to snapshot and how much log to keep after one (the policy: `node::snapshots`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotTuning {
    /// Build a snapshot after at least this many entries since the last (more when the last
    /// snapshot was large: [`snapshots::SNAPSHOT_BYTES_PER_ENTRY`]).
    pub every_entries: u64,
    /// Entries kept in the log behind a snapshot.
    pub keep_entries: u64,
}

impl Default for SnapshotTuning {
    fn default() -> Self {
        SnapshotTuning {
            every_entries: snapshots::EVERY_ENTRIES_DEFAULT,
            keep_entries: snapshots::KEEP_ENTRIES_DEFAULT,
        }
    }
}

/// Where a node runs: its storage, links and clock (given to [`NodeBuilder`]).
struct NodeEnv {
    /// The node's databases (files or simulated disks).
    pub stores: Stores,
    /// Outgoing links.
    pub transport: Arc<dyn Transport>,
    /// Incoming frames.
    pub inbound: InboundRx,
    /// Wall clock.
    pub clock: Arc<dyn Clock>,
    /// A harness watching the node (the simulator); `None` in production.
    pub observer: Option<Arc<dyn NodeObserver>>,
    /// Deliberate bugs for mutation tests; all off in production.
    pub faults: Arc<TestFaults>,
    /// Where commits take their time (`ghatta bench`); `None`: not counted.
    pub timings: Option<Arc<crate::observe::CommitTimings>>,
}

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The actors did not load.
    #[error(transparent)]
    Actors(#[from] crate::actors::LoadError),
    /// The state machine could not be opened.
    #[error("cannot open the state machine: {0}")]
    State(std::io::Error),
    /// The Raft configuration is invalid.
    #[error("invalid Raft timing: {0}")]
    Config(#[from] openraft::ConfigError),
    /// openraft refused to start.
    #[error("Raft failed to start: {0}")]
    Raft(String),
    /// The node started but could not form the cluster it was asked to.
    #[error(transparent)]
    Initialize(MembershipError),
}

/// Why forming the cluster or changing its membership failed. openraft's own errors are
/// generic over the type configuration; their text is kept.
#[derive(Debug, thiserror::Error)]
pub enum MembershipError {
    /// openraft refused to form the cluster.
    #[error("cannot form the cluster: {0}; check that every founding member lists the same peers")]
    Initialize(String),
    /// The change was refused (by the checks in `node::membership`, which say what to do, or
    /// by the leader's Raft).
    #[error("membership change refused: {0}")]
    Refused(String),
    /// No leader carried the change out in time.
    #[error(
        "no leader carried out the membership change in time (last: {0}); check that a majority of voters is up and reachable, then retry"
    )]
    NoLeader(String),
}

/// A running node. Cheap to clone.
#[derive(Clone)]
pub struct Node {
    inner: Arc<Inner>,
}

struct Inner {
    id: u64,
    raft: Raft,
    sm: StateMachine,
    /// The Raft log (a clone sharing the database openraft writes through), read to answer
    /// a probing leader with this node's last durable log id.
    log: LogStore,
    /// Test switches (`observe::TestFaults`).
    faults: Arc<TestFaults>,
    /// What members may ask of this node, and the refusals so far.
    guard: guard::Guard,
    /// Whether this node lost its vote and abstains from elections for now.
    amnesia: amnesia::Amnesia,
    rpc: Arc<Rpc>,
    clock: Arc<dyn Clock>,
    proposer: proposer::Proposer,
    /// On the leader: proposals being appended, so a retry is not appended again.
    inflight: inflight::InFlight,
    observer: Option<Arc<dyn NodeObserver>>,
    /// See `NodeOptions::actor_signers`.
    actor_signers: Vec<crate::actors::deploy::SignerKey>,
    tasks: std::sync::Mutex<Vec<JoinHandle<()>>>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("id", &self.inner.id)
            .finish_non_exhaustive()
    }
}

/// Role of a node as operators see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Leads the cluster.
    Leader,
    /// Follows a leader.
    Follower,
    /// Campaigning.
    Candidate,
    /// Replicates without voting.
    Learner,
    /// Stopped.
    Shutdown,
}

/// A node's status, as `ghatta status` shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeStatus {
    /// Node id.
    pub id: u64,
    /// Role.
    pub role: Role,
    /// Current term.
    pub term: u64,
    /// Leader, if known.
    pub leader: Option<u64>,
    /// Highest log index known committed.
    pub commit_index: u64,
    /// Last log index.
    pub last_log_index: u64,
    /// Applied index of the state machine.
    pub applied_index: u64,
    /// State hash at `applied_index` (hex).
    pub state_hash: String,
    /// Log time at `applied_index`, Unix ms.
    pub log_time_ms: u64,
    /// Voters.
    pub voters: Vec<u64>,
    /// Learners.
    pub learners: Vec<u64>,
    /// A membership change is not finished: the last one is not committed yet, or the
    /// cluster is in a joint configuration (then `voters` is both sets' union).
    #[serde(default)]
    pub membership_in_progress: bool,
    /// Customers known.
    pub customers: u64,
    /// Customers cut by billing.
    pub disconnected: u64,
    /// Outbox records.
    pub outbox_len: u64,
    /// Pending timers.
    pub timers: u64,
    /// Deliveries that trapped since genesis.
    pub trapped_total: u64,
    /// Frame-layer counters.
    pub link: LinkStatsSnapshot,
    /// Sealing-layer counters (frames opened, and dropped by reason); `None` on an unsealed
    /// link (the simulator, or a node without `key_file`).
    #[serde(default)]
    pub security: Option<crate::net::secure::SealStatsSnapshot>,
    /// Requests from members refused as not theirs to make (`node::guard`), by reason.
    #[serde(default)]
    pub refused: guard::RefusalsSnapshot,
    /// Each radio modem's link-layer counters (`[[radio]]`); empty without radios. What a
    /// radio drops (CRC, garbage, lost fragments) is counted here, not in `link.rejected`.
    #[serde(default)]
    pub radio: Vec<crate::net::radio::RadioLinkSnapshot>,
    /// Every other member as this node sees it; the leader also knows how far each has
    /// matched its log and when each last answered.
    #[serde(default)]
    pub peers: Vec<PeerView>,
    /// Log time of the oldest outbox record some WAN stream has not had acknowledged by the
    /// central, Unix ms; `None` when nothing waits.
    #[serde(default)]
    pub wan_oldest_waiting_ms: Option<u64>,
}

/// Another member, in [`NodeStatus`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerView {
    /// Its id.
    pub id: u64,
    /// A voter (or a learner).
    pub voter: bool,
    /// Its TCP address from the membership; empty when it is reached by radio only.
    pub addr: String,
    /// The highest index it has matched (known on the leader only).
    pub matched_index: Option<u64>,
    /// Milliseconds since it last answered the leader (known on the leader only).
    pub heard_ms_ago: Option<u64>,
}

impl Node {
    /// Start a node: open the state machine, start Raft, the RPC dispatcher and the timer
    /// loop (through [`NodeBuilder::start`]). Must run inside `raft::Runtime::scope`
    /// (openraft's seeded RNG).
    async fn start_with_host(
        opts: NodeOptions,
        env: NodeEnv,
        host: Arc<ActorHost>,
    ) -> Result<Node, StartError> {
        let hooks = crate::state::Hooks {
            node: opts.id,
            observer: env.observer.clone(),
            faults: env.faults.clone(),
            timings: env.timings.clone(),
        };
        let sm = StateMachine::open_with_hooks(env.stores.state.clone(), host, hooks)
            .map_err(StartError::State)?;
        let mut log = LogStore::with_faults(env.stores.log.clone(), env.faults.clone())
            .with_sync_latency(env.stores.log_sync.clone())
            .with_timings(env.timings.clone());
        let vote = openraft::storage::RaftLogReader::read_vote(&mut log)
            .await
            .map_err(StartError::State)?;
        let amnesia = amnesia::Amnesia::at_start(vote.as_ref(), sm.status().borrow().applied_index);
        let rpc = Rpc::new(opts.id, env.transport.clone());
        let mut config = opts.timing.raft_config(&opts.cluster_name)?;
        let snapshot_tuning = opts.snapshot.unwrap_or_default();
        // The node triggers snapshots itself (node::snapshots); openraft only purges after one.
        config.snapshot_policy = openraft::SnapshotPolicy::Never;
        config.max_in_snapshot_log_to_keep = snapshot_tuning.keep_entries;
        let config = Arc::new(config.validate()?);
        let raft = Raft::new(
            opts.id,
            config,
            NetworkFactory::new(rpc.clone(), log.clone(), opts.timing.link_design()),
            log.clone(),
            sm.clone(),
        )
        .await
        .map_err(|e| StartError::Raft(e.to_string()))?;
        let proposer =
            proposer::Proposer::new(opts.id, &opts.timing, env.stores.state.clone(), &sm)
                .map_err(StartError::State)?;
        let inner = Arc::new(Inner {
            id: opts.id,
            raft,
            sm,
            log,
            faults: env.faults.clone(),
            guard: guard::Guard::default(),
            amnesia,
            rpc: rpc.clone(),
            clock: env.clock,
            proposer,
            inflight: inflight::InFlight::default(),
            observer: env.observer,
            actor_signers: opts.actor_signers.clone(),
            tasks: std::sync::Mutex::new(Vec::new()),
        });
        let node = Node { inner };
        let handler = Arc::new(handler::NodeHandler::new(node.clone()));
        let dispatch = tokio::spawn(rpc.dispatch(env.inbound, handler));
        let timers = tokio::spawn(timers::run(node.clone()));
        let snapshots = tokio::spawn(snapshots::run(node.clone(), snapshot_tuning.every_entries));
        if let Ok(mut t) = node.inner.tasks.lock() {
            t.push(dispatch);
            t.push(timers);
            t.push(snapshots);
        }
        Ok(node)
    }

    /// This node's id.
    pub fn id(&self) -> u64 {
        self.inner.id
    }

    /// The Raft handle.
    pub fn raft(&self) -> &Raft {
        &self.inner.raft
    }

    /// The state machine.
    pub fn state_machine(&self) -> &StateMachine {
        &self.inner.sm
    }

    /// The node's clock.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.inner.clock
    }

    /// Form a new cluster with these members (call on a pristine node; calling it on every
    /// founding member with the same set is safe, and a no-op once initialised).
    pub async fn initialize(
        &self,
        members: BTreeMap<u64, PeerInfo>,
    ) -> Result<(), MembershipError> {
        if self
            .inner
            .raft
            .is_initialized()
            .await
            .map_err(|e| MembershipError::Initialize(e.to_string()))?
        {
            return Ok(());
        }
        match self.inner.raft.initialize(members).await {
            Ok(()) => Ok(()),
            Err(e)
                if e.to_string().contains("NotAllowed")
                    || e.to_string().contains("not allowed") =>
            {
                Ok(())
            }
            Err(e) => Err(MembershipError::Initialize(e.to_string())),
        }
    }

    /// Propose actor inputs (each a bincode `ghatta_actor_sdk::Input`) with this node's next
    /// sequence number, through the leader; returns when applied on the leader.
    pub async fn propose_inputs(&self, inputs: Vec<Vec<u8>>) -> Result<Receipt, ProposeError> {
        self.inner
            .proposer
            .propose(self, Body::Inputs(inputs))
            .await
    }

    /// Propose with an explicit sequence number (a retry of an earlier proposal).
    pub async fn propose_with_seq(&self, seq: u64, body: Body) -> Result<Receipt, ProposeError> {
        self.inner.proposer.submit(self, seq, body).await
    }

    /// Reserve the next sequence number (for callers that retry a proposal themselves).
    pub fn next_seq(&self) -> Result<u64, ProposeError> {
        self.inner.proposer.ready(self)?;
        self.inner.proposer.next_seq()
    }

    /// The node's status.
    pub fn status(&self) -> NodeStatus {
        let m = self.inner.raft.metrics().borrow_watched().clone();
        let sm: SmStatus = self.inner.sm.status().borrow().clone();
        let membership = m.membership_config.membership();
        NodeStatus {
            id: self.inner.id,
            role: match m.state {
                openraft::ServerState::Leader => Role::Leader,
                openraft::ServerState::Follower => Role::Follower,
                openraft::ServerState::Candidate => Role::Candidate,
                openraft::ServerState::Learner => Role::Learner,
                openraft::ServerState::Shutdown => Role::Shutdown,
            },
            term: m.current_term,
            leader: m.current_leader,
            commit_index: m.local_committed.as_ref().map(|l| l.index()).unwrap_or(0),
            last_log_index: m.last_log_index.unwrap_or(0),
            applied_index: sm.applied_index,
            state_hash: crate::state::hash_hex(&sm.state_hash),
            log_time_ms: sm.log_time_ms,
            voters: membership.voter_ids().collect(),
            learners: membership.learner_ids().collect(),
            membership_in_progress: membership.get_joint_config().len() > 1
                || m.membership_config.log_id() != m.committed_membership_config.log_id(),
            customers: sm.customers,
            disconnected: sm.disconnected,
            outbox_len: sm.outbox_len,
            timers: sm.timers,
            trapped_total: sm.trapped_total,
            link: self.inner.rpc.stats().snapshot(),
            security: self.inner.rpc.transport().security(),
            refused: self.inner.guard.snapshot(),
            radio: self.inner.rpc.transport().radios(),
            peers: membership
                .nodes()
                .filter(|(id, _)| **id != self.inner.id)
                .map(|(id, info)| PeerView {
                    id: *id,
                    voter: membership.voter_ids().any(|v| v == *id),
                    addr: info.addr.clone(),
                    matched_index: m
                        .replication
                        .as_ref()
                        .and_then(|r| r.get(id).cloned().flatten())
                        .map(|l| l.index()),
                    heard_ms_ago: m
                        .heartbeat
                        .as_ref()
                        .and_then(|h| h.get(id).cloned().flatten())
                        .map(|at| at.elapsed().as_millis() as u64),
                })
                .collect(),
            wan_oldest_waiting_ms: self
                .inner
                .sm
                .oldest_unacknowledged_ms()
                .unwrap_or_else(|e| {
                    tracing::debug!(error = %e, "cannot read the outbox for the status");
                    None
                }),
        }
    }

    /// Whether this node leads now: Raft's own state, without building a [`NodeStatus`]
    /// (which reads the outbox), for loops that ask often.
    pub fn is_leader(&self) -> bool {
        self.inner.raft.metrics().borrow_watched().state.is_leader()
    }

    /// Whether `id` is a voter in the membership this node knows.
    pub fn is_voter(&self, id: u64) -> bool {
        self.inner
            .raft
            .metrics()
            .borrow_watched()
            .membership_config
            .membership()
            .voter_ids()
            .any(|v| v == id)
    }

    /// The membership this node knows, as an outcome in `state` with `note`.
    fn membership_outcome(&self, state: MemberState, note: String) -> MemberOutcome {
        let m = self.inner.raft.metrics().borrow_watched().clone();
        let membership = m.membership_config.membership();
        MemberOutcome {
            state,
            voters: membership.voter_ids().collect(),
            learners: membership.learner_ids().collect(),
            note,
        }
    }

    /// Carry out a membership change here if this node leads; otherwise say who leads. Checks
    /// come first (`node::membership`): nothing is proposed that could wedge the cluster.
    pub(crate) async fn member_local(&self, op: MemberOp) -> Result<MemberOutcome, ForwardError> {
        let raft = &self.inner.raft;
        if !raft.is_leader() {
            return Err(ForwardError::NotLeader {
                leader: raft.current_leader().await,
            });
        }
        let refused = |r: MemberRefusal| ForwardError::Refused(r.to_string());
        let m = raft.metrics().borrow_watched().clone();
        let membership = m.membership_config.membership();
        if m.membership_config.log_id() != m.committed_membership_config.log_id() {
            // openraft would refuse too ("undergoing a configuration change"); this says how
            // the change in flight completes.
            return Err(refused(MemberRefusal::InFlight {
                configs: membership
                    .get_joint_config()
                    .iter()
                    .map(|c| c.iter().copied().collect())
                    .collect(),
            }));
        }
        let is_voter = |id: u64| membership.voter_ids().any(|v| v == id);
        let is_learner = |id: u64| membership.learner_ids().any(|l| l == id);
        let (change, done) = match op {
            MemberOp::AddLearner { id, addr } => {
                if is_voter(id) {
                    return Err(refused(MemberRefusal::AlreadyVoter { id }));
                }
                self.probe_new_member(id, &addr).await.map_err(refused)?;
                let raft = raft.clone();
                let add = async move { raft.add_learner(id, PeerInfo { addr }, false).await };
                let note = format!(
                    "node {id} added as a learner, catching up; promote it with `ghatta member promote --id {id}` once it has"
                );
                return self.await_change(add, note).await;
            }
            MemberOp::Promote { id } => {
                if is_voter(id) {
                    return Ok(self.membership_outcome(
                        MemberState::Committed,
                        format!("node {id} is a voter already; nothing to do"),
                    ));
                }
                if !is_learner(id) {
                    return Err(refused(MemberRefusal::NotALearner { id }));
                }
                let progress = membership::LearnerProgress {
                    matched: m
                        .replication
                        .as_ref()
                        .and_then(|r| r.get(&id).cloned().flatten())
                        .map(|l| l.index()),
                    leader_last: m.last_log_index.unwrap_or(0),
                    acked_ago: m
                        .heartbeat
                        .as_ref()
                        .and_then(|h| h.get(&id).cloned().flatten())
                        .map(|at| at.elapsed()),
                };
                let window = Duration::from_millis(raft.config().heartbeat_interval)
                    * membership::PROMOTE_ACK_HEARTBEATS_MAX;
                membership::check_promotion(id, progress, window).map_err(refused)?;
                (
                    ChangeMembers::AddVoterIds(BTreeSet::from([id])),
                    format!("node {id} promoted to voter"),
                )
            }
            MemberOp::Remove { id } => {
                if is_voter(id) {
                    if membership.voter_ids().count() == 1 {
                        return Err(refused(MemberRefusal::LastVoter { id }));
                    }
                    (
                        ChangeMembers::RemoveVoters(BTreeSet::from([id])),
                        format!("node {id} removed"),
                    )
                } else if is_learner(id) {
                    (
                        ChangeMembers::RemoveNodes(BTreeSet::from([id])),
                        format!("learner {id} removed"),
                    )
                } else {
                    return Err(refused(MemberRefusal::NotAMember {
                        id,
                        voters: membership.voter_ids().collect(),
                        learners: membership.learner_ids().collect(),
                    }));
                }
            }
        };
        // `retain = false`: a removed voter leaves the cluster instead of staying a learner
        // the leader keeps replicating to.
        let raft = raft.clone();
        let change = async move { raft.change_membership(change, false).await };
        self.await_change(change, done).await
    }

    /// Waits up to [`MEMBER_COMMIT_WAIT`] for a proposed change to commit; past that it is
    /// reported in progress. The change runs on its own task, not in the caller's future: a
    /// voter change is two entries, the joint one and then the uniform one that openraft's
    /// management call proposes once the joint one commits, and dropping that call at the
    /// deadline would leave the cluster in the joint configuration for good.
    async fn await_change<F, T, E>(
        &self,
        change: F,
        note: String,
    ) -> Result<MemberOutcome, ForwardError>
    where
        F: std::future::Future<Output = Result<T, E>> + Send + 'static,
        E: std::fmt::Display,
    {
        let task = tokio::spawn(async move { change.await.map(|_| ()).map_err(|e| e.to_string()) });
        match tokio::time::timeout(MEMBER_COMMIT_WAIT, task).await {
            Ok(Ok(Ok(()))) => Ok(self.membership_outcome(MemberState::Committed, note)),
            Ok(Ok(Err(e))) => Err(ForwardError::Raft(e)),
            Ok(Err(e)) => Err(ForwardError::Raft(format!("the change's task failed: {e}"))),
            Err(_) => Ok(self.membership_outcome(
                MemberState::InProgress,
                format!(
                    "{note}: proposed, not committed within {} s; it completes once a majority of the old and of the new voters answer (`ghatta status` shows it)",
                    MEMBER_COMMIT_WAIT.as_secs()
                ),
            )),
        }
    }

    /// Before adding node `id` at `addr`: sealed, its key must be listed; and it must answer a
    /// ping over the cluster's own links within [`membership::MEMBER_PROBE_TIMEOUT`].
    async fn probe_new_member(&self, id: u64, addr: &str) -> Result<(), MemberRefusal> {
        let transport = self.inner.rpc.transport();
        if transport.seals_to(id) == Some(false) {
            return Err(MemberRefusal::KeyNotListed { id });
        }
        if !addr.is_empty() {
            transport.set_peer_addr(id, addr);
        }
        let no_answer = || MemberRefusal::NoAnswer {
            id,
            addr: addr.to_string(),
            timeout_s: membership::MEMBER_PROBE_TIMEOUT.as_secs(),
        };
        match self
            .inner
            .rpc
            .call(id, Request::Ping, membership::MEMBER_PROBE_TIMEOUT)
            .await
        {
            Ok(Response::Pong { id: answered }) if answered == id => Ok(()),
            Ok(Response::Pong { id: answered }) => Err(MemberRefusal::WrongNode {
                id,
                addr: addr.to_string(),
                answered,
            }),
            Ok(_) | Err(_) => Err(no_answer()),
        }
    }

    /// A membership change from an operator, carried out by the leader wherever it is.
    /// Refusals come back as [`MembershipError::Refused`] with the reason; a change the
    /// leader proposed but did not see committed in time, or whose answer was lost, comes
    /// back as an outcome that says so, never as a failure.
    pub async fn member(&self, op: MemberOp) -> Result<MemberOutcome, MembershipError> {
        let deadline = tokio::time::Instant::now() + membership::MEMBER_LEADER_WAIT;
        let mut last = String::from("no leader known");
        while tokio::time::Instant::now() < deadline {
            let result = match self.inner.raft.current_leader().await {
                Some(l) if l == self.inner.id => self.member_local(op.clone()).await,
                Some(l) => match self
                    .inner
                    .rpc
                    .call(
                        l,
                        Request::Member(op.clone()),
                        membership::MEMBER_FORWARD_TIMEOUT,
                    )
                    .await
                {
                    Ok(Response::Member(r)) => r,
                    Ok(_) => Err(ForwardError::Raft("unexpected response".into())),
                    Err(crate::rpc::RpcError::Timeout { peer, deadline }) => {
                        // The leader may have carried it out and its answer been lost.
                        return Ok(self.membership_outcome(
                            MemberState::Unconfirmed,
                            format!(
                                "the leader (node {peer}) did not answer within {} s: the change may or may not have been made; check `ghatta status`",
                                deadline.as_secs()
                            ),
                        ));
                    }
                    Err(e) => Err(ForwardError::Raft(e.to_string())),
                },
                None => Err(ForwardError::NotLeader { leader: None }),
            };
            match result {
                Ok(outcome) => return Ok(outcome),
                Err(ForwardError::Raft(e) | ForwardError::Refused(e)) => {
                    return Err(MembershipError::Refused(e));
                }
                Err(e) => last = e.to_string(),
            }
            tokio::time::sleep(proposer::NO_LEADER_RETRY).await;
        }
        Err(MembershipError::NoLeader(last))
    }

    /// Stop Raft and the node's tasks.
    pub async fn shutdown(&self) {
        if let Ok(mut t) = self.inner.tasks.lock() {
            for h in t.drain(..) {
                h.abort();
            }
        }
        let _ = self.inner.raft.shutdown().await;
        self.inner.rpc.transport().shutdown();
    }
}
