//! A value kept with its codec encoding, encoded again only after it was borrowed mutably.
//!
//! The state machine stores its scalars after every applied batch, and two of their maps hold
//! an entry per customer (the outbox pins and the open hour of billed energy); most batches
//! change neither, and encoding them was ~15 % of a simulated grid's CPU. Reads go through
//! `Deref`; every `&mut` borrow (`DerefMut`) drops the cached bytes, so a change cannot be
//! missed. Serde sees the bare value: the encoding on disk and in snapshots is unchanged.

use std::cell::OnceCell;
use std::ops::{Deref, DerefMut};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::raft::codec;

/// `T` with its `codec::encode` bytes cached (see the module docs).
#[derive(Default)]
pub(crate) struct Cached<T> {
    value: T,
    bytes: OnceCell<Vec<u8>>,
}

impl<T: Serialize> Cached<T> {
    /// `codec::encode(&**self)`, computed at most once per change.
    pub(crate) fn encoded(&self) -> Result<&[u8], bincode::error::EncodeError> {
        if let Some(b) = self.bytes.get() {
            return Ok(b);
        }
        let b = codec::encode(&self.value)?;
        Ok(self.bytes.get_or_init(|| b))
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
    use std::collections::BTreeMap;

    use super::*;

    #[test]
    fn a_mutable_borrow_drops_the_cached_bytes_and_serde_sees_the_bare_value() {
        let mut m: Cached<BTreeMap<u32, u64>> = BTreeMap::from([(1, 10), (2, 20)]).into();
        let first = m.encoded().unwrap().to_vec();
        assert_eq!(first, codec::encode(&*m).unwrap());
        // The cached value's own encoding is the bare map's.
        assert_eq!(codec::encode(&m).unwrap(), first);
        m.insert(3, 30);
        let second = m.encoded().unwrap().to_vec();
        assert_ne!(second, first);
        assert_eq!(second, codec::encode(&*m).unwrap());
        std::mem::take(&mut *m);
        assert_eq!(
            m.encoded().unwrap(),
            codec::encode(&BTreeMap::<u32, u64>::new()).unwrap()
        );
        let back: Cached<BTreeMap<u32, u64>> = codec::decode(&second).unwrap();
        assert_eq!(back.len(), 3);
        assert_eq!(back.encoded().unwrap(), second.as_slice());
    }
}
