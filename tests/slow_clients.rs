//! Slow and broken clients: request bodies are buffered whole before an origin slot is
//! taken, answers are read ahead of the client, and a client that drips, stalls or
//! sends broken framing costs the gateway a connection, never the origin a slot.
//!
//! Every test uses an origin with room for one request at a time (`max_concurrency =
//! 1`), so one held slot would be seen at once by the next shopper. The origin here is
//! written for these tests: it counts request heads, complete and incomplete bodies,
//! and answers whose body it has finished producing.

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use common::{eventually, gateway, get};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

// === the origin ===

/// What the origin saw.
#[derive(Default)]
struct Seen {
    /// `POST /upload` heads received.
    uploads: AtomicU64,
    /// Upload bodies read to their end, as long as their Content-Length said.
    complete: AtomicU64,
    /// Upload bodies that failed or ended short.
    incomplete: AtomicU64,
    /// Upload body bytes read so far.
    upload_bytes: AtomicU64,
    /// `GET /big` answers whose last byte the origin has handed over.
    big_done: AtomicU64,
    /// `GET /page` answers.
    pages: AtomicU64,
}

struct Origin {
    addr: SocketAddr,
    seen: Arc<Seen>,
}

async fn origin() -> Origin {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Seen::default());
    let s = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let s = s.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| answer(s.clone(), req));
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Origin { addr, seen }
}

type OriginBody = http_body_util::combinators::BoxBody<Bytes, Infallible>;

async fn answer(
    seen: Arc<Seen>,
    req: Request<Incoming>,
) -> Result<Response<OriginBody>, Infallible> {
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    Ok(match path.as_str() {
        "/upload" => {
            seen.uploads.fetch_add(1, SeqCst);
            let declared: Option<u64> = req
                .headers()
                .get("content-length")
                .and_then(|v| v.to_str().ok()?.parse().ok());
            let mut body = req.into_body();
            let mut len = 0u64;
            let mut failed = false;
            while let Some(frame) = body.frame().await {
                match frame {
                    Ok(f) => {
                        if let Some(d) = f.data_ref() {
                            len += d.len() as u64;
                            seen.upload_bytes.fetch_add(d.len() as u64, SeqCst);
                        }
                    }
                    Err(_) => {
                        failed = true;
                        break;
                    }
                }
            }
            if failed || declared.is_some_and(|d| d != len) {
                seen.incomplete.fetch_add(1, SeqCst);
            } else {
                seen.complete.fetch_add(1, SeqCst);
            }
            text(format!("{len}"))
        }
        "/big" => {
            let bytes: u64 = query
                .strip_prefix("bytes=")
                .and_then(|n| n.parse().ok())
                .unwrap_or(1 << 20);
            let mut r = Response::new(
                Counted {
                    left: bytes,
                    seen: seen.clone(),
                }
                .boxed(),
            );
            r.headers_mut()
                .insert("content-length", bytes.to_string().parse().unwrap());
            r
        }
        _ => {
            seen.pages.fetch_add(1, SeqCst);
            text("page".into())
        }
    })
}

fn text(s: String) -> Response<OriginBody> {
    Response::new(Full::new(Bytes::from(s)).boxed())
}

/// A body of `left` bytes in 16 KiB chunks that notes when its last chunk was taken.
struct Counted {
    left: u64,
    seen: Arc<Seen>,
}

impl http_body::Body for Counted {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.left == 0 {
            return Poll::Ready(None);
        }
        let n = self.left.min(16 * 1024);
        self.left -= n;
        if self.left == 0 {
            self.seen.big_done.fetch_add(1, SeqCst);
        }
        Poll::Ready(Some(Ok(Frame::data(Bytes::from(vec![b'x'; n as usize])))))
    }

    fn is_end_stream(&self) -> bool {
        self.left == 0
    }
}

// === the gateway and its clients ===

