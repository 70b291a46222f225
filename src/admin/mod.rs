//! The admin listener: metrics, health, readiness and the admin API.

mod outcome;

use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use http::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::body::{self, Body};
use crate::config::{self, ConfigError};
use crate::proxy::{Compiled, Shared};
use crate::reconfigure::Changes;
use crate::state::{Event, Purge, RoomSettings};
use crate::waiting_room;

/// What the admin endpoints read and change.
pub struct AdminState {
    /// The proxy's shared state.
    pub shared: Arc<Shared>,
    /// Config loaded and listeners bound, and not draining.
    pub ready: AtomicBool,
    /// The config file, for reloads.
    pub config_path: Option<PathBuf>,
    /// Bearer token required on every endpoint but health and readiness, when set;
    /// re-read on every reload.
    pub token: arc_swap::ArcSwap<Option<String>>,
    /// The certificates TLS handshakes get; re-read on every reload.
    pub certificates: Arc<crate::tls::Certificates>,
    /// The client connections allowed at once (`server.max_connections`), resized by
    /// a reload.
    pub connections: ConnectionLimit,
}

/// `server.max_connections` as a semaphore the accept loops take a permit of.
pub struct ConnectionLimit {
    /// The permits.
    pub semaphore: Arc<tokio::sync::Semaphore>,
    size: std::sync::Mutex<usize>,
}

impl ConnectionLimit {
    /// `n` connections at once.
    pub fn new(n: usize) -> Self {
        ConnectionLimit {
            semaphore: Arc::new(tokio::sync::Semaphore::new(n)),
            size: std::sync::Mutex::new(n),
        }
    }

    /// Now `n` at once: more permits at once, or fewer as open connections end (a
    /// task takes the surplus back; no open connection is cut).
    fn resize(&self, n: usize) {
        let mut size = self.size.lock().unwrap_or_else(|e| e.into_inner());
        if n > *size {
            self.semaphore.add_permits(n - *size);
        } else if n < *size {
            let (sem, fewer) = (self.semaphore.clone(), (*size - n) as u32);
            tokio::spawn(async move {
                if let Ok(p) = sem.acquire_many_owned(fewer).await {
                    p.forget();
                }
            });
        }
        *size = n;
    }
}

/// Whether the request carries the admin token (always true when none is configured).
fn authorized(state: &AdminState, req: &Request<Incoming>) -> bool {
    let token = state.token.load();
    let Some(token) = token.as_ref() else {
        return true;
    };
    let given = req
        .headers()
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    // Constant time, so the token cannot be guessed byte by byte from timings.
    subtle::ConstantTimeEq::ct_eq(given.as_bytes(), token.as_bytes()).into()
}

/// Serves the admin API until shutdown.
pub async fn serve(
    listener: TcpListener,
    state: Arc<AdminState>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(std::time::Duration::from_secs(10));
    let builder = Arc::new(builder);
    loop {
        let (stream, _) = tokio::select! {
            r = listener.accept() => match r { Ok(x) => x, Err(_) => continue },
            _ = shutdown.changed() => return,
        };
        let state = state.clone();
        let builder = builder.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| answer(state.clone(), req));
            let _ = builder.serve_connection(TokioIo::new(stream), svc).await;
        });
    }
}

fn text(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<bytes::Bytes>,
) -> Response<Body> {
    let mut r = Response::new(body::full(body));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    r.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// The methods an admin path answers, `None` for a path that does not exist.
fn allowed_methods(path: &str) -> Option<&'static [Method]> {
    const GET: &[Method] = &[Method::GET];
    const POST: &[Method] = &[Method::POST];
    match path {
        "/metrics" | "/healthz" | "/readyz" | "/admin/upstreams" => Some(GET),
        "/admin/reload" | "/admin/cache/purge" => Some(POST),
        p => {
            let rest = p.strip_prefix(waiting_room::admin::PREFIX)?;
            match rest.split_once('/') {
                None if !rest.is_empty() => Some(GET),
                Some((name, "pause" | "resume" | "settings")) if !name.is_empty() => Some(POST),
                _ => None,
            }
        }
    }
}

