//! The state machine applying crafted entries at chosen log times: hourly energy aggregates
//! and outbox pruning, identical on two replicas.

use std::sync::Arc;

use ghatta_actor_sdk as sdk;
use openraft::entry::RaftEntry;
use openraft::vote::RaftLeaderId;

use super::energy::HOUR_MS;
use super::prune::OUTBOX_RETENTION_MS;
use super::*;
use crate::actors::ActorLimits;
use crate::raft::{Body, Entry, Proposal, Receipt};

const CUSTOMERS: u32 = 5;
const MINUTE_MS: u64 = 60_000;

/// The local day in Nepal (UTC+5:45) of a log time.
fn nepal_day(t_ms: u64) -> u64 {
    (t_ms + 345 * MINUTE_MS) / (24 * HOUR_MS)
}

pub(super) fn entry(index: u64, time_ms: u64, body: Body) -> Entry {
    let leader = openraft::alias::LeaderIdOf::<TypeConfig>::new(1, 1);
    Entry::new_normal(
        LogId::new(leader.to_committed(), index),
        Proposal {
            origin: 1,
            seq: 0,
            time_ms,
            // The members agree with the leader's clock: log time follows `time_ms`.
            clock: crate::raft::LeaderClock {
                mono_ms: time_ms,
                quorum_ms: Some(time_ms),
            },
            body,
        },
    )
}

/// A committed WAN cursor: stream `stream` acknowledged below `upto`.
fn outbox_ack(index: u64, time_ms: u64, stream: u32, upto: u64) -> Entry {
    entry(
        index,
        time_ms,
        Body::OutboxAck {
            stream,
            upto_seq: upto,
        },
    )
}

pub(super) fn inputs(v: Vec<sdk::Input>) -> Body {
    Body::Inputs(v.iter().map(sdk::codec::encode).collect())
}

pub(super) fn open() -> (tempfile::TempDir, StateMachine) {
    let dir = tempfile::tempdir().expect("tempdir");
    let stores = crate::storage::open_dir(dir.path()).expect("stores");
    let host = Arc::new(ActorHost::with_embedded(ActorLimits::default()).expect("actors"));
    let sm = StateMachine::open(stores.state.clone(), host).expect("state machine");
    (dir, sm)
}

/// What `StateMachine::apply` does: apply the batch, then publish the status (which
/// `outbox_from` reads to skip a reader that is caught up).
pub(super) fn apply(sm: &StateMachine, entries: &[Entry]) -> Vec<Receipt> {
    let mut data = sm.lock();
    let r =
        apply::apply_batch(&sm.db, &sm.host, &sm.hooks, &mut data, entries.iter()).expect("apply");
    sm.publish(&data);
    r
}

/// A prepaid 250 W customer of tariff 1 on node 1 with `credit_mpaisa`.
pub(crate) fn prepaid(id: u32, credit_mpaisa: i64) -> sdk::Input {
    sdk::Input::UpsertCustomer(sdk::CustomerSpec {
        id: sdk::CustomerId(id),
        node: sdk::NodeId(1),
        mode: sdk::AccountMode::Prepaid,
        tariff: 1,
        connection_w: 250,
        opening_credit_mpaisa: credit_mpaisa,
        token: None,
    })
}

/// A fresh state machine that applied each of `batches` as one entry, the first at log time
/// `t0` and each next one 10 minutes later (other layers' tests: the admin API's readers).
/// Tariff 1 (NPR 15/kWh) is set first, as customers need theirs.
pub(crate) fn applied(t0: u64, batches: Vec<Vec<sdk::Input>>) -> (tempfile::TempDir, StateMachine) {
    let (dir, sm) = open();
    let tariff = sdk::Input::SetTariff(sdk::Tariff {
        id: 1,
        version: 1,
        kind: sdk::TariffKind::PerKwh {
            rate_paisa_per_kwh: 1_500,
        },
    });
    let entries: Vec<Entry> = std::iter::once(vec![tariff])
        .chain(batches)
        .enumerate()
        .map(|(i, v)| entry(i as u64 + 1, t0 + i as u64 * 600_000, inputs(v)))
        .collect();
    apply(&sm, &entries);
    (dir, sm)
}

fn snapshot_bytes(sm: &StateMachine) -> usize {
    let data = sm.lock();
    snapshot::build(&sm.db, &data, None)
        .expect("snapshot")
        .snapshot
        .len() as usize
}

/// A snapshot file's bytes, whole (tests only: nodes read them a chunk at a time).
pub(super) fn bytes_of(f: &SnapshotFile) -> Vec<u8> {
    let mut v = Vec::new();
    std::io::Read::read_to_end(&mut f.reader(), &mut v).expect("snapshot file reads");
    v
}

