//! Test support for the field loop: a scripted cluster behind the `Consensus` trait (islands,
//! lost acknowledgements, a tiny per-kWh biller writing ledger records and relay commands to
//! an outbox) and a small simulated board.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use ghatta::actors::ActorKind;
use ghatta::clock::{Clock, TokioClock};
use ghatta::field::{Committed, Consensus};
use ghatta::node::ProposeError;
use ghatta::state::OutboxRecord;
use ghatta_actor_sdk as sdk;
use ghatta_hal::{RelayLine, SimBoard, SimBoardState};

/// The node id the tests run as.
pub const ME: u64 = 1;
/// A fixed wall-clock epoch: 2025-01-01 06:00 UTC, i.e. 11:45 in Nepal, outside billing's
/// friendly hours (18:00-06:00 local), so island credit enforcement is not suspended.
pub const EPOCH_MS: u64 = 1_735_711_200_000;

/// One account of the tiny biller.
#[derive(Debug, Clone)]
pub struct Acct {
    pub balance_mpaisa: i64,
    pub last_wh: Option<u64>,
    /// mpaisa per Wh (a per-kWh rate in paisa).
    pub rate: i64,
    pub connected: bool,
}

/// What the scripted cluster has seen and will do.
#[derive(Debug, Default)]
pub struct FakeState {
    /// No leader: every proposal fails after `island_delay_ms`.
    pub island: bool,
    /// How long a proposal takes to fail in an island (the node's proposer waits up to 30 s).
    pub island_delay_ms: u64,
    /// Commit latency.
    pub commit_delay_ms: u64,
    /// The next this many commits apply but report an error (the acknowledgement was lost).
    pub lose_acks: u32,
    pub next_seq: u64,
    pub applied_seqs: BTreeSet<u64>,
    pub index: u64,
    pub outbox: Vec<OutboxRecord>,
    /// Meter reads applied, in order: (customer, register).
    pub reads: Vec<(u32, u64)>,
    /// Reads the biller refused because the register went backwards.
    pub rejected_reads: u32,
    /// Telemetry applied: (log index, frequency).
    pub telemetry: Vec<(u64, u32)>,
    /// Every attempt: (seq, inputs, outcome).
    pub attempts: Vec<(u64, usize, &'static str)>,
    pub in_flight: BTreeMap<u64, u32>,
    pub max_in_flight: u32,
    pub max_same_seq_in_flight: u32,
    /// Largest proposal seen, bytes of encoded inputs.
    pub max_proposal_bytes: usize,
    pub accounts: BTreeMap<u32, Acct>,
    /// Billing's committed configuration; `None`: billing's defaults.
    pub billing: Option<sdk::BillingConfig>,
}

/// A scripted cluster.
#[derive(Clone)]
pub struct FakeCluster {
    pub s: Arc<Mutex<FakeState>>,
    clock: TokioClock,
}

impl Default for FakeCluster {
    fn default() -> Self {
        Self::new()
    }
}

impl FakeCluster {
    pub fn new() -> FakeCluster {
        FakeCluster {
            s: Arc::new(Mutex::new(FakeState {
                next_seq: 1,
                island_delay_ms: 2_000,
                commit_delay_ms: 50,
                ..FakeState::default()
            })),
            clock: TokioClock::new(EPOCH_MS, 0),
        }
    }

    pub fn st(&self) -> MutexGuard<'_, FakeState> {
        self.s.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Commit an actor output directly (as if some other input produced it).
    pub fn push_output(&self, out: sdk::Output) {
        let mut s = self.st();
        s.index += 1;
        let index = s.index;
        let time_ms = self.clock.now_ms();
        s.outbox.push(OutboxRecord {
            index,
            time_ms,
            actor: ActorKind::Billing,
            output: sdk::codec::encode(&out),
        });
    }

    pub fn relay(&self, relay: sdk::RelayId, closed: bool, reason: sdk::RelayReason) {
        self.push_output(sdk::Output::Relay(sdk::RelayCommand {
            node: sdk::NodeId(ME),
            relay,
            closed,
            reason,
        }));
    }

    fn ledger(s: &mut FakeState, time_ms: u64, c: u32, kind: sdk::LedgerKind, balance: i64) {
        let rec = sdk::Output::Ledger(sdk::LedgerRecord {
            customer: sdk::CustomerId(c),
            at_ms: time_ms,
            kind,
            balance_after_mpaisa: balance,
            tariff_version: 1,
        });
        let index = s.index;
        s.outbox.push(OutboxRecord {
            index,
            time_ms,
            actor: ActorKind::Billing,
            output: sdk::codec::encode(&rec),
        });
    }

    /// A committed top-up (with a reconnect if the account was cut).
    pub fn top_up(&self, c: u32, amount_mpaisa: i64) {
        let mut s = self.st();
        s.index += 1;
        let t = self.clock.now_ms();
        let Some(a) = s.accounts.get_mut(&c) else {
            return;
        };
        a.balance_mpaisa += amount_mpaisa;
        let (balance, reconnect) = (a.balance_mpaisa, !a.connected && a.balance_mpaisa > 0);
        if reconnect {
            a.connected = true;
        }
        Self::ledger(
            &mut s,
            t,
            c,
            sdk::LedgerKind::TopUp {
                token_id: 1,
                amount_mpaisa,
            },
            balance,
        );
        if reconnect {
            drop(s);
            self.relay(
                sdk::RelayId::Customer(sdk::CustomerId(c)),
                true,
                sdk::RelayReason::CreditRestored,
            );
        }
    }

