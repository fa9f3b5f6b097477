//! This board's alarms on its own gauges and who hears of them: the rules (`rules.rs`:
//! raise and clear levels, minimum times) are evaluated on the field loop's gauges every
//! [`EVALUATE_INTERVAL`]; each raise or clear goes to the log, to the cockpit's alarms page
//! (`AlarmBoard`) and to every [`Notifier`] (an SMS modem, `sms.rs`).
//!
//! The changes and the set of rules raised are also committed through the log
//! (`report.rs`), so every node shows every board's alarms; while a board is cut off from the
//! others, its own page shows what it sees and the report waits.

pub mod host;
pub mod report;
pub mod rules;
pub mod sms;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use self::rules::{AlarmChange, AlarmRules, Gauges, HostGauges, RuleLevels};
use crate::clock::Clock;
use crate::field::FieldStats;

/// How often the rules look at the gauges: the field loop's batch period, about a second.
pub const EVALUATE_INTERVAL: Duration = Duration::from_secs(1);
/// Changes the alarms page keeps, newest last (a few KiB).
pub const CHANGES_KEPT: usize = 200;
/// Changes waiting for the SMS modem at most; past it the oldest are dropped and counted as
/// held (a modem that stopped answering must not grow the node's memory).
pub const SMS_QUEUE_MAX: usize = 64;

/// Told of every alarm change. Implementations return at once (queue the work).
pub trait Notifier: Send + Sync {
    /// A rule raised or cleared.
    fn notify(&self, change: &AlarmChange);
}

/// The board's alarms as the cockpit shows them.
#[derive(Debug, Default, Clone)]
pub struct AlarmBoard {
    inner: Arc<Mutex<BoardInner>>,
}

#[derive(Debug, Default)]
struct BoardInner {
    active: Vec<(&'static str, u64)>,
    changes: VecDeque<AlarmChange>,
}

impl AlarmBoard {
    fn record(&self, active: Vec<(&'static str, u64)>, changes: &[AlarmChange]) {
        let mut b = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        b.active = active;
        for c in changes {
            if b.changes.len() == CHANGES_KEPT {
                b.changes.pop_front();
            }
            b.changes.push_back(c.clone());
        }
    }

    /// The rules raised now: (name, since Unix ms).
    pub fn active(&self) -> Vec<(&'static str, u64)> {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .active
            .clone()
    }

    /// The newest changes, newest first.
    pub fn changes(&self) -> Vec<AlarmChange> {
        let b = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        b.changes.iter().rev().cloned().collect()
    }
}

/// Evaluates `rules` on `stats` and `host`'s gauges every [`EVALUATE_INTERVAL`] until the
/// task is dropped.
pub fn spawn(
    mut rules: AlarmRules,
    stats: Arc<FieldStats>,
    host: Option<host::NodeGauges>,
    clock: Arc<dyn Clock>,
    board: AlarmBoard,
    notifiers: Vec<Arc<dyn Notifier>>,
    committed: Option<report::ReportQueue>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(EVALUATE_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let gauges = Gauges {
                field: stats.snapshot(),
                host: host
                    .as_ref()
                    .map(host::NodeGauges::sample)
                    .unwrap_or_default(),
            };
            let changes = rules.evaluate(&gauges, clock.now_ms());
            for c in &changes {
                if c.raised {
                    tracing::warn!(rule = c.rule, value = c.value, "alarm: {}", c.text);
                } else {
                    tracing::info!(rule = c.rule, value = c.value, "alarm: {}", c.text);
                }
                for n in &notifiers {
                    n.notify(c);
                }
            }
            let active = rules.active();
            if let Some(q) = &committed {
                q.record(&active, &changes);
            }
            board.record(active, &changes);
        }
    })
}

/// Answers an operator's `BAL <customer>` SMS: the customer's balance as one line, or None
/// for no such customer. The consumer owns the trait; the runner implements it on the
/// replicated accounts (`admin::accounts`).
pub trait BalanceLookup: Send + Sync {
    /// The answer for `customer`.
    fn balance(&self, customer: u32) -> Option<String>;
}

/// How often the modem's inbox is read for `BAL` queries: an operator waits a minute at most.
pub const INBOX_POLL_INTERVAL: Duration = Duration::from_secs(30);

/// Sends each change by SMS to every configured number, within the budget, from a task of its
/// own (a message can take a minute to go); answers `BAL <customer>` from those numbers.
pub struct SmsNotifier {
    tx: tokio::sync::mpsc::Sender<AlarmChange>,
}

impl Notifier for SmsNotifier {
    fn notify(&self, change: &AlarmChange) {
        if self.tx.try_send(change.clone()).is_err() {
            tracing::warn!(
                rule = change.rule,
                "the SMS queue is full (is the modem answering?): this alarm change is not sent"
            );
        }
    }
}

impl SmsNotifier {
    /// Starts the sender on an open port (`sms::open`, or a test's pty).
    pub fn spawn<S>(
        cfg: sms::SmsConfig,
        mut port: S,
        node_id: u64,
        clock: Arc<dyn Clock>,
        balances: Option<Arc<dyn BalanceLookup>>,
    ) -> (SmsNotifier, tokio::task::JoinHandle<()>)
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<AlarmChange>(SMS_QUEUE_MAX);
        let task = tokio::spawn(async move {
            let mut budget = sms::SmsBudget::new(cfg.per_hour_max, cfg.per_day_max);
            let mut inbox = tokio::time::interval(INBOX_POLL_INTERVAL);
            inbox.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    change = rx.recv() => {
                        let Some(change) = change else { return };
                        let Some(held) = budget.take(clock.now_ms()) else {
                            continue;
                        };
                        let text = sms::message(node_id, &change, held);
                        for to in &cfg.to {
                            match sms::send(&mut port, &cfg.device, to, &text).await {
                                Ok(()) => tracing::info!(rule = change.rule, to = %to, "alarm SMS sent"),
                                Err(e) => tracing::error!("{e}"),
                            }
                        }
                    }
                    _ = inbox.tick(), if balances.is_some() => {
                        let Some(lookup) = &balances else { continue };
                        answer_queries(&cfg, &mut port, node_id, &mut budget, clock.as_ref(), lookup.as_ref()).await;
                    }
                }
            }
        });
        (SmsNotifier { tx }, task)
    }
}

/// Reads the modem's inbox and answers each `BAL <customer>` from an operator's number (the
/// numbers in `[sms] to`); anything else is deleted unanswered, so a stranger cannot spend the
/// SIM's credit or learn a balance.
async fn answer_queries<S>(
    cfg: &sms::SmsConfig,
    port: &mut S,
    node_id: u64,
    budget: &mut sms::SmsBudget,
    clock: &dyn Clock,
    lookup: &dyn BalanceLookup,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let unread = match sms::take_unread(port, &cfg.device).await {
        Ok(m) => m,
        Err(e) => {
            tracing::warn!("{e}; the inbox is read again later");
            return;
        }
    };
    for m in unread {
        let (true, Some(customer)) = (cfg.to.contains(&m.from), sms::balance_query(&m.text)) else {
            tracing::info!(from = %m.from, "an SMS that is not an operator's BAL query was deleted");
            continue;
        };
        if budget.take(clock.now_ms()).is_none() {
            continue;
        }
        let text = match lookup.balance(customer) {
            Some(line) => format!("ghatta node {node_id}: customer {customer}: {line}"),
            None => format!("ghatta node {node_id}: no customer {customer}"),
        };
        if let Err(e) = sms::send(port, &cfg.device, &m.from, &text).await {
            tracing::error!("{e}");
        }
    }
}
