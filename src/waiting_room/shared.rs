//! A room whose line several instances share: its tick mirrors the store, or runs
//! the line alone with this instance's share while the store is away.
//!
//! ```text
//!  store up    ── advance (one script) ── mirror ── polls answered from the mirror
//!  store away  ── start_outage(N, rank) ── Line::advance with 1/N of the budgets
//!  store back  ── merge (numbers, exchanges, passes) ── advance ── mirror again
//!  store empty ── merge seeds it from this mirror: numbers never go back
//! ```

use std::sync::Arc;

use super::config::Mode;
use super::service::{self, Begun, Decision, Visit};
use super::state::{Issued, Now, Standing};
use super::token::Token;
use super::Room;
use crate::context::RequestContext;
use crate::error::GatewayError;
use crate::state::line::{Exchange, Issue, SharedLine};

/// One tick of a shared room; returns whether the state file is due.
pub(super) async fn tick(room: &Room, line: &Arc<dyn SharedLine>) -> bool {
    if !line.is_decided() {
        // Still connecting (the first second of a start): nothing to decide yet.
        return room.persist_due();
    }
    if !line.is_up() {
        alone(room, line);
        return room.persist_due();
    }
    if room.line().in_outage() && !merge_back(room, line).await {
        alone(room, line);
        return room.persist_due();
    }
    let params = room.line().advance_params();
    match line.advance(params).await {
        Ok(Some(view)) => {
            let now = room.now();
            let reseeded = {
                let mut l = room.line();
                let r = l.mirror(&view, now);
                room.report(&l);
                r
            };
            if reseeded {
                // Another instance re-seeded the store from its view: add ours (our
                // passes, the numbers we saw) before the hold ends.
                let seed = room.line().seed(room.now());
                if line.merge(seed).await.is_err() {
                    alone(room, line);
                }
            }
        }
        Ok(None) => {
            // The store lost the line (restarted without persistence, or flushed):
            // this instance's view seeds it, so ticket numbers never go back.
            let seed = room.line().seed(room.now());
            let next = seed.next_ticket;
            match line.merge(seed).await {
                Ok(true) => tracing::warn!(room = %room.name, next_ticket = next,
                    "the shared store had no line for this room: seeded from this instance's view"),
                Ok(false) => {}
                Err(_) => alone(room, line),
            }
        }
        Err(e) => {
            tracing::debug!(room = %room.name, error = %e, "shared line advance failed");
            alone(room, line)
        }
    }
    room.persist_due()
}

/// The store is away: the line runs here with this instance's share.
fn alone(room: &Room, line: &Arc<dyn SharedLine>) {
    let now = room.now();
    let (n, rank) = line.membership();
    let mut l = room.line();
    if !l.in_outage() {
        tracing::warn!(room = %room.name, live_instances = n, rank,
            "shared store away: the waiting room admits on this instance's 1/N share");
        l.start_outage(n, rank, now);
    }
    l.advance(now);
    room.report(&l);
}

/// The store is back: merges what was done alone. False if it failed (still away).
async fn merge_back(room: &Room, line: &Arc<dyn SharedLine>) -> bool {
    let seed = room.line().seed(room.now());
    let (claimed, passes) = (seed.claimed.len(), seed.passes.len());
    match line.merge(seed).await {
        Ok(_) => {
            room.line().end_outage();
            tracing::info!(room = %room.name, claimed, passes,
                "shared store back: what this instance did alone is merged, the line resumes where the store has it");
            true
        }
        Err(e) => {
            tracing::debug!(room = %room.name, error = %e, "merging back into the shared store failed");
            false
        }
    }
}

