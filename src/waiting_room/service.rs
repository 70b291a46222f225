//! The tower layer: pass holders through, everyone else to the waiting answer.
//!
//! One request meets the room in this order (see [`decide`]): a valid, unrevoked pass
//! goes through (renewed, counted once by its id); a ticket whose turn came is
//! exchanged for a pass, once; a ticket still in line gets its standing; anyone else
//! is a new arrival and takes a number.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::FutureExt;
use http::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE, RETRY_AFTER, SET_COOKIE, VARY};
use http::{HeaderName, Request, Response, StatusCode};
use tower::{Layer, Service};

use super::config::{Mode, RoomConfig};
use super::page::{self, Facts, PageState};
use super::state::{ClaimRefused, Issued, Line, Now, PassCheck, Standing};
use super::token::{self, Kind, Token};
use super::{Admitted, Room};
use crate::body::{self, Body};
use crate::context::RequestContext;
use crate::error::GatewayError;

/// Response header by which the origin ends or extends a shopper's session.
pub const SESSION_HEADER: HeaderName = HeaderName::from_static("x-floodgate-session");
/// Request header marking a status poll (answered by the gateway, never forwarded).
pub const POLL_HEADER: HeaderName = HeaderName::from_static("x-floodgate-poll");

/// Puts a room in front of a service.
#[derive(Clone)]
pub struct WaitingRoomLayer {
    room: Arc<Room>,
}

impl WaitingRoomLayer {
    /// A layer for `room`.
    pub fn new(room: Arc<Room>) -> Self {
        WaitingRoomLayer { room }
    }
}

impl<S> Layer<S> for WaitingRoomLayer {
    type Service = WaitingRoomService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        WaitingRoomService {
            room: self.room.clone(),
            inner,
        }
    }
}

/// The waiting room in front of `S`.
#[derive(Clone)]
pub struct WaitingRoomService<S> {
    room: Arc<Room>,
    inner: S,
}

type BoxFuture = Pin<Box<dyn Future<Output = Result<Response<Body>, GatewayError>> + Send>>;

/// What the room decided for one request.
pub(super) enum Decision {
    /// Not guarded: forward; the origin's session header is still obeyed for the pass
    /// the request carries (if any) and never reaches the client.
    Through { pass_cookie: Option<String> },
    /// Admitted: forward, with a pass (current expiry) and cookies to set.
    Pass {
        token: Token,
        cookies: Vec<HeaderValue>,
    },
    /// Answered by the room.
    Answer(Response<Body>),
}

impl<S> Service<Request<Body>> for WaitingRoomService<S>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = GatewayError>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = GatewayError;
    type Future = BoxFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), GatewayError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Body>) -> BoxFuture {
        let room = self.room.clone();
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        // A shared line asks the store (a number, an exchange): decided asynchronously.
        if let Some(store) = room.store() {
            let (parts, body) = req.into_parts();
            return Box::pin(
                async move {
                    let d = super::shared::decide(&room, &store, &parts).await;
                    (d, Request::from_parts(parts, body), room)
                }
                .then(|(d, req, room)| dispatch(d, req, room, inner)),
            );
        }
        room.deciding_alone();
        let ctx = req.extensions().get::<RequestContext>();
        let decision = decide(&room, req.headers(), req.uri().path(), ctx);
        dispatch(decision, req, room, inner)
    }
}

/// Sends the request on (or answers it) as the room decided.
fn dispatch<S>(
    decision: Result<Decision, GatewayError>,
    mut req: Request<Body>,
    room: Arc<Room>,
    mut inner: S,
) -> BoxFuture
where
    S: Service<Request<Body>, Response = Response<Body>, Error = GatewayError> + Send + 'static,
    S::Future: Send + 'static,
{
    let decision = match decision {
        Ok(d) => d,
        Err(e) => return Box::pin(async move { Err(e) }),
    };
    let secure = is_secure(&req);
    // Combinators, not async blocks: awaiting `S::Future` inside one trips rustc's
    // higher-ranked Send check on the boxed body's error type (rust#102211).
    match decision {
        Decision::Answer(resp) => Box::pin(async move { Ok(resp) }),
        Decision::Through { pass_cookie } => Box::pin(
            inner
                .call(req)
                .map(move |r| r.map(|resp| through(resp, &room, pass_cookie.as_deref(), secure))),
        ),
        Decision::Pass { token, cookies } => {
            req.extensions_mut().insert(Admitted);
            Box::pin(
                inner
                    .call(req)
                    .map(move |r| r.map(|resp| finish(resp, &room, cookies, token, secure))),
            )
        }
    }
}

