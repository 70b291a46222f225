//! Configuration: read once, validated whole, compiled into typed values.
//!
//! Two layers, as in linkerd2-proxy: [`raw`] mirrors the TOML file (unknown keys are
//! errors), and [`compile`] turns it into [`Config`], collecting *every* problem with
//! its key path (`route[2].upstream: no upstream named "shp"`) before failing, so an
//! operator fixes a file in one pass. Nothing downstream ever parses a string.

pub mod admission;
pub mod buffering;
mod locate;
pub mod raw;
pub mod tls;
pub mod units;

use std::collections::HashSet;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::uri::Authority;
use ipnet::IpNet;

use raw::RawConfig;

// Defaults: each one with the reason it is what it is.

/// Long enough for a checkout in flight to finish, short enough for a rolling deploy.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(30);
/// Far above what a 2-core box serves at once, low enough that a SYN flood of idle
/// sockets cannot exhaust file descriptors (a common ulimit is 65536).
pub const DEFAULT_MAX_CONNECTIONS: usize = 20_000;
/// nginx's `client_header_timeout` is 60 s; a gateway on event day cannot afford to
/// hold a slowloris socket that long, and a real browser sends its headers in one packet.
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Below the 75 s keep-alive of nginx-based clients and load balancers in front of us,
/// above a browser's think time between two clicks.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// nginx's `large_client_header_buffers` default (4 × 8 KiB) rounded: enough for fat
/// cookie headers, small enough that a header flood is cheap to refuse.
pub const DEFAULT_MAX_HEADER_SIZE: u64 = 32 * 1024;
/// hyper's own default; above it the client gets 431.
pub const DEFAULT_MAX_HEADERS: usize = 100;
/// Shops take form posts and small JSON bodies, never uploads, on the sale path.
pub const DEFAULT_MAX_REQUEST_BODY: u64 = 10 * 1024 * 1024;
/// The HTTP/2 spec's suggested minimum; browsers open far fewer per origin.
pub const DEFAULT_H2_MAX_STREAMS: u32 = 100;
/// Connect on loopback or a LAN takes microseconds; a second means the server is gone.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// A shop page that takes longer than this has already lost the customer.
pub const DEFAULT_RESPONSE_TIMEOUT: Duration = Duration::from_secs(30);
/// Below the origin's keep-alive timeout (nginx: 75 s, Node: 5 s is common, so we stay
/// under that too), so that we close idle pooled connections before the origin does and
/// do not race its close (hyper#2136).
pub const DEFAULT_POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(4);
/// Enough idle connections to absorb a burst without reconnecting.
pub const DEFAULT_POOL_MAX_IDLE: usize = 256;
/// Requests in flight to one upstream when the config does not say.
pub const DEFAULT_MAX_CONCURRENCY: usize = 256;
/// Requests waiting for an upstream slot when the config does not say.
pub const DEFAULT_QUEUE_SIZE: usize = 1000;
/// A shopper waits a couple of seconds, not longer, before a clear "try again".
pub const DEFAULT_QUEUE_TIMEOUT: Duration = Duration::from_secs(2);

/// The validated, typed configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it came from, for reloads and error messages.
    pub source: Option<PathBuf>,
    /// Listeners and connection limits.
    pub server: ServerConfig,
    /// Log format and level.
    pub log: LogConfig,
    /// Origins by index; routes refer to them by index.
    pub upstreams: Vec<UpstreamConfig>,
    /// Routes in file order.
    pub routes: Vec<RouteConfig>,
    /// `[cache]`: the process-wide HTTP cache store.
    pub cache: crate::cache::config::CacheSettings,
    /// Waiting rooms in file order; routes refer to them by index.
    pub waiting_rooms: Vec<crate::waiting_room::RoomConfig>,
    /// `[[certificate]]` in file order; the first is served when SNI matches none.
    pub certificates: Vec<tls::CertificateConfig>,
    /// `[state]`: local, or shared with other instances through Redis.
    pub state: crate::state::config::StateConfig,
}

