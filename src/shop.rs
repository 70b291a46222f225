//! The simulated shop: a small origin that behaves like a real one on event day.
//!
//! Used by the demo, the tests and the load tests. It has a concurrency capacity:
//! up to `capacity` requests are worked on at once, each taking `latency`; more wait
//! their turn, so latency grows past capacity exactly as a worker pool's does. When
//! more than `collapse` requests are inside at once, it falls over like a real shop
//! whose database is saturated: every request finishing in that state fails with 503.
//!
//! | path | what |
//! |---|---|
//! | `GET /` | home page (cacheable, `max-age=2`) |
//! | `GET /products/{id}` | product page (cacheable, `max-age=2`, ETag, Last-Modified) |
//! | `GET /search?q=` | search results (`no-cache`) |
//! | `GET /cart` | the visitor's cart (`private`, sets a `cart` cookie) |
//! | `POST /checkout` | places an order; never cacheable |
//! | `GET /fast` | a tiny answer with no simulated work: the fastest endpoint |
//! | `GET /healthz` | health |
//! | `GET /__shop/stats` | JSON: in_flight, peak_in_flight, served, errors, checkouts |
//! | `POST /__shop/reset` | zero the counters |
//! | `ANY /__shop/echo` | echoes method, path, headers and body as JSON |
//! | `GET /__shop/slow?ms=N` | answers after N ms, holding capacity |
//! | `GET /__shop/stream?chunks=N&ms=M` | N chunks, M ms apart (response streaming) |
//! | `GET /__shop/session?value=end` | answers with `X-Floodgate-Session: VALUE` |
//! | `POST /__shop/upload` | reads the body frame by frame, counting `upload_bytes` as it goes |

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE, ETAG, LAST_MODIFIED, SET_COOKIE};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};

/// How the shop performs.
#[derive(Debug, Clone, Copy)]
pub struct ShopProfile {
    /// Requests worked on at once.
    pub capacity: usize,
    /// Time each request takes once it is worked on.
    pub latency: Duration,
    /// Requests inside at once above which every answer fails.
    pub collapse: usize,
}

impl Default for ShopProfile {
    fn default() -> Self {
        ShopProfile {
            capacity: 50,
            latency: Duration::from_millis(20),
            collapse: 200,
        }
    }
}

/// Counters the tests and load tests read.
#[derive(Debug, Default)]
pub struct ShopStats {
    /// Requests inside the shop now (waiting or worked on).
    pub in_flight: AtomicI64,
    /// The most requests ever inside at once.
    pub peak_in_flight: AtomicI64,
    /// Requests answered successfully.
    pub served: AtomicU64,
    /// Requests that failed because the shop had collapsed.
    pub errors: AtomicU64,
    /// Orders placed (`POST /checkout` answered 200).
    pub checkouts: AtomicU64,
    /// Every request received, including the fast and admin paths.
    pub received: AtomicU64,
    /// Connections accepted (a gateway that keeps its pool opens no new ones).
    pub connections: AtomicU64,
    /// Body bytes `/__shop/upload` has read so far, updated per frame.
    pub upload_bytes: AtomicU64,
    /// `/__shop/stream` answers whose last chunk has been sent.
    pub streams_done: AtomicU64,
    /// Requests received per path (cache tests count origin fetches with it).
    pub per_path: std::sync::Mutex<std::collections::HashMap<String, u64>>,
}

impl ShopStats {
    /// Requests received for one path (without the query).
    pub fn path_count(&self, path: &str) -> u64 {
        self.per_path
            .lock()
            .expect("stats lock")
            .get(path)
            .copied()
            .unwrap_or(0)
    }
}

impl ShopStats {
    /// The counters as JSON.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "in_flight": self.in_flight.load(Ordering::Relaxed),
            "peak_in_flight": self.peak_in_flight.load(Ordering::Relaxed),
            "served": self.served.load(Ordering::Relaxed),
            "errors": self.errors.load(Ordering::Relaxed),
            "checkouts": self.checkouts.load(Ordering::Relaxed),
            "received": self.received.load(Ordering::Relaxed),
            "upload_bytes": self.upload_bytes.load(Ordering::Relaxed),
            "streams_done": self.streams_done.load(Ordering::Relaxed),
        })
    }

    fn reset(&self) {
        self.peak_in_flight
            .store(self.in_flight.load(Ordering::Relaxed), Ordering::Relaxed);
        for c in [&self.served, &self.errors, &self.checkouts, &self.received] {
            c.store(0, Ordering::Relaxed);
        }
    }
}

