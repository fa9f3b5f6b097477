//! Command-line helpers: shutdown signals, human formatting, argument parsing.

pub mod bench;
pub mod demo;
pub mod selftest;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use ghatta::config::PeerConfig;
use serde_json::Value;

/// Where `ghatta run`'s config lives on a board (install.sh puts it there).
pub const NODE_CONFIG_DEFAULT: &str = "/etc/ghatta/node.toml";

/// The admin token for a change: `token_file` when given, else `admin.token` in the data
/// directory that the node's `config` names. Never a path the server names: whoever
/// answers on the admin port could otherwise make the CLI read and send any small file.
pub fn admin_token(token_file: Option<&Path>, config: &Path) -> anyhow::Result<String> {
    let path = match token_file {
        Some(p) => p.to_path_buf(),
        None => {
            let cfg = ghatta::config::NodeConfig::load(config).context(
                "cannot find the admin token: pass --token-file, or --config with the node's config",
            )?;
            cfg.data_dir.join(ghatta::admin::auth::TOKEN_FILE)
        }
    };
    Ok(ghatta::admin::auth::read_token(&path)?)
}

/// A free TCP port on loopback, for the local clusters of `demo` and `selftest`.
pub fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")
        .context("cannot bind a loopback port; is the loopback interface up?")?
        .local_addr()?
        .port())
}

/// The members `1..=nodes` of a local cluster on loopback, each with a free port and a
/// throwaway key pair written under `dir/keys-ID`, so the cluster's links are sealed as a real
/// grid's are. Returns the peers (addresses and public keys) and, in the same order, each
/// node's private key file.
pub fn loopback_peers_with_keys(
    dir: &Path,
    nodes: u64,
) -> anyhow::Result<(Vec<PeerConfig>, Vec<PathBuf>)> {
    let mut peers = Vec::new();
    let mut key_files = Vec::new();
    for id in 1..=nodes {
        let keys = ghatta_proto::keys::generate_into(&dir.join(format!("keys-{id}")))?;
        peers.push(PeerConfig {
            id,
            addr: format!("127.0.0.1:{}", free_port()?),
            public_key: Some(keys.public.to_base64()),
        });
        key_files.push(keys.private_path);
    }
    Ok((peers, key_files))
}

/// Wait for Ctrl-C or SIGTERM (systemd's stop).
pub async fn wait_for_shutdown() {
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                    return;
                }
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}

/// Parse "20s", "2m", "500ms", "1h" or plain seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = s
        .find(|c: char| !c.is_ascii_digit())
        .map(|i| s.split_at(i))
        .unwrap_or((s, "s"));
    let n: u64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a duration like 20s, 2m, 500ms"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" | "" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        "h" => Ok(Duration::from_secs(n * 3600)),
        _ => Err(format!("`{s}`: unknown unit `{unit}` (use ms, s, m or h)")),
    }
}

/// Parse "A:B,C:D" into pairs of integers.
pub fn parse_pairs(s: &str) -> anyhow::Result<Vec<(u64, u64)>> {
    s.split(',')
        .map(|p| {
            let (a, b) = p
                .split_once(':')
                .ok_or_else(|| anyhow::anyhow!("`{p}` is not A:B"))?;
            Ok((a.trim().parse()?, b.trim().parse()?))
        })
        .collect()
}

