//! Actor modules deployed through the log: what the entries carry ([`ActorOp`]), what an
//! operator signs ([`signed_message`]), and the signing keys and their files.
//!
//! The checks that decide whether a module becomes active run in the state machine's apply
//! (`state/modules.rs`) on every replica alike; this file holds only what both the proposer
//! (the CLI, the admin API) and the replicas need, so neither imports the other.

use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};

/// Largest module, bytes: the same 64 KiB budget `build.rs` holds the compiled-in actors to
/// (a small module keeps the compiled code cache and its instances cheap on a board with
/// little memory).
pub const MODULE_BYTES_MAX: usize = 64 * 1024;

/// Module bytes one [`ActorOp::Chunk`] entry carries at most. The radio profile's proposals
/// are 512 bytes (`field::shipper::PROPOSAL_BYTES_MAX_RADIO`: a few ~100-byte radio frames
/// per AppendEntries); 448 bytes of module plus the hash, offset and framing stay inside it,
/// so a deploy never sends an entry the radio could not carry whole. A 64 KiB module is 147
/// entries.
pub const CHUNK_BYTES_MAX: usize = 448;

/// Versions of one actor the replicated registry keeps (the active one and those before it,
/// for `rollback`); older modules' bytes are dropped from the state. Four keeps two rollbacks
/// of margin while bounding the state at 4 × 64 KiB per actor.
pub const VERSIONS_KEPT: usize = 4;

/// Uploads staged at once (chunks received, not yet deployed or refused). A new upload past
/// this evicts the oldest, so chunks from an abandoned deploy (or a member sending junk)
/// cannot grow the state without bound.
pub const STAGED_UPLOADS_MAX: usize = 2;

/// Largest actor operation the leader writes to the log, bytes ([`ActorOp::payload_bytes`]):
/// a chunk, a manifest or [`SIGNERS_MAX`] keys are all far below it; anything larger is junk
/// from a member and is refused before it takes log space and air time.
pub const ACTOR_OP_BYTES_MAX: usize = 4096;

/// Keys listed as actor signers at most (a grid has an operator or two).
pub const SIGNERS_MAX: usize = 16;

/// Longest actor name, bytes.
pub const NAME_BYTES_MAX: usize = 32;

/// Bytes in an Ed25519 public key or private seed.
pub const KEY_BYTES: usize = 32;

/// Bytes in an Ed25519 signature.
pub const SIGNATURE_BYTES: usize = 64;

/// A module's identity: blake3 of its bytes.
pub type ModuleHash = [u8; 32];

/// An actor signer's public key (Ed25519).
pub type SignerKey = [u8; KEY_BYTES];

/// What a module's signature covers: a domain tag, the actor's name, the version, the
/// module's length and hash. The name and version are inside, so a signature for billing v3
/// cannot be replayed to make it balancing, or v9.
pub fn signed_message(name: &str, version: u32, len: u32, hash: &ModuleHash) -> Vec<u8> {
    let mut m = Vec::with_capacity(64 + name.len());
    m.extend_from_slice(b"ghatta-actor-module-v1\0");
    m.extend_from_slice(&(name.len() as u32).to_le_bytes());
    m.extend_from_slice(name.as_bytes());
    m.extend_from_slice(&version.to_le_bytes());
    m.extend_from_slice(&len.to_le_bytes());
    m.extend_from_slice(hash);
    m
}

/// What a deploy entry names: the module (by hash, its bytes staged by earlier chunks) and
/// who signed it for which actor and version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// The actor, by name (`balancing`, `billing`, `demand-response`).
    pub name: String,
    /// The version; higher than every version of this actor deployed before.
    pub version: u32,
    /// Module length, bytes.
    pub len: u32,
    /// blake3 of the module.
    pub hash: ModuleHash,
    /// The signer's public key.
    pub signer: SignerKey,
    /// Ed25519 over [`signed_message`] (64 bytes).
    pub signature: Vec<u8>,
}

impl Manifest {
    /// Whether the signature is the signer's over this manifest's fields.
    pub fn signature_ok(&self) -> bool {
        let Ok(key) = VerifyingKey::from_bytes(&self.signer) else {
            return false;
        };
        let Ok(sig) = <[u8; SIGNATURE_BYTES]>::try_from(self.signature.as_slice()) else {
            return false;
        };
        let message = signed_message(&self.name, self.version, self.len, &self.hash);
        // `verify_strict` refuses the malleable and small-order forms `verify` lets through,
        // so one module has one valid signature per key.
        key.verify_strict(&message, &Signature::from_bytes(&sig))
            .is_ok()
    }
}

