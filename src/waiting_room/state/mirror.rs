//! A [`Line`] as the mirror of a line several instances share (`[state] backend =
//! "redis"`), and as the stand-in that runs on its own while the store is away.
//!
//! Mirroring: every tick the store's view ([`LineView`]) overwrites the counters, the
//! front, the pre-queue and its shuffle key, and the active count; revocations from
//! other instances are applied here. Standings (people ahead, the wait) are then read
//! from the mirror without a call; exchanges and new numbers go to the store.
//!
//! The outage: the line runs itself with this instance's share (1/N of
//! `active_users` and of the rate, N the live instances last seen). The numbers it
//! hands out are the ones `≡ rank (mod N)`, so no two instances give out one number
//! even though none of them can reach the store, and every place its front reaches
//! that holds another instance's number is passed over. What it exchanged is kept
//! (bounded) and merged back when the store returns.

use std::collections::HashSet;

use super::{Line, Now};
use crate::state::line::{AdvanceParams, LineView, Seed};

/// Blocks polled between two advances that are remembered (at 50 ms ticks, far more
/// than visitors poll blocks; beyond it a block just waits for its next poll).
const MAX_POLLED_BLOCKS: usize = 4096;
/// Exchanges during one outage that are merged back (beyond them, a ticket exchanged
/// during the outage may be exchanged once more afterwards; stated in docs/scaling.md).
const MAX_OUTAGE_CLAIMS: usize = 1 << 16;

/// The shared line's part of a [`Line`].
#[derive(Debug, Clone, Default)]
pub(super) struct Shared {
    /// Mirroring: the store's active count.
    pub(super) active: Option<u64>,
    /// Blocks polled here since the last advance.
    polled: HashSet<u64>,
    revocation_gen: u64,
    epoch: u64,
    /// The store's admitted total last seen (for the measured rate).
    seen_admitted: Option<u64>,
    seen_skipped: Option<u64>,
    outage: Option<Outage>,
}

/// Running alone while the store is away.
#[derive(Debug, Clone)]
struct Outage {
    n: u64,
    rank: u64,
    /// Numbers from here on are split between the instances by residue.
    from: u64,
    claimed: Vec<u64>,
    /// Never saw the shared line (started while the store was away): its numbers are
    /// its own, far above the shared ones, and are not merged back.
    isolated: bool,
}

/// Where an instance that never saw the shared line numbers its own tickets: above
/// any shared number a sale reaches, below the secondary tickets. A visitor holding
/// one takes a new number once the store answers (the number is not the store's).
pub const ISOLATED_BASE: u64 = 1 << 39;

impl Shared {
    /// The divisor of the budgets: N during an outage, else 1.
    pub(super) fn share(&self) -> u64 {
        self.outage.as_ref().map_or(1, |o| o.n.max(1))
    }

    /// The first number at or after `next` this instance may hand out.
    pub(super) fn outage_number(&self, next: u64) -> u64 {
        match &self.outage {
            Some(o) if o.n > 1 => next + (o.rank + o.n - next % o.n) % o.n,
            _ => next,
        }
    }

    /// Whether number `t` was (or would be) handed out by this instance: during an
    /// outage, only its residue; the others are another instance's.
    pub(super) fn own_number(&self, t: u64) -> bool {
        match &self.outage {
            Some(o) if o.n > 1 && t >= o.from => t % o.n == o.rank,
            _ => true,
        }
    }

    pub(super) fn polled(&mut self, block: u64) {
        if self.active.is_some() && self.polled.len() < MAX_POLLED_BLOCKS {
            self.polled.insert(block);
        }
    }

    pub(super) fn claimed(&mut self, p: u64) {
        if let Some(o) = &mut self.outage {
            if o.claimed.len() < MAX_OUTAGE_CLAIMS {
                o.claimed.push(p);
            }
        }
    }
}

