//! Binds a [`Plant`] to the hal crate's simulated board: plant readings go
//! into a node's `SimBoardState` each step, relay positions come back.
//!
//! The node reads and drives its `SimBoard` exactly as it would a real board
//! (`GridMeter`, `EnergyMeters`, `Relays`); only this binding knows the board
//! is a plant model. Line numbering on the board: feeder `i` of the plant is
//! `feeder:i`, ballast stage `s` is `ballast:s`, customer id `c` is
//! `customer:c` (ids must fit in `u32`, as the hal's meters are numbered so).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};

use ghatta_hal::sim::{SimBoard, SimBoardState};
use ghatta_hal::types::{AnalogChannel, RelayLine};
use tokio::sync::Notify;

use crate::plant::Plant;
use crate::time::Epoch;

/// How often customer meters (and customer relays) are synchronised. A
/// PZEM-004T-class meter refreshes about once a second, but the node reads a
/// customer's register every few minutes at most (scheduled reads are 15 min
/// apart) and a prepaid cut-off is not urgent to the second; at 5 s the
/// binding costs ~1 s of wall time per 5 plant-days instead of ~5 s.
pub const METER_REFRESH_MS_DEFAULT: u64 = 5_000;

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
        self.apply_relays(plant, true);
    }

    /// Applies feeder and ballast relays, and customer relays when `customers`
    /// is set (customer relays are prepaid cut-offs: checking them at the
    /// meter refresh rate is plenty, and there are hundreds).
    fn apply_relays(&self, plant: &mut Plant, customers: bool) {
        let s = self.board.lock();
        for f in 0..plant.feeder_count() {
            if let Some(&closed) = s.relays.get(&RelayLine::Feeder(f as u16))
                && plant.feeder_closed(f) != closed
            {
                plant.set_feeder(f, closed);
            }
        }
        for b in 0..plant.ballast_stage_count().min(usize::from(u8::MAX) + 1) {
            if let Some(&closed) = s.relays.get(&RelayLine::Ballast(b as u8))
                && plant.ballast_stage_enabled(b) != closed
            {
                plant.set_ballast_stage(b, closed);
            }
        }
        let ids = plant.customer_ids();
        if customers
            && !ids.is_empty()
            && let Some(first) = customer_line(ids.start)
        {
            // Both sides are ordered by customer id: walk them together instead of looking
            // each relay up (as `to_board` does for the meters).
            let last = customer_line(ids.end.saturating_sub(1)).unwrap_or(u32::MAX);
            let mut lines = s
                .relays
                .range(RelayLine::Customer(first)..=RelayLine::Customer(last))
                .peekable();
            for c in ids {
                let Some(line) = customer_line(c) else {
                    break;
                };
                let line = RelayLine::Customer(line);
                while lines.next_if(|(l, _)| **l < line).is_some() {}
                if let Some((_, &closed)) = lines.next_if(|(l, _)| **l == line)
                    && plant.customer_closed(c) != closed
                {
                    plant.set_customer(c, closed);
                }
            }
        }
    }

    /// Copies the plant's sensor readings (with noise) into the board;
    /// meters too when `meters` is set.
    pub fn to_board(&mut self, plant: &mut Plant, meters: bool) {
        Self::readings(plant, meters, 0).apply(&self.board);
    }

    /// The plant's sensor readings (with noise) as a board would show them, and the board
    /// clock's advance `step_ms`; meters too when `meters` is set.
    fn readings(plant: &mut Plant, meters: bool, step_ms: u64) -> BoardUpdate {
        let grid = plant.readings();
        let water_mv = (WATER_LEVEL_MV_FULL * plant.truth().generation_w as f64
            / (plant.config().rated_kw * 1_000.0))
            .round() as i32;
        let meters = if meters {
            plant
                .customer_ids()
                .filter_map(|c| {
                    let m = plant.customer(c)?;
                    Some(MeterValues {
                        line: customer_line(c)?,
                        total_wh: m.energy_wh,
                        power_w: m.load_w,
                    })
                })
                .collect()
        } else {
            Vec::new()
        };
        BoardUpdate {
            grid,
            water_mv,
            meters,
            step_ms,
        }
    }

    /// One world step for this plant: relays in, physics for `dt_ms`, readings out.
    pub fn step(&mut self, plant: &mut Plant, dt_ms: u64) {
        self.before_step(plant, dt_ms);
        plant.step(dt_ms);
        self.after_step(plant, dt_ms);
    }

    /// The input half of [`PlantBoard::step`]: relay positions into the
    /// plant (customer relays at the meter refresh rate).
    pub fn before_step(&mut self, plant: &mut Plant, dt_ms: u64) {
        let customers = self.since_meters_ms + dt_ms >= self.meter_refresh_ms;
        self.apply_relays(plant, customers);
    }

    /// The output half of [`PlantBoard::step`], for worlds that step plants
    /// together in a [`crate::plant::Grid`]: call `before_step` before
    /// `grid.step` and this after it, with the same `dt_ms`.
    pub fn after_step(&mut self, plant: &mut Plant, dt_ms: u64) {
        self.update_after_step(plant, dt_ms).apply(&self.board);
    }

    /// [`PlantBoard::after_step`] without touching the board: what it would write, for a
    /// world that steps the plant ahead of its node and lets the node's own clock put
    /// each update on the board when its time comes ([`BoardUpdate::apply`]).
    pub fn update_after_step(&mut self, plant: &mut Plant, dt_ms: u64) -> BoardUpdate {
        self.since_meters_ms += dt_ms;
        let meters = self.since_meters_ms >= self.meter_refresh_ms;
        if meters {
            self.since_meters_ms = 0;
        }
        Self::readings(plant, meters, dt_ms)
    }
}