/// A gateway in front of `origin` with one slot, a short queue wait, and `server`
/// (extra `[server]` keys) and `route` (extra route keys).
async fn gateway_with(origin: &Origin, server: &str, route: &str) -> floodgate::Gateway {
    gateway(&format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n{server}\n\
         [log]\naccess_log = false\n\
         [[upstream]]\nname = \"shop\"\nservers = [\"{}\"]\nmax_concurrency = 1\nqueue_size = 1000\nqueue_timeout = \"5s\"\n\
         [[route]]\nname = \"shop\"\nupstream = \"shop\"\n{route}\n",
        origin.addr
    ))
    .await
}

/// A normal shopper's page view: it must be served, and soon.
async fn shopper(gw: SocketAddr) {
    let a = tokio::time::timeout(Duration::from_secs(15), get(gw, "/page"))
        .await
        .expect("a normal shopper was answered within 15 s");
    assert_eq!(
        a.status,
        StatusCode::OK,
        "shopper got {}: {}",
        a.status,
        a.text()
    );
}

/// A normal shopper's complete form post.
async fn poster(gw: SocketAddr, bytes: usize) {
    let req = Request::post(format!("http://{gw}/upload"))
        .body(Full::new(Bytes::from(vec![b'p'; bytes])))
        .unwrap();
    let a = tokio::time::timeout(Duration::from_secs(15), common::send(req))
        .await
        .expect("a normal post was answered within 15 s");
    assert_eq!(
        a.status,
        StatusCode::OK,
        "post got {}: {}",
        a.status,
        a.text()
    );
    assert_eq!(a.text(), bytes.to_string(), "the origin got the whole body");
}

/// A TCP connection whose receive buffer is tiny, so that not reading stalls the
/// sender after a few KiB instead of megabytes.
async fn tight_socket(gw: SocketAddr) -> TcpStream {
    let s = TcpSocket::new_v4().unwrap();
    s.set_recv_buffer_size(4096).unwrap();
    s.connect(gw).await.unwrap()
}

/// Reads up to the end of a response head and returns its status code.
async fn status_of(s: &mut (impl AsyncReadExt + Unpin), within: Duration) -> u16 {
    let mut buf = Vec::new();
    let read = async {
        let mut b = [0u8; 1024];
        while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = s.read(&mut b).await.expect("read the answer");
            assert!(
                n > 0,
                "connection closed before an answer: {:?}",
                String::from_utf8_lossy(&buf)
            );
            buf.extend_from_slice(&b[..n]);
        }
    };
    tokio::time::timeout(within, read)
        .await
        .expect("an answer head in time");
    let head = String::from_utf8_lossy(&buf);
    head.split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"))
}

/// Starts a POST whose body drips in at `every`, one byte at a time, after `first`.
async fn dripper(
    gw: SocketAddr,
    first: &[u8],
    declared: usize,
    every: Duration,
) -> tokio::net::tcp::OwnedReadHalf {
    let s = TcpStream::connect(gw).await.unwrap();
    let (r, mut w) = s.into_split();
    let head = format!("POST /upload HTTP/1.1\r\nhost: shop\r\ncontent-length: {declared}\r\n\r\n");
    w.write_all(head.as_bytes()).await.unwrap();
    w.write_all(first).await.unwrap();
    let sent = first.len();
    tokio::spawn(async move {
        for _ in sent..declared.saturating_sub(1) {
            tokio::time::sleep(every).await;
            if w.write_all(b"d").await.is_err() {
                return;
            }
        }
        // Never the last byte: the body stays incomplete. Hold the socket a while.
        tokio::time::sleep(Duration::from_secs(30)).await;
    });
    r
}

/// Sends `GET /big?bytes=N` on a tight socket and never reads the answer.
async fn non_reader(gw: SocketAddr, bytes: usize) -> TcpStream {
    let mut s = tight_socket(gw).await;
    s.write_all(format!("GET /big?bytes={bytes} HTTP/1.1\r\nhost: shop\r\n\r\n").as_bytes())
        .await
        .unwrap();
    s
}

