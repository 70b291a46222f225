//! Admission over loopback: the simulated shop as origin, a real gateway, real clients.
//!
//! Concurrency at the origin is measured by the shop itself (`peak_in_flight`).

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use floodgate::shop::{self, ShopHandle, ShopProfile};
use floodgate::Gateway;

// === helpers (tests/common is being written on main; these stay local) ===

async fn shop_with(capacity: usize, latency_ms: u64) -> ShopHandle {
    let profile = ShopProfile {
        capacity,
        latency: Duration::from_millis(latency_ms),
        collapse: 10_000,
    };
    shop::start("127.0.0.1:0".parse().unwrap(), profile)
        .await
        .expect("shop starts")
}

/// A gateway with one upstream "shop" (settings `upstream`) and one route (settings `route`).
async fn gateway(shop: &ShopHandle, upstream: &str, route: &str) -> Gateway {
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n[log]\naccess_log = false\n\
         [[upstream]]\nname = \"shop\"\nservers = [\"{}\"]\n{upstream}\n\
         [[route]]\nname = \"shop\"\nupstream = \"shop\"\n{route}\n",
        shop.addr
    );
    let config =
        floodgate::config::parse(&text).unwrap_or_else(|e| panic!("config: {e:?}\n{text}"));
    Gateway::start(config).await.expect("gateway starts")
}

fn client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

struct Answer {
    status: StatusCode,
    headers: http::HeaderMap,
    body: String,
}

