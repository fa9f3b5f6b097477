//! On the leader: each `(origin, seq)` is appended to the log at most once while it is not yet
//! applied, and a retry is answered with the first attempt's outcome.
//!
//! **Invariant**: a proposal with `seq != 0` has at most one copy in the uncommitted part of a
//! leader's log (the simulator checks it: `sim/src/check/proposals.rs`, `one_copy_in_log`).
//!
//! Why: a follower forwards a proposal and retries it when the answer does not come within the
//! attempt's deadline (`proposer::forward_attempt_timeout`). Before this module the leader
//! appended every retry again and dropped the copies only at apply. On a lossy, flapping link
//! commits took longer than the retry period, every retry added up to 16 KiB to the log, and
//! the copies kept commits that slow: the journals never drained (issue 27's storm).
//!
//! How, checked in this order under one lock:
//! 1. a proposal being appended by this leader (`pending`): the retry waits for that append's
//!    outcome, bounded by [`JOIN_WAIT_MAX`];
//! 2. a proposal already applied (the state machine's dedupe window): answered at once with its
//!    receipt when the state machine still has it, else as a duplicate;
//! 3. a proposal in this leader's log from an earlier term, not yet applied (`in_log`, read
//!    from the log once per term): the retry waits until that index is applied;
//! 4. otherwise it is appended, on a task of its own, so that a caller giving up cannot leave
//!    an append this module does not know about.
//!
//! Entries of the current term reach the log only through step 4, and entries of earlier
//! terms are all in the log when the term's first proposal seeds `in_log`, so no copy is
//! missed. A new leader's log may lack an entry an old leader appended; that copy is then
//! never committed (it is overwritten where it was replicated), so appending it again is
//! still one copy.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use openraft_rt::WatchReceiver;
use tokio::sync::watch;

use super::Node;
use crate::raft::{Proposal, Receipt};
use crate::rpc::wire::ForwardError;

/// Longest a retry waits for an earlier attempt of the same proposal before it is answered
/// "still in flight" (and retried by its origin after a back-off): the longest forwarded
/// attempt (`proposer::FORWARD_ATTEMPT_TIMEOUT`), so a waiting handler task lives no longer
/// than the attempt that is waiting for it.
pub const JOIN_WAIT_MAX: Duration = super::proposer::FORWARD_ATTEMPT_TIMEOUT;

/// Most proposals `in_log` remembers from a term's seeding. The unapplied part of a log is
/// small (a node snapshots and purges behind its applied index, `node::snapshots`); a leader
/// that finds more than this keeps the first ones and appends a retry of the rest again, as
/// before this module: memory stays bounded whatever a log holds.
pub const SEEDED_PROPOSALS_MAX: usize = 65_536;

type Key = (u64, u64);
type Outcome = Option<Result<Receipt, ForwardError>>;

#[derive(Default)]
struct State {
    /// The term `in_log` was read for (0: never).
    term: u64,
    /// Proposals found in this leader's log above its applied index when the term began.
    in_log: HashMap<Key, u64>,
    /// Proposals this leader is appending now; the channel carries the outcome.
    pending: HashMap<Key, watch::Receiver<Outcome>>,
}

/// The leader's record of proposals in flight (one per node; used only while it leads).
#[derive(Default)]
pub(crate) struct InFlight {
    state: Mutex<State>,
}

enum Step {
    Done(Result<Receipt, ForwardError>),
    Join(watch::Receiver<Outcome>),
    WaitApplied(u64),
}

