//! The rate limiter's decision on the hot path: fingerprint the client address, then
//! one GCRA check, with one key and with a million distinct keys in the store.
//!
//! `cargo bench --bench rate_limit`

use std::net::{IpAddr, Ipv4Addr};
use std::num::NonZeroU32;

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use floodgate::config::units::rate;
use floodgate::rate_limit::config::{Action, BucketRule, KeyPart, KeySpec};
use floodgate::rate_limit::keys::key_of;
use floodgate::rate_limit::store::{Decision, Limiter};
use governor::clock::DefaultClock;
use http::HeaderMap;
use prometheus::{IntCounter, IntGauge};

const KEYS: u32 = 1_000_000;

fn limiter(r: &str, burst: u32) -> Limiter {
    let rule = BucketRule {
        name: "bench".into(),
        key: KeySpec::Parts(vec![KeyPart::ClientIp]),
        rate: rate(r).unwrap(),
        burst: NonZeroU32::new(burst).unwrap(),
        ipv4_prefix: 32,
        ipv6_prefix: 64,
        action: Action::Refuse,
        max_keys: 2 * KEYS as usize,
    };
    Limiter::with_clock(
        rule,
        DefaultClock::default(),
        IntGauge::new("k", "k").unwrap(),
        IntCounter::new("o", "o").unwrap(),
    )
}

fn ip(i: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i))
}

fn decide(l: &Limiter, spec: &KeySpec, headers: &HeaderMap, ip: IpAddr) -> Decision {
    let key = key_of(&l.seed, spec, ip, 32, 64, headers).unwrap();
    l.check(key)
}

fn bench(c: &mut Criterion) {
    let spec = KeySpec::Parts(vec![KeyPart::ClientIp]);
    let headers = HeaderMap::new();
    let mut g = c.benchmark_group("rate_limit_decision");
    g.throughput(Throughput::Elements(1));

    // A rate no benchmark reaches: every decision is an allow (the common case).
    let one = limiter("1000000000/s", 1_000_000);
    g.bench_function("1_key_allowed", |b| {
        b.iter(|| black_box(decide(&one, &spec, &headers, ip(1))))
    });

    let refused = limiter("1/h", 1);
    decide(&refused, &spec, &headers, ip(1));
    g.bench_function("1_key_refused", |b| {
        b.iter(|| black_box(decide(&refused, &spec, &headers, ip(1))))
    });

    let many = limiter("1000000000/s", 1_000_000);
    for i in 0..KEYS {
        decide(&many, &spec, &headers, ip(i));
    }
    assert_eq!(many.len(), KEYS as usize);
    let mut i = 0u32;
    g.bench_function("1M_keys_allowed", |b| {
        b.iter(|| {
            // A stride coprime with 1M walks every key in an order the caches cannot follow.
            i = (i + 7919) % KEYS;
            black_box(decide(&many, &spec, &headers, ip(i)))
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
