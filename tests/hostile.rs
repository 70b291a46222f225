//! Hostile and malformed requests at the edge, byte for byte: raw sockets (and HTTP/2
//! frames where the protocol differs), asserting both what the client got and what
//! the origin received, so that a 400 that still reached the origin fails the test.

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use common::{config_text, eventually, gateway};
use http::Request;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

// === A recording origin ===

/// One request as the origin read it off the wire.
#[derive(Debug, Clone)]
struct Seen {
    /// The request line and header lines, as sent.
    head: String,
}

impl Seen {
    fn target(&self) -> &str {
        self.head.split(' ').nth(1).unwrap_or("")
    }

    fn method(&self) -> &str {
        self.head.split(' ').next().unwrap_or("")
    }

    /// Every value of `name`, one per field line, in order.
    fn all(&self, name: &str) -> Vec<String> {
        self.head
            .lines()
            .skip(1)
            .filter_map(|l| l.split_once(':'))
            .filter(|(k, _)| k.trim().eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim().to_string())
            .collect()
    }

    fn one(&self, name: &str) -> Option<String> {
        let all = self.all(name);
        assert!(
            all.len() <= 1,
            "{name} sent {} times: {}",
            all.len(),
            self.head
        );
        all.into_iter().next()
    }
}

/// An HTTP/1.1 origin on loopback that records each request head and answers with
/// `reply` (a whole response, bytes as they go on the wire). `/slow…` waits 3 s first.
struct Origin {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
}

const OK: &str = "HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-type: text/plain\r\n\r\nok";

impl Origin {
    async fn start(reply: &'static str) -> Origin {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = seen.clone();
        tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                tokio::spawn(serve_origin_conn(sock, record.clone(), reply));
            }
        });
        Origin { addr, seen }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    fn last(&self) -> Seen {
        self.seen().pop().expect("the origin received a request")
    }
}

async fn serve_origin_conn(mut sock: TcpStream, seen: Arc<Mutex<Vec<Seen>>>, reply: &str) {
    let mut buf = Vec::new();
    loop {
        let Some(end) = read_head(&mut sock, &mut buf).await else {
            return;
        };
        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
        buf.drain(..end + 4);
        let s = Seen { head };
        // Bodies in these tests are small: a length, or chunks up to the last one.
        if s.all("transfer-encoding")
            .iter()
            .any(|t| t.contains("chunked"))
        {
            loop {
                if let Some(i) = buf.windows(5).position(|w| w == b"0\r\n\r\n") {
                    buf.drain(..i + 5);
                    break;
                }
                let mut chunk = [0u8; 4096];
                match sock.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(k) => buf.extend_from_slice(&chunk[..k]),
                }
            }
        } else if let Some(n) = s
            .all("content-length")
            .first()
            .and_then(|n| n.parse::<usize>().ok())
        {
            while buf.len() < n {
                let mut chunk = [0u8; 4096];
                match sock.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(k) => buf.extend_from_slice(&chunk[..k]),
                }
            }
            buf.drain(..n);
        }
        let slow = s.target().starts_with("/slow");
        seen.lock().unwrap().push(s);
        if slow {
            tokio::time::sleep(Duration::from_secs(3)).await;
        }
        if sock.write_all(reply.as_bytes()).await.is_err() {
            return;
        }
    }
}

/// Reads until a blank line; the offset of "\r\n\r\n", or None at EOF.
async fn read_head(sock: &mut TcpStream, buf: &mut Vec<u8>) -> Option<usize> {
    loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            return Some(i);
        }
        let mut chunk = [0u8; 4096];
        match sock.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

// === A raw client ===

/// A response as the client read it off the wire.
#[derive(Debug)]
struct Got {
    status: u16,
    head: String,
    body: String,
}

impl Got {
    fn header(&self, name: &str) -> Option<String> {
        self.all(name).into_iter().next()
    }

    fn all(&self, name: &str) -> Vec<String> {
        self.head
            .lines()
            .skip(1)
            .filter_map(|l| l.split_once(':'))
            .filter(|(k, _)| k.trim().eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim().to_string())
            .collect()
    }
}

