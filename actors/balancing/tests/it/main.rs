//! Behaviour tests of the balancing actor, run natively against `MemHost`: set-points, shedding
//! order, restoring with hysteresis and interval, alarms with state, staleness and limits.

use std::collections::BTreeMap;

use ghatta_actor_sdk::{
    Actor, Alarm, AlarmCode, BalancingConfig, Context, CustomerId, Delivery, FeederLoad, FeederRef,
    Input, MemHost, MeterRead, NodeId, Outcome, Output, RejectReason, RelayCommand, RelayId,
    RelayReason, Telemetry,
};
use ghatta_balancing::state::{FEEDERS_PER_NODE_MAX, NODES_MAX, read_balance};
use ghatta_balancing::{Balancing, NODE_STALE_MS, SHED_SETTLE_MS};

const P1: NodeId = NodeId(1);
const P2: NodeId = NodeId(2);
const F: NodeId = NodeId(3);
const HZ50: u32 = 50_000;
const INTERVAL_MS: u64 = 30_000;

fn feeder(node: NodeId, feeder: u16) -> FeederRef {
    FeederRef { node, feeder }
}

fn config() -> BalancingConfig {
    BalancingConfig {
        nominal_mhz: HZ50,
        shed_below_mhz: 49_200,
        restore_above_mhz: 49_800,
        restore_margin_w: 1_500,
        restore_interval_ms: INTERVAL_MS,
        // F/1 is shed last, F/3 first.
        priorities: vec![feeder(F, 1), feeder(F, 2), feeder(F, 3)],
    }
}

struct World {
    host: MemHost,
    log_index: u64,
    /// The set-point each node was last sent.
    setpoints: BTreeMap<NodeId, u32>,
}

impl World {
    fn new(cfg: Option<BalancingConfig>) -> Self {
        let mut w = World {
            host: MemHost::default(),
            log_index: 0,
            setpoints: BTreeMap::new(),
        };
        if let Some(cfg) = cfg {
            assert_eq!(w.send(0, Input::SetBalancingConfig(cfg)), Outcome::Handled);
        }
        w
    }

    fn send(&mut self, log_time_ms: u64, input: Input) -> Outcome {
        self.log_index += 1;
        let ctx = Context {
            log_index: self.log_index,
            log_time_ms,
            origin: NodeId(1),
        };
        Balancing::handle(&mut self.host, &Delivery { ctx, input })
    }

    /// One report; returns the outputs and records the set-points sent.
    fn report(&mut self, at_ms: u64, t: Telemetry) -> Vec<Output> {
        assert_eq!(self.send(at_ms, Input::Telemetry(t)), Outcome::Handled);
        let out = self.host.take_outputs();
        for o in &out {
            if let Output::BallastSetpoint { node, setpoint_w } = o {
                self.setpoints.insert(*node, *setpoint_w);
            }
        }
        out
    }

    /// Plants P1 (30 kW, 20 kW ballast) and P2 (20 kW, 10 kW ballast) report at `at_ms`.
    fn plants(&mut self, at_ms: u64) {
        self.report(at_ms, plant(P1, 30_000, 20_000));
        self.report(at_ms, plant(P2, 20_000, 10_000));
    }

    /// The whole grid reports at `at_ms` at one frequency: P1, P2, then F with `loads_w`.
    /// Returns the three deliveries' outputs together.
    fn step(&mut self, at_ms: u64, frequency_mhz: u32, loads_w: [u32; 3]) -> Vec<Output> {
        let mut out = Vec::new();
        for (node, generation_w, capacity_w) in [(P1, 30_000, 20_000), (P2, 20_000, 10_000)] {
            let mut t = plant(node, generation_w, capacity_w);
            t.frequency_mhz = frequency_mhz;
            out.extend(self.report(at_ms, t));
        }
        out.extend(self.report(at_ms, feeders(frequency_mhz, loads_w)));
        out
    }

    fn ballast_sum_w(&self) -> u64 {
        self.setpoints.values().map(|&s| u64::from(s)).sum()
    }
}

fn plant(node: NodeId, generation_w: u32, ballast_capacity_w: u32) -> Telemetry {
    Telemetry {
        node,
        frequency_mhz: HZ50,
        voltage_dv: 2_300,
        generation_w,
        ballast_w: 0,
        ballast_capacity_w,
        feeders: vec![],
    }
}

