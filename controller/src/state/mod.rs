//! The replicated state machine: applies committed entries to the actors, exactly once, and
//! keeps actor state, dedupe windows, timers and the outbox in redb.
//!
//! Every replica applies the same entries in the same order and must reach byte-identical
//! state; the running [`StateHash`] after each applied index makes divergence visible
//! (`ghatta status` shows it, the simulator checks it).
//!
//! Writes of the state machine are committed without an fsync (`Durability::None`): the Raft
//! log is the durable record, and after a power cut openraft re-applies the committed entries
//! after the state machine's last durable applied index. A snapshot is always written with an
//! fsync before openraft may purge the log it covers.

pub mod alarm_tally;
mod apply;
mod board_alarms;
mod dedupe;
pub mod energy;
pub mod fold;
mod layout;
pub mod logtime;
pub mod modules;
pub mod prune;
mod snapshot;
mod tracked;

pub use self::apply::hash_hex;

use std::collections::BTreeMap;
use std::io;
use std::sync::Arc;

use futures::{Stream, TryStreamExt};
use openraft::storage::{EntryResponder, RaftStateMachine};
use openraft::{EntryPayload, OptionalSend, RaftSnapshotBuilder};
use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

pub use self::dedupe::{DEDUPE_WINDOW, DedupeWindow, SeqCheck};
pub use self::snapshot::{SnapshotImage, check_image};
pub use ghatta_proto::outbox::OutboxRecord;

/// Most outbox records [`StateMachine::recent_alarms`] reads for one answer: a day of a
/// 300-customer grid's outbox is a few ten thousand records, and decoding 100k takes well
/// under a second even on a small board; an operator asking for more history reads the
/// central's.
pub const ALARM_SCAN_RECORDS_MAX: usize = 100_000;

/// An alarm an actor emitted, as committed in the outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommittedAlarm {
    /// Outbox sequence.
    pub seq: u64,
    /// Log index of the entry whose apply emitted it.
    pub index: u64,
    /// Log time, Unix ms.
    pub time_ms: u64,
    /// The actor that raised it.
    pub actor: ActorKind,
    /// The alarm.
    pub alarm: ghatta_actor_sdk::Alarm,
    /// Repeats of it counted since, not stored (`alarm_tally`), while its hour is open; when
    /// the hour closes their count is a record of its own.
    pub repeats: u64,
    /// Log time of the newest of those repeats, Unix ms (`None`: none).
    pub last_repeat_ms: Option<u64>,
}

/// An actor's output as committed in the outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommittedOutput {
    /// Outbox sequence.
    pub seq: u64,
    /// Log index of the entry whose apply emitted it.
    pub index: u64,
    /// Log time, Unix ms.
    pub time_ms: u64,
    /// The actor (or the host) that emitted it.
    pub actor: ActorKind,
    /// The output.
    pub output: ghatta_actor_sdk::Output,
}

/// What [`StateMachine::recent_outputs`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecentOutputs {
    /// Newest first.
    pub outputs: Vec<CommittedOutput>,
    /// Outbox records read.
    pub scanned: usize,
    /// Whether every record in the outbox was read.
    pub whole_outbox: bool,
    /// Whether the search stopped at the `limit` asked for.
    pub limited: bool,
}

/// What [`StateMachine::actor_modules`] reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActorModules {
    /// The replicated actor signer list.
    pub signers: Vec<crate::actors::deploy::SignerKey>,
    /// Every actor's registry, in id order.
    pub actors: Vec<(ActorKind, modules::Registry)>,
}

/// What [`StateMachine::recent_alarms`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecentAlarms {
    /// Newest first.
    pub alarms: Vec<CommittedAlarm>,
    /// Outbox records read.
    pub scanned: usize,
    /// Whether every record in the outbox was read (otherwise older alarms may exist).
    pub whole_outbox: bool,
    /// Whether the search stopped at the `limit` asked for.
    pub limited: bool,
}

