//! The boot epoch: a durable counter, incremented and fsynced at every start before the first
//! frame is sealed, so the nonce (epoch, counter) never repeats under a key across restarts.
//!
//! It is kept twice: in the data directory and beside the key file (`node.key.epoch`). The
//! obvious recovery from a corrupt database is to wipe the data directory; the key stays, so
//! the epoch must stay with it, or the node would seal its first frames under nonces it used
//! in its first boots. The larger of the two copies counts; each start and each raise writes
//! both. A key directory the service cannot write (an older systemd unit without
//! `ReadWritePaths=/etc/ghatta/keys`) leaves only the data directory's copy, with a warning.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};

/// The epoch's file in the data directory.
pub const EPOCH_FILE: &str = "seal-epoch";
/// What the copy beside the key file adds to the key file's name (`node.key.epoch`).
pub const BESIDE_KEY_SUFFIX: &str = "epoch";
/// Largest epoch file read: a decimal u32 and a newline.
const MAX_EPOCH_FILE_BYTES: u64 = 64;

/// This node's boot epoch. Epochs start at 1 (0 means "not known" on the wire) and only grow.
#[derive(Debug)]
pub struct BootEpoch {
    /// Where the epoch must be stored (the data directory's file).
    path: Option<PathBuf>,
    /// The copy beside the key, stored when it can be.
    beside_key: Option<PathBuf>,
    current: AtomicU32,
    // Serialises raises so two raises never write the file out of order.
    write: Mutex<()>,
}

/// A boot epoch that cannot be read or stored: the file, what failed, and what to do.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {what}: {detail}")]
pub struct EpochError {
    /// The file (or directory).
    pub path: String,
    /// What failed.
    pub what: &'static str,
    /// Why, and what to do.
    pub detail: String,
}

fn epoch_err(path: &Path, what: &'static str, e: impl std::fmt::Display) -> EpochError {
    EpochError {
        path: path.display().to_string(),
        what,
        detail: e.to_string(),
    }
}

impl BootEpoch {
    /// Read the epoch in `data_dir`, add one, store it with an fsync (file and directory) and
    /// return it. A missing file starts at 1. A damaged file is an error naming the file.
    pub fn advance(data_dir: &Path) -> Result<BootEpoch, EpochError> {
        Self::advance_with(data_dir, None)
    }

    /// [`BootEpoch::advance`] with a second copy beside `key_file` (module docs): the larger
    /// of the two, plus one, is stored in both.
    pub fn advance_with(data_dir: &Path, key_file: Option<&Path>) -> Result<BootEpoch, EpochError> {
        std::fs::create_dir_all(data_dir)
            .map_err(|e| epoch_err(data_dir, "cannot create the data directory", e))?;
        let path = data_dir.join(EPOCH_FILE);
        let beside_key = key_file.map(|k| {
            let mut name = k.as_os_str().to_owned();
            name.push(".");
            name.push(BESIDE_KEY_SUFFIX);
            PathBuf::from(name)
        });
        let mut stored = read(&path)?;
        if let Some(b) = &beside_key {
            stored = stored.max(read(b)?);
        }
        let next = stored.checked_add(1).ok_or_else(|| {
            epoch_err(
                &path,
                "boot epoch exhausted",
                "4 billion restarts; generate a new key for this node (`ghatta keygen`) and reset the file to 0",
            )
        })?;
        store(&path, next)?;
        let epoch = BootEpoch {
            path: Some(path),
            beside_key,
            current: AtomicU32::new(next),
            write: Mutex::new(()),
        };
        epoch.store_beside_key(next);
        Ok(epoch)
    }

    /// Stores the copy beside the key; a failure only warns (module docs).
    fn store_beside_key(&self, epoch: u32) {
        if let Some(b) = &self.beside_key
            && let Err(e) = store(b, epoch)
        {
            tracing::warn!(
                error = %e,
                "cannot keep the boot epoch beside the key file: after a wipe of the data \
                 directory this node would reuse nonces under its key. Let the service write \
                 the key's directory (systemd: ReadWritePaths=/etc/ghatta/keys, as in \
                 deploy/ghatta.service) or give the node a new key after such a wipe"
            );
        }
    }

    /// An epoch kept only in memory: for the simulator and tests, whose nodes never outlive
    /// the process. Never use it on a board: a restart would reuse nonces.
    pub fn in_memory(epoch: u32) -> BootEpoch {
        BootEpoch {
            path: None,
            beside_key: None,
            current: AtomicU32::new(epoch.max(1)),
            write: Mutex::new(()),
        }
    }

    /// The epoch in force.
    pub fn get(&self) -> u32 {
        self.current.load(Ordering::Acquire)
    }

