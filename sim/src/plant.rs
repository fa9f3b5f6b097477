//! The grid plant model: micro-hydro generators with inertia, an electronic
//! load controller (ELC) with ballast, feeders and households behind relays,
//! daily load profiles, metering ground truth and sensor noise.
//!
//! Physics, per synchronous island (one or more interconnected plants):
//!
//! ```text
//! df/dt = f0 * (P_mech - P_load - P_ballast - D * (f - f0)) / (2 * H * S)
//! ```
//!
//! with `S` the rated power, `H` the inertia constant, `D` the load's
//! frequency damping (W/Hz). The turbine runs at constant water flow, so
//! `P_mech` is constant; the ELC, a PI controller on frequency acting once
//! per mains cycle (20 ms), moves ballast so that load + ballast = generation.
//! Frequency therefore only moves when ballast saturates (overload: ballast
//! at zero; load loss: ballast at capacity) or briefly on a big step. Local
//! protection (under-frequency shedding) is the controller's job, not the
//! plant's: the plant only models physics and obeys relays.
//!
//! Energy is integrated exactly, in integer watt-milliseconds, from each
//! household's piecewise-constant load while both its relay and its feeder
//! contactor are closed: that is the ground truth billing is checked against.

use serde::{Deserialize, Serialize};

use crate::rng::SimRng;

/// Nominal frequency (Nepal Electricity Regulations: 50 Hz).
pub const F0_HZ: f64 = 50.0;
/// Nominal single-phase voltage (Nepal Electricity Regulations: 230 V).
pub const V0_MV: f64 = 230_000.0;
/// One mains cycle at 50 Hz: ELCs actuate once per cycle, and the plant
/// integrates in steps of this length.
pub const CYCLE_MS: u64 = 20;
/// Default plant size: Nepal's micro-hydro plants are 10-100 kW, typically
/// 25-30 kW (World Bank / AEPC Micro-Hydro Village Electrification programme).
pub const RATED_KW_DEFAULT: f64 = 30.0;
/// Inertia constant for small hydro sets: 2-3 s is typical of small
/// synchronous generators with their turbine runners (an engineering
/// judgement; large hydro units are 3-6 s, micro sets are lighter).
pub const INERTIA_H_S_DEFAULT: f64 = 2.5;
/// Load damping: 1 % load change per 1 % frequency change, a standard figure
/// for mixed loads (resistive heating and lighting are weakly frequency
/// dependent, motors strongly).
pub const DAMPING_PU_DEFAULT: f64 = 1.0;
/// Households' evening-peak share: ~85-100 W per household, i.e. 2.5-3.0 MW
/// serving 30,000 customers (same programme). That figure is plant capacity
/// per household, so a plant sized for its village covers the evening peak
/// with it; the daily mean is lower (see `PROFILE`).
pub const HOUSEHOLD_PEAK_W_DEFAULT: u32 = 90;
/// Households per plant: 30 kW / ~90 W gives ~300 (250-350 per the same
/// programme); 4 feeders of 75.
pub const FEEDERS_DEFAULT: u32 = 4;
/// See [`FEEDERS_DEFAULT`].
pub const HOUSEHOLDS_PER_FEEDER_DEFAULT: u32 = 75;
/// Ballast outputs: "e.g. 8 outputs, 4 strictly ordered" for dump loads
/// (generator-controller guides).
pub const BALLAST_STAGES_DEFAULT: u32 = 8;
/// ELC frequency measurement: about +/-0.04 Hz; modelled as Gaussian noise
/// with 20 mHz standard deviation on the reported frequency.
pub const FREQUENCY_NOISE_MHZ_DEFAULT: u32 = 20;
/// Power measurement accuracy of a PZEM-004T-class meter: 0.5 %.
pub const POWER_NOISE_PCT_DEFAULT: f64 = 0.5;
/// How often each household's load is redrawn. Appliances switch on a
/// timescale of minutes; 60 s keeps 24 h of 300 households cheap while still
/// giving the ELC and metering a moving load.
pub const LOAD_RESAMPLE_MS_DEFAULT: u64 = 60_000;
/// Relative standard deviation of a household's load around its profile.
pub const LOAD_NOISE_REL_DEFAULT: f64 = 0.25;
/// ELC closed-loop natural frequency (rad/s). Commercial ELCs settle a load
/// step within about a second; with damping 0.8 this gives ~1 s settling.
const ELC_OMEGA_RAD_S: f64 = 5.0;
/// ELC closed-loop damping ratio.
const ELC_ZETA: f64 = 0.8;
/// Numerical guard: a plant is never integrated past twice nominal (a real
/// set would have tripped on overspeed long before).
const F_HZ_MAX: f64 = 2.0 * F0_HZ;
/// Largest household count per plant (memory bound: a 100 kW plant at 85 W
/// per household is ~1,200; 5,000 leaves room for the Kalung Khola-sized
/// 1,240-household cluster on one plant).
pub const HOUSEHOLDS_MAX: u32 = 5_000;

