//! openraft's network (v2) over our RPC layer: append, vote, pre-vote and chunked snapshots.
//!
//! Appends are sized and timed per peer from how earlier appends to that peer fared
//! ([`AppendPacing`]; `raft/timing.rs` says why openraft's own deadline is not enough on a
//! slow radio): an append that carries more bytes than the peer's link has been delivering
//! in time is cut to a prefix and answered to openraft as a partial success, and an append
//! that timed out makes the next one smaller and gives it longer.
//!
//! ## Deadlines from the measured round trip
//!
//! Each peer has a round-trip estimate (`raft::rtt`, RFC 6298's SRTT and RTTVAR) fed by
//! every answered append, heartbeat and vote, starting from the link the timing was built
//! for (`Timing::link_design`: one heartbeat as the first deadline, what every RPC had
//! before). The base deadline of an append is `SRTT + 4 RTTVAR` plus its air time at the
//! link's bit rate (`Transport::bitrate_bps`, known on a serial radio): a lost append on a
//! steady link is resent after about a round trip and a half, not two, and a link with more
//! jitter than its design gets longer deadlines instead of timeouts. Heartbeats and votes
//! get the whole window openraft gives them (7/8 of its cut: the heartbeat, and the shortest
//! election timeout): a shorter deadline there gains nothing, since neither is resent before
//! its next round, and loses the late answer (a vote cut at 3/4 of 1.8 s against a radio
//! round trip with its jitter cost whole election rounds, issue 26). `Timing` makes that
//! window cover the design's deadline plus a vote's air time (`raft/timing.rs`).
//!
//! ## Finding a follower's match point in one round trip
//!
//! A new leader does not know how far each follower's log matches its own, and openraft
//! (0.10.0-alpha.37, `ProgressEntry::next_send`) finds out by binary search from the middle
//! of the log, one AppendEntries per step: on the radio, with the byte budget at ~8 entries,
//! 5-10 round trips (~8 s at 800 ms RTT) between the election and the new leader's first
//! commit. Two things here make it one:
//!
//! - The new leader's first append to a peer is not openraft's probe but its own term's
//!   entries (its blank entry, and whatever was proposed since) after the last entry of an
//!   earlier term, with that entry as `prev_log_id`, which a follower that was up to date
//!   with the old leader holds ([`LogStore::leader_tail`]).
//! - Until the peer's match point is known, appends go as `Request::AppendProbe`, whose
//!   answer also carries the follower's last durable log id. When this leader's log holds
//!   the same log id, the logs are equal up to it (Raft's Log Matching Property, §5.3), and
//!   openraft's probes at or below it are answered `Success` here, without a round trip
//!   ([`MatchHint`], [`shortcut`]); an append straddling it sends only what follows.
//!
//! Without a usable tail (a leader that has led a while meets a new client for the peer, or
//! the tail is larger than the peer's byte budget) the first probe is cut to one entry: its
//! entries are most likely held, and the answer brings the last log id all the same. The
//! hint is keyed by the leader's vote and trusted only while that vote leads; a follower's
//! entries up to it are durable (it reads them from redb, where only fsynced transactions
//! are visible), so a `Success` given here says no more than the follower said itself.
//!
//! The new leader's own proposals still wait one more round trip: openraft refuses writes
//! (`LeaseExpired`) until a quorum has acknowledged the new leader, which is the answer to
//! this first append. What the probe saved on leader loss to the next commit is measured in
//! BENCHMARKS.md, "Radio at 800 ms RTT"; the rest is failure detection, the election and
//! that round trip.
//!
//! ## Pipelined appends
//!
//! Once a follower's match point is known, openraft's replication stream goes out with up to
//! four appends in flight (`rpc/pipeline.rs` says how and why it is safe on links that do
//! not keep order).

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::Stream;
use openraft::OptionalSend;
use openraft::base::{BoxFuture, BoxStream};
use openraft::entry::RaftEntry;
use openraft::error::{
    NetworkError, RPCError, ReplicationClosed, StreamingError, Timeout, Unreachable,
};
use openraft::network::{RPCOption, RPCTypes, RaftNetworkFactory, RaftNetworkV2};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, VoteRequest, VoteResponse,
};

