//! Proposing: sequence numbers that survive restarts, forwarding to the leader, retries.
//!
//! Every proposal carries `(origin, seq)`. Sequence numbers are reserved durably in blocks
//! before use, so a node that restarts never reuses one (a reused number would be dropped as a
//! duplicate: data loss). The leader stamps the proposal with its clock when it writes it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use openraft_rt::WatchReceiver;
use redb::{Database, ReadableDatabase};

use super::Node;
use super::clockwatch::ClockWatch;
use crate::raft::timing::Timing;
use crate::raft::{Body, LeaderClock, Proposal, Receipt};
use crate::rpc::wire::{Forward, ForwardError, Request, Response};
use crate::state::StateMachine;
use crate::storage::{NODE_LOCAL, STATE_DB, StoreError};

/// Sequence numbers reserved per durable write: one fsync per 256 proposals, and a restart
/// skips at most 256 numbers (well inside the dedupe window of 4,096).
pub const SEQ_RESERVE_BLOCK: u64 = 256;
/// How long one proposal may take, across leader changes and retries, before the caller gets
/// an error (and retries later with the same sequence number). 30 s covers an election on an
/// 800 ms radio link with margin.
pub const PROPOSE_DEADLINE: Duration = Duration::from_secs(30);
/// Longest deadline of one forwarded attempt (and the deadline of a forwarded membership
/// change).
pub const FORWARD_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// Shortest deadline of one forwarded attempt: on a LAN a loaded board's fsyncs, not the
/// link, set how long a commit takes.
pub const FORWARD_ATTEMPT_MIN: Duration = Duration::from_secs(2);

/// Deadline of one forwarded attempt under `timing`: four heartbeats (8 RTTs by
/// `Timing::for_rtt`). A forwarded proposal is answered within a round trip to the leader
/// plus the leader's commit, one append round trip, or two and a heartbeat's deadline when
/// the first append is lost (5 RTTs); an attempt whose request or answer was lost on the
/// link is retried after this, not after [`FORWARD_ATTEMPT_TIMEOUT`] (on the 800 ms radio a
/// lost forward otherwise dominated the forwarded p99: BENCHMARKS.md, "Radio at 800 ms RTT").
pub fn forward_attempt_timeout(timing: &Timing) -> Duration {
    Duration::from_millis(timing.heartbeat_ms.saturating_mul(4))
        .clamp(FORWARD_ATTEMPT_MIN, FORWARD_ATTEMPT_TIMEOUT)
}
/// Wait between attempts while no leader is known.
pub const NO_LEADER_RETRY: Duration = Duration::from_millis(200);
/// Longest wait between two attempts of one proposal after failed attempts. The wait doubles
/// from [`NO_LEADER_RETRY`] with each failure up to this, with jitter: a link slow enough to
/// fail attempts gets fewer retries, not more, and the members that lost the same answers do
/// not retry in step. 5 s keeps several attempts inside [`PROPOSE_DEADLINE`].
pub const RETRY_BACKOFF_MAX: Duration = Duration::from_secs(5);
/// Most input bytes this node's forwarded proposals may have on the way to the leader at once.
/// Every attempt carries the whole proposal, and on a radio link a retried 16 KiB batch costs
/// seconds of air time that the leader's appends need: four full field batches (64 KiB) keep
/// the pipeline busy without letting retries crowd out replication. A larger proposal waits
/// for the whole budget.
pub const FORWARD_BYTES_IN_FLIGHT_MAX: usize = 64 * 1024;
/// Bytes counted for a proposal beyond its inputs (ids, framing; operator bodies are this).
const FORWARD_OVERHEAD_BYTES: usize = 64;

const KEY_NEXT_SEQ: &str = "next_seq";