/// Asks the store for one advance and mirrors its view; false when it did not answer.
async fn refresh(room: &Room, line: &Arc<dyn SharedLine>) -> bool {
    let params = room.line().advance_params();
    match line.advance(params).await {
        Ok(Some(view)) => {
            let now = room.now();
            let mut l = room.line();
            // A re-seed seen here first is merged by the next tick.
            if l.mirror(&view, now) {
                l.forget_epoch();
            }
            room.report(&l);
            true
        }
        Ok(None) => {
            let seed = room.line().seed(room.now());
            line.merge(seed).await.is_ok()
        }
        Err(_) => false,
    }
}

impl Room {
    /// The store, while this room's line is shared and the store answers (else the
    /// room decides on its own line).
    pub(super) fn store(&self) -> Option<Arc<dyn SharedLine>> {
        let line = self.shared.get()?;
        (line.is_up() || !line.is_decided()).then(|| line.clone())
    }

    /// About to decide on this instance's own line: a shared room whose store is away
    /// runs alone first (its share, its own numbers), never on the mirror.
    pub(super) fn deciding_alone(&self) {
        if let Some(line) = self.shared.get() {
            if !self.line().in_outage() {
                alone(self, line);
            }
        }
    }

    /// Pass `id` lives `ms` more: the store hears it without the request waiting.
    pub(super) fn share_pass(&self, id: u64, ms: u64) {
        if let Some(line) = self.store() {
            tokio::spawn(line.keep(id, ms));
        }
    }

    /// Ends pass `id` here and, through the store, on every instance.
    pub(super) fn revoke_pass(&self, id: u64, ms: u64, now: Now) {
        self.line().revoke(id, now);
        if let Some(line) = self.store() {
            let ms = ms.max(self.line().settings.session_ms);
            tokio::spawn(line.revoke(id, ms));
        }
    }

    /// Pass `id` now lasts `ms` more, here and in the store.
    pub(super) fn extend_pass(&self, id: u64, ms: u64, now: Now) {
        self.line().pass_extended(id, now.mono_ms + ms);
        self.share_pass(id, ms);
    }
}

/// Decides one request of a shared room: the same steps as the local
/// [`super::service`] decision, with a number and an exchange asked of the store.
pub(super) async fn decide(
    room: &Room,
    store: &Arc<dyn SharedLine>,
    req: &http::request::Parts,
) -> Result<Decision, GatewayError> {
    let headers = &req.headers;
    let ctx = req.extensions.get::<RequestContext>();
    let mut v = match service::begin(room, headers, req.uri.path(), ctx) {
        Begun::Decided(d) => return Ok(d),
        Begun::Visit(v) => v,
    };
    // Back from an outage, or not yet mirrored: the store first, else alone.
    let (outage, mirrored) = {
        let l = room.line();
        (l.in_outage(), l.is_mirrored())
    };
    let stays_alone =
        (outage && !merge_back(room, store).await) || (!mirrored && !refresh(room, store).await);
    if stays_alone {
        alone(room, store);
        return v.decide_here(headers);
    }
    if v.cfg.mode == Mode::Passthrough {
        return Ok(enter(&mut v, store, 0, false).await);
    }
    if let Some(t) = v.ticket(headers) {
        if let Some(d) = ticket_holder(&mut v, store, &t).await {
            return Ok(d);
        }
    }
    if let Some(d) = v.before_a_number(headers)? {
        return Ok(d);
    }
    Ok(new_arrival(&mut v, store).await)
}

/// A pass without a ticket (passthrough, or a safety net with room); `None`-like
/// fallback: a number, when the store refuses.
async fn enter(
    v: &mut Visit<'_>,
    store: &Arc<dyn SharedLine>,
    active_users: u64,
    empty_line: bool,
) -> Decision {
    let id = rand::random();
    let session = v.session_ms();
    match store.enter(id, session, active_users, empty_line).await {
        Ok(true) => {}
        Ok(false) if active_users > 0 => return number(v, store).await,
        // Passthrough lets everyone in; a store away only loses the count.
        Ok(false) | Err(_) if active_users == 0 => {}
        Ok(false) | Err(_) => return v.number_here(),
    }
    let mut line = v.room.line();
    v.new_pass(&mut line, 0, v.now.wall_ms, Vec::new(), id)
}

