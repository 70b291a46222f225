//! The cache's config: the process-wide `[cache]` section and each route's `cache = {…}`,
//! compiled from their raw forms with every problem reported under its key path.

use std::time::Duration;

use serde::Deserialize;

use crate::config::units;
use crate::config::KeyError;

/// 256 MiB holds tens of thousands of product pages, a fraction of a small VM's memory.
pub const DEFAULT_CAPACITY: u64 = 256 * 1024 * 1024;
/// Pages and JSON fit in 1 MiB; larger objects (images, downloads) are better served by
/// a CDN and would crowd pages out of the cache.
pub const DEFAULT_MAX_OBJECT_SIZE: u64 = 1024 * 1024;
/// Micro-caching: two seconds turns a crowd into one origin request per page per two
/// seconds, short enough that a price change shows almost at once.
pub const DEFAULT_TTL: Duration = Duration::from_secs(2);
/// Varnish's default grace is 10 s: a stale page is served while one refresh runs.
pub const DEFAULT_STALE_WHILE_REVALIDATE: Duration = Duration::from_secs(10);
/// With the origin down, a page up to a minute old beats an error page on event day.
pub const DEFAULT_STALE_IF_ERROR: Duration = Duration::from_secs(60);
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
}

/// `[cache]`, compiled: the one store the whole process shares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheSettings {
    /// Bytes of stored responses (bodies, headers, keys) at most.
    pub capacity: u64,
    /// Default largest body stored; larger ones stream through uncached.
    pub max_object_size: u64,
}

impl Default for CacheSettings {
    fn default() -> Self {
        CacheSettings {
            capacity: DEFAULT_CAPACITY,
            max_object_size: DEFAULT_MAX_OBJECT_SIZE,
        }
    }
}

/// A route's cache rule, compiled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheRule {
    /// Freshness for responses that carry none (the RFC 9111 §4.2.2 heuristic).
    pub default_ttl: Duration,
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
    }
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
            units::duration,
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