/// Why a proposal did not commit.
#[derive(Debug, thiserror::Error)]
pub enum ProposeError {
    /// No leader accepted it before the deadline; retrying with the same seq is safe.
    #[error(
        "no leader committed proposal {seq} within {deadline:?} (last error: {last}); it is safe to retry"
    )]
    Deadline {
        /// The proposal's sequence number.
        seq: u64,
        /// The deadline.
        deadline: Duration,
        /// The last failure seen.
        last: String,
    },
    /// The local database failed.
    #[error("cannot reserve a proposal sequence number: {0}")]
    Storage(#[from] StoreError),
    /// The leader refused the proposal as not this node's to make (`node::guard`).
    #[error("the leader refused proposal {seq}: {why}")]
    Refused {
        /// The proposal's sequence number.
        seq: u64,
        /// The leader's reason.
        why: String,
    },
    /// The node does not know yet which sequence numbers are free: its state database holds no
    /// reservation (a new board, or one replaced under the same id) and its state machine has
    /// not applied what its leader reported committed. Retry later.
    #[error(
        "this node's state database records no sequence numbers (a new or replaced board), and it has applied up to index {applied} of the {committed} its leader reported committed; it numbers proposals once it has caught up, so that none reuses a number an earlier board under its id used (those would be dropped as duplicates): wait, and check that it is a member (`ghatta status` on the leader)"
    )]
    CatchingUp {
        /// Index this node's state machine applied.
        applied: u64,
        /// What it must apply first ("none known" before a leader reached it).
        committed: String,
    },
    /// A thread panicked while it reserved sequence numbers; the node must restart.
    #[error(
        "the sequence reservation lock is poisoned (a thread panicked while holding it); restart the node"
    )]
    Poisoned,
}

/// Most input bytes one proposal may carry. Every entry must fit whole in one append frame
/// (`net::tcp::TCP_FRAME_BYTES_MAX`, 2 MiB, and far smaller radio budgets carry it in
/// fragments); a field batch is at most 16 KiB and an operator's input a few hundred bytes,
/// so 512 KiB is room for any real batch while an oversized one (a bug, or a member forwarding
/// junk) is refused before it can stall replication.
pub const PROPOSAL_INPUT_BYTES_MAX: usize = 512 * 1024;

pub(crate) struct Proposer {
    me: u64,
    attempt: Duration,
    db: Arc<Database>,
    next: AtomicU64,
    reserved: AtomicU64,
    reserve_lock: std::sync::Mutex<()>,
    /// Bytes of forwarded proposals on the way ([`FORWARD_BYTES_IN_FLIGHT_MAX`]).
    forward_budget: tokio::sync::Semaphore,
    /// The members' clocks as their forwards reported them (used while leading).
    clocks: std::sync::Mutex<ClockWatch>,
    /// Whether the first free sequence number is known ([`SeqFloor`]).
    floor: std::sync::Mutex<SeqFloor>,
}

/// Whether a node knows its first free sequence number. A node whose state database holds a
/// reservation knows it (the reservation is fsynced before any number of it is used). A blank
/// one may be a founding member, whose numbers start at 1, or a board replaced under the id of
/// one that proposed for months: the cluster's dedupe window remembers those, so the node
/// learns the floor from its state machine, and only once it has applied everything its leader
/// reported committed when it first heard from it. (An operator removes a dead member before
/// its replacement joins, `node::membership`, so every proposal of the old board was committed
/// before the new board hears from a leader.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SeqFloor {
    /// Numbers may be taken.
    Known,
    /// Blank state database: waiting to apply this index (`None`: no leader heard yet).
    AwaitApplied(Option<u64>),
}

impl SeqFloor {
    /// The next state given what the node knows now: `leader_commit` is the commit index its
    /// leader reported (`None` while it knows no leader), `applied` its state machine's applied
    /// index. Returns whether numbers may be taken.
    pub(crate) fn advance(&mut self, leader_commit: Option<u64>, applied: u64) -> bool {
        if let SeqFloor::AwaitApplied(target) = *self {
            let target = target.or(leader_commit);
            *self = match target {
                Some(t) if applied >= t => SeqFloor::Known,
                _ => SeqFloor::AwaitApplied(target),
            };
        }
        *self == SeqFloor::Known
    }
}

