//! The per-route tower stack: the order in which a request meets each concern.
//!
//! ```text
//!  client ──► https redirect ──► rate limit ──► waiting room ──► cache ──► request buffer ──► admission queue ──► upstream ──► origin
//!             (308 if cleartext) (429)          (waiting page)   (hit)     (408/413/400)      (503 when full)     (502/504)
//!                                                                                           └─ response buffer: slot freed when the origin is done
//! ```
//!
//! Each stage is a tower layer in its own module; a route carries only the stages its
//! config asks for. Errors travel up as [`GatewayError`] and become HTTP answers in
//! [`crate::respond`].

use std::sync::Arc;

use http::{Request, Response};
use tower::util::BoxCloneSyncService;
use tower::ServiceBuilder;

use crate::admission::AdmissionLayer;
use crate::body::Body;
use crate::buffering::{RequestBufferLayer, RequestBuffering, ResponseBuffering};
use crate::cache::{CacheLayer, HttpCache};
use crate::config::buffering::Buffering;
use crate::config::RouteConfig;
use crate::error::GatewayError;
use crate::metrics::Metrics;
use crate::rate_limit::{RateLimitLayer, RouteLimits};
use crate::tls::redirect::HttpsRedirectLayer;
use crate::upstream::{Upstream, UpstreamService};
use crate::waiting_room::{Room, WaitingRoomLayer};

/// A route's whole stack as one cloneable service.
pub type RouteService = BoxCloneSyncService<Request<Body>, Response<Body>, GatewayError>;

/// Builds the stack for one route, outermost stage first; `buffering` is the server's
/// request and response buffering.
pub fn route_stack(
    route: &RouteConfig,
    buffering: &Buffering,
    upstream: Arc<Upstream>,
    rate_limits: Option<Arc<RouteLimits>>,
    room: Option<Arc<Room>>,
    cache: &Arc<HttpCache>,
    metrics: &Metrics,
) -> RouteService {
    let admission = AdmissionLayer::new(
        upstream.admission.clone(),
        &route.priority,
        Some(upstream.health.clone()),
        upstream.name(),
        ResponseBuffering::new(buffering, &metrics.slow_clients),
    );
    let request_buffer = RequestBufferLayer::new(
        RequestBuffering::new(route.request_buffering, buffering),
        metrics.slow_clients.clone(),
    );
    let svc = ServiceBuilder::new()
        .option_layer(route.https_redirect.then_some(HttpsRedirectLayer))
        .option_layer(rate_limits.map(RateLimitLayer::new))
        .option_layer(room.map(WaitingRoomLayer::new))
        .option_layer(
            route
                .cache
                .clone()
                .map(|rule| CacheLayer::new(&route.name, rule, cache.clone(), metrics)),
        )
        // Whole bodies before a slot is taken: a slow client never holds the origin.
        .layer(request_buffer)
        .layer(admission)
        .service(UpstreamService::new(upstream));
    BoxCloneSyncService::new(svc)
}
