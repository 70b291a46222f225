//! `[state]`: where what several gateway instances must share lives.

use std::time::Duration;

use serde::Deserialize;

use crate::config::units;
use crate::config::KeyError;

/// A loopback Redis on its default port and database 0: what a single-box trial runs.
pub const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379/0";
/// A namespace of its own, so several portals (or a staging one) can share one Redis.
pub const DEFAULT_PREFIX: &str = "floodgate:";
/// A loopback or LAN Redis answers in well under a millisecond; past 50 ms it is
/// sick, and a request must not wait longer than that for a rate-limit verdict.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(50);
/// How often an instance says it is alive, and so how fast the others count it.
pub const DEFAULT_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(1);
/// Three missed heartbeats and an instance no longer counts in everyone's 1/N share.
pub const DEFAULT_MEMBER_TTL: Duration = Duration::from_secs(3);
/// How often stored purges and room settings are re-read for messages an instance
/// missed: well inside the one second within which admin actions must apply.
pub const DEFAULT_SYNC_INTERVAL: Duration = Duration::from_millis(250);

/// `[state]` as written in the file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawState {
    backend: Option<String>,
    url: Option<String>,
    prefix: Option<String>,
    timeout: Option<String>,
    heartbeat_interval: Option<String>,
    member_ttl: Option<String>,
    sync_interval: Option<String>,
    sentinels: Option<Vec<String>>,
    sentinel_master: Option<String>,
}

/// `[state]`, compiled.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum StateConfig {
    /// Everything in this process (the default; needs nothing).
    #[default]
    Local,
    /// Shared through Redis.
    Redis(RedisSettings),
}

/// `[state] backend = "redis"`, compiled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisSettings {
    /// `redis://` or `rediss://` (TLS) URL, without the password.
    pub url: String,
    /// Key and channel namespace.
    pub prefix: String,
    /// The longest one Redis call may take before the instance serves from local state.
    pub timeout: Duration,
    /// How often this instance renews its membership.
    pub heartbeat_interval: Duration,
    /// How long a membership lasts without renewal.
    pub member_ttl: Duration,
    /// How often stored purges and room settings are compared with this instance's.
    pub sync_interval: Duration,
    /// Redis Sentinel: where to ask for the current primary (instead of `url`).
    pub sentinel: Option<SentinelSettings>,
}

/// `[state] sentinels` and `sentinel_master`, compiled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentinelSettings {
    /// `redis://` or `rediss://` URLs of the sentinels.
    pub nodes: Vec<String>,
    /// The monitored primary's name (`sentinel monitor NAME …`).
    pub master: String,
}

fn add(errors: &mut Vec<KeyError>, key: &str, message: impl Into<String>) {
    errors.push(KeyError {
        key: key.into(),
        message: message.into(),
    });
}

fn duration_of(
    raw: &Option<String>,
    key: &str,
    default: Duration,
    errors: &mut Vec<KeyError>,
) -> Duration {
    let Some(s) = raw else { return default };
    match units::duration(s) {
        Ok(d) if d.is_zero() => {
            add(errors, key, "must be above zero");
            default
        }
        Ok(d) => d,
        Err(e) => {
            add(errors, key, e);
            default
        }
    }
}

/// Compiles `[state]`, recording every problem with its key path.
pub fn compile(raw: Option<&RawState>, errors: &mut Vec<KeyError>) -> StateConfig {
    let Some(raw) = raw else {
        return StateConfig::Local;
    };
    let redis_keys = [
        ("state.url", raw.url.is_some()),
        ("state.prefix", raw.prefix.is_some()),
        ("state.timeout", raw.timeout.is_some()),
        ("state.heartbeat_interval", raw.heartbeat_interval.is_some()),
        ("state.member_ttl", raw.member_ttl.is_some()),
        ("state.sync_interval", raw.sync_interval.is_some()),
        ("state.sentinels", raw.sentinels.is_some()),
        ("state.sentinel_master", raw.sentinel_master.is_some()),
    ];
    match raw.backend.as_deref().unwrap_or("local") {
        "local" => {
            for (key, set) in redis_keys {
                if set {
                    add(errors, key, "only applies with state.backend = \"redis\"");
                }
            }
            StateConfig::Local
        }
        "redis" => StateConfig::Redis(compile_redis(raw, errors)),
        other => {
            add(
                errors,
                "state.backend",
                format!("{other:?} is not \"local\" or \"redis\""),
            );
            StateConfig::Local
        }
    }
}

