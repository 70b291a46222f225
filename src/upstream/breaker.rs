//! The upstream-wide circuit breaker: opens on the *rate* of origin failures over a
//! sliding window, with a minimum request count (Hystrix's model).
//!
//! Closed: every request goes through and is counted. When, over the last `window`,
//! at least `min_requests` requests were answered and at least `failure_rate` of them
//! failed at the origin, it opens: requests are refused at once (503 `circuit_open`,
//! `Retry-After` = the time left) for `open_time`. Then it is half-open: one probe
//! request goes through; its success closes the breaker with a fresh window, its
//! failure opens it again for twice as long (up to `max_open_time`).
//!
//! The window is a ring of ten buckets of atomic counters, so the request path takes no
//! lock; a bucket reused at a bucket boundary can lose a count or two to a race, which
//! a rate over tens of requests does not notice.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use prometheus::IntGauge;

use crate::config::admission::BreakerConfig;

/// Buckets in the sliding window.
const BUCKETS: usize = 10;

#[derive(Debug, Default)]
struct Bucket {
    /// Which bucket period (`now / bucket_ms + 1`) the counts belong to; 0 = unused.
    period: AtomicU64,
    requests: AtomicU32,
    failures: AtomicU32,
}

/// What the breaker says about one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Send it.
    Pass,
    /// Refuse it; the breaker is open for this much longer.
    Refuse(Duration),
}

/// The breaker's counts and state; times are ms since the owner's epoch (never 0).
#[derive(Debug)]
pub(crate) struct Breaker {
    config: BreakerConfig,
    bucket_ms: u64,
    buckets: [Bucket; BUCKETS],
    /// 0 while closed; else the time from which a probe may go through.
    open_until: AtomicU64,
    /// When the half-open probe was let through; 0 when none is out.
    probe_since: AtomicU64,
    /// Opens in a row without a success in between, for the doubling.
    opens: AtomicU32,
    gauge: IntGauge,
}

/// How much of the breaker's state the admin API shows.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub(crate) struct BreakerView {
    /// `closed`, `open` or `half_open`.
    pub state: &'static str,
    /// Requests counted in the window.
    pub requests: u32,
    /// Origin failures among them.
    pub failures: u32,
    /// Until a probe may go through, while open.
    pub open_for_ms: u64,
}

impl Breaker {
    pub(crate) fn new(config: BreakerConfig, gauge: IntGauge) -> Self {
        gauge.set(0);
        Breaker {
            bucket_ms: (config.window.as_millis() as u64 / BUCKETS as u64).max(1),
            config,
            buckets: Default::default(),
            open_until: AtomicU64::new(0),
            probe_since: AtomicU64::new(0),
            opens: AtomicU32::new(0),
            gauge,
        }
    }

    pub(crate) fn config(&self) -> &BreakerConfig {
        &self.config
    }

    /// Whether a request may go to the origin now.
    pub(crate) fn admit(&self, now: u64) -> Verdict {
        let until = self.open_until.load(Ordering::Acquire);
        if until == 0 {
            return Verdict::Pass;
        }
        if now < until {
            return Verdict::Refuse(Duration::from_millis(until - now));
        }
        // Half-open: one probe at a time. A probe that never reported (its client left)
        // stops blocking after another open time.
        let probe = self.probe_since.load(Ordering::Acquire);
        let probe_deadline = self.config.open_time.as_millis() as u64;
        if probe != 0 && now < probe + probe_deadline {
            return Verdict::Refuse(Duration::from_secs(1));
        }
        match self
            .probe_since
            .compare_exchange(probe, now, Ordering::AcqRel, Ordering::Relaxed)
        {
            Ok(_) => {
                tracing::info!("circuit half-open: one probe request goes to the origin");
                Verdict::Pass
            }
            Err(_) => Verdict::Refuse(Duration::from_secs(1)),
        }
    }

    /// `Some(time left)` while open (not while a probe may go through).
    pub(crate) fn open_for(&self, now: u64) -> Option<Duration> {
        let until = self.open_until.load(Ordering::Acquire);
        (until != 0 && now < until).then(|| Duration::from_millis(until - now))
    }

    /// Counts an answered request; `failed` when it failed at the origin.
    pub(crate) fn record(&self, now: u64, failed: bool, upstream: &str) {
        if !self.config.enabled {
            return;
        }
        let until = self.open_until.load(Ordering::Acquire);
        if until != 0 && now >= until {
            // Half-open: this answer decides.
            if failed {
                self.open(now, until, upstream);
            } else {
                self.close(until, upstream);
            }
            return;
        }
        let b = self.bucket(now);
        b.requests.fetch_add(1, Ordering::Relaxed);
        if !failed {
            return;
        }
        b.failures.fetch_add(1, Ordering::Relaxed);
        if until != 0 {
            return;
        }
        let (requests, failures) = self.totals(now);
        if requests >= self.config.min_requests
            && f64::from(failures) >= self.config.failure_rate * f64::from(requests)
        {
            tracing::warn!(upstream, requests, failures, window = ?self.config.window, "circuit opens: too many origin failures");
            self.open(now, 0, upstream);
        }
    }

