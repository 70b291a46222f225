//! The cache as a tower layer: lookup, serve, coalesce, fill, revalidate, invalidate.

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Instant, SystemTime};

use bytes::{Bytes, BytesMut};
use futures_util::future::BoxFuture;
use http::header::{
    HeaderName, HeaderValue, AGE, CACHE_CONTROL, CONTENT_LENGTH, CONTENT_LOCATION, DATE, ETAG,
    EXPIRES, IF_MATCH, IF_MODIFIED_SINCE, IF_NONE_MATCH, IF_RANGE, IF_UNMODIFIED_SINCE,
    LAST_MODIFIED, RANGE, SET_COOKIE, VARY,
};
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use tokio::sync::{mpsc, oneshot};
use tower::util::BoxCloneSyncService;
use tower::{Layer, Service};

use super::body::{ChannelBody, Chunk};
use super::coalesce::{FillGuard, FillResult, Role};
use super::outcome::{CacheOutcome, RESULTS};
use super::policy::Personal;
use super::store::{Entry, Freshness};
use super::{key, policy, CacheRule, HttpCache};
use crate::body::{self, Body};
use crate::context::RequestContext;
use crate::error::GatewayError;
use crate::forwarding;
use crate::metrics::Metrics;
use crate::waiting_room::service::SESSION_HEADER;

/// `Cache-Status` (RFC 9211).
pub static CACHE_STATUS: HeaderName = HeaderName::from_static("cache-status");
/// The response header naming purge groups (Fastly's and Varnish's convention).
pub static SURROGATE_KEY: HeaderName = HeaderName::from_static("surrogate-key");
static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// What a route's cache layer shares with its clones.
struct Shared {
    rule: CacheRule,
    cache: Arc<HttpCache>,
    lookups: [prometheus::IntCounter; 5],
}

/// Adds a route's cache in front of the services below it.
#[derive(Clone)]
pub struct CacheLayer {
    shared: Arc<Shared>,
}

impl CacheLayer {
    /// The layer for one route, over the process's cache.
    pub fn new(route: &str, rule: CacheRule, cache: Arc<HttpCache>, metrics: &Metrics) -> Self {
        CacheLayer {
            shared: Arc::new(Shared {
                rule,
                cache,
                lookups: RESULTS.map(|r| metrics.cache_lookups.with_label_values(&[route, r])),
            }),
        }
    }
}

/// The stack below the cache, boxed once when the layer is applied: fills run as
/// spawned tasks, and a concrete future type keeps rustc's `Send` check simple
/// (rust#102211).
type Inner = BoxCloneSyncService<Request<Body>, Response<Body>, GatewayError>;

impl<S> Layer<S> for CacheLayer
where
    S: Service<Request<Body>, Response = Response<Body>, Error = GatewayError>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
{
    type Service = CacheService;

    fn layer(&self, inner: S) -> CacheService {
        CacheService {
            inner: BoxCloneSyncService::new(inner),
            shared: self.shared.clone(),
        }
    }
}

/// A route's cache over its inner stack.
#[derive(Clone)]
pub struct CacheService {
    inner: Inner,
    shared: Arc<Shared>,
}

impl Service<Request<Body>> for CacheService {
    type Response = Response<Body>;
    type Error = GatewayError;
    type Future = BoxFuture<'static, Result<Response<Body>, GatewayError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), GatewayError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        // The ready clone goes into the future; a fresh clone stays (tower's idiom).
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(handle(inner, self.shared.clone(), req))
    }
}

async fn call(svc: &mut Inner, req: Request<Body>) -> Result<Response<Body>, GatewayError> {
    std::future::poll_fn(|cx| svc.poll_ready(cx)).await?;
    svc.call(req).await
}

