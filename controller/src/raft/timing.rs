//! Raft timing derived from the link's round trip, and the openraft `Config` built from it.
//!
//! ## What openraft does with the three numbers (0.10.0-alpha.37, read from its source)
//!
//! - **Heartbeat `h`.** The leader sends one heartbeat per follower every `h`, through a
//!   worker that waits for each answer (openraft cuts it at `h`, `RPCOption::hard_ttl`) before
//!   it sends the next, and logs a warning for every heartbeat not answered in time. So `h`
//!   must exceed the slowest round trip, or heartbeats are lost to their own deadline (the
//!   radio profile's old 1 s heartbeat at 800 ms RTT: most of them).
//! - **Failure detection.** A follower campaigns only after the leader lease
//!   (`election_timeout_max`) *plus* a fresh random timeout in
//!   `[election_timeout_min, election_timeout_max)` has passed since it last heard the
//!   leader (`Vote::is_expired(now, timeout)` adds the lease). Detection therefore takes
//!   `max + U(min, max)`, not `U(min, max)`: with a lease of many heartbeats, detection
//!   alone takes tens of seconds on the radio, so the lease is kept short (below).
//! - **What stops a spurious election.** With pre-vote on, a follower that heard nothing
//!   for `min + max` first asks; the leader refuses while a quorum acknowledged it within
//!   the lease, and every follower refuses while it heard the leader within the lease. A
//!   real election on a healthy cluster needs a follower cut off for `min + max` *and* a
//!   quorum's view of the leader expired, not a few lost heartbeats.
//! - **Split votes** do not need a wide random spread: the advanced leader id orders votes by
//!   (term, node id), so two candidates of one term resolve to the higher id.
//!
//! ## The rule ([`Timing::for_rtt`], RTT `R`)
//!
//! - `h = 2R` (at least [`HEARTBEAT_MS_MIN`]): a heartbeat gets 7/8 of `h` as its deadline,
//!   and so does every other RPC before the peer's round trip is measured (`raft::rtt`
//!   starts from RTT `h/2`, jitter `h/4`; `rpc/network.rs`); `h` covers a round trip stretched by +/-50 % jitter (1.5 R) plus
//!   the air time of a fragmented append. Idle cost is one heartbeat and its answer per `h`:
//!   a few dozen bytes per heartbeat per follower on the radio (BENCHMARKS.md, "Radio at 800
//!   ms RTT").
//! - `max = 4.5R` (the lease): in a 3-node cluster the pre-vote of a follower cut off by
//!   lost heartbeats succeeds if the *other* follower grants it, i.e. if that one too heard
//!   nothing for a lease. 4.5 R is two lost heartbeats plus the +/-50 % jitter of the next:
//!   at 5 % loss the two followers must lose 3 and 2 heartbeats at the same moment.
//! - `min = 2.25R` (just over one heartbeat: openraft requires `min > h`), and at least
//!   enough for a vote round ([`vote_window_ms_min`]): openraft cuts a vote or pre-vote at
//!   `min` (`RPCOption::hard_ttl`), the network layer at 7/8 of it, and that must cover
//!   the link's first deadline (`raft::rtt`: `R + 2 jitter` = `2R` with the +/-50 % jitter
//!   of the design) plus the vote's air time. A vote cut short of its round trip is a lost
//!   round: the candidate waits out an election timeout and tries again a term higher (issue
//!   26: at 57,600 bit/s and 800 ms RTT votes timed out after 1.35 s, 3/4 of the old
//!   1.8 s, and terms went 1 -> 5). On the radio profile (9,600 bit/s) this makes `min`
//!   1,982 ms instead of 1,800. A follower
//!   campaigns after `max + U(min, max)` = 6.75-9 R of silence (3.4-4.5 heartbeats), and
//!   leader loss to the next commit is that, less the time since the last heartbeat, plus
//!   pre-vote, vote and the new leader's first append and the next (4 R): 8-10 s at 800 ms
//!   without loss; with loss a lost frame costs a deadline more (measured: BENCHMARKS.md,
//!   "Radio at 800 ms RTT"). A shorter lease would be faster and let lost heartbeats elect (a
//!   lease of 4 R lets one lost heartbeat and jitter expire a follower's lease).
//! - Floors: `min` at least [`ELECTION_MS_MIN`] and `max` twice that, so LAN and Wi-Fi keep
//!   the 1.8-3.6 s they had, where a scheduling stall on a loaded board, not the link, is the
//!   risk; at 800 ms the floor sets `min` to 1.8 s.
//!
//! Measured (BENCHMARKS.md, "Radio at 800 ms RTT"), not assumed: `ghatta-sim measure`.
//!
//! ## Not timing: a new leader's probe of its followers' logs
//!
//! A new leader does not know how far each follower's log matches its own, and openraft
//! finds out by binary search, one round trip per step: ~8 s at 800 ms on the radio, after
//! the election, before the first commit of the new term. The network layer cuts that to
//! one round trip (`rpc/network.rs`, "Finding a follower's match point in one round
//! trip"); what remains of leader loss to the next commit is failure detection and the
//! election above.
//!
//! ## Appends on a slow radio: why the heartbeat is not their deadline
//!
//! openraft gives *every* AppendEntries the same deadline, the heartbeat interval (which the
//! network layer used to cut to `RPCOption::soft_ttl()`, 3/4 of it), whatever it carries. That is right for a heartbeat and for a LAN, and wrong
//! for an append that carries entries over a link whose air time, not its latency, sets the
//! round trip. Measured on the flapping-radio scenario (64 kbit/s, 100-byte MTU, 20 % loss;
//! heartbeat 1,880 ms, so a 1,410 ms deadline; `GHATTA_LOG=ghatta::rpc::network=debug`):
//! field batches are ~500 B per entry, a 2 KiB append is ~23 fragments, and at 20 % loss
//! almost every such append needs two or three rounds of repeated fragments (a round trip
//! each) before its answer comes back, so appends of 1-12 entries took 850-1,400 ms when they
//! made it at all and most hit the deadline. A follower that fell behind during a flap was
//! sent 64-entry appends (~32 KiB, over 4 s of air time alone): 783 of them in a 20-minute
//! run, every one timed out, every one resent whole, the link full of their stale fragments,
//! and the follower never caught up (before: 10 commits in 20 minutes; the end-of-run check
//! "node 2 is up at the end but applied only up to 33; acked proposals reach index 558").
//!
//! A longer heartbeat would not help (it would only slow failure detection), and a smaller
//! `max_payload_entries` for radio would still leave one entry's deadline below one entry's
//! delivery time. So the network layer (`rpc/network.rs`, `AppendPacing`) sizes and times
//! appends per peer from how earlier appends to that peer fared: it cuts an append to a
//! byte budget (answering openraft with a partial success, so openraft resumes after what
//! the peer holds), halves the budget and doubles the deadline (up to 16x) when an append
//! times out, and grows the budget
//! back and shrinks the deadline when appends come back in time. On a LAN nothing changes:
//! appends come back in milliseconds, the budget stays at its 1 MiB ceiling and the deadline
//! at one heartbeat. Since the per-peer round-trip estimate (`raft::rtt`) the base deadline
//! of an append is `SRTT + 4 RTTVAR` plus its air time rather than the heartbeat, and the
//! stretch multiplies that. Heartbeats (empty appends) keep one heartbeat (less an eighth, so the
//! timeout is ours, not openraft's cut): they are what tells a leader it still leads, and
//! they fit in one radio frame. After the change the same run
//! commits 569 entries with every replica converged, and seeds 0..4 pass.

