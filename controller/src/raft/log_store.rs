//! The Raft log on redb: entries, vote, committed and purged markers.
//!
//! Durability rule (Raft §5, and DESIGN principle 5): an entry is acknowledged to openraft only
//! after the redb transaction that wrote it committed with `Durability::Immediate`, i.e. after
//! an fsync. The vote is saved the same way before `save_vote` returns.
//!
//! Group commit: `append` does not wait for that fsync. It keeps the entries in memory
//! (`Unflushed`: readers see them at once, as openraft requires) and queues them for a flush
//! task, which writes everything queued in one transaction, fsyncs it, and only then calls each
//! append's `IOFlushed` callback, in order. So openraft's core keeps taking proposals and
//! sending entries to the followers while the leader's fsync runs (the leader's and the
//! followers' fsyncs overlap), and everything appended during one fsync lands in the next one.
//! Truncating, purging and saving the vote first wait for the queue to drain, so they never
//! reorder with an append. The committed marker is
//! a hint that openraft tolerates losing: it is kept in memory and written in the next append's
//! (or vote's) transaction, instead of a write transaction of its own at every commit (one
//! unsynced write a commit: on the simulator, ~2 % of its time). A redb commit without an fsync
//! is durable only with the next fsynced one anyway, so the marker is as safe as it was.
//!
//! A medium slower than its fsync call ([`SyncLatency`], the simulator's slow disk) is waited
//! out after each durable commit and before its acknowledgement, on the runtime's clock: on
//! openraft's core task, as a blocking fsync on a board holds it.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::sync::{Arc, Mutex};

use openraft::OptionalSend;
use openraft::entry::RaftEntry;
use openraft::storage::{IOFlushed, LogState, RaftLogReader, RaftLogStorage};
use redb::{Database, Durability, ReadableDatabase, ReadableTable};

use super::{Entry, LogId, TypeConfig, Vote};
use crate::observe::{CommitTimings, TestFaults};
use crate::storage::{LOG_DB, RAFT_LOG, RAFT_META, SyncLatency};
use ghatta_proto::codec;

const KEY_VOTE: &str = "vote";
const KEY_COMMITTED: &str = "committed";
const KEY_LAST_PURGED: &str = "last_purged";

/// Most appended entries kept in memory waiting for their fsync: an append beyond it waits for
/// the queue to drain (as every append did before group commit), so a disk slower than the
/// proposals cannot grow memory without bound. openraft's own limit on one append I/O
/// (`max_append_entries`, 4,096), with entries of at most `PROPOSAL_INPUT_BYTES_MAX`.
pub const UNFLUSHED_ENTRIES_MAX: usize = 4_096;

/// Entries appended but not yet durable, and the appends waiting for their fsync.
#[derive(Default)]
struct Unflushed {
    /// Every entry appended and not yet known durable, by index (readers see them).
    entries: BTreeMap<u64, Entry>,
    /// Encoded entries not yet taken by a flush, in index order.
    queued: Vec<(u64, Vec<u8>)>,
    /// The callbacks of the appends whose entries are queued, in order.
    callbacks: Vec<IOFlushed<TypeConfig>>,
    /// A flush task is running (it ends once it finds the queue empty).
    flushing: bool,
    /// A flush failed: its error, which every later append returns (openraft stops the node
    /// on the first one anyway).
    failed: Option<(io::ErrorKind, String)>,
}

impl Debug for Unflushed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Unflushed")
            .field("entries", &self.entries.len())
            .field("queued", &self.queued.len())
            .field("flushing", &self.flushing)
            .field("failed", &self.failed)
            .finish()
    }
}

/// The redb-backed Raft log of one node. Cheap to clone (shares the database).
#[derive(Debug, Clone)]
pub struct LogStore {
    db: Arc<Database>,
    faults: Arc<TestFaults>,
    sync: Option<Arc<dyn SyncLatency>>,
    /// The committed marker openraft saved last, when not yet written (see the module doc).
    committed: Arc<Mutex<Option<Option<LogId>>>>,
    /// Where appends take their time (`ghatta bench`; `None`: not counted).
    timings: Option<Arc<CommitTimings>>,
    /// The appended entries waiting for their fsync (module doc).
    unflushed: Arc<Mutex<Unflushed>>,
    /// `true` while no flush runs and none is queued: what draining waits for.
    idle: Arc<tokio::sync::watch::Sender<bool>>,
}