/// `[server]`, compiled.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Proxy listeners.
    pub listen: Vec<SocketAddr>,
    /// TLS proxy listeners (HTTP/2 or HTTP/1.1 by ALPN); empty means no TLS.
    pub tls_listen: Vec<SocketAddr>,
    /// Metrics, health and admin API.
    pub admin_listen: Option<SocketAddr>,
    /// A file holding the admin bearer token (else `FLOODGATE_ADMIN_TOKEN`).
    pub admin_token_file: Option<PathBuf>,
    /// How long in-flight requests may run after SIGTERM.
    pub shutdown_grace: Duration,
    /// Peers allowed to set the client address through X-Forwarded-For.
    pub trusted_proxies: Vec<IpNet>,
    /// Open client connections at most; past it the listener stops accepting.
    pub max_connections: usize,
    /// Serving threads, each with its own runtime and listeners (`crate::workers`).
    pub workers: usize,
    /// From accept to the end of the request headers.
    pub header_read_timeout: Duration,
    /// A keep-alive connection with no request in flight is closed after this.
    pub idle_timeout: Duration,
    /// Request line plus headers, in bytes; past it the client gets 431.
    pub max_header_size: usize,
    /// Header fields per request; past it the client gets 431.
    pub max_headers: usize,
    /// Request body bytes; past it the client gets 413.
    pub max_request_body: u64,
    /// Concurrent HTTP/2 streams per connection.
    pub http2_max_concurrent_streams: u32,
    /// The pseudonym this gateway uses in `Via`.
    pub via_name: String,
    /// Request-edge validation and normalisation (see [`crate::edge`]).
    pub edge: crate::edge::EdgeConfig,
    /// Request buffering and client deadlines.
    pub buffering: buffering::Buffering,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

/// `[log]`, compiled.
#[derive(Debug, Clone)]
pub struct LogConfig {
    /// Output format.
    pub format: LogFormat,
    /// A tracing-subscriber filter directive such as `info` or `floodgate=debug`.
    pub level: String,
    /// One event per request, on or off.
    pub access_log: bool,
    /// Where access-log events go instead of stderr; reopened on SIGUSR1.
    pub access_log_file: Option<PathBuf>,
}

/// How requests are spread over an upstream's servers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Balance {
    /// Each server in turn.
    RoundRobin,
    /// The server with the fewest requests in flight (ties: round robin).
    LeastInFlight,
}

/// How many requests may be in flight to an upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Concurrency {
    /// A fixed limit.
    Fixed(usize),
    /// A limit that follows the origin's latency.
    Auto,
}

/// `[[upstream]]`, compiled.
#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    /// Name used by routes, metrics and logs.
    pub name: String,
    /// `host:port` of each server.
    pub servers: Vec<Authority>,
    /// How servers are chosen.
    pub balance: Balance,
    /// TCP connect timeout.
    pub connect_timeout: Duration,
    /// From sending the request to receiving the response head.
    pub response_timeout: Duration,
    /// Idle pooled connections are closed after this.
    pub pool_idle_timeout: Duration,
    /// Idle pooled connections kept per server.
    pub pool_max_idle_per_server: usize,
    /// Requests in flight at most.
    pub max_concurrency: Concurrency,
    /// Requests waiting for a slot at most.
    pub queue_size: usize,
    /// Longest wait for a slot.
    pub queue_timeout: Duration,
    /// CoDel and adaptive-concurrency tuning of the admission queue.
    pub admission: admission::AdmissionTuning,
    /// Active health checks, when configured.
    pub health_check: Option<admission::HealthCheckConfig>,
    /// Passive ejection of failing servers.
    pub outlier_detection: admission::OutlierConfig,
    /// The upstream-wide circuit breaker.
    pub circuit_breaker: admission::BreakerConfig,
    /// Retries of idempotent body-less requests.
    pub retries: admission::RetryConfig,
}

/// A host a route answers for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum HostPattern {
    /// `shop.example.com`, lower-cased.
    Exact(String),
    /// `*.example.com`: any name ending in `.example.com` (stored as `example.com`).
    Wildcard(String),
}

/// `[[route]]`, compiled.
#[derive(Debug, Clone)]
pub struct RouteConfig {
    /// Name used by metrics and logs.
    pub name: String,
    /// Hosts it answers for; empty means any host.
    pub hosts: Vec<HostPattern>,
    /// Requests whose path starts with this go here (longest prefix wins).
    pub path_prefix: String,
    /// Index into [`Config::upstreams`].
    pub upstream: usize,
    /// Admission priority rules, first match wins; no match is `normal`.
    pub priority: Vec<crate::admission::PriorityRule>,
    /// The route's cache rule; `None` when the route does not cache.
    pub cache: Option<crate::cache::config::CacheRule>,
    /// `rate_limits`, `allow` and `deny`.
    pub rate_limits: crate::rate_limit::RouteRateLimits,
    /// Index into [`Config::waiting_rooms`], if the route has a room.
    pub waiting_room: Option<usize>,
    /// Whether request bodies are read whole before taking an admission slot.
    pub request_buffering: bool,
    /// Cleartext requests get a 308 to the same URL over https.
    pub https_redirect: bool,
}

