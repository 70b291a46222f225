//! The request edge: what a request must look like before any route, limiter, room or
//! cache sees it.
//!
//! - **Host** (`Host` or `:authority`): one value, an RFC 3986 reg-name or IP literal
//!   with an optional numeric port ≤ 65535 (RFC 9112 §3.2, RFC 9113 §8.3.1). Anything
//!   else is 400 and never reaches an origin.
//! - **Path**: one normal form for everyone ([`normalize_path`]): unreserved characters
//!   percent-decoded, dot segments removed (RFC 3986 §5.2.4), repeated slashes merged;
//!   what cannot be normalised safely (`%2F`, `\`, `%5C`, NUL, `..;`) is 400. Routing,
//!   the waiting room's `paths`, priority rules, the cache key and the origin all see
//!   the same path, so `/static/../products/1` cannot take a side door.
//! - **Methods** refused at the edge (`TRACE`, `CONNECT`): 405.
//! - **Headers** that only a trusted proxy may set, and override headers nobody may set
//!   ([`HeaderList`]), removed before the forwarding fields are written.
//!
//! Every default is in `docs/hardening.md` with its reason.

use std::borrow::Cow;
use std::net::Ipv6Addr;

use http::header::{HeaderName, HeaderValue, HOST};
use http::{HeaderMap, Method, Request, Version};

use crate::config::KeyError;
use crate::error::GatewayError;

/// Remove dot segments and decode unreserved escapes, as Envoy's `normalize_path`:
/// the origin (nginx, PHP, Go, Java) normalises anyway, so the gateway must decide on
/// the same path the origin will serve.
pub const DEFAULT_NORMALIZE_PATH: bool = true;
/// Merge `//` into `/`, as Envoy's `merge_slashes`: most origins serve `//products` as
/// `/products`, so a rule on `/products` must see it that way too.
pub const DEFAULT_MERGE_SLASHES: bool = true;
/// A reverse proxy is not a forward proxy (`CONNECT`), and `TRACE` echoes the request
/// back, cookies and all (cross-site tracing); neither has a use on a shop.
pub const DEFAULT_REFUSED_METHODS: &[&str] = &["TRACE", "CONNECT"];
/// Fields that say who the client is or how it connected: only a trusted proxy can
/// vouch for them, so from anyone else they are removed (and the gateway writes its own
/// `X-Forwarded-For`, `-Proto`, `-Host` and `X-Real-IP`).
pub const DEFAULT_UNTRUSTED_HEADERS: &[&str] = &[
    "forwarded",
    "x-forwarded-*",
    "x-real-ip",
    "x-client-ip",
    "true-client-ip",
    "x-cluster-client-ip",
];
/// Fields that make an origin serve another URL, host or method than the one in the
/// cache key and in the routing decision (cache poisoning, rule bypass). A trusted proxy
/// forwards them from its own clients, so they are removed from every request.
pub const DEFAULT_STRIP_HEADERS: &[&str] = &[
    "x-original-url",
    "x-rewrite-url",
    "x-host",
    "x-forwarded-scheme",
    "x-forwarded-server",
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
];

/// `[server]` edge keys, compiled.
#[derive(Debug, Clone)]
pub struct EdgeConfig {
    /// Decode unreserved escapes and remove dot segments before routing.
    pub normalize_path: bool,
    /// Merge repeated slashes before routing.
    pub merge_slashes: bool,
    /// Methods answered 405 at the edge.
    pub refused_methods: Vec<Method>,
    /// The `Allow` field of that 405: the standard methods that are not refused.
    pub allow: HeaderValue,
    /// Removed from requests whose peer is not a trusted proxy.
    pub untrusted_headers: HeaderList,
    /// Removed from every request.
    pub strip_headers: HeaderList,
}