async fn handle(
    mut inner: Inner,
    sh: Arc<Shared>,
    req: Request<Body>,
) -> Result<Response<Body>, GatewayError> {
    let scheme = req
        .extensions()
        .get::<RequestContext>()
        .map(|c| c.scheme)
        .unwrap_or("http");
    let key = key::primary(&req, scheme);
    let method = req.method().clone();

    if method != Method::GET && method != Method::HEAD {
        let invalidates = !matches!(method, Method::OPTIONS | Method::TRACE);
        let resp = call(&mut inner, req).await?;
        // RFC 9111 §4.4: a non-error response to an unsafe method invalidates the URI.
        if invalidates && (resp.status().is_success() || resp.status().is_redirection()) {
            sh.cache.store.invalidate(&key);
            sh.cache.hit_for_miss.invalidate(&key);
            sh.cache.update_gauges();
        }
        return Ok(mark(&sh, resp, CacheOutcome::Method, None, false, None));
    }
    if req.headers().contains_key(RANGE) {
        // No range support: pass it through rather than answer a range with a 200.
        let resp = call(&mut inner, req).await?;
        return Ok(mark(&sh, resp, CacheOutcome::Request, None, false, None));
    }
    let personal = policy::personal(req.headers(), &sh.rule.ignore_cookies);
    if personal == Personal::Authorization {
        // §3.5: never answered from the cache (the origin decides what this user may
        // see), but stored if the response allows sharing. Not coalesced: other
        // users' requests must not wait for, or be served, this user's response.
        return fill(inner, sh, key, req, None, None, CacheOutcome::Request).await;
    }
    if sh.cache.hit_for_miss.contains_key(&key) {
        return forward(inner, &sh, req, None, CacheOutcome::HitForMiss).await;
    }

    let now = Instant::now();
    let found = sh.cache.store.lookup(&key, req.headers());
    let mut stale = None;
    if let Some(e) = found.entry.filter(|e| answers(e, personal)) {
        match e.freshness(now) {
            Freshness::Fresh => {
                return Ok(serve(
                    &sh,
                    &e,
                    &method,
                    req.headers(),
                    CacheOutcome::Hit,
                    None,
                ))
            }
            Freshness::StaleWhileRevalidate => {
                refresh_in_background(inner, &sh, &key, &req, &e);
                return Ok(serve(
                    &sh,
                    &e,
                    &method,
                    req.headers(),
                    CacheOutcome::StaleWhileRevalidate,
                    None,
                ));
            }
            Freshness::Stale => stale = Some(e),
        }
    }
    let miss = if found.other_variants {
        CacheOutcome::VaryMiss
    } else {
        CacheOutcome::Miss
    };

    match sh.cache.fills.begin(&key) {
        Role::Leader(guard) => {
            // The previous fill may have stored it between our lookup and `begin`.
            if stale.is_none() {
                if let Some(e) = sh
                    .cache
                    .store
                    .lookup(&key, req.headers())
                    .entry
                    .filter(|e| {
                        answers(e, personal) && e.freshness(Instant::now()) == Freshness::Fresh
                    })
                {
                    guard.finish(FillResult::Stored);
                    return Ok(serve(
                        &sh,
                        &e,
                        &method,
                        req.headers(),
                        CacheOutcome::Hit,
                        None,
                    ));
                }
            }
            fill(inner, sh, key, req, Some(guard), stale, miss).await
        }
        Role::Waiter(mut rx) => {
            let waited = tokio::time::timeout(sh.rule.coalesce_wait, async {
                rx.wait_for(|r| r.is_some())
                    .await
                    .ok()
                    .and_then(|r| r.clone())
            })
            .await;
            match waited {
                Ok(Some(FillResult::Stored)) => {
                    let stored = sh.cache.store.lookup(&key, req.headers()).entry;
                    match stored.filter(|e| answers(e, personal)) {
                        Some(e) => Ok(serve(
                            &sh,
                            &e,
                            &method,
                            req.headers(),
                            CacheOutcome::Coalesced,
                            None,
                        )),
                        // Stored for another Vary variant, or not for a request with
                        // cookies: fetch our own.
                        None => forward(inner, &sh, req, stale, CacheOutcome::VaryMiss).await,
                    }
                }
                Ok(Some(FillResult::Failed(err))) => {
                    serve_stale_if_error(&sh, stale.as_ref(), &method, req.headers(), None)
                        .ok_or(err)
                }
                Ok(Some(FillResult::OriginError(status))) => {
                    match serve_stale_if_error(
                        &sh,
                        stale.as_ref(),
                        &method,
                        req.headers(),
                        Some(status),
                    ) {
                        Some(r) => Ok(r),
                        None => forward(inner, &sh, req, None, miss).await,
                    }
                }
                // Not shareable, or the fill took longer than we wait: go ourselves
                // (the admission queue below still protects the origin).
                Ok(Some(FillResult::NotStored)) | Ok(None) | Err(_) => {
                    forward(inner, &sh, req, stale, miss).await
                }
            }
        }
        Role::Alone => forward(inner, &sh, req, stale, miss).await,
    }
}