    /// A request that gave no evidence about the origin (the client's fault): a probe
    /// that ends this way lets the next request probe instead.
    pub(crate) fn inconclusive(&self) {
        self.probe_since.store(0, Ordering::Release);
    }

    fn open(&self, now: u64, from: u64, upstream: &str) {
        let k = self.opens.load(Ordering::Acquire).min(16);
        let time = (self.config.open_time * 2u32.pow(k)).min(self.config.max_open_time);
        let until = now + time.as_millis() as u64;
        if self
            .open_until
            .compare_exchange(from, until, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
        {
            self.opens.fetch_add(1, Ordering::AcqRel);
            self.probe_since.store(0, Ordering::Release);
            self.gauge.set(1);
            if from != 0 {
                tracing::warn!(upstream, open_for = ?time, "circuit probe failed; open again");
            }
        }
    }

    fn close(&self, from: u64, upstream: &str) {
        if self
            .open_until
            .compare_exchange(from, 0, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
        {
            for b in &self.buckets {
                b.period.store(0, Ordering::Relaxed);
                b.requests.store(0, Ordering::Relaxed);
                b.failures.store(0, Ordering::Relaxed);
            }
            self.opens.store(0, Ordering::Release);
            self.probe_since.store(0, Ordering::Release);
            self.gauge.set(0);
            tracing::info!(upstream, "circuit closed: the probe request succeeded");
        }
    }

    fn period(&self, now: u64) -> u64 {
        now / self.bucket_ms + 1
    }

    fn bucket(&self, now: u64) -> &Bucket {
        let period = self.period(now);
        let b = &self.buckets[(period % BUCKETS as u64) as usize];
        let old = b.period.load(Ordering::Acquire);
        if old != period
            && b.period
                .compare_exchange(old, period, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        {
            b.requests.store(0, Ordering::Relaxed);
            b.failures.store(0, Ordering::Relaxed);
        }
        b
    }

    /// Requests and failures in the window ending now.
    fn totals(&self, now: u64) -> (u32, u32) {
        let period = self.period(now);
        self.buckets
            .iter()
            .filter(|b| {
                let p = b.period.load(Ordering::Acquire);
                p != 0 && p <= period && period - p < BUCKETS as u64
            })
            .fold((0, 0), |(r, f), b| {
                (
                    r + b.requests.load(Ordering::Relaxed),
                    f + b.failures.load(Ordering::Relaxed),
                )
            })
    }

    pub(crate) fn view(&self, now: u64) -> BreakerView {
        let (requests, failures) = self.totals(now);
        let until = self.open_until.load(Ordering::Acquire);
        let state = match until {
            0 => "closed",
            u if now < u => "open",
            _ => "half_open",
        };
        BreakerView {
            state,
            requests,
            failures,
            open_for_ms: until.saturating_sub(now),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker(min_requests: u32) -> Breaker {
        let config = BreakerConfig {
            min_requests,
            ..BreakerConfig::default()
        };
        Breaker::new(config, IntGauge::new("g", "g").unwrap())
    }

    #[test]
    fn below_the_minimum_count_even_all_failures_keep_it_closed() {
        let b = breaker(20);
        for t in 1..20 {
            b.record(t, true, "shop");
        }
        assert_eq!(b.admit(30), Verdict::Pass);
    }

    #[test]
    fn half_failing_over_the_minimum_count_opens_it_and_a_good_probe_closes_it() {
        let b = breaker(20);
        for t in 1..=20 {
            b.record(t, t % 2 == 0, "shop");
        }
        assert!(matches!(b.admit(25), Verdict::Refuse(_)));
        // After the open time one probe goes through, the next request waits for it.
        let later = 21 + 5_000;
        assert_eq!(b.admit(later), Verdict::Pass);
        assert!(matches!(b.admit(later + 1), Verdict::Refuse(_)));
        b.record(later + 2, false, "shop");
        assert_eq!(b.admit(later + 3), Verdict::Pass);
        assert_eq!(
            b.view(later + 3).requests,
            0,
            "a fresh window after closing"
        );
    }

    #[test]
    fn a_failed_probe_opens_it_for_twice_as_long() {
        let b = breaker(1);
        b.record(1, true, "shop");
        assert_eq!(b.open_for(1), Some(Duration::from_secs(5)));
        assert_eq!(b.admit(5_001), Verdict::Pass);
        b.record(5_002, true, "shop");
        assert_eq!(b.open_for(5_002), Some(Duration::from_secs(10)));
    }

    #[test]
    fn failures_older_than_the_window_stop_counting() {
        let b = breaker(20);
        for t in 1..=15 {
            b.record(t, true, "shop");
        }
        // 11 s later those 15 failures are out of the 10 s window.
        for t in 0..10 {
            b.record(11_000 + t, t < 5, "shop");
        }
        assert_eq!(b.admit(11_100), Verdict::Pass);
        assert_eq!(b.view(11_100).requests, 10);
    }
}
