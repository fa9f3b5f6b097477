//! The plant drives a hal `SimBoard`; the node's relay commands drive the plant.

use ghatta_hal::sim::{SimBoard, SimBoardState};
use ghatta_hal::traits::{EnergyMeters, GridMeter, Relays};
use ghatta_hal::types::RelayLine;
use ghatta_sim::board::PlantBoard;
use ghatta_sim::plant::{Plant, PlantConfig};
use ghatta_sim::time::runtime;

#[test]
fn readings_reach_the_board_and_relays_reach_the_plant() {
    let mut plant = Plant::new(
        PlantConfig {
            first_customer_id: 100,
            ..PlantConfig::default()
        },
        3,
    );
    let mut board = SimBoard::new(SimBoardState::new());
    let mut glue = PlantBoard::attach(&mut plant, board.clone());
    // Meters and customer relays every step (the default is every 5 s).
    glue.set_meter_refresh_ms(0);
    runtime().expect("runtime").block_on(async {
        for _ in 0..600 {
            glue.step(&mut plant, 1_000);
        }
        let g = board.read_grid().await.expect("grid");
        assert!(
            g.frequency_mhz.abs_diff(50_000) < 200,
            "{}",
            g.frequency_mhz
        );
        assert!((2_200..2_400).contains(&g.voltage_dv), "{}", g.voltage_dv);
        assert_eq!(g.feeders.len(), 4);
        assert!(g.feeders.iter().all(|f| f.closed && f.load_w > 0));
        assert_eq!(board.customers().len(), 300);
        let m = board.read_energy(100).await.expect("meter");
        assert_eq!(m.total_wh, plant.customer(100).expect("customer").energy_wh);

        // The node sheds feeder 2 and cuts customer 100 through the hal traits.
        board
            .set_relay(RelayLine::Feeder(2), false)
            .expect("feeder relay");
        board
            .set_relay(RelayLine::Customer(100), false)
            .expect("customer relay");
        // The plant's last customer too: the relays are walked in order up to its line.
        let last = plant.customer_ids().end - 1;
        board
            .set_relay(RelayLine::Customer(last as u32), false)
            .expect("last customer's relay");
        let before = plant.customer_energy_wms(100);
        glue.step(&mut plant, 1_000);
        assert!(!plant.feeder_closed(2));
        assert!(!plant.customer_closed(100));
        assert!(!plant.customer_closed(last));
        assert!(plant.customer_closed(101) && plant.customer_closed(last - 1));
        glue.step(&mut plant, 60_000);
        assert_eq!(
            plant.customer_energy_wms(100),
            before,
            "a cut customer's meter stands still"
        );
        let g = board.read_grid().await.expect("grid");
        assert!(!g.feeders[2].closed && g.feeders[2].load_w == 0);
        board
            .set_relay(RelayLine::Customer(last as u32), true)
            .expect("last customer's relay");
        glue.step(&mut plant, 1_000);
        assert!(plant.customer_closed(last), "a closed relay reconnects");
        assert!(!plant.customer_closed(100));

        // A welded contactor: the command is accepted, the plant stays supplied.
        board
            .lock()
            .faults
            .stuck_relays
            .insert(RelayLine::Feeder(1));
        board
            .set_relay(RelayLine::Feeder(1), false)
            .expect("stuck relay accepts");
        glue.step(&mut plant, 1_000);
        assert!(plant.feeder_closed(1), "a stuck contactor does not open");
    });
}

/// Lockstep's plants run ahead of their nodes: readings stepped ahead and fed on the node's
/// clock must show on the board exactly when stepping in time would have put them there.
#[test]
fn a_board_feed_shows_each_step_at_its_time() {
    let cfg = PlantConfig {
        first_customer_id: 100,
        ..PlantConfig::default()
    };
    // The same plant twice: one stepped in time, one stepped four steps ahead into a feed.
    let mut in_time = Plant::new(cfg.clone(), 9);
    let board_in_time = SimBoard::new(SimBoardState::new());
    let mut glue_in_time = PlantBoard::attach(&mut in_time, board_in_time.clone());
    let mut ahead = Plant::new(cfg, 9);
    let board_ahead = SimBoard::new(SimBoardState::new());
    let mut glue_ahead = PlantBoard::attach(&mut ahead, board_ahead.clone());
    let grid = |b: &SimBoard| {
        let s = b.lock();
        (s.frequency_mhz, s.voltage_dv, s.generation_w, s.now_ms)
    };
    let mut expected = vec![grid(&board_in_time)];
    for _ in 0..4 {
        glue_in_time.step(&mut in_time, 100);
        expected.push(grid(&board_in_time));
    }
    assert_ne!(
        expected[1], expected[4],
        "the readings move from step to step"
    );

    runtime().expect("runtime").block_on(async {
        let epoch = ghatta_sim::time::Epoch::now();
        let feed = ghatta_sim::board::BoardFeed::default();
        tokio::spawn(feed.task(board_ahead.clone(), epoch));
        for k in 1..=4u64 {
            glue_ahead.before_step(&mut ahead, 100);
            ahead.step(100);
            feed.push(k * 100, glue_ahead.update_after_step(&mut ahead, 100));
        }
        assert_eq!(
            grid(&board_ahead),
            expected[0],
            "nothing shows before its time"
        );
        for (k, want) in expected.iter().enumerate().skip(1) {
            // Just before the step's time: still the previous reading; just after: this one.
            tokio::time::sleep_until(epoch.at_ms(k as u64 * 100 - 1)).await;
            assert_eq!(grid(&board_ahead), expected[k - 1], "step {k}, 1 ms early");
            tokio::time::sleep_until(epoch.at_ms(k as u64 * 100 + 1)).await;
            assert_eq!(grid(&board_ahead), *want, "step {k}");
        }
    });
}