impl Default for EdgeConfig {
    fn default() -> Self {
        let list = |names: &[&str]| HeaderList::parse("", names, &mut Vec::new());
        let refused: Vec<Method> = DEFAULT_REFUSED_METHODS
            .iter()
            .map(|m| Method::from_bytes(m.as_bytes()).expect("a method"))
            .collect();
        EdgeConfig {
            normalize_path: DEFAULT_NORMALIZE_PATH,
            merge_slashes: DEFAULT_MERGE_SLASHES,
            allow: allow_field(&refused),
            refused_methods: refused,
            untrusted_headers: list(DEFAULT_UNTRUSTED_HEADERS),
            strip_headers: list(DEFAULT_STRIP_HEADERS),
        }
    }
}

/// The raw `[server]` edge keys, as written.
#[derive(Debug, Default)]
pub struct RawEdge<'a> {
    /// `server.normalize_path`.
    pub normalize_path: Option<bool>,
    /// `server.merge_slashes`.
    pub merge_slashes: Option<bool>,
    /// `server.refused_methods`.
    pub refused_methods: Option<&'a [String]>,
    /// `server.untrusted_headers`.
    pub untrusted_headers: Option<&'a [String]>,
    /// `server.strip_headers`.
    pub strip_headers: Option<&'a [String]>,
}

/// Compiles the edge keys of `[server]`; problems are appended with their key paths.
pub fn compile(raw: &RawEdge<'_>, errors: &mut Vec<KeyError>) -> EdgeConfig {
    let mut cfg = EdgeConfig {
        normalize_path: raw.normalize_path.unwrap_or(DEFAULT_NORMALIZE_PATH),
        merge_slashes: raw.merge_slashes.unwrap_or(DEFAULT_MERGE_SLASHES),
        ..EdgeConfig::default()
    };
    if let Some(methods) = raw.refused_methods {
        cfg.refused_methods = Vec::new();
        for (i, m) in methods.iter().enumerate() {
            match Method::from_bytes(m.trim().to_ascii_uppercase().as_bytes()) {
                Ok(m) => cfg.refused_methods.push(m),
                Err(_) => errors.push(KeyError {
                    key: format!("server.refused_methods[{i}]"),
                    message: format!("{m:?} is not a method like \"TRACE\""),
                }),
            }
        }
    }
    cfg.allow = allow_field(&cfg.refused_methods);
    if let Some(names) = raw.untrusted_headers {
        cfg.untrusted_headers = HeaderList::parse("server.untrusted_headers", names, errors);
    }
    if let Some(names) = raw.strip_headers {
        cfg.strip_headers = HeaderList::parse("server.strip_headers", names, errors);
    }
    cfg
}

/// The standard methods (RFC 9110 §9, RFC 5789) minus the refused ones.
fn allow_field(refused: &[Method]) -> HeaderValue {
    let all = [
        Method::GET,
        Method::HEAD,
        Method::POST,
        Method::PUT,
        Method::PATCH,
        Method::DELETE,
        Method::OPTIONS,
        Method::CONNECT,
        Method::TRACE,
    ];
    let allowed: Vec<&str> = all
        .iter()
        .filter(|m| !refused.contains(m))
        .map(Method::as_str)
        .collect();
    HeaderValue::from_str(&allowed.join(", ")).expect("method names are valid")
}

/// Header names to remove: exact names, and prefixes written `x-forwarded-*`.
#[derive(Debug, Clone, Default)]
pub struct HeaderList {
    exact: Vec<HeaderName>,
    prefixes: Vec<Box<str>>,
}

impl HeaderList {
    /// Parses names (`x-real-ip`) and prefixes (`x-forwarded-*`), case-insensitively.
    fn parse<S: AsRef<str>>(key: &str, names: &[S], errors: &mut Vec<KeyError>) -> Self {
        let mut list = HeaderList::default();
        for (i, n) in names.iter().enumerate() {
            let n = n.as_ref().trim().to_ascii_lowercase();
            let (name, prefix) = match n.strip_suffix('*') {
                Some(p) => (p, true),
                None => (n.as_str(), false),
            };
            match HeaderName::from_bytes(name.as_bytes()) {
                Ok(h) if prefix => list.prefixes.push(h.as_str().into()),
                Ok(h) => list.exact.push(h),
                Err(_) => errors.push(KeyError {
                    key: format!("{key}[{i}]"),
                    message: format!(
                        "{n:?} is not a header name like \"x-real-ip\" or a prefix like \"x-forwarded-*\""
                    ),
                }),
            }
        }
        list
    }