// === request bodies ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dripped_body_gets_408_never_reaches_the_origin_and_holds_no_slot() {
    let origin = origin().await;
    let gw = gateway_with(&origin, "request_timeout = \"4s\"", "").await;
    let mut drip = dripper(gw.addr(), b"ab", 100, Duration::from_millis(500)).await;
    // While it drips, the one origin slot is free for everyone else.
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        shopper(gw.addr()).await;
    }
    assert_eq!(status_of(&mut drip, Duration::from_secs(15)).await, 408);
    assert_eq!(
        origin.seen.uploads.load(SeqCst),
        0,
        "the origin saw the dripped request"
    );
    assert_eq!(origin.seen.pages.load(SeqCst), 3);
    assert_eq!(slow(&gw, "request_timeout").await, 1.0);
}

#[tokio::test]
async fn a_buffered_body_reaches_the_origin_only_when_complete_and_with_its_length() {
    let origin = origin().await;
    let gw = gateway_with(&origin, "", "").await;
    let s = TcpStream::connect(gw.addr()).await.unwrap();
    let (mut r, mut w) = s.into_split();
    w.write_all(
        b"POST /upload HTTP/1.1\r\nhost: shop\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n",
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        origin.seen.uploads.load(SeqCst),
        0,
        "the origin saw a request still arriving"
    );
    w.write_all(b"6\r\n world\r\n0\r\n\r\n").await.unwrap();
    assert_eq!(status_of(&mut r, Duration::from_secs(10)).await, 200);
    // The origin got it whole, framed by Content-Length (its length check passed).
    assert_eq!(origin.seen.complete.load(SeqCst), 1);
    assert_eq!(origin.seen.upload_bytes.load(SeqCst), 11);
}

