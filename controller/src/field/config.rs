//! The field loop's settings (`[field]` in node.toml): owned here, next to the loop that uses
//! them; `config.rs` reads them as part of the node's file.

use serde::Deserialize;

use crate::net::LinkProfile;

/// Field loop settings (`[field]`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FieldConfig {
    /// Batch period, ms: telemetry is summarised and proposed (with the period's meter reads)
    /// about once per period (DESIGN: batches about every second).
    pub telemetry_interval_ms: u64,
    /// Every meter is read once per this period, ms (1 Hz by default: island credit follows
    /// consumption within a second).
    pub meter_interval_ms: u64,
    /// Grid sample period, ms (10 Hz by default: protection's shortest delay, 500 ms, is five
    /// samples).
    pub grid_interval_ms: u64,
    /// A changed meter register is journaled (and so billed) at most this often per customer,
    /// ms. A minute bounds a prepaid overdraft to a minute's consumption and keeps a week of
    /// island at ~10,000 reads per customer; a cumulative register loses no energy between
    /// two journaled reads.
    pub meter_journal_interval_ms: u64,
    /// The same, while the journal is over its limits (reads are never dropped, so they come
    /// less often instead): an hour.
    pub meter_journal_interval_ms_over_limit: u64,
    /// While a backlog drains, one proposal (up to 511 reads, ~12 KiB) at most this often,
    /// ms. The default, 1 s, keeps even a drain at DESIGN's one batch a second per node:
    /// ~12 KiB/s per follower and 511 reads/s, so a 30-minute island of a 350-household
    /// board (10,500 reads) drains in about 21 s, a week-long one (3.5 M reads) in about two
    /// hours. On a 64 kbit/s radio set 5000 or more so the drain leaves room for heartbeats;
    /// on a wired LAN 200 drains five times faster.
    pub drain_interval_ms: u64,
    /// Encoded inputs per proposal at most, bytes. Unset: by `link_profile` (512 on radio,
    /// where an AppendEntries must fit in a few ~100-byte frames; 16 KiB otherwise).
    pub proposal_bytes_max: Option<u64>,
    /// Local protection.
    pub protection: super::protection::ProtectionConfig,
    /// The journal's limits.
    pub journal: crate::journal::JournalLimits,
    /// Island credit enforcement.
    pub credit: super::credit::CreditConfig,
}

impl Default for FieldConfig {
    fn default() -> Self {
        FieldConfig {
            telemetry_interval_ms: 1_000,
            meter_interval_ms: 1_000,
            grid_interval_ms: 100,
            meter_journal_interval_ms: 60_000,
            meter_journal_interval_ms_over_limit: 3_600_000,
            drain_interval_ms: 1_000,
            proposal_bytes_max: None,
            protection: Default::default(),
            journal: Default::default(),
            credit: Default::default(),
        }
    }
}

/// Shortest grid sample period, ms: the PZEM-004T answers a Modbus read in tens of ms at
/// 9,600 bit/s, and 20 Hz is already finer than its 0.1 Hz frequency resolution can use.
pub const GRID_INTERVAL_MS_MIN: u64 = 50;
/// Shortest batch, meter and drain periods, ms.
pub const FIELD_INTERVAL_MS_MIN: u64 = 100;

impl FieldConfig {
    /// Check the settings; errors are (key, problem).
    pub fn validate(&self) -> Result<(), (String, String)> {
        let k = |key: &str| format!("field.{key}");
        if self.grid_interval_ms < GRID_INTERVAL_MS_MIN {
            return Err((
                k("grid_interval_ms"),
                format!("must be at least {GRID_INTERVAL_MS_MIN} ms"),
            ));
        }
        for (key, v) in [
            ("telemetry_interval_ms", self.telemetry_interval_ms),
            ("meter_interval_ms", self.meter_interval_ms),
            ("drain_interval_ms", self.drain_interval_ms),
        ] {
            if v < FIELD_INTERVAL_MS_MIN {
                return Err((
                    k(key),
                    format!("must be at least {FIELD_INTERVAL_MS_MIN} ms"),
                ));
            }
        }
        if self.telemetry_interval_ms < self.grid_interval_ms {
            return Err((
                k("telemetry_interval_ms"),
                "must be at least grid_interval_ms (a batch summarises grid samples)".into(),
            ));
        }
        if self.meter_journal_interval_ms_over_limit < self.meter_journal_interval_ms {
            return Err((
                k("meter_journal_interval_ms_over_limit"),
                "must be at least meter_journal_interval_ms".into(),
            ));
        }
        if self.journal.bytes_max < 1024 * 1024 || self.journal.records_max < 1_000 {
            return Err((
                k("journal.bytes_max"),
                "the journal needs at least 1 MiB and 1,000 records".into(),
            ));
        }
        if let Some(b) = self.proposal_bytes_max
            && b < super::shipper::PROPOSAL_BYTES_MIN
        {
            return Err((
                k("proposal_bytes_max"),
                format!(
                    "{b} bytes cannot carry a telemetry report and a read; at least {}",
                    super::shipper::PROPOSAL_BYTES_MIN
                ),
            ));
        }
        self.protection.validate()?;
        Ok(())
    }

    /// These settings with the proposal size resolved for a link profile (when not set).
    pub fn for_link(mut self, profile: LinkProfile) -> FieldConfig {
        if self.proposal_bytes_max.is_none() {
            self.proposal_bytes_max = Some(match profile {
                LinkProfile::Radio => super::shipper::PROPOSAL_BYTES_MAX_RADIO,
                LinkProfile::Lan | LinkProfile::Wifi | LinkProfile::Satellite => {
                    super::shipper::PROPOSAL_BYTES_MAX_DEFAULT
                }
            });
        }
        self
    }
}
