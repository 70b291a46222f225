//! What a proxy changes in headers on the way through: hop-by-hop fields removed both
//! ways (RFC 9110 §7.6.1), `X-Forwarded-*`, `Via`, `X-Request-Id`, and the real client
//! address behind trusted proxies.

use std::net::IpAddr;

use http::header::{
    HeaderName, HeaderValue, CONNECTION, HOST, TE, TRANSFER_ENCODING, UPGRADE, VIA,
};
use http::HeaderMap;
use ipnet::IpNet;

/// `X-Forwarded-For`.
pub static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
/// `X-Forwarded-Proto`.
pub static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
/// `X-Forwarded-Host`.
pub static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
/// `X-Request-Id`.
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");
static PROXY_AUTHENTICATE: HeaderName = HeaderName::from_static("proxy-authenticate");
static PROXY_AUTHORIZATION: HeaderName = HeaderName::from_static("proxy-authorization");
static TRAILER: HeaderName = HeaderName::from_static("trailer");

/// Removes hop-by-hop fields: the fixed list, and every field any `Connection` line
/// names (a message may carry several, RFC 9110 §5.3 and §7.6.1).
///
/// `Transfer-Encoding` goes too: hyper re-frames the body for the next hop.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    const HOP_BY_HOP: [&HeaderName; 8] = [
        &KEEP_ALIVE,
        &PROXY_CONNECTION,
        &PROXY_AUTHENTICATE,
        &PROXY_AUTHORIZATION,
        &TE,
        &TRAILER,
        &TRANSFER_ENCODING,
        &UPGRADE,
    ];
    // Names listed in Connection must be collected, from every line, before Connection
    // itself goes. No allocation when there is no Connection field (most of HTTP/1.1
    // keep-alive traffic, all of HTTP/2).
    let mut named: Vec<HeaderName> = Vec::new();
    for v in headers.get_all(CONNECTION) {
        if let Ok(s) = v.to_str() {
            named.extend(
                s.split(',')
                    .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok()),
            );
        }
    }
    remove_where(headers, |k| {
        k == CONNECTION || HOP_BY_HOP.contains(&k) || named.contains(k)
    });
}

/// Removes every field whose name matches, all its lines.
///
/// One pass over the few fields a message carries, comparing names, instead of one
/// hashed `remove` per listed name: a request rarely carries any of them, and the
/// lookups were 7 % of a proxied request's instructions (callgrind, README §
/// Performance). Allocates only when something matches.
pub fn remove_where(headers: &mut HeaderMap, matches: impl Fn(&HeaderName) -> bool) {
    if !headers.keys().any(&matches) {
        return;
    }
    let found: Vec<HeaderName> = headers.keys().filter(|k| matches(k)).cloned().collect();
    for n in found {
        headers.remove(n);
    }
}

/// The client address: the peer, or, when the peer is a trusted proxy, the right-most
/// address in `X-Forwarded-For` that is not itself a trusted proxy.
///
/// Right to left because each proxy appends: only the entries added by proxies we
/// trust are reliable, and everything left of the first untrusted one may be forged.
///
/// `peer` must already be canonical (see [`canonical_peer`]).
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|n| n.contains(ip));
    if trusted.is_empty() || !is_trusted(&peer) {
        return peer;
    }
    let mut client = peer;
    // Multiple XFF fields are one list in order (RFC 9110 §5.3).
    let values: Vec<&HeaderValue> = headers.get_all(&X_FORWARDED_FOR).iter().collect();
    for v in values.iter().rev() {
        let Ok(s) = v.to_str() else { return client };
        for part in s.rsplit(',') {
            let Some(ip) = parse_forwarded_ip(part.trim()) else {
                return client;
            };
            // An IPv4 client written by a dual-stack proxy as ::ffff:a.b.c.d is that
            // IPv4 address, for trust, limiter keys and logs alike.
            let ip = ip.to_canonical();
            client = ip;
            if !is_trusted(&ip) {
                return ip;
            }
        }
    }
    client
}

/// The peer as every rule sees it: an IPv4 client of a dual-stack `[::]` listener
/// arrives as `::ffff:a.b.c.d` and is that IPv4 address for `trusted_proxies`, limiter
/// keys, `allow`/`deny` and logs.
pub fn canonical_peer(peer: std::net::SocketAddr) -> std::net::SocketAddr {
    std::net::SocketAddr::new(peer.ip().to_canonical(), peer.port())
}

/// Whether `ip` is one of `trusted`.
pub fn is_trusted(ip: IpAddr, trusted: &[IpNet]) -> bool {
    trusted.iter().any(|n| n.contains(&ip))
}