fn is_secure<B>(req: &Request<B>) -> bool {
    req.extensions()
        .get::<RequestContext>()
        .is_some_and(|c| c.is_https())
}

/// An unguarded path's response: the session header is obeyed (for a valid pass) and
/// removed.
fn through(
    mut resp: Response<Body>,
    room: &Room,
    pass_cookie: Option<&str>,
    secure: bool,
) -> Response<Body> {
    let Some(v) = take_session_directive(&mut resp) else {
        return resp;
    };
    let cfg = room.config();
    let now = room.now();
    let pass =
        pass_cookie.and_then(|c| Token::verify(c, &cfg.keys, &cfg.name, Kind::Pass, now.wall_ms));
    if let Some(c) = pass.and_then(|p| session_directive(room, v, p, secure)) {
        resp.headers_mut().append(SET_COOKIE, c);
    }
    resp
}

/// Applies the origin's session directive and sets the pass cookies.
fn finish(
    mut resp: Response<Body>,
    room: &Room,
    mut cookies: Vec<HeaderValue>,
    pass: Token,
    secure: bool,
) -> Response<Body> {
    if let Some(v) = take_session_directive(&mut resp) {
        if let Some(c) = session_directive(room, v, pass, secure) {
            // The origin's word replaces the renewal we were about to send.
            let name = format!("{}=", room.cookies.1);
            cookies.retain(|c| !c.as_bytes().starts_with(name.as_bytes()));
            cookies.push(c);
        }
    }
    for c in cookies {
        resp.headers_mut().append(SET_COOKIE, c);
    }
    resp
}

/// Removes the origin's session header; returns it only if the origin wrote it for
/// this request. A stored copy (a cache hit, a collapsed or stale answer) speaks for
/// the shopper it was first fetched for, never for this one.
fn take_session_directive(resp: &mut Response<Body>) -> Option<HeaderValue> {
    let v = resp.headers_mut().remove(SESSION_HEADER)?;
    let fresh_from_origin = resp
        .headers()
        .get(&crate::cache::service::CACHE_STATUS)
        .and_then(|c| c.to_str().ok())
        .map_or(true, |c| {
            c.contains("fwd=") && !c.contains("collapsed") && !c.contains("fwd=stale")
        });
    fresh_from_origin.then_some(v)
}

/// Applies `X-Floodgate-Session: end | extend=DURATION` and returns the pass cookie.
fn session_directive(
    room: &Room,
    v: HeaderValue,
    mut pass: Token,
    secure: bool,
) -> Option<HeaderValue> {
    let v = v.to_str().ok()?.trim().to_ascii_lowercase();
    let now = room.now();
    if v == "end" {
        room.revoke_pass(pass.id, pass.expires_ms.saturating_sub(now.wall_ms), now);
        room.metrics().revoked("origin_end");
        return Some(cookie(&room.cookies.1, "", 0, secure));
    }
    let d = crate::config::units::duration(v.strip_prefix("extend=")?.trim()).ok()?;
    let new = (now.wall_ms + d.as_millis() as u64).max(pass.expires_ms);
    room.extend_pass(pass.id, new - now.wall_ms, now);
    pass.expires_ms = new;
    let cfg = room.config();
    Some(cookie(
        &room.cookies.1,
        &pass.sign(&cfg.keys),
        (new - now.wall_ms).div_ceil(1000),
        secure,
    ))
}

fn cookie(name: &str, value: &str, max_age_s: u64, secure: bool) -> HeaderValue {
    let s = format!(
        "{name}={value}; Path=/; Max-Age={max_age_s}; HttpOnly; SameSite=Lax{}",
        if secure { "; Secure" } else { "" }
    );
    HeaderValue::from_str(&s).expect("cookie values are token characters")
}

