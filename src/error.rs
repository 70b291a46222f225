//! The gateway's typed errors: every way a request can fail to reach a normal answer.
//!
//! Layers return these; [`crate::respond`] alone turns them into HTTP answers.

use std::time::Duration;

/// Why the gateway answered instead of the origin.
#[derive(Debug, Clone, thiserror::Error)]
pub enum GatewayError {
    /// No route matches the request's host and path.
    #[error("no route for this host and path")]
    NoRoute,
    /// The request is malformed in a way hyper let through (bad Host, bad URI).
    #[error("bad request: {0}")]
    BadRequest(&'static str),
    /// The method is refused at the edge (`server.refused_methods`, TRACE by default).
    #[error("method not allowed")]
    MethodNotAllowed {
        /// The methods the gateway does forward, for the `Allow` field.
        allow: http::HeaderValue,
    },
    /// The request body is larger than `server.max_request_body`.
    #[error("request body larger than the limit")]
    BodyTooLarge,
    /// The client did not send its whole request, head and body, within
    /// `server.request_timeout`: the client's slowness, never the origin's failure.
    #[error("the request was not received in full within {timeout:?}")]
    RequestTimeout {
        /// The deadline that passed.
        timeout: Duration,
    },
    /// The request body's framing is broken (malformed chunked encoding) or the client
    /// ended it early: the client's fault, never the origin's failure.
    #[error("malformed or incomplete request body")]
    MalformedBody,
    /// No connection could be made to any server of the upstream.
    #[error("cannot connect to upstream {upstream}")]
    UpstreamConnect {
        /// Upstream name.
        upstream: String,
    },
    /// The upstream did not send a response head within its response timeout.
    #[error("upstream {upstream} did not answer within {timeout:?}")]
    UpstreamTimeout {
        /// Upstream name.
        upstream: String,
        /// The timeout that expired.
        timeout: Duration,
    },
    /// The connection to the upstream failed mid-request (reset, malformed response).
    #[error("upstream {upstream} failed: {detail}")]
    UpstreamProtocol {
        /// Upstream name.
        upstream: String,
        /// What hyper said.
        detail: String,
    },
    /// Over a rate limit of the route.
    #[error("{0}")]
    RateLimited(Box<crate::rate_limit::RateLimited>),
    /// The client address is on the route's deny list.
    #[error("this client address is not allowed on this site")]
    Denied,
    /// The upstream's admission queue is full (or a higher-priority request took this
    /// one's place in it).
    #[error("upstream {upstream} is at capacity and its queue is full")]
    QueueFull {
        /// Upstream name.
        upstream: String,
    },
    /// Waited `queue_timeout` for a slot to the upstream without getting one.
    #[error("upstream {upstream} is at capacity: waited too long in its queue")]
    QueueTimeout {
        /// Upstream name.
        upstream: String,
    },
    /// Dropped from a standing queue by the CoDel discipline (sustained overload).
    #[error("upstream {upstream} is overloaded")]
    QueueOverloaded {
        /// Upstream name.
        upstream: String,
    },
    /// The upstream's circuit breaker is open (most requests failed at the origin):
    /// failing fast.
    #[error("upstream {upstream} is failing; not sending it requests for now")]
    CircuitOpen {
        /// Upstream name.
        upstream: String,
        /// Until the breaker lets a probe request through.
        retry_after: Duration,
    },
    /// A client address asked for more waiting-room tickets than its per-minute share.
    #[error("too many waiting-room tickets from this address")]
    TicketRateLimited {
        /// Seconds until the next minute's share.
        retry_after: u64,
    },
}

impl GatewayError {
    /// The low-cardinality `reason` label and log field for this error.
    pub fn reason(&self) -> &'static str {
        match self {
            GatewayError::NoRoute => "no_route",
            GatewayError::BadRequest(_) => "bad_request",
            GatewayError::MethodNotAllowed { .. } => "method_not_allowed",
            GatewayError::BodyTooLarge => "body_too_large",
            GatewayError::RequestTimeout { .. } => "request_timeout",
            GatewayError::MalformedBody => "malformed_body",
            GatewayError::UpstreamConnect { .. } => "upstream_connect",
            GatewayError::UpstreamTimeout { .. } => "upstream_timeout",
            GatewayError::UpstreamProtocol { .. } => "upstream_protocol",
            GatewayError::QueueFull { .. } => "queue_full",
            GatewayError::QueueTimeout { .. } => "queue_timeout",
            GatewayError::QueueOverloaded { .. } => "codel",
            GatewayError::CircuitOpen { .. } => "circuit_open",
            GatewayError::RateLimited(_) => "rate_limited",
            GatewayError::Denied => "denied",
            GatewayError::TicketRateLimited { .. } => "waiting_room_ticket_limit",
        }
    }
}
