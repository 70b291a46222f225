//! The waiting room in a real browser: headless Chromium driven over the DevTools
//! protocol. Fails (does not skip) when Chromium is missing: `.ci/run` installs it.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use bytes::Bytes;
use common::*;
use floodgate::waiting_room::pow;
use futures_util::{SinkExt, StreamExt};
use http::Request;
use http_body_util::Full;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

const CHROMIUM: &str = "/usr/bin/chromium";

/// A headless Chromium and one page attached over CDP.
struct Browser {
    child: Child,
    ws: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
    session: String,
    next_id: u64,
    _profile: tempfile::TempDir,
}

impl Browser {
    async fn start() -> Browser {
        let profile = tempfile::tempdir().unwrap();
        let mut child = Command::new(CHROMIUM)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-dev-shm-usage",
                "--remote-debugging-port=0",
                "--window-size=900,820",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            // A zone that is not UTC, so "times in the visitor's local time" shows.
            .env("TZ", "Europe/Paris")
            .arg("about:blank")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {CHROMIUM} (install Debian's chromium): {e}"));
        // Chromium prints its DevTools address on stderr.
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(i) = line.find("ws://") {
                    let _ = tx.send(line[i..].trim().to_string());
                }
            }
        });
        let url = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("chromium prints its DevTools address");
        let (ws, _) = tokio_tungstenite::connect_async(url.as_str())
            .await
            .expect("DevTools websocket");
        let mut b = Browser {
            child,
            ws,
            session: String::new(),
            next_id: 0,
            _profile: profile,
        };
        let target = b
            .call("Target.createTarget", json!({"url": "about:blank"}))
            .await;
        let attached = b
            .call(
                "Target.attachToTarget",
                json!({"targetId": target["targetId"], "flatten": true}),
            )
            .await;
        b.session = attached["sessionId"].as_str().unwrap().to_string();
        b
    }

    /// Sends one command (to the page once attached) and waits for its result.
    async fn call(&mut self, method: &str, params: Value) -> Value {
        match self.try_call(method, params).await {
            Ok(v) => v,
            Err(e) => panic!("{method}: {e}"),
        }
    }

    /// Like `call`, but Chromium's refusal comes back as an error.
    async fn try_call(&mut self, method: &str, params: Value) -> Result<Value, Value> {
        self.next_id += 1;
        let id = self.next_id;
        let mut msg = json!({"id": id, "method": method, "params": params});
        if !self.session.is_empty() {
            msg["sessionId"] = json!(self.session);
        }
        self.ws
            .send(Message::text(msg.to_string()))
            .await
            .expect("send to chromium");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let m = tokio::time::timeout(left, self.ws.next())
                .await
                .unwrap_or_else(|_| panic!("{method}: no answer from chromium"))
                .expect("websocket open")
                .expect("websocket message");
            if let Message::Text(t) = m {
                let v: Value = serde_json::from_str(&t).unwrap();
                if v["id"] == id {
                    return match v.get("error") {
                        Some(e) => Err(e.clone()),
                        None => Ok(v["result"].clone()),
                    };
                }
            }
        }
    }

    async fn goto(&mut self, url: &str) {
        self.call("Page.navigate", json!({"url": url})).await;
    }

    /// Evaluates a JS expression in the page; its value, or Null while the page loads.
    async fn eval(&mut self, expr: &str) -> Value {
        // A page in the middle of navigating ("Inspected target navigated or
        // closed") has no value yet.
        match self
            .try_call(
                "Runtime.evaluate",
                json!({"expression": expr, "returnByValue": true}),
            )
            .await
        {
            Ok(r) => r["result"]["value"].clone(),
            Err(_) => Value::Null,
        }
    }

    async fn wait_for(&mut self, what: &str, expr: &str, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            if self.eval(expr).await == json!(true) {
                return;
            }
            let body = self
                .eval("document.body ? document.body.innerText : ''")
                .await;
            assert!(
                Instant::now() < deadline,
                "timed out after {within:?} waiting for: {what}; page says {body}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Browser {
    /// Saves a screenshot of the page under target/.
    async fn screenshot(&mut self, name: &str) {
        let shot = self
            .call("Page.captureScreenshot", json!({"format": "png"}))
            .await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().unwrap())
            .unwrap();
        assert!(png.len() > 1000);
        let out = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("target")
            .join(name);
        // target/ is not there when CARGO_TARGET_DIR points elsewhere.
        std::fs::create_dir_all(out.parent().unwrap()).unwrap();
        std::fs::write(&out, &png).unwrap();
    }

    async fn text_of(&mut self, selector: &str) -> Value {
        self.eval(&format!(
            "(function () {{ var e = document.querySelector({selector:?}); return e ? e.textContent.trim() : null; }})()"
        ))
        .await
    }
}

