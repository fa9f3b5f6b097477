//! `SimDisk`: an in-memory redb storage backend with power cuts, crashes and a slow-disk knob.
//!
//! The disk keeps two images: what the OS page cache holds (every `write` and
//! `set_len` lands there at once) and what is durable (the page cache as of
//! the last `sync_data`). Faults:
//!
//! - [`SimDisk::power_cut`]: the machine loses power. The page cache is gone;
//!   the disk is its last synced image.
//! - [`SimDisk::crash`]: the process dies, the kernel lives. Unsynced writes
//!   persist (the page cache is written back eventually).
//!
//! Both fence the handles opened before the fault: the dead process's redb
//! `Database` may still run its drop (which writes a clean-shutdown header) or
//! be mid-commit, and a real dead process does neither, so writes through a
//! fenced handle are silently discarded (as redb's own crash tests do).
//! `Clone` attaches a new handle at the current generation: after a fault the
//! controller drops its `Database` and calls
//! `redb::Builder::new().create_with_backend(disk.clone())` again.
//!
//! redb's backend calls are synchronous, so a slow disk cannot sleep inside
//! them; [`SimDisk::sync_delay`] is a value the node's storage layer reads and
//! sleeps for (on the simulated clock) after each durable commit.

use std::io;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// Largest image the disk grows to. redb grows its file in regions; 1 GiB is
/// far above what a simulated day writes and stops a runaway writer from
/// taking the test machine's memory with it. Growing past it is an I/O error,
/// as a full SD card would be.
pub const DISK_BYTES_MAX: u64 = 1 << 30;

/// Counters a run can report or a test can assert on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DiskCounters {
    /// `write` calls that reached the page cache.
    pub writes: u64,
    /// Bytes written to the page cache.
    pub bytes_written: u64,
    /// `sync_data` calls (fsyncs).
    pub syncs: u64,
    /// Writes, resizes and syncs discarded because their handle was fenced.
    pub fenced_ops: u64,
    /// Power cuts so far.
    pub power_cuts: u64,
    /// Crashes so far.
    pub crashes: u64,
}

/// A fault armed to fire inside the next `sync_data`, i.e. in the middle of a
/// commit: the writes of the commit are in the page cache, the fsync never
/// completes, and the process is dead.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncFault {
    /// Power fails during the fsync: the commit's writes are lost.
    PowerCut,
    /// The process dies during the fsync: the commit's writes survive in the
    /// page cache (so the commit may become durable without being acknowledged).
    Crash,
}

#[derive(Debug, Default)]
struct DiskState {
    armed: Option<SyncFault>,
    tripped: Option<SyncFault>,
    /// The page cache: what reads see.
    cache: Vec<u8>,
    /// The durable image: what survives a power cut.
    durable: Vec<u8>,
    /// Byte ranges of `cache` written since the last sync (copied on sync).
    dirty: Vec<(usize, usize)>,
    /// Bumped by every fault; handles of older generations are fenced.
    generation: u64,
    sync_delay: Duration,
    counters: DiskCounters,
}

/// A simulated disk. See the module documentation for the fault model.
#[derive(Debug)]
pub struct SimDisk {
    state: Arc<Mutex<DiskState>>,
    generation: u64,
}

impl Clone for SimDisk {
    /// A new handle at the disk's *current* generation (not the original's).
    fn clone(&self) -> Self {
        let generation = self.lock().generation;
        Self {
            state: Arc::clone(&self.state),
            generation,
        }
    }
}

impl Default for SimDisk {
    fn default() -> Self {
        Self::new()
    }
}

impl SimDisk {
    /// An empty disk.
    pub fn new() -> Self {
        Self {
            state: Arc::new(Mutex::new(DiskState::default())),
            generation: 0,
        }
    }

    fn lock(&self) -> MutexGuard<'_, DiskState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether this handle was opened before the last fault.
    pub fn is_fenced(&self) -> bool {
        self.lock().generation != self.generation
    }

    /// Power loss: everything not synced is gone; older handles are fenced.
    pub fn power_cut(&self) {
        let mut s = self.lock();
        s.cache = s.durable.clone();
        s.dirty.clear();
        s.generation += 1;
        s.counters.power_cuts += 1;
    }

    /// Process crash: the page cache survives (and is written back, so it
    /// becomes durable); older handles are fenced.
    pub fn crash(&self) {
        let mut s = self.lock();
        s.durable = s.cache.clone();
        s.dirty.clear();
        s.generation += 1;
        s.counters.crashes += 1;
    }

    /// Arms a fault to fire inside the next `sync_data` (see [`SyncFault`]).
    /// That sync returns an I/O error, the fault is applied, and older handles
    /// are fenced; the world loop learns of it from [`SimDisk::take_tripped`]
    /// and must treat the node as dead (crash or power cut) from then on.
    pub fn fail_next_sync(&self, fault: SyncFault) {
        self.lock().armed = Some(fault);
    }

