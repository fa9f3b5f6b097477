//! The central's PostgreSQL store (`ghatta-central --database postgres://...`): a pooled
//! client, the schema's numbered migrations applied at start, ingest of a batch in one
//! transaction (records, dedupe keys, cursor and views commit together), and the HTTP
//! routes' queries as indexed range scans.
//!
//! Exactly once: every ingest locks its (grid, stream) cursor row first, so two uploads of
//! one stream (a leader change mid-upload) run one after the other; records below the cursor
//! are skipped, the rest go in with `ON CONFLICT DO NOTHING` on the dedupe key, and the
//! cursor moves to `GREATEST(cursor, batch end)` in the same transaction. The ack leaves only
//! after `COMMIT` returned (PostgreSQL's default `synchronous_commit = on`: flushed to WAL).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use ghatta_actor_sdk::{self as sdk, codec as sdk_codec};
use ghatta_proto::outbox::ActorKind;
use ghatta_proto::wan::{AckBody, BatchBody};
use tokio_postgres::NoTls;

use crate::DAY_MS;
use crate::backend::Store;
use crate::error::StoreError;
use crate::fleet::Pruned;
use crate::store::{
    EnergyHourRow, FleetRow, FoldedDayRow, FoldedKey, GridState, HourKey, LedgerKey, LedgerRow,
    PAGE_ROWS_MAX, Page, StoredRecord, TimeRange, energy_key, energy_of, folded_row_of,
    ledger_row_of, now_ms,
};

/// The schema's migrations, in order: (version, name, SQL). Each is applied once, in its own
/// transaction, and recorded in `schema_migrations`; never edit one that has shipped, add
/// the next.
pub const MIGRATIONS: [(i32, &str, &str); 6] = [
    (1, "schema", include_str!("../migrations/0001_schema.sql")),
    (
        2,
        "local_hours",
        include_str!("../migrations/0002_local_hours.sql"),
    ),
    (
        3,
        "customer_hours",
        include_str!("../migrations/0003_customer_hours.sql"),
    ),
    (4, "audit", include_str!("../migrations/0004_audit.sql")),
    (
        5,
        "meter_reads",
        include_str!("../migrations/0005_meter_reads.sql"),
    ),
    (
        6,
        "folded_days",
        include_str!("../migrations/0006_folded_days.sql"),
    ),
];

/// Connections the pool opens at most. Ingest holds one per batch in flight and each HTTP
/// query one while it runs; 16 keeps a few hundred grids' uploads moving (each batch is a
/// few ms of database time) well inside PostgreSQL's default `max_connections` of 100,
/// leaving room for the office's own tools.
pub const POOL_CONNECTIONS_MAX: usize = 16;

/// The advisory lock key two centrals starting at once take while migrating, so one applies
/// each migration and the other then sees it applied ("ghatta" in ASCII).
const MIGRATION_LOCK_KEY: i64 = 0x6768_6174_7461;

/// Most months (over the three partitioned tables) one batch may span. A batch is at most
/// 64 KiB of records in log order, a few days of one grid; 36 (a year of each table) is far
/// beyond that, and stops a faulty grid's clock from making a partition per record.
pub const BATCH_MONTHS_MAX: usize = 36;

/// A u64 from the grid as a BIGINT, or an error naming it (PostgreSQL has no unsigned type).
fn big(v: u64, what: &'static str) -> Result<i64, StoreError> {
    i64::try_from(v).map_err(|_| StoreError::OutOfRange { what, value: v })
}

/// A stored BIGINT back as the u64 it was written from.
fn unbig(v: i64, what: &'static str) -> Result<u64, StoreError> {
    u64::try_from(v).map_err(|_| StoreError::Corrupt {
        what,
        detail: format!("negative value {v}"),
    })
}