/// One problem in a config file, with the key it concerns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyError {
    /// Key path such as `route[2].upstream`.
    pub key: String,
    /// What is wrong with it.
    pub message: String,
}

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

/// Why a config could not be loaded: every problem found, with the file's name.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{file}: cannot read: {source}")]
    Read {
        /// The file.
        file: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file was read but is not a valid config.
    #[error("{}", render_errors(file, errors, lines))]
    Invalid {
        /// The file (or `<inline>`).
        file: String,
        /// Every problem, in file order.
        errors: Vec<KeyError>,
        /// The line of each problem in the file, where known (same order).
        lines: Vec<Option<usize>>,
    },
}

/// One line per problem: `file:line: key: message` (`file: key: message` without a line).
fn render_errors(file: &str, errors: &[KeyError], lines: &[Option<usize>]) -> String {
    let out: Vec<String> = errors
        .iter()
        .enumerate()
        .map(|(i, e)| match lines.get(i).copied().flatten() {
            Some(line) => format!("{file}:{line}: {e}"),
            None => format!("{file}: {e}"),
        })
        .collect();
    out.join("\n")
}

impl ConfigError {
    /// The individual problems (empty for a read error).
    pub fn errors(&self) -> &[KeyError] {
        match self {
            ConfigError::Read { .. } => &[],
            ConfigError::Invalid { errors, .. } => errors,
        }
    }
}

/// Reads and compiles a config file.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        file: file.clone(),
        source,
    })?;
    let mut config = parse_located(&text).map_err(|found| {
        let (errors, lines) = found.into_iter().unzip();
        ConfigError::Invalid {
            file,
            errors,
            lines,
        }
    })?;
    config.source = Some(path.to_path_buf());
    tls::resolve_paths(&mut config.certificates, path);
    Ok(config)
}

/// Parses and compiles config text; every problem is returned.
pub fn parse(text: &str) -> Result<Config, Vec<KeyError>> {
    parse_located(text).map_err(|found| found.into_iter().map(|(e, _)| e).collect())
}

/// Keys that fail to deserialize (unknown, wrong type) are dropped and the file tried
/// again, this many times at most, so that one typo does not hide the other problems.
const MAX_SHAPE_ERRORS: usize = 64;

/// Like [`parse`], each problem with the line it is on, in file order.
pub fn parse_located(text: &str) -> Result<Config, Vec<(KeyError, Option<usize>)>> {
    let mut table: toml::Table = match toml::from_str(text) {
        Ok(t) => t,
        Err(e) => {
            // A syntax error: nothing else can be checked.
            let line = e.span().map(|s| locate::line_at(text, s.start));
            let error = KeyError {
                key: "(file)".into(),
                message: e.message().to_string(),
            };
            return Err(vec![(error, line)]);
        }
    };
    let mut shape_errors = Vec::new();
    let raw = loop {
        match serde_path_to_error::deserialize::<_, RawConfig>(toml::Value::Table(table.clone())) {
            Ok(raw) => break Some(raw),
            Err(e) => {
                let removed = remove_key(&mut table, e.path());
                let key = e.path().to_string();
                shape_errors.push(KeyError {
                    key: if key == "." { "(file)".into() } else { key },
                    message: e.into_inner().message().to_string(),
                });
                if !removed || shape_errors.len() >= MAX_SHAPE_ERRORS {
                    break None;
                }
            }
        }
    };
    let mut errors = shape_errors;
    let config = match raw.map(compile) {
        Some(Ok(config)) if errors.is_empty() => return Ok(config),
        Some(Ok(_)) | None => None,
        Some(Err(compiled)) => Some(compiled),
    };
    // A key already reported as malformed is not reported again as missing.
    for e in config.into_iter().flatten() {
        if !errors.iter().any(|s| s.key == e.key) {
            errors.push(e);
        }
    }
    let located = locate::Located::new(text);
    let mut found: Vec<(KeyError, Option<usize>)> = errors
        .into_iter()
        .map(|e| {
            let line = located.line_of(&e.key);
            (e, line)
        })
        .collect();
    // File order; problems without a line (whole-file ones) last. Stable, so problems
    // on one line keep the order they were found in.
    found.sort_by_key(|(_, line)| line.unwrap_or(usize::MAX));
    Err(found)
}

