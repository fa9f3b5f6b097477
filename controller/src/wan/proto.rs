//! The WAN wire protocol: batches of outbox records and acks, compressed, authenticated with a
//! per-grid HMAC-SHA256, carried in the controller's frame (`net::frame`, CRC-32) behind a
//! big-endian u32 length prefix, as `net/tcp.rs` does.
//!
//! ```text
//! frame.from = grid id (batches) or 0 (acks), frame.to = 0 (batches) or grid id (acks)
//! frame.payload = kind u8 | hmac 32 bytes | body
//!   kind 1 Batch: body = deflate(bincode BatchBody)
//!   kind 2 Ack:   body = bincode AckBody
//! hmac = HMAC-SHA256(key, from u64 LE | to u64 LE | kind | body)
//! ```
//!
//! Replaying a captured batch or ack is harmless (the central dedupes, the uploader's cursor
//! only moves forward); forging one needs the key. Nothing is encrypted (see `wan`).

use std::fmt;

use ghatta_actor_sdk::{self as sdk, codec as sdk_codec};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::net::frame::{self, MIN_FRAME_BYTES};
use crate::raft::codec;
use crate::state::OutboxRecord;

/// Largest uncompressed batch body. 64 KiB compresses to roughly 8-16 KiB of ledger records:
/// about 0.25-0.5 s of a 256 kbit/s satellite share, small enough that a link cut wastes
/// little, large enough that the 800 ms RTT is filled by a window of a few batches.
pub const MAX_BATCH_RAW_BYTES: usize = 64 * 1024;
/// Largest frame on the WAN link: a batch that did not compress at all, plus header and MAC.
/// The central refuses longer length prefixes before allocating.
pub const MAX_WAN_FRAME_BYTES: usize = MAX_BATCH_RAW_BYTES + 4 * 1024;
/// Bytes of an HMAC-SHA256 tag.
pub const MAC_BYTES: usize = 32;
/// Pre-shared key length: 256 bits, the HMAC-SHA256 block-size-safe recommendation.
pub const KEY_BYTES: usize = 32;

const KIND_BATCH: u8 = 1;
const KIND_ACK: u8 = 2;

/// A WAN stream: which outbox records it carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Stream {
    /// Billing ledger records (charges, fees, top-ups, disconnects, ...).
    Ledger = 0,
    /// Alarms and relay commands (with their reasons).
    Events = 1,
}

impl Stream {
    /// Every stream.
    pub const ALL: [Stream; 2] = [Stream::Ledger, Stream::Events];

    /// The stream's number on the wire and in `Body::OutboxAck`.
    pub fn id(self) -> u32 {
        self as u32
    }

    /// The stream with this number.
    pub fn from_id(id: u32) -> Option<Stream> {
        Stream::ALL.into_iter().find(|s| s.id() == id)
    }

    /// Whether an outbox record belongs to this stream (decided from the committed output
    /// alone, so every replica agrees).
    pub fn carries(self, rec: &OutboxRecord) -> bool {
        match sdk_codec::decode::<sdk::Output>(&rec.output) {
            Some(sdk::Output::Ledger(_)) => self == Stream::Ledger,
            Some(sdk::Output::Alarm(_)) | Some(sdk::Output::Relay(_)) => self == Stream::Events,
            _ => false,
        }
    }
}

/// A grid's pre-shared key.
#[derive(Clone, PartialEq, Eq)]
pub struct GridKey(pub [u8; KEY_BYTES]);

impl fmt::Debug for GridKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print key material into logs.
        f.write_str("GridKey(..)")
    }
}

impl GridKey {
    /// Parse 64 hex digits.
    pub fn from_hex(s: &str) -> Result<GridKey, String> {
        let s = s.trim();
        if s.len() != KEY_BYTES * 2 || !s.is_ascii() {
            return Err(format!(
                "a grid key is {} hex digits, got {} characters; generate one with `head -c32 /dev/urandom | xxd -p -c64`",
                KEY_BYTES * 2,
                s.len()
            ));
        }
        let mut key = [0u8; KEY_BYTES];
        for (i, b) in key.iter_mut().enumerate() {
            *b = u8::from_str_radix(&s[2 * i..2 * i + 2], 16)
                .map_err(|e| format!("grid key digit pair {i} is not hex: {e}"))?;
        }
        Ok(GridKey(key))
    }
}

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
    /// Length prefix out of range.
    #[error(
        "WAN frame length {0} outside {MIN_FRAME_BYTES}..={MAX_WAN_FRAME_BYTES}: not a ghatta peer or a corrupted stream"
    )]
    Length(usize),
    /// Frame layer refused it.
    #[error("WAN frame refused: {0}")]
    Frame(#[from] frame::FrameError),
    /// Unknown grid (central side).
    #[error("grid {0} has no key at the central; add `--grid-key {0}=<hex>` to `ghatta central`")]
    UnknownGrid(u64),
    /// Bad MAC.
    #[error(
        "WAN frame from {from} to {to} fails HMAC verification: wrong pre-shared key or tampered"
    )]
    BadMac {
        /// Frame source.
        from: u64,
        /// Frame destination.
        to: u64,
    },
    /// Body does not decode.
    #[error("WAN frame body does not decode: {0}")]
    Body(String),
    /// Socket error.
    #[error("WAN socket: {0}")]
    Io(#[from] std::io::Error),
}

