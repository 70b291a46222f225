//! RFC 9111 rules for a shared cache: what may be stored, for how long it is fresh,
//! how old it is, and when a client's conditional request is answered with 304.
//!
//! Hand-written rather than `http-cache-semantics` because the route-level knobs
//! (`default_ttl` as the heuristic, `force_ttl`, graces, `strip_set_cookie`,
//! `ignore_cookies`, the targeted field) sit in the middle of these decisions; each
//! rule cites its section.

use std::time::{Duration, SystemTime};

use http::header::{
    HeaderName, AUTHORIZATION, CACHE_CONTROL, COOKIE, DATE, ETAG, EXPIRES, IF_MODIFIED_SINCE,
    IF_NONE_MATCH, LAST_MODIFIED, SET_COOKIE, VARY,
};
use http::{HeaderMap, StatusCode};

use super::config::{CacheRule, IgnoredCookies};

/// The targeted field for CDN caches (RFC 9213 §3); a gateway cache that operates on
/// behalf of the origin is one.
pub static CDN_CACHE_CONTROL: HeaderName = HeaderName::from_static("cdn-cache-control");

/// Whether a request speaks for one user, so its response is shared only when the
/// response says it may be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Personal {
    /// No credentials: anyone's request.
    No,
    /// It carries a cookie the route does not ignore (a session, a cart).
    Cookie,
    /// It carries `Authorization` (RFC 9111 §3.5).
    Authorization,
}

