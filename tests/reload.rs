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
