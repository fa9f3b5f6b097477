//! The simulated board: state written by a plant model is read through the traits, relays
//! are read back, faults are injected and heal, and the demo village is plausible and
//! deterministic.

use ghatta_hal::sim::SimFault;
use ghatta_hal::{
    AnalogChannel, AnalogInputs, EnergyMeters, ErrorKind, GridMeter, RelayLine, Relays, SimBoard,
    SimBoardState,
};

fn plant() -> SimBoard {
    let mut s = SimBoardState::new();
    s.add_feeder(1);
    s.add_feeder(2);
    s.add_customer(10, 1);
    s.add_customer(11, 2);
    s.add_analog(0, "water_level", 1_234);
    s.relays.insert(RelayLine::Ballast(0), true);
    s.generation_w = 20_000;
    s.ballast_capacity_w = 20_000;
    SimBoard::new(s)
}

#[tokio::test]
async fn controller_reads_what_the_plant_model_writes() {
    let mut board = plant();
    let model = board.clone(); // the simulator's handle
    model.with_state(|s| {
        s.frequency_mhz = 49_420;
        s.voltage_dv = 2_250;
        s.ballast_w = 3_000;
        if let Some(f) = s.feeders.get_mut(&2) {
            f.load_w = 7_000;
            f.current_ma = 31_000;
        }
        if let Some(m) = s.meters.get_mut(&11) {
            m.total_wh = 5_000;
            m.power_w = 95;
        }
    });
    let g = board.read_grid().await.expect("grid");
    assert_eq!(
        (g.frequency_mhz, g.voltage_dv, g.ballast_w),
        (49_420, 2_250, 3_000)
    );
    assert_eq!(g.feeders[1].load_w, 7_000);
    assert_eq!(g.feeders[1].current_ma, 31_000);
    let m = board.read_energy(11).await.expect("meter");
    assert_eq!((m.total_wh, m.power_w, m.voltage_dv), (5_000, 95, 2_250));
    assert_eq!(board.read_analog(AnalogChannel(0)).await, Ok(1_234));
    assert_eq!(board.customers(), vec![10, 11]);
    assert_eq!(board.analog_channels()[0].name, "water_level");

    // The plant model reads back what the controller switched.
    board
        .set_relay(RelayLine::Feeder(2), false)
        .expect("open feeder");
    assert!(!model.lock().is_closed(RelayLine::Feeder(2)));
    assert!(!model.lock().is_supplied(11));
    let g = board.read_grid().await.expect("grid");
    assert!(g.feeders[0].closed && !g.feeders[1].closed);
}

#[tokio::test]
async fn injected_faults_fail_then_heal() {
    let mut board = plant();
    board.with_state(|s| {
        s.faults.grid = Some(SimFault::times(ErrorKind::Timeout, 2));
        s.faults.meters.insert(10, SimFault::once(ErrorKind::Crc));
        s.faults
            .analog
            .insert(AnalogChannel(0), SimFault::always(ErrorKind::Io));
    });
    for _ in 0..2 {
        let e = board.read_grid().await.expect_err("injected");
        assert_eq!(e.kind, ErrorKind::Timeout);
    }
    board.read_grid().await.expect("healed after two");
    assert_eq!(
        board.read_energy(10).await.map_err(|e| e.kind),
        Err(ErrorKind::Crc)
    );
    board.read_energy(10).await.expect("healed after one");
    for _ in 0..3 {
        assert!(board.read_analog(AnalogChannel(0)).await.is_err());
    }
    board.with_state(|s| s.faults.analog.clear());
    assert_eq!(board.read_analog(AnalogChannel(0)).await, Ok(1_234));
}

