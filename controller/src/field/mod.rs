//! The field loop: samples the board, protects the grid locally, obeys committed relay
//! commands, enforces prepaid credit in an island, and hands telemetry and meter reads to the
//! journal and the shipper, which propose them in batches.
//!
//! Consensus is never in the fast path. Every grid sample (10 Hz by default) goes to
//! [`protection::Protection`] and the relay arbiter at once; the loop never awaits a proposal,
//! a commit or an fsync. Journal writes and proposals run in the shipper task
//! ([`shipper`]), fed through a bounded queue the loop only ever `try_send`s to.
//!
//! Code map:
//!
//! - `bus`: the shared Modbus line's scheduler: customer meters round-robin within a budget
//!   per tick, a silent meter skipped with backoff (pure, time passed in).
//! - `protection`: under-frequency stages, over-frequency ballast, voltage trips (pure).
//! - `relays`: the arbiter (local holds beat committed commands; every move recorded).
//! - `credit`: prepaid credit in an island, from committed ledger records.
//! - `telemetry`: 10 Hz samples to one summary and one report per batch period.
//! - `shipper`: journal writes and the one proposal in flight, oldest reads first.
//! - `consensus`: the trait the loop talks to the node through (so tests and the simulator
//!   can script the cluster).
//!
//! Architecture invariants:
//!
//! - Only the field loop touches relays, and only through the arbiter.
//! - Protection decisions never wait on Raft, the journal or a meter read that is not the
//!   grid sample they judge.
//! - A meter read that reached the journal leaves it only when committed.
//! - Every relay move is recorded with a reason code (protection, balancing, billing,
//!   operator) and counted.
//! - Health is successful grid samples: when they fail for longer than
//!   [`GRID_UNHEALTHY_AFTER_MS`] the loop reports itself unhealthy (`grid_healthy` = 0), and
//!   the systemd watchdog is no longer fed (`sd_notify`), whatever else keeps turning.
//! - Customer meter reads never take the grid sample's time: a tick's reads stop at
//!   `bus::bus_budget_ms` after it began, however many meters are silent.

pub mod bus;
pub mod config;
pub mod consensus;
pub mod credit;
pub mod protection;
pub mod relays;
pub mod shipper;
pub mod telemetry;

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ghatta_actor_sdk as sdk;
use ghatta_hal::{Board, RelayLine};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio::time::Instant;

use self::bus::{BusConfig, BusEvent, BusScheduler};
pub use self::config::FieldConfig;
pub use self::consensus::{Committed, Consensus};
use self::credit::{CreditChange, CreditTracker};
use self::protection::{Protection, ProtectionEvent, Sample};
use self::relays::{Arbiter, CommittedCmd, Hold};
use self::shipper::{Period, ShipperConfig, ShipperShared, ToShipper};
use self::telemetry::Aggregator;
use crate::journal::{Cause, Journal, ReadEntry, ReasonCode, RelayEvent};
use ghatta_proto::codec;

/// Outbox records read per call.
pub const OUTBOX_BATCH: usize = 256;
/// Outbox pages read per loop tick at most: 8 x 256 records every 100 ms is ~20,000 records
/// a second when catching up (after a restart or a long partition), while one tick's work
/// stays a few ms.
pub const OUTBOX_PAGES_PER_TICK: usize = 8;
/// The field state is saved at most this often, ms (and only when it changed). An older copy
/// only makes a restarted loop re-read part of the outbox.
pub const FIELD_STATE_SAVE_MS: u64 = 5_000;
/// Relay events held in memory when the shipper's queue is full: a thousand moves is far
/// more than any burst of trips; beyond it the oldest are dropped (and counted).
pub const EVENTS_CARRY_MAX: usize = 1_024;
/// Grid samples failing for longer than this, ms, make the loop unhealthy (`grid_healthy`
/// = 0, the systemd watchdog no longer fed). Twenty samples at 10 Hz: protection's shortest
/// delay is 500 ms, so a node blind for 2 s is not protecting its grid, while one failed
/// sample (a burst of noise, already retried by the Modbus driver) is not an outage. systemd
/// restarts the node only after `WatchdogSec` without pings, so an adapter replugged within
/// that time costs no restart.
pub const GRID_UNHEALTHY_AFTER_MS: u64 = 2_000;
/// Format version of the saved field state.
const FIELD_STATE_VERSION: u8 = 1;

/// Maps customer ids between the board (its own numbering) and the grid.
#[derive(Debug, Clone, Copy)]
pub struct CustomerMap {
    /// Grid id of the board's customer 1.
    pub first_customer: u32,
}

impl CustomerMap {
    /// The identity map (boards that number customers by grid id, e.g. Linux boards).
    pub fn identity() -> CustomerMap {
        CustomerMap { first_customer: 1 }
    }

    /// Grid id of a board customer.
    pub fn to_grid(self, board_id: u32) -> u32 {
        board_id
            .saturating_add(self.first_customer)
            .saturating_sub(1)
    }

    /// Board id of a grid customer (if the numbering can hold it).
    pub fn to_board(self, grid_id: u32) -> Option<u32> {
        (grid_id >= self.first_customer).then(|| grid_id - self.first_customer + 1)
    }
}