fn mac_of(key: &GridKey, from: u64, to: u64, kind: u8, body: &[u8]) -> [u8; MAC_BYTES] {
    // new_from_slice only fails for key lengths HMAC cannot take; any length works for HMAC.
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(&key.0).expect("HMAC takes any key length");
    m.update(&from.to_le_bytes());
    m.update(&to.to_le_bytes());
    m.update(&[kind]);
    m.update(body);
    m.finalize().into_bytes().into()
}

fn seal(key: &GridKey, from: u64, to: u64, kind: u8, body: &[u8]) -> Vec<u8> {
    let mut payload = Vec::with_capacity(1 + MAC_BYTES + body.len());
    payload.push(kind);
    payload.extend_from_slice(&mac_of(key, from, to, kind, body));
    payload.extend_from_slice(body);
    frame::encode(from, to, &payload)
}

/// Encode a batch from `grid` (compressed, authenticated, framed; no length prefix).
pub fn encode_batch(key: &GridKey, grid: u64, body: &BatchBody) -> Result<Vec<u8>, ProtoError> {
    let raw = codec::encode(body).map_err(|e| ProtoError::Body(e.to_string()))?;
    // Level 6: zlib's default; higher levels cost the board CPU for a few % on this data.
    let packed = miniz_oxide::deflate::compress_to_vec(&raw, 6);
    Ok(seal(key, grid, 0, KIND_BATCH, &packed))
}

/// Encode an ack to `grid`.
pub fn encode_ack(key: &GridKey, grid: u64, body: &AckBody) -> Result<Vec<u8>, ProtoError> {
    let raw = codec::encode(body).map_err(|e| ProtoError::Body(e.to_string()))?;
    Ok(seal(key, 0, grid, KIND_ACK, &raw))
}

/// Decode and verify a frame; `key_for` gives the key of a grid (None: unknown grid).
pub fn decode(buf: &[u8], key_for: impl Fn(u64) -> Option<GridKey>) -> Result<Msg, ProtoError> {
    let f = frame::decode(buf)?;
    let (kind, grid) = match f.payload.first() {
        Some(&KIND_BATCH) => (KIND_BATCH, f.from),
        Some(&KIND_ACK) => (KIND_ACK, f.to),
        other => {
            return Err(ProtoError::Body(format!(
                "unknown WAN message kind {other:?}"
            )));
        }
    };
    if f.payload.len() < 1 + MAC_BYTES {
        return Err(ProtoError::Body("WAN payload shorter than its MAC".into()));
    }
    let key = key_for(grid).ok_or(ProtoError::UnknownGrid(grid))?;
    let (tag, body) = f.payload[1..].split_at(MAC_BYTES);
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(&key.0).expect("HMAC takes any key length");
    m.update(&f.from.to_le_bytes());
    m.update(&f.to.to_le_bytes());
    m.update(&[kind]);
    m.update(body);
    // verify_slice compares in constant time.
    m.verify_slice(tag).map_err(|_| ProtoError::BadMac {
        from: f.from,
        to: f.to,
    })?;
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

/// Write one frame with its length prefix.
pub async fn write_frame<W: AsyncWrite + Unpin>(w: &mut W, frame: &[u8]) -> std::io::Result<()> {
    w.write_all(&(frame.len() as u32).to_be_bytes()).await?;
    w.write_all(frame).await?;
    w.flush().await
}

/// Read one length-prefixed frame, refusing lengths out of range before allocating.
pub async fn read_frame<R: AsyncRead + Unpin>(r: &mut R) -> Result<Vec<u8>, ProtoError> {
    let mut len = [0u8; 4];
    r.read_exact(&mut len).await?;
    let len = u32::from_be_bytes(len) as usize;
    if !(MIN_FRAME_BYTES..=MAX_WAN_FRAME_BYTES).contains(&len) {
        return Err(ProtoError::Length(len));
    }
    let mut buf = vec![0u8; len];
    r.read_exact(&mut buf).await?;
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actors::ActorKind;

    #[test]
    fn batch_round_trips_and_a_wrong_key_or_flipped_bit_is_refused() {
        let key = GridKey([7; KEY_BYTES]);
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
        let f = encode_batch(&key, 9, &body).expect("encode");
        let got = decode(&f, |g| (g == 9).then(|| key.clone())).expect("decode");
        assert_eq!(
            got,
            Msg::Batch {
                grid: 9,
                body: body.clone()
            }
        );
        let other = GridKey([8; KEY_BYTES]);
        assert!(matches!(
            decode(&f, |_| Some(other.clone())),
            Err(ProtoError::BadMac { .. })
        ));
        assert!(matches!(
            decode(&f, |_| None),
            Err(ProtoError::UnknownGrid(9))
        ));
        let mut bad = f.clone();
        bad[5] ^= 1;
        assert!(decode(&bad, |_| Some(key.clone())).is_err());
    }
}