struct Shop {
    profile: ShopProfile,
    workers: Semaphore,
    stats: Arc<ShopStats>,
}

/// A running shop.
pub struct ShopHandle {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its live counters.
    pub stats: Arc<ShopStats>,
    stop: watch::Sender<bool>,
}

impl ShopHandle {
    /// Stops accepting and closes open connections.
    pub fn stop(&self) {
        let _ = self.stop.send(true);
    }
}

impl Drop for ShopHandle {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Starts the shop on `addr` (port 0 picks a free port).
pub async fn start(addr: SocketAddr, profile: ShopProfile) -> std::io::Result<ShopHandle> {
    let listener = TcpListener::bind(addr).await?;
    Ok(start_on(listener, profile))
}

/// Starts the shop on an already bound listener.
pub fn start_on(listener: TcpListener, profile: ShopProfile) -> ShopHandle {
    let addr = listener.local_addr().expect("bound");
    let stats = Arc::new(ShopStats::default());
    let shop = Arc::new(Shop {
        profile,
        workers: Semaphore::new(profile.capacity.max(1)),
        stats: stats.clone(),
    });
    let (stop, mut stopped) = watch::channel(false);
    tokio::spawn(async move {
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder.http1().timer(TokioTimer::new()).keep_alive(true);
        let builder = Arc::new(builder);
        loop {
            let (stream, _) = tokio::select! {
                r = listener.accept() => match r { Ok(x) => x, Err(_) => continue },
                _ = stopped.changed() => return,
            };
            let _ = stream.set_nodelay(true);
            shop.stats.connections.fetch_add(1, Ordering::Relaxed);
            let shop = shop.clone();
            let builder = builder.clone();
            let mut stopped = stopped.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req| handle(shop.clone(), req));
                let conn = builder.serve_connection(TokioIo::new(stream), svc);
                tokio::select! {
                    _ = conn => {}
                    // A stopped shop drops its connections, as a crashed origin would.
                    _ = stopped.changed() => {}
                }
            });
        }
    });
    ShopHandle { addr, stats, stop }
}

type ShopBody = http_body_util::combinators::BoxBody<Bytes, Infallible>;

