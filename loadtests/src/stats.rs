//! What a run measured: counts per status and class, HDR histograms, a timeline.
//!
//! Latencies are kept in microseconds. In the open model they run from the
//! *scheduled* send time, so a stalled target shows up in full for every request
//! that was due during the stall (coordinated omission, the wrk2 lesson).

use hdrhistogram::Histogram;
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::Duration;
use tokio::time::Instant;

/// Highest latency histograms hold, in µs; longer ones are clamped to it.
const MAX_LATENCY_US: u64 = 3_600_000_000;

/// How a request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub enum Class {
    /// 2xx.
    Success,
    /// 3xx.
    Redirect,
    /// 4xx.
    ClientError,
    /// 5xx (and anything outside 200..=499).
    ServerError,
    /// No response within the timeout.
    Timeout,
    /// TCP connect or handshake failed.
    ConnectError,
    /// The connection broke mid-request.
    OtherError,
}

impl Class {
    /// All classes, in report order.
    pub const ALL: [Class; 7] = [
        Class::Success,
        Class::Redirect,
        Class::ClientError,
        Class::ServerError,
        Class::Timeout,
        Class::ConnectError,
        Class::OtherError,
    ];

    /// Class of a status code.
    pub fn of_status(status: u16) -> Class {
        match status {
            200..=299 => Class::Success,
            300..=399 => Class::Redirect,
            400..=499 => Class::ClientError,
            _ => Class::ServerError,
        }
    }

    /// Short label used in reports and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Class::Success => "2xx",
            Class::Redirect => "3xx",
            Class::ClientError => "4xx",
            Class::ServerError => "5xx",
            Class::Timeout => "timeout",
            Class::ConnectError => "connect_error",
            Class::OtherError => "error",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Whether a status is a deliberate refusal (shed or rate-limited) rather than a failure.
pub fn is_refusal(status: u16) -> bool {
    status == 429 || status == 503
}

/// One second of the run.
#[derive(Debug, Clone)]
pub struct Second {
    /// Requests sent (dispatched) in that second.
    pub sent: u64,
    /// Scheduled requests dropped in that second.
    pub dropped: u64,
    /// Completions in that second, by class.
    pub completed: [u64; 7],
    /// Latencies of the responses that completed in that second.
    pub latency: Histogram<u64>,
}

impl Second {
    fn new() -> Self {
        Second {
            sent: 0,
            dropped: 0,
            completed: [0; 7],
            // Two significant digits are plenty for a chart, and keep an hour of
            // seconds within a few tens of MB.
            latency: Histogram::new_with_bounds(1, 60_000_000, 2).expect("valid bounds"),
        }
    }
}

/// Shopper outcomes.
#[derive(Debug, Clone)]
pub struct ShopperStats {
    /// Sessions started.
    pub started: u64,
    /// Sessions that got past the waiting page.
    pub admitted: u64,
    /// Sessions whose checkout answered 2xx.
    pub purchased: u64,
    /// Sessions that ran out of time (waiting or refused).
    pub gave_up: u64,
    /// Admitted sessions sent back to the waiting page mid-visit.
    pub thrown_out: u64,
    /// Waiting-page polls.
    pub polls: u64,
    /// Arrival to admission, µs.
    pub wait: Histogram<u64>,
    /// Arrival to purchase, µs.
    pub session: Histogram<u64>,
}

impl ShopperStats {
    fn new() -> Self {
        ShopperStats {
            started: 0,
            admitted: 0,
            purchased: 0,
            gave_up: 0,
            thrown_out: 0,
            polls: 0,
            wait: hist(),
            session: hist(),
        }
    }
}

fn hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("valid bounds")
}

/// Per mix-entry counts.
#[derive(Debug, Clone)]
pub struct EntryStats {
    /// Entry label.
    pub name: String,
    /// Responses and failures.
    pub count: u64,
    /// 2xx responses.
    pub ok: u64,
    /// Latency of all its responses, µs.
    pub latency: Histogram<u64>,
}

/// Latencies of the requests scheduled after a point in the run.
#[derive(Debug)]
pub struct Sustained {
    /// Since the start of the run.
    pub after: Duration,
    /// 2xx.
    pub ok: Histogram<u64>,
    /// 429 and 503.
    pub refusals: Histogram<u64>,
}

/// Everything recorded during one run; shared behind a mutex.
#[derive(Debug)]
pub struct Recorder {
    start: Instant,
    /// Arrivals due (open model); each is one request or one shopper.
    pub scheduled: u64,
    /// Requests dispatched, shoppers' included.
    pub sent: u64,
    /// Arrivals dropped because `max_in_flight` was reached.
    pub dropped: u64,
    /// Requests cut by the hard stop (not counted in any class).
    pub stopped: u64,
    /// Completions by class.
    pub classes: [u64; 7],
    /// Responses by status code.
    pub statuses: BTreeMap<u16, u64>,
    /// All HTTP responses and timeouts.
    pub all: Histogram<u64>,
    /// By class.
    pub by_class: Vec<Histogram<u64>>,
    /// 429 and 503 only.
    pub refusals: Histogram<u64>,
    /// Latencies of the requests scheduled at or after this point, when the scenario
    /// asks for them (`sustained_after`): the load held, without its onset.
    pub sustained: Option<Sustained>,
    /// How late requests left compared with their schedule, µs.
    pub lag: Histogram<u64>,
    /// Body bytes received.
    pub bytes: u64,
    /// One entry per second since start.
    pub timeline: Vec<Second>,
    /// Per mix entry.
    pub entries: Vec<EntryStats>,
    /// Shopper outcomes.
    pub shoppers: ShopperStats,
    /// A few distinct error messages, for the report.
    pub error_samples: BTreeMap<String, u64>,
}

