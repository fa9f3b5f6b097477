//! Snapshots: the whole state machine as one image, built, stored (fsynced) and installed.

use std::io;

use redb::{Database, Durability, ReadableDatabase, ReadableTable};
use serde::{Deserialize, Serialize};

use super::{DedupeWindow, OutboxRecord, Scalars, SmData, TimerRecord, meta_keys};
use crate::actors::ActorState;
use crate::raft::{Snapshot, SnapshotMeta};
use crate::storage::{ACTOR_STATE, DEDUPE, OUTBOX, SM_META, STATE_DB, StoreError, TIMERS};
use ghatta_proto::codec;

/// Everything a replica needs to continue from a snapshot.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SnapshotImage {
    scalars: Scalars,
    customers: Vec<(u32, bool)>,
    actor_state: Vec<(Vec<u8>, Vec<u8>)>,
    dedupe: Vec<(u64, DedupeWindow)>,
    timers: Vec<(u64, TimerRecord)>,
    outbox: Vec<(u64, OutboxRecord)>,
}

/// The stored current snapshot: metadata and data.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta,
    data: Vec<u8>,
}

/// Build a snapshot of `data` (the state as applied) and store it durably.
///
/// The bytes are `codec::encode` of a [`SnapshotImage`], but written without building one:
/// the in-memory maps are encoded borrowed, and the outbox (the one part that grows with
/// the log when no central acknowledges it: a day of a 1,500-customer grid is ~150,000
/// records) is copied as the bincode its table already stores, instead of decoding every
/// record and encoding it again. bincode is context-free (a struct is its fields in order, a
/// sequence its u64 length then its items), so the bytes are the same; a test holds them
/// to a decode-and-encode round trip. Like `codec::encode` (bincode checks its limit only
/// when decoding), this does not refuse an image over `codec::MAX_ENCODED_BYTES`.
pub(crate) fn build(db: &Database, data: &SmData, seq: u64) -> io::Result<Snapshot> {
    let mut outbox = Vec::new();
    let mut records = 0u64;
    {
        let txn = db.begin_read().map_err(STATE_DB.begin("read"))?;
        let table = txn.open_table(OUTBOX).map_err(STATE_DB.table())?;
        for item in table.iter().map_err(STATE_DB.read())? {
            let (k, v) = item.map_err(STATE_DB.read())?;
            append(&mut outbox, &k.value())?;
            outbox.extend_from_slice(v.value());
            records += 1;
        }
    }
    let head = ImageHead {
        scalars: super::apply::scalars_ref(data),
        customers: Pairs(&data.customers),
        actor_state: Pairs(&data.actor_state.map),
        dedupe: Pairs(&data.dedupe),
        timers: Pairs(&data.timers),
    };
    let mut bytes = codec::encode(&head).map_err(STATE_DB.encode("state value"))?;
    append(&mut bytes, &records)?;
    bytes.extend_from_slice(&outbox);
    drop(outbox);
    // Refusing to build would stop the Raft core; an image past the decode limit would stop
    // the next start instead. Say it loudly while there is time to act.
    if bytes.len() > codec::SNAPSHOT_BYTES_MAX / 2 {
        tracing::error!(
            bytes = bytes.len(),
            limit = codec::SNAPSHOT_BYTES_MAX,
            outbox_records = records,
            "the state machine snapshot is over half the largest a node can read back (most of \
             it is outbox records no central has acknowledged): restore the [wan] link so the \
             central acknowledges and the outbox is pruned"
        );
    }
    let _ = seq;
    let meta = SnapshotMeta {
        last_log_id: data.last_applied,
        last_membership: data.membership.clone(),
    };
    store(db, &meta, &bytes)?;
    Ok(Snapshot {
        meta,
        snapshot: bytes,
    })
}

/// The fields of [`SnapshotImage`] before its outbox, borrowed: encodes to the image's
/// leading bytes.
#[derive(Serialize)]
struct ImageHead<'a> {
    scalars: super::ScalarsRef<'a>,
    customers: Pairs<'a, u32, bool>,
    actor_state: Pairs<'a, Vec<u8>, Vec<u8>>,
    dedupe: Pairs<'a, u64, DedupeWindow>,
    timers: Pairs<'a, u64, TimerRecord>,
}

/// A map encoded as the `Vec<(K, V)>` of its entries in key order.
struct Pairs<'a, K, V>(&'a std::collections::BTreeMap<K, V>);

impl<K: Serialize, V: Serialize> Serialize for Pairs<'_, K, V> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter())
    }
}

/// Appends `value`'s encoding (the codec's configuration) to `out`.
fn append<T: Serialize>(out: &mut Vec<u8>, value: &T) -> Result<(), StoreError> {
    codec::encode_into(out, value)
        .map(drop)
        .map_err(STATE_DB.encode("snapshot image"))
}

/// Store a snapshot with an fsync. Because redb commits are ordered, this also makes every
/// earlier (unsynced) state-machine commit durable, so the durable applied index is never
/// below a snapshot that lets openraft purge the log.
///
/// The stored value is `codec::encode` of a [`StoredSnapshot`], written as its metadata, the
/// data's length and the data, without copying the data into a `StoredSnapshot` first and
/// encoding it a byte at a time.
fn store(db: &Database, meta: &SnapshotMeta, data: &[u8]) -> Result<(), StoreError> {
    let mut stored = codec::encode(meta).map_err(STATE_DB.encode("state value"))?;
    append(&mut stored, &(data.len() as u64))?;
    stored.extend_from_slice(data);
    let mut txn = db.begin_write().map_err(STATE_DB.begin("write"))?;
    txn.set_durability(Durability::Immediate)
        .map_err(STATE_DB.write())?;
    {
        let mut t = txn.open_table(SM_META).map_err(STATE_DB.table())?;
        t.insert(meta_keys::SNAPSHOT, stored.as_slice())
            .map_err(STATE_DB.write())?;
    }
    txn.commit().map_err(STATE_DB.commit())
}