impl Proposer {
    pub(crate) fn new(
        me: u64,
        timing: &Timing,
        db: Arc<Database>,
        sm: &StateMachine,
    ) -> std::io::Result<Self> {
        let stored = {
            let txn = db.begin_read().map_err(STATE_DB.begin("read"))?;
            let t = txn.open_table(NODE_LOCAL).map_err(STATE_DB.table())?;
            t.get(KEY_NEXT_SEQ)
                .map_err(STATE_DB.read())?
                .map(|v| v.value())
        };
        let floor = match stored {
            Some(_) => SeqFloor::Known,
            None => SeqFloor::AwaitApplied(None),
        };
        let stored = stored.unwrap_or(1);
        // Also never below what the cluster has already applied from us (e.g. a node whose
        // local table was lost but whose replicated dedupe window survived).
        let start = stored.max(sm.highest_seq(me) + 1);
        Ok(Proposer {
            clocks: std::sync::Mutex::new(ClockWatch::default()),
            me,
            attempt: forward_attempt_timeout(timing),
            db,
            next: AtomicU64::new(start),
            reserved: AtomicU64::new(start),
            reserve_lock: Default::default(),
            forward_budget: tokio::sync::Semaphore::new(FORWARD_BYTES_IN_FLIGHT_MAX),
            floor: std::sync::Mutex::new(floor),
        })
    }

    /// Whether sequence numbers may be taken ([`SeqFloor`]); when the floor becomes known,
    /// the next number is raised past every one the cluster applied from this id.
    pub(crate) fn ready(&self, node: &Node) -> Result<(), ProposeError> {
        let mut floor = self.floor.lock().map_err(|_| ProposeError::Poisoned)?;
        if *floor == SeqFloor::Known || node.inner.faults.blank_seq_from_one() {
            return Ok(());
        }
        let (leader_commit, applied) = {
            let m = node.raft().metrics();
            let m = m.borrow_watched();
            let commit = m
                .current_leader
                .map(|_| m.cluster_committed.as_ref().map_or(0, |l| l.index()));
            (commit, m.last_applied.as_ref().map_or(0, |l| l.index()))
        };
        if !floor.advance(leader_commit, applied) {
            let committed = match *floor {
                SeqFloor::AwaitApplied(Some(t)) => t.to_string(),
                _ => "none known".into(),
            };
            return Err(ProposeError::CatchingUp { applied, committed });
        }
        let first_free = node.state_machine().highest_seq(self.me) + 1;
        self.next.fetch_max(first_free, Ordering::SeqCst);
        Ok(())
    }

    /// Take the next sequence number, reserving a new block durably when needed.
    pub(crate) fn next_seq(&self) -> Result<u64, ProposeError> {
        let seq = self.next.fetch_add(1, Ordering::SeqCst);
        if seq >= self.reserved.load(Ordering::SeqCst) {
            let _g = self
                .reserve_lock
                .lock()
                .map_err(|_| ProposeError::Poisoned)?;
            if seq >= self.reserved.load(Ordering::SeqCst) {
                let ceiling = seq + SEQ_RESERVE_BLOCK;
                let res = (|| -> Result<(), StoreError> {
                    let txn = self.db.begin_write().map_err(STATE_DB.begin("write"))?;
                    txn.open_table(NODE_LOCAL)
                        .map_err(STATE_DB.table())?
                        .insert(KEY_NEXT_SEQ, ceiling)
                        .map_err(STATE_DB.write())?;
                    txn.commit().map_err(STATE_DB.commit())
                })();
                res?;
                self.reserved.store(ceiling, Ordering::SeqCst);
            }
        }
        Ok(seq)
    }

    /// Propose a body with a fresh sequence number (waiting, up to [`PROPOSE_DEADLINE`], for
    /// this node to know which numbers are free: [`SeqFloor`]).
    pub(crate) async fn propose(&self, node: &Node, body: Body) -> Result<Receipt, ProposeError> {
        let deadline = tokio::time::Instant::now() + PROPOSE_DEADLINE;
        while let Err(e) = self.ready(node) {
            if tokio::time::Instant::now() >= deadline {
                return Err(e);
            }
            tokio::time::sleep(NO_LEADER_RETRY).await;
        }
        let seq = self.next_seq()?;
        self.submit(node, seq, body).await
    }

