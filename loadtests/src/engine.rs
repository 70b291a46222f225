//! The load engine: open-model scheduler, closed-model users, drain, hard stop.
//!
//! Everything a run starts is bounded twice: by the scenario (schedule length,
//! `max_requests`) and by a hard deadline that every request and shopper
//! respects, so nothing outlives [`run`] by more than a request timeout.

use crate::client::{ClientError, ClientKind, HttpClient, Req, Resp, Want};
use crate::cpu::cpu_seconds;
use crate::metrics::{gateway_reading, hit_ratio, parse_prometheus, GatewayReading, ShopStats};
use crate::mix::{CookieJar, EntryKind, Mix};
use crate::report::{self, BuildInfo, GatewaySummary, MetricsPoint, ProcessCpu, RunReport};
use crate::scenario::{LoadModel, Scenario};
use crate::stats::{Class, Recorder};
use crate::target::{check_url, Target};
use anyhow::Context as _;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::{sleep_until, timeout_at, Instant};

/// How early the scheduler may send against an arrival's due time: the
/// granularity of tokio's timer.
const TIMER_SLACK: Duration = Duration::from_millis(1);

/// How one run is carried out, beyond what the scenario says.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Label of the target in reports.
    pub label: String,
    /// Base URL of the target.
    pub target_url: String,
    /// Lift the loopback-only rule.
    pub allow_non_loopback: bool,
    /// Client implementation.
    pub client: ClientKind,
    /// Print a progress line every second to stderr.
    pub progress: bool,
    /// Gateway Prometheus endpoint, scraped every second.
    pub metrics_url: Option<String>,
    /// Simulated shop stats endpoint, scraped every second and at the end.
    pub shop_stats_url: Option<String>,
    /// Overrides the scenario's hard stop.
    pub max_duration: Option<Duration>,
    /// Overrides the scenario's request cap.
    pub max_requests: Option<u64>,
    /// Multiplies every arrival rate (open model).
    pub rate_scale: f64,
    /// Other processes whose CPU to report (name, pid).
    pub processes: Vec<(String, u32)>,
}

impl RunOptions {
    /// Options for a URL target with defaults elsewhere.
    pub fn new(label: &str, target_url: &str) -> Self {
        RunOptions {
            label: label.to_string(),
            target_url: target_url.to_string(),
            allow_non_loopback: false,
            client: ClientKind::default(),
            progress: false,
            metrics_url: None,
            shop_stats_url: None,
            max_duration: None,
            max_requests: None,
            rate_scale: 1.0,
            processes: Vec::new(),
        }
    }
}

/// How a request that got no response failed.
#[derive(Debug)]
pub(crate) enum Failure {
    Timeout,
    /// Cut by the run's hard stop before its own timeout.
    Stopped,
    Connect(String),
    Other(String),
}

/// State shared by the scheduler, requests, shoppers and reporters.
pub(crate) struct Ctx {
    pub(crate) client: HttpClient,
    pub(crate) rec: Mutex<Recorder>,
    pub(crate) in_flight: AtomicUsize,
    pub(crate) sent: AtomicU64,
    pub(crate) stopping: AtomicBool,
    pub(crate) timeout: Duration,
    pub(crate) hard_stop: Instant,
    pub(crate) mix: Mix,
    pub(crate) jars: Vec<Mutex<CookieJar>>,
    pub(crate) base_path: String,
    pub(crate) max_requests: u64,
}