/// A query bound: Unix ms saturated into BIGINT (a range end of "forever" is u64::MAX).
fn bound(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Day number since 1970-01-01 of (year, month, day 1) (Howard Hinnant's days_from_civil).
pub(crate) fn days_from_civil(y: i64, m: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The UTC month holding `t_ms`: its partition suffix and [start, end) in Unix ms.
fn month_of(t_ms: i64) -> (String, i64, i64) {
    let day_ms = DAY_MS as i64;
    let (y, m, _) = crate::localtime::civil_from_days(t_ms.div_euclid(day_ms));
    let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
    let start = days_from_civil(y, m).saturating_mul(day_ms);
    let end = days_from_civil(ny, nm).saturating_mul(day_ms);
    (format!("y{y:04}m{m:02}"), start, end)
}

/// The PostgreSQL store: a pool of connections and the months whose partitions exist.
#[derive(Clone)]
pub struct PgStore {
    pool: Pool,
    backfill_after_ms: u64,
    /// (table, month start ms) known to have a partition: checked once per process.
    partitions: Arc<Mutex<BTreeSet<(&'static str, i64)>>>,
    /// The runtime the queries run on when the caller's has no I/O ([`PgStore::on_runtime`]).
    io: Option<tokio::runtime::Handle>,
}

impl PgStore {
    /// Connect to `url` (`postgres://user@host:port/db`), apply the migrations this build
    /// knows that the database lacks, and answer the store.
    pub async fn connect(url: &str, backfill_after_ms: u64) -> Result<PgStore, StoreError> {
        let config: tokio_postgres::Config = url.parse().map_err(|e| StoreError::DatabaseUrl {
            detail: format!("{e}"),
        })?;
        PgStore::with_config(config, backfill_after_ms).await
    }

    /// As [`PgStore::connect`], with the connection settings already parsed.
    pub async fn with_config(
        config: tokio_postgres::Config,
        backfill_after_ms: u64,
    ) -> Result<PgStore, StoreError> {
        let store = PgStore::pool(config, backfill_after_ms)?;
        store.migrate().await?;
        Ok(store)
    }

    /// The pool, not yet connected.
    fn pool(config: tokio_postgres::Config, backfill_after_ms: u64) -> Result<PgStore, StoreError> {
        let manager = Manager::from_config(
            config,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(POOL_CONNECTIONS_MAX)
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .build()
            .map_err(|e| StoreError::Pool(e.to_string()))?;
        Ok(PgStore {
            pool,
            backfill_after_ms,
            partitions: Arc::default(),
            io: None,
        })
    }

    /// Runs every query of [`Store`] (through [`crate::Backend`]) on `io`'s runtime, each from a
    /// blocking task of the caller's: for a caller on a runtime without I/O, the simulator's
    /// paused clock, whose auto-advance a pending blocking task holds (as redb's fsyncs do),
    /// so simulated time stands still while the database answers. Connections are then made
    /// on `io`'s runtime, which must keep running.
    pub fn on_runtime(mut self, io: tokio::runtime::Handle) -> PgStore {
        self.io = Some(io);
        self
    }

    /// Runs `f` on this store: where it is called, or on the [`PgStore::on_runtime`] runtime.
    pub(crate) async fn run<T, F, Fut>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(PgStore) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = Result<T, StoreError>> + Send + 'static,
    {
        match &self.io {
            None => f(self.clone()).await,
            Some(io) => {
                let (io, s) = (io.clone(), self.clone());
                tokio::task::spawn_blocking(move || io.block_on(f(s)))
                    .await
                    .map_err(|e| StoreError::Task(e.to_string()))?
            }
        }
    }

    /// As [`PgStore::connect`] without migrating (`ghatta-central check` looks, it does not
    /// change the schema). Nothing connects until the first query.
    pub fn unmigrated(url: &str, backfill_after_ms: u64) -> Result<PgStore, StoreError> {
        let config: tokio_postgres::Config = url.parse().map_err(|e| StoreError::DatabaseUrl {
            detail: format!("{e}"),
        })?;
        PgStore::pool(config, backfill_after_ms)
    }

    /// (applied, known): the newest migration the database has (0: none) and the newest this
    /// build knows.
    pub async fn schema_version(&self) -> Result<(i32, i32), StoreError> {
        let c = self.client().await?;
        // The name is resolved when a query is planned, so look for the table first.
        let exists: bool = c
            .query_one("SELECT to_regclass('schema_migrations') IS NOT NULL", &[])
            .await?
            .get(0);
        let applied: i32 = if exists {
            c.query_one(
                "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
                &[],
            )
            .await?
            .get(0)
        } else {
            0
        };
        Ok((applied, MIGRATIONS.len() as i32))
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        self.pool.get().await.map_err(|e| {
            // The pool's own message hides why ("error connecting to server"): say it all.
            let mut msg = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                msg = format!("{msg}: {s}");
                source = s.source();
            }
            StoreError::Pool(msg)
        })
    }

    /// Apply the migrations the database lacks, each in its own transaction; refuse a
    /// database a newer ghatta-central migrated further. Answers the schema version.
    pub async fn migrate(&self) -> Result<i32, StoreError> {
        let mut c = self.client().await?;
        c.batch_execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (
                 version INTEGER PRIMARY KEY,
                 name TEXT NOT NULL,
                 applied_ms BIGINT NOT NULL
             );
             COMMENT ON COLUMN schema_migrations.applied_ms IS 'When it was applied, Unix ms.';",
        )
        .await?;
        for (version, name, sql) in MIGRATIONS {
            let tx = c.transaction().await?;
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK_KEY])
                .await?;
            let done = tx
                .query_opt(
                    "SELECT 1 FROM schema_migrations WHERE version = $1",
                    &[&version],
                )
                .await?
                .is_some();
            if !done {
                tx.batch_execute(sql).await?;
                tx.execute(
                    "INSERT INTO schema_migrations (version, name, applied_ms) VALUES ($1, $2, $3)",
                    &[&version, &name, &bound(now_ms())],
                )
                .await?;
                tracing::info!(version, name, "applied a schema migration");
            }
            tx.commit().await?;
        }
        let newest: i32 = c
            .query_one(
                "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
                &[],
            )
            .await?
            .get(0);
        let known = MIGRATIONS.len() as i32;
        if newest > known {
            return Err(StoreError::SchemaTooNew { newest, known });
        }
        Ok(newest)
    }

    /// Make the monthly partitions `months` ((table, a time in the month) pairs) that do not
    /// exist yet, each in its own statement outside the ingest transaction (DDL takes a lock
    /// on the parent table; holding it through a batch would stall every other grid).
    async fn ensure_partitions(
        &self,
        c: &tokio_postgres::Client,
        months: &BTreeSet<(&'static str, i64)>,
    ) -> Result<(), StoreError> {
        for &(table, t_ms) in months {
            let (suffix, start, end) = month_of(t_ms);
            if self
                .partitions
                .lock()
                .map_err(|_| StoreError::Task("partition cache poisoned".into()))?
                .contains(&(table, start))
            {
                continue;
            }
            let sql = format!(
                "CREATE TABLE IF NOT EXISTS {table}_{suffix} PARTITION OF {table} FOR VALUES FROM ({start}) TO ({end})"
            );
            if let Err(e) = c.batch_execute(&sql).await {
                // Another connection made it between our check and our CREATE: fine.
                let raced = e.code().is_some_and(|code| {
                    *code == tokio_postgres::error::SqlState::DUPLICATE_TABLE
                        || *code == tokio_postgres::error::SqlState::UNIQUE_VIOLATION
                });
                if !raced {
                    return Err(e.into());
                }
            }
            self.partitions
                .lock()
                .map_err(|_| StoreError::Task("partition cache poisoned".into()))?
                .insert((table, start));
        }
        Ok(())
    }
}

/// A batch's rows, decoded and checked before the transaction opens.
#[derive(Default)]
struct Rows {
    seq: Vec<i64>,
    index: Vec<i64>,
    time_ms: Vec<i64>,
    actor: Vec<i16>,
    output: Vec<Vec<u8>>,
    backfill: Vec<bool>,
}

/// A batch's ledger lines as columns (one array parameter each for `UNNEST`).
#[derive(Default)]
struct LedgerCols {
    customer: Vec<i64>,
    seq: Vec<i64>,
    at_ms: Vec<i64>,
    kind: Vec<String>,
    energy_wh: Vec<i64>,
    amount_mpaisa: Vec<i64>,
    balance_after_mpaisa: Vec<i64>,
    tariff_version: Vec<i64>,
    backfill: Vec<bool>,
    log_index: Vec<i64>,
    friendly: Vec<bool>,
    detail: Vec<String>,
    read_from_wh: Vec<Option<i64>>,
    read_to_wh: Vec<Option<i64>>,
    read_at_ms: Vec<Option<i64>>,
}

/// A meter register or read time as BIGINT (NULL for `None`), saturated at 2^63 - 1: no meter
/// counts that far, so such a value is a corrupt read the grid already refused or held, and
/// refusing its batch instead would stop the grid's ledger stream for good.
fn big_opt(v: Option<u64>) -> Option<i64> {
    v.map(bound)
}

/// An optional BIGINT column back as u64.
fn unbig_opt(v: Option<i64>, what: &'static str) -> Result<Option<u64>, StoreError> {
    v.map(|v| unbig(v, what)).transpose()
}

/// A batch's energy hours as columns.
#[derive(Default)]
struct HourCols {
    hour_start_ms: Vec<i64>,
    kind: Vec<i16>,
    id: Vec<i64>,
    feeder: Vec<i32>,
    energy_wh: Vec<i64>,
    seq: Vec<i64>,
    backfill: Vec<bool>,
    utc_offset_min: Vec<i32>,
}

impl Store for PgStore {
    async fn ingest(&self, grid: u64, b: BatchBody) -> Result<AckBody, StoreError> {
        let now = now_ms();
        let grid_i = big(grid, "grid id")?;
        let stream_i = i64::from(b.stream);
        let ack = |next_seq, gap| AckBody {
            stream: b.stream,
            next_seq,
            gap,
            batch_first_seq: b.first_seq,
        };
        // Check the batch's order and sizes before touching the database.
        let mut months = BTreeSet::new();
        let mut prev = None;
        for (seq, rec) in &b.records {
            if *seq < b.first_seq || *seq >= b.end_seq || prev.is_some_and(|p| *seq <= p) {
                return Err(StoreError::BatchOrder {
                    grid,
                    seq: *seq,
                    first_seq: b.first_seq,
                    end_seq: b.end_seq,
                });
            }
            prev = Some(*seq);
            let t = big(rec.time_ms, "record log time")?;
            months.insert(("wan_records", month_of(t).1));
            match sdk_codec::decode::<sdk::Output>(&rec.output) {
                Some(sdk::Output::Ledger(l)) => {
                    months.insert(("wan_ledger", month_of(big(l.at_ms, "ledger time")?).1));
                }
                Some(ref out) => {
                    if let Some((h, _)) = energy_of(out) {
                        months.insert((
                            "wan_energy_hours",
                            month_of(big(h.hour_start_ms, "hour start")?).1,
                        ));
                    }
                }
                None => {}
            }
        }
        if months.len() > BATCH_MONTHS_MAX {
            return Err(StoreError::BatchSpan {
                grid,
                months: months.len(),
                max: BATCH_MONTHS_MAX,
            });
        }
        let first_i = big(b.first_seq, "batch first seq")?;
        let end_i = big(b.end_seq, "batch end seq")?;
        let mut c = self.client().await?;
        // Partitions are DDL: made before the transaction, each on its own, so the lock DDL
        // takes on the parent table is never held through a batch (once a month per table).
        self.ensure_partitions(&c, &months).await?;
        let tx = c.transaction().await?;
        tx.execute(
            "INSERT INTO wan_cursors (grid_id, stream, next_seq, updated_ms) VALUES ($1, $2, 0, $3)
             ON CONFLICT DO NOTHING",
            &[&grid_i, &stream_i, &bound(now)],
        )
        .await?;
        // The lock that serialises every upload of this (grid, stream).
        let have_i: i64 = tx
            .query_one(
                "SELECT next_seq FROM wan_cursors WHERE grid_id = $1 AND stream = $2 FOR UPDATE",
                &[&grid_i, &stream_i],
            )
            .await?
            .get(0);
        let have = unbig(have_i, "cursor")?;
        if first_i > have_i {
            // A hole before this batch: store nothing, ask for a resend from the cursor.
            return Ok(ack(have, true));
        }
        if end_i <= have_i {
            return Ok(ack(have, false)); // A pure retransmission.
        }
        // The grid's row first exists, then is locked: two streams of one grid uploading their
        // first batches at once would each read no row and the later write would drop the
        // earlier's counts (FOR UPDATE locks no row that is not there yet). A concurrent
        // INSERT of the same key waits for this one's commit, then does nothing.
        tx.execute(
            "INSERT INTO wan_grids (grid_id, records, newest_time_ms, last_event, last_event_ms,
                                    backfilled, last_upload_ms)
             VALUES ($1, 0, 0, NULL, 0, 0, $2) ON CONFLICT DO NOTHING",
            &[&grid_i, &bound(now)],
        )
        .await?;
        let g = tx
            .query_opt(
                "SELECT records, newest_time_ms, last_event, last_event_ms, backfilled
                 FROM wan_grids WHERE grid_id = $1 FOR UPDATE",
                &[&grid_i],
            )
            .await?;
        let mut records_n: i64 = g.as_ref().map_or(0, |r| r.get(0));
        let mut newest_time_ms: i64 = g.as_ref().map_or(0, |r| r.get(1));
        let mut last_event: Option<String> = g.as_ref().and_then(|r| r.get(2));
        let mut last_event_ms: i64 = g.as_ref().map_or(0, |r| r.get(3));
        let mut backfilled: i64 = g.as_ref().map_or(0, |r| r.get(4));
        // Each batch customer's newest stored line time (a line older is back-fill).
        let customers: Vec<i64> = b
            .records
            .iter()
            .filter_map(|(_, r)| match sdk_codec::decode::<sdk::Output>(&r.output) {
                Some(sdk::Output::Ledger(l)) => Some(i64::from(l.customer.0)),
                _ => None,
            })
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let mut newest_at: BTreeMap<u32, u64> = BTreeMap::new();
        for r in tx
            .query(
                "SELECT customer, at_ms FROM wan_latest_customer WHERE grid_id = $1 AND customer = ANY($2)",
                &[&grid_i, &customers],
            )
            .await?
        {
            let c: i64 = r.get(0);
            let at: i64 = r.get(1);
            newest_at.insert(
                u32::try_from(c).map_err(|_| StoreError::Corrupt {
                    what: "customer id",
                    detail: format!("{c}"),
                })?,
                unbig(at, "ledger time")?,
            );
        }
        let mut rows = Rows::default();
        let mut ledger: Vec<LedgerRow> = Vec::new();
        let mut latest: BTreeMap<u32, LedgerRow> = BTreeMap::new();
        let mut hours = HourCols::default();
        let mut folded: Vec<FoldedDayRow> = Vec::new();
        for (seq, rec) in &b.records {
            let seq = *seq;
            if seq < have {
                continue; // Stored before: exactly once.
            }
            let mut backfill = now.saturating_sub(rec.time_ms) > self.backfill_after_ms;
            match sdk_codec::decode::<sdk::Output>(&rec.output) {
                Some(sdk::Output::Ledger(l)) => {
                    let c = l.customer.0;
                    let newest = newest_at.get(&c).copied();
                    if newest.is_some_and(|n| l.at_ms < n) {
                        backfill = true;
                    }
                    let row = ledger_row_of(seq, rec.index, &l, backfill);
                    if newest.is_none_or(|n| l.at_ms >= n) {
                        newest_at.insert(c, l.at_ms);
                        latest.insert(c, row.clone());
                    }
                    ledger.push(row);
                    if backfill {
                        backfilled += 1;
                    }
                }
                Some(out @ (sdk::Output::EnergyLocal { .. } | sdk::Output::EnergyHour(_))) => {
                    if let Some((h, utc_offset_min)) = energy_of(&out) {
                        let (key, _) = energy_key(grid, h);
                        hours
                            .hour_start_ms
                            .push(big(h.hour_start_ms, "hour start")?);
                        hours.kind.push(i16::from(key.2));
                        hours.id.push(big(key.3, "energy subject id")?);
                        hours.feeder.push(i32::from(key.4));
                        hours.energy_wh.push(big(h.energy_wh, "hour energy")?);
                        hours.seq.push(big(seq, "seq")?);
                        hours.backfill.push(backfill);
                        hours.utc_offset_min.push(utc_offset_min);
                    }
                }
                Some(sdk::Output::Folded(f)) => folded.push(folded_row_of(seq, &f, backfill)),
                Some(ev @ (sdk::Output::Alarm(_) | sdk::Output::Relay(_)))
                    if big(rec.time_ms, "record log time")? >= last_event_ms =>
                {
                    last_event = Some(format!("{ev:?}"));
                    last_event_ms = big(rec.time_ms, "record log time")?;
                }
                _ => {}
            }
            rows.seq.push(big(seq, "seq")?);
            rows.index.push(big(rec.index, "log index")?);
            rows.time_ms.push(big(rec.time_ms, "record log time")?);
            rows.actor.push(match rec.actor {
                ActorKind::Balancing => 1,
                ActorKind::Billing => 2,
                ActorKind::DemandResponse => 3,
            });
            rows.output.push(rec.output.clone());
            rows.backfill.push(backfill);
            records_n += 1;
            newest_time_ms = newest_time_ms.max(big(rec.time_ms, "record log time")?);
        }
        let now_i = bound(now);
        tx.execute(
            "INSERT INTO wan_records (grid_id, stream, seq, log_index, log_time_ms, actor, output, backfill, received_ms)
             SELECT $1, $2, u.seq, u.idx, u.t, u.actor, u.out, u.bf, $9
             FROM UNNEST($3::bigint[], $4::bigint[], $5::bigint[], $6::int2[], $7::bytea[], $8::bool[])
                  AS u(seq, idx, t, actor, out, bf)
             ON CONFLICT DO NOTHING",
            &[
                &grid_i,
                &stream_i,
                &rows.seq,
                &rows.index,
                &rows.time_ms,
                &rows.actor,
                &rows.output,
                &rows.backfill,
                &now_i,
            ],
        )
        .await?;
        if !ledger.is_empty() {
            let mut l = LedgerCols::default();
            for r in &ledger {
                l.customer.push(i64::from(r.customer));
                l.seq.push(big(r.seq, "seq")?);
                l.at_ms.push(big(r.at_ms, "ledger time")?);
                l.kind.push(r.kind.clone());
                l.energy_wh.push(big(r.energy_wh, "ledger energy")?);
                l.amount_mpaisa.push(r.amount_mpaisa);
                l.balance_after_mpaisa.push(r.balance_after_mpaisa);
                l.tariff_version.push(i64::from(r.tariff_version));
                l.backfill.push(r.backfill);
                l.log_index.push(big(r.log_index, "log index")?);
                l.friendly.push(r.friendly);
                l.detail.push(r.detail.clone());
                l.read_from_wh.push(big_opt(r.read_from_wh));
                l.read_to_wh.push(big_opt(r.read_to_wh));
                l.read_at_ms.push(big_opt(r.read_at_ms));
            }
            tx.execute(
                "INSERT INTO wan_ledger (grid_id, customer, seq, at_ms, kind, energy_wh, amount_mpaisa,
                                         balance_after_mpaisa, tariff_version, backfill,
                                         log_index, friendly, detail, read_from_wh, read_to_wh,
                                         read_at_ms)
                 SELECT $1, u.* FROM UNNEST($2::bigint[], $3::bigint[], $4::bigint[], $5::text[],
                     $6::bigint[], $7::bigint[], $8::bigint[], $9::bigint[], $10::bool[],
                     $11::bigint[], $12::bool[], $13::text[], $14::bigint[], $15::bigint[],
                     $16::bigint[]) AS u
                 ON CONFLICT DO NOTHING",
                &[
                    &grid_i,
                    &l.customer,
                    &l.seq,
                    &l.at_ms,
                    &l.kind,
                    &l.energy_wh,
                    &l.amount_mpaisa,
                    &l.balance_after_mpaisa,
                    &l.tariff_version,
                    &l.backfill,
                    &l.log_index,
                    &l.friendly,
                    &l.detail,
                    &l.read_from_wh,
                    &l.read_to_wh,
                    &l.read_at_ms,
                ],
            )
            .await?;
        }
        for r in latest.values() {
            tx.execute(
                "INSERT INTO wan_latest_customer (grid_id, customer, seq, at_ms, kind, energy_wh,
                     amount_mpaisa, balance_after_mpaisa, tariff_version, backfill, log_index,
                     friendly, detail, read_from_wh, read_to_wh, read_at_ms)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)
                 ON CONFLICT (grid_id, customer) DO UPDATE SET
                     seq = EXCLUDED.seq, at_ms = EXCLUDED.at_ms, kind = EXCLUDED.kind,
                     energy_wh = EXCLUDED.energy_wh, amount_mpaisa = EXCLUDED.amount_mpaisa,
                     balance_after_mpaisa = EXCLUDED.balance_after_mpaisa,
                     tariff_version = EXCLUDED.tariff_version, backfill = EXCLUDED.backfill,
                     log_index = EXCLUDED.log_index, friendly = EXCLUDED.friendly,
                     detail = EXCLUDED.detail, read_from_wh = EXCLUDED.read_from_wh,
                     read_to_wh = EXCLUDED.read_to_wh, read_at_ms = EXCLUDED.read_at_ms
                 WHERE EXCLUDED.at_ms >= wan_latest_customer.at_ms",
                &[
                    &grid_i,
                    &i64::from(r.customer),
                    &big(r.seq, "seq")?,
                    &big(r.at_ms, "ledger time")?,
                    &r.kind,
                    &big(r.energy_wh, "ledger energy")?,
                    &r.amount_mpaisa,
                    &r.balance_after_mpaisa,
                    &i64::from(r.tariff_version),
                    &r.backfill,
                    &big(r.log_index, "log index")?,
                    &r.friendly,
                    &r.detail,
                    &big_opt(r.read_from_wh),
                    &big_opt(r.read_to_wh),
                    &big_opt(r.read_at_ms),
                ],
            )
            .await?;
        }
        if !hours.seq.is_empty() {
            // A grid closes each (subject, hour) once; a second record for one does not
            // replace the first (as in the redb store).
            tx.execute(
                "INSERT INTO wan_energy_hours (grid_id, hour_start_ms, kind, id, feeder, energy_wh, seq, backfill, utc_offset_min)
                 SELECT $1, u.* FROM UNNEST($2::bigint[], $3::int2[], $4::bigint[], $5::int4[],
                     $6::bigint[], $7::bigint[], $8::bool[], $9::int4[]) AS u
                 ON CONFLICT DO NOTHING",
                &[
                    &grid_i,
                    &hours.hour_start_ms,
                    &hours.kind,
                    &hours.id,
                    &hours.feeder,
                    &hours.energy_wh,
                    &hours.seq,
                    &hours.backfill,
                    &hours.utc_offset_min,
                ],
            )
            .await?;
        }
        if !folded.is_empty() {
            insert_folded(&tx, grid_i, &folded).await?;
        }
        tx.execute(
            "INSERT INTO wan_grids (grid_id, records, newest_time_ms, last_event, last_event_ms, backfilled, last_upload_ms)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (grid_id) DO UPDATE SET records = EXCLUDED.records,
                 newest_time_ms = EXCLUDED.newest_time_ms, last_event = EXCLUDED.last_event,
                 last_event_ms = EXCLUDED.last_event_ms, backfilled = EXCLUDED.backfilled,
                 last_upload_ms = EXCLUDED.last_upload_ms",
            &[
                &grid_i,
                &records_n,
                &newest_time_ms,
                &last_event,
                &last_event_ms,
                &backfilled,
                &now_i,
            ],
        )
        .await?;
        tx.execute(
            "UPDATE wan_cursors SET next_seq = GREATEST(next_seq, $3), updated_ms = $4
             WHERE grid_id = $1 AND stream = $2",
            &[&grid_i, &stream_i, &end_i, &now_i],
        )
        .await?;
        tx.commit().await?;
        Ok(ack(b.end_seq, false))
    }

    async fn cursor(&self, grid: u64, stream: u32) -> Result<u64, StoreError> {
        let c = self.client().await?;
        let r = c
            .query_opt(
                "SELECT next_seq FROM wan_cursors WHERE grid_id = $1 AND stream = $2",
                &[&big(grid, "grid id")?, &i64::from(stream)],
            )
            .await?;
        r.map_or(Ok(0), |r| unbig(r.get(0), "cursor"))
    }

    async fn ledger_page(
        &self,
        grid: u64,
        customer: Option<u32>,
        range: TimeRange,
        after: Option<LedgerKey>,
        limit: usize,
    ) -> Result<Page<LedgerRow, LedgerKey>, StoreError> {
        let limit = limit.clamp(1, PAGE_ROWS_MAX);
        let (first, last) = customer.map_or((0, u32::MAX), |c| (c, c));
        if after.is_some_and(|k| k.customer > last || k.customer < first) {
            return Ok(Page {
                rows: Vec::new(),
                next: None,
            });
        }
        let (ac, aseq) = match after {
            Some(k) => (i64::from(k.customer), bound(k.seq)),
            None => (-1, -1),
        };
        let c = self.client().await?;
        let got = c
            .query(
                "SELECT customer, seq, at_ms, kind, energy_wh, amount_mpaisa, balance_after_mpaisa,
                        tariff_version, backfill, log_index, friendly, detail, read_from_wh,
                        read_to_wh, read_at_ms
                 FROM wan_ledger
                 WHERE grid_id = $1 AND customer BETWEEN $2 AND $3 AND (customer, seq) > ($4, $5)
                   AND at_ms >= $6 AND at_ms < $7
                 ORDER BY customer, seq LIMIT $8",
                &[
                    &big(grid, "grid id")?,
                    &i64::from(first),
                    &i64::from(last),
                    &ac,
                    &aseq,
                    &bound(range.from_ms),
                    &bound(range.to_ms),
                    &(limit as i64 + 1),
                ],
            )
            .await?;
        let mut rows = got.iter().map(ledger_row).collect::<Result<Vec<_>, _>>()?;
        let more = rows.len() > limit;
        rows.truncate(limit);
        let next = more.then(|| rows.last()).flatten().map(|r| LedgerKey {
            customer: r.customer,
            seq: r.seq,
        });
        Ok(Page { rows, next })
    }

    async fn energy_hours_page(
        &self,
        grid: u64,
        range: TimeRange,
        after: Option<HourKey>,
        limit: usize,
    ) -> Result<Page<EnergyHourRow, HourKey>, StoreError> {
        let limit = limit.clamp(1, PAGE_ROWS_MAX);
        let a = after.map_or((-1, -1, -1, -1), |k| {
            (
                bound(k.hour_start_ms),
                i16::from(k.kind),
                bound(k.id),
                i32::from(k.feeder),
            )
        });
        let c = self.client().await?;
        let got = c
            .query(
                "SELECT hour_start_ms, kind, id, feeder, energy_wh, seq, backfill, utc_offset_min
                 FROM wan_energy_hours
                 WHERE grid_id = $1 AND hour_start_ms >= $2 AND hour_start_ms < $3
                   AND (hour_start_ms, kind, id, feeder) > ($4, $5, $6, $7)
                 ORDER BY hour_start_ms, kind, id, feeder LIMIT $8",
                &[
                    &big(grid, "grid id")?,
                    &bound(range.from_ms),
                    &bound(range.to_ms),
                    &a.0,
                    &a.1,
                    &a.2,
                    &a.3,
                    &(limit as i64 + 1),
                ],
            )
            .await?;
        let mut rows = Vec::new();
        let mut keys = Vec::new();
        for r in &got {
            let row = hour_row(r)?;
            keys.push(HourKey {
                hour_start_ms: row.hour_start_ms,
                kind: r.get::<_, i16>(1) as u8,
                id: row.id,
                feeder: row.feeder,
            });
            rows.push(row);
        }
        let more = rows.len() > limit;
        rows.truncate(limit);
        let next = if more {
            keys.get(limit - 1).copied()
        } else {
            None
        };
        Ok(Page { rows, next })
    }

    async fn energy_per_day(&self, grid: u64) -> Result<Vec<(u64, u64)>, StoreError> {
        let c = self.client().await?;
        let got = c
            .query(
                // A customer's folded days stand for hours the central never received.
                "SELECT day, SUM(wh)::bigint FROM (
                     SELECT GREATEST(hour_start_ms + utc_offset_min::bigint * 60000, 0) / $2
                                AS day, energy_wh AS wh
                     FROM wan_energy_hours WHERE grid_id = $1 AND kind = 0 AND energy_wh > 0
                     UNION ALL
                     SELECT GREATEST(day_start_ms + utc_offset_min::bigint * 60000, 0) / $2,
                            energy_wh
                     FROM wan_folded_days WHERE grid_id = $1 AND kind = 0 AND energy_wh > 0
                 ) d GROUP BY day ORDER BY day",
                &[&big(grid, "grid id")?, &(DAY_MS as i64)],
            )
            .await?;
        got.iter()
            .map(|r| Ok((unbig(r.get(0), "day")?, unbig(r.get(1), "day energy")?)))
            .collect()
    }

    async fn utc_offsets_at(&self, grid: u64, times: Vec<u64>) -> Result<Vec<i32>, StoreError> {
        let ts: Vec<i64> = times.iter().map(|&t| bound(t)).collect();
        let c = self.client().await?;
        // Per time: the newest hour starting at or before it (the primary key's order), else
        // the grid's first hour; UTC when it sent none.
        let got = c
            .query(
                "SELECT COALESCE(
                     (SELECT utc_offset_min FROM wan_energy_hours
                      WHERE grid_id = $1 AND hour_start_ms <= u.t
                      ORDER BY hour_start_ms DESC LIMIT 1),
                     (SELECT utc_offset_min FROM wan_energy_hours
                      WHERE grid_id = $1 ORDER BY hour_start_ms LIMIT 1),
                     0)
                 FROM UNNEST($2::bigint[]) WITH ORDINALITY AS u(t, n) ORDER BY u.n",
                &[&big(grid, "grid id")?, &ts],
            )
            .await?;
        Ok(got.iter().map(|r| r.get(0)).collect())
    }

    async fn fleet(&self, limit: usize) -> Result<Vec<FleetRow>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let mut c = self.client().await?;
        let tx = c
            .build_transaction()
            .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await?;
        let mut out = Vec::new();
        let mut ids = Vec::new();
        for r in tx
            .query(
                "SELECT grid_id, last_upload_ms, newest_time_ms, records FROM wan_grids
                 ORDER BY grid_id LIMIT $1",
                &[&limit],
            )
            .await?
        {
            let grid: i64 = r.get(0);
            ids.push(grid);
            out.push(FleetRow {
                grid: unbig(grid, "grid id")?,
                last_upload_ms: unbig(r.get(1), "upload time")?,
                newest_time_ms: unbig(r.get(2), "newest time")?,
                records: unbig(r.get(3), "record count")?,
                cursors: BTreeMap::new(),
            });
        }
        for r in tx
            .query(
                "SELECT grid_id, stream, next_seq FROM wan_cursors WHERE grid_id = ANY($1)",
                &[&ids],
            )
            .await?
        {
            let grid = unbig(r.get(0), "grid id")?;
            let s: i64 = r.get(1);
            let stream = u32::try_from(s).map_err(|_| StoreError::Corrupt {
                what: "stream id",
                detail: format!("{s}"),
            })?;
            if let Ok(i) = out.binary_search_by_key(&grid, |f| f.grid) {
                out[i].cursors.insert(stream, unbig(r.get(2), "cursor")?);
            }
        }
        tx.commit().await?;
        Ok(out)
    }

    async fn grid_state(
        &self,
        grid: u64,
    ) -> Result<Option<(GridState, Vec<LedgerRow>)>, StoreError> {
        let grid_i = big(grid, "grid id")?;
        let mut c = self.client().await?;
        // One snapshot for the three reads, so the cursors match the counts.
        let tx = c
            .build_transaction()
            .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await?;
        let Some(g) = tx
            .query_opt(
                "SELECT records, newest_time_ms, last_event, last_event_ms, backfilled
                 FROM wan_grids WHERE grid_id = $1",
                &[&grid_i],
            )
            .await?
        else {
            return Ok(None);
        };
        let mut state = GridState {
            grid,
            cursors: BTreeMap::new(),
            records: unbig(g.get(0), "record count")?,
            newest_time_ms: unbig(g.get(1), "newest time")?,
            last_event: g.get(2),
            last_event_ms: unbig(g.get(3), "event time")?,
            backfilled: unbig(g.get(4), "back-fill count")?,
        };
        for r in tx
            .query(
                "SELECT stream, next_seq FROM wan_cursors WHERE grid_id = $1 ORDER BY stream",
                &[&grid_i],
            )
            .await?
        {
            let s: i64 = r.get(0);
            let stream = u32::try_from(s).map_err(|_| StoreError::Corrupt {
                what: "stream id",
                detail: format!("{s}"),
            })?;
            state.cursors.insert(stream, unbig(r.get(1), "cursor")?);
        }
        let latest = tx
            .query(
                "SELECT customer, seq, at_ms, kind, energy_wh, amount_mpaisa, balance_after_mpaisa,
                        tariff_version, backfill, log_index, friendly, detail, read_from_wh,
                        read_to_wh, read_at_ms
                 FROM wan_latest_customer WHERE grid_id = $1 ORDER BY customer",
                &[&grid_i],
            )
            .await?
            .iter()
            .map(ledger_row)
            .collect::<Result<Vec<_>, _>>()?;
        tx.commit().await?;
        Ok(Some((state, latest)))
    }

    async fn records_page(
        &self,
        grid: u64,
        stream: u32,
        range: TimeRange,
        after: Option<u64>,
        limit: usize,
    ) -> Result<Page<(u64, StoredRecord), u64>, StoreError> {
        let limit = limit.clamp(1, PAGE_ROWS_MAX);
        let c = self.client().await?;
        let got = c
            .query(
                "SELECT seq, log_index, log_time_ms, actor, output, backfill FROM wan_records
                 WHERE grid_id = $1 AND stream = $2 AND seq > $3
                   AND log_time_ms >= $4 AND log_time_ms < $5
                 ORDER BY seq LIMIT $6",
                &[
                    &big(grid, "grid id")?,
                    &i64::from(stream),
                    &after.map_or(-1, bound),
                    &bound(range.from_ms),
                    &bound(range.to_ms),
                    &(limit as i64 + 1),
                ],
            )
            .await?;
        let mut rows = got.iter().map(record_row).collect::<Result<Vec<_>, _>>()?;
        let more = rows.len() > limit;
        rows.truncate(limit);
        let next = more.then(|| rows.last().map(|r| r.0)).flatten();
        Ok(Page { rows, next })
    }

    async fn recent_records(
        &self,
        grid: u64,
        stream: u32,
        since_ms: u64,
        max: usize,
    ) -> Result<Vec<(u64, StoredRecord)>, StoreError> {
        let c = self.client().await?;
        c.query(
            "SELECT seq, log_index, log_time_ms, actor, output, backfill FROM wan_records
             WHERE grid_id = $1 AND stream = $2 AND log_time_ms >= $3
             ORDER BY seq DESC LIMIT $4",
            &[
                &big(grid, "grid id")?,
                &i64::from(stream),
                &bound(since_ms),
                &i64::try_from(max).unwrap_or(i64::MAX),
            ],
        )
        .await?
        .iter()
        .map(record_row)
        .collect()
    }

    async fn ledger_sums(&self, grid: u64, range: TimeRange) -> Result<(u64, i64), StoreError> {
        let c = self.client().await?;
        let r = c
            .query_one(
                // The days the grid folded stand for lines the central never received.
                "SELECT COALESCE(SUM(wh), 0)::bigint, COALESCE(SUM(mpaisa), 0)::bigint FROM (
                     SELECT energy_wh AS wh,
                            CASE WHEN kind IN ('Charge', 'Fee') THEN amount_mpaisa ELSE 0 END
                                AS mpaisa
                     FROM wan_ledger WHERE grid_id = $1 AND at_ms >= $2 AND at_ms < $3
                     UNION ALL
                     SELECT charged_wh, charged_mpaisa + fees_mpaisa
                     FROM wan_folded_days
                     WHERE grid_id = $1 AND day_start_ms >= $2 AND day_start_ms < $3
                 ) s",
                &[
                    &big(grid, "grid id")?,
                    &bound(range.from_ms),
                    &bound(range.to_ms),
                ],
            )
            .await?;
        Ok((unbig(r.get(0), "day energy")?, r.get(1)))
    }

    async fn customer_hours_page(
        &self,
        grid: u64,
        customer: u32,
        range: TimeRange,
        after: Option<u64>,
        limit: usize,
    ) -> Result<Page<EnergyHourRow, u64>, StoreError> {
        let limit = limit.clamp(1, PAGE_ROWS_MAX);
        let c = self.client().await?;
        let got = c
            .query(
                "SELECT hour_start_ms, kind, id, feeder, energy_wh, seq, backfill, utc_offset_min
                 FROM wan_energy_hours
                 WHERE grid_id = $1 AND kind = 0 AND id = $2
                   AND hour_start_ms >= $3 AND hour_start_ms > $4 AND hour_start_ms < $5
                 ORDER BY hour_start_ms LIMIT $6",
                &[
                    &big(grid, "grid id")?,
                    &i64::from(customer),
                    &bound(range.from_ms),
                    &after.map_or(-1, bound),
                    &bound(range.to_ms),
                    &(limit as i64 + 1),
                ],
            )
            .await?;
        let mut rows = got.iter().map(hour_row).collect::<Result<Vec<_>, _>>()?;
        let more = rows.len() > limit;
        rows.truncate(limit);
        let next = more.then(|| rows.last().map(|r| r.hour_start_ms)).flatten();
        Ok(Page { rows, next })
    }

    async fn folded_days_page(
        &self,
        grid: u64,
        customer: Option<u32>,
        range: TimeRange,
        after: Option<FoldedKey>,
        limit: usize,
    ) -> Result<Page<FoldedDayRow, FoldedKey>, StoreError> {
        let limit = limit.clamp(1, PAGE_ROWS_MAX);
        let (after_day, after_seq) =
            after.map_or((-1, -1), |k| (bound(k.day_start_ms), bound(k.seq)));
        let c = self.client().await?;
        let got = c
            .query(
                "SELECT seq, day_start_ms, utc_offset_min, kind, id, feeder, first_seq, end_seq,
                        records, energy_wh, ledger_lines, charged_wh, charged_mpaisa, fees_mpaisa,
                        credited_mpaisa, held_wh, alarms, relay_commands, backfill
                 FROM wan_folded_days
                 WHERE grid_id = $1 AND ($2::bigint IS NULL OR (kind = 0 AND id = $2))
                   AND day_start_ms >= $3 AND day_start_ms < $4
                   AND (day_start_ms, seq) > ($5, $6)
                 ORDER BY day_start_ms, seq LIMIT $7",
                &[
                    &big(grid, "grid id")?,
                    &customer.map(i64::from),
                    &bound(range.from_ms),
                    &bound(range.to_ms),
                    &after_day,
                    &after_seq,
                    &(limit as i64 + 1),
                ],
            )
            .await?;
        let mut rows = got.iter().map(folded_row).collect::<Result<Vec<_>, _>>()?;
        let more = rows.len() > limit;
        rows.truncate(limit);
        let next = more
            .then(|| {
                rows.last().map(|r| FoldedKey {
                    day_start_ms: r.day_start_ms,
                    seq: r.seq,
                })
            })
            .flatten();
        Ok(Page { rows, next })
    }

    async fn prune_before(&self, cutoff_ms: u64) -> Result<Pruned, StoreError> {
        let cutoff = bound(cutoff_ms);
        let c = self.client().await?;
        // Not partitioned (a row per subject and day): deleted by row.
        let folded_days = c
            .execute(
                "DELETE FROM wan_folded_days WHERE day_start_ms < $1",
                &[&cutoff],
            )
            .await?;
        let mut pruned = Pruned {
            folded_days,
            ..Pruned::default()
        };
        for table in PARTITIONED {
            let names: Vec<String> = c
                .query(
                    "SELECT c.relname::text FROM pg_inherits i
                     JOIN pg_class c ON c.oid = i.inhrelid
                     JOIN pg_class p ON p.oid = i.inhparent
                     WHERE p.relname = $1 ORDER BY 1",
                    &[&table],
                )
                .await?
                .iter()
                .map(|r| r.get(0))
                .collect();
            for name in names {
                let Some((start, end)) = partition_month(&name) else {
                    continue;
                };
                if end > cutoff {
                    continue;
                }
                // CONCURRENTLY: ingest into the newer months goes on while it detaches (it
                // runs outside a transaction block, as batch_execute of one statement does).
                c.batch_execute(&format!(
                    "ALTER TABLE {table} DETACH PARTITION {name} CONCURRENTLY"
                ))
                .await?;
                c.batch_execute(&format!("DROP TABLE {name}")).await?;
                self.partitions
                    .lock()
                    .map_err(|_| StoreError::Task("partition cache poisoned".into()))?
                    .remove(&(table, start));
                tracing::info!(partition = %name, "retention: detached and dropped");
                pruned.partitions.push(name);
            }
        }
        Ok(pruned)
    }
}

