//! The messages nodes exchange inside frames: Raft RPCs, snapshot chunks, forwarded proposals.

use serde::{Deserialize, Serialize};

use crate::raft::{Body, Receipt, SnapshotMeta, TypeConfig, Vote};

/// One message in a frame's payload.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WireMessage {
    /// Correlates a response with its request (chosen by the caller).
    pub id: u64,
    /// Request or response.
    pub body: WireBody,
}

/// Request or response.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum WireBody {
    /// A request to handle.
    Request(Request),
    /// The answer to an earlier request.
    Response(Response),
}

/// Requests.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Request {
    /// Raft AppendEntries (§5.3), also the heartbeat.
    Append(openraft::raft::AppendEntriesRequest<TypeConfig>),
    /// Raft RequestVote (§5.2).
    Vote(openraft::raft::VoteRequest<TypeConfig>),
    /// Pre-vote: would you vote for me? (no term change; keeps flapping links from
    /// disrupting a healthy leader).
    PreVote(openraft::raft::VoteRequest<TypeConfig>),
    /// One chunk of a snapshot (InstallSnapshot, §7).
    Snapshot(SnapshotChunk),
    /// A proposal forwarded to the leader.
    Forward(Forward),
    /// A membership change forwarded to the leader.
    Member(MemberOp),
    /// AppendEntries whose answer also carries the follower's last log id: what a new leader
    /// sends until it knows how far a follower's log matches its own (`rpc/network.rs`,
    /// "Finding a follower's match point in one round trip").
    AppendProbe(openraft::raft::AppendEntriesRequest<TypeConfig>),
    /// Are you there, and who are you? A leader asks a node before adding it
    /// (`node::membership`); any node answers, member or not.
    Ping,
}

/// Membership changes an operator can ask any node for; the leader carries them out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MemberOp {
    /// Add a learner (it starts receiving the log).
    AddLearner {
        /// New node's id.
        id: u64,
        /// Its Raft address.
        addr: String,
    },
    /// Make a learner a voter.
    Promote {
        /// The learner.
        id: u64,
    },
    /// Remove a node from the cluster.
    Remove {
        /// The node.
        id: u64,
    },
}

/// Responses; remote failures travel as text (they are logged and mapped to retryable errors).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Response {
    /// To `Append`.
    Append(Result<openraft::raft::AppendEntriesResponse<TypeConfig>, String>),
    /// To `Vote` and `PreVote`.
    Vote(Result<openraft::raft::VoteResponse<TypeConfig>, String>),
    /// To `Snapshot`: `None` while chunks are still coming, the final response after the last.
    Snapshot(Result<Option<openraft::raft::SnapshotResponse<TypeConfig>>, String>),
    /// To `Forward`.
    Forward(Result<Receipt, ForwardError>),
    /// To `Member`.
    Member(Result<MemberOutcome, ForwardError>),
    /// To `AppendProbe`.
    AppendProbe(Result<ProbeAnswer, String>),
    /// To `Ping`: the answering node's id.
    Pong {
        /// Its id.
        id: u64,
    },
}

/// Whether a membership change has finished, as the caller is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MemberState {
    /// Committed: the membership below is the cluster's.
    Committed,
    /// Proposed and not yet committed; the leader carries on with it.
    InProgress,
    /// The leader did not answer in time: the change may or may not have been made.
    Unconfirmed,
}

impl std::fmt::Display for MemberState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            MemberState::Committed => "committed",
            MemberState::InProgress => "in progress",
            MemberState::Unconfirmed => "unconfirmed",
        })
    }
}

/// The answer to a membership change that was not refused.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MemberOutcome {
    /// Finished or not.
    pub state: MemberState,
    /// The voters the answering leader knows (both sets' union while joint).
    pub voters: Vec<u64>,
    /// The learners it knows.
    pub learners: Vec<u64>,
    /// What happened, for the operator.
    pub note: String,
}

/// A follower's answer to an [`Request::AppendProbe`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProbeAnswer {
    /// What `Append` would have answered.
    pub response: openraft::raft::AppendEntriesResponse<TypeConfig>,
    /// The last entry in the follower's durable log after the append (`None`: empty log).
    /// The leader trusts it only where its own log holds the same log id at that index.
    pub last_log_id: Option<crate::raft::LogId>,
}

/// A chunk of a snapshot stream.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SnapshotChunk {
    /// The leader's vote.
    pub vote: Vote,
    /// What the snapshot covers.
    pub meta: SnapshotMeta,
    /// Total size of the snapshot data.
    pub total_len: u64,
    /// Offset of this chunk.
    pub offset: u64,
    /// The bytes.
    pub data: Vec<u8>,
}

/// A proposal a follower forwards to the leader.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Forward {
    /// The proposing node.
    pub origin: u64,
    /// Its sequence number (for exactly-once).
    pub seq: u64,
    /// The origin's wall clock when it first sent this proposal, Unix ms: the leader compares
    /// it with its own clock to find out whether the members agree with it on time
    /// (`node::clockwatch`). A reading, not a command: from a member, never trusted further.
    pub origin_time_ms: u64,
    /// What to propose.
    pub body: Body,
}

/// Why a forwarded proposal was not committed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum ForwardError {
    /// The receiver is not the leader; try this one.
    #[error("not the leader (leader is {leader:?})")]
    NotLeader {
        /// Who the receiver believes leads.
        leader: Option<u64>,
    },
    /// Raft refused or failed.
    #[error("{0}")]
    Raft(String),
    /// The receiver refused the request as not its sender's to make (`node::guard`); retrying
    /// cannot help.
    #[error("refused: {0}")]
    Refused(String),
}
