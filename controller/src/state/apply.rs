//! Applying committed entries: dedupe, route inputs to actors, record effects, chain the hash.

use std::io;

use ghatta_actor_sdk::{self as sdk, codec as sdk_codec};
use openraft::EntryPayload;
use openraft::entry::RaftEntry;
use redb::{Database, Durability, ReadableTable, Table};

use super::energy::LocalHours;
use super::logtime::{Advance, LogClock};
use super::{
    Hooks, OutboxRecord, ScalarsRef, SeqCheck, SmData, StateHash, TimerRecord, meta_keys, prune,
};
use crate::actors::{ActorHost, ActorKind, Status, TrapKind};
use crate::observe::{AppliedEntry, AppliedProposal, CommitTimings};
use crate::raft::{
    Body, Entry, Proposal, REFUSAL_TEXT_BYTES_MAX, REFUSALS_PER_RECEIPT_MAX, Receipt, Refusal,
    StoredMembership,
};
use crate::storage::{ACTOR_STATE, DEDUPE, OUTBOX, SM_META, STATE_DB, TIMERS};
use ghatta_proto::codec;

/// Where the log-time rule's state (`logtime::LogClock`) lies in the actor state: under a
/// prefix byte no actor has (actors' keys start with their `ActorKind::prefix`, 1 and 2, and
/// the host prefixes every key an actor writes), so no actor can read or write it.
pub(crate) const LOG_CLOCK_KEY: &[u8] = b"\xffhost/log-clock";
/// Where the grid's local time for energy hours (`energy::LocalHours`) lies in the actor
/// state, under the host's prefix like [`LOG_CLOCK_KEY`]: hashed and snapshotted with the
/// state, and absent (the default, Nepal time) in state written before local hours.
pub(crate) const LOCAL_HOURS_KEY: &[u8] = b"\xffhost/local-hours";

/// Tables open in the batch's write transaction.
pub(super) struct Tables<'t> {
    pub(super) state: Table<'t, &'static [u8], &'static [u8]>,
    dedupe: Table<'t, u64, &'static [u8]>,
    timers: Table<'t, u64, &'static [u8]>,
    pub(super) outbox: Table<'t, u64, &'static [u8]>,
    /// Time in actor deliveries this batch, ns, when commit timings are kept (`None`: not).
    deliver_ns: Option<u64>,
    /// Every alarm the current entry's deliveries raised, stored or counted as a repeat
    /// (`alarm_tally`), sdk-encoded, when an observer is attached (`None`: not).
    raised: Option<Vec<Vec<u8>>>,
}

