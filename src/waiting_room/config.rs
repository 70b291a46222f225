//! `[[waiting_room]]`: the raw TOML table and its compiled, typed form.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::StatusCode;
use serde::Deserialize;

use super::page::Template;
use super::token::Keys;
use crate::config::{units, KeyError};

/// An admitted shopper idle longer than this must queue again (SPEC's example).
pub const DEFAULT_SESSION_DURATION: Duration = Duration::from_secs(10 * 60);
/// A ticket older than this is void: a line lasts an event, not a week.
pub const DEFAULT_TICKET_TTL: Duration = Duration::from_secs(12 * 3600);
/// Far above the slowest poll interval (see [`super::page::MAX_POLL`]) times two, so a
/// waiter who polls on time is never taken for gone, and short enough that dead places
/// stop holding up the line within a minute or two rather than 15.
pub const DEFAULT_ABANDON_AFTER: Duration = Duration::from_secs(60);
/// Tickets one client address may take per minute. A household or an office behind
/// one NAT opens a few tabs and devices; a farm asking for thousands is refused.
pub const DEFAULT_TICKETS_PER_MINUTE_PER_CLIENT: u32 = 60;
/// IPv4 clients are told apart by their whole address: a /24 can be a whole campus or
/// carrier NAT, and one address already stands for a household.
pub const DEFAULT_CLIENT_PREFIX_IPV4: u8 = 32;
/// IPv6 clients by their /64: one subscriber gets at least a /64 and may pick any of
/// its 2^64 addresses, so counting full addresses would count nothing.
pub const DEFAULT_CLIENT_PREFIX_IPV6: u8 = 64;
/// Sharing limits are off unless asked for: a page that loads its assets through the
/// room makes dozens of requests per second, and phones change networks.
pub const DEFAULT_PASS_REQUESTS_PER_SECOND: u32 = 0;
/// See [`DEFAULT_PASS_REQUESTS_PER_SECOND`].
pub const DEFAULT_PASS_PREFIXES_PER_MINUTE: u32 = 0;

/// `[[waiting_room]]` as written. Times and durations stay strings so `compile` can
/// report every mistake with its key path.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWaitingRoom {
    pub name: Option<String>,
    pub active_users: Option<i64>,
    pub new_users_per_minute: Option<i64>,
    pub session_duration: Option<String>,
    pub opens_at: Option<toml::Value>,
    pub closes_at: Option<toml::Value>,
    #[serde(default)]
    pub paths: Vec<String>,
    #[serde(default)]
    pub exclude_paths: Vec<String>,
    pub mode: Option<String>,
    pub waiting_status: Option<i64>,
    pub template: Option<String>,
    pub key_file: Option<String>,
    pub abandon_after: Option<String>,
    pub ticket_ttl: Option<String>,
    pub tickets_per_minute_per_client: Option<i64>,
    pub client_prefix_ipv4: Option<i64>,
    pub client_prefix_ipv6: Option<i64>,
    pub pass_requests_per_second: Option<i64>,
    pub pass_prefixes_per_minute: Option<i64>,
    pub state_dir: Option<String>,
    // === page and proof of work (page.rs, pow.rs) ===
    pub portal_name: Option<String>,
    pub logo_url: Option<String>,
    pub proof_of_work: Option<super::pow::RawProofOfWork>,
}

/// How a room treats visitors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Everyone takes a number; admission in ticket order.
    Fifo,
    /// Everyone takes a number; within each block of tickets the order is drawn by lot.
    Random,
    /// Nobody queues while the room has space; once full, FIFO.
    SafetyNet,
    /// Everyone goes straight in; the room only counts (a dry run before the event).
    Passthrough,
    /// Sold out: new visitors get the sold-out page; pass holders finish their purchase.
    Reject,
}

impl Mode {
    /// The config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Fifo => "fifo",
            Mode::Random => "random",
            Mode::SafetyNet => "safety_net",
            Mode::Passthrough => "passthrough",
            Mode::Reject => "reject",
        }
    }
}

