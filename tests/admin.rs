//! The admin API as a browser on another site and an operator see it: writes need
//! JSON and refuse a foreign `Origin` (CSRF on a loopback listener), a wrong method
//! gets 405 with `Allow`, and `floodgate demo` can be reloaded.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;

use common::{config_text, fast_shop, gateway, get, metrics_text, send, Answer};

/// `POST http://{admin}{path}` with these headers and body.
async fn post(admin: SocketAddr, path: &str, headers: &[(&str, &str)], body: &str) -> Answer {
    let mut req = Request::post(format!("http://{admin}{path}"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    send(req.body(Full::new(Bytes::from(body.to_string()))).unwrap()).await
}

const JSON: (&str, &str) = ("content-type", "application/json");

#[tokio::test]
async fn a_cross_site_form_post_to_the_admin_api_is_refused_and_changes_nothing() {
    let shop = fast_shop().await;
    let extra = "[[waiting_room]]\nname = \"sale\"\nactive_users = 5\nnew_users_per_minute = 60\n\
        [[route]]\nname = \"shop\"\nupstream = \"shop\"\nwaiting_room = \"sale\"\n";
    let gw = gateway(&config_text(shop.addr, extra)).await;
    let admin = gw.admin_addr.unwrap();

    // What a page on evil.example can make a browser send without a preflight.
    let form = post(
        admin,
        "/admin/waiting-rooms/sale/pause",
        &[
            ("content-type", "application/x-www-form-urlencoded"),
            ("origin", "https://evil.example"),
        ],
        "a=1",
    )
    .await;
    assert_eq!(form.status, StatusCode::FORBIDDEN, "{}", form.text());
    // A foreign Origin is refused even with a JSON content type.
    let json = post(
        admin,
        "/admin/waiting-rooms/sale/pause",
        &[JSON, ("origin", "https://evil.example")],
        "{}",
    )
    .await;
    assert_eq!(json.status, StatusCode::FORBIDDEN);
    let null = post(
        admin,
        "/admin/waiting-rooms/sale/pause",
        &[JSON, ("origin", "null")],
        "{}",
    )
    .await;
    assert_eq!(
        null.status,
        StatusCode::FORBIDDEN,
        "a sandboxed page's Origin"
    );
    // No Origin (curl), but a form content type: 415.
    let plain = post(
        admin,
        "/admin/waiting-rooms/sale/pause",
        &[("content-type", "text/plain")],
        "{}",
    )
    .await;
    assert_eq!(plain.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let none = post(admin, "/admin/cache/purge", &[], r#"{"prefix": "/"}"#).await;
    assert_eq!(none.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);

    let room = get(admin, "/admin/waiting-rooms/sale").await.json();
    assert_eq!(room["paused"], false, "the room was not paused: {room}");
}

#[tokio::test]
async fn an_operator_with_curl_or_the_admin_page_itself_can_still_write() {
    let shop = fast_shop().await;
    let extra = "[[waiting_room]]\nname = \"sale\"\nactive_users = 5\nnew_users_per_minute = 60\n\
        [[route]]\nname = \"shop\"\nupstream = \"shop\"\nwaiting_room = \"sale\"\n";
    let gw = gateway(&config_text(shop.addr, extra)).await;
    let admin = gw.admin_addr.unwrap();

    let curl = post(admin, "/admin/waiting-rooms/sale/pause", &[JSON], "").await;
    assert_eq!(curl.status, StatusCode::OK, "{}", curl.text());
    assert_eq!(curl.json()["paused"], true);
    // The same origin as the admin listener (a page it served), with a charset.
    let own_origin = format!("http://{admin}");
    let same = post(
        admin,
        "/admin/waiting-rooms/sale/resume",
        &[
            ("content-type", "application/json; charset=utf-8"),
            ("origin", &own_origin),
        ],
        "",
    )
    .await;
    assert_eq!(same.status, StatusCode::OK, "{}", same.text());
    assert_eq!(
        get(admin, "/admin/waiting-rooms/sale").await.json()["paused"],
        false
    );
}

#[tokio::test]
async fn a_get_on_a_post_only_endpoint_answers_405_with_allow() {
    let shop = fast_shop().await;
    let extra = "[[waiting_room]]\nname = \"sale\"\nactive_users = 5\nnew_users_per_minute = 60\n\
        [[route]]\nname = \"shop\"\nupstream = \"shop\"\nwaiting_room = \"sale\"\n";
    let gw = gateway(&config_text(shop.addr, extra)).await;
    let admin = gw.admin_addr.unwrap();
    for path in [
        "/admin/reload",
        "/admin/cache/purge",
        "/admin/waiting-rooms/sale/pause",
    ] {
        let a = get(admin, path).await;
        assert_eq!(a.status, StatusCode::METHOD_NOT_ALLOWED, "{path}");
        assert_eq!(a.header("allow"), Some("POST"), "{path}");
    }
    let a = post(admin, "/metrics", &[JSON], "").await;
    assert_eq!(a.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(a.header("allow"), Some("GET"));
    assert_eq!(get(admin, "/admin/nothing-here").await.status, 404);
    assert_eq!(get(admin, "/admin/upstreams").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_reloads_the_config_file_it_runs_from() {
    let demo = floodgate::demo::start(
        "127.0.0.1:0".parse().unwrap(),
        "127.0.0.1:0".parse().unwrap(),
        floodgate::shop::ShopProfile {
            capacity: 16,
            latency: Duration::from_millis(1),
            collapse: 10_000,
        },
    )
    .await
    .expect("the demo starts");
    let admin = demo.gateway.admin_addr.unwrap();
    let path = demo.config_path.clone();
    assert!(path.exists(), "the demo runs from a file");

    let r = post(admin, "/admin/reload", &[JSON], "").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json()["reloaded"], true);

    // An edit to that file is what the reload applies.
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        text.replace(
            "name = \"shop\"\nupstream",
            "name = \"storefront\"\nupstream",
        ),
    )
    .unwrap();
    let r = post(admin, "/admin/reload", &[JSON], "").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let said = r.json()["changes"].as_str().unwrap().to_string();
    assert!(said.contains("route.storefront: added"), "{said}");
    assert!(said.contains("route.shop: removed"), "{said}");
    assert_eq!(get(demo.gateway.addr(), "/").await.status, 200);
    let m = metrics_text(&demo.gateway).await;
    assert!(
        m.contains("route=\"storefront\""),
        "traffic goes through the renamed route"
    );

    demo.stop().await;
    assert!(!path.exists(), "the demo cleans up its config file");
}
