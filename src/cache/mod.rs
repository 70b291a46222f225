//! The shared HTTP cache (RFC 9111 as a shared cache), one tower layer per route over
//! one process-wide store.
//!
//! ```text
//!  request ──► key (scheme, host, path?query; Vary) ──► store (moka, bytes-weighed)
//!                 │ fresh: serve (304 for a matching conditional), Age, Cache-Status
//!                 │ stale within stale-while-revalidate: serve, one background refresh
//!                 │ missing/stale: join or lead the URL's fill (coalescing)
//!                 ▼
//!           fill task (detached): GET to the origin with stored validators,
//!           stream to the leader while accumulating ≤ max_object_size, then store
//!           and wake the waiters; origin error → stale-if-error (when allowed)
//! ```
//!
//! Defaults never share what is personal: no heuristic freshness unless the route
//! sets `default_ttl`, a request with a cookie or `Authorization` shares its response
//! only when the response says it may, and stale copies need the origin's or the
//! operator's permission. See `docs/cache.md`.
//!
//! Parts: [`config`] (keys), [`policy`] (storability, freshness, age, conditionals),
//! [`key`] (primary and `Vary` keys), [`store`] (moka, purge), [`coalesce`] (fills in
//! flight), [`service`] (the layer), [`outcome`] (what happened, for `Cache-Status`,
//! metrics and logs).

pub mod body;
pub mod coalesce;
pub mod config;
pub mod key;
pub mod outcome;
pub mod policy;
pub mod service;
pub mod store;

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use moka::sync::Cache;
use moka::Expiry;

pub use config::{CacheRule, CacheSettings};
pub use outcome::CacheOutcome;
pub use service::{CacheLayer, CacheService};

use crate::metrics::Metrics;
use crate::reconfigure::{Changes, Outcome};
use coalesce::Fills;
use store::Store;

/// The share of `capacity` the hit-for-miss markers may take (1/16: 16 MiB of 256 MiB,
/// some hundred thousand typical URLs). Each marker holds its URL, which a client
/// chooses, so markers are weighed in bytes within the one capacity like pages;
/// forgetting one early only means one more coalesced wait.
pub const HIT_FOR_MISS_SHARE: u64 = 16;
/// Bytes a marker holds beyond its URL (the `Arc<str>` header, the TTL, moka's node).
const MARKER_OVERHEAD: usize = 128;
/// How often pending moka evictions are applied and the size gauges refreshed:
/// eviction is lazy and the weighted size can overshoot between runs (moka#408).
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

struct TtlFromValue;

impl Expiry<Arc<str>, Duration> for TtlFromValue {
    fn expire_after_create(
        &self,
        _k: &Arc<str>,
        ttl: &Duration,
        _now: Instant,
    ) -> Option<Duration> {
        Some(*ttl)
    }
}

/// The process's cache: the store, the fills in flight, the hit-for-miss memory.
///
/// Built once and carried across reloads (see [`HttpCache::carry_over`]).
pub struct HttpCache {
    /// The capacity it was built with: moka cannot resize a store.
    pub capacity: u64,
    /// Stored responses.
    pub store: Store,
    /// Fills in flight.
    pub fills: Arc<Fills>,
    /// URLs recently found uncacheable, with how long to remember each; byte-weighed
    /// within `capacity / HIT_FOR_MISS_SHARE`.
    pub hit_for_miss: Cache<Arc<str>, Duration>,
    size_bytes: prometheus::IntGauge,
    entries: prometheus::IntGauge,
    hfm_entries: prometheus::IntGauge,
}

