//! A snapshot several times larger than a small memory budget is built, sent a chunk at a
//! time into another replica's snapshot file, checked and installed, and the replica goes on
//! with the same state hash: measured as the peak resident memory (`VmHWM`) of a child
//! process that does only that, so no other test's memory is counted.

use std::sync::Arc;

use ghatta_actor_sdk as sdk;
use openraft::RaftSnapshotBuilder;
use openraft::storage::RaftStateMachine;

use super::tests::{applied, apply, entry, inputs, open};
use super::*;
use crate::storage::snapshot_file::FILE_CHUNK_BYTES;

/// Outbox bytes the snapshot carries: four times the budget (written in a debug build, so no
/// more than the point needs: ~40 s).
const OUTBOX_BYTES: usize = 64 * 1024 * 1024;
/// Most the child's peak resident memory may grow by while it builds, sends, checks and
/// installs the snapshot: the snapshot file's write buffer (1 MiB) and read chunk, both
/// databases' redb caches (`storage::REDB_CACHE_BYTES`, 4 MiB each) and the image's parts
/// before the outbox. Before snapshot files, a node held the image four to six times over.
const BUDGET_BYTES: u64 = 16 * 1024 * 1024;
/// Set in the child's environment: the child runs the work, the parent judges it.
const CHILD_ENV: &str = "GHATTA_SNAPSHOT_MEMORY_CHILD";

fn vm_hwm_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let line = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .expect("VmHWM in /proc/self/status");
    let kb: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .expect("VmHWM in kB");
    kb * 1024
}

/// Fills the outbox in `dir` with [`OUTBOX_BYTES`] of alarm records written straight into its
/// table (applying that many entries would take minutes), a write transaction per few MiB.
fn fill_outbox(dir: &std::path::Path) {
    let stores = crate::storage::open_dir(dir).expect("stores");
    let line = |seq: u64| OutboxRecord {
        index: 1,
        time_ms: 1_767_225_600_000,
        actor: ActorKind::Billing,
        output: sdk::codec::encode(&sdk::Output::Alarm(sdk::Alarm {
            code: sdk::AlarmCode::UnknownAccount,
            node: None,
            subject: seq as u32,
            value: seq as i64,
            text: "x".repeat(200),
        })),
    };
    let per_record = codec::encode(&line(0)).expect("encode").len();
    let records = (OUTBOX_BYTES / per_record) as u64;
    let mut seq = 1_000_000;
    while seq < 1_000_000 + records {
        let txn = stores.state.begin_write().expect("write");
        {
            let mut t = txn.open_table(OUTBOX).expect("outbox");
            for _ in 0..10_000 {
                let bytes = codec::encode(&line(seq)).expect("encode");
                t.insert(seq, bytes.as_slice()).expect("insert");
                seq += 1;
            }
        }
        txn.commit().expect("commit");
    }
}

fn reopen(dir: &std::path::Path) -> StateMachine {
    let stores = crate::storage::open_dir(dir).expect("stores");
    let host =
        Arc::new(ActorHost::with_embedded(crate::actors::ActorLimits::default()).expect("actors"));
    StateMachine::open(stores.state.clone(), host).expect("state machine")
}

/// The child's work; a no-op unless [`CHILD_ENV`] is set (the parent test below runs it).
#[test]
fn snapshot_memory_child() {
    if std::env::var_os(CHILD_ENV).is_none() {
        return;
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let t0 = 1_767_225_600_000;
    // Replica a: a little applied state, then the big outbox, then reopened over it.
    let (dir_a, a) = applied(t0, vec![vec![super::tests::prepaid(7, 5_000)]]);
    let next = a.lock().last_applied.map(|l| l.index()).unwrap_or(0) + 1;
    drop(a);
    fill_outbox(dir_a.path());
    let mut a = reopen(dir_a.path());
    let (dir_b, _) = open();
    let mut b = reopen(dir_b.path());
    let base = vm_hwm_bytes();

    let mut builder = rt.block_on(a.get_snapshot_builder());
    let snap = rt.block_on(builder.build_snapshot()).expect("build");
    assert!(
        snap.snapshot.len() > 3 * BUDGET_BYTES,
        "{}",
        snap.snapshot.len()
    );
    // Sent as the network does (its chunks are the files'): a chunk read, a chunk written into
    // b's file.
    let mut w = b.receive_snapshot().expect("receive");
    let mut offset = 0;
    while offset < snap.snapshot.len() {
        let chunk = snap
            .snapshot
            .read_at(offset, FILE_CHUNK_BYTES)
            .expect("read");
        std::io::Write::write_all(&mut w, &chunk).expect("write");
        offset += chunk.len() as u64;
    }
    let file = w.finish().expect("finish");
    check_image(&snap.meta, &file).expect("the image checks");
    rt.block_on(b.install_snapshot(&snap.meta, file))
        .expect("install");
    let grew = vm_hwm_bytes().saturating_sub(base);
    assert!(
        grew <= BUDGET_BYTES,
        "peak resident memory grew {grew} bytes for a {} byte snapshot (budget {BUDGET_BYTES})",
        snap.snapshot.len()
    );
    assert_eq!(a.lock().hash, b.lock().hash);
    assert_eq!(a.lock().outbox_records, b.lock().outbox_records);
    // Both go on alike.
    let more = [entry(
        next,
        t0 + 3_600_000,
        inputs(vec![sdk::Input::TopUp(sdk::TopUp {
            customer: sdk::CustomerId(7),
            token_id: 1,
            amount_mpaisa: 1_000,
        })]),
    )];
    apply(&a, &more);
    apply(&b, &more);
    assert_eq!(
        a.lock().hash,
        b.lock().hash,
        "the installed replica diverged"
    );
    println!(
        "snapshot {} bytes, peak resident memory grew {grew} bytes",
        snap.snapshot.len()
    );
}

#[test]
fn a_snapshot_three_times_the_memory_budget_is_built_and_installed_within_it() {
    let out = std::process::Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "--exact",
            "state::snapshot_memory_tests::snapshot_memory_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, "1")
        .output()
        .expect("the child runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(text.contains("1 passed"), "the child ran nothing: {text}");
    assert!(text.contains("peak resident memory grew"), "{text}");
}
