//! Spawn mode: the real shop and the real gateway (the workspace's `floodgate`
//! binary) started on free loopback ports, scraped, stopped.

use std::path::Path;
use std::process::Command;

#[test]
fn compare_in_spawn_mode_starts_direct_and_floodgate_targets_and_reads_their_stats() {
    // The gateway binary of this workspace; `cargo test --workspace` (and .ci/run)
    // builds it before any test runs.
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let fake = target.join("debug/floodgate");
    assert!(
        fake.exists(),
        "{} is missing: run `cargo build -p floodgate` first",
        fake.display()
    );
    let dir = std::env::temp_dir().join(format!("fl-spawn-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("gateway.toml"),
        "[server]\nlisten = \"{listen}\"\nadmin_listen = \"{admin_listen}\"\n[[upstream]]\nname = \"shop\"\nservers = [\"{shop_addr}\"]\n[[route]]\nname = \"shop\"\nupstream = \"shop\"\n",
    )
    .unwrap();
    let scenario = dir.join("s.toml");
    std::fs::write(
        &scenario,
        r#"
target = "spawn"
gateway_config = "gateway.toml"
timeout = "2s"
phases = [{ rate = 50, duration = "1500ms" }]
[shop]
capacity = 5
latency = "10ms"
collapse = 20
[[mix]]
path = "/products/{1..9}"
[[mix]]
method = "POST"
path = "/checkout"
body = "{}"
"#,
    )
    .unwrap();
    let json = dir.join("r.json");
    let out = Command::new(env!("CARGO_BIN_EXE_floodgate-load"))
        .arg("compare")
        .arg(&scenario)
        .arg("--floodgate-bin")
        .arg(&fake)
        .arg("--json")
        .arg(&json)
        .arg("--quiet")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let runs = v["runs"].as_array().unwrap();
    assert_eq!(
        runs.iter()
            .map(|r| r["target"].as_str().unwrap())
            .collect::<Vec<_>>(),
        ["direct", "floodgate"]
    );
    for r in runs {
        assert_eq!(r["classes"]["2xx"], 75, "{r}");
        assert!(
            r["origin"]["served"].as_u64().unwrap() >= 75,
            "{}",
            r["origin"]
        );
        let procs: Vec<&str> = r["cpu"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert!(procs.contains(&"shop"), "{procs:?}");
    }
    // The gateway's /metrics was scraped (the load is light: the queue may stay empty).
    assert!(
        runs[1]["gateway"]["max_queue_depth"].is_number(),
        "{}",
        runs[1]["gateway"]
    );
    assert!(runs[0]["gateway"].is_null());
    assert!(stdout.contains("origin peak concurrency"), "{stdout}");
    // Both targets were stopped when their runs ended: nothing listens there any more.
    for r in runs {
        let url = r["url"].as_str().unwrap();
        let addr: std::net::SocketAddr = url.trim_start_matches("http://").parse().unwrap();
        assert!(
            std::net::TcpStream::connect(addr).is_err(),
            "{url} still answers"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
