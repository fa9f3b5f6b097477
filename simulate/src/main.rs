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
    // `radio-measure` runs nodes on this runtime in real time, under the process's seed; the
    // simulated worlds seed their own runtimes from the world seed.
    ghatta::process::main(|_seed| async move {
        match cli.cmd {
            Cmd::Run(args) => ghatta_simulate::cli::run_cmd(args).await,
            Cmd::Measure(args) => ghatta_simulate::measure::run_cmd(args).await,
            Cmd::RadioMeasure(args) => ghatta_simulate::radio_measure::run(args).await,
        }
    })
}
