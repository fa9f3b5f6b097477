//! The admin token: every request that changes something (any method but GET and HEAD) needs
//! `Authorization: Bearer <token>`, the token being the contents of `admin.token` in the data
//! directory (created with mode 0600 at first start). Reads stay open on loopback.
//!
//! The admin API listens on loopback, so the token stops other local users and processes
//! (a compromised web UI, a script run by the wrong account) from changing the grid; the CLI
//! reads the file itself, so an operator with access to the data directory never types it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::error::AdminError;

/// The token's file in the data directory.
pub const TOKEN_FILE: &str = "admin.token";
/// Random bytes in a token (256 bits, written as 64 hex digits).
pub const TOKEN_BYTES: usize = 32;
/// Largest token file read: 64 hex digits and a newline; more is not a token file.
pub const MAX_TOKEN_FILE_BYTES: u64 = 1024;

/// The admin token and where it lives.
#[derive(Clone)]
pub struct AdminAuth {
    token: Arc<str>,
    path: Arc<Path>,
}

impl std::fmt::Debug for AdminAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminAuth")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// Read a token file (trimmed), refusing one other users may read.
pub fn read_token(path: &Path) -> Result<String, AdminError> {
    let shown = || path.display().to_string();
    let meta = std::fs::metadata(path).map_err(|source| AdminError::TokenUnreadable {
        path: shown(),
        source,
    })?;
    if meta.len() > MAX_TOKEN_FILE_BYTES {
        return Err(AdminError::TokenTooLarge {
            path: shown(),
            len: meta.len(),
        });
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(AdminError::TokenExposed {
                path: shown(),
                mode,
            });
        }
    }
    let text = std::fs::read_to_string(path).map_err(|source| AdminError::TokenUnreadable {
        path: shown(),
        source,
    })?;
    let token = text.trim_end_matches('\n').to_string();
    if token.is_empty() {
        return Err(AdminError::TokenEmpty { path: shown() });
    }
    // Exactly what `load_or_create` writes: any other file (a key, a password file) is not
    // sent to an admin API as a bearer token.
    if token.len() != 2 * TOKEN_BYTES || !token.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(AdminError::TokenFormat { path: shown() });
    }
    Ok(token)
}

impl AdminAuth {
    /// The token in `data_dir`, made (mode 0600, fsynced) when absent.
    pub fn load_or_create(data_dir: &Path) -> Result<AdminAuth, AdminError> {
        let path: PathBuf = data_dir.join(TOKEN_FILE);
        let create = |detail: String| AdminError::TokenCreate {
            path: path.display().to_string(),
            detail,
        };
        std::fs::create_dir_all(data_dir).map_err(|e| create(e.to_string()))?;
        if !path.exists() {
            let mut b = [0u8; TOKEN_BYTES];
            ghatta_proto::keys::os_random(&mut b).map_err(|e| create(e.to_string()))?;
            let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
            ghatta_proto::keys::write_new(&path, format!("{hex}\n").as_bytes(), 0o600)
                .map_err(|e| create(e.to_string()))?;
        }
        let token = read_token(&path)?;
        Ok(AdminAuth {
            token: token.into(),
            path: path.into(),
        })
    }

    /// Where the token file is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn accepts(&self, presented: &str) -> bool {
        let (a, b) = (self.token.as_bytes(), presented.as_bytes());
        // Compare in time independent of where the first difference is.
        a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }
}

/// Middleware: reads pass; anything else needs the bearer token.
pub async fn require_token(State(auth): State<AdminAuth>, req: Request, next: Next) -> Response {
    if req.method() == Method::GET || req.method() == Method::HEAD {
        return next.run(req).await;
    }
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    match presented {
        Some(t) if auth.accepts(t) => next.run(req).await,
        other => {
            let what = if other.is_some() {
                "wrong admin token"
            } else {
                "this change needs the admin token"
            };
            (
                StatusCode::UNAUTHORIZED,
                axum::Json(json!({
                    "error": format!(
                        "{what}: send `Authorization: Bearer <token>` with the token in {} (the ghatta CLI reads that file itself when run as the node's user or root)",
                        auth.path.display()
                    )
                })),
            )
                .into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_is_made_once_0600_and_compared_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let a = AdminAuth::load_or_create(dir.path()).unwrap();
        let b = AdminAuth::load_or_create(dir.path()).unwrap();
        assert_eq!(a.token, b.token, "the token survives restarts");
        assert_eq!(a.token.len(), 2 * TOKEN_BYTES);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(a.path()).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert!(a.accepts(&a.token));
        assert!(!a.accepts(&a.token[1..]));
        assert!(!a.accepts(&a.token.replace(&a.token[..1], "x")));
        assert!(!a.accepts(""));
    }

    /// Only a file in the format the node writes is read as a token: a private key or any
    /// other small 0600 file is refused, not sent to whoever answers on the admin port.
    #[cfg(unix)]
    #[test]
    fn only_a_token_file_in_ghattas_format_is_read() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, text: &str| {
            let p = dir.path().join(name);
            std::fs::write(&p, text).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
            p
        };
        let good = write("good", &format!("{}\n", "ab".repeat(TOKEN_BYTES)));
        assert_eq!(read_token(&good).unwrap(), "ab".repeat(TOKEN_BYTES));
        for (name, text) in [
            (
                "key",
                "# ghatta node key\nSwJyGCjvubMeCXwiup3XS5VANYuJMc0ZW+KYOVftWDg=\n",
            ),
            ("short", "abcdef\n"),
            ("spaced", &format!(" {}\n", "ab".repeat(TOKEN_BYTES))),
        ] {
            let p = write(name, text);
            assert!(
                matches!(read_token(&p), Err(AdminError::TokenFormat { .. })),
                "{name}: {:?}",
                read_token(&p)
            );
        }
    }
}
