//! The admin API's actor routes: `POST /actor/deploy` (a module signed by the operator),
//! `POST /actor/rollback`, and `GET /actors` (the replicated registry, as `ghatta actor list`
//! shows it).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::{Deserialize, Serialize};

use super::{ApiResult, answer, bad};
use crate::actors::ActorKind;
use crate::actors::deploy::{self, MODULE_BYTES_MAX, Manifest, SIGNATURE_BYTES};
use crate::node::{DeployError, Node};
use serde_json::Value;

/// A signed module to deploy (`POST /actor/deploy`). The CLI signs on the operator's
/// machine; the signing key never reaches the board.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeployRequest {
    /// The actor (`balancing`, `billing`, ...).
    pub name: String,
    /// Its new version.
    pub version: u32,
    /// The module, base64.
    pub module_b64: String,
    /// The signer's public key (base64 or hex).
    pub signer: String,
    /// Ed25519 signature over `actors::deploy::signed_message`, hex.
    pub signature_hex: String,
    /// Cut over at the first entry whose log time reaches this, Unix ms (absent: at the
    /// deploy's own index).
    #[serde(default)]
    pub at_log_time_ms: Option<u64>,
}

impl DeployRequest {
    /// The module and its manifest, or what is malformed.
    pub fn into_parts(self) -> Result<(Vec<u8>, Manifest, Option<u64>), String> {
        let module = BASE64
            .decode(self.module_b64.trim())
            .map_err(|e| format!("module_b64 is not base64: {e}"))?;
        if module.len() > MODULE_BYTES_MAX {
            return Err(format!(
                "the module is {} bytes, over the {MODULE_BYTES_MAX}-byte budget: build it with the actor-wasm profile and trim it",
                module.len()
            ));
        }
        let signer = deploy::parse_signer(&self.signer).map_err(|e| format!("signer: {e}"))?;
        let sig = self.signature_hex.trim();
        if sig.len() != 2 * SIGNATURE_BYTES || !sig.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!(
                "signature_hex must be {} hex digits",
                2 * SIGNATURE_BYTES
            ));
        }
        let signature = (0..SIGNATURE_BYTES)
            .map(|i| u8::from_str_radix(&sig[2 * i..2 * i + 2], 16))
            .collect::<Result<Vec<u8>, _>>()
            .map_err(|e| format!("signature_hex: {e}"))?;
        if self.name.len() > deploy::NAME_BYTES_MAX {
            return Err(format!(
                "the actor name is over {} bytes",
                deploy::NAME_BYTES_MAX
            ));
        }
        let at_ms = self.at_log_time_ms;
        let manifest = Manifest {
            name: self.name,
            version: self.version,
            len: module.len() as u32,
            hash: *blake3::hash(&module).as_bytes(),
            signer,
            signature,
        };
        Ok((module, manifest, at_ms))
    }
}

/// `POST /actor/rollback`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RollbackRequest {
    /// The actor.
    pub name: String,
}

/// One deployed version, as listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionView {
    /// Version.
    pub version: u32,
    /// blake3 of the module, hex.
    pub hash: String,
    /// Bytes.
    pub len: u32,
    /// The signer's public key, base64.
    pub signer: String,
    /// Index of the deploy entry.
    pub deployed_index: u64,
    /// Log time of that entry, Unix ms.
    pub deployed_ms: u64,
}

/// One actor, as listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActorView {
    /// Name.
    pub name: String,
    /// The active version (`null`: the module compiled into the binary, or none for an actor
    /// shipped only by deployment and not deployed yet: then `hash` is empty).
    pub version: Option<u32>,
    /// The active module's hash, hex (the compiled-in one's when no version is active).
    pub hash: String,
    /// Who signed the active version (`null` for the compiled-in module).
    pub signer: Option<String>,
    /// Index from which the active module runs (0: from the start).
    pub active_since_index: u64,
    /// Log time of that index, Unix ms (0: from the start).
    pub active_since_ms: u64,
    /// The highest version ever deployed (a deploy must be above it).
    pub highest_version: u32,
    /// Versions kept for rollback, oldest first (the active one among them).
    pub versions: Vec<VersionView>,
    /// A deploy accepted for a later log time: (version, log time Unix ms).
    pub scheduled: Option<(u32, u64)>,
}

