//! Opening the Raft log (`storage::open_log_backend`, `open_dir`): a newest commit that fails
//! its checksum is refused, never rolled back to the commit before it; and what verifying the
//! file at every start costs.

use ghatta::storage::{self, OpenError, RAFT_LOG};
use ghatta_sim::disk::SimDisk;
use redb::{Durability, ReadableDatabase, StorageBackend};

/// Commits in the test database: one fsynced commit each, as the log store's appends are.
const COMMITS: u64 = 40;

fn append(db: &redb::Database, index: u64, bytes: &[u8]) {
    let mut tx = db.begin_write().expect("begin");
    tx.set_durability(Durability::Immediate).expect("durable");
    {
        let mut t = tx.open_table(RAFT_LOG).expect("table");
        t.insert(index, bytes).expect("insert");
    }
    tx.commit().expect("commit");
}

/// A log of [`COMMITS`] fsynced appends, its power cut (so the next open runs redb's repair,
/// which verifies the newest commit), or stopped cleanly.
fn built(power_cut: bool) -> SimDisk {
    let disk = SimDisk::new();
    let db = storage::open_log_backend(disk.clone(), "raft-log").expect("open");
    for i in 1..=COMMITS {
        append(&db, i, &i.to_le_bytes());
    }
    if power_cut {
        disk.power_cut();
    }
    drop(db);
    disk
}

/// A bit flipped in each page of the log in turn, after a power cut and after a clean stop:
/// the open either fails, saying the newest commit is damaged or the file is, or reads every
/// append; never one commit fewer (what redb's plain open does for a damaged newest commit:
/// the same flips under `redb::Builder::new()` roll back at least one, so the refusal is ours).
#[test]
fn a_damaged_newest_commit_of_the_raft_log_is_refused_never_rolled_back() {
    for power_cut in [true, false] {
        let pages = built(power_cut).len().expect("len").div_ceil(4096);
        let (mut refused, mut read_all, mut plain_rolled_back) = (0, 0, 0);
        for page in 1..pages {
            for bit in [3u64, 4_000 * 8 + 5] {
                let pick = (page - 1) + bit * (pages - 1);
                let disk = built(power_cut);
                assert!(disk.flip_bit(pick).is_some());
                // What redb alone would do with the same flip (after a power cut: a clean
                // open verifies nothing, so only the cut case is compared). The plain open
                // repairs the disk in place, so the node's open below starts from a new copy.
                if power_cut && let Ok(db) = redb::Builder::new().create_with_backend(disk.clone())
                {
                    let tx = db.begin_read().expect("read");
                    if let Ok(t) = tx.open_table(RAFT_LOG)
                        && t.get(COMMITS).ok().flatten().is_none()
                    {
                        plain_rolled_back += 1;
                    }
                }
                let disk = built(power_cut);
                disk.flip_bit(pick);
                match storage::open_log_backend(disk.clone(), "node-1/raft-log") {
                    Err(e) => {
                        let text = e.to_string();
                        assert!(
                            matches!(
                                e,
                                OpenError::NewestCommitDamaged { .. } | OpenError::Corrupt { .. }
                            ),
                            "page {page}: {text}"
                        );
                        assert!(
                            text.contains("raft-log") && text.contains("ghatta member remove"),
                            "the error names the file and what to do: {text}"
                        );
                        refused += 1;
                    }
                    Ok(db) => {
                        let tx = db.begin_read().expect("read");
                        let t = tx.open_table(RAFT_LOG).expect("table");
                        for i in 1..=COMMITS {
                            let v = t
                                .get(i)
                                .expect("a verified file reads")
                                .map(|v| v.value().to_vec());
                            assert_eq!(
                                v,
                                Some(i.to_le_bytes().to_vec()),
                                "page {page}: append {i} after the flip (power cut {power_cut})"
                            );
                        }
                        read_all += 1;
                    }
                }
            }
        }
        eprintln!(
            "power cut {power_cut}: {pages} pages, 2 flips each: {refused} refused, {read_all} read \
             every append; redb's plain open rolled back {plain_rolled_back}"
        );
        assert!(
            refused > 0,
            "some flip must land in the newest commit's pages"
        );
        if power_cut {
            assert!(
                plain_rolled_back > 0,
                "redb's own open rolls a damaged newest commit back: the case refused here"
            );
        }
    }
}

/// What verifying the log at every start costs: a log of `LOG_OPEN_BENCH_MB` (default 8) MB
/// of 4 KiB appends on the real disk, stopped cleanly, opened plainly and as the node opens it
/// (`storage::open_dir`). Prints both times; asserts only that the verified open succeeds.
#[test]
fn log_open_cost_with_the_integrity_check() {
    let mb: u64 = std::env::var("LOG_OPEN_BENCH_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(8);
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join(storage::LOG_FILE_NAME);
    {
        let db = redb::Database::create(&path).expect("create");
        let entry = vec![0x5au8; 4096];
        let per_commit = 64u64;
        let entries = mb * 1024 * 1024 / 4096;
        let mut i = 0;
        while i < entries {
            let tx = db.begin_write().expect("begin");
            {
                let mut t = tx.open_table(RAFT_LOG).expect("table");
                for k in i..(i + per_commit).min(entries) {
                    let mut e = entry.clone();
                    e[..8].copy_from_slice(&k.to_le_bytes());
                    t.insert(k, e.as_slice()).expect("insert");
                }
            }
            tx.commit().expect("commit");
            i += per_commit;
        }
    }
    let len = std::fs::metadata(&path).expect("file").len();
    let t = std::time::Instant::now();
    drop(redb::Database::create(&path).expect("plain open"));
    let plain = t.elapsed();
    let t = std::time::Instant::now();
    let stores = storage::open_dir(dir.path()).expect("verified open");
    let verified = t.elapsed();
    drop(stores);
    eprintln!(
        "raft-log.redb of {len} bytes, stopped cleanly: plain open {:.1} ms, verified open (the \
         node's, with state.redb) {:.1} ms",
        plain.as_secs_f64() * 1e3,
        verified.as_secs_f64() * 1e3
    );
}
