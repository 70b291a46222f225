//! Prometheus metrics: every family is defined here, once per process.
//!
//! Families live as long as the process (a reload keeps counting); compiled routes and
//! upstreams hold pre-resolved children so the hot path never hashes label values.
//! Labels are low-cardinality by construction: route, upstream, status class, reason.

use std::sync::Arc;

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Latency buckets from 1 ms to 30 s: a cache hit is sub-millisecond, a queued request
/// waits up to `queue_timeout`, a slow origin up to its response timeout.
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Status classes, in the order of [`status_class_index`].
pub const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// Index into [`STATUS_CLASSES`] for a status code.
pub fn status_class_index(status: u16) -> usize {
    ((status / 100).clamp(1, 5) - 1) as usize
}

/// All metric families of the process.
pub struct Metrics {
    /// The registry `/metrics` renders.
    pub registry: Registry,
    /// `floodgate_requests_total{route,status_class}`.
    pub requests: IntCounterVec,
    /// `floodgate_request_duration_seconds{route}`.
    pub request_duration: HistogramVec,
    /// `floodgate_upstream_requests_total{upstream}`.
    pub upstream_requests: IntCounterVec,
    /// `floodgate_upstream_errors_total{upstream,reason}`.
    pub upstream_errors: IntCounterVec,
    /// `floodgate_upstream_in_flight{upstream}`.
    pub upstream_in_flight: IntGaugeVec,
    /// `floodgate_connections_open`.
    pub connections_open: IntGauge,
    /// `floodgate_connections_total`.
    pub connections_total: IntCounter,
    /// `floodgate_config_reloads_total{result}`.
    pub config_reloads: IntCounterVec,
    /// `floodgate_queue_depth{upstream}`: requests waiting for an admission slot.
    pub queue_depth: IntGaugeVec,
    /// `floodgate_queue_overloaded{upstream}`: 1 while CoDel says the queue is standing.
    pub queue_overloaded: IntGaugeVec,
    /// `floodgate_queue_wait_seconds{upstream}`: time from queued to admitted.
    pub queue_wait: HistogramVec,
    /// `floodgate_concurrency_limit{upstream}`: the admission limit now (moves when adaptive).
    pub concurrency_limit: IntGaugeVec,
    /// `floodgate_shed_total{upstream,reason}`: requests refused or dropped by admission.
    pub shed: IntCounterVec,
    /// `floodgate_upstream_server_healthy{upstream,server}`: 1 when a server takes traffic.
    pub upstream_server_healthy: IntGaugeVec,
    /// `floodgate_upstream_retries_total{upstream,result}`: retries sent or refused by the budget.
    pub upstream_retries: IntCounterVec,
    /// `floodgate_upstream_ejections_total{upstream}`: servers ejected by passive checks.
    pub upstream_ejections: IntCounterVec,
    /// `floodgate_upstream_ejections_refused_total{upstream}`: ejections not made
    /// because `max_ejection_percent` of the group is already out.
    pub upstream_ejections_refused: IntCounterVec,
    /// `floodgate_upstream_circuit_open{upstream}`: 1 while the breaker refuses requests.
    pub upstream_circuit_open: IntGaugeVec,
    /// `floodgate_cache_lookups_total{route,result}`.
    pub cache_lookups: IntCounterVec,
    /// `floodgate_cache_size_bytes`.
    pub cache_size_bytes: IntGauge,
    /// `floodgate_cache_entries`.
    pub cache_entries: IntGauge,
    /// `floodgate_cache_evictions_total`.
    pub cache_evictions: IntCounter,
    /// `floodgate_cache_fills_in_flight`.
    pub cache_fills_in_flight: IntGauge,
    /// `floodgate_cache_hit_for_miss_entries`.
    pub cache_hit_for_miss_entries: IntGauge,
    /// Rate limit families (`floodgate_rate_limited_total` and friends).
    pub rate_limit: crate::rate_limit::RateLimitMetrics,
    /// `floodgate_waiting_room_*{room}`.
    pub waiting_room: crate::waiting_room::metrics::Families,
    /// `floodgate_slow_clients_total{reason}`.
    pub slow_clients: crate::buffering::SlowClientMetrics,
    /// `floodgate_state_backend_up{backend}`: 1 while the shared-state backend answers.
    pub state_backend_up: IntGaugeVec,
    /// `floodgate_state_live_instances`: the N of 1/N shares (1 with the local backend),
    /// also what a dashboard divides a shared line's per-instance gauges by.
    pub state_live_instances: prometheus::IntGauge,
    /// `floodgate_certificate_expiry_seconds`, `floodgate_tls_handshakes_total`.
    pub tls: crate::tls::TlsMetrics,
}

