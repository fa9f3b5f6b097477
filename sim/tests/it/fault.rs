//! The fault driver: schedules resolve, apply to the network, and undo exactly.

use ghatta_sim::fault::{FaultDriver, NodeAction, Tick};
use ghatta_sim::net::NodeId;
use ghatta_sim::observe::Observation;
use ghatta_sim::scenario::Scenario;
use ghatta_sim::time::runtime;

const IDS: [NodeId; 5] = [1, 2, 3, 4, 5];

fn scenario(extra: &str) -> Scenario {
    let text = format!("duration_s = 3600\nsettle_s = 60\n[nodes]\ncount = 5\n{extra}");
    Scenario::parse(&text, "test.toml").unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn isolating_the_leader_cuts_it_and_heals_it_after_the_duration() {
    let s = scenario(
        "[[faults]]\nat_s = 10\nduration_s = 600\nkind = \"isolate\"\nnode = \"leader\"\n",
    );
    runtime().expect("runtime").block_on(async {
        let net = s.build_net(1, &IDS);
        let mut d = FaultDriver::new(&s, 1, IDS.to_vec());
        assert_eq!(d.poll(9_999, &net, Some(3)), Tick::default());
        let t = d.poll(10_000, &net, Some(3));
        assert!(matches!(
            t.observations[..],
            [Observation::FaultStart { t_ms: 10_000, .. }]
        ));
        for o in [1, 2, 4, 5] {
            assert!(net.is_cut(3, o) && net.is_cut(o, 3));
        }
        assert!(!net.is_cut(1, 2));
        // The leader changes meanwhile; the heal still targets node 3.
        let t = d.poll(610_000, &net, Some(1));
        assert!(matches!(
            t.observations[..],
            [Observation::FaultEnd { t_ms: 610_000, .. }]
        ));
        assert!(!net.is_cut(3, 1) && !net.is_cut(1, 3));
    });
}

#[test]
fn overlapping_partitions_heal_only_when_both_end() {
    let s = scenario(
        "[[faults]]\nat_s = 1\nduration_s = 10\nkind = \"partition\"\na = 0\nb = 1\n\
         [[faults]]\nat_s = 5\nduration_s = 10\nkind = \"isolate\"\nnode = 0\n",
    );
    runtime().expect("runtime").block_on(async {
        let net = s.build_net(1, &IDS);
        let mut d = FaultDriver::new(&s, 1, IDS.to_vec());
        d.poll(5_000, &net, None);
        d.poll(11_000, &net, None);
        assert!(net.is_cut(1, 2), "the isolation still holds the pair cut");
        d.poll(15_000, &net, None);
        assert!(!net.is_cut(1, 2) && !net.is_cut(2, 1));
    });
}

#[test]
fn crashes_and_power_cuts_come_back_with_a_restart() {
    let s = scenario(
        "[[faults]]\nat_s = 1\nkind = \"power_cut\"\nnode = 2\n\
         [[faults]]\nat_s = 2\nduration_s = 5\nkind = \"crash\"\nnode = \"follower\"\n",
    );
    runtime().expect("runtime").block_on(async {
        let net = s.build_net(1, &IDS);
        let mut d = FaultDriver::new(&s, 1, IDS.to_vec());
        let t = d.poll(2_000, &net, Some(1));
        assert_eq!(t.actions[0], NodeAction::PowerCut { node: 3 });
        let NodeAction::Crash { node: crashed } = t.actions[1] else {
            panic!("expected a crash, got {:?}", t.actions[1]);
        };
        assert!(crashed != 1 && crashed != 3, "a follower that is still up");
        assert_eq!(d.down_nodes().len(), 2);
        let t = d.poll(7_000, &net, Some(1));
        assert_eq!(t.actions, vec![NodeAction::Restart { node: crashed }]);
        // A power cut without a duration stays down DOWN_S_DEFAULT (30 s).
        let t = d.poll(31_000, &net, Some(1));
        assert_eq!(t.actions, vec![NodeAction::Restart { node: 3 }]);
        assert!(matches!(
            t.observations[..],
            [Observation::NodeRestart { node: 3, .. }]
        ));
    });
}

#[test]
fn random_faults_are_a_function_of_the_seed() {
    let s = scenario(
        "[random_faults]\nmean_duration_s = 30\npower_cut_per_hour = 20\npartition_per_hour = 10\n\
         isolate_per_hour = 5\nslow_disk_per_hour = 5\nclock_drift_per_hour = 5\ncrash_per_hour = 5\n",
    );
    let run = |seed: u64| {
        runtime().expect("runtime").block_on(async {
            let net = s.build_net(seed, &IDS);
            let mut d = FaultDriver::new(&s, seed, IDS.to_vec());
            let mut all = Vec::new();
            for t in (0..=3_600_000).step_by(1_000) {
                let tick = d.poll(t, &net, Some(1));
                all.extend(tick.observations);
            }
            let end = d.heal_everything(3_600_000, &net);
            all.extend(end.observations);
            assert!(
                (1..=5).all(|a| (1..=5).all(|b| !net.is_cut(a, b))),
                "all healed"
            );
            assert!(d.down_nodes().is_empty());
            all
        })
    };
    let a = run(1);
    assert!(a.len() > 100, "a busy hour: {} events", a.len());
    assert!(a == run(1), "same seed, same faults");
    assert!(a != run(2), "different seed, different faults");
}
