//! Scenario files (TOML): what load to offer, to what, for how long.
//!
//! Two layers, as in the gateway's config: raw serde structs that refuse unknown
//! keys, then [`Scenario::compile`] which builds typed values and collects every
//! error with its key path, so one run of `check` lists all mistakes at once.

use crate::mix::{EntryKind, Mix, MixEntry, PathTemplate, RequestSpec, ShopperSpec};
use crate::schedule::{Phase, Schedule};
use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Per-request timeout when the scenario does not set one: long enough that a
/// queueing gateway (2 s queue timeout) answers before we give up on it.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// Outstanding requests allowed before scheduled ones are dropped and reported.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 10_000;
/// Connections to the target at most: below the 20,000 open files of our
/// machines with room for the gateway and shop that may share them.
pub const DEFAULT_MAX_CONNECTIONS: usize = 2_000;
/// Cookie jars shared by the `cookies = true` requests of an open-model run.
pub const DEFAULT_SESSIONS: usize = 1_000;
/// Ceiling on any run, so that a typo in a duration cannot load a box for hours.
pub const MAX_RUN: Duration = Duration::from_secs(3_600);
/// Ceiling on requests per run, for the same reason.
pub const MAX_REQUESTS: u64 = 50_000_000;

/// The raw scenario as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawScenario {
    name: Option<String>,
    description: Option<String>,
    model: Option<String>,
    target: String,
    gateway_config: Option<String>,
    metrics_url: Option<String>,
    shop_listen: Option<String>,
    timeout: Option<String>,
    max_in_flight: Option<usize>,
    max_connections: Option<usize>,
    max_requests: Option<u64>,
    max_duration: Option<String>,
    sustained_after: Option<String>,
    seed: Option<u64>,
    sessions: Option<usize>,
    shop: Option<RawShop>,
    #[serde(default)]
    phases: Vec<RawPhase>,
    closed: Option<RawClosed>,
    #[serde(default)]
    mix: Vec<RawMixEntry>,
    #[serde(default)]
    compare: Vec<RawPeer>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawShop {
    capacity: Option<u32>,
    latency: Option<String>,
    collapse: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPhase {
    rate: Option<f64>,
    ramp_to: Option<f64>,
    duration: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawClosed {
    users: usize,
    duration: String,
    think_time: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMixEntry {
    name: Option<String>,
    kind: Option<String>,
    weight: Option<u32>,
    method: Option<String>,
    path: String,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    body: Option<String>,
    cookies: Option<bool>,
    #[serde(default)]
    browse: Vec<String>,
    checkout: Option<String>,
    think_time: Option<String>,
    max_session: Option<String>,
    poll_interval: Option<String>,
    max_poll_interval: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPeer {
    name: String,
    url: String,
    metrics_url: Option<String>,
}

/// The simulated shop's capacity profile (arguments of `floodgate shop`).
#[derive(Debug, Clone, PartialEq)]
pub struct ShopProfile {
    /// Requests the shop serves at once.
    pub capacity: u32,
    /// Service time of one request.
    pub latency: Duration,
    /// In-flight requests past which the shop fails (origin-side 5xx).
    pub collapse: u32,
}

impl ShopProfile {
    /// Requests per second the shop can serve: capacity / latency.
    pub fn throughput(&self) -> f64 {
        f64::from(self.capacity) / self.latency.as_secs_f64().max(1e-6)
    }
}

/// Where the load goes.
#[derive(Debug, Clone, PartialEq)]
pub enum TargetSpec {
    /// A running gateway, shop or peer.
    Url(String),
    /// Start `floodgate shop` and `floodgate run` for this run.
    Spawn {
        /// Gateway config template with `{shop_addr}`, `{listen}`, `{admin_listen}`;
        /// without one only the shop is started (target `direct`).
        gateway_config: Option<PathBuf>,
        /// The shop to start.
        shop: ShopProfile,
        /// Fixed shop address, for peers whose configs must name it.
        shop_listen: Option<String>,
    },
}

/// How load is offered.
#[derive(Debug, Clone)]
pub enum LoadModel {
    /// Arrivals on a fixed schedule, whatever the responses.
    Open(Schedule),
    /// N users, each sending its next request when the previous one ends.
    Closed {
        /// Concurrent users.
        users: usize,
        /// How long they loop.
        duration: Duration,
        /// Pause between a response and the next request.
        think_time: Duration,
    },
}

impl LoadModel {
    /// Planned length of the load.
    pub fn duration(&self) -> Duration {
        match self {
            LoadModel::Open(s) => s.duration(),
            LoadModel::Closed { duration, .. } => *duration,
        }
    }

    /// "open" or "closed".
    pub fn as_str(&self) -> &'static str {
        match self {
            LoadModel::Open(_) => "open",
            LoadModel::Closed { .. } => "closed",
        }
    }
}

/// Another target for comparison runs.
#[derive(Debug, Clone, PartialEq)]
pub struct Peer {
    /// Column name.
    pub name: String,
    /// Base URL.
    pub url: String,
    /// Its Prometheus endpoint, if any.
    pub metrics_url: Option<String>,
}

/// A compiled, validated scenario.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// Name shown in reports.
    pub name: String,
    /// Free text.
    pub description: String,
    /// Where the load goes.
    pub target: TargetSpec,
    /// Gateway metrics endpoint for URL targets.
    pub metrics_url: Option<String>,
    /// Open or closed model.
    pub model: LoadModel,
    /// Per-request timeout.
    pub timeout: Duration,
    /// Cap on outstanding requests (open model).
    pub max_in_flight: usize,
    /// Cap on connections to the target.
    pub max_connections: usize,
    /// Hard cap on requests sent.
    pub max_requests: u64,
    /// Hard stop, drain included.
    pub max_duration: Duration,
    /// Requests scheduled this long after the start also count in a second set of
    /// latencies, the sustained load without its onset.
    pub sustained_after: Option<Duration>,
    /// Seed of the random choices, so two targets see the same sequence.
    pub seed: u64,
    /// Shared cookie jars for `cookies = true` entries.
    pub sessions: usize,
    /// The request mix.
    pub mix: Mix,
    /// Extra targets for `compare`.
    pub peers: Vec<Peer>,
}

/// Every problem found in a scenario file.
#[derive(Debug, thiserror::Error)]
#[error("{}", .errors.iter().map(|e| format!("{}: {e}", .file)).collect::<Vec<_>>().join("\n"))]
pub struct ScenarioError {
    /// The file (or "<inline>").
    pub file: String,
    /// One line per problem, each naming its key.
    pub errors: Vec<String>,
}

fn duration(errs: &mut Vec<String>, key: &str, s: &str) -> Duration {
    match humantime::parse_duration(s) {
        Ok(d) => d,
        Err(e) => {
            errs.push(format!(
                "{key}: {s:?} is not a duration ({e}); write e.g. \"250ms\", \"10s\""
            ));
            Duration::ZERO
        }
    }
}

fn opt_duration(
    errs: &mut Vec<String>,
    key: &str,
    s: &Option<String>,
    default: Duration,
) -> Duration {
    s.as_deref().map_or(default, |s| duration(errs, key, s))
}

fn headers(
    errs: &mut Vec<String>,
    key: &str,
    h: &BTreeMap<String, String>,
) -> Vec<(HeaderName, HeaderValue)> {
    let mut out = Vec::new();
    for (k, v) in h {
        match (
            HeaderName::from_bytes(k.as_bytes()),
            HeaderValue::from_str(v),
        ) {
            (Ok(n), Ok(v)) => out.push((n, v)),
            _ => errs.push(format!("{key}.{k}: not a valid header name/value")),
        }
    }
    out
}

fn template(errs: &mut Vec<String>, key: &str, s: &str) -> PathTemplate {
    PathTemplate::parse(s).unwrap_or_else(|e| {
        errs.push(format!("{key}: {e}"));
        PathTemplate::parse("/").expect("literal path")
    })
}

impl Scenario {
    /// Reads and compiles a scenario file; relative paths in it are resolved from its folder.
    pub fn load(path: &Path) -> Result<Scenario, ScenarioError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ScenarioError {
            file: file.clone(),
            errors: vec![format!("cannot read: {e}")],
        })?;
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        Scenario::parse(&text, &file, &base)
    }

    /// Compiles scenario text; `file` names it in errors, `base` resolves relative paths.
    pub fn parse(text: &str, file: &str, base: &Path) -> Result<Scenario, ScenarioError> {
        let raw: RawScenario = toml::from_str(text).map_err(|e| ScenarioError {
            file: file.to_string(),
            errors: vec![e.to_string().trim().to_string()],
        })?;
        let mut errs = Vec::new();
        let s = Scenario::compile(raw, base, &mut errs);
        if errs.is_empty() {
            Ok(s)
        } else {
            Err(ScenarioError {
                file: file.to_string(),
                errors: errs,
            })
        }
    }

    fn compile(raw: RawScenario, base: &Path, errs: &mut Vec<String>) -> Scenario {
        let name = raw.name.clone().unwrap_or_else(|| "scenario".into());
        let shop = raw.shop.as_ref().map(|s| ShopProfile {
            capacity: s.capacity.unwrap_or(50),
            latency: opt_duration(errs, "shop.latency", &s.latency, Duration::from_millis(20)),
            collapse: s.collapse.unwrap_or(200),
        });
        if let Some(s) = &shop {
            if s.capacity == 0 || s.latency.is_zero() {
                errs.push("shop: capacity and latency must be above zero".into());
            }
        }
        let target = if raw.target == "spawn" {
            let gateway_config = raw.gateway_config.as_ref().map(|p| base.join(p));
            TargetSpec::Spawn {
                gateway_config,
                shop: shop.unwrap_or(ShopProfile {
                    capacity: 50,
                    latency: Duration::from_millis(20),
                    collapse: 200,
                }),
                shop_listen: raw.shop_listen.clone(),
            }
        } else {
            if !raw.target.starts_with("http://") {
                errs.push(format!(
                    "target: {:?} must be \"spawn\" or an http:// URL",
                    raw.target
                ));
            }
            if raw.gateway_config.is_some() || raw.shop.is_some() || raw.shop_listen.is_some() {
                errs.push(
                    "gateway_config, shop, shop_listen: only meaningful with target = \"spawn\""
                        .into(),
                );
            }
            TargetSpec::Url(raw.target.clone())
        };

        let timeout = opt_duration(errs, "timeout", &raw.timeout, DEFAULT_TIMEOUT);
        if timeout.is_zero() {
            errs.push("timeout: must be above zero".into());
        }

        let model = match raw.model.as_deref().unwrap_or("open") {
            "open" => {
                if raw.closed.is_some() {
                    errs.push("closed: only meaningful with model = \"closed\"".into());
                }
                if raw.phases.is_empty() {
                    errs.push("phases: an open-model scenario needs at least one phase".into());
                }
                let mut phases = Vec::new();
                let mut prev = 0.0;
                for (i, p) in raw.phases.iter().enumerate() {
                    let key = format!("phases[{i}]");
                    let d = duration(errs, &format!("{key}.duration"), &p.duration);
                    let (from, to) = match (p.rate, p.ramp_to) {
                        (Some(r), None) => (r, r),
                        (None, Some(r)) => (prev, r),
                        _ => {
                            errs.push(format!("{key}: give exactly one of `rate` (hold) or `ramp_to` (linear from the previous rate)"));
                            (0.0, 0.0)
                        }
                    };
                    if !(from.is_finite() && to.is_finite()) || from < 0.0 || to < 0.0 {
                        errs.push(format!("{key}: rates must be finite and non-negative"));
                    }
                    prev = to;
                    phases.push(Phase {
                        from,
                        to,
                        duration: d,
                    });
                }
                LoadModel::Open(Schedule::new(&phases))
            }
            "closed" => {
                if !raw.phases.is_empty() {
                    errs.push("phases: only meaningful with model = \"open\"".into());
                }
                match &raw.closed {
                    Some(c) => {
                        if c.users == 0 {
                            errs.push("closed.users: must be at least 1".into());
                        }
                        LoadModel::Closed {
                            users: c.users,
                            duration: duration(errs, "closed.duration", &c.duration),
                            think_time: opt_duration(
                                errs,
                                "closed.think_time",
                                &c.think_time,
                                Duration::ZERO,
                            ),
                        }
                    }
                    None => {
                        errs.push(
                            "closed: model = \"closed\" needs a [closed] table (users, duration)"
                                .into(),
                        );
                        LoadModel::Closed {
                            users: 1,
                            duration: Duration::ZERO,
                            think_time: Duration::ZERO,
                        }
                    }
                }
            }
            other => {
                errs.push(format!(
                    "model: {other:?} is neither \"open\" nor \"closed\""
                ));
                LoadModel::Open(Schedule::new(&[]))
            }
        };
        if model.duration() > MAX_RUN {
            errs.push(format!(
                "phases: the run lasts {}, over the {} ceiling",
                humantime::format_duration(model.duration()),
                humantime::format_duration(MAX_RUN)
            ));
        }

        let max_duration = opt_duration(
            errs,
            "max_duration",
            &raw.max_duration,
            model.duration() + timeout + Duration::from_secs(2),
        );
        if max_duration > MAX_RUN + timeout + Duration::from_secs(2) {
            errs.push("max_duration: over the one-hour ceiling".into());
        }
        let max_requests = raw.max_requests.unwrap_or(MAX_REQUESTS);
        if max_requests > MAX_REQUESTS {
            errs.push(format!("max_requests: over the {MAX_REQUESTS} ceiling"));
        }

        if raw.mix.is_empty() {
            errs.push("mix: at least one [[mix]] entry is needed".into());
        }
        let mut entries = Vec::new();
        for (i, m) in raw.mix.iter().enumerate() {
            let key = format!("mix[{i}]");
            let h = headers(errs, &format!("{key}.headers"), &m.headers);
            let body = Bytes::from(m.body.clone().unwrap_or_default());
            let kind = match m.kind.as_deref().unwrap_or("request") {
                "request" => {
                    if !m.browse.is_empty() || m.checkout.is_some() || m.max_session.is_some() {
                        errs.push(format!(
                            "{key}: browse/checkout/max_session are for kind = \"shopper\""
                        ));
                    }
                    let method =
                        Method::from_bytes(m.method.as_deref().unwrap_or("GET").as_bytes())
                            .unwrap_or_else(|_| {
                                errs.push(format!("{key}.method: not an HTTP method"));
                                Method::GET
                            });
                    EntryKind::Request(RequestSpec {
                        method,
                        path: template(errs, &format!("{key}.path"), &m.path),
                        headers: h,
                        body,
                        cookies: m.cookies.unwrap_or(false),
                    })
                }
                "shopper" => {
                    if m.method.is_some() || m.cookies.is_some() {
                        errs.push(format!("{key}: a shopper always GETs with its own cookies; drop method/cookies"));
                    }
                    let max_session = opt_duration(
                        errs,
                        &format!("{key}.max_session"),
                        &m.max_session,
                        Duration::from_secs(30),
                    );
                    if max_session > MAX_RUN {
                        errs.push(format!("{key}.max_session: over the one-hour ceiling"));
                    }
                    EntryKind::Shopper(ShopperSpec {
                        entry: template(errs, &format!("{key}.path"), &m.path),
                        browse: m
                            .browse
                            .iter()
                            .enumerate()
                            .map(|(j, p)| template(errs, &format!("{key}.browse[{j}]"), p))
                            .collect(),
                        checkout: m
                            .checkout
                            .as_deref()
                            .map(|p| template(errs, &format!("{key}.checkout"), p)),
                        body,
                        headers: h,
                        think_time: opt_duration(
                            errs,
                            &format!("{key}.think_time"),
                            &m.think_time,
                            Duration::from_millis(500),
                        ),
                        max_session,
                        poll_interval: opt_duration(
                            errs,
                            &format!("{key}.poll_interval"),
                            &m.poll_interval,
                            Duration::from_secs(2),
                        ),
                        max_poll_interval: opt_duration(
                            errs,
                            &format!("{key}.max_poll_interval"),
                            &m.max_poll_interval,
                            Duration::from_secs(10),
                        ),
                    })
                }
                other => {
                    errs.push(format!(
                        "{key}.kind: {other:?} is neither \"request\" nor \"shopper\""
                    ));
                    continue;
                }
            };
            let name = m.name.clone().unwrap_or_else(|| match &kind {
                EntryKind::Request(r) => format!("{} {}", r.method, r.path.as_str()),
                EntryKind::Shopper(s) => format!("shopper {}", s.entry.as_str()),
            });
            entries.push(MixEntry {
                name,
                weight: m.weight.unwrap_or(1),
                kind,
            });
        }
        if !raw.mix.is_empty() && entries.iter().all(|e| e.weight == 0) {
            errs.push("mix: every weight is zero".into());
        }

        let sustained_after = raw
            .sustained_after
            .as_deref()
            .map(|s| duration(errs, "sustained_after", s));
        let max_in_flight = raw.max_in_flight.unwrap_or(DEFAULT_MAX_IN_FLIGHT);
        let max_connections = raw.max_connections.unwrap_or(DEFAULT_MAX_CONNECTIONS);
        if max_in_flight == 0 || max_connections == 0 {
            errs.push("max_in_flight, max_connections: must be at least 1".into());
        }
        let peers = raw
            .compare
            .iter()
            .map(|p| Peer {
                name: p.name.clone(),
                url: p.url.clone(),
                metrics_url: p.metrics_url.clone(),
            })
            .collect();

        Scenario {
            name,
            description: raw.description.unwrap_or_default(),
            target,
            metrics_url: raw.metrics_url,
            model,
            timeout,
            max_in_flight,
            max_connections,
            max_requests,
            max_duration,
            sustained_after,
            seed: raw.seed.unwrap_or(0x5EED),
            sessions: raw.sessions.unwrap_or(DEFAULT_SESSIONS).max(1),
            mix: Mix::new(entries),
            peers,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_is_reported_with_its_key() {
        let text = r#"
            target = "spawn"
            timeout = "soon"
            phases = [{ rate = 10, ramp_to = 20, duration = "1s" }]
            [[mix]]
            path = "products"
        "#;
        let err = Scenario::parse(text, "x.toml", Path::new(".")).unwrap_err();
        let all = err.to_string();
        assert!(all.contains("timeout"), "{all}");
        assert!(all.contains("phases[0]"), "{all}");
        assert!(all.contains("mix[0].path"), "{all}");
    }

    #[test]
    fn unknown_keys_are_refused() {
        let text = "target = \"http://127.0.0.1:1\"\nrats = 3\n";
        assert!(Scenario::parse(text, "x", Path::new(".")).is_err());
    }
}