/// Apply a batch of committed entries in one redb transaction; one receipt per entry.
pub(crate) fn apply_batch<'a>(
    db: &Database,
    host: &ActorHost,
    hooks: &Hooks,
    data: &mut SmData,
    entries: impl Iterator<Item = &'a Entry>,
) -> io::Result<Vec<Receipt>> {
    let mut txn = db.begin_write().map_err(STATE_DB.begin("write"))?;
    txn.set_durability(Durability::None)
        .map_err(STATE_DB.write())?;
    let mut receipts = Vec::new();
    {
        let mut t = Tables {
            state: txn.open_table(ACTOR_STATE).map_err(STATE_DB.table())?,
            dedupe: txn.open_table(DEDUPE).map_err(STATE_DB.table())?,
            timers: txn.open_table(TIMERS).map_err(STATE_DB.table())?,
            outbox: txn.open_table(OUTBOX).map_err(STATE_DB.table())?,
            deliver_ns: hooks.timings.as_ref().map(|_| 0),
            raised: None,
        };
        for entry in entries {
            let index = entry.index();
            if data
                .last_applied
                .as_ref()
                .is_some_and(|l| l.index() >= index)
            {
                // Already applied (a re-delivered batch after a restart): exactly once.
                receipts.push(Receipt {
                    index,
                    duplicate: true,
                    state_hash: data.hash,
                    ..Receipt::default()
                });
                continue;
            }
            let mut h = blake3::Hasher::new();
            h.update(&data.hash);
            h.update(&index.to_le_bytes());
            let mut receipt = Receipt {
                index,
                ..Receipt::default()
            };
            let out_before = data.next_out_seq;
            t.raised = hooks.observer.as_ref().map(|_| Vec::new());
            // The observer is told when a fired timer was due (the tick removes it).
            let tick_due_ms = match &entry.payload {
                EntryPayload::Normal(Proposal {
                    body: Body::Tick { timer_id },
                    ..
                }) if hooks.observer.is_some() => data.timers.get(timer_id).map(|t| t.due_ms),
                _ => None,
            };
            match &entry.payload {
                EntryPayload::Blank => {
                    h.update(b"blank");
                }
                EntryPayload::Membership(m) => {
                    h.update(b"membership");
                    data.membership = StoredMembership::new(Some(entry.log_id()), m.clone());
                }
                EntryPayload::Normal(p) => {
                    let term = entry.log_id().committed_leader_id().term;
                    apply_proposal(
                        hooks,
                        host,
                        data,
                        &mut t,
                        (index, term),
                        p,
                        &mut receipt,
                        &mut h,
                    )?
                }
            }
            data.last_applied = Some(entry.log_id());
            data.hash = *h.finalize().as_bytes();
            receipt.state_hash = data.hash;
            if let Some(o) = &hooks.observer {
                let mut seen = observed(&mut t, entry, &receipt, out_before, data.next_out_seq)?;
                seen.log_time_ms = data.log_time_ms;
                seen.alarms_raised = t.raised.take().unwrap_or_default();
                seen.tick_due_ms = tick_due_ms.filter(|_| !receipt.duplicate);
                o.entry_applied(hooks.node, &seen);
            }
            receipts.push(receipt);
        }
        if let (Some(c), Some(ns)) = (&hooks.timings, t.deliver_ns) {
            CommitTimings::add(&c.apply_deliver_ns, ns);
        }
        super::layout::store_batch(&txn, data)?;
        if !data.customers_stored {
            let mut meta = txn.open_table(SM_META).map_err(STATE_DB.table())?;
            let customers =
                codec::encode(&data.customers).map_err(STATE_DB.encode("state value"))?;
            meta.insert(meta_keys::CUSTOMERS, customers.as_slice())
                .map_err(STATE_DB.write())?;
            data.customers_stored = true;
        }
    }
    let commit_started = hooks.timings.as_ref().map(|_| std::time::Instant::now());
    txn.commit().map_err(STATE_DB.commit())?;
    if let (Some(c), Some(t0)) = (&hooks.timings, commit_started) {
        CommitTimings::add_since(&c.apply_commit_ns, t0);
        CommitTimings::add(&c.apply_batches, 1);
        CommitTimings::add(&c.apply_entries, receipts.len() as u64);
    }
    Ok(receipts)
}

/// The scalars as a snapshot image carries them, borrowed (see [`ScalarsRef`]).
pub(crate) fn scalars_ref(data: &SmData) -> ScalarsRef<'_> {
    ScalarsRef {
        head: super::layout::head(data),
        energy: &data.energy,
        pins: &data.pins,
    }
}

/// The owned scalars (tests compare their encoding with [`scalars_ref`]'s).
#[cfg(test)]
pub(crate) fn scalars_of(data: &SmData) -> super::Scalars {
    super::Scalars {
        last_applied: data.last_applied,
        membership: data.membership.clone(),
        hash: data.hash,
        log_time_ms: data.log_time_ms,
        next_timer_id: data.next_timer_id,
        next_out_seq: data.next_out_seq,
        first_out_seq: data.first_out_seq,
        trapped_total: data.trapped_total,
        outbox_acks: data.outbox_acks.clone(),
        energy: data.energy.clone(),
        pins: (*data.pins).clone(),
    }
}