/// Drops the key at `path` from `table` so deserialization can go on past it; false
/// when there is nothing to drop. An array element cannot be dropped without
/// renumbering its siblings, so the whole array goes.
fn remove_key(table: &mut toml::Table, path: &serde_path_to_error::Path) -> bool {
    use serde_path_to_error::Segment;
    let segments: Vec<&Segment> = path.iter().collect();
    let Some(last) = segments
        .iter()
        .rposition(|s| matches!(s, Segment::Map { .. }))
    else {
        return false;
    };
    let mut node = table;
    let mut i = 0;
    while i < last {
        let Segment::Map { key } = segments[i] else {
            return false;
        };
        let Some(mut value) = node.get_mut(key.as_str()) else {
            return false;
        };
        i += 1;
        while let (true, Segment::Seq { index }) = (i < last, segments[i]) {
            let Some(v) = value.as_array_mut().and_then(|a| a.get_mut(*index)) else {
                return false;
            };
            value = v;
            i += 1;
        }
        let Some(t) = value.as_table_mut() else {
            return false;
        };
        node = t;
    }
    match segments[last] {
        Segment::Map { key } => node.remove(key.as_str()).is_some(),
        _ => false,
    }
}

/// Collects problems with their key paths while compiling.
#[derive(Default)]
struct Problems(Vec<KeyError>);

impl Problems {
    fn add(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.0.push(KeyError {
            key: key.into(),
            message: message.into(),
        });
    }

    /// Runs a parser on an optional value, recording its error under `key`.
    fn parse<T>(
        &mut self,
        key: impl Into<String>,
        value: Option<&str>,
        default: T,
        f: impl Fn(&str) -> Result<T, String>,
    ) -> T {
        match value {
            None => default,
            Some(v) => match f(v) {
                Ok(t) => t,
                Err(m) => {
                    self.add(key, m);
                    default
                }
            },
        }
    }

    fn count(&mut self, key: impl Into<String>, v: Option<i64>, default: usize, min: i64) -> usize {
        match v {
            None => default,
            Some(n) if n < min => {
                self.add(key, format!("must be at least {min}, got {n}"));
                default
            }
            Some(n) => n as usize,
        }
    }
}

/// More serving threads than this is a typo, not a machine.
const MAX_WORKERS: usize = 1024;

