//! A month of a grid without a central: detail older than the window is folded into daily
//! totals that keep the billing sums, identically on replicas that batch differently or
//! start from a snapshot, and the outbox stays bounded.

use std::collections::BTreeMap;

use ghatta_actor_sdk as sdk;

use super::fold::{DAY_MS, OUTBOX_DETAIL_DAYS, local_day_start};
use super::tests::{apply, entry, grid_batch, grid_setup, inputs, open, outbox};
use super::*;
use crate::raft::{Body, Entry};

const CUSTOMERS: u32 = 6;
const STEP_MS: u64 = 30 * 60_000;
/// Nepal's offset, the grid's committed one (`grid_setup`).
const OFF_MIN: i32 = 345;

/// `days` of a grid: setup, then every 30 minutes a telemetry sample and a meter read per
/// customer, and at noon of every third day an operator's credit to customer 1.
fn month(t0: u64, days: u64) -> Vec<Entry> {
    let mut entries = vec![entry(1, t0, inputs(grid_setup(CUSTOMERS)))];
    for k in 1..(days * DAY_MS / STEP_MS) {
        let mut v = grid_batch(CUSTOMERS, |c| k * 40 + u64::from(c) * (k % 3));
        if k % (3 * DAY_MS / STEP_MS) == 24 {
            v.push(sdk::Input::TopUp(sdk::TopUp {
                customer: sdk::CustomerId(1),
                token_id: k,
                amount_mpaisa: 7_000_000,
            }));
        }
        entries.push(entry(entries.len() as u64 + 1, t0 + k * STEP_MS, inputs(v)));
    }
    entries
}

/// A customer's sums: (charged Wh, charged mpaisa, credited mpaisa, energy-hour Wh, lines).
type Sums = (u64, i64, i64, u64, u64);

fn add_detail(sums: &mut BTreeMap<(u32, u64), Sums>, rec: &OutboxRecord, o: &sdk::Output) {
    let day = |t: u64| local_day_start(t, OFF_MIN);
    match o {
        sdk::Output::Ledger(l) => {
            let s = sums.entry((l.customer.0, day(rec.time_ms))).or_default();
            s.4 += 1;
            match l.kind {
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
                    s.0 += energy_wh;
                    s.1 += amount_mpaisa;
                }
                sdk::LedgerKind::TopUp { amount_mpaisa, .. }
                | sdk::LedgerKind::OperatorCredit { amount_mpaisa, .. }
                | sdk::LedgerKind::TokenCredit { amount_mpaisa, .. } => s.2 += amount_mpaisa,
                _ => {}
            }
        }
        sdk::Output::EnergyLocal { hour, .. } => {
            if let sdk::EnergySubject::Customer(c) = hour.subject {
                sums.entry((c.0, day(hour.hour_start_ms))).or_default().3 += hour.energy_wh;
            }
        }
        _ => {}
    }
}

