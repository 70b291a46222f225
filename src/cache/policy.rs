//! RFC 9111 rules for a shared cache: what may be stored, for how long it is fresh,
//! how old it is, and when a client's conditional request is answered with 304.
//!
//! Hand-written rather than `http-cache-semantics` because the route-level knobs
//! (`default_ttl` as the heuristic, `force_ttl`, grace defaults, `strip_set_cookie`)
//! sit in the middle of these decisions; each rule cites its section.

use std::time::{Duration, SystemTime};

use http::header::{
    AUTHORIZATION, CACHE_CONTROL, DATE, ETAG, EXPIRES, IF_MODIFIED_SINCE, IF_NONE_MATCH,
    LAST_MODIFIED, SET_COOKIE, VARY,
};
use http::{HeaderMap, StatusCode};

use super::config::CacheRule;

/// The `Cache-Control` directives a shared cache acts on (RFC 9111 §5.2).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CacheControl {
    /// `no-store` (§5.2.2.5).
    pub no_store: bool,
    /// `no-cache`, qualified or not (§5.2.2.4; a qualified one is treated as unqualified).
    pub no_cache: bool,
    /// `private`, qualified or not (§5.2.2.7: a shared cache MUST NOT store it).
    pub private: bool,
    /// `public` (§5.2.2.9).
    pub public: bool,
    /// `must-revalidate` (§5.2.2.2).
    pub must_revalidate: bool,
    /// `proxy-revalidate` (§5.2.2.8).
    pub proxy_revalidate: bool,
    /// `max-age` in seconds (§5.2.2.1).
    pub max_age: Option<u64>,
    /// `s-maxage` in seconds (§5.2.2.10).
    pub s_maxage: Option<u64>,
    /// `stale-while-revalidate` in seconds (RFC 5861 §3).
    pub stale_while_revalidate: Option<u64>,
    /// `stale-if-error` in seconds (RFC 5861 §4).
    pub stale_if_error: Option<u64>,
}

impl CacheControl {
    /// Parses every `Cache-Control` field of `headers` as one list.
    pub fn parse(headers: &HeaderMap) -> Self {
        let mut cc = CacheControl::default();
        for v in headers.get_all(CACHE_CONTROL) {
            let Ok(s) = v.to_str() else { continue };
            for d in s.split(',') {
                let (name, arg) = match d.split_once('=') {
                    Some((n, a)) => (n.trim(), Some(a.trim().trim_matches('"'))),
                    None => (d.trim(), None),
                };
                // §4.2.1: a duplicate or invalid delta-seconds makes freshness the lowest
                // value; an unparsable one counts as 0 (stale), the safe side.
                let secs = || arg.map(|a| a.parse::<u64>().unwrap_or(0));
                let min = |old: Option<u64>, new: Option<u64>| match (old, new) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
                match name.to_ascii_lowercase().as_str() {
                    "no-store" => cc.no_store = true,
                    "no-cache" => cc.no_cache = true,
                    "private" => cc.private = true,
                    "public" => cc.public = true,
                    "must-revalidate" => cc.must_revalidate = true,
                    "proxy-revalidate" => cc.proxy_revalidate = true,
                    "max-age" => cc.max_age = min(cc.max_age, secs().or(Some(0))),
                    "s-maxage" => cc.s_maxage = min(cc.s_maxage, secs().or(Some(0))),
                    "stale-while-revalidate" => cc.stale_while_revalidate = secs(),
                    "stale-if-error" => cc.stale_if_error = secs(),
                    _ => {}
                }
            }
        }
        cc
    }
}

/// Why a response is not stored; also the `detail` of its `Cache-Status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotStorable {
    /// A status this cache does not store (206, 304, 1xx, or an error without freshness).
    Status,
    /// `Cache-Control: no-store`.
    NoStore,
    /// `Cache-Control: private`.
    Private,
    /// The response sets a cookie and the route does not strip it.
    SetCookie,
    /// The request carried `Authorization` and the response does not allow sharing.
    Authorization,
    /// `Vary: *`.
    VaryStar,
    /// No freshness and no validators: storing it would never help.
    NoFreshness,
    /// The body is larger than the route's `max_object_size`.
    TooLarge,
}

