//! The fleet view, the events, a customer's ledger and energy by time range (streamed), the
//! HTML pages and the retention setting, each run against both stores (redb, and PostgreSQL
//! when `GHATTA_TEST_DATABASE_URL` names a server: `store_suite`).

use std::collections::BTreeMap;

use ghatta_actor_sdk::{self as sdk, codec as sdk_codec};
use ghatta_proto::outbox::{ActorKind, OutboxRecord, Stream};
use ghatta_proto::wan::BatchBody;

use crate::fleet::{FleetEntry, GridToday, fleet_view, today};
use crate::store_suite::{
    BASE_MS, SERVER, charge, fresh_pg, http_get, local_hour, redb_store, test_database_url,
};
use crate::*;

const HOUR_MS: u64 = 3_600_000;
const NEPAL: i32 = 345;
/// Ledger lines the test grid has: one every 30 s for 25 h, customers 1 and 2 alternating.
const LINES: u64 = 3_000;
const LINE_EVERY_MS: u64 = 30_000;

/// A batch of `stream` holding `records` (seqs from 0, consecutive).
fn batch(stream: Stream, records: Vec<(u64, OutboxRecord)>) -> BatchBody {
    BatchBody {
        stream: stream.id(),
        first_seq: records.first().map_or(0, |r| r.0),
        end_seq: records.last().map_or(0, |r| r.0 + 1),
        records,
    }
}

fn event(seq: u64, at_ms: u64, out: sdk::Output) -> (u64, OutboxRecord) {
    (
        seq,
        OutboxRecord {
            index: 20_000 + seq,
            time_ms: at_ms,
            actor: ActorKind::Balancing,
            output: sdk_codec::encode(&out),
        },
    )
}

fn alarm(code: sdk::AlarmCode, text: &str) -> sdk::Output {
    sdk::Output::Alarm(sdk::Alarm {
        code,
        node: Some(sdk::NodeId(2)),
        subject: 3,
        value: -4,
        text: text.into(),
    })
}

/// The ledger lines of the test grid, as `charge` makes them.
fn lines() -> Vec<(u64, OutboxRecord)> {
    (0..LINES)
        .map(|s| charge(s, 1 + (s % 2) as u32, BASE_MS + s * LINE_EVERY_MS, 10 + s))
        .collect()
}

/// Grid `grid` in Nepal time: [`LINES`] ledger lines from Nov 30 00:00 UTC, 40 local hours of
/// customer 1's energy from 06:00 local, three alarms (one a day before the grid's newest
/// record) and a relay command.
async fn load_grid<S: Store>(s: &S, grid: u64) {
    for chunk in lines().chunks(500) {
        s.ingest(grid, batch(Stream::Ledger, chunk.to_vec()))
            .await
            .expect("ledger");
    }
    let start = BASE_MS + 15 * 60_000; // 06:00 local
    let hours: Vec<_> = (0..40u64)
        .map(|h| {
            local_hour(
                h,
                start + h * HOUR_MS,
                NEPAL,
                sdk::EnergySubject::Customer(sdk::CustomerId(1)),
                100 + h,
            )
        })
        .collect();
    s.ingest(grid, batch(Stream::Energy, hours))
        .await
        .expect("hours");
    let events = vec![
        event(
            0,
            BASE_MS + HOUR_MS,
            alarm(sdk::AlarmCode::MeterNotMonotonic, "meter 3 went back"),
        ),
        event(
            1,
            BASE_MS + 24 * HOUR_MS + HOUR_MS / 2,
            alarm(sdk::AlarmCode::FeederShed, "shed, \"feeder\" 3"),
        ),
        event(
            2,
            BASE_MS + 25 * HOUR_MS,
            alarm(sdk::AlarmCode::FeederShed, "shed again"),
        ),
        event(
            3,
            BASE_MS + 25 * HOUR_MS,
            sdk::Output::Relay(sdk::RelayCommand {
                node: sdk::NodeId(2),
                relay: sdk::RelayId::Customer(sdk::CustomerId(1)),
                closed: false,
                reason: sdk::RelayReason::ZeroCredit,
            }),
        ),
    ];
    s.ingest(grid, batch(Stream::Events, events))
        .await
        .expect("events");
}

