//! The line itself: counters, two bitmaps and a few bounded maps, a pure state machine
//! driven by the caller's clock ([`Now`]), so tests drive it without sleeping.
//!
//! "Take a number": `next_ticket` is the next number to hand out; `admitted` (the
//! front) says "every place up to here has had its turn". A place is a ticket's
//! position in line: the ticket number itself in FIFO, a keyed shuffle for the
//! pre-queue (and within blocks in `random` mode). A waiting visitor costs no memory:
//! their ticket is in their cookie. What the line keeps is bounded whatever the crowd:
//!
//! - **Two bitmaps over the admitted window** (the last [`ADMITTED_WINDOW`] places the
//!   front passed, 128 KiB each): `granted` (the place was let in, not skipped) and
//!   `redeemed` (its ticket was exchanged for a pass). A ticket is exchanged once; a
//!   skipped place is never let in afterwards, so nobody enters past the limit.
//! - **Passes by id** (at most `active_users` in a queueing room, [`MAX_TRACKED_PASSES`]
//!   in any case): the active count is the number of ids, so renewals replace and
//!   replays are idempotent. Revoked ids are kept (bounded) until every copy expired.
//! - **Reservations**: places admitted but not yet claimed, by position, until
//!   claimed or `abandon_after`. They count as active.
//! - **Polls per block** of [`BLOCK`] places: when anyone holding a place in it last
//!   asked (issuing counts). The front skips every place of a block nobody has polled
//!   for `abandon_after`. A block whose ring slot was reused by a newer one
//!   ([`BLOCK_SLOTS`] blocks = 4 M places back) counts as alive: the ring forgets toward
//!   waiting, never toward skipping someone who is there.
//!
//! Time: pacing, presence and pass lifetimes run on the monotonic clock
//! ([`Now::mono_ms`]); wall time only decides opening and token expiry (in
//! [`super::token`]), so a wall-clock step never freezes admissions.

use std::collections::{BTreeSet, HashMap, HashSet};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::config::Mode;

/// Tickets per poll-tracking block: 64 keeps the table at 4 M places for 1 MB.
pub const BLOCK: u64 = 64;
/// Blocks remembered.
pub const BLOCK_SLOTS: usize = 1 << 16;
/// Places behind the front whose grant and redemption are remembered: a million
/// admissions (days at event rates) for 2 × 128 KiB. A ticket whose place is older
/// counts as none.
pub const ADMITTED_WINDOW: u64 = 1 << 20;
/// Passes counted by id, at most: far above any `active_users`; only `passthrough`
/// (which admits everyone) can reach it, and then its count saturates.
pub const MAX_TRACKED_PASSES: usize = 1 << 20;
/// Revoked pass ids remembered, at most (each until its pass would have expired);
/// when full the one expiring first is forgotten.
pub const MAX_REVOKED: usize = 1 << 18;
/// Client prefixes remembered before opening to give each one draw: a million
/// prefixes (about 40 MB at most, freed at opening). Past it, newcomers draw normally.
pub const MAX_PREQUEUE_PREFIXES: usize = 1 << 20;
/// Pre-queue tickets beyond a prefix's first are numbered from here: they draw among
/// themselves, after every first ticket, so N tickets are not N draws.
pub const SECONDARY_BASE: u64 = 1 << 40;
/// Width of one bucket of the measured admission rate.
pub const RATE_BUCKET_MS: u64 = 5_000;
/// Buckets: the rate is measured over the last five minutes, long enough that a room
/// admitting in bursts (as passes expire) reads steadily.
pub const RATE_BUCKETS: usize = 60;
/// Below this much observed time with people waiting, the configured rate is used.
pub const RATE_MIN_OBSERVED_MS: u64 = 10_000;
/// Time constant of the rate shown to visitors: a poll 20 s later sees the wait
/// change by at most e^(1/3) ≈ 1.4× from the rate alone, never 10×.
pub const DISPLAY_TAU_MS: f64 = 60_000.0;
/// Most places one `advance` walks (admitting or skipping), so one tick is bounded
/// even when a million abandoned tickets sit at the front.
pub const MAX_STEPS_PER_ADVANCE: u64 = 200_000;
/// Most requests per second and client prefixes per minute a sharing limit may name:
/// keeps the per-pass record small.
pub const MAX_PASS_PREFIXES: u32 = 16;
/// Feistel rounds for the shuffles: enough for a random-looking permutation even on
/// tiny domains (the statistical test checks it).
const FEISTEL_ROUNDS: u32 = 12;
/// Feistel domain of the secondary pre-queue tickets (blocks use 1.., the pre-queue 0).
const SECONDARY_DOMAIN: u64 = u64::MAX;

/// The two clocks, read once per request or tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Now {
    /// Monotonic milliseconds (any origin): pacing, presence, pass lifetimes.
    pub mono_ms: u64,
    /// Unix milliseconds: opening time and token expiry.
    pub wall_ms: u64,
}

/// Keys with an expiry (monotonic ms), expired in order: O(log n) per operation.
#[derive(Debug, Clone)]
pub struct ExpiryMap<V> {
    entries: HashMap<u64, (u64, V)>,
    order: BTreeSet<(u64, u64)>,
    cap: usize,
}

impl<V> ExpiryMap<V> {
    fn new(cap: usize) -> Self {
        ExpiryMap {
            entries: HashMap::new(),
            order: BTreeSet::new(),
            cap,
        }
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether it holds nothing.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn contains(&self, k: u64) -> bool {
        self.entries.contains_key(&k)
    }

    fn expiry(&self, k: u64) -> Option<u64> {
        self.entries.get(&k).map(|e| e.0)
    }

    /// Inserts or replaces; false (nothing stored) when full.
    fn insert(&mut self, k: u64, expires: u64, v: V) -> bool {
        if let Some((old, _)) = self.entries.get(&k) {
            self.order.remove(&(*old, k));
        } else if self.entries.len() >= self.cap {
            return false;
        }
        self.entries.insert(k, (expires, v));
        self.order.insert((expires, k));
        true
    }

    fn set_expiry(&mut self, k: u64, expires: u64) {
        if let Some(e) = self.entries.get_mut(&k) {
            self.order.remove(&(e.0, k));
            e.0 = expires;
            self.order.insert((expires, k));
        }
    }

    fn remove(&mut self, k: u64) -> Option<(u64, V)> {
        let e = self.entries.remove(&k)?;
        self.order.remove(&(e.0, k));
        Some(e)
    }

    fn evict_first(&mut self) {
        if let Some(&(_, k)) = self.order.iter().next() {
            self.remove(k);
        }
    }

    /// Drops every entry expiring at or before `now`.
    fn expire(&mut self, now: u64) {
        while let Some(&(e, k)) = self.order.iter().next() {
            if e > now {
                break;
            }
            self.order.remove(&(e, k));
            self.entries.remove(&k);
        }
    }

    fn iter(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.entries.iter().map(|(k, (e, _))| (*k, *e))
    }
}

/// One bit per place of the admitted window, a ring indexed by position.
#[derive(Debug, Clone)]
struct WindowBits {
    words: Vec<u64>,
}

impl WindowBits {
    fn new() -> Self {
        WindowBits {
            words: vec![0; (ADMITTED_WINDOW / 64) as usize],
        }
    }

