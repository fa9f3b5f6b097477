//! What the controller reports as a simulated run goes: `Observation`s, and the
//! running trace hash over them.

use serde::{Deserialize, Serialize};

use crate::net::NodeId;

/// A 32-byte digest (the controller's blake3 of an entry or of a state).
pub type Digest = [u8; 32];

/// A Raft role, as the node reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Following a leader (or waiting for one).
    Follower,
    /// Campaigning (pre-vote or vote).
    Candidate,
    /// Leading `term`.
    Leader,
    /// Non-voting member.
    Learner,
    /// Stopped (crashed or shut down).
    Shutdown,
}

/// One thing that happened in a run. `t_ms` is simulated time since the epoch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Observation {
    /// A node's Raft role or term changed.
    RoleChange {
        /// When.
        t_ms: u64,
        /// Which node.
        node: NodeId,
        /// Its current term.
        term: u64,
        /// Its new role.
        role: Role,
    },
    /// A node applied the committed entry at `index` to its state machine.
    EntryApplied {
        /// When.
        t_ms: u64,
        /// Which node.
        node: NodeId,
        /// Log index.
        index: u64,
        /// Digest of the entry (term and payload).
        entry_digest: Digest,
        /// Digest of the whole replicated state after applying it.
        state_hash: Digest,
    },
    /// A node installed a snapshot covering every entry up to `index`.
    SnapshotInstalled {
        /// When.
        t_ms: u64,
        /// Which node.
        node: NodeId,
        /// Last index the snapshot covers.
        index: u64,
        /// State hash at that index.
        state_hash: Digest,
    },
    /// The origin node was told its proposal `(origin, seq)` is committed at `index`.
    ProposalAcked {
        /// When.
        t_ms: u64,
        /// Proposing node.
        origin: NodeId,
        /// The origin's sequence number.
        seq: u64,
        /// Index the ack names.
        index: u64,
    },
    /// A node's state machine applied proposal `(origin, seq)` (not a deduplicated retry).
    ProposalApplied {
        /// When.
        t_ms: u64,
        /// Which node applied it.
        node: NodeId,
        /// Proposing node.
        origin: NodeId,
        /// The origin's sequence number.
        seq: u64,
        /// Log index of the entry that carried it.
        index: u64,
    },
    /// A node's state machine applied an entry carrying proposal `(origin, seq)` that it had
    /// applied before: a second copy reached the committed log (`node::inflight` says why
    /// that must not happen).
    RetryApplied {
        /// When.
        t_ms: u64,
        /// Which node applied it.
        node: NodeId,
        /// Proposing node.
        origin: NodeId,
        /// The origin's sequence number.
        seq: u64,
        /// Log index of the copy.
        index: u64,
    },
    /// A meter read was committed (reported from one reference replica).
    MeterReadCommitted {
        /// When.
        t_ms: u64,
        /// Customer.
        customer: u64,
        /// The meter's cumulative register.
        total_wh: u64,
    },
    /// The billing actor charged a customer (reference replica).
    LedgerCharge {
        /// When.
        t_ms: u64,
        /// Customer.
        customer: u64,
        /// Energy this charge covers.
        energy_wh: u64,
        /// Amount charged, in milli-paisa.
        amount_mpaisa: i64,
        /// Balance after the charge.
        balance_after_mpaisa: i64,
        /// Charged in friendly hours (no disconnection; debt allowed).
        friendly: bool,
    },
    /// An entry's log time, from the reference replica (the first to apply it, normally the
    /// leader that stamped it, seconds later).
    EntryTime {
        /// When it was applied.
        t_ms: u64,
        /// Log index.
        index: u64,
        /// Log time after it, Unix ms.
        log_time_ms: u64,
        /// For a tick that fired an actor timer: the log time the timer was due, Unix ms.
        tick_due_ms: Option<u64>,
    },
    /// The billing actor held energy a read reported beyond what the connection could draw:
    /// metered, not charged, for an operator's review (reference replica).
    EnergyHeld {
        /// When.
        t_ms: u64,
        /// Customer.
        customer: u64,
        /// Energy held.
        energy_wh: u64,
    },
    /// A top-up was credited (reference replica).
    Credit {
        /// When.
        t_ms: u64,
        /// Customer.
        customer: u64,
        /// Amount credited, in milli-paisa.
        amount_mpaisa: i64,
        /// Balance after the credit.
        balance_after_mpaisa: i64,
    },
    /// The true frequency of a plant's island (from the plant model, not a sensor).
    Frequency {
        /// When.
        t_ms: u64,
        /// Plant index.
        plant: u32,
        /// Frequency.
        mhz: u32,
    },
    /// A fault began (partition, isolation, slow disk, flapping...).
    FaultStart {
        /// When.
        t_ms: u64,
        /// Fault id, matched by its `FaultEnd`.
        id: u64,
        /// Human-readable description.
        what: String,
    },
    /// A fault healed.
    FaultEnd {
        /// When.
        t_ms: u64,
        /// The id from `FaultStart`.
        id: u64,
    },
    /// A node crashed or lost power.
    NodeCrash {
        /// When.
        t_ms: u64,
        /// Which node.
        node: NodeId,
    },
    /// A node came back.
    NodeRestart {
        /// When.
        t_ms: u64,
        /// Which node.
        node: NodeId,
    },
    /// An agent's entry of an OpenPAYGO token committed (the world's token agents: the code
    /// was typed at some node and that node's proposal carrying it was acknowledged).
    TokenEntered {
        /// When.
        t_ms: u64,
        /// Customer.
        customer: u64,
        /// The token's count.
        count: u64,
    },
    /// A token credited an account (a `TokenCredit` ledger line, reference replica).
    TokenCredited {
        /// When.
        t_ms: u64,
        /// Customer.
        customer: u64,
        /// The token's count.
        count: u64,
    },
    /// A node's board was replaced (`replace_node`): blank disks under the same id, so its
    /// term, log and applied state start again from nothing (legitimately, unlike a vote lost
    /// on a power cut). Comes before the new board's `NodeRestart`.
    NodeReplaced {
        /// When.
        t_ms: u64,
        /// Which node.
        node: NodeId,
    },
    /// A node that reports itself leader, whether the world's network lets it reach a quorum
    /// of its voters (both ways, up), and how long its log is. Reported when `cut` changes and,
    /// while cut, whenever its log grows (the `isolated_leader` checker).
    LeaderReach {
        /// When.
        t_ms: u64,
        /// Which node.
        node: NodeId,
        /// Its term.
        term: u64,
        /// Cut off from a quorum (partitions and down nodes; loss and flapping do not count).
        cut: bool,
        /// Its last log index.
        last_log_index: u64,
    },
}

