//! Reports: the summary, JSON and self-contained HTML, and the compare command.

mod support;

use floodgate_loadtest::report::{html, summary};
use floodgate_loadtest::{run, RunOptions};
use support::{serve, text};

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