/// Load relative to a household's evening peak, per hour of the day (local
/// time). Rural Nepali micro-hydro loads are dominated by lighting and
/// appliances in the evening (18-22 h), a smaller morning peak and a low
/// day (agro-processing, where present, is scheduled into the day valley).
/// Mean 0.44, i.e. ~40 W per household over the day at a 90 W peak.
pub const PROFILE: [f64; 24] = [
    0.25, 0.20, 0.20, 0.20, 0.25, 0.45, 0.60, 0.55, 0.40, 0.30, 0.30, 0.30, //
    0.30, 0.30, 0.30, 0.30, 0.35, 0.60, 0.90, 1.00, 0.95, 0.80, 0.50, 0.35,
];

/// The profile value at a time of day, linearly interpolated between hours.
pub fn profile_at(time_of_day_ms: u64) -> f64 {
    let hour_ms = 3_600_000u64;
    let t = time_of_day_ms % (24 * hour_ms);
    let h = (t / hour_ms) as usize;
    let frac = (t % hour_ms) as f64 / hour_ms as f64;
    PROFILE[h] * (1.0 - frac) + PROFILE[(h + 1) % 24] * frac
}

/// A plant's configuration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PlantConfig {
    /// Rated (and, with full water, generated) power.
    pub rated_kw: f64,
    /// Inertia constant H of the generating set.
    pub inertia_h_s: f64,
    /// Load frequency damping in per unit (ΔP/P per Δf/f).
    pub damping_pu: f64,
    /// Households per feeder; the length is the number of feeders.
    pub households_per_feeder: Vec<u32>,
    /// Mean household load at the evening peak.
    pub household_peak_w: u32,
    /// Relative standard deviation of a household's load.
    pub load_noise_rel: f64,
    /// How often each household's load is redrawn.
    pub load_resample_ms: u64,
    /// Number of ballast outputs (each `ballast_kw / ballast_stages`).
    pub ballast_stages: u32,
    /// Total ballast capacity; at least the rated power, so the ELC can
    /// absorb all generation when every load is off.
    pub ballast_kw: f64,
    /// Standard deviation of the reported frequency's noise.
    pub frequency_noise_mhz: u32,
    /// Relative accuracy (1 sigma, percent) of reported powers.
    pub power_noise_pct: f64,
    /// Local time of day at simulated time zero.
    pub start_time_of_day_s: u64,
    /// Customer id of the first household (ids are consecutive).
    pub first_customer_id: u64,
}

impl Default for PlantConfig {
    fn default() -> Self {
        Self {
            rated_kw: RATED_KW_DEFAULT,
            inertia_h_s: INERTIA_H_S_DEFAULT,
            damping_pu: DAMPING_PU_DEFAULT,
            households_per_feeder: vec![HOUSEHOLDS_PER_FEEDER_DEFAULT; FEEDERS_DEFAULT as usize],
            household_peak_w: HOUSEHOLD_PEAK_W_DEFAULT,
            load_noise_rel: LOAD_NOISE_REL_DEFAULT,
            load_resample_ms: LOAD_RESAMPLE_MS_DEFAULT,
            ballast_stages: BALLAST_STAGES_DEFAULT,
            ballast_kw: RATED_KW_DEFAULT,
            frequency_noise_mhz: FREQUENCY_NOISE_MHZ_DEFAULT,
            power_noise_pct: POWER_NOISE_PCT_DEFAULT,
            start_time_of_day_s: 0,
            first_customer_id: 0,
        }
    }
}

