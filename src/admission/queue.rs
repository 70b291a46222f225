//! The admission controller of one upstream: slots, the bounded priority queue and its
//! discipline. One per upstream, shared by every route that sends to it.
//!
//! Hand-written rather than a `tokio::sync::Semaphore`: tokio's semaphore is strictly
//! FIFO and cannot serve by class, evict the lowest class, switch to LIFO, or change its
//! size for adaptive concurrency. All state sits behind one short mutex; no await
//! happens while it is held.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use prometheus::{Histogram, IntCounter, IntGauge};
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::codel::Codel;
use super::error::ShedReason;
use super::limit::Gradient;
use super::priority::{Priority, CLASSES};
use crate::body::BodyGuard;
use crate::config::admission::AdmissionTuning;
use crate::config::{Concurrency, UpstreamConfig};
use crate::metrics::Metrics;

/// What the controller needs from an upstream's config.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// A fixed limit or `auto`.
    pub max_concurrency: Concurrency,
    /// Waiters at most; 0 means refuse at once when every slot is busy.
    pub queue_size: usize,
    /// Longest wait in normal (FIFO) operation.
    pub queue_timeout: Duration,
    /// CoDel and adaptive bounds.
    pub tuning: AdmissionTuning,
}

impl Settings {
    /// The admission settings of an upstream.
    pub fn of(u: &UpstreamConfig) -> Self {
        Settings {
            max_concurrency: u.max_concurrency,
            queue_size: u.queue_size,
            queue_timeout: u.queue_timeout,
            tuning: u.admission.clone(),
        }
    }
}

/// Pre-resolved metric children of one upstream's admission.
#[derive(Clone)]
pub struct AdmissionMetrics {
    depth: IntGauge,
    overloaded: IntGauge,
    wait: Histogram,
    limit: IntGauge,
    shed: [IntCounter; 5],
}

impl AdmissionMetrics {
    /// Children for `upstream` from the process-wide families.
    pub fn new(metrics: &Metrics, upstream: &str) -> Self {
        AdmissionMetrics {
            depth: metrics.queue_depth.with_label_values(&[upstream]),
            overloaded: metrics.queue_overloaded.with_label_values(&[upstream]),
            wait: metrics.queue_wait.with_label_values(&[upstream]),
            limit: metrics.concurrency_limit.with_label_values(&[upstream]),
            shed: ShedReason::ALL.map(|r| metrics.shed.with_label_values(&[upstream, r.as_str()])),
        }
    }

    /// Counts one shed request.
    pub fn shed(&self, reason: ShedReason) {
        self.shed[reason.index()].inc();
    }
}

enum Limit {
    Fixed(usize),
    Adaptive(Gradient),
}

impl Limit {
    fn get(&self) -> usize {
        match self {
            Limit::Fixed(n) => *n,
            Limit::Adaptive(g) => g.limit(),
        }
    }
}

/// What a waiter is told when it leaves the queue other than by its own timer.
enum Grant {
    Admitted,
    Shed(ShedReason),
}

struct Waiter {
    id: u64,
    enqueued: Instant,
    tx: oneshot::Sender<Grant>,
}

/// Weight of one completion in the moving average of slot-holding time: about the
/// last hundred requests, 40 ms at 2,500 req/s, so the overload queue's depth follows
/// an origin that slows down within a few of its own page times.
const SERVICE_EWMA_WEIGHT: f64 = 0.01;

struct State {
    settings: Settings,
    /// Moving average of how long a request holds its slot (seconds); `None` until
    /// the first request has completed.
    service: Option<f64>,
    /// Until the first request completes: the sum of the instants (seconds since
    /// `epoch`) at which the slots were granted. None of them has been released yet,
    /// so this gives the mean time the slots in flight have been held so far.
    grants: f64,
    epoch: Instant,
    limit: Limit,
    in_flight: usize,
    queues: [VecDeque<Waiter>; CLASSES],
    queued: usize,
    next_id: u64,
    codel: Codel,
}

/// The admission controller of one upstream.
pub struct Admission {
    state: Mutex<State>,
    metrics: AdmissionMetrics,
}

impl Admission {
    /// A controller with `settings`, reporting into `metrics`.
    pub fn new(settings: Settings, metrics: AdmissionMetrics) -> Arc<Self> {
        let now = Instant::now();
        let t = &settings.tuning;
        let limit = match settings.max_concurrency {
            Concurrency::Fixed(n) => Limit::Fixed(n),
            Concurrency::Auto => Limit::Adaptive(Gradient::new(
                t.min_concurrency,
                t.max_concurrency_limit,
                now,
            )),
        };
        metrics.limit.set(limit.get() as i64);
        metrics.depth.set(0);
        metrics.overloaded.set(0);
        Arc::new(Admission {
            state: Mutex::new(State {
                service: None,
                grants: 0.0,
                epoch: now,
                codel: Codel::new(t.codel_target, t.codel_interval, now),
                settings,
                limit,
                in_flight: 0,
                queues: Default::default(),
                queued: 0,
                next_id: 0,
            }),
            metrics,
        })
    }

