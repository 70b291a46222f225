//! `floodgate top`: the event-day dashboard's figures in a terminal, from the admin API
//! (`/metrics` and `/admin/waiting-rooms/{name}`), for an SRE with only an SSH session.
//!
//! Plain ANSI escapes, no terminal crate: the view only prints (clear, home, a table,
//! every interval) and reads no keys, so ratatui or crossterm would bring a raw-mode
//! terminal and an event loop this does not need. The Prometheus text format is parsed
//! here too: the few lines of its grammar are less than a dependency.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{IsTerminal, Write as _};
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;

/// How long one admin request may take before the frame says the gateway is not answering.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

/// An admin answer larger than this is not floodgate's (a page of metrics is ~50 KiB).
const MAX_ANSWER: usize = 16 * 1024 * 1024;

/// What `floodgate top` was asked for.
pub struct Options {
    /// The admin listener's base URL, `http://host:port`.
    pub admin: String,
    /// Print one frame (rates over one interval) and exit.
    pub once: bool,
    /// Time between frames, and the window rates are measured over.
    pub interval: Duration,
    /// A file holding the admin bearer token; else `FLOODGATE_ADMIN_TOKEN`.
    pub token_file: Option<PathBuf>,
}

/// Why `floodgate top` stopped.
#[derive(Debug, thiserror::Error)]
pub enum TopError {
    /// The admin URL is not `http://host:port`.
    #[error("--admin {0:?}: expected a URL like http://127.0.0.1:9901")]
    BadUrl(String),
    /// The token file could not be read.
    #[error("--token-file {0}: {1}")]
    TokenFile(String, std::io::Error),
    /// The admin API did not answer, or answered with an error.
    #[error("{0}")]
    Admin(String),
}

