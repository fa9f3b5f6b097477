//! The cockpit's page frame and HTML escaping: one small stylesheet inline, no script, no
//! external asset, so a page works offline and weighs a few KiB.

/// Escapes text for HTML element content and attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Seconds between reloads of a live page: often enough to follow a trip as it happens,
/// rarely enough that a phone on a weak link keeps up (a page is a few KiB).
pub const REFRESH_S: u32 = 5;

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:0 auto;max-width:960px;padding:8px;color:#222}\
nav a{margin-right:1em}table{border-collapse:collapse;margin:8px 0}td,th{border:1px solid #ddd;padding:2px 8px;text-align:left}\
.chart{width:100%;height:auto;max-width:600px}.bad{color:#b00;font-weight:bold}.ok{color:#070}h2{margin:16px 0 4px}";

/// A whole live page: `title`, the node it is from, and `body`; it reloads every
/// [`REFRESH_S`].
pub fn page(title: &str, node_id: u64, body: &str) -> String {
    frame(title, node_id, body, true)
}

/// A whole page that does not reload: a lookup a clerk is reading, or a form they are
/// typing into.
pub fn still_page(title: &str, node_id: u64, body: &str) -> String {
    frame(title, node_id, body, false)
}

fn frame(title: &str, node_id: u64, body: &str, live: bool) -> String {
    let refresh = if live {
        format!("<meta http-equiv=\"refresh\" content=\"{REFRESH_S}\">")
    } else {
        String::new()
    };
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">{refresh}\
<title>{t} - ghatta node {node_id}</title><style>{STYLE}</style></head><body>\
<nav><b>ghatta node {node_id}</b> <a href=\"/\">Overview</a><a href=\"/ui/customers\">Customers</a>\
<a href=\"/ui/alarms\">Alarms</a><a href=\"/ui/events\">Events</a><a href=\"/ui/tariffs\">Tariffs</a>\
<a href=\"/metrics\">Metrics</a><a href=\"/status\">Status (JSON)</a></nav><h1>{t}</h1>{body}</body></html>",
        t = escape(title)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_cannot_open_a_tag_or_leave_an_attribute() {
        assert_eq!(
            escape(r#"<script>"a"&'b'"#),
            "&lt;script&gt;&quot;a&quot;&amp;&#39;b&#39;"
        );
        let p = page("<x>", 3, "<p>hi</p>");
        assert!(p.contains("&lt;x&gt;") && p.contains("<p>hi</p>"));
        assert!(
            !p.contains("http://") && !p.contains("https://"),
            "no external asset"
        );
    }
}
