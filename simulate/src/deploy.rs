//! The simulated operator's actor deploys (`deploy` faults): a new module version signed with
//! the world's operator key and handed to a running node's `Node::deploy_actor`, the path the
//! admin API and `ghatta actor deploy` take, retried as a person at the CLI would until its
//! deploy entry commits; and what the world then holds every replica to.

use std::sync::{Arc, Mutex};

use ghatta::actors::ActorKind;
use ghatta::actors::deploy::{KEY_BYTES, Manifest, OperatorKey};
use ghatta::actors::embedded;
use ghatta::state::ActorModules;
use ghatta_sim::check::Violation;
use ghatta_sim::report::DeploySummary;
use ghatta_sim::scenario::DEPLOY_RETRY_S;
use ghatta_sim::time::Epoch;
use tokio::time::Duration;

use super::lock;
use super::lockstep::Engine;
use super::world::Running;

/// The custom section that makes each deployed version a module of its own: the actor's
/// built wasm with this section appended, holding the version (little-endian `u32`). wasmi
/// ignores custom sections, so the behaviour is the built actor's; the hash is the
/// version's, as a rebuilt module's would be.
pub const VERSION_SECTION: &str = "ghatta-sim-version";

/// One deploy the operator asked for, and how it went.
#[derive(Clone, Debug)]
pub struct DeployRequest {
    /// The actor.
    pub actor: ActorKind,
    /// The version.
    pub version: u32,
    /// Module bytes.
    pub module_bytes: u64,
    /// When it was asked, simulated ms.
    pub asked_ms: u64,
    /// When its deploy entry was seen committed (`None`: not yet).
    pub committed_ms: Option<u64>,
    /// The deploy entry's refusal, if it was refused (a shipped module must not be).
    pub refusal: Option<String>,
    /// Attempts made (each one `Node::deploy_actor` call).
    pub attempts: u32,
    /// The last error, for the violation if it never commits.
    pub last_error: Option<String>,
    /// When a node's registry first showed it active, simulated ms.
    pub active_first_ms: Option<u64>,
    /// When every node's registry first showed it active, simulated ms.
    pub active_everywhere_ms: Option<u64>,
    /// The index it is active from (equal on every node, or a violation).
    pub active_since_index: Option<u64>,
    /// Payload bytes on all links when asked, and when active everywhere.
    pub air_bytes_asked: u64,
    /// See `air_bytes_asked`.
    pub air_bytes_active: u64,
    /// Payload bytes on all links over as long a window before the request.
    pub air_bytes_before: Option<u64>,
}

/// Every deploy of a run, in the order asked.
pub type DeployLog = Arc<Mutex<Vec<DeployRequest>>>;

/// The world's operator signing key, from the world seed (so a run signs alike every time);
/// every node lists its public half in `actor_signers`.
pub fn operator_key(seed: u64) -> OperatorKey {
    let mut h = blake3::Hasher::new();
    h.update(b"ghatta-sim operator key");
    h.update(&seed.to_le_bytes());
    let mut key = [0u8; KEY_BYTES];
    key.copy_from_slice(&h.finalize().as_bytes()[..KEY_BYTES]);
    OperatorKey::from_seed(key)
}

/// `wasm` with a custom section [`VERSION_SECTION`] holding `version` appended.
pub fn with_version_section(wasm: &[u8], version: u32) -> Vec<u8> {
    // wasm's section and name lengths are LEB128, as the frame headers' varints are.
    use ghatta_proto::frame::put_varint;
    let mut body = Vec::new();
    put_varint(&mut body, VERSION_SECTION.len() as u64);
    body.extend_from_slice(VERSION_SECTION.as_bytes());
    body.extend_from_slice(&version.to_le_bytes());
    let mut out = wasm.to_vec();
    out.push(0); // custom section id
    put_varint(&mut out, body.len() as u64);
    out.extend_from_slice(&body);
    out
}

/// The module a `deploy` of `actor` at `version` ships: the actor's built wasm (billing's and
/// balancing's compiled into the node, demand-response's where the build left it) with its
/// version section.
///
/// # Errors
/// When demand-response's built module cannot be read.
pub fn module_for(actor: ActorKind, version: u32) -> anyhow::Result<Vec<u8>> {
    let built = match actor {
        ActorKind::Balancing => embedded::BALANCING_WASM.to_vec(),
        ActorKind::Billing => embedded::BILLING_WASM.to_vec(),
        ActorKind::DemandResponse => {
            std::fs::read(embedded::DEMAND_RESPONSE_WASM_PATH).map_err(|e| {
                anyhow::anyhow!(
                    "cannot read demand-response's module at {} ({e}): build the workspace",
                    embedded::DEMAND_RESPONSE_WASM_PATH
                )
            })?
        }
    };
    Ok(with_version_section(&built, version))
}