/// A ticket holder: the mirror says whether the front reached it; only the store
/// says whether it may be exchanged (once, across instances). `None`: the ticket
/// holds no place any more.
async fn ticket_holder(
    v: &mut Visit<'_>,
    store: &Arc<dyn SharedLine>,
    t: &Token,
) -> Option<Decision> {
    let (standing, position, active_users) = {
        let mut l = v.room.line();
        l.saw_ticket(t.ticket);
        l.polled(t.ticket, v.now);
        (
            l.standing(t.ticket),
            l.position_of(t.ticket),
            l.settings.active_users,
        )
    };
    let standing = match (standing, position) {
        (Standing::Waiting { .. } | Standing::PreQueue | Standing::Unknown, _) | (_, None) => {
            standing
        }
        (_, Some(p)) => {
            let id = rand::random();
            match store.claim(p, id, v.session_ms(), active_users).await {
                Ok(Exchange::Claimed) => {
                    let mut l = v.room.line();
                    return Some(v.exchanged(&mut l, t, id));
                }
                Ok(Exchange::Waiting { ahead }) => Standing::Waiting { ahead },
                Ok(Exchange::Redeemed) => {
                    v.room.metrics().replays.inc();
                    return None;
                }
                Ok(Exchange::Lost) => Standing::Lost,
                // Full, the store emptied or away: first in line, asked again at the
                // next poll.
                Ok(Exchange::Full | Exchange::NoLine) | Err(_) => Standing::Waiting { ahead: 0 },
            }
        }
    };
    let l = v.room.line();
    v.still_waiting(&l, t, standing)
}

/// A new arrival: in straight away (safety net with room), or a number from the store.
async fn new_arrival(v: &mut Visit<'_>, store: &Arc<dyn SharedLine>) -> Decision {
    if v.cfg.mode == Mode::SafetyNet {
        let (waiting, active, limit) = {
            let l = v.room.line();
            (l.anyone_waiting(), l.active(), l.settings.active_users)
        };
        if !waiting && active < limit {
            return enter(v, store, limit, true).await;
        }
    }
    number(v, store).await
}

/// Takes a number from the store; walks straight in when the line was empty and the
/// room has space (one advance and one exchange more, only then).
async fn number(v: &mut Visit<'_>, store: &Arc<dyn SharedLine>) -> Decision {
    let mut issued = store.issue(v.prefix).await;
    if matches!(issued, Ok(Issue::NoLine)) && refresh(v.room, store).await {
        issued = store.issue(v.prefix).await;
    }
    let (ticket, front) = match issued {
        Ok(Issue::Number { ticket, front }) => (ticket, front),
        Ok(Issue::Held) => return v.ask_again_soon(),
        // The store went away (or lost the line twice): this instance decides alone.
        Ok(Issue::NoLine) | Err(_) => {
            alone(v.room, store);
            return v.number_here();
        }
    };
    v.room.metrics().issued.inc();
    let (position, room_for_one, active_users) = {
        let mut l = v.room.line();
        l.issued_total += 1;
        l.saw_ticket(ticket);
        l.polled(ticket, v.now);
        let p = l.position_of(ticket);
        let room_for_one = l.is_open()
            && !l.paused
            && p == Some(front + 1)
            && l.active() < l.settings.active_users;
        (p, room_for_one, l.settings.active_users)
    };
    if let (true, Some(p)) = (room_for_one, position) {
        if refresh(v.room, store).await {
            let id = rand::random();
            let claimed = store.claim(p, id, v.session_ms(), active_users).await;
            if let Ok(Exchange::Claimed) = claimed {
                let mut l = v.room.line();
                return v.new_pass(&mut l, ticket, v.now.wall_ms, Vec::new(), id);
            }
        }
    }
    let l = v.room.line();
    v.numbered(&l, Issued { ticket, front })
}
