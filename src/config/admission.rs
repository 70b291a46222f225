//! The admission and upstream-health sections of the config: priority rules on routes;
//! CoDel, adaptive concurrency, health checks, outlier ejection and retries on upstreams.
//!
//! Kept apart from `mod.rs` so that these keys, their defaults and their checks read as
//! one unit. Every default is a named constant with the reason for its value.

use std::time::Duration;

use http::Method;
use serde::Deserialize;

use super::raw::RawUpstream;
use super::{positive_duration, Problems};
use crate::admission::{Priority, PriorityRule};

/// CoDel target: a standing queue delay above this, for a whole interval, is overload.
/// A shop page takes 20–200 ms at the origin; 50 ms of queueing is then at most a
/// quarter more on a page view (unnoticed), while a queue that never drains below
/// 50 ms for half a second is a standing queue, not a burst being absorbed.
pub const DEFAULT_CODEL_TARGET: Duration = Duration::from_millis(50);
/// CoDel interval: several times a typical page time (≈10 × 50 ms), so that one burst
/// at a sale's opening second is absorbed FIFO and only a sustained overload flips the
/// discipline. CoDel's own guidance is "a worst-case round trip", 100 ms on the
/// Internet; origin round trips behind a gateway are longer.
pub const DEFAULT_CODEL_INTERVAL: Duration = Duration::from_millis(500);
/// While overloaded, the queue keeps only what the origin starts within this time
/// (measured throughput × this, at least one waiter). Facebook's adaptive LIFO caps a
/// request's time in an overloaded queue at 5 ms ("Fail at Scale", M = 5 ms): enough
/// waiters on deck that slots freed by a clump of completions are refilled at once,
/// few enough that the waiters an arrival pushes out were queued for about a
/// millisecond, so a refusal under a 10x crowd is still an immediate answer. Measured
/// at 10x with 20 ms pages (2,300 req/s): 1 ms (3 waiters) went through a slow onset
/// every time, 10 ms took refusals' p99 above 5 ms; 2 ms and 5 ms held it at 3.1–4.3 ms.
pub const DEFAULT_OVERLOAD_QUEUE_DELAY: Duration = Duration::from_millis(5);
/// Adaptive concurrency floor: a slow origin still gets a few requests to recover on,
/// and its latency keeps being measured.
pub const DEFAULT_MIN_CONCURRENCY: usize = 4;
/// Adaptive concurrency ceiling: well above what one shop backend serves at once
/// (tens to a few hundred), so the limit is set by latency, not by this cap.
pub const DEFAULT_MAX_CONCURRENCY_LIMIT: usize = 512;
/// Health check: often enough to notice a dead server within a few seconds, rarely
/// enough that checks are noise next to event-day traffic.
pub const DEFAULT_HEALTH_INTERVAL: Duration = Duration::from_secs(2);
/// A health endpoint answers at once or the server is in trouble.
pub const DEFAULT_HEALTH_TIMEOUT: Duration = Duration::from_secs(1);
/// Two good checks in a row before a server takes traffic again (HAProxy `rise 2`).
pub const DEFAULT_HEALTHY_THRESHOLD: u32 = 2;
/// Three bad checks in a row before it is taken out (HAProxy `fall 3`).
pub const DEFAULT_UNHEALTHY_THRESHOLD: u32 = 3;
/// Envoy's `consecutive_gateway_failure` default: enough to ignore a stray error.
/// Only the origin's own failures count (connect errors, the origin's timeouts,
/// 502/503/504), never a 500 of one broken page or a 501/505 a client provoked.
pub const DEFAULT_CONSECUTIVE_FAILURES: u32 = 5;
/// Envoy's `max_ejection_percent` default. Passive ejection may take out at most this
/// share of a group, but always at least one server of a group of two or more
/// (Envoy's rule) and never the last one (nginx's rule): a group of one is never
/// ejected, a group of 2–19 loses at most one server, a group of 20 at most two.
pub const DEFAULT_MAX_EJECTION_PERCENT: u32 = 10;
/// Hystrix's `errorThresholdPercentage`: the breaker opens when half of an upstream's
/// requests fail. Below that the origin still serves most shoppers, and refusing them
/// all would turn a partial failure into a full one.
pub const DEFAULT_BREAKER_FAILURE_RATE: f64 = 0.5;
/// Hystrix's `requestVolumeThreshold`: fewer requests than this in the window never
/// open the breaker, so a quiet upstream is not cut off by two unlucky requests.
pub const DEFAULT_BREAKER_MIN_REQUESTS: u32 = 20;
/// Hystrix's rolling window: long enough to hold `min_requests` on a quiet site, short
/// enough that old failures stop counting soon after a fix.
pub const DEFAULT_BREAKER_WINDOW: Duration = Duration::from_secs(10);
/// Hystrix's `sleepWindowInMilliseconds`: how long the breaker stays open before one
/// probe request is let through. 5 s covers a process restart at the origin.
pub const DEFAULT_BREAKER_OPEN_TIME: Duration = Duration::from_secs(5);
/// Each failed probe doubles the open time up to this, like ejections.
pub const DEFAULT_BREAKER_MAX_OPEN_TIME: Duration = Duration::from_secs(60);
/// First ejection length. Envoy uses 30 s; during a flash sale a 30 s blackout of a
/// server that merely hiccupped costs too many orders, and 5 s covers a process restart.
pub const DEFAULT_BASE_EJECTION_TIME: Duration = Duration::from_secs(5);
/// Repeated ejections double up to this (a server that keeps failing stays out long).
pub const DEFAULT_MAX_EJECTION_TIME: Duration = Duration::from_secs(60);
/// One retry: enough to step around one dead server, never a retry storm.
pub const DEFAULT_RETRY_ATTEMPTS: u32 = 1;
/// Retries may add at most this fraction of requests (Finagle's and linkerd's 20 %),
/// so retries cannot multiply an overload.
pub const DEFAULT_RETRY_BUDGET: f32 = 0.2;
/// Retries always allowed per second, so a quiet upstream can still step around a
/// dead server (linkerd's default is 10/s; a shop backend is smaller).
pub const DEFAULT_RETRY_MIN_PER_SECOND: u32 = 3;

