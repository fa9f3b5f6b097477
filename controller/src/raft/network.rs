//! openraft's network (v2) over our RPC layer: append, vote, pre-vote and chunked snapshots.
//!
//! Appends are sized and timed per peer from how earlier appends to that peer fared
//! ([`AppendPacing`]; `raft/timing.rs` says why openraft's own deadline is not enough on a
//! slow radio): an append that carries more bytes than the peer's link has been delivering
//! in time is cut to a prefix and answered to openraft as a partial success, and an append
//! that timed out makes the next one smaller and gives it longer. The base deadline of every
//! append is the heartbeat interval (2 RTT, `raft/timing.rs` says why).
//!
//! ## Why appends are not pipelined
//!
//! openraft 0.10.0-alpha.37 replicates through a stream (`RaftNetworkV2::stream_append`,
//! fed by its `StreamState`, which in "LogsSince" mode yields the next request as soon as new
//! entries are submitted); the default implementation, used here, sends one request and
//! waits for its answer before it pulls the next, so one batch per round trip per follower,
//! and openraft batches every entry submitted meanwhile (up to `max_payload_entries`) into
//! that next request. A pipelined override must hand the follower its requests in order
//! (openraft: "a custom pipelined implementation must yield responses in the same order";
//! the follower checks each request's `prev_log_id`). Our links do not keep order: the radio
//! link layer sends whole frames once and repeats only missing fragments, so a small frame
//! overtakes a fragmented one and a lost one is simply gone, and the simulator's jitter
//! reorders frames. Every request behind a lost or late one would answer `Conflict`, which
//! ends the stream and sends openraft back to probing (another round trip), and a cut append
//! (`PartialSuccess`, below) ends a pipeline by openraft's own rule. Pipelining would need a
//! per-peer sequence number and a reorder buffer on the follower feeding
//! `Raft::stream_append`; at the field loop's rate (one proposal per node per 5 s on a radio)
//! the pipe is idle when a proposal arrives (BENCHMARKS.md: p50 commit latency 1.03-1.1x its
//! floor), so the cost is not justified yet.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::OptionalSend;
use openraft::entry::RaftEntry;
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

/// Ceiling of the bytes of entries one append carries: openraft's `max_payload_entries`
/// (64) entries of field batches stay far below it on any link; it bounds the frame a
/// fast link is asked to carry whole.
pub const APPEND_BYTES_MAX: usize = 1 << 20;
/// Floor of the per-peer byte budget: one field batch on a radio (the field loop's 512-byte
/// proposal budget plus entry overhead) always fits, so a slow link still moves one entry
/// per append. An append always carries at least one entry, whatever its size.
pub const APPEND_BYTES_MIN: usize = 1_024;
/// Most an append's deadline is stretched past the heartbeat interval (a multiple of it).
/// 16 heartbeats is 32 RTTs (`Timing::for_rtt`), 26 s on an 800 ms radio, about the air
/// time of a 32 KiB catch-up append at 9.6 kbit/s: an append still unanswered by then is
/// lost, not slow.
pub const DEADLINE_STRETCH_MAX: u32 = 16;

/// How appends to one peer are sized and timed: additive-increase / multiplicative-decrease
/// on the byte budget, exponential backoff on the deadline (as TCP backs off its
/// retransmission timer), both learned only from appends that carried entries.
///
/// - An append answered in time lets the next carry half as many bytes again (up to
///   [`APPEND_BYTES_MAX`]); one answered within a quarter of its deadline, or within the
///   unstretched deadline, halves the stretch.
/// - An append that timed out halves the budget (to [`APPEND_BYTES_MIN`]) below what it
///   carried and doubles the stretch (to [`DEADLINE_STRETCH_MAX`]).
///
/// On a LAN appends are answered in milliseconds: the budget stays at its ceiling and the
/// deadline at one heartbeat. On a 64 kbit/s radio with 20 % loss a catch-up append of 64 field
/// batches (~32 KiB, over 4 s of air time and several rounds of repeated fragments) shrinks
/// to what the link delivers within the stretched deadline, so it arrives instead of being
/// resent whole forever.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendPacing {
    /// Bytes of entries the next append carries at most (at least one entry).
    pub bytes_max: usize,
    /// The deadline of an append carrying entries is the heartbeat interval times this.
    pub stretch: u32,
}

impl Default for AppendPacing {
    fn default() -> Self {
        AppendPacing {
            bytes_max: APPEND_BYTES_MAX,
            stretch: 1,
        }
    }
}

impl AppendPacing {
    /// The deadline for an append carrying entries, from the heartbeat interval.
    pub fn deadline(&self, heartbeat: Duration) -> Duration {
        heartbeat * self.stretch
    }

