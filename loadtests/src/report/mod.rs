//! The result of a run, as one serialisable structure, and its renderings.

pub mod html;
pub mod summary;
pub mod svg;

use crate::client::ClientKind;
use crate::metrics::ShopStats;
use crate::stats::{Class, Recorder};
use hdrhistogram::Histogram;
use serde::Serialize;
use std::collections::BTreeMap;

/// Latency percentiles of one histogram, in milliseconds.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct Percentiles {
    /// Samples.
    pub count: u64,
    /// Smallest.
    pub min_ms: f64,
    /// Mean.
    pub mean_ms: f64,
    /// Median.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// 99.9th percentile.
    pub p999_ms: f64,
    /// Largest.
    pub max_ms: f64,
}

impl Percentiles {
    /// Percentiles of a µs histogram; None when it is empty.
    pub fn of(h: &Histogram<u64>) -> Option<Percentiles> {
        if h.is_empty() {
            return None;
        }
        let ms = |v: u64| v as f64 / 1000.0;
        Some(Percentiles {
            count: h.len(),
            min_ms: ms(h.min()),
            mean_ms: h.mean() / 1000.0,
            p50_ms: ms(h.value_at_quantile(0.50)),
            p90_ms: ms(h.value_at_quantile(0.90)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            p999_ms: ms(h.value_at_quantile(0.999)),
            max_ms: ms(h.max()),
        })
    }
}

/// How many responses (and timeouts) took at least `ms`.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct AtLeast {
    /// Threshold, ms.
    pub ms: f64,
    /// Requests at or above it.
    pub count: u64,
}

/// Thresholds of [`RunReport::latency_at_least`], ms.
pub const THRESHOLDS_MS: [f64; 11] = [
    1.0, 5.0, 10.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0, 5000.0, 10000.0,
];

fn at_least(h: &Histogram<u64>) -> Vec<AtLeast> {
    THRESHOLDS_MS
        .iter()
        .map(|&ms| {
            let t = (ms * 1000.0) as u64;
            let count = h
                .iter_recorded()
                .filter(|v| h.highest_equivalent(v.value_iterated_to()) >= t)
                .map(|v| v.count_at_value())
                .sum();
            AtLeast { ms, count }
        })
        .collect()
}

/// CPU used by a process during the run.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ProcessCpu {
    /// "generator", "gateway", "shop".
    pub name: String,
    /// utime + stime over the run.
    pub cpu_seconds: f64,
    /// Wall time of the run.
    pub wall_seconds: f64,
    /// cpu_seconds / wall_seconds.
    pub cores: f64,
}

/// One second of the timeline.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SecondReport {
    /// Seconds since start (start of the second).
    pub t: u64,
    /// Requests sent.
    pub sent: u64,
    /// Arrivals dropped by the generator.
    pub dropped: u64,
    /// Completions by class.
    pub completed: BTreeMap<String, u64>,
    /// Median latency of the responses of that second, ms.
    pub p50_ms: Option<f64>,
    /// 99th percentile of the same, ms.
    pub p99_ms: Option<f64>,
    /// How much of this second the load (arrivals) covered, 0..1: the last second of
    /// the load is usually partial, and rates are counts divided by this.
    pub load_s: f64,
    /// How much of this second the run (load plus drain) covered, 0..1.
    pub run_s: f64,
}

impl SecondReport {
    /// Requests sent per second of load in this second; None where the load did not
    /// run long enough in it to say (a sliver at the end is not a collapse).
    pub fn send_rate(&self) -> Option<f64> {
        (self.load_s >= MIN_SPAN_S).then(|| self.sent as f64 / self.load_s)
    }

    /// Completions of `class` per second in this second, over the load only. A second
    /// in which the load ended and the drain began mixes the two and has no honest
    /// rate: None, a gap in the chart rather than a false drop.
    pub fn completion_rate(&self, class: &str) -> Option<f64> {
        let whole = self.load_s >= 1.0 - 1e-9;
        let last_without_drain = self.load_s >= MIN_SPAN_S && self.run_s - self.load_s < 0.01;
        (whole || last_without_drain)
            .then(|| self.completed.get(class).copied().unwrap_or(0) as f64 / self.load_s)
    }
}

