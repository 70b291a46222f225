//! The one place where typed errors become HTTP answers: status, headers, short body.
//!
//! Every answer the gateway writes itself is small, says what happened in the format
//! the client asked for (JSON for API clients, plain text otherwise), is never cached,
//! and carries `Retry-After` when trying again later can help.

use http::header::{
    HeaderName, HeaderValue, ACCEPT, ALLOW, CACHE_CONTROL, CONTENT_TYPE, RETRY_AFTER,
};
use http::{HeaderMap, Response, StatusCode};

use crate::body::{self, Body};
use crate::error::GatewayError;

/// The status code for an error.
pub fn status(err: &GatewayError) -> StatusCode {
    match err {
        GatewayError::NoRoute => StatusCode::NOT_FOUND,
        GatewayError::BadRequest(_) | GatewayError::MalformedBody => StatusCode::BAD_REQUEST,
        GatewayError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
        GatewayError::RequestTimeout { .. } => StatusCode::REQUEST_TIMEOUT,
        GatewayError::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        GatewayError::UpstreamConnect { .. } | GatewayError::UpstreamProtocol { .. } => {
            StatusCode::BAD_GATEWAY
        }
        GatewayError::UpstreamTimeout { .. } => StatusCode::GATEWAY_TIMEOUT,
        GatewayError::QueueFull { .. }
        | GatewayError::QueueTimeout { .. }
        | GatewayError::QueueOverloaded { .. }
        | GatewayError::CircuitOpen { .. } => StatusCode::SERVICE_UNAVAILABLE,
        GatewayError::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
        GatewayError::Denied => StatusCode::FORBIDDEN,
        GatewayError::TicketRateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
    }
}

/// Whether the client prefers JSON (`Accept: application/json`) to text.
pub fn wants_json(headers: &HeaderMap) -> bool {
    headers
        .get(ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("application/json") && !a.contains("text/html"))
}

/// Builds the answer for `err`, in JSON when `json` is true.
pub fn error_response(err: &GatewayError, json: bool) -> Response<Body> {
    let status = status(err);
    let message = err.to_string();
    let retry_after = match err {
        GatewayError::UpstreamConnect { .. }
        | GatewayError::UpstreamTimeout { .. }
        | GatewayError::UpstreamProtocol { .. } => Some(1u64),
        // Shed: 1–3 s with jitter, so refused shoppers do not come back in one wave.
        GatewayError::QueueFull { .. }
        | GatewayError::QueueTimeout { .. }
        | GatewayError::QueueOverloaded { .. } => Some(1 + rand::random_range(0..=2u64)),
        // Until the first ejected server is tried again, rounded up (never 0).
        GatewayError::CircuitOpen { retry_after, .. } => {
            Some(retry_after.as_secs_f64().ceil().max(1.0) as u64)
        }
        GatewayError::RateLimited(rl) => Some(rl.retry_after_secs),
        // Never 0 (PITFALLS): the next minute's share, at least a second away.
        GatewayError::TicketRateLimited { retry_after } => Some((*retry_after).max(1)),
        _ => None,
    };
    let shed_page = matches!(
        err,
        GatewayError::QueueFull { .. }
            | GatewayError::QueueTimeout { .. }
            | GatewayError::QueueOverloaded { .. }
            | GatewayError::CircuitOpen { .. }
    );
    let (content_type, text) = if json {
        let v = serde_json::json!({
            "status": status.as_u16(),
            "error": err.reason(),
            "message": message,
        });
        ("application/json", format!("{v}\n"))
    } else if let GatewayError::RateLimited(rl) = err {
        // A browser gets a page a person can read; the wait is in Retry-After as well.
        let html = format!(
            "<!doctype html><html><head><meta charset=\"utf-8\"><title>Too many requests</title></head>\
             <body><h1>Too many requests</h1><p>Please wait {} seconds and try again.</p></body></html>\n",
            rl.retry_after_secs
        );
        ("text/html; charset=utf-8", html)
    } else if shed_page {
        // Shed answers reach shoppers' browsers during a sale: a tiny page, not a bare line.
        // No auto-refresh: it would turn a refused POST into a GET of the same URL.
        let wait = retry_after.unwrap_or(1);
        (
            "text/html; charset=utf-8",
            format!(
                "<!doctype html><html><head><meta charset=\"utf-8\"><title>Very busy</title></head><body><h1>The shop is very busy right now</h1><p>Please try again in {wait} seconds.</p></body></html>\n"
            ),
        )
    } else {
        (
            "text/plain; charset=utf-8",
            format!(
                "{} {}: {message}\n",
                status.as_u16(),
                status.canonical_reason().unwrap_or("")
            ),
        )
    };
    let mut resp = Response::new(body::full(text));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Some(s) = retry_after {
        h.insert(RETRY_AFTER, HeaderValue::from(s));
    }
    if let GatewayError::MethodNotAllowed { allow } = err {
        // RFC 9110 §15.5.6: a 405 must say what is allowed.
        h.insert(ALLOW, allow.clone());
    }
    if let GatewayError::RateLimited(rl) = err {
        // IETF httpapi RateLimit fields (draft-ietf-httpapi-ratelimit-headers): the policy
        // of the limit that refused, and r=0 with t equal to Retry-After.
        h.insert(
            HeaderName::from_static("ratelimit-policy"),
            rl.policy.clone(),
        );
        h.insert(HeaderName::from_static("ratelimit"), rl.rate_limit_field());
    }
    resp
}
