//! The cockpit's page frame: its navigation and stylesheet over the frame and escaping it
//! shares with the central's pages (`ghatta_proto::html`).

use ghatta_proto::html::Frame;
pub use ghatta_proto::html::escape;

/// Seconds between reloads of a live page: often enough to follow a trip as it happens,
/// rarely enough that a phone on a weak link keeps up (a page is a few KiB).
pub const REFRESH_S: u32 = 5;

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:0 auto;max-width:960px;padding:8px;color:#222}\
nav a{margin-right:1em}table{border-collapse:collapse;margin:8px 0}td,th{border:1px solid #ddd;padding:2px 8px;text-align:left}\
.chart{width:100%;height:auto;max-width:600px}.bad{color:#b00;font-weight:bold}.ok{color:#070}h2{margin:16px 0 4px}";

/// The cockpit's navigation bar.
const NAV: [(&str, &str); 7] = [
    ("/", "Overview"),
    ("/ui/customers", "Customers"),
    ("/ui/alarms", "Alarms"),
    ("/ui/events", "Events"),
    ("/ui/tariffs", "Tariffs"),
    ("/metrics", "Metrics"),
    ("/status", "Status (JSON)"),
];

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
    let site = format!("ghatta node {node_id}");
    Frame {
        site: &site,
        nav: &NAV,
        style: STYLE,
        refresh_s: live.then_some(REFRESH_S),
    }
    .page(title, body)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Escaping itself is `ghatta_proto::html`'s test; here, that the board's frame uses it.
    #[test]
    fn the_title_is_escaped_and_no_asset_is_external() {
        let p = page("<x>", 3, "<p>hi</p>");
        assert!(p.contains("&lt;x&gt;") && p.contains("<p>hi</p>"));
        assert!(
            !p.contains("http://") && !p.contains("https://"),
            "no external asset"
        );
    }
}
