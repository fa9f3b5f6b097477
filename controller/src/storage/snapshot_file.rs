//! Snapshot bytes kept in `state.redb` as a sequence of chunks, written and read a chunk at a
//! time: a snapshot is built, sent, received, checked and installed without ever being whole
//! in memory (BENCHMARKS.md, "Bounded without the WAN", for what that saved).
//!
//! A snapshot is a **file** of chunks under one id in [`SNAPSHOT_CHUNKS`] (`(id, chunk number)
//! -> at most FILE_CHUNK_BYTES`), in the state database rather than a file beside it, so the
//! simulator's disks (power cuts, lost unsynced writes) hold it like every other byte of the
//! node. Once written, a file's chunks never change: a [`SnapshotFile`] handle reads the same
//! bytes until the file is removed, so openraft may hold one while a newer snapshot is built.
//! Ids come from a node-local counter; which file is the current snapshot is the state
//! machine's business (`state/snapshot.rs`), and so is removing the others.

use std::io;
use std::sync::Arc;

use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};

use super::{NODE_LOCAL, STATE_DB, StoreError};

/// Snapshot files: (file id, chunk number) -> the chunk's bytes.
pub const SNAPSHOT_CHUNKS: TableDefinition<(u64, u32), &[u8]> =
    TableDefinition::new("snapshot_chunks");
/// Bytes per stored chunk, and per chunk the network sends (`rpc::network::SNAPSHOT_CHUNK_BYTES`
/// says why 64 KiB), so a chunk sent is one read; small enough that redb writes it as ordinary
/// pages within its cache (a single value of a whole snapshot would be one allocation of its
/// size).
pub const FILE_CHUNK_BYTES: usize = 64 * 1024;
/// Chunks a writer buffers before committing them: 1 MiB in memory, and a write transaction
/// per MiB rather than per chunk.
const CHUNKS_PER_COMMIT: usize = 16;
/// The node-local counter of file ids.
const NEXT_ID_KEY: &str = "snapshot_next_file";

/// A snapshot's bytes as stored: cheap to clone, read a chunk at a time.
#[derive(Clone)]
pub struct SnapshotFile {
    db: Arc<Database>,
    id: u64,
    len: u64,
}

impl std::fmt::Debug for SnapshotFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnapshotFile")
            .field("id", &self.id)
            .field("len", &self.len)
            .finish()
    }
}

impl SnapshotFile {
    /// The file `id` of `len` bytes in `db` (as a state machine recorded it).
    pub fn open(db: Arc<Database>, id: u64, len: u64) -> Self {
        SnapshotFile { db, id, len }
    }

    /// The file's id.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Its length, bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether it holds no bytes.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Up to `max` bytes from `offset` (fewer at a chunk's end or the file's).
    pub fn read_at(&self, offset: u64, max: usize) -> Result<Vec<u8>, StoreError> {
        if offset >= self.len {
            return Ok(Vec::new());
        }
        let chunk = u32::try_from(offset / FILE_CHUNK_BYTES as u64)
            .map_err(|_| STATE_DB.corrupt("snapshot file")("offset past 2^32 chunks"))?;
        let txn = self.db.begin_read().map_err(STATE_DB.begin("read"))?;
        let t = txn.open_table(SNAPSHOT_CHUNKS).map_err(STATE_DB.table())?;
        let v = t
            .get((self.id, chunk))
            .map_err(STATE_DB.read())?
            .ok_or_else(|| missing(self.id, chunk))?;
        let bytes = v.value();
        let from = (offset % FILE_CHUNK_BYTES as u64) as usize;
        let to = bytes.len().min(from.saturating_add(max));
        Ok(bytes.get(from..to).unwrap_or_default().to_vec())
    }

    /// A reader from the start, a chunk in memory at a time.
    pub fn reader(&self) -> SnapshotReader {
        SnapshotReader {
            file: self.clone(),
            pos: 0,
            chunk: Vec::new(),
            at: 0,
        }
    }
}

fn missing(id: u64, chunk: u32) -> StoreError {
    STATE_DB.corrupt("snapshot file")(format!(
        "chunk {chunk} of snapshot file {id} is missing (a newer snapshot replaced it); the \
         transfer or install starts again from the current snapshot"
    ))
}

/// Reads a [`SnapshotFile`] in order (`std::io::Read`), one chunk held at a time.
pub struct SnapshotReader {
    file: SnapshotFile,
    /// Offset of the next byte to read.
    pos: u64,
    /// The chunk holding `pos`, from `at` on.
    chunk: Vec<u8>,
    at: usize,
}

impl SnapshotReader {
    /// Bytes read so far.
    pub fn position(&self) -> u64 {
        self.pos
    }
}

impl io::Read for SnapshotReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.at >= self.chunk.len() {
            if self.pos >= self.file.len {
                return Ok(0);
            }
            self.chunk = self
                .file
                .read_at(self.pos, FILE_CHUNK_BYTES)
                .map_err(io::Error::other)?;
            self.at = 0;
            if self.chunk.is_empty() {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "a snapshot file's chunk is empty",
                ));
            }
        }
        let n = buf.len().min(self.chunk.len() - self.at);
        buf[..n].copy_from_slice(&self.chunk[self.at..self.at + n]);
        self.at += n;
        self.pos += n as u64;
        Ok(n)
    }
}