/// One guarded request's view of the room.
pub(super) struct Visit<'a> {
    pub(super) room: &'a Room,
    pub(super) cfg: Arc<RoomConfig>,
    pub(super) now: Now,
    lang: page::Lang,
    poll: bool,
    json: bool,
    secure: bool,
    /// The client's prefix, keyed-hashed (none when the request has no context).
    pub(super) prefix: Option<u64>,
    /// Cookies cleared whatever the answer (a revoked pass).
    clear: Vec<HeaderValue>,
}

/// The visit of a guarded request (its headers, path and context); for one the room
/// does not guard, the pass cookie it carries (it goes [`Decision::Through`]).
pub(super) fn visit<'a>(
    room: &'a Room,
    headers: &http::HeaderMap,
    path: &str,
    ctx: Option<&RequestContext>,
) -> Result<Visit<'a>, Option<String>> {
    let cfg = room.config();
    let poll = headers.contains_key(POLL_HEADER);
    if !poll && !cfg.guards(path) {
        return Err(token::cookie(headers, &room.cookies.1).map(str::to_string));
    }
    let prefix = ctx.map(|c| room.client_prefix(c.client_ip));
    Ok(Visit {
        room,
        cfg,
        now: room.now(),
        lang: page::language(headers),
        poll,
        json: poll || crate::respond::wants_json(headers),
        secure: ctx.is_some_and(|c| c.is_https()),
        prefix,
        clear: Vec::new(),
    })
}

/// Where a request stands after the steps every room takes first.
pub(super) enum Begun<'a> {
    /// Decided already: an unguarded path, or a valid pass.
    Decided(Decision),
    /// A guarded request without a valid pass: the room's line decides.
    Visit(Visit<'a>),
}

/// The steps every room takes first, whoever holds its line: an unguarded path goes
/// through, a valid pass goes in (both without a call to a shared store).
pub(super) fn begin<'a>(
    room: &'a Room,
    headers: &http::HeaderMap,
    path: &str,
    ctx: Option<&RequestContext>,
) -> Begun<'a> {
    let mut v = match visit(room, headers, path, ctx) {
        Ok(v) => v,
        Err(pass_cookie) => return Begun::Decided(Decision::Through { pass_cookie }),
    };
    match v.pass_holder(headers) {
        Some(d) => Begun::Decided(d),
        None => Begun::Visit(v),
    }
}

/// Decides one request on this instance's own line.
pub(super) fn decide(
    room: &Room,
    headers: &http::HeaderMap,
    path: &str,
    ctx: Option<&RequestContext>,
) -> Result<Decision, GatewayError> {
    match begin(room, headers, path, ctx) {
        Begun::Decided(d) => Ok(d),
        Begun::Visit(v) => v.decide_here(headers),
    }
}

