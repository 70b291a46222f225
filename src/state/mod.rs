//! State that several gateway instances share: one interface, two backends.
//!
//! ```text
//!            ┌──────────── SharedState ────────────┐
//!  local  ── │ consume: none (governor decides)     │  today's behaviour, the default
//!            │ broadcast: nobody else to tell       │
//!            │ live_instances: 1                    │
//!            └──────────────────────────────────────┘
//!  redis  ── GCRA buckets in Redis (one EVALSHA per limit and request, pipelined on
//!            one multiplexed connection); purges and room administration published
//!            on a channel *and* stored with a generation, so an instance that missed
//!            a message catches up at its next sync; heartbeats so that every
//!            instance knows N, the live instances.
//! ```
//!
//! Fail-open, not fail-wide: while Redis is unreachable or slower than
//! `state.timeout`, an instance decides from local buckets holding its 1/N share of
//! each limit (N as last seen) and queues its admin actions for when Redis returns.
//! The waiting-room line is shared too ([`line`]): the store holds the counters,
//! the front, redemptions, passes and revocations; each instance mirrors it every
//! tick and, while the store is away, runs its own line with its 1/N share.

pub mod config;
pub mod line;
mod local;
mod redis;
mod redis_line;

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

pub use self::config::StateConfig;
pub use self::local::LocalState;
pub use self::redis::RedisState;
use crate::metrics::Metrics;

/// Events an instance holds for other instances while Redis is away; past this many
/// the oldest go (a purge flood during an outage must not grow memory without end).
pub const MAX_PENDING_EVENTS: usize = 1024;
/// Admin events buffered between the receiver and the task that applies them.
pub const EVENT_CHANNEL: usize = 1024;

/// One GCRA bucket's parameters, as the shared store needs them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gcra {
    /// Spacing between two conforming requests.
    pub interval: Duration,
    /// Cells that may be used at once (burst plus any delay allowance).
    pub capacity: u32,
}

/// The shared store's answer for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Consumed {
    /// Spent a cell; this many cells remain usable at once.
    Allowed {
        /// Cells still free.
        remaining: u32,
    },
    /// Over the limit; the next request conforms after this wait.
    Refused {
        /// Time until a request would conform.
        wait: Duration,
    },
}

/// Why a shared-state call gave no answer (the caller then decides locally).
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum StateError {
    /// The backend is marked down; no call was made.
    #[error("state backend is down")]
    Down,
    /// The call took longer than `state.timeout`.
    #[error("state backend call timed out")]
    Timeout,
    /// Redis answered with an error or the connection broke.
    #[error("state backend error: {0}")]
    Backend(String),
}

/// A cache purge, as the admin API took it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Purge {
    /// One URL.
    Url(String),
    /// Every URL under a prefix.
    Prefix(String),
    /// Every entry tagged with a surrogate key.
    SurrogateKey(String),
}

/// A room's administered settings after a change (the whole of them, so that
/// applying the latest event, once or twice, gives the same room).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomSettings {
    /// The room.
    pub room: String,
    /// Paused: nobody new is admitted.
    pub paused: bool,
    /// Shoppers inside at once.
    pub active_users: u64,
    /// Admission rate.
    pub new_users_per_minute: u64,
}

/// An admin action taken on one instance, for all of them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Event {
    /// Purge cached entries.
    Purge(Purge),
    /// Apply a room's settings.
    Room(RoomSettings),
}

/// What several instances share. [`LocalState`] is the one-process implementation,
/// [`RedisState`] the shared one.
pub trait SharedState: Send + Sync + 'static {
    /// The `backend` label of `floodgate_state_backend_up`.
    fn backend(&self) -> &'static str;
    /// Whether the backend answers now (the local one always does).
    fn is_up(&self) -> bool;
    /// Live instances as last seen (1 for the local backend), for 1/N shares.
    fn live_instances(&self) -> u32;
    /// This instance's rank among the live ones (0..N), as last seen.
    fn rank(&self) -> u32 {
        0
    }
    /// Room `room`'s line in the shared store; `None` for the local backend, whose
    /// rooms keep their lines in memory.
    fn line(&self, _room: &str) -> Option<Arc<dyn line::SharedLine>> {
        None
    }
    /// Spends one cell of the shared bucket `key`; `None` when this backend shares no
    /// buckets and the caller's own limiter decides.
    fn consume(
        &self,
        key: String,
        gcra: Gcra,
    ) -> Option<BoxFuture<'static, Result<Consumed, StateError>>>;
    /// The key namespace of shared buckets (`prefix` + `rl:`).
    fn bucket_prefix(&self) -> String;
    /// Tells the other instances about an admin action already applied here.
    fn broadcast(&self, event: Event);
    /// Admin actions taken on other instances, to apply here.
    fn subscribe(&self) -> broadcast::Receiver<Event>;
    /// Rooms whose stored settings this instance follows (set at start and reload).
    fn track_rooms(&self, rooms: Vec<String>);
    /// Leaves the membership, so the others' N drops at once on a clean shutdown.
    fn leave(&self) -> BoxFuture<'static, ()>;
}

/// The local backend, shared by everything that was built without a state.
pub fn local() -> Arc<dyn SharedState> {
    Arc::new(LocalState::new())
}

/// Starts the configured backend (a Redis one connects in the background, so a
/// gateway starts, on local shares, even while Redis is unreachable).
pub fn start(cfg: &StateConfig, metrics: &Metrics) -> Arc<dyn SharedState> {
    match cfg {
        StateConfig::Local => local(),
        StateConfig::Redis(settings) => RedisState::start(settings.clone(), metrics),
    }
}

/// Applies one event from another instance to this instance's live config.
pub fn apply(event: &Event, compiled: &crate::proxy::Compiled) {
    match event {
        Event::Purge(p) => {
            let n = match p {
                Purge::Url(u) => compiled.cache.purge_url(u),
                Purge::Prefix(pre) => compiled.cache.purge_prefix(pre),
                Purge::SurrogateKey(k) => Some(compiled.cache.purge_surrogate_key(k)),
            };
            tracing::info!(purge = ?p, purged = ?n, "cache purge from another instance");
        }
        Event::Room(s) => {
            let Some(room) = compiled.waiting_rooms.iter().find(|r| r.name == s.room) else {
                tracing::debug!(room = %s.room, "settings for a room this instance does not have");
                return;
            };
            room.set_paused(s.paused);
            room.set_limits(Some(s.active_users), Some(s.new_users_per_minute));
            tracing::info!(room = %s.room, paused = s.paused, active_users = s.active_users,
                new_users_per_minute = s.new_users_per_minute, "room settings from another instance");
        }
    }
}

/// Applies every event other instances send, for the life of the gateway.
pub async fn apply_events(shared: Arc<crate::proxy::Shared>, mut rx: broadcast::Receiver<Event>) {
    loop {
        match rx.recv().await {
            Ok(event) => apply(&event, &shared.current.load()),
            Err(broadcast::error::RecvError::Lagged(n)) => {
                tracing::warn!(missed = n, "admin events from other instances dropped: the stored state catches up at the next sync");
            }
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}