/// Writes a new snapshot file (`std::io::Write`), committing every [`CHUNKS_PER_COMMIT`] chunks
/// without an fsync: whoever makes the file the current snapshot commits that durably, which
/// (redb's commits being ordered) makes the chunks durable too.
pub struct SnapshotWriter {
    db: Arc<Database>,
    id: u64,
    /// Chunks numbered before `chunks` are committed.
    next_chunk: u32,
    chunks: Vec<Vec<u8>>,
    written: u64,
}

impl SnapshotWriter {
    /// A new, empty file with a fresh id.
    pub fn create(db: &Arc<Database>) -> Result<Self, StoreError> {
        let txn = db.begin_write().map_err(STATE_DB.begin("write"))?;
        let id = {
            let mut t = txn.open_table(NODE_LOCAL).map_err(STATE_DB.table())?;
            let id = t
                .get(NEXT_ID_KEY)
                .map_err(STATE_DB.read())?
                .map_or(1, |v| v.value());
            t.insert(NEXT_ID_KEY, id + 1).map_err(STATE_DB.write())?;
            id
        };
        txn.commit().map_err(STATE_DB.commit())?;
        Ok(SnapshotWriter {
            db: db.clone(),
            id,
            next_chunk: 0,
            chunks: Vec::new(),
            written: 0,
        })
    }

    /// The id of the file being written.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    fn commit_chunks(&mut self, all: bool) -> Result<(), StoreError> {
        let full = if all {
            self.chunks.len()
        } else {
            self.chunks.len().saturating_sub(1)
        };
        if full == 0 {
            return Ok(());
        }
        let mut txn = self.db.begin_write().map_err(STATE_DB.begin("write"))?;
        txn.set_durability(Durability::None)
            .map_err(STATE_DB.write())?;
        {
            let mut t = txn.open_table(SNAPSHOT_CHUNKS).map_err(STATE_DB.table())?;
            for c in self.chunks.drain(..full) {
                t.insert((self.id, self.next_chunk), c.as_slice())
                    .map_err(STATE_DB.write())?;
                self.next_chunk += 1;
            }
        }
        txn.commit().map_err(STATE_DB.commit())
    }

    /// Commits what is buffered and answers the file.
    pub fn finish(mut self) -> Result<SnapshotFile, StoreError> {
        self.commit_chunks(true)?;
        Ok(SnapshotFile {
            db: self.db.clone(),
            id: self.id,
            len: self.written,
        })
    }
}

impl io::Write for SnapshotWriter {
    fn write(&mut self, mut buf: &[u8]) -> io::Result<usize> {
        let n = buf.len();
        while !buf.is_empty() {
            if self
                .chunks
                .last()
                .is_none_or(|c| c.len() >= FILE_CHUNK_BYTES)
            {
                if self.chunks.len() > CHUNKS_PER_COMMIT {
                    self.commit_chunks(false).map_err(io::Error::other)?;
                }
                self.chunks.push(Vec::with_capacity(FILE_CHUNK_BYTES));
            }
            let last = self.chunks.last_mut().expect("pushed above");
            let take = buf.len().min(FILE_CHUNK_BYTES - last.len());
            last.extend_from_slice(&buf[..take]);
            buf = &buf[take..];
            self.written += take as u64;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Removes every snapshot file but those in `keep`, in `txn`.
pub fn remove_except(txn: &redb::WriteTransaction, keep: &[u64]) -> Result<u64, StoreError> {
    let mut t = txn.open_table(SNAPSHOT_CHUNKS).map_err(STATE_DB.table())?;
    let mut removed = 0;
    t.retain(|(id, _), _| {
        let k = keep.contains(&id);
        if !k {
            removed += 1;
        }
        k
    })
    .map_err(STATE_DB.write())?;
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};

    use super::*;

    fn db() -> Arc<Database> {
        super::super::open_backend(redb::backends::InMemoryBackend::new(), "test").expect("db")
    }

    #[test]
    fn a_file_reads_back_what_was_written_in_any_pieces() {
        let db = db();
        let bytes: Vec<u8> = (0..(FILE_CHUNK_BYTES * 40 + 123))
            .map(|i| (i * 7 % 251) as u8)
            .collect();
        let mut w = SnapshotWriter::create(&db).expect("writer");
        for piece in bytes.chunks(10_007) {
            w.write_all(piece).expect("write");
        }
        let f = w.finish().expect("finish");
        assert_eq!(f.len(), bytes.len() as u64);
        let mut back = Vec::new();
        f.reader().read_to_end(&mut back).expect("read");
        assert_eq!(back, bytes);
        let at = FILE_CHUNK_BYTES as u64 * 3 + 5;
        assert_eq!(
            f.read_at(at, 100).expect("read_at"),
            bytes[at as usize..at as usize + 100]
        );
        // A second file gets another id; removing the first leaves the second readable.
        let mut w2 = SnapshotWriter::create(&db).expect("writer");
        w2.write_all(b"second").expect("write");
        let f2 = w2.finish().expect("finish");
        assert_ne!(f2.id(), f.id());
        let txn = db.begin_write().expect("write");
        assert_eq!(remove_except(&txn, &[f2.id()]).expect("remove"), 41);
        txn.commit().expect("commit");
        assert_eq!(f2.read_at(0, 100).expect("read"), b"second");
        assert!(f.read_at(0, 10).is_err(), "a removed file says so");
    }
}
