//! The central's tests: ingest, dedupe, back-fill, queries and connection limits.

use ghatta_actor_sdk::{self as sdk, codec as sdk_codec};
use ghatta_proto::keys::SecretKey;
use ghatta_proto::outbox::{ActorKind, OutboxRecord};
use ghatta_proto::wan::BatchBody;
use ghatta_proto::wan::channel::{self, AllowedGrids};

use crate::http::energy_hours_csv;
use crate::*;

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
    let central = Central::start(CentralConfig {
        listen: "127.0.0.1:0".into(),
        http_listen: "127.0.0.1:0".into(),
        data_dir: dir.path().to_path_buf(),
        secret: SecretKey::from_bytes([1; 32]),
        grids: AllowedGrids::from([(3, vec![SecretKey::from_bytes([2; 32]).public()])]),
        backfill_after_ms: BACKFILL_AFTER_MS_DEFAULT,
    })
    .await
    .expect("central starts");
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
    let ack = central.inner.ingest(3, &batch).expect("ingest");
    assert_eq!(ack.next_seq, 3);
    // A retransmission changes nothing.
    central.inner.ingest(3, &batch).expect("ingest again");
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
    assert!(csv.contains("3,7200000,feeder,2,1,2500,1,"), "{csv}");
}
