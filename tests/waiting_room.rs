//! The waiting room end to end: a real gateway in front of the simulated shop, real
//! HTTP clients keeping their cookies like browsers do.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use common::*;
use floodgate::waiting_room::token::{Keys, Kind, Token};
use http::Request;
use http_body_util::Full;

const KEY: &str = "a test signing key of enough bytes";

/// A config with the shop behind room "sale" (and `room` extra keys), signed with KEY.
fn room_config(shop: SocketAddr, room: &str) -> (String, tempfile::NamedTempFile) {
    let key = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(key.path(), format!("{KEY}\n")).unwrap();
    let text = config_text(
        shop,
        &format!(
            "[[route]]\nname = \"shop\"\nupstream = \"shop\"\nwaiting_room = \"sale\"\n\n\
             [[waiting_room]]\nname = \"sale\"\nkey_file = \"{}\"\n{room}\n",
            key.path().display()
        ),
    );
    (text, key)
}

/// A browser-like visitor: keeps the cookies the gateway sets.
#[derive(Default, Clone)]
struct Visitor {
    cookies: Vec<(String, String)>,
}

impl Visitor {
    async fn get(&mut self, addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Answer {
        let mut b = Request::get(format!("http://{addr}{path}"));
        let cookie: Vec<String> = self
            .cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        if !cookie.is_empty() {
            b = b.header("cookie", cookie.join("; "));
        }
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let a = send(b.body(Full::<Bytes>::default()).unwrap()).await;
        for sc in a.headers.get_all("set-cookie") {
            let sc = sc.to_str().unwrap();
            let (kv, _) = sc.split_once(';').unwrap_or((sc, ""));
            let (k, v) = kv.split_once('=').unwrap();
            self.cookies.retain(|(n, _)| n != k);
            if !v.is_empty() && !sc.contains("Max-Age=0") {
                self.cookies.push((k.to_string(), v.to_string()));
            }
        }
        a
    }

    async fn page(&mut self, addr: SocketAddr) -> Answer {
        self.get(addr, "/", &[]).await
    }

    async fn status(&mut self, addr: SocketAddr) -> serde_json::Value {
        self.get(
            addr,
            "/",
            &[("accept", "application/json"), ("x-floodgate-poll", "1")],
        )
        .await
        .json()
    }

    fn set(&mut self, name: &str, value: String) {
        self.cookies.retain(|(n, _)| n != name);
        self.cookies.push((name.into(), value));
    }

    fn has(&self, name: &str) -> bool {
        self.cookies.iter().any(|(n, _)| n == name)
    }
}

fn is_shop(a: &Answer) -> bool {
    a.status == 200 && a.text().contains("Cyber Monday")
}

async fn room_state(gw: &floodgate::Gateway) -> serde_json::Value {
    get(gw.admin_addr.unwrap(), "/admin/waiting-rooms/sale")
        .await
        .json()
}

async fn admin_post(gw: &floodgate::Gateway, action: &str, body: &str) -> Answer {
    send(
        Request::post(format!(
            "http://{}/admin/waiting-rooms/sale/{action}",
            gw.admin_addr.unwrap()
        ))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap(),
    )
    .await
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

#[tokio::test]
async fn a_visitor_at_a_full_sale_waits_with_a_position_and_the_pass_holder_goes_straight_through()
{
    let shop = fast_shop().await;
    let (text, _k) = room_config(
        shop.addr,
        "active_users = 1\nnew_users_per_minute = 6000\ntickets_per_minute_per_client = 0",
    );
    let gw = gateway(&text).await;
    let mut first = Visitor::default();
    let a = first.page(gw.addr()).await;
    assert!(is_shop(&a), "the first visitor walks into an empty room");
    assert!(first.has("fg_pass"));

    let mut second = Visitor::default();
    let b = second.page(gw.addr()).await;
    assert_eq!(b.status, 200);
    assert_eq!(b.header("cache-control"), Some("no-store"));
    assert!(b.header("content-type").unwrap().starts_with("text/html"));
    assert!(
        b.text().contains("<dd id=\"position\">1</dd>"),
        "{}",
        b.text()
    );
    assert!(second.has("fg_ticket") && !second.has("fg_pass"));

    let mut third = Visitor::default();
    let c = third
        .get(gw.addr(), "/products/3", &[("accept", "application/json")])
        .await;
    assert!(c.header("retry-after").unwrap().parse::<u64>().unwrap() >= 1);
    let j = c.json();
    assert_eq!(j["state"], "waiting");
    assert_eq!(j["position"], 2);
    assert_eq!(j["people_ahead"], 1);
    assert!(j["expected_wait_seconds"]["high"].as_u64().unwrap() >= 1);

    // Status polls and waiting pages never reach the origin.
    let received = shop.stats.received.load(Ordering::Relaxed);
    for _ in 0..20 {
        second.status(gw.addr()).await;
        third.page(gw.addr()).await;
    }
    assert_eq!(shop.stats.received.load(Ordering::Relaxed), received);

    // The pass holder is never stopped, however many come.
    for _ in 0..5 {
        let a = first.get(gw.addr(), "/products/1", &[]).await;
        assert_eq!(a.status, 200);
        assert!(a.text().contains("Product 1"));
    }
    // Fresh visitors in French get the French page.
    let fr = Visitor::default()
        .get(gw.addr(), "/", &[("accept-language", "fr-FR,fr;q=0.9")])
        .await;
    assert!(fr.text().contains("Vous êtes dans la file"));
    let m = metrics_text(&gw).await;
    assert_eq!(
        metric(
            &m,
            "floodgate_waiting_room_tickets_issued_total{room=\"sale\"}"
        ),
        Some(4.0)
    );
}

#[tokio::test]
async fn forged_tampered_expired_and_other_room_tokens_give_no_advantage() {
    let shop = fast_shop().await;
    let (text, _k) = room_config(
        shop.addr,
        "active_users = 1\nnew_users_per_minute = 60\ntickets_per_minute_per_client = 0",
    );
    let gw = gateway(&text).await;
    let mut holder = Visitor::default();
    assert!(is_shop(&holder.page(gw.addr()).await));
    let mut waiting = Visitor::default();
    assert_eq!(waiting.status(gw.addr()).await["position"], 1);

    let keys = Keys::new(vec![KEY.as_bytes().to_vec()]).unwrap();
    let wrong = Keys::new(vec![b"somebody else's key 123".to_vec()]).unwrap();
    let now = now_ms();
    let tok = |kind, room: &str, ticket, expires_ms, keys: &Keys| {
        Token {
            kind,
            room: room.into(),
            ticket,
            issued_ms: now - 1000,
            expires_ms,
            extra: 0,
        }
        .sign(keys)
    };
    let ticket1 = tok(Kind::Ticket, "sale", 1, now + 60_000, &keys);
    let cases: Vec<(&str, &str, String)> = vec![
        (
            "forged pass",
            "fg_pass",
            tok(Kind::Pass, "sale", 1, now + 60_000, &wrong),
        ),
        (
            "pass for another room",
            "fg_pass",
            tok(Kind::Pass, "other", 1, now + 60_000, &keys),
        ),
        (
            "expired pass",
            "fg_pass",
            tok(Kind::Pass, "sale", 1, now - 1, &keys),
        ),
        ("ticket used as a pass", "fg_pass", ticket1.clone()),
        (
            "tampered ticket",
            "fg_ticket",
            ticket1.replacen(".1.", ".0.", 1),
        ),
        (
            "garbage",
            "fg_pass",
            "v1.p.sale.1.1.99999999999999.0.abc.def".into(),
        ),
    ];
    let mut expected_position = 2;
    for (what, name, value) in cases {
        let mut cheat = Visitor::default();
        cheat.set(name, value);
        let a = cheat
            .get(gw.addr(), "/", &[("accept", "application/json")])
            .await;
        let j = a.json();
        assert_eq!(j["state"], "waiting", "{what}: {j}");
        assert_eq!(j["position"], expected_position, "{what}: goes to the back");
        expected_position += 1;
    }
    // Clearing cookies and coming back never improves a place either.
    let mut again = Visitor::default();
    assert_eq!(again.status(gw.addr()).await["position"], expected_position);
    assert_eq!(waiting.status(gw.addr()).await["position"], 1);
}

#[tokio::test]
async fn the_next_in_line_gets_in_when_a_pass_expires_and_lands_on_the_shop() {
    let shop = fast_shop().await;
    let (text, _k) = room_config(
        shop.addr,
        "active_users = 1\nnew_users_per_minute = 6000\nsession_duration = \"1s\"\nabandon_after = \"3s\"\ntickets_per_minute_per_client = 0",
    );
    let gw = gateway(&text).await;
    let mut holder = Visitor::default();
    assert!(is_shop(&holder.page(gw.addr()).await));
    let mut next = Visitor::default();
    assert!(!is_shop(&next.page(gw.addr()).await));
    let started = Instant::now();
    eventually(
        "the next visitor is admitted",
        Duration::from_secs(5),
        || {
            let mut v = next.clone();
            let addr = gw.addr();
            async move { v.status(addr).await["state"] == "admitted" }
        },
    )
    .await;
    assert!(
        started.elapsed() >= Duration::from_millis(700),
        "not before the pass expired"
    );
    assert!(is_shop(&next.page(gw.addr()).await));
    let s = room_state(&gw).await;
    assert_eq!(s["admitted_total"], 2, "the holder and the next");
    assert!(s["estimate_error_seconds"]["count"].as_u64().unwrap() >= 1);
}

#[tokio::test]
async fn the_origin_ends_a_session_after_checkout_and_the_place_goes_to_the_next_in_line() {
    let shop = fast_shop().await;
    let (text, _k) = room_config(
        shop.addr,
        "active_users = 1\nnew_users_per_minute = 6000\nsession_duration = \"10m\"\ntickets_per_minute_per_client = 0",
    );
    let gw = gateway(&text).await;
    let mut holder = Visitor::default();
    assert!(is_shop(&holder.page(gw.addr()).await));
    let mut next = Visitor::default();
    assert!(!is_shop(&next.page(gw.addr()).await));

    // The shop confirms the order and ends the session; the header is the gateway's
    // business, not the browser's.
    let done = holder
        .get(gw.addr(), "/__shop/session?value=end", &[])
        .await;
    assert_eq!(done.status, 200);
    assert_eq!(done.text(), "session changed\n");
    assert!(done.header("x-floodgate-session").is_none());

    eventually(
        "the next visitor is admitted into the freed place",
        Duration::from_secs(5),
        || {
            let mut v = next.clone();
            let addr = gw.addr();
            async move { v.status(addr).await["state"] == "admitted" }
        },
    )
    .await;
    assert!(is_shop(&next.page(gw.addr()).await));
    // The ended pass no longer lets its holder skip the line.
    assert!(!is_shop(&holder.page(gw.addr()).await));
}

#[tokio::test]
async fn abandoned_tickets_are_skipped_so_the_line_moves_for_those_still_there() {
    let shop = fast_shop().await;
    let (text, _k) = room_config(
        shop.addr,
        "active_users = 1\nnew_users_per_minute = 60\nsession_duration = \"1s\"\nabandon_after = \"1s\"\ntickets_per_minute_per_client = 0",
    );
    let gw = gateway(&text).await;
    let mut holder = Visitor::default();
    assert!(is_shop(&holder.page(gw.addr()).await));
    // Two blocks of visitors take a ticket and leave.
    for _ in 0..130 {
        Visitor::default().status(gw.addr()).await;
    }
    let mut me = Visitor::default();
    let j = me.status(gw.addr()).await;
    assert_eq!(j["position"], 131);
    // At 1 per minute, 130 places would take two hours; the gone are skipped instead.
    eventually(
        "the last visitor is admitted",
        Duration::from_secs(6),
        || {
            let mut v = me.clone();
            let addr = gw.addr();
            async move { v.status(addr).await["state"] == "admitted" }
        },
    )
    .await;
    let s = room_state(&gw).await;
    // A few are admitted at 1/s before their block has been silent for a second.
    assert!(s["abandoned_skipped_total"].as_u64().unwrap() >= 120, "{s}");
    assert!(s["admitted_total"].as_u64().unwrap() <= 10, "{s}");
    let m = metrics_text(&gw).await;
    assert!(
        metric(
            &m,
            "floodgate_waiting_room_abandoned_skipped_total{room=\"sale\"}"
        )
        .unwrap()
            >= 120.0
    );
}

#[tokio::test]
async fn visitors_are_admitted_in_ticket_order_at_the_configured_rate() {
    let shop = fast_shop().await;
    // 600 per second, time-compressed: 1200 visitors in about two seconds.
    let (text, _k) = room_config(
        shop.addr,
        "active_users = 100000\nnew_users_per_minute = 36000\ntickets_per_minute_per_client = 0",
    );
    let gw = gateway(&text).await;
    assert_eq!(admin_post(&gw, "pause", "").await.status, 200);
    let mut visitors = Vec::new();
    for i in 0..1200u64 {
        let mut v = Visitor::default();
        let j = v.status(gw.addr()).await;
        assert_eq!(j["ticket"], i + 1, "tickets follow arrival order");
        visitors.push(v);
    }
    assert_eq!(admin_post(&gw, "resume", "").await.status, 200);
    let mut samples = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(8);
    loop {
        let s = room_state(&gw).await;
        let n = s["admitted_total"].as_u64().unwrap();
        samples.push((Instant::now(), n));
        if n >= 600 {
            admin_post(&gw, "pause", "").await;
            break;
        }
        assert!(Instant::now() < deadline, "admission stalled at {n}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Rate between the first sample past 60 and the last sample.
    let (t1, a1) = *samples.iter().find(|(_, n)| *n >= 60).unwrap();
    let (t2, a2) = *samples.last().unwrap();
    let rate = (a2 - a1) as f64 / (t2 - t1).as_secs_f64();
    assert!((rate - 600.0).abs() / 600.0 < 0.05, "rate {rate}/s");
    // Order: the admitted are exactly the first tickets, nobody skipped ahead.
    let admitted = room_state(&gw).await["admitted_total"].as_u64().unwrap();
    for (i, v) in visitors.iter_mut().enumerate() {
        let state = v.status(gw.addr()).await["state"].clone();
        let expect = if (i as u64) < admitted {
            "admitted"
        } else {
            "waiting"
        };
        assert_eq!(state, expect, "visitor {i} of {admitted} admitted");
    }
}

#[tokio::test]
async fn safety_net_lets_everyone_in_until_the_room_is_full() {
    let shop = fast_shop().await;
    let (text, _k) = room_config(
        shop.addr,
        "active_users = 2\nnew_users_per_minute = 60\nmode = \"safety_net\"\ntickets_per_minute_per_client = 0",
    );
    let gw = gateway(&text).await;
    for _ in 0..2 {
        let mut v = Visitor::default();
        assert!(is_shop(&v.page(gw.addr()).await));
        assert!(!v.has("fg_ticket"));
    }
    let mut third = Visitor::default();
    let a = third.page(gw.addr()).await;
    assert!(!is_shop(&a));
    assert!(third.has("fg_ticket"));
}

#[tokio::test]
async fn passthrough_lets_everyone_in_and_only_counts() {
    let shop = fast_shop().await;
    let (text, _k) = room_config(
        shop.addr,
        "active_users = 1\nnew_users_per_minute = 1\nmode = \"passthrough\"",
    );
    let gw = gateway(&text).await;
    for _ in 0..5 {
        assert!(is_shop(&Visitor::default().page(gw.addr()).await));
    }
    let s = room_state(&gw).await;
    assert_eq!(s["active"], 5);
    assert_eq!(s["waiting"], 0);
}

#[tokio::test]
async fn reject_shows_the_sold_out_page_to_newcomers_but_not_to_pass_holders() {
    let shop = fast_shop().await;
    let (text, _k) = room_config(
        shop.addr,
        "active_users = 10\nnew_users_per_minute = 60\nmode = \"reject\"",
    );
    let gw = gateway(&text).await;
    let mut v = Visitor::default();
    let a = v.page(gw.addr()).await;
    assert_eq!(a.status, 503);
    assert_eq!(a.header("cache-control"), Some("no-store"));
    assert!(a.text().contains("Sold out"));
    // A pass from before the switch still shops.
    let keys = Keys::new(vec![KEY.as_bytes().to_vec()]).unwrap();
    let now = now_ms();
    v.set(
        "fg_pass",
        Token {
            kind: Kind::Pass,
            room: "sale".into(),
            ticket: 1,
            issued_ms: now,
            expires_ms: now + 60_000,
            extra: now,
        }
        .sign(&keys),
    );
    assert!(is_shop(&v.page(gw.addr()).await));
}

#[tokio::test]
async fn pause_stops_admissions_and_resume_restarts_them() {
    let shop = fast_shop().await;
    let (text, _k) = room_config(
        shop.addr,
        "active_users = 10\nnew_users_per_minute = 6000\ntickets_per_minute_per_client = 0",
    );
    let gw = gateway(&text).await;
    assert_eq!(room_state(&gw).await["paused"], false);
    let s = admin_post(&gw, "pause", "").await.json();
    assert_eq!(s["paused"], true);
    let mut v = Visitor::default();
    assert!(!is_shop(&v.page(gw.addr()).await));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(v.status(gw.addr()).await["state"], "waiting");
    admin_post(&gw, "resume", "").await;
    eventually("admitted after resume", Duration::from_secs(3), || {
        let mut v = v.clone();
        let addr = gw.addr();
        async move { v.status(addr).await["state"] == "admitted" }
    })
    .await;
    let s = admin_post(
        &gw,
        "settings",
        r#"{"active_users": 3, "new_users_per_minute": 120}"#,
    )
    .await
    .json();
    assert_eq!(s["active_users"], 3);
    assert_eq!(s["new_users_per_minute"], 120);
    assert_eq!(
        admin_post(&gw, "settings", r#"{"active_users": 0}"#)
            .await
            .status,
        422
    );
    assert_eq!(
        get(gw.admin_addr.unwrap(), "/admin/waiting-rooms/nope")
            .await
            .status,
        404
    );
}

#[tokio::test]
async fn ticket_issue_is_limited_per_client_address() {
    let shop = fast_shop().await;
    let (text, _k) = room_config(
        shop.addr,
        "active_users = 1\nnew_users_per_minute = 60\ntickets_per_minute_per_client = 3",
    );
    let gw = gateway(&text).await;
    let mut holder = Visitor::default();
    assert!(is_shop(&holder.page(gw.addr()).await)); // ticket 1, admitted at once
    for _ in 0..2 {
        assert_eq!(Visitor::default().page(gw.addr()).await.status, 200);
    }
    let farmed = Visitor::default().page(gw.addr()).await;
    assert_eq!(farmed.status, 429);
    assert!(
        farmed
            .header("retry-after")
            .unwrap()
            .parse::<u64>()
            .unwrap()
            >= 1
    );
}

#[tokio::test]
async fn a_reload_keeps_the_line_when_the_room_keeps_its_name() {
    let shop = fast_shop().await;
    let (text, _k) = room_config(
        shop.addr,
        "active_users = 1\nnew_users_per_minute = 60\ntickets_per_minute_per_client = 0",
    );
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), &text).unwrap();
    let config = floodgate::config::load(file.path()).unwrap();
    let gw = floodgate::Gateway::start(config).await.unwrap();
    let mut holder = Visitor::default();
    assert!(is_shop(&holder.page(gw.addr()).await));
    let mut a = Visitor::default();
    let mut b = Visitor::default();
    a.page(gw.addr()).await;
    b.page(gw.addr()).await;
    std::fs::write(
        file.path(),
        text.replace("new_users_per_minute = 60", "new_users_per_minute = 30"),
    )
    .unwrap();
    let r = send(
        Request::post(format!("http://{}/admin/reload", gw.admin_addr.unwrap()))
            .header("content-type", "application/json")
            .body(Full::default())
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(b.status(gw.addr()).await["position"], 2);
    assert!(is_shop(&holder.page(gw.addr()).await));
    assert_eq!(room_state(&gw).await["new_users_per_minute"], 30);
}

#[test]
fn room_config_errors_name_their_keys() {
    let text = r#"
[[upstream]]
name = "shop"
servers = ["127.0.0.1:1"]

[[route]]
name = "shop"
upstream = "shop"
waiting_room = "nope"

[[waiting_room]]
name = "sale"
active_users = 0
new_users_per_minute = 60
session_duration = "soon"
opens_at = "tomorrow"
mode = "lottery"
waiting_status = 302
paths = ["static"]
"#;
    let errs = floodgate::config::parse(text).unwrap_err();
    let keys: Vec<&str> = errs.iter().map(|e| e.key.as_str()).collect();
    for k in [
        "route[0].waiting_room",
        "waiting_room[0].active_users",
        "waiting_room[0].session_duration",
        "waiting_room[0].opens_at",
        "waiting_room[0].mode",
        "waiting_room[0].waiting_status",
        "waiting_room[0].paths[0]",
    ] {
        assert!(keys.contains(&k), "missing {k} in {errs:?}");
    }
    let unknown = floodgate::config::parse(
        "[[waiting_room]]\nname = \"a\"\nactive_users = 1\nnew_users_per_minute = 1\nsize = 3\n",
    )
    .unwrap_err();
    assert!(unknown[0].key.contains("size"), "{unknown:?}");
}
