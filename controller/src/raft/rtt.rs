//! Per-peer round-trip estimation and the RPC deadlines derived from it, without I/O: the
//! caller passes in each answered RPC's elapsed time and size and the link's bit rate.
//!
//! ## Why
//!
//! openraft gives every RPC a deadline from its static timing (an append the heartbeat
//! interval, a vote 3/4 of the shortest election timeout), and the network layer used to
//! pass those on. On the radio (800 ms RTT, +/-50 % jitter, a shared channel where a frame
//! waits behind other nodes' fragments) a vote then timed out after 1.35 s against a round
//! trip that was often longer, and a candidate that lost its votes to its own deadline waited
//! out an election timeout and tried again with a higher term: terms 1 -> 5 and 20-24 s
//! from leader loss to the next commit (issue 26, item 5). Deadlines here come from what the
//! link did, as TCP's retransmission timer does (RFC 6298), plus the air time of the message
//! at the link's bit rate, so a 9,600 and a 57,600 bit/s channel at the same RTT get the
//! same deadline apart from the air time of what they carry.
//!
//! ## The rule
//!
//! - Each answered RPC to a peer is a sample: its elapsed time less the air time of its
//!   request and answer (so a 4 KiB append and a heartbeat measure the same link).
//!   RFC 6298, section 2: `RTTVAR <- 3/4 RTTVAR + 1/4 |SRTT - R|`, `SRTT <- 7/8 SRTT + 1/8 R`.
//!   Only answered RPCs are samples, and ours are never resent under the same id (Karn's rule
//!   holds by construction).
//! - Before the first sample the estimate is the link's design: SRTT = the design RTT,
//!   RTTVAR = half its jitter, so the first deadline is `RTT + 2 jitter`: 1.6 s on the
//!   radio profile (800 ms +/- 400 ms), the heartbeat interval `Timing::for_rtt` picks.
//! - A deadline is `SRTT + K RTTVAR` ([`RTTVAR_GAIN_K`]) plus the message's air time, within
//!   [`DEADLINE_MS_MIN`] and [`DEADLINE_MS_MAX`]; the caller caps it below openraft's own
//!   cut (`RPCOption::hard_ttl`), since an answer after that is thrown away anyway.

use std::time::Duration;

/// RFC 6298's K: the deadline is SRTT plus this many RTTVARs.
pub const RTTVAR_GAIN_K: u32 = 4;
/// Shortest deadline: a follower's answer to an append includes an fsync, tens of ms on an
/// SD card and past 100 ms when the card is busy; on a LAN the measured round trip is well
/// under a millisecond, and a deadline built from it alone would time out every append that
/// met a slow fsync. The same 300 ms as `raft::timing::HEARTBEAT_MS_MIN`.
pub const DEADLINE_MS_MIN: u64 = 300;
/// Longest deadline: RFC 6298 (2.5) allows a maximum of at least 60 s. The slowest link we
/// design for (satellite, double hop up to 1.6 s with peaks past 2 s) stays far below it; a
/// round trip estimated longer than this is a link that is down, not slow.
pub const DEADLINE_MS_MAX: u64 = 60_000;
/// Longest sample kept: an answer after this long (a peer that was stalled, a frame stuck in
/// a modem's queue) would drag SRTT up for dozens of later samples without saying anything
/// about the link.
pub const SAMPLE_MS_MAX: u64 = DEADLINE_MS_MAX;
/// Bits on the line per byte of a frame: a serial radio's 8N1 framing is ten bits per byte,
/// the worst of the links we carry (TCP's headers are below its frame overhead).
pub const LINE_BITS_PER_BYTE: u64 = 10;

/// Air time of `bytes` at `bitrate_bps` (`None` or 0: a link too fast for it to matter).
pub fn air_time(bytes: usize, bitrate_bps: Option<u64>) -> Duration {
    match bitrate_bps {
        Some(bps) if bps > 0 => {
            Duration::from_micros(bytes as u64 * LINE_BITS_PER_BYTE * 1_000_000 / bps)
        }
        _ => Duration::ZERO,
    }
}

/// The round trip a link was designed for: where an estimate starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkDesign {
    /// Design round trip, ms.
    pub rtt_ms: u64,
    /// How far a round trip may stray above the design, ms (the radio profile's +/-50 %:
    /// 400 ms at 800 ms).
    pub jitter_ms: u64,
}

/// SRTT and RTTVAR of one peer (RFC 6298), in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RttEstimator {
    srtt_us: u64,
    rttvar_us: u64,
    samples: u64,
}

impl RttEstimator {
    /// An estimate that starts at the link's design (module docs).
    pub fn new(design: LinkDesign) -> Self {
        RttEstimator {
            srtt_us: design.rtt_ms.min(SAMPLE_MS_MAX) * 1_000,
            rttvar_us: design.jitter_ms.min(SAMPLE_MS_MAX) * 1_000 / 2,
            samples: 0,
        }
    }