use serde::{Deserialize, Serialize};

use crate::net::LinkProfile;

/// Raft timing for one cluster. Every member should use the same values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timing {
    /// Heartbeat interval, ms (also every Raft RPC's deadline, `rpc/network.rs`).
    pub heartbeat_ms: u64,
    /// Election timeout lower bound, ms.
    pub election_timeout_ms_min: u64,
    /// Election timeout upper bound, ms.
    pub election_timeout_ms_max: u64,
}

/// Shortest heartbeat we use. Every RPC's deadline is the heartbeat, and a follower's answer
/// to an append includes an fsync: tens of ms on an SD card, past 100 ms when the card is
/// busy. 300 ms keeps a healthy LAN from reporting timeouts.
pub const HEARTBEAT_MS_MIN: u64 = 300;
/// Shortest `election_timeout_min`, and half the shortest `election_timeout_max`: on a LAN
/// the round trip is no risk, a board stalled for a second or two under load is, and a
/// follower then campaigns after at least 5.4 s of silence (lease plus timeout).
pub const ELECTION_MS_MIN: u64 = 1_800;
/// Bytes a vote round puts on the air per peer: the request and its answer, radio packet
/// headers, frame headers and CRCs included. A heartbeat is 31 bytes on the air and its
/// answer 20 (BENCHMARKS.md, "Radio at 800 ms RTT"); a vote carries a last log id more
/// each way; 128 leaves room for the seal's 15 bytes a frame.
pub const VOTE_AIR_BYTES: usize = 128;
/// The share of `election_timeout_min` the network layer gives a vote (`rpc/network.rs`):
/// openraft cuts it at the whole, and our own deadline must come first.
pub const VOTE_DEADLINE_EIGHTHS: u32 = 7;

