//! The simulated backend: `SimBoard`, a cheap-to-clone handle over `SimBoardState`, which a
//! plant model writes (frequency, loads, meters, analog values) and reads back (relays).
//!
//! The controller reads a `SimBoard` exactly as it reads a `LinuxBoard`. The simulator crate
//! owns the physics; this module only stores what it writes, injects faults on request
//! (`SimFaults`), and offers a small seeded demo model (`SimBoardState::demo` + `step`) so
//! `ghatta demo` runs without a plant model. Everything is deterministic: no clocks, no
//! global randomness.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::error::{ErrorKind, HalError};
use crate::traits::{AnalogInputs, EnergyMeters, GridMeter, HalResult, Relays};
use crate::types::{
    AnalogChannel, AnalogChannelInfo, FeederSample, GridSample, MeterReading, RelayLine,
};

/// Nominal frequency, 50 Hz (Nepal Electricity Regulations, rule 43).
pub const FREQUENCY_MHZ_NOMINAL: u32 = 50_000;
/// Nominal voltage, 230 V single-phase (same regulations, rule 40).
pub const VOLTAGE_DV_NOMINAL: u32 = 2_300;
/// Watt-milliseconds in a watt-hour.
const WMS_PER_WH: u64 = 3_600_000;

/// A fault to inject: reads (or relay commands) fail with `kind`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SimFault {
    /// The kind the failing operation reports.
    pub kind: ErrorKind,
    /// How many more operations fail; `None` until cleared.
    pub remaining: Option<u32>,
}

impl SimFault {
    /// Fails the next operation only.
    pub fn once(kind: ErrorKind) -> Self {
        Self::times(kind, 1)
    }

    /// Fails the next `n` operations.
    pub fn times(kind: ErrorKind, n: u32) -> Self {
        SimFault {
            kind,
            remaining: Some(n),
        }
    }

    /// Fails every operation until removed.
    pub fn always(kind: ErrorKind) -> Self {
        SimFault {
            kind,
            remaining: None,
        }
    }

    /// Uses up one failure; returns whether the fault is spent.
    fn consume(&mut self) -> bool {
        match &mut self.remaining {
            None => false,
            Some(n) => {
                *n = n.saturating_sub(1);
                *n == 0
            }
        }
    }
}

/// Faults the simulator (or a test) injects.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SimFaults {
    /// `read_grid` fails.
    pub grid: Option<SimFault>,
    /// `read_energy` fails for these customers.
    pub meters: BTreeMap<u32, SimFault>,
    /// `read_analog` fails for these channels.
    pub analog: BTreeMap<AnalogChannel, SimFault>,
    /// `set_relay` fails for these lines.
    pub relays: BTreeMap<RelayLine, SimFault>,
    /// Welded or jammed relays: `set_relay` succeeds (the coil is driven) but the contact
    /// does not move, and `relay_state` shows where it really is.
    pub stuck_relays: BTreeSet<RelayLine>,
}

fn take(slot: &mut Option<SimFault>) -> Option<ErrorKind> {
    let fault = slot.as_mut()?;
    let kind = fault.kind;
    if fault.consume() {
        *slot = None;
    }
    Some(kind)
}

fn take_keyed<K: Ord + Copy>(map: &mut BTreeMap<K, SimFault>, key: K) -> Option<ErrorKind> {
    let fault = map.get_mut(&key)?;
    let kind = fault.kind;
    if fault.consume() {
        map.remove(&key);
    }
    Some(kind)
}

fn injected(kind: ErrorKind, device: String) -> HalError {
    HalError::new(
        kind,
        device,
        format!("injected {kind} fault (simulation); clear it in SimBoardState::faults"),
    )
}

/// What one feeder's meter shows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SimFeeder {
    /// Feeder current in milliamperes.
    pub current_ma: u32,
    /// Feeder load in watts.
    pub load_w: u32,
}

/// One customer's meter.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SimMeter {
    /// The feeder the customer is on.
    pub feeder: u16,
    /// Cumulative energy in watt-hours.
    pub total_wh: u64,
    /// Present power in watts.
    pub power_w: u32,
    /// Present current in milliamperes.
    pub current_ma: u32,
    /// Energy not yet a whole watt-hour, in watt-milliseconds, so integration is exact.
    pub residual_wms: u64,
}