    /// Applies new settings on a config reload. In-flight requests and waiters keep
    /// their places, so the origin is never sent more than the limit across a reload.
    pub fn reconfigure(&self, settings: Settings) {
        let mut st = self.lock();
        if st.settings == settings {
            return;
        }
        let now = Instant::now();
        let t = &settings.tuning;
        st.codel.retune(t.codel_target, t.codel_interval);
        st.limit = match (
            std::mem::replace(&mut st.limit, Limit::Fixed(0)),
            settings.max_concurrency,
        ) {
            (Limit::Adaptive(mut g), Concurrency::Auto) => {
                g.rebound(t.min_concurrency, t.max_concurrency_limit);
                Limit::Adaptive(g)
            }
            (_, Concurrency::Auto) => Limit::Adaptive(Gradient::new(
                t.min_concurrency,
                t.max_concurrency_limit,
                now,
            )),
            (_, Concurrency::Fixed(n)) => Limit::Fixed(n),
        };
        st.settings = settings;
        let grants = self.dispatch(&mut st, now);
        drop(st);
        send_all(grants);
    }

    /// The metric handles, for layers that shed on this upstream's behalf.
    pub fn metrics(&self) -> &AdmissionMetrics {
        &self.metrics
    }

    /// Requests holding a slot now.
    pub fn in_flight(&self) -> usize {
        self.lock().in_flight
    }

    /// Requests waiting now.
    pub fn queued(&self) -> usize {
        self.lock().queued
    }

    /// The concurrency limit now.
    pub fn limit(&self) -> usize {
        self.lock().limit.get()
    }

