//! Node key pairs: X25519 static keys, their files (`ghatta keygen`), and the text form of a
//! public key in node.toml (base64, or 64 hex digits).

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;

/// Bytes in an X25519 key.
pub const KEY_BYTES: usize = 32;
/// The private key's file name in `keygen --out DIR`.
pub const PRIVATE_KEY_FILE: &str = "node.key";
/// The public key's file name in `keygen --out DIR`.
pub const PUBLIC_KEY_FILE: &str = "node.pub";
/// Largest key file read. A key is 44 characters of base64 plus a comment line; 4 KiB leaves
/// room for comments and stops a `key_file` pointed at a disk image from being read whole.
pub const MAX_KEY_FILE_BYTES: u64 = 4096;

/// A key file problem, naming the file and what to do.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {problem}")]
pub struct KeyError {
    /// The file.
    pub path: PathBuf,
    /// What is wrong and what to do.
    pub problem: String,
}

fn key_err(path: &Path, problem: impl Into<String>) -> KeyError {
    KeyError {
        path: path.to_path_buf(),
        problem: problem.into(),
    }
}

/// An X25519 public key.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PublicKey(pub [u8; KEY_BYTES]);

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.to_base64())
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_base64())
    }
}

/// Key text that is not a key, saying what a key looks like.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct KeyTextError(String);

/// Decode 32 key bytes from base64 (44 characters) or hex (64 digits).
fn decode_key_text(text: &str) -> Result<[u8; KEY_BYTES], KeyTextError> {
    let text = text.trim();
    let bytes = if text.len() == 2 * KEY_BYTES && text.bytes().all(|b| b.is_ascii_hexdigit()) {
        (0..KEY_BYTES)
            .map(|i| u8::from_str_radix(&text[2 * i..2 * i + 2], 16))
            .collect::<Result<Vec<u8>, _>>()
            .map_err(|e| KeyTextError(format!("`{text}` is not hex ({e})")))?
    } else {
        BASE64.decode(text).map_err(|e| {
            KeyTextError(format!(
                "`{text}` is neither 64 hex digits nor base64 ({e})"
            ))
        })?
    };
    bytes.try_into().map_err(|b: Vec<u8>| {
        KeyTextError(format!(
            "a key is {KEY_BYTES} bytes (44 base64 characters or 64 hex digits); this one is {} bytes",
            b.len()
        ))
    })
}

impl PublicKey {
    /// Parse the text form (base64 or hex), as `ghatta keygen` prints it.
    pub fn parse(text: &str) -> Result<PublicKey, KeyTextError> {
        decode_key_text(text).map(PublicKey)
    }

    /// Base64 (what node.toml shows).
    pub fn to_base64(&self) -> String {
        BASE64.encode(self.0)
    }

    /// Lowercase hex.
    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// An X25519 private key. Its `Debug` shows only the public half; the bytes are zeroed on
/// drop.
#[derive(Clone)]
pub struct SecretKey(x25519_dalek::StaticSecret);

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretKey(public {})", self.public())
    }
}

/// Fill `buf` from the operating system's random source.
pub fn os_random(buf: &mut [u8]) -> std::io::Result<()> {
    use rand::TryRngCore;
    rand::rngs::OsRng
        .try_fill_bytes(buf)
        .map_err(|e| std::io::Error::other(format!("the OS random source failed: {e}")))
}

impl SecretKey {
    /// A new random key from the OS random source.
    pub fn generate() -> std::io::Result<SecretKey> {
        let mut b = [0u8; KEY_BYTES];
        os_random(&mut b)?;
        Ok(SecretKey::from_bytes(b))
    }

    /// A key from its 32 bytes (tests and the demo's throwaway keys).
    pub fn from_bytes(bytes: [u8; KEY_BYTES]) -> SecretKey {
        SecretKey(x25519_dalek::StaticSecret::from(bytes))
    }

    /// The public half.
    pub fn public(&self) -> PublicKey {
        PublicKey(x25519_dalek::PublicKey::from(&self.0).to_bytes())
    }

    /// The private key's bytes, for a protocol library that takes raw keys (the WAN's Noise
    /// handshake, `wan::channel`). The caller zeroes its copy when done.
    pub fn to_bytes(&self) -> [u8; KEY_BYTES] {
        self.0.to_bytes()
    }

    /// Diffie-Hellman with a peer's public key; `None` when the peer's key is a low-order
    /// point (not a real key: the secret would be predictable).
    pub fn agree(&self, peer: &PublicKey) -> Option<[u8; KEY_BYTES]> {
        let shared = self
            .0
            .diffie_hellman(&x25519_dalek::PublicKey::from(peer.0));
        shared.was_contributory().then(|| shared.to_bytes())
    }

