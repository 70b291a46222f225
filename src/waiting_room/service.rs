//! The tower layer: pass holders through, everyone else to the waiting answer.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::SystemTime;

use futures_util::FutureExt;
use http::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE, RETRY_AFTER, SET_COOKIE, VARY};
use http::{HeaderName, Request, Response, StatusCode};
use tower::{Layer, Service};

use super::config::{unix_ms, Mode};
use super::page::{self, Facts, PageState};
use super::state::Standing;
use super::token::{self, Kind, Token, PASS_COOKIE, TICKET_COOKIE};
use super::{Admitted, Room};
use crate::body::{self, Body};
use crate::error::GatewayError;
use crate::proxy::RequestContext;

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
enum Decision {
    /// Not guarded: forward untouched.
    Through,
    /// Admitted: forward, with a pass (current expiry) and cookies to set.
    Pass {
        expires_ms: u64,
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

    fn call(&mut self, mut req: Request<Body>) -> BoxFuture {
        let decision = match decide(&self.room, &req) {
            Ok(d) => d,
            Err(e) => return Box::pin(async move { Err(e) }),
        };
        let (expires_ms, pass, cookies) = match decision {
            Decision::Answer(resp) => return Box::pin(async move { Ok(resp) }),
            Decision::Through => {
                let fut = self.inner.call(req);
                return Box::pin(fut);
            }
            Decision::Pass {
                expires_ms,
                token,
                cookies,
            } => (expires_ms, token, cookies),
        };
        req.extensions_mut().insert(Admitted);
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);

        let room = self.room.clone();
        let secure = req
            .extensions()
            .get::<RequestContext>()
            .is_some_and(|c| c.scheme == "https");
        let fut = inner.call(req);
        // A combinator, not an async block: awaiting `S::Future` inside one trips
        // rustc's higher-ranked Send check on the boxed body's error type (rust#102211).
        Box::pin(
            fut.map(move |r| r.map(|resp| finish(resp, &room, cookies, expires_ms, pass, secure))),
        )
    }
}

/// Applies the origin's session directive and sets the pass cookies.
fn finish(
    mut resp: Response<Body>,
    room: &Room,
    mut cookies: Vec<HeaderValue>,
    expires_ms: u64,
    pass: Token,
    secure: bool,
) -> Response<Body> {
    if let Some(v) = resp.headers_mut().remove(SESSION_HEADER) {
        if let Some(c) = session_directive(room, v, expires_ms, pass, secure) {
            // The origin's word replaces the renewal we were about to send.
            cookies.retain(|c| !c.as_bytes().starts_with(PASS_COOKIE.as_bytes()));
            cookies.push(c);
        }
    }
    for c in cookies {
        resp.headers_mut().append(SET_COOKIE, c);
    }
    resp
}

