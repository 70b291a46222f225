//! Upstream health over loopback: retries, passive ejection, active checks, panic mode
//! and the circuit breaker, with simulated shops as origins.
//!
//! A shop started with `collapse = 0` answers every page with 503 (it is "collapsed"),
//! while its `/healthz` still says healthy: a server that fails real requests.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use floodgate::shop::{self, ShopHandle, ShopProfile};
use floodgate::Gateway;

// === helpers (tests/common is being written on main; these stay local) ===

fn profile(collapsed: bool) -> ShopProfile {
    ShopProfile {
        capacity: 50,
        latency: Duration::from_millis(1),
        collapse: if collapsed { 0 } else { 10_000 },
    }
}

async fn shop_at(addr: &str, collapsed: bool) -> ShopHandle {
    shop::start(addr.parse().unwrap(), profile(collapsed))
        .await
        .expect("shop starts")
}

/// A healthy shop on the address a stopped one used (the OS may take a moment).
async fn restart_at(addr: SocketAddr) -> ShopHandle {
    for _ in 0..200 {
        if let Ok(s) = shop::start(addr, profile(false)).await {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("cannot rebind {addr}");
}

/// A gateway with upstream "shop" on `servers` plus `upstream` settings, one route.
async fn gateway(servers: &[SocketAddr], upstream: &str) -> Gateway {
    let list: Vec<String> = servers.iter().map(|s| format!("\"{s}\"")).collect();
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n[log]\naccess_log = false\n\
         [[upstream]]\nname = \"shop\"\nservers = [{}]\n{upstream}\n\
         [[route]]\nname = \"shop\"\nupstream = \"shop\"\n",
        list.join(", ")
    );
    let config =
        floodgate::config::parse(&text).unwrap_or_else(|e| panic!("config: {e:?}\n{text}"));
    Gateway::start(config).await.expect("gateway starts")
}

async fn send(gw: &Gateway, method: Method, path: &str) -> (StatusCode, String) {
    let req = Request::builder()
        .method(method)
        .uri(format!("http://{}{path}", gw.addr()))
        .header("accept", "application/json")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let client = Client::builder(TokioExecutor::new()).build_http();
    let resp = tokio::time::timeout(Duration::from_secs(20), client.request(req))
        .await
        .expect("answered within 20 s")
        .expect("request ok");
    let status = resp.status();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

fn metric(gw: &Gateway, name: &str, labels: &[(&str, &str)]) -> f64 {
    let text = String::from_utf8(gw.metrics().render()).unwrap();
    text.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .next()
        .unwrap_or(0.0)
}

fn healthy(gw: &Gateway, server: SocketAddr) -> f64 {
    metric(
        gw,
        "floodgate_upstream_server_healthy",
        &[("upstream", "shop"), ("server", &server.to_string())],
    )
}

async fn until_async<F, Fut>(what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !cond().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn received(s: &ShopHandle) -> u64 {
    s.stats.received.load(Ordering::SeqCst)
}

// === scenarios ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_get_answered_503_is_retried_on_another_server_but_a_post_is_never_retried() {
    let broken = shop_at("127.0.0.1:0", true).await;
    let good = shop_at("127.0.0.1:0", false).await;
    // Ejection off: this test is about retries alone.
    let gw = gateway(
        &[broken.addr, good.addr],
        "outlier_detection = { enabled = false }",
    )
    .await;

    for _ in 0..4 {
        let (status, body) = send(&gw, Method::POST, "/checkout").await;
        if status == StatusCode::SERVICE_UNAVAILABLE {
            assert!(
                body.contains("overloaded"),
                "the origin's own 503 is passed through: {body}"
            );
        }
    }
    // Round robin sent two POSTs to each server; none was replayed on the good one.
    assert_eq!(received(&broken), 2);
    assert_eq!(received(&good), 2);
    assert_eq!(good.stats.checkouts.load(Ordering::SeqCst), 2);
    assert_eq!(
        metric(
            &gw,
            "floodgate_upstream_retries_total",
            &[("result", "sent")]
        ),
        0.0
    );

    // The same servers retry a GET: every one succeeds, each 503 was retried once.
    for i in 0..4 {
        let (status, _) = send(&gw, Method::GET, &format!("/products/{i}")).await;
        assert_eq!(status, StatusCode::OK);
    }
    let gets_to_broken = received(&broken) - 2;
    assert!(gets_to_broken > 0);
    assert_eq!(
        metric(
            &gw,
            "floodgate_upstream_retries_total",
            &[("result", "sent")]
        ),
        gets_to_broken as f64
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_get_to_a_server_that_refuses_connections_is_retried_on_another() {
    let gone = shop_at("127.0.0.1:0", false).await;
    let gone_addr = gone.addr;
    drop(gone);
    let good = shop_at("127.0.0.1:0", false).await;
    let gw = gateway(
        &[gone_addr, good.addr],
        "outlier_detection = { enabled = false }",
    )
    .await;
    for i in 0..6 {
        assert_eq!(
            send(&gw, Method::GET, &format!("/products/{i}")).await.0,
            StatusCode::OK
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ejected_server_gets_no_traffic_until_it_recovers() {
    let broken = shop_at("127.0.0.1:0", true).await;
    let broken_addr = broken.addr;
    let good = shop_at("127.0.0.1:0", false).await;
    let upstream = "retries = { attempts = 0 }\n\
        outlier_detection = { consecutive_failures = 2, base_ejection_time = \"1s\", max_ejection_time = \"1s\" }";
    let gw = gateway(&[broken_addr, good.addr], upstream).await;

    // Round robin: the broken server fails twice and is ejected.
    for i in 0..4 {
        send(&gw, Method::GET, &format!("/products/{i}")).await;
    }
    assert_eq!(received(&broken), 2);
    assert_eq!(healthy(&gw, broken_addr), 0.0);
    assert_eq!(
        metric(
            &gw,
            "floodgate_upstream_ejections_total",
            &[("upstream", "shop")]
        ),
        1.0
    );

    // While ejected it gets nothing; every request succeeds on the other server.
    for i in 0..10 {
        assert_eq!(
            send(&gw, Method::GET, &format!("/products/{i}")).await.0,
            StatusCode::OK
        );
    }
    assert_eq!(received(&broken), 2);

    // The server is fixed (restarted healthy on the same address); after its ejection
    // ends it gets traffic again.
    drop(broken);
    let fixed = restart_at(broken_addr).await;
    until_async("the fixed server gets traffic again", || async {
        send(&gw, Method::GET, "/products/1").await;
        received(&fixed) > 0
    })
    .await;
    assert_eq!(healthy(&gw, broken_addr), 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_failing_its_health_check_gets_no_traffic_until_it_passes_again() {
    let flaky = shop_at("127.0.0.1:0", false).await;
    let flaky_addr = flaky.addr;
    let good = shop_at("127.0.0.1:0", false).await;
    let upstream = "outlier_detection = { enabled = false }\nretries = { attempts = 0 }\n\
        health_check = { path = \"/healthz\", interval = \"50ms\", timeout = \"200ms\", healthy_threshold = 2, unhealthy_threshold = 2 }";
    let gw = gateway(&[flaky_addr, good.addr], upstream).await;

    drop(flaky);
    until_async("the stopped server is marked down", || async {
        healthy(&gw, flaky_addr) == 0.0
    })
    .await;
    // With the server out, round robin never picks it: no request fails to connect.
    for i in 0..10 {
        assert_eq!(
            send(&gw, Method::GET, &format!("/products/{i}")).await.0,
            StatusCode::OK
        );
    }

    let back = restart_at(flaky_addr).await;
    until_async("the restarted server passes its checks", || async {
        healthy(&gw, flaky_addr) == 1.0
    })
    .await;
    for i in 0..4 {
        send(&gw, Method::GET, &format!("/products/{i}")).await;
    }
    // Its checks arrive too; `served` counts only pages.
    assert!(back.stats.served.load(Ordering::SeqCst) > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_every_server_fails_its_health_check_traffic_still_goes_to_all_of_them() {
    let a = shop_at("127.0.0.1:0", false).await;
    let b = shop_at("127.0.0.1:0", false).await;
    // A health path the shop does not have: every check fails (404).
    let upstream = "health_check = { path = \"/no-such-health\", interval = \"50ms\", unhealthy_threshold = 1 }";
    let gw = gateway(&[a.addr, b.addr], upstream).await;
    until_async("both servers are marked down", || async {
        healthy(&gw, a.addr) == 0.0 && healthy(&gw, b.addr) == 0.0
    })
    .await;
    for i in 0..4 {
        assert_eq!(
            send(&gw, Method::GET, &format!("/products/{i}")).await.0,
            StatusCode::OK
        );
    }
    assert!(a.stats.served.load(Ordering::SeqCst) > 0 && b.stats.served.load(Ordering::SeqCst) > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_every_server_is_ejected_the_circuit_opens_and_answers_503_without_asking_the_origin()
{
    let broken = shop_at("127.0.0.1:0", true).await;
    let upstream = "retries = { attempts = 0 }\n\
        outlier_detection = { consecutive_failures = 2, base_ejection_time = \"30s\" }";
    let gw = gateway(&[broken.addr], upstream).await;
    send(&gw, Method::GET, "/products/1").await;
    send(&gw, Method::GET, "/products/1").await;
    assert_eq!(received(&broken), 2);

    let (status, body) = send(&gw, Method::GET, "/products/1").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(body.contains("\"circuit_open\""), "{body}");
    assert_eq!(received(&broken), 2, "the origin was not asked");
    assert_eq!(
        metric(
            &gw,
            "floodgate_shed_total",
            &[("upstream", "shop"), ("reason", "circuit_open")]
        ),
        1.0
    );
}
