//! The one binary encoding used across the actor ABI and in actor state: bincode 2, standard
//! (varint) configuration, with a hard size limit so a hostile or corrupt buffer can never make
//! the decoder allocate more than [`MAX_MESSAGE_BYTES`].

use alloc::vec::Vec;

/// Largest encoded message or state value either side accepts (64 KiB). A delivery carries one
/// telemetry report or one operator command; the biggest (a tariff table or a balancing config)
/// is a few KiB.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;

type Cfg = bincode::config::Configuration<
    bincode::config::LittleEndian,
    bincode::config::Varint,
    bincode::config::Limit<MAX_MESSAGE_BYTES>,
>;

const fn config() -> Cfg {
    bincode::config::standard().with_limit::<MAX_MESSAGE_BYTES>()
}

/// Encode a value. Encoding into a `Vec` cannot fail for our types except by exceeding the limit,
/// which is a programming error on the encoding side, so it returns an empty vector in that case
/// (the decoder then refuses it).
pub fn encode<T: bincode::Encode>(value: &T) -> Vec<u8> {
    bincode::encode_to_vec(value, config()).unwrap_or_default()
}

/// Decode a value, refusing trailing bytes and anything over [`MAX_MESSAGE_BYTES`].
pub fn decode<T: bincode::Decode<()>>(bytes: &[u8]) -> Option<T> {
    if bytes.len() > MAX_MESSAGE_BYTES {
        return None;
    }
    match bincode::decode_from_slice::<T, _>(bytes, config()) {
        Ok((v, used)) if used == bytes.len() => Some(v),
        _ => None,
    }
}