/// Writes `request` as is and reads the answer until the server closes (requests here
/// say `Connection: close`, and a refused one is closed by the server anyway).
async fn raw(addr: SocketAddr, request: &str) -> Got {
    let mut sock = TcpStream::connect(addr).await.unwrap();
    sock.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), sock.read_to_end(&mut out))
        .await
        .expect("the gateway answers and closes")
        .ok();
    let text = String::from_utf8_lossy(&out).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    Got {
        status,
        head: head.to_string(),
        body: body.to_string(),
    }
}

/// `GET {target}` with the given extra header lines, `Connection: close`.
fn get(target: &str, headers: &[&str]) -> String {
    let mut r = format!("GET {target} HTTP/1.1\r\n");
    for h in headers {
        r.push_str(h);
        r.push_str("\r\n");
    }
    r.push_str("Connection: close\r\n\r\n");
    r
}

/// A gateway in front of `origin` with `extra` config (routes, `[server]` keys).
async fn gateway_for(origin: &Origin, extra: &str) -> floodgate::Gateway {
    gateway(&config_text(origin.addr, extra)).await
}

const SERVER: &str = "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n";

// === Host ===

#[tokio::test]
async fn a_request_with_two_host_fields_gets_400_and_never_reaches_the_origin() {
    let origin = Origin::start(OK).await;
    let gw = gateway_for(&origin, "").await;
    let got = raw(
        gw.addr(),
        &get("/", &["Host: shop.example.com", "Host: evil.example"]),
    )
    .await;
    assert_eq!(got.status, 400, "{got:?}");
    assert!(got.header("x-request-id").is_some(), "{got:?}");
    assert_eq!(origin.count(), 0, "the origin saw {:?}", origin.seen());

    // The same request with one Host goes through: the refusal above was the Host's.
    let got = raw(gw.addr(), &get("/", &["Host: shop.example.com"])).await;
    assert_eq!((got.status, got.body.as_str()), (200, "ok"));
    assert_eq!(origin.last().all("host"), ["shop.example.com"]);
}

#[tokio::test]
async fn a_host_with_userinfo_a_slash_a_space_or_a_bad_port_gets_400_and_never_reaches_the_origin()
{
    let origin = Origin::start(OK).await;
    let gw = gateway_for(&origin, "").await;
    for bad in [
        "localhost@evil.example",
        "shop.example.com/evil",
        "shop example.com",
        "shop.example.com:99999x",
        "shop.example.com:65536",
        "[::1",
    ] {
        let got = raw(gw.addr(), &get("/", &[&format!("Host: {bad}")])).await;
        assert_eq!(got.status, 400, "Host: {bad} → {got:?}");
        // Answered by the gateway (hyper's own refusals carry no id).
        assert!(got.header("x-request-id").is_some(), "{got:?}");
        assert_eq!(origin.count(), 0, "Host: {bad} reached the origin");
    }
    // An absolute-form target's authority is checked the same way.
    let got = raw(
        gw.addr(),
        &get("http://localhost@evil.example/", &["Host: localhost"]),
    )
    .await;
    assert_eq!(got.status, 400, "{got:?}");
    assert_eq!(origin.count(), 0);

    for good in ["shop.example.com:8080", "127.0.0.1", "[::1]:65535"] {
        let got = raw(gw.addr(), &get("/", &[&format!("Host: {good}")])).await;
        assert_eq!(got.status, 200, "Host: {good} → {got:?}");
        assert_eq!(origin.last().all("host"), [good]);
    }
}

