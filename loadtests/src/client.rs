//! HTTP/1 clients for load: our own pool of persistent connections (default) and
//! hyper-util's legacy pooled client (for comparison, `--client legacy`).
//!
//! Why our own pool: the legacy client hashes a pool key, parses an absolute URI
//! and takes its pool lock for every request, and it has no cap on connections
//! (hyper#4134). A load generator wants a hard cap (so a stalled target costs a
//! bounded number of sockets) and as little work per request as possible.

use bytes::Bytes;
use http::header::{CONTENT_TYPE, COOKIE, HOST, RETRY_AFTER, SET_COOKIE, USER_AGENT};
use http::{HeaderName, HeaderValue, Method, Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use tokio::sync::Semaphore;

/// User-Agent of every request, so a log line can tell load from people.
pub const USER_AGENT_VALUE: &str = concat!("floodgate-load/", env!("CARGO_PKG_VERSION"));
/// Handshakes in progress at once, below the common listen backlog of 128.
const MAX_CONCURRENT_CONNECTS: usize = 32;
/// Bodies we keep (for shoppers) are cut here: waiting pages are small.
const MAX_KEPT_BODY: usize = 256 * 1024;

/// Which client implementation to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientKind {
    /// Our pool of `http1` connections, capped.
    #[default]
    Pool,
    /// hyper-util's legacy pooled client.
    Legacy,
}

/// One request to send.
#[derive(Debug)]
pub struct Req<'a> {
    /// Method.
    pub method: &'a Method,
    /// Origin-form path and query.
    pub path: &'a str,
    /// Extra headers.
    pub headers: &'a [(HeaderName, HeaderValue)],
    /// Cookie header, if any.
    pub cookie: Option<&'a str>,
    /// Body (cheap to clone).
    pub body: &'a Bytes,
}

/// What the caller needs from the response beyond its status.
#[derive(Debug, Clone, Copy, Default)]
pub struct Want {
    /// Set-Cookie, Retry-After, Content-Type.
    pub headers: bool,
    /// The body itself (otherwise it is drained and counted).
    pub body: bool,
}

/// The parts of a response the generator uses.
#[derive(Debug, Default)]
pub struct Resp {
    /// Status code.
    pub status: u16,
    /// Body bytes received.
    pub bytes: u64,
    /// Set-Cookie values (when asked for).
    pub set_cookies: Vec<String>,
    /// Retry-After (when asked for).
    pub retry_after: Option<String>,
    /// Content-Type (when asked for).
    pub content_type: Option<String>,
    /// Body, up to 256 KiB (when asked for).
    pub body: Option<Bytes>,
}

/// Why no response came back.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// TCP connect or HTTP handshake failed.
    #[error("connect: {0}")]
    Connect(String),
    /// The connection failed after the request was handed to it.
    #[error("{0}")]
    Other(String),
}

/// A client bound to one target address.
pub struct HttpClient {
    inner: Inner,
    host: HeaderValue,
    permits: Semaphore,
    connecting: Semaphore,
    opened: AtomicU64,
}

enum Inner {
    Pool {
        addr: SocketAddr,
        idle: Mutex<Vec<SendRequest<Full<Bytes>>>>,
    },
    Legacy {
        // Boxed: the client is several hundred bytes and the pool variant is the hot one.
        client: Box<hyper_util::client::legacy::Client<HttpConnector, Full<Bytes>>>,
        origin: String,
    },
}

impl HttpClient {
    /// A client for `addr`, sending `authority` as Host, with at most `max_connections` in use.
    pub fn new(
        kind: ClientKind,
        addr: SocketAddr,
        authority: &str,
        max_connections: usize,
    ) -> Self {
        let inner = match kind {
            ClientKind::Pool => Inner::Pool {
                addr,
                idle: Mutex::new(Vec::with_capacity(max_connections.min(4096))),
            },
            ClientKind::Legacy => {
                let mut conn = HttpConnector::new();
                conn.set_nodelay(true);
                let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
                    .pool_max_idle_per_host(max_connections)
                    .build(conn);
                Inner::Legacy {
                    client: Box::new(client),
                    origin: format!("http://{addr}"),
                }
            }
        };
        HttpClient {
            inner,
            host: HeaderValue::from_str(authority)
                .unwrap_or_else(|_| HeaderValue::from_static("localhost")),
            permits: Semaphore::new(max_connections.max(1)),
            connecting: Semaphore::new(MAX_CONCURRENT_CONNECTS),
            opened: AtomicU64::new(0),
        }
    }

    /// Connections opened so far (pool client only; the legacy client does not say).
    pub fn connections_opened(&self) -> u64 {
        self.opened.load(Ordering::Relaxed)
    }

