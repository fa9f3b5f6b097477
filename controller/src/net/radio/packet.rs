//! The radio packet: what one transmission on a shared channel carries, with its own CRC-32.
//!
//! ```text
//! +------+------------+------------+----------------------------+-----------+
//! | kind | dst varint | src varint | body (by kind)             | CRC-32 LE |
//! +------+------------+------------+----------------------------+-----------+
//! kind FRAME:    body = one whole node frame (ghatta_proto::frame)
//! kind FRAGMENT: body = message id u32 LE, index u16 LE, count u16 LE, flags u8, data
//! kind BITMAP:   body = message id u32 LE, count u16 LE, one bit per fragment held
//! ```
//!
//! Every node on the channel hears every packet, so each carries its destination and source
//! (node ids, LEB128 like the frame header: one byte for ids below 128); a node drops, and
//! counts, packets for someone else. The CRC covers every byte before it, so a corrupted
//! fragment is refused on arrival instead of spoiling a reassembled frame.

use std::fmt;

use ghatta_proto::frame::{get_varint, put_varint};

/// Destination meaning "every node on the channel". Node id 0 is reserved (config.rs refuses
/// it), so it can never collide with a real node.
pub const BROADCAST: u64 = 0;
/// A whole node frame in one packet.
pub const KIND_FRAME: u8 = 0x01;
/// One fragment of a frame larger than the MTU.
pub const KIND_FRAGMENT: u8 = 0x02;
/// The receiver's answer to a round of fragments: which ones it holds.
pub const KIND_BITMAP: u8 = 0x03;
/// The CRC-32 trailer.
pub const CRC_BYTES: usize = 4;
/// Fragment body header: message id, index, count, flags.
pub const FRAGMENT_HEADER_BYTES: usize = 4 + 2 + 2 + 1;
/// Bitmap body header: message id, count.
pub const BITMAP_HEADER_BYTES: usize = 4 + 2;
/// Largest address header: kind and two 10-byte varints.
pub const ADDRESS_BYTES_MAX: usize = 1 + 10 + 10;
/// Flag on a fragment: the last of its round; the receiver answers it with a bitmap.
pub const FLAG_LAST_IN_ROUND: u8 = 1;
/// Most fragments one frame may be cut into. At a 100-byte MTU that is ~84 KiB, more than
/// any Raft message a radio link can carry in a useful time (84 KiB at 9,600 bit/s is 70 s);
/// a larger frame is dropped and counted rather than occupying the channel.
pub const FRAGMENTS_PER_FRAME_MAX: usize = 1_024;

/// A decoded packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    /// Destination node, or [`BROADCAST`].
    pub dst: u64,
    /// Sending node.
    pub src: u64,
    /// What it carries.
    pub body: Body,
}

/// What a packet carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    /// A whole frame.
    Frame(Vec<u8>),
    /// A fragment of message `id`.
    Fragment {
        /// Message id (per sender).
        id: u32,
        /// Index of this fragment.
        index: u16,
        /// Fragments in the message (2..=[`FRAGMENTS_PER_FRAME_MAX`]).
        count: u16,
        /// [`FLAG_LAST_IN_ROUND`] or 0.
        flags: u8,
        /// The fragment's bytes.
        data: Vec<u8>,
    },
    /// Which fragments of message `id` the sender of the bitmap holds.
    Bitmap {
        /// Message id (of the receiver of the bitmap).
        id: u32,
        /// Fragments in the message.
        count: u16,
        /// One bit per fragment, least significant bit first.
        bits: Vec<u8>,
    },
}

/// Why a packet was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PacketError {
    /// Shorter than any packet.
    TooShort,
    /// Longer than the link's limit.
    TooLarge,
    /// CRC mismatch: corrupted on the air or on the serial line.
    BadCrc,
    /// A kind this node does not know.
    UnknownKind(u8),
    /// A malformed node id.
    BadVarint,
    /// A fragment or bitmap whose header does not add up.
    Malformed,
}

impl fmt::Display for PacketError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PacketError::TooShort => f.write_str("radio packet shorter than its header"),
            PacketError::TooLarge => f.write_str("radio packet over the link's size limit"),
            PacketError::BadCrc => f.write_str("radio packet CRC mismatch (corrupted)"),
            PacketError::UnknownKind(k) => write!(f, "unknown radio packet kind {k:#04x}"),
            PacketError::BadVarint => f.write_str("malformed node id in a radio packet"),
            PacketError::Malformed => f.write_str("inconsistent fragment or bitmap header"),
        }
    }
}

impl std::error::Error for PacketError {}

/// Bytes of the kind and address header for this pair of nodes.
pub fn address_bytes(dst: u64, src: u64) -> usize {
    let len = |v: u64| (64 - v.max(1).leading_zeros() as usize).div_ceil(7).max(1);
    1 + len(dst) + len(src)
}

