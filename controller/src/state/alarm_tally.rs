//! Repeated actor alarms counted, not stored again: one outbox record per (actor, code, node,
//! subject) and window of log time, the repeats tallied in replicated state and summed up in
//! one record when the window closes.
//!
//! Why: billing raises `UnknownAccount` for every read of a meter without an account, and a
//! meter is read every few seconds; stored each time, that is hundreds of outbox records an
//! hour, which fill the alarm history, the event log and the uplink to the central, and push
//! the alarms that matter out of `/alarms`. Only alarms actors raise are tallied: the host's
//! own (`ClockSkew`, `ActorDeploy`, `OutboxFolded`, board raises and clears) are rare by
//! construction and each one says something different.
//!
//! Deterministic on every replica: the tally lives in the actor state under a host key (so it
//! is hashed, stored and carried in snapshots like the log clock) and time is the entry's log
//! time, never a wall clock.

use std::collections::BTreeMap;
use std::io;

use ghatta_actor_sdk::{self as sdk, codec as sdk_codec};
use serde::{Deserialize, Serialize};

use super::SmData;
use super::apply::{Tables, push_outbox, put_host, remove_host};
use crate::actors::ActorKind;
use crate::storage::STATE_DB;
use ghatta_proto::codec;

/// Where the open tallies lie in the actor state, under the host's prefix (see
/// `apply::LOG_CLOCK_KEY`): no actor can reach it. One value per tally (this prefix and the
/// tally's key), so an alarm reads and writes one small value whatever else is tallied: a
/// grid where every read raises an alarm must not pay for the whole set on each one.
pub(crate) const ALARM_TALLY_PREFIX: &[u8] = b"\xffhost/alarm-tally/";
/// When the first open tally expires, log time in Unix ms, kept apart from the tallies so
/// that each applied entry reads one small value rather than scanning them.
pub(crate) const ALARM_TALLY_DUE_KEY: &[u8] = b"\xffhost/alarm-tally-due";

/// How long repeats of an alarm are counted against its stored record, log time in ms: an
/// hour, so a fault that goes on still reaches the outbox, and through it the central, at least
/// twice an hour (the record, then its tally), while a meter read every 5 s adds 2 records an
/// hour instead of 720.
pub const ALARM_REPEAT_WINDOW_MS: u64 = 60 * 60 * 1000;

/// Most alarms tallied at once. A tally is about 100 bytes of replicated state (its key, two
/// times, counts and the newest text, cut at [`TALLY_TEXT_BYTES_MAX`]), so 256 keep it under
/// 32 KiB, 0.2 % of the actor state's 16 MiB default; a 257th distinct alarm within an hour is
/// stored every time, as before tallying, rather than evicting a tally and losing its count.
pub const ALARM_TALLIES_MAX: usize = 256;

/// Bytes of an alarm's text a tally keeps for its summary: the actors' texts are short phrases
/// ("unknown customer"); a long one is cut at a character boundary.
pub const TALLY_TEXT_BYTES_MAX: usize = 160;

/// What identifies "the same alarm": the actor, the code (its sdk encoding: the code has no
/// serde form), the node and the subject (customer, feeder...). The value is not part of it:
/// a meter that keeps going backwards raises the same alarm with a new reading each time.
type TallyKey = (ActorKind, Vec<u8>, Option<u64>, u32);

/// Repeats of one stored alarm.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tally {
    /// Outbox sequence of the stored record the repeats are counted against.
    pub seq: u64,
    /// Log time of that record, Unix ms: the window runs from here.
    pub first_ms: u64,
    /// Log time of the newest repeat, Unix ms (`first_ms` while there is none).
    pub last_ms: u64,
    /// Repeats counted and not stored.
    pub repeats: u64,
    /// The newest repeat's value and text, for the summary.
    pub value: i64,
    /// (See `value`.)
    pub text: String,
}

fn tally_key(key: &TallyKey) -> io::Result<Vec<u8>> {
    let mut k = ALARM_TALLY_PREFIX.to_vec();
    k.extend(codec::encode(key).map_err(STATE_DB.encode("alarm tally key"))?);
    Ok(k)
}

