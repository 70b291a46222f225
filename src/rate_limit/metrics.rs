//! The rate limit metric families, registered once per process by [`crate::metrics::Metrics`].
//!
//! Labels are the route and the limit's name (both from the config), never a client
//! address or key: a million keys stay one time series per limit.

use prometheus::{IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};

/// Every rate limit family.
#[derive(Clone)]
pub struct RateLimitMetrics {
    /// `floodgate_rate_limited_total{route,limit}`: requests answered 429.
    pub refused: IntCounterVec,
    /// `floodgate_rate_limit_dry_run_total{route,limit}`: requests a dry-run limit would have refused.
    pub dry_run: IntCounterVec,
    /// `floodgate_rate_limit_delayed_total{route,limit}`: requests held by `action = "delay"`.
    pub delayed: IntCounterVec,
    /// `floodgate_rate_limit_overflow_total{route,limit}`: checks made against the shared
    /// overflow bucket because the limit's store held `max_keys` keys.
    pub overflow: IntCounterVec,
    /// `floodgate_rate_limit_keys{route,limit}`: keys tracked, as of the last sweep.
    pub keys: IntGaugeVec,
    /// `floodgate_access_denied_total{route}`: requests answered 403 by a `deny` list.
    pub denied: IntCounterVec,
}

/// Pre-resolved children for one limit of one route.
#[derive(Clone)]
pub struct LimitMetrics {
    /// Refused.
    pub refused: IntCounter,
    /// Would have been refused (dry run).
    pub dry_run: IntCounter,
    /// Delayed.
    pub delayed: IntCounter,
    /// Overflowed the key store.
    pub overflow: IntCounter,
    /// Keys tracked.
    pub keys: IntGauge,
}

impl RateLimitMetrics {
    /// Creates the families and registers them.
    pub fn register(registry: &Registry) -> Self {
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
            registry
                .register(Box::new(c.clone()))
                .expect("metric registered once");
            c
        };
        let m = RateLimitMetrics {
            refused: counter("floodgate_rate_limited_total", "Requests refused with 429 by a rate limit", &["route", "limit"]),
            dry_run: counter(
                "floodgate_rate_limit_dry_run_total",
                "Requests a dry-run rate limit would have refused (they were served)",
                &["route", "limit"],
            ),
            delayed: counter("floodgate_rate_limit_delayed_total", "Requests held back by a delaying rate limit", &["route", "limit"]),
            overflow: counter(
                "floodgate_rate_limit_overflow_total",
                "Rate limit checks made on the shared overflow bucket because the key store was full",
                &["route", "limit"],
            ),
            keys: IntGaugeVec::new(
                Opts::new("floodgate_rate_limit_keys", "Keys (clients) a rate limit tracks, as of its last sweep"),
                &["route", "limit"],
            )
            .expect("valid metric"),
            denied: counter("floodgate_access_denied_total", "Requests answered 403 by a route's deny list", &["route"]),
        };
        registry
            .register(Box::new(m.keys.clone()))
            .expect("metric registered once");
        m
    }

    /// Children for one limit.
    pub fn limit(&self, route: &str, limit: &str) -> LimitMetrics {
        let l = [route, limit];
        LimitMetrics {
            refused: self.refused.with_label_values(&l),
            dry_run: self.dry_run.with_label_values(&l),
            delayed: self.delayed.with_label_values(&l),
            overflow: self.overflow.with_label_values(&l),
            keys: self.keys.with_label_values(&l),
        }
    }
}
