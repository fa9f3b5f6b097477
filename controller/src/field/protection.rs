//! Local protection: staged under-frequency load shedding, over-frequency ballast, over- and
//! under-voltage trips, each with hysteresis and a restore delay. Pure and deterministic: it
//! takes samples with their monotonic time and says which feeders it holds open and which
//! ballast stages it holds closed; the relay arbiter does the switching.
//!
//! Nothing here waits for anything: the field loop calls [`Protection::step`] on every grid
//! sample (10 Hz by default), in and out of quorum.
//!
//! # Rules
//!
//! - **Under-frequency (UFLS)**: each stage picks up when the frequency is at or below its
//!   threshold, drops out when it rises above threshold + `ufls_dropout_mhz`, and trips when it
//!   has stayed picked up for its delay; a tripped stage holds its feeders open. Stages are
//!   independent (a fast deep stage may trip before a slow shallow one).
//! - **Islanded**: the shallow stages are slow so that the balancing actor, which sheds by
//!   priority through consensus, moves first. Without a quorum there is no balancing actor,
//!   and a frequency that settles just under the band would sit there for stage 1's whole
//!   delay; so while the field loop reports an island ([`Protection::set_islanded`]), no stage
//!   waits longer than `island_stage_delay_ms`.
//! - **Restore**: once the frequency has stayed at or above `restore_mhz` for
//!   `restore_delay_ms`, the deepest tripped stage is restored; the next waits another full
//!   delay, so load comes back one step at a time. When the board measures the power the
//!   ballast absorbs (spare generation: a run-of-river turbine makes a constant output and the
//!   ELC dumps what the loads do not take) a stage comes back only if that spare covers the
//!   load its feeders carried when it tripped, plus `restore_headroom_pct`. Without that
//!   check a plant short of water or facing a lasting overload sheds, restores after the
//!   delay, falls out of the band again and sheds again, every delay for as long as the
//!   deficit lasts (measured in the simulator's island scenario: a 3 s dip below 48.75 Hz
//!   every 34 s for 400 s).
//! - **Over-frequency**: at or above `over_frequency_mhz` for `over_frequency_delay_ms`, the
//!   lowest-numbered ballast stage not yet held is held closed; another follows after another
//!   delay while it persists. At or below `ballast_release_mhz` for
//!   `ballast_release_delay_ms`, the most recently taken stage is released (returns to its
//!   committed or start-up state), one per delay.
//! - **Voltage**: at or beyond the trip level (statutory band +/- `voltage_band_pct` widened
//!   by `voltage_trip_margin_pct`) for the trip delay, every feeder is held open; released once
//!   the voltage has stayed inside the statutory band for `voltage_restore_delay_ms`. The gap
//!   between trip level and band is the hysteresis.
//! - **Missing or implausible samples** are not evidence: a sample outside EN 50160's "at all
//!   times" limits (50 Hz +/-15 %) or a voltage outside half to one and a half times nominal is
//!   treated as missing. After [`SAMPLE_STALE_MS`] without a good sample, pick-up and restore
//!   timers reset; trips are held (nothing is restored without evidence). A frequency of 0
//!   means "not measured" (a feeder-only board): frequency protection is then idle.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::journal::Cause;

/// Nominal frequency, 50 Hz (Nepal Electricity Regulations, rule 43).
pub const NOMINAL_MHZ: u32 = 50_000;
/// Nominal voltage, 230 V single-phase (Nepal Electricity Regulations, rule 40).
pub const NOMINAL_DV: u32 = 2_300;
/// Plausible frequency: EN 50160's limits for non-synchronous systems "at all times",
/// 50 Hz +/-15 %. A reading outside is a broken meter or a dead bus, not a frequency to act on.
pub const PLAUSIBLE_MHZ_MIN: u32 = 42_500;
/// See [`PLAUSIBLE_MHZ_MIN`].
pub const PLAUSIBLE_MHZ_MAX: u32 = 57_500;
/// Without a good sample for this long, pick-up and restore timers reset: 1 s is ten missed
/// 10 Hz samples, longer than any single Modbus retry cycle.
pub const SAMPLE_STALE_MS: u64 = 1_000;
/// Most UFLS stages: relays offer 4-6; 8 is room for a finer scheme.
pub const UFLS_STAGES_MAX: usize = 8;
/// Shortest `island_stage_delay_ms`: five 10 Hz samples, as the fastest default stage, so
/// one bad reading cannot trip a stage.
pub const ISLAND_STAGE_DELAY_MS_MIN: u64 = 500;
/// Largest `restore_headroom_pct`: beyond doubling the shed load, shed feeders would stay
/// dark with the plant plainly able to carry them.
pub const RESTORE_HEADROOM_PCT_MAX: u32 = 100;

