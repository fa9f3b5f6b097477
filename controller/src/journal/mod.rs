//! The field journal (`journal.redb` in the node's data directory): meter reads waiting to be
//! committed, the local telemetry history, the batch in flight, the relay event log and the
//! field loop's derived state, all surviving restarts and power cuts.
//!
//! # What it holds
//!
//! - **Meter reads** (`journal_reads`), keyed by a local id that grows with every append, so
//!   oldest-first is key order. A read leaves the journal only when the proposal carrying it
//!   has committed; nothing else deletes one. Reads are never downsampled or dropped: a limit
//!   reached by reads alone is reported ([`JournalStats::over_limit`]) and the field loop then
//!   journals fewer reads (cumulative registers lose no energy when an intermediate read is
//!   skipped), but the journal itself never refuses or discards a read.
//! - **Telemetry history** (`journal_telemetry`): one summary per batch period (min, max and
//!   last frequency and voltage of the 10 Hz samples). This is the node's own record of what
//!   its grid did, in and out of quorum; only fresh telemetry is ever proposed (see
//!   `field::shipper`). A period without reads is fsynced only once in
//!   [`TELEMETRY_APPENDS_PER_SYNC`] (any durable commit in between carries it too): a power cut
//!   loses at most that many seconds of history, which no restart could propose anyway (it is
//!   stale by then), and a board is spared an fsync a second. Past the byte or record limit
//!   the oldest telemetry is downsampled: [`DOWNSAMPLE_FACTOR`] consecutive summaries become
//!   one, up to [`LEVEL_MAX`]; telemetry older than the retention is deleted.
//! - **The batch in flight** (`journal_blobs["inflight"]`): the sequence number and read-id
//!   range of the one proposal being tried. It is written durably *before* the proposal is
//!   first sent, so after a crash the same reads go out again under the same `(node, seq)` and
//!   the state machine drops the copy if the first one had committed. It is cleared in the
//!   transaction that deletes its reads.
//! - **Relay events** (`journal_events`): every relay the field loop moved, with its reason;
//!   bounded to [`EVENTS_MAX`], oldest deleted first.
//! - **Field state** (`journal_blobs["field_state"]`): the field loop's view of committed
//!   outputs (relay commands, ledger balances) and its outbox cursor, so a restart resumes
//!   without replaying the whole outbox.
//!
//! One file of its own, not a table in `state.redb`: redb has one writer per database, and
//! the journal's fsync every second must never queue behind the state machine's applies (or
//! the other way round).
//!
//! Sizes are counted as encoded key + value bytes ("logical bytes"); redb's pages and B-tree
//! add roughly a third on disk.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use ghatta_hal::RelayLine;
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use ghatta_proto::codec;

/// The journal's file name inside the data directory.
pub const JOURNAL_FILE_NAME: &str = "journal.redb";

/// Meter reads waiting to be committed: read id -> bincode([`ReadEntry`]).
const READS: TableDefinition<u64, &[u8]> = TableDefinition::new("journal_reads");
/// Telemetry history: telemetry id -> bincode([`TelemetryEntry`]).
const TELEMETRY: TableDefinition<u64, &[u8]> = TableDefinition::new("journal_telemetry");
/// Relay events: event id -> bincode([`RelayEvent`]).
const EVENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("journal_events");
/// Counters and id allocators.
const META: TableDefinition<&str, u64> = TableDefinition::new("journal_meta");
/// Single values: the batch in flight, the field loop's state.
const BLOBS: TableDefinition<&str, &[u8]> = TableDefinition::new("journal_blobs");

const KEY_INFLIGHT: &str = "inflight";
const KEY_FIELD_STATE: &str = "field_state";

