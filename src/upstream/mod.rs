//! Upstreams: a pooled keep-alive client per origin, server choice, timeouts.
//!
//! The innermost service of every route stack. It picks a server, sends on one of
//! that server's pooled connections ([`pool`]) and streams the response back. It
//! holds no limit of its own: the admission layer in front of it bounds what reaches
//! the pool.

pub mod balance;
mod breaker;
mod changes;
pub mod health;
pub mod pool;
pub mod retry;
mod watch;

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::future::BoxFuture;
use http::uri::{Authority, PathAndQuery};
use http::{Request, Response, Uri};

use crate::admission::{Admission, AdmissionMetrics, Settings as AdmissionSettings};
use crate::body::{self, Body, BodyGuard, Guarded};
use crate::config::UpstreamConfig;
use crate::error::GatewayError;
use crate::metrics::{Metrics, UpstreamMetrics};
use crate::reconfigure::Changes;
use balance::Balancer;
use changes::Carried;
use health::{Health, Outcome};
use pool::{Pool, SendError, Sender};
use retry::Retries;
use watch::{BodyWatch, Watched};

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
    pool: Arc<Pool>,
    metrics: UpstreamMetrics,
    /// The admission controller every route to this upstream shares.
    pub admission: Arc<Admission>,
    /// Which servers take traffic; the circuit breaker.
    pub health: Arc<Health>,
    /// Shared with the next generation while the retry settings stay: a reload does
    /// not refill the budget a retry storm has spent.
    retries: Arc<Retries>,
}

/// Whether two configs of an upstream build the same connection pool (its stacks are
/// per server, by index).
fn same_pool(a: &UpstreamConfig, b: &UpstreamConfig) -> bool {
    a.servers == b.servers
        && a.connect_timeout == b.connect_timeout
        && a.pool_idle_timeout == b.pool_idle_timeout
        && a.pool_max_idle_per_server == b.pool_max_idle_per_server
}

impl Upstream {
    /// Builds the client pool for an upstream.
    pub fn new(config: UpstreamConfig, metrics: &Metrics) -> Arc<Self> {
        Self::build(config, metrics, None).0
    }

    /// An upstream whose connections come from `connector` instead of TCP: for benches
    /// that measure the gateway's own path with an in-memory origin.
    pub fn with_connector(
        config: UpstreamConfig,
        metrics: &Metrics,
        connector: Arc<dyn pool::Connect>,
    ) -> Arc<Self> {
        let pool = Pool::with_connector(&config, connector);
        Self::assemble(config, metrics, None, pool)
    }

    /// Like [`Upstream::new`], carrying state over from `previous` (the upstream of
    /// the same name in the config being replaced), and saying what changed: the
    /// admission controller always (updated in place, so in-flight requests and
    /// waiters keep counting against the limit), the health state while servers and
    /// health settings stay, the retry budget while the retry settings stay, the pool
    /// while its own settings stay.
    pub(crate) fn build(
        config: UpstreamConfig,
        metrics: &Metrics,
        previous: Option<&Upstream>,
    ) -> (Arc<Self>, Changes) {
        let carried = previous.map(|p| Carried {
            pool: same_pool(&p.config, &config),
            health: p.health.same_settings(
                &config.servers,
                &config.outlier_detection,
                &config.circuit_breaker,
                &config.health_check,
            ),
            retries: p.config.retries == config.retries,
        });
        // A reload in the middle of a sale must not be a cold start (new connections)
        // for the origin.
        let pool = match previous.filter(|_| carried.is_some_and(|c| c.pool)) {
            Some(p) => p.pool.clone(),
            None => Pool::new(&config),
        };
        let changes = changes::changes(previous.map(|p| &p.config), &config, carried);
        let upstream = Self::assemble(config, metrics, previous.zip(carried), pool);
        (upstream, changes)
    }

