//! The plant model: ELC keeps frequency in band, overload pulls it down,
//! the swing equation's numbers, exact metering, interconnected islands.

use ghatta_sim::plant::{F0_HZ, Grid, Plant, PlantConfig};

fn plant(seed: u64) -> Plant {
    Plant::new(PlantConfig::default(), seed)
}

#[test]
fn frequency_stays_in_band_over_a_day_with_the_elc() {
    let mut p = plant(1);
    let (mut lo, mut hi) = (f64::MAX, f64::MIN);
    let mut peak_load_w = 0;
    for _ in 0..86_400 {
        p.step(1_000);
        let f = p.frequency_hz();
        lo = lo.min(f);
        hi = hi.max(f);
        peak_load_w = peak_load_w.max(p.truth().load_w);
    }
    // The ELC holds frequency within its measurement accuracy (+/-0.04 Hz)
    // plus load-step transients, far inside the statutory +/-1.25 Hz.
    assert!(lo > 49.8 && hi < 50.2, "frequency {lo:.3}..{hi:.3} Hz");
    // The evening peak comes close to, but stays under, the 30 kW rating.
    assert!(
        (24_000..30_000).contains(&peak_load_w),
        "peak {peak_load_w} W"
    );
}

#[test]
fn overload_beyond_generation_drops_frequency_out_of_band() {
    let mut p = plant(2);
    // 19:00, the evening peak.
    for _ in 0..19 * 3_600 {
        p.step(1_000);
    }
    assert!((p.frequency_hz() - F0_HZ).abs() < 0.2);
    p.set_load_scale(1.4);
    p.step(5_000);
    let t = p.truth();
    assert_eq!(t.ballast_w, 0, "ballast saturates at zero");
    assert!(t.load_w > t.generation_w);
    assert!(
        p.frequency_hz() < 48.75,
        "overload pulls frequency out of band: {}",
        p.frequency_hz()
    );
    // Shedding a feeder (what the controller's UFLS does) restores it.
    p.set_feeder(0, false);
    p.set_feeder(1, false);
    p.step(10_000);
    assert!(
        (p.frequency_hz() - F0_HZ).abs() < 0.2,
        "after shedding {}",
        p.frequency_hz()
    );
}

#[test]
fn swing_equation_matches_its_closed_form() {
    let mut p = plant(3);
    // No user load, no ballast (every stage disabled, so the ELC can do
    // nothing) and water for 3.75 kW: the surplus drives the frequency up,
    // held back only by load damping. Inertia stays that of the 30 kW set.
    for f in 0..p.feeder_count() {
        p.set_feeder(f, false);
    }
    for s in 0..p.ballast_stage_count() {
        p.set_ballast_stage(s, false);
    }
    p.set_water_factor(0.125);
    p.step(20);
    let f0 = p.frequency_hz();
    let surplus_w = 3_750.0;
    // df/dt = f0 * dP / (2 H S) = 50 * 3750 / (2 * 2.5 * 30000) = 1.25 Hz/s
    let slope = (f0 - F0_HZ) / 0.020;
    assert!((slope - 1.25).abs() < 0.02, "initial slope {slope} Hz/s");
    // With damping D = 1 pu = 600 W/Hz: df = dP/D * (1 - exp(-t D / M)),
    // M = 2 H S / f0 = 3000 W s/Hz, so tau = 5 s and df(inf) = 6.25 Hz.
    p.step(980);
    let expected_1s = surplus_w / 600.0 * (1.0 - (-1.0f64 / 5.0).exp());
    let df = p.frequency_hz() - F0_HZ;
    assert!(
        (df - expected_1s).abs() / expected_1s < 0.02,
        "df(1 s) {df} vs {expected_1s}"
    );
    p.step(60_000);
    let df = p.frequency_hz() - F0_HZ;
    assert!((df - 6.25).abs() < 0.01, "steady state {df}");
}

