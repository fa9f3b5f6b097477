//! `ghatta central`: the data-center side. Accepts batches from many grids over encrypted
//! channels (`wan::channel`: each grid authenticates with an X25519 key the central lists
//! for its grid id, the central with its own key pair), stores them in
//! redb with an fsync before acknowledging, dedupes by (grid, stream, seq), acknowledges the
//! highest contiguous sequence per (grid, stream), and serves HTTP/JSON (and CSV) queries on a
//! separate loopback port.
//!
//! Live versus back-filled: a record is marked `backfill` when it arrives more than
//! `backfill_after_ms` after its log time (it was buffered through an outage), or when it is
//! older than the newest value already stored for that customer. The latest-state views
//! (balance per customer, last event per grid) are only ever replaced by a record at least as
//! new, so back-fill never overwrites a newer live value.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use ghatta_actor_sdk::{self as sdk, codec as sdk_codec};
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;

use super::channel::{self, AllowedGrids, ChannelError, ReplayCache};
use super::proto::{self, AckBody, BatchBody, Msg};
use crate::actors::ActorKind;
use crate::net::secure::{PublicKey, SecretKey};
use crate::raft::codec;
use crate::storage::io_err;

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
/// after 10 minutes (`wan::client::SESSION_IDLE_CLOSE`): 15 min of silence is a half-open TCP
/// connection whose grid rebooted or lost its satellite link, or a peer holding one of the
/// [`MAX_CONNECTIONS`] slots; the grid reconnects (one handshake) when it has records again.
pub const IDLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(15 * 60);
/// One UTC day, ms (energy per day is summed by UTC day of the record's log time).
const DAY_MS: u64 = 86_400_000;

/// (grid, stream) -> next expected seq.
const CURSORS: TableDefinition<(u64, u32), u64> = TableDefinition::new("wan_cursors");
/// (grid, stream, seq) -> bincode StoredRecord.
const RECORDS: TableDefinition<(u64, u32, u64), &[u8]> = TableDefinition::new("wan_records");
/// (grid, customer, seq) -> bincode LedgerRow.
const LEDGER: TableDefinition<(u64, u32, u64), &[u8]> = TableDefinition::new("wan_ledger");
/// (grid, UTC day number) -> Wh charged that day.
const ENERGY: TableDefinition<(u64, u64), u64> = TableDefinition::new("wan_energy_day");
/// (grid, customer) -> bincode LedgerRow (the newest by log time).
const LATEST: TableDefinition<(u64, u32), &[u8]> = TableDefinition::new("wan_latest_customer");
/// grid -> bincode GridState.
const GRIDS: TableDefinition<u64, &[u8]> = TableDefinition::new("wan_grids");
/// (grid, hour start ms, subject kind 0 customer / 1 feeder / 2 plant, node or customer,
/// feeder) -> bincode EnergyHourRow.
const ENERGY_HOURS: TableDefinition<(u64, u64, u8, u64, u16), &[u8]> =
    TableDefinition::new("wan_energy_hours");

/// How to run the central.
#[derive(Debug, Clone)]
pub struct CentralConfig {
    /// Batch listener (grids connect here over the WAN), host:port.
    pub listen: String,
    /// HTTP/JSON query listener; keep it on loopback (operators reach it through SSH).
    pub http_listen: String,
    /// Directory of `central.redb`.
    pub data_dir: PathBuf,
    /// The central's own private key (grids hold its public half as `wan.central_public_key`).
    pub secret: SecretKey,
    /// The public keys allowed per grid id.
    pub grids: AllowedGrids,
    /// See [`BACKFILL_AFTER_MS_DEFAULT`].
    pub backfill_after_ms: u64,
}

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
    /// Amount (charges and fees negative-going, top-ups positive), mpaisa.
    pub amount_mpaisa: i64,
    /// Credit after the event, mpaisa.
    pub balance_after_mpaisa: i64,
    /// Tariff version.
    pub tariff_version: u32,
    /// Arrived as back-fill.
    pub backfill: bool,
}

/// One hour of energy of one customer, feeder or plant, as the central serves it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnergyHourRow {
    /// Start of the UTC hour (grid log time), Unix ms.
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
}

