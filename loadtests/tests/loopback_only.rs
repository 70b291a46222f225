//! Load goes to this machine only, unless the operator says otherwise.

mod support;

use floodgate_loadtest::target::{check_url, Target, TargetError};
use floodgate_loadtest::{run, RunOptions};
use std::process::Command;

#[tokio::test]
async fn a_non_loopback_target_is_refused_before_any_request() {
    // 192.0.2.0/24 is TEST-NET-1: nothing answers there, and nothing is sent.
    let s = support::scenario(
        "http://192.0.2.10:8080",
        "phases = [{ rate = 10, duration = \"1s\" }]\n[[mix]]\npath = \"/\"\n",
    );
    let err = run(&s, &RunOptions::new("t", "http://192.0.2.10:8080"))
        .await
        .unwrap_err();
    let msg = format!("{err:#}");
    assert!(msg.contains("not a loopback address"), "{msg}");
    assert!(msg.contains("--allow-non-loopback"), "{msg}");
}

#[tokio::test]
async fn private_ranges_and_names_are_refused_and_loopback_is_accepted() {
    for url in [
        "http://10.0.0.1/",
        "http://192.168.1.1:80",
        "http://172.16.0.1",
        "http://example.com",
        "http://[2001:db8::1]:80",
    ] {
        assert!(
            matches!(check_url(url, false), Err(TargetError::NotLoopback { .. })),
            "{url}"
        );
    }
    for url in [
        "http://127.0.0.1:8080",
        "http://127.1.2.3/",
        "http://[::1]:9000/x",
        "http://localhost:1",
    ] {
        assert!(check_url(url, false).is_ok(), "{url}");
    }
    let t = Target::resolve("http://localhost:8080/base/", false)
        .await
        .unwrap();
    assert!(t.addr.ip().is_loopback());
    assert_eq!(t.base_path, "/base");
    // The override is explicit, and only lifts the address rule.
    assert!(check_url("http://10.0.0.1/", true).is_ok());
    assert!(check_url("https://127.0.0.1/", false).is_err());
}

#[test]
fn the_command_line_refuses_a_non_loopback_scenario_target() {
    let dir = std::env::temp_dir().join(format!("fl-loopback-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("remote.toml");
    std::fs::write(
        &file,
        "target = \"http://203.0.113.7:80\"\nphases = [{ rate = 1, duration = \"1s\" }]\n[[mix]]\npath = \"/\"\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_floodgate-load"))
        .args(["run", file.to_str().unwrap(), "--quiet"])
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("not a loopback address"), "{stderr}");
}