/// Runs the view until Ctrl-C (or for one frame with `--once`).
pub async fn run(opts: Options) -> Result<(), TopError> {
    let admin = Admin::new(&opts)?;
    let color = std::io::stdout().is_terminal() && !opts.once;
    let mut prev = admin.scrape().await?;
    if !opts.once {
        // Start from a clear screen; each frame then redraws in place.
        print!("\x1b[2J\x1b[H");
        let _ = std::io::stdout().flush();
    }
    loop {
        tokio::select! {
            _ = tokio::time::sleep(opts.interval) => {}
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
        let frame = match admin.scrape().await {
            Ok(now) => {
                let rooms = admin.rooms(&now).await;
                let text = render(&admin.base, &prev, &now, &rooms, color);
                prev = now;
                text
            }
            Err(e) if !opts.once => format!("{}\n\n  {e}\n", admin.base),
            Err(e) => return Err(e),
        };
        let mut out = std::io::stdout().lock();
        if opts.once {
            let _ = out.write_all(frame.as_bytes());
            return Ok(());
        }
        // Home, draw, clear what the previous, longer frame left below.
        let _ = write!(out, "\x1b[H{}\x1b[J", frame.replace('\n', "\x1b[K\n"));
        let _ = out.flush();
    }
}

// === The admin API ===

struct Admin {
    base: String,
    token: Option<String>,
    client: Client<HttpConnector, Full<Bytes>>,
}

impl Admin {
    fn new(opts: &Options) -> Result<Self, TopError> {
        let base = opts.admin.trim_end_matches('/').to_string();
        let ok = base
            .strip_prefix("http://")
            .is_some_and(|a| !a.is_empty() && !a.contains('/'));
        if !ok {
            return Err(TopError::BadUrl(opts.admin.clone()));
        }
        let token = match &opts.token_file {
            Some(p) => Some(
                std::fs::read_to_string(p)
                    .map_err(|e| TopError::TokenFile(p.display().to_string(), e))?,
            ),
            None => std::env::var("FLOODGATE_ADMIN_TOKEN").ok(),
        }
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty());
        let client = Client::builder(TokioExecutor::new()).build_http();
        Ok(Admin {
            base,
            token,
            client,
        })
    }

    async fn get(&self, path: &str) -> Result<Bytes, TopError> {
        let url = format!("{}{path}", self.base);
        let mut req = http::Request::get(&url);
        if let Some(t) = &self.token {
            req = req.header(http::header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let req = req
            .body(Full::default())
            .map_err(|e| TopError::Admin(format!("{url}: {e}")))?;
        let fetch = async {
            let resp = self
                .client
                .request(req)
                .await
                .map_err(|e| format!("{url}: {e}"))?;
            let status = resp.status();
            let body = http_body_util::Limited::new(resp.into_body(), MAX_ANSWER)
                .collect()
                .await
                .map_err(|e| format!("{url}: {e}"))?
                .to_bytes();
            if !status.is_success() {
                return Err(format!("{url}: {status}"));
            }
            Ok(body)
        };
        match tokio::time::timeout(REQUEST_TIMEOUT, fetch).await {
            Ok(r) => r.map_err(TopError::Admin),
            Err(_) => Err(TopError::Admin(format!(
                "{url}: no answer within {REQUEST_TIMEOUT:?}"
            ))),
        }
    }

    async fn scrape(&self) -> Result<Scrape, TopError> {
        let at = Instant::now();
        let body = self.get("/metrics").await?;
        Ok(Scrape::parse(&String::from_utf8_lossy(&body), at))
    }

    /// The live state of every room the metrics name; a room that does not answer is
    /// left out of the frame rather than failing it.
    async fn rooms(&self, scrape: &Scrape) -> Vec<serde_json::Value> {
        let mut rooms = Vec::new();
        for name in scrape.label_values("floodgate_waiting_room_waiting", "room") {
            let path = format!("/admin/waiting-rooms/{name}");
            if let Ok(body) = self.get(&path).await {
                if let Ok(v) = serde_json::from_slice(&body) {
                    rooms.push(v);
                }
            }
        }
        rooms
    }
}

// === The Prometheus text exposition ===

/// One sample line: `name{label="value",…} value`.
#[derive(Debug, Clone, PartialEq)]
struct Sample {
    name: String,
    labels: Vec<(String, String)>,
    value: f64,
}

impl Sample {
    fn label(&self, key: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    fn matches(&self, filter: &[(&str, &str)]) -> bool {
        filter.iter().all(|(k, v)| self.label(k) == Some(*v))
    }
}

/// One scrape of `/metrics`, and when it was taken.
#[derive(Debug)]
struct Scrape {
    samples: Vec<Sample>,
    at: Instant,
}

impl Scrape {
    fn parse(text: &str, at: Instant) -> Scrape {
        Scrape {
            samples: text.lines().filter_map(parse_line).collect(),
            at,
        }
    }

    /// The sum of every sample of `name` whose labels include `filter`.
    fn sum(&self, name: &str, filter: &[(&str, &str)]) -> f64 {
        self.of(name, filter).map(|s| s.value).sum()
    }

    fn of<'a>(
        &'a self,
        name: &'a str,
        filter: &'a [(&'a str, &'a str)],
    ) -> impl Iterator<Item = &'a Sample> + 'a {
        self.samples
            .iter()
            .filter(move |s| s.name == name && s.matches(filter))
    }

    /// The distinct values of `label` on samples of `name`, sorted.
    fn label_values(&self, name: &str, label: &str) -> Vec<String> {
        let mut v: Vec<String> = self
            .of(name, &[])
            .filter_map(|s| s.label(label).map(str::to_string))
            .collect();
        v.sort();
        v.dedup();
        v
    }

    /// Cumulative bucket counts of histogram `name` (summed over other labels), by `le`.
    fn buckets(&self, name: &str, filter: &[(&str, &str)]) -> Vec<(f64, f64)> {
        let bucket = format!("{name}_bucket");
        let mut by_le: BTreeMap<u64, (f64, f64)> = BTreeMap::new();
        for s in self.of(&bucket, filter) {
            let Some(le) = s.label("le").and_then(parse_value) else {
                continue;
            };
            // Ordered by the float's bits: every `le` here is non-negative.
            by_le.entry(le.to_bits()).or_insert((le, 0.0)).1 += s.value;
        }
        by_le.into_values().collect()
    }
}

/// Parses one exposition line; comments, blanks and malformed lines are `None`.
fn parse_line(line: &str) -> Option<Sample> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let name_end = line.find(['{', ' '])?;
    let name = line[..name_end].to_string();
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(inner) = rest.strip_prefix('{') {
        let (parsed, after) = parse_labels(inner)?;
        labels = parsed;
        rest = after;
    }
    let value = parse_value(rest.split_whitespace().next()?)?;
    Some(Sample {
        name,
        labels,
        value,
    })
}

/// `key="value",…}` → the pairs and what follows the `}`.
fn parse_labels(mut s: &str) -> Option<(Vec<(String, String)>, &str)> {
    let mut labels = Vec::new();
    loop {
        s = s.trim_start_matches([',', ' ']);
        if let Some(after) = s.strip_prefix('}') {
            return Some((labels, after));
        }
        let (key, after_key) = s.split_once("=\"")?;
        let mut value = String::new();
        let mut chars = after_key.char_indices();
        let end = loop {
            match chars.next()? {
                (i, '"') => break i,
                (_, '\\') => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    c => value.push(c),
                },
                (_, c) => value.push(c),
            }
        };
        labels.push((key.trim().to_string(), value));
        s = &after_key[end + 1..];
    }
}