/// The current snapshot, if one was built or installed.
pub(crate) fn current(db: &Database) -> io::Result<Option<Snapshot>> {
    let txn = db.begin_read().map_err(STATE_DB.begin("read"))?;
    let t = txn.open_table(SM_META).map_err(STATE_DB.table())?;
    let Some(v) = t.get(meta_keys::SNAPSHOT).map_err(STATE_DB.read())? else {
        return Ok(None);
    };
    let s: StoredSnapshot =
        codec::decode_snapshot(v.value()).map_err(STATE_DB.corrupt("sm_meta.snapshot"))?;
    Ok(Some(Snapshot {
        meta: s.meta,
        snapshot: s.data,
    }))
}

/// Whether `bytes` is an image of the state at `meta.last_log_id`: it decodes within the
/// codec's limit and names that index as its last applied. Checked before openraft installs
/// a received snapshot, because a failed install stops the node (a storage error is fatal to
/// openraft) where a refused chunk only makes the leader send it again. Costs a decoded copy
/// of the image for as long as the check runs.
pub fn check_image(meta: &SnapshotMeta, bytes: &[u8]) -> Result<(), String> {
    let image: SnapshotImage =
        codec::decode_snapshot(bytes).map_err(|e| format!("the image does not decode: {e}"))?;
    if image.scalars.last_applied != meta.last_log_id {
        return Err(format!(
            "the image is of the state at {:?}, its metadata says {:?}",
            image.scalars.last_applied, meta.last_log_id
        ));
    }
    Ok(())
}

/// Replace the whole state machine with a snapshot received from the leader.
pub(crate) fn install(
    db: &Database,
    data: &mut SmData,
    meta: &SnapshotMeta,
    bytes: &[u8],
) -> io::Result<()> {
    let mut image: SnapshotImage = codec::decode_snapshot(bytes).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("snapshot up to {:?} does not decode: {e}", meta.last_log_id),
        )
    })?;
    let stored = codec::encode(&StoredSnapshot {
        meta: meta.clone(),
        data: bytes.to_vec(),
    })
    .map_err(STATE_DB.encode("state value"))?;
    let mut txn = db.begin_write().map_err(STATE_DB.begin("write"))?;
    txn.set_durability(Durability::Immediate)
        .map_err(STATE_DB.write())?;
    {
        let mut t = txn.open_table(ACTOR_STATE).map_err(STATE_DB.table())?;
        t.retain(|_, _| false).map_err(STATE_DB.write())?;
        for (k, v) in &image.actor_state {
            t.insert(k.as_slice(), v.as_slice())
                .map_err(STATE_DB.write())?;
        }
        let mut t = txn.open_table(DEDUPE).map_err(STATE_DB.table())?;
        t.retain(|_, _| false).map_err(STATE_DB.write())?;
        for (k, v) in &image.dedupe {
            t.insert(
                *k,
                codec::encode(v)
                    .map_err(STATE_DB.encode("state value"))?
                    .as_slice(),
            )
            .map_err(STATE_DB.write())?;
        }
        let mut t = txn.open_table(TIMERS).map_err(STATE_DB.table())?;
        t.retain(|_, _| false).map_err(STATE_DB.write())?;
        for (k, v) in &image.timers {
            t.insert(
                *k,
                codec::encode(v)
                    .map_err(STATE_DB.encode("state value"))?
                    .as_slice(),
            )
            .map_err(STATE_DB.write())?;
        }
        let mut t = txn.open_table(OUTBOX).map_err(STATE_DB.table())?;
        t.retain(|_, _| false).map_err(STATE_DB.write())?;
        for (k, v) in &image.outbox {
            t.insert(
                *k,
                codec::encode(v)
                    .map_err(STATE_DB.encode("state value"))?
                    .as_slice(),
            )
            .map_err(STATE_DB.write())?;
        }
        // The snapshot's own metadata is authoritative for applied/membership.
        image.scalars.last_applied = meta.last_log_id;
        image.scalars.membership = meta.last_membership.clone();
        super::layout::store_all(&txn, &image.scalars)?;
        let mut m = txn.open_table(SM_META).map_err(STATE_DB.table())?;
        let customers: std::collections::BTreeMap<u32, bool> =
            image.customers.iter().copied().collect();
        m.insert(
            meta_keys::CUSTOMERS,
            codec::encode(&customers)
                .map_err(STATE_DB.encode("state value"))?
                .as_slice(),
        )
        .map_err(STATE_DB.write())?;
        m.insert(meta_keys::SNAPSHOT, stored.as_slice())
            .map_err(STATE_DB.write())?;
    }
    txn.commit().map_err(STATE_DB.commit())?;

    data.set_scalars(image.scalars);
    data.customers = image.customers.into_iter().collect();
    data.customers_stored = true;
    let mut state = ActorState::default();
    for (k, v) in image.actor_state {
        state.insert(k, v);
    }
    data.actor_state = state;
    data.dedupe = image.dedupe.into_iter().collect();
    data.timers = image.timers.into_iter().collect();
    data.invalidate_status();
    Ok(())
}
