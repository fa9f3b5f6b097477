//! The field loop against a scripted cluster on a paused clock: protection beats committed
//! commands, every relay move is recorded with its reason, telemetry stays at one report a
//! second with one proposal in flight, lost acknowledgements are retried idempotently, an
//! island's backlog survives a restart and drains oldest first, and prepaid credit is
//! enforced locally in an island and handed back on rejoin.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use ghatta::field::FieldConfig;
use ghatta::field::{self, CustomerMap, FieldStats};
use ghatta::journal::{Cause, Journal, JournalLimits, ReasonCode};
use ghatta_actor_sdk as sdk;
use ghatta_hal::{RelayLine, SimBoard};
use tokio::task::JoinHandle;

use crate::field_support::{Acct, FakeCluster, board, closed, wait_ms};

struct Rig {
    fake: FakeCluster,
    board: SimBoard,
    journal: Journal,
    stats: Arc<FieldStats>,
    task: Option<JoinHandle<()>>,
    cfg: FieldConfig,
    dir: tempfile::TempDir,
}

fn cfg() -> FieldConfig {
    FieldConfig {
        journal: JournalLimits {
            fsync: false,
            ..JournalLimits::default()
        },
        ..FieldConfig::default()
    }
}

impl Rig {
    fn new(cfg: FieldConfig) -> Rig {
        let dir = tempfile::tempdir().expect("tempdir");
        let journal = Journal::open_dir(dir.path(), cfg.journal.clone()).expect("journal");
        let mut r = Rig {
            fake: FakeCluster::new(),
            board: board(),
            journal,
            stats: Arc::new(FieldStats::default()),
            task: None,
            cfg,
            dir,
        };
        r.start();
        r
    }

    fn start(&mut self) {
        self.task = Some(tokio::spawn(field::run_with(
            self.fake.clone(),
            self.board.clone(),
            self.journal.clone(),
            self.cfg.clone(),
            CustomerMap::identity(),
            self.stats.clone(),
        )));
    }

    /// Stop the loop (and its shipper), close the journal file, reopen it, start again.
    async fn restart(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
            let _ = t.await;
        }
        // Close our own handle on the file; the aborted shipper drops its handle when the
        // runtime next runs (redb refuses a second open of a file this process holds).
        let placeholder = Journal::open_backend(
            redb::backends::InMemoryBackend::new(),
            "placeholder",
            self.cfg.journal.clone(),
        )
        .expect("in-memory journal");
        drop(std::mem::replace(&mut self.journal, placeholder));
        let mut last_error = String::new();
        for _ in 0..20 {
            wait_ms(100).await;
            match Journal::open_dir(self.dir.path(), self.cfg.journal.clone()) {
                Ok(j) => {
                    self.journal = j;
                    self.start();
                    return;
                }
                Err(e) => last_error = e.to_string(),
            }
        }
        panic!("cannot reopen the journal: {last_error}");
    }

    fn freq(&self, mhz: u32) {
        self.board.with_state(|s| s.frequency_mhz = mhz);
    }

    fn meter(&self, customer: u32, total_wh: u64) {
        self.board.with_state(|s| {
            if let Some(m) = s.meters.get_mut(&customer) {
                m.total_wh = total_wh;
            }
        });
    }

    fn stat(&self, f: impl Fn(&FieldStats) -> &std::sync::atomic::AtomicU64) -> u64 {
        f(&self.stats).load(Ordering::Relaxed)
    }
}

