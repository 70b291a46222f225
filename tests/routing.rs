//! Routing: hosts (exact, wildcard, any), longest prefix, 404 when nothing matches.

mod common;

use bytes::Bytes;
use common::*;
use http::Request;
use http_body_util::Full;

async fn get_host(addr: std::net::SocketAddr, host: &str, path: &str) -> Answer {
    send(
        Request::get(format!("http://{addr}{path}"))
            .header("host", host)
            .body(Full::<Bytes>::default())
            .unwrap(),
    )
    .await
}

#[tokio::test]
async fn requests_go_to_the_route_of_their_host_and_longest_prefix() {
    let a = fast_shop().await;
    let b = fast_shop().await;
    let text = format!(
        r#"
[server]
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"

[[upstream]]
name = "a"
servers = ["{a}"]

[[upstream]]
name = "b"
servers = ["{b}"]

[[route]]
name = "shop-a"
hosts = ["a.example.com"]
upstream = "a"

[[route]]
name = "shop-a-checkout"
hosts = ["a.example.com"]
path_prefix = "/checkout"
upstream = "b"

[[route]]
name = "tenants"
hosts = ["*.tenants.example.com"]
upstream = "b"
"#,
        a = a.addr,
        b = b.addr
    );
    let gw = gateway(&text).await;
    let before = |s: &floodgate::shop::ShopHandle| {
        s.stats.received.load(std::sync::atomic::Ordering::SeqCst)
    };

    assert_eq!(
        get_host(gw.addr(), "A.Example.com:8080", "/fast")
            .await
            .status,
        200
    );
    assert_eq!(
        (before(&a), before(&b)),
        (1, 0),
        "exact host, case and port ignored"
    );

    assert_eq!(
        get_host(gw.addr(), "a.example.com", "/checkout/pay")
            .await
            .status,
        404
    );
    assert_eq!((before(&a), before(&b)), (1, 1), "longest prefix goes to b");

    assert_eq!(
        get_host(gw.addr(), "x.tenants.example.com", "/fast")
            .await
            .status,
        200
    );
    assert_eq!((before(&a), before(&b)), (1, 2), "wildcard host");

    let none = get_host(gw.addr(), "unknown.example.org", "/fast").await;
    assert_eq!(none.status, 404);
    assert!(none.text().contains("no route"), "{}", none.text());
    assert_eq!(
        (before(&a), before(&b)),
        (1, 2),
        "no route: the origin never sees it"
    );
}
