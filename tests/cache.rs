//! The shared HTTP cache, end to end: gateway and simulated shop on loopback.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use floodgate::config;
use floodgate::gateway::Gateway;
use floodgate::shop::{self, ShopHandle, ShopProfile};
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

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
servers = ["{}"]
[[route]]
name = "shop"
upstream = "shop"
cache = {{ {route_cache} }}
"#,
        shop.addr
    );
    let cfg = config::parse(&text).unwrap_or_else(|e| panic!("config: {e:?}"));
    let gw = Gateway::start(cfg).await.unwrap();
    let client = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(64)
        .build_http();
    Setup { gw, shop, client }
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
    let s = start(r#"stale_while_revalidate = "0s""#, "").await;
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
