//! The process-wide store: one moka sync cache, weighed in bytes, each URL holding its
//! `Vary` variants; plus purge by URL, prefix and surrogate key.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::HeaderName;
use http::{HeaderMap, StatusCode};
use moka::notification::RemovalCause;
use moka::sync::Cache;
use moka::Expiry;

use super::key;
use super::policy::Lifetime;

/// Variants kept per URL: one per `Accept-Encoding` family and a few languages is
/// plenty; a response that varies on a per-user header would otherwise fill the slot.
pub const MAX_VARIANTS: usize = 8;
/// Bookkeeping per entry beyond what is counted field by field (the `Entry` itself,
/// its vectors, the `Arc`, moka's node share).
const ENTRY_OVERHEAD: usize = 256;
/// Per stored header field or `Vary` value beyond its bytes (`HeaderMap` slot, `Box`).
const FIELD_OVERHEAD: usize = 32;
/// A stale entry with a validator stays this long past its graces: the next request
/// revalidates it with a conditional request and a 304 of a few hundred bytes instead
/// of a full fetch (RFC 9111 §4.3). It is never served unvalidated in that time.
const REVALIDATION_KEEP: Duration = Duration::from_secs(60);

/// One stored response.
#[derive(Debug)]
pub struct Entry {
    /// Its primary key.
    pub url: Arc<str>,
    /// Status.
    pub status: StatusCode,
    /// Headers as stored (hop-by-hop, `Age`, and a stripped `Set-Cookie` removed).
    pub headers: HeaderMap,
    /// The whole body.
    pub body: Bytes,
    /// The secondary key (§4.1).
    pub vary: Vec<(HeaderName, Option<Box<str>>)>,
    /// When it was received (monotonic `response_time`).
    pub stored_at: Instant,
    /// Its `corrected_initial_age` (RFC 9111 §4.2.3).
    pub initial_age: Duration,
    /// Freshness and grace.
    pub lifetime: Lifetime,
    /// `Surrogate-Key` values, for purge.
    pub surrogate_keys: Vec<Box<str>>,
}

/// How usable an entry is now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Freshness {
    /// Fresh: serve it.
    Fresh,
    /// Stale within `stale-while-revalidate`: serve it and refresh in the background.
    StaleWhileRevalidate,
    /// Stale past that: validate with the origin first.
    Stale,
}

impl Entry {
    /// Its current age (§4.2.3 `current_age`).
    pub fn age(&self, now: Instant) -> Duration {
        self.initial_age + now.saturating_duration_since(self.stored_at)
    }

    /// Remaining freshness in whole seconds, negative once stale (RFC 9211 §2.4).
    pub fn ttl_secs(&self, now: Instant) -> i64 {
        let age = self.age(now).as_secs_f64();
        (self.lifetime.fresh.as_secs_f64() - age).floor() as i64
    }

    /// Fresh, servable stale, or in need of validation.
    pub fn freshness(&self, now: Instant) -> Freshness {
        let age = self.age(now);
        if age < self.lifetime.fresh {
            Freshness::Fresh
        } else if age < self.lifetime.fresh + self.lifetime.stale_while_revalidate {
            Freshness::StaleWhileRevalidate
        } else {
            Freshness::Stale
        }
    }

    /// Whether it may stand in for a failed origin (RFC 5861 §4).
    pub fn usable_if_error(&self, now: Instant) -> bool {
        self.age(now) < self.lifetime.fresh + self.lifetime.stale_if_error
    }

    /// Bytes it holds: body, headers, the `Vary` request values, surrogate keys and
    /// bookkeeping (the URL is counted once per key, by [`Variants::weight`]).
    fn weight(&self) -> usize {
        let headers = self.headers.iter().map(|(k, v)| k.as_str().len() + v.len());
        let vary = self
            .vary
            .iter()
            .map(|(n, v)| n.as_str().len() + v.as_ref().map_or(0, |v| v.len()));
        let fields: usize = headers
            .chain(vary)
            .map(|n| n + FIELD_OVERHEAD)
            .fold(0, usize::saturating_add);
        let surrogate: usize = self
            .surrogate_keys
            .iter()
            .map(|k| k.len() + FIELD_OVERHEAD)
            .sum();
        self.body
            .len()
            .saturating_add(fields)
            .saturating_add(surrogate)
            .saturating_add(ENTRY_OVERHEAD)
    }

    fn expires_in(&self, now: Instant) -> Duration {
        let validated = self.headers.contains_key(http::header::ETAG)
            || self.headers.contains_key(http::header::LAST_MODIFIED);
        let extra = if validated {
            REVALIDATION_KEEP
        } else {
            Duration::from_secs(1)
        };
        (self.lifetime.keep() + extra).saturating_sub(self.age(now))
    }
}

/// The variants stored for one URL.
#[derive(Debug, Default)]
pub struct Variants(pub Vec<Arc<Entry>>);