    /// The armed fault that fired since the last call, if any.
    pub fn take_tripped(&self) -> Option<SyncFault> {
        self.lock().tripped.take()
    }

    /// Makes the disk slow: the storage layer should wait this long (in
    /// simulated time) after each sync.
    pub fn set_sync_delay(&self, delay: Duration) {
        self.lock().sync_delay = delay;
    }

    /// How long the storage layer should wait after a sync (zero for a healthy disk).
    pub fn sync_delay(&self) -> Duration {
        self.lock().sync_delay
    }

    /// The counters so far.
    pub fn counters(&self) -> DiskCounters {
        self.lock().counters
    }

    /// Bytes written since the last sync (lost by a power cut now).
    pub fn unsynced_bytes(&self) -> u64 {
        self.lock().dirty.iter().map(|&(a, b)| (b - a) as u64).sum()
    }

    /// Whether the page cache differs from the durable image.
    pub fn has_unsynced(&self) -> bool {
        let s = self.lock();
        !s.dirty.is_empty() || s.cache.len() != s.durable.len()
    }
}

/// Dirty ranges kept before they are collapsed into one whole-image range, so a
/// node that never syncs cannot grow the list without bound.
const DIRTY_RANGES_MAX: usize = 65_536;

fn push_dirty(s: &mut DiskState, start: usize, end: usize) {
    // Coalesce with the previous range when contiguous (redb writes pages in order).
    match s.dirty.last_mut() {
        Some(last) if last.1 == start => last.1 = end,
        _ => s.dirty.push((start, end)),
    }
    if s.dirty.len() > DIRTY_RANGES_MAX {
        let len = s.cache.len();
        s.dirty.clear();
        s.dirty.push((0, len));
    }
}

fn out_of_range(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, format!("sim disk: {what}"))
}

impl redb::StorageBackend for SimDisk {
    fn len(&self) -> Result<u64, io::Error> {
        Ok(self.lock().cache.len() as u64)
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), io::Error> {
        let s = self.lock();
        let start = usize::try_from(offset).map_err(|_| out_of_range("read offset"))?;
        let src = s
            .cache
            .get(start..start + out.len())
            .ok_or_else(|| out_of_range("read past the end"))?;
        out.copy_from_slice(src);
        Ok(())
    }

    fn set_len(&self, len: u64) -> Result<(), io::Error> {
        let mut s = self.lock();
        if s.generation != self.generation {
            s.counters.fenced_ops += 1;
            return Ok(());
        }
        if len > DISK_BYTES_MAX {
            return Err(io::Error::new(
                io::ErrorKind::StorageFull,
                format!("sim disk: {len} bytes exceeds DISK_BYTES_MAX ({DISK_BYTES_MAX})"),
            ));
        }
        let len = len as usize;
        let old = s.cache.len();
        s.cache.resize(len, 0);
        if len > old {
            // The grown region is zeros in the cache; make sync carry them over
            // any stale bytes an earlier, longer durable image had there.
            push_dirty(&mut s, old, len);
        }
        // Ranges past the new end no longer exist; the length itself is synced
        // by `sync_data` (it compares lengths).
        for r in &mut s.dirty {
            r.1 = r.1.min(len);
            r.0 = r.0.min(r.1);
        }
        s.dirty.retain(|r| r.0 < r.1);
        Ok(())
    }

    fn sync_data(&self) -> Result<(), io::Error> {
        let mut s = self.lock();
        if s.generation != self.generation {
            s.counters.fenced_ops += 1;
            return Ok(());
        }
        if let Some(fault) = s.armed.take() {
            s.tripped = Some(fault);
            drop(s);
            match fault {
                SyncFault::PowerCut => self.power_cut(),
                SyncFault::Crash => self.crash(),
            }
            return Err(io::Error::other(format!(
                "sim disk: simulated {fault:?} during fsync; the process is dead"
            )));
        }
        let st = &mut *s;
        let len = st.cache.len();
        st.durable.resize(len, 0);
        for &(a, b) in &st.dirty {
            st.durable[a..b].copy_from_slice(&st.cache[a..b]);
        }
        st.dirty.clear();
        st.counters.syncs += 1;
        Ok(())
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), io::Error> {
        let mut s = self.lock();
        if s.generation != self.generation {
            s.counters.fenced_ops += 1;
            return Ok(());
        }
        let start = usize::try_from(offset).map_err(|_| out_of_range("write offset"))?;
        let end = start + data.len();
        let dst = s
            .cache
            .get_mut(start..end)
            .ok_or_else(|| out_of_range("write past the end"))?;
        dst.copy_from_slice(data);
        push_dirty(&mut s, start, end);
        s.counters.writes += 1;
        s.counters.bytes_written += data.len() as u64;
        Ok(())
    }
}