impl Visit<'_> {
    /// The rest of a decision on this instance's own line: passthrough, a ticket
    /// holder, a new arrival.
    pub(super) fn decide_here(
        mut self,
        headers: &http::HeaderMap,
    ) -> Result<Decision, GatewayError> {
        if self.cfg.mode == Mode::Passthrough {
            let mut line = self.room.line();
            let now = self.now.wall_ms;
            return Ok(self.new_pass(&mut line, 0, now, Vec::new(), rand::random()));
        }
        if let Some(d) = self.ticket_holder(headers) {
            return Ok(d);
        }
        self.new_arrival(headers)
    }

    pub(super) fn session_ms(&self) -> u64 {
        self.cfg.session_duration.as_millis() as u64
    }

    fn clear_cookie(&self, name: &str) -> HeaderValue {
        cookie(name, "", 0, self.secure)
    }

    /// A valid pass: straight through, renewed (sliding) once a tenth of it is used.
    /// `None` for no pass, or one revoked (now or before).
    pub(super) fn pass_holder(&mut self, headers: &http::HeaderMap) -> Option<Decision> {
        let (room, now) = (self.room, self.now);
        let p = token::cookie(headers, &room.cookies.1).and_then(|v| {
            Token::verify(v, &self.cfg.keys, &self.cfg.name, Kind::Pass, now.wall_ms)
        })?;
        let session_ms = self.session_ms();
        let mut line = room.line();
        let left_ms = p.expires_ms - now.wall_ms;
        let expires_mono = now.mono_ms + left_ms;
        let known = line.knows_pass(p.id);
        match line.check_pass(p.id, expires_mono, now, self.prefix) {
            PassCheck::Valid if !known => room.share_pass(p.id, left_ms),
            PassCheck::Valid => {}
            PassCheck::Revoked => {
                drop(line);
                self.clear.push(self.clear_cookie(&room.cookies.1));
                return None;
            }
            PassCheck::Shared(limit) => {
                drop(line);
                room.revoke_pass(p.id, left_ms, now);
                room.metrics().revoked(limit.as_str());
                tracing::warn!(
                    room = %room.name,
                    pass = p.id,
                    reason = limit.as_str(),
                    "pass revoked: used past a sharing limit"
                );
                self.clear.push(self.clear_cookie(&room.cookies.1));
                return None;
            }
        }
        let mut pass = p;
        let mut cookies = Vec::new();
        if pass.expires_ms < now.wall_ms + session_ms - session_ms / 10 {
            pass.expires_ms = now.wall_ms + session_ms;
            line.pass_extended(pass.id, now.mono_ms + session_ms);
            room.share_pass(pass.id, session_ms);
            cookies.push(cookie(
                &room.cookies.1,
                &pass.sign(&self.cfg.keys),
                session_ms / 1000,
                self.secure,
            ));
        }
        drop(line);
        Some(self.admitted(pass, cookies))
    }

    /// A valid ticket: exchanged for a pass if its turn came (once), else its standing.
    /// `None` for no ticket, or one that no longer holds a place (replayed, skipped,
    /// unknown): the visitor is a new arrival.
    fn ticket_holder(&mut self, headers: &http::HeaderMap) -> Option<Decision> {
        let (room, now) = (self.room, self.now);
        let t = self.ticket(headers)?;
        let mut line = room.line();
        line.polled(t.ticket, now);
        let standing = match line.standing(t.ticket) {
            Standing::Admitted => match line.claim(t.ticket) {
                Ok(()) => return Some(self.exchanged(&mut line, &t, rand::random())),
                // Back after its reservation lapsed, the room full: first in line.
                Err(ClaimRefused::Full) => Standing::Waiting { ahead: 0 },
                Err(ClaimRefused::NotAdmitted(s)) => s,
            },
            Standing::Redeemed => {
                room.metrics().replays.inc();
                return None;
            }
            s => s,
        };
        self.still_waiting(&line, &t, standing)
    }

    /// The valid ticket the request carries, if any.
    pub(super) fn ticket(&self, headers: &http::HeaderMap) -> Option<Token> {
        token::cookie(headers, &self.room.cookies.0).and_then(|v| {
            Token::verify(
                v,
                &self.cfg.keys,
                &self.cfg.name,
                Kind::Ticket,
                self.now.wall_ms,
            )
        })
    }

    /// Ticket `t` was exchanged for pass `pass_id`: the pass, the ticket cleared.
    pub(super) fn exchanged(&mut self, line: &mut Line, t: &Token, pass_id: u64) -> Decision {
        let clear = self.clear_cookie(&self.room.cookies.0);
        let d = self.new_pass(line, t.ticket, t.issued_ms, vec![clear], pass_id);
        self.room.observe_estimate(
            t.extra as f64,
            self.now.wall_ms.saturating_sub(t.issued_ms) as f64 / 1000.0,
        );
        d
    }

    /// The answer to a ticket still in line (`None`: it holds no place any more).
    pub(super) fn still_waiting(
        &mut self,
        line: &Line,
        t: &Token,
        standing: Standing,
    ) -> Option<Decision> {
        if !matches!(standing, Standing::Waiting { .. } | Standing::PreQueue) {
            return None;
        }
        let facts = facts_of(
            self.room, line, &self.cfg, t.ticket, t.id, standing, self.now,
        );
        Some(Decision::Answer(self.waiting(&facts, None)))
    }

    /// No usable token: sold out, refused over the client's ticket budget, let in
    /// (safety net, empty room) or given a number.
    fn new_arrival(&mut self, headers: &http::HeaderMap) -> Result<Decision, GatewayError> {
        if let Some(d) = self.before_a_number(headers)? {
            return Ok(d);
        }
        Ok(self.number_here())
    }

    /// A new arrival decided on this instance's own line: let in (safety net, empty
    /// room), or a number.
    pub(super) fn number_here(&mut self) -> Decision {
        let (room, now) = (self.room, self.now);
        let mut line = room.line();
        if self.cfg.mode == Mode::SafetyNet
            && !line.anyone_waiting()
            && line.active() < line.settings.active_users
        {
            return self.new_pass(&mut line, 0, now.wall_ms, Vec::new(), rand::random());
        }
        let issued = line.issue(now, self.prefix);
        room.metrics().issued.inc();
        if line.is_open() {
            // The line may have room and budget right now: no need to wait for a tick.
            line.advance(now);
        }
        if line.standing(issued.ticket) == Standing::Admitted && line.claim(issued.ticket).is_ok() {
            return self.new_pass(
                &mut line,
                issued.ticket,
                now.wall_ms,
                Vec::new(),
                rand::random(),
            );
        }
        self.numbered(&line, issued)
    }

    /// What comes before taking a number: sold out or closed, the proof of work, the
    /// client's ticket budget. `None`: go on and take one.
    pub(super) fn before_a_number(
        &mut self,
        headers: &http::HeaderMap,
    ) -> Result<Option<Decision>, GatewayError> {
        let (room, now) = (self.room, self.now);
        let cfg = self.cfg.clone();
        let closed = cfg.closes_at.is_some_and(|c| now.wall_ms >= c);
        if cfg.mode == Mode::Reject || closed {
            let facts = Facts {
                room: cfg.name.clone(),
                state: PageState::SoldOut,
                ticket: None,
                position: None,
                people_ahead: None,
                ahead_at_arrival: None,
                wait: None,
                updated_ms: now.wall_ms,
                poll_after: 60,
                opens_at_ms: cfg.opens_at,
            };
            return Ok(Some(Decision::Answer(sold_out(
                &cfg, self.lang, self.json, &facts,
            ))));
        }
        // === proof of work before a ticket (pow.rs), checked before the per-client
        // limit so unsolved asks spend none of it ===
        if let Some(pow) = &cfg.proof_of_work {
            let gate = super::pow::gate(
                pow,
                &cfg,
                headers,
                self.lang,
                self.json,
                now.wall_ms,
                self.secure,
            );
            if let Some(answer) = gate {
                return Ok(Some(Decision::Answer(answer)));
            }
        }
        if let Some(pfx) = self.prefix {
            if !room
                .limiter()
                .allow(pfx, now.mono_ms, cfg.tickets_per_minute_per_client)
            {
                return Err(GatewayError::TicketRateLimited {
                    retry_after: 60 - (now.mono_ms / 1000) % 60,
                });
            }
        }
        Ok(None)
    }

    /// No number yet (a shared line re-seeded a moment ago): the waiting page, asked
    /// again in a second.
    pub(super) fn ask_again_soon(&mut self) -> Decision {
        let facts = Facts {
            room: self.cfg.name.clone(),
            state: PageState::Waiting,
            ticket: None,
            position: None,
            people_ahead: None,
            ahead_at_arrival: None,
            wait: None,
            updated_ms: self.now.wall_ms,
            poll_after: 1,
            opens_at_ms: self.cfg.opens_at,
        };
        Decision::Answer(self.waiting(&facts, None))
    }

    /// The answer to a visitor who just took number `issued`: its standing and cookie.
    pub(super) fn numbered(&mut self, line: &Line, issued: Issued) -> Decision {
        let (room, now) = (self.room, self.now);
        let cfg = self.cfg.clone();
        let standing = line.standing(issued.ticket);
        let facts = facts_of(room, line, &cfg, issued.ticket, issued.front, standing, now);
        let ticket = Token {
            kind: Kind::Ticket,
            room: cfg.name.clone(),
            ticket: issued.ticket,
            issued_ms: now.wall_ms,
            expires_ms: now.wall_ms + cfg.ticket_ttl.as_millis() as u64,
            // The prediction shown now, midpoint of the range, to measure our error later.
            extra: facts.wait.map_or(0, |(l, h)| (l + h) / 2),
            id: issued.front,
        };
        let c = cookie(
            &room.cookies.0,
            &ticket.sign(&cfg.keys),
            cfg.ticket_ttl.as_secs(),
            self.secure,
        );
        Decision::Answer(self.waiting(&facts, Some(c)))
    }

    /// A new pass `id`, counted from now, for `ticket` issued at `ticket_issued`.
    pub(super) fn new_pass(
        &mut self,
        line: &mut Line,
        ticket: u64,
        ticket_issued: u64,
        mut cookies: Vec<HeaderValue>,
        id: u64,
    ) -> Decision {
        let (now, session_ms) = (self.now, self.session_ms());
        let pass = Token {
            kind: Kind::Pass,
            room: self.cfg.name.clone(),
            ticket,
            issued_ms: now.wall_ms,
            expires_ms: now.wall_ms + session_ms,
            extra: ticket_issued,
            id,
        };
        line.pass_started(pass.id, now.mono_ms + session_ms);
        // The admitting request is the pass's first use (its network, its rate).
        line.check_pass(pass.id, now.mono_ms + session_ms, now, self.prefix);
        cookies.insert(
            0,
            cookie(
                &self.room.cookies.1,
                &pass.sign(&self.cfg.keys),
                session_ms.div_ceil(1000),
                self.secure,
            ),
        );
        self.admitted(pass, cookies)
    }

    /// Forward with the pass, or (a status poll) answer "admitted".
    fn admitted(&mut self, token: Token, mut cookies: Vec<HeaderValue>) -> Decision {
        cookies.append(&mut self.clear);
        if !self.poll {
            return Decision::Pass { token, cookies };
        }
        let facts = Facts {
            room: self.room.name.clone(),
            state: PageState::Admitted,
            ticket: Some(token.ticket),
            position: Some(0),
            people_ahead: Some(0),
            ahead_at_arrival: None,
            wait: Some((0, 0)),
            updated_ms: self.now.wall_ms,
            poll_after: 1,
            opens_at_ms: None,
        };
        let mut resp = plain(
            StatusCode::OK,
            "application/json",
            page::json(self.lang, &facts),
        );
        for c in cookies {
            resp.headers_mut().append(SET_COOKIE, c);
        }
        Decision::Answer(resp)
    }

    fn waiting(&mut self, facts: &Facts, cookie: Option<HeaderValue>) -> Response<Body> {
        let mut resp = waiting_answer(&self.cfg, self.lang, self.json, facts, cookie);
        for c in self.clear.drain(..) {
            resp.headers_mut().append(SET_COOKIE, c);
        }
        resp
    }
}