/// The shortest `election_timeout_min` whose vote deadline (7/8 of it) covers a vote's
/// round trip at the start: the heartbeat (the first deadline of an estimate built from the
/// timing's design, [`Timing::link_design`]) plus the vote's air time at `bitrate_bps`.
pub fn vote_window_ms_min(heartbeat_ms: u64, bitrate_bps: Option<u64>) -> u64 {
    let air_us = crate::raft::rtt::air_time(VOTE_AIR_BYTES, bitrate_bps).as_micros() as u64;
    ((heartbeat_ms + air_us.div_ceil(1_000)) * 8).div_ceil(u64::from(VOTE_DEADLINE_EIGHTHS))
}

impl Timing {
    /// Timing for a link with round trip `rtt_ms` (the module docs give the reasoning):
    /// heartbeat 2 RTT (at least [`HEARTBEAT_MS_MIN`]), election timeout 2.25-4.5 RTT (at
    /// least [`ELECTION_MS_MIN`] and twice it).
    pub fn for_rtt(rtt_ms: u64) -> Timing {
        Timing::for_link(rtt_ms, None)
    }

    /// [`Timing::for_rtt`] on a link of `bitrate_bps` (`None`: fast), whose vote's air time
    /// the election timeout must also cover ([`vote_window_ms_min`]).
    pub fn for_link(rtt_ms: u64, bitrate_bps: Option<u64>) -> Timing {
        let heartbeat_ms = (rtt_ms * 2).max(HEARTBEAT_MS_MIN);
        let min = (rtt_ms * 9 / 4)
            .max(ELECTION_MS_MIN)
            .max(vote_window_ms_min(heartbeat_ms, bitrate_bps));
        Timing {
            heartbeat_ms,
            election_timeout_ms_min: min,
            // Above `min` by half of it at least, for the random spread, should a slow
            // bit rate push `min` up to the lease.
            election_timeout_ms_max: (rtt_ms * 9 / 2).max(2 * ELECTION_MS_MIN).max(min * 3 / 2),
        }
    }

    /// Timing for a named profile.
    pub fn for_profile(p: LinkProfile) -> Timing {
        Timing::for_link(p.rtt_ms(), p.bitrate_bps())
    }

    /// The link this timing was built for, where a peer's round-trip estimate starts
    /// (`raft::rtt`): RTT half the heartbeat and jitter a quarter of it (`for_rtt`'s 2R
    /// heartbeat and +/-50 %), so the first deadline, `RTT + 2 jitter`, is one heartbeat, as
    /// every RPC's deadline was before the estimate.
    pub fn link_design(&self) -> crate::raft::rtt::LinkDesign {
        crate::raft::rtt::LinkDesign {
            rtt_ms: self.heartbeat_ms / 2,
            jitter_ms: self.heartbeat_ms / 4,
        }
    }

