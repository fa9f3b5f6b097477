//! The node's redb databases: table definitions and opening them on files or any backend.
//!
//! Two databases per node: `raft-log.redb` holds the Raft log and metadata (vote, committed,
//! purged) and is fsynced on every append (one fsync per durable commit); `state.redb` holds
//! the state machine (actor state, dedupe windows, timers, outbox, snapshot) and node-local
//! counters, written without fsync except for snapshots and sequence reservations. Two files
//! because redb has one writer per database: appends must never queue behind a long apply.
//! The node is generic over where the bytes live: files on a board, or the simulator's
//! fault-injecting disks (`redb::StorageBackend`).

mod error;
pub mod snapshot_file;

pub use self::error::{Db, LOG_DB, STATE_DB, StoreError};
pub use self::snapshot_file::SnapshotFile;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use redb::{Database, TableDefinition};

/// Raft log: index -> bincode(Entry).
pub const RAFT_LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("raft_log");
/// Raft metadata: "vote", "committed", "last_purged" -> bincode.
pub const RAFT_META: TableDefinition<&str, &[u8]> = TableDefinition::new("raft_meta");
/// State machine metadata: "scalars2" (applied index, membership, hash, log time, ...),
/// "customers", "snapshot2" (the current snapshot's file, see `state::meta_keys`).
pub const SM_META: TableDefinition<&str, &[u8]> = TableDefinition::new("sm_meta");
/// The state machine's outbox pins, a row per pin (the rest of its scalars are in `sm_meta`):
/// bincode(Pin) -> sequence of the newest outbox record for it.
pub const SM_PINS: TableDefinition<&[u8], u64> = TableDefinition::new("sm_pins");
/// The energy billed per customer in the open hour, a row per customer: customer id -> Wh.
pub const SM_ENERGY_CUSTOMERS: TableDefinition<u32, u64> =
    TableDefinition::new("sm_energy_customers");
/// Actor key-value state: actor id byte ++ actor key -> value.
pub const ACTOR_STATE: TableDefinition<&[u8], &[u8]> = TableDefinition::new("actor_state");
/// Exactly-once windows: origin node -> bincode(DedupeWindow).
pub const DEDUPE: TableDefinition<u64, &[u8]> = TableDefinition::new("dedupe");
/// Durable actor timers: timer id -> bincode(TimerRecord).
pub const TIMERS: TableDefinition<u64, &[u8]> = TableDefinition::new("timers");
/// Node-local, never replicated: "next_seq" (the proposal sequence reserved so far), cursors.
pub const NODE_LOCAL: TableDefinition<&str, u64> = TableDefinition::new("node_local");
/// Outbox: output sequence -> bincode(OutboxRecord): relay commands, set-points, ledger, alarms.
pub const OUTBOX: TableDefinition<u64, &[u8]> = TableDefinition::new("outbox");

/// Default size of redb's cache for each of the node's database files (`[storage]
/// cache_kib`). Boards have little RAM to spare (the node's whole resident budget is 24 MiB),
/// and our working set (a few hundred accounts) is small. The cache fills with the pages a
/// node writes, snapshots included, and stays full: three of them are most of what resident
/// memory grows by after the start (BENCHMARKS.md, "Resident memory of a node", where 4 MiB
/// and 2 MiB left a node above the budget after its first snapshot).
pub const REDB_CACHE_BYTES: usize = 1024 * 1024;

/// The Raft log database's file name inside the data directory.
pub const LOG_FILE_NAME: &str = "raft-log.redb";
/// The state machine database's file name inside the data directory.
pub const STATE_FILE_NAME: &str = "state.redb";

/// A node's two databases.
#[derive(Debug, Clone)]
pub struct Stores {
    /// Raft log and metadata.
    pub log: Arc<Database>,
    /// State machine and node-local data.
    pub state: Arc<Database>,
    /// Extra time the log's medium takes per fsync, waited before a durable log write is
    /// acknowledged; `None` for files (their fsync takes the time itself).
    pub log_sync: Option<Arc<dyn SyncLatency>>,
}

