//! Meter replacement, backwards-read episodes and plausibility of reads.

use super::*;
use ghatta_actor_sdk::MeterReplace;
use ghatta_billing::clock::PLAUSIBLE_MARGIN_PCT_DEFAULT;
use ghatta_billing::{ALLOWANCE_WINDOW_MS, REGISTER_RESOLUTION_MWH};

/// Energy of every `Charge` and `Held` line, and the alarms, in `outputs`.
fn energy(outputs: &[Output]) -> (u64, u64) {
    let mut billed = 0;
    let mut held = 0;
    for o in outputs {
        match o {
            Output::Ledger(LedgerRecord {
                kind: LedgerKind::Charge { energy_wh, .. },
                ..
            }) => billed += energy_wh,
            Output::Ledger(LedgerRecord {
                kind: LedgerKind::Held { energy_wh, .. },
                ..
            }) => held += energy_wh,
            _ => {}
        }
    }
    (billed, held)
}

pub(crate) fn replace(
    w: &mut World,
    t: u64,
    id: CustomerId,
    new: u64,
    old: Option<u64>,
) -> Outcome {
    w.send(
        t,
        Input::MeterReplace(MeterReplace {
            customer: id,
            new_read_wh: new,
            old_final_wh: old,
        }),
    )
}

#[test]
fn a_meter_replaced_mid_day_bills_the_old_meters_final_delta_plus_the_new_meters_reads() {
    let mut w = World::new();
    w.customer(at(0, 9), ALICE, AccountMode::Postpaid, PER_KWH, 0);
    w.read(at(1, 0), ALICE, 1_000);
    let mut outputs = w.out();
    for (hour, wh) in [(2, 1_100), (5, 1_250)] {
        assert_eq!(w.read(at(1, hour), ALICE, wh), Outcome::Handled);
    }
    // The swap at 10:00: the new meter reads from 5 Wh before anyone tells billing. Its reads
    // are refused (below the baseline), with one alarm for the lot.
    for (hour, wh) in [(11, 12), (12, 20)] {
        assert_eq!(
            w.read(at(1, hour), ALICE, wh),
            Outcome::Rejected(RejectReason::NotMonotonic)
        );
    }
    // The technician's slip: the old meter ended at 1,300 Wh, the new one started at 5 Wh.
    assert_eq!(
        replace(&mut w, at(1, 13), ALICE, 5, Some(1_300)),
        Outcome::Handled
    );
    for (hour, wh) in [(15, 40), (23, 90)] {
        assert_eq!(w.read(at(1, hour), ALICE, wh), Outcome::Handled);
    }
    outputs.extend(w.out());
    let (billed, held) = energy(&outputs);
    assert_eq!(billed, (1_300 - 1_000) + (90 - 5), "to the Wh");
    assert_eq!(held, 0);
    assert_eq!(
        alarm_codes(&outputs),
        vec![(AlarmCode::MeterNotMonotonic, ALICE.0, 12)],
        "one alarm for the episode"
    );
    assert!(outputs.iter().any(|o| matches!(
        o,
        Output::Ledger(LedgerRecord {
            kind: LedgerKind::MeterReplaced {
                old_final_wh: 1_300,
                new_read_wh: 5
            },
            at_ms,
            ..
        }) if *at_ms == at(1, 13)
    )));
    // 385 Wh at 10 NPR/kWh.
    assert_eq!(w.credit(ALICE), -385 * NPR / 100);
}

#[test]
fn backwards_reads_raise_one_alarm_per_episode() {
    let mut w = World::new();
    w.customer(at(0, 9), ALICE, AccountMode::Postpaid, PER_KWH, 0);
    w.read(at(0, 10), ALICE, 500);
    w.out();
    let backwards = |w: &mut World, t: u64, wh: u64| {
        assert_eq!(
            w.read(t, ALICE, wh),
            Outcome::Rejected(RejectReason::NotMonotonic)
        );
        alarm_codes(&w.out()).len()
    };
    assert_eq!(backwards(&mut w, at(0, 11), 400), 1, "the episode's alarm");
    assert_eq!(backwards(&mut w, at(0, 12), 410), 0);
    assert_eq!(backwards(&mut w, at(0, 13), 100), 0);
    // Back at the baseline: monotonic again, the episode ends (an equal read bills nothing).
    assert_eq!(w.read(at(0, 14), ALICE, 500), Outcome::Handled);
    assert_eq!(alarm_codes(&w.out()), vec![]);
    assert_eq!(backwards(&mut w, at(0, 15), 499), 1, "a new episode");
    assert_eq!(backwards(&mut w, at(0, 16), 499), 0);
    // A replacement ends it too.
    assert_eq!(replace(&mut w, at(0, 17), ALICE, 0, None), Outcome::Handled);
    w.out();
    assert_eq!(w.read(at(0, 18), ALICE, 30), Outcome::Handled);
    assert_eq!(
        backwards(&mut w, at(0, 19), 10),
        1,
        "an episode after the replacement"
    );
    assert_eq!(w.credit(ALICE), -30 * NPR / 100);
}

