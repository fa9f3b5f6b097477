//! [`NodeBuilder`]: the one way to assemble a node. It owns the defaults (LAN timing, default
//! actor limits, the embedded actors, the system clock, no observer, no faults) and takes the
//! seams a place to run has to choose: storage, links, clock, actor host, observer and, for
//! the simulator's mutation tests, fault switches. A board (`runner.rs`), the loopback demo,
//! `ghatta bench`, the simulator and the test harnesses all start their nodes through it, so
//! a new knob is added here once.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::{Node, NodeEnv, NodeOptions, SnapshotTuning, StartError};
use crate::actors::{ActorHost, ActorLimits};
use crate::clock::{Clock, SystemClock};
use crate::net::LinkProfile;
use crate::net::transport::{InboundRx, Transport};
use crate::observe::{CommitTimings, NodeObserver, TestFaults};
use crate::raft::PeerInfo;
use crate::raft::timing::Timing;
use crate::storage::Stores;

/// How to start a node; see the module documentation.
#[must_use = "a builder does nothing until `start`"]
pub struct NodeBuilder {
    opts: NodeOptions,
    clock: Arc<dyn Clock>,
    observer: Option<Arc<dyn NodeObserver>>,
    faults: Arc<TestFaults>,
    timings: Option<Arc<CommitTimings>>,
    host: Option<Arc<ActorHost>>,
    members: Option<BTreeMap<u64, PeerInfo>>,
}

impl NodeBuilder {
    /// A node `id` of cluster `cluster_name` with every default: LAN timing, default actor
    /// limits, the embedded actors, the system clock, openraft seeded with the id.
    pub fn new(id: u64, cluster_name: impl Into<String>) -> Self {
        NodeBuilder {
            opts: NodeOptions {
                id,
                cluster_name: cluster_name.into(),
                timing: Timing::for_profile(LinkProfile::Lan),
                actor_limits: ActorLimits::default(),
                seed: id,
                snapshot: None,
                actor_signers: Vec::new(),
            },
            clock: Arc::new(SystemClock),
            observer: None,
            faults: Arc::default(),
            timings: None,
            host: None,
            members: None,
        }
    }

    /// Raft timing (every member should use the same).
    pub fn timing(mut self, timing: Timing) -> Self {
        self.opts.timing = timing;
        self
    }

    /// Actor limits (must match on every member). Ignored with [`NodeBuilder::actor_host`],
    /// whose host carries its own.
    pub fn actor_limits(mut self, limits: ActorLimits) -> Self {
        self.opts.actor_limits = limits;
        self
    }

    /// node.toml's `actor_signers`: the signer list this node proposes when the cluster has
    /// none yet (the first committed list wins; see ARCHITECTURE.md, "Deployed actors").
    pub fn actor_signers(mut self, keys: Vec<crate::actors::deploy::SignerKey>) -> Self {
        self.opts.actor_signers = keys;
        self
    }

    /// Seed of openraft's randomness (election timeouts).
    pub fn seed(mut self, seed: u64) -> Self {
        self.opts.seed = seed;
        self
    }

    /// Snapshot policy (`None`: the defaults, `node::snapshots`).
    pub fn snapshot(mut self, tuning: Option<SnapshotTuning>) -> Self {
        self.opts.snapshot = tuning;
        self
    }

    /// The wall clock (the simulator's drifting one, or the system's).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// A harness watching the node (the simulator's checkers).
    pub fn observer(mut self, observer: Option<Arc<dyn NodeObserver>>) -> Self {
        self.observer = observer;
        self
    }

    /// Deliberate bugs for mutation tests; they can be switched on only in a build with the
    /// `test-faults` feature.
    pub fn faults(mut self, faults: Arc<TestFaults>) -> Self {
        self.faults = faults;
        self
    }

    /// Count where this node's commits take their time into `timings` (`ghatta bench`).
    pub fn commit_timings(mut self, timings: Arc<CommitTimings>) -> Self {
        self.timings = Some(timings);
        self
    }

    /// An actor host of the caller's (shared by the simulator's nodes, or with test modules)
    /// instead of a new one with the embedded actors.
    pub fn actor_host(mut self, host: Arc<ActorHost>) -> Self {
        self.host = Some(host);
        self
    }

    /// Form a new cluster of `members` once started (a founding member's first start; a
    /// no-op on a node that already belongs to one).
    pub fn initialize(mut self, members: BTreeMap<u64, PeerInfo>) -> Self {
        self.members = Some(members);
        self
    }

    /// Start the node on `stores` with the links `transport` (outgoing) and `inbound`
    /// (incoming frames), then form the cluster if asked. Must run inside
    /// `raft::Runtime::scope` (openraft's seeded RNG).
    pub async fn start(
        self,
        stores: Stores,
        transport: Arc<dyn Transport>,
        inbound: InboundRx,
    ) -> Result<Node, StartError> {
        let host = match self.host {
            Some(h) => h,
            None => Arc::new(ActorHost::with_embedded(self.opts.actor_limits.clone())?),
        };
        let env = NodeEnv {
            stores,
            transport,
            inbound,
            clock: self.clock,
            observer: self.observer,
            faults: self.faults,
            timings: self.timings,
        };
        let node = Node::start_with_host(self.opts, env, host).await?;
        if let Some(members) = self.members
            && let Err(e) = node.initialize(members).await
        {
            node.shutdown().await;
            return Err(StartError::Initialize(e));
        }
        Ok(node)
    }
}
