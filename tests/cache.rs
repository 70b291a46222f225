//! The shared HTTP cache, end to end: gateway and simulated shop on loopback.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use floodgate::config;
use floodgate::gateway::Gateway;
use floodgate::shop::{self, ShopHandle, ShopProfile};
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

type HttpClient = Client<HttpConnector, Full<Bytes>>;

struct Setup {
    gw: Gateway,
    shop: ShopHandle,
    client: HttpClient,
}

async fn start(route_cache: &str, global: &str) -> Setup {
    let shop = shop::start("127.0.0.1:0".parse().unwrap(), ShopProfile::default())
        .await
        .unwrap();
    let (gw, client) = gateway(shop.addr, route_cache, global).await;
    Setup { gw, shop, client }
}

/// A gateway with one cached route in front of `origin`.
async fn gateway(origin: SocketAddr, route_cache: &str, global: &str) -> (Gateway, HttpClient) {
    let text = format!(
        r#"
[server]
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
[log]
access_log = false
{global}
[[upstream]]
name = "shop"
servers = ["{origin}"]
[[route]]
name = "shop"
upstream = "shop"
cache = {{ {route_cache} }}
"#
    );
    let cfg = config::parse(&text).unwrap_or_else(|e| panic!("config: {e:?}"));
    let gw = Gateway::start(cfg).await.unwrap();
    let client = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(64)
        .build_http();
    (gw, client)
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

impl Answer {
    fn cache_status(&self) -> &str {
        self.headers
            .get("cache-status")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
}

async fn send(
    client: &HttpClient,
    addr: SocketAddr,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
) -> Answer {
    let mut b = Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"))
        .header("host", "shop.test");
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let resp = tokio::time::timeout(
        Duration::from_secs(10),
        client.request(b.body(Full::new(Bytes::new())).unwrap()),
    )
    .await
    .expect("answer within 10s")
    .expect("request");
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.expect("body").to_bytes();
    Answer {
        status: parts.status,
        headers: parts.headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

async fn get(s: &Setup, path: &str, headers: &[(&str, &str)]) -> Answer {
    send(&s.client, s.gw.addr(), Method::GET, path, headers).await
}

async fn admin_post(s: &Setup, path: &str, body: &str) -> (StatusCode, String) {
    let req = Request::post(format!("http://{}{path}", s.gw.admin_addr.unwrap()))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap();
    let resp = s.client.request(req).await.unwrap();
    let status = resp.status();
    (
        status,
        String::from_utf8_lossy(&resp.into_body().collect().await.unwrap().to_bytes()).into_owned(),
    )
}

async fn metrics(s: &Setup) -> String {
    let req = Request::get(format!("http://{}/metrics", s.gw.admin_addr.unwrap()))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = s.client.request(req).await.unwrap();
    String::from_utf8_lossy(&resp.into_body().collect().await.unwrap().to_bytes()).into_owned()
}

/// Polls `f` until it holds, for at most `within`.
async fn eventually(within: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + within;
    while Instant::now() < end {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    f()
}

const CC: &str = "/__shop/cache/cc";

#[tokio::test]
async fn a_product_page_is_fetched_once_then_served_from_cache_with_age_and_cache_status() {
    let s = start("enabled = true", "").await;
    let a = get(&s, "/products/1", &[]).await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.cache_status(), "floodgate; fwd=uri-miss; stored");
    let b = get(&s, "/products/1", &[]).await;
    assert!(
        b.cache_status().starts_with("floodgate; hit; ttl="),
        "{}",
        b.cache_status()
    );
    assert_eq!(b.body, a.body);
    assert!(b.headers.contains_key("age"));
    assert_eq!(b.headers.get("etag").unwrap(), "\"product-1-v1\"");
    assert_eq!(s.shop.stats.path_count("/products/1"), 1);
    let m = metrics(&s).await;
    assert!(
        m.contains(r#"floodgate_cache_lookups_total{result="hit",route="shop"} 1"#),
        "{m}"
    );
    assert!(
        m.contains(r#"floodgate_cache_lookups_total{result="miss",route="shop"} 1"#),
        "{m}"
    );
    assert!(!m.contains("floodgate_cache_entries 0\n"), "{m}");
}

#[tokio::test]
async fn the_age_header_counts_the_time_the_page_spent_in_the_cache() {
    let s = start("enabled = true", "").await;
    get(&s, &format!("{CC}?value=max-age%3D60"), &[]).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let b = get(&s, &format!("{CC}?value=max-age%3D60"), &[]).await;
    // At least the second slept; more only if this shared machine stalled the test.
    let age: u64 = b
        .headers
        .get("age")
        .unwrap()
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=3).contains(&age), "age {age}");
    assert!(
        b.cache_status().starts_with("floodgate; hit; ttl=5"),
        "{}",
        b.cache_status()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_thousand_concurrent_misses_for_one_url_make_exactly_one_origin_request() {
    let s = start("enabled = true", "").await;
    // A slow origin answer keeps all thousand requests in flight at once.
    let path = format!("{CC}?value=public,max-age%3D60&ms=300");
    let addr = s.gw.addr();
    let mut tasks = Vec::new();
    for _ in 0..1000 {
        let c = s.client.clone();
        let p = path.clone();
        tasks.push(tokio::spawn(async move {
            send(&c, addr, Method::GET, &p, &[]).await
        }));
    }
    let mut coalesced = 0;
    for t in tasks {
        let a = t.await.unwrap();
        assert_eq!(a.status, StatusCode::OK);
        assert_eq!(a.body, "n=1");
        if a.cache_status().contains("collapsed") {
            coalesced += 1;
        }
    }
    assert_eq!(s.shop.stats.path_count(CC), 1, "exactly one origin request");
    assert!(coalesced > 0, "some requests waited for the fill");
}

#[tokio::test]
async fn the_first_clients_disconnect_does_not_cancel_the_fill_for_the_others() {
    let s = start("enabled = true", "").await;
    let path = format!("{CC}?value=max-age%3D60&ms=300");
    let addr = s.gw.addr();
    let c = s.client.clone();
    let p = path.clone();
    let first = tokio::spawn(async move { send(&c, addr, Method::GET, &p, &[]).await });
    assert!(eventually(Duration::from_secs(2), || s.shop.stats.path_count(CC) == 1).await);
    first.abort();
    let b = get(&s, &path, &[]).await;
    assert_eq!(b.body, "n=1");
    assert!(
        b.cache_status().contains("collapsed") || b.cache_status().contains("hit"),
        "{}",
        b.cache_status()
    );
    assert_eq!(s.shop.stats.path_count(CC), 1);
}

#[tokio::test]
async fn a_response_with_set_cookie_is_never_served_to_a_second_client() {
    let s = start("enabled = true", "").await;
    let path = format!("{CC}?value=public,max-age%3D60&cookie=1");
    let a = get(&s, &path, &[]).await;
    let b = get(&s, &path, &[]).await;
    assert_eq!(
        a.headers.get("set-cookie").unwrap(),
        "session=user1; Path=/"
    );
    assert_eq!(
        b.headers.get("set-cookie").unwrap(),
        "session=user2; Path=/"
    );
    assert_eq!(s.shop.stats.path_count(CC), 2);
    assert!(
        b.cache_status().contains("fwd=uri-miss"),
        "{}",
        b.cache_status()
    );
    // The shop's private cart, too.
    let c1 = get(&s, "/cart", &[]).await;
    let c2 = get(&s, "/cart", &[]).await;
    assert_ne!(c1.body, c2.body);
    assert_ne!(c1.headers.get("set-cookie"), c2.headers.get("set-cookie"));
}

#[tokio::test]
async fn with_strip_set_cookie_the_stored_copy_has_no_cookie() {
    let s = start("strip_set_cookie = true", "").await;
    let path = format!("{CC}?value=public,max-age%3D60&cookie=1");
    let a = get(&s, &path, &[]).await;
    assert!(
        a.headers.contains_key("set-cookie"),
        "the first client gets its own cookie"
    );
    let b = get(&s, &path, &[]).await;
    assert!(b.cache_status().contains("hit"), "{}", b.cache_status());
    assert!(!b.headers.contains_key("set-cookie"));
    assert_eq!(s.shop.stats.path_count(CC), 1);
}

#[tokio::test]
async fn private_and_no_store_responses_are_never_stored() {
    let s = start("enabled = true", "").await;
    for (i, cc) in ["private,max-age%3D60", "no-store"].iter().enumerate() {
        let path = format!("{CC}?value={cc}");
        get(&s, &path, &[]).await;
        let b = get(&s, &path, &[]).await;
        assert_eq!(b.body, format!("n={}", 2 * i + 2), "{cc}");
        assert!(
            b.cache_status().contains("hit-for-miss"),
            "{}",
            b.cache_status()
        );
    }
}

#[tokio::test]
async fn a_request_with_authorization_is_not_answered_from_cache_and_stored_only_if_public() {
    let s = start("enabled = true", "").await;
    let shared = format!("{CC}?value=max-age%3D60");
    let auth = [("authorization", "Bearer alice")];
    get(&s, &shared, &auth).await;
    let b = get(&s, &shared, &[]).await;
    assert_eq!(
        b.body, "n=2",
        "max-age alone does not make an authorized response shareable"
    );

    let public = format!("{CC}?value=public,max-age%3D60&x=1");
    get(&s, &public, &auth).await;
    let anon = get(&s, &public, &[]).await;
    assert!(
        anon.cache_status().contains("hit"),
        "{}",
        anon.cache_status()
    );
    // An authorized request still goes to the origin, which decides what it may see.
    let again = get(&s, &public, &auth).await;
    assert!(
        again.cache_status().contains("fwd=request"),
        "{}",
        again.cache_status()
    );
}

#[tokio::test]
async fn vary_on_accept_encoding_keeps_two_variants() {
    let s = start("enabled = true", "").await;
    let path = "/__shop/cache/vary";
    let gz = get(&s, path, &[("accept-encoding", "gzip")]).await;
    let br = get(&s, path, &[("accept-encoding", "br")]).await;
    assert_eq!(gz.body, "n=1 enc=gzip");
    assert_eq!(br.body, "n=2 enc=br");
    assert!(
        br.cache_status().contains("fwd=vary-miss"),
        "{}",
        br.cache_status()
    );
    let gz2 = get(&s, path, &[("accept-encoding", "gzip")]).await;
    let br2 = get(&s, path, &[("accept-encoding", "br")]).await;
    assert_eq!(gz2.body, "n=1 enc=gzip");
    assert_eq!(br2.body, "n=2 enc=br");
    assert!(gz2.cache_status().contains("hit") && br2.cache_status().contains("hit"));
    assert_eq!(s.shop.stats.path_count(path), 2);
}

#[tokio::test]
async fn a_conditional_request_is_answered_304_from_the_cache() {
    let s = start("enabled = true", "").await;
    get(&s, "/products/2", &[]).await;
    let a = get(&s, "/products/2", &[("if-none-match", "\"product-2-v1\"")]).await;
    assert_eq!(a.status, StatusCode::NOT_MODIFIED);
    assert!(a.body.is_empty());
    assert_eq!(a.headers.get("etag").unwrap(), "\"product-2-v1\"");
    let b = get(
        &s,
        "/products/2",
        &[("if-modified-since", "Tue, 24 Nov 2026 08:00:00 GMT")],
    )
    .await;
    assert_eq!(b.status, StatusCode::NOT_MODIFIED);
    let c = get(&s, "/products/2", &[("if-none-match", "\"other\"")]).await;
    assert_eq!(c.status, StatusCode::OK);
    assert_eq!(s.shop.stats.path_count("/products/2"), 1);
}

#[tokio::test]
async fn a_stale_page_is_revalidated_with_its_etag_and_the_304_refreshes_it() {
    let s = start("enabled = true", "").await;
    let path = format!("{CC}?value=max-age%3D1,must-revalidate&etag=1");
    let a = get(&s, &path, &[]).await;
    assert_eq!(a.body, "n=1");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let b = get(&s, &path, &[]).await;
    assert_eq!(b.status, StatusCode::OK);
    assert_eq!(b.body, "n=1", "the stored body, validated");
    assert!(
        b.cache_status().contains("fwd=stale; fwd-status=304"),
        "{}",
        b.cache_status()
    );
    let c = get(&s, &path, &[]).await;
    assert!(c.cache_status().contains("hit"), "{}", c.cache_status());
    assert_eq!(s.shop.stats.path_count(CC), 2);
}

#[tokio::test]
async fn stale_while_revalidate_serves_the_stale_page_and_refreshes_it_once() {
    let s = start("enabled = true", "").await;
    let path = format!("{CC}?value=max-age%3D1,stale-while-revalidate%3D30&ms=200");
    get(&s, &path, &[]).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    for _ in 0..5 {
        let a = get(&s, &path, &[]).await;
        assert_eq!(a.body, "n=1");
        assert!(
            a.cache_status().contains("detail=stale-while-revalidate"),
            "{}",
            a.cache_status()
        );
    }
    // Poll until the refreshed page is served.
    let end = Instant::now() + Duration::from_secs(3);
    let mut fresh = get(&s, &path, &[]).await;
    while fresh.body != "n=2" && Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(20)).await;
        fresh = get(&s, &path, &[]).await;
    }
    assert_eq!(fresh.body, "n=2");
    assert!(
        fresh.cache_status().contains("hit"),
        "{}",
        fresh.cache_status()
    );
    assert_eq!(s.shop.stats.path_count(CC), 2, "one background refresh");
}

#[tokio::test]
async fn with_the_origin_stopped_a_stale_if_error_page_is_served_and_says_so() {
    let s = start(
        r#"stale_while_revalidate = "0s", stale_if_error = "1m""#,
        "",
    )
    .await;
    let a = get(&s, "/products/3", &[]).await;
    assert_eq!(a.status, StatusCode::OK);
    s.shop.stop();
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let b = get(&s, "/products/3", &[]).await;
    assert_eq!(b.status, StatusCode::OK);
    assert_eq!(b.body, a.body);
    assert!(
        b.cache_status().contains("fwd=stale")
            && b.cache_status().contains("detail=stale-if-error"),
        "{}",
        b.cache_status()
    );
    // Nothing cached: a quick error.
    let c = get(&s, "/products/4", &[]).await;
    assert_eq!(c.status, StatusCode::BAD_GATEWAY);
}

#[tokio::test]
async fn an_origin_5xx_is_replaced_by_a_stale_copy_within_stale_if_error() {
    let s = start(r#"stale_if_error = "1m""#, "").await;
    let path = format!("{CC}?value=max-age%3D1&fail_after=1");
    assert_eq!(get(&s, &path, &[]).await.body, "n=1");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let b = get(&s, &path, &[]).await;
    assert_eq!(b.status, StatusCode::OK);
    assert_eq!(b.body, "n=1");
    assert!(
        b.cache_status()
            .starts_with("floodgate; fwd=stale; fwd-status=503"),
        "{}",
        b.cache_status()
    );
    assert!(
        b.cache_status().ends_with("detail=stale-if-error"),
        "{}",
        b.cache_status()
    );
    // A 5xx with nothing stored passes through as it is.
    let fail = get(&s, "/__shop/cache/fail", &[]).await;
    assert_eq!(fail.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        fail.cache_status().contains("fwd=uri-miss"),
        "{}",
        fail.cache_status()
    );
}

#[tokio::test]
async fn head_is_answered_from_a_cached_get() {
    let s = start("enabled = true", "").await;
    let g = get(&s, "/products/5", &[]).await;
    let h = send(&s.client, s.gw.addr(), Method::HEAD, "/products/5", &[]).await;
    assert_eq!(h.status, StatusCode::OK);
    assert!(h.body.is_empty());
    assert!(h.cache_status().contains("hit"), "{}", h.cache_status());
    assert_eq!(
        h.headers.get("content-length").unwrap().to_str().unwrap(),
        g.body.len().to_string()
    );
    assert_eq!(s.shop.stats.path_count("/products/5"), 1);
}

#[tokio::test]
async fn a_post_to_a_cached_url_invalidates_it() {
    let s = start("enabled = true", "").await;
    let path = format!("{CC}?value=max-age%3D60");
    get(&s, &path, &[]).await;
    assert!(get(&s, &path, &[]).await.cache_status().contains("hit"));
    let p = send(&s.client, s.gw.addr(), Method::POST, &path, &[]).await;
    assert_eq!(p.cache_status(), "floodgate; fwd=method");
    let after = get(&s, &path, &[]).await;
    assert_eq!(after.body, "n=3");
    assert!(
        after.cache_status().contains("fwd=uri-miss"),
        "{}",
        after.cache_status()
    );
}

#[tokio::test]
async fn the_admin_api_purges_by_url_prefix_and_surrogate_key() {
    let s = start("enabled = true", "").await;
    for id in 1..=3 {
        get(&s, &format!("/products/{id}"), &[]).await;
    }
    get(&s, &format!("{CC}?value=max-age%3D60"), &[]).await;
    let (st, body) = admin_post(
        &s,
        "/admin/cache/purge",
        r#"{"url": "http://shop.test/products/1"}"#,
    )
    .await;
    assert_eq!((st, body.trim()), (StatusCode::OK, r#"{"purged":1}"#));
    assert!(get(&s, "/products/1", &[])
        .await
        .cache_status()
        .contains("fwd=uri-miss"));
    let (_, body) = admin_post(&s, "/admin/cache/purge", r#"{"surrogate_key": "products"}"#).await;
    assert_eq!(body.trim(), r#"{"purged":3}"#);
    assert!(get(&s, "/products/2", &[])
        .await
        .cache_status()
        .contains("fwd=uri-miss"));
    assert!(get(&s, &format!("{CC}?value=max-age%3D60"), &[])
        .await
        .cache_status()
        .contains("hit"));
    let (_, body) = admin_post(
        &s,
        "/admin/cache/purge",
        r#"{"prefix": "http://shop.test/__shop/"}"#,
    )
    .await;
    assert_eq!(body.trim(), r#"{"purged":1}"#);
    assert!(get(&s, &format!("{CC}?value=max-age%3D60"), &[])
        .await
        .cache_status()
        .contains("fwd=uri-miss"));
    let (st, _) = admin_post(&s, "/admin/cache/purge", r#"{"url": "a", "prefix": "b"}"#).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn a_body_larger_than_max_object_size_streams_through_uncached() {
    let s = start(r#"max_object_size = "64KiB""#, "").await;
    let path = "/__shop/cache/big?bytes=200000";
    let a = get(&s, path, &[]).await;
    assert_eq!(a.body.len(), 200_000);
    let b = get(&s, path, &[]).await;
    assert_eq!(b.body.len(), 200_000);
    assert!(!b.cache_status().contains("hit;"), "{}", b.cache_status());
    assert_eq!(s.shop.stats.path_count("/__shop/cache/big"), 2);
    let small = "/__shop/cache/big?bytes=1000";
    get(&s, small, &[]).await;
    assert!(get(&s, small, &[]).await.cache_status().contains("hit"));
}

#[tokio::test]
async fn force_ttl_caches_a_site_that_sends_no_cache() {
    let s = start(r#"force_ttl = "30s""#, "").await;
    let path = format!("{CC}?value=no-cache");
    get(&s, &path, &[]).await;
    let b = get(&s, &path, &[]).await;
    assert!(b.cache_status().contains("hit"), "{}", b.cache_status());
    assert_eq!(b.body, "n=1");
}

#[tokio::test]
async fn cache_config_errors_name_their_key() {
    let text = r#"
[cache]
capacity = "lots"
[[upstream]]
name = "shop"
servers = ["127.0.0.1:1"]
[[route]]
name = "shop"
upstream = "shop"
cache = { default_ttl = "soon" }
"#;
    let errs = config::parse(text).unwrap_err();
    let keys: Vec<&str> = errs.iter().map(|e| e.key.as_str()).collect();
    assert!(
        keys.contains(&"cache.capacity") && keys.contains(&"route[0].cache.default_ttl"),
        "{errs:?}"
    );
    let unknown =
        config::parse("[[route]]\nname = \"a\"\nupstream = \"x\"\ncache = { ttl = \"1s\" }\n")
            .unwrap_err();
    // Reported beside the file's other problems (here the unknown upstream).
    assert!(
        unknown.iter().any(|e| e.key == "route[0].cache.ttl"),
        "{unknown:?}"
    );
}

// === A scripted origin ===
//
// The shop's pages cover the common cases; the rules below need an origin that answers
// exactly as a test says, and that records every request it receives.

/// One request as the origin received it.
#[derive(Debug, Clone)]
struct Seen {
    uri: String,
    headers: HeaderMap,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

type Reply = Response<Full<Bytes>>;

/// An origin on loopback that answers `(n, request)` with `answer`, `n` counting its
/// requests from 1.
struct Origin {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Origin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Origin {
    async fn start(answer: impl Fn(usize, &Seen) -> Reply + Send + Sync + 'static) -> Origin {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let answer = Arc::new(answer);
        let log = seen.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (log, answer) = (log.clone(), answer.clone());
                tokio::spawn(async move {
                    let svc = service_fn(move |req: Request<Incoming>| {
                        let s = Seen {
                            uri: req.uri().to_string(),
                            headers: req.headers().clone(),
                        };
                        let n = {
                            let mut l = log.lock().unwrap();
                            l.push(s.clone());
                            l.len()
                        };
                        let r = answer(n, &s);
                        async move { Ok::<_, Infallible>(r) }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Origin { addr, seen, task }
    }

    /// Requests received so far.
    fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    /// The `i`th request received (from 0).
    fn request(&self, i: usize) -> Seen {
        self.seen.lock().unwrap()[i].clone()
    }
}

/// A response with `status`, `headers` and `body`.
fn reply(status: u16, headers: &[(&str, &str)], body: impl Into<Bytes>) -> Reply {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = StatusCode::from_u16(status).unwrap();
    for (k, v) in headers {
        r.headers_mut().append(
            http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            v.parse().unwrap(),
        );
    }
    r
}

/// A gateway with one cached route in front of a scripted origin.
struct Site {
    gw: Gateway,
    origin: Origin,
    client: HttpClient,
}

impl Site {
    async fn new(origin: Origin, route_cache: &str, global: &str) -> Site {
        let (gw, client) = gateway(origin.addr, route_cache, global).await;
        Site { gw, origin, client }
    }

    async fn get(&self, path: &str, headers: &[(&str, &str)]) -> Answer {
        send(&self.client, self.gw.addr(), Method::GET, path, headers).await
    }
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    fn age(&self) -> Option<u64> {
        self.header("age").and_then(|v| v.parse().ok())
    }
}

// === Defaults that never share what is personal ===

#[tokio::test]
async fn a_page_without_cache_headers_is_not_cached_by_default() {
    let o = Origin::start(|n, _| reply(200, &[], format!("n={n}"))).await;
    let s = Site::new(o, "enabled = true", "").await;
    let a = s.get("/page", &[]).await;
    let b = s.get("/page", &[]).await;
    assert_eq!((a.status, a.body.as_str()), (StatusCode::OK, "n=1"));
    assert_eq!((b.status, b.body.as_str()), (StatusCode::OK, "n=2"));
    assert!(!a.cache_status().contains("stored"), "{}", a.cache_status());
    assert!(b.cache_status().contains("fwd="), "{}", b.cache_status());
    assert_eq!(b.age(), None, "not served from a stored copy");
    assert_eq!(s.origin.count(), 2, "every request reached the origin");
}

#[tokio::test]
async fn with_default_ttl_set_a_page_without_cache_headers_is_cached_for_that_long() {
    let o = Origin::start(|n, _| reply(200, &[], format!("n={n}"))).await;
    let s = Site::new(o, r#"default_ttl = "30s""#, "").await;
    let a = s.get("/page", &[]).await;
    assert_eq!(a.cache_status(), "floodgate; fwd=uri-miss; stored");
    let b = s.get("/page", &[]).await;
    assert_eq!(b.body, "n=1");
    assert!(
        b.cache_status().starts_with("floodgate; hit; ttl=2"),
        "{}",
        b.cache_status()
    );
    assert_eq!(b.age(), Some(0));
    assert_eq!(s.origin.count(), 1);
}

#[tokio::test]
async fn a_personalised_page_without_cache_headers_requested_with_a_cookie_is_never_served_to_another_shopper(
) {
    // The shop greets each shopper by the cookie it sends, and says nothing about caching.
    let o = Origin::start(|_, req| {
        let who = req.header("cookie").unwrap_or("guest").to_string();
        reply(200, &[], format!("hello {who}"))
    })
    .await;
    let s = Site::new(o, r#"default_ttl = "30s""#, "").await;
    let alice = s.get("/account", &[("cookie", "session=alice")]).await;
    assert_eq!(alice.body, "hello session=alice");
    assert!(
        !alice.cache_status().contains("stored"),
        "{}",
        alice.cache_status()
    );
    let bob = s.get("/account", &[("cookie", "session=bob")]).await;
    assert_eq!(bob.body, "hello session=bob");
    let guest = s.get("/account", &[]).await;
    assert_eq!(guest.body, "hello guest");
    assert!(
        guest.cache_status().contains("stored"),
        "{}",
        guest.cache_status()
    );
    // The anonymous copy is not an answer for a shopper with a session either.
    let bob_again = s.get("/account", &[("cookie", "session=bob")]).await;
    assert_eq!(bob_again.body, "hello session=bob");
    assert_eq!(bob_again.age(), None);
    let guest2 = s.get("/account", &[]).await;
    assert_eq!(guest2.body, "hello guest");
    assert!(
        guest2.cache_status().contains("hit"),
        "{}",
        guest2.cache_status()
    );
    assert_eq!(s.origin.count(), 4);
    assert_eq!(s.origin.request(0).header("cookie"), Some("session=alice"));
    assert_eq!(s.origin.request(1).header("cookie"), Some("session=bob"));
    assert_eq!(s.origin.request(2).header("cookie"), None);
    assert_eq!(s.origin.request(3).header("cookie"), Some("session=bob"));
}

#[tokio::test]
async fn a_response_the_origin_marks_shareable_is_stored_even_for_a_request_with_a_cookie() {
    let o = Origin::start(|n, req| {
        let cc = if req.uri.starts_with("/max-age") {
            "max-age=60"
        } else {
            "public"
        };
        let mut h = vec![("cache-control", cc)];
        if req.uri.contains("cookie") {
            h.push(("set-cookie", "seen=1"));
        }
        reply(200, &h, format!("n={n}"))
    })
    .await;
    let s = Site::new(o, r#"default_ttl = "30s", strip_set_cookie = true"#, "").await;
    let cookie = [("cookie", "session=alice")];
    // max-age, no Set-Cookie: shareable, stored, and served to the next shopper.
    s.get("/max-age", &cookie).await;
    let b = s.get("/max-age", &[("cookie", "session=bob")]).await;
    assert_eq!(b.body, "n=1");
    assert!(b.cache_status().contains("hit"), "{}", b.cache_status());
    // public (heuristic freshness from default_ttl): shareable too.
    s.get("/public", &cookie).await;
    let b = s.get("/public", &[]).await;
    assert_eq!(b.body, "n=2");
    assert!(b.cache_status().contains("hit"), "{}", b.cache_status());
    // max-age with a Set-Cookie for this shopper: not explicitly shareable.
    let a = s.get("/max-age-cookie", &cookie).await;
    assert_eq!(a.header("set-cookie"), Some("seen=1"));
    let b = s.get("/max-age-cookie", &[]).await;
    assert_eq!(b.body, "n=4");
    assert_eq!(b.age(), None);
    assert_eq!(s.origin.count(), 4);
}

#[tokio::test]
async fn ignored_cookies_do_not_make_a_request_personal() {
    let o = Origin::start(|n, _| reply(200, &[], format!("n={n}"))).await;
    let s = Site::new(
        o,
        r#"default_ttl = "30s", ignore_cookies = ["_ga", "_gid*"]"#,
        "",
    )
    .await;
    let a = s.get("/page", &[("cookie", "_ga=GA1.1; _gid_x=abc")]).await;
    assert!(a.cache_status().contains("stored"), "{}", a.cache_status());
    let b = s.get("/page", &[("cookie", "_ga=GA1.2")]).await;
    assert_eq!(b.body, "n=1");
    assert!(b.cache_status().contains("hit"), "{}", b.cache_status());
    // One cookie that is not ignored makes it personal again.
    let c = s
        .get("/page", &[("cookie", "_ga=GA1.3; session=bob")])
        .await;
    assert_eq!(c.body, "n=2");
    assert_eq!(c.age(), None);
    assert_eq!(s.origin.count(), 2);
    // Ignored for the decision only: the origin still receives them.
    assert_eq!(
        s.origin.request(0).header("cookie"),
        Some("_ga=GA1.1; _gid_x=abc")
    );
}

#[tokio::test]
async fn ignore_cookies_rejects_a_name_with_a_star_in_the_middle() {
    let text = r#"
[[upstream]]
name = "shop"
servers = ["127.0.0.1:1"]
[[route]]
name = "shop"
upstream = "shop"
cache = { ignore_cookies = ["_g*a"] }
"#;
    let errs = config::parse(text).unwrap_err();
    assert!(
        errs.iter()
            .any(|e| e.key == "route[0].cache.ignore_cookies[0]"),
        "{errs:?}"
    );
}

// === Stale only with permission ===

#[tokio::test]
async fn a_stale_page_is_not_served_past_its_freshness_without_permission() {
    let o = Origin::start(|n, _| {
        if n == 1 {
            reply(200, &[("cache-control", "max-age=1")], "n=1")
        } else {
            // 500, which the upstream does not retry, keeps the origin's count exact.
            reply(500, &[], format!("n={n} failing"))
        }
    })
    .await;
    let s = Site::new(o, "enabled = true", "").await;
    assert_eq!(s.get("/p", &[]).await.body, "n=1");
    let hit = s.get("/p", &[]).await;
    assert!(hit.cache_status().contains("hit"), "{}", hit.cache_status());
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let b = s.get("/p", &[]).await;
    assert_eq!(b.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(b.body, "n=2 failing");
    assert!(!b.cache_status().contains("stale"), "{}", b.cache_status());
    assert_eq!(s.origin.count(), 2);
}

#[tokio::test]
async fn stale_if_error_from_the_origin_lets_a_stale_copy_answer_for_a_failing_origin() {
    let o = Origin::start(|n, _| {
        if n == 1 {
            reply(
                200,
                &[("cache-control", "max-age=1, stale-if-error=60")],
                "n=1",
            )
        } else {
            reply(500, &[], format!("n={n} failing"))
        }
    })
    .await;
    let s = Site::new(o, "enabled = true", "").await;
    s.get("/p", &[]).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let b = s.get("/p", &[]).await;
    assert_eq!((b.status, b.body.as_str()), (StatusCode::OK, "n=1"));
    assert!(
        b.cache_status()
            .starts_with("floodgate; fwd=stale; fwd-status=500"),
        "{}",
        b.cache_status()
    );
    assert!(b.age().unwrap() >= 1);
    assert_eq!(s.origin.count(), 2);
}

#[tokio::test]
async fn a_501_from_the_origin_is_not_an_error_a_stale_copy_may_hide() {
    // RFC 5861 §4: only 500, 502, 503 and 504 are errors for stale-if-error.
    let o = Origin::start(|n, _| {
        if n == 1 {
            reply(
                200,
                &[("cache-control", "max-age=1, stale-if-error=60")],
                "n=1",
            )
        } else {
            reply(501, &[], "not implemented")
        }
    })
    .await;
    let s = Site::new(o, "enabled = true", "").await;
    s.get("/p", &[]).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let b = s.get("/p", &[]).await;
    assert_eq!(b.status, StatusCode::NOT_IMPLEMENTED);
    assert_eq!(b.body, "not implemented");
    assert_eq!(s.origin.count(), 2);
}

// === Statuses ===

#[tokio::test]
async fn error_statuses_are_never_cached_heuristically() {
    let o = Origin::start(|n, req| {
        let status = if req.uri.starts_with("/missing") {
            404
        } else {
            500
        };
        let mut h = vec![];
        if req.uri.contains("public") {
            h.push(("cache-control", "public"));
        }
        reply(status, &h, format!("n={n}"))
    })
    .await;
    let s = Site::new(o, r#"default_ttl = "30s""#, "").await;
    for path in ["/missing", "/missing?public", "/broken?public"] {
        let a = s.get(path, &[]).await;
        let b = s.get(path, &[]).await;
        assert!(a.status.is_client_error() || a.status.is_server_error());
        assert_ne!(
            a.body, b.body,
            "{path}: the second came from the origin too"
        );
        assert!(!a.cache_status().contains("stored"), "{}", a.cache_status());
        assert_eq!(b.age(), None);
    }
    assert_eq!(s.origin.count(), 6);
}

#[tokio::test]
async fn an_error_status_with_explicit_freshness_is_cached_as_the_origin_says() {
    let o = Origin::start(|n, _| reply(404, &[("cache-control", "max-age=60")], format!("n={n}")))
        .await;
    let s = Site::new(o, "enabled = true", "").await;
    s.get("/gone", &[]).await;
    let b = s.get("/gone", &[]).await;
    assert_eq!((b.status, b.body.as_str()), (StatusCode::NOT_FOUND, "n=1"));
    assert!(b.cache_status().contains("hit"), "{}", b.cache_status());
    assert_eq!(s.origin.count(), 1);
}

/// An origin that answers every request on a connection with `103 Early Hints`, then
/// `200` with `max-age=60` and a body `n=N`.
async fn early_hints_origin() -> (SocketAddr, Arc<AtomicUsize>, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let count = Arc::new(AtomicUsize::new(0));
    let c = count.clone();
    let task = tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let c = c.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        buf.drain(..end + 4);
                        let n = c.fetch_add(1, Ordering::SeqCst) + 1;
                        let body = format!("n={n}");
                        let wire = format!(
                            "HTTP/1.1 103 Early Hints\r\nlink: </app.css>; rel=preload\r\ncache-control: max-age=600\r\n\r\n\
                             HTTP/1.1 200 OK\r\ncache-control: max-age=60\r\ncontent-length: {}\r\n\r\n{body}",
                            body.len()
                        );
                        if stream.write_all(wire.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                    match stream.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(k) => buf.extend_from_slice(&chunk[..k]),
                    }
                }
            });
        }
    });
    (addr, count, task)
}

#[tokio::test]
async fn an_early_hints_103_then_a_200_stores_only_the_200() {
    let (addr, count, task) = early_hints_origin().await;
    let (gw, client) = gateway(addr, "enabled = true", "").await;
    let a = send(&client, gw.addr(), Method::GET, "/hinted", &[]).await;
    assert_eq!((a.status, a.body.as_str()), (StatusCode::OK, "n=1"));
    assert_eq!(a.cache_status(), "floodgate; fwd=uri-miss; stored");
    let b = send(&client, gw.addr(), Method::GET, "/hinted", &[]).await;
    assert_eq!((b.status, b.body.as_str()), (StatusCode::OK, "n=1"));
    assert!(
        b.cache_status().starts_with("floodgate; hit; ttl=5"),
        "the 200's freshness, not the 103's: {}",
        b.cache_status()
    );
    assert!(b.headers.get("link").is_none(), "nothing of the 103 stored");
    assert_eq!(count.load(Ordering::SeqCst), 1);
    task.abort();
}

// === Revalidation ===

#[tokio::test]
async fn a_304_from_the_origin_updates_the_stored_headers() {
    let o = Origin::start(|n, req| {
        if n > 1 && req.header("if-none-match") == Some("\"v1\"") {
            return reply(
                304,
                &[
                    ("etag", "\"v1\""),
                    ("cache-control", "max-age=60"),
                    ("x-price", "9.99"),
                ],
                Bytes::new(),
            );
        }
        reply(
            200,
            &[
                ("etag", "\"v1\""),
                ("cache-control", "max-age=1"),
                ("x-price", "19.99"),
            ],
            format!("n={n}"),
        )
    })
    .await;
    let s = Site::new(o, "enabled = true", "").await;
    let a = s.get("/p", &[]).await;
    assert_eq!(a.header("x-price"), Some("19.99"));
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let b = s.get("/p", &[]).await;
    assert_eq!((b.status, b.body.as_str()), (StatusCode::OK, "n=1"));
    assert!(
        b.cache_status()
            .starts_with("floodgate; fwd=stale; fwd-status=304"),
        "{}",
        b.cache_status()
    );
    assert_eq!(b.header("x-price"), Some("9.99"));
    let c = s.get("/p", &[]).await;
    assert_eq!(c.body, "n=1");
    assert_eq!(c.header("x-price"), Some("9.99"));
    assert_eq!(c.header("cache-control"), Some("max-age=60"));
    assert!(
        c.cache_status().starts_with("floodgate; hit; ttl=5"),
        "fresh for the 304's max-age: {}",
        c.cache_status()
    );
    assert!(c.age().unwrap() <= 2);
    assert_eq!(s.origin.count(), 2);
    assert_eq!(s.origin.request(1).header("if-none-match"), Some("\"v1\""));
}

// === Targeted cache control (RFC 9213) ===

#[tokio::test]
async fn cdn_cache_control_wins_over_cache_control_and_is_forwarded() {
    let o = Origin::start(|n, req| {
        let h: &[(&str, &str)] = if req.uri.starts_with("/cdn-stores") {
            &[
                ("cache-control", "no-store"),
                ("cdn-cache-control", "max-age=60"),
            ]
        } else {
            &[
                ("cache-control", "max-age=60"),
                ("cdn-cache-control", "no-store"),
            ]
        };
        reply(200, h, format!("n={n}"))
    })
    .await;
    let s = Site::new(o, "enabled = true", "").await;
    s.get("/cdn-stores", &[]).await;
    let b = s.get("/cdn-stores", &[]).await;
    assert_eq!(b.body, "n=1");
    assert!(b.cache_status().contains("hit"), "{}", b.cache_status());
    // Browsers still get the origin's Cache-Control; a CDN below us gets its field.
    assert_eq!(b.header("cache-control"), Some("no-store"));
    assert_eq!(b.header("cdn-cache-control"), Some("max-age=60"));
    s.get("/cdn-refuses", &[]).await;
    let d = s.get("/cdn-refuses", &[]).await;
    assert_eq!(d.body, "n=3");
    assert_eq!(d.age(), None);
    assert_eq!(s.origin.count(), 3);
}

#[tokio::test]
async fn floodgates_own_targeted_field_wins_over_cdn_cache_control_and_is_not_forwarded() {
    let o = Origin::start(|n, req| {
        let mut h = vec![
            ("cache-control", "no-store"),
            ("cdn-cache-control", "no-store"),
        ];
        if req.uri.starts_with("/renamed") {
            h.push(("portal-cache-control", "max-age=60"));
        } else if req.uri.starts_with("/invalid") {
            // Not a structured-field dictionary: ignored, the next field applies.
            h.push(("floodgate-cache-control", "max-age=60,,"));
        } else {
            h.push(("floodgate-cache-control", "max-age=60"));
        }
        reply(200, &h, format!("n={n}"))
    })
    .await;
    let s = Site::new(o, "enabled = true", "").await;
    s.get("/own", &[]).await;
    let b = s.get("/own", &[]).await;
    assert_eq!(b.body, "n=1");
    assert!(b.cache_status().contains("hit"), "{}", b.cache_status());
    assert_eq!(b.header("floodgate-cache-control"), None);
    assert_eq!(b.header("cdn-cache-control"), Some("no-store"));
    s.get("/invalid", &[]).await;
    assert_eq!(s.get("/invalid", &[]).await.body, "n=3");
    assert_eq!(s.origin.count(), 3);

    // The field's name is configurable.
    let o = Origin::start(|n, req| {
        let mut h = vec![("cache-control", "no-store")];
        if req.uri.starts_with("/renamed") {
            h.push(("portal-cache-control", "max-age=60"));
        }
        reply(200, &h, format!("n={n}"))
    })
    .await;
    let s = Site::new(
        o,
        "enabled = true",
        "[cache]\ntargeted_field = \"Portal-Cache-Control\"",
    )
    .await;
    s.get("/renamed", &[]).await;
    let b = s.get("/renamed", &[]).await;
    assert_eq!(b.body, "n=1");
    assert_eq!(b.header("portal-cache-control"), None);
    assert_eq!(s.origin.count(), 1);
}

// === What a stored copy holds ===

#[tokio::test]
async fn the_origins_waiting_room_signal_is_never_stored_in_a_cached_copy() {
    let o = Origin::start(|n, _| {
        reply(
            200,
            &[
                ("cache-control", "max-age=60"),
                ("x-floodgate-session", "end"),
            ],
            format!("order confirmed n={n}"),
        )
    })
    .await;
    let s = Site::new(o, "enabled = true", "").await;
    let a = s.get("/confirmation", &[]).await;
    assert_eq!(a.cache_status(), "floodgate; fwd=uri-miss; stored");
    assert_eq!(
        a.header("x-floodgate-session"),
        Some("end"),
        "the shopper whose request reached the origin gets its signal"
    );
    let b = s.get("/confirmation", &[]).await;
    assert!(b.cache_status().contains("hit"), "{}", b.cache_status());
    assert_eq!(b.body, "order confirmed n=1");
    assert_eq!(b.header("x-floodgate-session"), None);
    assert_eq!(s.origin.count(), 1);
}

#[tokio::test]
async fn http_and_https_copies_of_a_page_never_mix() {
    use floodgate::context::RequestContext;
    use floodgate::metrics::Metrics;
    use floodgate::proxy::Compiled;
    use tower::Service;

    let o = Origin::start(|n, _| reply(200, &[("cache-control", "max-age=60")], format!("n={n}")))
        .await;
    let text = format!(
        "[[upstream]]\nname = \"shop\"\nservers = [\"{}\"]\n[[route]]\nname = \"shop\"\nupstream = \"shop\"\ncache = {{ enabled = true }}\n",
        o.addr
    );
    let compiled = Compiled::build(config::parse(&text).unwrap(), &Metrics::new(), None);
    // What the front handler marks on each request; a TLS listener says "https".
    let call = |scheme: &'static str| {
        let mut svc = compiled.routes[0].service.clone();
        let mut req = Request::get("/page")
            .header("host", "shop.test")
            .body(floodgate::body::empty())
            .unwrap();
        req.extensions_mut().insert(RequestContext {
            client_ip: "127.0.0.1".parse().unwrap(),
            peer: "127.0.0.1:1".parse().unwrap(),
            request_id: http::HeaderValue::from_static("t"),
            started: Instant::now(),
            scheme,
            route: "shop".into(),
        });
        async move {
            let r = svc.call(req).await.unwrap();
            let cs = r.headers()["cache-status"].to_str().unwrap().to_string();
            let body = r.into_body().collect().await.unwrap().to_bytes();
            (cs, String::from_utf8_lossy(&body).into_owned())
        }
    };
    let (cs, body) = call("https").await;
    assert_eq!(
        (cs.as_str(), body.as_str()),
        ("floodgate; fwd=uri-miss; stored", "n=1")
    );
    let (cs, body) = call("http").await;
    assert_eq!(
        (cs.as_str(), body.as_str()),
        ("floodgate; fwd=uri-miss; stored", "n=2"),
        "the https copy is not an answer for http"
    );
    let (cs, body) = call("https").await;
    assert!(cs.starts_with("floodgate; hit"), "{cs}");
    assert_eq!(body, "n=1");
    assert_eq!(o.count(), 2);
}

// === Memory ===

#[tokio::test]
async fn the_cache_stays_within_capacity_with_many_vary_variants_and_hit_for_miss_markers() {
    const CAPACITY: u64 = 256 * 1024;
    const VALUE: usize = 2000;
    let o = Origin::start(|_, req| {
        if req.uri.starts_with("/nostore") {
            reply(200, &[("cache-control", "no-store")], "x")
        } else {
            reply(
                200,
                &[("cache-control", "max-age=60"), ("vary", "x-variant")],
                "x",
            )
        }
    })
    .await;
    let s = Site::new(
        o,
        "enabled = true",
        "[cache]\ncapacity = \"256KiB\"\nmax_object_size = \"8KiB\"",
    )
    .await;
    // 40 URLs, each with 8 variants whose Vary value alone is 2000 bytes: 640 KB of
    // request values to keep, far past capacity.
    for url in 0..40 {
        for v in 0..8 {
            let value = format!("{url}-{v}-{}", "a".repeat(VALUE));
            s.get(&format!("/v/{url}"), &[("x-variant", &value)]).await;
        }
    }
    // 200 uncacheable URLs of 2000 bytes each: their hit-for-miss markers hold the keys.
    let pad = "p".repeat(VALUE);
    for url in 0..200 {
        let a = s.get(&format!("/nostore/{url}?{pad}"), &[]).await;
        assert_eq!(a.status, StatusCode::OK);
    }
    assert_eq!(s.origin.count(), 320 + 200);
    // Eviction is lazy (moka#408): poll until the once-a-second sweep has run.
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        let m = metrics_of(&s).await;
        let size = sample(&m, "floodgate_cache_size_bytes");
        let urls = sample(&m, "floodgate_cache_entries");
        let markers = sample(&m, "floodgate_cache_hit_for_miss_entries");
        // What is really held: each URL's 8 Vary values, each marker's key.
        let held = urls * (8 * VALUE) as u64 + markers * VALUE as u64;
        if size <= CAPACITY && held <= CAPACITY && size >= held && urls > 0 {
            break;
        }
        assert!(
            Instant::now() < end,
            "size={size} urls={urls} markers={markers} held={held} capacity={CAPACITY}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// One unlabelled sample of the metrics text.
fn sample(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .unwrap_or_else(|| panic!("{name} missing")) as u64
}

/// The admin listener's `/metrics` text.
async fn metrics_of(s: &Site) -> String {
    let req = Request::get(format!("http://{}/metrics", s.gw.admin_addr.unwrap()))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = s.client.request(req).await.unwrap();
    String::from_utf8_lossy(&resp.into_body().collect().await.unwrap().to_bytes()).into_owned()
}
