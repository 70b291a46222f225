//! The front of every proxied request: find the route, prepare the headers, run the
//! route's stack, turn errors into answers, count and log.

use std::borrow::Cow;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use http::header::{HeaderValue, CONTENT_LENGTH, HOST};
use http::uri::PathAndQuery;
use http::{Request, Response, Uri};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use tower::Service;

use crate::body::{self, Body, BodyGuard, Guarded};
use crate::cache::HttpCache;
use crate::config::{Config, RouteConfig, ServerConfig};
use crate::context::RequestContext;
use crate::edge;
use crate::error::GatewayError;
use crate::forwarding;
use crate::metrics::{Metrics, RouteMetrics};
use crate::reconfigure::{Changes, Outcome};
use crate::respond;
use crate::router::{normalize_host, Router};
use crate::stack::{route_stack, RouteService};
use crate::upstream::Upstream;
use crate::waiting_room::Room;

/// One route, compiled: its stack and its metric handles.
pub struct Route {
    /// Route name, as in the config.
    pub name: Arc<str>,
    /// The tower stack requests of this route go through.
    pub service: RouteService,
    /// Pre-resolved metric children.
    pub metrics: RouteMetrics,
    /// Upstream name, for logs.
    pub upstream: Arc<str>,
    /// Rate limits and address lists, kept to carry buckets over a reload.
    pub rate_limits: Option<Arc<crate::rate_limit::RouteLimits>>,
}

/// Everything built from one config: what the hot path reads through one `ArcSwap`.
pub struct Compiled {
    /// The config it came from.
    pub config: Arc<Config>,
    /// Host and path → route index.
    pub router: Router,
    /// Routes, by index.
    pub routes: Vec<Route>,
    /// Upstreams, by index.
    pub upstreams: Vec<Arc<Upstream>>,
    /// `Via` pseudonym, pre-built.
    pub via: forwarding::Via,
    /// Metrics for requests no route matched.
    pub unrouted: RouteMetrics,
    /// The process-wide HTTP cache, shared by every route and kept across reloads.
    pub cache: Arc<HttpCache>,
    /// Waiting rooms, by index of [`Config::waiting_rooms`]; carried over by name.
    pub waiting_rooms: Vec<Arc<Room>>,
    /// What this instance shares with the others (`[state]`); kept across reloads.
    pub state: Arc<dyn crate::state::SharedState>,
}

impl Compiled {
    /// Builds routes, upstream pools and the routing table from a config.
    ///
    /// `previous` is the config being replaced on a reload: state whose rule did not
    /// change (limiter buckets, cached pages, waiting lines) is carried over from it.
    pub fn build(config: Config, metrics: &Metrics, previous: Option<&Compiled>) -> Self {
        let state = previous.map_or_else(crate::state::local, |p| p.state.clone());
        Self::build_with_state(config, metrics, state, previous)
    }

    /// Like [`Compiled::build`], with the shared-state backend the gateway started.
    pub fn build_with_state(
        config: Config,
        metrics: &Metrics,
        state: Arc<dyn crate::state::SharedState>,
        previous: Option<&Compiled>,
    ) -> Self {
        Self::reconfigure(config, metrics, state, previous).0
    }

    /// Like [`Compiled::build_with_state`], and says what each component did with each
    /// changed key: upstreams, routes (with their limits), waiting rooms, the cache.
    pub(crate) fn reconfigure(
        config: Config,
        metrics: &Metrics,
        state: Arc<dyn crate::state::SharedState>,
        previous: Option<&Compiled>,
    ) -> (Self, Changes) {
        let (cache, cache_said) = HttpCache::carry_over(
            previous.map(|p| (&p.cache, &p.config.cache)),
            &config.cache,
            metrics,
        );
        let (waiting_rooms, rooms_said) = crate::waiting_room::build_rooms(
            &config.waiting_rooms,
            &metrics.waiting_room,
            previous.map_or(&[][..], |p| &p.waiting_rooms[..]),
            &*state,
        );
        let (upstreams, mut said) = build_upstreams(&config, metrics, previous);
        let parts = Parts {
            config: &config,
            upstreams: &upstreams,
            rooms: &waiting_rooms,
            cache: &cache,
            metrics,
            state: &state,
        };
        let (routes, routes_said) = build_routes(&parts, previous);
        said.append(routes_said);
        said.append(rooms_said);
        said.append(cache_said);
        let compiled = Compiled {
            router: Router::new(&config.routes),
            routes,
            upstreams,
            via: forwarding::Via::new(&config.server.via_name),
            unrouted: metrics.route("_unrouted"),
            cache,
            waiting_rooms,
            state,
            config: Arc::new(config),
        };
        (compiled, said)
    }
}

