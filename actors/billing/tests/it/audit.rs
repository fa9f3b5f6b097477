//! What billing puts in the outbox for an auditor: the set-up it bills by (tariffs,
//! configurations, accounts) and the meter registers of every charge, held read, baseline and
//! refused read, so a bill can be rebuilt from reads and tariffs alone.

use super::*;
use ghatta_actor_sdk::{AccountSetup, MeterSpan};

/// The ledger kinds among `outputs`, in order.
fn kinds(outputs: &[Output]) -> Vec<LedgerKind> {
    outputs
        .iter()
        .filter_map(|o| match o {
            Output::Ledger(l) => Some(l.kind.clone()),
            _ => None,
        })
        .collect()
}

fn span(from_wh: u64, to_wh: u64, read_at_ms: u64) -> MeterSpan {
    MeterSpan {
        from_wh,
        to_wh,
        read_at_ms,
    }
}

#[test]
fn accepted_tariffs_and_configurations_are_records_and_refused_ones_are_not() {
    let mut w = World::new();
    let t = Tariff {
        id: PER_KWH,
        version: 11,
        kind: TariffKind::PerKwh {
            rate_paisa_per_kwh: 1_200,
        },
    };
    assert_eq!(
        w.send(at(1, 0), Input::SetTariff(t.clone())),
        Outcome::Handled
    );
    assert_eq!(w.raw_out(), vec![Output::TariffSet(t.clone())]);
    // The same version again is stale: nothing in force changed, so no record.
    assert_eq!(
        w.send(at(1, 1), Input::SetTariff(t)),
        Outcome::Rejected(RejectReason::Stale)
    );
    assert_eq!(w.raw_out(), vec![]);
    let cfg = BillingConfig {
        utc_offset_min: 345,
        friendly_start_min: 21 * 60,
        friendly_end_min: 6 * 60,
        disconnect_at_mpaisa: -NPR,
        plausible_margin_pct: 500,
    };
    assert_eq!(
        w.send(at(1, 2), Input::SetBillingConfig(cfg.clone())),
        Outcome::Handled
    );
    assert!(w.raw_out().contains(&Output::BillingConfigSet(cfg.clone())));
    let bad = BillingConfig {
        utc_offset_min: 7,
        ..cfg
    };
    assert_eq!(
        w.send(at(1, 3), Input::SetBillingConfig(bad)),
        Outcome::Rejected(RejectReason::Invalid)
    );
    assert_eq!(w.raw_out(), vec![]);
}

#[test]
fn an_account_opened_and_changed_is_a_line_with_its_set_up() {
    let mut w = World::new();
    let mut spec = CustomerSpec {
        id: ALICE,
        node: NODE,
        mode: AccountMode::Prepaid,
        tariff: PER_KWH,
        connection_w: 250,
        opening_credit_mpaisa: 5 * NPR,
        token: None,
    };
    assert_eq!(
        w.send(at(0, 9), Input::UpsertCustomer(spec.clone())),
        Outcome::Handled
    );
    let out = w.raw_out();
    let opened = out.iter().find_map(|o| match o {
        Output::Ledger(l) => Some(l.clone()),
        _ => None,
    });
    assert_eq!(
        opened,
        Some(LedgerRecord {
            customer: ALICE,
            at_ms: at(0, 9),
            kind: LedgerKind::Account(AccountSetup {
                opened: true,
                mode: AccountMode::Prepaid,
                tariff: PER_KWH,
                connection_w: 250,
                token_unit_mpaisa: None,
            }),
            balance_after_mpaisa: 5 * NPR,
            tariff_version: 10,
        }),
        "the opening credit is the line's balance"
    );
    spec.mode = AccountMode::Postpaid;
    spec.tariff = TIERED;
    spec.connection_w = 500;
    spec.token = Some(ghatta_actor_sdk::TokenKey {
        secret_key: [7; 16],
        starting_code: 123_456_789,
        unit_mpaisa: NPR,
    });
    assert_eq!(
        w.send(at(0, 10), Input::UpsertCustomer(spec)),
        Outcome::Handled
    );
    assert_eq!(
        kinds(&w.raw_out()),
        vec![LedgerKind::Account(AccountSetup {
            opened: false,
            mode: AccountMode::Postpaid,
            tariff: TIERED,
            connection_w: 500,
            token_unit_mpaisa: Some(NPR),
        })]
    );
}