/// A test grid's set-up: tariff 1 (NPR 15/kWh), Nepal's offset, prepaid customers 1 to
/// `customers` on node 1 with ample credit.
pub(super) fn grid_setup(customers: u32) -> Vec<sdk::Input> {
    let mut setup = vec![
        sdk::Input::SetTariff(sdk::Tariff {
            id: 1,
            version: 1,
            kind: sdk::TariffKind::PerKwh {
                rate_paisa_per_kwh: 1_500,
            },
        }),
        sdk::Input::SetBillingConfig(sdk::BillingConfig {
            utc_offset_min: 345,
            friendly_start_min: 0,
            friendly_end_min: 0,
            disconnect_at_mpaisa: 0,
            plausible_margin_pct: sdk::PLAUSIBLE_MARGIN_PCT_DEFAULT,
        }),
    ];
    setup.extend((1..=customers).map(|id| prepaid(id, 50_000_000_000)));
    setup
}

/// One batch of the test grid: node 1's telemetry (30 kW generated, 25 kW on feeder 1) and a
/// read of `total_wh(c)` for each customer c.
pub(super) fn grid_batch(customers: u32, total_wh: impl Fn(u32) -> u64) -> Vec<sdk::Input> {
    let mut v = vec![sdk::Input::Telemetry(sdk::Telemetry {
        node: sdk::NodeId(1),
        frequency_mhz: 50_000,
        voltage_dv: 2_300,
        generation_w: 30_000,
        ballast_w: 0,
        ballast_capacity_w: 30_000,
        feeders: vec![sdk::FeederLoad {
            feeder: 1,
            load_w: 25_000,
            closed: true,
        }],
    })];
    for c in 1..=customers {
        v.push(sdk::Input::MeterRead(sdk::MeterRead {
            customer: sdk::CustomerId(c),
            total_wh: total_wh(c),
            read_at_ms: 0,
        }));
    }
    v
}

/// 40 hours of a grid: setup, then every 10 minutes (the last 10 minutes before hour 40) one
/// telemetry sample from node 1 (30 kW generated, 25 kW on feeder 1) and a meter read per
/// customer; then one entry 2 hours later.
fn grid_entries(t0: u64) -> Vec<Entry> {
    let mut entries = vec![entry(1, t0, inputs(grid_setup(CUSTOMERS)))];
    let step = 10 * 60_000;
    for k in 1..(40 * HOUR_MS / step) {
        let v = grid_batch(CUSTOMERS, |c| k * 100 + u64::from(c));
        entries.push(entry(entries.len() as u64 + 1, t0 + k * step, inputs(v)));
    }
    entries.push(entry(
        entries.len() as u64 + 1,
        t0 + 42 * HOUR_MS,
        inputs(vec![sdk::Input::Noop]),
    ));
    entries
}

pub(super) fn outbox(sm: &StateMachine) -> Vec<(u64, OutboxRecord, sdk::Output)> {
    sm.outbox_from(0, usize::MAX)
        .expect("outbox")
        .into_iter()
        .map(|(s, r)| {
            let o = sdk::codec::decode(&r.output).expect("output decodes");
            (s, r, o)
        })
        .collect()
}

#[test]
fn hourly_energy_closes_by_log_time_sums_to_the_ledger_and_matches_across_replicas() {
    // A local hour's start in Nepal (UTC+5:45, the grid's committed offset): 15 past UTC.
    let t0 = 480_000 * HOUR_MS + 15 * MINUTE_MS;
    let entries = grid_entries(t0);
    let (_d1, a) = open();
    let (_d2, b) = open();
    apply(&a, &entries);
    // The other replica gets the same entries in other batch sizes.
    for chunk in entries.chunks(7) {
        apply(&b, chunk);
    }
    assert_eq!(a.lock().hash, b.lock().hash, "replicas diverged");
    let out = outbox(&a);
    let out_b = outbox(&b);
    assert_eq!(
        out.iter()
            .map(|(s, r, _)| (*s, r.clone()))
            .collect::<Vec<_>>(),
        out_b
            .iter()
            .map(|(s, r, _)| (*s, r.clone()))
            .collect::<Vec<_>>()
    );

    let mut billed = BTreeMap::new();
    let mut hourly = BTreeMap::new();
    // Per local day (Nepal): the ledger's charges and the customers' hours.
    let mut billed_day = BTreeMap::new();
    let mut hourly_day = BTreeMap::new();
    let mut plant_hours = Vec::new();
    let mut feeder_hours = Vec::new();
    for (_, rec, o) in &out {
        match o {
            sdk::Output::Ledger(l) => {
                if let Some((energy_wh, _, _)) = l.kind.charge() {
                    *billed.entry(l.customer.0).or_insert(0u64) += energy_wh;
                    *billed_day.entry(nepal_day(l.at_ms)).or_insert(0u64) += energy_wh;
                }
            }
            sdk::Output::EnergyLocal {
                hour: h,
                utc_offset_min,
            } => {
                assert_eq!(*utc_offset_min, 345);
                assert_eq!(
                    (h.hour_start_ms + 345 * MINUTE_MS) % HOUR_MS,
                    0,
                    "a local hour"
                );
                assert!(
                    rec.time_ms >= h.hour_start_ms + HOUR_MS,
                    "closed after its hour"
                );
                match h.subject {
                    sdk::EnergySubject::Customer(c) => {
                        *hourly.entry(c.0).or_insert(0u64) += h.energy_wh;
                        *hourly_day.entry(nepal_day(h.hour_start_ms)).or_insert(0u64) +=
                            h.energy_wh;
                    }
                    sdk::EnergySubject::Plant(n) => {
                        assert_eq!(n.0, 1);
                        plant_hours.push(h.energy_wh)
                    }
                    sdk::EnergySubject::Feeder { node, feeder } => {
                        assert_eq!((node.0, feeder), (1, 1));
                        feeder_hours.push(h.energy_wh)
                    }
                }
            }
            sdk::Output::EnergyHour(h) => panic!("a UTC hour was written: {h:?}"),
            _ => {}
        }
    }
    assert!(
        billed.values().sum::<u64>() > 0,
        "the test must bill energy"
    );
    assert_eq!(
        hourly, billed,
        "customer hours add up to the ledger to the Wh"
    );
    // Issue 21: the 40 hours cross a local midnight (18:15 UTC); a local day's hours hold
    // exactly the energy charged in that local day (what the central sums per local day).
    assert_eq!(billed_day.len(), 2);
    assert_eq!(hourly_day, billed_day);
    // Six samples an hour (five in the first), each held 60 s: 6 min of 30 kW = 3 kWh, of
    // 25 kW = 2.5 kWh; the first hour's 2,083.3 Wh leaves 1/3 Wh to carry.
    let mut want_plant = vec![3_000; 40];
    want_plant[0] = 2_500;
    assert_eq!(plant_hours, want_plant);
    let mut want_feeder = vec![2_500; 40];
    want_feeder[0] = 2_083;
    assert_eq!(feeder_hours, want_feeder);
}