/// What the observer is told about one applied entry (computed only when one is attached).
fn observed(
    t: &mut Tables<'_>,
    entry: &Entry,
    receipt: &Receipt,
    out_from: u64,
    out_to: u64,
) -> io::Result<AppliedEntry> {
    let encoded = codec::encode(entry).map_err(STATE_DB.encode("state value"))?;
    let (proposal, inputs) = match &entry.payload {
        EntryPayload::Normal(p) => (
            Some(AppliedProposal {
                origin: p.origin,
                seq: p.seq,
                duplicate: receipt.duplicate,
            }),
            match &p.body {
                Body::Inputs(v) if !receipt.duplicate => v.clone(),
                _ => Vec::new(),
            },
        ),
        _ => (None, Vec::new()),
    };
    let mut outputs = Vec::new();
    for seq in out_from..out_to {
        if let Some(v) = t.outbox.get(seq).map_err(STATE_DB.read())? {
            outputs.push(
                codec::decode::<OutboxRecord>(v.value())
                    .map_err(STATE_DB.corrupt("state value"))?,
            );
        }
    }
    Ok(AppliedEntry {
        index: receipt.index,
        entry_digest: *blake3::hash(&encoded).as_bytes(),
        state_hash: receipt.state_hash,
        proposal,
        inputs,
        outputs,
        log_time_ms: 0,
        tick_due_ms: None,
        alarms_raised: Vec::new(),
    })
}