impl LogStore {
    /// A log store over the node database.
    pub fn new(db: Arc<Database>) -> Self {
        Self::with_faults(db, Arc::default())
    }

    /// A log store with fault switches (simulator mutation tests).
    pub fn with_faults(db: Arc<Database>, faults: Arc<TestFaults>) -> Self {
        LogStore {
            db,
            faults,
            sync: None,
            committed: Arc::default(),
            timings: None,
            unflushed: Arc::default(),
            idle: Arc::new(tokio::sync::watch::Sender::new(true)),
        }
    }

    /// The same store, counting where its appends take their time into `timings`.
    pub fn with_timings(mut self, timings: Option<Arc<CommitTimings>>) -> Self {
        self.timings = timings;
        self
    }

    /// The same store on a medium whose fsyncs take `sync` longer (`None`: a file).
    pub fn with_sync_latency(mut self, sync: Option<Arc<dyn SyncLatency>>) -> Self {
        self.sync = sync;
        self
    }

    /// Waits out the medium's extra fsync time after a durable commit. Nothing to wait for
    /// (and no timer) on a file or a healthy disk.
    async fn after_sync(&self) {
        if let Some(d) = self.sync.as_ref().map(|s| s.sync_delay())
            && !d.is_zero()
        {
            tokio::time::sleep(d).await;
        }
    }

