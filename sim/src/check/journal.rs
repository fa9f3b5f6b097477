//! `journal_drain`: meter reads journaled by the field loops while a node could not commit
//! (an island, a cut) reach the ledger in bounded time after the last heal. The world that
//! owns the journals (ghatta-simulate) samples them into a [`JournalDrain`] every step; this
//! judges it at the end of the run.

use super::Violation;

/// The field loops' journals over a run (every node's meter reads waiting to be committed),
/// sampled every world step.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct JournalDrain {
    /// Most reads waiting at once, over all nodes.
    pub peak_reads: u64,
    /// When the last fault ended (ms of simulated time), if any did.
    pub last_heal_ms: Option<u64>,
    /// How long after the last fault ended every journal first held no read, ms.
    pub drained_after_heal_ms: Option<u64>,
    /// Reads the field loops journaled, over all nodes and incarnations.
    pub reads_journaled: u64,
    /// Reads they saw committed (and removed from their journal).
    pub reads_committed: u64,
}

impl JournalDrain {
    /// **Island meter reads reach the ledger in bounded time**: with `bound_s` set (the scenario's
    /// `journal_drain_bound_s`), every journal must have emptied within `bound_s` of the last
    /// heal. A journal that never empties means reads stuck on a node: billed late or never.
    /// Exactly-once billing of what drains is the `meter_billing` checker's job.
    pub fn check_drain(&self, bound_s: Option<f64>, end_t_ms: u64) -> Option<Violation> {
        let bound_ms = (bound_s? * 1_000.0) as u64;
        let heal = self.last_heal_ms?;
        let message = match self.drained_after_heal_ms {
            Some(d) if d <= bound_ms => return None,
            Some(d) => format!(
                "the field loops' journals emptied {:.1} s after the last heal, over the \
                 {:.1} s bound (peak backlog {} reads)",
                d as f64 / 1e3,
                bound_ms as f64 / 1e3,
                self.peak_reads
            ),
            None => format!(
                "the field loops' journals still held meter reads at the end, {:.1} s after \
                 the last heal (bound {:.1} s, peak backlog {} reads)",
                end_t_ms.saturating_sub(heal) as f64 / 1e3,
                bound_ms as f64 / 1e3,
                self.peak_reads
            ),
        };
        Some(Violation {
            checker: "journal_drain".into(),
            t_ms: heal + bound_ms,
            message,
        })
    }
}