    /// Whether `name` is on the list.
    pub fn contains(&self, name: &HeaderName) -> bool {
        self.exact.contains(name)
            || self
                .prefixes
                .iter()
                .any(|p| name.as_str().starts_with(&**p))
    }

    /// Removes every field on the list from `headers`.
    pub fn remove_from(&self, headers: &mut HeaderMap) {
        if self.exact.is_empty() && self.prefixes.is_empty() {
            return;
        }
        crate::forwarding::remove_where(headers, |k| self.contains(k));
    }
}

/// The request's authority, checked: `:authority` (HTTP/2, or an HTTP/1.1
/// absolute-form target) or the one `Host` field. `""` for an HTTP/1.0 request
/// without one.
///
/// RFC 9112 §3.2: more than one `Host` field, or an invalid one, is 400; RFC 9113
/// §8.3.1: a `Host` that names another authority than `:authority` is malformed.
pub fn request_authority<B>(req: &Request<B>) -> Result<&str, GatewayError> {
    let mut hosts = req.headers().get_all(HOST).iter();
    let host = hosts.next();
    if hosts.next().is_some() {
        return Err(GatewayError::BadRequest("more than one Host field"));
    }
    let host = match host {
        Some(v) => {
            let s = v
                .to_str()
                .map_err(|_| GatewayError::BadRequest("Host header is not text"))?;
            if !valid_authority(s) {
                return Err(GatewayError::BadRequest("invalid Host header"));
            }
            Some(s)
        }
        None => None,
    };
    match (req.uri().authority(), host) {
        (Some(a), host) => {
            let a = a.as_str();
            if !valid_authority(a) {
                return Err(GatewayError::BadRequest("invalid request authority"));
            }
            if req.version() == Version::HTTP_2 && host.is_some_and(|h| !h.eq_ignore_ascii_case(a))
            {
                return Err(GatewayError::BadRequest("Host differs from :authority"));
            }
            // HTTP/1.1 absolute-form: the target's authority wins over Host (RFC 9112 §3.2.2).
            Ok(a)
        }
        (None, Some(h)) => Ok(h),
        (None, None) if req.version() == Version::HTTP_10 => Ok(""),
        (None, None) => Err(GatewayError::BadRequest("missing Host header")),
    }
}

/// `host [ ":" port ]` where host is an RFC 3986 reg-name, IPv4 or `[IPv6]` literal and
/// port is 1 to 5 digits up to 65535. Empty is valid (RFC 9112 §3.2: a target without
/// authority), but a port without a host is not.
pub fn valid_authority(s: &str) -> bool {
    if s.is_empty() {
        return true;
    }
    let b = s.as_bytes();
    let (host, port) = if b[0] == b'[' {
        let Some(end) = s.find(']') else { return false };
        let rest = &s[end + 1..];
        let port = match rest.strip_prefix(':') {
            Some(p) => Some(p),
            None if rest.is_empty() => None,
            None => return false,
        };
        // IPvFuture and zone identifiers have no business in a Host header.
        if s[1..end].parse::<Ipv6Addr>().is_err() {
            return false;
        }
        (&s[..=end], port)
    } else {
        match s.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (s, None),
        }
    };
    if let Some(p) = port {
        let digits = !p.is_empty() && p.len() <= 5 && p.bytes().all(|c| c.is_ascii_digit());
        if !digits || p.parse::<u32>().map_or(true, |n| n > 65535) {
            return false;
        }
    }
    host.starts_with('[') || (!host.is_empty() && valid_reg_name(host.as_bytes()))
}

