//! `ghatta-sim`: real ghatta nodes in the deterministic simulator (`run`), Raft's costs on a
//! scenario's simulated links (`measure`), and the same measurements in real time over serial
//! ptys and the radio channel emulator (`radio-measure`). Development and CI only: a board's
//! `ghatta` contains none of it.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::{Parser, Subcommand};

// The simulator allocates and frees small buffers at a high rate (redb pages, messages, wasm
// instances): mimalloc spends a fraction of glibc's time on them. Only here; the boards'
// binary keeps the system allocator (smaller, one less C dependency to cross-compile).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "ghatta-sim",
    version,
    about = "Run real ghatta nodes in the deterministic simulator and measure them"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run real nodes in the deterministic simulator through a scenario's faults and check them.
    Run(ghatta_simulate::cli::SimArgs),
    /// Measure Raft on a scenario's simulated links: idle bytes, bytes per entry, commit
    /// latency, leader loss to the next commit, elections in a quiet day.
    Measure(ghatta_simulate::measure::MeasureArgs),
    /// The same measurements in real time over serial links: three nodes on pseudo-terminals
    /// joined by the radio channel emulator (800 ms RTT, 9,600 bit/s shared, loss, noise).
    RadioMeasure(ghatta_simulate::radio_measure::RadioMeasureArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("GHATTA_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
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
    // `radio-measure` runs nodes on this runtime in real time: openraft's randomness needs a
    // seed (time and process id, as a board's). The simulated worlds seed their own runtimes.
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
        ^ (u64::from(std::process::id()) << 32);
    let run = async move {
        match cli.cmd {
            Cmd::Run(args) => ghatta_simulate::cli::run_cmd(args).await,
            Cmd::Measure(args) => ghatta_simulate::measure::run_cmd(args).await,
            Cmd::RadioMeasure(args) => ghatta_simulate::radio_measure::run(args).await,
        }
    };
    match rt.block_on(ghatta::raft::Runtime::scope(seed, run)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