/// How personal a request is: `Authorization`, or a cookie not in `ignore`.
pub fn personal(req: &HeaderMap, ignore: &IgnoredCookies) -> Personal {
    if req.contains_key(AUTHORIZATION) {
        return Personal::Authorization;
    }
    let has_cookie = req
        .get_all(COOKIE)
        .iter()
        // An unreadable Cookie field is treated as personal: the safe side.
        .flat_map(|v| v.to_str().unwrap_or("?").split(';'))
        .map(|c| c.split_once('=').map_or(c, |(n, _)| n).trim())
        .any(|name| !name.is_empty() && !ignore.ignores(name));
    if has_cookie {
        Personal::Cookie
    } else {
        Personal::No
    }
}

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
        Self::parse_values(
            headers
                .get_all(CACHE_CONTROL)
                .iter()
                .filter_map(|v| v.to_str().ok()),
        )
    }

    /// Parses directive lists (the values of one field name).
    fn parse_values<'a>(values: impl Iterator<Item = &'a str>) -> Self {
        let mut cc = CacheControl::default();
        for s in values {
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

    /// Whether the response says any shared cache may use it for anyone: `public`,
    /// `s-maxage`, or `max-age` on a response that sets no cookie.
    fn explicitly_shareable(&self, resp: &HeaderMap) -> bool {
        self.public
            || self.s_maxage.is_some()
            || (self.max_age.is_some() && !resp.contains_key(SET_COOKIE))
    }
}

/// The directives that govern this cache for a response, and whether they came from a
/// targeted field.
///
/// RFC 9213 §2.1: the first of `targets` with a valid, non-empty value wins, and then
/// `Cache-Control` and `Expires` are ignored; else `Cache-Control` applies.
pub fn directives(resp: &HeaderMap, targets: &[&HeaderName]) -> (CacheControl, bool) {
    for name in targets {
        let values: Vec<&str> = resp
            .get_all(*name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        if values.is_empty() {
            continue;
        }
        // Several fields of one name are one list (RFC 9110 §5.3).
        let joined = values.join(",");
        if !joined.trim().is_empty() && sf_dictionary::valid(&joined) {
            return (
                CacheControl::parse_values(std::iter::once(joined.as_str())),
                true,
            );
        }
    }
    (CacheControl::parse(resp), false)
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
    /// The request carried a cookie and the response is not explicitly shareable.
    Cookie,
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
            NotStorable::Cookie => "cookie",
            NotStorable::VaryStar => "vary-star",
            NotStorable::NoFreshness => "no-freshness",
            NotStorable::TooLarge => "too-large",
        }
    }

    /// Whether the URL is likely to stay uncacheable, so "hit-for-miss" is worth
    /// remembering. An error status may change soon; a refusal because of the request's
    /// credentials says nothing about the next, anonymous, request.
    pub fn remember(self) -> bool {
        !matches!(
            self,
            NotStorable::Status | NotStorable::Cookie | NotStorable::Authorization
        )
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
    /// Whether the response said it may be shared (`public`, `s-maxage`, `max-age`
    /// without `Set-Cookie`), so it may answer a request that carries cookies.
    pub shareable: bool,
}

impl Lifetime {
    /// How long the store should keep it: fresh time plus the longest grace.
    pub fn keep(&self) -> Duration {
        self.fresh + self.stale_while_revalidate.max(self.stale_if_error)
    }
}

/// Statuses that get the route's `default_ttl` (or `force_ttl`) when the origin gives
/// no freshness: RFC 9110 §15.1's heuristically cacheable statuses, less the errors
/// (404, 405, 410, 414, 501). A guessed lifetime for an error turns one bad answer (a
/// 405 provoked by a header, a 404 during a deploy) into everyone's answer.
fn heuristically_cacheable(s: StatusCode) -> bool {
    matches!(s.as_u16(), 200 | 203 | 204 | 300 | 301 | 308)
}

/// Decides whether a response to a GET may be stored by a shared cache, and for how
/// long (RFC 9111 §3 and §4.2.1; RFC 9213 for the targeted fields).
///
/// `personal` is how personal the request that was sent to the origin was.
pub fn storable(
    personal: Personal,
    status: StatusCode,
    resp: &HeaderMap,
    rule: &CacheRule,
) -> Result<Lifetime, NotStorable> {
    let (cc, targeted) = directives(resp, &[&rule.targeted_field, &CDN_CACHE_CONTROL]);
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
    let shareable = cc.explicitly_shareable(resp);
    match personal {
        // §3.5: shared only if the response says so with public, s-maxage or
        // must-revalidate.
        Personal::Authorization if !(cc.public || cc.s_maxage.is_some() || cc.must_revalidate) => {
            return Err(NotStorable::Authorization)
        }
        // The same reasoning for cookies (RFC 9111 leaves them out): a page made for
        // one session is shared only when the origin says it is anyone's.
        Personal::Cookie if !shareable => return Err(NotStorable::Cookie),
        _ => {}
    }
    let fresh = freshness(status, resp, &cc, targeted, rule)?;
    // §4.2.4: must-revalidate, proxy-revalidate and s-maxage (§5.2.2.10, which implies
    // proxy-revalidate) forbid serving stale; so does no-cache. force_ttl overrides.
    let no_stale = rule.force_ttl.is_none()
        && (cc.must_revalidate || cc.proxy_revalidate || cc.s_maxage.is_some() || cc.no_cache);
    let grace = |origin: Option<u64>, route: Duration| {
        if no_stale {
            Duration::ZERO
        } else {
            origin.map(Duration::from_secs).unwrap_or(route)
        }
    };
    Ok(Lifetime {
        fresh,
        stale_while_revalidate: grace(cc.stale_while_revalidate, rule.stale_while_revalidate),
        stale_if_error: grace(cc.stale_if_error, rule.stale_if_error),
        shareable,
    })
}

/// The freshness lifetime (§4.2.1), or why there is none worth storing.
fn freshness(
    status: StatusCode,
    resp: &HeaderMap,
    cc: &CacheControl,
    targeted: bool,
    rule: &CacheRule,
) -> Result<Duration, NotStorable> {
    let has_validator = resp.contains_key(ETAG) || resp.contains_key(LAST_MODIFIED);
    let error = status.is_client_error() || status.is_server_error();
    let heuristic_ok = !error && (heuristically_cacheable(status) || cc.public);
    let fresh = if let Some(force) = rule.force_ttl.filter(|_| heuristic_ok) {
        force
    } else if cc.no_cache {
        // §5.2.2.4: storable, but every use needs validation: fresh for zero seconds.
        Duration::ZERO
    } else if let Some(s) = cc.s_maxage {
        // §4.2.1: s-maxage wins over max-age in a shared cache.
        Duration::from_secs(s)
    } else if let Some(m) = cc.max_age {
        Duration::from_secs(m)
    } else if let Some(expires) = resp.get(EXPIRES).filter(|_| !targeted) {
        // §5.3: an invalid Expires (such as "0") means already expired. RFC 9213 §2.1:
        // a targeted field overrides Expires too.
        let exp = expires
            .to_str()
            .ok()
            .and_then(|s| httpdate::parse_http_date(s).ok());
        let date = http_date(resp, DATE).unwrap_or_else(SystemTime::now);
        exp.and_then(|e| e.duration_since(date).ok())
            .unwrap_or(Duration::ZERO)
    } else if let Some(ttl) = rule.default_ttl.filter(|_| heuristic_ok) {
        // §4.2.2: heuristic freshness, only where the operator chose one.
        ttl
    } else if error {
        return Err(NotStorable::Status);
    } else {
        return Err(NotStorable::NoFreshness);
    };
    if fresh.is_zero() && !has_validator {
        return Err(NotStorable::NoFreshness);
    }
    Ok(fresh)
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

/// Validity of a Structured Fields dictionary (RFC 8941 §4.2.2), which is what a
/// targeted field must be (RFC 9213 §2): an invalid one is ignored as a whole.
///
/// Hand-written: only the yes/no is needed (the directives are then read as
/// `Cache-Control` ones), and it is a few dozen lines of the RFC's grammar.
mod sf_dictionary {
    /// Whether `s` parses as a dictionary.
    pub fn valid(s: &str) -> bool {
        let mut p = Parser {
            b: s.trim_matches(' ').as_bytes(),
            i: 0,
        };
        p.dictionary().is_some() && p.i == p.b.len()
    }

    struct Parser<'a> {
        b: &'a [u8],
        i: usize,
    }

    impl Parser<'_> {
        fn peek(&self) -> Option<u8> {
            self.b.get(self.i).copied()
        }

        fn eat(&mut self, c: u8) -> bool {
            let hit = self.peek() == Some(c);
            self.i += usize::from(hit);
            hit
        }

        fn skip(&mut self, ws: &[u8]) {
            while self.peek().is_some_and(|c| ws.contains(&c)) {
                self.i += 1;
            }
        }

        fn dictionary(&mut self) -> Option<()> {
            loop {
                self.key()?;
                if self.eat(b'=') {
                    self.member_value()?;
                } else {
                    self.parameters()?;
                }
                self.skip(b" \t");
                if self.peek().is_none() {
                    return Some(());
                }
                if !self.eat(b',') {
                    return None;
                }
                self.skip(b" \t");
                // A trailing comma is an error (§4.2.2 step 6).
                self.peek()?;
            }
        }

        fn key(&mut self) -> Option<()> {
            let start = self.i;
            if !self
                .peek()
                .is_some_and(|c| c.is_ascii_lowercase() || c == b'*')
            {
                return None;
            }
            while self.peek().is_some_and(|c| {
                c.is_ascii_lowercase() || c.is_ascii_digit() || b"_-.*".contains(&c)
            }) {
                self.i += 1;
            }
            (self.i > start).then_some(())
        }

        fn member_value(&mut self) -> Option<()> {
            if self.eat(b'(') {
                loop {
                    self.skip(b" ");
                    if self.eat(b')') {
                        break;
                    }
                    self.bare_item()?;
                    self.parameters()?;
                    if !matches!(self.peek(), Some(b' ' | b')')) {
                        return None;
                    }
                }
            } else {
                self.bare_item()?;
            }
            self.parameters()
        }

        fn parameters(&mut self) -> Option<()> {
            while self.eat(b';') {
                self.skip(b" ");
                self.key()?;
                if self.eat(b'=') {
                    self.bare_item()?;
                }
            }
            Some(())
        }

        fn bare_item(&mut self) -> Option<()> {
            match self.peek()? {
                b'-' | b'0'..=b'9' => self.number(),
                b'"' => self.string(),
                b':' => self.bytes(),
                b'?' => {
                    self.i += 1;
                    (self.eat(b'0') || self.eat(b'1')).then_some(())
                }
                c if c.is_ascii_alphabetic() || c == b'*' => {
                    self.i += 1;
                    while self.peek().is_some_and(|c| {
                        c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~:/".contains(&c)
                    }) {
                        self.i += 1;
                    }
                    Some(())
                }
                _ => None,
            }
        }

        fn number(&mut self) -> Option<()> {
            self.eat(b'-');
            let digits = |p: &mut Self| {
                let start = p.i;
                while p.peek().is_some_and(|c| c.is_ascii_digit()) {
                    p.i += 1;
                }
                p.i - start
            };
            let int = digits(self);
            if self.eat(b'.') {
                let frac = digits(self);
                ((1..=12).contains(&int) && (1..=3).contains(&frac)).then_some(())
            } else {
                (1..=15).contains(&int).then_some(())
            }
        }

        fn string(&mut self) -> Option<()> {
            self.i += 1;
            loop {
                match self.peek()? {
                    b'"' => {
                        self.i += 1;
                        return Some(());
                    }
                    b'\\' => {
                        self.i += 1;
                        if !(self.eat(b'"') || self.eat(b'\\')) {
                            return None;
                        }
                    }
                    0x20..=0x7e => self.i += 1,
                    _ => return None,
                }
            }
        }

        fn bytes(&mut self) -> Option<()> {
            self.i += 1;
            while self
                .peek()
                .is_some_and(|c| c.is_ascii_alphanumeric() || b"+/=".contains(&c))
            {
                self.i += 1;
            }
            self.eat(b':').then_some(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn rule() -> CacheRule {
        CacheRule {
            default_ttl: Some(Duration::from_secs(2)),
            force_ttl: None,
            stale_while_revalidate: Duration::from_secs(10),
            stale_if_error: Duration::from_secs(60),
            strip_set_cookie: false,
            max_object_size: 1 << 20,
            hit_for_miss_ttl: Duration::from_secs(10),
            coalesce_wait: Duration::from_secs(5),
            ignore_cookies: IgnoredCookies::default(),
            targeted_field: HeaderName::from_static("floodgate-cache-control"),
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
            Personal::No,
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
                Personal::No,
                StatusCode::OK,
                &h(&[("cache-control", "private, max-age=60")]),
                &r
            ),
            Err(NotStorable::Private)
        );
        assert_eq!(
            storable(
                Personal::No,
                StatusCode::OK,
                &h(&[("cache-control", "no-store")]),
                &r
            ),
            Err(NotStorable::NoStore)
        );
        assert_eq!(
            storable(
                Personal::No,
                StatusCode::OK,
                &h(&[("cache-control", "max-age=60"), ("set-cookie", "a=b")]),
                &r
            ),
            Err(NotStorable::SetCookie)
        );
        assert_eq!(
            storable(Personal::No, StatusCode::OK, &h(&[("vary", "*")]), &r),
            Err(NotStorable::VaryStar)
        );
    }

    #[test]
    fn an_authorized_request_is_shared_only_when_the_response_allows() {
        let auth = Personal::Authorization;
        let r = rule();
        assert_eq!(
            storable(
                auth,
                StatusCode::OK,
                &h(&[("cache-control", "max-age=60")]),
                &r
            ),
            Err(NotStorable::Authorization)
        );
        assert!(storable(
            auth,
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
            storable(Personal::No, StatusCode::OK, &h(&[]), &r)
                .unwrap()
                .fresh,
            Duration::from_secs(2)
        );
        assert_eq!(
            storable(Personal::No, StatusCode::INTERNAL_SERVER_ERROR, &h(&[]), &r),
            Err(NotStorable::Status)
        );
        let forced = CacheRule {
            force_ttl: Some(Duration::from_secs(1)),
            ..rule()
        };
        assert_eq!(
            storable(
                Personal::No,
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
    fn without_default_ttl_nothing_is_fresh_by_guesswork_and_errors_never_are() {
        let none = CacheRule {
            default_ttl: None,
            ..rule()
        };
        assert_eq!(
            storable(Personal::No, StatusCode::OK, &h(&[]), &none),
            Err(NotStorable::NoFreshness)
        );
        for status in [StatusCode::NOT_FOUND, StatusCode::METHOD_NOT_ALLOWED] {
            assert_eq!(
                storable(
                    Personal::No,
                    status,
                    &h(&[("cache-control", "public")]),
                    &rule()
                ),
                Err(NotStorable::Status),
                "{status}"
            );
        }
    }

    #[test]
    fn a_cookie_request_is_stored_only_for_an_explicitly_shareable_response() {
        let r = CacheRule {
            strip_set_cookie: true,
            ..rule()
        };
        let c = Personal::Cookie;
        assert_eq!(
            storable(c, StatusCode::OK, &h(&[]), &r),
            Err(NotStorable::Cookie)
        );
        for ok in ["public", "s-maxage=5", "max-age=5"] {
            assert!(
                storable(c, StatusCode::OK, &h(&[("cache-control", ok)]), &r).is_ok(),
                "{ok}"
            );
        }
        assert_eq!(
            storable(
                c,
                StatusCode::OK,
                &h(&[("cache-control", "max-age=5"), ("set-cookie", "a=b")]),
                &r
            ),
            Err(NotStorable::Cookie)
        );
    }

    #[test]
    fn ignored_and_own_cookies_do_not_make_a_request_personal() {
        let ignore = IgnoredCookies::default();
        assert_eq!(
            personal(
                &h(&[("cookie", "fg_pass_sale=x; fg_ticket_sale=y; fg_pow_sale=z")]),
                &ignore
            ),
            Personal::No
        );
        assert_eq!(
            personal(&h(&[("cookie", "fg_pass_sale=x; sid=1")]), &ignore),
            Personal::Cookie
        );
        assert_eq!(personal(&h(&[("cookie", " ; ")]), &ignore), Personal::No);
        assert_eq!(
            personal(&h(&[("authorization", "Basic x")]), &ignore),
            Personal::Authorization
        );
    }

    #[test]
    fn the_first_valid_targeted_field_wins_over_cache_control_and_expires() {
        let own = HeaderName::from_static("floodgate-cache-control");
        let targets = [&own, &CDN_CACHE_CONTROL];
        let resp = h(&[
            ("cache-control", "no-store"),
            ("cdn-cache-control", "max-age=600"),
        ]);
        let (cc, targeted) = directives(&resp, &targets);
        assert!(targeted && !cc.no_store && cc.max_age == Some(600));
        let resp = h(&[
            ("cache-control", "max-age=5"),
            ("floodgate-cache-control", "max-age=60,,"),
            ("cdn-cache-control", ""),
        ]);
        let (cc, targeted) = directives(&resp, &targets);
        assert!(
            !targeted && cc.max_age == Some(5),
            "invalid and empty are skipped"
        );
        let l = storable(
            Personal::No,
            StatusCode::OK,
            &h(&[("expires", "0"), ("cdn-cache-control", "max-age=60")]),
            &rule(),
        )
        .unwrap();
        assert_eq!(l.fresh, Duration::from_secs(60));
    }

    #[test]
    fn structured_field_dictionaries_are_told_from_junk() {
        for ok in [
            "max-age=60",
            "max-age=60, stale-while-revalidate=30",
            "no-store",
            "private, no-cache=\"set-cookie\"",
            "a=(1 2);x=?1, b=:aGk=:, c=1.5, d=tok/en",
            "none",
        ] {
            assert!(sf_dictionary::valid(ok), "{ok}");
        }
        for bad in [
            "max-age=60,,",
            "Max-Age=60",
            "max-age=",
            "a=1,",
            "a=\"x",
            "1a",
        ] {
            assert!(!sf_dictionary::valid(bad), "{bad}");
        }
    }

    #[test]
    fn expires_counts_from_date_and_invalid_expires_is_stale() {
        let r = rule();
        let l = storable(
            Personal::No,
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
            Personal::No,
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
