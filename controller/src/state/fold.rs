//! Outbox folding: the outbox (and so every snapshot) stays bounded without a central.
//!
//! `prune.rs` deletes only what a central acknowledged, so a grid without `[wan]`, or whose
//! satellite link is down for a season, kept every record it ever wrote (ARCHITECTURE.md,
//! `state/`; BENCHMARKS.md, "Bounded without the WAN", for the rate). Here a record that no
//! central acknowledged is **folded** once it is older than [`OUTBOX_DETAIL_DAYS`] of log
//! time: it is deleted and its numbers are added into an `Output::Folded` record per subject
//! (customer, feeder, plant, or the grid) and local day, appended to the outbox, so what the
//! central receives when the link comes back still adds up: a customer's billed energy and
//! money, credits, held energy and ledger-line count, a feeder's or plant's energy, the grid's
//! alarms and relay commands. An `OutboxFolded` alarm (the cockpit's event log, `ghatta
//! alarms`, the events stream) says so, once per local day that folds.
//!
//! **Kept as they are**: pinned records (`prune.rs`: the newest relay command, set-point and
//! ledger line per key, which a field loop may need however old), folded records themselves
//! (never folded twice; `prune.rs` deletes them once acknowledged), and records that do not
//! decode. A pinned record superseded after its day was folded stays as detail (it was never
//! counted in a folded record) until a central acknowledges it.
//!
//! **Acknowledged records** (below their own stream's cursor) past the window are deleted
//! without being counted: the central has them (`prune.rs` waits for every stream's cursor).
//!
//! **Deterministic.** A pass runs when an hour of energy closes (as pruning does), from
//! replicated state and log time only; its cursor, the WAN cursors it last saw and its alarm
//! day live in the actor state under a host key ([`FOLD_KEY`]), so they are hashed and
//! carried in snapshots. A pass examines at most [`FOLD_PER_APPLY_MAX`] records; the rest
//! follow at the next hour. A pass that finds detail due while the WAN cursors moved since the
//! last pass waits an hour instead: acknowledgements are flowing, the uploader is catching up,
//! and folding a record already on its way would count it twice at the central.
//!
//! **Why 7 days, a constant and not a node.toml key**: replicas with different windows would
//! fold different records and part (as `logtime::LOG_TIME_STEP_MS`). A gateway is expected
//! to buffer at least 48 h offline (DOMAIN.md, Victron CCGX) and a satellite outage lasts hours
//! (DOMAIN.md); a week keeps every record through three times that, and bounds the outbox at a
//! week of detail plus the folded days (BENCHMARKS.md, "Bounded without the WAN").

use std::collections::{BTreeMap, BTreeSet};
use std::io;

use ghatta_actor_sdk::{self as sdk, codec as sdk_codec};
use ghatta_proto::outbox::Stream;
use redb::ReadableTable;
use serde::{Deserialize, Serialize};

use super::apply::{Tables, push_outbox};
use super::energy::HOUR_MS;
use super::{OutboxRecord, SmData};
use crate::actors::ActorKind;
use crate::storage::STATE_DB;
use ghatta_proto::codec;

/// Days of log time an unacknowledged outbox record is kept as detail (see the module docs).
pub const OUTBOX_DETAIL_DAYS: u64 = 7;
/// One day, ms.
pub const DAY_MS: u64 = 24 * HOUR_MS;
/// Most outbox records one pass examines: a day of a 300-customer grid is a few ten thousand
/// records, and decoding that many in one apply would stall the state machine on a small
/// board; a pass per hour catches up with a day's worth in a few hours.
pub const FOLD_PER_APPLY_MAX: usize = 16_384;
/// Where [`FoldState`] lies in the actor state (the host's prefix, as `apply::LOG_CLOCK_KEY`).
pub(crate) const FOLD_KEY: &[u8] = b"\xffhost/fold";