/// The feeder node F with loads on feeders 1, 2, 3 (a load of 0 means open).
fn feeders(frequency_mhz: u32, loads_w: [u32; 3]) -> Telemetry {
    Telemetry {
        node: F,
        frequency_mhz,
        voltage_dv: 2_300,
        generation_w: 0,
        ballast_w: 0,
        ballast_capacity_w: 0,
        feeders: (1..=3)
            .zip(loads_w)
            .map(|(f, load_w)| FeederLoad {
                feeder: f,
                load_w,
                closed: load_w > 0,
            })
            .collect(),
    }
}

fn relays(out: &[Output]) -> Vec<(u16, bool)> {
    out.iter()
        .filter_map(|o| match o {
            Output::Relay(RelayCommand {
                relay: RelayId::Feeder(f),
                closed,
                reason: RelayReason::Balancing,
                node: F,
            }) => Some((*f, *closed)),
            Output::Relay(other) => panic!("unexpected relay command {other:?}"),
            _ => None,
        })
        .collect()
}

fn alarms(out: &[Output]) -> Vec<(AlarmCode, u32, i64)> {
    out.iter()
        .filter_map(|o| match o {
            Output::Alarm(Alarm {
                code,
                subject,
                value,
                ..
            }) => Some((*code, *subject, *value)),
            _ => None,
        })
        .collect()
}

#[test]
fn setpoints_share_the_surplus_by_capacity_and_sum_to_it() {
    let mut w = World::new(Some(config()));
    // P1 alone: 30 kW and no load, clamped to its 20 kW of ballast.
    let out = w.report(0, plant(P1, 30_000, 20_000));
    assert_eq!(
        out,
        vec![Output::BallastSetpoint {
            node: P1,
            setpoint_w: 20_000
        }]
    );
    // P2 joins: 50 kW of surplus, both clamped; P1's set-point has not changed, so only P2 hears.
    let out = w.report(100, plant(P2, 20_000, 10_000));
    assert_eq!(
        out,
        vec![Output::BallastSetpoint {
            node: P2,
            setpoint_w: 10_000
        }]
    );
    // 29 kW of load: 21 kW surplus split 2:1.
    let out = w.report(200, feeders(HZ50, [10_000, 15_000, 4_000]));
    assert_eq!(
        out,
        vec![
            Output::BallastSetpoint {
                node: P1,
                setpoint_w: 14_000
            },
            Output::BallastSetpoint {
                node: P2,
                setpoint_w: 7_000
            },
        ]
    );
    assert_eq!(
        50_000,
        29_000 + w.ballast_sum_w(),
        "generation = load + ballast"
    );
    // Load 29,001 W: 20,999 W surplus, rounding's leftover watt goes to P1.
    w.report(300, feeders(HZ50, [10_001, 15_000, 4_000]));
    assert_eq!(w.setpoints[&P1], 13_999 + 1);
    assert_eq!(w.setpoints[&P2], 6_999);
    assert_eq!(50_000, 29_001 + w.ballast_sum_w());
    // The reporter always hears its set-point, even unchanged (a lost output heals).
    let out = w.report(400, plant(P2, 20_000, 10_000));
    assert_eq!(
        out,
        vec![Output::BallastSetpoint {
            node: P2,
            setpoint_w: 6_999
        }]
    );
}

#[test]
fn under_frequency_sheds_by_priority_one_step_at_a_time() {
    let mut w = World::new(Some(config()));
    let loads = [10_000, 15_000, 4_000];
    assert_eq!(relays(&w.step(0, HZ50, loads)), vec![]);
    let out = w.step(1_000, 49_000, loads);
    assert_eq!(
        relays(&out),
        vec![(3, false)],
        "the lowest priority goes first, once"
    );
    assert_eq!(alarms(&out), vec![(AlarmCode::FeederShed, 3, 4_000)]);
    // Shed load no longer counts: 50 - 25 kW = 25 kW surplus.
    assert_eq!(w.ballast_sum_w(), 25_000);

    // Still low, but the last shed has not had time to show.
    assert_eq!(
        relays(&w.step(1_000 + SHED_SETTLE_MS - 1, 49_000, loads)),
        vec![]
    );
    assert_eq!(
        relays(&w.step(1_000 + SHED_SETTLE_MS, 49_000, loads)),
        vec![(2, false)]
    );
    assert_eq!(
        relays(&w.step(1_000 + 2 * SHED_SETTLE_MS, 49_000, loads)),
        vec![(1, false)]
    );
    assert_eq!(w.ballast_sum_w(), 30_000, "all load shed: ballast full");

    // Nothing left: CannotBalance once, not on every report.
    let out = w.step(1_000 + 3 * SHED_SETTLE_MS, 49_000, loads);
    assert_eq!(relays(&out), vec![]);
    assert_eq!(alarms(&out), vec![(AlarmCode::CannotBalance, 1, 0)]);
    assert_eq!(
        alarms(&w.step(1_000 + 4 * SHED_SETTLE_MS, 49_000, loads)),
        vec![]
    );
    // Frequency recovers between the thresholds: cleared once, nothing restored.
    let out = w.step(1_000 + 5 * SHED_SETTLE_MS, 49_500, [0, 0, 0]);
    assert_eq!(alarms(&out), vec![(AlarmCode::CannotBalance, 0, 0)]);
    assert_eq!(relays(&out), vec![]);
    let shed: Vec<u16> = read_balance(&w.host)
        .shed
        .iter()
        .map(|s| s.feeder.feeder)
        .collect();
    assert_eq!(shed, vec![3, 2, 1]);
}

