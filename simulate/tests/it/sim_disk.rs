//! A slow disk in the simulator reaches the node: its log store waits the disk's sync delay
//! after every durable commit (in simulated time) before acknowledging it. Since group commit
//! (BENCHMARKS.md, "Group commit") neither a slow follower nor a slow leader holds the
//! cluster's commits back: the leader sends entries to its followers while its own fsync runs
//! (`broadcast_submitted_on_append`), so the two healthy disks make a quorum whichever node's
//! is slow (before, a slow leader spaced every commit by its delay). In every case every
//! checker holds (nothing acknowledged is lost, the cluster stays live).

use std::collections::BTreeMap;

use ghatta::raft::timing::Timing;
use ghatta_sim::observe::Observation;
use ghatta_sim::report::Report;
use ghatta_sim::scenario::Scenario;
use ghatta_simulate::{self as simulate, Mutation, SimConfig};

use crate::sim::explain;

/// Extra time per fsync on the slow disk.
const DELAY_MS: u64 = 3_000;
/// The slow phase: from `FAULT_AT_S` for `FAULT_S`.
const FAULT_AT_S: u64 = 20;
const FAULT_S: u64 = 100;

fn scenario(slow: Option<&str>) -> Scenario {
    let mut toml = String::from(
        "name = \"slow-disk\"\nduration_s = 140\nsettle_s = 30\nliveness_bound_s = 60\n\
         [nodes]\ncount = 3\n[plant]\nhouseholds_per_feeder = [10, 10]\n\
         [links.default]\npreset = \"lan\"\n",
    );
    if let Some(node) = slow {
        toml.push_str(&format!(
            "[[faults]]\nat_s = {FAULT_AT_S}\nduration_s = {FAULT_S}\nkind = \"slow_disk\"\n\
             node = \"{node}\"\nsync_delay_ms = {DELAY_MS}\n"
        ));
    }
    Scenario::parse(&toml, "slow-disk.toml").unwrap_or_else(|e| panic!("{e}"))
}

/// Runs the scenario; returns the report and, per log index, when it was first applied.
fn run(slow: Option<&str>) -> (Report, BTreeMap<u64, u64>) {
    let trace = tempfile::NamedTempFile::new().expect("temp file");
    let out = simulate::run(&SimConfig {
        scenario: scenario(slow),
        seed: 5,
        mutation: Mutation::None,
        plot: false,
        // Raft timing for a 3 s round trip: heartbeats every 3.75 s, elections after 22 s,
        // so a leader whose appends each wait 3 s keeps its lead and shows the delay.
        timing: Some(Timing::for_rtt(DELAY_MS)),
        trace_path: Some(trace.path().to_path_buf()),
        actor_replay: true,
        lockstep_threads: None,
    })
    .unwrap_or_else(|e| panic!("{e:#}"));
    let mut applied = BTreeMap::new();
    let text = std::fs::read_to_string(trace.path()).expect("trace");
    for line in text.lines() {
        let o: Observation = serde_json::from_str(line).expect("observation");
        if let Observation::EntryApplied { t_ms, index, .. } = o {
            applied.entry(index).or_insert(t_ms);
        }
    }
    (out.report, applied)
}

/// Median gap between successive commit times inside the slow phase (after its first
/// delay), ms.
fn median_commit_gap_ms(applied: &BTreeMap<u64, u64>) -> u64 {
    let from = (FAULT_AT_S * 1_000) + DELAY_MS;
    let to = (FAULT_AT_S + FAULT_S) * 1_000;
    let mut times: Vec<u64> = applied
        .values()
        .copied()
        .filter(|t| (from..to).contains(t))
        .collect();
    times.sort_unstable();
    times.dedup();
    let mut gaps: Vec<u64> = times.windows(2).map(|w| w[1] - w[0]).collect();
    gaps.sort_unstable();
    assert!(
        gaps.len() >= 5,
        "too few commits in the slow phase: {times:?}"
    );
    gaps[gaps.len() / 2]
}

#[test]
fn a_slow_disk_slows_its_node_and_loses_nothing() {
    let (base, base_applied) = run(None);
    let (follower, follower_applied) = run(Some("follower"));
    let (leader, leader_applied) = run(Some("leader"));
    for r in [&base, &follower, &leader] {
        assert!(r.passed, "{}", explain(r));
    }
    let gap = |a| median_commit_gap_ms(a);
    let (g_base, g_follower, g_leader) = (
        gap(&base_applied),
        gap(&follower_applied),
        gap(&leader_applied),
    );
    eprintln!(
        "commits: base {} follower {} leader {}; median gap ms: {g_base} {g_follower} {g_leader}",
        base.commits, follower.commits, leader.commits
    );
    // Healthy disks and a slow follower: the field loops' once-a-second batches commit as
    // they come.
    assert!(g_base < DELAY_MS / 2, "base gap {g_base} ms");
    assert!(
        g_follower < DELAY_MS / 2,
        "slow follower gap {g_follower} ms"
    );
    assert!(
        follower.commits * 10 >= base.commits * 9,
        "a slow follower cost commits: {} vs {}",
        follower.commits,
        base.commits
    );
    // A slow leader: the followers' fsyncs make the quorum while the leader's runs, so its
    // commits keep coming as they do with a slow follower (with one append per fsync on the
    // leader they were spaced by the delay).
    assert!(
        g_leader < DELAY_MS / 2,
        "slow leader gap {g_leader} ms, delay {DELAY_MS} ms"
    );
    assert!(
        leader.commits * 10 >= base.commits * 9,
        "a slow leader cost commits: {} vs {}",
        leader.commits,
        base.commits
    );
}
