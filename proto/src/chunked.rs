//! HTTP/1.1 chunked transfer coding (RFC 9112, section 7.1), decoded from a body read whole:
//! what the board's admin client and the tests that read the central's streamed routes get
//! back from a plain HTTP/1.1 request. Never panics and never allocates more than
//! [`CHUNKED_BODY_BYTES_MAX`]: the body comes from a socket, and a peer (or a stream the
//! server aborted) may send anything.

/// Most bytes of data a chunked body may decode to, 64 MiB. The admin client reads at most
/// 4 MiB of answer (`ghatta::admin::client::MAX_RESPONSE_BYTES`), and a streamed route of the
/// central sends a range of rows a reader holds in memory (a customer's year of ledger is a
/// few MB of JSON); a body announcing more is a broken or hostile peer, refused before its
/// data is copied.
pub const CHUNKED_BODY_BYTES_MAX: usize = 64 * 1024 * 1024;

/// Hex digits of a chunk size: 16 make 2^64 - 1 bytes, far above [`CHUNKED_BODY_BYTES_MAX`];
/// a longer size line is refused before it is parsed.
const CHUNK_SIZE_DIGITS_MAX: usize = 16;

/// Why a chunked body did not decode; `at` is a byte offset into the body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChunkedError {
    /// A chunk size line that is not hexadecimal.
    #[error(
        "chunked HTTP body: the chunk size at byte {at} is `{line}`, not a hexadecimal number; the server sent a malformed answer (or it is not chunked): retry, and report it if it repeats"
    )]
    BadSize {
        /// Where the size line starts.
        at: usize,
        /// The line (at most its first 32 characters).
        line: String,
    },
    /// A chunk's data not followed by CRLF.
    #[error(
        "chunked HTTP body: the chunk of {size} bytes at byte {at} does not end with CRLF; the server sent a malformed answer: retry, and report it if it repeats"
    )]
    MissingCrlf {
        /// Where the chunk's data starts.
        at: usize,
        /// The chunk's announced size, bytes.
        size: usize,
    },
    /// More data than [`CHUNKED_BODY_BYTES_MAX`].
    #[error(
        "chunked HTTP body: {bytes} bytes of data announced by byte {at}, more than the {max} a reader here holds; ask for a narrower range or a `limit`"
    )]
    TooLarge {
        /// Where the chunk that went over starts.
        at: usize,
        /// Data so far with that chunk, bytes.
        bytes: usize,
        /// The limit, bytes.
        max: usize,
    },
    /// The body ended before its last (zero-size) chunk.
    #[error(
        "chunked HTTP body: cut short at byte {at}, before its last chunk (the server aborted the stream, or the connection broke); retry"
    )]
    Truncated {
        /// Where it ended.
        at: usize,
    },
}

/// The data of a whole chunked body (`body`: what follows the header's blank line), its
/// chunks joined. Chunk extensions (`;name=value`) are skipped and trailer fields after the
/// last chunk ignored.
pub fn decode(body: &[u8]) -> Result<Vec<u8>, ChunkedError> {
    decode_max(body, CHUNKED_BODY_BYTES_MAX)
}

/// [`decode`] as text: the readers print it or parse it as JSON, so bytes that are not UTF-8
/// show as U+FFFD rather than fail the whole body.
pub fn decode_text(body: &[u8]) -> Result<String, ChunkedError> {
    decode(body).map(|data| String::from_utf8_lossy(&data).into_owned())
}

/// [`decode`] with a smaller limit, bytes (the tests' way to reach it without 64 MiB).
pub fn decode_max(body: &[u8], max_bytes: usize) -> Result<Vec<u8>, ChunkedError> {
    let mut out = Vec::new();
    let mut at = 0;
    loop {
        let rest = &body[at..];
        let Some(eol) = rest.windows(2).position(|w| w == b"\r\n") else {
            return Err(ChunkedError::Truncated { at: body.len() });
        };
        let line = &rest[..eol];
        let size = parse_size(line).ok_or_else(|| ChunkedError::BadSize {
            at,
            line: String::from_utf8_lossy(&line[..line.len().min(32)]).into_owned(),
        })?;
        let data_at = at + eol + 2;
        if size == 0 {
            return Ok(out);
        }
        let bytes = out.len().saturating_add(size);
        if bytes > max_bytes {
            return Err(ChunkedError::TooLarge {
                at,
                bytes,
                max: max_bytes,
            });
        }
        let Some(data) = body.get(data_at..data_at + size) else {
            return Err(ChunkedError::Truncated { at: body.len() });
        };
        out.extend_from_slice(data);
        let end = data_at + size;
        match body.get(end..end + 2) {
            Some(b"\r\n") => at = end + 2,
            // The body ends inside the CRLF, or right after the data.
            None if b"\r\n".starts_with(&body[end..]) => {
                return Err(ChunkedError::Truncated { at: body.len() });
            }
            _ => return Err(ChunkedError::MissingCrlf { at: data_at, size }),
        }
    }
}

