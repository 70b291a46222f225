//! Client-facing listeners: accept, connection limits, timeouts, graceful shutdown.
//!
//! One hyper-util `auto` builder serves HTTP/1.1 and cleartext HTTP/2 (prior
//! knowledge, detected from the preface) on every listener. On a TLS listener the
//! handshake runs first, in the connection's own task (see [`crate::tls`]); the same
//! builder then serves the decrypted stream, HTTP/2 when ALPN chose `h2`.
//!
//! Connection timers are kept here rather than left to hyper: hyper's header timer
//! has moved between versions (it started at the first byte in hyper#3178; in 1.12
//! it also runs while a keep-alive connection idles, which would make the keep-alive
//! timeout equal to the header timeout), and hyper has no idle timer. Each connection
//! task therefore watches, with no request in flight:
//! - a request head started (bytes read) but not complete: `header_read_timeout`;
//! - a fresh connection that has sent nothing: `header_read_timeout` (slowloris);
//! - a keep-alive connection between requests: `idle_timeout`.
//!
//! hyper's own header timer stays set (to the larger of the two) as a backstop.
//!
//! With requests in flight, the task cuts a client that takes no response data for
//! `send_timeout` (see [`crate::buffering::send`]); the request deadline itself
//! (`request_timeout`, head plus body) is kept by the request-buffering layer, which
//! gets the head's start from here.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio_util::task::TaskTracker;

use crate::buffering::{RequestStart, SendWatch, Watched};
use crate::config::ServerConfig;
use crate::proxy::{handle_counted, ConnActivity, Shared};
use crate::tls::{OverTls, Tls};

/// HTTP/2 receive window per stream. hyper's default is 1 MiB; a quarter of it still
/// carries a whole form post or JSON body in one window (request bodies are read at
/// once by the request buffer, so the window reopens as fast as the client sends),
/// and it caps what one stream may push at us unasked.
pub const H2_STREAM_WINDOW: u32 = 256 * 1024;
/// HTTP/2 receive window per connection: the most request-body bytes a client may have
/// in flight to us on one connection, across its streams. Four streams at a full
/// window; hyper's default (1 MiB) kept, and now written down.
pub const H2_CONNECTION_WINDOW: u32 = 1024 * 1024;
/// Response bytes hyper queues per HTTP/2 stream beyond what the client's window lets
/// out (hyper's default is 400 KiB). The response buffer already holds what the origin
/// sent ahead of the client; this only needs to keep the socket busy between polls.
pub const H2_MAX_SEND_BUF: usize = 64 * 1024;

/// Binds a listener with SO_REUSEADDR (a restart does not wait for TIME_WAIT) and
/// SO_REUSEPORT: a new binary binds the same addresses while the old one still runs,
/// and the old one drains (docs/operations.md, binary upgrade).
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    #[cfg(unix)]
    socket.set_reuseport(true)?;
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
        .header_read_timeout(cfg.header_read_timeout.max(cfg.idle_timeout))
        // Bounds the read buffer (so the head) and the flattened write buffer alike;
        // body bytes beyond it wait in the response buffer, not in hyper.
        .max_buf_size(cfg.max_header_size)
        .max_headers(cfg.max_headers)
        .keep_alive(true);
    b.http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(cfg.http2_max_concurrent_streams)
        .max_header_list_size(cfg.max_header_size as u32)
        .initial_stream_window_size(H2_STREAM_WINDOW)
        .initial_connection_window_size(H2_CONNECTION_WINDOW)
        // A fixed window, so the bounds above hold (BDP probing would grow them).
        .adaptive_window(false)
        .max_send_buf_size(H2_MAX_SEND_BUF)
        .keep_alive_interval(Some(Duration::from_secs(20)))
        .keep_alive_timeout(Duration::from_secs(20));
    b
}

/// Accepts connections on `listener` until `shutdown` turns true; with `tls`, each
/// connection is a TLS handshake first. Each new connection gets the server settings
/// of the config running when it was accepted (timeouts, header limits, HTTP/2
/// streams): a reload applies them to new connections, open ones keep theirs.
pub async fn accept_loop(
    listener: TcpListener,
    tls: Option<Arc<Tls>>,
    shared: Arc<Shared>,
    limit: Arc<Semaphore>,
    tracker: TaskTracker,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut conn = Accepted::new(tls, shared, tracker);
    loop {
        // Take a connection slot before accepting: at the limit, new clients wait in
        // the kernel backlog instead of being accepted and starved.
        let permit = tokio::select! {
            p = limit.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
            _ = shutdown.changed() => break,
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
            _ = shutdown.changed() => break,
        };
        conn.follow_config();
        conn.spawn(
            stream,
            peer,
            Some(permit),
            conn.builder.clone(),
            shutdown.clone(),
        );
    }
    drain_backlog(&listener, &conn).await;
}