/// Turns the raw file into a typed config, or every reason it cannot be one.
pub fn compile(raw: RawConfig) -> Result<Config, Vec<KeyError>> {
    let mut p = Problems::default();
    let server = compile_server(&raw.server, &mut p);
    let log = compile_log(&raw.log, &mut p);
    let cache_settings = crate::cache::config::compile_settings(raw.cache.as_ref(), &mut p.0);

    let mut upstreams = Vec::with_capacity(raw.upstream.len());
    let mut upstream_names = HashSet::new();
    for (i, u) in raw.upstream.iter().enumerate() {
        let key = format!("upstream[{i}]");
        let up = compile_upstream(&key, u, &mut p);
        if !up.name.is_empty() && !upstream_names.insert(up.name.clone()) {
            p.add(
                format!("{key}.name"),
                format!("duplicate upstream name {:?}", up.name),
            );
        }
        upstreams.push(up);
    }

    let mut routes = Vec::with_capacity(raw.route.len());
    let mut route_names = HashSet::new();
    let mut route_places = HashSet::new();
    let mut waiting_rooms = Vec::with_capacity(raw.waiting_room.len());
    for (i, w) in raw.waiting_room.iter().enumerate() {
        let key = format!("waiting_room[{i}]");
        let room = crate::waiting_room::config::compile(&key, w, &mut p.0);
        if !room.name.is_empty()
            && waiting_rooms
                .iter()
                .any(|r: &crate::waiting_room::RoomConfig| r.name == room.name)
        {
            p.add(
                format!("{key}.name"),
                format!("duplicate waiting_room name {:?}", room.name),
            );
        }
        waiting_rooms.push(room);
    }
    for (i, r) in raw.route.iter().enumerate() {
        let key = format!("route[{i}]");
        let name = r.name.clone().unwrap_or_default();
        if name.is_empty() {
            p.add(
                format!("{key}.name"),
                "missing: every route needs a name (used in metrics)",
            );
        } else if !route_names.insert(name.clone()) {
            p.add(
                format!("{key}.name"),
                format!("duplicate route name {name:?}"),
            );
        }
        let mut hosts = Vec::new();
        for (j, h) in r.hosts.iter().enumerate() {
            match host_pattern(h) {
                Ok(pat) => hosts.push(pat),
                Err(m) => p.add(format!("{key}.hosts[{j}]"), m),
            }
        }
        let path_prefix = r.path_prefix.clone().unwrap_or_else(|| "/".into());
        if !path_prefix.starts_with('/') {
            p.add(
                format!("{key}.path_prefix"),
                format!("{path_prefix:?} must start with \"/\""),
            );
        }
        let place_hosts = if hosts.is_empty() {
            vec![None]
        } else {
            hosts.iter().cloned().map(Some).collect()
        };
        for h in place_hosts {
            if !route_places.insert((h.clone(), path_prefix.clone())) {
                let host = match &h {
                    None => "any host".to_string(),
                    Some(HostPattern::Exact(s)) => s.clone(),
                    Some(HostPattern::Wildcard(s)) => format!("*.{s}"),
                };
                p.add(
                    format!("{key}.path_prefix"),
                    format!("another route already serves {host} with prefix {path_prefix:?}"),
                );
            }
        }
        let upstream = match &r.upstream {
            None => {
                p.add(
                    format!("{key}.upstream"),
                    "missing: every route needs an upstream",
                );
                0
            }
            Some(u) => match upstreams.iter().position(|x| &x.name == u) {
                Some(idx) => idx,
                None => {
                    p.add(
                        format!("{key}.upstream"),
                        format!("no upstream named {u:?}"),
                    );
                    0
                }
            },
        };
        let rate_limits =
            crate::rate_limit::config::compile(&key, &r.rate_limits, &r.allow, &r.deny, &mut p.0);
        let cache = r.cache.as_ref().and_then(|c| {
            crate::cache::config::compile_rule(
                &format!("{key}.cache"),
                c,
                &cache_settings,
                &mut p.0,
            )
        });
        let waiting_room = r.waiting_room.as_ref().and_then(|room| {
            let idx = waiting_rooms.iter().position(|w| &w.name == room);
            if idx.is_none() {
                p.add(
                    format!("{key}.waiting_room"),
                    format!("no waiting_room named {room:?}"),
                );
            }
            idx
        });
        let priority = admission::compile_priority(&key, &r.priority, &mut p);
        routes.push(RouteConfig {
            name,
            hosts,
            path_prefix,
            upstream,
            priority,
            cache,
            rate_limits,
            waiting_room,
            request_buffering: r.request_buffering.unwrap_or(true),
            https_redirect: r.https_redirect.unwrap_or(tls::DEFAULT_HTTPS_REDIRECT),
        });
    }
    let certificates = tls::compile(&raw.certificate, &server.tls_listen, &mut p.0);
    let state = crate::state::config::compile(raw.state.as_ref(), &mut p.0);
    if matches!(state, crate::state::config::StateConfig::Redis(_)) {
        // The shared line's script is the FIFO state machine; a `random` room's
        // shuffled blocks (and their sealing) are not in it yet.
        for (i, w) in waiting_rooms.iter().enumerate() {
            if w.mode == crate::waiting_room::Mode::Random {
                p.0.push(KeyError {
                    key: format!("waiting_room[{i}].mode"),
                    message: "\"random\" is not shared across instances yet: use \"fifo\" (a pre-queue with opens_at is still drawn by lot) or [state] backend = \"local\"".into(),
                });
            }
        }
    }

    if p.0.is_empty() {
        Ok(Config {
            source: None,
            server,
            log,
            upstreams,
            routes,
            cache: cache_settings,
            waiting_rooms,
            certificates,
            state,
        })
    } else {
        Err(p.0)
    }
}