/// A second covered less than this is left out of rate charts: dividing a handful of
/// requests by a sliver of time gives noise, and showing the raw count looks like a
/// collapse of throughput where the run merely ended.
pub const MIN_SPAN_S: f64 = 0.25;

/// One point of a latency percentile distribution (an HDR plot).
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct CurvePoint {
    /// Percentile, 0..100.
    pub percentile: f64,
    /// Latency at it, ms.
    pub ms: f64,
}

/// Quantiles of the HDR plot: ten per decade of nines, from 0 to 99.999 %.
fn curve_quantiles() -> impl Iterator<Item = f64> {
    (0..=50).map(|k| 1.0 - 10f64.powf(-(k as f64) / 10.0))
}

fn curve(h: &Histogram<u64>) -> Vec<CurvePoint> {
    if h.is_empty() {
        return Vec::new();
    }
    let mut out: Vec<CurvePoint> = curve_quantiles()
        // Beyond one sample per point the curve is the max, flat: stop there.
        .take_while(|q| (1.0 - q) * h.len() as f64 >= 0.5 || *q == 0.0)
        .map(|q| CurvePoint {
            percentile: q * 100.0,
            ms: h.value_at_quantile(q) as f64 / 1000.0,
        })
        .collect();
    out.push(CurvePoint {
        percentile: 100.0 * (1.0 - 1.0 / (2.0 * h.len() as f64)).max(0.0),
        ms: h.max() as f64 / 1000.0,
    });
    out
}

/// Where and on what the run ran, so a figure can be judged and reproduced.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Environment {
    /// `git describe`-like commit of the working tree (`FLOODGATE_COMMIT` overrides),
    /// with `-dirty` when it had changes; "unknown" outside a checkout.
    pub commit: String,
    /// Host name.
    pub host: String,
    /// CPUs this process may use.
    pub cores: usize,
    /// 1, 5 and 15 minute load averages when the report was built (the 1-minute one
    /// includes the run itself); None where the OS does not say.
    pub load_average: Option<[f64; 3]>,
    /// Operating system and architecture.
    pub os: String,
}

impl Environment {
    /// Reads this machine's figures.
    pub fn detect() -> Environment {
        Environment {
            commit: commit(),
            host: std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_string())
                .ok()
                .or_else(|| std::env::var("HOSTNAME").ok())
                .unwrap_or_else(|| "unknown".into()),
            cores: std::thread::available_parallelism().map_or(0, |n| n.get()),
            load_average: load_average(),
            os: format!("{} {}", std::env::consts::OS, std::env::consts::ARCH),
        }
    }
}

fn commit() -> String {
    if let Ok(c) = std::env::var("FLOODGATE_COMMIT") {
        if !c.trim().is_empty() {
            return c.trim().to_string();
        }
    }
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .stderr(std::process::Stdio::null())
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    match git(&["rev-parse", "--short=12", "HEAD"]) {
        Some(head) if !head.is_empty() => {
            let dirty = git(&["status", "--porcelain", "--untracked-files=no"])
                .is_some_and(|s| !s.is_empty());
            if dirty {
                format!("{head}-dirty")
            } else {
                head
            }
        }
        _ => "unknown".into(),
    }
}

fn load_average() -> Option<[f64; 3]> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    let mut it = text.split_whitespace().map(|v| v.parse::<f64>().ok());
    Some([it.next()??, it.next()??, it.next()??])
}

/// One scrape of the gateway and shop.
#[derive(Debug, Clone, Serialize, PartialEq, Default)]
pub struct MetricsPoint {
    /// Seconds since start.
    pub t: f64,
    /// Sum of floodgate_queue_depth.
    pub queue_depth: Option<f64>,
    /// Cache hits / lookups over the last interval.
    pub cache_hit_ratio: Option<f64>,
    /// The shop's in-flight requests.
    pub origin_in_flight: Option<u64>,
    /// The shop's cumulative errors.
    pub origin_errors: Option<u64>,
}