fn reply(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<ShopBody> {
    let mut r = Response::new(Full::new(body.into()).boxed());
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

/// Counts a request as inside the shop until it is answered.
struct Inside(Arc<ShopStats>);

impl Inside {
    fn enter(stats: &Arc<ShopStats>) -> (Self, i64) {
        let now = stats.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        stats.peak_in_flight.fetch_max(now, Ordering::SeqCst);
        (Inside(stats.clone()), now)
    }
}

impl Drop for Inside {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn handle(shop: Arc<Shop>, req: Request<Incoming>) -> Result<Response<ShopBody>, Infallible> {
    shop.stats.received.fetch_add(1, Ordering::Relaxed);
    let path = req.uri().path().to_string();
    let method = req.method().clone();
    {
        // Bounded: the test shop never sees more than a few thousand distinct paths.
        let mut per_path = shop.stats.per_path.lock().expect("stats lock");
        if per_path.len() < 10_000 || per_path.contains_key(&path) {
            *per_path.entry(path.clone()).or_default() += 1;
        }
    }
    // Paths that cost the shop nothing and do not count as load.
    match (&method, path.as_str()) {
        (&Method::GET, "/fast") => return Ok(reply(StatusCode::OK, "text/plain", "ok\n")),
        (&Method::GET, "/healthz") => return Ok(reply(StatusCode::OK, "text/plain", "healthy\n")),
        (&Method::GET, "/__shop/stats") => {
            return Ok(reply(
                StatusCode::OK,
                "application/json",
                shop.stats.to_json().to_string(),
            ));
        }
        (&Method::POST, "/__shop/reset") => {
            shop.stats.reset();
            return Ok(reply(StatusCode::OK, "text/plain", "reset\n"));
        }
        (_, "/__shop/echo") => return Ok(echo(req).await),
        (&Method::GET, "/__shop/session") => {
            // What a shop sends once an order is confirmed: end (or extend) the
            // shopper's waiting-room session.
            let value = query_param(req.uri().query().unwrap_or(""), "value").unwrap_or_default();
            let mut r = reply(StatusCode::OK, "text/plain", "session changed\n");
            if let Ok(v) = HeaderValue::from_str(&value) {
                r.headers_mut().insert("x-floodgate-session", v);
            }
            return Ok(r);
        }
        (&Method::POST, "/__shop/upload") => return Ok(upload(&shop.stats, req).await),
        (&Method::GET, "/__shop/stream") => {
            return Ok(stream(&shop.stats, req.uri().query().unwrap_or("")))
        }
        (_, p) if p.starts_with("/__shop/cache/") => return Ok(cache_test_page(&shop, req).await),
        _ => {}
    }

    let (inside, now) = Inside::enter(&shop.stats);
    let query = req.uri().query().unwrap_or("").to_string();
    let headers = req.headers().clone();
    // Read the whole body as a real shop would before working on it.
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let work = if path == "/__shop/slow" {
        Duration::from_millis(
            query_param(&query, "ms")
                .and_then(|v| v.parse().ok())
                .unwrap_or(1000),
        )
    } else {
        shop.profile.latency
    };
    {
        let _worker = shop.workers.acquire().await.expect("never closed");
        tokio::time::sleep(work).await;
    }
    let overloaded = now as usize > shop.profile.collapse
        || shop.stats.in_flight.load(Ordering::SeqCst) as usize > shop.profile.collapse;
    drop(inside);
    if overloaded {
        shop.stats.errors.fetch_add(1, Ordering::Relaxed);
        return Ok(reply(
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            "shop overloaded\n",
        ));
    }
    let resp = page(&shop, &method, &path, &query, &headers, body);
    if resp.status().is_success() {
        shop.stats.served.fetch_add(1, Ordering::Relaxed);
    }
    Ok(resp)
}

fn page(
    shop: &Shop,
    method: &Method,
    path: &str,
    query: &str,
    headers: &http::HeaderMap,
    body: Bytes,
) -> Response<ShopBody> {
    match (method, path) {
        (&Method::GET | &Method::HEAD, "/") => {
            let mut links = String::new();
            for id in 1..=12 {
                links.push_str(&format!(
                    "<li><a href=\"/products/{id}\">Product {id}</a></li>"
                ));
            }
            let mut r = reply(
                StatusCode::OK,
                "text/html; charset=utf-8",
                format!("<!doctype html><html><head><title>Demo shop</title></head><body><h1>Cyber Monday at the demo shop</h1><ul>{links}</ul><p><a href=\"/cart\">Cart</a></p></body></html>"),
            );
            r.headers_mut()
                .insert(CACHE_CONTROL, HeaderValue::from_static("public, max-age=2"));
            r
        }
        (&Method::GET | &Method::HEAD, p) if p.starts_with("/products/") => {
            let id = &p["/products/".len()..];
            let mut r = reply(
                StatusCode::OK,
                "text/html; charset=utf-8",
                format!("<!doctype html><html><head><title>Product {id}</title></head><body><h1>Product {id}</h1><p>Now 50% off.</p><form method=\"post\" action=\"/checkout\"><input type=\"hidden\" name=\"product\" value=\"{id}\"><button>Buy</button></form></body></html>"),
            );
            let h = r.headers_mut();
            h.insert(CACHE_CONTROL, HeaderValue::from_static("public, max-age=2"));
            if let Ok(v) = HeaderValue::from_str(&format!("\"product-{id}-v1\"")) {
                h.insert(ETAG, v);
            }
            h.insert(
                LAST_MODIFIED,
                HeaderValue::from_static("Mon, 23 Nov 2026 08:00:00 GMT"),
            );
            h.insert("surrogate-key", HeaderValue::from_static("products"));
            r
        }
        (&Method::GET, "/search") => {
            let q = query_param(query, "q").unwrap_or_default();
            let mut r = reply(
                StatusCode::OK,
                "text/html; charset=utf-8",
                format!("<!doctype html><h1>Results for {}</h1>", html_escape(&q)),
            );
            r.headers_mut()
                .insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            r
        }
        (&Method::GET, "/cart") => {
            let cart = headers
                .get_all(http::header::COOKIE)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(';'))
                .find_map(|c| c.trim().strip_prefix("cart=").map(str::to_string));
            let (id, new) = match cart {
                Some(id) => (id, false),
                None => (format!("{:016x}", rand::random::<u64>()), true),
            };
            let mut r = reply(
                StatusCode::OK,
                "application/json",
                serde_json::json!({"cart": id, "items": []}).to_string(),
            );
            let h = r.headers_mut();
            h.insert(CACHE_CONTROL, HeaderValue::from_static("private, no-store"));
            if new {
                if let Ok(v) =
                    HeaderValue::from_str(&format!("cart={id}; Path=/; HttpOnly; SameSite=Lax"))
                {
                    h.insert(SET_COOKIE, v);
                }
            }
            r
        }
        (&Method::POST, "/checkout") => {
            let n = shop.stats.checkouts.fetch_add(1, Ordering::Relaxed) + 1;
            let mut r = reply(
                StatusCode::OK,
                "application/json",
                serde_json::json!({"order": n, "bytes": body.len()}).to_string(),
            );
            r.headers_mut()
                .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
            r
        }
        (&Method::GET, "/__shop/slow") => reply(StatusCode::OK, "text/plain", "slow\n"),
        _ => reply(StatusCode::NOT_FOUND, "text/plain", "no such page\n"),
    }
}

async fn echo(req: Request<Incoming>) -> Response<ShopBody> {
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let headers: Vec<(String, String)> = parts
        .headers
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let v = serde_json::json!({
        "method": parts.method.as_str(),
        "uri": parts.uri.to_string(),
        "version": format!("{:?}", parts.version),
        "headers": headers,
        "body_len": body.len(),
        "body_sha": fnv(&body),
    });
    let mut r = reply(StatusCode::OK, "application/json", v.to_string());
    // A hop-by-hop field the gateway must not pass back to the client.
    r.headers_mut()
        .insert("connection", HeaderValue::from_static("x-origin-private"));
    r.headers_mut()
        .insert("x-origin-private", HeaderValue::from_static("secret"));
    r.headers_mut()
        .insert("keep-alive", HeaderValue::from_static("timeout=5"));
    r
}

async fn upload(stats: &Arc<ShopStats>, req: Request<Incoming>) -> Response<ShopBody> {
    let mut body = req.into_body();
    let mut all = Vec::new();
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(f) => {
                if let Some(d) = f.data_ref() {
                    stats
                        .upload_bytes
                        .fetch_add(d.len() as u64, Ordering::SeqCst);
                    all.extend_from_slice(d);
                }
            }
            Err(_) => return reply(StatusCode::BAD_REQUEST, "text/plain", "body failed\n"),
        }
    }
    reply(
        StatusCode::OK,
        "application/json",
        serde_json::json!({"body_len": all.len(), "body_sha": fnv(&all)}).to_string(),
    )
}

