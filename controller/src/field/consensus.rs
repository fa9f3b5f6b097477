//! What the field loop needs from the rest of the node, as a trait: propose a batch under a
//! sequence number, read the committed outbox, tell the time. [`Node`] implements it; tests
//! and the simulator can put a scripted cluster behind it (islands on demand, lost
//! acknowledgements, duplicates) without a Raft group.

use std::future::Future;

use ghatta_actor_sdk as sdk;
use ghatta_billing::store;

use crate::actors::ActorKind;
use crate::node::{Node, ProposeError};
use crate::raft::Body;
use crate::state::OutboxRecord;

/// A proposal that committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Committed {
    /// Log index of the entry that answered (for a duplicate: the duplicate's own index,
    /// which is at or after the original's).
    pub index: u64,
    /// `(node, seq)` had been applied before: this copy did nothing.
    pub duplicate: bool,
}

/// The field loop's view of the node.
pub trait Consensus: Clone + Send + Sync + 'static {
    /// This node's id.
    fn node_id(&self) -> u64;

    /// Wall-clock time, Unix ms (the node's clock: simulated in the simulator).
    fn wall_ms(&self) -> u64;

    /// Reserve a fresh sequence number, never used before and never reused after a restart.
    fn next_seq(&self) -> Result<u64, ProposeError>;

    /// Propose inputs (each a bincode `ghatta_actor_sdk::Input`) under `(node, seq)`; resolves
    /// when applied, or with an error after the proposer's deadline. Safe to call again with
    /// the same `seq`: at most one copy is applied.
    fn propose(
        &self,
        seq: u64,
        inputs: Vec<Vec<u8>>,
    ) -> impl Future<Output = Result<Committed, ProposeError>> + Send;

    /// The local state machine's applied index: every outbox record of an entry at or before
    /// it is readable.
    fn applied_index(&self) -> u64;

    /// Outbox records with sequence >= `from`, at most `limit`.
    fn outbox_from(&self, from: u64, limit: usize) -> std::io::Result<Vec<(u64, OutboxRecord)>>;

    /// Billing's configuration in force in the local state machine (friendly hours, the
    /// grid's UTC offset, the disconnection floor): the island credit rule follows it, so it
    /// has no copy of its own to fall out of step with.
    fn billing_config(&self) -> sdk::BillingConfig;
}

impl Consensus for Node {
    fn node_id(&self) -> u64 {
        self.id()
    }

    fn wall_ms(&self) -> u64 {
        self.clock().now_ms()
    }

    fn next_seq(&self) -> Result<u64, ProposeError> {
        Node::next_seq(self)
    }

    fn propose(
        &self,
        seq: u64,
        inputs: Vec<Vec<u8>>,
    ) -> impl Future<Output = Result<Committed, ProposeError>> + Send {
        let node = self.clone();
        async move {
            node.propose_with_seq(seq, Body::Inputs(inputs))
                .await
                .map(|r| Committed {
                    index: r.index,
                    duplicate: r.duplicate,
                })
        }
    }

    fn applied_index(&self) -> u64 {
        self.state_machine().status().borrow().applied_index
    }

    fn outbox_from(&self, from: u64, limit: usize) -> std::io::Result<Vec<(u64, OutboxRecord)>> {
        self.state_machine().outbox_from(from, limit)
    }

    fn billing_config(&self) -> sdk::BillingConfig {
        // Billing's own row, decoded with billing's own format; its defaults when none is
        // committed (or a deployed version wrote a row this build cannot read).
        self.state_machine()
            .actor_rows(ActorKind::Billing, store::KEY_CONFIG, None, 1)
            .into_iter()
            .find(|(k, _)| k == store::KEY_CONFIG)
            .and_then(|(_, v)| store::decode_config(&v))
            .unwrap_or_else(ghatta_billing::clock::default_config)
    }
}
