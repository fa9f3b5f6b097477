//! `[wan]` in node.toml: where this grid's committed records go (the central data center),
//! under which grid id and key, and how much of the satellite link the upload may use.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::client::{UploaderConfig, WINDOW_BATCHES};
use super::proto::GridKey;

/// Default bandwidth cap, bytes/s: 4 KB/s (32 kbit/s) is an eighth of the 256 kbit/s plan
/// DOMAIN.md assumes for a VSAT terminal, leaving the rest to the operators' other uses. A
/// week of a 300-customer grid's ledger resyncs in minutes even at this rate (BENCHMARKS.md).
pub const RATE_BYTES_PER_S_DEFAULT: u64 = 4_000;
/// Largest key file read: 64 hex digits plus whitespace and a comment line; anything larger
/// is not a key file.
const KEY_FILE_BYTES_MAX: u64 = 4_096;

/// The `[wan]` table.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WanConfig {
    /// This grid's id at the central (the central knows the grid's key under this id).
    pub grid: u64,
    /// The central's batch listener, host:port (`ghatta central --listen`).
    pub central: String,
    /// File holding the grid's 32-byte key as 64 hex digits (`#` lines are comments). Keep it
    /// readable only by the service user (mode 0600).
    pub key_file: PathBuf,
    /// Bandwidth cap for the upload, bytes/s; 0 = no cap.
    #[serde(default = "default_rate")]
    pub rate_bytes_per_s: u64,
    /// Batches in flight per stream (see `WINDOW_BATCHES`).
    #[serde(default = "default_window")]
    pub window_batches: usize,
}

fn default_rate() -> u64 {
    RATE_BYTES_PER_S_DEFAULT
}
fn default_window() -> usize {
    WINDOW_BATCHES
}

/// Most batches in flight the config accepts: each holds up to a batch of records in memory
/// until acknowledged.
pub const WINDOW_BATCHES_MAX: usize = 64;

impl WanConfig {
    /// Check the table; errors are (key, problem) under `wan.`.
    pub fn validate(&self) -> Result<(), (String, String)> {
        let k = |key: &str| format!("wan.{key}");
        if self.grid == 0 {
            return Err((
                k("grid"),
                "must be 1 or more (the central's grid id)".into(),
            ));
        }
        if self.central.rsplit_once(':').is_none_or(|(host, port)| {
            host.is_empty() || port.parse::<u16>().map_or(true, |p| p == 0)
        }) {
            return Err((
                k("central"),
                format!(
                    "`{}` is not host:port, e.g. \"central.example.org:7700\"",
                    self.central
                ),
            ));
        }
        if self.window_batches == 0 || self.window_batches > WINDOW_BATCHES_MAX {
            return Err((
                k("window_batches"),
                format!("must be 1..={WINDOW_BATCHES_MAX}"),
            ));
        }
        Ok(())
    }

    /// The uploader's configuration, reading the key file.
    pub fn uploader_config(&self) -> anyhow::Result<UploaderConfig> {
        let key = read_key_file(&self.key_file, "config key wan.key_file")?;
        let mut cfg = UploaderConfig::new(self.grid, key, self.central.clone());
        cfg.rate_bytes_per_s = self.rate_bytes_per_s;
        cfg.window_batches = self.window_batches;
        Ok(cfg)
    }
}

/// Read a grid key file: 64 hex digits, `#` comment lines and blank lines ignored. `source`
/// names where the path came from, for the error ("config key wan.key_file").
pub fn read_key_file(path: &Path, source: &str) -> anyhow::Result<GridKey> {
    let what = || format!("the WAN grid key file {} ({source})", path.display());
    let meta = std::fs::metadata(path)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}; create it with `head -c32 /dev/urandom | xxd -p -c64 > FILE` and give the central the same key", what()))?;
    anyhow::ensure!(
        meta.len() <= KEY_FILE_BYTES_MAX,
        "{} is {} bytes; a key file holds 64 hex digits",
        what(),
        meta.len()
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if meta.permissions().mode() & 0o077 != 0 {
            tracing::warn!(
                "{} is readable by other users (mode {:o}); chmod 600 it",
                what(),
                meta.permissions().mode() & 0o777
            );
        }
    }
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", what()))?;
    let hex: String = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    GridKey::from_hex(&hex).map_err(|e| anyhow::anyhow!("{}: {e}", what()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> WanConfig {
        toml::from_str(
            r#"
            grid = 7
            central = "central.example.org:7700"
            key_file = "/etc/ghatta/wan.key"
            "#,
        )
        .unwrap()
    }

    #[test]
    fn defaults_and_validation() {
        let c = cfg();
        assert_eq!(c.rate_bytes_per_s, RATE_BYTES_PER_S_DEFAULT);
        assert_eq!(c.window_batches, WINDOW_BATCHES);
        assert!(c.validate().is_ok());
        for bad in ["central", "central:", ":7700", "c:0", "c:99999"] {
            let mut c = cfg();
            c.central = bad.into();
            assert_eq!(c.validate().unwrap_err().0, "wan.central", "{bad}");
        }
        let mut c = cfg();
        c.grid = 0;
        assert_eq!(c.validate().unwrap_err().0, "wan.grid");
        let mut c = cfg();
        c.window_batches = WINDOW_BATCHES_MAX + 1;
        assert_eq!(c.validate().unwrap_err().0, "wan.window_batches");
    }

    #[test]
    fn key_files_are_read_with_comments_and_refused_when_wrong() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("good.key");
        std::fs::write(&good, format!("# grid 7\n{}\n", "ab".repeat(32))).unwrap();
        assert_eq!(
            read_key_file(&good, "config key wan.key_file").unwrap().0,
            [0xab; 32]
        );
        let short = dir.path().join("short.key");
        std::fs::write(&short, "abcd\n").unwrap();
        let e = read_key_file(&short, "config key wan.key_file")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("short.key") && e.contains("64 hex digits"),
            "{e}"
        );
        let e = read_key_file(&dir.path().join("missing.key"), "config key wan.key_file")
            .unwrap_err()
            .to_string();
        assert!(e.contains("wan.key_file") && e.contains("urandom"), "{e}");
        let huge = dir.path().join("huge.key");
        std::fs::write(&huge, vec![b'a'; 10_000]).unwrap();
        assert!(read_key_file(&huge, "x").is_err());
    }
}