/// What the test grid's day holds at `now_ms` (20:00 UTC on Nov 30 is 01:45 on Dec 1 in
/// Nepal; Dec 1 local runs from 18:15 UTC Nov 30): worked out from the lines themselves.
fn expected_today(now_ms: u64) -> GridToday {
    let day_start = BASE_MS + 18 * HOUR_MS + HOUR_MS / 4;
    assert!(now_ms >= day_start && now_ms < day_start + 24 * HOUR_MS);
    let (mut wh, mut mpaisa) = (0, 0);
    for (s, _) in lines() {
        let at = BASE_MS + s * LINE_EVERY_MS;
        if at >= day_start && at < day_start + 24 * HOUR_MS {
            wh += 10 + s;
            mpaisa += (10 + s) as i64 * 10;
        }
    }
    assert!(wh > 0);
    GridToday {
        utc_offset_min: NEPAL,
        local_date: "2026-12-01".into(),
        energy_wh: wh,
        revenue_mpaisa: mpaisa,
        // The grid's newest record is its last hour's close (Dec 1 16:15 UTC): the meter
        // alarm of Nov 30 01:00 is more than a day older, the two sheds are not.
        alarms: BTreeMap::from([("FeederShed".to_string(), 2)]),
    }
}

/// The store-level views every store answers the same.
async fn views<S: Store>(s: &S) {
    load_grid(s, 32).await;
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    load_grid(s, 31).await;
    let now = BASE_MS + 20 * HOUR_MS;
    let (state, _) = s.grid_state(31).await.expect("state").expect("grid");
    let got = today(s, 31, state.newest_time_ms, now)
        .await
        .expect("today");
    assert_eq!(got, expected_today(now));

    // Fleet order: by grid id while none is silent; silent ones first, the longest silent
    // (32 uploaded first) ahead.
    let real_now = crate::store::now_ms() + 1_000;
    let (rows, truncated) = fleet_view(s, real_now, u64::MAX).await.expect("fleet");
    assert!(!truncated);
    let ids = |rows: &[FleetEntry]| rows.iter().map(|r| r.row.grid).collect::<Vec<_>>();
    assert_eq!(ids(&rows), vec![31, 32]);
    assert!(rows.iter().all(|r| !r.silent));
    assert_eq!(rows[0].today.alarms, expected_today(now).alarms);
    assert_eq!(rows[0].row.records, LINES + 40 + 4);
    let (rows, _) = fleet_view(s, real_now, 0).await.expect("fleet");
    assert_eq!(ids(&rows), vec![32, 31]);
    assert!(rows.iter().all(|r| r.silent));
    // `ghatta-central check`: two hours on, with a one-hour bound, both grids are late.
    let mut report = crate::ops::CheckReport::default();
    crate::ops::check_grids(s, real_now + 2 * HOUR_MS, 1, &mut report)
        .await
        .expect("check");
    assert_eq!(report.grids.len(), 2);
    assert_eq!(report.problems.len(), 2, "{:?}", report.problems);
    assert!(
        report.problems[0].starts_with("grid 31: no upload for 2 h"),
        "{:?}",
        report.problems
    );
    let mut report = crate::ops::CheckReport::default();
    crate::ops::check_grids(s, real_now, 1, &mut report)
        .await
        .expect("check");
    assert!(report.problems.is_empty(), "{:?}", report.problems);

    // Events in pages by seq, filtered by log time.
    let p = s
        .records_page(31, Stream::Events.id(), TimeRange::ALL, None, 3)
        .await
        .expect("events");
    assert_eq!(
        (p.rows.iter().map(|r| r.0).collect::<Vec<_>>(), p.next),
        (vec![0, 1, 2], Some(2))
    );
    let p = s
        .records_page(31, Stream::Events.id(), TimeRange::ALL, p.next, 3)
        .await
        .expect("events");
    assert_eq!((p.rows.len(), p.rows[0].0, p.next), (1, 3, None));
    let late = TimeRange {
        from_ms: BASE_MS + 24 * HOUR_MS,
        to_ms: u64::MAX,
    };
    let p = s
        .records_page(31, Stream::Events.id(), late, None, 10)
        .await
        .expect("events");
    assert_eq!(p.rows.len(), 3);
    let rows: Vec<_> = p
        .rows
        .iter()
        .filter_map(|(q, r)| crate::fleet::event_row(*q, r))
        .collect();
    assert_eq!(rows[2].kind, "relay");
    assert_eq!(
        (
            rows[2].code.as_str(),
            rows[2].subject.as_str(),
            rows[2].value
        ),
        ("ZeroCredit", "Customer(1)", 0)
    );
    assert_eq!(rows[0].text, "shed, \"feeder\" 3");

    // A customer's hours by time range, in pages by hour.
    let range = TimeRange {
        from_ms: BASE_MS,
        to_ms: BASE_MS + 10 * HOUR_MS,
    };
    let mut after = None;
    let mut got = Vec::new();
    loop {
        let p = s
            .customer_hours_page(31, 1, range, after, 3)
            .await
            .expect("hours");
        assert!(p.rows.len() <= 3);
        got.extend(p.rows.iter().map(|r| (r.hour_start_ms, r.energy_wh)));
        match p.next {
            Some(h) => after = Some(h),
            None => break,
        }
    }
    let want: Vec<_> = (0..10u64)
        .map(|h| (BASE_MS + 15 * 60_000 + h * HOUR_MS, 100 + h))
        .collect();
    assert_eq!(got, want);
    assert!(
        s.customer_hours_page(31, 2, TimeRange::ALL, None, 10)
            .await
            .expect("hours")
            .rows
            .is_empty(),
        "customer 2 has no hours"
    );
    let (wh, mpaisa) = s.ledger_sums(31, TimeRange::ALL).await.expect("sums");
    assert_eq!(wh, (0..LINES).map(|q| 10 + q).sum::<u64>());
    assert_eq!(mpaisa, 10 * wh as i64);
}

