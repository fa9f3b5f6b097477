//! Who may do what on the admin listener and the dashboard's:
//! - every change (any method but GET and HEAD) needs `Authorization: Bearer <token>`, the
//!   token being the contents of `admin.token` in the data directory (created with mode 0600
//!   at first start); the CLI reads the file itself, so an operator with access to the data
//!   directory never types it;
//! - reads (the pages, `status`, the customer lookups) are open to a client on the board
//!   itself (a loopback peer); from any other address they need the token too, or a login:
//!   `GET /login` is a form where the operator types the admin token once, answered with a
//!   session cookie ([`SESSION_TTL`]) that lets that browser read. A session never authorizes
//!   a change, and a change needs a header a page on another site cannot make a browser send,
//!   so no cross-site request can change the grid (the CSRF defence is that cookies carry no
//!   power to change).
//!
//! Without a login, anyone on the village Wi-Fi would read every customer's balance; the
//! board serves plain HTTP, so the token and the cookie cross that Wi-Fi in clear, which
//! deploy/README.md says (an SSH tunnel is the safer way in).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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
    sessions: Arc<Mutex<Sessions>>,
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
            sessions: Arc::default(),
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

/// How long a login lets a browser read: a working day in the powerhouse.
pub const SESSION_TTL: Duration = Duration::from_secs(8 * 3_600);
/// Sessions held at once; the oldest is dropped past it (a board has a handful of operators,
/// and each login must not grow the node's memory without bound).
pub const SESSIONS_MAX: usize = 64;
/// The session cookie's name.
pub const SESSION_COOKIE: &str = "ghatta_session";

/// Live logins: id -> when it ends. Time is passed in.
#[derive(Debug, Default)]
pub struct Sessions {
    live: std::collections::HashMap<String, Instant>,
}

impl Sessions {
    /// A new session id (32 random bytes, hex), valid until `now + SESSION_TTL`.
    pub fn open(&mut self, now: Instant) -> String {
        self.live.retain(|_, end| *end > now);
        if self.live.len() >= SESSIONS_MAX
            && let Some(oldest) = self
                .live
                .iter()
                .min_by_key(|(_, end)| **end)
                .map(|(id, _)| id.clone())
        {
            self.live.remove(&oldest);
        }
        let mut b = [0u8; 32];
        // The OS's randomness cannot fail on Linux after boot; a zero id would be refused
        // below rather than shared.
        let _ = ghatta_proto::keys::os_random(&mut b);
        let id: String = b.iter().map(|x| format!("{x:02x}")).collect();
        self.live.insert(id.clone(), now + SESSION_TTL);
        id
    }

    /// Whether `id` is a live session at `now`.
    pub fn valid(&self, id: &str, now: Instant) -> bool {
        id.len() == 64
            && id.bytes().any(|c| c != b'0')
            && self.live.get(id).is_some_and(|end| *end > now)
    }
}

/// The session id a request's cookies carry, if any.
fn session_cookie(req: &Request) -> Option<&str> {
    req.headers()
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|kv| kv.trim().strip_prefix(SESSION_COOKIE)?.strip_prefix('='))
}

/// The peer's address as the server learnt it (`into_make_service_with_connect_info`).
type Peer = Result<
    axum::extract::ConnectInfo<std::net::SocketAddr>,
    axum::extract::rejection::ExtensionRejection,
>;

