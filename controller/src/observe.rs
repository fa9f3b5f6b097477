//! Hooks through which a harness watches a node without changing what it does: the simulator's
//! checkers see every applied entry, snapshot and acknowledged proposal; and test-only fault
//! switches, so the checkers can be shown to catch a broken node (mutation tests).
//!
//! A leaf: it imports nothing else of the crate, so every layer (log store, state machine,
//! node) can report through it. The switches exist only with the `test-faults` feature
//! (`ghatta-simulate` turns it on); without it every switch reads `false` and cannot be set.

#[cfg(feature = "test-faults")]
use std::sync::atomic::{AtomicBool, Ordering};

use ghatta_proto::outbox::OutboxRecord;

/// A digest as the state machine chains them (`state::StateHash`): equal on every replica
/// for equal histories.
pub type Digest = [u8; 32];

/// One applied log entry, as an observer sees it.
#[derive(Debug, Clone)]
pub struct AppliedEntry {
    /// Log index.
    pub index: u64,
    /// Digest of the entry (its log id and payload): equal on every replica for equal entries.
    pub entry_digest: Digest,
    /// State hash after applying it.
    pub state_hash: Digest,
    /// The proposal it carried, if any.
    pub proposal: Option<AppliedProposal>,
    /// Actor inputs it carried (bincode `ghatta_actor_sdk::Input`), empty for duplicates.
    pub inputs: Vec<Vec<u8>>,
    /// Outputs its application produced.
    pub outputs: Vec<OutboxRecord>,
    /// Log time after it, Unix ms (`state::logtime`).
    pub log_time_ms: u64,
    /// For a tick that fired its timer: the log time the timer was due, Unix ms.
    pub tick_due_ms: Option<u64>,
    /// Every alarm its actor deliveries raised (bincode `ghatta_actor_sdk::Output`), stored in
    /// `outputs` or counted as a repeat of one stored within the hour (`state::alarm_tally`),
    /// so an observer learns which inputs were refused even when no record was stored.
    pub alarms_raised: Vec<Vec<u8>>,
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
    fn snapshot_installed(&self, _node: u64, _index: u64, _state_hash: Digest) {}
    /// A proposal of this node was acknowledged as committed at `index`.
    fn proposal_acked(&self, _node: u64, _seq: u64, _index: u64) {}
}

/// Deliberate bugs and old behaviours, off by default, switched on only by tests (feature
/// `test-faults`; a build without it has no way to switch them on).
#[derive(Debug, Default)]
pub struct TestFaults {
    /// Acknowledge log appends without an fsync (breaks Raft's durability assumption).
    #[cfg(feature = "test-faults")]
    pub ack_before_fsync: AtomicBool,
    /// Apply a retried `(origin, seq)` again instead of dropping it (breaks exactly-once).
    #[cfg(feature = "test-faults")]
    pub skip_dedupe: AtomicBool,
    /// Leave `Request::AppendProbe` unanswered, as a node running a ghatta from before it
    /// (which cannot decode it) does.
    #[cfg(feature = "test-faults")]
    pub ignore_append_probe: AtomicBool,
    /// On the leader, append a retried proposal again while its first copy is still in
    /// flight (the behaviour before `node::inflight`; breaks "one copy in the log").
    #[cfg(feature = "test-faults")]
    pub append_retries: AtomicBool,
    /// Let log time follow the leader's wall clock unbounded (the behaviour before
    /// `state::logtime`; a leader's fast clock then moves log time for good).
    #[cfg(feature = "test-faults")]
    pub unbounded_log_time: AtomicBool,
    /// Number proposals from 1 on a blank state database at once (the behaviour before
    /// `node::proposer::SeqFloor`; a replaced board's proposals are then taken for its old
    /// board's retries and dropped).
    #[cfg(feature = "test-faults")]
    pub blank_seq_from_one: AtomicBool,
}

impl TestFaults {
    /// Whether log appends are acknowledged without an fsync.
    pub fn ack_before_fsync(&self) -> bool {
        #[cfg(feature = "test-faults")]
        return self.ack_before_fsync.load(Ordering::Relaxed);
        #[cfg(not(feature = "test-faults"))]
        false
    }

    /// Whether retried proposals are applied again.
    pub fn skip_dedupe(&self) -> bool {
        #[cfg(feature = "test-faults")]
        return self.skip_dedupe.load(Ordering::Relaxed);
        #[cfg(not(feature = "test-faults"))]
        false
    }