    /// An RPC was answered `elapsed` after it was sent; `air` is the air time of its request
    /// and answer at the link's bit rate ([`air_time`]).
    pub fn sample(&mut self, elapsed: Duration, air: Duration) {
        let r = (elapsed.saturating_sub(air).as_micros() as u64).min(SAMPLE_MS_MAX * 1_000);
        if self.samples == 0 {
            // RFC 6298 (2.2): the first measurement replaces the design.
            self.srtt_us = r;
            self.rttvar_us = r / 2;
        } else {
            let dev = self.srtt_us.abs_diff(r);
            self.rttvar_us = (3 * self.rttvar_us + dev) / 4;
            self.srtt_us = (7 * self.srtt_us + r) / 8;
        }
        self.samples += 1;
    }

    /// Smoothed round trip.
    pub fn srtt(&self) -> Duration {
        Duration::from_micros(self.srtt_us)
    }

    /// Round-trip variation.
    pub fn rttvar(&self) -> Duration {
        Duration::from_micros(self.rttvar_us)
    }

    /// Answered RPCs seen.
    pub fn samples(&self) -> u64 {
        self.samples
    }

    /// The deadline of an RPC whose request and answer take `air` on the air: `SRTT + K
    /// RTTVAR + air`, within [`DEADLINE_MS_MIN`]..=[`DEADLINE_MS_MAX`].
    pub fn deadline(&self, air: Duration) -> Duration {
        let us = self.srtt_us + u64::from(RTTVAR_GAIN_K) * self.rttvar_us;
        (Duration::from_micros(us) + air).clamp(
            Duration::from_millis(DEADLINE_MS_MIN),
            Duration::from_millis(DEADLINE_MS_MAX),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RADIO: LinkDesign = LinkDesign {
        rtt_ms: 800,
        jitter_ms: 400,
    };

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn the_design_gives_the_first_deadline() {
        let e = RttEstimator::new(RADIO);
        assert_eq!(e.deadline(Duration::ZERO), ms(1_600));
        assert_eq!(e.deadline(ms(100)), ms(1_700));
        // A LAN's design is below the fsync floor.
        let lan = RttEstimator::new(LinkDesign {
            rtt_ms: 5,
            jitter_ms: 5,
        });
        assert_eq!(lan.deadline(Duration::ZERO), ms(DEADLINE_MS_MIN));
    }

    #[test]
    fn a_steady_link_narrows_the_deadline_and_jitter_widens_it() {
        let mut steady = RttEstimator::new(RADIO);
        for _ in 0..64 {
            steady.sample(ms(800), Duration::ZERO);
        }
        assert_eq!(steady.srtt(), ms(800));
        assert!(steady.deadline(Duration::ZERO) < ms(850), "{steady:?}");
        // 800 ms +/- 50 %, alternating: the deadline covers the slowest round trip.
        let mut jittery = RttEstimator::new(RADIO);
        for i in 0..64 {
            jittery.sample(if i % 2 == 0 { ms(400) } else { ms(1_200) }, Duration::ZERO);
        }
        assert!(jittery.deadline(Duration::ZERO) >= ms(1_200), "{jittery:?}");
        assert!(jittery.deadline(Duration::ZERO) <= ms(3_000), "{jittery:?}");
    }

    #[test]
    fn air_time_is_taken_out_of_samples_and_added_to_deadlines() {
        // The same 800 ms link at 9,600 bit/s: a 4 KiB append spends ~4.3 s on the air.
        let air = air_time(4_096, Some(9_600));
        assert_eq!(air, Duration::from_micros(4_266_666));
        let mut e = RttEstimator::new(RADIO);
        for _ in 0..64 {
            e.sample(ms(800) + air, air);
            e.sample(ms(800), Duration::ZERO);
        }
        assert_eq!(e.srtt(), ms(800));
        assert!(e.deadline(air) >= ms(800) + air);
        // A fast link: air time does not count.
        assert_eq!(air_time(4_096, None), Duration::ZERO);
        assert_eq!(air_time(4_096, Some(0)), Duration::ZERO);
    }

    #[test]
    fn deadlines_stay_within_their_floor_and_ceiling() {
        let mut lan = RttEstimator::new(RADIO);
        for _ in 0..64 {
            lan.sample(Duration::from_micros(200), Duration::ZERO);
        }
        assert_eq!(lan.deadline(Duration::ZERO), ms(DEADLINE_MS_MIN));
        let mut stuck = RttEstimator::new(RADIO);
        for _ in 0..64 {
            stuck.sample(Duration::from_secs(3_600), Duration::ZERO);
        }
        assert_eq!(stuck.srtt(), ms(SAMPLE_MS_MAX));
        assert_eq!(stuck.deadline(ms(10_000)), ms(DEADLINE_MS_MAX));
    }
}
