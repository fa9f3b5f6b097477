//! Pipelined appends to one peer: openraft's replication stream sent with several appends in
//! flight at once and answered to openraft in the order it sent them.
//!
//! openraft 0.10.0-alpha.37 replicates to a follower through a stream of AppendEntries
//! (`RaftNetworkV2::stream_append`); in "LogsSince" mode it yields the next request as soon
//! as new entries are submitted or the commit index moves. Its default implementation sends
//! one request and waits for the answer before it pulls the next, so a proposal that arrives
//! while an append is on the link waits for that append's round trip before its own starts:
//! on an 800 ms radio, commit latency under a steady stream of proposals is 1-2 RTT instead
//! of 1. Here the next request goes out while earlier ones are in flight:
//!
//! - **Only once the follower's match point is known** for this leader vote
//!   ([`super::network::MatchHint`]): a new leader's first appends search it one at a time,
//!   as before, and a follower that must be searched the slow way is never sent a pipeline.
//! - **At most [`APPENDS_IN_FLIGHT_MAX`] appends, and no more bytes of entries than the
//!   peer's byte budget** (`AppendPacing`), so a pipeline never has more on the link than one
//!   paced append may carry; a request larger than the budget goes alone (it is cut, and a cut
//!   append ends the stream by openraft's rule, below). The budget shrinks only after appends
//!   time out: on a radio that answers in time it stays high and the pipeline is as deep as
//!   [`APPENDS_IN_FLIGHT_MAX`] allows, and on a saturated 9,600 bit/s link its extra bytes make
//!   it slower than one batch per round trip (BENCHMARKS.md has the table).
//! - **Answers in order.** openraft requires them in the order of its requests; the first
//!   append that did not fully succeed (timed out, cut, conflicted, a higher vote) ends the
//!   stream, and the appends behind it are dropped: openraft resumes from what the follower
//!   acknowledged, as it does after the same failure without a pipeline.
//! - **Order at the follower.** Our links do not keep order (the radio link layer repeats only
//!   missing fragments, so a small frame overtakes a fragmented one; the simulator's jitter
//!   reorders frames), and a follower handed append k+1 before append k would answer
//!   `Conflict`. The follower holds an append whose `prev_log_id` is past its log for up to a
//!   round trip until the appends before it are in (`node/handler.rs`,
//!   `REORDER_WAIT_HEARTBEAT_DIVISOR`); an append lost for good is answered `Conflict` after
//!   that wait, and the leader, which already saw the earlier append fail, resends from there.
//!
//! Measured (BENCHMARKS.md, "Pipelined appends"): `ghatta-sim measure`'s stream phase.

use futures::stream::{FuturesOrdered, Stream, StreamExt};
use openraft::OptionalSend;
use openraft::base::{BoxFuture, BoxStream};
use openraft::entry::RaftEntry;
use openraft::error::{NetworkError, RPCError};
use openraft::network::RPCOption;
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, StreamAppendError, StreamAppendResult,
};

use super::network::{PeerNetwork, entry_bytes};
use crate::raft::{LogId, TypeConfig, Vote};

/// Most appends in flight to one peer. Four covers a proposal every quarter round trip (the
/// field loops of a five-node grid on a radio propose far less often); the byte budget limits
/// a pipeline further only once appends to the peer have timed out.
pub const APPENDS_IN_FLIGHT_MAX: usize = 4;

/// What the stream answers openraft, per request.
pub(super) type StreamItem = Result<StreamAppendResult<TypeConfig>, RPCError<TypeConfig>>;

type AppendResult = Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>>;

/// One append that went out, and how it ended.
struct Sent {
    /// The request's `prev_log_id` and its last entry's log id (`prev` when it had none).
    prev: Option<LogId>,
    last: Option<LogId>,
    /// Bytes of entries it carried (counted against the peer's budget while in flight).
    bytes: usize,
    result: AppendResult,
}

/// The appends of one replication stream to one peer.
pub(super) struct Pipeline<S> {
    net: PeerNetwork,
    input: S,
    option: RPCOption,
    /// openraft has ended the request stream.
    input_done: bool,
    /// The leader vote of the stream's requests (one stream never changes it).
    vote: Option<Vote>,
    /// A request taken from openraft that has no room in the pipeline yet, with its bytes.
    held: Option<(AppendEntriesRequest<TypeConfig>, usize)>,
    in_flight: FuturesOrdered<BoxFuture<'static, Sent>>,
    bytes_in_flight: usize,
    /// An answer ended the stream.
    stopped: bool,
    /// The last log id the peer acknowledged in this stream.
    acked: Option<LogId>,
}