fn compile_server(s: &raw::RawServer, p: &mut Problems) -> ServerConfig {
    let listen = addresses("server.listen", s.listen.as_ref(), "0.0.0.0:8080", p);
    let tls_listen = addresses("server.tls_listen", s.tls_listen.as_ref(), "", p);
    let listen_empty = matches!(&s.listen, Some(raw::OneOrMany::Many(v)) if v.is_empty());
    if listen_empty && tls_listen.is_empty() {
        p.add(
            "server.listen",
            "needs at least one address (here or in server.tls_listen)",
        );
    }
    let admin_listen = s
        .admin_listen
        .as_deref()
        .and_then(|a| match a.parse::<SocketAddr>() {
            Ok(addr) => Some(addr),
            Err(_) => {
                p.add(
                    "server.admin_listen",
                    format!("{a:?} is not an address like \"127.0.0.1:9901\""),
                );
                None
            }
        });
    let mut all: Vec<(String, SocketAddr)> = listen.clone();
    all.extend(tls_listen.iter().cloned());
    if let Some(a) = admin_listen {
        all.push(("server.admin_listen".into(), a));
    }
    for i in 0..all.len() {
        for j in 0..i {
            if overlaps(&all[i].1, &all[j].1) {
                p.add(
                    all[i].0.clone(),
                    format!("{} overlaps {} ({})", all[i].1, all[j].0, all[j].1),
                );
            }
        }
    }
    let mut trusted = Vec::new();
    for (i, c) in s.trusted_proxies.iter().enumerate() {
        match units::cidr(c) {
            Ok(n) => trusted.push(n),
            Err(m) => p.add(format!("server.trusted_proxies[{i}]"), m),
        }
    }
    let max_header_size = p.parse(
        "server.max_header_size",
        s.max_header_size.as_deref(),
        DEFAULT_MAX_HEADER_SIZE,
        units::size,
    );
    // hyper needs room for at least one read buffer (8 KiB) and rejects less.
    if max_header_size < 8192 {
        p.add("server.max_header_size", "must be at least 8KiB");
    }
    ServerConfig {
        listen: listen.into_iter().map(|(_, a)| a).collect(),
        tls_listen: tls_listen.into_iter().map(|(_, a)| a).collect(),
        admin_listen,
        admin_token_file: s.admin_token_file.as_ref().map(PathBuf::from),
        shutdown_grace: p.parse(
            "server.shutdown_grace",
            s.shutdown_grace.as_deref(),
            DEFAULT_SHUTDOWN_GRACE,
            units::duration,
        ),
        trusted_proxies: trusted,
        max_connections: p.count(
            "server.max_connections",
            s.max_connections,
            DEFAULT_MAX_CONNECTIONS,
            1,
        ),
        workers: match p.count("server.workers", s.workers, 0, 1) {
            0 => crate::workers::default_count(),
            n if n > MAX_WORKERS => {
                p.add(
                    "server.workers",
                    format!("must be at most {MAX_WORKERS}, got {n}"),
                );
                MAX_WORKERS
            }
            n => n,
        },
        header_read_timeout: p.parse(
            "server.header_read_timeout",
            s.header_read_timeout.as_deref(),
            DEFAULT_HEADER_READ_TIMEOUT,
            positive_duration,
        ),
        idle_timeout: p.parse(
            "server.idle_timeout",
            s.idle_timeout.as_deref(),
            DEFAULT_IDLE_TIMEOUT,
            positive_duration,
        ),
        max_header_size: max_header_size.max(8192) as usize,
        max_headers: p.count("server.max_headers", s.max_headers, DEFAULT_MAX_HEADERS, 1),
        max_request_body: p.parse(
            "server.max_request_body",
            s.max_request_body.as_deref(),
            DEFAULT_MAX_REQUEST_BODY,
            units::size,
        ),
        http2_max_concurrent_streams: p.count(
            "server.http2_max_concurrent_streams",
            s.http2_max_concurrent_streams,
            DEFAULT_H2_MAX_STREAMS as usize,
            1,
        ) as u32,
        via_name: s.via_name.clone().unwrap_or_else(|| "floodgate".into()),
        edge: crate::edge::compile(
            &crate::edge::RawEdge {
                normalize_path: s.normalize_path,
                merge_slashes: s.merge_slashes,
                refused_methods: s.refused_methods.as_deref(),
                untrusted_headers: s.untrusted_headers.as_deref(),
                strip_headers: s.strip_headers.as_deref(),
            },
            &mut p.0,
        ),
        buffering: buffering::compile(s, p),
    }
}

/// One address or a list, each with its key path; `default` (if not empty) when absent.
fn addresses(
    key: &str,
    value: Option<&raw::OneOrMany>,
    default: &str,
    p: &mut Problems,
) -> Vec<(String, SocketAddr)> {
    let strs = match value {
        Some(v) => v.to_vec(),
        None if default.is_empty() => Vec::new(),
        None => vec![default.to_string()],
    };
    let mut out = Vec::new();
    for (i, a) in strs.iter().enumerate() {
        let k = if matches!(value, Some(raw::OneOrMany::Many(_))) {
            format!("{key}[{i}]")
        } else {
            key.to_string()
        };
        match a.parse::<SocketAddr>() {
            Ok(addr) => out.push((k, addr)),
            Err(_) => p.add(
                k,
                format!("{a:?} is not an address like \"0.0.0.0:8080\" or \"[::1]:8080\""),
            ),
        }
    }
    out
}

fn positive_duration(s: &str) -> Result<Duration, String> {
    let d = units::duration(s)?;
    if d.is_zero() {
        return Err(format!("{s:?} must be above zero"));
    }
    Ok(d)
}

/// Two listen addresses that the kernel would refuse to bind together.
fn overlaps(a: &SocketAddr, b: &SocketAddr) -> bool {
    a.port() != 0
        && a.port() == b.port()
        && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
}