fn energy_key(grid: u64, h: &sdk::EnergyHour) -> ((u64, u64, u8, u64, u16), &'static str) {
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
    fn count(&self, e: &proto::ProtoError) -> bool {
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

struct Inner {
    db: Database,
    secret: SecretKey,
    grids: AllowedGrids,
    replays: ReplayCache,
    stats: CentralStats,
    backfill_after_ms: u64,
}

/// The central's store and connection handler without listeners: serves grids over any
/// ordered byte stream ([`CentralStore::serve`]: a TCP connection, or the simulator's WAN link
/// model) and answers the queries. Clones share the store.
#[derive(Clone)]
pub struct CentralStore {
    inner: Arc<Inner>,
}

/// A running central: its store plus the TCP batch listener and the HTTP API (every query of
/// [`CentralStore`] is available on it). Dropping it stops its listeners.
pub struct Central {
    store: CentralStore,
    /// Where grids connect.
    pub batch_addr: SocketAddr,
    /// Where the HTTP API listens.
    pub http_addr: SocketAddr,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Central {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl std::ops::Deref for Central {
    type Target = CentralStore;

    fn deref(&self) -> &CentralStore {
        &self.store
    }
}

impl Central {
    /// Open the store and start both listeners.
    pub async fn start(cfg: CentralConfig) -> anyhow::Result<Central> {
        let store =
            CentralStore::open(&cfg.data_dir, cfg.secret, cfg.grids, cfg.backfill_after_ms)?;
        let batch = TcpListener::bind(&cfg.listen).await.map_err(|e| {
            anyhow::anyhow!(
                "cannot listen for grids on {}: {e}; is the port in use?",
                cfg.listen
            )
        })?;
        let http = TcpListener::bind(&cfg.http_listen).await.map_err(|e| {
            anyhow::anyhow!(
                "cannot listen for HTTP queries on {}: {e}; is the port in use?",
                cfg.http_listen
            )
        })?;
        let batch_addr = batch.local_addr()?;
        let http_addr = http.local_addr()?;
        let mut tasks = Vec::new();
        tasks.push(tokio::spawn(accept_loop(batch, store.clone())));
        let router = router(store.inner.clone());
        tasks.push(tokio::spawn(async move {
            if let Err(e) = axum::serve(http, router).await {
                tracing::error!(error = %e, "central HTTP API stopped");
            }
        }));
        Ok(Central {
            store,
            batch_addr,
            http_addr,
            tasks,
        })
    }

    /// The store behind the listeners (to serve connections that do not come through TCP).
    pub fn store(&self) -> &CentralStore {
        &self.store
    }
}

impl CentralStore {
    /// Open (or create) `central.redb` in `data_dir`.
    pub fn open(
        data_dir: &std::path::Path,
        secret: SecretKey,
        grids: AllowedGrids,
        backfill_after_ms: u64,
    ) -> anyhow::Result<CentralStore> {
        std::fs::create_dir_all(data_dir).map_err(|e| {
            anyhow::anyhow!(
                "cannot create central data dir {}: {e}; check --data and permissions",
                data_dir.display()
            )
        })?;
        let path = data_dir.join("central.redb");
        let db = Database::create(&path).map_err(|e| {
            anyhow::anyhow!(
                "cannot open {}: {e}; is another central running on it?",
                path.display()
            )
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
            txn.commit()?;
        }
        let inner = Arc::new(Inner {
            db,
            secret,
            grids,
            replays: ReplayCache::default(),
            stats: CentralStats::default(),
            backfill_after_ms,
        });
        Ok(CentralStore { inner })
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
    pub fn cursor(&self, grid: u64, stream: u32) -> std::io::Result<u64> {
        let txn = self.inner.db.begin_read().map_err(io_err)?;
        let t = txn.open_table(CURSORS).map_err(io_err)?;
        Ok(t.get((grid, stream))
            .map_err(io_err)?
            .map(|v| v.value())
            .unwrap_or(0))
    }

    /// Every stored record of (grid, stream), ascending.
    pub fn records(&self, grid: u64, stream: u32) -> std::io::Result<Vec<(u64, StoredRecord)>> {
        let txn = self.inner.db.begin_read().map_err(io_err)?;
        let t = txn.open_table(RECORDS).map_err(io_err)?;
        let mut out = Vec::new();
        for item in t
            .range((grid, stream, 0)..=(grid, stream, u64::MAX))
            .map_err(io_err)?
        {
            let (k, v) = item.map_err(io_err)?;
            out.push((k.value().2, codec::decode(v.value()).map_err(io_err)?));
        }
        Ok(out)
    }

    /// Energy per UTC day of a grid: (day number since the epoch, Wh).
    pub fn energy_per_day(&self, grid: u64) -> std::io::Result<Vec<(u64, u64)>> {
        self.inner.energy_per_day(grid)
    }

    /// Hourly energy rows of a grid, ascending by hour, then customers, feeders, plants.
    pub fn energy_hours(&self, grid: u64) -> std::io::Result<Vec<EnergyHourRow>> {
        self.inner.energy_hours(grid)
    }

    /// The ledger of a customer (all customers with `None`), ascending by seq per customer.
    pub fn ledger(&self, grid: u64, customer: Option<u32>) -> std::io::Result<Vec<LedgerRow>> {
        self.inner.ledger(grid, customer)
    }

    /// The latest state of a grid and its customers' newest ledger lines.
    pub fn grid_state(&self, grid: u64) -> std::io::Result<Option<(GridState, Vec<LedgerRow>)>> {
        self.inner.grid_state(grid)
    }
}

impl Inner {
    fn energy_per_day(&self, grid: u64) -> std::io::Result<Vec<(u64, u64)>> {
        let txn = self.db.begin_read().map_err(io_err)?;
        let t = txn.open_table(ENERGY).map_err(io_err)?;
        let mut out = Vec::new();
        for item in t.range((grid, 0)..=(grid, u64::MAX)).map_err(io_err)? {
            let (k, v) = item.map_err(io_err)?;
            out.push((k.value().1, v.value()));
        }
        Ok(out)
    }

    fn energy_hours(&self, grid: u64) -> std::io::Result<Vec<EnergyHourRow>> {
        let txn = self.db.begin_read().map_err(io_err)?;
        let t = txn.open_table(ENERGY_HOURS).map_err(io_err)?;
        let mut out = Vec::new();
        for item in t
            .range((grid, 0, 0, 0, 0)..=(grid, u64::MAX, u8::MAX, u64::MAX, u16::MAX))
            .map_err(io_err)?
        {
            let (_, v) = item.map_err(io_err)?;
            out.push(codec::decode(v.value()).map_err(io_err)?);
        }
        Ok(out)
    }

    fn ledger(&self, grid: u64, customer: Option<u32>) -> std::io::Result<Vec<LedgerRow>> {
        let txn = self.db.begin_read().map_err(io_err)?;
        let t = txn.open_table(LEDGER).map_err(io_err)?;
        let (lo, hi) = match customer {
            Some(c) => ((grid, c, 0), (grid, c, u64::MAX)),
            None => ((grid, 0, 0), (grid, u32::MAX, u64::MAX)),
        };
        let mut out = Vec::new();
        for item in t.range(lo..=hi).map_err(io_err)? {
            let (_, v) = item.map_err(io_err)?;
            out.push(codec::decode(v.value()).map_err(io_err)?);
        }
        Ok(out)
    }

    fn grid_state(&self, grid: u64) -> std::io::Result<Option<(GridState, Vec<LedgerRow>)>> {
        let txn = self.db.begin_read().map_err(io_err)?;
        let g = txn.open_table(GRIDS).map_err(io_err)?;
        let Some(v) = g.get(grid).map_err(io_err)? else {
            return Ok(None);
        };
        let state: GridState = codec::decode(v.value()).map_err(io_err)?;
        let t = txn.open_table(LATEST).map_err(io_err)?;
        let mut latest = Vec::new();
        for item in t.range((grid, 0)..=(grid, u32::MAX)).map_err(io_err)? {
            let (_, v) = item.map_err(io_err)?;
            latest.push(codec::decode(v.value()).map_err(io_err)?);
        }
        Ok(Some((state, latest)))
    }

    /// Store a batch durably; answers the ack to send. Runs on a blocking thread.
    fn ingest(&self, grid: u64, b: &BatchBody) -> std::io::Result<AckBody> {
        let mut txn = self.db.begin_write().map_err(io_err)?;
        // The ack promises durability: fsync before it leaves.
        txn.set_durability(Durability::Immediate).map_err(io_err)?;
        let now = now_ms();
        let next;
        {
            let mut cursors = txn.open_table(CURSORS).map_err(io_err)?;
            let have = cursors
                .get((grid, b.stream))
                .map_err(io_err)?
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
            let mut records = txn.open_table(RECORDS).map_err(io_err)?;
            let mut ledger = txn.open_table(LEDGER).map_err(io_err)?;
            let mut energy = txn.open_table(ENERGY).map_err(io_err)?;
            let mut latest = txn.open_table(LATEST).map_err(io_err)?;
            let mut grids = txn.open_table(GRIDS).map_err(io_err)?;
            let mut energy_hours = txn.open_table(ENERGY_HOURS).map_err(io_err)?;
            let mut gs: GridState = match grids.get(grid).map_err(io_err)? {
                Some(v) => codec::decode(v.value()).map_err(io_err)?,
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
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        format!(
                            "grid {grid} sent record {seq} outside or out of order in its batch [{}, {})",
                            b.first_seq, b.end_seq
                        ),
                    ));
                }
                prev = Some(seq);
                let mut backfill = now.saturating_sub(rec.time_ms) > self.backfill_after_ms;
                let output = sdk_codec::decode::<sdk::Output>(&rec.output);
                match &output {
                    Some(sdk::Output::Ledger(l)) => {
                        let c = l.customer.0;
                        let newest: Option<LedgerRow> =
                            match latest.get((grid, c)).map_err(io_err)? {
                                Some(v) => Some(codec::decode(v.value()).map_err(io_err)?),
                                None => None,
                            };
                        if newest.as_ref().is_some_and(|n| l.at_ms < n.at_ms) {
                            backfill = true;
                        }
                        let (kind, energy_wh, amount_mpaisa) = ledger_fields(&l.kind);
                        let row = LedgerRow {
                            seq,
                            customer: c,
                            at_ms: l.at_ms,
                            kind,
                            energy_wh,
                            amount_mpaisa,
                            balance_after_mpaisa: l.balance_after_mpaisa,
                            tariff_version: l.tariff_version,
                            backfill,
                        };
                        let bytes = codec::encode(&row).map_err(io_err)?;
                        ledger
                            .insert((grid, c, seq), bytes.as_slice())
                            .map_err(io_err)?;
                        if newest.as_ref().is_none_or(|n| l.at_ms >= n.at_ms) {
                            latest.insert((grid, c), bytes.as_slice()).map_err(io_err)?;
                        }
                        if energy_wh > 0 {
                            let day = l.at_ms / DAY_MS;
                            let sum = energy
                                .get((grid, day))
                                .map_err(io_err)?
                                .map(|v| v.value())
                                .unwrap_or(0);
                            energy
                                .insert((grid, day), sum + energy_wh)
                                .map_err(io_err)?;
                        }
                        if backfill {
                            gs.backfilled += 1;
                        }
                    }
                    Some(sdk::Output::EnergyHour(hour)) => {
                        let (key, kind) = energy_key(grid, hour);
                        let row = EnergyHourRow {
                            hour_start_ms: hour.hour_start_ms,
                            kind: kind.into(),
                            id: key.3,
                            feeder: key.4,
                            energy_wh: hour.energy_wh,
                            seq,
                            backfill,
                        };
                        // A grid closes each (subject, hour) once; a second record for one
                        // (a grid rebuilt from scratch under the same id) does not replace
                        // the first.
                        if energy_hours.get(key).map_err(io_err)?.is_none() {
                            energy_hours
                                .insert(key, codec::encode(&row).map_err(io_err)?.as_slice())
                                .map_err(io_err)?;
                        }
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
                records
                    .insert(
                        (grid, b.stream, seq),
                        codec::encode(&stored).map_err(io_err)?.as_slice(),
                    )
                    .map_err(io_err)?;
                gs.records += 1;
                gs.newest_time_ms = gs.newest_time_ms.max(rec.time_ms);
            }
            next = b.end_seq;
            cursors.insert((grid, b.stream), next).map_err(io_err)?;
            gs.cursors.insert(b.stream, next);
            grids
                .insert(grid, codec::encode(&gs).map_err(io_err)?.as_slice())
                .map_err(io_err)?;
        }
        txn.commit().map_err(io_err)?;
        Ok(AckBody {
            stream: b.stream,
            next_seq: next,
            gap: false,
            batch_first_seq: b.first_seq,
        })
    }
}

fn ledger_fields(kind: &sdk::LedgerKind) -> (String, u64, i64) {
    let name = format!("{kind:?}");
    let name = name.split([' ', '{', '(']).next().unwrap_or("").to_string();
    match kind {
        sdk::LedgerKind::Charge {
            energy_wh,
            amount_mpaisa,
            ..
        } => (name, *energy_wh, *amount_mpaisa),
        sdk::LedgerKind::Fee { amount_mpaisa } => (name, 0, *amount_mpaisa),
        sdk::LedgerKind::TopUp { amount_mpaisa, .. } => (name, 0, *amount_mpaisa),
        _ => (name, 0, 0),
    }
}

/// The TCP front: accept, bound the connections, hand each to [`CentralStore::serve`].
async fn accept_loop(listener: TcpListener, store: CentralStore) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let (sock, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "central accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            tracing::warn!(%peer, "refusing grid connection: {MAX_CONNECTIONS} already open");
            continue;
        };
        let store = store.clone();
        tokio::spawn(async move {
            if let Err(e) = sock.set_nodelay(true) {
                tracing::info!(%peer, error = %e, "grid connection closed before it was served");
                return;
            }
            let (rd, wr) = sock.into_split();
            store.serve(rd, wr, &peer.to_string()).await;
            drop(permit);
        });
    }
}

/// One grid connection over any byte stream: handshake, then batches in, acks out.
async fn serve_conn<R, W>(
    rd: &mut R,
    wr: &mut W,
    inner: &Arc<Inner>,
) -> Result<(), proto::ProtoError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let handshake = channel::accept(
        &mut *rd,
        &mut *wr,
        &inner.secret,
        &inner.grids,
        &inner.replays,
    );
    let Ok(accepted) = tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake).await else {
        inner.stats.handshake_timeouts.fetch_add(1, Relaxed);
        return Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("no WAN handshake within {HANDSHAKE_TIMEOUT:?}"),
        )
        .into());
    };
    let channel::Accepted {
        grid,
        key,
        mut sealer,
        mut opener,
    } = accepted?;
    inner.stats.handshakes_ok.fetch_add(1, Relaxed);
    tracing::debug!(grid, %key, "grid authenticated");
    loop {
        // Dropping a read cut off mid-frame is fine: the connection is closed with it.
        let Ok(frame) = tokio::time::timeout(IDLE_TIMEOUT, opener.read_frame(rd)).await else {
            inner.stats.idle_closed.fetch_add(1, Relaxed);
            tracing::info!(grid, "grid connection idle for {IDLE_TIMEOUT:?}; closed");
            return Ok(());
        };
        let frame = frame?;
        let Msg::Batch { grid, body } = proto::decode(&frame, grid)? else {
            return Err(proto::ProtoError::Body(
                "a grid sent an ack, not a batch".into(),
            ));
        };
        let i = inner.clone();
        let ack = tokio::task::spawn_blocking(move || i.ingest(grid, &body))
            .await
            .map_err(|e| std::io::Error::other(format!("ingest task failed: {e}")))??;
        sealer
            .write_frame(wr, &proto::encode_ack(grid, &ack)?)
            .await?;
        inner.stats.batches_acked.fetch_add(1, Relaxed);
    }
}

