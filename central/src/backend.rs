//! The central's storage seam: [`Store`], what the WAN ingest and the HTTP routes need of a
//! store, and [`Backend`], the two implementations it is served by (the embedded redb file,
//! the default; PostgreSQL with `--database`).
//!
//! Every implementation keeps the same promise: [`Store::ingest`] stores a batch's records,
//! moves the (grid, stream) cursor and records the dedupe keys in one transaction, durable
//! before it returns; the ack it answers is what the grid may forget up to. A replayed or
//! overlapping batch stores nothing twice; a batch that would leave a hole answers a gap ack
//! and stores nothing; a malformed batch is an error and stores nothing (so it is not acked).

use std::future::Future;
use std::sync::Arc;

use ghatta_proto::wan::{AckBody, BatchBody};

use crate::error::StoreError;
use crate::pg::PgStore;
use crate::store::{
    EnergyHourRow, FleetRow, GridState, HourKey, LedgerKey, LedgerRow, Page, RedbStore, TimeRange,
};

/// What the central needs of a store: the WAN ingest, the cursor, and the HTTP routes'
/// queries with their paging (`crate::http::page`).
pub trait Store: Send + Sync + 'static {
    /// Store a batch of `grid` exactly once, in one transaction, durable before the answer;
    /// answers the ack to send.
    fn ingest(
        &self,
        grid: u64,
        batch: BatchBody,
    ) -> impl Future<Output = Result<AckBody, StoreError>> + Send;

    /// Next expected seq of (grid, stream): every record below it is stored.
    fn cursor(
        &self,
        grid: u64,
        stream: u32,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// One page of a grid's ledger (one customer's with `Some`) in (customer, seq) order:
    /// rows whose log time is in `range`, after `after`, at most `limit` (capped at
    /// `PAGE_ROWS_MAX`). `next` is set when more rows may follow.
    fn ledger_page(
        &self,
        grid: u64,
        customer: Option<u32>,
        range: TimeRange,
        after: Option<LedgerKey>,
        limit: usize,
    ) -> impl Future<Output = Result<Page<LedgerRow, LedgerKey>, StoreError>> + Send;

    /// One page of a grid's hourly energy with the hour's start in `range`, in (hour,
    /// subject) order, after `after`, at most `limit` (capped at `PAGE_ROWS_MAX`).
    fn energy_hours_page(
        &self,
        grid: u64,
        range: TimeRange,
        after: Option<HourKey>,
        limit: usize,
    ) -> impl Future<Output = Result<Page<EnergyHourRow, HourKey>, StoreError>> + Send;

    /// Energy billed per local day of a grid: (local day number since 1970-01-01, Wh),
    /// ascending; the sum of its customers' energy hours, each placed by its start and the
    /// offset it carries (hours never cross a local midnight). The open hour is not in it.
    fn energy_per_day(
        &self,
        grid: u64,
    ) -> impl Future<Output = Result<Vec<(u64, u64)>, StoreError>> + Send;

    /// The grid's UTC offset, minutes, in force at each of `times` (log time, Unix ms), as
    /// its energy hours say: that of the newest hour starting at or before the time, or of
    /// its first hour for a time before every hour; 0 (UTC) for a grid that sent no hours.
    /// For exports' local timestamps of lines that carry no offset (the ledger).
    fn utc_offsets_at(
        &self,
        grid: u64,
        times: Vec<u64>,
    ) -> impl Future<Output = Result<Vec<i32>, StoreError>> + Send;

    /// The fleet: every grid that uploaded, by grid id, at most `limit` (the HTTP route asks
    /// for `FLEET_GRIDS_MAX` + 1 to tell a cut-short list): its last upload and its cursor
    /// per stream.
    fn fleet(&self, limit: usize)
    -> impl Future<Output = Result<Vec<FleetRow>, StoreError>> + Send;

    /// The latest state of a grid and its customers' newest ledger lines (by customer);
    /// `None` before its first upload.
    fn grid_state(
        &self,
        grid: u64,
    ) -> impl Future<Output = Result<Option<(GridState, Vec<LedgerRow>)>, StoreError>> + Send;
}

/// Runs a redb call on a blocking thread: its commit fsyncs, which must not stall the
/// runtime's workers that serve other grids.
async fn blocking<T: Send + 'static>(
    store: &Arc<RedbStore>,
    f: impl FnOnce(&RedbStore) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    let s = store.clone();
    tokio::task::spawn_blocking(move || f(&s))
        .await
        .map_err(|e| StoreError::Task(e.to_string()))?
}

impl Store for Arc<RedbStore> {
    async fn ingest(&self, grid: u64, batch: BatchBody) -> Result<AckBody, StoreError> {
        blocking(self, move |s| s.ingest(grid, &batch)).await
    }