#[allow(clippy::too_many_arguments)]
fn apply_proposal(
    hooks: &Hooks,
    host: &ActorHost,
    data: &mut SmData,
    t: &mut Tables<'_>,
    (index, term): (u64, u64),
    p: &Proposal,
    receipt: &mut Receipt,
    h: &mut blake3::Hasher,
) -> io::Result<()> {
    advance_log_time(hooks, data, t, index, term, p, h)?;
    // Tallies of repeated alarms whose hour this entry's log time ended are summed up first.
    super::alarm_tally::close_due(data, t, index, h)?;
    // A deploy scheduled for a log time this entry reached cuts over before the entry runs.
    super::modules::cut_over_due(host, data, t, index, h)?;
    // An entry in a later local hour closes the open hour of energy first (by log time only).
    let mut lh = local_hours(data);
    let before = lh;
    let closed = data.energy.advance(data.log_time_ms, &mut lh);
    if lh != before {
        put_local_hours(data, t, &lh, h)?;
    }
    if !closed.is_empty() {
        for (hour, utc_offset_min) in closed {
            let actor = match hour.subject {
                sdk::EnergySubject::Customer(_) => ActorKind::Billing,
                _ => ActorKind::Balancing,
            };
            let out = sdk::Output::EnergyLocal {
                hour,
                utc_offset_min,
            };
            let bytes = sdk_codec::encode(&out);
            h.update(b"energy-hour");
            h.update(&bytes);
            push_outbox(data, t, index, actor, &out, bytes)?;
        }
        prune::prune(data, &mut t.outbox, h)?;
        super::fold::fold(data, t, index, lh.utc_offset_min, h)?;
    }
    if p.seq != 0 {
        let window = data.dedupe.entry(p.origin).or_default();
        let skip = hooks.faults.skip_dedupe();
        if window.check_and_record(p.seq) == SeqCheck::Duplicate && !skip {
            receipt.duplicate = true;
            h.update(b"dup");
            return Ok(());
        }
        let bytes = codec::encode(&*window).map_err(STATE_DB.encode("state value"))?;
        t.dedupe
            .insert(p.origin, bytes.as_slice())
            .map_err(STATE_DB.write())?;
    }
    let ctx = sdk::Context {
        log_index: index,
        log_time_ms: data.log_time_ms,
        origin: sdk::NodeId(p.origin),
    };
    match &p.body {
        Body::Inputs(inputs) => {
            for (pos, raw) in inputs.iter().enumerate() {
                let pos = u32::try_from(pos).unwrap_or(u32::MAX);
                let Some(input) = sdk_codec::decode::<sdk::Input>(raw) else {
                    // Undecodable input: refused identically everywhere.
                    receipt.rejected += 1;
                    note_refusal(receipt, pos, None, 0, "the input does not decode");
                    h.update(b"undecodable");
                    continue;
                };
                let Some(actor) = ActorKind::for_input(&input) else {
                    receipt.rejected += 1;
                    note_refusal(receipt, pos, None, 0, "no actor takes this kind of input");
                    h.update(b"unrouted");
                    continue;
                };
                if !runs(host, data, actor) {
                    receipt.rejected += 1;
                    let name = actor.name();
                    note_refusal(
                        receipt,
                        pos,
                        Some(actor),
                        0,
                        &format!(
                            "the {name} actor is not deployed: deploy it with `ghatta actor deploy --name {name}`"
                        ),
                    );
                    h.update(b"not-deployed");
                    continue;
                }
                observe_input(data, &input);
                // Telemetry also reaches demand response once it is deployed (spare generation
                // is in the reports); its outcome is not the input's, so it is kept out of the
                // receipt's counts, as the field loop reads them for the input's own actor.
                let also = (matches!(input, sdk::Input::Telemetry(_))
                    && runs(host, data, ActorKind::DemandResponse))
                .then(|| input.clone());
                let new_offset = match &input {
                    sdk::Input::SetBillingConfig(c) => Some(c.utc_offset_min),
                    _ => None,
                };
                let status = deliver(
                    host,
                    data,
                    t,
                    (index, pos),
                    actor,
                    sdk::Delivery { ctx, input },
                    receipt,
                    h,
                )?;
                if let Some(input) = also {
                    h.update(b"fan-out");
                    let _ = deliver(
                        host,
                        data,
                        t,
                        (index, pos),
                        ActorKind::DemandResponse,
                        sdk::Delivery { ctx, input },
                        &mut Receipt::default(),
                        h,
                    )?;
                }
                // Billing's configuration is the one source of the grid's offset: the host
                // follows it from the index where billing accepted it (a refused or trapped
                // one changes nothing on any replica).
                if let (Some(utc_offset_min), Status::Handled) = (new_offset, status) {
                    let mut lh = local_hours(data);
                    if lh.utc_offset_min != utc_offset_min {
                        lh.utc_offset_min = utc_offset_min;
                        put_local_hours(data, t, &lh, h)?;
                    }
                }
            }
        }
        Body::Tick { timer_id } => match take_timer(data, *timer_id) {
            None => {
                // Fired already (a repeated tick proposal): exactly once.
                receipt.duplicate = true;
                h.update(b"tick-dup");
            }
            Some(timer) if !runs(host, data, timer.actor) => {
                // Its actor was rolled back to none (an actor shipped only by deployment):
                // the timer is dropped, as its actor is gone.
                t.timers.remove(*timer_id).map_err(STATE_DB.write())?;
                h.update(b"tick-no-actor");
            }
            Some(timer) => {
                t.timers.remove(*timer_id).map_err(STATE_DB.write())?;
                let input = sdk::Input::Tick(sdk::Tick {
                    due_ms: timer.due_ms,
                    tag: timer.tag,
                });
                let _ = deliver(
                    host,
                    data,
                    t,
                    (index, 0),
                    timer.actor,
                    sdk::Delivery { ctx, input },
                    receipt,
                    h,
                )?;
            }
        },
        Body::OutboxAck { stream, upto_seq } => {
            // The cursor only moves forward: a stale ack from a deposed uploader is a no-op.
            // Nor past the outbox's end: the central cannot have stored what was never
            // written, so such an ack is forged or corrupt, and taking it would stop the
            // upload for good and let pruning delete records the central never got.
            let next_out_seq = data.next_out_seq;
            let cursor = data.outbox_acks.entry(*stream).or_insert(0);
            if *upto_seq <= next_out_seq {
                *cursor = (*cursor).max(*upto_seq);
            } else {
                tracing::warn!(
                    stream,
                    upto_seq,
                    next_out_seq,
                    "an OutboxAck past the end of the outbox was ignored"
                );
            }
            h.update(b"outbox-ack");
            h.update(&stream.to_le_bytes());
            h.update(&cursor.to_le_bytes());
            prune::prune(data, &mut t.outbox, h)?;
        }
        Body::Actor(op) => {
            super::modules::apply(host, data, t, super::modules::At { index }, op, receipt, h)?
        }
        Body::BoardAlarms(report) => {
            super::board_alarms::apply(data, t, index, p.origin, report, receipt, h)?
        }
    }
    Ok(())
}

