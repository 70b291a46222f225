//! Reports: the summary, JSON and self-contained HTML, and the compare command.

mod support;

use std::time::Duration;
use tokio::time::Instant;

use floodgate_loadtest::client::ClientKind;
use floodgate_loadtest::report::{self, html, summary, BuildInfo};
use floodgate_loadtest::stats::{Class, Recorder};
use floodgate_loadtest::{run, RunOptions};
use support::{serve, text};

/// The text labels of the x axis of each chart on a time axis, in page order.
fn time_axes(page: &str) -> Vec<Vec<String>> {
    page.split("<svg")
        .skip(1)
        .map(|svg| {
            svg.match_indices("\">")
                .filter(|(i, _)| svg[..*i].ends_with("middle") || svg[..*i].ends_with("end"))
                .map(|(i, m)| svg[i + m.len()..].split('<').next().unwrap().to_string())
                .filter(|l| l.ends_with('s') && l[..l.len() - 1].parse::<f64>().is_ok())
                .collect::<Vec<_>>()
        })
        .filter(|ticks| !ticks.is_empty())
        .collect()
}

async fn busy_server() -> support::TestServer {
    serve(|req| async move {
        if req.uri().path().starts_with("/busy") {
            text(503, "busy")
        } else {
            text(200, "ok")
        }
    })
    .await
}

