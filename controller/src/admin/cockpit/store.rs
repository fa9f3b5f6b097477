//! The cockpit's history on disk: the grid's one-minute aggregates for the last week in
//! `history.redb` beside the node's databases, so the charts survive a restart and reach
//! back past the day kept in memory (`history.rs`).
//!
//! Local to the board and never replicated: it is what this node saw of the grid, not a
//! record the grid agrees on (that is the outbox's energy hours, which the central keeps).
//! Losing it loses charts, nothing else, so a file that cannot be opened is reported and the
//! cockpit runs from memory; and commits are fsynced only every [`SYNC_EVERY_MINUTES`], which
//! spares the board's SD card a write a minute at the cost of that many minutes after a
//! power cut.

use std::path::{Path, PathBuf};

use redb::{Database, Durability, ReadableDatabase, ReadableTableMetadata, TableDefinition};

use super::history::{Minute, Power, Span};

/// The file, in the node's data directory.
pub const FILE_NAME: &str = "history.redb";
/// How far back the store keeps minutes: a week, to see a weekday's and a market day's load.
pub const KEPT_MS: u64 = 7 * 24 * 3_600_000;
/// Minutes kept (one a minute over [`KEPT_MS`]).
pub const MINUTES_STORED_MAX: u64 = KEPT_MS / 60_000;
/// Minutes between fsyncs: at most this much history is lost to a power cut.
pub const SYNC_EVERY_MINUTES: u32 = 10;
/// redb's page cache for this file: the charts read at most a week of 49-byte rows (~0.5 MiB)
/// and write one a minute; the node's own databases get the RAM.
pub const CACHE_BYTES: usize = 512 * 1024;

/// Minute start, Unix ms -> the aggregates ([`encode`]).
const MINUTES: TableDefinition<u64, &[u8]> = TableDefinition::new("history_minutes");

/// Leads each row; bump it (and read the old one) on any change. Version 1 rows (frequency
/// and voltage only) still read, with no power.
const FORMAT_V1: u8 = 1;
const ROW_BYTES_V1: usize = 1 + 6 * 8;
/// Version 2 adds the minute's mean generation, load and ballast.
const FORMAT_V2: u8 = 2;
const ROW_BYTES: usize = 1 + 9 * 8;

fn encode(m: &Minute) -> [u8; ROW_BYTES] {
    let mut out = [0u8; ROW_BYTES];
    out[0] = FORMAT_V2;
    let f = m.frequency_mhz;
    let v = m.voltage_dv;
    let p = m.power_w;
    for (i, x) in [
        f.min,
        f.mean,
        f.max,
        v.min,
        v.mean,
        v.max,
        p.generation,
        p.load,
        p.ballast,
    ]
    .into_iter()
    .enumerate()
    {
        out[1 + i * 8..9 + i * 8].copy_from_slice(&x.to_le_bytes());
    }
    out
}

fn decode(t_ms: u64, b: &[u8]) -> Option<Minute> {
    match (b.first(), b.len()) {
        (Some(&FORMAT_V1), ROW_BYTES_V1) | (Some(&FORMAT_V2), ROW_BYTES) => {}
        _ => return None,
    }
    let x = |i: usize| {
        b.get(1 + i * 8..9 + i * 8)
            .and_then(|w| w.try_into().ok())
            .map_or(0, u64::from_le_bytes)
    };
    Some(Minute {
        t_ms,
        frequency_mhz: Span {
            min: x(0),
            mean: x(1),
            max: x(2),
        },
        voltage_dv: Span {
            min: x(3),
            mean: x(4),
            max: x(5),
        },
        power_w: Power {
            generation: x(6),
            load: x(7),
            ballast: x(8),
        },
    })
}

/// What went wrong with the history file: what, to which file, and what to do.
#[derive(Debug, thiserror::Error)]
#[error(
    "cockpit history {path}: cannot {op}: {detail}; the charts run from memory until the node restarts (if it persists, stop the node and delete that file: only the charts' history is lost)"
)]
pub struct StoreError {
    path: String,
    op: &'static str,
    detail: String,
}