    fn build(&self, req: &Req<'_>, absolute: Option<&str>) -> Request<Full<Bytes>> {
        let uri = match absolute {
            Some(origin) => format!("{origin}{}", req.path),
            None => req.path.to_string(),
        };
        let mut b = Request::builder()
            .method(req.method.clone())
            .uri(uri)
            .header(HOST, self.host.clone())
            .header(USER_AGENT, HeaderValue::from_static(USER_AGENT_VALUE));
        for (k, v) in req.headers {
            b = b.header(k, v);
        }
        if let Some(c) = req.cookie {
            if let Ok(v) = HeaderValue::from_str(c) {
                b = b.header(COOKIE, v);
            }
        }
        b.body(Full::new(req.body.clone()))
            .unwrap_or_else(|_| Request::new(Full::new(Bytes::new())))
    }

    /// Sends one request and reads its whole response.
    pub async fn request(&self, req: &Req<'_>, want: Want) -> Result<Resp, ClientError> {
        // The permit bounds connections in use; waiting for it is part of the
        // request's latency, as a browser waiting for a free connection would see.
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|e| ClientError::Other(e.to_string()))?;
        match &self.inner {
            Inner::Pool { addr, idle } => self.pooled(*addr, idle, req, want).await,
            Inner::Legacy { client, origin } => {
                let resp = client
                    .request(self.build(req, Some(origin)))
                    .await
                    .map_err(|e| {
                        if e.is_connect() {
                            ClientError::Connect(format!("{e:?}"))
                        } else {
                            ClientError::Other(format!("{e:?}"))
                        }
                    })?;
                read(resp, want).await
            }
        }
    }

    async fn pooled(
        &self,
        addr: SocketAddr,
        idle: &Mutex<Vec<SendRequest<Full<Bytes>>>>,
        req: &Req<'_>,
        want: Want,
    ) -> Result<Resp, ClientError> {
        // Only an idempotent request may be sent again after a reused
        // connection turned out to be closed by the server (hyper#2136).
        let retryable = matches!(*req.method, Method::GET | Method::HEAD | Method::OPTIONS);
        let mut retried = false;
        loop {
            let pop = || idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
            let (mut sender, reused) = match pop() {
                Some(s) => (s, true),
                None => {
                    // Few handshakes at a time: a burst of hundreds of SYNs
                    // overflows the target's listen backlog, and each lost SYN
                    // costs a 1 s retransmit that would be charged to the target.
                    let _c = self
                        .connecting
                        .acquire()
                        .await
                        .map_err(|e| ClientError::Other(e.to_string()))?;
                    match pop() {
                        Some(s) => (s, true),
                        None => (self.connect(addr).await?, false),
                    }
                }
            };
            if sender.ready().await.is_err() {
                if reused {
                    continue;
                }
                return Err(ClientError::Connect(
                    "connection closed right after handshake".into(),
                ));
            }
            match sender.send_request(self.build(req, None)).await {
                Ok(resp) => {
                    let r = read(resp, want).await?;
                    if !sender.is_closed() {
                        idle.lock().unwrap_or_else(|p| p.into_inner()).push(sender);
                    }
                    return Ok(r);
                }
                Err(e)
                    if reused
                        && retryable
                        && !retried
                        && (e.is_canceled() || e.is_incomplete_message()) =>
                {
                    retried = true;
                }
                Err(e) => return Err(ClientError::Other(describe(&e))),
            }
        }
    }

    async fn connect(&self, addr: SocketAddr) -> Result<SendRequest<Full<Bytes>>, ClientError> {
        let stream = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| ClientError::Connect(e.to_string()))?;
        let _ = stream.set_nodelay(true);
        let (sender, conn) = hyper::client::conn::http1::Builder::new()
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|e| ClientError::Connect(e.to_string()))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        self.opened.fetch_add(1, Ordering::Relaxed);
        Ok(sender)
    }
}

fn describe(e: &hyper::Error) -> String {
    use std::error::Error as _;
    match e.source() {
        Some(s) => format!("{e}: {s}"),
        None => e.to_string(),
    }
}

async fn read(resp: Response<Incoming>, want: Want) -> Result<Resp, ClientError> {
    let mut out = Resp {
        status: resp.status().as_u16(),
        ..Resp::default()
    };
    if want.headers {
        let h = resp.headers();
        out.set_cookies = h
            .get_all(SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok().map(str::to_string))
            .collect();
        out.retry_after = h
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        out.content_type = h
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
    }
    let mut body = resp.into_body();
    let mut kept = want.body.then(Vec::new);
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| ClientError::Other(describe(&e)))?;
        if let Ok(data) = frame.into_data() {
            out.bytes += data.len() as u64;
            if let Some(k) = kept.as_mut() {
                let room = MAX_KEPT_BODY.saturating_sub(k.len());
                k.extend_from_slice(&data[..data.len().min(room)]);
            }
        }
    }
    out.body = kept.map(Bytes::from);
    Ok(out)
}