/// Whether a stored entry may answer this request: any entry for an anonymous request;
/// for one with cookies, only an entry the origin said is anyone's (a copy stored
/// for an anonymous request would show a signed-in shopper someone else's page).
fn answers(e: &Entry, personal: Personal) -> bool {
    personal == Personal::No || e.lifetime.shareable
}

/// Stale-if-error (RFC 5861 §4), decided here and only here: the stored copy that may
/// answer for a failed origin, if it is still within the grace its origin or its
/// route allowed.
fn stale_if_error(stale: Option<&Arc<Entry>>) -> Option<Arc<Entry>> {
    stale.filter(|s| s.usable_if_error(Instant::now())).cloned()
}

/// Whether the origin's status is a failure a stale copy may stand in for (RFC 5861 §4:
/// 500, 502, 503, 504). A 501 or 505 is the origin's answer about the request.
fn origin_failed(status: StatusCode) -> bool {
    matches!(status.as_u16(), 500 | 502 | 503 | 504)
}

/// The stale copy served for a failed origin (`fwd` its status, if it answered), when
/// [`stale_if_error`] allows one.
fn serve_stale_if_error(
    sh: &Shared,
    stale: Option<&Arc<Entry>>,
    method: &Method,
    req: &HeaderMap,
    fwd: Option<u16>,
) -> Option<Response<Body>> {
    stale_if_error(stale).map(|s| serve(sh, &s, method, req, CacheOutcome::StaleIfError, fwd))
}

/// Sends a request to the origin without storing; falls back to a stale copy when the
/// origin fails and stale-if-error allows it.
async fn forward(
    mut inner: Inner,
    sh: &Shared,
    req: Request<Body>,
    stale: Option<Arc<Entry>>,
    outcome: CacheOutcome,
) -> Result<Response<Body>, GatewayError> {
    let method = req.method().clone();
    let headers = stale.as_ref().map(|_| req.headers().clone());
    let res = call(&mut inner, req).await;
    let fallback = |fwd: Option<u16>| {
        headers
            .as_ref()
            .and_then(|h| serve_stale_if_error(sh, stale.as_ref(), &method, h, fwd))
    };
    match res {
        Err(e) => fallback(None).ok_or(e),
        Ok(r) if origin_failed(r.status()) => Ok(fallback(Some(r.status().as_u16()))
            .unwrap_or_else(|| mark(sh, r, outcome, None, false, None))),
        Ok(r) => Ok(mark(sh, r, outcome, None, false, None)),
    }
}

/// What the fill task tells the request that leads it.
enum Reply {
    /// The origin's response, streamed; `stored` when it is being stored.
    Stream(Response<Body>, bool),
    /// Serve this stored entry (revalidated, or stale because the origin failed).
    Entry(Arc<Entry>, CacheOutcome, Option<u16>),
    /// The origin failed and nothing stale may stand in.
    Error(GatewayError),
}

