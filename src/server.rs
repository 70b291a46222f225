//! Client-facing listeners: accept, connection limits, timeouts, graceful shutdown.
//!
//! One hyper-util `auto` builder serves HTTP/1.1 and cleartext HTTP/2 (prior
//! knowledge, detected from the preface) on every listener. hyper's own header timer
//! starts at the first byte (hyper#3178) and it has no keep-alive idle timer, so each
//! connection task also watches "no request in flight for too long" itself: before the
//! first request that limit is `header_read_timeout` (a socket that never speaks), after
//! it `idle_timeout`.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio_util::task::TaskTracker;

use crate::config::ServerConfig;
use crate::proxy::{handle_counted, ConnActivity, Shared};

/// Binds a listener with SO_REUSEADDR so a restart does not wait for TIME_WAIT.
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.set_nodelay(true)?;
    socket.bind(addr)?;
    // A deep backlog absorbs the launch-minute SYN burst while we are at max_connections.
    socket.listen(4096)
}

/// Builds the hyper-util connection builder from the server config.
pub fn connection_builder(cfg: &ServerConfig) -> auto::Builder<TokioExecutor> {
    let mut b = auto::Builder::new(TokioExecutor::new());
    b.http1()
        // Without a timer, header_read_timeout panics or silently does nothing
        // (hyper#3567, hyper-util#137).
        .timer(TokioTimer::new())
        .header_read_timeout(cfg.header_read_timeout)
        .max_buf_size(cfg.max_header_size)
        .max_headers(cfg.max_headers)
        .keep_alive(true);
    b.http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(cfg.http2_max_concurrent_streams)
        .max_header_list_size(cfg.max_header_size as u32)
        .keep_alive_interval(Some(Duration::from_secs(20)))
        .keep_alive_timeout(Duration::from_secs(20));
    b
}

/// Accepts connections on `listener` until `shutdown` turns true.
pub async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    cfg: Arc<ServerConfig>,
    limit: Arc<Semaphore>,
    tracker: TaskTracker,
    mut shutdown: watch::Receiver<bool>,
) {
    let builder = Arc::new(connection_builder(&cfg));
    loop {
        // Take a connection slot before accepting: at the limit, new clients wait in
        // the kernel backlog instead of being accepted and starved.
        let permit = tokio::select! {
            p = limit.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
            _ = shutdown.changed() => return,
        };
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // EMFILE and friends: back off briefly rather than spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => return,
        };
        let _ = stream.set_nodelay(true);
        let shared = shared.clone();
        let builder = builder.clone();
        let cfg = cfg.clone();
        let shutdown = shutdown.clone();
        tracker.spawn(async move {
            shared.metrics.connections_total.inc();
            shared.metrics.connections_open.inc();
            serve_connection(stream, peer, shared.clone(), builder, &cfg, shutdown).await;
            shared.metrics.connections_open.dec();
            drop(permit);
        });
    }
}

async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    cfg: &ServerConfig,
    mut shutdown: watch::Receiver<bool>,
) {
    let activity = Arc::new(ConnActivity::default());
    activity.last_end.touch();
    let svc = {
        let activity = activity.clone();
        service_fn(move |req| handle_counted(shared.clone(), peer, activity.clone(), req))
    };
    let conn = builder.serve_connection(TokioIo::new(stream), svc);
    tokio::pin!(conn);
    let mut draining = *shutdown.borrow();
    if draining {
        conn.as_mut().graceful_shutdown();
    }
    loop {
        let idle_limit = if activity.requests.load(Ordering::Relaxed) == 0 {
            cfg.header_read_timeout
        } else {
            cfg.idle_timeout
        };
        let check_at = activity.last_end.get() + idle_limit;
        tokio::select! {
            res = conn.as_mut() => {
                if let Err(e) = res {
                    tracing::debug!(%peer, error = %e, "client connection ended with an error");
                }
                return;
            }
            _ = shutdown.changed(), if !draining => {
                draining = true;
                conn.as_mut().graceful_shutdown();
            }
            _ = tokio::time::sleep_until(check_at.into()) => {
                let idle = activity.in_flight.load(Ordering::Acquire) == 0
                    && activity.last_end.get() + idle_limit <= Instant::now();
                if idle {
                    // Nothing in flight: dropping the connection loses nothing.
                    tracing::debug!(%peer, "closing idle client connection");
                    return;
                }
                if activity.in_flight.load(Ordering::Acquire) > 0 {
                    // Busy: look again after a full idle period.
                    activity.last_end.touch();
                }
            }
        }
    }
}

/// Waits for every tracked connection to finish, or for `grace` to pass.
pub async fn drain(tracker: &TaskTracker, grace: Duration) -> bool {
    tracker.close();
    tokio::time::timeout(grace, tracker.wait()).await.is_ok()
}

/// A future that completes on SIGTERM or SIGINT.
pub fn termination_signal() -> impl Future<Output = &'static str> {
    async {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
        let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
        tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        }
    }
}
