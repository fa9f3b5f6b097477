//! Scenario files: every shipped file parses; errors name file, key and problem.

use std::path::{Path, PathBuf};

use ghatta_sim::scenario::{FaultKind, Scenario, Symbol, Target};

fn scenarios_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios")
}

fn shipped() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(scenarios_dir())
        .expect("scenarios dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    files
}

#[test]
fn every_shipped_scenario_parses_and_validates() {
    let files = shipped();
    let names: Vec<String> = files
        .iter()
        .map(|p| p.file_stem().expect("stem").to_string_lossy().into_owned())
        .collect();
    for required in [
        "calm-3-node-day",
        "five-node-leader-isolated",
        "flapping-radio",
        "power-cuts",
        "storm-5-node",
        "clock-step",
        "replace-node",
        "disk-faults",
    ] {
        assert!(
            names.iter().any(|n| n == required),
            "{required}.toml is shipped"
        );
    }
    for f in &files {
        let s = Scenario::load(f).unwrap_or_else(|e| panic!("{e}"));
        assert!(!s.name.is_empty());
        assert!(s.duration_s > 0.0 && s.liveness_bound_s > 0.0);
        assert!(s.total_ms() > 0);
    }
}

#[test]
fn the_leader_isolation_scenario_says_what_the_issue_asks() {
    let s = Scenario::load(&scenarios_dir().join("five-node-leader-isolated.toml")).expect("load");
    assert_eq!(s.nodes.count, 5);
    let m = s.default_link();
    assert_eq!(m.latency_ms * 2, 800, "800 ms RTT base");
    assert_eq!(m.latency_cap_ms * 2, 2_000, "2 s RTT cap");
    let f = &s.faults[0];
    assert_eq!(f.duration_s, Some(600.0), "ten minutes");
    assert_eq!(
        f.kind,
        FaultKind::Isolate {
            node: Target::Symbol(Symbol::Leader)
        }
    );
}

#[test]
fn the_radio_scenario_sets_its_mtu_and_loss() {
    let s = Scenario::load(&scenarios_dir().join("flapping-radio.toml")).expect("load");
    let m = s.default_link();
    assert_eq!(m.mtu_bytes, 100);
    assert_eq!(m.bandwidth_bps, 64_000);
    assert!((m.loss - 0.2).abs() < 1e-9);
    assert!(
        s.faults
            .iter()
            .any(|f| matches!(f.kind, FaultKind::FlapLink { .. }))
    );
}

const MINIMAL: &str = r#"
duration_s = 60
[nodes]
count = 3
"#;