/// Relay events kept. A relay moves on a trip, a restore or a committed command: even a feeder
/// that trips and restores every 30 s fills 10,000 events in under two days, and an ordinary
/// week has a few hundred. Operators read the recent trips; older ones are in the Raft log's
/// telemetry consequences and the data center.
pub const EVENTS_MAX: u64 = 10_000;
/// Telemetry-only appends per fsync at most: one a minute at one batch period a second. The
/// others commit without an fsync (redb makes them durable with the next fsynced commit), so a
/// power cut loses at most this many periods of telemetry history. Telemetry is proposed only
/// while [`crate::field::shipper::TELEMETRY_FRESH_MS`] fresh, which a rebooted board's lost
/// periods no longer are; meter reads and the batch in flight are always fsynced. The fsync a
/// second saved is most of a board's journal writes (redb rewrites ~10 pages a commit) and of
/// the simulator's time in the journal.
pub const TELEMETRY_APPENDS_PER_SYNC: u32 = 60;
/// Consecutive telemetry summaries merged into one by a downsampling pass: 1 s -> 10 s ->
/// 100 s -> 1,000 s.
pub const DOWNSAMPLE_FACTOR: usize = 10;
/// Highest downsampling level: level 3 is one summary per ~17 minutes (1,000 batch periods),
/// still enough to see the evening peak and an island's frequency excursions.
pub const LEVEL_MAX: u8 = 3;
/// Downsampling runs until the journal is below this share of its limits, so it works in
/// bursts instead of on every append (hysteresis).
pub const DOWNSAMPLE_TARGET_PCT: u64 = 90;
/// Telemetry groups merged per downsampling call at most: bounds one call to about 10,000
/// entries read and 1,000 written, a few ms, so the shipper stays responsive.
pub const DOWNSAMPLE_GROUPS_PER_STEP: usize = 1_000;
/// Default byte limit: 192 MiB of logical bytes. Seven days at default rates for a
/// 350-household board (the top of DOMAIN's 250-350 households per plant): 350 customers x
/// one read a minute x ~24 B = 12.1 MB a day, plus 86,400 telemetry summaries x ~64 B = 5.5
/// MB a day, is about 123 MB a week; 192 MiB leaves room for a bigger board or more feeders
/// before any telemetry is downsampled. (`journal_fits_a_week_at_default_rates` checks the
/// arithmetic with real encodings.)
pub const BYTES_MAX_DEFAULT: u64 = 192 * 1024 * 1024;
/// Default record limit: a week at default rates is 3.5 M reads plus 0.6 M telemetry
/// summaries; 8 M is twice that.
pub const RECORDS_MAX_DEFAULT: u64 = 8_000_000;
/// Telemetry older than this is deleted whatever the limits: 30 days of history (at level 3,
/// about 2,600 summaries) covers a month's review of trips and islands.
pub const TELEMETRY_RETENTION_MS_DEFAULT: u64 = 30 * 24 * 3_600_000;
/// Reads returned by one [`Journal::oldest_reads`] call at most (a proposal carries fewer).
pub const READS_PER_CALL_MAX: usize = 4_096;

/// The journal's limits (`[field.journal]` in the node config).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct JournalLimits {
    /// Logical bytes of reads and telemetry above which telemetry is downsampled.
    pub bytes_max: u64,
    /// Reads plus telemetry summaries above which telemetry is downsampled.
    pub records_max: u64,
    /// Telemetry older than this (by its own timestamp) is deleted, ms.
    pub telemetry_retention_ms: u64,
    /// Fsync every append (true on boards). Tests and benchmarks that model power cuts
    /// themselves may turn it off.
    pub fsync: bool,
}

impl Default for JournalLimits {
    fn default() -> Self {
        JournalLimits {
            bytes_max: BYTES_MAX_DEFAULT,
            records_max: RECORDS_MAX_DEFAULT,
            telemetry_retention_ms: TELEMETRY_RETENTION_MS_DEFAULT,
            fsync: true,
        }
    }
}

/// One meter read waiting to be committed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadEntry {
    /// Grid customer id.
    pub customer: u32,
    /// Cumulative register, Wh.
    pub total_wh: u64,
    /// When the node read it (node clock, Unix ms).
    pub read_at_ms: u64,
}

/// One feeder in a telemetry summary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeederEntry {
    /// Feeder number on this board.
    pub feeder: u16,
    /// Load at the last sample, W.
    pub load_w: u32,
    /// Contactor closed at the last sample.
    pub closed: bool,
}

/// A summary of the grid samples of one batch period (level 0) or of a run of
/// [`DOWNSAMPLE_FACTOR`]^level periods.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TelemetryEntry {
    /// End of the summarised span (node clock, Unix ms).
    pub at_ms: u64,
    /// Length of the span, ms.
    pub span_ms: u64,
    /// Downsampling level (0: one batch period).
    pub level: u8,
    /// Grid samples summarised.
    pub samples: u32,
    /// Lowest frequency, mHz.
    pub frequency_mhz_min: u32,
    /// Highest frequency, mHz.
    pub frequency_mhz_max: u32,
    /// Last frequency, mHz.
    pub frequency_mhz_last: u32,
    /// Lowest voltage, dV.
    pub voltage_dv_min: u32,
    /// Highest voltage, dV.
    pub voltage_dv_max: u32,
    /// Last voltage, dV.
    pub voltage_dv_last: u32,
    /// Generation at the last sample, W.
    pub generation_w: u32,
    /// Ballast power at the last sample, W.
    pub ballast_w: u32,
    /// Ballast capacity at the last sample, W.
    pub ballast_capacity_w: u32,
    /// Feeders at the last sample.
    pub feeders: Vec<FeederEntry>,
}

impl TelemetryEntry {
    /// Merge a run of summaries (oldest first) into one of the next level.
    fn merge(run: &[TelemetryEntry]) -> Option<TelemetryEntry> {
        let first = run.first()?;
        let last = run.last()?;
        let start_ms = first.at_ms.saturating_sub(first.span_ms);
        Some(TelemetryEntry {
            at_ms: last.at_ms,
            span_ms: last.at_ms.saturating_sub(start_ms),
            level: first.level.saturating_add(1),
            samples: run.iter().map(|e| e.samples).fold(0, u32::saturating_add),
            frequency_mhz_min: run.iter().map(|e| e.frequency_mhz_min).min()?,
            frequency_mhz_max: run.iter().map(|e| e.frequency_mhz_max).max()?,
            frequency_mhz_last: last.frequency_mhz_last,
            voltage_dv_min: run.iter().map(|e| e.voltage_dv_min).min()?,
            voltage_dv_max: run.iter().map(|e| e.voltage_dv_max).max()?,
            voltage_dv_last: last.voltage_dv_last,
            generation_w: last.generation_w,
            ballast_w: last.ballast_w,
            ballast_capacity_w: last.ballast_capacity_w,
            feeders: last.feeders.clone(),
        })
    }
}