/// The request sent to the origin for a fill: a GET (a HEAD fills the GET entry) with
/// the client's own headers (so the origin sees the user it serves), minus the
/// client's conditionals (we need a full response to store), plus our validators.
fn fill_request(req: &Request<Body>, stale: Option<&Entry>) -> Request<Body> {
    let mut f = Request::new(body::empty());
    *f.method_mut() = Method::GET;
    *f.uri_mut() = req.uri().clone();
    *f.version_mut() = req.version();
    let mut h = req.headers().clone();
    for n in [
        IF_NONE_MATCH,
        IF_MODIFIED_SINCE,
        IF_MATCH,
        IF_UNMODIFIED_SINCE,
        IF_RANGE,
        RANGE,
        CONTENT_LENGTH,
    ] {
        h.remove(n);
    }
    // RFC 9111 §4.3.1: validate with the stored validators.
    if let Some(s) = stale {
        if let Some(etag) = s.headers.get(ETAG) {
            h.insert(IF_NONE_MATCH, etag.clone());
        }
        if let Some(lm) = s.headers.get(LAST_MODIFIED) {
            h.insert(IF_MODIFIED_SINCE, lm.clone());
        }
    }
    *f.headers_mut() = h;
    *f.extensions_mut() = req.extensions().clone();
    f
}

async fn fill(
    inner: Inner,
    sh: Arc<Shared>,
    key: Arc<str>,
    req: Request<Body>,
    guard: Option<FillGuard>,
    stale: Option<Arc<Entry>>,
    miss: CacheOutcome,
) -> Result<Response<Body>, GatewayError> {
    let freq = fill_request(&req, stale.as_deref());
    let (tx, rx) = oneshot::channel();
    // Detached: the leader's disconnect drops only `rx`; the fill goes on for the waiters.
    tokio::spawn(run_fill(inner, sh.clone(), key, freq, guard, stale, tx));
    let method = req.method();
    match rx.await {
        Ok(Reply::Stream(resp, stored)) => {
            let mut resp = mark(&sh, resp, miss, None, stored, None);
            if method == Method::HEAD {
                *resp.body_mut() = body::empty();
            }
            Ok(resp)
        }
        Ok(Reply::Entry(e, outcome, fwd)) => {
            Ok(serve(&sh, &e, method, req.headers(), outcome, fwd))
        }
        Ok(Reply::Error(e)) => Err(e),
        Err(_) => Err(GatewayError::UpstreamProtocol {
            upstream: "-".into(),
            detail: "cache fill ended without an answer".into(),
        }),
    }
}

fn finish(guard: Option<FillGuard>, result: FillResult) {
    if let Some(g) = guard {
        g.finish(result);
    }
}

