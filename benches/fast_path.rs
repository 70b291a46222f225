//! The gateway's own per-request cost on its fastest paths, with no sockets: a route
//! with no protection proxied to an origin, and a cache hit (issue 14).
//!
//! Client, gateway and origin all run in this process on one current-thread runtime,
//! joined by in-memory duplex pipes, so the figures are hyper's and floodgate's work
//! alone, without the kernel's. After the timings, each path prints its allocations per
//! request, counted by a wrapper around the gateway's own allocator, next to those of
//! the same client talking straight to the same in-memory origin: the difference is
//! what the gateway adds.
//!
//! Run: `cargo bench --bench fast_path` (`-- --test` runs each bench once, and counts
//! allocations over fewer requests).

use std::alloc::{GlobalAlloc, Layout};
use std::cell::Cell;
use std::convert::Infallible;
use std::hint::black_box;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use bytes::Bytes;
use criterion::Criterion;
use http::header::{CACHE_CONTROL, CONTENT_LENGTH, CONTENT_TYPE, HOST};
use http::uri::Authority;
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::DuplexStream;
use tokio::runtime::Runtime;

use floodgate::buffering::{RequestStart, SendWatch, Watched};
use floodgate::config;
use floodgate::metrics::Metrics;
use floodgate::proxy::{handle_counted, Compiled, ConnActivity, Shared};
use floodgate::stack::route_stack;
use floodgate::upstream::pool::{handshake, Connect, Connecting};
use floodgate::upstream::Upstream;

/// The gateway binary's allocator (src/alloc.rs), so timings compare with production;
/// counting wraps it.
#[global_allocator]
static GLOBAL: Counting = Counting(floodgate::alloc::Mimalloc);

/// Calls that asked the allocator for memory (alloc, alloc_zeroed, realloc) since start.
static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

/// An allocator that counts the allocations it forwards. Frees are not counted: each
/// one pairs with an allocation already counted.
struct Counting(floodgate::alloc::Mimalloc);

// SAFETY: every call is forwarded unchanged to mimalloc, which upholds the contract;
// the counter has no effect on the memory handed out.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        self.0.alloc(layout)
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        self.0.alloc_zeroed(layout)
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        self.0.realloc(ptr, layout, new_size)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        self.0.dealloc(ptr, layout)
    }
}

/// Bytes each direction of an in-memory pipe holds before a writer waits: a 64 KiB
/// socket buffer's worth, so no answer here ever waits on its reader.
const PIPE_CAPACITY: usize = 64 * 1024;

/// The client's address as the gateway sees it: not a trusted proxy, so the forwarding
/// fields are written as for a shopper.
const PEER: SocketAddr = SocketAddr::new(
    std::net::IpAddr::V4(std::net::Ipv4Addr::new(203, 0, 113, 7)),
    40_000,
);

/// Requests counted per path and client after the timings; fewer in test mode, which
/// CI runs unoptimised.
const COUNTED_REQUESTS: u64 = 10_000;
const COUNTED_REQUESTS_TEST: u64 = 1_000;
/// Requests sent uncounted on each connection before counting.
const WARM_UP_REQUESTS: u64 = 2_000;

/// What the in-memory origin answers to every request.
#[derive(Clone)]
struct Answer {
    body: Bytes,
    cache_control: Option<HeaderValue>,
}

impl Answer {
    /// The shop's `GET /fast`: a tiny answer with no work behind it.
    fn fast() -> Self {
        Answer {
            body: Bytes::from_static(b"ok"),
            cache_control: None,
        }
    }

    /// A small page every client may share for an hour: a cache hit on every request
    /// after the first.
    fn cacheable() -> Self {
        Answer {
            body: Bytes::from(vec![b'x'; 512]),
            cache_control: Some(HeaderValue::from_static("public, max-age=3600")),
        }
    }

    fn response(&self) -> Response<Full<Bytes>> {
        let mut resp = Response::new(Full::new(self.body.clone()));
        let h = resp.headers_mut();
        h.insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        h.insert(CONTENT_LENGTH, HeaderValue::from(self.body.len()));
        if let Some(cc) = &self.cache_control {
            h.insert(CACHE_CONTROL, cc.clone());
        }
        resp
    }
}

/// Serves `answer` on one end of a pipe with hyper's HTTP/1.1 server, in its own task.
fn spawn_origin(io: DuplexStream, answer: Arc<Answer>) {
    tokio::spawn(async move {
        let svc = service_fn(move |_req: Request<Incoming>| {
            let resp = answer.response();
            async move { Ok::<_, Infallible>(resp) }
        });
        // The pipe's other end going away ends the connection; nothing to report.
        let _ = hyper::server::conn::http1::Builder::new()
            .serve_connection(TokioIo::new(io), svc)
            .await;
    });
}

/// An origin reached through a pipe instead of TCP: each connection the gateway's pool
/// opens is a new pipe with an origin task on its far end.
struct InMemoryOrigin {
    answer: Arc<Answer>,
}