impl Metrics {
    /// Creates and registers every family.
    pub fn new() -> Arc<Self> {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "floodgate_requests_total",
                "Requests answered, by route and status class",
            ),
            &["route", "status_class"],
        )
        .expect("valid metric");
        let request_duration = HistogramVec::new(
            HistogramOpts::new(
                "floodgate_request_duration_seconds",
                "Time from request head received to response head sent, by route",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["route"],
        )
        .expect("valid metric");
        let upstream_requests = IntCounterVec::new(
            Opts::new(
                "floodgate_upstream_requests_total",
                "Requests sent to an upstream",
            ),
            &["upstream"],
        )
        .expect("valid metric");
        let upstream_errors = IntCounterVec::new(
            Opts::new(
                "floodgate_upstream_errors_total",
                "Requests to an upstream that failed without a response, by reason",
            ),
            &["upstream", "reason"],
        )
        .expect("valid metric");
        let upstream_in_flight = IntGaugeVec::new(
            Opts::new(
                "floodgate_upstream_in_flight",
                "Requests in flight to an upstream",
            ),
            &["upstream"],
        )
        .expect("valid metric");
        let connections_open =
            IntGauge::new("floodgate_connections_open", "Client connections open now")
                .expect("valid metric");
        let connections_total =
            IntCounter::new("floodgate_connections_total", "Client connections accepted")
                .expect("valid metric");
        let config_reloads = IntCounterVec::new(
            Opts::new(
                "floodgate_config_reloads_total",
                "Config reloads, by result",
            ),
            &["result"],
        )
        .expect("valid metric");
        // Both results exist from the start, so `increase()` sees the first reload and
        // a dashboard shows 0 rather than no data.
        for result in ["ok", "error"] {
            config_reloads.with_label_values(&[result]);
        }
        let queue_depth = IntGaugeVec::new(
            Opts::new(
                "floodgate_queue_depth",
                "Requests waiting for an admission slot, by upstream",
            ),
            &["upstream"],
        )
        .expect("valid metric");
        let queue_overloaded = IntGaugeVec::new(
            Opts::new(
                "floodgate_queue_overloaded",
                "1 while an upstream's admission queue is overloaded (standing: newest first, short queue)",
            ),
            &["upstream"],
        )
        .expect("valid metric");
        let queue_wait = HistogramVec::new(
            HistogramOpts::new(
                "floodgate_queue_wait_seconds",
                "Time a request waited for an admission slot",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["upstream"],
        )
        .expect("valid metric");
        let concurrency_limit = IntGaugeVec::new(
            Opts::new(
                "floodgate_concurrency_limit",
                "Requests allowed in flight to an upstream now",
            ),
            &["upstream"],
        )
        .expect("valid metric");
        let shed = IntCounterVec::new(
            Opts::new(
                "floodgate_shed_total",
                "Requests shed by admission, by reason",
            ),
            &["upstream", "reason"],
        )
        .expect("valid metric");
        let upstream_server_healthy = IntGaugeVec::new(
            Opts::new(
                "floodgate_upstream_server_healthy",
                "1 when a server of an upstream takes traffic, 0 when it is out",
            ),
            &["upstream", "server"],
        )
        .expect("valid metric");
        let upstream_retries = IntCounterVec::new(
            Opts::new(
                "floodgate_upstream_retries_total",
                "Retries of idempotent requests, sent or refused by the budget",
            ),
            &["upstream", "result"],
        )
        .expect("valid metric");
        let upstream_ejections = IntCounterVec::new(
            Opts::new(
                "floodgate_upstream_ejections_total",
                "Servers ejected after consecutive failures",
            ),
            &["upstream"],
        )
        .expect("valid metric");
        let upstream_ejections_refused = IntCounterVec::new(
            Opts::new(
                "floodgate_upstream_ejections_refused_total",
                "Ejections not made because max_ejection_percent of the servers is already out",
            ),
            &["upstream"],
        )
        .expect("valid metric");
        let upstream_circuit_open = IntGaugeVec::new(
            Opts::new(
                "floodgate_upstream_circuit_open",
                "1 while an upstream's circuit breaker refuses requests (open or probing)",
            ),
            &["upstream"],
        )
        .expect("valid metric");
        for c in [
            Box::new(queue_depth.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(queue_overloaded.clone()),
            Box::new(queue_wait.clone()),
            Box::new(concurrency_limit.clone()),
            Box::new(shed.clone()),
            Box::new(upstream_server_healthy.clone()),
            Box::new(upstream_retries.clone()),
            Box::new(upstream_ejections.clone()),
            Box::new(upstream_ejections_refused.clone()),
            Box::new(upstream_circuit_open.clone()),
        ] {
            registry.register(c).expect("metric registered once");
        }
        let cache_lookups = IntCounterVec::new(
            Opts::new(
                "floodgate_cache_lookups_total",
                "Requests on cached routes, by result (hit, miss, stale, bypass, coalesced)",
            ),
            &["route", "result"],
        )
        .expect("valid metric");
        let cache_size_bytes =
            IntGauge::new("floodgate_cache_size_bytes", "Bytes held by the HTTP cache")
                .expect("valid metric");
        let cache_entries = IntGauge::new("floodgate_cache_entries", "URLs held by the HTTP cache")
            .expect("valid metric");
        let cache_evictions = IntCounter::new(
            "floodgate_cache_evictions_total",
            "Cached URLs evicted to make room (not counting expiry or purge)",
        )
        .expect("valid metric");
        let cache_fills_in_flight = IntGauge::new(
            "floodgate_cache_fills_in_flight",
            "Cache fills (coalesced origin fetches) in flight",
        )
        .expect("valid metric");
        let cache_hit_for_miss_entries = IntGauge::new(
            "floodgate_cache_hit_for_miss_entries",
            "URLs remembered as uncacheable (hit-for-miss)",
        )
        .expect("valid metric");
        for c in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(request_duration.clone()),
            Box::new(upstream_requests.clone()),
            Box::new(upstream_errors.clone()),
            Box::new(upstream_in_flight.clone()),
            Box::new(connections_open.clone()),
            Box::new(connections_total.clone()),
            Box::new(config_reloads.clone()),
            Box::new(cache_lookups.clone()),
            Box::new(cache_size_bytes.clone()),
            Box::new(cache_entries.clone()),
            Box::new(cache_evictions.clone()),
            Box::new(cache_fills_in_flight.clone()),
            Box::new(cache_hit_for_miss_entries.clone()),
        ] {
            registry.register(c).expect("metric registered once");
        }
        let rate_limit = crate::rate_limit::RateLimitMetrics::register(&registry);
        let waiting_room = crate::waiting_room::metrics::Families::register(&registry);
        let slow_clients = crate::buffering::SlowClientMetrics::register(&registry);
        let state_backend_up = register_state_backend_up(&registry);
        let state_live_instances = prometheus::IntGauge::new(
            "floodgate_state_live_instances",
            "Gateway instances alive in the shared state backend, as last counted (the N of 1/N shares; 1 with the local backend)",
        )
        .expect("valid metric");
        state_live_instances.set(1);
        registry
            .register(Box::new(state_live_instances.clone()))
            .expect("metric registered once");
        registry
            .register(Box::new(crate::logging::DroppedLines::new()))
            .expect("metric registered once");
        let tls = crate::tls::TlsMetrics::register(&registry);
        Arc::new(Metrics {
            slow_clients,
            tls,
            rate_limit,
            waiting_room,
            state_backend_up,
            state_live_instances,
            registry,
            requests,
            request_duration,
            upstream_requests,
            upstream_errors,
            upstream_in_flight,
            connections_open,
            connections_total,
            config_reloads,
            queue_depth,
            queue_overloaded,
            queue_wait,
            concurrency_limit,
            shed,
            upstream_server_healthy,
            upstream_retries,
            upstream_ejections,
            upstream_ejections_refused,
            upstream_circuit_open,
            cache_lookups,
            cache_size_bytes,
            cache_entries,
            cache_evictions,
            cache_fills_in_flight,
            cache_hit_for_miss_entries,
        })
    }

    /// Pre-resolved children for one route.
    pub fn route(&self, route: &str) -> RouteMetrics {
        RouteMetrics {
            by_class: STATUS_CLASSES.map(|c| self.requests.with_label_values(&[route, c])),
            duration: self.request_duration.with_label_values(&[route]),
        }
    }

    /// Pre-resolved children for one upstream.
    pub fn upstream(&self, upstream: &str) -> UpstreamMetrics {
        UpstreamMetrics {
            requests: self.upstream_requests.with_label_values(&[upstream]),
            in_flight: self.upstream_in_flight.with_label_values(&[upstream]),
            connect_errors: self
                .upstream_errors
                .with_label_values(&[upstream, "connect"]),
            timeouts: self
                .upstream_errors
                .with_label_values(&[upstream, "timeout"]),
            other_errors: self
                .upstream_errors
                .with_label_values(&[upstream, "protocol"]),
        }
    }

    /// The Prometheus text exposition of every family.
    pub fn render(&self) -> Vec<u8> {
        let mut buf = Vec::with_capacity(16 * 1024);
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buf)
            .expect("text encoding cannot fail");
        buf
    }
}

