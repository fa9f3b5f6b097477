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