#[test]
fn load_over_generation_sheds_at_nominal_frequency() {
    let mut w = World::new(Some(config()));
    w.plants(0);
    // 51 kW of load on 50 kW of generation, frequency still nominal.
    let out = w.report(1_000, feeders(HZ50, [40_000, 5_000, 6_000]));
    assert_eq!(
        out,
        vec![
            Output::Relay(RelayCommand {
                node: F,
                relay: RelayId::Feeder(3),
                closed: false,
                reason: RelayReason::Balancing,
            }),
            Output::Alarm(Alarm {
                code: AlarmCode::FeederShed,
                node: Some(F),
                subject: 3,
                value: 6_000,
                text: "feeder shed to balance the grid".into(),
            }),
            // 50 - 45 kW = 5 kW surplus: 3,334 + 1,666 W (the leftover watt to P1).
            Output::BallastSetpoint {
                node: P1,
                setpoint_w: 3_334
            },
            Output::BallastSetpoint {
                node: P2,
                setpoint_w: 1_666
            },
        ]
    );
    // The next report still shows F/3 closed (the relay has not moved yet): no second shed.
    let out = w.report(
        1_000 + SHED_SETTLE_MS,
        feeders(HZ50, [40_000, 5_000, 6_000]),
    );
    assert_eq!(relays(&out), vec![]);
}

#[test]
fn restore_needs_frequency_room_and_the_interval() {
    let mut w = World::new(Some(config()));
    assert_eq!(
        relays(&w.step(0, HZ50, [40_000, 5_000, 6_000])),
        vec![(3, false)]
    );
    // F/3 (6 kW) needs 6 + 1.5 kW of surplus; 50 - 45 = 5 kW is not enough, however long.
    let after = INTERVAL_MS;
    for at in (5_000..=after).step_by(5_000) {
        assert_eq!(
            relays(&w.step(at, HZ50, [40_000, 5_000, 0])),
            vec![],
            "at {at} ms"
        );
    }
    // Load drops to 41 kW (9 kW surplus), but the frequency is under the restore threshold.
    assert_eq!(
        relays(&w.step(after + 1_000, 49_700, [36_000, 5_000, 0])),
        vec![]
    );
    // At the threshold, the next report restores.
    let mut t = plant(P1, 30_000, 20_000);
    t.frequency_mhz = 49_800;
    let out = w.report(after + 2_000, t);
    assert_eq!(
        out,
        vec![
            Output::Relay(RelayCommand {
                node: F,
                relay: RelayId::Feeder(3),
                closed: true,
                reason: RelayReason::Balancing,
            }),
            // Ballast already makes room for the restored feeder: 50 - 41 - 6 = 3 kW.
            Output::BallastSetpoint {
                node: P1,
                setpoint_w: 2_000
            },
            Output::BallastSetpoint {
                node: P2,
                setpoint_w: 1_000
            },
        ]
    );
    assert!(read_balance(&w.host).shed.is_empty());
}