type HttpError = (StatusCode, Json<serde_json::Value>);

fn http_err(e: impl std::fmt::Display) -> HttpError {
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        Json(serde_json::json!({ "error": format!("central store read failed: {e}") })),
    )
}

fn router(inner: Arc<Inner>) -> Router {
    Router::new()
        .route("/v1/status", get(http_status))
        .route("/v1/grids/{grid}", get(http_grid))
        .route(
            "/v1/grids/{grid}/customers/{customer}/ledger",
            get(http_ledger),
        )
        .route("/v1/grids/{grid}/energy-per-day", get(http_energy))
        .route("/v1/grids/{grid}/energy-hours", get(http_energy_hours))
        .route(
            "/v1/grids/{grid}/energy-hours.csv",
            get(http_energy_hours_csv),
        )
        .route("/v1/grids/{grid}/export.json", get(http_export_json))
        .route("/v1/grids/{grid}/export.csv", get(http_export_csv))
        .with_state(inner)
}

async fn http_status(State(i): State<Arc<Inner>>) -> Json<serde_json::Value> {
    Json(serde_json::json!({
        "public_key": i.secret.public().to_base64(),
        "grids": i.grids.keys().collect::<Vec<_>>(),
        "stats": i.stats.snapshot(),
    }))
}

async fn http_grid(
    State(i): State<Arc<Inner>>,
    Path(grid): Path<u64>,
) -> Result<Json<serde_json::Value>, HttpError> {
    match i.grid_state(grid).map_err(http_err)? {
        Some((state, customers)) => Ok(Json(
            serde_json::json!({ "state": state, "customers": customers }),
        )),
        None => Err((
            StatusCode::NOT_FOUND,
            Json(
                serde_json::json!({ "error": format!("grid {grid} has not uploaded anything yet") }),
            ),
        )),
    }
}

