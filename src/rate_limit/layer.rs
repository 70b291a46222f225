//! The tower layer that puts a route's limits in front of the rest of its stack.

use std::sync::Arc;

use tower::Layer;

use super::route::RouteLimits;
use super::service::RateLimitService;

/// Wraps a service with a route's rate limits and address lists.
#[derive(Clone)]
pub struct RateLimitLayer {
    limits: Arc<RouteLimits>,
}

impl RateLimitLayer {
    /// A layer enforcing `limits`.
    pub fn new(limits: Arc<RouteLimits>) -> Self {
        RateLimitLayer { limits }
    }
}

impl<S> Layer<S> for RateLimitLayer {
    type Service = RateLimitService<S>;

    fn layer(&self, inner: S) -> RateLimitService<S> {
        RateLimitService::new(inner, self.limits.clone())
    }
}