/// One compiled `[[waiting_room]]`.
#[derive(Debug, Clone)]
pub struct RoomConfig {
    /// Name routes refer to; also carried in every token.
    pub name: String,
    /// Shoppers inside at once.
    pub active_users: u64,
    /// Admission rate.
    pub new_users_per_minute: u64,
    /// Sliding pass lifetime: every request renews it.
    pub session_duration: Duration,
    /// Before this (unix ms), arrivals join the pre-queue.
    pub opens_at: Option<u64>,
    /// After this (unix ms), no new tickets: new visitors get the closed page.
    pub closes_at: Option<u64>,
    /// Path prefixes the room guards; empty means every path of the route.
    pub paths: Vec<String>,
    /// Path prefixes never guarded (static assets, health).
    pub exclude_paths: Vec<String>,
    /// Room behaviour.
    pub mode: Mode,
    /// Status of the waiting answer: 200, 202 or 429.
    pub waiting_status: StatusCode,
    /// The page template and strings.
    pub template: Arc<Template>,
    /// Signing keys (first signs, all verify).
    pub keys: Arc<Keys>,
    /// A block of tickets nobody polled for this long is skipped.
    pub abandon_after: Duration,
    /// A ticket older than this counts as no ticket.
    pub ticket_ttl: Duration,
    /// Ticket issue limit per client prefix per minute (0: no limit).
    pub tickets_per_minute_per_client: u32,
    /// IPv4 prefix length that makes one client (issue limit, lottery, sharing).
    pub client_prefix_ipv4: u8,
    /// IPv6 prefix length that makes one client.
    pub client_prefix_ipv6: u8,
    /// A pass used more often than this per second is revoked (0: no limit).
    pub pass_requests_per_second: u32,
    /// A pass used from more client prefixes than this per minute is revoked (0: no
    /// limit; at most [`super::state::MAX_PASS_PREFIXES`]).
    pub pass_prefixes_per_minute: u32,
    /// Where the line is saved (local state: every second and at shutdown) and read
    /// back at start; none: the line starts empty.
    pub state_dir: Option<std::path::PathBuf>,
    /// Proof of work asked before a ticket (`proof_of_work`); None: off, the default.
    pub proof_of_work: Option<Arc<super::pow::ProofOfWork>>,
}

impl RoomConfig {
    /// A room with defaults, for tests and benches.
    pub fn new(name: &str, active_users: u64, new_users_per_minute: u64) -> Self {
        RoomConfig {
            name: name.into(),
            active_users,
            new_users_per_minute,
            session_duration: DEFAULT_SESSION_DURATION,
            opens_at: None,
            closes_at: None,
            paths: Vec::new(),
            exclude_paths: Vec::new(),
            mode: Mode::Fifo,
            waiting_status: StatusCode::OK,
            template: Arc::new(Template::default_template()),
            keys: Keys::process_default(),
            abandon_after: DEFAULT_ABANDON_AFTER,
            ticket_ttl: DEFAULT_TICKET_TTL,
            tickets_per_minute_per_client: DEFAULT_TICKETS_PER_MINUTE_PER_CLIENT,
            client_prefix_ipv4: DEFAULT_CLIENT_PREFIX_IPV4,
            client_prefix_ipv6: DEFAULT_CLIENT_PREFIX_IPV6,
            pass_requests_per_second: DEFAULT_PASS_REQUESTS_PER_SECOND,
            pass_prefixes_per_minute: DEFAULT_PASS_PREFIXES_PER_MINUTE,
            state_dir: None,
            proof_of_work: None,
        }
    }

    /// The state file of this room under `state_dir`, if any.
    pub fn state_file(&self) -> Option<std::path::PathBuf> {
        self.state_dir
            .as_ref()
            .map(|d| d.join(format!("waiting-room-{}.json", self.name)))
    }

    /// Whether the room guards this path.
    pub fn guards(&self, path: &str) -> bool {
        if self.exclude_paths.iter().any(|p| path.starts_with(p)) {
            return false;
        }
        self.paths.is_empty() || self.paths.iter().any(|p| path.starts_with(p))
    }
}

