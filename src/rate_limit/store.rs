//! The keyed GCRA state of one limit, bounded: governor's limiter over a store that
//! counts its keys, refuses to grow past `max_keys`, and is swept by one thread.
//!
//! Why bounded this way (PITFALLS, governor#171): governor never forgets a key by
//! itself. The sweeper calls `retain_recent` (which drops only buckets that are full
//! again, so it loses nothing) and `shrink_to_fit` every [`SWEEP_INTERVAL`]. Between
//! sweeps the hard cap holds: once `max_keys` buckets exist, a key not already tracked
//! is checked against one shared *overflow* bucket of the same quota, instead of getting
//! a fresh bucket of its own. Newcomers during such a flood are throttled together
//! (fail closed, counted in `floodgate_rate_limit_overflow_total`) and the sweeper is
//! woken at once; what never happens is that a full store hands every new address a
//! fresh burst (the TinyLFU trap) or evicts a live abuser's debt.

use std::hash::RandomState;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::thread::Thread;
use std::time::Duration;

use dashmap::DashMap;
use governor::clock::{Clock, DefaultClock};
use governor::middleware::{NoOpMiddleware, StateInformationMiddleware};
use governor::nanos::Nanos;
use governor::state::keyed::ShrinkableKeyedStateStore;
use governor::state::{InMemoryState, NotKeyed, StateStore};
use governor::{Quota, RateLimiter};
use prometheus::{IntCounter, IntGauge};

use super::config::{Action, BucketRule};
use super::keys::{Key, PassThrough};

/// Often enough that a key's memory is back within seconds of its bucket refilling,
/// rarely enough that walking a million keys (tens of ms) is noise on one core.
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(10);

/// A keyed GCRA store with a hard cap on its number of keys.
pub struct BoundedStore {
    map: DashMap<Key, InMemoryState, PassThrough>,
    /// Keys in `map`; exact after a sweep, counted up on each insert in between.
    len: AtomicUsize,
    cap: usize,
    /// The one bucket shared by keys that arrive while the map is full.
    overflow: InMemoryState,
    overflowed: IntCounter,
}

impl BoundedStore {
    /// An empty store holding at most `cap` keys.
    pub fn new(cap: usize, overflowed: IntCounter) -> Self {
        BoundedStore {
            map: DashMap::with_hasher(PassThrough),
            len: AtomicUsize::new(0),
            cap,
            overflow: InMemoryState::default(),
            overflowed,
        }
    }
}

impl StateStore for BoundedStore {
    type Key = Key;

    fn measure_and_replace<T, F, E>(&self, key: &Key, f: F) -> Result<T, E>
    where
        F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    {
        if let Some(v) = self.map.get(key) {
            return v.measure_and_replace(&NotKeyed::NonKey, f);
        }
        if self.len.load(Ordering::Relaxed) >= self.cap {
            self.overflowed.inc();
            wake_sweeper();
            return self.overflow.measure_and_replace(&NotKeyed::NonKey, f);
        }
        let entry = self.map.entry(*key).or_insert_with(|| {
            self.len.fetch_add(1, Ordering::Relaxed);
            InMemoryState::default()
        });
        entry.measure_and_replace(&NotKeyed::NonKey, f)
    }
}

/// The stored theoretical arrival time of a bucket (0: never used).
fn tat_of(state: &InMemoryState) -> u64 {
    state
        .measure_and_replace(&NotKeyed::NonKey, Err::<((), Nanos), _>)
        .unwrap_err()
        .map_or(0, u64::from)
}

impl ShrinkableKeyedStateStore<Key> for BoundedStore {
    fn retain_recent(&self, drop_below: Nanos) {
        let below = u64::from(drop_below);
        self.map.retain(|_, v| tat_of(v) > below);
        self.len.store(self.map.len(), Ordering::Relaxed);
        // The overflow bucket is one cell; it is kept, so its debt outlives the sweep.
    }

    fn shrink_to_fit(&self) {
        self.map.shrink_to_fit();
    }

    fn len(&self) -> usize {
        self.map.len()
    }

    fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

/// What a limit says about one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Go on, after holding the request this long (zero unless `action = "delay"`).
    Allow {
        /// How long to hold the request first.
        delay: Duration,
        /// Requests this key may still send at once.
        remaining: u32,
    },
    /// Over the limit: the earliest a request of this key can conform is `wait` away.
    Refuse {
        /// Time until the next request would be allowed.
        wait: Duration,
    },
}

/// One limit's buckets: the part of a limit that survives a reload unchanged.
pub struct Limiter<C: Clock = DefaultClock> {
    rule: BucketRule,
    gcra: RateLimiter<Key, BoundedStore, C, StateInformationMiddleware>,
    /// Secret seed of the key fingerprints; lives as long as the buckets it addresses.
    pub seed: RandomState,
    keys: IntGauge,
}

impl<C: Clock> std::fmt::Debug for Limiter<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limiter")
            .field("rule", &self.rule)
            .field("keys", &self.len())
            .finish()
    }
}

/// Cells added on top of `burst` for a delaying limit: as many as drain in `max_delay`.
fn extra_cells(rule: &BucketRule) -> u32 {
    match rule.action {
        Action::Refuse => 0,
        Action::Delay(max) => {
            let t = rule.rate.interval().as_nanos().max(1);
            (max.as_nanos() / t).min(u32::MAX as u128) as u32
        }
    }
}

/// Cells a rule's bucket holds: its burst plus the delay allowance.
pub fn capacity(rule: &BucketRule) -> u32 {
    rule.burst.get().saturating_add(extra_cells(rule))
}

/// The decision for an allowed request that left `remaining` cells free.
pub fn allowed(rule: &BucketRule, remaining: u32) -> Decision {
    let extra = extra_cells(rule);
    // Cells in use beyond the plain burst are the ones to wait out.
    let used = capacity(rule).saturating_sub(remaining);
    let excess = used.saturating_sub(rule.burst.get());
    Decision::Allow {
        delay: rule.rate.interval() * excess,
        remaining: remaining.saturating_sub(extra),
    }
}

/// The quota of a rule, built explicitly so that exactly `burst` requests pass at once
/// and then one per interval (never `Quota::per_minute`, governor#219).
pub fn quota(rule: &BucketRule) -> Quota {
    let burst = rule.burst.saturating_add(extra_cells(rule));
    Quota::with_period(rule.rate.interval().max(Duration::from_nanos(1)))
        .expect("interval is above zero")
        .allow_burst(burst)
}

impl Limiter<DefaultClock> {
    /// A limiter on the real clock, registered with the sweeper.
    pub fn new(rule: BucketRule, keys: IntGauge, overflowed: IntCounter) -> Arc<Self> {
        let l = Arc::new(Self::with_clock(
            rule,
            DefaultClock::default(),
            keys,
            overflowed,
        ));
        register(Arc::downgrade(&l) as Weak<dyn Sweep>);
        l
    }
}

impl<C: Clock> Limiter<C> {
    /// A limiter on any clock (tests use governor's `FakeRelativeClock`); not swept
    /// unless the caller calls [`Limiter::sweep`].
    pub fn with_clock(rule: BucketRule, clock: C, keys: IntGauge, overflowed: IntCounter) -> Self {
        let store = BoundedStore::new(rule.max_keys, overflowed);
        let gcra = RateLimiter::<Key, BoundedStore, C, NoOpMiddleware<C::Instant>>::new(
            quota(&rule),
            store,
            clock,
        )
        .with_middleware::<StateInformationMiddleware>();
        Limiter {
            rule,
            gcra,
            seed: RandomState::new(),
            keys,
        }
    }

    /// The rule these buckets were built for.
    pub fn rule(&self) -> &BucketRule {
        &self.rule
    }

    /// Checks one request of `key` and spends a cell if it is allowed.
    pub fn check(&self, key: Key) -> Decision {
        match self.gcra.check_key(&key) {
            Ok(snapshot) => allowed(&self.rule, snapshot.remaining_burst_capacity()),
            Err(not_until) => Decision::Refuse {
                wait: not_until.wait_time_from(self.gcra.clock().now()),
            },
        }
    }

    /// Keys tracked now.
    pub fn len(&self) -> usize {
        self.gcra.len()
    }

    /// Whether no key is tracked.
    pub fn is_empty(&self) -> bool {
        self.gcra.is_empty()
    }

