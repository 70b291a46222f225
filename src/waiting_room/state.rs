//! The line itself: counters and fixed-size rings, a pure state machine driven by the
//! caller's clock (unix milliseconds), so tests drive it without sleeping.
//!
//! "Take a number": `next_ticket` is the next number to hand out; `admitted` says
//! "every place up to here may enter". A place is a ticket's position in line: the
//! ticket number itself in FIFO, a keyed shuffle for the pre-queue (and within blocks
//! in `random` mode). A waiting visitor costs no memory: their ticket is in their
//! cookie. What the line keeps has a fixed size whatever the crowd:
//!
//! - **Live passes by expiry**, in a ring of [`RING_SLOTS`] buckets spanning a few
//!   session lengths: a pass adds one to the bucket of its expiry; a renewal moves it
//!   from its old bucket to its new one; buckets that fall behind the clock are
//!   subtracted, so an abandoned session frees its place when it expires. Approximation:
//!   expiries are rounded up to the bucket width (session / 512), and an expiry beyond
//!   the ring's span (an origin extension longer than [`HORIZON_SESSIONS`] sessions) is
//!   counted as ending at the span's end.
//! - **Reservations**: places admitted but not yet claimed (the visitor has not polled
//!   since). They count as active until claimed or until `abandon_after`, in a second
//!   ring; a claim removes the oldest live reservation (we do not know which one is
//!   whose, and it does not matter for the count).
//! - **Polls per block** of [`BLOCK`] tickets: when the block was first issued and when
//!   anyone holding a ticket in it last asked. Admission skips every place of a block
//!   nobody has polled for `abandon_after`. A block whose ring slot was reused by a
//!   newer one ([`BLOCK_SLOTS`] blocks = 4 M tickets back) counts as alive: the ring
//!   forgets toward admitting, never toward skipping someone who is there.

use sha2::{Digest, Sha256};

use super::config::Mode;

/// Buckets in each expiry ring.
pub const RING_SLOTS: usize = 1024;
/// The pass ring spans this many session lengths (room for origin extensions).
pub const HORIZON_SESSIONS: u64 = 2;
/// Tickets per poll-tracking block: 64 keeps the table at 4 M tickets for 1.5 MB.
pub const BLOCK: u64 = 64;
/// Blocks remembered.
pub const BLOCK_SLOTS: usize = 1 << 16;
/// Time constant of the measured admission rate (EWMA): long enough to smooth ticks,
/// short enough that a pause or a change of rate shows within half a minute.
pub const RATE_TAU_MS: f64 = 10_000.0;
/// Most places one `advance` walks (admitting or skipping), so one tick is bounded
/// even when a million abandoned tickets sit at the front.
pub const MAX_STEPS_PER_ADVANCE: u64 = 200_000;
/// Feistel rounds for the shuffles: enough for a random-looking permutation even on
/// tiny domains (the statistical test checks it).
const FEISTEL_ROUNDS: u32 = 12;

/// A ring counting items by expiry bucket.
#[derive(Debug, Clone)]
pub struct ExpiryRing {
    width_ms: u64,
    slots: Vec<(u64, u64)>,
    /// Every bucket below this has been subtracted.
    rolled_to: u64,
    total: u64,
}

impl ExpiryRing {
    /// A ring whose span covers `horizon_ms`.
    pub fn new(horizon_ms: u64) -> Self {
        let width_ms = (horizon_ms / (RING_SLOTS as u64 / 2)).max(10);
        ExpiryRing {
            width_ms,
            slots: vec![(0, 0); RING_SLOTS],
            rolled_to: 0,
            total: 0,
        }
    }

