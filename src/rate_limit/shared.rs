//! A limit shared by every instance: its buckets live in the state backend, and while
//! that backend is away this instance decides from local buckets holding its share.
//!
//! The bound, across N instances behind any balancer: in any window of length t a
//! client gets at most `burst + rate × t` while Redis answers (one GCRA bucket, one
//! clock: Redis `TIME`, every cell spent atomically in a Lua script; no slack). While
//! Redis is away each instance holds `max(1, ⌊burst/N⌋)` cells refilled at `rate/N`,
//! so the sum stays within `burst + rate × t` plus at most N − 1 cells when
//! `burst < N`, with N as last counted. A Redis that comes back empty (restarted
//! without persistence) forgets debts: one extra `burst` at most, once.

use std::hash::{BuildHasher, Hasher};
use std::num::NonZeroU32;
use std::sync::Arc;

use arc_swap::ArcSwap;
use sha2::{Digest, Sha256};

use super::config::BucketRule;
use super::keys::Key;
use super::metrics::LimitMetrics;
use super::store::{allowed, capacity, Decision, Limiter};
use crate::config::units::Rate;
use crate::state::{Consumed, Gcra, SharedState};

/// A seed every instance shares, so that one client maps to one Redis key whichever
/// instance it reached (the local store's seed is random per process, on purpose).
#[derive(Debug, Clone, Copy, Default)]
pub struct StableSeed;

/// SHA-256, truncated to 64 bits: stable across processes and builds, unlike std's
/// SipHash whose output the standard library does not promise to keep.
pub struct StableHasher(Sha256);

impl BuildHasher for StableSeed {
    type Hasher = StableHasher;
    fn build_hasher(&self) -> StableHasher {
        StableHasher(Sha256::new())
    }
}

impl Hasher for StableHasher {
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
    fn finish(&self) -> u64 {
        let d = self.0.clone().finalize();
        u64::from_le_bytes(d[..8].try_into().expect("32-byte digest"))
    }
}

/// This instance's share of a rule when N instances serve it: `rate/N` and
/// `max(1, ⌊burst/N⌋)`.
pub fn share_of(rule: &BucketRule, n: u32) -> BucketRule {
    let n = n.max(1);
    let mut r = rule.clone();
    r.rate = Rate {
        count: rule.rate.count,
        per: rule.rate.per * n,
    };
    r.burst = NonZeroU32::new((rule.burst.get() / n).max(1)).expect("at least one");
    r
}

/// The local buckets of one share.
struct Share {
    n: u32,
    limiter: Arc<Limiter>,
}

/// One limit whose buckets live in the state backend.
pub struct SharedLimit {
    state: Arc<dyn SharedState>,
    rule: BucketRule,
    gcra: Gcra,
    /// `prefix{rl:ROUTE:LIMIT:` — the key's hash tag closes after the client's hex.
    key_prefix: String,
    fallback: ArcSwap<Share>,
    metrics: LimitMetrics,
}

impl SharedLimit {
    /// A shared limit, or `None` when the backend shares no buckets (local).
    pub fn new(
        state: &Arc<dyn SharedState>,
        route: &str,
        rule: &BucketRule,
        metrics: &LimitMetrics,
    ) -> Option<SharedLimit> {
        if state.backend() == crate::metrics::LOCAL_STATE_BACKEND {
            return None;
        }
        let n = state.live_instances();
        Some(SharedLimit {
            state: state.clone(),
            rule: rule.clone(),
            gcra: Gcra {
                interval: rule.rate.interval(),
                capacity: capacity(rule),
            },
            key_prefix: format!("{}{{rl:{route}:{}:", state.bucket_prefix(), rule.name),
            fallback: ArcSwap::from_pointee(Share {
                n,
                limiter: Limiter::new(
                    share_of(rule, n),
                    metrics.keys.clone(),
                    metrics.overflow.clone(),
                ),
            }),
            metrics: metrics.clone(),
        })
    }

    /// Checks one request of `key` (a [`StableSeed`] fingerprint) against the shared
    /// bucket, or against this instance's share while the backend does not answer.
    pub async fn check(&self, key: Key) -> Decision {
        let redis_key = format!("{}{key:016x}}}", self.key_prefix);
        if let Some(call) = self.state.consume(redis_key, self.gcra) {
            match call.await {
                Ok(Consumed::Allowed { remaining }) => return allowed(&self.rule, remaining),
                Ok(Consumed::Refused { wait }) => return Decision::Refuse { wait },
                Err(_) => {}
            }
        }
        self.share().check(key)
    }

    /// The local buckets for the live count as last seen, rebuilt when it changed.
    fn share(&self) -> Arc<Limiter> {
        let n = self.state.live_instances();
        let current = self.fallback.load();
        if current.n == n {
            return current.limiter.clone();
        }
        let limiter = Limiter::new(
            share_of(&self.rule, n),
            self.metrics.keys.clone(),
            self.metrics.overflow.clone(),
        );
        self.fallback.store(Arc::new(Share {
            n,
            limiter: limiter.clone(),
        }));
        limiter
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::units::rate;
    use crate::rate_limit::config::{Action, KeySpec};

    fn rule(rate_s: &str, burst: u32) -> BucketRule {
        BucketRule {
            name: "t".into(),
            key: KeySpec::Global,
            rate: rate(rate_s).unwrap(),
            burst: NonZeroU32::new(burst).unwrap(),
            ipv4_prefix: 32,
            ipv6_prefix: 64,
            action: Action::Refuse,
            max_keys: 10,
        }
    }

    #[test]
    fn each_of_n_instances_holds_a_nth_of_the_rate_and_burst_and_at_least_one_cell() {
        let r = rule("30/s", 10);
        let s = share_of(&r, 3);
        assert_eq!(s.burst.get(), 3);
        assert!((s.rate.per_second() - 10.0).abs() < 1e-9);
        assert_eq!(share_of(&r, 1), r);
        assert_eq!(share_of(&rule("1/m", 2), 5).burst.get(), 1);
    }

    #[test]
    fn a_client_maps_to_the_same_shared_key_in_every_process() {
        let mut a = StableSeed.build_hasher();
        a.write(b"203.0.113.7");
        // SHA-256("203.0.113.7"), first 8 bytes little-endian: fixed, whatever the process.
        assert_eq!(a.finish(), 10372085342791910910);
        assert_ne!(a.finish(), StableSeed.build_hasher().finish());
    }
}