    /// Submit `(me, seq, body)` until a leader commits it or the deadline passes.
    pub(crate) async fn submit(
        &self,
        node: &Node,
        seq: u64,
        body: Body,
    ) -> Result<Receipt, ProposeError> {
        let bytes = forward_bytes(&body);
        let fwd = Forward {
            origin: self.me,
            seq,
            origin_time_ms: node.clock().now_ms(),
            body,
        };
        let deadline = tokio::time::Instant::now() + PROPOSE_DEADLINE;
        let mut hint: Option<u64> = None;
        let mut last = String::from("no leader known");
        // Attempts that failed without naming another leader: they lengthen the next
        // attempt's deadline and the wait before it.
        let mut failures: u32 = 0;
        while tokio::time::Instant::now() < deadline {
            let leader = match hint.take() {
                Some(l) => Some(l),
                None => node.raft().current_leader().await,
            };
            let result = match leader {
                None => {
                    tokio::time::sleep(NO_LEADER_RETRY).await;
                    continue;
                }
                Some(l) if l == self.me => self.write_local(node, fwd.clone()).await,
                Some(l) => {
                    let Ok(Ok(_permit)) =
                        tokio::time::timeout_at(deadline, self.forward_budget.acquire_many(bytes))
                            .await
                    else {
                        last = "this node's forwarded proposals filled the link's budget".into();
                        break;
                    };
                    let attempt = attempt_timeout(self.attempt, failures);
                    let call = node
                        .inner
                        .rpc
                        .call(l, Request::Forward(fwd.clone()), attempt);
                    // A new leader makes this attempt moot: retry there at once rather than wait
                    // out the attempt's deadline for a leader that may be dead (the retry keeps
                    // the sequence number, so a commit by both is applied once).
                    // Only a change counts: a hint may already point away from what this node
                    // believes.
                    let known = node.raft().metrics().borrow_watched().current_leader;
                    let wait = node.raft().wait(None);
                    let moved = wait.metrics(
                        move |m| {
                            m.current_leader.is_some()
                                && m.current_leader != known
                                && m.current_leader != Some(l)
                        },
                        "another leader",
                    );
                    tokio::select! {
                        r = call => match r {
                            Ok(Response::Forward(r)) => r,
                            Ok(_) => Err(ForwardError::Raft(
                                "unexpected response to a forwarded proposal".into(),
                            )),
                            Err(e) => Err(ForwardError::Raft(e.to_string())),
                        },
                        m = moved => Err(ForwardError::NotLeader {
                            leader: m.ok().and_then(|m| m.current_leader),
                        }),
                    }
                }
            };
            match result {
                Ok(receipt) => {
                    if let Some(o) = &node.inner.observer {
                        o.proposal_acked(self.me, seq, receipt.index);
                    }
                    return Ok(receipt);
                }
                Err(ForwardError::Refused(why)) => {
                    return Err(ProposeError::Refused { seq, why });
                }
                Err(ForwardError::NotLeader { leader: better }) => {
                    last = format!("node {leader:?} is not the leader");
                    // Follow a hint to another node at once; a node pointing at itself or
                    // knowing no leader means an election is under way: wait a little.
                    hint = better.filter(|b| Some(*b) != leader);
                    if hint.is_none() {
                        tokio::time::sleep(NO_LEADER_RETRY).await;
                    }
                }
                Err(e) => {
                    last = e.to_string();
                    failures = failures.saturating_add(1);
                    tokio::time::sleep(retry_backoff(self.me, seq, failures)).await;
                }
            }
        }
        Err(ProposeError::Deadline {
            seq,
            deadline: PROPOSE_DEADLINE,
            last,
        })
    }