    fn word(p: u64) -> usize {
        ((p % ADMITTED_WINDOW) / 64) as usize
    }

    fn get(&self, p: u64) -> bool {
        self.words[Self::word(p)] >> (p % 64) & 1 == 1
    }

    fn set(&mut self, p: u64, v: bool) {
        let w = &mut self.words[Self::word(p)];
        if v {
            *w |= 1 << (p % 64);
        } else {
            *w &= !(1 << (p % 64));
        }
    }

    /// The words covering positions `from..=to` (from aligned down to 64), base64.
    fn export(&self, from: u64, to: u64) -> String {
        use base64::Engine;
        let mut bytes = Vec::new();
        let mut p = from - from % 64;
        while p <= to {
            bytes.extend_from_slice(&self.words[Self::word(p)].to_le_bytes());
            p += 64;
        }
        base64::engine::general_purpose::STANDARD_NO_PAD.encode(bytes)
    }

    fn import(&mut self, from: u64, data: &str) -> Result<(), String> {
        use base64::Engine;
        let bytes = base64::engine::general_purpose::STANDARD_NO_PAD
            .decode(data)
            .map_err(|e| e.to_string())?;
        if bytes.len() % 8 != 0 || bytes.len() as u64 / 8 > ADMITTED_WINDOW / 64 {
            return Err("bitmap of the wrong size".into());
        }
        let mut p = from - from % 64;
        for chunk in bytes.chunks(8) {
            self.words[Self::word(p)] = u64::from_le_bytes(chunk.try_into().expect("8 bytes"));
            p += 64;
        }
        Ok(())
    }
}

/// Admissions and time with people waiting, per bucket: the achieved rate.
#[derive(Debug, Clone)]
struct RateWindow {
    buckets: Vec<(u64, u64, u64)>,
}

impl RateWindow {
    fn new() -> Self {
        RateWindow {
            buckets: vec![(u64::MAX, 0, 0); RATE_BUCKETS],
        }
    }

    fn record(&mut self, now_ms: u64, admitted: u64, busy_ms: u64) {
        let b = now_ms / RATE_BUCKET_MS;
        let slot = &mut self.buckets[(b % RATE_BUCKETS as u64) as usize];
        if slot.0 != b {
            *slot = (b, 0, 0);
        }
        slot.1 += admitted;
        slot.2 += busy_ms;
    }

    /// Admissions per second over the busy time of the window, if enough was seen.
    fn rate(&self, now_ms: u64) -> Option<f64> {
        let b = now_ms / RATE_BUCKET_MS;
        let (mut n, mut busy) = (0, 0);
        for &(id, a, t) in &self.buckets {
            if id != u64::MAX && id + RATE_BUCKETS as u64 > b && id <= b {
                n += a;
                busy += t;
            }
        }
        (busy >= RATE_MIN_OBSERVED_MS).then(|| n as f64 * 1000.0 / busy as f64)
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
    /// Before this (unix ms), the pre-queue.
    pub opens_at_ms: Option<u64>,
    /// Room behaviour.
    pub mode: Mode,
    /// A pass used more often than this in one second is revoked (0: no limit).
    pub pass_requests_per_second: u32,
    /// A pass used from more client prefixes than this in one minute is revoked (0: no
    /// limit).
    pub pass_prefixes_per_minute: u32,
}

/// Where a ticket stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    /// Before opening: the place will be drawn at opening.
    PreQueue,
    /// Waiting with this many places ahead (places the front has not passed yet).
    Waiting {
        /// Places ahead.
        ahead: u64,
    },
    /// Its turn came: may exchange the ticket for a pass, once.
    Admitted,
    /// Already exchanged for a pass: a replay.
    Redeemed,
    /// Skipped while its holder was away (or so long ago it is forgotten): void.
    Lost,
    /// Not a place of this line (a number it never issued, e.g. before a restart
    /// without a state file).
    Unknown,
}

/// Why a ticket whose turn came got no pass yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaimRefused {
    /// Not admitted (or no longer valid): see its standing.
    NotAdmitted(Standing),
    /// Came back after its reservation lapsed and the room is full: first in line.
    Full,
}

/// What a pass holder's request may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PassCheck {
    /// Go through.
    Valid,
    /// The pass was revoked (session ended by the origin, or shared).
    Revoked,
    /// Used past a sharing limit: revoked now.
    Shared(SharingLimit),
}

/// Which sharing limit a pass crossed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SharingLimit {
    /// `pass_requests_per_second`.
    RequestRate,
    /// `pass_prefixes_per_minute`.
    Prefixes,
}

impl SharingLimit {
    /// The metric `reason` and log spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            SharingLimit::RequestRate => "shared_request_rate",
            SharingLimit::Prefixes => "shared_prefixes",
        }
    }
}

/// How one pass was used lately (for the sharing limits).
#[derive(Debug, Clone, Default)]
pub struct PassUse {
    second: u64,
    requests: u32,
    minute: u64,
    prefixes: Vec<u64>,
}

/// A ticket just issued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Issued {
    /// Its number.
    pub ticket: u64,
    /// The front when it was issued (for "people ahead when you arrived").
    pub front: u64,
}

/// The waiting line of one room.
#[derive(Debug, Clone)]
pub struct Line {
    /// Current settings.
    pub settings: LineSettings,
    /// Admissions stopped by an operator.
    pub paused: bool,
    next_ticket: u64,
    next_secondary: u64,
    admitted: u64,
    /// At opening: (first tickets, secondary tickets) of the pre-queue.
    prequeue: Option<(u64, u64)>,
    prequeue_prefixes: HashSet<u64>,
    /// Unissued ticket numbers of a sealed `random` block (never handed out).
    hole: Option<(u64, u64)>,
    perm_key: [u8; 16],
    tokens: f64,
    last_ms: Option<u64>,
    passes: ExpiryMap<PassUse>,
    reservations: ExpiryMap<()>,
    revoked: ExpiryMap<()>,
    blocks: Vec<(u64, u64)>,
    granted: WindowBits,
    redeemed: WindowBits,
    rate: RateWindow,
    /// The rate visitors are told about (smoothed), per second; 0 before any.
    shown_rate: f64,
    /// A rate measured before a restart, used until the window has its own.
    prior_rate: Option<f64>,
    /// Places admitted since the start.
    pub admitted_total: u64,
    /// Places skipped because nobody was there (abandoned or never issued).
    pub skipped_total: u64,
    /// Tickets handed out.
    pub issued_total: u64,
    /// When the line is shared by several instances: this instance's mirror of it.
    shared: mirror::Shared,
}

/// Bytes one entry of a pass, reservation or revocation map costs, about (hash slot,
/// ordered-set node, the record): for the memory figure.
const ENTRY_BYTES: usize = 96;