/// A size line's chunk size: hex digits, then optional whitespace and extensions.
fn parse_size(line: &[u8]) -> Option<usize> {
    let digits = line
        .split(|&b| b == b';')
        .next()
        .unwrap_or_default()
        .trim_ascii();
    if digits.is_empty() || digits.len() > CHUNK_SIZE_DIGITS_MAX {
        return None;
    }
    let text = std::str::from_utf8(digits).ok()?;
    if !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None; // from_str_radix would take a leading `+`.
    }
    u64::from_str_radix(text, 16)
        .ok()
        .and_then(|n| usize::try_from(n).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_body_in_chunks_decodes_to_its_data() {
        let body = b"5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\nTrailer: x\r\n\r\n";
        assert_eq!(decode(body).expect("decodes"), b"hello, world");
        assert_eq!(decode(b"0\r\n\r\n").expect("empty"), b"");
        // Upper-case hex, and data that is not UTF-8 split across chunks.
        let body = b"A\r\n0123456789\r\n1\r\n\xc3\r\n1\r\n\xa9\r\n0\r\n\r\n";
        assert_eq!(decode(body).expect("decodes"), b"0123456789\xc3\xa9");
        assert_eq!(decode_text(body).expect("text"), "0123456789\u{e9}");
        assert_eq!(
            decode_text(b"1\r\n\xff\r\n0\r\n\r\n").expect("lossy"),
            "\u{fffd}"
        );
    }

    #[test]
    fn a_size_that_is_not_hex_is_refused() {
        for body in [
            &b"zz\r\nhello\r\n0\r\n\r\n"[..],
            b"\r\nhello\r\n0\r\n\r\n",
            b"+5\r\nhello\r\n0\r\n\r\n",
            b"-1\r\nx\r\n0\r\n\r\n",
            b"5\r\nhello\r\nnope\r\n",
            b"11111111111111111\r\nx\r\n",
        ] {
            assert!(
                matches!(decode(body), Err(ChunkedError::BadSize { .. })),
                "{:?}: {:?}",
                String::from_utf8_lossy(body),
                decode(body)
            );
        }
        let err = decode(b"5\r\nhello\r\nnope\r\n").expect_err("bad size");
        assert_eq!(
            err,
            ChunkedError::BadSize {
                at: 10,
                line: "nope".into()
            }
        );
        assert!(
            err.to_string().contains("not a hexadecimal number"),
            "{err}"
        );
    }

    #[test]
    fn a_chunk_without_its_crlf_is_refused() {
        // One byte more data than announced, and a chunk followed by something else.
        assert_eq!(
            decode(b"4\r\nhello\r\n0\r\n\r\n"),
            Err(ChunkedError::MissingCrlf { at: 3, size: 4 })
        );
        assert_eq!(
            decode(b"5\r\nhelloXY0\r\n\r\n"),
            Err(ChunkedError::MissingCrlf { at: 3, size: 5 })
        );
        assert_eq!(
            decode(b"5\r\nhelloX"),
            Err(ChunkedError::MissingCrlf { at: 3, size: 5 })
        );
    }

    #[test]
    fn a_body_over_the_limit_is_refused_before_its_data_is_copied() {
        assert_eq!(
            decode_max(b"4\r\nabcd\r\n4\r\nefgh\r\n0\r\n\r\n", 6),
            Err(ChunkedError::TooLarge {
                at: 9,
                bytes: 8,
                max: 6
            })
        );
        // An announced size far beyond the limit, with no data behind it.
        let err = decode(b"ffffffffffff\r\n").expect_err("too large");
        assert!(matches!(err, ChunkedError::TooLarge { max, .. } if max == CHUNKED_BODY_BYTES_MAX));
        assert!(err.to_string().contains("narrower range"), "{err}");
        assert_eq!(
            decode_max(b"4\r\nabcd\r\n0\r\n\r\n", 4).expect("at the limit"),
            b"abcd"
        );
    }

    #[test]
    fn a_body_cut_short_is_refused() {
        for body in [
            &b""[..],
            b"5",
            b"5\r\nhel",
            b"5\r\nhello",
            b"5\r\nhello\r",
            b"5\r\nhello\r\n",
            b"5\r\nhello\r\n0",
        ] {
            assert_eq!(
                decode(body),
                Err(ChunkedError::Truncated { at: body.len() }),
                "{:?}",
                String::from_utf8_lossy(body)
            );
        }
    }
}
