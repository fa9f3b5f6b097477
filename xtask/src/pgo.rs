//! `cargo xtask pgo`: the simulator's fast binary. Builds `ghatta-sim` (package
//! `ghatta-simulate`) for this machine with the `sim`
//! profile (fat LTO, one codegen unit) and profile-guided optimisation: an instrumented build
//! runs every shipped scenario, llvm-profdata merges what it counted, and the final build lays
//! out and inlines the code by those counts.
//!
//! Same source, same behaviour: a run of the PGO binary has the trace hash of the plain release
//! binary's (`.ci/pgo.sh` checks it); only the time differs (BENCHMARKS.md, "The simulator's
//! PGO build"). The boards' binaries are not built this way: their profile would have to come
//! from the boards (an x86 profile says nothing about ARM branch costs), and `cargo xtask dist`
//! optimises them for size.
//!
//! The training runs use seed [`TRAIN_SEED`], not the benchmarks' seed 1, so the measured run is
//! not the run the compiler saw.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, anyhow, bail, ensure};

/// The cargo profile of the simulator's fast build (Cargo.toml: release with fat LTO and one
/// codegen unit).
const SIM_PROFILE: &str = "sim";
/// Seed of the training runs (the benchmarks measure seed 1).
const TRAIN_SEED: u64 = 2;
/// Simulated seconds each shipped scenario is trained for by default: long enough for the set-up,
/// snapshots, elections and every fault kind the scenarios schedule early.
const TRAIN_S_DEFAULT: u64 = 1_800;
/// The scenario also trained for longer ([`LONG_TRAIN_S_DEFAULT`]): the benchmark's shape, whose
/// later hours (an outbox of a day, larger snapshots, hours closing) a half-hour run never
/// reaches.
const LONG_SCENARIO: &str = "five-node-leader-isolated.toml";
/// Simulated seconds of the long training run by default (6 h; about two minutes instrumented).
const LONG_TRAIN_S_DEFAULT: u64 = 6 * 3_600;
/// The shipped scenarios, relative to the workspace root.
const SCENARIO_DIR: &str = "sim/scenarios";
/// Scenarios trained on but not gated: their checkers fail on some seeds with the code as it
/// is (an open finding, not this build's to hide or to stop on), so the seed sweep
/// (`.ci/sim.sh`) does not run them either. storm-5-node-satellite: 30 % loss, flapping links
/// and satellite round trips; at a 300 s fault phase 43 of 60 seeds passed before this
/// week's changes and 39 of 60 after (BENCHMARKS.md, "The retry storm").
const NOT_GATED: &[&str] = &["storm-5-node-satellite.toml"];
/// Scenarios whose faults take longer than a shortened training run (`--train-s`), trained
/// for at least [`TRAIN_S_DEFAULT`] so they end as the sweep runs them: replace-node starts
/// the replaced board ~10 minutes in, and cut at 300 s its membership changes are still in
/// flight, which its checkers rightly report. disk-faults rebuilds a node the same way 22
/// minutes in; deploy-radio's deploys take ~5 minutes each over the radio, the second across a
/// 10-minute partition.
const TRAIN_FULL_LENGTH: &[&str] = &["replace-node.toml", "disk-faults.toml", "deploy-radio.toml"];
/// The simulator's package and binary.
const SIM_PACKAGE: &str = "ghatta-simulate";
const SIM_BINARY: &str = "ghatta-sim";
/// Where everything goes, under the target directory: `gen/` (instrumented build),
/// `profiles/` (raw and merged counts), `use/` (the final build) and the binary itself.
const PGO_DIR: &str = "pgo";

pub const USAGE: &str = "\
usage: cargo xtask pgo [--train-s N] [--long-train-s N]

