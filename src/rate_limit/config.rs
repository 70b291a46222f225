//! `rate_limits`, `allow` and `deny` of a route: compiled from the raw TOML tables, every
//! problem reported with its key path (`route[0].rate_limits[1].burst`).

use std::num::NonZeroU32;
use std::time::Duration;

use http::header::HeaderName;
use ipnet::IpNet;

use crate::config::units::{self, Rate};
use crate::config::KeyError;

/// IPv4 clients are counted one address each unless the operator aggregates them:
/// a /24 would lump a whole carrier-grade NAT pool together.
pub const DEFAULT_IPV4_PREFIX: u8 = 32;
/// One IPv6 subscriber usually gets a whole /64 and can pick a fresh address from it
/// per request; counting per /128 would give each request a fresh burst.
pub const DEFAULT_IPV6_PREFIX: u8 = 64;
/// A delayed request holds a connection and a timer: a second is barely noticed by a
/// shopper, and longer holds would tie up sockets exactly when a storm arrives.
pub const DEFAULT_MAX_DELAY: Duration = Duration::from_secs(1);
/// Keys tracked per limit. Each costs about 40 bytes in the store (measured, see
/// docs/rate-limiting.md), so a full store is ~40 MiB; keys leave the store as soon as
/// their bucket is full again, so reaching the cap means a million clients in debt at once.
pub const DEFAULT_MAX_KEYS: usize = 1_000_000;

/// One part of what identifies "a client" for a limit.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum KeyPart {
    /// The real client address (honouring `server.trusted_proxies`), masked to the
    /// limit's prefix lengths.
    ClientIp,
    /// The value of a request header, e.g. an API key.
    Header(HeaderName),
    /// The value of a cookie.
    Cookie(String),
}

/// What a limit counts by.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum KeySpec {
    /// The whole route shares one bucket.
    Global,
    /// One bucket per distinct combination of these parts.
    Parts(Vec<KeyPart>),
}

impl KeySpec {
    /// Whether this is a route-wide limit (checked after the per-client ones).
    pub fn is_global(&self) -> bool {
        matches!(self, KeySpec::Global)
    }
}

/// What happens to a request over the limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// Answer 429 at once.
    Refuse,
    /// Hold the request until it conforms, at most this long; beyond that, 429.
    Delay(Duration),
}

/// The part of a limit that defines its buckets: when it is unchanged across a reload
/// the buckets are kept, so a reload never hands out a fresh burst.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BucketRule {
    /// Limit name, unique within the route.
    pub name: String,
    /// What it counts by.
    pub key: KeySpec,
    /// Sustained rate.
    pub rate: Rate,
    /// Requests allowed at once on top of nothing (the bucket size).
    pub burst: NonZeroU32,
    /// IPv4 prefix length for `client_ip`.
    pub ipv4_prefix: u8,
    /// IPv6 prefix length for `client_ip`.
    pub ipv6_prefix: u8,
    /// Refuse or delay.
    pub action: Action,
    /// Keys tracked at most.
    pub max_keys: usize,
}

/// One entry of `rate_limits`, compiled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitRule {
    /// What defines the buckets.
    pub bucket: BucketRule,
    /// Count and log refusals, refuse nothing.
    pub dry_run: bool,
}

/// A route's rate limiting and address lists, compiled.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RouteRateLimits {
    /// Limits in checking order: per-client ones first, in file order, then global ones.
    pub limits: Vec<LimitRule>,
    /// Addresses that bypass this route's rate limits.
    pub allow: Vec<IpNet>,
    /// Addresses answered 403.
    pub deny: Vec<IpNet>,
}

impl RouteRateLimits {
    /// Whether the route needs the rate limit layer at all.
    pub fn is_empty(&self) -> bool {
        self.limits.is_empty() && self.allow.is_empty() && self.deny.is_empty()
    }
}

const LIMIT_KEYS: &[&str] = &[
    "name",
    "key",
    "rate",
    "burst",
    "ipv4_prefix",
    "ipv6_prefix",
    "dry_run",
    "action",
    "max_delay",
    "max_keys",
];