#[tokio::test]
async fn a_malformed_chunked_body_gets_400_and_the_origin_never_sees_it() {
    let origin = origin().await;
    let gw = gateway_with(
        &origin,
        "",
        "[[route]]\nname = \"uploads\"\npath_prefix = \"/stream/\"\nupstream = \"shop\"\nrequest_buffering = false\n",
    )
    .await;
    let mut s = TcpStream::connect(gw.addr()).await.unwrap();
    s.write_all(b"POST /upload HTTP/1.1\r\nhost: shop\r\ntransfer-encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(status_of(&mut s, Duration::from_secs(10)).await, 400);
    assert_eq!(
        origin.seen.uploads.load(SeqCst),
        0,
        "the origin saw a broken request"
    );
    // Streamed, the head may reach the origin first, but the answer is still the
    // client's fault (400), not a 502 blamed on the origin.
    let mut s = TcpStream::connect(gw.addr()).await.unwrap();
    s.write_all(b"POST /stream/x HTTP/1.1\r\nhost: shop\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\n")
        .await
        .unwrap();
    assert_eq!(status_of(&mut s, Duration::from_secs(10)).await, 400);
    shopper(gw.addr()).await;
    assert_eq!(slow(&gw, "malformed_body").await, 2.0);
}

#[tokio::test]
async fn a_body_larger_than_the_request_buffer_gets_413_and_the_origin_never_sees_it() {
    let origin = origin().await;
    let gw = gateway_with(&origin, "request_buffer = \"64KiB\"", "").await;
    // Announced: refused before the body is read.
    let mut s = TcpStream::connect(gw.addr()).await.unwrap();
    s.write_all(b"POST /upload HTTP/1.1\r\nhost: shop\r\ncontent-length: 100000\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(status_of(&mut s, Duration::from_secs(10)).await, 413);
    // Chunked: refused once the buffer is full.
    let mut s = TcpStream::connect(gw.addr()).await.unwrap();
    let mut req =
        b"POST /upload HTTP/1.1\r\nhost: shop\r\ntransfer-encoding: chunked\r\n\r\n".to_vec();
    for _ in 0..10 {
        req.extend_from_slice(b"2710\r\n");
        req.extend_from_slice(&[b'c'; 10_000]);
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"0\r\n\r\n");
    s.write_all(&req).await.unwrap();
    assert_eq!(status_of(&mut s, Duration::from_secs(10)).await, 413);
    assert_eq!(origin.seen.uploads.load(SeqCst), 0);
    assert_eq!(slow(&gw, "body_too_large").await, 2.0);
    // Within the buffer, a body goes through.
    poster(gw.addr(), 60_000).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dripped_upload_on_a_streaming_route_gets_408_and_is_not_counted_against_the_origin() {
    let origin = origin().await;
    let gw = gateway_with(
        &origin,
        "request_timeout = \"1s\"",
        "request_buffering = false",
    )
    .await;
    // More in a row than the passive health check's failure streak (5).
    for _ in 0..6 {
        let mut drip = dripper(gw.addr(), b"ab", 100, Duration::from_millis(300)).await;
        assert_eq!(status_of(&mut drip, Duration::from_secs(10)).await, 408);
    }
    // Streamed, the origin did see the heads and the broken-off bodies: that is what
    // turning buffering off means. But it was not the origin's failure.
    assert_eq!(origin.seen.complete.load(SeqCst), 0);
    let m = common::metrics_text(&gw).await;
    assert_eq!(
        sample(&m, "floodgate_upstream_errors_total", "\"protocol\""),
        0.0,
        "{m}"
    );
    assert_eq!(
        sample(&m, "floodgate_upstream_ejections_total", "\"shop\""),
        0.0,
        "{m}"
    );
    shopper(gw.addr()).await;
}

/// `floodgate_slow_clients_total{reason}`.
async fn slow(gw: &floodgate::Gateway, reason: &str) -> f64 {
    let m = common::metrics_text(gw).await;
    sample(&m, "floodgate_slow_clients_total", &format!("\"{reason}\""))
}

/// The value of the first sample of `family` whose labels contain `label`; 0 if none.
fn sample(text: &str, family: &str, label: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(&format!("{family}{{")) && l.contains(label))
        .find_map(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0.0)
}

// === responses ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_its_answer_frees_the_slot_once_the_origin_has_finished() {
    let origin = origin().await;
    // A buffer larger than the answer, and a send timeout far away: only reading
    // ahead can free the slot here.
    let gw = gateway_with(
        &origin,
        "response_buffer = \"16MiB\"\nsend_timeout = \"60s\"",
        "",
    )
    .await;
    let _stalled = non_reader(gw.addr(), 8 << 20).await;
    let seen = origin.seen.clone();
    eventually(
        "the origin finished its answer",
        Duration::from_secs(10),
        || {
            let seen = seen.clone();
            async move { seen.big_done.load(SeqCst) == 1 }
        },
    )
    .await;
    shopper(gw.addr()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_client_with_a_zero_window_does_not_hold_the_slot() {
    let origin = origin().await;
    let gw = gateway_with(&origin, "send_timeout = \"60s\"", "").await;
    let stream = TcpStream::connect(gw.addr()).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .initial_stream_window_size(0)
        .handshake::<_, Full<Bytes>>(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = Request::get(format!("http://{}/big?bytes=100000", gw.addr()))
        .body(Full::default())
        .unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(10), sender.send_request(req))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(resp.status(), 200);
    // The client holds the answer unread, with no window for it to come through.
    let seen = origin.seen.clone();
    eventually(
        "the origin finished its answer",
        Duration::from_secs(10),
        || {
            let seen = seen.clone();
            async move { seen.big_done.load(SeqCst) == 1 }
        },
    )
    .await;
    shopper(gw.addr()).await;
    drop(resp);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_cut_off_after_the_send_timeout() {
    let origin = origin().await;
    let gw = gateway_with(
        &origin,
        "send_timeout = \"1s\"\nheader_read_timeout = \"60s\"\nidle_timeout = \"60s\"",
        "",
    )
    .await;
    // Far larger than the response buffer (256 KiB) and the sockets' buffers.
    let total = 16 << 20;
    let mut s = non_reader(gw.addr(), total).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    // By now the gateway has given up: what was in flight drains, then the end.
    let mut got = 0usize;
    let mut buf = vec![0u8; 64 * 1024];
    let drained = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got += n,
            }
        }
    })
    .await;
    assert!(
        drained.is_ok(),
        "the connection of a stalled client stayed open"
    );
    assert!(
        got < total,
        "the whole answer arrived ({got} bytes): nothing was cut"
    );
    // Its slot was released when the gateway gave up.
    shopper(gw.addr()).await;
    // Whichever saw the stall first: the connection's watch or the response pump.
    let cut = slow(&gw, "send_timeout").await + slow(&gw, "response_abandoned").await;
    assert!(cut >= 1.0, "the cut was not counted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_an_answer_already_buffered_is_cut_off_too() {
    let origin = origin().await;
    // The whole answer fits the buffer: the origin is done, only the socket stalls.
    let gw = gateway_with(
        &origin,
        "send_timeout = \"1s\"\nresponse_buffer = \"16MiB\"\nheader_read_timeout = \"60s\"\nidle_timeout = \"60s\"",
        "",
    )
    .await;
    let total = 8 << 20;
    let mut s = non_reader(gw.addr(), total).await;
    let seen = origin.seen.clone();
    eventually(
        "the origin finished its answer",
        Duration::from_secs(10),
        || {
            let seen = seen.clone();
            async move { seen.big_done.load(SeqCst) == 1 }
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let mut got = 0usize;
    let mut buf = vec![0u8; 64 * 1024];
    let drained = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got += n,
            }
        }
    })
    .await;
    assert!(
        drained.is_ok(),
        "the connection of a stalled client stayed open"
    );
    assert!(
        got < total,
        "the whole answer arrived ({got} bytes): nothing was cut"
    );
    assert_eq!(slow(&gw, "send_timeout").await, 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_client_with_a_zero_window_is_cut_off_after_the_send_timeout() {
    let origin = origin().await;
    let gw = gateway_with(
        &origin,
        "send_timeout = \"1s\"\nheader_read_timeout = \"60s\"\nidle_timeout = \"60s\"",
        "",
    )
    .await;
    let stream = TcpStream::connect(gw.addr()).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .initial_stream_window_size(0)
        .handshake::<_, Full<Bytes>>(TokioIo::new(stream))
        .await
        .unwrap();
    let conn = tokio::spawn(conn);
    let req = Request::get(format!("http://{}/page", gw.addr()))
        .body(Full::default())
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    tokio::time::timeout(Duration::from_secs(15), conn)
        .await
        .expect("the gateway closed the stalled HTTP/2 connection")
        .unwrap()
        .ok();
    drop(resp);
}

// === both at once, in numbers ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_non_readers_and_two_hundred_drippers_leave_normal_shoppers_served() {
    let origin = origin().await;
    let gw = gateway_with(
        &origin,
        "request_timeout = \"10s\"\nsend_timeout = \"30s\"",
        "",
    )
    .await;
    let addr = gw.addr();
    // 200 answers nobody reads, within the response buffer, ten at a time: the one
    // slot goes from one to the next at origin speed, and the origin finishes them all
    // (a held slot would stop the count at the first).
    let mut held = Vec::new();
    for batch in 1..=20 {
        for _ in 0..10 {
            held.push(non_reader(addr, 200 * 1024).await);
        }
        let seen = origin.seen.clone();
        eventually(
            "the origin finished every unread answer",
            Duration::from_secs(30),
            || {
                let seen = seen.clone();
                async move { seen.big_done.load(SeqCst) == batch * 10 }
            },
        )
        .await;
    }
    // 200 bodies dripping, while the 200 unread answers are still held.
    let mut drips = Vec::new();
    for _ in 0..200 {
        drips.push(dripper(addr, b"0123456789", 1000, Duration::from_secs(1)).await);
    }
    // Normal shoppers, page views and complete posts, meanwhile.
    let mut normal = Vec::new();
    for i in 0..30 {
        normal.push(tokio::spawn(async move {
            if i % 3 == 0 {
                poster(addr, 2_000).await
            } else {
                shopper(addr).await
            }
        }));
    }
    for n in normal {
        n.await.expect("every normal shopper served");
    }
    for d in &mut drips {
        assert_eq!(status_of(d, Duration::from_secs(30)).await, 408);
    }
    // The origin saw the ten normal posts, whole, and nothing of the drippers.
    assert_eq!(origin.seen.uploads.load(SeqCst), 10);
    assert_eq!(origin.seen.complete.load(SeqCst), 10);
    assert_eq!(origin.seen.incomplete.load(SeqCst), 0);
    assert_eq!(slow(&gw, "request_timeout").await, 200.0);
    drop(held);
}
