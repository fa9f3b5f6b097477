//! Bearer-token files, as both programs keep them: the board's `admin.token` and the central's
//! `http.token`. A token is 32 random bytes written as 64 hex digits and a newline, in a file
//! of mode 0600 made at first start; a client reads the file itself (never a path a server
//! names), and only a file in exactly this format is read, so a key or a password file is
//! never sent to whoever answers on a port.

use std::path::{Path, PathBuf};

/// Random bytes in a token (256 bits, written as 64 hex digits).
pub const TOKEN_BYTES: usize = 32;
/// Largest token file read: 64 hex digits and a newline; more is not a token file.
pub const MAX_TOKEN_FILE_BYTES: u64 = 1024;

/// What is wrong with a token file; the caller says whose token it is and what to do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// The file cannot be read.
    #[error("cannot read {path}: {source}")]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is far too large to be a token.
    #[error("{path}: {len} bytes is not a token file")]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Its size, bytes.
        len: u64,
    },
    /// Other users may read the file.
    #[error("{path} is readable by other users (mode {mode:o})")]
    Exposed {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The file holds nothing.
    #[error("{path} is empty")]
    Empty {
        /// The file.
        path: PathBuf,
    },
    /// The file holds something else than a token as ghatta writes it.
    #[error("{path} does not hold a token as ghatta writes it (64 hex digits)")]
    Format {
        /// The file.
        path: PathBuf,
    },
    /// The token could not be made.
    #[error("cannot create {path}: {detail}")]
    Create {
        /// The file.
        path: PathBuf,
        /// Why.
        detail: String,
    },
}

/// Read a token file (the trailing newline dropped), refusing one other users may read or
/// one that is not in the format [`load_or_create`] writes.
pub fn read(path: &Path) -> Result<String, TokenError> {
    let meta = std::fs::metadata(path).map_err(|source| TokenError::Unreadable {
        path: path.into(),
        source,
    })?;
    if meta.len() > MAX_TOKEN_FILE_BYTES {
        return Err(TokenError::TooLarge {
            path: path.into(),
            len: meta.len(),
        });
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(TokenError::Exposed {
                path: path.into(),
                mode,
            });
        }
    }
    let text = std::fs::read_to_string(path).map_err(|source| TokenError::Unreadable {
        path: path.into(),
        source,
    })?;
    let token = text.trim_end_matches('\n');
    if token.is_empty() {
        return Err(TokenError::Empty { path: path.into() });
    }
    if token.len() != 2 * TOKEN_BYTES || !token.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(TokenError::Format { path: path.into() });
    }
    Ok(token.to_string())
}

/// The token in `path`, made first (mode 0600, fsynced, its directory created) when absent.
pub fn load_or_create(path: &Path) -> Result<String, TokenError> {
    let create = |detail: String| TokenError::Create {
        path: path.into(),
        detail,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| create(e.to_string()))?;
    }
    if !path.exists() {
        let mut b = [0u8; TOKEN_BYTES];
        crate::keys::os_random(&mut b).map_err(|e| create(e.to_string()))?;
        let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
        crate::keys::write_new(path, format!("{hex}\n").as_bytes(), 0o600)
            .map_err(|e| create(e.to_string()))?;
    }
    read(path)
}

/// Whether `presented` is `token`, compared in time independent of where the first
/// difference is (a timing side channel would let a local process guess it byte by byte).
pub fn matches(token: &str, presented: &str) -> bool {
    let (a, b) = (token.as_bytes(), presented.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The token an HTTP request presents as `Authorization: Bearer <token>`, if any.
pub fn bearer(authorization: Option<&str>) -> Option<&str> {
    authorization
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_made_once_0600_and_compared_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/http.token");
        let a = load_or_create(&path).unwrap();
        let b = load_or_create(&path).unwrap();
        assert_eq!(a, b, "the token survives restarts");
        assert_eq!(a.len(), 2 * TOKEN_BYTES);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert!(matches(&a, &a));
        assert!(!matches(&a, &a[1..]));
        assert!(!matches(&a, &format!("{}x", &a[1..])));
        assert!(!matches(&a, ""));
        assert_eq!(bearer(Some(&format!("Bearer {a}"))), Some(a.as_str()));
        assert_eq!(bearer(Some(&format!("Basic {a}"))), None);
        assert_eq!(bearer(None), None);
    }

    #[cfg(unix)]
    #[test]
    fn only_a_private_file_in_ghattas_format_is_read() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, text: &str, mode: u32| {
            let p = dir.path().join(name);
            std::fs::write(&p, text).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
            p
        };
        let good = write("good", &format!("{}\n", "ab".repeat(TOKEN_BYTES)), 0o600);
        assert_eq!(read(&good).unwrap(), "ab".repeat(TOKEN_BYTES));
        let key = write(
            "key",
            "# ghatta node key\nSwJyGCjvubMeCXwiup3XS5VANYuJMc0ZW+KYOVftWDg=\n",
            0o600,
        );
        assert!(matches!(read(&key), Err(TokenError::Format { .. })));
        let empty = write("empty", "\n", 0o600);
        assert!(matches!(read(&empty), Err(TokenError::Empty { .. })));
        let open = write("open", &format!("{}\n", "ab".repeat(TOKEN_BYTES)), 0o644);
        assert!(matches!(read(&open), Err(TokenError::Exposed { .. })));
        let big = write("big", &"a".repeat(2000), 0o600);
        assert!(matches!(read(&big), Err(TokenError::TooLarge { .. })));
    }
}