/// The open tallies, in key order, with their full keys.
fn tallies(data: &SmData) -> impl Iterator<Item = (&Vec<u8>, Tally)> {
    data.actor_state
        .map
        .range(ALARM_TALLY_PREFIX.to_vec()..)
        .take_while(|(k, _)| k.starts_with(ALARM_TALLY_PREFIX))
        .filter_map(|(k, v)| Some((k, codec::decode::<Tally>(v).ok()?)))
}

/// Writes one tally, its key and value into the state hash.
fn put_tally(
    data: &mut SmData,
    t: &mut Tables<'_>,
    key: &[u8],
    tally: &Tally,
    h: &mut blake3::Hasher,
) -> io::Result<()> {
    h.update(key);
    put_host(data, t, key, b"alarm-tally", tally, h)
}

/// Moves the due time earlier to `at` if it is later or unset.
fn due_no_later_than(
    data: &mut SmData,
    t: &mut Tables<'_>,
    at: u64,
    h: &mut blake3::Hasher,
) -> io::Result<()> {
    if due_ms(data).is_none_or(|due| at < due) {
        put_host(data, t, ALARM_TALLY_DUE_KEY, b"alarm-tally-due", &at, h)?;
    }
    Ok(())
}

fn due_ms(data: &SmData) -> Option<u64> {
    data.actor_state
        .map
        .get(ALARM_TALLY_DUE_KEY)
        .and_then(|v| codec::decode::<u64>(v).ok())
}

fn cut(text: &str) -> String {
    let mut end = text.len().min(TALLY_TEXT_BYTES_MAX);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_string()
}

/// Decides whether an alarm an actor raised at the current log time is stored (`true`: the
/// caller pushes it to the outbox at `data.next_out_seq`, which the tally then points at) or
/// counted as a repeat of the one stored within the window (`false`).
pub(super) fn admit(
    data: &mut SmData,
    t: &mut Tables<'_>,
    actor: ActorKind,
    alarm: &sdk::Alarm,
    h: &mut blake3::Hasher,
) -> io::Result<bool> {
    let now = data.log_time_ms;
    let key = tally_key(&(
        actor,
        sdk_codec::encode(&alarm.code),
        alarm.node.map(|n| n.0),
        alarm.subject,
    ))?;
    let found = data
        .actor_state
        .map
        .get(&key)
        .and_then(|v| codec::decode::<Tally>(v).ok());
    if let Some(mut y) = found.clone()
        && now < y.first_ms.saturating_add(ALARM_REPEAT_WINDOW_MS)
    {
        y.repeats += 1;
        y.last_ms = now;
        y.value = alarm.value;
        y.text = cut(&alarm.text);
        put_tally(data, t, &key, &y, h)?;
        return Ok(false);
    }
    // A new window. An expired tally under this key is replaced (`close_due` summed up its
    // repeats when its time came, before this entry's deliveries ran); otherwise a new tally
    // needs room.
    let open = data
        .actor_state
        .map
        .range(ALARM_TALLY_PREFIX.to_vec()..)
        .take_while(|(k, _)| k.starts_with(ALARM_TALLY_PREFIX))
        .take(ALARM_TALLIES_MAX)
        .count();
    if found.is_some() || open < ALARM_TALLIES_MAX {
        let y = Tally {
            seq: data.next_out_seq,
            first_ms: now,
            last_ms: now,
            repeats: 0,
            value: alarm.value,
            text: cut(&alarm.text),
        };
        put_tally(data, t, &key, &y, h)?;
        due_no_later_than(data, t, now.saturating_add(ALARM_REPEAT_WINDOW_MS), h)?;
    }
    Ok(true)
}