/// Retention on a grid whose records span Nov 30 and Dec 1: after pruning before Dec 1,
/// only December's rows are left, the cursors stay, and uploads go on.
async fn retention<S: Store>(s: &S) -> crate::fleet::Pruned {
    load_grid(s, 41).await;
    let dec1 = BASE_MS + 24 * HOUR_MS;
    assert_eq!(
        crate::ops::retention_cutoff_ms(dec1 + 5 * 24 * HOUR_MS, 0),
        dec1
    );
    let pruned = s.prune_before(dec1).await.expect("prune");
    let ledger = crate::store_suite::all_ledger(s, 41, None, TimeRange::ALL, 10_000).await;
    let left = (0..LINES)
        .filter(|q| BASE_MS + q * LINE_EVERY_MS >= dec1)
        .count();
    assert_eq!(ledger.len(), left);
    assert!(ledger.iter().all(|r| r.at_ms >= dec1));
    let recs = s
        .records_page(41, Stream::Ledger.id(), TimeRange::ALL, None, 10_000)
        .await
        .expect("records");
    assert_eq!(recs.rows.len(), left);
    let hours = s
        .customer_hours_page(41, 1, TimeRange::ALL, None, 100)
        .await
        .expect("hours");
    assert!(!hours.rows.is_empty());
    assert!(hours.rows.iter().all(|h| h.hour_start_ms >= dec1));
    // Energy per local day is what the kept hours sum to (Dec 1 local began on Nov 30 at
    // 18:15 UTC: that day keeps only its hours from midnight UTC).
    let days = s.energy_per_day(41).await.expect("days");
    assert_eq!(
        days.iter().map(|d| d.1).sum::<u64>(),
        hours.rows.iter().map(|h| h.energy_wh).sum::<u64>()
    );
    assert_eq!(
        s.cursor(41, Stream::Ledger.id()).await.expect("cursor"),
        LINES
    );
    let next = charge(LINES, 1, dec1 + 2 * HOUR_MS, 5);
    let ack = s
        .ingest(41, batch(Stream::Ledger, vec![next]))
        .await
        .expect("an upload after pruning");
    assert_eq!(ack.next_seq, LINES + 1);
    // Pruning again finds nothing more.
    let again = s.prune_before(dec1).await.expect("prune again");
    assert_eq!(again, crate::fleet::Pruned::default());
    pruned
}

/// A ledger line of `customer` at `BASE_MS + seq` minutes as record `seq` (log index
/// 30,000 + seq).
fn line(seq: u64, kind: sdk::LedgerKind) -> (u64, OutboxRecord) {
    let out = sdk::Output::Ledger(sdk::LedgerRecord {
        customer: sdk::CustomerId(5),
        at_ms: BASE_MS + seq * 60_000,
        kind,
        balance_after_mpaisa: 1_000,
        tariff_version: 2,
    });
    (
        seq,
        OutboxRecord {
            index: 30_000 + seq,
            time_ms: BASE_MS + seq * 60_000,
            actor: ActorKind::Billing,
            output: sdk_codec::encode(&out),
        },
    )
}

