//! The central's store: redb tables keyed by grid, one write transaction per batch (records,
//! cursor and views together, fsynced before the ack), and the queries.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use ghatta_actor_sdk::{self as sdk, codec as sdk_codec};
use ghatta_proto::codec;
use ghatta_proto::keys::{PublicKey, SecretKey};
use ghatta_proto::outbox::ActorKind;
use ghatta_proto::wan::channel::{AllowedGrids, ChannelError, ReplayCache};
use ghatta_proto::wan::{self as proto, AckBody, BatchBody};
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncWrite};

use crate::backend::Backend;
use crate::error::{ServeError, StoreError};
use crate::localtime::local_day;
use crate::serve::serve_conn;

/// The central's wall clock, Unix ms (back-fill is judged against it).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// (grid, stream) -> next expected seq.
const CURSORS: TableDefinition<(u64, u32), u64> = TableDefinition::new("wan_cursors");
/// (grid, stream, seq) -> bincode StoredRecord.
const RECORDS: TableDefinition<(u64, u32, u64), &[u8]> = TableDefinition::new("wan_records");
/// (grid, customer, seq) -> bincode LedgerRow.
const LEDGER: TableDefinition<(u64, u32, u64), &[u8]> = TableDefinition::new("wan_ledger");
/// (grid, UTC day number) -> Wh charged that day: written by centrals before local days; kept
/// so their files open, no longer written or read.
const ENERGY: TableDefinition<(u64, u64), u64> = TableDefinition::new("wan_energy_day");
/// (grid, local day number) -> Wh of the customers' energy hours that start that local day
/// (each hour under the offset it carries).
const LOCAL_DAYS: TableDefinition<(u64, u64), u64> = TableDefinition::new("wan_energy_local_day");
/// (grid, customer) -> bincode LedgerRow (the newest by log time).
const LATEST: TableDefinition<(u64, u32), &[u8]> = TableDefinition::new("wan_latest_customer");
/// grid -> bincode GridState.
const GRIDS: TableDefinition<u64, &[u8]> = TableDefinition::new("wan_grids");
/// (grid, hour start ms, subject kind 0 customer / 1 feeder / 2 plant, node or customer,
/// feeder) -> bincode EnergyHourRow.
/// grid -> the central's wall clock at its last stored batch, Unix ms (a table of its own so
/// `GridState` in files written before it still decodes).
const LAST_UPLOAD: TableDefinition<u64, u64> = TableDefinition::new("wan_grid_last_upload");
const ENERGY_HOURS: TableDefinition<(u64, u64, u8, u64, u16), &[u8]> =
    TableDefinition::new("wan_energy_hours");
/// (grid, log time ms, customer, seq) -> (energy billed Wh, revenue mpaisa) of the line: the
/// ledger by time, for a day's sums (the fleet view's "today", read without decoding a line)
/// and for retention; filled once from the ledger when a file from before it opens.
const LEDGER_TIME: TableDefinition<(u64, u64, u32, u64), (u64, i64)> =
    TableDefinition::new("wan_ledger_revenue");
/// The index before [`LEDGER_TIME`]: it held a charge's revenue negated (billing writes charges
/// positive), so a file that has it drops it at open and fills the new one from the ledger.
const LEDGER_TIME_V1: TableDefinition<(u64, u64, u32, u64), (u64, i64)> =
    TableDefinition::new("wan_ledger_time");
/// (grid, day start ms, seq) -> bincode FoldedDayRow: the days a grid folded
/// (`Output::Folded`), by day, whose sums the totals add to its detail records'.
const FOLDED: TableDefinition<(u64, u64, u64), &[u8]> = TableDefinition::new("wan_folded_days");

/// How to run the central.
/// One stored record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredRecord {
    /// Log index at the grid.
    pub index: u64,
    /// Log time at the grid, Unix ms.
    pub time_ms: u64,
    /// Producing actor.
    pub actor: ActorKind,
    /// bincode `ghatta_actor_sdk::Output`.
    pub output: Vec<u8>,
    /// Arrived as back-fill.
    pub backfill: bool,
}

/// One ledger line as the central serves it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerRow {
    /// Outbox sequence at the grid.
    pub seq: u64,
    /// Customer.
    pub customer: u32,
    /// Log time of the event, Unix ms.
    pub at_ms: u64,
    /// Charge, Fee, TopUp, ...
    pub kind: String,
    /// Energy billed (Charge only), Wh.
    pub energy_wh: u64,
    /// Amount, mpaisa: what a charge or a fee took from the credit, or a top-up or credit
    /// added to it (positive either way, as billing writes it).
    pub amount_mpaisa: i64,
    /// Credit after the event, mpaisa.
    pub balance_after_mpaisa: i64,
    /// Tariff version.
    pub tariff_version: u32,
    /// Arrived as back-fill.
    pub backfill: bool,
    /// The Raft log index at the grid of the entry that made the line (0: stored by a
    /// central before it was kept).
    pub log_index: u64,
    /// A charge made during friendly hours (it may create debt without a disconnect).
    pub friendly: bool,
    /// What else the line carries, `key=value` pairs joined by `;`: a top-up's `token_id`, an
    /// OpenPAYGO token's `code`, `count`, `value` and `set`, an operator credit's `ref_id`, a
    /// disconnect's or reconnect's `reason`, a held read's `held_wh` and `allowed_wh`, a meter
    /// replacement's `old_final_wh` and `new_read_wh`, an account's set-up (`opened`, `mode`,
    /// `tariff`, `connection_w`, `token_unit_mpaisa`); empty for other lines.
    pub detail: String,
    /// The register billing billed from (the baseline before the read), Wh: on charges and
    /// held reads from grids that send their reads, refused reads, baselines (its own
    /// register); `None` on other lines.
    pub read_from_wh: Option<u64>,
    /// The read's register, Wh (see `read_from_wh`).
    pub read_to_wh: Option<u64>,
    /// When the node read it (node's clock), Unix ms (see `read_from_wh`).
    pub read_at_ms: Option<u64>,
}

/// [`LedgerRow`] as centrals stored it before the meter reads: read back with no read. (bincode
/// writes a nested struct's fields in line, so this is the old row's layout field for field.)
#[derive(Serialize, Deserialize)]
pub(crate) struct LedgerRowV2 {
    pub(crate) v1: LedgerRowV1,
    pub(crate) log_index: u64,
    pub(crate) friendly: bool,
    pub(crate) detail: String,
}

/// [`LedgerRow`] as centrals stored it before the audit fields: read back with log index 0,
/// not friendly, no detail.
#[derive(Serialize, Deserialize)]
pub(crate) struct LedgerRowV1 {
    pub(crate) seq: u64,
    pub(crate) customer: u32,
    pub(crate) at_ms: u64,
    pub(crate) kind: String,
    pub(crate) energy_wh: u64,
    pub(crate) amount_mpaisa: i64,
    pub(crate) balance_after_mpaisa: i64,
    pub(crate) tariff_version: u32,
    pub(crate) backfill: bool,
}

/// A stored ledger row, in any of its layouts.
pub(crate) fn decode_ledger_row(bytes: &[u8]) -> Result<LedgerRow, StoreError> {
    if let Ok(row) = codec::decode::<LedgerRow>(bytes) {
        return Ok(row);
    }
    let r = match codec::decode::<LedgerRowV2>(bytes) {
        Ok(r) => r,
        Err(_) => LedgerRowV2 {
            v1: codec::decode(bytes).map_err(StoreError::corrupt("ledger row"))?,
            log_index: 0,
            friendly: false,
            detail: String::new(),
        },
    };
    Ok(LedgerRow {
        seq: r.v1.seq,
        customer: r.v1.customer,
        at_ms: r.v1.at_ms,
        kind: r.v1.kind,
        energy_wh: r.v1.energy_wh,
        amount_mpaisa: r.v1.amount_mpaisa,
        balance_after_mpaisa: r.v1.balance_after_mpaisa,
        tariff_version: r.v1.tariff_version,
        backfill: r.v1.backfill,
        log_index: r.log_index,
        friendly: r.friendly,
        detail: r.detail,
        read_from_wh: None,
        read_to_wh: None,
        read_at_ms: None,
    })
}