impl NotStorable {
    /// A short name for logs and `Cache-Status` detail.
    pub fn as_str(self) -> &'static str {
        match self {
            NotStorable::Status => "status",
            NotStorable::NoStore => "no-store",
            NotStorable::Private => "private",
            NotStorable::SetCookie => "set-cookie",
            NotStorable::Authorization => "authorization",
            NotStorable::VaryStar => "vary-star",
            NotStorable::NoFreshness => "no-freshness",
            NotStorable::TooLarge => "too-large",
        }
    }

    /// Whether the URL is likely to stay uncacheable, so "hit-for-miss" is worth
    /// remembering. An error status or a too-fresh-to-tell answer may change soon.
    pub fn remember(self) -> bool {
        !matches!(self, NotStorable::Status)
    }
}

/// How long a stored response may be used, decided when it is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lifetime {
    /// The freshness lifetime (§4.2.1).
    pub fresh: Duration,
    /// How long past freshness it may be served while one refresh runs.
    pub stale_while_revalidate: Duration,
    /// How long past freshness it may be served when the origin fails.
    pub stale_if_error: Duration,
}

impl Lifetime {
    /// How long the store should keep it: fresh time plus the longest grace.
    pub fn keep(&self) -> Duration {
        self.fresh + self.stale_while_revalidate.max(self.stale_if_error)
    }
}

/// Statuses that are "heuristically cacheable" (RFC 9110 §15.1): only these get the
/// route's `default_ttl` (or `force_ttl`) when the origin says nothing.
fn heuristically_cacheable(s: StatusCode) -> bool {
    matches!(
        s.as_u16(),
        200 | 203 | 204 | 300 | 301 | 308 | 404 | 405 | 410 | 414 | 501
    )
}

/// Decides whether a response to a GET may be stored by a shared cache, and for how
/// long (RFC 9111 §3 and §4.2.1).
///
/// `req` is the request that was sent to the origin; `response_time` and `date` feed
/// the `Expires` computation.
pub fn storable(
    req: &HeaderMap,
    status: StatusCode,
    resp: &HeaderMap,
    rule: &CacheRule,
) -> Result<Lifetime, NotStorable> {
    let cc = CacheControl::parse(resp);
    // §3: the status must be final and understood; no range support, so no 206.
    if status.is_informational()
        || status == StatusCode::PARTIAL_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        return Err(NotStorable::Status);
    }
    // §3 / §5.2.2.5 / §5.2.2.7.
    if cc.no_store {
        return Err(NotStorable::NoStore);
    }
    if cc.private {
        return Err(NotStorable::Private);
    }
    // §4.1: `Vary: *` never matches a later request.
    if resp.get_all(VARY).iter().any(|v| {
        v.to_str()
            .is_ok_and(|s| s.split(',').any(|t| t.trim() == "*"))
    }) {
        return Err(NotStorable::VaryStar);
    }
    // Not in RFC 9111 (which leaves Set-Cookie to §7.3 of RFC 6265's advice), but the
    // product rule: a cookie is one user's, never another's.
    if resp.contains_key(SET_COOKIE) && !rule.strip_set_cookie {
        return Err(NotStorable::SetCookie);
    }
    // §3.5: a response to a request with Authorization is shared only if the response
    // says so with public, s-maxage or must-revalidate.
    if req.contains_key(AUTHORIZATION)
        && !(cc.public || cc.s_maxage.is_some() || cc.must_revalidate)
    {
        return Err(NotStorable::Authorization);
    }
    let has_validator = resp.contains_key(ETAG) || resp.contains_key(LAST_MODIFIED);
    let heuristic_ok = heuristically_cacheable(status);
    let fresh = if let Some(force) = rule.force_ttl.filter(|_| heuristic_ok) {
        force
    } else if cc.no_cache {
        // §5.2.2.4: storable, but every use needs validation: fresh for zero seconds.
        if !has_validator {
            return Err(NotStorable::NoFreshness);
        }
        Duration::ZERO
    } else if let Some(s) = cc.s_maxage {
        // §4.2.1: s-maxage wins over max-age in a shared cache.
        Duration::from_secs(s)
    } else if let Some(m) = cc.max_age {
        Duration::from_secs(m)
    } else if let Some(expires) = resp.get(EXPIRES) {
        // §5.3: an invalid Expires (such as "0") means already expired.
        let exp = expires
            .to_str()
            .ok()
            .and_then(|s| httpdate::parse_http_date(s).ok());
        let date = http_date(resp, DATE).unwrap_or_else(SystemTime::now);
        exp.and_then(|e| e.duration_since(date).ok())
            .unwrap_or(Duration::ZERO)
    } else if heuristic_ok || cc.public {
        // §4.2.2: heuristic freshness, with the route's default_ttl as the heuristic.
        rule.default_ttl
    } else {
        return Err(NotStorable::Status);
    };
    if fresh.is_zero() && !has_validator {
        return Err(NotStorable::NoFreshness);
    }
    // §4.2.4: must-revalidate, proxy-revalidate and s-maxage (§5.2.2.10, which implies
    // proxy-revalidate) forbid serving stale; so does no-cache. force_ttl overrides.
    let no_stale = rule.force_ttl.is_none()
        && (cc.must_revalidate || cc.proxy_revalidate || cc.s_maxage.is_some() || cc.no_cache);
    let grace = |origin: Option<u64>, default: Duration| {
        if no_stale {
            Duration::ZERO
        } else {
            origin.map(Duration::from_secs).unwrap_or(default)
        }
    };
    Ok(Lifetime {
        fresh,
        stale_while_revalidate: grace(cc.stale_while_revalidate, rule.stale_while_revalidate),
        stale_if_error: grace(cc.stale_if_error, rule.stale_if_error),
    })
}

