//! What the ops team deploys with: the example configs, the systemd unit and the
//! container image recipe, checked with the built binary and systemd's own verifier.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use floodgate::config::{DEFAULT_MAX_CONNECTIONS, DEFAULT_SHUTDOWN_GRACE};

const BIN: &str = env!("CARGO_BIN_EXE_floodgate");
const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn repo(path: &str) -> PathBuf {
    Path::new(ROOT).join(path)
}

fn examples() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(repo("config/examples"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    v.sort();
    v
}

/// The values of `key=` lines in a unit file (a key may repeat).
fn unit_values(unit: &str, key: &str) -> Vec<String> {
    unit.lines()
        .filter_map(|l| l.strip_prefix(&format!("{key}=")))
        .map(|v| v.trim().to_string())
        .collect()
}

fn unit_value(unit: &str, key: &str) -> String {
    let v = unit_values(unit, key);
    assert_eq!(v.len(), 1, "{key} once in the unit: {v:?}");
    v[0].clone()
}

fn unit() -> String {
    std::fs::read_to_string(repo("deploy/floodgate.service")).unwrap()
}

#[test]
fn floodgate_check_accepts_every_example_config() {
    let all = examples();
    let names: Vec<String> = all
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    for needed in ["one-shop.toml", "portal.toml", "behind-load-balancer.toml"] {
        assert!(names.iter().any(|n| n == needed), "{needed} in {names:?}");
    }
    for path in all {
        let out = Command::new(BIN)
            .args(["check", "--config"])
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn the_load_balancer_example_trusts_its_proxies_and_the_others_trust_nobody() {
    for path in examples() {
        let c = floodgate::config::load(&path).unwrap();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let trusted = c.server.trusted_proxies.len();
        if name == "behind-load-balancer.toml" {
            assert!(trusted > 0, "{name} names the load balancer's addresses");
        } else {
            assert_eq!(
                trusted, 0,
                "{name}: at the edge, no forwarded address is trusted"
            );
        }
    }
}

#[test]
fn the_examples_write_their_access_log_where_the_unit_lets_them() {
    // ProtectSystem=strict leaves only LogsDirectory= writable.
    let logs = format!("/var/log/{}/", unit_value(&unit(), "LogsDirectory"));
    for path in examples() {
        let c = floodgate::config::load(&path).unwrap();
        if let Some(file) = &c.log.access_log_file {
            assert!(
                file.starts_with(&logs),
                "{}: {} outside {logs}",
                path.display(),
                file.display()
            );
        }
    }
}

#[test]
fn systemd_analyze_verify_accepts_the_unit() {
    // The verifier checks that ExecStart's binary exists: point it at the one built.
    let dir = tempfile::tempdir().unwrap();
    let unit_path = dir.path().join("floodgate.service");
    std::fs::write(&unit_path, unit().replace("/usr/local/bin/floodgate", BIN)).unwrap();
    let out = Command::new("systemd-analyze")
        .args(["verify"])
        .arg(&unit_path)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run systemd-analyze (Debian's systemd package; .ci/run installs it): {e}"
            )
        });
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{said}");
    // Unknown or misspelt keys are only warnings: they must not be there either.
    assert!(said.trim().is_empty(), "systemd-analyze verify: {said}");
}

#[test]
fn the_unit_runs_unprivileged_reloads_by_sighup_and_stops_within_the_grace() {
    let u = unit();
    assert_eq!(unit_value(&u, "DynamicUser"), "yes");
    assert_eq!(
        unit_value(&u, "CapabilityBoundingSet"),
        "CAP_NET_BIND_SERVICE"
    );
    assert_eq!(
        unit_value(&u, "AmbientCapabilities"),
        "CAP_NET_BIND_SERVICE"
    );
    assert_eq!(unit_value(&u, "NoNewPrivileges"), "yes");
    assert_eq!(unit_value(&u, "ProtectSystem"), "strict");
    assert_eq!(unit_value(&u, "ExecReload"), "/bin/kill -HUP $MAINPID");
    assert_eq!(unit_value(&u, "KillSignal"), "SIGTERM");
    let stop = humantime::parse_duration(&unit_value(&u, "TimeoutStopSec")).unwrap();
    assert!(
        stop >= DEFAULT_SHUTDOWN_GRACE + Duration::from_secs(10),
        "TimeoutStopSec {stop:?} leaves the {DEFAULT_SHUTDOWN_GRACE:?} grace time to finish"
    );
    let nofile: usize = unit_value(&u, "LimitNOFILE").parse().unwrap();
    assert!(
        nofile >= 2 * DEFAULT_MAX_CONNECTIONS,
        "a descriptor per client and per origin connection"
    );
    // The config it starts with is the one ExecStartPre checks.
    let start = unit_value(&u, "ExecStart");
    let check = unit_value(&u, "ExecStartPre");
    let config = |cmd: &str| {
        cmd.split("--config ")
            .nth(1)
            .map(|s| s.split(' ').next().unwrap().to_string())
    };
    assert_eq!(config(&start), config(&check));
    assert!(check.contains(" check "), "{check}");
    assert!(
        config(&start).unwrap().starts_with(&format!(
            "/etc/{}/",
            unit_value(&u, "ConfigurationDirectory")
        )),
        "the config lives in the ConfigurationDirectory"
    );
}

#[test]
fn the_containerfile_copies_only_what_the_repository_has_and_runs_the_gateway() {
    let text = std::fs::read_to_string(repo("deploy/Containerfile")).unwrap();
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .collect();
    assert_eq!(
        lines.iter().filter(|l| l.starts_with("FROM ")).count(),
        2,
        "a build stage and a runtime stage"
    );
    for copy in lines.iter().filter_map(|l| l.strip_prefix("COPY ")) {
        if copy.starts_with("--from") {
            continue;
        }
        let src = copy.split_whitespace().next().unwrap();
        assert!(repo(src).exists(), "COPY {src}: not in the repository");
    }
    assert!(
        text.contains("--bin floodgate"),
        "builds the gateway binary"
    );
    assert!(text.contains("\nUSER nonroot"), "runs as a non-root user");
    assert!(text.contains("\nSTOPSIGNAL SIGTERM"), "stops by draining");
    let cmd = lines.iter().find(|l| l.starts_with("CMD ")).expect("a CMD");
    assert!(
        cmd.contains("\"/etc/floodgate/floodgate.toml\"")
            && text.contains("COPY config/floodgate.toml /etc/floodgate/floodgate.toml"),
        "the CMD's config is in the image: {cmd}"
    );
    let ignore = std::fs::read_to_string(repo(".dockerignore")).unwrap();
    assert!(
        ignore.lines().any(|l| l.trim() == "target"),
        "the build context leaves out target/"
    );
}