    /// Whether log time follows the leader's clock without the bound.
    pub fn unbounded_log_time(&self) -> bool {
        #[cfg(feature = "test-faults")]
        return self.unbounded_log_time.load(Ordering::Relaxed);
        #[cfg(not(feature = "test-faults"))]
        false
    }

    /// Whether a blank node numbers proposals without waiting to learn its floor.
    pub fn blank_seq_from_one(&self) -> bool {
        #[cfg(feature = "test-faults")]
        return self.blank_seq_from_one.load(Ordering::Relaxed);
        #[cfg(not(feature = "test-faults"))]
        false
    }

    /// Whether the leader appends retried proposals again.
    pub fn append_retries(&self) -> bool {
        #[cfg(feature = "test-faults")]
        return self.append_retries.load(Ordering::Relaxed);
        #[cfg(not(feature = "test-faults"))]
        false
    }

    /// Whether append probes go unanswered.
    pub fn ignore_append_probe(&self) -> bool {
        #[cfg(feature = "test-faults")]
        return self.ignore_append_probe.load(Ordering::Relaxed);
        #[cfg(not(feature = "test-faults"))]
        false
    }
}

/// Where a commit's time goes on one node, summed since it started: the log store's appends
/// and the state machine's applied batches, split into their parts. A harness attaches one
/// (`NodeBuilder::commit_timings`; `ghatta bench` prints them, BENCHMARKS.md "Where a commit's
/// time goes"); without one nothing reads the clock. Wall time, never replicated.
#[derive(Debug, Default)]
pub struct CommitTimings {
    /// Log write transactions of appended entries (each one fsync).
    pub log_appends: std::sync::atomic::AtomicU64,
    /// Entries in them.
    pub log_entries: std::sync::atomic::AtomicU64,
    /// Encoding the entries, ns.
    pub log_encode_ns: std::sync::atomic::AtomicU64,
    /// Opening the transaction and inserting the encoded entries, ns.
    pub log_write_ns: std::sync::atomic::AtomicU64,
    /// Committing it, the fsync included, ns.
    pub log_commit_ns: std::sync::atomic::AtomicU64,
    /// Batches the state machine applied (one redb transaction each).
    pub apply_batches: std::sync::atomic::AtomicU64,
    /// Entries in them.
    pub apply_entries: std::sync::atomic::AtomicU64,
    /// Waiting for the state machine's lock before a batch, ns.
    pub apply_lock_ns: std::sync::atomic::AtomicU64,
    /// A batch from the lock to its receipts, its transaction's commit included, ns.
    pub apply_ns: std::sync::atomic::AtomicU64,
    /// Of which actor deliveries (the actor host's work), ns.
    pub apply_deliver_ns: std::sync::atomic::AtomicU64,
    /// Of which the transaction's commit (no fsync: `state` module doc), ns.
    pub apply_commit_ns: std::sync::atomic::AtomicU64,
}

impl CommitTimings {
    /// Adds the time since `since` to `counter`.
    pub fn add_since(counter: &std::sync::atomic::AtomicU64, since: std::time::Instant) {
        let ns = u64::try_from(since.elapsed().as_nanos()).unwrap_or(u64::MAX);
        counter.fetch_add(ns, std::sync::atomic::Ordering::Relaxed);
    }

    /// Adds `n` to `counter`.
    pub fn add(counter: &std::sync::atomic::AtomicU64, n: u64) {
        counter.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
    }

    /// The counters by name, in declaration order (for a report).
    pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
        let r = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
        vec![
            ("log_appends", r(&self.log_appends)),
            ("log_entries", r(&self.log_entries)),
            ("log_encode_ns", r(&self.log_encode_ns)),
            ("log_write_ns", r(&self.log_write_ns)),
            ("log_commit_ns", r(&self.log_commit_ns)),
            ("apply_batches", r(&self.apply_batches)),
            ("apply_entries", r(&self.apply_entries)),
            ("apply_lock_ns", r(&self.apply_lock_ns)),
            ("apply_ns", r(&self.apply_ns)),
            ("apply_deliver_ns", r(&self.apply_deliver_ns)),
            ("apply_commit_ns", r(&self.apply_commit_ns)),
        ]
    }
}