#[test]
fn a_month_without_a_central_folds_old_detail_into_days_that_keep_the_billing_totals() {
    // A local midnight in Nepal.
    let t0 = local_day_start(20_000 * DAY_MS, OFF_MIN) + DAY_MS;
    let days = 30;
    let entries = month(t0, days);
    let (_d1, a) = open();
    let (_d2, b) = open();
    // What every record said when it was written (before any fold could reach it).
    let mut emitted: BTreeMap<(u32, u64), Sums> = BTreeMap::new();
    let mut seen = 0;
    let mut peak_records = 0;
    let mut snap_mid = None;
    for (n, chunk) in entries.chunks(48).enumerate() {
        apply(&a, chunk);
        for (seq, rec) in a.outbox_from(seen, usize::MAX).expect("outbox") {
            let o: sdk::Output = sdk::codec::decode(&rec.output).expect("decodes");
            if !matches!(o, sdk::Output::Folded(_)) {
                add_detail(&mut emitted, &rec, &o);
            }
            seen = seq + 1;
        }
        let records = outbox(&a).len() as u64;
        assert_eq!(
            a.status().borrow().outbox_len,
            records,
            "the status counts the outbox"
        );
        peak_records = peak_records.max(records);
        if n == 15 {
            let data = a.lock();
            snap_mid = Some(snapshot::build(&a.db, &data, None).expect("snapshot"));
        }
    }
    // Another replica in other batches, a third from the snapshot of day 15 on.
    for chunk in entries.chunks(17) {
        apply(&b, chunk);
    }
    let (_d3, c) = open();
    let snap = snap_mid.expect("a snapshot at day 15");
    {
        let mut data = c.lock();
        snapshot::install(&c.db, &mut data, &snap.meta, &snap.snapshot, None).expect("install");
        c.publish(&data);
    }
    let from = snap.meta.last_log_id.expect("an index").index() as usize;
    apply(&c, &entries[from..]);
    assert_eq!(
        a.lock().hash,
        b.lock().hash,
        "folding diverged between replicas"
    );
    assert_eq!(
        a.lock().hash,
        c.lock().hash,
        "a replica from a snapshot diverged"
    );
    let out = outbox(&a);
    assert_eq!(
        out.iter()
            .map(|(s, r, _)| (*s, r.clone()))
            .collect::<Vec<_>>(),
        outbox(&c)
            .into_iter()
            .map(|(s, r, _)| (s, r))
            .collect::<Vec<_>>()
    );

    // What the outbox holds now adds up to what was written: detail plus folded days.
    let mut now: BTreeMap<(u32, u64), Sums> = BTreeMap::new();
    let mut folded_records = 0;
    let mut alarms = 0;
    let horizon = local_day_start(a.lock().log_time_ms - OUTBOX_DETAIL_DAYS * DAY_MS, OFF_MIN);
    let pinned: std::collections::BTreeSet<u64> = a.lock().pins.values().copied().collect();
    for (seq, rec, o) in &out {
        match o {
            sdk::Output::Folded(f) => {
                folded_records += 1;
                assert_eq!(f.utc_offset_min, OFF_MIN);
                assert!(f.first_seq < f.end_seq && f.end_seq <= *seq);
                if f.subject == sdk::FoldSubject::Grid {
                    // The only alarms of this grid are the fold's own.
                    alarms += f.totals.alarms as usize;
                }
                if let sdk::FoldSubject::Customer(cu) = f.subject {
                    let s = now.entry((cu.0, f.day_start_ms)).or_default();
                    s.0 += f.totals.charged_wh;
                    s.1 += f.totals.charged_mpaisa;
                    s.2 += f.totals.credited_mpaisa;
                    s.3 += f.totals.energy_wh;
                    s.4 += u64::from(f.totals.ledger_lines);
                }
            }
            sdk::Output::Alarm(al) if al.code == sdk::AlarmCode::OutboxFolded => {
                alarms += 1;
                add_detail(&mut now, rec, o);
            }
            _ => {
                // Detail older than the window survives only pinned, or as billing's set-up
                // (tariffs, configurations, account lines), which is never folded.
                let setup = matches!(
                    o,
                    sdk::Output::TariffSet(_)
                        | sdk::Output::BillingConfigSet(_)
                        | sdk::Output::Ledger(sdk::LedgerRecord {
                            kind: sdk::LedgerKind::Account(_),
                            ..
                        })
                );
                assert!(
                    rec.time_ms >= horizon || pinned.contains(seq) || setup,
                    "unfolded old record {seq}: {o:?}"
                );
                add_detail(&mut now, rec, o);
            }
        }
    }
    assert!(folded_records > 0, "a month offline must fold");
    assert_eq!(
        alarms,
        (days - OUTBOX_DETAIL_DAYS - 1) as usize,
        "one alarm per local day that folded (those older than the window folded too)"
    );
    let credited: i64 = emitted.values().map(|s| s.2).sum();
    assert_eq!(credited, 10 * 7_000_000, "the test credits every third day");
    assert_eq!(
        now, emitted,
        "billing totals per customer and local day changed by folding"
    );

    // Bounded: at most the window's days of detail (plus the open day) and the folded days.
    let per_day = peak_records_per_day(&emitted);
    let bound = (OUTBOX_DETAIL_DAYS + 2) * per_day + folded_records;
    assert!(
        (out.len() as u64) <= bound,
        "{} records kept, bound {bound}",
        out.len()
    );
    assert!(
        peak_records <= bound + per_day,
        "peak {peak_records}, bound {bound}"
    );
}

/// Outbox records a day of the month's grid writes: its ledger lines and energy hours (each
/// customer's), its plant and feeder hours.
fn peak_records_per_day(emitted: &BTreeMap<(u32, u64), Sums>) -> u64 {
    let mut per_day: BTreeMap<u64, u64> = BTreeMap::new();
    for ((_, day), s) in emitted {
        *per_day.entry(*day).or_default() += s.4 + 24;
    }
    per_day.values().copied().max().unwrap_or(0) + 2 * 24 + 8
}

/// While the WAN cursors move, a pass that finds detail due waits an hour: acknowledgements
/// are flowing, and a record already on its way must not be counted twice at the central.
#[test]
fn a_pass_waits_an_hour_while_acknowledgements_flow() {
    let t0 = local_day_start(20_000 * DAY_MS, OFF_MIN) + DAY_MS;
    let all = month(t0, OUTBOX_DETAIL_DAYS + 3);
    let time_of = |e: &Entry| match &e.payload {
        openraft::EntryPayload::Normal(p) => p.time_ms,
        _ => 0,
    };
    // Up to a local midnight that makes a day's detail due, an ack in between.
    let midnight = t0 + (OUTBOX_DETAIL_DAYS + 2) * DAY_MS;
    let cut = all
        .iter()
        .position(|e| time_of(e) >= midnight)
        .expect("entries past the midnight");
    let mut entries: Vec<Entry> = all[..cut].to_vec();
    entries.push(entry(
        cut as u64 + 1,
        time_of(&all[cut - 1]) + 60_000,
        Body::OutboxAck {
            stream: 0,
            upto_seq: 1,
        },
    ));
    for e in &all[cut..] {
        let openraft::EntryPayload::Normal(p) = &e.payload else {
            panic!("a normal entry")
        };
        entries.push(entry(entries.len() as u64 + 1, p.time_ms, p.body.clone()));
    }
    let (_d, a) = open();
    apply(&a, &entries[..=cut]);
    let before = fold::state(&a.lock());
    assert!(before.folded_total > 0, "days without a central folded");
    // The entry at midnight closes an hour: detail is due, but the cursor moved.
    apply(&a, &entries[cut + 1..cut + 2]);
    let waited = fold::state(&a.lock());
    assert_eq!(
        waited.folded_total, before.folded_total,
        "the pass did not wait"
    );
    assert_eq!(waited.acks_seen.get(&0), Some(&1));
    // An hour later with no new ack, it folds.
    apply(&a, &entries[cut + 2..cut + 5]);
    assert!(fold::state(&a.lock()).folded_total > before.folded_total);
}
