//! COBS (consistent overhead byte stuffing) with a 0x00 delimiter: packet boundaries on a
//! serial byte stream, and the `Deframer` that finds them again after garbage.
//!
//! COBS removes every 0x00 from a packet for at most one byte per 254 (Cheshire and Baker,
//! 1999), so 0x00 can only ever mean "packet ends here". A receiver that joins mid-packet, or
//! that sees line noise, throws away the bytes up to the next 0x00 and is in sync again: no
//! length field that a flipped bit could turn into a megabyte read.

use std::fmt;

/// Why an encoded packet could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CobsError {
    /// Empty input (two delimiters in a row: the idle-line separator, not a packet).
    Empty,
    /// A 0x00 inside the encoded packet (the deframer never passes one; a caller did).
    ZeroInside,
    /// A code byte points past the end: the packet was truncated or corrupted.
    Overrun,
    /// The decoded packet would exceed the caller's limit.
    TooLarge,
}

impl fmt::Display for CobsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CobsError::Empty => "empty packet",
            CobsError::ZeroInside => "0x00 inside a COBS packet",
            CobsError::Overrun => "COBS code byte runs past the packet (truncated or corrupted)",
            CobsError::TooLarge => "COBS packet over the size limit",
        })
    }
}

impl std::error::Error for CobsError {}

/// Bytes `n` payload bytes take once encoded, without the delimiter.
pub fn encoded_len_max(n: usize) -> usize {
    n + n / 254 + 1
}

/// Append the COBS encoding of `data` to `out` (no delimiter).
pub fn encode_into(data: &[u8], out: &mut Vec<u8>) {
    out.reserve(encoded_len_max(data.len()));
    let mut code_at = out.len();
    out.push(0);
    let mut code: u8 = 1;
    for &b in data {
        if b == 0 {
            out[code_at] = code;
            code_at = out.len();
            out.push(0);
            code = 1;
        } else {
            out.push(b);
            code += 1;
            if code == 0xFF {
                out[code_at] = code;
                code_at = out.len();
                out.push(0);
                code = 1;
            }
        }
    }
    out[code_at] = code;
}

/// `data` encoded and framed for the wire: 0x00, COBS bytes, 0x00. The leading delimiter
/// ends any noise the line picked up while idle, so that noise cannot spoil this packet.
pub fn frame(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(encoded_len_max(data.len()) + 2);
    out.push(0);
    encode_into(data, &mut out);
    out.push(0);
    out
}

/// Bytes a packet of `n` bytes occupies on the wire once framed by [`frame`].
pub fn framed_len_max(n: usize) -> usize {
    encoded_len_max(n) + 2
}

/// Decode one COBS packet (without its delimiter) of at most `limit` decoded bytes.
pub fn decode(enc: &[u8], limit: usize) -> Result<Vec<u8>, CobsError> {
    if enc.is_empty() {
        return Err(CobsError::Empty);
    }
    // Decoded output is never longer than the input, so `enc.len()` bounds the allocation,
    // and the caller's limit bounds the input.
    if enc.len() > encoded_len_max(limit) {
        return Err(CobsError::TooLarge);
    }
    let mut out = Vec::with_capacity(enc.len());
    let mut i = 0;
    while i < enc.len() {
        let code = enc[i];
        if code == 0 {
            return Err(CobsError::ZeroInside);
        }
        let end = i + usize::from(code);
        if end > enc.len() {
            return Err(CobsError::Overrun);
        }
        let run = &enc[i + 1..end];
        if run.contains(&0) {
            return Err(CobsError::ZeroInside);
        }
        out.extend_from_slice(run);
        i = end;
        // A code below 0xFF stands for "a zero follows", except after the last run.
        if code < 0xFF && i < enc.len() {
            out.push(0);
        }
    }
    if out.len() > limit {
        return Err(CobsError::TooLarge);
    }
    Ok(out)
}

/// What the deframer found in the byte stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Deframed {
    /// A decoded packet (not yet CRC-checked: that is the packet layer's job).
    Packet(Vec<u8>),
    /// Bytes between two delimiters that are not a COBS packet.
    Invalid(CobsError),
    /// More than the limit arrived without a delimiter: discarded up to the next 0x00.
    Oversize,
}

