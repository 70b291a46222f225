//! Retries: only where replaying cannot do harm, and never enough to multiply overload.
//!
//! A request is retried only if its method is idempotent (RFC 9110 §9.2.2: GET, HEAD,
//! OPTIONS, TRACE, PUT, DELETE) *and* it has no body (conservative: a body would have
//! to be buffered to be replayed, and a PUT with a body is where "idempotent" is most
//! often untrue in practice), only after a connect failure or a 502/503 from the
//! origin (the request was not processed, or the origin says it is temporarily
//! unable), and only while the retry budget allows: at most `budget` (a fraction) of
//! recent requests plus `min_per_second`, tower's `TpsBudget` (Finagle's design).
//! POST, PATCH and anything with a body are never retried or replayed.

use std::time::Duration;

use http::{Method, Request, StatusCode};
use prometheus::IntCounter;
use tower::retry::budget::{Budget, TpsBudget};

use crate::body::Body;
use crate::config::admission::RetryConfig;
use crate::metrics::Metrics;

/// How long a request counts towards the budget: Finagle's and tower's default.
const BUDGET_TTL: Duration = Duration::from_secs(10);

/// The retry policy and budget of one upstream.
pub struct Retries {
    attempts: u32,
    budget: TpsBudget,
    sent: IntCounter,
    refused: IntCounter,
}

impl Retries {
    /// The policy of `config`, counting into `floodgate_upstream_retries_total`.
    pub fn new(config: &RetryConfig, upstream: &str, metrics: &Metrics) -> Self {
        Retries {
            attempts: config.attempts,
            budget: TpsBudget::new(BUDGET_TTL, config.min_per_second, config.budget),
            sent: metrics
                .upstream_retries
                .with_label_values(&[upstream, "sent"]),
            refused: metrics
                .upstream_retries
                .with_label_values(&[upstream, "budget_exhausted"]),
        }
    }

    /// Extra attempts this request may get (0: never retried). Counts it for the budget.
    pub fn allowed(&self, req: &Request<Body>) -> u32 {
        if self.attempts == 0 || !replay_safe(req) {
            return 0;
        }
        self.budget.deposit();
        self.attempts
    }

    /// Takes one retry from the budget; false (and counted) when it is spent.
    pub fn withdraw(&self) -> bool {
        if self.budget.withdraw() {
            self.sent.inc();
            true
        } else {
            self.refused.inc();
            false
        }
    }
}

/// Idempotent method and no body: the request can be sent again unchanged.
pub fn replay_safe(req: &Request<Body>) -> bool {
    let idempotent = matches!(
        *req.method(),
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    );
    idempotent && http_body::Body::is_end_stream(req.body())
}

/// An origin answer that says the request was not processed and may succeed elsewhere.
pub fn retryable_status(status: StatusCode) -> bool {
    status == StatusCode::BAD_GATEWAY || status == StatusCode::SERVICE_UNAVAILABLE
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::body;

    fn req(method: Method, b: Body) -> Request<Body> {
        Request::builder().method(method).uri("/x").body(b).unwrap()
    }

    #[test]
    fn only_idempotent_requests_without_a_body_are_replay_safe() {
        assert!(replay_safe(&req(Method::GET, body::empty())));
        assert!(replay_safe(&req(Method::DELETE, body::empty())));
        assert!(!replay_safe(&req(Method::POST, body::empty())));
        assert!(!replay_safe(&req(Method::PATCH, body::empty())));
        assert!(!replay_safe(&req(Method::PUT, body::full("x"))));
    }

    #[test]
    fn the_budget_caps_retries_to_a_fraction_of_requests() {
        let metrics = Metrics::new();
        let cfg = RetryConfig {
            attempts: 1,
            budget: 0.2,
            min_per_second: 0,
        };
        let r = Retries::new(&cfg, "t", &metrics);
        for _ in 0..100 {
            assert_eq!(r.allowed(&req(Method::GET, body::empty())), 1);
        }
        let granted = (0..100).filter(|_| r.withdraw()).count();
        assert_eq!(granted, 20);
    }
}