/// One hour of energy of one customer, feeder or plant, as the central serves it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnergyHourRow {
    /// Start of the hour (grid log time), Unix ms: a local hour's start under
    /// `utc_offset_min`.
    pub hour_start_ms: u64,
    /// "customer", "feeder" or "plant".
    pub kind: String,
    /// Customer id (customer), or the node that owns the feeder or plant.
    pub id: u64,
    /// Feeder number on `id` (feeder), else 0.
    pub feeder: u16,
    /// Energy, Wh.
    pub energy_wh: u64,
    /// Outbox sequence at the grid.
    pub seq: u64,
    /// Arrived as back-fill.
    pub backfill: bool,
    /// The grid's UTC offset the hour opened under, minutes (0: a UTC hour, as grids wrote
    /// before local hours).
    pub utc_offset_min: i32,
}

/// [`EnergyHourRow`] as centrals stored it before local hours (UTC hours): read back with
/// offset 0.
#[derive(Deserialize)]
struct EnergyHourRowV1 {
    hour_start_ms: u64,
    kind: String,
    id: u64,
    feeder: u16,
    energy_wh: u64,
    seq: u64,
    backfill: bool,
}

/// A stored energy-hour row, in either layout.
fn decode_hour_row(bytes: &[u8]) -> Result<EnergyHourRow, StoreError> {
    if let Ok(row) = codec::decode::<EnergyHourRow>(bytes) {
        return Ok(row);
    }
    let r: EnergyHourRowV1 = codec::decode(bytes).map_err(StoreError::corrupt("energy hour"))?;
    Ok(EnergyHourRow {
        hour_start_ms: r.hour_start_ms,
        kind: r.kind,
        id: r.id,
        feeder: r.feeder,
        energy_wh: r.energy_wh,
        seq: r.seq,
        backfill: r.backfill,
        utc_offset_min: 0,
    })
}

/// A day a grid folded (`Output::Folded`): the sums of one subject's outbox records of one
/// local day that no central acknowledged within the grid's detail window. The central holds
/// no detail record for what it sums, so every total adds it to the detail it does hold: a
/// customer's `energy_wh` to energy per day and to the customer's energy, `charged_wh` and
/// the charges and fees to the fleet view's day.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FoldedDayRow {
    /// Outbox sequence at the grid of the folded record.
    pub seq: u64,
    /// Start of the local day (grid log time), Unix ms: a local midnight under
    /// `utc_offset_min`.
    pub day_start_ms: u64,
    /// The UTC offset the day is local to, minutes.
    pub utc_offset_min: i32,
    /// "customer", "feeder", "plant" or "grid" (alarms, relay commands of feeders and
    /// ballast, set-points).
    pub kind: String,
    /// Customer id (customer), or the node that owns the feeder or plant; 0 for the grid.
    pub id: u64,
    /// Feeder number on `id` (feeder), else 0.
    pub feeder: u16,
    /// The outbox range of the fold pass that wrote it: `first_seq` to one before `end_seq`.
    pub first_seq: u64,
    /// See `first_seq`.
    pub end_seq: u64,
    /// Outbox records it stands for.
    pub records: u64,
    /// Energy of the folded energy hours, Wh.
    pub energy_wh: u64,
    /// Ledger lines folded.
    pub ledger_lines: u64,
    /// Energy billed by the folded charges, Wh.
    pub charged_wh: u64,
    /// The folded charges' amounts, mpaisa (taken from the credit, as a charge line's).
    pub charged_mpaisa: i64,
    /// The folded fees' amounts, mpaisa (taken from the credit, as a fee line's).
    pub fees_mpaisa: i64,
    /// Credit the folded top-ups and credits added, mpaisa.
    pub credited_mpaisa: i64,
    /// Energy the folded held lines held for review, Wh.
    pub held_wh: u64,
    /// Alarms folded.
    pub alarms: u64,
    /// Relay commands folded.
    pub relay_commands: u64,
    /// Arrived as back-fill.
    pub backfill: bool,
}

impl FoldedDayRow {
    /// The revenue it stands for, mpaisa: what its charges and fees took (as
    /// `fleet::revenue_mpaisa` of a line).
    pub fn revenue_mpaisa(&self) -> i64 {
        self.charged_mpaisa.saturating_add(self.fees_mpaisa)
    }

    /// The local day number it sums (days since 1970-01-01, local time).
    pub fn local_day(&self) -> u64 {
        local_day(self.day_start_ms, self.utc_offset_min)
    }
}

/// The stored row of folded day `f`, outbox sequence `seq` (both stores write the same rows).
pub(crate) fn folded_row_of(seq: u64, f: &sdk::FoldedDay, backfill: bool) -> FoldedDayRow {
    let (kind, id, feeder) = match f.subject {
        sdk::FoldSubject::Customer(c) => ("customer", u64::from(c.0), 0),
        sdk::FoldSubject::Feeder { node, feeder } => ("feeder", node.0, feeder),
        sdk::FoldSubject::Plant(node) => ("plant", node.0, 0),
        sdk::FoldSubject::Grid => ("grid", 0, 0),
    };
    let t = &f.totals;
    FoldedDayRow {
        seq,
        day_start_ms: f.day_start_ms,
        utc_offset_min: f.utc_offset_min,
        kind: kind.into(),
        id,
        feeder,
        first_seq: f.first_seq,
        end_seq: f.end_seq,
        records: u64::from(t.records),
        energy_wh: t.energy_wh,
        ledger_lines: u64::from(t.ledger_lines),
        charged_wh: t.charged_wh,
        charged_mpaisa: t.charged_mpaisa,
        fees_mpaisa: t.fees_mpaisa,
        credited_mpaisa: t.credited_mpaisa,
        held_wh: t.held_wh,
        alarms: u64::from(t.alarms),
        relay_commands: u64::from(t.relay_commands),
        backfill,
    }
}

/// Where a folded-days page ends: the last (day start, seq) it read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct FoldedKey {
    /// Start of the day, Unix ms.
    pub day_start_ms: u64,
    /// Outbox sequence at the grid.
    pub seq: u64,
}

/// The energy hour an output carries and the offset it opened under: a local hour
/// (`EnergyLocal`), or a UTC hour as grids wrote before local hours (`EnergyHour`, offset 0).
pub(crate) fn energy_of(out: &sdk::Output) -> Option<(&sdk::EnergyHour, i32)> {
    match out {
        sdk::Output::EnergyLocal {
            hour,
            utc_offset_min,
        } => Some((hour, *utc_offset_min)),
        sdk::Output::EnergyHour(hour) => Some((hour, 0)),
        _ => None,
    }
}

/// Most rows one page of a query holds (a ledger row is ~250 bytes of JSON, so ~2.5 MB):
/// enough that an export walks a grid's year in a few hundred requests, small enough that
/// one request never builds a grid's whole history in memory.
pub const PAGE_ROWS_MAX: usize = 10_000;
/// Rows a page holds when the request does not say.
pub const PAGE_ROWS_DEFAULT: usize = 1_000;
/// Most stored rows one page request reads when a time range filters rows its key order does
/// not follow (a ledger is keyed by customer and sequence, not time): the page then ends
/// early with a cursor, so a narrow range over a long history costs several cheap requests,
/// never one that reads everything. ~100k rows decode in well under a second.
pub const PAGE_SCAN_ROWS_MAX: usize = 100_000;

/// A half-open window of log time, Unix ms: `from_ms <= t < to_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeRange {
    /// First ms included.
    pub from_ms: u64,
    /// First ms not included.
    pub to_ms: u64,
}

impl TimeRange {
    /// All of time.
    pub const ALL: TimeRange = TimeRange {
        from_ms: 0,
        to_ms: u64::MAX,
    };