/// `route.priority[i]`, as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPriorityRule {
    pub path_prefix: Option<String>,
    pub methods: Option<Vec<String>>,
    pub class: Option<String>,
}

/// `upstream.health_check`, as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHealthCheck {
    pub path: Option<String>,
    pub interval: Option<String>,
    pub timeout: Option<String>,
    pub healthy_threshold: Option<i64>,
    pub unhealthy_threshold: Option<i64>,
}

/// `upstream.outlier_detection`, as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOutlier {
    pub enabled: Option<bool>,
    pub consecutive_failures: Option<i64>,
    pub base_ejection_time: Option<String>,
    pub max_ejection_time: Option<String>,
    pub max_ejection_percent: Option<i64>,
}

/// `upstream.circuit_breaker`, as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCircuitBreaker {
    pub enabled: Option<bool>,
    pub failure_rate: Option<f64>,
    pub min_requests: Option<i64>,
    pub window: Option<String>,
    pub open_time: Option<String>,
    pub max_open_time: Option<String>,
}

/// `upstream.retries`, as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRetries {
    pub attempts: Option<i64>,
    pub budget: Option<f64>,
    pub min_per_second: Option<i64>,
}

/// How the admission queue in front of an upstream behaves (besides size and timeout).
#[derive(Debug, Clone, PartialEq)]
pub struct AdmissionTuning {
    /// CoDel target delay.
    pub codel_target: Duration,
    /// CoDel interval.
    pub codel_interval: Duration,
    /// Depth of the queue while overloaded, in time at the origin's throughput.
    pub overload_queue_delay: Duration,
    /// Adaptive concurrency floor.
    pub min_concurrency: usize,
    /// Adaptive concurrency ceiling.
    pub max_concurrency_limit: usize,
}