async fn run_fill(
    mut inner: Inner,
    sh: Arc<Shared>,
    key: Arc<str>,
    freq: Request<Body>,
    guard: Option<FillGuard>,
    stale: Option<Arc<Entry>>,
    tx: oneshot::Sender<Reply>,
) {
    let req_headers = freq.headers().clone();
    let personal = policy::personal(&req_headers, &sh.rule.ignore_cookies);
    let request_time = SystemTime::now();
    let resp = match call(&mut inner, freq).await {
        Ok(r) => r,
        Err(e) => {
            finish(guard, FillResult::Failed(e.clone()));
            let reply = match stale_if_error(stale.as_ref()) {
                Some(s) => Reply::Entry(s, CacheOutcome::StaleIfError, None),
                None => Reply::Error(e),
            };
            let _ = tx.send(reply);
            return;
        }
    };
    let status = resp.status();
    if status == StatusCode::NOT_MODIFIED {
        if let Some(s) = &stale {
            let (e, stored) = revalidated(&sh, s, resp.headers(), personal, request_time);
            finish(
                guard,
                if stored {
                    FillResult::Stored
                } else {
                    FillResult::NotStored
                },
            );
            let _ = tx.send(Reply::Entry(e, CacheOutcome::Revalidated, Some(304)));
            return;
        }
    }
    if origin_failed(status) {
        if let Some(s) = stale_if_error(stale.as_ref()) {
            finish(guard, FillResult::OriginError(status.as_u16()));
            let _ = tx.send(Reply::Entry(
                s,
                CacheOutcome::StaleIfError,
                Some(status.as_u16()),
            ));
            return;
        }
    }
    let max = sh.rule.max_object_size;
    let declared = resp
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    let decision = match policy::storable(personal, status, resp.headers(), &sh.rule) {
        Ok(_) if declared.is_some_and(|n| n > max) => Err(policy::NotStorable::TooLarge),
        other => other,
    };
    let lifetime = match decision {
        Ok(l) => l,
        Err(why) => {
            if why.remember() {
                sh.cache
                    .hit_for_miss
                    .insert(key.clone(), sh.rule.hit_for_miss_ttl);
            }
            tracing::debug!(url = %key, reason = why.as_str(), "response not stored");
            let result = if origin_failed(status) {
                FillResult::OriginError(status.as_u16())
            } else {
                FillResult::NotStored
            };
            finish(guard, result);
            let _ = tx.send(Reply::Stream(resp, false));
            return;
        }
    };

    let response_time = SystemTime::now();
    let stored_at = Instant::now();
    let (parts, mut origin_body) = resp.into_parts();
    let headers = stored_headers(parts.headers.clone(), sh.rule.strip_set_cookie);
    let vary = key::vary_of(&req_headers, &parts.headers);
    let initial_age = policy::initial_age(&parts.headers, request_time, response_time);
    let (ftx, frx) = mpsc::unbounded_channel();
    let _ = tx.send(Reply::Stream(
        Response::from_parts(parts, body::boxed(ChannelBody::new(frx))),
        true,
    ));

    // The frames sent to the leader are the same `Bytes` as those kept: one copy in
    // memory, bounded by max_object_size until stored.
    let mut kept: Vec<Bytes> = Vec::new();
    let mut total: u64 = 0;
    loop {
        match origin_body.frame().await {
            None => break,
            Some(Err(e)) => {
                let _ = ftx.send(Chunk::Err(e));
                finish(guard, FillResult::NotStored);
                return;
            }
            Some(Ok(frame)) => {
                if let Some(d) = frame.data_ref() {
                    total += d.len() as u64;
                    if total > max {
                        // Too large after all: the client still gets everything, straight
                        // from the origin; nothing is stored.
                        sh.cache
                            .hit_for_miss
                            .insert(key.clone(), sh.rule.hit_for_miss_ttl);
                        finish(guard, FillResult::NotStored);
                        let _ = ftx.send(Chunk::Frame(frame));
                        let _ = ftx.send(Chunk::Rest(origin_body));
                        return;
                    }
                    kept.push(d.clone());
                }
                let _ = ftx.send(Chunk::Frame(frame));
            }
        }
    }
    let body = if kept.len() == 1 {
        kept.pop().unwrap_or_default()
    } else {
        let mut b = BytesMut::with_capacity(total as usize);
        for k in &kept {
            b.extend_from_slice(k);
        }
        b.freeze()
    };
    let entry = Arc::new(Entry {
        url: key,
        status,
        surrogate_keys: surrogate_keys(&headers),
        headers,
        body,
        vary,
        stored_at,
        initial_age,
        lifetime,
    });
    sh.cache.store.insert(entry);
    sh.cache.update_gauges();
    finish(guard, FillResult::Stored);
}

/// Applies an origin's 304 to the stale entry it validated (RFC 9111 §4.3.4): the 304's
/// fields replace the stored ones, the body stays, freshness starts again. Returns the
/// updated entry and whether it was stored (it is dropped when the new fields forbid
/// storing; the request that validated it is still answered with it).
fn revalidated(
    sh: &Shared,
    s: &Entry,
    not_modified: &HeaderMap,
    personal: Personal,
    request_time: SystemTime,
) -> (Arc<Entry>, bool) {
    let mut headers = s.headers.clone();
    for name in not_modified.keys() {
        // §3.2: the stored Content-Length describes the stored body.
        if name == CONTENT_LENGTH {
            continue;
        }
        headers.remove(name);
        for v in not_modified.get_all(name) {
            headers.append(name.clone(), v.clone());
        }
    }
    let headers = stored_headers(headers, sh.rule.strip_set_cookie);
    let decision = policy::storable(personal, s.status, &headers, &sh.rule);
    let e = Arc::new(Entry {
        url: s.url.clone(),
        status: s.status,
        initial_age: policy::initial_age(not_modified, request_time, SystemTime::now()),
        stored_at: Instant::now(),
        surrogate_keys: surrogate_keys(&headers),
        headers,
        body: s.body.clone(),
        vary: s.vary.clone(),
        lifetime: decision.unwrap_or(s.lifetime),
    });
    match decision {
        Ok(_) => sh.cache.store.insert(e.clone()),
        Err(_) => {
            sh.cache.store.invalidate(&s.url);
        }
    }
    sh.cache.update_gauges();
    (e, decision.is_ok())
}

