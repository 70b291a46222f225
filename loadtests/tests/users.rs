//! Closed-model users and waiting-room shoppers.

mod support;

use bytes::Bytes;
use floodgate_loadtest::{run, RunOptions};
use http_body_util::Full;
use hyper::Response;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::{scenario, serve, text};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_model_users_never_exceed_their_number_in_flight() {
    let inside = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let server = serve({
        let (inside, peak) = (inside.clone(), peak.clone());
        move |_req| {
            let (inside, peak) = (inside.clone(), peak.clone());
            async move {
                let n = inside.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(n, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(10)).await;
                inside.fetch_sub(1, Ordering::SeqCst);
                text(200, "ok")
            }
        }
    })
    .await;
    let s = scenario(
        &server.url(),
        r#"
        model = "closed"
        [closed]
        users = 8
        duration = "1s"
        [[mix]]
        path = "/"
        "#,
    );
    let r = run(&s, &RunOptions::new("t", &server.url())).await.unwrap();
    assert!(peak.load(Ordering::SeqCst) <= 8);
    assert_eq!(r.model, "closed");
    assert_eq!(r.completed, r.sent);
    // 8 users x ~10 ms per request for 1 s: several hundred requests.
    assert!(r.sent > 300 && r.sent <= 800, "sent {}", r.sent);
    let p50 = r.latency_2xx.unwrap().p50_ms;
    assert!((9.0..40.0).contains(&p50), "p50 {p50}");
}

fn cookie(req: &hyper::Request<hyper::body::Incoming>, name: &str) -> Option<String> {
    let h = req.headers().get("cookie")?.to_str().ok()?;
    h.split(';').find_map(|c| {
        c.trim()
            .strip_prefix(&format!("{name}="))
            .map(str::to_string)
    })
}

fn with_cookie(mut r: Response<Full<Bytes>>, c: String) -> Response<Full<Bytes>> {
    r.headers_mut().append("set-cookie", c.parse().unwrap());
    r
}

fn waiting(json: bool) -> Response<Full<Bytes>> {
    if json {
        let mut r = text(
            200,
            r#"{"status":"waiting","position":3,"retry_after":0.1}"#,
        );
        r.headers_mut()
            .insert("content-type", "application/json".parse().unwrap());
        r
    } else {
        text(
            200,
            r#"<html><head><meta http-equiv="refresh" content="0.1"></head><body>You are in line</body></html>"#,
        )
    }
}

type Reply = std::pin::Pin<Box<dyn std::future::Future<Output = Response<Full<Bytes>>> + Send>>;

/// A toy waiting room: a visitor gets a ticket, waits two polls, then a pass.
fn waiting_room(
    cart_always_waits: bool,
) -> impl Fn(hyper::Request<hyper::body::Incoming>) -> Reply + Clone + Send + Sync + 'static {
    let polls: Arc<Mutex<HashMap<String, u32>>> = Arc::default();
    let next = Arc::new(AtomicU64::new(0));
    move |req| {
        let (polls, next) = (polls.clone(), next.clone());
        Box::pin(async move {
            let json = req
                .headers()
                .get("accept")
                .is_some_and(|a| a.to_str().unwrap_or("").contains("json"));
            let has_pass = cookie(&req, "pass").is_some();
            let path = req.uri().path().to_string();
            if path == "/cart" && cart_always_waits {
                return waiting(json);
            }
            if has_pass {
                return text(200, "<h1>content</h1>");
            }
            if path != "/products/1" && !path.starts_with("/products/") {
                return text(403, "no pass");
            }
            match cookie(&req, "ticket") {
                None => {
                    let t = next.fetch_add(1, Ordering::SeqCst);
                    with_cookie(waiting(json), format!("ticket={t}; Path=/"))
                }
                Some(t) => {
                    let mut p = polls.lock().unwrap();
                    let n = p.entry(t).or_insert(0);
                    *n += 1;
                    if *n >= 2 {
                        with_cookie(text(200, "<h1>product</h1>"), "pass=ok; Path=/".into())
                    } else {
                        waiting(json)
                    }
                }
            }
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shoppers_wait_in_line_then_browse_and_buy() {
    let server = serve(waiting_room(false)).await;
    for accept in ["text/html", "application/json"] {
        let s = scenario(
            &server.url(),
            &format!(
                r#"
                max_duration = "10s"
                # Shorter than a visit: shoppers must outlive the request drain.
                timeout = "300ms"
                phases = [{{ rate = 20, duration = "1s" }}]
                [[mix]]
                kind = "shopper"
                path = "/products/{{1..5}}"
                browse = ["/products/{{1..5}}", "/cart"]
                checkout = "/checkout"
                body = "{{}}"
                headers = {{ accept = "{accept}" }}
                think_time = "150ms"
                max_session = "5s"
                "#
            ),
        );
        let r = run(&s, &RunOptions::new("t", &server.url())).await.unwrap();
        let sh = r.shoppers.clone().unwrap();
        assert_eq!(sh.started, 20, "{accept}");
        assert_eq!(sh.admitted, 20, "{accept}: {sh:?}");
        assert_eq!(sh.purchased, 20, "{accept}: {sh:?}");
        assert_eq!(sh.thrown_out, 0);
        assert_eq!(sh.gave_up, 0);
        // Each waited two polls of 100 ms before getting its pass.
        assert_eq!(sh.polls, 40, "{accept}");
        assert!(sh.wait.unwrap().p50_ms >= 190.0, "{:?}", sh.wait);
        // landing + 2 re-polls + 2 pages + checkout
        assert_eq!(r.sent, 20 * 6, "{accept}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admitted_shopper_sent_back_to_the_line_is_reported() {
    let server = serve(waiting_room(true)).await;
    let s = scenario(
        &server.url(),
        r#"
        max_duration = "5s"
        phases = [{ rate = 10, duration = "500ms" }]
        [[mix]]
        kind = "shopper"
        path = "/products/{1..5}"
        browse = ["/cart"]
        checkout = "/checkout"
        think_time = "10ms"
        max_session = "1s"
        "#,
    );
    let r = run(&s, &RunOptions::new("t", &server.url())).await.unwrap();
    let sh = r.shoppers.clone().unwrap();
    assert_eq!(sh.started, 5);
    assert_eq!(sh.admitted, 5);
    assert_eq!(sh.thrown_out, 5);
    assert_eq!(sh.gave_up, 5);
    assert_eq!(sh.purchased, 0);
    assert!(r
        .warnings
        .iter()
        .any(|w| w.contains("sent back to the waiting page")));
}
