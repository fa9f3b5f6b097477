//! An auditor's check of a grid's bills from the central's exports alone: the ledger export
//! (every line with the meter read it was billed from) and the set-up route (tariff versions
//! and billing configurations). Every charge, fee and balance is recomputed here from reads,
//! tariffs, top-ups and the documented rules (the billing actor's module documentation), by
//! code of its own: nothing of the billing actor is called, so a wrong bill cannot be
//! "confirmed" by the code that made it.

use std::collections::BTreeMap;

use serde_json::Value;

/// Days in a tiered tariff's billing period (the SDK's `TariffKind::Tiered`: 30 local days).
const PERIOD_DAYS: u64 = 30;
const DAY_MS: u64 = 86_400_000;
const MINUTE_MS: u64 = 60_000;
/// 1 paisa = 1,000 mpaisa.
const MPAISA_PER_PAISA: i64 = 1_000;

/// What the audit covered.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Audited {
    /// Accounts followed from their opening line.
    pub accounts: u64,
    /// Charges whose energy, amount and friendly flag were recomputed from their read.
    pub charges: u64,
    /// Fees recomputed from the tariff.
    pub fees: u64,
    /// Credits (top-ups, tokens, operator credits) followed.
    pub credits: u64,
    /// Lines whose balance was recomputed.
    pub balances: u64,
    /// Disconnects checked against the threshold.
    pub disconnects: u64,
}

#[derive(Debug, Clone)]
enum Schedule {
    PerKwh(i64),
    /// (up_to_wh, rate paisa/kWh) blocks, period charge in paisa.
    Tiered(Vec<(u64, i64)>, i64),
    /// (up_to_w, daily fee paisa) bands.
    Flat(Vec<(u32, i64)>),
}

#[derive(Debug, Clone, Copy)]
struct Config {
    utc_offset_min: i64,
    friendly_start_min: u64,
    friendly_end_min: u64,
    disconnect_at_mpaisa: i64,
}

/// `key=value;...` as a map.
fn fields(detail: &str) -> BTreeMap<&str, &str> {
    detail
        .split(';')
        .filter_map(|kv| kv.split_once('='))
        .collect()
}

fn num<T: std::str::FromStr>(f: &BTreeMap<&str, &str>, key: &str, what: &str) -> T {
    f.get(key)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{what}: no number {key} in {f:?}"))
}

fn pairs(s: &str) -> Vec<(u64, i64)> {
    s.split(' ')
        .map(|p| {
            let (a, b) = p.split_once(':').expect("a pair");
            (a.parse().expect("bound"), b.parse().expect("rate"))
        })
        .collect()
}

fn local_ms(at_ms: u64, cfg: &Config) -> u64 {
    (at_ms as i64 + cfg.utc_offset_min * MINUTE_MS as i64) as u64
}

fn in_friendly_hours(at_ms: u64, cfg: &Config) -> bool {
    let minute = local_ms(at_ms, cfg) / MINUTE_MS % 1_440;
    let (s, e) = (cfg.friendly_start_min, cfg.friendly_end_min);
    if s <= e {
        s <= minute && minute < e
    } else {
        minute >= s || minute < e
    }
}

fn tiered_mpaisa(blocks: &[(u64, i64)], used_wh: u64, delta_wh: u64) -> i64 {
    let mut total = 0i64;
    let mut lower = 0u64;
    for (i, &(up_to, rate)) in blocks.iter().enumerate() {
        let upper = if i + 1 == blocks.len() {
            u64::MAX
        } else {
            up_to
        };
        let lo = used_wh.max(lower);
        let hi = (used_wh + delta_wh).min(upper);
        if hi > lo {
            total += (hi - lo) as i64 * rate;
        }
        lower = upper;
    }
    total
}

/// One account as the auditor follows it.
#[derive(Debug, Default)]
struct Acct {
    prepaid: bool,
    tariff: u64,
    connection_w: u32,
    balance: i64,
    register_wh: Option<u64>,
    period: Option<u64>,
    period_used_wh: u64,
}

