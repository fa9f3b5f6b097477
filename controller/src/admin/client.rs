//! A minimal HTTP/1.1 client for the CLI's admin calls (loopback only: no TLS, no redirects),
//! so the binary does not carry a full HTTP client stack.

use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::error::ClientError;

/// Admin calls give up after this long (a proposal may wait for an election).
pub const ADMIN_CALL_TIMEOUT: Duration = Duration::from_secs(40);
/// Largest response accepted.
pub const MAX_RESPONSE_BYTES: usize = 4 * 1024 * 1024;

/// GET or POST `path` on the admin API at `addr`; returns the JSON body of a 2xx answer.
pub async fn call(
    addr: &str,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> Result<Value, ClientError> {
    call_with_token(addr, method, path, body, None).await
}

/// As [`call`], with `Authorization: Bearer <token>` (needed for every change).
pub async fn call_with_token(
    addr: &str,
    method: &str,
    path: &str,
    body: Option<&Value>,
    token: Option<&str>,
) -> Result<Value, ClientError> {
    call_with_headers(addr, method, path, body, token, &[]).await
}

/// As [`call_with_token`], with extra headers (the operator-credit permission's).
pub async fn call_with_headers(
    addr: &str,
    method: &str,
    path: &str,
    body: Option<&Value>,
    token: Option<&str>,
    headers: &[(&str, &str)],
) -> Result<Value, ClientError> {
    tokio::time::timeout(
        ADMIN_CALL_TIMEOUT,
        call_inner(addr, method, path, body, token, headers),
    )
    .await
    .map_err(|_| ClientError::Timeout {
        addr: addr.into(),
        method: method.into(),
        path: path.into(),
        timeout_s: ADMIN_CALL_TIMEOUT.as_secs(),
    })?
}

async fn call_inner(
    addr: &str,
    method: &str,
    path: &str,
    body: Option<&Value>,
    token: Option<&str>,
    headers: &[(&str, &str)],
) -> Result<Value, ClientError> {
    let mut s = TcpStream::connect(addr)
        .await
        .map_err(|source| ClientError::Unreachable {
            addr: addr.into(),
            source,
        })?;
    let broke = |source| ClientError::Io {
        addr: addr.into(),
        source,
    };
    let malformed = |what: &str| ClientError::Malformed {
        addr: addr.into(),
        what: what.into(),
    };
    let payload = body.map(|b| b.to_string()).unwrap_or_default();
    let mut auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    for (name, value) in headers {
        // A header split over lines would inject others: the CLI passes only token files'
        // contents here, checked by `read_token`, but the client does not rely on it.
        if name.contains(['\r', '\n']) || value.contains(['\r', '\n']) {
            return Err(malformed("a request header with a line break"));
        }
        auth.push_str(&format!("{name}: {value}\r\n"));
    }
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{payload}",
        payload.len()
    );
    s.write_all(req.as_bytes()).await.map_err(broke)?;
    let mut buf = Vec::new();
    (&mut s)
        .take(MAX_RESPONSE_BYTES as u64 + 1)
        .read_to_end(&mut buf)
        .await
        .map_err(broke)?;
    if buf.len() > MAX_RESPONSE_BYTES {
        return Err(malformed(&format!("more than {MAX_RESPONSE_BYTES} bytes")));
    }
    let text = String::from_utf8_lossy(&buf);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| malformed("a response without an HTTP header"))?;
    let code: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| malformed("a response without a status code"))?;
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_string()
    };
    let json: Value =
        serde_json::from_str(body.trim()).unwrap_or(Value::String(body.trim().to_string()));
    if !(200..300).contains(&code) {
        let msg = json
            .get("error")
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| json.to_string());
        return Err(ClientError::Refused {
            method: method.into(),
            path: path.into(),
            addr: addr.into(),
            code,
            message: msg,
        });
    }
    Ok(json)
}

fn dechunk(body: &str) -> String {
    let mut out = String::new();
    let mut rest = body;
    while let Some((size, after)) = rest.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || after.len() < n {
            break;
        }
        out.push_str(&after[..n]);
        rest = after[n..].trim_start_matches("\r\n");
    }
    out
}
