//! The central's tests: ingest, dedupe, back-fill, queries and connection limits.

use ghatta_actor_sdk::{self as sdk, codec as sdk_codec};
use ghatta_proto::keys::SecretKey;
use ghatta_proto::outbox::{ActorKind, OutboxRecord};
use ghatta_proto::wan::BatchBody;
use ghatta_proto::wan::channel::{self, AllowedGrids};

use crate::http::energy_hours_csv;
use crate::*;

/// A central on loopback ports with grid 3 listed, its data in `dir`, answering HTTP to the
/// loopback names and `hosts`.
async fn start(dir: &std::path::Path, hosts: Vec<String>) -> Central {
    Central::start(CentralConfig {
        listen: "127.0.0.1:0".into(),
        http_listen: "127.0.0.1:0".into(),
        data_dir: dir.to_path_buf(),
        database: None,
        secret: SecretKey::from_bytes([1; 32]),
        grids: AllowedGrids::from([(3, vec![SecretKey::from_bytes([2; 32]).public()])]),
        backfill_after_ms: BACKFILL_AFTER_MS_DEFAULT,
        http_token_file: None,
        http_hosts: hosts,
        retention_months: None,
    })
    .await
    .expect("central starts")
}

/// A grid that authenticates and then says nothing is cut off after [`IDLE_TIMEOUT`],
/// counted, and not before (paused clock: the 15 minutes pass at once).
#[tokio::test(start_paused = true)]
async fn a_silent_authenticated_grid_is_closed_after_the_idle_timeout() {
    let dir = tempfile::tempdir().expect("tempdir");
    let central_key = SecretKey::from_bytes([1; 32]);
    let grid_key = SecretKey::from_bytes([2; 32]);
    let store = CentralStore::open(
        dir.path(),
        central_key.clone(),
        AllowedGrids::from([(3, vec![grid_key.public()])]),
        BACKFILL_AFTER_MS_DEFAULT,
    )
    .expect("store opens");
    let (grid_end, central_end) = tokio::io::duplex(64 * 1024);
    let (crd, cwr) = tokio::io::split(central_end);
    let serving = {
        let store = store.clone();
        tokio::spawn(async move { store.serve(crd, cwr, "test grid").await })
    };
    let (mut rd, mut wr) = tokio::io::split(grid_end);
    let started = tokio::time::Instant::now();
    let (_sealer, mut opener) =
        channel::connect(&mut rd, &mut wr, &grid_key, &central_key.public(), 3)
            .await
            .expect("handshake");
    tokio::time::sleep(IDLE_TIMEOUT - std::time::Duration::from_secs(1)).await;
    assert!(!serving.is_finished(), "closed before the idle timeout");
    assert_eq!(store.stats().idle_closed, 0);
    // The central hangs up: the grid's next read sees the end of the stream.
    let read = tokio::time::timeout(2 * IDLE_TIMEOUT, opener.read_frame(&mut rd)).await;
    assert!(
        matches!(read, Ok(Err(_))),
        "the central must close the silent connection"
    );
    serving.await.expect("serve ends");
    assert!(started.elapsed() >= IDLE_TIMEOUT);
    let stats = store.stats();
    assert_eq!(
        (stats.handshakes_ok, stats.idle_closed),
        (1, 1),
        "{stats:?}"
    );
}