/// The actor-module operations the log carries (`raft::Body::Actor`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ActorOp {
    /// A piece of the module with hash `hash`, at `offset`; staged until its deploy.
    Chunk {
        /// The module being uploaded.
        hash: ModuleHash,
        /// Where these bytes go in it.
        offset: u32,
        /// At most [`CHUNK_BYTES_MAX`].
        bytes: Vec<u8>,
    },
    /// Validate the staged module and, if every check passes, make it the actor's active one
    /// from this entry on.
    Deploy(Manifest),
    /// As [`ActorOp::Deploy`], checked now but cut over at the first entry whose log time
    /// reaches `at_ms` (at once if it already has).
    DeployAt {
        /// The module, as for a deploy.
        manifest: Manifest,
        /// Log time of the cut-over, Unix ms.
        at_ms: u64,
    },
    /// Make the version before the active one active again (or the compiled-in module when
    /// no deployed version precedes it).
    Rollback {
        /// The actor.
        name: String,
    },
    /// The first list of signers, from the proposing node's `actor_signers`: taken only while
    /// the replicated list is empty (see ARCHITECTURE.md, "Deployed actors").
    SeedSigners(Vec<SignerKey>),
}

impl ActorOp {
    /// Bytes this operation carries (counted against the forward budget).
    pub fn payload_bytes(&self) -> usize {
        match self {
            ActorOp::Chunk { bytes, .. } => bytes.len() + 36,
            ActorOp::Deploy(m) => m.name.len() + m.signature.len() + 76,
            ActorOp::DeployAt { manifest, .. } => {
                manifest.name.len() + manifest.signature.len() + 84
            }
            ActorOp::Rollback { name } => name.len(),
            ActorOp::SeedSigners(k) => k.len() * KEY_BYTES,
        }
    }
}

/// The text form of a signer key (node.toml `actor_signers`, `operator.pub`): base64, or 64
/// hex digits.
pub fn parse_signer(text: &str) -> Result<SignerKey, String> {
    let t = text.trim();
    let bytes = if t.len() == 2 * KEY_BYTES && t.bytes().all(|b| b.is_ascii_hexdigit()) {
        (0..KEY_BYTES)
            .map(|i| u8::from_str_radix(&t[2 * i..2 * i + 2], 16))
            .collect::<Result<Vec<u8>, _>>()
            .map_err(|e| e.to_string())?
    } else {
        BASE64.decode(t).map_err(|e| {
            format!("`{t}` is neither base64 nor 64 hex digits ({e}): copy operator.pub's line")
        })?
    };
    let key: SignerKey = bytes.try_into().map_err(|b: Vec<u8>| {
        format!(
            "`{t}` is {} bytes, an Ed25519 public key is {KEY_BYTES}",
            b.len()
        )
    })?;
    VerifyingKey::from_bytes(&key)
        .map_err(|_| format!("`{t}` is not a valid Ed25519 public key"))?;
    Ok(key)
}

/// A signer key's text form (base64).
pub fn signer_text(key: &SignerKey) -> String {
    BASE64.encode(key)
}

/// Lower-case hex of a module hash.
pub fn hash_hex(hash: &ModuleHash) -> String {
    hash.iter().map(|b| format!("{b:02x}")).collect()
}

/// The private signing key's file name in `ghatta actor keygen --out DIR`.
pub const SIGNING_KEY_FILE: &str = "operator.key";
/// The public key's file name beside it.
pub const SIGNER_PUB_FILE: &str = "operator.pub";

/// An operator's signing key (kept off the boards: it signs modules on the operator's
/// machine, and only its public half goes into node.toml).
pub struct OperatorKey(SigningKey);

impl OperatorKey {
    /// A fresh key from the operating system's random source.
    pub fn generate() -> std::io::Result<OperatorKey> {
        let mut seed = [0u8; KEY_BYTES];
        ghatta_proto::keys::os_random(&mut seed)?;
        Ok(OperatorKey(SigningKey::from_bytes(&seed)))
    }

    /// The key whose private seed is `seed` (Ed25519's 32 bytes): the simulator's operator,
    /// derived from the world seed so a run signs alike every time. A board's keys come from
    /// [`OperatorKey::generate`].
    pub fn from_seed(seed: [u8; KEY_BYTES]) -> OperatorKey {
        OperatorKey(SigningKey::from_bytes(&seed))
    }

    /// The public half.
    pub fn public(&self) -> SignerKey {
        self.0.verifying_key().to_bytes()
    }