impl PlantConfig {
    /// Checks ranges; `Err` names the field and the problem.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if !(self.rated_kw > 0.0 && self.rated_kw <= 1_000.0) {
            return Err(("rated_kw", format!("{} is not in (0, 1000]", self.rated_kw)));
        }
        if !(self.inertia_h_s > 0.05 && self.inertia_h_s <= 20.0) {
            return Err((
                "inertia_h_s",
                format!("{} is not in (0.05, 20]", self.inertia_h_s),
            ));
        }
        if !(0.0..=10.0).contains(&self.damping_pu) {
            return Err((
                "damping_pu",
                format!("{} is not in [0, 10]", self.damping_pu),
            ));
        }
        let total: u64 = self
            .households_per_feeder
            .iter()
            .map(|&n| u64::from(n))
            .sum();
        if self.households_per_feeder.is_empty() || total > u64::from(HOUSEHOLDS_MAX) {
            return Err((
                "households_per_feeder",
                format!("need 1+ feeders and at most {HOUSEHOLDS_MAX} households, got {total}"),
            ));
        }
        if self.ballast_stages == 0 || self.ballast_stages > 64 {
            return Err((
                "ballast_stages",
                format!("{} is not in 1..=64", self.ballast_stages),
            ));
        }
        if self.ballast_kw < 0.0 {
            return Err(("ballast_kw", "must not be negative".into()));
        }
        if self.load_resample_ms == 0 {
            return Err(("load_resample_ms", "must be > 0".into()));
        }
        if !(0.0..=2.0).contains(&self.load_noise_rel) {
            return Err(("load_noise_rel", "must be in [0, 2]".into()));
        }
        Ok(())
    }
}

#[derive(Clone, Debug)]
struct Household {
    feeder: u32,
    /// This household's size relative to the mean (fixed for the run).
    scale: f64,
    load_w: u32,
    relay_closed: bool,
    /// Ground-truth energy in watt-milliseconds.
    energy_wms: u64,
    last_accrual_ms: u64,
}

#[derive(Clone, Debug)]
struct Feeder {
    closed: bool,
    first: usize,
    count: usize,
    /// Sum of the loads of connected households on this feeder.
    load_w: u64,
}

/// A customer's meter as the board reads it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CustomerReading {
    /// The customer id.
    pub customer: u64,
    /// The feeder the customer hangs off.
    pub feeder: u32,
    /// The customer's disconnect relay.
    pub relay_closed: bool,
    /// Whether power flows (relay and feeder both closed).
    pub supplied: bool,
    /// Instantaneous load (with meter noise; 0 when not supplied).
    pub load_w: u32,
    /// The meter's cumulative energy register (exact, floor of the truth).
    pub energy_wh: u64,
}

/// A feeder as the board sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeederReading {
    /// The feeder contactor.
    pub closed: bool,
    /// Load flowing through the feeder (with meter noise).
    pub load_w: u32,
}

/// The plant's sensors as the board reads them (with noise). Per-customer
/// registers are read separately ([`Plant::customer`]) because a meter read is
/// much rarer than a frequency read.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlantReadings {
    /// Simulated time of the reading.
    pub t_ms: u64,
    /// Grid frequency.
    pub frequency_mhz: u32,
    /// Bus voltage.
    pub voltage_mv: u32,
    /// Generated (mechanical = electrical at balance) power.
    pub generation_w: u32,
    /// Total user load.
    pub load_w: u32,
    /// Power dumped in ballast.
    pub ballast_w: u32,
    /// Ballast capacity currently enabled.
    pub ballast_capacity_w: u32,
    /// Each feeder.
    pub feeders: Vec<FeederReading>,
}

/// Exact plant state, for checkers and plots (never shown to a node).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct PlantTruth {
    /// Simulated time.
    pub t_ms: u64,
    /// Exact frequency.
    pub frequency_mhz: u32,
    /// Exact user load.
    pub load_w: u64,
    /// Exact ballast.
    pub ballast_w: u64,
    /// Exact generation.
    pub generation_w: u64,
}

/// A value moving linearly to a target.
#[derive(Clone, Copy, Debug)]
struct Ramp {
    target: f64,
    per_ms: f64,
}

impl Ramp {
    /// `from` moved `dt_ms` towards the target; `None` once there.
    fn advance(self, from: f64, dt_ms: u64) -> (f64, Option<Ramp>) {
        let step = self.per_ms * dt_ms as f64;
        if (self.target - from).abs() <= step {
            (self.target, None)
        } else {
            (from + step * (self.target - from).signum(), Some(self))
        }
    }
}