#[tokio::test(start_paused = true)]
async fn protection_holds_a_feeder_open_against_a_committed_close() {
    let r = Rig::new(cfg());
    wait_ms(2_000).await;
    // 48.9 Hz: stage 1 (10 s) sheds feeder 2, the lowest priority of two.
    r.freq(48_900);
    wait_ms(11_000).await;
    assert!(
        !closed(&r.board, RelayLine::Feeder(2)),
        "stage 1 should have shed feeder 2"
    );
    assert!(closed(&r.board, RelayLine::Feeder(1)));
    // Balancing commits "close feeder 2" and "open feeder 1": the open is obeyed, the close
    // is not while protection holds the feeder.
    r.fake
        .relay(sdk::RelayId::Feeder(2), true, sdk::RelayReason::Balancing);
    r.fake
        .relay(sdk::RelayId::Feeder(1), false, sdk::RelayReason::Balancing);
    wait_ms(3_000).await;
    assert!(
        !closed(&r.board, RelayLine::Feeder(2)),
        "protection must win"
    );
    assert!(
        !closed(&r.board, RelayLine::Feeder(1)),
        "committed open obeyed"
    );
    // Frequency recovers: after the restore delay the hold is released and the committed
    // close is carried out.
    r.freq(50_000);
    wait_ms(29_000).await;
    assert!(
        !closed(&r.board, RelayLine::Feeder(2)),
        "restore delay not over"
    );
    wait_ms(2_000).await;
    assert!(
        closed(&r.board, RelayLine::Feeder(2)),
        "committed close after release"
    );
    wait_ms(2_000).await;
    let events = r.journal.recent_events(100).expect("events");
    let summary: Vec<(String, bool, ReasonCode, bool)> = events
        .iter()
        .map(|e| (e.line.to_string(), e.closed, e.reason, e.local))
        .collect();
    assert_eq!(
        summary,
        vec![
            ("feeder:2".into(), false, ReasonCode::Protection, true),
            ("feeder:1".into(), false, ReasonCode::Balancing, false),
            ("feeder:2".into(), true, ReasonCode::Protection, true),
        ]
    );
    assert!(matches!(events[0].cause, Cause::Ufls { stage: 1, .. }));
    assert!(matches!(events[1].cause, Cause::Committed { .. }));
    assert_eq!(events[2].cause, Cause::Released);
    let snap = r.stats.snapshot();
    assert_eq!(snap.relay_actions, 3);
    assert_eq!(snap.relay_actions_by_reason[&ReasonCode::Protection], 2);
    assert_eq!(snap.relay_actions_by_reason[&ReasonCode::Balancing], 1);
    assert_eq!(snap.ufls_trips, 1);
}

#[tokio::test(start_paused = true)]
async fn over_frequency_takes_ballast_even_against_a_committed_open() {
    let r = Rig::new(cfg());
    wait_ms(1_000).await;
    r.fake
        .relay(sdk::RelayId::Ballast(0), false, sdk::RelayReason::Balancing);
    r.freq(51_600);
    wait_ms(2_000).await;
    assert!(closed(&r.board, RelayLine::Ballast(0)));
    let e = r.journal.recent_events(10).expect("events");
    assert_eq!(e.last().map(|e| e.reason), Some(ReasonCode::Protection));
}

#[tokio::test(start_paused = true)]
async fn committed_customer_commands_are_executed_with_billing_reason() {
    let r = Rig::new(cfg());
    wait_ms(1_000).await;
    r.fake.relay(
        sdk::RelayId::Customer(sdk::CustomerId(2)),
        false,
        sdk::RelayReason::ZeroCredit,
    );
    wait_ms(2_000).await;
    assert!(!closed(&r.board, RelayLine::Customer(2)));
    r.fake.relay(
        sdk::RelayId::Customer(sdk::CustomerId(2)),
        true,
        sdk::RelayReason::CreditRestored,
    );
    r.fake
        .relay(sdk::RelayId::Feeder(9), false, sdk::RelayReason::Operator);
    wait_ms(2_000).await;
    assert!(closed(&r.board, RelayLine::Customer(2)));
    let e = r.journal.recent_events(10).expect("events");
    assert_eq!(e.len(), 2);
    assert!(
        e.iter()
            .all(|e| e.reason == ReasonCode::Billing && !e.local)
    );
    assert_eq!(r.stat(|s| &s.commands_unknown_relay), 1);
}