/// At shutdown: serves the connections the kernel already queued on this listener
/// (one request each), so that closing it resets none. With SO_REUSEPORT another
/// process may share the port; connections arriving after the last accept go to it
/// when `net.ipv4.tcp_migrate_req = 1` (else the kernel resets them: docs/operations.md).
async fn drain_backlog(listener: &TcpListener, conn: &Accepted) {
    let mut builder = connection_builder(&conn.cfg);
    builder.http1().keep_alive(false);
    let builder = Arc::new(builder);
    // These connections are served as if no shutdown had begun (one request, then
    // closed); the process still waits for them within the grace. The sender lives for
    // the process, so the receiver never reports a change (a dropped one would).
    static NEVER: std::sync::OnceLock<watch::Sender<bool>> = std::sync::OnceLock::new();
    let never = NEVER.get_or_init(|| watch::channel(false).0).subscribe();
    let mut drained = 0u32;
    while let Some(Ok((stream, peer))) = listener.accept().now_or_never() {
        conn.spawn(stream, peer, None, builder.clone(), never.clone());
        drained += 1;
    }
    if drained > 0 {
        tracing::info!(
            connections = drained,
            "served the connections queued at shutdown"
        );
    }
}

/// What a connection task needs, cloned per connection.
struct Accepted {
    tls: Option<Arc<Tls>>,
    shared: Arc<Shared>,
    /// The server settings of the config generation below, and hyper's builder of them.
    cfg: Arc<ServerConfig>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    /// The compiled config they were taken from, compared by address; weak, so an old
    /// generation (its rooms, its pools) is not kept alive by a quiet listener.
    generation: std::sync::Weak<crate::proxy::Compiled>,
    tracker: TaskTracker,
}

impl Accepted {
    fn new(tls: Option<Arc<Tls>>, shared: Arc<Shared>, tracker: TaskTracker) -> Self {
        let current = shared.current.load_full();
        let cfg = Arc::new(current.config.server.clone());
        Accepted {
            tls,
            builder: Arc::new(connection_builder(&cfg)),
            cfg,
            generation: Arc::downgrade(&current),
            shared,
            tracker,
        }
    }

    /// Takes the server settings of the running config if a reload swapped it (one
    /// pointer comparison per accepted connection otherwise).
    fn follow_config(&mut self) {
        let current = self.shared.current.load();
        if std::ptr::eq(self.generation.as_ptr(), Arc::as_ptr(&current)) {
            return;
        }
        *self = Accepted::new(self.tls.clone(), self.shared.clone(), self.tracker.clone());
    }

    /// Serves one accepted connection in its own task (holding `permit`, if any).
    fn spawn(
        &self,
        stream: tokio::net::TcpStream,
        peer: SocketAddr,
        permit: Option<tokio::sync::OwnedSemaphorePermit>,
        builder: Arc<auto::Builder<TokioExecutor>>,
        shutdown: watch::Receiver<bool>,
    ) {
        let _ = stream.set_nodelay(true);
        let shared = self.shared.clone();
        let cfg = self.cfg.clone();
        let tls = self.tls.clone();
        self.tracker.spawn(async move {
            shared.metrics.connections_total.inc();
            shared.metrics.connections_open.inc();
            match tls {
                None => {
                    serve_connection(stream, peer, false, shared.clone(), builder, &cfg, shutdown)
                        .await
                }
                // The handshake is bounded by the header timeout: accept → first request
                // byte is the slowloris window, encrypted or not.
                Some(tls) => {
                    if let Some(stream) = tls.handshake(stream, cfg.header_read_timeout).await {
                        serve_connection(
                            stream,
                            peer,
                            true,
                            shared.clone(),
                            builder,
                            &cfg,
                            shutdown,
                        )
                        .await;
                    }
                }
            }
            shared.metrics.connections_open.dec();
            drop(permit);
        });
    }
}