/// A date header, parsed.
pub fn http_date(h: &HeaderMap, name: http::header::HeaderName) -> Option<SystemTime> {
    h.get(name)?
        .to_str()
        .ok()
        .and_then(|s| httpdate::parse_http_date(s).ok())
}

/// The age a response had when it arrived (RFC 9111 §4.2.3 `corrected_initial_age`).
pub fn initial_age(
    resp: &HeaderMap,
    request_time: SystemTime,
    response_time: SystemTime,
) -> Duration {
    let age_value = resp
        .get(http::header::AGE)
        .and_then(|v| v.to_str().ok()?.trim().parse::<u64>().ok())
        .map(Duration::from_secs)
        .unwrap_or_default();
    let apparent_age = http_date(resp, DATE)
        .and_then(|d| response_time.duration_since(d).ok())
        .unwrap_or_default();
    let response_delay = response_time
        .duration_since(request_time)
        .unwrap_or_default();
    apparent_age.max(age_value + response_delay)
}

/// Whether a client's conditional GET/HEAD is satisfied by a stored response, so the
/// answer is 304 (RFC 9110 §13.1.2, §13.1.3; §13.2.2 evaluation order).
pub fn not_modified(req: &HeaderMap, stored: &HeaderMap) -> bool {
    if let Some(inm) = req.get(IF_NONE_MATCH).and_then(|v| v.to_str().ok()) {
        let Some(etag) = stored.get(ETAG).and_then(|v| v.to_str().ok()) else {
            return inm.trim() == "*";
        };
        // §8.8.3.2: If-None-Match uses the weak comparison.
        let opaque = |t: &str| t.trim().trim_start_matches("W/").to_string();
        let mine = opaque(etag);
        return inm.split(',').any(|t| t.trim() == "*" || opaque(t) == mine);
    }
    // §13.1.3: If-Modified-Since is ignored when If-None-Match is present.
    match (
        http_date(req, IF_MODIFIED_SINCE),
        http_date(stored, LAST_MODIFIED),
    ) {
        (Some(since), Some(modified)) => modified <= since,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn rule() -> CacheRule {
        CacheRule {
            default_ttl: Duration::from_secs(2),
            force_ttl: None,
            stale_while_revalidate: Duration::from_secs(10),
            stale_if_error: Duration::from_secs(60),
            strip_set_cookie: false,
            max_object_size: 1 << 20,
            hit_for_miss_ttl: Duration::from_secs(10),
            coalesce_wait: Duration::from_secs(5),
        }
    }

    fn h(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.append(*k, HeaderValue::from_static(v));
        }
        m
    }

    #[test]
    fn s_maxage_wins_over_max_age_and_forbids_stale() {
        let l = storable(
            &h(&[]),
            StatusCode::OK,
            &h(&[("cache-control", "max-age=5, s-maxage=30")]),
            &rule(),
        )
        .unwrap();
        assert_eq!(l.fresh, Duration::from_secs(30));
        assert_eq!(l.stale_if_error, Duration::ZERO);
    }

    #[test]
    fn private_no_store_and_cookies_are_never_stored() {
        let r = rule();
        assert_eq!(
            storable(
                &h(&[]),
                StatusCode::OK,
                &h(&[("cache-control", "private, max-age=60")]),
                &r
            ),
            Err(NotStorable::Private)
        );
        assert_eq!(
            storable(
                &h(&[]),
                StatusCode::OK,
                &h(&[("cache-control", "no-store")]),
                &r
            ),
            Err(NotStorable::NoStore)
        );
        assert_eq!(
            storable(
                &h(&[]),
                StatusCode::OK,
                &h(&[("cache-control", "max-age=60"), ("set-cookie", "a=b")]),
                &r
            ),
            Err(NotStorable::SetCookie)
        );
        assert_eq!(
            storable(&h(&[]), StatusCode::OK, &h(&[("vary", "*")]), &r),
            Err(NotStorable::VaryStar)
        );
    }

    #[test]
    fn an_authorized_request_is_shared_only_when_the_response_allows() {
        let auth = h(&[("authorization", "Bearer x")]);
        let r = rule();
        assert_eq!(
            storable(
                &auth,
                StatusCode::OK,
                &h(&[("cache-control", "max-age=60")]),
                &r
            ),
            Err(NotStorable::Authorization)
        );
        assert!(storable(
            &auth,
            StatusCode::OK,
            &h(&[("cache-control", "public, max-age=60")]),
            &r
        )
        .is_ok());
    }

    #[test]
    fn heuristic_freshness_is_the_route_default_and_only_for_heuristic_statuses() {
        let r = rule();
        assert_eq!(
            storable(&h(&[]), StatusCode::OK, &h(&[]), &r)
                .unwrap()
                .fresh,
            Duration::from_secs(2)
        );
        assert_eq!(
            storable(&h(&[]), StatusCode::INTERNAL_SERVER_ERROR, &h(&[]), &r),
            Err(NotStorable::Status)
        );
        let forced = CacheRule {
            force_ttl: Some(Duration::from_secs(1)),
            ..rule()
        };
        assert_eq!(
            storable(
                &h(&[]),
                StatusCode::OK,
                &h(&[("cache-control", "no-cache")]),
                &forced
            )
            .unwrap()
            .fresh,
            Duration::from_secs(1)
        );
    }

    #[test]
    fn expires_counts_from_date_and_invalid_expires_is_stale() {
        let r = rule();
        let l = storable(
            &h(&[]),
            StatusCode::OK,
            &h(&[
                ("date", "Mon, 23 Nov 2026 08:00:00 GMT"),
                ("expires", "Mon, 23 Nov 2026 08:00:30 GMT"),
                ("etag", "\"a\""),
            ]),
            &r,
        )
        .unwrap();
        assert_eq!(l.fresh, Duration::from_secs(30));
        let l = storable(
            &h(&[]),
            StatusCode::OK,
            &h(&[("expires", "0"), ("etag", "\"a\"")]),
            &r,
        )
        .unwrap();
        assert_eq!(l.fresh, Duration::ZERO);
    }

    #[test]
    fn age_is_the_larger_of_apparent_age_and_the_age_header_plus_delay() {
        let now = SystemTime::now();
        let resp = h(&[("age", "7")]);
        assert_eq!(
            initial_age(&resp, now - Duration::from_secs(1), now),
            Duration::from_secs(8)
        );
    }

    #[test]
    fn if_none_match_uses_weak_comparison_and_beats_if_modified_since() {
        let stored = h(&[
            ("etag", "\"v1\""),
            ("last-modified", "Mon, 23 Nov 2026 08:00:00 GMT"),
        ]);
        assert!(not_modified(&h(&[("if-none-match", "W/\"v1\"")]), &stored));
        assert!(!not_modified(
            &h(&[
                ("if-none-match", "\"v2\""),
                ("if-modified-since", "Mon, 23 Nov 2026 09:00:00 GMT")
            ]),
            &stored
        ));
        assert!(not_modified(
            &h(&[("if-modified-since", "Mon, 23 Nov 2026 09:00:00 GMT")]),
            &stored
        ));
    }
}