/// Recomputes every line of `ledger` (the export's rows, in (customer, seq) order) from the
/// set-up rows and the reads; answers what it covered and the mismatches found.
pub fn audit(ledger: &[Value], setup: &[Value]) -> (Audited, Vec<String>) {
    let mut tariffs: BTreeMap<(u64, u64), Schedule> = BTreeMap::new();
    let mut configs: Vec<(u64, Config)> = Vec::new();
    for s in setup {
        let f = fields(s["detail"].as_str().expect("detail"));
        let log_index = s["log_index"].as_u64().expect("log_index");
        match s["kind"].as_str() {
            Some("Tariff") => {
                let key = (num(&f, "id", "tariff"), num(&f, "version", "tariff"));
                let schedule = match f.get("kind").copied() {
                    Some("PerKwh") => Schedule::PerKwh(num(&f, "rate_paisa_per_kwh", "tariff")),
                    Some("Tiered") => Schedule::Tiered(
                        pairs(f["blocks"]),
                        num(&f, "period_charge_paisa", "tariff"),
                    ),
                    Some("Flat") => Schedule::Flat(
                        pairs(f["bands"])
                            .into_iter()
                            .map(|(w, fee)| (w as u32, fee))
                            .collect(),
                    ),
                    other => panic!("an unknown tariff kind {other:?}"),
                };
                tariffs.insert(key, schedule);
            }
            Some("BillingConfig") => configs.push((
                log_index,
                Config {
                    utc_offset_min: num(&f, "utc_offset_min", "config"),
                    friendly_start_min: num(&f, "friendly_start_min", "config"),
                    friendly_end_min: num(&f, "friendly_end_min", "config"),
                    disconnect_at_mpaisa: num(&f, "disconnect_at_mpaisa", "config"),
                },
            )),
            other => panic!("an unknown set-up kind {other:?}"),
        }
    }
    configs.sort_by_key(|(i, _)| *i);
    let config_at = |log_index: u64| {
        configs
            .iter()
            .rev()
            .find(|(i, _)| *i <= log_index)
            .map(|(_, c)| *c)
    };
    let mut done = Audited::default();
    let mut bad = Vec::new();
    let mut accounts: BTreeMap<u64, Acct> = BTreeMap::new();
    for (n, l) in ledger.iter().enumerate() {
        let u = |k: &str| l[k].as_u64();
        let customer = u("customer").expect("customer");
        let seq = u("seq").expect("seq");
        let at_ms = u("at_ms").expect("at_ms");
        let kind = l["kind"].as_str().expect("kind");
        let amount = l["amount_mpaisa"].as_i64().expect("amount");
        let balance_after = l["balance_after_mpaisa"].as_i64().expect("balance");
        let energy_wh = u("energy_wh").expect("energy");
        let read = (u("read_from_wh"), u("read_to_wh"));
        let f = fields(l["detail"].as_str().unwrap_or(""));
        let mut miss = |what: String| bad.push(format!("customer {customer} seq {seq}: {what}"));
        let Some(cfg) = config_at(u("log_index").unwrap_or(0)) else {
            miss("no billing configuration in force".into());
            continue;
        };
        if kind == "Account" {
            let a = accounts.entry(customer).or_default();
            if f.get("opened") == Some(&"true") {
                done.accounts += 1;
                a.balance = balance_after;
            }
            a.prepaid = f.get("mode") == Some(&"Prepaid");
            a.tariff = num(&f, "tariff", "account");
            a.connection_w = num(&f, "connection_w", "account");
        }
        let Some(a) = accounts.get_mut(&customer) else {
            miss(format!("a {kind} line before the account's opening line"));
            continue;
        };
        let version = u("tariff_version").expect("tariff version");
        let schedule = tariffs.get(&(a.tariff, version));
        let period = local_ms(at_ms, &cfg) / (PERIOD_DAYS * DAY_MS);
        match kind {
            "Account" => {}
            "Baseline" => {
                a.register_wh = read.1;
                a.period = Some(period);
                a.period_used_wh = 0;
            }
            "Charge" => {
                done.charges += 1;
                let (Some(from), Some(to)) = read else {
                    miss("a charge without its read".into());
                    continue;
                };
                if a.register_wh != Some(from) {
                    miss(format!(
                        "billed from {from} Wh, the register before was {:?}",
                        a.register_wh
                    ));
                }
                // A read whose excess was held: the held line follows with the same read.
                let next = ledger.get(n + 1).filter(|x| {
                    x["customer"].as_u64() == Some(customer)
                        && x["kind"] == "Held"
                        && x["read_from_wh"].as_u64() == Some(from)
                        && x["read_to_wh"].as_u64() == Some(to)
                });
                let held = next.map_or(0, |x| {
                    num::<u64>(
                        &fields(x["detail"].as_str().unwrap_or("")),
                        "held_wh",
                        "held",
                    )
                });
                if energy_wh + held != to.saturating_sub(from) {
                    miss(format!(
                        "{energy_wh} Wh billed + {held} held for a read from {from} to {to}"
                    ));
                }
                if next.is_none() {
                    a.register_wh = Some(to);
                }
                let expected = match schedule {
                    Some(Schedule::PerKwh(rate)) => Some(energy_wh as i64 * rate),
                    Some(Schedule::Tiered(blocks, _)) => {
                        if a.period != Some(period) {
                            // A period's first read owes the period charge first (a Fee line).
                            a.period = Some(period);
                            a.period_used_wh = 0;
                        }
                        let m = tiered_mpaisa(blocks, a.period_used_wh, energy_wh);
                        a.period_used_wh += energy_wh;
                        Some(m)
                    }
                    Some(Schedule::Flat(_)) => None,
                    None => None,
                };
                if expected != Some(amount) {
                    miss(format!(
                        "charged {amount} mpaisa for {energy_wh} Wh, the tariff {} v{version} gives {expected:?}",
                        a.tariff
                    ));
                }
                let friendly = a.prepaid && in_friendly_hours(at_ms, &cfg);
                if l["friendly"].as_bool() != Some(friendly) {
                    miss(format!(
                        "friendly flag {}, expected {friendly}",
                        l["friendly"]
                    ));
                }
                a.balance -= amount;
            }
            "Held" => {
                let (Some(from), Some(to)) = read else {
                    miss("a held read without its read".into());
                    continue;
                };
                let held: u64 = num(&f, "held_wh", "held");
                let allowed: u64 = num(&f, "allowed_wh", "held");
                if allowed == 0 && (a.register_wh != Some(from) || held != to - from) {
                    miss(format!("held {held} Wh of a read from {from} to {to}"));
                }
                a.register_wh = Some(to);
            }
            "Fee" => {
                done.fees += 1;
                let ok = match schedule {
                    Some(Schedule::Tiered(_, period_paisa)) => {
                        a.period = Some(period);
                        a.period_used_wh = 0;
                        amount == period_paisa * MPAISA_PER_PAISA
                    }
                    Some(Schedule::Flat(bands)) => {
                        let per_day = bands
                            .iter()
                            .find(|(w, _)| *w >= a.connection_w)
                            .or(bands.last())
                            .map_or(0, |(_, fee)| fee * MPAISA_PER_PAISA);
                        per_day > 0 && amount > 0 && amount % per_day == 0
                    }
                    _ => false,
                };
                if !ok {
                    miss(format!("a fee of {amount} mpaisa the tariff does not give"));
                }
                a.balance -= amount;
            }
            "TopUp" | "OperatorCredit" | "TokenCredit" => {
                done.credits += 1;
                a.balance += amount;
            }
            "Disconnect" => {
                done.disconnects += 1;
                if !a.prepaid || a.balance > cfg.disconnect_at_mpaisa {
                    miss(format!(
                        "disconnected with {} mpaisa (threshold {}, prepaid {})",
                        a.balance, cfg.disconnect_at_mpaisa, a.prepaid
                    ));
                }
            }
            "Reconnect" => {}
            "ReadRejected" => {
                if !matches!(read, (Some(from), Some(to)) if to < from && a.register_wh == Some(from))
                {
                    miss(format!(
                        "a refused read {read:?} against {:?}",
                        a.register_wh
                    ));
                }
            }
            "MeterReplaced" => {
                let old: u64 = num(&f, "old_final_wh", "replacement");
                if a.register_wh != Some(old) {
                    miss(format!(
                        "replaced at {old} Wh, billed to {:?}",
                        a.register_wh
                    ));
                }
                a.register_wh = Some(num(&f, "new_read_wh", "replacement"));
            }
            other => miss(format!("a line of unknown kind {other}")),
        }
        done.balances += 1;
        if a.balance != balance_after {
            miss(format!(
                "balance after is {balance_after} mpaisa, recomputed {}",
                a.balance
            ));
            // Follow the grid's figure so one error is reported once, not on every line after.
            a.balance = balance_after;
        }
    }
    (done, bad)
}

