//! Deployed actor modules applied on replicas side by side: cut-over at the deploy's index,
//! every refusal alike, migrations, rollbacks and a snapshot-installed replica, with equal
//! state hashes throughout.

use ghatta_actor_sdk as sdk;

use super::tests::{apply, entry, inputs, open, outbox};
use super::*;
use crate::actors::deploy::{ActorOp, CHUNK_BYTES_MAX, Manifest, OperatorKey};
use crate::raft::{Body, Entry, Receipt};

/// Log time of the first entry, Unix ms (any fixed day).
const T0: u64 = 1_780_000_000_000;

/// How a test module's `ghatta_migrate` behaves.
#[derive(Clone, Copy)]
enum Migrate {
    /// No such export.
    None,
    /// Writes `mig` = the version it migrates from, answers 0.
    Records,
    /// Writes `mig`, then traps.
    Traps,
    /// Writes `mig`, then answers 7.
    Refuses,
}

/// A minimal actor in the ABI: every delivery writes key `ran` = `marker` and is handled.
fn module(marker: u8, abi: i32, migrate: Migrate) -> Vec<u8> {
    let migrate = match migrate {
        Migrate::None => String::new(),
        Migrate::Records | Migrate::Traps | Migrate::Refuses => {
            let end = match migrate {
                Migrate::Traps => "unreachable",
                Migrate::Refuses => "i32.const 7",
                _ => "i32.const 0",
            };
            format!(
                r#"(func (export "ghatta_migrate") (param i32) (result i32)
                     (i32.store (i32.const 16) (local.get 0))
                     (call $set (i32.const 8) (i32.const 3) (i32.const 16) (i32.const 4))
                     {end})"#
            )
        }
    };
    let wat = format!(
        r#"(module
             (import "ghatta" "state_set" (func $set (param i32 i32 i32 i32)))
             (memory (export "memory") 1)
             (data (i32.const 0) "ran\{marker:02x}")
             (data (i32.const 8) "mig")
             (func (export "ghatta_abi_version") (result i32) i32.const {abi})
             (func (export "ghatta_alloc") (param i32) (result i32) i32.const 1024)
             (func (export "ghatta_handle") (param i32 i32) (result i32)
               (call $set (i32.const 0) (i32.const 3) (i32.const 3) (i32.const 1))
               i32.const 0)
             {migrate})"#
    );
    wat::parse_str(wat).expect("test module")
}

/// The chunk entries of `bytes` from `index` on, then the deploy of `manifest`.
fn upload(index: &mut u64, bytes: &[u8], manifest: Manifest) -> Vec<Entry> {
    let hash = *blake3::hash(bytes).as_bytes();
    let mut out = Vec::new();
    for (i, c) in bytes.chunks(CHUNK_BYTES_MAX).enumerate() {
        out.push(op(
            index,
            ActorOp::Chunk {
                hash,
                offset: (i * CHUNK_BYTES_MAX) as u32,
                bytes: c.to_vec(),
            },
        ));
    }
    out.push(op(index, ActorOp::Deploy(manifest)));
    out
}

fn op(index: &mut u64, op: ActorOp) -> Entry {
    *index += 1;
    entry(*index, T0 + *index * 1_000, Body::Actor(op))
}

fn tariff(index: &mut u64, version: u32) -> Entry {
    *index += 1;
    entry(
        *index,
        T0 + *index * 1_000,
        inputs(vec![sdk::Input::SetTariff(sdk::Tariff {
            id: 1,
            version,
            kind: sdk::TariffKind::PerKwh {
                rate_paisa_per_kwh: 1_500,
            },
        })]),
    )
}

/// Billing's value under `key` (without the actor's prefix byte).
fn billing_value(sm: &StateMachine, key: &[u8]) -> Option<Vec<u8>> {
    let mut full = vec![ActorKind::Billing.prefix()];
    full.extend_from_slice(key);
    sm.actor_state().map.get(&full).cloned()
}

