//! The open-model generator: schedule kept whatever the target does, latency
//! counted from the scheduled time, caps and failure classes.

mod support;

use floodgate_loadtest::{run, RunOptions};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use support::{scenario, serve, text};
use tokio::time::Instant;

fn at_least(r: &floodgate_loadtest::RunReport, ms: f64) -> u64 {
    r.latency_at_least
        .iter()
        .find(|a| a.ms == ms)
        .unwrap()
        .count
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_scheduled_during_a_stall_record_the_stall() {
    // The server answers at once, except that every request arriving between
    // 1 s and 2 s after the first one is held until 2 s: a 1 s stall.
    let t0: Arc<OnceLock<Instant>> = Arc::new(OnceLock::new());
    let server = serve({
        let t0 = t0.clone();
        move |_req| {
            let t0 = t0.clone();
            async move {
                let start = *t0.get_or_init(Instant::now);
                let since = start.elapsed();
                if since >= Duration::from_secs(1) && since < Duration::from_secs(2) {
                    tokio::time::sleep_until(start + Duration::from_secs(2)).await;
                }
                text(200, "ok")
            }
        }
    })
    .await;
    let s = scenario(
        &server.url(),
        r#"
        timeout = "5s"
        phases = [{ rate = 200, duration = "4s" }]
        [[mix]]
        path = "/products/{1..500}"
        "#,
    );
    let r = run(&s, &RunOptions::new("stall", &server.url()))
        .await
        .unwrap();

    // The schedule was kept: 200/s for 4 s, whatever the server did.
    assert_eq!(r.scheduled, 800);
    assert!((r.sent as i64 - 800).abs() <= 1, "sent {}", r.sent);
    assert!((r.send_rate - 200.0).abs() < 4.0, "rate {}", r.send_rate);
    assert_eq!(r.dropped, 0);
    assert_eq!(r.completed, r.sent);

    // About 200 requests were due during the stall. A request due at 1 s + x
    // waited 1 s - x, so: the ~10 due in its first 50 ms waited > 950 ms (p99 of
    // 800 sits among them), the ~100 due in its first half waited >= 500 ms,
    // and the ~190 due before its last 50 ms waited >= 50 ms. A closed-loop
    // tool would record one slow request per connection instead.
    let all = r.latency_all.unwrap();
    assert!(all.p99_ms >= 900.0, "p99 {} ms", all.p99_ms);
    assert!(
        all.max_ms >= 950.0 && all.max_ms < 1200.0,
        "max {} ms",
        all.max_ms
    );
    assert!(all.p50_ms < 50.0, "p50 {} ms", all.p50_ms);
    let slow = at_least(&r, 500.0);
    assert!(
        (90..=112).contains(&slow),
        "{slow} requests >= 500 ms, expected ~100 (half the stall window)"
    );
    let stalled = at_least(&r, 50.0);
    assert!(
        (180..=212).contains(&stalled),
        "{stalled} requests >= 50 ms, expected ~190 of the 200 scheduled in the stall"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arrivals_past_max_in_flight_are_dropped_and_reported_loudly() {
    let server = serve(|_req| async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        text(200, "slow")
    })
    .await;
    let s = scenario(
        &server.url(),
        r#"
        max_in_flight = 5
        phases = [{ rate = 100, duration = "1s" }]
        [[mix]]
        path = "/"
        "#,
    );
    let r = run(&s, &RunOptions::new("t", &server.url())).await.unwrap();
    assert_eq!(r.scheduled, 100);
    assert!(r.dropped >= 80, "dropped {}", r.dropped);
    assert_eq!(r.sent + r.dropped, 100);
    assert!(
        r.warnings.iter().any(|w| w.contains("DROPPED")),
        "{:?}",
        r.warnings
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statuses_timeouts_and_refusals_are_counted_by_class() {
    let server = serve(|req| async move {
        match req.uri().path() {
            "/busy" => text(503, "queue full"),
            "/limited" => text(429, "slow down"),
            "/hang" => {
                tokio::time::sleep(Duration::from_secs(3)).await;
                text(200, "late")
            }
            "/missing" => text(404, "no"),
            _ => text(200, "ok"),
        }
    })
    .await;
    let s = scenario(
        &server.url(),
        r#"
        timeout = "200ms"
        phases = [{ rate = 400, duration = "1s" }]
        [[mix]]
        path = "/ok"
        weight = 4
        [[mix]]
        path = "/busy"
        [[mix]]
        path = "/limited"
        [[mix]]
        path = "/hang"
        [[mix]]
        path = "/missing"
        "#,
    );
    let r = run(&s, &RunOptions::new("t", &server.url())).await.unwrap();
    assert_eq!(r.completed, 400);
    let get = |k: &str| r.classes[k];
    assert!(
        get("2xx") > 150 && get("5xx") > 20 && get("4xx") > 40 && get("timeout") > 20,
        "{:?}",
        r.classes
    );
    assert_eq!(get("5xx"), r.statuses["503"]);
    assert_eq!(get("4xx"), r.statuses["429"] + r.statuses["404"]);
    let refusals = r.latency_refusals.unwrap();
    assert_eq!(refusals.count, r.statuses["503"] + r.statuses["429"]);
    let timeouts = r.latency_by_class["timeout"];
    assert!(
        timeouts.min_ms >= 190.0,
        "timeouts at {} ms",
        timeouts.min_ms
    );
    assert_eq!(r.latency_2xx.unwrap().count, get("2xx"));
}

#[tokio::test]
async fn a_closed_port_counts_as_connection_errors() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let s = scenario(
        &url,
        r#"
        phases = [{ rate = 50, duration = "200ms" }]
        [[mix]]
        path = "/"
        "#,
    );
    let r = run(&s, &RunOptions::new("t", &url)).await.unwrap();
    assert_eq!(r.classes["connect_error"], 10);
    assert!(r.latency_all.is_none());
    assert!(r.warnings.iter().any(|w| w.contains("connection errors")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cookies_set_by_the_target_come_back_on_later_requests() {
    let with_cookie = Arc::new(AtomicUsize::new(0));
    let server = serve({
        let with_cookie = with_cookie.clone();
        move |req| {
            let with_cookie = with_cookie.clone();
            async move {
                if req
                    .headers()
                    .get("cookie")
                    .is_some_and(|c| c.to_str().unwrap_or("").contains("cart="))
                {
                    with_cookie.fetch_add(1, Ordering::Relaxed);
                    text(200, "cart")
                } else {
                    hyper::Response::builder()
                        .header("set-cookie", "cart=abc; Path=/; HttpOnly")
                        .body(http_body_util::Full::new(bytes::Bytes::from_static(b"new")))
                        .unwrap()
                }
            }
        }
    })
    .await;
    let s = scenario(
        &server.url(),
        r#"
        sessions = 5
        phases = [{ rate = 200, duration = "500ms" }]
        [[mix]]
        path = "/cart"
        cookies = true
        "#,
    );
    let r = run(&s, &RunOptions::new("t", &server.url())).await.unwrap();
    assert_eq!(r.classes["2xx"], 100);
    // Five jars: only their first requests (and a few racing them) lack the cookie.
    assert!(
        with_cookie.load(Ordering::Relaxed) >= 85,
        "{}",
        with_cookie.load(Ordering::Relaxed)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_and_shop_are_scraped_every_second() {
    let hits = Arc::new(AtomicUsize::new(0));
    let server = serve({
        let hits = hits.clone();
        move |req| {
            let hits = hits.clone();
            async move {
                match req.uri().path() {
                    "/metrics" => {
                        let n = hits.load(Ordering::Relaxed);
                        text(
                            200,
                            &format!(
                                "# TYPE floodgate_queue_depth gauge\nfloodgate_queue_depth{{upstream=\"shop\"}} 7\n\
                                 floodgate_cache_lookups_total{{result=\"hit\"}} {}\nfloodgate_cache_lookups_total{{result=\"miss\"}} {}\n",
                                n * 3,
                                n
                            ),
                        )
                    }
                    "/__shop/stats" => text(200, r#"{"in_flight":2,"peak_in_flight":9,"served":100,"errors":1,"extra":true}"#),
                    _ => {
                        hits.fetch_add(1, Ordering::Relaxed);
                        text(200, "ok")
                    }
                }
            }
        }
    })
    .await;
    let s = scenario(
        &server.url(),
        r#"
        phases = [{ rate = 100, duration = "2500ms" }]
        [[mix]]
        path = "/p"
        "#,
    );
    let mut o = RunOptions::new("t", &server.url());
    o.metrics_url = Some(format!("{}/metrics", server.url()));
    o.shop_stats_url = Some(format!("{}/__shop/stats", server.url()));
    let r = run(&s, &o).await.unwrap();
    let g = r.gateway.clone().unwrap();
    assert_eq!(g.max_queue_depth, Some(7.0));
    let ratio = g.cache_hit_ratio.unwrap();
    assert!((ratio - 0.75).abs() < 0.01, "{ratio}");
    assert!(r.metrics.len() >= 3, "{:?}", r.metrics);
    assert_eq!(r.origin.unwrap().peak_in_flight, 9);
    assert_eq!(r.origin.unwrap().errors, 1);
    let html = floodgate_loadtest::report::html::render_report(std::slice::from_ref(&r));
    assert!(html.contains("queue depth") && html.contains("Cache hit ratio"));
}
