//! A map that remembers which keys changed since it was last stored, so an applied batch
//! writes only those rows.
//!
//! Two maps of the state machine hold an entry per customer (the outbox pins and the open
//! hour of billed energy) and live in redb tables of their own, a row per entry
//! (`layout.rs`); a batch changes a few entries of thousands, and rewriting them all (one
//! encoded value of tens of KB per batch, on every replica) was ~5 % of a simulated grid's
//! CPU. Reads go through `Deref`; there is no `DerefMut`: every mutation is a method that
//! records its key, so a change cannot be missed. Serde sees the bare map, so the snapshot
//! image is unchanged.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Deref;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A `BTreeMap` with the keys changed since the last [`Tracked::take_changes`].
#[derive(Clone)]
pub(crate) struct Tracked<K, V> {
    map: BTreeMap<K, V>,
    changed: BTreeSet<K>,
}

impl<K: Ord + Clone, V> Tracked<K, V> {
    /// Inserts `value` at `key`, returning the value it replaced.
    pub(crate) fn insert(&mut self, key: K, value: V) -> Option<V> {
        self.changed.insert(key.clone());
        self.map.insert(key, value)
    }

    /// The value at `key`, inserted as `V::default()` when absent, to change in place.
    pub(crate) fn entry_or_default(&mut self, key: K) -> &mut V
    where
        V: Default,
    {
        self.changed.insert(key.clone());
        self.map.entry(key).or_default()
    }

    /// Removes every entry and returns them.
    pub(crate) fn take(&mut self) -> BTreeMap<K, V> {
        self.changed.extend(self.map.keys().cloned());
        std::mem::take(&mut self.map)
    }

    /// The keys changed since the last call, each with its value now (`None`: removed), in
    /// key order; forgets them.
    pub(crate) fn take_changes(&mut self) -> impl Iterator<Item = (K, Option<&V>)> {
        let changed = std::mem::take(&mut self.changed);
        let map = &self.map;
        changed.into_iter().map(move |k| {
            let v = map.get(&k);
            (k, v)
        })
    }
}

impl<K, V> Default for Tracked<K, V> {
    fn default() -> Self {
        Tracked {
            map: BTreeMap::new(),
            changed: BTreeSet::new(),
        }
    }
}

/// A map as it is stored: nothing changed yet.
impl<K, V> From<BTreeMap<K, V>> for Tracked<K, V> {
    fn from(map: BTreeMap<K, V>) -> Self {
        Tracked {
            map,
            changed: BTreeSet::new(),
        }
    }
}

impl<K, V> Deref for Tracked<K, V> {
    type Target = BTreeMap<K, V>;
    fn deref(&self) -> &BTreeMap<K, V> {
        &self.map
    }
}

impl<K: PartialEq, V: PartialEq> PartialEq for Tracked<K, V> {
    fn eq(&self, other: &Self) -> bool {
        self.map == other.map
    }
}

impl<K: Eq, V: Eq> Eq for Tracked<K, V> {}

impl<K: std::fmt::Debug, V: std::fmt::Debug> std::fmt::Debug for Tracked<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.map.fmt(f)
    }
}

impl<K: Serialize, V: Serialize> Serialize for Tracked<K, V> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.map.serialize(s)
    }
}

impl<'de, K: Deserialize<'de> + Ord, V: Deserialize<'de>> Deserialize<'de> for Tracked<K, V> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        BTreeMap::deserialize(d).map(Tracked::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ghatta_proto::codec;

    fn changes(m: &mut Tracked<u32, u64>) -> Vec<(u32, Option<u64>)> {
        m.take_changes().map(|(k, v)| (k, v.copied())).collect()
    }

    #[test]
    fn every_mutation_records_its_key_and_serde_sees_the_bare_map() {
        let mut m: Tracked<u32, u64> = BTreeMap::from([(1, 10), (2, 20)]).into();
        assert!(changes(&mut m).is_empty(), "a stored map starts clean");
        m.insert(3, 30);
        *m.entry_or_default(1) += 1;
        *m.entry_or_default(7) += 5;
        assert_eq!(
            changes(&mut m),
            vec![(1, Some(11)), (3, Some(30)), (7, Some(5))]
        );
        assert!(changes(&mut m).is_empty(), "taken changes are forgotten");
        let all = m.take();
        assert_eq!(all.len(), 4);
        assert_eq!(
            changes(&mut m),
            vec![(1, None), (2, None), (3, None), (7, None)]
        );
        // Changed, then removed: reported once, as removed.
        m.insert(9, 1);
        m.take();
        assert_eq!(changes(&mut m), vec![(9, None)]);
        let bare = BTreeMap::from([(5u32, 50u64)]);
        let t: Tracked<u32, u64> = bare.clone().into();
        assert_eq!(codec::encode(&t).unwrap(), codec::encode(&bare).unwrap());
        let mut back: Tracked<u32, u64> = codec::decode(&codec::encode(&bare).unwrap()).unwrap();
        assert_eq!(*back, bare);
        assert!(changes(&mut back).is_empty());
    }
}
