//! Translates what the nodes report through [`NodeObserver`] into the simulator's
//! [`Observation`]s, queued for the world loop to feed to the checkers.
//!
//! Every node reports its applied entries, snapshots and acknowledged proposals. Billing
//! observations (committed meter reads, charges, credits) come from one *reference* view of
//! the committed log: each index is decoded once, from whichever node applied it first. The
//! state-agreement checker holds every replica to the same state hash at each index, so the
//! first applier's outputs are every replica's; and a node that re-applies entries after a
//! power cut (its state machine writes are not fsynced) is not counted twice.
//!
//! Each node queues its own observations (nodes may run on different threads in a lockstep
//! run); the world merges the queues at every step in (time, node) order, and only then
//! picks each index's first applier, so the merged stream does not depend on which thread
//! got to a lock first. A node decodes billing for an index only while no earlier step has
//! accepted it.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use ghatta_actor_sdk as sdk;
use ghatta_sim::observe::Observation;
use ghatta_sim::time::Epoch;

use super::lock;
use ghatta::observe::{AppliedEntry, NodeObserver};
use ghatta::state::StateHash;

/// What the observers of every node share with the world loop.
#[derive(Debug, Default)]
pub struct Shared {
    /// Each node's queue (kept across its incarnations), by node id.
    queues: Mutex<BTreeMap<u64, Arc<NodeQueue>>>,
    /// Highest index whose billing observations were accepted (at a world step).
    ledger_upto: AtomicU64,
    /// Last balance per account, from ledger records (the operator's view for top-ups).
    balances: Mutex<BTreeMap<u32, i64>>,
}

/// One node's observations since the last world step, in the order it made them.
type NodeQueue = Mutex<Vec<Queued>>;

/// A queued observation, or one entry's billing as decoded by this node (accepted at the
/// merge only if no node applied the index earlier).
#[derive(Debug)]
enum Queued {
    Observation(Observation),
    Billing {
        t_ms: u64,
        index: u64,
        billing: Billing,
    },
}

/// One entry's billing observations and the balances they leave.
#[derive(Debug, Default)]
struct Billing {
    observations: Vec<Observation>,
    balances: Vec<(u32, i64)>,
}

impl Shared {
    /// Shared state for a new world.
    pub fn new() -> Arc<Self> {
        Arc::default()
    }

    /// Node `node`'s queue (made on first use).
    fn queue(&self, node: u64) -> Arc<NodeQueue> {
        lock(&self.queues).entry(node).or_default().clone()
    }

    /// Takes every observation the nodes queued since the last call, merged in (time,
    /// node) order (each node's own order kept), with each newly committed index's billing
    /// taken from its first applier.
    pub fn drain(&self) -> Vec<Observation> {
        let queues: Vec<(u64, Arc<NodeQueue>)> = lock(&self.queues)
            .iter()
            .map(|(&n, q)| (n, q.clone()))
            .collect();
        let mut all: Vec<(u64, u64, usize, Queued)> = Vec::new();
        for (node, q) in queues {
            let taken = std::mem::take(&mut *lock(&q));
            all.extend(
                taken
                    .into_iter()
                    .enumerate()
                    .map(|(i, e)| (e.t_ms(), node, i, e)),
            );
        }
        all.sort_unstable_by_key(|&(t, node, i, _)| (t, node, i));
        let mut upto = self.ledger_upto.load(Ordering::Relaxed);
        let mut balances = lock(&self.balances);
        let mut out = Vec::with_capacity(all.len());
        for (_, _, _, e) in all {
            match e {
                Queued::Observation(o) => out.push(o),
                Queued::Billing { index, billing, .. } => {
                    if index > upto {
                        upto = index;
                        out.extend(billing.observations);
                        balances.extend(billing.balances);
                    }
                }
            }
        }
        self.ledger_upto.store(upto, Ordering::Relaxed);
        out
    }