    /// An append of `bytes` bytes of entries was answered after `elapsed`, within `deadline`.
    pub fn answered(&mut self, bytes: usize, elapsed: Duration, deadline: Duration) {
        if bytes * 2 >= self.bytes_max {
            // The budget was what limited this append: let the next one carry more.
            self.bytes_max = (self.bytes_max + self.bytes_max / 2).min(APPEND_BYTES_MAX);
        }
        // Answered within a quarter of its deadline, or within the unstretched deadline: it
        // did not need the stretch. (On a lossy link most timeouts are a lost packet, not a
        // slow append; without the second rule the stretch ratcheted up to where a normal
        // answer took a quarter of it, and every later loss waited 4-8 heartbeats: leader
        // loss to next commit 18 s instead of 10 at 800 ms RTT.)
        let unstretched = deadline / self.stretch.max(1);
        if elapsed * 4 <= deadline || elapsed <= unstretched {
            self.stretch = (self.stretch / 2).max(1);
        }
    }

    /// An append of `bytes` bytes of entries got no answer within its deadline.
    pub fn timed_out(&mut self, bytes: usize) {
        self.bytes_max = (bytes.min(self.bytes_max) / 2).max(APPEND_BYTES_MIN);
        self.stretch = (self.stretch * 2).min(DEADLINE_STRETCH_MAX);
    }
}

/// Creates a network client per peer.
#[derive(Debug, Clone)]
pub struct NetworkFactory {
    rpc: Arc<Rpc>,
    /// Per peer, shared by every client made for it (openraft makes one per replication
    /// stream and one for heartbeats, and new ones after every leader change).
    pacing: Arc<Mutex<BTreeMap<u64, Arc<Mutex<AppendPacing>>>>>,
}

impl NetworkFactory {
    /// Over this node's RPC endpoint.
    pub fn new(rpc: Arc<Rpc>) -> Self {
        NetworkFactory {
            rpc,
            pacing: Arc::default(),
        }
    }
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = PeerNetwork;