/// Closes the tallies whose window ended by the current log time: each with repeats becomes
/// one summary record in the outbox (the same code, node and subject, the newest value, and
/// a text giving the count and the span). Called for every proposal before its deliveries; it
/// reads one small value while nothing is due.
pub(super) fn close_due(
    data: &mut SmData,
    t: &mut Tables<'_>,
    index: u64,
    h: &mut blake3::Hasher,
) -> io::Result<()> {
    let now = data.log_time_ms;
    if due_ms(data).is_none_or(|due| now < due) {
        return Ok(());
    }
    let mut expired = Vec::new();
    let mut next_due: Option<u64> = None;
    for (key, y) in tallies(data) {
        let ends = y.first_ms.saturating_add(ALARM_REPEAT_WINDOW_MS);
        if now < ends {
            next_due = Some(next_due.map_or(ends, |d| d.min(ends)));
        } else {
            expired.push((key.clone(), y));
        }
    }
    match next_due {
        Some(due) => put_host(data, t, ALARM_TALLY_DUE_KEY, b"alarm-tally-due", &due, h)?,
        None => remove_host(data, t, ALARM_TALLY_DUE_KEY, b"alarm-tally-due-none", h)?,
    }
    for (key, y) in expired {
        h.update(&key);
        remove_host(data, t, &key, b"alarm-tally-expired", h)?;
        if y.repeats == 0 {
            continue;
        }
        let Some((actor, code, node, subject)) = key
            .get(ALARM_TALLY_PREFIX.len()..)
            .and_then(|k| codec::decode::<TallyKey>(k).ok())
        else {
            continue;
        };
        let Some(code) = sdk_codec::decode::<sdk::AlarmCode>(&code) else {
            continue;
        };
        let out = sdk::Output::Alarm(sdk::Alarm {
            code,
            node: node.map(sdk::NodeId),
            subject,
            value: y.value,
            text: summary_text(&y),
        });
        let bytes = sdk_codec::encode(&out);
        h.update(b"alarm-tally-closed");
        h.update(&bytes);
        push_outbox(data, t, index, actor, &out, bytes)?;
    }
    Ok(())
}

/// The text of a closed tally's record: what repeated, how often, over what span, and where
/// the first one is.
fn summary_text(y: &Tally) -> String {
    let span_min = y.last_ms.saturating_sub(y.first_ms) / 60_000;
    format!(
        "{}: {} more time{} within {span_min} min of the alarm at outbox seq {}, counted, \
         not stored each time",
        y.text,
        y.repeats,
        if y.repeats == 1 { "" } else { "s" },
        y.seq
    )
}

/// The open tally counted against the stored alarm at outbox `seq`, if any (the admin API's
/// `/alarms` shows its count and last time beside the record).
pub(crate) fn open_tallies(data: &SmData) -> BTreeMap<u64, Tally> {
    tallies(data)
        .map(|(_, y)| y)
        .filter(|y| y.repeats > 0)
        .map(|y| (y.seq, y))
        .collect()
}

#[cfg(test)]
mod tests {
    use ghatta_actor_sdk as sdk;

    use super::ALARM_REPEAT_WINDOW_MS;
    use crate::raft::Entry;
    use crate::state::tests::{applied, apply, entry, inputs, open};

    const T0: u64 = 1_700_000_000_000;
    /// How often a field loop reads a meter (`[field] meter_interval_ms`'s order).
    const READ_EVERY_MS: u64 = 5_000;
    /// A meter with no account.
    const STRANGER: u32 = 99;

    fn read_of(customer: u32, total_wh: u64, at_ms: u64) -> sdk::Input {
        sdk::Input::MeterRead(sdk::MeterRead {
            customer: sdk::CustomerId(customer),
            total_wh,
            read_at_ms: at_ms,
        })
    }

    fn unknown_account_alarms(
        sm: &crate::state::StateMachine,
    ) -> Vec<crate::state::CommittedAlarm> {
        let found = sm.recent_alarms(1_000).expect("alarms");
        assert!(found.whole_outbox);
        found
            .alarms
            .into_iter()
            .filter(|a| a.alarm.code == sdk::AlarmCode::UnknownAccount)
            .collect()
    }