async fn serve_connection<S>(
    stream: S,
    peer: SocketAddr,
    over_tls: bool,
    shared: Arc<Shared>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    cfg: &ServerConfig,
    mut shutdown: watch::Receiver<bool>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let activity = Arc::new(ConnActivity::default());
    activity.last_end.touch();
    let send = Arc::new(SendWatch::default());
    let send_timeout = cfg.buffering.send_timeout;
    let metrics = shared.metrics.clone();
    let io = TokioIo::new(ActivityIo {
        inner: stream,
        activity: activity.clone(),
        send: send.clone(),
    });
    let svc = {
        let activity = activity.clone();
        let send = send.clone();
        service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
            if over_tls {
                req.extensions_mut().insert(OverTls);
            }
            let version = req.version();
            req.extensions_mut()
                .insert(RequestStart(head_start(&activity, version)));
            let send = send.clone();
            let answer = handle_counted(shared.clone(), peer, activity.clone(), req);
            async move {
                let resp = answer.await?;
                Ok::<_, std::convert::Infallible>(resp.map(|b| Watched::new(b, &send, version)))
            }
        })
    };
    let conn = builder.serve_connection(io, svc);
    tokio::pin!(conn);
    // At shutdown a connection that has not sent its first request yet is not closed
    // at once: its request may already be in the socket (a client that connected just
    // before), and closing would fail it. It gets that one request (within the header
    // timeout), then closes.
    let mut draining = *shutdown.borrow();
    let mut first_request_due = draining.then(Instant::now);
    loop {
        if let Some(since) = first_request_due {
            if request_seen(&activity) || since.elapsed() >= FIRST_REQUEST_WAIT {
                first_request_due = None;
                conn.as_mut().graceful_shutdown();
            }
        }
        let check_at = deadline(&activity, cfg).min(send.next_check(send_timeout));
        tokio::select! {
            res = conn.as_mut() => {
                if let Err(e) = res {
                    tracing::debug!(%peer, error = %e, "client connection ended with an error");
                }
                return;
            }
            _ = shutdown.changed(), if !draining => {
                draining = true;
                first_request_due = Some(Instant::now());
            }
            _ = tokio::time::sleep(FIRST_REQUEST_POLL), if first_request_due.is_some() => {}
            _ = tokio::time::sleep_until(check_at.into()) => {
                if send.expired(send_timeout) {
                    // The client stopped taking its answer: nginx's send_timeout.
                    metrics.slow_clients.send_timeout.inc();
                    tracing::debug!(%peer, ?send_timeout, "closing a client that stopped reading");
                    return;
                }
                if activity.in_flight.load(Ordering::Acquire) == 0 && deadline(&activity, cfg) <= Instant::now() {
                    // Nothing in flight: dropping the connection loses no answer.
                    tracing::debug!(%peer, "closing idle or slow client connection");
                    return;
                }
            }
        }
    }
}

/// How often a connection accepted just before shutdown looks whether its first
/// request came (then it closes after answering it).
const FIRST_REQUEST_POLL: Duration = Duration::from_millis(5);
/// How long such a connection may take to send it: a request already in the socket
/// arrives in microseconds; an idle preconnect must not hold the shutdown longer.
const FIRST_REQUEST_WAIT: Duration = Duration::from_millis(500);

/// Whether the connection has begun a request (so a graceful close answers it first).
fn request_seen(activity: &ConnActivity) -> bool {
    activity.requests.load(Ordering::Acquire) > 0 || activity.head_started.get().is_some()
}

/// When the request now arriving started: its first byte on HTTP/1 (the connection
/// notes it), now on HTTP/2, whose HEADERS frame arrives whole and whose connection
/// carries other streams' bytes.
fn head_start(activity: &ConnActivity, version: http::Version) -> Instant {
    match version {
        http::Version::HTTP_2 => Instant::now(),
        _ => activity.head_started.get().unwrap_or_else(Instant::now),
    }
}

/// When the connection should be closed if nothing changes (see the module docs).
fn deadline(activity: &ConnActivity, cfg: &ServerConfig) -> Instant {
    let now = Instant::now();
    if activity.in_flight.load(Ordering::Acquire) > 0 {
        // Busy: nothing to enforce; look again after an idle period.
        return now + cfg.idle_timeout;
    }
    if let Some(head) = activity.head_started.get() {
        return head + cfg.header_read_timeout;
    }
    let since = activity.last_end.get().unwrap_or(now);
    if activity.requests.load(Ordering::Relaxed) == 0 {
        since + cfg.header_read_timeout
    } else {
        since + cfg.idle_timeout
    }
}

pin_project_lite::pin_project! {
    /// The client stream (TCP, or TLS over TCP), noting when a new request head starts
    /// arriving and when writes stall.
    struct ActivityIo<S> {
        #[pin]
        inner: S,
        activity: Arc<ConnActivity>,
        send: Arc<SendWatch>,
    }
}

impl<S: AsyncRead> AsyncRead for ActivityIo<S> {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let this = self.project();
        let before = buf.filled().len();
        let res = this.inner.poll_read(cx, buf);
        if buf.filled().len() > before && this.activity.in_flight.load(Ordering::Relaxed) == 0 {
            this.activity.head_started.touch_if_unset();
        }
        res
    }
}

impl<S: AsyncWrite> AsyncWrite for ActivityIo<S> {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let this = self.project();
        let res = this.inner.poll_write(cx, buf);
        note_write(this.send, &res);
        res
    }

    fn poll_write_vectored(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let this = self.project();
        let res = this.inner.poll_write_vectored(cx, bufs);
        note_write(this.send, &res);
        res
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        self.project().inner.poll_flush(cx)
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        self.project().inner.poll_shutdown(cx)
    }
}

/// Tells the send watch whether a write went out or stalled.
fn note_write(send: &SendWatch, res: &std::task::Poll<std::io::Result<usize>>) {
    match res {
        std::task::Poll::Pending => send.write_blocked(),
        std::task::Poll::Ready(Ok(n)) if *n > 0 => send.wrote(),
        std::task::Poll::Ready(_) => {}
    }
}

/// Waits for every tracked connection to finish, or for `grace` to pass.
pub async fn drain(tracker: &TaskTracker, grace: Duration) -> bool {
    tracker.close();
    tokio::time::timeout(grace, tracker.wait()).await.is_ok()
}

/// A future that completes on SIGTERM or SIGINT.
pub async fn termination_signal() -> &'static str {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    }
}
