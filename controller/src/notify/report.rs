//! This board's alarms, committed: after each evaluation the rules' active set and their
//! raises and clears go to a [`ReportQueue`]; a task proposes them as one
//! `Body::BoardAlarms` report (the whole active set, the changes since the last committed
//! report), retrying the same report under the same sequence number until it commits, so each
//! change is committed once. While the board is cut off, changes wait (the newest
//! [`CHANGES_PER_REPORT_MAX`] of them; older ones are counted as dropped) and the board's own
//! page shows them meanwhile.

use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::AlarmChange;
use crate::node::{Node, ProposeError};
use crate::raft::Body;
use crate::raft::board_alarms::{
    ActiveRule, BoardAlarms, CHANGES_PER_REPORT_MAX, RULE_NAME_BYTES_MAX, RuleChange,
    TEXT_BYTES_MAX,
};

/// First wait after a report failed to commit; doubled per failure up to
/// [`RETRY_WAIT_MAX`]. The proposer already waited its own deadline.
pub const RETRY_WAIT_MIN: Duration = Duration::from_secs(2);
/// Longest wait between attempts: an islanded board tries about once a minute, not more,
/// and its report goes through within a minute of the heal.
pub const RETRY_WAIT_MAX: Duration = Duration::from_secs(60);

/// What the reporter needs from the node: a fresh sequence number and a proposal under it.
/// The consumer owns the trait; [`Node`] implements it, a test can script it.
pub trait AlarmLog: Clone + Send + Sync + 'static {
    /// A fresh sequence number.
    fn next_seq(&self) -> Result<u64, ProposeError>;
    /// Propose `report` under `seq`; safe to call again with the same pair.
    fn propose(
        &self,
        seq: u64,
        report: BoardAlarms,
    ) -> impl Future<Output = Result<(), ProposeError>> + Send;
}

impl AlarmLog for Node {
    fn next_seq(&self) -> Result<u64, ProposeError> {
        Node::next_seq(self)
    }

    fn propose(
        &self,
        seq: u64,
        report: BoardAlarms,
    ) -> impl Future<Output = Result<(), ProposeError>> + Send {
        let node = self.clone();
        async move {
            let r = node
                .propose_with_seq(seq, Body::BoardAlarms(report))
                .await?;
            if r.rejected > 0 {
                // Checked before it was proposed: only a node whose limits differ from its
                // peers' gets here. Nothing would change on a retry.
                tracing::error!(
                    refusals = ?r.refusals,
                    "the cluster refused this board's alarm report; these changes are not committed"
                );
            }
            Ok(())
        }
    }
}

/// The changes waiting to be committed, and the active set.
#[derive(Debug, Default)]
struct Queue {
    backlog: VecDeque<RuleChange>,
    dropped: u32,
    active: Vec<ActiveRule>,
    /// The active set differs from the last one committed (or none was committed yet: a
    /// restarted board's first report clears what it reported before).
    active_dirty: bool,
    /// The report being proposed.
    in_flight: Option<InFlight>,
}

/// A report proposed and not yet known to be committed.
#[derive(Debug)]
struct InFlight {
    seq: u64,
    /// Backlog changes it holds (from the front).
    changes: usize,
    /// Drops it counts.
    dropped: u32,
    report: BoardAlarms,
}

/// Shared between the rules' task (which records) and the reporting task (which proposes).
#[derive(Debug, Clone)]
pub struct ReportQueue {
    inner: Arc<Mutex<Queue>>,
}

impl Default for ReportQueue {
    fn default() -> Self {
        ReportQueue {
            inner: Arc::new(Mutex::new(Queue {
                active_dirty: true,
                ..Queue::default()
            })),
        }
    }
}