/// What a route's stack is built from, besides its own config.
struct Parts<'a> {
    config: &'a Config,
    upstreams: &'a [Arc<Upstream>],
    rooms: &'a [Arc<Room>],
    cache: &'a Arc<HttpCache>,
    metrics: &'a Metrics,
    state: &'a Arc<dyn crate::state::SharedState>,
}

/// The upstreams of `config`, each carried over from the one of its name in
/// `previous`, and what changed (removed ones too).
fn build_upstreams(
    config: &Config,
    metrics: &Metrics,
    previous: Option<&Compiled>,
) -> (Vec<Arc<Upstream>>, Changes) {
    let old = previous.map_or(&[][..], |p| &p.upstreams[..]);
    let mut said = Changes::new();
    let upstreams = config
        .upstreams
        .iter()
        .map(|u| {
            let prev = old.iter().find(|x| x.name() == u.name);
            let (built, changes) = Upstream::build(u.clone(), metrics, prev.map(|x| &**x));
            said.append(changes);
            built
        })
        .collect();
    for gone in old
        .iter()
        .filter(|x| !config.upstreams.iter().any(|u| u.name == x.name()))
    {
        said.named("upstream", gone.name(), Outcome::Removed);
    }
    (upstreams, said)
}

/// The routes of `parts.config`, each carrying its limiter buckets over from the route
/// of its name in `previous`, and what changed (removed ones too).
fn build_routes(parts: &Parts, previous: Option<&Compiled>) -> (Vec<Route>, Changes) {
    let mut said = Changes::new();
    let routes = parts
        .config
        .routes
        .iter()
        .map(|r| {
            let old = previous.and_then(|p| {
                let i = p.routes.iter().position(|o| *o.name == *r.name)?;
                Some((&p.routes[i], &p.config.routes[i], &*p.config))
            });
            let (route, changes) = Route::build(r, parts, old);
            said.append(changes);
            route
        })
        .collect();
    let old = previous.map_or(&[][..], |p| &p.config.routes[..]);
    for gone in old
        .iter()
        .filter(|o| !parts.config.routes.iter().any(|r| r.name == o.name))
    {
        said.named("route", &gone.name, Outcome::Removed);
    }
    (routes, said)
}

impl Route {
    /// Builds one route's stack; `old` is the route of the same name being replaced,
    /// with its config and the config it belonged to.
    fn build(
        r: &RouteConfig,
        parts: &Parts,
        old: Option<(&Route, &RouteConfig, &Config)>,
    ) -> (Route, Changes) {
        let (rate_limits, limits_said) = crate::rate_limit::RouteLimits::build(
            &r.name,
            &r.rate_limits,
            &parts.metrics.rate_limit,
            parts.state,
            old.and_then(|(o, _, _)| o.rate_limits.as_deref()),
        );
        let said = match old {
            Some((_, o, old_config)) => {
                let mut said = route_changes(old_config, o, parts.config, r);
                said.append(limits_said);
                said
            }
            // A new route's limits are new with it: "added" says it all.
            None => {
                let mut added = Changes::new();
                added.named("route", &r.name, Outcome::Added);
                added
            }
        };
        let upstream = &parts.upstreams[r.upstream];
        let route = Route {
            name: r.name.as_str().into(),
            service: route_stack(
                r,
                &parts.config.server.buffering,
                upstream.clone(),
                rate_limits.clone(),
                r.waiting_room.map(|i| parts.rooms[i].clone()),
                parts.cache,
                parts.metrics,
            ),
            metrics: parts.metrics.route(&r.name),
            upstream: upstream.name().into(),
            rate_limits,
        };
        (route, said)
    }
}

