//! Where the state machine's scalars lie in `state.redb`, and the move from the older layout.
//!
//! `sm_meta["scalars2"]` holds the small scalars (applied index, membership, hash, counters,
//! WAN cursors, the energy aggregation but its customers); the two parts with an entry per
//! customer have tables of their own, a row per entry: the outbox pins (`sm_pins`) and the
//! energy billed per customer in the open hour (`sm_energy_customers`). An applied batch
//! writes the small scalars and only the rows that changed (`tracked.rs`); a snapshot
//! install, and the migration, write both tables whole.
//!
//! Until November 2026 `sm_meta["scalars"]` held all of it as one [`Scalars`] (tens of KB
//! rewritten by every batch); a database in that layout is converted in one transaction when
//! the state machine opens it, and the old key then holds [`OLD_KEY_TOMBSTONE`], which older
//! binaries refuse to open. The snapshot image still carries a whole [`Scalars`]: its
//! bytes are what replicas install, and they are unchanged.

use std::collections::BTreeMap;
use std::io;

use redb::{Database, ReadableDatabase, ReadableTable, WriteTransaction};
use serde::{Deserialize, Serialize};

use super::energy::{EnergyRest, EnergyRestRef, EnergyState};
use super::{Scalars, ScalarsHead, SmData, StateHash, meta_keys, prune::Pin};
use crate::raft::{LogId, StoredMembership};
use crate::storage::{SM_ENERGY_CUSTOMERS, SM_META, SM_PINS, STATE_DB, StoreError};
use ghatta_proto::codec;

/// What `sm_meta["scalars2"]` holds, borrowed: [`ScalarsHead`] then the energy but its
/// customers.
#[derive(Serialize)]
pub(crate) struct StoredRef<'a> {
    pub head: ScalarsHead<'a>,
    pub energy: EnergyRestRef<'a>,
}

/// What the old layout's key, `sm_meta["scalars"]`, holds once this layout is in use. An older
/// ghatta started on this database (a rollback) would otherwise find no scalars there and start
/// from empty ones over full tables: a replica silently apart from its peers. These bytes
/// decode as no [`Scalars`] (0xFF is no `Option` tag, its first field's), so it refuses to open
/// the database, naming `sm_meta.scalars`, and the text says why to whoever looks.
pub(crate) const OLD_KEY_TOMBSTONE: &[u8] =
    b"\xffghatta: moved to sm_meta[scalars2] (per-entry layout); this database needs a newer ghatta";

/// [`StoredRef`] read back (bincode writes a struct as its fields in order, a nested one
/// included, so these are the same bytes).
#[derive(Deserialize)]
struct Stored {
    last_applied: Option<LogId>,
    membership: StoredMembership,
    hash: StateHash,
    log_time_ms: u64,
    next_timer_id: u64,
    next_out_seq: u64,
    first_out_seq: u64,
    trapped_total: u64,
    outbox_acks: BTreeMap<u32, u64>,
    energy: EnergyRest,
}

/// The scalars' head borrowed from the in-memory state.
pub(crate) fn head(data: &SmData) -> ScalarsHead<'_> {
    ScalarsHead {
        last_applied: &data.last_applied,
        membership: &data.membership,
        hash: &data.hash,
        log_time_ms: data.log_time_ms,
        next_timer_id: data.next_timer_id,
        next_out_seq: data.next_out_seq,
        first_out_seq: data.first_out_seq,
        trapped_total: data.trapped_total,
        outbox_acks: &data.outbox_acks,
    }
}

fn head_of(s: &Scalars) -> ScalarsHead<'_> {
    ScalarsHead {
        last_applied: &s.last_applied,
        membership: &s.membership,
        hash: &s.hash,
        log_time_ms: s.log_time_ms,
        next_timer_id: s.next_timer_id,
        next_out_seq: s.next_out_seq,
        first_out_seq: s.first_out_seq,
        trapped_total: s.trapped_total,
        outbox_acks: &s.outbox_acks,
    }
}

/// A pin's key in `sm_pins`.
fn pin_key(pin: &Pin) -> Result<Vec<u8>, StoreError> {
    codec::encode(pin).map_err(STATE_DB.encode("state value"))
}

/// Writes `sm_meta["scalars2"]`.
fn store_small(txn: &WriteTransaction, small: &StoredRef<'_>) -> io::Result<()> {
    let bytes = codec::encode(small).map_err(STATE_DB.encode("state value"))?;
    txn.open_table(SM_META)
        .map_err(STATE_DB.table())?
        .insert(meta_keys::SCALARS, bytes.as_slice())
        .map_err(STATE_DB.write())?;
    Ok(())
}

/// Store the scalars after an applied batch: the small ones whole, of the pins and the
/// energy's customers the entries changed since the last store.
pub(crate) fn store_batch(txn: &WriteTransaction, data: &mut SmData) -> io::Result<()> {
    store_small(
        txn,
        &StoredRef {
            head: head(data),
            energy: data.energy.rest(),
        },
    )?;
    // A table is opened only when it has rows to write: most batches change neither (an open
    // is a lookup in redb's table tree and a check of the table's types).
    let mut pin_changes = data.pins.take_changes().peekable();
    if pin_changes.peek().is_some() {
        let mut pins = txn.open_table(SM_PINS).map_err(STATE_DB.table())?;
        for (pin, seq) in pin_changes {
            let k = pin_key(&pin)?;
            match seq {
                Some(seq) => pins.insert(k.as_slice(), *seq).map(drop),
                None => pins.remove(k.as_slice()).map(drop),
            }
            .map_err(STATE_DB.read())?;
        }
    }
    let mut customer_changes = data.energy.take_customer_changes().peekable();
    if customer_changes.peek().is_some() {
        let mut customers = txn
            .open_table(SM_ENERGY_CUSTOMERS)
            .map_err(STATE_DB.table())?;
        for (c, wh) in customer_changes {
            match wh {
                Some(wh) => customers.insert(c, wh).map(drop),
                None => customers.remove(c).map(drop),
            }
            .map_err(STATE_DB.read())?;
        }
    }
    Ok(())
}

