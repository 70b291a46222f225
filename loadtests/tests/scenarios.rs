//! The scenario files shipped in loadtests/scenarios parse, and say what they claim.

use floodgate_loadtest::scenario::{LoadModel, Scenario, TargetSpec};
use std::path::{Path, PathBuf};
use std::time::Duration;

fn scenarios() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios");
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    v.sort();
    v
}

fn load(name: &str) -> Scenario {
    Scenario::load(
        &Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("scenarios")
            .join(name),
    )
    .unwrap()
}

#[test]
fn every_scenario_file_parses_and_names_an_existing_gateway_template() {
    let files = scenarios();
    assert!(files.len() >= 3, "{files:?}");
    for f in files {
        let s = Scenario::load(&f).unwrap_or_else(|e| panic!("{e}"));
        assert!(
            s.mix.entries().iter().any(|e| e.weight > 0),
            "{}",
            f.display()
        );
        if let TargetSpec::Spawn {
            gateway_config: Some(t),
            ..
        } = &s.target
        {
            let text =
                std::fs::read_to_string(t).unwrap_or_else(|e| panic!("{}: {e}", t.display()));
            for hole in ["{listen}", "{admin_listen}", "{shop_addr}"] {
                assert!(text.contains(hole), "{} lacks {hole}", t.display());
            }
        }
        // Every run is bounded, and short enough for a 2-core box.
        assert!(
            s.max_duration <= Duration::from_secs(60),
            "{}: {:?}",
            f.display(),
            s.max_duration
        );
    }
}

#[test]
fn smoke_runs_in_three_seconds_and_fast_asks_for_20k_per_second() {
    assert_eq!(load("smoke.toml").model.duration(), Duration::from_secs(3));
    let LoadModel::Open(fast) = load("fast.toml").model else {
        panic!("open model")
    };
    assert_eq!(fast.peak_rate(), 20_000.0);
    assert_eq!(fast.total_requests(), 200_000);
}

#[test]
fn the_flash_sale_spikes_past_the_shop_and_stays_under_a_minute() {
    let s = load("flash-sale.toml");
    let TargetSpec::Spawn { shop, .. } = &s.target else {
        panic!("spawn mode")
    };
    assert_eq!(
        (shop.capacity, shop.latency, shop.collapse),
        (50, Duration::from_millis(20), 200)
    );
    let LoadModel::Open(sch) = &s.model else {
        panic!("open model")
    };
    assert!(sch.duration() <= Duration::from_secs(60));
    assert!(
        sch.rate_at(1.0) <= shop.throughput() * 0.5 + 1.0,
        "warm-up at half capacity"
    );
    assert!(
        sch.peak_rate() > shop.throughput() * 2.0,
        "the spike overloads the shop"
    );
}
