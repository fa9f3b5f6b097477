//! Frequency quality: within the statutory band almost always, within the hard band always.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{Checker, Violation, violation};
use crate::observe::Observation;

/// Nominal frequency (Nepal Electricity Regulations: 50 Hz).
pub const NOMINAL_MHZ: u32 = 50_000;
/// Statutory band: 50 Hz +/-2.5 % (48.75-51.25 Hz), Nepal Electricity Regulations.
pub const STATUTORY_BAND_MHZ: u32 = 1_250;
/// Hard band: +/-15 % at all times (EN 50160 for non-synchronous island systems).
pub const HARD_BAND_MHZ: u32 = 7_500;
/// Share of time inside the statutory band the project asks for: 99.9 %
/// (stricter than EN 50160's 95 % of a week within +/-2 %, because the
/// controller's local protection, not luck, must keep the band).
pub const IN_BAND_PCT_MIN: f64 = 99.9;

/// The bands a run is held to.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct FrequencyBand {
    /// Nominal frequency.
    pub nominal_mhz: u32,
    /// Half-width of the band to stay in `in_band_pct_min` of the time.
    pub band_mhz: u32,
    /// Half-width of the band never to leave.
    pub hard_band_mhz: u32,
    /// Required share of time in the band, percent.
    pub in_band_pct_min: f64,
}

impl Default for FrequencyBand {
    fn default() -> Self {
        Self {
            nominal_mhz: NOMINAL_MHZ,
            band_mhz: STATUTORY_BAND_MHZ,
            hard_band_mhz: HARD_BAND_MHZ,
            in_band_pct_min: IN_BAND_PCT_MIN,
        }
    }
}

/// The report's frequency summary.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct FrequencyStats {
    /// Lowest sample.
    pub min_hz: f64,
    /// Highest sample.
    pub max_hz: f64,
    /// Share of plant-time inside the statutory band.
    pub in_band_pct: f64,
}

/// **Frequency within 50 Hz +/-2.5 % for at least 99.9 % of simulated time
/// and never outside +/-15 %.** Protects customers' appliances and the
/// generator: the controller's local protection (UFLS, ballast) must hold the
/// grid in band with or without a quorum. Samples are the plant model's true
/// frequency; each holds until the plant's next sample (time-weighted, summed
/// over plants).
///
/// Memory: two words per plant.
#[derive(Clone, Debug, Default)]
pub struct FrequencyQuality {
    band: FrequencyBand,
    last: BTreeMap<u32, (u64, u32)>,
    in_band_ms: u64,
    total_ms: u64,
    min_mhz: Option<u32>,
    max_mhz: u32,
    outside_hard: std::collections::BTreeSet<u32>,
}

impl FrequencyQuality {
    /// A checker for the given bands.
    pub fn new(band: FrequencyBand) -> Self {
        Self {
            band,
            ..Self::default()
        }
    }

    fn in_band(&self, mhz: u32) -> bool {
        mhz.abs_diff(self.band.nominal_mhz) <= self.band.band_mhz
    }

    fn account(&mut self, upto_ms: u64) {
        let band = self.band;
        let mut add_in = 0;
        let mut add_total = 0;
        for (t, mhz) in self.last.values_mut() {
            let d = upto_ms.saturating_sub(*t);
            add_total += d;
            if mhz.abs_diff(band.nominal_mhz) <= band.band_mhz {
                add_in += d;
            }
            *t = (*t).max(upto_ms);
        }
        self.in_band_ms += add_in;
        self.total_ms += add_total;
    }

    /// The summary so far.
    pub fn stats(&self) -> FrequencyStats {
        let pct = if self.total_ms == 0 {
            100.0
        } else {
            100.0 * self.in_band_ms as f64 / self.total_ms as f64
        };
        FrequencyStats {
            min_hz: f64::from(self.min_mhz.unwrap_or(self.band.nominal_mhz)) / 1_000.0,
            max_hz: f64::from(if self.min_mhz.is_some() {
                self.max_mhz
            } else {
                self.band.nominal_mhz
            }) / 1_000.0,
            in_band_pct: pct,
        }
    }
}

impl Checker for FrequencyQuality {
    fn name(&self) -> &'static str {
        "frequency"
    }

    fn observe(&mut self, obs: &Observation, out: &mut Vec<Violation>) {
        let Observation::Frequency { t_ms, plant, mhz } = *obs else {
            return;
        };
        if let Some((t0, m0)) = self.last.get(&plant).copied() {
            let d = t_ms.saturating_sub(t0);
            self.total_ms += d;
            if self.in_band(m0) {
                self.in_band_ms += d;
            }
        }
        self.last.insert(plant, (t_ms, mhz));
        self.min_mhz = Some(self.min_mhz.map_or(mhz, |m| m.min(mhz)));
        self.max_mhz = self.max_mhz.max(mhz);
        let outside = mhz.abs_diff(self.band.nominal_mhz) > self.band.hard_band_mhz;
        // Report each excursion once, when it starts.
        let was_outside = self.outside_hard.contains(&plant);
        if outside && !was_outside {
            out.push(violation(
                self.name(),
                t_ms,
                format!(
                    "plant {plant}: frequency {:.3} Hz is outside the hard band {:.3} +/- {:.3} Hz",
                    f64::from(mhz) / 1e3,
                    f64::from(self.band.nominal_mhz) / 1e3,
                    f64::from(self.band.hard_band_mhz) / 1e3
                ),
            ));
        }
        if outside {
            self.outside_hard.insert(plant);
        } else {
            self.outside_hard.remove(&plant);
        }
    }

    fn finish(&mut self, end_t_ms: u64, out: &mut Vec<Violation>) {
        self.account(end_t_ms);
        let s = self.stats();
        if s.in_band_pct < self.band.in_band_pct_min {
            out.push(violation(
                self.name(),
                end_t_ms,
                format!(
                    "frequency in the {:.3} +/- {:.3} Hz band {:.3} % of the time, below {} % \
                     (min {:.3} Hz, max {:.3} Hz)",
                    f64::from(self.band.nominal_mhz) / 1e3,
                    f64::from(self.band.band_mhz) / 1e3,
                    s.in_band_pct,
                    self.band.in_band_pct_min,
                    s.min_hz,
                    s.max_hz
                ),
            ));
        }
    }
}