/// The store.
pub struct HistoryStore {
    db: Database,
    path: PathBuf,
    /// Minutes appended since the last fsynced commit.
    unsynced: std::sync::atomic::AtomicU32,
}

impl HistoryStore {
    /// Opens (or creates) `data_dir/history.redb`.
    pub fn open(data_dir: &Path) -> Result<HistoryStore, StoreError> {
        let path = data_dir.join(FILE_NAME);
        let err = |op, e: &dyn std::fmt::Display| StoreError {
            path: path.display().to_string(),
            op,
            detail: e.to_string(),
        };
        let db = redb::Builder::new()
            .set_cache_size(CACHE_BYTES)
            .create(&path)
            .map_err(|e| err("open", &e))?;
        let txn = db.begin_write().map_err(|e| err("write", &e))?;
        txn.open_table(MINUTES)
            .map_err(|e| err("create its table", &e))?;
        txn.commit().map_err(|e| err("write", &e))?;
        Ok(HistoryStore {
            db,
            path,
            unsynced: std::sync::atomic::AtomicU32::new(0),
        })
    }

    fn err(&self, op: &'static str, e: impl std::fmt::Display) -> StoreError {
        StoreError {
            path: self.path.display().to_string(),
            op,
            detail: e.to_string(),
        }
    }

    /// Stores a closed minute and forgets those older than [`KEPT_MS`] before it; fsynced
    /// every [`SYNC_EVERY_MINUTES`]th call. Blocking: call it off the async workers.
    pub fn append(&self, m: &Minute) -> Result<(), StoreError> {
        use std::sync::atomic::Ordering;
        let n = self.unsynced.fetch_add(1, Ordering::Relaxed) + 1;
        let durable = n >= SYNC_EVERY_MINUTES;
        let mut txn = self.db.begin_write().map_err(|e| self.err("write", e))?;
        txn.set_durability(if durable {
            Durability::Immediate
        } else {
            Durability::None
        })
        .map_err(|e| self.err("write", e))?;
        {
            let mut t = txn.open_table(MINUTES).map_err(|e| self.err("write", e))?;
            t.insert(m.t_ms, &encode(m)[..])
                .map_err(|e| self.err("write", e))?;
            let horizon = m.t_ms.saturating_sub(KEPT_MS);
            t.retain_in(..horizon, |_, _| false)
                .map_err(|e| self.err("prune", e))?;
            // Minutes after this one were stamped by a clock since set back: the newest minute
            // is now, so they go rather than stay in the week for as long as the error was.
            t.retain_in(m.t_ms + 1.., |_, _| false)
                .map_err(|e| self.err("prune", e))?;
        }
        txn.commit().map_err(|e| self.err("commit", e))?;
        if durable {
            self.unsynced.store(0, Ordering::Relaxed);
        }
        Ok(())
    }

    /// The stored minutes from `from_ms` on, oldest first. Blocking.
    pub fn since(&self, from_ms: u64) -> Result<Vec<Minute>, StoreError> {
        let txn = self.db.begin_read().map_err(|e| self.err("read", e))?;
        let t = txn.open_table(MINUTES).map_err(|e| self.err("read", e))?;
        let mut out = Vec::new();
        for row in t.range(from_ms..).map_err(|e| self.err("read", e))? {
            let (k, v) = row.map_err(|e| self.err("read", e))?;
            // A row this binary cannot read (a newer format) is a gap in a chart, not an error.
            if let Some(m) = decode(k.value(), v.value()) {
                out.push(m);
            }
        }
        Ok(out)
    }

    /// Rows stored.
    pub fn len(&self) -> Result<u64, StoreError> {
        let txn = self.db.begin_read().map_err(|e| self.err("read", e))?;
        let t = txn.open_table(MINUTES).map_err(|e| self.err("read", e))?;
        t.len().map_err(|e| self.err("read", e))
    }

