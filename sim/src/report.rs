//! The run report: what a run did and which invariants broke, as JSON.

use serde::{Deserialize, Serialize};

use crate::check::{FrequencyStats, Violation};
use crate::link::LinkCounters;

/// Metering versus billing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerSummary {
    /// Ground-truth energy supplied to customers (plant model).
    pub metered_wh: u64,
    /// Energy the billing actor charged for.
    pub billed_wh: u64,
    /// Energy metered but held for review (a read beyond the connection's draw), not charged;
    /// billed + held accounts for every committed read.
    #[serde(default)]
    pub held_wh: u64,
    /// Committed meter reads.
    pub reads: u64,
    /// Ledger charges.
    pub charges: u64,
    /// OpenPAYGO tokens whose entry committed (the scenario's token agents), distinct.
    #[serde(default)]
    pub tokens_entered: u64,
    /// Tokens credited (each exactly once: `token_once`).
    #[serde(default)]
    pub tokens_credited: u64,
    /// Committed typings of those tokens (more than `tokens_entered` when a token was typed
    /// at several nodes and committed from more than one: the later copies refused as used).
    #[serde(default)]
    pub tokens_typed: u64,
}

/// The field loops over a run: their metering journals and local protection (filled by the
/// controller, which owns them).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct FieldSummary {
    /// Most meter reads waiting in journals at once, over all nodes.
    pub peak_reads: u64,
    /// Seconds from the last heal until every journal first held no read (absent: never,
    /// or no fault healed).
    pub drained_after_heal_s: Option<f64>,
    /// Reads the field loops journaled, over all nodes and incarnations.
    pub reads_journaled: u64,
    /// Reads they saw committed and removed from their journals.
    pub reads_committed: u64,
    /// Under-frequency stages tripped by local protection, over all nodes.
    pub ufls_trips: u64,
    /// Ballast stages switched in by local protection (over-frequency), over all nodes.
    pub ballast_switched_in: u64,
}

/// The sealed links over a run (`links.sealed`), summed over nodes and incarnations (filled by
/// the controller, which owns the opener).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SecuritySummary {
    /// Frames sealed and handed to a link.
    pub sealed: u64,
    /// Frames that opened and reached the RPC layer.
    pub opened: u64,
    /// Frames the opener dropped, every reason (the fields below and the rest).
    pub rejected: u64,
    /// Tag did not verify (corrupted past the frame CRC, or forged).
    pub forged: u64,
    /// A counter already seen: the links' duplicates.
    pub replayed: u64,
    /// Older than the replay window.
    pub out_of_window: u64,
    /// From an earlier boot of the sender, or to an earlier boot of the receiver (restarts).
    pub stale_epoch: u64,
    /// Hellos sent to tell a restarted peer this node's epoch.
    pub hellos_sent: u64,
    /// Forgeries a rogue member sent (`kind = "rogue"` faults).
    #[serde(default)]
    pub rogue_sent: u64,
    /// Requests the nodes refused as not the sender's to make, every reason (the members'
    /// `status().refused`, summed over nodes and incarnations).
    #[serde(default)]
    pub refused: u64,
}

/// What the controller knows only at the end of a run.
#[derive(Clone, Debug, Default)]
pub struct FinishInfo {
    /// Scenario name.
    pub scenario: String,
    /// The world seed.
    pub seed: u64,
    /// Simulated end time.
    pub end_t_ms: u64,
    /// Wall-clock seconds the run took (measured by the caller; the sim never reads wall time).
    pub wall_seconds: f64,
    /// `SimNet::trace_digest()`.
    pub net_trace_digest: Option<[u8; 32]>,
    /// `SimNet::total_counters()`.
    pub net_counters: Option<LinkCounters>,
    /// Ground-truth metered energy over every plant (`Plant::metered_energy_wh`).
    pub metered_wh: u64,
}

/// One actor deploy of a run (`deploy` faults; filled by the controller, which drives it).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct DeploySummary {
    /// The actor.
    pub actor: String,
    /// The version deployed.
    pub version: u32,
    /// Module bytes.
    pub module_bytes: u64,
    /// When the operator asked, simulated seconds.
    pub asked_s: f64,
    /// Seconds from the request until a node's registry first showed the version active (the
    /// proposing side; absent: never).
    pub active_first_after_s: Option<f64>,
    /// Seconds from the request until every node's registry showed the version active
    /// (absent: never, during the run).
    pub active_everywhere_after_s: Option<f64>,
    /// The log index it became active at (the same on every node, or a violation).
    pub active_since_index: Option<u64>,
    /// Payload bytes all links carried from the request until active everywhere.
    pub air_bytes: u64,
    /// Payload bytes all links would carry in as long a window without the deploy: the
    /// background (field batches, heartbeats) to subtract, at the rate of the time before the
    /// request (as long as the deploy took, or the second half of the run so far if that is
    /// shorter; absent at the run's start).
    pub air_bytes_before: Option<u64>,
    /// Deploy attempts the operator made (each one `Node::deploy_actor` call).
    pub attempts: u32,
    /// The last failed attempt's error (absent: none failed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