    fn contains(&self, t_ms: u64) -> bool {
        self.from_ms <= t_ms && t_ms < self.to_ms
    }
}

/// Where a ledger page ends: the last (customer, seq) it read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct LedgerKey {
    /// Customer.
    pub customer: u32,
    /// Outbox sequence at the grid.
    pub seq: u64,
}

/// Where an energy-hours page ends: the last (hour, subject) it read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct HourKey {
    /// Start of the hour, Unix ms.
    pub hour_start_ms: u64,
    /// 0 customer, 1 feeder, 2 plant.
    pub kind: u8,
    /// Customer id, or the node owning the feeder or plant.
    pub id: u64,
    /// Feeder number, else 0.
    pub feeder: u16,
}

/// One page of a query: its rows and, when more may follow, where the next page starts
/// (after this key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T, K> {
    /// The rows, in key order.
    pub rows: Vec<T>,
    /// The key the next page starts after; `None` when this page is the last.
    pub next: Option<K>,
}

pub(crate) fn energy_key(
    grid: u64,
    h: &sdk::EnergyHour,
) -> ((u64, u64, u8, u64, u16), &'static str) {
    match h.subject {
        sdk::EnergySubject::Customer(c) => {
            ((grid, h.hour_start_ms, 0, u64::from(c.0), 0), "customer")
        }
        sdk::EnergySubject::Feeder { node, feeder } => {
            ((grid, h.hour_start_ms, 1, node.0, feeder), "feeder")
        }
        sdk::EnergySubject::Plant(node) => ((grid, h.hour_start_ms, 2, node.0, 0), "plant"),
    }
}

/// Most grids one fleet view lists: a country's programme is a few hundred grids; beyond
/// this the answer says it was cut short rather than build an unbounded response.
pub const FLEET_GRIDS_MAX: usize = 10_000;

/// One grid in the fleet view.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FleetRow {
    /// Grid id.
    pub grid: u64,
    /// The central's wall clock when a batch of it was last stored, Unix ms (0: before this
    /// was kept).
    pub last_upload_ms: u64,
    /// Newest log time seen, Unix ms.
    pub newest_time_ms: u64,
    /// Records stored.
    pub records: u64,
    /// Next expected seq per stream (every record below it is stored).
    pub cursors: BTreeMap<u32, u64>,
}

/// The latest known state of a grid.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GridState {
    /// Grid id.
    pub grid: u64,
    /// Next expected seq per stream.
    pub cursors: BTreeMap<u32, u64>,
    /// Records stored.
    pub records: u64,
    /// Newest log time seen, Unix ms.
    pub newest_time_ms: u64,
    /// The newest alarm or relay event (debug form).
    pub last_event: Option<String>,
    /// Log time of `last_event`.
    pub last_event_ms: u64,
    /// Ledger records that arrived as back-fill.
    pub backfilled: u64,
}

/// The central's counters (monotonic since start).
#[derive(Debug, Default)]
pub struct CentralStats {
    /// Connections accepted.
    pub connections: AtomicU64,
    /// Handshakes that authenticated a listed grid.
    pub handshakes_ok: AtomicU64,
    /// msg1 did not open: the grid holds another central key, the bytes were tampered with,
    /// or the peer is not a ghatta grid.
    pub refused_handshake: AtomicU64,
    /// A grid id the central does not list.
    pub refused_unknown_grid: AtomicU64,
    /// A listed grid id with a key not listed for it.
    pub refused_unlisted_key: AtomicU64,
    /// A first message seen before.
    pub refused_replayed_handshake: AtomicU64,
    /// No handshake within [`HANDSHAKE_TIMEOUT`].
    pub handshake_timeouts: AtomicU64,
    /// A record did not open after the handshake (tampered, replayed, dropped or reordered).
    pub refused_records: AtomicU64,
    /// A frame that opened but was malformed or named another grid.
    pub refused_frames: AtomicU64,
    /// Batches stored (or recognised as duplicates) and acknowledged.
    pub batches_acked: AtomicU64,
    /// Authenticated connections closed after [`IDLE_TIMEOUT`] without a batch.
    pub idle_closed: AtomicU64,
}

/// A point-in-time copy of [`CentralStats`] (what `/v1/status` serves).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CentralStatsSnapshot {
    /// See [`CentralStats`].
    pub connections: u64,
    /// See [`CentralStats`].
    pub handshakes_ok: u64,
    /// See [`CentralStats`].
    pub refused_handshake: u64,
    /// See [`CentralStats`].
    pub refused_unknown_grid: u64,
    /// See [`CentralStats`].
    pub refused_unlisted_key: u64,
    /// See [`CentralStats`].
    pub refused_replayed_handshake: u64,
    /// See [`CentralStats`].
    pub handshake_timeouts: u64,
    /// See [`CentralStats`].
    pub refused_records: u64,
    /// See [`CentralStats`].
    pub refused_frames: u64,
    /// See [`CentralStats`].
    pub batches_acked: u64,
    /// See [`CentralStats`].
    #[serde(default)]
    pub idle_closed: u64,
}

impl CentralStats {
    /// Copy the counters.
    pub fn snapshot(&self) -> CentralStatsSnapshot {
        let g = |a: &AtomicU64| a.load(Relaxed);
        CentralStatsSnapshot {
            connections: g(&self.connections),
            handshakes_ok: g(&self.handshakes_ok),
            refused_handshake: g(&self.refused_handshake),
            refused_unknown_grid: g(&self.refused_unknown_grid),
            refused_unlisted_key: g(&self.refused_unlisted_key),
            refused_replayed_handshake: g(&self.refused_replayed_handshake),
            handshake_timeouts: g(&self.handshake_timeouts),
            refused_records: g(&self.refused_records),
            refused_frames: g(&self.refused_frames),
            batches_acked: g(&self.batches_acked),
            idle_closed: g(&self.idle_closed),
        }
    }

    /// Count a failed or refused connection by its reason; false for a plain disconnect
    /// (which is weather, not an attack or a misconfiguration).
    fn count(&self, e: &ServeError) -> bool {
        let ServeError::Proto(e) = e else {
            // The store's own failure, or a batch out of order: not the grid's key or
            // channel; logged by the caller, not counted as a refusal.
            return false;
        };
        let c = match e {
            proto::ProtoError::Channel(ChannelError::Handshake(_)) => &self.refused_handshake,
            proto::ProtoError::Channel(ChannelError::UnknownGrid(_)) => &self.refused_unknown_grid,
            proto::ProtoError::Channel(ChannelError::UnlistedKey { .. }) => {
                &self.refused_unlisted_key
            }
            proto::ProtoError::Channel(ChannelError::ReplayedHandshake) => {
                &self.refused_replayed_handshake
            }
            proto::ProtoError::Channel(ChannelError::Record(_)) => &self.refused_records,
            proto::ProtoError::Channel(ChannelError::Malformed(_) | ChannelError::TooLarge)
            | proto::ProtoError::Frame(_)
            | proto::ProtoError::WrongGrid { .. }
            | proto::ProtoError::Body(_) => &self.refused_frames,
            proto::ProtoError::Channel(ChannelError::Io(_) | ChannelError::Refused(_))
            | proto::ProtoError::Io(_) => return false,
        };
        c.fetch_add(1, Relaxed);
        true
    }
}

pub(crate) struct Inner {
    pub(crate) backend: Backend,
    pub(crate) secret: SecretKey,
    pub(crate) grids: AllowedGrids,
    pub(crate) replays: ReplayCache,
    pub(crate) stats: CentralStats,
}

/// The embedded store: one redb file, one write transaction per batch.
pub struct RedbStore {
    pub(crate) db: Database,
    pub(crate) backfill_after_ms: u64,
}