/// 405 with the `Allow` header RFC 9110 §15.5.6 requires.
fn method_not_allowed(allowed: &[Method]) -> Response<Body> {
    let list: Vec<&str> = allowed.iter().map(Method::as_str).collect();
    let list = list.join(", ");
    let mut r = text(
        StatusCode::METHOD_NOT_ALLOWED,
        "text/plain",
        format!("method not allowed; use {list}\n"),
    );
    if let Ok(v) = HeaderValue::from_str(&list) {
        r.headers_mut().insert(http::header::ALLOW, v);
    }
    r
}

/// Why a write is refused as a possible cross-site request, if it is.
///
/// A page on another site can make a browser POST to a loopback admin listener, but
/// only with a "simple" content type (form, text/plain) unless the admin API agrees to
/// a CORS preflight, which it never does; and the browser names the page's site in
/// `Origin`. So a write must say `Content-Type: application/json` and carry no
/// `Origin` other than the admin listener's own.
fn cross_site_refusal<B>(req: &Request<B>) -> Option<Response<Body>> {
    let headers = req.headers();
    if let Some(origin) = headers.get(http::header::ORIGIN) {
        let host = headers
            .get(http::header::HOST)
            .and_then(|h| h.to_str().ok());
        if !same_origin(origin.to_str().unwrap_or(""), host) {
            return Some(text(
                StatusCode::FORBIDDEN,
                "text/plain",
                "admin writes are refused from another origin\n",
            ));
        }
    }
    let json = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"));
    if !json {
        return Some(text(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "text/plain",
            "admin writes need Content-Type: application/json\n",
        ));
    }
    None
}

/// Whether `origin` (`http://host:port`) is the admin listener the request reached.
fn same_origin(origin: &str, host: Option<&str>) -> bool {
    let Some(host) = host else { return false };
    let Ok(uri) = origin.parse::<http::Uri>() else {
        return false;
    };
    matches!(uri.scheme_str(), Some("http" | "https"))
        && uri.path() == "/"
        && uri
            .authority()
            .is_some_and(|a| a.as_str().eq_ignore_ascii_case(host))
}

async fn answer(
    state: Arc<AdminState>,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let open = matches!(req.uri().path(), "/healthz" | "/readyz");
    if !open && !authorized(&state, &req) {
        let mut r = text(
            StatusCode::UNAUTHORIZED,
            "text/plain",
            "admin token required\n",
        );
        r.headers_mut().insert(
            http::header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer"),
        );
        return Ok(r);
    }
    let Some(allowed) = allowed_methods(req.uri().path()) else {
        return Ok(text(StatusCode::NOT_FOUND, "text/plain", "not found\n"));
    };
    if !allowed.contains(req.method()) {
        return Ok(method_not_allowed(allowed));
    }
    if req.method() == Method::POST {
        if let Some(refusal) = cross_site_refusal(&req) {
            return Ok(refusal);
        }
    }
    if req.uri().path().starts_with(waiting_room::admin::PREFIX) {
        return Ok(waiting_rooms(&state, req).await);
    }
    let resp = match req.uri().path() {
        "/metrics" => text(
            StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            state.shared.metrics.render(),
        ),
        "/healthz" => text(StatusCode::OK, "text/plain", "ok\n"),
        "/readyz" => {
            if state.ready.load(Ordering::Acquire) {
                text(StatusCode::OK, "text/plain", "ready\n")
            } else {
                text(StatusCode::SERVICE_UNAVAILABLE, "text/plain", "not ready\n")
            }
        }
        "/admin/upstreams" => upstreams(&state),
        "/admin/reload" => match reload(&state) {
            Ok(summary) => text(
                StatusCode::OK,
                "application/json",
                format!(
                    "{}\n",
                    serde_json::json!({"reloaded": true, "changes": summary})
                ),
            ),
            Err(e) => text(
                StatusCode::UNPROCESSABLE_ENTITY,
                "application/json",
                format!(
                    "{}\n",
                    serde_json::json!({"reloaded": false, "error": e.to_string()})
                ),
            ),
        },
        "/admin/cache/purge" => purge(&state, req).await,
        _ => text(StatusCode::NOT_FOUND, "text/plain", "not found\n"),
    };
    Ok(resp)
}