/// The reason code every relay action carries (the four the issue names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReasonCode {
    /// Local protection (under/over-frequency, voltage) on this board.
    Protection,
    /// The balancing actor (feeder shed/restore, ballast).
    Balancing,
    /// Billing: zero credit or credit restored, committed or enforced locally in an island.
    Billing,
    /// An operator command.
    Operator,
}

impl ReasonCode {
    /// All codes, in stats order.
    pub const ALL: [ReasonCode; 4] = [
        ReasonCode::Protection,
        ReasonCode::Balancing,
        ReasonCode::Billing,
        ReasonCode::Operator,
    ];

    /// Index into per-reason counters.
    pub fn index(self) -> usize {
        match self {
            ReasonCode::Protection => 0,
            ReasonCode::Balancing => 1,
            ReasonCode::Billing => 2,
            ReasonCode::Operator => 3,
        }
    }
}

/// What exactly moved a relay.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Cause {
    /// An under-frequency stage tripped (1-based stage, frequency at the trip).
    Ufls {
        /// Stage number, 1 = the first (highest threshold).
        stage: u8,
        /// Frequency at the trip, mHz.
        frequency_mhz: u32,
    },
    /// Over-frequency switched a ballast stage in.
    OverFrequency {
        /// Frequency at the switch, mHz.
        frequency_mhz: u32,
    },
    /// Over-voltage trip.
    OverVoltage {
        /// Voltage at the trip, dV.
        voltage_dv: u32,
    },
    /// Under-voltage trip.
    UnderVoltage {
        /// Voltage at the trip, dV.
        voltage_dv: u32,
    },
    /// A local hold (protection, island credit) was released; the relay returns to its
    /// committed (or start-up) state.
    Released,
    /// A committed relay command (log index of the entry that produced it).
    Committed {
        /// Log index.
        index: u64,
    },
    /// Island credit enforcement: the local estimate of the balance reached the floor.
    IslandCredit {
        /// Estimated balance, mpaisa.
        estimated_mpaisa: i64,
    },
}

/// One relay action of the field loop.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelayEvent {
    /// When (node clock, Unix ms).
    pub at_ms: u64,
    /// Which relay (board numbering).
    pub line: RelayLine,
    /// Closed (true) or opened.
    pub closed: bool,
    /// Reason code.
    pub reason: ReasonCode,
    /// Details.
    pub cause: Cause,
    /// Decided on this board without consensus (protection, island credit).
    pub local: bool,
    /// The board refused the command (the text says why); the loop retries.
    pub error: Option<String>,
}

/// The proposal being tried: its sequence number and the reads it carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inflight {
    /// `(node, seq)` sequence number, kept for every retry.
    pub seq: u64,
    /// First read id carried (inclusive).
    pub first_read_id: u64,
    /// Reads carried: ids `first_read_id..first_read_id + reads`.
    pub reads: u64,
}

/// Counters, as [`Journal::stats`] returns them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JournalStats {
    /// Reads waiting.
    pub reads: u64,
    /// Their logical bytes.
    pub reads_bytes: u64,
    /// Telemetry summaries kept.
    pub telemetry: u64,
    /// Their logical bytes.
    pub telemetry_bytes: u64,
    /// Relay events kept.
    pub events: u64,
    /// Telemetry summaries merged away by downsampling, ever.
    pub telemetry_downsampled: u64,
    /// Telemetry summaries deleted (retention, or fully downsampled and still over), ever.
    pub telemetry_deleted: u64,
    /// Reads committed and removed, ever.
    pub reads_committed: u64,
    /// Reads and telemetry exceed a limit even after downsampling (reads are never dropped).
    pub over_limit: bool,
}

/// A journal operation failed.
#[derive(Debug, thiserror::Error)]
#[error("journal {path}: cannot {what}: {detail}; {advice}")]
pub struct JournalError {
    /// The journal file.
    pub path: String,
    /// What was being done.
    pub what: &'static str,
    /// The underlying error.
    pub detail: String,
    /// What to do.
    pub advice: &'static str,
}

const ADVICE_IO: &str =
    "check free space and the SD card; the field loop keeps protecting the grid and retries";
const ADVICE_CORRUPT: &str = "the journal file is damaged; move it aside to start a new one (unsent reads in it are then lost)";

