//! Target addresses, and the rule that load goes to this machine only.

use http::Uri;
use std::net::{IpAddr, SocketAddr};

/// Why a target cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    /// The URL does not parse or is not plain http.
    #[error("target {url:?}: {why}")]
    BadUrl {
        /// The URL given.
        url: String,
        /// What is wrong with it.
        why: String,
    },
    /// The host is not on the loopback interface.
    #[error(
        "refusing to send load to {host:?}: not a loopback address (127.0.0.0/8, ::1, localhost); \
         pass --allow-non-loopback if you really mean to"
    )]
    NotLoopback {
        /// The host named in the URL.
        host: String,
    },
    /// The name did not resolve.
    #[error("target host {host:?} does not resolve: {why}")]
    Resolve {
        /// The host named in the URL.
        host: String,
        /// The resolver's answer.
        why: String,
    },
}

/// A parsed, resolved http:// target.
#[derive(Debug, Clone)]
pub struct Target {
    /// The URL as given.
    pub url: String,
    /// `host:port` for the Host header.
    pub authority: String,
    /// Where to connect.
    pub addr: SocketAddr,
    /// Path prefix from the URL, without a trailing slash.
    pub base_path: String,
}

/// Whether `host` (as written in a URL) names this machine.
pub fn is_loopback_host(host: &str) -> bool {
    let h = host.trim_start_matches('[').trim_end_matches(']');
    if h.eq_ignore_ascii_case("localhost") {
        return true;
    }
    match h.parse::<IpAddr>() {
        Ok(IpAddr::V4(v4)) => v4.is_loopback(),
        Ok(IpAddr::V6(v6)) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
        Err(_) => false,
    }
}

/// Checks the URL's host without resolving it.
pub fn check_url(url: &str, allow_non_loopback: bool) -> Result<Uri, TargetError> {
    let bad = |why: &str| TargetError::BadUrl {
        url: url.to_string(),
        why: why.to_string(),
    };
    let uri: Uri = url
        .parse()
        .map_err(|e: http::uri::InvalidUri| bad(&e.to_string()))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some(_) => {
            return Err(bad(
                "only http:// is supported (loopback load needs no TLS)",
            ))
        }
        None => return Err(bad("needs a scheme, e.g. http://127.0.0.1:8080")),
    }
    let host = uri.host().ok_or_else(|| bad("has no host"))?;
    if !allow_non_loopback && !is_loopback_host(host) {
        return Err(TargetError::NotLoopback {
            host: host.to_string(),
        });
    }
    Ok(uri)
}

impl Target {
    /// Parses, checks and resolves a target URL; every resolved address must be loopback too.
    pub async fn resolve(url: &str, allow_non_loopback: bool) -> Result<Target, TargetError> {
        let uri = check_url(url, allow_non_loopback)?;
        let host = uri.host().unwrap_or_default().to_string();
        let port = uri.port_u16().unwrap_or(80);
        let bare = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let addrs: Vec<SocketAddr> = match bare.parse::<IpAddr>() {
            Ok(ip) => vec![SocketAddr::new(ip, port)],
            Err(_) => tokio::net::lookup_host((bare.as_str(), port))
                .await
                .map_err(|e| TargetError::Resolve {
                    host: host.clone(),
                    why: e.to_string(),
                })?
                .collect(),
        };
        if !allow_non_loopback && addrs.iter().any(|a| !a.ip().is_loopback()) {
            return Err(TargetError::NotLoopback { host });
        }
        // Prefer IPv4: "localhost" often lists ::1 first, and a server bound to
        // 127.0.0.1 alone would then refuse every connection.
        let addr = addrs
            .iter()
            .find(|a| a.is_ipv4())
            .or(addrs.first())
            .copied()
            .ok_or_else(|| TargetError::Resolve {
                host: host.clone(),
                why: "no address".into(),
            })?;
        let authority = uri
            .authority()
            .map(|a| a.to_string())
            .unwrap_or_else(|| format!("{host}:{port}"));
        let base_path = uri.path().trim_end_matches('/').to_string();
        Ok(Target {
            url: url.to_string(),
            authority,
            addr,
            base_path,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts_are_recognised() {
        for h in [
            "127.0.0.1",
            "127.9.9.9",
            "localhost",
            "LOCALHOST",
            "[::1]",
            "::1",
            "[::ffff:127.0.0.1]",
        ] {
            assert!(is_loopback_host(h), "{h}");
        }
        for h in [
            "10.0.0.1",
            "192.168.1.1",
            "example.com",
            "0.0.0.0",
            "[::]",
            "8.8.8.8",
            "localhost.example.com",
        ] {
            assert!(!is_loopback_host(h), "{h}");
        }
    }
}
