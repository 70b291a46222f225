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
//! confirmed: the pass is revoked, every copy of it, and the place goes to the next in
//! line) or `X-Floodgate-Session: extend=10m` (the pass now expires no sooner than 10
//! minutes from now). The header is removed before the client sees it, on every
//! response of a route with a room.
//!
//! ## Surviving a restart
//!
//! With `state_dir`, the line's counters ([`state::Snapshot`]) are written atomically
//! every [`PERSIST_EVERY`] and at shutdown, and read back at start: with the same
//! signing key, everyone keeps their place and their pass.
//!
//! ## Status polls
//!
//! A request carrying `X-Floodgate-Poll: 1` (what the page's script sends) is answered
//! by the gateway alone, in JSON, admitted or not: it never reaches the origin.

pub mod admin;
mod changes;
pub mod config;
pub mod metrics;
pub mod page;
pub mod pow;
pub mod service;
mod shared;
pub mod state;
pub mod token;

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use http::Request;

pub use config::{Mode, RoomConfig};
pub use service::{WaitingRoomLayer, WaitingRoomService};

use crate::reconfigure::{Changes, Outcome};
use metrics::RoomMetrics;
use state::{Line, LineSettings, Now, Snapshot};

/// How often each room's ticker admits: fine enough that admissions at 100/s come in
/// small steps, coarse enough to cost nothing.
pub const TICK: Duration = Duration::from_millis(50);
/// Slots of the per-client ticket limiter: 16 Ki × 8 bytes per room, fixed. Two
/// addresses hashing to one slot share a budget (slightly stricter, never looser).
pub const CLIENT_LIMIT_SLOTS: usize = 16 * 1024;
/// How often the line is written to its state file: a crash loses at most a second of
/// admissions, and the file (a few hundred KiB at most) costs nothing to write.
pub const PERSIST_EVERY: Duration = Duration::from_secs(1);

/// The room's clocks: monotonic for pacing and presence, wall for token expiry.
/// Injectable, so a test can step the wall clock back.
pub trait Clock: Send + Sync + 'static {
    /// Reads both clocks.
    fn now(&self) -> Now;
}

/// The real clocks; the monotonic one counts from the room's creation.
pub struct SystemClock {
    start: Instant,
}

impl Clock for SystemClock {
    fn now(&self) -> Now {
        Now {
            mono_ms: self.start.elapsed().as_millis() as u64 + 1,
            wall_ms: config::unix_ms(SystemTime::now()),
        }
    }
}

/// A clock moved by hand (tests): both clocks start at the real wall time.
pub struct ManualClock {
    mono: AtomicU64,
    wall: AtomicU64,
}

impl Default for ManualClock {
    fn default() -> Self {
        ManualClock {
            mono: AtomicU64::new(1),
            wall: AtomicU64::new(config::unix_ms(SystemTime::now())),
        }
    }
}

impl ManualClock {
    /// Moves both clocks forward.
    pub fn advance(&self, d: Duration) {
        let ms = d.as_millis() as u64;
        self.mono.fetch_add(ms, Ordering::SeqCst);
        self.wall.fetch_add(ms, Ordering::SeqCst);
    }

    /// Steps the wall clock alone back (an NTP correction, a VM restored).
    pub fn step_wall_back(&self, d: Duration) {
        self.wall.fetch_sub(d.as_millis() as u64, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Now {
        Now {
            mono_ms: self.mono.load(Ordering::SeqCst),
            wall_ms: self.wall.load(Ordering::SeqCst),
        }
    }
}

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
    clock: Arc<dyn Clock>,
    /// Keyed hash of client prefixes: a prefix is never stored in the clear.
    prefix_hasher: PrefixHasher,
    /// Cookie names: (ticket, pass).
    pub(crate) cookies: (String, String),
    ticks: AtomicU64,
    /// Set at shutdown, after the last write: nothing writes the state file again.
    stopped: AtomicBool,
    persist_failing: AtomicBool,
    persisting: Mutex<()>,
    /// The line in the shared store, when several instances share it.
    shared: std::sync::OnceLock<Arc<dyn crate::state::line::SharedLine>>,
}

/// The keyed hash of client prefixes: random per process, or, when several instances
/// share the line (and its pre-queue's "one first ticket per prefix"), seeded from the
/// signing key so that every instance hashes a prefix alike.
enum PrefixHasher {
    Local(RandomState),
    Shared(foldhash::quality::FixedState),
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
        pass_requests_per_second: c.pass_requests_per_second,
        pass_prefixes_per_minute: c.pass_prefixes_per_minute,
    }
}