async fn http_ledger(
    State(i): State<Arc<Inner>>,
    Path((grid, customer)): Path<(u64, u32)>,
) -> Result<Json<Vec<LedgerRow>>, HttpError> {
    Ok(Json(i.ledger(grid, Some(customer)).map_err(http_err)?))
}

async fn http_energy(
    State(i): State<Arc<Inner>>,
    Path(grid): Path<u64>,
) -> Result<Json<serde_json::Value>, HttpError> {
    let days: Vec<_> = i
        .energy_per_day(grid)
        .map_err(http_err)?
        .into_iter()
        .map(|(day, wh)| serde_json::json!({ "utc_day_start_ms": day * DAY_MS, "energy_wh": wh }))
        .collect();
    Ok(Json(serde_json::json!(days)))
}

async fn http_energy_hours(
    State(i): State<Arc<Inner>>,
    Path(grid): Path<u64>,
) -> Result<Json<Vec<EnergyHourRow>>, HttpError> {
    Ok(Json(i.energy_hours(grid).map_err(http_err)?))
}

async fn http_energy_hours_csv(
    State(i): State<Arc<Inner>>,
    Path(grid): Path<u64>,
) -> Result<Response, HttpError> {
    let rows = i.energy_hours(grid).map_err(http_err)?;
    Ok((
        [(header::CONTENT_TYPE, "text/csv")],
        energy_hours_csv(grid, &rows),
    )
        .into_response())
}