    fn get_meta<T: serde::de::DeserializeOwned>(&self, key: &str) -> io::Result<Option<T>> {
        let txn = self.db.begin_read().map_err(LOG_DB.begin("read"))?;
        let table = txn.open_table(RAFT_META).map_err(LOG_DB.table())?;
        match table.get(key).map_err(LOG_DB.read())? {
            None => Ok(None),
            Some(v) => codec::decode(v.value()).map(Some).map_err(|e| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("raft_meta[{key}] is corrupt: {e}"),
                )
            }),
        }
    }

    /// A write transaction on the log, committed in two phases (a second fsync flips redb's
    /// primary slot). A commit torn by a power cut inside its fsync is then simply not the
    /// newest at the next open, and a newest commit that fails its checksum can only be damage,
    /// which `storage::open_dir` refuses rather than roll back an acknowledged append or a cast
    /// vote. With redb's default one-phase commit the two look the same, and refusing both would
    /// make every ill-timed power cut a rebuild of the node. The price is the second fsync per
    /// group commit (BENCHMARKS.md, "Two-phase commit of the log").
    fn begin_write(&self) -> io::Result<redb::WriteTransaction> {
        let mut txn = self.db.begin_write().map_err(LOG_DB.begin("write"))?;
        txn.set_two_phase_commit(true);
        Ok(txn)
    }

    fn put_meta<T: serde::Serialize>(
        &self,
        key: &str,
        value: &T,
        durability: Durability,
    ) -> io::Result<()> {
        let bytes = codec::encode(value).map_err(LOG_DB.encode("log record"))?;
        let mut txn = self.begin_write()?;
        txn.set_durability(durability).map_err(LOG_DB.write())?;
        let pending = self.write_pending_committed(&txn, None)?;
        {
            let mut table = txn.open_table(RAFT_META).map_err(LOG_DB.table())?;
            table
                .insert(key, bytes.as_slice())
                .map_err(LOG_DB.write())?;
        }
        txn.commit().map_err(LOG_DB.commit())?;
        self.committed_written(pending);
        Ok(())
    }

    /// Writes the committed marker saved since the last write into `txn`, unless it points
    /// past `upto` (the last entry the transaction makes durable; `None`: no limit, nothing
    /// waits in memory): a marker past the durable log would name entries a power cut can
    /// lose. Returns what it wrote, for [`LogStore::committed_written`] once `txn` committed.
    fn write_pending_committed(
        &self,
        txn: &redb::WriteTransaction,
        upto: Option<u64>,
    ) -> io::Result<Option<Option<LogId>>> {
        let pending = *self.committed.lock().unwrap_or_else(|e| e.into_inner());
        let pending = pending.filter(|c| match (c, upto) {
            (Some(c), Some(upto)) => c.index() <= upto,
            _ => true,
        });
        if let Some(committed) = &pending {
            let bytes = codec::encode(committed).map_err(LOG_DB.encode("log record"))?;
            txn.open_table(RAFT_META)
                .map_err(LOG_DB.table())?
                .insert(KEY_COMMITTED, bytes.as_slice())
                .map_err(LOG_DB.write())?;
        }
        Ok(pending)
    }

    /// `written` is stored: forget it, unless openraft saved a newer marker meanwhile.
    fn committed_written(&self, written: Option<Option<LogId>>) {
        if written.is_some() {
            let mut pending = self.committed.lock().unwrap_or_else(|e| e.into_inner());
            if *pending == written {
                *pending = None;
            }
        }
    }

    fn lock_unflushed(&self) -> std::sync::MutexGuard<'_, Unflushed> {
        // Entries, bytes and callbacks: a panic while it was held leaves nothing half-updated
        // that a reader could misread (each change is one insert or one swap).
        self.unflushed.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The flush task: writes what is queued in one fsynced transaction, then acknowledges
    /// those appends, until it finds the queue empty.
    async fn flush_queued(&self) {
        loop {
            let (batch, callbacks) = {
                let mut u = self.lock_unflushed();
                if u.callbacks.is_empty() {
                    u.flushing = false;
                    self.idle.send_replace(true);
                    return;
                }
                (
                    std::mem::take(&mut u.queued),
                    std::mem::take(&mut u.callbacks),
                )
            };
            let durable = !self.faults.ack_before_fsync();
            let result = crate::storage::blocking(|| self.write_entries(&batch, durable));
            if result.is_ok() && durable {
                self.after_sync().await;
            }
            let last = batch.last().map(|(i, _)| *i);
            {
                let mut u = self.lock_unflushed();
                match &result {
                    // Durable now: readers find them in the table.
                    Ok(()) => {
                        if let Some(last) = last {
                            u.entries = u.entries.split_off(&(last + 1));
                        }
                    }
                    Err(e) => u.failed = Some((e.kind(), e.to_string())),
                }
            }
            for cb in callbacks {
                cb.io_completed(match &result {
                    Ok(()) => Ok(()),
                    Err(e) => Err(io::Error::new(e.kind(), e.to_string())),
                });
            }
        }
    }

    /// Writes encoded entries in one transaction (fsynced when `durable`), with the committed
    /// marker when it does not point past them.
    fn write_entries(&self, batch: &[(u64, Vec<u8>)], durable: bool) -> io::Result<()> {
        let timings = self.timings.as_deref();
        let t1 = timings.map(|_| std::time::Instant::now());
        let mut txn = self.begin_write()?;
        let durability = if durable {
            Durability::Immediate
        } else {
            Durability::None
        };
        txn.set_durability(durability).map_err(LOG_DB.write())?;
        let last = batch.last().map(|(i, _)| *i);
        let pending = self.write_pending_committed(&txn, last)?;
        {
            let mut table = txn.open_table(RAFT_LOG).map_err(LOG_DB.table())?;
            for (index, bytes) in batch {
                table
                    .insert(index, bytes.as_slice())
                    .map_err(LOG_DB.write())?;
            }
        }
        let t2 = timings.map(|_| std::time::Instant::now());
        txn.commit().map_err(LOG_DB.commit())?;
        self.committed_written(pending);
        if let (Some(c), Some(t1), Some(t2)) = (timings, t1, t2) {
            CommitTimings::add(&c.log_write_ns, (t2 - t1).as_nanos() as u64);
            CommitTimings::add_since(&c.log_commit_ns, t2);
            CommitTimings::add(&c.log_appends, 1);
            CommitTimings::add(&c.log_entries, batch.len() as u64);
        }
        Ok(())
    }

    /// Waits until every queued append is durable (or failed: its error).
    async fn drain(&self) -> io::Result<()> {
        let mut idle = self.idle.subscribe();
        // The sender lives in `self`: the wait ends with the flush.
        let _ = idle.wait_for(|idle| *idle).await;
        match &self.lock_unflushed().failed {
            Some((kind, text)) => Err(io::Error::new(*kind, text.clone())),
            None => Ok(()),
        }
    }

    /// The appended entries not yet durable in `range` (cloned), and the index of the first
    /// of all of them: every entry below it is in the table.
    fn unflushed_in(&self, range: (Bound<u64>, Bound<u64>)) -> (Vec<Entry>, Option<u64>) {
        let u = self.lock_unflushed();
        let first = u.entries.keys().next().copied();
        (
            u.entries.range(range).map(|(_, e)| e.clone()).collect(),
            first,
        )
    }

    /// The last log id in the durable log (the last entry's, else the last purged one's).
    /// What a follower reports to a probing leader (`Request::AppendProbe`): entries reach the
    /// table only in their fsynced transaction (until then they wait in memory, module doc).
    pub fn last_log_id(&self) -> io::Result<Option<LogId>> {
        Ok(self
            .last_entry_id()?
            .or(self.get_meta::<LogId>(KEY_LAST_PURGED)?))
    }

    /// Does this log hold `id` (the entry at `id.index()` has that log id, or `id` is the
    /// last purged log id)? A leader asks it of a follower's reported last log id: by Raft's
    /// Log Matching Property (§5.3) equal log ids mean equal logs up to that index.
    pub fn holds(&self, id: &LogId) -> io::Result<bool> {
        if let Some(e) = self.lock_unflushed().entries.get(&id.index()) {
            return Ok(&e.log_id() == id);
        }
        let txn = self.db.begin_read().map_err(LOG_DB.begin("read"))?;
        let table = txn.open_table(RAFT_LOG).map_err(LOG_DB.table())?;
        if let Some(v) = table.get(id.index()).map_err(LOG_DB.read())? {
            let e: Entry = codec::decode(v.value()).map_err(LOG_DB.corrupt("log record"))?;
            return Ok(&e.log_id() == id);
        }
        Ok(self.get_meta::<LogId>(KEY_LAST_PURGED)?.as_ref() == Some(id))
    }

    /// The entries written under leader `leader` at the end of the log (at most `max`, else
    /// `None`), and the log id just before them: a new leader's first append to a follower
    /// that most likely holds everything up to there (`rpc/network.rs`). `None` also when
    /// the log has no entry from an earlier leader after its purged prefix.
    pub fn leader_tail(
        &self,
        leader: &openraft::alias::CommittedLeaderIdOf<TypeConfig>,
        max: usize,
    ) -> io::Result<Option<(LogId, Vec<Entry>)>> {
        let (unflushed, first) = self.unflushed_in((Bound::Unbounded, Bound::Unbounded));
        let txn = self.db.begin_read().map_err(LOG_DB.begin("read"))?;
        let table = txn.open_table(RAFT_LOG).map_err(LOG_DB.table())?;
        let durable = table
            .range(..first.unwrap_or(u64::MAX))
            .map_err(LOG_DB.read())?
            .rev()
            .map(|item| -> io::Result<Entry> {
                let (_, v) = item.map_err(LOG_DB.read())?;
                Ok(codec::decode(v.value()).map_err(LOG_DB.corrupt("log record"))?)
            });
        let mut tail = Vec::new();
        for e in unflushed.into_iter().rev().map(Ok).chain(durable) {
            let e = e?;
            if e.log_id().committed_leader_id() != leader {
                if tail.is_empty() {
                    return Ok(None);
                }
                tail.reverse();
                return Ok(Some((e.log_id(), tail)));
            }
            if tail.len() == max {
                return Ok(None);
            }
            tail.push(e);
        }
        Ok(None)
    }

    /// `(index, origin, seq)` of the proposals after `index` (at most `max`, lowest first):
    /// what a new leader reads once per term (`node::inflight`) to find retried proposals
    /// already in its log.
    pub fn proposals_after(&self, index: u64, max: usize) -> io::Result<Vec<(u64, u64, u64)>> {
        let from = index.saturating_add(1);
        let (unflushed, first) = self.unflushed_in((Bound::Included(from), Bound::Unbounded));
        let txn = self.db.begin_read().map_err(LOG_DB.begin("read"))?;
        let table = txn.open_table(RAFT_LOG).map_err(LOG_DB.table())?;
        let end = first.unwrap_or(u64::MAX).max(from);
        let durable =
            table
                .range(from..end)
                .map_err(LOG_DB.read())?
                .map(|item| -> io::Result<Entry> {
                    let (_, v) = item.map_err(LOG_DB.read())?;
                    Ok(codec::decode(v.value()).map_err(LOG_DB.corrupt("log record"))?)
                });
        let mut out = Vec::new();
        for e in durable.chain(unflushed.into_iter().map(Ok)) {
            if out.len() == max {
                break;
            }
            let e = e?;
            if let openraft::EntryPayload::Normal(p) = &e.payload {
                out.push((e.index(), p.origin, p.seq));
            }
        }
        Ok(out)
    }

    /// The last entry's log id, if the log holds any entry.
    fn last_entry_id(&self) -> io::Result<Option<LogId>> {
        let txn = self.db.begin_read().map_err(LOG_DB.begin("read"))?;
        let table = txn.open_table(RAFT_LOG).map_err(LOG_DB.table())?;
        match table.last().map_err(LOG_DB.read())? {
            None => Ok(None),
            Some((_, v)) => {
                let e: Entry = codec::decode(v.value()).map_err(LOG_DB.corrupt("log record"))?;
                Ok(Some(e.log_id()))
            }
        }
    }
}