    /// Whether the queue is in CoDel overload (LIFO, short queue, short waits).
    pub fn overloaded(&self) -> bool {
        let mut st = self.lock();
        if st.codel.settle(Instant::now()) {
            self.publish(&st);
        }
        st.codel.overloaded()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding this lock leaves plain counters behind; keep serving.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits for a slot for a request of class `class`.
    ///
    /// Returns at once with a slot, or refused (`queue_full`, or `codel` while
    /// overloaded); otherwise waits in the queue until admitted, timed out, pushed out
    /// by a newer arrival while overloaded, or evicted by a higher class. If the
    /// returned future is dropped (the client went away) the waiter leaves the queue
    /// at once and counts as `client_gone`.
    pub async fn acquire(self: Arc<Self>, class: Priority) -> Result<Permit, ShedReason> {
        let now = Instant::now();
        let (id, rx, deadline, timeout_reason) = {
            let mut st = self.lock();
            if st.codel.settle(now) {
                self.publish(&st);
            }
            if st.queued == 0 && st.in_flight < st.limit.get() {
                take_slot(&mut st, now);
                st.codel.observe(now, Duration::ZERO);
                return Ok(Permit::new(self.clone(), now));
            }
            let (room, pushed_out) = make_room(&mut st, class, now);
            if let Err(refusal) = room {
                self.publish(&st);
                drop(st);
                self.push_out(pushed_out);
                self.metrics.shed(refusal);
                return Err(refusal);
            }
            let (overloaded, short) = (st.codel.overloaded(), st.codel.overload_timeout());
            let (timeout, reason) = if overloaded && short < st.settings.queue_timeout {
                (short, ShedReason::Codel)
            } else {
                (st.settings.queue_timeout, ShedReason::QueueTimeout)
            };
            let id = st.next_id;
            st.next_id += 1;
            let (tx, rx) = oneshot::channel();
            st.queues[class.index()].push_back(Waiter {
                id,
                enqueued: now,
                tx,
            });
            st.queued += 1;
            self.publish(&st);
            drop(st);
            self.push_out(pushed_out);
            (id, rx, now + timeout, reason)
        };
        let mut wait = Wait {
            admission: self.clone(),
            id,
            class,
            rx,
            done: false,
        };
        let outcome = match tokio::time::timeout_at(deadline, &mut wait.rx).await {
            Ok(Ok(g)) => g,
            // The sender is only dropped with the controller itself.
            Ok(Err(_)) => Grant::Shed(ShedReason::QueueTimeout),
            Err(_) => {
                if self.remove(class, id, timeout_reason) {
                    self.metrics.shed(timeout_reason);
                    Grant::Shed(timeout_reason)
                } else {
                    // Granted or shed by a dispatcher while the timer fired: the answer
                    // was sent under the lock we just took, so it is in the channel.
                    wait.rx.try_recv().unwrap_or(Grant::Shed(timeout_reason))
                }
            }
        };
        wait.done = true;
        match outcome {
            Grant::Admitted => Ok(Permit::new(self.clone(), Instant::now())),
            Grant::Shed(r) => Err(r),
        }
    }

    /// Updates the queue's gauges: depth, and whether it is overloaded.
    fn publish(&self, st: &State) {
        self.metrics.depth.set(st.queued as i64);
        self.metrics
            .overloaded
            .set(i64::from(st.codel.overloaded()));
    }

    /// Tells waiters taken out of the queue to make room that they are refused.
    fn push_out(&self, waiters: Vec<(Waiter, ShedReason)>) {
        for (w, reason) in waiters {
            self.metrics.shed(reason);
            let _ = w.tx.send(Grant::Shed(reason));
        }
    }

    /// Removes a waiter still in the queue; false if a dispatcher took it already.
    fn remove(&self, class: Priority, id: u64, reason: ShedReason) -> bool {
        let mut st = self.lock();
        let q = &mut st.queues[class.index()];
        let Some(pos) = q.iter().position(|w| w.id == id) else {
            return false;
        };
        q.remove(pos);
        st.queued -= 1;
        if reason == ShedReason::Codel {
            st.codel.refused(Instant::now());
        }
        self.publish(&st);
        true
    }

    /// Frees a slot held for `held`, and admits whoever is next.
    fn release(&self, held: Duration) {
        let now = Instant::now();
        let mut st = self.lock();
        st.in_flight -= 1;
        let in_flight = st.in_flight + 1;
        let h = held.as_secs_f64();
        st.service = Some(st.service.map_or(h, |s| {
            s * (1.0 - SERVICE_EWMA_WEIGHT) + h * SERVICE_EWMA_WEIGHT
        }));
        if let Limit::Adaptive(g) = &mut st.limit {
            if g.sample(now, held, in_flight) {
                self.metrics.limit.set(g.limit() as i64);
            }
        }
        let grants = self.dispatch(&mut st, now);
        drop(st);
        send_all(grants);
    }

    /// Hands free slots to waiters: highest class first, FIFO within a class unless
    /// CoDel says the queue is standing, then newest first, with waiters older than
    /// the overload timeout shed (they are only left when arrivals stop: otherwise
    /// newer arrivals push them out much sooner).
    /// The grants are sent by the caller after the lock is released.
    fn dispatch(&self, st: &mut State, now: Instant) -> Vec<(Waiter, Grant)> {
        let mut out = Vec::new();
        st.codel.settle(now);
        if st.codel.overloaded() {
            let max_age = st.codel.overload_timeout();
            for q in st.queues.iter_mut() {
                while q
                    .front()
                    .is_some_and(|w| now.duration_since(w.enqueued) > max_age)
                {
                    let w = q.pop_front().expect("checked");
                    st.codel.refused(now);
                    self.metrics.shed(ShedReason::Codel);
                    out.push((w, Grant::Shed(ShedReason::Codel)));
                    st.queued -= 1;
                }
            }
        }
        while st.queued > 0 && st.in_flight < st.limit.get() {
            let lifo = st.codel.overloaded();
            let Some(q) = Priority::HIGHEST_FIRST
                .iter()
                .map(|c| c.index())
                .find(|&c| !st.queues[c].is_empty())
            else {
                break;
            };
            let w = if lifo {
                st.queues[q].pop_back()
            } else {
                st.queues[q].pop_front()
            }
            .expect("non-empty");
            st.queued -= 1;
            let sojourn = now.duration_since(w.enqueued);
            st.codel.observe(now, sojourn);
            self.metrics.wait.observe(sojourn.as_secs_f64());
            take_slot(st, now);
            out.push((w, Grant::Admitted));
        }
        self.publish(st);
        out
    }
}

/// Gives a slot to a request now.
fn take_slot(st: &mut State, now: Instant) {
    st.in_flight += 1;
    if st.service.is_none() {
        st.grants += now.duration_since(st.epoch).as_secs_f64();
    }
}

fn send_all(grants: Vec<(Waiter, Grant)>) {
    for (w, g) in grants {
        // A waiter removes itself under the lock before its receiver is dropped, so a
        // waiter still in the queue always has a live receiver.
        let _ = w.tx.send(g);
    }
}

/// Makes room in the queue for an arrival of `class`: whether it may queue (if not, it
/// is refused at once with the reason given) and the waiters taken out of the queue to
/// make room, each with the reason it is to be told.
///
/// - Draining normally (FIFO), the queue holds `queue_size`. When it is full, those who
///   came first keep their places; only a higher class takes the place of the newest
///   waiter of the lowest class below it.
/// - A full queue that will not start what it holds within the CoDel target is not a
///   burst being absorbed ([`standing`]): it goes into overload now rather than at the
///   end of a whole interval (at 10x overload an interval of FIFO makes every shopper
///   served in it wait the whole queue).
/// - Overloaded (LIFO), the queue keeps only [`overload_depth`] waiters. An arrival
///   takes the place of the *oldest* waiter of the lowest class at or below its own,
///   who is refused now (`codel`): under LIFO that waiter would only sit at the bottom
///   of the stack until its timeout. It was queued for about `depth / excess arrival
///   rate` (0.5 ms at 10x overload of 2,300 req/s), so refusals stay immediate.
fn make_room(
    st: &mut State,
    class: Priority,
    now: Instant,
) -> (Result<(), ShedReason>, Vec<(Waiter, ShedReason)>) {
    let size = st.settings.queue_size;
    let mut out = Vec::new();
    if !st.codel.overloaded() {
        if st.queued < size {
            return (Ok(()), out);
        }
        if !standing(st, now) {
            let Some(victim) = (0..class.index()).find(|&c| !st.queues[c].is_empty()) else {
                return (Err(ShedReason::QueueFull), out);
            };
            st.queued -= 1;
            let w = st.queues[victim].pop_back().expect("non-empty");
            out.push((w, ShedReason::QueueFull));
            return (Ok(()), out);
        }
        st.codel.enter_overload(now);
    }
    let bound = size.min(overload_depth(st, now));
    while st.queued >= bound {
        // Only higher classes left to push out: the arrival is the one refused.
        let Some(victim) = (0..=class.index()).find(|&c| !st.queues[c].is_empty()) else {
            st.codel.refused(now);
            return (Err(ShedReason::Codel), out);
        };
        st.queued -= 1;
        let w = st.queues[victim].pop_front().expect("non-empty");
        st.codel.refused(now);
        out.push((w, ShedReason::Codel));
    }
    (Ok(()), out)
}

/// Whether a full queue is standing rather than absorbing a burst: it cannot take more,
/// and what it holds will not be served within the CoDel target. Either its oldest
/// waiter has already waited past the target, or, predicted at once rather than
/// learned by waiting, it holds more than the origin starts within the target.
///
/// The prediction is what lets the opening second of a sale meet the overload
/// discipline at once. At 10x (25,000 req/s against 50 slots of 20 ms) a fresh queue
/// of 200 is full within 10 ms; waiting for its oldest to pass 50 ms kept 200 clients
/// (and their connections) waiting up to 50 ms before they were refused. Before any
/// request has completed the slots' age says it already: 50 slots held 12.5 ms or
/// more start at most 200 waiters in 50 ms, so the queue is standing 13.5 ms after the
/// first arrival, while its waiters have waited at most 12 ms.
fn standing(st: &State, now: Instant) -> bool {
    let target = st.codel.target();
    let oldest = st
        .queues
        .iter()
        .filter_map(|q| q.front())
        .map(|w| w.enqueued)
        .min();
    oldest.is_some_and(|t| now.duration_since(t) > target)
        || starts_within(st, now, target).is_some_and(|n| st.queued > n)
}

/// How many waiters the queue keeps while overloaded: what the origin starts within
/// `overload_queue_delay`. While nothing is known of its pace, one per slot.
fn overload_depth(st: &State, now: Instant) -> usize {
    let delay = st.settings.tuning.overload_queue_delay;
    starts_within(st, now, delay).unwrap_or_else(|| st.limit.get().max(1))
}

/// How many waiters the origin starts within `delay` at its pace (slots / slot-holding
/// time), rounded up, at least one; `None` while nothing is known of its pace.
fn starts_within(st: &State, now: Instant, delay: Duration) -> Option<usize> {
    let holding = holding_time(st, now)?;
    let n = (st.limit.get() as f64 * delay.as_secs_f64() / holding).ceil();
    // The cast saturates; a pathological sub-nanosecond holding time stays bounded by
    // queue_size at the callers.
    Some((n as usize).max(1))
}

/// How long a request holds its slot, in seconds: the moving average once a request
/// has completed. Before that, the mean time the slots in flight have been held so
/// far: none of them has finished, so they are held at least that long, and until one
/// does it is the best (and an optimistic) guess of the origin's pace, rather than no
/// guess at all while a fresh queue fills. `None` when nothing is in flight yet.
fn holding_time(st: &State, now: Instant) -> Option<f64> {
    let held = match st.service {
        Some(s) => s,
        None if st.in_flight == 0 => return None,
        None => {
            let now = now.duration_since(st.epoch).as_secs_f64();
            now - st.grants / st.in_flight as f64
        }
    };
    (held > 0.0).then_some(held)
}

/// A waiter's presence in the queue; dropping it unqueued (client gone) removes it.
struct Wait {
    admission: Arc<Admission>,
    id: u64,
    class: Priority,
    rx: oneshot::Receiver<Grant>,
    done: bool,
}

impl Drop for Wait {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        if self
            .admission
            .remove(self.class, self.id, ShedReason::ClientGone)
        {
            self.admission.metrics.shed(ShedReason::ClientGone);
        } else if let Ok(Grant::Admitted) = self.rx.try_recv() {
            // Admitted just as the client left: give the slot to the next waiter.
            drop(Permit::new(self.admission.clone(), Instant::now()));
        }
    }
}