impl DeploySummary {
    /// Bytes on the air per KiB of module: the deploy window's payload bytes less the
    /// background of as long a window before it (absent without either).
    pub fn air_bytes_per_module_kib(&self) -> Option<u64> {
        let before = self.air_bytes_before?;
        self.active_everywhere_after_s?;
        let kib = self.module_bytes.max(1);
        Some(self.air_bytes.saturating_sub(before) * 1024 / kib)
    }
}

/// One run's report.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// Scenario name.
    pub scenario: String,
    /// The world seed (replays the run).
    pub seed: u64,
    /// Hash over every observation and every network delivery and drop.
    pub trace_hash: String,
    /// Simulated seconds.
    pub sim_seconds: f64,
    /// Wall seconds.
    pub wall_seconds: f64,
    /// Whether every checker held.
    pub passed: bool,
    /// Broken invariants (empty when all hold; capped per checker).
    pub violations: Vec<Violation>,
    /// Violations beyond the per-checker cap.
    pub violations_suppressed: u64,
    /// Highest committed (applied) log index.
    pub commits: u64,
    /// Terms that had a leader.
    pub elections: u64,
    /// Observations fed to the checkers.
    pub observations: u64,
    /// Frequency summary.
    pub frequency: FrequencyStats,
    /// Metering versus billing.
    pub ledger: LedgerSummary,
    /// Network counters summed over links.
    pub net: LinkCounters,
    /// When the last fault healed, seconds.
    pub last_heal_s: f64,
    /// The field loops (runs with plants only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<FieldSummary>,
    /// The sealed links (absent when the scenario's links are not sealed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security: Option<SecuritySummary>,
    /// How the nodes ran (`single`: one runtime; `lockstep`: one each, in windows): part of
    /// the schedule, so a replay must use the same one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine: Option<String>,
    /// What the world saw that breaks no invariant but a reader wants to know (a node
    /// refusing to start on a corrupted or full card, and its error).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    /// The run's actor deploys (empty when it has none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deploys: Vec<DeploySummary>,
    /// The nodes' outboxes and snapshots (filled by the controller, which owns them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outbox: Option<OutboxSummary>,
    /// The WAN uplink to the central (scenarios with `[wan]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wan: Option<WanSummary>,
}

/// The grid's WAN uplink over a run (`[wan]`; filled by the controller, which runs the
/// uploaders and the central).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WanSummary {
    /// Outbox records the run committed (every stream's, and those none carries).
    pub records_committed: u64,
    /// Records the central stored (each once).
    pub records_stored: u64,
    /// Records that arrived again below the central's cursor (resent after a broken
    /// connection or a leader change) and were skipped.
    pub records_resent: u64,
    /// Batches the central answered.
    pub batches: u64,
    /// Batches answered with a gap ack (they started past the cursor).
    pub gap_acks: u64,
    /// Connections the central saw end in an error (broken by an outage, mostly).
    pub sessions_ended_in_error: u64,
    /// Payload bytes grid -> central, resends included.
    pub bytes_up: u64,
    /// Payload bytes central -> grid.
    pub bytes_down: u64,
    /// Connections established.
    pub connects: u64,
    /// Connects refused (link down).
    pub connects_refused: u64,
    /// Live connections an outage broke.
    pub connections_broken: u64,
    /// Outages that started.
    pub outages: u64,
    /// Records the reference node's outbox held at the end.
    pub outbox_end: u64,
    /// Records it had pruned (acknowledged on every stream, a day old, not pinned).
    pub pruned: u64,
}

/// The nodes' outboxes and snapshots over a run: how large they grew (bounded without a
/// central by the node's fold) and whether what the last outbox holds still adds up to every
/// charge committed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboxSummary {
    /// Most records any node's outbox held.
    pub records_max: u64,
    /// Largest snapshot any node built or installed, bytes.
    pub snapshot_bytes_max: u64,
    /// Records in the reference node's outbox at the end.
    pub records_end: u64,
    /// Their encoded bytes.
    pub bytes_end: u64,
    /// Of them, folded days (`Output::Folded`).
    pub folded_records: u64,
    /// Energy charged, from the ledger lines still in the outbox, Wh.
    pub detail_charged_wh: u64,
    /// Energy charged, from the folded days, Wh.
    pub folded_charged_wh: u64,
    /// Energy held for review, from the ledger lines and the folded days, Wh.
    pub held_wh: u64,
    /// At the end of each simulated day: [day, records max, snapshot bytes max].
    pub daily: Vec<[u64; 3]>,
}

impl Report {
    /// Pretty JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
    }

    /// A one-line summary for humans.
    pub fn summary(&self) -> String {
        format!(
            "{} seed={} {} sim={:.0}s wall={:.2}s commits={} elections={} freq={:.3}-{:.3}Hz \
             in_band={:.3}% metered={}Wh billed={}Wh violations={} trace={}",
            self.scenario,
            self.seed,
            if self.passed { "PASS" } else { "FAIL" },
            self.sim_seconds,
            self.wall_seconds,
            self.commits,
            self.elections,
            self.frequency.min_hz,
            self.frequency.max_hz,
            self.frequency.in_band_pct,
            self.ledger.metered_wh,
            self.ledger.billed_wh,
            self.violations.len() as u64 + self.violations_suppressed,
            &self.trace_hash[..16.min(self.trace_hash.len())],
        )
    }
}