/// The CSV form of hourly energy rows.
pub fn energy_hours_csv(grid: u64, rows: &[EnergyHourRow]) -> String {
    let mut csv = String::from("grid,hour_start_ms,kind,id,feeder,energy_wh,seq,backfill\n");
    for r in rows {
        csv.push_str(&format!(
            "{grid},{},{},{},{},{},{},{}\n",
            r.hour_start_ms, r.kind, r.id, r.feeder, r.energy_wh, r.seq, r.backfill
        ));
    }
    csv
}

async fn http_export_json(
    State(i): State<Arc<Inner>>,
    Path(grid): Path<u64>,
) -> Result<Json<Vec<LedgerRow>>, HttpError> {
    Ok(Json(i.ledger(grid, None).map_err(http_err)?))
}

async fn http_export_csv(
    State(i): State<Arc<Inner>>,
    Path(grid): Path<u64>,
) -> Result<Response, HttpError> {
    let rows = i.ledger(grid, None).map_err(http_err)?;
    let mut csv = String::from(
        "grid,customer,seq,at_ms,kind,energy_wh,amount_mpaisa,balance_after_mpaisa,tariff_version,backfill\n",
    );
    for r in rows {
        csv.push_str(&format!(
            "{grid},{},{},{},{},{},{},{},{},{}\n",
            r.customer,
            r.seq,
            r.at_ms,
            r.kind,
            r.energy_wh,
            r.amount_mpaisa,
            r.balance_after_mpaisa,
            r.tariff_version,
            r.backfill
        ));
    }
    Ok(([(header::CONTENT_TYPE, "text/csv")], csv).into_response())
}

