//! Answers peers' requests: Raft RPCs, snapshot chunks, forwarded proposals, membership ops
//! and pings.

use std::sync::Mutex;
use std::time::Duration;

use openraft::ServerState;
use openraft::raft::AppendEntriesRequest;
use openraft_rt::WatchReceiver;

use super::Node;
use super::guard::Refusal;
use super::snapshot_in::{Inbox, Kept, View, check_chunk};
use crate::raft::TypeConfig;
use crate::rpc::Handler;
use crate::rpc::wire::{ForwardError, ProbeAnswer, Request, Response, SnapshotChunk};
use ghatta_proto::codec;

/// Largest snapshot a node accepts from a leader (`codec::SNAPSHOT_BYTES_MAX`, which says why
/// it is that large).
pub const MAX_SNAPSHOT_BYTES: u64 = codec::SNAPSHOT_BYTES_MAX as u64;

/// An append whose `prev_log_id` is past this node's log is held for up to the heartbeat
/// interval over this (one RTT by `Timing::for_rtt`) for the appends before it: a leader
/// pipelines appends (`rpc/pipeline.rs`) and our links do not keep order, so the one behind
/// may arrive first. Long enough for a frame overtaken by jitter or by a fragmented frame's
/// repeat; shorter than the append's deadline, so an append whose predecessor was lost for
/// good is answered `Conflict` before the leader gives up on it.
pub const REORDER_WAIT_HEARTBEAT_DIVISOR: u32 = 2;

/// The request handler of one node.
pub(crate) struct NodeHandler {
    node: Node,
    /// The snapshot being received (`snapshot_in`).
    snapshots: Mutex<Inbox>,
}

impl NodeHandler {
    pub(crate) fn new(node: Node) -> Self {
        NodeHandler {
            node,
            snapshots: Mutex::new(Inbox::default()),
        }
    }

    /// Holds an append that starts past this node's log until the log reaches its
    /// `prev_log_id` or [`REORDER_WAIT_HEARTBEAT_DIVISOR`] runs out; openraft then judges it
    /// (a gap still there is answered `Conflict`, as before).
    async fn await_earlier_appends(&self, r: &AppendEntriesRequest<TypeConfig>) {
        let Some(prev) = r.prev_log_id.as_ref().map(|p| p.index) else {
            return;
        };
        let raft = self.node.raft();
        if raft.metrics().borrow_watched().last_log_index >= Some(prev) {
            return;
        }
        let wait = Duration::from_millis(raft.config().heartbeat_interval)
            / REORDER_WAIT_HEARTBEAT_DIVISOR;
        if raft
            .wait(Some(wait))
            .log_index_at_least(Some(prev), "the appends before a pipelined one")
            .await
            .is_err()
        {
            tracing::debug!(
                prev,
                wait_ms = wait.as_millis() as u64,
                "an append starts past this node's log and the appends before it did not come"
            );
        }
    }

    async fn snapshot_chunk(&self, from: u64, c: SnapshotChunk) -> Response {
        if c.total_len > MAX_SNAPSHOT_BYTES {
            return Response::Snapshot(Err(format!(
                "snapshot of {} bytes exceeds this node's limit of {MAX_SNAPSHOT_BYTES}",
                c.total_len
            )));
        }
        let view = {
            let m = self.node.raft().metrics();
            let m = m.borrow_watched();
            View {
                vote: m.vote,
                committed: m.local_committed,
            }
        };
        if let Err(why) = check_chunk(from, &c, &view) {
            let why = self.node.inner.guard.refuse(from, why);
            return Response::Snapshot(Err(format!("snapshot refused: {why}")));
        }
        let vote = c.vote;
        let kept = {
            let Ok(mut inbox) = self.snapshots.lock() else {
                return Response::Snapshot(Err("snapshot buffer unavailable".into()));
            };
            let sm = &self.node.inner.sm;
            inbox.keep(from, c, tokio::time::Instant::now(), || {
                sm.receive_snapshot()
            })
        };
        let snapshot = match kept {
            Ok(Kept::More) => return Response::Snapshot(Ok(None)),
            Ok(Kept::Complete(s)) => s,
            Err(e) => return Response::Snapshot(Err(e.to_string())),
        };
        // openraft's install cannot refuse: a state machine that fails to install stops the
        // node. An image that does not decode, or is not of the index its metadata names, is
        // refused here instead, and the leader sends it again.
        // A read of the whole snapshot, a record at a time: off the async worker
        // (`storage::blocking`).
        let checked = crate::storage::blocking(|| {
            crate::state::check_image(&snapshot.meta, &snapshot.snapshot)
        });
        if let Err(e) = checked {
            let why = self
                .node
                .inner
                .guard
                .refuse(from, Refusal::SnapshotInconsistent);
            return Response::Snapshot(Err(format!("snapshot refused: {why}: {e}")));
        }
        match self.node.raft().install_full_snapshot(vote, snapshot).await {
            Ok(r) => Response::Snapshot(Ok(Some(r))),
            Err(e) => Response::Snapshot(Err(e.to_string())),
        }
    }