/// The central's store and connection handler without listeners: serves grids over any
/// ordered byte stream ([`CentralStore::serve`]: a TCP connection, or the simulator's WAN link
/// model) and answers the queries. Clones share the store.
#[derive(Clone)]
pub struct CentralStore {
    pub(crate) inner: Arc<Inner>,
}

impl CentralStore {
    /// Open (or create) `central.redb` in `data_dir`.
    pub fn open(
        data_dir: &std::path::Path,
        secret: SecretKey,
        grids: AllowedGrids,
        backfill_after_ms: u64,
    ) -> Result<CentralStore, StoreError> {
        let redb = RedbStore::open(data_dir, backfill_after_ms)?;
        Ok(CentralStore::with_backend(
            Backend::Redb(Arc::new(redb)),
            secret,
            grids,
        ))
    }

    /// A central over any store ([`Backend`]: redb or PostgreSQL).
    pub fn with_backend(backend: Backend, secret: SecretKey, grids: AllowedGrids) -> CentralStore {
        let inner = Arc::new(Inner {
            backend,
            secret,
            grids,
            replays: ReplayCache::default(),
            stats: CentralStats::default(),
        });
        CentralStore { inner }
    }

    /// The store behind this central (what the HTTP routes and the WAN ingest go through).
    pub fn backend(&self) -> &Backend {
        &self.inner.backend
    }

    /// The embedded store, for the synchronous reads below (the simulator's and tests'
    /// checks); with PostgreSQL, read through [`crate::Store`] instead.
    fn embedded(&self) -> Result<&RedbStore, StoreError> {
        match &self.inner.backend {
            Backend::Redb(r) => Ok(r),
            Backend::Postgres(_) => Err(StoreError::NotEmbedded),
        }
    }

    /// Serve one grid connection over `rd`/`wr` until it ends: handshake, then batches in,
    /// acks out. `peer` names the other end in logs. Refusals are counted by reason
    /// ([`CentralStore::stats`]); a plain disconnect is logged, not counted.
    pub async fn serve<R, W>(&self, mut rd: R, mut wr: W, peer: &str)
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        let inner = &self.inner;
        inner.stats.connections.fetch_add(1, Relaxed);
        if let Err(e) = serve_conn(&mut rd, &mut wr, inner).await {
            if inner.stats.count(&e) {
                tracing::warn!(%peer, error = %e, "grid connection refused");
            } else if let ServeError::Store(e) = &e {
                tracing::error!(%peer, error = %e, "grid connection closed: its batch was not stored");
            } else {
                tracing::info!(%peer, error = %e, "grid connection closed");
            }
        }
    }

    /// The central's counters (refusals by reason, handshakes, batches).
    pub fn stats(&self) -> CentralStatsSnapshot {
        self.inner.stats.snapshot()
    }

    /// The central's public key (what grids set as `wan.central_public_key`).
    pub fn public_key(&self) -> PublicKey {
        self.inner.secret.public()
    }

    /// Next expected seq of (grid, stream).
    pub fn cursor(&self, grid: u64, stream: u32) -> Result<u64, StoreError> {
        self.embedded()?.cursor(grid, stream)
    }

    /// Every stored record of (grid, stream), ascending.
    pub fn records(&self, grid: u64, stream: u32) -> Result<Vec<(u64, StoredRecord)>, StoreError> {
        let txn = self.embedded()?.db.begin_read()?;
        let t = txn.open_table(RECORDS)?;
        let mut out = Vec::new();
        for item in t.range((grid, stream, 0)..=(grid, stream, u64::MAX))? {
            let (k, v) = item?;
            out.push((
                k.value().2,
                codec::decode(v.value()).map_err(StoreError::corrupt("record"))?,
            ));
        }
        Ok(out)
    }

    /// Energy per UTC day of a grid: (day number since the epoch, Wh).
    pub fn energy_per_day(&self, grid: u64) -> Result<Vec<(u64, u64)>, StoreError> {
        self.embedded()?.energy_per_day(grid)
    }

    /// Hourly energy rows of a grid, ascending by hour, then customers, feeders, plants.
    pub fn energy_hours(&self, grid: u64) -> Result<Vec<EnergyHourRow>, StoreError> {
        self.embedded()?.energy_hours(grid)
    }

    /// The ledger of a customer (all customers with `None`), ascending by seq per customer.
    pub fn ledger(&self, grid: u64, customer: Option<u32>) -> Result<Vec<LedgerRow>, StoreError> {
        self.embedded()?.ledger(grid, customer)
    }

    /// One page of a grid's ledger (one customer's with `Some`), in (customer, seq) order:
    /// rows whose log time is in `range`, starting after `after`, at most `limit`
    /// (capped at [`PAGE_ROWS_MAX`]) rows and [`PAGE_SCAN_ROWS_MAX`] rows read.
    pub fn ledger_page(
        &self,
        grid: u64,
        customer: Option<u32>,
        range: TimeRange,
        after: Option<LedgerKey>,
        limit: usize,
    ) -> Result<Page<LedgerRow, LedgerKey>, StoreError> {
        self.embedded()?
            .ledger_page(grid, customer, range, after, limit)
    }

    /// One page of a grid's hourly energy rows with the hour's start in `range`, in (hour,
    /// subject) order, starting after `after`, at most `limit` (capped at [`PAGE_ROWS_MAX`]).
    pub fn energy_hours_page(
        &self,
        grid: u64,
        range: TimeRange,
        after: Option<HourKey>,
        limit: usize,
    ) -> Result<Page<EnergyHourRow, HourKey>, StoreError> {
        self.embedded()?
            .energy_hours_page(grid, range, after, limit)
    }

    /// The latest state of a grid and its customers' newest ledger lines.
    pub fn grid_state(&self, grid: u64) -> Result<Option<(GridState, Vec<LedgerRow>)>, StoreError> {
        self.embedded()?.grid_state(grid)
    }
}

impl RedbStore {
    /// Open (or create) `central.redb` in `data_dir`.
    pub fn open(
        data_dir: &std::path::Path,
        backfill_after_ms: u64,
    ) -> Result<RedbStore, StoreError> {
        std::fs::create_dir_all(data_dir).map_err(|source| StoreError::CreateDir {
            dir: data_dir.to_path_buf(),
            source,
        })?;
        let path = data_dir.join("central.redb");
        let db = Database::create(&path).map_err(|source| StoreError::Open {
            path: path.clone(),
            source,
        })?;
        {
            let txn = db.begin_write()?;
            txn.open_table(CURSORS)?;
            txn.open_table(RECORDS)?;
            txn.open_table(LEDGER)?;
            txn.open_table(ENERGY)?;
            txn.open_table(LATEST)?;
            txn.open_table(GRIDS)?;
            txn.open_table(ENERGY_HOURS)?;
            txn.open_table(LAST_UPLOAD)?;
            txn.open_table(FOLDED)?;
            rebuild_local_days(&txn)?;
            txn.delete_table(LEDGER_TIME_V1)?;
            rebuild_ledger_time(&txn)?;
            txn.commit()?;
        }
        Ok(RedbStore {
            db,
            backfill_after_ms,
        })
    }