    /// Queues an observation of the world's own agents (queue 0: no node has that id), kept
    /// in (time, content) order so agents finishing in the same step in any order report
    /// the same trace.
    pub fn push_world(&self, o: Observation) {
        let q = self.queue(0);
        let mut q = lock(&q);
        let key = |o: &Observation| (o.t_ms(), format!("{o:?}"));
        let k = key(&o);
        let at = q.partition_point(|e| match e {
            Queued::Observation(x) => key(x) <= k,
            Queued::Billing { .. } => true,
        });
        q.insert(at, Queued::Observation(o));
    }

    /// Accounts whose last known balance is at or below `threshold_mpaisa`, in id order.
    pub fn accounts_at_or_below(&self, threshold_mpaisa: i64) -> Vec<u32> {
        lock(&self.balances)
            .iter()
            .filter(|&(_, &b)| b <= threshold_mpaisa)
            .map(|(&c, _)| c)
            .collect()
    }
}

impl Queued {
    fn t_ms(&self) -> u64 {
        match self {
            Queued::Observation(o) => o.t_ms(),
            Queued::Billing { t_ms, .. } => *t_ms,
        }
    }
}

/// The observer of one node incarnation. Once the world kills the incarnation it reports
/// nothing more: what a dead process's leftover tasks do is not the node's behaviour.
pub struct SimObserver {
    node: u64,
    alive: Arc<AtomicBool>,
    shared: Arc<Shared>,
    queue: Arc<NodeQueue>,
    /// The node's runtime epoch (its clock's simulated time zero).
    epoch: Epoch,
}

impl SimObserver {
    /// An observer of node `node` while `alive` holds, timing on its runtime's `epoch`.
    pub fn new(node: u64, alive: Arc<AtomicBool>, shared: Arc<Shared>, epoch: Epoch) -> Self {
        SimObserver {
            node,
            alive,
            queue: shared.queue(node),
            shared,
            epoch,
        }
    }

    fn live(&self, node: u64) -> bool {
        node == self.node && self.alive.load(Ordering::Relaxed)
    }

    fn push(&self, o: Observation) {
        lock(&self.queue).push(Queued::Observation(o));
    }
}

impl NodeObserver for SimObserver {
    fn entry_applied(&self, node: u64, e: &AppliedEntry) {
        if !self.live(node) {
            return;
        }
        let t_ms = self.epoch.elapsed_ms();
        let mut q = lock(&self.queue);
        q.push(Queued::Observation(Observation::EntryApplied {
            t_ms,
            node,
            index: e.index,
            entry_digest: e.entry_digest,
            state_hash: e.state_hash,
        }));
        if let Some(p) = e.proposal
            && p.seq != 0
        {
            let (origin, seq, index) = (p.origin, p.seq, e.index);
            q.push(Queued::Observation(if p.duplicate {
                Observation::RetryApplied {
                    t_ms,
                    node,
                    origin,
                    seq,
                    index,
                }
            } else {
                Observation::ProposalApplied {
                    t_ms,
                    node,
                    origin,
                    seq,
                    index,
                }
            }));
        }
        if e.index > self.shared.ledger_upto.load(Ordering::Relaxed) {
            q.push(Queued::Billing {
                t_ms,
                index: e.index,
                billing: billing_observations(t_ms, e),
            });
        }
    }

    fn snapshot_installed(&self, node: u64, index: u64, state_hash: StateHash) {
        if !self.live(node) {
            return;
        }
        self.push(Observation::SnapshotInstalled {
            t_ms: self.epoch.elapsed_ms(),
            node,
            index,
            state_hash,
        });
    }

    fn proposal_acked(&self, node: u64, seq: u64, index: u64) {
        // Sequence 0 is not deduplicated (the WAN uploader's `OutboxAck`, idempotent by
        // itself): no exactly-once to hold it to, and its applications are not reported
        // either (`entry_applied`).
        if !self.live(node) || seq == 0 {
            return;
        }
        self.push(Observation::ProposalAcked {
            t_ms: self.epoch.elapsed_ms(),
            origin: node,
            seq,
            index,
        });
    }
}