/// The changed keys of one route (its limits are [`crate::rate_limit::RouteLimits`]'
/// to say): all applied to the next request. Upstream and room are compared by name,
/// since their indexes move when others are added or removed.
fn route_changes(oc: &Config, o: &RouteConfig, nc: &Config, n: &RouteConfig) -> Changes {
    use Outcome::Applied;
    let mut c = Changes::of("route", &n.name);
    c.compare("hosts", &o.hosts, &n.hosts, Applied);
    c.compare("path_prefix", &o.path_prefix, &n.path_prefix, Applied);
    c.compare(
        "upstream",
        &oc.upstreams[o.upstream].name,
        &nc.upstreams[n.upstream].name,
        Applied,
    );
    let room =
        |c: &Config, r: &RouteConfig| r.waiting_room.map(|i| c.waiting_rooms[i].name.clone());
    c.compare("waiting_room", &room(oc, o), &room(nc, n), Applied);
    c.compare("priority", &o.priority, &n.priority, Applied);
    // Cached pages stay: the store is shared, and keys do not depend on the rule.
    c.compare("cache", &o.cache, &n.cache, Applied);
    c.compare(
        "request_buffering",
        &o.request_buffering,
        &n.request_buffering,
        Applied,
    );
    c.compare(
        "https_redirect",
        &o.https_redirect,
        &n.https_redirect,
        Applied,
    );
    c
}

/// State shared by every connection of the process.
pub struct Shared {
    /// The live config; a reload swaps it whole.
    pub current: ArcSwap<Compiled>,
    /// Process-wide metric families.
    pub metrics: Arc<Metrics>,
}

/// What the front handler learns about a request before any route sees it.
struct Front {
    /// The TCP peer, canonical (see [`forwarding::canonical_peer`]).
    peer: SocketAddr,
    /// Whether the peer is a trusted proxy.
    peer_trusted: bool,
    /// The real client address.
    client_ip: IpAddr,
    /// Sent to the origin, back to the client on every answer, and logged.
    request_id: HeaderValue,
    /// `http` or `https`, as the client used it.
    scheme: &'static str,
    /// The peer as a field value, shared by the connection's requests.
    peer_value: HeaderValue,
}

impl Front {
    fn read<B>(
        server: &ServerConfig,
        peer: SocketAddr,
        conn: Option<&ConnGuard>,
        conn_scheme: &'static str,
        req: &Request<B>,
    ) -> Self {
        let peer = forwarding::canonical_peer(peer);
        let peer_value = match conn {
            Some(c) => {
                c.0.peer_value
                    .get_or_init(|| forwarding::ip_value(peer.ip()))
                    .clone()
            }
            None => forwarding::ip_value(peer.ip()),
        };
        let trusted = &server.trusted_proxies;
        let peer_trusted = forwarding::is_trusted(peer.ip(), trusted);
        Front {
            peer,
            peer_trusted,
            client_ip: forwarding::client_ip(peer.ip(), req.headers(), trusted),
            request_id: forwarding::request_id(req.headers()),
            scheme: forwarding::request_scheme(conn_scheme, peer_trusted, req.headers()),
            peer_value,
        }
    }
}