impl InFlight {
    /// Append `p` unless a copy is pending, applied or in the log; answer with its outcome.
    pub(crate) async fn write(&self, node: &Node, p: Proposal) -> Result<Receipt, ForwardError> {
        let key = (p.origin, p.seq);
        // seq 0 is "no dedupe"; the skip-dedupe mutation switches the whole rule off.
        if p.seq == 0 || node.inner.faults.skip_dedupe() || node.inner.faults.append_retries() {
            return append(node, p).await;
        }
        let step = {
            let mut s = self.lock();
            self.seed_if_new_term(&mut s, node);
            if let Some(rx) = s.pending.get(&key) {
                Step::Join(rx.clone())
            } else if let Some(r) = node.inner.sm.proposal_outcome(p.origin, p.seq) {
                // Checked after `pending`: an append removes itself from `pending` only once
                // applied, so a proposal missing from both is not applied-and-forgotten.
                Step::Done(Ok(r))
            } else if let Some(&index) = s.in_log.get(&key) {
                Step::WaitApplied(index)
            } else {
                let (tx, rx) = watch::channel(None);
                s.pending.insert(key, rx.clone());
                let node = node.clone();
                tokio::spawn(async move {
                    let r = append(&node, p).await;
                    // Publish, then forget, under the lock (see the check order above).
                    let mut s = node.inner.inflight.lock();
                    tx.send_replace(Some(r));
                    s.pending.remove(&key);
                });
                Step::Join(rx)
            }
        };
        match step {
            Step::Done(r) => r,
            Step::Join(rx) => join(rx, key).await,
            Step::WaitApplied(index) => wait_applied(node, key, index).await,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // The state is a cache of the log and of tasks in flight: a panic while it was held
        // leaves nothing that must not be reused.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// At the first proposal of a term this node leads, read which proposals its log holds
    /// above the applied index.
    fn seed_if_new_term(&self, s: &mut State, node: &Node) {
        let (leader, term) = {
            let metrics = node.raft().metrics();
            let m = metrics.borrow_watched();
            (m.current_leader, m.current_term)
        };
        if leader != Some(node.inner.id) {
            // Not leading: the list belongs to a term that is over (its entries may have been
            // overwritten); the append below is refused with a hint to the leader.
            s.term = 0;
            s.in_log.clear();
            return;
        }
        if term == s.term {
            return;
        }
        s.term = term;
        s.in_log.clear();
        let applied = node.inner.sm.status().borrow().applied_index;
        match node
            .inner
            .log
            .proposals_after(applied, SEEDED_PROPOSALS_MAX)
        {
            Ok(found) => {
                for (index, origin, seq) in found {
                    if seq != 0 {
                        s.in_log.entry((origin, seq)).or_insert(index);
                    }
                }
            }
            // Without the list a retry of an old-term entry is appended again: a duplicate
            // that apply drops, as before this module. Worth a line, not a failure.
            Err(e) => tracing::warn!(
                "cannot read the log's unapplied proposals at the start of term {term}: {e}; \
                 retried proposals from earlier terms may be appended twice"
            ),
        }
    }
}

/// Write `p` through Raft (stamped by the caller), mapping openraft's refusal to a hint.
async fn append(node: &Node, p: Proposal) -> Result<Receipt, ForwardError> {
    match node.raft().client_write(p).await {
        Ok(resp) => Ok(resp.data),
        Err(e) => match e.forward_to_leader() {
            Some(fwd) => Err(ForwardError::NotLeader {
                leader: fwd.leader_id,
            }),
            None => Err(ForwardError::Raft(e.to_string())),
        },
    }
}

fn still_in_flight(key: Key) -> ForwardError {
    ForwardError::Raft(format!(
        "proposal ({}, {}) is still being committed; it will be answered on a later attempt",
        key.0, key.1
    ))
}

async fn join(mut rx: watch::Receiver<Outcome>, key: Key) -> Result<Receipt, ForwardError> {
    match tokio::time::timeout(JOIN_WAIT_MAX, rx.wait_for(Option::is_some)).await {
        Ok(Ok(outcome)) => outcome.clone().unwrap_or_else(|| Err(still_in_flight(key))),
        // The appending task ended without an outcome (the node is shutting down).
        Ok(Err(_)) => Err(ForwardError::Raft("the node is shutting down".into())),
        Err(_) => Err(still_in_flight(key)),
    }
}

/// A copy of the proposal sits at `index` of this leader's log: wait until it is applied.
async fn wait_applied(node: &Node, key: Key, index: u64) -> Result<Receipt, ForwardError> {
    let mut status = node.inner.sm.status();
    let applied =
        tokio::time::timeout(JOIN_WAIT_MAX, status.wait_for(|s| s.applied_index >= index)).await;
    match applied {
        Ok(Ok(_)) => match node.inner.sm.proposal_outcome(key.0, key.1) {
            Some(r) => Ok(r),
            // Another entry took that index: this node lost its leadership and its log was
            // overwritten. The origin retries with whoever leads now.
            None => Err(ForwardError::NotLeader {
                leader: node.raft().metrics().borrow_watched().current_leader,
            }),
        },
        Ok(Err(_)) => Err(ForwardError::Raft("the node is shutting down".into())),
        Err(_) => Err(still_in_flight(key)),
    }
}