fn compile_log(l: &raw::RawLog, p: &mut Problems) -> LogConfig {
    let format = match l.format.as_deref() {
        None | Some("text") => LogFormat::Text,
        Some("json") => LogFormat::Json,
        Some(other) => {
            p.add(
                "log.format",
                format!("{other:?}: expected \"text\" or \"json\""),
            );
            LogFormat::Text
        }
    };
    let level = l.level.clone().unwrap_or_else(|| "info".into());
    if tracing_subscriber::EnvFilter::try_new(&level).is_err() {
        p.add(
            "log.level",
            format!("{level:?} is not a level or filter like \"info\" or \"floodgate=debug\""),
        );
    }
    let access_log = l.access_log.unwrap_or(true);
    let access_log_file = l.access_log_file.as_deref().map(PathBuf::from);
    if l.access_log_file.as_deref() == Some("") {
        p.add(
            "log.access_log_file",
            "empty: leave the key out to log to stderr",
        );
    } else if access_log_file.is_some() && !access_log {
        p.add(
            "log.access_log_file",
            "set while log.access_log = false: the file would stay empty",
        );
    }
    LogConfig {
        format,
        level,
        access_log,
        access_log_file,
    }
}

fn compile_upstream(key: &str, u: &raw::RawUpstream, p: &mut Problems) -> UpstreamConfig {
    let name = u.name.clone().unwrap_or_default();
    if name.is_empty() {
        p.add(
            format!("{key}.name"),
            "missing: every upstream needs a name",
        );
    }
    let mut servers = Vec::new();
    if u.servers.is_empty() {
        p.add(format!("{key}.servers"), "needs at least one \"host:port\"");
    }
    for (i, s) in u.servers.iter().enumerate() {
        match s.parse::<Authority>() {
            Ok(a) if a.port_u16().is_some() => servers.push(a),
            _ => p.add(
                format!("{key}.servers[{i}]"),
                format!("{s:?} is not \"host:port\""),
            ),
        }
    }
    let balance = match u.balance.as_deref() {
        None | Some("round_robin") => Balance::RoundRobin,
        Some("least_in_flight") => Balance::LeastInFlight,
        Some(other) => {
            p.add(
                format!("{key}.balance"),
                format!("{other:?}: expected \"round_robin\" or \"least_in_flight\""),
            );
            Balance::RoundRobin
        }
    };
    let max_concurrency = match &u.max_concurrency {
        None => Concurrency::Fixed(DEFAULT_MAX_CONCURRENCY),
        Some(toml::Value::Integer(n)) if *n >= 1 => Concurrency::Fixed(*n as usize),
        Some(toml::Value::String(s)) if s == "auto" => Concurrency::Auto,
        Some(other) => {
            p.add(
                format!("{key}.max_concurrency"),
                format!("{other}: expected a number from 1, or \"auto\""),
            );
            Concurrency::Fixed(DEFAULT_MAX_CONCURRENCY)
        }
    };
    UpstreamConfig {
        name,
        servers,
        balance,
        connect_timeout: p.parse(
            format!("{key}.connect_timeout"),
            u.connect_timeout.as_deref(),
            DEFAULT_CONNECT_TIMEOUT,
            positive_duration,
        ),
        response_timeout: p.parse(
            format!("{key}.response_timeout"),
            u.response_timeout.as_deref(),
            DEFAULT_RESPONSE_TIMEOUT,
            positive_duration,
        ),
        pool_idle_timeout: p.parse(
            format!("{key}.pool_idle_timeout"),
            u.pool_idle_timeout.as_deref(),
            DEFAULT_POOL_IDLE_TIMEOUT,
            positive_duration,
        ),
        pool_max_idle_per_server: p.count(
            format!("{key}.pool_max_idle_per_server"),
            u.pool_max_idle_per_server,
            DEFAULT_POOL_MAX_IDLE,
            0,
        ),
        max_concurrency,
        queue_size: p.count(
            format!("{key}.queue_size"),
            u.queue_size,
            DEFAULT_QUEUE_SIZE,
            0,
        ),
        queue_timeout: p.parse(
            format!("{key}.queue_timeout"),
            u.queue_timeout.as_deref(),
            DEFAULT_QUEUE_TIMEOUT,
            positive_duration,
        ),
        admission: admission::compile_tuning(key, u, p),
        health_check: admission::compile_health_check(key, u.health_check.as_ref(), p),
        outlier_detection: admission::compile_outlier(key, u.outlier_detection.as_ref(), p),
        circuit_breaker: admission::compile_breaker(key, u.circuit_breaker.as_ref(), p),
        retries: admission::compile_retries(key, u.retries.as_ref(), p),
    }
}