/// A customer meter's values on their way to the board.
#[derive(Debug)]
struct MeterValues {
    line: u32,
    total_wh: u64,
    power_w: u32,
}

/// One step's sensor readings on their way to a board: the grid, the water level, the
/// customer meters when they refresh, and how far the board's clock moves.
#[derive(Debug)]
pub struct BoardUpdate {
    grid: crate::plant::PlantReadings,
    water_mv: i32,
    meters: Vec<MeterValues>,
    step_ms: u64,
}

impl BoardUpdate {
    /// Writes the readings into `board` and advances its clock.
    pub fn apply(&self, board: &SimBoard) {
        let r = &self.grid;
        let mut s = board.lock();
        write_grid(&mut s, r);
        if let Some(a) = s.analog.get_mut(&AnalogChannel(WATER_LEVEL_CHANNEL)) {
            a.millivolts = self.water_mv;
        }
        // Both sides are ordered by customer id: walk them together instead of
        // looking each meter up (this runs for every customer every refresh).
        if let (Some(first), Some(last)) = (self.meters.first(), self.meters.last()) {
            let mut board_meters = s.meters.range_mut(first.line..=last.line).peekable();
            for m in &self.meters {
                while board_meters.next_if(|(id, _)| **id < m.line).is_some() {}
                if let Some((_, meter)) = board_meters.next_if(|(id, _)| **id == m.line) {
                    meter.total_wh = m.total_wh;
                    meter.power_w = m.power_w;
                    meter.current_ma = current_ma(m.power_w, r.voltage_mv);
                }
            }
        }
        if self.step_ms > 0 {
            s.step(self.step_ms);
        }
    }
}

/// Board updates a world stepped ahead of its node (lockstep windows longer than a plant
/// step), put on the board by a task on the node's own runtime when the node's clock reaches
/// each one: the node reads what the plant shows at that moment, as it would on one runtime.
#[derive(Clone, Debug, Default)]
pub struct BoardFeed {
    inner: Arc<FeedInner>,
}

#[derive(Debug, Default)]
struct FeedInner {
    /// Updates and their times (ms since the epoch), in time order.
    queue: Mutex<VecDeque<(u64, BoardUpdate)>>,
    wake: Notify,
}

impl BoardFeed {
    /// Queues `update` for simulated time `t_ms`; times must not go back.
    pub fn push(&self, t_ms: u64, update: BoardUpdate) {
        self.queue().push_back((t_ms, update));
        self.inner.wake.notify_one();
    }

    fn queue(&self) -> std::sync::MutexGuard<'_, VecDeque<(u64, BoardUpdate)>> {
        self.inner
            .queue
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The task that applies the queued updates to `board` on the clock of the runtime it
    /// runs on, whose time zero is `epoch`. Spawn it once on the node's runtime; it outlives
    /// the node's incarnations (the board is the hardware, not the controller).
    pub fn task(
        &self,
        board: SimBoard,
        epoch: Epoch,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        let feed = self.clone();
        async move {
            loop {
                let next = feed.queue().front().map(|(t, _)| *t);
                let Some(t_ms) = next else {
                    feed.inner.wake.notified().await;
                    continue;
                };
                tokio::time::sleep_until(epoch.at_ms(t_ms)).await;
                let due = feed.queue().pop_front();
                if let Some((_, update)) = due {
                    update.apply(&board);
                }
            }
        }
    }
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
