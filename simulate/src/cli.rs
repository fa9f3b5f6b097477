//! `ghatta-sim run --scenario FILE [--seed N | --seeds A..B] [--json] [--plot out.svg]`: runs one
//! seed or a sweep, prints the report(s), and exits non-zero when any checker failed, with
//! the seed and the command that replays it.
//!
//! Seeds of a sweep run in parallel on `--jobs` threads, each on its own simulated world
//! (runs share nothing, so parallelism cannot change a result); reports print in seed order.

use std::io::{IsTerminal, Write};
use std::ops::Range;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};

use anyhow::Context;
use ghatta_sim::report::Report;
use ghatta_sim::scenario::Scenario;

use super::{Mutation, SimConfig, is_progress_violation, run, shorten};
use ghatta::net::LinkProfile;
use ghatta::raft::timing::Timing;

/// Most seeds one sweep runs: a typo in a range must not queue a week of work.
pub const SEEDS_MAX: u64 = 100_000;
/// The log filter of a simulator thread: errors only, except openraft's "raft stopped" from
/// `RaftInner::recv_msg`, which every call into a node the world has just crashed or shut down
/// logs (hundreds per run, all expected: the world kills nodes on purpose).
const QUIET_LOG_FILTER: &str = "error,openraft::raft::raft_inner=off";
/// Progress lines a sweep prints when stderr is not a terminal (CI logs).
const PROGRESS_LINES: usize = 20;

/// Arguments of `ghatta-sim run`.
#[derive(clap::Args, Debug, Clone)]
pub struct SimArgs {
    /// Scenario file (TOML), e.g. sim/scenarios/calm-3-node-day.toml.
    #[arg(long)]
    pub scenario: PathBuf,
    /// The world seed.
    #[arg(long, conflicts_with = "seeds")]
    pub seed: Option<u64>,
    /// A sweep over seeds A..B (B excluded), e.g. 0..200.
    #[arg(long, value_parser = parse_seeds)]
    pub seeds: Option<Range<u64>>,
    /// Print the JSON report (a JSON array for a sweep) instead of summaries.
    #[arg(long)]
    pub json: bool,
    /// Write an SVG plot of the run (frequency, load, ballast, roles, faults); one seed only.
    #[arg(long, conflicts_with = "seeds")]
    pub plot: Option<PathBuf>,
    /// Shorten the fault phase to this many simulated seconds (faults keep their place in
    /// the run and their length; the settle phase is kept).
    #[arg(long)]
    pub duration_s: Option<f64>,
    /// Raft timing from a named link profile instead of from the scenario's links.
    #[arg(long, value_enum)]
    pub link_profile: Option<LinkProfileArg>,
    /// A deliberate bug in every node, to show the checkers catch it.
    #[arg(long, value_enum, default_value = "none")]
    pub mutation: Mutation,
    /// Write every observation the checkers see to this file (JSON lines); one seed only.
    #[arg(long, conflicts_with = "seeds")]
    pub trace: Option<PathBuf>,
    /// Report violations of progress properties (liveness, catching up by the end) but exit
    /// non-zero only for safety violations: for scenarios the node is known not to get
    /// through yet (see BENCHMARKS.md, Simulation).
    #[arg(long)]
    pub progress_not_gating: bool,
    /// Seeds run at once (default: the machine's cores).
    #[arg(long)]
    pub jobs: Option<usize>,
    /// Run every actor delivery on every replica, without the replay cache that lets one
    /// execution serve the replicas making the same delivery on the same state (the trace
    /// hash is the same either way; this only costs time).
    #[arg(long)]
    pub no_actor_replay: bool,
    /// How the nodes run: `lockstep` puts each node on its own runtime, advanced in windows
    /// of 100-400 ms (as long as the shortest link) on `--threads` threads, with relays
    /// reaching the plants at window ends (only for scenarios whose links are all at least
    /// 100 ms one way: the same seed then gives the same trace with any thread count, but a
    /// different one than `single`); `single` runs every node on one runtime; `auto`
    /// (default) picks lockstep where the links allow it and there are two threads or more
    /// for it (on one thread it only adds the windows' cost).
    #[arg(long, value_enum, default_value_t = EngineArg::Auto)]
    pub engine: EngineArg,
    /// Threads of each lockstep run (default: 2 for one seed, or 1 on a one-core machine; 1
    /// when a sweep already runs seeds side by side with `--jobs` above 1).
    #[arg(long)]
    pub threads: Option<usize>,
}

/// `--engine` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum EngineArg {
    /// Lockstep where the scenario's links allow it and it has two threads, else one runtime.
    Auto,
    /// Every node on one runtime.
    Single,
    /// Each node on its own runtime, in lockstep windows.
    Lockstep,
}

/// `--link-profile` values.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum LinkProfileArg {
    /// Design RTT 5 ms.
    Lan,
    /// Design RTT 50 ms.
    Wifi,
    /// Design RTT 800 ms.
    Radio,
    /// Design RTT 2 s.
    Satellite,
}