    /// Move the epoch to at least `at_least` (stored before it is used). Returns whether it
    /// moved. Used when an authentic peer says it saw a higher epoch of ours: the epoch file
    /// was lost or restored from an old backup.
    pub fn raise(&self, at_least: u32) -> Result<bool, EpochError> {
        let _guard = self.write.lock().map_err(|_| EpochError {
            path: self
                .path
                .as_deref()
                .map_or_else(|| "(in memory)".into(), |p| p.display().to_string()),
            what: "cannot raise the boot epoch",
            detail: "a thread panicked while raising it; restart the node".into(),
        })?;
        if at_least <= self.get() {
            return Ok(false);
        }
        if let Some(p) = &self.path {
            store(p, at_least)?;
        }
        self.store_beside_key(at_least);
        self.current.store(at_least, Ordering::Release);
        Ok(true)
    }
}

/// The epoch stored at `path`; 0 when there is no file.
fn read(path: &Path) -> Result<u32, EpochError> {
    match std::fs::metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(epoch_err(path, "cannot read the boot epoch", e)),
        Ok(m) if m.len() > MAX_EPOCH_FILE_BYTES => Err(epoch_err(
            path,
            "not a boot epoch file",
            "too large; it holds one number. Restore it or write a number larger than any epoch this node used (peers also correct it: they raise it when they have seen a higher one)",
        )),
        Ok(_) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| epoch_err(path, "cannot read the boot epoch", e))?;
            text.trim().parse::<u32>().map_err(|e| {
                epoch_err(
                    path,
                    "damaged boot epoch",
                    format!("{e}; write a number larger than any epoch this node used (e.g. its last `ghatta status` boot_epoch plus 1000)"),
                )
            })
        }
    }
}

fn store(path: &Path, epoch: u32) -> Result<(), EpochError> {
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp)
        .map_err(|e| epoch_err(&tmp, "cannot write the boot epoch", e))?;
    writeln!(f, "{epoch}")
        .and_then(|()| f.sync_all())
        .map_err(|e| epoch_err(&tmp, "cannot write the boot epoch", e))?;
    std::fs::rename(&tmp, path).map_err(|e| epoch_err(path, "cannot replace the boot epoch", e))?;
    if let Some(dir) = path.parent() {
        // The rename is durable only once the directory is.
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| epoch_err(dir, "cannot sync the data directory", e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_start_gets_a_new_epoch_and_raises_persist() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(BootEpoch::advance(dir.path()).unwrap().get(), 1);
        let e = BootEpoch::advance(dir.path()).unwrap();
        assert_eq!(e.get(), 2);
        assert!(e.raise(40).unwrap());
        assert!(!e.raise(7).unwrap());
        assert_eq!(e.get(), 40);
        assert_eq!(BootEpoch::advance(dir.path()).unwrap().get(), 41);
    }

    #[test]
    fn a_wiped_data_directory_keeps_counting_from_the_copy_beside_the_key() {
        let keys = tempfile::tempdir().unwrap();
        let key = keys.path().join("node.key");
        let data = tempfile::tempdir().unwrap();
        for _ in 0..3 {
            BootEpoch::advance_with(data.path(), Some(&key)).unwrap();
        }
        let e = BootEpoch::advance_with(data.path(), Some(&key)).unwrap();
        assert!(e.raise(90).unwrap());
        drop(e);
        std::fs::remove_dir_all(data.path()).unwrap();
        // Without the copy the node would start at 1 again and reuse its first nonces.
        let e = BootEpoch::advance_with(data.path(), Some(&key)).unwrap();
        assert_eq!(e.get(), 91);
        assert_eq!(
            std::fs::read_to_string(keys.path().join("node.key.epoch"))
                .unwrap()
                .trim(),
            "91"
        );
        // The key's copy lost instead: the data directory's counts.
        std::fs::remove_file(keys.path().join("node.key.epoch")).unwrap();
        assert_eq!(
            BootEpoch::advance_with(data.path(), Some(&key))
                .unwrap()
                .get(),
            92
        );
    }

    #[test]
    fn a_key_directory_that_cannot_be_written_leaves_the_data_directory_copy() {
        let data = tempfile::tempdir().unwrap();
        let key = Path::new("/nonexistent-ghatta-keys/node.key");
        assert_eq!(
            BootEpoch::advance_with(data.path(), Some(key))
                .unwrap()
                .get(),
            1
        );
        assert_eq!(
            BootEpoch::advance_with(data.path(), Some(key))
                .unwrap()
                .get(),
            2
        );
    }

    #[test]
    fn a_damaged_epoch_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(EPOCH_FILE), "banana").unwrap();
        let e = BootEpoch::advance(dir.path()).unwrap_err().to_string();
        assert!(
            e.contains(EPOCH_FILE) && e.contains("larger than any epoch"),
            "{e}"
        );
    }
}