impl Line {
    /// An empty line. `perm_key` seeds the shuffles (random per room in production).
    pub fn new(settings: LineSettings, perm_key: [u8; 16]) -> Self {
        Line {
            prequeue: if settings.opens_at_ms.is_none() {
                Some((0, 0))
            } else {
                None
            },
            settings,
            paused: false,
            next_ticket: 1,
            next_secondary: 1,
            admitted: 0,
            prequeue_prefixes: HashSet::new(),
            hole: None,
            perm_key,
            // The first visitor to an empty room walks straight in.
            tokens: 1.0,
            last_ms: None,
            passes: ExpiryMap::new(MAX_TRACKED_PASSES),
            reservations: ExpiryMap::new(MAX_TRACKED_PASSES),
            revoked: ExpiryMap::new(MAX_REVOKED),
            blocks: vec![(u64::MAX, 0); BLOCK_SLOTS],
            granted: WindowBits::new(),
            redeemed: WindowBits::new(),
            rate: RateWindow::new(),
            shown_rate: 0.0,
            prior_rate: None,
            admitted_total: 0,
            skipped_total: 0,
            issued_total: 0,
            shared: mirror::Shared::default(),
        }
    }

    /// Bytes of state: fixed whatever the number of waiting visitors, plus one entry
    /// per shopper inside (and per revoked pass).
    pub fn state_bytes(&self) -> usize {
        std::mem::size_of::<Self>()
            + self.blocks.capacity() * std::mem::size_of::<(u64, u64)>()
            + 2 * (ADMITTED_WINDOW / 8) as usize
            + RATE_BUCKETS * std::mem::size_of::<(u64, u64, u64)>()
            + (self.passes.len() + self.reservations.len() + self.revoked.len()) * ENTRY_BYTES
            + self.prequeue_prefixes.capacity() * 16
    }

    fn rate_per_ms(&self) -> f64 {
        self.settings.new_users_per_minute as f64 / 60_000.0
    }

    /// Live passes plus admitted-but-unclaimed places (across instances, for a
    /// mirrored shared line).
    pub fn active(&self) -> u64 {
        match self.shared.active {
            Some(a) => a,
            None => (self.passes.len() + self.reservations.len()) as u64,
        }
    }

    /// Live passes only.
    pub fn passes(&self) -> u64 {
        self.passes.len() as u64
    }

    /// Revoked passes remembered.
    pub fn revoked(&self) -> u64 {
        self.revoked.len() as u64
    }

    /// Places issued and not yet reached by the front.
    pub fn waiting(&self) -> u64 {
        let issued = match self.prequeue {
            Some((p, s)) => p + s + (self.next_ticket - 1 - p),
            None => self.next_ticket - 1 + self.next_secondary - 1,
        };
        let holes = self.hole.map_or(0, |(a, b)| {
            let end = self.position_of_block_end(a);
            if end > self.admitted {
                b - a + 1
            } else {
                0
            }
        });
        issued.saturating_sub(self.admitted).saturating_sub(holes)
    }

    fn position_of_block_end(&self, t: u64) -> u64 {
        let (p, s) = self.prequeue.unwrap_or((0, 0));
        p + s + (t - p - 1) / BLOCK * BLOCK + BLOCK
    }

    /// Whether the line is open (pre-queue drawn).
    pub fn is_open(&self) -> bool {
        self.prequeue.is_some()
    }

    /// The admission rate achieved over the last minutes while people waited, per
    /// second (a rate from before a restart until there is one; 0 before any).
    pub fn measured_rate(&self) -> f64 {
        self.rate
            .rate(self.last_ms.unwrap_or(0))
            .or(self.prior_rate)
            .unwrap_or(0.0)
    }

    /// The rate predictions aim at: the achieved one, never above the configured one
    /// (which stands in until enough was seen).
    fn target_rate(&self) -> f64 {
        let configured = self.settings.new_users_per_minute as f64 / 60.0;
        self.rate
            .rate(self.last_ms.unwrap_or(0))
            .or(self.prior_rate)
            .map_or(configured, |r| r.min(configured))
    }

    /// The smoothed rate waits are computed from, per second.
    pub fn predicting_rate(&self) -> f64 {
        if self.shown_rate > 0.0 {
            self.shown_rate
        } else {
            self.target_rate()
        }
    }

    /// Seconds a visitor with `ahead` places before them may expect to wait: (low,
    /// high); `None` when nothing is being admitted at all.
    pub fn expected_wait(&self, ahead: u64) -> Option<(u64, u64)> {
        let r = self.predicting_rate();
        if r < 1e-6 {
            return None;
        }
        let mid = (ahead as f64 + 1.0) / r;
        Some(((mid * 0.8).floor() as u64, (mid * 1.25).ceil() as u64))
    }

    /// Hands out the next ticket. Before opening, a client prefix already holding a
    /// pre-queue ticket gets a secondary one (drawn after every first ticket).
    pub fn issue(&mut self, now: Now, prefix: Option<u64>) -> Issued {
        let front = self.admitted;
        self.issued_total += 1;
        if self.prequeue.is_none() {
            if let Some(pfx) = prefix {
                if self.prequeue_prefixes.contains(&pfx) {
                    let ticket = SECONDARY_BASE + self.next_secondary;
                    self.next_secondary += 1;
                    return Issued { ticket, front };
                }
                if self.prequeue_prefixes.len() < MAX_PREQUEUE_PREFIXES {
                    self.prequeue_prefixes.insert(pfx);
                }
            }
        }
        let ticket = self.shared.outage_number(self.next_ticket);
        self.next_ticket = ticket + 1;
        // Taking a number is a sign of presence: a fresh ticket is never skipped as
        // abandoned before its holder had a chance to poll.
        self.polled(ticket, now);
        Issued { ticket, front }
    }

    /// Records that the holder of ticket `t` asked at `now` (keeps its block alive).
    pub fn polled(&mut self, t: u64, now: Now) {
        if let Some(p) = self.position_of(t) {
            self.touch_block(p, now.mono_ms);
            self.shared.polled((p - 1) / BLOCK);
        }
    }

    fn touch_block(&mut self, p: u64, mono_ms: u64) {
        let b = (p - 1) / BLOCK;
        let slot = &mut self.blocks[(b % BLOCK_SLOTS as u64) as usize];
        if slot.0 == b {
            slot.1 = slot.1.max(mono_ms);
        } else if slot.0 == u64::MAX || slot.0 < b {
            // A newer block takes the slot; the older one is forgotten (counts alive).
            *slot = (b, mono_ms);
        }
    }

    fn block_abandoned(&self, p: u64, mono_ms: u64) -> bool {
        let b = (p - 1) / BLOCK;
        let (id, last) = self.blocks[(b % BLOCK_SLOTS as u64) as usize];
        id == b && mono_ms.saturating_sub(last) >= self.settings.abandon_after_ms
    }