/// Whether a node's registry shows `version` of `actor` deployed (active, or superseded).
pub fn deployed(modules: &ActorModules, actor: ActorKind, version: u32) -> bool {
    modules
        .actors
        .iter()
        .any(|(k, reg)| *k == actor && reg.highest >= version)
}

/// The index from which `version` of `actor` is active on a node, if it is.
pub fn active_since(modules: &ActorModules, actor: ActorKind, version: u32) -> Option<u64> {
    modules
        .actors
        .iter()
        .find(|(k, _)| *k == actor)
        .filter(|(_, reg)| reg.active == Some(version))
        .map(|(_, reg)| reg.active_since_index)
}

/// Carries out one request (entry `at` of `log`): through `first` while it runs, else the
/// lowest-numbered running node, until a node's registry shows the version deployed, the
/// deploy entry is refused, or `patience` runs out. Runs on the world's runtime; each
/// attempt on the runtime of the node it goes through.
#[allow(clippy::too_many_arguments)]
pub async fn carry_out(
    engine: Engine,
    running: Running,
    epoch: Epoch,
    log: DeployLog,
    at: usize,
    first: u64,
    module: Arc<Vec<u8>>,
    manifest: Manifest,
    patience: Duration,
) {
    let (actor, version) = {
        let l = lock(&log);
        (l[at].actor, l[at].version)
    };
    let deadline = tokio::time::Instant::now() + patience;
    let retry = Duration::from_millis((DEPLOY_RETRY_S * 1_000.0) as u64);
    while tokio::time::Instant::now() < deadline {
        let through = {
            let r = lock(&running);
            r.get(&first)
                .or_else(|| r.values().next())
                .map(|(slot, _, n)| (*slot, n.clone()))
        };
        if let Some((slot, node)) = through {
            let (module, manifest) = (module.clone(), manifest.clone());
            let attempt = async move {
                if deployed(&node.state_machine().actor_modules(), actor, version) {
                    return Ok(None);
                }
                node.deploy_actor(&module, manifest)
                    .await
                    .map(|r| {
                        Some(match r.refusals.first() {
                            Some(refusal) => Err(refusal.text.clone()),
                            None if r.handled == 1 => Ok(()),
                            None => Err(format!("the deploy entry was not handled: {r:?}")),
                        })
                    })
                    .map_err(|e| e.to_string())
            };
            let outcome = engine.spawn_on(slot, attempt).await;
            let mut l = lock(&log);
            let req = &mut l[at];
            match outcome {
                // Deployed (this attempt's entry, or an earlier one whose answer was lost).
                Ok(Ok(None | Some(Ok(())))) => {
                    req.attempts += u32::from(!matches!(outcome, Ok(Ok(None))));
                    req.committed_ms = Some(epoch.elapsed_ms());
                    return;
                }
                Ok(Ok(Some(Err(why)))) => {
                    req.attempts += 1;
                    req.refusal = Some(why);
                    return;
                }
                Ok(Err(e)) => {
                    req.attempts += 1;
                    req.last_error = Some(e);
                }
                // The node's runtime dropped the attempt (it was killed): ask another.
                Err(_) => req.attempts += 1,
            }
        }
        tokio::time::sleep(retry).await;
    }
}

/// The run's deploys as the report shows them.
pub fn summaries(log: &DeployLog) -> Vec<DeploySummary> {
    lock(log)
        .iter()
        .map(|r| DeploySummary {
            actor: r.actor.name().to_string(),
            version: r.version,
            module_bytes: r.module_bytes,
            asked_s: r.asked_ms as f64 / 1_000.0,
            active_first_after_s: r.active_first_ms.map(|t| (t - r.asked_ms) as f64 / 1_000.0),
            active_everywhere_after_s: r
                .active_everywhere_ms
                .map(|t| (t - r.asked_ms) as f64 / 1_000.0),
            active_since_index: r.active_since_index,
            air_bytes: r.air_bytes_active.saturating_sub(r.air_bytes_asked),
            air_bytes_before: r.air_bytes_before,
            attempts: r.attempts,
            last_error: r.last_error.clone(),
        })
        .collect()
}