/// What an auditor needs beyond amounts, from what the grid's record carries: the log index,
/// the friendly flag, each kind's own fields; in the rows, the customer's newest line and
/// the CSV.
async fn audit<S: Store>(s: &S) {
    use sdk::LedgerKind as K;
    let kinds = vec![
        K::Charge {
            energy_wh: 40,
            amount_mpaisa: -400,
            friendly: true,
        },
        K::TopUp {
            token_id: 4_242,
            amount_mpaisa: 50_000,
        },
        K::TokenCredit {
            code: 123_456_789,
            count: 7,
            value: 30,
            set: false,
            amount_mpaisa: 30_000,
        },
        K::OperatorCredit {
            ref_id: 9_001,
            amount_mpaisa: 500,
        },
        K::Disconnect {
            reason: sdk::RelayReason::ZeroCredit,
        },
        K::Reconnect {
            reason: sdk::RelayReason::CreditRestored,
        },
        K::Held {
            energy_wh: 900,
            allowed_wh: 100,
        },
        K::MeterReplaced {
            old_final_wh: 48_213,
            new_read_wh: 5,
        },
        K::Charge {
            energy_wh: 10,
            amount_mpaisa: -100,
            friendly: false,
        },
    ];
    let records: Vec<_> = kinds
        .into_iter()
        .enumerate()
        .map(|(n, k)| line(n as u64, k))
        .collect();
    s.ingest(51, batch(Stream::Ledger, records))
        .await
        .expect("ingest");
    let rows = crate::store_suite::all_ledger(s, 51, Some(5), TimeRange::ALL, 100).await;
    let got: Vec<(u64, bool, &str)> = rows
        .iter()
        .map(|r| (r.log_index, r.friendly, r.detail.as_str()))
        .collect();
    assert_eq!(
        got,
        vec![
            (30_000, true, ""),
            (30_001, false, "token_id=4242"),
            (30_002, false, "code=123456789;count=7;value=30;set=false"),
            (30_003, false, "ref_id=9001"),
            (30_004, false, "reason=ZeroCredit"),
            (30_005, false, "reason=CreditRestored"),
            (30_006, false, "held_wh=900;allowed_wh=100"),
            (30_007, false, "old_final_wh=48213;new_read_wh=5"),
            (30_008, false, ""),
        ]
    );
    let (_, latest) = s.grid_state(51).await.expect("state").expect("grid");
    assert_eq!(latest, vec![rows[8].clone()], "the newest line, all of it");
    let csv = crate::http::ledger_csv(51, &rows, &[0; 9]);
    assert!(
        csv.lines()
            .next()
            .expect("head")
            .ends_with(",stream,log_index,friendly,detail,read_from_wh,read_to_wh,read_at_ms"),
        "{csv}"
    );
    assert!(csv.contains(",0,30000,true,,,,\n"), "{csv}");
    assert!(
        csv.contains(",0,30002,false,code=123456789;count=7;value=30;set=false,,,\n"),
        "{csv}"
    );
    meter_reads_and_setup(s).await;
}