/// A storage medium slower to fsync than the work redb does: the simulator's slow disk.
///
/// redb's storage backend is synchronous, so a slow medium cannot sleep inside `sync_data`;
/// the node's async storage code waits this long after each durable commit instead, on the
/// runtime's clock (simulated time in the simulator), before acknowledging it. A file on a
/// board needs none: its fsync blocks for as long as the card takes.
pub trait SyncLatency: Send + Sync + std::fmt::Debug {
    /// The extra wait per durable commit (zero for a healthy medium).
    fn sync_delay(&self) -> std::time::Duration;
}

/// Errors opening a node's database. Each carries the OS or redb error as text, printed once:
/// it is part of the message, not a `source` an error chain would print again.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The data directory could not be created.
    #[error(
        "cannot create data directory {path}: {detail}; check the `data_dir` setting and that its parent is writable by the user ghatta runs as"
    )]
    DataDir {
        /// The directory.
        path: String,
        /// Why (the OS error).
        detail: String,
    },
    /// Another process holds the database's lock.
    #[error(
        "cannot open database {path}: another process has it open; if another ghatta is running on this data directory, stop it first"
    )]
    Locked {
        /// The file.
        path: String,
    },
    /// The file or its directory cannot be written (permissions, a read-only mount).
    #[error(
        "cannot open database {path} for writing: {detail}; the data directory must be writable by the user ghatta runs as (e.g. `chown -R ghatta: {dir}`) on a filesystem mounted read-write"
    )]
    NotWritable {
        /// The file.
        path: String,
        /// Its directory.
        dir: String,
        /// Why (the OS error).
        detail: String,
    },
    /// The card is full: redb could not write what opening needs (its recovery after an
    /// unclean stop, the tables).
    #[error(
        "cannot open database {path}: no space left on the card ({detail}); free space on the filesystem holding data_dir (`df`; old logs: `journalctl --vacuum-size=50M`): the node stopped rather than lose a write, and once there is room its restart resumes from what was fsynced"
    )]
    NoSpace {
        /// The file.
        path: String,
        /// The OS or redb error.
        detail: String,
    },
    /// A page fails redb's checksum and no earlier commit verifies either.
    #[error(
        "cannot open database {path}: it is damaged ({detail}); the card returned a page that fails its checksum, so the node will not start on it. Restore data_dir from a backup, or rebuild this node from its peers: `ghatta member remove ID` on another node, replace the card (or remove data_dir), start the node, then `ghatta member add` and `ghatta member promote` it"
    )]
    Corrupt {
        /// The file.
        path: String,
        /// redb's error.
        detail: String,
    },
    /// The Raft log's newest commit fails its checksum (`open_log_backend`): redb would fall
    /// back to the commit before it, which forgets an append this node acknowledged or a vote
    /// it cast.
    #[error(
        "cannot open database {path}: its newest commit fails its checksum (a damaged page on the card, or a commit torn by a power cut in the middle of its fsync), and going back to the commit before it would forget an append this node acknowledged or a vote it cast, which the other nodes count on; the node will not start on it. Rebuild this node from its peers: `ghatta member remove ID` on another node, replace the card (or remove data_dir), start the node, then `ghatta member add` and `ghatta member promote` it"
    )]
    NewestCommitDamaged {
        /// The file.
        path: String,
    },
    /// redb refused the file for another reason.
    #[error("cannot open database {path}: {detail}; check the file and the SD card")]
    Database {
        /// The file.
        path: String,
        /// Why.
        detail: String,
    },
    /// Creating the tables failed.
    #[error("cannot initialise tables in {path}: {detail}")]
    Tables {
        /// The file.
        path: String,
        /// Why.
        detail: String,
    },
}

/// Whether an OS error means "this place cannot be written" rather than a transient fault.
pub fn is_not_writable(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::PermissionDenied | std::io::ErrorKind::ReadOnlyFilesystem
    )
}