    /// Forgets every bucket that is full again and gives the memory back.
    pub fn sweep(&self) {
        self.gcra.retain_recent();
        self.gcra.shrink_to_fit();
        self.keys.set(self.len() as i64);
    }
}

/// Something the sweeper visits.
pub trait Sweep: Send + Sync {
    /// Drops what is no longer needed.
    fn sweep(&self);
}

impl<C: Clock + Send + Sync> Sweep for Limiter<C>
where
    C::Instant: Send + Sync,
{
    fn sweep(&self) {
        Limiter::sweep(self)
    }
}

impl<C: Clock> Drop for Limiter<C> {
    fn drop(&mut self) {
        // A limit removed by a reload stops reporting keys it no longer holds; a limit
        // rebuilt under the same name sets its own value at its next sweep.
        self.keys.set(0);
    }
}

// === the sweeper ===

struct Sweeper {
    limiters: Mutex<Vec<Weak<dyn Sweep>>>,
    thread: Thread,
    wake_pending: AtomicBool,
}

static SWEEPER: OnceLock<Sweeper> = OnceLock::new();

/// One OS thread for every limiter of the process: independent of any tokio runtime
/// (tests run many), and a sweep of a million keys is blocking work that should not
/// sit on an async worker.
fn sweeper() -> &'static Sweeper {
    SWEEPER.get_or_init(|| {
        let handle = std::thread::Builder::new()
            .name("floodgate-rate-limit-sweeper".into())
            .spawn(|| loop {
                std::thread::park_timeout(SWEEP_INTERVAL);
                if let Some(s) = SWEEPER.get() {
                    s.wake_pending.store(false, Ordering::Relaxed);
                    sweep_all(s);
                }
            })
            .expect("spawn the rate limit sweeper");
        Sweeper {
            limiters: Mutex::new(Vec::new()),
            thread: handle.thread().clone(),
            wake_pending: AtomicBool::new(false),
        }
    })
}

fn sweep_all(s: &Sweeper) {
    let live: Vec<Arc<dyn Sweep>> = {
        let mut list = s.limiters.lock().unwrap_or_else(|e| e.into_inner());
        list.retain(|w| w.strong_count() > 0);
        list.iter().filter_map(Weak::upgrade).collect()
    };
    for l in live {
        l.sweep();
    }
}

fn register(l: Weak<dyn Sweep>) {
    sweeper()
        .limiters
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(l);
}

/// Asks for a sweep now (a store is full); at most one wake-up is pending at a time so
/// a flood of overflowing requests costs one syscall, not one each.
fn wake_sweeper() {
    if let Some(s) = SWEEPER.get() {
        if !s.wake_pending.swap(true, Ordering::Relaxed) {
            s.thread.unpark();
        }
    }
}