impl SimMeter {
    /// Adds `power_w` for `dt_ms` to the energy count, exactly (no float, no lost
    /// fractions of a watt-hour).
    pub fn integrate(&mut self, power_w: u32, dt_ms: u64) {
        let wms = self.residual_wms + u64::from(power_w) * dt_ms;
        self.total_wh += wms / WMS_PER_WH;
        self.residual_wms = wms % WMS_PER_WH;
    }
}

/// One analog input's present value.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SimAnalog {
    /// What the signal is, e.g. `water_level`.
    pub name: String,
    /// Value at the ADC input, in millivolts.
    pub millivolts: i32,
}

/// Everything a simulated board shows and is told. A plant model writes the measured
/// fields and reads `relays`; the controller goes through the `Board` traits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimBoardState {
    /// Bus frequency in millihertz.
    pub frequency_mhz: u32,
    /// Bus voltage in decivolts.
    pub voltage_dv: u32,
    /// Generator output in watts.
    pub generation_w: u32,
    /// Power into the ballast in watts.
    pub ballast_w: u32,
    /// Ballast rating in watts.
    pub ballast_capacity_w: u32,
    /// Feeders by number.
    pub feeders: BTreeMap<u16, SimFeeder>,
    /// Customers' meters by customer.
    pub meters: BTreeMap<u32, SimMeter>,
    /// Analog inputs by channel.
    pub analog: BTreeMap<AnalogChannel, SimAnalog>,
    /// The relay lines the board has and where each contact actually is (`true` closed).
    pub relays: BTreeMap<RelayLine, bool>,
    /// What the controller last commanded each line to (differs from `relays` only for a
    /// stuck relay).
    pub relays_commanded: BTreeMap<RelayLine, bool>,
    /// Faults to inject.
    pub faults: SimFaults,
    /// Simulated time advanced by `step`, in milliseconds.
    pub now_ms: u64,
    demo: Option<DemoModel>,
}

impl Default for SimBoardState {
    fn default() -> Self {
        Self::new()
    }
}

impl SimBoardState {
    /// An empty, healthy board at nominal frequency and voltage: no feeders, meters,
    /// channels or relays until the plant model adds them.
    pub fn new() -> Self {
        SimBoardState {
            frequency_mhz: FREQUENCY_MHZ_NOMINAL,
            voltage_dv: VOLTAGE_DV_NOMINAL,
            generation_w: 0,
            ballast_w: 0,
            ballast_capacity_w: 0,
            feeders: BTreeMap::new(),
            meters: BTreeMap::new(),
            analog: BTreeMap::new(),
            relays: BTreeMap::new(),
            relays_commanded: BTreeMap::new(),
            faults: SimFaults::default(),
            now_ms: 0,
            demo: None,
        }
    }

    /// Adds a feeder with a closed contactor (`feeder:N`).
    pub fn add_feeder(&mut self, feeder: u16) {
        self.feeders.entry(feeder).or_default();
        self.relays.insert(RelayLine::Feeder(feeder), true);
    }

    /// Adds a customer on `feeder` with a meter at 0 Wh and a closed relay (`customer:N`).
    pub fn add_customer(&mut self, customer: u32, feeder: u16) {
        self.meters.insert(
            customer,
            SimMeter {
                feeder,
                ..SimMeter::default()
            },
        );
        self.relays.insert(RelayLine::Customer(customer), true);
    }

    /// Adds an analog channel.
    pub fn add_analog(&mut self, channel: u8, name: &str, millivolts: i32) {
        self.analog.insert(
            AnalogChannel(channel),
            SimAnalog {
                name: name.to_string(),
                millivolts,
            },
        );
    }

    /// Whether a relay line is closed; a line the board does not have counts as closed
    /// (nothing there to open).
    pub fn is_closed(&self, line: RelayLine) -> bool {
        self.relays.get(&line).copied().unwrap_or(true)
    }

    /// Whether a customer is supplied: its relay and its feeder's contactor both closed.
    pub fn is_supplied(&self, customer: u32) -> bool {
        let Some(meter) = self.meters.get(&customer) else {
            return false;
        };
        self.is_closed(RelayLine::Customer(customer))
            && self.is_closed(RelayLine::Feeder(meter.feeder))
    }