#[test]
fn acknowledged_records_older_than_the_retention_are_pruned_and_snapshots_shrink() {
    let t0 = 480_000 * HOUR_MS;
    let mut entries = grid_entries(t0);
    let (_d1, a) = open();
    let (_d2, b) = open();
    apply(&a, &entries);
    apply(&b, &entries);
    let before = outbox(&a);
    let end = a.lock().next_out_seq;
    let snap_before = snapshot_bytes(&a);
    let now = a.lock().log_time_ms;

    // Acks before the last stream's: nothing goes (every stream must have acknowledged).
    let mut index = entries.len() as u64;
    let mut ack = |stream: u32, upto: u64| {
        index += 1;
        outbox_ack(index, now, stream, upto)
    };
    let partial = vec![ack(0, end), ack(1, end)];
    apply(&a, &partial);
    assert_eq!(
        outbox(&a).len(),
        before.len(),
        "an unacked stream keeps everything"
    );
    let last = vec![ack(2, end)];
    apply(&a, &last);
    entries.extend(partial);
    entries.extend(last);
    apply(&b, &entries[entries.len() - 3..]);
    assert_eq!(
        a.lock().hash,
        b.lock().hash,
        "pruning diverged between replicas"
    );
    assert_eq!(outbox(&a).len(), outbox(&b).len());

    let after = outbox(&a);
    let horizon = now - OUTBOX_RETENTION_MS;
    let old_before = before
        .iter()
        .filter(|(_, r, _)| r.time_ms <= horizon)
        .count();
    let old_after = after
        .iter()
        .filter(|(_, r, _)| r.time_ms <= horizon)
        .count();
    assert!(
        old_before > 500,
        "the test must have old records: {old_before}"
    );
    assert!(
        old_after <= CUSTOMERS as usize,
        "{old_after} of {old_before} old records kept"
    );
    let first = a.lock().first_out_seq;
    for (seq, rec, o) in &after {
        if rec.time_ms <= horizon {
            // Only pinned records survive the retention: each customer's newest ledger line.
            assert!(*seq < first);
            let sdk::Output::Ledger(l) = o else {
                panic!("unpinned old record {seq} kept: {o:?}")
            };
            let newest = before
                .iter()
                .filter(|(_, _, x)| matches!(x, sdk::Output::Ledger(y) if y.customer == l.customer))
                .map(|(s, _, _)| *s)
                .max();
            assert_eq!(newest, Some(*seq));
        }
    }
    // Everything within the retention is still there.
    let kept_recent = before
        .iter()
        .filter(|(_, r, _)| r.time_ms > horizon)
        .count();
    assert_eq!(
        after.iter().filter(|(_, r, _)| r.time_ms > horizon).count(),
        kept_recent
    );
    // The snapshot lost at least the encoded bytes of every pruned record.
    let kept: std::collections::BTreeSet<u64> = after.iter().map(|(s, _, _)| *s).collect();
    let pruned_bytes: usize = before
        .iter()
        .filter(|(s, _, _)| !kept.contains(s))
        .map(|(_, r, _)| codec::encode(r).expect("encodes").len())
        .sum();
    let snap_after = snapshot_bytes(&a);
    assert!(
        snap_before - snap_after >= pruned_bytes,
        "snapshot {snap_before} -> {snap_after} bytes, {pruned_bytes} bytes of records pruned"
    );
}

