//! Raft timing derived from the link's round trip, and the openraft `Config` built from it.
//!
//! Raft needs broadcast time << election timeout << mean time between failures. etcd's tuning
//! guide puts the heartbeat at 0.5-1.5x the RTT and the election timeout at 10x the RTT or
//! more. openraft bounds every AppendEntries/heartbeat RPC by the heartbeat interval, so on a
//! slow link the heartbeat must exceed the RTT or every heartbeat times out. Pre-vote is always
//! on: a node behind a flapping radio link asks before it disrupts a healthy leader with a
//! higher term.
//!
//! ## Appends on a slow radio: why the heartbeat is not their deadline
//!
//! openraft gives *every* AppendEntries the same deadline, `RPCOption::soft_ttl()` = 3/4 of
//! the heartbeat, whatever it carries. That is right for a heartbeat and for a LAN, and wrong
//! for an append that carries entries over a link whose air time, not its latency, sets the
//! round trip. Measured on the flapping-radio scenario (64 kbit/s, 100-byte MTU, 20 % loss;
//! heartbeat 1,880 ms, so a 1,410 ms deadline; `GHATTA_LOG=ghatta::raft::network=debug`):
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
//! delivery time. So the network layer (`raft/network.rs`, `AppendPacing`) sizes and times
//! appends per peer from how earlier appends to that peer fared: it cuts an append to a
//! byte budget (answering openraft with a partial success, so openraft resumes after what
//! the peer holds), halves the budget and doubles the deadline (up to 16x, i.e. 12
//! heartbeats, the longest election timeout) when an append times out, and grows the budget
//! back and shrinks the deadline when appends come back in time. On a LAN nothing changes:
//! appends come back in milliseconds, the budget stays at its 1 MiB ceiling and the deadline
//! at openraft's. Heartbeats (empty appends) keep openraft's deadline: they are what tells a
//! leader it still leads, and they fit in one radio frame. After the change the same run
//! commits 569 entries with every replica converged, and seeds 0..4 pass.

use serde::{Deserialize, Serialize};

/// Named link profiles; each fixes a design round trip.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LinkProfile {
    /// Loopback or wired LAN (design RTT 5 ms). Used by `ghatta demo` and the tests.
    Lan,
    /// Local Wi-Fi between controllers (design RTT 50 ms).
    Wifi,
    /// Radio modems (SiK/RFD900, XBee): design RTT 800 ms.
    Radio,
    /// Geostationary satellite, single hop 550-800 ms, double hop up to 1.6 s: design RTT 2 s.
    Satellite,
}

impl LinkProfile {
    /// The design round trip of the profile, ms.
    pub fn rtt_ms(self) -> u64 {
        match self {
            LinkProfile::Lan => 5,
            LinkProfile::Wifi => 50,
            LinkProfile::Radio => 800,
            LinkProfile::Satellite => 2000,
        }
    }
}

/// Raft timing for one cluster. Every member should use the same values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timing {
    /// Heartbeat interval, ms (also openraft's per-RPC deadline for appends).
    pub heartbeat_ms: u64,
    /// Election timeout lower bound, ms.
    pub election_timeout_ms_min: u64,
    /// Election timeout upper bound, ms.
    pub election_timeout_ms_max: u64,
}

/// Shortest heartbeat we use. openraft gives each append RPC the heartbeat interval as its
/// deadline, and a follower's answer includes an fsync: tens of ms on an SD card, past 100 ms
/// when the card is busy. 300 ms keeps a healthy LAN from reporting timeouts.
pub const HEARTBEAT_MS_MIN: u64 = 300;

impl Timing {
    /// Timing for a link with round trip `rtt_ms`: heartbeat 1.25x RTT (at least
    /// [`HEARTBEAT_MS_MIN`]), election timeout 6-12 heartbeats. Six heartbeats (7.5 RTT) is a
    /// little under etcd's 10x because pre-vote and check-quorum already stop a lossy link
    /// from causing term inflation, and the operators' goal is a new leader within ~10 s on
    /// an 800 ms radio.
    pub fn for_rtt(rtt_ms: u64) -> Timing {
        let heartbeat_ms = (rtt_ms * 5 / 4).max(HEARTBEAT_MS_MIN);
        Timing {
            heartbeat_ms,
            election_timeout_ms_min: heartbeat_ms * 6,
            election_timeout_ms_max: heartbeat_ms * 12,
        }
    }

    /// Timing for a named profile.
    pub fn for_profile(p: LinkProfile) -> Timing {
        Timing::for_rtt(p.rtt_ms())
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
            // Snapshot after 2,000 entries (half an hour of field batches from three nodes),
            // keeping 500 entries for followers that lag briefly.
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(2000),
            max_in_snapshot_log_to_keep: 500,
            ..Default::default()
        };
        config.validate()
    }
}