/// Every row of a streamed JSON route (`Transfer-Encoding: chunked`, the whole range in one
/// answer), through a plain HTTP/1.1 request.
pub async fn streamed_rows(addr: std::net::SocketAddr, token: &str, path: &str) -> Vec<Value> {
    let r = crate::wan::http_get(addr, token, path).await;
    let (head, body) = r.split_once("\r\n\r\n").unwrap_or((&r, ""));
    assert!(head.starts_with("HTTP/1.1 200"), "{path}: {head}");
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        ghatta_proto::chunked::decode_text(body.as_bytes())
            .unwrap_or_else(|e| panic!("{path}: {e}"))
    } else {
        body.to_string()
    };
    let page: Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"));
    page["rows"].as_array().expect("rows").clone()
}

/// The auditor finds what a wrong bill would look like: a charge not worth its read, a read
/// that does not start where the last one ended, a balance that does not follow.
#[test]
fn the_audit_catches_a_wrong_charge_a_broken_read_chain_and_a_wrong_balance() {
    let setup = vec![
        serde_json::json!({"seq": 0, "log_index": 1, "at_ms": 0, "kind": "Tariff",
            "detail": "id=1;version=1;kind=PerKwh;rate_paisa_per_kwh=1500"}),
        serde_json::json!({"seq": 1, "log_index": 2, "at_ms": 0, "kind": "BillingConfig",
            "detail": "utc_offset_min=345;friendly_start_min=0;friendly_end_min=0;disconnect_at_mpaisa=0;plausible_margin_pct=300"}),
    ];
    let line = |seq: u64,
                kind: &str,
                detail: &str,
                energy: u64,
                amount: i64,
                balance: i64,
                read: (Option<u64>, Option<u64>)| {
        serde_json::json!({"customer": 4, "seq": seq, "at_ms": 1_000 + seq, "kind": kind,
            "detail": detail, "energy_wh": energy, "amount_mpaisa": amount,
            "balance_after_mpaisa": balance, "tariff_version": 1, "log_index": 10 + seq,
            "friendly": false, "read_from_wh": read.0, "read_to_wh": read.1})
    };
    let good = vec![
        line(
            0,
            "Account",
            "opened=true;mode=Prepaid;tariff=1;connection_w=250",
            0,
            0,
            100_000,
            (None, None),
        ),
        line(1, "Baseline", "", 0, 0, 100_000, (Some(500), Some(500))),
        line(2, "Charge", "", 20, 30_000, 70_000, (Some(500), Some(520))),
        line(3, "Charge", "", 10, 15_000, 55_000, (Some(520), Some(530))),
    ];
    let (done, bad) = audit(&good, &setup);
    assert_eq!(bad, Vec::<String>::new());
    assert_eq!((done.accounts, done.charges, done.balances), (1, 2, 4));
    let mut wrong_amount = good.clone();
    wrong_amount[2]["amount_mpaisa"] = 31_000.into();
    wrong_amount[2]["balance_after_mpaisa"] = 69_000.into();
    wrong_amount[3]["balance_after_mpaisa"] = 54_000.into();
    let (_, bad) = audit(&wrong_amount, &setup);
    assert_eq!(bad.len(), 1, "{bad:?}");
    assert!(bad[0].contains("charged 31000 mpaisa for 20 Wh"), "{bad:?}");
    let mut broken_chain = good.clone();
    broken_chain[3]["read_from_wh"] = 525.into();
    broken_chain[3]["read_to_wh"] = 535.into();
    let (_, bad) = audit(&broken_chain, &setup);
    assert!(
        bad[0].contains("billed from 525 Wh, the register before was Some(520)"),
        "{bad:?}"
    );
    let mut wrong_balance = good;
    wrong_balance[3]["balance_after_mpaisa"] = 56_000.into();
    let (_, bad) = audit(&wrong_balance, &setup);
    assert!(
        bad[0].contains("balance after is 56000 mpaisa, recomputed 55000"),
        "{bad:?}"
    );
}