    /// Whether nothing is stored.
    pub fn is_empty(&self) -> Result<bool, StoreError> {
        Ok(self.len()? == 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn minute(t_ms: u64, f: u64) -> Minute {
        Minute {
            t_ms,
            frequency_mhz: Span {
                min: f - 100,
                mean: f,
                max: f + 100,
            },
            voltage_dv: Span {
                min: 2_200,
                mean: 2_300,
                max: 2_400,
            },
            power_w: Power {
                generation: 24_000,
                load: 20_000,
                ballast: 4_000,
            },
        }
    }

    #[test]
    fn a_week_of_minutes_is_kept_bounded_and_survives_a_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let t0 = 1_800_000_000_000u64 / 60_000 * 60_000;
        let days = 8;
        {
            let s = HistoryStore::open(dir.path()).expect("open");
            for i in 0..days * 1_440 {
                s.append(&minute(t0 + i * 60_000, 50_000 + i % 7))
                    .expect("append");
            }
            assert_eq!(
                s.len().unwrap(),
                MINUTES_STORED_MAX + 1,
                "a week and its edge"
            );
        }
        let bytes = std::fs::metadata(dir.path().join(FILE_NAME)).unwrap().len();
        println!("history.redb after {days} days of minutes: {bytes} bytes");
        assert!(bytes < 4 * 1024 * 1024, "{bytes} bytes");
        let s = HistoryStore::open(dir.path()).expect("reopen");
        let last = t0 + (days * 1_440 - 1) * 60_000;
        let day = s.since(last - 24 * 3_600_000 + 60_000).expect("read");
        assert_eq!(day.len(), 1_440);
        assert_eq!(
            day.last().copied(),
            Some(minute(last, 50_000 + (days * 1_440 - 1) % 7))
        );
    }

    #[test]
    fn minutes_a_fast_clock_stamped_go_once_it_is_set_right() {
        let dir = tempfile::tempdir().expect("tempdir");
        let t0 = 1_800_000_000_000u64 / 60_000 * 60_000;
        let s = HistoryStore::open(dir.path()).expect("open");
        for i in 0..10 {
            s.append(&minute(t0 + i * 60_000, 50_000)).expect("append");
        }
        // An hour fast for two minutes, then set right.
        for i in 0..2 {
            s.append(&minute(t0 + 3_600_000 + i * 60_000, 50_000))
                .expect("append");
        }
        s.append(&minute(t0 + 10 * 60_000, 50_000)).expect("append");
        let kept = s.since(0).expect("read");
        assert_eq!(kept.len(), 11, "the fast hour's minutes went: {kept:?}");
        assert_eq!(kept.last().map(|m| m.t_ms), Some(t0 + 10 * 60_000));
    }

    #[test]
    fn an_unreadable_file_is_an_error_that_names_it_and_says_what_to_do() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join(FILE_NAME), b"not a redb file at all").unwrap();
        let e = HistoryStore::open(dir.path())
            .err()
            .expect("refused")
            .to_string();
        assert!(
            e.contains(FILE_NAME) && e.contains("delete that file"),
            "{e}"
        );
    }

    #[test]
    fn a_row_of_another_format_reads_as_a_gap() {
        assert!(decode(0, &[3; ROW_BYTES]).is_none());
        assert!(decode(0, &[FORMAT_V1; 3]).is_none());
        assert!(decode(0, &[FORMAT_V2; ROW_BYTES_V1]).is_none());
        let m = minute(60_000, 50_000);
        assert_eq!(decode(60_000, &encode(&m)), Some(m));
        // A row from before power was kept reads with none.
        let v1 = &encode(&m)[..ROW_BYTES_V1];
        let mut v1 = v1.to_vec();
        v1[0] = FORMAT_V1;
        assert_eq!(
            decode(60_000, &v1),
            Some(Minute {
                power_w: Power::default(),
                ..m
            })
        );
    }
}
