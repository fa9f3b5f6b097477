//! The JSON report's required keys and the SVG plot.

use ghatta_sim::check::{Suite, SuiteConfig};
use ghatta_sim::observe::{Observation as O, Role};
use ghatta_sim::plant::{Plant, PlantConfig};
use ghatta_sim::plot::PlotRecorder;
use ghatta_sim::report::FinishInfo;

#[test]
fn the_json_report_has_the_keys_the_issue_names() {
    let suite = Suite::new(SuiteConfig::new(60_000));
    let report = suite.finish(FinishInfo {
        scenario: "x".into(),
        seed: 42,
        end_t_ms: 1_500,
        wall_seconds: 0.25,
        ..FinishInfo::default()
    });
    let v: serde_json::Value = serde_json::from_str(&report.to_json()).expect("json");
    for key in [
        "seed",
        "trace_hash",
        "sim_seconds",
        "wall_seconds",
        "violations",
        "commits",
        "elections",
        "frequency",
        "ledger",
    ] {
        assert!(v.get(key).is_some(), "report lacks {key}");
    }
    for key in ["min_hz", "max_hz", "in_band_pct"] {
        assert!(v["frequency"].get(key).is_some(), "frequency lacks {key}");
    }
    for key in ["metered_wh", "billed_wh"] {
        assert!(v["ledger"].get(key).is_some(), "ledger lacks {key}");
    }
    assert_eq!(v["seed"], 42);
    assert_eq!(v["sim_seconds"], 1.5);
    assert!(v["violations"].as_array().expect("list").is_empty());
    assert!(report.summary().contains("PASS"));
}

#[test]
fn the_plot_draws_frequency_power_roles_and_faults() {
    let day_ms = 86_400_000;
    let mut rec = PlotRecorder::new("test run", day_ms);
    let mut p = Plant::new(PlantConfig::default(), 1);
    for s in 0..86_400u64 {
        p.step(1_000);
        if s % 10 == 0 {
            rec.record_plants(s * 1_000, &[p.truth()]);
        }
    }
    rec.observe(&O::RoleChange {
        t_ms: 1_000,
        node: 1,
        term: 1,
        role: Role::Leader,
    });
    rec.observe(&O::RoleChange {
        t_ms: 1_000,
        node: 2,
        term: 1,
        role: Role::Follower,
    });
    rec.observe(&O::FaultStart {
        t_ms: 3_600_000,
        id: 1,
        what: "isolate <leader> & co".into(),
    });
    rec.observe(&O::FaultEnd {
        t_ms: 4_200_000,
        id: 1,
    });
    rec.observe(&O::NodeCrash {
        t_ms: 5_000_000,
        node: 2,
    });
    let svg = rec.render();
    assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
    assert!(svg.contains("<polygon"), "frequency envelope");
    assert_eq!(svg.matches("<polyline").count(), 2, "load and ballast");
    assert!(svg.contains("#31a354"), "leader band");
    assert!(svg.contains("#636363"), "down band");
    assert!(
        svg.contains("isolate &lt;leader&gt; &amp; co"),
        "escaped fault title"
    );
    // Bounded size however long the run: buckets, not samples.
    assert!(svg.len() < 400_000, "svg is {} bytes", svg.len());
    let path = std::env::temp_dir().join(format!("ghatta-sim-plot-{}.svg", std::process::id()));
    rec.write(&path).expect("write svg");
    assert!(std::fs::metadata(&path).expect("svg file").len() > 1_000);
    let _ = std::fs::remove_file(&path);
}