/// A slot: one request in flight to the upstream. Released on drop; in the response
/// it rides in a [`crate::body::Guarded`] body, so the slot is held until the origin's
/// response body has been fully received (the origin is busy until then).
pub struct Permit {
    admission: Arc<Admission>,
    granted: Instant,
}

impl Permit {
    fn new(admission: Arc<Admission>, granted: Instant) -> Self {
        Permit { admission, granted }
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.admission.release(self.granted.elapsed());
    }
}

impl BodyGuard for Permit {
    fn release(self, _bytes: u64, _complete: bool) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex as StdMutex;

    const MS: Duration = Duration::from_millis(1);

    fn admission(limit: usize, queue_size: usize) -> Arc<Admission> {
        admission_with(limit, queue_size, 5 * MS)
    }

    /// Target 50 ms, interval 500 ms, queue timeout 10 s.
    fn admission_with(
        limit: usize,
        queue_size: usize,
        overload_queue_delay: Duration,
    ) -> Arc<Admission> {
        let metrics = Metrics::new();
        let settings = Settings {
            max_concurrency: Concurrency::Fixed(limit),
            queue_size,
            queue_timeout: Duration::from_secs(10),
            tuning: AdmissionTuning {
                codel_target: 50 * MS,
                codel_interval: 500 * MS,
                overload_queue_delay,
                min_concurrency: 1,
                max_concurrency_limit: 100,
            },
        };
        Admission::new(settings, AdmissionMetrics::new(&metrics, "t"))
    }