/// RFC 3986 §3.2.2: `reg-name = *( unreserved / pct-encoded / sub-delims )`. IPv4
/// literals are a subset. No `@` (userinfo), `/`, space or `:`.
fn valid_reg_name(b: &[u8]) -> bool {
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            c if is_unreserved(c) => {}
            b'!' | b'$' | b'&' | b'\'' | b'(' | b')' | b'*' | b'+' | b',' | b';' | b'=' => {}
            b'%' if i + 2 < b.len() && hex(b[i + 1]).is_some() && hex(b[i + 2]).is_some() => {
                i += 2;
            }
            _ => return false,
        }
        i += 1;
    }
    true
}

fn is_unreserved(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~')
}

fn hex(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Why a path cannot be normalised safely.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathError {
    /// `%2F`: a slash the origin may or may not treat as a separator.
    EncodedSlash,
    /// `\` or `%5C`: a separator on some origins (IIS, Windows file servers).
    Backslash,
    /// NUL or `%00`: truncates paths in C-based origins.
    Nul,
    /// `%` not followed by two hex digits.
    BadEscape,
    /// `..;` or `.;`: a dot segment to Tomcat and Jetty, a name to everyone else.
    DotSegmentParameter,
}

impl PathError {
    /// The message of the 400 answer.
    pub fn message(self) -> &'static str {
        match self {
            PathError::EncodedSlash => "encoded slash (%2F) in the path",
            PathError::Backslash => "backslash in the path",
            PathError::Nul => "NUL in the path",
            PathError::BadEscape => "malformed percent-encoding in the path",
            PathError::DotSegmentParameter => "dot segment with parameters in the path",
        }
    }
}

/// The one path everyone sees: unreserved escapes decoded (and other escapes written
/// in upper case, RFC 3986 §6.2.2), dot segments removed (§5.2.4, `..` above the root
/// stays at the root), and with `merge_slashes`, `//` as `/`.
///
/// Borrowed, without allocating, when the path is already normal (the common case).
/// Paths that do not start with `/` (`*`, authority-form) are returned unchanged.
pub fn normalize_path(path: &str, merge_slashes: bool) -> Result<Cow<'_, str>, PathError> {
    if !path.starts_with('/') || is_normal(path, merge_slashes)? {
        return Ok(Cow::Borrowed(path));
    }
    let decoded = decode_unreserved(path)?;
    // Decoding can reveal a `..;` (`%2e%2e;`): check the decoded form again.
    is_normal(&decoded, merge_slashes)?;
    Ok(Cow::Owned(remove_dot_segments(&decoded, merge_slashes)))
}

/// `//` merged into `/` and nothing else: for `normalize_path = false` with
/// `merge_slashes = true`.
pub fn merge_slashes_only(path: &str) -> Result<Cow<'_, str>, PathError> {
    if !path.contains("//") {
        return Ok(Cow::Borrowed(path));
    }
    let mut out = String::with_capacity(path.len());
    for c in path.chars() {
        if !(c == '/' && out.ends_with('/')) {
            out.push(c);
        }
    }
    Ok(Cow::Owned(out))
}

/// Whether `path` is already normal; errors for what cannot be normalised at all.
/// One pass over the bytes, no allocation; it looks ahead only after a `/` that is
/// followed by `/` or `.`.
fn is_normal(path: &str, merge_slashes: bool) -> Result<bool, PathError> {
    let b = path.as_bytes();
    let mut normal = true;
    for (i, &c) in b.iter().enumerate() {
        match c {
            b'/' => match b.get(i + 1) {
                Some(b'/') if merge_slashes => normal = false,
                Some(b'.') if is_dot_segment(&b[i + 1..])? => normal = false,
                _ => {}
            },
            // Escapes are checked (and may need decoding) in the slow path.
            b'%' => normal = false,
            b'\\' => return Err(PathError::Backslash),
            0 => return Err(PathError::Nul),
            _ => {}
        }
    }
    Ok(normal)
}

/// Whether the segment at the start of `rest` (which starts with `.`) is `.` or `..`;
/// `.;…` and `..;…` are refused.
fn is_dot_segment(rest: &[u8]) -> Result<bool, PathError> {
    let end = rest.iter().position(|&c| c == b'/').unwrap_or(rest.len());
    match &rest[..end] {
        b"." | b".." => Ok(true),
        seg if seg.starts_with(b".;") || seg.starts_with(b"..;") => {
            Err(PathError::DotSegmentParameter)
        }
        _ => Ok(false),
    }
}