/// Sweeps every registered limiter now (for tests, benches and measurements).
pub fn sweep_now() {
    sweep_all(sweeper());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::units::rate;
    use crate::rate_limit::config::KeySpec;
    use governor::clock::FakeRelativeClock;
    use std::num::NonZeroU32;

    fn rule(r: &str, burst: u32, action: Action, max_keys: usize) -> BucketRule {
        BucketRule {
            name: "t".into(),
            key: KeySpec::Global,
            rate: rate(r).unwrap(),
            burst: NonZeroU32::new(burst).unwrap(),
            ipv4_prefix: 32,
            ipv6_prefix: 64,
            action,
            max_keys,
        }
    }

    fn limiter(
        r: &str,
        burst: u32,
        action: Action,
        max_keys: usize,
    ) -> (Limiter<FakeRelativeClock>, FakeRelativeClock) {
        let clock = FakeRelativeClock::default();
        let gauge = IntGauge::new("k", "k").unwrap();
        let overflow = IntCounter::new("o", "o").unwrap();
        (
            Limiter::with_clock(
                rule(r, burst, action, max_keys),
                clock.clone(),
                gauge,
                overflow,
            ),
            clock,
        )
    }

    fn allowed_now(l: &Limiter<FakeRelativeClock>, key: Key, tries: u32) -> u32 {
        (0..tries)
            .filter(|_| matches!(l.check(key), Decision::Allow { .. }))
            .count() as u32
    }

    #[test]
    fn exactly_the_burst_passes_at_once_then_one_per_interval() {
        let (l, clock) = limiter("20/s", 40, Action::Refuse, 100);
        assert_eq!(allowed_now(&l, 1, 100), 40);
        match l.check(1) {
            Decision::Refuse { wait } => assert_eq!(wait, Duration::from_millis(50)),
            d => panic!("{d:?}"),
        }
        clock.advance(Duration::from_millis(49));
        assert_eq!(allowed_now(&l, 1, 5), 0);
        clock.advance(Duration::from_millis(1));
        assert_eq!(allowed_now(&l, 1, 5), 1);
        // After a full refill (burst × interval = 2 s) the whole burst is back, no more.
        clock.advance(Duration::from_secs(2));
        assert_eq!(allowed_now(&l, 1, 100), 40);
    }

    #[test]
    fn a_per_minute_rate_lets_through_burst_plus_elapsed_minutes_worth_not_double() {
        // governor#219: per_minute(600) would let 600 at once plus 10/s on top.
        let (l, clock) = limiter("600/m", 10, Action::Refuse, 100);
        let mut passed = 0;
        for _ in 0..600 {
            passed += allowed_now(&l, 7, 100);
            clock.advance(Duration::from_millis(100));
        }
        // 10 at once, then one per 100 ms over 60 s.
        assert_eq!(passed, 10 + 599);
    }

    #[test]
    fn remaining_counts_down_and_keys_are_independent() {
        let (l, _clock) = limiter("1/s", 3, Action::Refuse, 100);
        let rem: Vec<u32> = (0..3)
            .map(|_| match l.check(1) {
                Decision::Allow { remaining, .. } => remaining,
                d => panic!("{d:?}"),
            })
            .collect();
        assert_eq!(rem, [2, 1, 0]);
        assert!(matches!(l.check(1), Decision::Refuse { .. }));
        assert!(matches!(l.check(2), Decision::Allow { remaining: 2, .. }));
    }

    #[test]
    fn a_delaying_limit_holds_excess_requests_up_to_max_delay_then_refuses() {
        let (l, _clock) = limiter("10/s", 2, Action::Delay(Duration::from_millis(300)), 100);
        let delays: Vec<Option<Duration>> = (0..6)
            .map(|_| match l.check(1) {
                Decision::Allow { delay, .. } => Some(delay),
                Decision::Refuse { .. } => None,
            })
            .collect();
        let ms = |n| Some(Duration::from_millis(n));
        assert_eq!(delays, [ms(0), ms(0), ms(100), ms(200), ms(300), None]);
    }

    #[test]
    fn a_full_store_sends_new_keys_to_one_shared_bucket_never_a_fresh_burst() {
        let (l, clock) = limiter("1/s", 2, Action::Refuse, 3);
        for k in 0..3 {
            assert_eq!(allowed_now(&l, k, 1), 1);
        }
        assert_eq!(l.len(), 3);
        // Ten newcomers share one bucket of burst 2.
        let passed: u32 = (100..110).map(|k| allowed_now(&l, k, 1)).sum();
        assert_eq!(passed, 2);
        assert_eq!(l.len(), 3);
        // Tracked keys keep their own buckets.
        assert_eq!(allowed_now(&l, 0, 5), 1);
        // Once their buckets refill, a sweep frees the room.
        clock.advance(Duration::from_secs(5));
        l.sweep();
        assert_eq!(l.len(), 0);
        assert_eq!(allowed_now(&l, 200, 5), 2);
    }

    #[test]
    fn a_sweep_keeps_buckets_in_debt_and_drops_full_ones() {
        let (l, clock) = limiter("1/s", 5, Action::Refuse, 100);
        assert_eq!(allowed_now(&l, 1, 5), 5); // in debt for 5 s
        assert_eq!(allowed_now(&l, 2, 1), 1); // in debt for 1 s
        clock.advance(Duration::from_secs(2));
        l.sweep();
        assert_eq!(l.len(), 1);
        // Key 1 did not get a fresh burst out of the sweep.
        assert_eq!(allowed_now(&l, 1, 5), 2);
    }
}
