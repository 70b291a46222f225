//! A route's compiled limits and the decision for one request.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use http::{HeaderMap, HeaderValue};
use ipnet::IpNet;
use prometheus::IntCounter;

use super::config::{Action, LimitRule, RouteRateLimits};
use super::error::{retry_after_secs, RateLimited};
use super::keys::key_of;
use super::metrics::{LimitMetrics, RateLimitMetrics};
use super::store::{Decision, Limiter};
use crate::error::GatewayError;

/// One limit of a route, ready for the hot path.
pub struct ActiveLimit {
    rule: LimitRule,
    name: Arc<str>,
    limiter: Arc<Limiter>,
    metrics: LimitMetrics,
    policy: HeaderValue,
    last_log: LogGate,
}

impl ActiveLimit {
    /// The buckets of this limit (shared with the config it was carried over from).
    pub fn limiter(&self) -> &Arc<Limiter> {
        &self.limiter
    }
}

/// Everything a route's rate limit layer needs.
pub struct RouteLimits {
    route: Arc<str>,
    limits: Vec<ActiveLimit>,
    allow: Vec<IpNet>,
    deny: Vec<IpNet>,
    denied: IntCounter,
}

/// `RateLimit-Policy` for a rule: `"name";q=<burst>;w=<seconds to refill the burst>`.
fn policy_field(rule: &LimitRule) -> HeaderValue {
    let b = &rule.bucket;
    let window = (b.rate.interval() * b.burst.get())
        .as_secs_f64()
        .ceil()
        .max(1.0) as u64;
    HeaderValue::try_from(format!("\"{}\";q={};w={}", b.name, b.burst, window))
        .expect("limit names are header-safe")
}

impl RouteLimits {
    /// Builds a route's limits; `None` when the route has none and no address lists.
    ///
    /// Buckets of `previous` (the same route in the config being replaced) are reused
    /// for every limit whose [`BucketRule`](super::config::BucketRule) is unchanged, so a
    /// reload neither resets abusers nor grants anyone a fresh burst.
    pub fn build(
        route: &str,
        cfg: &RouteRateLimits,
        metrics: &RateLimitMetrics,
        previous: Option<&RouteLimits>,
    ) -> Option<Arc<RouteLimits>> {
        if cfg.is_empty() {
            return None;
        }
        let limits = cfg
            .limits
            .iter()
            .map(|rule| {
                let m = metrics.limit(route, &rule.bucket.name);
                let kept = previous
                    .and_then(|p| p.limits.iter().find(|l| l.limiter.rule() == &rule.bucket))
                    .map(|l| l.limiter.clone());
                let limiter = kept.unwrap_or_else(|| {
                    Limiter::new(rule.bucket.clone(), m.keys.clone(), m.overflow.clone())
                });
                ActiveLimit {
                    name: rule.bucket.name.as_str().into(),
                    policy: policy_field(rule),
                    rule: rule.clone(),
                    limiter,
                    metrics: m,
                    last_log: LogGate::default(),
                }
            })
            .collect();
        Some(Arc::new(RouteLimits {
            route: route.into(),
            limits,
            allow: cfg.allow.clone(),
            deny: cfg.deny.clone(),
            denied: metrics.denied.with_label_values(&[route]),
        }))
    }

    /// The route's limits in checking order.
    pub fn limits(&self) -> &[ActiveLimit] {
        &self.limits
    }

    /// Decides one request: how long to hold it (usually zero), or why to refuse it.
    pub fn decide(&self, client_ip: IpAddr, headers: &HeaderMap) -> Result<Duration, GatewayError> {
        let ip = client_ip.to_canonical();
        if self.deny.iter().any(|n| n.contains(&ip)) {
            self.denied.inc();
            return Err(GatewayError::Denied);
        }
        if self.allow.iter().any(|n| n.contains(&ip)) {
            return Ok(Duration::ZERO);
        }
        let mut hold = Duration::ZERO;
        for l in &self.limits {
            let b = &l.rule.bucket;
            let Some(key) = key_of(
                &l.limiter.seed,
                &b.key,
                ip,
                b.ipv4_prefix,
                b.ipv6_prefix,
                headers,
            ) else {
                continue;
            };
            match l.limiter.check(key) {
                Decision::Allow { delay, .. } => {
                    if !delay.is_zero() && !l.rule.dry_run {
                        l.metrics.delayed.inc();
                        hold = hold.max(delay);
                    }
                }
                Decision::Refuse { wait } if l.rule.dry_run => {
                    l.metrics.dry_run.inc();
                    if l.last_log.ready() {
                        tracing::info!(route = %self.route, limit = %l.name, wait_ms = wait.as_millis() as u64,
                            "dry run: this request would have been refused (logged at most once a second per limit)");
                    }
                }
                Decision::Refuse { wait } => {
                    l.metrics.refused.inc();
                    if matches!(b.action, Action::Delay(_)) {
                        tracing::debug!(route = %self.route, limit = %l.name, "over the delay bound: refused");
                    }
                    return Err(GatewayError::RateLimited(Box::new(RateLimited {
                        limit: l.name.clone(),
                        policy: l.policy.clone(),
                        retry_after_secs: retry_after_secs(wait),
                    })));
                }
            }
        }
        Ok(hold)
    }
}

/// Lets a log line through at most once a second, so a storm of would-be refusals
/// costs one line a second, not one per request.
#[derive(Default)]
struct LogGate(AtomicU64);

impl LogGate {
    fn ready(&self) -> bool {
        static EPOCH: OnceLock<Instant> = OnceLock::new();
        let now = EPOCH.get_or_init(Instant::now).elapsed().as_secs() + 1;
        let last = self.0.load(Ordering::Relaxed);
        last != now
            && self
                .0
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }
}
