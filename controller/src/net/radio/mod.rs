//! Radio links: the link layer for slow, lossy, shared radio channels (serial modems such as
//! SiK/RFD900 or XBee), the serial transport that runs it, and several links per node.
//!
//! Layers, bottom up (each refuses what it cannot verify, never panics on input, and
//! allocates no more than a named limit):
//!
//! - [`cobs`]: packet boundaries on the serial byte stream (COBS, 0x00 delimiter); the
//!   deframer resyncs at the next 0x00 after garbage and holds at most one packet.
//! - [`packet`]: one transmission: kind, destination and source node ids, body, CRC-32.
//!   Packets for another node (the channel is shared) are dropped and counted.
//! - [`reassembly`], [`pacing`], [`link`]: the [`link::LinkDriver`] state machine.
//!
//! ## Link-layer policy
//!
//! - **Whole frames are not retransmitted by the link.** A frame that fits the MTU
//!   (heartbeats, votes, their answers, small appends) goes in one packet, ahead of all
//!   fragments, and if it is lost Raft's own retry (the next heartbeat, the RPC deadline)
//!   repairs it: a link-level repeat would arrive after the deadline anyway at 800 ms RTT.
//! - **Fragmented frames use selective repeat.** The receiver answers the last fragment of
//!   each round with a bitmap of the fragments it holds; the sender repeats only what is
//!   missing, for at most [`link::ARQ_ROUNDS_MAX`] rounds, repeating a round whose bitmap does
//!   not come within the round trip. One bitmap per round instead of one acknowledgement per
//!   fragment matters at 9.6-64 kbit/s, and losing one fragment of a 6-fragment append no
//!   longer loses the whole append.
//! - **Small frames never wait behind bulk data**: two queues per peer, whole frames and
//!   bitmaps strictly first.
//! - **Pacing**: every packet, whatever its queue, passes a token bucket at the configured
//!   air rate (the lower of the air rate and the serial line rate), with a burst of
//!   [`link::BURST_PACKETS`] packets, so the modem's buffer never overflows.
//!
//! Authentication and encryption (`net::secure`) wrap the frame payload above this layer.

pub mod cobs;
pub mod link;
pub mod multi;
pub mod pacing;
pub mod packet;
pub mod reassembly;
pub mod serial;

/// One radio modem's counters as `ghatta status` shows them (`radio` in the JSON).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RadioLinkSnapshot {
    /// The modem's serial device (`[[radio]] device`).
    pub device: String,
    /// Its link-layer counters: packets and bytes each way, CRC errors, malformed packets
    /// (garbage on the line), frames and fragments dropped.
    pub counters: link::RadioStatsSnapshot,
}

#[cfg(test)]
mod tests;
