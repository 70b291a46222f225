//! The waiting-room line as several instances share it: what an instance asks of the
//! shared store, and what it hears back.
//!
//! The store (Redis, [`super::RedisState::line`]) is authoritative for everything
//! that must agree across instances: the ticket counters, the admission front, which
//! places were let in and which tickets were exchanged, the passes inside and the
//! revocations. Each instance keeps a mirror of it in its own [`Line`], refreshed by
//! [`SharedLine::advance`] every tick (50 ms), so a waiting visitor's poll and a pass
//! holder's request cost no call to the store; a new arrival (a number) and an
//! exchange (a ticket for a pass) cost one each.
//!
//! [`Line`]: crate::waiting_room::state::Line

use futures_util::future::BoxFuture;

use super::StateError;

/// The room's settings an advance needs (the calling instance's view of them; every
/// instance follows the same administered settings).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdvanceParams {
    /// Shoppers inside at once.
    pub active_users: u64,
    /// Admission rate.
    pub new_users_per_minute: u64,
    /// Block silence after which its places are skipped.
    pub abandon_after_ms: u64,
    /// Admissions stopped.
    pub paused: bool,
    /// Opening (unix ms), for a pre-queue.
    pub opens_at_ms: Option<u64>,
    /// The revocation generation this instance has applied.
    pub revocation_gen: u64,
    /// The next ticket and secondary numbers as this instance knows them: the store
    /// keeps the larger (a store emptied and re-seeded by another instance's older
    /// view catches up within a tick, so numbers never go back).
    pub known_next: (u64, u64),
    /// Blocks (of [`BLOCK`](crate::waiting_room::state::BLOCK) places) whose holders
    /// polled this instance since its last advance.
    pub polled_blocks: Vec<u64>,
}

/// The shared line as the store has it after an advance.
#[derive(Debug, Clone, PartialEq)]
pub struct LineView {
    /// The store's clock (unix ms).
    pub now_ms: u64,
    /// Next ticket number.
    pub next_ticket: u64,
    /// Next secondary (second pre-queue ticket of one client) number.
    pub next_secondary: u64,
    /// The front: every place up to here had its turn.
    pub front: u64,
    /// The frozen pre-queue (first tickets, secondary tickets), once open.
    pub prequeue: Option<(u64, u64)>,
    /// Passes inside plus places admitted and not yet claimed, across instances.
    pub active: u64,
    /// Places admitted since the line began.
    pub admitted_total: u64,
    /// Places skipped since the line began.
    pub skipped_total: u64,
    /// Tickets handed out since the line began.
    pub issued_total: u64,
    /// The shuffle key every instance draws the pre-queue with.
    pub perm_key: Option<[u8; 16]>,
    /// The latest revocation generation.
    pub revocation_gen: u64,
    /// When the line was last seeded (a new epoch: every instance merges its own).
    pub epoch: u64,
    /// Revocations after the caller's generation: (pass id, ms its copies stay refused).
    pub revocations: Vec<(u64, u64)>,
}

/// What the store said to a request for a number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Issue {
    /// A number, and the front when it was handed out.
    Number {
        /// The ticket number.
        ticket: u64,
        /// The front at issue.
        front: u64,
    },
    /// Just re-seeded: no numbers until every instance reported the ones it saw.
    Held,
    /// The store has no line: seed it, then ask again.
    NoLine,
}

/// What the store said to a ticket's exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exchange {
    /// Exchanged: the pass is inside.
    Claimed,
    /// Not its turn yet: this many places ahead.
    Waiting {
        /// Places ahead.
        ahead: u64,
    },
    /// Skipped while its holder was away, or forgotten: void.
    Lost,
    /// Exchanged before: a replay.
    Redeemed,
    /// Its reservation lapsed and the room is full: first in line.
    Full,
    /// The store has no line (emptied): seed it, then ask again.
    NoLine,
}

/// An instance's own view, to seed an empty store or merge back an outage.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Seed {
    /// Next ticket number (the store keeps the larger).
    pub next_ticket: u64,
    /// Next secondary number (the store keeps the larger).
    pub next_secondary: u64,
    /// The front (used only when seeding).
    pub front: u64,
    /// The pre-queue, once open (used only when seeding).
    pub prequeue: Option<(u64, u64)>,
    /// The shuffle key (used only when seeding).
    pub perm_key: [u8; 16],
    /// Counters (used only when seeding).
    pub admitted_total: u64,
    /// Counters (used only when seeding).
    pub skipped_total: u64,
    /// Counters (used only when seeding).
    pub issued_total: u64,
    /// Seeding: places after this one, up to the front, may still be exchanged.
    pub granted_from: u64,
    /// Positions whose tickets this instance exchanged while the store was away.
    pub claimed: Vec<u64>,
    /// Passes this instance knows: (id, ms left).
    pub passes: Vec<(u64, u64)>,
}

impl Seed {
    /// Nothing to protect: no number handed out, no pass, nothing exchanged (a new
    /// room's first seed needs no hold).
    pub fn is_blank(&self) -> bool {
        self.next_ticket <= 1
            && self.next_secondary <= 1
            && self.front == 0
            && self.claimed.is_empty()
            && self.passes.is_empty()
    }
}

/// A future answered by the shared store.
pub type Call<T> = BoxFuture<'static, Result<T, StateError>>;

/// One room's line in the shared store.
pub trait SharedLine: Send + Sync + 'static {
    /// Whether the store answers now; while it does not, the room runs on its own
    /// mirror with this instance's 1/N share.
    fn is_up(&self) -> bool;
    /// Whether the first connection attempt has decided up or down (at start, the
    /// room waits for it rather than run alone).
    fn is_decided(&self) -> bool;
    /// Live instances (N) and this instance's rank among them (0..N), as last seen.
    fn membership(&self) -> (u32, u32);
    /// Takes the next number.
    fn issue(&self, prefix: Option<u64>) -> Call<Issue>;
    /// Exchanges the ticket at `position` for pass `pass_id` lasting `session_ms`.
    fn claim(
        &self,
        position: u64,
        pass_id: u64,
        session_ms: u64,
        active_users: u64,
    ) -> Call<Exchange>;
    /// A pass without a ticket: `active_users` 0 lets everyone in (passthrough),
    /// `empty_line` lets in only while nobody waits (safety net).
    fn enter(
        &self,
        pass_id: u64,
        session_ms: u64,
        active_users: u64,
        empty_line: bool,
    ) -> Call<bool>;
    /// Pass `id` is alive for `ms` more (first seen here, or renewed); false if revoked.
    fn keep(&self, id: u64, ms: u64) -> Call<bool>;
    /// Ends pass `id`; its copies are refused for `ms`.
    fn revoke(&self, id: u64, ms: u64) -> Call<u64>;
    /// One tick: the new view, or `None` when the store has no line (seed it).
    fn advance(&self, params: AdvanceParams) -> Call<Option<LineView>>;
    /// Seeds an empty store, or merges back what was done while it was away.
    fn merge(&self, seed: Seed) -> Call<bool>;
}