fn parse_forwarded_ip(s: &str) -> Option<IpAddr> {
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(ip);
    }
    // Some proxies write "1.2.3.4:5678" or "[::1]:5678".
    s.parse::<std::net::SocketAddr>().ok().map(|a| a.ip())
}

/// `X-Real-IP`.
pub static X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");

/// What the gateway knows about how a request reached it, for the forwarding fields.
#[derive(Debug, Clone, Copy)]
pub struct Hop<'a> {
    /// The TCP peer, canonical (never `::ffff:a.b.c.d`).
    pub peer: IpAddr,
    /// Whether the peer is one of `server.trusted_proxies`.
    pub peer_trusted: bool,
    /// The client address (see [`client_ip`]).
    pub client_ip: IpAddr,
    /// `http` or `https`, as [`request_scheme`] decided.
    pub scheme: &'static str,
    /// The request's authority, for `X-Forwarded-Host`.
    pub host: Option<&'a HeaderValue>,
    /// `peer` as a field value, made once per connection ([`ip_value`]).
    pub peer_value: &'a HeaderValue,
}

/// An address as a field value (`X-Forwarded-For`, `X-Real-IP`).
pub fn ip_value(ip: IpAddr) -> HeaderValue {
    HeaderValue::from_str(&ip.to_string()).expect("an address is a valid field value")
}

