//! The rate limit service: decide, then refuse, hold, or pass the request on.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::future::Either;
use futures_util::FutureExt;
use http::{Request, Response};
use tower::Service;

use super::route::RouteLimits;
use crate::body::Body;
use crate::context::RequestContext;
use crate::error::GatewayError;

/// The future of [`RateLimitService`].
pub type ResponseFuture =
    Pin<Box<dyn Future<Output = Result<Response<Body>, GatewayError>> + Send>>;

/// Applies a route's rate limits to each request before the inner service sees it.
#[derive(Clone)]
pub struct RateLimitService<S> {
    inner: S,
    limits: Arc<RouteLimits>,
}

impl<S> RateLimitService<S> {
    /// Wraps `inner`.
    pub fn new(inner: S, limits: Arc<RouteLimits>) -> Self {
        RateLimitService { inner, limits }
    }
}

impl<S> Service<Request<Body>> for RateLimitService<S>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = GatewayError>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = GatewayError;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), GatewayError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Body>) -> ResponseFuture {
        // The front handler always sets the context; without it (a stack used outside
        // the gateway) every request counts as one client rather than none.
        let ip = req
            .extensions()
            .get::<RequestContext>()
            .map(|c| c.client_ip)
            .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        if self.limits.is_shared() {
            let verdict = self.limits.decide_shared(ip, req.headers());
            let clone = self.inner.clone();
            let mut inner = std::mem::replace(&mut self.inner, clone);
            return Box::pin(verdict.then(move |v| match v {
                Err(e) => Either::Left(std::future::ready(Err(e))),
                Ok(hold) if hold.is_zero() => Either::Right(Either::Left(inner.call(req))),
                Ok(hold) => Either::Right(Either::Right(
                    tokio::time::sleep(hold).then(move |()| inner.call(req)),
                )),
            }));
        }
        match self.limits.decide(ip, req.headers()) {
            Err(e) => Box::pin(std::future::ready(Err(e))),
            Ok(hold) if hold.is_zero() => Box::pin(self.inner.call(req)),
            Ok(hold) => {
                // The ready clone goes with the request; the fresh one stays for poll_ready.
                let clone = self.inner.clone();
                let mut inner = std::mem::replace(&mut self.inner, clone);
                // A combinator, not an async block: the block trips rustc's higher-ranked
                // Send check (rust#102211), as noted in proxy.rs.
                Box::pin(tokio::time::sleep(hold).then(move |()| inner.call(req)))
            }
        }
    }
}