impl From<LinkProfileArg> for LinkProfile {
    fn from(p: LinkProfileArg) -> Self {
        match p {
            LinkProfileArg::Lan => LinkProfile::Lan,
            LinkProfileArg::Wifi => LinkProfile::Wifi,
            LinkProfileArg::Radio => LinkProfile::Radio,
            LinkProfileArg::Satellite => LinkProfile::Satellite,
        }
    }
}

fn parse_seeds(s: &str) -> Result<Range<u64>, String> {
    let (a, b) = s
        .split_once("..")
        .ok_or_else(|| format!("{s:?} is not a range like 0..200"))?;
    let a: u64 = a
        .trim()
        .parse()
        .map_err(|e| format!("seed range start {a:?}: {e}"))?;
    let b: u64 = b
        .trim()
        .parse()
        .map_err(|e| format!("seed range end {b:?}: {e}"))?;
    if b <= a {
        return Err(format!("empty seed range {a}..{b} (the end is excluded)"));
    }
    if b - a > SEEDS_MAX {
        return Err(format!("{} seeds is more than {SEEDS_MAX}", b - a));
    }
    Ok(a..b)
}

/// The command that replays one seed exactly, on the engine it ran on (`lockstep`: any
/// thread count replays it).
pub fn replay_command(args: &SimArgs, seed: u64, lockstep: bool) -> String {
    let mut cmd = format!(
        "cargo run --release -p ghatta-simulate -- run --scenario {} --seed {seed}",
        args.scenario.display()
    );
    if let Some(d) = args.duration_s {
        cmd.push_str(&format!(" --duration-s {d}"));
    }
    if let Some(p) = args.link_profile {
        cmd.push_str(&format!(
            " --link-profile {}",
            format!("{p:?}").to_lowercase()
        ));
    }
    if args.mutation != Mutation::None {
        let m = match args.mutation {
            Mutation::None => "none",
            Mutation::SkipDedupe => "skip-dedupe",
            Mutation::AckBeforeFsync => "ack-before-fsync",
            Mutation::AppendRetries => "append-retries",
            Mutation::UnboundedLogTime => "unbounded-log-time",
            Mutation::BlankSeqFromOne => "blank-seq-from-one",
            Mutation::CentralAcksUnstored => "central-acks-unstored",
        };
        cmd.push_str(&format!(" --mutation {m}"));
    }
    // The engine is part of the schedule (the thread count is not).
    cmd.push_str(if lockstep {
        " --engine lockstep"
    } else {
        " --engine single"
    });
    cmd
}

/// Loads the scenario the arguments name, shortened if asked.
pub fn load_scenario(args: &SimArgs) -> anyhow::Result<Scenario> {
    let s = Scenario::load(&args.scenario)?;
    Ok(match args.duration_s {
        Some(d) => shorten(&s, d)?,
        None => s,
    })
}

