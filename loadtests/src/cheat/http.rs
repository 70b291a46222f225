//! A tiny HTTP/1.1 client for the cheating scenario: one connection per request from
//! a chosen loopback source address (each person is its own 127.x.y.z, as each
//! shopper is its own address on the Internet), and a cookie jar like a browser's.

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// One request's time limit: the gateway answers waiting pages itself, at once.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);
/// Bodies are read up to this size (pages are a few KiB).
const MAX_BODY: usize = 256 * 1024;

/// What came back.
#[derive(Debug, Default)]
pub struct Reply {
    /// Status code.
    pub status: u16,
    /// `Set-Cookie` values.
    pub set_cookies: Vec<String>,
    /// The body, lossily as text.
    pub body: String,
}

impl Reply {
    /// Whether a `Set-Cookie` sets (not clears) a cookie whose name starts with
    /// `prefix` (`fg_pass`, `fg_ticket`: rooms may suffix their names).
    pub fn sets(&self, prefix: &str) -> bool {
        self.set_cookies.iter().any(|c| {
            let kv = c.split(';').next().unwrap_or("");
            kv.split_once('=').is_some_and(|(k, v)| {
                k.starts_with(prefix) && !v.is_empty() && !c.contains("Max-Age=0")
            })
        })
    }

    /// The JSON body's `state`, if JSON.
    pub fn state(&self) -> Option<String> {
        let v: serde_json::Value = serde_json::from_str(&self.body).ok()?;
        v["state"].as_str().map(String::from)
    }

    /// The JSON body's `people_ahead`, if JSON.
    pub fn people_ahead(&self) -> Option<u64> {
        let v: serde_json::Value = serde_json::from_str(&self.body).ok()?;
        v["people_ahead"].as_u64()
    }

    /// Whether this is the shop's own page (not a waiting answer).
    pub fn is_shop(&self) -> bool {
        self.status == 200 && self.body.contains("Now 50% off")
    }
}

/// A browser's cookies, for one tab or one person.
#[derive(Debug, Default, Clone)]
pub struct Jar {
    cookies: Vec<(String, String)>,
}

impl Jar {
    /// Keeps what a reply sets, drops what it clears.
    pub fn absorb(&mut self, r: &Reply) {
        for sc in &r.set_cookies {
            let kv = sc.split(';').next().unwrap_or("");
            let Some((k, v)) = kv.split_once('=') else {
                continue;
            };
            self.cookies.retain(|(n, _)| n != k);
            if !v.is_empty() && !sc.contains("Max-Age=0") {
                self.cookies.push((k.to_string(), v.to_string()));
            }
        }
    }

    /// The first cookie whose name starts with `prefix`, as (name, value).
    pub fn find(&self, prefix: &str) -> Option<(String, String)> {
        self.cookies
            .iter()
            .find(|(k, _)| k.starts_with(prefix))
            .cloned()
    }

    /// Sets one cookie (a copied ticket or pass).
    pub fn set(&mut self, name: &str, value: &str) {
        self.cookies.retain(|(n, _)| n != name);
        self.cookies.push((name.to_string(), value.to_string()));
    }

    fn header(&self) -> Option<String> {
        (!self.cookies.is_empty()).then(|| {
            self.cookies
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join("; ")
        })
    }
}

/// How a request asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ask {
    /// A page load (what a refresh sends).
    Page,
    /// The page's status poll (JSON).
    Poll,
}

/// `GET path` from `src` to `dst` with `jar`'s cookies; the jar keeps what is set.
pub async fn get(
    src: IpAddr,
    dst: SocketAddr,
    path: &str,
    ask: Ask,
    jar: &mut Jar,
) -> anyhow::Result<Reply> {
    let r = tokio::time::timeout(REQUEST_TIMEOUT, send(src, dst, path, ask, jar.header()))
        .await
        .map_err(|_| anyhow::anyhow!("GET {path}: no answer within {REQUEST_TIMEOUT:?}"))??;
    jar.absorb(&r);
    Ok(r)
}

async fn send(
    src: IpAddr,
    dst: SocketAddr,
    path: &str,
    ask: Ask,
    cookie: Option<String>,
) -> anyhow::Result<Reply> {
    anyhow::ensure!(
        src.is_loopback() && dst.ip().is_loopback(),
        "the cheating scenario runs on loopback only ({src} -> {dst})"
    );
    let sock = match src {
        IpAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        IpAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    sock.bind(SocketAddr::new(src, 0))?;
    let stream = sock.connect(dst).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    let conn = tokio::spawn(conn);
    let mut b = Request::get(path).header(http::header::HOST, dst.to_string());
    b = match ask {
        Ask::Page => b.header(http::header::ACCEPT, "text/html"),
        Ask::Poll => b
            .header(http::header::ACCEPT, "application/json")
            .header("x-floodgate-poll", "1"),
    };
    if let Some(c) = cookie {
        b = b.header(http::header::COOKIE, c);
    }
    let resp = sender.send_request(b.body(Empty::<Bytes>::new())?).await?;
    let status: StatusCode = resp.status();
    let set_cookies = resp
        .headers()
        .get_all(http::header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok().map(String::from))
        .collect();
    let body = http_body_util::Limited::new(resp.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(|e| anyhow::anyhow!("reading {path}: {e}"))?
        .to_bytes();
    conn.abort();
    Ok(Reply {
        status: status.as_u16(),
        set_cookies,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}