/// The journal. Cheap to clone: clones share the database.
#[derive(Clone)]
pub struct Journal {
    db: Arc<Database>,
    path: String,
    limits: JournalLimits,
    // Serialises writers in this process (redb allows one write transaction at a time anyway;
    // this keeps the counters' read-modify-write in step with it).
    write_lock: Arc<Mutex<()>>,
    // Downsampling in progress (between the limit and DOWNSAMPLE_TARGET_PCT of it).
    downsampling: Arc<AtomicBool>,
    // Telemetry-only appends committed without an fsync since the last fsynced commit.
    unsynced_appends: Arc<AtomicU32>,
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// Counter keys in `journal_meta`.
mod k {
    pub const NEXT_READ_ID: &str = "next_read_id";
    pub const NEXT_TELEMETRY_ID: &str = "next_telemetry_id";
    pub const NEXT_EVENT_ID: &str = "next_event_id";
    pub const READS: &str = "reads";
    pub const READS_BYTES: &str = "reads_bytes";
    pub const TELEMETRY: &str = "telemetry";
    pub const TELEMETRY_BYTES: &str = "telemetry_bytes";
    pub const EVENTS: &str = "events";
    pub const DOWNSAMPLED: &str = "telemetry_downsampled";
    pub const DELETED: &str = "telemetry_deleted";
    pub const COMMITTED: &str = "reads_committed";
}

/// Logical size of one record: an 8-byte key plus its value.
fn record_bytes(value: &[u8]) -> u64 {
    8 + value.len() as u64
}

type Meta<'t> = redb::Table<'t, &'static str, u64>;

fn get(meta: &Meta<'_>, key: &str) -> Result<u64, redb::StorageError> {
    Ok(meta.get(key)?.map(|v| v.value()).unwrap_or(0))
}

fn add(meta: &mut Meta<'_>, key: &str, delta: i64) -> Result<(), redb::StorageError> {
    let v = get(meta, key)?.saturating_add_signed(delta);
    meta.insert(key, v)?;
    Ok(())
}

impl Journal {
    /// Open (or create) `journal.redb` in `data_dir` with the default cache.
    pub fn open_dir(data_dir: &Path, limits: JournalLimits) -> Result<Journal, JournalError> {
        Self::open_dir_cached(data_dir, limits, crate::storage::REDB_CACHE_BYTES)
    }

    /// [`Journal::open_dir`] with `cache_bytes` of redb cache (`[storage] cache_kib`).
    pub fn open_dir_cached(
        data_dir: &Path,
        limits: JournalLimits,
        cache_bytes: usize,
    ) -> Result<Journal, JournalError> {
        let path = data_dir.join(JOURNAL_FILE_NAME);
        let name = path.display().to_string();
        std::fs::create_dir_all(data_dir).map_err(|e| JournalError {
            path: name.clone(),
            what: "create the data directory",
            detail: e.to_string(),
            advice: "check the `data_dir` setting and its permissions",
        })?;
        let db = redb::Builder::new()
            .set_cache_size(cache_bytes)
            .create(&path)
            .map_err(|e| {
                // The same three cases as the node's databases: another process holds the
                // lock, the place cannot be written, or something else.
                let (detail, advice) = match e {
                    redb::DatabaseError::DatabaseAlreadyOpen => (
                        "another process has it open".to_string(),
                        "if another ghatta runs on this data directory, stop it first",
                    ),
                    redb::DatabaseError::Storage(redb::StorageError::Io(io))
                        if crate::storage::is_not_writable(&io) =>
                    {
                        (
                            io.to_string(),
                            "the data directory must be writable by the user ghatta runs as, on a filesystem mounted read-write",
                        )
                    }
                    other => (other.to_string(), ADVICE_IO),
                };
                JournalError {
                    path: name.clone(),
                    what: "open",
                    detail,
                    advice,
                }
            })?;
        Self::init(Arc::new(db), name, limits)
    }

    /// Open a journal on any redb backend (the simulator's disks).
    pub fn open_backend(
        backend: impl redb::StorageBackend,
        name: &str,
        limits: JournalLimits,
    ) -> Result<Journal, JournalError> {
        let db = redb::Builder::new()
            .set_cache_size(crate::storage::REDB_CACHE_BYTES)
            .create_with_backend(backend)
            .map_err(|e| JournalError {
                path: name.into(),
                what: "open",
                detail: e.to_string(),
                advice: ADVICE_IO,
            })?;
        Self::init(Arc::new(db), name.into(), limits)
    }

    fn init(
        db: Arc<Database>,
        path: String,
        limits: JournalLimits,
    ) -> Result<Journal, JournalError> {
        let j = Journal {
            db,
            path,
            limits,
            write_lock: Arc::default(),
            downsampling: Arc::default(),
            unsynced_appends: Arc::default(),
        };
        j.write("create its tables", Durability::Immediate, |txn| {
            txn.open_table(READS)?;
            txn.open_table(TELEMETRY)?;
            txn.open_table(EVENTS)?;
            txn.open_table(META)?;
            txn.open_table(BLOBS)?;
            Ok(())
        })?;
        Ok(j)
    }

    /// The limits in force.
    pub fn limits(&self) -> &JournalLimits {
        &self.limits
    }

    fn err(
        &self,
        what: &'static str,
        e: impl std::fmt::Display,
        advice: &'static str,
    ) -> JournalError {
        JournalError {
            path: self.path.clone(),
            what,
            detail: e.to_string(),
            advice,
        }
    }

    fn durability(&self, wanted: Durability) -> Durability {
        if self.limits.fsync {
            wanted
        } else {
            Durability::None
        }
    }

