//! Exactly-once windows per proposing node: `(origin, seq)` applied twice is a no-op.
//!
//! A node pipelines proposals, and a leader change can commit them out of order (seq 8 commits,
//! seq 7 was lost with the old leader and is retried), so a plain "highest seq" watermark would
//! wrongly drop seq 7. The window keeps the contiguous low watermark plus the sparse set of
//! applied sequences above it.
//!
//! Sequence numbers start at 1 (0 means "no dedupe" and never reaches a window), so the low
//! watermark starts at 1: a window waiting for a sequence 0 that never comes would keep every
//! applied sequence in `above` until 4,096 had passed, and every apply serialises and writes
//! the whole window: a cost paid on every entry, which the simulator's profile showed.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::raft::Receipt;

/// How far above its low watermark a node's applied sequences may spread. A proposer keeps at
/// most this many proposals in flight (the field loop proposes about one per second, so 4,096
/// is over an hour of unacknowledged batches). A sequence beyond the window slides it forward;
/// sequences that fall below are then treated as already applied.
pub const DEDUPE_WINDOW: u64 = 4096;

/// The first sequence number a proposer hands out (`Proposer::next_seq` starts at 1).
pub const FIRST_SEQ: u64 = 1;

/// One origin's applied sequences.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DedupeWindow {
    /// Every sequence below this has been applied (or given up on).
    pub below: u64,
    /// Applied sequences at or above `below`.
    pub above: BTreeSet<u64>,
}

impl Default for DedupeWindow {
    fn default() -> Self {
        DedupeWindow {
            below: FIRST_SEQ,
            above: BTreeSet::new(),
        }
    }
}

/// The verdict on a sequence number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeqCheck {
    /// New: apply it (it is now recorded).
    Fresh,
    /// Seen before: do nothing.
    Duplicate,
}

impl DedupeWindow {
    /// Record `seq` if it is new; say whether it was.
    pub fn check_and_record(&mut self, seq: u64) -> SeqCheck {
        // A window stored before the watermark started at `FIRST_SEQ`: sequence 0 was never
        // going to fill its gap.
        self.below = self.below.max(FIRST_SEQ);
        if seq < self.below || self.above.contains(&seq) {
            return SeqCheck::Duplicate;
        }
        if seq >= self.below.saturating_add(DEDUPE_WINDOW) {
            // Slide: the proposer went further ahead than it may; older gaps are closed.
            self.below = seq + 1 - DEDUPE_WINDOW;
            self.above = self.above.split_off(&self.below);
        }
        self.above.insert(seq);
        // Advance the watermark over the contiguous run.
        while self.above.first() == Some(&self.below) {
            self.above.pop_first();
            self.below += 1;
        }
        SeqCheck::Fresh
    }

    /// Whether `seq` counts as applied (it was, or it fell below the window).
    pub fn contains(&self, seq: u64) -> bool {
        seq < self.below.max(FIRST_SEQ) || self.above.contains(&seq)
    }

    /// The highest applied sequence (0 if none).
    pub fn highest(&self) -> u64 {
        self.above
            .last()
            .copied()
            .unwrap_or(self.below.saturating_sub(1))
    }
}

/// How many receipts of recently applied proposals a replica keeps to answer a retry with the
/// first attempt's outcome (`node::inflight`). A retry comes within a proposal's deadline
/// (`PROPOSE_DEADLINE`, 30 s); a grid's members propose a few batches a second between them,
/// so 1,024 covers that deadline several times over, in about 100 KiB. An older retry is
/// answered as a duplicate without the counts.
pub const RECENT_RECEIPTS_MAX: usize = 1024;

/// The receipts of the last [`RECENT_RECEIPTS_MAX`] applied proposals, by `(origin, seq)`.
/// Not replicated state: each replica fills it as it applies, and only answers read it.
#[derive(Debug, Default)]
pub struct RecentReceipts {
    by_key: std::collections::HashMap<(u64, u64), Receipt>,
    order: std::collections::VecDeque<(u64, u64)>,
}

