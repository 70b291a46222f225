//! The connection pool of an upstream: idle HTTP/1.1 connections to each origin
//! server, one stack per worker thread.
//!
//! Hand-written instead of hyper-util's legacy pooled client, for what a gateway in
//! front of one origin does on every request (measured in README § Performance):
//! - the legacy client hashes a pool key, parses an absolute URI and takes one
//!   process-wide pool lock per request; here the server is an index and each worker
//!   thread has its own stack, so the lock is never contended;
//! - it hands every request to the connection task through a second channel and
//!   spawns a task to return the connection; here the sender goes back to its stack
//!   when the response body ends, from the task that read it;
//! - a connection made on one worker is reused on that worker, so with one runtime
//!   per core (`server.workers`) its I/O never crosses threads.
//!
//! It holds no cap on connections: the admission layer in front of the upstream bounds
//! what reaches the pool (hyper#4134 is why that cap cannot live in a pool).

use std::cell::Cell;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use http::uri::Authority;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;

use crate::body::Body;
use crate::config::UpstreamConfig;

/// A connection ready for requests: the sending half of a spawned HTTP/1.1 connection.
pub type Sender = SendRequest<Body>;

/// A future that opens a connection.
pub type Connecting = Pin<Box<dyn Future<Output = std::io::Result<Sender>> + Send>>;

/// How connections to an origin server are opened: TCP in production; a bench can
/// put an in-memory origin behind it.
pub trait Connect: Send + Sync + 'static {
    /// Opens a connection to `server`, its HTTP/1.1 handshake done and its task spawned.
    fn connect(&self, server: &Authority) -> Connecting;
}

/// TCP with `TCP_NODELAY`, within the upstream's `connect_timeout`.
struct Tcp {
    timeout: Duration,
}

impl Connect for Tcp {
    fn connect(&self, server: &Authority) -> Connecting {
        let timeout = self.timeout;
        let server = server.clone();
        Box::pin(async move {
            let stream = tokio::time::timeout(timeout, connect_tcp(&server))
                .await
                .map_err(|_| {
                    std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out")
                })??;
            stream.set_nodelay(true)?;
            handshake(TokioIo::new(stream)).await
        })
    }
}

async fn connect_tcp(server: &Authority) -> std::io::Result<tokio::net::TcpStream> {
    let port = server.port_u16().unwrap_or(80);
    // An IP literal connects without a resolver round trip; `[::1]` comes bracketed.
    let host = server.host().trim_start_matches('[').trim_end_matches(']');
    match host.parse::<std::net::IpAddr>() {
        Ok(ip) => tokio::net::TcpStream::connect(SocketAddr::new(ip, port)).await,
        Err(_) => tokio::net::TcpStream::connect((host, port)).await,
    }
}

/// The HTTP/1.1 handshake on an open stream; the connection runs in a task of its own.
pub async fn handshake<T>(io: T) -> std::io::Result<Sender>
where
    T: hyper::rt::Read + hyper::rt::Write + Send + Unpin + 'static,
{
    let (sender, conn) = http1::Builder::new()
        .handshake(io)
        .await
        .map_err(std::io::Error::other)?;
    tokio::spawn(async move {
        // A failure here reaches the request that was on the connection, if any.
        let _ = conn.await;
    });
    Ok(sender)
}

/// Why a request got no response head from the pool.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SendError {
    /// No connection could be opened (refused, timed out, handshake failed).
    #[error("connect: {0}")]
    Connect(#[source] std::io::Error),
    /// The connection failed after the request was handed to it.
    #[error(transparent)]
    Http(#[from] hyper::Error),
}

/// An idle connection and when it went idle.
struct Idle {
    sender: Sender,
    since: Instant,
}

/// Idle connections of one server, one stack per worker slot.
struct ServerIdle {
    slots: Box<[Mutex<Vec<Idle>>]>,
}

/// The pool of one upstream (see the module docs).
pub(crate) struct Pool {
    connector: Arc<dyn Connect>,
    servers: Box<[ServerIdle]>,
    idle_timeout: Duration,
    /// Idle connections kept per server and slot: `pool_max_idle_per_server` spread
    /// over the slots.
    max_idle_per_slot: usize,
}

/// Stacks per server: one per core, so each worker thread finds its own.
fn slot_count() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get().min(64))
}