/// Gateway figures over the whole run.
#[derive(Debug, Clone, Serialize, PartialEq, Default)]
pub struct GatewaySummary {
    /// Highest queue depth scraped.
    pub max_queue_depth: Option<f64>,
    /// Hits / lookups between the first and the last scrape.
    pub cache_hit_ratio: Option<f64>,
    /// Scrapes that failed.
    pub scrape_errors: u64,
}

/// Per mix-entry figures.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct EntryReport {
    /// Entry label.
    pub name: String,
    /// Requests that ended.
    pub count: u64,
    /// 2xx among them.
    pub ok: u64,
    /// Latency of all its responses.
    pub latency: Option<Percentiles>,
}

/// Shopper outcomes.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ShopperReport {
    /// Sessions started.
    pub started: u64,
    /// Got past the waiting page.
    pub admitted: u64,
    /// Checkout answered 2xx.
    pub purchased: u64,
    /// Ran out of time.
    pub gave_up: u64,
    /// Sent back to the waiting page after admission (should be 0).
    pub thrown_out: u64,
    /// Waiting-page polls.
    pub polls: u64,
    /// Arrival to admission.
    pub wait: Option<Percentiles>,
    /// Arrival to purchase.
    pub session: Option<Percentiles>,
}

/// Latencies of the requests scheduled after the onset of the load.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SustainedReport {
    /// Seconds after the start; requests scheduled earlier are left out.
    pub after_s: f64,
    /// 2xx only.
    pub latency_2xx: Option<Percentiles>,
    /// 429 and 503 only.
    pub latency_refusals: Option<Percentiles>,
}

/// Everything about one run against one target.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    /// Tool name and version.
    pub tool: String,
    /// Scenario name.
    pub scenario: String,
    /// Target label ("direct", "floodgate", a peer name, or "target").
    pub target: String,
    /// Target URL.
    pub url: String,
    /// "open" or "closed".
    pub model: String,
    /// Client implementation.
    pub client: ClientKind,
    /// Planned load duration, s.
    pub planned_s: f64,
    /// Run duration including the drain, s.
    pub wall_s: f64,
    /// Highest planned arrival rate (open model).
    pub peak_rate: Option<f64>,
    /// Arrivals due (open model).
    pub scheduled: u64,
    /// Requests sent.
    pub sent: u64,
    /// Arrivals dropped because max_in_flight was reached.
    pub dropped: u64,
    /// Requests that ended (any way).
    pub completed: u64,
    /// Requests still open at the hard stop.
    pub unfinished: u64,
    /// Requests cut by the hard stop (`max_duration`) before their timeout.
    pub stopped: u64,
    /// sent / planned_s.
    pub send_rate: f64,
    /// 2xx / planned_s.
    pub goodput: f64,
    /// Counts by class.
    pub classes: BTreeMap<String, u64>,
    /// Counts by status code.
    pub statuses: BTreeMap<String, u64>,
    /// All responses and timeouts.
    pub latency_all: Option<Percentiles>,
    /// 2xx only.
    pub latency_2xx: Option<Percentiles>,
    /// 429 and 503 only.
    pub latency_refusals: Option<Percentiles>,
    /// The same two, for requests scheduled after `sustained_after` (scenario key).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sustained: Option<SustainedReport>,
    /// By class.
    pub latency_by_class: BTreeMap<String, Percentiles>,
    /// Tail counts of all responses and timeouts at fixed thresholds.
    pub latency_at_least: Vec<AtLeast>,
    /// Percentile distribution of all responses and timeouts (the HDR plot).
    pub latency_curve: Vec<CurvePoint>,
    /// The same for 2xx only.
    pub latency_curve_2xx: Vec<CurvePoint>,
    /// Commit, host, cores and load of the machine the run was on.
    pub environment: Environment,
    /// How late the generator sent against its schedule.
    pub dispatch_lag: Option<Percentiles>,
    /// Connections opened (pool client).
    pub connections_opened: u64,
    /// Body bytes received.
    pub bytes_received: u64,
    /// CPU of the generator and of spawned processes.
    pub cpu: Vec<ProcessCpu>,
    /// Per mix entry.
    pub entries: Vec<EntryReport>,
    /// Shopper outcomes, when the mix has shoppers.
    pub shoppers: Option<ShopperReport>,
    /// Per second.
    pub timeline: Vec<SecondReport>,
    /// Per scrape.
    pub metrics: Vec<MetricsPoint>,
    /// Gateway summary, when scraped.
    pub gateway: Option<GatewaySummary>,
    /// The shop's stats at the end, when known.
    pub origin: Option<ShopStats>,
    /// Distinct failure messages with counts.
    pub errors: BTreeMap<String, u64>,
    /// Things the reader must not miss (dropped arrivals, generator lag...).
    pub warnings: Vec<String>,
}

