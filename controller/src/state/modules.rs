//! Deployed actor modules as replicated state: chunks staged, a deploy validated and cut over
//! at its own index, rollbacks, the signer list; and which module a delivery runs.
//!
//! Everything lives in the actor state under host keys (prefix 0xFF, which no actor's keys
//! have: the host prefixes every key an actor writes with its own byte), so it is hashed into
//! the state hash as it is written, stored in `actor_state` with the rest, and carried by
//! snapshots without a table or an image field of its own. Every check reads only the entry
//! and this replicated state, never a node's config, so a module is taken or refused alike
//! on every replica.

use std::io;

use ghatta_actor_sdk as sdk;
use serde::{Deserialize, Serialize};

use super::SmData;
use super::apply::{Tables, note_refusal, push_outbox, record_effects};
use crate::actors::deploy::{
    self, ActorOp, CHUNK_BYTES_MAX, MODULE_BYTES_MAX, Manifest, ModuleHash, SIGNERS_MAX,
    STAGED_UPLOADS_MAX, SignerKey, VERSIONS_KEPT,
};
use crate::actors::{ActorHost, ActorKind, Status};
use crate::raft::Receipt;
use crate::storage::STATE_DB;
use ghatta_proto::codec;

/// The replicated signer list (`Vec<SignerKey>`).
const SIGNERS_KEY: &[u8] = b"\xffhost/actor-signers";
/// Uploads being staged, oldest first (`Vec<ModuleHash>`).
const STAGED_KEY: &[u8] = b"\xffhost/actor-staged";
/// A staged chunk: this prefix, the module hash, the offset (big-endian, so key order is
/// offset order).
const CHUNK_PREFIX: &[u8] = b"\xffhost/actor-chunk/";
/// A deployed module's bytes: this prefix and its hash.
const MODULE_PREFIX: &[u8] = b"\xffhost/actor-module/";
/// An actor's [`Registry`]: this prefix and the actor's prefix byte.
const REGISTRY_PREFIX: &[u8] = b"\xffhost/actor-registry/";
/// Scheduled cut-overs, `Vec<(at_ms, actor prefix)>` (looked up on every entry, so kept
/// apart from the registries; absent when none).
const PENDING_KEY: &[u8] = b"\xffhost/actor-pending";
/// The active module's hash of an actor (read on every delivery, so kept apart from the
/// registry): this prefix and the actor's prefix byte.
const ACTIVE_PREFIX: &[u8] = b"\xffhost/actor-active/";

/// The reason code a refused actor operation carries in its receipt (`RejectReason::Invalid`).
const REFUSED_CODE: i32 = sdk::RejectReason::Invalid as i32;

/// One deployed version of an actor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionRecord {
    /// The version.
    pub version: u32,
    /// blake3 of the module.
    pub hash: ModuleHash,
    /// Module length, bytes.
    pub len: u32,
    /// Who signed it.
    pub signer: SignerKey,
    /// The index of the entry that deployed it.
    pub deployed_index: u64,
    /// Log time of that entry, Unix ms.
    pub deployed_ms: u64,
}

/// A deploy accepted for a later log time (`ghatta actor deploy --at-log-time`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending {
    /// The version that becomes active.
    pub record: VersionRecord,
    /// At the first entry whose log time reaches this, Unix ms.
    pub at_ms: u64,
}

/// What the registry knows of one actor.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registry {
    /// Deployed versions kept, oldest first ([`VERSIONS_KEPT`]).
    pub versions: Vec<VersionRecord>,
    /// The active version (`None`: the module compiled into the binary).
    pub active: Option<u32>,
    /// The index from which the active module runs (0: from the start).
    pub active_since_index: u64,
    /// Log time of that index, Unix ms.
    pub active_since_ms: u64,
    /// The highest version ever deployed: a deploy must be above it.
    pub highest: u32,
    /// A checked deploy waiting for its log time (at most one per actor).
    pub pending: Option<Pending>,
}

fn key(prefix: &[u8], rest: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(prefix.len() + rest.len());
    k.extend_from_slice(prefix);
    k.extend_from_slice(rest);
    k
}