/// Classify a redb open error on the file `path`: lock contention (another process),
/// a place that cannot be written, or anything else.
pub fn open_error(path: &Path, e: redb::DatabaseError) -> OpenError {
    let name = path.display().to_string();
    match e {
        redb::DatabaseError::DatabaseAlreadyOpen => OpenError::Locked { path: name },
        redb::DatabaseError::Storage(redb::StorageError::Io(io)) if is_not_writable(&io) => {
            OpenError::NotWritable {
                path: name,
                dir: path
                    .parent()
                    .map(|d| d.display().to_string())
                    .unwrap_or_default(),
                detail: io.to_string(),
            }
        }
        redb::DatabaseError::Storage(e) => storage_open_error(name, e),
        other => OpenError::Database {
            path: name,
            detail: other.to_string(),
        },
    }
}

/// A storage failure while opening `path`: a full card, a damaged file, or anything else.
fn storage_open_error(path: String, e: redb::StorageError) -> OpenError {
    match e {
        redb::StorageError::Io(io) if io.kind() == std::io::ErrorKind::StorageFull => {
            OpenError::NoSpace {
                path,
                detail: io.to_string(),
            }
        }
        redb::StorageError::Corrupted(detail) => OpenError::Corrupt { path, detail },
        other => OpenError::Database {
            path,
            detail: other.to_string(),
        },
    }
}

/// Open (or create) the node's databases in `data_dir`, each with the default cache.
pub fn open_dir(data_dir: &Path) -> Result<Stores, OpenError> {
    open_dir_cached(data_dir, REDB_CACHE_BYTES)
}

/// [`open_dir`] with `cache_bytes` of redb cache for each database (`[storage] cache_kib`).
pub fn open_dir_cached(data_dir: &Path, cache_bytes: usize) -> Result<Stores, OpenError> {
    std::fs::create_dir_all(data_dir).map_err(|e| OpenError::DataDir {
        path: data_dir.display().to_string(),
        detail: e.to_string(),
    })?;
    let path = data_dir.join(LOG_FILE_NAME);
    let rolled_back = Arc::new(AtomicBool::new(false));
    let log = log_builder(&rolled_back, cache_bytes)
        .create(&path)
        .map_err(|e| log_open_error(&path, e, &rolled_back))?;
    init_tables(&log, &path.display().to_string())?;
    let path = data_dir.join(STATE_FILE_NAME);
    let state = redb::Builder::new()
        .set_cache_size(cache_bytes)
        .create(&path)
        .map_err(|e| open_error(&path, e))?;
    init_tables(&state, &path.display().to_string())?;
    Ok(Stores {
        log: Arc::new(log),
        state: Arc::new(state),
        log_sync: None,
    })
}