impl RunReport {
    /// Count of one class.
    pub fn class(&self, c: Class) -> u64 {
        self.classes.get(c.as_str()).copied().unwrap_or(0)
    }

    /// The generator's own CPU figures.
    pub fn generator_cpu(&self) -> Option<&ProcessCpu> {
        self.cpu.iter().find(|c| c.name == "generator")
    }

    /// Seconds the charts of this run need on their time axis.
    pub fn time_span_s(&self) -> f64 {
        let metrics_end = self.metrics.iter().map(|m| m.t).fold(0.0, f64::max);
        self.wall_s.max(metrics_end).max(self.timeline.len() as f64)
    }

    /// Pretty JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }
}

/// Inputs of [`build`] that do not come from the recorder.
pub struct BuildInfo {
    /// Scenario name.
    pub scenario: String,
    /// Target label.
    pub target: String,
    /// Target URL.
    pub url: String,
    /// "open"/"closed".
    pub model: String,
    /// Client.
    pub client: ClientKind,
    /// Planned duration, s.
    pub planned_s: f64,
    /// Wall, s.
    pub wall_s: f64,
    /// Peak planned rate.
    pub peak_rate: Option<f64>,
    /// In flight at the stop.
    pub unfinished: u64,
    /// Connections opened.
    pub connections_opened: u64,
    /// CPU figures.
    pub cpu: Vec<ProcessCpu>,
    /// Scrapes.
    pub metrics: Vec<MetricsPoint>,
    /// Gateway summary.
    pub gateway: Option<GatewaySummary>,
    /// Shop stats.
    pub origin: Option<ShopStats>,
    /// Whether the mix has shoppers.
    pub has_shoppers: bool,
}