    /// The upstream around `pool`, with the state `previous` says to carry over.
    fn assemble(
        config: UpstreamConfig,
        metrics: &Metrics,
        previous: Option<(&Upstream, Carried)>,
        pool: Arc<Pool>,
    ) -> Arc<Self> {
        let kept = |state: fn(Carried) -> bool| previous.filter(|(_, c)| state(*c)).map(|(p, _)| p);
        let settings = AdmissionSettings::of(&config);
        let admission = match previous {
            Some((p, _)) => {
                p.admission.reconfigure(settings);
                p.admission.clone()
            }
            None => Admission::new(settings, AdmissionMetrics::new(metrics, &config.name)),
        };
        let health = match kept(|c| c.health) {
            Some(p) => p.health.clone(),
            None => Health::new(
                &config.name,
                &config.servers,
                config.outlier_detection.clone(),
                config.circuit_breaker.clone(),
                config.health_check.clone(),
                metrics,
            ),
        };
        let retries = match kept(|c| c.retries) {
            Some(p) => p.retries.clone(),
            None => Arc::new(Retries::new(&config.retries, &config.name, metrics)),
        };
        Arc::new(Upstream {
            balancer: Balancer::new(config.balance),
            metrics: metrics.upstream(&config.name),
            servers: config
                .servers
                .iter()
                .map(|a| Server {
                    authority: a.clone(),
                    in_flight: AtomicI64::new(0),
                })
                .collect(),
            config,
            pool,
            admission,
            health,
            retries,
        })
    }

    /// The upstream's name.
    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// Sends a request to a server of this upstream and returns its streamed response;
    /// a replay-safe request is retried on another server after a connect failure or a
    /// 502/503, within the retry budget (see [`retry`]).
    pub async fn send(&self, req: Request<Body>) -> Result<Response<Body>, GatewayError> {
        let attempts = self.retries.allowed(&req);
        if attempts == 0 {
            return self.send_once(req, None).await.0;
        }
        let mut req = req;
        let mut avoid = None;
        let mut attempt = 0;
        loop {
            let again = (attempt < attempts).then(|| head_of(&req));
            let (res, idx) = self.send_once(req, avoid).await;
            let worth_retrying = match &res {
                Err(GatewayError::UpstreamConnect { .. }) => true,
                Ok(resp) => retry::retryable_status(resp.status()),
                Err(_) => false,
            };
            let Some(next) = again.filter(|_| worth_retrying) else {
                return res;
            };
            if !self.retries.withdraw() {
                return res;
            }
            // Dropping the answer releases its server's in-flight count before the retry.
            drop(res);
            attempt += 1;
            avoid = idx;
            req = next;
        }
    }

    /// One attempt, to a server other than `avoid` when another is available; returns
    /// the server used, if any.
    async fn send_once(
        &self,
        req: Request<Body>,
        avoid: Option<usize>,
    ) -> (Result<Response<Body>, GatewayError>, Option<usize>) {
        let idx = match self.health.choose(&self.balancer, &self.servers, avoid) {
            Ok(i) => i,
            Err(open) => {
                let e = GatewayError::CircuitOpen {
                    upstream: self.config.name.clone(),
                    retry_after: open.retry_after,
                };
                return (Err(e), None);
            }
        };
        let (res, outcome) = self.send_to(idx, req).await;
        self.health.record(idx, outcome);
        (res, Some(idx))
    }