impl Line {
    /// What the next advance sends: settings, revocations seen, blocks polled here.
    pub fn advance_params(&mut self) -> AdvanceParams {
        AdvanceParams {
            active_users: self.settings.active_users,
            new_users_per_minute: self.settings.new_users_per_minute,
            abandon_after_ms: self.settings.abandon_after_ms,
            paused: self.paused,
            opens_at_ms: self.settings.opens_at_ms,
            revocation_gen: self.shared.revocation_gen,
            known_next: (self.next_ticket, self.next_secondary),
            polled_blocks: self.shared.polled.drain().collect(),
        }
    }

    /// Takes the store's view: this line now mirrors it. True when the store was
    /// re-seeded (by another instance) since the last view: merge this one's passes
    /// and numbers too.
    pub fn mirror(&mut self, v: &LineView, now: Now) -> bool {
        let reseeded = self.shared.epoch != 0 && v.epoch != self.shared.epoch;
        self.shared.epoch = v.epoch;
        let seen = (self.next_ticket, self.next_secondary);
        self.passes.expire(now.mono_ms);
        self.revoked.expire(now.mono_ms);
        // Reservations live in the store; the local ones were the outage's.
        self.reservations.expire(u64::MAX);
        self.next_ticket = v.next_ticket.max(1);
        self.next_secondary = v.next_secondary.max(1);
        if reseeded {
            // Until the merge lands, the numbers seen here stand.
            self.next_ticket = self.next_ticket.max(seen.0);
            self.next_secondary = self.next_secondary.max(seen.1);
        }
        self.admitted = v.front;
        if v.prequeue.is_some() {
            self.prequeue_prefixes.clear();
        }
        self.prequeue = v.prequeue;
        self.hole = None;
        if let Some(k) = v.perm_key {
            self.perm_key = k;
        }
        for &(id, ms) in &v.revocations {
            self.passes.remove(id);
            self.revoked.insert(id, now.mono_ms + ms, ());
        }
        self.shared.revocation_gen = v.revocation_gen;
        self.shared.active = Some(v.active);
        // Every instance reports the whole line's admissions and skips (as it reports
        // its waiting and active), so a per-instance "nobody admitted" alert holds; a
        // dashboard divides sums across instances by floodgate_state_live_instances.
        let admitted = self
            .shared
            .seen_admitted
            .map_or(0, |s| v.admitted_total.saturating_sub(s));
        let skipped = self
            .shared
            .seen_skipped
            .map_or(0, |s| v.skipped_total.saturating_sub(s));
        self.shared.seen_admitted = Some(v.admitted_total);
        self.shared.seen_skipped = Some(v.skipped_total);
        self.admitted_total += admitted;
        self.skipped_total += skipped;
        let dt = self.last_ms.map_or(0, |l| now.mono_ms.saturating_sub(l));
        self.last_ms = Some(now.mono_ms);
        let busy = !self.paused && self.anyone_waiting();
        self.observe_rate(now, dt, admitted, busy);
        reseeded
    }

    /// Forgets the epoch seen, so the next view counts as a re-seed again (its merge
    /// is still to do).
    pub fn forget_epoch(&mut self) {
        self.shared.epoch = 1;
    }

    /// A number the store handed out (to this instance or another) that the mirror
    /// has not seen yet: the mirror's counter catches up, so its standing is known.
    pub fn saw_ticket(&mut self, t: u64) {
        if t < ISOLATED_BASE && t >= self.next_ticket {
            self.next_ticket = t + 1;
        }
    }

    /// Whether this line took a view of the store at least once.
    pub fn is_mirrored(&self) -> bool {
        self.shared.seen_admitted.is_some()
    }

    /// Whether the store is away and this line runs alone.
    pub fn in_outage(&self) -> bool {
        self.shared.outage.is_some()
    }