/// What an applied batch stores is what a restart loads: the scalars reload to the bytes of
/// the owned `Scalars`, which the borrowed `ScalarsRef` of a snapshot encodes to; the
/// customer map, written only
/// in batches that change it, reloads equal (and a batch that does not change it leaves it).
#[test]
fn stored_scalars_and_customers_reload_as_applied() {
    let (_dir, sm) = open();
    let entries = grid_entries(1_767_225_600_000);
    apply(&sm, &entries[..1]);
    assert!(sm.lock().customers_stored);
    apply(&sm, &entries[1..40]);
    let reopen = || {
        let host = Arc::new(ActorHost::with_embedded(ActorLimits::default()).expect("actors"));
        StateMachine::open(sm.db.clone(), host).expect("reopen")
    };
    let check = |again: &StateMachine| {
        let (a, b) = (sm.lock(), again.lock());
        assert_eq!(a.customers.len(), CUSTOMERS as usize);
        assert_eq!(a.customers, b.customers);
        let owned = codec::encode(&apply::scalars_of(&a)).expect("encode");
        assert_eq!(
            owned,
            codec::encode(&apply::scalars_of(&b)).expect("encode")
        );
        assert_eq!(
            owned,
            codec::encode(&apply::scalars_ref(&a)).expect("encode")
        );
        // And to what a batch stored, in its three parts.
        drop((a, b));
        assert_stored_as_in_memory(&sm);
    };
    check(&reopen());
    // A new customer in a later batch reaches the store too.
    let upsert = inputs(vec![sdk::Input::UpsertCustomer(sdk::CustomerSpec {
        id: sdk::CustomerId(CUSTOMERS + 1),
        node: sdk::NodeId(1),
        mode: sdk::AccountMode::Prepaid,
        tariff: 1,
        connection_w: 250,
        opening_credit_mpaisa: 1_000,
        token: None,
    })]);
    let last = entries[39].log_id().index() + 1;
    apply(&sm, &[entry(last, 1_767_225_600_000 + 7 * HOUR_MS, upsert)]);
    let again = reopen();
    assert_eq!(again.lock().customers.len(), CUSTOMERS as usize + 1);
    assert_eq!(sm.lock().customers, again.lock().customers);
}

/// A snapshot written by hand (borrowed maps, the outbox's stored bytes) is the canonical
/// encoding of a `SnapshotImage`: it decodes, encodes back to the same bytes, carries every
/// outbox record, installs on another replica to the same state hash and outbox, and the
/// stored copy reads back as the same snapshot.
#[test]
fn a_snapshot_is_the_canonical_encoding_of_its_image_and_installs() {
    let (_d1, a) = open();
    apply(&a, &grid_entries(480_000 * HOUR_MS));
    let snap = {
        let data = a.lock();
        snapshot::build(&a.db, &data, None).expect("snapshot")
    };
    let bytes = bytes_of(&snap.snapshot);
    let image: SnapshotImage = codec::decode(&bytes).expect("decodes");
    assert_eq!(codec::encode(&image).expect("encodes"), bytes);
    let records = outbox(&a);
    assert!(records.len() > 100, "the grid filled the outbox");
    let stored = snapshot::current(&a.db).expect("read").expect("stored");
    assert_eq!(bytes_of(&stored.snapshot), bytes);
    assert_eq!(stored.meta, snap.meta);

    let (_d2, b) = open();
    {
        let mut data = b.lock();
        snapshot::install(&b.db, &mut data, &snap.meta, &snap.snapshot, None).expect("install");
        b.publish(&data);
    }
    assert_eq!(b.lock().hash, a.lock().hash);
    assert_eq!(b.lock().customers, a.lock().customers);
    assert_eq!(outbox(&b), records);
    // The install rewrote the scalars' tables whole: b's equal a's, and b's memory.
    let (sa, sb) = (stored_scalars(&a), stored_scalars(&b));
    assert!(!sb.1.is_empty(), "the grid pinned records");
    assert_eq!((&sa.1, &sa.2), (&sb.1, &sb.2));
    assert_stored_as_in_memory(&b);
    // Installed over a replica with other rows, none of them stay.
    let (_d3, c) = open();
    apply(&c, &grid_entries(470_000 * HOUR_MS)[..40]);
    {
        let txn = c.db.begin_write().expect("write");
        {
            let pin = codec::encode(&prune::Pin::Setpoint(999)).expect("encode");
            let mut t = txn.open_table(crate::storage::SM_PINS).expect("pins");
            t.insert(pin.as_slice(), 5).expect("insert");
            let mut t = txn
                .open_table(crate::storage::SM_ENERGY_CUSTOMERS)
                .expect("customers");
            t.insert(999, 5).expect("insert");
        }
        txn.commit().expect("commit");
    }
    {
        let mut data = c.lock();
        snapshot::install(&c.db, &mut data, &snap.meta, &snap.snapshot, None).expect("install");
    }
    assert_eq!(c.lock().hash, a.lock().hash);
    let sc = stored_scalars(&c);
    assert_eq!((&sa.1, &sa.2), (&sc.1, &sc.2));
    assert_stored_as_in_memory(&c);
}