    /// Items not yet expired.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Subtracts every bucket that ended at or before `now_ms`.
    pub fn roll(&mut self, now_ms: u64) {
        let target = now_ms / self.width_ms;
        if target <= self.rolled_to {
            return;
        }
        if self.rolled_to == 0 {
            // First roll: the ring learns the clock; nothing was clamped before it.
            for slot in self.slots.iter_mut() {
                if slot.0 < target && slot.1 > 0 {
                    self.total -= slot.1;
                    *slot = (0, 0);
                }
            }
            self.rolled_to = target;
            return;
        }
        if target - self.rolled_to >= RING_SLOTS as u64 {
            self.slots.iter_mut().for_each(|s| *s = (0, 0));
            self.total = 0;
        } else {
            for b in self.rolled_to..target {
                let slot = &mut self.slots[(b % RING_SLOTS as u64) as usize];
                if slot.0 == b {
                    self.total -= slot.1;
                    *slot = (0, 0);
                }
            }
        }
        self.rolled_to = target;
    }

    fn bucket(&self, expires_ms: u64) -> Option<u64> {
        let b = expires_ms / self.width_ms;
        if b < self.rolled_to {
            return None;
        }
        if self.rolled_to == 0 {
            return Some(b);
        }
        Some(b.min(self.rolled_to + RING_SLOTS as u64 - 1))
    }

    /// Counts one item expiring at `expires_ms` (ignored if already past).
    pub fn add(&mut self, expires_ms: u64) {
        let Some(b) = self.bucket(expires_ms) else {
            return;
        };
        let slot = &mut self.slots[(b % RING_SLOTS as u64) as usize];
        if slot.0 != b {
            // Only an already-rolled bucket can sit here: its count was subtracted.
            *slot = (b, 0);
        }
        slot.1 += 1;
        self.total += 1;
    }

    /// Uncounts one item that was counted as expiring at `expires_ms`.
    pub fn remove(&mut self, expires_ms: u64) -> bool {
        let Some(b) = self.bucket(expires_ms) else {
            return false;
        };
        let slot = &mut self.slots[(b % RING_SLOTS as u64) as usize];
        if slot.0 == b && slot.1 > 0 {
            slot.1 -= 1;
            self.total -= 1;
            return true;
        }
        false
    }

    /// Uncounts the item that expires first.
    pub fn remove_oldest(&mut self) -> bool {
        if self.total == 0 {
            return false;
        }
        for b in self.rolled_to..self.rolled_to + RING_SLOTS as u64 {
            let slot = &mut self.slots[(b % RING_SLOTS as u64) as usize];
            if slot.0 == b && slot.1 > 0 {
                slot.1 -= 1;
                self.total -= 1;
                return true;
            }
        }
        false
    }
}

/// Settings the line needs; changed at runtime by the admin API or a reload.
#[derive(Debug, Clone)]
pub struct LineSettings {
    /// Shoppers inside at once.
    pub active_users: u64,
    /// Admission rate.
    pub new_users_per_minute: u64,
    /// Pass lifetime.
    pub session_ms: u64,
    /// Poll silence after which a block counts as abandoned.
    pub abandon_after_ms: u64,
    /// Before this, the pre-queue.
    pub opens_at_ms: Option<u64>,
    /// Room behaviour.
    pub mode: Mode,
}

/// Where a ticket stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    /// Before opening: the place will be drawn at opening.
    PreQueue,
    /// Waiting with this many places ahead (exact: places not yet admitted before ours).
    Waiting {
        /// Places ahead.
        ahead: u64,
    },
    /// May enter.
    Admitted,
}

/// The waiting line of one room.
#[derive(Debug, Clone)]
pub struct Line {
    /// Current settings.
    pub settings: LineSettings,
    /// Admissions stopped by an operator.
    pub paused: bool,
    next_ticket: u64,
    admitted: u64,
    prequeue: Option<u64>,
    perm_key: [u8; 16],
    tokens: f64,
    last_ms: Option<u64>,
    passes: ExpiryRing,
    reservations: ExpiryRing,
    blocks: Vec<(u64, u64, u64)>,
    rate_ewma: f64,
    /// Places admitted since the start.
    pub admitted_total: u64,
    /// Places skipped because nobody was there (abandoned or never issued).
    pub skipped_total: u64,
    /// Tickets handed out.
    pub issued_total: u64,
}