/// Encode a packet.
pub fn encode(p: &Packet) -> Vec<u8> {
    let body_len = match &p.body {
        Body::Frame(f) => f.len(),
        Body::Fragment { data, .. } => FRAGMENT_HEADER_BYTES + data.len(),
        Body::Bitmap { bits, .. } => BITMAP_HEADER_BYTES + bits.len(),
    };
    let mut out = Vec::with_capacity(ADDRESS_BYTES_MAX + body_len + CRC_BYTES);
    out.push(match p.body {
        Body::Frame(_) => KIND_FRAME,
        Body::Fragment { .. } => KIND_FRAGMENT,
        Body::Bitmap { .. } => KIND_BITMAP,
    });
    put_varint(&mut out, p.dst);
    put_varint(&mut out, p.src);
    match &p.body {
        Body::Frame(f) => out.extend_from_slice(f),
        Body::Fragment {
            id,
            index,
            count,
            flags,
            data,
        } => {
            out.extend_from_slice(&id.to_le_bytes());
            out.extend_from_slice(&index.to_le_bytes());
            out.extend_from_slice(&count.to_le_bytes());
            out.push(*flags);
            out.extend_from_slice(data);
        }
        Body::Bitmap { id, count, bits } => {
            out.extend_from_slice(&id.to_le_bytes());
            out.extend_from_slice(&count.to_le_bytes());
            out.extend_from_slice(bits);
        }
    }
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// Decode and verify a packet of at most `limit` bytes. Allocates at most `buf.len()`.
pub fn decode(buf: &[u8], limit: usize) -> Result<Packet, PacketError> {
    if buf.len() < 1 + 1 + 1 + CRC_BYTES {
        return Err(PacketError::TooShort);
    }
    if buf.len() > limit {
        return Err(PacketError::TooLarge);
    }
    let (head, crc) = buf.split_at(buf.len() - CRC_BYTES);
    if crc32fast::hash(head) != u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]) {
        return Err(PacketError::BadCrc);
    }
    let kind = head[0];
    let mut pos = 1;
    let dst = get_varint(head, &mut pos).ok_or(PacketError::BadVarint)?;
    let src = get_varint(head, &mut pos).ok_or(PacketError::BadVarint)?;
    let body = &head[pos..];
    let u16_at = |i: usize| u16::from_le_bytes([body[i], body[i + 1]]);
    let u32_at = |i: usize| u32::from_le_bytes([body[i], body[i + 1], body[i + 2], body[i + 3]]);
    let body = match kind {
        KIND_FRAME => {
            if body.is_empty() {
                return Err(PacketError::Malformed);
            }
            Body::Frame(body.to_vec())
        }
        KIND_FRAGMENT => {
            if body.len() <= FRAGMENT_HEADER_BYTES {
                return Err(PacketError::Malformed);
            }
            let (index, count) = (u16_at(4), u16_at(6));
            if count < 2 || usize::from(count) > FRAGMENTS_PER_FRAME_MAX || index >= count {
                return Err(PacketError::Malformed);
            }
            Body::Fragment {
                id: u32_at(0),
                index,
                count,
                flags: body[8],
                data: body[FRAGMENT_HEADER_BYTES..].to_vec(),
            }
        }
        KIND_BITMAP => {
            if body.len() <= BITMAP_HEADER_BYTES {
                return Err(PacketError::Malformed);
            }
            let count = u16_at(4);
            let bits = &body[BITMAP_HEADER_BYTES..];
            if count < 2
                || usize::from(count) > FRAGMENTS_PER_FRAME_MAX
                || bits.len() != usize::from(count).div_ceil(8)
            {
                return Err(PacketError::Malformed);
            }
            Body::Bitmap {
                id: u32_at(0),
                count,
                bits: bits.to_vec(),
            }
        }
        k => return Err(PacketError::UnknownKind(k)),
    };
    Ok(Packet { dst, src, body })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples() -> Vec<Packet> {
        vec![
            Packet {
                dst: 2,
                src: 1,
                body: Body::Frame(b"heartbeat".to_vec()),
            },
            Packet {
                dst: 300,
                src: 70_000,
                body: Body::Fragment {
                    id: 0xDEAD_BEEF,
                    index: 3,
                    count: 9,
                    flags: FLAG_LAST_IN_ROUND,
                    data: vec![0, 1, 2, 0],
                },
            },
            Packet {
                dst: BROADCAST,
                src: 3,
                body: Body::Bitmap {
                    id: 7,
                    count: 9,
                    bits: vec![0xFF, 0x01],
                },
            },
        ]
    }

    #[test]
    fn packets_round_trip_and_address_bytes_are_exact() {
        for p in samples() {
            let b = encode(&p);
            assert_eq!(decode(&b, 1_000), Ok(p.clone()));
            let body_start = address_bytes(p.dst, p.src);
            let mut pos = 1;
            get_varint(&b, &mut pos).unwrap();
            get_varint(&b, &mut pos).unwrap();
            assert_eq!(pos, body_start, "{p:?}");
        }
    }

    #[test]
    fn every_bit_flip_and_truncation_is_refused() {
        for p in samples() {
            let b = encode(&p);
            for i in 0..b.len() * 8 {
                let mut c = b.clone();
                c[i / 8] ^= 1 << (i % 8);
                assert!(decode(&c, 1_000).is_err(), "bit {i} of {p:?}");
            }
            for n in 0..b.len() {
                assert!(decode(&b[..n], 1_000).is_err());
            }
            assert_eq!(decode(&b, b.len() - 1), Err(PacketError::TooLarge));
        }
    }

    #[test]
    fn well_checksummed_nonsense_is_refused() {
        let mut bad = vec![KIND_FRAGMENT, 2, 1, 0, 0, 0, 0, 5, 0, 5, 0, 0, 9];
        let crc = crc32fast::hash(&bad);
        bad.extend_from_slice(&crc.to_le_bytes());
        assert_eq!(decode(&bad, 100), Err(PacketError::Malformed)); // index 5 of 5
        let mut unknown = vec![0x7E, 2, 1, 1];
        let crc = crc32fast::hash(&unknown);
        unknown.extend_from_slice(&crc.to_le_bytes());
        assert_eq!(decode(&unknown, 100), Err(PacketError::UnknownKind(0x7E)));
    }
}
