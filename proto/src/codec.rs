//! Binary encoding of Raft and wire types: bincode 2 (serde mode), standard config, with a hard
//! size limit so a corrupt or hostile buffer cannot make the decoder allocate without bound.

pub use bincode::error::{DecodeError, EncodeError};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Largest encoded value accepted: one log entry, one RPC, one snapshot chunk.
/// 16 MiB bounds allocation from a hostile peer while leaving room for a batch of 1,000
/// telemetry inputs or a multi-megabyte snapshot chunk.
pub const MAX_ENCODED_BYTES: usize = 16 * 1024 * 1024;

type Cfg = bincode::config::Configuration<
    bincode::config::LittleEndian,
    bincode::config::Varint,
    bincode::config::Limit<MAX_ENCODED_BYTES>,
>;

const fn config() -> Cfg {
    bincode::config::standard().with_limit::<MAX_ENCODED_BYTES>()
}

/// Largest snapshot file a node builds without complaint or accepts from a leader, bytes. A
/// snapshot is never whole in memory (the node's `storage::snapshot_file`: built, sent,
/// received, checked and installed a chunk and a record at a time, its parts before the outbox
/// decoded under [`SNAPSHOT_PART_BYTES_MAX`]), so this bounds the disk and the transfer, not the
/// memory: the outbox grows ~20 MB a simulated day of the 900-customer calm grid without a
/// central and is folded after 7 days (`state::fold`), so a snapshot stays near 8 days of
/// detail, ~170 MB on that grid (BENCHMARKS.md, "Bounded without the WAN").
pub const SNAPSHOT_BYTES_MAX: usize = 256 * 1024 * 1024;

/// Largest part of a snapshot image decoded into memory (the actor state, the dedupe windows,
/// the timers: everything but the outbox, which is read a record at a time). The actor state is
/// at most 16 MiB by default (`[actors] max_state_bytes`); 48 MiB leaves room for a larger
/// setting while a node (~45 MiB resident, BENCHMARKS.md) decoding one stays under its unit's
/// `MemoryHigh=96M` (`deploy/ghatta.service`).
pub const SNAPSHOT_PART_BYTES_MAX: usize = 48 * 1024 * 1024;

/// Decode a snapshot held whole (a node's snapshot from before snapshot files, read once to
/// move it into one) under [`SNAPSHOT_BYTES_MAX`].
pub fn decode_snapshot<T: DeserializeOwned>(
    bytes: &[u8],
) -> Result<T, bincode::error::DecodeError> {
    decode_with(
        bytes,
        bincode::config::standard().with_limit::<SNAPSHOT_BYTES_MAX>(),
    )
}

/// Encode a value.
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, bincode::error::EncodeError> {
    bincode::serde::encode_to_vec(value, config())
}

/// Append a value's encoding to `out`: the bytes [`encode`] returns, for a value written in
/// parts (`state/snapshot.rs` builds an image from borrowed parts and stored bytes).
pub fn encode_into<T: Serialize>(
    out: &mut Vec<u8>,
    value: &T,
) -> Result<usize, bincode::error::EncodeError> {
    bincode::serde::encode_into_std_write(value, out, config())
}

/// Write a value's encoding to `out` (a snapshot file, written a chunk at a time).
pub fn encode_to_write<T: Serialize>(
    out: &mut impl std::io::Write,
    value: &T,
) -> Result<usize, bincode::error::EncodeError> {
    bincode::serde::encode_into_std_write(value, out, config())
}

/// Decode the next value from `r`, reading only its bytes, under [`SNAPSHOT_PART_BYTES_MAX`]:
/// the parts of a snapshot image, one after another.
pub fn decode_from_read<T: DeserializeOwned>(
    r: &mut impl std::io::Read,
) -> Result<T, bincode::error::DecodeError> {
    bincode::serde::decode_from_std_read(
        r,
        bincode::config::standard().with_limit::<SNAPSHOT_PART_BYTES_MAX>(),
    )
}

/// Decode a value; trailing bytes are an error.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, bincode::error::DecodeError> {
    decode_with(bytes, config())
}

fn decode_with<T: DeserializeOwned, C: bincode::config::Config>(
    bytes: &[u8],
    config: C,
) -> Result<T, bincode::error::DecodeError> {
    let (v, used) = bincode::serde::decode_from_slice(bytes, config)?;
    if used != bytes.len() {
        return Err(bincode::error::DecodeError::OtherString(format!(
            "{} trailing bytes after the value",
            bytes.len() - used
        )));
    }
    Ok(v)
}
