//! Test harness: a real shop, a real gateway, a real client, all on loopback ports
//! chosen by the kernel.
#![allow(dead_code)]

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpSocket;

use floodgate::shop::{self, ShopHandle, ShopProfile};
use floodgate::Gateway;

/// A shop with plenty of capacity and no simulated latency unless asked.
pub async fn fast_shop() -> ShopHandle {
    shop(ShopProfile {
        capacity: 64,
        latency: Duration::from_millis(1),
        collapse: 10_000,
    })
    .await
}

/// A shop with the given profile on a free loopback port.
pub async fn shop(profile: ShopProfile) -> ShopHandle {
    shop::start("127.0.0.1:0".parse().unwrap(), profile)
        .await
        .expect("shop starts")
}

/// The minimal config around `extra`: listeners on free ports, one upstream named
/// "shop" pointing at `shop`, and whatever routes `extra` adds (or one catch-all).
pub fn config_text(shop: SocketAddr, extra: &str) -> String {
    let route = if extra.contains("[[route]]") {
        String::new()
    } else {
        "[[route]]\nname = \"shop\"\nupstream = \"shop\"\n".to_string()
    };
    let server = if extra.contains("[server]") {
        String::new()
    } else {
        "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n".to_string()
    };
    format!(
        "{server}\n[log]\naccess_log = false\n\n[[upstream]]\nname = \"shop\"\nservers = [\"{shop}\"]\n\n{route}\n{extra}\n"
    )
}

/// Starts a gateway from config text.
pub async fn gateway(text: &str) -> Gateway {
    let config = floodgate::config::parse(text).unwrap_or_else(|e| panic!("config: {e:?}\n{text}"));
    Gateway::start(config).await.expect("gateway starts")
}

/// A gateway in front of `shop` with default settings.
pub async fn gateway_for(shop: &ShopHandle) -> Gateway {
    gateway(&config_text(shop.addr, "")).await
}

/// A pooled HTTP/1.1 client, as a browser or API client would use.
pub fn client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

/// What a test looks at in a response.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Answer {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// Sends a request and reads the whole answer.
pub async fn send(req: Request<Full<Bytes>>) -> Answer {
    let resp = client().request(req).await.expect("request completes");
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.expect("body completes").to_bytes();
    Answer {
        status: parts.status,
        headers: parts.headers,
        body,
    }
}

/// `GET http://{addr}{path}`.
pub async fn get(addr: SocketAddr, path: &str) -> Answer {
    send(
        Request::get(format!("http://{addr}{path}"))
            .body(Full::default())
            .unwrap(),
    )
    .await
}

/// Polls `check` until it is true or `within` passes; panics with `what` on timeout.
pub async fn eventually<F, Fut>(what: &str, within: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    loop {
        if check().await {
            return;
        }
        if Instant::now() > deadline {
            panic!("timed out after {within:?} waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The value of one Prometheus sample in the text exposition, if present.
pub fn metric(text: &str, name_and_labels: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(name_and_labels) && l[name_and_labels.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// The admin listener's `/metrics` text.
pub async fn metrics_text(gw: &Gateway) -> String {
    get(gw.admin_addr.expect("admin listener"), "/metrics")
        .await
        .text()
}
/// `GET path` from client address `from` with extra header fields.
pub async fn get_from(from: &str, gw: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Answer {
    let from: IpAddr = from.parse().unwrap();
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(from, 0)).unwrap();
    let stream = socket.connect(gw).await.expect("connect to the gateway");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let mut req = Request::get(path).header("host", "shop.test");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = sender
        .send_request(req.body(Full::<Bytes>::default()).unwrap())
        .await
        .expect("answer");
    let (parts, body) = resp.into_parts();
    Answer {
        status: parts.status,
        headers: parts.headers,
        body: body.collect().await.unwrap().to_bytes(),
    }
}

pub mod process;
pub mod redis;