/// The reads and set-up an auditor rebuilds bills from: a charge's and a held read's
/// registers, a baseline, a refused read, an account's set-up, in the row's read columns and
/// detail and in the CSV; tariffs and configurations on the set-up route.
async fn meter_reads_and_setup<S: Store>(s: &S) {
    use sdk::LedgerKind as K;
    let span = |from_wh, to_wh, read_at_ms| sdk::MeterSpan {
        from_wh,
        to_wh,
        read_at_ms,
    };
    let kinds = vec![
        K::Account(sdk::AccountSetup {
            opened: true,
            mode: sdk::AccountMode::Prepaid,
            tariff: 2,
            connection_w: 250,
            token_unit_mpaisa: Some(100_000),
        }),
        K::Baseline {
            read_wh: 1_000,
            read_at_ms: 77,
        },
        K::ChargeRead {
            energy_wh: 40,
            amount_mpaisa: 600,
            friendly: true,
            read: span(1_000, 1_040, 88),
        },
        K::HeldRead {
            energy_wh: 900,
            allowed_wh: 100,
            read: span(1_040, 2_040, 99),
        },
        K::ReadRejected {
            read: span(2_040, 5, 111),
        },
    ];
    let mut records: Vec<_> = kinds
        .into_iter()
        .enumerate()
        .map(|(n, k)| line(n as u64, k))
        .collect();
    let tariff = sdk::Tariff {
        id: 2,
        version: 3,
        kind: sdk::TariffKind::Tiered {
            blocks: vec![
                sdk::TierBlock {
                    up_to_wh: 10_000,
                    rate_paisa_per_kwh: 0,
                },
                sdk::TierBlock {
                    up_to_wh: u64::MAX,
                    rate_paisa_per_kwh: 800,
                },
            ],
            period_charge_paisa: 5_000,
        },
    };
    let cfg = sdk::BillingConfig {
        utc_offset_min: 345,
        friendly_start_min: 1_260,
        friendly_end_min: 360,
        disconnect_at_mpaisa: 0,
        plausible_margin_pct: 300,
    };
    for (seq, out) in [
        (5, sdk::Output::TariffSet(tariff)),
        (6, sdk::Output::BillingConfigSet(cfg)),
    ] {
        records.push((
            seq,
            OutboxRecord {
                index: 30_000 + seq,
                time_ms: BASE_MS + seq * 60_000,
                actor: ActorKind::Billing,
                output: sdk_codec::encode(&out),
            },
        ));
    }
    s.ingest(52, batch(Stream::Ledger, records))
        .await
        .expect("ingest");
    let rows = crate::store_suite::all_ledger(s, 52, Some(5), TimeRange::ALL, 100).await;
    /// A row's kind, detail, read (from, to, at) and energy billed.
    type Seen<'a> = (&'a str, &'a str, Option<u64>, Option<u64>, Option<u64>, u64);
    let got: Vec<Seen> = rows
        .iter()
        .map(|r| {
            (
                r.kind.as_str(),
                r.detail.as_str(),
                r.read_from_wh,
                r.read_to_wh,
                r.read_at_ms,
                r.energy_wh,
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            (
                "Account",
                "opened=true;mode=Prepaid;tariff=2;connection_w=250;token_unit_mpaisa=100000",
                None,
                None,
                None,
                0
            ),
            ("Baseline", "", Some(1_000), Some(1_000), Some(77), 0),
            ("Charge", "", Some(1_000), Some(1_040), Some(88), 40),
            (
                "Held",
                "held_wh=900;allowed_wh=100",
                Some(1_040),
                Some(2_040),
                Some(99),
                0
            ),
            ("ReadRejected", "", Some(2_040), Some(5), Some(111), 0),
        ]
    );
    assert!(rows[2].friendly);
    let (_, latest) = s.grid_state(52).await.expect("state").expect("grid");
    assert_eq!(latest, vec![rows[4].clone()], "the newest line, reads too");
    let csv = crate::http::ledger_csv(52, &rows, &[0; 5]);
    assert!(
        csv.lines()
            .next()
            .expect("head")
            .ends_with(",detail,read_from_wh,read_to_wh,read_at_ms"),
        "{csv}"
    );
    assert!(csv.contains(",0,30002,true,,1000,1040,88\n"), "{csv}");
    assert!(csv.contains(",0,30004,false,,2040,5,111\n"), "{csv}");
    // The set-up route's rows: only the tariff and the configuration of the ledger stream.
    let p = s
        .records_page(52, Stream::Ledger.id(), TimeRange::ALL, None, 100)
        .await
        .expect("records");
    let setup: Vec<_> = p
        .rows
        .iter()
        .filter_map(|(seq, r)| crate::setup::setup_row(*seq, r))
        .map(|r| (r.seq, r.log_index, r.kind, r.detail))
        .collect();
    assert_eq!(
        setup,
        vec![
            (
                5,
                30_005,
                "Tariff".to_string(),
                "id=2;version=3;kind=Tiered;period_charge_paisa=5000;blocks=10000:0 18446744073709551615:800".to_string()
            ),
            (
                6,
                30_006,
                "BillingConfig".to_string(),
                "utc_offset_min=345;friendly_start_min=1260;friendly_end_min=360;disconnect_at_mpaisa=0;plausible_margin_pct=300".to_string()
            ),
        ]
    );
}

#[tokio::test]
async fn ledger_lines_carry_what_an_auditor_needs_on_both_stores() {
    let dir = tempfile::tempdir().expect("tempdir");
    audit(&redb_store(dir.path())).await;
    if let Some(url) = test_database_url("ledger_lines_carry_what_an_auditor_needs") {
        let _server = SERVER.read().await;
        audit(&fresh_pg(&url, "ghatta_audit").await).await;
    }
}

/// A ledger row a central stored before the meter reads reads back with its audit fields and
/// no read.
#[tokio::test]
async fn a_ledger_row_from_before_the_meter_reads_still_reads() {
    let old = crate::store::LedgerRowV2 {
        v1: v1_row(),
        log_index: 41,
        friendly: true,
        detail: String::new(),
    };
    let bytes = ghatta_proto::codec::encode(&old).expect("encode");
    let row = crate::store::decode_ledger_row(&bytes).expect("decodes");
    assert_eq!(
        (
            row.energy_wh,
            row.log_index,
            row.friendly,
            row.read_from_wh,
            row.read_to_wh,
            row.read_at_ms
        ),
        (12, 41, true, None, None, None)
    );
}

/// A line of customer 8 as centrals stored it before the audit fields.
fn v1_row() -> crate::store::LedgerRowV1 {
    crate::store::LedgerRowV1 {
        seq: 3,
        customer: 8,
        at_ms: BASE_MS,
        kind: "Charge".into(),
        energy_wh: 12,
        amount_mpaisa: -120,
        balance_after_mpaisa: 7,
        tariff_version: 1,
        backfill: false,
    }
}

/// A ledger row a central stored before the audit fields reads back with log index 0, not
/// friendly, no detail.
#[tokio::test]
async fn a_ledger_row_from_before_the_audit_fields_still_reads() {
    let dir = tempfile::tempdir().expect("tempdir");
    drop(redb_store(dir.path()));
    {
        let db = redb::Database::open(dir.path().join("central.redb")).expect("the file");
        let txn = db.begin_write().expect("txn");
        {
            let ledger: redb::TableDefinition<(u64, u32, u64), &[u8]> =
                redb::TableDefinition::new("wan_ledger");
            let mut t = txn.open_table(ledger).expect("ledger");
            let bytes = ghatta_proto::codec::encode(&v1_row()).expect("encode");
            t.insert((61, 8, 3), bytes.as_slice()).expect("insert");
        }
        txn.commit().expect("commit");
    }
    let s = redb_store(dir.path());
    let rows = crate::store_suite::all_ledger(&s, 61, None, TimeRange::ALL, 10).await;
    assert_eq!(rows.len(), 1);
    assert_eq!(
        (
            rows[0].energy_wh,
            rows[0].log_index,
            rows[0].friendly,
            rows[0].detail.as_str()
        ),
        (12, 0, false, "")
    );
}

#[tokio::test]
async fn fleet_events_hours_and_retention_on_redb() {
    let dir = tempfile::tempdir().expect("tempdir");
    views(&redb_store(dir.path())).await;
    // A file from before the ledger's revenue index (or with the index before it, whose
    // revenue had a charge's sign turned): it is filled from the ledger at open.
    let dir = tempfile::tempdir().expect("tempdir");
    load_grid(&redb_store(dir.path()), 31).await;
    type ByTime = redb::TableDefinition<'static, (u64, u64, u32, u64), (u64, i64)>;
    let old: ByTime = redb::TableDefinition::new("wan_ledger_time");
    {
        let db = redb::Database::open(dir.path().join("central.redb")).expect("the file");
        let txn = db.begin_write().expect("txn");
        let by_time: ByTime = redb::TableDefinition::new("wan_ledger_revenue");
        assert!(txn.delete_table(by_time).expect("delete"));
        let mut t = txn.open_table(old).expect("the old index");
        t.insert((31, BASE_MS + 19 * HOUR_MS, 1, 0), (10, -100))
            .expect("a line as the old index held it");
        drop(t);
        txn.commit().expect("commit");
    }
    let s = redb_store(dir.path());
    {
        use redb::ReadableDatabase;
        let txn = s.db.begin_read().expect("txn");
        assert!(txn.open_table(old).is_err(), "the old index is gone");
    }
    let now = BASE_MS + 20 * HOUR_MS;
    let (state, _) = s.grid_state(31).await.expect("state").expect("grid");
    assert_eq!(
        today(&s, 31, state.newest_time_ms, now)
            .await
            .expect("today"),
        expected_today(now)
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let pruned = retention(&redb_store(dir.path())).await;
    let gone = (0..LINES)
        .filter(|q| BASE_MS + q * LINE_EVERY_MS < BASE_MS + 24 * HOUR_MS)
        .count() as u64;
    assert_eq!(pruned.ledger, gone);
    assert!(pruned.records >= gone && pruned.energy_hours > 0);
}

#[tokio::test]
async fn fleet_events_hours_and_retention_on_postgres() {
    let Some(url) = test_database_url("fleet_events_hours_and_retention_on_postgres") else {
        return;
    };
    let _server = SERVER.read().await;
    views(&fresh_pg(&url, "ghatta_views").await).await;
    let pruned = retention(&fresh_pg(&url, "ghatta_retention").await).await;
    for table in ["wan_records", "wan_ledger", "wan_energy_hours"] {
        assert!(
            pruned.partitions.contains(&format!("{table}_y2026m11")),
            "{pruned:?}"
        );
    }
    assert!(
        !pruned.partitions.iter().any(|p| p.ends_with("y2026m12")),
        "{pruned:?}"
    );
}

/// A raw GET: (status line and headers, body as sent).
async fn raw_get(addr: std::net::SocketAddr, auth: &str, path: &str) -> (String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n{auth}Connection: close\r\n\r\n")
            .as_bytes(),
    )
    .await
    .expect("write");
    let mut out = String::new();
    s.read_to_string(&mut out).await.expect("read");
    let (head, body) = out.split_once("\r\n\r\n").expect("an HTTP answer");
    (head.to_ascii_lowercase(), body.to_string())
}

/// The routes and pages over a running central.
async fn routes(central: &Central) {
    load_grid(central.backend(), 31).await;
    let (addr, token) = (central.http_addr, central.http_access.token().to_string());
    let get = |path: &str| {
        let path = path.to_string();
        let token = token.clone();
        async move { http_get(addr, &token, &path).await }
    };
    let json = |body: String| -> serde_json::Value {
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"))
    };

    let fleet = json(get("/v1/grids").await);
    assert_eq!(fleet["grids"][0]["grid"], 31, "{fleet}");
    assert_eq!(fleet["grids"][0]["silent"], false, "{fleet}");
    assert_eq!(
        fleet["grids"][0]["today"]["alarms"]["FeederShed"], 2,
        "{fleet}"
    );
    assert_eq!(fleet["silent_hours"], crate::fleet::SILENT_HOURS_DEFAULT);
    let fleet = json(get("/v1/grids?silent_hours=0").await);
    assert_eq!(fleet["grids"][0]["silent"], true, "{fleet}");

    // The pages: no script, no external asset; the browser's Basic credentials work and
    // their absence asks for them.
    let page = get("/ui").await;
    assert!(page.contains("href=\"/ui/grids/31\""), "{page}");
    let grid = get("/ui/grids/31").await;
    for want in [
        "Grid 31",
        "<svg",
        "FeederShed",
        "ZeroCredit",
        "shed, &quot;feeder&quot; 3",
    ] {
        assert!(grid.contains(want), "{want}: {grid}");
    }
    for p in [&page, &grid] {
        assert!(!p.contains("<script") && !p.contains("http://") && !p.contains("https://"));
    }
    let (head, _) = raw_get(addr, "", "/ui").await;
    assert!(head.starts_with("http/1.1 401"), "{head}");
    assert!(head.contains("www-authenticate: basic"), "{head}");
    let basic = {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(format!("office:{token}"))
    };
    let (head, _) = raw_get(addr, &format!("Authorization: Basic {basic}\r\n"), "/ui").await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    let wrong = {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode("office:nope")
    };
    let (head, _) = raw_get(addr, &format!("Authorization: Basic {wrong}\r\n"), "/ui").await;
    assert!(head.starts_with("http/1.1 401"), "{head}");

    // Events: JSON with a cursor when a limit cuts it, CSV with the text quoted.
    let all = json(get("/v1/grids/31/events").await);
    assert_eq!(all["rows"].as_array().expect("rows").len(), 4, "{all}");
    assert!(all["next"].is_null());
    let first = json(get("/v1/grids/31/events?limit=3").await);
    assert_eq!(first["next"], "2", "{first}");
    let rest = json(get("/v1/grids/31/events?after=2").await);
    assert_eq!(rest["rows"][0]["kind"], "relay", "{rest}");
    let csv = get("/v1/grids/31/events.csv").await;
    assert_eq!(csv.lines().count(), 5, "{csv}");
    assert!(csv.contains(",\"shed, \"\"feeder\"\" 3\","), "{csv}");
    assert!(csv.contains("2026-12-01T"), "local times: {csv}");

    // A customer's ledger streamed whole (more than one sub-page), and in limited parts
    // resumed from the last line's key.
    let ledger = json(get("/v1/grids/31/customers/1/ledger").await);
    let rows = ledger["rows"].as_array().expect("rows");
    assert_eq!(rows.len() as u64, LINES / 2);
    assert!(rows.len() > crate::http::stream::STREAM_CHUNK_ROWS);
    assert!(ledger["next"].is_null());
    let mut csv = String::new();
    let mut after = String::new();
    for _ in 0..10 {
        let part = get(&format!(
            "/v1/grids/31/customers/1/ledger.csv?limit=700{after}"
        ))
        .await;
        let body = if csv.is_empty() {
            part.clone()
        } else {
            part.split_once('\n')
                .map(|(_, r)| r.to_string())
                .unwrap_or_default()
        };
        let Some(last) = body.lines().last().filter(|l| !l.starts_with("grid,")) else {
            break;
        };
        let f: Vec<&str> = last.split(',').collect();
        after = format!("&after={}.{}", f[1], f[2]);
        csv.push_str(&body);
    }
    assert_eq!(
        csv.lines().count() as u64,
        1 + LINES / 2,
        "header once, every line once"
    );
    assert!(csv.contains("+05:45"), "local times with the offset");

    // A customer's energy by time range.
    let range = format!("from_ms={}&to_ms={}", BASE_MS, BASE_MS + 10 * HOUR_MS);
    let hours = json(get(&format!("/v1/grids/31/customers/1/energy?{range}&limit=4")).await);
    assert_eq!(hours["rows"].as_array().expect("rows").len(), 4);
    assert_eq!(
        hours["next"],
        (BASE_MS + 15 * 60_000 + 3 * HOUR_MS).to_string(),
        "{hours}"
    );
    let csv = get(&format!("/v1/grids/31/customers/1/energy.csv?{range}")).await;
    assert_eq!(csv.lines().count(), 11, "{csv}");
    // A bad request says what is wrong.
    let (head, body) = raw_get(
        addr,
        &format!("Authorization: Bearer {token}\r\n"),
        "/v1/grids/31/events?limit=x",
    )
    .await;
    assert!(
        head.starts_with("http/1.1 400") && body.contains("limit=`x`"),
        "{head}{body}"
    );

    // A grid that folded today (a test's shortcut: a grid folds days a week old) shows the
    // folded day in its fleet row, its energy per day and its folded-days routes.
    let today_ms = crate::store::now_ms() / DAY_MS * DAY_MS;
    let f = crate::store_suite::folded(
        0,
        today_ms,
        0,
        sdk::FoldSubject::Customer(sdk::CustomerId(4)),
        900,
        (800, 8_000),
        500,
    );
    let b = ghatta_proto::wan::BatchBody {
        stream: Stream::Ledger.id(),
        first_seq: 0,
        end_seq: 1,
        records: vec![f],
    };
    central.backend().ingest(32, b).await.expect("a folded day");
    let fleet = json(get("/v1/grids").await);
    let row = fleet["grids"]
        .as_array()
        .expect("grids")
        .iter()
        .find(|g| g["grid"] == 32)
        .unwrap_or_else(|| panic!("grid 32: {fleet}"));
    assert_eq!(row["today"]["energy_wh"], 800, "{row}");
    assert_eq!(row["today"]["revenue_mpaisa"], 8_500, "{row}");
    let days = json(get("/v1/grids/32/energy-per-day").await);
    assert_eq!(days[0]["energy_wh"], 900, "{days}");
    let mine = json(get("/v1/grids/32/customers/4/folded-days").await);
    assert_eq!(mine["rows"][0]["charged_wh"], 800, "{mine}");
    assert!(mine["next"].is_null(), "{mine}");
    let other = json(get("/v1/grids/32/customers/5/folded-days").await);
    assert_eq!(other["rows"].as_array().map(Vec::len), Some(0), "{other}");
    let csv = get("/v1/grids/32/folded-days.csv").await;
    assert!(csv.starts_with("grid,local_date,day_start_ms,"), "{csv}");
    assert!(
        csv.contains(&format!(",{today_ms},0,customer,4,0,0,")),
        "{csv}"
    );
}

/// A test central's settings: loopback ports, no grids, redb in `dir` or `database`.
pub(crate) fn config(dir: &std::path::Path, database: Option<String>) -> CentralConfig {
    CentralConfig {
        listen: "127.0.0.1:0".into(),
        http_listen: "127.0.0.1:0".into(),
        data_dir: dir.to_path_buf(),
        database,
        secret: ghatta_proto::keys::SecretKey::from_bytes([1; 32]),
        grids: Default::default(),
        backfill_after_ms: BACKFILL_AFTER_MS_DEFAULT,
        http_token_file: None,
        http_hosts: Vec::new(),
        retention_months: None,
    }
}

#[tokio::test]
async fn routes_and_pages_on_redb() {
    let dir = tempfile::tempdir().expect("tempdir");
    let central = Central::start(config(dir.path(), None))
        .await
        .expect("start");
    routes(&central).await;
}

#[tokio::test]
async fn routes_and_pages_on_postgres() {
    let Some(url) = test_database_url("routes_and_pages_on_postgres") else {
        return;
    };
    let _server = SERVER.read().await;
    drop(fresh_pg(&url, "ghatta_routes").await);
    let db_url = format!(
        "{}/ghatta_routes",
        url.rsplit_once('/').map_or(url.as_str(), |(base, _)| base)
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let central = Central::start(config(dir.path(), Some(db_url)))
        .await
        .expect("start");
    routes(&central).await;
}
