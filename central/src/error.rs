//! What goes wrong in the central, said for the person who runs it: what failed, on what,
//! and what to do.

use std::path::PathBuf;

/// Advice for a failing database: the store is one file on one disk.
const ADVICE_DISK: &str = "check the disk that holds --data (free space, errors in the kernel log)";

/// Advice for a failing PostgreSQL: it is a server the office runs.
const ADVICE_PG: &str = "check that the server in --database is up and reachable (pg_isready), and its log; grids retry their batches, so nothing acked is lost";

/// A failure of the central's store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The data directory could not be created.
    #[error(
        "cannot create the central's data directory {dir}: {source}; check --data and that this user may write there"
    )]
    CreateDir {
        /// The directory.
        dir: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The database file could not be opened.
    #[error("cannot open {path}: {source}; is another ghatta-central running on it?")]
    Open {
        /// The file.
        path: PathBuf,
        /// Why.
        source: redb::DatabaseError,
    },
    /// A read or write of the database failed.
    #[error("the central's database failed: {0}; {ADVICE_DISK}")]
    Db(#[from] redb::Error),
    /// A stored value does not decode.
    #[error(
        "a stored {what} does not decode ({detail}): the database is damaged or was written by a newer ghatta-central; restore it from a backup"
    )]
    Corrupt {
        /// Which kind of value.
        what: &'static str,
        /// The decoder's message.
        detail: String,
    },
    /// A value could not be encoded (a bug: every value the central stores is bounded).
    #[error("cannot encode a {what} for the store ({detail}); please report this")]
    Encode {
        /// Which kind of value.
        what: &'static str,
        /// The encoder's message.
        detail: String,
    },
    /// A grid's batch holds a record outside its range or out of order; nothing of it is
    /// stored, and the connection is closed (the grid's uploader retries from its cursor).
    #[error(
        "grid {grid} sent record {seq} outside or out of order in its batch [{first_seq}, {end_seq}); nothing of it was stored; if it repeats, the grid runs a faulty ghatta"
    )]
    BatchOrder {
        /// The grid.
        grid: u64,
        /// The offending record's sequence.
        seq: u64,
        /// The batch's first sequence.
        first_seq: u64,
        /// One past its last.
        end_seq: u64,
    },
    /// A synchronous read of the embedded store was asked of a central on PostgreSQL.
    #[error(
        "this read is of the embedded redb store, and this central stores in PostgreSQL; read through the HTTP API (or ghatta_central::Store) instead"
    )]
    NotEmbedded,
    /// A grid sent a value PostgreSQL's BIGINT cannot hold (above 2^63 - 1).
    #[error(
        "a {what} of {value} does not fit PostgreSQL's BIGINT (at most 2^63 - 1); nothing of its batch was stored; the grid runs a faulty ghatta, or use the embedded store"
    )]
    OutOfRange {
        /// Which value.
        what: &'static str,
        /// The value.
        value: u64,
    },
    /// `--database` is not a PostgreSQL URL.
    #[error(
        "--database is not a PostgreSQL URL ({detail}); give postgres://USER@HOST:PORT/DATABASE"
    )]
    DatabaseUrl {
        /// The parser's message.
        detail: String,
    },
    /// No connection to PostgreSQL could be had.
    #[error("cannot reach the central's PostgreSQL ({0}); {ADVICE_PG}")]
    Pool(String),
    /// A statement or transaction in PostgreSQL failed (the transaction was rolled back).
    #[error(
        "the central's PostgreSQL failed: {0}; nothing of the batch or query was kept; {ADVICE_PG}"
    )]
    Postgres(#[from] tokio_postgres::Error),
    /// The database was migrated by a newer ghatta-central.
    #[error(
        "the database is at schema version {newest}, this ghatta-central knows up to {known}; run the newer ghatta-central, or restore the database from a backup taken before the upgrade"
    )]
    SchemaTooNew {
        /// The database's newest version.
        newest: i32,
        /// This build's newest version.
        known: i32,
    },
    /// A grid's batch spans more months of log time than a batch can (its clock is wrong).
    #[error(
        "grid {grid} sent a batch spanning {months} months of log time (at most {max}); nothing of it was stored; check the clocks of that grid's nodes"
    )]
    BatchSpan {
        /// The grid.
        grid: u64,
        /// (table, month) pairs the batch needs.
        months: usize,
        /// The limit.
        max: usize,
    },
    /// The blocking task that ran a transaction died.
    #[error("the central's store task failed: {0}")]
    Task(String),
}

macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self {
                StoreError::Db(e.into())
            }
        }
    )*};
}
from_redb!(
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    redb::SetDurabilityError
);

impl StoreError {
    /// A decoding failure of a stored `what`.
    pub fn corrupt(what: &'static str) -> impl Fn(ghatta_proto::codec::DecodeError) -> StoreError {
        move |e| StoreError::Corrupt {
            what,
            detail: e.to_string(),
        }
    }

    /// An encoding failure of a `what`.
    pub fn encode(what: &'static str) -> impl Fn(ghatta_proto::codec::EncodeError) -> StoreError {
        move |e| StoreError::Encode {
            what,
            detail: e.to_string(),
        }
    }
}

/// Why a grid's connection ended.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The link, the channel or a frame failed or was refused.
    #[error(transparent)]
    Proto(#[from] ghatta_proto::wan::ProtoError),
    /// A batch could not be stored.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Why the central did not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The store did not open.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A listener could not bind.
    #[error(
        "cannot listen for {what} on {addr}: {source}; is the port in use, or the address not this machine's?"
    )]
    Listen {
        /// Grids or HTTP queries.
        what: &'static str,
        /// The address given.
        addr: String,
        /// Why.
        source: std::io::Error,
    },
    /// The HTTP token file could not be read or made.
    #[error(
        "the HTTP token: {0}; run as the user that owns the data directory, or delete a damaged token file and start again to make a new one (clients then need the new token)"
    )]
    Token(#[from] ghatta_proto::token::TokenError),
}
