//! What goes wrong in the central, said for the person who runs it: what failed, on what,
//! and what to do.

use std::path::PathBuf;

/// Advice for a failing database: the store is one file on one disk.
const ADVICE_DISK: &str = "check the disk that holds --data (free space, errors in the kernel log)";

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
