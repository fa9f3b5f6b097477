//! Behaviour tests of the billing actor, run natively against `MemHost`: every case drives the
//! actor through deliveries and asserts the exact outputs, balances and relay commands.

use ghatta_actor_sdk::{
    AccountMode, Actor, Alarm, AlarmCode, BillingConfig, Context, CustomerId, CustomerSpec,
    Delivery, FlatBand, Input, LedgerKind, LedgerRecord, MemHost, MeterRead, NodeId, Outcome,
    Output, RejectReason, RelayCommand, RelayId, RelayReason, Tariff, TariffKind, Telemetry, Tick,
    TierBlock, TopUp,
};
use ghatta_billing::clock::DAY_MS;
use ghatta_billing::store::read_account;
use ghatta_billing::{Billing, FEE_BACKFILL_DAYS_MAX, TAG_DAILY, TAG_FRIENDLY_END};

const HOUR_MS: u64 = 3_600_000;
const NODE: NodeId = NodeId(3);
const ALICE: CustomerId = CustomerId(101);
const BOB: CustomerId = CustomerId(102);
/// 1 NPR in mpaisa.
const NPR: i64 = 100_000;

const PER_KWH: u16 = 1;
const TIERED: u16 = 2;
const FLAT: u16 = 3;

/// Log time on day `day` at `hour`:00 UTC. The tests run billing at UTC+0 so hours read plainly.
fn at(day: u64, hour: u64) -> u64 {
    day * DAY_MS + hour * HOUR_MS
}

struct World {
    host: MemHost,
    log_index: u64,
}

impl World {
    /// A world with UTC time, friendly hours 18:00-06:00, disconnection at zero, and the three
    /// tariffs: 10 NPR/kWh; tiered (10 kWh free, 8 NPR up to 50 kWh, 12 NPR beyond, 50 NPR per
    /// period); flat (5 NPR/day up to 100 W, 20 NPR/day up to 500 W).
    fn new() -> Self {
        let mut w = World {
            host: MemHost::default(),
            log_index: 0,
        };
        let cfg = BillingConfig {
            utc_offset_min: 0,
            friendly_start_min: 18 * 60,
            friendly_end_min: 6 * 60,
            disconnect_at_mpaisa: 0,
            plausible_margin_pct: ghatta_billing::clock::PLAUSIBLE_MARGIN_PCT_DEFAULT,
        };
        assert_eq!(w.send(0, Input::SetBillingConfig(cfg)), Outcome::Handled);
        let tariffs = [
            (
                PER_KWH,
                TariffKind::PerKwh {
                    rate_paisa_per_kwh: 1_000,
                },
            ),
            (
                TIERED,
                TariffKind::Tiered {
                    blocks: vec![
                        TierBlock {
                            up_to_wh: 10_000,
                            rate_paisa_per_kwh: 0,
                        },
                        TierBlock {
                            up_to_wh: 50_000,
                            rate_paisa_per_kwh: 800,
                        },
                        TierBlock {
                            up_to_wh: 0,
                            rate_paisa_per_kwh: 1_200,
                        },
                    ],
                    period_charge_paisa: 5_000,
                },
            ),
            (
                FLAT,
                TariffKind::Flat {
                    bands: vec![
                        FlatBand {
                            up_to_w: 100,
                            daily_fee_paisa: 500,
                        },
                        FlatBand {
                            up_to_w: 500,
                            daily_fee_paisa: 2_000,
                        },
                    ],
                },
            ),
        ];
        for (id, kind) in tariffs {
            let t = Tariff {
                id,
                version: u32::from(id) * 10,
                kind,
            };
            assert_eq!(w.send(0, Input::SetTariff(t)), Outcome::Handled);
        }
        w.host.take_outputs();
        w
    }

    fn send(&mut self, log_time_ms: u64, input: Input) -> Outcome {
        self.log_index += 1;
        let ctx = Context {
            log_index: self.log_index,
            log_time_ms,
            origin: NODE,
        };
        Billing::handle(&mut self.host, &Delivery { ctx, input })
    }

    /// The outputs since the last call, in the form these tests were written against: a
    /// charge or held read without its read (`ChargeRead` as `Charge`, `HeldRead` as `Held`),
    /// without the lines and records kept for an auditor (baselines, refused reads, account
    /// set-up, tariffs and configurations), which `audit.rs` asserts from [`World::raw_out`].
    fn out(&mut self) -> Vec<Output> {
        self.raw_out()
            .into_iter()
            .filter_map(|o| match o {
                Output::Ledger(mut l) => {
                    l.kind = match l.kind {
                        LedgerKind::ChargeRead {
                            energy_wh,
                            amount_mpaisa,
                            friendly,
                            ..
                        } => LedgerKind::Charge {
                            energy_wh,
                            amount_mpaisa,
                            friendly,
                        },
                        LedgerKind::HeldRead {
                            energy_wh,
                            allowed_wh,
                            ..
                        } => LedgerKind::Held {
                            energy_wh,
                            allowed_wh,
                        },
                        LedgerKind::Baseline { .. }
                        | LedgerKind::ReadRejected { .. }
                        | LedgerKind::Account(_) => return None,
                        other => other,
                    };
                    Some(Output::Ledger(l))
                }
                Output::TariffSet(_) | Output::BillingConfigSet(_) => None,
                other => Some(other),
            })
            .collect()
    }

    /// Every output since the last call, as billing emitted it.
    fn raw_out(&mut self) -> Vec<Output> {
        self.host.take_outputs()
    }

    /// The ledger records only (for scenarios that skip the daily ticks, where the actor
    /// re-asks for its lost timer).
    fn ledgers(&mut self) -> Vec<Output> {
        self.out()
            .into_iter()
            .filter(|o| matches!(o, Output::Ledger(_)))
            .collect()
    }

