//! The one place where typed errors become HTTP answers: status, headers, short body.
//!
//! Every answer the gateway writes itself is small, says what happened in the format
//! the client asked for (JSON for API clients, plain text otherwise), is never cached,
//! and carries `Retry-After` when trying again later can help.

use http::header::{HeaderValue, ACCEPT, CACHE_CONTROL, CONTENT_TYPE, RETRY_AFTER};
use http::{HeaderMap, Response, StatusCode};

use crate::body::{self, Body};
use crate::error::GatewayError;

/// The status code for an error.
pub fn status(err: &GatewayError) -> StatusCode {
    match err {
        GatewayError::NoRoute => StatusCode::NOT_FOUND,
        GatewayError::BadRequest(_) => StatusCode::BAD_REQUEST,
        GatewayError::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        GatewayError::UpstreamConnect { .. } | GatewayError::UpstreamProtocol { .. } => {
            StatusCode::BAD_GATEWAY
        }
        GatewayError::UpstreamTimeout { .. } => StatusCode::GATEWAY_TIMEOUT,
        GatewayError::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
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
        | GatewayError::UpstreamProtocol { .. }
        | GatewayError::ShuttingDown => Some(1u64),
        // Never 0 (PITFALLS): the next minute's share, at least a second away.
        GatewayError::TicketRateLimited { retry_after } => Some((*retry_after).max(1)),
        _ => None,
    };
    let (content_type, text) = if json {
        let v = serde_json::json!({
            "status": status.as_u16(),
            "error": err.reason(),
            "message": message,
        });
        ("application/json", format!("{v}\n"))
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
    resp
}
