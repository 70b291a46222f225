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
    gateway_route(servers, upstream, "").await
}

/// Like [`gateway`], with extra keys for the route.
async fn gateway_route(servers: &[SocketAddr], upstream: &str, route: &str) -> Gateway {
    let list: Vec<String> = servers.iter().map(|s| format!("\"{s}\"")).collect();
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n[log]\naccess_log = false\n\
         [[upstream]]\nname = \"shop\"\nservers = [{}]\n{upstream}\n\
         [[route]]\nname = \"shop\"\nupstream = \"shop\"\n{route}\n",
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
async fn the_breaker_opens_at_its_minimum_count_of_failing_requests_and_then_fails_fast() {
    let broken = shop_at("127.0.0.1:0", true).await;
    // Shipped breaker defaults: 50 % of at least 20 requests in 10 s.
    let gw = gateway(&[broken.addr], "retries = { attempts = 0 }").await;
    for _ in 0..19 {
        let (status, body) = send(&gw, Method::GET, "/products/1").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(
            !body.contains("circuit_open"),
            "below the minimum count: {body}"
        );
    }
    assert_eq!(
        received(&broken),
        19,
        "every one of them reached the origin"
    );
    assert_eq!(
        metric(
            &gw,
            "floodgate_upstream_circuit_open",
            &[("upstream", "shop")]
        ),
        0.0
    );

    // The 20th failure reaches the minimum count: the breaker opens.
    send(&gw, Method::GET, "/products/1").await;
    assert_eq!(received(&broken), 20);
    let (status, body) = send(&gw, Method::GET, "/products/1").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(body.contains("\"circuit_open\""), "{body}");
    assert_eq!(received(&broken), 20, "the origin was not asked");
    assert_eq!(
        metric(
            &gw,
            "floodgate_shed_total",
            &[("upstream", "shop"), ("reason", "circuit_open")]
        ),
        1.0
    );
    assert_eq!(
        metric(
            &gw,
            "floodgate_upstream_circuit_open",
            &[("upstream", "shop")]
        ),
        1.0
    );
    // The only server is open for business as far as ejection goes: the breaker, not
    // ejection, is what refuses.
    assert_eq!(healthy(&gw, broken.addr), 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_breaker_stays_closed_when_a_third_of_many_requests_fail() {
    let origin = Origin::start().await;
    let gw = gateway(&[origin.addr], "retries = { attempts = 0 }").await;
    for i in 0..60 {
        let path = if i % 3 == 0 { "/fail" } else { "/ok" };
        send(&gw, Method::GET, path).await;
    }
    assert_eq!(origin.count("/fail"), 20);
    assert_eq!(origin.count("/ok"), 40, "every request reached the origin");
    assert_eq!(
        metric(
            &gw,
            "floodgate_upstream_circuit_open",
            &[("upstream", "shop")]
        ),
        0.0
    );
    assert_eq!(
        metric(&gw, "floodgate_shed_total", &[("reason", "circuit_open")]),
        0.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_breaker_closes_again_when_a_probe_after_its_open_time_succeeds() {
    let broken = shop_at("127.0.0.1:0", true).await;
    let addr = broken.addr;
    let gw = gateway(
        &[addr],
        "retries = { attempts = 0 }\n\
         circuit_breaker = { min_requests = 4, open_time = \"300ms\" }",
    )
    .await;
    for _ in 0..4 {
        send(&gw, Method::GET, "/products/1").await;
    }
    assert!(send(&gw, Method::GET, "/").await.1.contains("circuit_open"));
    drop(broken);
    let fixed = restart_at(addr).await;
    until_async("the probe succeeds and the breaker closes", || async {
        send(&gw, Method::GET, "/products/2").await.0 == StatusCode::OK
    })
    .await;
    assert_eq!(
        metric(
            &gw,
            "floodgate_upstream_circuit_open",
            &[("upstream", "shop")]
        ),
        0.0
    );
    for _ in 0..5 {
        assert_eq!(send(&gw, Method::GET, "/").await.0, StatusCode::OK);
    }
    assert!(received(&fixed) >= 6);
}

// === one origin, a broken page: no outage ===

/// A loopback origin with pages that fail in chosen ways; counts what it received.
struct Origin {
    addr: SocketAddr,
    seen: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, u64>>>,
    _task: tokio::task::JoinHandle<()>,
}

impl Origin {
    /// `/broken` 500, `/unimplemented` 501, `/version` 505, `/fail` 503,
    /// `/slow` 200 after 1 s, `/upload` reads its body and says how long it was;
    /// anything else 200.
    async fn start() -> Origin {
        use hyper::service::service_fn;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = std::sync::Arc::new(std::sync::Mutex::new(std::collections::HashMap::new()));
        let counts = seen.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let counts = counts.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
                        let counts = counts.clone();
                        async move {
                            let path = req.uri().path().to_string();
                            let (status, body) = match path.as_str() {
                                "/broken" => (500, "broken page".to_string()),
                                "/unimplemented" => (501, "no such method".to_string()),
                                "/version" => (505, "no such version".to_string()),
                                "/fail" => (503, "overloaded".to_string()),
                                "/slow" => {
                                    tokio::time::sleep(Duration::from_secs(1)).await;
                                    (200, "slow".to_string())
                                }
                                "/upload" => match req.into_body().collect().await {
                                    Ok(b) => (200, format!("got {} bytes", b.to_bytes().len())),
                                    // An incomplete body is not counted as received.
                                    Err(_) => (400, "incomplete".to_string()),
                                },
                                _ => (200, format!("page {path}")),
                            };
                            if status != 400 {
                                *counts.lock().unwrap().entry(path).or_insert(0) += 1;
                            }
                            Ok::<_, hyper::Error>(
                                hyper::Response::builder()
                                    .status(status)
                                    .body(Full::new(Bytes::from(body)))
                                    .unwrap(),
                            )
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Origin {
            addr,
            seen,
            _task: task,
        }
    }

    /// Complete requests received for `path`.
    fn count(&self, path: &str) -> u64 {
        self.seen.lock().unwrap().get(path).copied().unwrap_or(0)
    }
}

impl Drop for Origin {
    fn drop(&mut self) {
        self._task.abort();
    }
}

async fn admin_upstream(gw: &Gateway) -> serde_json::Value {
    let req = Request::get(format!("http://{}/admin/upstreams", gw.admin_addr.unwrap()))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = Client::builder(TokioExecutor::new())
        .build_http()
        .request(req)
        .await
        .unwrap();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    v["upstreams"][0].clone()
}

/// The gateway with shipped defaults in front of `origin`, with an admin listener.
async fn default_gateway(servers: &[SocketAddr]) -> Gateway {
    let list: Vec<String> = servers.iter().map(|s| format!("\"{s}\"")).collect();
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n\
         [log]\naccess_log = false\n\
         [[upstream]]\nname = \"shop\"\nservers = [{}]\n\
         [[route]]\nname = \"shop\"\nupstream = \"shop\"\n",
        list.join(", ")
    );
    let config = floodgate::config::parse(&text).unwrap();
    Gateway::start(config).await.expect("gateway starts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_answering_500_twenty_times_in_a_row_does_not_take_the_only_origin_out() {
    let origin = Origin::start().await;
    let gw = default_gateway(&[origin.addr]).await;

    for _ in 0..20 {
        let (status, body) = send(&gw, Method::GET, "/broken").await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(body, "broken page", "the origin's own answer");
    }
    assert_eq!(
        origin.count("/broken"),
        20,
        "each one reached the origin once"
    );

    // Every other page is still served, by the origin.
    for i in 0..10 {
        let (status, body) = send(&gw, Method::GET, &format!("/products/{i}")).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, format!("page /products/{i}"));
    }
    assert_eq!(origin.count("/products/9"), 1);

    assert_eq!(healthy(&gw, origin.addr), 1.0);
    assert_eq!(
        metric(
            &gw,
            "floodgate_upstream_ejections_total",
            &[("upstream", "shop")]
        ),
        0.0
    );
    assert_eq!(
        metric(
            &gw,
            "floodgate_upstream_circuit_open",
            &[("upstream", "shop")]
        ),
        0.0
    );
    let view = admin_upstream(&gw).await;
    assert_eq!(view["servers"][0]["ejected"], false, "{view}");
    assert_eq!(view["circuit_breaker"]["state"], "closed", "{view}");
    assert_eq!(
        view["circuit_breaker"]["failures"], 0,
        "a 500 is the page's, not the origin's: {view}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_501_and_505_that_clients_provoke_never_count_against_the_origin() {
    let origin = Origin::start().await;
    let gw = default_gateway(&[origin.addr]).await;
    for _ in 0..15 {
        assert_eq!(
            send(&gw, Method::GET, "/unimplemented").await.0,
            StatusCode::NOT_IMPLEMENTED
        );
        assert_eq!(
            send(&gw, Method::GET, "/version").await.0,
            StatusCode::HTTP_VERSION_NOT_SUPPORTED
        );
    }
    assert_eq!(origin.count("/unimplemented"), 15);
    assert_eq!(origin.count("/version"), 15);
    let (status, body) = send(&gw, Method::GET, "/").await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "page /"));
    let view = admin_upstream(&gw).await;
    assert_eq!(view["servers"][0]["failures_in_a_row"], 0, "{view}");
    assert_eq!(view["circuit_breaker"]["failures"], 0, "{view}");
    assert_eq!(view["circuit_breaker"]["requests"], 31, "{view}");
    assert_eq!(
        metric(
            &gw,
            "floodgate_upstream_ejections_total",
            &[("upstream", "shop")]
        ),
        0.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_server_answering_503_in_a_row_is_never_ejected() {
    let origin = Origin::start().await;
    let gw = default_gateway(&[origin.addr]).await;
    // 8 requests, retried once each at most: below the breaker's minimum count, above
    // the 5 consecutive failures that would eject a server of a larger group.
    for _ in 0..8 {
        assert_eq!(
            send(&gw, Method::GET, "/fail").await.0,
            StatusCode::SERVICE_UNAVAILABLE
        );
    }
    assert!(origin.count("/fail") >= 8);
    let (status, body) = send(&gw, Method::GET, "/cart").await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "page /cart"));
    assert_eq!(origin.count("/cart"), 1);
    assert_eq!(healthy(&gw, origin.addr), 1.0);
    assert_eq!(
        metric(
            &gw,
            "floodgate_upstream_ejections_total",
            &[("upstream", "shop")]
        ),
        0.0
    );
    assert_eq!(
        metric(
            &gw,
            "floodgate_upstream_ejections_refused_total",
            &[("upstream", "shop")]
        ),
        1.0,
        "the refused ejection is visible"
    );
    let view = admin_upstream(&gw).await;
    assert_eq!(view["max_ejections"], 0, "{view}");
}

// === ejection in a group still works ===

/// An address on loopback where nothing listens.
fn dead_address() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_shipped_defaults_a_dead_server_of_three_is_ejected_and_gets_no_more_traffic() {
    let dead = dead_address();
    let a = Origin::start().await;
    let b = Origin::start().await;
    let gw = default_gateway(&[dead, a.addr, b.addr]).await;

    // Connect errors are retried on another server: shoppers see no failure.
    for i in 0..30 {
        assert_eq!(
            send(&gw, Method::GET, &format!("/p/{i}")).await.0,
            StatusCode::OK
        );
    }
    assert_eq!(healthy(&gw, dead), 0.0);
    assert_eq!(
        metric(
            &gw,
            "floodgate_upstream_ejections_total",
            &[("upstream", "shop")]
        ),
        1.0
    );
    let retries_before = metric(
        &gw,
        "floodgate_upstream_retries_total",
        &[("result", "sent")],
    );
    for i in 0..10 {
        assert_eq!(
            send(&gw, Method::GET, &format!("/q/{i}")).await.0,
            StatusCode::OK
        );
        assert_eq!(a.count(&format!("/q/{i}")) + b.count(&format!("/q/{i}")), 1);
    }
    assert_eq!(
        metric(
            &gw,
            "floodgate_upstream_retries_total",
            &[("result", "sent")]
        ),
        retries_before,
        "the ejected server is not tried at all"
    );
    let view = admin_upstream(&gw).await;
    assert_eq!(view["servers"][0]["ejected"], true, "{view}");
    assert_eq!(view["servers"][1]["ejected"], false, "{view}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_dead_server_of_three_is_not_ejected_beyond_max_ejection_percent() {
    let dead1 = dead_address();
    let dead2 = dead_address();
    let live = Origin::start().await;
    let gw = default_gateway(&[dead1, dead2, live.addr]).await;
    for i in 0..40 {
        send(&gw, Method::GET, &format!("/p/{i}")).await;
    }
    assert_eq!(
        metric(
            &gw,
            "floodgate_upstream_ejections_total",
            &[("upstream", "shop")]
        ),
        1.0,
        "10 % of three servers rounds to one, and one at least may go"
    );
    assert!(
        metric(
            &gw,
            "floodgate_upstream_ejections_refused_total",
            &[("upstream", "shop")]
        ) >= 1.0
    );
    assert_eq!(healthy(&gw, dead1) + healthy(&gw, dead2), 1.0);
    assert!(
        live.count("/p/39") <= 1,
        "no request was sent twice to the live server"
    );
    let view = admin_upstream(&gw).await;
    assert_eq!(view["max_ejections"], 1, "{view}");
}

// === only the origin's slowness counts ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_dripping_its_body_past_the_timeout_does_not_count_against_the_origin() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let a = Origin::start().await;
    let b = Origin::start().await;
    let upstream = "response_timeout = \"300ms\"\nretries = { attempts = 0 }\n\
        outlier_detection = { consecutive_failures = 1 }\n\
        circuit_breaker = { min_requests = 1 }";
    // Streamed bodies (buffered ones never reach the origin until complete; see
    // tests/slow_clients.rs), so the response timeout runs while the client drips.
    let gw = gateway_route(&[a.addr, b.addr], upstream, "request_buffering = false").await;
    for _ in 0..2 {
        let mut s = tokio::net::TcpStream::connect(gw.addr()).await.unwrap();
        s.write_all(
            b"POST /upload HTTP/1.1\r\nhost: shop\r\ncontent-length: 10\r\ncontent-type: text/plain\r\n\r\nx",
        )
        .await
        .unwrap();
        // The other nine bytes never come in time.
        let mut answer = vec![0u8; 1024];
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut answer))
            .await
            .expect("the gateway answers")
            .unwrap();
        let head = String::from_utf8_lossy(&answer[..n]);
        assert!(!head.starts_with("HTTP/1.1 200"), "{head}");
    }
    assert_eq!(
        a.count("/upload") + b.count("/upload"),
        0,
        "no complete upload reached an origin"
    );
    assert_eq!(
        metric(
            &gw,
            "floodgate_upstream_ejections_total",
            &[("upstream", "shop")]
        ),
        0.0
    );
    assert_eq!(
        metric(
            &gw,
            "floodgate_upstream_circuit_open",
            &[("upstream", "shop")]
        ),
        0.0
    );
    assert_eq!(send(&gw, Method::GET, "/").await.0, StatusCode::OK);

    // An origin that is slow itself, with the request complete, does count.
    let (status, _) = send(&gw, Method::GET, "/slow").await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(
        metric(
            &gw,
            "floodgate_upstream_ejections_total",
            &[("upstream", "shop")]
        ),
        1.0
    );
}