    /// Create an account at `t` and drop the outputs (the daily timer request).
    fn customer(&mut self, t: u64, id: CustomerId, mode: AccountMode, tariff: u16, credit: i64) {
        let spec = CustomerSpec {
            id,
            node: NODE,
            mode,
            tariff,
            connection_w: 250,
            opening_credit_mpaisa: credit,
            token: None,
        };
        assert_eq!(self.send(t, Input::UpsertCustomer(spec)), Outcome::Handled);
        self.out();
    }

    fn read(&mut self, t: u64, id: CustomerId, total_wh: u64) -> Outcome {
        self.send(
            t,
            Input::MeterRead(MeterRead {
                customer: id,
                total_wh,
                read_at_ms: t,
            }),
        )
    }

    fn top_up(&mut self, t: u64, id: CustomerId, token_id: u64, amount: i64) -> Outcome {
        self.send(
            t,
            Input::TopUp(TopUp {
                customer: id,
                token_id,
                amount_mpaisa: amount,
            }),
        )
    }

    fn tick(&mut self, t: u64, due_ms: u64, tag: u32) -> Outcome {
        self.send(t, Input::Tick(Tick { due_ms, tag }))
    }

    fn credit(&self, id: CustomerId) -> i64 {
        read_account(&self.host, id)
            .expect("account exists")
            .credit_mpaisa
    }

    fn connected(&self, id: CustomerId) -> bool {
        read_account(&self.host, id)
            .expect("account exists")
            .connected
    }
}

fn ledger(
    customer: CustomerId,
    at_ms: u64,
    kind: LedgerKind,
    balance: i64,
    version: u32,
) -> Output {
    Output::Ledger(LedgerRecord {
        customer,
        at_ms,
        kind,
        balance_after_mpaisa: balance,
        tariff_version: version,
    })
}

fn charge(energy_wh: u64, amount_mpaisa: i64, friendly: bool) -> LedgerKind {
    LedgerKind::Charge {
        energy_wh,
        amount_mpaisa,
        friendly,
    }
}

fn relay(customer: CustomerId, closed: bool, reason: RelayReason) -> Output {
    Output::Relay(RelayCommand {
        node: NODE,
        relay: RelayId::Customer(customer),
        closed,
        reason,
    })
}

fn alarm_codes(outputs: &[Output]) -> Vec<(AlarmCode, u32, i64)> {
    outputs
        .iter()
        .filter_map(|o| match o {
            Output::Alarm(Alarm {
                code,
                subject,
                value,
                ..
            }) => Some((*code, *subject, *value)),
            _ => None,
        })
        .collect()
}

#[test]
fn new_account_asks_for_the_daily_timer_once() {
    let mut w = World::new();
    let spec = |id| CustomerSpec {
        id,
        node: NODE,
        mode: AccountMode::Prepaid,
        tariff: PER_KWH,
        connection_w: 250,
        opening_credit_mpaisa: 0,
        token: None,
    };
    assert_eq!(
        w.send(at(0, 12), Input::UpsertCustomer(spec(ALICE))),
        Outcome::Handled
    );
    assert_eq!(
        w.out(),
        vec![Output::Timer {
            at_ms: at(1, 0),
            tag: TAG_DAILY
        }]
    );
    assert_eq!(
        w.send(at(0, 13), Input::UpsertCustomer(spec(BOB))),
        Outcome::Handled
    );
    assert_eq!(w.out(), vec![], "the pending timer is not asked for again");
}

#[test]
fn per_kwh_charges_the_delta_exactly_after_a_baseline() {
    let mut w = World::new();
    w.customer(at(0, 9), ALICE, AccountMode::Prepaid, PER_KWH, 100 * NPR);
    assert_eq!(w.read(at(0, 10), ALICE, 1_000), Outcome::Handled);
    assert_eq!(w.out(), vec![], "the first read is the baseline");
    assert_eq!(w.credit(ALICE), 100 * NPR);

    assert_eq!(w.read(at(0, 11), ALICE, 1_500), Outcome::Handled);
    // 500 Wh at 1,000 paisa/kWh = 5 NPR.
    assert_eq!(
        w.out(),
        vec![ledger(
            ALICE,
            at(0, 11),
            charge(500, 5 * NPR, false),
            95 * NPR,
            10
        )]
    );

    assert_eq!(w.read(at(0, 12), ALICE, 1_500), Outcome::Handled);
    assert_eq!(w.out(), vec![], "an equal read bills nothing");
    assert_eq!(w.credit(ALICE), 95 * NPR);
}

#[test]
fn decreasing_read_is_rejected_alarmed_and_never_billed() {
    let mut w = World::new();
    w.customer(at(0, 9), ALICE, AccountMode::Prepaid, PER_KWH, 100 * NPR);
    w.read(at(0, 10), ALICE, 1_000);
    w.out();

    assert_eq!(
        w.read(at(0, 11), ALICE, 900),
        Outcome::Rejected(RejectReason::NotMonotonic)
    );
    let out = w.out();
    assert_eq!(
        alarm_codes(&out),
        vec![(AlarmCode::MeterNotMonotonic, ALICE.0, 900)]
    );
    assert_eq!(out.len(), 1, "no ledger record, no relay: {out:?}");
    assert_eq!(w.credit(ALICE), 100 * NPR);

    // Billing resumes from the last accepted read (1,000), not the rejected one.
    assert_eq!(w.read(at(0, 12), ALICE, 1_100), Outcome::Handled);
    assert_eq!(
        w.out(),
        vec![ledger(
            ALICE,
            at(0, 12),
            charge(100, NPR, false),
            99 * NPR,
            10
        )]
    );
}