#[tokio::test(start_paused = true)]
async fn telemetry_is_about_one_report_a_second_with_one_proposal_in_flight() {
    let r = Rig::new(cfg());
    for i in 0..20u64 {
        r.meter(1, 100 + i);
        wait_ms(1_000).await;
    }
    let s = r.fake.st();
    let n = s.telemetry.len();
    assert!((18..=20).contains(&n), "{n} telemetry reports in 20 s");
    assert_eq!(s.max_in_flight, 1, "one proposal in flight at a time");
    assert_eq!(s.max_same_seq_in_flight, 1);
    // Telemetry carries the last sample of each period.
    assert!(s.telemetry.iter().all(|(_, f)| *f == 50_000));
    // The first read of each customer is journaled at once (the billing baseline); a changed
    // register again only after the journaling interval (60 s).
    assert_eq!(s.reads, vec![(1, 100), (2, 0)]);
}

#[tokio::test(start_paused = true)]
async fn a_lost_acknowledgement_is_retried_under_the_same_sequence_number() {
    let mut c = cfg();
    c.meter_journal_interval_ms = 1_000;
    let r = Rig::new(c);
    r.fake.st().lose_acks = 1;
    for i in 0..10u64 {
        r.meter(1, 100 + i);
        wait_ms(1_000).await;
    }
    wait_ms(3_000).await;
    let s = r.fake.st();
    let dup: Vec<_> = s.attempts.iter().filter(|a| a.2 == "duplicate").collect();
    assert_eq!(
        dup.len(),
        1,
        "the retry found the first copy applied: {:?}",
        s.attempts
    );
    let lost = s.attempts.iter().find(|a| a.2 == "ack lost").map(|a| a.0);
    assert_eq!(lost, Some(dup[0].0), "same sequence number");
    // Each read applied once, in order.
    let reads_1: Vec<u64> = s.reads.iter().filter(|r| r.0 == 1).map(|r| r.1).collect();
    let mut deduped = reads_1.clone();
    deduped.dedup();
    assert_eq!(reads_1, deduped, "no read applied twice");
    assert_eq!(r.stat(|s| &s.proposals_duplicate), 1);
    assert_eq!(r.journal.stats().expect("stats").reads, 0);
}

#[tokio::test(start_paused = true)]
async fn an_island_backlog_survives_a_restart_and_drains_oldest_first() {
    let mut c = cfg();
    c.meter_journal_interval_ms = 1_000;
    let mut r = Rig::new(c);
    wait_ms(2_000).await;
    r.fake.st().island = true;
    // Ten minutes of island, both meters moving every second.
    let mut wh = 1_000u64;
    for _ in 0..600 {
        wh += 1;
        r.meter(1, wh);
        r.meter(2, wh * 2);
        wait_ms(1_000).await;
    }
    let waiting = r.journal.stats().expect("stats").reads;
    assert!(waiting >= 1_100, "{waiting} reads waiting");
    assert!(r.stat(|s| &s.stalled_ms) >= 590_000);
    // Restart mid-island: the batch in flight keeps its sequence number.
    let inflight = r
        .journal
        .inflight()
        .expect("inflight")
        .expect("a batch in flight");
    r.restart().await;
    wait_ms(5_000).await;
    assert_eq!(
        r.fake.st().attempts.last().map(|a| a.0),
        Some(inflight.seq),
        "the restarted loop retries the same batch"
    );
    // Heal; the backlog drains at one proposal per drain interval (1 s), 511 reads each.
    r.fake.st().island = false;
    let started = tokio::time::Instant::now();
    loop {
        wait_ms(500).await;
        let left = r.journal.stats().expect("stats").reads;
        if left == 0 {
            break;
        }
        assert!(
            started.elapsed().as_secs() < 60,
            "backlog not drained: {left} left"
        );
    }
    let drain_s = started.elapsed().as_secs_f64();
    // ~1,200 reads: 3 full proposals, so a few seconds including the failing attempt still
    // waiting when the island healed.
    assert!(drain_s < 10.0, "drained in {drain_s} s");
    let s = r.fake.st();
    assert_eq!(s.rejected_reads, 0, "reads must commit in register order");
    for c in [1u32, 2] {
        let regs: Vec<u64> = s.reads.iter().filter(|r| r.0 == c).map(|r| r.1).collect();
        // Non-decreasing: the restarted loop journals each register once more as its baseline.
        assert!(
            regs.windows(2).all(|w| w[0] <= w[1]),
            "customer {c} out of order"
        );
    }
    // Every journaled read was applied exactly once (the counters span both incarnations).
    let applied = s.reads.len() as u64;
    assert_eq!(applied, r.stat(|s| &s.reads_journaled));
    assert_eq!(applied, r.stat(|s| &s.reads_committed));
    assert!(applied >= waiting);
    // Stale island telemetry is never proposed: only reports from before the island and
    // after the heal reached the cluster.
    assert!(
        s.telemetry.len() < 40,
        "{} telemetry reports",
        s.telemetry.len()
    );
}