fn chunk_key(hash: &ModuleHash, offset: u32) -> Vec<u8> {
    let mut k = key(CHUNK_PREFIX, hash);
    k.extend_from_slice(&offset.to_be_bytes());
    k
}

/// The registry of `kind` in `state` (an empty one when nothing was deployed).
pub(crate) fn registry(state: &crate::actors::ActorState, kind: ActorKind) -> Registry {
    state
        .map
        .get(&key(REGISTRY_PREFIX, &[kind.prefix()]))
        .and_then(|v| codec::decode(v).ok())
        .unwrap_or_default()
}

/// The replicated signer list.
pub(crate) fn signers(state: &crate::actors::ActorState) -> Vec<SignerKey> {
    state
        .map
        .get(SIGNERS_KEY)
        .and_then(|v| codec::decode(v).ok())
        .unwrap_or_default()
}

/// Whether a deployed version of `kind` is active.
pub(crate) fn is_active(state: &crate::actors::ActorState, kind: ActorKind) -> bool {
    state
        .map
        .contains_key(&key(ACTIVE_PREFIX, &[kind.prefix()]))
}

/// The deployed module `kind`'s deliveries run now, compiled; `None`: the compiled-in one.
pub(crate) fn active_module(
    host: &ActorHost,
    state: &crate::actors::ActorState,
    kind: ActorKind,
) -> Option<crate::actors::ActorModule> {
    let hash: ModuleHash = state
        .map
        .get(&key(ACTIVE_PREFIX, &[kind.prefix()]))?
        .as_slice()
        .try_into()
        .ok()?;
    let bytes = state.map.get(&key(MODULE_PREFIX, &hash))?;
    // Validated when deployed; failing now would mean the node's [actors] limits changed
    // under it. The delivery then traps (the host has no module), as it would everywhere
    // with those limits.
    host.compiled(kind, &hash, bytes).ok()
}

/// Where one actor operation is applied.
pub(super) struct At {
    pub(super) index: u64,
}

/// A write to the host's part of the actor state: in memory, in the table and in the hash.
pub(super) fn put(
    data: &mut SmData,
    t: &mut Tables<'_>,
    h: &mut blake3::Hasher,
    k: Vec<u8>,
    v: Option<Vec<u8>>,
) -> io::Result<()> {
    h.update(&(k.len() as u32).to_le_bytes());
    h.update(&k);
    match v {
        Some(v) => {
            h.update(&(v.len() as u32).to_le_bytes());
            h.update(&v);
            t.state
                .insert(k.as_slice(), v.as_slice())
                .map_err(STATE_DB.write())?;
            data.actor_state.insert(k, v);
        }
        None => {
            h.update(&u32::MAX.to_le_bytes());
            t.state.remove(k.as_slice()).map_err(STATE_DB.write())?;
            data.actor_state.remove(&k);
        }
    }
    Ok(())
}

fn encode<T: Serialize>(v: &T) -> io::Result<Vec<u8>> {
    Ok(codec::encode(v).map_err(STATE_DB.encode("state value"))?)
}

/// Applies one actor operation.
pub(super) fn apply(
    host: &ActorHost,
    data: &mut SmData,
    t: &mut Tables<'_>,
    at: At,
    op: &ActorOp,
    receipt: &mut Receipt,
    h: &mut blake3::Hasher,
) -> io::Result<()> {
    h.update(b"actor-op");
    let outcome = match op {
        ActorOp::Chunk {
            hash,
            offset,
            bytes,
        } => stage(data, t, h, hash, *offset, bytes).map(|()| None)?,
        ActorOp::SeedSigners(keys) => seed_signers(data, t, h, keys)?,
        ActorOp::Deploy(m) => deploy(host, data, t, &at, m, None, h)?,
        ActorOp::DeployAt { manifest, at_ms } => {
            deploy(host, data, t, &at, manifest, Some(*at_ms), h)?
        }
        ActorOp::Rollback { name } => rollback(host, data, t, &at, name, h)?,
    };
    match outcome {
        Some(Err(refusal)) => {
            h.update(b"refused");
            receipt.rejected += 1;
            note_refusal(receipt, 0, refusal.actor, REFUSED_CODE, &refusal.text);
            event(
                data,
                t,
                at.index,
                refusal.actor,
                refusal.version,
                refusal.text,
                h,
            )?;
        }
        Some(Ok(done)) => {
            receipt.handled += 1;
            event(data, t, at.index, done.actor, done.version, done.text, h)?;
        }
        None => receipt.handled += 1,
    }
    Ok(())
}