/// One under-frequency stage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UflsStage {
    /// Pick-up threshold, mHz (trips at or below).
    pub frequency_mhz: u32,
    /// Time below the threshold before the stage trips, ms.
    pub delay_ms: u64,
    /// Feeders this stage opens; empty = chosen automatically (see [`stage_feeders`]).
    #[serde(default)]
    pub feeders: Vec<u16>,
}

/// `[field.protection]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProtectionConfig {
    /// Under-frequency stages, highest threshold first.
    pub ufls: Vec<UflsStage>,
    /// A picked-up stage drops out above threshold + this, mHz.
    pub ufls_dropout_mhz: u32,
    /// Tripped stages are restored at or above this, mHz.
    pub restore_mhz: u32,
    /// ...after this long there, one stage per delay, ms.
    pub restore_delay_ms: u64,
    /// Ballast stages are switched in at or above this, mHz.
    pub over_frequency_mhz: u32,
    /// ...after this long there, one stage per delay, ms.
    pub over_frequency_delay_ms: u64,
    /// Ballast stages taken by protection are released at or below this, mHz.
    pub ballast_release_mhz: u32,
    /// ...after this long there, one stage per delay, ms.
    pub ballast_release_delay_ms: u64,
    /// Nominal voltage, dV.
    pub nominal_voltage_dv: u32,
    /// Statutory band, percent either side of nominal (restore inside it).
    pub voltage_band_pct: u32,
    /// Trip this many percent beyond the band.
    pub voltage_trip_margin_pct: u32,
    /// Over-voltage trip delay, ms.
    pub over_voltage_delay_ms: u64,
    /// Under-voltage trip delay, ms.
    pub under_voltage_delay_ms: u64,
    /// Voltage back inside the band this long before feeders are restored, ms.
    pub voltage_restore_delay_ms: u64,
    /// A tripped stage is restored only while the spare generation (power in the ballast)
    /// exceeds the load its feeders shed by this much, percent.
    pub restore_headroom_pct: u32,
    /// Longest UFLS delay while the node has no quorum, ms.
    pub island_stage_delay_ms: u64,
    /// The node counts as islanded once its proposals have stalled this long, ms.
    pub island_after_ms: u64,
}