/// `ghatta central` arguments.
#[derive(Debug, clap::Args)]
pub struct CentralArgs {
    /// Where grids connect with their batches, host:port.
    #[arg(long)]
    pub listen: String,
    /// Directory for central.redb.
    #[arg(long)]
    pub data: PathBuf,
    /// HTTP/JSON query listener (keep it on loopback).
    #[arg(long, default_value = "127.0.0.1:7780")]
    pub http: String,
    /// The central's private key file, as `ghatta keygen --out DIR` writes it (DIR/node.key,
    /// mode 0600). Grids set its public half as `wan.central_public_key`.
    #[arg(long)]
    pub key_file: PathBuf,
    /// A grid allowed to upload and one of its public keys, `GRID_ID=PUBLIC_KEY` (base64 or
    /// hex, as `ghatta keygen` prints it); repeat per grid and per key (each node of a grid
    /// may upload with its own key).
    #[arg(long = "grid", value_name = "GRID=PUBLIC_KEY")]
    pub grids: Vec<String>,
    /// As --grid, with the public key read from a file (`node.pub`), `GRID_ID=PATH`.
    #[arg(long = "grid-pub-file", value_name = "GRID=PATH")]
    pub grid_pub_files: Vec<String>,
    /// Records arriving later than this after their log time are marked back-fill, ms.
    #[arg(long, default_value_t = BACKFILL_AFTER_MS_DEFAULT)]
    pub backfill_after_ms: u64,
}