use crate::actors::{ActorHost, ActorKind, ActorState};
use crate::raft::{LogId, Receipt, SnapshotMeta, StoredMembership, TypeConfig};
use crate::storage::snapshot_file::{SnapshotFile, SnapshotWriter};
use crate::storage::{ACTOR_STATE, DEDUPE, OUTBOX, SM_META, STATE_DB, TIMERS};
use ghatta_proto::codec;

/// A state hash: blake3 chained over every applied entry's effects.
pub type StateHash = crate::observe::Digest;

/// A durable timer an actor asked for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimerRecord {
    /// The actor to wake.
    pub actor: ActorKind,
    /// Log time it is due, Unix ms.
    pub due_ms: u64,
    /// The actor's tag.
    pub tag: u32,
}

/// What the node and operators can see of the state machine without touching it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SmStatus {
    /// Last applied log index (0 before any).
    pub applied_index: u64,
    /// State hash at `applied_index`.
    pub state_hash: StateHash,
    /// Log time at `applied_index`, Unix ms.
    pub log_time_ms: u64,
    /// Records in the outbox (pinned, folded and detail alike).
    pub outbox_len: u64,
    /// Next outbox sequence number (records are numbered from 0).
    pub next_out_seq: u64,
    /// Pending timers.
    pub timers: u64,
    /// Earliest pending timer: (timer id, due log time ms).
    pub next_timer: Option<(u64, u64)>,
    /// Customers known to the state machine.
    pub customers: u64,
    /// Customers whose supply is cut by billing.
    pub disconnected: u64,
    /// Deliveries that trapped since genesis (deterministic count).
    pub trapped_total: u64,
}

/// What [`SmData::status`] computes by walking the timers and the customers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Derived {
    next_timer: Option<(u64, u64)>,
    disconnected: u64,
}

/// The in-memory state, mirrored in redb.
#[derive(Debug)]
pub(crate) struct SmData {
    pub last_applied: Option<LogId>,
    pub membership: StoredMembership,
    pub hash: StateHash,
    pub log_time_ms: u64,
    pub next_timer_id: u64,
    pub next_out_seq: u64,
    pub first_out_seq: u64,
    pub trapped_total: u64,
    pub actor_state: ActorState,
    pub dedupe: BTreeMap<u64, DedupeWindow>,
    pub timers: BTreeMap<u64, TimerRecord>,
    /// Customer id -> supplied (true) or cut by billing (false). Derived from inputs and
    /// relay outputs; part of the replicated state.
    pub customers: BTreeMap<u32, bool>,
    /// Whether `sm_meta.customers` holds `customers` as they are: cleared when they change,
    /// so an applied batch writes the map (an entry per customer) only when it changed.
    pub customers_stored: bool,
    /// The status parts that take a walk over every timer or customer, cached between
    /// changes: the status is published after every applied batch, and a grid has thousands
    /// of customers. `None` when stale.
    pub derived: std::cell::Cell<Option<Derived>>,
    /// WAN stream -> next outbox sequence the central data center has not acknowledged
    /// (committed by `Body::OutboxAck`).
    pub outbox_acks: BTreeMap<u32, u64>,
    /// Hourly energy aggregation (`energy.rs`).
    pub energy: energy::EnergyState,
    /// The newest outbox record per pin key, kept past the retention (`prune.rs`); stored a
    /// row per pin, only the changed ones after each batch (`layout.rs`).
    pub pins: tracked::Tracked<prune::Pin, u64>,
    /// Records in the outbox table now: counted when the table is read at open or installed,
    /// then kept by every insert and delete (a status figure, not replicated state).
    pub outbox_records: u64,
}