#[tokio::test(start_paused = true)]
async fn island_credit_is_enforced_locally_and_handed_back_on_rejoin() {
    let mut c = cfg();
    c.meter_journal_interval_ms = 1_000;
    let r = Rig::new(c);
    {
        let mut s = r.fake.st();
        // NPR 10/kWh = 1,000 paisa/kWh = 1,000 mpaisa per Wh; 50 Wh of credit each.
        for c in [1u32, 2] {
            s.accounts.insert(
                c,
                Acct {
                    balance_mpaisa: 50_000,
                    last_wh: None,
                    rate: 1_000,
                    connected: true,
                },
            );
        }
    }
    r.meter(1, 100);
    r.meter(2, 100);
    wait_ms(3_000).await;
    // Connected: 10 Wh each is charged (balance 40,000 mpaisa) and committed.
    r.meter(1, 110);
    r.meter(2, 110);
    wait_ms(5_000).await;
    assert_eq!(r.fake.st().accounts[&1].balance_mpaisa, 40_000);
    // Island.
    r.fake.st().island = true;
    r.meter(1, 140);
    r.meter(2, 130);
    wait_ms(130_000).await;
    // Past the grace period, 30 Wh used of 40 Wh: still in credit locally.
    assert!(closed(&r.board, RelayLine::Customer(1)));
    // 50 Wh for customer 1 (estimate -10,000): cut locally; customer 2 at 35 Wh stays.
    r.meter(1, 160);
    r.meter(2, 145);
    wait_ms(3_000).await;
    assert!(
        !closed(&r.board, RelayLine::Customer(1)),
        "customer 1 cut locally"
    );
    assert!(closed(&r.board, RelayLine::Customer(2)));
    r.meter(2, 150);
    wait_ms(3_000).await;
    assert!(
        !closed(&r.board, RelayLine::Customer(2)),
        "customer 2 at zero: cut"
    );
    assert_eq!(r.stat(|s| &s.island_credit_cuts), 2);
    let e = r.journal.recent_events(10).expect("events");
    assert!(
        e.iter().any(|e| e.line == RelayLine::Customer(1)
            && !e.closed
            && e.reason == ReasonCode::Billing
            && e.local
            && matches!(e.cause, Cause::IslandCredit { estimated_mpaisa } if estimated_mpaisa <= 0)),
        "{e:?}"
    );
    // Rejoin. The operator topped customer 2 up while the island lasted (committed on the
    // other side); billing charges the island's reads: customer 1 goes to -10,000 and is cut
    // by billing; customer 2 stays in credit.
    r.fake.top_up(2, 100_000);
    r.fake.st().island = false;
    wait_ms(15_000).await;
    {
        let s = r.fake.st();
        assert_eq!(s.accounts[&1].balance_mpaisa, -10_000);
        assert!(!s.accounts[&1].connected);
        // 40,000 + 100,000 top-up - 40 Wh used in the island.
        assert_eq!(s.accounts[&2].balance_mpaisa, 100_000);
    }
    assert!(
        !closed(&r.board, RelayLine::Customer(1)),
        "billing's committed cut keeps customer 1 off"
    );
    assert!(
        closed(&r.board, RelayLine::Customer(2)),
        "the committed state says supplied: the local cut is lifted"
    );
    assert_eq!(r.stat(|s| &s.island_credit_cut_now), 0);
}