    /// Marks the blocks of every place ahead of the front as polled now (at opening,
    /// and after a restart): nobody is taken for gone before they could ask.
    fn touch_blocks_ahead(&mut self, mono_ms: u64) {
        let last = self.last_position();
        let mut p = self.admitted + 1;
        let mut n = 0;
        while p <= last && n < BLOCK_SLOTS {
            self.touch_block(p, mono_ms);
            p = ((p - 1) / BLOCK + 1) * BLOCK + 1;
            n += 1;
        }
    }

    /// Where ticket `t` stands.
    pub fn standing(&self, t: u64) -> Standing {
        if self.prequeue.is_none() {
            let secondary = t > SECONDARY_BASE && t - SECONDARY_BASE < self.next_secondary;
            return if (t >= 1 && t < self.next_ticket) || secondary {
                Standing::PreQueue
            } else {
                Standing::Unknown
            };
        }
        let Some(p) = self.position_of(t) else {
            return Standing::Unknown;
        };
        if p > self.admitted {
            return Standing::Waiting {
                ahead: p - self.admitted - 1,
            };
        }
        if self.admitted - p >= ADMITTED_WINDOW || !self.granted.get(p) {
            Standing::Lost
        } else if self.redeemed.get(p) {
            Standing::Redeemed
        } else {
            Standing::Admitted
        }
    }

    /// People ahead of ticket `t` when it was issued with the front at `front`.
    pub fn ahead_at_arrival(&self, t: u64, front: u64) -> Option<u64> {
        self.position_of(t).map(|p| p.saturating_sub(front + 1))
    }

    /// Exchanges an admitted ticket for the right to a pass, once: its reservation
    /// becomes the pass's place, or (back after the reservation lapsed) a free place.
    pub fn claim(&mut self, t: u64) -> Result<(), ClaimRefused> {
        let s = self.standing(t);
        if s != Standing::Admitted {
            return Err(ClaimRefused::NotAdmitted(s));
        }
        let p = self.position_of(t).expect("an admitted ticket has a place");
        if self.reservations.remove(p).is_none() && self.active() >= self.settings.active_users {
            return Err(ClaimRefused::Full);
        }
        self.redeemed.set(p, true);
        self.shared.claimed(p);
        Ok(())
    }

    /// Whether anyone is waiting for a place (the line is not empty).
    pub fn anyone_waiting(&self) -> bool {
        !self.is_open() || self.admitted < self.last_position()
    }

    /// A new pass `id`, counted until `expires_mono`.
    pub fn pass_started(&mut self, id: u64, expires_mono: u64) {
        self.passes.insert(id, expires_mono, PassUse::default());
    }

    /// A request carrying pass `id` (valid until `expires_mono` by its cookie) from
    /// client `prefix`: refused if revoked; counted once (a pass from before a restart
    /// registers again); revoked past a sharing limit.
    pub fn check_pass(
        &mut self,
        id: u64,
        expires_mono: u64,
        now: Now,
        prefix: Option<u64>,
    ) -> PassCheck {
        if self.revoked.contains(id) {
            return PassCheck::Revoked;
        }
        if !self.passes.contains(id) {
            self.passes.insert(id, expires_mono, PassUse::default());
        }
        let (rps, ppm) = (
            self.settings.pass_requests_per_second,
            self.settings.pass_prefixes_per_minute,
        );
        let Some((_, u)) = self.passes.entries.get_mut(&id) else {
            return PassCheck::Valid;
        };
        let mut crossed = None;
        if rps > 0 {
            let s = now.mono_ms / 1000;
            if u.second != s {
                (u.second, u.requests) = (s, 0);
            }
            u.requests += 1;
            if u.requests > rps {
                crossed = Some(SharingLimit::RequestRate);
            }
        }
        if let (true, Some(pf)) = (ppm > 0, prefix) {
            let m = now.mono_ms / 60_000;
            if u.minute != m {
                u.minute = m;
                u.prefixes.clear();
            }
            if !u.prefixes.contains(&pf) {
                u.prefixes.push(pf);
            }
            if u.prefixes.len() > ppm as usize {
                crossed = Some(SharingLimit::Prefixes);
            }
        }
        match crossed {
            Some(c) => {
                self.revoke(id, now);
                PassCheck::Shared(c)
            }
            None => PassCheck::Valid,
        }
    }

    /// Pass `id` now lasts until `expires_mono` (renewal or origin extension); never
    /// shortens it.
    pub fn pass_extended(&mut self, id: u64, expires_mono: u64) {
        if let Some(old) = self.passes.expiry(id) {
            self.passes.set_expiry(id, old.max(expires_mono));
        }
    }

    /// Ends pass `id` for good: its place is freed and every copy of it refused until
    /// the last one would have expired.
    pub fn revoke(&mut self, id: u64, now: Now) {
        let until = self
            .passes
            .remove(id)
            .map_or(0, |e| e.0)
            .max(now.mono_ms + self.settings.session_ms);
        if self.revoked.len() >= MAX_REVOKED && !self.revoked.contains(id) {
            self.revoked.evict_first();
        }
        self.revoked.insert(id, until, ());
    }

    /// Advances the clock: expires passes and reservations, draws the pre-queue at
    /// opening, and admits places at the configured rate while there is room.
    /// Returns the number of places admitted.
    pub fn advance(&mut self, now: Now) -> u64 {
        self.passes.expire(now.mono_ms);
        self.reservations.expire(now.mono_ms);
        self.revoked.expire(now.mono_ms);
        let dt = self.last_ms.map_or(0, |l| now.mono_ms.saturating_sub(l));
        self.last_ms = Some(self.last_ms.map_or(now.mono_ms, |l| l.max(now.mono_ms)));
        if self.prequeue.is_none() {
            if self.settings.opens_at_ms.is_some_and(|o| now.wall_ms < o) {
                return 0;
            }
            self.open(now);
        }
        let busy = !self.paused && self.anyone_waiting();
        let admitted_now = if self.paused { 0 } else { self.admit(now, dt) };
        self.admitted_total += admitted_now;
        self.observe_rate(now, dt, admitted_now, busy);
        admitted_now
    }

    /// Records `admitted` places over the last `dt` ms in the measured rate, and moves
    /// the rate shown to visitors toward the target.
    fn observe_rate(&mut self, now: Now, dt: u64, admitted: u64, busy: bool) {
        self.rate
            .record(now.mono_ms, admitted, if busy { dt } else { 0 });
        let target = self.target_rate();
        if self.shown_rate <= 0.0 {
            self.shown_rate = target;
        } else if dt > 0 {
            let alpha = 1.0 - (-(dt as f64) / DISPLAY_TAU_MS).exp();
            self.shown_rate += alpha * (target - self.shown_rate);
        }
    }

    /// Opening: freezes the pre-queue (its order is drawn from the room's key).
    fn open(&mut self, now: Now) {
        self.prequeue = Some((self.next_ticket - 1, self.next_secondary - 1));
        self.prequeue_prefixes = HashSet::new();
        self.touch_blocks_ahead(now.mono_ms);
    }

