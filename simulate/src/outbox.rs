//! The nodes' outboxes and snapshots over a run (`OutboxSummary` in the report): their peaks,
//! sampled at every world step, a line per simulated day, and at the end the `outbox_fold`
//! check: what the reference node's outbox holds (ledger lines, and the days the node folded
//! because no central acknowledged them, `ghatta::state::fold`) adds up to every charge and
//! every held read the run committed. Without a central (`[wan]`) nothing is pruned and
//! everything ever charged is in the outbox, as detail or folded; with one, acknowledged
//! records are pruned, so the check reads every record the run committed as the world saw
//! them applied (`central::SimCentral::committed`). (A record the node folds after a week
//! without acknowledgement would then be counted twice, as its detail and its folded day: no
//! scenario with `[wan]` keeps the central away that long.)

use std::collections::BTreeMap;

use ghatta::node::Node;
use ghatta::state::OutboxRecord;
use ghatta_actor_sdk as sdk;
use ghatta_proto::codec;
use ghatta_sim::check::Violation;
use ghatta_sim::report::{LedgerSummary, OutboxSummary};

/// One simulated day, ms.
const DAY_MS: u64 = 86_400_000;
/// Outbox records read at a time at the end of a run.
const PAGE_RECORDS: usize = 4_096;

/// Peaks over the run.
#[derive(Default)]
pub struct OutboxWatch {
    summary: OutboxSummary,
    /// Peaks within the current day.
    day: (u64, u64, u64),
}

impl OutboxWatch {
    /// Samples a running node at simulated time `t_ms` (cheap: its published status and the
    /// size of its last snapshot).
    pub fn sample(&mut self, t_ms: u64, node: &Node) {
        let sm = node.state_machine();
        let records = sm.status().borrow().outbox_len;
        let snapshot = sm.snapshot_bytes();
        let s = &mut self.summary;
        s.records_max = s.records_max.max(records);
        s.snapshot_bytes_max = s.snapshot_bytes_max.max(snapshot);
        let day = t_ms / DAY_MS;
        if day != self.day.0 {
            self.close_day();
            self.day = (day, 0, 0);
        }
        self.day.1 = self.day.1.max(records);
        self.day.2 = self.day.2.max(snapshot);
    }

    fn close_day(&mut self) {
        if self.day.1 > 0 {
            self.summary
                .daily
                .push([self.day.0, self.day.1, self.day.2]);
        }
    }

    /// Reads the reference node's outbox; answers the summary and, when its charges or held
    /// energy (or, with `committed`, those of every record the run committed) differ from what
    /// the run committed (`ledger`), the violation.
    pub fn finish(
        mut self,
        t_ms: u64,
        node: Option<&Node>,
        committed: Option<&BTreeMap<u64, OutboxRecord>>,
        ledger: &LedgerSummary,
    ) -> (OutboxSummary, Option<Violation>) {
        self.close_day();
        let mut s = self.summary;
        let Some(node) = node else {
            return (s, None);
        };
        let sm = node.state_machine();
        let mut from = 0;
        loop {
            let page = match sm.outbox_from(from, PAGE_RECORDS) {
                Ok(p) => p,
                Err(e) => {
                    let v = Violation {
                        checker: "outbox_fold".into(),
                        t_ms,
                        message: format!("the reference node's outbox cannot be read: {e}"),
                    };
                    return (s, Some(v));
                }
            };
            let Some((last, _)) = page.last() else {
                break;
            };
            from = last + 1;
            for (_, rec) in &page {
                s.records_end += 1;
                s.bytes_end += codec::encode(rec).map_or(0, |b| b.len() as u64);
                if committed.is_none() {
                    account(&mut s, rec);
                }
            }
        }
        for rec in committed.into_iter().flat_map(BTreeMap::values) {
            account(&mut s, rec);
        }
        let charged = s.detail_charged_wh + s.folded_charged_wh;
        let v = (charged != ledger.billed_wh || s.held_wh != ledger.held_wh).then(|| Violation {
            checker: "outbox_fold".into(),
            t_ms,
            message: format!(
                "the outbox accounts for {charged} Wh charged ({} in ledger lines, {} in folded \
                 days) and {} Wh held; the run committed {} Wh charged and {} Wh held",
                s.detail_charged_wh,
                s.folded_charged_wh,
                s.held_wh,
                ledger.billed_wh,
                ledger.held_wh
            ),
        });
        (s, v)
    }
}

/// Adds what `rec` charged, held or folded to the summary's totals.
fn account(s: &mut OutboxSummary, rec: &OutboxRecord) {
    match sdk::codec::decode::<sdk::Output>(&rec.output) {
        Some(sdk::Output::Ledger(l)) => {
            // Either form of a charge or held read: with its meter registers or without.
            if let Some((energy_wh, _, _)) = l.kind.charge() {
                s.detail_charged_wh += energy_wh
            }
            if let Some((energy_wh, _)) = l.kind.held() {
                s.held_wh += energy_wh
            }
        }
        Some(sdk::Output::Folded(f)) => {
            s.folded_records += 1;
            s.folded_charged_wh += f.totals.charged_wh;
            s.held_wh += f.totals.held_wh;
        }
        _ => {}
    }
}