    /// Next expected seq of (grid, stream).
    pub fn cursor(&self, grid: u64, stream: u32) -> Result<u64, StoreError> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(CURSORS)?;
        Ok(t.get((grid, stream))?.map(|v| v.value()).unwrap_or(0))
    }

    pub(crate) fn energy_per_day(&self, grid: u64) -> Result<Vec<(u64, u64)>, StoreError> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(LOCAL_DAYS)?;
        let mut out = Vec::new();
        for item in t.range((grid, 0)..=(grid, u64::MAX))? {
            let (k, v) = item?;
            out.push((k.value().1, v.value()));
        }
        Ok(out)
    }

    pub(crate) fn energy_hours(&self, grid: u64) -> Result<Vec<EnergyHourRow>, StoreError> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(ENERGY_HOURS)?;
        let mut out = Vec::new();
        for item in t.range((grid, 0, 0, 0, 0)..=(grid, u64::MAX, u8::MAX, u64::MAX, u16::MAX))? {
            let (_, v) = item?;
            out.push(decode_hour_row(v.value())?);
        }
        Ok(out)
    }

    /// The grid's UTC offset in force at each of `times`: that of the newest energy hour
    /// starting at or before it (or of the first hour, for a time before every hour); UTC when
    /// the grid sent no hours. One index lookup per time.
    pub(crate) fn utc_offsets_at(&self, grid: u64, times: &[u64]) -> Result<Vec<i32>, StoreError> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(ENERGY_HOURS)?;
        let first = match t
            .range((grid, 0, 0, 0, 0)..=(grid, u64::MAX, u8::MAX, u64::MAX, u16::MAX))?
            .next()
        {
            Some(item) => decode_hour_row(item?.1.value())?.utc_offset_min,
            None => return Ok(vec![0; times.len()]),
        };
        let mut out = Vec::with_capacity(times.len());
        for &at in times {
            let hit = t
                .range((grid, 0, 0, 0, 0)..=(grid, at, u8::MAX, u64::MAX, u16::MAX))?
                .next_back();
            out.push(match hit {
                Some(item) => decode_hour_row(item?.1.value())?.utc_offset_min,
                None => first,
            });
        }
        Ok(out)
    }

    pub(crate) fn ledger(
        &self,
        grid: u64,
        customer: Option<u32>,
    ) -> Result<Vec<LedgerRow>, StoreError> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(LEDGER)?;
        let (lo, hi) = match customer {
            Some(c) => ((grid, c, 0), (grid, c, u64::MAX)),
            None => ((grid, 0, 0), (grid, u32::MAX, u64::MAX)),
        };
        let mut out = Vec::new();
        for item in t.range(lo..=hi)? {
            let (_, v) = item?;
            out.push(decode_ledger_row(v.value())?);
        }
        Ok(out)
    }

    pub(crate) fn ledger_page(
        &self,
        grid: u64,
        customer: Option<u32>,
        range: TimeRange,
        after: Option<LedgerKey>,
        limit: usize,
    ) -> Result<Page<LedgerRow, LedgerKey>, StoreError> {
        use std::ops::Bound::{Excluded, Included};
        let limit = limit.clamp(1, PAGE_ROWS_MAX);
        let (first, last) = customer.map_or((0, u32::MAX), |c| (c, c));
        let lo = match after {
            Some(k) => Excluded((grid, k.customer, k.seq)),
            None => Included((grid, first, 0)),
        };
        let hi = (grid, last, u64::MAX);
        let empty = Page {
            rows: Vec::new(),
            next: None,
        };
        // An `after` beyond this customer's rows (or before them) reads nothing.
        if after.is_some_and(|k| k.customer > last || k.customer < first) {
            return Ok(empty);
        }
        let txn = self.db.begin_read()?;
        let t = txn.open_table(LEDGER)?;
        let mut rows = Vec::new();
        let mut scanned = 0;
        let mut iter = t.range::<(u64, u32, u64)>((lo, Included(hi)))?;
        for item in iter.by_ref() {
            let (k, v) = item?;
            let (_, customer, seq) = k.value();
            let row = decode_ledger_row(v.value())?;
            scanned += 1;
            if range.contains(row.at_ms) {
                rows.push(row);
            }
            if rows.len() == limit || scanned == PAGE_SCAN_ROWS_MAX {
                let next = iter.next().is_some().then_some(LedgerKey { customer, seq });
                return Ok(Page { rows, next });
            }
        }
        Ok(Page { rows, next: None })
    }

    pub(crate) fn energy_hours_page(
        &self,
        grid: u64,
        range: TimeRange,
        after: Option<HourKey>,
        limit: usize,
    ) -> Result<Page<EnergyHourRow, HourKey>, StoreError> {
        use std::ops::Bound::{Excluded, Included};
        let limit = limit.clamp(1, PAGE_ROWS_MAX);
        if range.to_ms <= range.from_ms {
            return Ok(Page {
                rows: Vec::new(),
                next: None,
            });
        }
        let start = (grid, range.from_ms, 0u8, 0u64, 0u16);
        let lo = match after {
            Some(k) if (grid, k.hour_start_ms, k.kind, k.id, k.feeder) >= start => {
                Excluded((grid, k.hour_start_ms, k.kind, k.id, k.feeder))
            }
            _ => Included(start),
        };
        let hi = (grid, range.to_ms - 1, u8::MAX, u64::MAX, u16::MAX);
        if after.is_some_and(|k| k.hour_start_ms >= range.to_ms) {
            return Ok(Page {
                rows: Vec::new(),
                next: None,
            });
        }
        let txn = self.db.begin_read()?;
        let t = txn.open_table(ENERGY_HOURS)?;
        let mut rows = Vec::new();
        let mut iter = t.range::<(u64, u64, u8, u64, u16)>((lo, Included(hi)))?;
        for item in iter.by_ref() {
            let (k, v) = item?;
            let (_, hour_start_ms, kind, id, feeder) = k.value();
            rows.push(decode_hour_row(v.value())?);
            if rows.len() == limit {
                let next = iter.next().is_some().then_some(HourKey {
                    hour_start_ms,
                    kind,
                    id,
                    feeder,
                });
                return Ok(Page { rows, next });
            }
        }
        Ok(Page { rows, next: None })
    }

    /// One page of a (grid, stream)'s records with log time in `range`, in seq order after
    /// `after`; at most `limit` rows and [`PAGE_SCAN_ROWS_MAX`] rows read (a stream's log
    /// times rise with its seq, so the scan stops at the range's end).
    pub(crate) fn records_page(
        &self,
        grid: u64,
        stream: u32,
        range: TimeRange,
        after: Option<u64>,
        limit: usize,
    ) -> Result<Page<(u64, StoredRecord), u64>, StoreError> {
        use std::ops::Bound::{Excluded, Included};
        let limit = limit.clamp(1, PAGE_ROWS_MAX);
        let lo = match after {
            Some(seq) => Excluded((grid, stream, seq)),
            None => Included((grid, stream, 0)),
        };
        let txn = self.db.begin_read()?;
        let t = txn.open_table(RECORDS)?;
        let mut rows = Vec::new();
        let mut scanned = 0;
        let mut iter = t.range::<(u64, u32, u64)>((lo, Included((grid, stream, u64::MAX))))?;
        for item in iter.by_ref() {
            let (k, v) = item?;
            let seq = k.value().2;
            let rec: StoredRecord =
                codec::decode(v.value()).map_err(StoreError::corrupt("record"))?;
            scanned += 1;
            if rec.time_ms >= range.to_ms {
                return Ok(Page { rows, next: None });
            }
            if range.contains(rec.time_ms) {
                rows.push((seq, rec));
            }
            if rows.len() == limit || scanned == PAGE_SCAN_ROWS_MAX {
                let next = iter.next().is_some().then_some(seq);
                return Ok(Page { rows, next });
            }
        }
        Ok(Page { rows, next: None })
    }

    /// A (grid, stream)'s records logged at or after `since_ms`, newest first, at most `max`.
    pub(crate) fn recent_records(
        &self,
        grid: u64,
        stream: u32,
        since_ms: u64,
        max: usize,
    ) -> Result<Vec<(u64, StoredRecord)>, StoreError> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(RECORDS)?;
        let mut out = Vec::new();
        for item in t.range((grid, stream, 0)..=(grid, stream, u64::MAX))?.rev() {
            let (k, v) = item?;
            let rec: StoredRecord =
                codec::decode(v.value()).map_err(StoreError::corrupt("record"))?;
            if rec.time_ms < since_ms || out.len() == max {
                break;
            }
            out.push((k.value().2, rec));
        }
        Ok(out)
    }

    /// The energy billed (Wh) and the revenue (mpaisa, charges and fees) of a grid's ledger
    /// lines logged in `range`.
    pub(crate) fn ledger_sums(
        &self,
        grid: u64,
        range: TimeRange,
    ) -> Result<(u64, i64), StoreError> {
        if range.to_ms <= range.from_ms {
            return Ok((0, 0));
        }
        let txn = self.db.begin_read()?;
        let by_time = txn.open_table(LEDGER_TIME)?;
        let (mut wh, mut mpaisa) = (0u64, 0i64);
        for item in by_time.range((grid, range.from_ms, 0, 0)..(grid, range.to_ms, 0, 0))? {
            let (line_wh, line_mpaisa) = item?.1.value();
            wh = wh.saturating_add(line_wh);
            mpaisa = mpaisa.saturating_add(line_mpaisa);
        }
        // The days the grid folded stand for lines the central never received.
        let folded = txn.open_table(FOLDED)?;
        for item in folded.range((grid, range.from_ms, 0)..(grid, range.to_ms, 0))? {
            let row = decode_folded_row(item?.1.value())?;
            wh = wh.saturating_add(row.charged_wh);
            mpaisa = mpaisa.saturating_add(row.revenue_mpaisa());
        }
        Ok((wh, mpaisa))
    }

    /// One page of a customer's energy hours with the hour's start in `range`, by hour,
    /// after the hour `after`; at most `limit` rows and [`PAGE_SCAN_ROWS_MAX`] rows read
    /// (the table is keyed by hour, then subject: a page reads every subject's hours).
    pub(crate) fn customer_hours_page(
        &self,
        grid: u64,
        customer: u32,
        range: TimeRange,
        after: Option<u64>,
        limit: usize,
    ) -> Result<Page<EnergyHourRow, u64>, StoreError> {
        use std::ops::Bound::{Excluded, Included};
        let limit = limit.clamp(1, PAGE_ROWS_MAX);
        let from = after.map_or(range.from_ms, |a| a.saturating_add(1).max(range.from_ms));
        if range.to_ms <= from {
            return Ok(Page {
                rows: Vec::new(),
                next: None,
            });
        }
        let txn = self.db.begin_read()?;
        let t = txn.open_table(ENERGY_HOURS)?;
        let mut rows = Vec::new();
        let mut scanned = 0;
        let mut iter = t.range::<(u64, u64, u8, u64, u16)>((
            Included((grid, from, 0, 0, 0)),
            Excluded((grid, range.to_ms, 0, 0, 0)),
        ))?;
        for item in iter.by_ref() {
            let (k, v) = item?;
            let (_, hour, kind, id, _) = k.value();
            scanned += 1;
            if kind == 0 && id == u64::from(customer) {
                rows.push(decode_hour_row(v.value())?);
            }
            if rows.len() == limit || scanned == PAGE_SCAN_ROWS_MAX {
                // The cursor is an hour: finish this hour's subjects first (a customer has
                // one row an hour, so nothing of theirs is left in it once it is read).
                let next = iter.next().is_some().then_some(hour);
                return Ok(Page { rows, next });
            }
        }
        Ok(Page { rows, next: None })
    }

    /// One page of a grid's folded days (one customer's with `Some`) with the day's start in
    /// `range`, by (day, seq), after `after`; at most `limit` rows and
    /// [`PAGE_SCAN_ROWS_MAX`] rows read (a customer's days are among every subject's).
    pub(crate) fn folded_days_page(
        &self,
        grid: u64,
        customer: Option<u32>,
        range: TimeRange,
        after: Option<FoldedKey>,
        limit: usize,
    ) -> Result<Page<FoldedDayRow, FoldedKey>, StoreError> {
        use std::ops::Bound::{Excluded, Included};
        let limit = limit.clamp(1, PAGE_ROWS_MAX);
        let start = (grid, range.from_ms, 0u64);
        let lo = match after {
            Some(k) if (grid, k.day_start_ms, k.seq) >= start => {
                Excluded((grid, k.day_start_ms, k.seq))
            }
            _ => Included(start),
        };
        if range.to_ms <= range.from_ms || after.is_some_and(|k| k.day_start_ms >= range.to_ms) {
            return Ok(Page {
                rows: Vec::new(),
                next: None,
            });
        }
        let txn = self.db.begin_read()?;
        let t = txn.open_table(FOLDED)?;
        let mut rows = Vec::new();
        let mut scanned = 0;
        let mut iter = t.range::<(u64, u64, u64)>((lo, Excluded((grid, range.to_ms, 0))))?;
        for item in iter.by_ref() {
            let (k, v) = item?;
            let (_, day_start_ms, seq) = k.value();
            let row = decode_folded_row(v.value())?;
            scanned += 1;
            if customer.is_none_or(|c| row.kind == "customer" && row.id == u64::from(c)) {
                rows.push(row);
            }
            if rows.len() == limit || scanned == PAGE_SCAN_ROWS_MAX {
                let next = iter
                    .next()
                    .is_some()
                    .then_some(FoldedKey { day_start_ms, seq });
                return Ok(Page { rows, next });
            }
        }
        Ok(Page { rows, next: None })
    }

    /// Deletes what was logged before `cutoff_ms` (records, ledger lines, energy hours,
    /// folded days and local days): the retention setting. Cursors, grid states and customers' newest lines
    /// stay. One write transaction.
    pub(crate) fn prune_before(&self, cutoff_ms: u64) -> Result<crate::fleet::Pruned, StoreError> {
        let mut pruned = crate::fleet::Pruned::default();
        let txn = self.db.begin_write()?;
        {
            let grids: Vec<u64> = {
                let g = txn.open_table(GRIDS)?;
                let mut ids = Vec::new();
                for item in g.iter()? {
                    ids.push(item?.0.value());
                }
                ids
            };
            let mut records = txn.open_table(RECORDS)?;
            let mut ledger = txn.open_table(LEDGER)?;
            let mut by_time = txn.open_table(LEDGER_TIME)?;
            let mut hours = txn.open_table(ENERGY_HOURS)?;
            let mut days = txn.open_table(LOCAL_DAYS)?;
            let mut folded = txn.open_table(FOLDED)?;
            // Records are keyed by seq, not time: the retention run (daily) reads them all.
            let mut old = Vec::new();
            for item in records.iter()? {
                let (k, v) = item?;
                let rec: StoredRecord =
                    codec::decode(v.value()).map_err(StoreError::corrupt("record"))?;
                if rec.time_ms < cutoff_ms {
                    old.push(k.value());
                }
            }
            for k in old {
                records.remove(k)?;
                pruned.records += 1;
            }
            for grid in grids {
                let old: Vec<(u64, u64, u32, u64)> = by_time
                    .range((grid, 0, 0, 0)..(grid, cutoff_ms, 0, 0))?
                    .map(|i| i.map(|(k, _)| k.value()))
                    .collect::<Result<_, _>>()?;
                for k in old {
                    by_time.remove(k)?;
                    ledger.remove((grid, k.2, k.3))?;
                    pruned.ledger += 1;
                }
                let old: Vec<(u64, u64, u8, u64, u16)> = hours
                    .range((grid, 0, 0, 0, 0)..(grid, cutoff_ms, 0, 0, 0))?
                    .map(|i| i.map(|(k, _)| k.value()))
                    .collect::<Result<_, _>>()?;
                for k in old {
                    if let Some(v) = hours.remove(k)? {
                        // A local day is the sum of its stored hours (as PostgreSQL sums
                        // them): a day the cutoff splits keeps its later hours only.
                        let row = decode_hour_row(v.value())?;
                        sub_local_day(&mut days, grid, hour_day(&row))?;
                    }
                    pruned.energy_hours += 1;
                }
                let old: Vec<(u64, u64, u64)> = folded
                    .range((grid, 0, 0)..(grid, cutoff_ms, 0))?
                    .map(|i| i.map(|(k, _)| k.value()))
                    .collect::<Result<_, _>>()?;
                for k in old {
                    if let Some(v) = folded.remove(k)? {
                        sub_local_day(&mut days, grid, folded_day(&decode_folded_row(v.value())?))?;
                    }
                    pruned.folded_days += 1;
                }
            }
        }
        txn.commit()?;
        Ok(pruned)
    }

    pub(crate) fn fleet(&self, limit: usize) -> Result<Vec<FleetRow>, StoreError> {
        let txn = self.db.begin_read()?;
        let grids = txn.open_table(GRIDS)?;
        let uploads = txn.open_table(LAST_UPLOAD)?;
        let mut out = Vec::new();
        for item in grids.iter()?.take(limit) {
            let (k, v) = item?;
            let gs: GridState =
                codec::decode(v.value()).map_err(StoreError::corrupt("grid state"))?;
            out.push(FleetRow {
                grid: k.value(),
                last_upload_ms: uploads.get(k.value())?.map_or(0, |v| v.value()),
                newest_time_ms: gs.newest_time_ms,
                records: gs.records,
                cursors: gs.cursors,
            });
        }
        Ok(out)
    }

    pub(crate) fn grid_state(
        &self,
        grid: u64,
    ) -> Result<Option<(GridState, Vec<LedgerRow>)>, StoreError> {
        let txn = self.db.begin_read()?;
        let g = txn.open_table(GRIDS)?;
        let Some(v) = g.get(grid)? else {
            return Ok(None);
        };
        let state: GridState =
            codec::decode(v.value()).map_err(StoreError::corrupt("grid state"))?;
        let t = txn.open_table(LATEST)?;
        let mut latest = Vec::new();
        for item in t.range((grid, 0)..=(grid, u32::MAX))? {
            let (_, v) = item?;
            latest.push(decode_ledger_row(v.value())?);
        }
        Ok(Some((state, latest)))
    }

    /// Store a batch durably; answers the ack to send. Runs on a blocking thread.
    pub(crate) fn ingest(&self, grid: u64, b: &BatchBody) -> Result<AckBody, StoreError> {
        let mut txn = self.db.begin_write()?;
        // The ack promises durability: fsync before it leaves.
        txn.set_durability(Durability::Immediate)?;
        let now = now_ms();
        let next;
        {
            let mut cursors = txn.open_table(CURSORS)?;
            let have = cursors
                .get((grid, b.stream))?
                .map(|v| v.value())
                .unwrap_or(0);
            if b.first_seq > have {
                // Records in [have, first_seq) are missing: storing this batch would leave a
                // hole the contiguous ack could never cross. Ask for a resend instead.
                return Ok(AckBody {
                    stream: b.stream,
                    next_seq: have,
                    gap: true,
                    batch_first_seq: b.first_seq,
                });
            }
            if b.end_seq <= have {
                // A pure retransmission.
                return Ok(AckBody {
                    stream: b.stream,
                    next_seq: have,
                    gap: false,
                    batch_first_seq: b.first_seq,
                });
            }
            let mut records = txn.open_table(RECORDS)?;
            let mut ledger = txn.open_table(LEDGER)?;
            let mut ledger_time = txn.open_table(LEDGER_TIME)?;
            let mut local_days = txn.open_table(LOCAL_DAYS)?;
            let mut latest = txn.open_table(LATEST)?;
            let mut grids = txn.open_table(GRIDS)?;
            let mut energy_hours = txn.open_table(ENERGY_HOURS)?;
            let mut folded = txn.open_table(FOLDED)?;
            let mut gs: GridState = match grids.get(grid)? {
                Some(v) => codec::decode(v.value()).map_err(StoreError::corrupt("grid state"))?,
                None => GridState {
                    grid,
                    ..GridState::default()
                },
            };
            let mut prev = None;
            for (seq, rec) in &b.records {
                let seq = *seq;
                if seq < have {
                    continue; // Stored before: exactly once.
                }
                if seq < b.first_seq || seq >= b.end_seq || prev.is_some_and(|p| seq <= p) {
                    return Err(StoreError::BatchOrder {
                        grid,
                        seq,
                        first_seq: b.first_seq,
                        end_seq: b.end_seq,
                    });
                }
                prev = Some(seq);
                let mut backfill = now.saturating_sub(rec.time_ms) > self.backfill_after_ms;
                let output = sdk_codec::decode::<sdk::Output>(&rec.output);
                if let Some((hour, utc_offset_min)) = output.as_ref().and_then(energy_of) {
                    let (key, kind) = energy_key(grid, hour);
                    let row = EnergyHourRow {
                        hour_start_ms: hour.hour_start_ms,
                        kind: kind.into(),
                        id: key.3,
                        feeder: key.4,
                        energy_wh: hour.energy_wh,
                        seq,
                        backfill,
                        utc_offset_min,
                    };
                    // A grid closes each (subject, hour) once; a second record for one (a grid
                    // rebuilt from scratch under the same id) does not replace the first.
                    if energy_hours.get(key)?.is_none() {
                        energy_hours.insert(
                            key,
                            codec::encode(&row)
                                .map_err(StoreError::encode("energy hour"))?
                                .as_slice(),
                        )?;
                        add_local_day(&mut local_days, grid, hour_day(&row))?;
                    }
                }
                match &output {
                    Some(sdk::Output::Ledger(l)) => {
                        let c = l.customer.0;
                        let newest: Option<LedgerRow> = match latest.get((grid, c))? {
                            Some(v) => Some(decode_ledger_row(v.value())?),
                            None => None,
                        };
                        if newest.as_ref().is_some_and(|n| l.at_ms < n.at_ms) {
                            backfill = true;
                        }
                        let row = ledger_row_of(seq, rec.index, l, backfill);
                        let bytes =
                            codec::encode(&row).map_err(StoreError::encode("ledger row"))?;
                        ledger.insert((grid, c, seq), bytes.as_slice())?;
                        ledger_time.insert(
                            (grid, l.at_ms, c, seq),
                            (row.energy_wh, crate::fleet::revenue_mpaisa(&row)),
                        )?;
                        if newest.as_ref().is_none_or(|n| l.at_ms >= n.at_ms) {
                            latest.insert((grid, c), bytes.as_slice())?;
                        }
                        if backfill {
                            gs.backfilled += 1;
                        }
                    }
                    // Stored once, as every record: `seq < have` was skipped above, and the
                    // key holds the seq.
                    Some(sdk::Output::Folded(f)) => {
                        let row = folded_row_of(seq, f, backfill);
                        folded.insert(
                            (grid, row.day_start_ms, seq),
                            codec::encode(&row)
                                .map_err(StoreError::encode("folded day"))?
                                .as_slice(),
                        )?;
                        add_local_day(&mut local_days, grid, folded_day(&row))?;
                    }
                    // Only a newer event replaces the latest one (back-fill never does).
                    Some(ev @ (sdk::Output::Alarm(_) | sdk::Output::Relay(_)))
                        if rec.time_ms >= gs.last_event_ms =>
                    {
                        gs.last_event = Some(format!("{ev:?}"));
                        gs.last_event_ms = rec.time_ms;
                    }
                    _ => {}
                }
                let stored = StoredRecord {
                    index: rec.index,
                    time_ms: rec.time_ms,
                    actor: rec.actor,
                    output: rec.output.clone(),
                    backfill,
                };
                records.insert(
                    (grid, b.stream, seq),
                    codec::encode(&stored)
                        .map_err(StoreError::encode("record"))?
                        .as_slice(),
                )?;
                gs.records += 1;
                gs.newest_time_ms = gs.newest_time_ms.max(rec.time_ms);
            }
            next = b.end_seq;
            cursors.insert((grid, b.stream), next)?;
            gs.cursors.insert(b.stream, next);
            txn.open_table(LAST_UPLOAD)?.insert(grid, now)?;
            grids.insert(
                grid,
                codec::encode(&gs)
                    .map_err(StoreError::encode("grid state"))?
                    .as_slice(),
            )?;
        }
        txn.commit()?;
        Ok(AckBody {
            stream: b.stream,
            next_seq: next,
            gap: false,
            batch_first_seq: b.first_seq,
        })
    }
}

