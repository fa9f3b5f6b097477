//! Local protection against scripted grid trajectories: which under-frequency stage trips
//! when, dropout hysteresis, the restore delay, over-frequency ballast and voltage trips.

use ghatta::config::NodeConfig;
use ghatta::field::FieldConfig;
use ghatta::field::protection::{
    Protection, ProtectionConfig, ProtectionEvent, Sample, UflsStage, stage_feeders,
};
use ghatta::journal::Cause;

/// Grid samples every 100 ms, as the field loop takes them by default.
const STEP_MS: u64 = 100;

/// A protection on a board with feeders 1-4 and ballast stages 0-1, and a clock.
struct Rig {
    p: Protection,
    now_ms: u64,
    events: Vec<(u64, ProtectionEvent)>,
}

impl Rig {
    fn new() -> Rig {
        Rig::with(ProtectionConfig::default())
    }

    fn with(cfg: ProtectionConfig) -> Rig {
        Rig {
            p: Protection::new(cfg, &[1, 2, 3, 4], &[0, 1]),
            now_ms: 0,
            events: Vec::new(),
        }
    }

    /// Hold frequency `f` (mHz) at nominal voltage for `ms`.
    fn hold(&mut self, f: u32, ms: u64) -> &mut Self {
        self.sample(f, 2_300, ms)
    }

    fn sample(&mut self, f: u32, v: u32, ms: u64) -> &mut Self {
        self.feed(
            Some(Sample {
                frequency_mhz: f,
                voltage_dv: v,
                spare_w: None,
            }),
            ms,
        )
    }

    fn feed(&mut self, s: Option<Sample>, ms: u64) -> &mut Self {
        let end = self.now_ms + ms;
        while self.now_ms < end {
            self.now_ms += STEP_MS;
            for e in self.p.step(self.now_ms, s) {
                self.events.push((self.now_ms, e));
            }
        }
        self
    }

    fn open(&self) -> Vec<u16> {
        self.p.feeders_held_open().into_keys().collect()
    }

    /// When (ms) an event first happened.
    fn when(&self, e: &ProtectionEvent) -> Option<u64> {
        self.events.iter().find(|(_, x)| x == e).map(|(t, _)| *t)
    }
}

#[test]
fn default_stages_are_domain_thresholds_with_documented_delays() {
    let c = ProtectionConfig::default();
    let t: Vec<(u32, u64)> = c
        .ufls
        .iter()
        .map(|s| (s.frequency_mhz, s.delay_ms))
        .collect();
    // GE relay manual thresholds; delays shortened for a 5 Hz/s island (see the config).
    assert_eq!(
        t,
        vec![
            (49_000, 10_000),
            (48_600, 5_000),
            (48_200, 2_000),
            (47_800, 500)
        ]
    );
    c.validate().expect("defaults valid");
}

#[test]
fn stage_one_trips_after_its_delay_not_before() {
    let mut r = Rig::new();
    // Picked up at the first sample below, 1.1 s; trips 10 s later.
    r.hold(50_000, 1_000).hold(48_900, 10_000);
    assert!(r.open().is_empty(), "tripped before 10 s");
    r.hold(48_900, 100);
    assert_eq!(
        r.open(),
        vec![4],
        "stage 1 sheds the lowest-priority feeder"
    );
    assert_eq!(r.when(&ProtectionEvent::StageTripped(0)), Some(11_100));
    assert!(r.when(&ProtectionEvent::StageTripped(1)).is_none());
}

#[test]
fn a_deep_fall_trips_the_fast_deep_stages_first() {
    let mut r = Rig::new();
    r.hold(50_000, 1_000).hold(47_700, 10_100);
    // Every stage picked up at 1.1 s: 47.8 Hz after 0.5 s, 48.2 after 2 s, 48.6 after 5 s,
    // 49.0 after 10 s.
    assert_eq!(r.when(&ProtectionEvent::StageTripped(3)), Some(1_600));
    assert_eq!(r.when(&ProtectionEvent::StageTripped(2)), Some(3_100));
    assert_eq!(r.when(&ProtectionEvent::StageTripped(1)), Some(6_100));
    assert_eq!(r.when(&ProtectionEvent::StageTripped(0)), Some(11_100));
    assert_eq!(r.open(), vec![1, 2, 3, 4]);
    match &r.p.feeders_held_open()[&4] {
        Cause::Ufls {
            stage,
            frequency_mhz,
        } => assert_eq!((*stage, *frequency_mhz), (1, 47_700)),
        other => panic!("unexpected cause {other:?}"),
    }
}