/// The kind column of a folded day (as `wan_energy_hours.kind`, and 3 for the grid).
fn folded_kind(kind: &str) -> i16 {
    match kind {
        "customer" => 0,
        "feeder" => 1,
        "plant" => 2,
        _ => 3,
    }
}

/// Stores a batch's folded days (in the batch's transaction).
async fn insert_folded(
    tx: &tokio_postgres::Transaction<'_>,
    grid_i: i64,
    rows: &[FoldedDayRow],
) -> Result<(), StoreError> {
    let col = |f: fn(&FoldedDayRow) -> u64, what| -> Result<Vec<i64>, StoreError> {
        rows.iter().map(|r| big(f(r), what)).collect()
    };
    let seq = col(|r| r.seq, "seq")?;
    let day = col(|r| r.day_start_ms, "folded day start")?;
    let id = col(|r| r.id, "folded subject id")?;
    let first = col(|r| r.first_seq, "fold first seq")?;
    let end = col(|r| r.end_seq, "fold end seq")?;
    let records = col(|r| r.records, "folded records")?;
    let energy = col(|r| r.energy_wh, "folded energy")?;
    let lines = col(|r| r.ledger_lines, "folded ledger lines")?;
    let charged = col(|r| r.charged_wh, "folded charged energy")?;
    let held = col(|r| r.held_wh, "folded held energy")?;
    let alarms = col(|r| r.alarms, "folded alarms")?;
    let relays = col(|r| r.relay_commands, "folded relay commands")?;
    let off: Vec<i32> = rows.iter().map(|r| r.utc_offset_min).collect();
    let kind: Vec<i16> = rows.iter().map(|r| folded_kind(&r.kind)).collect();
    let feeder: Vec<i32> = rows.iter().map(|r| i32::from(r.feeder)).collect();
    let charged_mpaisa: Vec<i64> = rows.iter().map(|r| r.charged_mpaisa).collect();
    let fees: Vec<i64> = rows.iter().map(|r| r.fees_mpaisa).collect();
    let credited: Vec<i64> = rows.iter().map(|r| r.credited_mpaisa).collect();
    let backfill: Vec<bool> = rows.iter().map(|r| r.backfill).collect();
    tx.execute(
        "INSERT INTO wan_folded_days (grid_id, seq, day_start_ms, utc_offset_min, kind, id,
             feeder, first_seq, end_seq, records, energy_wh, ledger_lines, charged_wh,
             charged_mpaisa, fees_mpaisa, credited_mpaisa, held_wh, alarms, relay_commands,
             backfill)
         SELECT $1, u.* FROM UNNEST($2::bigint[], $3::bigint[], $4::int4[], $5::int2[],
             $6::bigint[], $7::int4[], $8::bigint[], $9::bigint[], $10::bigint[], $11::bigint[],
             $12::bigint[], $13::bigint[], $14::bigint[], $15::bigint[], $16::bigint[],
             $17::bigint[], $18::bigint[], $19::bigint[], $20::bool[]) AS u
         ON CONFLICT DO NOTHING",
        &[
            &grid_i,
            &seq,
            &day,
            &off,
            &kind,
            &id,
            &feeder,
            &first,
            &end,
            &records,
            &energy,
            &lines,
            &charged,
            &charged_mpaisa,
            &fees,
            &credited,
            &held,
            &alarms,
            &relays,
            &backfill,
        ],
    )
    .await?;
    Ok(())
}