/// Decodes `%XX` of unreserved characters, upper-cases the hex of the others, and
/// refuses the escapes that would change the path's structure.
fn decode_unreserved(path: &str) -> Result<Cow<'_, str>, PathError> {
    if !path.contains('%') {
        return Ok(Cow::Borrowed(path));
    }
    let b = path.as_bytes();
    let mut out = String::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'%' {
            out.push(b[i] as char);
            i += 1;
            continue;
        }
        let (Some(h), Some(l)) = (
            b.get(i + 1).copied().and_then(hex),
            b.get(i + 2).copied().and_then(hex),
        ) else {
            return Err(PathError::BadEscape);
        };
        match h * 16 + l {
            b'/' => return Err(PathError::EncodedSlash),
            b'\\' => return Err(PathError::Backslash),
            0 => return Err(PathError::Nul),
            c if is_unreserved(c) => out.push(c as char),
            c => {
                const HEX: &[u8; 16] = b"0123456789ABCDEF";
                out.push('%');
                out.push(HEX[(c >> 4) as usize] as char);
                out.push(HEX[(c & 15) as usize] as char);
            }
        }
        i += 3;
    }
    Ok(Cow::Owned(out))
}

/// RFC 3986 §5.2.4 on an absolute path, plus slash merging; the segments of a path
/// that starts with `/`.
fn remove_dot_segments(path: &str, merge_slashes: bool) -> String {
    let mut segs: Vec<&str> = Vec::new();
    let mut trailing_slash = false;
    let mut it = path[1..].split('/').peekable();
    while let Some(seg) = it.next() {
        let last = it.peek().is_none();
        match seg {
            "." => trailing_slash = last,
            ".." => {
                segs.pop();
                trailing_slash = last;
            }
            "" if last => trailing_slash = true,
            "" if merge_slashes => {}
            s => {
                segs.push(s);
                trailing_slash = false;
            }
        }
    }
    let mut out = String::with_capacity(path.len());
    for s in &segs {
        out.push('/');
        out.push_str(s);
    }
    if trailing_slash || segs.is_empty() {
        out.push('/');
    }
    out
}