    /// The test bench of the field loop's tests: feeders 1 and 2, customers 1 and 2 on feeder
    /// 1, ballast stage 0 (open), 20 kW of generation and 10 kW of ballast, at nominal
    /// frequency and voltage. The tests move frequency and meters themselves.
    pub fn bench() -> Self {
        let mut s = SimBoardState::new();
        s.add_feeder(1);
        s.add_feeder(2);
        s.add_customer(1, 1);
        s.add_customer(2, 1);
        s.relays.insert(RelayLine::Ballast(0), false);
        s.generation_w = 20_000;
        s.ballast_capacity_w = 10_000;
        s
    }

    /// A stand-alone village for `ghatta demo`: `customers` households (ids 1..=N) spread
    /// over up to 4 feeders, a constant-flow turbine sized near the evening peak, one
    /// ballast stage, and three analog inputs. At most `DEMO_CUSTOMERS_MAX` customers. Advance it with `step`; the same seed and the
    /// same steps give the same values.
    pub fn demo(customers: u32, seed: u64) -> Self {
        let customers = customers.min(DEMO_CUSTOMERS_MAX);
        let mut state = SimBoardState::new();
        let model = DemoModel::new(customers, seed);
        let feeders_n = demo_feeders(customers);
        for feeder in 1..=feeders_n {
            state.add_feeder(feeder);
        }
        for c in &model.customers {
            state.add_customer(c.customer, c.feeder);
        }
        state.relays.insert(RelayLine::Ballast(0), true);
        state.generation_w = model.generation_w;
        state.ballast_capacity_w = model.generation_w;
        state.add_analog(0, "water_level", 1_800);
        state.add_analog(1, "penstock_pressure", 2_500);
        state.add_analog(2, "generator_temperature", 450);
        state.demo = Some(model);
        state.step(0);
        state
    }

    /// Advances simulated time by `dt_ms`. With a demo model, recomputes loads, ballast,
    /// frequency, voltage and analog values and integrates the meters of supplied
    /// customers; without one, only the clock moves (the plant model owns the physics).
    pub fn step(&mut self, dt_ms: u64) {
        self.now_ms += dt_ms;
        if let Some(mut model) = self.demo.take() {
            model.step(self, dt_ms);
            self.demo = Some(model);
        }
    }
}

/// Feeders in the demo village: 4, or fewer for a handful of customers.
fn demo_feeders(customers: u32) -> u16 {
    customers.clamp(1, DEMO_FEEDERS_MAX) as u16
}

/// Household mean load: 90 W, inside the 85-100 W per household of Nepal's micro-hydro
/// programme (2.5-3.0 MW for 30,000 customers).
const DEMO_HOUSEHOLD_W_MEAN: u32 = 90;
/// Generation as a percentage of the mean load: 190 %, a little under the 210 % evening
/// peak of `DEMO_LOAD_SHAPE_PCT`, so the peak pulls frequency down and gives a controller
/// something to shed, while the rest of the day ends in the ballast.
const DEMO_GENERATION_PCT: u32 = 190;
/// Most customers a demo village gets: 10,000, eight times the largest interconnected
/// cluster on record (Kalung Khola, 1,240 households), so memory and step time stay small.
pub const DEMO_CUSTOMERS_MAX: u32 = 10_000;
/// Feeders in a demo village (a typical micro-hydro plant has a handful of feeders).
const DEMO_FEEDERS_MAX: u32 = 4;
/// Hourly load as a percentage of the daily mean (mean of the table = 100): night trough,
/// morning shoulder, evening lighting peak at 19:00. A village lighting-dominated shape.
const DEMO_LOAD_SHAPE_PCT: [u32; 24] = [
    50, 45, 40, 40, 45, 60, 95, 120, 115, 85, 80, 80, 85, 85, 80, 85, 95, 135, 190, 210, 200, 170,
    130, 80,
];
/// The demo starts at 17:00 so the evening peak arrives within a short demo.
const DEMO_START_MS_OF_DAY: u64 = 17 * 3_600_000;
const DAY_MS: u64 = 24 * 3_600_000;
/// Speed droop: 5 % (2.5 Hz from no load to full load at 50 Hz), from generator-controller
/// commissioning guides; here as frequency change for an imbalance of 100 % of generation.
const DEMO_DROOP_MHZ: i64 = 2_500;
/// Frequency follows the imbalance with this time constant (rotor inertia and governor):
/// seconds, not cycles.
const DEMO_FREQUENCY_TAU_MS: u64 = 2_000;
/// Frequency noise amplitude: +/-20 mHz, half the +/-0.04 Hz an ELC measures to.
const DEMO_FREQUENCY_NOISE_MHZ: i64 = 20;
/// Voltage sags 10 V from no load to full generation (line drop on a village feeder).
const DEMO_VOLTAGE_SAG_DV: u64 = 100;
/// Each household's own scale: 60-140 % of the mean.
const DEMO_SCALE_PCT_MIN: u32 = 60;
const DEMO_SCALE_PCT_SPAN: u32 = 81;
/// Random walk of each household's load: +/-5 W per step, bounded at +/-30 W.
const DEMO_NOISE_STEP_W: i32 = 5;
const DEMO_NOISE_W_MAX: i32 = 30;
/// Frequency bounds of the demo (EN 50160's +/-15 % at all times would be 42.5-57.5 Hz).
const DEMO_FREQUENCY_MHZ_MIN: i64 = 42_500;
const DEMO_FREQUENCY_MHZ_MAX: i64 = 57_500;

