//! `floodgate top --once` against a real gateway: the SRE's SSH view shows the routes,
//! status classes, queues and rooms the dashboard shows.

mod common;

use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;

const BIN: &str = env!("CARGO_BIN_EXE_floodgate");

const EVERYTHING: &str = r#"
[[route]]
name = "shop"
upstream = "shop"
cache = { enabled = true, default_ttl = "2s" }
rate_limits = [{ name = "per-ip", key = "client_ip", rate = "20/s", burst = 5 }]

[[route]]
name = "sale"
upstream = "shop"
path_prefix = "/products/2"
waiting_room = "black-friday"

[[waiting_room]]
name = "black-friday"
active_users = 1
new_users_per_minute = 1
"#;

/// The line of `frame` that starts with `name` under the table headed by `heading`.
fn row<'a>(frame: &'a str, heading: &str, name: &str) -> Vec<&'a str> {
    frame
        .lines()
        .skip_while(|l| !l.starts_with(heading))
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .find(|l| l.split_whitespace().next() == Some(name))
        .unwrap_or_else(|| panic!("no {name} row under {heading}:\n{frame}"))
        .split_whitespace()
        .collect()
}

#[tokio::test]
async fn top_once_prints_the_routes_status_classes_queues_and_rooms() {
    let shop = fast_shop().await;
    let gw = gateway(&config_text(shop.addr, EVERYTHING)).await;
    let addr = gw.listen_addrs[0];
    let admin = gw.admin_addr.unwrap();

    // Two visitors at a room for one: the second waits.
    let first = get(addr, "/products/2").await;
    assert!(first.text().contains("Product 2"), "the first is let in");
    let second = get(addr, "/products/2").await;
    assert!(
        second.text().contains("data-state=\"waiting\""),
        "the second visitor waits: {}",
        second.text()
    );
    let room = get(admin, "/admin/waiting-rooms/black-friday").await.json();
    assert_eq!(room["waiting"], 1, "{room}");

    // Steady traffic while top measures, some of it over the rate limit.
    let stop = Arc::new(AtomicBool::new(false));
    let traffic = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut statuses = Vec::new();
            for _ in 0..2000 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                statuses.push(get(addr, "/products/1").await.status.as_u16());
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            statuses
        })
    };
    let out = tokio::task::spawn_blocking(move || {
        Command::new(BIN)
            .args(["top", "--once", "--interval", "1s", "--admin"])
            .arg(format!("http://{admin}"))
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    stop.store(true, Ordering::Relaxed);
    let statuses = traffic.await.unwrap();
    assert!(
        statuses.contains(&200) && statuses.contains(&429),
        "{statuses:?}"
    );

    let frame = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{frame}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !frame.contains('\x1b'),
        "no escapes when not a terminal: {frame:?}"
    );

    // ROUTE req/s 2xx/s 3xx/s 4xx/s 5xx/s total p50 p99 hit% limited/s
    let shop_row = row(&frame, "ROUTE", "shop");
    let rate = |i: usize| shop_row[i].parse::<f64>().unwrap();
    assert!(rate(2) > 0.0, "2xx/s: {frame}");
    assert!(rate(4) > 0.0, "4xx/s (429s): {frame}");
    assert!(rate(10) > 0.0, "limited/s: {frame}");
    assert!(
        rate(6) >= statuses.len() as f64 / 2.0,
        "the total counts the traffic: {frame}"
    );
    assert_ne!(shop_row[7], "-", "a p50: {frame}");
    assert_ne!(shop_row[9], "-", "a cache hit ratio: {frame}");
    row(&frame, "ROUTE", "sale");

    // UPSTREAM in-flight/max queued overloaded wait-p99 shed/s errors/s healthy
    let up = row(&frame, "UPSTREAM", "shop");
    let limit = metric(
        &metrics_text(&gw).await,
        r#"floodgate_concurrency_limit{upstream="shop"}"#,
    )
    .unwrap();
    assert_eq!(
        up[1],
        format!("0/{limit}"),
        "in flight and the limit: {frame}"
    );
    assert_eq!(up[2], "0", "nothing queued: {frame}");
    assert_eq!(up[3], "no", "not overloaded: {frame}");
    assert_eq!(up[7], "1/1", "one healthy server: {frame}");

    // WAITING ROOM waiting active/max admitted/min expected-wait state
    let r = row(&frame, "WAITING ROOM", "black-friday");
    assert_eq!(r[1], "1", "one visitor waiting: {frame}");
    assert_eq!(r[2], "1/1", "one shopper inside, of one: {frame}");
    assert_eq!(r[4], "(1)", "the admission rate limit: {frame}");
}

#[test]
fn top_says_which_admin_address_does_not_answer() {
    // A port nothing listens on: bind, read the port, close.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = Command::new(BIN)
        .args(["top", "--once", "--admin"])
        .arg(format!("http://127.0.0.1:{port}"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("127.0.0.1:{port}/metrics")), "{err}");
}