fn stream(stats: &Arc<ShopStats>, query: &str) -> Response<ShopBody> {
    let chunks: usize = query_param(query, "chunks")
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let ms: u64 = query_param(query, "ms")
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<http_body::Frame<Bytes>, Infallible>>(1);
    let stats = stats.clone();
    tokio::spawn(async move {
        for i in 0..chunks {
            if i > 0 {
                tokio::time::sleep(Duration::from_millis(ms)).await;
            }
            if tx
                .send(Ok(http_body::Frame::data(Bytes::from(format!(
                    "chunk {i}\n"
                )))))
                .await
                .is_err()
            {
                return;
            }
        }
        stats.streams_done.fetch_add(1, Ordering::SeqCst);
    });
    let body = http_body_util::StreamBody::new(tokio_stream_from(rx));
    let mut r = Response::new(body.boxed());
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    r
}

/// An mpsc receiver as a stream, without pulling in tokio-stream for one use.
fn tokio_stream_from<T>(
    mut rx: tokio::sync::mpsc::Receiver<T>,
) -> impl futures_util::Stream<Item = T> {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// A cheap body fingerprint so tests can check a body crossed intact.
pub fn fnv(b: &[u8]) -> String {
    let mut h: u64 = 0xcbf29ce484222325;
    for x in b {
        h ^= *x as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    format!("{h:016x}")
}

fn query_param(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == name).then(|| v.to_string())
    })
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

