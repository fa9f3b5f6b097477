//! The whole pipeline with toy nodes (not Raft): scenario -> net -> faults ->
//! plants -> observations -> suite -> report, replayed from a seed.

use std::sync::{Arc, Mutex};

use ghatta_sim::check::{Suite, SuiteConfig};
use ghatta_sim::fault::{FaultDriver, NodeAction};
use ghatta_sim::net::{NodeId, SimNet};
use ghatta_sim::observe::{Digest, Observation, Role};
use ghatta_sim::plant::{Grid, Plant};
use ghatta_sim::plot::PlotRecorder;
use ghatta_sim::report::{FinishInfo, Report};
use ghatta_sim::scenario::Scenario;
use ghatta_sim::time::{Epoch, runtime};
use tokio::time::{Duration, sleep};

const SCENARIO: &str = r#"
duration_s = 1800
settle_s = 120
liveness_bound_s = 60
[nodes]
count = 3
interconnected = true
[links.default]
preset = "satellite"
loss = 0.05
[[faults]]
at_s = 600
duration_s = 120
kind = "isolate"
node = 2
[random_faults]
start_s = 60
end_s = 1500
mean_duration_s = 20
partition_per_hour = 6
"#;

fn digest(i: u64) -> Digest {
    *blake3::hash(&i.to_le_bytes()).as_bytes()
}

/// Toy node: node 1 "leads" and broadcasts index i every second; every node
/// applies contiguous indexes it has received (retransmitted until acked by
/// the next broadcast, which carries every index from the follower's last).
fn spawn_node(net: SimNet, epoch: Epoch, id: NodeId, obs: Arc<Mutex<Vec<Observation>>>) {
    let mut ep = net.endpoint(id);
    tokio::spawn(async move {
        let mut applied = 0u64;
        let mut acks = std::collections::BTreeMap::<NodeId, u64>::new();
        let mut next = 1u64;
        let mut beat = tokio::time::interval(Duration::from_secs(1));
        beat.tick().await;
        loop {
            if id == 1 {
                tokio::select! {
                    biased;
                    m = ep.recv() => {
                        let Some((from, b)) = m else { return };
                        if b.len() == 8 {
                            let a = u64::from_le_bytes(b.try_into().unwrap_or([0; 8]));
                            acks.insert(from, a);
                        }
                    }
                    _ = beat.tick() => {
                        obs.lock().expect("obs").push(Observation::EntryApplied {
                            t_ms: epoch.elapsed_ms(), node: id, index: next,
                            entry_digest: digest(next), state_hash: digest(next + 1_000_000),
                        });
                        for peer in [2, 3] {
                            let from = acks.get(&peer).copied().unwrap_or(0) + 1;
                            let upto = next.min(from + 50);
                            let frame: Vec<u8> = (from..=upto).flat_map(u64::to_le_bytes).collect();
                            net.send(1, peer, frame);
                        }
                        next += 1;
                    }
                }
            } else {
                let Some((_, b)) = ep.recv().await else {
                    return;
                };
                for chunk in b.chunks_exact(8) {
                    let i = u64::from_le_bytes(chunk.try_into().unwrap_or([0; 8]));
                    if i == applied + 1 {
                        applied = i;
                        obs.lock().expect("obs").push(Observation::EntryApplied {
                            t_ms: epoch.elapsed_ms(),
                            node: id,
                            index: i,
                            entry_digest: digest(i),
                            state_hash: digest(i + 1_000_000),
                        });
                    }
                }
                net.send(id, 1, applied.to_le_bytes().to_vec());
            }
        }
    });
}

fn run(seed: u64) -> (Report, String) {
    let scenario = Scenario::parse(SCENARIO, "world.toml").expect("scenario");
    let ids: Vec<NodeId> = vec![1, 2, 3];
    runtime().expect("runtime").block_on(async move {
        let epoch = Epoch::now();
        let net = scenario.build_net(seed, &ids);
        let obs = Arc::new(Mutex::new(Vec::new()));
        for &id in &ids {
            spawn_node(net.clone(), epoch, id, obs.clone());
        }
        let mut driver = FaultDriver::new(&scenario, seed, ids.clone());
        let plants: Vec<Plant> = (0..3)
            .filter_map(|i| scenario.plant_config(i))
            .map(|c| Plant::new(c, seed))
            .collect();
        let mut grid = Grid::new(plants);
        grid.interconnect_all();
        let mut suite = Suite::new(SuiteConfig::new((scenario.liveness_bound_s * 1e3) as u64));
        let mut plot = PlotRecorder::new("world", scenario.total_ms());
        for id in &ids {
            let o = Observation::RoleChange {
                t_ms: 0,
                node: *id,
                term: 1,
                role: if *id == 1 {
                    Role::Leader
                } else {
                    Role::Follower
                },
            };
            plot.observe(&o);
            suite.observe(&o);
        }
        let fault_end_ms = (scenario.duration_s * 1e3) as u64;
        let mut healed = false;
        let step_ms = 100;
        while epoch.elapsed_ms() < scenario.total_ms() {
            sleep(Duration::from_millis(step_ms)).await;
            let t = epoch.elapsed_ms();
            let tick = if t >= fault_end_ms && !healed {
                healed = true;
                driver.heal_everything(t, &net)
            } else {
                driver.poll(t, &net, Some(1))
            };
            assert!(
                tick.actions
                    .iter()
                    .all(|a| !matches!(a, NodeAction::Crash { .. }))
            );
            for o in tick
                .observations
                .iter()
                .chain(obs.lock().expect("obs").drain(..).as_slice())
            {
                suite.observe(o);
                plot.observe(o);
            }
            grid.step(step_ms);
            let truths: Vec<_> = grid.plants().iter().map(Plant::truth).collect();
            suite.observe(&Observation::Frequency {
                t_ms: t,
                plant: 0,
                mhz: truths[0].frequency_mhz,
            });
            plot.record_plants(t, &truths);
        }
        let report = suite.finish(FinishInfo {
            scenario: scenario.name.clone(),
            seed,
            end_t_ms: epoch.elapsed_ms(),
            net_trace_digest: Some(net.trace_digest()),
            net_counters: Some(net.total_counters()),
            metered_wh: grid.plants().iter().map(Plant::metered_energy_wh).sum(),
            ..FinishInfo::default()
        });
        (report, plot.render())
    })
}

#[test]
fn a_toy_world_replays_from_its_seed_and_passes_the_checkers() {
    let (a, svg) = run(11);
    assert!(a.passed, "{}", a.to_json());
    assert!(a.commits > 1_800, "commits {}", a.commits);
    assert!(
        a.net.dropped_partition > 0 && a.net.dropped_loss > 0,
        "faults bit: {:?}",
        a.net
    );
    assert!(a.frequency.in_band_pct > 99.9);
    assert!(a.ledger.metered_wh > 0);
    assert!(svg.contains("<svg"));
    let (b, _) = run(11);
    assert_eq!(a.trace_hash, b.trace_hash, "same seed, same trace");
    let (c, _) = run(12);
    assert_ne!(
        a.trace_hash, c.trace_hash,
        "different seed, different trace"
    );
}
