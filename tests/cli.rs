//! The `floodgate` command as an operator runs it: check, run, SIGTERM, SIGHUP.

mod common;

use std::process::Command;
use std::time::Duration;

use common::process::{Process, BIN};
use common::*;

fn write_config(dir: &tempfile::TempDir, text: &str) -> std::path::PathBuf {
    let p = dir.path().join("floodgate.toml");
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn check_names_the_key_of_a_bad_reference_and_fails() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(
        &dir,
        r#"
[[upstream]]
name = "shop"
servers = ["127.0.0.1:3000"]

[[route]]
name = "a"
upstream = "shop"

[[route]]
name = "b"
upstream = "shop"
path_prefix = "/b"

[[route]]
name = "c"
upstream = "shp"
"#,
    );
    let out = Command::new(BIN)
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("route[2].upstream: no upstream named \"shp\""),
        "{err}"
    );
    assert!(
        err.contains("floodgate.toml"),
        "the message names the file: {err}"
    );
}

#[test]
fn check_reports_an_unknown_key_and_every_other_problem_each_with_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(
        &dir,
        r#"[server]
listen = "127.0.0.1:0"
shutdown_grace = "soon"

[[upstream]]
name = "shop"
servers = ["127.0.0.1:3000"]
reponse_timeout = "5s"

[[route]]
name = "shop"
upstream = "shop"
rate_limits = [{ name = "ip", key = "client_ip", rate = "lots", burst = 10 }]
"#,
    );
    let out = Command::new(BIN)
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    let file = path.display().to_string();
    for expected in [
        format!("{file}:3: server.shutdown_grace: "),
        format!("{file}:8: upstream[0].reponse_timeout: unknown field `reponse_timeout`"),
        format!("{file}:13: route[0].rate_limits[0].rate: "),
    ] {
        assert!(err.contains(&expected), "missing {expected:?} in:\n{err}");
    }
    // In file order.
    let at = |needle: &str| err.find(needle).unwrap();
    assert!(
        at("shutdown_grace") < at("reponse_timeout") && at("reponse_timeout") < at("rate_limits")
    );
}

#[test]
fn check_accepts_the_shipped_annotated_config() {
    let out = Command::new(BIN)
        .args([
            "check",
            "--config",
            concat!(env!("CARGO_MANIFEST_DIR"), "/config/floodgate.toml"),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn run_with_a_bad_config_exits_non_zero_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(&dir, "[server]\nshutdown_grace = \"a while\"\n");
    let out = Command::new(BIN)
        .args(["run", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("server.shutdown_grace"));
}

#[tokio::test]
async fn sigterm_during_a_slow_request_lets_it_finish_then_exits_0() {
    let shop = fast_shop().await;
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(&dir, &config_text(shop.addr, ""));
    let mut gw = Process::spawn(&path, true);
    let addr = gw.addr;
    let slow = tokio::spawn(async move { get(addr, "/__shop/slow?ms=1500").await });
    let stats = shop.stats.clone();
    eventually(
        "the slow request reached the origin",
        Duration::from_secs(5),
        || {
            let s = stats.clone();
            async move { s.in_flight.load(std::sync::atomic::Ordering::SeqCst) == 1 }
        },
    )
    .await;
    gw.signal("-TERM");
    let answer = slow.await.unwrap();
    assert_eq!(answer.status, 200);
    assert_eq!(answer.text(), "slow\n");
    let status = tokio::task::spawn_blocking(move || gw.child.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status.code(), Some(0));
}

#[tokio::test]
async fn sighup_reloads_the_config_and_a_bad_reload_keeps_the_old_one() {
    let shop = fast_shop().await;
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(&dir, &config_text(shop.addr, ""));
    let gw = Process::spawn(&path, true);
    assert_eq!(
        get(gw.addr, "/shop-a/fast").await.status,
        404,
        "shop has no such page"
    );

    // A second route that answers for a prefix with a different upstream name.
    let text = config_text(shop.addr, "").replace(
        "[[route]]\nname = \"shop\"",
        "[[route]]\nname = \"renamed\"",
    );
    std::fs::write(&path, &text).unwrap();
    gw.signal("-HUP");
    let admin = gw.admin.unwrap();
    eventually(
        "the reload is counted",
        Duration::from_secs(5),
        || async move {
            let m = get(admin, "/metrics").await.text();
            metric(&m, "floodgate_config_reloads_total{result=\"ok\"}") == Some(1.0)
        },
    )
    .await;
    get(gw.addr, "/fast").await;
    let m = get(admin, "/metrics").await.text();
    assert_eq!(
        metric(
            &m,
            "floodgate_requests_total{route=\"renamed\",status_class=\"2xx\"}"
        ),
        Some(1.0)
    );

    std::fs::write(&path, "[server]\nlisten = 7\n").unwrap();
    let a = send(
        http::Request::post(format!("http://{admin}/admin/reload"))
            .header("content-type", "application/json")
            .body(http_body_util::Full::<bytes::Bytes>::default())
            .unwrap(),
    )
    .await;
    assert_eq!(a.status, 422);
    assert!(a.text().contains("server.listen"), "{}", a.text());
    assert_eq!(
        get(gw.addr, "/fast").await.status,
        200,
        "the old config keeps serving"
    );
}

#[tokio::test]
async fn the_admin_api_asks_for_the_bearer_token_when_one_is_set() {
    let shop = fast_shop().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("token"), "s3cret\n").unwrap();
    let text = config_text(
        shop.addr,
        &format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\nadmin_token_file = \"{}\"\n",
            dir.path().join("token").display()
        ),
    );
    let gw = gateway(&text).await;
    let admin = gw.admin_addr.unwrap();
    assert_eq!(get(admin, "/metrics").await.status, 401);
    assert_eq!(
        get(admin, "/healthz").await.status,
        200,
        "health stays open for load balancers"
    );
    let ok = send(
        http::Request::get(format!("http://{admin}/metrics"))
            .header("authorization", "Bearer s3cret")
            .body(http_body_util::Full::<bytes::Bytes>::default())
            .unwrap(),
    )
    .await;
    assert_eq!(ok.status, 200);
}

#[test]
fn an_admin_listener_off_loopback_without_a_token_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(
        &dir,
        "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"0.0.0.0:0\"\n[[upstream]]\nname = \"s\"\nservers = [\"127.0.0.1:9\"]\n[[route]]\nname = \"r\"\nupstream = \"s\"\n",
    );
    let out = Command::new(BIN)
        .args(["run", "--config"])
        .arg(&path)
        .env_remove("FLOODGATE_ADMIN_TOKEN")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("FLOODGATE_ADMIN_TOKEN"));
}