fn host_pattern(h: &str) -> Result<HostPattern, String> {
    let lower = h.trim().to_ascii_lowercase();
    let valid = |s: &str| {
        !s.is_empty()
            && s.split('.')
                .all(|l| !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
    };
    if let Some(rest) = lower.strip_prefix("*.") {
        if valid(rest) {
            return Ok(HostPattern::Wildcard(rest.to_string()));
        }
    } else if valid(&lower) {
        return Ok(HostPattern::Exact(lower));
    }
    Err(format!(
        "{h:?} is not a host name like \"shop.example.com\" or \"*.example.com\""
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[server]
listen = "127.0.0.1:8080"
admin_listen = "127.0.0.1:9901"
trusted_proxies = ["10.0.0.0/8"]

[[upstream]]
name = "shop"
servers = ["127.0.0.1:3000"]

[[route]]
name = "shop"
hosts = ["shop.example.com", "*.shops.example.com"]
upstream = "shop"
"#;

    #[test]
    fn a_good_config_compiles() {
        let c = parse(GOOD).unwrap();
        assert_eq!(
            c.routes[0].hosts[1],
            HostPattern::Wildcard("shops.example.com".into())
        );
        assert_eq!(c.server.trusted_proxies.len(), 1);
    }

    #[test]
    fn every_error_is_reported_with_its_key() {
        let text = r#"
[server]
listen = ["127.0.0.1:8080", "0.0.0.0:8080"]
shutdown_grace = "soon"

[[upstream]]
name = "shop"
servers = ["nope"]
overload_queue_delay = "0ms"

[[route]]
name = "a"
upstream = "shp"

[[route]]
name = "a"
upstream = "shop"
path_prefix = "x"
"#;
        let errs = parse(text).unwrap_err();
        let keys: Vec<&str> = errs.iter().map(|e| e.key.as_str()).collect();
        for k in [
            "server.listen[1]",
            "server.shutdown_grace",
            "upstream[0].servers[0]",
            "upstream[0].overload_queue_delay",
            "route[0].upstream",
            "route[1].name",
            "route[1].path_prefix",
        ] {
            assert!(keys.contains(&k), "missing {k} in {errs:?}");
        }
        let e = errs.iter().find(|e| e.key == "route[0].upstream").unwrap();
        assert_eq!(e.message, "no upstream named \"shp\"");
    }

    #[test]
    fn an_unknown_key_is_an_error_naming_it() {
        let errs = parse("[server]\nlisten = \"127.0.0.1:1\"\nlisen = 3\n").unwrap_err();
        assert_eq!(errs[0].key, "server.lisen");
        assert!(errs[0].message.contains("lisen"), "{errs:?}");
    }

    #[test]
    fn unknown_keys_do_not_hide_the_other_problems_and_each_has_its_line() {
        let text = "[server]\nlisen = 3\nshutdown_grace = \"soon\"\n\n[[upstream]]\nname = \"shop\"\nservers = [\"x\"]\nmax_headers = 3\noutlier_detection = { max_ejection_percent = 200, typo = 1 }\n\n[[route]]\nname = 7\nupstream = \"shop\"\n";
        let found = parse_located(text).unwrap_err();
        let got: Vec<(&str, Option<usize>)> =
            found.iter().map(|(e, l)| (e.key.as_str(), *l)).collect();
        assert_eq!(
            got,
            vec![
                ("server.lisen", Some(2)),
                ("server.shutdown_grace", Some(3)),
                ("upstream[0].servers[0]", Some(7)),
                ("upstream[0].max_headers", Some(8)),
                ("upstream[0].outlier_detection.typo", Some(9)),
                (
                    "upstream[0].outlier_detection.max_ejection_percent",
                    Some(9)
                ),
                ("route[0].name", Some(12)),
            ],
            "{found:?}"
        );
        // A key reported malformed (a number for a name) is not reported again as missing.
        let name: Vec<_> = found
            .iter()
            .filter(|(e, _)| e.key == "route[0].name")
            .collect();
        assert_eq!(name.len(), 1);
        assert!(name[0].0.message.contains("string"), "{name:?}");
    }

    #[test]
    fn a_syntax_error_has_its_line() {
        let found = parse_located("[server]\nlisten = \n").unwrap_err();
        assert_eq!(found[0].0.key, "(file)");
        assert_eq!(found[0].1, Some(2));
    }
}
