//! The per-route tower stack: the order in which a request meets each concern.
//!
//! ```text
//!  client ──► rate limit ──► waiting room ──► cache ──► admission queue ──► upstream ──► origin
//!             (429)          (waiting page)    (hit)      (503 when full)     (502/504)
//! ```
//!
//! Each stage is a tower layer in its own module; a route carries only the stages its
//! config asks for. Errors travel up as [`GatewayError`] and become HTTP answers in
//! [`crate::respond`].

use std::sync::Arc;

use http::{Request, Response};
use tower::util::BoxCloneSyncService;
use tower::ServiceBuilder;

use crate::body::Body;
use crate::config::RouteConfig;
use crate::error::GatewayError;
use crate::upstream::{Upstream, UpstreamService};
use crate::waiting_room::{Room, WaitingRoomLayer};

/// A route's whole stack as one cloneable service.
pub type RouteService = BoxCloneSyncService<Request<Body>, Response<Body>, GatewayError>;

/// Builds the stack for one route, outermost stage first.
pub fn route_stack(
    _route: &RouteConfig,
    upstream: Arc<Upstream>,
    room: Option<Arc<Room>>,
) -> RouteService {
    let svc = ServiceBuilder::new()
        .option_layer(room.map(WaitingRoomLayer::new))
        .service(UpstreamService::new(upstream));
    BoxCloneSyncService::new(svc)
}