impl Line {
    /// An empty line. `perm_key` seeds the shuffles (random per room in production).
    pub fn new(settings: LineSettings, perm_key: [u8; 16]) -> Self {
        let horizon = settings.session_ms.max(1) * HORIZON_SESSIONS;
        let claim = settings.abandon_after_ms.max(1) * HORIZON_SESSIONS;
        Line {
            passes: ExpiryRing::new(horizon),
            reservations: ExpiryRing::new(claim),
            prequeue: if settings.opens_at_ms.is_none() {
                Some(0)
            } else {
                None
            },
            settings,
            paused: false,
            next_ticket: 1,
            admitted: 0,
            perm_key,
            // The first visitor to an empty room walks straight in.
            tokens: 1.0,
            last_ms: None,
            blocks: vec![(u64::MAX, 0, 0); BLOCK_SLOTS],
            rate_ewma: 0.0,
            admitted_total: 0,
            skipped_total: 0,
            issued_total: 0,
        }
    }

    /// Bytes of state, whatever the number of visitors (for the memory figure).
    pub fn state_bytes(&self) -> usize {
        std::mem::size_of::<Self>()
            + self.blocks.capacity() * std::mem::size_of::<(u64, u64, u64)>()
            + 2 * RING_SLOTS * std::mem::size_of::<(u64, u64)>()
    }

    fn rate_per_ms(&self) -> f64 {
        self.settings.new_users_per_minute as f64 / 60_000.0
    }

    /// Live passes plus admitted-but-unclaimed places.
    pub fn active(&self) -> u64 {
        self.passes.total() + self.reservations.total()
    }

    /// Live passes only.
    pub fn passes(&self) -> u64 {
        self.passes.total()
    }

    /// Tickets handed out and not yet admitted or skipped.
    pub fn waiting(&self) -> u64 {
        (self.next_ticket - 1).saturating_sub(self.admitted)
    }

    /// Whether the line is open (pre-queue drawn).
    pub fn is_open(&self) -> bool {
        self.prequeue.is_some()
    }

    /// Measured admissions per second (EWMA).
    pub fn measured_rate(&self) -> f64 {
        self.rate_ewma
    }

    /// The rate to predict with: measured when there is a measure, configured before.
    pub fn predicting_rate(&self) -> f64 {
        if self.rate_ewma > 0.01 {
            self.rate_ewma
        } else {
            self.settings.new_users_per_minute as f64 / 60.0
        }
    }

    /// Seconds a visitor with `ahead` places before them may expect to wait: (low, high).
    pub fn expected_wait(&self, ahead: u64) -> (u64, u64) {
        let r = self.predicting_rate();
        let mid = (ahead as f64 + 1.0) / r;
        ((mid * 0.8).floor() as u64, (mid * 1.25).ceil() as u64)
    }

    /// Hands out the next ticket.
    pub fn issue(&mut self, now_ms: u64) -> u64 {
        let t = self.next_ticket;
        self.next_ticket += 1;
        self.issued_total += 1;
        let b = (t - 1) / BLOCK;
        let slot = &mut self.blocks[(b % BLOCK_SLOTS as u64) as usize];
        if slot.0 != b {
            *slot = (b, now_ms, now_ms);
        }
        t
    }

    /// Records that the holder of ticket `t` asked at `now_ms` (keeps its block alive).
    pub fn polled(&mut self, t: u64, now_ms: u64) {
        let b = t.saturating_sub(1) / BLOCK;
        let slot = &mut self.blocks[(b % BLOCK_SLOTS as u64) as usize];
        if slot.0 == b {
            slot.2 = slot.2.max(now_ms);
        }
    }

    fn block_abandoned(&self, t: u64, now_ms: u64) -> bool {
        let b = (t - 1) / BLOCK;
        let (id, _first, last) = self.blocks[(b % BLOCK_SLOTS as u64) as usize];
        id == b && now_ms.saturating_sub(last) >= self.settings.abandon_after_ms
    }

