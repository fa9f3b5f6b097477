//! OpenPAYGO Token interop: the sequences `tests/fixtures/gen_tokens.py` made with the reference
//! `openpaygo` package, replayed through the billing actor, which must accept and refuse each
//! code as the reference decoder did, with the same value, count and type.

use super::*;
use ghatta_actor_sdk::{TokenKey, TokenTopUp};
use ghatta_billing::store::Store;

/// The reference's verdicts (regenerated and diffed by `.ci/run`).
const FIXTURE: &str = include_str!("../fixtures/openpaygo_tokens.txt");
/// What one token unit is worth in these tests: 1 NPR.
const UNIT_MPAISA: i64 = NPR;

fn key_of(hex: &str) -> [u8; 16] {
    let mut key = [0u8; 16];
    assert_eq!(hex.len(), 32, "key {hex} is not 32 hex digits");
    for (i, b) in key.iter_mut().enumerate() {
        *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).expect("hex key");
    }
    key
}

fn token_customer(w: &mut World, t: u64, id: CustomerId, key: [u8; 16], starting_code: u32) {
    let spec = CustomerSpec {
        id,
        node: NODE,
        mode: AccountMode::Prepaid,
        tariff: PER_KWH,
        connection_w: 250,
        opening_credit_mpaisa: 0,
        token: Some(TokenKey {
            secret_key: key,
            starting_code,
            unit_mpaisa: UNIT_MPAISA,
        }),
    };
    assert_eq!(w.send(t, Input::UpsertCustomer(spec)), Outcome::Handled);
    w.out();
}

fn enter(w: &mut World, t: u64, id: CustomerId, code: u32) -> Outcome {
    w.send(t, Input::TokenTopUp(TokenTopUp { customer: id, code }))
}

#[test]
fn the_actor_accepts_and_refuses_every_fixture_token_as_the_reference_decoder_does() {
    let mut w = World::new();
    let mut id = CustomerId(1_000);
    let mut checked = 0;
    let (mut accepted, mut used, mut invalid) = (0, 0, 0);
    for (n, line) in FIXTURE.lines().enumerate() {
        let f: Vec<&str> = line.split_whitespace().collect();
        let t = at(1, 12) + n as u64;
        match f.as_slice() {
            [] | ["#", ..] => {}
            ["seq", _name, key, starting_code] => {
                id = CustomerId(id.0 + 1);
                let sc: u32 = starting_code.parse().expect("starting code");
                token_customer(&mut w, t, id, key_of(key), sc);
            }
            ["tok", code, verdict @ ..] => {
                let code: u32 = code.parse().expect("code");
                let before = w.credit(id);
                let got = enter(&mut w, t, id, code);
                let out = w.out();
                match verdict {
                    ["accept", value, count, kind] => {
                        let value: u32 = value.parse().unwrap();
                        let count: u32 = count.parse().unwrap();
                        assert_eq!(got, Outcome::Handled, "line {}: {line}", n + 1);
                        let credited = out.iter().find_map(|o| match o {
                            Output::Ledger(LedgerRecord {
                                kind:
                                    LedgerKind::TokenCredit {
                                        code: c,
                                        count,
                                        value,
                                        set,
                                        amount_mpaisa,
                                    },
                                ..
                            }) => Some((*c, *count, *value, *set, *amount_mpaisa)),
                            _ => None,
                        });
                        let (c, got_count, got_value, set, amount) =
                            credited.unwrap_or_else(|| panic!("line {}: no ledger line", n + 1));
                        assert_eq!(
                            (c, got_count, got_value, set),
                            (code, count, value, *kind == "set"),
                            "line {}: {line}",
                            n + 1
                        );
                        let worth = i64::from(value) * UNIT_MPAISA;
                        let expected = match *kind {
                            "add" => worth,
                            "set" => worth - before,
                            _ => 0,
                        };
                        assert_eq!(amount, expected, "line {}: {line}", n + 1);
                        assert_eq!(w.credit(id), before + expected, "line {}", n + 1);
                        accepted += 1;
                    }
                    ["refuse", why] => {
                        let (reason, alarm) = match *why {
                            "used" => (RejectReason::Replayed, AlarmCode::TokenReplayed),
                            _ => (RejectReason::Invalid, AlarmCode::TokenInvalid),
                        };
                        assert_eq!(got, Outcome::Rejected(reason), "line {}: {line}", n + 1);
                        assert_eq!(
                            alarm_codes(&out),
                            vec![(alarm, id.0, i64::from(code))],
                            "line {}: the refusal's alarm",
                            n + 1
                        );
                        assert_eq!(
                            w.credit(id),
                            before,
                            "line {}: a refusal credits nothing",
                            n + 1
                        );
                        if *why == "used" {
                            used += 1;
                        } else {
                            invalid += 1;
                        }
                    }
                    _ => panic!("line {}: unknown verdict {line}", n + 1),
                }
                checked += 1;
            }
            _ => panic!("line {}: cannot parse {line}", n + 1),
        }
    }
    // The fixture covers every verdict, so a truncated file cannot pass.
    assert!(checked >= 100, "only {checked} tokens in the fixture");
    assert!(
        accepted >= 50 && used >= 15 && invalid >= 12,
        "{accepted}/{used}/{invalid}"
    );
}