#[test]
fn a_replacement_whose_final_read_is_below_the_billed_one_is_refused_and_changes_nothing() {
    let mut w = World::new();
    w.customer(at(0, 9), ALICE, AccountMode::Postpaid, PER_KWH, 0);
    w.read(at(0, 10), ALICE, 500);
    w.read(at(0, 11), ALICE, 700);
    w.out();
    let before = read_account(&w.host, ALICE).unwrap();
    assert_eq!(
        replace(&mut w, at(0, 12), ALICE, 0, Some(600)),
        Outcome::Rejected(RejectReason::Invalid)
    );
    assert_eq!(
        alarm_codes(&w.out()),
        vec![(AlarmCode::MeterNotMonotonic, ALICE.0, 600)]
    );
    assert_eq!(read_account(&w.host, ALICE).unwrap(), before);
    // Without the old meter's final read, nothing past the last read is billed.
    assert_eq!(replace(&mut w, at(0, 13), ALICE, 7, None), Outcome::Handled);
    let (billed, _) = energy(&w.out());
    assert_eq!(billed, 0);
    assert_eq!(read_account(&w.host, ALICE).unwrap().last_read_wh, Some(7));
    assert_eq!(
        replace(&mut w, at(0, 14), CustomerId(9), 0, None),
        Outcome::Rejected(RejectReason::Unknown)
    );
}

/// What a 250 W connection may bill at most after a full allowance, Wh.
fn full_allowance_wh() -> u64 {
    let rate_w = 250 * u64::from(PLAUSIBLE_MARGIN_PCT_DEFAULT) / 100;
    rate_w * ALLOWANCE_WINDOW_MS / 3_600_000 + (REGISTER_RESOLUTION_MWH / 1_000) as u64
}

#[test]
fn a_corrupted_register_jump_is_billed_up_to_the_bound_and_the_excess_held() {
    let mut w = World::new();
    w.customer(at(0, 9), ALICE, AccountMode::Postpaid, PER_KWH, 0);
    w.read(at(0, 10), ALICE, 0);
    // A day at the full allowance drains it: 18 kWh for a 250 W connection at 300 %.
    let full = full_allowance_wh();
    assert_eq!(full, 250 * 3 * 24 + 1);
    assert_eq!(w.read(at(0, 11), ALICE, 100), Outcome::Handled);
    let (billed, held) = energy(&w.out());
    assert_eq!((billed, held), (100, 0));
    // A register corrupted by 10^9 Wh an hour later: billed up to what is left of the
    // allowance plus the hour's accrual (capped at the full window), the rest held.
    let jump = 1_000_000_000;
    assert_eq!(w.read(at(0, 12), ALICE, 100 + jump), Outcome::Handled);
    let out = w.out();
    let (billed, held) = energy(&out);
    assert_eq!(billed, full, "the allowance was full again after an hour");
    assert_eq!(
        billed + held,
        jump,
        "nothing metered is lost: billed or held"
    );
    assert_eq!(
        alarm_codes(&out),
        vec![(AlarmCode::ImplausibleRead, ALICE.0, held as i64)]
    );
    assert!(out.iter().any(|o| matches!(
        o,
        Output::Ledger(LedgerRecord { kind: LedgerKind::Held { energy_wh, allowed_wh }, .. })
            if *energy_wh == held && *allowed_wh == full
    )));
    // The register goes on from its new value: an hour at 200 W bills whole again.
    assert_eq!(w.read(at(0, 13), ALICE, 100 + jump + 200), Outcome::Handled);
    let (billed, held) = energy(&w.out());
    assert_eq!((billed, held), (200, 0));
    // A stuck-then-released register: a week at zero, then 60 kWh at once. Only a day's
    // plausible draw is billed (the allowance caps at the window).
    let base = 100 + jump + 200;
    assert_eq!(w.read(at(7, 13), ALICE, base + 60_000), Outcome::Handled);
    let (billed, held) = energy(&w.out());
    assert_eq!((billed, held), (full, 60_000 - full));
}

#[test]
fn an_honest_full_draw_and_a_journal_drained_in_a_burst_are_never_held() {
    let mut w = World::new();
    w.customer(at(0, 9), ALICE, AccountMode::Postpaid, PER_KWH, 0);
    w.read(at(0, 10), ALICE, 0);
    // A day at the full 250 W, a read every 10 s (0.69 Wh each: the register counts whole Wh).
    let mut held_total = 0;
    let mut billed_total = 0;
    let start = at(0, 10);
    let mut last_wh = 0;
    for i in 1..=8_640u64 {
        let t = start + i * 10_000;
        let wh = 250 * i * 10_000 / 3_600_000;
        w.read(t, ALICE, wh);
        let (b, h) = energy(&w.out());
        billed_total += b;
        held_total += h;
        last_wh = wh;
    }
    // Then the node is cut off for an hour; its journal's 360 reads commit within a second.
    let back = start + 8_640 * 10_000 + 3_600_000;
    for i in 1..=360u64 {
        let wh = last_wh + 250 * i * 10_000 / 3_600_000;
        w.read(back + i, ALICE, wh);
        let (b, h) = energy(&w.out());
        billed_total += b;
        held_total += h;
    }
    assert_eq!(held_total, 0);
    assert_eq!(billed_total, 6_000 + 250);
}
