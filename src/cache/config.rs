//! The cache's config: the process-wide `[cache]` section and each route's `cache = {…}`,
//! compiled from their raw forms with every problem reported under its key path.

use std::time::Duration;

use http::HeaderName;
use serde::Deserialize;

use crate::config::units;
use crate::config::KeyError;

/// 256 MiB holds tens of thousands of product pages, a fraction of a small VM's memory.
pub const DEFAULT_CAPACITY: u64 = 256 * 1024 * 1024;
/// Pages and JSON fit in 1 MiB; larger objects (images, downloads) are better served by
/// a CDN and would crowd pages out of the cache.
pub const DEFAULT_MAX_OBJECT_SIZE: u64 = 1024 * 1024;
/// No heuristic freshness unless the operator sets one, as nginx: a page that says
/// nothing about caching is often personal (a cart count, a name), and guessing a
/// lifetime for it would serve one shopper's page to the next (RFC 9111 §4.2.2 allows,
/// never requires, a heuristic).
pub const DEFAULT_TTL: Option<Duration> = None;
/// No grace unless the origin (`stale-while-revalidate`) or the operator grants one: a
/// stale page served without permission can show a price or stock that is no longer
/// true (RFC 9111 §4.2.4: a cache MUST NOT serve stale unless allowed).
pub const DEFAULT_STALE_WHILE_REVALIDATE: Duration = Duration::ZERO;
/// No grace unless the origin (`stale-if-error`) or the operator grants one, for the
/// same reason (RFC 5861 §4 puts the permission with the origin).
pub const DEFAULT_STALE_IF_ERROR: Duration = Duration::ZERO;
/// The targeted field (RFC 9213 §2) aimed at floodgate alone, ahead of
/// `CDN-Cache-Control`: lets an origin behind floodgate and a CDN tell each its own
/// policy. Named after the product, as Fastly's and Akamai's are.
pub const DEFAULT_TARGETED_FIELD: &str = "floodgate-cache-control";
/// Cookies floodgate sets itself (the waiting room's ticket, pass and proof of work,
/// each named `<prefix>_<room>`): they say nothing about the shopper to the origin, so
/// they never make a request personal.
pub const OWN_COOKIE_PREFIXES: [&str; 3] = ["fg_ticket_", "fg_pass_", "fg_pow_"];
/// Long enough that the crowd behind an uncacheable URL does not queue behind each
/// other's fetches, short enough that a URL that becomes cacheable is soon cached.
pub const DEFAULT_HIT_FOR_MISS_TTL: Duration = Duration::from_secs(10);
/// A waiter gives up on a fill after this and goes to the origin itself (through the
/// admission queue, which protects the origin): longer than a normal page takes,
/// shorter than a shopper's patience.
pub const DEFAULT_COALESCE_WAIT: Duration = Duration::from_secs(5);

/// `[cache]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCacheSettings {
    pub capacity: Option<String>,
    pub max_object_size: Option<String>,
    pub targeted_field: Option<String>,
}

/// A route's `cache = { … }` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRouteCache {
    pub enabled: Option<bool>,
    pub default_ttl: Option<String>,
    pub force_ttl: Option<String>,
    pub stale_while_revalidate: Option<String>,
    pub stale_if_error: Option<String>,
    pub strip_set_cookie: Option<bool>,
    pub max_object_size: Option<String>,
    pub hit_for_miss_ttl: Option<String>,
    pub coalesce_wait: Option<String>,
    pub ignore_cookies: Option<Vec<String>>,
}

/// `[cache]`, compiled: the one store the whole process shares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheSettings {
    /// Bytes of stored responses (bodies, headers, keys) at most.
    pub capacity: u64,
    /// Default largest body stored; larger ones stream through uncached.
    pub max_object_size: u64,
    /// The targeted field honoured ahead of `CDN-Cache-Control` and `Cache-Control`.
    pub targeted_field: HeaderName,
}

impl Default for CacheSettings {
    fn default() -> Self {
        CacheSettings {
            capacity: DEFAULT_CAPACITY,
            max_object_size: DEFAULT_MAX_OBJECT_SIZE,
            targeted_field: HeaderName::from_static(DEFAULT_TARGETED_FIELD),
        }
    }
}

/// Cookie names that do not make a request personal: floodgate's own, and the route's
/// `ignore_cookies` (exact names, or prefixes written `name*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IgnoredCookies {
    exact: Vec<Box<str>>,
    prefixes: Vec<Box<str>>,
}

impl Default for IgnoredCookies {
    fn default() -> Self {
        IgnoredCookies {
            exact: Vec::new(),
            prefixes: OWN_COOKIE_PREFIXES.iter().map(|&c| c.into()).collect(),
        }
    }
}

impl IgnoredCookies {
    /// Whether a cookie of this name is left out of the "personal request" decision.
    pub fn ignores(&self, name: &str) -> bool {
        self.exact.iter().any(|e| **e == *name)
            || self.prefixes.iter().any(|p| name.starts_with(&**p))
    }
}

/// A route's cache rule, compiled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheRule {
    /// Freshness for responses that carry none (the RFC 9111 §4.2.2 heuristic); none
    /// unless set.
    pub default_ttl: Option<Duration>,
    /// Freshness imposed whatever the origin says (except `private`, `no-store`,
    /// `Set-Cookie`): micro-caching for sites that send `no-cache` on everything.
    pub force_ttl: Option<Duration>,
    /// Grace when the origin sends no `stale-while-revalidate`.
    pub stale_while_revalidate: Duration,
    /// Grace when the origin sends no `stale-if-error`.
    pub stale_if_error: Duration,
    /// Store responses with `Set-Cookie`, with the cookie removed from the stored copy.
    pub strip_set_cookie: bool,
    /// Largest body stored for this route.
    pub max_object_size: u64,
    /// How long a URL found uncacheable skips coalescing.
    pub hit_for_miss_ttl: Duration,
    /// How long a request waits for another request's fill.
    pub coalesce_wait: Duration,
    /// Cookies that do not make a request personal.
    pub ignore_cookies: IgnoredCookies,
    /// The targeted field honoured ahead of `CDN-Cache-Control` (from `[cache]`).
    pub targeted_field: HeaderName,
}