/// Applies `entries` to every replica; asserts their receipts and state hashes agree.
fn apply_all(replicas: &[&StateMachine], entries: &[Entry]) -> Vec<Receipt> {
    let first = apply(replicas[0], entries);
    for sm in &replicas[1..] {
        assert_eq!(apply(sm, entries), first, "replicas answered differently");
    }
    let hash = replicas[0].status().borrow().state_hash;
    for sm in &replicas[1..] {
        assert_eq!(sm.status().borrow().state_hash, hash, "state hashes parted");
    }
    first
}

fn deploy_events(sm: &StateMachine) -> Vec<String> {
    outbox(sm)
        .into_iter()
        .filter_map(|(_, _, o)| match o {
            sdk::Output::Alarm(a) if a.code == sdk::AlarmCode::ActorDeploy => Some(a.text),
            _ => None,
        })
        .collect()
}

fn seeded(key: &OperatorKey, index: &mut u64) -> Entry {
    op(index, ActorOp::SeedSigners(vec![key.public()]))
}

#[test]
fn a_deploy_cuts_over_at_its_own_index_on_every_replica() {
    let ((_a, a), (_b, b)) = (open(), open());
    let key = OperatorKey::generate().unwrap();
    let mut i = 0;
    let mut entries = vec![seeded(&key, &mut i), tariff(&mut i, 1)];
    let v1 = module(1, 1, Migrate::None);
    entries.extend(upload(&mut i, &v1, key.sign("billing", 1, &v1)));
    let deploy_index = i;
    let r = apply_all(&[&a, &b], &entries);
    let last = r.last().unwrap();
    assert_eq!((last.handled, last.rejected), (1, 0), "{last:?}");
    // Before the cut-over the compiled-in billing ran: no `ran` key.
    assert_eq!(billing_value(&a, b"ran"), None);
    let reg = modules::registry(&a.actor_state(), ActorKind::Billing);
    assert_eq!(reg.active, Some(1));
    assert_eq!(reg.active_since_index, deploy_index);
    apply_all(&[&a, &b], &[tariff(&mut i, 2)]);
    assert_eq!(
        billing_value(&a, b"ran"),
        Some(vec![1]),
        "v1 runs after its index"
    );
    assert_eq!(billing_value(&b, b"ran"), Some(vec![1]));
    assert!(
        deploy_events(&a)
            .iter()
            .any(|t| t.contains("billing v1") && t.contains(&format!("index {deploy_index}")))
    );
    // Staged chunks are gone once deployed: only the module's own copy remains.
    assert!(
        !a.actor_state()
            .map
            .keys()
            .any(|k| k.starts_with(b"\xffhost/actor-chunk/"))
    );
}

