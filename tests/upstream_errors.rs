//! When the origin side fails: quick 502/504 with a short body, never a hang.

mod common;

use std::time::{Duration, Instant};

use common::*;

#[tokio::test]
async fn an_origin_that_is_down_gives_502_quickly() {
    // Bind and drop to get a port nobody listens on.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let gw = gateway(&config_text(dead, "")).await;
    let started = Instant::now();
    let a = get(gw.addr(), "/products/1").await;
    assert_eq!(a.status, 502);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "took {:?}",
        started.elapsed()
    );
    assert!(a.body.len() < 512);
    assert_eq!(a.header("cache-control"), Some("no-store"));
    let m = metrics_text(&gw).await;
    assert_eq!(
        metric(
            &m,
            "floodgate_upstream_errors_total{reason=\"connect\",upstream=\"shop\"}"
        ),
        Some(1.0)
    );
}

#[tokio::test]
async fn an_origin_slower_than_the_response_timeout_gives_504() {
    let shop = fast_shop().await;
    let text = config_text(shop.addr, "")
        .replace("servers = [", "response_timeout = \"300ms\"\nservers = [");
    let gw = gateway(&text).await;
    let started = Instant::now();
    let a = get(gw.addr(), "/__shop/slow?ms=3000").await;
    assert_eq!(a.status, 504);
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn an_api_client_gets_the_error_as_json() {
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let gw = gateway(&config_text(dead, "")).await;
    let a = send(
        http::Request::get(format!("http://{}/cart", gw.addr()))
            .header("accept", "application/json")
            .body(http_body_util::Full::<bytes::Bytes>::default())
            .unwrap(),
    )
    .await;
    assert_eq!(a.status, 502);
    assert_eq!(a.json()["error"], "upstream_connect");
}

#[tokio::test]
async fn requests_are_spread_over_every_server_of_an_upstream() {
    let a = fast_shop().await;
    let b = fast_shop().await;
    let text = config_text(a.addr, "").replace(
        &format!("servers = [\"{}\"]", a.addr),
        &format!("servers = [\"{}\", \"{}\"]", a.addr, b.addr),
    );
    let gw = gateway(&text).await;
    for _ in 0..10 {
        assert_eq!(get(gw.addr(), "/fast").await.status, 200);
    }
    let n = |s: &floodgate::shop::ShopHandle| {
        s.stats.received.load(std::sync::atomic::Ordering::SeqCst)
    };
    assert_eq!((n(&a), n(&b)), (5, 5));
}
