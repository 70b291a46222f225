//! Upstreams: a pooled keep-alive client per origin, server choice, timeouts.
//!
//! The innermost service of every route stack. It picks a server, rewrites the URI to
//! it, sends with hyper-util's pooled client and streams the response back. It holds
//! no limit of its own: the admission layer in front of it bounds what reaches the
//! pool, because hyper's pool has no per-host cap (hyper#4134).

pub mod balance;

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::future::BoxFuture;
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Request, Response, Uri};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::body::{self, Body, BodyGuard, Guarded};
use crate::config::UpstreamConfig;
use crate::error::GatewayError;
use crate::metrics::{Metrics, UpstreamMetrics};
use balance::Balancer;

/// One origin server of an upstream.
#[derive(Debug)]
pub struct Server {
    /// `host:port`.
    pub authority: Authority,
    /// Requests in flight to it (until the response body ends).
    pub in_flight: AtomicI64,
}

/// An origin: its servers, its client pool, its metrics.
pub struct Upstream {
    /// The compiled config it was built from.
    pub config: UpstreamConfig,
    servers: Arc<[Server]>,
    balancer: Balancer,
    client: Client<HttpConnector, Body>,
    metrics: UpstreamMetrics,
}

impl Upstream {
    /// Builds the client pool for an upstream.
    pub fn new(config: UpstreamConfig, metrics: &Metrics) -> Arc<Self> {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(config.connect_timeout));
        connector.set_nodelay(true);
        connector.enforce_http(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .pool_idle_timeout(config.pool_idle_timeout)
            .pool_max_idle_per_host(config.pool_max_idle_per_server)
            // The original Host header is kept (shops serve by virtual host); the
            // client must not replace it with the server's address.
            .set_host(false)
            .build(connector);
        let servers: Arc<[Server]> = config
            .servers
            .iter()
            .map(|a| Server {
                authority: a.clone(),
                in_flight: AtomicI64::new(0),
            })
            .collect();
        Arc::new(Upstream {
            balancer: Balancer::new(config.balance),
            metrics: metrics.upstream(&config.name),
            config,
            servers,
            client,
        })
    }

    /// The upstream's name.
    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// Sends one request to a server of this upstream and returns its streamed response.
    pub async fn send(&self, mut req: Request<Body>) -> Result<Response<Body>, GatewayError> {
        let idx = self.balancer.pick(&self.servers);
        let server = &self.servers[idx];
        let pq = req
            .uri()
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        let mut parts = http::uri::Parts::default();
        parts.scheme = Some(Scheme::HTTP);
        parts.authority = Some(server.authority.clone());
        parts.path_and_query = Some(pq);
        *req.uri_mut() = Uri::from_parts(parts)
            .map_err(|_| GatewayError::BadRequest("invalid request target"))?;
        // Origins speak HTTP/1.1 here whatever the client spoke.
        *req.version_mut() = http::Version::HTTP_11;

        server.in_flight.fetch_add(1, Ordering::Relaxed);
        self.metrics.in_flight.inc();
        self.metrics.requests.inc();
        let guard = InFlight {
            servers: self.servers.clone(),
            idx,
            gauge: self.metrics.in_flight.clone(),
        };

        let timeout = self.config.response_timeout;
        match tokio::time::timeout(timeout, self.client.request(req)).await {
            Ok(Ok(resp)) => Ok(resp.map(|b| body::boxed(Guarded::new(b, guard)))),
            Ok(Err(e)) => {
                drop(guard);
                Err(self.classify(e))
            }
            Err(_) => {
                drop(guard);
                self.metrics.timeouts.inc();
                Err(GatewayError::UpstreamTimeout {
                    upstream: self.config.name.clone(),
                    timeout,
                })
            }
        }
    }

    fn classify(&self, e: hyper_util::client::legacy::Error) -> GatewayError {
        if e.is_connect() {
            self.metrics.connect_errors.inc();
            return GatewayError::UpstreamConnect {
                upstream: self.config.name.clone(),
            };
        }
        // A request body over the limit surfaces here as the client's body error.
        let mut src: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(&e);
        while let Some(s) = src {
            if s.is::<http_body_util::LengthLimitError>() {
                return GatewayError::BodyTooLarge;
            }
            src = s.source();
        }
        self.metrics.other_errors.inc();
        GatewayError::UpstreamProtocol {
            upstream: self.config.name.clone(),
            detail: error_chain(&e),
        }
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(x) = src {
        s.push_str(": ");
        s.push_str(&x.to_string());
        src = x.source();
    }
    s
}

/// Counts a request as in flight to a server until its response body is done.
struct InFlight {
    servers: Arc<[Server]>,
    idx: usize,
    gauge: prometheus::IntGauge,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.servers[self.idx]
            .in_flight
            .fetch_sub(1, Ordering::Relaxed);
        self.gauge.dec();
    }
}

impl BodyGuard for InFlight {
    fn release(self, _bytes: u64, _complete: bool) {}
}

/// The innermost tower service of a route: sends to the route's upstream.
#[derive(Clone)]
pub struct UpstreamService {
    upstream: Arc<Upstream>,
}

impl UpstreamService {
    /// A service sending to `upstream`.
    pub fn new(upstream: Arc<Upstream>) -> Self {
        UpstreamService { upstream }
    }
}

impl tower::Service<Request<Body>> for UpstreamService {
    type Response = Response<Body>;
    type Error = GatewayError;
    type Future = BoxFuture<'static, Result<Response<Body>, GatewayError>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let up = self.upstream.clone();
        Box::pin(async move { up.send(req).await })
    }
}