thread_local! {
    /// This thread's stack index, drawn once: worker threads live as long as the
    /// runtime, so each keeps one slot.
    static SLOT: Cell<usize> = const { Cell::new(usize::MAX) };
}
static NEXT_SLOT: AtomicUsize = AtomicUsize::new(0);

fn this_thread_slot() -> usize {
    SLOT.with(|s| {
        if s.get() == usize::MAX {
            s.set(NEXT_SLOT.fetch_add(1, Ordering::Relaxed));
        }
        s.get()
    })
}

impl Pool {
    /// A TCP pool for `config`'s servers; with a runtime, idle connections past
    /// `pool_idle_timeout` are closed by a sweep even when no request comes.
    pub(crate) fn new(config: &UpstreamConfig) -> Arc<Self> {
        let tcp = Tcp {
            timeout: config.connect_timeout,
        };
        Self::with_connector(config, Arc::new(tcp))
    }

    /// A pool opening its connections through `connector`.
    pub(crate) fn with_connector(
        config: &UpstreamConfig,
        connector: Arc<dyn Connect>,
    ) -> Arc<Self> {
        let slots = slot_count();
        let servers = config
            .servers
            .iter()
            .map(|_| ServerIdle {
                slots: (0..slots).map(|_| Mutex::new(Vec::new())).collect(),
            })
            .collect();
        let pool = Arc::new(Pool {
            connector,
            servers,
            idle_timeout: config.pool_idle_timeout,
            max_idle_per_slot: config.pool_max_idle_per_server.div_ceil(slots),
        });
        if tokio::runtime::Handle::try_current().is_ok() {
            tokio::spawn(sweep(Arc::downgrade(&pool)));
        }
        pool
    }

    fn stack(&self, server: usize, slot: usize) -> std::sync::MutexGuard<'_, Vec<Idle>> {
        let slots = &self.servers[server].slots;
        slots[slot % slots.len()]
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Sends `req` to server `server` (index into the upstream's servers, at
    /// `authority`) on an idle connection or a new one. Returns the response and the
    /// connection, to give back with [`Pool::put`] once the response body is done.
    pub(crate) async fn send(
        &self,
        server: usize,
        authority: &Authority,
        mut req: Request<Body>,
    ) -> Result<(Response<Incoming>, Sender), SendError> {
        loop {
            let (mut sender, reused) = match self.take(server).await {
                Some(s) => (s, true),
                None => {
                    let s = self.connector.connect(authority).await;
                    (s.map_err(SendError::Connect)?, false)
                }
            };
            match sender.try_send_request(req).await {
                Ok(resp) => return Ok((resp, sender)),
                Err(mut e) => match e.take_message() {
                    // Not a byte of it was written (the origin closed the idle
                    // connection first): sending it again is safe for any method.
                    Some(back) if reused => req = back,
                    _ => return Err(e.into_error().into()),
                },
            }
        }
    }

    /// The newest idle connection that is still open: from this thread's stack, else
    /// from another's (a task that moved threads, or a busier worker), so that no
    /// connection is opened while one idles.
    async fn take(&self, server: usize) -> Option<Sender> {
        let own = this_thread_slot();
        for slot in own..own + self.servers[server].slots.len() {
            if let Some(sender) = self.take_from(server, slot).await {
                return Some(sender);
            }
        }
        None
    }

    async fn take_from(&self, server: usize, slot: usize) -> Option<Sender> {
        loop {
            let idle = self.stack(server, slot).pop()?;
            if idle.since.elapsed() >= self.idle_timeout {
                // The rest of the stack went idle earlier still.
                self.stack(server, slot).clear();
                return None;
            }
            let mut sender = idle.sender;
            // A connection given back as its response body ended may not have told
            // its sender yet that it is idle again; this waits for that (it does not
            // wait on a connection that is still busy: those are never in the stack).
            if sender.ready().await.is_ok() {
                return Some(sender);
            }
        }
    }

    /// Gives back a connection whose last response was read whole.
    pub(crate) fn put(&self, server: usize, sender: Sender) {
        if sender.is_closed() {
            return;
        }
        let now = Instant::now();
        let mut stack = self.stack(server, this_thread_slot());
        // Oldest at the bottom: drop what has idled too long, and what is over the cap.
        let stale = stack
            .iter()
            .take_while(|i| now.duration_since(i.since) >= self.idle_timeout)
            .count();
        let over = (stack.len() - stale + 1).saturating_sub(self.max_idle_per_slot);
        stack.drain(..stale + over);
        if self.max_idle_per_slot > 0 {
            stack.push(Idle { sender, since: now });
        }
    }

    /// Closes every idle connection past the idle timeout.
    fn sweep_once(&self) {
        let now = Instant::now();
        for server in self.servers.iter() {
            for slot in server.slots.iter() {
                let mut stack = slot.lock().unwrap_or_else(|p| p.into_inner());
                stack.retain(|i| {
                    now.duration_since(i.since) < self.idle_timeout && !i.sender.is_closed()
                });
            }
        }
    }

    /// Idle connections across every slot, for tests.
    #[cfg(test)]
    fn idle_count(&self, server: usize) -> usize {
        self.servers[server]
            .slots
            .iter()
            .map(|s| s.lock().unwrap().len())
            .sum()
    }
}

/// Closes idle connections past their timeout until the pool is gone.
async fn sweep(pool: Weak<Pool>) {
    let period = match pool.upgrade() {
        Some(p) => (p.idle_timeout / 2).max(Duration::from_millis(50)),
        None => return,
    };
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match pool.upgrade() {
            Some(p) => p.sweep_once(),
            None => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    fn config(addr: SocketAddr, idle: Duration) -> UpstreamConfig {
        let toml = format!(
            "[[upstream]]\nname = \"o\"\nservers = [\"{addr}\"]\npool_idle_timeout = \"{}ms\"\n[[route]]\nname = \"r\"\npath_prefix = \"/\"\nupstream = \"o\"\n",
            idle.as_millis()
        );
        crate::config::parse(&toml).unwrap().upstreams.remove(0)
    }

    /// A loopback origin answering "ok" that counts the connections it accepted;
    /// without `keep_alive` it closes each connection after one answer.
    async fn origin_with(keep_alive: bool) -> (SocketAddr, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            loop {
                let (s, _) = listener.accept().await.unwrap();
                count.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(|_req| async {
                        Ok::<_, std::convert::Infallible>(Response::new(crate::body::full("ok")))
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .keep_alive(keep_alive)
                        .serve_connection(TokioIo::new(s), svc)
                        .await;
                });
            }
        });
        (addr, accepted)
    }