/// One-line human form of a node status.
pub fn format_status(s: &Value) -> String {
    let g = |k: &str| s.get(k).cloned().unwrap_or(Value::Null);
    let sealed = match s.get("security") {
        Some(sec) if sec.is_object() => {
            let n = |k: &str| sec.get(k).and_then(Value::as_u64).unwrap_or(0);
            let dropped: u64 = [
                "truncated",
                "unsealed",
                "unknown_sender",
                "not_for_me",
                "forged",
                "replayed",
                "out_of_window",
                "older_epoch",
                "stale_receiver_epoch",
            ]
            .iter()
            .map(|k| n(k))
            .sum();
            format!(
                " | sealed: epoch {} opened {} dropped {dropped} (forged {}, replayed {}, unknown sender {}, unsealed {})",
                n("boot_epoch"),
                n("opened"),
                n("forged"),
                n("replayed"),
                n("unknown_sender"),
                n("unsealed")
            )
        }
        _ => " | links NOT sealed (no key_file)".to_string(),
    };
    let line = format!(
        "node {} {} term {} leader {} commit {} applied {} hash {} | customers {} ({} disconnected) | voters {} learners {} | frames in {} rejected {}",
        g("id"),
        g("role").as_str().unwrap_or("?"),
        g("term"),
        g("leader"),
        g("commit_index"),
        g("applied_index"),
        g("state_hash")
            .as_str()
            .map(|h| &h[..h.len().min(16)])
            .unwrap_or("?"),
        g("customers"),
        g("disconnected"),
        g("voters"),
        g("learners"),
        s.pointer("/link/frames_received")
            .cloned()
            .unwrap_or(Value::Null),
        s.pointer("/link/rejected").cloned().unwrap_or(Value::Null),
    );
    line + &sealed + &format_field(s)
}

/// The field loop's part of the status line (`field` in the JSON), if the node runs one.
fn format_field(s: &Value) -> String {
    let Some(f) = s.get("field").filter(|f| f.is_object()) else {
        return String::new();
    };
    let n = |k: &str| f.get(k).and_then(Value::as_u64).unwrap_or(0);
    let grid = if n("grid_healthy") == 1 {
        "ok".to_string()
    } else {
        format!("FAILING for {} ms", n("grid_failing_ms"))
    };
    let mut out = format!(
        " | grid {grid}: samples {} failed {} | meters: reads {} failed {} silent {}",
        n("samples"),
        n("read_errors"),
        n("meter_reads"),
        n("meter_read_errors"),
        n("meters_silent"),
    );
    if n("modbus_requests") > 0 || n("modbus_disconnects") > 0 {
        out += &format!(
            " | modbus: requests {} ok {} timeouts {} crc {} io {} adapter gone {} reopened {}",
            n("modbus_requests"),
            n("modbus_ok"),
            n("modbus_timeouts"),
            n("modbus_crc_errors"),
            n("modbus_io_errors"),
            n("modbus_disconnects"),
            n("modbus_reopens"),
        );
    }
    out
}

/// Human form of a proposal receipt.
pub fn format_receipt(r: &Value, what: &str) -> String {
    let n = |k: &str| r.get(k).and_then(Value::as_u64).unwrap_or(0);
    if r.get("duplicate").and_then(Value::as_bool) == Some(true) {
        format!("{what}: already applied (duplicate), index {}", n("index"))
    } else if n("rejected") > 0 {
        format!(
            "{what}: committed at index {} but REJECTED by the actor (see alarms)",
            n("index")
        )
    } else if n("trapped") > 0 {
        format!(
            "{what}: committed at index {} but the actor trapped; nothing changed",
            n("index")
        )
    } else {
        format!("{what}: applied at index {}", n("index"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("20s"), Ok(Duration::from_secs(20)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("7"), Ok(Duration::from_secs(7)));
        assert!(parse_duration("x").is_err());
        assert!(parse_duration("3 weeks").is_err());
    }

    #[test]
    fn status_line_shows_sealing_or_its_absence() {
        let sealed = serde_json::json!({
            "id": 1, "role": "leader",
            "security": { "boot_epoch": 4, "opened": 10, "forged": 2, "replayed": 1 }
        });
        let line = format_status(&sealed);
        assert!(
            line.contains("sealed: epoch 4 opened 10 dropped 3 (forged 2, replayed 1"),
            "{line}"
        );
        let open = format_status(&serde_json::json!({ "id": 1, "security": null }));
        assert!(open.contains("NOT sealed"), "{open}");
    }
}