/// The status's cached parts (next timer, disconnected customers) follow the state: after
/// every batch they equal a fresh walk over the timers and customers.
#[test]
fn the_cached_status_parts_match_a_fresh_walk() {
    let (_d, sm) = open();
    let entries = grid_entries(480_000 * HOUR_MS);
    for chunk in entries.chunks(7) {
        apply(&sm, chunk);
        let data = sm.lock();
        let cached = data.status();
        data.derived.set(None);
        assert_eq!(cached, data.status());
        assert_eq!(cached.customers, data.customers.len() as u64);
    }
}

/// What `state.redb` holds of the scalars: `sm_meta["scalars2"]`, the pins, the energy's
/// customers; and whether the old layout's key holds a value other than its marker.
fn stored_scalars(
    sm: &StateMachine,
) -> (Vec<u8>, BTreeMap<prune::Pin, u64>, BTreeMap<u32, u64>, bool) {
    let txn = sm.db.begin_read().expect("read");
    let meta = txn.open_table(SM_META).expect("sm_meta");
    let small = meta
        .get(meta_keys::SCALARS)
        .expect("get")
        .expect("stored")
        .value()
        .to_vec();
    // Whether the old layout's key holds anything but the marker for older binaries.
    let old = meta
        .get(meta_keys::SCALARS_OLD)
        .expect("get")
        .is_some_and(|v| v.value() != layout::OLD_KEY_TOMBSTONE);
    let pins = txn
        .open_table(crate::storage::SM_PINS)
        .expect("sm_pins")
        .iter()
        .expect("iter")
        .map(|i| {
            let (k, v) = i.expect("row");
            (codec::decode(k.value()).expect("a pin"), v.value())
        })
        .collect();
    let customers = txn
        .open_table(crate::storage::SM_ENERGY_CUSTOMERS)
        .expect("sm_energy_customers")
        .iter()
        .expect("iter")
        .map(|i| {
            let (k, v) = i.expect("row");
            (k.value(), v.value())
        })
        .collect();
    (small, pins, customers, old)
}

/// The stored scalars are exactly the in-memory ones: the small part encodes equal, and the
/// pins and the energy's customers tables hold the maps' entries, no more, no less.
fn assert_stored_as_in_memory(sm: &StateMachine) {
    let (small, pins, customers, old) = stored_scalars(sm);
    let data = sm.lock();
    let fresh = codec::encode(&layout::StoredRef {
        head: layout::head(&data),
        energy: data.energy.rest(),
    })
    .expect("encode");
    assert_eq!(small, fresh);
    assert_eq!(pins, *data.pins);
    assert_eq!(customers, *data.energy.customers());
    assert!(!old, "the old layout's key holds only the marker");
}

/// After every batch the stored pins and energy customers equal the in-memory maps (a
/// mutation that did not record its key would leave a stale or missing row): through 40 hours
/// of meter reads, ledger lines (pins and billed energy change), hour closes (the billed
/// energy empties) and batches that change neither; and a reopen loads the same state.
#[test]
fn the_stored_pins_and_energy_customers_equal_the_in_memory_maps_after_every_batch() {
    let (_d, sm) = open();
    let entries = grid_entries(480_000 * HOUR_MS);
    let (mut pins_changed, mut emptied, mut billed) = (0, 0, 0);
    let mut last: Option<(BTreeMap<prune::Pin, u64>, BTreeMap<u32, u64>)> = None;
    for (i, chunk) in entries.chunks(3).enumerate() {
        apply(&sm, chunk);
        assert_stored_as_in_memory(&sm);
        {
            let data = sm.lock();
            let now = ((*data.pins).clone(), data.energy.customers().clone());
            if let Some((p, c)) = &last {
                pins_changed += usize::from(*p != now.0);
                // An hour closed: an entry went, or started again from less.
                emptied += usize::from(c.iter().any(|(k, wh)| now.1.get(k) < Some(wh)));
                billed += usize::from(*c != now.1 && !now.1.is_empty());
            }
            last = Some(now);
        }
        if i % 10 == 0 {
            let again = StateMachine::open(sm.db.clone(), sm.host.clone()).expect("reopen");
            let (a, b) = (sm.lock(), again.lock());
            assert_eq!(a.hash, b.hash);
            assert_eq!(a.pins, b.pins);
            assert_eq!(a.energy, b.energy);
            assert_eq!(
                codec::encode(&apply::scalars_of(&a)).expect("encode"),
                codec::encode(&apply::scalars_of(&b)).expect("encode")
            );
        }
    }
    assert!(
        pins_changed > 10,
        "the pins changed in {pins_changed} batches"
    );
    assert!(billed > 10, "energy was billed in {billed} batches");
    assert!(emptied >= 30, "billed energy reset in {emptied} batches");
}