#[test]
fn refused_modules_are_refused_alike_with_the_reason_in_the_event_log() {
    let ((_a, a), (_b, b)) = (open(), open());
    let key = OperatorKey::generate().unwrap();
    let stranger = OperatorKey::generate().unwrap();
    let mut i = 0;
    apply_all(&[&a, &b], &[seeded(&key, &mut i), tariff(&mut i, 1)]);
    let good = module(1, 1, Migrate::None);
    let abi2 = module(1, 2, Migrate::None);
    let junk = b"\0asm\x01\0\0\0 this is no module".to_vec();
    let oversized = {
        // Valid wasm past the budget: a big data segment.
        let wat = format!(
            r#"(module (memory (export "memory") 2) (data (i32.const 0) "{}"))"#,
            "x".repeat(70_000)
        );
        wat::parse_str(wat).unwrap()
    };
    let mut forged = key.sign("billing", 1, &good);
    forged.signature[0] ^= 1;
    let cases: Vec<(&str, Vec<u8>, Manifest)> = vec![
        (
            "not in the replicated actor signer list",
            good.clone(),
            stranger.sign("billing", 1, &good),
        ),
        ("signature does not verify", good.clone(), forged),
        (
            "over the 65536-byte budget",
            oversized.clone(),
            key.sign("billing", 1, &oversized),
        ),
        (
            "ABI v1: it speaks ABI v2",
            abi2.clone(),
            key.sign("billing", 1, &abi2),
        ),
        (
            "not a valid WebAssembly module",
            junk.clone(),
            key.sign("billing", 1, &junk),
        ),
        (
            "no actor is named `tariffs`",
            good.clone(),
            key.sign("tariffs", 1, &good),
        ),
    ];
    let before = a.status().borrow().state_hash;
    for (why, bytes, manifest) in cases {
        let r = apply_all(&[&a, &b], &upload(&mut i, &bytes, manifest));
        let last = r.last().unwrap();
        assert_eq!(last.rejected, 1, "{why}: {last:?}");
        assert!(
            last.refusals[0].text.contains(why),
            "{why}: {}",
            last.refusals[0].text
        );
        assert!(
            deploy_events(&a).last().unwrap().contains(why),
            "the event log says why"
        );
        assert_eq!(
            modules::registry(&a.actor_state(), ActorKind::Billing).active,
            None
        );
    }
    assert_ne!(a.status().borrow().state_hash, before);
    // The compiled-in billing still runs; the refused uploads left no staged bytes.
    apply_all(&[&a, &b], &[tariff(&mut i, 2)]);
    assert_eq!(billing_value(&a, b"ran"), None);
    assert!(!a.actor_state().map.keys().any(
        |k| k.starts_with(b"\xffhost/actor-chunk/") || k.starts_with(b"\xffhost/actor-module/")
    ));
    // A version not above the highest is refused too.
    apply_all(
        &[&a, &b],
        &upload(&mut i, &good, key.sign("billing", 2, &good)),
    );
    let r = apply_all(
        &[&a, &b],
        &upload(&mut i, &good, key.sign("billing", 2, &good)),
    );
    assert!(r.last().unwrap().refusals[0].text.contains("not above v2"));
}

#[test]
fn an_unseeded_signer_list_refuses_every_deploy_and_the_first_seed_wins() {
    let ((_a, a), (_b, b)) = (open(), open());
    let key = OperatorKey::generate().unwrap();
    let other = OperatorKey::generate().unwrap();
    let good = module(1, 1, Migrate::None);
    let mut i = 0;
    let r = apply_all(
        &[&a, &b],
        &upload(&mut i, &good, key.sign("billing", 1, &good)),
    );
    assert!(r.last().unwrap().refusals[0].text.contains("(0 key(s))"));
    // Two nodes with different actor_signers both seed: the first committed wins everywhere.
    apply_all(&[&a, &b], &[seeded(&other, &mut i), seeded(&key, &mut i)]);
    let r = apply_all(
        &[&a, &b],
        &upload(&mut i, &good, key.sign("billing", 1, &good)),
    );
    assert_eq!(r.last().unwrap().rejected, 1);
    let r = apply_all(
        &[&a, &b],
        &upload(&mut i, &good, other.sign("billing", 1, &good)),
    );
    assert_eq!(r.last().unwrap().rejected, 0, "{:?}", r.last());
}

#[test]
fn a_migration_runs_once_at_cut_over_and_a_trapping_one_keeps_the_old_version() {
    let ((_a, a), (_b, b)) = (open(), open());
    let key = OperatorKey::generate().unwrap();
    let mut i = 0;
    let v1 = module(1, 1, Migrate::Records);
    let mut entries = vec![seeded(&key, &mut i)];
    entries.extend(upload(&mut i, &v1, key.sign("billing", 1, &v1)));
    apply_all(&[&a, &b], &entries);
    assert_eq!(billing_value(&a, b"mig"), Some(0u32.to_le_bytes().to_vec()));
    for (bad, why) in [
        (Migrate::Traps, "trapped (Wasm)"),
        (Migrate::Refuses, "answered 7"),
    ] {
        let v2 = module(2, 1, bad);
        let r = apply_all(&[&a, &b], &upload(&mut i, &v2, key.sign("billing", 2, &v2)));
        let text = &r.last().unwrap().refusals[0].text;
        assert!(
            text.contains(why) && text.contains("v1 stays active"),
            "{text}"
        );
        // Nothing the failed migration wrote is kept.
        assert_eq!(billing_value(&a, b"mig"), Some(0u32.to_le_bytes().to_vec()));
        assert_eq!(
            modules::registry(&a.actor_state(), ActorKind::Billing).active,
            Some(1)
        );
    }
    apply_all(&[&a, &b], &[tariff(&mut i, 1)]);
    assert_eq!(billing_value(&a, b"ran"), Some(vec![1]), "v1 still runs");
    // A version above the refused ones migrates from v1.
    let v3 = module(3, 1, Migrate::Records);
    apply_all(&[&a, &b], &upload(&mut i, &v3, key.sign("billing", 3, &v3)));
    assert_eq!(billing_value(&a, b"mig"), Some(1u32.to_le_bytes().to_vec()));
}

