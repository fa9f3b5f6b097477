//! Warm instances against fresh ones: the same statuses, effects, state and fuel, delivery by
//! delivery, traps mid-delivery and grown memories included.

use ghatta_actor_sdk as sdk;

use super::*;

/// Every delivery's (status, writes, outputs, fuel) on `host`, from an empty state, and the
/// state at the end.
type Trace = (Vec<(Status, Effects, u64)>, ActorState);

fn trace(host: &ActorHost, deliveries: &[(ActorKind, Vec<u8>)]) -> Trace {
    let mut state = ActorState::default();
    let runs = deliveries
        .iter()
        .map(|(kind, bytes)| host.deliver_metered(*kind, &mut state, bytes))
        .collect();
    (runs, state)
}

fn assert_same(warm: &Trace, fresh: &Trace) {
    assert_eq!(warm.0.len(), fresh.0.len());
    for (i, (w, f)) in warm.0.iter().zip(&fresh.0).enumerate() {
        assert_eq!(w.0, f.0, "status of delivery {i}");
        assert_eq!(w.1.writes, f.1.writes, "writes of delivery {i}");
        assert_eq!(w.1.outputs, f.1.outputs, "outputs of delivery {i}");
        assert_eq!(w.2, f.2, "fuel of delivery {i}");
    }
    assert_eq!(warm.1.map, fresh.1.map);
    assert_eq!(warm.1.bytes, fresh.1.bytes);
}

fn delivery(i: u64, input: sdk::Input) -> (ActorKind, Vec<u8>) {
    let kind = ActorKind::for_input(&input).unwrap_or(ActorKind::Billing);
    let d = sdk::Delivery {
        ctx: sdk::Context {
            log_index: i,
            log_time_ms: 1_700_000_000_000 + i * 7_000,
            origin: sdk::NodeId(1 + i % 3),
        },
        input,
    };
    (kind, sdk::codec::encode(&d))
}

/// How many deliveries [`varied`] opens with to set up the tariff and the accounts.
const SET_UP_DELIVERIES: usize = 13;

/// A varied sequence for the compiled-in actors: set-up, meter reads (some backwards),
/// telemetry in and out of band, credits, a timer tick, a no-op, and bytes that decode to
/// nothing.
fn varied() -> Vec<(ActorKind, Vec<u8>)> {
    let mut inputs = vec![sdk::Input::SetTariff(sdk::Tariff {
        id: 1,
        version: 1,
        kind: sdk::TariffKind::PerKwh {
            rate_paisa_per_kwh: 1_500,
        },
    })];
    for id in 1..=12 {
        inputs.push(sdk::Input::UpsertCustomer(sdk::CustomerSpec {
            id: sdk::CustomerId(id),
            node: sdk::NodeId(1 + u64::from(id) % 3),
            mode: if id % 2 == 0 {
                sdk::AccountMode::Prepaid
            } else {
                sdk::AccountMode::Postpaid
            },
            tariff: 1,
            connection_w: 250,
            opening_credit_mpaisa: 50_000,
            token: None,
        }));
    }
    for k in 0..60u64 {
        inputs.push(match k % 6 {
            0 => sdk::Input::Telemetry(sdk::Telemetry {
                node: sdk::NodeId(1 + k % 3),
                frequency_mhz: if k % 12 == 0 { 48_200 } else { 50_010 },
                voltage_dv: 2_300,
                generation_w: 30_000 - (k as u32) * 300,
                ballast_w: (k as u32 % 5) * 1_000,
                ballast_capacity_w: 30_000,
                feeders: (1..=3)
                    .map(|f| sdk::FeederLoad {
                        feeder: f,
                        load_w: 5_000 + u32::from(f) * 700,
                        closed: k % 4 != 0,
                    })
                    .collect(),
            }),
            1 => sdk::Input::TopUp(sdk::TopUp {
                customer: sdk::CustomerId((k % 12) as u32 + 1),
                token_id: 1 + k,
                amount_mpaisa: 20_000,
            }),
            2 => sdk::Input::Noop,
            _ => sdk::Input::MeterRead(sdk::MeterRead {
                customer: sdk::CustomerId((k % 12) as u32 + 1),
                // Mostly forwards; every ninth read goes back.
                total_wh: if k % 9 == 0 { 10 } else { 1_000 + k * 37 },
                read_at_ms: 0,
            }),
        });
    }
    let mut deliveries: Vec<_> = inputs
        .into_iter()
        .enumerate()
        .map(|(i, input)| delivery(i as u64 + 1, input))
        .collect();
    deliveries.insert(20, (ActorKind::Billing, vec![0xff; 40]));
    deliveries.insert(40, (ActorKind::Balancing, vec![7, 7, 7]));
    deliveries
}

fn embedded(limits: ActorLimits) -> ActorHost {
    ActorHost::with_embedded(limits).expect("actors")
}

#[test]
fn the_compiled_in_actors_are_reused() {
    let host = embedded(ActorLimits::default());
    for kind in [ActorKind::Balancing, ActorKind::Billing] {
        assert!(host.modules[&kind].reusable(), "{kind:?}");
    }
}