/// The fold's replicated bookkeeping.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct FoldState {
    /// Every record below this sequence was folded or is kept: the next pass starts here.
    pub from_seq: u64,
    /// The WAN cursors when a pass last found detail due (see the module docs).
    pub acks_seen: BTreeMap<u32, u64>,
    /// Records folded (or deleted as acknowledged) since genesis.
    pub folded_total: u64,
    /// The local day (days since 1970, local time) of the last `OutboxFolded` alarm.
    pub alarm_day: Option<u64>,
}

/// The start, in log time, of the local day under `utc_offset_min` that holds `t_ms`.
pub(crate) fn local_day_start(t_ms: u64, utc_offset_min: i32) -> u64 {
    let off = i128::from(utc_offset_min) * 60_000;
    let local = i128::from(t_ms) + off;
    let start = local - local.rem_euclid(i128::from(DAY_MS)) - off;
    u64::try_from(start.max(0)).unwrap_or(u64::MAX)
}

/// The fold's state, from the actor state (the default when absent).
pub(crate) fn state(data: &SmData) -> FoldState {
    data.actor_state
        .map
        .get(FOLD_KEY)
        .and_then(|v| codec::decode(v).ok())
        .unwrap_or_default()
}

fn put_state(
    data: &mut SmData,
    t: &mut Tables<'_>,
    st: &FoldState,
    h: &mut blake3::Hasher,
) -> io::Result<()> {
    super::apply::put_host(data, t, FOLD_KEY, b"fold-state", st, h)
}

/// What one record adds to its subject's day; `None` for a record that is kept.
fn fold_key(
    rec: &OutboxRecord,
    out: &sdk::Output,
    utc_offset_min: i32,
) -> Option<((u64, i32, sdk::FoldSubject), sdk::FoldTotals)> {
    let mut t = sdk::FoldTotals {
        records: 1,
        ..Default::default()
    };
    let day = |at_ms: u64, off: i32| (local_day_start(at_ms, off), off);
    let energy_subject = |s: sdk::EnergySubject| match s {
        sdk::EnergySubject::Customer(c) => sdk::FoldSubject::Customer(c),
        sdk::EnergySubject::Feeder { node, feeder } => sdk::FoldSubject::Feeder { node, feeder },
        sdk::EnergySubject::Plant(n) => sdk::FoldSubject::Plant(n),
    };
    let ((day_ms, off), subject) = match out {
        // Set-up is kept whole: the charges after a fold are billed by it.
        sdk::Output::Folded(_)
        | sdk::Output::Timer { .. }
        | sdk::Output::TariffSet(_)
        | sdk::Output::BillingConfigSet(_) => return None,
        sdk::Output::EnergyLocal {
            hour,
            utc_offset_min,
        } => {
            t.energy_wh = hour.energy_wh;
            (
                day(hour.hour_start_ms, *utc_offset_min),
                energy_subject(hour.subject),
            )
        }
        sdk::Output::EnergyHour(hour) => {
            t.energy_wh = hour.energy_wh;
            (day(hour.hour_start_ms, 0), energy_subject(hour.subject))
        }
        sdk::Output::Ledger(l) => {
            t.ledger_lines = 1;
            match l.kind {
                sdk::LedgerKind::Account(_) => return None,
                sdk::LedgerKind::Charge {
                    energy_wh,
                    amount_mpaisa,
                    ..
                }
                | sdk::LedgerKind::ChargeRead {
                    energy_wh,
                    amount_mpaisa,
                    ..
                } => {
                    t.charged_wh = energy_wh;
                    t.charged_mpaisa = amount_mpaisa;
                }
                sdk::LedgerKind::Fee { amount_mpaisa } => t.fees_mpaisa = amount_mpaisa,
                sdk::LedgerKind::TopUp { amount_mpaisa, .. }
                | sdk::LedgerKind::OperatorCredit { amount_mpaisa, .. }
                | sdk::LedgerKind::TokenCredit { amount_mpaisa, .. } => {
                    t.credited_mpaisa = amount_mpaisa
                }
                sdk::LedgerKind::Held { energy_wh, .. }
                | sdk::LedgerKind::HeldRead { energy_wh, .. } => t.held_wh = energy_wh,
                sdk::LedgerKind::Disconnect { .. }
                | sdk::LedgerKind::Reconnect { .. }
                | sdk::LedgerKind::MeterReplaced { .. }
                | sdk::LedgerKind::Baseline { .. }
                | sdk::LedgerKind::ReadRejected { .. } => {}
            }
            (
                day(rec.time_ms, utc_offset_min),
                sdk::FoldSubject::Customer(l.customer),
            )
        }
        sdk::Output::Relay(cmd) => {
            t.relay_commands = 1;
            let subject = match cmd.relay {
                sdk::RelayId::Customer(c) => sdk::FoldSubject::Customer(c),
                _ => sdk::FoldSubject::Grid,
            };
            (day(rec.time_ms, utc_offset_min), subject)
        }
        sdk::Output::Alarm(_) => {
            t.alarms = 1;
            (day(rec.time_ms, utc_offset_min), sdk::FoldSubject::Grid)
        }
        sdk::Output::BallastSetpoint { .. } => {
            (day(rec.time_ms, utc_offset_min), sdk::FoldSubject::Grid)
        }
    };
    Some(((day_ms, off, subject), t))
}

