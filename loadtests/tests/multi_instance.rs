//! A tiny multi-instance flash sale (issue 13): a real `redis-server` and three
//! gateway processes of this workspace sharing one waiting-room line, visitors'
//! requests spread at random over the three. Admission order must equal arrival
//! order within a 50 ms tick, and no instance may count more inside than
//! `active_users`. About 8 s in a debug build.

use floodgate_loadtest::cheat::{self, Backend, CheatScenario};
use std::path::{Path, PathBuf};

fn floodgate_bin() -> PathBuf {
    // Built before the tests by `cargo test --workspace` (and .ci/run).
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let bin = target.join("debug/floodgate");
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build -p floodgate` first",
        bin.display()
    );
    bin
}

const GATEWAY: &str = r#"
[server]
listen = "{listen}"
admin_listen = "{admin_listen}"
shutdown_grace = "1s"

[log]
level = "warn"
access_log = false

{state}

[[upstream]]
name = "shop"
servers = ["{shop_addr}"]

[[route]]
name = "shop"
path_prefix = "/"
upstream = "shop"
waiting_room = "sale"

[[route]]
name = "stock"
path_prefix = "/api/"
upstream = "shop"
rate_limits = [{ name = "per-ip", key = "client_ip", rate = "4/s", burst = 6 }]

[[waiting_room]]
name = "sale"
active_users = 4
new_users_per_minute = 360
session_duration = "8s"
abandon_after = "6s"
"#;

const SCENARIO: &str = r#"
name = "multi-instance-tiny"
gateway_config = "gateway.toml"
room = "sale"
instances = 3
state = "redis"
balance = "random"
arrivals = "4s"
max_duration = "20s"
poll_interval = "300ms"
near_front = 4
near_poll_interval = "25ms"
scrape_interval = "100ms"
seed = 7

[groups]
honest = 30

[visit]
pages = 2
page_interval = "300ms"

[order]
tick = "50ms"

[hammer]
path = "/api/stock"
requests = 60
over = "1500ms"
start_after = "1s"

[shop]
capacity = 20
latency = "2ms"
collapse = 1000
"#;

#[test]
fn three_gateways_sharing_redis_admit_in_arrival_order_and_never_over_active_users() {
    let dir = std::env::temp_dir().join(format!("fl-multi-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("gateway.toml"), GATEWAY).unwrap();
    let path = dir.join("multi.toml");
    std::fs::write(&path, SCENARIO).unwrap();
    let s = CheatScenario::load(&path).unwrap();
    assert_eq!((s.instances, s.state), (3, Backend::Redis));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let r = rt.block_on(cheat::run(&s, &floodgate_bin())).unwrap();
    let report = cheat::summary(&r);
    println!("{report}");
    let o = &r.order;
    assert_eq!(o.admitted, 30, "everyone gets in within the run:\n{report}");
    assert_eq!(
        o.arrival_admission.tau,
        Some(1.0),
        "admission order = arrival order within a tick:\n{report}"
    );
    assert_eq!(r.active_users, 4, "{report}");
    assert!(
        r.by_instance.iter().all(|i| i.reads > 0),
        "each instance's admin view was read:\n{report}"
    );
    assert!(
        r.max_active <= r.active_users && r.inside_max <= r.active_users,
        "never more inside than active_users:\n{report}"
    );
    assert!(
        r.by_instance
            .iter()
            .all(|i| i.requests > 0 && i.admissions > 0),
        "the visitors were spread over the three instances:\n{report}"
    );
    let h = r.hammer.as_ref().unwrap();
    assert!(
        h.passed >= 6 && h.worst_excess <= 1e-9,
        "one client across three instances stays within burst + rate × t:\n{report}"
    );
    assert_eq!(r.errors, 0, "{report}");
    assert!(cheat::all_met(&r), "{report}");
    let _ = std::fs::remove_dir_all(&dir);
}