/// What a deploy or rollback did or why it did not: one line for the event log.
struct Said {
    actor: Option<ActorKind>,
    version: u32,
    text: String,
}

type Outcome = Option<Result<Said, Said>>;

/// An `ActorDeploy` alarm in the outbox: the event log's record of a deploy, a cut-over, a
/// rollback or a refusal (`ghatta events`, the central's events stream).
fn event(
    data: &mut SmData,
    t: &mut Tables<'_>,
    index: u64,
    actor: Option<ActorKind>,
    version: u32,
    text: String,
    h: &mut blake3::Hasher,
) -> io::Result<()> {
    let actor = actor.unwrap_or(ActorKind::Balancing);
    let out = sdk::Output::Alarm(sdk::Alarm {
        code: sdk::AlarmCode::ActorDeploy,
        node: None,
        subject: u32::from(actor.prefix()),
        value: i64::from(version),
        text,
    });
    let bytes = sdk::codec::encode(&out);
    h.update(b"actor-event");
    h.update(&bytes);
    push_outbox(data, t, index, actor, &out, bytes)
}

/// Stages a chunk (bounded: [`STAGED_UPLOADS_MAX`] uploads, each at most a module and a chunk
/// of bytes). A chunk that breaks a bound is dropped, and the deploy that needs it will say
/// the module is incomplete.
fn stage(
    data: &mut SmData,
    t: &mut Tables<'_>,
    h: &mut blake3::Hasher,
    hash: &ModuleHash,
    offset: u32,
    bytes: &[u8],
) -> io::Result<()> {
    let end = (offset as usize).saturating_add(bytes.len());
    if bytes.is_empty() || bytes.len() > CHUNK_BYTES_MAX || end > MODULE_BYTES_MAX {
        h.update(b"chunk-dropped");
        return Ok(());
    }
    let mut staged = staged_list(data);
    if !staged.contains(hash) {
        while staged.len() >= STAGED_UPLOADS_MAX {
            let oldest = staged.remove(0);
            clear_staged(data, t, h, &oldest)?;
        }
        staged.push(*hash);
        put(data, t, h, STAGED_KEY.to_vec(), Some(encode(&staged)?))?;
    }
    let already: usize = staged_chunks(data, hash).map(|(_, v)| v.len()).sum();
    if already + bytes.len() > MODULE_BYTES_MAX + CHUNK_BYTES_MAX {
        h.update(b"chunk-dropped");
        return Ok(());
    }
    put(data, t, h, chunk_key(hash, offset), Some(bytes.to_vec()))
}

/// The uploads being staged, oldest first.
fn staged_list(data: &SmData) -> Vec<ModuleHash> {
    data.actor_state
        .map
        .get(STAGED_KEY)
        .and_then(|v| codec::decode(v).ok())
        .unwrap_or_default()
}