/// Middleware: reads pass from loopback, or with the token or a login; changes need the
/// bearer token; `/login` is open (it checks the token itself).
/// A request whose peer is unknown (served without connection info) counts as remote: reads
/// then need a login, never the reverse.
pub async fn require_token(
    State(auth): State<AdminAuth>,
    peer: Peer,
    req: Request,
    next: Next,
) -> Response {
    let from_loopback = peer.is_ok_and(|c| c.0.ip().is_loopback());
    let presented = token::bearer(
        req.headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok()),
    );
    let bearer_ok = presented.is_some_and(|t| auth.accepts(t));
    if req.uri().path() == LOGIN_PATH {
        return next.run(req).await;
    }
    if req.method() == Method::GET || req.method() == Method::HEAD {
        let session_ok = session_cookie(&req).is_some_and(|id| {
            auth.sessions
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .valid(id, Instant::now())
        });
        if bearer_ok || session_ok || from_loopback {
            return next.run(req).await;
        }
        let path = req.uri().path();
        if path == "/" || path.starts_with("/ui/") {
            return axum::response::Redirect::to(LOGIN_PATH).into_response();
        }
        return (
            StatusCode::UNAUTHORIZED,
            axum::Json(json!({
                "error": format!(
                    "reading {path} from another machine needs a login: send `Authorization: Bearer <token>` with the token in {}, or log in at {LOGIN_PATH} in a browser",
                    auth.path.display()
                )
            })),
        )
            .into_response();
    }
    match presented {
        Some(_) if bearer_ok => next.run(req).await,
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

/// The login route.
pub const LOGIN_PATH: &str = "/login";

fn login_page(node_id: u64, note: &str) -> String {
    let body = format!(
        "{note}<form method=\"post\" action=\"{LOGIN_PATH}\"><label>Admin token \
<input name=\"token\" type=\"password\" autocomplete=\"current-password\" size=\"40\"></label> \
<button>Log in</button></form><p>The token is in <code>admin.token</code> in the node's data \
directory. A login lets this browser read the pages for {h} hours; changes are made with the \
ghatta command on the board.</p>",
        h = SESSION_TTL.as_secs() / 3_600
    );
    super::cockpit::html::still_page("Log in", node_id, &body)
}

/// `GET /login`: the form.
pub async fn login_form(
    axum::extract::State(node): axum::extract::State<crate::node::Node>,
) -> axum::response::Html<String> {
    axum::response::Html(login_page(node.id(), ""))
}

/// `POST /login` with `token=<admin token>` (a form): a session cookie and the overview, or
/// the form again with why.
pub async fn login(
    axum::extract::State(node): axum::extract::State<crate::node::Node>,
    axum::extract::Extension(auth): axum::extract::Extension<AdminAuth>,
    body: String,
) -> Response {
    let presented = body
        .split('&')
        .find_map(|kv| kv.strip_prefix("token="))
        .unwrap_or("")
        .trim();
    if !auth.accepts(presented) {
        tracing::warn!("a dashboard login was refused: wrong admin token");
        return (
            StatusCode::UNAUTHORIZED,
            axum::response::Html(login_page(
                node.id(),
                "<p class=\"bad\">That is not this node's admin token.</p>",
            )),
        )
            .into_response();
    }
    let id = auth
        .sessions
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .open(Instant::now());
    let cookie = format!(
        "{SESSION_COOKIE}={id}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}",
        SESSION_TTL.as_secs()
    );
    (
        [(header::SET_COOKIE, cookie)],
        axum::response::Redirect::to("/"),
    )
        .into_response()
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

    #[test]
    fn sessions_end_after_their_time_and_stay_bounded() {
        let t0 = Instant::now();
        let mut s = Sessions::default();
        let id = s.open(t0);
        assert!(s.valid(&id, t0 + SESSION_TTL - Duration::from_secs(1)));
        assert!(!s.valid(&id, t0 + SESSION_TTL));
        assert!(!s.valid(&id[1..], t0), "a prefix is not the id");
        assert!(!s.valid(&"0".repeat(64), t0));
        let ids: Vec<String> = (0..SESSIONS_MAX as u64 + 5)
            .map(|i| s.open(t0 + Duration::from_millis(i)))
            .collect();
        assert_eq!(s.live.len(), SESSIONS_MAX);
        assert!(!s.valid(&ids[0], t0), "the oldest went first");
        assert!(s.valid(ids.last().unwrap(), t0));
    }

    /// One raw HTTP/1.0 request on loopback: (status code, body).
    async fn http(addr: std::net::SocketAddr, req: String) -> (u16, String) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(req.as_bytes()).await.unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).await.unwrap();
        let code = text
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        (code, text)
    }

    /// The middleware in front of stub routes, served on loopback with the peer address
    /// `peer` pretended (none: served without connection info).
    async fn serve(auth: AdminAuth, peer: Option<&str>) -> std::net::SocketAddr {
        use axum::routing::{get, post};
        let mut app = axum::Router::new()
            .route("/", get(|| async { "overview" }))
            .route("/status", get(|| async { "status" }))
            .route(LOGIN_PATH, get(|| async { "form" }))
            .route("/topup", post(|| async { "done" }))
            .layer(axum::middleware::from_fn_with_state(auth, require_token));
        if let Some(p) = peer {
            let p: std::net::SocketAddr = p.parse().unwrap();
            app = app.layer(axum::extract::connect_info::MockConnectInfo(p));
        }
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(l, app).await });
        addr
    }

    #[tokio::test]
    async fn from_the_lan_reading_needs_a_login_and_changing_the_token() {
        let dir = tempfile::tempdir().unwrap();
        let auth = AdminAuth::load_or_create(dir.path()).unwrap();
        let lan = serve(auth.clone(), Some("192.168.4.20:50000")).await;
        let get = |path: &str, extra: &str| format!("GET {path} HTTP/1.0\r\n{extra}\r\n");
        let post =
            |extra: &str| format!("POST /topup HTTP/1.0\r\nContent-Length: 0\r\n{extra}\r\n");

        let (code, body) = http(lan, get("/status", "")).await;
        assert_eq!(code, 401, "{body}");
        assert!(
            body.contains("/login") && body.contains(TOKEN_FILE),
            "{body}"
        );
        let (code, body) = http(lan, get("/", "")).await;
        assert!(code == 303 && body.contains("location: /login"), "{body}");
        assert_eq!(
            http(lan, get(LOGIN_PATH, "")).await.0,
            200,
            "the form is open"
        );
        assert_eq!(http(lan, post("")).await.0, 401);

        let bearer = format!("Authorization: Bearer {}\r\n", auth.token);
        assert_eq!(http(lan, get("/status", &bearer)).await.0, 200);
        assert_eq!(http(lan, post(&bearer)).await.0, 200);

        let id = auth.sessions.lock().unwrap().open(Instant::now());
        let cookie = format!("Cookie: theme=dark; {SESSION_COOKIE}={id}\r\n");
        assert_eq!(
            http(lan, get("/status", &cookie)).await.0,
            200,
            "a login reads"
        );
        let (code, body) = http(lan, post(&cookie)).await;
        assert_eq!(code, 401, "a login never changes anything: {body}");
        let forged = format!("Cookie: {SESSION_COOKIE}={}\r\n", "ab".repeat(32));
        assert_eq!(http(lan, get("/status", &forged)).await.0, 401);

        // On the board itself reads are open, changes are not.
        let local = serve(auth.clone(), Some("127.0.0.1:50000")).await;
        assert_eq!(http(local, get("/status", "")).await.0, 200);
        assert_eq!(http(local, post("")).await.0, 401);
        // A peer the server did not learn counts as remote.
        let unknown = serve(auth, None).await;
        assert_eq!(http(unknown, get("/status", "")).await.0, 401);
    }
}