/// A folded day as `folded_days_page` selects it.
fn folded_row(r: &tokio_postgres::Row) -> Result<FoldedDayRow, StoreError> {
    let kind: i16 = r.get(3);
    let feeder: i32 = r.get(5);
    Ok(FoldedDayRow {
        seq: unbig(r.get(0), "seq")?,
        day_start_ms: unbig(r.get(1), "folded day start")?,
        utc_offset_min: r.get(2),
        kind: match kind {
            0 => "customer",
            1 => "feeder",
            2 => "plant",
            _ => "grid",
        }
        .into(),
        id: unbig(r.get(4), "folded subject id")?,
        feeder: u16::try_from(feeder).map_err(|_| StoreError::Corrupt {
            what: "feeder number",
            detail: format!("{feeder}"),
        })?,
        first_seq: unbig(r.get(6), "fold first seq")?,
        end_seq: unbig(r.get(7), "fold end seq")?,
        records: unbig(r.get(8), "folded records")?,
        energy_wh: unbig(r.get(9), "folded energy")?,
        ledger_lines: unbig(r.get(10), "folded ledger lines")?,
        charged_wh: unbig(r.get(11), "folded charged energy")?,
        charged_mpaisa: r.get(12),
        fees_mpaisa: r.get(13),
        credited_mpaisa: r.get(14),
        held_wh: unbig(r.get(15), "folded held energy")?,
        alarms: unbig(r.get(16), "folded alarms")?,
        relay_commands: unbig(r.get(17), "folded relay commands")?,
        backfill: r.get(18),
    })
}