#[test]
fn replayed_token_is_rejected_for_any_customer() {
    let mut w = World::new();
    w.customer(at(0, 9), ALICE, AccountMode::Prepaid, PER_KWH, 0);
    w.customer(at(0, 9), BOB, AccountMode::Prepaid, PER_KWH, 0);

    assert_eq!(w.top_up(at(0, 10), ALICE, 77, 50 * NPR), Outcome::Handled);
    let topup = LedgerKind::OperatorCredit {
        ref_id: 77,
        amount_mpaisa: 50 * NPR,
    };
    assert_eq!(w.out(), vec![ledger(ALICE, at(0, 10), topup, 50 * NPR, 10)]);

    assert_eq!(
        w.top_up(at(0, 11), ALICE, 77, 50 * NPR),
        Outcome::Rejected(RejectReason::Replayed)
    );
    assert_eq!(
        alarm_codes(&w.out()),
        vec![(AlarmCode::TokenReplayed, ALICE.0, 77)]
    );
    assert_eq!(
        w.top_up(at(0, 11), BOB, 77, 50 * NPR),
        Outcome::Rejected(RejectReason::Replayed)
    );
    assert_eq!(
        alarm_codes(&w.out()),
        vec![(AlarmCode::TokenReplayed, BOB.0, 77)]
    );
    assert_eq!(w.credit(ALICE), 50 * NPR);
    assert_eq!(w.credit(BOB), 0);
}

#[test]
fn non_positive_top_up_is_invalid_and_does_not_burn_the_token() {
    let mut w = World::new();
    w.customer(at(0, 9), ALICE, AccountMode::Prepaid, PER_KWH, 0);
    assert_eq!(
        w.top_up(at(0, 10), ALICE, 5, 0),
        Outcome::Rejected(RejectReason::Invalid)
    );
    assert_eq!(
        w.top_up(at(0, 10), ALICE, 5, -NPR),
        Outcome::Rejected(RejectReason::Invalid)
    );
    assert_eq!(w.out(), vec![]);
    assert_eq!(w.credit(ALICE), 0);
    assert_eq!(w.top_up(at(0, 11), ALICE, 5, NPR), Outcome::Handled);
    assert_eq!(w.credit(ALICE), NPR);
}

#[test]
fn zero_credit_disconnects_and_top_up_reconnects() {
    let mut w = World::new();
    w.customer(at(0, 9), ALICE, AccountMode::Prepaid, PER_KWH, 10 * NPR);
    w.read(at(0, 10), ALICE, 0);

    // 1 kWh = 10 NPR: exactly zero credit left, which is the threshold.
    assert_eq!(w.read(at(0, 11), ALICE, 1_000), Outcome::Handled);
    assert_eq!(
        w.out(),
        vec![
            ledger(ALICE, at(0, 11), charge(1_000, 10 * NPR, false), 0, 10),
            relay(ALICE, false, RelayReason::ZeroCredit),
            ledger(
                ALICE,
                at(0, 11),
                LedgerKind::Disconnect {
                    reason: RelayReason::ZeroCredit
                },
                0,
                10
            ),
        ]
    );
    assert!(!w.connected(ALICE));

    // Consumption reported while cut (e.g. read before the relay moved) is billed, no new cut.
    assert_eq!(w.read(at(0, 12), ALICE, 1_100), Outcome::Handled);
    assert_eq!(
        w.out(),
        vec![ledger(ALICE, at(0, 12), charge(100, NPR, false), -NPR, 10)]
    );

    // A top-up that only clears the debt to the threshold does not reconnect.
    assert_eq!(w.top_up(at(0, 13), ALICE, 1, NPR), Outcome::Handled);
    let topup = LedgerKind::OperatorCredit {
        ref_id: 1,
        amount_mpaisa: NPR,
    };
    assert_eq!(w.out(), vec![ledger(ALICE, at(0, 13), topup, 0, 10)]);
    assert!(!w.connected(ALICE));

    assert_eq!(w.top_up(at(0, 14), ALICE, 2, 5 * NPR), Outcome::Handled);
    let topup = LedgerKind::OperatorCredit {
        ref_id: 2,
        amount_mpaisa: 5 * NPR,
    };
    let reconnect = LedgerKind::Reconnect {
        reason: RelayReason::CreditRestored,
    };
    assert_eq!(
        w.out(),
        vec![
            ledger(ALICE, at(0, 14), topup, 5 * NPR, 10),
            relay(ALICE, true, RelayReason::CreditRestored),
            ledger(ALICE, at(0, 14), reconnect, 5 * NPR, 10),
        ]
    );
    assert!(w.connected(ALICE));
}