    /// Moves the front: skips places nobody holds any more, admits the next present
    /// ones while the rate's budget and the room allow.
    fn admit(&mut self, now: Now, dt: u64) -> u64 {
        // A token bucket holding at most one tick's worth (or one place), so a crowd
        // arriving after a quiet spell is let in at the rate, not in a burst.
        let rate = self.rate_per_ms() / self.shared.share() as f64;
        let active_users = (self.settings.active_users / self.shared.share()).max(1);
        let cap = (rate * 100.0).max(1.0);
        self.tokens = (self.tokens + rate * dt as f64).min(cap);
        let mut admitted_now = 0;
        let mut steps = 0;
        while steps < MAX_STEPS_PER_ADVANCE && self.admitted < self.last_position() {
            steps += 1;
            let p = self.admitted + 1;
            let t = self.ticket_of(p);
            let budget = self.tokens >= 1.0 && self.active() < active_users;
            if !self.is_issued(t) {
                if t >= self.next_ticket {
                    // Unissued in the last, partial `random` block: with budget, seal
                    // the block so later arrivals never land behind the front.
                    if !budget {
                        break;
                    }
                    self.seal_block();
                }
                self.pass_place(p, false);
                self.skipped_total += 1;
                continue;
            }
            if self.block_abandoned(p, now.mono_ms) {
                self.pass_place(p, false);
                self.skipped_total += 1;
                continue;
            }
            if !budget {
                break;
            }
            self.pass_place(p, true);
            self.tokens -= 1.0;
            admitted_now += 1;
            self.reservations
                .insert(p, now.mono_ms + self.settings.abandon_after_ms, ());
        }
        admitted_now
    }

    fn pass_place(&mut self, p: u64, granted: bool) {
        self.admitted = p;
        self.granted.set(p, granted);
        self.redeemed.set(p, false);
    }

    fn seal_block(&mut self) {
        let (pn, _) = self.prequeue.unwrap_or((0, 0));
        let end = pn + (self.next_ticket - 1 - pn).div_ceil(BLOCK) * BLOCK;
        if end >= self.next_ticket {
            self.hole = Some((self.next_ticket, end));
            self.next_ticket = end + 1;
        }
    }

    fn is_issued(&self, t: u64) -> bool {
        if t > SECONDARY_BASE {
            return self.prequeue.is_some_and(|(_, s)| t - SECONDARY_BASE <= s);
        }
        t >= 1
            && t < self.next_ticket
            && !self.hole.is_some_and(|(a, b)| (a..=b).contains(&t))
            && self.shared.own_number(t)
    }

    /// The last position that may hold an issued ticket: the last ticket's, or in
    /// `random` mode the end of its (shuffled) block.
    fn last_position(&self) -> u64 {
        let Some((pn, sn)) = self.prequeue else {
            return 0;
        };
        let after = self.next_ticket - 1 - pn;
        if self.settings.mode == Mode::Random {
            pn + sn + after.div_ceil(BLOCK) * BLOCK
        } else {
            pn + sn + after
        }
    }

    /// The position (1-based place in admission order) of ticket `t`; `None` before
    /// the pre-queue is drawn, and for numbers this line never issued.
    pub fn position_of(&self, t: u64) -> Option<u64> {
        let (pn, sn) = self.prequeue?;
        if t > SECONDARY_BASE {
            let k = t - SECONDARY_BASE;
            return (k <= sn)
                .then(|| pn + permute(&self.perm_key, SECONDARY_DOMAIN, sn, k - 1) + 1);
        }
        if t == 0 || t >= self.next_ticket {
            return None;
        }
        if t <= pn {
            return Some(permute(&self.perm_key, 0, pn, t - 1) + 1);
        }
        let u = t - pn - 1;
        if self.settings.mode == Mode::Random {
            let (blk, i) = (u / BLOCK, u % BLOCK);
            return Some(pn + sn + blk * BLOCK + permute(&self.perm_key, blk + 1, BLOCK, i) + 1);
        }
        Some(pn + sn + u + 1)
    }

    /// The ticket at position `p` (inverse of [`Line::position_of`]).
    pub fn ticket_of(&self, p: u64) -> u64 {
        let (pn, sn) = self.prequeue.unwrap_or((0, 0));
        if p <= pn {
            return unpermute(&self.perm_key, 0, pn, p - 1) + 1;
        }
        if p <= pn + sn {
            return SECONDARY_BASE
                + unpermute(&self.perm_key, SECONDARY_DOMAIN, sn, p - pn - 1)
                + 1;
        }
        let u = p - pn - sn - 1;
        if self.settings.mode == Mode::Random {
            let (blk, i) = (u / BLOCK, u % BLOCK);
            return pn + blk * BLOCK + unpermute(&self.perm_key, blk + 1, BLOCK, i) + 1;
        }
        pn + u + 1
    }

    /// What survives a restart, with lifetimes made relative to `now`.
    pub fn snapshot(&self, now: Now) -> Snapshot {
        let rel = |m: &dyn Fn() -> Vec<(u64, u64)>| -> Vec<(u64, u64)> {
            m().into_iter()
                .map(|(k, e)| (k, e.saturating_sub(now.mono_ms)))
                .filter(|&(_, r)| r > 0)
                .collect()
        };
        let from = (self.admitted + 64).saturating_sub(ADMITTED_WINDOW).max(1);
        let (granted, redeemed) = if self.admitted == 0 {
            (String::new(), String::new())
        } else {
            (
                self.granted.export(from, self.admitted),
                self.redeemed.export(from, self.admitted),
            )
        };
        Snapshot {
            version: SNAPSHOT_VERSION,
            saved_wall_ms: now.wall_ms,
            perm_key: self.perm_key.iter().map(|b| format!("{b:02x}")).collect(),
            next_ticket: self.next_ticket,
            next_secondary: self.next_secondary,
            admitted: self.admitted,
            prequeue: self.prequeue,
            hole: self.hole,
            paused: self.paused,
            passes: rel(&|| self.passes.iter().collect()),
            reservations: rel(&|| self.reservations.iter().collect()),
            revoked: rel(&|| self.revoked.iter().collect()),
            window_from: from,
            granted,
            redeemed,
            rate_per_second: self
                .rate
                .rate(self.last_ms.unwrap_or(0))
                .or(self.prior_rate),
            shown_rate: self.shown_rate,
            admitted_total: self.admitted_total,
            skipped_total: self.skipped_total,
            issued_total: self.issued_total,
        }
    }

