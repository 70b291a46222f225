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
    wait: Histogram,
    limit: IntGauge,
    shed: [IntCounter; 5],
}

impl AdmissionMetrics {
    /// Children for `upstream` from the process-wide families.
    pub fn new(metrics: &Metrics, upstream: &str) -> Self {
        AdmissionMetrics {
            depth: metrics.queue_depth.with_label_values(&[upstream]),
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

struct State {
    settings: Settings,
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
        Arc::new(Admission {
            state: Mutex::new(State {
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

    /// Whether the queue is in CoDel overload (LIFO, short waits).
    pub fn overloaded(&self) -> bool {
        self.lock().codel.overloaded()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding this lock leaves plain counters behind; keep serving.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits for a slot for a request of class `class`.
    ///
    /// Returns at once with a slot, or with `QueueFull`; otherwise waits in the queue
    /// until admitted, timed out, shed by CoDel or evicted by a higher class. If the
    /// returned future is dropped (the client went away) the waiter leaves the queue
    /// at once and counts as `client_gone`.
    pub async fn acquire(self: Arc<Self>, class: Priority) -> Result<Permit, ShedReason> {
        let now = Instant::now();
        let (id, rx, deadline, timeout_reason) = {
            let mut st = self.lock();
            if st.queued == 0 && st.in_flight < st.limit.get() {
                st.in_flight += 1;
                st.codel.observe(now, Duration::ZERO);
                return Ok(Permit::new(self.clone(), now));
            }
            let mut evicted = None;
            if st.queued >= st.settings.queue_size {
                match evict_lowest_below(&mut st, class) {
                    Some(w) => evicted = Some(w),
                    None => {
                        drop(st);
                        self.metrics.shed(ShedReason::QueueFull);
                        return Err(ShedReason::QueueFull);
                    }
                }
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
            self.metrics.depth.set(st.queued as i64);
            drop(st);
            if let Some(w) = evicted {
                self.metrics.shed(ShedReason::QueueFull);
                let _ = w.tx.send(Grant::Shed(ShedReason::QueueFull));
            }
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
                if self.remove(class, id) {
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

    /// Removes a waiter still in the queue; false if a dispatcher took it already.
    fn remove(&self, class: Priority, id: u64) -> bool {
        let mut st = self.lock();
        let q = &mut st.queues[class.index()];
        let Some(pos) = q.iter().position(|w| w.id == id) else {
            return false;
        };
        q.remove(pos);
        st.queued -= 1;
        if st.queued == 0 && st.in_flight < st.limit.get() {
            st.codel.drained(Instant::now());
        }
        self.metrics.depth.set(st.queued as i64);
        true
    }

    /// Frees a slot held for `held`, and admits whoever is next.
    fn release(&self, held: Duration) {
        let now = Instant::now();
        let mut st = self.lock();
        st.in_flight -= 1;
        let in_flight = st.in_flight + 1;
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
    /// CoDel says the queue is standing, then newest first with the stale ones shed.
    /// The grants are sent by the caller after the lock is released.
    fn dispatch(&self, st: &mut State, now: Instant) -> Vec<(Waiter, Grant)> {
        let mut out = Vec::new();
        if st.codel.overloaded() {
            let max_age = st.codel.overload_timeout();
            for q in st.queues.iter_mut() {
                while q
                    .front()
                    .is_some_and(|w| now.duration_since(w.enqueued) > max_age)
                {
                    let w = q.pop_front().expect("checked");
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
            st.in_flight += 1;
            out.push((w, Grant::Admitted));
        }
        // Drained means spare capacity and nobody waiting. An empty queue with every
        // slot busy is not: CoDel just shed the stale waiters, and the crowd is still
        // there; calling that drained flipped back to FIFO and let a full queue of
        // waits build up again every interval.
        if st.queued == 0 && st.in_flight < st.limit.get() {
            st.codel.drained(now);
        }
        self.metrics.depth.set(st.queued as i64);
        out
    }
}

fn send_all(grants: Vec<(Waiter, Grant)>) {
    for (w, g) in grants {
        // A waiter removes itself under the lock before its receiver is dropped, so a
        // waiter still in the queue always has a live receiver.
        let _ = w.tx.send(g);
    }
}

/// The newest waiter of the lowest class below `class`, taken out of the queue.
fn evict_lowest_below(st: &mut State, class: Priority) -> Option<Waiter> {
    let victim = (0..class.index()).find(|&c| !st.queues[c].is_empty())?;
    st.queued -= 1;
    st.queues[victim].pop_back()
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
        if self.admission.remove(self.class, self.id) {
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
        let metrics = Metrics::new();
        let settings = Settings {
            max_concurrency: Concurrency::Fixed(limit),
            queue_size,
            queue_timeout: Duration::from_secs(10),
            tuning: AdmissionTuning {
                codel_target: 50 * MS,
                codel_interval: 500 * MS,
                min_concurrency: 1,
                max_concurrency_limit: 100,
            },
        };
        Admission::new(settings, AdmissionMetrics::new(&metrics, "t"))
    }

    /// A request that holds its slot 100 ms and writes what happened to `log`.
    fn request(
        adm: &Arc<Admission>,
        name: &str,
        log: &Arc<StdMutex<Vec<String>>>,
    ) -> tokio::task::JoinHandle<()> {
        let (adm, name, log) = (adm.clone(), name.to_string(), log.clone());
        tokio::spawn(async move {
            match adm.acquire(Priority::Normal).await {
                Ok(p) => {
                    log.lock().unwrap().push(name);
                    tokio::time::sleep(100 * MS).await;
                    drop(p);
                }
                Err(r) => log.lock().unwrap().push(format!("{name}:{}", r.as_str())),
            }
        })
    }

    async fn until_queued(adm: &Admission, n: usize) {
        while adm.queued() != n {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_standing_queue_switches_to_newest_first_and_sheds_stale_waiters() {
        let adm = admission(1, 100);
        let log = Arc::new(StdMutex::new(Vec::new()));
        let start = Instant::now();
        let mut tasks = Vec::new();
        for i in 0..=12 {
            tasks.push(request(&adm, &i.to_string(), &log));
            until_queued(&adm, i).await;
        }
        // Request k is admitted at k × 100 ms. The interval 500–1000 ms sees only waits
        // far above 50 ms, so at 1000 ms the queue counts as standing.
        tokio::time::sleep_until(start + 1050 * MS).await;
        assert!(adm.overloaded());
        tasks.push(request(&adm, "old", &log));
        until_queued(&adm, 3).await;
        tokio::time::sleep_until(start + 1060 * MS).await;
        tasks.push(request(&adm, "new", &log));
        until_queued(&adm, 4).await;
        for t in tasks {
            t.await.unwrap();
        }
        let log = log.lock().unwrap().clone();
        let admitted: Vec<&str> = log
            .iter()
            .map(String::as_str)
            .filter(|s| !s.contains(':'))
            .collect();
        let mut expected: Vec<String> = (0..=10).map(|i| i.to_string()).collect();
        expected.push("new".into());
        assert_eq!(admitted, expected, "{log:?}");
        for shed in ["11:codel", "12:codel", "old:codel"] {
            assert!(log.iter().any(|s| s == shed), "{shed} missing from {log:?}");
        }
        assert!(!adm.overloaded(), "a drained queue is not overloaded");
        assert_eq!(adm.in_flight(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_queue_emptied_by_shedding_while_every_slot_is_busy_stays_overloaded() {
        let adm = admission(1, 100);
        let log = Arc::new(StdMutex::new(Vec::new()));
        let start = Instant::now();
        let mut tasks = Vec::new();
        for i in 0..=12 {
            tasks.push(request(&adm, &i.to_string(), &log));
            until_queued(&adm, i).await;
        }
        tokio::time::sleep_until(start + 1050 * MS).await;
        assert!(adm.overloaded());
        // "a" gets the short overload timeout (100 ms); "b" is newer and is served
        // first at 1100 ms, holding the only slot until 1200 ms.
        tasks.push(request(&adm, "a", &log));
        until_queued(&adm, 3).await;
        tokio::time::sleep_until(start + 1060 * MS).await;
        tasks.push(request(&adm, "b", &log));
        until_queued(&adm, 4).await;
        // At 1150 ms "a" times out: the queue is empty, but the origin is still busy
        // and the crowd is still there. That is not a drained queue.
        tokio::time::sleep_until(start + 1160 * MS).await;
        assert_eq!(adm.queued(), 0);
        assert_eq!(adm.in_flight(), 1);
        assert!(
            log.lock().unwrap().iter().any(|s| s == "a:codel"),
            "{:?}",
            log.lock().unwrap()
        );
        assert!(
            adm.overloaded(),
            "shedding the last waiter counted as drained"
        );
        for t in tasks {
            t.await.unwrap();
        }
        assert!(
            !adm.overloaded(),
            "a drained queue with a free slot is not overloaded"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_that_drains_is_served_first_come_first_served() {
        let adm = admission(2, 100);
        let log = Arc::new(StdMutex::new(Vec::new()));
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