impl Ctx {
    pub(crate) fn rec(&self) -> MutexGuard<'_, Recorder> {
        self.rec.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sends with the per-request timeout, never past the hard stop.
    pub(crate) async fn send(&self, req: &Req<'_>, want: Want) -> Result<Resp, Failure> {
        let natural = Instant::now() + self.timeout;
        let deadline = natural.min(self.hard_stop);
        match timeout_at(deadline, self.client.request(req, want)).await {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(ClientError::Connect(e))) => Err(Failure::Connect(e)),
            Ok(Err(ClientError::Other(e))) => Err(Failure::Other(e)),
            Err(_) if deadline < natural => Err(Failure::Stopped),
            Err(_) => Err(Failure::Timeout),
        }
    }

    /// Records how a request ended.
    pub(crate) fn record(
        &self,
        now: Instant,
        entry: usize,
        outcome: &Result<Resp, Failure>,
        latency: Duration,
    ) {
        let mut rec = self.rec();
        match outcome {
            Ok(r) => rec.completed(
                now,
                entry,
                Some(r.status),
                Class::of_status(r.status),
                latency,
                r.bytes,
            ),
            Err(Failure::Timeout) => rec.completed(now, entry, None, Class::Timeout, latency, 0),
            // Not the target's fault: the run ended under it.
            Err(Failure::Stopped) => rec.stopped += 1,
            Err(Failure::Connect(e)) => {
                rec.completed(now, entry, None, Class::ConnectError, latency, 0);
                rec.error_sample(&format!("connect: {e}"));
            }
            Err(Failure::Other(e)) => {
                rec.completed(now, entry, None, Class::OtherError, latency, 0);
                rec.error_sample(e);
            }
        }
    }

    /// Whether new requests may still start.
    pub(crate) fn may_send(&self) -> bool {
        !self.stopping.load(Ordering::Relaxed) && Instant::now() < self.hard_stop
    }

    /// Counts a request against `max_requests`; false when the cap is reached.
    pub(crate) fn take_request(&self) -> bool {
        self.sent.fetch_add(1, Ordering::Relaxed) < self.max_requests
    }
}

struct InFlight<'a>(&'a AtomicUsize);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Runs a scenario against one target and returns its report.
pub async fn run(scenario: &Scenario, opts: &RunOptions) -> anyhow::Result<RunReport> {
    let target = Target::resolve(&opts.target_url, opts.allow_non_loopback).await?;
    let metrics = match &opts.metrics_url {
        Some(u) => Some(scrape_client(u, opts.allow_non_loopback).await?),
        None => None,
    };
    let shop = match &opts.shop_stats_url {
        Some(u) => Some(scrape_client(u, opts.allow_non_loopback).await?),
        None => None,
    };

    let max_duration = opts.max_duration.unwrap_or(scenario.max_duration);
    let max_requests = opts.max_requests.unwrap_or(scenario.max_requests);
    let model = match &scenario.model {
        LoadModel::Open(s) if opts.rate_scale != 1.0 => LoadModel::Open(s.scaled(opts.rate_scale)),
        m => m.clone(),
    };
    let start = Instant::now();
    let names: Vec<String> = scenario
        .mix
        .entries()
        .iter()
        .map(|e| e.name.clone())
        .collect();
    let ctx = Arc::new(Ctx {
        client: HttpClient::new(
            opts.client,
            target.addr,
            &target.authority,
            scenario.max_connections,
        ),
        rec: Mutex::new(
            Recorder::new(start, &names).with_sustained_after(scenario.sustained_after),
        ),
        in_flight: AtomicUsize::new(0),
        sent: AtomicU64::new(0),
        stopping: AtomicBool::new(false),
        timeout: scenario.timeout,
        hard_stop: start + max_duration,
        mix: scenario.mix.clone(),
        jars: (0..scenario.sessions)
            .map(|_| Mutex::new(CookieJar::default()))
            .collect(),
        base_path: target.base_path.clone(),
        max_requests,
    });

    let cpu0 = cpu_seconds(None);
    let child_cpu0: Vec<Option<f64>> = opts
        .processes
        .iter()
        .map(|(_, pid)| cpu_seconds(Some(*pid)))
        .collect();
    let (stop_tx, stop_rx) = watch::channel(false);
    let progress = opts.progress.then(|| {
        tokio::spawn(progress_loop(
            ctx.clone(),
            opts.label.clone(),
            stop_rx.clone(),
        ))
    });
    let scraper = (metrics.is_some() || shop.is_some()).then(|| {
        tokio::spawn(scrape_loop(
            metrics.clone(),
            shop.clone(),
            start,
            stop_rx.clone(),
        ))
    });

    let end_of_load = match &model {
        LoadModel::Open(schedule) => {
            open_model(&ctx, schedule, scenario, start).await;
            start + schedule.duration()
        }
        LoadModel::Closed {
            users,
            duration,
            think_time,
        } => {
            let end = (start + *duration).min(ctx.hard_stop);
            closed_model(&ctx, *users, end, *think_time, scenario.seed).await;
            end
        }
    };

    // Drain: give what is in flight its timeout, within the hard stop; shoppers
    // are whole visits, so they get until the hard stop.
    let has_shoppers = scenario
        .mix
        .entries()
        .iter()
        .any(|e| matches!(e.kind, EntryKind::Shopper(_)));
    let drain_deadline = if has_shoppers {
        ctx.hard_stop
    } else {
        (Instant::now().max(end_of_load) + scenario.timeout + Duration::from_millis(100))
            .min(ctx.hard_stop)
    };
    while ctx.in_flight.load(Ordering::Relaxed) > 0 && Instant::now() < drain_deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    ctx.stopping.store(true, Ordering::Relaxed);
    let unfinished = ctx.in_flight.load(Ordering::Relaxed) as u64;
    let wall = start.elapsed().as_secs_f64();
    let cpu1 = cpu_seconds(None);

    let _ = stop_tx.send(true);
    if let Some(p) = progress {
        let _ = p.await;
    }
    let (points, gateway) = match scraper {
        Some(s) => s.await.unwrap_or_default(),
        None => (Vec::new(), None),
    };
    let origin = match &shop {
        Some((c, path)) => fetch(c, path)
            .await
            .ok()
            .and_then(|b| serde_json::from_slice::<ShopStats>(&b).ok()),
        None => None,
    };

    let mut cpu = Vec::new();
    if let (Some(a), Some(b)) = (cpu0, cpu1) {
        cpu.push(ProcessCpu {
            name: "generator".into(),
            cpu_seconds: b - a,
            wall_seconds: wall,
            cores: (b - a) / wall.max(1e-9),
        });
    }
    for ((name, pid), c0) in opts.processes.iter().zip(child_cpu0) {
        if let (Some(a), Some(b)) = (c0, cpu_seconds(Some(*pid))) {
            cpu.push(ProcessCpu {
                name: name.clone(),
                cpu_seconds: b - a,
                wall_seconds: wall,
                cores: (b - a) / wall.max(1e-9),
            });
        }
    }

    let peak_rate = match &model {
        LoadModel::Open(s) => Some(s.peak_rate()),
        LoadModel::Closed { .. } => None,
    };
    let info = BuildInfo {
        scenario: scenario.name.clone(),
        target: opts.label.clone(),
        url: opts.target_url.clone(),
        model: model.as_str().to_string(),
        client: opts.client,
        planned_s: model
            .duration()
            .as_secs_f64()
            .min(max_duration.as_secs_f64()),
        wall_s: wall,
        peak_rate,
        unfinished,
        connections_opened: ctx.client.connections_opened(),
        cpu,
        metrics: points,
        gateway,
        origin,
        has_shoppers,
    };
    let report = report::build(&ctx.rec(), info);
    Ok(report)
}