    /// Run `f` in a write transaction and commit it.
    fn write<R>(
        &self,
        what: &'static str,
        durability: Durability,
        f: impl FnOnce(&redb::WriteTransaction) -> Result<R, TxError>,
    ) -> Result<R, JournalError> {
        let _g = self.write_lock.lock().unwrap_or_else(|p| p.into_inner());
        let durability = self.durability(durability);
        crate::storage::blocking(|| {
            let mut txn = self
                .db
                .begin_write()
                .map_err(|e| self.err(what, e, ADVICE_IO))?;
            txn.set_durability(durability)
                .map_err(|e| self.err(what, e, ADVICE_IO))?;
            let r = f(&txn).map_err(|e| match e {
                TxError::Corrupt(d) => self.err(what, d, ADVICE_CORRUPT),
                TxError::Io(d) => self.err(what, d, ADVICE_IO),
            })?;
            txn.commit().map_err(|e| self.err(what, e, ADVICE_IO))?;
            if !matches!(durability, Durability::None) {
                // Everything committed before is durable now.
                self.unsynced_appends.store(0, Ordering::Relaxed);
            }
            Ok(r)
        })
    }

    fn read<R>(
        &self,
        what: &'static str,
        f: impl FnOnce(&redb::ReadTransaction) -> Result<R, TxError>,
    ) -> Result<R, JournalError> {
        let txn = self
            .db
            .begin_read()
            .map_err(|e| self.err(what, e, ADVICE_IO))?;
        f(&txn).map_err(|e| match e {
            TxError::Corrupt(d) => self.err(what, d, ADVICE_CORRUPT),
            TxError::Io(d) => self.err(what, d, ADVICE_IO),
        })
    }

    /// Append one batch period's telemetry summary and meter reads: durably (one fsync) when
    /// it carries reads, else once in [`TELEMETRY_APPENDS_PER_SYNC`] appends.
    pub fn append(
        &self,
        telemetry: Option<&TelemetryEntry>,
        reads: &[ReadEntry],
    ) -> Result<(), JournalError> {
        if telemetry.is_none() && reads.is_empty() {
            return Ok(());
        }
        let encoded_t = telemetry
            .map(codec::encode)
            .transpose()
            .map_err(|e| self.err("encode telemetry", e, "this is a bug; report it"))?;
        let encoded_r = reads
            .iter()
            .map(codec::encode)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| self.err("encode a meter read", e, "this is a bug; report it"))?;
        // The count before this append: fsync the TELEMETRY_APPENDS_PER_SYNC-th. (Without
        // fsyncs at all, `limits.fsync` off, the count only wraps.)
        let durability = if encoded_r.is_empty()
            && self.unsynced_appends.fetch_add(1, Ordering::Relaxed)
                < TELEMETRY_APPENDS_PER_SYNC - 1
        {
            Durability::None
        } else {
            Durability::Immediate
        };
        self.write("append to the journal", durability, |txn| {
            let mut meta = txn.open_table(META)?;
            if let Some(t) = &encoded_t {
                let id = get(&meta, k::NEXT_TELEMETRY_ID)?;
                txn.open_table(TELEMETRY)?.insert(id, t.as_slice())?;
                meta.insert(k::NEXT_TELEMETRY_ID, id + 1)?;
                add(&mut meta, k::TELEMETRY, 1)?;
                add(&mut meta, k::TELEMETRY_BYTES, record_bytes(t) as i64)?;
            }
            if !encoded_r.is_empty() {
                let mut table = txn.open_table(READS)?;
                let mut id = get(&meta, k::NEXT_READ_ID)?;
                let mut bytes = 0;
                for r in &encoded_r {
                    table.insert(id, r.as_slice())?;
                    id += 1;
                    bytes += record_bytes(r);
                }
                meta.insert(k::NEXT_READ_ID, id)?;
                add(&mut meta, k::READS, encoded_r.len() as i64)?;
                add(&mut meta, k::READS_BYTES, bytes as i64)?;
            }
            Ok(())
        })
    }

    /// The oldest waiting reads (at most `limit`, capped at [`READS_PER_CALL_MAX`]), with
    /// their ids, oldest first.
    pub fn oldest_reads(&self, limit: usize) -> Result<Vec<(u64, ReadEntry)>, JournalError> {
        self.reads_from(0, limit)
    }

    /// Waiting reads with id >= `from`, oldest first, at most `limit`.
    pub fn reads_from(
        &self,
        from: u64,
        limit: usize,
    ) -> Result<Vec<(u64, ReadEntry)>, JournalError> {
        let limit = limit.min(READS_PER_CALL_MAX);
        self.read("read meter reads", |txn| {
            let table = txn.open_table(READS)?;
            let mut out = Vec::new();
            for item in table.range(from..)?.take(limit) {
                let (key, value) = item?;
                let entry: ReadEntry = decode(value.value(), "journal_reads")?;
                out.push((key.value(), entry));
            }
            Ok(out)
        })
    }

    /// The reads of an in-flight batch, in id order. A read missing from the range means the
    /// journal was edited behind our back; the batch is sent with what is there.
    pub fn batch_reads(&self, b: &Inflight) -> Result<Vec<ReadEntry>, JournalError> {
        let end = b.first_read_id.saturating_add(b.reads);
        self.read("read a batch", |txn| {
            let table = txn.open_table(READS)?;
            let mut out = Vec::new();
            for item in table.range(b.first_read_id..end)? {
                let (_, value) = item?;
                out.push(decode(value.value(), "journal_reads")?);
            }
            Ok(out)
        })
    }