    /// On the leader: stamp and write. Anywhere else: say who leads.
    pub(crate) async fn write_local(
        &self,
        node: &Node,
        f: Forward,
    ) -> Result<Receipt, ForwardError> {
        if let Body::Inputs(inputs) = &f.body {
            let bytes: usize = inputs.iter().map(Vec::len).sum();
            if bytes > PROPOSAL_INPUT_BYTES_MAX {
                return Err(ForwardError::Refused(format!(
                    "a proposal of {bytes} input bytes exceeds {PROPOSAL_INPUT_BYTES_MAX}; split it"
                )));
            }
        }
        if let Body::Actor(op) = &f.body
            && op.payload_bytes() > crate::actors::deploy::ACTOR_OP_BYTES_MAX
        {
            return Err(ForwardError::Refused(format!(
                "an actor operation of {} bytes exceeds {}; modules go in chunks",
                op.payload_bytes(),
                crate::actors::deploy::ACTOR_OP_BYTES_MAX
            )));
        }
        if let Body::BoardAlarms(b) = &f.body
            && let Err(why) = b.check()
        {
            return Err(ForwardError::Refused(format!("board alarm report: {why}")));
        }
        let (time_ms, clock) = self.stamp(node, Some((f.origin, f.origin_time_ms)));
        let p = Proposal {
            origin: f.origin,
            seq: f.seq,
            time_ms,
            clock,
            body: f.body,
        };
        // Appended once however often it is retried (`node::inflight`).
        node.inner.inflight.write(node, p).await
    }
}

impl Proposer {
    /// What the leader stamps an entry with now: its wall clock and the evidence the state
    /// machine bounds log time by (`state::logtime`), after counting `reading` (a member's
    /// clock from its forward; the leader's own proposals are not readings).
    pub(crate) fn stamp(&self, node: &Node, reading: Option<(u64, u64)>) -> (u64, LeaderClock) {
        let now_ms = node.clock().now_ms();
        let mono_ms = node.clock().mono_ms();
        let voters: Vec<u64> = node
            .raft()
            .metrics()
            .borrow_watched()
            .membership_config
            .membership()
            .voter_ids()
            .collect();
        let mut clocks = self.clocks.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((origin, origin_ms)) = reading.filter(|(o, _)| *o != self.me) {
            clocks.record(origin, origin_ms, mono_ms);
        }
        let quorum_ms = clocks.quorum_ms(self.me, &voters, now_ms, mono_ms);
        (now_ms, LeaderClock { mono_ms, quorum_ms })
    }
}

/// Bytes a forwarded proposal counts against [`FORWARD_BYTES_IN_FLIGHT_MAX`] (as semaphore
/// permits: at most the whole budget, so an oversized one waits for all of it, not forever).
fn forward_bytes(body: &Body) -> u32 {
    let bytes = body_bytes(body);
    u32::try_from(bytes.min(FORWARD_BYTES_IN_FLIGHT_MAX)).unwrap_or(u32::MAX)
}

/// The bytes a forward of `body` carries: its inputs, module bytes or alarm texts, plus the
/// forward's own fields ([`FORWARD_OVERHEAD_BYTES`]).
pub(super) fn body_bytes(body: &Body) -> usize {
    let inputs: usize = match body {
        Body::Inputs(inputs) => inputs.iter().map(Vec::len).sum(),
        Body::Actor(op) => op.payload_bytes(),
        Body::BoardAlarms(b) => b
            .active
            .iter()
            .map(|a| a.rule.len() + a.text.len())
            .chain(b.changes.iter().map(|c| c.rule.len() + c.text.len()))
            .sum(),
        _ => 0,
    };
    inputs.saturating_add(FORWARD_OVERHEAD_BYTES)
}

/// Deadline of an attempt after `failures` failed ones: `first`, doubled per failure, up to
/// [`FORWARD_ATTEMPT_TIMEOUT`] (a leader slower than the first deadline gets the time it needs
/// rather than a retry that costs it more).
fn attempt_timeout(first: Duration, failures: u32) -> Duration {
    first
        .saturating_mul(1u32 << failures.min(8))
        .min(FORWARD_ATTEMPT_TIMEOUT.max(first))
}

