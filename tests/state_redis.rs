//! Several gateway instances sharing state through a real `redis-server`, end to end.
//!
//! Each test starts its own Redis on a free loopback port with persistence off, and
//! three gateways in front of one simulated shop. `redis-server` missing is a failure,
//! not a skip: `.ci/run` installs it.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use http::StatusCode;

use common::redis::{
    admin_get, admin_post, passed_round_robin, state_toml, three_gateways, three_processes,
    wait_backend, RedisServer,
};
use common::{config_text, eventually, fast_shop, gateway, get_from, metric, metrics_text, Answer};

// === the scenarios ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_per_client_limit_holds_across_three_instances_within_the_documented_slack() {
    let shop = fast_shop().await;
    let redis = RedisServer::start().await;
    let gws = three_gateways(
        shop.addr,
        &redis,
        "[[route]]\nname = \"shop\"\nupstream = \"shop\"\n\
         rate_limits = [{ name = \"per-ip\", key = \"client_ip\", rate = \"1/m\", burst = 5 }]\n\n\
         [[route]]\nname = \"api\"\nupstream = \"shop\"\npath_prefix = \"/products/\"\n\
         rate_limits = [{ name = \"per-key\", key = \"header:x-client\", rate = \"20/s\", burst = 10 }]\n",
    )
    .await;
    let before = shop.stats.received.load(Ordering::Relaxed);
    // Sequential, spread over the instances: exactly the burst, as on one instance
    // (each instance alone would have let 5 through, 15 in all).
    let ok = passed_round_robin(30, "127.0.0.2", &gws, &[]).await;
    assert_eq!(ok, 5, "burst 5 across three instances");
    assert_eq!(
        shop.stats.received.load(Ordering::Relaxed) - before,
        5,
        "the shop saw only the allowed requests"
    );

    // Concurrent, for about a second: at most burst + rate × t (+1 for the cell that
    // refills while the last request is in flight), and the rate is really granted.
    let start = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..6 {
        let addrs: Vec<SocketAddr> = gws.iter().map(|g| g.addr()).collect();
        tasks.push(tokio::spawn(async move {
            let (mut ok, mut i) = (0usize, w);
            let end = Instant::now() + Duration::from_millis(1000);
            while Instant::now() < end && i < 3000 {
                let a = get_from(
                    "127.0.0.3",
                    addrs[i % 3],
                    "/products/1",
                    &[("x-client", "c1")],
                )
                .await;
                match a.status {
                    StatusCode::OK => ok += 1,
                    StatusCode::TOO_MANY_REQUESTS => {}
                    s => panic!("failed with {s}"),
                }
                i += 6;
            }
            ok
        }));
    }
    let mut ok = 0;
    for t in tasks {
        ok += t.await.unwrap();
    }
    let t = start.elapsed().as_secs_f64();
    let bound = 10.0 + 20.0 * t + 1.0;
    assert!(
        ok as f64 <= bound,
        "{ok} passed in {t:.2}s, bound {bound:.1}"
    );
    assert!(ok >= 10, "at least the burst passed: {ok}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purge_on_one_instance_empties_the_entry_on_all_of_them_within_a_second() {
    let shop = fast_shop().await;
    let redis = RedisServer::start().await;
    let gws = three_gateways(
        shop.addr,
        &redis,
        "[[route]]\nname = \"shop\"\nupstream = \"shop\"\ncache = { enabled = true }\n",
    )
    .await;
    let status = |a: &Answer| a.header("cache-status").unwrap_or("").to_string();
    for gw in &gws {
        get_from("127.0.0.2", gw.addr(), "/products/1", &[]).await;
        let again = get_from("127.0.0.2", gw.addr(), "/products/1", &[]).await;
        assert!(status(&again).contains("hit"), "cached: {}", status(&again));
    }
    let purged = admin_post(
        &gws[0],
        "/admin/cache/purge",
        r#"{"url": "http://shop.test/products/1"}"#,
    )
    .await;
    assert_eq!(purged.status, StatusCode::OK, "{}", purged.text());
    let at = Instant::now();
    for gw in &gws[1..] {
        eventually(
            "the entry is gone on the other instance",
            Duration::from_secs(1),
            || async {
                let a = get_from("127.0.0.2", gw.addr(), "/products/1", &[]).await;
                status(&a).contains("uri-miss")
            },
        )
        .await;
    }
    assert!(
        at.elapsed() < Duration::from_secs(1),
        "took {:?}",
        at.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_that_missed_the_purge_message_catches_up_from_the_stored_generation() {
    let shop = fast_shop().await;
    let redis = RedisServer::start().await;
    let gws = three_gateways(
        shop.addr,
        &redis,
        "[[route]]\nname = \"shop\"\nupstream = \"shop\"\ncache = { enabled = true }\n",
    )
    .await;
    let status = |a: &Answer| a.header("cache-status").unwrap_or("").to_string();
    get_from("127.0.0.2", gws[1].addr(), "/products/2", &[]).await;
    let hit = get_from("127.0.0.2", gws[1].addr(), "/products/2", &[]).await;
    assert!(status(&hit).contains("hit"), "cached: {}", status(&hit));
    // Every subscriber loses its connection; the purge is published while nobody
    // listens (subscribers come back after half a second), so only the stored
    // generation and log can tell the other instances.
    redis
        .cmd(&["CLIENT", "KILL", "TYPE", "pubsub"])
        .await
        .unwrap();
    let purged = admin_post(
        &gws[0],
        "/admin/cache/purge",
        r#"{"url": "http://shop.test/products/2"}"#,
    )
    .await;
    assert_eq!(purged.status, StatusCode::OK, "{}", purged.text());
    eventually(
        "the missed purge is applied",
        Duration::from_secs(1),
        || async {
            let a = get_from("127.0.0.2", gws[1].addr(), "/products/2", &[]).await;
            status(&a).contains("uri-miss")
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pausing_a_room_on_one_instance_stops_admissions_on_all_of_them() {
    let shop = fast_shop().await;
    let redis = RedisServer::start().await;
    let key = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(key.path(), "a test signing key of enough bytes\n").unwrap();
    let gws = three_gateways(
        shop.addr,
        &redis,
        &format!(
            "[[route]]\nname = \"shop\"\nupstream = \"shop\"\nwaiting_room = \"sale\"\n\n\
             [[waiting_room]]\nname = \"sale\"\nkey_file = \"{}\"\nactive_users = 1000\n\
             new_users_per_minute = 60000\ntickets_per_minute_per_client = 0\n",
            key.path().display()
        ),
    )
    .await;
    // Open: a newcomer on the last instance reaches the shop.
    let before = shop.stats.received.load(Ordering::Relaxed);
    get_from("127.0.0.2", gws[2].addr(), "/", &[]).await;
    assert_eq!(shop.stats.received.load(Ordering::Relaxed) - before, 1);

    let paused = admin_post(&gws[0], "/admin/waiting-rooms/sale/pause", "").await;
    assert_eq!(paused.json()["paused"], true);
    for gw in &gws[1..] {
        eventually(
            "paused on the other instance",
            Duration::from_secs(1),
            || async { admin_get(gw, "/admin/waiting-rooms/sale").await.json()["paused"] == true },
        )
        .await;
    }
    // An instance that was not there for the message finds the pause in the store.
    let late = gateway(&config_text(
        shop.addr,
        &format!(
            "[[route]]\nname = \"shop\"\nupstream = \"shop\"\nwaiting_room = \"sale\"\n\n\
             [[waiting_room]]\nname = \"sale\"\nkey_file = \"{}\"\nactive_users = 1000\n\
             new_users_per_minute = 60000\ntickets_per_minute_per_client = 0\n\n{}",
            key.path().display(),
            state_toml(&redis)
        ),
    ))
    .await;
    eventually(
        "a late instance applies the stored pause",
        Duration::from_secs(3),
        || async { admin_get(&late, "/admin/waiting-rooms/sale").await.json()["paused"] == true },
    )
    .await;
    let before = shop.stats.received.load(Ordering::Relaxed);
    for gw in gws.iter().chain([&late]) {
        let a = get_from("127.0.0.3", gw.addr(), "/", &[]).await;
        assert_eq!(a.status, StatusCode::OK, "the waiting page, not an error");
    }
    assert_eq!(
        shop.stats.received.load(Ordering::Relaxed),
        before,
        "nobody admitted on any instance while paused"
    );

    // Settings and resume travel the same way.
    admin_post(
        &gws[1],
        "/admin/waiting-rooms/sale/settings",
        r#"{"active_users": 7}"#,
    )
    .await;
    admin_post(&gws[1], "/admin/waiting-rooms/sale/resume", "").await;
    for gw in [&gws[0], &gws[2]] {
        eventually(
            "resumed with the new capacity",
            Duration::from_secs(1),
            || async {
                let j = admin_get(gw, "/admin/waiting-rooms/sale").await.json();
                j["paused"] == false && j["active_users"] == 7
            },
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_redis_fails_no_request_and_its_return_shares_the_limits_again() {
    let shop = fast_shop().await;
    let mut redis = RedisServer::start().await;
    let gws = three_gateways(
        shop.addr,
        &redis,
        "[[route]]\nname = \"shop\"\nupstream = \"shop\"\n\
         rate_limits = [{ name = \"per-key\", key = \"header:x-client\", rate = \"1/m\", burst = 3 }]\n",
    )
    .await;
    assert_eq!(
        passed_round_robin(12, "127.0.0.2", &gws, &[("x-client", "before")]).await,
        3
    );

    // Traffic goes on while Redis dies: every request is answered by the shop.
    let before = shop.stats.received.load(Ordering::Relaxed);
    let traffic = {
        let addrs: Vec<SocketAddr> = gws.iter().map(|g| g.addr()).collect();
        tokio::spawn(async move {
            let end = Instant::now() + Duration::from_millis(1500);
            let mut n = 0usize;
            while Instant::now() < end && n < 5000 {
                let id = format!("visitor-{n}");
                let a = get_from("127.0.0.3", addrs[n % 3], "/", &[("x-client", &id)]).await;
                assert_eq!(a.status, StatusCode::OK, "request {n} during the outage");
                n += 1;
            }
            n
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    redis.kill();
    let sent = traffic.await.unwrap();
    assert_eq!(
        shop.stats.received.load(Ordering::Relaxed) - before,
        sent as u64,
        "the shop got every request"
    );
    for gw in &gws {
        wait_backend(gw, 0.0).await;
    }
    // Down: each instance holds its 1/3 share of the burst (1 cell), not a full one.
    assert_eq!(
        passed_round_robin(12, "127.0.0.2", &gws, &[("x-client", "down")]).await,
        3
    );
    for gw in &gws {
        let m = metrics_text(gw).await;
        assert_eq!(
            metric(&m, "floodgate_state_live_instances"),
            Some(3.0),
            "N as last seen"
        );
        assert!(metric(&m, "floodgate_state_local_decisions_total").unwrap_or(0.0) >= 4.0);
    }

    redis.restart().await;
    for gw in &gws {
        wait_backend(gw, 1.0).await;
    }
    assert_eq!(
        passed_round_robin(12, "127.0.0.2", &gws, &[("x-client", "after")]).await,
        3,
        "one shared bucket again"
    );
}

// === separate processes ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_floodgate_processes_share_one_per_client_limit() {
    let shop = fast_shop().await;
    let redis = RedisServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let text = config_text(
        shop.addr,
        &format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n\n[[route]]\nname = \"shop\"\nupstream = \"shop\"\n\
             rate_limits = [{{ name = \"per-ip\", key = \"client_ip\", rate = \"1/m\", burst = 4 }}]\n\n{}",
            state_toml(&redis)
        ),
    );
    let procs = three_processes(dir.path(), &text, &redis).await;
    let before = shop.stats.received.load(Ordering::Relaxed);
    let mut ok = 0;
    for i in 0..24 {
        let a = get_from("127.0.0.2", procs[i % 3].addr, "/", &[]).await;
        match a.status {
            StatusCode::OK => ok += 1,
            StatusCode::TOO_MANY_REQUESTS => {}
            s => panic!("request {i}: {s}"),
        }
    }
    assert_eq!(ok, 4, "one bucket of 4 across three processes");
    assert_eq!(shop.stats.received.load(Ordering::Relaxed) - before, 4);
}

// === config ===

#[test]
fn the_state_section_is_checked_key_by_key() {
    let origin: SocketAddr = "127.0.0.1:9".parse().unwrap();
    let with = |state: &str| floodgate::config::parse(&config_text(origin, state));
    let ok = with(
        "[state]\nbackend = \"redis\"\nurl = \"rediss://redis.internal:6380/2\"\ntimeout = \"20ms\"\n",
    );
    assert!(ok.is_ok(), "{ok:?}");
    let errs = with(
        "[state]\nbackend = \"redis\"\nurl = \"redis://:secret@127.0.0.1/0\"\nprefix = \"{x}\"\n\
         timeout = \"0s\"\nheartbeat_interval = \"5s\"\nmember_ttl = \"1s\"\n",
    )
    .unwrap_err();
    let keys: Vec<&str> = errs.iter().map(|e| e.key.as_str()).collect();
    for k in [
        "state.url",
        "state.prefix",
        "state.timeout",
        "state.member_ttl",
    ] {
        assert!(keys.contains(&k), "{k} missing in {errs:?}");
    }
    let errs = with("[state]\nbackend = \"etcd\"\n").unwrap_err();
    assert_eq!(errs[0].key, "state.backend");
    let errs = with("[state]\nurl = \"redis://127.0.0.1/0\"\n").unwrap_err();
    assert_eq!(
        errs[0].key, "state.url",
        "redis keys without the redis backend"
    );
    // Sentinel: both keys or neither, and not beside a url.
    let errs = with("[state]\nbackend = \"redis\"\nsentinels = [\"redis://127.0.0.1:26379\"]\n")
        .unwrap_err();
    assert_eq!(errs[0].key, "state.sentinel_master");
    let errs = with(
        "[state]\nbackend = \"redis\"\nurl = \"redis://127.0.0.1/0\"\n\
         sentinels = [\"redis://127.0.0.1:26379\"]\nsentinel_master = \"m\"\n",
    )
    .unwrap_err();
    assert_eq!(errs[0].key, "state.url");
    let errs =
        with("[state]\nbackend = \"redis\"\nsentinels = [\"http://x\"]\nsentinel_master = \"m\"\n")
            .unwrap_err();
    assert_eq!(errs[0].key, "state.sentinels[0]");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_sentinel_the_instances_follow_a_failover_to_the_new_primary() {
    let shop = fast_shop().await;
    let dir = tempfile::tempdir().unwrap();
    let mut primary = RedisServer::start().await;
    let replica = RedisServer::replica_of(&primary).await;
    let sentinel = RedisServer::sentinel_of(&primary, "shop", dir.path()).await;
    let primary_is = |port: u16| {
        let sentinel = &sentinel;
        async move {
            let addr = sentinel
                .cmd(&["SENTINEL", "get-master-addr-by-name", "shop"])
                .await;
            matches!(addr, Ok(redis::Value::Array(ref a)) if a.get(1) == Some(&redis::Value::BulkString(port.to_string().into_bytes())))
        }
    };
    assert!(
        primary_is(primary.port).await,
        "the sentinel watches the primary"
    );
    // The sentinel learns of the replica from the primary's INFO.
    eventually(
        "the sentinel knows the replica",
        Duration::from_secs(15),
        || async {
            matches!(
                sentinel.cmd(&["SENTINEL", "replicas", "shop"]).await,
                Ok(redis::Value::Array(ref r)) if !r.is_empty()
            )
        },
    )
    .await;
    let state = format!(
        "[state]\nbackend = \"redis\"\nsentinels = [\"redis://127.0.0.1:{}\"]\n\
         sentinel_master = \"shop\"\nprefix = \"test:\"\nheartbeat_interval = \"100ms\"\n\
         member_ttl = \"1s\"\nsync_interval = \"100ms\"\n",
        sentinel.port
    );
    let text = config_text(
        shop.addr,
        &format!(
            "[[route]]\nname = \"shop\"\nupstream = \"shop\"\n\
             rate_limits = [{{ name = \"per-ip\", key = \"client_ip\", rate = \"1/m\", burst = 4 }}]\n\n{state}"
        ),
    );
    let gws = vec![gateway(&text).await, gateway(&text).await];
    for gw in &gws {
        wait_backend(gw, 1.0).await;
    }
    assert_eq!(
        passed_round_robin(12, "127.0.0.2", &gws, &[]).await,
        4,
        "one bucket on the primary the sentinel named"
    );

    primary.kill();
    eventually(
        "the sentinel promotes the replica",
        Duration::from_secs(20),
        || primary_is(replica.port),
    )
    .await;
    for gw in &gws {
        wait_backend(gw, 1.0).await;
    }
    // A new client after the failover: one shared bucket again, on the new primary.
    assert_eq!(
        passed_round_robin(12, "127.0.0.3", &gws, &[]).await,
        4,
        "the instances share one bucket on the new primary"
    );
    let keys = replica.cmd(&["KEYS", "test:{rl:*"]).await.unwrap();
    assert!(
        matches!(keys, redis::Value::Array(ref k) if !k.is_empty()),
        "the buckets now live on the promoted replica: {keys:?}"
    );
}