/// `GET /actors`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActorsReply {
    /// The node that answered.
    pub node: u64,
    /// Its applied index when it answered.
    pub applied_index: u64,
    /// The replicated signer list, base64.
    pub signers: Vec<String>,
    /// Whether this node's node.toml `actor_signers` is that list (a difference changes
    /// nothing replicated; it says which file is stale).
    pub local_signers_match: bool,
    /// Every actor.
    pub actors: Vec<ActorView>,
}

/// The compiled-in module's hash, hex; empty for an actor shipped only by deployment.
fn compiled_in_hash(kind: ActorKind) -> String {
    let bytes = match kind {
        ActorKind::Balancing => crate::actors::embedded::BALANCING_WASM,
        ActorKind::Billing => crate::actors::embedded::BILLING_WASM,
        ActorKind::DemandResponse => return String::new(),
    };
    deploy::hash_hex(blake3::hash(bytes).as_bytes())
}

/// What `GET /actors` answers for `node`.
pub fn actors_reply(node: &Node) -> ActorsReply {
    let view = node.state_machine().actor_modules();
    let mut local = node.local_actor_signers().to_vec();
    local.sort_unstable();
    local.dedup();
    ActorsReply {
        node: node.id(),
        applied_index: node.state_machine().status().borrow().applied_index,
        signers: view.signers.iter().map(deploy::signer_text).collect(),
        local_signers_match: local == view.signers,
        actors: view
            .actors
            .into_iter()
            .map(|(kind, reg)| {
                let versions: Vec<VersionView> = reg
                    .versions
                    .iter()
                    .map(|v| VersionView {
                        version: v.version,
                        hash: deploy::hash_hex(&v.hash),
                        len: v.len,
                        signer: deploy::signer_text(&v.signer),
                        deployed_index: v.deployed_index,
                        deployed_ms: v.deployed_ms,
                    })
                    .collect();
                let active = reg
                    .active
                    .and_then(|a| versions.iter().find(|v| v.version == a));
                ActorView {
                    name: kind.name().into(),
                    version: reg.active,
                    hash: active
                        .map(|v| v.hash.clone())
                        .unwrap_or_else(|| compiled_in_hash(kind)),
                    signer: active.map(|v| v.signer.clone()),
                    active_since_index: reg.active_since_index,
                    active_since_ms: reg.active_since_ms,
                    highest_version: reg.highest,
                    scheduled: reg.pending.as_ref().map(|p| (p.record.version, p.at_ms)),
                    versions,
                }
            })
            .collect(),
    }
}

pub(super) async fn list(State(node): State<Node>) -> ApiResult {
    serde_json::to_value(actors_reply(&node))
        .map(Json)
        .map_err(|e| bad(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
}

pub(super) async fn deploy(State(node): State<Node>, Json(r): Json<DeployRequest>) -> ApiResult {
    let (module, manifest, at_ms) = r
        .into_parts()
        .map_err(|e| bad(StatusCode::BAD_REQUEST, e))?;
    match node.deploy_actor_at(&module, manifest, at_ms).await {
        Ok(receipt) => advise(answer(receipt), "fix what it names and deploy again"),
        Err(e @ DeployError::Module(_)) => Err(bad(StatusCode::BAD_REQUEST, e.to_string())),
        Err(e) => Err(bad(StatusCode::SERVICE_UNAVAILABLE, e.to_string())),
    }
}

pub(super) async fn rollback(
    State(node): State<Node>,
    Json(r): Json<RollbackRequest>,
) -> ApiResult {
    let receipt = node
        .rollback_actor(&r.name)
        .await
        .map_err(|e| bad(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?;
    advise(
        answer(receipt),
        "`ghatta actor list` shows what is active and kept",
    )
}

/// A refused actor operation's error says what was refused and why, in the state machine's
/// words (the same on every node), and what to do: not the input routes' advice.
fn advise(r: ApiResult, what_to_do: &str) -> ApiResult {
    r.map_err(|(code, Json(mut body))| {
        let index = body.get("index").and_then(Value::as_u64).unwrap_or(0);
        let why: Vec<String> = body
            .get("refusals")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.get("text")?.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        body["error"] = Value::String(format!(
            "committed at index {index} and refused on every node: {}; nothing changed: {what_to_do}",
            why.join("; ")
        ));
        (code, Json(body))
    })
}
