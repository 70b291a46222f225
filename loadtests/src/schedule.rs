//! Arrival schedules: when the i-th request of an open-model run is due.
//!
//! Arrival times come from inverting the cumulative arrival count N(t) of each
//! phase, not from stepping 1/rate(t): stepping drifts on long ramps and never
//! leaves a ramp that starts at rate 0.

use std::time::Duration;

/// One stretch of the arrival rate, linear from `from` to `to` requests per second.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Phase {
    /// Rate at the start of the phase, requests per second.
    pub from: f64,
    /// Rate at the end of the phase, requests per second.
    pub to: f64,
    /// How long the phase lasts.
    pub duration: Duration,
}

#[derive(Debug, Clone)]
struct Span {
    start: f64,
    len: f64,
    from: f64,
    to: f64,
    arrivals_before: f64,
    arrivals: f64,
}

/// A whole run's arrival curve, made of consecutive phases.
#[derive(Debug, Clone)]
pub struct Schedule {
    spans: Vec<Span>,
    total_arrivals: f64,
    duration: Duration,
}

impl Schedule {
    /// Builds the schedule; rates are clamped at zero.
    pub fn new(phases: &[Phase]) -> Self {
        let mut spans = Vec::with_capacity(phases.len());
        let mut start = 0.0;
        let mut before = 0.0;
        for p in phases {
            let len = p.duration.as_secs_f64();
            let (from, to) = (p.from.max(0.0), p.to.max(0.0));
            let arrivals = (from + to) / 2.0 * len;
            spans.push(Span {
                start,
                len,
                from,
                to,
                arrivals_before: before,
                arrivals,
            });
            start += len;
            before += arrivals;
        }
        Schedule {
            spans,
            total_arrivals: before,
            duration: phases.iter().map(|p| p.duration).sum(),
        }
    }

    /// Total planned length of the schedule.
    pub fn duration(&self) -> Duration {
        self.duration
    }

    /// Number of arrivals the schedule holds.
    pub fn total_requests(&self) -> u64 {
        // Arrival i sits where N(t) = i, so arrivals 0..ceil(N_total) fit.
        let n = self.total_arrivals;
        if n <= 0.0 {
            0
        } else {
            n.ceil() as u64
        }
    }

    /// The same schedule with every rate multiplied by `factor`.
    pub fn scaled(&self, factor: f64) -> Self {
        let phases: Vec<Phase> = self
            .spans
            .iter()
            .map(|s| Phase {
                from: s.from * factor,
                to: s.to * factor,
                duration: Duration::from_secs_f64(s.len),
            })
            .collect();
        Schedule::new(&phases)
    }

    /// Rate planned at `t` seconds, for reports.
    pub fn rate_at(&self, t: f64) -> f64 {
        for s in &self.spans {
            if t >= s.start && t < s.start + s.len {
                return s.from + (s.to - s.from) * (t - s.start) / s.len;
            }
        }
        0.0
    }

    /// Peak planned rate.
    pub fn peak_rate(&self) -> f64 {
        self.spans
            .iter()
            .map(|s| s.from.max(s.to))
            .fold(0.0, f64::max)
    }

    /// Iterates over arrival offsets from the start of the run, in order.
    pub fn arrivals(&self) -> Arrivals<'_> {
        Arrivals {
            schedule: self,
            next: 0,
            span: 0,
        }
    }
}

/// Iterator over arrival offsets; keeps a cursor so each step is O(1).
pub struct Arrivals<'a> {
    schedule: &'a Schedule,
    next: u64,
    span: usize,
}

impl Iterator for Arrivals<'_> {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let n = self.next as f64;
        if n >= self.schedule.total_arrivals {
            return None;
        }
        while self.span < self.schedule.spans.len() {
            let s = &self.schedule.spans[self.span];
            if n < s.arrivals_before + s.arrivals {
                let k = n - s.arrivals_before;
                // Solve a t² + b t = k with a = (to-from)/(2 len), b = from, in the
                // form 2k / (b + sqrt(b² + 4ak)) that stays exact when a -> 0.
                let a = (s.to - s.from) / (2.0 * s.len);
                let b = s.from;
                let disc = (b * b + 4.0 * a * k).max(0.0);
                let denom = b + disc.sqrt();
                let t = if denom > 0.0 { 2.0 * k / denom } else { 0.0 };
                self.next += 1;
                return Some(Duration::from_secs_f64(s.start + t.min(s.len)));
            }
            self.span += 1;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_constant_rate_spaces_arrivals_evenly() {
        let s = Schedule::new(&[Phase {
            from: 100.0,
            to: 100.0,
            duration: Duration::from_secs(2),
        }]);
        let v: Vec<Duration> = s.arrivals().collect();
        assert_eq!(v.len(), 200);
        assert_eq!(v[0], Duration::ZERO);
        assert_eq!(v[1], ms(10));
        assert!((v[199].as_secs_f64() - 1.99).abs() < 1e-9);
    }

    #[test]
    fn a_ramp_from_zero_holds_half_the_arrivals_of_a_hold() {
        let s = Schedule::new(&[Phase {
            from: 0.0,
            to: 1000.0,
            duration: Duration::from_secs(2),
        }]);
        assert_eq!(s.total_requests(), 1000);
        let v: Vec<Duration> = s.arrivals().collect();
        assert_eq!(v.len(), 1000);
        // N(t) = 250 t², so the 250th arrival is at t = 1 s.
        assert!((v[250].as_secs_f64() - 1.0).abs() < 1e-6);
        assert!(v.windows(2).all(|w| w[0] <= w[1]));
    }

    #[test]
    fn phases_follow_each_other_and_a_decay_ends_on_time() {
        let s = Schedule::new(&[
            Phase {
                from: 10.0,
                to: 10.0,
                duration: Duration::from_secs(1),
            },
            Phase {
                from: 10.0,
                to: 0.0,
                duration: Duration::from_secs(1),
            },
        ]);
        let v: Vec<Duration> = s.arrivals().collect();
        assert_eq!(v.len(), 15);
        assert!(v[10] >= Duration::from_secs(1));
        assert!(v.last().unwrap() < &Duration::from_secs(2));
    }
}
