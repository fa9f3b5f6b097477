//! The radio profile's timing against its goals (a new leader and a commit within seconds of
//! losing one, little idle traffic), in the simulator (simulated time, so
//! the machine's load cannot move the numbers): 3 nodes on `sim/scenarios/radio-800ms.toml`
//! (800 ms RTT +/-50 %, 5 % loss, 9,600 bit/s, 100-byte MTU) with `LinkProfile::Radio`.
//! A shortened run of `ghatta-sim measure` (BENCHMARKS.md has the full one).

use std::path::Path;
use std::time::Duration;

use ghatta::net::LinkProfile;
use ghatta::raft::timing::Timing;
use ghatta_sim::scenario::Scenario;
use ghatta_simulate::measure::{Plan, SimBed, measure};

#[test]
fn the_radio_profile_meets_the_goals_at_800_ms_rtt() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../sim/scenarios/radio-800ms.toml");
    let scenario = Scenario::load(&path).unwrap_or_else(|e| panic!("{e}"));
    let timing = Timing::for_profile(LinkProfile::Radio);
    let plan = Plan {
        rtt_ms: LinkProfile::Radio.rtt_ms(),
        idle: Duration::from_secs(120),
        proposals: 20,
        stream: 30,
        stream_gap: Duration::from_millis(LinkProfile::Radio.rtt_ms()),
        inputs_per_entry: 1,
        failovers: 12,
        day: Duration::from_secs(2 * 3_600),
        seed: 5,
    };
    let rtt_ms = plan.rtt_ms;
    let rt = ghatta_sim::time::seeded_runtime(plan.seed).expect("runtime");
    let m = rt
        .block_on(ghatta::raft::Runtime::scope(plan.seed, async move {
            let mut bed = SimBed::start(&scenario, plan.seed, timing).await?;
            let m = measure(&mut bed, &plan, timing, SimBed::link_bytes).await;
            bed.stop().await;
            m
        }))
        .expect("measured");
    let report = serde_json::to_string_pretty(&m).unwrap_or_default();
    assert!(m.idle_bytes_per_s_per_peer <= 200.0, "{report}");
    assert!(
        m.idle_bytes_per_s_per_peer > 0.0,
        "heartbeats flow: {report}"
    );
    assert_eq!(m.at_leader.latency.failed, 0, "{report}");
    assert!(m.at_leader.latency.p50_x_floor <= 1.25, "{report}");
    assert!(m.forwarded.latency.p50_x_floor <= 1.25, "{report}");
    // One proposal per round trip, each made without waiting for the one before: it finds
    // that one's append still on the link. Pipelined appends (`rpc/pipeline.rs`) send it at
    // once; one append per round trip made it wait (p50 1.49x on this seed, 1.23-1.77x on
    // seeds 1-3, BENCHMARKS.md "Pipelined appends").
    assert_eq!(m.streamed.latency.failed, 0, "{report}");
    assert!(m.streamed.latency.p50_x_floor <= 1.3, "{report}");
    assert!(
        m.at_leader.latency.p50_ms >= 400,
        "not faster than light: {report}"
    );
    assert_eq!(m.failover_commit.failed, 0, "{report}");
    // The new leader is agreed 8-13 s after the loss. Its first commit then takes one round
    // trip to each follower (its own term's entries after the last of the old one, answered
    // with the follower's last log id, `rpc/network.rs`), not one per step of openraft's
    // binary search for the follower's match point (BENCHMARKS.md, "Radio at 800 ms RTT"). The median
    // gap is held to 3 RTT: one for the append, the rest for the 5 % loss (a lost first
    // append waits out its 2 RTT deadline; a fragmented one often needs a repair round).
    let mut gaps: Vec<u64> = m
        .failovers
        .iter()
        .filter_map(|f| Some(f.commit_index_ms?.saturating_sub(f.new_leader_ms?)))
        .collect();
    gaps.sort_unstable();
    assert_eq!(gaps.len(), m.failovers.len(), "{report}");
    assert!(
        gaps[gaps.len() / 2] <= 3 * rtt_ms,
        "new leader to its first commit {gaps:?} ms: {report}"
    );
    assert!(m.failover_leader.max_ms <= 15_000, "{report}");
    assert!(m.failover_commit.max_ms <= 40_000, "{report}");
    assert_eq!(m.idle_elections + m.day_elections, 0, "{report}");
}
