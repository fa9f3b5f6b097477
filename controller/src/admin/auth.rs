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
/// The operator-credit permission's token file in the data directory: a second secret, made
/// beside the admin token, that `POST /operator-credit` also needs (header
/// [`CREDIT_HEADER`]). Credit by amount has no token to prove the office sold it, so whoever
/// holds only the admin token (a field technician entering tokens and meter swaps) cannot mint
/// money.
pub const CREDIT_TOKEN_FILE: &str = "operator-credit.token";
/// The header that carries the operator-credit token.
pub const CREDIT_HEADER: &str = "x-ghatta-operator-credit";
use ghatta_proto::token::{self, TokenError};
pub use ghatta_proto::token::{MAX_TOKEN_FILE_BYTES, TOKEN_BYTES};

/// The admin token and where it lives.
#[derive(Clone)]
pub struct AdminAuth {
    token: Arc<str>,
    credit_token: Arc<str>,
    credit_path: Arc<Path>,
    path: Arc<Path>,
}

impl std::fmt::Debug for AdminAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminAuth")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// A token file's problem, said for the board's operator.
fn admin_error(e: TokenError) -> AdminError {
    let shown = |p: &Path| p.display().to_string();
    match e {
        TokenError::Unreadable { path, source } => AdminError::TokenUnreadable {
            path: shown(&path),
            source,
        },
        TokenError::TooLarge { path, len } => AdminError::TokenTooLarge {
            path: shown(&path),
            len,
        },
        TokenError::Exposed { path, mode } => AdminError::TokenExposed {
            path: shown(&path),
            mode,
        },
        TokenError::Empty { path } => AdminError::TokenEmpty { path: shown(&path) },
        TokenError::Format { path } => AdminError::TokenFormat { path: shown(&path) },
        TokenError::Create { path, detail } => AdminError::TokenCreate {
            path: shown(&path),
            detail,
        },
        other => AdminError::TokenCreate {
            path: String::new(),
            detail: other.to_string(),
        },
    }
}

/// Read a token file (trimmed), refusing one other users may read and anything not in the
/// format the node writes (`ghatta_proto::token`).
pub fn read_token(path: &Path) -> Result<String, AdminError> {
    token::read(path).map_err(admin_error)
}

impl AdminAuth {
    /// The token in `data_dir`, made (mode 0600, fsynced) when absent.
    pub fn load_or_create(data_dir: &Path) -> Result<AdminAuth, AdminError> {
        let path: PathBuf = data_dir.join(TOKEN_FILE);
        let token = token::load_or_create(&path).map_err(admin_error)?;
        let credit_path: PathBuf = data_dir.join(CREDIT_TOKEN_FILE);
        let credit_token = token::load_or_create(&credit_path).map_err(admin_error)?;
        Ok(AdminAuth {
            token: token.into(),
            credit_token: credit_token.into(),
            credit_path: credit_path.into(),
            path: path.into(),
        })
    }

    /// Where the token file is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn accepts(&self, presented: &str) -> bool {
        token::matches(&self.token, presented)
    }

    /// Whether `presented` is the operator-credit token.
    pub fn accepts_credit(&self, presented: &str) -> bool {
        token::matches(&self.credit_token, presented)
    }

    /// Where the operator-credit token file is.
    pub fn credit_path(&self) -> &Path {
        &self.credit_path
    }
}

/// Middleware: reads pass; anything else needs the bearer token.
pub async fn require_token(State(auth): State<AdminAuth>, req: Request, next: Next) -> Response {
    if req.method() == Method::GET || req.method() == Method::HEAD {
        return next.run(req).await;
    }
    let presented = token::bearer(
        req.headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok()),
    );
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