/// Compiles a route's `rate_limits`, `allow` and `deny`; `route_key` is `route[i]`.
pub fn compile(
    route_key: &str,
    limits: &[toml::Table],
    allow: &[String],
    deny: &[String],
    errors: &mut Vec<KeyError>,
) -> RouteRateLimits {
    let mut err = |key: String, message: String| errors.push(KeyError { key, message });
    let mut out = RouteRateLimits::default();
    let mut names = std::collections::HashSet::new();
    for (i, t) in limits.iter().enumerate() {
        let key = format!("{route_key}.rate_limits[{i}]");
        if let Some(rule) = compile_limit(&key, t, &mut err) {
            if !names.insert(rule.bucket.name.clone()) {
                err(
                    format!("{key}.name"),
                    format!(
                        "another limit of this route is named {:?}",
                        rule.bucket.name
                    ),
                );
            }
            out.limits.push(rule);
        }
    }
    // Per-client limits first: a refused abuser must not spend the route's shared budget.
    out.limits.sort_by_key(|l| l.bucket.key.is_global());
    for (field, list, dst) in [
        ("allow", allow, &mut out.allow),
        ("deny", deny, &mut out.deny),
    ] {
        for (j, c) in list.iter().enumerate() {
            match units::cidr(c) {
                Ok(n) => dst.push(n),
                Err(m) => err(format!("{route_key}.{field}[{j}]"), m),
            }
        }
    }
    out
}

