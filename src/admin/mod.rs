//! The admin listener: metrics, health, readiness and the admin API.

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
    /// Bearer token required on every endpoint but health and readiness, when set.
    pub token: Option<String>,
}

/// Whether the request carries the admin token (always true when none is configured).
fn authorized(state: &AdminState, req: &Request<Incoming>) -> bool {
    let Some(token) = &state.token else {
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
    if req.uri().path().starts_with(waiting_room::admin::PREFIX) {
        return Ok(waiting_rooms(&state, req).await);
    }
    let resp = match (req.method(), req.uri().path()) {
        (&Method::GET, "/metrics") => text(
            StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            state.shared.metrics.render(),
        ),
        (&Method::GET, "/healthz") => text(StatusCode::OK, "text/plain", "ok\n"),
        (&Method::GET, "/readyz") => {
            if state.ready.load(Ordering::Acquire) {
                text(StatusCode::OK, "text/plain", "ready\n")
            } else {
                text(StatusCode::SERVICE_UNAVAILABLE, "text/plain", "not ready\n")
            }
        }
        (&Method::POST, "/admin/reload") => match reload(&state) {
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
        (&Method::POST, "/admin/cache/purge") => purge(&state, req).await,
        _ => text(StatusCode::NOT_FOUND, "text/plain", "not found\n"),
    };
    Ok(resp)
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
    let old = state.shared.current.load_full();
    let mut changes = Vec::new();
    if old.config.server.listen != new.server.listen
        || old.config.server.admin_listen != new.server.admin_listen
    {
        changes.push("listeners changed: restart to apply".to_string());
    }
    let old_routes: Vec<&str> = old.config.routes.iter().map(|r| r.name.as_str()).collect();
    let new_routes: Vec<&str> = new.routes.iter().map(|r| r.name.as_str()).collect();
    for r in &new_routes {
        if !old_routes.contains(r) {
            changes.push(format!("route {r:?} added"));
        }
    }
    for r in &old_routes {
        if !new_routes.contains(r) {
            changes.push(format!("route {r:?} removed"));
        }
    }
    changes.push(format!(
        "{} routes, {} upstreams",
        new.routes.len(),
        new.upstreams.len()
    ));
    if old.config.state != new.state {
        changes.push("[state] changed: restart to apply".to_string());
    }
    old.state
        .track_rooms(new.waiting_rooms.iter().map(|r| r.name.clone()).collect());
    let compiled = Compiled::build(new, metrics, Some(&old));
    state.shared.current.store(Arc::new(compiled));
    metrics.config_reloads.with_label_values(&["ok"]).inc();
    let summary = changes.join("; ");
    tracing::info!(changes = %summary, "config reloaded");
    Ok(summary)
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
