//! The fault driver: schedules resolve, apply to the network, and undo exactly.

use ghatta_sim::fault::{FaultDriver, MemberChange, NodeAction, Tick};
use ghatta_sim::link::LinkModel;
use ghatta_sim::net::NodeId;
use ghatta_sim::observe::Observation;
use ghatta_sim::scenario::Scenario;
use ghatta_sim::time::runtime;
use proptest::prelude::Strategy;

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

/// The base link of `scenario()` (satellite) between nodes 1 and 2, both ways.
fn models(net: &ghatta_sim::net::SimNet) -> (LinkModel, LinkModel) {
    (net.link_model(1, 2), net.link_model(2, 1))
}

/// Regression: each link fault saved the model at its start and put it back at its end, so a
/// fault that started first and ended first restored the base, and the second then restored
/// the first one's model for good.
#[test]
fn overlapping_link_faults_ending_in_start_order_leave_the_base_model() {
    let s = scenario(
        "[[faults]]\nat_s = 1\nduration_s = 10\nkind = \"link\"\na = 0\nb = 1\nlink = { loss = 0.5 }\n\
         [[faults]]\nat_s = 5\nduration_s = 10\nkind = \"flap_link\"\na = 0\nb = 1\nup_s = 5\ndown_s = 1\n",
    );
    runtime().expect("runtime").block_on(async {
        let net = s.build_net(1, &IDS);
        let base = models(&net);
        let mut d = FaultDriver::new(&s, 1, IDS.to_vec());
        d.poll(5_000, &net, None);
        let m = net.link_model(1, 2);
        assert!(m.loss == 0.5 && m.flap.is_some(), "both apply: {m:?}");
        d.poll(11_000, &net, None);
        let m = net.link_model(2, 1);
        assert!(
            m.loss == base.1.loss && m.flap.is_some(),
            "only the flap: {m:?}"
        );
        d.poll(15_000, &net, None);
        assert_eq!(models(&net), base);
    });
}

#[test]
fn a_one_direction_fault_changes_only_that_direction() {
    let s = scenario(
        "[[faults]]\nat_s = 1\nduration_s = 10\nkind = \"partition\"\na = 0\nb = 1\ndirection = \"a_to_b\"\n\
         [[faults]]\nat_s = 1\nduration_s = 10\nkind = \"burst_loss\"\na = 2\nb = 3\ndirection = \"b_to_a\"\n\
         loss_bad = 0.9\ngood_to_bad = 0.05\nbad_to_good = 0.2\n",
    );
    runtime().expect("runtime").block_on(async {
        let net = s.build_net(1, &IDS);
        let mut d = FaultDriver::new(&s, 1, IDS.to_vec());
        d.poll(1_000, &net, None);
        assert!(net.is_cut(1, 2) && !net.is_cut(2, 1));
        assert!(net.link_model(4, 3).burst.is_some() && net.link_model(3, 4).burst.is_none());
        d.poll(11_000, &net, None);
        assert!(!net.is_cut(1, 2) && net.link_model(4, 3).burst.is_none());
    });
}

#[test]
fn burst_loss_faults_are_validated_naming_the_key() {
    for (keys, bad_key) in [
        (
            "loss_bad = 1.5\ngood_to_bad = 0.1\nbad_to_good = 0.1",
            "faults[0].loss_bad",
        ),
        (
            "loss_bad = 0.5\ngood_to_bad = 0.1\nbad_to_good = 0",
            "faults[0].bad_to_good",
        ),
        (
            "loss_bad = 0.5\ngood_to_bad = -0.1\nbad_to_good = 0.1",
            "faults[0].good_to_bad",
        ),
        (
            "loss_good = 2\nloss_bad = 0.5\ngood_to_bad = 0.1\nbad_to_good = 0.1",
            "faults[0].loss_good",
        ),
    ] {
        let text = format!(
            "duration_s = 60\n[nodes]\ncount = 2\n[[faults]]\nat_s = 1\nkind = \"burst_loss\"\na = 0\nb = 1\n{keys}\n"
        );
        let e = Scenario::parse(&text, "t.toml").expect_err(keys);
        assert_eq!(e.key, bad_key, "{e}");
    }
}

/// One link fault for the property test: when, how long, what, which way.
#[derive(Clone, Debug)]
struct LinkFault {
    at_s: u32,
    duration_s: u32,
    kind: u8,
    value: u32,
    direction: u8,
}

