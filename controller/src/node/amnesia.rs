//! A node that lost its vote (its `raft-log.redb` gone or older than its state machine, as
//! after an SD card failure or a restored copy) abstains from votes until a leader has
//! reached it and it holds the log up to what it had applied.
//!
//! Raft's election safety rests on each node voting at most once per term, which the vote
//! persisted in the log store guarantees. A node whose log store lost it would grant a second
//! vote in a term it already voted in, and two leaders of one term can each commit a
//! different entry at one index. Such a node can tell: its log store has no vote while its
//! state machine has applied entries. Until a leader's append has reached it (so it knows the
//! term the grid is in, and the leader's log) it answers no vote or pre-vote request; a
//! candidate counts that as a vote not given. What remains: a vote the node cast, before the
//! loss, in a term higher than any leader's it hears afterwards (a failed election); closing
//! that needs the vote stored apart from the log, which a wiped data directory loses as well.
//!
//! Logic only: what the node knows is passed in.

use std::sync::atomic::{AtomicU64, Ordering};

/// Whether this node abstains from votes, and until when.
#[derive(Debug, Default)]
pub(crate) struct Amnesia {
    /// 0: votes as usual. Otherwise one more than the applied index at start, which the log
    /// must reach (under a leader's committed vote) before the node votes again.
    until: AtomicU64,
}

impl Amnesia {
    /// At start: the vote in the log store and the state machine's applied index.
    pub(crate) fn at_start<V>(vote: Option<&V>, applied_index: u64) -> Amnesia {
        let until = if vote.is_none() && applied_index > 0 {
            tracing::warn!(
                applied_index,
                "this node's Raft log has no vote but its state machine applied entries: the log \
                 was lost or restored from an older copy. It takes no part in elections until \
                 a leader reaches it; the leader sends it the log again"
            );
            applied_index + 1
        } else {
            0
        };
        Amnesia {
            until: AtomicU64::new(until),
        }
    }

    /// Whether to refuse a vote request now, given whether this node follows a leader under a
    /// committed vote and the index of its last log entry. Once it may vote, it always may.
    pub(crate) fn abstains(&self, follows_a_leader: bool, last_log_index: Option<u64>) -> bool {
        let until = self.until.load(Ordering::Relaxed);
        if until == 0 {
            return false;
        }
        if follows_a_leader && last_log_index.is_some_and(|i| i + 1 >= until) {
            tracing::info!("a leader reached this node and it holds the log again: it votes again");
            self.until.store(0, Ordering::Relaxed);
            return false;
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_without_a_vote_but_with_applied_entries_abstains_until_a_leader_reached_it() {
        // A fresh node and one with its vote both vote.
        assert!(!Amnesia::at_start::<u8>(None, 0).abstains(false, None));
        assert!(!Amnesia::at_start(Some(&1u8), 50).abstains(false, Some(10)));
        let a = Amnesia::at_start::<u8>(None, 50);
        assert!(a.abstains(false, Some(50)), "no leader yet");
        assert!(a.abstains(true, Some(49)), "the log is still short");
        assert!(!a.abstains(true, Some(50)));
        assert!(!a.abstains(false, None), "once it may vote, it always may");
    }
}
