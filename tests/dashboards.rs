//! The SREs' screens and pages: `dashboards/floodgate.json` and `dashboards/alerts.yml`
//! query only metrics a real gateway exposes, parse as PromQL, and the alerts fire on
//! the situations they name (promtool, from Debian's `prometheus` package).

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

const DASHBOARD: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/dashboards/floodgate.json");
const ALERTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/dashboards/alerts.yml");
const ALERT_TESTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/dashboards/alerts_test.yml");
const PROMTOOL: &str = "promtool";

/// Every `floodgate_…` metric name in `text`, with the `_bucket`, `_sum` and `_count`
/// of a histogram's series folded into the family's name.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while let Some(at) = text[i..].find("floodgate_") {
        let start = i + at;
        let preceded_by_ident =
            start > 0 && (bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
        let mut end = start + "floodgate_".len();
        while end < bytes.len() && (bytes[end].is_ascii_lowercase() || bytes[end] == b'_') {
            end += 1;
        }
        if !preceded_by_ident {
            let name = &text[start..end];
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .unwrap_or(name);
            names.insert(family.to_string());
        }
        i = end;
    }
    names
}

/// The metric families a `/metrics` text exposes (its `# TYPE` lines).
fn exposed_families(metrics: &str) -> BTreeSet<String> {
    metrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

fn dashboard() -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(DASHBOARD).unwrap())
        .expect("dashboards/floodgate.json is JSON")
}

/// Every PromQL expression of the dashboard: panel targets and variable queries.
fn dashboard_exprs(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, v) in m {
                match (k.as_str(), v) {
                    ("expr", serde_json::Value::String(s)) => out.push(s.clone()),
                    _ => dashboard_exprs(v, out),
                }
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|v| dashboard_exprs(v, out)),
        _ => {}
    }
}

/// Every panel, rows and the panels inside them alike.
fn panels(v: &serde_json::Value) -> Vec<&serde_json::Value> {
    let mut all = Vec::new();
    for p in v["panels"].as_array().expect("panels") {
        all.push(p);
        if let Some(inner) = p["panels"].as_array() {
            all.extend(inner);
        }
    }
    all
}

/// A gateway with every protection on: a cached, rate-limited route and a route behind
/// a waiting room, in front of a real shop, and a TLS listener (its certificate's
/// expiry is on the dashboard). `{CERT}` and `{KEY}` are the certificate's files.
const EVERYTHING: &str = r#"
[server]
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
tls_listen = "127.0.0.1:0"

[[certificate]]
cert = "{CERT}"
key = "{KEY}"
[[route]]
name = "shop"
upstream = "shop"
cache = { enabled = true, default_ttl = "2s" }
rate_limits = [{ name = "per-ip", key = "client_ip", rate = "5/s", burst = 3 }]

[[route]]
name = "sale"
upstream = "shop"
path_prefix = "/products/2"
waiting_room = "black-friday"

[[waiting_room]]
name = "black-friday"
active_users = 100
new_users_per_minute = 600
"#;

#[tokio::test]
async fn every_metric_the_dashboard_and_the_alerts_query_is_on_a_real_gateways_metrics() {
    let shop = fast_shop().await;
    let dir = tempfile::tempdir().unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["shop.test".to_string()]).unwrap();
    let (cert_file, key_file) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_file, cert.cert.pem()).unwrap();
    std::fs::write(&key_file, cert.signing_key.serialize_pem()).unwrap();
    let everything = EVERYTHING
        .replace("{CERT}", &cert_file.display().to_string())
        .replace("{KEY}", &key_file.display().to_string());
    let gw = gateway(&config_text(shop.addr, &everything)).await;
    let addr = gw.listen_addrs[0];
    // Hits, misses, a refusal by the rate limit, and a waiting-room visit.
    let mut statuses = Vec::new();
    for _ in 0..6 {
        statuses.push(get(addr, "/products/1").await.status.as_u16());
    }
    statuses.push(get(addr, "/products/2").await.status.as_u16());
    assert!(
        statuses.contains(&200) && statuses.contains(&429),
        "{statuses:?}"
    );
    assert!(
        shop.stats.served.load(std::sync::atomic::Ordering::Relaxed) >= 1,
        "the origin served the misses"
    );
    let metrics = metrics_text(&gw).await;
    assert!(
        metric(
            &metrics,
            r#"floodgate_rate_limited_total{limit="per-ip",route="shop"}"#
        ) >= Some(1.0),
        "the traffic reached the counters: {metrics}"
    );
    let exposed = exposed_families(&metrics);

    let mut exprs = Vec::new();
    dashboard_exprs(&dashboard(), &mut exprs);
    let queried: BTreeSet<String> = exprs
        .iter()
        .map(String::as_str)
        .chain([std::fs::read_to_string(ALERTS).unwrap().as_str()])
        .flat_map(metric_names)
        .collect();
    assert!(
        queried.len() > 20,
        "the scan found the queries: {queried:?}"
    );

    let missing: Vec<&String> = queried.iter().filter(|n| !exposed.contains(*n)).collect();
    assert!(
        missing.is_empty(),
        "queried but not on /metrics: {missing:?}\nexposed: {exposed:?}"
    );
}

#[test]
fn the_metric_name_scan_folds_histogram_series_and_skips_recording_rules() {
    let names = metric_names(
        r#"histogram_quantile(0.99, sum by (le) (rate(floodgate_request_duration_seconds_bucket[1m])))
           / floodgate:cache_lookups:rate10m + my_floodgate_thing + floodgate_shed_total{reason="x"}"#,
    );
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    assert_eq!(
        names,
        ["floodgate_request_duration_seconds", "floodgate_shed_total"]
    );
}