#[tokio::test]
async fn stuck_relay_accepts_the_command_but_does_not_move() {
    let mut board = plant();
    board.with_state(|s| {
        s.faults.stuck_relays.insert(RelayLine::Customer(10));
    });
    board
        .set_relay(RelayLine::Customer(10), false)
        .expect("coil driven");
    assert_eq!(board.relay_state(RelayLine::Customer(10)), Ok(true));
    assert_eq!(
        board.lock().relays_commanded.get(&RelayLine::Customer(10)),
        Some(&false)
    );
    board.with_state(|s| {
        s.faults
            .relays
            .insert(RelayLine::Feeder(1), SimFault::once(ErrorKind::Io));
    });
    assert!(board.set_relay(RelayLine::Feeder(1), false).is_err());
    board
        .set_relay(RelayLine::Feeder(1), false)
        .expect("healed");
    assert_eq!(board.relay_state(RelayLine::Feeder(1)), Ok(false));
    assert_eq!(
        board
            .set_relay(RelayLine::Feeder(9), true)
            .map_err(|e| e.kind),
        Err(ErrorKind::NotFound)
    );
}

#[tokio::test]
async fn demo_is_deterministic_for_a_seed() {
    let run = |seed| async move {
        let mut board = SimBoard::new(SimBoardState::demo(50, seed));
        let mut out = Vec::new();
        for _ in 0..20 {
            board.step(1_000);
            out.push(board.read_grid().await.expect("grid"));
        }
        out
    };
    assert_eq!(run(7).await, run(7).await);
    assert_ne!(run(7).await, run(8).await);
}

/// A day of the demo village: load per household within the 85-100 W programme figure on
/// average, frequency inside the statutory band while generation covers the load, and
/// energy counted only while supplied.
#[tokio::test]
async fn demo_village_is_plausible_over_a_day() {
    const CUSTOMERS: u32 = 60;
    const STEP_MS: u64 = 60_000;
    let mut board = SimBoard::new(SimBoardState::demo(CUSTOMERS, 42));
    let mut load_w_sum: u64 = 0;
    let mut steps: u64 = 0;
    let (mut f_min, mut f_max) = (u32::MAX, 0);
    for _ in 0..(24 * 60) {
        board.step(STEP_MS);
        let g = board.read_grid().await.expect("grid");
        let load: u32 = g.feeders.iter().map(|f| f.load_w).sum();
        load_w_sum += u64::from(load);
        steps += 1;
        f_min = f_min.min(g.frequency_mhz);
        f_max = f_max.max(g.frequency_mhz);
        assert!(g.ballast_w <= g.ballast_capacity_w);
        assert!(
            g.voltage_dv > 2_100 && g.voltage_dv < 2_400,
            "{}",
            g.voltage_dv
        );
    }
    let mean_household_w = load_w_sum / steps / u64::from(CUSTOMERS);
    assert!(
        (80..=105).contains(&mean_household_w),
        "mean {mean_household_w} W"
    );
    // 50 Hz +/-2.5 % (48.75-51.25 Hz), Nepal Electricity Regulations rule 43.
    assert!(f_min >= 48_750 && f_max <= 51_250, "{f_min}..{f_max}");
    assert!(
        f_min < 49_900,
        "the evening peak should pull frequency down ({f_min})"
    );

    // Energy: customer 1 gets a day's worth, then nothing while cut off.
    let wh_day = board.read_energy(1).await.expect("meter").total_wh;
    assert!(wh_day > 500 && wh_day < 5_000, "{wh_day} Wh in a day");
    board
        .set_relay(RelayLine::Customer(1), false)
        .expect("cut off");
    for _ in 0..60 {
        board.step(STEP_MS);
    }
    let m = board.read_energy(1).await.expect("meter");
    assert_eq!(m.total_wh, wh_day);
    assert_eq!(m.power_w, 0);
    // Opening a feeder stops its customers' meters too (customer 2 is on feeder 2).
    let before = board.read_energy(2).await.expect("meter").total_wh;
    board.set_relay(RelayLine::Feeder(2), false).expect("shed");
    for _ in 0..60 {
        board.step(STEP_MS);
    }
    assert_eq!(board.read_energy(2).await.expect("meter").total_wh, before);
}

#[tokio::test]
async fn shedding_ballast_without_load_raises_frequency() {
    let mut board = SimBoard::new(SimBoardState::demo(20, 1));
    board
        .set_relay(RelayLine::Ballast(0), false)
        .expect("ballast off");
    for _ in 0..30 {
        board.step(1_000);
    }
    let g = board.read_grid().await.expect("grid");
    assert!(g.frequency_mhz > 50_500, "{}", g.frequency_mhz);
    assert_eq!(g.ballast_w, 0);
}