fn compile_limit(
    key: &str,
    t: &toml::Table,
    err: &mut impl FnMut(String, String),
) -> Option<LimitRule> {
    let mut ok = true;
    for k in t.keys() {
        if !LIMIT_KEYS.contains(&k.as_str()) {
            err(
                format!("{key}.{k}"),
                format!("unknown key; expected one of {}", LIMIT_KEYS.join(", ")),
            );
            ok = false;
        }
    }
    let mut bad = |field: &str, message: String| {
        err(format!("{key}.{field}"), message);
        ok = false;
    };

    let spec = match t.get("key") {
        None => Some(KeySpec::Parts(vec![KeyPart::ClientIp])),
        Some(toml::Value::String(s)) => parse_key_list(std::slice::from_ref(s))
            .map_err(|m| bad("key", m))
            .ok(),
        Some(toml::Value::Array(a)) => {
            let strs: Option<Vec<String>> =
                a.iter().map(|v| v.as_str().map(str::to_string)).collect();
            match strs {
                Some(s) if !s.is_empty() => parse_key_list(&s).map_err(|m| bad("key", m)).ok(),
                _ => {
                    bad("key", "expected a non-empty list of key names like [\"client_ip\", \"header:x-api-key\"]".into());
                    None
                }
            }
        }
        Some(v) => {
            bad("key", format!("{v}: expected a key name or a list of them"));
            None
        }
    };
    let rate = match t.get("rate") {
        None => {
            bad("rate", "missing: say how fast, e.g. rate = \"20/s\"".into());
            None
        }
        Some(toml::Value::String(s)) => units::rate(s).map_err(|m| bad("rate", m)).ok(),
        Some(v) => {
            bad("rate", format!("{v}: expected a rate like \"20/s\""));
            None
        }
    };
    // Required, not defaulted: the obvious default (one period's count) is the
    // `per_minute` trap that lets twice the rate through in the first period.
    let burst = match t.get("burst") {
        None => {
            bad(
                "burst",
                "missing: say how many requests may come at once, e.g. burst = 40".into(),
            );
            None
        }
        Some(toml::Value::Integer(n)) if *n >= 1 && *n <= u32::MAX as i64 => {
            NonZeroU32::new(*n as u32)
        }
        Some(v) => {
            bad("burst", format!("{v}: expected a whole number from 1"));
            None
        }
    };
    let prefix =
        |field: &str, max: u8, default: u8, bad: &mut dyn FnMut(&str, String)| match t.get(field) {
            None => default,
            Some(toml::Value::Integer(n)) if (0..=max as i64).contains(n) => *n as u8,
            Some(v) => {
                bad(
                    field,
                    format!("{v}: expected a prefix length from 0 to {max}"),
                );
                default
            }
        };
    let ipv4_prefix = prefix("ipv4_prefix", 32, DEFAULT_IPV4_PREFIX, &mut bad);
    let ipv6_prefix = prefix("ipv6_prefix", 128, DEFAULT_IPV6_PREFIX, &mut bad);
    let dry_run = match t.get("dry_run") {
        None => false,
        Some(toml::Value::Boolean(b)) => *b,
        Some(v) => {
            bad("dry_run", format!("{v}: expected true or false"));
            false
        }
    };
    let max_delay = match t.get("max_delay") {
        None => None,
        Some(toml::Value::String(s)) => match units::duration(s) {
            Ok(d) if !d.is_zero() => Some(d),
            Ok(_) => {
                bad("max_delay", format!("{s:?} must be above zero"));
                None
            }
            Err(m) => {
                bad("max_delay", m);
                None
            }
        },
        Some(v) => {
            bad(
                "max_delay",
                format!("{v}: expected a duration like \"500ms\""),
            );
            None
        }
    };
    let action = match t.get("action").map(|v| v.as_str()) {
        None | Some(Some("refuse")) => {
            if max_delay.is_some() {
                bad("max_delay", "only applies with action = \"delay\"".into());
            }
            Action::Refuse
        }
        Some(Some("delay")) => Action::Delay(max_delay.unwrap_or(DEFAULT_MAX_DELAY)),
        Some(_) => {
            bad("action", "expected \"refuse\" or \"delay\"".into());
            Action::Refuse
        }
    };
    let max_keys = match t.get("max_keys") {
        None => DEFAULT_MAX_KEYS,
        Some(toml::Value::Integer(n)) if *n >= 1 => *n as usize,
        Some(v) => {
            bad("max_keys", format!("{v}: expected a whole number from 1"));
            DEFAULT_MAX_KEYS
        }
    };
    let name = match t.get("name") {
        None => spec.as_ref().map(default_name).unwrap_or_default(),
        Some(toml::Value::String(s)) if valid_name(s) => s.clone(),
        Some(v) => {
            bad("name", format!("{v}: expected a name of letters, digits and \"-_.:+\" (it appears in metrics and headers)"));
            String::new()
        }
    };
    if !ok {
        return None;
    }
    Some(LimitRule {
        bucket: BucketRule {
            name,
            key: spec?,
            rate: rate?,
            burst: burst?,
            ipv4_prefix,
            ipv6_prefix,
            action,
            max_keys,
        },
        dry_run,
    })
}

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:+".contains(&b))
}

fn default_name(spec: &KeySpec) -> String {
    match spec {
        KeySpec::Global => "global".into(),
        KeySpec::Parts(parts) => parts
            .iter()
            .map(|p| match p {
                KeyPart::ClientIp => "client_ip".to_string(),
                KeyPart::Header(h) => format!("header:{h}"),
                KeyPart::Cookie(c) => format!("cookie:{c}"),
            })
            .collect::<Vec<_>>()
            .join("+"),
    }
}

