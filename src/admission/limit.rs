//! Adaptive concurrency: a limit that follows the origin's latency (`max_concurrency = "auto"`).
//!
//! The gradient algorithm of Netflix's concurrency-limits (`Gradient2Limit`), which
//! Envoy's adaptive concurrency filter also follows: compare the recent latency
//! (`short`, the mean of one sample window) with the long-run latency (`long`, an
//! exponential average over many windows). While they agree the origin is not queueing
//! internally and the limit may grow by a small headroom; when the recent latency rises
//! above the long-run one, the limit shrinks by their ratio. So an origin that slows
//! down is sent less, and one that copes is probed for more, between `min` and `max`.

use std::time::Duration;

use tokio::time::Instant;

/// A window closes after this long (and at least [`MIN_SAMPLES`] samples): long enough
/// to average out single slow pages, short enough to react within a second.
pub const WINDOW: Duration = Duration::from_millis(100);
/// Fewer samples than this say nothing about latency; the window stays open.
pub const MIN_SAMPLES: u32 = 10;
/// Windows in the long-run average (Netflix uses 600 samples ≈ tens of seconds).
const LONG_WINDOWS: f64 = 100.0;
/// Recent latency may be this much above the long-run one before the limit shrinks.
const TOLERANCE: f64 = 1.5;
/// Each window moves the limit a fifth of the way to its new estimate.
const SMOOTHING: f64 = 0.2;
/// The first limit: Netflix's initial limit, a safe start for an unknown origin.
pub const INITIAL_LIMIT: usize = 20;

/// The gradient limiter's state.
#[derive(Debug, Clone)]
pub struct Gradient {
    limit: f64,
    min: usize,
    max: usize,
    long_rtt: Option<f64>,
    window_start: Instant,
    sum: f64,
    n: u32,
    peak_in_flight: usize,
}

impl Gradient {
    /// A limiter starting at [`INITIAL_LIMIT`] (clamped), bounded by `min..=max`.
    pub fn new(min: usize, max: usize, now: Instant) -> Self {
        Gradient {
            limit: INITIAL_LIMIT.clamp(min, max) as f64,
            min,
            max,
            long_rtt: None,
            window_start: now,
            sum: 0.0,
            n: 0,
            peak_in_flight: 0,
        }
    }

    /// Changes the bounds in place (config reload), keeping what was learnt.
    pub fn rebound(&mut self, min: usize, max: usize) {
        self.min = min;
        self.max = max;
        self.limit = self.limit.clamp(min as f64, max as f64);
    }

    /// The current limit.
    pub fn limit(&self) -> usize {
        self.limit as usize
    }

    /// Records one request's latency; `in_flight` is how many were in flight with it.
    /// Returns whether the limit was recomputed.
    pub fn sample(&mut self, now: Instant, rtt: Duration, in_flight: usize) -> bool {
        self.sum += rtt.as_secs_f64();
        self.n += 1;
        self.peak_in_flight = self.peak_in_flight.max(in_flight);
        if self.n < MIN_SAMPLES || now.duration_since(self.window_start) < WINDOW {
            return false;
        }
        let short = self.sum / self.n as f64;
        let peak = self.peak_in_flight;
        self.window_start = now;
        self.sum = 0.0;
        self.n = 0;
        self.peak_in_flight = 0;
        self.update(short, peak);
        true
    }

    fn update(&mut self, short: f64, peak_in_flight: usize) {
        let alpha = 2.0 / (LONG_WINDOWS + 1.0);
        let mut long = self
            .long_rtt
            .map_or(short, |l| l * (1.0 - alpha) + short * alpha);
        // After a long overload the long-run average is inflated; pull it down faster
        // than the average would, or the limit overshoots once the origin recovers.
        if long / short > 2.0 {
            long *= 0.95;
        }
        self.long_rtt = Some(long);
        // Not using half the limit: latency says nothing about a higher one.
        if (peak_in_flight as f64) < self.limit / 2.0 {
            return;
        }
        let gradient = (TOLERANCE * long / short).clamp(0.5, 1.0);
        let headroom = self.limit.sqrt();
        let target = self.limit * gradient + headroom;
        self.limit = (self.limit * (1.0 - SMOOTHING) + target * SMOOTHING)
            .clamp(self.min as f64, self.max as f64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    /// Feeds `windows` windows of samples at latency `rtt` with the limit fully used.
    fn run(g: &mut Gradient, t: &mut Instant, windows: usize, rtt: Duration) {
        for _ in 0..windows {
            for _ in 0..MIN_SAMPLES {
                *t += WINDOW / MIN_SAMPLES;
                let busy = g.limit();
                g.sample(*t, rtt, busy);
            }
        }
    }

    #[test]
    fn a_steady_fully_used_origin_is_probed_for_more_up_to_the_ceiling() {
        let mut t = Instant::now();
        let mut g = Gradient::new(4, 200, t);
        let start = g.limit();
        run(&mut g, &mut t, 30, 20 * MS);
        assert!(g.limit() > start, "{} !> {start}", g.limit());
        run(&mut g, &mut t, 500, 20 * MS);
        assert_eq!(g.limit(), 200);
    }

    #[test]
    fn an_origin_that_slows_down_is_sent_less_but_never_below_the_floor() {
        let mut t = Instant::now();
        let mut g = Gradient::new(4, 200, t);
        run(&mut g, &mut t, 40, 20 * MS);
        let before = g.limit();
        run(&mut g, &mut t, 5, 100 * MS);
        assert!(g.limit() < before, "{} !< {before}", g.limit());
        run(&mut g, &mut t, 200, 400 * MS);
        assert!(g.limit() >= 4);
    }

    #[test]
    fn an_idle_origin_does_not_grow_the_limit() {
        let mut t = Instant::now();
        let mut g = Gradient::new(4, 200, t);
        for _ in 0..200 {
            t += WINDOW / MIN_SAMPLES;
            g.sample(t, 20 * MS, 1);
        }
        assert_eq!(g.limit(), INITIAL_LIMIT);
    }
}