/// Handles one request from a client connection. Never fails: errors become answers.
pub async fn handle(
    shared: Arc<Shared>,
    peer: SocketAddr,
    conn: Option<ConnGuard>,
    mut req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let started = Instant::now();
    let compiled = shared.current.load_full();
    // "https" when the TLS accept path marked the request (a marker a client cannot forge).
    let conn_scheme = crate::tls::scheme(req.extensions());
    let front = Front::read(
        &compiled.config.server,
        peer,
        conn.as_ref(),
        conn_scheme,
        &req,
    );
    let method = req.method().clone();
    let json = respond::wants_json(req.headers());
    let version = req.version();

    let routed = route_of(&compiled, &mut req);
    // Kept for the log line: the URI (after normalisation) and the host are refcounted.
    let log_target = compiled.config.log.access_log.then(|| {
        let host = edge::request_authority(&req).ok().filter(|h| !h.is_empty());
        (req.uri().clone(), host.map(Box::<str>::from))
    });
    let (route, result) = match routed {
        Err(e) => (None, Err(e)),
        Ok(idx) => {
            let route = &compiled.routes[idx];
            let res = forward(&compiled, route, &front, started, req).await;
            (Some(route), res)
        }
    };
    let (mut resp, answered) = match result {
        Ok(r) => (r, true),
        Err(e) => {
            tracing::debug!(error = %e, reason = e.reason(), request_id = ?front.request_id, "answered by the gateway");
            (respond::error_response(&e, json), false)
        }
    };
    // Waiting-room pages, cache hits and error answers were written here.
    let from_origin = resp
        .extensions()
        .get::<crate::upstream::FromOrigin>()
        .is_some();

    let headers = resp.headers_mut();
    if answered {
        forwarding::strip_hop_by_hop(headers);
    }
    forwarding::append_via(headers, version, &compiled.via);
    headers.insert(&forwarding::X_REQUEST_ID, front.request_id.clone());

    let status = resp.status().as_u16();
    let metrics = route.map(|r| &r.metrics).unwrap_or(&compiled.unrouted);
    metrics.observe(status, started.elapsed().as_secs_f64());

    let log = log_target.map(|(uri, host)| AccessLog {
        started,
        method: method.clone(),
        uri,
        host,
        client: front.client_ip,
        status,
        route: route.map(|r| r.name.clone()),
        upstream: route.filter(|_| from_origin).map(|r| r.upstream.clone()),
        request_id: front.request_id.clone(),
        expected: announced_length(&method, &resp),
    });
    if conn.is_some() || log.is_some() {
        // One wrapper for both, so the body is boxed once more, not twice.
        let guard = ResponseGuard { conn, log };
        resp = resp.map(|b| body::boxed(Guarded::new(b, guard)));
    }
    Ok(resp)
}

/// The body length a response announces in `Content-Length`, when it has a body.
///
/// hyper stops polling a body once that many bytes are out, without asking whether it
/// ended; a body that cannot tell its size (a cache fill's channel) would otherwise be
/// logged as incomplete although the client got every byte.
fn announced_length(method: &http::Method, resp: &Response<Body>) -> Option<u64> {
    let s = resp.status();
    if method == http::Method::HEAD || s.is_informational() || s == 204 || s == 304 {
        return None;
    }
    resp.headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse().ok())
}

/// What a response holds until its body is done: the connection's in-flight count and
/// the access-log line.
struct ResponseGuard {
    conn: Option<ConnGuard>,
    log: Option<AccessLog>,
}

impl BodyGuard for ResponseGuard {
    fn release(self, bytes: u64, complete: bool) {
        if let Some(log) = self.log {
            log.release(bytes, complete);
        }
        drop(self.conn);
    }
}

/// The edge checks, in order, then the route: refused method (405), path (400, else
/// the request's path becomes the normal one), host (400), route (404).
fn route_of<B>(compiled: &Compiled, req: &mut Request<B>) -> Result<usize, GatewayError> {
    let edge_cfg = &compiled.config.server.edge;
    edge::check_method(edge_cfg, req.method())?;
    normalize_target(edge_cfg, req)?;
    let host = normalize_host(edge::request_authority(req)?);
    compiled
        .router
        .route(&host, req.uri().path())
        .ok_or(GatewayError::NoRoute)
}

/// Rewrites the request target to its normal path (query kept as sent), so every layer
/// and the origin see one path. Allocates only when the path was not normal.
fn normalize_target<B>(cfg: &edge::EdgeConfig, req: &mut Request<B>) -> Result<(), GatewayError> {
    if !cfg.normalize_path && !cfg.merge_slashes {
        return Ok(());
    }
    let path = req.uri().path();
    let normal = if cfg.normalize_path {
        edge::normalize_path(path, cfg.merge_slashes)
    } else {
        edge::merge_slashes_only(path)
    }
    .map_err(|e| GatewayError::BadRequest(e.message()))?;
    let Cow::Owned(normal) = normal else {
        return Ok(());
    };
    let pq = match req.uri().query() {
        Some(q) => format!("{normal}?{q}"),
        None => normal,
    };
    let mut parts = req.uri().clone().into_parts();
    parts.path_and_query = Some(
        PathAndQuery::from_maybe_shared(pq)
            .map_err(|_| GatewayError::BadRequest("invalid request target"))?,
    );
    *req.uri_mut() =
        Uri::from_parts(parts).map_err(|_| GatewayError::BadRequest("invalid request target"))?;
    Ok(())
}

