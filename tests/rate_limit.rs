//! Rate limits, end to end: a real gateway in front of the simulated shop on loopback,
//! real clients from distinct loopback addresses (127.0.0.2, 127.0.0.3, …: the whole
//! 127/8 is local on Linux), and a trusted proxy's X-Forwarded-For where the test needs
//! addresses loopback cannot have (IPv6 /64s, documentation ranges).

mod common;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use http::StatusCode;

use common::{config_text, fast_shop, gateway, get_from, metric, metrics_text};

/// Statuses of `n` sequential requests.
async fn statuses(n: usize, from: &str, gw: SocketAddr, headers: &[(&str, &str)]) -> Vec<u16> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(get_from(from, gw, "/", headers).await.status.as_u16());
    }
    out
}

fn route(extra: &str) -> String {
    format!("[[route]]\nname = \"shop\"\nupstream = \"shop\"\n{extra}\n")
}

#[tokio::test]
async fn a_client_over_its_rate_gets_429_with_retry_after_while_another_client_is_served() {
    let shop = fast_shop().await;
    // 6/m: one request per 10 s, so the wait does not melt away during the test.
    let gw = gateway(&config_text(
        shop.addr,
        &route(
            r#"rate_limits = [{ name = "per-ip", key = "client_ip", rate = "6/m", burst = 3 }]"#,
        ),
    ))
    .await;
    let addr = gw.addr();
    assert_eq!(statuses(3, "127.0.0.2", addr, &[]).await, [200, 200, 200]);

    let refused = get_from("127.0.0.2", addr, "/", &[]).await;
    assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = refused.header("retry-after").unwrap().parse().unwrap();
    // The next cell is due 10 s after the first request, minus the little time passed;
    // rounded up, plus at most one second of jitter.
    assert!((9..=11).contains(&retry), "Retry-After {retry}");
    assert_eq!(
        refused.header("ratelimit-policy"),
        Some("\"per-ip\";q=3;w=30")
    );
    assert_eq!(
        refused.header("ratelimit"),
        Some(format!("\"per-ip\";r=0;t={retry}").as_str())
    );
    assert_eq!(refused.header("cache-control"), Some("no-store"));
    assert!(
        refused
            .header("content-type")
            .unwrap()
            .starts_with("text/html"),
        "{:?}",
        refused.headers
    );
    assert!(refused.text().contains("Too many requests"));

    let json = get_from("127.0.0.2", addr, "/", &[("accept", "application/json")]).await;
    assert_eq!(json.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(json.json()["error"], "rate_limited");

    // Meanwhile another client is served.
    assert_eq!(statuses(3, "127.0.0.3", addr, &[]).await, [200, 200, 200]);

    let m = metrics_text(&gw).await;
    assert_eq!(
        metric(
            &m,
            r#"floodgate_rate_limited_total{limit="per-ip",route="shop"}"#
        ),
        Some(2.0),
        "{m}"
    );
    assert!(!m.contains("127.0.0.2"), "no client address in metrics");
}

#[tokio::test]
async fn the_burst_is_honoured_exactly_and_refused_requests_never_reach_the_shop() {
    let shop = fast_shop().await;
    let gw = gateway(&config_text(
        shop.addr,
        &route(r#"rate_limits = [{ rate = "1/m", burst = 5 }]"#),
    ))
    .await;
    let before = shop.stats.received.load(Ordering::Relaxed);
    let got = statuses(20, "127.0.0.2", gw.addr(), &[]).await;
    assert_eq!(got[..5], [200; 5]);
    assert_eq!(got[5..], [429; 15]);
    assert_eq!(shop.stats.received.load(Ordering::Relaxed) - before, 5);
}

#[tokio::test]
async fn a_trusted_proxys_x_forwarded_for_selects_the_key_and_an_untrusted_ones_does_not() {
    let shop = fast_shop().await;
    let text = config_text(
        shop.addr,
        &format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\ntrusted_proxies = [\"127.0.0.1\"]\n\n{}",
            route(r#"rate_limits = [{ rate = "1/m", burst = 2 }]"#)
        ),
    );
    let gw = gateway(&text).await;
    let addr = gw.addr();
    // Through the trusted proxy (127.0.0.1), each forwarded client has its own bucket.
    let a = [("x-forwarded-for", "203.0.113.1")];
    let b = [("x-forwarded-for", "203.0.113.2")];
    assert_eq!(statuses(3, "127.0.0.1", addr, &a).await, [200, 200, 429]);
    assert_eq!(statuses(3, "127.0.0.1", addr, &b).await, [200, 200, 429]);
    // From an untrusted peer the header is ignored: changing it buys nothing.
    let mut got = Vec::new();
    for i in 0..3 {
        let xff = format!("198.51.100.{i}");
        got.push(
            get_from("127.0.0.5", addr, "/", &[("x-forwarded-for", &xff)])
                .await
                .status
                .as_u16(),
        );
    }
    assert_eq!(got, [200, 200, 429]);
}

#[tokio::test]
async fn a_header_keyed_limit_counts_each_api_key_and_skips_requests_without_one() {
    let shop = fast_shop().await;
    let gw = gateway(&config_text(
        shop.addr,
        &route(r#"rate_limits = [{ name = "api", key = "header:X-Api-Key", rate = "1/m", burst = 2 }]"#),
    ))
    .await;
    let addr = gw.addr();
    // One key from two addresses is one bucket.
    assert_eq!(
        statuses(1, "127.0.0.2", addr, &[("x-api-key", "k1")]).await,
        [200]
    );
    assert_eq!(
        statuses(2, "127.0.0.3", addr, &[("x-api-key", "k1")]).await,
        [200, 429]
    );
    let refused = get_from("127.0.0.3", addr, "/", &[("x-api-key", "k1")]).await;
    assert_eq!(
        refused.header("ratelimit-policy"),
        Some("\"api\";q=2;w=120")
    );
    assert_eq!(
        statuses(2, "127.0.0.2", addr, &[("x-api-key", "k2")]).await,
        [200, 200]
    );
    assert_eq!(statuses(4, "127.0.0.2", addr, &[]).await, [200; 4]);
}

#[tokio::test]
async fn a_cookie_keyed_limit_counts_each_session() {
    let shop = fast_shop().await;
    let gw = gateway(&config_text(
        shop.addr,
        &route(r#"rate_limits = [{ key = "cookie:session", rate = "1/m", burst = 2 }]"#),
    ))
    .await;
    let addr = gw.addr();
    let s1 = [("cookie", "theme=dark; session=abc")];
    let s2 = [("cookie", "session=def")];
    assert_eq!(statuses(3, "127.0.0.2", addr, &s1).await, [200, 200, 429]);
    assert_eq!(statuses(2, "127.0.0.2", addr, &s2).await, [200, 200]);
}

#[tokio::test]
async fn ipv6_clients_in_one_slash_64_share_a_limit_and_other_prefixes_do_not() {
    let shop = fast_shop().await;
    let text = config_text(
        shop.addr,
        &format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\ntrusted_proxies = [\"127.0.0.1\"]\n\n{}",
            route(r#"rate_limits = [{ rate = "1/m", burst = 3 }]"#)
        ),
    );
    let gw = gateway(&text).await;
    let addr = gw.addr();
    let mut got = Vec::new();
    for host in [
        "2001:db8:1:2::a",
        "2001:db8:1:2::b",
        "2001:db8:1:2:ffff::1",
        "2001:db8:1:2::c",
    ] {
        got.push(
            get_from("127.0.0.1", addr, "/", &[("x-forwarded-for", host)])
                .await
                .status
                .as_u16(),
        );
    }
    assert_eq!(got, [200, 200, 200, 429]);
    assert_eq!(
        statuses(
            1,
            "127.0.0.1",
            addr,
            &[("x-forwarded-for", "2001:db8:1:3::a")]
        )
        .await,
        [200]
    );
}

#[tokio::test]
async fn a_denied_address_gets_403_and_an_allowed_one_bypasses_the_limits() {
    let shop = fast_shop().await;
    let gw = gateway(&config_text(
        shop.addr,
        &route(
            r#"rate_limits = [{ rate = "1/m", burst = 1 }]
deny = ["127.0.0.3/32"]
allow = ["127.0.0.4"]"#,
        ),
    ))
    .await;
    let addr = gw.addr();
    let before = shop.stats.received.load(Ordering::Relaxed);
    let denied = get_from("127.0.0.3", addr, "/", &[("accept", "application/json")]).await;
    assert_eq!(denied.status, StatusCode::FORBIDDEN);
    assert_eq!(denied.json()["error"], "denied");
    assert_eq!(
        shop.stats.received.load(Ordering::Relaxed),
        before,
        "the shop never saw it"
    );
    assert_eq!(statuses(5, "127.0.0.4", addr, &[]).await, [200; 5]);
    assert_eq!(statuses(2, "127.0.0.2", addr, &[]).await, [200, 429]);
    let m = metrics_text(&gw).await;
    assert_eq!(
        metric(&m, r#"floodgate_access_denied_total{route="shop"}"#),
        Some(1.0)
    );
}

#[tokio::test]
async fn an_abusers_refused_requests_do_not_spend_the_sites_shared_budget() {
    let shop = fast_shop().await;
    let gw = gateway(&config_text(
        shop.addr,
        &route(
            r#"rate_limits = [
  { name = "site", key = "global", rate = "1/m", burst = 5 },
  { name = "per-ip", rate = "1/m", burst = 2 },
]"#,
        ),
    ))
    .await;
    let addr = gw.addr();
    // The abuser spends two of the site's five, and nothing more however hard it tries.
    assert_eq!(
        statuses(10, "127.0.0.2", addr, &[]).await,
        [200, 200, 429, 429, 429, 429, 429, 429, 429, 429]
    );
    assert_eq!(statuses(2, "127.0.0.3", addr, &[]).await, [200, 200]);
    assert_eq!(statuses(1, "127.0.0.4", addr, &[]).await, [200]);
    let last = get_from("127.0.0.5", addr, "/", &[]).await;
    assert_eq!(last.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(last.header("ratelimit-policy"), Some("\"site\";q=5;w=300"));
    let m = metrics_text(&gw).await;
    assert_eq!(
        metric(
            &m,
            r#"floodgate_rate_limited_total{limit="per-ip",route="shop"}"#
        ),
        Some(8.0)
    );
    assert_eq!(
        metric(
            &m,
            r#"floodgate_rate_limited_total{limit="site",route="shop"}"#
        ),
        Some(1.0)
    );
}

#[tokio::test]
async fn a_dry_run_limit_counts_what_it_would_refuse_and_refuses_nothing() {
    let shop = fast_shop().await;
    let gw = gateway(&config_text(
        shop.addr,
        &route(r#"rate_limits = [{ name = "trial", rate = "1/m", burst = 1, dry_run = true }]"#),
    ))
    .await;
    assert_eq!(statuses(4, "127.0.0.2", gw.addr(), &[]).await, [200; 4]);
    let m = metrics_text(&gw).await;
    assert_eq!(
        metric(
            &m,
            r#"floodgate_rate_limit_dry_run_total{limit="trial",route="shop"}"#
        ),
        Some(3.0)
    );
    assert_eq!(
        metric(
            &m,
            r#"floodgate_rate_limited_total{limit="trial",route="shop"}"#
        ),
        Some(0.0)
    );
}

#[tokio::test]
async fn a_delaying_limit_holds_an_excess_request_then_serves_it_and_refuses_past_max_delay() {
    let shop = fast_shop().await;
    let gw = gateway(&config_text(
        shop.addr,
        &route(r#"rate_limits = [{ name = "slow", rate = "5/s", burst = 1, action = "delay", max_delay = "250ms" }]"#),
    ))
    .await;
    let addr = gw.addr();
    assert_eq!(statuses(1, "127.0.0.2", addr, &[]).await, [200]);
    let started = Instant::now();
    assert_eq!(statuses(1, "127.0.0.2", addr, &[]).await, [200]);
    // Held for the 200 ms until its cell was due (a lower bound, not a speed claim).
    assert!(
        started.elapsed() >= Duration::from_millis(100),
        "{:?}",
        started.elapsed()
    );
    let m = metrics_text(&gw).await;
    assert_eq!(
        metric(
            &m,
            r#"floodgate_rate_limit_delayed_total{limit="slow",route="shop"}"#
        ),
        Some(1.0)
    );
    // Three more at once: whatever fits in 250 ms of delay is held, the rest refused.
    let burst =
        futures_util::future::join_all((0..3).map(|_| get_from("127.0.0.2", addr, "/", &[]))).await;
    assert!(
        burst
            .iter()
            .any(|a| a.status == StatusCode::TOO_MANY_REQUESTS),
        "{:?}",
        burst.iter().map(|a| a.status).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn a_reload_keeps_the_buckets_of_unchanged_limits_and_other_routes_state() {
    let shop = fast_shop().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("floodgate.toml");
    let write = |b_burst: u32| {
        let routes = format!(
            r#"[[route]]
name = "a"
path_prefix = "/products/"
upstream = "shop"
rate_limits = [{{ name = "per-ip", rate = "1/m", burst = 2 }}]

[[route]]
name = "b"
path_prefix = "/cart"
upstream = "shop"
rate_limits = [{{ name = "per-ip", rate = "1/m", burst = {b_burst} }}]
"#
        );
        std::fs::write(&path, config_text(shop.addr, &routes)).unwrap();
    };
    write(2);
    let gw = floodgate::Gateway::start(floodgate::config::load(&path).unwrap())
        .await
        .unwrap();
    let addr = gw.addr();
    let on = |p: &'static str| async move {
        let mut out = Vec::new();
        for _ in 0..3 {
            out.push(get_from("127.0.0.2", addr, p, &[]).await.status.as_u16());
        }
        out
    };
    assert_eq!(on("/products/1").await, [200, 200, 429]);
    assert_eq!(on("/cart").await, [200, 200, 429]);

    write(3);
    gw.reload().expect("reload accepted");
    // Route a's rule did not change: the client is still in debt, no fresh burst.
    assert_eq!(
        get_from("127.0.0.2", addr, "/products/1", &[]).await.status,
        StatusCode::TOO_MANY_REQUESTS
    );
    // Route b's rule changed: new buckets with the new burst.
    assert_eq!(on("/cart").await, [200, 200, 200]);
}