    async fn new_client(&mut self, target: u64, node: &PeerInfo) -> PeerNetwork {
        if !node.addr.is_empty() {
            self.rpc.transport().set_peer_addr(target, &node.addr);
        }
        let pacing = lock(&self.pacing).entry(target).or_default().clone();
        PeerNetwork {
            rpc: self.rpc.clone(),
            target,
            pacing,
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The network client for one peer.
#[derive(Debug)]
pub struct PeerNetwork {
    rpc: Arc<Rpc>,
    target: u64,
    pacing: Arc<Mutex<AppendPacing>>,
}

/// Bytes of an entry on the wire (its encoding inside the append).
fn entry_bytes(e: &super::Entry) -> usize {
    super::codec::encode(e).map_or(0, |b| b.len())
}

/// Cuts `entries` to the longest prefix of at most `bytes_max` bytes (at least one entry).
/// Returns the bytes kept and whether anything was cut.
fn cut_to_budget(entries: &mut Vec<super::Entry>, bytes_max: usize) -> (usize, bool) {
    let mut kept = 0;
    let mut bytes = 0;
    for e in entries.iter() {
        let b = entry_bytes(e);
        if kept > 0 && bytes + b > bytes_max {
            break;
        }
        kept += 1;
        bytes += b;
    }
    let cut = kept < entries.len();
    entries.truncate(kept);
    (bytes, cut)
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

    async fn append_call(
        &self,
        rpc: AppendEntriesRequest<TypeConfig>,
        deadline: Duration,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        match self
            .rpc
            .call(self.target, Request::Append(rpc), deadline)
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
        mut rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        if rpc.entries.is_empty() {
            // A heartbeat (or an empty probe), nothing to learn: the heartbeat interval
            // (`hard_ttl`, 2 RTT by `Timing::for_rtt`) less an eighth, so the timeout is ours
            // and not openraft's cut at `hard_ttl`. openraft's `soft_ttl` (3/4) would fall
            // below a round trip stretched by jitter.
            return self.append_call(rpc, option.hard_ttl() * 7 / 8).await;
        }
        let pacing = *lock(&self.pacing);
        let (bytes, cut) = cut_to_budget(&mut rpc.entries, pacing.bytes_max);
        let last_sent = rpc.entries.last().map(|e| e.log_id());
        // openraft does not cut a replication stream at `hard_ttl` (the heartbeat interval);
        // the pacing stretches it for slow appends.
        let deadline = pacing.deadline(option.hard_ttl());
        let started = tokio::time::Instant::now();
        let result = self.append_call(rpc, deadline).await;
        let elapsed = started.elapsed();
        {
            let mut p = lock(&self.pacing);
            match &result {
                Ok(_) => p.answered(bytes, elapsed, deadline),
                Err(RPCError::Timeout(_)) => p.timed_out(bytes),
                Err(_) => {}
            }
            tracing::debug!(
                peer = self.target,
                bytes,
                cut,
                elapsed_ms = elapsed.as_millis() as u64,
                deadline_ms = deadline.as_millis() as u64,
                ok = result.is_ok(),
                next_bytes_max = p.bytes_max,
                next_stretch = p.stretch,
                "append"
            );
        }
        match result {
            // openraft sent more than we did: it resumes after what the peer now holds.
            Ok(AppendEntriesResponse::Success) if cut => {
                Ok(AppendEntriesResponse::PartialSuccess(last_sent))
            }
            other => other,
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

#[cfg(test)]
mod tests {
    use openraft::vote::RaftLeaderId;

    use super::*;
    use crate::raft::{Body, Entry, LogId, Proposal};

    fn entry(index: u64, input_bytes: usize) -> Entry {
        let leader = openraft::alias::LeaderIdOf::<TypeConfig>::new(1, 1);
        Entry::new_normal(
            LogId::new(leader.to_committed(), index),
            Proposal {
                origin: 1,
                seq: index,
                time_ms: 0,
                body: Body::Inputs(vec![vec![7; input_bytes]]),
            },
        )
    }

    #[test]
    fn an_append_is_cut_to_its_budget_but_never_below_one_entry() {
        let mut entries: Vec<Entry> = (1..=10).map(|i| entry(i, 500)).collect();
        let one = entry_bytes(&entries[0]);
        let (bytes, cut) = cut_to_budget(&mut entries, 3 * one + one / 2);
        assert!(cut);
        assert_eq!(entries.len(), 3);
        assert_eq!(bytes, 3 * one);
        assert_eq!(entries.last().map(|e| e.log_id().index()), Some(3));

        let mut big = vec![entry(1, 5_000), entry(2, 5_000)];
        let (bytes, cut) = cut_to_budget(&mut big, APPEND_BYTES_MIN);
        assert!(cut && big.len() == 1 && bytes > APPEND_BYTES_MIN);

        let mut fits: Vec<Entry> = (1..=4).map(|i| entry(i, 100)).collect();
        let (_, cut) = cut_to_budget(&mut fits, APPEND_BYTES_MAX);
        assert!(!cut && fits.len() == 4);
    }

    #[test]
    fn timeouts_shrink_the_budget_and_stretch_the_deadline_and_answers_undo_it() {
        let ttl = Duration::from_millis(1_410);
        let mut p = AppendPacing::default();
        assert_eq!(p.deadline(ttl), ttl, "a fresh peer gets one heartbeat");
        p.timed_out(32 * 1_024);
        assert_eq!((p.bytes_max, p.stretch), (16 * 1_024, 2));
        for _ in 0..10 {
            p.timed_out(p.bytes_max);
        }
        assert_eq!(p.bytes_max, APPEND_BYTES_MIN);
        assert_eq!(p.stretch, DEADLINE_STRETCH_MAX);
        assert_eq!(p.deadline(ttl), ttl * DEADLINE_STRETCH_MAX);
        // A slow answer (more than a quarter of the deadline) keeps the stretch but, having
        // used the whole budget, grows the budget.
        let d = p.deadline(ttl);
        p.answered(APPEND_BYTES_MIN, d / 2, d);
        assert_eq!(p.stretch, DEADLINE_STRETCH_MAX);
        assert_eq!(p.bytes_max, APPEND_BYTES_MIN * 3 / 2);
        // An answer within one unstretched deadline (a loss, not slowness, had stretched it)
        // halves the stretch.
        let mut lossy = p;
        lossy.answered(1, ttl, lossy.deadline(ttl));
        assert_eq!(lossy.stretch, DEADLINE_STRETCH_MAX / 2);
        // Fast answers bring the deadline back to one heartbeat and the budget to its ceiling.
        for _ in 0..64 {
            let d = p.deadline(ttl);
            p.answered(p.bytes_max, Duration::from_millis(5), d);
        }
        assert_eq!(p, AppendPacing::default());
        // A small append under a big budget does not grow the budget.
        let mut q = AppendPacing {
            bytes_max: 64 * 1_024,
            stretch: 1,
        };
        q.answered(1_000, Duration::from_millis(5), ttl);
        assert_eq!(q.bytes_max, 64 * 1_024);
    }
}