/// A customer's energy hour's local day and Wh (feeders and plants are not billed energy).
fn hour_day(row: &EnergyHourRow) -> Option<(u64, u64)> {
    (row.kind == "customer" && row.energy_wh > 0).then(|| {
        (
            local_day(row.hour_start_ms, row.utc_offset_min),
            row.energy_wh,
        )
    })
}

/// A folded customer day's local day and Wh (it stands for the hours folded).
fn folded_day(row: &FoldedDayRow) -> Option<(u64, u64)> {
    (row.kind == "customer" && row.energy_wh > 0).then(|| (row.local_day(), row.energy_wh))
}

/// Adds `energy` (a local day and Wh) to the grid's local days.
fn add_local_day(
    days: &mut redb::Table<'_, (u64, u64), u64>,
    grid: u64,
    energy: Option<(u64, u64)>,
) -> Result<(), StoreError> {
    if let Some((day, wh)) = energy {
        let sum = days.get((grid, day))?.map_or(0, |v| v.value());
        days.insert((grid, day), sum.saturating_add(wh))?;
    }
    Ok(())
}

/// Takes pruned `energy` out of its local day (the day goes when nothing is left).
fn sub_local_day(
    days: &mut redb::Table<'_, (u64, u64), u64>,
    grid: u64,
    energy: Option<(u64, u64)>,
) -> Result<(), StoreError> {
    if let Some((day, wh)) = energy {
        let sum = days.get((grid, day))?.map_or(0, |v| v.value());
        match sum.saturating_sub(wh) {
            0 => days.remove((grid, day))?,
            left => days.insert((grid, day), left)?,
        };
    }
    Ok(())
}