Builds the simulator's fast binary, TARGET_DIR/pgo/ghatta-sim (e.g. target/pgo/ghatta-sim):
ghatta-sim for this machine with the `sim` profile (fat LTO) and profile-guided optimisation trained on every
scenario in sim/scenarios (seed 2, N simulated seconds each, default 1800; the five-node scenario
also for --long-train-s, default 21600). Needs rustup's llvm-tools component (installed on first
use). Takes ~15 minutes on 2 cores: two full builds and the training runs.
";

#[derive(Debug, PartialEq, Eq)]
pub struct PgoArgs {
    train_s: u64,
    long_train_s: u64,
}

pub fn parse_args(mut args: impl Iterator<Item = String>) -> anyhow::Result<Option<PgoArgs>> {
    let mut a = PgoArgs {
        train_s: TRAIN_S_DEFAULT,
        long_train_s: LONG_TRAIN_S_DEFAULT,
    };
    while let Some(arg) = args.next() {
        let mut seconds = |name: &str| -> anyhow::Result<u64> {
            let v = args
                .next()
                .ok_or_else(|| anyhow!("{name} needs a value\n{USAGE}"))?;
            let s: u64 = v
                .parse()
                .map_err(|_| anyhow!("{name} {v}: give whole simulated seconds, e.g. 1800"))?;
            ensure!(
                s > 0,
                "{name} 0: a training run must simulate at least a second"
            );
            Ok(s)
        };
        match arg.as_str() {
            "--train-s" => a.train_s = seconds("--train-s")?,
            "--long-train-s" => a.long_train_s = seconds("--long-train-s")?,
            "-h" | "--help" => return Ok(None),
            other => bail!("unknown argument `{other}`\n{USAGE}"),
        }
    }
    Ok(Some(a))
}

pub fn run(args: PgoArgs, root: &Path, target_dir: &Path) -> anyhow::Result<()> {
    let host = host_triple(root)?;
    let profdata = llvm_profdata(root, &host)?;
    let dir = target_dir.join(PGO_DIR);
    let profiles = dir.join("profiles");
    // Counts from an older build would not match this one's code: start from none.
    if profiles.exists() {
        fs::remove_dir_all(&profiles)
            .with_context(|| format!("cannot clear old profiles in {}", profiles.display()))?;
    }
    let raw = profiles.join("raw");
    fs::create_dir_all(&raw).with_context(|| format!("cannot create {}", raw.display()))?;

    let gen_dir = dir.join("gen");
    let flag = format!("-Cprofile-generate={}", raw.display());
    let instrumented = build(root, &host, &gen_dir, &flag)?;

    let runs = training_runs(root, &args)?;
    for (scenario, seconds) in &runs {
        train(&instrumented, scenario, *seconds, &raw)?;
    }

    let merged = profiles.join("merged.profdata");
    let status = Command::new(&profdata)
        .arg("merge")
        .arg("-o")
        .arg(&merged)
        .arg(&raw)
        .status()
        .with_context(|| format!("cannot run {}", profdata.display()))?;
    ensure!(
        status.success(),
        "llvm-profdata could not merge the training counts in {} ({status})",
        raw.display()
    );

    let flag = format!("-Cprofile-use={}", merged.display());
    let optimised = build(root, &host, &dir.join("use"), &flag)?;
    let out = dir.join(SIM_BINARY);
    fs::copy(&optimised, &out)
        .with_context(|| format!("cannot copy {} to {}", optimised.display(), out.display()))?;
    println!(
        "xtask: built {} (profile `{SIM_PROFILE}`, PGO from {} training runs, seed {TRAIN_SEED})",
        out.display(),
        runs.len()
    );
    Ok(())
}

/// This machine's target triple (`rustc -vV`), built explicitly so the PGO flags reach only the
/// binary's code, not build scripts or proc macros.
fn host_triple(root: &Path) -> anyhow::Result<String> {
    rustc_stdout(root, &["-vV"])?
        .lines()
        .find_map(|l| l.strip_prefix("host: "))
        .map(str::to_string)
        .ok_or_else(|| anyhow!("`rustc -vV` printed no `host:` line"))
}

