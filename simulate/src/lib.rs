//! ghatta-simulate: the proving ground. Real [`ghatta::node::Node`]s (the code `ghatta run`
//! starts) run on the `ghatta-sim` world: simulated disks, links, clocks, boards bound to
//! plant models, and the scenario's faults, on paused-clock runtimes, all driven by one `u64`
//! seed; the sim crate's checkers judge every run. Beside it, the tools that test nodes in
//! real time: the radio channel and WAN link emulators and `radio-measure`. Its binary is
//! `ghatta-sim`; a board's binary contains none of this.
//!
//! Code map:
//! - [`world`]: the world loop, node incarnations (start, crash, power cut, restart), the
//!   plants, the operator (set-up, top-ups) and the end-of-run convergence;
//! - [`transport`]: `SimTransport`, the node's links over `SimNet` (fragmenting to the link's
//!   MTU);
//! - [`observer`]: node hooks -> `Observation`s, billing decoded from the committed log;
//! - [`outbox`]: the nodes' outboxes and snapshots over a run, and the `outbox_fold` check;
//! - [`central`]: the grid's WAN uplink (`[wan]`): the link model, a central at its end, and
//!   the `wan_exactly_once` and `wan_prune` checks;
//! - [`lockstep`]: how the world runs the nodes: on its one runtime, or each on its own
//!   runtime advanced in windows by a pool of threads (`--engine`, `--threads`);
//! - [`clock`]: the nodes' drifting wall clocks;
//! - [`setup`]: tariffs, accounts, top-ups and the tariff oracle;
//! - [`cli`]: `ghatta-sim run` (one seed or a sweep, reports, plots, replay commands);
//! - [`measure`]: `ghatta-sim measure` (Raft's bytes, commit latency, failover and elections
//!   on a scenario's links, without plants);
//! - [`replay`]: `ReplayCache`, the actor host's delivery cache shared by the nodes;
//! - [`deploy`]: the operator's actor deploys (`kind = "deploy"` faults) through
//!   `Node::deploy_actor`, and the registries every replica must agree on;
//! - [`rogue`]: a member gone rogue (`kind = "rogue"` faults): its forgeries;
//! - [`emulator`]: the radio channel (ptys) and WAN link (TCP proxy) emulators;
//! - [`radio_measure`]: `ghatta-sim radio-measure`, the same measurements in real time over
//!   ptys and the radio channel emulator.
//!
//! Determinism: current-thread runtimes whose clocks are paused (one for the whole world, or
//! in lockstep one per node plus the world's); openraft's randomness from
//! `raft::Runtime::scope(seed)`; every world-level random choice from the sim crate's seeded
//! RNGs; ordered maps wherever iteration order matters; the nodes' observations merged by
//! (time, node) at every world step. The trace hash in every report (every observation, then
//! every network delivery and drop) is the same for the same seed and engine; lockstep and
//! one runtime are two different (each deterministic) schedules of the same world.
//!
//! A slow disk (`kind = "slow_disk"` in a scenario's faults, or random slow-disk episodes)
//! sets the node's `SimDisk` sync delay; the node's own log store waits it out after every
//! durable commit before acknowledging it (`storage::SyncLatency`), in simulated time, exactly
//! where a board's fsync would block. The field loop's journal writes are synchronous and do
//! not wait (they are off the consensus path).
//!
//! Architecture invariants: the simulator changes nothing in the node; it only chooses the
//! node's environment (what it gives `NodeBuilder`) and watches through `NodeObserver`. Nothing here reads the
//! wall clock except to report how long a run took.

#![forbid(unsafe_code)]

pub mod agents;
pub mod central;
pub mod cli;
pub mod clock;
pub mod deploy;
pub mod emulator;
pub mod lockstep;
pub mod measure;
pub mod member;
pub mod observer;
pub mod outbox;
pub mod radio_measure;
pub mod replay;
pub mod rogue;
pub mod setup;
pub mod transport;
pub mod world;

pub use world::{Mutation, SimConfig, SimOutcome, lockstep_allowed, run, timing_for};

use ghatta_sim::check::Violation;
use ghatta_sim::scenario::{Scenario, ScenarioError};

/// Locks a mutex shared with the nodes; a panic while it was held already failed the run,
/// so the state is still read to report it.
fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Whether a violation is of a *progress* property (the cluster got stuck) rather than a
/// safety one: the liveness checker's, and the end-of-run catch-up part of
/// `acked_proposals` (an up node that never applied what was acknowledged). Everything
/// else (two leaders, a changed or lost entry, diverging state, a double application, a
/// wrong charge, the frequency bands) is safety.
pub fn is_progress_violation(v: &Violation) -> bool {
    v.checker == "liveness"
        || (v.checker == "acked_proposals" && v.message.contains("is up at the end"))
}

/// A scenario shortened to a fault phase of `duration_s` (the settle phase is kept whole, so
/// the liveness bound still has room): scheduled faults start at the same *fraction* of the
/// run and keep their length (a 10-minute isolation is still 10 minutes), clipped to the new
/// fault phase; the random-fault window scales with the run. Longer durations are refused.
///
/// # Errors
/// When `duration_s` is not in (0, the scenario's duration].
pub fn shorten(s: &Scenario, duration_s: f64) -> Result<Scenario, ScenarioError> {
    let err = |problem: String| ScenarioError {
        file: s.name.clone(),
        key: "--duration-s".into(),
        problem,
    };
    if !(duration_s.is_finite() && duration_s > 0.0 && duration_s <= s.duration_s) {
        return Err(err(format!(
            "{duration_s} is not in (0, {}]: the scenario's own duration is the longest",
            s.duration_s
        )));
    }
    let f = duration_s / s.duration_s;
    let mut out = s.clone();
    out.duration_s = duration_s;
    for fault in &mut out.faults {
        fault.at_s *= f;
        if let Some(d) = fault.duration_s {
            fault.duration_s = Some(d.min(duration_s - fault.at_s).max(1.0));
        }
    }
    out.random_faults.start_s *= f;
    // WAN outages keep their length, as faults do, and their place in the run.
    if let Some(wan) = out.wan.as_mut() {
        for o in &mut wan.outages {
            o.at_s *= f;
            o.duration_s = o.duration_s.min(duration_s - o.at_s).max(1.0);
        }
    }
    out.random_faults.end_s = out.random_faults.end_s.map(|e| e * f);
    out.validate().map_err(|(k, p)| err(format!("{k}: {p}")))?;
    Ok(out)
}