/// A stored folded day.
fn decode_folded_row(bytes: &[u8]) -> Result<FoldedDayRow, StoreError> {
    codec::decode(bytes).map_err(StoreError::corrupt("folded day"))
}

/// Fills the local days from the stored energy hours once, in a file written before them (its
/// hours are UTC hours: their days are UTC days). A file whose local days hold anything, or
/// with no hours, is left as it is.
fn rebuild_local_days(txn: &redb::WriteTransaction) -> Result<(), StoreError> {
    use redb::ReadableTableMetadata;
    let mut days = txn.open_table(LOCAL_DAYS)?;
    if !days.is_empty()? {
        return Ok(());
    }
    let hours = txn.open_table(ENERGY_HOURS)?;
    for item in hours.iter()? {
        let (k, v) = item?;
        add_local_day(
            &mut days,
            k.value().0,
            hour_day(&decode_hour_row(v.value())?),
        )?;
    }
    let folded = txn.open_table(FOLDED)?;
    for item in folded.iter()? {
        let (k, v) = item?;
        add_local_day(
            &mut days,
            k.value().0,
            folded_day(&decode_folded_row(v.value())?),
        )?;
    }
    Ok(())
}

/// Fills the ledger's time index once from the ledger, in a file written before it.
fn rebuild_ledger_time(txn: &redb::WriteTransaction) -> Result<(), StoreError> {
    use redb::ReadableTableMetadata;
    let mut by_time = txn.open_table(LEDGER_TIME)?;
    if !by_time.is_empty()? {
        return Ok(());
    }
    let ledger = txn.open_table(LEDGER)?;
    for item in ledger.iter()? {
        let (k, v) = item?;
        let (grid, customer, seq) = k.value();
        let row = decode_ledger_row(v.value())?;
        by_time.insert(
            (grid, row.at_ms, customer, seq),
            (row.energy_wh, crate::fleet::revenue_mpaisa(&row)),
        )?;
    }
    Ok(())
}

