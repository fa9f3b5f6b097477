//! The operator's cockpit, served by every node on its admin listener: an overview page (the
//! grid now and its last hour and day as charts, the node's Raft state, links and refusals),
//! customer and tariff pages (`accounts.rs`), an alarms page, an event log (relay moves with their reasons, ledger lines, alarms), and
//! `/metrics` for Prometheus. Server-rendered HTML with inline SVG, no
//! script and no external asset: it works with no internet, from the board itself, over a
//! slow village Wi-Fi (each page a few KiB; the browser test checks the bound).
//!
//! Pages are GETs, which the admin API serves without its token (`admin::auth`), read-only;
//! the listener is on loopback unless the operator opens it (`admin_listen`).

pub mod accounts;
pub mod history;
pub mod html;
pub mod metrics;
pub mod store;
pub mod svg;

use std::fmt::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use self::history::{History, Sample};
use self::html::escape;
use crate::clock::utc_text;
use crate::field::FieldStats;
use crate::node::Node;

/// How often the grid is sampled into the history: the charts' resolution over the last hour.
pub const SAMPLE_INTERVAL: Duration = Duration::from_secs(1);
/// Alarms the alarms page lists, newest first.
pub const ALARMS_PAGE_ROWS: usize = 100;
/// Events the event log page lists, newest first (a row is ~200 bytes: the page stays under
/// [`PAGE_BYTES_MAX`]).
pub const EVENTS_PAGE_ROWS: usize = 200;
/// The largest page the cockpit may serve: pages must load over a weak link in seconds.
pub const PAGE_BYTES_MAX: usize = 100 * 1024;

/// The cockpit's state: the grid's recent history, and the week of it on disk.
#[derive(Clone, Default)]
pub struct Cockpit {
    history: Arc<Mutex<History>>,
    store: Option<Arc<store::HistoryStore>>,
    alarms: crate::notify::AlarmBoard,
}

impl Cockpit {
    /// This board's alarms.
    pub fn alarm_board(&self) -> &crate::notify::AlarmBoard {
        &self.alarms
    }

    /// Shows `board`'s alarms (this board's rules) on the alarms page.
    pub fn with_alarms(mut self, board: crate::notify::AlarmBoard) -> Cockpit {
        self.alarms = board;
        self
    }

    /// A cockpit whose minutes are also kept in `data_dir`'s `history.redb`, the day of them
    /// taken back from it now. A file that cannot be opened is logged and the cockpit runs
    /// from memory: a node never stops for its charts.
    pub fn with_store(data_dir: &std::path::Path, now_ms: u64) -> Cockpit {
        let store = match store::HistoryStore::open(data_dir) {
            Ok(s) => Arc::new(s),
            Err(e) => {
                tracing::error!("{e}");
                return Cockpit::default();
            }
        };
        let mut history = History::default();
        match store.since(now_ms.saturating_sub(history::MINUTES_KEPT as u64 * 60_000)) {
            Ok(day) => history.restore_minutes(day),
            Err(e) => tracing::error!("{e}"),
        }
        Cockpit {
            history: Arc::new(Mutex::new(history)),
            store: Some(store),
            alarms: Default::default(),
        }
    }

    /// Samples the field loop's gauges into the history every [`SAMPLE_INTERVAL`], stamped
    /// with the node's clock, until the task is dropped.
    pub fn spawn_sampler(&self, node: Node, stats: Arc<FieldStats>) -> tokio::task::JoinHandle<()> {
        let history = self.history.clone();
        let store = self.store.clone();
        tokio::spawn(async move {
            // One log line per failure streak, not one a minute.
            let mut failing = false;
            let mut tick = tokio::time::interval(SAMPLE_INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let s = stats.snapshot();
                if s.samples == 0 {
                    continue;
                }
                let sample = Sample {
                    t_ms: node.clock().now_ms(),
                    frequency_mhz: s.frequency_mhz,
                    voltage_dv: s.voltage_dv,
                    ufls_stages: s.ufls_stages_tripped,
                    ballast_stages: s.ballast_held,
                    power_w: history::Power {
                        generation: s.generation_w,
                        load: s.load_w,
                        ballast: s.ballast_w,
                    },
                };
                let closed = history
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(sample);
                if let (Some(m), Some(store)) = (closed, store.clone()) {
                    let r = tokio::task::spawn_blocking(move || store.append(&m)).await;
                    match r {
                        Ok(Ok(())) => failing = false,
                        Ok(Err(e)) if !failing => {
                            failing = true;
                            tracing::error!("{e}");
                        }
                        _ => {}
                    }
                }
            }
        })
    }

