//! The CoDel-style overload detector that flips the queue from FIFO to LIFO.
//!
//! CoDel (Nichols & Jacobson, "Controlling Queue Delay", 2012) tells a good queue
//! (absorbs a burst, then drains) from a bad one (a standing queue that never drains)
//! by the *minimum* time requests spent in it over an interval: if even the luckiest
//! request of the last `interval` waited more than `target`, the queue is standing.
//! Facebook's "adaptive LIFO" (Maurer, "Fail at Scale", ACM Queue 2015) reacts to that
//! by serving the newest waiter first, whose client is still there, and by cutting the
//! wait of everyone else short, so the queue stops being a buffer of requests whose
//! clients have given up. We do both (the queue side is `queue.rs`).
//!
//! Overload starts at the end of an interval whose shortest wait was above target, or
//! at once when the admission queue sees itself full with its oldest waiter past
//! target ([`Codel::enter_overload`]). It ends after a whole interval in which nobody
//! was turned away ([`Codel::settle`]): an empty queue alone does not end it.

use std::time::Duration;

use tokio::time::Instant;

/// Detects a standing queue from the delays of dequeued requests, and its end from
/// the refusals it causes.
#[derive(Debug, Clone)]
pub struct Codel {
    target: Duration,
    interval: Duration,
    window_start: Instant,
    window_min: Option<Duration>,
    overloaded: bool,
    last_refusal: Instant,
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
            last_refusal: now,
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

    /// The standing delay above which the queue is overloaded.
    pub fn target(&self) -> Duration {
        self.target
    }

    /// The longest wait of a request queued while overloaded: twice the target. It only
    /// matters when arrivals stop (otherwise newer arrivals push old waiters out much
    /// sooner), and then a waiter still has a fair chance at the next free slot.
    pub fn overload_timeout(&self) -> Duration {
        self.target * 2
    }

    /// Records the time one request spent queued (zero when admitted at once).
    pub fn observe(&mut self, now: Instant, sojourn: Duration) {
        self.window_min = Some(self.window_min.map_or(sojourn, |m| m.min(sojourn)));
        if now.duration_since(self.window_start) >= self.interval {
            // The whole interval's best delay was above target: a standing queue.
            // Only entering overload is decided here. In LIFO the newest waiter is
            // served at once, so the minimum wait drops below target while the crowd
            // is still there: judging the end by it would flip back to FIFO and make
            // every admitted shopper wait a whole queue again.
            if !self.overloaded && self.window_min.is_some_and(|m| m > self.target) {
                self.enter_overload(now);
            } else {
                self.window_start = now;
                self.window_min = None;
            }
        }
    }

    /// Declares the queue standing now, without waiting for the interval to end: the
    /// admission queue saw itself full with its oldest waiter past target, which no
    /// burst that is being absorbed looks like.
    pub fn enter_overload(&mut self, now: Instant) {
        self.overloaded = true;
        self.last_refusal = now;
        self.window_start = now;
        self.window_min = None;
    }

    /// Records that the overload discipline turned a request away (refused at the
    /// door, pushed out by a newer arrival, or timed out): the crowd is still there.
    pub fn refused(&mut self, now: Instant) {
        self.last_refusal = now;
    }

    /// Ends the overload once a whole interval has passed without anyone turned away:
    /// demand fits what the origin serves again. An empty queue alone does not end it:
    /// completions come in clumps, and the short overload queue empties for a moment
    /// at every clump while a 10x crowd is still at the door. (Ending overload on an
    /// empty queue flipped a 10x run back to FIFO 60 times in 10 s, each time letting
    /// a full queue of 86 ms waits build up again.)
    ///
    /// Returns whether it ended the overload now.
    pub fn settle(&mut self, now: Instant) -> bool {
        if self.overloaded && now.duration_since(self.last_refusal) >= self.interval {
            self.overloaded = false;
            self.window_start = now;
            self.window_min = None;
            return true;
        }
        false
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
    fn a_delay_above_target_for_a_whole_interval_is_overload_until_an_interval_passes_without_refusals(
    ) {
        let t0 = Instant::now();
        let mut c = Codel::new(50 * MS, 500 * MS, t0);
        for at in (0..=500).step_by(50) {
            c.observe(t0 + at * MS, 80 * MS);
        }
        assert!(c.overloaded());
        // LIFO serves the newest at once: short waits do not end the overload...
        for at in (550..=1600).step_by(50) {
            c.observe(t0 + at * MS, MS);
            c.refused(t0 + at * MS);
            c.settle(t0 + at * MS);
        }
        assert!(c.overloaded(), "short LIFO waits flipped back to FIFO");
        // ...nor does less than an interval without refusals...
        c.settle(t0 + 2000 * MS);
        assert!(c.overloaded());
        // ...a whole interval without anyone turned away does.
        c.settle(t0 + 2100 * MS);
        assert!(!c.overloaded());
    }

    #[test]
    fn entering_overload_from_a_full_queue_lasts_at_least_an_interval() {
        let t0 = Instant::now();
        let mut c = Codel::new(50 * MS, 500 * MS, t0);
        c.enter_overload(t0 + 3000 * MS);
        c.settle(t0 + 3499 * MS);
        assert!(c.overloaded());
        c.settle(t0 + 3500 * MS);
        assert!(!c.overloaded());
    }
}
