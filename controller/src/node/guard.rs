//! What a member may ask of this node, checked against the sender its frame opened under (with
//! sealing, the key it proved; `from` is never taken from the request's own fields). A member
//! board that is stolen or runs a bug can still propose its own inputs, but not in another
//! node's name, not the WAN cursor, not a timer tick, and not a membership change unless it
//! is a voter, and not faster than `forward_rate` allows a member. A refusal changes no state,
//! is counted by reason (`ghatta status` → `refused`, and `/metrics`) and is logged at most
//! once per peer and reason per [`LOG_EVERY`].

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::forward_rate::{ForwardRate, RateLimited};
use crate::raft::Body;
use crate::rpc::wire::Forward;

/// A refused peer is logged at most this often per reason: a flood of forged requests must
/// not become a flood of log lines on a board's SD card, and one line a minute still tells the
/// operator which peer misbehaves and how.
pub const LOG_EVERY: Duration = Duration::from_secs(60);
/// (peer, reason) pairs remembered for [`LOG_EVERY`]. With sealed links the peers are the
/// members, a handful; an unsealed bench takes `from` from the frame header, so a stranger
/// could name a new peer in every frame: past this many, pairs older than [`LOG_EVERY`] are
/// forgotten, and while all are younger a new pair is counted but not logged.
pub const LOGGED_PAIRS_MAX: usize = 1_024;

/// Why a request from a member was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum Refusal {
    /// A forwarded proposal names another node as its origin: it would be deduplicated (and
    /// its meter reads dropped) in that node's name.
    #[error("a forwarded proposal names another node as its origin")]
    ForgedOrigin,
    /// A forwarded WAN cursor: only the leader's own uploader, which heard the central's ack,
    /// commits one.
    #[error("WAN cursors are committed only by the leader's own uploader, never forwarded")]
    ForwardedOutboxAck,
    /// A forwarded timer tick: only the leader proposes ticks for due timers.
    #[error("timer ticks are proposed only by the leader, never forwarded")]
    ForwardedTick,
    /// A forwarded proposal over its sender's rate (`node::forward_rate`): retryable, unlike
    /// the others.
    #[error("a member forwards proposals faster than its rate limit")]
    ForwardRateLimited,
    /// A membership change from a node that is not a voter.
    #[error("membership changes are accepted only from voters")]
    MemberOpFromNonVoter,
    /// A snapshot chunk not from the leader of the vote this node follows (`snapshot_in`).
    #[error("snapshot chunks are accepted only from the leader this node follows, under its vote")]
    SnapshotNotFromLeader,
    /// A snapshot whose last log id is of a later term than its leader's vote.
    #[error("a snapshot whose last log id is of a later term than its leader's vote")]
    SnapshotBeyondVote,
    /// A snapshot newer than this node's commit but not at a greater index.
    #[error("a snapshot that contradicts entries this node committed")]
    SnapshotContradictsCommitted,
    /// A snapshot whose metadata or image does not hold together (no last log id, a
    /// membership after its last entry, an image that does not decode or names another index).
    #[error("a snapshot whose metadata or image is inconsistent")]
    SnapshotInconsistent,
}

/// Refusals so far, by reason (monotonic since start).
#[derive(Debug, Default)]
pub struct Guard {
    forged_origin: AtomicU64,
    forwarded_outbox_ack: AtomicU64,
    forwarded_tick: AtomicU64,
    forward_rate_limited: AtomicU64,
    member_op_from_non_voter: AtomicU64,
    snapshot_refused: AtomicU64,
    /// Each member's bucket for the proposals it forwards.
    forward_rate: Mutex<ForwardRate>,
    /// When each (peer, reason) was last logged.
    logged: Mutex<HashMap<(u64, Refusal), Instant>>,
}

/// A copy of the counters, as `ghatta status` shows them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefusalsSnapshot {
    /// Forwarded proposals naming another origin than their sender.
    pub forged_origin: u64,
    /// Forwarded WAN cursors.
    pub forwarded_outbox_ack: u64,
    /// Forwarded timer ticks.
    pub forwarded_tick: u64,
    /// Forwarded proposals over their member's rate (`node::forward_rate`), each retried by
    /// its member after a back-off.
    #[serde(default)]
    pub forward_rate_limited: u64,
    /// Membership changes from non-voters.
    pub member_op_from_non_voter: u64,
    /// Snapshot chunks refused (not from the current leader, or a snapshot openraft would
    /// assert against, or one that does not decode).
    #[serde(default)]
    pub snapshot_refused: u64,
}

impl Guard {
    /// Whether a forwarded proposal from `from` may be written.
    pub fn check_forward(&self, from: u64, f: &Forward) -> Result<(), Refusal> {
        let refusal = if f.origin != from {
            Refusal::ForgedOrigin
        } else {
            match f.body {
                // A module's signature is checked on apply, on every replica; its chunks are
                // staged in bounded space (`actors::deploy::STAGED_UPLOADS_MAX`).
                // A board's alarms are its own: the origin is the sender (checked above),
                // and the report's size is checked before it is written and on apply.
                Body::Inputs(_) | Body::Actor(_) | Body::BoardAlarms(_) => return Ok(()),
                Body::OutboxAck { .. } => Refusal::ForwardedOutboxAck,
                Body::Tick { .. } => Refusal::ForwardedTick,
            }
        };
        Err(self.refuse(from, refusal))
    }