    /// Where ticket `t` stands.
    pub fn standing(&self, t: u64) -> Standing {
        match self.position_of(t) {
            None => Standing::PreQueue,
            Some(p) if p <= self.admitted => Standing::Admitted,
            Some(p) => Standing::Waiting {
                ahead: p - self.admitted - 1,
            },
        }
    }

    /// Whether anyone is waiting for a place (the line is not empty).
    pub fn anyone_waiting(&self) -> bool {
        !self.is_open() || self.admitted < self.last_position()
    }

    /// A new pass expiring at `expires_ms`; `claimed` when it replaces a reservation.
    pub fn pass_started(&mut self, expires_ms: u64, claimed: bool) {
        if claimed {
            self.reservations.remove_oldest();
        }
        self.passes.add(expires_ms);
    }

    /// A pass renewed (sliding session) or ended (`new` = None).
    pub fn pass_moved(&mut self, old_expires_ms: u64, new_expires_ms: Option<u64>) {
        self.passes.remove(old_expires_ms);
        if let Some(n) = new_expires_ms {
            self.passes.add(n);
        }
    }

    /// Advances the clock: expires passes and reservations, draws the pre-queue at
    /// opening, and admits places at the configured rate while there is room.
    /// Returns the number of places admitted.
    pub fn advance(&mut self, now_ms: u64) -> u64 {
        self.passes.roll(now_ms);
        self.reservations.roll(now_ms);
        let dt = match self.last_ms {
            None => 0,
            Some(l) => now_ms.saturating_sub(l),
        };
        if self.last_ms.is_some_and(|l| now_ms < l) {
            return 0;
        }
        self.last_ms = Some(now_ms);
        if self.prequeue.is_none() {
            if self.settings.opens_at_ms.is_some_and(|o| now_ms < o) {
                return 0;
            }
            // Opening: freeze the pre-queue; its order is drawn from the room's key.
            self.prequeue = Some(self.next_ticket - 1);
        }
        let mut admitted_now = 0;
        let last = self.last_position();
        if !self.paused {
            // A token bucket holding at most one tick's worth (or one place), so a
            // crowd arriving after a quiet spell is let in at the rate, not in a burst.
            let cap = (self.rate_per_ms() * 100.0).max(1.0);
            self.tokens = (self.tokens + self.rate_per_ms() * dt as f64).min(cap);
            let mut steps = 0;
            while self.tokens >= 1.0
                && self.active() < self.settings.active_users
                && self.admitted < last
                && steps < MAX_STEPS_PER_ADVANCE
            {
                steps += 1;
                let p = self.admitted + 1;
                let t = self.ticket_of(p);
                if t >= self.next_ticket || self.block_abandoned(t, now_ms) {
                    // Nobody there (never issued in a shuffled block, or gone): skip free.
                    self.admitted = p;
                    self.skipped_total += 1;
                    continue;
                }
                self.admitted = p;
                self.tokens -= 1.0;
                admitted_now += 1;
                self.reservations
                    .add(now_ms + self.settings.abandon_after_ms);
            }
            // Skip dead places at the front even with no budget, so the line's head
            // is always someone present.
            while self.admitted < last && steps < MAX_STEPS_PER_ADVANCE {
                let t = self.ticket_of(self.admitted + 1);
                if t < self.next_ticket && !self.block_abandoned(t, now_ms) {
                    break;
                }
                steps += 1;
                self.admitted += 1;
                self.skipped_total += 1;
            }
        }
        self.admitted_total += admitted_now;
        if dt > 0 {
            let inst = admitted_now as f64 * 1000.0 / dt as f64;
            let alpha = 1.0 - (-(dt as f64) / RATE_TAU_MS).exp();
            self.rate_ewma += alpha * (inst - self.rate_ewma);
        }
        admitted_now
    }

    /// The last position that may hold an issued ticket: the last ticket's, or in
    /// `random` mode the end of its (shuffled) block.
    fn last_position(&self) -> u64 {
        let issued = self.next_ticket - 1;
        let n = self.prequeue.unwrap_or(0);
        if self.settings.mode == Mode::Random && issued > n {
            n + (issued - n).div_ceil(BLOCK) * BLOCK
        } else {
            issued
        }
    }

