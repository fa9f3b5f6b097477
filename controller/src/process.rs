//! What every ghatta program does around its command (the board's `ghatta` and the simulator's
//! `ghatta-sim`): logs to stderr filtered by `GHATTA_LOG` (coloured only on a terminal), a multi-threaded runtime, openraft's
//! randomness seeded from the time and the process id, and an error printed for a person.

use std::fmt::Display;
use std::future::Future;
use std::process::ExitCode;

use crate::clock::{Clock, SystemClock};

/// A seed for openraft's election jitter: time and process id, so two boards that power up
/// together still draw different timeouts.
pub fn seed_now() -> u64 {
    SystemClock.now_ms() ^ (u64::from(std::process::id()) << 32)
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
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("GHATTA_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        // Colour only on a terminal: under systemd stderr is the journal, which stores the
        // escape codes raw and shows them as `[2m...` in `journalctl`.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
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