/// `GET /admin/upstreams`: each upstream's servers (checks, ejection) and its breaker.
fn upstreams(state: &AdminState) -> Response<Body> {
    let compiled = state.shared.current.load_full();
    let list: Vec<serde_json::Value> = compiled.upstreams.iter().map(|u| u.health.view()).collect();
    text(
        StatusCode::OK,
        "application/json",
        format!("{}\n", serde_json::json!({ "upstreams": list })),
    )
}

/// A purge request body: exactly one of the three.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct PurgeRequest {
    url: Option<String>,
    prefix: Option<String>,
    surrogate_key: Option<String>,
}

/// A purge body is a line of JSON; anything bigger is a mistake.
const MAX_PURGE_BODY: usize = 64 * 1024;

/// `POST /admin/cache/purge` with `{"url": …}`, `{"prefix": …}` or `{"surrogate_key": …}`.
async fn purge(state: &AdminState, req: Request<Incoming>) -> Response<Body> {
    use http_body_util::BodyExt;
    let bad = |m: String| {
        text(
            StatusCode::BAD_REQUEST,
            "application/json",
            format!("{}\n", serde_json::json!({"error": m})),
        )
    };
    let bytes = match http_body_util::Limited::new(req.into_body(), MAX_PURGE_BODY)
        .collect()
        .await
    {
        Ok(b) => b.to_bytes(),
        Err(e) => return bad(format!("cannot read body: {e}")),
    };
    let p: PurgeRequest = match serde_json::from_slice(&bytes) {
        Ok(p) => p,
        Err(e) => {
            return bad(format!(
                "expected {{\"url\"|\"prefix\"|\"surrogate_key\": \"...\"}}: {e}"
            ))
        }
    };
    let compiled = state.shared.current.load_full();
    let cache = &compiled.cache;
    let (purged, event) = match (p.url, p.prefix, p.surrogate_key) {
        (Some(u), None, None) => (cache.purge_url(&u), Purge::Url(u)),
        (None, Some(pre), None) => (cache.purge_prefix(&pre), Purge::Prefix(pre)),
        (None, None, Some(k)) => (Some(cache.purge_surrogate_key(&k)), Purge::SurrogateKey(k)),
        _ => return bad("give exactly one of url, prefix, surrogate_key".into()),
    };
    match purged {
        Some(n) => {
            tracing::info!(purged = n, "cache purge");
            // Every other instance purges too (a no-op with the local backend).
            compiled.state.broadcast(Event::Purge(event));
            text(
                StatusCode::OK,
                "application/json",
                format!("{}\n", serde_json::json!({"purged": n})),
            )
        }
        None => bad("not an absolute URL like \"http://shop.example.com/path\"".into()),
    }
}

/// Reloads the config file: compiles it, swaps it in, and says what changed.
///
/// On any error the running config stays, and the error says why. Listener changes
/// need a restart: they are reported, not applied.
pub fn reload(state: &AdminState) -> Result<String, ConfigError> {
    let metrics = &state.shared.metrics;
    let Some(path) = &state.config_path else {
        metrics.config_reloads.with_label_values(&["error"]).inc();
        return Err(ConfigError::Invalid {
            file: "<none>".into(),
            errors: vec![config::KeyError {
                key: "(file)".into(),
                message: "this gateway was not started from a config file".into(),
            }],
            lines: vec![None],
        });
    };
    let new = match config::load(path) {
        Ok(c) => c,
        Err(e) => {
            metrics.config_reloads.with_label_values(&["error"]).inc();
            tracing::error!(error = %e, "config reload refused; the running config stays");
            return Err(e);
        }
    };
    // Certificates are read before anything is swapped: a bad file refuses the whole
    // reload, and handshakes keep the certificates they had.
    let certs = match crate::tls::load_certificates(&new) {
        Ok(c) => c,
        Err(e) => {
            metrics.config_reloads.with_label_values(&["error"]).inc();
            tracing::error!(error = %e, "config reload refused; the running config and certificates stay");
            return Err(e);
        }
    };
    let token = match crate::gateway::admin_token(&new.server) {
        Ok(t) => t,
        Err(e) => {
            metrics.config_reloads.with_label_values(&["error"]).inc();
            tracing::error!(error = %e, "config reload refused; the running config stays");
            return Err(ConfigError::Invalid {
                file: path.display().to_string(),
                errors: vec![config::KeyError {
                    key: "server.admin_token_file".into(),
                    message: e.to_string(),
                }],
                lines: vec![None],
            });
        }
    };
    let old = state.shared.current.load_full();
    let mut changes = outcome::changes(&old.config, &new);
    let counts = format!(
        "{} routes, {} upstreams",
        new.routes.len(),
        new.upstreams.len()
    );
    old.state
        .track_rooms(new.waiting_rooms.iter().map(|r| r.name.clone()).collect());
    let (compiled, components) = Compiled::reconfigure(new, metrics, old.state.clone(), Some(&old));
    changes.append(components);
    let summary = said(&changes, &counts, certs.len());
    state.certificates.install(certs);
    state.token.store(Arc::new(token));
    state
        .connections
        .resize(compiled.config.server.max_connections);
    state.shared.current.store(Arc::new(compiled));
    metrics.config_reloads.with_label_values(&["ok"]).inc();
    tracing::info!(changes = %summary, "config reloaded");
    Ok(summary)
}