    /// The position (1-based place in admission order) of ticket `t`; `None` before
    /// the pre-queue is drawn for a pre-queue ticket.
    pub fn position_of(&self, t: u64) -> Option<u64> {
        let n = self.prequeue?;
        if t <= n {
            return Some(permute(&self.perm_key, 0, n, t - 1) + 1);
        }
        if self.settings.mode == Mode::Random {
            let u = t - n - 1;
            let (blk, i) = (u / BLOCK, u % BLOCK);
            return Some(n + blk * BLOCK + permute(&self.perm_key, blk + 1, BLOCK, i) + 1);
        }
        Some(t)
    }

    /// The ticket at position `p` (inverse of [`Line::position_of`]).
    pub fn ticket_of(&self, p: u64) -> u64 {
        let n = self.prequeue.unwrap_or(0);
        if p <= n {
            return unpermute(&self.perm_key, 0, n, p - 1) + 1;
        }
        if self.settings.mode == Mode::Random {
            let u = p - n - 1;
            let (blk, i) = (u / BLOCK, u % BLOCK);
            return n + blk * BLOCK + unpermute(&self.perm_key, blk + 1, BLOCK, i) + 1;
        }
        p
    }
}

fn round_fn(key: &[u8; 16], domain: u64, round: u32, x: u64) -> u64 {
    let mut h = Sha256::new();
    h.update(key);
    h.update(domain.to_le_bytes());
    h.update(round.to_le_bytes());
    h.update(x.to_le_bytes());
    u64::from_le_bytes(h.finalize()[..8].try_into().expect("8 bytes"))
}

fn half_bits(n: u64) -> u32 {
    let bits = 64 - (n.max(2) - 1).leading_zeros();
    bits.div_ceil(2).max(1)
}

fn feistel(key: &[u8; 16], domain: u64, n: u64, x: u64, inverse: bool) -> u64 {
    let h = half_bits(n);
    let mask = (1u64 << h) - 1;
    let (mut l, mut r) = (x >> h, x & mask);
    if !inverse {
        for round in 0..FEISTEL_ROUNDS {
            let nl = r;
            let nr = l ^ (round_fn(key, domain, round, r) & mask);
            l = nl;
            r = nr;
        }
    } else {
        for round in (0..FEISTEL_ROUNDS).rev() {
            let pr = l;
            let pl = r ^ (round_fn(key, domain, round, pr) & mask);
            l = pl;
            r = pr;
        }
    }
    (l << h) | r
}

/// A keyed permutation of `0..n` (Feistel network with cycle walking): memory-free,
/// so a pre-queue of a million costs nothing to draw. `domain` separates independent
/// permutations under one key.
pub fn permute(key: &[u8; 16], domain: u64, n: u64, x: u64) -> u64 {
    if n <= 1 {
        return x;
    }
    let mut y = feistel(key, domain, n, x, false);
    while y >= n {
        y = feistel(key, domain, n, y, false);
    }
    y
}

