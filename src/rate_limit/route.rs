//! A route's compiled limits and the decision for one request.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;

use http::{HeaderMap, HeaderValue};
use ipnet::IpNet;
use prometheus::IntCounter;

use super::config::{Action, LimitRule, RouteRateLimits};
use super::error::{retry_after_secs, RateLimited};
use super::keys::key_of;
use super::metrics::{LimitMetrics, RateLimitMetrics};
use super::shared::{SharedLimit, StableSeed};
use super::store::{Decision, Limiter};
use crate::error::GatewayError;
use crate::reconfigure::{Changes, Outcome};
use crate::state::SharedState;

/// One limit of a route, ready for the hot path.
pub struct ActiveLimit {
    rule: LimitRule,
    name: Arc<str>,
    limiter: Arc<Limiter>,
    metrics: LimitMetrics,
    policy: HeaderValue,
    last_log: LogGate,
    /// Set when the state backend shares this limit's buckets with other instances.
    shared: Option<SharedLimit>,
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
    /// Builds a route's limits (`None` when the route has none and no address lists)
    /// and says what changed.
    ///
    /// Buckets of `previous` (the same route in the config being replaced) are reused
    /// for every limit whose [`BucketRule`](super::config::BucketRule) is unchanged, so a
    /// reload neither resets abusers nor grants anyone a fresh burst.
    pub(crate) fn build(
        route: &str,
        cfg: &RouteRateLimits,
        metrics: &RateLimitMetrics,
        state: &Arc<dyn SharedState>,
        previous: Option<&RouteLimits>,
    ) -> (Option<Arc<RouteLimits>>, Changes) {
        let limits: Vec<ActiveLimit> = cfg
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
                    shared: SharedLimit::new(state, route, &rule.bucket, &m),
                    name: rule.bucket.name.as_str().into(),
                    policy: policy_field(rule),
                    rule: rule.clone(),
                    limiter,
                    metrics: m,
                    last_log: LogGate::default(),
                }
            })
            .collect();
        let shared = limits.iter().any(|l| l.shared.is_some());
        let changes = changes(route, cfg, previous, shared);
        if cfg.is_empty() {
            return (None, changes);
        }
        let built = Arc::new(RouteLimits {
            route: route.into(),
            limits,
            allow: cfg.allow.clone(),
            deny: cfg.deny.clone(),
            denied: metrics.denied.with_label_values(&[route]),
        });
        (Some(built), changes)
    }

    /// The route's limits in checking order.
    pub fn limits(&self) -> &[ActiveLimit] {
        &self.limits
    }

    /// Whether the limits' buckets live in the shared state backend: then
    /// [`RouteLimits::decide_shared`] decides, asynchronously.
    pub fn is_shared(&self) -> bool {
        self.limits.iter().any(|l| l.shared.is_some())
    }

    /// The deny and allow lists: `Some` when they alone decide the request.
    fn listed(&self, ip: IpAddr) -> Option<Result<Duration, GatewayError>> {
        if self.deny.iter().any(|n| n.contains(&ip)) {
            self.denied.inc();
            return Some(Err(GatewayError::Denied));
        }
        if self.allow.iter().any(|n| n.contains(&ip)) {
            return Some(Ok(Duration::ZERO));
        }
        None
    }

    /// Decides one request: how long to hold it (usually zero), or why to refuse it.
    pub fn decide(&self, client_ip: IpAddr, headers: &HeaderMap) -> Result<Duration, GatewayError> {
        let ip = client_ip.to_canonical();
        if let Some(answer) = self.listed(ip) {
            return answer;
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
            hold = hold.max(self.verdict(l, l.limiter.check(key))?);
        }
        Ok(hold)
    }

    /// Like [`RouteLimits::decide`], with shared buckets: the keys are computed now
    /// (stable across instances), the buckets asked in checking order, so a client
    /// refused by its own limit never spends a cell of a route-wide one.
    pub fn decide_shared(
        self: &Arc<Self>,
        client_ip: IpAddr,
        headers: &HeaderMap,
    ) -> BoxFuture<'static, Result<Duration, GatewayError>> {
        let ip = client_ip.to_canonical();
        if let Some(answer) = self.listed(ip) {
            return Box::pin(std::future::ready(answer));
        }
        let keys: Vec<(usize, u64)> = self
            .limits
            .iter()
            .enumerate()
            .filter_map(|(i, l)| {
                let b = &l.rule.bucket;
                key_of(
                    &StableSeed,
                    &b.key,
                    ip,
                    b.ipv4_prefix,
                    b.ipv6_prefix,
                    headers,
                )
                .map(|k| (i, k))
            })
            .collect();
        let me = self.clone();
        Box::pin(async move {
            let mut hold = Duration::ZERO;
            for (i, key) in keys {
                let l = &me.limits[i];
                let decision = match &l.shared {
                    Some(shared) => shared.check(key).await,
                    None => l.limiter.check(key),
                };
                hold = hold.max(me.verdict(l, decision)?);
            }
            Ok(hold)
        })
    }

    /// What one limit's decision means for the request: a hold, or the refusal.
    fn verdict(&self, l: &ActiveLimit, decision: Decision) -> Result<Duration, GatewayError> {
        let b = &l.rule.bucket;
        match decision {
            Decision::Allow { delay, .. } => {
                if !delay.is_zero() && !l.rule.dry_run {
                    l.metrics.delayed.inc();
                    return Ok(delay);
                }
                Ok(Duration::ZERO)
            }
            Decision::Refuse { wait } if l.rule.dry_run => {
                l.metrics.dry_run.inc();
                if l.last_log.ready() {
                    tracing::info!(route = %self.route, limit = %l.name, wait_ms = wait.as_millis() as u64,
                        "dry run: this request would have been refused (logged at most once a second per limit)");
                }
                Ok(Duration::ZERO)
            }
            Decision::Refuse { wait } => {
                l.metrics.refused.inc();
                if matches!(b.action, Action::Delay(_)) {
                    tracing::debug!(route = %self.route, limit = %l.name, "over the delay bound: refused");
                }
                Err(GatewayError::RateLimited(Box::new(RateLimited {
                    limit: l.name.clone(),
                    policy: l.policy.clone(),
                    retry_after_secs: retry_after_secs(wait),
                })))
            }
        }
    }
}

