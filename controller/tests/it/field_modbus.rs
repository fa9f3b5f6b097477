//! The field loop on a Linux board whose Modbus line is a pseudo-terminal with PZEM-004T
//! meters behind it (the hal's `meter_sim`): an adapter unplugged mid-run and plugged back
//! under the same path (reads resume, health follows the grid samples), and silent customer
//! meters that must not slow the grid samples (the bus scheduler's budget, in real time).
//!
//! Timing is judged by counts over several seconds, not by single reads, so a loaded 2-core
//! machine does not fail the tests by a scheduling hiccup.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use ghatta::field::{self, CustomerMap, FieldConfig, FieldStats};
use ghatta::journal::{Journal, JournalLimits};
use ghatta_hal::linux::config::{CustomerMeterConfig, GridConfig, ModbusConfig};
use ghatta_hal::pzem::PzemReading;
use ghatta_hal::{LinuxBoard, LinuxBoardConfig};
use tokio::task::JoinHandle;

use crate::field_support::FakeCluster;
#[path = "../../../hal/tests/it/meter_sim.rs"]
#[allow(dead_code)]
mod meter_sim;

/// The generator meter's address.
const GENERATOR: u8 = 1;
/// The driver's reply timeout: with 2 retries a silent meter would hold the line 300 ms in
/// the driver, three grid intervals, if the scheduler did not cut it at the tick's budget.
const TIMEOUT_MS: u32 = 100;

fn generator() -> PzemReading {
    PzemReading {
        voltage_dv: 2_300,
        current_ma: 90_000,
        power_dw: 150_000,
        energy_wh: 1,
        frequency_dhz: 500,
        power_factor_centi: 95,
        alarm: false,
    }
}

fn customer(energy_wh: u32) -> PzemReading {
    PzemReading {
        current_ma: 1_000,
        power_dw: 2_000,
        energy_wh,
        ..generator()
    }
}

fn board(port: &Path, customers: &[(u32, u8)]) -> LinuxBoard {
    let config = LinuxBoardConfig {
        modbus: Some(ModbusConfig {
            port: port.to_path_buf(),
            baud: 9_600,
            response_timeout_ms: TIMEOUT_MS,
            retries: 2,
            meters: customers
                .iter()
                .map(|&(customer, address)| CustomerMeterConfig { customer, address })
                .collect(),
        }),
        grid: Some(GridConfig {
            generator_address: GENERATOR,
            feeders: Vec::new(),
            ballast_address: None,
            ballast_capacity_w: 20_000,
        }),
        ..LinuxBoardConfig::default()
    };
    match LinuxBoard::open(&config) {
        Ok(b) => b,
        Err(e) => panic!("opening the board on {}: {e}", port.display()),
    }
}

struct Rig {
    stats: Arc<FieldStats>,
    task: JoinHandle<()>,
    _dir: tempfile::TempDir,
}

impl Drop for Rig {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn start(board: LinuxBoard) -> Rig {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = FieldConfig {
        journal: JournalLimits {
            fsync: false,
            ..JournalLimits::default()
        },
        ..FieldConfig::default()
    };
    let journal = Journal::open_dir(dir.path(), cfg.journal.clone()).expect("journal");
    let stats = Arc::new(FieldStats::default());
    let task = tokio::spawn(field::run_with(
        FakeCluster::new(),
        board,
        journal,
        cfg,
        CustomerMap::identity(),
        stats.clone(),
    ));
    Rig {
        stats,
        task,
        _dir: dir,
    }
}

impl Rig {
    fn samples(&self) -> u64 {
        self.stats.samples.load(Ordering::Relaxed)
    }

    fn healthy(&self) -> bool {
        self.stats.grid_healthy.load(Ordering::Relaxed) == 1
    }
}

/// Regression: an unplugged Modbus adapter was held open forever (every sample failing, at
/// DEBUG) while the watchdog stayed fed. Now the port is reopened when the adapter is back,
/// and the health signal is false while grid samples fail past the bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_adapter_unplugged_mid_run_comes_back_and_health_follows_the_grid_samples() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = dir.path().join("ttyUSB-meters");
    let meters = BTreeMap::from([(GENERATOR, generator()), (5, customer(1_000))]);
    let sim = meter_sim::start(meters.clone());
    meter_sim::link(&sim, &port);
    let rig = start(board(&port, &[(17, 5)]));

    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert!(rig.samples() >= 5, "samples before: {}", rig.samples());
    assert!(rig.healthy());