/// A database in the old layout (all the scalars as one `Scalars` under `sm_meta["scalars"]`)
/// opens to the same state, is converted (the old key gone, the tables filled), and applies
/// on to the hash of a replica that never changed layout.
#[test]
fn a_database_in_the_old_layout_is_converted_and_applies_on() {
    let entries = grid_entries(480_000 * HOUR_MS);
    let (_d1, a) = open();
    let (_d2, b) = open();
    let half = entries.len() / 2;
    apply(&a, &entries[..half]);
    apply(&b, &entries[..half]);
    // Write a's scalars as the old layout did.
    {
        let data = a.lock();
        assert!(!data.pins.is_empty() && !data.energy.customers().is_empty());
        let txn = a.db.begin_write().expect("write");
        {
            let mut meta = txn.open_table(SM_META).expect("sm_meta");
            let old = codec::encode(&apply::scalars_of(&data)).expect("encode");
            meta.insert(meta_keys::SCALARS_OLD, old.as_slice())
                .expect("insert");
            meta.remove(meta_keys::SCALARS).expect("remove");
            let mut t = txn.open_table(crate::storage::SM_PINS).expect("pins");
            t.retain(|_, _| false).expect("clear");
            let mut t = txn
                .open_table(crate::storage::SM_ENERGY_CUSTOMERS)
                .expect("customers");
            t.retain(|_, _| false).expect("clear");
        }
        txn.commit().expect("commit");
    }
    let migrated = StateMachine::open(a.db.clone(), a.host.clone()).expect("converts");
    {
        let (m, bd) = (migrated.lock(), b.lock());
        assert_eq!(m.hash, bd.hash);
        assert_eq!(m.pins, bd.pins);
        assert_eq!(m.energy, bd.energy);
    }
    assert_stored_as_in_memory(&migrated);
    apply(&migrated, &entries[half..]);
    apply(&b, &entries[half..]);
    assert_eq!(migrated.lock().hash, b.lock().hash);
    assert_stored_as_in_memory(&migrated);
    // A corrupt old-layout value is refused with what and where, not a panic.
    {
        let txn = a.db.begin_write().expect("write");
        {
            let mut meta = txn.open_table(SM_META).expect("sm_meta");
            meta.remove(meta_keys::SCALARS).expect("remove");
            meta.insert(meta_keys::SCALARS_OLD, [1u8, 2, 3].as_slice())
                .expect("insert");
        }
        txn.commit().expect("commit");
    }
    let err = StateMachine::open(a.db.clone(), a.host.clone()).expect_err("corrupt");
    assert!(err.to_string().contains("sm_meta.scalars"), "{err}");
}

/// Once a database is in the per-entry layout, the old layout's key holds bytes that an older
/// ghatta (which decodes a whole `Scalars` there) refuses, instead of finding nothing and
/// starting from empty scalars over full tables. The marker does not disturb this layout.
#[test]
fn the_old_layouts_key_turns_older_binaries_away() {
    let old_key = |sm: &StateMachine| {
        let txn = sm.db.begin_read().expect("read");
        let meta = txn.open_table(SM_META).expect("sm_meta");
        meta.get(meta_keys::SCALARS_OLD)
            .expect("get")
            .map(|v| v.value().to_vec())
    };
    let (_d, sm) = open();
    assert_eq!(
        old_key(&sm).as_deref(),
        Some(layout::OLD_KEY_TOMBSTONE),
        "marked when a new database opens"
    );
    assert!(
        codec::decode::<Scalars>(layout::OLD_KEY_TOMBSTONE).is_err(),
        "what an older binary reads there must not decode"
    );
    // Reopened before and after batches: no error, same state.
    let reopened = StateMachine::open(sm.db.clone(), sm.host.clone()).expect("reopen empty");
    assert!(reopened.lock().last_applied.is_none());
    apply(&sm, &grid_entries(480_000 * HOUR_MS)[..20]);
    let hash = sm.lock().hash;
    let reopened = StateMachine::open(sm.db.clone(), sm.host.clone()).expect("reopen");
    assert_eq!(reopened.lock().hash, hash);
    assert_eq!(
        old_key(&reopened).as_deref(),
        Some(layout::OLD_KEY_TOMBSTONE)
    );
}

/// A state over the codec's message limit (16 MiB) still snapshots, as `codec::encode` (which
/// checks no limit) did: refusing would stop the node's Raft core (a simulated day without a
/// central reaches it, ~17 MB of outbox after 19 hours). And it reads back, which every start
/// does (under 16 MiB a node with such a snapshot could not boot), and installs on a replica:
/// snapshots decode under `codec::SNAPSHOT_BYTES_MAX`.
#[test]
fn a_snapshot_over_the_message_limit_builds_reads_back_and_installs() {
    let (_d, sm) = open();
    apply(&sm, &grid_entries(480_000 * HOUR_MS)[..3]);
    let mut data = sm.lock();
    let big = vec![7u8; codec::MAX_ENCODED_BYTES / 2 + 1];
    data.actor_state.insert(b"big-1".to_vec(), big.clone());
    data.actor_state.insert(b"big-2".to_vec(), big);
    let snap = snapshot::build(&sm.db, &data, None).expect("snapshot builds");
    assert!(snap.snapshot.len() > codec::MAX_ENCODED_BYTES as u64);
    drop(data);
    // The node reads it back (as openraft does at every start) and a replica installs it.
    let stored = snapshot::current(&sm.db)
        .expect("a stored snapshot over 16 MiB reads back")
        .expect("stored");
    assert_eq!(stored.snapshot.len(), snap.snapshot.len());
    let (_d2, replica) = open();
    let mut rdata = replica.lock();
    snapshot::install(&replica.db, &mut rdata, &snap.meta, &snap.snapshot, None)
        .expect("a replica installs it");
    assert_eq!(
        rdata.actor_state.map.get(b"big-2".as_slice()).map(Vec::len),
        Some(codec::MAX_ENCODED_BYTES / 2 + 1)
    );
}