/// SplitMix64: a tiny, well-mixed, seedable generator (Steele, Lea and Flood 2014); enough
/// for plausible noise, and no `rand` dependency.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator from `seed`.
    pub fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A value in `0..n` (`n` > 0; 0 gives 0).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next_u64() % n }
    }

    /// A value in `-amplitude..=amplitude`.
    pub fn symmetric(&mut self, amplitude: i64) -> i64 {
        let span = (amplitude.max(0) as u64) * 2 + 1;
        self.below(span) as i64 - amplitude.max(0)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct DemoCustomer {
    customer: u32,
    feeder: u16,
    scale_pct: u32,
    noise_w: i32,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct DemoModel {
    rng: SplitMix64,
    customers: Vec<DemoCustomer>,
    generation_w: u32,
    /// Frequency state, kept apart from the reported value so noise does not accumulate.
    frequency_mhz: i64,
}

impl DemoModel {
    fn new(customers_n: u32, seed: u64) -> Self {
        let mut rng = SplitMix64::new(seed);
        let feeders = u32::from(demo_feeders(customers_n));
        let customers = (1..=customers_n)
            .map(|customer| DemoCustomer {
                customer,
                feeder: (1 + (customer - 1) % feeders) as u16,
                scale_pct: DEMO_SCALE_PCT_MIN + rng.below(u64::from(DEMO_SCALE_PCT_SPAN)) as u32,
                noise_w: 0,
            })
            .collect();
        let generation_w =
            (customers_n.max(1) * DEMO_HOUSEHOLD_W_MEAN).saturating_mul(DEMO_GENERATION_PCT) / 100;
        DemoModel {
            rng,
            customers,
            generation_w,
            frequency_mhz: i64::from(FREQUENCY_MHZ_NOMINAL),
        }
    }

    /// Load shape at a time of day, in percent of the mean, interpolated between hours.
    fn shape_pct(ms_of_day: u64) -> u64 {
        let hour = (ms_of_day / 3_600_000) as usize % 24;
        let into_ms = ms_of_day % 3_600_000;
        let a = u64::from(DEMO_LOAD_SHAPE_PCT[hour]);
        let b = u64::from(DEMO_LOAD_SHAPE_PCT[(hour + 1) % 24]);
        (a * (3_600_000 - into_ms) + b * into_ms) / 3_600_000
    }

    fn step(&mut self, state: &mut SimBoardState, dt_ms: u64) {
        let ms_of_day = (DEMO_START_MS_OF_DAY + state.now_ms) % DAY_MS;
        let shape = Self::shape_pct(ms_of_day);
        let voltage_dv = u64::from(state.voltage_dv.max(1));

        for f in state.feeders.values_mut() {
            *f = SimFeeder::default();
        }
        let mut demand_w: u64 = 0;
        for c in &mut self.customers {
            c.noise_w = (c.noise_w + self.rng.symmetric(i64::from(DEMO_NOISE_STEP_W)) as i32)
                .clamp(-DEMO_NOISE_W_MAX, DEMO_NOISE_W_MAX);
            let base = u64::from(DEMO_HOUSEHOLD_W_MEAN) * u64::from(c.scale_pct) * shape / 10_000;
            let load_w = (base as i64 + i64::from(c.noise_w)).max(0) as u32;
            let supplied = state.is_supplied(c.customer);
            let power_w = if supplied { load_w } else { 0 };
            // I = P / V: mA = W x 10,000 / dV.
            let current_ma = (u64::from(power_w) * 10_000 / voltage_dv) as u32;
            if let Some(meter) = state.meters.get_mut(&c.customer) {
                meter.power_w = power_w;
                meter.current_ma = current_ma;
                meter.integrate(power_w, dt_ms);
            }
            if let Some(feeder) = state.feeders.get_mut(&c.feeder) {
                feeder.load_w = feeder.load_w.saturating_add(power_w);
                feeder.current_ma = feeder.current_ma.saturating_add(current_ma);
            }
            demand_w += u64::from(power_w);
        }

        let generation_w = u64::from(self.generation_w.max(1));
        let capacity_w = if state.is_closed(RelayLine::Ballast(0)) {
            u64::from(state.ballast_capacity_w)
        } else {
            0
        };
        let ballast_w = generation_w.saturating_sub(demand_w).min(capacity_w);
        // Positive: surplus nobody absorbs (speeds up); negative: overload (slows down).
        let imbalance_w = generation_w as i64 - demand_w as i64 - ballast_w as i64;
        let target_mhz =
            i64::from(FREQUENCY_MHZ_NOMINAL) + imbalance_w * DEMO_DROOP_MHZ / generation_w as i64;
        let dt = dt_ms as i64;
        self.frequency_mhz +=
            (target_mhz - self.frequency_mhz) * dt / (DEMO_FREQUENCY_TAU_MS as i64 + dt);
        self.frequency_mhz = self
            .frequency_mhz
            .clamp(DEMO_FREQUENCY_MHZ_MIN, DEMO_FREQUENCY_MHZ_MAX);
        let reported_mhz = self.frequency_mhz + self.rng.symmetric(DEMO_FREQUENCY_NOISE_MHZ);

        let served = (demand_w + ballast_w).min(generation_w);
        let sag_dv = DEMO_VOLTAGE_SAG_DV * demand_w.min(generation_w) / generation_w;
        state.voltage_dv = (u64::from(VOLTAGE_DV_NOMINAL) - sag_dv)
            .saturating_add_signed(self.rng.symmetric(5)) as u32;
        state.frequency_mhz = reported_mhz.max(0) as u32;
        state.generation_w = served as u32;
        state.ballast_w = ballast_w as u32;

        let load_pct = (demand_w * 100 / generation_w) as i32;
        let noise = |rng: &mut SplitMix64, a| rng.symmetric(a) as i32;
        let water = 1_800 + noise(&mut self.rng, 10);
        let pressure = 2_500 + noise(&mut self.rng, 15);
        // An LM35-style 10 mV/degC sensor: 40 degC idle to 60 degC at full load.
        let temperature = 400 + 2 * load_pct.min(100) + noise(&mut self.rng, 3);
        for (ch, mv) in [(0, water), (1, pressure), (2, temperature)] {
            if let Some(a) = state.analog.get_mut(&AnalogChannel(ch)) {
                a.millivolts = mv;
            }
        }
    }
}

/// A simulated board: a clone shares the same state, so the simulator keeps one handle
/// and the controller another.
#[derive(Clone, Debug, Default)]
pub struct SimBoard {
    state: Arc<Mutex<SimBoardState>>,
}

impl SimBoard {
    /// A board over `state`.
    pub fn new(state: SimBoardState) -> Self {
        SimBoard {
            state: Arc::new(Mutex::new(state)),
        }
    }

    /// A board over state someone else already shares.
    pub fn from_shared(state: Arc<Mutex<SimBoardState>>) -> Self {
        SimBoard { state }
    }

    /// The shared state, for a plant model that keeps its own handle.
    pub fn shared(&self) -> Arc<Mutex<SimBoardState>> {
        Arc::clone(&self.state)
    }

    /// Locks the state. A panic elsewhere while it was held (a poisoned lock) does not
    /// stop the simulation: the state is plain data and stays usable.
    pub fn lock(&self) -> MutexGuard<'_, SimBoardState> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Runs `f` with the state locked.
    pub fn with_state<R>(&self, f: impl FnOnce(&mut SimBoardState) -> R) -> R {
        f(&mut self.lock())
    }

    /// Advances the state's clock (and demo model) by `dt_ms`.
    pub fn step(&self, dt_ms: u64) {
        self.lock().step(dt_ms);
    }
}

impl GridMeter for SimBoard {
    async fn read_grid(&mut self) -> HalResult<GridSample> {
        let mut s = self.lock();
        if let Some(kind) = take(&mut s.faults.grid) {
            return Err(injected(kind, "sim grid meter".to_string()));
        }
        let feeders = s
            .feeders
            .iter()
            .map(|(&feeder, f)| FeederSample {
                feeder,
                current_ma: f.current_ma,
                load_w: f.load_w,
                closed: s.is_closed(RelayLine::Feeder(feeder)),
            })
            .collect();
        Ok(GridSample {
            frequency_mhz: s.frequency_mhz,
            voltage_dv: s.voltage_dv,
            generation_w: s.generation_w,
            feeders,
            ballast_w: s.ballast_w,
            ballast_capacity_w: s.ballast_capacity_w,
        })
    }
}

impl EnergyMeters for SimBoard {
    fn customers(&self) -> Vec<u32> {
        self.lock().meters.keys().copied().collect()
    }

    async fn read_energy(&mut self, customer: u32) -> HalResult<MeterReading> {
        // A board reads every meter each second: one map lookup, and the device name for
        // an error only formatted when there is one.
        let mut s = self.lock();
        let device = || format!("sim meter (customer {customer})");
        let Some(m) = s.meters.get(&customer) else {
            return Err(HalError::new(
                ErrorKind::NotFound,
                device(),
                "this board has no meter for the customer; add it with SimBoardState::add_customer",
            ));
        };
        let reading = MeterReading {
            total_wh: m.total_wh,
            voltage_dv: s.voltage_dv,
            current_ma: m.current_ma,
            power_w: m.power_w,
            frequency_mhz: s.frequency_mhz,
        };
        if let Some(kind) = take_keyed(&mut s.faults.meters, customer) {
            return Err(injected(kind, device()));
        }
        Ok(reading)
    }
}

impl Relays for SimBoard {
    fn relay_lines(&self) -> Vec<RelayLine> {
        self.lock().relays.keys().copied().collect()
    }

    fn set_relay(&mut self, line: RelayLine, closed: bool) -> HalResult<()> {
        let mut s = self.lock();
        if !s.relays.contains_key(&line) {
            return Err(HalError::new(
                ErrorKind::NotFound,
                format!("relay {line}"),
                "the simulated board has no such relay line",
            ));
        }
        if let Some(kind) = take_keyed(&mut s.faults.relays, line) {
            return Err(injected(kind, format!("relay {line}")));
        }
        s.relays_commanded.insert(line, closed);
        if !s.faults.stuck_relays.contains(&line) {
            s.relays.insert(line, closed);
        }
        Ok(())
    }

    fn relay_state(&mut self, line: RelayLine) -> HalResult<bool> {
        self.lock().relays.get(&line).copied().ok_or_else(|| {
            HalError::new(
                ErrorKind::NotFound,
                format!("relay {line}"),
                "the simulated board has no such relay line",
            )
        })
    }
}

impl AnalogInputs for SimBoard {
    fn analog_channels(&self) -> Vec<AnalogChannelInfo> {
        self.lock()
            .analog
            .iter()
            .map(|(&channel, a)| AnalogChannelInfo {
                channel,
                name: a.name.clone(),
            })
            .collect()
    }

    async fn read_analog(&mut self, channel: AnalogChannel) -> HalResult<i32> {
        let mut s = self.lock();
        if !s.analog.contains_key(&channel) {
            return Err(HalError::new(
                ErrorKind::NotFound,
                channel.to_string(),
                "the simulated board has no such analog channel",
            ));
        }
        if let Some(kind) = take_keyed(&mut s.faults.analog, channel) {
            return Err(injected(kind, format!("sim {channel}")));
        }
        s.analog
            .get(&channel)
            .map(|a| a.millivolts)
            .ok_or_else(|| HalError::new(ErrorKind::NotFound, channel.to_string(), "vanished"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integration_is_exact() {
        let mut m = SimMeter::default();
        // 90 W for 40 s, 1,000 times = 1,000 Wh exactly.
        for _ in 0..1_000 {
            m.integrate(90, 40_000);
        }
        assert_eq!((m.total_wh, m.residual_wms), (1_000, 0));
    }

    #[test]
    fn load_shape_mean_is_100_percent() {
        let sum: u32 = DEMO_LOAD_SHAPE_PCT.iter().sum();
        assert_eq!(sum, 2_400);
        assert_eq!(DemoModel::shape_pct(19 * 3_600_000), 210);
        assert_eq!(DemoModel::shape_pct(19 * 3_600_000 + 1_800_000), 205);
    }
}
