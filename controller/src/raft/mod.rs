//! Raft plumbing: the openraft type configuration, what a log entry carries ([`Proposal`]) and
//! what applying it answers ([`Receipt`]), the redb log store and timing. The network adapter
//! (openraft's RPCs over our links) is in `rpc`, which sits above this module.
//!
//! The async runtime is tokio wrapped in openraft's `DeterministicRng`, so openraft's own
//! randomness (election timeouts) comes from a seed: the node's in production, the world's
//! in the simulator.

pub mod board_alarms;
pub mod log_store;
pub mod rtt;
pub mod timing;

use std::fmt;

use serde::{Deserialize, Serialize};

/// The async runtime openraft runs on: tokio with a seeded RNG.
pub type Runtime =
    openraft_rt::deterministic_rng::DeterministicRng<openraft_rt_tokio::TokioRuntime>;

openraft::declare_raft_types!(
    /// ghatta's Raft type configuration.
    pub TypeConfig:
        D = Proposal,
        R = Receipt,
        NodeId = u64,
        Node = PeerInfo,
        AsyncRuntime = Runtime,
);

/// A log entry.
pub type Entry = openraft::alias::EntryOf<TypeConfig>;
/// A log id.
pub type LogId = openraft::alias::LogIdOf<TypeConfig>;
/// A vote.
pub type Vote = openraft::alias::VoteOf<TypeConfig>;
/// Stored membership.
pub type StoredMembership = openraft::alias::StoredMembershipOf<TypeConfig>;
/// Snapshot metadata.
pub type SnapshotMeta = openraft::alias::SnapshotMetaOf<TypeConfig>;
/// A snapshot with our data type: the serialised state machine image in a snapshot file
/// (`storage::snapshot_file`), read a chunk at a time.
pub type Snapshot = openraft::alias::SnapshotOf<TypeConfig, crate::storage::SnapshotFile>;

/// How to reach a peer. Stored in the membership, so every node learns every address.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerInfo {
    /// TCP address of the peer's Raft listener, e.g. "10.0.0.2:7000" (empty when the peer is
    /// reached only by other links).
    pub addr: String,
}

impl fmt::Display for PeerInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.addr)
    }
}

/// What one log entry carries. Proposed by a node, stamped with the leader's time, committed,
/// then applied exactly once on every replica.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proposal {
    /// The node that proposed it.
    pub origin: u64,
    /// The origin's sequence number for this proposal: `(origin, seq)` makes a retried proposal
    /// a no-op. Sequence 0 is never deduplicated (used only by entries with their own key).
    pub seq: u64,
    /// The leader's wall clock when it wrote the entry, Unix ms. Not log time: the state
    /// machine bounds log time from it and [`Proposal::clock`] (`state::logtime`).
    pub time_ms: u64,
    /// What else the leader knew of time when it wrote the entry.
    pub clock: LeaderClock,
    /// What to do.
    pub body: Body,
}

/// The leader's evidence about time, carried in every entry it writes so that every replica
/// bounds log time from the same data (`state::logtime`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaderClock {
    /// The leader's monotonic clock, ms (`Clock::mono_ms`): real time elapsed between two
    /// entries of one term, whatever its wall clock did.
    pub mono_ms: u64,
    /// The members' time by the leader's count, Unix ms: the median of the voters' wall
    /// clocks as their forwarded proposals reported them, projected to now; `None` while
    /// fewer than a majority of voters reported recently (`node::clockwatch`).
    pub quorum_ms: Option<u64>,
}

/// The kinds of proposal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Body {
    /// A batch of actor inputs, each a bincode-encoded `ghatta_actor_sdk::Input`; routed to the
    /// actor that owns the input's kind.
    Inputs(Vec<Vec<u8>>),
    /// A durable timer came due (proposed by the leader). Keyed by the timer id, so a repeated
    /// tick is a no-op.
    Tick {
        /// The timer.
        timer_id: u64,
    },
    /// The central data center acknowledged outbox records of WAN stream `stream` up to (not
    /// including) sequence `upto_seq`. Proposed by the WAN uploader (controller/src/wan) so that
    /// whichever node uploads next resumes there. Monotonic: a lower value is a no-op.
    OutboxAck {
        /// The WAN stream.
        stream: u32,
        /// Next sequence the central expects (everything below it is stored centrally).
        upto_seq: u64,
    },
    /// An actor module's chunk, deploy, rollback or the first signer list
    /// (`actors::deploy`, applied by `state::modules`).
    Actor(crate::actors::deploy::ActorOp),
    /// A board's own alarm rules: its whole active set and its raises and clears since its
    /// last committed report (`notify`, applied by `state::board_alarms`).
    BoardAlarms(board_alarms::BoardAlarms),
}

