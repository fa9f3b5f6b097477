//! Streamed answers: a route that may cover a customer's year (a ledger, energy hours, a
//! grid's events) writes its rows as the store hands them over, a sub-page of
//! [`STREAM_CHUNK_ROWS`] at a time (axum `Body::from_stream`), so the central holds one
//! sub-page in memory whatever the range, and the client sees the first rows at once.
//!
//! `limit` is optional here: without it the whole time range streams; with it at most that
//! many rows do. JSON ends with `"next"`: the cursor to pass as `after` when the limit cut it
//! short, else null. CSV has no trailer (a cursor header would have to be known before the
//! first row): its key columns are the cursor, so a client resumes an interrupted or limited
//! download with `after` = the last line's key. A store error mid-stream aborts the response
//! (the HTTP client sees the transfer cut, never a short answer that looks whole).

use std::collections::BTreeMap;
use std::future::Future;

use axum::body::Body;
use axum::http::header;
use axum::response::{IntoResponse, Response};

use super::page::Cursor;
use crate::error::StoreError;
use crate::store::{Page, TimeRange};

/// Rows read from the store per sub-page of a streamed answer: ~250 KB of JSON, one short
/// index scan; large enough that a year of a customer's ledger is a few dozen reads.
pub const STREAM_CHUNK_ROWS: usize = 1_000;

/// What a streamed route was asked: its time window, where to start, how many rows at most.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamRequest<K> {
    /// Rows in this window (log time, or an hour's start).
    pub range: TimeRange,
    /// Start after this key.
    pub after: Option<K>,
    /// At most this many rows; `None`: the whole range.
    pub limit: Option<u64>,
}

/// Parse a streamed route's query string (the paged routes' parameters, `limit` unbounded);
/// the error says which parameter and what it takes.
pub fn parse<K: Cursor>(q: &BTreeMap<String, String>) -> Result<StreamRequest<K>, String> {
    let mut bounded = q.clone();
    let limit = match bounded.remove("limit") {
        None => None,
        Some(v) => match v.parse::<u64>() {
            Ok(0) => return Err("limit=0 asks for nothing; give 1 or more".into()),
            Ok(n) => Some(n),
            Err(_) => {
                return Err(format!(
                    "limit=`{v}` is not a whole number (a row count; leave it out for the whole range)"
                ));
            }
        },
    };
    let r = super::page::parse::<K>(&bounded).map_err(|e| {
        if e.contains("unknown query parameter") {
            format!("{e} (limit is optional on this route: without it the whole range streams)")
        } else {
            e
        }
    })?;
    Ok(StreamRequest {
        range: r.range,
        after: r.after,
        limit,
    })
}

/// The form of a streamed answer.
pub enum Format {
    /// `{"rows":[...],"next":...}`.
    Json,
    /// `head` (the header line, with its newline), then one line per row.
    Csv(&'static str),
}

/// Where a stream is.
struct State<K, F> {
    fetch: F,
    after: Option<K>,
    /// Rows still allowed by the limit.
    left: u64,
    /// Rows written so far (JSON needs a comma before every row but the first).
    written: u64,
    /// The store said no row follows.
    ended: bool,
    /// The head is written.
    started: bool,
    /// The tail is written.
    done: bool,
}

/// A streamed answer of the rows `fetch(after, n)` hands over page by page, each written by
/// `row` (a JSON value or a CSV line with its newline), at most `limit` rows.
pub fn respond<T, K, F, Fut, R>(
    fetch: F,
    after: Option<K>,
    limit: Option<u64>,
    format: Format,
    row: R,
) -> Response
where
    T: Send + 'static,
    K: Cursor + Clone + Send + 'static,
    F: FnMut(Option<K>, usize) -> Fut + Send + 'static,
    Fut: Future<Output = Result<Page<T, K>, StoreError>> + Send + 'static,
    R: Fn(&T) -> String + Send + 'static,
{
    let json = matches!(format, Format::Json);
    let head = match format {
        Format::Json => "{\"rows\":[",
        Format::Csv(h) => h,
    };
    let state = State {
        fetch,
        after,
        left: limit.unwrap_or(u64::MAX),
        written: 0,
        ended: false,
        started: false,
        done: false,
    };
    let body = futures::stream::unfold((state, row), move |(mut st, row)| async move {
        if st.done {
            return None;
        }
        if !st.started {
            st.started = true;
            return Some((Ok(head.to_string()), (st, row)));
        }
        if st.ended || st.left == 0 {
            st.done = true;
            if !json {
                return None;
            }
            // Cut by the limit: more may follow after the last row written.
            let next = match (&st.after, st.ended) {
                (Some(k), false) => serde_json::Value::String(k.to_text()),
                _ => serde_json::Value::Null,
            };
            return Some((Ok(format!("],\"next\":{next}}}")), (st, row)));
        }
        let n = usize::try_from(st.left)
            .unwrap_or(usize::MAX)
            .min(STREAM_CHUNK_ROWS);
        let page = match (st.fetch)(st.after.clone(), n).await {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(error = %e, "a streamed answer was cut: the store failed");
                st.done = true;
                return Some((Err(e), (st, row)));
            }
        };
        let mut chunk = String::new();
        for r in &page.rows {
            if json && st.written > 0 {
                chunk.push(',');
            }
            chunk.push_str(&row(r));
            st.written += 1;
        }
        st.left = st.left.saturating_sub(page.rows.len() as u64);
        match page.next {
            Some(k) => st.after = Some(k),
            None => st.ended = true,
        }
        Some((Ok(chunk), (st, row)))
    });
    let content_type = if json { "application/json" } else { "text/csv" };
    (
        [(header::CONTENT_TYPE, content_type)],
        Body::from_stream(body),
    )
        .into_response()
}