fn us(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1)
}

impl Recorder {
    /// A recorder whose second 0 starts at `start`.
    pub fn new(start: Instant, entry_names: &[String]) -> Self {
        Recorder {
            start,
            scheduled: 0,
            sent: 0,
            dropped: 0,
            stopped: 0,
            classes: [0; 7],
            statuses: BTreeMap::new(),
            all: hist(),
            by_class: Class::ALL.iter().map(|_| hist()).collect(),
            refusals: hist(),
            sustained: None,
            lag: hist(),
            bytes: 0,
            timeline: Vec::new(),
            entries: entry_names
                .iter()
                .map(|n| EntryStats {
                    name: n.clone(),
                    count: 0,
                    ok: 0,
                    latency: hist(),
                })
                .collect(),
            shoppers: ShopperStats::new(),
            error_samples: BTreeMap::new(),
        }
    }

    /// Also records the latencies of requests scheduled `after` the start or later.
    pub fn with_sustained_after(mut self, after: Option<Duration>) -> Self {
        self.sustained = after.map(|after| Sustained {
            after,
            ok: hist(),
            refusals: hist(),
        });
        self
    }

    /// When the run started.
    pub fn start(&self) -> Instant {
        self.start
    }

    fn second(&mut self, at: Instant) -> &mut Second {
        let i = at.saturating_duration_since(self.start).as_secs() as usize;
        while self.timeline.len() <= i {
            self.timeline.push(Second::new());
        }
        &mut self.timeline[i]
    }

    /// A request left at `now`; `lag` is how late against its schedule (open model only).
    pub fn dispatched(&mut self, now: Instant, lag: Option<Duration>) {
        self.sent += 1;
        if let Some(lag) = lag {
            self.lag.saturating_record(us(lag));
        }
        self.second(now).sent += 1;
    }

    /// An arrival was due but the in-flight cap was reached.
    pub fn dropped(&mut self, now: Instant) {
        self.dropped += 1;
        self.second(now).dropped += 1;
    }

    /// A request ended at `now`.
    pub fn completed(
        &mut self,
        now: Instant,
        entry: usize,
        status: Option<u16>,
        class: Class,
        latency: Duration,
        bytes: u64,
    ) {
        let l = us(latency);
        self.classes[class.index()] += 1;
        self.bytes += bytes;
        self.by_class[class.index()].saturating_record(l);
        let timed = status.is_some() || class == Class::Timeout;
        if timed {
            // Connection errors are left out of the overall latency: they are
            // fast failures, and would make a broken target look quick.
            self.all.saturating_record(l);
        }
        if let Some(s) = status {
            *self.statuses.entry(s).or_insert(0) += 1;
            if is_refusal(s) {
                self.refusals.saturating_record(l);
            }
        }
        if let Some(sus) = &mut self.sustained {
            // Latency runs from the scheduled send, so the send was due at now - latency.
            let due = now.checked_sub(latency).unwrap_or(self.start);
            if due.saturating_duration_since(self.start) >= sus.after {
                if class == Class::Success {
                    sus.ok.saturating_record(l);
                } else if status.is_some_and(is_refusal) {
                    sus.refusals.saturating_record(l);
                }
            }
        }
        if let Some(e) = self.entries.get_mut(entry) {
            e.count += 1;
            if class == Class::Success {
                e.ok += 1;
            }
            if timed {
                e.latency.saturating_record(l);
            }
        }
        let sec = self.second(now);
        sec.completed[class.index()] += 1;
        if timed {
            sec.latency.saturating_record(l.min(60_000_000));
        }
    }

    /// Keeps a sample of a failure message (a few distinct ones).
    pub fn error_sample(&mut self, msg: &str) {
        if self.error_samples.len() < 8 || self.error_samples.contains_key(msg) {
            *self.error_samples.entry(msg.to_string()).or_insert(0) += 1;
        }
    }

    /// Completions so far.
    pub fn completed_total(&self) -> u64 {
        self.classes.iter().sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn the_sustained_view_leaves_out_requests_scheduled_during_the_onset() {
        let start = Instant::now();
        let mut rec =
            Recorder::new(start, &["page".to_string()]).with_sustained_after(Some(2000 * MS));
        // Scheduled at 1.5 s, answered at 2.5 s: the onset, even though it ended later.
        rec.completed(
            start + 2500 * MS,
            0,
            Some(503),
            Class::of_status(503),
            1000 * MS,
            0,
        );
        // Scheduled at 2.1 s and 2.2 s.
        rec.completed(
            start + 2102 * MS,
            0,
            Some(503),
            Class::of_status(503),
            2 * MS,
            0,
        );
        rec.completed(
            start + 2230 * MS,
            0,
            Some(200),
            Class::of_status(200),
            30 * MS,
            0,
        );
        let sus = rec.sustained.as_ref().expect("asked for");
        assert_eq!(sus.refusals.len(), 1);
        assert!(sus.refusals.max() < 3_000, "the 1 s refusal is the onset's");
        assert_eq!(sus.ok.len(), 1);
        assert_eq!(rec.refusals.len(), 2, "the whole run keeps both");
    }
}
