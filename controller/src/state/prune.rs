//! Outbox pruning: the outbox (and so every snapshot) no longer grows without bound.
//!
//! **Retention rule.** A record at sequence `s` is deleted once all of these hold:
//! 1. the central has acknowledged it: `s` is below the committed WAN cursor of *every*
//!    stream (`Body::OutboxAck`; a cursor covers every sequence below it, whether or not its
//!    stream carries the record, so records no stream carries, such as ballast set-points,
//!    go with the rest);
//! 2. it is older than [`OUTBOX_RETENTION_MS`] of log time, which is the bound on what a field
//!    loop still needs from the outbox history: a running field loop follows the outbox
//!    within seconds (its cursor is local, not committed), and relay commands or set-points
//!    older than a day are stale anyway;
//! 3. it is not *pinned*: the newest relay command per (node, relay), the newest ballast
//!    set-point per node and the newest ledger record per customer stay however old they
//!    are, so a node that was down for longer than the retention (or restores an old journal
//!    cursor) still finds the command its relay must obey and the balance its island credit
//!    starts from. A pinned record is deleted when a newer one for the same key supersedes it
//!    and it is below the pruned horizon.
//!
//! Without `[wan]` nothing is ever acknowledged, so nothing is pruned here: records older than
//! a week are folded into daily totals instead (`fold.rs`).
//!
//! **Deterministic.** Pruning runs while applying a committed `OutboxAck` and when an hour of
//! energy closes, from replicated state and log time only, so every replica deletes the same
//! records and the state hash chains the new horizon. At most [`PRUNE_PER_APPLY_MAX`] records
//! go per entry (the first ack after a week offline would otherwise delete tens of thousands
//! in one apply); the rest follow with the next acks.

use std::collections::BTreeSet;
use std::io;

use ghatta_actor_sdk as sdk;
use redb::{ReadableTable, Table};
use serde::{Deserialize, Serialize};

use super::energy::HOUR_MS;
use super::{OutboxRecord, SmData};
use crate::storage::STATE_DB;
use ghatta_proto::codec;

/// Log time an acknowledged record is kept: a day (see the module docs).
pub const OUTBOX_RETENTION_MS: u64 = 24 * HOUR_MS;
/// Most records deleted while applying one entry.
pub const PRUNE_PER_APPLY_MAX: usize = 16_384;

/// What keeps a record past the retention: the newest record per key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub(crate) enum Pin {
    /// (node, relay kind 0 feeder / 1 customer / 2 ballast, relay number).
    Relay(u64, u8, u32),
    /// A node's ballast set-point.
    Setpoint(u64),
    /// A customer's newest ledger line (balance, mode evidence).
    Ledger(u32),
}

/// The pin of an outbox output, if it is one a field loop may need when old.
pub(crate) fn pin_of(out: &sdk::Output) -> Option<Pin> {
    match out {
        sdk::Output::Relay(cmd) => Some(match cmd.relay {
            sdk::RelayId::Feeder(f) => Pin::Relay(cmd.node.0, 0, u32::from(f)),
            sdk::RelayId::Customer(c) => Pin::Relay(cmd.node.0, 1, c.0),
            sdk::RelayId::Ballast(b) => Pin::Relay(cmd.node.0, 2, u32::from(b)),
        }),
        sdk::Output::BallastSetpoint { node, .. } => Some(Pin::Setpoint(node.0)),
        sdk::Output::Ledger(l) => Some(Pin::Ledger(l.customer.0)),
        _ => None,
    }
}

/// Record that `seq` is now the newest record for `pin`; deletes the record it supersedes if
/// that one was only kept for its pin (answers whether a record was deleted).
pub(crate) fn repin(
    pins: &mut super::tracked::Tracked<Pin, u64>,
    first_out_seq: u64,
    outbox: &mut Table<'_, u64, &'static [u8]>,
    pin: Pin,
    seq: u64,
) -> io::Result<bool> {
    if let Some(old) = pins.insert(pin, seq)
        && old < first_out_seq
    {
        return Ok(outbox.remove(old).map_err(STATE_DB.write())?.is_some());
    }
    Ok(false)
}

/// Delete what the retention rule allows; returns how many records went.
pub(crate) fn prune(
    data: &mut SmData,
    outbox: &mut Table<'_, u64, &'static [u8]>,
    h: &mut blake3::Hasher,
) -> io::Result<usize> {
    let acked = ghatta_proto::outbox::Stream::ALL
        .iter()
        .map(|s| data.outbox_acks.get(&s.id()).copied().unwrap_or(0))
        .min()
        .unwrap_or(0);
    if acked <= data.first_out_seq {
        return Ok(0);
    }
    let horizon_ms = data.log_time_ms.saturating_sub(OUTBOX_RETENTION_MS);
    let pinned: BTreeSet<u64> = data.pins.values().copied().collect();
    let mut doomed = Vec::new();
    let mut new_first = acked;
    for item in outbox
        .range(data.first_out_seq..acked)
        .map_err(STATE_DB.read())?
    {
        let (k, v) = item.map_err(STATE_DB.read())?;
        let seq = k.value();
        if doomed.len() >= PRUNE_PER_APPLY_MAX {
            new_first = seq;
            break;
        }
        let rec: OutboxRecord = codec::decode(v.value()).map_err(STATE_DB.corrupt("outbox"))?;
        if rec.time_ms > horizon_ms {
            new_first = seq;
            break;
        }
        if !pinned.contains(&seq) {
            doomed.push(seq);
        }
    }
    for seq in &doomed {
        outbox.remove(*seq).map_err(STATE_DB.write())?;
    }
    data.outbox_records = data.outbox_records.saturating_sub(doomed.len() as u64);
    if new_first != data.first_out_seq {
        data.first_out_seq = new_first;
        h.update(b"outbox-pruned-below");
        h.update(&new_first.to_le_bytes());
    }
    Ok(doomed.len())
}