/// Active health checks of an upstream's servers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheckConfig {
    /// Path requested with GET; any 2xx is healthy.
    pub path: String,
    /// Time between two checks of one server.
    pub interval: Duration,
    /// Longest wait for an answer.
    pub timeout: Duration,
    /// Good checks in a row to become healthy.
    pub healthy_threshold: u32,
    /// Bad checks in a row to become unhealthy.
    pub unhealthy_threshold: u32,
}

/// Passive ejection of servers that fail real requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutlierConfig {
    /// Off: servers are never ejected.
    pub enabled: bool,
    /// Origin failures in a row (connect error, origin timeout, 502/503/504) that
    /// eject a server.
    pub consecutive_failures: u32,
    /// First ejection length; doubles with each ejection in a row.
    pub base_ejection_time: Duration,
    /// Longest ejection.
    pub max_ejection_time: Duration,
    /// Share of the group that may be ejected at once, in percent (see
    /// [`OutlierConfig::max_ejections`]).
    pub max_ejection_percent: u32,
}

impl Default for OutlierConfig {
    fn default() -> Self {
        OutlierConfig {
            enabled: true,
            consecutive_failures: DEFAULT_CONSECUTIVE_FAILURES,
            base_ejection_time: DEFAULT_BASE_EJECTION_TIME,
            max_ejection_time: DEFAULT_MAX_EJECTION_TIME,
            max_ejection_percent: DEFAULT_MAX_EJECTION_PERCENT,
        }
    }
}

impl OutlierConfig {
    /// How many of `servers` may be ejected at once: `max_ejection_percent` of them
    /// rounded down, but at least one (Envoy) unless the percent is 0, and never all
    /// of them (nginx never marks the last server down).
    pub fn max_ejections(&self, servers: usize) -> usize {
        if !self.enabled || self.max_ejection_percent == 0 || servers <= 1 {
            return 0;
        }
        (servers * self.max_ejection_percent as usize / 100).clamp(1, servers - 1)
    }
}

/// The upstream-wide circuit breaker: fail fast while most requests fail.
#[derive(Debug, Clone, PartialEq)]
pub struct BreakerConfig {
    /// Off: the breaker never opens.
    pub enabled: bool,
    /// Share of requests in the window that failed at the origin, from which it opens.
    pub failure_rate: f64,
    /// Requests in the window below which it never opens.
    pub min_requests: u32,
    /// The sliding window the rate is measured over.
    pub window: Duration,
    /// How long it stays open before a probe request goes through.
    pub open_time: Duration,
    /// Longest open time (each failed probe doubles it).
    pub max_open_time: Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            enabled: true,
            failure_rate: DEFAULT_BREAKER_FAILURE_RATE,
            min_requests: DEFAULT_BREAKER_MIN_REQUESTS,
            window: DEFAULT_BREAKER_WINDOW,
            open_time: DEFAULT_BREAKER_OPEN_TIME,
            max_open_time: DEFAULT_BREAKER_MAX_OPEN_TIME,
        }
    }
}

/// Retries of idempotent body-less requests.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryConfig {
    /// Extra attempts per request; 0 disables retries.
    pub attempts: u32,
    /// Fraction of requests that may be retried.
    pub budget: f32,
    /// Retries allowed per second whatever the fraction.
    pub min_per_second: u32,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            attempts: DEFAULT_RETRY_ATTEMPTS,
            budget: DEFAULT_RETRY_BUDGET,
            min_per_second: DEFAULT_RETRY_MIN_PER_SECOND,
        }
    }
}