/// Sends one HTTP/2 request (prior knowledge), returns the whole answer, or the error
/// when the server refused the stream itself.
async fn h2(addr: SocketAddr, req: Request<Empty<Bytes>>) -> Result<http::Response<Bytes>, String> {
    let io = TokioIo::new(TcpStream::connect(addr).await.unwrap());
    let (mut send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
        .await
        .unwrap();
    tokio::spawn(conn);
    let resp = send.send_request(req).await.map_err(|e| e.to_string())?;
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
    Ok(http::Response::from_parts(parts, body))
}

#[tokio::test]
async fn an_h2_authority_with_userinfo_or_a_conflicting_host_is_refused_before_the_origin() {
    let origin = Origin::start(OK).await;
    let gw = gateway_for(&origin, "").await;
    let userinfo = Request::get(format!("http://localhost@{}/", gw.addr()))
        .body(Empty::new())
        .unwrap();
    // h2 accepts userinfo in :authority (http::Uri parses it); the edge does not.
    let r = h2(gw.addr(), userinfo).await.expect("an answer");
    assert_eq!(r.status(), 400, "{r:?}");
    assert!(r.headers().contains_key("x-request-id"));
    let conflicting = Request::get(format!("http://shop.example.com:{}/", gw.addr().port()))
        .header("host", "evil.example")
        .body(Empty::new())
        .unwrap();
    let r = h2(gw.addr(), conflicting).await.expect("an answer");
    assert_eq!(r.status(), 400, "{r:?}");
    assert!(r.headers().contains_key("x-request-id"));
    let authority = format!("shop.example.com:{}", gw.addr().port());
    let twice = Request::get(format!("http://{authority}/"))
        .header("host", &authority)
        .header("host", &authority)
        .body(Empty::new())
        .unwrap();
    let r = h2(gw.addr(), twice).await.expect("an answer");
    assert_eq!(r.status(), 400, "two Host fields over h2: {r:?}");
    assert_eq!(origin.count(), 0, "the origin saw {:?}", origin.seen());

    // A sane :authority goes through, as Host, with the path normalised.
    let good = Request::get(format!(
        "http://shop.example.com:{}/static/../products/1",
        gw.addr().port()
    ))
    .body(Empty::new())
    .unwrap();
    let r = h2(gw.addr(), good).await.expect("an answer");
    assert_eq!((r.status().as_u16(), &r.body()[..]), (200, &b"ok"[..]));
    let seen = origin.last();
    assert_eq!(seen.target(), "/products/1");
    assert_eq!(
        seen.one("host"),
        Some(format!("shop.example.com:{}", gw.addr().port()))
    );
}

// === Forwarding and override headers ===

const SPOOFED: &[&str] = &[
    "X-Forwarded-For: 6.6.6.6",
    "X-Forwarded-Proto: https",
    "X-Forwarded-Host: evil.example",
    "X-Forwarded-Scheme: https",
    "X-Forwarded-Port: 443",
    "Forwarded: for=6.6.6.6;proto=https;host=evil.example",
    "X-Real-IP: 6.6.6.6",
    "X-Original-URL: /admin",
    "X-Rewrite-URL: /admin",
    "X-Host: evil.example",
    "X-HTTP-Method-Override: DELETE",
];

#[tokio::test]
async fn forwarding_and_override_headers_from_an_untrusted_peer_never_reach_the_origin() {
    let origin = Origin::start(OK).await;
    let gw = gateway_for(&origin, "").await;
    let mut headers = vec!["Host: shop.example.com"];
    headers.extend_from_slice(SPOOFED);
    let got = raw(gw.addr(), &get("/products/1", &headers)).await;
    assert_eq!((got.status, got.body.as_str()), (200, "ok"));

    let seen = origin.last();
    // What the gateway saw, not what the client claimed.
    assert_eq!(seen.one("x-forwarded-for").as_deref(), Some("127.0.0.1"));
    assert_eq!(seen.one("x-forwarded-proto").as_deref(), Some("http"));
    assert_eq!(
        seen.one("x-forwarded-host").as_deref(),
        Some("shop.example.com")
    );
    assert_eq!(seen.one("x-real-ip").as_deref(), Some("127.0.0.1"));
    for gone in [
        "x-forwarded-scheme",
        "x-forwarded-port",
        "forwarded",
        "x-original-url",
        "x-rewrite-url",
        "x-host",
        "x-http-method-override",
    ] {
        assert_eq!(
            seen.all(gone),
            Vec::<String>::new(),
            "{gone} reached the origin"
        );
    }
    assert_eq!((seen.method(), seen.target()), ("GET", "/products/1"));
}

#[tokio::test]
async fn the_stripped_header_lists_are_configurable() {
    let origin = Origin::start(OK).await;
    let gw = gateway_for(
        &origin,
        &format!("{SERVER}untrusted_headers = [\"x-real-ip\"]\nstrip_headers = [\"x-secret-*\"]\n"),
    )
    .await;
    let got = raw(
        gw.addr(),
        &get(
            "/",
            &[
                "Host: shop",
                "X-Secret-Token: 1",
                "X-Original-URL: /kept-on-request",
                "X-Real-IP: 6.6.6.6",
            ],
        ),
    )
    .await;
    assert_eq!(got.status, 200);
    let seen = origin.last();
    assert!(seen.all("x-secret-token").is_empty());
    assert_eq!(
        seen.one("x-original-url").as_deref(),
        Some("/kept-on-request")
    );
    assert_eq!(seen.one("x-real-ip").as_deref(), Some("127.0.0.1"));
}

#[tokio::test]
async fn a_trusted_proxys_forwarding_headers_are_kept_and_its_https_makes_cookies_secure() {
    let origin = Origin::start(OK).await;
    let extra = format!(
        "{SERVER}trusted_proxies = [\"127.0.0.1\"]\n\n\
         [[route]]\nname = \"shop\"\nupstream = \"shop\"\nwaiting_room = \"sale\"\n\n\
         [[waiting_room]]\nname = \"sale\"\nactive_users = 100\nnew_users_per_minute = 6000\nmode = \"safety_net\"\n"
    );
    let gw = gateway_for(&origin, &extra).await;
    let mut headers = vec!["Host: shop.example.com"];
    headers.extend_from_slice(SPOOFED);
    let got = raw(gw.addr(), &get("/products/1", &headers)).await;
    assert_eq!((got.status, got.body.as_str()), (200, "ok"), "{got:?}");
    let cookies = got.all("set-cookie");
    assert!(!cookies.is_empty(), "the room set no cookie: {got:?}");
    assert!(
        cookies.iter().all(|c| c.contains("; Secure")),
        "https from a trusted proxy: {cookies:?}"
    );

    let seen = origin.last();
    assert_eq!(
        seen.one("x-forwarded-for").as_deref(),
        Some("6.6.6.6, 127.0.0.1")
    );
    assert_eq!(seen.one("x-forwarded-proto").as_deref(), Some("https"));
    assert_eq!(
        seen.one("x-forwarded-host").as_deref(),
        Some("evil.example")
    );
    assert_eq!(seen.one("x-real-ip").as_deref(), Some("6.6.6.6"));
    assert!(seen.one("forwarded").is_some());
    // Override headers are stripped whoever relays them.
    for gone in [
        "x-original-url",
        "x-rewrite-url",
        "x-host",
        "x-http-method-override",
        "x-forwarded-scheme",
    ] {
        assert!(seen.all(gone).is_empty(), "{gone} reached the origin");
    }

    // The same proxy relaying plain http: no Secure.
    let got = raw(
        gw.addr(),
        &get(
            "/products/2",
            &["Host: shop.example.com", "X-Forwarded-For: 6.6.6.7"],
        ),
    )
    .await;
    assert_eq!(got.status, 200);
    assert!(
        got.all("set-cookie").iter().all(|c| !c.contains("Secure")),
        "{got:?}"
    );
    assert_eq!(
        origin.last().one("x-forwarded-proto").as_deref(),
        Some("http")
    );
}

#[tokio::test]
async fn an_ipv4_peer_of_a_dual_stack_listener_matches_ipv4_trusted_proxies() {
    let origin = Origin::start(OK).await;
    // An IPv6 socket bound to the v4-mapped loopback: every peer arrives as
    // ::ffff:127.0.0.1, as IPv4 clients of a `[::]` listener do, without leaving loopback.
    let gw = gateway_for(
        &origin,
        "[server]\nlisten = \"[::ffff:127.0.0.1]:0\"\nadmin_listen = \"127.0.0.1:0\"\ntrusted_proxies = [\"127.0.0.1\"]\n",
    )
    .await;
    let target = SocketAddr::from(([127, 0, 0, 1], gw.addr().port()));
    let got = raw(
        target,
        &get("/", &["Host: shop", "X-Forwarded-For: 203.0.113.9"]),
    )
    .await;
    assert_eq!(got.status, 200, "{got:?}");
    let seen = origin.last();
    assert_eq!(
        seen.one("x-forwarded-for").as_deref(),
        Some("203.0.113.9, 127.0.0.1")
    );
    assert_eq!(seen.one("x-real-ip").as_deref(), Some("203.0.113.9"));
}

// === Connection ===

const CONNECTION_REPLY: &str = "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\
    connection: x-origin-a\r\nconnection: x-origin-b\r\n\
    x-origin-a: private\r\nx-origin-b: private\r\nx-origin-kept: yes\r\n\r\nok";

#[tokio::test]
async fn headers_named_in_any_connection_line_are_stripped_both_ways() {
    let origin = Origin::start(CONNECTION_REPLY).await;
    let gw = gateway_for(&origin, "").await;
    let req = "GET / HTTP/1.1\r\nHost: shop\r\nConnection: x-client-a\r\n\
               Connection: x-client-b, close\r\nX-Client-A: 1\r\nX-Client-B: 2\r\nX-Client-Kept: 3\r\n\r\n";
    let got = raw(gw.addr(), req).await;
    assert_eq!((got.status, got.body.as_str()), (200, "ok"));
    assert!(got.header("x-origin-a").is_none(), "{got:?}");
    assert!(got.header("x-origin-b").is_none(), "{got:?}");
    assert_eq!(got.header("x-origin-kept").as_deref(), Some("yes"));

    let seen = origin.last();
    assert!(seen.all("x-client-a").is_empty(), "{}", seen.head);
    assert!(seen.all("x-client-b").is_empty(), "{}", seen.head);
    assert_eq!(seen.one("x-client-kept").as_deref(), Some("3"));
}

// === Methods ===

#[tokio::test]
async fn trace_gets_405_with_allow_and_is_never_forwarded() {
    let origin = Origin::start(OK).await;
    let gw = gateway_for(&origin, "").await;
    let got = raw(
        gw.addr(),
        "TRACE / HTTP/1.1\r\nHost: shop\r\nCookie: session=secret\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(got.status, 405, "{got:?}");
    let allow = got.header("allow").expect("405 carries Allow");
    assert!(allow.contains("GET") && !allow.contains("TRACE"), "{allow}");
    assert!(!got.body.contains("secret"), "TRACE echoed the cookie");
    assert!(got.header("x-request-id").is_some());
    // Nor is the gateway anybody's forward proxy.
    let got = raw(
        gw.addr(),
        "CONNECT evil.example:443 HTTP/1.1\r\nHost: evil.example:443\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(got.status, 405, "{got:?}");
    assert_eq!(origin.count(), 0);

    // Configurable: an operator who needs TRACE at the origin can have it.
    let gw = gateway_for(&origin, &format!("{SERVER}refused_methods = []\n")).await;
    let got = raw(
        gw.addr(),
        "TRACE / HTTP/1.1\r\nHost: shop\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(got.status, 200);
    assert_eq!(origin.last().method(), "TRACE");
}

// === X-Request-Id ===

#[tokio::test]
async fn every_answer_the_gateway_writes_itself_carries_a_request_id() {
    let origin = Origin::start(OK).await;
    let down = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let extra = format!(
        "[[upstream]]\nname = \"down\"\nservers = [\"{down}\"]\n\n\
         [[upstream]]\nname = \"narrow\"\nservers = [\"{o}\"]\nmax_concurrency = 1\nqueue_size = 0\n\n\
         [[route]]\nname = \"shop\"\nhosts = [\"shop\"]\nupstream = \"shop\"\n\
         rate_limits = [{{ key = \"client_ip\", rate = \"1/m\", burst = 1 }}]\n\n\
         [[route]]\nname = \"down\"\nhosts = [\"down\"]\nupstream = \"down\"\n\n\
         [[route]]\nname = \"narrow\"\nhosts = [\"narrow\"]\nupstream = \"narrow\"\n",
        o = origin.addr
    );
    let gw = gateway_for(&origin, &extra).await;
    let id = |got: &Got| {
        got.header("x-request-id")
            .unwrap_or_else(|| panic!("no id: {got:?}"))
    };

    // 404: no route for this host.
    let got = raw(gw.addr(), &get("/", &["Host: nowhere"])).await;
    assert_eq!(got.status, 404);
    assert_eq!(id(&got).len(), 32);
    // 400: a bad Host; the client's own sane id is kept.
    let got = raw(
        gw.addr(),
        &get("/", &["Host: a b", "X-Request-Id: client-id-1"]),
    )
    .await;
    assert_eq!((got.status, id(&got).as_str()), (400, "client-id-1"));
    // 429: over the limit after one request.
    assert_eq!(raw(gw.addr(), &get("/", &["Host: shop"])).await.status, 200);
    let got = raw(gw.addr(), &get("/", &["Host: shop"])).await;
    assert_eq!(got.status, 429);
    id(&got);
    // 502: the origin is down.
    let got = raw(gw.addr(), &get("/", &["Host: down"])).await;
    assert_eq!(got.status, 502, "{got:?}");
    id(&got);
    assert_eq!(
        origin.count(),
        1,
        "only the first request of the limited route"
    );

    // 503: the one slot is held by a slow request and the queue holds nobody.
    let addr = gw.addr();
    let slow = tokio::spawn(async move { raw(addr, &get("/slow", &["Host: narrow"])).await });
    eventually(
        "the slow request holds the slot",
        Duration::from_secs(5),
        || async { origin.count() == 2 },
    )
    .await;
    let got = raw(gw.addr(), &get("/", &["Host: narrow"])).await;
    assert_eq!(got.status, 503, "{got:?}");
    id(&got);
    assert_eq!(slow.await.unwrap().status, 200);
    assert_eq!(
        origin.count(),
        2,
        "the shed request never reached the origin"
    );
}

// === One normalised path ===

fn room(paths: &str) -> String {
    format!(
        "[[route]]\nname = \"shop\"\nupstream = \"shop\"\nwaiting_room = \"sale\"\n\n\
         [[waiting_room]]\nname = \"sale\"\nactive_users = 10\nnew_users_per_minute = 60\nmode = \"reject\"\npaths = [{paths}]\n"
    )
}

const TRICKS: &[&str] = &[
    "/static/../products/1",
    "//products/1",
    "/%70roducts/1",
    "/./products/1",
    "/%2e%2e/products/1",
    "/static/%2E%2E/products/1",
    "/../../products/1",
    "///products///1",
];

#[tokio::test]
async fn path_tricks_cannot_skip_a_waiting_room_guarding_products() {
    let origin = Origin::start(OK).await;
    let gw = gateway_for(&origin, &room("\"/products\"")).await;
    let sold_out = raw(gw.addr(), &get("/products/1", &["Host: shop"])).await;
    let room_page = "data-state=\"sold_out\"";
    assert!(
        sold_out.body.contains(room_page),
        "the room guards /products: {sold_out:?}"
    );
    for trick in TRICKS {
        let got = raw(gw.addr(), &get(trick, &["Host: shop"])).await;
        assert_eq!(got.status, sold_out.status, "{trick}: {got:?}");
        assert!(
            got.body.contains(room_page),
            "{trick} was not answered by the room: {got:?}"
        );
    }
    assert_eq!(
        origin.count(),
        0,
        "a trick reached the origin: {:?}",
        origin.seen()
    );
    // Unguarded pages are still served: the room is not simply refusing everything.
    assert_eq!(
        raw(gw.addr(), &get("/static/app.css", &["Host: shop"]))
            .await
            .body,
        "ok"
    );
    assert_eq!(origin.last().target(), "/static/app.css");
}

#[tokio::test]
async fn path_tricks_cannot_take_another_route_and_the_origin_gets_the_normal_path() {
    let products = Origin::start(OK).await;
    let other = Origin::start(OK).await;
    let extra = format!(
        "[[upstream]]\nname = \"products\"\nservers = [\"{p}\"]\n\n\
         [[route]]\nname = \"products\"\npath_prefix = \"/products\"\nupstream = \"products\"\n\n\
         [[route]]\nname = \"rest\"\nupstream = \"shop\"\n",
        p = products.addr
    );
    let gw = gateway_for(&other, &extra).await;
    for trick in TRICKS {
        let got = raw(
            gw.addr(),
            &get(&format!("{trick}?q=%2F&x=..%2f"), &["Host: shop"]),
        )
        .await;
        assert_eq!(got.status, 200, "{trick}: {got:?}");
        // The query is the client's, untouched: only the path is normalised.
        assert_eq!(
            products.last().target(),
            "/products/1?q=%2F&x=..%2f",
            "{trick}"
        );
    }
    assert_eq!(products.count(), TRICKS.len());
    assert_eq!(
        other.count(),
        0,
        "a trick took the catch-all route: {:?}",
        other.seen()
    );
}

#[tokio::test]
async fn with_normalisation_turned_off_the_raw_path_is_routed_and_forwarded() {
    let origin = Origin::start(OK).await;
    let gw = gateway_for(
        &origin,
        &format!("{SERVER}normalize_path = false\nmerge_slashes = false\n"),
    )
    .await;
    let got = raw(gw.addr(), &get("//static/../%70roducts/1", &["Host: shop"])).await;
    assert_eq!(got.status, 200, "{got:?}");
    assert_eq!(origin.last().target(), "//static/../%70roducts/1");
}

#[tokio::test]
async fn paths_that_cannot_be_normalised_safely_get_400_and_never_reach_the_origin() {
    let origin = Origin::start(OK).await;
    let gw = gateway_for(&origin, "").await;
    for bad in [
        "/products%2F1",
        "/products%2f..%2fadmin",
        "/products%5C1",
        "/products\\1",
        "/products%001",
        "/products/%zz",
        "/static/..;/admin",
    ] {
        let got = raw(gw.addr(), &get(bad, &["Host: shop"])).await;
        assert_eq!(got.status, 400, "{bad} → {got:?}");
        assert!(got.header("x-request-id").is_some(), "{got:?}");
        assert_eq!(origin.count(), 0, "{bad} reached the origin");
    }
    // An encoded character that is not a separator is kept, in upper case.
    let got = raw(gw.addr(), &get("/search/a%3ab%20c", &["Host: shop"])).await;
    assert_eq!(got.status, 200);
    assert_eq!(origin.last().target(), "/search/a%3Ab%20c");
}

// === The access log ===

/// Every log line of this test binary, captured once for all its tests (tests tell
/// their lines apart by request id).
fn captured_log() -> Arc<Mutex<Vec<u8>>> {
    static LOG: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOG.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let w = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter("floodgate::access=info")
            .with_ansi(false)
            .with_writer(move || Writer(w.clone()))
            .finish();
        tracing::subscriber::set_global_default(subscriber).expect("one subscriber");
        buf
    })
    .clone()
}

struct Writer(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Writer {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The access-log line of the request with id `id`, waiting for it to be written.
async fn log_line(log: &Arc<Mutex<Vec<u8>>>, id: &str) -> String {
    let find = || {
        let text = String::from_utf8_lossy(&log.lock().unwrap()).into_owned();
        text.lines()
            .find(|l| {
                l.contains(&format!("request_id=\"{id}\""))
                    || l.contains(&format!("request_id={id}"))
            })
            .map(str::to_string)
    };
    eventually("the access-log line", Duration::from_secs(5), || async {
        find().is_some()
    })
    .await;
    find().unwrap()
}

#[tokio::test]
async fn the_access_log_says_what_was_asked_by_whom_and_who_answered() {
    let log = captured_log();
    let origin = Origin::start(
        "HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncache-control: max-age=60\r\n\r\nhello",
    )
    .await;
    let text = config_text(
        origin.addr,
        "[[route]]\nname = \"shop\"\nhosts = [\"shop\"]\nupstream = \"shop\"\ncache = { enabled = true }\n",
    )
    .replace("access_log = false", "access_log = true");
    let gw = gateway(&text).await;

    // A cache miss: the body goes out as it is filled; every byte reached the client.
    let got = raw(
        gw.addr(),
        &get("/static/../page", &["Host: shop", "X-Request-Id: log-miss"]),
    )
    .await;
    assert_eq!((got.status, got.body.as_str()), (200, "hello"));
    let line = log_line(&log, "log-miss").await;
    for field in [
        "method=GET",
        "host=\"shop\"",
        "path=\"/page\"",
        "client=127.0.0.1",
        "status=200",
        "route=\"shop\"",
        "upstream=\"shop\"",
        "bytes=5",
        "complete=true",
    ] {
        assert!(line.contains(field), "{field} missing in {line}");
    }
    let us = line
        .split("duration_us=")
        .nth(1)
        .expect("duration_us")
        .split(' ')
        .next()
        .unwrap();
    assert!(
        us.parse::<u64>().is_ok(),
        "duration is whole microseconds: {us}"
    );

    // A hit: written by the gateway from its cache.
    let got = raw(
        gw.addr(),
        &get("/page", &["Host: shop", "X-Request-Id: log-hit"]),
    )
    .await;
    assert_eq!(got.body, "hello");
    let line = log_line(&log, "log-hit").await;
    assert!(
        line.contains("upstream=\"-\"") && line.contains("complete=true"),
        "{line}"
    );
    assert_eq!(origin.count(), 1);

    // A 404 the gateway wrote: logged with its id, no route and no upstream.
    let got = raw(gw.addr(), &get("/", &["Host: nowhere"])).await;
    assert_eq!(got.status, 404);
    let id = got.header("x-request-id").unwrap();
    let line = log_line(&log, &id).await;
    assert!(
        line.contains("status=404")
            && line.contains("upstream=\"-\"")
            && line.contains("route=\"-\""),
        "{line}"
    );
    assert_eq!(origin.count(), 1);
}

// === What hyper refuses before the edge runs ===

#[tokio::test]
async fn a_head_hyper_cannot_parse_gets_400_and_never_reaches_the_origin() {
    let origin = Origin::start(OK).await;
    let gw = gateway_for(&origin, "").await;
    for bad in [
        "GET / HTTP/1.1\r\nHost: shop\r\nContent-Length: abc\r\nConnection: close\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: shop\r\nContent-Length: 1\r\nContent-Length: 2\r\nConnection: close\r\n\r\nab",
        "GET / HTTP/1.1\r\nHost: shop\r\nBad Name: x\r\nConnection: close\r\n\r\n",
        "GET /a b HTTP/1.1\r\nHost: shop\r\nConnection: close\r\n\r\n",
    ] {
        let got = raw(gw.addr(), bad).await;
        assert_eq!(got.status, 400, "{bad:?} → {got:?}");
    }
    assert_eq!(origin.count(), 0, "the origin saw {:?}", origin.seen());
}

#[tokio::test]
async fn content_length_with_chunked_cannot_smuggle_a_request_past_the_gateway() {
    let origin = Origin::start(OK).await;
    let gw = gateway_for(&origin, "").await;
    // Framed by Transfer-Encoding the body ends at "0"; framed by Content-Length it
    // swallows the GET. A proxy and an origin that disagree give the GET to the origin
    // as a request nobody routed.
    let req = "POST /form HTTP/1.1\r\nHost: shop\r\nContent-Length: 40\r\nTransfer-Encoding: chunked\r\n\r\n\
               0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: shop\r\n\r\n";
    let got = raw(gw.addr(), req).await;
    assert_eq!(got.status, 200);
    let text = format!("{}\r\n\r\n{}", got.head, got.body);
    // RFC 9112 §6.3: such a message is answered, then the connection closed.
    assert_eq!(text.matches("HTTP/1.1 ").count(), 1, "{text}");
    assert!(
        got.header("connection")
            .is_some_and(|c| c.contains("close")),
        "{got:?}"
    );

    let seen = origin.seen();
    assert_eq!(seen.len(), 1, "the origin saw {seen:?}");
    assert_eq!((seen[0].method(), seen[0].target()), ("POST", "/form"));
    // The origin gets one framing only, the gateway's own.
    assert!(seen[0].all("content-length").is_empty(), "{}", seen[0].head);
}