/// A reload's answer: every change as `key: outcome` (or that no key changed), the
/// route and upstream count, and the certificates re-read.
fn said(changes: &Changes, counts: &str, certificates: usize) -> String {
    let mut parts: Vec<String> = changes.iter().map(ToString::to_string).collect();
    if parts.is_empty() {
        parts.push("no config key changed".into());
    }
    parts.push(counts.to_string());
    if certificates > 0 {
        parts.push(format!("{certificates} certificates re-read"));
    }
    parts.join("; ")
}

/// `/admin/waiting-rooms/…`: see [`waiting_room::admin`].
async fn waiting_rooms(state: &AdminState, req: Request<Incoming>) -> Response<Body> {
    use http_body_util::BodyExt;
    let (parts, body) = req.into_parts();
    // Settings are a few bytes of JSON; refuse anything bigger.
    let body = match http_body_util::Limited::new(body, 64 * 1024)
        .collect()
        .await
    {
        Ok(b) => b.to_bytes(),
        Err(_) => return text(StatusCode::PAYLOAD_TOO_LARGE, "text/plain", "too large\n"),
    };
    let compiled = state.shared.current.load_full();
    let (status, json) = waiting_room::admin::handle(
        &compiled.waiting_rooms,
        &parts.method,
        parts.uri.path(),
        &body,
    );
    if parts.method == Method::POST && status == StatusCode::OK {
        broadcast_room(&compiled, &json);
    }
    text(status, "application/json", json)
}

/// Tells the other instances a room's settings after an admin change here, read back
/// from the answer's view so that they get exactly what this instance now has.
fn broadcast_room(compiled: &Compiled, view: &str) {
    let v: serde_json::Value = serde_json::from_str(view).unwrap_or_default();
    let settings = (|| {
        Some(RoomSettings {
            room: v.get("name")?.as_str()?.to_string(),
            paused: v.get("paused")?.as_bool()?,
            active_users: v.get("active_users")?.as_u64()?,
            new_users_per_minute: v.get("new_users_per_minute")?.as_u64()?,
        })
    })();
    match settings {
        Some(s) => compiled.state.broadcast(Event::Room(s)),
        None => tracing::warn!("room view without its settings: not shared with other instances"),
    }
}

#[cfg(test)]
mod connection_limit_tests {
    use super::ConnectionLimit;

    #[tokio::test]
    async fn a_reloaded_max_connections_grows_at_once_and_shrinks_as_permits_come_back() {
        let limit = ConnectionLimit::new(2);
        let held = limit.semaphore.clone().acquire_owned().await.unwrap();
        limit.resize(5);
        assert_eq!(limit.semaphore.available_permits(), 4, "three more at once");
        limit.resize(3);
        // One connection is open: the surplus is taken back as permits free up.
        tokio::task::yield_now().await;
        drop(held);
        for _ in 0..100 {
            if limit.semaphore.available_permits() == 3 {
                return;
            }
            tokio::task::yield_now().await;
        }
        panic!("{} permits, not 3", limit.semaphore.available_permits());
    }
}