pub(super) fn compile_tuning(key: &str, u: &RawUpstream, p: &mut Problems) -> AdmissionTuning {
    let t = AdmissionTuning {
        codel_target: p.parse(
            format!("{key}.codel_target"),
            u.codel_target.as_deref(),
            DEFAULT_CODEL_TARGET,
            positive_duration,
        ),
        codel_interval: p.parse(
            format!("{key}.codel_interval"),
            u.codel_interval.as_deref(),
            DEFAULT_CODEL_INTERVAL,
            positive_duration,
        ),
        overload_queue_delay: p.parse(
            format!("{key}.overload_queue_delay"),
            u.overload_queue_delay.as_deref(),
            DEFAULT_OVERLOAD_QUEUE_DELAY,
            positive_duration,
        ),
        min_concurrency: p.count(
            format!("{key}.min_concurrency"),
            u.min_concurrency,
            DEFAULT_MIN_CONCURRENCY,
            1,
        ),
        max_concurrency_limit: p.count(
            format!("{key}.max_concurrency_limit"),
            u.max_concurrency_limit,
            DEFAULT_MAX_CONCURRENCY_LIMIT,
            1,
        ),
    };
    if t.min_concurrency > t.max_concurrency_limit {
        p.add(
            format!("{key}.min_concurrency"),
            format!(
                "{} is above max_concurrency_limit ({})",
                t.min_concurrency, t.max_concurrency_limit
            ),
        );
    }
    t
}

pub(super) fn compile_health_check(
    key: &str,
    raw: Option<&RawHealthCheck>,
    p: &mut Problems,
) -> Option<HealthCheckConfig> {
    let h = raw?;
    let key = format!("{key}.health_check");
    let path = h.path.clone().unwrap_or_else(|| "/healthz".into());
    if !path.starts_with('/') || path.parse::<http::uri::PathAndQuery>().is_err() {
        p.add(
            format!("{key}.path"),
            format!("{path:?} is not a path like \"/healthz\""),
        );
    }
    Some(HealthCheckConfig {
        path,
        interval: p.parse(
            format!("{key}.interval"),
            h.interval.as_deref(),
            DEFAULT_HEALTH_INTERVAL,
            positive_duration,
        ),
        timeout: p.parse(
            format!("{key}.timeout"),
            h.timeout.as_deref(),
            DEFAULT_HEALTH_TIMEOUT,
            positive_duration,
        ),
        healthy_threshold: p.count(
            format!("{key}.healthy_threshold"),
            h.healthy_threshold,
            DEFAULT_HEALTHY_THRESHOLD as usize,
            1,
        ) as u32,
        unhealthy_threshold: p.count(
            format!("{key}.unhealthy_threshold"),
            h.unhealthy_threshold,
            DEFAULT_UNHEALTHY_THRESHOLD as usize,
            1,
        ) as u32,
    })
}

pub(super) fn compile_outlier(
    key: &str,
    raw: Option<&RawOutlier>,
    p: &mut Problems,
) -> OutlierConfig {
    let Some(o) = raw else {
        return OutlierConfig::default();
    };
    let key = format!("{key}.outlier_detection");
    let c = OutlierConfig {
        enabled: o.enabled.unwrap_or(true),
        consecutive_failures: p.count(
            format!("{key}.consecutive_failures"),
            o.consecutive_failures,
            DEFAULT_CONSECUTIVE_FAILURES as usize,
            1,
        ) as u32,
        base_ejection_time: p.parse(
            format!("{key}.base_ejection_time"),
            o.base_ejection_time.as_deref(),
            DEFAULT_BASE_EJECTION_TIME,
            positive_duration,
        ),
        max_ejection_time: p.parse(
            format!("{key}.max_ejection_time"),
            o.max_ejection_time.as_deref(),
            DEFAULT_MAX_EJECTION_TIME,
            positive_duration,
        ),
        max_ejection_percent: percent(
            format!("{key}.max_ejection_percent"),
            o.max_ejection_percent,
            DEFAULT_MAX_EJECTION_PERCENT,
            p,
        ),
    };
    if c.max_ejection_time < c.base_ejection_time {
        p.add(
            format!("{key}.max_ejection_time"),
            "must not be below base_ejection_time",
        );
    }
    c
}

fn percent(key: String, v: Option<i64>, default: u32, p: &mut Problems) -> u32 {
    match v {
        None => default,
        Some(n) if (0..=100).contains(&n) => n as u32,
        Some(n) => {
            p.add(key, format!("{n}: expected a percentage from 0 to 100"));
            default
        }
    }
}