    /// Whether `from` may forward a proposal of `bytes` now, at monotonic `now_ms`: takes its
    /// cost from the member's bucket, or counts and logs the refusal.
    pub fn check_forward_rate(
        &self,
        from: u64,
        bytes: u64,
        now_ms: u64,
    ) -> Result<(), RateLimited> {
        let admitted = self
            .forward_rate
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .admit(from, bytes, now_ms);
        if admitted.is_err() {
            self.refuse(from, Refusal::ForwardRateLimited);
        }
        admitted
    }

    /// Whether a membership change from `from` may be carried out, `from` being a voter or not.
    pub fn check_member_op(&self, from: u64, from_is_voter: bool) -> Result<(), Refusal> {
        if from_is_voter {
            Ok(())
        } else {
            Err(self.refuse(from, Refusal::MemberOpFromNonVoter))
        }
    }

    /// The counters.
    pub fn snapshot(&self) -> RefusalsSnapshot {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        RefusalsSnapshot {
            forged_origin: g(&self.forged_origin),
            forwarded_outbox_ack: g(&self.forwarded_outbox_ack),
            forwarded_tick: g(&self.forwarded_tick),
            forward_rate_limited: g(&self.forward_rate_limited),
            member_op_from_non_voter: g(&self.member_op_from_non_voter),
            snapshot_refused: g(&self.snapshot_refused),
        }
    }

    /// Counts and logs (once a minute per peer and reason) a refusal decided elsewhere.
    pub fn refuse(&self, from: u64, why: Refusal) -> Refusal {
        let counter = match why {
            Refusal::ForgedOrigin => &self.forged_origin,
            Refusal::ForwardedOutboxAck => &self.forwarded_outbox_ack,
            Refusal::ForwardedTick => &self.forwarded_tick,
            Refusal::ForwardRateLimited => &self.forward_rate_limited,
            Refusal::MemberOpFromNonVoter => &self.member_op_from_non_voter,
            Refusal::SnapshotNotFromLeader
            | Refusal::SnapshotBeyondVote
            | Refusal::SnapshotContradictsCommitted
            | Refusal::SnapshotInconsistent => &self.snapshot_refused,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        let now = Instant::now();
        let mut logged = self.logged.lock().unwrap_or_else(|e| e.into_inner());
        let last = logged.get(&(from, why)).copied();
        if last.is_none() && logged.len() >= LOGGED_PAIRS_MAX {
            logged.retain(|_, at| now.duration_since(*at) < LOG_EVERY);
        }
        let room = last.is_some() || logged.len() < LOGGED_PAIRS_MAX;
        if room && last.is_none_or(|at| now.duration_since(at) >= LOG_EVERY) {
            logged.insert((from, why), now);
            tracing::warn!(
                peer = from,
                reason = %why,
                "refused a request from a member; if this repeats, check that board (a bug, or a stolen key: replace its key with `ghatta keygen` and update every peer's list)"
            );
        }
        why
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fwd(origin: u64, body: Body) -> Forward {
        Forward {
            origin,
            seq: 1,
            origin_time_ms: 0,
            body,
        }
    }

    #[test]
    fn a_forward_is_bound_to_its_sender_and_to_inputs() {
        let g = Guard::default();
        assert_eq!(g.check_forward(2, &fwd(2, Body::Inputs(vec![]))), Ok(()));
        assert_eq!(
            g.check_forward(2, &fwd(3, Body::Inputs(vec![]))),
            Err(Refusal::ForgedOrigin)
        );
        assert_eq!(
            g.check_forward(
                2,
                &fwd(
                    2,
                    Body::OutboxAck {
                        stream: 0,
                        upto_seq: u64::MAX
                    }
                )
            ),
            Err(Refusal::ForwardedOutboxAck)
        );
        assert_eq!(
            g.check_forward(2, &fwd(2, Body::Tick { timer_id: 1 })),
            Err(Refusal::ForwardedTick)
        );
        assert_eq!(
            g.check_member_op(4, false),
            Err(Refusal::MemberOpFromNonVoter)
        );
        assert_eq!(g.check_member_op(1, true), Ok(()));
        // Forged senders (an unsealed bench) cannot grow the log memory without bound.
        for peer in 1_000..1_000 + 3 * LOGGED_PAIRS_MAX as u64 {
            let _ = g.check_member_op(peer, false);
        }
        assert!(g.logged.lock().unwrap().len() <= LOGGED_PAIRS_MAX);
        assert_eq!(
            g.snapshot().member_op_from_non_voter,
            1 + 3 * LOGGED_PAIRS_MAX as u64
        );
        let _ = g.check_member_op(4, false);
        assert_eq!(
            g.snapshot(),
            RefusalsSnapshot {
                forged_origin: 1,
                forwarded_outbox_ack: 1,
                forwarded_tick: 1,
                forward_rate_limited: 0,
                member_op_from_non_voter: 2 + 3 * LOGGED_PAIRS_MAX as u64,
                snapshot_refused: 0,
            }
        );
    }

    #[test]
    fn a_member_over_its_forward_rate_is_refused_and_counted() {
        use super::super::forward_rate::FORWARD_BURST_TOKENS;
        let g = Guard::default();
        for _ in 0..FORWARD_BURST_TOKENS {
            assert_eq!(g.check_forward_rate(2, 500, 1_000), Ok(()));
        }
        let refused = g.check_forward_rate(2, 500, 1_000).expect_err("flood");
        assert!(refused.to_string().contains("retried in"), "{refused}");
        assert_eq!(
            g.check_forward_rate(3, 500, 1_000),
            Ok(()),
            "node 3 is not node 2"
        );
        assert_eq!(g.snapshot().forward_rate_limited, 1);
    }
}
