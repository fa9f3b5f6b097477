//! Snapshots: the whole state machine as one image in a snapshot file
//! (`storage::snapshot_file`), built, made current (fsynced), checked and installed a record at
//! a time, never whole in memory.

use std::io::{self, Write};
use std::sync::Arc;

use redb::{Database, Durability, ReadableDatabase, ReadableTable, ReadableTableMetadata};
use serde::{Deserialize, Serialize};

use super::{DedupeWindow, OutboxRecord, Scalars, SmData, TimerRecord, meta_keys};
use crate::actors::ActorState;
use crate::raft::{Snapshot, SnapshotMeta};
use crate::storage::snapshot_file::{self, SnapshotFile, SnapshotReader, SnapshotWriter};
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

/// What `sm_meta["snapshot2"]` records: the current snapshot's metadata and its file
/// (`storage::snapshot_file`).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Current {
    meta: SnapshotMeta,
    file_id: u64,
    len: u64,
}

/// The stored snapshot as nodes before snapshot files kept it, whole in one value under
/// `sm_meta["snapshot"]`: read once and moved into a file (`current`).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta,
    data: Vec<u8>,
}

/// Build a snapshot of `data` (the state as applied) into a new snapshot file and make it the
/// current snapshot, durably.
///
/// The bytes are `codec::encode` of a [`SnapshotImage`], written without building one and
/// without holding them: the in-memory maps are encoded borrowed, straight into the file, and
/// the outbox (the one part that grows with the log when no central acknowledges it) is copied
/// a record at a time as the bincode its table already stores. bincode is context-free (a
/// struct is its fields in order, a sequence its u64 length then its items), so the bytes are
/// the same; a test holds them to a decode-and-encode round trip. Memory: the file writer's
/// buffer (`storage::snapshot_file`), whatever the outbox holds.
pub(crate) fn build(db: &Arc<Database>, data: &SmData, keep: Option<u64>) -> io::Result<Snapshot> {
    let mut w = SnapshotWriter::create(db)?;
    let head = ImageHead {
        scalars: super::apply::scalars_ref(data),
        customers: Pairs(&data.customers),
        actor_state: Pairs(&data.actor_state.map),
        dedupe: Pairs(&data.dedupe),
        timers: Pairs(&data.timers),
    };
    append(&mut w, &head)?;
    let records;
    {
        let txn = db.begin_read().map_err(STATE_DB.begin("read"))?;
        let table = txn.open_table(OUTBOX).map_err(STATE_DB.table())?;
        records = table.len().map_err(STATE_DB.read())?;
        append(&mut w, &records)?;
        let mut copied = 0u64;
        for item in table.iter().map_err(STATE_DB.read())? {
            let (k, v) = item.map_err(STATE_DB.read())?;
            append(&mut w, &k.value())?;
            w.write_all(v.value())
                .map_err(STATE_DB.encode("snapshot image"))?;
            copied += 1;
        }
        if copied != records {
            return Err(STATE_DB.corrupt("outbox")(format!(
                "the table says {records} records, {copied} were read"
            ))
            .into());
        }
    }
    let file = w.finish()?;
    // Refusing to build would stop the Raft core; an image past the limit would be refused
    // by every member it is sent to. Say it loudly while there is time to act.
    if file.len() > codec::SNAPSHOT_BYTES_MAX as u64 / 2 {
        tracing::error!(
            bytes = file.len(),
            limit = codec::SNAPSHOT_BYTES_MAX,
            outbox_records = records,
            "the state machine snapshot is over half the largest a member accepts (most of it \
             is outbox records no central has acknowledged, at most a week of them: \
             state::fold): restore the [wan] link so the central acknowledges and the outbox \
             is pruned"
        );
    }
    let meta = SnapshotMeta {
        last_log_id: data.last_applied,
        last_membership: data.membership.clone(),
    };
    let mut txn = db.begin_write().map_err(STATE_DB.begin("write"))?;
    txn.set_durability(Durability::Immediate)
        .map_err(STATE_DB.write())?;
    make_current(&txn, &meta, &file, keep)?;
    txn.commit().map_err(STATE_DB.commit())?;
    Ok(Snapshot {
        meta,
        snapshot: file,
    })
}