pub(super) fn compile_breaker(
    key: &str,
    raw: Option<&RawCircuitBreaker>,
    p: &mut Problems,
) -> BreakerConfig {
    let Some(b) = raw else {
        return BreakerConfig::default();
    };
    let key = format!("{key}.circuit_breaker");
    let failure_rate = match b.failure_rate {
        None => DEFAULT_BREAKER_FAILURE_RATE,
        Some(r) if r > 0.0 && r <= 1.0 => r,
        Some(r) => {
            p.add(
                format!("{key}.failure_rate"),
                format!("{r}: expected a fraction above 0.0 and up to 1.0, like 0.5"),
            );
            DEFAULT_BREAKER_FAILURE_RATE
        }
    };
    let c = BreakerConfig {
        enabled: b.enabled.unwrap_or(true),
        failure_rate,
        min_requests: p.count(
            format!("{key}.min_requests"),
            b.min_requests,
            DEFAULT_BREAKER_MIN_REQUESTS as usize,
            1,
        ) as u32,
        window: p.parse(
            format!("{key}.window"),
            b.window.as_deref(),
            DEFAULT_BREAKER_WINDOW,
            positive_duration,
        ),
        open_time: p.parse(
            format!("{key}.open_time"),
            b.open_time.as_deref(),
            DEFAULT_BREAKER_OPEN_TIME,
            positive_duration,
        ),
        max_open_time: p.parse(
            format!("{key}.max_open_time"),
            b.max_open_time.as_deref(),
            DEFAULT_BREAKER_MAX_OPEN_TIME,
            positive_duration,
        ),
    };
    if c.max_open_time < c.open_time {
        p.add(
            format!("{key}.max_open_time"),
            "must not be below open_time",
        );
    }
    c
}

pub(super) fn compile_retries(
    key: &str,
    raw: Option<&RawRetries>,
    p: &mut Problems,
) -> RetryConfig {
    let Some(r) = raw else {
        return RetryConfig::default();
    };
    let key = format!("{key}.retries");
    let budget = match r.budget {
        None => DEFAULT_RETRY_BUDGET,
        Some(b) if (0.0..=1.0).contains(&b) => b as f32,
        Some(b) => {
            p.add(
                format!("{key}.budget"),
                format!("{b}: expected a fraction from 0.0 to 1.0, like 0.2"),
            );
            DEFAULT_RETRY_BUDGET
        }
    };
    RetryConfig {
        attempts: p.count(
            format!("{key}.attempts"),
            r.attempts,
            DEFAULT_RETRY_ATTEMPTS as usize,
            0,
        ) as u32,
        budget,
        min_per_second: p.count(
            format!("{key}.min_per_second"),
            r.min_per_second,
            DEFAULT_RETRY_MIN_PER_SECOND as usize,
            0,
        ) as u32,
    }
}

pub(super) fn compile_priority(
    key: &str,
    raw: &[RawPriorityRule],
    p: &mut Problems,
) -> Vec<PriorityRule> {
    let mut rules = Vec::with_capacity(raw.len());
    for (i, r) in raw.iter().enumerate() {
        let key = format!("{key}.priority[{i}]");
        let class = match r.class.as_deref() {
            None => {
                p.add(
                    format!("{key}.class"),
                    "missing: expected \"high\", \"normal\" or \"low\"",
                );
                Priority::Normal
            }
            Some(c) => c.parse::<Priority>().unwrap_or_else(|m| {
                p.add(format!("{key}.class"), m);
                Priority::Normal
            }),
        };
        if let Some(prefix) = &r.path_prefix {
            if !prefix.starts_with('/') {
                p.add(
                    format!("{key}.path_prefix"),
                    format!("{prefix:?} must start with \"/\""),
                );
            }
        }
        let mut methods = Vec::new();
        for (j, m) in r.methods.iter().flatten().enumerate() {
            match Method::from_bytes(m.to_ascii_uppercase().as_bytes()) {
                Ok(m) => methods.push(m),
                Err(_) => p.add(
                    format!("{key}.methods[{j}]"),
                    format!("{m:?} is not an HTTP method"),
                ),
            }
        }
        rules.push(PriorityRule {
            path_prefix: r.path_prefix.clone(),
            methods,
            class,
        });
    }
    rules
}