/// What the workspace's pinned rustc (rust-toolchain.toml, hence run in `root`) prints for
/// `args`.
fn rustc_stdout(root: &Path, args: &[&str]) -> anyhow::Result<String> {
    let shown = args.join(" ");
    let out = Command::new("rustc")
        .current_dir(root)
        .args(args)
        .output()
        .with_context(|| format!("cannot run `rustc {shown}`"))?;
    ensure!(
        out.status.success(),
        "`rustc {shown}` failed ({})",
        out.status
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The toolchain's llvm-profdata (rustup's llvm-tools component), installed if missing.
fn llvm_profdata(root: &Path, host: &str) -> anyhow::Result<PathBuf> {
    let sysroot = PathBuf::from(rustc_stdout(root, &["--print", "sysroot"])?.trim());
    let path = sysroot
        .join("lib/rustlib")
        .join(host)
        .join("bin/llvm-profdata");
    if !path.exists() {
        println!("xtask: installing rustup's llvm-tools (for llvm-profdata)");
        let status = Command::new("rustup")
            .current_dir(root)
            .args(["component", "add", "llvm-tools"])
            .status()
            .context("cannot run rustup")?;
        ensure!(
            status.success() && path.exists(),
            "llvm-profdata is not at {}; install it with `rustup component add llvm-tools` in \
             {} (rustup needs to reach static.rust-lang.org)",
            path.display(),
            root.display()
        );
    }
    Ok(path)
}

/// Build the simulator with the `sim` profile and one extra compiler flag into `target_dir`; returns the
/// binary. The flag is appended to the workspace's own rustflags (`--config build.rustflags`
/// merges with .cargo/config.toml, where RUSTFLAGS would replace its `tokio_unstable`, and with
/// it the seeded tokio RNG that makes runs replay).
fn build(root: &Path, host: &str, target_dir: &Path, flag: &str) -> anyhow::Result<PathBuf> {
    let mut cmd = Command::new(crate::cargo());
    cmd.current_dir(root)
        .env("CARGO_TARGET_DIR", target_dir)
        .args(["build", "--locked", "--package", SIM_PACKAGE, "--profile"])
        .arg(SIM_PROFILE)
        .args(["--target", host, "--config"])
        .arg(format!("build.rustflags=[{flag:?}]"));
    println!("xtask: {cmd:?}");
    let status = cmd.status().context("cannot run cargo")?;
    ensure!(
        status.success(),
        "building {SIM_BINARY} with {flag} failed ({status}); the compiler's messages are above"
    );
    let binary = target_dir.join(host).join(SIM_PROFILE).join(SIM_BINARY);
    ensure!(
        binary.exists(),
        "cargo reported success but {} is missing",
        binary.display()
    );
    Ok(binary)
}

/// Every shipped scenario for `train_s`, and the benchmark's shape for `long_train_s` more.
fn training_runs(root: &Path, args: &PgoArgs) -> anyhow::Result<Vec<(PathBuf, u64)>> {
    let dir = root.join(SCENARIO_DIR);
    let mut scenarios: Vec<PathBuf> = fs::read_dir(&dir)
        .with_context(|| format!("cannot list the scenarios in {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    scenarios.sort();
    ensure!(
        !scenarios.is_empty(),
        "no scenario (*.toml) in {}",
        dir.display()
    );
    let mut runs: Vec<(PathBuf, u64)> = scenarios
        .iter()
        .map(|s| {
            let full = s
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| TRAIN_FULL_LENGTH.contains(&n));
            let seconds = if full {
                args.train_s.max(TRAIN_S_DEFAULT)
            } else {
                args.train_s
            };
            (s.clone(), seconds)
        })
        .collect();
    let long = dir.join(LONG_SCENARIO);
    ensure!(
        long.exists(),
        "{} is missing: the long training run needs it",
        long.display()
    );
    runs.push((long, args.long_train_s));
    Ok(runs)
}

/// One training run of the instrumented binary. A run whose checkers fail still counts code
/// paths, but it means the build is broken: stop rather than optimise for a broken world,
/// except for the scenarios in [`NOT_GATED`].
fn train(binary: &Path, scenario: &Path, seconds: u64, raw: &Path) -> anyhow::Result<()> {
    println!(
        "xtask: training on {} for {seconds} simulated s",
        scenario.display()
    );
    let status = Command::new(binary)
        .env("LLVM_PROFILE_FILE", raw.join("ghatta-sim-%p-%m.profraw"))
        .args(["run", "--scenario"])
        .arg(scenario)
        .args(["--seed", &TRAIN_SEED.to_string(), "--duration-s"])
        .arg(seconds.to_string())
        .arg("--json")
        .stdout(std::process::Stdio::null())
        .status()
        .with_context(|| format!("cannot run {}", binary.display()))?;
    let gated = !scenario
        .file_name()
        .is_some_and(|n| NOT_GATED.iter().any(|g| n == *g));
    if !status.success() && !gated {
        // Its code paths are counted all the same; the checkers' verdict is the sweep's.
        println!(
            "xtask: the training run on {} failed its checkers ({status}); it is not gated \
             (NOT_GATED: an open finding), so the profile keeps it",
            scenario.display()
        );
        return Ok(());
    }
    ensure!(
        status.success(),
        "the training run on {} (seed {TRAIN_SEED}, {seconds} s) failed ({status}): replay it \
         with `{SIM_BINARY} run --scenario {} --seed {TRAIN_SEED} --duration-s {seconds}`",
        scenario.display(),
        scenario.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(v: &[&str]) -> anyhow::Result<Option<PgoArgs>> {
        parse_args(v.iter().map(|s| s.to_string()))
    }

    #[test]
    fn args_default_and_override() {
        assert_eq!(
            args(&[]).unwrap(),
            Some(PgoArgs {
                train_s: TRAIN_S_DEFAULT,
                long_train_s: LONG_TRAIN_S_DEFAULT
            })
        );
        assert_eq!(
            args(&["--train-s", "60", "--long-train-s", "120"]).unwrap(),
            Some(PgoArgs {
                train_s: 60,
                long_train_s: 120
            })
        );
        assert_eq!(args(&["--help"]).unwrap(), None);
    }

    #[test]
    fn bad_args_are_refused_with_what_to_give() {
        let e = args(&["--train-s", "half"]).unwrap_err().to_string();
        assert!(e.contains("whole simulated seconds"), "{e}");
        assert!(args(&["--train-s", "0"]).is_err());
        assert!(args(&["--train-s"]).is_err());
        assert!(args(&["--fast"]).is_err());
    }

    #[test]
    fn every_shipped_scenario_is_trained_and_the_long_one_twice() {
        let root = crate::workspace_root().unwrap();
        let a = PgoArgs {
            train_s: 10,
            long_train_s: 20,
        };
        let runs = training_runs(&root, &a).unwrap();
        let shipped = fs::read_dir(root.join(SCENARIO_DIR))
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .path()
                    .extension()
                    .is_some_and(|x| x == "toml")
            })
            .count();
        assert_eq!(runs.len(), shipped + 1);
        let (last, s) = runs.last().unwrap();
        assert!(last.ends_with(LONG_SCENARIO));
        assert_eq!(*s, 20);
        for (scenario, s) in &runs[..shipped] {
            let full = TRAIN_FULL_LENGTH.iter().any(|n| scenario.ends_with(n));
            assert_eq!(
                *s,
                if full { TRAIN_S_DEFAULT } else { 10 },
                "{}",
                scenario.display()
            );
        }
        assert!(
            TRAIN_FULL_LENGTH
                .iter()
                .all(|n| runs.iter().any(|(p, _)| p.ends_with(n))),
            "every full-length scenario is shipped"
        );
    }
}
