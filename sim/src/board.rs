//! Binds a [`Plant`] to the hal crate's simulated board: plant readings go
//! into a node's `SimBoardState` each step, relay positions come back.
//!
//! The node reads and drives its `SimBoard` exactly as it would a real board
//! (`GridMeter`, `EnergyMeters`, `Relays`); only this binding knows the board
//! is a plant model. Line numbering on the board: feeder `i` of the plant is
//! `feeder:i`, ballast stage `s` is `ballast:s`, customer id `c` is
//! `customer:c` (ids must fit in `u32`, as the hal's meters are numbered so).

use ghatta_hal::sim::{SimBoard, SimBoardState};
use ghatta_hal::types::{AnalogChannel, RelayLine};

use crate::plant::Plant;

/// How often customer meters on the board are refreshed. A PZEM-004T-class
/// meter updates its registers about once a second; refreshing ~300 meters on
/// every 100 ms step would cost more than the rest of the world.
pub const METER_REFRESH_MS_DEFAULT: u64 = 1_000;

/// Analog channel carrying the intake water level (ADS1115 input, mV): full
/// flow reads `WATER_LEVEL_MV_FULL`.
pub const WATER_LEVEL_CHANNEL: u8 = 0;
/// Water level signal at full rated flow (a 0-3.3 V sensor at ~55 %).
pub const WATER_LEVEL_MV_FULL: f64 = 1_800.0;

/// The glue between one plant and one node's simulated board.
#[derive(Clone, Debug)]
pub struct PlantBoard {
    board: SimBoard,
    meter_refresh_ms: u64,
    since_meters_ms: u64,
}

fn customer_line(customer: u64) -> Option<u32> {
    u32::try_from(customer).ok()
}

/// Volts from millivolts at the plant's bus, for current estimates.
fn current_ma(load_w: u32, voltage_mv: u32) -> u32 {
    if voltage_mv == 0 {
        return 0;
    }
    (u64::from(load_w) * 1_000_000 / u64::from(voltage_mv)).min(u64::from(u32::MAX)) as u32
}

impl PlantBoard {
    /// Creates the board's lines (feeders, customers, ballast stages, the
    /// water-level channel) for `plant` on `board`, and copies the first readings.
    pub fn attach(plant: &mut Plant, board: SimBoard) -> Self {
        {
            let mut s = board.lock();
            for f in 0..plant.feeder_count() {
                let feeder = f as u16;
                s.add_feeder(feeder);
                for c in plant.feeder_customers(f) {
                    if let Some(c) = customer_line(c) {
                        s.add_customer(c, feeder);
                    }
                }
            }
            for b in 0..plant.ballast_stage_count().min(usize::from(u8::MAX) + 1) {
                s.relays.insert(RelayLine::Ballast(b as u8), true);
            }
            s.add_analog(
                WATER_LEVEL_CHANNEL,
                "water_level",
                WATER_LEVEL_MV_FULL as i32,
            );
        }
        let mut pb = Self {
            board,
            meter_refresh_ms: METER_REFRESH_MS_DEFAULT,
            since_meters_ms: 0,
        };
        pb.to_board(plant, true);
        pb
    }

    /// Changes how often meters are refreshed (0: every step).
    pub fn set_meter_refresh_ms(&mut self, ms: u64) {
        self.meter_refresh_ms = ms;
    }

    /// The board (clone it for the node).
    pub fn board(&self) -> &SimBoard {
        &self.board
    }

    /// Applies the board's relay positions to the plant (what the node commanded,
    /// as the contacts really are: a stuck relay stays where it is).
    pub fn from_board(&self, plant: &mut Plant) {
        let s = self.board.lock();
        for (line, &closed) in &s.relays {
            match *line {
                RelayLine::Feeder(f) => {
                    if plant.feeder_closed(usize::from(f)) != closed {
                        plant.set_feeder(usize::from(f), closed);
                    }
                }
                RelayLine::Customer(c) => {
                    if plant.customer_closed(u64::from(c)) != closed {
                        plant.set_customer(u64::from(c), closed);
                    }
                }
                RelayLine::Ballast(b) => {
                    if plant.ballast_stage_enabled(usize::from(b)) != closed {
                        plant.set_ballast_stage(usize::from(b), closed);
                    }
                }
            }
        }
    }

    /// Copies the plant's sensor readings (with noise) into the board;
    /// meters too when `meters` is set.
    pub fn to_board(&mut self, plant: &mut Plant, meters: bool) {
        let r = plant.readings();
        let water_mv = (WATER_LEVEL_MV_FULL * plant.truth().generation_w as f64
            / (plant.config().rated_kw * 1_000.0))
            .round() as i32;
        let customers: Vec<(u32, MeterValues)> = if meters {
            plant
                .customer_ids()
                .filter_map(|c| {
                    let line = customer_line(c)?;
                    let m = plant.customer(c)?;
                    Some((
                        line,
                        MeterValues {
                            total_wh: m.energy_wh,
                            power_w: m.load_w,
                        },
                    ))
                })
                .collect()
        } else {
            Vec::new()
        };
        let mut s = self.board.lock();
        write_grid(&mut s, &r);
        if let Some(a) = s.analog.get_mut(&AnalogChannel(WATER_LEVEL_CHANNEL)) {
            a.millivolts = water_mv;
        }
        for (line, m) in customers {
            if let Some(meter) = s.meters.get_mut(&line) {
                meter.total_wh = m.total_wh;
                meter.power_w = m.power_w;
                meter.current_ma = current_ma(m.power_w, r.voltage_mv);
            }
        }
    }

    /// One world step for this plant: relays in, physics for `dt_ms`, readings out.
    pub fn step(&mut self, plant: &mut Plant, dt_ms: u64) {
        self.from_board(plant);
        plant.step(dt_ms);
        self.after_step(plant, dt_ms);
    }

    /// The output half of [`PlantBoard::step`], for worlds that step plants
    /// together in a [`crate::plant::Grid`]: call `from_board` before
    /// `grid.step` and this after it.
    pub fn after_step(&mut self, plant: &mut Plant, dt_ms: u64) {
        self.since_meters_ms += dt_ms;
        let meters = self.since_meters_ms >= self.meter_refresh_ms;
        if meters {
            self.since_meters_ms = 0;
        }
        self.to_board(plant, meters);
        self.board.lock().step(dt_ms);
    }
}

/// A customer meter's values on their way to the board.
struct MeterValues {
    total_wh: u64,
    power_w: u32,
}

fn write_grid(s: &mut SimBoardState, r: &crate::plant::PlantReadings) {
    s.frequency_mhz = r.frequency_mhz;
    s.voltage_dv = r.voltage_mv / 100;
    s.generation_w = r.generation_w;
    s.ballast_w = r.ballast_w;
    s.ballast_capacity_w = r.ballast_capacity_w;
    for (i, f) in r.feeders.iter().enumerate() {
        if let Some(sf) = s.feeders.get_mut(&(i as u16)) {
            sf.load_w = f.load_w;
            sf.current_ma = current_ma(f.load_w, r.voltage_mv);
        }
    }
}
