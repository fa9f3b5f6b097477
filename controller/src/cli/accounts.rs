//! `ghatta customer list|show` and `ghatta tariff list`: the billing actor's accounts and
//! tariffs as text for a terminal (`--json` prints the admin API's answer as it is).

use ghatta::admin::accounts::{CustomerReply, CustomersReply, TariffsReply};
use ghatta::admin::cockpit::accounts::npr;
use ghatta::clock::utc_text;

/// A page of customers, one line each.
pub fn format_customers(r: &CustomersReply) -> String {
    if r.customers.is_empty() {
        return "no customer on this page (add customers with POST /customer)".into();
    }
    let mut out = format!(
        "{:>8}  {:>4}  {:<8}  {:>6}  {:>14}  {:<8}  last read\n",
        "customer", "node", "mode", "tariff", "credit", "supply"
    );
    for c in &r.customers {
        out.push_str(&format!(
            "{:>8}  {:>4}  {:<8}  {:>6}  {:>14}  {:<8}  {}\n",
            c.id,
            c.node,
            c.mode,
            c.tariff,
            npr(c.credit_mpaisa),
            if c.connected { "supplied" } else { "cut" },
            c.last_read_at_ms
                .map(utc_text)
                .unwrap_or_else(|| "-".into())
        ));
    }
    if let Some(after) = r.next_after {
        out.push_str(&format!("(more: --after {after})\n"));
    }
    if r.unreadable > 0 {
        out.push_str(&format!(
            "({} accounts are in a format this firmware cannot read: update it)\n",
            r.unreadable
        ));
    }
    out.trim_end().to_string()
}

/// One customer: the account, then their relay moves and ledger lines, newest first.
pub fn format_customer(r: &CustomerReply) -> String {
    let c = &r.customer;
    let mut out = format!(
        "customer {} on node {}: {}, tariff {}, {} W\ncredit {}  supply {}{}\n",
        c.id,
        c.node,
        c.mode,
        c.tariff,
        c.connection_w,
        npr(c.credit_mpaisa),
        if c.connected { "supplied" } else { "cut" },
        r.relay_reason
            .as_deref()
            .map(|why| format!(" (last relay move: {why})"))
            .unwrap_or_default()
    );
    match (c.last_read_wh, c.last_read_at_ms) {
        (Some(wh), Some(at)) => out.push_str(&format!("meter {wh} Wh at {}\n", utc_text(at))),
        (Some(wh), None) => out.push_str(&format!("meter {wh} Wh\n")),
        _ => out.push_str("meter: no read yet\n"),
    }
    if c.meter_backwards {
        out.push_str(
            "meter read below its baseline: if it was swapped or reset, run `ghatta meter replace`\n",
        );
    }
    for e in &r.events {
        out.push_str(&format!(
            "{}  {:<6} {}\n",
            utc_text(e.time_ms),
            e.kind,
            e.what
        ));
    }
    out.trim_end().to_string()
}

/// The tariffs in force.
pub fn format_tariffs(r: &TariffsReply) -> String {
    if r.tariffs.is_empty() {
        return "no tariff is set (ghatta tariff set ...)".into();
    }
    let mut out = String::new();
    for t in &r.tariffs {
        out.push_str(&format!(
            "tariff {:>3} v{:<3} {:<8} {}\n",
            t.id, t.version, t.kind, t.rates
        ));
    }
    if r.limited {
        out.push_str("(the list stopped at its limit)\n");
    }
    out.trim_end().to_string()
}