/// Whether `actor` has a module to run now: compiled in, or deployed and active.
fn runs(host: &ActorHost, data: &SmData, actor: ActorKind) -> bool {
    host.has_compiled_in(actor) || super::modules::is_active(&data.actor_state, actor)
}

/// The grid's local time for energy hours, from the actor state (the default when absent).
fn local_hours(data: &SmData) -> LocalHours {
    data.actor_state
        .map
        .get(LOCAL_HOURS_KEY)
        .and_then(|v| codec::decode::<LocalHours>(v).ok())
        .unwrap_or_default()
}

/// Stores the grid's local time for energy hours in the actor state, hashed.
fn put_local_hours(
    data: &mut SmData,
    t: &mut Tables<'_>,
    lh: &LocalHours,
    h: &mut blake3::Hasher,
) -> io::Result<()> {
    put_host(data, t, LOCAL_HOURS_KEY, b"local-hours", lh, h)
}

/// Stores one of the host's own values under `key` in the actor state (its table and memory),
/// into the state hash after `label`.
pub(super) fn put_host<T: serde::Serialize>(
    data: &mut SmData,
    t: &mut Tables<'_>,
    key: &[u8],
    label: &[u8],
    value: &T,
    h: &mut blake3::Hasher,
) -> io::Result<()> {
    let bytes = codec::encode(value).map_err(STATE_DB.encode("state value"))?;
    h.update(label);
    h.update(&bytes);
    t.state
        .insert(key, bytes.as_slice())
        .map_err(STATE_DB.write())?;
    data.actor_state.insert(key.to_vec(), bytes);
    Ok(())
}

/// Removes one of the host's own values from the actor state (its table and memory), into the
/// state hash as `label` when it was there.
pub(super) fn remove_host(
    data: &mut SmData,
    t: &mut Tables<'_>,
    key: &[u8],
    label: &[u8],
    h: &mut blake3::Hasher,
) -> io::Result<()> {
    if data.actor_state.remove(key).is_some() {
        h.update(label);
        t.state.remove(key).map_err(STATE_DB.write())?;
    }
    Ok(())
}

/// Removes a timer that fires (or fired already: `None`).
fn take_timer(data: &mut SmData, id: u64) -> Option<TimerRecord> {
    data.invalidate_status();
    data.timers.remove(&id)
}

/// Host-side bookkeeping of inputs: customers (for status), telemetry (for the energy
/// aggregates). Replicated state.
fn observe_input(data: &mut SmData, input: &sdk::Input) {
    match input {
        sdk::Input::UpsertCustomer(spec) => {
            if let std::collections::btree_map::Entry::Vacant(e) = data.customers.entry(spec.id.0) {
                e.insert(true);
                data.customers_stored = false;
                data.invalidate_status();
            }
        }
        sdk::Input::Telemetry(t) => data.energy.on_telemetry(t, data.log_time_ms),
        _ => {}
    }
}

/// Append an output to the outbox at the next sequence, moving its pin (see `prune`).
pub(super) fn push_outbox(
    data: &mut SmData,
    t: &mut Tables<'_>,
    index: u64,
    actor: ActorKind,
    decoded: &sdk::Output,
    output: Vec<u8>,
) -> io::Result<()> {
    let rec = OutboxRecord {
        index,
        time_ms: data.log_time_ms,
        actor,
        output,
    };
    let seq = data.next_out_seq;
    data.next_out_seq += 1;
    data.outbox_records += 1;
    t.outbox
        .insert(
            seq,
            codec::encode(&rec)
                .map_err(STATE_DB.encode("state value"))?
                .as_slice(),
        )
        .map_err(STATE_DB.write())?;
    if let Some(pin) = prune::pin_of(decoded)
        && prune::repin(&mut data.pins, data.first_out_seq, &mut t.outbox, pin, seq)?
    {
        data.outbox_records = data.outbox_records.saturating_sub(1);
    }
    Ok(())
}