/// A violation for every deploy refused, or never active on every node.
pub fn unfinished(log: &DeployLog, end_ms: u64) -> Vec<Violation> {
    lock(log)
        .iter()
        .filter_map(|r| {
            let what = format!(
                "deploy of {} v{} asked at t={} ms",
                r.actor.name(),
                r.version,
                r.asked_ms
            );
            let message = if let Some(why) = &r.refusal {
                format!("{what} was refused: {why}")
            } else if r.committed_ms.is_none() {
                format!(
                    "{what} did not commit by the end ({} attempts; last error: {})",
                    r.attempts,
                    r.last_error.as_deref().unwrap_or("none")
                )
            } else if r.active_everywhere_ms.is_none() {
                format!("{what} committed but was never active on every node at once")
            } else {
                return None;
            };
            Some(Violation {
                checker: "deploy".into(),
                t_ms: end_ms,
                message,
            })
        })
        .collect()
}

/// A violation if the nodes' registries differ (node id, its registries' text): every
/// replica must hold the same versions, active one and cut-over index.
pub fn registries_agree(views: &[(u64, ActorModules)], end_ms: u64) -> Option<Violation> {
    let (first_id, first) = views.first()?;
    let differ: Vec<u64> = views
        .iter()
        .filter(|(_, m)| m.actors != first.actors || m.signers != first.signers)
        .map(|(id, _)| *id)
        .collect();
    (!differ.is_empty()).then(|| Violation {
        checker: "deploy".into(),
        t_ms: end_ms,
        message: format!(
            "actor registries differ at the end: node {first_id} has {:?}; nodes {differ:?} \
             have others",
            first.actors
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ghatta::actors::ActorLimits;
    use ghatta::state::modules::Registry;

    #[test]
    fn each_version_is_a_module_of_its_own_that_the_host_takes() {
        let host = ghatta::actors::ActorHost::with_embedded(ActorLimits::default()).unwrap();
        let v1 = module_for(ActorKind::Billing, 1).unwrap();
        let v2 = module_for(ActorKind::Billing, 2).unwrap();
        assert_ne!(blake3::hash(&v1), blake3::hash(&v2));
        assert_ne!(&v1[..], embedded::BILLING_WASM);
        for m in [&v1, &v2] {
            host.check(ActorKind::Billing, m)
                .expect("a custom section changes nothing the host checks");
        }
        // Section id 0, its length, the name's length and bytes, the version.
        let long = with_version_section(b"\0asm\x01\0\0\0", 7);
        assert_eq!(&long[8..], b"\0\x17\x12ghatta-sim-version\x07\0\0\0");
    }

    #[test]
    fn the_operator_key_follows_the_seed() {
        assert_eq!(operator_key(3).public(), operator_key(3).public());
        assert_ne!(operator_key(3).public(), operator_key(4).public());
        let m = operator_key(3).sign("billing", 1, b"module");
        assert!(m.signature_ok());
    }

    fn modules(active: Option<u32>, since: u64, highest: u32) -> ActorModules {
        ActorModules {
            signers: Vec::new(),
            actors: vec![
                (ActorKind::Balancing, Registry::default()),
                (
                    ActorKind::Billing,
                    Registry {
                        active,
                        active_since_index: since,
                        highest,
                        ..Registry::default()
                    },
                ),
            ],
        }
    }

    #[test]
    fn deployed_and_active_read_the_registry() {
        let m = modules(Some(2), 40, 2);
        assert!(deployed(&m, ActorKind::Billing, 1) && deployed(&m, ActorKind::Billing, 2));
        assert!(!deployed(&m, ActorKind::Billing, 3));
        assert!(!deployed(&m, ActorKind::Balancing, 1));
        assert_eq!(active_since(&m, ActorKind::Billing, 2), Some(40));
        assert_eq!(active_since(&m, ActorKind::Billing, 1), None);
        assert!(registries_agree(&[(1, m.clone()), (2, m.clone())], 0).is_none());
        let v = registries_agree(&[(1, m), (2, modules(Some(2), 41, 2))], 9).unwrap();
        assert!(v.message.contains("nodes [2]"), "{}", v.message);
    }
}