#[test]
fn rising_above_the_dropout_resets_the_timer_but_jitter_within_it_does_not() {
    let mut r = Rig::new();
    // 9 s below, 100 mHz above the threshold (within the dropout), 9 s below again: the timer
    // kept running, so the stage trips 10 s after the first pick-up.
    r.hold(48_900, 9_000).hold(49_100, 500).hold(48_900, 1_000);
    assert_eq!(r.open(), vec![4]);
    let mut r = Rig::new();
    // Above threshold + dropout (49.1 Hz + 1 step): the timer starts again.
    r.hold(48_900, 9_000).hold(49_200, 200).hold(48_900, 9_000);
    assert!(r.open().is_empty(), "timer should have reset");
    r.hold(48_900, 1_100);
    assert_eq!(r.open(), vec![4]);
}

#[test]
fn restore_waits_the_delay_then_restores_deepest_first_one_at_a_time() {
    let mut r = Rig::new();
    r.hold(48_500, 11_000);
    assert_eq!(r.open(), vec![3, 4], "stages 1 and 2 (feeders 4 and 3)");
    // Back above the stages but below restore_mhz: nothing comes back.
    r.hold(49_500, 60_000);
    assert_eq!(r.open(), vec![3, 4]);
    // At 49.9 Hz: stage 2 (deepest) 30 s after the first sample there, stage 1 30 s later.
    r.hold(49_900, 30_000);
    assert_eq!(r.open(), vec![3, 4]);
    r.hold(49_900, 100);
    assert_eq!(r.open(), vec![4]);
    r.hold(49_900, 29_900);
    assert_eq!(r.open(), vec![4]);
    r.hold(49_900, 100);
    assert!(r.open().is_empty());
    let restores: Vec<_> = r
        .events
        .iter()
        .filter(|(_, e)| matches!(e, ProtectionEvent::StageRestored(_)))
        .map(|(_, e)| e.clone())
        .collect();
    assert_eq!(
        restores,
        vec![
            ProtectionEvent::StageRestored(1),
            ProtectionEvent::StageRestored(0)
        ]
    );
}

/// The restore waits for spare generation that can carry the shed load (plus the margin):
/// a plant short of water must not shed, restore, fall out of the band and shed again.
#[test]
fn restore_waits_for_spare_generation_that_covers_the_shed_load() {
    let mut r = Rig::new();
    // Feeder 4 (stage 1's) carries 6 kW, the others 5 kW each, all closed.
    r.p.note_feeder_loads([
        (1, 5_000, true),
        (2, 5_000, true),
        (3, 5_000, true),
        (4, 6_000, true),
    ]);
    r.hold(48_900, 10_100);
    assert_eq!(r.open(), vec![4]);
    // Once open, feeder 4 measures nothing: its 6 kW from before the trip still counts.
    r.p.note_feeder_loads([(4, 0, false)]);
    let spare = |w| Sample {
        frequency_mhz: 49_900,
        voltage_dv: 2_300,
        spare_w: Some(w),
    };
    // 7 kW spare < 6 kW x 1.2: held well past the restore delay.
    r.feed(Some(spare(7_000)), 120_000);
    assert_eq!(
        r.open(),
        vec![4],
        "not enough spare generation to carry 7.2 kW"
    );
    // 7.2 kW spare: the delay has long passed, so it comes back on the next sample.
    r.feed(Some(spare(7_200)), 100);
    assert!(r.open().is_empty());
}