/// Moves log time for entry `index` of `term` by the rule in `logtime.rs`: never backwards,
/// at most real time elapsed in the term plus `LOG_TIME_STEP_MS`, and stamped with the
/// members' time instead of a leader clock that is more than `CLOCK_SKEW_MS_MAX` off theirs
/// (raising one `ClockSkew` alarm per term). The rule's state rides in the actor state under
/// the host's own key, so it is hashed, stored and carried in snapshots like any actor's.
fn advance_log_time(
    hooks: &Hooks,
    data: &mut SmData,
    t: &mut Tables<'_>,
    index: u64,
    term: u64,
    p: &Proposal,
    h: &mut blake3::Hasher,
) -> io::Result<()> {
    let mut clock = data
        .actor_state
        .map
        .get(LOG_CLOCK_KEY)
        .and_then(|v| codec::decode::<LogClock>(v).ok())
        .unwrap_or_default();
    let before = clock;
    let advance = if hooks.faults.unbounded_log_time() {
        // The mutation the simulator's clock checker must catch: log time follows the
        // leader's clock as it did before the bound.
        Advance {
            log_time_ms: data.log_time_ms.max(p.time_ms),
            skew_alarm_ms: None,
        }
    } else {
        clock.advance(data.log_time_ms, term, p.time_ms, &p.clock)
    };
    data.log_time_ms = advance.log_time_ms;
    h.update(&data.log_time_ms.to_le_bytes());
    if clock != before {
        put_host(data, t, LOG_CLOCK_KEY, b"log-clock", &clock, h)?;
    }
    if let Some(off_ms) = advance.skew_alarm_ms {
        let ahead = if off_ms > 0 { "ahead of" } else { "behind" };
        let out = sdk::Output::Alarm(sdk::Alarm {
            code: sdk::AlarmCode::ClockSkew,
            node: Some(sdk::NodeId(p.origin)),
            subject: u32::try_from(term).unwrap_or(u32::MAX),
            value: off_ms,
            text: format!(
                "the leader of term {term} has a wall clock {} s {ahead} the members' time; \
                 log time was bounded instead of following it: check the board's time source \
                 (NTP, GPS, RTC battery)",
                off_ms.unsigned_abs() / 1000
            ),
        });
        let bytes = sdk_codec::encode(&out);
        h.update(b"clock-skew");
        h.update(&bytes);
        push_outbox(data, t, index, ActorKind::Balancing, &out, bytes)?;
    }
    Ok(())
}

/// Keeps the first [`REFUSALS_PER_RECEIPT_MAX`] refusals of an entry for its receipt.
pub(super) fn note_refusal(
    receipt: &mut Receipt,
    input: u32,
    actor: Option<ActorKind>,
    code: i32,
    text: &str,
) {
    if receipt.refusals.len() >= REFUSALS_PER_RECEIPT_MAX {
        return;
    }
    let mut end = text.len().min(REFUSAL_TEXT_BYTES_MAX);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    receipt.refusals.push(Refusal {
        input,
        actor,
        code,
        text: text[..end].to_string(),
    });
}

/// Runs one delivery of the entry at `at` = (log index, input position); answers its status.
#[allow(clippy::too_many_arguments)]
fn deliver(
    host: &ActorHost,
    data: &mut SmData,
    t: &mut Tables<'_>,
    at: (u64, u32),
    actor: ActorKind,
    delivery: sdk::Delivery,
    receipt: &mut Receipt,
    h: &mut blake3::Hasher,
) -> io::Result<Status> {
    let (index, pos) = at;
    let bytes = sdk_codec::encode(&delivery);
    // The module in force at this index: a deployed one from its cut-over on (`modules.rs`).
    let module = super::modules::active_module(host, &data.actor_state, actor);
    let started = t.deliver_ns.map(|_| std::time::Instant::now());
    let (status, effects) = host.deliver_to(actor, module.as_ref(), &mut data.actor_state, &bytes);
    if let (Some(ns), Some(t0)) = (t.deliver_ns.as_mut(), started) {
        *ns += u64::try_from(t0.elapsed().as_nanos()).unwrap_or(u64::MAX);
    }
    h.update(&[actor.prefix()]);
    hash_status(h, status);
    match status {
        Status::Handled => receipt.handled += 1,
        Status::Rejected(code) => {
            receipt.rejected += 1;
            // The actor's alarm says what it refused and why in its own words; without one,
            // the reason code's meaning.
            let alarm = effects.outputs.iter().find_map(|out| {
                match sdk_codec::decode::<sdk::Output>(out) {
                    Some(sdk::Output::Alarm(a)) => Some(a.text),
                    _ => None,
                }
            });
            let text = alarm.unwrap_or_else(|| Refusal::reason_name(code).to_string());
            note_refusal(receipt, pos, Some(actor), code, &text);
        }
        Status::Trapped(_) => {
            receipt.trapped += 1;
            data.trapped_total += 1;
        }
    }
    record_effects(data, t, index, actor, effects, h)?;
    Ok(status)
}

