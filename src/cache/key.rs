//! Cache keys: the primary key (RFC 9111 §4: method, target URI) and the secondary key
//! made of the request headers a response's `Vary` names (§4.1).

use std::sync::Arc;

use http::header::{HeaderName, HOST, VARY};
use http::{HeaderMap, Request};

/// The primary key: `scheme://host/path?query`, host lower-cased.
///
/// GET and HEAD share it: a HEAD is answered from a stored GET (§4.3.5 spirit), and
/// only GET responses are stored. The host keeps routes and sites apart in the one
/// process-wide store.
pub fn primary<B>(req: &Request<B>, scheme: &str) -> Arc<str> {
    let host = req
        .uri()
        .authority()
        .map(|a| a.as_str())
        .or_else(|| req.headers().get(HOST).and_then(|h| h.to_str().ok()))
        .unwrap_or("");
    let pq = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    format!("{scheme}://{}{pq}", host.to_ascii_lowercase()).into()
}

/// Normalises an admin-supplied URL (`http://Host/path`) to the primary key form.
pub fn from_url(url: &str) -> Option<String> {
    let uri: http::Uri = url.parse().ok()?;
    let scheme = uri.scheme_str().unwrap_or("http");
    let host = uri.authority()?.as_str().to_ascii_lowercase();
    let pq = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    Some(format!("{scheme}://{host}{pq}"))
}

/// A request header's value as a `Vary` comparison sees it: all fields of that name
/// joined with ", " (RFC 9110 §5.3), `None` when absent.
pub fn header_value(headers: &HeaderMap, name: &HeaderName) -> Option<Box<str>> {
    let mut it = headers.get_all(name).iter().peekable();
    it.peek()?;
    let parts: Vec<&str> = it.map(|v| v.to_str().unwrap_or("").trim()).collect();
    Some(parts.join(", ").into())
}

/// The secondary key: each header named by the response's `Vary`, with the value the
/// request that produced the response had.
pub fn vary_of(req: &HeaderMap, resp: &HeaderMap) -> Vec<(HeaderName, Option<Box<str>>)> {
    let mut out = Vec::new();
    for v in resp.get_all(VARY) {
        let Ok(s) = v.to_str() else { continue };
        for name in s.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            if let Ok(n) = HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes()) {
                if !out.iter().any(|(x, _)| *x == n) {
                    let val = header_value(req, &n);
                    out.push((n, val));
                }
            }
        }
    }
    out
}

/// Whether a request matches a stored secondary key (§4.1).
pub fn vary_matches(vary: &[(HeaderName, Option<Box<str>>)], req: &HeaderMap) -> bool {
    vary.iter().all(|(n, v)| header_value(req, n) == *v)
}