use super::pipeline::{Pipeline, StreamItem};
use super::wire::{Request, Response, SnapshotChunk};
use super::{Rpc, RpcError};
use crate::raft::log_store::LogStore;
use crate::raft::rtt::{LinkDesign, RttEstimator, air_time};
use crate::raft::timing::{VOTE_AIR_BYTES, VOTE_DEADLINE_EIGHTHS};
use crate::raft::{LogId, PeerInfo, Snapshot, TypeConfig, Vote};

/// Snapshot bytes per chunk. 64 KiB keeps one chunk well inside a TCP window and lets a
/// radio link (which fragments frames further) make progress between heartbeats; it is the
/// snapshot file's chunk, so each chunk sent is one stored chunk read.
pub const SNAPSHOT_CHUNK_BYTES: usize = crate::storage::snapshot_file::FILE_CHUNK_BYTES;

/// Ceiling of the bytes of entries one append carries: openraft's `max_payload_entries`
/// (64) entries of field batches stay far below it on any link; it bounds the frame a
/// fast link is asked to carry whole.
pub const APPEND_BYTES_MAX: usize = 1 << 20;
/// Floor of the per-peer byte budget: one field batch on a radio (the field loop's 512-byte
/// proposal budget plus entry overhead) always fits, so a slow link still moves one entry
/// per append. An append always carries at least one entry, whatever its size.
pub const APPEND_BYTES_MIN: usize = 1_024;
/// Most an append's deadline is stretched past its base (`raft::rtt`; at first one
/// heartbeat). 16 heartbeats is 32 RTTs (`Timing::for_rtt`), 26 s on an 800 ms radio, about
/// the air time of a 32 KiB catch-up append at 9.6 kbit/s: an append still unanswered by
/// then is lost, not slow.
pub const DEADLINE_STRETCH_MAX: u32 = 16;
/// Bytes an append puts on the air besides its entries: the request's and the answer's
/// headers, the radio packet headers and CRCs of its fragments (a heartbeat, which carries no
/// entry, is 31 bytes on the air and its answer 20: BENCHMARKS.md, "Radio at 800 ms RTT").
pub const APPEND_AIR_OVERHEAD_BYTES: usize = 64;
/// Of every RPC's deadline, the share of openraft's cut (`RPCOption::hard_ttl`) it may
/// use, in eighths: our timeout must come before openraft drops the call. openraft's
/// `soft_ttl` (3/4) fell below a radio round trip stretched by jitter.
pub const TTL_SHARE_EIGHTHS: u32 = 7;

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
    /// The deadline for an append carrying entries, from its base deadline (`raft::rtt`).
    pub fn deadline(&self, base: Duration) -> Duration {
        base * self.stretch
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

/// What a leader keeps per peer across the network clients openraft makes for it.
#[derive(Debug)]
struct PeerState {
    pacing: AppendPacing,
    /// The peer's round trip, from answered RPCs (module docs).
    rtt: RttEstimator,
    matched: Option<MatchHint>,
    /// The leader vote under which the first append (its term's tail, or a one-entry
    /// probe) was answered by this peer.
    probed: Option<Vote>,
    /// `AppendProbe`s to this peer in a row that got no answer.
    probe_failures: u32,
    /// The leader vote under which this peer stopped being asked for its last log id.
    probe_off: Option<Vote>,
    /// How far the peer acknowledged the last snapshot sent to it: a transfer cut by a
    /// timeout resumes there (the peer keeps what it received, `node::snapshot_in`).
    snapshot_acked: Option<SnapshotAcked>,
}

/// The snapshot (by vote, last log id and length) and the bytes of it a peer acknowledged.
#[derive(Debug, Clone, PartialEq, Eq)]
struct SnapshotAcked {
    vote: Vote,
    last: Option<LogId>,
    total_len: u64,
    offset: usize,
}

impl PeerState {
    fn new(design: LinkDesign) -> Self {
        PeerState {
            pacing: AppendPacing::default(),
            rtt: RttEstimator::new(design),
            matched: None,
            probed: None,
            probe_failures: 0,
            probe_off: None,
            snapshot_acked: None,
        }
    }
}

/// After this many `AppendProbe`s in a row without an answer the leader stops asking the
/// peer for its last log id until the next leader vote and sends plain appends, found by
/// openraft's own search: a peer running a ghatta from before `AppendProbe` cannot decode
/// it and never answers, which would otherwise stop replication to it during a board-by-board
/// upgrade. Three losses in a row of a one- or two-frame request are rare on a working link.
pub const PROBE_FAILURES_MAX: u32 = 3;

/// Creates a network client per peer.
#[derive(Debug, Clone)]
pub struct NetworkFactory {
    rpc: Arc<Rpc>,
    /// This node's Raft log, read to check a follower's reported last log id.
    log: LogStore,
    /// The link the timing was built for: where each peer's round-trip estimate starts.
    design: LinkDesign,
    /// Per peer, shared by every client made for it (openraft makes one per replication
    /// stream and one for heartbeats, and new ones after every leader change).
    peers: Arc<Mutex<BTreeMap<u64, Arc<Mutex<PeerState>>>>>,
}

impl NetworkFactory {
    /// Over this node's RPC endpoint, with its Raft log, on links designed as `design`
    /// (`Timing::link_design`).
    pub fn new(rpc: Arc<Rpc>, log: LogStore, design: LinkDesign) -> Self {
        NetworkFactory {
            rpc,
            log,
            design,
            peers: Arc::default(),
        }
    }
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = PeerNetwork;

    async fn new_client(&mut self, target: u64, node: &PeerInfo) -> PeerNetwork {
        if !node.addr.is_empty() {
            self.rpc.transport().set_peer_addr(target, &node.addr);
        }
        let design = self.design;
        let state = lock(&self.peers)
            .entry(target)
            .or_insert_with(|| Arc::new(Mutex::new(PeerState::new(design))))
            .clone();
        PeerNetwork {
            rpc: self.rpc.clone(),
            log: self.log.clone(),
            target,
            state,
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The network client for one peer. Clones share the peer's state (a pipelined stream
/// sends each append on a clone).
#[derive(Debug, Clone)]
pub struct PeerNetwork {
    rpc: Arc<Rpc>,
    log: LogStore,
    target: u64,
    state: Arc<Mutex<PeerState>>,
}

/// How far a follower's log is known to match this leader's: the follower reported
/// `matched` as its last durable log id in answer to an append of leader `vote`, and this
/// leader's log holds the same log id. By Raft's Log Matching Property (§5.3) the two logs
/// are then equal up to `matched`, and stay so while `vote` leads (a leader never rewrites its
/// own log; only a higher vote can make the follower truncate, and then this leader's
/// appends fail anyway), unless the follower's disk loses what it held: any answer that
/// shows less drops the hint ([`forget_stale_hint`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MatchHint {
    /// The leader's vote the report was made under.
    pub vote: Vote,
    /// The follower's last log id, also in this leader's log.
    pub matched: LogId,
}

/// What to do with one append, given what is known of the peer's log.
#[derive(Debug, PartialEq, Eq)]
enum Shortcut {
    /// Every entry is at or below the match point: the peer holds them all; answer
    /// `Success` without sending.
    AlreadyHeld,
    /// Send only the entries after the match point, with it as `prev_log_id`.
    SendAfter(LogId),
    /// Send the append as it is.
    Send,
}

/// Decides [`Shortcut`] for an append of leader `vote` after `prev` with entries up to
/// `last` (the request has entries).
fn shortcut(hint: Option<&MatchHint>, vote: &Vote, prev: Option<&LogId>, last: &LogId) -> Shortcut {
    let Some(h) = hint.filter(|h| &h.vote == vote) else {
        return Shortcut::Send;
    };
    if last.index() <= h.matched.index() {
        Shortcut::AlreadyHeld
    } else if prev.map_or(0, |p| p.index() + 1) <= h.matched.index() {
        Shortcut::SendAfter(h.matched)
    } else {
        Shortcut::Send
    }
}

/// What a peer's answer shows it does not hold.
#[derive(Debug, Clone, Copy)]
enum Lost<'a> {
    /// A `Conflict` to an append after this log id (`None`: from the start of the log): the
    /// peer lacks this entry.
    At(Option<&'a LogId>),
    /// The peer's last log id: it holds nothing after it.
    After(&'a LogId),
}

/// Drops the match hint when the peer shows it no longer holds an entry at or below the hint:
/// its log went back (a lost or restored data directory). The hint must never answer for
/// entries the peer lost, or the leader would count them toward a quorum; openraft, told of
/// the conflict, searches the match point again and sends the log anew
/// (`allow_log_reversion`, `raft/timing.rs`).
fn forget_stale_hint(hint: &mut Option<MatchHint>, lost: Lost<'_>, peer: u64) {
    let Some(h) = hint.as_ref() else { return };
    let went_back = match lost {
        Lost::At(None) => true,
        Lost::At(Some(at)) => at.index() <= h.matched.index(),
        Lost::After(last) => last.index() < h.matched.index(),
    };
    if went_back {
        tracing::warn!(
            peer,
            held = %h.matched,
            "the peer's Raft log went back (its data directory was lost or restored): \
             sending it the log again"
        );
        *hint = None;
    }
}

/// Bytes of an entry on the wire (its encoding inside the append).
pub(super) fn entry_bytes(e: &crate::raft::Entry) -> usize {
    ghatta_proto::codec::encode(e).map_or(0, |b| b.len())
}

/// Cuts `entries` to the longest prefix of at most `bytes_max` bytes (at least one entry).
/// Returns the bytes kept and whether anything was cut.
fn cut_to_budget(entries: &mut Vec<crate::raft::Entry>, bytes_max: usize) -> (usize, bool) {
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
    /// The peer's node id.
    pub(super) fn target(&self) -> u64 {
        self.target
    }

    /// Whether the peer's match point is known under leader `vote`: appends then go plain,
    /// in order from it, and may be pipelined.
    pub(super) fn match_point_known(&self, vote: &Vote) -> bool {
        lock(&self.state)
            .matched
            .as_ref()
            .is_some_and(|h| &h.vote == vote)
    }

    /// Bytes of entries the peer's link is currently trusted with at once.
    pub(super) fn bytes_budget(&self) -> usize {
        lock(&self.state).pacing.bytes_max
    }

    /// Air time of `bytes` on the link to the peer (zero on a fast link).
    fn air(&self, bytes: usize) -> Duration {
        air_time(bytes, self.rpc.transport().bitrate_bps(self.target))
    }

    /// The peer's round trip was `elapsed` for an RPC of air time `air`.
    fn rtt_sample(&self, elapsed: Duration, air: Duration) {
        lock(&self.state).rtt.sample(elapsed, air);
    }

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

    /// An append that also asks for the follower's last log id, kept as the peer's match
    /// point when this leader's log holds it.
    async fn probe_call(
        &self,
        rpc: AppendEntriesRequest<TypeConfig>,
        deadline: Duration,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        let vote = rpc.vote;
        let answer = match self
            .rpc
            .call(self.target, Request::AppendProbe(rpc), deadline)
            .await
        {
            Ok(Response::AppendProbe(Ok(a))) => a,
            Ok(Response::AppendProbe(Err(e))) => {
                return Err(RPCError::Network(NetworkError::from_string(e)));
            }
            Ok(_) => {
                return Err(RPCError::Network(NetworkError::from_string(
                    "unexpected response to an append probe",
                )));
            }
            Err(e) => return Err(self.map_err(RPCTypes::AppendEntries, e)),
        };
        // A higher vote says nothing about this leader's log; an unreadable log (reported,
        // not trusted) leaves openraft to its own search.
        if !matches!(answer.response, AppendEntriesResponse::HigherVote(_))
            && let Some(last) = answer.last_log_id
        {
            // A follower whose log went back answers with less than it held before.
            forget_stale_hint(
                &mut lock(&self.state).matched,
                Lost::After(&last),
                self.target,
            );
            match self.log.holds(&last) {
                Ok(true) => {
                    tracing::debug!(peer = self.target, matched = %last, "follower's log matches");
                    lock(&self.state).matched = Some(MatchHint {
                        vote,
                        matched: last,
                    });
                }
                Ok(false) => {}
                Err(e) => tracing::warn!(
                    peer = self.target,
                    error = %e,
                    "cannot read this node's Raft log to check a follower's last log id; \
                     the follower's match point is searched the slow way (check the disk)"
                ),
            }
        }
        Ok(answer.response)
    }

    async fn vote_like(
        &self,
        req: Request,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        // The whole window openraft gives (module docs); `Timing` makes it cover the link.
        let deadline = option.hard_ttl() * VOTE_DEADLINE_EIGHTHS / 8;
        let air = self.air(VOTE_AIR_BYTES);
        let started = tokio::time::Instant::now();
        let answer = self.rpc.call(self.target, req, deadline).await;
        match &answer {
            Ok(_) => self.rtt_sample(started.elapsed(), air),
            Err(RpcError::Timeout { .. }) => {
                let rtt = lock(&self.state).rtt;
                tracing::debug!(
                    peer = self.target,
                    deadline_ms = deadline.as_millis() as u64,
                    srtt_ms = rtt.srtt().as_millis() as u64,
                    rttvar_ms = rtt.rttvar().as_millis() as u64,
                    "vote not answered in time"
                );
            }
            Err(_) => {}
        }
        match answer {
            Ok(Response::Vote(Ok(r))) => Ok(r),
            Ok(Response::Vote(Err(e))) => Err(RPCError::Network(NetworkError::from_string(e))),
            Ok(_) => Err(RPCError::Network(NetworkError::from_string(
                "unexpected response to a vote",
            ))),
            Err(e) => Err(self.map_err(RPCTypes::Vote, e)),
        }
    }
}

/// How an append goes out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Send {
    /// `Request::Append`.
    Append,
    /// `Request::AppendProbe`: the answer also brings the peer's last log id.
    Probe,
}

/// Most entries of its own term a new leader puts in its first append to a peer; a longer
/// tail means the leader has led for a while and the peer's client is new, and the peer's
/// match point is then asked for with openraft's own probe.
pub const TAIL_ENTRIES_MAX: usize = 64;

impl PeerNetwork {
    /// The append of this leader's own term: its entries after the last entry of an earlier
    /// term, with that entry as `prev_log_id`. `None` when the log has no such entry, the
    /// term has more than [`TAIL_ENTRIES_MAX`] entries or they exceed the peer's byte budget.
    fn tail_append(
        &self,
        rpc: &AppendEntriesRequest<TypeConfig>,
    ) -> Option<AppendEntriesRequest<TypeConfig>> {
        use openraft::vote::RaftLeaderId;
        let leader = rpc.vote.leader_id().to_committed();
        let (prev, entries) = match self.log.leader_tail(&leader, TAIL_ENTRIES_MAX) {
            Ok(t) => t?,
            Err(e) => {
                tracing::warn!(peer = self.target, error = %e, "cannot read this node's Raft log tail; probing the slow way (check the disk)");
                return None;
            }
        };
        let bytes: usize = entries.iter().map(entry_bytes).sum();
        if bytes > lock(&self.state).pacing.bytes_max {
            return None;
        }
        Some(AppendEntriesRequest {
            vote: rpc.vote,
            prev_log_id: Some(prev),
            entries,
            leader_commit: rpc.leader_commit,
        })
    }

    /// Books the outcome of an `AppendProbe` of leader `vote`: an answer marks the peer
    /// probed under `vote`; [`PROBE_FAILURES_MAX`] failures in a row stop the probing.
    fn probe_answered(
        &self,
        vote: Vote,
        answer: Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>>,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        let mut st = lock(&self.state);
        if answer.is_ok() {
            st.probed = Some(vote);
            st.probe_failures = 0;
        } else {
            st.probe_failures += 1;
            if st.probe_failures >= PROBE_FAILURES_MAX {
                tracing::warn!(
                    peer = self.target,
                    failures = st.probe_failures,
                    "no answer to appends that ask for the peer's last log id; sending plain \
                     appends for this leader term (a peer with an older ghatta does not know \
                     them: upgrade it)"
                );
                st.probe_off = Some(vote);
                st.probe_failures = 0;
            }
        }
        answer
    }

    /// Sends an append cut to `budget` bytes of entries (at least one; `None`: the peer's
    /// budget), with the peer's paced deadline, learns from how it fared, and answers
    /// openraft for the whole request (a cut one as a partial success).
    async fn send_paced(
        &self,
        mut rpc: AppendEntriesRequest<TypeConfig>,
        how: Send,
        budget: Option<usize>,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        let (pacing, rtt) = {
            let st = lock(&self.state);
            (st.pacing, st.rtt)
        };
        let (bytes, cut) = cut_to_budget(&mut rpc.entries, budget.unwrap_or(pacing.bytes_max));
        let last_sent = rpc.entries.last().map(|e| e.log_id());
        let prev_sent = rpc.prev_log_id;
        // openraft does not cut a replication stream at `hard_ttl` (the heartbeat interval):
        // the base is the peer's measured round trip with this append's air time, and the
        // pacing stretches it for slow appends.
        let air = self.air(bytes + APPEND_AIR_OVERHEAD_BYTES);
        let deadline = pacing.deadline(rtt.deadline(air));
        let started = tokio::time::Instant::now();
        let result = match how {
            Send::Append => self.append_call(rpc, deadline).await,
            Send::Probe => self.probe_call(rpc, deadline).await,
        };
        let elapsed = started.elapsed();
        {
            let mut st = lock(&self.state);
            if result.is_ok() {
                st.rtt.sample(elapsed, air);
            }
            if matches!(result, Ok(AppendEntriesResponse::Conflict)) {
                forget_stale_hint(&mut st.matched, Lost::At(prev_sent.as_ref()), self.target);
            }
            let p = &mut st.pacing;
            match &result {
                Ok(_) => p.answered(bytes, elapsed, deadline),
                // A deliberately small append lost says the link lost a frame, not that
                // appends of its size are too big: the budget halves from where it is.
                Err(RPCError::Timeout(_)) if budget.is_some() => p.timed_out(p.bytes_max),
                Err(RPCError::Timeout(_)) => p.timed_out(bytes),
                Err(_) => {}
            }
            tracing::debug!(
                peer = self.target,
                ?how,
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
}

impl PeerNetwork {
    /// One append: a heartbeat as it is; entries paced, with the match point searched by
    /// `AppendProbe` or answered from it (module docs).
    pub(super) async fn append_one(
        &self,
        mut rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        if rpc.entries.is_empty() {
            // A heartbeat (or an empty probe): the whole window openraft gives it (module
            // docs), the heartbeat interval (`hard_ttl`, 2 RTT by `Timing::for_rtt`) less an
            // eighth, so the timeout is ours and not openraft's cut; its answer is a sample.
            let air = self.air(APPEND_AIR_OVERHEAD_BYTES);
            let started = tokio::time::Instant::now();
            let answer = self
                .append_call(rpc, option.hard_ttl() * TTL_SHARE_EIGHTHS / 8)
                .await;
            if answer.is_ok() {
                self.rtt_sample(started.elapsed(), air);
            }
            return answer;
        }
        if lock(&self.state).probe_off == Some(rpc.vote) {
            return self.send_paced(rpc, Send::Append, None).await;
        }
        // A new leader's first append to a peer carries its own term's entries after the
        // last entry of an earlier term, which the peer most likely holds; the answer brings
        // the peer's last log id either way (module docs).
        let first = {
            let st = lock(&self.state);
            st.matched.as_ref().is_none_or(|h| h.vote != rpc.vote)
                && st.probed.as_ref() != Some(&rpc.vote)
        };
        let mut tail_sent = false;
        if first && let Some(tail) = self.tail_append(&rpc) {
            let answer = self.send_paced(tail, Send::Probe, Some(usize::MAX)).await;
            let answer = self.probe_answered(rpc.vote, answer)?;
            if let AppendEntriesResponse::HigherVote(v) = answer {
                return Ok(AppendEntriesResponse::HigherVote(v));
            }
            tail_sent = true;
        }
        // Probes of entries the peer is known to hold are answered here, and an append
        // overlapping them sends only what follows.
        let hint = lock(&self.state).matched.clone();
        if let Some(last) = rpc.entries.last().map(|e| e.log_id()) {
            match shortcut(hint.as_ref(), &rpc.vote, rpc.prev_log_id.as_ref(), &last) {
                Shortcut::AlreadyHeld => return Ok(AppendEntriesResponse::Success),
                Shortcut::SendAfter(matched) => {
                    rpc.entries.retain(|e| e.index() > matched.index());
                    rpc.prev_log_id = Some(matched);
                }
                Shortcut::Send => {}
            }
        }
        if hint.as_ref().is_some_and(|h| h.vote == rpc.vote) {
            return self.send_paced(rpc, Send::Append, None).await;
        }
        // The peer's match point is still unknown: ask for its last log id with this append.
        // Without a tail to send first, a new leader's first append is openraft's probe from
        // the middle of the log, whose entries the peer most likely holds: one entry (the
        // least a probe carries) is enough to bring the answer.
        let budget = (first && !tail_sent).then_some(0);
        let vote = rpc.vote;
        let answer = self.send_paced(rpc, Send::Probe, budget).await;
        self.probe_answered(vote, answer)
    }
}

impl RaftNetworkV2<TypeConfig> for PeerNetwork {
    type SnapshotData = crate::storage::SnapshotFile;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.append_one(rpc, option).await
    }

    fn stream_append<'s, S>(
        &'s mut self,
        input: S,
        option: RPCOption,
    ) -> BoxFuture<'s, Result<BoxStream<'s, StreamItem>, RPCError<TypeConfig>>>
    where
        S: Stream<Item = AppendEntriesRequest<TypeConfig>> + OptionalSend + Unpin + 'static,
    {
        let pipe = Pipeline::new(self.clone(), input, option);
        Box::pin(async move { Ok(pipe.into_stream()) })
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
            let total_len = data.len();
            let this = |offset| SnapshotAcked {
                vote,
                last: snapshot.meta.last_log_id,
                total_len,
                offset,
            };
            // A transfer of the same snapshot cut by a timeout goes on from what the peer
            // acknowledged; anything else starts at 0.
            let mut offset = lock(&self.state)
                .snapshot_acked
                .as_ref()
                .filter(|a| **a == this(a.offset) && (a.offset as u64) < total_len)
                .map_or(0, |a| a.offset);
            if offset > 0 {
                tracing::info!(
                    peer = self.target,
                    offset,
                    total_len,
                    "resuming a snapshot transfer from what the peer acknowledged"
                );
            }
            loop {
                // A chunk read from the snapshot file as it goes out: the snapshot is never
                // whole in memory (`storage::snapshot_file`).
                let bytes =
                    crate::storage::blocking(|| data.read_at(offset as u64, SNAPSHOT_CHUNK_BYTES))
                        .map_err(|e| {
                            StreamingError::Network(NetworkError::from_string(format!(
                                "the snapshot cannot be read: {e}"
                            )))
                        })?;
                let end = offset + bytes.len();
                let chunk = SnapshotChunk {
                    vote,
                    meta: snapshot.meta.clone(),
                    total_len,
                    offset: offset as u64,
                    data: bytes,
                };
                let resp = self
                    .rpc
                    .call(self.target, Request::Snapshot(chunk), option.soft_ttl())
                    .await;
                // Only a timeout or a lost link keeps the resume point: a refusal or an
                // answer out of sequence means the peer holds nothing to resume from.
                let keep = matches!(resp, Ok(Response::Snapshot(Ok(None))) | Err(_));
                lock(&self.state).snapshot_acked = match &resp {
                    Ok(Response::Snapshot(Ok(None))) => Some(this(end)),
                    _ if keep => Some(this(offset)),
                    _ => None,
                };
                match resp {
                    Ok(Response::Snapshot(Ok(Some(done)))) => return Ok(done),
                    Ok(Response::Snapshot(Ok(None)))
                        if (end as u64) < total_len && end > offset =>
                    {
                        offset = end
                    }
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
                clock: Default::default(),
                body: Body::Inputs(vec![vec![7; input_bytes]]),
            },
        )
    }

    #[test]
    fn a_known_match_point_answers_or_trims_appends_of_the_same_leader_only() {
        let v2 = Vote::new(2, 2);
        let hint = MatchHint {
            vote: v2,
            matched: entry(10, 1).log_id(),
        };
        let id = |i: u64| entry(i, 1).log_id();
        let at = |i: u64| Some(id(i));
        // Within the match point: held.
        assert_eq!(
            shortcut(Some(&hint), &v2, at(3).as_ref(), &id(8)),
            Shortcut::AlreadyHeld
        );
        assert_eq!(
            shortcut(Some(&hint), &v2, None, &id(10)),
            Shortcut::AlreadyHeld
        );
        // Straddling it: only what follows goes.
        assert_eq!(
            shortcut(Some(&hint), &v2, at(7).as_ref(), &id(12)),
            Shortcut::SendAfter(id(10))
        );
        // Beyond it, another leader's append, or nothing known: as it is.
        assert_eq!(
            shortcut(Some(&hint), &v2, at(10).as_ref(), &id(12)),
            Shortcut::Send
        );
        let v3 = Vote::new(3, 1);
        assert_eq!(
            shortcut(Some(&hint), &v3, at(3).as_ref(), &id(8)),
            Shortcut::Send
        );
        assert_eq!(shortcut(None, &v2, at(3).as_ref(), &id(8)), Shortcut::Send);
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