const MIX: &str = r#"
phases = [{ rate = 200, duration = "1500ms" }]
[[mix]]
path = "/ok/{1..9}"
weight = 3
[[mix]]
path = "/busy"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_html_report_is_self_contained_with_charts_over_time() {
    let server = busy_server().await;
    let s = support::scenario(&server.url(), MIX);
    let r = run(&s, &RunOptions::new("t", &server.url())).await.unwrap();
    let page = html::render_report(std::slice::from_ref(&r));
    assert!(page.starts_with("<!DOCTYPE html>"));
    assert!(
        page.matches("<svg").count() >= 3,
        "throughput, latency and error-rate charts"
    );
    for needle in ["Throughput by class", "Latency", "Error rate"] {
        assert!(page.contains(needle), "{needle}");
    }
    // Nothing is fetched: no scripts, stylesheets, images or fonts from anywhere.
    for banned in ["<script", "<link", "src=", "href=", "url(", "@import"] {
        assert!(!page.contains(banned), "{banned}");
    }
    let json: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
    assert_eq!(json["classes"]["5xx"], json["statuses"]["503"]);
    assert!(json["timeline"].as_array().unwrap().len() >= 2);
    assert!(json["latency_refusals"]["p99_ms"].is_number());
    assert!(json["cpu"][0]["cores"].is_number());
    let text = summary::summary(&r);
    assert!(
        text.contains("429/503 (refused)") && text.contains("generator"),
        "{text}"
    );
    assert!(
        text.contains("commit ") && text.contains("cores "),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_report_names_scenario_commit_host_cores_and_load_and_has_an_hdr_plot() {
    let server = busy_server().await;
    let s = support::scenario(&server.url(), MIX);
    let r = run(&s, &RunOptions::new("t", &server.url())).await.unwrap();
    let page = html::render_report(std::slice::from_ref(&r));
    for needle in [
        "<th>scenario</th>",
        "<th>commit</th>",
        "<th>host</th>",
        "<th>cores</th>",
        "<th>load average</th>",
        "Latency by percentile",
        ">99%<",
    ] {
        assert!(page.contains(needle), "{needle}");
    }
    assert!(page.contains(&format!("<td>{}</td>", r.scenario)));
    let json: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
    let env = &json["environment"];
    assert!(env["cores"].as_u64().unwrap() >= 1, "{env}");
    assert!(!env["commit"].as_str().unwrap().is_empty());
    assert!(env["load_average"][0].is_number(), "{env}");
    // The HDR curve rises with the percentile and ends at the slowest response.
    let curve = json["latency_curve"].as_array().unwrap();
    assert!(curve.len() > 10);
    let ms: Vec<f64> = curve.iter().map(|p| p["ms"].as_f64().unwrap()).collect();
    assert!(ms.windows(2).all(|w| w[0] <= w[1]), "{ms:?}");
    assert_eq!(
        *ms.last().unwrap(),
        json["latency_all"]["max_ms"].as_f64().unwrap()
    );
    // Every time chart of the page shares one time axis.
    let axes = time_axes(&page);
    assert!(axes.len() >= 3);
    assert!(axes.windows(2).all(|w| w[0] == w[1]), "{axes:?}");
}

/// A run of 1.5 s at 200 requests per second that drains for 0.3 s, recorded by hand
/// so that every count is known.
fn half_second_at_the_end() -> report::RunReport {
    let start = Instant::now();
    let mut rec = Recorder::new(start, &["page".to_string()]);
    for i in 0..300u64 {
        let at = start + Duration::from_millis(i * 5);
        rec.dispatched(at, Some(Duration::ZERO));
        let done = at + Duration::from_millis(20);
        rec.completed(
            done,
            0,
            Some(200),
            Class::Success,
            Duration::from_millis(20),
            10,
        );
    }
    report::build(
        &rec,
        BuildInfo {
            scenario: "hand-made".into(),
            target: "t".into(),
            url: "http://127.0.0.1:1".into(),
            model: "open".into(),
            client: ClientKind::Pool,
            planned_s: 1.5,
            wall_s: 1.8,
            peak_rate: Some(200.0),
            unfinished: 0,
            connections_opened: 1,
            cpu: vec![],
            metrics: vec![],
            gateway: None,
            origin: None,
            has_shoppers: false,
        },
    )
}

#[test]
fn a_run_ending_mid_second_shows_no_collapse_of_throughput_at_its_end() {
    let r = half_second_at_the_end();
    // The last second of load holds half the requests of a full one...
    assert_eq!(r.timeline[1].sent, 100);
    assert_eq!(r.timeline[1].load_s, 0.5);
    // ...and is the same rate: 200/s, not a drop to 100/s.
    for s in &r.timeline {
        if let Some(rate) = s.send_rate() {
            assert!((rate - 200.0).abs() < 1e-6, "second {}: {rate}", s.t);
        }
        if let Some(rate) = s.completion_rate("2xx") {
            assert!(rate >= 150.0, "second {}: {rate}", s.t);
        }
    }
    // Completions in the second where the load ended and the drain began are no rate.
    assert_eq!(r.timeline[1].completion_rate("2xx"), None);
    assert!(r.timeline[0].completion_rate("2xx").is_some());
    // The drain is not a throughput point at all, and is marked on the charts.
    assert!(r
        .timeline
        .iter()
        .filter(|s| s.t >= 2)
        .all(|s| s.send_rate().is_none()));
    let page = html::render_report(std::slice::from_ref(&r));
    assert!(page.contains("load ends"));
}

#[test]
fn compared_targets_are_overlaid_on_one_chart_with_one_time_axis() {
    let a = half_second_at_the_end();
    let mut b = half_second_at_the_end();
    b.target = "other".into();
    b.wall_s = 4.2;
    let page = html::render_report(&[a, b]);
    for title in [
        "Goodput by target",
        "p99 latency by target",
        "Error rate by target",
        "Latency by percentile by target",
    ] {
        let svg = page
            .split("<svg")
            .find(|s| s.contains(title))
            .unwrap_or_else(|| panic!("no chart {title}"));
        assert!(
            svg.contains(">t<") && svg.contains(">other<"),
            "{title}: both targets"
        );
        assert_eq!(
            svg.matches("<polyline").count(),
            2,
            "{title}: one line each"
        );
    }
    let axes = time_axes(&page);
    assert!(axes.windows(2).all(|w| w[0] == w[1]), "{axes:?}");
    assert!(
        axes[0].contains(&"5s".to_string()),
        "the longest run sets the axis: {axes:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compare_runs_each_target_in_turn_and_writes_one_report() {
    let a = busy_server().await;
    let b = busy_server().await;
    let dir = std::env::temp_dir().join(format!("fl-compare-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("s.toml");
    std::fs::write(&file, format!("target = \"{}\"\n{MIX}", a.url())).unwrap();
    let (json, page) = (dir.join("r.json"), dir.join("r.html"));
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_floodgate-load"))
        .arg("compare")
        .arg(&file)
        .args([
            "--target",
            &format!("alpha={}", a.url()),
            "--target",
            &format!("beta={}", b.url()),
            "--quiet",
        ])
        .arg("--json")
        .arg(&json)
        .arg("--html")
        .arg(&page)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("goodput (2xx/s)") && stdout.contains("alpha") && stdout.contains("beta"),
        "{stdout}"
    );
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let runs = v["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 2);
    assert_eq!(runs[1]["target"], "beta");
    assert_eq!(runs[0]["sent"], 300);
    assert!(std::fs::read_to_string(&page)
        .unwrap()
        .contains("Comparison"));
    let _ = std::fs::remove_dir_all(&dir);
}