/// Bytes of entries in a request.
fn request_bytes(req: &AppendEntriesRequest<TypeConfig>) -> usize {
    req.entries.iter().map(entry_bytes).sum()
}

/// What openraft is told about one append, given the last log id the peer acknowledged
/// earlier in this stream, and whether the stream goes on after it. The rules are openraft's
/// own (`stream_append_sequential`): only a full success keeps the stream.
///
/// One more: a `Conflict` at or below what the peer acknowledged earlier in the stream is an
/// append judged before the one in front of it arrived (it overtook it and the follower's
/// wait ran out), not a log that went back: openraft takes a conflict below the match point
/// for a follower whose log was lost and stops the node (`allow_log_reversion` is off). It is
/// answered as a failed append instead, which ends the stream; openraft resumes after what
/// was acknowledged.
fn answer(sent: Sent, acked: Option<&LogId>) -> (StreamItem, bool) {
    match sent.result {
        Ok(AppendEntriesResponse::Conflict)
            if sent.prev.is_some() && sent.prev.as_ref() <= acked =>
        {
            (
                Err(RPCError::Network(NetworkError::from_string(
                    "an append overtook the one before it and was refused; resending from \
                     what the peer acknowledged",
                ))),
                false,
            )
        }
        Err(e) => (Err(e), false),
        Ok(AppendEntriesResponse::Success) => (Ok(Ok(sent.last)), true),
        Ok(AppendEntriesResponse::PartialSuccess(matched)) => {
            let whole = matched == sent.last;
            (Ok(Ok(matched)), whole)
        }
        Ok(AppendEntriesResponse::Conflict) => match sent.prev {
            Some(prev) => (Ok(Err(StreamAppendError::Conflict(prev))), false),
            // openraft's own adapter unwraps here; an append from the start of the log cannot
            // conflict, so such an answer is a broken peer, not a reason to panic.
            None => (
                Err(RPCError::Network(NetworkError::from_string(
                    "the peer answered Conflict to an append from the start of the log, which \
                     cannot conflict: check that peer's ghatta version and its Raft log",
                ))),
                false,
            ),
        },
        Ok(AppendEntriesResponse::HigherVote(v)) => {
            (Ok(Err(StreamAppendError::HigherVote(v))), false)
        }
    }
}

