//! The typed request context: facts about a request that every layer of a route's
//! stack may need (who the client is, over which scheme it came, which route took
//! it), set once by the front handler ([`crate::proxy`]) and read by the layers.
//! It lives on its own so that the layers depend on it and not on the proxy.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use http::HeaderValue;

/// Facts about a request that every layer may need, set once by the front handler.
#[derive(Debug, Clone)]
pub struct RequestContext {
    /// The real client address (see [`crate::forwarding::client_ip`]).
    pub client_ip: IpAddr,
    /// The TCP peer.
    pub peer: SocketAddr,
    /// The request id sent to the origin and back to the client.
    pub request_id: HeaderValue,
    /// When the request head was received.
    pub started: Instant,
    /// `http` or `https`.
    pub scheme: &'static str,
    /// The route that took the request (its name in the config).
    pub route: Arc<str>,
}

impl RequestContext {
    /// Whether the request came over TLS (ours, or a trusted proxy's).
    pub fn is_https(&self) -> bool {
        self.scheme == "https"
    }
}