#[test]
fn restores_go_highest_priority_first_one_per_interval() {
    let mut w = World::new(Some(config()));
    w.step(0, HZ50, [10_000, 15_000, 4_000]);
    assert_eq!(
        relays(&w.step(1_000, 49_000, [10_000, 15_000, 4_000])),
        vec![(3, false)]
    );
    let last_shed = 1_000 + SHED_SETTLE_MS;
    assert_eq!(
        relays(&w.step(last_shed, 49_000, [10_000, 15_000, 0])),
        vec![(2, false)]
    );
    let calm = [10_000, 0, 0];
    let out = w.step(last_shed + INTERVAL_MS - 1, HZ50, calm);
    assert_eq!(
        relays(&out),
        vec![],
        "the interval counts from the last shed"
    );
    let out = w.step(last_shed + INTERVAL_MS, HZ50, calm);
    assert_eq!(
        relays(&out),
        vec![(2, true)],
        "F/2 outranks F/3; one restore per interval"
    );
    let partial = [10_000, 15_000, 0];
    assert_eq!(
        relays(&w.step(last_shed + INTERVAL_MS + 1_000, HZ50, partial)),
        vec![]
    );
    let out = w.step(last_shed + 2 * INTERVAL_MS, HZ50, partial);
    assert_eq!(relays(&out), vec![(3, true)]);
}

#[test]
fn default_config_never_sheds_and_alarms_once() {
    let mut w = World::new(None);
    w.plants(0);
    let out = w.report(1_000, feeders(49_000, [10_000, 15_000, 4_000]));
    assert_eq!(relays(&out), vec![]);
    assert_eq!(alarms(&out), vec![(AlarmCode::CannotBalance, 1, 0)]);
    // Short of generation too: still one alarm, no repeat.
    let out = w.report(10_000, feeders(49_000, [30_000, 15_000, 10_000]));
    assert_eq!(alarms(&out), vec![]);
    assert_eq!(w.ballast_sum_w(), 0, "no surplus, no ballast");
}

#[test]
fn short_grid_alarm_carries_the_deficit() {
    let mut w = World::new(None);
    w.plants(0);
    let out = w.report(1_000, feeders(HZ50, [30_000, 15_000, 10_000]));
    assert_eq!(alarms(&out), vec![(AlarmCode::CannotBalance, 1, 5_000)]);
}

#[test]
fn band_alarm_only_on_entry_and_exit() {
    let mut w = World::new(Some(config()));
    let mut t = plant(P1, 30_000, 20_000);
    let mut send = |at, mhz| {
        t.frequency_mhz = mhz;
        alarms(&w.report(at, t.clone()))
            .into_iter()
            .filter(|a| a.0 == AlarmCode::FrequencyOutOfBand)
            .collect::<Vec<_>>()
    };
    assert_eq!(send(0, 50_000), vec![]);
    assert_eq!(
        send(1, 51_251),
        vec![(AlarmCode::FrequencyOutOfBand, 1, 51_251)]
    );
    assert_eq!(send(2, 52_000), vec![]);
    assert_eq!(send(3, 0), vec![], "not measured: state unchanged");
    assert_eq!(
        send(4, 51_250),
        vec![(AlarmCode::FrequencyOutOfBand, 0, 51_250)]
    );
    assert_eq!(send(5, 48_750), vec![]);
    assert_eq!(
        send(6, 48_749),
        vec![(AlarmCode::FrequencyOutOfBand, 1, 48_749)]
    );
}

#[test]
fn band_state_is_per_node() {
    let mut w = World::new(Some(config()));
    let mut t1 = plant(P1, 30_000, 20_000);
    t1.frequency_mhz = 48_000;
    let out = w.report(0, t1);
    assert!(alarms(&out).contains(&(AlarmCode::FrequencyOutOfBand, 1, 48_000)));
    let out = w.report(1, plant(P2, 20_000, 10_000));
    assert!(
        !alarms(&out)
            .iter()
            .any(|a| a.0 == AlarmCode::FrequencyOutOfBand)
    );
}

#[test]
fn stale_reports_stop_counting() {
    let mut w = World::new(Some(config()));
    w.plants(0);
    w.report(0, feeders(HZ50, [10_000, 0, 0]));
    // Everyone still fresh: unchanged set-points go to the reporter only.
    let out = w.report(NODE_STALE_MS, plant(P1, 30_000, 20_000));
    assert_eq!(
        out,
        vec![Output::BallastSetpoint {
            node: P1,
            setpoint_w: 20_000
        }]
    );
    // P2 and F have gone quiet: P2 gets no set-point and its generation no longer counts.
    let out = w.report(NODE_STALE_MS + 1, plant(P1, 30_000, 20_000));
    assert_eq!(
        out,
        vec![Output::BallastSetpoint {
            node: P1,
            setpoint_w: 20_000
        }]
    );
    assert_eq!(read_balance(&w.host).setpoints, vec![(P1, 20_000)]);
    // 35 kW of load on P1's 30 kW: short (with P2 counted it would not be), so F/1 is shed.
    let out = w.report(NODE_STALE_MS + 2, feeders(HZ50, [35_000, 0, 0]));
    assert_eq!(relays(&out), vec![(1, false)]);
}

