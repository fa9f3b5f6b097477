//! Deploying an actor module from this node: the first signer list if the cluster has none,
//! the module's chunks (a few in flight), then the signed deploy entry whose apply decides.

use futures::StreamExt;

use super::{Node, ProposeError};
use crate::actors::deploy::{ActorOp, CHUNK_BYTES_MAX, MODULE_BYTES_MAX, Manifest};
use crate::raft::{Body, Receipt};

/// Chunk proposals in flight at once. Chunks may commit in any order (each names its
/// offset), so a few in flight hide the round trip: over an 800 ms radio link one at a time
/// would take two minutes for a 64 KiB module. Four chunks are under 2 KiB, well inside the
/// forward budget (`proposer::FORWARD_BYTES_IN_FLIGHT_MAX`) beside the field's batches.
pub const DEPLOY_CHUNKS_IN_FLIGHT: usize = 4;

/// Attempts at one chunk, each a whole `PROPOSE_DEADLINE` under the same `(origin, seq)` (so
/// it is staged once however many commit). On a 9,600 bit/s radio shared with the field's
/// batches a chunk can outlive one deadline; failing the deploy then made the operator's
/// re-run send every chunk again (BENCHMARKS.md, "Deploying an actor", the radio). Four keep
/// a dead cluster's answer within two minutes.
pub const CHUNK_ATTEMPTS_MAX: u32 = 4;

/// Why a deploy did not reach its deciding entry.
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    /// The module does not match what it was signed as, or is over the budget.
    #[error("{0}")]
    Module(String),
    /// A proposal did not commit.
    #[error("the deploy stopped: {0}")]
    Propose(#[from] ProposeError),
}

impl Node {
    /// Proposes `module` for `manifest` (signed by the operator) and answers the deploy
    /// entry's receipt: handled when it became active, a refusal with the reason otherwise.
    /// Re-running a deploy that stopped half-way is safe: chunks are staged again.
    pub async fn deploy_actor(
        &self,
        module: &[u8],
        manifest: Manifest,
    ) -> Result<Receipt, DeployError> {
        self.deploy_actor_at(module, manifest, None).await
    }

    /// [`Node::deploy_actor`], cutting over at the first entry whose log time reaches
    /// `at_ms` when given (checked at once; `rollback` cancels it until then).
    pub async fn deploy_actor_at(
        &self,
        module: &[u8],
        manifest: Manifest,
        at_ms: Option<u64>,
    ) -> Result<Receipt, DeployError> {
        if module.len() > MODULE_BYTES_MAX {
            return Err(DeployError::Module(format!(
                "the module is {} bytes, over the {MODULE_BYTES_MAX}-byte budget: build it with the actor-wasm profile and trim it",
                module.len()
            )));
        }
        if *blake3::hash(module).as_bytes() != manifest.hash
            || module.len() != manifest.len as usize
        {
            return Err(DeployError::Module(
                "the module is not the one the manifest names (hash or length): sign these bytes"
                    .into(),
            ));
        }
        self.seed_actor_signers().await?;
        let hash = manifest.hash;
        let ops: Vec<ActorOp> = module
            .chunks(CHUNK_BYTES_MAX)
            .enumerate()
            .map(|(i, c)| ActorOp::Chunk {
                hash,
                offset: (i * CHUNK_BYTES_MAX) as u32,
                bytes: c.to_vec(),
            })
            .collect();
        let node = self.clone();
        let mut chunks = futures::stream::iter(ops)
            .map(move |op| {
                let node = node.clone();
                async move { node.propose_chunk(op).await }
            })
            .buffer_unordered(DEPLOY_CHUNKS_IN_FLIGHT);
        while let Some(r) = chunks.next().await {
            r?;
        }
        let op = match at_ms {
            None => ActorOp::Deploy(manifest),
            Some(at_ms) => ActorOp::DeployAt { manifest, at_ms },
        };
        Ok(self.propose_body(Body::Actor(op)).await?)
    }

    /// Proposes going back to the version before `name`'s active one.
    pub async fn rollback_actor(&self, name: &str) -> Result<Receipt, ProposeError> {
        self.propose_body(Body::Actor(ActorOp::Rollback {
            name: name.to_string(),
        }))
        .await
    }

    /// Proposes this node's `actor_signers` as the cluster's first signer list, when the
    /// cluster has none and this node lists some. Applied only while the list is empty, so
    /// two nodes seeding at once agree on the first committed.
    pub async fn seed_actor_signers(&self) -> Result<(), ProposeError> {
        if self.inner.actor_signers.is_empty() || !self.inner.sm.actor_modules().signers.is_empty()
        {
            return Ok(());
        }
        self.propose_body(Body::Actor(ActorOp::SeedSigners(
            self.inner.actor_signers.clone(),
        )))
        .await
        .map(drop)
    }

    /// This node's `actor_signers` (node.toml), to compare with the replicated list.
    pub fn local_actor_signers(&self) -> &[crate::actors::deploy::SignerKey] {
        &self.inner.actor_signers
    }

    /// Proposes one chunk under one sequence number, again while its deadline passes with no
    /// leader's answer (retrying the same `(origin, seq)` is safe), [`CHUNK_ATTEMPTS_MAX`]
    /// times at most.
    async fn propose_chunk(&self, op: ActorOp) -> Result<Receipt, ProposeError> {
        let seq = self.next_seq()?;
        let mut attempt = 1;
        loop {
            match self.propose_with_seq(seq, Body::Actor(op.clone())).await {
                Err(ProposeError::Deadline { .. }) if attempt < CHUNK_ATTEMPTS_MAX => {
                    attempt += 1;
                }
                r => return r,
            }
        }
    }

    async fn propose_body(&self, body: Body) -> Result<Receipt, ProposeError> {
        self.inner.proposer.propose(self, body).await
    }
}