    /// Read a private key file written by `ghatta keygen`. Refuses a file other users may
    /// read (on Unix).
    pub fn load(path: &Path) -> Result<SecretKey, KeyError> {
        let meta = std::fs::metadata(path).map_err(|e| {
            key_err(
                path,
                format!(
                    "cannot read the node's private key ({e}); create one with `ghatta keygen --out DIR` and set key_file"
                ),
            )
        })?;
        if meta.len() > MAX_KEY_FILE_BYTES {
            return Err(key_err(
                path,
                format!(
                    "{} bytes is not a key file (at most {MAX_KEY_FILE_BYTES}); point key_file at the node.key `ghatta keygen` wrote",
                    meta.len()
                ),
            ));
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                return Err(key_err(
                    path,
                    format!(
                        "the private key is readable by other users (mode {mode:o}); run `chmod 600 {}`",
                        path.display()
                    ),
                ));
            }
        }
        let text = std::fs::read_to_string(path)
            .map_err(|e| key_err(path, format!("cannot read: {e}")))?;
        let line = key_line(&text).ok_or_else(|| {
            key_err(
                path,
                "no key in the file; it should hold the base64 line `ghatta keygen` wrote",
            )
        })?;
        decode_key_text(line)
            .map(SecretKey::from_bytes)
            .map_err(|e| key_err(path, e.to_string()))
    }
}

/// The one non-comment, non-blank line of a key file.
fn key_line(text: &str) -> Option<&str> {
    text.lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'))
}

/// Read a public key file (`node.pub`).
pub fn load_public(path: &Path) -> Result<PublicKey, KeyError> {
    let meta = std::fs::metadata(path).map_err(|e| key_err(path, format!("cannot read: {e}")))?;
    if meta.len() > MAX_KEY_FILE_BYTES {
        return Err(key_err(path, "too large to be a public key file"));
    }
    let text = std::fs::read_to_string(path).map_err(|e| key_err(path, e.to_string()))?;
    let line = key_line(&text).ok_or_else(|| key_err(path, "no key in the file"))?;
    PublicKey::parse(line).map_err(|e| key_err(path, e.to_string()))
}

/// What `ghatta keygen` wrote.
#[derive(Debug)]
pub struct Generated {
    /// The private key file (mode 0600).
    pub private_path: PathBuf,
    /// The public key file.
    pub public_path: PathBuf,
    /// The public key.
    pub public: PublicKey,
}

/// Write a new key pair into `dir` (created if missing): `node.key` (mode 0600) and
/// `node.pub`. Refuses to overwrite either file: a node's key is its identity in the cluster.
pub fn generate_into(dir: &Path) -> Result<Generated, KeyError> {
    std::fs::create_dir_all(dir)
        .map_err(|e| key_err(dir, format!("cannot create the directory: {e}")))?;
    let private_path = dir.join(PRIVATE_KEY_FILE);
    let public_path = dir.join(PUBLIC_KEY_FILE);
    for p in [&private_path, &public_path] {
        if p.exists() {
            return Err(key_err(
                p,
                "already exists; a node's key is its identity in the cluster, so keygen never overwrites one. Use another --out directory, or delete the old files if you really mean to replace this node's key (then update public_key in every node's config)",
            ));
        }
    }
    let secret = SecretKey::generate().map_err(|e| key_err(&private_path, e.to_string()))?;
    let public = secret.public();
    let private_text = format!(
        "# ghatta node private key (X25519, base64). Keep it secret: mode 0600, never copy it off this board.\n{}\n",
        BASE64.encode(secret.0.to_bytes())
    );
    write_new(&private_path, private_text.as_bytes(), 0o600)?;
    let public_text = format!(
        "# ghatta node public key (X25519): put it in every node's config as this node's public_key.\n{}\n",
        public.to_base64()
    );
    write_new(&public_path, public_text.as_bytes(), 0o644)?;
    Ok(Generated {
        private_path,
        public_path,
        public,
    })
}

/// Create `path` (failing if it exists) with `mode`, write `bytes`, fsync.
pub fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<(), KeyError> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    let mut f = opts
        .open(path)
        .map_err(|e| key_err(path, format!("cannot create: {e}")))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(|e| key_err(path, format!("cannot write: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keygen_writes_0600_refuses_overwrite_and_loads_back() {
        let dir = tempfile::tempdir().unwrap();
        let g = generate_into(dir.path()).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&g.private_path)
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let secret = SecretKey::load(&g.private_path).unwrap();
        assert_eq!(secret.public(), g.public);
        assert_eq!(load_public(&g.public_path).unwrap(), g.public);
        let e = generate_into(dir.path()).unwrap_err();
        assert!(e.to_string().contains("never overwrites"), "{e}");
        // The original key is untouched.
        assert_eq!(SecretKey::load(&g.private_path).unwrap().public(), g.public);
    }

    #[cfg(unix)]
    #[test]
    fn a_private_key_others_can_read_is_refused_with_the_fix() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let g = generate_into(dir.path()).unwrap();
        std::fs::set_permissions(&g.private_path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = SecretKey::load(&g.private_path).unwrap_err();
        assert!(e.to_string().contains("chmod 600"), "{e}");
    }

    #[test]
    fn public_keys_parse_from_base64_and_hex() {
        let k = SecretKey::from_bytes([7; 32]).public();
        assert_eq!(PublicKey::parse(&k.to_base64()), Ok(k));
        assert_eq!(PublicKey::parse(&k.to_hex()), Ok(k));
        assert!(
            PublicKey::parse("AAAA")
                .unwrap_err()
                .to_string()
                .contains("this one is 3 bytes")
        );
        assert!(PublicKey::parse("not a key!").is_err());
    }

    #[test]
    fn low_order_public_keys_are_refused() {
        let s = SecretKey::from_bytes([9; 32]);
        assert!(s.agree(&PublicKey([0; 32])).is_none());
        let other = SecretKey::from_bytes([3; 32]);
        assert_eq!(s.agree(&other.public()), other.agree(&s.public()));
    }
}