async fn open_model(
    ctx: &Arc<Ctx>,
    schedule: &crate::schedule::Schedule,
    scenario: &Scenario,
    start: Instant,
) {
    let mut rng = SmallRng::seed_from_u64(scenario.seed);
    let max_in_flight = scenario.max_in_flight;
    for offset in schedule.arrivals() {
        let due = start + offset;
        if due >= ctx.hard_stop {
            break;
        }
        // Tokio's timer fires on 1 ms ticks, always late. Waking up to 1 ms
        // early instead, and timing each request from the earlier of its due
        // time and its actual send, keeps both rules: a generator that falls
        // behind still charges the delay to the request (coordinated-omission
        // correction), and a fast target is not charged for timer slack.
        if let Some(wake) = due.checked_sub(TIMER_SLACK) {
            if wake > Instant::now() {
                sleep_until(wake).await;
            }
        }
        let now = Instant::now();
        let origin = due.min(now);
        let entry = ctx.mix.pick(&mut rng);
        if ctx.in_flight.load(Ordering::Relaxed) >= max_in_flight {
            let mut rec = ctx.rec();
            rec.scheduled += 1;
            rec.dropped(now);
            continue;
        }
        match &ctx.mix.entries()[entry].kind {
            EntryKind::Request(spec) => {
                if !ctx.take_request() {
                    break;
                }
                let path = format!("{}{}", ctx.base_path, spec.path.render(&mut rng));
                let jar = spec.cookies.then(|| rng.random_range(0..ctx.jars.len()));
                {
                    let mut rec = ctx.rec();
                    rec.scheduled += 1;
                    rec.dispatched(now, Some(now.saturating_duration_since(due)));
                }
                ctx.in_flight.fetch_add(1, Ordering::Relaxed);
                tokio::spawn(fire(ctx.clone(), origin, entry, path, jar));
            }
            EntryKind::Shopper(_) => {
                {
                    let mut rec = ctx.rec();
                    rec.scheduled += 1;
                    rec.shoppers.started += 1;
                }
                ctx.in_flight.fetch_add(1, Ordering::Relaxed);
                let seed = rng.random();
                let c = ctx.clone();
                tokio::spawn(async move {
                    let _g = InFlight(&c.in_flight);
                    crate::shopper::visit(&c, origin, entry, seed).await;
                });
            }
        }
    }
}

