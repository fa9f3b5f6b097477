//! The PZEM-004T v3 driver through the Linux board and tokio-serial, over a pseudo-terminal
//! whose slave path is configured exactly as a real /dev/ttyUSB0, against `meter_sim`; and an
//! adapter unplugged and plugged back under the same path.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use ghatta_hal::linux::config::{CustomerMeterConfig, FeederMeterConfig, GridConfig, ModbusConfig};
use ghatta_hal::pzem::{self, PzemReading};
use ghatta_hal::{EnergyMeters, ErrorKind, GridMeter, LinuxBoard, LinuxBoardConfig, ModbusStats};

use crate::meter_sim::{self, MeterSim, Reply};

/// Reply timeout: short so the timeout cases run quickly, long enough that a loaded CI
/// machine does not turn a slow thread into a spurious timeout (the config accepts 20 ms up;
/// a pty answers in well under a millisecond).
const TEST_TIMEOUT_MS: u32 = 150;
const CUSTOMER: u32 = 17;
const ADDRESS: u8 = 5;

fn reading(power_dw: u32, energy_wh: u32) -> PzemReading {
    PzemReading {
        voltage_dv: 2_296,
        current_ma: 4_350,
        power_dw,
        energy_wh,
        frequency_dhz: 499,
        power_factor_centi: 96,
        alarm: false,
    }
}

fn board_for(sim: &MeterSim, grid: Option<GridConfig>) -> LinuxBoard {
    board_on(&sim.path, grid)
}

fn board_on(port: &Path, grid: Option<GridConfig>) -> LinuxBoard {
    let config = LinuxBoardConfig {
        modbus: Some(ModbusConfig {
            port: port.to_path_buf(),
            baud: 9_600,
            response_timeout_ms: TEST_TIMEOUT_MS,
            retries: 2,
            meters: vec![CustomerMeterConfig {
                customer: CUSTOMER,
                address: ADDRESS,
            }],
        }),
        grid,
        ..LinuxBoardConfig::default()
    };
    match LinuxBoard::open(&config) {
        Ok(b) => b,
        Err(e) => panic!("opening the board on {}: {e}", port.display()),
    }
}

fn one_meter() -> (MeterSim, LinuxBoard) {
    let sim = meter_sim::start(BTreeMap::from([(ADDRESS, reading(9_876, 123_456))]));
    let board = board_for(&sim, None);
    (sim, board)
}

fn stats(board: &LinuxBoard) -> ModbusStats {
    board.modbus_stats().expect("the board has a Modbus line")
}

#[tokio::test]
async fn good_reading_is_decoded_in_hal_units() {
    let (_sim, mut board) = one_meter();
    let m = board.read_energy(CUSTOMER).await.expect("good reading");
    assert_eq!(m.total_wh, 123_456);
    assert_eq!(m.voltage_dv, 2_296);
    assert_eq!(m.current_ma, 4_350);
    assert_eq!(m.power_w, 988); // 987.6 W rounds to 988
    assert_eq!(m.frequency_mhz, 49_900);
    let s = stats(&board);
    assert_eq!((s.requests, s.ok, s.retries), (1, 1, 0));
}

#[tokio::test]
async fn one_crc_error_is_retried_and_counted() {
    let (sim, mut board) = one_meter();
    sim.push(Reply::BadCrc);
    let m = board.read_energy(CUSTOMER).await.expect("retry succeeds");
    assert_eq!(m.total_wh, 123_456);
    let s = stats(&board);
    assert_eq!((s.crc_errors, s.retries, s.ok), (1, 1, 1));
    assert_eq!(sim.requests().len(), 2);
}

#[tokio::test]
async fn persistent_crc_errors_fail_with_crc_and_say_what_to_check() {
    let (sim, mut board) = one_meter();
    for _ in 0..3 {
        sim.push(Reply::BadCrc);
    }
    let e = board.read_energy(CUSTOMER).await.expect_err("never good");
    assert_eq!(e.kind, ErrorKind::Crc);
    let text = e.to_string();
    assert!(text.contains(&sim.path.display().to_string()), "{text}");
    assert!(
        text.contains("address 5") && text.contains("customer 17"),
        "{text}"
    );
    assert!(text.contains("wiring"), "{text}");
    let s = stats(&board);
    assert_eq!((s.crc_errors, s.retries, s.ok), (3, 2, 0));
}