    fn apply(&self, s: &mut FakeState, inputs: &[Vec<u8>]) {
        let t = self.clock.now_ms();
        let index = s.index;
        for raw in inputs {
            match sdk::codec::decode::<sdk::Input>(raw) {
                Some(sdk::Input::Telemetry(tel)) => s.telemetry.push((index, tel.frequency_mhz)),
                Some(sdk::Input::MeterRead(r)) => {
                    let c = r.customer.0;
                    s.reads.push((c, r.total_wh));
                    let Some(mut a) = s.accounts.get(&c).cloned() else {
                        continue;
                    };
                    match a.last_wh {
                        None => a.last_wh = Some(r.total_wh),
                        Some(last) if r.total_wh < last => {
                            s.rejected_reads += 1;
                            continue;
                        }
                        Some(last) => {
                            let delta = r.total_wh - last;
                            a.last_wh = Some(r.total_wh);
                            if delta > 0 {
                                let amount = delta as i64 * a.rate;
                                a.balance_mpaisa -= amount;
                                Self::ledger(
                                    s,
                                    t,
                                    c,
                                    sdk::LedgerKind::Charge {
                                        energy_wh: delta,
                                        amount_mpaisa: amount,
                                        friendly: false,
                                    },
                                    a.balance_mpaisa,
                                );
                                if a.balance_mpaisa <= 0 && a.connected {
                                    a.connected = false;
                                    let relay = sdk::Output::Relay(sdk::RelayCommand {
                                        node: sdk::NodeId(ME),
                                        relay: sdk::RelayId::Customer(sdk::CustomerId(c)),
                                        closed: false,
                                        reason: sdk::RelayReason::ZeroCredit,
                                    });
                                    s.outbox.push(OutboxRecord {
                                        index,
                                        time_ms: t,
                                        actor: ActorKind::Billing,
                                        output: sdk::codec::encode(&relay),
                                    });
                                    Self::ledger(
                                        s,
                                        t,
                                        c,
                                        sdk::LedgerKind::Disconnect {
                                            reason: sdk::RelayReason::ZeroCredit,
                                        },
                                        a.balance_mpaisa,
                                    );
                                }
                            }
                        }
                    }
                    s.accounts.insert(c, a);
                }
                _ => {}
            }
        }
    }
}

impl Consensus for FakeCluster {
    fn node_id(&self) -> u64 {
        ME
    }

    fn billing_config(&self) -> sdk::BillingConfig {
        self.st()
            .billing
            .clone()
            .unwrap_or_else(ghatta_billing::clock::default_config)
    }

    fn wall_ms(&self) -> u64 {
        self.clock.now_ms()
    }

    fn next_seq(&self) -> Result<u64, ProposeError> {
        let mut s = self.st();
        s.next_seq += 1;
        Ok(s.next_seq - 1)
    }

    fn propose(
        &self,
        seq: u64,
        inputs: Vec<Vec<u8>>,
    ) -> impl std::future::Future<Output = Result<Committed, ProposeError>> + Send {
        let me = self.clone();
        async move {
            let (island, delay) = {
                let mut s = me.st();
                let n = {
                    let e = s.in_flight.entry(seq).or_default();
                    *e += 1;
                    *e
                };
                let bytes: usize = inputs.iter().map(Vec::len).sum();
                s.max_proposal_bytes = s.max_proposal_bytes.max(bytes);
                let total: u32 = s.in_flight.values().sum();
                s.max_in_flight = s.max_in_flight.max(total);
                s.max_same_seq_in_flight = s.max_same_seq_in_flight.max(n);
                let island = s.island;
                (
                    island,
                    if island {
                        s.island_delay_ms
                    } else {
                        s.commit_delay_ms
                    },
                )
            };
            tokio::time::sleep(Duration::from_millis(delay)).await;
            let mut s = me.st();
            if let Some(e) = s.in_flight.get_mut(&seq) {
                *e -= 1;
                if *e == 0 {
                    s.in_flight.remove(&seq);
                }
            }
            // The island may have healed while this attempt waited; what counts is the state
            // when it started (a proposal that found no leader fails).
            if island {
                s.attempts.push((seq, inputs.len(), "no leader"));
                return Err(scripted(seq, "no leader (scripted island)"));
            }
            s.index += 1;
            let index = s.index;
            let duplicate = !s.applied_seqs.insert(seq);
            if !duplicate {
                me.apply(&mut s, &inputs);
            }
            if s.lose_acks > 0 {
                s.lose_acks -= 1;
                s.attempts.push((seq, inputs.len(), "ack lost"));
                return Err(scripted(seq, "acknowledgement lost (scripted)"));
            }
            s.attempts.push((
                seq,
                inputs.len(),
                if duplicate { "duplicate" } else { "ok" },
            ));
            Ok(Committed { index, duplicate })
        }
    }

    fn applied_index(&self) -> u64 {
        self.st().index
    }

    fn outbox_from(&self, from: u64, limit: usize) -> std::io::Result<Vec<(u64, OutboxRecord)>> {
        let s = self.st();
        Ok(s.outbox
            .iter()
            .enumerate()
            .skip(from as usize)
            .take(limit)
            .map(|(i, r)| (i as u64, r.clone()))
            .collect())
    }
}

/// A proposal that failed the way a real one does at its deadline, for a scripted reason.
fn scripted(seq: u64, why: &str) -> ProposeError {
    ProposeError::Deadline {
        seq,
        deadline: Duration::ZERO,
        last: why.into(),
    }
}

/// The field loop's test bench board (`SimBoardState::bench`).
pub fn board() -> SimBoard {
    SimBoard::new(SimBoardState::bench())
}

/// Whether a relay is closed on the board.
pub fn closed(b: &SimBoard, line: RelayLine) -> bool {
    b.lock().is_closed(line)
}

/// Let simulated time pass (the tests run on a paused clock).
pub async fn wait_ms(ms: u64) {
    tokio::time::sleep(Duration::from_millis(ms)).await;
}
