//! When a replica snapshots its state machine: after [`EVERY_ENTRIES_DEFAULT`] applied entries
//! (or a harness's `SnapshotTuning`), and later when the last snapshot was large, so that the
//! bytes a replica writes for snapshots stay in proportion to the log it lets it purge.
//!
//! A snapshot is the whole state, written with an fsync; most of it, while no central
//! acknowledges, is the outbox, which grows by every ledger line and hourly energy record. With
//! a fixed interval the writes grow with the outbox: after 19 hours without the WAN a
//! 1,500-customer grid's snapshot is ~17 MB, rewritten every ~15 minutes on every board (~70 MB
//! an hour on the SD card; a GB an hour at a week's outbox), and 12 % of the simulator's time by
//! the afternoon. Waiting one
//! entry per [`SNAPSHOT_BYTES_PER_ENTRY`] bytes of the last snapshot keeps the snapshot writes
//! per applied entry bounded (about that many bytes), at the price of a log that holds as many
//! entries (entries are batches of ~100 B to 16 KiB: the log stays around the snapshot's size).
//! openraft's own policy counts entries only, so it is off (`SnapshotPolicy::Never`) and this
//! task triggers the builds; openraft still purges the log behind each one.

use std::time::Duration;

use openraft_rt::WatchReceiver;

use super::Node;

/// Entries applied between two snapshots at least: about 15 minutes of a five-node grid's
/// field batches, and a log of a few MB behind the snapshot.
pub const EVERY_ENTRIES_DEFAULT: u64 = 2_000;
/// Entries kept in the log behind a snapshot, for followers that lag briefly.
pub const KEEP_ENTRIES_DEFAULT: u64 = 500;
/// Bytes of the last snapshot per entry to wait before the next: 1 KiB, a few times an average
/// entry, so a large snapshot is rewritten only after a log of comparable size.
pub const SNAPSHOT_BYTES_PER_ENTRY: u64 = 1_024;
/// How often the policy is checked. A snapshot a second late costs nothing; checking on every
/// applied entry would wake every replica for nothing.
pub const SNAPSHOT_POLL_INTERVAL: Duration = Duration::from_secs(1);

/// Entries to apply after a snapshot of `last_snapshot_bytes` before the next one.
pub fn entries_between(every_entries: u64, last_snapshot_bytes: u64) -> u64 {
    every_entries.max(last_snapshot_bytes / SNAPSHOT_BYTES_PER_ENTRY)
}

pub(crate) async fn run(node: Node, every_entries: u64) {
    let metrics = node.raft().metrics();
    loop {
        tokio::time::sleep(SNAPSHOT_POLL_INTERVAL).await;
        let (applied, snapshot) = {
            let m = metrics.borrow_watched();
            (
                m.last_applied.as_ref().map_or(0, |l| l.index()),
                m.snapshot.as_ref().map(|l| l.index()),
            )
        };
        let due = entries_between(every_entries, node.state_machine().snapshot_bytes());
        // With no snapshot yet, entries count from index 0 (openraft's rule too).
        let since = snapshot.map_or(applied.saturating_add(1), |s| applied.saturating_sub(s));
        // A trigger while a build runs is dropped by openraft; the next poll tries again.
        if since >= due && node.raft().trigger().snapshot().await.is_err() {
            // The Raft core stopped: so does the node.
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_large_snapshot_waits_for_a_log_of_its_size() {
        assert_eq!(entries_between(2_000, 0), 2_000);
        assert_eq!(
            entries_between(2_000, 1_000_000),
            2_000,
            "1 MB: the minimum"
        );
        assert_eq!(
            entries_between(2_000, 17 * 1_024 * 1_024),
            17 * 1_024,
            "17 MiB: one entry per KiB"
        );
        assert_eq!(entries_between(10, 64 * 1_024), 64);
    }
}