/// Turns a finished recorder into a report, adding warnings for what went wrong.
pub fn build(rec: &Recorder, info: BuildInfo) -> RunReport {
    let classes: BTreeMap<String, u64> = Class::ALL
        .iter()
        .map(|c| (c.as_str().to_string(), rec.classes[*c as usize]))
        .collect();
    let latency_by_class = Class::ALL
        .iter()
        .filter_map(|c| {
            Percentiles::of(&rec.by_class[*c as usize]).map(|p| (c.as_str().to_string(), p))
        })
        .collect();
    let load_end = info.planned_s.min(info.wall_s);
    let covered = |t: u64, end: f64| (end - t as f64).clamp(0.0, 1.0);
    let timeline = rec
        .timeline
        .iter()
        .enumerate()
        .map(|(i, s)| SecondReport {
            t: i as u64,
            load_s: covered(i as u64, load_end),
            run_s: covered(i as u64, info.wall_s),
            sent: s.sent,
            dropped: s.dropped,
            completed: Class::ALL
                .iter()
                .map(|c| (c.as_str().to_string(), s.completed[*c as usize]))
                .collect(),
            p50_ms: (!s.latency.is_empty())
                .then(|| s.latency.value_at_quantile(0.5) as f64 / 1000.0),
            p99_ms: (!s.latency.is_empty())
                .then(|| s.latency.value_at_quantile(0.99) as f64 / 1000.0),
        })
        .collect();
    let planned = info.planned_s.max(1e-9);
    let ok = rec.classes[Class::Success as usize];
    let dispatch_lag = Percentiles::of(&rec.lag);
    let mut warnings = Vec::new();
    if rec.dropped > 0 {
        warnings.push(format!(
            "DROPPED {} scheduled arrivals: generator overloaded (max_in_flight reached: the target or this machine could not keep up); the offered load was NOT what the scenario asked for",
            rec.dropped
        ));
    }
    if let Some(l) = &dispatch_lag {
        if l.p99_ms > 10.0 {
            warnings.push(format!(
                "generator lag: p99 {:.1} ms, max {:.1} ms behind schedule (latencies include it, but the generator may be CPU-bound)",
                l.p99_ms, l.max_ms
            ));
        }
    }
    if info.unfinished + rec.stopped > 0 {
        warnings.push(format!(
            "{} requests were cut by the hard stop (max_duration) and are in no class",
            info.unfinished + rec.stopped
        ));
    }
    let connect_errors = rec.classes[Class::ConnectError as usize];
    if connect_errors > 0 {
        warnings.push(format!("{connect_errors} connection errors"));
    }
    let shoppers = info.has_shoppers.then(|| {
        let s = &rec.shoppers;
        ShopperReport {
            started: s.started,
            admitted: s.admitted,
            purchased: s.purchased,
            gave_up: s.gave_up,
            thrown_out: s.thrown_out,
            polls: s.polls,
            wait: Percentiles::of(&s.wait),
            session: Percentiles::of(&s.session),
        }
    });
    if let Some(s) = &shoppers {
        if s.thrown_out > 0 {
            warnings.push(format!(
                "{} admitted shoppers were sent back to the waiting page",
                s.thrown_out
            ));
        }
    }
    RunReport {
        tool: crate::client::USER_AGENT_VALUE.to_string(),
        scenario: info.scenario,
        target: info.target,
        url: info.url,
        model: info.model,
        client: info.client,
        planned_s: info.planned_s,
        wall_s: info.wall_s,
        peak_rate: info.peak_rate,
        scheduled: rec.scheduled,
        sent: rec.sent,
        dropped: rec.dropped,
        completed: rec.completed_total(),
        unfinished: info.unfinished,
        stopped: rec.stopped,
        send_rate: rec.sent as f64 / planned,
        goodput: ok as f64 / planned,
        classes,
        statuses: rec
            .statuses
            .iter()
            .map(|(k, v)| (k.to_string(), *v))
            .collect(),
        latency_all: Percentiles::of(&rec.all),
        latency_2xx: Percentiles::of(&rec.by_class[Class::Success as usize]),
        latency_refusals: Percentiles::of(&rec.refusals),
        sustained: rec.sustained.as_ref().map(|s| SustainedReport {
            after_s: s.after.as_secs_f64(),
            latency_2xx: Percentiles::of(&s.ok),
            latency_refusals: Percentiles::of(&s.refusals),
        }),
        latency_by_class,
        latency_at_least: at_least(&rec.all),
        latency_curve: curve(&rec.all),
        latency_curve_2xx: curve(&rec.by_class[Class::Success as usize]),
        environment: Environment::detect(),
        dispatch_lag,
        connections_opened: info.connections_opened,
        bytes_received: rec.bytes,
        cpu: info.cpu,
        entries: rec
            .entries
            .iter()
            .map(|e| EntryReport {
                name: e.name.clone(),
                count: e.count,
                ok: e.ok,
                latency: Percentiles::of(&e.latency),
            })
            .collect(),
        shoppers,
        timeline,
        metrics: info.metrics,
        gateway: info.gateway,
        origin: info.origin,
        errors: rec.error_samples.clone(),
        warnings,
    }
}