impl LinkFault {
    fn toml(&self) -> String {
        let direction = ["both", "a_to_b", "b_to_a"][usize::from(self.direction % 3)];
        let what = match self.kind % 4 {
            0 => format!("kind = \"link\"\nlink = {{ loss = 0.{} }}", self.value % 10),
            1 => format!(
                "kind = \"link\"\nlink = {{ latency_ms = {}, preset = \"radio\" }}",
                60 + self.value
            ),
            2 => format!(
                "kind = \"flap_link\"\nup_s = {}\ndown_s = 2",
                1 + self.value
            ),
            _ => format!(
                "kind = \"burst_loss\"\nloss_bad = 0.{}\ngood_to_bad = 0.01\nbad_to_good = 0.2",
                self.value % 10
            ),
        };
        format!(
            "[[faults]]\nat_s = {}\nduration_s = {}\na = 0\nb = 1\ndirection = \"{direction}\"\n{what}\n",
            self.at_s, self.duration_s
        )
    }
}

proptest::proptest! {
    /// Any set of overlapping link faults on one pair, starting and ending in any order,
    /// leaves both directions on the base model once the last has ended, and the base is
    /// back whenever none is open.
    #[test]
    fn overlapping_link_faults_compose_and_end_on_the_base_model(
        faults in proptest::collection::vec(
            (0u32..60, 1u32..60, 0u8..4, 0u32..100, 0u8..3).prop_map(
                |(at_s, duration_s, kind, value, direction)| LinkFault { at_s, duration_s, kind, value, direction }
            ),
            1..8,
        )
    ) {
        let text: String = faults.iter().map(LinkFault::toml).collect();
        let s = scenario(&text);
        runtime().expect("runtime").block_on(async {
            let net = s.build_net(1, &IDS);
            let base = models(&net);
            let mut d = FaultDriver::new(&s, 1, IDS.to_vec());
            for t_s in 0..=130u32 {
                d.poll(u64::from(t_s) * 1_000, &net, None);
                let open = faults.iter().any(|f| f.at_s <= t_s && t_s < f.at_s + f.duration_s);
                if !open {
                    proptest::prop_assert_eq!(models(&net), base, "nothing open at {} s", t_s);
                }
            }
            proptest::prop_assert_eq!(models(&net), base);
            Ok(())
        })?;
    }
}

#[test]
fn an_in_sync_power_cut_arms_then_lands_when_told_or_after_the_wait() {
    let s = scenario(
        "[[faults]]\nat_s = 1\nduration_s = 60\nkind = \"power_cut\"\nnode = 1\nin_sync = true\n\
         [[faults]]\nat_s = 1\nduration_s = 60\nkind = \"power_cut\"\nnode = 2\nin_sync = true\n\
         [[faults]]\nat_s = 1\nduration_s = 30\nkind = \"stop\"\nnode = 3\n",
    );
    runtime().expect("runtime").block_on(async {
        let net = s.build_net(1, &IDS);
        let mut d = FaultDriver::new(&s, 1, IDS.to_vec());
        let t = d.poll(1_000, &net, None);
        assert_eq!(
            t.actions,
            vec![
                NodeAction::ArmSyncCut { node: 2 },
                NodeAction::ArmSyncCut { node: 3 },
                NodeAction::Stop { node: 4 },
            ]
        );
        // Armed nodes stay up on the network until their cut lands.
        assert!(!net.is_node_down(2) && !net.is_node_down(3) && net.is_node_down(4));
        let t = d.sync_cut_landed(1_500, 2, &net);
        assert!(matches!(
            t.observations[..],
            [Observation::NodeCrash {
                t_ms: 1_500,
                node: 2
            }]
        ));
        assert!(net.is_node_down(2));
        // Node 3 never fsyncs: it is cut plainly after SYNC_CUT_WAIT_MS.
        let t = d.poll(10_999, &net, None);
        assert!(t.actions.is_empty());
        let t = d.poll(11_000, &net, None);
        assert_eq!(t.actions, vec![NodeAction::PowerCut { node: 3 }]);
        assert!(net.is_node_down(3));
        let t = d.poll(61_000, &net, None);
        assert_eq!(
            t.actions,
            vec![
                NodeAction::Restart { node: 4 },
                NodeAction::Restart { node: 2 },
                NodeAction::Restart { node: 3 }
            ]
        );
    });
}

#[test]
fn an_in_sync_power_cut_must_outlast_its_wait_for_an_fsync() {
    let text = "duration_s = 60\n[nodes]\ncount = 2\n[[faults]]\nat_s = 1\nduration_s = 5\n\
                kind = \"power_cut\"\nnode = 0\nin_sync = true\n";
    let e = Scenario::parse(text, "t.toml").expect_err("too short");
    assert_eq!(e.key, "faults[0].duration_s", "{e}");
}