/// The staged chunks of one upload, by offset.
fn staged_chunks<'a>(
    data: &'a SmData,
    hash: &ModuleHash,
) -> impl Iterator<Item = (u32, &'a Vec<u8>)> + 'a {
    let prefix = key(CHUNK_PREFIX, hash);
    data.actor_state
        .map
        .range(prefix.clone()..)
        .take_while(move |(k, _)| k.starts_with(&prefix))
        .filter_map(|(k, v)| {
            let off: [u8; 4] = k[k.len() - 4..].try_into().ok()?;
            Some((u32::from_be_bytes(off), v))
        })
}

/// Drops an upload's chunks and its place in the staged list.
fn clear_staged(
    data: &mut SmData,
    t: &mut Tables<'_>,
    h: &mut blake3::Hasher,
    hash: &ModuleHash,
) -> io::Result<()> {
    let keys: Vec<Vec<u8>> = staged_chunks(data, hash)
        .map(|(off, _)| chunk_key(hash, off))
        .collect();
    for k in keys {
        put(data, t, h, k, None)?;
    }
    let mut staged = staged_list(data);
    if let Some(pos) = staged.iter().position(|s| s == hash) {
        staged.remove(pos);
        let v = (!staged.is_empty()).then(|| encode(&staged)).transpose()?;
        put(data, t, h, STAGED_KEY.to_vec(), v)?;
    }
    Ok(())
}

/// The staged module: its chunks from offset 0, each where the one before ended.
fn assemble(data: &SmData, hash: &ModuleHash) -> Vec<u8> {
    let mut out = Vec::new();
    for (off, bytes) in staged_chunks(data, hash) {
        if off as usize != out.len() {
            break;
        }
        out.extend_from_slice(bytes);
    }
    out
}

fn seed_signers(
    data: &mut SmData,
    t: &mut Tables<'_>,
    h: &mut blake3::Hasher,
    keys: &[SignerKey],
) -> io::Result<Outcome> {
    if !signers(&data.actor_state).is_empty() {
        // Seeded already: the first list committed wins on every replica.
        h.update(b"signers-kept");
        return Ok(None);
    }
    let valid = !keys.is_empty()
        && keys.len() <= SIGNERS_MAX
        && keys
            .iter()
            .all(|k| ed25519_dalek::VerifyingKey::from_bytes(k).is_ok());
    if !valid {
        return Ok(Some(Err(Said {
            actor: None,
            version: 0,
            text: format!(
                "the actor signer list was not seeded: it needs 1 to {SIGNERS_MAX} valid Ed25519 keys (node.toml actor_signers)"
            ),
        })));
    }
    let mut sorted = keys.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    put(data, t, h, SIGNERS_KEY.to_vec(), Some(encode(&sorted)?))?;
    Ok(Some(Ok(Said {
        actor: None,
        version: 0,
        text: format!(
            "actor signers seeded: {}",
            sorted
                .iter()
                .map(deploy::signer_text)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    })))
}

/// The refusal of an operation naming no known actor.
fn no_such_actor(what: &str, name: &str, version: u32) -> Outcome {
    let known: Vec<&str> = ActorKind::ALL.iter().map(|k| k.name()).collect();
    Some(Err(Said {
        actor: None,
        version,
        text: format!(
            "{what} refused: no actor is named `{}` (known: {})",
            name.chars()
                .take(deploy::NAME_BYTES_MAX)
                .collect::<String>(),
            known.join(", ")
        ),
    }))
}

fn deploy(
    host: &ActorHost,
    data: &mut SmData,
    t: &mut Tables<'_>,
    at: &At,
    m: &Manifest,
    at_ms: Option<u64>,
    h: &mut blake3::Hasher,
) -> io::Result<Outcome> {
    let Some(kind) = ActorKind::by_name(&m.name) else {
        clear_staged(data, t, h, &m.hash)?;
        return Ok(no_such_actor("deploy", &m.name, m.version));
    };
    let outcome = check_and_cut_over(host, data, t, at, kind, m, at_ms, h);
    // Staged bytes are for one deploy: taken or refused, they are dropped (a retry uploads
    // again), so abandoned uploads never hold state.
    clear_staged(data, t, h, &m.hash)?;
    outcome
}

#[allow(clippy::too_many_arguments)]
fn check_and_cut_over(
    host: &ActorHost,
    data: &mut SmData,
    t: &mut Tables<'_>,
    at: &At,
    kind: ActorKind,
    m: &Manifest,
    at_ms: Option<u64>,
    h: &mut blake3::Hasher,
) -> io::Result<Outcome> {
    let name = kind.name();
    let refuse = |why: String| {
        Ok(Some(Err(Said {
            actor: Some(kind),
            version: m.version,
            text: format!("deploy of {name} v{} refused: {why}", m.version),
        })))
    };
    if m.len as usize > MODULE_BYTES_MAX {
        return refuse(format!(
            "the module is {} bytes, over the {MODULE_BYTES_MAX}-byte budget: build with the actor-wasm profile and trim it",
            m.len
        ));
    }
    let listed = signers(&data.actor_state);
    if !listed.contains(&m.signer) {
        return refuse(format!(
            "signer {} is not in the replicated actor signer list ({} key(s)); sign with a listed key",
            deploy::signer_text(&m.signer),
            listed.len()
        ));
    }
    if !m.signature_ok() {
        return refuse(
            "the signature does not verify for this name, version and module: sign this module again".into(),
        );
    }
    let reg = registry(&data.actor_state, kind);
    if let Some(p) = &reg.pending {
        return refuse(format!(
            "v{} is scheduled to cut over at log time {} ms; `ghatta actor rollback` cancels it",
            p.record.version, p.at_ms
        ));
    }
    if m.version <= reg.highest {
        return refuse(format!(
            "version {} is not above v{}, the highest deployed; use `ghatta actor rollback` to go back",
            m.version, reg.highest
        ));
    }
    let bytes = assemble(data, &m.hash);
    if bytes.len() != m.len as usize || *blake3::hash(&bytes).as_bytes() != m.hash {
        return refuse(format!(
            "{} of its {} bytes are staged in order, or they do not hash to {}: upload it again",
            bytes.len().min(m.len as usize),
            m.len,
            &deploy::hash_hex(&m.hash)[..16]
        ));
    }
    let module = match host.compiled(kind, &m.hash, &bytes) {
        Ok(module) => module,
        Err(e) => return refuse(e.to_string()),
    };
    let record = VersionRecord {
        version: m.version,
        hash: m.hash,
        len: m.len,
        signer: m.signer,
        deployed_index: at.index,
        deployed_ms: data.log_time_ms,
    };
    put(data, t, h, key(MODULE_PREFIX, &m.hash), Some(bytes))?;
    if let Some(at_ms) = at_ms.filter(|at_ms| *at_ms > data.log_time_ms) {
        let mut reg = reg;
        reg.highest = m.version;
        reg.pending = Some(Pending { record, at_ms });
        put(
            data,
            t,
            h,
            key(REGISTRY_PREFIX, &[kind.prefix()]),
            Some(encode(&reg)?),
        )?;
        let mut pending = pending_list(data);
        pending.push((at_ms, kind.prefix()));
        pending.sort_unstable();
        put(data, t, h, PENDING_KEY.to_vec(), Some(encode(&pending)?))?;
        return Ok(Some(Ok(Said {
            actor: Some(kind),
            version: m.version,
            text: format!(
                "{name} v{} ({}, {} bytes) accepted at index {}; it cuts over at the first entry from log time {at_ms} ms",
                m.version,
                &deploy::hash_hex(&m.hash)[..16],
                m.len,
                at.index
            ),
        })));
    }
    match cut_over(host, data, t, at, kind, reg, record, &module, h)? {
        Ok(text) => Ok(Some(Ok(Said {
            actor: Some(kind),
            version: m.version,
            text,
        }))),
        Err(why) => refuse(why),
    }
}

fn pending_list(data: &SmData) -> Vec<(u64, u8)> {
    data.actor_state
        .map
        .get(PENDING_KEY)
        .and_then(|v| codec::decode(v).ok())
        .unwrap_or_default()
}

/// Runs the migration of `record`'s module and, if it passes, makes it active at `at`; the
/// event's text, or why not (its bytes then dropped unless a kept version shares them).
#[allow(clippy::too_many_arguments)]
fn cut_over(
    host: &ActorHost,
    data: &mut SmData,
    t: &mut Tables<'_>,
    at: &At,
    kind: ActorKind,
    mut reg: Registry,
    record: VersionRecord,
    module: &crate::actors::ActorModule,
    h: &mut blake3::Hasher,
) -> io::Result<Result<String, String>> {
    let from = reg.active.unwrap_or(0);
    if let Err(why) = migrate(host, data, t, at, kind, module, from, record.version, h)? {
        if !reg.versions.iter().any(|v| v.hash == record.hash) {
            put(data, t, h, key(MODULE_PREFIX, &record.hash), None)?;
        }
        return Ok(Err(why));
    }
    let text = format!(
        "{} v{} ({}, {} bytes) active from index {}, replacing {}",
        kind.name(),
        record.version,
        &deploy::hash_hex(&record.hash)[..16],
        record.len,
        at.index,
        version_text(from)
    );
    reg.highest = reg.highest.max(record.version);
    let to = (record.version, record.hash);
    reg.versions.push(record);
    while reg.versions.len() > VERSIONS_KEPT {
        let gone = reg.versions.remove(0);
        if !reg.versions.iter().any(|v| v.hash == gone.hash) {
            put(data, t, h, key(MODULE_PREFIX, &gone.hash), None)?;
        }
    }
    activate(data, t, at, kind, reg, Some(to), h)?;
    Ok(Ok(text))
}

/// Cuts over the scheduled deploys whose log time the entry at `at` reached (called after
/// the entry moved log time, before its body applies, so the entry itself runs the new
/// module). One map lookup when none is scheduled.
pub(super) fn cut_over_due(
    host: &ActorHost,
    data: &mut SmData,
    t: &mut Tables<'_>,
    index: u64,
    h: &mut blake3::Hasher,
) -> io::Result<()> {
    if !data.actor_state.map.contains_key(PENDING_KEY) {
        return Ok(());
    }
    let now = data.log_time_ms;
    let (due, rest): (Vec<_>, Vec<_>) = pending_list(data)
        .into_iter()
        .partition(|(at_ms, _)| *at_ms <= now);
    if due.is_empty() {
        return Ok(());
    }
    let rest = (!rest.is_empty()).then(|| encode(&rest)).transpose()?;
    put(data, t, h, PENDING_KEY.to_vec(), rest)?;
    let at = At { index };
    for (at_ms, prefix) in due {
        let Some(kind) = ActorKind::from_prefix(prefix) else {
            continue;
        };
        let mut reg = registry(&data.actor_state, kind);
        let Some(p) = reg.pending.take() else {
            continue;
        };
        let version = p.record.version;
        let bytes = data
            .actor_state
            .map
            .get(&key(MODULE_PREFIX, &p.record.hash))
            .cloned()
            .unwrap_or_default();
        let outcome = match host.compiled(kind, &p.record.hash, &bytes) {
            Ok(module) => cut_over(host, data, t, &at, kind, reg.clone(), p.record, &module, h)?,
            Err(e) => Err(e.to_string()),
        };
        let text = match outcome {
            Ok(text) => format!("{text} (scheduled for log time {at_ms} ms)"),
            Err(why) => {
                put(
                    data,
                    t,
                    h,
                    key(REGISTRY_PREFIX, &[kind.prefix()]),
                    Some(encode(&reg)?),
                )?;
                format!(
                    "scheduled cut-over of {} v{version} refused: {why}",
                    kind.name()
                )
            }
        };
        event(data, t, index, Some(kind), version, text, h)?;
    }
    Ok(())
}

fn version_text(v: u32) -> String {
    if v == 0 {
        "the compiled-in module".into()
    } else {
        format!("v{v}")
    }
}

/// Makes `to` (version and hash; `None`: the compiled-in module) the active module from the
/// entry after `at` on, recording the registry. Both writes are hashed: the state hash chain
/// covers which module every later delivery runs.
fn activate(
    data: &mut SmData,
    t: &mut Tables<'_>,
    at: &At,
    kind: ActorKind,
    mut reg: Registry,
    to: Option<(u32, ModuleHash)>,
    h: &mut blake3::Hasher,
) -> io::Result<()> {
    reg.active = to.map(|(v, _)| v);
    reg.active_since_index = at.index;
    reg.active_since_ms = data.log_time_ms;
    put(
        data,
        t,
        h,
        key(ACTIVE_PREFIX, &[kind.prefix()]),
        to.map(|(_, hash)| hash.to_vec()),
    )?;
    put(
        data,
        t,
        h,
        key(REGISTRY_PREFIX, &[kind.prefix()]),
        Some(encode(&reg)?),
    )
}

/// Runs the incoming module's `ghatta_migrate(from)` when it has one. `Err` with the reason
/// when it trapped or refused: its writes were rolled back and the cut-over does not happen.
#[allow(clippy::too_many_arguments)]
fn migrate(
    host: &ActorHost,
    data: &mut SmData,
    t: &mut Tables<'_>,
    at: &At,
    kind: ActorKind,
    module: &crate::actors::ActorModule,
    from: u32,
    to: u32,
    h: &mut blake3::Hasher,
) -> io::Result<Result<(), String>> {
    if !ActorHost::has_migrate(module) {
        return Ok(Ok(()));
    }
    let (status, effects) = host.migrate(kind, module, &mut data.actor_state, from);
    h.update(b"migrate");
    match status {
        Status::Handled => {
            record_effects(data, t, at.index, kind, effects, h)?;
            Ok(Ok(()))
        }
        // The host rolled its writes back (`ActorHost::migrate`).
        Status::Rejected(code) => Ok(Err(format!(
            "v{to}'s {} from {} answered {code} (not 0); {} stays active",
            crate::actors::MIGRATE_EXPORT,
            version_text(from),
            version_text(from)
        ))),
        Status::Trapped(kind_of) => Ok(Err(format!(
            "v{to}'s {} from {} trapped ({kind_of:?}); nothing it wrote was kept and {} stays active",
            crate::actors::MIGRATE_EXPORT,
            version_text(from),
            version_text(from)
        ))),
    }
}

fn rollback(
    host: &ActorHost,
    data: &mut SmData,
    t: &mut Tables<'_>,
    at: &At,
    name: &str,
    h: &mut blake3::Hasher,
) -> io::Result<Outcome> {
    let Some(kind) = ActorKind::by_name(name) else {
        return Ok(no_such_actor("rollback", name, 0));
    };
    let mut reg = registry(&data.actor_state, kind);
    if let Some(p) = reg.pending.take() {
        // A scheduled cut-over not yet made is what a rollback undoes first.
        if !reg.versions.iter().any(|v| v.hash == p.record.hash) {
            put(data, t, h, key(MODULE_PREFIX, &p.record.hash), None)?;
        }
        put(
            data,
            t,
            h,
            key(REGISTRY_PREFIX, &[kind.prefix()]),
            Some(encode(&reg)?),
        )?;
        let rest: Vec<(u64, u8)> = pending_list(data)
            .into_iter()
            .filter(|(_, k)| *k != kind.prefix())
            .collect();
        let rest = (!rest.is_empty()).then(|| encode(&rest)).transpose()?;
        put(data, t, h, PENDING_KEY.to_vec(), rest)?;
        return Ok(Some(Ok(Said {
            actor: Some(kind),
            version: p.record.version,
            text: format!(
                "the scheduled cut-over of {} v{} was cancelled; {} stays active",
                kind.name(),
                p.record.version,
                version_text(reg.active.unwrap_or(0))
            ),
        })));
    }
    let Some(active) = reg.active else {
        return Ok(Some(Err(Said {
            actor: Some(kind),
            version: 0,
            text: format!(
                "rollback of {} refused: it runs the compiled-in module, there is nothing to go back to",
                kind.name()
            ),
        })));
    };
    let pos = reg.versions.iter().position(|v| v.version == active);
    let target = pos
        .and_then(|p| p.checked_sub(1))
        .map(|p| reg.versions[p].clone());
    let to = target.as_ref().map(|v| v.version).unwrap_or(0);
    // The older module converts the state back if it knows how (`ghatta_migrate` with a
    // `from` above its own version); otherwise it reads the state as the newer one left it.
    let module = match &target {
        Some(v) => {
            let bytes = data
                .actor_state
                .map
                .get(&key(MODULE_PREFIX, &v.hash))
                .cloned()
                .unwrap_or_default();
            match host.compiled(kind, &v.hash, &bytes) {
                Ok(m) => Some(m),
                Err(e) => {
                    return Ok(Some(Err(Said {
                        actor: Some(kind),
                        version: to,
                        text: format!("rollback of {} to v{to} refused: {e}", kind.name()),
                    })));
                }
            }
        }
        None => None,
    };
    if let Some(module) = &module
        && let Err(why) = migrate(host, data, t, at, kind, module, active, to, h)?
    {
        return Ok(Some(Err(Said {
            actor: Some(kind),
            version: to,
            text: format!("rollback of {} refused: {why}", kind.name()),
        })));
    }
    activate(
        data,
        t,
        at,
        kind,
        reg,
        target.as_ref().map(|v| (v.version, v.hash)),
        h,
    )?;
    Ok(Some(Ok(Said {
        actor: Some(kind),
        version: to,
        text: format!(
            "{} rolled back from v{active} to {} at index {}",
            kind.name(),
            version_text(to),
            at.index
        ),
    })))
}