/// The scheme the client used: the connection's, or `https` when a trusted proxy says
/// so in `X-Forwarded-Proto` (one value, `https`). From anyone else the field is void.
pub fn request_scheme(conn: &'static str, peer_trusted: bool, headers: &HeaderMap) -> &'static str {
    if conn == "https" || !peer_trusted {
        return conn;
    }
    let mut protos = headers.get_all(&X_FORWARDED_PROTO).iter();
    match (protos.next(), protos.next()) {
        (Some(v), None) if v.as_bytes().trim_ascii().eq_ignore_ascii_case(b"https") => "https",
        _ => conn,
    }
}

/// Sets the forwarding fields on a request going to the origin. Run after the edge has
/// removed the fields an untrusted peer may not set ([`crate::edge`]).
///
/// `X-Forwarded-For` gets the peer appended (what nginx's `$proxy_add_x_forwarded_for`
/// does; from an untrusted peer the edge already removed the client's list, so it is
/// the peer alone). `-Proto`, `-Host` and `X-Real-IP` from a trusted proxy are kept;
/// from anyone else they are what this gateway saw.
pub fn set_forwarded(headers: &mut HeaderMap, hop: &Hop<'_>) {
    let xff = if headers.contains_key(&X_FORWARDED_FOR) {
        let peer = hop.peer_value.to_str().unwrap_or_default();
        let mut all: Vec<&str> = headers
            .get_all(&X_FORWARDED_FOR)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect();
        all.push(peer);
        HeaderValue::from_str(&all.join(", ")).ok()
    } else {
        // The common case: the connection's own value, formatted once (formatting
        // addresses was 5 % of a proxied request's instructions).
        Some(hop.peer_value.clone())
    };
    if let Some(v) = xff {
        headers.insert(&X_FORWARDED_FOR, v);
    }
    let keep =
        |headers: &HeaderMap, name: &HeaderName| hop.peer_trusted && headers.contains_key(name);
    if !keep(headers, &X_FORWARDED_PROTO) {
        headers.insert(&X_FORWARDED_PROTO, HeaderValue::from_static(hop.scheme));
    }
    if !keep(headers, &X_FORWARDED_HOST) {
        match hop.host.or_else(|| headers.get(HOST)).cloned() {
            Some(h) => {
                headers.insert(&X_FORWARDED_HOST, h);
            }
            None => {
                headers.remove(&X_FORWARDED_HOST);
            }
        }
    }
    if !keep(headers, &X_REAL_IP) {
        let v = match hop.client_ip == hop.peer {
            true => hop.peer_value.clone(),
            false => ip_value(hop.client_ip),
        };
        headers.insert(&X_REAL_IP, v);
    }
}

/// Appends this gateway to `Via` (RFC 9110 §7.6.3): `1.1 floodgate` or `2 floodgate`.
pub fn append_via(headers: &mut HeaderMap, version: http::Version, via: &Via) {
    if !headers.contains_key(VIA) {
        // The common case: nothing to append to, use the value built at config time.
        headers.insert(VIA, via.for_version(version).clone());
        return;
    }
    let via = &via.name;
    let proto: &[u8] = match version {
        http::Version::HTTP_2 => b"2 ",
        http::Version::HTTP_10 => b"1.0 ",
        _ => b"1.1 ",
    };
    let mut v: Vec<u8> = Vec::with_capacity(64);
    for prev in headers.get_all(VIA) {
        v.extend_from_slice(prev.as_bytes());
        v.extend_from_slice(b", ");
    }
    v.extend_from_slice(proto);
    v.extend_from_slice(via.as_bytes());
    if let Ok(val) = HeaderValue::from_bytes(&v) {
        headers.insert(VIA, val);
    }
}

/// This gateway's `Via` entries, built once per config.
#[derive(Debug, Clone)]
pub struct Via {
    name: HeaderValue,
    h10: HeaderValue,
    h11: HeaderValue,
    h2: HeaderValue,
}

impl Via {
    /// Entries for the pseudonym `name` (falls back to "floodgate" if not a valid value).
    pub fn new(name: &str) -> Self {
        let name = HeaderValue::from_str(name).unwrap_or(HeaderValue::from_static("floodgate"));
        let entry = |proto: &str| {
            let mut v = proto.as_bytes().to_vec();
            v.extend_from_slice(name.as_bytes());
            HeaderValue::from_bytes(&v).expect("proto and a valid value")
        };
        Via {
            h10: entry("1.0 "),
            h11: entry("1.1 "),
            h2: entry("2 "),
            name,
        }
    }

    fn for_version(&self, version: http::Version) -> &HeaderValue {
        match version {
            http::Version::HTTP_2 => &self.h2,
            http::Version::HTTP_10 => &self.h10,
            _ => &self.h11,
        }
    }
}

/// The request id: the client's if it sent a sane one, else a fresh random one.
pub fn request_id(headers: &HeaderMap) -> HeaderValue {
    if let Some(v) = headers.get(&X_REQUEST_ID) {
        let b = v.as_bytes();
        if !b.is_empty() && b.len() <= 128 && b.iter().all(|c| c.is_ascii_graphic()) {
            return v.clone();
        }
    }
    let id: u128 = rand::random();
    let mut buf = [0u8; 32];
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for (i, b) in buf.iter_mut().enumerate() {
        *b = HEX[((id >> (4 * (31 - i))) & 0xf) as usize];
    }
    HeaderValue::from_bytes(&buf).expect("hex is a valid header value")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hm(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn fields_named_in_connection_are_removed_with_the_fixed_list() {
        let mut h = hm(&[
            ("connection", "keep-alive, X-Secret"),
            ("x-secret", "1"),
            ("keep-alive", "timeout=5"),
            ("te", "trailers"),
            ("upgrade", "h2c"),
            ("x-kept", "yes"),
        ]);
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1, "{h:?}");
        assert!(h.contains_key("x-kept"));
    }

    #[test]
    fn fields_named_in_every_connection_line_are_removed() {
        let mut h = hm(&[
            ("connection", "x-a"),
            ("connection", "x-b, close"),
            ("x-a", "1"),
            ("x-b", "2"),
            ("x-kept", "yes"),
        ]);
        strip_hop_by_hop(&mut h);
        assert_eq!(h.keys().map(|k| k.as_str()).collect::<Vec<_>>(), ["x-kept"]);
    }

    #[test]
    fn only_a_trusted_proxy_can_say_the_request_was_https() {
        let https = hm(&[("x-forwarded-proto", "HTTPS ")]);
        assert_eq!(request_scheme("http", true, &https), "https");
        assert_eq!(request_scheme("http", false, &https), "http");
        let two = hm(&[
            ("x-forwarded-proto", "https"),
            ("x-forwarded-proto", "http"),
        ]);
        assert_eq!(request_scheme("http", true, &two), "http");
        assert_eq!(request_scheme("https", false, &HeaderMap::new()), "https");
    }

    #[test]
    fn ipv4_mapped_addresses_are_ipv4_for_trust() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let peer = canonical_peer("[::ffff:10.0.0.1]:5000".parse().unwrap());
        assert_eq!(peer.ip(), "10.0.0.1".parse::<IpAddr>().unwrap());
        let h = hm(&[("x-forwarded-for", "1.2.3.4, ::ffff:10.0.0.7")]);
        assert_eq!(
            client_ip(peer.ip(), &h, &trusted),
            "1.2.3.4".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn the_client_is_the_rightmost_untrusted_address_behind_trusted_proxies() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let h = hm(&[("x-forwarded-for", "6.6.6.6, 1.2.3.4, 10.0.0.7")]);
        assert_eq!(
            client_ip("10.0.0.1".parse().unwrap(), &h, &trusted),
            "1.2.3.4".parse::<IpAddr>().unwrap()
        );
        // An untrusted peer's header is ignored for the client address.
        assert_eq!(
            client_ip("8.8.8.8".parse().unwrap(), &h, &trusted),
            "8.8.8.8".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn a_generated_request_id_is_32_hex_digits() {
        let id = request_id(&HeaderMap::new());
        assert_eq!(id.len(), 32);
        let kept = request_id(&hm(&[("x-request-id", "abc-123")]));
        assert_eq!(kept, "abc-123");
    }
}