/// Without a quorum no balancing actor sheds first, so no stage waits longer than the
/// island delay (2 s by default) instead of stage 1's 10 s.
#[test]
fn an_islanded_node_trips_the_slow_stages_after_the_island_delay() {
    let mut r = Rig::new();
    r.p.set_islanded(true);
    r.hold(48_900, 1_900);
    assert!(r.open().is_empty(), "not before the island delay");
    r.hold(48_900, 200);
    assert_eq!(r.open(), vec![4], "stage 1 tripped after 2 s, not 10 s");
    // Back with a quorum: the configured delays again.
    let mut r = Rig::new();
    r.p.set_islanded(true);
    r.p.set_islanded(false);
    r.hold(48_900, 9_000);
    assert!(r.open().is_empty(), "stage 1 waits its 10 s with a quorum");
}

#[test]
fn without_a_spare_measurement_the_restore_delay_alone_decides() {
    let mut r = Rig::new();
    r.p.note_feeder_loads([(4, 6_000, true)]);
    r.hold(48_900, 10_100);
    assert_eq!(r.open(), vec![4]);
    r.hold(49_900, 30_100);
    assert!(
        r.open().is_empty(),
        "spare_w None: restored after the delay"
    );
}

#[test]
fn a_dip_during_the_restore_delay_starts_it_again() {
    let mut r = Rig::new();
    r.hold(48_900, 10_100);
    assert_eq!(r.open(), vec![4]);
    r.hold(49_900, 20_000)
        .hold(49_700, 100)
        .hold(49_900, 20_000);
    assert_eq!(r.open(), vec![4], "restore clock restarted by the dip");
    r.hold(49_900, 10_100);
    assert!(r.open().is_empty());
}

#[test]
fn over_frequency_switches_ballast_in_stage_by_stage_and_releases_last_first() {
    let mut r = Rig::new();
    r.hold(51_500, 500);
    assert!(r.p.ballast_held_closed().is_empty());
    r.hold(51_500, 100);
    assert_eq!(
        r.p.ballast_held_closed().into_keys().collect::<Vec<_>>(),
        vec![0]
    );
    r.hold(51_500, 500);
    assert_eq!(
        r.p.ballast_held_closed().into_keys().collect::<Vec<_>>(),
        vec![0, 1]
    );
    // Between release and pick-up levels: held.
    r.hold(50_800, 120_000);
    assert_eq!(r.p.ballast_held_closed().len(), 2);
    // At or below 50.5 Hz for 60 s: stage 1 (taken last) goes first.
    r.hold(50_400, 60_100);
    assert_eq!(
        r.p.ballast_held_closed().into_keys().collect::<Vec<_>>(),
        vec![0]
    );
    r.hold(50_400, 60_000);
    assert!(r.p.ballast_held_closed().is_empty());
    assert!(r.open().is_empty(), "over-frequency never sheds feeders");
    assert_eq!(
        r.events.iter().map(|(_, e)| e.clone()).collect::<Vec<_>>(),
        vec![
            ProtectionEvent::BallastIn(0),
            ProtectionEvent::BallastIn(1),
            ProtectionEvent::BallastReleased(1),
            ProtectionEvent::BallastReleased(0),
        ]
    );
}

#[test]
fn over_voltage_trips_all_feeders_and_restores_only_inside_the_band() {
    let mut r = Rig::new();
    // Trip level: 230 V + 10 % = 253 V; band edge 241.5 V.
    r.sample(50_000, 2_520, 5_000);
    assert!(r.open().is_empty(), "252 V is below the trip level");
    r.sample(50_000, 2_540, 1_000);
    assert!(r.open().is_empty());
    r.sample(50_000, 2_540, 100);
    assert_eq!(r.open(), vec![1, 2, 3, 4]);
    assert!(matches!(
        r.p.feeders_held_open()[&1],
        Cause::OverVoltage { voltage_dv: 2_540 }
    ));
    // Below the trip level but above the band: hysteresis holds the trip.
    r.sample(50_000, 2_450, 120_000);
    assert_eq!(r.open(), vec![1, 2, 3, 4]);
    r.sample(50_000, 2_400, 30_000);
    assert_eq!(r.open(), vec![1, 2, 3, 4]);
    r.sample(50_000, 2_400, 100);
    assert!(r.open().is_empty());
}

#[test]
fn under_voltage_trips_after_its_own_delay() {
    let mut r = Rig::new();
    // Trip level 207 V.
    r.sample(50_000, 2_060, 3_000);
    assert!(r.open().is_empty());
    r.sample(50_000, 2_060, 100);
    assert_eq!(r.open(), vec![1, 2, 3, 4]);
    assert!(r.p.voltage_tripped());
}

