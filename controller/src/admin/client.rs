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
    // Split as bytes: a chunk's size counts bytes, which a lossy text would change.
    let split = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| malformed("a response without an HTTP header"))?;
    let head = String::from_utf8_lossy(&buf[..split]);
    let raw = &buf[split + 4..];
    let code: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| malformed("a response without a status code"))?;
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        ghatta_proto::chunked::decode_text(raw)
            .map_err(|e| malformed(&format!("a body that does not decode ({e})")))?
    } else {
        String::from_utf8_lossy(raw).into_owned()
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A one-shot server that answers the first request with `answer`; its address.
    async fn answering(answer: &'static [u8]) -> String {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = l.local_addr().expect("addr").to_string();
        tokio::spawn(async move {
            let (mut s, _) = l.accept().await.expect("accept");
            let mut req = [0u8; 4096];
            let _ = s.read(&mut req).await;
            let _ = s.write_all(answer).await;
        });
        addr
    }

    #[tokio::test]
    async fn a_chunked_answer_is_joined_and_a_malformed_one_is_an_error() {
        let ok = answering(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n6\r\n{\"a\": \r\n2\r\n1}\r\n0\r\n\r\n",
        )
        .await;
        let v = call(&ok, "GET", "/v1/status", None).await.expect("joined");
        assert_eq!(v, serde_json::json!({ "a": 1 }));
        // A proxy or a broken node cutting the stream, or a size that is not hex: an error
        // that says so, not a partial body read as the answer.
        for bad in [
            &b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n6\r\n{\"a\": \r\n2\r\n1"[..],
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nxyz\r\n{}\r\n0\r\n\r\n",
        ] {
            let addr = answering(bad).await;
            let err = call(&addr, "GET", "/v1/status", None)
                .await
                .expect_err("malformed");
            assert!(
                matches!(err, ClientError::Malformed { .. })
                    && err.to_string().contains("chunked HTTP body"),
                "{err}"
            );
        }
    }
}