    /// The store is away: run alone with a 1/`n` share, handing out numbers of
    /// residue `rank`. Every place ahead counts as polled now (nobody is skipped for
    /// the outage's start).
    pub fn start_outage(&mut self, n: u32, rank: u32, now: Now) {
        if self.shared.outage.is_some() {
            return;
        }
        let isolated =
            self.shared.seen_admitted.is_none() && self.next_ticket == 1 && self.admitted == 0;
        if isolated {
            self.open(now);
            self.next_ticket = ISOLATED_BASE;
            self.admitted = ISOLATED_BASE - 1;
            self.prequeue = Some((0, 0));
        }
        self.shared.active = None;
        self.shared.polled.clear();
        self.tokens = 0.0;
        self.last_ms = Some(now.mono_ms);
        self.shared.outage = Some(Outage {
            n: n.max(1) as u64,
            rank: rank as u64,
            from: self.next_ticket,
            claimed: Vec::new(),
            isolated,
        });
        self.touch_blocks_ahead(now.mono_ms);
    }

    /// What to send the store: its seed if it lost the line, or what this instance
    /// did while it was away (an isolated instance sends only its passes).
    pub fn seed(&self, now: Now) -> Seed {
        let passes = self
            .passes
            .iter()
            .filter(|&(_, e)| e > now.mono_ms)
            .map(|(id, e)| (id, e - now.mono_ms))
            .collect();
        if self.shared.outage.as_ref().is_some_and(|o| o.isolated) {
            return Seed {
                next_ticket: 1,
                next_secondary: 1,
                perm_key: self.perm_key,
                passes,
                ..Seed::default()
            };
        }
        let claimed = self
            .shared
            .outage
            .as_ref()
            .map_or_else(Vec::new, |o| o.claimed.clone());
        let recent = self.settings.active_users.min(1 << 16);
        Seed {
            next_ticket: self.next_ticket,
            next_secondary: self.next_secondary,
            front: self.admitted,
            prequeue: self.prequeue,
            perm_key: self.perm_key,
            admitted_total: self.shared.seen_admitted.unwrap_or(self.admitted_total),
            skipped_total: self.skipped_total,
            issued_total: self.issued_total,
            granted_from: self.admitted.saturating_sub(recent),
            claimed,
            passes,
        }
    }

    /// The store has what [`Line::seed`] sent: mirror it again from the next view.
    pub fn end_outage(&mut self) {
        self.shared.outage = None;
    }

    /// Whether pass `id` is known here (else this instance registers it).
    pub fn knows_pass(&self, id: u64) -> bool {
        self.passes.contains(id)
    }
}

#[cfg(test)]
mod tests {
    use super::super::{LineSettings, Mode};
    use super::*;

    fn line() -> Line {
        Line::new(
            LineSettings {
                active_users: 30,
                new_users_per_minute: 600,
                session_ms: 600_000,
                abandon_after_ms: 30_000,
                opens_at_ms: None,
                mode: Mode::Fifo,
                pass_requests_per_second: 0,
                pass_prefixes_per_minute: 0,
            },
            [7; 16],
        )
    }

    #[test]
    fn three_instances_cut_off_from_the_store_never_hand_out_one_number_twice() {
        let now = Now {
            mono_ms: 1,
            wall_ms: 1,
        };
        let mut seen = HashSet::new();
        for rank in 0..3 {
            let mut l = line();
            for _ in 0..10 {
                l.issue(now, None);
            }
            l.start_outage(3, rank, now);
            for _ in 0..20 {
                let t = l.issue(now, None).ticket;
                assert_eq!(t % 3, rank as u64);
                assert!(seen.insert(t), "number {t} handed out twice");
            }
        }
    }

    #[test]
    fn an_instance_alone_admits_its_share_and_passes_over_the_others_numbers() {
        let mut now = Now {
            mono_ms: 1,
            wall_ms: 1,
        };
        let mut l = line();
        l.start_outage(3, 1, now);
        let mine: Vec<u64> = (0..30).map(|_| l.issue(now, None).ticket).collect();
        for _ in 0..600 {
            now.mono_ms += 50;
            l.advance(now);
        }
        // 30 active users over 3 instances: 10 inside here, every one of them ours.
        assert_eq!(l.active(), 10);
        let admitted: Vec<u64> = mine
            .iter()
            .copied()
            .filter(|&t| l.standing(t) == super::super::Standing::Admitted)
            .collect();
        assert_eq!(admitted, mine[..10].to_vec());
    }
}