/// Parse `GRID=PUBLIC_KEY` arguments and `GRID=PATH` public-key-file arguments.
pub fn parse_grids(args: &[String], files: &[String]) -> anyhow::Result<AllowedGrids> {
    let mut grids = AllowedGrids::new();
    let mut add = |flag: &str, a: &str, key: &dyn Fn(&str) -> Result<PublicKey, String>| {
        let (g, k) = a
            .split_once('=')
            .ok_or_else(|| anyhow::anyhow!("{flag} `{a}` is not GRID=..."))?;
        let grid: u64 = g
            .trim()
            .parse()
            .map_err(|e| anyhow::anyhow!("{flag} `{a}`: grid id `{g}` is not a number: {e}"))?;
        let key = key(k.trim()).map_err(|e| anyhow::anyhow!("{flag} for grid {grid}: {e}"))?;
        let keys = grids.entry(grid).or_default();
        if keys.contains(&key) {
            anyhow::bail!("{flag}: grid {grid} lists key {key} twice; keep one");
        }
        keys.push(key);
        Ok(())
    };
    for a in args {
        add("--grid", a, &|k| PublicKey::parse(k))?;
    }
    for a in files {
        add("--grid-pub-file", a, &|p| {
            crate::net::secure::keys::load_public(std::path::Path::new(p))
                .map_err(|e| e.to_string())
        })?;
    }
    if grids.is_empty() {
        anyhow::bail!(
            "no --grid (or --grid-pub-file) given: the central would refuse every grid; add --grid GRID=PUBLIC_KEY"
        );
    }
    Ok(grids)
}