/// A WAN cursor past the end of the outbox (a forged `OutboxAck{u64::MAX}`, or a corrupt one)
/// changes nothing: no record is pruned that the central never got, and the real cursor that
/// follows still moves the upload on.
#[test]
fn an_outbox_ack_past_the_outbox_end_is_ignored() {
    let t0 = 480_000 * HOUR_MS;
    let entries = grid_entries(t0);
    let (_d, a) = open();
    apply(&a, &entries);
    let before = outbox(&a);
    let end = a.lock().next_out_seq;
    let now = a.lock().log_time_ms;
    let mut index = entries.len() as u64;
    let mut ack = |stream: u32, upto: u64| {
        index += 1;
        outbox_ack(index, now, stream, upto)
    };
    let forged: Vec<Entry> = (0..3).map(|s| ack(s, u64::MAX)).collect();
    apply(&a, &forged);
    assert!(
        a.lock().outbox_acks.values().all(|&c| c == 0),
        "{:?}",
        a.lock().outbox_acks
    );
    assert_eq!(
        outbox(&a).len(),
        before.len(),
        "a forged ack pruned records"
    );
    let real: Vec<Entry> = (0..3).map(|s| ack(s, end)).collect();
    apply(&a, &real);
    assert!(a.lock().outbox_acks.values().all(|&c| c == end));
    assert!(outbox(&a).len() < before.len(), "the real acks prune");
}