/// The island rule has no copy of billing's friendly hours: it follows the configuration
/// billing committed, here one whose friendly hours hold the test's wall time (11:45 in Nepal),
/// then one with none.
#[tokio::test(start_paused = true)]
async fn island_credit_follows_the_friendly_hours_billing_committed() {
    let mut c = cfg();
    c.meter_journal_interval_ms = 1_000;
    let r = Rig::new(c);
    {
        let mut s = r.fake.st();
        s.accounts.insert(
            1,
            Acct {
                balance_mpaisa: 10_000,
                last_wh: None,
                rate: 1_000,
                connected: true,
            },
        );
        s.billing = Some(sdk::BillingConfig {
            friendly_start_min: 11 * 60,
            friendly_end_min: 13 * 60,
            ..ghatta_billing::clock::default_config()
        });
    }
    r.meter(1, 100);
    wait_ms(3_000).await;
    r.meter(1, 105);
    wait_ms(5_000).await;
    assert_eq!(r.fake.st().accounts[&1].balance_mpaisa, 5_000);
    r.fake.st().island = true;
    // 20 Wh in the island against 5 Wh of credit, past the grace period.
    r.meter(1, 125);
    wait_ms(130_000).await;
    assert!(
        closed(&r.board, RelayLine::Customer(1)),
        "friendly hours (11:00-13:00 local, committed by billing): nobody is cut"
    );
    assert_eq!(r.stat(|s| &s.island_credit_cuts), 0);
    // The office commits a configuration without friendly hours (committed on the other
    // side of the island; the node's state machine has it, as after a snapshot).
    r.fake.st().billing = Some(sdk::BillingConfig {
        friendly_start_min: 0,
        friendly_end_min: 0,
        ..ghatta_billing::clock::default_config()
    });
    wait_ms(3_000).await;
    assert!(
        !closed(&r.board, RelayLine::Customer(1)),
        "no friendly hours any more: cut locally"
    );
    assert_eq!(r.stat(|s| &s.island_credit_cuts), 1);
}

#[tokio::test(start_paused = true)]
async fn radio_sized_proposals_stay_within_their_byte_budget_and_still_drain() {
    let mut c = cfg();
    c.meter_journal_interval_ms = 1_000;
    c.proposal_bytes_max = Some(512);
    let r = Rig::new(c);
    wait_ms(2_000).await;
    r.fake.st().island = true;
    for i in 0..120u64 {
        r.meter(1, 1_000 + i);
        r.meter(2, 5_000 + i);
        wait_ms(1_000).await;
    }
    r.fake.st().island = false;
    let mut waited_s = 0;
    while r.journal.stats().expect("stats").reads > 0 {
        wait_ms(1_000).await;
        waited_s += 1;
        assert!(waited_s < 120, "backlog not drained");
    }
    let s = r.fake.st();
    assert!(
        s.max_proposal_bytes <= 512,
        "{} bytes",
        s.max_proposal_bytes
    );
    assert_eq!(s.rejected_reads, 0);
    // ~240 reads at ~20 a proposal, one proposal a second.
    assert!(
        waited_s >= 8,
        "drained in {waited_s} s: were the proposals really small?"
    );
    assert_eq!(s.reads.len() as u64, r.stat(|s| &s.reads_journaled));
}