    /// The openraft configuration for this timing.
    pub fn raft_config(
        &self,
        cluster_name: &str,
    ) -> Result<openraft::Config, openraft::ConfigError> {
        let config = openraft::Config {
            cluster_name: cluster_name.to_string(),
            heartbeat_interval: self.heartbeat_ms,
            election_timeout_min: self.election_timeout_ms_min,
            election_timeout_max: self.election_timeout_ms_max,
            // Snapshot transfer gets many heartbeats' worth of time per chunk.
            install_snapshot_timeout: self.heartbeat_ms * 20,
            enable_pre_vote: Some(true),
            // Entries are batches already; 64 per append keeps one append below ~1 MiB. On a
            // slow link the network layer cuts appends further (see the module docs).
            max_payload_entries: 64,
            // Snapshots are the node's to trigger (node::snapshots), which also sets how much
            // log is kept behind one.
            snapshot_policy: openraft::SnapshotPolicy::Never,
            // A follower whose log went back (its SD card lost `raft-log.redb`, or its data
            // directory was restored from a copy) answers a conflict below what it had
            // acknowledged. Without this openraft panics on it in debug builds and, in
            // release, keeps the old match point and never sends that follower the log
            // again. With it the follower's progress restarts from nothing while the index
            // a quorum already accepted is kept (openraft's `update_conflicting`), and the
            // network layer drops its own match hint (`rpc/network.rs`).
            allow_log_reversion: Some(true),
            // The log store acknowledges an append once fsynced, but its entries are readable
            // at once (`raft/log_store.rs`, group commit): send them to the followers then, so
            // their fsyncs overlap the leader's instead of following it.
            broadcast_submitted_on_append: Some(true),
            ..Default::default()
        };
        config.validate()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_round_trip_gives_a_valid_config_with_the_documented_ratios() {
        for rtt in [1, 5, 50, 200, 800, 801, 900, 1_504, 2_000, 10_000] {
            let t = Timing::for_rtt(rtt);
            assert!(t.raft_config("t").is_ok(), "rtt {rtt}: {t:?}");
            assert!(t.heartbeat_ms >= rtt * 2 && t.heartbeat_ms >= HEARTBEAT_MS_MIN);
            assert!(
                t.election_timeout_ms_min > t.heartbeat_ms,
                "rtt {rtt}: {t:?}"
            );
            assert!(
                t.election_timeout_ms_max >= 2 * t.heartbeat_ms,
                "rtt {rtt}: {t:?}"
            );
        }
        let radio = Timing::for_profile(LinkProfile::Radio);
        assert_eq!(
            (
                radio.heartbeat_ms,
                radio.election_timeout_ms_min,
                radio.election_timeout_ms_max
            ),
            (1_600, 1_982, 3_600)
        );
        // Every derived timing lets a vote round complete within the vote's deadline.
        for rtt in [5, 50, 800, 2_000] {
            for bps in [None, Some(9_600), Some(57_600)] {
                let t = Timing::for_link(rtt, bps);
                let design = crate::raft::rtt::RttEstimator::new(t.link_design());
                let vote = crate::raft::rtt::air_time(VOTE_AIR_BYTES, bps);
                let deadline_ms = t.election_timeout_ms_min * u64::from(VOTE_DEADLINE_EIGHTHS) / 8;
                assert!(
                    design.deadline(vote).as_millis() as u64 <= deadline_ms,
                    "rtt {rtt} bps {bps:?}: {t:?}"
                );
                assert!(t.raft_config("t").is_ok());
            }
        }
        // LAN and Wi-Fi keep the election timeouts they had before the radio change.
        for p in [LinkProfile::Lan, LinkProfile::Wifi] {
            let t = Timing::for_profile(p);
            assert_eq!(
                (t.election_timeout_ms_min, t.election_timeout_ms_max),
                (1_800, 3_600)
            );
        }
    }
}