#[tokio::test]
async fn energy_hours_are_stored_once_and_served_as_rows_and_csv() {
    let dir = tempfile::tempdir().expect("tempdir");
    let central = start(dir.path(), Vec::new()).await;
    let hour = |seq: u64, subject, wh| {
        let out = sdk::Output::EnergyHour(sdk::EnergyHour {
            hour_start_ms: 7_200_000,
            subject,
            energy_wh: wh,
        });
        (
            seq,
            OutboxRecord {
                index: seq,
                time_ms: 10_800_000,
                actor: ActorKind::Balancing,
                output: sdk_codec::encode(&out),
            },
        )
    };
    let batch = BatchBody {
        stream: 2,
        first_seq: 0,
        end_seq: 3,
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
        ],
    };
    let ack = central
        .backend()
        .ingest(3, batch.clone())
        .await
        .expect("ingest");
    assert_eq!(ack.next_seq, 3);
    // A retransmission changes nothing.
    central
        .backend()
        .ingest(3, batch)
        .await
        .expect("ingest again");
    let rows = central.energy_hours(3).expect("rows");
    let got: Vec<(&str, u64, u16, u64)> = rows
        .iter()
        .map(|r| (r.kind.as_str(), r.id, r.feeder, r.energy_wh))
        .collect();
    assert_eq!(
        got,
        vec![
            ("customer", 42, 0, 17),
            ("feeder", 2, 1, 2_500),
            ("plant", 2, 0, 3_000)
        ]
    );
    let csv = energy_hours_csv(3, &rows);
    assert_eq!(csv.lines().count(), 4);
    // A UTC hour as grids wrote before local hours: offset 0, local time is UTC.
    assert!(
        csv.contains("3,1970-01-01T02:00:00Z,7200000,0,feeder,2,1,2500,1,"),
        "{csv}"
    );
}

/// GET `path` from the central's HTTP API over a plain TCP connection, as an office script
/// would; answers (status code, headers, body).
async fn get(
    addr: std::net::SocketAddr,
    host: &str,
    token: Option<&str>,
    path: &str,
) -> (u16, String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n{auth}Connection: close\r\n\r\n")
            .as_bytes(),
    )
    .await
    .expect("write");
    let mut out = String::new();
    s.read_to_string(&mut out).await.expect("read");
    let (head, body) = out.split_once("\r\n\r\n").expect("an HTTP answer");
    let code = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("a status code");
    let head = head.to_ascii_lowercase();
    let body = if head.contains("transfer-encoding: chunked") {
        ghatta_proto::chunked::decode_text(body.as_bytes())
            .unwrap_or_else(|e| panic!("{path}: {e}"))
    } else {
        body.to_string()
    };
    (code, head, body)
}

