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
use crate::raft::timing::Timing;
use crate::raft::{Body, Proposal, Receipt};
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
                .unwrap_or(1)
        };
        // Also never below what the cluster has already applied from us (e.g. a node whose
        // local table was lost but whose replicated dedupe window survived).
        let start = stored.max(sm.highest_seq(me) + 1);
        Ok(Proposer {
            me,
            attempt: forward_attempt_timeout(timing),
            db,
            next: AtomicU64::new(start),
            reserved: AtomicU64::new(start),
            reserve_lock: Default::default(),
        })
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

    /// Propose a body with a fresh sequence number.
    pub(crate) async fn propose(&self, node: &Node, body: Body) -> Result<Receipt, ProposeError> {
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
        let fwd = Forward {
            origin: self.me,
            seq,
            body,
        };
        let deadline = tokio::time::Instant::now() + PROPOSE_DEADLINE;
        let mut hint: Option<u64> = None;
        let mut last = String::from("no leader known");
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
                    let call = node
                        .inner
                        .rpc
                        .call(l, Request::Forward(fwd.clone()), self.attempt);
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
                    tokio::time::sleep(NO_LEADER_RETRY).await;
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
        let raft = node.raft();
        let p = Proposal {
            origin: f.origin,
            seq: f.seq,
            time_ms: node.clock().now_ms(),
            body: f.body,
        };
        match raft.client_write(p).await {
            Ok(resp) => Ok(resp.data),
            Err(e) => match e.forward_to_leader() {
                Some(fwd) => Err(ForwardError::NotLeader {
                    leader: fwd.leader_id,
                }),
                None => Err(ForwardError::Raft(e.to_string())),
            },
        }
    }
}
