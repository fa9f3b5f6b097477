//! The WAN wire protocol: batches of outbox records and acks, compressed, in the controller's
//! frame (`crate::frame`, CRC-32), each frame sealed by the connection's encrypted channel
//! (`channel`: Noise IK, ChaCha20-Poly1305), which also authenticates the grid.
//!
//! ```text
//! frame.from = grid id (batches) or 0 (acks), frame.to = 0 (batches) or grid id (acks)
//! frame.payload = kind u8 | body
//!   kind 1 Batch: body = deflate(bincode BatchBody)
//!   kind 2 Ack:   body = bincode AckBody
//! ```
//!
//! The grid id in a frame is only a claim: the central serves a batch only when it names the
//! grid the channel's handshake authenticated, and the uploader only takes acks addressed to
//! its own grid. Replaying a batch inside a channel is impossible (implicit record counters);
//! a batch sent twice by the grid itself is harmless (the central dedupes, the uploader's
//! cursor only moves forward).

use serde::{Deserialize, Serialize};

use crate::codec;
use crate::frame;
use crate::outbox::OutboxRecord;

/// Largest uncompressed batch body. 64 KiB compresses to roughly 8-16 KiB of ledger records:
/// about 0.25-0.5 s of a 256 kbit/s satellite share, small enough that a link cut wastes
/// little, large enough that the 800 ms RTT is filled by a window of a few batches.
pub const MAX_BATCH_RAW_BYTES: usize = 64 * 1024;
/// Largest frame on the WAN link: a batch that did not compress at all, plus its header. The
/// channel refuses to reassemble a longer one.
pub const MAX_WAN_FRAME_BYTES: usize = MAX_BATCH_RAW_BYTES + 4 * 1024;

pub mod channel;

const KIND_BATCH: u8 = 1;
const KIND_ACK: u8 = 2;

/// The records of one batch, before compression.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchBody {
    /// Stream number.
    pub stream: u32,
    /// First outbox sequence this batch covers.
    pub first_seq: u64,
    /// One past the last outbox sequence it covers: every record of the stream in
    /// `[first_seq, end_seq)` is in `records`.
    pub end_seq: u64,
    /// The stream's records in the range, ascending by sequence.
    pub records: Vec<(u64, OutboxRecord)>,
}

/// The central's answer to a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AckBody {
    /// Stream number.
    pub stream: u32,
    /// Everything below this outbox sequence is stored durably at the central.
    pub next_seq: u64,
    /// The batch started above `next_seq` (the central misses records before it): resend
    /// from `next_seq`.
    pub gap: bool,
    /// `first_seq` of the batch this answers (lets the uploader ignore stale gap acks).
    pub batch_first_seq: u64,
}

/// A verified message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Msg {
    /// From a grid.
    Batch {
        /// Sending grid.
        grid: u64,
        /// Records.
        body: BatchBody,
    },
    /// From the central.
    Ack {
        /// Addressed grid.
        grid: u64,
        /// The ack.
        body: AckBody,
    },
}

/// Why a WAN frame was refused.
#[derive(Debug, thiserror::Error)]
pub enum ProtoError {
    /// Frame layer refused it.
    #[error("WAN frame refused: {0}")]
    Frame(#[from] frame::FrameError),
    /// The channel failed or refused the peer.
    #[error(transparent)]
    Channel(#[from] channel::ChannelError),
    /// A frame naming another grid than the channel authenticated.
    #[error("a frame names grid {claimed} on a channel authenticated as grid {session}")]
    WrongGrid {
        /// The grid the frame names.
        claimed: u64,
        /// The grid the handshake authenticated.
        session: u64,
    },
    /// Body does not decode.
    #[error("WAN frame body does not decode: {0}")]
    Body(String),
    /// Socket error.
    #[error("WAN socket: {0}")]
    Io(#[from] std::io::Error),
}

fn wrap(from: u64, to: u64, kind: u8, body: &[u8]) -> Vec<u8> {
    let mut payload = Vec::with_capacity(1 + body.len());
    payload.push(kind);
    payload.extend_from_slice(body);
    frame::encode(from, to, &payload)
}

/// Encode a batch from `grid` (compressed, framed; the channel seals it).
pub fn encode_batch(grid: u64, body: &BatchBody) -> Result<Vec<u8>, ProtoError> {
    let raw = codec::encode(body).map_err(|e| ProtoError::Body(e.to_string()))?;
    // Level 6: zlib's default; higher levels cost the board CPU for a few % on this data.
    let packed = miniz_oxide::deflate::compress_to_vec(&raw, 6);
    Ok(wrap(grid, 0, KIND_BATCH, &packed))
}

/// Encode an ack to `grid`.
pub fn encode_ack(grid: u64, body: &AckBody) -> Result<Vec<u8>, ProtoError> {
    let raw = codec::encode(body).map_err(|e| ProtoError::Body(e.to_string()))?;
    Ok(wrap(0, grid, KIND_ACK, &raw))
}

/// Decode a frame (already opened by the channel) and check the grid it names is `grid`,
/// the one the channel authenticated.
pub fn decode(buf: &[u8], grid: u64) -> Result<Msg, ProtoError> {
    let f = frame::decode(buf)?;
    let (kind, claimed) = match f.payload.first() {
        Some(&KIND_BATCH) => (KIND_BATCH, f.from),
        Some(&KIND_ACK) => (KIND_ACK, f.to),
        other => {
            return Err(ProtoError::Body(format!(
                "unknown WAN message kind {other:?}"
            )));
        }
    };
    if claimed != grid {
        return Err(ProtoError::WrongGrid {
            claimed,
            session: grid,
        });
    }
    let body = &f.payload[1..];
    if kind == KIND_BATCH {
        let raw = miniz_oxide::inflate::decompress_to_vec_with_limit(body, MAX_BATCH_RAW_BYTES * 2)
            .map_err(|e| {
                ProtoError::Body(format!("batch does not inflate within the limit: {e:?}"))
            })?;
        let body: BatchBody = codec::decode(&raw).map_err(|e| ProtoError::Body(e.to_string()))?;
        Ok(Msg::Batch { grid, body })
    } else {
        let body: AckBody = codec::decode(body).map_err(|e| ProtoError::Body(e.to_string()))?;
        Ok(Msg::Ack { grid, body })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbox::ActorKind;

    #[test]
    fn batch_round_trips_and_a_frame_naming_another_grid_is_refused() {
        let body = BatchBody {
            stream: 0,
            first_seq: 10,
            end_seq: 12,
            records: vec![(
                11,
                OutboxRecord {
                    index: 3,
                    time_ms: 4,
                    actor: ActorKind::Billing,
                    output: vec![1, 2, 3],
                },
            )],
        };
        let f = encode_batch(9, &body).expect("encode");
        let got = decode(&f, 9).expect("decode");
        assert_eq!(
            got,
            Msg::Batch {
                grid: 9,
                body: body.clone()
            }
        );
        assert!(matches!(
            decode(&f, 8),
            Err(ProtoError::WrongGrid {
                claimed: 9,
                session: 8
            })
        ));
        let mut bad = f.clone();
        bad[5] ^= 1;
        assert!(decode(&bad, 9).is_err());
        let ack = AckBody {
            stream: 1,
            next_seq: 5,
            gap: false,
            batch_first_seq: 3,
        };
        assert_eq!(
            decode(&encode_ack(9, &ack).unwrap(), 9).unwrap(),
            Msg::Ack { grid: 9, body: ack }
        );
    }
}
