//! The waiting room in a real browser: headless Chromium driven over the DevTools
//! protocol. Fails (does not skip) when Chromium is missing: `.ci/run` installs it.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use common::*;
use futures_util::{SinkExt, StreamExt};
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
                "--window-size=900,700",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
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
                    assert!(v.get("error").is_none(), "{method}: {v}");
                    return v["result"].clone();
                }
            }
        }
    }

    async fn goto(&mut self, url: &str) {
        self.call("Page.navigate", json!({"url": url})).await;
    }

    /// Evaluates a JS expression in the page; its value, or Null while the page loads.
    async fn eval(&mut self, expr: &str) -> Value {
        let r = self
            .call(
                "Runtime.evaluate",
                json!({"expression": expr, "returnByValue": true}),
            )
            .await;
        r["result"]["value"].clone()
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_at_a_full_sale_sees_its_place_waits_and_lands_on_the_shop() {
    let shop = fast_shop().await;
    let text = config_text(
        shop.addr,
        "[[route]]\nname = \"shop\"\nupstream = \"shop\"\nwaiting_room = \"sale\"\n\n\
         [[waiting_room]]\nname = \"sale\"\nactive_users = 1\nnew_users_per_minute = 600\n\
         session_duration = \"3s\"\n",
    );
    let gw = gateway(&text).await;
    // One shopper fills the room.
    let first = get(gw.addr(), "/").await;
    assert!(first.text().contains("Cyber Monday"));

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
    let position = browser
        .eval("document.getElementById('position').textContent")
        .await;
    assert_eq!(position, json!("1"), "first in line");
    let heading = browser
        .eval("document.querySelector('h1').textContent")
        .await;
    assert_eq!(heading, json!("You are in line"));
    let live = browser
        .eval("document.querySelector('[aria-live]') !== null")
        .await;
    assert_eq!(live, json!(true));
    let shot = browser
        .call("Page.captureScreenshot", json!({"format": "png"}))
        .await;
    let png = base64::engine::general_purpose::STANDARD
        .decode(shot["data"].as_str().unwrap())
        .unwrap();
    let out = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/waiting-room.png");
    std::fs::write(&out, &png).unwrap();
    assert!(png.len() > 1000);

    // The browser does nothing; the first shopper's pass expires; the page's own
    // polling notices the turn and reloads into the shop.
    browser
        .wait_for(
            "the shop's product page",
            "document.body !== null && document.body.innerText.includes('Now 50% off')",
            Duration::from_secs(20),
        )
        .await;
    let title = browser.eval("document.title").await;
    assert_eq!(title, json!("Product 5"));
}