impl SmData {
    fn empty() -> Self {
        SmData {
            last_applied: None,
            membership: StoredMembership::default(),
            hash: [0; 32],
            log_time_ms: 0,
            next_timer_id: 1,
            next_out_seq: 0,
            first_out_seq: 0,
            trapped_total: 0,
            actor_state: ActorState::default(),
            dedupe: BTreeMap::new(),
            timers: BTreeMap::new(),
            customers: BTreeMap::new(),
            customers_stored: true,
            derived: std::cell::Cell::new(None),
            outbox_acks: BTreeMap::new(),
            energy: energy::EnergyState::default(),
            pins: tracked::Tracked::default(),
            outbox_records: 0,
        }
    }

    /// Takes the scalars of `s` (as stored: the pins and the energy's customers have no
    /// changes to write).
    fn set_scalars(&mut self, s: Scalars) {
        self.last_applied = s.last_applied;
        self.membership = s.membership;
        self.hash = s.hash;
        self.log_time_ms = s.log_time_ms;
        self.next_timer_id = s.next_timer_id;
        self.next_out_seq = s.next_out_seq;
        self.first_out_seq = s.first_out_seq;
        self.trapped_total = s.trapped_total;
        self.outbox_acks = s.outbox_acks;
        self.energy = s.energy;
        self.pins = s.pins.into();
    }

    /// Forgets the cached [`Derived`] status parts: called wherever the customers' supply
    /// or the timers change.
    pub(crate) fn invalidate_status(&self) {
        self.derived.set(None);
    }

    fn status(&self) -> SmStatus {
        let derived = self.derived.get().unwrap_or_else(|| {
            let d = Derived {
                next_timer: self
                    .timers
                    .iter()
                    .min_by_key(|(id, t)| (t.due_ms, **id))
                    .map(|(id, t)| (*id, t.due_ms)),
                disconnected: self.customers.values().filter(|c| !**c).count() as u64,
            };
            self.derived.set(Some(d));
            d
        });
        SmStatus {
            applied_index: self.last_applied.as_ref().map(|l| l.index()).unwrap_or(0),
            state_hash: self.hash,
            log_time_ms: self.log_time_ms,
            outbox_len: self.outbox_records,
            next_out_seq: self.next_out_seq,
            timers: self.timers.len() as u64,
            next_timer: derived.next_timer,
            customers: self.customers.len() as u64,
            disconnected: derived.disconnected,
            trapped_total: self.trapped_total,
        }
    }
}

/// Keys in `sm_meta`.
pub(crate) mod meta_keys {
    /// The scalars but the pins and the energy's customers (`layout.rs`).
    pub const SCALARS: &str = "scalars2";
    /// The whole [`super::Scalars`], in the layout before `layout.rs`: read once, to convert;
    /// then `layout::OLD_KEY_TOMBSTONE`, which older binaries refuse.
    pub const SCALARS_OLD: &str = "scalars";
    /// The stored snapshot before snapshot files: one value, moved into a file when read.
    pub const SNAPSHOT: &str = "snapshot";
    /// The current snapshot: its metadata and file (`snapshot.rs`).
    pub const SNAPSHOT_FILE: &str = "snapshot2";
    pub const CUSTOMERS: &str = "customers";
}

/// The scalar part of the state machine, as a snapshot image carries it (stored in
/// `state.redb` in three parts, `layout.rs`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Scalars {
    pub last_applied: Option<LogId>,
    pub membership: StoredMembership,
    pub hash: StateHash,
    pub log_time_ms: u64,
    pub next_timer_id: u64,
    pub next_out_seq: u64,
    pub first_out_seq: u64,
    pub trapped_total: u64,
    /// See `SmData::outbox_acks`.
    pub outbox_acks: BTreeMap<u32, u64>,
    /// See `SmData::energy`.
    pub energy: energy::EnergyState,
    /// See `SmData::pins`.
    pub pins: BTreeMap<prune::Pin, u64>,
}

