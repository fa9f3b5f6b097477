//! `[wan]` in node.toml: where this grid's committed records go (the central data center),
//! under which grid id and key pair, which central key to trust, and how much of the
//! satellite link the upload may use.

use std::path::PathBuf;

use serde::Deserialize;

use super::client::{UploaderConfig, WINDOW_BATCHES};

/// Why `[wan]`'s keys did not load; each names the config key.
#[derive(Debug, thiserror::Error)]
pub enum WanKeyError {
    /// The grid's private key did not load.
    #[error("config key wan.key_file: {0}")]
    Key(#[from] ghatta_proto::keys::KeyError),
    /// The central's public key is not a key.
    #[error(
        "config key wan.central_public_key: {0}; paste the line `ghatta-central keygen` printed"
    )]
    CentralKey(#[from] ghatta_proto::keys::KeyTextError),
}
use crate::net::secure::{PublicKey, SecretKey};

/// Default bandwidth cap, bytes/s: 4 KB/s (32 kbit/s) is an eighth of the 256 kbit/s plan
/// DOMAIN.md assumes for a VSAT terminal, leaving the rest to the operators' other uses. A
/// week of a 300-customer grid's ledger resyncs in minutes even at this rate (BENCHMARKS.md).
pub const RATE_BYTES_PER_S_DEFAULT: u64 = 4_000;

/// The `[wan]` table.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WanConfig {
    /// This grid's id at the central (the central knows the grid's key under this id).
    pub grid: u64,
    /// The central's batch listener, host:port (`ghatta-central --listen`).
    pub central: String,
    /// The X25519 private key this node authenticates to the central with, as `ghatta keygen`
    /// writes it (mode 0600). Either one grid key pair copied to every node, or each node's
    /// own `key_file`; the central lists the public half(s) under the grid id
    /// (`ghatta-central --grid GRID=PUBLIC_KEY`).
    pub key_file: PathBuf,
    /// The central's public key (base64 or hex, the `node.pub` of `ghatta keygen` run for the
    /// central): the grid sends nothing a peer without its private half could read.
    pub central_public_key: String,
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
        if let Err(e) = PublicKey::parse(&self.central_public_key) {
            return Err((
                k("central_public_key"),
                format!(
                    "{e}; copy the node.pub line `ghatta keygen` wrote for the central (the public half of its --key-file)"
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

    /// The uploader's configuration, reading the key file (errors name the config key and the
    /// key file).
    pub fn uploader_config(&self) -> Result<UploaderConfig, WanKeyError> {
        let secret = SecretKey::load(&self.key_file)?;
        let central_key = PublicKey::parse(&self.central_public_key)?;
        let mut cfg = UploaderConfig::new(self.grid, secret, central_key, self.central.clone());
        cfg.rate_bytes_per_s = self.rate_bytes_per_s;
        cfg.window_batches = self.window_batches;
        Ok(cfg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> WanConfig {
        toml::from_str(
            r#"
            grid = 7
            central = "central.example.org:7700"
            key_file = "/etc/ghatta/node.key"
            central_public_key = "BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc="
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
        c.central_public_key = "not a key".into();
        let (key, why) = c.validate().unwrap_err();
        assert_eq!(key, "wan.central_public_key");
        assert!(why.contains("keygen"), "{why}");
        let mut c = cfg();
        c.window_batches = WINDOW_BATCHES_MAX + 1;
        assert_eq!(c.validate().unwrap_err().0, "wan.window_batches");
    }

    #[test]
    fn key_file_errors_name_the_key_file_and_config_key() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = cfg();
        c.key_file = dir.path().join("missing.key");
        let e = c.uploader_config().unwrap_err().to_string();
        assert!(
            e.contains("wan.key_file") && e.contains("missing.key") && e.contains("keygen"),
            "{e}"
        );
        let g = ghatta_proto::keys::generate_into(dir.path()).unwrap();
        c.key_file = g.private_path;
        let up = c.uploader_config().unwrap();
        assert_eq!(up.secret.public(), g.public);
        assert_eq!(up.central_key.0, [7; 32]);
    }
}