/// One micro-hydro plant with its feeders and households.
#[derive(Clone, Debug)]
pub struct Plant {
    cfg: PlantConfig,
    load_rng: SimRng,
    sensor_rng: SimRng,
    t_ms: u64,
    f_hz: f64,
    households: Vec<Household>,
    feeders: Vec<Feeder>,
    ballast_enabled: Vec<bool>,
    ballast_w: f64,
    /// ELC integral term (W).
    elc_integral_w: f64,
    /// Fraction of rated water flow (1.0 normally; a dry-season fault lowers it).
    water_factor: f64,
    /// Multiplier on every household's load (a fault can raise it for overload).
    load_scale: f64,
    /// Where `load_scale` is heading, and how fast (per ms); see [`Plant::ramp_load_scale`].
    load_ramp: Option<Ramp>,
    /// Where `water_factor` is heading, and how fast (per ms).
    water_ramp: Option<Ramp>,
    resample_cursor: usize,
    next_resample_ms: u64,
}

impl Plant {
    /// A plant from `cfg` with its randomness derived from `seed`.
    ///
    /// # Panics
    /// When `cfg` fails [`PlantConfig::validate`] (scenario loading validates first).
    pub fn new(cfg: PlantConfig, seed: u64) -> Self {
        if let Err((field, problem)) = cfg.validate() {
            panic!("invalid plant config: {field}: {problem}");
        }
        let mut load_rng = SimRng::derive(seed, "plant-load", cfg.first_customer_id);
        let sensor_rng = SimRng::derive(seed, "plant-sensor", cfg.first_customer_id);
        let mut households = Vec::new();
        let mut feeders = Vec::new();
        for (f, &n) in cfg.households_per_feeder.iter().enumerate() {
            feeders.push(Feeder {
                closed: true,
                first: households.len(),
                count: n as usize,
                load_w: 0,
            });
            for _ in 0..n {
                // Household sizes vary about 3:1 (a lamp and a phone versus a TV
                // and a rice cooker): uniform in [0.5, 1.5], mean 1.
                let scale = 0.5 + load_rng.next_f64();
                households.push(Household {
                    feeder: f as u32,
                    scale,
                    load_w: 0,
                    relay_closed: true,
                    energy_wms: 0,
                    last_accrual_ms: 0,
                });
            }
        }
        let stages = cfg.ballast_stages as usize;
        let mut plant = Self {
            load_rng,
            sensor_rng,
            t_ms: 0,
            f_hz: F0_HZ,
            households,
            feeders,
            ballast_enabled: vec![true; stages],
            ballast_w: 0.0,
            elc_integral_w: 0.0,
            water_factor: 1.0,
            load_scale: 1.0,
            load_ramp: None,
            water_ramp: None,
            resample_cursor: 0,
            next_resample_ms: 0,
            cfg,
        };
        for i in 0..plant.households.len() {
            plant.redraw(i);
        }
        // Start balanced: ballast takes what the load leaves.
        plant.elc_integral_w =
            (plant.mech_w() - plant.load_w() as f64).clamp(0.0, plant.ballast_cap_w());
        plant.ballast_w = plant.elc_integral_w;
        plant.next_resample_ms = plant.resample_spacing_ms();
        plant
    }

    /// The configuration.
    pub fn config(&self) -> &PlantConfig {
        &self.cfg
    }

    fn rated_w(&self) -> f64 {
        self.cfg.rated_kw * 1_000.0
    }

    fn mech_w(&self) -> f64 {
        self.rated_w() * self.water_factor
    }

    /// 2 H S / f0: the "mass" of the swing equation, in W·s/Hz.
    fn inertia_ws_per_hz(&self) -> f64 {
        2.0 * self.cfg.inertia_h_s * self.rated_w() / F0_HZ
    }

    fn damping_w_per_hz(&self) -> f64 {
        self.cfg.damping_pu * self.rated_w() / F0_HZ
    }

    fn ballast_cap_w(&self) -> f64 {
        let stage = self.cfg.ballast_kw * 1_000.0 / f64::from(self.cfg.ballast_stages);
        stage * self.ballast_enabled.iter().filter(|&&e| e).count() as f64
    }