/// 405 when the edge refuses `method`.
pub fn check_method(cfg: &EdgeConfig, method: &Method) -> Result<(), GatewayError> {
    if cfg.refused_methods.contains(method) {
        return Err(GatewayError::MethodNotAllowed {
            allow: cfg.allow.clone(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(p: &str) -> Result<String, PathError> {
        normalize_path(p, true).map(Cow::into_owned)
    }

    #[test]
    fn dot_segments_are_removed_and_clamped_at_the_root() {
        for (raw, want) in [
            ("/static/../products/1", "/products/1"),
            ("/a/./b", "/a/b"),
            ("/a/b/.", "/a/b/"),
            ("/a/b/..", "/a/"),
            ("/..", "/"),
            ("/../../etc/passwd", "/etc/passwd"),
            ("/a/%2e%2E/b", "/b"),
            ("/.", "/"),
            ("/a/.../b", "/a/.../b"),
            ("/a/..b/c", "/a/..b/c"),
        ] {
            assert_eq!(norm(raw).as_deref(), Ok(want), "{raw}");
        }
    }

    #[test]
    fn repeated_slashes_merge_only_when_asked() {
        assert_eq!(norm("//products//1").as_deref(), Ok("/products/1"));
        assert_eq!(norm("/a//").as_deref(), Ok("/a/"));
        assert_eq!(norm("///").as_deref(), Ok("/"));
        assert_eq!(
            normalize_path("//products//1", false).as_deref(),
            Ok("//products//1")
        );
        assert_eq!(normalize_path("/a//../b", false).as_deref(), Ok("/a/b"));
    }

    #[test]
    fn unreserved_escapes_are_decoded_and_others_upper_cased() {
        assert_eq!(norm("/%70roducts/1").as_deref(), Ok("/products/1"));
        assert_eq!(norm("/a%7eb").as_deref(), Ok("/a~b"));
        assert_eq!(norm("/a%3ab%20c").as_deref(), Ok("/a%3Ab%20c"));
    }

    #[test]
    fn what_cannot_be_normalised_safely_is_refused() {
        assert_eq!(norm("/a%2Fb"), Err(PathError::EncodedSlash));
        assert_eq!(norm("/a%2fb"), Err(PathError::EncodedSlash));
        assert_eq!(norm("/a%5Cb"), Err(PathError::Backslash));
        assert_eq!(norm("/a\\b"), Err(PathError::Backslash));
        assert_eq!(norm("/a%00b"), Err(PathError::Nul));
        assert_eq!(norm("/a%zz"), Err(PathError::BadEscape));
        assert_eq!(norm("/a%4"), Err(PathError::BadEscape));
        assert_eq!(
            norm("/static/..;/admin"),
            Err(PathError::DotSegmentParameter)
        );
        assert_eq!(
            norm("/static/%2e%2e;/admin"),
            Err(PathError::DotSegmentParameter)
        );
    }

    #[test]
    fn a_normal_path_is_borrowed_not_copied() {
        for p in ["/", "/products/1", "/a/b/", "/a.b/c..d/.e", "*"] {
            assert!(
                matches!(normalize_path(p, true), Ok(Cow::Borrowed(_))),
                "{p}"
            );
        }
    }

    #[test]
    fn hosts_follow_rfc_3986() {
        for ok in [
            "shop.example.com",
            "shop.example.com:8080",
            "127.0.0.1:1",
            "[::1]",
            "[::1]:65535",
            "localhost",
            "xn--bcher-kva.example",
            "",
        ] {
            assert!(valid_authority(ok), "{ok} should be valid");
        }
        for bad in [
            "localhost@evil.example",
            "shop.example.com/evil",
            "shop example.com",
            "shop.example.com:99999x",
            "shop.example.com:65536",
            "shop.example.com:",
            ":80",
            "[::1",
            "[::1]x",
            "[fe80::1%25eth0]",
            "a:b:c",
        ] {
            assert!(!valid_authority(bad), "{bad} should be invalid");
        }
    }

    #[test]
    fn edge_keys_compile_with_their_defaults_and_report_bad_values_by_key() {
        let c = crate::config::parse("[server]\nlisten = \"127.0.0.1:1\"\n").unwrap();
        let e = &c.server.edge;
        assert!(e.normalize_path && e.merge_slashes);
        assert_eq!(e.refused_methods, [Method::TRACE, Method::CONNECT]);
        assert_eq!(e.allow, "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS");
        assert!(e
            .untrusted_headers
            .contains(&HeaderName::from_static("x-forwarded-host")));
        assert!(e
            .strip_headers
            .contains(&HeaderName::from_static("x-http-method-override")));

        let errs = crate::config::parse(
            "[server]\nrefused_methods = [\"TRACE\", \"BAD METHOD\"]\n\
             untrusted_headers = [\"x ok\"]\nstrip_headers = [\"fine\", \"*\"]\n",
        )
        .unwrap_err();
        let keys: Vec<&str> = errs.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "server.refused_methods[1]",
                "server.untrusted_headers[0]",
                "server.strip_headers[1]"
            ],
            "{errs:?}"
        );
    }

    #[test]
    fn header_lists_match_names_and_prefixes() {
        let mut errors = Vec::new();
        let l = HeaderList::parse(
            "k",
            &["X-Real-IP", "x-forwarded-*", "bad name"],
            &mut errors,
        );
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].key, "k[2]");
        let mut h = HeaderMap::new();
        for n in ["x-real-ip", "x-forwarded-host", "x-forwarded-for", "x-kept"] {
            h.insert(HeaderName::from_static(n), "1".parse().unwrap());
        }
        l.remove_from(&mut h);
        assert_eq!(h.keys().map(|k| k.as_str()).collect::<Vec<_>>(), ["x-kept"]);
    }
}