fn parse_value(s: &str) -> Option<f64> {
    match s {
        "+Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        _ => s.parse().ok(),
    }
}

/// The `q` quantile of the observations between two cumulative bucket sets, by linear
/// interpolation within the bucket, as Prometheus's `histogram_quantile` does. `None`
/// when nothing was observed in between.
fn quantile(q: f64, prev: &[(f64, f64)], now: &[(f64, f64)]) -> Option<f64> {
    let delta: Vec<(f64, f64)> = now
        .iter()
        .map(|&(le, c)| {
            let before = prev.iter().find(|(l, _)| *l == le).map_or(0.0, |(_, c)| *c);
            (le, (c - before).max(0.0))
        })
        .collect();
    let total = delta.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let (mut lower, mut below) = (0.0, 0.0);
    for &(le, count) in &delta {
        if count >= rank {
            if le.is_infinite() {
                return Some(lower);
            }
            let inside = count - below;
            let frac = if inside > 0.0 {
                (rank - below) / inside
            } else {
                1.0
            };
            return Some(lower + (le - lower) * frac);
        }
        (lower, below) = (le, count);
    }
    Some(lower)
}

// === The frame ===

/// Rates and figures between two scrapes.
struct Window<'a> {
    prev: &'a Scrape,
    now: &'a Scrape,
    seconds: f64,
}

impl Window<'_> {
    /// Per-second increase of counter `name` under `filter`.
    fn rate(&self, name: &str, filter: &[(&str, &str)]) -> f64 {
        let d = self.now.sum(name, filter) - self.prev.sum(name, filter);
        // A restarted gateway's counters start again from 0: show the new count.
        let d = if d < 0.0 {
            self.now.sum(name, filter)
        } else {
            d
        };
        d / self.seconds.max(1e-3)
    }

    /// Lookups served without the origin (hit, stale, coalesced) over those that could
    /// have been (bypass left out), as the dashboard computes it.
    fn cache_hit_ratio(&self, route: &str) -> Option<f64> {
        let lookups = "floodgate_cache_lookups_total";
        let of = |result: &str| self.rate(lookups, &[("route", route), ("result", result)]);
        let hits = of("hit") + of("stale") + of("coalesced");
        let cacheable = self.rate(lookups, &[("route", route)]) - of("bypass");
        (cacheable > 0.0).then(|| hits / cacheable)
    }

    fn quantile(&self, q: f64, histogram: &str, filter: &[(&str, &str)]) -> Option<f64> {
        quantile(
            q,
            &self.prev.buckets(histogram, filter),
            &self.now.buckets(histogram, filter),
        )
    }
}

/// The whole frame as text. `color` adds ANSI colors to figures that need attention.
fn render(
    admin: &str,
    prev: &Scrape,
    now: &Scrape,
    rooms: &[serde_json::Value],
    color: bool,
) -> String {
    let w = Window {
        prev,
        now,
        seconds: now.at.duration_since(prev.at).as_secs_f64(),
    };
    let paint = Paint(color);
    let mut out = String::new();
    header(&mut out, admin, now, &paint);
    routes(&mut out, &w, &paint);
    upstreams(&mut out, &w, &paint);
    waiting_rooms(&mut out, &w, rooms, &paint);
    certificates(&mut out, now, &paint);
    out
}

/// ANSI colors, or none when the output is not a terminal.
struct Paint(bool);

impl Paint {
    fn bold(&self, s: &str) -> String {
        self.wrap("1", s)
    }
    fn red_if(&self, bad: bool, s: &str) -> String {
        if bad {
            self.wrap("31;1", s)
        } else {
            s.to_string()
        }
    }
    fn yellow_if(&self, bad: bool, s: &str) -> String {
        if bad {
            self.wrap("33;1", s)
        } else {
            s.to_string()
        }
    }
    fn wrap(&self, code: &str, s: &str) -> String {
        if self.0 {
            format!("\x1b[{code}m{s}\x1b[0m")
        } else {
            s.to_string()
        }
    }
}

fn header(out: &mut String, admin: &str, now: &Scrape, paint: &Paint) {
    let backends: Vec<String> = now
        .of("floodgate_state_backend_up", &[])
        .map(|s| {
            let name = s.label("backend").unwrap_or("?");
            let up = s.value >= 1.0;
            paint.red_if(!up, &format!("{name} {}", if up { "up" } else { "DOWN" }))
        })
        .collect();
    let _ = writeln!(
        out,
        "{}  {}  {} UTC   state backend: {}   connections open: {}",
        paint.bold("floodgate top"),
        admin,
        clock(),
        if backends.is_empty() {
            "-".to_string()
        } else {
            backends.join(", ")
        },
        now.sum("floodgate_connections_open", &[]),
    );
}