/// Starts one background refresh of a stale entry, unless one is already running.
fn refresh_in_background(
    inner: Inner,
    sh: &Arc<Shared>,
    key: &Arc<str>,
    req: &Request<Body>,
    stale: &Arc<Entry>,
) {
    if let Role::Leader(guard) = sh.cache.fills.begin(key) {
        let freq = fill_request(req, Some(stale));
        let (tx, _rx) = oneshot::channel();
        tokio::spawn(run_fill(
            inner,
            sh.clone(),
            key.clone(),
            freq,
            Some(guard),
            Some(stale.clone()),
            tx,
        ));
    }
}

/// The headers kept with a stored response. The waiting-room signal is one shopper's
/// (it ends or extends that shopper's session), so no stored copy repeats it.
fn stored_headers(mut h: HeaderMap, strip_set_cookie: bool) -> HeaderMap {
    forwarding::strip_hop_by_hop(&mut h);
    h.remove(AGE);
    h.remove(&CACHE_STATUS);
    h.remove(&X_REQUEST_ID);
    h.remove(SESSION_HEADER);
    if strip_set_cookie {
        h.remove(SET_COOKIE);
    }
    h
}

fn surrogate_keys(h: &HeaderMap) -> Vec<Box<str>> {
    h.get_all(&SURROGATE_KEY)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|s| s.split_whitespace())
        .map(Into::into)
        .collect()
}

/// Answers from a stored entry: 304 for a matching conditional, else the response,
/// with `Age` and `Cache-Status`. A HEAD gets the headers only.
fn serve(
    sh: &Shared,
    e: &Entry,
    method: &Method,
    req: &HeaderMap,
    outcome: CacheOutcome,
    fwd: Option<u16>,
) -> Response<Body> {
    let now = Instant::now();
    let ttl = e.ttl_secs(now);
    let mut resp = if e.status == StatusCode::OK && policy::not_modified(req, &e.headers) {
        // RFC 9110 §15.4.5: the fields a 200 would have sent that a cache needs.
        let mut r = Response::new(body::empty());
        *r.status_mut() = StatusCode::NOT_MODIFIED;
        for n in [
            CACHE_CONTROL,
            CONTENT_LOCATION,
            DATE,
            ETAG,
            EXPIRES,
            VARY,
            LAST_MODIFIED,
        ] {
            for v in e.headers.get_all(&n) {
                r.headers_mut().append(n.clone(), v.clone());
            }
        }
        r
    } else {
        let b = if method == Method::HEAD {
            body::empty()
        } else {
            body::full(e.body.clone())
        };
        let mut r = Response::new(b);
        *r.status_mut() = e.status;
        *r.headers_mut() = e.headers.clone();
        r
    };
    resp.headers_mut()
        .insert(AGE, HeaderValue::from(e.age(now).as_secs()));
    mark(sh, resp, outcome, Some(ttl), false, fwd)
}

/// Counts the outcome, sets `Cache-Status`, and removes floodgate's own targeted field:
/// it is aimed at this cache alone (RFC 9213 §2 lets a cache drop a field no cache
/// downstream uses). `CDN-Cache-Control` goes on, for a CDN in front of floodgate.
fn mark(
    sh: &Shared,
    mut resp: Response<Body>,
    outcome: CacheOutcome,
    ttl: Option<i64>,
    stored: bool,
    fwd: Option<u16>,
) -> Response<Body> {
    sh.lookups[outcome.result_index()].inc();
    resp.headers_mut().remove(&sh.rule.targeted_field);
    if let Ok(v) = HeaderValue::from_str(&outcome.cache_status(ttl, stored, fwd)) {
        resp.headers_mut().insert(&CACHE_STATUS, v);
    }
    tracing::trace!(outcome = outcome.as_str(), "cache");
    resp
}