/// The inverse of [`permute`].
pub fn unpermute(key: &[u8; 16], domain: u64, n: u64, y: u64) -> u64 {
    if n <= 1 {
        return y;
    }
    let mut x = feistel(key, domain, n, y, true);
    while x >= n {
        x = feistel(key, domain, n, x, true);
    }
    x
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(active: u64, per_min: u64) -> LineSettings {
        LineSettings {
            active_users: active,
            new_users_per_minute: per_min,
            session_ms: 60_000,
            abandon_after_ms: 3_600_000,
            opens_at_ms: None,
            mode: Mode::Fifo,
        }
    }

    #[test]
    fn thousands_of_visitors_are_admitted_in_ticket_order_at_the_configured_rate() {
        // 6000/min = 100/s; 3000 visitors; room big enough that only the rate binds.
        let mut line = Line::new(settings(1_000_000, 6000), [1; 16]);
        let t0 = 1_000_000;
        let tickets: Vec<u64> = (0..3000).map(|_| line.issue(t0)).collect();
        assert!(tickets.windows(2).all(|w| w[1] == w[0] + 1));
        line.advance(t0);
        let mut order = Vec::new();
        let mut admitted_at = Vec::new();
        let mut now = t0;
        while order.len() < tickets.len() {
            now += 10;
            line.advance(now);
            for &t in &tickets[order.len()..] {
                if line.standing(t) == Standing::Admitted {
                    order.push(t);
                    admitted_at.push(now);
                } else {
                    break;
                }
            }
            assert!(now < t0 + 120_000, "stalled");
        }
        assert_eq!(order, tickets, "admission order is ticket order");
        let secs = (admitted_at.last().unwrap() - t0) as f64 / 1000.0;
        let rate = tickets.len() as f64 / secs;
        assert!((rate - 100.0).abs() / 100.0 < 0.05, "rate {rate}/s");
        assert!((line.measured_rate() - 100.0).abs() < 5.0);
        // People ahead is exact and only goes down.
        let mut l2 = Line::new(settings(1_000_000, 60), [1; 16]);
        let ts: Vec<u64> = (0..10).map(|_| l2.issue(0)).collect();
        assert_eq!(l2.standing(ts[9]), Standing::Waiting { ahead: 9 });
    }

    #[test]
    fn admission_stops_when_the_room_is_full_and_resumes_when_passes_expire() {
        let mut line = Line::new(settings(2, 60_000), [1; 16]);
        for _ in 0..5 {
            line.issue(0);
        }
        line.advance(0);
        line.advance(1000);
        assert_eq!(line.admitted_total, 2, "only two places");
        // The two claim their passes (session 60 s).
        line.pass_started(61_000, true);
        line.pass_started(61_000, true);
        line.advance(30_000);
        assert_eq!(line.admitted_total, 2);
        assert_eq!(line.standing(3), Standing::Waiting { ahead: 0 });
        // One shopper renews; the other leaves and their pass expires.
        line.pass_moved(61_000, Some(120_000));
        line.advance(62_000);
        assert_eq!(line.admitted_total, 3);
        assert_eq!(line.standing(3), Standing::Admitted);
    }

    #[test]
    fn an_unclaimed_admission_frees_its_place_after_abandon_after() {
        let mut s = settings(1, 60_000);
        s.abandon_after_ms = 5_000;
        let mut line = Line::new(s, [1; 16]);
        line.issue(0);
        line.issue(0);
        line.polled(2, 4000);
        line.advance(0);
        line.advance(100);
        assert_eq!(line.admitted_total, 1);
        line.polled(2, 4_000);
        line.advance(4_000);
        assert_eq!(line.standing(2), Standing::Waiting { ahead: 0 });
        line.polled(2, 5_300);
        line.advance(5_300);
        assert_eq!(line.standing(2), Standing::Admitted);
    }

    #[test]
    fn blocks_nobody_polled_are_skipped_and_the_line_moves_for_those_still_there() {
        let mut s = settings(1_000_000, 60); // one per second
        s.abandon_after_ms = 10_000;
        let mut line = Line::new(s, [1; 16]);
        for _ in 0..(BLOCK * 5) {
            line.issue(0);
        }
        let me = line.issue(0); // first ticket of block 5
        line.advance(0);
        line.polled(me, 11_000);
        line.advance(11_000);
        // Ticket 1 walked in at t=0 (its block was fresh); 11 s at 1/s would admit 11
        // more places; the other 319 ahead were gone and were skipped instead.
        assert_eq!(line.standing(me), Standing::Admitted);
        assert_eq!(line.skipped_total, BLOCK * 5 - 1);
        assert_eq!(line.admitted_total, 2);
    }

    #[test]
    fn pause_stops_admissions_and_resume_restarts_them() {
        let mut line = Line::new(settings(100, 60_000), [1; 16]);
        for _ in 0..10 {
            line.issue(0);
        }
        line.paused = true;
        line.advance(0);
        line.advance(1000);
        assert_eq!(line.admitted_total, 0);
        line.paused = false;
        line.advance(1100);
        assert!(line.admitted_total > 0);
    }

    #[test]
    fn the_pre_queue_is_drawn_at_opening_and_later_arrivals_follow_it() {
        let mut s = settings(1_000_000, 600_000);
        s.opens_at_ms = Some(10_000);
        let mut line = Line::new(s, [7; 16]);
        let early: Vec<u64> = (0..100).map(|_| line.issue(0)).collect();
        line.advance(5_000);
        assert_eq!(line.standing(early[0]), Standing::PreQueue);
        assert_eq!(line.admitted_total, 0);
        line.advance(10_000);
        let late = line.issue(10_000);
        let mut positions: Vec<u64> = early
            .iter()
            .map(|&t| line.position_of(t).unwrap())
            .collect();
        assert_ne!(positions, (1..=100).collect::<Vec<_>>(), "shuffled");
        positions.sort();
        assert_eq!(positions, (1..=100).collect::<Vec<_>>(), "a permutation");
        assert_eq!(line.position_of(late), Some(101));
        for p in 1..=101 {
            assert_eq!(line.position_of(line.ticket_of(p)), Some(p));
        }
    }

    #[test]
    fn the_pre_queue_order_is_a_uniform_shuffle() {
        // Position frequency of each ticket over many independent draws: with n = 6,
        // every (ticket, position) cell should get trials / 6. Chi-square, 25 degrees
        // of freedom: 52.6 is the 0.1% critical value.
        let n = 6u64;
        let trials = 12_000u64;
        let mut counts = vec![vec![0u64; n as usize]; n as usize];
        let mut pair_order = 0u64;
        for k in 0..trials {
            let mut key = [0u8; 16];
            key[..8].copy_from_slice(&k.to_le_bytes());
            key[8..].copy_from_slice(&(k.wrapping_mul(0x9E37_79B9_7F4A_7C15)).to_le_bytes());
            for x in 0..n {
                counts[x as usize][permute(&key, 0, n, x) as usize] += 1;
            }
            if permute(&key, 0, n, 0) < permute(&key, 0, n, 1) {
                pair_order += 1;
            }
        }
        let expected = trials as f64 / n as f64;
        let chi: f64 = counts
            .iter()
            .flatten()
            .map(|&c| (c as f64 - expected).powi(2) / expected)
            .sum();
        assert!(chi < 52.6, "chi-square {chi} over {counts:?}");
        // Arriving first gives no edge: ticket 1 is before ticket 2 half the time.
        let share = pair_order as f64 / trials as f64;
        assert!((share - 0.5).abs() < 0.02, "{share}");
    }

    #[test]
    fn random_mode_shuffles_within_blocks_and_admits_everyone() {
        let mut s = settings(1_000_000, 6_000_000);
        s.mode = Mode::Random;
        let mut line = Line::new(s, [3; 16]);
        let ts: Vec<u64> = (0..200).map(|_| line.issue(0)).collect();
        line.advance(0);
        let pos: Vec<u64> = ts.iter().map(|&t| line.position_of(t).unwrap()).collect();
        assert_ne!(pos, ts);
        for _ in 0..100 {
            line.advance(line.last_ms.unwrap() + 100);
        }
        assert!(ts.iter().all(|&t| line.standing(t) == Standing::Admitted));
    }

    #[test]
    fn a_million_tickets_do_not_grow_the_state() {
        let mut line = Line::new(settings(1000, 600), [1; 16]);
        let before = line.state_bytes();
        for i in 0..1_000_000u64 {
            let t = line.issue(i / 1000);
            line.polled(t, i / 1000);
        }
        line.advance(1000);
        assert_eq!(line.state_bytes(), before);
        assert_eq!(line.waiting(), 1_000_000 - line.admitted_total);
    }
}
