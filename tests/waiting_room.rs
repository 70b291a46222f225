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

/// Polls the status as the page's script does until the visitor is admitted (the
/// poll's answer carries the pass).
async fn until_admitted(v: &mut Visitor, addr: SocketAddr, what: &str, within: Duration) {
    let deadline = Instant::now() + within;
    while v.status(addr).await["state"] != "admitted" {
        assert!(
            Instant::now() < deadline,
            "timed out after {within:?}: {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
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
    assert!(first.has("fg_pass_sale"));

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
    assert!(second.has("fg_ticket_sale") && !second.has("fg_pass_sale"));

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
            id: 1,
        }
        .sign(keys)
    };
    let ticket1 = tok(Kind::Ticket, "sale", 1, now + 60_000, &keys);
    let cases: Vec<(&str, &str, String)> = vec![
        (
            "forged pass",
            "fg_pass_sale",
            tok(Kind::Pass, "sale", 1, now + 60_000, &wrong),
        ),
        (
            "pass for another room",
            "fg_pass_sale",
            tok(Kind::Pass, "other", 1, now + 60_000, &keys),
        ),
        (
            "expired pass",
            "fg_pass_sale",
            tok(Kind::Pass, "sale", 1, now - 1, &keys),
        ),
        ("ticket used as a pass", "fg_pass_sale", ticket1.clone()),
        (
            "tampered ticket",
            "fg_ticket_sale",
            ticket1.replacen(".1.", ".0.", 1),
        ),
        (
            "garbage",
            "fg_pass_sale",
            "v2.p.sale.1.1.99999999999999.0.1.abc.def".into(),
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
    until_admitted(
        &mut next,
        gw.addr(),
        "the next visitor is admitted",
        Duration::from_secs(5),
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

    until_admitted(
        &mut next,
        gw.addr(),
        "the next visitor is admitted into the freed place",
        Duration::from_secs(5),
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
    until_admitted(
        &mut me,
        gw.addr(),
        "the last visitor is admitted",
        Duration::from_secs(6),
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
            // The room was paused again: the page says so (issue 12).
            "paused"
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
        assert!(!v.has("fg_ticket_sale"));
    }
    let mut third = Visitor::default();
    let a = third.page(gw.addr()).await;
    assert!(!is_shop(&a));
    assert!(third.has("fg_ticket_sale"));
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
        "fg_pass_sale",
        Token {
            kind: Kind::Pass,
            room: "sale".into(),
            ticket: 1,
            issued_ms: now,
            expires_ms: now + 60_000,
            extra: now,
            id: 42,
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
    assert_eq!(v.status(gw.addr()).await["state"], "paused");
    admin_post(&gw, "resume", "").await;
    until_admitted(
        &mut v,
        gw.addr(),
        "admitted after resume",
        Duration::from_secs(3),
    )
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

// === Issue 12: a room that cannot be gamed ===

impl Visitor {
    fn cookie(&self, name: &str) -> Option<String> {
        self.cookies
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    }

    /// A page request from client address `ip` (through the trusted loopback proxy).
    async fn from(&mut self, addr: SocketAddr, ip: &str, path: &str) -> Answer {
        self.get(addr, path, &[("x-forwarded-for", ip)]).await
    }

    /// A status poll from client address `ip`.
    async fn status_from(&mut self, addr: SocketAddr, ip: &str) -> serde_json::Value {
        self.get(
            addr,
            "/",
            &[
                ("accept", "application/json"),
                ("x-floodgate-poll", "1"),
                ("x-forwarded-for", ip),
            ],
        )
        .await
        .json()
    }
}

/// Like [`room_config`], with the test (on loopback) trusted as a proxy, so
/// `X-Forwarded-For` gives each visitor their own client address.
fn room_config_behind_proxy(shop: SocketAddr, room: &str) -> (String, tempfile::NamedTempFile) {
    let (text, key) = room_config(shop, room);
    let text = text.replacen(
        "admin_listen = \"127.0.0.1:0\"\n",
        "admin_listen = \"127.0.0.1:0\"\ntrusted_proxies = [\"127.0.0.1/32\"]\n",
        1,
    );
    (text, key)
}

fn revoked(m: &str, reason: &str) -> f64 {
    metric(
        m,
        &format!(
            "floodgate_waiting_room_passes_revoked_total{{reason=\"{reason}\",room=\"sale\"}}"
        ),
    )
    .unwrap_or(0.0)
}

#[tokio::test]
async fn a_replayed_ticket_gets_the_waiting_page_and_never_a_second_pass() {
    let shop = fast_shop().await;
    let (text, _k) = room_config(
        shop.addr,
        "active_users = 1\nnew_users_per_minute = 6000\ntickets_per_minute_per_client = 0",
    );
    let gw = gateway(&text).await;
    admin_post(&gw, "pause", "").await;
    let mut v = Visitor::default();
    assert_eq!(v.status(gw.addr()).await["ticket"], 1);
    let ticket = v.cookie("fg_ticket_sale").unwrap();
    admin_post(&gw, "resume", "").await;
    until_admitted(
        &mut v,
        gw.addr(),
        "the ticket's turn",
        Duration::from_secs(5),
    )
    .await;
    assert!(is_shop(&v.page(gw.addr()).await));

    // Six copies of the admitted ticket: six waiting pages, no pass.
    let received = shop.stats.received.load(Ordering::Relaxed);
    for i in 0..6 {
        let mut replay = Visitor::default();
        replay.set("fg_ticket_sale", ticket.clone());
        let a = replay.page(gw.addr()).await;
        assert_eq!(a.status, 200);
        assert!(!is_shop(&a), "replay {i} reached the shop");
        assert!(!replay.has("fg_pass_sale"), "replay {i} got a pass");
    }
    assert_eq!(shop.stats.received.load(Ordering::Relaxed), received);
    let s = room_state(&gw).await;
    assert_eq!(s["active"], 1, "{s}");
    assert_eq!(s["passes"], 1, "{s}");
    let m = metrics_text(&gw).await;
    assert_eq!(
        metric(
            &m,
            "floodgate_waiting_room_ticket_replays_total{room=\"sale\"}"
        ),
        Some(6.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewals_replays_and_parallel_renewals_of_one_pass_count_one_shopper() {
    let shop = fast_shop().await;
    let (text, _k) = room_config(
        shop.addr,
        "active_users = 5\nnew_users_per_minute = 6000\nsession_duration = \"10s\"\ntickets_per_minute_per_client = 0",
    );
    let gw = gateway(&text).await;
    let mut v = Visitor::default();
    assert!(is_shop(&v.page(gw.addr()).await));
    let old = v.cookie("fg_pass_sale").unwrap();
    // Past a tenth of the session, every request renews the pass.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (addr, old) = (gw.addr(), old.clone());
        tasks.push(tokio::spawn(async move {
            let mut tab = Visitor::default();
            tab.set("fg_pass_sale", old);
            let a = tab.get(addr, "/products/1", &[]).await;
            let renewed = a
                .headers
                .get_all("set-cookie")
                .iter()
                .any(|c| c.to_str().unwrap().starts_with("fg_pass_sale="));
            (a.status, a.text().contains("Product 1"), renewed)
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), (http::StatusCode::OK, true, true));
    }
    for _ in 0..3 {
        let mut replay = Visitor::default();
        replay.set("fg_pass_sale", old.clone());
        assert!(is_shop(&replay.page(gw.addr()).await));
    }
    let s = room_state(&gw).await;
    assert_eq!(s["passes"], 1, "one shopper, one pass: {s}");
    assert_eq!(s["active"], 1, "{s}");
}

#[tokio::test]
async fn the_origins_session_end_revokes_every_copy_of_the_pass_even_on_an_unguarded_path() {
    let shop = fast_shop().await;
    let (text, _k) = room_config(
        shop.addr,
        // One admission a minute: the holder walks in; a refused copy stays out.
        "active_users = 1\nnew_users_per_minute = 1\nexclude_paths = [\"/__shop\"]\ntickets_per_minute_per_client = 0",
    );
    let gw = gateway(&text).await;
    let mut holder = Visitor::default();
    assert!(is_shop(&holder.page(gw.addr()).await));
    let mut copy = holder.clone();
    let done = holder
        .get(gw.addr(), "/__shop/session?value=end", &[])
        .await;
    assert_eq!(done.text(), "session changed\n");
    assert!(done.header("x-floodgate-session").is_none(), "removed");
    assert!(!holder.has("fg_pass_sale"), "the cookie is cleared");
    // The copy kept by another browser is void too, and the place is free again.
    let a = copy.page(gw.addr()).await;
    assert!(!is_shop(&a), "a copy of an ended pass still shops");
    assert!(
        !copy.has("fg_pass_sale"),
        "the copy's pass cookie is cleared"
    );
    assert!(
        copy.has("fg_ticket_sale"),
        "and it takes a number like anyone"
    );
    let s = room_state(&gw).await;
    assert_eq!(s["revoked_passes"], 1, "{s}");
    assert_eq!(s["passes"], 0, "{s}");
    let m = metrics_text(&gw).await;
    assert_eq!(revoked(&m, "origin_end"), 1.0);
}

#[tokio::test]
async fn a_pass_used_past_its_sharing_limits_is_revoked_and_counted() {
    let shop = fast_shop().await;
    let (text, _k) = room_config_behind_proxy(
        shop.addr,
        // One admission a minute: the first visitor walks in, and a revoked pass
        // holder, back at the end of the line, stays there.
        "active_users = 5\nnew_users_per_minute = 1\ntickets_per_minute_per_client = 0\n\
         pass_prefixes_per_minute = 2\npass_requests_per_second = 5",
    );
    let gw = gateway(&text).await;
    let addr = gw.addr();
    // One pass, three networks within a minute.
    let mut owner = Visitor::default();
    assert!(is_shop(&owner.from(addr, "203.0.113.1", "/").await));
    let mut friend = owner.clone();
    assert!(is_shop(&friend.from(addr, "198.51.100.1", "/").await));
    let mut farm = owner.clone();
    assert!(!is_shop(&farm.from(addr, "192.0.2.1", "/").await));
    assert!(
        !is_shop(&owner.clone().from(addr, "203.0.113.1", "/").await),
        "revoked for every copy"
    );
    // A pass hammered faster than 5 requests a second (a pass of ours, from before).
    let keys = Keys::new(vec![KEY.as_bytes().to_vec()]).unwrap();
    let now = now_ms();
    let mut bot = Visitor::default();
    bot.set(
        "fg_pass_sale",
        Token {
            kind: Kind::Pass,
            room: "sale".into(),
            ticket: 0,
            issued_ms: now,
            expires_ms: now + 60_000,
            extra: now,
            id: 7,
        }
        .sign(&keys),
    );
    assert!(is_shop(&bot.clone().from(addr, "203.0.113.9", "/").await));
    let mut refused = 0;
    for _ in 0..12 {
        if !is_shop(&bot.clone().from(addr, "203.0.113.9", "/products/1").await) {
            refused += 1;
        }
    }
    assert!(refused >= 1, "never revoked");
    let m = metrics_text(&gw).await;
    assert_eq!(revoked(&m, "shared_prefixes"), 1.0);
    assert_eq!(revoked(&m, "shared_request_rate"), 1.0);
}

#[tokio::test]
async fn ticket_issue_is_limited_per_ipv6_64_however_many_addresses_it_uses() {
    let shop = fast_shop().await;
    let (text, _k) = room_config_behind_proxy(
        shop.addr,
        "active_users = 1\nnew_users_per_minute = 60\ntickets_per_minute_per_client = 3",
    );
    let gw = gateway(&text).await;
    let addr = gw.addr();
    assert!(is_shop(
        &Visitor::default().from(addr, "192.0.2.1", "/").await
    ));
    for ip in ["2001:db8:1:2::1", "2001:db8:1:2::2", "2001:db8:1:2:aaaa::3"] {
        assert_eq!(
            Visitor::default().from(addr, ip, "/").await.status,
            200,
            "{ip}"
        );
    }
    let farmed = Visitor::default()
        .from(addr, "2001:db8:1:2::ffff", "/")
        .await;
    assert_eq!(farmed.status, 429, "a fourth address of the same /64");
    let other = Visitor::default().from(addr, "2001:db8:1:3::1", "/").await;
    assert_eq!(other.status, 200, "another /64 has its own budget");
    assert_eq!(room_state(&gw).await["tickets_issued_total"], 5);
}

#[tokio::test]
async fn the_pre_queue_lottery_gives_one_draw_per_client_prefix() {
    let shop = fast_shop().await;
    let opens = time::OffsetDateTime::from_unix_timestamp((now_ms() / 1000 + 3) as i64)
        .unwrap()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let (text, _k) = room_config_behind_proxy(
        shop.addr,
        &format!(
            "active_users = 1\nnew_users_per_minute = 60\ntickets_per_minute_per_client = 0\nopens_at = \"{opens}\""
        ),
    );
    let gw = gateway(&text).await;
    let addr = gw.addr();
    // One address hoards ten tickets (ten "tabs"); ten people take one each.
    let mut hoard: Vec<Visitor> = Vec::new();
    let mut honest: Vec<(Visitor, String)> = Vec::new();
    for i in 0..10 {
        let mut h = Visitor::default();
        assert_eq!(
            h.status_from(addr, "198.51.100.7").await["state"],
            "prequeue"
        );
        hoard.push(h);
        let ip = format!("203.0.113.{}", i + 1);
        let mut v = Visitor::default();
        assert_eq!(v.status_from(addr, &ip).await["state"], "prequeue");
        honest.push((v, ip));
    }
    admin_post(&gw, "pause", "").await;
    eventually("the room opens", Duration::from_secs(8), || async {
        room_state(&gw).await["open"] == true
    })
    .await;
    let mut positions = Vec::new();
    for h in &mut hoard {
        positions.push(
            h.status_from(addr, "198.51.100.7").await["position"]
                .as_u64()
                .unwrap(),
        );
    }
    let first = *positions.iter().min().unwrap();
    assert!(first <= 11, "{positions:?}");
    for p in positions.iter().filter(|&&p| p != first) {
        assert!(
            *p > 11,
            "an extra ticket drew a place among the first: {positions:?}"
        );
    }
    let mut all = positions.clone();
    for (v, ip) in &mut honest {
        all.push(v.status_from(addr, ip).await["position"].as_u64().unwrap());
    }
    all.sort();
    assert_eq!(all, (1..=20).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_origin_queue_full_of_browsing_a_shopper_with_a_pass_is_served_and_a_browser_is_shed(
) {
    let shop = fast_shop().await;
    let key = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(key.path(), format!("{KEY}\n")).unwrap();
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n[log]\naccess_log = false\n\
         [[upstream]]\nname = \"shop\"\nservers = [\"{}\"]\nmax_concurrency = 1\nqueue_size = 2\n\
         queue_timeout = \"10s\"\ncodel_target = \"10s\"\n\
         [[route]]\nname = \"shop\"\nupstream = \"shop\"\nwaiting_room = \"sale\"\n\
         [[waiting_room]]\nname = \"sale\"\nkey_file = \"{}\"\nactive_users = 10\n\
         new_users_per_minute = 6000\nexclude_paths = [\"/search\", \"/__shop\"]\n",
        shop.addr,
        key.path().display()
    );
    let gw = gateway(&text).await;
    let addr = gw.addr();
    let mut shopper = Visitor::default();
    assert!(is_shop(&shopper.page(addr).await));
    let depth = |gw: &floodgate::Gateway| {
        let gw_admin = gw.admin_addr.unwrap();
        async move {
            let m = get(gw_admin, "/metrics").await.text();
            metric(&m, "floodgate_queue_depth{upstream=\"shop\"}").unwrap_or(0.0)
        }
    };
    // The slot is held; two browsing requests fill the queue.
    let blocker = tokio::spawn(async move { get(addr, "/__shop/slow?ms=1500").await.status });
    let in_flight = &shop.stats.in_flight;
    eventually("the slot is held", Duration::from_secs(5), || async {
        in_flight.load(Ordering::SeqCst) == 1
    })
    .await;
    let mut browsers = Vec::new();
    for n in 1..=2 {
        browsers.push(tokio::spawn(async move {
            get(addr, "/search?q=tv").await.status
        }));
        let gw = &gw;
        eventually(
            "the browser is queued",
            Duration::from_secs(5),
            || async move { depth(gw).await == n as f64 },
        )
        .await;
    }
    let a = shopper.get(addr, "/products/1", &[]).await;
    assert_eq!(a.status, 200);
    assert!(
        a.text().contains("Product 1"),
        "the shopper reached the shop"
    );
    let mut statuses = Vec::new();
    for b in browsers {
        statuses.push(b.await.unwrap().as_u16());
    }
    statuses.sort();
    assert_eq!(statuses, vec![200, 503], "one browser shed for the shopper");
    assert_eq!(blocker.await.unwrap(), 200);
}

#[tokio::test]
async fn a_restarted_gateway_keeps_everyones_place_the_active_count_and_the_passes() {
    let shop = fast_shop().await;
    let dir = tempfile::tempdir().unwrap();
    let (text, _k) = room_config(
        shop.addr,
        &format!(
            "active_users = 1\nnew_users_per_minute = 60\ntickets_per_minute_per_client = 0\nstate_dir = \"{}\"",
            dir.path().display()
        ),
    );
    let gw = gateway(&text).await;
    let mut holder = Visitor::default();
    assert!(is_shop(&holder.page(gw.addr()).await));
    let mut line: Vec<Visitor> = Vec::new();
    for i in 1..=3 {
        let mut v = Visitor::default();
        assert_eq!(v.status(gw.addr()).await["position"], i);
        line.push(v);
    }
    assert!(gw.shutdown().await);
    assert!(dir.path().join("waiting-room-sale.json").exists());

    let gw = gateway(&text).await;
    let s = room_state(&gw).await;
    assert_eq!(s["active"], 1, "the shopper inside still counts: {s}");
    assert_eq!(s["waiting"], 3, "{s}");
    assert!(
        is_shop(&holder.page(gw.addr()).await),
        "the pass is still valid"
    );
    for (i, v) in line.iter_mut().enumerate() {
        assert_eq!(v.status(gw.addr()).await["position"], i as u64 + 1);
    }
    let mut late = Visitor::default();
    let j = late.status(gw.addr()).await;
    assert_eq!(j["ticket"], 5, "numbers go on: {j}");
    assert_eq!(j["position"], 4);
}

#[tokio::test]
async fn abandoned_places_are_skipped_without_letting_later_visitors_past_the_limit() {
    // The issue's reproduction, time-compressed: active_users = 2, 60 per minute,
    // abandon_after 1 s; 6 visitors take tickets and fall silent.
    let shop = fast_shop().await;
    let (text, _k) = room_config(
        shop.addr,
        "active_users = 2\nnew_users_per_minute = 60\nsession_duration = \"30s\"\nabandon_after = \"1s\"\ntickets_per_minute_per_client = 0",
    );
    let gw = gateway(&text).await;
    let mut silent = Vec::new();
    for _ in 0..6 {
        let mut v = Visitor::default();
        v.page(gw.addr()).await;
        silent.push(v);
    }
    eventually(
        "the silent block is skipped",
        Duration::from_secs(10),
        || async {
            let s = room_state(&gw).await;
            s["waiting"] == 0 && s["abandoned_skipped_total"].as_u64().unwrap() >= 3
        },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // Six more arrive and keep polling for three seconds.
    let mut later: Vec<Visitor> = (0..6).map(|_| Visitor::default()).collect();
    for v in &mut later {
        v.page(gw.addr()).await;
    }
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline {
        for v in later.iter_mut().chain(silent.iter_mut()) {
            v.status(gw.addr()).await;
        }
        let s = room_state(&gw).await;
        assert!(s["active"].as_u64().unwrap() <= 2, "past the limit: {s}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let inside = later
        .iter()
        .chain(&silent)
        .filter(|v| v.has("fg_pass_sale"))
        .count();
    assert!(inside <= 2, "{inside} passes for 2 places");
    let waiting = later.iter().filter(|v| !v.has("fg_pass_sale")).count();
    assert!(waiting >= 4, "the later visitors wait their turn");
}

#[tokio::test]
async fn two_rooms_on_one_host_keep_their_own_cookies() {
    let shop = fast_shop().await;
    let key = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(key.path(), format!("{KEY}\n")).unwrap();
    let k = key.path().display();
    let text = config_text(
        shop.addr,
        &format!(
            "[[route]]\nname = \"products\"\nupstream = \"shop\"\npath_prefix = \"/products\"\nwaiting_room = \"sale\"\n\
             [[route]]\nname = \"cart\"\nupstream = \"shop\"\npath_prefix = \"/cart\"\nwaiting_room = \"other\"\n\
             [[waiting_room]]\nname = \"sale\"\nkey_file = \"{k}\"\nactive_users = 1\nnew_users_per_minute = 60\n\
             [[waiting_room]]\nname = \"other\"\nkey_file = \"{k}\"\nactive_users = 1\nnew_users_per_minute = 60\n"
        ),
    );
    let gw = gateway(&text).await;
    let mut v = Visitor::default();
    assert!(v
        .get(gw.addr(), "/products/1", &[])
        .await
        .text()
        .contains("Product 1"));
    assert_eq!(v.get(gw.addr(), "/cart", &[]).await.status, 200);
    assert!(v.has("fg_pass_sale") && v.has("fg_pass_other"));
    // Both rooms are full now; the first pass still works.
    let a = v.get(gw.addr(), "/products/2", &[]).await;
    assert!(a.text().contains("Product 2"), "{}", a.text());
    assert!(!Visitor::default()
        .get(gw.addr(), "/products/3", &[])
        .await
        .text()
        .contains("Product 3"));
}

fn https_request(path: &str, cookie: Option<&str>) -> Request<floodgate::body::Body> {
    let mut b = Request::get(path);
    if let Some(c) = cookie {
        b = b.header("cookie", c);
    }
    let mut req = b.body(floodgate::body::empty()).unwrap();
    req.extensions_mut()
        .insert(floodgate::context::RequestContext {
            client_ip: "127.0.0.1".parse().unwrap(),
            peer: "127.0.0.1:1".parse().unwrap(),
            request_id: http::HeaderValue::from_static("t"),
            started: Instant::now(),
            scheme: "https",
            route: "shop".into(),
        });
    req
}

/// The room's layer in front of an origin that answers "shop".
fn layered(
    room: &std::sync::Arc<floodgate::waiting_room::Room>,
) -> impl tower::Service<
    Request<floodgate::body::Body>,
    Response = http::Response<floodgate::body::Body>,
    Error = floodgate::error::GatewayError,
> {
    use tower::Layer;
    let origin = tower::service_fn(|_req: Request<floodgate::body::Body>| async {
        Ok::<_, floodgate::error::GatewayError>(http::Response::new(floodgate::body::full("shop")))
    });
    floodgate::waiting_room::WaitingRoomLayer::new(room.clone()).layer(origin)
}

fn set_cookies(resp: &http::Response<floodgate::body::Body>) -> Vec<String> {
    resp.headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn cookies_are_secure_when_the_request_came_over_https() {
    use floodgate::waiting_room::{metrics::Families, Room, RoomConfig};
    use tower::{Service, ServiceExt};
    let families = Families::register(&prometheus::Registry::new());
    let mut cfg = RoomConfig::new("sale", 1, 60);
    cfg.tickets_per_minute_per_client = 0;
    let room = Room::new(cfg, families.room("sale"));
    let mut svc = layered(&room);
    let first = svc
        .ready()
        .await
        .unwrap()
        .call(https_request("/", None))
        .await
        .unwrap();
    let pass = set_cookies(&first);
    assert!(
        pass[0].starts_with("fg_pass_sale=") && pass[0].ends_with("; Secure"),
        "{pass:?}"
    );
    let second = svc
        .ready()
        .await
        .unwrap()
        .call(https_request("/", None))
        .await
        .unwrap();
    let ticket = set_cookies(&second);
    assert!(
        ticket[0].starts_with("fg_ticket_sale=") && ticket[0].ends_with("; Secure"),
        "{ticket:?}"
    );
    // Over plain HTTP, no `Secure` (the browser would drop the cookie).
    let mut plain = https_request("/", None);
    plain
        .extensions_mut()
        .get_mut::<floodgate::context::RequestContext>()
        .unwrap()
        .scheme = "http";
    let third = svc.ready().await.unwrap().call(plain).await.unwrap();
    assert!(set_cookies(&third).iter().all(|c| !c.contains("Secure")));
}

#[tokio::test]
async fn a_backward_wall_clock_step_does_not_freeze_admissions() {
    use floodgate::waiting_room::{metrics::Families, ManualClock, Room, RoomConfig};
    use http_body_util::BodyExt;
    use tower::{Service, ServiceExt};
    let families = Families::register(&prometheus::Registry::new());
    let mut cfg = RoomConfig::new("sale", 100, 600); // 10 per second
    cfg.tickets_per_minute_per_client = 0;
    let clock = std::sync::Arc::new(ManualClock::default());
    let room = Room::with_clock(cfg, families.room("sale"), clock.clone());
    room.set_paused(true);
    let mut svc = layered(&room);
    let mut tickets = Vec::new();
    for _ in 0..20 {
        let resp = svc
            .ready()
            .await
            .unwrap()
            .call(https_request("/", None))
            .await
            .unwrap();
        let c = set_cookies(&resp)[0].split(';').next().unwrap().to_string();
        tickets.push(c);
    }
    room.set_paused(false);
    // The wall clock is stepped an hour back (NTP, a restored VM); time goes on.
    clock.step_wall_back(Duration::from_secs(3600));
    for _ in 0..20 {
        clock.advance(Duration::from_millis(100));
        room.tick();
    }
    let mut admitted = 0;
    for c in &tickets {
        let mut req = https_request("/", Some(c));
        req.headers_mut()
            .insert("x-floodgate-poll", "1".parse().unwrap());
        let resp = svc.ready().await.unwrap().call(req).await.unwrap();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        let j: serde_json::Value = serde_json::from_slice(&body).unwrap();
        if j["state"] == "admitted" {
            admitted += 1;
        }
    }
    // Two seconds at 10 per second.
    assert!((15..=21).contains(&admitted), "{admitted} admitted");
}
