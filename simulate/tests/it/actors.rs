//! The actor host at its edges: a looping actor is stopped identically on every replica while
//! the node keeps serving; malformed modules are refused with a clear error.

use std::sync::Arc;
use std::time::Duration;

use ghatta::actors::embedded::{BALANCING_WASM, BILLING_WASM};
use ghatta::actors::{ActorHost, ActorKind, ActorLimits, ActorState, LoadError, Status, TrapKind};
use ghatta_actor_sdk as sdk;

use crate::harness::{Cluster, field_batch, run};

/// An actor that follows the ABI but loops forever on every delivery.
const LOOPING_ACTOR: &str = r#"
(module
  (import "ghatta" "emit" (func $emit (param i32 i32)))
  (memory (export "memory") 1)
  (func (export "ghatta_abi_version") (result i32) i32.const 1)
  (func (export "ghatta_alloc") (param i32) (result i32) i32.const 1024)
  (func (export "ghatta_handle") (param i32 i32) (result i32)
    (loop $forever br $forever)
    i32.const 0))
"#;

fn limits() -> ActorLimits {
    // A smaller budget keeps the test quick; the outcome is the same at any budget.
    ActorLimits {
        fuel_per_delivery: 2_000_000,
        ..ActorLimits::default()
    }
}

fn looping_host() -> ActorHost {
    let looping = wat::parse_str(LOOPING_ACTOR).expect("valid wat");
    ActorHost::new(
        limits(),
        &[
            (ActorKind::Balancing, BALANCING_WASM),
            (ActorKind::Billing, &looping),
        ],
    )
    .expect("host")
}

fn meter_read(customer: u32, wh: u64) -> Vec<u8> {
    sdk::codec::encode(&sdk::Input::MeterRead(sdk::MeterRead {
        customer: sdk::CustomerId(customer),
        total_wh: wh,
        read_at_ms: 0,
    }))
}

#[test]
fn infinite_loop_runs_out_of_fuel_and_state_is_untouched() {
    let host = looping_host();
    let mut state = ActorState::default();
    state.insert(vec![2, b'x'], vec![1, 2, 3]);
    let before = state.map.clone();
    let delivery = sdk::codec::encode(&sdk::Delivery {
        ctx: sdk::Context {
            log_index: 7,
            log_time_ms: 0,
            origin: sdk::NodeId(1),
        },
        input: sdk::Input::MeterRead(sdk::MeterRead {
            customer: sdk::CustomerId(1),
            total_wh: 5,
            read_at_ms: 0,
        }),
    });
    let (status, effects) = host.deliver(ActorKind::Billing, &mut state, &delivery);
    assert_eq!(status, Status::Trapped(TrapKind::OutOfFuel));
    assert!(effects.writes.is_empty() && effects.outputs.is_empty());
    assert_eq!(state.map, before);
    // The same delivery on a fresh host (a cold replica) ends the same way.
    let (again, _) = looping_host().deliver(ActorKind::Billing, &mut state, &delivery);
    assert_eq!(again, status);
}

#[test]
fn looping_actor_is_rejected_identically_on_every_replica_and_node_keeps_serving() {
    run(21, async {
        let host: crate::harness::HostFactory = Arc::new(looping_host);
        let c = Cluster::start_with(3, host, None).await;
        let leader = c.wait_leader(Duration::from_secs(20)).await;
        let follower = (1..=3).find(|id| *id != leader).unwrap();

        let r = c
            .node(follower)
            .propose_inputs(vec![meter_read(1, 100)])
            .await
            .expect("commits");
        assert_eq!(
            (r.trapped, r.handled),
            (1, 0),
            "the looping billing actor traps: {r:?}"
        );

        // The node keeps serving: balancing (a healthy actor) still handles telemetry.
        let r = c
            .node(leader)
            .propose_inputs(field_batch(1, 10, 5, leader).into_iter().take(1).collect())
            .await
            .expect("commits");
        assert_eq!((r.handled, r.trapped), (1, 0), "{r:?}");

        let (applied, hashes) = c.wait_converged(Duration::from_secs(30)).await;
        let distinct: std::collections::BTreeSet<_> = hashes.values().collect();
        assert_eq!(distinct.len(), 1, "hashes differ at {applied}: {hashes:?}");
        for n in c.nodes.values() {
            assert_eq!(
                n.status().trapped_total,
                1,
                "node {} records the trap",
                n.id()
            );
        }
        c.shutdown().await;
    });
}

#[test]
fn malformed_wasm_is_refused_with_a_clear_error() {
    let err = ActorHost::new(limits(), &[(ActorKind::Billing, b"\0asm garbage")]).unwrap_err();
    assert!(
        matches!(
            err,
            LoadError::Invalid {
                actor: "billing",
                ..
            }
        ),
        "{err}"
    );
    assert!(
        err.to_string()
            .starts_with("billing.wasm is not a valid WebAssembly module"),
        "{err}"
    );

    // Valid wasm that does not follow the ABI: named export missing.
    let no_handle = wat::parse_str(r#"(module (memory (export "memory") 1) (func (export "ghatta_abi_version") (result i32) i32.const 1))"#).unwrap();
    let err = ActorHost::new(limits(), &[(ActorKind::Balancing, &no_handle)]).unwrap_err();
    assert!(
        err.to_string().contains("does not export `ghatta_alloc`"),
        "{err}"
    );

    // Imports from outside the ABI (e.g. WASI clocks) are refused: no wall clock in an actor.
    let wasi = wat::parse_str(
        r#"(module (import "wasi_snapshot_preview1" "clock_time_get" (func (param i32 i64 i32) (result i32))) (memory (export "memory") 1))"#,
    )
    .unwrap();
    let err = ActorHost::new(limits(), &[(ActorKind::Balancing, &wasi)]).unwrap_err();
    assert!(
        err.to_string()
            .contains("wasi_snapshot_preview1::clock_time_get"),
        "{err}"
    );

    // The wrong ABI version.
    let v2 = LOOPING_ACTOR.replace("(result i32) i32.const 1)", "(result i32) i32.const 2)");
    let err = ActorHost::new(
        limits(),
        &[(ActorKind::Billing, &wat::parse_str(&v2).unwrap())],
    )
    .unwrap_err();
    assert!(err.to_string().contains("speaks ABI v2"), "{err}");
}

#[test]
fn embedded_actors_fit_the_64_kib_budget() {
    for (name, wasm) in [("balancing", BALANCING_WASM), ("billing", BILLING_WASM)] {
        assert!(
            wasm.len() <= 64 * 1024,
            "{name}.wasm is {} bytes",
            wasm.len()
        );
        assert!(wasm.starts_with(b"\0asm"), "{name}.wasm is not wasm");
    }
}