#[test]
fn friendly_hours_make_debt_and_the_window_end_disconnects() {
    let mut w = World::new();
    w.customer(at(0, 9), ALICE, AccountMode::Prepaid, PER_KWH, 2 * NPR);
    w.read(at(0, 10), ALICE, 0);

    // 20:00 is inside 18:00-06:00: 1 kWh = 10 NPR becomes 8 NPR of debt, no cut.
    assert_eq!(w.read(at(0, 20), ALICE, 1_000), Outcome::Handled);
    assert_eq!(
        w.out(),
        vec![
            ledger(
                ALICE,
                at(0, 20),
                charge(1_000, 10 * NPR, true),
                -8 * NPR,
                10
            ),
            Output::Timer {
                at_ms: at(1, 6),
                tag: TAG_FRIENDLY_END
            },
        ]
    );
    assert!(w.connected(ALICE));

    // More use at 02:00 adds to the debt; the timer is not asked for twice.
    assert_eq!(w.read(at(1, 2), ALICE, 1_500), Outcome::Handled);
    assert_eq!(
        w.out(),
        vec![ledger(
            ALICE,
            at(1, 2),
            charge(500, 5 * NPR, true),
            -13 * NPR,
            10
        )]
    );

    // A stale tick (not the due time asked for) does nothing.
    assert_eq!(
        w.tick(at(1, 6), at(1, 5), TAG_FRIENDLY_END),
        Outcome::Handled
    );
    assert_eq!(w.out(), vec![]);

    // 06:00: friendly hours are over and the account is still in debt.
    assert_eq!(
        w.tick(at(1, 6), at(1, 6), TAG_FRIENDLY_END),
        Outcome::Handled
    );
    let disconnect = LedgerKind::Disconnect {
        reason: RelayReason::ZeroCredit,
    };
    assert_eq!(
        w.out(),
        vec![
            relay(ALICE, false, RelayReason::ZeroCredit),
            ledger(ALICE, at(1, 6), disconnect, -13 * NPR, 10)
        ]
    );
    assert!(!w.connected(ALICE));

    // The same tick delivered twice does nothing more.
    assert_eq!(
        w.tick(at(1, 6), at(1, 6), TAG_FRIENDLY_END),
        Outcome::Handled
    );
    assert_eq!(w.out(), vec![]);
}

#[test]
fn friendly_debt_is_cut_by_the_first_charge_after_the_window() {
    let mut w = World::new();
    w.customer(at(0, 9), ALICE, AccountMode::Prepaid, PER_KWH, 0);
    w.read(at(0, 10), ALICE, 0);
    w.read(at(0, 23), ALICE, 100);
    w.out();
    assert!(w.connected(ALICE));

    // 07:00, and the window-end tick has not been committed yet: the read itself cuts.
    assert_eq!(w.read(at(1, 7), ALICE, 200), Outcome::Handled);
    let disconnect = LedgerKind::Disconnect {
        reason: RelayReason::ZeroCredit,
    };
    assert_eq!(
        w.out(),
        vec![
            ledger(ALICE, at(1, 7), charge(100, NPR, false), -2 * NPR, 10),
            relay(ALICE, false, RelayReason::ZeroCredit),
            ledger(ALICE, at(1, 7), disconnect, -2 * NPR, 10),
        ]
    );
    // The late tick finds nothing left to cut.
    assert_eq!(
        w.tick(at(1, 7), at(1, 6), TAG_FRIENDLY_END),
        Outcome::Handled
    );
    assert_eq!(w.out(), vec![]);
}

#[test]
fn friendly_debt_paid_overnight_is_not_cut() {
    let mut w = World::new();
    w.customer(at(0, 9), ALICE, AccountMode::Prepaid, PER_KWH, 0);
    w.read(at(0, 10), ALICE, 0);
    w.read(at(0, 22), ALICE, 300);
    assert_eq!(w.credit(ALICE), -3 * NPR);
    w.top_up(at(1, 1), ALICE, 9, 10 * NPR);
    w.out();
    assert_eq!(
        w.tick(at(1, 6), at(1, 6), TAG_FRIENDLY_END),
        Outcome::Handled
    );
    assert_eq!(w.out(), vec![]);
    assert!(w.connected(ALICE));
}

#[test]
fn friendly_window_wraps_midnight_in_local_time() {
    let mut w = World::new();
    // Nepal time: 18:00-06:00 local is 12:15-00:15 UTC.
    let nepal = BillingConfig {
        utc_offset_min: 345,
        friendly_start_min: 18 * 60,
        friendly_end_min: 6 * 60,
        disconnect_at_mpaisa: 0,
        plausible_margin_pct: ghatta_billing::clock::PLAUSIBLE_MARGIN_PCT_DEFAULT,
    };
    assert_eq!(w.send(0, Input::SetBillingConfig(nepal)), Outcome::Handled);
    w.customer(at(0, 1), ALICE, AccountMode::Prepaid, PER_KWH, 0);
    w.read(at(0, 1), ALICE, 0);
    // 13:00 UTC = 18:45 local: friendly.
    w.read(at(0, 13), ALICE, 100);
    let out = w.out();
    assert_eq!(
        out[0],
        ledger(ALICE, at(0, 13), charge(100, NPR, true), -NPR, 10)
    );
    // The window ends at 06:00 local = 00:15 UTC.
    assert_eq!(
        out[1],
        Output::Timer {
            at_ms: at(1, 0) + 15 * 60_000,
            tag: TAG_FRIENDLY_END
        }
    );
    assert!(w.connected(ALICE));
}

/// Nepal's billing configuration (UTC+5:45), friendly hours 18:00-06:00 local.
fn nepal() -> BillingConfig {
    BillingConfig {
        utc_offset_min: 345,
        friendly_start_min: 18 * 60,
        friendly_end_min: 6 * 60,
        disconnect_at_mpaisa: 0,
        plausible_margin_pct: ghatta_billing::clock::PLAUSIBLE_MARGIN_PCT_DEFAULT,
    }
}