/// The state backend every gateway has today: rate limits and rooms in this process.
pub const LOCAL_STATE_BACKEND: &str = "local";

/// Registers `floodgate_state_backend_up{backend}` with the local backend up.
///
/// The local in-memory backend cannot be down, so it reads 1 for the life of the
/// process; a shared backend (Redis) sets its own child to 0 while it is unreachable,
/// which is what the dashboard and the `FloodgateStateBackendDown` alert watch.
fn register_state_backend_up(registry: &Registry) -> IntGaugeVec {
    let up = IntGaugeVec::new(
        Opts::new(
            "floodgate_state_backend_up",
            "1 while the state backend (rate limits, waiting-room line) answers, 0 while it is unreachable",
        ),
        &["backend"],
    )
    .expect("valid metric");
    registry
        .register(Box::new(up.clone()))
        .expect("metric registered once");
    up.with_label_values(&[LOCAL_STATE_BACKEND]).set(1);
    up
}

/// Metric handles of one route.
#[derive(Clone)]
pub struct RouteMetrics {
    by_class: [IntCounter; 5],
    duration: Histogram,
}

impl RouteMetrics {
    /// Counts one answered request.
    pub fn observe(&self, status: u16, seconds: f64) {
        self.by_class[status_class_index(status)].inc();
        self.duration.observe(seconds);
    }
}

/// Metric handles of one upstream.
#[derive(Clone)]
pub struct UpstreamMetrics {
    /// Requests sent.
    pub requests: IntCounter,
    /// Requests in flight.
    pub in_flight: IntGauge,
    /// Connect failures.
    pub connect_errors: IntCounter,
    /// Response timeouts.
    pub timeouts: IntCounter,
    /// Other failures (reset, malformed response).
    pub other_errors: IntCounter,
}