async fn fire(ctx: Arc<Ctx>, origin: Instant, entry: usize, path: String, jar: Option<usize>) {
    let _g = InFlight(&ctx.in_flight);
    let EntryKind::Request(spec) = &ctx.mix.entries()[entry].kind else {
        return;
    };
    let cookie = jar.and_then(|j| {
        ctx.jars[j]
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .header()
    });
    let req = Req {
        method: &spec.method,
        path: &path,
        headers: &spec.headers,
        cookie: cookie.as_deref(),
        body: &spec.body,
    };
    let want = Want {
        headers: jar.is_some(),
        body: false,
    };
    let outcome = ctx.send(&req, want).await;
    let now = Instant::now();
    if let (Some(j), Ok(r)) = (jar, &outcome) {
        if !r.set_cookies.is_empty() {
            let mut jar = ctx.jars[j].lock().unwrap_or_else(|p| p.into_inner());
            for c in &r.set_cookies {
                jar.store(c);
            }
        }
    }
    ctx.record(now, entry, &outcome, now - origin);
}

async fn closed_model(ctx: &Arc<Ctx>, users: usize, end: Instant, think: Duration, seed: u64) {
    let mut handles = Vec::with_capacity(users);
    for u in 0..users {
        let ctx = ctx.clone();
        handles.push(tokio::spawn(async move {
            let mut rng =
                SmallRng::seed_from_u64(seed ^ (u as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
            let mut jar = CookieJar::default();
            while Instant::now() < end && ctx.may_send() {
                let entry = ctx.mix.pick(&mut rng);
                match &ctx.mix.entries()[entry].kind {
                    EntryKind::Request(spec) => {
                        if !ctx.take_request() {
                            break;
                        }
                        let path = format!("{}{}", ctx.base_path, spec.path.render(&mut rng));
                        let cookie = if spec.cookies { jar.header() } else { None };
                        let req = Req {
                            method: &spec.method,
                            path: &path,
                            headers: &spec.headers,
                            cookie: cookie.as_deref(),
                            body: &spec.body,
                        };
                        let sent_at = Instant::now();
                        ctx.rec().dispatched(sent_at, None);
                        ctx.in_flight.fetch_add(1, Ordering::Relaxed);
                        let outcome = {
                            let _g = InFlight(&ctx.in_flight);
                            ctx.send(
                                &req,
                                Want {
                                    headers: spec.cookies,
                                    body: false,
                                },
                            )
                            .await
                        };
                        let now = Instant::now();
                        if let Ok(r) = &outcome {
                            for c in &r.set_cookies {
                                jar.store(c);
                            }
                        }
                        ctx.record(now, entry, &outcome, now - sent_at);
                    }
                    EntryKind::Shopper(_) => {
                        ctx.rec().shoppers.started += 1;
                        crate::shopper::visit(&ctx, Instant::now(), entry, rng.random()).await;
                    }
                }
                if !think.is_zero() {
                    sleep_until((Instant::now() + think).min(end)).await;
                }
            }
        }));
    }
    for h in handles {
        let _ = h.await;
    }
}

async fn progress_loop(ctx: Arc<Ctx>, label: String, mut stop: watch::Receiver<bool>) {
    let start = ctx.rec().start();
    let mut tick = tokio::time::interval_at(start + Duration::from_secs(1), Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        let secs = start.elapsed().as_secs() as usize;
        let line = {
            let rec = ctx.rec();
            let Some(s) = secs.checked_sub(1).and_then(|i| rec.timeline.get(i)) else {
                continue;
            };
            let c = |k: Class| s.completed[k as usize];
            let pct = |q: f64| {
                if s.latency.is_empty() {
                    "-".to_string()
                } else {
                    format!("{:.1}", s.latency.value_at_quantile(q) as f64 / 1000.0)
                }
            };
            let mut line = format!(
                "[{label} {secs:>3}s] sent {:>6}/s | 2xx {} 3xx {} 4xx {} 5xx {} timeout {} conn-err {} err {} | p50 {} p99 {} ms | in-flight {} | total {}",
                s.sent,
                c(Class::Success),
                c(Class::Redirect),
                c(Class::ClientError),
                c(Class::ServerError),
                c(Class::Timeout),
                c(Class::ConnectError),
                c(Class::OtherError),
                pct(0.5),
                pct(0.99),
                ctx.in_flight.load(Ordering::Relaxed),
                rec.sent,
            );
            if s.dropped > 0 {
                line.push_str(&format!(" | DROPPED {} (generator overloaded)", s.dropped));
            }
            line
        };
        eprintln!("{line}");
    }
}

type Scrape = (Arc<HttpClient>, String);

async fn scrape_client(url: &str, allow_non_loopback: bool) -> anyhow::Result<Scrape> {
    let uri = check_url(url, allow_non_loopback)?;
    let t = Target::resolve(url, allow_non_loopback).await?;
    let path = uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".into());
    Ok((
        Arc::new(HttpClient::new(ClientKind::Pool, t.addr, &t.authority, 2)),
        path,
    ))
}

/// GETs a small document, with a short timeout of its own.
pub(crate) async fn fetch(client: &HttpClient, path: &str) -> anyhow::Result<bytes::Bytes> {
    let empty = bytes::Bytes::new();
    let req = Req {
        method: &http::Method::GET,
        path,
        headers: &[],
        cookie: None,
        body: &empty,
    };
    let resp = tokio::time::timeout(
        Duration::from_secs(2),
        client.request(
            &req,
            Want {
                headers: false,
                body: true,
            },
        ),
    )
    .await
    .context("timed out")??;
    anyhow::ensure!(resp.status == 200, "status {}", resp.status);
    Ok(resp.body.unwrap_or_default())
}

async fn scrape_loop(
    metrics: Option<Scrape>,
    shop: Option<Scrape>,
    start: Instant,
    mut stop: watch::Receiver<bool>,
) -> (Vec<MetricsPoint>, Option<GatewaySummary>) {
    let mut points = Vec::new();
    let mut summary = metrics.as_ref().map(|_| GatewaySummary::default());
    let mut first: Option<GatewayReading> = None;
    let mut prev = GatewayReading::default();
    let mut last = GatewayReading::default();
    let mut tick = tokio::time::interval_at(start, Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => break,
        }
        let mut p = MetricsPoint {
            t: start.elapsed().as_secs_f64(),
            ..MetricsPoint::default()
        };
        if let (Some((c, path)), Some(sum)) = (&metrics, summary.as_mut()) {
            match fetch(c, path).await {
                Ok(body) => {
                    let r = gateway_reading(&parse_prometheus(&String::from_utf8_lossy(&body)));
                    p.queue_depth = r.queue_depth;
                    p.cache_hit_ratio = hit_ratio(&prev, &r);
                    if let Some(q) = r.queue_depth {
                        sum.max_queue_depth = Some(sum.max_queue_depth.unwrap_or(0.0).max(q));
                    }
                    first.get_or_insert(r);
                    prev = r;
                    last = r;
                }
                Err(_) => sum.scrape_errors += 1,
            }
        }
        if let Some((c, path)) = &shop {
            if let Ok(body) = fetch(c, path).await {
                if let Ok(s) = serde_json::from_slice::<ShopStats>(&body) {
                    p.origin_in_flight = Some(s.in_flight);
                    p.origin_errors = Some(s.errors);
                }
            }
        }
        points.push(p);
    }
    if let (Some(sum), Some(f)) = (summary.as_mut(), first) {
        sum.cache_hit_ratio = hit_ratio(&f, &last);
    }
    (points, summary)
}