impl<S> Pipeline<S>
where
    S: Stream<Item = AppendEntriesRequest<TypeConfig>> + OptionalSend + Unpin + 'static,
{
    pub(super) fn new(net: PeerNetwork, input: S, option: RPCOption) -> Self {
        Pipeline {
            net,
            input,
            option,
            input_done: false,
            vote: None,
            held: None,
            in_flight: FuturesOrdered::new(),
            bytes_in_flight: 0,
            stopped: false,
            acked: None,
        }
    }

    /// The answers, one per request, in order.
    pub(super) fn into_stream<'s>(self) -> BoxStream<'s, StreamItem> {
        Box::pin(futures::stream::unfold(self, Self::next_answer))
    }

    /// Whether another append may join those in flight: the peer's match point is known for
    /// this vote and the pipeline is not full.
    fn may_overlap(&self) -> bool {
        self.in_flight.len() < APPENDS_IN_FLIGHT_MAX
            && self
                .vote
                .as_ref()
                .is_some_and(|v| self.net.match_point_known(v))
    }

    fn has_room_for(&self, bytes: usize) -> bool {
        self.in_flight.is_empty()
            || (self.may_overlap() && self.bytes_in_flight + bytes <= self.net.bytes_budget())
    }

    fn launch(&mut self, req: AppendEntriesRequest<TypeConfig>, bytes: usize) {
        let prev = req.prev_log_id;
        let last = req.entries.last().map(|e| e.log_id()).or(prev);
        if !self.in_flight.is_empty() {
            tracing::trace!(
                peer = self.net.target(),
                in_flight = self.in_flight.len(),
                bytes,
                "pipelined append"
            );
        }
        self.bytes_in_flight += bytes;
        let (net, option) = (self.net.clone(), self.option.clone());
        self.in_flight.push_back(Box::pin(async move {
            let result = net.append_one(req, option).await;
            Sent {
                prev,
                last,
                bytes,
                result,
            }
        }));
    }

    async fn next_answer(mut self) -> Option<(StreamItem, Self)> {
        loop {
            if self.stopped {
                return None;
            }
            if let Some((req, bytes)) = self.held.take() {
                if self.has_room_for(bytes) {
                    self.launch(req, bytes);
                } else {
                    self.held = Some((req, bytes));
                }
            }
            let pull = self.held.is_none()
                && !self.input_done
                && (self.in_flight.is_empty() || self.may_overlap());
            if self.in_flight.is_empty() && !pull {
                return None;
            }
            tokio::select! {
                // Answers first: openraft learns of progress as soon as there is some.
                biased;
                Some(sent) = self.in_flight.next(), if !self.in_flight.is_empty() => {
                    self.bytes_in_flight -= sent.bytes;
                    let (item, go_on) = answer(sent, self.acked.as_ref());
                    if let Ok(Ok(matched)) = &item {
                        self.acked = self.acked.max(*matched);
                    }
                    self.stopped = !go_on;
                    return Some((item, self));
                }
                req = self.input.next(), if pull => match req {
                    Some(req) => {
                        self.vote.get_or_insert(req.vote);
                        let bytes = request_bytes(&req);
                        self.held = Some((req, bytes));
                    }
                    None => self.input_done = true,
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use openraft::vote::RaftLeaderId;

    use super::*;

    fn log_id(term: u64, index: u64) -> LogId {
        LogId::new(
            openraft::alias::CommittedLeaderIdOf::<TypeConfig>::new(term, 1),
            index,
        )
    }

    fn sent(prev: Option<LogId>, last: Option<LogId>, result: AppendResult) -> Sent {
        Sent {
            prev,
            last,
            bytes: 0,
            result,
        }
    }

    fn answer_(s: Sent) -> (StreamItem, bool) {
        answer(s, None)
    }

    #[test]
    fn a_conflict_below_what_the_stream_acknowledged_is_an_overtaken_append_not_a_lost_log() {
        // Appends (4, 5] and (5, 6] in flight; the second reached the follower first, waited
        // for the first in vain and was refused; then the first arrived and succeeded.
        let acked = Some(log_id(2, 5));
        let (item, go_on) = answer(
            sent(
                acked,
                Some(log_id(2, 6)),
                Ok(AppendEntriesResponse::Conflict),
            ),
            acked.as_ref(),
        );
        assert!(!go_on);
        assert!(matches!(item, Err(RPCError::Network(_))), "{item:?}");
        // Past the acknowledged point a conflict is the follower's word.
        let (item, _) = answer(
            sent(
                Some(log_id(2, 6)),
                Some(log_id(2, 7)),
                Ok(AppendEntriesResponse::Conflict),
            ),
            acked.as_ref(),
        );
        assert_eq!(
            item.unwrap(),
            Err(StreamAppendError::Conflict(log_id(2, 6)))
        );
    }

    #[test]
    fn only_a_full_success_keeps_the_stream_going() {
        let (p, l) = (Some(log_id(2, 4)), Some(log_id(2, 6)));
        let (item, go_on) = answer_(sent(p, l, Ok(AppendEntriesResponse::Success)));
        assert!(go_on);
        assert_eq!(item.unwrap(), Ok(l));
        // A cut append acknowledged up to what it carried: openraft resumes after it.
        let cut = Some(log_id(2, 5));
        let (item, go_on) = answer_(sent(p, l, Ok(AppendEntriesResponse::PartialSuccess(cut))));
        assert!(!go_on);
        assert_eq!(item.unwrap(), Ok(cut));
        let (item, go_on) = answer_(sent(p, l, Ok(AppendEntriesResponse::PartialSuccess(l))));
        assert!(go_on);
        assert_eq!(item.unwrap(), Ok(l));
        let (item, go_on) = answer_(sent(p, l, Ok(AppendEntriesResponse::Conflict)));
        assert!(!go_on);
        assert_eq!(
            item.unwrap(),
            Err(StreamAppendError::Conflict(log_id(2, 4)))
        );
        let (item, go_on) = answer_(sent(
            p,
            l,
            Err(RPCError::Network(NetworkError::from_string("lost"))),
        ));
        assert!(!go_on);
        assert!(item.is_err());
    }

    #[test]
    fn a_conflict_at_the_start_of_the_log_is_an_error_not_a_panic() {
        let (item, go_on) = answer_(sent(
            None,
            Some(log_id(1, 1)),
            Ok(AppendEntriesResponse::Conflict),
        ));
        assert!(!go_on);
        assert!(matches!(item, Err(RPCError::Network(_))));
    }
}
