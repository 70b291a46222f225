//! Memory with a million visitors holding tickets: issues 1,000,000 tickets through
//! the real waiting-room layer (signing, counters, the JSON waiting answer) in process,
//! then polls 100,000 of them, printing resident memory along the way and the polls
//! answered per second.
//!
//!     cargo run --release --example waiting_room_million

use std::time::Instant;

use floodgate::body::{self, Body};
use floodgate::error::GatewayError;
use floodgate::waiting_room::{metrics::Families, Room, RoomConfig, WaitingRoomLayer};
use http::{Request, Response};
use tower::{Layer, Service, ServiceExt};

fn rss_mib() -> f64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let registry = prometheus::Registry::new();
    let families = Families::register(&registry);
    let mut cfg = RoomConfig::new("sale", 1, 1);
    cfg.tickets_per_minute_per_client = 0;
    let room = Room::new(cfg, families.room("sale"));
    let origin = tower::service_fn(|_req: Request<Body>| async {
        Ok::<Response<Body>, GatewayError>(Response::new(body::empty()))
    });
    let mut svc = WaitingRoomLayer::new(room.clone()).layer(origin);
    println!("start: RSS {:.1} MiB", rss_mib());
    let started = Instant::now();
    for i in 0..1_000_000u32 {
        let req = Request::get("/")
            .header("accept", "application/json")
            .body(body::empty())
            .unwrap();
        let resp = svc.ready().await.unwrap().call(req).await.unwrap();
        assert!(resp.headers().contains_key("set-cookie"));
        if (i + 1) % 250_000 == 0 {
            println!(
                "{} tickets: RSS {:.1} MiB, line state {} bytes",
                i + 1,
                rss_mib(),
                room.line().state_bytes()
            );
        }
    }
    println!(
        "issued 1,000,000 in {:.1} s ({:.0}/s); RSS {:.1} MiB",
        started.elapsed().as_secs_f64(),
        1e6 / started.elapsed().as_secs_f64(),
        rss_mib(),
    );
    // Polls by holders of tickets 1..100k (their cookies re-signed here: the signing
    // cost is included in the figure, an overestimate of the poll's cost).
    let keys = room.config().keys.clone();
    let now = floodgate::waiting_room::config::unix_ms(std::time::SystemTime::now());
    let cookie = |t: u64| {
        let tok = floodgate::waiting_room::token::Token {
            kind: floodgate::waiting_room::token::Kind::Ticket,
            room: "sale".into(),
            ticket: t,
            issued_ms: now,
            expires_ms: now + 3_600_000,
            extra: 0,
            id: 0,
        };
        format!("fg_ticket_sale={}", tok.sign(&keys))
    };
    let polls = 100_000u64;
    let started = Instant::now();
    for t in 1..=polls {
        let c = cookie(t * 10);
        let req = Request::get("/")
            .header("accept", "application/json")
            .header("x-floodgate-poll", "1")
            .header("cookie", c)
            .body(body::empty())
            .unwrap();
        let _ = svc.ready().await.unwrap().call(req).await.unwrap();
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{} status polls in {:.2} s: {:.0} polls/s on one core; RSS {:.1} MiB",
        polls,
        secs,
        polls as f64 / secs,
        rss_mib()
    );
    steady_state();
}

/// The estimate's error in a steady state, on the line itself with a simulated clock:
/// 10 admissions/s configured, 10 arrivals/s, a backlog of 600 at the start;
/// predicted = midpoint of the range shown at issue (measured rate), actual = time to
/// admission.
fn steady_state() {
    use floodgate::waiting_room::state::{Line, LineSettings, Now, Standing};
    use floodgate::waiting_room::Mode;
    let mut line = Line::new(
        LineSettings {
            active_users: 1_000_000,
            new_users_per_minute: 600,
            session_ms: 600_000,
            abandon_after_ms: 3_600_000,
            opens_at_ms: None,
            mode: Mode::Fifo,
            pass_requests_per_second: 0,
            pass_prefixes_per_minute: 0,
        },
        [9; 16],
    );
    let mut waiting: std::collections::VecDeque<(u64, u64, f64)> = Default::default();
    let (mut n, mut sum, mut sum_abs) = (0u64, 0.0, 0.0);
    let mut carry = 0.0;
    let at = |ms: u64| Now {
        mono_ms: ms,
        wall_ms: 1_700_000_000_000 + ms,
    };
    for _ in 0..600 {
        let t = line.issue(at(0), None).ticket;
        waiting.push_back((t, 0, f64::NAN));
    }
    let mut now = 0u64;
    while now < 1_800_000 {
        now += 50;
        carry += 10.0 * 0.05;
        while carry >= 1.0 {
            carry -= 1.0;
            let t = line.issue(at(now), None).ticket;
            let ahead = match line.standing(t) {
                Standing::Waiting { ahead } => ahead,
                _ => 0,
            };
            let (lo, hi) = line.expected_wait(ahead).unwrap_or((0, 0));
            waiting.push_back((t, now, (lo + hi) as f64 / 2.0));
        }
        line.advance(at(now));
        while let Some(&(t, at, predicted)) = waiting.front() {
            if line.standing(t) != Standing::Admitted {
                break;
            }
            waiting.pop_front();
            // Skip the warm-up (first 5 minutes) and the initial backlog.
            if !predicted.is_nan() && at > 300_000 {
                let e = predicted - (now - at) as f64 / 1000.0;
                n += 1;
                sum += e;
                sum_abs += e.abs();
            }
        }
    }
    println!(
        "steady state: {n} admitted visitors, estimate error mean {:+.2} s, mean |error| {:.2} s (waits around {:.0} s)",
        sum / n as f64,
        sum_abs / n as f64,
        line.waiting() as f64 / 10.0
    );
}