/// Issue 21: in UTC+5:45, a charge that empties a prepaid account anywhere in 18:00-18:59
/// local (12:15-13:14 UTC) is friendly debt: no disconnection. Billing that read UTC hours, or
/// whole-hour offsets, would cut at 18:30 local (12:45 UTC, not yet 18:00 in a UTC+6 reading).
#[test]
fn friendly_hours_in_nepal_never_disconnect_at_18_30_local() {
    const MINUTE_MS: u64 = 60_000;
    for local_min in (18 * 60)..(19 * 60) {
        let mut w = World::new();
        assert_eq!(
            w.send(0, Input::SetBillingConfig(nepal())),
            Outcome::Handled
        );
        w.customer(at(0, 1), ALICE, AccountMode::Prepaid, PER_KWH, NPR / 2);
        w.read(at(0, 1), ALICE, 0);
        w.out();
        let t = at(0, 0) + (local_min - 345) * MINUTE_MS;
        assert_eq!(w.read(t, ALICE, 100), Outcome::Handled);
        let out = w.out();
        assert_eq!(
            out[0],
            ledger(ALICE, t, charge(100, NPR, true), -NPR / 2, 10),
            "at {}:{:02} local",
            local_min / 60,
            local_min % 60
        );
        assert!(
            !out.iter().any(|o| matches!(o, Output::Relay(_))),
            "no relay moves at {local_min} local minutes: {out:?}"
        );
        assert!(w.connected(ALICE));
    }
    // The minute before the window is not friendly: cut at 17:59 local (12:14 UTC).
    let mut w = World::new();
    w.send(0, Input::SetBillingConfig(nepal()));
    w.customer(at(0, 1), ALICE, AccountMode::Prepaid, PER_KWH, NPR / 2);
    w.read(at(0, 1), ALICE, 0);
    w.read(at(0, 12) + 14 * MINUTE_MS, ALICE, 100);
    assert!(!w.connected(ALICE));
}

/// Flat fees fall due at local midnight: 18:15 UTC in Nepal, and a new offset moves the
/// daily timer to the new midnight.
#[test]
fn flat_fee_days_start_at_local_midnight() {
    let mut w = World::new();
    assert_eq!(
        w.send(0, Input::SetBillingConfig(nepal())),
        Outcome::Handled
    );
    let spec = CustomerSpec {
        id: ALICE,
        node: NODE,
        mode: AccountMode::Postpaid,
        tariff: FLAT,
        connection_w: 250,
        opening_credit_mpaisa: 0,
        token: None,
    };
    // 13:00 UTC = 18:45 local on day 0.
    w.send(at(0, 13), Input::UpsertCustomer(spec));
    let midnight = at(0, 18) + 15 * 60_000;
    assert_eq!(
        w.out(),
        vec![Output::Timer {
            at_ms: midnight,
            tag: TAG_DAILY
        }]
    );
    assert_eq!(w.tick(midnight, midnight, TAG_DAILY), Outcome::Handled);
    let out = w.out();
    assert_eq!(
        out[0],
        ledger(
            ALICE,
            midnight,
            LedgerKind::Fee {
                amount_mpaisa: 20 * NPR
            },
            -20 * NPR,
            30
        )
    );
    assert_eq!(
        out[1],
        Output::Timer {
            at_ms: midnight + DAY_MS,
            tag: TAG_DAILY
        }
    );
    // The grid moves to UTC+6: the next day starts at 18:00 UTC, and the old tick is stale.
    let cfg = BillingConfig {
        utc_offset_min: 360,
        ..nepal()
    };
    assert_eq!(
        w.send(at(1, 1), Input::SetBillingConfig(cfg)),
        Outcome::Handled
    );
    assert_eq!(
        w.out(),
        vec![Output::Timer {
            at_ms: at(1, 18),
            tag: TAG_DAILY
        }]
    );
    w.tick(midnight + DAY_MS, midnight + DAY_MS, TAG_DAILY);
    assert_eq!(w.out(), vec![], "stale");
    w.tick(at(1, 18), at(1, 18), TAG_DAILY);
    assert!(matches!(w.out()[0], Output::Ledger(_)));
}

#[test]
fn postpaid_is_never_disconnected() {
    let mut w = World::new();
    w.customer(at(0, 9), ALICE, AccountMode::Postpaid, PER_KWH, 0);
    w.read(at(0, 10), ALICE, 0);
    assert_eq!(w.read(at(0, 11), ALICE, 5_000), Outcome::Handled);
    assert_eq!(
        w.out(),
        vec![ledger(
            ALICE,
            at(0, 11),
            charge(5_000, 50 * NPR, false),
            -50 * NPR,
            10
        )]
    );
    assert_eq!(w.read(at(0, 20), ALICE, 6_000), Outcome::Handled);
    assert_eq!(
        w.out(),
        vec![ledger(
            ALICE,
            at(0, 20),
            charge(1_000, 10 * NPR, false),
            -60 * NPR,
            10
        )]
    );
    assert!(w.connected(ALICE));
}

#[test]
fn tiered_blocks_split_a_read_across_a_boundary_and_reset_each_period() {
    let mut w = World::new();
    w.customer(at(0, 9), ALICE, AccountMode::Postpaid, TIERED, 0);
    // A 10 kW connection: the 50 kWh day below is plausible for it (not for 250 W).
    let big = CustomerSpec {
        id: ALICE,
        node: NODE,
        mode: AccountMode::Postpaid,
        tariff: TIERED,
        connection_w: 10_000,
        opening_credit_mpaisa: 0,
        token: None,
    };
    assert_eq!(
        w.send(at(0, 9), Input::UpsertCustomer(big)),
        Outcome::Handled
    );
    w.read(at(0, 10), ALICE, 0);
    assert_eq!(
        w.ledgers(),
        vec![],
        "no period charge for the baseline's period"
    );

    // 9 kWh: all in the free block.
    w.read(at(1, 10), ALICE, 9_000);
    assert_eq!(
        w.ledgers(),
        vec![ledger(ALICE, at(1, 10), charge(9_000, 0, false), 0, 20)]
    );
    // 9 -> 12 kWh: 1 kWh free, 2 kWh at 8 NPR.
    w.read(at(2, 10), ALICE, 12_000);
    assert_eq!(
        w.ledgers(),
        vec![ledger(
            ALICE,
            at(2, 10),
            charge(3_000, 16 * NPR, false),
            -16 * NPR,
            20
        )]
    );
    // 12 -> 62 kWh: 38 kWh at 8 NPR + 12 kWh at 12 NPR = 304 + 144 NPR.
    w.read(at(3, 10), ALICE, 62_000);
    assert_eq!(
        w.ledgers(),
        vec![ledger(
            ALICE,
            at(3, 10),
            charge(50_000, 448 * NPR, false),
            -464 * NPR,
            20
        )]
    );

    // Day 30 starts period 1: the period charge (50 NPR), then 5 kWh free again.
    w.read(at(30, 10), ALICE, 67_000);
    assert_eq!(
        w.ledgers(),
        vec![
            ledger(
                ALICE,
                at(30, 10),
                LedgerKind::Fee {
                    amount_mpaisa: 50 * NPR
                },
                -514 * NPR,
                20
            ),
            ledger(ALICE, at(30, 10), charge(5_000, 0, false), -514 * NPR, 20),
        ]
    );
    // Period 2's first read is an equal read: the period charge is still due.
    w.read(at(60, 10), ALICE, 67_000);
    assert_eq!(
        w.ledgers(),
        vec![ledger(
            ALICE,
            at(60, 10),
            LedgerKind::Fee {
                amount_mpaisa: 50 * NPR
            },
            -564 * NPR,
            20
        )]
    );
    w.read(at(61, 10), ALICE, 67_000);
    assert_eq!(w.ledgers(), vec![]);
}