#[test]
fn the_dashboard_shows_every_figure_of_the_event_day_view() {
    let mut exprs = Vec::new();
    dashboard_exprs(&dashboard(), &mut exprs);
    let queried: BTreeSet<String> = exprs.iter().flat_map(|e| metric_names(e)).collect();
    for needed in [
        "floodgate_requests_total",           // per route, by status class
        "floodgate_request_duration_seconds", // p50 / p99
        "floodgate_shed_total",               // shed by reason
        "floodgate_queue_depth",
        "floodgate_queue_wait_seconds",
        "floodgate_upstream_in_flight",  // origin in flight …
        "floodgate_concurrency_limit",   // … against its limit
        "floodgate_cache_lookups_total", // hit ratio
        "floodgate_rate_limited_total",
        "floodgate_waiting_room_waiting",
        "floodgate_waiting_room_active",
        "floodgate_waiting_room_admitted_total", // admission rate
        "floodgate_waiting_room_expected_wait_seconds",
        "floodgate_state_backend_up",
        "floodgate_certificate_expiry_seconds",
    ] {
        assert!(queried.contains(needed), "no panel queries {needed}");
    }
}

#[test]
fn the_dashboard_can_be_provisioned_against_any_prometheus_datasource() {
    let d = dashboard();
    assert!(
        d["uid"].as_str().is_some_and(|u| !u.is_empty()),
        "a fixed uid"
    );
    let vars = d["templating"]["list"].as_array().expect("variables");
    assert!(
        vars.iter().any(|v| v["name"] == "datasource"
            && v["type"] == "datasource"
            && v["query"] == "prometheus"),
        "a datasource variable of type prometheus"
    );
    // Provisioned dashboards get no import-time inputs: every query must name the
    // variable, never a datasource uid from someone's Grafana.
    assert!(d.get("__inputs").is_none());
    let mut ids = BTreeSet::new();
    for p in panels(&d) {
        assert!(
            ids.insert(p["id"].as_u64().expect("panel id")),
            "unique ids"
        );
        let pos = &p["gridPos"];
        let (x, w) = (pos["x"].as_u64().unwrap(), pos["w"].as_u64().unwrap());
        assert!(x + w <= 24, "{} fits the 24-column grid", p["title"]);
        if p["type"] == "row" {
            continue;
        }
        assert_eq!(p["datasource"]["uid"], "${datasource}", "{}", p["title"]);
        for t in p["targets"].as_array().expect("targets") {
            assert_eq!(t["datasource"]["uid"], "${datasource}", "{}", p["title"]);
        }
        assert!(
            p["description"].as_str().is_some_and(|s| s.len() > 20),
            "{} says what it means",
            p["title"]
        );
    }
}

#[test]
fn the_alert_rules_name_every_event_day_page() {
    let text = std::fs::read_to_string(ALERTS).unwrap();
    for alert in [
        "FloodgateOriginAtLimit",
        "FloodgateShedRateHigh",
        "FloodgateCacheHitRatioDropping",
        "FloodgateWaitingRoomStalled",
        "FloodgateStateBackendDown",
        "FloodgateCertificateExpiringSoon",
    ] {
        assert!(
            text.contains(&format!("- alert: {alert}\n")),
            "no alert {alert}"
        );
    }
}

fn promtool(args: &[&str], dir: &Path) -> std::process::Output {
    Command::new(PROMTOOL)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run {PROMTOOL} (install Debian's prometheus; .ci/run does): {e}")
        })
}

fn assert_success(out: &std::process::Output, what: &str) {
    assert!(
        out.status.success(),
        "{what}:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn promtool_accepts_the_alert_rules_and_each_fires_on_its_scenario() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    assert_success(
        &promtool(&["check", "rules", ALERTS], &dir),
        "promtool check rules",
    );
    assert_success(
        &promtool(&["test", "rules", ALERT_TESTS], &dir),
        "promtool test rules",
    );
}

/// A dashboard query with its Grafana variables replaced by what a Prometheus parser
/// accepts: `=~"$var"` by `=~".*"`, `="$var"` by `="x"`.
fn as_promql(expr: &str) -> String {
    let mut out = String::new();
    let mut rest = expr;
    while let Some(at) = rest.find("\"$") {
        let (head, tail) = rest.split_at(at + 1);
        out.push_str(head);
        let name = &tail[1..];
        let len = name
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(name.len());
        out.push_str(if head.ends_with("=~\"") { ".*" } else { "x" });
        rest = &name[len..];
    }
    out.push_str(rest);
    out
}

#[test]
fn every_dashboard_query_parses_as_promql() {
    let mut exprs = Vec::new();
    dashboard_exprs(&dashboard(), &mut exprs);
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, e) in exprs.iter().enumerate() {
        let q = as_promql(e);
        assert!(!q.contains('$'), "a variable left in {q}");
        rules.push_str(&format!(
            "      - record: dashboard:query_{i}\n        expr: {}\n",
            serde_json::to_string(&q).unwrap()
        ));
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("dashboard-queries.yml");
    std::fs::write(&file, &rules).unwrap();
    let out = promtool(&["check", "rules", file.to_str().unwrap()], dir.path());
    assert_success(&out, &format!("the dashboard's queries:\n{rules}"));
}

#[test]
fn the_promql_rewrite_drops_grafana_variables() {
    assert_eq!(
        as_promql(r#"sum(rate(x{instance=~"$instance",route="$route"}[1m]))"#),
        r#"sum(rate(x{instance=~".*",route="x"}[1m]))"#
    );
}