    async fn origin() -> (SocketAddr, Arc<AtomicUsize>) {
        origin_with(true).await
    }

    async fn get(pool: &Pool, authority: &Authority) -> Sender {
        let req = Request::get("/").body(crate::body::empty()).unwrap();
        let (resp, sender) = pool.send(0, authority, req).await.unwrap();
        assert_eq!(resp.into_body().collect().await.unwrap().to_bytes(), "ok");
        sender
    }

    #[tokio::test]
    async fn a_connection_given_back_is_reused_by_the_next_request() {
        let (addr, accepted) = origin().await;
        let pool = Pool::new(&config(addr, Duration::from_secs(5)));
        let authority: Authority = addr.to_string().parse().unwrap();
        for _ in 0..5 {
            let sender = get(&pool, &authority).await;
            pool.put(0, sender);
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
        assert_eq!(pool.idle_count(0), 1);
    }

    #[tokio::test]
    async fn a_connection_not_given_back_is_not_reused() {
        let (addr, accepted) = origin().await;
        let pool = Pool::new(&config(addr, Duration::from_secs(5)));
        let authority: Authority = addr.to_string().parse().unwrap();
        drop(get(&pool, &authority).await);
        drop(get(&pool, &authority).await);
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn idle_connections_past_the_idle_timeout_are_closed() {
        let (addr, accepted) = origin().await;
        let pool = Pool::new(&config(addr, Duration::from_millis(100)));
        let authority: Authority = addr.to_string().parse().unwrap();
        let sender = get(&pool, &authority).await;
        pool.put(0, sender);
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert_eq!(pool.idle_count(0), 0, "the sweep closed it");
        pool.put(0, get(&pool, &authority).await);
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_connection_the_origin_closed_is_not_reused_and_no_request_fails() {
        let (addr, accepted) = origin_with(false).await;
        let pool = Pool::new(&config(addr, Duration::from_secs(5)));
        let authority: Authority = addr.to_string().parse().unwrap();
        for _ in 0..3 {
            let sender = get(&pool, &authority).await;
            pool.put(0, sender);
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 3);
    }
}