async fn forward(
    compiled: &Compiled,
    route: &Route,
    front: &Front,
    started: Instant,
    req: Request<Incoming>,
) -> Result<Response<Body>, GatewayError> {
    let server = &compiled.config.server;
    let limit = server.max_request_body;
    if let Some(len) = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
    {
        if len > limit {
            return Err(GatewayError::BodyTooLarge);
        }
    }
    let (mut parts, incoming) = req.into_parts();
    prepare_headers(compiled, front, &mut parts);
    parts.extensions.insert(RequestContext {
        client_ip: front.client_ip,
        peer: front.peer,
        request_id: front.request_id.clone(),
        started,
        scheme: front.scheme,
        route: route.name.clone(),
    });

    let body = if incoming_is_empty(&incoming) {
        body::empty()
    } else {
        Limited::new(incoming, limit as usize).boxed_unsync()
    };
    let req = Request::from_parts(parts, body);
    // Not `oneshot`: its future trips rustc's higher-ranked Send check (rust#102211).
    // Route services are always ready, so poll_ready is a formality kept for tower's contract.
    let mut svc = route.service.clone();
    std::future::poll_fn(|cx| svc.poll_ready(cx)).await?;
    svc.call(req).await
}

/// The request head as the origin gets it: hop-by-hop fields gone, the fields the peer
/// may not set gone, forwarding fields, `Via`, `X-Request-Id` and `Host` written.
fn prepare_headers(compiled: &Compiled, front: &Front, parts: &mut http::request::Parts) {
    let server = &compiled.config.server;
    let authority_host = parts
        .uri
        .authority()
        .and_then(|a| HeaderValue::from_str(a.as_str()).ok());
    let h = &mut parts.headers;
    forwarding::strip_hop_by_hop(h);
    server.edge.strip_headers.remove_from(h);
    if !front.peer_trusted {
        server.edge.untrusted_headers.remove_from(h);
    }
    forwarding::set_forwarded(
        h,
        &forwarding::Hop {
            peer: front.peer.ip(),
            peer_trusted: front.peer_trusted,
            client_ip: front.client_ip,
            scheme: front.scheme,
            host: authority_host.as_ref(),
            peer_value: &front.peer_value,
        },
    );
    forwarding::append_via(h, parts.version, &compiled.via);
    h.insert(&forwarding::X_REQUEST_ID, front.request_id.clone());
    if let Some(host) = authority_host {
        // HTTP/2 carries the host in :authority; an HTTP/1.1 origin needs Host.
        h.insert(HOST, host);
    }
}

fn incoming_is_empty(b: &Incoming) -> bool {
    http_body::Body::is_end_stream(b)
}

/// One access-log event per request, emitted when the response body is done.
struct AccessLog {
    started: Instant,
    method: http::Method,
    /// The target after normalisation: what routing and the origin saw.
    uri: Uri,
    host: Option<Box<str>>,
    client: IpAddr,
    status: u16,
    route: Option<Arc<str>>,
    /// `None` when the gateway wrote the answer itself (logged `-`).
    upstream: Option<Arc<str>>,
    request_id: HeaderValue,
    /// `Content-Length` of the answer: all of it sent is complete.
    expected: Option<u64>,
}

impl BodyGuard for AccessLog {
    fn release(self, bytes: u64, complete: bool) {
        tracing::info!(
            target: "floodgate::access",
            method = %self.method,
            host = self.host.as_deref().unwrap_or("-"),
            path = self.uri.path(),
            client = %self.client,
            status = self.status,
            route = self.route.as_deref().unwrap_or("-"),
            upstream = self.upstream.as_deref().unwrap_or("-"),
            bytes,
            complete = complete || self.expected == Some(bytes),
            // Whole microseconds: no float noise, and finer than any log reader needs.
            duration_us = self.started.elapsed().as_micros() as u64,
            request_id = self.request_id.to_str().unwrap_or("-"),
            "request"
        );
    }
}

