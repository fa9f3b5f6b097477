//! The model of one directed link: latency, jitter, loss (independent and in
//! bursts), duplication, corruption, bandwidth, MTU, queue and flapping, with
//! presets for the links ghatta meets in the field.

use serde::{Deserialize, Serialize};

/// Default one-way latency: half of a single-hop geostationary satellite RTT
/// (550-800 ms per satellite WAN optimisation guides), i.e. the hostile case
/// the node must be tuned for, not a LAN.
pub const LATENCY_MS_DEFAULT: u32 = 400;
/// Default mean of the exponential jitter added to each frame.
pub const JITTER_MS_DEFAULT: u32 = 100;
/// Cap on one-way latency including jitter: 1 s one way is a 2 s RTT, the
/// ">2 s peaks" end of the satellite figures; beyond that a frame is simply late
/// by the cap (a link model, not an outage model: outages are partitions).
pub const LATENCY_CAP_MS_DEFAULT: u32 = 1_000;
/// Default MTU: an Ethernet/Wi-Fi payload minus IP/UDP headers.
pub const MTU_BYTES_DEFAULT: u32 = 1_472;
/// Default bandwidth: 1 Mbit/s, a modest Wi-Fi bridge or satellite share.
pub const BANDWIDTH_BPS_DEFAULT: u64 = 1_000_000;
/// Frames that may wait in a link's transmit queue before tail drop. 64 frames
/// of 1,472 bytes is ~0.75 s at 1 Mbit/s: about one RTT of buffering, a
/// reasonable router queue (more is bufferbloat, which hides overload).
pub const QUEUE_FRAMES_DEFAULT: u32 = 64;

/// Probabilities outside [0, 1] are rejected when a scenario is loaded; this
/// is the largest MTU accepted (jumbo frames are not a thing on these links).
pub const MTU_BYTES_MAX: u32 = 9_000;

/// Periodic link failure: the link alternates between up and down periods whose
/// lengths are exponentially distributed with these means.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Flap {
    /// Mean length of an up period, in milliseconds.
    pub up_ms: u64,
    /// Mean length of a down period, in milliseconds.
    pub down_ms: u64,
}

/// Gilbert-Elliott burst loss: the link is in a good or a bad state, steps
/// between them once per frame sent through the air with these probabilities,
/// and loses each frame with its state's rate. Radio loss comes in bursts (a
/// fade, a neighbour's transmission), which independent loss at the same mean
/// rate does not show: a burst eats every retry sent inside it.
///
/// The mean burst lasts `1 / bad_to_good` frames and the mean gap between
/// bursts `1 / good_to_bad` frames; the long-run share of frames sent in the
/// bad state is `good_to_bad / (good_to_bad + bad_to_good)`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BurstLoss {
    /// Probability a frame is lost in the good state.
    #[serde(default)]
    pub loss_good: f64,
    /// Probability a frame is lost in the bad state.
    pub loss_bad: f64,
    /// Probability, per frame, of going from good to bad.
    pub good_to_bad: f64,
    /// Probability, per frame, of going from bad to good (> 0: a bad state that never
    /// ends is a cut, and a partition says that plainly).
    pub bad_to_good: f64,
}

impl BurstLoss {
    /// Checks the ranges; `Err` names the offending field and why.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        for (name, p) in [
            ("loss_good", self.loss_good),
            ("loss_bad", self.loss_bad),
            ("good_to_bad", self.good_to_bad),
            ("bad_to_good", self.bad_to_good),
        ] {
            if !(0.0..=1.0).contains(&p) {
                return Err((name, format!("{p} is not a probability in [0, 1]")));
            }
        }
        if self.bad_to_good == 0.0 {
            return Err((
                "bad_to_good",
                "0 would keep the link in the bad state for good; use a partition for a cut"
                    .to_string(),
            ));
        }
        Ok(())
    }
}

/// How one direction of a link behaves. Probabilities are per frame.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LinkModel {
    /// Base one-way latency.
    pub latency_ms: u32,
    /// Mean of the exponentially distributed extra delay per frame; jitter
    /// larger than the gap between frames reorders them. With
    /// [`LinkModel::jitter_uniform`], the half-width of a uniform spread instead.
    pub jitter_ms: u32,
    /// Spread each frame's latency uniformly over `latency_ms ± jitter_ms`
    /// (clamped to `[0, latency_cap_ms]`) instead of adding an exponential
    /// tail: a bounded "±50 %" jitter, as link budgets state it, where the
    /// exponential model has no upper bound but the cap.
    pub jitter_uniform: bool,
    /// Largest one-way latency a frame can see (base + jitter is clamped to it).
    pub latency_cap_ms: u32,
    /// Probability a frame is lost.
    pub loss: f64,
    /// Probability a frame is delivered twice (the copy gets its own latency).
    pub duplicate: f64,
    /// Probability a delivered frame has 1-3 bits flipped.
    pub corrupt: f64,
    /// Serialisation rate; 0 means unlimited. A frame occupies the link for
    /// `len * 8 / bandwidth_bps` seconds and later frames queue behind it.
    pub bandwidth_bps: u64,
    /// Largest frame the link carries; larger frames are dropped and counted.
    /// 0 means unlimited.
    pub mtu_bytes: u32,
    /// Frames that may wait for the link before tail drop (only meaningful
    /// with a bandwidth limit).
    pub queue_frames: u32,
    /// Optional flapping (alternating up/down periods).
    pub flap: Option<Flap>,
    /// Optional burst loss, on top of `loss` (a frame is lost if either loses it).
    pub burst: Option<BurstLoss>,
}