fn clock() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    format!(
        "{:02}:{:02}:{:02}",
        secs / 3600 % 24,
        secs / 60 % 60,
        secs % 60
    )
}

fn routes(out: &mut String, w: &Window, paint: &Paint) {
    let _ = writeln!(
        out,
        "\n{}",
        paint.bold(&format!(
            "{:<20} {:>9} {:>8} {:>8} {:>8} {:>8} {:>8} {:>9} {:>9} {:>7} {:>9}",
            "ROUTE",
            "req/s",
            "2xx/s",
            "3xx/s",
            "4xx/s",
            "5xx/s",
            "total",
            "p50",
            "p99",
            "hit %",
            "limited/s"
        ))
    );
    for route in w.now.label_values("floodgate_requests_total", "route") {
        let r = [("route", route.as_str())];
        let class = |c: &str| {
            w.rate(
                "floodgate_requests_total",
                &[("route", &route), ("status_class", c)],
            )
        };
        let p = |q| w.quantile(q, "floodgate_request_duration_seconds", &r);
        let hit = w
            .cache_hit_ratio(&route)
            .map_or("-".into(), |h| format!("{:.0}", 100.0 * h));
        let five = class("5xx");
        let _ = writeln!(
            out,
            "{:<20} {:>9.1} {:>8.1} {:>8.1} {:>8.1} {} {:>8} {:>9} {:>9} {:>7} {:>9.1}",
            route,
            w.rate("floodgate_requests_total", &r),
            class("2xx"),
            class("3xx"),
            class("4xx"),
            paint.red_if(five > 0.0, &format!("{five:>8.1}")),
            w.now.sum("floodgate_requests_total", &r),
            duration(p(0.5)),
            duration(p(0.99)),
            hit,
            w.rate("floodgate_rate_limited_total", &r),
        );
    }
}

fn upstreams(out: &mut String, w: &Window, paint: &Paint) {
    let _ = writeln!(
        out,
        "\n{}",
        paint.bold(&format!(
            "{:<20} {:>13} {:>7} {:>10} {:>9} {:>9} {:>8} {:>8}  {}",
            "UPSTREAM",
            "in flight/max",
            "queued",
            "overloaded",
            "wait p99",
            "shed/s",
            "errors/s",
            "healthy",
            "shed by reason"
        ))
    );
    for up in w
        .now
        .label_values("floodgate_upstream_requests_total", "upstream")
    {
        let u = [("upstream", up.as_str())];
        let in_flight = w.now.sum("floodgate_upstream_in_flight", &u);
        let limit = w.now.sum("floodgate_concurrency_limit", &u);
        let queued = w.now.sum("floodgate_queue_depth", &u);
        let overloaded = w.now.sum("floodgate_queue_overloaded", &u) >= 1.0;
        let reasons: Vec<String> = w
            .now
            .label_values("floodgate_shed_total", "reason")
            .into_iter()
            .filter_map(|reason| {
                let r = w.rate(
                    "floodgate_shed_total",
                    &[("upstream", &up), ("reason", &reason)],
                );
                (r > 0.0).then(|| format!("{reason} {r:.1}"))
            })
            .collect();
        let shed = w.rate("floodgate_shed_total", &u);
        let healthy = w.now.sum("floodgate_upstream_server_healthy", &u);
        let servers = w.now.of("floodgate_upstream_server_healthy", &u).count();
        let at_limit = limit > 0.0 && in_flight >= limit;
        let _ = writeln!(
            out,
            "{:<20} {} {:>7} {} {:>9} {} {:>8.1} {}  {}",
            up,
            paint.yellow_if(at_limit, &format!("{:>13}", format!("{in_flight}/{limit}"))),
            queued,
            paint.yellow_if(
                overloaded,
                &format!("{:>10}", if overloaded { "yes" } else { "no" })
            ),
            duration(w.quantile(0.99, "floodgate_queue_wait_seconds", &u)),
            paint.red_if(shed > 0.0, &format!("{shed:>9.1}")),
            w.rate("floodgate_upstream_errors_total", &u),
            paint.red_if(
                (healthy as usize) < servers,
                &format!("{:>8}", format!("{healthy}/{servers}"))
            ),
            reasons.join(", "),
        );
    }
}