/// [`Scalars`] borrowed from the in-memory state: the same fields in the same order (bincode
/// writes a struct as its fields in order, a nested one included), so it encodes to the same
/// bytes without cloning the maps (the pins and the open hour of energy hold an entry per
/// customer) for a snapshot.
#[derive(Serialize)]
pub(crate) struct ScalarsRef<'a> {
    pub head: ScalarsHead<'a>,
    pub energy: &'a energy::EnergyState,
    pub pins: &'a tracked::Tracked<prune::Pin, u64>,
}

/// The fields of [`Scalars`] before its energy.
#[derive(Serialize)]
pub(crate) struct ScalarsHead<'a> {
    pub last_applied: &'a Option<LogId>,
    pub membership: &'a StoredMembership,
    pub hash: &'a StateHash,
    pub log_time_ms: u64,
    pub next_timer_id: u64,
    pub next_out_seq: u64,
    pub first_out_seq: u64,
    pub trapped_total: u64,
    pub outbox_acks: &'a BTreeMap<u32, u64>,
}

/// What a harness attaches to a state machine (nothing, in production).
#[derive(Clone, Default)]
pub struct Hooks {
    /// The node's id (reported to the observer).
    pub node: u64,
    /// Watches applied entries and snapshots.
    pub observer: Option<Arc<dyn crate::observe::NodeObserver>>,
    /// Mutation-test faults.
    pub faults: Arc<crate::observe::TestFaults>,
    /// Where applying takes its time (`ghatta bench`).
    pub timings: Option<Arc<crate::observe::CommitTimings>>,
}

/// The state machine handed to openraft. Cheap to clone: clones share everything.
#[derive(Clone)]
pub struct StateMachine {
    db: Arc<Database>,
    host: Arc<ActorHost>,
    hooks: Hooks,
    data: Arc<std::sync::Mutex<SmData>>,
    status_tx: Arc<watch::Sender<SmStatus>>,
    /// Bytes of the last snapshot built, installed or read back (0: none yet).
    snapshot_bytes: Arc<std::sync::atomic::AtomicU64>,
    /// The snapshot file a transfer from the leader is writing (0: none), which building or
    /// installing a snapshot must not remove.
    receiving: Arc<std::sync::atomic::AtomicU64>,
    /// Receipts of recently applied proposals, to answer retries (`node::inflight`).
    recent: Arc<std::sync::Mutex<dedupe::RecentReceipts>>,
}

impl std::fmt::Debug for StateMachine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateMachine")
            .field("status", &*self.status_tx.borrow())
            .finish()
    }
}

impl StateMachine {
    /// Open the state machine on the node database, loading its state into memory.
    pub fn open(db: Arc<Database>, host: Arc<ActorHost>) -> io::Result<Self> {
        Self::open_with_hooks(db, host, Hooks::default())
    }

    /// As [`StateMachine::open`], with a harness's hooks.
    pub fn open_with_hooks(
        db: Arc<Database>,
        host: Arc<ActorHost>,
        hooks: Hooks,
    ) -> io::Result<Self> {
        let mut data = SmData::empty();
        if let Some(s) = layout::load(&db)? {
            data.set_scalars(s);
        }
        {
            let txn = db.begin_read().map_err(STATE_DB.begin("read"))?;
            let meta = txn.open_table(SM_META).map_err(STATE_DB.table())?;
            if let Some(v) = meta.get(meta_keys::CUSTOMERS).map_err(STATE_DB.read())? {
                data.customers =
                    codec::decode(v.value()).map_err(STATE_DB.corrupt("sm_meta.customers"))?;
            }
            for item in txn
                .open_table(ACTOR_STATE)
                .map_err(STATE_DB.table())?
                .iter()
                .map_err(STATE_DB.read())?
            {
                let (k, v) = item.map_err(STATE_DB.read())?;
                data.actor_state
                    .insert(k.value().to_vec(), v.value().to_vec());
            }
            for item in txn
                .open_table(DEDUPE)
                .map_err(STATE_DB.table())?
                .iter()
                .map_err(STATE_DB.read())?
            {
                let (k, v) = item.map_err(STATE_DB.read())?;
                data.dedupe.insert(
                    k.value(),
                    codec::decode(v.value()).map_err(STATE_DB.corrupt("dedupe"))?,
                );
            }
            data.outbox_records = txn
                .open_table(OUTBOX)
                .map_err(STATE_DB.table())?
                .len()
                .map_err(STATE_DB.read())?;
            for item in txn
                .open_table(TIMERS)
                .map_err(STATE_DB.table())?
                .iter()
                .map_err(STATE_DB.read())?
            {
                let (k, v) = item.map_err(STATE_DB.read())?;
                data.timers.insert(
                    k.value(),
                    codec::decode(v.value()).map_err(STATE_DB.corrupt("timers"))?,
                );
            }
        }
        let (status_tx, _) = watch::channel(data.status());
        Ok(StateMachine {
            db,
            host,
            hooks,
            data: Arc::new(std::sync::Mutex::new(data)),
            status_tx: Arc::new(status_tx),
            snapshot_bytes: Arc::default(),
            receiving: Arc::default(),
            recent: Arc::default(),
        })
    }

