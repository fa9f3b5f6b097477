//! The cockpit's customer and tariff pages: a customer list (all, or only the disconnected)
//! with a lookup by id, one customer's account with their relay and ledger history, and the
//! tariffs in force. Drawn from `admin::accounts`' views; a plain GET form, no script.

use std::fmt::Write;

use super::html::{escape, still_page};
use crate::admin::accounts::{CustomerReply, CustomerView, CustomersReply, TariffsReply};
use crate::clock::utc_text;

/// Credit as an operator reads it: NPR with paisa (100,000 mpaisa = NPR 1).
pub fn npr(mpaisa: i64) -> String {
    let paisa = mpaisa / 1_000;
    let sign = if paisa < 0 { "-" } else { "" };
    let p = paisa.unsigned_abs();
    format!("{sign}NPR {}.{:02}", p / 100, p % 100)
}

fn supply(c: &CustomerView) -> &'static str {
    if c.connected { "supplied" } else { "cut" }
}

const SEARCH_FORM: &str = "<form method=\"get\" action=\"/ui/customers\">\
<label>Customer id <input name=\"q\" inputmode=\"numeric\" size=\"8\"></label> \
<button>Look up</button> <a href=\"/ui/customers?disconnected=1\">Only disconnected</a> \
<a href=\"/ui/customers\">All</a></form>";

/// The customer list page.
/// `on_grid`: the grid's customers and how many billing has cut (the node's status).
pub fn customers(
    node_id: u64,
    reply: &CustomersReply,
    disconnected_only: bool,
    on_grid: (u64, u64),
) -> String {
    let mut b = String::from(SEARCH_FORM);
    let _ = write!(
        b,
        "<p id=\"customer-count\">{} customers on the grid, {} cut by billing; {} on this page{}.</p>",
        on_grid.0,
        on_grid.1,
        reply.customers.len(),
        if disconnected_only {
            ", disconnected only"
        } else {
            ""
        }
    );
    b.push_str("<table><tr><th>Id</th><th>Node</th><th>Mode</th><th>Tariff</th><th>Credit</th><th>Supply</th><th>Last read</th></tr>");
    for c in &reply.customers {
        let class = if c.connected { "ok" } else { "bad" };
        let _ = write!(
            b,
            "<tr><td><a href=\"/ui/customers/{id}\">{id}</a></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"{class}\">{}</td><td>{}</td></tr>",
            c.node,
            escape(&c.mode),
            c.tariff,
            npr(c.credit_mpaisa),
            supply(c),
            c.last_read_at_ms
                .map(utc_text)
                .unwrap_or_else(|| "-".into()),
            id = c.id,
        );
    }
    b.push_str("</table>");
    if let Some(after) = reply.next_after {
        let _ = write!(
            b,
            "<p><a href=\"/ui/customers?after={after}{}\">Next page</a></p>",
            if disconnected_only {
                "&amp;disconnected=1"
            } else {
                ""
            }
        );
    }
    if reply.unreadable > 0 {
        let _ = write!(
            b,
            "<p class=\"bad\">{} accounts are stored in a format this firmware cannot read (a newer billing actor): update the firmware to list them.</p>",
            reply.unreadable
        );
    }
    still_page("Customers", node_id, &b)
}

/// One customer's page.
pub fn customer(node_id: u64, reply: &CustomerReply) -> String {
    let c = &reply.customer;
    let mut b = String::from(SEARCH_FORM);
    b.push_str("<table>");
    let mut row = |k: &str, v: String| {
        let _ = write!(b, "<tr><th>{}</th><td>{}</td></tr>", escape(k), escape(&v));
    };
    row("Customer", c.id.to_string());
    row("Node (relay board)", c.node.to_string());
    row("Mode", c.mode.clone());
    row("Tariff", c.tariff.to_string());
    row("Connection", format!("{} W", c.connection_w));
    row("Credit", npr(c.credit_mpaisa));
    row(
        "Supply",
        match &reply.relay_reason {
            Some(r) => format!("{} (last relay move: {r})", supply(c)),
            None => supply(c).to_string(),
        },
    );
    row(
        "Last meter register",
        c.last_read_wh
            .map(|wh| format!("{wh} Wh"))
            .unwrap_or_else(|| "no read yet".into()),
    );
    row(
        "Last read at",
        c.last_read_at_ms
            .map(utc_text)
            .unwrap_or_else(|| "-".into()),
    );
    if c.meter_backwards {
        row(
            "Meter",
            "read below the baseline: if it was swapped or reset, record it with `ghatta meter replace`"
                .into(),
        );
    }
    b.push_str("</table><h2>Relay moves and ledger lines</h2>");
    if reply.events.is_empty() {
        b.push_str("<p>None among the outbox's newest records.</p>");
    } else {
        super::events_table(&mut b, &reply.events);
    }
    if !reply.whole_outbox {
        b.push_str("<p>Older lines are not listed here; the central keeps them all.</p>");
    }
    still_page(&format!("Customer {}", c.id), node_id, &b)
}

/// The page for a lookup that found nothing.
pub fn no_customer(node_id: u64, what: &str) -> String {
    let b = format!("{SEARCH_FORM}<p class=\"bad\">{}</p>", escape(what));
    still_page("Customers", node_id, &b)
}

/// The tariffs page.
pub fn tariffs(node_id: u64, reply: &TariffsReply) -> String {
    let mut b = String::new();
    if reply.tariffs.is_empty() {
        b.push_str("<p>No tariff is set: set one with `ghatta tariff set`.</p>");
    } else {
        b.push_str("<table><tr><th>Id</th><th>Version</th><th>Kind</th><th>Rates</th></tr>");
        for t in &reply.tariffs {
            let _ = write!(
                b,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                t.id,
                t.version,
                escape(&t.kind),
                escape(&t.rates)
            );
        }
        b.push_str("</table>");
    }
    if reply.unreadable > 0 {
        let _ = write!(
            b,
            "<p class=\"bad\">{} tariffs are stored in a format this firmware cannot read.</p>",
            reply.unreadable
        );
    }
    still_page("Tariffs", node_id, &b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credit_reads_in_rupees_and_paisa_with_its_sign() {
        assert_eq!(npr(0), "NPR 0.00");
        assert_eq!(npr(1_234_567), "NPR 12.34");
        assert_eq!(npr(-50_000), "-NPR 0.50");
        assert_eq!(npr(-999), "NPR 0.00", "less than a paisa of debt");
    }

    #[test]
    fn a_full_page_of_customers_stays_under_the_page_budget() {
        let c = |id| CustomerView {
            id,
            node: 3,
            mode: "prepaid".into(),
            tariff: 1,
            connection_w: 250,
            credit_mpaisa: -123_456_789,
            connected: id % 2 == 0,
            last_read_wh: Some(4_000_000_000),
            last_read_at_ms: Some(1_800_000_000_000),
            meter_backwards: false,
        };
        let reply = CustomersReply {
            customers: (0..crate::admin::accounts::CUSTOMERS_PAGE_MAX as u32)
                .map(c)
                .collect(),
            next_after: Some(499),
            unreadable: 0,
        };
        let page = customers(1, &reply, false, (3_000, 1_500));
        assert!(
            page.len() < super::super::PAGE_BYTES_MAX,
            "{} bytes",
            page.len()
        );
        assert!(page.contains("500 on this page") && page.contains("after=499"));
        assert!(
            !page.contains("http-equiv=\"refresh\""),
            "a lookup page does not reload under the clerk"
        );
    }
}