    async fn cursor(&self, grid: u64, stream: u32) -> Result<u64, StoreError> {
        RedbStore::cursor(self, grid, stream)
    }

    async fn ledger_page(
        &self,
        grid: u64,
        customer: Option<u32>,
        range: TimeRange,
        after: Option<LedgerKey>,
        limit: usize,
    ) -> Result<Page<LedgerRow, LedgerKey>, StoreError> {
        blocking(self, move |s| {
            s.ledger_page(grid, customer, range, after, limit)
        })
        .await
    }

    async fn energy_hours_page(
        &self,
        grid: u64,
        range: TimeRange,
        after: Option<HourKey>,
        limit: usize,
    ) -> Result<Page<EnergyHourRow, HourKey>, StoreError> {
        blocking(self, move |s| {
            s.energy_hours_page(grid, range, after, limit)
        })
        .await
    }

    async fn energy_per_day(&self, grid: u64) -> Result<Vec<(u64, u64)>, StoreError> {
        RedbStore::energy_per_day(self, grid)
    }

    async fn utc_offsets_at(&self, grid: u64, times: Vec<u64>) -> Result<Vec<i32>, StoreError> {
        blocking(self, move |s| s.utc_offsets_at(grid, &times)).await
    }

    async fn fleet(&self, limit: usize) -> Result<Vec<FleetRow>, StoreError> {
        blocking(self, move |s| s.fleet(limit)).await
    }

    async fn grid_state(
        &self,
        grid: u64,
    ) -> Result<Option<(GridState, Vec<LedgerRow>)>, StoreError> {
        RedbStore::grid_state(self, grid)
    }
}

/// The store a central runs on, chosen at start (`--data` alone: redb; `--database`:
/// PostgreSQL).
#[derive(Clone)]
pub enum Backend {
    /// The embedded redb file (`central.redb` in `--data`).
    Redb(Arc<RedbStore>),
    /// A PostgreSQL database (`--database postgres://...`).
    Postgres(PgStore),
}

impl Store for Backend {
    async fn ingest(&self, grid: u64, batch: BatchBody) -> Result<AckBody, StoreError> {
        match self {
            Backend::Redb(s) => s.ingest(grid, batch).await,
            Backend::Postgres(s) => s.ingest(grid, batch).await,
        }
    }

    async fn cursor(&self, grid: u64, stream: u32) -> Result<u64, StoreError> {
        match self {
            Backend::Redb(s) => Store::cursor(s, grid, stream).await,
            Backend::Postgres(s) => s.cursor(grid, stream).await,
        }
    }

    async fn ledger_page(
        &self,
        grid: u64,
        customer: Option<u32>,
        range: TimeRange,
        after: Option<LedgerKey>,
        limit: usize,
    ) -> Result<Page<LedgerRow, LedgerKey>, StoreError> {
        match self {
            Backend::Redb(s) => Store::ledger_page(s, grid, customer, range, after, limit).await,
            Backend::Postgres(s) => s.ledger_page(grid, customer, range, after, limit).await,
        }
    }

    async fn energy_hours_page(
        &self,
        grid: u64,
        range: TimeRange,
        after: Option<HourKey>,
        limit: usize,
    ) -> Result<Page<EnergyHourRow, HourKey>, StoreError> {
        match self {
            Backend::Redb(s) => Store::energy_hours_page(s, grid, range, after, limit).await,
            Backend::Postgres(s) => s.energy_hours_page(grid, range, after, limit).await,
        }
    }

    async fn energy_per_day(&self, grid: u64) -> Result<Vec<(u64, u64)>, StoreError> {
        match self {
            Backend::Redb(s) => Store::energy_per_day(s, grid).await,
            Backend::Postgres(s) => s.energy_per_day(grid).await,
        }
    }

    async fn utc_offsets_at(&self, grid: u64, times: Vec<u64>) -> Result<Vec<i32>, StoreError> {
        match self {
            Backend::Redb(s) => Store::utc_offsets_at(s, grid, times).await,
            Backend::Postgres(s) => s.utc_offsets_at(grid, times).await,
        }
    }

    async fn fleet(&self, limit: usize) -> Result<Vec<FleetRow>, StoreError> {
        match self {
            Backend::Redb(s) => Store::fleet(s, limit).await,
            Backend::Postgres(s) => s.fleet(limit).await,
        }
    }

    async fn grid_state(
        &self,
        grid: u64,
    ) -> Result<Option<(GridState, Vec<LedgerRow>)>, StoreError> {
        match self {
            Backend::Redb(s) => Store::grid_state(s, grid).await,
            Backend::Postgres(s) => s.grid_state(grid).await,
        }
    }
}