impl Observation {
    /// When it happened.
    pub fn t_ms(&self) -> u64 {
        match self {
            Observation::RoleChange { t_ms, .. }
            | Observation::EntryApplied { t_ms, .. }
            | Observation::SnapshotInstalled { t_ms, .. }
            | Observation::ProposalAcked { t_ms, .. }
            | Observation::ProposalApplied { t_ms, .. }
            | Observation::RetryApplied { t_ms, .. }
            | Observation::MeterReadCommitted { t_ms, .. }
            | Observation::LedgerCharge { t_ms, .. }
            | Observation::EnergyHeld { t_ms, .. }
            | Observation::Credit { t_ms, .. }
            | Observation::EntryTime { t_ms, .. }
            | Observation::Frequency { t_ms, .. }
            | Observation::FaultStart { t_ms, .. }
            | Observation::FaultEnd { t_ms, .. }
            | Observation::NodeCrash { t_ms, .. }
            | Observation::NodeRestart { t_ms, .. }
            | Observation::TokenEntered { t_ms, .. }
            | Observation::TokenCredited { t_ms, .. }
            | Observation::NodeReplaced { t_ms, .. }
            | Observation::LeaderReach { t_ms, .. } => *t_ms,
        }
    }

    /// Folds this observation into a trace hash with a fixed binary encoding
    /// (cheaper than JSON for millions of events, and independent of serde's
    /// formatting).
    pub fn hash_into(&self, h: &mut blake3::Hasher) {
        let mut u = |x: u64| {
            h.update(&x.to_le_bytes());
        };
        match self {
            Observation::RoleChange {
                t_ms,
                node,
                term,
                role,
            } => {
                u(1);
                u(*t_ms);
                u(*node);
                u(*term);
                u(*role as u64);
            }
            Observation::EntryApplied {
                t_ms,
                node,
                index,
                entry_digest,
                state_hash,
            } => {
                u(2);
                u(*t_ms);
                u(*node);
                u(*index);
                h.update(entry_digest);
                h.update(state_hash);
            }
            Observation::SnapshotInstalled {
                t_ms,
                node,
                index,
                state_hash,
            } => {
                u(3);
                u(*t_ms);
                u(*node);
                u(*index);
                h.update(state_hash);
            }
            Observation::ProposalAcked {
                t_ms,
                origin,
                seq,
                index,
            } => {
                for x in [4, *t_ms, *origin, *seq, *index] {
                    u(x);
                }
            }
            Observation::ProposalApplied {
                t_ms,
                node,
                origin,
                seq,
                index,
            } => {
                for x in [5, *t_ms, *node, *origin, *seq, *index] {
                    u(x);
                }
            }
            Observation::RetryApplied {
                t_ms,
                node,
                origin,
                seq,
                index,
            } => {
                for x in [14, *t_ms, *node, *origin, *seq, *index] {
                    u(x);
                }
            }
            Observation::MeterReadCommitted {
                t_ms,
                customer,
                total_wh,
            } => {
                for x in [6, *t_ms, *customer, *total_wh] {
                    u(x);
                }
            }
            Observation::LedgerCharge {
                t_ms,
                customer,
                energy_wh,
                amount_mpaisa,
                balance_after_mpaisa,
                friendly,
            } => {
                for x in [
                    7,
                    *t_ms,
                    *customer,
                    *energy_wh,
                    *amount_mpaisa as u64,
                    *balance_after_mpaisa as u64,
                    u64::from(*friendly),
                ] {
                    u(x);
                }
            }
            Observation::Credit {
                t_ms,
                customer,
                amount_mpaisa,
                balance_after_mpaisa,
            } => {
                for x in [
                    8,
                    *t_ms,
                    *customer,
                    *amount_mpaisa as u64,
                    *balance_after_mpaisa as u64,
                ] {
                    u(x);
                }
            }
            Observation::EnergyHeld {
                t_ms,
                customer,
                energy_wh,
            } => {
                for x in [15, *t_ms, *customer, *energy_wh] {
                    u(x);
                }
            }
            Observation::Frequency { t_ms, plant, mhz } => {
                for x in [9, *t_ms, u64::from(*plant), u64::from(*mhz)] {
                    u(x);
                }
            }
            Observation::FaultStart { t_ms, id, what } => {
                for x in [10, *t_ms, *id, what.len() as u64] {
                    u(x);
                }
                h.update(what.as_bytes());
            }
            Observation::FaultEnd { t_ms, id } => {
                for x in [11, *t_ms, *id] {
                    u(x);
                }
            }
            Observation::NodeCrash { t_ms, node } => {
                for x in [12, *t_ms, *node] {
                    u(x);
                }
            }
            Observation::NodeRestart { t_ms, node } => {
                for x in [13, *t_ms, *node] {
                    u(x);
                }
            }
            Observation::NodeReplaced { t_ms, node } => {
                for x in [16, *t_ms, *node] {
                    u(x);
                }
            }
            Observation::LeaderReach {
                t_ms,
                node,
                term,
                cut,
                last_log_index,
            } => {
                for x in [17, *t_ms, *node, *term, u64::from(*cut), *last_log_index] {
                    u(x);
                }
            }
            Observation::EntryTime {
                t_ms,
                index,
                log_time_ms,
                tick_due_ms,
            } => {
                let due = tick_due_ms.map_or(u64::MAX, |d| d);
                for x in [15, *t_ms, *index, *log_time_ms, due] {
                    u(x);
                }
            }
            Observation::TokenEntered {
                t_ms,
                customer,
                count,
            } => {
                for x in [40, *t_ms, *customer, *count] {
                    u(x);
                }
            }
            Observation::TokenCredited {
                t_ms,
                customer,
                count,
            } => {
                for x in [41, *t_ms, *customer, *count] {
                    u(x);
                }
            }
        }
    }
}

/// A running hash over observations (and, at the end, the network's trace):
/// the same seed and scenario must give the same value.
#[derive(Clone, Debug, Default)]
pub struct TraceHash {
    hasher: blake3::Hasher,
    events: u64,
}

impl TraceHash {
    /// An empty trace.
    pub fn new() -> Self {
        Self::default()
    }

    /// Folds one observation in.
    pub fn observe(&mut self, obs: &Observation) {
        obs.hash_into(&mut self.hasher);
        self.events += 1;
    }

    /// Folds raw bytes in (e.g. the network's trace digest).
    pub fn update(&mut self, bytes: &[u8]) {
        self.hasher.update(bytes);
    }

    /// Observations folded so far.
    pub fn events(&self) -> u64 {
        self.events
    }

    /// The current hash as lowercase hex.
    pub fn hex(&self) -> String {
        self.hasher.clone().finalize().to_hex().to_string()
    }
}