    /// A line from a snapshot taken by a previous process, at `now` (the time since
    /// the snapshot is taken off every lifetime).
    pub fn restore(settings: LineSettings, s: &Snapshot, now: Now) -> Result<Line, String> {
        if s.version != SNAPSHOT_VERSION {
            return Err(format!(
                "state file version {} (this build reads {SNAPSHOT_VERSION})",
                s.version
            ));
        }
        let mut key = [0u8; 16];
        if s.perm_key.len() != 32 {
            return Err("perm_key: expected 32 hex digits".into());
        }
        for (i, k) in key.iter_mut().enumerate() {
            *k = u8::from_str_radix(&s.perm_key[2 * i..2 * i + 2], 16)
                .map_err(|e| format!("perm_key: {e}"))?;
        }
        if s.next_ticket == 0 || s.next_secondary == 0 {
            return Err("ticket counters start at 1".into());
        }
        let mut line = Line::new(settings, key);
        line.next_ticket = s.next_ticket;
        line.next_secondary = s.next_secondary;
        line.admitted = s.admitted;
        line.prequeue = s.prequeue;
        line.hole = s.hole;
        line.paused = s.paused;
        // No free walk-in after a restart: the budget starts empty.
        line.tokens = 0.0;
        let gone = now.wall_ms.saturating_sub(s.saved_wall_ms);
        for (list, map) in [
            (&s.passes, &mut line.passes as &mut dyn Restorable),
            (&s.reservations, &mut line.reservations),
            (&s.revoked, &mut line.revoked),
        ] {
            for &(k, rem) in list {
                if rem > gone {
                    map.put(k, now.mono_ms + rem - gone);
                }
            }
        }
        if s.admitted > 0 {
            line.granted.import(s.window_from, &s.granted)?;
            line.redeemed.import(s.window_from, &s.redeemed)?;
        }
        line.prior_rate = s.rate_per_second;
        line.shown_rate = s.shown_rate;
        line.admitted_total = s.admitted_total;
        line.skipped_total = s.skipped_total;
        line.issued_total = s.issued_total;
        line.touch_blocks_ahead(now.mono_ms);
        Ok(line)
    }
}

mod mirror;

/// Version of the state file layout.
pub const SNAPSHOT_VERSION: u32 = 1;

/// The line's counters as written to the state file (JSON).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Snapshot {
    /// Layout version.
    pub version: u32,
    /// When it was written, unix ms.
    pub saved_wall_ms: u64,
    /// Shuffle key, hex.
    pub perm_key: String,
    /// Next ticket number.
    pub next_ticket: u64,
    /// Next secondary pre-queue number.
    pub next_secondary: u64,
    /// The front.
    pub admitted: u64,
    /// Pre-queue sizes, once drawn.
    pub prequeue: Option<(u64, u64)>,
    /// Unissued numbers of a sealed `random` block.
    pub hole: Option<(u64, u64)>,
    /// Paused by an operator.
    pub paused: bool,
    /// Pass ids and milliseconds left.
    pub passes: Vec<(u64, u64)>,
    /// Unclaimed admitted places and milliseconds left.
    pub reservations: Vec<(u64, u64)>,
    /// Revoked pass ids and milliseconds left.
    pub revoked: Vec<(u64, u64)>,
    /// First position of the bitmaps below.
    pub window_from: u64,
    /// Granted places, base64 words.
    pub granted: String,
    /// Redeemed places, base64 words.
    pub redeemed: String,
    /// Measured admission rate, per second.
    pub rate_per_second: Option<f64>,
    /// Rate shown to visitors, per second.
    pub shown_rate: f64,
    /// Places admitted since the start.
    pub admitted_total: u64,
    /// Places skipped.
    pub skipped_total: u64,
    /// Tickets issued.
    pub issued_total: u64,
}

trait Restorable {
    fn put(&mut self, k: u64, expires: u64);
}