/// Requests in flight on one client connection, for its idle timer.
#[derive(Debug, Default)]
pub struct ConnActivity {
    /// Requests whose response body has not finished.
    pub in_flight: AtomicUsize,
    /// Requests seen on this connection.
    pub requests: AtomicUsize,
    /// Bumped when a request ends, so the idle timer restarts from there.
    pub last_end: crate::stamp::Stamp,
    /// When the first byte of a request head arrived while no request was in flight;
    /// cleared when the head is complete. Drives the header timeout.
    pub head_started: crate::stamp::Stamp,
    /// The peer's address as a field value, made at the connection's first request.
    pub peer_value: std::sync::OnceLock<HeaderValue>,
}

/// Releases a connection's in-flight count when a response body ends.
pub struct ConnGuard(pub Arc<ConnActivity>);

impl Drop for ConnGuard {
    fn drop(&mut self) {
        self.0.last_end.touch();
        self.0.in_flight.fetch_sub(1, Ordering::Release);
    }
}

/// Wraps [`handle`] with the connection's in-flight accounting.
pub async fn handle_counted(
    shared: Arc<Shared>,
    peer: SocketAddr,
    activity: Arc<ConnActivity>,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    activity.in_flight.fetch_add(1, Ordering::Acquire);
    activity.requests.fetch_add(1, Ordering::Relaxed);
    activity.head_started.clear();
    handle(shared, peer, Some(ConnGuard(activity)), req).await
}

/// Compile-time check: hyper's executor needs the request future to be `Send`, and
/// rustc's error when it is not points far from the cause.
#[allow(dead_code)]
fn request_future_is_send(
    shared: Arc<Shared>,
    peer: SocketAddr,
    a: Arc<ConnActivity>,
    req: Request<Incoming>,
) {
    fn is_send<T: Send>(_: T) {}
    is_send(handle_counted(shared, peer, a, req));
}

#[cfg(test)]
mod reconfigure_tests {
    use super::*;

    /// Two upstreams, two routes (one with two limits and a room), two rooms, a cache.
    const BEFORE: &str = r#"
[cache]
capacity = "64MiB"

[[upstream]]
name = "shop"
servers = ["127.0.0.1:3000"]

[[upstream]]
name = "blog"
servers = ["127.0.0.1:3001"]

[[route]]
name = "shop"
upstream = "shop"
waiting_room = "sale"
rate_limits = [
  { name = "per-ip", key = "client_ip", rate = "10/s", burst = 20 },
  { name = "site", key = "global", rate = "1000/s", burst = 2000 },
]

[[route]]
name = "blog"
path_prefix = "/blog"
upstream = "blog"

[[waiting_room]]
name = "sale"
active_users = 100
new_users_per_minute = 600

[[waiting_room]]
name = "preview"
active_users = 10
new_users_per_minute = 60
"#;

    fn compiled(text: &str, previous: Option<&Compiled>) -> (Compiled, Vec<String>) {
        let config = crate::config::parse(text).unwrap_or_else(|e| panic!("{e:?}"));
        let metrics = Metrics::new();
        let state = previous.map_or_else(crate::state::local, |p| p.state.clone());
        let (c, said) = Compiled::reconfigure(config, &metrics, state, previous);
        (c, said.iter().map(ToString::to_string).collect())
    }

    #[test]
    fn a_reload_without_a_change_says_nothing_and_keeps_everything() {
        let (old, _) = compiled(BEFORE, None);
        let (new, said) = compiled(BEFORE, Some(&old));
        assert!(said.is_empty(), "{said:?}");
        assert!(Arc::ptr_eq(&old.cache, &new.cache));
        assert!(Arc::ptr_eq(&old.waiting_rooms[0], &new.waiting_rooms[0]));
    }

