//! One test suite for every [`Store`]: ingest, dedupe, gaps, refused batches, paging and the
//! grid view, run against the embedded redb store and against a real PostgreSQL (the server
//! `GHATTA_TEST_DATABASE_URL` names; `.ci/postgres.sh` starts a throwaway one). On CI
//! (`CI=true`) a missing server fails the PostgreSQL tests instead of skipping them.

use std::collections::BTreeSet;
use std::sync::Arc;

use ghatta_actor_sdk::{self as sdk, codec as sdk_codec};
use ghatta_proto::outbox::{ActorKind, OutboxRecord, Stream};
use ghatta_proto::wan::BatchBody;

use crate::*;

/// The variable that names the test server (a database the tests may create databases in).
pub(crate) const TEST_DATABASE_URL_VAR: &str = "GHATTA_TEST_DATABASE_URL";

/// Nov 30 2026, 00:00 UTC: a day of minutes from here crosses into December, so a batch
/// needs two monthly partitions.
pub(crate) const BASE_MS: u64 = 1_795_996_800_000;

/// The server the PostgreSQL tests run against; `None` (with a line saying so) when it is
/// not set locally. On CI a missing server is a failure: the tests must not pass by not
/// running.
pub(crate) fn test_database_url(test: &str) -> Option<String> {
    match std::env::var(TEST_DATABASE_URL_VAR) {
        Ok(url) if !url.is_empty() => Some(url),
        _ if std::env::var("CI").is_ok_and(|v| v == "true") => panic!(
            "{test}: {TEST_DATABASE_URL_VAR} is not set, and CI=true: the PostgreSQL tests must run on CI; source .ci/postgres.sh before cargo test"
        ),
        _ => {
            eprintln!(
                "{test}: skipped against PostgreSQL ({TEST_DATABASE_URL_VAR} is not set; `. .ci/postgres.sh` starts a throwaway server)"
            );
            None
        }
    }
}

/// Held shared by every test that uses the test server, and exclusively by the one that
/// crashes it, so no other test sees the server go away under it.
pub(crate) static SERVER: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