impl<V: Default> Restorable for ExpiryMap<V> {
    fn put(&mut self, k: u64, expires: u64) {
        self.insert(k, expires, V::default());
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
            pass_requests_per_second: 0,
            pass_prefixes_per_minute: 0,
        }
    }

    /// Both clocks at `ms` (the wall one far from zero, like a real one).
    fn at(ms: u64) -> Now {
        Now {
            mono_ms: ms,
            wall_ms: 1_700_000_000_000 + ms,
        }
    }

    fn issue(line: &mut Line, ms: u64) -> u64 {
        line.issue(at(ms), None).ticket
    }

    /// Claims ticket `t` and starts pass `t` (ids = ticket numbers, for reading ease).
    fn enter(line: &mut Line, t: u64, ms: u64) -> bool {
        if line.claim(t).is_err() {
            return false;
        }
        line.pass_started(t, ms + line.settings.session_ms);
        true
    }

    #[test]
    fn thousands_of_visitors_are_admitted_in_ticket_order_at_the_configured_rate() {
        // 6000/min = 100/s; 3000 visitors; room big enough that only the rate binds.
        let mut line = Line::new(settings(1_000_000, 6000), [1; 16]);
        let t0 = 1_000_000;
        let tickets: Vec<u64> = (0..3000).map(|_| issue(&mut line, t0)).collect();
        assert!(tickets.windows(2).all(|w| w[1] == w[0] + 1));
        line.advance(at(t0));
        let mut order = Vec::new();
        let mut admitted_at = Vec::new();
        let mut now = t0;
        while order.len() < tickets.len() {
            now += 10;
            for &t in &tickets[order.len()..] {
                line.polled(t, at(now));
            }
            line.advance(at(now));
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
        let ts: Vec<u64> = (0..10).map(|_| issue(&mut l2, 0)).collect();
        assert_eq!(l2.standing(ts[9]), Standing::Waiting { ahead: 9 });
    }

    #[test]
    fn admission_stops_when_the_room_is_full_and_resumes_when_passes_expire() {
        let mut line = Line::new(settings(2, 60_000), [1; 16]);
        for _ in 0..5 {
            issue(&mut line, 0);
        }
        line.advance(at(0));
        line.advance(at(1000));
        assert_eq!(line.admitted_total, 2, "only two places");
        // The two claim their passes (session 60 s: until 61 s).
        assert!(enter(&mut line, 1, 1000));
        assert!(enter(&mut line, 2, 1000));
        line.advance(at(30_000));
        assert_eq!(line.admitted_total, 2);
        assert_eq!(line.standing(3), Standing::Waiting { ahead: 0 });
        // One shopper renews; the other leaves and their pass expires.
        line.pass_extended(1, 120_000);
        line.polled(3, at(62_000));
        line.advance(at(62_000));
        assert_eq!(line.admitted_total, 3);
        assert_eq!(line.standing(3), Standing::Admitted);
        assert_eq!(line.active(), 2);
    }

    #[test]
    fn a_ticket_is_exchanged_for_a_pass_once() {
        let mut line = Line::new(settings(10, 60_000), [1; 16]);
        let t = issue(&mut line, 0);
        line.advance(at(0));
        assert_eq!(line.standing(t), Standing::Admitted);
        assert!(enter(&mut line, t, 0));
        assert_eq!(line.standing(t), Standing::Redeemed);
        for _ in 0..6 {
            assert_eq!(
                line.claim(t),
                Err(ClaimRefused::NotAdmitted(Standing::Redeemed))
            );
        }
        assert_eq!(line.active(), 1);
    }

    #[test]
    fn renewals_and_replays_of_one_pass_count_it_once_and_revocation_ends_every_copy() {
        let mut line = Line::new(settings(10, 60_000), [1; 16]);
        line.pass_started(77, 60_000);
        for i in 0..5 {
            // Parallel renewals with the same old cookie, and a replay.
            assert_eq!(
                line.check_pass(77, 60_000, at(i * 100), None),
                PassCheck::Valid
            );
            line.pass_extended(77, 60_000 + i * 100);
        }
        assert_eq!(line.active(), 1);
        // A pass from before a restart registers once.
        for _ in 0..3 {
            line.check_pass(88, 50_000, at(1000), None);
        }
        assert_eq!(line.active(), 2);
        line.revoke(77, at(2000));
        assert_eq!(line.active(), 1);
        assert_eq!(
            line.check_pass(77, 60_000, at(3000), None),
            PassCheck::Revoked
        );
        assert_eq!(line.active(), 1, "a revoked copy does not register again");
        // The revocation outlives the longest copy, then is forgotten.
        line.advance(at(61_000));
        assert_eq!(line.revoked(), 1);
        line.advance(at(62_500));
        assert_eq!(line.revoked(), 0);
    }

    #[test]
    fn a_pass_past_a_sharing_limit_is_revoked() {
        let mut s = settings(10, 60_000);
        s.pass_requests_per_second = 3;
        s.pass_prefixes_per_minute = 2;
        let mut line = Line::new(s, [1; 16]);
        line.pass_started(1, 60_000);
        for _ in 0..3 {
            assert_eq!(
                line.check_pass(1, 60_000, at(500), Some(9)),
                PassCheck::Valid
            );
        }
        assert_eq!(
            line.check_pass(1, 60_000, at(900), Some(9)),
            PassCheck::Shared(SharingLimit::RequestRate)
        );
        assert_eq!(
            line.check_pass(1, 60_000, at(5000), Some(9)),
            PassCheck::Revoked
        );
        line.pass_started(2, 60_000);
        assert_eq!(
            line.check_pass(2, 60_000, at(1000), Some(1)),
            PassCheck::Valid
        );
        assert_eq!(
            line.check_pass(2, 60_000, at(2000), Some(2)),
            PassCheck::Valid
        );
        assert_eq!(
            line.check_pass(2, 60_000, at(3000), Some(1)),
            PassCheck::Valid
        );
        assert_eq!(
            line.check_pass(2, 60_000, at(4000), Some(3)),
            PassCheck::Shared(SharingLimit::Prefixes)
        );
        assert_eq!(line.active(), 0);
    }

    #[test]
    fn skipping_an_abandoned_block_never_lets_anyone_in_past_the_limit() {
        // The issue's reproduction: active_users 2, 6 per minute, 6 visitors, nobody
        // polls for 75 s, then 6 more arrive.
        let mut s = settings(2, 6);
        s.abandon_after_ms = 60_000;
        let mut line = Line::new(s, [1; 16]);
        let first: Vec<u64> = (0..6).map(|_| issue(&mut line, 0)).collect();
        line.advance(at(0));
        assert!(enter(&mut line, first[0], 0), "the first walks in");
        for ms in (50..=75_000).step_by(50) {
            line.advance(at(ms));
        }
        let later: Vec<u64> = (0..6).map(|_| issue(&mut line, 75_000)).collect();
        let mut entered = 0;
        for ms in (75_050..=80_000).step_by(50) {
            for &t in later.iter().chain(&first) {
                line.polled(t, at(ms));
                if line.standing(t) == Standing::Admitted && enter(&mut line, t, ms) {
                    entered += 1;
                }
            }
            line.advance(at(ms));
            assert!(line.active() <= 2, "active {} at {ms}", line.active());
        }
        // Nobody of the skipped block gets in, and the later visitors wait their turn
        // (6 per minute: at most one in these 5 s, the budget allowing).
        // (Ticket 2 had its turn at 10 s, before the block went silent: it may still
        // claim it while there is room.)
        for &t in &first[2..] {
            assert_eq!(line.standing(t), Standing::Lost, "{t}");
        }
        assert!(entered <= 2, "{entered} entered at once");
        for &t in &later[1..] {
            assert!(matches!(line.standing(t), Standing::Waiting { .. }), "{t}");
        }
    }

    #[test]
    fn an_unclaimed_admission_frees_its_place_after_abandon_after_and_a_late_claim_needs_room() {
        let mut s = settings(1, 60_000);
        s.abandon_after_ms = 5_000;
        let mut line = Line::new(s, [1; 16]);
        issue(&mut line, 0);
        issue(&mut line, 0);
        line.advance(at(0));
        line.advance(at(100));
        assert_eq!(line.admitted_total, 1);
        line.polled(2, at(4_000));
        line.advance(at(4_000));
        assert_eq!(line.standing(2), Standing::Waiting { ahead: 0 });
        line.polled(2, at(5_300));
        line.advance(at(5_300));
        assert_eq!(line.standing(2), Standing::Admitted);
        // Ticket 1 comes back late: its place went to ticket 2 (reserved), no room.
        assert_eq!(line.claim(1), Err(ClaimRefused::Full));
        assert!(enter(&mut line, 2, 5_400));
        assert_eq!(line.active(), 1);
    }

    #[test]
    fn blocks_nobody_polled_are_skipped_and_the_line_moves_for_those_still_there() {
        let mut s = settings(1_000_000, 60); // one per second
        s.abandon_after_ms = 10_000;
        let mut line = Line::new(s, [1; 16]);
        for _ in 0..(BLOCK * 5) {
            issue(&mut line, 0);
        }
        let me = issue(&mut line, 0); // first ticket of block 5
        line.advance(at(0));
        line.polled(me, at(11_000));
        line.advance(at(11_000));
        // Ticket 1 walked in at t=0 (its block was fresh); the other 319 ahead were
        // gone and were skipped instead of taking 319 s.
        assert_eq!(line.standing(me), Standing::Admitted);
        assert_eq!(line.skipped_total, BLOCK * 5 - 1);
        assert_eq!(line.admitted_total, 2);
        assert_eq!(line.standing(2), Standing::Lost, "a skipped place is void");
    }

    #[test]
    fn pause_stops_admissions_and_resume_restarts_them() {
        let mut line = Line::new(settings(100, 60_000), [1; 16]);
        for _ in 0..10 {
            issue(&mut line, 0);
        }
        line.paused = true;
        line.advance(at(0));
        line.advance(at(1000));
        assert_eq!(line.admitted_total, 0);
        line.paused = false;
        line.advance(at(1100));
        assert!(line.admitted_total > 0);
    }

    #[test]
    fn a_backward_wall_clock_step_does_not_freeze_admissions() {
        let mut line = Line::new(settings(100, 600), [1; 16]);
        let ts: Vec<u64> = (0..20).map(|_| issue(&mut line, 0)).collect();
        line.advance(at(0));
        let before = line.admitted_total;
        // Wall time jumps an hour back; the monotonic clock goes on.
        for ms in (100..=2000).step_by(100) {
            line.advance(Now {
                mono_ms: ms,
                wall_ms: 1_700_000_000_000 - 3_600_000 + ms,
            });
        }
        assert!(
            line.admitted_total >= before + 15,
            "{}",
            line.admitted_total
        );
        assert_eq!(line.standing(ts[10]), Standing::Admitted);
    }

    #[test]
    fn the_expected_wait_uses_the_achieved_rate_never_above_the_configured_one_and_is_smooth() {
        // 6 per minute configured; place 5 waits about 50 s, never "6 to 10 seconds".
        let mut line = Line::new(settings(1_000_000, 6), [1; 16]);
        for _ in 0..50 {
            issue(&mut line, 0);
        }
        line.advance(at(0));
        let (low, high) = line.expected_wait(4).unwrap();
        assert!(low >= 40 && high <= 63, "{low}..{high}");
        // A room full of shoppers: admissions only as passes end, far below the
        // configured rate; the prediction follows the achieved one, without 10× swings.
        let mut full = Line::new(settings(2, 600), [1; 16]);
        for _ in 0..200 {
            issue(&mut full, 0);
        }
        let mut shown = Vec::new();
        let mut now = 0;
        while now < 600_000 {
            now += 50;
            for t in 1..=200 {
                full.polled(t, at(now));
            }
            full.advance(at(now));
            for t in 1..=200 {
                if full.standing(t) == Standing::Admitted {
                    full.claim(t).unwrap();
                    // Passes last 30 s: 4 admissions a minute, not 600.
                    full.pass_started(t, now + 30_000);
                }
            }
            if now % 10_000 == 0 {
                shown.push(full.expected_wait(10).unwrap().1);
            }
        }
        let achieved = full.measured_rate();
        assert!((achieved - 4.0 / 60.0).abs() < 0.02, "{achieved}");
        let last = *shown.last().unwrap();
        assert!(
            (120..=250).contains(&last),
            "{last} s for 11 places at 4/min"
        );
        for w in shown.windows(2).skip(3) {
            let ratio = w[1].max(w[0]) as f64 / w[1].min(w[0]).max(1) as f64;
            assert!(ratio < 2.0, "swing {w:?} in {shown:?}");
        }
    }

    #[test]
    fn the_pre_queue_is_drawn_at_opening_and_later_arrivals_follow_it() {
        let mut s = settings(1_000_000, 600_000);
        s.opens_at_ms = Some(at(10_000).wall_ms);
        let mut line = Line::new(s, [7; 16]);
        let early: Vec<u64> = (0..100).map(|_| issue(&mut line, 0)).collect();
        line.advance(at(5_000));
        assert_eq!(line.standing(early[0]), Standing::PreQueue);
        assert_eq!(line.admitted_total, 0);
        line.paused = true;
        line.advance(at(10_000));
        let late = issue(&mut line, 10_000);
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
    fn the_pre_queue_gives_one_draw_per_client_prefix() {
        let mut s = settings(1_000_000, 600_000);
        s.opens_at_ms = Some(at(10_000).wall_ms);
        let mut line = Line::new(s, [7; 16]);
        let mut hoard = Vec::new();
        let mut honest = Vec::new();
        for i in 0..50u64 {
            honest.push(line.issue(at(0), Some(1000 + i)).ticket);
            hoard.push(line.issue(at(0), Some(1)).ticket);
        }
        line.paused = true;
        line.advance(at(10_000));
        let pos = |t: &u64| line.position_of(*t).unwrap();
        let first = hoard.iter().map(pos).min().unwrap();
        assert!(first <= 51);
        // 49 extra tickets are not 49 extra draws: they all come after every first one.
        let extras: Vec<u64> = hoard.iter().map(pos).filter(|&p| p != first).collect();
        assert_eq!(extras.len(), 49);
        assert!(extras.iter().all(|&p| p > 51), "{extras:?}");
        let mut all: Vec<u64> = hoard.iter().chain(&honest).map(pos).collect();
        all.sort();
        assert_eq!(all, (1..=100).collect::<Vec<_>>());
        for p in 1..=100 {
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
    fn random_mode_shuffles_within_blocks_admits_everyone_and_seals_a_partial_block() {
        let mut s = settings(1_000_000, 6_000_000);
        s.mode = Mode::Random;
        let mut line = Line::new(s, [3; 16]);
        let ts: Vec<u64> = (0..200).map(|_| issue(&mut line, 0)).collect();
        line.advance(at(0));
        let pos: Vec<u64> = ts.iter().map(|&t| line.position_of(t).unwrap()).collect();
        assert_ne!(pos, ts);
        for i in 1..=100 {
            line.advance(at(i * 100));
        }
        assert!(ts.iter().all(|&t| line.standing(t) == Standing::Admitted));
        // The partial last block was sealed: a newcomer waits for their own turn.
        let late = issue(&mut line, 10_001);
        assert!(late > 256, "{late}");
        assert!(matches!(line.standing(late), Standing::Waiting { .. }));
        line.advance(at(10_100));
        assert_eq!(line.standing(late), Standing::Admitted);
    }

    #[test]
    fn a_snapshot_restores_places_passes_redemptions_and_the_rate() {
        let mut line = Line::new(settings(3, 60_000), [5; 16]);
        let ts: Vec<u64> = (0..10).map(|_| issue(&mut line, 0)).collect();
        line.advance(at(0));
        line.advance(at(100));
        assert!(enter(&mut line, ts[0], 100));
        assert!(enter(&mut line, ts[1], 100));
        line.pass_started(999, 30_000);
        line.revoke(999, at(200));
        let snap = line.snapshot(at(1_000));
        let text = serde_json::to_string(&snap).unwrap();
        assert!(text.len() < 4096, "{}", text.len());
        let snap: Snapshot = serde_json::from_str(&text).unwrap();
        // The new process: its monotonic clock starts over; 2 s passed on the wall.
        let now = Now {
            mono_ms: 5,
            wall_ms: at(3_000).wall_ms,
        };
        let mut back = Line::restore(settings(3, 60_000), &snap, now).unwrap();
        assert_eq!(back.active(), line.active());
        assert_eq!(back.standing(ts[0]), Standing::Redeemed);
        assert_eq!(back.standing(ts[2]), Standing::Admitted);
        assert_eq!(back.standing(ts[5]), line.standing(ts[5]));
        assert_eq!(back.check_pass(999, 60_000, now, None), PassCheck::Revoked);
        assert_eq!(back.issue(now, None).ticket, 11);
        // Lifetimes lost the 2 s: the passes end 2 s sooner on the new clock.
        back.advance(Now {
            mono_ms: 5 + 60_100 - 3_000 + 1,
            wall_ms: 0,
        });
        assert_eq!(back.passes(), 0);
    }

    #[test]
    fn a_million_tickets_do_not_grow_the_state() {
        let mut line = Line::new(settings(1000, 600), [1; 16]);
        let before = line.state_bytes();
        for i in 0..1_000_000u64 {
            let t = issue(&mut line, i / 1000);
            line.polled(t, at(i / 1000));
        }
        line.advance(at(1000));
        // Only the reservations of the few admitted count, one entry each.
        assert!(line.state_bytes() <= before + 1000 * ENTRY_BYTES);
        assert_eq!(line.waiting(), 1_000_000 - line.admitted_total);
    }
}
