//! What goes wrong around the admin API, said for the operator: the token file, the listener,
//! and the CLI's calls.

/// A problem with the admin token file or the admin listener.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AdminError {
    /// The token file cannot be read.
    #[error(
        "cannot read the admin token {path}: {source}; run as the user that runs the node (or root)"
    )]
    TokenUnreadable {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The file is far too large to be a token.
    #[error(
        "{path}: {len} bytes is not an admin token file; delete it and restart the node to make a new one"
    )]
    TokenTooLarge {
        /// The file.
        path: String,
        /// Its size.
        len: u64,
    },
    /// Other users may read the token.
    #[error(
        "{path}: the admin token is readable by other users (mode {mode:o}); run `chmod 600 {path}`"
    )]
    TokenExposed {
        /// The file.
        path: String,
        /// Its permission bits.
        mode: u32,
    },
    /// The file holds no token.
    #[error("{path} is empty; delete it and restart the node to make a new token")]
    TokenEmpty {
        /// The file.
        path: String,
    },
    /// The file holds something else than a token as ghatta writes it.
    #[error(
        "{path} does not hold an admin token (64 hex digits, as the node writes it); point --token-file at the node's admin.token, or delete it and restart the node to make a new one"
    )]
    TokenFormat {
        /// The file.
        path: String,
    },
    /// The token could not be made at first start.
    #[error(
        "cannot create the admin token {path}: {detail}; check that data_dir exists and this user may write there"
    )]
    TokenCreate {
        /// The file.
        path: String,
        /// Why.
        detail: String,
    },
    /// `admin_listen` (or `dashboard_listen`: `key`) is not an address.
    #[error("{key} `{addr}` is not host:port ({detail}); write it like 127.0.0.1:7100")]
    BadAddress {
        /// The node.toml key.
        key: &'static str,
        /// What was configured.
        addr: String,
        /// The parser's message.
        detail: String,
    },
    /// The listener could not bind.
    #[error(
        "cannot listen on {key} {addr}: {error}; is another ghatta or another program using that port? (change {key} or stop it)"
    )]
    Listen {
        /// The node.toml key.
        key: &'static str,
        /// The address.
        addr: String,
        /// Why (in the message, not a `source`: an error chain would print it twice).
        error: std::io::Error,
    },
}

/// Why an admin call from the CLI failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// Nothing answers at the address.
    #[error(
        "cannot reach the admin API at {addr}: {source}; is `ghatta run` up? (use --admin to point elsewhere)"
    )]
    Unreachable {
        /// The address tried.
        addr: String,
        /// Why.
        source: std::io::Error,
    },
    /// The connection broke off.
    #[error(
        "the admin API at {addr} broke off the call: {source}; retry, and check the node's log"
    )]
    Io {
        /// The address.
        addr: String,
        /// Why.
        source: std::io::Error,
    },
    /// No answer in time.
    #[error(
        "the admin API at {addr} did not answer {method} {path} within {timeout_s} s; a proposal may be waiting for an election: check `ghatta status`, then retry"
    )]
    Timeout {
        /// The address.
        addr: String,
        /// The method.
        method: String,
        /// The path.
        path: String,
        /// The limit, s.
        timeout_s: u64,
    },
    /// The answer is not HTTP as the node speaks it.
    #[error("the admin API at {addr} sent {what}; is something else listening there?")]
    Malformed {
        /// The address.
        addr: String,
        /// What was wrong.
        what: String,
    },
    /// The node refused the call.
    #[error("{method} {path} on {addr} failed ({code}): {message}")]
    Refused {
        /// The method.
        method: String,
        /// The path.
        path: String,
        /// The address.
        addr: String,
        /// The HTTP status.
        code: u16,
        /// The node's own message.
        message: String,
    },
}