impl Default for ProtectionConfig {
    fn default() -> Self {
        // The four UFLS thresholds are the GE multifunction relay manual's (49.0, 48.6, 48.2,
        // 47.8 Hz). Its delays (20, 20, 10, 10 s) are shortened here: they suit a big grid whose
        // inertia makes a dip last seconds and self-correct. A village island can move 5 Hz/s
        // (ABB feeder-protection manual), its turbine cannot add power (constant flow: the ELC
        // can only dump surplus, never make up a deficit), so an overload does not recover on
        // its own; and the statutory band ends at 48.75 Hz, so stages 2-4 act outside it and
        // every second there is a second out of band. Stage 1 (inside the band) stays slow, so
        // the balancing actor, which sheds by priority through consensus within a few seconds,
        // moves first; the deeper stages get faster. The shortest delay, 500 ms, is five 10 Hz
        // samples: one bad reading (the PZEM resolves 0.1 Hz) cannot trip a stage.
        let stage = |frequency_mhz, delay_ms| UflsStage {
            frequency_mhz,
            delay_ms,
            feeders: Vec::new(),
        };
        ProtectionConfig {
            ufls: vec![
                stage(49_000, 10_000),
                stage(48_600, 5_000),
                stage(48_200, 2_000),
                stage(47_800, 500),
            ],
            // One PZEM resolution step (0.1 Hz): a reading jittering by one step on the
            // threshold must not reset the timer.
            ufls_dropout_mhz: 100,
            // Restore only once the frequency is back near nominal (0.2 Hz below: inside the
            // ELC's working range and the balancing demo's restore level), not merely above
            // the stage, or the restored load knocks it straight back down.
            restore_mhz: 49_800,
            // 30 s: long enough for the plant to settle after each restored step, short enough
            // that a village is not dark for minutes after a brief overload.
            restore_delay_ms: 30_000,
            // EN 50160 holds island frequency within +/-2 % (51.0 Hz) for 95 % of a week; the
            // statutory band ends at 51.25 Hz. Ballast comes in before the band is left.
            over_frequency_mhz: 51_000,
            // Overspeed damages turbines and appliances faster than underspeed: half a second
            // (five samples) per stage.
            over_frequency_delay_ms: 500,
            // Half way back to nominal.
            ballast_release_mhz: 50_500,
            // A minute: a stage released too early sends the frequency straight back up.
            ballast_release_delay_ms: 60_000,
            nominal_voltage_dv: NOMINAL_DV,
            // Statutory voltage band, +/-5 % (Nepal Electricity Regulations).
            voltage_band_pct: 5,
            // Trip 5 % beyond the band (+/-10 %, EN 50160's supply-voltage limits), so normal
            // excursions to the band edge never trip.
            voltage_trip_margin_pct: 5,
            // Over-voltage burns appliances: 1 s.
            over_voltage_delay_ms: 1_000,
            // Under-voltage stalls motors and overheats them over seconds; 3 s lets a motor
            // start's inrush dip pass.
            under_voltage_delay_ms: 3_000,
            voltage_restore_delay_ms: 30_000,
            // The shed load is an estimate from the moment of the trip: a restore delay or
            // more later the evening climb (up to ~30 % an hour) and each household's noise
            // may have raised it, and a PZEM reads power to 0.5 %. A fifth more keeps a
            // restore from knocking the plant straight back under 49 Hz.
            restore_headroom_pct: 20,
            // Stage 3's delay: twenty 10 Hz samples, well past a motor start's dip, and short
            // enough that a slowly sagging island trips stage 1 before leaving the band
            // (measured in sim/scenarios/island-leader-side-cut.toml: with stage 1's 10 s the
            // islands spent up to 0.2 % of the run under 48.75 Hz).
            island_stage_delay_ms: 2_000,
            // Balancing through consensus needs a commit within a few seconds to matter;
            // 5 s without one (five missed 1-second batches) and it is not coming in time.
            island_after_ms: 5_000,
        }
    }
}

impl ProtectionConfig {
    /// Check the settings; errors name the key under `field.protection`.
    pub fn validate(&self) -> Result<(), (String, String)> {
        let err = |key: &str, why: String| Err((format!("field.protection.{key}"), why));
        if self.ufls.len() > UFLS_STAGES_MAX {
            return err(
                "ufls",
                format!("{} stages; at most {UFLS_STAGES_MAX}", self.ufls.len()),
            );
        }
        let mut last = u32::MAX;
        for (i, s) in self.ufls.iter().enumerate() {
            if !(PLAUSIBLE_MHZ_MIN..NOMINAL_MHZ).contains(&s.frequency_mhz) {
                return err(
                    &format!("ufls[{i}].frequency_mhz"),
                    format!(
                        "{} mHz is not between {PLAUSIBLE_MHZ_MIN} and {NOMINAL_MHZ}",
                        s.frequency_mhz
                    ),
                );
            }
            if s.frequency_mhz >= last {
                return err(
                    &format!("ufls[{i}].frequency_mhz"),
                    "stages must be listed highest threshold first".into(),
                );
            }
            last = s.frequency_mhz;
        }
        if self.restore_mhz <= self.ufls.first().map(|s| s.frequency_mhz).unwrap_or(0)
            || self.restore_mhz > NOMINAL_MHZ
        {
            return err(
                "restore_mhz",
                format!(
                    "{} mHz must be above the first stage's threshold and at most {NOMINAL_MHZ}",
                    self.restore_mhz
                ),
            );
        }
        if self.ballast_release_mhz >= self.over_frequency_mhz
            || self.over_frequency_mhz <= NOMINAL_MHZ
        {
            return err(
                "ballast_release_mhz",
                "need nominal (50000) < over_frequency_mhz and ballast_release_mhz < over_frequency_mhz"
                    .into(),
            );
        }
        if self.island_stage_delay_ms < ISLAND_STAGE_DELAY_MS_MIN {
            return err(
                "island_stage_delay_ms",
                format!(
                    "{} ms is under {ISLAND_STAGE_DELAY_MS_MIN} ms: one noisy sample could trip \
                     a stage",
                    self.island_stage_delay_ms
                ),
            );
        }
        if self.restore_headroom_pct > RESTORE_HEADROOM_PCT_MAX {
            return err(
                "restore_headroom_pct",
                format!(
                    "{} % is over {RESTORE_HEADROOM_PCT_MAX} %: a stage would wait for spare \
                     power several times its own load",
                    self.restore_headroom_pct
                ),
            );
        }
        if self.nominal_voltage_dv == 0
            || self.voltage_band_pct == 0
            || self.voltage_band_pct + self.voltage_trip_margin_pct >= 50
            || self.voltage_trip_margin_pct == 0
        {
            return err(
                "voltage_band_pct",
                "need nominal_voltage_dv > 0, band and margin > 0 and band + margin < 50 %".into(),
            );
        }
        Ok(())
    }