fn parse_key_list(items: &[String]) -> Result<KeySpec, String> {
    let mut parts = Vec::new();
    for s in items {
        let s = s.trim();
        if s == "global" {
            if items.len() > 1 {
                return Err(
                    "\"global\" is the whole route and cannot be combined with other keys".into(),
                );
            }
            return Ok(KeySpec::Global);
        }
        let part = if s == "client_ip" {
            KeyPart::ClientIp
        } else if let Some(h) = s.strip_prefix("header:") {
            KeyPart::Header(
                HeaderName::from_bytes(h.trim().to_ascii_lowercase().as_bytes())
                    .map_err(|_| format!("{s:?}: {h:?} is not a header name"))?,
            )
        } else if let Some(c) = s.strip_prefix("cookie:") {
            let c = c.trim();
            if c.is_empty()
                || c.bytes()
                    .any(|b| b <= b' ' || b"=;,\"".contains(&b) || b >= 0x7f)
            {
                return Err(format!("{s:?}: {c:?} is not a cookie name"));
            }
            KeyPart::Cookie(c.to_string())
        } else {
            return Err(format!(
                "{s:?}: expected \"client_ip\", \"header:NAME\", \"cookie:NAME\" or \"global\""
            ));
        };
        if parts.contains(&part) {
            return Err(format!("{s:?} appears twice"));
        }
        parts.push(part);
    }
    Ok(KeySpec::Parts(parts))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(text: &str) -> Result<RouteRateLimits, Vec<KeyError>> {
        #[derive(serde::Deserialize)]
        struct T {
            rate_limits: Vec<toml::Table>,
            #[serde(default)]
            allow: Vec<String>,
            #[serde(default)]
            deny: Vec<String>,
        }
        let t: T = toml::from_str(text).unwrap();
        let mut errors = Vec::new();
        let out = compile("route[0]", &t.rate_limits, &t.allow, &t.deny, &mut errors);
        if errors.is_empty() {
            Ok(out)
        } else {
            Err(errors)
        }
    }

    #[test]
    fn a_full_limit_list_compiles_with_global_limits_last() {
        let l = limits(
            r#"
rate_limits = [
  { name = "site", key = "global", rate = "1000/s", burst = 2000 },
  { name = "per-ip", key = "client_ip", rate = "20/s", burst = 40, ipv6_prefix = 56 },
  { key = ["client_ip", "header:X-Api-Key"], rate = "600/m", burst = 10, action = "delay", max_delay = "500ms" },
  { key = "cookie:session", rate = "5/s", burst = 5, dry_run = true },
]
allow = ["10.0.0.0/8"]
deny = ["192.0.2.7"]
"#,
        )
        .unwrap();
        let names: Vec<&str> = l.limits.iter().map(|l| l.bucket.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "per-ip",
                "client_ip+header:x-api-key",
                "cookie:session",
                "site"
            ]
        );
        assert_eq!(l.limits[0].bucket.ipv6_prefix, 56);
        assert_eq!(
            l.limits[1].bucket.action,
            Action::Delay(Duration::from_millis(500))
        );
        assert_eq!(
            l.limits[1].bucket.rate.interval(),
            Duration::from_millis(100)
        );
        assert!(l.limits[2].dry_run);
        assert_eq!(l.limits[0].bucket.max_keys, DEFAULT_MAX_KEYS);
        assert_eq!(l.deny[0].prefix_len(), 32);
    }

    #[test]
    fn every_bad_field_is_reported_with_its_key_path() {
        let errs = limits(
            r#"
rate_limits = [
  { key = "ip", rate = "fast", bruts = 3 },
  { key = ["global", "client_ip"], rate = "1/s", burst = 0, action = "wait", ipv6_prefix = 129 },
  { name = "a b", rate = "1/s", burst = 1, max_delay = "1s" },
]
deny = ["not-an-ip"]
"#,
        )
        .unwrap_err();
        let keys: Vec<&str> = errs.iter().map(|e| e.key.as_str()).collect();
        for k in [
            "route[0].rate_limits[0].bruts",
            "route[0].rate_limits[0].key",
            "route[0].rate_limits[0].rate",
            "route[0].rate_limits[0].burst",
            "route[0].rate_limits[1].key",
            "route[0].rate_limits[1].burst",
            "route[0].rate_limits[1].action",
            "route[0].rate_limits[1].ipv6_prefix",
            "route[0].rate_limits[2].name",
            "route[0].rate_limits[2].max_delay",
            "route[0].deny[0]",
        ] {
            assert!(keys.contains(&k), "missing {k} in {errs:#?}");
        }
    }

    #[test]
    fn two_limits_with_one_name_are_an_error() {
        let errs =
            limits(r#"rate_limits = [{ rate = "1/s", burst = 1 }, { rate = "2/s", burst = 1 }]"#)
                .unwrap_err();
        assert_eq!(errs[0].key, "route[0].rate_limits[1].name");
    }
}