    /// Signs a module for `name` at `version`.
    pub fn sign(&self, name: &str, version: u32, module: &[u8]) -> Manifest {
        let hash = *blake3::hash(module).as_bytes();
        let len = u32::try_from(module.len()).unwrap_or(u32::MAX);
        let signature = self
            .0
            .sign(&signed_message(name, version, len, &hash))
            .to_bytes()
            .to_vec();
        Manifest {
            name: name.to_string(),
            version,
            len,
            hash,
            signer: self.public(),
            signature,
        }
    }

    /// Reads a key file written by [`OperatorKey::write_new`] (base64 seed on its first
    /// non-comment line).
    pub fn load(path: &Path) -> Result<OperatorKey, ghatta_proto::keys::KeyError> {
        let problem = |p: String| ghatta_proto::keys::KeyError {
            path: path.to_path_buf(),
            problem: p,
        };
        let meta = std::fs::metadata(path).map_err(|e| {
            problem(format!(
                "cannot read it ({e}); make one with `ghatta actor keygen --out DIR`"
            ))
        })?;
        if meta.len() > ghatta_proto::keys::MAX_KEY_FILE_BYTES {
            return Err(problem(format!(
                "{} bytes is no signing key file (at most {}): point --sign-key at operator.key",
                meta.len(),
                ghatta_proto::keys::MAX_KEY_FILE_BYTES
            )));
        }
        let text =
            std::fs::read_to_string(path).map_err(|e| problem(format!("cannot read it ({e})")))?;
        let line = text
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty() && !l.starts_with('#'))
            .ok_or_else(|| {
                problem("it holds no key: make one with `ghatta actor keygen`".into())
            })?;
        let seed: [u8; KEY_BYTES] = BASE64
            .decode(line)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| {
                problem(
                    "not a signing key (base64 of 32 bytes): make one with `ghatta actor keygen`"
                        .into(),
                )
            })?;
        Ok(OperatorKey(SigningKey::from_bytes(&seed)))
    }

    /// Writes DIR/operator.key (0600) and DIR/operator.pub, never over existing files.
    pub fn write_new(&self, dir: &Path) -> Result<(), ghatta_proto::keys::KeyError> {
        std::fs::create_dir_all(dir).map_err(|e| ghatta_proto::keys::KeyError {
            path: dir.to_path_buf(),
            problem: format!("cannot create the directory ({e})"),
        })?;
        let private = format!(
            "# ghatta actor signing key: signs modules for `ghatta actor deploy`; keep it off the boards\n{}\n",
            BASE64.encode(self.0.to_bytes())
        );
        ghatta_proto::keys::write_new(&dir.join(SIGNING_KEY_FILE), private.as_bytes(), 0o600)?;
        let public = format!(
            "# list this in every node's actor_signers\n{}\n",
            signer_text(&self.public())
        );
        ghatta_proto::keys::write_new(&dir.join(SIGNER_PUB_FILE), public.as_bytes(), 0o644)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_covers_name_version_and_bytes() {
        let key = OperatorKey::generate().unwrap();
        let m = key.sign("billing", 3, b"\0asm module");
        assert!(m.signature_ok());
        for tampered in [
            Manifest {
                name: "balancing".into(),
                ..m.clone()
            },
            Manifest {
                version: 4,
                ..m.clone()
            },
            Manifest {
                len: 3,
                ..m.clone()
            },
            Manifest {
                hash: [7; 32],
                ..m.clone()
            },
            Manifest {
                signature: vec![0; 64],
                ..m.clone()
            },
            Manifest {
                signature: vec![0; 12],
                ..m.clone()
            },
            Manifest {
                signer: OperatorKey::generate().unwrap().public(),
                ..m.clone()
            },
        ] {
            assert!(!tampered.signature_ok(), "{tampered:?}");
        }
    }

    #[test]
    fn signer_text_round_trips_in_both_forms() {
        let k = OperatorKey::generate().unwrap().public();
        assert_eq!(parse_signer(&signer_text(&k)).unwrap(), k);
        let hex: String = k.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(parse_signer(&hex).unwrap(), k);
        assert!(parse_signer("AAAA").unwrap_err().contains("bytes"));
    }

    #[test]
    fn key_files_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let key = OperatorKey::generate().unwrap();
        key.write_new(dir.path()).unwrap();
        let back = OperatorKey::load(&dir.path().join(SIGNING_KEY_FILE)).unwrap();
        assert_eq!(back.public(), key.public());
        let pub_text = std::fs::read_to_string(dir.path().join(SIGNER_PUB_FILE)).unwrap();
        let line = pub_text.lines().find(|l| !l.starts_with('#')).unwrap();
        assert_eq!(parse_signer(line).unwrap(), key.public());
        assert!(key.write_new(dir.path()).is_err(), "never overwritten");
    }
}
