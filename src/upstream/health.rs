//! Upstream health: which servers take traffic, and when the whole upstream is out.
//!
//! Three mechanisms, as in Envoy, HAProxy and Hystrix. None of them can take the only
//! origin out because of one broken page (see `docs/upstream-health.md`):
//! - **active checks** (`health_check`): a `GET path` to each server every `interval`;
//!   `unhealthy_threshold` failures in a row take it out, `healthy_threshold` successes
//!   in a row bring it back. Servers start healthy, so a gateway that starts before its
//!   checks have run still serves.
//! - **passive ejection** (`outlier_detection`): `consecutive_failures` requests in a row
//!   that failed *at the origin* ([`Outcome::Failure`]: connect errors, the origin's
//!   timeouts, 502/503/504) eject the server for `base_ejection_time`, doubling with each
//!   ejection in a row up to `max_ejection_time`. At most `max_ejection_percent` of the
//!   group is out at once, at least one server of a group of two or more, never the
//!   last one: a group of one is never ejected.
//! - **the circuit breaker** (`circuit_breaker`, [`super::breaker`]): opens on the whole
//!   upstream's failure *rate* over a window with a minimum request count, and then
//!   fails fast with 503 (reason `circuit_open`) instead of queueing shoppers for an
//!   origin that is failing them.
//!
//! Choosing a server: among those that pass their checks and are not ejected; when
//! none does, **panic mode** (Envoy's panic threshold): every server that is not
//! ejected gets traffic again. Health checks all failing together is more often a
//! broken health endpoint or a shared dependency of `/healthz` than a dead site.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use http::uri::Authority;
use http::{Request, Uri};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use prometheus::{IntCounter, IntGauge};
use tokio::time::Instant;

use super::balance::Balancer;
use super::breaker::{Breaker, Verdict};
use super::Server;
use crate::admission::Circuit;
use crate::body::{self, Body};
use crate::config::admission::{BreakerConfig, HealthCheckConfig, OutlierConfig};
use crate::metrics::Metrics;

/// One server's health.
#[derive(Debug)]
struct ServerHealth {
    authority: Authority,
    /// Passing its active checks (always true without checks).
    check_ok: AtomicBool,
    /// Requests in a row that failed at the origin.
    failures: AtomicU32,
    /// Ejected until this many ms after `Health::epoch`; 0 when not ejected.
    ejected_until: AtomicU64,
    /// Ejections in a row without a success in between, for the doubling.
    ejections: AtomicU32,
    gauge: IntGauge,
}

/// How one request to a server went, for ejection and the breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The origin answered: any status but 502, 503 and 504. A 500 of one broken page
    /// or a 501/505 a client provoked says the server is up and answering.
    Success,
    /// The origin failed: a connect error, a timeout while the request was complete and
    /// the origin was slow, a broken connection, or a 502/503/504 answer.
    Failure,
    /// No evidence about the origin: the client sent a bad or slow body, or left.
    Inconclusive,
}

impl Outcome {
    /// How an origin's answer counts: only the gateway-failure statuses are failures
    /// (Envoy's `consecutive_gateway_failure`).
    pub fn of_status(status: http::StatusCode) -> Self {
        match status.as_u16() {
            502..=504 => Outcome::Failure,
            _ => Outcome::Success,
        }
    }
}

/// Why no server could be chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CircuitOpen {
    /// Until the breaker lets a probe through.
    pub retry_after: Duration,
}

/// The health of one upstream's servers.
#[derive(Debug)]
pub struct Health {
    upstream: String,
    servers: Vec<ServerHealth>,
    outlier: OutlierConfig,
    /// Servers that may be ejected at once (from `max_ejection_percent`).
    max_ejections: usize,
    /// Held while deciding an ejection, so two servers failing together cannot both
    /// pass the `max_ejections` check. Only the failure path takes it.
    eject_lock: Mutex<()>,
    breaker: Breaker,
    check: Option<HealthCheckConfig>,
    epoch: Instant,
    ejections: IntCounter,
    ejections_refused: IntCounter,
}

impl Health {
    /// Health state for `servers`, all healthy; starts the active checker if configured
    /// (it stops by itself when this state is dropped, e.g. replaced by a reload).
    pub fn new(
        upstream: &str,
        servers: &[Authority],
        outlier: OutlierConfig,
        breaker: BreakerConfig,
        check: Option<HealthCheckConfig>,
        metrics: &Metrics,
    ) -> Arc<Self> {
        let servers: Vec<ServerHealth> = servers
            .iter()
            .map(|a| {
                let gauge = metrics
                    .upstream_server_healthy
                    .with_label_values(&[upstream, a.as_str()]);
                gauge.set(1);
                ServerHealth {
                    authority: a.clone(),
                    check_ok: AtomicBool::new(true),
                    failures: AtomicU32::new(0),
                    ejected_until: AtomicU64::new(0),
                    ejections: AtomicU32::new(0),
                    gauge,
                }
            })
            .collect();
        let health = Arc::new(Health {
            upstream: upstream.to_string(),
            max_ejections: outlier.max_ejections(servers.len()),
            servers,
            outlier,
            eject_lock: Mutex::new(()),
            breaker: Breaker::new(
                breaker,
                metrics.upstream_circuit_open.with_label_values(&[upstream]),
            ),
            check,
            epoch: Instant::now(),
            ejections: metrics.upstream_ejections.with_label_values(&[upstream]),
            ejections_refused: metrics
                .upstream_ejections_refused
                .with_label_values(&[upstream]),
        });
        if let (Some(check), Ok(rt)) = (health.check.clone(), tokio::runtime::Handle::try_current())
        {
            rt.spawn(run_checks(Arc::downgrade(&health), check));
        }
        health
    }

