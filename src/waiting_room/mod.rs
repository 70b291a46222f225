//! The virtual waiting room: a fair, exact line in front of a sale.
//!
//! A visitor takes a numbered ticket (a signed cookie, [`token`]); the room keeps two
//! counters and a few fixed-size rings ([`state::Line`]) and lets places in at
//! `new_users_per_minute` while fewer than `active_users` shoppers hold a live pass.
//! Waiting visitors see [`page`]; admitted ones carry a pass and go straight through,
//! marked [`Admitted`] for the admission queue below.
//!
//! ## Talking to the room from the origin
//!
//! The origin may answer with `X-Floodgate-Session: end` (e.g. once an order is
//! confirmed: the place goes to the next in line) or `X-Floodgate-Session: extend=10m`
//! (the pass now expires no sooner than 10 minutes from now). The header is removed
//! before the client sees it.
//!
//! ## Status polls
//!
//! A request carrying `X-Floodgate-Poll: 1` (what the page's script sends) is answered
//! by the gateway alone, in JSON, admitted or not: it never reaches the origin.

pub mod admin;
pub mod config;
pub mod metrics;
pub mod page;
pub mod pow;
pub mod service;
pub mod state;
pub mod token;

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use http::Request;

pub use config::{Mode, RoomConfig};
pub use service::{WaitingRoomLayer, WaitingRoomService};

use metrics::RoomMetrics;
use state::{Line, LineSettings};

/// How often each room's ticker admits: fine enough that admissions at 100/s come in
/// small steps, coarse enough to cost nothing.
pub const TICK: Duration = Duration::from_millis(50);
/// Slots of the per-client ticket limiter: 16 Ki × 8 bytes per room, fixed. Two
/// addresses hashing to one slot share a budget (slightly stricter, never looser).
pub const CLIENT_LIMIT_SLOTS: usize = 16 * 1024;

/// Marker in request extensions: this request holds a valid pass. The admission queue
/// serves marked requests first, so an admitted shopper is never shed mid-purchase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Admitted;

/// Whether the waiting room admitted this request (it carries [`Admitted`]).
pub fn is_admitted<B>(req: &Request<B>) -> bool {
    req.extensions().get::<Admitted>().is_some()
}

/// One room: its config, its line, its metrics. Shared by every route naming it and
/// carried across reloads while its name stays.
pub struct Room {
    /// Room name.
    pub name: String,
    config: ArcSwap<RoomConfig>,
    line: Mutex<Line>,
    metrics: RoomMetrics,
    limiter: ClientLimiter,
    estimate: Mutex<EstimateStats>,
    reported: Mutex<(u64, u64)>,
}

/// Predicted-minus-actual wait of admitted visitors, summed (for the admin view).
#[derive(Debug, Default, Clone, Copy)]
pub struct EstimateStats {
    /// Visitors measured.
    pub count: u64,
    /// Sum of (predicted − actual), seconds.
    pub sum: f64,
    /// Sum of |predicted − actual|, seconds.
    pub sum_abs: f64,
}

fn settings_of(c: &RoomConfig) -> LineSettings {
    LineSettings {
        active_users: c.active_users,
        new_users_per_minute: c.new_users_per_minute,
        session_ms: c.session_duration.as_millis() as u64,
        abandon_after_ms: c.abandon_after.as_millis() as u64,
        opens_at_ms: c.opens_at,
        mode: c.mode,
    }
}