impl HttpCache {
    /// A cache with `settings`, reporting into the process's metric families. Starts a
    /// sweeper on the current tokio runtime when there is one.
    pub fn new(settings: &CacheSettings, metrics: &Metrics) -> Arc<Self> {
        // Pages and markers share the one capacity, so the total never passes it.
        let markers = settings.capacity / HIT_FOR_MISS_SHARE;
        let cache = Arc::new(HttpCache {
            capacity: settings.capacity,
            store: Store::new(settings.capacity - markers, metrics.cache_evictions.clone()),
            fills: Fills::new(metrics.cache_fills_in_flight.clone()),
            hit_for_miss: Cache::builder()
                .max_capacity(markers)
                .weigher(|k: &Arc<str>, _: &Duration| {
                    (k.len().saturating_add(MARKER_OVERHEAD)).min(u32::MAX as usize) as u32
                })
                .expire_after(TtlFromValue)
                .build(),
            size_bytes: metrics.cache_size_bytes.clone(),
            entries: metrics.cache_entries.clone(),
            hfm_entries: metrics.cache_hit_for_miss_entries.clone(),
        });
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let weak: Weak<HttpCache> = Arc::downgrade(&cache);
            rt.spawn(async move {
                let mut tick = tokio::time::interval(SWEEP_INTERVAL);
                loop {
                    tick.tick().await;
                    let Some(c) = weak.upgrade() else { return };
                    c.sweep();
                }
            });
        }
        cache
    }

    /// The cache after a reload from `old` settings to `settings`, and what changed:
    /// `previous` is kept, pages and all, unless its capacity changed (then a new,
    /// empty store). The other keys live in the routes' rules and apply at once.
    pub(crate) fn carry_over(
        previous: Option<(&Arc<HttpCache>, &CacheSettings)>,
        settings: &CacheSettings,
        metrics: &Metrics,
    ) -> (Arc<Self>, Changes) {
        let mut said = Changes::new();
        let Some((cache, old)) = previous else {
            return (HttpCache::new(settings, metrics), said);
        };
        let (o, n) = (old, settings);
        said.compare(
            "cache.max_object_size",
            &o.max_object_size,
            &n.max_object_size,
            Outcome::Applied,
        );
        said.compare(
            "cache.targeted_field",
            &o.targeted_field,
            &n.targeted_field,
            Outcome::Applied,
        );
        if cache.capacity == settings.capacity {
            return (cache.clone(), said);
        }
        said.push("cache.capacity", Outcome::Applied);
        said.push("cache", Outcome::Reset("emptied"));
        (HttpCache::new(settings, metrics), said)
    }

    /// Applies pending evictions and refreshes the gauges.
    pub fn sweep(&self) {
        self.hit_for_miss.run_pending_tasks();
        self.hfm_entries.set(self.hit_for_miss.entry_count() as i64);
        self.update_gauges();
    }

    /// Applies pending store maintenance and refreshes the gauges. Called after
    /// fills and invalidations, which are rare next to hits, so its cost stays off
    /// the hit path.
    pub fn update_gauges(&self) {
        let (bytes, n) = self.store.sync();
        // Everything the capacity covers: pages and hit-for-miss markers.
        let total = bytes.saturating_add(self.hit_for_miss.weighted_size());
        self.size_bytes.set(total.min(i64::MAX as u64) as i64);
        self.entries.set(n as i64);
    }

    /// Purges one URL (`http://host/path?query`); returns how many URLs went.
    pub fn purge_url(&self, url: &str) -> Option<usize> {
        let k = key::from_url(url)?;
        self.hit_for_miss.invalidate(k.as_str());
        let n = self.store.invalidate(&k) as usize;
        self.sweep();
        Some(n)
    }

    /// Purges every URL starting with a prefix (`http://host/products/`).
    pub fn purge_prefix(&self, prefix: &str) -> Option<usize> {
        // A bare `http://host` becomes `http://host/`: every key of that host, and
        // not `http://hostname.other`.
        let k = key::from_url(prefix)?;
        let n = self.store.purge_prefix(&k);
        self.sweep();
        Some(n)
    }

    /// Purges every URL whose response carried the surrogate key.
    pub fn purge_surrogate_key(&self, sk: &str) -> usize {
        let n = self.store.purge_surrogate(sk);
        self.sweep();
        n
    }
}
