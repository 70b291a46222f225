//! The per-route tower stack: the order in which a request meets each concern.
//!
//! ```text
//!  client ──► https redirect ──► rate limit ──► waiting room ──► cache ──► admission queue ──► upstream ──► origin
//!             (308 if cleartext) (429)          (waiting page)   (hit)     (503 when full)     (502/504)
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
use crate::cache::{CacheLayer, HttpCache};
use crate::config::RouteConfig;
use crate::error::GatewayError;
use crate::metrics::Metrics;
use crate::rate_limit::{RateLimitLayer, RouteLimits};
use crate::tls::redirect::HttpsRedirectLayer;
use crate::upstream::{Upstream, UpstreamService};
use crate::waiting_room::{Room, WaitingRoomLayer};

/// A route's whole stack as one cloneable service.
pub type RouteService = BoxCloneSyncService<Request<Body>, Response<Body>, GatewayError>;

/// Builds the stack for one route, outermost stage first.
pub fn route_stack(
    route: &RouteConfig,
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
        .layer(admission)
        .service(UpstreamService::new(upstream));
    BoxCloneSyncService::new(svc)
}
