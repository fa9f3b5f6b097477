//! The central's HTML pages, server-rendered like the board's cockpit: one small stylesheet
//! inline, inline SVG for the one chart, no script, no external asset, so a page works over
//! an SSH tunnel on a slow link. The fleet page (`/ui`) lists every grid, silent ones first;
//! a grid's page (`/ui/grids/G`) shows its state, its energy per local day, its customers'
//! balances and its recent events, with links to the CSV exports. The frame and escaping are
//! the board's cockpit's too (`ghatta_proto::html`); the navigation and stylesheet are the
//! central's.

use std::fmt::Write as _;

use ghatta_proto::html::Frame;
use ghatta_proto::html::escape;

use crate::fleet::{EventRow, FleetEntry, GridToday};
use crate::localtime::{date_text, iso_local};
use crate::store::{GridState, LedgerRow};

/// Seconds between reloads of the fleet page: a grid's upload comes every few minutes, so a
/// minute keeps the wall screen current at a few KiB a minute.
pub const REFRESH_S: u32 = 60;
/// Days of energy the grid page's chart draws.
pub const CHART_DAYS: usize = 30;
/// Recent events the grid page lists.
pub const PAGE_EVENTS: usize = 50;

/// mpaisa per rupee (1 NPR = 100 paisa = 100,000 mpaisa).
const MPAISA_PER_RUPEE: i64 = 100_000;

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:0 auto;max-width:1100px;padding:8px;color:#222}\
nav a{margin-right:1em}table{border-collapse:collapse;margin:8px 0}td,th{border:1px solid #ddd;padding:2px 8px;text-align:left}\
td.n{text-align:right}.chart{width:100%;height:auto;max-width:700px}.bad{color:#b00;font-weight:bold}.ok{color:#070}h2{margin:16px 0 4px}";

/// The central's navigation bar.
const NAV: [(&str, &str); 3] = [
    ("/ui", "Fleet"),
    ("/v1/grids", "Fleet (JSON)"),
    ("/v1/status", "Status (JSON)"),
];

/// A whole page: `title` and `body`; it reloads every [`REFRESH_S`] when `live`.
pub fn page(title: &str, body: &str, live: bool) -> String {
    Frame {
        site: "ghatta central",
        nav: &NAV,
        style: STYLE,
        refresh_s: live.then_some(REFRESH_S),
    }
    .page(title, body)
}

/// A duration as a person reads it: `45 s`, `12 min`, `5 h 3 min`, `3 d 4 h`.
pub fn ago(ms: u64) -> String {
    let s = ms / 1_000;
    match s {
        0..60 => format!("{s} s"),
        60..3_600 => format!("{} min", s / 60),
        3_600..86_400 => format!("{} h {} min", s / 3_600, s / 60 % 60),
        _ => format!("{} d {} h", s / 86_400, s / 3_600 % 24),
    }
}

/// mpaisa as rupees with paisa: `1234.56`.
fn rupees(mpaisa: i64) -> String {
    let sign = if mpaisa < 0 { "-" } else { "" };
    let a = mpaisa.unsigned_abs();
    let per = MPAISA_PER_RUPEE.unsigned_abs();
    format!("{sign}{}.{:02}", a / per, a % per / 1_000)
}

/// Wh as kWh with one decimal.
fn kwh(wh: u64) -> String {
    format!("{}.{}", wh / 1_000, wh % 1_000 / 100)
}

fn alarms_text(t: &GridToday) -> String {
    if t.alarms.is_empty() {
        return "<span class=\"ok\">none</span>".into();
    }
    let list: Vec<String> = t
        .alarms
        .iter()
        .map(|(code, n)| format!("{} &times;{n}", escape(code)))
        .collect();
    format!("<span class=\"bad\">{}</span>", list.join(", "))
}

/// The fleet page: every grid, silent ones first.
pub fn fleet_page(rows: &[FleetEntry], truncated: bool, silent_hours: u64) -> String {
    let silent = rows.iter().filter(|r| r.silent).count();
    let mut b = format!(
        "<p>{} grids; <span class=\"{}\">{silent} silent for more than {silent_hours} h</span> \
(listed first). Energy and revenue are today's in each grid's local day; alarms are those of \
the grid's last 24 h of log time.</p>",
        rows.len(),
        if silent > 0 { "bad" } else { "ok" }
    );
    if truncated {
        b.push_str(
            "<p class=\"bad\">The list is cut short; the JSON at /v1/grids says the same.</p>",
        );
    }
    b.push_str(
        "<table><tr><th>Grid</th><th>Last upload</th><th>WAN lag</th><th>Alarms</th>\
<th>Local date</th><th>Energy today, kWh</th><th>Revenue today, NPR</th><th>Records</th></tr>",
    );
    for r in rows {
        let g = r.row.grid;
        let _ = write!(
            b,
            "<tr><td><a href=\"/ui/grids/{g}\">{g}</a></td><td class=\"{}\">{} ago</td><td>{}</td>\
<td>{}</td><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
            if r.silent { "bad" } else { "ok" },
            ago(r.since_upload_ms),
            ago(r.wan_lag_ms),
            alarms_text(&r.today),
            escape(&r.today.local_date),
            kwh(r.today.energy_wh),
            rupees(r.today.revenue_mpaisa),
            r.row.records
        );
    }
    b.push_str("</table>");
    page("Fleet", &b, true)
}

/// An inline SVG bar chart of energy per local day (the newest [`CHART_DAYS`]).
fn energy_chart(days: &[(u64, u64)]) -> String {
    let days = &days[days.len().saturating_sub(CHART_DAYS)..];
    let Some(max) = days.iter().map(|d| d.1).max().filter(|m| *m > 0) else {
        return "<p>No closed energy hours yet.</p>".into();
    };
    let (w, h, bar) = (700u64, 160u64, 700 / CHART_DAYS as u64);
    let mut svg = format!(
        "<svg class=\"chart\" viewBox=\"0 0 {w} {}\" role=\"img\" aria-label=\"energy per local day\">",
        h + 20
    );
    for (i, (day, wh)) in days.iter().enumerate() {
        let bh = wh * h / max;
        let x = i as u64 * bar;
        let _ = write!(
            svg,
            "<rect x=\"{x}\" y=\"{}\" width=\"{}\" height=\"{bh}\" fill=\"#4a7\"><title>{} {} kWh</title></rect>",
            h - bh,
            bar.saturating_sub(2),
            date_text(*day),
            kwh(*wh)
        );
    }
    let _ = write!(
        svg,
        "<text x=\"0\" y=\"{}\" font-size=\"12\">{}</text><text x=\"{}\" y=\"{}\" font-size=\"12\" text-anchor=\"end\">{} (max {} kWh)</text></svg>",
        h + 15,
        days.first().map(|d| date_text(d.0)).unwrap_or_default(),
        w,
        h + 15,
        days.last().map(|d| date_text(d.0)).unwrap_or_default(),
        kwh(max)
    );
    svg
}

/// What the grid page shows.
pub struct GridPage<'a> {
    /// Its fleet entry (last upload, lag, today).
    pub entry: &'a FleetEntry,
    /// Its state.
    pub state: &'a GridState,
    /// Each customer's newest ledger line.
    pub customers: &'a [LedgerRow],
    /// Energy per local day, ascending.
    pub days: &'a [(u64, u64)],
    /// Recent events, newest first.
    pub events: &'a [EventRow],
}

/// A grid's page.
pub fn grid_page(p: &GridPage<'_>) -> String {
    let e = p.entry;
    let g = e.row.grid;
    let off = e.today.utc_offset_min;
    let mut b = format!(
        "<table><tr><th>Last upload</th><td class=\"{}\">{} ago</td></tr>\
<tr><th>Newest record</th><td>{} (WAN lag {})</td></tr><tr><th>Records</th><td>{} ({} ledger lines back-filled)</td></tr>\
<tr><th>Cursors</th><td>{}</td></tr><tr><th>Alarms (last 24 h)</th><td>{}</td></tr>\
<tr><th>Today ({})</th><td>{} kWh billed, NPR {} charged</td></tr></table>",
        if e.silent { "bad" } else { "ok" },
        ago(e.since_upload_ms),
        iso_local(e.row.newest_time_ms, off),
        ago(e.wan_lag_ms),
        p.state.records,
        p.state.backfilled,
        escape(&format!("{:?}", p.state.cursors)),
        alarms_text(&e.today),
        escape(&e.today.local_date),
        kwh(e.today.energy_wh),
        rupees(e.today.revenue_mpaisa)
    );
    let _ = write!(
        b,
        "<p>Exports: <a href=\"/v1/grids/{g}/export.csv\">ledger CSV</a> \
<a href=\"/v1/grids/{g}/energy-hours.csv\">energy hours CSV</a> \
<a href=\"/v1/grids/{g}/events.csv\">events CSV</a> (add from_ms, to_ms, after, limit)</p>\
<h2>Energy per local day</h2>{}",
        energy_chart(p.days)
    );
    b.push_str(
        "<h2>Customers</h2><table><tr><th>Customer</th><th>Newest line</th><th>Kind</th>\
<th>Balance, NPR</th><th>Ledger</th></tr>",
    );
    for c in p.customers {
        let _ = write!(
            b,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td class=\"n {}\">{}</td>\
<td><a href=\"/v1/grids/{g}/customers/{}/ledger.csv\">CSV</a></td></tr>",
            c.customer,
            iso_local(c.at_ms, off),
            escape(&c.kind),
            if c.balance_after_mpaisa < 0 {
                "bad"
            } else {
                ""
            },
            rupees(c.balance_after_mpaisa),
            c.customer
        );
    }
    b.push_str("</table><h2>Recent events</h2><table><tr><th>Time</th><th>Kind</th><th>Code</th><th>Node</th><th>Subject</th><th>Value</th><th>Text</th></tr>");
    for ev in p.events {
        let _ = write!(
            b,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"n\">{}</td><td>{}</td></tr>",
            iso_local(ev.at_ms, off),
            escape(&ev.kind),
            escape(&ev.code),
            ev.node,
            escape(&ev.subject),
            ev.value,
            escape(&ev.text)
        );
    }
    b.push_str("</table>");
    page(&format!("Grid {g}"), &b, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_cannot_open_a_tag_and_amounts_read_as_money() {
        assert_eq!(
            escape(r#"<script>"a"&'b'"#),
            "&lt;script&gt;&quot;a&quot;&amp;&#39;b&#39;"
        );
        let p = page("<x>", "<p>hi</p>", false);
        assert!(p.contains("&lt;x&gt;") && p.contains("<p>hi</p>"));
        assert!(!p.contains("<script") && !p.contains("http://") && !p.contains("https://"));
        assert_eq!(rupees(123_456_789), "1234.56");
        assert_eq!(rupees(-150_000), "-1.50");
        assert_eq!(kwh(12_345), "12.3");
        assert_eq!(ago(59_999), "59 s");
        assert_eq!(ago(7 * 3_600_000 + 60_000), "7 h 1 min");
        assert_eq!(ago(3 * 86_400_000), "3 d 0 h");
    }
}