fn err(text: &str) -> String {
    match Scenario::parse(text, "bad.toml") {
        Ok(_) => panic!("expected an error for:\n{text}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn errors_name_the_file_the_key_and_the_problem() {
    Scenario::parse(MINIMAL, "ok.toml").expect("the minimal scenario is valid");
    Scenario::parse(
        &format!("{MINIMAL}[[faults]]\nat_s = 5\nkind = \"clock_step\"\nnode = \"leader\"\nstep_ms = 86400000\n"),
        "ok.toml",
    )
    .expect("a day's step is valid");
    let cases: &[(&str, &str)] = &[
        (
            "[links.default]\nloss = 1.5\n",
            "bad.toml: links.default.loss: 1.5 is not a probability",
        ),
        (
            "[[links.pair]]\na = 0\nb = 7\n",
            "links.pair[0].b: node 7 does not exist",
        ),
        (
            "[[links.pair]]\na = 0\nb = 1\nlos = 0.1\n",
            "unknown field `los`",
        ),
        (
            "[[faults]]\nat_s = 5\nkind = \"isolate\"\nnode = \"boss\"\n",
            "unknown node \"boss\"",
        ),
        (
            "[[faults]]\nat_s = 500\nkind = \"crash\"\nnode = 1\n",
            "faults[0].at_s: 500 is not within the run",
        ),
        (
            "[[faults]]\nat_s = 5\nkind = \"crash\"\nnode = 9\n",
            "faults[0].node: node 9 does not exist",
        ),
        ("[[faults]]\nat_s = 5\nkind = \"meteor\"\n", "faults"),
        ("[plant]\nrated_kw = -3\n", "plant.rated_kw"),
        (
            "[links.default]\npreset = \"carrier-pigeon\"\n",
            "links.default.preset: unknown preset",
        ),
        (
            "[random_faults]\ncrash_per_hour = 1000\n",
            "random_faults.crash_per_hour",
        ),
        ("bogus = 1\n", "bad.toml"),
        (
            "[[faults]]\nat_s = 5\nkind = \"slow_disk\"\nnode = 1\nsync_delay_ms = 60000\n",
            "faults[0].sync_delay_ms: 60000 exceeds 10000 ms",
        ),
        (
            "[[faults]]\nat_s = 5\nkind = \"clock_step\"\nnode = 1\nstep_ms = -40000000000\n",
            "faults[0].step_ms: -40000000000 ms exceeds the +/-34560000000 ms",
        ),
        (
            "[[faults]]\nat_s = 5\nkind = \"clock_drift\"\nnode = 1\noffset_ms = 99999999999\n",
            "faults[0].offset_ms: 99999999999 ms exceeds",
        ),
        (
            "[[faults]]\nat_s = 5\nkind = \"clock_drift\"\nnode = 1\nppm = 5000\n",
            "faults[0].ppm: 5000 exceeds +/-1000 ppm",
        ),
        (
            "[[faults]]\nat_s = 5\nkind = \"deploy\"\nactor = \"biling\"\nversion = 1\n",
            "faults[0].actor: \"biling\" version 1: deploy one of",
        ),
        (
            "[[faults]]\nat_s = 5\nkind = \"deploy\"\nactor = \"billing\"\nversion = 0\n",
            "at a version of 1 or more",
        ),
        (
            "[[faults]]\nat_s = 5\nkind = \"deploy\"\nactor = \"billing\"\n",
            "missing field `version`",
        ),
        (
            "[[faults]]\nat_s = 5\nkind = \"crash\"\nnode = 1\nwhen = { state = \"leader\", node = 3 }\n",
            "faults[0].when.node: node 3 does not exist",
        ),
        (
            "[[faults]]\nat_s = 5\nkind = \"crash\"\nnode = 1\nwhen = { state = \"sleepy\" }\n",
            "unknown variant `sleepy`",
        ),
    ];
    for (extra, want) in cases {
        let msg = err(&format!("{MINIMAL}{extra}"));
        assert!(msg.contains(want), "error {msg:?} should contain {want:?}");
    }
    let msg = err("duration_s = \"long\"\n[nodes]\ncount = 3\n");
    assert!(
        msg.contains("duration_s") && msg.contains("line 1"),
        "{msg}"
    );
    let missing = Scenario::load(Path::new("/nonexistent/x.toml")).expect_err("missing file");
    assert!(missing.to_string().contains("/nonexistent/x.toml"));
}

#[test]
fn plants_get_disjoint_customer_ids() {
    let s = Scenario::parse(MINIMAL, "m.toml").expect("parse");
    let a = s.plant_config(0).expect("plant");
    let b = s.plant_config(1).expect("plant");
    assert_ne!(a.first_customer_id, b.first_customer_id);
    assert!(s.plant_config(3).is_none());
    assert!(!s.is_friendly_hour(23));
    let calm = Scenario::load(&scenarios_dir().join("calm-3-node-day.toml")).expect("load");
    assert!(calm.is_friendly_hour(23) && calm.is_friendly_hour(2) && !calm.is_friendly_hour(12));
    let cfg = ghatta_sim::check::SuiteConfig::for_scenario(&calm);
    assert_eq!(cfg.liveness_bound_ms, 60_000);
}

#[test]
fn a_scenario_may_set_raft_timing_within_rafts_rule() {
    let timing = |t: &str| format!("{MINIMAL}[timing]\n{t}\n");
    let s = Scenario::parse(
        &timing(
            "heartbeat_ms = 500\nelection_timeout_ms_min = 2500\nelection_timeout_ms_max = 5000",
        ),
        "ok.toml",
    )
    .expect("valid timing");
    assert_eq!(s.timing.map(|t| t.election_timeout_ms_max), Some(5_000));
    let e = err(&timing(
        "heartbeat_ms = 3000\nelection_timeout_ms_min = 2500\nelection_timeout_ms_max = 5000",
    ));
    assert!(
        e.contains("timing.heartbeat_ms") && e.contains("below"),
        "{e}"
    );
    let e = err(&timing(
        "heartbeat_ms = 500\nelection_timeout_ms_min = 2500\nelection_timeout_ms_max = 60000",
    ));
    assert!(e.contains("timing.election_timeout_ms_max"), "{e}");
    let e = err(&timing(
        "heartbeat_ms = 500\nelection_timeout_ms_min = 2500",
    ));
    assert!(
        e.contains("election_timeout_ms_max"),
        "a missing key is named: {e}"
    );
}