/// The line from the room's state file if there is one, else an empty line.
fn initial_line(config: &RoomConfig, now: Now) -> Line {
    let fresh = || Line::new(settings_of(config), rand::random());
    let Some(path) = config.state_file() else {
        return fresh();
    };
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return fresh(),
        Err(e) => {
            tracing::warn!(room = %config.name, path = %path.display(), error = %e, "cannot read the waiting-room state file; starting with an empty line");
            return fresh();
        }
    };
    let restored = serde_json::from_slice::<Snapshot>(&bytes)
        .map_err(|e| e.to_string())
        .and_then(|s| Line::restore(settings_of(config), &s, now));
    match restored {
        Ok(line) => {
            tracing::info!(room = %config.name, path = %path.display(), waiting = line.waiting(), active = line.active(), "waiting-room line restored");
            line
        }
        Err(e) => {
            tracing::warn!(room = %config.name, path = %path.display(), error = %e, "unreadable waiting-room state file; starting with an empty line");
            fresh()
        }
    }
}

/// Writes `bytes` to `path` atomically: a temporary file beside it, synced, renamed.
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("json.tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

impl Room {
    /// A new room with an empty line; starts its ticker when a runtime is there.
    pub fn new(config: RoomConfig, metrics: RoomMetrics) -> Arc<Room> {
        Room::with_clock(
            config,
            metrics,
            Arc::new(SystemClock {
                start: Instant::now(),
            }),
        )
    }

    /// A room on the given clock; its line is read from the state file if any.
    pub fn with_clock(
        config: RoomConfig,
        metrics: RoomMetrics,
        clock: Arc<dyn Clock>,
    ) -> Arc<Room> {
        Room::build(config, metrics, clock, None)
    }

    /// A room whose line lives in the shared store (several instances).
    fn shared(
        config: RoomConfig,
        metrics: RoomMetrics,
        line: Arc<dyn crate::state::line::SharedLine>,
    ) -> Arc<Room> {
        let clock = Arc::new(SystemClock {
            start: Instant::now(),
        });
        Room::build(config, metrics, clock, Some(line))
    }

    fn build(
        config: RoomConfig,
        metrics: RoomMetrics,
        clock: Arc<dyn Clock>,
        store: Option<Arc<dyn crate::state::line::SharedLine>>,
    ) -> Arc<Room> {
        let line = initial_line(&config, clock.now());
        let prefix_hasher = match store {
            None => PrefixHasher::Local(RandomState::new()),
            Some(_) => PrefixHasher::Shared(foldhash::quality::FixedState::with_seed(
                config.keys.derive_u64(b"floodgate client prefix"),
            )),
        };
        let shared = std::sync::OnceLock::new();
        if let Some(s) = store {
            let _ = shared.set(s);
        }
        let reported = (line.admitted_total, line.skipped_total);
        let room = Arc::new(Room {
            name: config.name.clone(),
            cookies: token::cookie_names(&config.name),
            config: ArcSwap::from_pointee(config),
            line: Mutex::new(line),
            metrics,
            limiter: ClientLimiter::new(),
            estimate: Mutex::new(EstimateStats::default()),
            reported: Mutex::new(reported),
            clock,
            prefix_hasher,
            ticks: AtomicU64::new(0),
            stopped: AtomicBool::new(false),
            persist_failing: AtomicBool::new(false),
            persisting: Mutex::new(()),
            shared,
        });
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(ticker(Arc::downgrade(&room)));
        }
        room
    }

    /// Applies a reloaded config, keeping the line; says which keys changed.
    pub(crate) fn reconfigure(&self, mut config: RoomConfig) -> Changes {
        let old = self.config();
        // The table of used challenges stays with unchanged settings: a reload must not
        // let a solution be redeemed twice.
        if format!("{:?}", old.proof_of_work) == format!("{:?}", config.proof_of_work) {
            config.proof_of_work.clone_from(&old.proof_of_work);
        }
        let mut line = self.line();
        let said = changes::changes(&old, &line.settings, &config);
        line.settings = settings_of(&config);
        self.config.store(Arc::new(config));
        said
    }

    /// The current config.
    pub fn config(&self) -> Arc<RoomConfig> {
        self.config.load_full()
    }

    /// The line, locked. Every operation on it is O(1) (a tick is bounded).
    pub fn line(&self) -> MutexGuard<'_, Line> {
        self.line.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Both clocks, now.
    pub fn now(&self) -> Now {
        self.clock.now()
    }

    /// Runs one tick now: admissions, expiries, metrics. Returns whether the state
    /// file is due (every [`PERSIST_EVERY`]).
    pub fn tick(&self) -> bool {
        let now = self.now();
        let mut line = self.line();
        line.advance(now);
        self.report(&line);
        drop(line);
        self.persist_due()
    }

    /// Counts a tick; true every [`PERSIST_EVERY`].
    fn persist_due(&self) -> bool {
        let every = (PERSIST_EVERY.as_millis() / TICK.as_millis()).max(1) as u64;
        self.ticks.fetch_add(1, Ordering::Relaxed) % every == every - 1
    }

    /// Writes the line to the state file (if the room has one). Blocking (it syncs the
    /// file): the ticker runs it off the runtime's workers.
    pub fn persist(&self) {
        let Some(path) = self.config().state_file() else {
            return;
        };
        // One writer at a time: the ticker and shutdown share the temporary file.
        let _writing = self.persisting.lock().unwrap_or_else(|e| e.into_inner());
        if self.stopped.load(Ordering::Acquire) {
            return;
        }
        let snapshot = self.line().snapshot(self.now());
        let bytes = serde_json::to_vec(&snapshot).expect("a snapshot serialises");
        match write_atomically(&path, &bytes) {
            Ok(()) => self.persist_failing.store(false, Ordering::Relaxed),
            Err(e) => {
                // Once per failure streak, not every second.
                if !self.persist_failing.swap(true, Ordering::Relaxed) {
                    tracing::warn!(room = %self.name, path = %path.display(), error = %e, "cannot write the waiting-room state file");
                }
            }
        }
    }

    /// At shutdown: writes the line one last time and stops writing it.
    pub fn shutdown(&self) {
        self.persist();
        let _writing = self.persisting.lock().unwrap_or_else(|e| e.into_inner());
        self.stopped.store(true, Ordering::Release);
    }

    /// The keyed hash of `ip`'s client prefix (`client_prefix_ipv4`/`_ipv6` bits).
    pub fn client_prefix(&self, ip: IpAddr) -> u64 {
        let cfg = self.config();
        let masked: u128 = match ip {
            IpAddr::V4(v4) => {
                let bits = u32::from(v4);
                let len = cfg.client_prefix_ipv4.min(32) as u32;
                let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
                (bits & mask) as u128 | (4u128 << 120)
            }
            IpAddr::V6(v6) => {
                let bits = u128::from(v6);
                let len = cfg.client_prefix_ipv6.min(128) as u32;
                let mask = if len == 0 {
                    0
                } else {
                    u128::MAX << (128 - len)
                };
                bits & mask
            }
        };
        match &self.prefix_hasher {
            PrefixHasher::Local(h) => h.hash_one(masked),
            PrefixHasher::Shared(h) => h.hash_one(masked),
        }
    }

    fn report(&self, line: &Line) {
        let m = &self.metrics;
        m.waiting.set(line.waiting() as i64);
        m.active.set(line.active() as i64);
        let mut r = self.reported.lock().unwrap_or_else(|e| e.into_inner());
        m.admitted.inc_by(line.admitted_total - r.0);
        m.skipped.inc_by(line.skipped_total - r.1);
        *r = (line.admitted_total, line.skipped_total);
        m.expected_wait.set(
            line.expected_wait(line.waiting())
                .map_or(f64::NAN, |w| w.1 as f64),
        );
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
        let due = match room.shared.get().cloned() {
            Some(line) => shared::tick(&room, &line).await,
            None => room.tick(),
        };
        if due && room.config().state_dir.is_some() {
            let _ = tokio::task::spawn_blocking(move || room.persist()).await;
        }
    }
}