/// An energy hour as the queries select it (hour_start_ms, kind, id, feeder, energy_wh, seq,
/// backfill, utc_offset_min).
fn hour_row(r: &tokio_postgres::Row) -> Result<EnergyHourRow, StoreError> {
    let kind: i16 = r.get(1);
    let feeder: i32 = r.get(3);
    Ok(EnergyHourRow {
        hour_start_ms: unbig(r.get(0), "hour start")?,
        kind: match kind {
            0 => "customer",
            1 => "feeder",
            2 => "plant",
            _ => {
                return Err(StoreError::Corrupt {
                    what: "energy hour kind",
                    detail: format!("{kind}"),
                });
            }
        }
        .into(),
        id: unbig(r.get(2), "energy subject id")?,
        feeder: u16::try_from(feeder).map_err(|_| StoreError::Corrupt {
            what: "feeder",
            detail: format!("{feeder}"),
        })?,
        energy_wh: unbig(r.get(4), "hour energy")?,
        seq: unbig(r.get(5), "seq")?,
        backfill: r.get(6),
        utc_offset_min: r.get(7),
    })
}

/// A record as the queries select it (seq, log_index, log_time_ms, actor, output, backfill).
fn record_row(r: &tokio_postgres::Row) -> Result<(u64, StoredRecord), StoreError> {
    let actor: i16 = r.get(3);
    Ok((
        unbig(r.get(0), "seq")?,
        StoredRecord {
            index: unbig(r.get(1), "log index")?,
            time_ms: unbig(r.get(2), "record log time")?,
            actor: match actor {
                1 => ActorKind::Balancing,
                2 => ActorKind::Billing,
                3 => ActorKind::DemandResponse,
                _ => {
                    return Err(StoreError::Corrupt {
                        what: "record actor",
                        detail: format!("{actor}"),
                    });
                }
            },
            output: r.get(4),
            backfill: r.get(5),
        },
    ))
}