impl Connect for InMemoryOrigin {
    fn connect(&self, _server: &Authority) -> Connecting {
        let (gateway_end, origin_end) = tokio::io::duplex(PIPE_CAPACITY);
        spawn_origin(origin_end, self.answer.clone());
        Box::pin(handshake(TokioIo::new(gateway_end)))
    }
}

/// One keep-alive HTTP/1.1 client connection sending `GET /fast` in sequence.
struct Client {
    sender: SendRequest<Empty<Bytes>>,
}

impl Client {
    /// A client on one end of a pipe; its connection runs in its own task.
    async fn on(io: DuplexStream) -> Self {
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
            .await
            .expect("client handshake on a pipe");
        tokio::spawn(async move {
            // Ends when the bench drops the sender; an error fails the next request.
            let _ = conn.await;
        });
        Client { sender }
    }

    /// Sends one request and reads its whole body.
    async fn get(&mut self) -> Response<Bytes> {
        self.sender.ready().await.expect("client connection open");
        let req = Request::get("/fast")
            .header(HOST, "shop.test")
            .body(Empty::new())
            .expect("a valid request");
        let resp = self.sender.send_request(req).await.expect("a response");
        let (parts, body) = resp.into_parts();
        let body = body.collect().await.expect("a whole body").to_bytes();
        Response::from_parts(parts, body)
    }
}

/// A gateway built from `config_text` whose upstreams all lead to `answer`, in memory.
fn gateway(config_text: &str, answer: Arc<Answer>) -> Arc<Shared> {
    let cfg = config::parse(config_text).expect("bench config parses");
    let metrics = Metrics::new();
    let mut compiled = Compiled::build(cfg, &metrics, None);
    let origin: Arc<dyn Connect> = Arc::new(InMemoryOrigin { answer });
    let config = compiled.config.clone();
    // The stacks Compiled::build made lead to TCP pools; rebuilt the same way on pools
    // whose connections are pipes, everything else (cache, limits, rooms) kept.
    let upstreams: Vec<Arc<Upstream>> = config
        .upstreams
        .iter()
        .map(|u| Upstream::with_connector(u.clone(), &metrics, origin.clone()))
        .collect();
    for (route, rc) in compiled.routes.iter_mut().zip(&config.routes) {
        route.service = route_stack(
            rc,
            &config.server.buffering,
            upstreams[rc.upstream].clone(),
            route.rate_limits.clone(),
            rc.waiting_room.map(|i| compiled.waiting_rooms[i].clone()),
            &compiled.cache,
            &metrics,
        );
    }
    compiled.upstreams = upstreams;
    Arc::new(Shared {
        current: ArcSwap::from_pointee(compiled),
        metrics,
    })
}

/// A client connection to `shared`, served as src/server.rs serves one: the `auto`
/// builder of the server config, each request through `handle_counted` with its
/// start stamped and its body watched. The connection task's own loop (idle and
/// header timers, shutdown, the stream wrapper noting activity) is private to
/// src/server.rs and left out: it wakes on its timers, seconds apart, not per request.
async fn gateway_client(shared: Arc<Shared>) -> Client {
    let (client_end, gateway_end) = tokio::io::duplex(PIPE_CAPACITY);
    let cfg = shared.current.load().config.server.clone();
    let builder = floodgate::server::connection_builder(&cfg);
    let activity = Arc::new(ConnActivity::default());
    activity.last_end.touch();
    let send = Arc::new(SendWatch::default());
    let svc = service_fn(move |mut req: Request<Incoming>| {
        let version = req.version();
        let started = activity.head_started.get().unwrap_or_else(Instant::now);
        req.extensions_mut().insert(RequestStart(started));
        let send = send.clone();
        let answer = handle_counted(shared.clone(), PEER, activity.clone(), req);
        async move {
            let resp = answer.await?;
            Ok::<_, Infallible>(resp.map(|b| Watched::new(b, &send, version)))
        }
    });
    tokio::spawn(async move {
        let _ = builder
            .serve_connection(TokioIo::new(gateway_end), svc)
            .await;
    });
    Client::on(client_end).await
}

/// The same client talking straight to the origin: the baseline the gateway's path is
/// compared with.
async fn origin_client(answer: Arc<Answer>) -> Client {
    let (client_end, origin_end) = tokio::io::duplex(PIPE_CAPACITY);
    spawn_origin(origin_end, answer);
    Client::on(client_end).await
}

/// One path under test: a client through the gateway, and one straight to its origin.
struct Path {
    /// Criterion group name.
    group: &'static str,
    /// Criterion bench name.
    bench: &'static str,
    /// Who does the work of a request through the gateway, for the report.
    through: &'static str,
    /// What the difference from the straight client measures, for the report.
    difference: &'static str,
    /// Taken out for each batch of measured requests and put back after it, so one
    /// connection serves the whole bench.
    through_gateway: Rc<Cell<Option<Client>>>,
    straight: Client,
}