    fn load_w(&self) -> u64 {
        self.feeders
            .iter()
            .filter(|f| f.closed)
            .map(|f| f.load_w)
            .sum()
    }

    fn supplied(&self, i: usize) -> bool {
        let h = &self.households[i];
        h.relay_closed && self.feeders[h.feeder as usize].closed
    }

    fn accrue(&mut self, i: usize) {
        let now = self.t_ms;
        let supplied = self.supplied(i);
        let h = &mut self.households[i];
        if supplied {
            h.energy_wms += u64::from(h.load_w) * (now - h.last_accrual_ms);
        }
        h.last_accrual_ms = now;
    }

    fn resample_spacing_ms(&self) -> u64 {
        (self.cfg.load_resample_ms / self.households.len().max(1) as u64).max(1)
    }

    /// Draws household `i`'s load for the current time of day.
    fn redraw(&mut self, i: usize) {
        self.accrue(i);
        let tod_ms = self.cfg.start_time_of_day_s * 1_000 + self.t_ms;
        let mean = f64::from(self.cfg.household_peak_w) * profile_at(tod_ms);
        let noise = 1.0 + self.cfg.load_noise_rel * self.load_rng.normal();
        let w = (mean * self.households[i].scale * noise * self.load_scale).max(0.0);
        let new_w = w.round().min(f64::from(u32::MAX)) as u32;
        let supplied = self.supplied(i);
        let h = &mut self.households[i];
        let old_w = h.load_w;
        h.load_w = new_w;
        if supplied {
            let f = &mut self.feeders[h.feeder as usize];
            f.load_w = f.load_w + u64::from(new_w) - u64::from(old_w);
        }
    }

    /// Redraws the households whose turn has come (round robin, spread evenly
    /// over the resample period).
    fn redraw_due(&mut self) {
        let spacing = self.resample_spacing_ms();
        let n = self.households.len();
        while self.next_resample_ms <= self.t_ms && n > 0 {
            let i = self.resample_cursor;
            self.redraw(i);
            self.resample_cursor = (i + 1) % n;
            self.next_resample_ms += spacing;
        }
    }

    /// Advances this plant alone (not interconnected) by `dt_ms`.
    pub fn step(&mut self, dt_ms: u64) {
        step_island(std::slice::from_mut(self), &[0], dt_ms);
    }

    /// Opens or closes a feeder contactor. Out-of-range feeders are ignored
    /// (and return false).
    pub fn set_feeder(&mut self, feeder: usize, closed: bool) -> bool {
        let Some(f) = self.feeders.get(feeder) else {
            return false;
        };
        if f.closed == closed {
            return true;
        }
        let (first, count) = (f.first, f.count);
        for i in first..first + count {
            self.accrue(i);
        }
        let load: u64 = self.households[first..first + count]
            .iter()
            .filter(|h| h.relay_closed)
            .map(|h| u64::from(h.load_w))
            .sum();
        let f = &mut self.feeders[feeder];
        f.closed = closed;
        f.load_w = load;
        true
    }

    /// Opens or closes a customer's disconnect relay, by customer id.
    /// Returns false for an unknown customer.
    pub fn set_customer(&mut self, customer: u64, closed: bool) -> bool {
        let Some(i) = self.index_of(customer) else {
            return false;
        };
        self.accrue(i);
        let h = &self.households[i];
        if h.relay_closed == closed {
            return true;
        }
        let (feeder, w) = (h.feeder as usize, u64::from(h.load_w));
        self.households[i].relay_closed = closed;
        // An open feeder's sum is recomputed when it closes; only a live one
        // tracks relay changes.
        let f = &mut self.feeders[feeder];
        if f.closed {
            if closed {
                f.load_w += w;
            } else {
                f.load_w -= w;
            }
        }
        true
    }

    /// Enables or disables a ballast output. Returns false when out of range.
    pub fn set_ballast_stage(&mut self, stage: usize, enabled: bool) -> bool {
        match self.ballast_enabled.get_mut(stage) {
            Some(e) => {
                *e = enabled;
                true
            }
            None => false,
        }
    }

    /// Sets the water flow as a fraction of rated (drought, blocked intake).
    pub fn set_water_factor(&mut self, factor: f64) {
        self.water_factor = factor.clamp(0.0, 1.5);
        self.water_ramp = None;
    }

