//! The kinds of link between controllers, each with the round trip it is designed for: the
//! one fact about a link that both the links (radio pacing, timeouts) and Raft's timing
//! (`raft::timing`) are derived from.

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

    /// The slowest bit rate the profile is designed for, bit/s, when it is slow enough for a
    /// message's air time to count in Raft's timing: the radio's 9,600 bit/s (XBee, LoRa at
    /// its faster settings, the pty tests' slower channel; a SiK at 57,600 is faster).
    /// `None`: air time is negligible against the round trip.
    pub fn bitrate_bps(self) -> Option<u64> {
        match self {
            LinkProfile::Radio => Some(9_600),
            LinkProfile::Lan | LinkProfile::Wifi | LinkProfile::Satellite => None,
        }
    }
}
