//! Reloads in the middle of a sale: twenty of them under a steady load, each changing
//! routes, limits, timers and the certificate. No request fails, and the origin sees
//! no new connections (the pools survive every reload).

mod common;

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::Request;

use common::*;

/// Generation `i` of the config: every one differs from the last in a route, a limit,
/// a timer and the certificate, and keeps the upstream's pool settings.
fn generation(dir: &Path, shop: std::net::SocketAddr, i: u32) -> String {
    let cert = rcgen::generate_simple_self_signed(vec!["shop.test".to_string()]).unwrap();
    let (c, k) = (dir.join(format!("c{i}.pem")), dir.join(format!("c{i}.key")));
    std::fs::write(&c, cert.cert.pem()).unwrap();
    std::fs::write(&k, cert.signing_key.serialize_pem()).unwrap();
    let extra_route = if i % 2 == 1 {
        "[[route]]\nname = \"extra\"\npath_prefix = \"/products\"\nupstream = \"shop\"\n"
    } else {
        ""
    };
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\ntls_listen = \"127.0.0.1:0\"\n\
         admin_listen = \"127.0.0.1:0\"\nidle_timeout = \"{idle}s\"\n\n\
         [[certificate]]\ncert = \"{c}\"\nkey = \"{k}\"\n\n\
         [log]\naccess_log = false\n\n\
         [[upstream]]\nname = \"shop\"\nservers = [\"{shop}\"]\nresponse_timeout = \"{resp}s\"\n\n\
         [[route]]\nname = \"shop\"\npath_prefix = \"/\"\nupstream = \"shop\"\n\
         rate_limits = [{{ name = \"per-ip\", key = \"client_ip\", rate = \"100000/s\", burst = {burst} }}]\n\n\
         {extra_route}",
        idle = 30 + i,
        resp = 10 + i,
        burst = 10_000 + i,
        c = c.display(),
        k = k.display(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_reloads_under_load_fail_no_request_and_keep_the_origin_pools() {
    let shop = fast_shop().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("floodgate.toml");
    std::fs::write(&file, generation(dir.path(), shop.addr, 0)).unwrap();
    let gw = floodgate::Gateway::start(floodgate::config::load(&file).unwrap())
        .await
        .unwrap();
    let (addr, admin) = (gw.addr(), gw.admin_addr.unwrap());

    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut load = Vec::new();
    for w in 0..4 {
        let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
        load.push(tokio::spawn(async move {
            // One keep-alive connection per worker, as a browser holds one.
            let c = client();
            let end = Instant::now() + Duration::from_secs(30);
            let mut n = 0u32;
            while !stop.load(Ordering::Relaxed) && Instant::now() < end && n < 50_000 {
                n += 1;
                let path = if (n + w) % 3 == 0 { "/products/7" } else { "/" };
                let req = Request::get(format!("http://{addr}{path}"))
                    .header("host", "shop.test")
                    .body(Default::default())
                    .unwrap();
                match c.request(req).await {
                    Ok(r) if r.status() == 200 => ok.fetch_add(1, Ordering::Relaxed),
                    _ => failed.fetch_add(1, Ordering::Relaxed),
                };
            }
        }));
    }
    // Warm: every worker's connection and the pool behind it are open.
    eventually("the load is flowing", Duration::from_secs(5), || async {
        ok.load(Ordering::Relaxed) > 200
    })
    .await;
    let origin_connections = shop.stats.connections.load(Ordering::Relaxed);

    for i in 1..=20 {
        std::fs::write(&file, generation(dir.path(), shop.addr, i)).unwrap();
        let r = send(
            Request::post(format!("http://{admin}/admin/reload"))
                .header("content-type", "application/json")
                .body(Default::default())
                .unwrap(),
        )
        .await;
        assert_eq!(r.status, 200, "reload {i}: {}", r.text());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let during = ok.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    for l in load {
        l.await.unwrap();
    }
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    assert_eq!(
        failed, 0,
        "no request failed across 20 reloads ({ok} served)"
    );
    assert!(during > 1000, "the load ran through the reloads: {during}");
    let new = shop.stats.connections.load(Ordering::Relaxed) - origin_connections;
    assert!(
        new <= 4,
        "the origin saw {new} new connections over 20 reloads: the pools were kept"
    );
    let metrics = metrics_text(&gw).await;
    assert_eq!(
        metric(&metrics, "floodgate_config_reloads_total{result=\"ok\"}"),
        Some(20.0)
    );
}

/// `POST /admin/reload` with an optional bearer token.
async fn reload_with(admin: std::net::SocketAddr, token: Option<&str>) -> Answer {
    let mut req = Request::post(format!("http://{admin}/admin/reload"))
        .header("content-type", "application/json");
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    send(req.body(Default::default()).unwrap()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_says_what_it_did_with_each_changed_server_key_and_applies_timers_to_new_connections(
) {
    let shop = fast_shop().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("floodgate.toml");
    let with = |server: &str| {
        config_text(
            shop.addr,
            &format!(
                "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n{server}"
            ),
        )
    };
    std::fs::write(&file, with("header_read_timeout = \"10s\"\n")).unwrap();
    let gw = floodgate::Gateway::start(floodgate::config::load(&file).unwrap())
        .await
        .unwrap();
    let admin = gw.admin_addr.unwrap();
    // Opened before the reload: keeps its 10 s.
    let mut before = tokio::net::TcpStream::connect(gw.addr()).await.unwrap();

    std::fs::write(
        &file,
        with("header_read_timeout = \"1s\"\nmax_connections = 500\n"),
    )
    .unwrap();
    let r = reload_with(admin, None).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let said = r.text();
    assert!(
        said.contains("server.header_read_timeout: applied to new connections"),
        "{said}"
    );
    assert!(said.contains("server.max_connections: applied"), "{said}");
    // A listener change cannot be applied by a reload, and says so.
    std::fs::write(
        &file,
        with("header_read_timeout = \"1s\"\nmax_connections = 500\n").replace(
            "listen = \"127.0.0.1:0\"\nadmin",
            "listen = [\"127.0.0.1:0\", \"127.0.0.1:0\"]\nadmin",
        ),
    )
    .unwrap();
    let said = reload_with(admin, None).await.text();
    assert!(said.contains("server.listen: restart to apply"), "{said}");

    // A connection opened after the reload that sends nothing is closed after 1 s.
    use tokio::io::AsyncReadExt;
    let mut after = tokio::net::TcpStream::connect(gw.addr()).await.unwrap();
    let mut buf = [0u8; 1];
    let closed = tokio::time::timeout(Duration::from_secs(4), after.read(&mut buf)).await;
    assert!(
        matches!(closed, Ok(Ok(0)) | Ok(Err(_))),
        "the new header timeout closed the silent connection: {closed:?}"
    );
    // The one from before still has its 10 s.
    let open = tokio::time::timeout(Duration::from_millis(200), before.read(&mut buf)).await;
    assert!(
        open.is_err(),
        "the older connection keeps its own timeout: {open:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_rotates_the_admin_token() {
    let shop = fast_shop().await;
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "first-token\n").unwrap();
    let file = dir.path().join("floodgate.toml");
    std::fs::write(
        &file,
        config_text(
            shop.addr,
            &format!(
                "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\nadmin_token_file = \"{}\"\n",
                token.display()
            ),
        ),
    )
    .unwrap();
    let gw = floodgate::Gateway::start(floodgate::config::load(&file).unwrap())
        .await
        .unwrap();
    let admin = gw.admin_addr.unwrap();
    assert_eq!(reload_with(admin, None).await.status, 401);
    std::fs::write(&token, "second-token\n").unwrap();
    assert_eq!(reload_with(admin, Some("first-token")).await.status, 200);
    assert_eq!(
        reload_with(admin, Some("first-token")).await.status,
        401,
        "the old token is refused after the reload"
    );
    assert_eq!(reload_with(admin, Some("second-token")).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_changes_the_log_level() {
    let shop = fast_shop().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("floodgate.toml");
    let with = |level: &str, max: u32| {
        config_text(
            shop.addr,
            &format!(
                "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\nmax_connections = {max}\n"
            ),
        )
        .replace("[log]\n", &format!("[log]\nlevel = \"{level}\"\n"))
    };
    std::fs::write(&file, with("info", 100)).unwrap();
    let mut gw = common::process::Process::spawn_logging(&file, true, None);
    let admin = gw.admin.unwrap();
    // To warn: this reload's own "config reloaded" (info) is no longer printed.
    std::fs::write(&file, with("warn", 100)).unwrap();
    let r = reload_with(admin, None).await;
    assert!(r.text().contains("log.level: applied"), "{}", r.text());
    // Back to info, with a change that tells the two reloads apart.
    std::fs::write(&file, with("info", 77)).unwrap();
    assert_eq!(reload_with(admin, None).await.status, 200);
    let line = gw.wait_for_line("config reloaded");
    assert!(
        line.contains("server.max_connections"),
        "the first reload's info line was held back at warn; the second's is printed: {line}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reloaded_shutdown_grace_bounds_the_next_shutdown() {
    // Every answer takes 10 s: a shutdown waits for one in flight up to the grace.
    let shop = shop(floodgate::shop::ShopProfile {
        latency: Duration::from_secs(10),
        ..Default::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("floodgate.toml");
    let with = |grace: &str| {
        config_text(
            shop.addr,
            &format!(
                "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\nshutdown_grace = \"{grace}\"\n"
            ),
        )
    };
    std::fs::write(&file, with("30s")).unwrap();
    let gw = floodgate::Gateway::start(floodgate::config::load(&file).unwrap())
        .await
        .unwrap();
    std::fs::write(&file, with("300ms")).unwrap();
    let said = reload_with(gw.admin_addr.unwrap(), None).await.text();
    assert!(said.contains("server.shutdown_grace: applied"), "{said}");
    let addr = gw.addr();
    tokio::spawn(async move { get(addr, "/").await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    let clean = gw.shutdown().await;
    assert!(!clean, "the slow answer was still in flight");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the reloaded 300 ms grace, not the 30 s one: {:?}",
        started.elapsed()
    );
}

/// A gateway running from a config file in a temporary directory, reloaded by
/// rewriting the file: what an operator does.
struct FromFile {
    gw: floodgate::Gateway,
    file: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl FromFile {
    async fn start(text: &str) -> FromFile {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("floodgate.toml");
        std::fs::write(&file, text).unwrap();
        let gw = floodgate::Gateway::start(floodgate::config::load(&file).unwrap())
            .await
            .unwrap();
        FromFile {
            gw,
            file,
            _dir: dir,
        }
    }

    /// Writes `text` to the file, reloads, and returns the answer's `changes`.
    async fn reload_to(&self, text: &str) -> String {
        std::fs::write(&self.file, text).unwrap();
        let r = reload_with(self.gw.admin_addr.unwrap(), None).await;
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()["changes"].as_str().unwrap().to_string()
    }
}

/// The minimal config with `keys` added to the "shop" upstream.
fn with_upstream_keys(shop: std::net::SocketAddr, keys: &str, extra: &str) -> String {
    let servers = format!("servers = [\"{shop}\"]\n");
    config_text(shop, extra).replace(&servers, &format!("{servers}{keys}\n"))
}

/// Three requests one after the other: the gateway's pool holds one origin connection.
async fn three_requests(addr: std::net::SocketAddr) {
    for _ in 0..3 {
        assert_eq!(get(addr, "/").await.status, 200);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_that_changes_response_timeout_says_it_applied_and_keeps_the_pool() {
    let shop = fast_shop().await;
    let t = FromFile::start(&with_upstream_keys(
        shop.addr,
        "response_timeout = \"10s\"",
        "",
    ))
    .await;
    three_requests(t.gw.addr()).await;
    let connections = shop.stats.connections.load(Ordering::Relaxed);

    let said = t
        .reload_to(&with_upstream_keys(
            shop.addr,
            "response_timeout = \"5s\"",
            "",
        ))
        .await;
    for expected in [
        "upstream.shop.response_timeout: applied",
        "upstream.shop: connection pool kept",
        "upstream.shop: health state kept",
        "upstream.shop: retry budget kept",
    ] {
        assert!(said.contains(expected), "{expected:?} in {said}");
    }
    three_requests(t.gw.addr()).await;
    assert_eq!(
        shop.stats.connections.load(Ordering::Relaxed),
        connections,
        "the kept pool's connection served the requests after the reload"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_that_changes_connect_timeout_says_the_pool_was_rebuilt() {
    let shop = fast_shop().await;
    let t = FromFile::start(&with_upstream_keys(
        shop.addr,
        "connect_timeout = \"2s\"",
        "",
    ))
    .await;
    three_requests(t.gw.addr()).await;
    let connections = shop.stats.connections.load(Ordering::Relaxed);

    let said = t
        .reload_to(&with_upstream_keys(
            shop.addr,
            "connect_timeout = \"1500ms\"",
            "",
        ))
        .await;
    assert!(
        said.contains("upstream.shop.connect_timeout: applied"),
        "{said}"
    );
    assert!(
        said.contains("upstream.shop: connection pool rebuilt"),
        "{said}"
    );
    assert!(said.contains("upstream.shop: health state kept"), "{said}");
    three_requests(t.gw.addr()).await;
    assert_eq!(
        shop.stats.connections.load(Ordering::Relaxed),
        connections + 1,
        "the rebuilt pool opened one new origin connection"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_that_changes_a_rate_resets_that_limit_and_says_the_untouched_one_kept_its_buckets(
) {
    let shop = fast_shop().await;
    let with = |per_ip: &str| {
        config_text(
            shop.addr,
            &format!(
                "[[route]]\nname = \"shop\"\nupstream = \"shop\"\nrate_limits = [\n\
                 {{ name = \"per-ip\", key = \"client_ip\", rate = \"{per_ip}\", burst = 2 }},\n\
                 {{ name = \"site\", key = \"global\", rate = \"1/m\", burst = 3 }},\n]\n"
            ),
        )
    };
    let t = FromFile::start(&with("1/m")).await;
    let addr = t.gw.addr();
    let status = || async move { get_from("127.0.0.2", addr, "/", &[]).await };
    // Two of the site's three spent; the third request is the client's own limit's.
    for expected in [200, 200, 429] {
        assert_eq!(status().await.status, expected);
    }

    let said = t.reload_to(&with("2/m")).await;
    for expected in [
        "route.shop.rate_limits.per-ip.rate: applied",
        "route.shop.rate_limits.per-ip: buckets reset",
        "route.shop.rate_limits.site: buckets kept",
    ] {
        assert!(said.contains(expected), "{expected:?} in {said}");
    }
    // The client's limit starts afresh; the site's last cell goes, and then none is left.
    assert_eq!(status().await.status, 200);
    let refused = status().await;
    assert_eq!(refused.status, 429);
    assert!(
        refused
            .header("ratelimit-policy")
            .is_some_and(|p| p.contains("\"site\"")),
        "refused by the kept site limit: {:?}",
        refused.headers
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_that_changes_a_rooms_active_users_says_it_applied_and_keeps_the_line() {
    let shop = fast_shop().await;
    let with = |active: u32| {
        config_text(
            shop.addr,
            &format!(
                "[[route]]\nname = \"shop\"\nupstream = \"shop\"\nwaiting_room = \"sale\"\n\n\
                 [[waiting_room]]\nname = \"sale\"\nactive_users = {active}\nnew_users_per_minute = 60\n"
            ),
        )
    };
    let t = FromFile::start(&with(5)).await;
    let admin = t.gw.admin_addr.unwrap();
    let pause = send(
        Request::post(format!("http://{admin}/admin/waiting-rooms/sale/pause"))
            .header("content-type", "application/json")
            .body(Default::default())
            .unwrap(),
    )
    .await;
    assert_eq!(pause.status, 200, "{}", pause.text());
    // Paused: two visitors take a place in line and stay there.
    for _ in 0..2 {
        get(t.gw.addr(), "/").await;
    }
    let room = || async move { get(admin, "/admin/waiting-rooms/sale").await.json() };
    assert_eq!(room().await["waiting"], 2);

    let said = t.reload_to(&with(10)).await;
    assert!(
        said.contains("waiting_room.sale.active_users: applied"),
        "{said}"
    );
    assert!(said.contains("waiting_room.sale: line kept"), "{said}");
    let view = room().await;
    assert_eq!(view["active_users"], 10);
    assert_eq!(view["waiting"], 2, "the two visitors kept their places");
    assert_eq!(view["paused"], true, "a pause survives a reload");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_of_an_unchanged_file_says_no_key_changed() {
    let shop = fast_shop().await;
    let text = config_text(shop.addr, "");
    let t = FromFile::start(&text).await;
    let said = t.reload_to(&text).await;
    assert_eq!(said, "no config key changed; 1 routes, 1 upstreams");
}