macro_rules! field_stats {
    ($( $(#[$doc:meta])* $name:ident ),* $(,)?) => {
        /// Counters and gauges of the field loop (monotonic counters unless said otherwise).
        #[derive(Debug, Default)]
        pub struct FieldStats {
            $( $(#[$doc])* pub $name: AtomicU64, )*
            /// Relay moves per reason code (protection, balancing, billing, operator).
            pub relay_actions_by_reason: [AtomicU64; 4],
            /// Latest load per feeder, W (gauges; a board has a handful of feeders).
            pub feeder_load_w: std::sync::Mutex<BTreeMap<u16, u64>>,
        }

        /// A point-in-time copy of [`FieldStats`].
        #[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
        pub struct FieldStatsSnapshot {
            $( $(#[$doc])* pub $name: u64, )*
            /// Relay moves per reason code.
            pub relay_actions_by_reason: BTreeMap<ReasonCode, u64>,
            /// Latest load per feeder, W.
            #[serde(default)]
            pub feeder_load_w: BTreeMap<u16, u64>,
        }

        impl FieldStats {
            /// Each field's name and whether it is a gauge (its doc says "(gauge"); the others
            /// only count up (`/metrics` types them so).
            pub fn kinds() -> impl Iterator<Item = (&'static str, bool)> {
                [$( (stringify!($name), concat!($(stringify!($doc)),*).contains("(gauge")) ),*]
                    .into_iter()
            }

            /// Copy the counters.
            pub fn snapshot(&self) -> FieldStatsSnapshot {
                FieldStatsSnapshot {
                    $( $name: self.$name.load(Ordering::Relaxed), )*
                    relay_actions_by_reason: ReasonCode::ALL
                        .iter()
                        .map(|r| (*r, self.relay_actions_by_reason[r.index()].load(Ordering::Relaxed)))
                        .collect(),
                    feeder_load_w: self
                        .feeder_load_w
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .clone(),
                }
            }
        }
    };
}

field_stats! {
    /// Grid samples taken.
    samples,
    /// Grid samples that failed (read error or implausible).
    read_errors,
    /// Meter reads taken.
    meter_reads,
    /// Meter reads that failed.
    meter_read_errors,
    /// Meter reads written to the journal.
    reads_journaled,
    /// Meter reads committed (and removed from the journal).
    reads_committed,
    /// Proposals committed (including duplicates).
    proposals_committed,
    /// Of those, duplicates (an earlier attempt had committed).
    proposals_duplicate,
    /// Proposal attempts that failed (retried with the same sequence number).
    proposals_failed,
    /// Relays moved.
    relay_actions,
    /// Relay commands the board refused.
    relay_failures,
    /// Committed commands for relays this board does not have.
    commands_unknown_relay,
    /// Latest frequency, mHz (gauge).
    frequency_mhz,
    /// Lowest frequency of the latest batch period, mHz (gauge).
    frequency_mhz_min,
    /// Highest frequency of the latest batch period, mHz (gauge).
    frequency_mhz_max,
    /// Latest voltage, dV (gauge).
    voltage_dv,
    /// Latest generation, W (gauge; 0 from a board that does not meter it).
    generation_w,
    /// Latest load of the feeders that are closed, W (gauge).
    load_w,
    /// Latest ballast draw, W (gauge).
    ballast_w,
    /// UFLS stage trips.
    ufls_trips,
    /// UFLS stages tripped now (gauge).
    ufls_stages_tripped,
    /// Ballast stages switched in by over-frequency.
    ballast_switched_in,
    /// Ballast stages held by protection now (gauge).
    ballast_held,
    /// Voltage trips.
    voltage_trips,
    /// A voltage trip holds the feeders now (gauge, 0/1).
    voltage_tripped,
    /// Proposals stalled for this long, ms (gauge; above the credit grace: an island).
    stalled_ms,
    /// Customers cut locally for island credit.
    island_credit_cuts,
    /// Customers cut locally now (gauge).
    island_credit_cut_now,
    /// Latest ballast set-point from balancing, W (gauge).
    ballast_setpoint_w,
    /// Outbox records processed.
    outbox_records,
    /// Meter reads waiting in the journal (gauge).
    journal_reads,
    /// Their logical bytes (gauge).
    journal_reads_bytes,
    /// Telemetry summaries in the journal (gauge).
    journal_telemetry,
    /// Their logical bytes (gauge).
    journal_telemetry_bytes,
    /// Telemetry summaries merged away by downsampling (gauge, from the journal).
    journal_downsampled,
    /// The journal is over its limits (gauge, 0/1).
    journal_over_limit,
    /// Journal operations that failed.
    journal_errors,
    /// Relay events dropped because the shipper's queue stayed full.
    events_dropped,
    /// Grid samples succeed (gauge, 0/1): 0 once they have failed for longer than
    /// `GRID_UNHEALTHY_AFTER_MS`. What the watchdog and `status` report as the field's health.
    grid_healthy,
    /// How long grid samples have been failing, ms (gauge; 0 after a good one).
    grid_failing_ms,
    /// Customer meter reads cut at the tick's bus budget (counted in `meter_read_errors` too).
    meter_read_timeouts,
    /// Reads of silent meters to see whether they answer again.
    meter_probes,
    /// Read slots of silent meters passed without bus time.
    meter_slots_skipped,
    /// Customer meters not answering now (gauge).
    meters_silent,
    /// Times a customer meter stopped answering.
    meter_silent_episodes,
    /// Ticks that ended with meter reads owed for lack of bus time.
    bus_ticks_deferred,
    /// Modbus line: transactions asked for (gauge, from the board's driver; 0 without a line).
    modbus_requests,
    /// Modbus line: transactions answered with good data (gauge).
    modbus_ok,
    /// Modbus line: attempts repeated (gauge).
    modbus_retries,
    /// Modbus line: attempts with no whole reply in time (gauge).
    modbus_timeouts,
    /// Modbus line: replies with a bad CRC (gauge).
    modbus_crc_errors,
    /// Modbus line: exception replies (gauge).
    modbus_exceptions,
    /// Modbus line: intact replies with impossible values (gauge).
    modbus_invalid_responses,
    /// Modbus line: operating-system errors on the port (gauge).
    modbus_io_errors,
    /// Modbus line: bytes that belonged to no reply (gauge).
    modbus_garbage_bytes,
    /// Modbus line: times the adapter went away (gauge).
    modbus_disconnects,
    /// Modbus line: times its port was reopened (gauge).
    modbus_reopens,
    /// Modbus line: reopen attempts that failed (gauge).
    modbus_reopen_failures,
    /// Relay lines whose GPIO device went away (gauge, from the board).
    relay_disconnects,
    /// Relay lines requested again after that (gauge).
    relay_reopens,
    /// Attempts to request them again that failed (gauge).
    relay_reopen_failures,
}

/// What the loop saves in the journal to resume after a restart. The maps are borrowed when
/// saving (no copy of the relay commands and every customer's account, 300 a board) and owned
/// when loaded; a `Cow` encodes as what it holds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct FieldState<'a> {
    version: u8,
    outbox_cursor: u64,
    processed_index: u64,
    committed: Cow<'a, BTreeMap<RelayLine, CommittedCmd>>,
    credit: Cow<'a, CreditTracker>,
}

/// Aborts the task when dropped (the shipper lives exactly as long as the loop).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Run the field loop with a journal in memory: for callers that have no data directory to
/// give it (the simulator, until it gives each node a journal disk through
/// [`Journal::open_backend`]). Reads waiting in it are lost with the process; use
/// [`run_with`] for anything that must survive a restart.
pub async fn run<B: Board>(
    node: crate::node::Node,
    board: B,
    cfg: FieldConfig,
    map: CustomerMap,
    stats: Arc<FieldStats>,
) {
    let limits = crate::journal::JournalLimits {
        fsync: false,
        ..cfg.journal.clone()
    };
    match Journal::open_backend(
        redb::backends::InMemoryBackend::new(),
        "in-memory journal",
        limits,
    ) {
        Ok(journal) => run_with(node, board, journal, cfg, map, stats).await,
        Err(e) => tracing::error!(error = %e, "field loop not started"),
    }
}

/// Run the field loop until the task is dropped (the shipper task stops with it).
pub async fn run_with<B: Board, C: Consensus>(
    consensus: C,
    mut board: B,
    journal: Journal,
    cfg: FieldConfig,
    map: CustomerMap,
    stats: Arc<FieldStats>,
) {
    let ignored = cfg.credit.ignored_keys();
    if !ignored.is_empty() {
        tracing::warn!(
            keys = ?ignored,
            "node.toml sets keys that no longer do anything: island credit follows billing's \
             committed configuration (`ghatta billing-config set`); remove them"
        );
    }
    let mut arbiter = Arbiter::new(&mut board);
    let protection = Protection::new(
        cfg.protection.clone(),
        &arbiter.feeders(),
        &arbiter.ballast(),
    );
    let saved = match journal.load_field_state() {
        Ok(Some(bytes)) => match codec::decode::<FieldState>(&bytes) {
            Ok(s) if s.version == FIELD_STATE_VERSION => s,
            Ok(_) | Err(_) => {
                tracing::warn!(
                    "saved field state unreadable; re-reading the outbox from the start"
                );
                FieldState::default()
            }
        },
        Ok(None) => FieldState::default(),
        Err(e) => {
            tracing::warn!(error = %e, "cannot load the field state; re-reading the outbox");
            FieldState::default()
        }
    };
    arbiter.restore_committed(saved.committed.into_owned());
    let (tx, rx) = mpsc::channel(shipper::SHIPPER_QUEUE);
    let shared = Arc::new(Mutex::new(ShipperShared::default()));
    let _shipper = AbortOnDrop(tokio::spawn(shipper::run(
        consensus.clone(),
        journal,
        ShipperConfig {
            telemetry_interval_ms: cfg.telemetry_interval_ms,
            drain_interval_ms: cfg.drain_interval_ms,
            proposal_bytes_max: cfg
                .proposal_bytes_max
                .unwrap_or(shipper::PROPOSAL_BYTES_MAX_DEFAULT),
        },
        rx,
        shared.clone(),
        stats.clone(),
    )));
    let customers: Vec<u32> = board.customers();
    let start = Instant::now();
    let bus = BusScheduler::new(
        customers.len(),
        BusConfig {
            grid_interval_ms: cfg.grid_interval_ms,
            meter_interval_ms: cfg.meter_interval_ms,
        },
    );
    // Healthy until grid samples have failed for the bound: the loop's start counts as the
    // last good sample.
    stats.grid_healthy.store(1, Ordering::Relaxed);
    let mut lp = Loop {
        me: consensus.node_id(),
        consensus,
        board,
        map,
        stats,
        arbiter,
        protection,
        credit: saved.credit.into_owned(),
        agg: Aggregator::default(),
        outbox_cursor: saved.outbox_cursor,
        processed_index: saved.processed_index,
        outbox_ready: false,
        tx,
        shared,
        customers_set: customers.iter().copied().collect(),
        last_journaled: vec![None; customers.len()],
        customers,
        bus,
        grid_ok_at: start,
        grid_failing: false,
        pending_reads: Vec::new(),
        carry: None,
        events: VecDeque::new(),
        dirty: true,
        saved_at: start,
        start,
        cfg,
    };
    lp.run().await
}

struct Loop<B: Board, C: Consensus> {
    me: u64,
    consensus: C,
    board: B,
    cfg: FieldConfig,
    map: CustomerMap,
    stats: Arc<FieldStats>,
    arbiter: Arbiter,
    protection: Protection,
    credit: CreditTracker,
    agg: Aggregator,
    outbox_cursor: u64,
    /// Every outbox record of every entry up to this log index has been processed.
    processed_index: u64,
    /// The outbox has been read up to the applied index once since start: committed commands
    /// are current and may be obeyed (before that, replaying history would flap relays).
    outbox_ready: bool,
    tx: mpsc::Sender<ToShipper>,
    shared: Arc<Mutex<ShipperShared>>,
    customers: Vec<u32>,
    customers_set: BTreeSet<u32>,
    bus: BusScheduler,
    /// The last good grid sample (or the loop's start).
    grid_ok_at: Instant,
    /// Grid samples are failing (an episode, logged once).
    grid_failing: bool,
    /// Per board customer, in `customers`' order: the register last journaled and when.
    last_journaled: Vec<Option<(u64, Instant)>>,
    pending_reads: Vec<ReadEntry>,
    /// A period the shipper's queue had no room for.
    carry: Option<Period>,
    events: VecDeque<RelayEvent>,
    dirty: bool,
    saved_at: Instant,
    start: Instant,
}

impl<B: Board, C: Consensus> Loop<B, C> {
    async fn run(&mut self) {
        let mut tick = tokio::time::interval(Duration::from_millis(self.cfg.grid_interval_ms));
        // A slow Modbus cycle must not be followed by a burst of catch-up samples.
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let period = Duration::from_millis(self.cfg.telemetry_interval_ms);
        let mut next_period = Instant::now() + period;
        loop {
            let tick_at = tick.tick().await;
            let tick_ms = tick_at.saturating_duration_since(self.start).as_millis() as u64;
            self.grid_sample().await;
            self.read_meters(tick_ms).await;
            self.follow_outbox();
            let now = Instant::now();
            let period_due = now >= next_period;
            if period_due {
                next_period += period;
                if next_period < now {
                    next_period = now + period;
                }
                self.credit_step();
                self.copy_line_stats();
            }
            self.drive();
            if period_due {
                self.seal_period();
                self.save_state();
            }
            self.flush_events();
        }
    }

    fn now_ms(&self) -> u64 {
        Instant::now().duration_since(self.start).as_millis() as u64
    }

    async fn grid_sample(&mut self) {
        let now_ms = self.now_ms();
        let wall = self.consensus.wall_ms();
        let sample = match self.board.read_grid().await {
            Ok(g) => {
                self.stats.samples.fetch_add(1, Ordering::Relaxed);
                self.stats
                    .frequency_mhz
                    .store(u64::from(g.frequency_mhz), Ordering::Relaxed);
                self.stats
                    .voltage_dv
                    .store(u64::from(g.voltage_dv), Ordering::Relaxed);
                self.stats
                    .generation_w
                    .store(u64::from(g.generation_w), Ordering::Relaxed);
                self.stats
                    .ballast_w
                    .store(u64::from(g.ballast_w), Ordering::Relaxed);
                let closed: u64 = g
                    .feeders
                    .iter()
                    .filter(|f| f.closed)
                    .map(|f| u64::from(f.load_w))
                    .sum();
                self.stats.load_w.store(closed, Ordering::Relaxed);
                {
                    let mut loads = self
                        .stats
                        .feeder_load_w
                        .lock()
                        .unwrap_or_else(|e| e.into_inner());
                    // A board's feeders are fixed: updated in place, nothing allocated.
                    for f in &g.feeders {
                        loads.insert(f.feeder, u64::from(f.load_w));
                    }
                }
                self.agg.add(wall, &g);
                self.protection
                    .note_feeder_loads(g.feeders.iter().map(|f| (f.feeder, f.load_w, f.closed)));
                self.grid_answered();
                let stalled_ms = self.stats.stalled_ms.load(Ordering::Relaxed);
                self.protection
                    .set_islanded(stalled_ms >= self.cfg.protection.island_after_ms);
                Some(Sample {
                    frequency_mhz: g.frequency_mhz,
                    voltage_dv: g.voltage_dv,
                    // A board that reports no generation (a feeder-only board, a replay
                    // without it) does not know the spare either.
                    spare_w: (g.generation_w > 0).then_some(g.ballast_w),
                })
            }
            Err(e) => {
                self.stats.read_errors.fetch_add(1, Ordering::Relaxed);
                self.grid_failed(&e);
                None
            }
        };
        for ev in self.protection.step(now_ms, sample) {
            let st = &self.stats;
            match ev {
                ProtectionEvent::StageTripped(i) => {
                    st.ufls_trips.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(stage = i + 1, feeders = ?self.protection.stage_feeder_map()[i], "under-frequency stage tripped");
                }
                ProtectionEvent::StageRestored(i) => {
                    tracing::info!(stage = i + 1, "under-frequency stage restored");
                }
                ProtectionEvent::BallastIn(b) => {
                    st.ballast_switched_in.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(ballast = b, "over-frequency: ballast stage switched in");
                }
                ProtectionEvent::BallastReleased(b) => {
                    tracing::info!(ballast = b, "ballast stage released");
                }
                ProtectionEvent::VoltageTripped => {
                    st.voltage_trips.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!("voltage trip: feeders held open");
                }
                ProtectionEvent::VoltageRestored => {
                    tracing::info!("voltage trip released");
                }
            }
        }
        let st = &self.stats;
        st.ufls_stages_tripped.store(
            self.protection.tripped_stages().len() as u64,
            Ordering::Relaxed,
        );
        st.ballast_held.store(
            self.protection.ballast_held_closed().len() as u64,
            Ordering::Relaxed,
        );
        st.voltage_tripped.store(
            u64::from(self.protection.voltage_tripped()),
            Ordering::Relaxed,
        );
    }

    /// A grid sample succeeded: the loop is healthy.
    fn grid_answered(&mut self) {
        let now = Instant::now();
        if self.grid_failing {
            self.grid_failing = false;
            tracing::info!(
                failed_for_ms = now.duration_since(self.grid_ok_at).as_millis() as u64,
                "grid samples are back"
            );
            // The line is back: meters that went silent with it need not wait out their
            // backoff.
            self.bus.probe_silent_now();
        }
        self.grid_ok_at = now;
        self.stats.grid_failing_ms.store(0, Ordering::Relaxed);
        self.stats.grid_healthy.store(1, Ordering::Relaxed);
    }

    /// A grid sample failed: WARN once per episode, unhealthy past the bound.
    fn grid_failed(&mut self, e: &ghatta_hal::HalError) {
        let failing_ms = Instant::now().duration_since(self.grid_ok_at).as_millis() as u64;
        self.stats
            .grid_failing_ms
            .store(failing_ms, Ordering::Relaxed);
        if !self.grid_failing {
            self.grid_failing = true;
            tracing::warn!(
                error = %e,
                unhealthy_after_ms = GRID_UNHEALTHY_AFTER_MS,
                "grid sample failed: protection has no data until samples are back"
            );
        } else {
            tracing::debug!(error = %e, "grid sample failed");
        }
        if failing_ms > GRID_UNHEALTHY_AFTER_MS
            && self.stats.grid_healthy.swap(0, Ordering::Relaxed) == 1
        {
            tracing::error!(
                failing_ms,
                error = %e,
                "grid samples failing: the field loop is unhealthy and the systemd watchdog is \
                 no longer fed (systemd restarts the node after WatchdogSec unless they recover)"
            );
        }
    }

    /// Read the meters the bus scheduler gives this tick (each meter once per
    /// `meter_interval_ms`), each read cut at the tick's bus budget so the next grid sample
    /// is on time however many meters are silent.
    async fn read_meters(&mut self, tick_ms: u64) {
        if self.customers.is_empty() {
            return;
        }
        let over_limit = shipper::lock(&self.shared).over_limit;
        let interval = Duration::from_millis(if over_limit {
            self.cfg.meter_journal_interval_ms_over_limit
        } else {
            self.cfg.meter_journal_interval_ms
        });
        self.bus.begin_tick(tick_ms);
        let mut now = Instant::now();
        loop {
            let started_ms = now.saturating_duration_since(self.start).as_millis() as u64;
            let Some(slot) = self.bus.next(started_ms) else {
                break;
            };
            let i = slot.meter;
            let c = self.customers[i];
            let deadline = self.start + Duration::from_millis(slot.deadline_ms);
            // Its own timeout: the tick's budget. The driver's retries may outlast it; a
            // reply that comes after the cut is skipped as garbage before the next request.
            let result = tokio::time::timeout_at(deadline, self.board.read_energy(c)).await;
            now = Instant::now();
            let answered = matches!(result, Ok(Ok(_)));
            let now_ms = now.saturating_duration_since(self.start).as_millis() as u64;
            let event = self.bus.finish(slot, started_ms, now_ms, answered);
            match result {
                Ok(Ok(r)) => {
                    self.stats.meter_reads.fetch_add(1, Ordering::Relaxed);
                    let grid = self.map.to_grid(c);
                    self.credit.on_local_read(grid, r.total_wh);
                    let due = match self.last_journaled[i] {
                        None => true,
                        Some((wh, at)) => wh != r.total_wh && now.duration_since(at) >= interval,
                    };
                    if due {
                        self.last_journaled[i] = Some((r.total_wh, now));
                        self.pending_reads.push(ReadEntry {
                            customer: grid,
                            total_wh: r.total_wh,
                            read_at_ms: self.consensus.wall_ms(),
                        });
                    }
                }
                Ok(Err(e)) => {
                    self.stats.meter_read_errors.fetch_add(1, Ordering::Relaxed);
                    self.meter_event(event, c, &e.to_string());
                }
                Err(_elapsed) => {
                    self.stats.meter_read_errors.fetch_add(1, Ordering::Relaxed);
                    self.stats
                        .meter_read_timeouts
                        .fetch_add(1, Ordering::Relaxed);
                    let why = format!(
                        "no answer within the tick's bus budget ({} ms of {} ms)",
                        bus::bus_budget_ms(self.cfg.grid_interval_ms),
                        self.cfg.grid_interval_ms
                    );
                    self.meter_event(event, c, &why);
                }
            }
            if let (Some(ev @ BusEvent::Answering { .. }), true) = (event, answered) {
                self.meter_event(Some(ev), c, "");
            }
        }
        if let Some(ev) = self.bus.end_tick() {
            self.meter_event(Some(ev), 0, "");
        }
        let b = self.bus.stats();
        let st = &self.stats;
        st.meter_probes.store(b.probes, Ordering::Relaxed);
        st.meter_slots_skipped.store(b.skipped, Ordering::Relaxed);
        st.meters_silent.store(b.silent_now, Ordering::Relaxed);
        st.meter_silent_episodes
            .store(b.silent_episodes, Ordering::Relaxed);
        st.bus_ticks_deferred
            .store(b.ticks_deferred, Ordering::Relaxed);
    }

    /// Logs what the bus scheduler reports: at WARN once per episode of a meter that stopped
    /// answering or of a bus without time for its meters, at INFO when it ends.
    fn meter_event(&self, event: Option<BusEvent>, customer: u32, error: &str) {
        match event {
            Some(BusEvent::Silent { .. }) if self.grid_failing => {
                // The grid meters fail too: the line is down, and that was logged once; a
                // WARN per customer meter would bury it.
                tracing::debug!(customer, error, "meter read failed with the line");
            }
            Some(BusEvent::Silent { next_probe_ms, .. }) => {
                let probe_in_ms = next_probe_ms.saturating_sub(self.now_ms());
                tracing::warn!(
                    customer,
                    error,
                    probe_in_ms,
                    "customer meter stopped answering: skipped, probed again with backoff up to {} s",
                    bus::METER_SKIP_MS_MAX / 1_000
                );
            }
            Some(BusEvent::Answering { silent_ms, .. }) => {
                tracing::info!(customer, silent_ms, "customer meter answers again");
            }
            Some(BusEvent::Starved { owed }) => {
                tracing::warn!(
                    owed,
                    grid_interval_ms = self.cfg.grid_interval_ms,
                    "the Modbus line has no time left for customer meters within the grid interval: \
                     they are read less often than meter_interval_ms; raise grid_interval_ms or the \
                     line speed, or move meters to another line"
                );
            }
            Some(BusEvent::Unstarved) => {
                tracing::info!("customer meter reads caught up");
            }
            None => tracing::debug!(customer, error, "meter read failed"),
        }
    }

    /// Copies the board's Modbus and relay-line counters into the stats (for `status`).
    fn copy_line_stats(&self) {
        let st = &self.stats;
        if let Some(r) = self.board.relay_stats() {
            st.relay_disconnects.store(r.disconnects, Ordering::Relaxed);
            st.relay_reopens.store(r.reopens, Ordering::Relaxed);
            st.relay_reopen_failures
                .store(r.reopen_failures, Ordering::Relaxed);
        }
        let Some(l) = self.board.line_stats() else {
            return;
        };
        for (gauge, v) in [
            (&st.modbus_requests, l.requests),
            (&st.modbus_ok, l.ok),
            (&st.modbus_retries, l.retries),
            (&st.modbus_timeouts, l.timeouts),
            (&st.modbus_crc_errors, l.crc_errors),
            (&st.modbus_exceptions, l.exceptions),
            (&st.modbus_invalid_responses, l.invalid_responses),
            (&st.modbus_io_errors, l.io_errors),
            (&st.modbus_garbage_bytes, l.garbage_bytes),
            (&st.modbus_disconnects, l.disconnects),
            (&st.modbus_reopens, l.reopens),
            (&st.modbus_reopen_failures, l.reopen_failures),
        ] {
            gauge.store(v, Ordering::Relaxed);
        }
    }

    /// Process committed outputs (relay commands, ledger records, set-points), a bounded
    /// number of pages per tick.
    fn follow_outbox(&mut self) {
        let applied = self.consensus.applied_index();
        // Read once a tick, not once a ledger line: a change committed in this tick's records
        // counts from the next tick (the floor only tells prepaid from postpaid evidence).
        let floor = self.consensus.billing_config().disconnect_at_mpaisa;
        for _ in 0..OUTBOX_PAGES_PER_TICK {
            let records = match self.consensus.outbox_from(self.outbox_cursor, OUTBOX_BATCH) {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the outbox");
                    return;
                }
            };
            let full_page = records.len() == OUTBOX_BATCH;
            let mut last_index = None;
            for (seq, rec) in records {
                if rec.index > applied {
                    self.caught_up(applied);
                    return;
                }
                self.outbox_record(&rec, floor);
                self.outbox_cursor = seq + 1;
                last_index = Some(rec.index);
                self.stats.outbox_records.fetch_add(1, Ordering::Relaxed);
                self.dirty = true;
            }
            if !full_page {
                self.caught_up(applied);
                return;
            }
            if let Some(i) = last_index {
                // The entry at `i` may continue on the next page.
                self.processed_index = self.processed_index.max(i.saturating_sub(1));
            }
        }
    }

    fn caught_up(&mut self, applied: u64) {
        if applied > self.processed_index {
            self.processed_index = applied;
            self.dirty = true;
        }
        self.outbox_ready = true;
    }

    fn outbox_record(&mut self, rec: &crate::state::OutboxRecord, floor: i64) {
        let Some(out) = sdk::codec::decode::<sdk::Output>(&rec.output) else {
            return;
        };
        match out {
            sdk::Output::Relay(cmd) if cmd.node.0 == self.me => {
                let line = match cmd.relay {
                    sdk::RelayId::Feeder(f) => Some(RelayLine::Feeder(f)),
                    sdk::RelayId::Ballast(b) => Some(RelayLine::Ballast(b)),
                    sdk::RelayId::Customer(c) => self.map.to_board(c.0).map(RelayLine::Customer),
                };
                match line {
                    Some(line) if self.arbiter.has(line) => self.arbiter.set_committed(
                        line,
                        CommittedCmd {
                            closed: cmd.closed,
                            reason: relays::reason_code(cmd.reason),
                            index: rec.index,
                        },
                    ),
                    _ => {
                        self.stats
                            .commands_unknown_relay
                            .fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(relay = ?cmd.relay, "committed command for a relay this board does not have");
                    }
                }
            }
            sdk::Output::Ledger(l)
                if self
                    .map
                    .to_board(l.customer.0)
                    .is_some_and(|b| self.customers_set.contains(&b)) =>
            {
                self.credit.on_ledger(rec.index, &l, floor);
            }
            sdk::Output::BallastSetpoint { node, setpoint_w } if node.0 == self.me => {
                // The ELC owns the per-cycle balance and the hal has no set-point output yet:
                // recorded for operators; over-frequency protection switches the stages.
                self.stats
                    .ballast_setpoint_w
                    .store(u64::from(setpoint_w), Ordering::Relaxed);
            }
            _ => {}
        }
    }

    /// Collect commits, then decide island credit cuts.
    fn credit_step(&mut self) {
        let now = Instant::now();
        let (stalled_ms, drained_at, notices) = {
            let mut sh = shipper::lock(&self.shared);
            let stalled = sh
                .stalled_since
                .map(|t| now.duration_since(t).as_millis() as u64)
                .unwrap_or(0);
            (
                stalled,
                sh.drained_at_index,
                std::mem::take(&mut sh.commits),
            )
        };
        self.stats.stalled_ms.store(stalled_ms, Ordering::Relaxed);
        for n in notices {
            for (c, wh) in n.reads {
                self.credit.on_commit(c, n.index, wh);
            }
            self.dirty = true;
        }
        let map = self.map;
        let arbiter = &self.arbiter;
        let supplied = |c: u32| {
            map.to_board(c)
                .is_none_or(|b| arbiter.baseline(RelayLine::Customer(b)))
        };
        self.credit.on_processed(self.processed_index, supplied);
        let reconciled = self.outbox_ready
            && stalled_ms < self.cfg.credit.grace_ms
            && drained_at.is_some_and(|i| self.processed_index >= i);
        let wall = self.consensus.wall_ms();
        let terms = self.consensus.billing_config();
        let changes = self.credit.evaluate(
            &self.cfg.credit,
            &terms,
            wall,
            stalled_ms,
            reconciled,
            supplied,
        );
        for ch in changes {
            self.dirty = true;
            match ch {
                CreditChange::Cut {
                    customer,
                    estimated_mpaisa,
                } => {
                    self.stats
                        .island_credit_cuts
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(
                        customer,
                        estimated_mpaisa,
                        "island: credit exhausted, cutting locally"
                    );
                }
                CreditChange::Lift { customer } => {
                    tracing::info!(
                        customer,
                        "rejoined: local credit cut handed back to billing"
                    );
                }
            }
        }
        self.stats
            .island_credit_cut_now
            .store(self.credit.cuts.len() as u64, Ordering::Relaxed);
    }

    /// Move the relays to where holds and committed commands want them.
    fn drive(&mut self) {
        let mut holds: BTreeMap<RelayLine, Hold> = BTreeMap::new();
        for (c, est) in &self.credit.cuts {
            if let Some(b) = self.map.to_board(*c) {
                holds.insert(
                    RelayLine::Customer(b),
                    Hold {
                        closed: false,
                        reason: ReasonCode::Billing,
                        cause: Cause::IslandCredit {
                            estimated_mpaisa: *est,
                        },
                    },
                );
            }
        }
        for (b, cause) in self.protection.ballast_held_closed() {
            holds.insert(
                RelayLine::Ballast(b),
                Hold {
                    closed: true,
                    reason: ReasonCode::Protection,
                    cause,
                },
            );
        }
        for (f, cause) in self.protection.feeders_held_open() {
            holds.insert(
                RelayLine::Feeder(f),
                Hold {
                    closed: false,
                    reason: ReasonCode::Protection,
                    cause,
                },
            );
        }
        let now_ms = self.now_ms();
        let wall = self.consensus.wall_ms();
        let events = self
            .arbiter
            .drive(&mut self.board, &holds, now_ms, wall, self.outbox_ready);
        for ev in events {
            if ev.error.is_some() {
                self.stats.relay_failures.fetch_add(1, Ordering::Relaxed);
            } else {
                self.stats.relay_actions.fetch_add(1, Ordering::Relaxed);
                self.stats.relay_actions_by_reason[ev.reason.index()]
                    .fetch_add(1, Ordering::Relaxed);
            }
            if self.events.len() >= EVENTS_CARRY_MAX {
                self.events.pop_front();
                self.stats.events_dropped.fetch_add(1, Ordering::Relaxed);
            }
            self.events.push_back(ev);
        }
    }

    fn flush_events(&mut self) {
        if self.events.is_empty() {
            return;
        }
        let batch: Vec<RelayEvent> = self.events.drain(..).collect();
        if let Err(mpsc::error::TrySendError::Full(ToShipper::Events(back))) =
            self.tx.try_send(ToShipper::Events(batch))
        {
            self.events.extend(back);
        }
    }

    fn seal_period(&mut self) {
        let wall = self.consensus.wall_ms();
        if let Some((lo, hi)) = self.agg.frequency_range_mhz() {
            self.stats
                .frequency_mhz_min
                .store(u64::from(lo), Ordering::Relaxed);
            self.stats
                .frequency_mhz_max
                .store(u64::from(hi), Ordering::Relaxed);
        }
        let telemetry = self
            .agg
            .seal(self.me, wall)
            .map(|(entry, input)| (entry, sdk::codec::encode(&sdk::Input::Telemetry(input))));
        let mut p = Period {
            telemetry,
            reads: std::mem::take(&mut self.pending_reads),
        };
        if let Some(mut older) = self.carry.take() {
            // The queue was full last time: send the older reads first (register order), and
            // only the newer telemetry (the older summary is lost from the history).
            older.reads.append(&mut p.reads);
            p.reads = older.reads;
            if p.telemetry.is_none() {
                p.telemetry = older.telemetry;
            }
        }
        if p.telemetry.is_none() && p.reads.is_empty() {
            return;
        }
        if let Err(mpsc::error::TrySendError::Full(ToShipper::Period(back))) =
            self.tx.try_send(ToShipper::Period(p))
        {
            self.carry = Some(back);
        }
    }

    fn save_state(&mut self) {
        let now = Instant::now();
        if !self.dirty
            || now.duration_since(self.saved_at) < Duration::from_millis(FIELD_STATE_SAVE_MS)
        {
            return;
        }
        let state = FieldState {
            version: FIELD_STATE_VERSION,
            outbox_cursor: self.outbox_cursor,
            processed_index: self.processed_index,
            committed: Cow::Borrowed(self.arbiter.committed()),
            credit: Cow::Borrowed(&self.credit),
        };
        match codec::encode(&state) {
            Ok(bytes) => {
                if self.tx.try_send(ToShipper::FieldState(bytes)).is_ok() {
                    self.dirty = false;
                    self.saved_at = now;
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot encode the field state"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stats_say_which_are_gauges() {
        let kinds: BTreeMap<&str, bool> = FieldStats::kinds().collect();
        assert_eq!(kinds.get("frequency_mhz"), Some(&true));
        assert_eq!(kinds.get("journal_over_limit"), Some(&true));
        assert_eq!(kinds.get("samples"), Some(&false));
        assert_eq!(kinds.get("relay_actions"), Some(&false));
        let snapshot = serde_json::to_value(FieldStatsSnapshot::default()).unwrap();
        assert_eq!(
            kinds.len() + 2,
            snapshot.as_object().unwrap().len(),
            "every field is named, and relay_actions_by_reason and feeder_load_w besides"
        );
    }

    /// The loop saves [`FieldState`] borrowed and loads it owned: one encoding.
    #[test]
    fn the_borrowed_field_state_encodes_as_the_owned_one() {
        let mut credit = CreditTracker::default();
        credit.on_commit(7, 12, 3_400);
        credit.on_local_read(7, 3_450);
        credit.cuts.insert(9, -1_000);
        let mut committed = BTreeMap::new();
        committed.insert(
            RelayLine::Customer(7),
            CommittedCmd {
                closed: false,
                reason: ReasonCode::Billing,
                index: 12,
            },
        );
        let owned = FieldState {
            version: FIELD_STATE_VERSION,
            outbox_cursor: 44,
            processed_index: 12,
            committed: Cow::Owned(committed.clone()),
            credit: Cow::Owned(credit.clone()),
        };
        let borrowed = FieldState {
            version: FIELD_STATE_VERSION,
            outbox_cursor: 44,
            processed_index: 12,
            committed: Cow::Borrowed(&committed),
            credit: Cow::Borrowed(&credit),
        };
        let bytes = codec::encode(&borrowed).expect("encode");
        assert_eq!(bytes, codec::encode(&owned).expect("encode"));
        let back: FieldState = codec::decode(&bytes).expect("decode");
        // `local_wh` is not saved (re-read within a second).
        assert_eq!(
            back.credit.accounts[&7].pending,
            credit.accounts[&7].pending
        );
        assert_eq!(back.credit.cuts, credit.cuts);
        assert_eq!(*back.committed, committed);
    }
}
