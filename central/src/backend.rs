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
use crate::fleet::Pruned;
use crate::pg::PgStore;
use crate::store::{
    EnergyHourRow, FleetRow, FoldedDayRow, FoldedKey, GridState, HourKey, LedgerKey, LedgerRow,
    Page, RedbStore, StoredRecord, TimeRange,
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

    /// One page of a (grid, stream)'s records with log time in `range`, in seq order after
    /// `after`, at most `limit` (capped at `PAGE_ROWS_MAX`).
    fn records_page(
        &self,
        grid: u64,
        stream: u32,
        range: TimeRange,
        after: Option<u64>,
        limit: usize,
    ) -> impl Future<Output = Result<Page<(u64, StoredRecord), u64>, StoreError>> + Send;

    /// A (grid, stream)'s records logged at or after `since_ms`, newest first, at most
    /// `max` (the fleet view's recent alarms).
    fn recent_records(
        &self,
        grid: u64,
        stream: u32,
        since_ms: u64,
        max: usize,
    ) -> impl Future<Output = Result<Vec<(u64, StoredRecord)>, StoreError>> + Send;

    /// Energy billed (Wh) and revenue (mpaisa: charges and fees) of a grid's ledger lines
    /// logged in `range` (the fleet view's "today").
    fn ledger_sums(
        &self,
        grid: u64,
        range: TimeRange,
    ) -> impl Future<Output = Result<(u64, i64), StoreError>> + Send;

    /// One page of one customer's energy hours with the hour's start in `range`, by hour,
    /// after the hour starting at `after`, at most `limit` (capped at `PAGE_ROWS_MAX`).
    fn customer_hours_page(
        &self,
        grid: u64,
        customer: u32,
        range: TimeRange,
        after: Option<u64>,
        limit: usize,
    ) -> impl Future<Output = Result<Page<EnergyHourRow, u64>, StoreError>> + Send;

    /// One page of a grid's folded days (`Output::Folded`; one customer's with `Some`) with
    /// the day's start in `range`, in (day start, seq) order after `after`, at most `limit`
    /// (capped at `PAGE_ROWS_MAX`).
    fn folded_days_page(
        &self,
        grid: u64,
        customer: Option<u32>,
        range: TimeRange,
        after: Option<FoldedKey>,
        limit: usize,
    ) -> impl Future<Output = Result<Page<FoldedDayRow, FoldedKey>, StoreError>> + Send;

    /// The retention setting: remove what was logged before `cutoff_ms` (a month's start:
    /// PostgreSQL detaches and drops whole monthly partitions that end by then, redb deletes
    /// rows). Cursors, grid states and customers' newest lines stay.
    fn prune_before(
        &self,
        cutoff_ms: u64,
    ) -> impl Future<Output = Result<Pruned, StoreError>> + Send;
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

    async fn records_page(
        &self,
        grid: u64,
        stream: u32,
        range: TimeRange,
        after: Option<u64>,
        limit: usize,
    ) -> Result<Page<(u64, StoredRecord), u64>, StoreError> {
        blocking(self, move |s| {
            s.records_page(grid, stream, range, after, limit)
        })
        .await
    }

    async fn recent_records(
        &self,
        grid: u64,
        stream: u32,
        since_ms: u64,
        max: usize,
    ) -> Result<Vec<(u64, StoredRecord)>, StoreError> {
        blocking(self, move |s| s.recent_records(grid, stream, since_ms, max)).await
    }

    async fn ledger_sums(&self, grid: u64, range: TimeRange) -> Result<(u64, i64), StoreError> {
        blocking(self, move |s| s.ledger_sums(grid, range)).await
    }

    async fn customer_hours_page(
        &self,
        grid: u64,
        customer: u32,
        range: TimeRange,
        after: Option<u64>,
        limit: usize,
    ) -> Result<Page<EnergyHourRow, u64>, StoreError> {
        blocking(self, move |s| {
            s.customer_hours_page(grid, customer, range, after, limit)
        })
        .await
    }

    async fn folded_days_page(
        &self,
        grid: u64,
        customer: Option<u32>,
        range: TimeRange,
        after: Option<FoldedKey>,
        limit: usize,
    ) -> Result<Page<FoldedDayRow, FoldedKey>, StoreError> {
        blocking(self, move |s| {
            s.folded_days_page(grid, customer, range, after, limit)
        })
        .await
    }

    async fn prune_before(&self, cutoff_ms: u64) -> Result<Pruned, StoreError> {
        blocking(self, move |s| s.prune_before(cutoff_ms)).await
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
            Backend::Postgres(s) => {
                s.run(move |s| async move { s.ingest(grid, batch).await })
                    .await
            }
        }
    }

    async fn cursor(&self, grid: u64, stream: u32) -> Result<u64, StoreError> {
        match self {
            Backend::Redb(s) => Store::cursor(s, grid, stream).await,
            Backend::Postgres(s) => {
                s.run(move |s| async move { s.cursor(grid, stream).await })
                    .await
            }
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
            Backend::Postgres(s) => {
                s.run(move |s| async move { s.ledger_page(grid, customer, range, after, limit).await })
                    .await
            },
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
            Backend::Postgres(s) => {
                s.run(move |s| async move { s.energy_hours_page(grid, range, after, limit).await })
                    .await
            }
        }
    }

    async fn energy_per_day(&self, grid: u64) -> Result<Vec<(u64, u64)>, StoreError> {
        match self {
            Backend::Redb(s) => Store::energy_per_day(s, grid).await,
            Backend::Postgres(s) => {
                s.run(move |s| async move { s.energy_per_day(grid).await })
                    .await
            }
        }
    }

    async fn utc_offsets_at(&self, grid: u64, times: Vec<u64>) -> Result<Vec<i32>, StoreError> {
        match self {
            Backend::Redb(s) => Store::utc_offsets_at(s, grid, times).await,
            Backend::Postgres(s) => {
                s.run(move |s| async move { s.utc_offsets_at(grid, times).await })
                    .await
            }
        }
    }

    async fn fleet(&self, limit: usize) -> Result<Vec<FleetRow>, StoreError> {
        match self {
            Backend::Redb(s) => Store::fleet(s, limit).await,
            Backend::Postgres(s) => s.run(move |s| async move { s.fleet(limit).await }).await,
        }
    }

    async fn grid_state(
        &self,
        grid: u64,
    ) -> Result<Option<(GridState, Vec<LedgerRow>)>, StoreError> {
        match self {
            Backend::Redb(s) => Store::grid_state(s, grid).await,
            Backend::Postgres(s) => {
                s.run(move |s| async move { s.grid_state(grid).await })
                    .await
            }
        }
    }

    async fn records_page(
        &self,
        grid: u64,
        stream: u32,
        range: TimeRange,
        after: Option<u64>,
        limit: usize,
    ) -> Result<Page<(u64, StoredRecord), u64>, StoreError> {
        match self {
            Backend::Redb(s) => Store::records_page(s, grid, stream, range, after, limit).await,
            Backend::Postgres(s) => {
                s.run(
                    move |s| async move { s.records_page(grid, stream, range, after, limit).await },
                )
                .await
            }
        }
    }

    async fn recent_records(
        &self,
        grid: u64,
        stream: u32,
        since_ms: u64,
        max: usize,
    ) -> Result<Vec<(u64, StoredRecord)>, StoreError> {
        match self {
            Backend::Redb(s) => Store::recent_records(s, grid, stream, since_ms, max).await,
            Backend::Postgres(s) => {
                s.run(move |s| async move { s.recent_records(grid, stream, since_ms, max).await })
                    .await
            }
        }
    }

    async fn ledger_sums(&self, grid: u64, range: TimeRange) -> Result<(u64, i64), StoreError> {
        match self {
            Backend::Redb(s) => Store::ledger_sums(s, grid, range).await,
            Backend::Postgres(s) => {
                s.run(move |s| async move { s.ledger_sums(grid, range).await })
                    .await
            }
        }
    }

    async fn customer_hours_page(
        &self,
        grid: u64,
        customer: u32,
        range: TimeRange,
        after: Option<u64>,
        limit: usize,
    ) -> Result<Page<EnergyHourRow, u64>, StoreError> {
        match self {
            Backend::Redb(s) => {
                Store::customer_hours_page(s, grid, customer, range, after, limit).await
            }
            Backend::Postgres(s) => {
                s.run(move |s| async move {
                    s.customer_hours_page(grid, customer, range, after, limit)
                        .await
                })
                .await
            }
        }
    }

    async fn folded_days_page(
        &self,
        grid: u64,
        customer: Option<u32>,
        range: TimeRange,
        after: Option<FoldedKey>,
        limit: usize,
    ) -> Result<Page<FoldedDayRow, FoldedKey>, StoreError> {
        match self {
            Backend::Redb(s) => {
                Store::folded_days_page(s, grid, customer, range, after, limit).await
            }
            Backend::Postgres(s) => {
                s.run(move |s| async move {
                    s.folded_days_page(grid, customer, range, after, limit)
                        .await
                })
                .await
            }
        }
    }

    async fn prune_before(&self, cutoff_ms: u64) -> Result<Pruned, StoreError> {
        match self {
            Backend::Redb(s) => Store::prune_before(s, cutoff_ms).await,
            Backend::Postgres(s) => {
                s.run(move |s| async move { s.prune_before(cutoff_ms).await })
                    .await
            }
        }
    }
}