/// Milliseconds since the Unix epoch, the clock tokens and the line speak.
pub fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Compiles one room; problems are appended with their key paths under `key`.
pub fn compile(key: &str, raw: &RawWaitingRoom, errors: &mut Vec<KeyError>) -> RoomConfig {
    let mut add = |k: &str, m: String| {
        errors.push(KeyError {
            key: format!("{key}.{k}"),
            message: m,
        })
    };
    let name = raw.name.clone().unwrap_or_default();
    if name.is_empty() {
        add("name", "missing: every waiting room needs a name".into());
    } else if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        // The name travels inside tokens, '.'-separated: keep it to a safe alphabet.
        add(
            "name",
            format!("{name:?}: use letters, digits, '-' and '_' only"),
        );
    }
    let mut cfg = RoomConfig::new(&name, 1, 60);
    match raw.active_users {
        None => add(
            "active_users",
            "missing: how many shoppers may be inside at once (from 1)".into(),
        ),
        Some(n) if n < 1 => add("active_users", format!("must be at least 1, got {n}")),
        Some(n) => cfg.active_users = n as u64,
    }
    match raw.new_users_per_minute {
        None => add(
            "new_users_per_minute",
            "missing: how many visitors to let in per minute (from 1)".into(),
        ),
        Some(n) if n < 1 => add(
            "new_users_per_minute",
            format!("must be at least 1, got {n}"),
        ),
        Some(n) => cfg.new_users_per_minute = n as u64,
    }
    let mut later: Vec<(String, String)> = Vec::new();
    let mut duration = |k: &str, v: &Option<String>, default: Duration| match v {
        None => default,
        Some(s) => match units::duration(s) {
            Ok(d) if !d.is_zero() => d,
            Ok(_) => {
                later.push((k.into(), format!("{s:?} must be above zero")));
                default
            }
            Err(m) => {
                later.push((k.into(), m));
                default
            }
        },
    };
    cfg.session_duration = duration(
        "session_duration",
        &raw.session_duration,
        DEFAULT_SESSION_DURATION,
    );
    cfg.abandon_after = duration("abandon_after", &raw.abandon_after, DEFAULT_ABANDON_AFTER);
    cfg.ticket_ttl = duration("ticket_ttl", &raw.ticket_ttl, DEFAULT_TICKET_TTL);
    for (k, m) in later {
        add(&k, m);
    }
    cfg.opens_at = raw.opens_at.as_ref().and_then(|v| match rfc3339_ms(v) {
        Ok(t) => Some(t),
        Err(m) => {
            add("opens_at", m);
            None
        }
    });
    cfg.closes_at = raw.closes_at.as_ref().and_then(|v| match rfc3339_ms(v) {
        Ok(t) => Some(t),
        Err(m) => {
            add("closes_at", m);
            None
        }
    });
    if let (Some(o), Some(c)) = (cfg.opens_at, cfg.closes_at) {
        if c <= o {
            add("closes_at", "must be after opens_at".into());
        }
    }
    for (field, list, out) in [
        ("paths", &raw.paths, &mut cfg.paths),
        ("exclude_paths", &raw.exclude_paths, &mut cfg.exclude_paths),
    ] {
        for (i, p) in list.iter().enumerate() {
            if p.starts_with('/') {
                out.push(p.clone());
            } else {
                add(
                    &format!("{field}[{i}]"),
                    format!("{p:?} must start with \"/\""),
                );
            }
        }
    }
    cfg.mode = match raw.mode.as_deref() {
        None | Some("fifo") => Mode::Fifo,
        Some("random") => Mode::Random,
        Some("safety_net") => Mode::SafetyNet,
        Some("passthrough") => Mode::Passthrough,
        Some("reject") => Mode::Reject,
        Some(other) => {
            add(
                "mode",
                format!(
                    "{other:?}: expected \"fifo\", \"random\", \"safety_net\", \"passthrough\" or \"reject\""
                ),
            );
            Mode::Fifo
        }
    };
    cfg.waiting_status = match raw.waiting_status {
        None | Some(200) => StatusCode::OK,
        Some(202) => StatusCode::ACCEPTED,
        Some(429) => StatusCode::TOO_MANY_REQUESTS,
        Some(n) => {
            add("waiting_status", format!("{n}: expected 200, 202 or 429"));
            StatusCode::OK
        }
    };
    if let Some(path) = &raw.template {
        match std::fs::read_to_string(path) {
            Ok(text) => cfg.template = Arc::new(Template::with_html(text)),
            Err(e) => add("template", format!("{path:?}: cannot read: {e}")),
        }
    }
    match Keys::load(raw.key_file.as_deref()) {
        Ok(k) => cfg.keys = k,
        Err(m) => add(
            if raw.key_file.is_some() {
                "key_file"
            } else {
                "(env FLOODGATE_WAITING_ROOM_KEY)"
            },
            m,
        ),
    }
    match raw.tickets_per_minute_per_client {
        None => {}
        Some(n) if n < 0 => add(
            "tickets_per_minute_per_client",
            format!("must be 0 (no limit) or more, got {n}"),
        ),
        Some(n) => cfg.tickets_per_minute_per_client = n.min(u32::MAX as i64) as u32,
    }
    compile_client_keys(raw, &mut cfg, &mut add);
    // === page and proof of work: compiled by page.rs and pow.rs ===
    let branding = super::page::Branding::compile(
        key,
        raw.portal_name.as_deref(),
        raw.logo_url.as_deref(),
        errors,
    );
    cfg.template = Arc::new(cfg.template.branded(branding));
    cfg.proof_of_work = raw.proof_of_work.as_ref().map(|p| {
        Arc::new(super::pow::ProofOfWork::compile(
            &format!("{key}.proof_of_work"),
            p,
            errors,
        ))
    });
    cfg
}