/// `s` cut to at most `max` bytes on a character boundary.
fn cut(s: &str, max: usize) -> String {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

impl ReportQueue {
    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// One evaluation's outcome: the rules raised now with the text of their raise, and the
    /// changes it made.
    pub fn record(&self, active: &[(&'static str, u64)], changes: &[AlarmChange]) {
        let mut q = self.lock();
        let texts: BTreeMap<&str, String> = q
            .active
            .iter()
            .map(|a| (a.rule.as_str(), a.text.clone()))
            .collect();
        let raised: BTreeMap<&str, &str> = changes
            .iter()
            .filter(|c| c.raised)
            .map(|c| (c.rule, c.text.as_str()))
            .collect();
        let now: Vec<ActiveRule> = active
            .iter()
            .map(|(rule, since_ms)| ActiveRule {
                rule: cut(rule, RULE_NAME_BYTES_MAX),
                since_ms: *since_ms,
                text: cut(
                    raised
                        .get(rule)
                        .copied()
                        .or_else(|| texts.get(rule).map(String::as_str))
                        .unwrap_or(rule),
                    TEXT_BYTES_MAX,
                ),
            })
            .collect();
        if now != q.active {
            q.active = now;
            q.active_dirty = true;
        }
        for c in changes {
            if q.backlog.len() == CHANGES_PER_REPORT_MAX {
                q.backlog.pop_front();
                q.dropped = q.dropped.saturating_add(1);
                // The oldest change in flight went with it: that report now holds one fewer
                // of the backlog's changes (it still commits them all).
                if let Some(f) = &mut q.in_flight {
                    f.changes = f.changes.saturating_sub(1);
                }
            }
            q.backlog.push_back(RuleChange {
                rule: cut(c.rule, RULE_NAME_BYTES_MAX),
                raised: c.raised,
                at_ms: c.at_ms,
                value: c.value,
                text: cut(&c.text, TEXT_BYTES_MAX),
            });
        }
    }

    /// The report to propose now, under `seq()` when a new one is needed: the one in flight
    /// (the same content under the same number, so a retry is deduplicated), or a new one if
    /// anything waits, or none.
    fn next(
        &self,
        seq: impl FnOnce() -> Result<u64, ProposeError>,
    ) -> Result<Option<(u64, BoardAlarms)>, ProposeError> {
        let mut q = self.lock();
        if let Some(f) = &q.in_flight {
            return Ok(Some((f.seq, f.report.clone())));
        }
        if q.backlog.is_empty() && !q.active_dirty {
            return Ok(None);
        }
        let seq = seq()?;
        let report = BoardAlarms {
            active: q.active.clone(),
            changes: q.backlog.iter().cloned().collect(),
            dropped: q.dropped,
        };
        q.active_dirty = false;
        q.in_flight = Some(InFlight {
            seq,
            changes: q.backlog.len(),
            dropped: q.dropped,
            report: report.clone(),
        });
        Ok(Some((seq, report)))
    }

    /// The report under `seq` committed: its changes leave the backlog.
    fn committed(&self, seq: u64) {
        let mut q = self.lock();
        if q.in_flight.as_ref().is_none_or(|f| f.seq != seq) {
            return;
        }
        if let Some(f) = q.in_flight.take() {
            let n = f.changes.min(q.backlog.len());
            q.backlog.drain(..n);
            q.dropped -= f.dropped.min(q.dropped);
            if f.report.active != q.active {
                q.active_dirty = true;
            }
        }
    }

    /// Changes waiting to be committed (for the board's page).
    pub fn waiting(&self) -> usize {
        self.lock().backlog.len()
    }
}

/// Proposes what `queue` holds, every `interval`, until the task is dropped.
pub fn spawn<L: AlarmLog>(
    log: L,
    queue: ReportQueue,
    interval: Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut wait = RETRY_WAIT_MIN;
        loop {
            let next = queue.next(|| log.next_seq());
            match next {
                Ok(None) => {
                    tokio::time::sleep(interval).await;
                    continue;
                }
                Ok(Some((seq, report))) => match log.propose(seq, report).await {
                    Ok(()) => {
                        queue.committed(seq);
                        wait = RETRY_WAIT_MIN;
                        continue;
                    }
                    Err(e @ ProposeError::Refused { .. }) => {
                        // The leader will refuse the same report again: it is dropped, and the
                        // next one carries the set raised then.
                        tracing::error!(error = %e, "this board's alarm report was refused; its changes are not committed");
                        queue.committed(seq);
                    }
                    Err(e) => tracing::debug!(error = %e, "alarm report not committed yet"),
                },
                Err(e) => tracing::debug!(error = %e, "no sequence number for the alarm report"),
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(RETRY_WAIT_MAX);
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(rule: &'static str, raised: bool, at_ms: u64) -> AlarmChange {
        AlarmChange {
            rule,
            raised,
            at_ms,
            value: 1,
            text: format!("{rule} {}", if raised { "RAISED" } else { "cleared" }),
        }
    }

    #[test]
    fn a_fresh_board_reports_once_even_with_nothing_raised() {
        let q = ReportQueue::default();
        let (seq, r) = q.next(|| Ok(7)).expect("seq").expect("a first report");
        assert_eq!(seq, 7);
        assert!(r.active.is_empty() && r.changes.is_empty());
        q.committed(7);
        assert!(q.next(|| Ok(8)).expect("seq").is_none());
    }

    #[test]
    fn a_retry_carries_the_same_report_and_later_changes_wait_for_the_next() {
        let q = ReportQueue::default();
        q.record(
            &[("frequency_low", 1_000)],
            &[change("frequency_low", true, 1_000)],
        );
        let (seq, first) = q.next(|| Ok(1)).expect("seq").expect("report");
        assert_eq!(first.changes.len(), 1);
        assert_eq!(first.active[0].text, "frequency_low RAISED");
        // Not committed yet; the rule clears meanwhile.
        q.record(&[], &[change("frequency_low", false, 5_000)]);
        let (again, retry) = q.next(|| Ok(2)).expect("seq").expect("retry");
        assert_eq!((again, &retry), (seq, &first), "same number, same content");
        q.committed(seq);
        let (seq2, second) = q.next(|| Ok(2)).expect("seq").expect("the clear");
        assert_eq!(seq2, 2);
        assert_eq!(second.changes.len(), 1);
        assert!(!second.changes[0].raised);
        assert!(second.active.is_empty());
        q.committed(2);
        assert!(q.next(|| Ok(3)).expect("seq").is_none());
        assert_eq!(q.waiting(), 0);
    }

    #[test]
    fn a_long_island_keeps_the_newest_changes_and_counts_the_rest() {
        let q = ReportQueue::default();
        for i in 0..(CHANGES_PER_REPORT_MAX as u64 + 10) {
            q.record(&[], &[change("shedding", i % 2 == 0, i)]);
        }
        let (_, r) = q.next(|| Ok(1)).expect("seq").expect("report");
        assert_eq!(r.changes.len(), CHANGES_PER_REPORT_MAX);
        assert_eq!(r.dropped, 10);
        assert_eq!(r.changes[0].at_ms, 10, "the oldest ten went");
        assert_eq!(r.check(), Ok(()));
    }
}