#[test]
fn every_charge_carries_the_registers_it_was_computed_from() {
    let mut w = World::new();
    w.customer(at(0, 9), ALICE, AccountMode::Postpaid, PER_KWH, 0);
    assert_eq!(w.read(at(1, 0), ALICE, 1_000), Outcome::Handled);
    assert_eq!(
        kinds(&w.raw_out()),
        vec![LedgerKind::Baseline {
            read_wh: 1_000,
            read_at_ms: at(1, 0)
        }]
    );
    // An equal read bills nothing and adds no line; the next charge starts from it.
    assert_eq!(w.read(at(1, 1), ALICE, 1_000), Outcome::Handled);
    assert_eq!(kinds(&w.raw_out()), vec![]);
    assert_eq!(w.read(at(1, 2), ALICE, 1_150), Outcome::Handled);
    assert_eq!(
        kinds(&w.raw_out()),
        vec![LedgerKind::ChargeRead {
            energy_wh: 150,
            amount_mpaisa: 150 * 1_000,
            friendly: false,
            read: span(1_000, 1_150, at(1, 2)),
        }]
    );
    // A backwards read: a line every time, the alarm once.
    for hour in [3, 4] {
        assert_eq!(
            w.read(at(1, hour), ALICE, 40),
            Outcome::Rejected(RejectReason::NotMonotonic)
        );
        let out = w.raw_out();
        assert_eq!(
            kinds(&out),
            vec![LedgerKind::ReadRejected {
                read: span(1_150, 40, at(1, hour))
            }]
        );
        let alarms = out.iter().filter(|o| matches!(o, Output::Alarm(_))).count();
        assert_eq!(alarms, usize::from(hour == 3));
    }
    // The replacement bills the old meter's final register, read at the entry's log time.
    assert_eq!(
        super::meter::replace(&mut w, at(1, 5), ALICE, 5, Some(1_200)),
        Outcome::Handled
    );
    let k = kinds(&w.raw_out());
    assert_eq!(
        k[0],
        LedgerKind::ChargeRead {
            energy_wh: 50,
            amount_mpaisa: 50 * 1_000,
            friendly: false,
            read: span(1_150, 1_200, at(1, 5)),
        }
    );
    assert_eq!(
        k[1],
        LedgerKind::MeterReplaced {
            old_final_wh: 1_200,
            new_read_wh: 5
        }
    );
    assert_eq!(w.read(at(1, 6), ALICE, 25), Outcome::Handled);
    assert_eq!(
        kinds(&w.raw_out())[0].read(),
        Some(span(5, 25, at(1, 6))),
        "the new meter's reads start from its baseline"
    );
}

#[test]
fn a_held_read_carries_its_registers_beside_the_charge() {
    let mut w = World::new();
    w.customer(at(0, 9), ALICE, AccountMode::Postpaid, PER_KWH, 0);
    assert_eq!(w.read(at(1, 0), ALICE, 100), Outcome::Handled);
    w.raw_out();
    // Far beyond a day of a 250 W connection (at the default margin): most of it is held.
    assert_eq!(w.read(at(1, 1), ALICE, 1_000_100), Outcome::Handled);
    let k = kinds(&w.raw_out());
    assert_eq!(k.len(), 2, "{k:?}");
    let (billed, _, _) = k[0].charge().expect("a charge first");
    let (held, allowed) = k[1].held().expect("then the held read");
    assert_eq!((allowed, billed + held), (billed, 1_000_000));
    assert_eq!(k[0].read(), Some(span(100, 1_000_100, at(1, 1))));
    assert_eq!(k[1].read(), k[0].read());
}