/// Compiles `[cache]`.
pub fn compile_settings(
    raw: Option<&RawCacheSettings>,
    errors: &mut Vec<KeyError>,
) -> CacheSettings {
    let d = CacheSettings::default();
    let Some(raw) = raw else { return d };
    CacheSettings {
        capacity: parse(
            errors,
            "cache.capacity",
            raw.capacity.as_deref(),
            d.capacity,
            units::size,
        ),
        max_object_size: parse(
            errors,
            "cache.max_object_size",
            raw.max_object_size.as_deref(),
            d.max_object_size,
            units::size,
        ),
        targeted_field: match raw.targeted_field.as_deref().map(targeted_field) {
            None => d.targeted_field,
            Some(Ok(n)) => n,
            Some(Err(message)) => {
                errors.push(KeyError {
                    key: "cache.targeted_field".into(),
                    message,
                });
                d.targeted_field
            }
        },
    }
}

fn targeted_field(s: &str) -> Result<HeaderName, String> {
    let name = HeaderName::from_bytes(s.trim().to_ascii_lowercase().as_bytes())
        .map_err(|_| format!("{s:?} is not a header field name"))?;
    if name == http::header::CACHE_CONTROL || name.as_str() == "cdn-cache-control" {
        return Err(format!(
            "{s:?} is already honoured; name a field targeted at floodgate"
        ));
    }
    Ok(name)
}

/// Compiles `ignore_cookies`: cookie names (RFC 6265 tokens), each optionally ending in
/// `*` for a prefix.
fn ignore_cookies(key: &str, raw: Option<&[String]>, errors: &mut Vec<KeyError>) -> IgnoredCookies {
    let mut out = IgnoredCookies::default();
    for (i, name) in raw.unwrap_or_default().iter().enumerate() {
        let (stem, prefix) = match name.strip_suffix('*') {
            Some(stem) => (stem, true),
            None => (name.as_str(), false),
        };
        // RFC 6265 §4.1.1: a cookie name is an RFC 2616 token.
        let token = !stem.is_empty()
            && stem
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'+-.^_`|~".contains(&b));
        if !token {
            errors.push(KeyError {
                key: format!("{key}.ignore_cookies[{i}]"),
                message: format!(
                    "{name:?} is not a cookie name (a token, optionally ending in `*` for a prefix)"
                ),
            });
        } else if prefix {
            out.prefixes.push(stem.into());
        } else {
            out.exact.push(stem.into());
        }
    }
    out
}

/// Compiles a route's `cache = {…}`; `None` when caching is off for the route.
pub fn compile_rule(
    key: &str,
    raw: &RawRouteCache,
    settings: &CacheSettings,
    errors: &mut Vec<KeyError>,
) -> Option<CacheRule> {
    let k = |f: &str| format!("{key}.{f}");
    let rule = CacheRule {
        default_ttl: parse(
            errors,
            k("default_ttl"),
            raw.default_ttl.as_deref(),
            DEFAULT_TTL,
            |s| units::duration(s).map(Some),
        ),
        force_ttl: raw.force_ttl.as_deref().map(|s| {
            parse(
                errors,
                k("force_ttl"),
                Some(s),
                Duration::ZERO,
                units::duration,
            )
        }),
        stale_while_revalidate: parse(
            errors,
            k("stale_while_revalidate"),
            raw.stale_while_revalidate.as_deref(),
            DEFAULT_STALE_WHILE_REVALIDATE,
            units::duration,
        ),
        stale_if_error: parse(
            errors,
            k("stale_if_error"),
            raw.stale_if_error.as_deref(),
            DEFAULT_STALE_IF_ERROR,
            units::duration,
        ),
        strip_set_cookie: raw.strip_set_cookie.unwrap_or(false),
        max_object_size: parse(
            errors,
            k("max_object_size"),
            raw.max_object_size.as_deref(),
            settings.max_object_size,
            units::size,
        ),
        hit_for_miss_ttl: parse(
            errors,
            k("hit_for_miss_ttl"),
            raw.hit_for_miss_ttl.as_deref(),
            DEFAULT_HIT_FOR_MISS_TTL,
            units::duration,
        ),
        coalesce_wait: parse(
            errors,
            k("coalesce_wait"),
            raw.coalesce_wait.as_deref(),
            DEFAULT_COALESCE_WAIT,
            units::duration,
        ),
        ignore_cookies: ignore_cookies(key, raw.ignore_cookies.as_deref(), errors),
        targeted_field: settings.targeted_field.clone(),
    };
    if rule.max_object_size > settings.capacity {
        errors.push(KeyError {
            key: k("max_object_size"),
            message: format!("larger than cache.capacity ({} bytes)", settings.capacity),
        });
    }
    raw.enabled.unwrap_or(true).then_some(rule)
}

fn parse<T>(
    errors: &mut Vec<KeyError>,
    key: impl Into<String>,
    v: Option<&str>,
    default: T,
    f: impl Fn(&str) -> Result<T, String>,
) -> T {
    match v.map(&f) {
        None => default,
        Some(Ok(t)) => t,
        Some(Err(message)) => {
            errors.push(KeyError {
                key: key.into(),
                message,
            });
            default
        }
    }
}