#[test]
fn a_token_is_refused_without_a_key_and_a_new_key_restarts_the_count() {
    let mut w = World::new();
    w.customer(at(0, 9), ALICE, AccountMode::Prepaid, PER_KWH, 0);
    assert_eq!(
        enter(&mut w, at(0, 10), ALICE, 123_456_789),
        Outcome::Rejected(RejectReason::Unknown)
    );
    assert_eq!(
        alarm_codes(&w.out()),
        vec![(AlarmCode::TokenInvalid, ALICE.0, 123_456_789)]
    );
    // The first fixture sequence's first token, typed for an account with that key.
    let mut seq = FIXTURE.lines().filter(|l| l.starts_with("seq ")).map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (key_of(f[2]), f[3].parse::<u32>().unwrap())
    });
    let (key, sc) = seq.next().unwrap();
    let first: u32 = FIXTURE
        .lines()
        .find(|l| l.starts_with("tok "))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap()
        .parse()
        .unwrap();
    token_customer(&mut w, at(0, 11), ALICE, key, sc);
    assert_eq!(enter(&mut w, at(0, 12), ALICE, first), Outcome::Handled);
    w.out();
    // The same key again (a tariff change): the count is kept, so the token stays used.
    token_customer(&mut w, at(0, 13), ALICE, key, sc);
    assert_eq!(
        enter(&mut w, at(0, 14), ALICE, first),
        Outcome::Rejected(RejectReason::Replayed)
    );
    w.out();
    // Another key, then the old one back: a new count, as the office's generator would start.
    let (other, other_sc) = seq.next().unwrap();
    token_customer(&mut w, at(0, 15), ALICE, other, other_sc);
    token_customer(&mut w, at(0, 16), ALICE, key, sc);
    assert_eq!(enter(&mut w, at(0, 17), ALICE, first), Outcome::Handled);
}

#[test]
fn a_token_reconnects_a_disconnected_account_and_the_key_is_not_in_debug_output() {
    let mut w = World::new();
    let (key, sc) = FIXTURE
        .lines()
        .find(|l| l.starts_with("seq "))
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (key_of(f[2]), f[3].parse::<u32>().unwrap())
        })
        .unwrap();
    token_customer(&mut w, at(0, 9), ALICE, key, sc);
    w.read(at(0, 10), ALICE, 0);
    // 1 kWh at 10 NPR on zero credit, outside friendly hours: cut.
    w.read(at(0, 12), ALICE, 1_000);
    assert!(!w.connected(ALICE));
    w.out();
    // The first fixture token is worth 1 unit = 1 NPR, not enough; the second 5 NPR: together
    // -10 + 6 = -4 NPR, still cut; the third (100 NPR) lifts it above zero.
    let codes: Vec<u32> = FIXTURE
        .lines()
        .filter(|l| l.starts_with("tok "))
        .take(3)
        .map(|l| l.split_whitespace().nth(1).unwrap().parse().unwrap())
        .collect();
    for (i, &code) in codes.iter().enumerate() {
        assert_eq!(
            enter(&mut w, at(0, 13) + i as u64, ALICE, code),
            Outcome::Handled
        );
    }
    assert!(w.connected(ALICE));
    assert_eq!(w.credit(ALICE), 96 * NPR);
    let out = w.out();
    assert!(out.contains(&relay(ALICE, true, RelayReason::CreditRestored)));
    // The secrets never show in a debug print of the account's token record.
    let st = Store::new(&mut w.host);
    let shown = format!("{:?}", st.token_account(ALICE).unwrap());
    assert!(!shown.contains(&format!("{sc}")), "{shown}");
    assert!(shown.contains("redacted"), "{shown}");
}
