//! Boards' own alarms, committed (`Body::BoardAlarms`): each report replaces its board's set
//! of active rules in the replicated state (a host key per board, hashed and snapshotted like
//! any state) and writes each raise and clear to the outbox as an `Alarm` record, so every
//! node's cockpit, `ghatta alarms` and the central see the same list and the same history.

use std::io;

use ghatta_actor_sdk as sdk;

use super::SmData;
use super::apply::{Tables, note_refusal, push_outbox};
use crate::actors::{ActorKind, ActorState};
use crate::raft::Receipt;
use crate::raft::board_alarms::{ActiveRule, BoardAlarms};
use crate::storage::STATE_DB;
use ghatta_proto::codec;

/// Host keys: this prefix and the board's id, big-endian (so boards list in id order).
const PREFIX: &[u8] = b"\xffhost/board-alarms/";

fn key(node: u64) -> Vec<u8> {
    let mut k = PREFIX.to_vec();
    k.extend_from_slice(&node.to_be_bytes());
    k
}

/// Applies board `origin`'s report at `index`.
pub(super) fn apply(
    data: &mut SmData,
    t: &mut Tables<'_>,
    index: u64,
    origin: u64,
    report: &BoardAlarms,
    receipt: &mut Receipt,
    h: &mut blake3::Hasher,
) -> io::Result<()> {
    h.update(b"board-alarms");
    if let Err(why) = report.check() {
        receipt.rejected += 1;
        note_refusal(receipt, 0, None, 0, &format!("board alarm report: {why}"));
        h.update(b"refused");
        return Ok(());
    }
    for c in &report.changes {
        let out = sdk::Output::Alarm(sdk::Alarm {
            code: if c.raised {
                sdk::AlarmCode::BoardRaised
            } else {
                sdk::AlarmCode::BoardCleared
            },
            node: Some(sdk::NodeId(origin)),
            subject: 0,
            value: i64::try_from(c.value).unwrap_or(i64::MAX),
            text: c.text.clone(),
        });
        let bytes = sdk::codec::encode(&out);
        h.update(&bytes);
        // Filed under balancing, the grid's actor: the record is the grid's, not an account's.
        push_outbox(data, t, index, ActorKind::Balancing, &out, bytes)?;
    }
    let value = if report.active.is_empty() {
        None
    } else {
        Some(codec::encode(&report.active).map_err(STATE_DB.encode("state value"))?)
    };
    let k = key(origin);
    if value.as_ref() != data.actor_state.map.get(&k) {
        super::modules::put(data, t, h, k, value)?;
    }
    receipt.handled += 1;
    Ok(())
}

/// Every board's active rules as last committed, by board id.
pub(crate) fn active(state: &ActorState) -> Vec<(u64, Vec<ActiveRule>)> {
    state
        .map
        .range(PREFIX.to_vec()..)
        .map_while(|(k, v)| {
            let id = k.strip_prefix(PREFIX)?;
            Some((id, v))
        })
        .filter_map(|(id, v)| {
            let id = u64::from_be_bytes(id.try_into().ok()?);
            Some((id, codec::decode::<Vec<ActiveRule>>(v).ok()?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::tests::{apply, entry, open, outbox};
    use super::*;
    use crate::raft::board_alarms::RuleChange;
    use crate::raft::{Body, Entry};

    const T0: u64 = 1_780_000_000_000;

    fn report(index: u64, origin: u64, r: BoardAlarms) -> Entry {
        let mut e = entry(index, T0 + index * 1_000, Body::BoardAlarms(r));
        if let openraft::EntryPayload::Normal(p) = &mut e.payload {
            p.origin = origin;
        }
        e
    }

    fn raised(rule: &str, since_ms: u64) -> ActiveRule {
        ActiveRule {
            rule: rule.into(),
            since_ms,
            text: format!("{rule} RAISED"),
        }
    }

    fn change(rule: &str, raised: bool) -> RuleChange {
        RuleChange {
            rule: rule.into(),
            raised,
            at_ms: T0,
            value: 48_500,
            text: format!("{rule} {}", if raised { "RAISED" } else { "cleared" }),
        }
    }

    fn codes(sm: &crate::state::StateMachine) -> Vec<(sdk::AlarmCode, Option<u64>)> {
        outbox(sm)
            .into_iter()
            .filter_map(|(_, _, o)| match o {
                sdk::Output::Alarm(a) => Some((a.code, a.node.map(|n| n.0))),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn every_replica_keeps_each_boards_raised_rules_and_the_history() {
        let (_a, a) = open();
        let (_b, b) = open();
        let entries = [
            report(
                1,
                2,
                BoardAlarms {
                    active: vec![raised("frequency_low", T0)],
                    changes: vec![change("frequency_low", true)],
                    dropped: 0,
                },
            ),
            report(
                2,
                3,
                BoardAlarms {
                    active: vec![raised("meter_silent", T0)],
                    changes: vec![change("meter_silent", true)],
                    dropped: 0,
                },
            ),
            // Board 2's rule clears.
            report(
                3,
                2,
                BoardAlarms {
                    active: vec![],
                    changes: vec![change("frequency_low", false)],
                    dropped: 0,
                },
            ),
        ];
        let ra = apply(&a, &entries);
        assert_eq!(ra, apply(&b, &entries));
        assert!(ra.iter().all(|r| r.handled == 1 && r.rejected == 0));
        assert_eq!(
            a.status().borrow().state_hash,
            b.status().borrow().state_hash
        );
        let active = a.board_alarms();
        assert_eq!(active, vec![(3, vec![raised("meter_silent", T0)])]);
        assert_eq!(active, b.board_alarms());
        assert_eq!(
            codes(&a),
            vec![
                (sdk::AlarmCode::BoardRaised, Some(2)),
                (sdk::AlarmCode::BoardRaised, Some(3)),
                (sdk::AlarmCode::BoardCleared, Some(2)),
            ]
        );
    }

    #[test]
    fn a_restarted_boards_first_report_clears_what_it_no_longer_sees() {
        let (_a, a) = open();
        apply(
            &a,
            &[report(
                1,
                2,
                BoardAlarms {
                    active: vec![raised("shedding", T0), raised("voltage_low", T0)],
                    changes: vec![],
                    dropped: 0,
                },
            )],
        );
        assert_eq!(a.board_alarms()[0].1.len(), 2);
        let hash = a.status().borrow().state_hash;
        // The board restarts: its rules start cleared, and its first report says so.
        apply(&a, &[report(2, 2, BoardAlarms::default())]);
        assert!(a.board_alarms().is_empty());
        assert_ne!(a.status().borrow().state_hash, hash);
    }

    #[test]
    fn a_report_past_the_limits_is_refused_and_changes_nothing() {
        let (_a, a) = open();
        let big = BoardAlarms {
            active: (0..40).map(|i| raised(&format!("r{i}"), T0)).collect(),
            changes: vec![change("r0", true)],
            dropped: 0,
        };
        let r = apply(&a, &[report(1, 2, big)]);
        assert_eq!((r[0].handled, r[0].rejected), (0, 1));
        assert!(r[0].refusals[0].text.contains("at most 32"), "{r:?}");
        assert!(a.board_alarms().is_empty());
        assert!(codes(&a).is_empty());
    }
}