/// What a reload did with a route's limits and address lists (nothing when none of
/// them changed): each limit's changed keys and whether its buckets were kept.
fn changes(
    route: &str,
    cfg: &RouteRateLimits,
    previous: Option<&RouteLimits>,
    shared: bool,
) -> Changes {
    let mut c = Changes::of("route", route);
    let old: Vec<&LimitRule> =
        previous.map_or(Vec::new(), |p| p.limits.iter().map(|l| &l.rule).collect());
    let (allow, deny) = previous.map_or((&[][..], &[][..]), |p| (&p.allow[..], &p.deny[..]));
    c.compare("allow", allow, &cfg.allow[..], Outcome::Applied);
    c.compare("deny", deny, &cfg.deny[..], Outcome::Applied);
    if old.iter().copied().eq(cfg.limits.iter()) {
        return c;
    }
    let limits = c.within("rate_limits");
    for rule in &cfg.limits {
        let mut one = limits.within(&rule.bucket.name);
        match old.iter().find(|o| o.bucket.name == rule.bucket.name) {
            Some(o) => limit_changes(&mut one, o, rule, shared),
            None => one.say(Outcome::Added),
        }
        c.append(one);
    }
    for o in old
        .iter()
        .filter(|o| !cfg.limits.iter().any(|n| n.bucket.name == o.bucket.name))
    {
        let mut one = limits.within(&o.bucket.name);
        one.say(Outcome::Removed);
        c.append(one);
    }
    c
}

/// One limit's changed keys, then what became of its buckets.
fn limit_changes(c: &mut Changes, o: &LimitRule, n: &LimitRule, shared: bool) {
    use Outcome::Applied;
    let (ob, nb) = (&o.bucket, &n.bucket);
    c.compare("key", &ob.key, &nb.key, Applied);
    c.compare("rate", &ob.rate, &nb.rate, Applied);
    c.compare("burst", &ob.burst, &nb.burst, Applied);
    c.compare("ipv4_prefix", &ob.ipv4_prefix, &nb.ipv4_prefix, Applied);
    c.compare("ipv6_prefix", &ob.ipv6_prefix, &nb.ipv6_prefix, Applied);
    c.compare("action, max_delay", &ob.action, &nb.action, Applied);
    c.compare("max_keys", &ob.max_keys, &nb.max_keys, Applied);
    c.compare("dry_run", &o.dry_run, &n.dry_run, Applied);
    c.say(if ob == nb {
        Outcome::Kept("buckets kept")
    } else if shared {
        // The shared buckets are keyed by route and limit name, not by the rule.
        Outcome::Kept("shared buckets kept")
    } else {
        Outcome::Reset("buckets reset")
    });
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