fn add(a: &mut sdk::FoldTotals, b: &sdk::FoldTotals) {
    a.records = a.records.saturating_add(b.records);
    a.energy_wh = a.energy_wh.saturating_add(b.energy_wh);
    a.ledger_lines = a.ledger_lines.saturating_add(b.ledger_lines);
    a.charged_wh = a.charged_wh.saturating_add(b.charged_wh);
    a.charged_mpaisa = a.charged_mpaisa.saturating_add(b.charged_mpaisa);
    a.fees_mpaisa = a.fees_mpaisa.saturating_add(b.fees_mpaisa);
    a.credited_mpaisa = a.credited_mpaisa.saturating_add(b.credited_mpaisa);
    a.held_wh = a.held_wh.saturating_add(b.held_wh);
    a.alarms = a.alarms.saturating_add(b.alarms);
    a.relay_commands = a.relay_commands.saturating_add(b.relay_commands);
}

/// Whether a central acknowledged `seq` on a stream that carries `rec`.
fn acked(data: &SmData, rec: &OutboxRecord, seq: u64) -> bool {
    Stream::ALL
        .iter()
        .any(|s| data.outbox_acks.get(&s.id()).is_some_and(|c| seq < *c) && s.carries(rec))
}

/// One pass: fold what is older than the window (see the module docs) while applying entry
/// `index`, under the grid's offset `utc_offset_min`. Returns the records folded.
pub(super) fn fold(
    data: &mut SmData,
    t: &mut Tables<'_>,
    index: u64,
    utc_offset_min: i32,
    h: &mut blake3::Hasher,
) -> io::Result<usize> {
    let horizon_ms = local_day_start(
        data.log_time_ms.saturating_sub(OUTBOX_DETAIL_DAYS * DAY_MS),
        utc_offset_min,
    );
    let mut st = state(data);
    // Nothing due: no write, no hash (the common case, every hour of a grid with a central).
    let due = match t
        .outbox
        .range(st.from_seq..)
        .map_err(STATE_DB.read())?
        .next()
    {
        None => false,
        Some(item) => {
            let (_, v) = item.map_err(STATE_DB.read())?;
            let rec: OutboxRecord = codec::decode(v.value()).map_err(STATE_DB.corrupt("outbox"))?;
            rec.time_ms < horizon_ms
        }
    };
    if !due {
        return Ok(0);
    }
    if st.acks_seen != data.outbox_acks {
        st.acks_seen = data.outbox_acks.clone();
        put_state(data, t, &st, h)?;
        return Ok(0);
    }
    let pinned: BTreeSet<u64> = data.pins.values().copied().collect();
    let mut sums: BTreeMap<(u64, i32, sdk::FoldSubject), sdk::FoldTotals> = BTreeMap::new();
    let mut doomed = Vec::new();
    let mut counted = 0usize;
    let mut next_from = None;
    for (examined, item) in t
        .outbox
        .range(st.from_seq..)
        .map_err(STATE_DB.read())?
        .enumerate()
    {
        let (k, v) = item.map_err(STATE_DB.read())?;
        let seq = k.value();
        let rec: OutboxRecord = codec::decode(v.value()).map_err(STATE_DB.corrupt("outbox"))?;
        if rec.time_ms >= horizon_ms || examined >= FOLD_PER_APPLY_MAX {
            next_from = Some(seq);
            break;
        }
        if pinned.contains(&seq) {
            continue;
        }
        let Some(out) = sdk_codec::decode::<sdk::Output>(&rec.output) else {
            continue;
        };
        let Some((key, totals)) = fold_key(&rec, &out, utc_offset_min) else {
            continue;
        };
        if !acked(data, &rec, seq) {
            add(sums.entry(key).or_default(), &totals);
            counted += 1;
        }
        doomed.push(seq);
    }
    let first_seq = st.from_seq;
    let end_seq = next_from.unwrap_or(data.next_out_seq);
    for seq in &doomed {
        t.outbox.remove(*seq).map_err(STATE_DB.write())?;
    }
    data.outbox_records = data.outbox_records.saturating_sub(doomed.len() as u64);
    st.from_seq = end_seq;
    st.folded_total += doomed.len() as u64;
    h.update(b"outbox-folded");
    h.update(&first_seq.to_le_bytes());
    h.update(&end_seq.to_le_bytes());
    h.update(&(doomed.len() as u64).to_le_bytes());
    let mut newest_day = None;
    for ((day_start_ms, off, subject), totals) in sums {
        let local_day = (day_start_ms as i128 + i128::from(off) * 60_000) / i128::from(DAY_MS);
        newest_day = newest_day.max(u64::try_from(local_day).ok());
        let actor = match subject {
            sdk::FoldSubject::Customer(_) => ActorKind::Billing,
            _ => ActorKind::Balancing,
        };
        let out = sdk::Output::Folded(sdk::FoldedDay {
            day_start_ms,
            utc_offset_min: off,
            subject,
            first_seq,
            end_seq,
            totals,
        });
        let bytes = sdk_codec::encode(&out);
        h.update(&bytes);
        push_outbox(data, t, index, actor, &out, bytes)?;
    }
    let today =
        (data.log_time_ms as i128 + i128::from(utc_offset_min) * 60_000) / i128::from(DAY_MS);
    let today = u64::try_from(today).unwrap_or(0);
    if counted > 0 && st.alarm_day != Some(today) {
        st.alarm_day = Some(today);
        let out = sdk::Output::Alarm(sdk::Alarm {
            code: sdk::AlarmCode::OutboxFolded,
            node: None,
            subject: u32::try_from(newest_day.unwrap_or(0)).unwrap_or(u32::MAX),
            value: counted as i64,
            text: format!(
                "{counted} outbox records older than {OUTBOX_DETAIL_DAYS} days that no central \
                 acknowledged were folded into daily totals (ledger sums, energy, counts per \
                 customer, feeder and day): their detail is gone from this grid; configure or \
                 restore the [wan] link so the central receives records before they are folded"
            ),
        });
        let bytes = sdk_codec::encode(&out);
        h.update(b"fold-alarm");
        h.update(&bytes);
        push_outbox(data, t, index, ActorKind::Balancing, &out, bytes)?;
    }
    put_state(data, t, &st, h)?;
    Ok(doomed.len())
}