    /// Whether this state can be kept across a reload with the new settings.
    pub fn same_settings(
        &self,
        servers: &[Authority],
        outlier: &OutlierConfig,
        breaker: &BreakerConfig,
        check: &Option<HealthCheckConfig>,
    ) -> bool {
        self.outlier == *outlier
            && self.breaker.config() == breaker
            && self.check == *check
            && self.servers.len() == servers.len()
            && self
                .servers
                .iter()
                .zip(servers)
                .all(|(s, a)| s.authority == *a)
    }

    fn now_ms(&self) -> u64 {
        // +1 so that 0 always means "not ejected".
        self.epoch.elapsed().as_millis() as u64 + 1
    }

    fn ejected(&self, i: usize, now: u64) -> bool {
        let until = self.servers[i].ejected_until.load(Ordering::Acquire);
        if until == 0 {
            return false;
        }
        if now < until {
            return true;
        }
        // The ejection is over: back in rotation (half-open).
        if self.servers[i]
            .ejected_until
            .compare_exchange(until, 0, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
        {
            tracing::info!(upstream = %self.upstream, server = %self.servers[i].authority, "ejection over; server gets traffic again");
            self.refresh_gauge(i, now);
        }
        false
    }

    fn refresh_gauge(&self, i: usize, now: u64) {
        let s = &self.servers[i];
        let until = s.ejected_until.load(Ordering::Acquire);
        let out = !s.check_ok.load(Ordering::Acquire) || (until != 0 && now < until);
        s.gauge.set(i64::from(!out));
    }

    /// Whether server `i` takes traffic in normal operation (checks pass, not ejected).
    pub fn is_available(&self, i: usize) -> bool {
        let now = self.now_ms();
        self.servers[i].check_ok.load(Ordering::Acquire) && !self.ejected(i, now)
    }

    /// Picks a server, preferring one other than `avoid` (a retry goes elsewhere);
    /// refuses while the circuit breaker is open.
    pub fn choose(
        &self,
        balancer: &Balancer,
        servers: &[Server],
        avoid: Option<usize>,
    ) -> Result<usize, CircuitOpen> {
        let now = self.now_ms();
        if let Verdict::Refuse(retry_after) = self.breaker.admit(now) {
            return Err(CircuitOpen { retry_after });
        }
        let healthy =
            |i: usize| self.servers[i].check_ok.load(Ordering::Acquire) && !self.ejected(i, now);
        let not_ejected = |i: usize| !self.ejected(i, now);
        let pick = |ok: &dyn Fn(usize) -> bool| {
            balancer
                .pick_among(servers, |i| ok(i) && Some(i) != avoid)
                .or_else(|| balancer.pick_among(servers, ok))
        };
        if let Some(i) = pick(&healthy) {
            return Ok(i);
        }
        if let Some(i) = pick(&not_ejected) {
            tracing::debug!(upstream = %self.upstream, "panic mode: every server fails its health check; sending to all");
            return Ok(i);
        }
        // Unreachable while `max_ejections` leaves a server in; kept so that an empty
        // group fails fast rather than panicking.
        Err(CircuitOpen {
            retry_after: Duration::from_secs(1),
        })
    }

    /// Records how a request to server `i` went: feeds the breaker, and ejects the
    /// server after a run of origin failures when the group can spare it.
    pub fn record(&self, i: usize, outcome: Outcome) {
        let now = self.now_ms();
        let s = &self.servers[i];
        match outcome {
            Outcome::Inconclusive => self.breaker.inconclusive(),
            Outcome::Success => {
                self.breaker.record(now, false, &self.upstream);
                s.failures.store(0, Ordering::Relaxed);
                s.ejections.store(0, Ordering::Relaxed);
            }
            Outcome::Failure => {
                self.breaker.record(now, true, &self.upstream);
                let n = s.failures.fetch_add(1, Ordering::AcqRel) + 1;
                if self.outlier.enabled && n >= self.outlier.consecutive_failures {
                    self.try_eject(i, n, now);
                }
            }
        }
    }

    /// Ejects server `i` unless it is out already or `max_ejections` servers are.
    fn try_eject(&self, i: usize, failures: u32, now: u64) {
        let _decide = self.eject_lock.lock().unwrap_or_else(|p| p.into_inner());
        if self.ejected(i, now) {
            return;
        }
        let out = (0..self.servers.len())
            .filter(|&j| self.ejected(j, now))
            .count();
        let s = &self.servers[i];
        if out >= self.max_ejections {
            // Counted once per run, not for every failure after it.
            if failures == self.outlier.consecutive_failures {
                self.ejections_refused.inc();
                tracing::warn!(upstream = %self.upstream, server = %s.authority, failures, ejected = out, max_ejections = self.max_ejections, "server keeps failing but is not ejected: max_ejection_percent of the group is already out");
            }
            return;
        }
        s.failures.store(0, Ordering::Relaxed);
        let k = s.ejections.fetch_add(1, Ordering::AcqRel).min(16);
        let time =
            (self.outlier.base_ejection_time * 2u32.pow(k)).min(self.outlier.max_ejection_time);
        s.ejected_until
            .store(now + time.as_millis() as u64, Ordering::Release);
        self.ejections.inc();
        self.refresh_gauge(i, now);
        tracing::warn!(upstream = %self.upstream, server = %s.authority, failures, ejected_for = ?time, "server ejected after consecutive origin failures");
    }

    /// The state the admin API shows: each server and the breaker.
    pub fn view(&self) -> serde_json::Value {
        let now = self.now_ms();
        let servers: Vec<serde_json::Value> = self
            .servers
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let ejected = self.ejected(i, now);
                serde_json::json!({
                    "server": s.authority.as_str(),
                    "passes_checks": s.check_ok.load(Ordering::Acquire),
                    "ejected": ejected,
                    "ejected_for_ms": if ejected {
                        s.ejected_until.load(Ordering::Acquire).saturating_sub(now)
                    } else {
                        0
                    },
                    "failures_in_a_row": s.failures.load(Ordering::Relaxed),
                })
            })
            .collect();
        serde_json::json!({
            "upstream": self.upstream,
            "max_ejections": self.max_ejections,
            "servers": servers,
            "circuit_breaker": self.breaker.view(now),
        })
    }

    fn check_result(
        &self,
        i: usize,
        ok: bool,
        ok_run: &mut u32,
        bad_run: &mut u32,
        check: &HealthCheckConfig,
    ) {
        let s = &self.servers[i];
        if ok {
            *ok_run += 1;
            *bad_run = 0;
            if !s.check_ok.load(Ordering::Acquire) && *ok_run >= check.healthy_threshold {
                s.check_ok.store(true, Ordering::Release);
                tracing::info!(upstream = %self.upstream, server = %s.authority, "server passes its health check again");
            }
        } else {
            *bad_run += 1;
            *ok_run = 0;
            if s.check_ok.load(Ordering::Acquire) && *bad_run >= check.unhealthy_threshold {
                s.check_ok.store(false, Ordering::Release);
                tracing::warn!(upstream = %self.upstream, server = %s.authority, "server fails its health check; taken out");
            }
        }
        let now = self.now_ms();
        // Also notices ejections that ended while no request came by.
        let _ = self.ejected(i, now);
        self.refresh_gauge(i, now);
    }
}