    /// Regression: every read of an unregistered meter stored an `UnknownAccount` alarm, 720
    /// an hour from one meter read every 5 s, filling the alarm history and the uplink.
    #[test]
    fn an_unknown_meter_read_every_5_s_for_an_hour_is_one_alarm_with_a_count() {
        let (_dir, sm) = applied(T0, vec![vec![crate::state::tests::prepaid(1, 0)]]);
        let (_dir2, replica) = applied(T0, vec![vec![crate::state::tests::prepaid(1, 0)]]);
        let first_index = 3;
        let start = T0 + 20 * 60_000;
        let reads_in_window = ALARM_REPEAT_WINDOW_MS / READ_EVERY_MS;
        let entries: Vec<Entry> = (0..reads_in_window)
            .map(|i| {
                let at = start + i * READ_EVERY_MS;
                entry(
                    first_index + i,
                    at,
                    inputs(vec![read_of(STRANGER, 1_000 + i, at)]),
                )
            })
            .collect();
        let receipts = apply(&sm, &entries);
        assert!(
            receipts.iter().all(|r| r.rejected == 1),
            "each read refused"
        );
        apply(&replica, &entries);

        let alarms = unknown_account_alarms(&sm);
        assert_eq!(alarms.len(), 1, "one stored alarm for the hour");
        assert_eq!(alarms[0].alarm.subject, STRANGER);
        assert_eq!(alarms[0].repeats, reads_in_window - 1);
        assert_eq!(
            alarms[0].last_repeat_ms,
            Some(start + (reads_in_window - 1) * READ_EVERY_MS)
        );

        // The next read is past the hour: the tally closes into one record with its count,
        // and the read is stored as the first of a new hour.
        let at = start + reads_in_window * READ_EVERY_MS;
        let next = entry(
            first_index + reads_in_window,
            at,
            inputs(vec![read_of(STRANGER, 5_000, at)]),
        );
        apply(&sm, std::slice::from_ref(&next));
        apply(&replica, std::slice::from_ref(&next));
        let alarms = unknown_account_alarms(&sm);
        assert_eq!(alarms.len(), 3, "first, summary, new hour's first");
        let summary = &alarms[1];
        assert!(
            summary
                .alarm
                .text
                .contains(&format!("{} more times", reads_in_window - 1)),
            "{}",
            summary.alarm.text
        );
        assert_eq!((alarms[0].repeats, summary.repeats), (0, 0));
        assert_eq!(sm.lock().hash, replica.lock().hash, "replicas agree");
    }

    /// A second meter's alarm, a different code or a known customer's reads are not repeats.
    #[test]
    fn different_subjects_are_tallied_apart_and_an_alarm_alone_leaves_nothing_open() {
        let (_dir, sm) = open();
        let entries: Vec<Entry> = (0..6u64)
            .map(|i| {
                let at = T0 + i * READ_EVERY_MS;
                entry(
                    i + 1,
                    at,
                    inputs(vec![read_of(98 + (i % 2) as u32, 1_000 + i, at)]),
                )
            })
            .collect();
        apply(&sm, &entries);
        let alarms = unknown_account_alarms(&sm);
        let mut seen: Vec<(u32, u64)> = alarms
            .iter()
            .map(|a| (a.alarm.subject, a.repeats))
            .collect();
        seen.sort();
        assert_eq!(seen, vec![(98, 2), (99, 2)]);

        // Hours later one more alarm: nothing sums up the old tallies twice, and a lone
        // alarm leaves no due time behind once its hour passed.
        let late = T0 + 3 * ALARM_REPEAT_WINDOW_MS;
        apply(
            &sm,
            &[entry(7, late, inputs(vec![read_of(98, 2_000, late)]))],
        );
        let after = unknown_account_alarms(&sm);
        assert_eq!(after.len(), 2 + 2 + 1, "two firsts, two summaries, one new");
        let later = late + 2 * ALARM_REPEAT_WINDOW_MS;
        apply(&sm, &[entry(8, later, inputs(vec![]))]);
        let data = sm.lock();
        assert!(
            !data
                .actor_state
                .map
                .contains_key(super::ALARM_TALLY_DUE_KEY),
            "no repeats, nothing due"
        );
    }
}