impl Variants {
    /// moka's weight for a key and its variants, clamped to its `u32` (moka#408 advice).
    fn weight(key: &str, v: &Variants) -> u32 {
        let total =
            v.0.iter()
                .map(|e| e.weight())
                .fold(key.len(), usize::saturating_add);
        total.min(u32::MAX as usize) as u32
    }
}

struct ByLifetime;

impl Expiry<Arc<str>, Arc<Variants>> for ByLifetime {
    fn expire_after_create(
        &self,
        _k: &Arc<str>,
        v: &Arc<Variants>,
        now: Instant,
    ) -> Option<Duration> {
        v.0.iter().map(|e| e.expires_in(now)).max()
    }

    fn expire_after_update(
        &self,
        _k: &Arc<str>,
        v: &Arc<Variants>,
        now: Instant,
        _d: Option<Duration>,
    ) -> Option<Duration> {
        v.0.iter().map(|e| e.expires_in(now)).max()
    }
}

/// The one cache of the process.
pub struct Store {
    cache: Cache<Arc<str>, Arc<Variants>>,
    /// Configured capacity in bytes.
    pub capacity: u64,
}

/// What a lookup found.
pub struct Lookup {
    /// The matching variant.
    pub entry: Option<Arc<Entry>>,
    /// Whether the URL had variants, none matching (for `fwd=vary-miss`).
    pub other_variants: bool,
}

impl Store {
    /// A store of `capacity` bytes; `evictions` counts entries pushed out for room.
    pub fn new(capacity: u64, evictions: prometheus::IntCounter) -> Self {
        let cache = Cache::builder()
            .max_capacity(capacity)
            // An entry heavier than the whole capacity is never admitted by moka.
            .weigher(|k: &Arc<str>, v: &Arc<Variants>| Variants::weight(k, v))
            .expire_after(ByLifetime)
            .eviction_listener(move |_k, _v, cause| {
                if cause == RemovalCause::Size {
                    evictions.inc();
                }
            })
            .build();
        Store { cache, capacity }
    }

    /// The variant for a request, if any.
    pub fn lookup(&self, key: &str, req: &HeaderMap) -> Lookup {
        match self.cache.get(key) {
            None => Lookup {
                entry: None,
                other_variants: false,
            },
            Some(vs) => {
                let entry =
                    vs.0.iter()
                        .find(|e| key::vary_matches(&e.vary, req))
                        .cloned();
                Lookup {
                    other_variants: entry.is_none() && !vs.0.is_empty(),
                    entry,
                }
            }
        }
    }

    /// Stores an entry, replacing the variant with the same secondary key.
    pub fn insert(&self, entry: Arc<Entry>) {
        let key = entry.url.clone();
        let mut list: Vec<Arc<Entry>> = match self.cache.get(&key) {
            Some(vs) => {
                vs.0.iter()
                    .filter(|e| e.vary != entry.vary)
                    .cloned()
                    .collect()
            }
            None => Vec::new(),
        };
        // Variants stored under another Vary list are outdated by this response (§4.1).
        let names: Vec<&HeaderName> = entry.vary.iter().map(|(n, _)| n).collect();
        list.retain(|e| e.vary.iter().map(|(n, _)| n).collect::<Vec<_>>() == names);
        if list.len() >= MAX_VARIANTS {
            list.remove(0);
        }
        list.push(entry);
        self.cache.insert(key, Arc::new(Variants(list)));
    }

    /// Removes everything stored for one URL.
    pub fn invalidate(&self, key: &str) -> bool {
        self.cache.remove(key).is_some()
    }

    /// Removes every URL starting with `prefix`; returns how many.
    ///
    /// A scan rather than an index: purges are rare admin actions, a scan of even a
    /// full store takes milliseconds, and it cannot drift from the store or grow.
    pub fn purge_prefix(&self, prefix: &str) -> usize {
        let keys: Vec<Arc<str>> = self
            .cache
            .iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .map(|(k, _)| Arc::clone(&*k))
            .collect();
        keys.iter().filter(|k| self.invalidate(k)).count()
    }

    /// Removes every URL one of whose variants carries the surrogate key.
    pub fn purge_surrogate(&self, sk: &str) -> usize {
        let keys: Vec<Arc<str>> = self
            .cache
            .iter()
            .filter(|(_, v)| {
                v.0.iter()
                    .any(|e| e.surrogate_keys.iter().any(|s| &**s == sk))
            })
            .map(|(k, _)| Arc::clone(&*k))
            .collect();
        keys.iter().filter(|k| self.invalidate(k)).count()
    }

    /// Applies pending evictions and returns (bytes, entries) for the gauges.
    pub fn sync(&self) -> (u64, u64) {
        self.cache.run_pending_tasks();
        (self.cache.weighted_size(), self.cache.entry_count())
    }
}