impl Circuit for Health {
    fn open_for(&self) -> Option<Duration> {
        self.breaker.open_for(self.now_ms())
    }
}

/// Checks every server each `interval` until the health state is dropped.
async fn run_checks(health: Weak<Health>, check: HealthCheckConfig) {
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(check.timeout));
    connector.set_nodelay(true);
    // Its own small client: checks must not queue behind (or count as) shop traffic.
    let client: Client<HttpConnector, Body> = Client::builder(TokioExecutor::new())
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new())
        .pool_max_idle_per_host(1)
        .build(connector);
    let n = match health.upgrade() {
        Some(h) => h.servers.len(),
        None => return,
    };
    let mut runs = vec![(0u32, 0u32); n];
    let mut tick = tokio::time::interval(check.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(h) = health.upgrade() else { return };
        let probes = h
            .servers
            .iter()
            .map(|s| probe(&client, &s.authority, &check));
        let results = futures_util::future::join_all(probes).await;
        for (i, ok) in results.into_iter().enumerate() {
            let (ok_run, bad_run) = &mut runs[i];
            h.check_result(i, ok, ok_run, bad_run, &check);
        }
    }
}

async fn probe(
    client: &Client<HttpConnector, Body>,
    authority: &Authority,
    check: &HealthCheckConfig,
) -> bool {
    let Ok(uri) = Uri::builder()
        .scheme("http")
        .authority(authority.clone())
        .path_and_query(check.path.as_str())
        .build()
    else {
        return false;
    };
    let Ok(req) = Request::get(uri)
        .header(http::header::USER_AGENT, "floodgate-health-check")
        .body(body::empty())
    else {
        return false;
    };
    match tokio::time::timeout(check.timeout, client.request(req)).await {
        Ok(Ok(resp)) => {
            let ok = resp.status().is_success();
            // Drain the small body so the connection can be reused.
            let _ = tokio::time::timeout(
                check.timeout,
                http_body_util::BodyExt::collect(resp.into_body()),
            )
            .await;
            ok
        }
        _ => false,
    }
}
