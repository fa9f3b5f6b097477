//! Translates what the nodes report through [`NodeObserver`] into the simulator's
//! [`Observation`]s, queued for the world loop to feed to the checkers.
//!
//! Every node reports its applied entries, snapshots and acknowledged proposals. Billing
//! observations (committed meter reads, charges, credits) come from one *reference* view of
//! the committed log: each index is decoded once, by whichever node applies it first. The
//! state-agreement checker holds every replica to the same state hash at each index, so the
//! first applier's outputs are every replica's; and a node that re-applies entries after a
//! power cut (its state machine writes are not fsynced) is not counted twice.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use ghatta_actor_sdk as sdk;
use ghatta_sim::observe::Observation;
use ghatta_sim::time::Epoch;

use crate::observe::{AppliedEntry, NodeObserver};
use crate::state::StateHash;

/// What the observers of every node share with the world loop.
#[derive(Debug)]
pub struct Shared {
    epoch: Epoch,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    queue: Vec<Observation>,
    /// Highest index decoded for billing observations.
    ledger_upto: u64,
    /// Last balance per account, from ledger records (the operator's view for top-ups).
    balances: BTreeMap<u32, i64>,
}

impl Shared {
    /// Shared state for a world whose time starts at `epoch`.
    pub fn new(epoch: Epoch) -> Arc<Self> {
        Arc::new(Shared {
            epoch,
            inner: Mutex::new(Inner::default()),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes every observation queued so far, in the order they happened.
    pub fn drain(&self) -> Vec<Observation> {
        std::mem::take(&mut self.lock().queue)
    }

    /// Queues an observation made by the world itself (a node's role, say).
    pub fn push(&self, obs: Observation) {
        self.lock().queue.push(obs);
    }

    /// Accounts whose last known balance is at or below `threshold_mpaisa`, in id order.
    pub fn accounts_at_or_below(&self, threshold_mpaisa: i64) -> Vec<u32> {
        self.lock()
            .balances
            .iter()
            .filter(|&(_, &b)| b <= threshold_mpaisa)
            .map(|(&c, _)| c)
            .collect()
    }

    /// Simulated ms now.
    pub fn now_ms(&self) -> u64 {
        self.epoch.elapsed_ms()
    }
}

/// The observer of one node incarnation. Once the world kills the incarnation it reports
/// nothing more: what a dead process's leftover tasks do is not the node's behaviour.
pub struct SimObserver {
    node: u64,
    alive: Arc<AtomicBool>,
    shared: Arc<Shared>,
}

impl SimObserver {
    /// An observer of node `node` while `alive` holds.
    pub fn new(node: u64, alive: Arc<AtomicBool>, shared: Arc<Shared>) -> Self {
        SimObserver {
            node,
            alive,
            shared,
        }
    }

    fn live(&self, node: u64) -> bool {
        node == self.node && self.alive.load(Ordering::Relaxed)
    }
}

impl NodeObserver for SimObserver {
    fn entry_applied(&self, node: u64, e: &AppliedEntry) {
        if !self.live(node) {
            return;
        }
        let t_ms = self.shared.now_ms();
        let mut s = self.shared.lock();
        s.queue.push(Observation::EntryApplied {
            t_ms,
            node,
            index: e.index,
            entry_digest: e.entry_digest,
            state_hash: e.state_hash,
        });
        if let Some(p) = e.proposal
            && !p.duplicate
            && p.seq != 0
        {
            s.queue.push(Observation::ProposalApplied {
                t_ms,
                node,
                origin: p.origin,
                seq: p.seq,
                index: e.index,
            });
        }
        if e.index > s.ledger_upto {
            s.ledger_upto = e.index;
            billing_observations(t_ms, e, &mut s);
        }
    }

    fn snapshot_installed(&self, node: u64, index: u64, state_hash: StateHash) {
        if !self.live(node) {
            return;
        }
        let t_ms = self.shared.now_ms();
        self.shared
            .lock()
            .queue
            .push(Observation::SnapshotInstalled {
                t_ms,
                node,
                index,
                state_hash,
            });
    }

    fn proposal_acked(&self, node: u64, seq: u64, index: u64) {
        if !self.live(node) {
            return;
        }
        let t_ms = self.shared.now_ms();
        self.shared.lock().queue.push(Observation::ProposalAcked {
            t_ms,
            origin: node,
            seq,
            index,
        });
    }
}

/// Decodes one entry's meter reads and ledger records. A read the billing actor refused
/// (unknown account, register going backwards) raised an alarm naming the account in the
/// same entry; it was never billed, so it is not a committed read for the checkers.
fn billing_observations(t_ms: u64, e: &AppliedEntry, s: &mut Inner) {
    let outputs: Vec<sdk::Output> = e
        .outputs
        .iter()
        .filter_map(|r| sdk::codec::decode::<sdk::Output>(&r.output))
        .collect();
    let refused: BTreeSet<u32> = outputs
        .iter()
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
            s.queue.push(Observation::MeterReadCommitted {
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
            sdk::LedgerKind::TopUp { amount_mpaisa, .. } => Observation::Credit {
                t_ms,
                customer,
                amount_mpaisa,
                balance_after_mpaisa,
            },
            sdk::LedgerKind::Disconnect { .. } | sdk::LedgerKind::Reconnect { .. } => {
                s.balances.insert(rec.customer.0, balance_after_mpaisa);
                continue;
            }
        };
        s.balances.insert(rec.customer.0, balance_after_mpaisa);
        s.queue.push(obs);
    }
}
