//! Route matching: host (exact, then `*.suffix` wildcards, then any host), then the
//! longest path prefix.
//!
//! Compiled once per config into hash maps, so the cost per request depends on the
//! number of labels in the host name and of prefixes for that one host, not on how
//! many sites the portal fronts.

use std::collections::HashMap;

use crate::config::{HostPattern, RouteConfig};

/// Prefixes of one host, longest first.
#[derive(Debug, Default, Clone)]
struct Prefixes(Vec<(Box<str>, usize)>);

impl Prefixes {
    fn insert(&mut self, prefix: &str, route: usize) {
        self.0.push((prefix.into(), route));
        self.0.sort_by_key(|p| std::cmp::Reverse(p.0.len()));
    }

    fn find(&self, path: &str) -> Option<usize> {
        self.0
            .iter()
            .find(|(p, _)| path.starts_with(&**p))
            .map(|(_, r)| *r)
    }
}

/// Host and path → route index.
#[derive(Debug, Default, Clone)]
pub struct Router {
    exact: HashMap<Box<str>, Prefixes>,
    wildcard: HashMap<Box<str>, Prefixes>,
    any: Prefixes,
}

impl Router {
    /// Compiles the routing table; route indices are positions in `routes`.
    pub fn new(routes: &[RouteConfig]) -> Self {
        let mut r = Router::default();
        for (i, route) in routes.iter().enumerate() {
            if route.hosts.is_empty() {
                r.any.insert(&route.path_prefix, i);
            }
            for h in &route.hosts {
                match h {
                    HostPattern::Exact(name) => r
                        .exact
                        .entry(name.as_str().into())
                        .or_default()
                        .insert(&route.path_prefix, i),
                    HostPattern::Wildcard(suffix) => r
                        .wildcard
                        .entry(suffix.as_str().into())
                        .or_default()
                        .insert(&route.path_prefix, i),
                }
            }
        }
        r
    }

    /// The route for a request, if any. `host` must be lower-case, without port.
    ///
    /// A host's own routes win over wildcards and wildcards over "any host"; within
    /// one of those, the longest matching prefix wins. If the most specific host has
    /// no matching prefix, the next less specific one is tried (as nginx falls back to
    /// its default server).
    pub fn route(&self, host: &str, path: &str) -> Option<usize> {
        if let Some(r) = self.exact.get(host).and_then(|p| p.find(path)) {
            return Some(r);
        }
        if !self.wildcard.is_empty() {
            // "a.b.example.com" tries "b.example.com", then "example.com", then "com":
            // the most specific wildcard first.
            let mut rest = host;
            while let Some(dot) = rest.find('.') {
                rest = &rest[dot + 1..];
                if let Some(r) = self.wildcard.get(rest).and_then(|p| p.find(path)) {
                    return Some(r);
                }
            }
        }
        self.any.find(path)
    }
}

/// The request's host: lower-case, without port, from the URI (HTTP/2) or `Host`.
///
/// Returns a borrowed string when it is already normal, which is the common case.
pub fn normalize_host(raw: &str) -> std::borrow::Cow<'_, str> {
    let without_port = if raw.starts_with('[') {
        // IPv6 literal: keep up to the closing bracket.
        raw.find(']').map(|i| &raw[..=i]).unwrap_or(raw)
    } else {
        raw.rsplit_once(':').map(|(h, _)| h).unwrap_or(raw)
    };
    let h = without_port.trim_end_matches('.');
    if h.bytes().any(|b| b.is_ascii_uppercase()) {
        std::borrow::Cow::Owned(h.to_ascii_lowercase())
    } else {
        std::borrow::Cow::Borrowed(h)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(name: &str, hosts: &[&str], prefix: &str) -> RouteConfig {
        RouteConfig {
            name: name.into(),
            hosts: hosts
                .iter()
                .map(|h| match h.strip_prefix("*.") {
                    Some(s) => HostPattern::Wildcard(s.into()),
                    None => HostPattern::Exact(h.to_string()),
                })
                .collect(),
            path_prefix: prefix.into(),
            upstream: 0,
            priority: Vec::new(),
            cache: None,
            rate_limits: Default::default(),
            waiting_room: None,
            request_buffering: true,
            https_redirect: false,
        }
    }

    #[test]
    fn the_longest_prefix_of_the_most_specific_host_wins() {
        let routes = vec![
            route("default", &[], "/"),
            route("shop", &["shop.example.com"], "/"),
            route("shop-api", &["shop.example.com"], "/api/"),
            route("tenants", &["*.shops.example.com"], "/"),
        ];
        let r = Router::new(&routes);
        assert_eq!(r.route("shop.example.com", "/api/cart"), Some(2));
        assert_eq!(r.route("shop.example.com", "/products/1"), Some(1));
        assert_eq!(r.route("a.shops.example.com", "/"), Some(3));
        assert_eq!(r.route("x.a.shops.example.com", "/"), Some(3));
        assert_eq!(r.route("shops.example.com", "/"), Some(0));
        assert_eq!(r.route("other.org", "/x"), Some(0));
    }

    #[test]
    fn no_matching_route_is_none() {
        let r = Router::new(&[route("shop", &["shop.example.com"], "/shop")]);
        assert_eq!(r.route("shop.example.com", "/other"), None);
        assert_eq!(r.route("elsewhere.com", "/shop"), None);
    }

    #[test]
    fn hosts_are_compared_without_port_and_case() {
        assert_eq!(normalize_host("Shop.Example.com:8080"), "shop.example.com");
        assert_eq!(normalize_host("[::1]:8080"), "[::1]");
        assert_eq!(normalize_host("shop.example.com."), "shop.example.com");
    }
}