    /// Moves the water flow linearly to `factor` over `ramp_ms` (zero: at once).
    pub fn ramp_water_factor(&mut self, factor: f64, ramp_ms: u64) {
        let target = factor.clamp(0.0, 1.5);
        if ramp_ms == 0 {
            self.set_water_factor(target);
        } else {
            let per_ms = (target - self.water_factor).abs() / ramp_ms as f64;
            self.water_ramp = Some(Ramp { target, per_ms });
        }
    }

    /// Moves the load multiplier linearly to `scale` over `ramp_ms` (zero: at once).
    pub fn ramp_load_scale(&mut self, scale: f64, ramp_ms: u64) {
        let target = scale.clamp(0.0, 10.0);
        if ramp_ms == 0 {
            self.set_load_scale(target);
        } else {
            let per_ms = (target - self.load_scale).abs() / ramp_ms as f64;
            self.load_ramp = Some(Ramp { target, per_ms });
        }
    }

    /// Advances the ramps by `dt_ms`.
    fn advance_ramps(&mut self, dt_ms: u64) {
        if let Some(r) = self.water_ramp {
            let (w, next) = r.advance(self.water_factor, dt_ms);
            self.water_factor = w;
            self.water_ramp = next;
        }
        if let Some(r) = self.load_ramp {
            let (scale, next) = r.advance(self.load_scale, dt_ms);
            self.set_load_scale(scale);
            self.load_ramp = next;
        }
    }

    /// Multiplies every household's load (an overload fault); applied as loads
    /// are redrawn, and at once to the current loads.
    pub fn set_load_scale(&mut self, scale: f64) {
        self.load_ramp = None;
        let scale = scale.clamp(0.0, 10.0);
        let ratio = if self.load_scale > 0.0 {
            scale / self.load_scale
        } else {
            1.0
        };
        self.load_scale = scale;
        for i in 0..self.households.len() {
            self.accrue(i);
            let supplied = self.supplied(i);
            let h = &mut self.households[i];
            let old = h.load_w;
            h.load_w = (f64::from(old) * ratio).round().min(f64::from(u32::MAX)) as u32;
            if supplied {
                let f = &mut self.feeders[h.feeder as usize];
                f.load_w = f.load_w + u64::from(h.load_w) - u64::from(old);
            }
        }
    }

    fn index_of(&self, customer: u64) -> Option<usize> {
        let i = customer.checked_sub(self.cfg.first_customer_id)?;
        let i = usize::try_from(i).ok()?;
        (i < self.households.len()).then_some(i)
    }

    /// Simulated time of this plant.
    pub fn t_ms(&self) -> u64 {
        self.t_ms
    }

    /// Number of feeders.
    pub fn feeder_count(&self) -> usize {
        self.feeders.len()
    }

    /// Number of ballast outputs.
    pub fn ballast_stage_count(&self) -> usize {
        self.ballast_enabled.len()
    }

    /// The customer ids of this plant, in order.
    pub fn customer_ids(&self) -> std::ops::Range<u64> {
        let first = self.cfg.first_customer_id;
        first..first + self.households.len() as u64
    }

    /// The customers on one feeder.
    pub fn feeder_customers(&self, feeder: usize) -> std::ops::Range<u64> {
        match self.feeders.get(feeder) {
            Some(f) => {
                let first = self.cfg.first_customer_id + f.first as u64;
                first..first + f.count as u64
            }
            None => 0..0,
        }
    }

    /// Whether a feeder contactor is closed.
    pub fn feeder_closed(&self, feeder: usize) -> bool {
        self.feeders.get(feeder).is_some_and(|f| f.closed)
    }

    /// Whether a customer's relay is closed.
    pub fn customer_closed(&self, customer: u64) -> bool {
        self.index_of(customer)
            .is_some_and(|i| self.households[i].relay_closed)
    }

    /// Whether a ballast output is enabled.
    pub fn ballast_stage_enabled(&self, stage: usize) -> bool {
        self.ballast_enabled.get(stage).copied().unwrap_or(false)
    }