impl fmt::Display for Proposal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.body {
            Body::Inputs(v) => write!(f, "inputs({}) from {}#{}", v.len(), self.origin, self.seq),
            Body::Tick { timer_id } => write!(f, "tick({timer_id}) from {}", self.origin),
            Body::OutboxAck { stream, upto_seq } => {
                write!(f, "outbox-ack({stream} < {upto_seq}) from {}", self.origin)
            }
            Body::Actor(op) => write!(
                f,
                "actor-op({} bytes) from {}#{}",
                op.payload_bytes(),
                self.origin,
                self.seq
            ),
            Body::BoardAlarms(b) => write!(
                f,
                "board-alarms({} active, {} changes) from {}#{}",
                b.active.len(),
                b.changes.len(),
                self.origin,
                self.seq
            ),
        }
    }
}

/// What applying one entry answered.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    /// Log index of the entry.
    pub index: u64,
    /// The `(origin, seq)` was applied before: nothing was done this time.
    pub duplicate: bool,
    /// Inputs an actor handled.
    pub handled: u32,
    /// Inputs an actor rejected (deterministically; e.g. a replayed token).
    pub rejected: u32,
    /// Inputs whose actor trapped, ran out of fuel or memory (discarded on every replica).
    pub trapped: u32,
    /// State hash after this entry.
    pub state_hash: [u8; 32],
    /// Why inputs were refused (the first [`REFUSALS_PER_RECEIPT_MAX`]; `rejected` counts
    /// them all), so an operator's change is answered with the actor's reason, not a count.
    /// Not part of the state hash: it says what applying found, and every replica finds the
    /// same.
    pub refusals: Vec<Refusal>,
}

/// Refusals a receipt carries. An operator's change is one input, so one is all the admin API
/// needs; a field batch of meter reads may have many refused (a meter that went backwards),
/// and every receipt travels back to the proposer in a forwarded answer, so the list is kept
/// short and the count (`Receipt::rejected`) stays exact.
pub const REFUSALS_PER_RECEIPT_MAX: usize = 4;
/// Longest alarm text a refusal carries, bytes (an actor's alarm texts are one short line;
/// the actor limits bound outputs, this bounds what rides in every receipt).
pub const REFUSAL_TEXT_BYTES_MAX: usize = 200;

/// Why one input of an entry was refused, as applying it found (the same on every replica).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refusal {
    /// Position of the input in the entry.
    pub input: u32,
    /// The actor that refused it; `None` when no actor saw it (undecodable, or no actor takes
    /// that kind of input).
    pub actor: Option<ghatta_proto::outbox::ActorKind>,
    /// The actor's reason code (`ghatta_actor_sdk::RejectReason`); 0 when no actor saw it.
    pub code: i32,
    /// What the actor said: the text of the alarm it raised with the refusal, or the reason
    /// code's meaning when it raised none.
    pub text: String,
}

impl Refusal {
    /// The meaning of an actor's reason code (`ghatta_actor_sdk::RejectReason`).
    pub fn reason_name(code: i32) -> &'static str {
        use ghatta_actor_sdk::RejectReason as R;
        match code {
            c if c == R::NotForMe as i32 => "not for this actor",
            c if c == R::Unknown as i32 => "unknown customer, tariff or feeder",
            c if c == R::Replayed as i32 => "replayed: the token was used before",
            c if c == R::NotMonotonic as i32 => "the meter register went backwards",
            c if c == R::Invalid as i32 => "malformed or out of range",
            c if c == R::Stale as i32 => {
                "stale: a version at or above this one is already in force; send a higher version"
            }
            _ => "refused",
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let reason = Refusal::reason_name(self.code);
        match self.actor {
            Some(a) => write!(f, "refused by the {} actor: ", a.name())?,
            None => write!(f, "refused by the node: ")?,
        }
        if self.text == reason {
            write!(f, "{reason}")
        } else {
            write!(f, "{} ({reason})", self.text)
        }
    }
}
