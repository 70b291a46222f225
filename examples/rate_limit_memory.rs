//! Resident memory of one rate limit after a million distinct client addresses, and
//! after the sweeper has reclaimed them.
//!
//! `cargo run --release --example rate_limit_memory`
//!
//! Uses governor's fake clock so "the buckets have refilled" is exact, not a sleep.

use std::net::{IpAddr, Ipv4Addr};
use std::num::NonZeroU32;
use std::time::Duration;

use floodgate::config::units::rate;
use floodgate::rate_limit::config::{Action, BucketRule, KeyPart, KeySpec, DEFAULT_MAX_KEYS};
use floodgate::rate_limit::keys::key_of;
use floodgate::rate_limit::store::Limiter;
use governor::clock::FakeRelativeClock;
use http::HeaderMap;
use prometheus::{IntCounter, IntGauge};

const CLIENTS: u32 = 1_000_000;

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("Linux /proc");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS line")
}

fn main() {
    let rule = BucketRule {
        name: "per-ip".into(),
        key: KeySpec::Parts(vec![KeyPart::ClientIp]),
        rate: rate("20/s").unwrap(),
        burst: NonZeroU32::new(40).unwrap(),
        ipv4_prefix: 32,
        ipv6_prefix: 64,
        action: Action::Refuse,
        max_keys: DEFAULT_MAX_KEYS,
    };
    let clock = FakeRelativeClock::default();
    let keys = IntGauge::new("keys", "keys").unwrap();
    let overflow = IntCounter::new("overflow", "overflow").unwrap();
    let limiter = Limiter::with_clock(rule, clock.clone(), keys, overflow.clone());
    let headers = HeaderMap::new();
    let spec = KeySpec::Parts(vec![KeyPart::ClientIp]);

    let base = rss_kib();
    for i in 0..CLIENTS {
        let ip = IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i));
        let key = key_of(&limiter.seed, &spec, ip, 32, 64, &headers).unwrap();
        limiter.check(key);
    }
    let full = rss_kib();
    println!("keys tracked: {}", limiter.len());
    println!("RSS before: {base} KiB");
    println!(
        "RSS with {CLIENTS} keys: {full} KiB (+{} KiB, {:.1} bytes/key)",
        full - base,
        (full - base) as f64 * 1024.0 / CLIENTS as f64
    );

    // One request each: every bucket is full again 50 ms later; wait a little more.
    clock.advance(Duration::from_millis(100));
    limiter.sweep();
    let swept = rss_kib();
    println!("keys after sweep: {}", limiter.len());
    println!(
        "RSS after sweep: {swept} KiB (+{} KiB over before)",
        swept.saturating_sub(base)
    );
    assert_eq!(
        overflow.get(),
        0,
        "a million keys fit under the default cap"
    );
}
