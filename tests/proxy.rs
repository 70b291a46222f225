//! Transparency: what crosses the gateway, what is added, what never crosses.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use http::Request;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;

#[tokio::test]
async fn a_get_reaches_the_origin_and_comes_back_intact() {
    let shop = fast_shop().await;
    let gw = gateway_for(&shop).await;
    let direct = get(shop.addr, "/products/7").await;
    let through = get(gw.addr(), "/products/7").await;
    assert_eq!(through.status, 200);
    assert_eq!(through.body, direct.body);
    assert_eq!(through.header("etag"), Some("\"product-7-v1\""));
    assert_eq!(through.header("via"), Some("1.1 floodgate"));
    assert_eq!(through.header("x-request-id").map(str::len), Some(32));
}

#[tokio::test]
async fn a_posted_body_streams_to_the_origin_before_the_client_finishes_it() {
    let shop = fast_shop().await;
    // Bodies are buffered whole by default; a route taking uploads turns that off.
    let gw = gateway(&config_text(
        shop.addr,
        "[[route]]\nname = \"shop\"\nupstream = \"shop\"\nrequest_buffering = false\n",
    ))
    .await;
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, std::convert::Infallible>>(4);
    let body = StreamBody::new(futures_util::stream::poll_fn({
        let mut rx = rx;
        move |cx| rx.poll_recv(cx)
    }));
    let req = Request::post(format!("http://{}/__shop/upload", gw.addr()))
        .body(body)
        .unwrap();
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http();
    let pending = tokio::spawn(async move { client.request(req).await });

    let first = Bytes::from(vec![b'a'; 10_000]);
    let second = Bytes::from(vec![b'b'; 50_000]);
    tx.send(Ok(Frame::data(first.clone()))).await.unwrap();
    // The origin must see the first part while the client still holds the rest: a
    // gateway that buffered whole bodies would never get here.
    let stats = shop.stats.clone();
    eventually(
        "the origin received the first chunk",
        Duration::from_secs(5),
        || {
            let s = stats.clone();
            async move { s.upload_bytes.load(std::sync::atomic::Ordering::SeqCst) >= 10_000 }
        },
    )
    .await;
    tx.send(Ok(Frame::data(second.clone()))).await.unwrap();
    drop(tx);

    let resp = pending.await.unwrap().expect("response");
    assert_eq!(resp.status(), 200);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let mut all = first.to_vec();
    all.extend_from_slice(&second);
    assert_eq!(v["body_len"], 60_000);
    assert_eq!(v["body_sha"], floodgate::shop::fnv(&all));
}

#[tokio::test]
async fn a_streamed_response_reaches_the_client_before_the_origin_finishes_it() {
    let shop = fast_shop().await;
    let gw = gateway_for(&shop).await;
    let resp = client()
        .request(
            Request::get(format!(
                "http://{}/__shop/stream?chunks=3&ms=300",
                gw.addr()
            ))
            .body(Full::default())
            .unwrap(),
        )
        .await
        .unwrap();
    let mut body = resp.into_body();
    let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert_eq!(&first[..], b"chunk 0\n");
    assert_eq!(
        shop.stats
            .streams_done
            .load(std::sync::atomic::Ordering::SeqCst),
        0,
        "the first chunk arrived only after the origin had sent everything"
    );
    let rest = body.collect().await.unwrap().to_bytes();
    assert_eq!(&rest[..], b"chunk 1\nchunk 2\n");
}