/// The office's API: nothing without the token but the health check, nothing for a host name
/// that is not this server's, and a ledger served in pages that together hold every row once,
/// filtered by log time.
#[tokio::test]
async fn the_http_api_needs_the_token_and_serves_ledgers_in_bounded_pages() {
    let dir = tempfile::tempdir().expect("tempdir");
    let central = start(dir.path(), vec!["office.example".into()]).await;
    // 25 charges for each of customers 1 and 2, one a minute from t = 60 s.
    let charge = |seq: u64, customer: u32, at_ms: u64| {
        let out = sdk::Output::Ledger(sdk::LedgerRecord {
            customer: sdk::CustomerId(customer),
            at_ms,
            kind: sdk::LedgerKind::Charge {
                energy_wh: 10,
                amount_mpaisa: -100,
                friendly: false,
            },
            balance_after_mpaisa: 1_000,
            tariff_version: 1,
        });
        (
            seq,
            OutboxRecord {
                index: seq,
                time_ms: at_ms,
                actor: ActorKind::Billing,
                output: sdk_codec::encode(&out),
            },
        )
    };
    let records: Vec<_> = (0..50u64)
        .map(|seq| charge(seq, 1 + (seq % 2) as u32, 60_000 * (1 + seq / 2)))
        .collect();
    let batch = BatchBody {
        stream: 1,
        first_seq: 0,
        end_seq: 50,
        records,
    };
    central
        .backend()
        .ingest(3, batch.clone())
        .await
        .expect("ingest");
    let addr = central.http_addr;
    let token = ghatta_proto::token::read(&dir.path().join("http.token")).expect("token file");
    assert_eq!(token, central.http_access.token());

    // Without the token: only the health check.
    let (code, _, _) = get(addr, "127.0.0.1", None, "/v1/health").await;
    assert_eq!(code, 200);
    for path in ["/v1/status", "/v1/grids/3", "/v1/grids/3/export.json"] {
        let (code, _, body) = get(addr, "127.0.0.1", None, path).await;
        assert_eq!(code, 401, "{path}: {body}");
        assert!(
            body.contains("http.token"),
            "says where the token is: {body}"
        );
        let (code, _, _) = get(addr, "127.0.0.1", Some(&"0".repeat(64)), path).await;
        assert_eq!(code, 401, "{path} with a wrong token");
    }
    // A page fetched through a rebinding name is refused, even with the token.
    let (code, _, body) = get(addr, "evil.example:7780", Some(&token), "/v1/status").await;
    assert_eq!(code, 421, "{body}");
    assert!(body.contains("--http-host"), "{body}");
    let (code, _, _) = get(addr, "office.example", Some(&token), "/v1/status").await;
    assert_eq!(code, 200);

    // The export in pages of 7 rows: every row once, in (customer, seq) order.
    let mut rows = Vec::new();
    let mut after = String::new();
    let mut pages = 0;
    loop {
        let path = format!("/v1/grids/3/export.json?limit=7{after}");
        let (code, _, body) = get(addr, "localhost", Some(&token), &path).await;
        assert_eq!(code, 200, "{body}");
        let page: serde_json::Value = serde_json::from_str(&body).expect("JSON page");
        let got = page["rows"].as_array().expect("rows");
        assert!(got.len() <= 7);
        rows.extend(
            got.iter()
                .map(|r| (r["customer"].as_u64(), r["seq"].as_u64())),
        );
        pages += 1;
        match page["next"].as_str() {
            Some(n) => after = format!("&after={n}"),
            None => break,
        }
    }
    assert_eq!(pages, 8, "50 rows in pages of 7");
    let mut want: Vec<_> = (0..50u64)
        .map(|seq| (Some(1 + seq % 2), Some(seq)))
        .collect();
    want.sort();
    assert_eq!(rows, want);

    // One customer's ledger in a time window: minutes 5..10 (log time 300,000..600,000 ms).
    let (code, _, body) = get(
        addr,
        "localhost",
        Some(&token),
        "/v1/grids/3/customers/2/ledger?from_ms=300000&to_ms=600000",
    )
    .await;
    assert_eq!(code, 200, "{body}");
    let page: serde_json::Value = serde_json::from_str(&body).expect("JSON page");
    let at: Vec<u64> = page["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .map(|r| r["at_ms"].as_u64().expect("at_ms"))
        .collect();
    assert_eq!(at, vec![300_000, 360_000, 420_000, 480_000, 540_000]);
    assert!(page["next"].is_null());

    // CSV pages: the header once, the cursor in a header, appended pages make one file.
    let (code, head, first) = get(
        addr,
        "localhost",
        Some(&token),
        "/v1/grids/3/export.csv?limit=30",
    )
    .await;
    assert_eq!(code, 200);
    let next = head
        .lines()
        .find_map(|l| l.strip_prefix("x-next-cursor: "))
        .expect("a cursor for the second page")
        .to_string();
    let (_, head, second) = get(
        addr,
        "localhost",
        Some(&token),
        &format!("/v1/grids/3/export.csv?limit=30&after={next}"),
    )
    .await;
    assert!(!head.contains("x-next-cursor"), "two pages hold 50 rows");
    let all = first + &second;
    assert_eq!(all.lines().count(), 51, "{all}");
    assert_eq!(all.matches("grid,customer").count(), 1);

    // A wrong parameter is a 400 that says what is wrong.
    for (path, says) in [
        ("/v1/grids/3/export.json?limit=100000", "follow `next`"),
        ("/v1/grids/3/export.json?after=x", "CUSTOMER.SEQ"),
        (
            "/v1/grids/3/energy-hours?since=1",
            "unknown query parameter",
        ),
    ] {
        let (code, _, body) = get(addr, "localhost", Some(&token), path).await;
        assert_eq!(code, 400, "{path}");
        assert!(body.contains(says), "{path}: {body}");
    }
}