/// Splits a serial byte stream at 0x00 delimiters and decodes each packet, holding at most
/// one encoded packet of `limit` decoded bytes in memory.
#[derive(Debug)]
pub struct Deframer {
    buf: Vec<u8>,
    limit: usize,
    /// Skipping an oversize run until the next delimiter.
    skipping: bool,
}

impl Deframer {
    /// A deframer for packets of at most `limit` decoded bytes.
    pub fn new(limit: usize) -> Self {
        Deframer {
            buf: Vec::with_capacity(encoded_len_max(limit)),
            limit,
            skipping: false,
        }
    }

    /// Feed received bytes; `sink` gets every packet (or problem) they complete, in order.
    pub fn push(&mut self, bytes: &[u8], mut sink: impl FnMut(Deframed)) {
        for &b in bytes {
            if b == 0 {
                if self.skipping {
                    self.skipping = false;
                } else if !self.buf.is_empty() {
                    sink(match decode(&self.buf, self.limit) {
                        Ok(p) => Deframed::Packet(p),
                        Err(e) => Deframed::Invalid(e),
                    });
                }
                self.buf.clear();
                continue;
            }
            if self.skipping {
                continue;
            }
            if self.buf.len() >= encoded_len_max(self.limit) {
                self.buf.clear();
                self.skipping = true;
                sink(Deframed::Oversize);
                continue;
            }
            self.buf.push(b);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(data: &[u8]) {
        let mut enc = Vec::new();
        encode_into(data, &mut enc);
        assert!(!enc.contains(&0), "{data:?} encoded with a zero: {enc:?}");
        assert!(enc.len() <= encoded_len_max(data.len()));
        assert_eq!(decode(&enc, data.len()).as_deref(), Ok(data));
    }

    #[test]
    fn round_trips_edge_cases() {
        round_trip(&[]);
        round_trip(&[0]);
        round_trip(&[0, 0]);
        round_trip(&[1, 2, 3]);
        round_trip(&[1, 0, 2, 0]);
        // Runs at the 254-byte code boundary and around it.
        for n in [253, 254, 255, 508, 509, 600] {
            let v: Vec<u8> = (0..n).map(|i| (i % 255 + 1) as u8).collect();
            round_trip(&v);
            let mut z = v.clone();
            z.push(0);
            round_trip(&z);
        }
        // Known vector from the COBS paper / Wikipedia.
        let mut enc = Vec::new();
        encode_into(&[0x11, 0x22, 0x00, 0x33], &mut enc);
        assert_eq!(enc, vec![0x03, 0x11, 0x22, 0x02, 0x33]);
    }

    #[test]
    fn decode_refuses_malformed_input() {
        assert_eq!(decode(&[], 10), Err(CobsError::Empty));
        assert_eq!(decode(&[5, 1, 2], 10), Err(CobsError::Overrun));
        assert_eq!(decode(&[3, 1, 0], 10), Err(CobsError::ZeroInside));
        assert_eq!(decode(&[0xFF; 300], 10), Err(CobsError::TooLarge));
    }

    #[test]
    fn the_deframer_resyncs_after_garbage_and_bounds_memory() {
        let a = frame(b"first packet");
        let b = frame(&[0, 1, 0, 2]);
        let mut stream = Vec::new();
        stream.extend_from_slice(&[0x41, 0x42, 0xFF]); // noise while idle
        stream.extend_from_slice(&a);
        stream.extend_from_slice(&[0x13; 100]); // a long burst of noise, then a delimiter
        stream.push(0);
        stream.extend_from_slice(&b);
        let mut d = Deframer::new(32);
        let mut got = Vec::new();
        // Byte by byte: the deframer must not depend on read boundaries.
        for byte in &stream {
            d.push(std::slice::from_ref(byte), |x| got.push(x));
        }
        let packets: Vec<_> = got
            .iter()
            .filter_map(|x| match x {
                Deframed::Packet(p) => Some(p.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(packets, vec![b"first packet".to_vec(), vec![0, 1, 0, 2]]);
        assert!(got.contains(&Deframed::Oversize), "{got:?}");
        assert!(d.buf.capacity() <= encoded_len_max(32) + 8);
    }
}
