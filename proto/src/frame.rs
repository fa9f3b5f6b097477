//! The frame: the unit every link carries (TCP, the simulator's datagrams, later serial radios).
//!
//! ```text
//! +-------+---------+-------------+-----------+---------+-----------+
//! | magic | version | from varint | to varint | payload | CRC-32 LE |
//! +-------+---------+-------------+-----------+---------+-----------+
//! ```
//!
//! The frame's length is given by its container (a TCP length prefix, a datagram, a COBS
//! delimiter). The CRC-32 (IEEE) covers everything before it and rejects corruption from any
//! link; authentication and encryption wrap the payload in a layer above, without changing
//! this header. Nothing here trusts its input: every length is checked before use.

use std::fmt;

/// First byte of every frame ('g').
pub const FRAME_MAGIC: u8 = 0x67;
/// Frame format version.
pub const FRAME_VERSION: u8 = 1;
/// Smallest possible frame: magic, version, two one-byte varints, CRC.
pub const MIN_FRAME_BYTES: usize = 1 + 1 + 1 + 1 + 4;
/// Largest frame any link accepts: one encoded RPC at its limit plus the header.
pub const MAX_FRAME_BYTES: usize = crate::codec::MAX_ENCODED_BYTES + 32;

/// A decoded frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// Sending node.
    pub from: u64,
    /// Destination node.
    pub to: u64,
    /// The message bytes.
    pub payload: Vec<u8>,
}

/// Why a frame was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    /// Shorter than the smallest frame.
    TooShort,
    /// Longer than [`MAX_FRAME_BYTES`].
    TooLarge,
    /// The CRC does not match: corrupted on the link.
    BadCrc,
    /// Not a ghatta frame.
    BadMagic,
    /// A frame version this node does not speak.
    BadVersion,
    /// A malformed node-id varint.
    BadVarint,
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FrameError::TooShort => "frame shorter than its header",
            FrameError::TooLarge => "frame over the size limit",
            FrameError::BadCrc => "CRC mismatch (corrupted on the link)",
            FrameError::BadMagic => "not a ghatta frame",
            FrameError::BadVersion => "unsupported frame version",
            FrameError::BadVarint => "malformed node id",
        })
    }
}

impl std::error::Error for FrameError {}

/// Append `v` as a LEB128 varint (7 bits a byte, low first). Shared by every header in
/// `net` (frames, radio packets, sealed frames), so all of them read and refuse alike.
pub fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    loop {
        let byte = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

/// Read a varint written by [`put_varint`] at `*pos`, advancing it; `None` when the buffer
/// ends first, the varint is longer than ten bytes, or its tenth byte overflows a u64.
pub fn get_varint(buf: &[u8], pos: &mut usize) -> Option<u64> {
    let mut v: u64 = 0;
    for shift in (0..64).step_by(7) {
        let b = *buf.get(*pos)?;
        *pos += 1;
        // The tenth byte may carry only the top bit of a u64.
        if shift == 63 && b > 1 {
            return None;
        }
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

/// Encode a frame.
pub fn encode(from: u64, to: u64, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 24);
    out.push(FRAME_MAGIC);
    out.push(FRAME_VERSION);
    put_varint(&mut out, from);
    put_varint(&mut out, to);
    out.extend_from_slice(payload);
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// Decode and verify a frame.
pub fn decode(buf: &[u8]) -> Result<Frame, FrameError> {
    if buf.len() < MIN_FRAME_BYTES {
        return Err(FrameError::TooShort);
    }
    if buf.len() > MAX_FRAME_BYTES {
        return Err(FrameError::TooLarge);
    }
    let (body, crc) = buf.split_at(buf.len() - 4);
    let want = u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]);
    if crc32fast::hash(body) != want {
        return Err(FrameError::BadCrc);
    }
    if body[0] != FRAME_MAGIC {
        return Err(FrameError::BadMagic);
    }
    if body[1] != FRAME_VERSION {
        return Err(FrameError::BadVersion);
    }
    let mut pos = 2;
    let from = get_varint(body, &mut pos).ok_or(FrameError::BadVarint)?;
    let to = get_varint(body, &mut pos).ok_or(FrameError::BadVarint)?;
    Ok(Frame {
        from,
        to,
        payload: body[pos..].to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let f = encode(3, 300, b"hello");
        assert_eq!(
            decode(&f),
            Ok(Frame {
                from: 3,
                to: 300,
                payload: b"hello".to_vec()
            })
        );
    }

    #[test]
    fn every_single_bit_flip_is_rejected() {
        let f = encode(1, 2, b"append entries");
        for i in 0..f.len() * 8 {
            let mut g = f.clone();
            g[i / 8] ^= 1 << (i % 8);
            assert!(decode(&g).is_err(), "bit {i} flip accepted");
        }
    }

    #[test]
    fn truncated_and_garbage_frames_are_rejected() {
        let f = encode(1, 2, b"xyz");
        for n in 0..f.len() {
            assert!(decode(&f[..n]).is_err());
        }
        assert_eq!(decode(&[0xff; 16]), Err(FrameError::BadCrc));
    }
}