#[test]
fn a_clock_step_sets_the_leaders_clock_and_steps_it_back_at_the_end() {
    use ghatta_sim::time::DriftClock;
    let s = scenario(
        "[[faults]]\nat_s = 10\nduration_s = 900\nkind = \"clock_step\"\nnode = \"leader\"\n\
         step_ms = 86400000\n",
    );
    runtime().expect("runtime").block_on(async {
        let net = s.build_net(1, &IDS);
        let mut d = FaultDriver::new(&s, 1, IDS.to_vec());
        let t = d.poll(10_000, &net, Some(2));
        let stepped = DriftClock {
            drift_ppm: 0,
            offset_ms: 86_400_000,
        };
        assert!(
            t.actions
                .iter()
                .any(|a| matches!(a, NodeAction::SetClock { node: 2, clock } if *clock == stepped)),
            "{:?}",
            t.actions
        );
        // Whoever leads at the end, node 2's clock is put right.
        let t = d.poll(910_000, &net, Some(4));
        assert!(
            t.actions.iter().any(|a| matches!(
                a,
                NodeAction::SetClock { node: 2, clock } if *clock == DriftClock::default()
            )),
            "{:?}",
            t.actions
        );
    });
}

#[test]
fn a_replaced_board_goes_down_and_comes_back_blank_and_membership_changes_are_requests() {
    let s = scenario(
        "[[faults]]\nat_s = 10\nduration_s = 300\nkind = \"replace_node\"\nnode = 4\n\
         [[faults]]\nat_s = 20\nkind = \"member_remove\"\nnode = 4\n\
         [[faults]]\nat_s = 400\nduration_s = 60\nkind = \"member_promote\"\nnode = \"leader\"\n",
    );
    runtime().expect("runtime").block_on(async {
        let net = s.build_net(1, &IDS);
        let mut d = FaultDriver::new(&s, 1, IDS.to_vec());
        let t = d.poll(10_000, &net, Some(1));
        assert_eq!(t.actions, vec![NodeAction::Replace { node: 5 }]);
        assert!(matches!(
            t.observations[..],
            [Observation::NodeCrash {
                t_ms: 10_000,
                node: 5
            }]
        ));
        assert!(net.is_node_down(5) && d.down_nodes().contains(&5));
        // A request starts and ends at once; the operator's patience is the default.
        let t = d.poll(20_000, &net, Some(1));
        assert_eq!(
            t.actions,
            vec![NodeAction::Member {
                node: 5,
                change: MemberChange::Remove,
                patience: std::time::Duration::from_secs(
                    ghatta_sim::scenario::MEMBER_PATIENCE_S_DEFAULT as u64
                ),
            }]
        );
        assert!(matches!(
            &t.observations[..],
            [Observation::FaultStart { what, .. }, Observation::FaultEnd { .. }]
                if what == "member remove of node 5"
        ));
        // The new board starts when the replacement ends.
        let t = d.poll(310_000, &net, Some(1));
        assert_eq!(t.actions, vec![NodeAction::Restart { node: 5 }]);
        assert!(!net.is_node_down(5));
        let t = d.poll(400_000, &net, Some(2));
        assert_eq!(
            t.actions,
            vec![NodeAction::Member {
                node: 2,
                change: MemberChange::Promote,
                patience: std::time::Duration::from_secs(60),
            }]
        );
    });
}

#[test]
fn a_disk_io_error_is_armed_on_a_node_that_is_up() {
    let s = scenario(
        "[[faults]]\nat_s = 1\nduration_s = 60\nkind = \"power_cut\"\nnode = 1\n\
         [[faults]]\nat_s = 2\nkind = \"disk_io_error\"\nnode = \"follower\"\n",
    );
    runtime().expect("runtime").block_on(async {
        let net = s.build_net(1, &IDS);
        let mut d = FaultDriver::new(&s, 1, IDS.to_vec());
        d.poll(1_000, &net, Some(1));
        let t = d.poll(2_000, &net, Some(1));
        let [NodeAction::FailSyncIo { node }] = t.actions[..] else {
            panic!("expected one armed I/O error, got {:?}", t.actions);
        };
        assert!(node != 1 && node != 2, "a follower that is up: {node}");
        assert!(matches!(
            t.observations[..],
            [Observation::FaultStart { .. }, Observation::FaultEnd { .. }]
        ));
    });
}

