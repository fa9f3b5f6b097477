//! `SimDisk`: an in-memory redb storage backend with power cuts, crashes and a slow-disk knob.
//!
//! The disk keeps two images: what the OS page cache holds (every `write` and
//! `set_len` lands there at once) and what is durable (the page cache as of
//! the last `sync_data`), in 4 KiB chunks shared between the two until one changes (so a sync
//! costs a pointer per changed page, not a copy of the bytes). Faults:
//!
//! - [`SimDisk::power_cut`]: the machine loses power. The page cache is gone;
//!   the disk is its last synced image.
//! - [`SimDisk::crash`]: the process dies, the kernel lives. Unsynced writes
//!   persist (the page cache is written back eventually).
//! - [`SimDisk::set_full`]: the card is full: every write and every growth of the file fails
//!   with `StorageFull` (ENOSPC) until space returns; reads and syncs still work.
//! - [`SimDisk::flip_bit`]: one bit of a page on the medium flips (a worn SD card): in the
//!   durable image and the page cache alike.
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
    /// Syncs failed with an I/O error ([`SimDisk::fail_next_sync_io`]).
    pub io_errors: u64,
    /// Writes and growths refused because the disk was full ([`SimDisk::set_full`]).
    pub no_space: u64,
    /// Bits flipped ([`SimDisk::flip_bit`]).
    pub bits_flipped: u64,
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

/// Bytes per chunk of an image: redb's page size, so a page write replaces one chunk whole.
const CHUNK: usize = 4096;

/// One image of the disk: its length and its bytes in chunks. A chunk is shared between the
/// page cache and the durable image until one of them changes it (copy on write), so a sync is
/// a pointer copy per changed chunk, and a power cut or crash is a copy of the chunk list, not
/// of the bytes. `None` is a chunk of zeros never written (a file grown by `set_len`).
#[derive(Debug, Default, Clone)]
struct Image {
    len: usize,
    chunks: Vec<Option<Arc<[u8]>>>,
}

impl Image {
    fn read(&self, start: usize, out: &mut [u8]) {
        let mut done = 0;
        while done < out.len() {
            let at = start + done;
            let (i, off) = (at / CHUNK, at % CHUNK);
            let n = (CHUNK - off).min(out.len() - done);
            let dst = &mut out[done..done + n];
            match self.chunks.get(i).and_then(Option::as_ref) {
                Some(c) => dst.copy_from_slice(&c[off..off + n]),
                None => dst.fill(0),
            }
            done += n;
        }
    }

    /// Writes `data` at `start` (inside the image), calling `touched` with each chunk changed.
    fn write(&mut self, start: usize, data: &[u8], mut touched: impl FnMut(usize)) {
        let mut done = 0;
        while done < data.len() {
            let at = start + done;
            let (i, off) = (at / CHUNK, at % CHUNK);
            let n = (CHUNK - off).min(data.len() - done);
            let src = &data[done..done + n];
            let slot = &mut self.chunks[i];
            if n == CHUNK {
                // A whole page: a new chunk, whoever shares the old one.
                *slot = Some(Arc::from(src));
            } else {
                let chunk = slot.get_or_insert_with(|| Arc::from(&[0u8; CHUNK][..]));
                Arc::make_mut(chunk)[off..off + n].copy_from_slice(src);
            }
            touched(i);
            done += n;
        }
    }

    /// Sets the length; a shrink zeroes the cut part of the last chunk (so growing again reads
    /// zeros, as a file does) and reports that chunk as changed.
    fn set_len(&mut self, len: usize, mut touched: impl FnMut(usize)) {
        let n = len.div_ceil(CHUNK);
        if len < self.len {
            self.chunks.truncate(n);
            let off = len % CHUNK;
            if off != 0
                && let Some(Some(chunk)) = self.chunks.get_mut(n - 1)
            {
                Arc::make_mut(chunk)[off..].fill(0);
                touched(n - 1);
            }
        }
        self.chunks.resize(n, None);
        self.len = len;
    }
}

#[derive(Debug, Default)]
struct DiskState {
    armed: Option<SyncFault>,
    /// The next sync fails with an I/O error ([`SimDisk::fail_next_sync_io`]).
    armed_io: bool,
    tripped: Option<SyncFault>,
    /// The page cache: what reads see.
    cache: Image,
    /// The durable image: what survives a power cut.
    durable: Image,
    /// Chunks of `cache` changed since the last sync (copied on sync).
    dirty: DirtyChunks,
    /// The shortest length of `cache` since the last sync: durable chunks past it were cut
    /// and must not come back with a later growth.
    shortest_since_sync: usize,
    /// Bytes written since the last sync (overlapping writes counted each time).
    unsynced_bytes: u64,
    /// Bumped by every fault; handles of older generations are fenced.
    generation: u64,
    sync_delay: Duration,
    /// Writes and growths fail with ENOSPC ([`SimDisk::set_full`]).
    full: bool,
    /// The chunks the last successful sync made durable (a redb commit's pages and header).
    last_synced: Vec<usize>,
    counters: DiskCounters,
}