#[test]
fn a_rollback_reactivates_the_previous_version_then_the_compiled_in_one() {
    let ((_a, a), (_b, b)) = (open(), open());
    let key = OperatorKey::generate().unwrap();
    let mut i = 0;
    let (v1, v2) = (module(1, 1, Migrate::None), module(2, 1, Migrate::Records));
    let mut entries = vec![seeded(&key, &mut i)];
    entries.extend(upload(&mut i, &v1, key.sign("billing", 1, &v1)));
    entries.extend(upload(&mut i, &v2, key.sign("billing", 2, &v2)));
    entries.push(tariff(&mut i, 1));
    apply_all(&[&a, &b], &entries);
    assert_eq!(billing_value(&a, b"ran"), Some(vec![2]));
    let rollback = |i: &mut u64| {
        op(
            i,
            ActorOp::Rollback {
                name: "billing".into(),
            },
        )
    };
    let r = apply_all(&[&a, &b], &[rollback(&mut i), tariff(&mut i, 2)]);
    assert_eq!(r[0].rejected, 0, "{:?}", r[0]);
    assert_eq!(billing_value(&a, b"ran"), Some(vec![1]), "v1 runs again");
    let reg = modules::registry(&a.actor_state(), ActorKind::Billing);
    assert_eq!(
        (reg.active, reg.highest, reg.versions.len()),
        (Some(1), 2, 2)
    );
    // Back to the compiled-in module: billing's own state works again (tariff v3 taken).
    let r = apply_all(&[&a, &b], &[rollback(&mut i), tariff(&mut i, 3)]);
    assert_eq!(
        (r[0].rejected, r[1].handled, r[1].rejected),
        (0, 1, 0),
        "{r:?}"
    );
    let r = apply_all(&[&a, &b], &[rollback(&mut i)]);
    assert!(r[0].refusals[0].text.contains("nothing to go back to"));
    // A new deploy must still be above v2.
    let r = apply_all(&[&a, &b], &upload(&mut i, &v2, key.sign("billing", 2, &v2)));
    assert!(r.last().unwrap().refusals[0].text.contains("not above v2"));
}

#[test]
fn a_replica_installing_a_snapshot_runs_the_deployed_module_with_the_same_hash() {
    let ((_a, a), (_c, c)) = (open(), open());
    let key = OperatorKey::generate().unwrap();
    let mut i = 0;
    let v1 = module(1, 1, Migrate::None);
    let mut entries = vec![seeded(&key, &mut i), tariff(&mut i, 1)];
    entries.extend(upload(&mut i, &v1, key.sign("billing", 1, &v1)));
    apply(&a, &entries);
    let built = {
        let data = a.lock();
        snapshot::build(&a.db, &data, None).expect("snapshot")
    };
    {
        let mut data = c.lock();
        snapshot::install(&c.db, &mut data, &built.meta, &built.snapshot, None).expect("install");
        c.publish(&data);
    }
    assert_eq!(
        c.status().borrow().state_hash,
        a.status().borrow().state_hash
    );
    apply_all(&[&a, &c], &[tariff(&mut i, 2)]);
    assert_eq!(billing_value(&c, b"ran"), Some(vec![1]));
    assert_eq!(
        modules::registry(&c.actor_state(), ActorKind::Billing),
        modules::registry(&a.actor_state(), ActorKind::Billing)
    );
}