/// The facts shown to the holder of `ticket` (issued with the front at `front`).
fn facts_of(
    room: &Room,
    line: &Line,
    cfg: &RoomConfig,
    ticket: u64,
    front: u64,
    standing: Standing,
    now: Now,
) -> Facts {
    let (state, ahead) = match standing {
        Standing::Waiting { ahead } if line.paused => (PageState::Paused, Some(ahead)),
        Standing::Waiting { ahead } => (PageState::Waiting, Some(ahead)),
        _ => (PageState::PreQueue, None),
    };
    // Paused: no promise at all. Otherwise the smoothed achieved rate.
    let wait = ahead
        .filter(|_| !line.paused)
        .and_then(|a| line.expected_wait(a));
    // No wait to go by (paused, nothing admitted): poll as rarely as allowed.
    let poll_after = page::poll_after(wait.map_or(u64::MAX / 2, |w| w.0), cfg.abandon_after);
    Facts {
        room: room.name.clone(),
        state,
        ticket: Some(ticket),
        position: ahead.map(|a| a + 1),
        people_ahead: ahead,
        ahead_at_arrival: ahead.and(line.ahead_at_arrival(ticket, front)),
        wait,
        updated_ms: now.wall_ms,
        poll_after,
        opens_at_ms: cfg.opens_at,
    }
}