    /// The batch in flight, if any.
    pub fn inflight(&self) -> Result<Option<Inflight>, JournalError> {
        self.read("read the batch in flight", |txn| {
            let blobs = txn.open_table(BLOBS)?;
            match blobs.get(KEY_INFLIGHT)? {
                Some(v) => Ok(Some(decode(v.value(), "journal_blobs.inflight")?)),
                None => Ok(None),
            }
        })
    }

    /// Record the batch about to be proposed. Durable when it carries reads (so a restart
    /// retries them under the same sequence number); a telemetry-only batch is not worth an
    /// fsync (if the record is lost, its sequence number is simply never used again).
    pub fn begin_batch(&self, b: &Inflight) -> Result<(), JournalError> {
        let bytes = codec::encode(b)
            .map_err(|e| self.err("encode a batch", e, "this is a bug; report it"))?;
        let durability = if b.reads > 0 {
            Durability::Immediate
        } else {
            Durability::None
        };
        self.write("record the batch in flight", durability, |txn| {
            txn.open_table(BLOBS)?
                .insert(KEY_INFLIGHT, bytes.as_slice())?;
            Ok(())
        })
    }

    /// The batch `seq` committed: delete its reads and forget it, returning the reads. Not
    /// fsynced: if a power cut loses this, the batch is proposed again with the same sequence
    /// number and the state machine drops it as a duplicate.
    pub fn commit_batch(&self, seq: u64) -> Result<Vec<ReadEntry>, JournalError> {
        self.write("remove a committed batch", Durability::None, |txn| {
            let mut blobs = txn.open_table(BLOBS)?;
            let b: Inflight = match blobs.get(KEY_INFLIGHT)? {
                Some(v) => decode(v.value(), "journal_blobs.inflight")?,
                None => return Ok(Vec::new()),
            };
            if b.seq != seq {
                return Ok(Vec::new());
            }
            blobs.remove(KEY_INFLIGHT)?;
            let mut table = txn.open_table(READS)?;
            let end = b.first_read_id.saturating_add(b.reads);
            let mut out = Vec::new();
            let mut bytes = 0;
            for item in table.range(b.first_read_id..end)? {
                let (_, value) = item?;
                bytes += record_bytes(value.value());
                out.push(decode::<ReadEntry>(value.value(), "journal_reads")?);
            }
            table.retain_in(b.first_read_id..end, |_, _| false)?;
            let mut meta = txn.open_table(META)?;
            add(&mut meta, k::READS, -(out.len() as i64))?;
            add(&mut meta, k::READS_BYTES, -(bytes as i64))?;
            add(&mut meta, k::COMMITTED, out.len() as i64)?;
            Ok(out)
        })
    }

    /// Telemetry summaries with id >= `from`, oldest first, at most `limit`.
    pub fn telemetry_from(
        &self,
        from: u64,
        limit: usize,
    ) -> Result<Vec<(u64, TelemetryEntry)>, JournalError> {
        self.read("read telemetry", |txn| {
            let table = txn.open_table(TELEMETRY)?;
            let mut out = Vec::new();
            for item in table.range(from..)?.take(limit) {
                let (key, value) = item?;
                out.push((key.value(), decode(value.value(), "journal_telemetry")?));
            }
            Ok(out)
        })
    }

    /// The oldest telemetry summaries with their stored sizes (for downsampling).
    fn telemetry_scan(
        &self,
        limit: usize,
    ) -> Result<Vec<(u64, TelemetryEntry, u64)>, JournalError> {
        self.read("scan telemetry", |txn| {
            let table = txn.open_table(TELEMETRY)?;
            let mut out = Vec::new();
            for item in table.iter()?.take(limit) {
                let (key, value) = item?;
                let bytes = record_bytes(value.value());
                out.push((
                    key.value(),
                    decode(value.value(), "journal_telemetry")?,
                    bytes,
                ));
            }
            Ok(out)
        })
    }

