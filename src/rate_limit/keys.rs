//! Turning a request into the key of a limit's bucket.
//!
//! A key is a 64-bit fingerprint of its parts, hashed with a secret per-store seed:
//! fixed size whatever the header or cookie holds (so a 30 KiB API key costs the store
//! what an address does), and unpredictable, so a client cannot aim at another's bucket
//! or at one map shard. Two distinct clients share a bucket only on a 64-bit collision
//! (about 1 in 3·10⁷ for a million keys).

use std::hash::{BuildHasher, Hash, Hasher};
use std::net::IpAddr;

use http::header::COOKIE;
use http::HeaderMap;

use super::config::{KeyPart, KeySpec};

/// A bucket's key: the seeded fingerprint of a client's identity for one limit.
pub type Key = u64;

/// Masks an address to the limit's prefix (`/64` for IPv6 by default).
pub fn masked(ip: IpAddr, v4_prefix: u8, v6_prefix: u8) -> IpAddr {
    match ip {
        // An IPv4 client reaching us over a v6 socket is still an IPv4 client.
        IpAddr::V6(v6) if v6.to_ipv4_mapped().is_some() => masked(
            IpAddr::V4(v6.to_ipv4_mapped().unwrap()),
            v4_prefix,
            v6_prefix,
        ),
        IpAddr::V4(v4) => {
            let bits = u32::from(v4);
            let mask = if v4_prefix == 0 {
                0
            } else {
                u32::MAX << (32 - v4_prefix as u32)
            };
            IpAddr::V4((bits & mask).into())
        }
        IpAddr::V6(v6) => {
            let bits = u128::from(v6);
            let mask = if v6_prefix == 0 {
                0
            } else {
                u128::MAX << (128 - v6_prefix as u32)
            };
            IpAddr::V6((bits & mask).into())
        }
    }
}

/// The value of cookie `name` in the request's `Cookie` fields, if any.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a [u8]> {
    for field in headers.get_all(COOKIE) {
        for pair in field.as_bytes().split(|b| *b == b';') {
            let pair = pair.trim_ascii_start();
            if let Some(rest) = pair.strip_prefix(name.as_bytes()) {
                if let Some(value) = rest.strip_prefix(b"=") {
                    return Some(value.trim_ascii_end());
                }
            }
        }
    }
    None
}

/// The key of this request for a limit, or `None` when the limit does not apply.
///
/// As with nginx's `limit_req`, a request that has none of the limit's header or
/// cookie parts is not counted by it (pair such limits with a `client_ip` one). A
/// missing part in a combination counts as empty, so `["client_ip", "header:x-api-key"]`
/// without the header is keyed by the address alone.
pub fn key_of<S: BuildHasher>(
    seed: &S,
    spec: &KeySpec,
    client_ip: IpAddr,
    v4_prefix: u8,
    v6_prefix: u8,
    headers: &HeaderMap,
) -> Option<Key> {
    let parts = match spec {
        KeySpec::Global => return Some(0),
        KeySpec::Parts(p) => p,
    };
    let mut h = seed.build_hasher();
    let mut present = false;
    for (i, part) in parts.iter().enumerate() {
        // The index separates parts so ("ab","c") and ("a","bc") differ.
        h.write_u8(i as u8);
        match part {
            KeyPart::ClientIp => {
                present = true;
                masked(client_ip, v4_prefix, v6_prefix).hash(&mut h);
            }
            KeyPart::Header(name) => match headers.get(name) {
                Some(v) => {
                    present = true;
                    h.write(v.as_bytes());
                    h.write_u8(0xff);
                }
                None => h.write_u8(0xfe),
            },
            KeyPart::Cookie(name) => match cookie(headers, name) {
                Some(v) => {
                    present = true;
                    h.write(v);
                    h.write_u8(0xff);
                }
                None => h.write_u8(0xfe),
            },
        }
    }
    present.then(|| h.finish())
}

/// Hashes an already-random `u64` key to itself: the store's map needs no second hash
/// over a fingerprint that is seeded and uniformly spread already.
#[derive(Debug, Clone, Copy, Default)]
pub struct PassThrough;

impl BuildHasher for PassThrough {
    type Hasher = PassThroughHasher;
    fn build_hasher(&self) -> PassThroughHasher {
        PassThroughHasher(0)
    }
}

/// The hasher of [`PassThrough`].
#[derive(Debug, Clone, Copy, Default)]
pub struct PassThroughHasher(u64);

impl Hasher for PassThroughHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Only u64 keys are hashed here; fold anything else in case a caller changes.
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::hash_map::RandomState;

    fn hm(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    #[test]
    fn ipv6_addresses_in_one_slash_64_share_a_key_and_v4_stays_per_address() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(masked(a, 32, 64), masked(b, 32, 64));
        assert_ne!(masked(a, 32, 64), masked(c, 32, 64));
        assert_eq!(
            masked("10.1.2.3".parse().unwrap(), 24, 64),
            "10.1.2.0".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            masked("::ffff:10.1.2.3".parse().unwrap(), 32, 64),
            "10.1.2.3".parse::<IpAddr>().unwrap()
        );
        assert_eq!(masked(a, 32, 0), "::".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn cookies_are_found_by_exact_name_across_fields() {
        let h = hm(&[
            ("cookie", "a=1; session=abc ; sess=x"),
            ("cookie", "other=2"),
        ]);
        assert_eq!(cookie(&h, "session"), Some(&b"abc"[..]));
        assert_eq!(cookie(&h, "sess"), Some(&b"x"[..]));
        assert_eq!(cookie(&h, "other"), Some(&b"2"[..]));
        assert_eq!(cookie(&h, "ses"), None);
    }

    #[test]
    fn a_limit_skips_requests_with_none_of_its_parts() {
        let seed = RandomState::new();
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let api = KeySpec::Parts(vec![KeyPart::Header("x-api-key".parse().unwrap())]);
        assert_eq!(key_of(&seed, &api, ip, 32, 64, &HeaderMap::new()), None);
        let k1 = key_of(&seed, &api, ip, 32, 64, &hm(&[("x-api-key", "k1")]));
        let k1_other_ip = key_of(
            &seed,
            &api,
            "10.0.0.2".parse().unwrap(),
            32,
            64,
            &hm(&[("x-api-key", "k1")]),
        );
        let k2 = key_of(&seed, &api, ip, 32, 64, &hm(&[("x-api-key", "k2")]));
        assert!(k1.is_some());
        assert_eq!(k1, k1_other_ip);
        assert_ne!(k1, k2);
        let combo = KeySpec::Parts(vec![
            KeyPart::ClientIp,
            KeyPart::Header("x-api-key".parse().unwrap()),
        ]);
        let bare = key_of(&seed, &combo, ip, 32, 64, &HeaderMap::new());
        let keyed = key_of(&seed, &combo, ip, 32, 64, &hm(&[("x-api-key", "k1")]));
        assert!(bare.is_some());
        assert_ne!(bare, keyed);
    }
}