/// A fresh database `name` on the test server, migrated, as a store.
pub(crate) async fn fresh_pg(url: &str, name: &str) -> PgStore {
    let (admin, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("the test server answers");
    tokio::spawn(conn);
    admin
        .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .await
        .expect("the old test database dropped");
    admin
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .expect("a fresh test database");
    let mut cfg: tokio_postgres::Config = url.parse().expect("a PostgreSQL URL");
    cfg.dbname(name);
    PgStore::with_config(cfg, BACKFILL_AFTER_MS_DEFAULT)
        .await
        .expect("the store connects and migrates")
}

pub(crate) fn redb_store(dir: &std::path::Path) -> Arc<RedbStore> {
    Arc::new(RedbStore::open(dir, BACKFILL_AFTER_MS_DEFAULT).expect("redb opens"))
}

/// A charge of `customer` at `at_ms` as grid record `seq`.
pub(crate) fn charge(seq: u64, customer: u32, at_ms: u64, energy_wh: u64) -> (u64, OutboxRecord) {
    let out = sdk::Output::Ledger(sdk::LedgerRecord {
        customer: sdk::CustomerId(customer),
        at_ms,
        kind: sdk::LedgerKind::Charge {
            energy_wh,
            amount_mpaisa: energy_wh as i64 * 10,
            friendly: false,
        },
        balance_after_mpaisa: 1_000_000 - seq as i64,
        tariff_version: 1,
    });
    (
        seq,
        OutboxRecord {
            index: 1_000 + seq,
            time_ms: at_ms,
            actor: ActorKind::Billing,
            output: sdk_codec::encode(&out),
        },
    )
}

fn hour(seq: u64, subject: sdk::EnergySubject, energy_wh: u64) -> (u64, OutboxRecord) {
    let out = sdk::Output::EnergyHour(sdk::EnergyHour {
        hour_start_ms: BASE_MS,
        subject,
        energy_wh,
    });
    (
        seq,
        OutboxRecord {
            index: 5_000 + seq,
            time_ms: BASE_MS + 3_600_000,
            actor: ActorKind::Balancing,
            output: sdk_codec::encode(&out),
        },
    )
}

/// Ledger batch [first, end) of stream 1: customers 1 and 2 alternate, one line a minute.
pub(crate) fn ledger_batch(first: u64, end: u64) -> BatchBody {
    BatchBody {
        stream: 1,
        first_seq: first,
        end_seq: end,
        records: (first..end)
            .map(|s| charge(s, 1 + (s % 2) as u32, BASE_MS + s * 60_000, 10 + s))
            .collect(),
    }
}

/// Every ledger row of `grid` through pages of `limit`, checking each page's size.
pub(crate) async fn all_ledger<S: Store>(
    s: &S,
    grid: u64,
    customer: Option<u32>,
    range: TimeRange,
    limit: usize,
) -> Vec<LedgerRow> {
    let mut rows = Vec::new();
    let mut after = None;
    for _ in 0..1_000 {
        let p = s
            .ledger_page(grid, customer, range, after, limit)
            .await
            .expect("ledger page");
        assert!(p.rows.len() <= limit);
        rows.extend(p.rows);
        match p.next {
            Some(k) => after = Some(k),
            None => return rows,
        }
    }
    panic!("the ledger pages never ended");
}

/// The suite every store passes.
async fn suite<S: Store>(s: &S) {
    const GRID: u64 = 7;
    assert_eq!(s.cursor(GRID, 1).await.expect("cursor"), 0);
    assert!(s.grid_state(GRID).await.expect("state").is_none());

    // A batch is stored and acked up to its end.
    let ack = s.ingest(GRID, ledger_batch(0, 10)).await.expect("ingest");
    assert_eq!((ack.next_seq, ack.gap, ack.batch_first_seq), (10, false, 0));
    // A replay is a no-op with the same ack.
    let ack = s.ingest(GRID, ledger_batch(0, 10)).await.expect("replay");
    assert_eq!((ack.next_seq, ack.gap), (10, false));
    // An overlapping batch stores only what is new.
    let ack = s.ingest(GRID, ledger_batch(5, 15)).await.expect("overlap");
    assert_eq!((ack.next_seq, ack.gap), (15, false));
    // A batch past a hole stores nothing and asks for a resend from the cursor.
    let ack = s.ingest(GRID, ledger_batch(20, 25)).await.expect("gap");
    assert_eq!((ack.next_seq, ack.gap, ack.batch_first_seq), (15, true, 20));
    // A batch out of order is refused whole: an error (so no ack), nothing stored.
    let mut bad = ledger_batch(15, 18);
    bad.records.swap(1, 2);
    assert!(matches!(
        s.ingest(GRID, bad).await,
        Err(StoreError::BatchOrder { seq: 16, .. })
    ));
    assert_eq!(s.cursor(GRID, 1).await.expect("cursor"), 15);

    // Every line exactly once, in (customer, seq) order, whatever the page size.
    let want: Vec<(u32, u64)> = {
        let mut w: Vec<_> = (0..15u64).map(|q| (1 + (q % 2) as u32, q)).collect();
        w.sort();
        w
    };
    for limit in [1, 4, 15, 1_000] {
        let got: Vec<_> = all_ledger(s, GRID, None, TimeRange::ALL, limit)
            .await
            .iter()
            .map(|r| (r.customer, r.seq))
            .collect();
        assert_eq!(got, want, "pages of {limit}");
    }
    // One customer in a window of log time: minutes 4..9 hold seqs 4, 6, 8 of customer 1.
    let window = TimeRange {
        from_ms: BASE_MS + 4 * 60_000,
        to_ms: BASE_MS + 9 * 60_000,
    };
    let got: Vec<_> = all_ledger(s, GRID, Some(1), window, 2)
        .await
        .iter()
        .map(|r| (r.seq, r.energy_wh, r.kind.clone()))
        .collect();
    assert_eq!(
        got,
        vec![
            (4, 14, "Charge".into()),
            (6, 16, "Charge".into()),
            (8, 18, "Charge".into())
        ]
    );
    // A cursor of another customer ends the page.
    let p = s
        .ledger_page(
            GRID,
            Some(1),
            TimeRange::ALL,
            Some(LedgerKey {
                customer: 2,
                seq: 0,
            }),
            10,
        )
        .await
        .expect("page");
    assert!(p.rows.is_empty() && p.next.is_none());

    // A line older than its customer's newest is back-fill and does not replace it.
    let late = BatchBody {
        stream: 1,
        first_seq: 15,
        end_seq: 16,
        records: vec![charge(15, 1, BASE_MS, 5)],
    };
    assert_eq!(s.ingest(GRID, late).await.expect("late").next_seq, 16);

    // Energy hours: stored once; a second record for a closed (subject, hour) is ignored.
    let hours = BatchBody {
        stream: 2,
        first_seq: 0,
        end_seq: 4,
        records: vec![
            hour(0, sdk::EnergySubject::Customer(sdk::CustomerId(42)), 17),
            hour(
                1,
                sdk::EnergySubject::Feeder {
                    node: sdk::NodeId(2),
                    feeder: 1,
                },
                2_500,
            ),
            hour(2, sdk::EnergySubject::Plant(sdk::NodeId(2)), 3_000),
            hour(3, sdk::EnergySubject::Customer(sdk::CustomerId(42)), 99),
        ],
    };
    assert_eq!(
        s.ingest(GRID, hours.clone()).await.expect("hours").next_seq,
        4
    );
    assert_eq!(
        s.ingest(GRID, hours).await.expect("hours again").next_seq,
        4
    );
    let mut got = Vec::new();
    let mut after = None;
    loop {
        let p = s
            .energy_hours_page(GRID, TimeRange::ALL, after, 2)
            .await
            .expect("hours page");
        got.extend(
            p.rows
                .iter()
                .map(|r| (r.kind.clone(), r.id, r.feeder, r.energy_wh, r.seq)),
        );
        match p.next {
            Some(k) => after = Some(k),
            None => break,
        }
    }
    assert_eq!(
        got,
        vec![
            ("customer".into(), 42, 0, 17, 0),
            ("feeder".into(), 2, 1, 2_500, 1),
            ("plant".into(), 2, 0, 3_000, 2)
        ]
    );
    let none = s
        .energy_hours_page(
            GRID,
            TimeRange {
                from_ms: BASE_MS + 1,
                to_ms: u64::MAX,
            },
            None,
            10,
        )
        .await
        .expect("empty window");
    assert!(none.rows.is_empty() && none.next.is_none());

    // Energy per day is the customers' closed hours: one UTC hour (a record as grids wrote
    // before local hours, offset 0) of 17 Wh; the ignored second record adds nothing.
    let days = s.energy_per_day(GRID).await.expect("days");
    assert_eq!(days, vec![(BASE_MS / DAY_MS, 17)]);

    // The grid view: cursors per stream, records once, each customer's newest line.
    let (state, latest) = s.grid_state(GRID).await.expect("state").expect("a grid");
    assert_eq!(state.cursors, [(1, 16), (2, 4)].into_iter().collect());
    assert_eq!(state.records, 16 + 4, "every record exactly once");
    assert_eq!(
        state.newest_time_ms,
        BASE_MS + 3_600_000,
        "the hours' log time"
    );
    let newest: Vec<_> = latest.iter().map(|r| (r.customer, r.seq)).collect();
    assert_eq!(newest, vec![(1, 14), (2, 13)]);
    let late_row = all_ledger(s, GRID, Some(1), TimeRange::ALL, 100)
        .await
        .into_iter()
        .find(|r| r.seq == 15)
        .expect("the late line");
    assert!(late_row.backfill);
    assert_eq!(
        state.backfilled as usize, 16,
        "back-fill counted (old log times) once each"
    );
    // The fleet view: this grid, its last upload, the same cursors.
    let fleet = s.fleet(10).await.expect("fleet");
    assert_eq!(fleet.len(), 1, "{fleet:?}");
    assert_eq!(
        (fleet[0].grid, &fleet[0].cursors, fleet[0].records),
        (GRID, &state.cursors, 20)
    );
    assert!(
        fleet[0].last_upload_ms >= BASE_MS,
        "the central's clock at the upload"
    );
    assert!(
        s.fleet(0).await.expect("fleet").is_empty(),
        "bounded by its limit"
    );
    // Another grid sees nothing of this one.
    assert_eq!(s.cursor(GRID + 1, 1).await.expect("cursor"), 0);
    assert!(
        s.ledger_page(GRID + 1, None, TimeRange::ALL, None, 10)
            .await
            .expect("page")
            .rows
            .is_empty()
    );
    local_days(s).await;
    folded_days(s).await;
}

/// A day grid `subject` folded (`Output::Folded`) as record `seq`: `energy_wh` of energy
/// hours, charges of `charged_wh` for `charged_mpaisa` and fees of `fees_mpaisa`.
pub(crate) fn folded(
    seq: u64,
    day_start_ms: u64,
    utc_offset_min: i32,
    subject: sdk::FoldSubject,
    energy_wh: u64,
    charged: (u64, i64),
    fees_mpaisa: i64,
) -> (u64, OutboxRecord) {
    let out = sdk::Output::Folded(sdk::FoldedDay {
        day_start_ms,
        utc_offset_min,
        subject,
        first_seq: 0,
        end_seq: 100,
        totals: sdk::FoldTotals {
            records: 40,
            energy_wh,
            ledger_lines: 24,
            charged_wh: charged.0,
            charged_mpaisa: charged.1,
            fees_mpaisa,
            ..Default::default()
        },
    });
    (
        seq,
        OutboxRecord {
            index: 20_000 + seq,
            // Folded at least a week after the day it sums.
            time_ms: day_start_ms + 8 * DAY_MS,
            actor: ActorKind::Billing,
            output: sdk_codec::encode(&out),
        },
    )
}

/// Issue 25: a grid without its WAN for longer than its detail window folds old records into
/// per-day sums; the central adds each folded day into the office's totals (energy per day,
/// the fleet view's day energy and revenue, a customer's folded days) beside the detail it
/// did receive, counts a folded day resent after a reconnect once, and lets retention remove
/// it with its day.
async fn folded_days<S: Store>(s: &S) {
    const GRID: u64 = 90;
    const NEPAL: i32 = 345;
    const HOUR_MS: u64 = 3_600_000;
    let customer = |c| sdk::FoldSubject::Customer(sdk::CustomerId(c));
    // Local day A begins at Oct 11 2026 00:00 +05:45: before every other row of the suite, so
    // retention below (before Nov 1) takes only this test's rows.
    let day_a = localtime::local_day(BASE_MS - 50 * DAY_MS + 6 * HOUR_MS, NEPAL);
    let start_a = day_a * DAY_MS - 345 * 60_000;
    let (day_b, start_b) = (day_a + 1, start_a + DAY_MS);
    let ledger = Stream::Ledger.id();
    let first = BatchBody {
        stream: ledger,
        first_seq: 0,
        end_seq: 3,
        records: vec![
            folded(
                0,
                start_a,
                NEPAL,
                customer(1),
                5_000,
                (4_800, 48_000),
                1_000,
            ),
            folded(1, start_a, NEPAL, customer(2), 700, (700, 7_000), 0),
            charge(2, 1, start_b + 2 * HOUR_MS, 10),
        ],
    };
    assert_eq!(
        s.ingest(GRID, first.clone())
            .await
            .expect("folded")
            .next_seq,
        3
    );
    let energy = BatchBody {
        stream: Stream::Energy.id(),
        first_seq: 0,
        end_seq: 6,
        records: vec![
            // A feeder's folded energy is not billed energy: in no customer total.
            folded(
                3,
                start_a,
                NEPAL,
                sdk::FoldSubject::Feeder {
                    node: sdk::NodeId(1),
                    feeder: 2,
                },
                9_000,
                (0, 0),
                0,
            ),
            local_hour(
                4,
                start_b + HOUR_MS,
                NEPAL,
                sdk::EnergySubject::Customer(sdk::CustomerId(1)),
                40,
            ),
        ],
    };
    assert_eq!(s.ingest(GRID, energy).await.expect("hours").next_seq, 6);
    // The uplink came back, broke mid-batch and resent from an older cursor: records 1 and 2
    // again, with a later pass's fold of part of day B.
    let resent = BatchBody {
        stream: ledger,
        first_seq: 1,
        end_seq: 6,
        records: vec![
            first.records[1].clone(),
            first.records[2].clone(),
            folded(5, start_b, NEPAL, customer(1), 60, (50, 500), 0),
        ],
    };
    assert_eq!(s.ingest(GRID, resent).await.expect("resent").next_seq, 6);
    assert_eq!(s.ingest(GRID, first).await.expect("replayed").next_seq, 6);

    // Energy per local day: the folded customers' energy beside the hours received.
    assert_eq!(
        s.energy_per_day(GRID).await.expect("days"),
        vec![(day_a, 5_000 + 700), (day_b, 40 + 60)]
    );
    // The fleet view's day: folded charges and fees beside the lines received.
    let day = |start| TimeRange {
        from_ms: start,
        to_ms: start + DAY_MS,
    };
    assert_eq!(
        s.ledger_sums(GRID, day(start_a)).await.expect("day A"),
        (4_800 + 700, 48_000 + 1_000 + 7_000)
    );
    assert_eq!(
        s.ledger_sums(GRID, day(start_b)).await.expect("day B"),
        (10 + 50, 100 + 500)
    );
    // The folded days themselves: a customer's, and the grid's in pages of one.
    let seqs = |rows: Vec<FoldedDayRow>| rows.iter().map(|r| r.seq).collect::<Vec<_>>();
    let of = |c| async move {
        s.folded_days_page(GRID, c, TimeRange::ALL, None, 100)
            .await
            .expect("folded days")
            .rows
    };
    let one = of(Some(1)).await;
    assert_eq!(seqs(one.clone()), vec![0, 5]);
    assert_eq!(
        one.iter().map(|r| r.energy_wh).sum::<u64>()
            + s.customer_hours_page(GRID, 1, TimeRange::ALL, None, 100)
                .await
                .expect("hours")
                .rows
                .iter()
                .map(|h| h.energy_wh)
                .sum::<u64>(),
        5_000 + 60 + 40,
        "customer 1's energy: folded days and hours"
    );
    assert_eq!(seqs(of(Some(2)).await), vec![1]);
    assert!(of(Some(3)).await.is_empty());
    let mut after = None;
    let mut all = Vec::new();
    loop {
        let p = s
            .folded_days_page(GRID, None, TimeRange::ALL, after, 1)
            .await
            .expect("page");
        assert!(p.rows.len() <= 1);
        all.extend(p.rows);
        match p.next {
            Some(k) => after = Some(k),
            None => break,
        }
    }
    assert_eq!(seqs(all.clone()), vec![0, 1, 3, 5]);
    assert_eq!(all[2].kind, "feeder");
    assert_eq!((all[2].id, all[2].feeder, all[2].energy_wh), (1, 2, 9_000));
    let b = s
        .folded_days_page(GRID, None, day(start_b), None, 100)
        .await
        .expect("day B");
    assert_eq!(seqs(b.rows), vec![5]);
    let csv = crate::http::folded_csv_line(GRID, &all[0]);
    assert_eq!(
        csv,
        format!(
            "90,2026-10-11,{start_a},345,customer,1,0,0,0,100,40,5000,24,4800,48000,1000,0,0,0,0,true\n"
        )
    );

    // Retention before Nov 1 takes the folded days with their days.
    let nov1 = BASE_MS - 29 * DAY_MS;
    let pruned = s.prune_before(nov1).await.expect("prune");
    assert_eq!(pruned.folded_days, 4);
    assert!(s.energy_per_day(GRID).await.expect("days").is_empty());
    assert_eq!(
        s.ledger_sums(GRID, TimeRange::ALL).await.expect("sums"),
        (0, 0)
    );
    assert!(of(None).await.is_empty());
}

/// A local hour of grid energy as the host writes it (`Output::EnergyLocal`).
pub(crate) fn local_hour(
    seq: u64,
    start_ms: u64,
    utc_offset_min: i32,
    subject: sdk::EnergySubject,
    energy_wh: u64,
) -> (u64, OutboxRecord) {
    let out = sdk::Output::EnergyLocal {
        hour: sdk::EnergyHour {
            hour_start_ms: start_ms,
            subject,
            energy_wh,
        },
        utc_offset_min,
    };
    (
        seq,
        OutboxRecord {
            index: 9_000 + seq,
            time_ms: start_ms + 3_600_000,
            actor: ActorKind::Billing,
            output: sdk_codec::encode(&out),
        },
    )
}

/// Issue 21: a grid in UTC+5:45 sends 40 local hours of three customers (and a plant, which
/// is not billed energy) from 06:00 local; each local day the central serves equals the sum of
/// that local day's customer records, local midnight falling at 18:15 UTC. The export's CSV
/// carries local ISO-8601 times with the offset.
async fn local_days<S: Store>(s: &S) {
    const GRID: u64 = 545;
    const HOUR_MS: u64 = 3_600_000;
    const NEPAL: i32 = 345;
    // 06:00 local on Nov 30 = 00:15 UTC.
    let start = BASE_MS + 15 * 60_000;
    let mut records = Vec::new();
    let mut want = std::collections::BTreeMap::new();
    for h in 0..40u64 {
        let t = start + h * HOUR_MS;
        for c in 1..=3u32 {
            let wh = 100 * u64::from(c) + h;
            records.push(local_hour(
                records.len() as u64,
                t,
                NEPAL,
                sdk::EnergySubject::Customer(sdk::CustomerId(c)),
                wh,
            ));
            // The local day by hand: Nov 30 06:00 + h hours, local.
            *want.entry((6 + h) / 24).or_insert(0u64) += wh;
        }
        records.push(local_hour(
            records.len() as u64,
            t,
            NEPAL,
            sdk::EnergySubject::Plant(sdk::NodeId(1)),
            30_000,
        ));
    }
    let end = records.len() as u64;
    let batch = BatchBody {
        stream: 2,
        first_seq: 0,
        end_seq: end,
        records,
    };
    assert_eq!(
        s.ingest(GRID, batch).await.expect("local hours").next_seq,
        end
    );
    let days = s.energy_per_day(GRID).await.expect("days");
    let first = localtime::local_day(start, NEPAL);
    let want: Vec<(u64, u64)> = want.into_iter().map(|(d, wh)| (first + d, wh)).collect();
    assert_eq!(want.len(), 2, "the hours cross a local midnight");
    assert_eq!(days, want);
    // A UTC reading would have cut the days at 00:00 UTC (05:45 local) instead.
    assert_ne!(
        days.iter().map(|d| d.1).collect::<Vec<_>>(),
        vec![
            (0..24u64).map(|h| 600 + 3 * h).sum::<u64>(),
            (24..40u64).map(|h| 600 + 3 * h).sum::<u64>()
        ]
    );
    // The CSV: the first hour is 06:00 local, an hour after local midnight is 01:00.
    let p = s
        .energy_hours_page(GRID, TimeRange::ALL, None, 1_000)
        .await
        .expect("hours");
    let csv = crate::http::energy_hours_csv(GRID, &p.rows);
    assert!(
        csv.contains("545,2026-11-30T06:00:00+05:45,1795997700000,345,customer,1,0,100,0,"),
        "{csv}"
    );
    assert!(csv.contains(",2026-12-01T01:00:00+05:45,"), "{csv}");
    // Ledger lines carry no offset: the grid's hours place them, before its first hour too.
    let offsets = s
        .utc_offsets_at(GRID, vec![0, start + 90 * 60_000, u64::MAX])
        .await
        .expect("offsets");
    assert_eq!(offsets, vec![NEPAL; 3]);
    assert_eq!(
        s.utc_offsets_at(GRID + 1_000, vec![start])
            .await
            .expect("none"),
        vec![0],
        "UTC for a grid that sent no hours"
    );
    let line = LedgerRow {
        seq: 1,
        customer: 1,
        at_ms: start + 12 * HOUR_MS + 30 * 60_000,
        kind: "Charge".into(),
        energy_wh: 1,
        amount_mpaisa: -10,
        balance_after_mpaisa: 0,
        tariff_version: 1,
        backfill: false,
        log_index: 77,
        friendly: true,
        detail: String::new(),
        read_from_wh: Some(5),
        read_to_wh: Some(6),
        read_at_ms: None,
    };
    let csv = crate::http::ledger_csv(GRID, &[line], &offsets[1..2]);
    assert!(csv.ends_with(",false,0,77,true,,5,6,\n"), "{csv}");
    assert!(csv.contains(",2026-11-30T18:30:00+05:45,"), "{csv}");
}

#[tokio::test]
async fn the_store_suite_passes_on_redb() {
    let dir = tempfile::tempdir().expect("tempdir");
    suite(&redb_store(dir.path())).await;
}

#[tokio::test]
async fn the_store_suite_passes_on_postgres() {
    let Some(url) = test_database_url("the_store_suite_passes_on_postgres") else {
        return;
    };
    let _server = SERVER.read().await;
    let pg = fresh_pg(&url, "ghatta_suite").await;
    suite(&pg).await;
    // A batch whose log times span decades (a faulty clock) is refused before it makes a
    // partition per record.
    let wild = BatchBody {
        stream: 3,
        first_seq: 0,
        end_seq: 40,
        records: (0..40u64)
            .map(|q| charge(q, 1, BASE_MS + q * 400 * DAY_MS, 1))
            .collect(),
    };
    assert!(matches!(
        pg.ingest(7, wild).await,
        Err(StoreError::BatchSpan { months: 80, .. })
    ));
    assert_eq!(pg.cursor(7, 3).await.expect("cursor"), 0);
    // Migrating again (a restart) changes nothing.
    assert_eq!(
        pg.migrate().await.expect("migrate again"),
        crate::pg::MIGRATIONS.len() as i32
    );
    assert_eq!(
        pg.schema_version().await.expect("schema version"),
        (6, crate::pg::MIGRATIONS.len() as i32)
    );
    let mut cfg: tokio_postgres::Config = url.parse().expect("a PostgreSQL URL");
    cfg.dbname("ghatta_suite");
    let (admin, conn) = cfg
        .connect(tokio_postgres::NoTls)
        .await
        .expect("the suite database answers");
    tokio::spawn(conn);
    // Every column says its unit in its name (_ms, _wh, _mpaisa) or in a COMMENT.
    let bare: Vec<String> = admin
        .query(
            "SELECT c.relname || '.' || a.attname FROM pg_attribute a
             JOIN pg_class c ON c.oid = a.attrelid
             JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') AND NOT c.relispartition
               AND a.attnum > 0 AND NOT a.attisdropped
               AND a.attname !~ '_(ms|wh|mpaisa)$'
               AND col_description(c.oid, a.attnum) IS NULL
               AND c.relname <> 'schema_migrations'
             ORDER BY 1",
            &[],
        )
        .await
        .expect("the catalogue")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(
        bare.is_empty(),
        "columns without a unit or a comment: {bare:?}"
    );
    // A database a newer ghatta-central migrated further is refused, not written to.
    admin
        .batch_execute(
            "INSERT INTO schema_migrations (version, name, applied_ms) VALUES (99, 'future', 0)",
        )
        .await
        .expect("a migration from the future");
    let err = pg.migrate().await.expect_err("a newer schema is refused");
    assert!(
        matches!(
            err,
            StoreError::SchemaTooNew {
                newest: 99,
                known
            } if known == crate::pg::MIGRATIONS.len() as i32
        ),
        "{err}"
    );
    assert!(
        err.to_string().contains("run the newer ghatta-central"),
        "{err}"
    );
}

/// Regression guard for the ack-after-commit rule: a batch whose transaction fails inside
/// PostgreSQL (a constraint the test adds refuses record 7) is an error, so the connection
/// handler sends no ack, and nothing of it is kept; once the fault is gone the same batch is
/// stored whole.
#[tokio::test]
async fn a_batch_whose_transaction_fails_is_not_acked_and_leaves_nothing() {
    let Some(url) = test_database_url("a_batch_whose_transaction_fails_is_not_acked") else {
        return;
    };
    let _server = SERVER.read().await;
    let pg = fresh_pg(&url, "ghatta_failing_txn").await;
    let mut cfg: tokio_postgres::Config = url.parse().expect("a PostgreSQL URL");
    cfg.dbname("ghatta_failing_txn");
    let (admin, conn) = cfg
        .connect(tokio_postgres::NoTls)
        .await
        .expect("the test database answers");
    tokio::spawn(conn);
    admin
        .batch_execute("ALTER TABLE wan_records ADD CONSTRAINT test_fault CHECK (seq <> 7)")
        .await
        .expect("the fault is injected");
    let err = pg.ingest(9, ledger_batch(0, 10)).await;
    assert!(matches!(err, Err(StoreError::Postgres(_))), "{err:?}");
    assert!(
        err.unwrap_err()
            .to_string()
            .contains("nothing of the batch"),
        "the error says nothing was kept"
    );
    assert_eq!(pg.cursor(9, 1).await.expect("cursor"), 0);
    assert!(pg.grid_state(9).await.expect("state").is_none());
    let kept: i64 = admin
        .query_one("SELECT count(*) FROM wan_records", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(kept, 0);
    admin
        .batch_execute("ALTER TABLE wan_records DROP CONSTRAINT test_fault")
        .await
        .expect("the fault is healed");
    assert_eq!(
        pg.ingest(9, ledger_batch(0, 10))
            .await
            .expect("ingest")
            .next_seq,
        10
    );
    let (state, _) = pg.grid_state(9).await.expect("state").expect("a grid");
    assert_eq!(state.records, 10);
}

/// Two uploaders of one stream at once (a leader change mid-upload: the old and the new
/// leader both send) store every record exactly once: the cursor row lock orders them.
async fn concurrent_uploads_store_each_record_once<S: Store + Clone>(s: S) {
    let mut tasks = Vec::new();
    for uploader in 0..4u64 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            // Each uploader walks the same 200 records in batches of 20, offset by 5 per
            // uploader, resending from the ack as a grid does.
            let mut next = 0u64;
            while next < 200 {
                let first = next.saturating_sub(5 * uploader);
                let ack = s
                    .ingest(11, ledger_batch(first, (first + 20).min(200)))
                    .await
                    .expect("ingest");
                next = ack.next_seq.max(next);
            }
        }));
    }
    for t in tasks {
        t.await.expect("uploader");
    }
    let (state, _) = s.grid_state(11).await.expect("state").expect("a grid");
    assert_eq!((state.records, state.cursors.get(&1)), (200, Some(&200)));
    let rows = all_ledger(&s, 11, None, TimeRange::ALL, 10_000).await;
    let seqs: BTreeSet<u64> = rows.iter().map(|r| r.seq).collect();
    assert_eq!((rows.len(), seqs.len()), (200, 200));
}

