//! What every ghatta program does around its command (the board's `ghatta` and the simulator's
//! `ghatta-sim`): logs filtered by `GHATTA_LOG` (structured to the journal under systemd, else
//! stderr, coloured only on a terminal), a multi-threaded runtime, openraft's randomness
//! seeded from the time and the process id, and an error printed for a person.

use std::fmt::Display;
use std::future::Future;
use std::process::ExitCode;

use crate::clock::{Clock, SystemClock};

/// A seed for openraft's election jitter: time and process id, so two boards that power up
/// together still draw different timeouts.
pub fn seed_now() -> u64 {
    SystemClock.now_ms() ^ (u64::from(std::process::id()) << 32)
}

/// Logging: to the journal, structured (each event's fields as journal fields, its level as
/// `PRIORITY`, so `journalctl -p warning -u ghatta` works), when stderr is the journal (systemd
/// says so in `JOURNAL_STREAM`); otherwise plain text on stderr, coloured only on a terminal
/// (escape codes in a file or a pipe are noise). Filtered by `GHATTA_LOG` either way.
fn init_logging() {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = || {
        tracing_subscriber::EnvFilter::try_from_env("GHATTA_LOG").unwrap_or_else(|_| "warn".into())
    };
    if stderr_is_the_journal()
        && let Ok(journal) = tracing_journald::layer()
    {
        tracing_subscriber::registry()
            .with(filter())
            .with(journal.with_syslog_identifier("ghatta".into()))
            .init();
        return;
    }
    tracing_subscriber::fmt()
        .with_env_filter(filter())
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

/// Whether stderr is the journal's stream: systemd sets `JOURNAL_STREAM` to its
/// `device:inode`, which must match stderr's (a child that inherited the variable but not the
/// stream writes plain text).
fn stderr_is_the_journal() -> bool {
    use std::os::unix::fs::MetadataExt;
    let Ok(var) = std::env::var("JOURNAL_STREAM") else {
        return false;
    };
    std::fs::metadata("/proc/self/fd/2")
        .is_ok_and(|m| journal_stream_matches(&var, m.dev(), m.ino()))
}

/// Whether `JOURNAL_STREAM`'s `device:inode` names (`dev`, `ino`).
fn journal_stream_matches(var: &str, dev: u64, ino: u64) -> bool {
    var.split_once(':')
        .and_then(|(d, i)| Some((d.trim().parse::<u64>().ok()?, i.trim().parse::<u64>().ok()?)))
        == Some((dev, ino))
}

/// Runs `command(seed)` as a program's main: logging (`GHATTA_LOG`, default `warn`) on
/// stderr, the runtime, `raft::Runtime::scope` with [`seed_now`]; an error is printed (with
/// its causes, `{:#}`) and gives a failing exit code.
pub fn main<F, Fut, E>(command: F) -> ExitCode
where
    F: FnOnce(u64) -> Fut,
    Fut: Future<Output = Result<ExitCode, E>>,
    E: Display,
{
    init_logging();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let seed = seed_now();
    match rt.block_on(crate::raft::Runtime::scope(seed, command(seed))) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_journal_is_used_only_for_the_stream_systemd_named() {
        assert!(journal_stream_matches("8:123", 8, 123));
        assert!(!journal_stream_matches("8:124", 8, 123));
        assert!(!journal_stream_matches("", 8, 123));
        assert!(!journal_stream_matches("x:y", 8, 123));
        // Not under systemd here (or not with this stderr).
        if std::env::var_os("JOURNAL_STREAM").is_none() {
            assert!(!stderr_is_the_journal());
        }
    }
}
