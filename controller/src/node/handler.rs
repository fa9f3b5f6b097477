//! Answers peers' requests: Raft RPCs, snapshot chunks, forwarded proposals, membership ops
//! and pings.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use openraft::ServerState;
use openraft::raft::AppendEntriesRequest;
use openraft_rt::WatchReceiver;

use super::Node;
use crate::raft::{Snapshot, TypeConfig};
use crate::rpc::Handler;
use crate::rpc::wire::{ForwardError, ProbeAnswer, Request, Response, SnapshotChunk};
use ghatta_proto::codec;

/// Largest snapshot a node accepts from a leader: what it can decode
/// (`codec::SNAPSHOT_BYTES_MAX`, which says why it is that large).
pub const MAX_SNAPSHOT_BYTES: u64 = codec::SNAPSHOT_BYTES_MAX as u64;

/// An append whose `prev_log_id` is past this node's log is held for up to the heartbeat
/// interval over this (one RTT by `Timing::for_rtt`) for the appends before it: a leader
/// pipelines appends (`rpc/pipeline.rs`) and our links do not keep order, so the one behind
/// may arrive first. Long enough for a frame overtaken by jitter or by a fragmented frame's
/// repeat; shorter than the append's deadline, so an append whose predecessor was lost for
/// good is answered `Conflict` before the leader gives up on it.
pub const REORDER_WAIT_HEARTBEAT_DIVISOR: u32 = 2;

struct Incoming {
    meta: crate::raft::SnapshotMeta,
    total_len: u64,
    data: Vec<u8>,
}

/// The request handler of one node.
pub(crate) struct NodeHandler {
    node: Node,
    /// Snapshot being received, per sending leader.
    snapshots: Mutex<HashMap<u64, Incoming>>,
}

impl NodeHandler {
    pub(crate) fn new(node: Node) -> Self {
        NodeHandler {
            node,
            snapshots: Mutex::new(HashMap::new()),
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
        let complete = {
            let Ok(mut map) = self.snapshots.lock() else {
                return Response::Snapshot(Err("snapshot buffer unavailable".into()));
            };
            if c.offset == 0 {
                map.insert(
                    from,
                    Incoming {
                        meta: c.meta.clone(),
                        total_len: c.total_len,
                        data: Vec::new(),
                    },
                );
            }
            let Some(inc) = map.get_mut(&from) else {
                return Response::Snapshot(Err(
                    "snapshot chunk without a start; restart the transfer".into(),
                ));
            };
            if inc.meta != c.meta
                || inc.total_len != c.total_len
                || inc.data.len() as u64 != c.offset
            {
                map.remove(&from);
                return Response::Snapshot(Err(
                    "snapshot chunk out of sequence; restart the transfer".into(),
                ));
            }
            if inc.data.len() as u64 + c.data.len() as u64 > inc.total_len {
                map.remove(&from);
                return Response::Snapshot(
                    Err("snapshot chunk beyond the announced length".into()),
                );
            }
            inc.data.extend_from_slice(&c.data);
            if (inc.data.len() as u64) < inc.total_len {
                None
            } else {
                map.remove(&from)
            }
        };
        let Some(inc) = complete else {
            return Response::Snapshot(Ok(None));
        };
        let snapshot = Snapshot {
            meta: inc.meta,
            snapshot: inc.data,
        };
        match self
            .node
            .raft()
            .install_full_snapshot(c.vote, snapshot)
            .await
        {
            Ok(r) => Response::Snapshot(Ok(Some(r))),
            Err(e) => Response::Snapshot(Err(e.to_string())),
        }
    }
}

impl Handler for NodeHandler {
    async fn handle(&self, from: u64, req: Request) -> Response {
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
            Request::Vote(r) => Response::Vote(raft.vote(r).await.map_err(|e| e.to_string())),
            Request::PreVote(r) => {
                Response::Vote(raft.pre_vote(r).await.map_err(|e| e.to_string()))
            }
            Request::Snapshot(c) => self.snapshot_chunk(from, c).await,
            Request::Forward(f) => {
                Response::Forward(match self.node.inner.guard.check_forward(from, &f) {
                    Ok(()) => self.node.inner.proposer.write_local(&self.node, f).await,
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
