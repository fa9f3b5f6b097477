//! ghatta-central: the data-center side of the WAN. Accepts batches from many grids over
//! encrypted channels (`ghatta_proto::wan::channel`: each grid authenticates with an X25519 key
//! the central lists for its grid id, the central with its own key pair), stores them (in
//! redb, the embedded default, or PostgreSQL: [`Store`]) durably before acknowledging, dedupes by (grid, stream, seq), acknowledges the
//! highest contiguous sequence per (grid, stream), and serves HTTP/JSON (and CSV) queries on a
//! separate loopback port.
//!
//! Live versus back-filled: a record is marked `backfill` when it arrives more than
//! `backfill_after_ms` after its log time (it was buffered through an outage), or when it is
//! older than the newest value already stored for that customer. The latest-state views
//! (balance per customer, last event per grid) are only ever replaced by a record at least as
//! new, so back-fill never overwrites a newer live value.
//!
//! Code map: [`backend`] (the [`Store`] trait the ingest and the HTTP routes go through, and
//! [`Backend`], its two implementations), [`store`] (the redb tables, ingest in one
//! transaction, the queries; [`CentralStore`], the connection handler over a backend), [`pg`]
//! (the PostgreSQL schema, migrations, ingest and queries), [`serve`]
//! (one grid connection: handshake, batches in, acks out; the TCP accept loop), [`http`] (the
//! query API), [`localtime`] (local days and ISO-8601 text with a grid's offset), [`error`] (what a person sees when it fails). `src/main.rs` is the command
//! line. It shares only `ghatta-proto` with the board's node.
#![forbid(unsafe_code)]

pub mod backend;
pub mod error;
pub mod fleet;
pub mod http;
pub mod localtime;
pub mod ops;
pub mod pg;
pub mod serve;
pub mod setup;
pub mod store;
#[cfg(test)]
mod store_suite;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod view_suite;

use std::net::SocketAddr;
use std::path::PathBuf;

use ghatta_proto::keys::SecretKey;
use ghatta_proto::wan::channel::AllowedGrids;
use tokio::net::TcpListener;

pub use self::backend::{Backend, Store};
pub use self::error::{StartError, StoreError};
pub use self::http::access::HttpAccess;
pub use self::pg::PgStore;
pub use self::store::{
    CentralStats, CentralStatsSnapshot, CentralStore, EnergyHourRow, FLEET_GRIDS_MAX, FleetRow,
    FoldedDayRow, FoldedKey, GridState, HourKey, LedgerKey, LedgerRow, PAGE_ROWS_DEFAULT,
    PAGE_ROWS_MAX, PAGE_SCAN_ROWS_MAX, Page, RedbStore, StoredRecord, TimeRange,
};

/// Concurrent grid connections. A country's programme is a few hundred grids with one
/// connection per stream each; beyond this, grids wait and retry with backoff.
pub const MAX_CONNECTIONS: usize = 2048;
/// A record arriving this long after its log time is back-fill (it waited out an outage).
/// 15 min: well above normal upload delay (seconds), well below the hours an outage lasts.
pub const BACKFILL_AFTER_MS_DEFAULT: u64 = 15 * 60 * 1000;
/// A connection has this long to complete its handshake: a satellite round trip is at most
/// ~2 s, so 30 s only ever cuts off peers that connect and say nothing (which would otherwise
/// hold one of the [`MAX_CONNECTIONS`] slots forever).
pub const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);
/// An authenticated connection that brings no batch for this long is closed. An uploader
/// with records sends a window of batches per round trip, and one with none hangs up itself
/// after 10 minutes (`ghatta::wan::client::SESSION_IDLE_CLOSE`): 15 min of silence is a half-open TCP
/// connection whose grid rebooted or lost its satellite link, or a peer holding one of the
/// [`MAX_CONNECTIONS`] slots; the grid reconnects (one handshake) when it has records again.
pub const IDLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(15 * 60);
/// One day, ms (energy per day is summed by local day: `localtime`).
pub const DAY_MS: u64 = 86_400_000;