/// Records `file` as the current snapshot in `txn` and removes every other snapshot file but
/// the one it replaces (openraft may be sending it to a member still) and `keep` (a transfer
/// being received). Committed with an fsync by the caller: because redb commits are ordered,
/// this also makes the file's chunks and every earlier (unsynced) state-machine commit
/// durable, so the durable applied index is never below a snapshot that lets openraft purge
/// the log.
fn make_current(
    txn: &redb::WriteTransaction,
    meta: &SnapshotMeta,
    file: &SnapshotFile,
    keep: Option<u64>,
) -> Result<(), StoreError> {
    let mut t = txn.open_table(SM_META).map_err(STATE_DB.table())?;
    let previous = match t.get(meta_keys::SNAPSHOT_FILE).map_err(STATE_DB.read())? {
        Some(v) => Some(
            codec::decode::<Current>(v.value())
                .map_err(STATE_DB.corrupt("sm_meta.snapshot2"))?
                .file_id,
        ),
        None => None,
    };
    let current = Current {
        meta: meta.clone(),
        file_id: file.id(),
        len: file.len(),
    };
    let bytes = codec::encode(&current).map_err(STATE_DB.encode("state value"))?;
    t.insert(meta_keys::SNAPSHOT_FILE, bytes.as_slice())
        .map_err(STATE_DB.write())?;
    // The value before snapshot files, if a node from before them wrote one.
    t.remove(meta_keys::SNAPSHOT).map_err(STATE_DB.write())?;
    let mut keep_ids = vec![file.id()];
    keep_ids.extend(previous);
    keep_ids.extend(keep);
    snapshot_file::remove_except(txn, &keep_ids)?;
    Ok(())
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

/// Writes `value`'s encoding (the codec's configuration) to `out`.
fn append<T: Serialize>(out: &mut impl Write, value: &T) -> Result<(), StoreError> {
    codec::encode_to_write(out, value)
        .map(drop)
        .map_err(STATE_DB.encode("snapshot image"))
}

/// The current snapshot, if one was built or installed. A stored snapshot from before
/// snapshot files (one value) is moved into a file first, once.
pub(crate) fn current(db: &Arc<Database>) -> io::Result<Option<Snapshot>> {
    let old = {
        let txn = db.begin_read().map_err(STATE_DB.begin("read"))?;
        let t = txn.open_table(SM_META).map_err(STATE_DB.table())?;
        if let Some(v) = t.get(meta_keys::SNAPSHOT_FILE).map_err(STATE_DB.read())? {
            let c: Current =
                codec::decode(v.value()).map_err(STATE_DB.corrupt("sm_meta.snapshot2"))?;
            return Ok(Some(Snapshot {
                meta: c.meta,
                snapshot: SnapshotFile::open(db.clone(), c.file_id, c.len),
            }));
        }
        match t.get(meta_keys::SNAPSHOT).map_err(STATE_DB.read())? {
            None => return Ok(None),
            Some(v) => codec::decode_snapshot::<StoredSnapshot>(v.value())
                .map_err(STATE_DB.corrupt("sm_meta.snapshot"))?,
        }
    };
    let mut w = SnapshotWriter::create(db)?;
    w.write_all(&old.data)
        .map_err(STATE_DB.encode("snapshot image"))?;
    drop(old.data);
    let file = w.finish()?;
    let mut txn = db.begin_write().map_err(STATE_DB.begin("write"))?;
    txn.set_durability(Durability::Immediate)
        .map_err(STATE_DB.write())?;
    make_current(&txn, &old.meta, &file, None)?;
    txn.commit().map_err(STATE_DB.commit())?;
    Ok(Some(Snapshot {
        meta: old.meta,
        snapshot: file,
    }))
}

/// The parts of a [`SnapshotImage`] before its outbox, decoded from `r`.
struct Head {
    scalars: Scalars,
    customers: Vec<(u32, bool)>,
    actor_state: Vec<(Vec<u8>, Vec<u8>)>,
    dedupe: Vec<(u64, DedupeWindow)>,
    timers: Vec<(u64, TimerRecord)>,
    /// Outbox records that follow.
    records: u64,
}

fn read_head(r: &mut SnapshotReader) -> Result<Head, codec::DecodeError> {
    Ok(Head {
        scalars: codec::decode_from_read(r)?,
        customers: codec::decode_from_read(r)?,
        actor_state: codec::decode_from_read(r)?,
        dedupe: codec::decode_from_read(r)?,
        timers: codec::decode_from_read(r)?,
        records: codec::decode_from_read(r)?,
    })
}

/// Whether `file` is an image of the state at `meta.last_log_id`: it decodes, record by
/// record to its last byte, and names that index as its last applied. Checked before openraft
/// installs a received snapshot, because a failed install stops the node (a storage error is
/// fatal to openraft) where a refused transfer only makes the leader send it again. Memory:
/// the image's parts before the outbox (actor state, dedupe windows, timers), one record.
pub fn check_image(meta: &SnapshotMeta, file: &SnapshotFile) -> Result<(), String> {
    let mut r = file.reader();
    let head = read_head(&mut r).map_err(|e| format!("the image does not decode: {e}"))?;
    if head.scalars.last_applied != meta.last_log_id {
        return Err(format!(
            "the image is of the state at {:?}, its metadata says {:?}",
            head.scalars.last_applied, meta.last_log_id
        ));
    }
    for n in 0..head.records {
        codec::decode_from_read::<(u64, OutboxRecord)>(&mut r)
            .map_err(|e| format!("outbox record {n} of the image does not decode: {e}"))?;
    }
    if r.position() != file.len() {
        return Err(format!(
            "{} bytes follow the image",
            file.len() - r.position()
        ));
    }
    Ok(())
}

/// Replace the whole state machine with the snapshot in `file` (received from the leader, or
/// this node's own), streaming its outbox into the table a record at a time.
pub(crate) fn install(
    db: &Arc<Database>,
    data: &mut SmData,
    meta: &SnapshotMeta,
    file: &SnapshotFile,
    keep: Option<u64>,
) -> io::Result<()> {
    let bad = |e: &dyn std::fmt::Display| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("snapshot up to {:?} does not decode: {e}", meta.last_log_id),
        )
    };
    let mut r = file.reader();
    let mut image = read_head(&mut r).map_err(|e| bad(&e))?;
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
        for _ in 0..image.records {
            let (k, v): (u64, OutboxRecord) =
                codec::decode_from_read(&mut r).map_err(|e| bad(&e))?;
            t.insert(
                k,
                codec::encode(&v)
                    .map_err(STATE_DB.encode("state value"))?
                    .as_slice(),
            )
            .map_err(STATE_DB.write())?;
        }
        if r.position() != file.len() {
            return Err(bad(&format!(
                "{} bytes follow the image",
                file.len() - r.position()
            )));
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
        drop(m);
        make_current(&txn, meta, file, keep)?;
    }
    txn.commit().map_err(STATE_DB.commit())?;

    data.outbox_records = image.records;
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