    fn band_dv(&self) -> (u32, u32) {
        let d = self.nominal_voltage_dv * self.voltage_band_pct / 100;
        (self.nominal_voltage_dv - d, self.nominal_voltage_dv + d)
    }

    fn trip_dv(&self) -> (u32, u32) {
        let d =
            self.nominal_voltage_dv * (self.voltage_band_pct + self.voltage_trip_margin_pct) / 100;
        (self.nominal_voltage_dv - d, self.nominal_voltage_dv + d)
    }
}

/// Which feeders each stage sheds. Configured lists are used as given; empty lists are filled
/// from the board's feeders, highest number first (the convention: feeder 1 is the most
/// important, e.g. the health post), split evenly over the stages with the earlier stages
/// taking the surplus, so the first stage always sheds something and feeder 1 goes only in
/// the last stage that gets any.
pub fn stage_feeders(cfg: &ProtectionConfig, board_feeders: &[u16]) -> Vec<Vec<u16>> {
    let auto: Vec<usize> = (0..cfg.ufls.len())
        .filter(|i| cfg.ufls[*i].feeders.is_empty())
        .collect();
    let configured: BTreeSet<u16> = cfg.ufls.iter().flat_map(|s| s.feeders.clone()).collect();
    let mut pool: Vec<u16> = board_feeders
        .iter()
        .copied()
        .filter(|f| !configured.contains(f))
        .collect();
    pool.sort_unstable_by(|a, b| b.cmp(a));
    pool.dedup();
    let (n, s) = (pool.len(), auto.len());
    let mut out: Vec<Vec<u16>> = cfg.ufls.iter().map(|st| st.feeders.clone()).collect();
    for (k, &i) in auto.iter().enumerate() {
        let from = (k * n).div_ceil(s);
        let to = ((k + 1) * n).div_ceil(s);
        out[i] = pool[from..to].to_vec();
    }
    out
}

/// One grid sample as protection sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    /// Frequency, mHz; 0 = not measured.
    pub frequency_mhz: u32,
    /// Voltage, dV; 0 = not measured.
    pub voltage_dv: u32,
    /// Spare generation: power going into the ballast, W; `None` = not measured.
    pub spare_w: Option<u32>,
}