#[test]
fn flat_fee_is_charged_daily_on_the_timer_and_cuts_after_friendly_hours() {
    let mut w = World::new();
    // 250 W selects the 20 NPR/day band. Created mid-day 0: day 0 is free.
    w.customer(at(0, 12), ALICE, AccountMode::Prepaid, FLAT, 30 * NPR);
    w.read(at(0, 13), ALICE, 0);
    w.read(at(0, 14), ALICE, 4_000);
    assert_eq!(w.out(), vec![], "flat tariffs bill no energy");

    assert_eq!(w.tick(at(1, 0), at(1, 0), TAG_DAILY), Outcome::Handled);
    assert_eq!(
        w.out(),
        vec![
            ledger(
                ALICE,
                at(1, 0),
                LedgerKind::Fee {
                    amount_mpaisa: 20 * NPR
                },
                10 * NPR,
                30
            ),
            Output::Timer {
                at_ms: at(2, 0),
                tag: TAG_DAILY
            },
        ]
    );
    // A duplicate of the same tick charges nothing.
    assert_eq!(w.tick(at(1, 0), at(1, 0), TAG_DAILY), Outcome::Handled);
    assert_eq!(w.out(), vec![]);

    // Day 2's fee lands at 00:00, inside friendly hours: debt, watched until 06:00.
    assert_eq!(w.tick(at(2, 0), at(2, 0), TAG_DAILY), Outcome::Handled);
    assert_eq!(
        w.out(),
        vec![
            ledger(
                ALICE,
                at(2, 0),
                LedgerKind::Fee {
                    amount_mpaisa: 20 * NPR
                },
                -10 * NPR,
                30
            ),
            Output::Timer {
                at_ms: at(2, 6),
                tag: TAG_FRIENDLY_END
            },
            Output::Timer {
                at_ms: at(3, 0),
                tag: TAG_DAILY
            },
        ]
    );
    assert!(w.connected(ALICE));
    assert_eq!(
        w.tick(at(2, 6), at(2, 6), TAG_FRIENDLY_END),
        Outcome::Handled
    );
    let disconnect = LedgerKind::Disconnect {
        reason: RelayReason::ZeroCredit,
    };
    assert_eq!(
        w.out(),
        vec![
            relay(ALICE, false, RelayReason::ZeroCredit),
            ledger(ALICE, at(2, 6), disconnect, -10 * NPR, 30)
        ]
    );
}

#[test]
fn flat_fee_uses_the_connection_band_and_skips_other_tariffs() {
    let mut w = World::new();
    let small = CustomerSpec {
        id: ALICE,
        node: NODE,
        mode: AccountMode::Postpaid,
        tariff: FLAT,
        connection_w: 100,
        opening_credit_mpaisa: 0,
        token: None,
    };
    w.send(at(0, 12), Input::UpsertCustomer(small));
    w.customer(at(0, 12), BOB, AccountMode::Postpaid, PER_KWH, 0);
    w.out();
    w.tick(at(1, 0), at(1, 0), TAG_DAILY);
    assert_eq!(
        w.out(),
        vec![
            ledger(
                ALICE,
                at(1, 0),
                LedgerKind::Fee {
                    amount_mpaisa: 5 * NPR
                },
                -5 * NPR,
                30
            ),
            Output::Timer {
                at_ms: at(2, 0),
                tag: TAG_DAILY
            },
        ]
    );
    assert_eq!(w.credit(BOB), 0);
}

#[test]
fn late_daily_tick_charges_missed_days_up_to_the_cap() {
    let mut w = World::new();
    w.customer(at(0, 12), ALICE, AccountMode::Postpaid, FLAT, 0);
    // The controller was down: the day-1 timer is proposed on day 3.
    w.tick(at(3, 8), at(1, 0), TAG_DAILY);
    assert_eq!(
        w.out(),
        vec![
            ledger(
                ALICE,
                at(3, 8),
                LedgerKind::Fee {
                    amount_mpaisa: 60 * NPR
                },
                -60 * NPR,
                30
            ),
            Output::Timer {
                at_ms: at(4, 0),
                tag: TAG_DAILY
            },
        ]
    );
    // A month-long gap is capped.
    w.tick(at(40, 0), at(4, 0), TAG_DAILY);
    let capped = 20 * NPR * FEE_BACKFILL_DAYS_MAX as i64;
    let out = w.out();
    assert_eq!(
        out[0],
        ledger(
            ALICE,
            at(40, 0),
            LedgerKind::Fee {
                amount_mpaisa: capped
            },
            -60 * NPR - capped,
            30
        )
    );
}

