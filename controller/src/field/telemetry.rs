//! Aggregating the 10 Hz grid samples of one batch period into one telemetry summary (for the
//! journal) and one `Telemetry` input (for the balancing actor): consensus sees about one
//! report a second, the journal keeps min, max and last.

use ghatta_actor_sdk as sdk;
use ghatta_hal::GridSample;

use crate::journal::{FeederEntry, TelemetryEntry};

/// Accumulates samples until [`Aggregator::seal`].
#[derive(Debug, Default, Clone)]
pub struct Aggregator {
    samples: u32,
    f_min: u32,
    f_max: u32,
    v_min: u32,
    v_max: u32,
    last: Option<GridSample>,
    started_ms: Option<u64>,
}

impl Aggregator {
    /// Add a sample taken at wall time `at_ms`.
    pub fn add(&mut self, at_ms: u64, s: &GridSample) {
        if self.samples == 0 {
            self.f_min = s.frequency_mhz;
            self.f_max = s.frequency_mhz;
            self.v_min = s.voltage_dv;
            self.v_max = s.voltage_dv;
            self.started_ms = Some(at_ms);
        } else {
            self.f_min = self.f_min.min(s.frequency_mhz);
            self.f_max = self.f_max.max(s.frequency_mhz);
            self.v_min = self.v_min.min(s.voltage_dv);
            self.v_max = self.v_max.max(s.voltage_dv);
        }
        self.samples = self.samples.saturating_add(1);
        self.last = Some(s.clone());
    }

    /// Lowest and highest frequency so far in this period, mHz.
    pub fn frequency_range_mhz(&self) -> Option<(u32, u32)> {
        (self.samples > 0).then_some((self.f_min, self.f_max))
    }

    /// Close the period at wall time `now_ms`: the journal summary and the actor input, or
    /// `None` when no sample was good.
    pub fn seal(&mut self, node: u64, now_ms: u64) -> Option<(TelemetryEntry, sdk::Telemetry)> {
        let last = self.last.take()?;
        let entry = TelemetryEntry {
            at_ms: now_ms,
            span_ms: now_ms.saturating_sub(self.started_ms.unwrap_or(now_ms)),
            level: 0,
            samples: self.samples,
            frequency_mhz_min: self.f_min,
            frequency_mhz_max: self.f_max,
            frequency_mhz_last: last.frequency_mhz,
            voltage_dv_min: self.v_min,
            voltage_dv_max: self.v_max,
            voltage_dv_last: last.voltage_dv,
            generation_w: last.generation_w,
            ballast_w: last.ballast_w,
            ballast_capacity_w: last.ballast_capacity_w,
            feeders: last
                .feeders
                .iter()
                .map(|f| FeederEntry {
                    feeder: f.feeder,
                    load_w: f.load_w,
                    closed: f.closed,
                })
                .collect(),
        };
        // The actor gets the last sample: it is the most current, and balancing acts on the
        // state of the grid now, not on a period's average.
        let input = sdk::Telemetry {
            node: sdk::NodeId(node),
            frequency_mhz: last.frequency_mhz,
            voltage_dv: last.voltage_dv,
            generation_w: last.generation_w,
            ballast_w: last.ballast_w,
            ballast_capacity_w: last.ballast_capacity_w,
            feeders: last
                .feeders
                .iter()
                .map(|f| sdk::FeederLoad {
                    feeder: f.feeder,
                    load_w: f.load_w,
                    closed: f.closed,
                })
                .collect(),
        };
        *self = Aggregator::default();
        Some((entry, input))
    }
}