/// Tickets per client prefix per minute, in a fixed table of atomic slots
/// (minute << 32 | count): bounded whatever the number of clients.
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

    /// Takes one ticket for client `prefix` (see [`Room::client_prefix`]) in minute
    /// `now_ms / 60 s`; false when over `limit`.
    pub fn allow(&self, prefix: u64, now_ms: u64, limit: u32) -> bool {
        if limit == 0 {
            return true;
        }
        let minute = (now_ms / 60_000) & 0xFFFF_FFFF;
        let slot = &self.slots[(self.hasher.hash_one(prefix) as usize) % CLIENT_LIMIT_SLOTS];
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
/// survives the reload; their settings follow the new config), and says what changed.
/// With a shared state backend, a new room's line is the one in the store.
pub(crate) fn build_rooms(
    configs: &[RoomConfig],
    families: &metrics::Families,
    previous: &[Arc<Room>],
    state: &dyn crate::state::SharedState,
) -> (Vec<Arc<Room>>, Changes) {
    let mut said = Changes::new();
    let rooms = configs
        .iter()
        .map(|c| match previous.iter().find(|r| r.name == c.name) {
            Some(r) => {
                said.append(r.reconfigure(c.clone()));
                r.clone()
            }
            None => {
                said.named("waiting_room", &c.name, Outcome::Added);
                match state.line(&c.name) {
                    Some(line) => Room::shared(c.clone(), families.room(&c.name), line),
                    None => Room::new(c.clone(), families.room(&c.name)),
                }
            }
        })
        .collect();
    for gone in previous
        .iter()
        .filter(|r| !configs.iter().any(|c| c.name == r.name))
    {
        said.named("waiting_room", &gone.name, Outcome::Removed);
        let line = match gone.shared.get() {
            Some(_) => Outcome::Kept("line kept in the shared store"),
            None => Outcome::Reset("line dropped"),
        };
        said.named("waiting_room", &gone.name, line);
    }
    (rooms, said)
}