impl Room {
    /// A new room with an empty line; starts its ticker when a runtime is there.
    pub fn new(config: RoomConfig, metrics: RoomMetrics) -> Arc<Room> {
        let line = Line::new(settings_of(&config), rand::random());
        let room = Arc::new(Room {
            name: config.name.clone(),
            config: ArcSwap::from_pointee(config),
            line: Mutex::new(line),
            metrics,
            limiter: ClientLimiter::new(),
            estimate: Mutex::new(EstimateStats::default()),
            reported: Mutex::new((0, 0)),
        });
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(ticker(Arc::downgrade(&room)));
        }
        room
    }

    /// Applies a reloaded config, keeping the line.
    pub fn reconfigure(&self, config: RoomConfig) {
        let mut line = self.line();
        line.settings = settings_of(&config);
        self.config.store(Arc::new(config));
    }

    /// The current config.
    pub fn config(&self) -> Arc<RoomConfig> {
        self.config.load_full()
    }

    /// The line, locked. Every operation on it is O(1) (a tick is bounded).
    pub fn line(&self) -> MutexGuard<'_, Line> {
        self.line.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs one tick now: admissions, expiries, metrics.
    pub fn tick(&self) {
        let now = config::unix_ms(SystemTime::now());
        let mut line = self.line();
        line.advance(now);
        self.report(&line);
    }

    fn report(&self, line: &Line) {
        let m = &self.metrics;
        m.waiting.set(line.waiting() as i64);
        m.active.set(line.active() as i64);
        let mut r = self.reported.lock().unwrap_or_else(|e| e.into_inner());
        m.admitted.inc_by(line.admitted_total - r.0);
        m.skipped.inc_by(line.skipped_total - r.1);
        *r = (line.admitted_total, line.skipped_total);
        m.expected_wait
            .set(line.expected_wait(line.waiting()).1 as f64);
    }

    /// Pauses or resumes admissions.
    pub fn set_paused(&self, paused: bool) {
        self.line().paused = paused;
    }

    /// Changes capacity and rate at runtime (until the next reload).
    pub fn set_limits(&self, active_users: Option<u64>, new_users_per_minute: Option<u64>) {
        let mut line = self.line();
        if let Some(a) = active_users {
            line.settings.active_users = a;
        }
        if let Some(r) = new_users_per_minute {
            line.settings.new_users_per_minute = r;
        }
    }

    pub(crate) fn observe_estimate(&self, predicted_s: f64, actual_s: f64) {
        let e = predicted_s - actual_s;
        self.metrics.estimate_error.observe(e);
        let mut s = self.estimate.lock().unwrap_or_else(|e| e.into_inner());
        s.count += 1;
        s.sum += e;
        s.sum_abs += e.abs();
    }

    /// Estimate error so far.
    pub fn estimate_stats(&self) -> EstimateStats {
        *self.estimate.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn metrics(&self) -> &RoomMetrics {
        &self.metrics
    }

    pub(crate) fn limiter(&self) -> &ClientLimiter {
        &self.limiter
    }
}

async fn ticker(room: Weak<Room>) {
    let mut every = tokio::time::interval(TICK);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        // The room is gone when no compiled config holds it any more.
        let Some(room) = room.upgrade() else { return };
        room.tick();
    }
}

/// Tickets per client address per minute, in a fixed table of atomic slots
/// (minute << 32 | count): bounded whatever the number of addresses.
pub struct ClientLimiter {
    slots: Vec<AtomicU64>,
    hasher: RandomState,
}

impl ClientLimiter {
    fn new() -> Self {
        ClientLimiter {
            slots: (0..CLIENT_LIMIT_SLOTS).map(|_| AtomicU64::new(0)).collect(),
            hasher: RandomState::new(),
        }
    }

    /// Takes one ticket for `ip` in minute `now_ms / 60 s`; false when over `limit`.
    pub fn allow(&self, ip: IpAddr, now_ms: u64, limit: u32) -> bool {
        if limit == 0 {
            return true;
        }
        let minute = (now_ms / 60_000) & 0xFFFF_FFFF;
        let slot = &self.slots[(self.hasher.hash_one(ip) as usize) % CLIENT_LIMIT_SLOTS];
        let mut cur = slot.load(Ordering::Relaxed);
        loop {
            let (m, c) = (cur >> 32, cur & 0xFFFF_FFFF);
            let count = if m == minute { c } else { 0 };
            if count >= limit as u64 {
                return false;
            }
            let next = (minute << 32) | (count + 1);
            match slot.compare_exchange_weak(cur, next, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return true,
                Err(actual) => cur = actual,
            }
        }
    }
}

/// Builds the rooms of a config, reusing `previous` rooms of the same name (their line
/// survives the reload; their settings follow the new config).
pub fn build_rooms(
    configs: &[RoomConfig],
    families: &metrics::Families,
    previous: &[Arc<Room>],
) -> Vec<Arc<Room>> {
    configs
        .iter()
        .map(|c| match previous.iter().find(|r| r.name == c.name) {
            Some(r) => {
                r.reconfigure(c.clone());
                r.clone()
            }
            None => Room::new(c.clone(), families.room(&c.name)),
        })
        .collect()
}