    type Log = Arc<StdMutex<Vec<String>>>;

    /// A request of `class` that holds its slot 100 ms and writes to `log` what
    /// happened: its name when admitted, `name:reason@ms` (ms since `start`) when not.
    fn request_of(
        adm: &Arc<Admission>,
        class: Priority,
        name: &str,
        log: &Log,
        start: Instant,
    ) -> tokio::task::JoinHandle<()> {
        request_held(adm, class, name, log, start, 100 * MS)
    }

    /// [`request_of`] holding its slot for `hold`.
    fn request_held(
        adm: &Arc<Admission>,
        class: Priority,
        name: &str,
        log: &Log,
        start: Instant,
        hold: Duration,
    ) -> tokio::task::JoinHandle<()> {
        let (adm, name, log) = (adm.clone(), name.to_string(), log.clone());
        tokio::spawn(async move {
            match adm.acquire(class).await {
                Ok(p) => {
                    log.lock().unwrap().push(name);
                    tokio::time::sleep(hold).await;
                    drop(p);
                }
                Err(r) => {
                    let at = start.elapsed().as_millis();
                    log.lock()
                        .unwrap()
                        .push(format!("{name}:{}@{at}", r.as_str()));
                }
            }
        })
    }

    fn request(adm: &Arc<Admission>, name: &str, log: &Log) -> tokio::task::JoinHandle<()> {
        request_of(adm, Priority::Normal, name, log, Instant::now())
    }

    async fn until_queued(adm: &Admission, n: usize) {
        while adm.queued() != n {
            tokio::task::yield_now().await;
        }
    }

    /// Takes the only slot, then queues `waiters` in order behind it.
    async fn waiting_behind_a_held_slot(
        adm: &Arc<Admission>,
        waiters: &[(Priority, &str)],
        log: &Log,
        start: Instant,
    ) -> (Permit, Vec<tokio::task::JoinHandle<()>>) {
        let held = adm.clone().acquire(Priority::Normal).await.unwrap();
        let mut tasks = Vec::new();
        for (i, (class, name)) in waiters.iter().enumerate() {
            tasks.push(request_of(adm, *class, name, log, start));
            until_queued(adm, i + 1).await;
        }
        (held, tasks)
    }