#[test]
fn a_deploy_is_asked_of_a_running_follower_by_default() {
    let s = scenario(
        "[[faults]]\nat_s = 1\nduration_s = 60\nkind = \"power_cut\"\nnode = 2\n\
         [[faults]]\nat_s = 2\nkind = \"deploy\"\nactor = \"billing\"\nversion = 3\n\
         [[faults]]\nat_s = 3\nduration_s = 90\nkind = \"deploy\"\nactor = \"billing\"\n\
         version = 4\nnode = 0\n",
    );
    runtime().expect("runtime").block_on(async {
        let net = s.build_net(1, &IDS);
        let mut d = FaultDriver::new(&s, 1, IDS.to_vec());
        d.poll(1_000, &net, Some(1));
        let t = d.poll(2_000, &net, Some(1));
        let [
            NodeAction::Deploy {
                node,
                ref actor,
                version: 3,
                patience,
            },
        ] = t.actions[..]
        else {
            panic!("expected one deploy, got {:?}", t.actions);
        };
        assert!(node != 1 && node != 3, "a follower that is up: {node}");
        assert_eq!(actor, "billing");
        assert_eq!(
            patience.as_secs_f64(),
            ghatta_sim::scenario::DEPLOY_PATIENCE_S_DEFAULT
        );
        assert!(matches!(
            &t.observations[..],
            [Observation::FaultStart { what, .. }, Observation::FaultEnd { .. }]
                if what.starts_with("deploy billing v3 through")
        ));
        let t = d.poll(3_000, &net, Some(1));
        assert_eq!(
            t.actions,
            vec![NodeAction::Deploy {
                node: 1,
                actor: "billing".into(),
                version: 4,
                patience: std::time::Duration::from_secs(90),
            }]
        );
    });
}

#[test]
fn a_fault_with_a_trigger_waits_for_its_node_state() {
    let s = scenario(
        "[[faults]]\nat_s = 10\nduration_s = 30\nkind = \"power_cut\"\nnode = 2\n\
         when = { state = \"leader\", node = 2 }\n\
         [[faults]]\nat_s = 10\nduration_s = 5\nkind = \"crash\"\nnode = 4\n\
         when = { state = \"membership_change\" }\n\
         [[faults]]\nat_s = 20\nkind = \"isolate\"\nnode = 0\n\
         when = { state = \"leader\", node = 1 }\n",
    );
    runtime().expect("runtime").block_on(async {
        let net = s.build_net(1, &IDS);
        let mut d = FaultDriver::new(&s, 1, IDS.to_vec());
        // Armed at 10 s; node 2 (id 3) does not lead and no change is in flight.
        assert_eq!(d.poll(10_000, &net, Some(1)), Tick::default());
        assert_eq!(d.poll(15_000, &net, None), Tick::default());
        // Node 2 leads from 17 s: the cut starts then, and lasts its 30 s from there.
        let t = d.poll(17_000, &net, Some(3));
        assert_eq!(t.actions, vec![NodeAction::PowerCut { node: 3 }]);
        assert!(d.poll(46_900, &net, Some(1)).actions.is_empty());
        let t = d.poll(47_000, &net, Some(1));
        assert_eq!(t.actions, vec![NodeAction::Restart { node: 3 }]);
        // The crash waits for a membership change in flight.
        d.set_membership_in_flight(true);
        let t = d.poll(50_000, &net, Some(1));
        assert_eq!(t.actions, vec![NodeAction::Crash { node: 5 }]);
        d.set_membership_in_flight(false);
        let t = d.poll(55_000, &net, Some(1));
        assert_eq!(t.actions, vec![NodeAction::Restart { node: 5 }]);
        // Node 1 (id 2) never leads: the isolation never starts, and the driver says so.
        assert!(d.poll(100_000, &net, Some(1)).actions.is_empty());
        d.heal_everything(3_600_000, &net);
        assert_eq!(d.never_fired().len(), 1, "{:?}", d.never_fired());
        assert!(
            d.never_fired()[0].contains("Isolate fault armed at 20 s")
                && d.never_fired()[0].contains("when node 1 leads"),
            "{:?}",
            d.never_fired()
        );
    });
}

#[test]
fn a_decommissioned_node_goes_down_for_good_even_at_the_heal() {
    let s = scenario("[[faults]]\nat_s = 30\nkind = \"decommission\"\nnode = 2\n");
    runtime().expect("runtime").block_on(async {
        let net = s.build_net(1, &IDS);
        let mut d = FaultDriver::new(&s, 1, IDS.to_vec());
        let t = d.poll(30_000, &net, Some(1));
        assert_eq!(t.actions, vec![NodeAction::Decommission { node: 3 }]);
        assert!(net.is_node_down(3));
        assert!(d.down_nodes().contains(&3));
        // Nothing brings it back: not the poll after a default down time, not the heal.
        let t = d.poll(600_000, &net, Some(1));
        assert!(t.actions.is_empty(), "{:?}", t.actions);
        let t = d.heal_everything(3_600_000, &net);
        assert!(
            !t.actions
                .iter()
                .any(|a| matches!(a, NodeAction::Restart { node: 3 })),
            "{:?}",
            t.actions
        );
        assert!(net.is_node_down(3));
    });
}

#[test]
fn a_decommission_names_its_board_by_index() {
    let text = "duration_s = 3600\n[nodes]\ncount = 5\n\
                [[faults]]\nat_s = 30\nkind = \"decommission\"\nnode = \"leader\"\n";
    let e = Scenario::parse(text, "test.toml").expect_err("a symbol is refused");
    assert!(e.to_string().contains("faults[0].node"), "{e}");
}