fn to_bounds<RB: RangeBounds<u64>>(range: &RB) -> (Bound<u64>, Bound<u64>) {
    (range.start_bound().cloned(), range.end_bound().cloned())
}

/// Whether no index lies in `(start, end)` (`BTreeMap::range` panics on an inverted range).
fn is_empty_range((start, end): (Bound<u64>, Bound<u64>)) -> bool {
    let first = match start {
        Bound::Included(i) => Some(i),
        Bound::Excluded(i) => i.checked_add(1),
        Bound::Unbounded => Some(0),
    };
    let Some(first) = first else { return true };
    match end {
        Bound::Included(i) => first > i,
        Bound::Excluded(i) => first >= i,
        Bound::Unbounded => false,
    }
}

/// The tighter of two end bounds.
fn tighter_end(a: Bound<u64>, b: Bound<u64>) -> Bound<u64> {
    let key = |x: &Bound<u64>| match x {
        // (position, excluded-before-included at the same index)
        Bound::Included(i) => Some((*i, 1)),
        Bound::Excluded(i) => Some((*i, 0)),
        Bound::Unbounded => None,
    };
    match (key(&a), key(&b)) {
        (None, _) => b,
        (_, None) => a,
        (Some(ka), Some(kb)) => {
            if ka <= kb {
                a
            } else {
                b
            }
        }
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, io::Error> {
        let bounds = to_bounds(&range);
        // The entries still in memory first: every entry below the first of them is durable.
        if is_empty_range(bounds) {
            return Ok(Vec::new());
        }
        let (tail, first_unflushed) = self.unflushed_in(bounds);
        let below = match first_unflushed {
            Some(first) => Bound::Excluded(first),
            None => Bound::Unbounded,
        };
        let durable = (bounds.0, tighter_end(bounds.1, below));
        let txn = self.db.begin_read().map_err(LOG_DB.begin("read"))?;
        let table = txn.open_table(RAFT_LOG).map_err(LOG_DB.table())?;
        let mut out = Vec::new();
        let durable_items = if is_empty_range(durable) {
            None
        } else {
            Some(table.range::<u64>(durable).map_err(LOG_DB.read())?)
        };
        for item in durable_items.into_iter().flatten() {
            let (k, v) = item.map_err(LOG_DB.read())?;
            let entry: Entry = codec::decode(v.value()).map_err(|e| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("raft_log[{}] is corrupt: {e}", k.value()),
                )
            })?;
            out.push(entry);
        }
        out.extend(tail);
        Ok(out)
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, io::Error> {
        self.get_meta(KEY_VOTE)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, io::Error> {
        let last_purged_log_id: Option<LogId> = self.get_meta(KEY_LAST_PURGED)?;
        let last_unflushed = self
            .lock_unflushed()
            .entries
            .last_key_value()
            .map(|(_, e)| e.log_id());
        let last_log_id = last_unflushed
            .or(self.last_entry_id()?)
            .or(last_purged_log_id);
        Ok(LogState {
            last_purged_log_id,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), io::Error> {
        // After the queued entries: the committed marker it carries may name them.
        self.drain().await?;
        self.put_meta(KEY_VOTE, vote, Durability::Immediate)?;
        self.after_sync().await;
        Ok(())
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), io::Error> {
        // A hint: losing it on a power cut only means re-applying from the state machine's own
        // applied index, which openraft handles. Written with the next append (module doc).
        *self.committed.lock().unwrap_or_else(|e| e.into_inner()) = Some(committed);
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, io::Error> {
        if let Some(pending) = *self.committed.lock().unwrap_or_else(|e| e.into_inner()) {
            return Ok(pending);
        }
        Ok(self.get_meta::<Option<LogId>>(KEY_COMMITTED)?.flatten())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: IOFlushed<TypeConfig>,
    ) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let t0 = self.timings.as_ref().map(|_| std::time::Instant::now());
        let mut encoded = Vec::new();
        let mut kept = Vec::new();
        for entry in entries {
            let bytes = codec::encode(&entry).map_err(LOG_DB.encode("log record"))?;
            encoded.push((entry.index(), bytes));
            kept.push(entry);
        }
        if let (Some(c), Some(t0)) = (&self.timings, t0) {
            CommitTimings::add_since(&c.log_encode_ns, t0);
        }
        // The mutation the simulator's durability checkers must catch: acknowledged at once,
        // written without an fsync.
        let (callback, early) = if self.faults.ack_before_fsync() {
            (IOFlushed::noop(), Some(callback))
        } else {
            (callback, None)
        };
        let start_flush = {
            let mut u = self.lock_unflushed();
            if let Some((kind, text)) = &u.failed {
                let e = io::Error::new(*kind, text.clone());
                callback.io_completed(Err(io::Error::new(e.kind(), e.to_string())));
                return Err(e);
            }
            for e in kept {
                u.entries.insert(e.index(), e);
            }
            u.queued.extend(encoded);
            u.callbacks.push(callback);
            let start = !u.flushing;
            if start {
                u.flushing = true;
                self.idle.send_replace(false);
            }
            start
        };
        if let Some(cb) = early {
            cb.io_completed(Ok(()));
        }
        if start_flush {
            let store = self.clone();
            tokio::spawn(async move { store.flush_queued().await });
        }
        if self.lock_unflushed().entries.len() > UNFLUSHED_ENTRIES_MAX {
            self.drain().await?;
        }
        Ok(())
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> Result<(), io::Error> {
        let from = last_log_id.map(|id| id.index() + 1).unwrap_or(0);
        self.drain().await?;
        // Nothing waits in memory now unless a flush failed (its entries stay readable): forget
        // those past the cut too.
        self.lock_unflushed().entries.retain(|i, _| *i < from);
        let txn = self.begin_write()?;
        {
            let mut table = txn.open_table(RAFT_LOG).map_err(LOG_DB.table())?;
            table
                .retain_in(from.., |_, _| false)
                .map_err(LOG_DB.write())?;
        }
        txn.commit().map_err(LOG_DB.commit())?;
        self.after_sync().await;
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), io::Error> {
        let bytes = codec::encode(&log_id).map_err(LOG_DB.encode("log record"))?;
        let upto = log_id.index();
        self.drain().await?;
        let txn = self.begin_write()?;
        {
            // The purged marker and the deletion commit together, so the log never has a gap
            // that the marker does not explain.
            let mut meta = txn.open_table(RAFT_META).map_err(LOG_DB.table())?;
            meta.insert(KEY_LAST_PURGED, bytes.as_slice())
                .map_err(LOG_DB.write())?;
            let mut table = txn.open_table(RAFT_LOG).map_err(LOG_DB.table())?;
            table
                .retain_in(..=upto, |_, _| false)
                .map_err(LOG_DB.write())?;
        }
        txn.commit().map_err(LOG_DB.commit())?;
        self.after_sync().await;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::time::Duration;

    use openraft::storage::{IOFlushed, RaftLogReader, RaftLogStorage};
    use openraft::type_config::TypeConfigExt;
    use tokio::time::Instant;

    use super::*;

    /// A medium whose extra fsync time the test sets.
    #[derive(Debug, Default)]
    struct Slow(Mutex<Duration>);

    impl SyncLatency for Slow {
        fn sync_delay(&self) -> Duration {
            *self.0.lock().expect("lock")
        }
    }

    /// A single-threaded runtime, as the simulator's (the flush task runs when the test yields).
    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime")
    }

    /// [`runtime`] with its clock paused: time moves only by the timers it waits on.
    fn paused_runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .expect("runtime")
    }

    fn store(slow: &Arc<Slow>) -> LogStore {
        let db = crate::storage::open_backend(redb::backends::InMemoryBackend::new(), "log")
            .expect("in-memory database");
        let sync: Arc<dyn SyncLatency> = slow.clone();
        LogStore::new(db).with_sync_latency(Some(sync))
    }

    #[test]
    fn a_slow_medium_delays_each_durable_commit_by_its_delay_in_runtime_time() {
        paused_runtime().block_on(async {
            let slow = Arc::new(Slow::default());
            let mut log = store(&slow);
            // Healthy: no wait at all (the paused clock would show any timer).
            let t0 = Instant::now();
            log.save_vote(&Vote::new(1, 1)).await.expect("vote");
            appended(&mut log, Vec::new()).await;
            assert_eq!(Instant::now(), t0);

            *slow.0.lock().expect("lock") = Duration::from_millis(700);
            let t1 = Instant::now();
            appended(&mut log, Vec::new()).await;
            assert_eq!(Instant::now() - t1, Duration::from_millis(700));
            let t2 = Instant::now();
            log.save_vote(&Vote::new(2, 1)).await.expect("vote");
            assert_eq!(Instant::now() - t2, Duration::from_millis(700));
            assert_eq!(log.read_vote().await.expect("read"), Some(Vote::new(2, 1)));
            // The committed marker is a hint written without an fsync: no wait.
            let t3 = Instant::now();
            log.save_committed(None).await.expect("committed");
            assert_eq!(Instant::now(), t3);
        });
    }

    #[test]
    fn the_committed_marker_is_written_with_the_next_append() {
        runtime().block_on(async {
            let mut log = store(&Arc::default());
            // What a restart would read: a store over the same database, nothing pending.
            let restarted = |log: &LogStore| LogStore::new(Arc::clone(&log.db));
            let c1 = Some(entry(1, 1, 3).log_id());
            log.save_committed(c1).await.expect("committed");
            assert_eq!(
                log.read_committed().await.expect("read"),
                c1,
                "kept in memory"
            );
            assert_eq!(
                restarted(&log).read_committed().await.expect("read"),
                None,
                "not written yet"
            );
            // Not with entries that stop short of it: it would name entries a power cut loses.
            appended(&mut log, vec![entry(1, 1, 0)]).await;
            assert_eq!(restarted(&log).read_committed().await.expect("read"), None);
            appended(&mut log, (1..=3).map(|i| entry(1, 1, i)).collect()).await;
            assert_eq!(restarted(&log).read_committed().await.expect("read"), c1);
            // A newer marker is pending until the vote's transaction carries it.
            let c2 = Some(entry(1, 1, 4).log_id());
            log.save_committed(c2).await.expect("committed");
            assert_eq!(restarted(&log).read_committed().await.expect("read"), c1);
            log.save_vote(&Vote::new(2, 1)).await.expect("vote");
            assert_eq!(restarted(&log).read_committed().await.expect("read"), c2);
            assert_eq!(log.read_committed().await.expect("read"), c2);
        });
    }

    /// Appends `entries` and waits for the append's acknowledgement (its fsync).
    async fn appended(log: &mut LogStore, entries: Vec<Entry>) {
        let (tx, rx) = TypeConfig::oneshot();
        log.append(entries, IOFlushed::signal(tx))
            .await
            .expect("append");
        rx.await.expect("acknowledged").expect("durable");
    }

    fn entry(term: u64, node: u64, index: u64) -> Entry {
        use openraft::vote::RaftLeaderId;
        let leader = openraft::alias::LeaderIdOf::<TypeConfig>::new(term, node).to_committed();
        Entry::new_blank(LogId::new(leader, index))
    }

    #[test]
    fn a_leader_finds_its_terms_tail_and_checks_a_followers_last_log_id() {
        runtime().block_on(async {
            let mut log = store(&Arc::default());
            assert_eq!(log.last_log_id().expect("read"), None);
            // Indexes 0-2 from leader T1-N1, 3-4 from T2-N2.
            let entries: Vec<Entry> = (0..3)
                .map(|i| entry(1, 1, i))
                .chain((3..5).map(|i| entry(2, 2, i)))
                .collect();
            appended(&mut log, entries.clone()).await;
            let t2 = *entries[4].log_id().committed_leader_id();
            let t1 = *entries[0].log_id().committed_leader_id();
            assert_eq!(log.last_log_id().expect("read"), Some(entries[4].log_id()));

            let (prev, tail) = log.leader_tail(&t2, 64).expect("read").expect("a tail");
            assert_eq!(prev, entries[2].log_id());
            assert_eq!(tail.iter().map(|e| e.index()).collect::<Vec<_>>(), [3, 4]);
            assert_eq!(log.leader_tail(&t2, 1).expect("read"), None, "too long");
            assert_eq!(
                log.leader_tail(&t1, 64).expect("read"),
                None,
                "T1-N1 has no entries at the end"
            );

            assert!(log.holds(&entries[1].log_id()).expect("read"));
            assert!(log.holds(&entries[4].log_id()).expect("read"));
            assert!(
                !log.holds(&entry(1, 1, 4).log_id()).expect("read"),
                "other term"
            );
            assert!(
                !log.holds(&entry(2, 2, 9).log_id()).expect("read"),
                "beyond the end"
            );
            // Purged entries are held only as the purged log id itself.
            log.purge(entries[2].log_id()).await.expect("purge");
            assert!(log.holds(&entries[2].log_id()).expect("read"));
            assert!(!log.holds(&entries[1].log_id()).expect("read"));
            assert_eq!(log.leader_tail(&t2, 64).expect("read"), None, "prev purged");
            assert_eq!(log.last_log_id().expect("read"), Some(entries[4].log_id()));
            log.purge(entries[4].log_id()).await.expect("purge");
            assert_eq!(log.last_log_id().expect("read"), Some(entries[4].log_id()));
        });
    }

    #[test]
    fn an_append_is_readable_at_once_and_acknowledged_only_after_its_fsync() {
        paused_runtime().block_on(async {
            let slow = Arc::new(Slow(Mutex::new(Duration::from_millis(700))));
            let mut log = store(&slow);
            let t0 = Instant::now();
            let (tx, mut rx) = TypeConfig::oneshot();
            let entries: Vec<Entry> = (0..3).map(|i| entry(1, 1, i)).collect();
            log.append(entries.clone(), IOFlushed::signal(tx))
                .await
                .expect("append");
            // openraft's rule: readable when `append` returns; not yet durable nor acknowledged.
            assert_eq!(log.try_get_log_entries(0..3).await.expect("read"), entries);
            assert_eq!(
                log.try_get_log_entries(1..).await.expect("read"),
                entries[1..]
            );
            assert_eq!(
                log.get_log_state().await.expect("state").last_log_id,
                Some(entries[2].log_id())
            );
            assert_eq!(
                log.last_log_id().expect("read"),
                None,
                "durable: nothing yet"
            );
            assert!(
                futures::FutureExt::now_or_never(&mut rx).is_none(),
                "acknowledged before its fsync"
            );
            let restarted = LogStore::new(Arc::clone(&log.db));
            rx.await.expect("acknowledged").expect("durable");
            assert_eq!(Instant::now() - t0, Duration::from_millis(700));
            assert_eq!(log.last_log_id().expect("read"), Some(entries[2].log_id()));
            let mut restarted = restarted;
            assert_eq!(
                restarted.try_get_log_entries(..).await.expect("read"),
                entries
            );
        });
    }

    #[test]
    fn appends_made_while_one_fsync_runs_share_the_next_one() {
        runtime().block_on(async {
            let timings = Arc::new(CommitTimings::default());
            let mut log = store(&Arc::default()).with_timings(Some(timings.clone()));
            let mut acks = Vec::new();
            // Three appends before the flush task runs (it runs when this task yields).
            for i in 0..3 {
                let (tx, rx) = TypeConfig::oneshot();
                log.append(vec![entry(1, 1, i)], IOFlushed::signal(tx))
                    .await
                    .expect("append");
                acks.push(rx);
            }
            for rx in acks {
                rx.await.expect("acknowledged").expect("durable");
            }
            let counts: BTreeMap<_, _> = timings.snapshot().into_iter().collect();
            assert_eq!(counts["log_appends"], 1, "one transaction, one fsync");
            assert_eq!(counts["log_entries"], 3);
            // The next append, alone, gets a transaction of its own.
            appended(&mut log, vec![entry(1, 1, 3)]).await;
            let counts: BTreeMap<_, _> = timings.snapshot().into_iter().collect();
            assert_eq!(counts["log_appends"], 2);
            assert_eq!(
                log.last_log_id().expect("read"),
                Some(entry(1, 1, 3).log_id())
            );
        });
    }

    #[test]
    fn a_truncation_waits_for_queued_appends_and_removes_them_everywhere() {
        runtime().block_on(async {
            let mut log = store(&Arc::default());
            let (tx, rx) = TypeConfig::oneshot();
            let entries: Vec<Entry> = (0..5).map(|i| entry(1, 1, i)).collect();
            log.append(entries.clone(), IOFlushed::signal(tx))
                .await
                .expect("append");
            // Before the flush ran: the cut must not be overtaken by the queued write.
            log.truncate_after(Some(entries[2].log_id()))
                .await
                .expect("truncate");
            rx.await.expect("acknowledged").expect("durable");
            assert_eq!(
                log.try_get_log_entries(..).await.expect("read"),
                entries[..3]
            );
            let mut restarted = LogStore::new(Arc::clone(&log.db));
            assert_eq!(
                restarted.try_get_log_entries(..).await.expect("read"),
                entries[..3]
            );
            // The log goes on from the cut under a new leader.
            let next = entry(2, 2, 3);
            appended(&mut log, vec![next.clone()]).await;
            assert_eq!(
                log.try_get_log_entries(3..).await.expect("read"),
                vec![next]
            );
        });
    }
}