#[test]
fn staged_uploads_are_bounded_and_the_oldest_is_evicted() {
    let (_a, a) = open();
    let mut i = 0;
    let chunk = |i: &mut u64, tag: u8, offset: u32| {
        op(
            i,
            ActorOp::Chunk {
                hash: [tag; 32],
                offset,
                bytes: vec![tag; CHUNK_BYTES_MAX],
            },
        )
    };
    let mut entries = Vec::new();
    for tag in 1..=3u8 {
        for k in 0..4 {
            entries.push(chunk(&mut i, tag, k * CHUNK_BYTES_MAX as u32));
        }
    }
    // Past the module budget, and oversized, chunks are dropped.
    entries.push(chunk(
        &mut i,
        3,
        crate::actors::deploy::MODULE_BYTES_MAX as u32,
    ));
    entries.push(op(
        &mut i,
        ActorOp::Chunk {
            hash: [3; 32],
            offset: 0,
            bytes: vec![0; CHUNK_BYTES_MAX + 1],
        },
    ));
    apply(&a, &entries);
    let staged: Vec<u8> = a
        .actor_state()
        .map
        .keys()
        .filter(|k| k.starts_with(b"\xffhost/actor-chunk/"))
        .map(|k| k[b"\xffhost/actor-chunk/".len()])
        .collect();
    assert_eq!(staged, vec![2, 2, 2, 2, 3, 3, 3, 3]);
}

#[test]
fn demand_response_is_refused_until_deployed_then_starts_a_load_on_spare_generation() {
    let ((_a, a), (_b, b)) = (open(), open());
    let key = OperatorKey::generate().unwrap();
    let dr = std::fs::read(crate::actors::embedded::DEMAND_RESPONSE_WASM_PATH)
        .expect("build.rs built demand-response.wasm");
    let mill = |i: &mut u64| {
        *i += 1;
        entry(
            *i,
            T0 + *i * 1_000,
            inputs(vec![sdk::Input::DeferrableLoad(sdk::LoadRequest {
                load: 1,
                node: sdk::NodeId(2),
                feeder: 9,
                load_w: 5_000,
                run_ms: 3_600_000,
            })]),
        )
    };
    let report = |i: &mut u64, ballast_w: u32| {
        *i += 1;
        entry(
            *i,
            T0 + *i * 1_000,
            inputs(vec![sdk::Input::Telemetry(sdk::Telemetry {
                node: sdk::NodeId(1),
                frequency_mhz: 50_000,
                voltage_dv: 2_300,
                generation_w: 30_000,
                ballast_w,
                ballast_capacity_w: 30_000,
                feeders: Vec::new(),
            })]),
        )
    };
    let mut i = 0;
    let r = apply_all(&[&a, &b], &[seeded(&key, &mut i), mill(&mut i)]);
    assert!(
        r[1].refusals[0]
            .text
            .contains("demand-response actor is not deployed"),
        "{:?}",
        r[1]
    );
    let r = apply_all(
        &[&a, &b],
        &upload(&mut i, &dr, key.sign("demand-response", 1, &dr)),
    );
    assert_eq!(r.last().unwrap().rejected, 0, "{:?}", r.last());
    let r = apply_all(&[&a, &b], &[report(&mut i, 2_000), mill(&mut i)]);
    assert_eq!(
        (r[0].handled, r[1].handled),
        (1, 1),
        "the fan-out is not counted: {r:?}"
    );
    let relays = |sm: &StateMachine| -> Vec<(sdk::RelayId, bool)> {
        outbox(sm)
            .into_iter()
            .filter_map(|(_, rec, o)| match o {
                sdk::Output::Relay(c) if rec.actor == ActorKind::DemandResponse => {
                    Some((c.relay, c.closed))
                }
                _ => None,
            })
            .collect()
    };
    assert!(relays(&a).is_empty(), "2 kW of ballast does not cover 5 kW");
    apply_all(&[&a, &b], &[report(&mut i, 9_000)]);
    assert_eq!(relays(&a), [(sdk::RelayId::Feeder(9), true)]);
    // Its stop timer is durable, replicated state.
    assert_eq!(a.status().borrow().timers, b.status().borrow().timers);
}