    /// Whether this node abstains from votes (`node::amnesia`).
    fn abstains(&self) -> bool {
        let m = self.node.raft().metrics();
        let m = m.borrow_watched();
        let follows = m.vote.is_committed() && m.current_leader.is_some();
        self.node.inner.amnesia.abstains(follows, m.last_log_index)
    }

    /// Drops a snapshot transfer that went quiet (`snapshot_in::TRANSFER_IDLE_MAX`); called on
    /// every request, so a leader that moved on frees its bytes within a heartbeat of the
    /// limit.
    fn expire_snapshot(&self) {
        if let Ok(mut inbox) = self.snapshots.try_lock() {
            inbox.expire(tokio::time::Instant::now());
        }
    }
}

impl Handler for NodeHandler {
    async fn handle(&self, from: u64, req: Request) -> Response {
        self.expire_snapshot();
        let raft = self.node.raft();
        match req {
            Request::Append(r) => {
                self.await_earlier_appends(&r).await;
                Response::Append(raft.append_entries(r).await.map_err(|e| e.to_string()))
            }
            Request::AppendProbe(r) => {
                if self.node.inner.faults.ignore_append_probe() {
                    // Never answered, as by a board whose ghatta cannot decode the request;
                    // but not held forever: this task holds the node, whose files and port a
                    // restart of it needs.
                    let _ = raft
                        .wait(None)
                        .metrics(|m| m.state == ServerState::Shutdown, "this node stops")
                        .await;
                    return Response::AppendProbe(Err("this node stopped".into()));
                }
                let answer = match raft.append_entries(r).await {
                    Ok(response) => self
                        .node
                        .inner
                        .log
                        .last_log_id()
                        .map(|last_log_id| ProbeAnswer {
                            response,
                            last_log_id,
                        })
                        .map_err(|e| format!("reading the last log id: {e}")),
                    Err(e) => Err(e.to_string()),
                };
                Response::AppendProbe(answer)
            }
            Request::Vote(_) | Request::PreVote(_) if self.abstains() => Response::Vote(Err(
                "this node lost its Raft log and takes no part in elections until a leader \
                 reaches it"
                    .into(),
            )),
            Request::Vote(r) => Response::Vote(raft.vote(r).await.map_err(|e| e.to_string())),
            Request::PreVote(r) => {
                Response::Vote(raft.pre_vote(r).await.map_err(|e| e.to_string()))
            }
            Request::Snapshot(c) => self.snapshot_chunk(from, c).await,
            Request::Forward(f) => {
                let guard = &self.node.inner.guard;
                let bytes = super::proposer::body_bytes(&f.body) as u64;
                let now_ms = self.node.clock().mono_ms();
                Response::Forward(match guard.check_forward(from, &f) {
                    // Over the member's rate: a `Raft` error, which its proposer retries after
                    // a back-off (a `Refused` one it would give up on).
                    Ok(()) => match guard.check_forward_rate(from, bytes, now_ms) {
                        Ok(()) => self.node.inner.proposer.write_local(&self.node, f).await,
                        Err(limited) => Err(ForwardError::Raft(limited.to_string())),
                    },
                    Err(why) => Err(ForwardError::Refused(why.to_string())),
                })
            }
            // Any node answers, member or not: a leader pings a node before adding it.
            Request::Ping => Response::Pong { id: self.node.id() },
            Request::Member(op) => {
                let voter = self.node.is_voter(from);
                Response::Member(match self.node.inner.guard.check_member_op(from, voter) {
                    Ok(()) => self.node.member_local(op).await,
                    Err(why) => Err(ForwardError::Refused(why.to_string())),
                })
            }
        }
    }
}