/// How the Raft log database is opened: every open verifies the newest commit and rebuilds
/// redb's allocator state from the file (`set_check_integrity_on_open`; without it, redb
/// verifies nothing after a clean stop), and an open that finds the newest commit failing its
/// checksum is aborted rather than rolled back to the commit before it (the repair callback,
/// which sets `rolled_back`).
///
/// *Why refuse rather than roll back.* redb's one-phase commit cannot tell a newest commit
/// damaged on the card from one torn by a power cut in the middle of its fsync. A torn one was
/// never acknowledged, and rolling it back would be right; a damaged one was fsynced, and for
/// the Raft log that is an append this node acknowledged (the leader counted it towards a
/// quorum) or a vote it cast, which Raft's safety assumes it never forgets: a node that forgot
/// either can help elect a leader without a committed entry, or vote twice in a term. The
/// whole grid's records are worth more than one node's availability, so the node refuses to
/// start and the operator rebuilds it from its peers (`OpenError::NewestCommitDamaged`); a
/// torn commit costs the same rebuild. Two-phase commit would tell the two apart (redb then
/// refuses a damaged newest commit by itself, "Primary is corrupted despite 2-phase commit")
/// at a second fsync per append; that is the log store's write path, not decided here.
/// `state.redb` is opened as before: its commits are not fsynced except the snapshot's, and a
/// state machine behind its log re-applies it.
///
/// *Cost.* A full read of the file at every start (BENCHMARKS.md, "The Raft log's newest
/// commit verified at every start").
fn log_builder(rolled_back: &Arc<AtomicBool>, cache_bytes: usize) -> redb::Builder {
    let mut b = redb::Builder::new();
    b.set_cache_size(cache_bytes);
    b.set_check_integrity_on_open(true);
    let flag = rolled_back.clone();
    b.set_repair_callback(move |session| {
        // redb's repair calls back at 0.0 (a repair starts), at 0.3 only when the newest
        // commit failed verification and it is about to fall back to the one before, then at
        // 0.6 and up while it rebuilds its allocator state. The test
        // `a_damaged_newest_commit_of_the_raft_log_is_refused_never_rolled_back` pins this.
        let p = session.progress();
        if p > 0.0 && p < 0.6 {
            flag.store(true, Ordering::Relaxed);
            session.abort();
        }
    });
    b
}

/// A Raft log open error: [`OpenError::NewestCommitDamaged`] when [`log_builder`]'s repair
/// callback refused a roll-back, otherwise as [`open_error`].
fn log_open_error(path: &Path, e: redb::DatabaseError, rolled_back: &AtomicBool) -> OpenError {
    match e {
        redb::DatabaseError::RepairAborted if rolled_back.load(Ordering::Relaxed) => {
            OpenError::NewestCommitDamaged {
                path: path.display().to_string(),
            }
        }
        e => open_error(path, e),
    }
}

/// Open (or create) the Raft log database on an arbitrary backend (the simulator's disks),
/// as [`open_dir`] opens `raft-log.redb`: its newest commit verified, never rolled back.
pub fn open_log_backend(
    backend: impl redb::StorageBackend,
    name: &str,
) -> Result<Arc<Database>, OpenError> {
    let rolled_back = Arc::new(AtomicBool::new(false));
    let db = log_builder(&rolled_back, REDB_CACHE_BYTES)
        .create_with_backend(backend)
        .map_err(|e| log_open_error(Path::new(name), e, &rolled_back))?;
    init_tables(&db, name)?;
    Ok(Arc::new(db))
}

/// Open (or create) a database on an arbitrary backend (the simulator's disks).
pub fn open_backend(
    backend: impl redb::StorageBackend,
    name: &str,
) -> Result<Arc<Database>, OpenError> {
    let db = redb::Builder::new()
        .set_cache_size(REDB_CACHE_BYTES)
        .create_with_backend(backend)
        .map_err(|e| open_error(Path::new(name), e))?;
    init_tables(&db, name)?;
    Ok(Arc::new(db))
}

/// Run blocking storage or CPU work from async code: on a multi-threaded runtime the worker
/// hands its other tasks to its siblings first; on the simulator's single-threaded runtime it
/// runs inline (deterministically).
pub fn blocking<R>(f: impl FnOnce() -> R) -> R {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
    }
}