/// Records what one delivery (or a migration) did: its writes in the table, its timers and
/// outputs; every byte into the state hash.
pub(super) fn record_effects(
    data: &mut SmData,
    t: &mut Tables<'_>,
    index: u64,
    actor: ActorKind,
    effects: crate::actors::Effects,
    h: &mut blake3::Hasher,
) -> io::Result<()> {
    for (key, value) in &effects.writes {
        h.update(&(key.len() as u32).to_le_bytes());
        h.update(key);
        match value {
            Some(v) => {
                h.update(&(v.len() as u32).to_le_bytes());
                h.update(v);
                t.state
                    .insert(key.as_slice(), v.as_slice())
                    .map_err(STATE_DB.write())?;
            }
            None => {
                h.update(&u32::MAX.to_le_bytes());
                t.state.remove(key.as_slice()).map_err(STATE_DB.write())?;
            }
        }
    }
    for out in effects.outputs {
        h.update(&(out.len() as u32).to_le_bytes());
        h.update(&out);
        // The host checked every output decodes before accepting it.
        let Some(decoded) = sdk_codec::decode::<sdk::Output>(&out) else {
            continue;
        };
        match decoded {
            sdk::Output::Timer { at_ms, tag } => {
                let id = data.next_timer_id;
                data.next_timer_id += 1;
                let rec = TimerRecord {
                    actor,
                    due_ms: at_ms,
                    tag,
                };
                t.timers
                    .insert(
                        id,
                        codec::encode(&rec)
                            .map_err(STATE_DB.encode("state value"))?
                            .as_slice(),
                    )
                    .map_err(STATE_DB.write())?;
                data.timers.insert(id, rec);
                data.invalidate_status();
            }
            other => {
                if let sdk::Output::Relay(cmd) = &other
                    && let sdk::RelayId::Customer(c) = cmd.relay
                    && let Some(supplied) = data.customers.get_mut(&c.0)
                    && *supplied != cmd.closed
                {
                    *supplied = cmd.closed;
                    data.customers_stored = false;
                    data.invalidate_status();
                }
                if let sdk::Output::Ledger(l) = &other {
                    data.energy.on_ledger(l);
                }
                if let sdk::Output::Alarm(a) = &other {
                    if let Some(raised) = t.raised.as_mut() {
                        raised.push(out.clone());
                    }
                    // A repeat within the hour of a stored one is counted, not stored.
                    if !super::alarm_tally::admit(data, t, actor, a, h)? {
                        continue;
                    }
                }
                push_outbox(data, t, index, actor, &other, out)?;
            }
        }
    }
    Ok(())
}

fn hash_status(h: &mut blake3::Hasher, status: Status) {
    let (tag, code): (u8, i32) = match status {
        Status::Handled => (0, 0),
        Status::Rejected(c) => (1, c),
        Status::Trapped(TrapKind::OutOfFuel) => (2, 0),
        Status::Trapped(TrapKind::HostLimit) => (2, 1),
        Status::Trapped(TrapKind::Wasm) => (2, 2),
    };
    h.update(&[tag]);
    h.update(&code.to_le_bytes());
}

/// Hex form of a state hash, as shown by `status`.
pub fn hash_hex(h: &StateHash) -> String {
    h.iter().map(|b| format!("{b:02x}")).collect()
}