#[derive(Debug, Clone)]
pub struct CentralConfig {
    /// Batch listener (grids connect here over the WAN), host:port.
    pub listen: String,
    /// HTTP/JSON query listener; keep it on loopback (operators reach it through SSH).
    pub http_listen: String,
    /// Directory of `central.redb` (the embedded store) and of the default HTTP token file.
    pub data_dir: PathBuf,
    /// A PostgreSQL URL (`postgres://user@host:port/db`): store there instead of in
    /// `central.redb`.
    pub database: Option<String>,
    /// The central's own private key (grids hold its public half as `wan.central_public_key`).
    pub secret: SecretKey,
    /// The public keys allowed per grid id.
    pub grids: AllowedGrids,
    /// See [`BACKFILL_AFTER_MS_DEFAULT`].
    pub backfill_after_ms: u64,
    /// The HTTP API's bearer-token file; `None`: `http.token` in `data_dir`. Made (mode
    /// 0600) at first start.
    pub http_token_file: Option<PathBuf>,
    /// Host names the HTTP API answers to besides loopback (`--http-host`), e.g. the name
    /// the office's reverse proxy forwards under.
    pub http_hosts: Vec<String>,
    /// Keep this many whole months before the current one; older rows are removed at start
    /// and daily (`ops::retention_task`). `None`: keep everything.
    pub retention_months: Option<u32>,
}

/// A running central: its store plus the TCP batch listener and the HTTP API (every query of
/// [`CentralStore`] is available on it, behind [`HttpAccess`]). Dropping it stops its listeners.
pub struct Central {
    store: CentralStore,
    /// Where grids connect.
    pub batch_addr: SocketAddr,
    /// Where the HTTP API listens.
    pub http_addr: SocketAddr,
    /// The HTTP API's token and host names.
    pub http_access: HttpAccess,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Central {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl std::ops::Deref for Central {
    type Target = CentralStore;

    fn deref(&self) -> &CentralStore {
        &self.store
    }
}

impl Central {
    /// Open the store and start both listeners.
    pub async fn start(cfg: CentralConfig) -> Result<Central, StartError> {
        let token_file = cfg
            .http_token_file
            .clone()
            .unwrap_or_else(|| cfg.data_dir.join(http::access::TOKEN_FILE));
        let store = match &cfg.database {
            None => {
                CentralStore::open(&cfg.data_dir, cfg.secret, cfg.grids, cfg.backfill_after_ms)?
            }
            Some(url) => CentralStore::with_backend(
                Backend::Postgres(PgStore::connect(url, cfg.backfill_after_ms).await?),
                cfg.secret,
                cfg.grids,
            ),
        };
        let http_access = HttpAccess::load_or_create(&token_file, &cfg.http_hosts)?;
        let listen = |what: &'static str, addr: &str| {
            let addr = addr.to_string();
            move |source| StartError::Listen { what, addr, source }
        };
        let batch = TcpListener::bind(&cfg.listen)
            .await
            .map_err(listen("grids", &cfg.listen))?;
        let http = TcpListener::bind(&cfg.http_listen)
            .await
            .map_err(listen("HTTP queries", &cfg.http_listen))?;
        let batch_addr = batch.local_addr().map_err(listen("grids", &cfg.listen))?;
        let http_addr = http
            .local_addr()
            .map_err(listen("HTTP queries", &cfg.http_listen))?;
        let mut tasks = Vec::new();
        tasks.push(tokio::spawn(serve::accept_loop(batch, store.clone())));
        if let Some(months) = cfg.retention_months {
            tasks.push(tokio::spawn(ops::retention_task(
                store.backend().clone(),
                months,
            )));
        }
        let router = http::router(store.inner.clone(), http_access.clone());
        tasks.push(tokio::spawn(async move {
            if let Err(e) = axum::serve(http, router).await {
                tracing::error!(error = %e, "central HTTP API stopped");
            }
        }));
        Ok(Central {
            store,
            batch_addr,
            http_addr,
            http_access,
            tasks,
        })
    }

    /// The store behind the listeners (to serve connections that do not come through TCP).
    pub fn store(&self) -> &CentralStore {
        &self.store
    }
}