/// Runs `ghatta-sim run` (blocking; each seed on a thread of its own).
pub fn run_blocking(args: SimArgs) -> anyhow::Result<ExitCode> {
    let scenario = load_scenario(&args)?;
    if !ghatta_sim::time::tokio_rng_is_seeded() {
        eprintln!(
            "warning: this build does not seed tokio's RNG (it was built without \
             `--cfg tokio_unstable`, see .cargo/config.toml): the checkers still judge every \
             run, but a seed may not replay the same schedule"
        );
    }
    let seeds: Vec<u64> = match (&args.seeds, args.seed) {
        (Some(r), _) => r.clone().collect(),
        (None, Some(s)) => vec![s],
        (None, None) => vec![0],
    };
    let timing = args
        .link_profile
        .map(|p| Timing::for_profile(LinkProfile::from(p)));
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let jobs = args.jobs.unwrap_or(cores).clamp(1, seeds.len());
    // Lockstep's threads spin between windows: never more of them by default than cores.
    let threads = args
        .threads
        .unwrap_or(if jobs > 1 {
            1
        } else {
            crate::lockstep::THREADS_DEFAULT.min(cores)
        })
        .max(1);
    let lockstep_ok = crate::lockstep_allowed(&scenario);
    let base = SimConfig {
        scenario,
        seed: 0,
        mutation: args.mutation,
        plot: args.plot.is_some(),
        timing,
        trace_path: args.trace.clone(),
        actor_replay: !args.no_actor_replay,
        lockstep_threads: match args.engine {
            EngineArg::Single => None,
            EngineArg::Lockstep => Some(threads),
            EngineArg::Auto => (lockstep_ok && threads > 1).then_some(threads),
        },
    };
    let lockstep = base.lockstep_threads.is_some();
    let sweep = seeds.len() > 1;
    let started = std::time::Instant::now();
    let next = Arc::new(AtomicUsize::new(0));
    let seeds = Arc::new(seeds);
    let (tx, rx) = mpsc::channel();
    let mut workers = Vec::new();
    for _ in 0..jobs {
        let (next, seeds, tx, base) = (next.clone(), seeds.clone(), tx.clone(), base.clone());
        workers.push(
            std::thread::Builder::new()
                .name("ghatta-sim".into())
                .spawn(move || {
                    let _log = quiet_logs();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(&seed) = seeds.get(i) else {
                            return;
                        };
                        let cfg = SimConfig {
                            seed,
                            ..base.clone()
                        };
                        let out = run(&cfg).map_err(|e| (seed, format!("{e:#}")));
                        if tx.send(out).is_err() {
                            return;
                        }
                    }
                })
                .context("cannot start a simulator thread")?,
        );
    }
    drop(tx);
    let mut reports: Vec<Report> = Vec::new();
    let mut plot = None;
    let mut errors = Vec::new();
    let total = seeds.len();
    let tty = std::io::stderr().is_terminal();
    for out in rx {
        match out {
            Ok(o) => {
                plot = plot.or(o.plot_svg);
                reports.push(o.report);
            }
            Err(e) => errors.push(e),
        }
        if sweep {
            progress(
                tty,
                reports.len() + errors.len(),
                total,
                reports.iter().filter(|r| !r.passed).count() + errors.len(),
                started.elapsed().as_secs_f64(),
            );
        }
    }
    for w in workers {
        let _ = w.join();
    }
    reports.sort_by_key(|r| r.seed);
    if let (Some(path), Some(svg)) = (&args.plot, plot) {
        std::fs::write(path, svg).with_context(|| format!("cannot write {}", path.display()))?;
    }
    let gating = |r: &Report| {
        !r.passed
            && (!args.progress_not_gating
                || r.violations_suppressed > 0
                || r.violations.iter().any(|v| !is_progress_violation(v)))
    };
    let failed: Vec<&Report> = reports.iter().filter(|r| !r.passed).collect();
    let gating_failures = reports.iter().filter(|r| gating(r)).count();
    if args.json {
        if sweep {
            println!(
                "{}",
                serde_json::to_string_pretty(&reports).context("cannot encode the reports")?
            );
        } else if let Some(r) = reports.first() {
            println!("{}", r.to_json());
        }
    } else {
        for r in &reports {
            if !sweep || !r.passed {
                println!("{}", r.summary());
            }
        }
    }
    for r in &failed {
        eprintln!("FAIL seed {}:", r.seed);
        for v in &r.violations {
            eprintln!("  [{}] t={} ms: {}", v.checker, v.t_ms, v.message);
        }
        if r.violations_suppressed > 0 {
            eprintln!("  ... and {} more", r.violations_suppressed);
        }
        eprintln!("  replay: {}", replay_command(&args, r.seed, lockstep));
    }
    for (seed, e) in &errors {
        eprintln!("ERROR seed {seed}: {e}");
        eprintln!("  replay: {}", replay_command(&args, *seed, lockstep));
    }
    if sweep {
        let sim_s: f64 = reports.iter().map(|r| r.sim_seconds).sum();
        let wall_s = started.elapsed().as_secs_f64();
        eprintln!(
            "{} seeds: {} passed, {} failed, {} errors; {:.0} simulated s in {:.1} s wall \
             ({:.0}x real time on {jobs} threads)",
            total,
            reports.len() - failed.len(),
            failed.len(),
            errors.len(),
            sim_s,
            wall_s,
            sim_s / wall_s.max(1e-9),
        );
    }
    if args.progress_not_gating && gating_failures < failed.len() {
        eprintln!(
            "{} of the failed seeds broke only progress properties (--progress-not-gating)",
            failed.len() - gating_failures
        );
    }
    Ok(if gating_failures == 0 && errors.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Unless `GHATTA_LOG` asks for more, a simulator thread logs errors only: a sweep drives
/// nodes through thousands of deliberate faults, each of which the node rightly warns about,
/// and the checkers' verdicts are what matter. Returns the guard that keeps the setting.
pub(crate) fn quiet_logs() -> Option<tracing::subscriber::DefaultGuard> {
    if std::env::var_os("GHATTA_LOG").is_some() {
        return None;
    }
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(QUIET_LOG_FILTER))
        .with_writer(std::io::stderr)
        .finish();
    Some(tracing::subscriber::set_default(subscriber))
}

fn progress(tty: bool, done: usize, total: usize, failed: usize, wall_s: f64) {
    const WIDTH: usize = 30;
    let line = {
        let filled = WIDTH * done / total.max(1);
        format!(
            "[{}{}] {done}/{total} seeds, {failed} failed, {wall_s:.0} s",
            "=".repeat(filled),
            " ".repeat(WIDTH - filled)
        )
    };
    let mut err = std::io::stderr().lock();
    if tty {
        let _ = write!(err, "\r{line}");
        if done == total {
            let _ = writeln!(err);
        }
    } else if done == total || done.is_multiple_of(total.div_ceil(PROGRESS_LINES).max(1)) {
        let _ = writeln!(err, "{line}");
    }
}

/// `ghatta-sim run`, from the async CLI: the simulator runs on threads of its own (each world
/// needs its own paused-clock runtime, which cannot live inside the CLI's runtime).
pub async fn run_cmd(args: SimArgs) -> anyhow::Result<ExitCode> {
    tokio::task::spawn_blocking(move || run_blocking(args))
        .await
        .context("the simulator thread panicked")?
}