fn waiting_rooms(out: &mut String, w: &Window, rooms: &[serde_json::Value], paint: &Paint) {
    if rooms.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "\n{}",
        paint.bold(&format!(
            "{:<20} {:>9} {:>13} {:>16} {:>15} {:>8}",
            "WAITING ROOM", "waiting", "active/max", "admitted/min", "expected wait", "state"
        ))
    );
    for room in rooms {
        let name = room["name"].as_str().unwrap_or("?");
        let admitted = 60.0 * w.rate("floodgate_waiting_room_admitted_total", &[("room", name)]);
        let limit = room["new_users_per_minute"].as_u64().unwrap_or(0);
        let waiting = room["waiting"].as_u64().unwrap_or(0);
        let (low, high) = (
            room["expected_wait_seconds"]["low"].as_f64().unwrap_or(0.0),
            room["expected_wait_seconds"]["high"]
                .as_f64()
                .unwrap_or(0.0),
        );
        let paused = room["paused"].as_bool().unwrap_or(false);
        let state = if paused {
            "PAUSED"
        } else if room["open"].as_bool().unwrap_or(true) {
            room["mode"].as_str().unwrap_or("open")
        } else {
            "pre-queue"
        };
        let stalled = waiting > 0 && admitted == 0.0;
        let _ = writeln!(
            out,
            "{:<20} {:>9} {:>13} {} {:>15} {}",
            name,
            waiting,
            format!(
                "{}/{}",
                room["active"].as_u64().unwrap_or(0),
                room["active_users"].as_u64().unwrap_or(0)
            ),
            paint.yellow_if(
                stalled,
                &format!("{:>16}", format!("{admitted:.0} ({limit})"))
            ),
            format!("{}-{}", seconds(low), seconds(high)),
            paint.yellow_if(paused, &format!("{state:>8}")),
        );
    }
}

fn certificates(out: &mut String, now: &Scrape, paint: &Paint) {
    let certs: Vec<&Sample> = now
        .of("floodgate_certificate_expiry_seconds", &[])
        .collect();
    if certs.is_empty() {
        return;
    }
    let unix_now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    let _ = writeln!(out, "\n{}", paint.bold("CERTIFICATE          expires in"));
    for c in certs {
        let left = c.value - unix_now;
        let _ = writeln!(
            out,
            "{:<20} {}",
            c.label("certificate").unwrap_or("?"),
            paint.red_if(left < 14.0 * 86400.0, &seconds(left)),
        );
    }
}

/// A latency for a narrow column: `850µs`, `12.3ms`, `1.25s`, or `-` when unknown.
fn duration(s: Option<f64>) -> String {
    match s {
        None => "-".into(),
        Some(s) if s < 0.001 => format!("{:.0}µs", s * 1e6),
        Some(s) if s < 1.0 => format!("{:.1}ms", s * 1e3),
        Some(s) => format!("{s:.2}s"),
    }
}

/// A wait or a time left: `45s`, `12m`, `3h`, `20d`.
fn seconds(s: f64) -> String {
    let s = s.max(0.0);
    match s {
        s if s < 120.0 => format!("{s:.0}s"),
        s if s < 7200.0 => format!("{:.0}m", s / 60.0),
        s if s < 172_800.0 => format!("{:.0}h", s / 3600.0),
        s => format!("{:.0}d", s / 86400.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_exposition_line_with_escaped_labels_parses() {
        let s = parse_line(r#"floodgate_x_total{route="a \"b\"",le="+Inf"} 12"#).unwrap();
        assert_eq!(s.name, "floodgate_x_total");
        assert_eq!(s.label("route"), Some(r#"a "b""#));
        assert_eq!(s.label("le"), Some("+Inf"));
        assert_eq!(s.value, 12.0);
        assert_eq!(parse_line("floodgate_up 1").unwrap().value, 1.0);
        assert!(parse_line("# TYPE floodgate_up gauge").is_none());
    }

    #[test]
    fn the_quantile_interpolates_inside_the_bucket_like_prometheus() {
        // 100 observations in the window: 50 under 10 ms, 40 in 10–100 ms, 10 above.
        let prev = [(0.01, 10.0), (0.1, 10.0), (f64::INFINITY, 10.0)];
        let now = [(0.01, 60.0), (0.1, 100.0), (f64::INFINITY, 110.0)];
        assert_eq!(quantile(0.5, &prev, &now), Some(0.01));
        let p70 = quantile(0.7, &prev, &now).unwrap();
        assert!((p70 - 0.055).abs() < 1e-9, "{p70}");
        assert_eq!(quantile(0.99, &prev, &now), Some(0.1), "the +Inf bucket");
        assert_eq!(quantile(0.5, &now, &now), None, "nothing observed");
    }
}