/// Store `s` whole, replacing what was stored (a snapshot install, the migration): the small
/// scalars, both tables cleared and written, the old layout's key removed.
pub(crate) fn store_all(txn: &WriteTransaction, s: &Scalars) -> io::Result<()> {
    store_small(
        txn,
        &StoredRef {
            head: head_of(s),
            energy: s.energy.rest(),
        },
    )?;
    txn.open_table(SM_META)
        .map_err(STATE_DB.table())?
        .insert(meta_keys::SCALARS_OLD, OLD_KEY_TOMBSTONE)
        .map_err(STATE_DB.write())?;
    let mut pins = txn.open_table(SM_PINS).map_err(STATE_DB.table())?;
    pins.retain(|_, _| false).map_err(STATE_DB.write())?;
    for (pin, seq) in &s.pins {
        pins.insert(pin_key(pin)?.as_slice(), *seq)
            .map_err(STATE_DB.write())?;
    }
    let mut customers = txn
        .open_table(SM_ENERGY_CUSTOMERS)
        .map_err(STATE_DB.table())?;
    customers.retain(|_, _| false).map_err(STATE_DB.write())?;
    for (c, wh) in s.energy.customers() {
        customers.insert(*c, *wh).map_err(STATE_DB.write())?;
    }
    Ok(())
}

/// The stored scalars (`None` in a new database). A database in the old layout is converted
/// first, in one transaction (see the module docs); in any other, the old layout's key is
/// made [`OLD_KEY_TOMBSTONE`] if it is not yet.
pub(crate) fn load(db: &Database) -> io::Result<Option<Scalars>> {
    let (scalars, marked) = load_stored(db)?;
    if !marked {
        let txn = db.begin_write().map_err(STATE_DB.begin("write"))?;
        txn.open_table(SM_META)
            .map_err(STATE_DB.table())?
            .insert(meta_keys::SCALARS_OLD, OLD_KEY_TOMBSTONE)
            .map_err(STATE_DB.write())?;
        txn.commit().map_err(STATE_DB.commit())?;
    }
    Ok(scalars)
}

/// The stored scalars, converting the old layout, and whether the old layout's key holds
/// [`OLD_KEY_TOMBSTONE`] now.
fn load_stored(db: &Database) -> io::Result<(Option<Scalars>, bool)> {
    let old = {
        let txn = db.begin_read().map_err(STATE_DB.begin("read"))?;
        let meta = txn.open_table(SM_META).map_err(STATE_DB.table())?;
        let old_key = meta.get(meta_keys::SCALARS_OLD).map_err(STATE_DB.read())?;
        let marked = old_key
            .as_ref()
            .is_some_and(|v| v.value() == OLD_KEY_TOMBSTONE);
        if let Some(v) = meta.get(meta_keys::SCALARS).map_err(STATE_DB.read())? {
            let s: Stored =
                codec::decode(v.value()).map_err(STATE_DB.corrupt("sm_meta.scalars2"))?;
            let mut pins = BTreeMap::new();
            for item in txn
                .open_table(SM_PINS)
                .map_err(STATE_DB.table())?
                .iter()
                .map_err(STATE_DB.read())?
            {
                let (k, v) = item.map_err(STATE_DB.read())?;
                let pin: Pin = codec::decode(k.value()).map_err(STATE_DB.corrupt("sm_pins"))?;
                pins.insert(pin, v.value());
            }
            let mut customers = BTreeMap::new();
            for item in txn
                .open_table(SM_ENERGY_CUSTOMERS)
                .map_err(STATE_DB.table())?
                .iter()
                .map_err(STATE_DB.read())?
            {
                let (k, v) = item.map_err(STATE_DB.read())?;
                customers.insert(k.value(), v.value());
            }
            let scalars = Scalars {
                last_applied: s.last_applied,
                membership: s.membership,
                hash: s.hash,
                log_time_ms: s.log_time_ms,
                next_timer_id: s.next_timer_id,
                next_out_seq: s.next_out_seq,
                first_out_seq: s.first_out_seq,
                trapped_total: s.trapped_total,
                outbox_acks: s.outbox_acks,
                energy: EnergyState::from_parts(s.energy, customers),
                pins,
            };
            return Ok((Some(scalars), marked));
        }
        match old_key {
            None => return Ok((None, false)),
            // Opened before, by this layout, and nothing applied since.
            Some(_) if marked => return Ok((None, true)),
            Some(v) => codec::decode::<Scalars>(v.value())
                .map_err(STATE_DB.corrupt("sm_meta.scalars (the old layout)"))?,
        }
    };
    let txn = db.begin_write().map_err(STATE_DB.begin("write"))?;
    store_all(&txn, &old)?;
    txn.commit().map_err(STATE_DB.commit())?;
    tracing::info!(
        pins = old.pins.len(),
        "state machine scalars moved to the per-entry layout (sm_pins, sm_energy_customers)"
    );
    // store_all wrote the marker.
    Ok((Some(old), true))
}