/// Issue 20 item 7: a leader whose wall clock runs 30 days fast leads for ten hours, from
/// 16:00 local past midnight, stamping entries through the real path (its wall clock, its
/// monotonic clock and, in the first run, its members' time; in the second no member has
/// reported) and firing ticks as its timer loop would (`StateMachine::log_time_for`). Before
/// the bound, log time jumped 30 days with the first entry: a week of flat fees (the billing
/// actor's catch-up cap) charged at once and every charge judged at the leader's hour.
#[test]
fn a_leader_30_days_fast_charges_no_burst_of_flat_fees_and_keeps_friendly_hours_true() {
    use crate::raft::LeaderClock;
    use crate::state::logtime::LOG_TIME_STEP_MS;

    const DAY_MS: u64 = 86_400_000;
    const FEE_PAISA: u32 = 1_000;
    const UTC_OFFSET_MIN: i32 = 345;
    // 2026-05-28 16:00 local (10:15 UTC).
    let t0 = 1_779_963_300_000;
    assert_eq!(((t0 / 60_000) as i64 + 345) % 1440, 16 * 60);
    let local_hour = |t: u64| (((t / 60_000) as i64 + i64::from(UTC_OFFSET_MIN)) % 1440) / 60;

    for members_report in [true, false] {
        let (_dir, sm) = open();
        // Term 1's leader (a true clock) set the grid up; term 2's leader is 30 days fast.
        let term = 2;
        let step = 10 * 60_000;
        let stamp = |true_ms: u64| {
            let wall = true_ms + if true_ms == t0 { 0 } else { 30 * DAY_MS };
            let clock = LeaderClock {
                mono_ms: true_ms - t0 + 5_000,
                quorum_ms: members_report.then_some(true_ms),
            };
            (wall, clock)
        };
        // Entry index -> the true time it was stamped at.
        let truth = std::cell::RefCell::new(std::collections::BTreeMap::new());
        let propose = |index: &mut u64, true_ms: u64, body: Body| {
            let (wall, clock) = stamp(true_ms);
            *index += 1;
            truth.borrow_mut().insert(*index, true_ms);
            let t = if true_ms == t0 { 1 } else { term };
            let leader = openraft::alias::LeaderIdOf::<TypeConfig>::new(t, 1);
            let e = Entry::new_normal(
                LogId::new(leader.to_committed(), *index),
                Proposal {
                    origin: 1,
                    seq: 0,
                    time_ms: wall,
                    clock,
                    body,
                },
            );
            apply(&sm, &[e]);
        };
        let mut index = 0;
        let setup = vec![
            sdk::Input::SetTariff(sdk::Tariff {
                id: 1,
                version: 1,
                kind: sdk::TariffKind::PerKwh {
                    rate_paisa_per_kwh: 1_500,
                },
            }),
            sdk::Input::SetTariff(sdk::Tariff {
                id: 2,
                version: 1,
                kind: sdk::TariffKind::Flat {
                    bands: vec![sdk::FlatBand {
                        up_to_w: 1_000,
                        daily_fee_paisa: FEE_PAISA,
                    }],
                },
            }),
            sdk::Input::SetBillingConfig(sdk::BillingConfig {
                utc_offset_min: UTC_OFFSET_MIN,
                friendly_start_min: 18 * 60,
                friendly_end_min: 6 * 60,
                disconnect_at_mpaisa: 0,
                plausible_margin_pct: sdk::PLAUSIBLE_MARGIN_PCT_DEFAULT,
            }),
            sdk::Input::UpsertCustomer(sdk::CustomerSpec {
                id: sdk::CustomerId(1),
                node: sdk::NodeId(1),
                mode: sdk::AccountMode::Prepaid,
                tariff: 1,
                connection_w: 250,
                opening_credit_mpaisa: 50_000_000,
                token: None,
            }),
            sdk::Input::UpsertCustomer(sdk::CustomerSpec {
                id: sdk::CustomerId(2),
                node: sdk::NodeId(1),
                mode: sdk::AccountMode::Prepaid,
                tariff: 2,
                connection_w: 250,
                opening_credit_mpaisa: 50_000_000,
                token: None,
            }),
        ];
        propose(&mut index, t0, inputs(setup));
        for k in 1..=(10 * 3_600_000 / step) {
            let true_ms = t0 + k * step;
            let read = sdk::Input::MeterRead(sdk::MeterRead {
                customer: sdk::CustomerId(1),
                total_wh: k * 100,
                read_at_ms: 0,
            });
            propose(&mut index, true_ms, inputs(vec![read]));
            // The leader's timer loop, once per entry here.
            let (wall, clock) = stamp(true_ms);
            for (id, _) in sm.due_timers(sm.log_time_for(term, wall, &clock), 16) {
                propose(&mut index, true_ms, Body::Tick { timer_id: id });
            }
            let log_time = sm.status().borrow().log_time_ms;
            assert!(
                log_time <= true_ms + LOG_TIME_STEP_MS,
                "log time {} s ahead of true time",
                (log_time - true_ms) / 1000
            );
        }

        let mut fees_mpaisa = 0;
        let mut judged = 0;
        let mut skew_alarms = 0;
        for (_, rec, out) in outbox(&sm) {
            match out {
                sdk::Output::Ledger(l) => match l.kind {
                    sdk::LedgerKind::Fee { amount_mpaisa } => fees_mpaisa += amount_mpaisa,
                    sdk::LedgerKind::Charge { friendly, .. }
                    | sdk::LedgerKind::ChargeRead { friendly, .. } => {
                        // Judged by the true local hour the entry was stamped at.
                        let true_ms = truth.borrow()[&rec.index];
                        let h = local_hour(true_ms);
                        // Within a step of the window's edge log time may be on either side
                        // of it (without members' time a new term's log time starts up to the
                        // gap before its first entry behind); the clock-step scenario's
                        // checker leaves the same margin.
                        let near_edge = [t0 + 2 * 3_600_000, t0 + 14 * 3_600_000]
                            .iter()
                            .any(|edge| true_ms.abs_diff(*edge) <= LOG_TIME_STEP_MS);
                        if !near_edge {
                            assert_eq!(friendly, !(6..18).contains(&h), "charge at true {h}h");
                            judged += 1;
                        }
                    }
                    _ => {}
                },
                sdk::Output::Alarm(a) if a.code == sdk::AlarmCode::ClockSkew => skew_alarms += 1,
                _ => {}
            }
        }
        // Ten hours from 16:00 cross one local midnight: one day's fee at most.
        assert!(
            fees_mpaisa <= i64::from(FEE_PAISA) * 1_000,
            "members_report {members_report}: {fees_mpaisa} mpaisa of flat fees in ten hours"
        );
        assert!(judged > 30, "{judged} charges judged");
        assert_eq!(
            skew_alarms, 1,
            "members_report {members_report}: one alarm per term"
        );
    }
}

#[test]
fn actor_rows_page_through_one_actors_keys_under_a_prefix() {
    let customers = (1..=7).map(|id| prepaid(id, 0)).collect();
    let (_dir, sm) = applied(1_700_000_000_000, vec![customers]);
    let keys = |after: Option<&[u8]>, limit| -> Vec<Vec<u8>> {
        sm.actor_rows(ActorKind::Billing, b"c/", after, limit)
            .into_iter()
            .map(|(k, _)| k)
            .collect()
    };
    let all = keys(None, 100);
    assert_eq!(all.len(), 7, "one row per account, nothing else: {all:?}");
    assert!(all.windows(2).all(|w| w[0] < w[1]), "in key order");
    let first = keys(None, 3);
    let rest = keys(Some(first.last().unwrap()), 100);
    assert_eq!(
        [first, rest].concat(),
        all,
        "pages join without a gap or a repeat"
    );
    assert!(
        sm.actor_rows(ActorKind::Balancing, b"c/", None, 100)
            .is_empty(),
        "another actor's keys are not billing's"
    );
}