#[test]
fn lost_daily_timer_is_asked_for_again_and_the_stale_one_ignored() {
    let mut w = World::new();
    w.customer(at(0, 12), ALICE, AccountMode::Postpaid, FLAT, 0);
    // No tick for day 1 ever came; a meter read on day 2 after 00:00 + one day notices.
    w.read(at(2, 1), ALICE, 0);
    assert_eq!(
        w.out(),
        vec![Output::Timer {
            at_ms: at(3, 0),
            tag: TAG_DAILY
        }]
    );
    // The original turns up after all: stale, ignored.
    w.tick(at(2, 2), at(1, 0), TAG_DAILY);
    assert_eq!(w.out(), vec![]);
    w.tick(at(3, 0), at(3, 0), TAG_DAILY);
    let out = w.out();
    assert_eq!(
        out[0],
        ledger(
            ALICE,
            at(3, 0),
            LedgerKind::Fee {
                amount_mpaisa: 60 * NPR
            },
            -60 * NPR,
            30
        )
    );
}

#[test]
fn daily_pass_over_many_accounts_continues_in_batches() {
    let mut w = World::new();
    let n = ghatta_billing::ACCOUNTS_PER_TICK_MAX as u32 + 5;
    for id in 0..n {
        w.customer(at(0, 12), CustomerId(id), AccountMode::Postpaid, FLAT, 0);
    }
    w.tick(at(1, 0), at(1, 0), TAG_DAILY);
    let out = w.out();
    let fees = out
        .iter()
        .filter(|o| matches!(o, Output::Ledger(_)))
        .count();
    assert_eq!(fees, ghatta_billing::ACCOUNTS_PER_TICK_MAX);
    assert_eq!(
        out.last(),
        Some(&Output::Timer {
            at_ms: at(1, 0) + 1,
            tag: TAG_DAILY
        })
    );
    w.tick(at(1, 0) + 5, at(1, 0) + 1, TAG_DAILY);
    let out = w.out();
    assert_eq!(
        out.iter()
            .filter(|o| matches!(o, Output::Ledger(_)))
            .count(),
        5
    );
    assert_eq!(
        out.last(),
        Some(&Output::Timer {
            at_ms: at(2, 0),
            tag: TAG_DAILY
        })
    );
    for id in 0..n {
        assert_eq!(
            w.credit(CustomerId(id)),
            -20 * NPR,
            "customer {id} charged exactly once"
        );
    }
}

#[test]
fn unknown_customer_or_tariff_is_rejected_and_alarmed() {
    let mut w = World::new();
    assert_eq!(
        w.read(at(0, 10), ALICE, 10),
        Outcome::Rejected(RejectReason::Unknown)
    );
    assert_eq!(
        alarm_codes(&w.out()),
        vec![(AlarmCode::UnknownAccount, ALICE.0, 0)]
    );
    assert_eq!(
        w.top_up(at(0, 10), ALICE, 1, NPR),
        Outcome::Rejected(RejectReason::Unknown)
    );
    assert_eq!(
        alarm_codes(&w.out()),
        vec![(AlarmCode::UnknownAccount, ALICE.0, 0)]
    );
    let spec = CustomerSpec {
        id: ALICE,
        node: NODE,
        mode: AccountMode::Prepaid,
        tariff: 99,
        connection_w: 1,
        opening_credit_mpaisa: 0,
        token: None,
    };
    assert_eq!(
        w.send(at(0, 10), Input::UpsertCustomer(spec)),
        Outcome::Rejected(RejectReason::Unknown)
    );
    assert_eq!(
        alarm_codes(&w.out()),
        vec![(AlarmCode::UnknownAccount, ALICE.0, 99)]
    );
    assert!(read_account(&w.host, ALICE).is_none());
    // The token of a refused top-up is still good.
    w.customer(at(0, 11), ALICE, AccountMode::Prepaid, PER_KWH, 0);
    assert_eq!(w.top_up(at(0, 12), ALICE, 1, NPR), Outcome::Handled);
}

#[test]
fn inputs_for_other_actors_are_not_for_me() {
    let mut w = World::new();
    let telemetry = Telemetry {
        node: NODE,
        frequency_mhz: 50_000,
        voltage_dv: 2_300,
        generation_w: 0,
        ballast_w: 0,
        ballast_capacity_w: 0,
        feeders: vec![],
    };
    let state_before = w.host.state.clone();
    assert_eq!(
        w.send(0, Input::Telemetry(telemetry)),
        Outcome::Rejected(RejectReason::NotForMe)
    );
    assert_eq!(
        w.send(0, Input::Noop),
        Outcome::Rejected(RejectReason::NotForMe)
    );
    assert_eq!(w.out(), vec![]);
    assert_eq!(w.host.state, state_before);
}

#[test]
fn upsert_keeps_credit_and_switching_to_postpaid_reconnects() {
    let mut w = World::new();
    w.customer(at(0, 9), ALICE, AccountMode::Prepaid, PER_KWH, NPR);
    w.read(at(0, 10), ALICE, 0);
    w.read(at(0, 11), ALICE, 100);
    w.out();
    assert!(!w.connected(ALICE));
    let spec = CustomerSpec {
        id: ALICE,
        node: NODE,
        mode: AccountMode::Postpaid,
        tariff: PER_KWH,
        connection_w: 250,
        opening_credit_mpaisa: 1_000 * NPR,
        token: None,
    };
    assert_eq!(
        w.send(at(0, 12), Input::UpsertCustomer(spec)),
        Outcome::Handled
    );
    let reconnect = LedgerKind::Reconnect {
        reason: RelayReason::Operator,
    };
    assert_eq!(
        w.out(),
        vec![
            relay(ALICE, true, RelayReason::Operator),
            ledger(ALICE, at(0, 12), reconnect, 0, 10)
        ]
    );
    assert_eq!(
        w.credit(ALICE),
        0,
        "opening credit applies only on creation"
    );
}