    /// Exact cumulative energy supplied to a customer, in watt-milliseconds
    /// (the ground truth; `None` for an unknown customer).
    pub fn customer_energy_wms(&self, customer: u64) -> Option<u64> {
        let i = self.index_of(customer)?;
        let h = &self.households[i];
        let pending = if self.supplied(i) {
            u64::from(h.load_w) * (self.t_ms - h.last_accrual_ms)
        } else {
            0
        };
        Some(h.energy_wms + pending)
    }

    /// A customer's meter (exact register, noisy instantaneous power).
    pub fn customer(&mut self, customer: u64) -> Option<CustomerReading> {
        let i = self.index_of(customer)?;
        let energy_wms = self.customer_energy_wms(customer)?;
        let supplied = self.supplied(i);
        let h = &self.households[i];
        let (feeder, relay_closed, w) = (h.feeder, h.relay_closed, h.load_w);
        let load_w = if supplied {
            self.noisy_w(f64::from(w))
        } else {
            0
        };
        Some(CustomerReading {
            customer,
            feeder,
            relay_closed,
            supplied,
            load_w,
            energy_wh: energy_wms / 3_600_000,
        })
    }

    /// Total ground-truth energy supplied to every customer, in Wh (floor).
    pub fn metered_energy_wh(&self) -> u64 {
        self.customer_ids()
            .filter_map(|c| self.customer_energy_wms(c))
            .sum::<u64>()
            / 3_600_000
    }

    fn noisy_w(&mut self, w: f64) -> u32 {
        // Uniform noise with the configured standard deviation (sqrt(3) sigma
        // half-width): meter error is bounded, and this runs for every
        // customer every second, where a Gaussian's ln/cos would dominate.
        let sigma = w * self.cfg.power_noise_pct / 100.0;
        let u = 2.0 * self.sensor_rng.next_f64() - 1.0;
        (w + 3f64.sqrt() * sigma * u)
            .round()
            .clamp(0.0, f64::from(u32::MAX)) as u32
    }

    /// The sensors as the board reads them (with noise).
    pub fn readings(&mut self) -> PlantReadings {
        let f_mhz = self.f_hz * 1_000.0
            + f64::from(self.cfg.frequency_noise_mhz) * self.sensor_rng.normal();
        let load = self.load_w() as f64;
        // A generator without tight voltage regulation sags with speed and load:
        // V ~ f/f0 and a few percent droop from no load to full load.
        let v = V0_MV * (self.f_hz / F0_HZ) * (1.0 - 0.03 * load / self.rated_w());
        let v_noisy = v * (1.0 + 0.002 * self.sensor_rng.normal());
        let gen_w = self.mech_w();
        let generation_w = self.noisy_w(gen_w);
        let load_w = self.noisy_w(load);
        let ballast_w = self.noisy_w(self.ballast_w);
        let feeders_raw: Vec<(bool, f64)> = self
            .feeders
            .iter()
            .map(|f| (f.closed, if f.closed { f.load_w as f64 } else { 0.0 }))
            .collect();
        let feeders = feeders_raw
            .into_iter()
            .map(|(closed, w)| FeederReading {
                closed,
                load_w: self.noisy_w(w),
            })
            .collect();
        PlantReadings {
            t_ms: self.t_ms,
            frequency_mhz: f_mhz.round().max(0.0) as u32,
            voltage_mv: v_noisy.round().max(0.0) as u32,
            generation_w,
            load_w,
            ballast_w,
            ballast_capacity_w: self.ballast_cap_w().round() as u32,
            feeders,
        }
    }

    /// The exact state (for checkers and plots).
    pub fn truth(&self) -> PlantTruth {
        PlantTruth {
            t_ms: self.t_ms,
            frequency_mhz: (self.f_hz * 1_000.0).round().max(0.0) as u32,
            load_w: self.load_w(),
            ballast_w: self.ballast_w.round() as u64,
            generation_w: self.mech_w().round() as u64,
        }
    }

    /// Exact frequency in Hz.
    pub fn frequency_hz(&self) -> f64 {
        self.f_hz
    }
}