    #[test]
    fn every_component_says_what_it_did_with_each_changed_key() {
        let (old, _) = compiled(BEFORE, None);
        let after = BEFORE
            .replace("capacity = \"64MiB\"", "capacity = \"32MiB\"")
            .replace(
                "servers = [\"127.0.0.1:3000\"]",
                "servers = [\"127.0.0.1:3000\"]\nresponse_timeout = \"3s\"",
            )
            .replace(
                "servers = [\"127.0.0.1:3001\"]",
                "servers = [\"127.0.0.1:3001\"]\nconnect_timeout = \"250ms\"",
            )
            .replace("rate = \"10/s\"", "rate = \"5/s\"")
            .replace("path_prefix = \"/blog\"", "path_prefix = \"/news\"")
            .replace("active_users = 100", "active_users = 50")
            .replace(
                "[[waiting_room]]\nname = \"preview\"\nactive_users = 10\nnew_users_per_minute = 60\n",
                "[[route]]\nname = \"api\"\npath_prefix = \"/api\"\nupstream = \"shop\"\n",
            );
        let (_, said) = compiled(&after, Some(&old));
        assert_eq!(
            said,
            [
                "upstream.shop.response_timeout: applied",
                "upstream.shop: connection pool kept",
                "upstream.shop: health state kept",
                "upstream.shop: retry budget kept",
                "upstream.blog.connect_timeout: applied",
                "upstream.blog: connection pool rebuilt",
                "upstream.blog: health state kept",
                "upstream.blog: retry budget kept",
                "route.shop.rate_limits.per-ip.rate: applied",
                "route.shop.rate_limits.per-ip: buckets reset",
                "route.shop.rate_limits.site: buckets kept",
                "route.blog.path_prefix: applied",
                "route.api: added",
                "waiting_room.sale.active_users: applied",
                "waiting_room.sale: line kept",
                "waiting_room.preview: removed",
                "waiting_room.preview: line dropped",
                "cache.capacity: applied",
                "cache: emptied",
            ]
        );
    }

    #[test]
    fn new_servers_reset_the_pool_and_the_health_state_and_new_retries_the_budget() {
        let (old, _) = compiled(BEFORE, None);
        let text = BEFORE.replace(
            "servers = [\"127.0.0.1:3000\"]",
            "servers = [\"127.0.0.1:3000\", \"127.0.0.1:3002\"]\nretries = { attempts = 2 }",
        );
        let (_, said) = compiled(&text, Some(&old));
        assert_eq!(
            said,
            [
                "upstream.shop.servers: applied",
                "upstream.shop.retries: applied",
                // The pool keeps its idle connections per server: a new list is a new pool.
                "upstream.shop: connection pool rebuilt",
                "upstream.shop: health state reset",
                "upstream.shop: retry budget reset",
            ]
        );
    }

    #[test]
    fn a_cache_keeps_its_pages_unless_its_capacity_changes() {
        let (old, _) = compiled(BEFORE, None);
        let text = BEFORE.replace(
            "capacity = \"64MiB\"",
            "capacity = \"64MiB\"\nmax_object_size = \"512KiB\"",
        );
        let (new, said) = compiled(&text, Some(&old));
        assert!(Arc::ptr_eq(&old.cache, &new.cache));
        assert!(
            said.contains(&"cache.max_object_size: applied".to_string()),
            "{said:?}"
        );
    }

    #[test]
    fn removed_upstreams_routes_and_limits_are_named() {
        let (old, _) = compiled(BEFORE, None);
        let text = BEFORE
            .replace(
                "  { name = \"site\", key = \"global\", rate = \"1000/s\", burst = 2000 },\n",
                "",
            )
            .replace(
                "[[route]]\nname = \"blog\"\npath_prefix = \"/blog\"\nupstream = \"blog\"\n",
                "",
            )
            .replace(
                "[[upstream]]\nname = \"blog\"\nservers = [\"127.0.0.1:3001\"]\n",
                "",
            );
        let (_, said) = compiled(&text, Some(&old));
        assert_eq!(
            said,
            [
                "upstream.blog: removed",
                "route.shop.rate_limits.per-ip: buckets kept",
                "route.shop.rate_limits.site: removed",
                "route.blog: removed",
            ]
        );
    }
}