#[tokio::test]
async fn silence_times_out_after_all_attempts() {
    let (sim, mut board) = one_meter();
    for _ in 0..3 {
        sim.push(Reply::Silent);
    }
    let started = Instant::now();
    let e = board.read_energy(CUSTOMER).await.expect_err("no answer");
    assert_eq!(e.kind, ErrorKind::Timeout);
    assert!(e.detail.contains("3 attempts"), "{e}");
    // Three attempts of at least the reply timeout each.
    assert!(started.elapsed().as_millis() >= u128::from(3 * TEST_TIMEOUT_MS));
    let s = stats(&board);
    assert_eq!((s.timeouts, s.ok), (3, 0));
    assert_eq!(sim.requests().len(), 3);
}

#[tokio::test]
async fn one_timeout_then_answer_succeeds() {
    let (sim, mut board) = one_meter();
    sim.push(Reply::Silent);
    board
        .read_energy(CUSTOMER)
        .await
        .expect("second attempt answers");
    let s = stats(&board);
    assert_eq!((s.timeouts, s.retries, s.ok), (1, 1, 1));
}

#[tokio::test]
async fn good_reading_after_garbage_is_still_read() {
    let (sim, mut board) = one_meter();
    // Noise, including the meter's own address and function code, before the real reply.
    let garbage = vec![0x00, 0xFF, ADDRESS, 0x04, 0x99, 0x13, ADDRESS, 0x37];
    sim.push(Reply::GarbageThenGood(garbage.clone()));
    let m = board
        .read_energy(CUSTOMER)
        .await
        .expect("reply found in noise");
    assert_eq!(m.total_wh, 123_456);
    let s = stats(&board);
    assert_eq!(s.garbage_bytes, garbage.len() as u64);
    assert_eq!((s.ok, s.retries, s.crc_errors), (1, 0, 0));
}

#[tokio::test]
async fn reply_split_into_single_bytes_is_reassembled() {
    let (sim, mut board) = one_meter();
    sim.push(Reply::Trickle);
    let m = board.read_energy(CUSTOMER).await.expect("trickled reply");
    assert_eq!(m.total_wh, 123_456);
    let s = stats(&board);
    assert_eq!((s.garbage_bytes, s.retries, s.timeouts), (0, 0, 0));
}

#[tokio::test]
async fn exception_is_reported_not_retried() {
    let (sim, mut board) = one_meter();
    sim.push(Reply::Exception(0x02));
    let e = board.read_energy(CUSTOMER).await.expect_err("exception");
    assert_eq!(e.kind, ErrorKind::InvalidResponse);
    assert!(e.detail.contains("illegal data address"), "{e}");
    let s = stats(&board);
    assert_eq!((s.exceptions, s.retries), (1, 0));
    assert_eq!(sim.requests().len(), 1);
}

#[tokio::test]
async fn busy_exception_is_retried() {
    let (sim, mut board) = one_meter();
    sim.push(Reply::Exception(0x06));
    board.read_energy(CUSTOMER).await.expect("busy, then good");
    let s = stats(&board);
    assert_eq!((s.exceptions, s.retries, s.ok), (1, 1, 1));
}

#[tokio::test]
async fn reply_from_another_address_is_not_accepted() {
    let (sim, mut board) = one_meter();
    sim.push(Reply::OtherAddress(ADDRESS + 1));
    // The other device's frame is skipped as garbage; the retry gets the real reply.
    board.read_energy(CUSTOMER).await.expect("retry answers");
    let s = stats(&board);
    assert_eq!((s.timeouts, s.ok), (1, 1));
    assert_eq!(s.garbage_bytes, 25);
}

#[tokio::test]
async fn intact_frame_with_impossible_values_is_rejected() {
    let (sim, mut board) = one_meter();
    let mut regs = pzem::encode(&reading(9_876, 123_456));
    regs[8] = 250; // power factor 2.50
    sim.push(Reply::Registers(regs));
    let e = board
        .read_energy(CUSTOMER)
        .await
        .expect_err("impossible value");
    assert_eq!(e.kind, ErrorKind::OutOfRange);
    assert!(e.detail.contains("power factor"), "{e}");
    let s = stats(&board);
    assert_eq!((s.invalid_responses, s.ok), (1, 1));
    // The next reading is good again.
    board.read_energy(CUSTOMER).await.expect("good again");
}

#[tokio::test]
async fn unknown_customer_is_not_found_without_touching_the_line() {
    let (sim, mut board) = one_meter();
    let e = board.read_energy(99).await.expect_err("no such meter");
    assert_eq!(e.kind, ErrorKind::NotFound);
    assert!(e.to_string().contains("customer 99"));
    assert!(sim.requests().is_empty());
    assert_eq!(board.customers(), vec![CUSTOMER]);
}

