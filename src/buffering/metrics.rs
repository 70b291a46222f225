//! `floodgate_slow_clients_total{reason}`: what slow or broken clients cost, so an SRE
//! sees a drip or stall attack that the origin, by design, never sees.

use prometheus::{IntCounter, IntCounterVec, Opts, Registry};

/// Pre-resolved children of `floodgate_slow_clients_total`, one per reason.
#[derive(Clone)]
pub struct SlowClientMetrics {
    /// 408: the request was not in within `request_timeout`.
    pub request_timeout: IntCounter,
    /// 400: broken body framing, or the client ended its body early.
    pub malformed_body: IntCounter,
    /// 413: the body was larger than the request buffer or `max_request_body`.
    pub body_too_large: IntCounter,
    /// A connection closed because its client took no data for `send_timeout`.
    pub send_timeout: IntCounter,
    /// An origin answer given up past the response buffer, its slot freed, because
    /// the client took nothing for `send_timeout`.
    pub response_abandoned: IntCounter,
}

impl SlowClientMetrics {
    /// Creates the family in `registry`.
    pub fn register(registry: &Registry) -> Self {
        let family = IntCounterVec::new(
            Opts::new(
                "floodgate_slow_clients_total",
                "Requests refused and connections cut because of the client's slowness or broken framing, by reason",
            ),
            &["reason"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(family.clone()))
            .expect("metric registered once");
        let c = |r: &str| family.with_label_values(&[r]);
        SlowClientMetrics {
            request_timeout: c("request_timeout"),
            malformed_body: c("malformed_body"),
            body_too_large: c("body_too_large"),
            send_timeout: c("send_timeout"),
            response_abandoned: c("response_abandoned"),
        }
    }

    /// Counts a request refused for its body, if `e` is such a refusal.
    pub fn refused(&self, e: &crate::error::GatewayError) {
        use crate::error::GatewayError as E;
        match e {
            E::RequestTimeout { .. } => self.request_timeout.inc(),
            E::MalformedBody => self.malformed_body.inc(),
            E::BodyTooLarge => self.body_too_large.inc(),
            _ => {}
        }
    }
}
