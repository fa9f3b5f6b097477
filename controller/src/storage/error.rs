//! [`StoreError`]: a failure of one of the node's databases, one variant per kind of operation
//! (redb's own style), each saying which database, what was being done and what to do.
//!
//! openraft's storage traits speak `std::io::Error`; a `StoreError` converts into one
//! (`From<StoreError> for io::Error`) and stays inside it as the source, so what the log and
//! the operator see is this message, not a flattened string.

use std::io;

/// What to do when a database read or write fails on a board: the medium is the usual cause.
const ADVICE_MEDIUM: &str = "check the storage under data_dir (free space, `dmesg` for SD card or eMMC errors); \
     the node stops rather than guess, and a restart resumes from what was fsynced";
/// What to do when a stored value does not decode.
const ADVICE_CORRUPT: &str = "the file is damaged or was written by a newer ghatta: restore data_dir from a \
     backup, or remove it and let the node catch up from its peers (`ghatta member`)";

/// A failure of one of the node's databases (`raft-log.redb`, `state.redb`).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// A transaction could not begin.
    #[error("{db}: cannot begin a {kind} transaction: {source}; {ADVICE_MEDIUM}")]
    Begin {
        /// Which database.
        db: &'static str,
        /// "read" or "write".
        kind: &'static str,
        /// redb's error.
        #[source]
        source: redb::Error,
    },
    /// A table could not be opened.
    #[error("{db}: cannot open a table: {source}; {ADVICE_MEDIUM}")]
    Table {
        /// Which database.
        db: &'static str,
        /// redb's error.
        #[source]
        source: redb::Error,
    },
    /// A read failed.
    #[error("{db}: a read failed: {source}; {ADVICE_MEDIUM}")]
    Read {
        /// Which database.
        db: &'static str,
        /// redb's error.
        #[source]
        source: redb::Error,
    },
    /// A write (insert, remove, durability setting) failed.
    #[error("{db}: a write failed: {source}; {ADVICE_MEDIUM}")]
    Write {
        /// Which database.
        db: &'static str,
        /// redb's error.
        #[source]
        source: redb::Error,
    },
    /// A commit failed: nothing of the transaction is stored.
    #[error("{db}: a commit failed (nothing of it was stored): {source}; {ADVICE_MEDIUM}")]
    Commit {
        /// Which database.
        db: &'static str,
        /// redb's error.
        #[source]
        source: redb::Error,
    },
    /// A stored value does not decode.
    #[error("{db}: a stored {what} does not decode ({detail}); {ADVICE_CORRUPT}")]
    Corrupt {
        /// Which database.
        db: &'static str,
        /// What the value is.
        what: &'static str,
        /// The decoder's message.
        detail: String,
    },
    /// A value could not be encoded for storing (a bug: every stored value is bounded).
    #[error("{db}: cannot encode a {what} ({detail}); please report this with the node's log")]
    Encode {
        /// Which database.
        db: &'static str,
        /// What the value is.
        what: &'static str,
        /// The encoder's message.
        detail: String,
    },
}

/// The database a piece of code works on, named as the operator sees its file.
#[derive(Debug, Clone, Copy)]
pub struct Db(pub &'static str);

/// `raft-log.redb`: the Raft log and its metadata.
pub const LOG_DB: Db = Db("raft-log.redb");
/// `state.redb`: the state machine, the outbox, the node's local counters.
pub const STATE_DB: Db = Db("state.redb");

impl Db {
    /// A transaction of `kind` ("read", "write") could not begin.
    pub fn begin<E: Into<redb::Error>>(self, kind: &'static str) -> impl FnOnce(E) -> StoreError {
        move |e| StoreError::Begin {
            db: self.0,
            kind,
            source: e.into(),
        }
    }

    /// A table could not be opened.
    pub fn table<E: Into<redb::Error>>(self) -> impl FnOnce(E) -> StoreError {
        move |e| StoreError::Table {
            db: self.0,
            source: e.into(),
        }
    }

    /// A read failed.
    pub fn read<E: Into<redb::Error>>(self) -> impl FnOnce(E) -> StoreError {
        move |e| StoreError::Read {
            db: self.0,
            source: e.into(),
        }
    }

    /// A write failed.
    pub fn write<E: Into<redb::Error>>(self) -> impl FnOnce(E) -> StoreError {
        move |e| StoreError::Write {
            db: self.0,
            source: e.into(),
        }
    }

    /// A commit failed.
    pub fn commit<E: Into<redb::Error>>(self) -> impl FnOnce(E) -> StoreError {
        move |e| StoreError::Commit {
            db: self.0,
            source: e.into(),
        }
    }

    /// A stored `what` did not decode.
    pub fn corrupt<E: std::fmt::Display>(self, what: &'static str) -> impl FnOnce(E) -> StoreError {
        move |e| StoreError::Corrupt {
            db: self.0,
            what,
            detail: e.to_string(),
        }
    }

    /// A `what` could not be encoded.
    pub fn encode<E: std::fmt::Display>(self, what: &'static str) -> impl FnOnce(E) -> StoreError {
        move |e| StoreError::Encode {
            db: self.0,
            what,
            detail: e.to_string(),
        }
    }
}

impl From<StoreError> for io::Error {
    fn from(e: StoreError) -> io::Error {
        let kind = match e {
            StoreError::Corrupt { .. } => io::ErrorKind::InvalidData,
            _ => io::ErrorKind::Other,
        };
        io::Error::new(kind, e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_names_the_file_the_operation_and_what_to_do_and_survives_io_error() {
        let e = STATE_DB.commit()(redb::Error::Corrupted("page 7".into()));
        let text = e.to_string();
        assert!(text.contains("state.redb"), "{text}");
        assert!(text.contains("commit failed"), "{text}");
        assert!(text.contains("dmesg"), "{text}");
        let io: io::Error = e.into();
        let inner = io.get_ref().and_then(|s| s.downcast_ref::<StoreError>());
        assert!(matches!(inner, Some(StoreError::Commit { .. })), "{io:?}");

        let c: io::Error = LOG_DB.corrupt("log entry")("unexpected end").into();
        assert_eq!(c.kind(), io::ErrorKind::InvalidData);
        assert!(
            c.to_string()
                .contains("raft-log.redb: a stored log entry does not decode")
        );
    }
}