/// Chunk indexes changed since the last sync, each listed once.
#[derive(Debug, Default)]
struct DirtyChunks {
    list: Vec<usize>,
    /// Whether each chunk index is in `list`.
    listed: Vec<bool>,
}

impl DirtyChunks {
    fn mark(&mut self, i: usize) {
        if self.listed.len() <= i {
            self.listed.resize(i + 1, false);
        }
        if !self.listed[i] {
            self.listed[i] = true;
            self.list.push(i);
        }
    }

    /// Forgets the chunks at index `n` and above (cut off the file).
    fn forget_from(&mut self, n: usize) {
        let listed = &mut self.listed;
        self.list.retain(|&i| {
            let keep = i < n;
            if !keep {
                listed[i] = false;
            }
            keep
        });
    }

    fn clear(&mut self) {
        self.forget_from(0);
    }
}

impl DiskState {
    fn clear_dirty(&mut self) {
        self.dirty.clear();
        self.unsynced_bytes = 0;
        self.shortest_since_sync = self.cache.len;
    }
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
        s.clear_dirty();
        s.generation += 1;
        s.counters.power_cuts += 1;
    }

    /// Process crash: the page cache survives (and is written back, so it
    /// becomes durable); older handles are fenced.
    pub fn crash(&self) {
        let mut s = self.lock();
        s.durable = s.cache.clone();
        s.clear_dirty();
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

    /// Arms an I/O error in the next `sync_data` (an SD card's EIO, `disk_io_error`): that sync
    /// fails, nothing of it becomes durable, the page cache keeps the writes, and the process
    /// lives on to handle the error (no handle is fenced).
    pub fn fail_next_sync_io(&self) {
        self.lock().armed_io = true;
    }

    /// Disarms a fault armed by [`SimDisk::fail_next_sync`] that has not fired, returning it.
    pub fn disarm(&self) -> Option<SyncFault> {
        self.lock().armed.take()
    }

    /// A clean process exit: nothing is lost (the machine stays up, its page cache with it)
    /// and the exited process's handles are fenced, as for a fault, so that nothing it left
    /// behind writes after the next process opened the disk.
    pub fn fence(&self) {
        self.lock().generation += 1;
    }

    /// The armed fault that fired since the last call, if any.
    pub fn take_tripped(&self) -> Option<SyncFault> {
        self.lock().tripped.take()
    }

    /// Fills the disk (`full`), or frees space again: while full, every `write` and every
    /// `set_len` that grows the file fails with `StorageFull` (ENOSPC, "No space left on
    /// device"); reads, shrinks and syncs of what was written before still work.
    pub fn set_full(&self, full: bool) {
        self.lock().full = full;
    }

    /// Flips one bit of the page at `pick` (modulo the pages the file holds, the first page,
    /// redb's header, left out) on the medium: in the durable image and the page cache alike.
    /// Returns the byte offset and bit flipped, or `None` when the file has no page beyond
    /// its first.
    pub fn flip_bit(&self, pick: u64) -> Option<(u64, u8)> {
        let mut s = self.lock();
        let pages = s.durable.len.div_ceil(CHUNK);
        if pages < 2 {
            return None;
        }
        // `pick` modulo the pages after the first is the page; the rest of it, the bit.
        let after_first = pages as u64 - 1;
        let page = 1 + (pick % after_first) as usize;
        let within = ((pick / after_first) % (CHUNK as u64 * 8)) as usize;
        let (byte, bit) = (page * CHUNK + within / 8, (within % 8) as u8);
        if byte >= s.durable.len {
            return None;
        }
        let st = &mut *s;
        for image in [&mut st.durable, &mut st.cache] {
            if byte < image.len {
                let mut one = [0u8];
                image.read(byte, &mut one);
                one[0] ^= 1 << bit;
                image.write(byte, &one, |_| {});
            }
        }
        s.counters.bits_flipped += 1;
        Some((byte as u64, bit))
    }

    /// [`SimDisk::flip_bit`] in a page the last successful sync wrote (the newest commit's
    /// pages: the first page, redb's header, left out), or in any page if it wrote none:
    /// damage redb's recovery after a power cut finds, as it verifies the newest commit.
    pub fn flip_bit_in_newest(&self, pick: u64) -> Option<(u64, u8)> {
        let pages = {
            let s = self.lock();
            let len_pages = s.durable.len.div_ceil(CHUNK);
            let mut pages: Vec<usize> = s
                .last_synced
                .iter()
                .copied()
                .filter(|&p| p >= 1 && p < len_pages)
                .collect();
            pages.sort_unstable();
            pages
        };
        let Some(&page) = pages.get((pick % pages.len().max(1) as u64) as usize) else {
            return self.flip_bit(pick);
        };
        let after_first = self.lock().durable.len.div_ceil(CHUNK) as u64 - 1;
        // `flip_bit` numbers pages from the second; the bit comes from the rest of `pick`.
        let bit = (pick / pages.len() as u64) % (CHUNK as u64 * 8);
        self.flip_bit((page as u64 - 1) + bit * after_first)
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
        self.lock().unsynced_bytes
    }

    /// Whether the page cache differs from the durable image: writes, a new length, or a cut
    /// since the last sync (a file cut and grown back reads zeros where the durable image
    /// still holds the old bytes).
    pub fn has_unsynced(&self) -> bool {
        let s = self.lock();
        !s.dirty.list.is_empty()
            || s.cache.len != s.durable.len
            || s.shortest_since_sync < s.durable.len
    }
}