/// (start, end) in Unix ms of the month a partition named `TABLE_yYYYYmMM` holds; `None`
/// for a name of another form (a partition someone else made).
fn partition_month(name: &str) -> Option<(i64, i64)> {
    let suffix = name.rsplit_once("_y")?.1;
    let (y, m) = suffix.split_once('m')?;
    let (y, m): (i64, u32) = (y.parse().ok()?, m.parse().ok()?);
    if !(1..=12).contains(&m) {
        return None;
    }
    let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
    let day_ms = DAY_MS as i64;
    Some((
        days_from_civil(y, m).saturating_mul(day_ms),
        days_from_civil(ny, nm).saturating_mul(day_ms),
    ))
}

/// The partitioned tables, each partitioned by month of its log time.
const PARTITIONED: [&str; 3] = ["wan_records", "wan_ledger", "wan_energy_hours"];

/// A ledger row as the queries select it (customer, seq, at_ms, kind, energy_wh,
/// amount_mpaisa, balance_after_mpaisa, tariff_version, backfill, log_index, friendly,
/// detail, read_from_wh, read_to_wh, read_at_ms).
fn ledger_row(r: &tokio_postgres::Row) -> Result<LedgerRow, StoreError> {
    let customer: i64 = r.get(0);
    let tariff: i64 = r.get(7);
    let corrupt = |what: &'static str, v: i64| StoreError::Corrupt {
        what,
        detail: format!("{v}"),
    };
    Ok(LedgerRow {
        customer: u32::try_from(customer).map_err(|_| corrupt("customer id", customer))?,
        seq: unbig(r.get(1), "seq")?,
        at_ms: unbig(r.get(2), "ledger time")?,
        kind: r.get(3),
        energy_wh: unbig(r.get(4), "ledger energy")?,
        amount_mpaisa: r.get(5),
        balance_after_mpaisa: r.get(6),
        tariff_version: u32::try_from(tariff).map_err(|_| corrupt("tariff version", tariff))?,
        backfill: r.get(8),
        log_index: unbig(r.get(9), "log index")?,
        friendly: r.get(10),
        detail: r.get(11),
        read_from_wh: unbig_opt(r.get(12), "meter register")?,
        read_to_wh: unbig_opt(r.get(13), "meter register")?,
        read_at_ms: unbig_opt(r.get(14), "read time")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn months_have_the_right_bounds() {
        // 2026-12-05 is in December 2026: [2026-12-01, 2027-01-01).
        let t = 1_796_428_800_000 + 3_600_000; // 2026-12-05T01:00:00Z
        let (name, start, end) = month_of(t);
        assert_eq!(name, "y2026m12");
        assert_eq!(start, 1_796_083_200_000); // 2026-12-01
        assert_eq!(end, 1_798_761_600_000); // 2027-01-01
        let (name, start, end) = month_of(0);
        assert_eq!(
            (name.as_str(), start, end),
            ("y1970m01", 0, 31 * DAY_MS as i64)
        );
        // Leap February.
        let (name, start, end) = month_of(951_782_400_000); // 2000-02-29
        assert_eq!(name, "y2000m02");
        assert_eq!((end - start) / DAY_MS as i64, 29);
    }
}