/// Run `ghatta central` until Ctrl-C.
pub async fn run_cmd(args: CentralArgs) -> anyhow::Result<std::process::ExitCode> {
    let grids = parse_grids(&args.grids, &args.grid_pub_files)?;
    let secret = SecretKey::load(&args.key_file).map_err(|e| anyhow::anyhow!("--key-file: {e}"))?;
    let central = Central::start(CentralConfig {
        listen: args.listen,
        http_listen: args.http,
        data_dir: args.data,
        secret,
        grids,
        backfill_after_ms: args.backfill_after_ms,
    })
    .await?;
    println!(
        "central: grids connect to {}, queries on http://{}/v1/grids/<grid>, public key {}",
        central.batch_addr,
        central.http_addr,
        central.public_key()
    );
    tokio::signal::ctrl_c()
        .await
        .map_err(|e| anyhow::anyhow!("cannot wait for Ctrl-C: {e}"))?;
    drop(central);
    Ok(std::process::ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::OutboxRecord;

    /// A grid that authenticates and then says nothing is cut off after [`IDLE_TIMEOUT`],
    /// counted, and not before (paused clock: the 15 minutes pass at once).
    #[tokio::test(start_paused = true)]
    async fn a_silent_authenticated_grid_is_closed_after_the_idle_timeout() {
        let dir = tempfile::tempdir().expect("tempdir");
        let central_key = SecretKey::from_bytes([1; 32]);
        let grid_key = SecretKey::from_bytes([2; 32]);
        let store = CentralStore::open(
            dir.path(),
            central_key.clone(),
            AllowedGrids::from([(3, vec![grid_key.public()])]),
            BACKFILL_AFTER_MS_DEFAULT,
        )
        .expect("store opens");
        let (grid_end, central_end) = tokio::io::duplex(64 * 1024);
        let (crd, cwr) = tokio::io::split(central_end);
        let serving = {
            let store = store.clone();
            tokio::spawn(async move { store.serve(crd, cwr, "test grid").await })
        };
        let (mut rd, mut wr) = tokio::io::split(grid_end);
        let started = tokio::time::Instant::now();
        let (_sealer, mut opener) =
            channel::connect(&mut rd, &mut wr, &grid_key, &central_key.public(), 3)
                .await
                .expect("handshake");
        tokio::time::sleep(IDLE_TIMEOUT - std::time::Duration::from_secs(1)).await;
        assert!(!serving.is_finished(), "closed before the idle timeout");
        assert_eq!(store.stats().idle_closed, 0);
        // The central hangs up: the grid's next read sees the end of the stream.
        let read = tokio::time::timeout(2 * IDLE_TIMEOUT, opener.read_frame(&mut rd)).await;
        assert!(
            matches!(read, Ok(Err(_))),
            "the central must close the silent connection"
        );
        serving.await.expect("serve ends");
        assert!(started.elapsed() >= IDLE_TIMEOUT);
        let stats = store.stats();
        assert_eq!(
            (stats.handshakes_ok, stats.idle_closed),
            (1, 1),
            "{stats:?}"
        );
    }

    #[tokio::test]
    async fn energy_hours_are_stored_once_and_served_as_rows_and_csv() {
        let dir = tempfile::tempdir().expect("tempdir");
        let central = Central::start(CentralConfig {
            listen: "127.0.0.1:0".into(),
            http_listen: "127.0.0.1:0".into(),
            data_dir: dir.path().to_path_buf(),
            secret: SecretKey::from_bytes([1; 32]),
            grids: AllowedGrids::from([(3, vec![SecretKey::from_bytes([2; 32]).public()])]),
            backfill_after_ms: BACKFILL_AFTER_MS_DEFAULT,
        })
        .await
        .expect("central starts");
        let hour = |seq: u64, subject, wh| {
            let out = sdk::Output::EnergyHour(sdk::EnergyHour {
                hour_start_ms: 7_200_000,
                subject,
                energy_wh: wh,
            });
            (
                seq,
                OutboxRecord {
                    index: seq,
                    time_ms: 10_800_000,
                    actor: ActorKind::Balancing,
                    output: sdk_codec::encode(&out),
                },
            )
        };
        let batch = BatchBody {
            stream: 2,
            first_seq: 0,
            end_seq: 3,
            records: vec![
                hour(0, sdk::EnergySubject::Customer(sdk::CustomerId(42)), 17),
                hour(
                    1,
                    sdk::EnergySubject::Feeder {
                        node: sdk::NodeId(2),
                        feeder: 1,
                    },
                    2_500,
                ),
                hour(2, sdk::EnergySubject::Plant(sdk::NodeId(2)), 3_000),
            ],
        };
        let ack = central.inner.ingest(3, &batch).expect("ingest");
        assert_eq!(ack.next_seq, 3);
        // A retransmission changes nothing.
        central.inner.ingest(3, &batch).expect("ingest again");
        let rows = central.energy_hours(3).expect("rows");
        let got: Vec<(&str, u64, u16, u64)> = rows
            .iter()
            .map(|r| (r.kind.as_str(), r.id, r.feeder, r.energy_wh))
            .collect();
        assert_eq!(
            got,
            vec![
                ("customer", 42, 0, 17),
                ("feeder", 2, 1, 2_500),
                ("plant", 2, 0, 3_000)
            ]
        );
        let csv = energy_hours_csv(3, &rows);
        assert_eq!(csv.lines().count(), 4);
        assert!(csv.contains("3,7200000,feeder,2,1,2500,1,"), "{csv}");
    }
}