#[test]
fn warm_and_fresh_instances_agree_on_a_varied_sequence() {
    let deliveries = varied();
    let warm = trace(&embedded(ActorLimits::default()), &deliveries);
    let fresh = trace(
        &embedded(ActorLimits::default()).with_fresh_instances(),
        &deliveries,
    );
    assert_same(&warm, &fresh);
    let handled = warm.0.iter().filter(|r| r.0 == Status::Handled).count();
    assert!(handled > 50, "{handled} of {} handled", warm.0.len());
}

#[test]
fn a_delivery_out_of_fuel_mid_way_leaks_nothing_into_the_next() {
    let deliveries = varied();
    // A budget at the median fuel of the deliveries after the set-up: about half of them run
    // out mid-way, in the middle of decoding or of the actor's own writes, leaving a stack and
    // a heap in use. Never below what the set-up costs: were the accounts never opened, every
    // later read would be refused early and none would be handled after a trap.
    let fuel: Vec<u64> = trace(&embedded(ActorLimits::default()), &deliveries)
        .0
        .iter()
        .map(|r| r.2)
        .collect();
    let (set_up, rest) = fuel.split_at(SET_UP_DELIVERIES);
    let mut rest = rest.to_vec();
    rest.sort_unstable();
    let limits = ActorLimits {
        fuel_per_delivery: rest[rest.len() / 2].max(set_up.iter().copied().max().unwrap_or(0)),
        ..ActorLimits::default()
    };
    let warm = trace(&embedded(limits.clone()), &deliveries);
    let fresh = trace(&embedded(limits).with_fresh_instances(), &deliveries);
    assert_same(&warm, &fresh);
    let statuses: Vec<Status> = warm.0.iter().map(|r| r.0).collect();
    assert!(
        statuses
            .windows(2)
            .any(|w| w[0] == Status::Trapped(TrapKind::OutOfFuel) && w[1] == Status::Handled),
        "no delivery handled right after one ran out of fuel: {statuses:?}"
    );
}

/// An actor that records what its instance looked like when a delivery began (a global, a
/// byte of memory, the memory's size), then changes all three; input byte 1 traps after the
/// changes, 2 grows the memory.
const SNOOPING_ACTOR: &str = r#"
(module
  (import "ghatta" "state_set" (func $set (param i32 i32 i32 i32)))
  (memory (export "memory") 1)
  (global $count (mut i32) (i32.const 0))
  (data (i32.const 0) "seen")
  (func (export "ghatta_abi_version") (result i32) i32.const 1)
  (func (export "ghatta_alloc") (param i32) (result i32) i32.const 1024)
  (func (export "ghatta_handle") (param $p i32) (param $l i32) (result i32)
    (i32.store8 (i32.const 16) (global.get $count))
    (i32.store8 (i32.const 17) (i32.load8_u (i32.const 100)))
    (i32.store8 (i32.const 18) (memory.size))
    (call $set (i32.const 0) (i32.const 4) (i32.const 16) (i32.const 3))
    (global.set $count (i32.add (global.get $count) (i32.const 1)))
    (i32.store8 (i32.const 100) (i32.add (i32.load8_u (i32.const 100)) (i32.const 1)))
    (if (i32.eq (i32.load8_u (local.get $p)) (i32.const 1)) (then unreachable))
    (if (i32.eq (i32.load8_u (local.get $p)) (i32.const 2))
      (then (drop (memory.grow (i32.const 1)))))
    i32.const 0))
"#;

#[test]
fn a_trap_or_a_grown_memory_leaves_no_trace_in_the_next_delivery() {
    let module = wat::parse_str(SNOOPING_ACTOR).expect("valid wat");
    let host = |fresh: bool| {
        let h =
            ActorHost::new(ActorLimits::default(), &[(ActorKind::Billing, &module)]).expect("host");
        if fresh { h.with_fresh_instances() } else { h }
    };
    assert!(host(false).modules[&ActorKind::Billing].reusable());
    let deliveries: Vec<(ActorKind, Vec<u8>)> = [0u8, 0, 1, 0, 2, 0, 1, 1, 0]
        .iter()
        .map(|b| (ActorKind::Billing, vec![*b]))
        .collect();
    let seen = [&[ActorKind::Billing.prefix()][..], b"seen"].concat();
    let warm = trace(&host(false), &deliveries);
    assert_same(&warm, &trace(&host(true), &deliveries));
    for (i, (status, effects, _)) in warm.0.iter().enumerate() {
        if deliveries[i].1[0] == 1 {
            assert_eq!(*status, Status::Trapped(TrapKind::Wasm));
            assert!(effects.writes.is_empty());
        } else {
            assert_eq!(*status, Status::Handled);
            // What a fresh instance sees: the global at 0, the byte at 0, one page.
            assert_eq!(
                effects.writes,
                [(seen.clone(), Some(vec![0, 0, 1]))],
                "delivery {i}"
            );
        }
    }
}