#[tokio::test]
async fn grid_sample_from_generator_and_feeder_meters() {
    let meters = BTreeMap::from([
        (1, reading(200_000, 1)), // generator 20 kW
        (2, reading(60_000, 2)),  // feeder 1: 6 kW
        (3, reading(45_000, 3)),  // feeder 2: 4.5 kW
        (ADDRESS, reading(1_000, 4)),
    ]);
    // Meters report 4.35 A, so power above V x I would be rejected; raise the current.
    let meters: BTreeMap<u8, PzemReading> = meters
        .into_iter()
        .map(|(a, r)| {
            (
                a,
                PzemReading {
                    current_ma: 90_000,
                    ..r
                },
            )
        })
        .collect();
    let sim = meter_sim::start(meters);
    let grid = GridConfig {
        generator_address: 1,
        feeders: vec![
            FeederMeterConfig {
                feeder: 2,
                address: 3,
            },
            FeederMeterConfig {
                feeder: 1,
                address: 2,
            },
        ],
        ballast_address: None,
        ballast_capacity_w: 25_000,
    };
    let mut board = board_for(&sim, Some(grid));
    let g = board.read_grid().await.expect("grid sample");
    assert_eq!(g.frequency_mhz, 49_900);
    assert_eq!(g.voltage_dv, 2_296);
    assert_eq!(g.generation_w, 20_000);
    assert_eq!(g.feeders.len(), 2);
    assert_eq!((g.feeders[0].feeder, g.feeders[0].load_w), (1, 6_000));
    assert_eq!((g.feeders[1].feeder, g.feeders[1].load_w), (2, 4_500));
    assert!(g.feeders.iter().all(|f| f.closed));
    // No ballast meter: generation minus feeders.
    assert_eq!(g.ballast_w, 9_500);
    assert_eq!(g.ballast_capacity_w, 25_000);

    // A silent feeder meter fails the whole sample, naming the feeder.
    for _ in 0..2 {
        sim.push(Reply::Good);
    }
    for _ in 0..3 {
        sim.push(Reply::Silent);
    }
    let e = board.read_grid().await.expect_err("feeder meter silent");
    assert_eq!(e.kind, ErrorKind::Timeout);
    assert!(e.device.contains("feeder 1"), "{e}");
}

/// Regression: an unplugged adapter used to be held open forever, every read failing until
/// the process was restarted. Now the port is dropped when it goes away, reads fail fast
/// while it is missing, and the same path is reopened (with backoff) once an adapter is back.
#[tokio::test]
async fn an_unplugged_adapter_is_reopened_under_the_same_path() {
    let dir = tempfile::tempdir().expect("tempdir");
    // As udev's /dev/serial/by-id/... symlink, re-pointed when the adapter re-enumerates.
    let port = dir.path().join("ttyUSB-meters");
    let meters = BTreeMap::from([(ADDRESS, reading(9_876, 123_456))]);
    let sim = meter_sim::start(meters.clone());
    meter_sim::link(&sim, &port);
    let mut board = board_on(&port, None);
    board.read_energy(CUSTOMER).await.expect("plugged in");

    sim.unplug();
    let e = board.read_energy(CUSTOMER).await.expect_err("unplugged");
    assert!(e.detail.contains("went away"), "{e}");
    assert_eq!(stats(&board).disconnects, 1);
    // While it is away every read fails, and fast: no bus time is spent on a missing port.
    let away = Instant::now();
    let mut failed = 0;
    while away.elapsed() < Duration::from_millis(1_200) {
        let t = Instant::now();
        board
            .read_energy(CUSTOMER)
            .await
            .expect_err("still unplugged");
        assert!(t.elapsed() < Duration::from_millis(u64::from(TEST_TIMEOUT_MS)));
        failed += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(failed > 10);
    let s = stats(&board);
    assert_eq!((s.disconnects, s.reopens), (1, 0), "{s}");

    let sim = meter_sim::start(meters);
    meter_sim::link(&sim, &port);
    let plugged = Instant::now();
    let m = loop {
        match board.read_energy(CUSTOMER).await {
            Ok(m) => break m,
            Err(e) => assert!(
                plugged.elapsed() < Duration::from_secs(6),
                "not back 6 s after replugging: {e}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(m.total_wh, 123_456);
    // Within the longest backoff (plus a loaded machine's slack).
    assert!(
        plugged.elapsed()
            < Duration::from_millis(ghatta_hal::reopen::REOPEN_BACKOFF_MS_MAX + 1_000),
        "back after {:?}",
        plugged.elapsed()
    );
    let s = stats(&board);
    assert_eq!((s.disconnects, s.reopens), (1, 1), "{s}");
    board.read_energy(CUSTOMER).await.expect("stays back");
}