#[test]
fn feeders_of_a_silent_node_are_not_restored() {
    let mut w = World::new(Some(config()));
    w.step(0, 49_000, [10_000, 15_000, 4_000]);
    assert_eq!(read_balance(&w.host).shed.len(), 1);
    // Only the plants keep reporting: F's load is unknown, so F/3 stays open despite the room.
    for at in (5_000..=2 * INTERVAL_MS).step_by(5_000) {
        w.report(at, plant(P1, 30_000, 20_000));
        let out = w.report(at, plant(P2, 20_000, 10_000));
        assert_eq!(relays(&out), vec![], "at {at} ms");
    }
    // F reports again: restored.
    let out = w.report(2 * INTERVAL_MS + 1, feeders(HZ50, [10_000, 15_000, 0]));
    assert_eq!(relays(&out), vec![(3, true)]);
}

#[test]
fn shedding_skips_open_and_idle_feeders() {
    let mut w = World::new(Some(config()));
    w.plants(0);
    // F/3 is open and F/2 closed with no load: F/1 is the only useful step.
    let mut t = feeders(49_000, [10_000, 0, 0]);
    t.feeders[1].closed = true;
    let out = w.report(1_000, t);
    assert_eq!(relays(&out), vec![(1, false)]);
}

#[test]
fn limits_and_validation() {
    let mut w = World::new(Some(config()));
    let mut t = plant(P1, 1, 1);
    t.feeders = (0..=FEEDERS_PER_NODE_MAX as u16)
        .map(|f| FeederLoad {
            feeder: f,
            load_w: 1,
            closed: true,
        })
        .collect();
    assert_eq!(
        w.send(0, Input::Telemetry(t)),
        Outcome::Rejected(RejectReason::Invalid)
    );
    for n in 0..NODES_MAX as u64 {
        assert_eq!(
            w.send(0, Input::Telemetry(plant(NodeId(100 + n), 1, 1))),
            Outcome::Handled
        );
    }
    let one_too_many = Input::Telemetry(plant(NodeId(99), 1, 1));
    assert_eq!(
        w.send(0, one_too_many),
        Outcome::Rejected(RejectReason::Invalid)
    );
    // Known nodes still report.
    assert_eq!(
        w.send(1, Input::Telemetry(plant(NodeId(100), 1, 1))),
        Outcome::Handled
    );

    let mut cfg = config();
    cfg.restore_above_mhz = cfg.shed_below_mhz;
    assert_eq!(
        w.send(0, Input::SetBalancingConfig(cfg)),
        Outcome::Rejected(RejectReason::Invalid)
    );
    let read = MeterRead {
        customer: CustomerId(1),
        total_wh: 1,
        read_at_ms: 0,
    };
    assert_eq!(
        w.send(0, Input::MeterRead(read)),
        Outcome::Rejected(RejectReason::NotForMe)
    );
    assert_eq!(
        w.send(0, Input::Noop),
        Outcome::Rejected(RejectReason::NotForMe)
    );
}

#[test]
fn hostile_values_do_not_trap() {
    let mut w = World::new(Some(config()));
    for node in [P1, P2] {
        w.report(0, plant(node, u32::MAX, u32::MAX));
    }
    let mut t = feeders(u32::MAX, [u32::MAX, u32::MAX, u32::MAX]);
    t.generation_w = u32::MAX;
    w.report(u64::MAX, t);
    w.report(u64::MAX, feeders(1, [u32::MAX, 0, 0]));
}

#[test]
fn replicas_reach_identical_state() {
    fn run() -> (MemHost, Vec<Output>) {
        let mut w = World::new(Some(config()));
        let mut all = Vec::new();
        for step in 0..200u64 {
            let at = step * 700;
            let f = 48_900 + (step * 37 % 1_500) as u32;
            let l = (step * 911 % 20_000) as u32;
            all.extend(w.report(at, plant(P1, 30_000, 20_000)));
            all.extend(w.report(at + 1, plant(P2, 20_000 - l / 4, 10_000)));
            all.extend(w.report(at + 2, feeders(f, [l, 15_000 - l / 2, 4_000 + l / 3])));
        }
        (w.host, all)
    }
    let (a, out_a) = run();
    let (b, out_b) = run();
    assert_eq!(a.state, b.state);
    assert_eq!(out_a, out_b);
    assert!(
        out_a.iter().any(|o| matches!(o, Output::Relay(_))),
        "the scenario sheds"
    );
}