/// Checks one `redis://` or `rediss://` URL of `key`: parseable, no credentials.
fn check_url(url: &str, key: &str, errors: &mut Vec<KeyError>) {
    match url.split_once("://") {
        Some(("redis" | "rediss", rest)) if rest.contains('@') => add(
            errors,
            key,
            "must not hold credentials: set FLOODGATE_REDIS_PASSWORD instead",
        ),
        Some(("redis" | "rediss", _)) => {
            if let Err(e) = redis::parse_redis_url(url).ok_or("not a valid URL") {
                add(errors, key, e);
            }
        }
        _ => add(
            errors,
            key,
            format!("{url:?} is not a redis:// or rediss:// URL"),
        ),
    }
}

/// `sentinels` and `sentinel_master`: both or neither, and then no `url`.
fn compile_sentinel(raw: &RawState, errors: &mut Vec<KeyError>) -> Option<SentinelSettings> {
    match (&raw.sentinels, &raw.sentinel_master) {
        (None, None) => None,
        (Some(nodes), Some(master)) => {
            if nodes.is_empty() {
                add(
                    errors,
                    "state.sentinels",
                    "needs at least one sentinel address",
                );
            }
            for (i, n) in nodes.iter().enumerate() {
                check_url(n, &format!("state.sentinels[{i}]"), errors);
            }
            if raw.url.is_some() {
                add(
                    errors,
                    "state.url",
                    "set either url or sentinels (the sentinels say where the primary is)",
                );
            }
            Some(SentinelSettings {
                nodes: nodes.clone(),
                master: master.clone(),
            })
        }
        (Some(_), None) => {
            add(
                errors,
                "state.sentinel_master",
                "is needed with state.sentinels",
            );
            None
        }
        (None, Some(_)) => {
            add(
                errors,
                "state.sentinels",
                "is needed with state.sentinel_master",
            );
            None
        }
    }
}

fn compile_redis(raw: &RawState, errors: &mut Vec<KeyError>) -> RedisSettings {
    let url = raw.url.clone().unwrap_or_else(|| DEFAULT_REDIS_URL.into());
    check_url(&url, "state.url", errors);
    let sentinel = compile_sentinel(raw, errors);
    let prefix = raw.prefix.clone().unwrap_or_else(|| DEFAULT_PREFIX.into());
    if prefix.contains(['{', '}']) || prefix.chars().any(|c| c.is_whitespace()) {
        add(
            errors,
            "state.prefix",
            "must not contain braces (they are the cluster hash tags) or spaces",
        );
    }
    let heartbeat_interval = duration_of(
        &raw.heartbeat_interval,
        "state.heartbeat_interval",
        DEFAULT_HEARTBEAT_INTERVAL,
        errors,
    );
    let member_ttl = duration_of(
        &raw.member_ttl,
        "state.member_ttl",
        DEFAULT_MEMBER_TTL,
        errors,
    );
    if member_ttl <= heartbeat_interval {
        add(
            errors,
            "state.member_ttl",
            "must be longer than state.heartbeat_interval, or live instances drop out",
        );
    }
    RedisSettings {
        url,
        prefix,
        timeout: duration_of(&raw.timeout, "state.timeout", DEFAULT_TIMEOUT, errors),
        heartbeat_interval,
        member_ttl,
        sync_interval: duration_of(
            &raw.sync_interval,
            "state.sync_interval",
            DEFAULT_SYNC_INTERVAL,
            errors,
        ),
        sentinel,
    }
}