/// Client prefixes, sharing limits and the state directory.
fn compile_client_keys(
    raw: &RawWaitingRoom,
    cfg: &mut RoomConfig,
    add: &mut impl FnMut(&str, String),
) {
    for (k, v, max, out) in [
        (
            "client_prefix_ipv4",
            raw.client_prefix_ipv4,
            32,
            &mut cfg.client_prefix_ipv4,
        ),
        (
            "client_prefix_ipv6",
            raw.client_prefix_ipv6,
            128,
            &mut cfg.client_prefix_ipv6,
        ),
    ] {
        match v {
            None => {}
            Some(n) if !(1..=max).contains(&n) => add(
                k,
                format!("must be a prefix length from 1 to {max}, got {n}"),
            ),
            Some(n) => *out = n as u8,
        }
    }
    let max_prefixes = super::state::MAX_PASS_PREFIXES as i64;
    for (k, v, max, out) in [
        (
            "pass_requests_per_second",
            raw.pass_requests_per_second,
            100_000,
            &mut cfg.pass_requests_per_second,
        ),
        (
            "pass_prefixes_per_minute",
            raw.pass_prefixes_per_minute,
            max_prefixes,
            &mut cfg.pass_prefixes_per_minute,
        ),
    ] {
        match v {
            None => {}
            Some(n) if !(0..=max).contains(&n) => {
                add(k, format!("must be 0 (no limit) to {max}, got {n}"))
            }
            Some(n) => *out = n as u32,
        }
    }
    if let Some(d) = &raw.state_dir {
        let path = std::path::PathBuf::from(d);
        if d.is_empty() {
            add("state_dir", "must name a directory".into());
        } else if !path.is_dir() {
            add(
                "state_dir",
                format!("{d:?} is not a directory (create it first)"),
            );
        } else {
            cfg.state_dir = Some(path);
        }
    }
}

fn rfc3339_ms(v: &toml::Value) -> Result<u64, String> {
    let s = match v {
        toml::Value::String(s) => s.clone(),
        toml::Value::Datetime(d) => d.to_string(),
        other => {
            return Err(format!(
                "{other}: expected a time like \"2026-11-27T08:00:00+01:00\""
            ))
        }
    };
    let t = time::OffsetDateTime::parse(&s, &time::format_description::well_known::Rfc3339)
        .map_err(|e| {
            format!("{s:?} is not an RFC 3339 time like \"2026-11-27T08:00:00+01:00\" ({e})")
        })?;
    let ms = t.unix_timestamp_nanos() / 1_000_000;
    u64::try_from(ms).map_err(|_| format!("{s:?} is before 1970"))
}
