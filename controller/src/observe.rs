//! Hooks through which a harness watches a node without changing what it does: the simulator's
//! checkers see every applied entry, snapshot and acknowledged proposal; and test-only fault
//! switches, so the checkers can be shown to catch a broken node (mutation tests).

use std::sync::atomic::AtomicBool;

use crate::state::{OutboxRecord, StateHash};

/// One applied log entry, as an observer sees it.
#[derive(Debug, Clone)]
pub struct AppliedEntry {
    /// Log index.
    pub index: u64,
    /// Digest of the entry (its log id and payload): equal on every replica for equal entries.
    pub entry_digest: StateHash,
    /// State hash after applying it.
    pub state_hash: StateHash,
    /// The proposal it carried, if any.
    pub proposal: Option<AppliedProposal>,
    /// Actor inputs it carried (bincode `ghatta_actor_sdk::Input`), empty for duplicates.
    pub inputs: Vec<Vec<u8>>,
    /// Outputs its application produced.
    pub outputs: Vec<OutboxRecord>,
}

/// The `(origin, seq)` of an applied proposal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppliedProposal {
    /// Proposing node.
    pub origin: u64,
    /// Its sequence number (0: not deduplicated).
    pub seq: u64,
    /// It had been applied before; nothing was done.
    pub duplicate: bool,
}

/// Watches a node. Every method has an empty default; calls happen on the node's own tasks, so
/// implementations must be quick (push into a queue).
pub trait NodeObserver: Send + Sync + 'static {
    /// The state machine applied an entry.
    fn entry_applied(&self, _node: u64, _entry: &AppliedEntry) {}
    /// The state machine installed a snapshot up to `index`.
    fn snapshot_installed(&self, _node: u64, _index: u64, _state_hash: StateHash) {}
    /// A proposal of this node was acknowledged as committed at `index`.
    fn proposal_acked(&self, _node: u64, _seq: u64, _index: u64) {}
}

/// Deliberate bugs and old behaviours, off by default, switched on only by tests.
#[derive(Debug, Default)]
pub struct TestFaults {
    /// Acknowledge log appends without an fsync (breaks Raft's durability assumption).
    pub ack_before_fsync: AtomicBool,
    /// Apply a retried `(origin, seq)` again instead of dropping it (breaks exactly-once).
    pub skip_dedupe: AtomicBool,
    /// Leave `Request::AppendProbe` unanswered, as a node running a ghatta from before it
    /// (which cannot decode it) does.
    pub ignore_append_probe: AtomicBool,
}
