//! The CoDel-style overload detector that flips the queue from FIFO to LIFO.
//!
//! CoDel (Nichols & Jacobson, "Controlling Queue Delay", 2012) tells a good queue
//! (absorbs a burst, then drains) from a bad one (a standing queue that never drains)
//! by the *minimum* time requests spent in it over an interval: if even the luckiest
//! request of the last `interval` waited more than `target`, the queue is standing.
//! Facebook's "adaptive LIFO" (Maurer, "Fail at Scale", ACM Queue 2015) reacts to that
//! by serving the newest waiter first, whose client is still there, and by cutting the
//! wait of everyone else short, so the queue stops being a buffer of requests whose
//! clients have given up. We do both; overload ends when the queue drains.

use std::time::Duration;

use tokio::time::Instant;

/// Detects a standing queue from the delays of dequeued requests.
#[derive(Debug, Clone)]
pub struct Codel {
    target: Duration,
    interval: Duration,
    window_start: Instant,
    window_min: Option<Duration>,
    overloaded: bool,
}

impl Codel {
    /// A detector with CoDel's two parameters.
    pub fn new(target: Duration, interval: Duration, now: Instant) -> Self {
        Codel {
            target,
            interval,
            window_start: now,
            window_min: None,
            overloaded: false,
        }
    }

    /// Changes the parameters in place (config reload), keeping the current state.
    pub fn retune(&mut self, target: Duration, interval: Duration) {
        self.target = target;
        self.interval = interval;
    }

    /// Whether the queue is standing: serve LIFO and shorten waits.
    pub fn overloaded(&self) -> bool {
        self.overloaded
    }

    /// The wait allowed to a request while overloaded: twice the target, so that a
    /// waiter still has a fair chance at the next free slot but the queue cannot hold
    /// more than a couple of targets' worth of stale requests.
    pub fn overload_timeout(&self) -> Duration {
        self.target * 2
    }

    /// Records the time one request spent queued (zero when admitted at once).
    pub fn observe(&mut self, now: Instant, sojourn: Duration) {
        self.window_min = Some(self.window_min.map_or(sojourn, |m| m.min(sojourn)));
        if now.duration_since(self.window_start) >= self.interval {
            // The whole interval's best delay was above target: a standing queue.
            // Only entering overload is decided here; leaving it is `drained`. In LIFO
            // the newest waiter is served at once, so the minimum wait drops below
            // target while the queue still stands: judging by it would flip back to
            // FIFO and make every admitted shopper wait the whole queue again.
            self.overloaded |= self.window_min.is_some_and(|m| m > self.target);
            self.window_start = now;
            self.window_min = None;
        }
    }

    /// The queue drained: whatever was standing is gone.
    pub fn drained(&mut self, now: Instant) {
        self.overloaded = false;
        self.window_start = now;
        self.window_min = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn a_burst_that_drains_below_target_stays_fifo() {
        let t0 = Instant::now();
        let mut c = Codel::new(50 * MS, 500 * MS, t0);
        // Long waits early in the window, but one request got through quickly.
        for (at, d) in [(10, 200), (100, 150), (200, 20), (400, 120), (510, 130)] {
            c.observe(t0 + at * MS, d * MS);
        }
        assert!(!c.overloaded());
    }

    #[test]
    fn a_delay_above_target_for_a_whole_interval_is_overload_until_the_queue_drains() {
        let t0 = Instant::now();
        let mut c = Codel::new(50 * MS, 500 * MS, t0);
        for at in (0..=500).step_by(50) {
            c.observe(t0 + at * MS, 80 * MS);
        }
        assert!(c.overloaded());
        // Still standing in the next interval.
        c.observe(t0 + 700 * MS, 60 * MS);
        assert!(c.overloaded());
        // LIFO serves the newest at once: short waits do not end the overload...
        for at in (750..=1600).step_by(50) {
            c.observe(t0 + at * MS, MS);
        }
        assert!(c.overloaded(), "short LIFO waits flipped back to FIFO");
        // ...only a drained queue does.
        c.drained(t0 + 1700 * MS);
        assert!(!c.overloaded());
    }
}