async fn send(
    gw_addr: std::net::SocketAddr,
    method: Method,
    path: &str,
    accept_json: bool,
) -> Answer {
    let mut b = Request::builder()
        .method(method)
        .uri(format!("http://{gw_addr}{path}"));
    if accept_json {
        b = b.header("accept", "application/json");
    }
    let req = b.body(Full::new(Bytes::new())).unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(20), client().request(req))
        .await
        .expect("answered within 20 s")
        .expect("request ok");
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.expect("body").to_bytes();
    Answer {
        status: parts.status,
        headers: parts.headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

async fn get(gw: &Gateway, path: &str) -> Answer {
    send(gw.addr(), Method::GET, path, true).await
}

/// The value of the sample of `name` whose labels include every `labels` pair.
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

fn depth(gw: &Gateway) -> f64 {
    metric(gw, "floodgate_queue_depth", &[("upstream", "shop")])
}

fn in_flight(gw: &Gateway) -> f64 {
    metric(gw, "floodgate_upstream_in_flight", &[("upstream", "shop")])
}

fn shed(gw: &Gateway, reason: &str) -> f64 {
    metric(
        gw,
        "floodgate_shed_total",
        &[("upstream", "shop"), ("reason", reason)],
    )
}

/// Polls `cond` every 5 ms for up to 10 s.
async fn until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Occupies the only slot with a slow request; returns its task.
async fn block_the_slot(gw: &Gateway, ms: u64) -> tokio::task::JoinHandle<Answer> {
    let addr = gw.addr();
    let path = format!("/__shop/slow?ms={ms}");
    let h = tokio::spawn(async move { send(addr, Method::GET, &path, true).await });
    until("the blocker holds the slot", || in_flight(gw) == 1.0).await;
    h
}

// === scenarios ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_flight_at_the_origin_never_exceeds_max_concurrency_under_a_burst_of_twenty_times_as_many_clients(
) {
    let shop = shop_with(50, 20).await;
    let gw = gateway(
        &shop,
        "max_concurrency = 5\nqueue_size = 1000\nqueue_timeout = \"30s\"",
        "",
    )
    .await;
    let addr = gw.addr();
    let clients: Vec<_> = (0..100)
        .map(|i| {
            tokio::spawn(async move {
                send(addr, Method::GET, &format!("/products/{i}"), true)
                    .await
                    .status
            })
        })
        .collect();
    for c in clients {
        assert_eq!(c.await.unwrap(), StatusCode::OK);
    }
    let peak = shop.stats.peak_in_flight.load(Ordering::SeqCst);
    assert!(
        peak <= 5,
        "the origin saw {peak} requests at once, limit is 5"
    );
    assert!(
        peak >= 2,
        "the burst never overlapped ({peak}): the test proves nothing"
    );
    assert!(
        metric(
            &gw,
            "floodgate_queue_wait_seconds_count",
            &[("upstream", "shop")]
        ) > 0.0
    );
    assert_eq!(depth(&gw), 0.0);
    assert_eq!(
        metric(&gw, "floodgate_concurrency_limit", &[("upstream", "shop")]),
        5.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_requests_are_served_in_priority_order() {
    let shop = shop_with(50, 20).await;
    let route = r#"priority = [{ path_prefix = "/checkout", class = "high" }, { path_prefix = "/search", class = "low" }]"#;
    let gw = gateway(
        &shop,
        "max_concurrency = 1\nqueue_size = 10\nqueue_timeout = \"30s\"",
        route,
    )
    .await;
    let blocker = block_the_slot(&gw, 400).await;
    let order = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    // Queued lowest class first, so FIFO would serve them in exactly the wrong order.
    for (n, (method, path, name)) in [
        (Method::GET, "/search?q=tv", "low"),
        (Method::GET, "/products/1", "normal"),
        (Method::POST, "/checkout", "high"),
    ]
    .into_iter()
    .enumerate()
    {
        let (addr, order) = (gw.addr(), order.clone());
        tasks.push(tokio::spawn(async move {
            let a = send(addr, method, path, true).await;
            order.lock().unwrap().push(name);
            a.status
        }));
        until("the request is queued", || depth(&gw) == (n + 1) as f64).await;
    }
    assert_eq!(blocker.await.unwrap().status, StatusCode::OK);
    for t in tasks {
        assert_eq!(t.await.unwrap(), StatusCode::OK);
    }
    assert_eq!(*order.lock().unwrap(), vec!["high", "normal", "low"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_client_that_disconnects_frees_its_place() {
    let shop = shop_with(50, 20).await;
    let gw = gateway(
        &shop,
        // The CoDel target out of reach: this is about a FIFO queue, and on a loaded
        // machine the leaver could wait past 50 ms and make the full queue "standing".
        "max_concurrency = 1\nqueue_size = 1\nqueue_timeout = \"30s\"\ncodel_target = \"10s\"",
        "",
    )
    .await;
    let blocker = block_the_slot(&gw, 1500).await;

    let mut leaver = TcpStream::connect(gw.addr()).await.unwrap();
    leaver
        .write_all(b"GET /products/1 HTTP/1.1\r\nHost: shop\r\n\r\n")
        .await
        .unwrap();
    until("the leaver is queued", || depth(&gw) == 1.0).await;
    // The queue (one place) is full now.
    assert_eq!(
        get(&gw, "/products/2").await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );

    drop(leaver);
    until("the leaver's place is freed", || depth(&gw) == 0.0).await;
    assert_eq!(shed(&gw, "client_gone"), 1.0);

    // The freed place takes the next shopper, who is served once the blocker is done.
    let addr = gw.addr();
    let next =
        tokio::spawn(async move { send(addr, Method::GET, "/products/3", true).await.status });
    until("the next shopper is queued", || depth(&gw) == 1.0).await;
    assert_eq!(next.await.unwrap(), StatusCode::OK);
    assert_eq!(blocker.await.unwrap().status, StatusCode::OK);
    // The leaver's request never reached the origin: only the blocker and the next one.
    assert_eq!(shop.stats.served.load(Ordering::SeqCst), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_answers_503_with_retry_after_at_once() {
    let shop = shop_with(50, 20).await;
    let gw = gateway(
        &shop,
        "max_concurrency = 1\nqueue_size = 0\nqueue_timeout = \"30s\"",
        "",
    )
    .await;
    let blocker = block_the_slot(&gw, 1500).await;

    let json = get(&gw, "/products/1").await;
    // Answered while the blocker still holds the origin: nobody waited for a slot.
    assert_eq!(shop.stats.in_flight.load(Ordering::SeqCst), 1);
    assert_eq!(json.status, StatusCode::SERVICE_UNAVAILABLE);
    let retry: u64 = json.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=3).contains(&retry), "Retry-After {retry}");
    assert!(json.body.contains("\"queue_full\""), "{}", json.body);

    let browser = send(gw.addr(), Method::GET, "/products/1", false).await;
    assert_eq!(browser.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(browser.headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    assert_eq!(browser.headers["cache-control"], "no-store");
    assert!(browser.headers.contains_key("retry-after"));
    assert_eq!(shed(&gw, "queue_full"), 2.0);
    assert_eq!(blocker.await.unwrap().status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_that_waits_past_queue_timeout_gets_503() {
    let shop = shop_with(50, 20).await;
    let gw = gateway(
        &shop,
        "max_concurrency = 1\nqueue_size = 10\nqueue_timeout = \"200ms\"",
        "",
    )
    .await;
    let blocker = block_the_slot(&gw, 2000).await;
    let a = get(&gw, "/products/1").await;
    assert_eq!(a.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(a.body.contains("\"queue_timeout\""), "{}", a.body);
    assert!(a.headers.contains_key("retry-after"));
    assert_eq!(shed(&gw, "queue_timeout"), 1.0);
    assert_eq!(depth(&gw), 0.0);
    // It timed out in the queue, not at the origin.
    assert_eq!(shop.stats.in_flight.load(Ordering::SeqCst), 1);
    blocker.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkout_arriving_at_a_full_queue_takes_the_place_of_a_search() {
    let shop = shop_with(50, 20).await;
    let route = r#"priority = [{ methods = ["POST"], class = "high" }, { path_prefix = "/search", class = "low" }]"#;
    let gw = gateway(
        &shop,
        // FIFO eviction by class, not overload: keep the CoDel target out of reach.
        "max_concurrency = 1\nqueue_size = 1\nqueue_timeout = \"30s\"\ncodel_target = \"10s\"",
        route,
    )
    .await;
    let blocker = block_the_slot(&gw, 500).await;
    let addr = gw.addr();
    let search = tokio::spawn(async move { send(addr, Method::GET, "/search?q=tv", true).await });
    until("the search is queued", || depth(&gw) == 1.0).await;
    let checkout = tokio::spawn(async move { send(addr, Method::POST, "/checkout", true).await });

    let search = search.await.unwrap();
    assert_eq!(search.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(search.body.contains("\"queue_full\""), "{}", search.body);
    assert_eq!(checkout.await.unwrap().status, StatusCode::OK);
    assert_eq!(shop.stats.checkouts.load(Ordering::SeqCst), 1);
    blocker.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_adaptive_limit_stays_within_its_bounds_under_a_burst() {
    let shop = shop_with(50, 20).await;
    let upstream = "max_concurrency = \"auto\"\nmin_concurrency = 2\nmax_concurrency_limit = 6\nqueue_size = 1000\nqueue_timeout = \"30s\"";
    let gw = gateway(&shop, upstream, "").await;
    let addr = gw.addr();
    let clients: Vec<_> = (0..120)
        .map(|i| {
            tokio::spawn(async move {
                send(addr, Method::GET, &format!("/products/{i}"), true)
                    .await
                    .status
            })
        })
        .collect();
    for c in clients {
        assert_eq!(c.await.unwrap(), StatusCode::OK);
    }
    let peak = shop.stats.peak_in_flight.load(Ordering::SeqCst);
    assert!(peak <= 6, "the origin saw {peak} at once, ceiling is 6");
    let limit = metric(&gw, "floodgate_concurrency_limit", &[("upstream", "shop")]);
    assert!((2.0..=6.0).contains(&limit), "limit gauge {limit}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_a_standing_crowd_the_newest_is_served_and_older_waiters_are_refused_at_once() {
    let shop = shop_with(50, 20).await;
    let gw = gateway(
        &shop,
        // Target 250 ms: a queue standing past it is overloaded, and a waiter queued
        // while overloaded may wait 2 × 250 ms.
        "max_concurrency = 1\nqueue_size = 3\nqueue_timeout = \"30s\"\ncodel_target = \"250ms\"",
        "",
    )
    .await;
    let blocker = block_the_slot(&gw, 700).await;
    let addr = gw.addr();
    let ask =
        |path: &'static str| tokio::spawn(async move { send(addr, Method::GET, path, true).await });
    let early: Vec<_> = ["/products/1", "/products/2", "/products/3"]
        .into_iter()
        .map(ask)
        .collect();
    until("three shoppers wait", || depth(&gw) == 3.0).await;
    assert_eq!(
        metric(&gw, "floodgate_queue_overloaded", &[("upstream", "shop")]),
        0.0,
        "a queue that just filled is absorbing a burst"
    );
    // The queue is full and its oldest has waited past the target: standing.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let late = ask("/products/4");
    // The three who waited are refused now, while the blocker still holds the origin:
    // under overload an older waiter is pushed out by a newer arrival, not left to
    // wait for its timeout (30 s here).
    for e in early {
        let a = e.await.unwrap();
        assert_eq!(a.status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(a.body.contains("\"codel\""), "{}", a.body);
        assert!(a.headers.contains_key("retry-after"));
    }
    assert_eq!(
        shop.stats.in_flight.load(Ordering::SeqCst),
        1,
        "blocker still busy"
    );
    assert_eq!(shed(&gw, "codel"), 3.0);
    assert_eq!(depth(&gw), 1.0);
    assert_eq!(
        metric(&gw, "floodgate_queue_overloaded", &[("upstream", "shop")]),
        1.0
    );
    // The newest is the one served when the slot frees (after ~400 of its 500 ms).
    assert_eq!(late.await.unwrap().status, StatusCode::OK);
    assert_eq!(blocker.await.unwrap().status, StatusCode::OK);
    assert_eq!(shop.stats.served.load(Ordering::SeqCst), 2);
}