fn plain(status: StatusCode, content_type: &'static str, body: String) -> Response<Body> {
    let mut resp = Response::new(body::full(body));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        VARY,
        HeaderValue::from_static("Accept, Accept-Language, Cookie"),
    );
    resp
}

fn waiting_answer(
    cfg: &RoomConfig,
    lang: page::Lang,
    json: bool,
    facts: &Facts,
    cookie: Option<HeaderValue>,
) -> Response<Body> {
    let mut resp = if json {
        plain(
            cfg.waiting_status,
            "application/json",
            page::json(lang, facts),
        )
    } else {
        plain(
            cfg.waiting_status,
            "text/html; charset=utf-8",
            page::html(&cfg.template, lang, facts),
        )
    };
    resp.headers_mut()
        .insert(RETRY_AFTER, HeaderValue::from(facts.poll_after.max(1)));
    if let Some(c) = cookie {
        resp.headers_mut().append(SET_COOKIE, c);
    }
    resp
}

/// Sold out (mode `reject`) or closed (after `closes_at`): 503, no `Retry-After`
/// (coming back will not help), `no-store`.
fn sold_out(cfg: &RoomConfig, lang: page::Lang, json: bool, facts: &Facts) -> Response<Body> {
    if json {
        plain(
            StatusCode::SERVICE_UNAVAILABLE,
            "application/json",
            page::json(lang, facts),
        )
    } else {
        plain(
            StatusCode::SERVICE_UNAVAILABLE,
            "text/html; charset=utf-8",
            page::html(&cfg.template, lang, facts),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::waiting_room::metrics::Families;
    use crate::waiting_room::state::Now;

    #[test]
    fn a_session_header_from_a_stored_copy_is_removed_and_never_obeyed() {
        for (status, obeyed) in [
            (None, true),
            (Some("floodgate; fwd=uri-miss; stored"), true),
            (Some("floodgate; hit; ttl=3"), false),
            (Some("floodgate; fwd=uri-miss; collapsed"), false),
            (Some("floodgate; fwd=stale; fwd-status=502"), false),
        ] {
            let mut resp = Response::new(body::empty());
            resp.headers_mut()
                .insert(SESSION_HEADER, HeaderValue::from_static("end"));
            if let Some(c) = status {
                resp.headers_mut()
                    .insert(&crate::cache::service::CACHE_STATUS, c.parse().unwrap());
            }
            assert_eq!(
                take_session_directive(&mut resp).is_some(),
                obeyed,
                "{status:?}"
            );
            assert!(!resp.headers().contains_key(SESSION_HEADER));
        }
    }

    #[test]
    fn the_facts_carry_people_ahead_at_arrival_and_say_paused_without_a_wait() {
        let families = Families::register(&prometheus::Registry::new());
        let room = Room::new(RoomConfig::new("sale", 1, 60), families.room("sale"));
        let cfg = room.config();
        let now = Now {
            mono_ms: 10,
            wall_ms: 1_700_000_000_000,
        };
        let mut line = room.line();
        for _ in 0..10 {
            line.issue(now, None);
        }
        line.advance(now);
        let s = line.standing(8);
        let f = facts_of(&room, &line, &cfg, 8, 0, s, now);
        assert_eq!(f.state, PageState::Waiting);
        assert_eq!(f.people_ahead, Some(6));
        assert_eq!(f.ahead_at_arrival, Some(7));
        assert!(f.wait.is_some());
        line.paused = true;
        let f = facts_of(&room, &line, &cfg, 8, 0, s, now);
        assert_eq!(f.state, PageState::Paused);
        assert_eq!(f.wait, None);
        assert_eq!(f.position, Some(7));
        assert!(f.poll_after >= 15, "a paused room is polled rarely");
    }
}
