//! A token bucket per member for the proposals it forwards to this node: a member that floods
//! the leader (a bug in its field loop, or a stolen board) is held to a steady rate, so it can
//! neither fill the log nor take the leader's fsyncs and actor deliveries from the others.
//! Logic only: the caller passes the sender and its monotonic time in.
//!
//! An honest member stays far below the limit: its shipper has one proposal in flight at a
//! time and waits for its commit, its alarm reports come at most once a second, and a deploy
//! has `deploy::DEPLOY_CHUNKS_IN_FLIGHT` chunks in flight. A forward over the limit is answered
//! with a retryable error, and the member's proposer retries it after a back-off, under the
//! same `(origin, seq)`.

use std::collections::BTreeMap;

/// Proposals a second a member may forward, sustained: about a hundred times a field loop's
/// one batch a second, and about a sixtieth of what a leader commits on the bench
/// (BENCHMARKS.md, "the core table"), so even two flooding members leave the others most of
/// it. Integer: one token a second is one thousandth of a token a millisecond.
pub const FORWARD_TOKENS_PER_S: u64 = 100;

/// Proposals a member may forward back to back: a journal backlog drained after a partition
/// goes a commit round trip at a time, but a deploy's chunks and a report's retries come
/// together; four seconds at the sustained rate.
pub const FORWARD_BURST_TOKENS: u64 = 4 * FORWARD_TOKENS_PER_S;

/// Bytes of a forwarded proposal that cost one token: the field loop's proposal budget on
/// Wi-Fi (`field::shipper::PROPOSAL_BYTES_MAX_DEFAULT`), so an ordinary batch is one token and
/// a 512 KiB one (`proposer::PROPOSAL_INPUT_BYTES_MAX`) 32: the limit holds bytes too.
pub const FORWARD_TOKEN_BYTES: u64 = 16 * 1024;

/// Senders with a bucket at once. With sealed links they are the members, a handful; an
/// unsealed bench takes the sender from the frame header, so a stranger could name a new one
/// in every frame: past this many, the bucket used longest ago is dropped (its sender starts
/// again with a full burst, which a stranger could have had with a new name anyway).
pub const FORWARD_BUCKETS_MAX: usize = 256;

const MILLI: u64 = 1_000;

/// One sender's bucket: tokens in thousandths, as of `at_ms`.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    milli_tokens: u64,
    at_ms: u64,
}

/// A forward refused for its sender's rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimited {
    /// The sender.
    pub from: u64,
    /// When its bucket will hold this forward's cost, ms from now.
    pub retry_after_ms: u64,
}

impl std::fmt::Display for RateLimited {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "node {} forwards proposals faster than a member may ({FORWARD_TOKENS_PER_S} a \
             second, bursts of {FORWARD_BURST_TOKENS}, one per {} KiB): this one is retried \
             in {} ms; if that board keeps hitting the limit, find what floods (its field \
             loop's journal, a script on its admin API) or, if its key was stolen, replace it \
             (`ghatta keygen`, every peer's list)",
            self.from,
            FORWARD_TOKEN_BYTES / 1024,
            self.retry_after_ms
        )
    }
}

impl std::error::Error for RateLimited {}

/// The buckets of every sender.
#[derive(Debug, Default)]
pub struct ForwardRate {
    buckets: BTreeMap<u64, Bucket>,
}

impl ForwardRate {
    /// Takes the cost of a forward of `bytes` from `from`'s bucket at monotonic `now_ms`, or
    /// answers when it could be taken.
    pub fn admit(&mut self, from: u64, bytes: u64, now_ms: u64) -> Result<(), RateLimited> {
        let full = FORWARD_BURST_TOKENS * MILLI;
        if !self.buckets.contains_key(&from)
            && self.buckets.len() >= FORWARD_BUCKETS_MAX
            && let Some(stalest) = self
                .buckets
                .iter()
                .min_by_key(|(id, b)| (b.at_ms, **id))
                .map(|(id, _)| *id)
        {
            self.buckets.remove(&stalest);
        }
        let b = self.buckets.entry(from).or_insert(Bucket {
            milli_tokens: full,
            at_ms: now_ms,
        });
        // A clock that went back (it is monotonic; a bench's may not be) refills nothing.
        let elapsed_ms = now_ms.saturating_sub(b.at_ms);
        b.milli_tokens = b
            .milli_tokens
            .saturating_add(elapsed_ms.saturating_mul(FORWARD_TOKENS_PER_S))
            .min(full);
        b.at_ms = b.at_ms.max(now_ms);
        // A proposal larger than the burst can still go, from a full bucket.
        let cost = bytes
            .div_ceil(FORWARD_TOKEN_BYTES)
            .clamp(1, FORWARD_BURST_TOKENS)
            * MILLI;
        if b.milli_tokens >= cost {
            b.milli_tokens -= cost;
            Ok(())
        } else {
            Err(RateLimited {
                from,
                retry_after_ms: (cost - b.milli_tokens).div_ceil(FORWARD_TOKENS_PER_S),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_member_gets_its_burst_then_the_sustained_rate_and_others_are_unaffected() {
        let mut r = ForwardRate::default();
        let t0 = 5_000;
        for i in 0..FORWARD_BURST_TOKENS {
            assert_eq!(r.admit(2, 300, t0), Ok(()), "forward {i} of the burst");
        }
        let refused = r.admit(2, 300, t0).expect_err("over the burst");
        assert_eq!(refused.retry_after_ms, MILLI / FORWARD_TOKENS_PER_S);
        let text = refused.to_string();
        assert!(
            text.contains("node 2") && text.contains("retried in 10 ms"),
            "{text}"
        );
        // Another member has its own bucket.
        assert_eq!(r.admit(3, 300, t0), Ok(()));
        // Over ten seconds at the limit's pace, about the sustained rate gets through.
        let mut admitted = 0;
        for ms in 1..=10_000 {
            if r.admit(2, 300, t0 + ms).is_ok() {
                admitted += 1;
            }
        }
        assert_eq!(admitted, 10 * FORWARD_TOKENS_PER_S);
    }

    #[test]
    fn bytes_cost_tokens_and_a_huge_proposal_still_goes_from_a_full_bucket() {
        let mut r = ForwardRate::default();
        let half_mib = 512 * 1024;
        let per_huge = half_mib / FORWARD_TOKEN_BYTES;
        let fit = FORWARD_BURST_TOKENS / per_huge;
        for _ in 0..fit {
            assert_eq!(r.admit(2, half_mib, 0), Ok(()));
        }
        assert!(r.admit(2, half_mib, 0).is_err(), "bytes are limited too");
        let mut r = ForwardRate::default();
        assert_eq!(r.admit(2, u64::MAX, 0), Ok(()), "capped at the burst");
        assert!(r.admit(2, 1, 0).is_err());
        assert_eq!(r.admit(2, 1, 10), Ok(()), "a token back after 10 ms");
    }

    #[test]
    fn forged_senders_cannot_grow_the_buckets_without_bound() {
        let mut r = ForwardRate::default();
        for id in 0..3 * FORWARD_BUCKETS_MAX as u64 {
            let _ = r.admit(id, 1, id);
        }
        assert_eq!(r.buckets.len(), FORWARD_BUCKETS_MAX);
        // The newest senders kept theirs.
        assert!(
            r.buckets
                .contains_key(&(3 * FORWARD_BUCKETS_MAX as u64 - 1))
        );
    }
}