/// The stored row of ledger line `l`, outbox sequence `seq`, from log entry `log_index` (both
/// stores write the same rows).
pub(crate) fn ledger_row_of(
    seq: u64,
    log_index: u64,
    l: &sdk::LedgerRecord,
    backfill: bool,
) -> LedgerRow {
    let (kind, energy_wh, amount_mpaisa) = ledger_fields(&l.kind);
    let (friendly, detail) = ledger_audit(&l.kind);
    let read = l.kind.read();
    LedgerRow {
        seq,
        customer: l.customer.0,
        at_ms: l.at_ms,
        kind,
        energy_wh,
        amount_mpaisa,
        balance_after_mpaisa: l.balance_after_mpaisa,
        tariff_version: l.tariff_version,
        backfill,
        log_index,
        friendly,
        detail,
        read_from_wh: read.map(|r| r.from_wh),
        read_to_wh: read.map(|r| r.to_wh),
        read_at_ms: read.map(|r| r.read_at_ms),
    }
}

/// What an auditor needs of a line beyond its kind and amounts: whether a charge was friendly,
/// and the line's own fields as `key=value;...` ([`LedgerRow::detail`]).
pub(crate) fn ledger_audit(kind: &sdk::LedgerKind) -> (bool, String) {
    use sdk::LedgerKind as K;
    match kind {
        K::Charge { friendly, .. } | K::ChargeRead { friendly, .. } => (*friendly, String::new()),
        K::TopUp { token_id, .. } => (false, format!("token_id={token_id}")),
        K::TokenCredit {
            code,
            count,
            value,
            set,
            ..
        } => (
            false,
            format!("code={code};count={count};value={value};set={set}"),
        ),
        K::OperatorCredit { ref_id, .. } => (false, format!("ref_id={ref_id}")),
        K::Disconnect { reason } | K::Reconnect { reason } => (false, format!("reason={reason:?}")),
        K::Held {
            energy_wh,
            allowed_wh,
        }
        | K::HeldRead {
            energy_wh,
            allowed_wh,
            ..
        } => (
            false,
            format!("held_wh={energy_wh};allowed_wh={allowed_wh}"),
        ),
        K::MeterReplaced {
            old_final_wh,
            new_read_wh,
        } => (
            false,
            format!("old_final_wh={old_final_wh};new_read_wh={new_read_wh}"),
        ),
        K::Account(a) => {
            let mut d = format!(
                "opened={};mode={:?};tariff={};connection_w={}",
                a.opened, a.mode, a.tariff, a.connection_w
            );
            if let Some(unit) = a.token_unit_mpaisa {
                d.push_str(&format!(";token_unit_mpaisa={unit}"));
            }
            (false, d)
        }
        // Their registers are the row's read columns.
        K::Fee { .. } | K::Baseline { .. } | K::ReadRejected { .. } => (false, String::new()),
    }
}

/// A line's kind name, energy billed (Wh) and amount (mpaisa). A charge or a held read that
/// carries its read is named as one that does not: the read is in the row's own columns.
pub(crate) fn ledger_fields(kind: &sdk::LedgerKind) -> (String, u64, i64) {
    let name = match kind {
        sdk::LedgerKind::ChargeRead { .. } => "Charge".to_string(),
        sdk::LedgerKind::HeldRead { .. } => "Held".to_string(),
        _ => {
            let name = format!("{kind:?}");
            name.split([' ', '{', '(']).next().unwrap_or("").to_string()
        }
    };
    match kind {
        sdk::LedgerKind::Charge {
            energy_wh,
            amount_mpaisa,
            ..
        }
        | sdk::LedgerKind::ChargeRead {
            energy_wh,
            amount_mpaisa,
            ..
        } => (name, *energy_wh, *amount_mpaisa),
        sdk::LedgerKind::Fee { amount_mpaisa } => (name, 0, *amount_mpaisa),
        sdk::LedgerKind::TopUp { amount_mpaisa, .. }
        | sdk::LedgerKind::OperatorCredit { amount_mpaisa, .. }
        | sdk::LedgerKind::TokenCredit { amount_mpaisa, .. } => (name, 0, *amount_mpaisa),
        // A `Held` line's energy was not billed: the energy column (and the per-day sums
        // made from it) stays billed energy; the held Wh travel in the record itself.
        _ => (name, 0, 0),
    }
}