#[test]
fn missing_samples_are_not_evidence() {
    let mut r = Rig::new();
    r.hold(48_900, 5_000);
    // Half a second of failed reads: timers neither reset nor advance a trip by themselves...
    r.feed(None, 500);
    r.hold(48_900, 4_600);
    assert_eq!(
        r.open(),
        vec![4],
        "short gap: the stage still trips on time"
    );
    // ...but more than a second without a sample resets pick-ups (no trip on stale data).
    let mut r = Rig::new();
    r.hold(48_900, 9_000).feed(None, 2_000).hold(48_900, 9_000);
    assert!(r.open().is_empty());
    // An implausible reading (a dead bus reads 0 Hz or nonsense) is ignored the same way.
    let mut r = Rig::new();
    r.hold(30_000, 60_000);
    assert!(r.open().is_empty());
    // Trips are held while samples are missing: nothing is restored without evidence.
    let mut r = Rig::new();
    r.hold(48_900, 10_100).feed(None, 120_000);
    assert_eq!(r.open(), vec![4]);
}

#[test]
fn a_feeder_only_board_reports_no_frequency_and_keeps_voltage_protection() {
    let mut r = Rig::new();
    r.sample(0, 2_300, 60_000);
    assert!(r.open().is_empty());
    r.sample(0, 2_600, 1_100);
    assert_eq!(r.open(), vec![1, 2, 3, 4]);
}

#[test]
fn automatic_stage_feeders_shed_the_lowest_priority_first() {
    let cfg = ProtectionConfig::default();
    assert_eq!(
        stage_feeders(&cfg, &[1, 2, 3, 4]),
        vec![vec![4], vec![3], vec![2], vec![1]]
    );
    assert_eq!(
        stage_feeders(&cfg, &[1, 2, 3, 4, 5, 6, 7, 8]),
        vec![vec![8, 7], vec![6, 5], vec![4, 3], vec![2, 1]]
    );
    // Fewer feeders than stages: the first stage always sheds something.
    assert_eq!(
        stage_feeders(&cfg, &[1, 2]),
        vec![vec![2], vec![], vec![1], vec![]]
    );
    // Configured lists are kept; the rest are shared out.
    let mut cfg = ProtectionConfig::default();
    cfg.ufls[3].feeders = vec![9];
    assert_eq!(
        stage_feeders(&cfg, &[1, 2, 3, 9]),
        vec![vec![3], vec![2], vec![1], vec![9]]
    );
}

#[test]
fn shorter_custom_schemes_work() {
    let cfg = ProtectionConfig {
        ufls: vec![UflsStage {
            frequency_mhz: 49_200,
            delay_ms: 1_000,
            feeders: vec![2],
        }],
        ..ProtectionConfig::default()
    };
    let mut r = Rig::with(cfg);
    r.hold(49_100, 1_100);
    assert_eq!(r.open(), vec![2]);
}

#[test]
fn protection_settings_are_validated_with_their_keys() {
    let parse = |field: &str| {
        NodeConfig::parse(
            &format!("id = 1\ndata_dir = \"/tmp/x\"\nraft_listen = \"127.0.0.1:7001\"\n{field}"),
            "node.toml",
        )
    };
    let ok = parse("[field.protection]\nrestore_mhz = 49900\n").expect("valid");
    assert_eq!(ok.field.protection.restore_mhz, 49_900);
    let e = parse(
        "[field.protection]\nufls = [{ frequency_mhz = 48000, delay_ms = 1 }, { frequency_mhz = 49000, delay_ms = 1 }]\n",
    )
    .unwrap_err();
    assert_eq!(e.key, "field.protection.ufls[1].frequency_mhz");
    let e = parse("[field.protection]\nvoltage_band_pct = 0\n").unwrap_err();
    assert!(e.key.starts_with("field.protection."), "{e}");
    let e = parse("[field]\ngrid_interval_ms = 10\n").unwrap_err();
    assert_eq!(e.key, "field.grid_interval_ms");
    assert_eq!(FieldConfig::default().grid_interval_ms, 100);
}