impl RecentReceipts {
    /// Remember the receipt of `(origin, seq)`, forgetting the oldest beyond the bound.
    pub fn insert(&mut self, key: (u64, u64), receipt: Receipt) {
        if self.by_key.insert(key, receipt).is_none() {
            self.order.push_back(key);
        }
        while self.order.len() > RECENT_RECEIPTS_MAX {
            if let Some(old) = self.order.pop_front() {
                self.by_key.remove(&old);
            }
        }
    }

    /// The receipt of `(origin, seq)`, if still remembered.
    pub fn get(&self, key: &(u64, u64)) -> Option<&Receipt> {
        self.by_key.get(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retried_sequence_is_a_duplicate_even_out_of_order() {
        let mut w = DedupeWindow::default();
        assert_eq!(w.check_and_record(1), SeqCheck::Fresh);
        assert_eq!(w.check_and_record(3), SeqCheck::Fresh);
        assert_eq!(w.check_and_record(3), SeqCheck::Duplicate);
        // 2 was lost and retried after 3 committed: still applied once.
        assert_eq!(w.check_and_record(2), SeqCheck::Fresh);
        assert_eq!(w.check_and_record(2), SeqCheck::Duplicate);
        assert_eq!(w.below, 4);
        assert!(w.above.is_empty());
        assert_eq!(w.highest(), 3);
    }

    #[test]
    fn consecutive_sequences_keep_the_window_empty() {
        // From a fresh window and from one stored with the old watermark of 0.
        for mut w in [
            DedupeWindow::default(),
            DedupeWindow {
                below: 0,
                above: BTreeSet::new(),
            },
        ] {
            for seq in 1..=100 {
                assert_eq!(w.check_and_record(seq), SeqCheck::Fresh);
                assert!(w.above.is_empty(), "seq {seq}: {:?}", w.above);
            }
            assert_eq!(w.below, 101);
            assert_eq!(w.highest(), 100);
        }
    }

    #[test]
    fn window_slides_and_stays_bounded() {
        let mut w = DedupeWindow::default();
        assert_eq!(w.check_and_record(5), SeqCheck::Fresh);
        let far = 5 + 2 * DEDUPE_WINDOW;
        assert_eq!(w.check_and_record(far), SeqCheck::Fresh);
        assert_eq!(w.below, far + 1 - DEDUPE_WINDOW);
        assert_eq!(w.check_and_record(6), SeqCheck::Duplicate);
        assert!(w.above.len() as u64 <= DEDUPE_WINDOW);
        assert_eq!(w.highest(), far);
    }

    #[test]
    fn recent_receipts_keep_the_newest_up_to_the_bound() {
        let mut r = RecentReceipts::default();
        for seq in 1..=(RECENT_RECEIPTS_MAX as u64 + 10) {
            let receipt = Receipt {
                index: seq * 2,
                ..Receipt::default()
            };
            r.insert((7, seq), receipt);
        }
        assert!(r.get(&(7, 1)).is_none(), "the oldest are forgotten");
        assert!(r.get(&(7, 10)).is_none());
        let newest = RECENT_RECEIPTS_MAX as u64 + 10;
        assert_eq!(r.get(&(7, newest)).map(|x| x.index), Some(newest * 2));
        assert_eq!(r.get(&(7, 11)).map(|x| x.index), Some(22));
        assert_eq!(r.by_key.len(), RECENT_RECEIPTS_MAX);
    }

    #[test]
    fn contains_says_applied_for_recorded_and_passed_sequences() {
        let mut w = DedupeWindow::default();
        assert!(!w.contains(1));
        w.check_and_record(1);
        w.check_and_record(3);
        assert!(w.contains(1) && w.contains(3));
        assert!(!w.contains(2) && !w.contains(4));
        assert!(w.contains(0), "0 is below the first sequence");
    }
}