    fn with_history<R>(&self, f: impl FnOnce(&History) -> R) -> R {
        f(&self.history.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

fn row(out: &mut String, k: &str, v: impl std::fmt::Display) {
    let _ = write!(
        out,
        "<tr><th>{}</th><td>{}</td></tr>",
        escape(k),
        escape(&v.to_string())
    );
}

/// A value from the status JSON, or "-".
fn field(status: &serde_json::Value, path: &[&str]) -> String {
    let mut v = status;
    for p in path {
        match v.get(p) {
            Some(x) => v = x,
            None => return "-".into(),
        }
    }
    match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => "-".into(),
        other => other.to_string(),
    }
}

/// The stored minutes of the last week (none without a store), for the week's chart. Blocking:
/// a read of up to [`store::MINUTES_STORED_MAX`] rows.
pub fn week(cockpit: &Cockpit, now_ms: u64) -> Vec<history::Minute> {
    let Some(store) = &cockpit.store else {
        return Vec::new();
    };
    store
        .since(now_ms.saturating_sub(store::KEPT_MS))
        .unwrap_or_else(|e| {
            tracing::warn!("{e}");
            Vec::new()
        })
}

/// The overview page from the status JSON, the history and the week's stored minutes.
pub fn overview(
    node_id: u64,
    status: &serde_json::Value,
    cockpit: &Cockpit,
    week: &[history::Minute],
) -> String {
    let mut b = String::new();
    b.push_str("<h2>Grid now</h2><table>");
    let latest = cockpit.with_history(|h| h.latest().copied());
    match latest {
        Some(s) => {
            let f = s.frequency_mhz as f64 / 1_000.0;
            let class = if (49.0..=51.0).contains(&f) {
                "ok"
            } else {
                "bad"
            };
            let _ = write!(
                b,
                "<tr><th>Frequency</th><td class=\"{class}\" id=\"frequency\">{f:.3} Hz</td></tr>"
            );
            row(
                &mut b,
                "Voltage",
                format!("{:.1} V", s.voltage_dv as f64 / 10.0),
            );
            row(&mut b, "Shedding stages tripped", s.ufls_stages);
            row(&mut b, "Ballast stages held", s.ballast_stages);
        }
        None => b.push_str(
            "<tr><td>No grid sample yet (no field loop, or it has not read the grid).</td></tr>",
        ),
    }
    let watts = |path: &[&str]| {
        let mut v = status;
        for p in path {
            v = v.get(p)?;
        }
        v.as_u64().map(|w| format!("{:.2} kW", w as f64 / 1_000.0))
    };
    if status.get("field").is_some() {
        for (k, p) in [
            ("Generation", "generation_w"),
            ("Load (closed feeders)", "load_w"),
            ("Ballast", "ballast_w"),
        ] {
            row(
                &mut b,
                k,
                watts(&["field", p]).unwrap_or_else(|| "-".into()),
            );
        }
        if let Some(feeders) = status
            .get("field")
            .and_then(|f| f.get("feeder_load_w"))
            .and_then(|f| f.as_object())
        {
            for (feeder, w) in feeders {
                let w = w.as_u64().unwrap_or(0);
                row(
                    &mut b,
                    &format!("Feeder {feeder}"),
                    format!("{:.2} kW", w as f64 / 1_000.0),
                );
            }
        }
    }
    row(&mut b, "Customers", field(status, &["customers"]));
    row(
        &mut b,
        "Disconnected by billing",
        field(status, &["disconnected"]),
    );
    b.push_str("</table>");

    let (freq, volt, day) = cockpit.with_history(|h| {
        (
            h.seconds()
                .map(|s| (s.t_ms, s.frequency_mhz as f64 / 1_000.0))
                .collect::<Vec<_>>(),
            h.seconds()
                .map(|s| (s.t_ms, s.voltage_dv as f64 / 10.0))
                .collect::<Vec<_>>(),
            h.minutes()
                .flat_map(|m| {
                    [
                        (m.t_ms, m.frequency_mhz.min as f64 / 1_000.0),
                        (m.t_ms + 30_000, m.frequency_mhz.max as f64 / 1_000.0),
                    ]
                })
                .collect::<Vec<_>>(),
        )
    });
    let band = [
        svg::Guide {
            value: 49.0,
            label: "49 Hz",
        },
        svg::Guide {
            value: 51.0,
            label: "51 Hz",
        },
    ];
    b.push_str("<h2>Frequency, last hour</h2>");
    b.push_str(&svg::line_chart(
        "Frequency, last hour",
        "Hz",
        &freq,
        48.0,
        52.0,
        &band,
    ));
    b.push_str("<h2>Voltage, last hour</h2>");
    b.push_str(&svg::line_chart(
        "Voltage, last hour",
        "V",
        &volt,
        180.0,
        260.0,
        &[],
    ));
    b.push_str("<h2>Frequency, last day (each minute's lowest and highest)</h2>");
    b.push_str(&svg::line_chart(
        "Frequency, last day",
        "Hz",
        &day,
        48.0,
        52.0,
        &band,
    ));

    power_charts(&mut b, cockpit);

    if !week.is_empty() {
        let series: Vec<(u64, f64)> = week
            .iter()
            .flat_map(|m| {
                [
                    (m.t_ms, m.frequency_mhz.min as f64 / 1_000.0),
                    (m.t_ms + 30_000, m.frequency_mhz.max as f64 / 1_000.0),
                ]
            })
            .collect();
        b.push_str("<h2>Frequency, last week (each minute's lowest and highest)</h2>");
        b.push_str(&svg::line_chart(
            "Frequency, last week",
            "Hz",
            &series,
            48.0,
            52.0,
            &band,
        ));
    }

    b.push_str("<h2>Consensus</h2><table>");
    for (k, p) in [
        ("Role", "role"),
        ("Term", "term"),
        ("Leader", "leader"),
        ("Commit index", "commit_index"),
        ("Applied index", "applied_index"),
        ("Voters", "voters"),
        ("Learners", "learners"),
        ("Outbox records", "outbox_len"),
        ("Actor traps", "trapped_total"),
    ] {
        row(&mut b, k, field(status, &[p]));
    }
    if let Some(ms) = status.get("log_time_ms").and_then(|v| v.as_u64()) {
        row(&mut b, "Log time", utc_text(ms));
    }
    b.push_str("</table>");
    peers_table(&mut b, status);
    b.push_str("<h2>Meter journal and WAN</h2><table>");
    for (k, p) in [
        ("Meter reads waiting to commit", "journal_reads"),
        ("Telemetry summaries waiting", "journal_telemetry"),
        ("Journal over its limits (0/1)", "journal_over_limit"),
    ] {
        row(&mut b, k, field(status, &["field", p]));
    }
    let now = status.get("log_time_ms").and_then(|v| v.as_u64());
    match (
        status.get("wan_oldest_waiting_ms").and_then(|v| v.as_u64()),
        now,
    ) {
        (Some(t), Some(now)) => row(
            &mut b,
            "Oldest record waiting for the central",
            format!(
                "{} ({} min before log time)",
                utc_text(t),
                now.saturating_sub(t) / 60_000
            ),
        ),
        _ => row(&mut b, "Oldest record waiting for the central", "none"),
    }
    b.push_str("</table><h2>Links</h2><table>");
    for (k, p) in [
        ("Frames sent", "frames_sent"),
        ("Frames received", "frames_received"),
        ("Frames refused by the frame layer", "rejected"),
        ("Send drops", "send_dropped"),
        ("Connections made", "connects"),
    ] {
        row(&mut b, k, field(status, &["link", p]));
    }
    b.push_str("</table><h2>Refused requests from members</h2><table>");
    if let Some(r) = status.get("refused").and_then(|r| r.as_object()) {
        for (k, v) in r {
            row(&mut b, k, v);
        }
    }
    b.push_str("</table>");
    html::page("Overview", node_id, &b)
}

/// Points per line of a power chart: three lines share a chart, so each is thinned to a third
/// of a frequency chart's, and the page stays within [`PAGE_BYTES_MAX`].
pub const POWER_POINTS_MAX: usize = svg::POINTS_MAX / 3;

/// Generation, load and ballast over the last hour (each second) and day (each minute's
/// mean), in kW, on a scale from zero to the window's highest value.
fn power_charts(b: &mut String, cockpit: &Cockpit) {
    type Series = Vec<(u64, f64)>;
    let kw = |w: u64| w as f64 / 1_000.0;
    let split = |points: Vec<(u64, history::Power)>| -> [Series; 3] {
        [
            points.iter().map(|(t, p)| (*t, kw(p.generation))).collect(),
            points.iter().map(|(t, p)| (*t, kw(p.load))).collect(),
            points.iter().map(|(t, p)| (*t, kw(p.ballast))).collect(),
        ]
    };
    let (hour, day) = cockpit.with_history(|h| {
        (
            split(h.seconds().map(|s| (s.t_ms, s.power_w)).collect()),
            split(h.minutes().map(|m| (m.t_ms, m.power_w)).collect()),
        )
    });
    for (name, [generation, load, ballast]) in [("last hour", hour), ("last day", day)] {
        let top = [&generation, &load, &ballast]
            .iter()
            .flat_map(|s| s.iter().map(|(_, v)| *v))
            .fold(0.0f64, f64::max);
        // Whole kW above the highest value, so the lines never touch the top.
        let y_max = (top * 1.1).ceil().max(1.0);
        let title = format!("Power, {name}");
        let _ = write!(b, "<h2>{}</h2>", escape(&title));
        b.push_str(&svg::lines_chart(
            &title,
            "kW",
            &[
                svg::Line {
                    label: "generation",
                    color: "#2a7a2a",
                    series: &generation,
                },
                svg::Line {
                    label: "load",
                    color: "#1d5fa8",
                    series: &load,
                },
                svg::Line {
                    label: "ballast",
                    color: "#b06a00",
                    series: &ballast,
                },
            ],
            0.0,
            y_max,
            &[],
            POWER_POINTS_MAX,
        ));
    }
}

/// The other members: TCP address or radio, and on the leader how far each has matched and
/// when each last answered.
fn peers_table(b: &mut String, status: &serde_json::Value) {
    let Some(peers) = status.get("peers").and_then(|p| p.as_array()) else {
        return;
    };
    b.push_str("<h2>Peers</h2>");
    if peers.is_empty() {
        b.push_str("<p>No other member.</p>");
        return;
    }
    let radios = status
        .get("radio")
        .and_then(|r| r.as_array())
        .map_or(0, Vec::len);
    b.push_str("<table id=\"peers\"><tr><th>Node</th><th>Member</th><th>Path</th><th>Matched index</th><th>Last answered</th></tr>");
    for p in peers {
        let n = |k: &str| p.get(k).and_then(|v| v.as_u64());
        let addr = p.get("addr").and_then(|v| v.as_str()).unwrap_or("");
        let path = match (addr.is_empty(), radios > 0) {
            (false, false) => format!("TCP {addr}"),
            (false, true) => format!("TCP {addr} or radio"),
            (true, _) => "radio".to_string(),
        };
        let heard = match n("heard_ms_ago") {
            Some(ms) if ms > crate::notify::host::PEER_SILENT_AFTER.as_millis() as u64 => {
                format!("<td class=\"bad\">{:.1} s ago</td>", ms as f64 / 1_000.0)
            }
            Some(ms) => format!("<td class=\"ok\">{:.1} s ago</td>", ms as f64 / 1_000.0),
            None => "<td>-</td>".to_string(),
        };
        let _ = write!(
            b,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td>{heard}</tr>",
            n("id").unwrap_or(0),
            if p.get("voter").and_then(|v| v.as_bool()) == Some(true) {
                "voter"
            } else {
                "learner"
            },
            escape(&path),
            n("matched_index").map_or("-".to_string(), |i| i.to_string()),
        );
    }
    b.push_str("</table>");
}

/// This board's alarms (its rules on its own gauges: `notify`): raised now, then the newest
/// changes.
fn grid_alarms(b: &mut String, active: &[crate::admin::dto::BoardAlarmView]) {
    b.push_str("<h2>Raised now on the grid</h2>");
    if active.is_empty() {
        b.push_str(
            "<p class=\"ok\" id=\"grid-alarms\">No board reports an alarm (as committed).</p>",
        );
        return;
    }
    b.push_str("<table id=\"grid-alarms\"><tr><th>Board</th><th>Rule</th><th>Raised at</th><th>What</th></tr>");
    for a in active {
        let _ = write!(
            b,
            "<tr><td>{}</td><td class=\"bad\">{}</td><td>{}</td><td>{}</td></tr>",
            a.node,
            escape(&a.rule),
            escape(&utc_text(a.since_ms)),
            escape(&a.text)
        );
    }
    b.push_str("</table>");
}

fn board_alarms(b: &mut String, board: &crate::notify::AlarmBoard) {
    b.push_str("<h2>On this board, live</h2><p>What this board's rules see now; committed to the grid's list above within seconds while it reaches the other controllers.</p>");
    let active = board.active();
    if active.is_empty() {
        b.push_str("<p class=\"ok\" id=\"board-alarms\">No alarm raised on this board.</p>");
    } else {
        b.push_str("<table id=\"board-alarms\"><tr><th>Rule</th><th>Raised at</th></tr>");
        for (rule, since) in active {
            let _ = write!(
                b,
                "<tr><td class=\"bad\">{}</td><td>{}</td></tr>",
                escape(rule),
                escape(&utc_text(since))
            );
        }
        b.push_str("</table>");
    }
    let changes = board.changes();
    if !changes.is_empty() {
        b.push_str("<table><tr><th>Time</th><th>Change</th></tr>");
        for c in changes.iter().take(50) {
            let _ = write!(
                b,
                "<tr><td>{}</td><td class=\"{}\">{}</td></tr>",
                escape(&utc_text(c.at_ms)),
                if c.raised { "bad" } else { "ok" },
                escape(&c.text)
            );
        }
        b.push_str("</table>");
    }
    b.push_str("<h2>History (committed)</h2>");
}

/// The alarms page: this board's, then `GET /alarms`'s reply.
pub fn alarms(
    node_id: u64,
    reply: &crate::admin::dto::AlarmsReply,
    board: &crate::notify::AlarmBoard,
) -> String {
    let mut b = String::new();
    grid_alarms(&mut b, &reply.active);
    board_alarms(&mut b, board);
    if reply.alarms.is_empty() {
        b.push_str("<p>No alarm in the outbox.</p>");
    } else {
        b.push_str("<table><tr><th>Log time</th><th>Actor</th><th>Alarm</th><th>Subject</th><th>Value</th><th>Text</th></tr>");
        for a in &reply.alarms {
            let t = utc_text(a.time_ms);
            let _ = write!(
                b,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                escape(&t),
                escape(&a.actor),
                escape(&a.code),
                a.subject,
                a.value,
                escape(&a.text)
            );
            if a.repeats > 0 {
                let last = a.last_repeat_ms.map(utc_text).unwrap_or_default();
                let _ = write!(
                    b,
                    "<tr><td></td><td colspan=\"5\">and {} more time(s) since, the last at {} \
                     (counted, not stored each time)</td></tr>",
                    a.repeats,
                    escape(&last)
                );
            }
        }
        b.push_str("</table>");
    }
    if reply.limited {
        b.push_str("<p>Older alarms are not listed: the newest only.</p>");
    }
    html::page("Alarms", node_id, &b)
}

/// Whether an output belongs in the event log: relay moves (with their reasons), ledger
/// lines (charges, fees, top-ups, disconnections) and alarms; not the ballast set-points,
/// timers and hourly energy, which come every few seconds and would bury the rest.
pub fn is_event(o: &ghatta_actor_sdk::Output) -> bool {
    use ghatta_actor_sdk::Output;
    matches!(o, Output::Relay(_) | Output::Ledger(_) | Output::Alarm(_))
}

/// A table of committed events, in the order given (the event log, a customer's page).
pub(crate) fn events_table(b: &mut String, events: &[crate::admin::dto::EventView]) {
    b.push_str("<table><tr><th>Log time</th><th>Log index</th><th>Actor</th><th>Kind</th><th>What</th></tr>");
    for e in events {
        let _ = write!(
            b,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&utc_text(e.time_ms)),
            e.index,
            escape(&e.actor),
            escape(&e.kind),
            escape(&e.what)
        );
    }
    b.push_str("</table>");
}

/// The event log page: the newest committed events, newest first.
pub fn events(node_id: u64, reply: &crate::admin::dto::EventsReply) -> String {
    let mut b = String::new();
    if reply.events.is_empty() {
        b.push_str("<p>No event in the outbox.</p>");
    } else {
        events_table(&mut b, &reply.events);
    }
    if reply.limited || !reply.whole_outbox {
        b.push_str("<p>Older events are not listed here; the central keeps them all.</p>");
    }
    html::page("Events", node_id, &b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_restarted_cockpit_takes_its_day_back_from_the_store_and_keeps_adding() {
        let dir = tempfile::tempdir().expect("tempdir");
        let t0 = 1_800_000_000_000u64 / 60_000 * 60_000;
        let at = |i: u64| Sample {
            t_ms: t0 + i * 1_000,
            frequency_mhz: 50_000 + i,
            voltage_dv: 2_300,
            ufls_stages: 0,
            ballast_stages: 0,
            power_w: history::Power::default(),
        };
        let c = Cockpit::with_store(dir.path(), t0);
        // Three minutes and a bit, as the sampler pushes them.
        for i in 0..200 {
            if let Some(m) = c.history.lock().unwrap().push(at(i)) {
                c.store.as_ref().expect("store").append(&m).expect("append");
            }
        }
        drop(c);
        let again = Cockpit::with_store(dir.path(), t0 + 200_000);
        assert_eq!(again.with_history(|h| h.minutes().count()), 3);
        assert_eq!(
            again.with_history(|h| h.seconds().count()),
            0,
            "seconds are not kept"
        );
        assert_eq!(week(&again, t0 + 200_000).len(), 3);
        assert!(
            week(&Cockpit::default(), t0).is_empty(),
            "no store, no week"
        );
    }

    #[test]
    fn the_overview_stays_small_with_a_full_history() {
        let c = Cockpit::default();
        {
            let mut h = c.history.lock().unwrap();
            for i in 0..(history::MINUTES_KEPT as u64 * 60) {
                h.push(Sample {
                    t_ms: 1_700_000_000_000 + i * 1_000,
                    frequency_mhz: 49_800 + i % 400,
                    voltage_dv: 2_300,
                    ufls_stages: 0,
                    ballast_stages: 1,
                    power_w: history::Power {
                        generation: 24_000 + i % 1_000,
                        load: 20_000 + i % 700,
                        ballast: 4_000,
                    },
                });
            }
        }
        let status = serde_json::json!({"role": "Leader", "term": 3, "link": {}, "refused": {"forged_origin": 0}});
        let week: Vec<history::Minute> = (0..store::MINUTES_STORED_MAX)
            .map(|i| history::Minute {
                t_ms: 1_700_000_000_000 + i * 60_000,
                frequency_mhz: history::Span {
                    min: 49_000 + i % 500,
                    mean: 50_000,
                    max: 51_000 - i % 300,
                },
                voltage_dv: history::Span {
                    min: 2_200,
                    mean: 2_300,
                    max: 2_400,
                },
                power_w: history::Power::default(),
            })
            .collect();
        let page = overview(1, &status, &c, &week);
        println!(
            "the overview with a full day and week: {} bytes",
            page.len()
        );
        assert!(page.len() < PAGE_BYTES_MAX, "{} bytes", page.len());
        assert!(page.contains("id=\"frequency\"") && page.matches("<svg").count() == 6);
        assert!(
            page.contains("<title>Power, last day</title>") && page.contains(">ballast</text>")
        );
    }

    #[test]
    fn the_overview_shows_power_peers_the_journal_and_the_wan_backlog() {
        let status = serde_json::json!({
            "role": "Leader", "log_time_ms": 1_700_000_600_000u64,
            "wan_oldest_waiting_ms": 1_700_000_000_000u64,
            "field": {"generation_w": 24_500, "load_w": 21_000, "ballast_w": 3_500,
                "feeder_load_w": {"1": 12_000, "2": 9_000}, "journal_reads": 42},
            "peers": [
                {"id": 2, "voter": true, "addr": "10.0.0.2:7000", "matched_index": 90,
                    "heard_ms_ago": 300},
                {"id": 3, "voter": true, "addr": "", "matched_index": 12,
                    "heard_ms_ago": 45_000},
            ],
            "radio": [{"device": "/dev/ttyUSB0"}],
        });
        let page = overview(1, &status, &Cockpit::default(), &[]);
        assert!(
            page.contains("<th>Generation</th><td>24.50 kW</td>"),
            "{page}"
        );
        assert!(page.contains("<th>Feeder 2</th><td>9.00 kW</td>"), "{page}");
        assert!(
            page.contains(
                "<td>TCP 10.0.0.2:7000 or radio</td><td>90</td><td class=\"ok\">0.3 s ago</td>"
            ),
            "{page}"
        );
        assert!(
            page.contains("<td>radio</td><td>12</td><td class=\"bad\">45.0 s ago</td>"),
            "{page}"
        );
        assert!(
            page.contains("<th>Meter reads waiting to commit</th><td>42</td>"),
            "{page}"
        );
        assert!(page.contains("(10 min before log time)"), "{page}");
    }
}
