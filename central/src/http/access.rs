//! Who may read the office's data: every route but `/v1/health` needs the bearer token of
//! `<data>/http.token` (made at first start, mode 0600), and every request must name this
//! server in its `Host` header.
//!
//! The API serves every grid's per-customer ledger, so an open port would hand a village's
//! payments to any local process (or any machine, if someone binds it to 0.0.0.0 to "make it
//! work"). The Host check stops a web page the office's browser opens from reading the API
//! through DNS rebinding (its requests carry the attacker's host name, not this server's).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use ghatta_proto::token;
use serde_json::json;

/// The token's file in the central's data directory.
pub const TOKEN_FILE: &str = "http.token";
/// The one route open without a token: a load balancer's or a monitor's liveness probe. It
/// says only that the server answers.
pub const HEALTH_PATH: &str = "/v1/health";
/// Host names always accepted (with any port): the loopback names an operator's SSH tunnel
/// or a local script uses.
pub const LOOPBACK_HOSTS: [&str; 4] = ["localhost", "127.0.0.1", "[::1]", "::1"];

/// The token and the host names the HTTP API answers to.
#[derive(Clone)]
pub struct HttpAccess {
    token: Arc<str>,
    path: Arc<Path>,
    hosts: Arc<BTreeSet<String>>,
}

impl std::fmt::Debug for HttpAccess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpAccess")
            .field("path", &self.path)
            .field("hosts", &self.hosts)
            .finish_non_exhaustive()
    }
}

impl HttpAccess {
    /// The token in `token_file` (made when absent) and the extra host names (beyond
    /// [`LOOPBACK_HOSTS`]) the API answers to, lower-case, without a port.
    pub fn load_or_create(
        token_file: &Path,
        extra_hosts: &[String],
    ) -> Result<HttpAccess, token::TokenError> {
        let token = token::load_or_create(token_file)?;
        Ok(HttpAccess::new(
            token,
            token_file.to_path_buf(),
            extra_hosts,
        ))
    }

    /// From a token already read.
    pub fn new(token: String, path: PathBuf, extra_hosts: &[String]) -> HttpAccess {
        let hosts = LOOPBACK_HOSTS
            .iter()
            .map(|h| (*h).to_string())
            .chain(extra_hosts.iter().map(|h| h.trim().to_ascii_lowercase()))
            .collect();
        HttpAccess {
            token: token.into(),
            path: path.into(),
            hosts: Arc::new(hosts),
        }
    }

    /// Where the token file is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The token (for the central's own tests and tools that start it in-process).
    pub fn token(&self) -> &str {
        &self.token
    }

    /// Whether a `Host` header value (`name` or `name:port`, IPv6 in brackets) names us.
    pub fn host_allowed(&self, host: &str) -> bool {
        let host = host.trim().to_ascii_lowercase();
        let name = if host.starts_with('[') {
            // [::1]:7780 -> [::1]
            host.split_inclusive(']').next().unwrap_or("")
        } else {
            host.split(':').next().unwrap_or("")
        };
        self.hosts.contains(name)
    }
}

fn refuse(status: StatusCode, message: String) -> Response {
    (status, axum::Json(json!({ "error": message }))).into_response()
}

/// The HTML pages' path prefix: refused there, a browser is asked for Basic credentials.
pub const UI_PREFIX: &str = "/ui";

/// The password of `Authorization: Basic base64(user:password)`; `None` for anything else.
fn basic_password(authorization: Option<&str>) -> Option<String> {
    use base64::Engine;
    let b64 = authorization?.strip_prefix("Basic ")?.trim();
    let raw = base64::engine::general_purpose::STANDARD.decode(b64).ok()?;
    let text = String::from_utf8(raw).ok()?;
    Some(text.split_once(':')?.1.to_string())
}

/// Middleware: the Host check on every route, then the token on every route but
/// [`HEALTH_PATH`].
pub async fn require_access(
    State(access): State<HttpAccess>,
    req: Request,
    next: Next,
) -> Response {
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !access.host_allowed(host) {
        return refuse(
            StatusCode::MISDIRECTED_REQUEST,
            format!(
                "this central answers to {} (Host header `{host}`); reach it through an SSH tunnel to loopback, or start it with --http-host NAME for the name you use",
                access.hosts.iter().cloned().collect::<Vec<_>>().join(", ")
            ),
        );
    }
    if req.uri().path() == HEALTH_PATH {
        return next.run(req).await;
    }
    let authorization = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let page = req.uri().path().starts_with(UI_PREFIX);
    let presented = match token::bearer(authorization) {
        Some(t) => Some(t.to_string()),
        // A browser cannot send a bearer token without a script; it sends the Basic
        // credentials it prompted for on a page (the token as the password) with every
        // request to this origin, the pages' CSV links too. Every route is a read.
        None => basic_password(authorization),
    };
    match presented {
        Some(t) if token::matches(&access.token, &t) => next.run(req).await,
        other if page => (
            StatusCode::UNAUTHORIZED,
            [(
                header::WWW_AUTHENTICATE,
                "Basic realm=\"ghatta central\", charset=\"UTF-8\"",
            )],
            format!(
                "{}: give any user name and, as the password, the token in {} on the central",
                if other.is_some() {
                    "wrong token"
                } else {
                    "the central's pages need its HTTP token"
                },
                access.path.display()
            ),
        )
            .into_response(),
        other => refuse(
            StatusCode::UNAUTHORIZED,
            format!(
                "{}: send `Authorization: Bearer <token>` with the token in {} on the central (readable by the user that runs ghatta-central)",
                if other.is_some() {
                    "wrong token"
                } else {
                    "the central's data needs its HTTP token"
                },
                access.path.display()
            ),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_are_matched_by_name_whatever_the_port() {
        let a = HttpAccess::new("ab".repeat(32), "t".into(), &["Office.Example".into()]);
        for ok in [
            "localhost",
            "localhost:7780",
            "127.0.0.1:7780",
            "[::1]:7780",
            "office.example:80",
            "OFFICE.example",
        ] {
            assert!(a.host_allowed(ok), "{ok}");
        }
        for bad in [
            "",
            "evil.example",
            "127.0.0.1.evil.example",
            "localhost.evil:7780",
            "[::2]:7780",
        ] {
            assert!(!a.host_allowed(bad), "{bad}");
        }
    }
}