/// Create every table so readers never meet a missing one.
fn init_tables(db: &Database, path: &str) -> Result<(), OpenError> {
    let err = |e: &dyn std::fmt::Display| OpenError::Tables {
        path: path.into(),
        detail: e.to_string(),
    };
    // A full card or a damaged file is said as such (what to do differs), anything else as a
    // failure to create the tables.
    let err = |e: redb::Error| match e {
        redb::Error::Io(io) if io.kind() == std::io::ErrorKind::StorageFull => OpenError::NoSpace {
            path: path.into(),
            detail: io.to_string(),
        },
        redb::Error::Corrupted(detail) => OpenError::Corrupt {
            path: path.into(),
            detail,
        },
        other => err(&other),
    };
    let txn = db.begin_write().map_err(|e| err(e.into()))?;
    {
        txn.open_table(RAFT_LOG).map_err(|e| err(e.into()))?;
        txn.open_table(RAFT_META).map_err(|e| err(e.into()))?;
        txn.open_table(SM_META).map_err(|e| err(e.into()))?;
        txn.open_table(SM_PINS).map_err(|e| err(e.into()))?;
        txn.open_table(SM_ENERGY_CUSTOMERS)
            .map_err(|e| err(e.into()))?;
        txn.open_table(ACTOR_STATE).map_err(|e| err(e.into()))?;
        txn.open_table(DEDUPE).map_err(|e| err(e.into()))?;
        txn.open_table(TIMERS).map_err(|e| err(e.into()))?;
        txn.open_table(OUTBOX).map_err(|e| err(e.into()))?;
        txn.open_table(NODE_LOCAL).map_err(|e| err(e.into()))?;
        txn.open_table(snapshot_file::SNAPSHOT_CHUNKS)
            .map_err(|e| err(e.into()))?;
    }
    txn.commit().map_err(|e| err(e.into()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A read-only data directory was reported with "if another ghatta is running, stop it"
    /// and the OS error printed twice (issue 26): the three causes are told apart, and the
    /// OS error appears once in the whole chain.
    #[test]
    fn open_errors_tell_lock_contention_from_a_place_that_cannot_be_written() {
        let path = Path::new("/var/lib/ghatta/raft-log.redb");
        for kind in [
            std::io::ErrorKind::PermissionDenied,
            std::io::ErrorKind::ReadOnlyFilesystem,
        ] {
            let io = std::io::Error::new(kind, "os says no");
            let e = open_error(
                path,
                redb::DatabaseError::Storage(redb::StorageError::Io(io)),
            );
            assert!(matches!(e, OpenError::NotWritable { .. }), "{e}");
            let chain = format!("{:#}", anyhow::Error::from(e));
            assert_eq!(chain.matches("os says no").count(), 1, "{chain}");
            assert!(!chain.contains("stop it"), "{chain}");
            assert!(
                chain.contains("chown -R ghatta: /var/lib/ghatta"),
                "{chain}"
            );
        }
        let e = open_error(path, redb::DatabaseError::DatabaseAlreadyOpen);
        assert!(e.to_string().contains("stop it first"), "{e}");
    }

    /// A full card and a damaged file (issue 27's `disk_full`, `disk_corrupt`) each name the
    /// file and say what to do about that cause, not "check the file and the SD card".
    #[test]
    fn open_errors_tell_a_full_card_from_a_damaged_file() {
        let path = Path::new("/var/lib/ghatta/raft-log.redb");
        let full = std::io::Error::new(std::io::ErrorKind::StorageFull, "no space left");
        let e = open_error(
            path,
            redb::DatabaseError::Storage(redb::StorageError::Io(full)),
        );
        assert!(matches!(e, OpenError::NoSpace { .. }), "{e}");
        let text = e.to_string();
        assert!(
            text.contains("raft-log.redb") && text.contains("free space"),
            "{text}"
        );
        let e = open_error(
            path,
            redb::DatabaseError::Storage(redb::StorageError::Corrupted(
                "All roots are corrupted".into(),
            )),
        );
        assert!(matches!(e, OpenError::Corrupt { .. }), "{e}");
        let text = e.to_string();
        assert!(
            text.contains("raft-log.redb")
                && text.contains("All roots are corrupted")
                && text.contains("ghatta member remove"),
            "{text}"
        );
    }

    #[test]
    fn a_data_directory_open_twice_is_reported_as_another_process() {
        let dir = tempfile::tempdir().expect("tempdir");
        let _first = open_dir(dir.path()).expect("first open");
        let e = open_dir(dir.path()).expect_err("second open must fail");
        assert!(matches!(e, OpenError::Locked { .. }), "{e}");
        assert!(
            e.to_string().contains("if another ghatta is running"),
            "{e}"
        );
    }
}