    /// Sends to server `idx`; says whether a failure was the origin's.
    async fn send_to(
        &self,
        idx: usize,
        mut req: Request<Body>,
    ) -> (Result<Response<Body>, GatewayError>, Outcome) {
        let server = &self.servers[idx];
        // Origin-form: the origin gets the path and query; the Host header is the
        // client's (shops serve by virtual host).
        let pq = req
            .uri()
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        *req.uri_mut() = Uri::from(pq);
        // Origins speak HTTP/1.1 here whatever the client spoke.
        *req.version_mut() = http::Version::HTTP_11;
        // Watched: whether a timeout or an error was the client's body or the origin.
        let watch = BodyWatch::new();
        let req = req.map(|b| body::boxed(Watched::new(b, watch.clone())));

        server.in_flight.fetch_add(1, Ordering::Relaxed);
        self.metrics.in_flight.inc();
        self.metrics.requests.inc();
        let mut guard = InFlight {
            servers: self.servers.clone(),
            idx,
            gauge: self.metrics.in_flight.clone(),
            conn: None,
        };
        let sent = self.pool.send(idx, &server.authority, req);
        match self.await_head(sent, &watch).await {
            Ok(Ok((resp, sender))) => {
                let outcome = Outcome::of_status(resp.status());
                guard.conn = Some((self.pool.clone(), sender));
                let mut resp = resp.map(|b| body::boxed(Guarded::new(b, guard)));
                resp.extensions_mut().insert(FromOrigin);
                (Ok(resp), outcome)
            }
            Ok(Err(e)) => {
                drop(guard);
                // A client body that failed (reset, bad chunk) breaks the request too;
                // that says nothing about the origin.
                let outcome = if watch.failed() {
                    Outcome::Inconclusive
                } else {
                    Outcome::Failure
                };
                (Err(self.classify(e)), outcome)
            }
            Err(client_slow) => {
                drop(guard);
                self.metrics.timeouts.inc();
                let e = GatewayError::UpstreamTimeout {
                    upstream: self.config.name.clone(),
                    timeout: self.config.response_timeout,
                };
                let outcome = if client_slow {
                    Outcome::Inconclusive
                } else {
                    Outcome::Failure
                };
                (Err(e), outcome)
            }
        }
    }

    /// Waits for the response head. The origin gets a whole `response_timeout` after
    /// the request body has reached it, however long the client took to send that body;
    /// on timeout, `Err(true)` when the client was still sending (the client is slow,
    /// not the origin). Bounded: at most twice the timeout from the start.
    async fn await_head<F: std::future::Future>(
        &self,
        head: F,
        watch: &BodyWatch,
    ) -> Result<F::Output, bool> {
        let timeout = self.config.response_timeout;
        let start = tokio::time::Instant::now();
        let mut deadline = start + timeout;
        tokio::pin!(head);
        loop {
            match tokio::time::timeout_at(deadline, &mut head).await {
                Ok(out) => return Ok(out),
                Err(_) => match watch.done_at() {
                    None => return Err(true),
                    Some(done) => {
                        let origin_deadline = tokio::time::Instant::from_std(done) + timeout;
                        if origin_deadline <= deadline {
                            return Err(false);
                        }
                        deadline = origin_deadline;
                    }
                },
            }
        }
    }

    fn classify(&self, e: SendError) -> GatewayError {
        if let SendError::Connect(_) = e {
            self.metrics.connect_errors.inc();
            return GatewayError::UpstreamConnect {
                upstream: self.config.name.clone(),
            };
        }
        // A streamed request body that failed (too large, too slow, broken framing)
        // surfaces here as the client's error, never as the origin's.
        if let Some(client) = crate::buffering::client_body_error(&e) {
            return client;
        }
        self.metrics.other_errors.inc();
        GatewayError::UpstreamProtocol {
            upstream: self.config.name.clone(),
            detail: error_chain(&e),
        }
    }
}

/// What a retry sends again: the head of a replay-safe request (its body is empty),
/// without the extensions, which nothing below the upstream reads. Copying the whole
/// `Parts` was 8 of the gateway's 40 allocations per proxied request (benches/fast_path.rs).
fn head_of(req: &Request<Body>) -> Request<Body> {
    let mut again = Request::new(body::empty());
    *again.method_mut() = req.method().clone();
    *again.uri_mut() = req.uri().clone();
    *again.version_mut() = req.version();
    *again.headers_mut() = req.headers().clone();
    again
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

/// Marks a response that came over an origin connection (not one the gateway wrote).
#[derive(Debug, Clone, Copy)]
pub struct FromOrigin;

/// Counts a request as in flight to a server until its response body is done, then
/// gives its connection back to the pool if the body was read whole.
struct InFlight {
    servers: Arc<[Server]>,
    idx: usize,
    gauge: prometheus::IntGauge,
    conn: Option<(Arc<Pool>, Sender)>,
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
    fn release(mut self, _bytes: u64, complete: bool) {
        // A body cut short leaves the connection mid-response: it cannot carry another.
        if let (true, Some((pool, sender))) = (complete, self.conn.take()) {
            pool.put(self.idx, sender);
        }
    }
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