fn no_space() -> io::Error {
    io::Error::new(
        io::ErrorKind::StorageFull,
        "sim disk: no space left on device (ENOSPC)",
    )
}

fn out_of_range(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, format!("sim disk: {what}"))
}

impl redb::StorageBackend for SimDisk {
    fn len(&self) -> Result<u64, io::Error> {
        Ok(self.lock().cache.len as u64)
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), io::Error> {
        let s = self.lock();
        let start = usize::try_from(offset).map_err(|_| out_of_range("read offset"))?;
        if start
            .checked_add(out.len())
            .is_none_or(|end| end > s.cache.len)
        {
            return Err(out_of_range("read past the end"));
        }
        s.cache.read(start, out);
        Ok(())
    }

    fn set_len(&self, len: u64) -> Result<(), io::Error> {
        let mut s = self.lock();
        if s.generation != self.generation {
            s.counters.fenced_ops += 1;
            return Ok(());
        }
        if s.full && len as usize > s.cache.len {
            s.counters.no_space += 1;
            return Err(no_space());
        }
        if len > DISK_BYTES_MAX {
            return Err(io::Error::new(
                io::ErrorKind::StorageFull,
                format!("sim disk: {len} bytes exceeds DISK_BYTES_MAX ({DISK_BYTES_MAX})"),
            ));
        }
        let len = len as usize;
        let st = &mut *s;
        st.cache.set_len(len, |i| st.dirty.mark(i));
        st.shortest_since_sync = st.shortest_since_sync.min(len);
        // Chunks past the new end no longer exist; the length itself is synced by `sync_data`.
        st.dirty.forget_from(len.div_ceil(CHUNK));
        Ok(())
    }

    fn sync_data(&self) -> Result<(), io::Error> {
        let mut s = self.lock();
        if s.generation != self.generation {
            s.counters.fenced_ops += 1;
            return Ok(());
        }
        if std::mem::take(&mut s.armed_io) {
            s.counters.io_errors += 1;
            return Err(io::Error::other(
                "sim disk: simulated I/O error (EIO) during fsync",
            ));
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
        // Durable chunks the cache cut since the last sync are gone (a partly cut chunk was
        // rewritten in the cache and is dirty); chunks grown since then are zeros until written.
        let kept = st.shortest_since_sync.div_ceil(CHUNK);
        st.durable.chunks.truncate(kept);
        st.durable.chunks.resize(st.cache.chunks.len(), None);
        st.durable.len = st.cache.len;
        for &i in &st.dirty.list {
            st.durable.chunks[i].clone_from(&st.cache.chunks[i]);
        }
        st.last_synced.clone_from(&st.dirty.list);
        st.clear_dirty();
        st.counters.syncs += 1;
        Ok(())
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), io::Error> {
        let mut s = self.lock();
        if s.generation != self.generation {
            s.counters.fenced_ops += 1;
            return Ok(());
        }
        if s.full {
            s.counters.no_space += 1;
            return Err(no_space());
        }
        let start = usize::try_from(offset).map_err(|_| out_of_range("write offset"))?;
        if start
            .checked_add(data.len())
            .is_none_or(|end| end > s.cache.len)
        {
            return Err(out_of_range("write past the end"));
        }
        let st = &mut *s;
        st.cache.write(start, data, |i| st.dirty.mark(i));
        st.unsynced_bytes += data.len() as u64;
        st.counters.writes += 1;
        st.counters.bytes_written += data.len() as u64;
        Ok(())
    }
}