#[test]
fn a_deploy_at_a_log_time_cuts_over_at_the_first_entry_reaching_it() {
    let ((_a, a), (_b, b)) = (open(), open());
    let key = OperatorKey::generate().unwrap();
    let mut i = 0;
    let v1 = module(1, 1, Migrate::Records);
    let mut entries = vec![seeded(&key, &mut i)];
    let mut up = upload(&mut i, &v1, key.sign("billing", 1, &v1));
    let at_ms = T0 + (i + 3) * 1_000;
    // The same chunks, with the deploy scheduled three entries later.
    up.pop();
    up.push(entry(
        i,
        T0 + i * 1_000,
        Body::Actor(ActorOp::DeployAt {
            manifest: key.sign("billing", 1, &v1),
            at_ms,
        }),
    ));
    entries.extend(up);
    let r = apply_all(&[&a, &b], &entries);
    assert_eq!(r.last().unwrap().rejected, 0, "{:?}", r.last());
    let reg = modules::registry(&a.actor_state(), ActorKind::Billing);
    assert_eq!(
        (reg.active, reg.pending.as_ref().map(|p| p.at_ms)),
        (None, Some(at_ms))
    );
    // A second deploy while one is scheduled is refused.
    let v2 = module(2, 1, Migrate::None);
    let r = apply_all(&[&a, &b], &upload(&mut i, &v2, key.sign("billing", 2, &v2)));
    assert!(r.last().unwrap().refusals[0].text.contains("is scheduled"));
    // Entries before the time run the compiled-in billing; the first at the time runs v1,
    // after its migration.
    let mut before = Vec::new();
    while T0 + (i + 1) * 1_000 < at_ms {
        let version = i as u32;
        before.push(tariff(&mut i, version));
    }
    apply_all(&[&a, &b], &before);
    assert_eq!(billing_value(&a, b"ran"), None);
    assert_eq!(billing_value(&a, b"mig"), None);
    let r = apply_all(&[&a, &b], &[tariff(&mut i, 90)]);
    assert_eq!(billing_value(&a, b"ran"), Some(vec![1]), "{r:?}");
    assert_eq!(billing_value(&a, b"mig"), Some(0u32.to_le_bytes().to_vec()));
    let reg = modules::registry(&a.actor_state(), ActorKind::Billing);
    assert_eq!(
        (reg.active, reg.active_since_index, reg.pending),
        (Some(1), i, None)
    );
    assert!(
        deploy_events(&a)
            .iter()
            .any(|t| t.contains("scheduled for log time"))
    );
}

#[test]
fn a_rollback_cancels_a_scheduled_cut_over() {
    let ((_a, a), (_b, b)) = (open(), open());
    let key = OperatorKey::generate().unwrap();
    let mut i = 0;
    let v1 = module(1, 1, Migrate::None);
    let mut entries = vec![seeded(&key, &mut i)];
    let mut up = upload(&mut i, &v1, key.sign("billing", 1, &v1));
    up.pop();
    up.push(entry(
        i,
        T0 + i * 1_000,
        Body::Actor(ActorOp::DeployAt {
            manifest: key.sign("billing", 1, &v1),
            at_ms: T0 + 3_600_000,
        }),
    ));
    entries.extend(up);
    entries.push(op(
        &mut i,
        ActorOp::Rollback {
            name: "billing".into(),
        },
    ));
    let r = apply_all(&[&a, &b], &entries);
    assert!(r.last().unwrap().refusals.is_empty(), "{:?}", r.last());
    let late = entry(i + 1, T0 + 7_200_000, inputs(vec![sdk::Input::Noop]));
    apply_all(&[&a, &b], &[late]);
    let reg = modules::registry(&a.actor_state(), ActorKind::Billing);
    assert_eq!((reg.active, reg.pending), (None, None));
    assert!(
        !a.actor_state()
            .map
            .keys()
            .any(|k| k.starts_with(b"\xffhost/actor-module/")
                || k.starts_with(b"\xffhost/actor-pending"))
    );
}