/// Decodes one entry's meter reads and ledger records. A read the billing actor refused
/// (unknown account, register going backwards) raised an alarm naming the account in the
/// same entry; it was never billed, so it is not a committed read for the checkers.
fn billing_observations(t_ms: u64, e: &AppliedEntry) -> Billing {
    let mut s = Billing::default();
    s.observations.push(Observation::EntryTime {
        t_ms,
        index: e.index,
        log_time_ms: e.log_time_ms,
        tick_due_ms: e.tick_due_ms,
    });
    let outputs: Vec<sdk::Output> = e
        .outputs
        .iter()
        .filter_map(|r| sdk::codec::decode::<sdk::Output>(&r.output))
        .collect();
    // From every alarm the entry's deliveries raised, stored or counted as a repeat: a
    // summary record closing an hour of repeats (`alarm_tally`) refuses nothing of this entry.
    let refused: BTreeSet<u32> = e
        .alarms_raised
        .iter()
        .filter_map(|r| sdk::codec::decode::<sdk::Output>(r))
        .filter_map(|o| match o {
            sdk::Output::Alarm(a)
                if matches!(
                    a.code,
                    sdk::AlarmCode::UnknownAccount | sdk::AlarmCode::MeterNotMonotonic
                ) =>
            {
                Some(a.subject)
            }
            _ => None,
        })
        .collect();
    for raw in &e.inputs {
        if let Some(sdk::Input::MeterRead(r)) = sdk::codec::decode::<sdk::Input>(raw)
            && !refused.contains(&r.customer.0)
        {
            s.observations.push(Observation::MeterReadCommitted {
                t_ms,
                customer: u64::from(r.customer.0),
                total_wh: r.total_wh,
            });
        }
    }
    for o in outputs {
        let sdk::Output::Ledger(rec) = o else {
            continue;
        };
        let customer = u64::from(rec.customer.0);
        let balance_after_mpaisa = rec.balance_after_mpaisa;
        let obs = match rec.kind {
            sdk::LedgerKind::Charge {
                energy_wh,
                amount_mpaisa,
                friendly,
            }
            | sdk::LedgerKind::ChargeRead {
                energy_wh,
                amount_mpaisa,
                friendly,
                ..
            } => Observation::LedgerCharge {
                t_ms,
                customer,
                energy_wh,
                amount_mpaisa,
                balance_after_mpaisa,
                friendly,
            },
            // A fee is a charge for no energy (the tariff oracle knows what it should be).
            sdk::LedgerKind::Fee { amount_mpaisa } => Observation::LedgerCharge {
                t_ms,
                customer,
                energy_wh: 0,
                amount_mpaisa,
                balance_after_mpaisa,
                friendly: false,
            },
            sdk::LedgerKind::TopUp { amount_mpaisa, .. }
            | sdk::LedgerKind::OperatorCredit { amount_mpaisa, .. }
            | sdk::LedgerKind::TokenCredit { amount_mpaisa, .. } => Observation::Credit {
                t_ms,
                customer,
                amount_mpaisa,
                balance_after_mpaisa,
            },
            sdk::LedgerKind::Held { energy_wh, .. }
            | sdk::LedgerKind::HeldRead { energy_wh, .. } => Observation::EnergyHeld {
                t_ms,
                customer,
                energy_wh,
            },
            sdk::LedgerKind::Disconnect { .. }
            | sdk::LedgerKind::Reconnect { .. }
            | sdk::LedgerKind::MeterReplaced { .. }
            | sdk::LedgerKind::Baseline { .. }
            | sdk::LedgerKind::ReadRejected { .. }
            | sdk::LedgerKind::Account(_) => {
                s.balances.push((rec.customer.0, balance_after_mpaisa));
                continue;
            }
        };
        s.balances.push((rec.customer.0, balance_after_mpaisa));
        s.observations.push(obs);
        if let sdk::LedgerKind::TokenCredit { count, .. } = rec.kind {
            s.observations.push(Observation::TokenCredited {
                t_ms,
                customer,
                count: u64::from(count),
            });
        }
    }
    s
}