/// A small inline logo (an SVG data URI): no file to serve, no network.
const LOGO: &str = "data:image/svg+xml,<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"40\" height=\"40\"><rect width=\"40\" height=\"40\" rx=\"9\" fill=\"%230b6bcb\"/><path d=\"M11 21l6 6 12-13\" stroke=\"white\" stroke-width=\"4\" fill=\"none\"/></svg>";

fn room_text(shop: std::net::SocketAddr, extra: &str) -> String {
    config_text(
        shop,
        &format!(
            "[[route]]\nname = \"shop\"\nupstream = \"shop\"\nwaiting_room = \"sale\"\n\n\
             [[waiting_room]]\nname = \"sale\"\nactive_users = 1\nnew_users_per_minute = 600\n\
             portal_name = \"Cyber Monday Deals\"\nlogo_url = '{LOGO}'\n{extra}\n"
        ),
    )
}

async fn admin_post(gw: &floodgate::Gateway, action: &str, body: &str) {
    let a = send(
        Request::post(format!(
            "http://{}/admin/waiting-rooms/sale/{action}",
            gw.admin_addr.unwrap()
        ))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap(),
    )
    .await;
    assert_eq!(a.status, 200, "{action}: {}", a.text());
}

/// A visitor who takes a ticket over HTTP and keeps it (without polling).
async fn ticket_holder(addr: std::net::SocketAddr, headers: &[(&str, &str)]) -> Answer {
    let mut b = Request::get(format!("http://{addr}/")).header("accept", "application/json");
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    send(b.body(Full::default()).unwrap()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_in_line_sees_its_progress_in_local_time_and_lands_on_the_shop() {
    let shop = fast_shop().await;
    let gw = gateway(&room_text(shop.addr, "")).await;
    // One shopper fills the room; three more wait ahead of the browser.
    let first = get(gw.addr(), "/").await;
    assert!(first.text().contains("Cyber Monday"));
    for _ in 0..3 {
        assert_eq!(
            ticket_holder(gw.addr(), &[]).await.json()["state"],
            "waiting"
        );
    }

    let mut browser = Browser::start().await;
    let url = format!("http://{}/products/5", gw.addr());
    browser.goto(&url).await;
    browser
        .wait_for(
            "the waiting page",
            "document.getElementById('waiting-room') !== null",
            Duration::from_secs(10),
        )
        .await;
    assert_eq!(
        browser.text_of("#position").await,
        json!("4"),
        "three ahead"
    );
    assert_eq!(browser.text_of("h1").await, json!("You are in line"));
    // The heading is said once, not again as a sub-heading or label.
    let repeats = browser
        .eval("document.body.innerText.split('You are in line').length - 1")
        .await;
    assert_eq!(repeats, json!(1));
    assert_eq!(
        browser
            .eval("document.querySelectorAll('h1, h2, h3').length")
            .await,
        json!(1)
    );
    assert_eq!(
        browser.text_of("#progress-text").await,
        json!("3 people ahead of you, 3 when you arrived")
    );
    let next = browser.text_of("#next").await;
    assert!(
        next.as_str().unwrap().starts_with("When it is your turn"),
        "{next}"
    );
    assert_eq!(
        browser.text_of("#portal-name").await,
        json!("Cyber Monday Deals")
    );
    browser
        .wait_for(
            "the logo drawn",
            "document.querySelector('.brand img').naturalWidth > 0",
            Duration::from_secs(5),
        )
        .await;
    // Local time: the script rewrote "HH:MM:SS UTC" in the browser's zone (Paris).
    let updated = browser.text_of("#updated").await;
    let updated = updated.as_str().unwrap();
    assert!(!updated.contains("UTC"), "{updated}");
    assert!(
        updated.contains("CET") || updated.contains("GMT+1"),
        "{updated}"
    );
    assert_eq!(
        browser
            .eval("document.querySelector('[aria-live]') !== null")
            .await,
        json!(true)
    );

    // Two of the three ahead go in: the bar moves without a reload.
    admin_post(&gw, "settings", r#"{"active_users": 3}"#).await;
    browser
        .wait_for(
            "one person ahead",
            "document.getElementById('progress-text').textContent.startsWith('1 person ahead')",
            Duration::from_secs(30),
        )
        .await;
    assert_eq!(
        browser.text_of("#progress-text").await,
        json!("1 person ahead of you, 3 when you arrived")
    );
    assert_eq!(
        browser
            .eval("document.querySelector('[role=progressbar]').getAttribute('aria-valuenow')")
            .await,
        json!("67")
    );
    // Let the bar's short animation finish before the picture.
    tokio::time::sleep(Duration::from_millis(900)).await;
    browser.screenshot("waiting-room.png").await;

    // Paused: the page says so and shows no expected wait.
    admin_post(&gw, "pause", "").await;
    browser
        .wait_for(
            "the paused page",
            "document.querySelector('h1') !== null && document.querySelector('h1').textContent === 'The line is paused'",
            Duration::from_secs(30),
        )
        .await;
    assert_eq!(browser.text_of("#wait").await, json!("paused"));
    assert_eq!(browser.text_of("#position").await, json!("2"));
    browser.screenshot("waiting-room-paused.png").await;
    admin_post(&gw, "resume", "").await;

    // Room for everyone: the page's own polling notices the turn and lands in the shop.
    admin_post(&gw, "settings", r#"{"active_users": 10}"#).await;
    browser
        .wait_for(
            "the shop's product page",
            "document.body !== null && document.body.innerText.includes('Now 50% off')",
            Duration::from_secs(30),
        )
        .await;
    assert_eq!(browser.eval("document.title").await, json!("Product 5"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_solves_the_proof_of_work_and_gets_its_place_in_line_in_french() {
    let shop = fast_shop().await;
    // The shipped difficulty, to see what it costs a real browser.
    let gw = gateway(&room_text(shop.addr, "proof_of_work = {}")).await;
    // The first visitor solves natively and fills the room.
    let ask = ticket_holder(gw.addr(), &[]).await.json();
    assert_eq!(ask["state"], "challenge");
    assert_eq!(ask["challenge"]["difficulty_bits"], pow::DEFAULT_DIFFICULTY);
    let solution = pow::solve(ask["challenge"]["value"].as_str().unwrap()).unwrap();
    let inside = ticket_holder(gw.addr(), &[("x-floodgate-pow", &solution)]).await;
    assert_eq!(inside.status, 200);

    let mut browser = Browser::start().await;
    browser.call("Network.enable", json!({})).await;
    browser
        .call(
            "Network.setExtraHTTPHeaders",
            json!({"headers": {"Accept-Language": "fr-FR,fr;q=0.9"}}),
        )
        .await;
    browser
        .goto(&format!("http://{}/products/7", gw.addr()))
        .await;
    browser
        .wait_for(
            "the challenge page",
            "document.getElementById('waiting-room') !== null",
            Duration::from_secs(10),
        )
        .await;
    // State and heading read together: the script may reload the page at any moment.
    let seen = browser
        .eval(
            "(function () { var m = document.getElementById('waiting-room'); var h = document.querySelector('h1'); \
             return m && h ? [m.dataset.state, h.textContent] : null; })()",
        )
        .await;
    // The script may already have solved it and reloaded: either is the page at work.
    if seen[0] == json!("challenge") {
        assert_eq!(seen[1], json!("Attribution de votre place dans la file"));
        browser.screenshot("waiting-room-challenge.png").await;
    }
    browser
        .wait_for(
            "a place in line after the proof of work",
            "document.getElementById('waiting-room') !== null && document.getElementById('waiting-room').dataset.state === 'waiting'",
            Duration::from_secs(90),
        )
        .await;
    assert_eq!(browser.text_of("#position").await, json!("1"));
    assert_eq!(
        browser.text_of("h1").await,
        json!("Vous êtes dans la file d'attente")
    );
    let took = browser.eval("sessionStorage.getItem('fg-pow-ms')").await;
    eprintln!(
        "proof of work at {} bits solved by headless Chromium in {took} ms",
        pow::DEFAULT_DIFFICULTY
    );
    assert!(took.is_string(), "the page solved it: {took}");
    let cookies = browser.call("Network.getCookies", json!({})).await;
    let names: Vec<&str> = cookies["cookies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"fg_ticket_sale"), "{names:?}");
    assert_eq!(shop.stats.path_count("/products/7"), 0, "still in line");
}
