//! `https_redirect = true` on a route: a request the client sent in cleartext gets
//! `308 Permanent Redirect` to the same URL over `https` (308, not 301: the method and
//! body are kept, so a form POST is not turned into a GET).
//!
//! "Sent in cleartext" is the request's `X-Forwarded-Proto` after the front handler
//! set it: our own connection's scheme, or a trusted proxy's value (a load balancer that
//! terminated TLS itself says `https`, and redirecting that would loop forever).
//! The target is the request's host without its port, so the TLS listener is expected
//! on 443 (directly or through a port mapping).

use std::future::{ready, Ready};
use std::task::{Context, Poll};

use futures_util::future::Either;
use http::header::{HeaderValue, CACHE_CONTROL, HOST, LOCATION};
use http::{Request, Response, StatusCode};
use tower::{Layer, Service};

use crate::body::{self, Body};
use crate::error::GatewayError;
use crate::forwarding::X_FORWARDED_PROTO;

/// Adds [`HttpsRedirect`] in front of a route's stack.
#[derive(Debug, Clone, Copy, Default)]
pub struct HttpsRedirectLayer;

impl<S> Layer<S> for HttpsRedirectLayer {
    type Service = HttpsRedirect<S>;
    fn layer(&self, inner: S) -> Self::Service {
        HttpsRedirect { inner }
    }
}

/// Answers cleartext requests with a redirect to https; passes the rest to `S`.
#[derive(Debug, Clone)]
pub struct HttpsRedirect<S> {
    inner: S,
}

impl<S> Service<Request<Body>> for HttpsRedirect<S>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = GatewayError>,
{
    type Response = Response<Body>;
    type Error = GatewayError;
    type Future = Either<Ready<Result<Response<Body>, GatewayError>>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        match https_location(&req) {
            Some(location) => Either::Left(ready(Ok(redirect(location)))),
            None => Either::Right(self.inner.call(req)),
        }
    }
}

/// Where a cleartext request should go instead; `None` when it already came over
/// https, or has no usable host.
fn https_location<B>(req: &Request<B>) -> Option<HeaderValue> {
    let proto = req.headers().get(&X_FORWARDED_PROTO)?;
    if proto.as_bytes().eq_ignore_ascii_case(b"https") {
        return None;
    }
    let host = req.headers().get(HOST)?.to_str().ok()?;
    let authority: http::uri::Authority = host.parse().ok()?;
    let pq = req
        .uri()
        .path_and_query()
        .map(|pq| pq.as_str())
        .unwrap_or("/");
    HeaderValue::from_str(&format!("https://{}{pq}", authority.host())).ok()
}

fn redirect(location: HeaderValue) -> Response<Body> {
    let mut r = Response::new(body::empty());
    *r.status_mut() = StatusCode::PERMANENT_REDIRECT;
    let h = r.headers_mut();
    h.insert(LOCATION, location);
    // Permanent, but not cached forever by an intermediary: the route may change.
    h.insert(CACHE_CONTROL, HeaderValue::from_static("max-age=3600"));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(proto: &str, host: &str, uri: &str) -> Request<()> {
        Request::get(uri)
            .header(HOST, host)
            .header(&X_FORWARDED_PROTO, proto)
            .body(())
            .unwrap()
    }

    #[test]
    fn a_cleartext_request_is_sent_to_the_same_url_over_https_on_the_default_port() {
        let l = https_location(&req("http", "Shop.Example:8080", "/cart?item=7")).unwrap();
        assert_eq!(l, "https://Shop.Example/cart?item=7");
        let l = https_location(&req("http", "[::1]:8080", "/")).unwrap();
        assert_eq!(l, "https://[::1]/");
    }

    #[test]
    fn a_request_that_came_over_https_is_not_redirected() {
        assert!(https_location(&req("https", "shop.example", "/")).is_none());
        assert!(https_location(&req("HTTPS", "shop.example", "/")).is_none());
    }
}