    /// Record a relay event, deleting the oldest beyond [`EVENTS_MAX`]. Not fsynced on its own:
    /// the next append (within a second) makes it durable.
    pub fn record_events(&self, events: &[RelayEvent]) -> Result<(), JournalError> {
        if events.is_empty() {
            return Ok(());
        }
        let encoded = events
            .iter()
            .map(codec::encode)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| self.err("encode a relay event", e, "this is a bug; report it"))?;
        self.write("record relay events", Durability::None, |txn| {
            let mut meta = txn.open_table(META)?;
            let mut table = txn.open_table(EVENTS)?;
            let mut id = get(&meta, k::NEXT_EVENT_ID)?;
            for e in &encoded {
                table.insert(id, e.as_slice())?;
                id += 1;
            }
            meta.insert(k::NEXT_EVENT_ID, id)?;
            let mut count = get(&meta, k::EVENTS)? + encoded.len() as u64;
            while count > EVENTS_MAX {
                if table.pop_first()?.is_none() {
                    break;
                }
                count -= 1;
            }
            meta.insert(k::EVENTS, count)?;
            Ok(())
        })
    }

    /// The most recent relay events, oldest first, at most `limit`.
    pub fn recent_events(&self, limit: usize) -> Result<Vec<RelayEvent>, JournalError> {
        self.read("read relay events", |txn| {
            let table = txn.open_table(EVENTS)?;
            let mut out = Vec::new();
            for item in table.iter()?.rev().take(limit) {
                let (_, value) = item?;
                out.push(decode(value.value(), "journal_events")?);
            }
            out.reverse();
            Ok(out)
        })
    }

    /// Save the field loop's state (not fsynced: the next append makes it durable, and an
    /// older copy only makes the loop re-read part of the outbox).
    pub fn save_field_state(&self, bytes: &[u8]) -> Result<(), JournalError> {
        self.write("save the field state", Durability::None, |txn| {
            txn.open_table(BLOBS)?.insert(KEY_FIELD_STATE, bytes)?;
            Ok(())
        })
    }

    /// The field loop's saved state, if any.
    pub fn load_field_state(&self) -> Result<Option<Vec<u8>>, JournalError> {
        self.read("load the field state", |txn| {
            Ok(txn
                .open_table(BLOBS)?
                .get(KEY_FIELD_STATE)?
                .map(|v| v.value().to_vec()))
        })
    }

    /// Counters.
    pub fn stats(&self) -> Result<JournalStats, JournalError> {
        self.read("read its counters", |txn| {
            let meta = txn.open_table(META)?;
            let g = |key: &str| -> Result<u64, TxError> {
                Ok(meta.get(key)?.map(|v| v.value()).unwrap_or(0))
            };
            let mut s = JournalStats {
                reads: g(k::READS)?,
                reads_bytes: g(k::READS_BYTES)?,
                telemetry: g(k::TELEMETRY)?,
                telemetry_bytes: g(k::TELEMETRY_BYTES)?,
                events: g(k::EVENTS)?,
                telemetry_downsampled: g(k::DOWNSAMPLED)?,
                telemetry_deleted: g(k::DELETED)?,
                reads_committed: g(k::COMMITTED)?,
                over_limit: false,
            };
            s.over_limit = self.over(&s, 100);
            Ok(s)
        })
    }

    /// Whether the journal is above `pct` percent of a limit.
    fn over(&self, s: &JournalStats, pct: u64) -> bool {
        let bytes = s.reads_bytes + s.telemetry_bytes;
        let records = s.reads + s.telemetry;
        bytes.saturating_mul(100) > self.limits.bytes_max.saturating_mul(pct)
            || records.saturating_mul(100) > self.limits.records_max.saturating_mul(pct)
    }

    /// Keep the journal within its limits: delete telemetry past the retention, then, while
    /// above the limits, downsample the oldest telemetry (and, once all of it is at
    /// [`LEVEL_MAX`], delete the oldest summaries). Never touches reads. Does a bounded
    /// amount of work per call ([`DOWNSAMPLE_GROUPS_PER_STEP`]); call it again while it
    /// returns `true` (more to do).
    pub fn maintain(&self, now_ms: u64) -> Result<bool, JournalError> {
        let retention_cut = now_ms.saturating_sub(self.limits.telemetry_retention_ms);
        // Retention first: cheap and always due.
        let expired = self.read("scan telemetry", |txn| {
            let table = txn.open_table(TELEMETRY)?;
            let mut ids = Vec::new();
            for item in table.iter()?.take(DOWNSAMPLE_GROUPS_PER_STEP) {
                let (key, value) = item?;
                let e: TelemetryEntry = decode(value.value(), "journal_telemetry")?;
                if e.at_ms >= retention_cut {
                    break;
                }
                ids.push(key.value());
            }
            Ok(ids)
        })?;
        if !expired.is_empty() {
            self.delete_telemetry(&expired)?;
            return Ok(true);
        }
        // Hysteresis: start above the limit, go on until below DOWNSAMPLE_TARGET_PCT of it.
        let stats = self.stats()?;
        if self.over(&stats, 100) {
            self.downsampling.store(true, Ordering::Relaxed);
        }
        if !self.over(&stats, DOWNSAMPLE_TARGET_PCT) {
            self.downsampling.store(false, Ordering::Relaxed);
        }
        if !self.downsampling.load(Ordering::Relaxed) {
            return Ok(false);
        }
        // Only as much as brings the journal under the target: each call thins the oldest
        // telemetry a little further instead of the whole history at once.
        let target = |max: u64| max / 100 * DOWNSAMPLE_TARGET_PCT;
        let excess_bytes = (stats.reads_bytes + stats.telemetry_bytes)
            .saturating_sub(target(self.limits.bytes_max));
        let excess_records =
            (stats.reads + stats.telemetry).saturating_sub(target(self.limits.records_max));
        let (mut saved_bytes, mut saved_records) = (0u64, 0u64);
        let enough = |b: u64, r: u64| b >= excess_bytes && r >= excess_records;
        // Groups of DOWNSAMPLE_FACTOR consecutive summaries of one level below LEVEL_MAX,
        // oldest first; and the oldest summaries already at LEVEL_MAX before the first group.
        let scan_limit = DOWNSAMPLE_GROUPS_PER_STEP * DOWNSAMPLE_FACTOR * 2;
        let entries = self.telemetry_scan(scan_limit)?;
        let mut groups: Vec<Vec<(u64, TelemetryEntry)>> = Vec::new();
        let mut run: Vec<(u64, TelemetryEntry)> = Vec::new();
        let mut run_bytes = 0u64;
        let mut coarse_prefix: Vec<u64> = Vec::new();
        let (mut prefix_bytes, mut prefix_records) = (0u64, 0u64);
        for (id, e, bytes) in entries {
            if e.level >= LEVEL_MAX {
                if groups.is_empty()
                    && run.is_empty()
                    && coarse_prefix.len() < DOWNSAMPLE_GROUPS_PER_STEP
                    && !enough(prefix_bytes, prefix_records)
                {
                    coarse_prefix.push(id);
                    prefix_bytes += bytes;
                    prefix_records += 1;
                }
                run.clear();
                run_bytes = 0;
                continue;
            }
            if run.last().is_some_and(|(_, r)| r.level != e.level) {
                run.clear();
                run_bytes = 0;
            }
            run.push((id, e));
            run_bytes += bytes;
            if run.len() == DOWNSAMPLE_FACTOR {
                groups.push(std::mem::take(&mut run));
                // A merged summary is about the size of one of its parts.
                saved_bytes += run_bytes - run_bytes / DOWNSAMPLE_FACTOR as u64;
                saved_records += DOWNSAMPLE_FACTOR as u64 - 1;
                run_bytes = 0;
                if groups.len() >= DOWNSAMPLE_GROUPS_PER_STEP || enough(saved_bytes, saved_records)
                {
                    break;
                }
            }
        }
        if groups.is_empty() {
            // Everything old is as coarse as it gets: the oldest coarse summaries go.
            if coarse_prefix.is_empty() {
                // Nothing left to thin: the reads alone fill the journal (they are never
                // dropped); `over_limit` tells the field loop to journal fewer.
                self.downsampling.store(false, Ordering::Relaxed);
                return Ok(false);
            }
            self.delete_telemetry(&coarse_prefix)?;
            return Ok(true);
        }
        let mut merged: Vec<(Vec<u64>, Vec<u8>)> = Vec::new();
        for g in &groups {
            let entries: Vec<TelemetryEntry> = g.iter().map(|(_, e)| e.clone()).collect();
            let Some(m) = TelemetryEntry::merge(&entries) else {
                continue;
            };
            let bytes = codec::encode(&m)
                .map_err(|e| self.err("encode telemetry", e, "this is a bug; report it"))?;
            merged.push((g.iter().map(|(id, _)| *id).collect(), bytes));
        }
        self.write("downsample telemetry", Durability::None, |txn| {
            let mut table = txn.open_table(TELEMETRY)?;
            let mut removed: i64 = 0;
            let mut bytes_delta: i64 = 0;
            for (ids, bytes) in &merged {
                for id in ids {
                    if let Some(old) = table.remove(*id)? {
                        bytes_delta -= record_bytes(old.value()) as i64;
                        removed += 1;
                    }
                }
                // The merged summary keeps the first id, so id order stays time order.
                if let Some(first) = ids.first() {
                    table.insert(*first, bytes.as_slice())?;
                    bytes_delta += record_bytes(bytes) as i64;
                    removed -= 1;
                }
            }
            let mut meta = txn.open_table(META)?;
            add(&mut meta, k::TELEMETRY, -removed)?;
            add(&mut meta, k::TELEMETRY_BYTES, bytes_delta)?;
            add(&mut meta, k::DOWNSAMPLED, removed)?;
            Ok(())
        })?;
        let after = self.stats()?;
        Ok(self.over(&after, DOWNSAMPLE_TARGET_PCT))
    }

    fn delete_telemetry(&self, ids: &[u64]) -> Result<(), JournalError> {
        self.write("delete old telemetry", Durability::None, |txn| {
            let mut table = txn.open_table(TELEMETRY)?;
            let mut n = 0i64;
            let mut bytes = 0i64;
            for id in ids {
                if let Some(old) = table.remove(*id)? {
                    n += 1;
                    bytes += record_bytes(old.value()) as i64;
                }
            }
            let mut meta = txn.open_table(META)?;
            add(&mut meta, k::TELEMETRY, -n)?;
            add(&mut meta, k::TELEMETRY_BYTES, -bytes)?;
            add(&mut meta, k::DELETED, n)?;
            Ok(())
        })
    }
}

/// Errors inside a transaction closure.
enum TxError {
    Io(String),
    Corrupt(String),
}

macro_rules! io_from {
    ($($t:ty),*) => {$(
        impl From<$t> for TxError {
            fn from(e: $t) -> Self {
                TxError::Io(e.to_string())
            }
        }
    )*};
}
io_from!(redb::StorageError, redb::TableError);

fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8], table: &str) -> Result<T, TxError> {
    codec::decode(bytes)
        .map_err(|e| TxError::Corrupt(format!("a record in {table} does not decode: {e}")))
}