/// Advances the plants `members` of `plants`, which form one synchronous
/// island (one shared frequency), by `dt_ms`.
fn step_island(plants: &mut [Plant], members: &[usize], dt_ms: u64) {
    if members.is_empty() {
        return;
    }
    // Plants that were apart until now (a tie just closed) start from their
    // inertia-weighted mean frequency: the momentum of the rotating masses.
    let m_total: f64 = members.iter().map(|&i| plants[i].inertia_ws_per_hz()).sum();
    let mut f = members
        .iter()
        .map(|&i| plants[i].inertia_ws_per_hz() * plants[i].f_hz)
        .sum::<f64>()
        / m_total;
    for &i in members {
        plants[i].advance_ramps(dt_ms);
    }
    let mut done = 0;
    while done < dt_ms {
        let h_ms = CYCLE_MS.min(dt_ms - done);
        let h_s = h_ms as f64 / 1_000.0;
        let mut imbalance_w = 0.0;
        let mut damping = 0.0;
        for &i in members {
            let p = &mut plants[i];
            // The ELC: PI on frequency error, clamped to the enabled ballast;
            // anti-windup by clamping the integral to the same range.
            let m = p.inertia_ws_per_hz();
            let kp = 2.0 * ELC_ZETA * ELC_OMEGA_RAD_S * m;
            let ki = ELC_OMEGA_RAD_S * ELC_OMEGA_RAD_S * m;
            let err = f - F0_HZ;
            let cap = p.ballast_cap_w();
            p.elc_integral_w = (p.elc_integral_w + ki * err * h_s).clamp(0.0, cap);
            p.ballast_w = (p.elc_integral_w + kp * err).clamp(0.0, cap);
            imbalance_w += p.mech_w() - p.load_w() as f64 - p.ballast_w;
            damping += p.damping_w_per_hz();
        }
        let dfdt = (imbalance_w - damping * (f - F0_HZ)) / m_total;
        f = (f + dfdt * h_s).clamp(0.0, F_HZ_MAX);
        for &i in members {
            plants[i].t_ms += h_ms;
            plants[i].f_hz = f;
        }
        done += h_ms;
    }
    for &i in members {
        plants[i].redraw_due();
    }
}

/// Several plants, optionally interconnected by tie lines into synchronous
/// islands (plants joined by closed ties share one frequency).
#[derive(Clone, Debug, Default)]
pub struct Grid {
    plants: Vec<Plant>,
    ties: std::collections::BTreeSet<(usize, usize)>,
}

impl Grid {
    /// A grid of independent plants (no ties closed).
    pub fn new(plants: Vec<Plant>) -> Self {
        Self {
            plants,
            ties: Default::default(),
        }
    }

    /// Closes or opens the tie line between plants `a` and `b`.
    pub fn set_tie(&mut self, a: usize, b: usize, closed: bool) {
        let key = (a.min(b), a.max(b));
        if closed {
            self.ties.insert(key);
        } else {
            self.ties.remove(&key);
        }
    }

    /// Closes a tie between every pair of plants: all plants form one island, and opening
    /// the ties across any split leaves each side one island (a meshed line, not a chain
    /// whose middle would cut a side in two).
    pub fn interconnect_all(&mut self) {
        for b in 1..self.plants.len() {
            for a in 0..b {
                self.set_tie(a, b, true);
            }
        }
    }

    /// The plants.
    pub fn plants(&self) -> &[Plant] {
        &self.plants
    }

    /// One plant, mutably (for relay commands and readings).
    pub fn plant_mut(&mut self, i: usize) -> Option<&mut Plant> {
        self.plants.get_mut(i)
    }

    /// The islands: groups of plant indexes sharing a frequency.
    pub fn islands(&self) -> Vec<Vec<usize>> {
        let n = self.plants.len();
        let mut parent: Vec<usize> = (0..n).collect();
        fn find(p: &mut [usize], mut x: usize) -> usize {
            while p[x] != x {
                p[x] = p[p[x]];
                x = p[x];
            }
            x
        }
        for &(a, b) in &self.ties {
            if a < n && b < n {
                let (ra, rb) = (find(&mut parent, a), find(&mut parent, b));
                parent[ra.max(rb)] = ra.min(rb);
            }
        }
        let mut groups: std::collections::BTreeMap<usize, Vec<usize>> = Default::default();
        for i in 0..n {
            let r = find(&mut parent, i);
            groups.entry(r).or_default().push(i);
        }
        groups.into_values().collect()
    }

    /// Advances every plant by `dt_ms`.
    pub fn step(&mut self, dt_ms: u64) {
        for island in self.islands() {
            step_island(&mut self.plants, &island, dt_ms);
        }
    }
}