/// Applies `X-Floodgate-Session: end | extend=DURATION` and returns the pass cookie.
fn session_directive(
    room: &Room,
    v: HeaderValue,
    expires_ms: u64,
    mut pass: Token,
    secure: bool,
) -> Option<HeaderValue> {
    let v = v.to_str().ok()?.trim().to_ascii_lowercase();
    let now = unix_ms(SystemTime::now());
    if v == "end" {
        room.line().pass_moved(expires_ms, None);
        return Some(cookie(PASS_COOKIE, "", 0, secure));
    }
    let d = crate::config::units::duration(v.strip_prefix("extend=")?.trim()).ok()?;
    let new = (now + d.as_millis() as u64).max(expires_ms);
    room.line().pass_moved(expires_ms, Some(new));
    pass.expires_ms = new;
    let cfg = room.config();
    Some(cookie(
        PASS_COOKIE,
        &pass.sign(&cfg.keys),
        (new - now).div_ceil(1000),
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

fn decide(room: &Room, req: &Request<Body>) -> Result<Decision, GatewayError> {
    let cfg = room.config();
    let poll = req.headers().contains_key(POLL_HEADER);
    if !poll && !cfg.guards(req.uri().path()) {
        return Ok(Decision::Through);
    }
    let ctx = req.extensions().get::<RequestContext>();
    let secure = ctx.is_some_and(|c| c.scheme == "https");
    let now = unix_ms(SystemTime::now());
    let headers = req.headers();
    let lang = page::language(headers);
    let json = poll || crate::respond::wants_json(headers);
    let session_ms = cfg.session_duration.as_millis() as u64;

    // A valid pass: straight through, renewed (sliding) once a tenth of it is used.
    if let Some(p) = token::cookie(headers, PASS_COOKIE)
        .and_then(|v| Token::verify(v, &cfg.keys, &cfg.name, Kind::Pass, now))
    {
        let mut cookies = Vec::new();
        let mut expires = p.expires_ms;
        let mut pass = p.clone();
        if p.expires_ms < now + session_ms - session_ms / 10 {
            expires = now + session_ms;
            room.line().pass_moved(p.expires_ms, Some(expires));
            pass.expires_ms = expires;
            cookies.push(cookie(
                PASS_COOKIE,
                &pass.sign(&cfg.keys),
                session_ms / 1000,
                secure,
            ));
        }
        return Ok(admitted(room, poll, lang, now, expires, pass, cookies));
    }

    let new_pass = |ticket: u64, ticket_issued: u64| {
        let pass = Token {
            kind: Kind::Pass,
            room: cfg.name.clone(),
            ticket,
            issued_ms: now,
            expires_ms: now + session_ms,
            extra: ticket_issued,
        };
        let c = cookie(
            PASS_COOKIE,
            &pass.sign(&cfg.keys),
            session_ms.div_ceil(1000),
            secure,
        );
        (pass, c)
    };
    let clear_ticket = cookie(TICKET_COOKIE, "", 0, secure);

    if cfg.mode == Mode::Passthrough {
        let (pass, c) = new_pass(0, now);
        room.line().pass_started(pass.expires_ms, false);
        return Ok(admitted(
            room,
            poll,
            lang,
            now,
            pass.expires_ms,
            pass,
            vec![c],
        ));
    }

    // A valid ticket: where does it stand?
    if let Some(t) = token::cookie(headers, TICKET_COOKIE)
        .and_then(|v| Token::verify(v, &cfg.keys, &cfg.name, Kind::Ticket, now))
    {
        let mut line = room.line();
        line.polled(t.ticket, now);
        let standing = line.standing(t.ticket);
        if standing == Standing::Admitted {
            let (pass, c) = new_pass(t.ticket, t.issued_ms);
            line.pass_started(pass.expires_ms, true);
            drop(line);
            room.observe_estimate(
                t.extra as f64,
                now.saturating_sub(t.issued_ms) as f64 / 1000.0,
            );
            return Ok(admitted(
                room,
                poll,
                lang,
                now,
                pass.expires_ms,
                pass,
                vec![c, clear_ticket],
            ));
        }
        let facts = facts_of(room, &line, &cfg, t.ticket, standing, now);
        drop(line);
        return Ok(Decision::Answer(waiting_answer(
            &cfg, lang, json, &facts, None,
        )));
    }

    // No ticket: a new arrival.
    let closed = cfg.closes_at.is_some_and(|c| now >= c);
    if cfg.mode == Mode::Reject || closed {
        let facts = Facts {
            room: cfg.name.clone(),
            state: PageState::SoldOut,
            ticket: None,
            position: None,
            people_ahead: None,
            ahead_at_arrival: None,
            wait: None,
            updated_ms: now,
            poll_after: 60,
            opens_at_ms: cfg.opens_at,
        };
        return Ok(Decision::Answer(sold_out(&cfg, lang, json, &facts)));
    }
    // === proof of work before a ticket (pow.rs), checked before the per-client
    // limit so unsolved asks spend none of it ===
    if let Some(pow) = &cfg.proof_of_work {
        if let Some(answer) = super::pow::gate(pow, &cfg, headers, lang, json, now, secure) {
            return Ok(Decision::Answer(answer));
        }
    }
    if let Some(ip) = ctx.map(|c| c.client_ip) {
        if !room
            .limiter()
            .allow(ip, now, cfg.tickets_per_minute_per_client)
        {
            return Err(GatewayError::TicketRateLimited {
                retry_after: 60 - (now / 1000) % 60,
            });
        }
    }
    let mut line = room.line();
    if cfg.mode == Mode::SafetyNet
        && !line.anyone_waiting()
        && line.active() < line.settings.active_users
    {
        let (pass, c) = new_pass(0, now);
        line.pass_started(pass.expires_ms, false);
        drop(line);
        return Ok(admitted(
            room,
            poll,
            lang,
            now,
            pass.expires_ms,
            pass,
            vec![c],
        ));
    }
    let number = line.issue(now);
    room.metrics().issued.inc();
    if line.is_open() {
        // The line may have room and budget right now: no need to wait for a tick.
        line.advance(now);
    }
    let standing = line.standing(number);
    if standing == Standing::Admitted {
        let (pass, c) = new_pass(number, now);
        line.pass_started(pass.expires_ms, true);
        drop(line);
        return Ok(admitted(
            room,
            poll,
            lang,
            now,
            pass.expires_ms,
            pass,
            vec![c],
        ));
    }
    let mut facts = facts_of(room, &line, &cfg, number, standing, now);
    // Known at issue (page.rs's progress bar); later polls: the page's script keeps it.
    facts.ahead_at_arrival = facts.people_ahead;
    drop(line);
    let ticket = Token {
        kind: Kind::Ticket,
        room: cfg.name.clone(),
        ticket: number,
        issued_ms: now,
        expires_ms: now + cfg.ticket_ttl.as_millis() as u64,
        // The prediction shown now, midpoint of the range, to measure our error later.
        extra: facts.wait.map_or(0, |(l, h)| (l + h) / 2),
    };
    let c = cookie(
        TICKET_COOKIE,
        &ticket.sign(&cfg.keys),
        cfg.ticket_ttl.as_secs(),
        secure,
    );
    Ok(Decision::Answer(waiting_answer(
        &cfg,
        lang,
        json,
        &facts,
        Some(c),
    )))
}

fn admitted(
    room: &Room,
    poll: bool,
    lang: page::Lang,
    now: u64,
    expires_ms: u64,
    token: Token,
    cookies: Vec<HeaderValue>,
) -> Decision {
    if !poll {
        return Decision::Pass {
            expires_ms,
            token,
            cookies,
        };
    }
    let facts = Facts {
        room: room.name.clone(),
        state: PageState::Admitted,
        ticket: Some(token.ticket),
        position: Some(0),
        people_ahead: Some(0),
        ahead_at_arrival: None,
        wait: Some((0, 0)),
        updated_ms: now,
        poll_after: 1,
        opens_at_ms: None,
    };
    let mut resp = plain(StatusCode::OK, "application/json", page::json(lang, &facts));
    for c in cookies {
        resp.headers_mut().append(SET_COOKIE, c);
    }
    Decision::Answer(resp)
}

fn facts_of(
    room: &Room,
    line: &super::state::Line,
    cfg: &super::RoomConfig,
    ticket: u64,
    standing: Standing,
    now: u64,
) -> Facts {
    let (state, ahead) = match standing {
        // A paused line says so and shows no expected wait (page.rs).
        Standing::Waiting { ahead } if line.paused => (PageState::Paused, Some(ahead)),
        Standing::Waiting { ahead } => (PageState::Waiting, Some(ahead)),
        _ => (PageState::PreQueue, None),
    };
    let wait = ahead.map(|a| line.expected_wait(a));
    let poll_after = page::poll_after(wait.map_or(0, |w| w.0), cfg.abandon_after);
    Facts {
        room: room.name.clone(),
        state,
        ticket: Some(ticket),
        position: ahead.map(|a| a + 1),
        people_ahead: ahead,
        ahead_at_arrival: None,
        wait,
        updated_ms: now,
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
    cfg: &super::RoomConfig,
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
fn sold_out(
    cfg: &super::RoomConfig,
    lang: page::Lang,
    json: bool,
    facts: &Facts,
) -> Response<Body> {
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