    fn admitted(log: &Log) -> Vec<String> {
        let log = log.lock().unwrap();
        log.iter().filter(|s| !s.contains(':')).cloned().collect()
    }

    fn assert_logged(log: &Log, entry: &str) {
        let log = log.lock().unwrap();
        assert!(
            log.iter().any(|s| s == entry),
            "{entry} missing from {log:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_standing_queue_serves_the_newest_first_and_refuses_older_waiters_at_once() {
        let adm = admission(1, 100);
        let log = Log::default();
        let start = Instant::now();
        let mut tasks = Vec::new();
        for i in 0..=12 {
            tasks.push(request_of(
                &adm,
                Priority::Normal,
                &i.to_string(),
                &log,
                start,
            ));
            until_queued(&adm, i).await;
        }
        // Request k is admitted at k × 100 ms. The interval 500–1000 ms sees only waits
        // far above 50 ms, so at 1000 ms the queue counts as standing.
        tokio::time::sleep_until(start + 1050 * MS).await;
        assert!(adm.overloaded());
        // Overloaded, the queue keeps what the origin starts in 5 ms: one waiter here
        // (one slot, 100 ms per request). "old" takes the place of 11 and 12, who are
        // refused at once, not when their turn or their timeout comes.
        tasks.push(request_of(&adm, Priority::Normal, "old", &log, start));
        until_queued(&adm, 1).await;
        assert_logged(&log, "11:codel@1050");
        assert_logged(&log, "12:codel@1050");
        tokio::time::sleep_until(start + 1060 * MS).await;
        tasks.push(request_of(&adm, Priority::Normal, "new", &log, start));
        tokio::time::sleep_until(start + 1070 * MS).await;
        assert_logged(&log, "old:codel@1060");
        for t in tasks {
            t.await.unwrap();
        }
        let mut expected: Vec<String> = (0..=10).map(|i| i.to_string()).collect();
        expected.push("new".into());
        assert_eq!(admitted(&log), expected);
        assert_eq!(adm.in_flight(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn overload_ends_only_after_a_whole_interval_in_which_nobody_was_refused() {
        let adm = admission(1, 100);
        let log = Log::default();
        let start = Instant::now();
        let mut tasks = Vec::new();
        for i in 0..=12 {
            tasks.push(request(&adm, &i.to_string(), &log));
            until_queued(&adm, i).await;
        }
        tokio::time::sleep_until(start + 1050 * MS).await;
        // The last refusal: 11 and 12 are pushed out by "last" at 1050 ms.
        tasks.push(request(&adm, "last", &log));
        for t in tasks {
            t.await.unwrap();
        }
        // Everything served by 1200 ms and the queue empty, but the crowd was at the
        // door 150 ms ago: an empty queue alone does not end the overload.
        assert_eq!(adm.queued(), 0);
        assert!(adm.overloaded(), "an empty queue ended the overload");
        tokio::time::sleep_until(start + 1549 * MS).await;
        assert!(adm.overloaded());
        tokio::time::sleep_until(start + 1550 * MS).await;
        assert!(!adm.overloaded(), "an interval without refusals");
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_queue_is_overloaded_at_once_when_its_oldest_waiter_is_past_target() {
        let adm = admission(1, 2);
        let log = Log::default();
        let start = Instant::now();
        let (held, mut tasks) = waiting_behind_a_held_slot(
            &adm,
            &[(Priority::Normal, "a"), (Priority::Normal, "b")],
            &log,
            start,
        )
        .await;
        // Full, but its oldest waited 10 ms: a burst being absorbed. First come keep
        // their places; the arrival is refused.
        tokio::time::sleep_until(start + 10 * MS).await;
        tasks.push(request_of(&adm, Priority::Normal, "c", &log, start));
        tokio::time::sleep_until(start + 11 * MS).await;
        assert_logged(&log, "c:queue_full@10");
        assert!(!adm.overloaded());
        // Full with its oldest past 50 ms: standing. Overloaded now, not at the end of
        // a 500 ms interval; the short queue (one slot, no completion measured yet: one
        // waiter) keeps the newest.
        tokio::time::sleep_until(start + 60 * MS).await;
        tasks.push(request_of(&adm, Priority::Normal, "d", &log, start));
        tokio::time::sleep_until(start + 61 * MS).await;
        assert!(adm.overloaded());
        assert_logged(&log, "a:codel@60");
        assert_logged(&log, "b:codel@60");
        assert_eq!(adm.queued(), 1);
        drop(held);
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(admitted(&log), vec!["d"]);
    }

    #[tokio::test(start_paused = true)]
    async fn the_overload_queue_holds_what_the_origin_starts_in_overload_queue_delay() {
        // 10 slots, 100 ms per request: the origin starts 100 requests/s, so 20 ms of
        // queue is two waiters.
        let adm = admission_with(10, 20, 20 * MS);
        let log = Log::default();
        let start = Instant::now();
        let mut tasks = Vec::new();
        // A crowd: one arrival per millisecond for 400 ms (4x what the origin serves).
        for i in 0..400 {
            tasks.push(request_of(
                &adm,
                Priority::Normal,
                &i.to_string(),
                &log,
                start,
            ));
            tokio::time::sleep(MS).await;
        }
        assert!(adm.overloaded());
        assert!(adm.queued() <= 2, "{} waiting", adm.queued());
        for t in tasks {
            t.await.unwrap();
        }
        // Once the origin's pace is known (from 100 ms on), every refusal came within a
        // few arrivals of the request's own (a waiter at the bottom of the stack can
        // outlive a clump of completions): pushed out, never left to its 100 ms timeout.
        let log = log.lock().unwrap();
        let late: Vec<&String> = log
            .iter()
            .filter_map(|s| {
                let (name, at) = s.split_once(":codel@")?;
                let (n, at): (u64, u64) = (name.parse().ok()?, at.parse().ok()?);
                (n > 100 && at > n + 20).then_some(s)
            })
            .collect();
        assert!(late.is_empty(), "refused after waiting: {late:?}");
        let served = log.iter().filter(|s| !s.contains(':')).count();
        // 10 slots × 100 ms for the 400 ms of the crowd: no slot left idle.
        assert!(served >= 40, "only {served} served");
    }

    #[tokio::test(start_paused = true)]
    async fn overloaded_a_lower_class_is_refused_and_a_higher_one_pushes_out_the_oldest() {
        let adm = admission(1, 2);
        let log = Log::default();
        let start = Instant::now();
        let (held, mut tasks) = waiting_behind_a_held_slot(
            &adm,
            &[(Priority::High, "checkout1"), (Priority::Low, "search1")],
            &log,
            start,
        )
        .await;
        tokio::time::sleep_until(start + 60 * MS).await;
        // Standing: the short queue keeps one waiter, the newest checkout. The search
        // is pushed out first, then the older checkout.
        tasks.push(request_of(&adm, Priority::High, "checkout2", &log, start));
        tokio::time::sleep_until(start + 61 * MS).await;
        assert!(adm.overloaded());
        assert_logged(&log, "search1:codel@60");
        assert_logged(&log, "checkout1:codel@60");
        // A search finding only a checkout waiting is refused, the checkout kept.
        tasks.push(request_of(&adm, Priority::Low, "search2", &log, start));
        tokio::time::sleep_until(start + 62 * MS).await;
        assert_logged(&log, "search2:codel@61");
        drop(held);
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(admitted(&log), vec!["checkout2"]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_that_drains_is_served_first_come_first_served() {
        let adm = admission(2, 100);
        let log = Log::default();
        let mut tasks = Vec::new();
        for i in 0..6usize {
            tasks.push(request(&adm, &i.to_string(), &log));
            until_queued(&adm, i.saturating_sub(1)).await;
        }
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(*log.lock().unwrap(), vec!["0", "1", "2", "3", "4", "5"]);
    }

    /// The refusals in `log` of requests that arrived at `from` ms or later (named
    /// `{arrival ms}.{k}`) and had been waiting more than `ms` when refused.
    fn refused_after_waiting(log: &Log, from: u64, ms: u64) -> Vec<String> {
        let log = log.lock().unwrap();
        log.iter()
            .filter(|s| {
                let times = s.split_once(':').and_then(|(n, r)| {
                    let arrived: u64 = n.split('.').next()?.parse().ok()?;
                    Some((arrived, r.split_once('@')?.1.parse::<u64>().ok()?))
                });
                times.is_some_and(|(arrived, at)| arrived >= from && at > arrived + ms)
            })
            .cloned()
            .collect()
    }

    #[tokio::test(start_paused = true)]
    async fn a_fresh_queue_facing_a_burst_it_cannot_start_within_target_refuses_at_arrival() {
        // 10 slots of 100 ms, a queue of 40, and a crowd of 5 arrivals a millisecond
        // (50x what the origin serves) from the first instant: nothing has completed
        // yet, so the queue has measured no pace.
        let adm = admission(10, 40);
        let log = Log::default();
        let start = Instant::now();
        let mut tasks = Vec::new();
        for ms in 0..100u64 {
            for k in 0..5 {
                let name = format!("{ms}.{k}");
                tasks.push(request_of(&adm, Priority::Normal, &name, &log, start));
            }
            tokio::time::sleep(MS).await;
            if ms == 20 {
                // Full since 9 ms; by 14 ms the slots' age (13.5 ms, none done) says 10
                // slots start at most 38 waiters in 50 ms: standing, not absorbing.
                assert!(adm.overloaded(), "still learning at {ms} ms");
            }
        }
        for t in tasks {
            t.await.unwrap();
        }
        // Before, the 40 who filled the queue (from 2 to 9 ms) waited until the oldest
        // was past the 50 ms target, and were refused at 53 ms. Now nobody waits more
        // than the 12 ms it took to see the queue could not start them in time...
        let late = refused_after_waiting(&log, 0, 12);
        assert!(late.is_empty(), "refused after waiting: {late:?}");
        // ...and from then on a refusal is an answer at arrival: refused at once, or
        // pushed out of the short queue by the next millisecond's arrivals.
        let late = refused_after_waiting(&log, 14, 1);
        assert!(late.is_empty(), "refused after waiting: {late:?}");
        // Everyone answered; the short queue kept a few on deck for the first
        // completions at 100 ms.
        assert_eq!(log.lock().unwrap().len(), 500);
        assert!(admitted(&log).len() > 10, "{:?}", admitted(&log));
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_that_drains_within_target_is_still_served_in_order() {
        // 4 slots of 20 ms and a queue of 8: a full queue starts its last waiter after
        // 40 ms, within the 50 ms target.
        let adm = admission(4, 8);
        let log = Log::default();
        let start = Instant::now();
        let hold = 20 * MS;
        let mut tasks = Vec::new();
        for i in 0..12usize {
            let name = i.to_string();
            tasks.push(request_held(
                &adm,
                Priority::Normal,
                &name,
                &log,
                start,
                hold,
            ));
            until_queued(&adm, i.saturating_sub(3)).await;
        }
        // Full and every slot busy 15 ms, nothing completed: the slots' age (15 ms)
        // says 4 slots may start 14 waiters in 50 ms. A burst being absorbed: the
        // arrival is refused, the queue stays first come, first served.
        tokio::time::sleep_until(start + 15 * MS).await;
        tasks.push(request_held(
            &adm,
            Priority::Normal,
            "late",
            &log,
            start,
            hold,
        ));
        tokio::time::sleep_until(start + 16 * MS).await;
        assert_logged(&log, "late:queue_full@15");
        assert!(!adm.overloaded());
        for t in tasks {
            t.await.unwrap();
        }
        let expected: Vec<String> = (0..12).map(|i| i.to_string()).collect();
        assert_eq!(admitted(&log), expected);
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_queue_the_measured_pace_cannot_start_within_target_is_standing_at_once() {
        // 2 slots of 100 ms (measured: two requests complete first) and a queue of 4:
        // the origin starts one waiter in 50 ms.
        let adm = admission(2, 4);
        let log = Log::default();
        let start = Instant::now();
        for name in ["w1", "w2"] {
            request_of(&adm, Priority::Normal, name, &log, start)
                .await
                .unwrap();
        }
        let start = Instant::now();
        let mut tasks = Vec::new();
        for i in 0..6usize {
            tasks.push(request_of(
                &adm,
                Priority::Normal,
                &i.to_string(),
                &log,
                start,
            ));
            until_queued(&adm, i.saturating_sub(1)).await;
        }
        // Full, its oldest has waited a millisecond: before, a burst being absorbed
        // until that oldest passed 50 ms. The pace says its four waiters need 200 ms.
        tokio::time::sleep_until(start + MS).await;
        tasks.push(request_of(&adm, Priority::Normal, "new", &log, start));
        tokio::time::sleep_until(start + 2 * MS).await;
        assert!(adm.overloaded());
        for i in 2..6 {
            assert_logged(&log, &format!("{i}:codel@1"));
        }
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(admitted(&log), vec!["w1", "w2", "0", "1", "new"]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiter_dropped_after_being_admitted_gives_its_slot_to_the_next() {
        let adm = admission(1, 10);
        let held = adm.clone().acquire(Priority::Normal).await.unwrap();
        let mut first = Box::pin(adm.clone().acquire(Priority::Normal));
        assert!(futures_util::poll!(&mut first).is_pending());
        let second = tokio::spawn({
            let adm = adm.clone();
            async move { adm.acquire(Priority::Normal).await.is_ok() }
        });
        until_queued(&adm, 2).await;
        // The slot goes to `first`, whose client is gone before it looks.
        drop(held);
        drop(first);
        assert!(second.await.unwrap());
        assert_eq!(adm.in_flight(), 0);
    }
}