    /// Bytes of the last snapshot this replica built, installed or read back at start (0 when
    /// it has none): what the node's snapshot policy weighs against the log (`node::snapshots`).
    pub fn snapshot_bytes(&self) -> u64 {
        self.snapshot_bytes
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    fn note_snapshot_bytes(&self, bytes: u64) {
        self.snapshot_bytes
            .store(bytes, std::sync::atomic::Ordering::Relaxed);
    }

    /// A new snapshot file for a transfer from the leader (`node::snapshot_in`): written a
    /// chunk at a time as they arrive, kept while it is the one being received.
    pub fn receive_snapshot(&self) -> Result<SnapshotWriter, crate::storage::StoreError> {
        let w = SnapshotWriter::create(&self.db)?;
        self.receiving
            .store(w.id(), std::sync::atomic::Ordering::Relaxed);
        Ok(w)
    }

    fn receiving(&self) -> Option<u64> {
        match self.receiving.load(std::sync::atomic::Ordering::Relaxed) {
            0 => None,
            id => Some(id),
        }
    }

    /// Watch the state machine's status (applied index, hash, timers, ...).
    pub fn status(&self) -> watch::Receiver<SmStatus> {
        self.status_tx.subscribe()
    }

    /// The actor host (for load-time checks and benchmarks).
    pub fn host(&self) -> &Arc<ActorHost> {
        &self.host
    }

    /// The highest sequence applied from `origin` (0 when none): a restarted node resumes its
    /// proposals after it.
    pub fn highest_seq(&self, origin: u64) -> u64 {
        self.lock()
            .dedupe
            .get(&origin)
            .map(DedupeWindow::highest)
            .unwrap_or(0)
    }

    /// The outcome of proposal `(origin, seq)` if it was applied: its receipt while this
    /// replica remembers it ([`dedupe::RECENT_RECEIPTS_MAX`]), else a duplicate's receipt at the
    /// applied index (which is at or after the proposal's own). `None`: not applied.
    pub fn proposal_outcome(&self, origin: u64, seq: u64) -> Option<Receipt> {
        let data = self.lock();
        if !data.dedupe.get(&origin).is_some_and(|w| w.contains(seq)) {
            return None;
        }
        let recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        Some(match recent.get(&(origin, seq)) {
            Some(r) => r.clone(),
            None => Receipt {
                index: data.last_applied.map(|l| l.index()).unwrap_or(0),
                duplicate: true,
                state_hash: data.hash,
                ..Receipt::default()
            },
        })
    }

    /// A timer record, if still pending.
    pub fn timer(&self, id: u64) -> Option<TimerRecord> {
        self.lock().timers.get(&id).cloned()
    }

    /// The log time an entry of `term` stamped `wall_ms` with `clock` would be given if it
    /// were applied next (`logtime::LogClock::advance` on a copy of the rule's state): the
    /// leader's timer loop fires timers by it, so a fast leader clock fires nothing early.
    pub fn log_time_for(&self, term: u64, wall_ms: u64, clock: &crate::raft::LeaderClock) -> u64 {
        let data = self.lock();
        let mut lc = data
            .actor_state
            .map
            .get(apply::LOG_CLOCK_KEY)
            .and_then(|v| codec::decode::<logtime::LogClock>(v).ok())
            .unwrap_or_default();
        lc.advance(data.log_time_ms, term, wall_ms, clock)
            .log_time_ms
    }

    /// Pending timers due at or before `now_ms`, earliest first, at most `limit`.
    pub fn due_timers(&self, now_ms: u64, limit: usize) -> Vec<(u64, TimerRecord)> {
        let data = self.lock();
        let mut due: Vec<_> = data
            .timers
            .iter()
            .filter(|(_, t)| t.due_ms <= now_ms)
            .map(|(id, t)| (*id, t.clone()))
            .collect();
        due.sort_by_key(|(id, t)| (t.due_ms, *id));
        due.truncate(limit);
        due
    }

    /// Outbox records with sequence >= `from`, at most `limit`.
    pub fn outbox_from(&self, from: u64, limit: usize) -> io::Result<Vec<(u64, OutboxRecord)>> {
        // The field loop asks every tick and is nearly always caught up: answer without a read
        // transaction when no record at or past `from` was published. The status is sent
        // after each batch's commit, so this is at most what a read just before that commit
        // would have returned; it takes no lock an apply or a snapshot build holds.
        if from >= self.status_tx.borrow().next_out_seq {
            return Ok(Vec::new());
        }
        let txn = self.db.begin_read().map_err(STATE_DB.begin("read"))?;
        let table = txn.open_table(OUTBOX).map_err(STATE_DB.table())?;
        let mut out = Vec::new();
        for item in table.range(from..).map_err(STATE_DB.read())?.take(limit) {
            let (k, v) = item.map_err(STATE_DB.read())?;
            out.push((
                k.value(),
                codec::decode(v.value()).map_err(STATE_DB.corrupt("outbox"))?,
            ));
        }
        Ok(out)
    }

    /// The newest committed alarms, newest first: at most `limit`, found among the newest
    /// [`ALARM_SCAN_RECORDS_MAX`] outbox records. The outbox keeps at least a day of log time
    /// (`prune.rs`), so this is the board's alarm history without a table of its own; the
    /// answer says whether the scan reached the start of the outbox.
    pub fn recent_alarms(&self, limit: usize) -> io::Result<RecentAlarms> {
        let found =
            self.recent_outputs(limit, |o| matches!(o, ghatta_actor_sdk::Output::Alarm(_)))?;
        let tallies = alarm_tally::open_tallies(&self.lock());
        Ok(RecentAlarms {
            alarms: found
                .outputs
                .into_iter()
                .filter_map(|c| match c.output {
                    ghatta_actor_sdk::Output::Alarm(alarm) => Some(CommittedAlarm {
                        seq: c.seq,
                        index: c.index,
                        time_ms: c.time_ms,
                        actor: c.actor,
                        alarm,
                        repeats: tallies.get(&c.seq).map_or(0, |y| y.repeats),
                        last_repeat_ms: tallies.get(&c.seq).map(|y| y.last_ms),
                    }),
                    _ => None,
                })
                .collect(),
            scanned: found.scanned,
            whole_outbox: found.whole_outbox,
            limited: found.limited,
        })
    }

    /// The newest committed outputs that `keep` selects, newest first: at most `limit`,
    /// among the newest [`ALARM_SCAN_RECORDS_MAX`] outbox records (the cockpit's event log,
    /// and [`StateMachine::recent_alarms`]).
    pub fn recent_outputs(
        &self,
        limit: usize,
        keep: impl Fn(&ghatta_actor_sdk::Output) -> bool,
    ) -> io::Result<RecentOutputs> {
        let txn = self.db.begin_read().map_err(STATE_DB.begin("read"))?;
        let table = txn.open_table(OUTBOX).map_err(STATE_DB.table())?;
        let mut outputs = Vec::new();
        let mut scanned = 0;
        let mut iter = table.range(0..).map_err(STATE_DB.read())?.rev();
        for item in iter.by_ref() {
            let (k, v) = item.map_err(STATE_DB.read())?;
            scanned += 1;
            let rec: OutboxRecord = codec::decode(v.value()).map_err(STATE_DB.corrupt("outbox"))?;
            if let Some(output) = ghatta_actor_sdk::codec::decode(&rec.output)
                && keep(&output)
            {
                outputs.push(CommittedOutput {
                    seq: k.value(),
                    index: rec.index,
                    time_ms: rec.time_ms,
                    actor: rec.actor,
                    output,
                });
            }
            if outputs.len() >= limit || scanned >= ALARM_SCAN_RECORDS_MAX {
                break;
            }
        }
        let whole_outbox = iter.next().is_none();
        Ok(RecentOutputs {
            limited: outputs.len() >= limit,
            outputs,
            scanned,
            whole_outbox,
        })
    }

    /// The committed WAN upload cursor of `stream`: the next outbox sequence the central data
    /// center has not acknowledged (0 when nothing was acknowledged).
    pub fn outbox_ack(&self, stream: u32) -> u64 {
        self.lock().outbox_acks.get(&stream).copied().unwrap_or(0)
    }

    /// The state rows of `actor` whose keys (without the actor's prefix byte) start with
    /// `key_prefix`, in key order, from `after` (exclusive) on, at most `limit`: the cockpit's
    /// customer and tariff pages page through them. Read from memory under the lock an apply
    /// holds, so the copy is one applied index's state.
    pub fn actor_rows(
        &self,
        actor: ActorKind,
        key_prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut start = vec![actor.prefix()];
        start.extend_from_slice(after.unwrap_or(key_prefix));
        let data = self.lock();
        data.actor_state
            .map
            .range(start..)
            .map_while(|(k, v)| match k.split_first() {
                Some((&p, key)) if p == actor.prefix() && key.starts_with(key_prefix) => {
                    Some((key, v))
                }
                _ => None,
            })
            .filter(|(key, _)| after.is_none_or(|a| *key != a))
            .take(limit)
            .map(|(key, v)| (key.to_vec(), v.clone()))
            .collect()
    }

    /// Log time of the oldest outbox record some WAN stream has not had acknowledged (what
    /// the prune rule waits for), Unix ms; `None` when nothing waits.
    pub fn oldest_unacknowledged_ms(&self) -> io::Result<Option<u64>> {
        let from = ghatta_proto::outbox::Stream::ALL
            .into_iter()
            .map(|s| self.outbox_ack(s.id()))
            .min()
            .unwrap_or(0);
        Ok(self.outbox_from(from, 1)?.first().map(|(_, r)| r.time_ms))
    }

    /// Every board's alarm rules raised now, as last committed, by board id (empty boards
    /// left out).
    pub fn board_alarms(&self) -> Vec<(u64, Vec<crate::raft::board_alarms::ActiveRule>)> {
        board_alarms::active(&self.lock().actor_state)
    }

    /// The deployed actor modules and the replicated signer list (`ghatta actor list`).
    pub fn actor_modules(&self) -> ActorModules {
        let data = self.lock();
        ActorModules {
            signers: modules::signers(&data.actor_state),
            actors: ActorKind::ALL
                .into_iter()
                .map(|k| (k, modules::registry(&data.actor_state, k)))
                .collect(),
        }
    }

    /// A copy of the whole actor state (tests, diagnostics).
    pub fn actor_state(&self) -> ActorState {
        self.lock().actor_state.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SmData> {
        // A poisoned lock means a panic mid-apply: the in-memory state may be half-updated, so
        // continuing would risk divergence. Crash and recover from redb instead.
        self.data
            .lock()
            .expect("state machine lock poisoned: restart the node to recover from disk")
    }

    fn publish(&self, data: &SmData) {
        self.status_tx.send_replace(data.status());
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotData = SnapshotFile;
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), io::Error> {
        let data = self.lock();
        Ok((data.last_applied, data.membership.clone()))
    }

    async fn apply<Strm>(&mut self, entries: Strm) -> Result<(), io::Error>
    where
        Strm: Stream<Item = Result<EntryResponder<TypeConfig>, io::Error>> + Unpin + OptionalSend,
    {
        // Collect first: no redb write transaction may be held across an await (on a
        // single-threaded runtime the log store's writer would block the only thread).
        let batch: Vec<EntryResponder<TypeConfig>> = entries.try_collect().await?;
        let responses = crate::storage::blocking(|| -> io::Result<_> {
            let waited = self
                .hooks
                .timings
                .as_ref()
                .map(|_| std::time::Instant::now());
            let mut data = self.lock();
            let locked = waited.map(|t0| {
                let c = self.hooks.timings.as_deref();
                if let Some(c) = c {
                    crate::observe::CommitTimings::add_since(&c.apply_lock_ns, t0);
                }
                std::time::Instant::now()
            });
            let r = apply::apply_batch(
                &self.db,
                &self.host,
                &self.hooks,
                &mut data,
                batch.iter().map(|(e, _)| e),
            )?;
            self.publish(&data);
            if let (Some(c), Some(t0)) = (&self.hooks.timings, locked) {
                crate::observe::CommitTimings::add_since(&c.apply_ns, t0);
            }
            Ok(r)
        })?;
        {
            let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
            for ((entry, _), receipt) in batch.iter().zip(&responses) {
                if let EntryPayload::Normal(p) = &entry.payload
                    && p.seq != 0
                    && !receipt.duplicate
                {
                    recent.insert((p.origin, p.seq), receipt.clone());
                }
            }
        }
        for ((_, responder), receipt) in batch.into_iter().zip(responses) {
            if let Some(responder) = responder {
                responder.send(receipt);
            }
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        SnapshotBuilder { sm: self.clone() }
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: SnapshotFile,
    ) -> Result<(), io::Error> {
        let keep = self.receiving().filter(|id| *id != snapshot.id());
        let mut data = self.lock();
        crate::storage::blocking(|| snapshot::install(&self.db, &mut data, meta, &snapshot, keep))?;
        self.note_snapshot_bytes(snapshot.len());
        self.publish(&data);
        if let Some(o) = &self.hooks.observer {
            let index = meta.last_log_id.as_ref().map(|l| l.index()).unwrap_or(0);
            o.snapshot_installed(self.hooks.node, index, data.hash);
        }
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<crate::raft::Snapshot>, io::Error> {
        let current = snapshot::current(&self.db)?;
        if let Some(s) = &current {
            self.note_snapshot_bytes(s.snapshot.len());
        }
        Ok(current)
    }
}

/// Builds a snapshot of the state machine as it is when the builder runs.
pub struct SnapshotBuilder {
    sm: StateMachine,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    type SnapshotData = SnapshotFile;

    async fn build_snapshot(&mut self) -> Result<crate::raft::Snapshot, io::Error> {
        let keep = self.sm.receiving();
        let data = self.sm.lock();
        let built = crate::storage::blocking(|| snapshot::build(&self.sm.db, &data, keep))?;
        self.sm.note_snapshot_bytes(built.snapshot.len());
        Ok(built)
    }
}

#[cfg(test)]
mod fold_tests;
#[cfg(test)]
mod modules_tests;
#[cfg(test)]
mod snapshot_memory_tests;
#[cfg(test)]
pub(crate) mod tests;