#[test]
fn metering_integrates_supplied_load_exactly() {
    let mut p = plant(4);
    let ids: Vec<u64> = p.customer_ids().collect();
    let mut expected_wms: u64 = p
        .customer_ids()
        .filter_map(|c| p.customer_energy_wms(c))
        .sum();
    assert_eq!(expected_wms, 0);
    // Loads change only between steps, so within a step the supplied load is
    // constant and the energy over the step is exactly load * dt.
    for s in 0..7_200u64 {
        if s == 1_000 {
            p.set_customer(ids[3], false);
        }
        if s == 2_000 {
            p.set_feeder(1, false);
        }
        if s == 3_000 {
            p.set_customer(ids[3], true);
            p.set_feeder(1, true);
        }
        let load = p.truth().load_w;
        p.step(1_000);
        expected_wms += load * 1_000;
    }
    let total: u64 = p
        .customer_ids()
        .filter_map(|c| p.customer_energy_wms(c))
        .sum();
    assert_eq!(total, expected_wms);
    assert_eq!(p.metered_energy_wh(), expected_wms / 3_600_000);
}

#[test]
fn open_relays_and_feeders_stop_the_meter() {
    let mut p = plant(5);
    let first = p.customer_ids().start;
    let on_feeder_1 = p.feeder_customers(1).start;
    p.step(60_000);
    p.set_customer(first, false);
    p.set_feeder(1, false);
    let (a, b) = (
        p.customer_energy_wms(first).expect("customer"),
        p.customer_energy_wms(on_feeder_1).expect("customer"),
    );
    let other = p.feeder_customers(2).start;
    let c = p.customer_energy_wms(other).expect("customer");
    p.step(600_000);
    assert_eq!(
        p.customer_energy_wms(first),
        Some(a),
        "open relay: no energy"
    );
    assert_eq!(
        p.customer_energy_wms(on_feeder_1),
        Some(b),
        "open feeder: no energy"
    );
    assert!(
        p.customer_energy_wms(other).expect("customer") > c,
        "others keep metering"
    );
    let r = p.customer(first).expect("reading");
    assert!(!r.relay_closed && !r.supplied && r.load_w == 0);
    assert_eq!(r.energy_wh, a / 3_600_000);
    assert!(p.customer(u64::MAX).is_none());
}

#[test]
fn readings_are_noisy_integers_near_the_truth() {
    let mut p = plant(6);
    p.step(10_000);
    let t = p.truth();
    let r = p.readings();
    assert!(
        r.frequency_mhz.abs_diff(t.frequency_mhz) < 150,
        "4 sigma of 20 mHz noise"
    );
    assert!(r.generation_w.abs_diff(30_000) < 1_000);
    assert!(r.load_w.abs_diff(t.load_w as u32) < 500);
    assert!((220_000..240_000).contains(&r.voltage_mv));
    assert_eq!(r.feeders.len(), 4);
    let r2 = p.readings();
    assert_ne!(
        (r.frequency_mhz, r.load_w),
        (r2.frequency_mhz, r2.load_w),
        "two reads see different noise"
    );
}

#[test]
fn same_seed_same_plant_trajectory() {
    let run = |seed| {
        let mut p = plant(seed);
        (0..3_600)
            .map(|_| {
                p.step(1_000);
                let t = p.truth();
                (t.frequency_mhz, t.load_w, t.ballast_w)
            })
            .collect::<Vec<_>>()
    };
    assert!(run(7) == run(7), "same seed, same trajectory");
    assert!(run(7) != run(8), "different seed, different loads");
}

#[test]
fn interconnected_plants_share_frequency_and_ballast_headroom() {
    let cfg = |id| PlantConfig {
        first_customer_id: id,
        start_time_of_day_s: 19 * 3_600,
        ..PlantConfig::default()
    };
    let mut alone = Grid::new(vec![Plant::new(cfg(0), 1), Plant::new(cfg(1_000), 2)]);
    let mut tied = alone.clone();
    tied.interconnect_all();
    assert_eq!(tied.islands(), vec![vec![0, 1]]);
    assert_eq!(alone.islands().len(), 2);
    for g in [&mut alone, &mut tied] {
        // Plant 0 carries 20 % more load than it generates; plant 1 is light.
        g.plant_mut(0).expect("plant").set_load_scale(1.35);
        for f in 2..4 {
            g.plant_mut(1).expect("plant").set_feeder(f, false);
        }
        g.step(30_000);
    }
    let f_alone = alone.plants()[0].frequency_hz();
    assert!(
        f_alone < 48.75,
        "alone, the overloaded plant sags: {f_alone}"
    );
    let (a, b) = (
        tied.plants()[0].frequency_hz(),
        tied.plants()[1].frequency_hz(),
    );
    assert_eq!(a, b, "one island, one frequency");
    assert!(
        (a - F0_HZ).abs() < 0.2,
        "tied, the light plant's ballast covers: {a}"
    );
}