#[test]
fn invalid_tariffs_and_configs_are_refused() {
    let mut w = World::new();
    let bad_tiers = TariffKind::Tiered {
        blocks: vec![
            TierBlock {
                up_to_wh: 50,
                rate_paisa_per_kwh: 1,
            },
            TierBlock {
                up_to_wh: 10,
                rate_paisa_per_kwh: 2,
            },
            TierBlock {
                up_to_wh: 0,
                rate_paisa_per_kwh: 3,
            },
        ],
        period_charge_paisa: 0,
    };
    let t = Tariff {
        id: 7,
        version: 1,
        kind: bad_tiers,
    };
    assert_eq!(
        w.send(0, Input::SetTariff(t)),
        Outcome::Rejected(RejectReason::Invalid)
    );
    let t = Tariff {
        id: 7,
        version: 1,
        kind: TariffKind::Flat { bands: vec![] },
    };
    assert_eq!(
        w.send(0, Input::SetTariff(t)),
        Outcome::Rejected(RejectReason::Invalid)
    );
    let cfg = BillingConfig {
        utc_offset_min: 0,
        friendly_start_min: 24 * 60,
        friendly_end_min: 0,
        disconnect_at_mpaisa: 0,
        plausible_margin_pct: ghatta_billing::clock::PLAUSIBLE_MARGIN_PCT_DEFAULT,
    };
    assert_eq!(
        w.send(0, Input::SetBillingConfig(cfg)),
        Outcome::Rejected(RejectReason::Invalid)
    );
}

/// A tariff update with the same version, or version 0, was applied (issue 26): a ledger
/// record's `tariff_version` then no longer named one tariff.
#[test]
fn tariff_versions_only_climb() {
    let mut w = World::new();
    let per_kwh = |version, rate| Tariff {
        id: 7,
        version,
        kind: TariffKind::PerKwh {
            rate_paisa_per_kwh: rate,
        },
    };
    assert_eq!(
        w.send(0, Input::SetTariff(per_kwh(0, 100))),
        Outcome::Rejected(RejectReason::Invalid)
    );
    assert_eq!(
        w.send(0, Input::SetTariff(per_kwh(2, 100))),
        Outcome::Handled
    );
    for stale in [2, 1] {
        assert_eq!(
            w.send(0, Input::SetTariff(per_kwh(stale, 999))),
            Outcome::Rejected(RejectReason::Stale),
            "version {stale}"
        );
    }
    // The refused updates changed nothing: a read is billed at version 2's rate.
    w.customer(at(0, 9), ALICE, AccountMode::Postpaid, 7, 0);
    w.read(at(0, 10), ALICE, 0);
    w.read(at(0, 11), ALICE, 1_000);
    assert_eq!(w.credit(ALICE), -100 * 1_000);
    assert_eq!(
        w.send(0, Input::SetTariff(per_kwh(3, 200))),
        Outcome::Handled
    );
}

#[test]
fn hostile_values_saturate_instead_of_trapping() {
    let mut w = World::new();
    let greedy = Tariff {
        id: 9,
        version: 1,
        kind: TariffKind::PerKwh {
            rate_paisa_per_kwh: u32::MAX,
        },
    };
    w.send(0, Input::SetTariff(greedy));
    w.customer(at(0, 9), ALICE, AccountMode::Postpaid, 9, i64::MIN + 1);
    w.read(at(0, 10), ALICE, 0);
    assert_eq!(w.read(at(0, 11), ALICE, u64::MAX), Outcome::Handled);
    assert_eq!(w.credit(ALICE), i64::MIN);
    w.customer(at(0, 9), BOB, AccountMode::Prepaid, PER_KWH, i64::MAX - 1);
    assert_eq!(
        w.top_up(at(0, 12), BOB, u64::MAX, i64::MAX),
        Outcome::Handled
    );
    assert_eq!(w.credit(BOB), i64::MAX);
    assert_eq!(
        w.top_up(at(0, 12), BOB, u64::MAX, 1),
        Outcome::Rejected(RejectReason::Replayed)
    );
    assert_eq!(
        w.tick(u64::MAX, u64::MAX, 12345),
        Outcome::Rejected(RejectReason::Invalid)
    );
}

#[test]
fn replicas_reach_identical_state() {
    fn run() -> (MemHost, Vec<Output>) {
        let mut w = World::new();
        w.customer(at(0, 9), ALICE, AccountMode::Prepaid, TIERED, 5 * NPR);
        w.customer(at(0, 9), BOB, AccountMode::Prepaid, FLAT, 5 * NPR);
        let mut outputs = Vec::new();
        for (i, h) in (10..40).enumerate() {
            w.read(at(h / 24, h % 24), ALICE, 700 * i as u64);
            w.top_up(at(h / 24, h % 24), BOB, i as u64 % 7, NPR);
            outputs.extend(w.out());
        }
        w.tick(at(1, 0), at(1, 0), TAG_DAILY);
        outputs.extend(w.out());
        (w.host, outputs)
    }
    let (a, out_a) = run();
    let (b, out_b) = run();
    assert_eq!(a.state, b.state);
    assert_eq!(out_a, out_b);
    assert!(
        out_a.len() > 20,
        "the scenario does something: {}",
        out_a.len()
    );
}

mod audit;
mod meter;
mod tokens;