impl Default for LinkModel {
    fn default() -> Self {
        Self::satellite()
    }
}

impl LinkModel {
    /// A perfect link: no latency, no loss, unlimited bandwidth. For unit tests.
    pub fn perfect() -> Self {
        Self {
            latency_ms: 0,
            jitter_ms: 0,
            jitter_uniform: false,
            latency_cap_ms: LATENCY_CAP_MS_DEFAULT,
            loss: 0.0,
            duplicate: 0.0,
            corrupt: 0.0,
            bandwidth_bps: 0,
            mtu_bytes: 0,
            queue_frames: QUEUE_FRAMES_DEFAULT,
            flap: None,
            burst: None,
        }
    }

    /// Village Wi-Fi bridge: a few ms, occasional loss.
    pub fn lan() -> Self {
        Self {
            latency_ms: 3,
            jitter_ms: 2,
            loss: 0.001,
            // Wi-Fi point-to-point bridges over a few km deliver ~10 Mbit/s usable.
            bandwidth_bps: 10_000_000,
            mtu_bytes: MTU_BYTES_DEFAULT,
            ..Self::perfect()
        }
    }

    /// Geostationary satellite WAN: 800 ms RTT base, peaks to 2 s
    /// (550-800 ms single hop, >2 s peaks per satellite WAN optimisation guides).
    pub fn satellite() -> Self {
        Self {
            latency_ms: LATENCY_MS_DEFAULT,
            jitter_ms: JITTER_MS_DEFAULT,
            jitter_uniform: false,
            latency_cap_ms: LATENCY_CAP_MS_DEFAULT,
            loss: 0.005,
            duplicate: 0.0,
            corrupt: 0.0,
            bandwidth_bps: BANDWIDTH_BPS_DEFAULT,
            mtu_bytes: MTU_BYTES_DEFAULT,
            queue_frames: QUEUE_FRAMES_DEFAULT,
            flap: None,
            burst: None,
        }
    }

    /// SiK/RFD900-class radio modem: 64 kbit/s air rate (SiK firmware default),
    /// TDM windows of up to 131 ms adding latency and jitter, payloads of a
    /// few hundred bytes (see the radio scenario for the MTU reasoning).
    pub fn radio_sik() -> Self {
        Self {
            latency_ms: 60,
            jitter_ms: 60,
            jitter_uniform: false,
            latency_cap_ms: LATENCY_CAP_MS_DEFAULT,
            loss: 0.02,
            duplicate: 0.001,
            corrupt: 0.001,
            bandwidth_bps: 64_000,
            mtu_bytes: 252,
            // 16 frames of 252 bytes is ~0.5 s of air time at 64 kbit/s.
            queue_frames: 16,
            flap: None,
            burst: None,
        }
    }

    /// Checks the ranges; `Err` names the offending field and why.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        for (name, p) in [
            ("loss", self.loss),
            ("duplicate", self.duplicate),
            ("corrupt", self.corrupt),
        ] {
            if !(0.0..=1.0).contains(&p) {
                return Err((name, format!("{p} is not a probability in [0, 1]")));
            }
        }
        if self.mtu_bytes > MTU_BYTES_MAX {
            return Err((
                "mtu_bytes",
                format!("{} exceeds {MTU_BYTES_MAX}", self.mtu_bytes),
            ));
        }
        if self.latency_cap_ms < self.latency_ms {
            return Err((
                "latency_cap_ms",
                format!(
                    "cap {} is below the base latency {}",
                    self.latency_cap_ms, self.latency_ms
                ),
            ));
        }
        if let Some(f) = self.flap
            && (f.up_ms == 0 || f.down_ms == 0)
        {
            return Err(("flap", "up_ms and down_ms must both be > 0".to_string()));
        }
        if let Some(b) = self.burst {
            b.validate()?;
        }
        Ok(())
    }
}

/// Which directions of a pair a partition cuts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Both directions.
    Both,
    /// Only frames from the first node to the second are dropped.
    AToB,
    /// Only frames from the second node to the first are dropped.
    BToA,
}

/// Per-link counters (one direction).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkCounters {
    /// Frames handed to `send`.
    pub sent: u64,
    /// Frames put into the receiver's inbox (duplicates included).
    pub delivered: u64,
    /// Frames lost to the loss probability.
    pub dropped_loss: u64,
    /// Frames dropped by a partition, a flap-down period or a down node.
    pub dropped_partition: u64,
    /// Frames larger than the MTU.
    pub dropped_mtu: u64,
    /// Frames dropped because the transmit queue was full (tail drop).
    pub dropped_queue: u64,
    /// Frames dropped because the receiver's inbox was full or absent.
    pub dropped_inbox: u64,
    /// Frames delivered with flipped bits.
    pub corrupted: u64,
    /// Extra copies delivered.
    pub duplicated: u64,
    /// Payload bytes handed to `send`.
    pub bytes_sent: u64,
    /// Payload bytes delivered.
    pub bytes_delivered: u64,
}

impl LinkCounters {
    /// Adds another link's counters into this one.
    pub fn add(&mut self, o: &LinkCounters) {
        self.sent += o.sent;
        self.delivered += o.delivered;
        self.dropped_loss += o.dropped_loss;
        self.dropped_partition += o.dropped_partition;
        self.dropped_mtu += o.dropped_mtu;
        self.dropped_queue += o.dropped_queue;
        self.dropped_inbox += o.dropped_inbox;
        self.corrupted += o.corrupted;
        self.duplicated += o.duplicated;
        self.bytes_sent += o.bytes_sent;
        self.bytes_delivered += o.bytes_delivered;
    }
}