/// Wait after the `failures`-th failed attempt of `(me, seq)`: [`NO_LEADER_RETRY`] doubled per
/// failure up to [`RETRY_BACKOFF_MAX`], scaled by a jitter in [0.5, 1) drawn from the
/// proposal's identity (deterministic, so the simulator replays it; different per member and
/// proposal, so members do not retry in step).
fn retry_backoff(me: u64, seq: u64, failures: u32) -> Duration {
    let base = NO_LEADER_RETRY
        .saturating_mul(1u32 << failures.saturating_sub(1).min(8))
        .min(RETRY_BACKOFF_MAX);
    let mut z = me
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(seq.rotate_left(17))
        .wrapping_add(u64::from(failures));
    // splitmix64's finaliser: every input bit moves every output bit.
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    let jitter = 0.5 + (z >> 11) as f64 / (1u64 << 53) as f64 / 2.0;
    base.mul_f64(jitter)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Caught by the simulator's replace-node scenario (issue 27): a board replaced under the
    /// same id started numbering at 1 on blank disks, and the leader answered its proposals as
    /// retries of the old board's, so its reads were acknowledged and dropped for minutes.
    #[test]
    fn a_blank_node_numbers_proposals_only_after_applying_what_its_leader_committed() {
        let mut f = SeqFloor::AwaitApplied(None);
        assert!(!f.advance(None, 0), "no leader heard: the floor is unknown");
        assert!(
            !f.advance(Some(2_500), 10),
            "a leader's commit not yet applied"
        );
        assert_eq!(f, SeqFloor::AwaitApplied(Some(2_500)));
        // The target is the commit first heard of, not a later one that keeps moving.
        assert!(!f.advance(Some(2_600), 2_499));
        assert!(f.advance(Some(2_700), 2_500));
        assert_eq!(f, SeqFloor::Known);
        assert!(f.advance(None, 0), "known stays known");
        // A founding member: its first leader has committed nothing it lacks.
        let mut founding = SeqFloor::AwaitApplied(None);
        assert!(founding.advance(Some(0), 0));
    }

    #[test]
    fn retries_back_off_with_jitter_up_to_the_cap() {
        let mut last_base = Duration::ZERO;
        for failures in 1..12 {
            let base = NO_LEADER_RETRY
                .saturating_mul(1u32 << (failures - 1).min(8))
                .min(RETRY_BACKOFF_MAX);
            assert!(base >= last_base);
            last_base = base;
            for seq in 1..50 {
                let d = retry_backoff(3, seq, failures);
                assert!(
                    d >= base / 2 && d < base,
                    "{failures} {seq}: {d:?} vs {base:?}"
                );
            }
        }
        assert_eq!(last_base, RETRY_BACKOFF_MAX);
        // Members that lost the same answer wait different times.
        let waits: std::collections::BTreeSet<_> =
            (1..=5).map(|me| retry_backoff(me, 42, 3)).collect();
        assert_eq!(waits.len(), 5);
        // Deterministic: the simulator replays it.
        assert_eq!(retry_backoff(2, 9, 4), retry_backoff(2, 9, 4));
    }

    #[test]
    fn attempt_deadlines_grow_to_the_longest_attempt() {
        let first = Duration::from_secs(2);
        assert_eq!(attempt_timeout(first, 0), first);
        assert_eq!(attempt_timeout(first, 1), Duration::from_secs(4));
        assert_eq!(attempt_timeout(first, 2), Duration::from_secs(8));
        assert_eq!(attempt_timeout(first, 3), FORWARD_ATTEMPT_TIMEOUT);
        assert_eq!(attempt_timeout(first, 40), FORWARD_ATTEMPT_TIMEOUT);
    }

    #[test]
    fn a_proposal_counts_its_inputs_against_the_budget_never_more_than_all_of_it() {
        assert_eq!(forward_bytes(&Body::Inputs(vec![vec![0; 1000]; 3])), 3064);
        assert_eq!(
            forward_bytes(&Body::Inputs(vec![vec![0; 300_000]])) as usize,
            FORWARD_BYTES_IN_FLIGHT_MAX
        );
    }
}