/// Something protection did, for logs and counters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProtectionEvent {
    /// A UFLS stage tripped (0-based index).
    StageTripped(usize),
    /// A UFLS stage was restored.
    StageRestored(usize),
    /// A ballast stage was taken.
    BallastIn(u8),
    /// A ballast stage was released.
    BallastReleased(u8),
    /// A voltage trip.
    VoltageTripped,
    /// The voltage trip was released.
    VoltageRestored,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StageState {
    Idle,
    PickedUp {
        since_ms: u64,
    },
    /// `shed_w`: the load its feeders carried just before the trip, if any was measured.
    Tripped {
        cause_mhz: u32,
        shed_w: Option<u32>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum VoltageKind {
    Over,
    Under,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum VoltageState {
    Normal,
    PickedUp { kind: VoltageKind, since_ms: u64 },
    Tripped { kind: VoltageKind, voltage_dv: u32 },
}

/// The protection state machine of one board.
#[derive(Debug, Clone)]
pub struct Protection {
    cfg: ProtectionConfig,
    stage_feeders: Vec<Vec<u16>>,
    all_feeders: Vec<u16>,
    ballast: Vec<u8>,
    stages: Vec<StageState>,
    /// Frequency at or above `restore_mhz` since.
    healthy_since_ms: Option<u64>,
    over_frequency_since_ms: Option<u64>,
    release_since_ms: Option<u64>,
    /// Ballast stages taken, in order taken, with the frequency that took each.
    taken: Vec<(u8, u32)>,
    voltage: VoltageState,
    voltage_ok_since_ms: Option<u64>,
    last_good_ms: Option<u64>,
    /// Last measured load of each feeder while it was closed (see [`Protection::note_feeder_loads`]).
    feeder_load_w: BTreeMap<u16, u32>,
    /// Spare generation in the last sample.
    spare_w: Option<u32>,
    /// No quorum: see [`Protection::set_islanded`].
    islanded: bool,
}

impl Protection {
    /// Protection for a board with these feeders and ballast stages.
    pub fn new(cfg: ProtectionConfig, feeders: &[u16], ballast: &[u8]) -> Protection {
        let stage_feeders = stage_feeders(&cfg, feeders);
        let mut ballast = ballast.to_vec();
        ballast.sort_unstable();
        ballast.dedup();
        Protection {
            stages: vec![StageState::Idle; cfg.ufls.len()],
            cfg,
            stage_feeders,
            all_feeders: feeders.to_vec(),
            ballast,
            healthy_since_ms: None,
            over_frequency_since_ms: None,
            release_since_ms: None,
            taken: Vec::new(),
            voltage: VoltageState::Normal,
            voltage_ok_since_ms: None,
            last_good_ms: None,
            feeder_load_w: BTreeMap::new(),
            spare_w: None,
            islanded: false,
        }
    }

    /// Tells protection whether the node has a quorum (the field loop decides from how long
    /// its proposals have stalled, against `island_after_ms`).
    pub fn set_islanded(&mut self, islanded: bool) {
        self.islanded = islanded;
    }

    /// Whether protection runs on island delays now.
    pub fn islanded(&self) -> bool {
        self.islanded
    }

    /// Records the feeders' measured loads, `(feeder, watts, closed)`: the load a stage
    /// sheds is what its feeders carried just before it tripped. Open feeders keep their
    /// last closed value (an open feeder measures nothing).
    pub fn note_feeder_loads(&mut self, loads: impl IntoIterator<Item = (u16, u32, bool)>) {
        for (feeder, w, closed) in loads {
            if closed {
                self.feeder_load_w.insert(feeder, w);
            }
        }
    }

    /// The feeders each stage sheds.
    pub fn stage_feeder_map(&self) -> &[Vec<u16>] {
        &self.stage_feeders
    }

    /// Stages tripped now (0-based).
    pub fn tripped_stages(&self) -> Vec<usize> {
        (0..self.stages.len())
            .filter(|i| matches!(self.stages[*i], StageState::Tripped { .. }))
            .collect()
    }

    /// Whether a voltage trip holds the feeders open.
    pub fn voltage_tripped(&self) -> bool {
        matches!(self.voltage, VoltageState::Tripped { .. })
    }

    /// Feed one sample (or `None`: the read failed) at monotonic time `now_ms`.
    pub fn step(&mut self, now_ms: u64, sample: Option<Sample>) -> Vec<ProtectionEvent> {
        let mut events = Vec::new();
        let (f, v) = match sample {
            Some(s) => (
                (s.frequency_mhz != 0).then_some(s.frequency_mhz),
                (s.voltage_dv != 0).then_some(s.voltage_dv),
            ),
            None => (None, None),
        };
        let f = f.filter(|f| (PLAUSIBLE_MHZ_MIN..=PLAUSIBLE_MHZ_MAX).contains(f));
        if let Some(s) = sample {
            self.spare_w = s.spare_w;
        }
        let nominal = self.cfg.nominal_voltage_dv;
        let v = v.filter(|v| *v >= nominal / 2 && *v <= nominal + nominal / 2);
        if f.is_some() || v.is_some() {
            self.last_good_ms = Some(now_ms);
        } else if self
            .last_good_ms
            .is_none_or(|t| now_ms.saturating_sub(t) > SAMPLE_STALE_MS)
        {
            self.lose_evidence();
            return events;
        } else {
            // A single missing sample: timers neither start nor reset.
            return events;
        }
        if let Some(f) = f {
            self.step_ufls(now_ms, f, &mut events);
            self.step_ballast(now_ms, f, &mut events);
        }
        if let Some(v) = v {
            self.step_voltage(now_ms, v, &mut events);
        }
        events
    }

    fn lose_evidence(&mut self) {
        for s in &mut self.stages {
            if let StageState::PickedUp { .. } = s {
                *s = StageState::Idle;
            }
        }
        self.healthy_since_ms = None;
        self.over_frequency_since_ms = None;
        self.release_since_ms = None;
        if let VoltageState::PickedUp { .. } = self.voltage {
            self.voltage = VoltageState::Normal;
        }
        self.voltage_ok_since_ms = None;
    }

    fn step_ufls(&mut self, now_ms: u64, f: u32, events: &mut Vec<ProtectionEvent>) {
        let island_cap = if self.islanded {
            self.cfg.island_stage_delay_ms
        } else {
            u64::MAX
        };
        let delay_of = |stage: &UflsStage| stage.delay_ms.min(island_cap);
        for (i, stage) in self.cfg.ufls.iter().enumerate() {
            let st = &mut self.stages[i];
            match *st {
                StageState::Idle if f <= stage.frequency_mhz => {
                    *st = StageState::PickedUp { since_ms: now_ms };
                }
                StageState::PickedUp { .. }
                    if f > stage
                        .frequency_mhz
                        .saturating_add(self.cfg.ufls_dropout_mhz) =>
                {
                    *st = StageState::Idle;
                }
                _ => {}
            }
            if let StageState::PickedUp { since_ms } = *st
                && now_ms.saturating_sub(since_ms) >= delay_of(stage)
            {
                let shed_w = self.stage_feeders[i]
                    .iter()
                    .map(|feeder| self.feeder_load_w.get(feeder).copied())
                    .try_fold(0u32, |sum, w| Some(sum.saturating_add(w?)));
                *st = StageState::Tripped {
                    cause_mhz: f,
                    shed_w,
                };
                events.push(ProtectionEvent::StageTripped(i));
                // A trip restarts the restore clock.
                self.healthy_since_ms = None;
            }
        }
        if f >= self.cfg.restore_mhz {
            let since = *self.healthy_since_ms.get_or_insert(now_ms);
            if now_ms.saturating_sub(since) >= self.cfg.restore_delay_ms
                && let Some(deepest) = (0..self.stages.len())
                    .rev()
                    .find(|i| matches!(self.stages[*i], StageState::Tripped { .. }))
                && self.spare_covers(deepest)
            {
                self.stages[deepest] = StageState::Idle;
                events.push(ProtectionEvent::StageRestored(deepest));
                self.healthy_since_ms = Some(now_ms);
            }
        } else {
            self.healthy_since_ms = None;
        }
    }

    /// Whether the spare generation can carry stage `i`'s shed load back, with the margin.
    /// Either unknown: yes (the restore delay alone decides, as on a board without meters).
    fn spare_covers(&self, i: usize) -> bool {
        let StageState::Tripped {
            shed_w: Some(shed), ..
        } = self.stages[i]
        else {
            return true;
        };
        let Some(spare) = self.spare_w else {
            return true;
        };
        let need = u64::from(shed) * u64::from(100 + self.cfg.restore_headroom_pct) / 100;
        u64::from(spare) >= need
    }

    fn step_ballast(&mut self, now_ms: u64, f: u32, events: &mut Vec<ProtectionEvent>) {
        if f >= self.cfg.over_frequency_mhz {
            self.release_since_ms = None;
            let since = *self.over_frequency_since_ms.get_or_insert(now_ms);
            if now_ms.saturating_sub(since) >= self.cfg.over_frequency_delay_ms
                && let Some(&b) = self
                    .ballast
                    .iter()
                    .find(|b| !self.taken.iter().any(|(t, _)| t == *b))
            {
                self.taken.push((b, f));
                events.push(ProtectionEvent::BallastIn(b));
                self.over_frequency_since_ms = Some(now_ms);
            }
        } else {
            self.over_frequency_since_ms = None;
            if f <= self.cfg.ballast_release_mhz && !self.taken.is_empty() {
                let since = *self.release_since_ms.get_or_insert(now_ms);
                if now_ms.saturating_sub(since) >= self.cfg.ballast_release_delay_ms
                    && let Some((b, _)) = self.taken.pop()
                {
                    events.push(ProtectionEvent::BallastReleased(b));
                    self.release_since_ms = Some(now_ms);
                }
            } else {
                self.release_since_ms = None;
            }
        }
    }

    fn step_voltage(&mut self, now_ms: u64, v: u32, events: &mut Vec<ProtectionEvent>) {
        let (trip_lo, trip_hi) = self.cfg.trip_dv();
        let (band_lo, band_hi) = self.cfg.band_dv();
        let beyond = if v >= trip_hi {
            Some(VoltageKind::Over)
        } else if v <= trip_lo {
            Some(VoltageKind::Under)
        } else {
            None
        };
        match self.voltage {
            VoltageState::Normal => {
                if let Some(kind) = beyond {
                    self.voltage = VoltageState::PickedUp {
                        kind,
                        since_ms: now_ms,
                    };
                }
            }
            VoltageState::PickedUp { kind, .. } => {
                if beyond != Some(kind) {
                    // Dropped out (or swung the other way: start again).
                    self.voltage = match beyond {
                        Some(k) => VoltageState::PickedUp {
                            kind: k,
                            since_ms: now_ms,
                        },
                        None => VoltageState::Normal,
                    };
                }
            }
            VoltageState::Tripped { .. } => {
                if (band_lo..=band_hi).contains(&v) {
                    let since = *self.voltage_ok_since_ms.get_or_insert(now_ms);
                    if now_ms.saturating_sub(since) >= self.cfg.voltage_restore_delay_ms {
                        self.voltage = VoltageState::Normal;
                        self.voltage_ok_since_ms = None;
                        events.push(ProtectionEvent::VoltageRestored);
                    }
                } else {
                    self.voltage_ok_since_ms = None;
                }
                return;
            }
        }
        if let VoltageState::PickedUp { kind, since_ms } = self.voltage {
            let delay = match kind {
                VoltageKind::Over => self.cfg.over_voltage_delay_ms,
                VoltageKind::Under => self.cfg.under_voltage_delay_ms,
            };
            if now_ms.saturating_sub(since_ms) >= delay {
                self.voltage = VoltageState::Tripped {
                    kind,
                    voltage_dv: v,
                };
                self.voltage_ok_since_ms = None;
                events.push(ProtectionEvent::VoltageTripped);
            }
        }
    }

    /// Feeders protection holds open, with the cause of the hold (the shallowest stage that
    /// holds a feeder, or the voltage trip).
    pub fn feeders_held_open(&self) -> BTreeMap<u16, Cause> {
        let mut out = BTreeMap::new();
        if let VoltageState::Tripped { kind, voltage_dv } = self.voltage {
            let cause = match kind {
                VoltageKind::Over => Cause::OverVoltage { voltage_dv },
                VoltageKind::Under => Cause::UnderVoltage { voltage_dv },
            };
            for f in &self.all_feeders {
                out.insert(*f, cause.clone());
            }
        }
        for (i, st) in self.stages.iter().enumerate() {
            if let StageState::Tripped { cause_mhz, .. } = st {
                for f in &self.stage_feeders[i] {
                    out.entry(*f).or_insert(Cause::Ufls {
                        stage: (i + 1) as u8,
                        frequency_mhz: *cause_mhz,
                    });
                }
            }
        }
        out
    }

    /// Ballast stages protection holds closed, with the cause.
    pub fn ballast_held_closed(&self) -> BTreeMap<u8, Cause> {
        self.taken
            .iter()
            .map(|(b, f)| (*b, Cause::OverFrequency { frequency_mhz: *f }))
            .collect()
    }
}