// === Cache test endpoints ===
//
// Origin behaviours the cache tests need, each under `/__shop/cache/`, answering any
// method with a body that says how many times the path was requested (`n=3`), so a
// test can tell a stored copy from a fresh one.
//
// | path | what |
// |---|---|
// | `/__shop/cache/cc?value=V` | `Cache-Control: V` (`+` for space); `&cookie=1` adds Set-Cookie, `&etag=1` an ETag (and answers a matching If-None-Match with 304), `&sk=K` a Surrogate-Key, `&ms=N` waits N ms, `&fail_after=N` answers 503 from the N+1th request on |
// | `/__shop/cache/vary` | `Vary: Accept-Encoding`, `max-age=60`, body names the encoding asked for |
// | `/__shop/cache/big?bytes=N` | `max-age=60`, a body of N bytes |
// | `/__shop/cache/fail` | 503, `no-store` |

async fn cache_test_page(shop: &Shop, req: Request<Incoming>) -> Response<ShopBody> {
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    let n = shop.stats.path_count(&path);
    let q = |name: &str| {
        query_param(&query, name).map(|v| {
            v.replace('+', " ")
                .replace("%3D", "=")
                .replace("%2C", ",")
                .replace("%20", " ")
        })
    };
    if let Some(ms) = q("ms").and_then(|v| v.parse::<u64>().ok()) {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    let mut r = match path.as_str() {
        "/__shop/cache/vary" => {
            let enc = req
                .headers()
                .get("accept-encoding")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("none")
                .to_string();
            let mut r = reply(StatusCode::OK, "text/plain", format!("n={n} enc={enc}"));
            r.headers_mut()
                .insert("vary", HeaderValue::from_static("Accept-Encoding"));
            r.headers_mut().insert(
                CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=60"),
            );
            r
        }
        "/__shop/cache/big" => {
            let bytes = q("bytes")
                .and_then(|v| v.parse::<usize>().ok())
                .unwrap_or(1 << 20);
            let mut r = reply(
                StatusCode::OK,
                "application/octet-stream",
                vec![b'x'; bytes],
            );
            r.headers_mut().insert(
                CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=60"),
            );
            r
        }
        "/__shop/cache/fail" => {
            let mut r = reply(
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain",
                format!("n={n} failing"),
            );
            r.headers_mut()
                .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
            r
        }
        _ => {
            let etag = HeaderValue::from_static("\"cc-v1\"");
            if q("etag").is_some() && req.headers().get(http::header::IF_NONE_MATCH) == Some(&etag)
            {
                let mut r = reply(StatusCode::NOT_MODIFIED, "text/plain", Bytes::new());
                r.headers_mut().insert(ETAG, etag);
                if let Some(v) = q("value").and_then(|v| HeaderValue::from_str(&v).ok()) {
                    r.headers_mut().insert(CACHE_CONTROL, v);
                }
                return r;
            }
            if q("fail_after")
                .and_then(|v| v.parse::<u64>().ok())
                .is_some_and(|f| n > f)
            {
                return reply(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "text/plain",
                    format!("n={n} failing"),
                );
            }
            let mut r = reply(StatusCode::OK, "text/plain", format!("n={n}"));
            let h = r.headers_mut();
            if let Some(v) = q("value").and_then(|v| HeaderValue::from_str(&v).ok()) {
                h.insert(CACHE_CONTROL, v);
            }
            if q("cookie").is_some() {
                h.insert(
                    SET_COOKIE,
                    HeaderValue::from_str(&format!("session=user{n}; Path=/")).expect("valid"),
                );
            }
            if q("etag").is_some() {
                h.insert(ETAG, etag);
            }
            if let Some(k) = q("sk").and_then(|v| HeaderValue::from_str(&v).ok()) {
                h.insert("surrogate-key", k);
            }
            r
        }
    };
    if req.method() == Method::HEAD {
        *r.body_mut() = Full::new(Bytes::new()).boxed();
    }
    r
}
