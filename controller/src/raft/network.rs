//! openraft's network (v2) over our RPC layer: append, vote, pre-vote and chunked snapshots.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use openraft::OptionalSend;
use openraft::error::{
    NetworkError, RPCError, ReplicationClosed, StreamingError, Timeout, Unreachable,
};
use openraft::network::{RPCOption, RPCTypes, RaftNetworkFactory, RaftNetworkV2};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, VoteRequest, VoteResponse,
};

use super::{PeerInfo, Snapshot, TypeConfig, Vote};
use crate::net::rpc::{Rpc, RpcError};
use crate::net::wire::{Request, Response, SnapshotChunk};

/// Snapshot bytes per chunk. 64 KiB keeps one chunk well inside a TCP window and lets a
/// radio link (which fragments frames further) make progress between heartbeats.
pub const SNAPSHOT_CHUNK_BYTES: usize = 64 * 1024;

/// Creates a network client per peer.
#[derive(Debug, Clone)]
pub struct NetworkFactory {
    rpc: Arc<Rpc>,
}

impl NetworkFactory {
    /// Over this node's RPC endpoint.
    pub fn new(rpc: Arc<Rpc>) -> Self {
        NetworkFactory { rpc }
    }
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = PeerNetwork;

    async fn new_client(&mut self, target: u64, node: &PeerInfo) -> PeerNetwork {
        if !node.addr.is_empty() {
            self.rpc.transport().set_peer_addr(target, &node.addr);
        }
        PeerNetwork {
            rpc: self.rpc.clone(),
            target,
        }
    }
}

/// The network client for one peer.
#[derive(Debug)]
pub struct PeerNetwork {
    rpc: Arc<Rpc>,
    target: u64,
}

impl PeerNetwork {
    fn timeout_err(&self, action: RPCTypes, timeout: Duration) -> Timeout<TypeConfig> {
        Timeout {
            action,
            id: self.rpc.me(),
            target: self.target,
            timeout,
        }
    }

    fn map_err(&self, action: RPCTypes, e: RpcError) -> RPCError<TypeConfig> {
        match e {
            RpcError::Timeout { deadline, .. } => {
                RPCError::Timeout(self.timeout_err(action, deadline))
            }
            other => RPCError::Unreachable(Unreachable::from_string(other)),
        }
    }

    async fn vote_like(
        &self,
        req: Request,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        match self.rpc.call(self.target, req, option.soft_ttl()).await {
            Ok(Response::Vote(Ok(r))) => Ok(r),
            Ok(Response::Vote(Err(e))) => Err(RPCError::Network(NetworkError::from_string(e))),
            Ok(_) => Err(RPCError::Network(NetworkError::from_string(
                "unexpected response to a vote",
            ))),
            Err(e) => Err(self.map_err(RPCTypes::Vote, e)),
        }
    }
}

impl RaftNetworkV2<TypeConfig> for PeerNetwork {
    type SnapshotData = Vec<u8>;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        match self
            .rpc
            .call(self.target, Request::Append(rpc), option.soft_ttl())
            .await
        {
            Ok(Response::Append(Ok(r))) => Ok(r),
            Ok(Response::Append(Err(e))) => Err(RPCError::Network(NetworkError::from_string(e))),
            Ok(_) => Err(RPCError::Network(NetworkError::from_string(
                "unexpected response to append",
            ))),
            Err(e) => Err(self.map_err(RPCTypes::AppendEntries, e)),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.vote_like(Request::Vote(rpc), option).await
    }

    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.vote_like(Request::PreVote(rpc), option).await
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: Snapshot,
        cancel: impl Future<Output = ReplicationClosed> + OptionalSend + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let send_all = async {
            let data = &snapshot.snapshot;
            let total_len = data.len() as u64;
            let mut offset = 0usize;
            loop {
                let end = (offset + SNAPSHOT_CHUNK_BYTES).min(data.len());
                let chunk = SnapshotChunk {
                    vote,
                    meta: snapshot.meta.clone(),
                    total_len,
                    offset: offset as u64,
                    data: data[offset..end].to_vec(),
                };
                let resp = self
                    .rpc
                    .call(self.target, Request::Snapshot(chunk), option.soft_ttl())
                    .await;
                match resp {
                    Ok(Response::Snapshot(Ok(Some(done)))) => return Ok(done),
                    Ok(Response::Snapshot(Ok(None))) if end < data.len() => offset = end,
                    Ok(Response::Snapshot(Ok(None))) => {
                        return Err(StreamingError::Network(NetworkError::from_string(
                            "peer did not finish the snapshot",
                        )));
                    }
                    Ok(Response::Snapshot(Err(e))) => {
                        return Err(StreamingError::Network(NetworkError::from_string(e)));
                    }
                    Ok(_) => {
                        return Err(StreamingError::Network(NetworkError::from_string(
                            "unexpected response to a snapshot chunk",
                        )));
                    }
                    Err(RpcError::Timeout { deadline, .. }) => {
                        return Err(StreamingError::Timeout(
                            self.timeout_err(RPCTypes::InstallSnapshot, deadline),
                        ));
                    }
                    Err(e) => return Err(StreamingError::Unreachable(Unreachable::from_string(e))),
                }
            }
        };
        tokio::select! {
            biased;
            closed = cancel => Err(StreamingError::Closed(closed)),
            r = send_all => r,
        }
    }
}