/// A grid's three streams uploading at once from its first batch on (each stream its own
/// connection): the grid's record count is every stream's records. On PostgreSQL the first
/// batches used to race on the grid's not-yet-existing row and lose a batch's count, or
/// deadlock with each other's customer rows (charges on every stream, harsher than a grid,
/// whose charges are on the ledger stream only, makes that likely).
async fn concurrent_streams_count_every_record<S: Store + Clone>(s: S) {
    let mut tasks = Vec::new();
    for stream in Stream::ALL {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            for first in (0..200).step_by(20) {
                let b = BatchBody {
                    stream: stream.id(),
                    first_seq: first,
                    end_seq: first + 20,
                    records: (first..first + 20)
                        .map(|q| charge(q, 1, BASE_MS + q, 1))
                        .collect(),
                };
                s.ingest(12, b).await.expect("ingest");
            }
        }));
    }
    for t in tasks {
        t.await.expect("uploader");
    }
    let (state, _) = s.grid_state(12).await.expect("state").expect("a grid");
    assert_eq!(state.records, 600, "{state:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_streams_of_one_grid_count_every_record() {
    let dir = tempfile::tempdir().expect("tempdir");
    concurrent_streams_count_every_record(redb_store(dir.path())).await;
    if let Some(url) = test_database_url("concurrent_streams_of_one_grid_count_every_record") {
        let _server = SERVER.read().await;
        for round in 0..5 {
            let pg = fresh_pg(&url, &format!("ghatta_streams_{round}")).await;
            concurrent_streams_count_every_record(pg).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_uploads_of_one_stream_store_each_record_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    concurrent_uploads_store_each_record_once(redb_store(dir.path())).await;
    if let Some(url) = test_database_url("concurrent_uploads_of_one_stream_store_each_record_once")
    {
        let _server = SERVER.read().await;
        concurrent_uploads_store_each_record_once(fresh_pg(&url, "ghatta_concurrent").await).await;
    }
}

/// The whole central on PostgreSQL (`--database`): the HTTP routes read from it.
#[tokio::test]
async fn a_central_started_with_a_database_serves_its_routes_from_postgres() {
    let Some(url) = test_database_url("a_central_started_with_a_database_serves_its_routes") else {
        return;
    };
    let _server = SERVER.read().await;
    // A fresh database, then the central connects to it by URL as the command line does.
    drop(fresh_pg(&url, "ghatta_central_e2e").await);
    let db_url = format!(
        "{}/ghatta_central_e2e",
        url.rsplit_once('/').map_or(url.as_str(), |(base, _)| base)
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let central = Central::start(crate::view_suite::config(dir.path(), Some(db_url)))
        .await
        .expect("the central starts on PostgreSQL");
    assert!(matches!(central.backend(), Backend::Postgres(_)));
    central
        .backend()
        .ingest(3, ledger_batch(0, 12))
        .await
        .expect("ingest");
    let body = http_get(
        central.http_addr,
        central.http_access.token(),
        "/v1/grids/3/export.json?limit=5",
    )
    .await;
    let page: serde_json::Value = serde_json::from_str(&body).expect("a JSON page");
    assert_eq!(page["rows"].as_array().expect("rows").len(), 5);
    assert_eq!(page["next"].as_str(), Some("1.8"));
    let body = http_get(
        central.http_addr,
        central.http_access.token(),
        "/v1/grids/3",
    )
    .await;
    let grid: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(grid["state"]["records"].as_u64(), Some(12), "{grid}");
    let body = http_get(central.http_addr, central.http_access.token(), "/v1/grids").await;
    let fleet: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(fleet["grids"][0]["grid"].as_u64(), Some(3), "{fleet}");
    assert_eq!(
        fleet["grids"][0]["cursors"]["1"].as_u64(),
        Some(12),
        "{fleet}"
    );
    assert_eq!(fleet["truncated"].as_bool(), Some(false));
    // The embedded-only synchronous reads say so rather than answer wrongly.
    assert!(matches!(central.cursor(3, 1), Err(StoreError::NotEmbedded)));
}

/// GET `path` with the bearer token; the body of a 200 answer.
pub(crate) async fn http_get(addr: std::net::SocketAddr, token: &str, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    s.write_all(
        format!(
            "GET {path} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
        )
        .as_bytes(),
    )
    .await
    .expect("write");
    let mut out = String::new();
    s.read_to_string(&mut out).await.expect("read");
    let (head, body) = out.split_once("\r\n\r\n").expect("an HTTP answer");
    assert!(head.starts_with("HTTP/1.1 200"), "{path}: {head}\n{body}");
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        ghatta_proto::chunked::decode_text(body.as_bytes())
            .unwrap_or_else(|e| panic!("{path}: {e}"))
    } else {
        body.to_string()
    }
}

/// Grids back-filling at once in the ingest benchmark.
const BENCH_GRIDS: u64 = 10;
/// Hours each grid back-fills: a week offline.
const BENCH_HOURS: u64 = 168;
/// Customers per benchmark grid when `GHATTA_BENCH_CUSTOMERS` does not say: small, so the
/// test stays a few seconds in every CI run; BENCHMARKS.md runs it with 300 (a large
/// grid: ~7,400 hourly records a day plus the ledger).
const BENCH_CUSTOMERS_DEFAULT: u64 = 10;
/// Records per batch: ~500 records are ~40 KiB raw, inside the WAN's 64 KiB batch.
const BENCH_BATCH_RECORDS: u64 = 500;
/// The grid whose one customer has a year of hourly charges (the ledger-read timing).
const BENCH_YEAR_GRID: u64 = 99;
/// A year of hourly charges.
const BENCH_YEAR_LINES: u64 = 8_760;

fn bench_customers() -> u64 {
    std::env::var("GHATTA_BENCH_CUSTOMERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|c| *c > 0)
        .unwrap_or(BENCH_CUSTOMERS_DEFAULT)
}

/// Record `n` of a benchmark grid's `stream` with `customers` customers: hour `n /
/// customers`, customer `n % customers`; a charge on the ledger stream, a local hour (Nepal)
/// on the energy stream.
fn bench_record(stream: Stream, n: u64, customers: u64) -> (u64, OutboxRecord) {
    let (hour, c) = (n / customers, (n % customers) as u32 + 1);
    let start = BASE_MS + hour * 3_600_000;
    match stream {
        Stream::Energy => local_hour(
            n,
            start,
            345,
            sdk::EnergySubject::Customer(sdk::CustomerId(c)),
            50 + n % 7,
        ),
        _ => charge(n, c, start + u64::from(c) * 10, 50 + n % 7),
    }
}

/// Uploads `end` records of `stream` of `grid` in batches, as a back-filling grid does.
async fn bench_upload<S: Store>(s: &S, grid: u64, stream: Stream, end: u64, customers: u64) {
    let mut first = 0;
    while first < end {
        let last = (first + BENCH_BATCH_RECORDS).min(end);
        let b = BatchBody {
            stream: stream.id(),
            first_seq: first,
            end_seq: last,
            records: (first..last)
                .map(|n| bench_record(stream, n, customers))
                .collect(),
        };
        let ack = s.ingest(grid, b).await.expect("ingest");
        assert_eq!((ack.next_seq, ack.gap), (last, false));
        first = last;
    }
}

/// [`BENCH_GRIDS`] grids each back-filling a week of hourly charges and energy hours (two
/// streams, each its own uploader) at once into `s`; checks every record is stored once and
/// answers (records, records per second).
async fn ingest_rate<S: Store + Clone>(s: S) -> (u64, f64) {
    let customers = bench_customers();
    let per_stream = BENCH_HOURS * customers;
    let started = std::time::Instant::now();
    let mut tasks = Vec::new();
    for grid in 0..BENCH_GRIDS {
        for stream in [Stream::Ledger, Stream::Energy] {
            let s = s.clone();
            tasks.push(tokio::spawn(async move {
                bench_upload(&s, 100 + grid, stream, per_stream, customers).await;
            }));
        }
    }
    for t in tasks {
        t.await.expect("grid uploader");
    }
    let secs = started.elapsed().as_secs_f64();
    for grid in 0..BENCH_GRIDS {
        let (state, _) = s
            .grid_state(100 + grid)
            .await
            .expect("state")
            .expect("grid");
        assert_eq!(state.records, 2 * per_stream, "grid {grid}");
    }
    let records = BENCH_GRIDS * 2 * per_stream;
    (records, records as f64 / secs)
}

/// Times the full fleet view (`fleet::fleet_view`, what `GET /v1/grids` and the fleet page
/// serve: each grid's today and alarms too) and one customer's year of ledger (walked in
/// pages of 1,000), 50 times each: "p50/p99 ms" of each.
async fn query_times<S: Store>(s: &S) -> String {
    const RUNS: usize = 50;
    bench_upload(s, BENCH_YEAR_GRID, Stream::Ledger, BENCH_YEAR_LINES, 1).await;
    let pct = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        format!("{:.2}/{:.2}", v[v.len() / 2], v[v.len() * 99 / 100])
    };
    let now = BASE_MS + 3 * DAY_MS;
    let (mut fleet, mut ledger) = (Vec::new(), Vec::new());
    for _ in 0..RUNS {
        let t = std::time::Instant::now();
        let (f, _) = crate::fleet::fleet_view(s, now, 6 * 3_600_000)
            .await
            .expect("fleet");
        fleet.push(t.elapsed().as_secs_f64() * 1e3);
        assert_eq!(f.len() as u64, BENCH_GRIDS + 1);
        assert!(f.iter().any(|g| g.today.energy_wh > 0));
        let t = std::time::Instant::now();
        let rows = all_ledger(s, BENCH_YEAR_GRID, Some(1), TimeRange::ALL, 1_000).await;
        ledger.push(t.elapsed().as_secs_f64() * 1e3);
        assert_eq!(rows.len() as u64, BENCH_YEAR_LINES);
    }
    format!(
        "fleet view of {} grids p50/p99 {} ms, a customer's year ({BENCH_YEAR_LINES} ledger lines) p50/p99 {} ms",
        BENCH_GRIDS + 1,
        pct(fleet),
        pct(ledger)
    )
}

/// The ingest benchmark (BENCHMARKS.md, "The central's stores"): the same batches into redb
/// and into PostgreSQL, with the disk each store then uses per record. Run with
/// `-- --nocapture` to see the numbers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_rate_of_ten_grids_back_filling_at_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let redb = redb_store(dir.path());
    let (n, rate) = ingest_rate(redb.clone()).await;
    let records = n as f64;
    let bytes = std::fs::metadata(dir.path().join("central.redb"))
        .expect("the redb file")
        .len() as f64;
    println!(
        "bench redb: {n} records, {rate:.0} records/s, {:.0} bytes/record on disk",
        bytes / records
    );
    println!("bench redb: {}", query_times(&redb).await);
    let Some(url) = test_database_url("ingest_rate_of_ten_grids_back_filling_at_once") else {
        return;
    };
    let _server = SERVER.read().await;
    let pg = fresh_pg(&url, "ghatta_bench").await;
    let mut cfg: tokio_postgres::Config = url.parse().expect("a PostgreSQL URL");
    cfg.dbname("ghatta_bench");
    let (admin, conn) = cfg
        .connect(tokio_postgres::NoTls)
        .await
        .expect("the bench database answers");
    tokio::spawn(conn);
    let size = |admin: tokio_postgres::Client| async move {
        let b: i64 = admin
            .query_one("SELECT pg_database_size(current_database())", &[])
            .await
            .expect("size")
            .get(0);
        (admin, b)
    };
    let (admin, empty) = size(admin).await;
    let (_, rate) = ingest_rate(pg.clone()).await;
    admin.batch_execute("CHECKPOINT").await.expect("checkpoint");
    let (_, full) = size(admin).await;
    println!(
        "bench postgres: {n} records, {rate:.0} records/s, {:.0} bytes/record on disk (tables and indexes, WAL not counted)",
        (full - empty) as f64 / records
    );
    println!("bench postgres: {}", query_times(&pg).await);
}

/// How long the fault test keeps PostgreSQL down: long enough that the uploader's retries
/// meet a refused connection many times (each retry waits [`FAULT_RETRY`]), short enough for
/// every CI run.
const FAULT_DOWN: std::time::Duration = std::time::Duration::from_secs(3);
/// The fault test's uploader waits this long after a failed batch, as a grid backs off.
const FAULT_RETRY: std::time::Duration = std::time::Duration::from_millis(100);
/// Records the fault test back-fills, in batches of [`FAULT_BATCH`].
const FAULT_RECORDS: u64 = 3_000;
const FAULT_BATCH: u64 = 100;

/// The test server's `ctl.sh stop|start` (written by `.ci/postgres.sh`), as the user it runs.
pub(crate) fn pg_ctl(what: &str) {
    let dir = std::env::var("GHATTA_TEST_PGDATA").expect("GHATTA_TEST_PGDATA");
    let out = std::process::Command::new("sh")
        .arg(format!("{dir}/ctl.sh"))
        .arg(what)
        .output()
        .expect("ctl.sh runs");
    assert!(
        out.status.success(),
        "ctl.sh {what}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// PostgreSQL crashes (`pg_ctl -m immediate`) in the middle of a back-fill and comes back
/// after [`FAULT_DOWN`]: the uploader's batches fail meanwhile (never acked), it resends
/// from its last ack, the pool reconnects, and every record is stored exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_crashing_mid_backfill_loses_and_doubles_nothing() {
    let Some(url) = test_database_url("postgres_crashing_mid_backfill_loses_and_doubles_nothing")
    else {
        return;
    };
    if std::env::var("GHATTA_TEST_PGDATA").is_err() {
        assert!(
            !std::env::var("CI").is_ok_and(|v| v == "true"),
            "GHATTA_TEST_PGDATA is not set, and CI=true: start the server with .ci/postgres.sh"
        );
        eprintln!(
            "postgres_crashing_mid_backfill: skipped (the server is not one .ci/postgres.sh started)"
        );
        return;
    }
    let _server = SERVER.write().await;
    let pg = fresh_pg(&url, "ghatta_crash").await;
    let acked = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let failures = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let uploader = {
        let (pg, acked, failures) = (pg.clone(), acked.clone(), failures.clone());
        tokio::spawn(async move {
            let deadline = std::time::Instant::now() + 20 * FAULT_DOWN;
            let mut next = 0;
            while next < FAULT_RECORDS {
                assert!(
                    std::time::Instant::now() < deadline,
                    "the back-fill never finished"
                );
                let end = (next + FAULT_BATCH).min(FAULT_RECORDS);
                match pg.ingest(21, ledger_batch(next, end)).await {
                    Ok(ack) => {
                        assert!(!ack.gap, "resending from the ack never leaves a hole");
                        next = ack.next_seq;
                        acked.store(next, std::sync::atomic::Ordering::SeqCst);
                    }
                    Err(_) => {
                        failures.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        tokio::time::sleep(FAULT_RETRY).await;
                    }
                }
            }
        })
    };
    while acked.load(std::sync::atomic::Ordering::SeqCst) < FAULT_RECORDS / 3 {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    tokio::task::spawn_blocking(|| pg_ctl("stop"))
        .await
        .expect("stop");
    let at_crash = acked.load(std::sync::atomic::Ordering::SeqCst);
    tokio::time::sleep(FAULT_DOWN).await;
    assert!(
        acked.load(std::sync::atomic::Ordering::SeqCst) <= at_crash + FAULT_BATCH,
        "nothing is acked while the server is down"
    );
    tokio::task::spawn_blocking(|| pg_ctl("start"))
        .await
        .expect("start");
    uploader.await.expect("the uploader finishes");
    assert!(
        failures.load(std::sync::atomic::Ordering::SeqCst) > 0,
        "the crash was seen"
    );
    let (state, _) = pg.grid_state(21).await.expect("state").expect("grid");
    assert_eq!(
        (state.records, state.cursors.get(&1)),
        (FAULT_RECORDS, Some(&FAULT_RECORDS))
    );
    let rows = all_ledger(&pg, 21, None, TimeRange::ALL, 10_000).await;
    let seqs: BTreeSet<u64> = rows.iter().map(|r| r.seq).collect();
    assert_eq!(
        (rows.len(), seqs.len()),
        (FAULT_RECORDS as usize, FAULT_RECORDS as usize)
    );
}