#[tokio::test]
async fn hop_by_hop_and_connection_named_headers_never_cross_either_way() {
    let shop = fast_shop().await;
    let gw = gateway_for(&shop).await;
    let req = Request::get(format!("http://{}/__shop/echo", gw.addr()))
        .header("connection", "x-client-secret")
        .header("x-client-secret", "hunter2")
        .header("keep-alive", "timeout=99")
        .header("proxy-connection", "keep-alive")
        .header("te", "trailers")
        .header("x-normal", "kept")
        .body(Full::default())
        .unwrap();
    let a = send(req).await;
    assert_eq!(a.status, 200);
    let seen: Vec<String> = a.json()["headers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p[0].as_str().unwrap().to_string())
        .collect();
    for h in ["x-client-secret", "keep-alive", "proxy-connection", "te"] {
        assert!(
            !seen.contains(&h.to_string()),
            "{h} reached the origin: {seen:?}"
        );
    }
    assert!(seen.contains(&"x-normal".to_string()));
    // The echo endpoint answers with `Connection: x-origin-private` and that header.
    assert_eq!(
        a.header("x-origin-private"),
        None,
        "origin's connection-named header reached the client"
    );
    assert_eq!(a.header("keep-alive"), None);
}

fn echoed(a: &Answer, name: &str) -> Option<String> {
    a.json()["headers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p[0] == name)
        .map(|p| p[1].as_str().unwrap().to_string())
}

#[tokio::test]
async fn x_forwarded_for_from_an_untrusted_peer_is_replaced_by_the_peer() {
    let shop = fast_shop().await;
    let gw = gateway_for(&shop).await;
    let req = Request::get(format!("http://{}/__shop/echo", gw.addr()))
        .header("x-forwarded-for", "6.6.6.6")
        .header("x-forwarded-proto", "https")
        .body(Full::default())
        .unwrap();
    let a = send(req).await;
    // An origin that reads the left-most entry as the client must not read the
    // client's own claim: from an untrusted peer the list starts at the peer.
    assert_eq!(echoed(&a, "x-forwarded-for").as_deref(), Some("127.0.0.1"));
    assert_eq!(echoed(&a, "x-real-ip").as_deref(), Some("127.0.0.1"));
    // An untrusted peer cannot claim the original request was HTTPS.
    assert_eq!(echoed(&a, "x-forwarded-proto").as_deref(), Some("http"));
    assert_eq!(echoed(&a, "x-forwarded-host"), Some(gw.addr().to_string()));
    assert_eq!(echoed(&a, "via").as_deref(), Some("1.1 floodgate"));
}

#[tokio::test]
async fn a_trusted_proxys_forwarded_headers_are_honoured() {
    let shop = fast_shop().await;
    let text = config_text(
        shop.addr,
        "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\ntrusted_proxies = [\"127.0.0.1\"]\n",
    );
    let gw = gateway(&text).await;
    let req = Request::get(format!("http://{}/__shop/echo", gw.addr()))
        .header("x-forwarded-for", "203.0.113.9")
        .header("x-forwarded-proto", "https")
        .header("x-request-id", "from-the-edge-1")
        .body(Full::default())
        .unwrap();
    let a = send(req).await;
    assert_eq!(
        echoed(&a, "x-forwarded-for").as_deref(),
        Some("203.0.113.9, 127.0.0.1")
    );
    assert_eq!(echoed(&a, "x-forwarded-proto").as_deref(), Some("https"));
    assert_eq!(
        echoed(&a, "x-request-id").as_deref(),
        Some("from-the-edge-1")
    );
    assert_eq!(a.header("x-request-id"), Some("from-the-edge-1"));
}

#[tokio::test]
async fn http2_cleartext_with_prior_knowledge_is_served_on_the_same_listener() {
    let shop = fast_shop().await;
    let gw = gateway_for(&shop).await;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .build_http::<Full<Bytes>>();
    let resp = client
        .request(
            Request::get(format!("http://{}/__shop/echo", gw.addr()))
                .body(Full::default())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.version(), http::Version::HTTP_2);
    assert_eq!(resp.headers()["via"], "2 floodgate");
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    // The origin gets HTTP/1.1 with a Host taken from :authority.
    assert_eq!(v["version"], "HTTP/1.1");
    let host = v["headers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p[0] == "host")
        .unwrap()[1]
        .clone();
    assert_eq!(host, gw.addr().to_string());
}

#[tokio::test]
async fn requests_and_statuses_are_counted_by_route_in_metrics() {
    let shop = fast_shop().await;
    let gw = gateway_for(&shop).await;
    for _ in 0..3 {
        assert_eq!(get(gw.addr(), "/fast").await.status, 200);
    }
    assert_eq!(get(gw.addr(), "/no-such-page").await.status, 404);
    let m = metrics_text(&gw).await;
    assert_eq!(
        metric(
            &m,
            "floodgate_requests_total{route=\"shop\",status_class=\"2xx\"}"
        ),
        Some(3.0)
    );
    assert_eq!(
        metric(
            &m,
            "floodgate_requests_total{route=\"shop\",status_class=\"4xx\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        metric(&m, "floodgate_upstream_requests_total{upstream=\"shop\"}"),
        Some(4.0)
    );
    assert_eq!(
        metric(
            &m,
            "floodgate_request_duration_seconds_count{route=\"shop\"}"
        ),
        Some(4.0)
    );
    assert!(m.contains("floodgate_connections_open"));
    let health = get(gw.admin_addr.unwrap(), "/readyz").await;
    assert_eq!(health.status, 200);
}
