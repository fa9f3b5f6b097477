//! `GET /metrics`: the node's and the field loop's gauges and counters in the Prometheus text
//! exposition format (version 0.0.4), for an operator's Prometheus or Grafana on the village
//! network.
//!
//! The numbers are `GET /status`'s, flattened: every numeric field of the status JSON becomes
//! `ghatta_<path>` (a nested object's keys joined by `_`), a boolean 0 or 1, a list its length
//! (`ghatta_voters` 3), the role one labelled series. So nothing `status` shows is missing
//! here, and a field added to `status` appears without a change in this file. Units are in the
//! field names (`_mhz`, `_dv`, `_ms`, `_bytes`). What only counts up is typed `counter` and
//! named `..._total` (Prometheus's convention, so `rate()` and resets work): the link's and
//! the seals' counters, the refusals, the traps and the field loop's counters
//! (`FieldStats::kinds`); everything else is a gauge.

use std::fmt::Write;

use serde_json::Value;

/// The content type Prometheus expects for this format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Renders a status JSON object (with `field` beside it when there is a field loop).
pub fn render(status: &Value) -> String {
    let mut out = String::new();
    if let Some(role) = status.get("role").and_then(Value::as_str) {
        let _ = writeln!(
            out,
            "# HELP ghatta_role The node's Raft role (1 for the current one)."
        );
        let _ = writeln!(out, "# TYPE ghatta_role gauge");
        let _ = writeln!(out, "ghatta_role{{role=\"{}\"}} 1", label(role));
    }
    flatten("ghatta", status, &mut out);
    out
}

/// A label value with `\`, `"` and newlines escaped, as the format requires.
fn label(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// A JSON key as a metric name part: anything outside `[a-zA-Z0-9_]` becomes `_`.
fn name_part(k: &str) -> String {
    k.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

/// Whether the status field at `path` (its JSON keys from the top) only counts up.
fn is_counter(path: &[&str]) -> bool {
    match path {
        ["link", _] | ["refused", _] | ["trapped_total"] => true,
        ["security", leaf] => *leaf != "boot_epoch",
        ["field", "relay_actions_by_reason", _] => true,
        ["field", leaf] => crate::field::FieldStats::kinds().any(|(n, gauge)| n == *leaf && !gauge),
        _ => false,
    }
}

fn flatten(prefix: &str, v: &Value, out: &mut String) {
    flatten_at(prefix, &mut Vec::new(), v, out)
}

fn flatten_at<'a>(prefix: &str, path: &mut Vec<&'a str>, v: &'a Value, out: &mut String) {
    let counter = is_counter(path);
    let mut one = |name: &str, x: String| {
        if counter {
            let name = if name.ends_with("_total") {
                name.to_string()
            } else {
                format!("{name}_total")
            };
            let _ = writeln!(out, "# TYPE {name} counter");
            let _ = writeln!(out, "{name} {x}");
        } else {
            let _ = writeln!(out, "# TYPE {name} gauge");
            let _ = writeln!(out, "{name} {x}");
        }
    };
    match v {
        Value::Object(map) => {
            for (k, v) in map {
                path.push(k);
                flatten_at(&format!("{prefix}_{}", name_part(k)), path, v, out);
                path.pop();
            }
        }
        Value::Number(n) => one(prefix, n.to_string()),
        Value::Bool(b) => one(prefix, u8::from(*b).to_string()),
        Value::Array(a) => one(prefix, a.len().to_string()),
        Value::String(_) | Value::Null => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_fields_become_gauges_with_valid_names() {
        let v = serde_json::json!({
            "id": 2, "role": "Leader", "term": 7, "state_hash": "ab",
            "voters": [1, 2, 3], "membership_in_progress": false,
            "link": {"frames-sent": 10}, "field": {"frequency_mhz": 50_010, "samples": 9},
            "security": {"boot_epoch": 4, "forged": 1}, "trapped_total": 2,
            "leader": null
        });
        let text = render(&v);
        for line in [
            "ghatta_role{role=\"Leader\"} 1",
            "ghatta_term 7",
            "ghatta_voters 3",
            "ghatta_membership_in_progress 0",
            "# TYPE ghatta_link_frames_sent_total counter",
            "ghatta_link_frames_sent_total 10",
            "# TYPE ghatta_field_frequency_mhz gauge",
            "ghatta_field_frequency_mhz 50010",
            "ghatta_field_samples_total 9",
            "ghatta_security_boot_epoch 4",
            "ghatta_security_forged_total 1",
            "ghatta_trapped_total 2",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
        }
        assert!(!text.contains("state_hash") && !text.contains("ghatta_leader"));
        // Every sample line is `name value` or `name{labels} value` with a valid name.
        for l in text.lines().filter(|l| !l.starts_with('#')) {
            let name: String = l.chars().take_while(|c| *c != ' ' && *c != '{').collect();
            assert!(
                name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                    && !name.starts_with(|c: char| c.is_ascii_digit()),
                "{l}"
            );
        }
    }
}