impl Path {
    /// A route with no protection: every request goes to the origin.
    async fn no_protection() -> Self {
        let answer = Arc::new(Answer::fast());
        let shared = gateway(
            "[[upstream]]\nname = \"shop\"\nservers = [\"127.0.0.1:9\"]\n\
             [[route]]\nname = \"shop\"\nupstream = \"shop\"\n",
            answer.clone(),
        );
        let mut client = gateway_client(shared).await;
        let resp = client.get().await;
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(resp.body().as_ref(), b"ok");
        Path {
            group: "no_protection_route",
            bench: "h1_get",
            through: "client + gateway + origin",
            difference: "the gateway's own",
            through_gateway: Rc::new(Cell::new(Some(client))),
            straight: origin_client(answer).await,
        }
    }

    /// A cached route: the first request fills the cache, every later one is a hit.
    async fn cache_hit() -> Self {
        let answer = Arc::new(Answer::cacheable());
        // The route's cache rule as config/floodgate.toml ships it: the origin's
        // Cache-Control decides what is stored and for how long.
        let shared = gateway(
            "[[upstream]]\nname = \"shop\"\nservers = [\"127.0.0.1:9\"]\n\
             [[route]]\nname = \"shop\"\nupstream = \"shop\"\ncache = { enabled = true }\n",
            answer.clone(),
        );
        let mut client = gateway_client(shared).await;
        let fill = client.get().await;
        assert_eq!(fill.status(), StatusCode::OK);
        assert_eq!(fill.body().len(), 512);
        let hit = client.get().await;
        let status = hit
            .headers()
            .get("cache-status")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        assert!(
            status.contains("hit"),
            "no cache hit: cache-status {status:?}"
        );
        assert_eq!(hit.body().len(), 512);
        Path {
            group: "cache_hit",
            bench: "h1_get_512b",
            // A hit never reaches the origin: the gateway answers in its place, so the
            // difference is the gateway's cost over a bare hyper server's.
            through: "client + gateway (hit, origin not asked)",
            difference: "the gateway answering instead of the origin",
            through_gateway: Rc::new(Cell::new(Some(client))),
            straight: origin_client(answer).await,
        }
    }

    /// Times requests through the gateway, one after another on its connection.
    fn bench(&self, c: &mut Criterion, rt: &Runtime) {
        let mut group = c.benchmark_group(self.group);
        group.bench_function(self.bench, |b| {
            b.to_async(rt).iter_custom(|iters| {
                let slot = self.through_gateway.clone();
                async move {
                    let mut client = slot
                        .take()
                        .expect("the client is put back after each batch");
                    let start = Instant::now();
                    for _ in 0..iters {
                        black_box(client.get().await);
                    }
                    let took = start.elapsed();
                    slot.set(Some(client));
                    took
                }
            })
        });
        group.finish();
    }

    /// Prints allocations per request through the gateway, straight to the origin,
    /// and the difference.
    async fn report_allocations(&mut self, requests: u64) {
        let mut client = self.through_gateway.take().expect("no batch is running");
        let gateway = allocations_per_request(&mut client, requests).await;
        self.through_gateway.set(Some(client));
        let straight = allocations_per_request(&mut self.straight, requests).await;
        let name = format!("{}/{}", self.group, self.bench);
        println!("{name}: {requests} requests on one keep-alive connection");
        println!("  {}: allocations per request: {gateway:.1}", self.through);
        println!("  client + origin only: allocations per request: {straight:.1}");
        println!(
            "  {}: allocations per request: {:.1}",
            self.difference,
            gateway - straight
        );
    }
}

/// Average allocations of `requests` requests in sequence, after uncounted ones: the
/// steady state of a long keep-alive connection. The first thousand or so requests
/// of a connection through the gateway allocate about 0.4 fewer each, which would
/// skew test mode's short count.
async fn allocations_per_request(client: &mut Client, requests: u64) -> f64 {
    for _ in 0..WARM_UP_REQUESTS {
        black_box(client.get().await);
    }
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    for _ in 0..requests {
        black_box(client.get().await);
    }
    let after = ALLOCATIONS.load(Ordering::Relaxed);
    (after - before) as f64 / requests as f64
}

/// Whether criterion runs in test mode: `--test`, or no `--bench` (as `cargo test`
/// runs bench targets), the same rule criterion applies.
fn test_mode(args: &[String]) -> bool {
    args.iter().any(|a| a == "--test") || !args.iter().any(|a| a == "--bench")
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    // One thread, as one worker of `server.workers` runs a connection: and the only
    // thread allocating, so the global count is this path's alone.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let mut paths = rt.block_on(async { [Path::no_protection().await, Path::cache_hit().await] });

    let mut c = Criterion::default().configure_from_args();
    for path in &paths {
        path.bench(&mut c, &rt);
    }
    c.final_summary();

    // `--list` only names the benches.
    if args.iter().any(|a| a == "--list") {
        return;
    }
    let requests = if test_mode(&args) {
        COUNTED_REQUESTS_TEST
    } else {
        COUNTED_REQUESTS
    };
    rt.block_on(async {
        for path in &mut paths {
            path.report_allocations(requests).await;
        }
    });
}