    sim.unplug();
    let unplugged = Instant::now();
    let bound = Duration::from_millis(field::GRID_UNHEALTHY_AFTER_MS);
    let margin = Duration::from_millis(500);
    // Let a sample in flight finish, then no sample may succeed while the adapter is away.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let samples_away = rig.samples();
    let errors_away = rig.stats.read_errors.load(Ordering::Relaxed);
    let mut polls_unhealthy = 0;
    while unplugged.elapsed() < bound + margin + Duration::from_secs(2) {
        if unplugged.elapsed() > bound + margin {
            assert!(
                !rig.healthy(),
                "healthy {:?} after the unplug",
                unplugged.elapsed()
            );
            polls_unhealthy += 1;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(polls_unhealthy >= 10);
    assert_eq!(rig.samples(), samples_away, "a sample succeeded unplugged");
    // The loop kept turning (fast failures, not a stalled bus).
    let errors = rig.stats.read_errors.load(Ordering::Relaxed) - errors_away;
    assert!(errors >= 20, "{errors} failed samples in the outage");

    let sim = meter_sim::start(meters);
    meter_sim::link(&sim, &port);
    let plugged = Instant::now();
    while rig.samples() == samples_away {
        assert!(
            plugged.elapsed() < Duration::from_secs(6),
            "no grid sample 6 s after the adapter came back"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let back_after = plugged.elapsed();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(rig.healthy(), "unhealthy after samples resumed");
    // The counters reach the stats (copied once per telemetry period).
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    let s = &rig.stats;
    assert_eq!(s.modbus_disconnects.load(Ordering::Relaxed), 1);
    assert_eq!(s.modbus_reopens.load(Ordering::Relaxed), 1);
    assert!(s.samples.load(Ordering::Relaxed) > samples_away + 5);
    assert!(s.grid_failing_ms.load(Ordering::Relaxed) == 0);
    // The customer meter that fell silent with the line is probed in its next slot (once a
    // second), not after its grown backoff.
    let polled = Instant::now();
    while s.meters_silent.load(Ordering::Relaxed) != 0 {
        assert!(
            polled.elapsed() < Duration::from_secs(3),
            "the customer meter is still skipped after the line came back"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        back_after < Duration::from_millis(ghatta_hal::reopen::REOPEN_BACKOFF_MS_MAX + 1_000),
        "back after {back_after:?}"
    );
    drop(sim);
}

/// Regression: a customer meter that did not answer cost ~630 ms of every loop on the shared
/// line (generator reads fell from 10 Hz to 2.4 Hz), and with fewer than ten meters each was
/// read every tick. Now the scheduler cuts a silent read at the tick's budget and skips the
/// meter, and reads each meter once per `meter_interval_ms`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_silent_customer_meters_leave_grid_samples_at_ten_hertz() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = dir.path().join("ttyUSB-meters");
    // Ten customer meters at addresses 10-19; 17, 18 and 19 are not on the line (silent).
    let live: Vec<u8> = (10..17).collect();
    let silent: Vec<u8> = vec![17, 18, 19];
    let mut meters = BTreeMap::from([(GENERATOR, generator())]);
    for &a in &live {
        meters.insert(a, customer(1_000 + u32::from(a)));
    }
    let sim = meter_sim::start(meters);
    meter_sim::link(&sim, &port);
    let customers: Vec<(u32, u8)> = (10..20).map(|a| (100 + u32::from(a), a)).collect();
    let rig = start(board(&port, &customers));

    // Past the first pass, in which each silent meter costs one tick's budget once.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    const WINDOW: Duration = Duration::from_secs(6);
    let (samples0, requests0) = (rig.samples(), sim.requests().len());
    let t0 = Instant::now();
    tokio::time::sleep(WINDOW).await;
    let took = t0.elapsed();
    let samples = rig.samples() - samples0;
    let requests = sim.requests()[requests0..].to_vec();

    // 10 Hz within 10 %, over the window actually slept.
    let expected = took.as_millis() as f64 / 100.0;
    let rate = samples as f64 / expected;
    assert!(
        (0.9..=1.1).contains(&rate),
        "{samples} grid samples in {took:?} (expected about {expected:.0})"
    );
    // Each live meter once per meter_interval_ms (1 s): six reads in six seconds, give or
    // take one at each edge of the window.
    let count = |a: u8| requests.iter().filter(|&&r| r == a).count();
    for &a in &live {
        let n = count(a);
        assert!(
            (5..=7).contains(&n),
            "meter at {a} read {n} times in {took:?}"
        );
    }
    // Silent meters: probed with backoff (2 s, then 4 s, ...), each probe one request
    // before the tick's budget cuts it (the driver's retries do not fit in 90 ms of a
    // 100 ms reply timeout), so a handful of requests, not three a second.
    for &a in &silent {
        let n = count(a);
        assert!(n <= 4, "silent meter at {a}: {n} requests in {took:?}");
    }
    assert_eq!(rig.stats.meters_silent.load(Ordering::Relaxed), 3);
    assert_eq!(rig.stats.meter_silent_episodes.load(Ordering::Relaxed), 3);
}
