//! A value kept with its codec encoding, encoded again only after it was borrowed mutably.
//!
//! The state machine stores its scalars after every applied batch, and two of their maps hold
//! an entry per customer (the outbox pins and the open hour of billed energy); most batches
//! change neither, and encoding them was ~15 % of a simulated grid's CPU. Reads go through
//! `Deref`; every `&mut` borrow (`DerefMut`) drops the cached bytes, so a change cannot be
//! missed. Serde sees the bare value: the encoding on disk and in snapshots is unchanged.
//!
//! Most batches do change them (a ledger line moves a pin and bills energy), so the encoding
//! itself is written by hand ([`Encode`]): bincode's standard configuration through serde
//! spent ~13 ns an entry, an entry per customer each; the tests hold the bytes to
//! `codec::encode`'s.

use std::cell::OnceCell;
use std::collections::BTreeMap;
use std::ops::{Deref, DerefMut};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// `T` with its `codec::encode` bytes cached (see the module docs).
#[derive(Default)]
pub(crate) struct Cached<T> {
    value: T,
    bytes: OnceCell<Vec<u8>>,
}

/// A value that writes the bytes `codec::encode` gives it, without serde.
pub(crate) trait Encode {
    /// Appends `codec::encode(self)` to `out`.
    fn encode_to(&self, out: &mut Vec<u8>);
}

/// Appends bincode's varint (its standard configuration) of `v`: one byte below 251, else a
/// marker (251, 252, 253 for 2, 4, 8 bytes) and the little-endian value.
pub(crate) fn varint(out: &mut Vec<u8>, v: u64) {
    if v < 251 {
        out.push(v as u8);
    } else if let Ok(v) = u16::try_from(v) {
        out.push(251);
        out.extend_from_slice(&v.to_le_bytes());
    } else if let Ok(v) = u32::try_from(v) {
        out.push(252);
        out.extend_from_slice(&v.to_le_bytes());
    } else {
        out.push(253);
        out.extend_from_slice(&v.to_le_bytes());
    }
}

/// A map's length then its entries, as serde's `collect_map` through bincode writes them.
pub(crate) fn encode_map<K, V>(
    out: &mut Vec<u8>,
    map: &BTreeMap<K, V>,
    mut entry: impl FnMut(&mut Vec<u8>, &K, &V),
) {
    varint(out, map.len() as u64);
    for (k, v) in map {
        entry(out, k, v);
    }
}

impl Encode for BTreeMap<u32, u64> {
    fn encode_to(&self, out: &mut Vec<u8>) {
        out.reserve(self.len() * 4 + 9);
        encode_map(out, self, |out, k, v| {
            varint(out, u64::from(*k));
            varint(out, *v);
        });
    }
}

impl<T: Encode> Cached<T> {
    /// `codec::encode(&**self)`, computed at most once per change.
    pub(crate) fn encoded(&self) -> &[u8] {
        self.bytes.get_or_init(|| {
            let mut b = Vec::new();
            self.value.encode_to(&mut b);
            b
        })
    }
}

impl<T> From<T> for Cached<T> {
    fn from(value: T) -> Self {
        Cached {
            value,
            bytes: OnceCell::new(),
        }
    }
}

impl<T> Deref for Cached<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.value
    }
}

impl<T> DerefMut for Cached<T> {
    fn deref_mut(&mut self) -> &mut T {
        self.bytes.take();
        &mut self.value
    }
}

impl<T: Clone> Clone for Cached<T> {
    fn clone(&self) -> Self {
        Cached {
            value: self.value.clone(),
            bytes: self.bytes.clone(),
        }
    }
}

impl<T: PartialEq> PartialEq for Cached<T> {
    fn eq(&self, other: &Self) -> bool {
        self.value == other.value
    }
}

impl<T: Eq> Eq for Cached<T> {}

impl<T: std::fmt::Debug> std::fmt::Debug for Cached<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.value.fmt(f)
    }
}

impl<T: Serialize> Serialize for Cached<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.value.serialize(s)
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Cached<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        T::deserialize(d).map(Cached::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::codec;

    /// Values on both sides of every varint width.
    pub(crate) const EDGES: [u64; 12] = [
        0,
        1,
        250,
        251,
        252,
        65_535,
        65_536,
        u32::MAX as u64 - 1,
        u32::MAX as u64,
        u32::MAX as u64 + 1,
        u64::MAX - 1,
        u64::MAX,
    ];

    #[test]
    fn the_hand_written_encoding_is_bincodes() {
        for v in EDGES {
            let mut out = Vec::new();
            varint(&mut out, v);
            assert_eq!(out, codec::encode(&v).unwrap(), "{v}");
        }
        let mut m = BTreeMap::new();
        for (i, k) in EDGES.iter().enumerate() {
            let k = *k as u32;
            m.insert(k, EDGES[EDGES.len() - 1 - i]);
            let mut out = Vec::new();
            m.encode_to(&mut out);
            assert_eq!(out, codec::encode(&m).unwrap(), "{} entries", m.len());
        }
        // Every kind of pin, with every width of its fields.
        use crate::state::prune::Pin;
        let mut pins = BTreeMap::new();
        for (i, v) in EDGES.iter().enumerate() {
            let w = EDGES[EDGES.len() - 1 - i];
            pins.insert(Pin::Relay(*v, (i * 23) as u8, w as u32), w);
            pins.insert(Pin::Setpoint(w), *v);
            pins.insert(Pin::Ledger(*v as u32), w);
        }
        let mut out = Vec::new();
        pins.encode_to(&mut out);
        assert_eq!(out, codec::encode(&pins).unwrap());
        // A map past 250 entries (its length takes three bytes).
        let big: BTreeMap<u32, u64> = (0..70_000u32)
            .map(|k| (k * 7, u64::from(k) << 20))
            .collect();
        let mut out = Vec::new();
        big.encode_to(&mut out);
        assert_eq!(out, codec::encode(&big).unwrap());
    }

    #[test]
    fn a_mutable_borrow_drops_the_cached_bytes_and_serde_sees_the_bare_value() {
        let mut m: Cached<BTreeMap<u32, u64>> = BTreeMap::from([(1, 10), (2, 20)]).into();
        let first = m.encoded().to_vec();
        assert_eq!(first, codec::encode(&*m).unwrap());
        // The cached value's own encoding is the bare map's.
        assert_eq!(codec::encode(&m).unwrap(), first);
        m.insert(3, 30);
        let second = m.encoded().to_vec();
        assert_ne!(second, first);
        assert_eq!(second, codec::encode(&*m).unwrap());
        std::mem::take(&mut *m);
        assert_eq!(
            m.encoded(),
            codec::encode(&BTreeMap::<u32, u64>::new()).unwrap()
        );
        let back: Cached<BTreeMap<u32, u64>> = codec::decode(&second).unwrap();
        assert_eq!(back.len(), 3);
        assert_eq!(back.encoded(), second.as_slice());
    }
}
