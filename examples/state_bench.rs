//! Throughput and p99 with the local state backend and with Redis, in the same run,
//! for a rate-limited route and for a pass holder's request, and the Redis commands
//! each kind of request costs (issue 13).
//!
//! ```text
//! cargo run --release --example state_bench [-- SECONDS [CONNECTIONS] [--gen-cpu N]]
//! taskset -c 0 target/release/examples/state_bench 5 32 --gen-cpu 1
//! ```
//!
//! Loopback only; needs `redis-server` on the PATH (and `taskset` for `--gen-cpu`).
//! This process runs the shop, both gateways and (as its child) `redis-server`; the
//! load generator is a second process, this same example with `gen` as its first
//! argument, started once per phase and run under `taskset -c N` when `--gen-cpu N`
//! is given. Pin this process with `taskset -c 0` and redis-server inherits it, unless
//! `STATE_BENCH_REDIS_CPU=N` puts it on core N.
//!
//! Closed model: CONNECTIONS keep-alive connections, each sending its next request
//! when the previous answer is in; each phase is bounded by SECONDS and by
//! MAX_REQUESTS. Every round measures, local then Redis (ROUNDS rounds, medians):
//!
//! - **rate-limited**: `GET /fast` on a route with one per-client limit;
//! - **pass holder**: `GET /fast` with a pass of room `big` (fifo, 1,000,000 places),
//!   which each connection first obtains (a number, then its turn) before the clock
//!   starts;
//!
//! and, Redis only, for the commands they cost: a **status poll** (`X-Floodgate-Poll:
//! 1` with a ticket of room `full`, whose one place is taken, so the visitor waits)
//! and a **new arrival** (no cookie: a number from room `arrive`, also full).
//! Commands per request: the `INFO commandstats` delta over the phase divided by its
//! requests (raw), and the same minus the delta of an idle interval as long, measured
//! right after (net: heartbeats and each room's advance every tick are background).

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::{Duration, Instant};

use bytes::Bytes;
use floodgate::shop::{self, ShopProfile};
use floodgate::Gateway;
use http::header::{COOKIE, SET_COOKIE};
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

/// A hard bound on each phase, whatever the duration asked.
const MAX_REQUESTS: usize = 200_000;
/// Rounds of every phase; the summary gives their medians.
const ROUNDS: usize = 3;
/// Attempts to get a pass (or a ticket) before a phase, 10 ms apart.
const MAX_SETUP_TRIES: usize = 500;
/// Signs tickets and passes of both gateways, so passes validate wherever issued.
const KEY: &str = "state-bench-fixed-signing-key-0123456789";

/// What one phase sends.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// `GET /fast` on a route with one per-client rate limit.
    Limited,
    /// `GET /fast` with a valid pass of room `big`.
    Pass,
    /// A status poll with a ticket of room `full` (the visitor waits).
    Poll,
    /// No cookie: a new arrival takes a number in room `arrive` (full).
    Arrive,
}

impl Kind {
    const ALL: [Kind; 4] = [Kind::Limited, Kind::Pass, Kind::Poll, Kind::Arrive];

    fn arg(self) -> &'static str {
        match self {
            Kind::Limited => "limited",
            Kind::Pass => "pass",
            Kind::Poll => "poll",
            Kind::Arrive => "arrive",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Kind::Limited => "rate-limited",
            Kind::Pass => "pass holder",
            Kind::Poll => "status poll",
            Kind::Arrive => "new arrival",
        }
    }

    fn host(self) -> &'static str {
        match self {
            Kind::Limited => "limited.test",
            Kind::Pass => "sale.test",
            Kind::Poll => "poll.test",
            Kind::Arrive => "arrive.test",
        }
    }

    fn parse(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.arg() == s)
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn config(shop: SocketAddr, key_file: &str, state: &str) -> String {
    let room = |name: &str, host: &str, extra: &str| {
        format!(
            "[[route]]\nname = \"{name}\"\nhosts = [\"{host}\"]\nupstream = \"shop\"\nwaiting_room = \"{name}\"\n\
             [[waiting_room]]\nname = \"{name}\"\nmode = \"fifo\"\nkey_file = \"{key_file}\"\n\
             tickets_per_minute_per_client = 0\n{extra}\n"
        )
    };
    // `full` and `arrive`: one place, taken for the whole run; nobody is skipped.
    let full = "active_users = 1\nnew_users_per_minute = 60\nsession_duration = \"1h\"\nabandon_after = \"1h\"";
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n[log]\naccess_log = false\n\
         [[upstream]]\nname = \"shop\"\nservers = [\"{shop}\"]\n\
         [[route]]\nname = \"limited\"\nhosts = [\"limited.test\"]\nupstream = \"shop\"\n\
         rate_limits = [{{ name = \"per-ip\", key = \"client_ip\", rate = \"1000000/s\", burst = 1000000 }}]\n{}{}{}{state}",
        room(
            "big",
            "sale.test",
            "active_users = 1000000\nnew_users_per_minute = 6000000"
        ),
        room("full", "poll.test", full),
        room("arrive", "arrive.test", full),
    )
}

/// The CPUs this process may run on (`Cpus_allowed_list`), to show the pinning.
fn cpus_of(pid: &str) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
                .map(|v| v.trim().to_string())
        })
        .unwrap_or_else(|| "?".into())
}

// ---------------------------------------------------------------- the generator

/// Cookies of one visitor.
#[derive(Default)]
struct Jar(Vec<(String, String)>);

impl Jar {
    fn update(&mut self, resp: &http::HeaderMap) {
        for v in resp.get_all(SET_COOKIE) {
            let Some((name, rest)) = v.to_str().ok().and_then(|s| s.split_once('=')) else {
                continue;
            };
            let value = rest.split(';').next().unwrap_or("");
            self.0.retain(|(n, _)| n != name);
            if !value.is_empty() && !rest.contains("Max-Age=0;") {
                self.0.push((name.to_string(), value.to_string()));
            }
        }
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn header(&self) -> String {
        let pairs: Vec<String> = self.0.iter().map(|(n, v)| format!("{n}={v}")).collect();
        pairs.join("; ")
    }
}

struct Answer {
    status: http::StatusCode,
    headers: http::HeaderMap,
    body: Bytes,
}

impl Answer {
    /// The shop's `/fast` answer, i.e. the request went through the room.
    fn through(&self) -> bool {
        self.status == 200 && self.body.as_ref() == b"ok\n"
    }

    fn sets(&self, cookie: &str) -> bool {
        self.headers.get_all(SET_COOKIE).iter().any(|v| {
            v.as_bytes().starts_with(cookie.as_bytes())
                && v.as_bytes().get(cookie.len()) == Some(&b'=')
        })
    }
}

async fn connect(gw: SocketAddr) -> SendRequest<Full<Bytes>> {
    let stream = tokio::net::TcpStream::connect(gw).await.unwrap();
    stream.set_nodelay(true).unwrap();
    let (tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    tx
}

async fn send(tx: &mut SendRequest<Full<Bytes>>, host: &str, cookie: &str, poll: bool) -> Answer {
    let mut req = Request::get("/fast").header("host", host);
    if !cookie.is_empty() {
        req = req.header(COOKIE, cookie);
    }
    if poll {
        req = req.header("x-floodgate-poll", "1");
    }
    tx.ready().await.unwrap();
    let resp = tx
        .send_request(req.body(Full::<Bytes>::default()).unwrap())
        .await
        .unwrap();
    let (parts, body) = resp.into_parts();
    Answer {
        status: parts.status,
        headers: parts.headers,
        body: body.collect().await.unwrap().to_bytes(),
    }
}

/// Visits `host` until the room sets cookie `want`; returns the cookie header to send.
async fn obtain(
    tx: &mut SendRequest<Full<Bytes>>,
    host: &str,
    want: &str,
) -> Result<String, String> {
    let mut jar = Jar::default();
    for _ in 0..MAX_SETUP_TRIES {
        let a = send(tx, host, &jar.header(), false).await;
        jar.update(&a.headers);
        if let Some(v) = jar.get(want) {
            return Ok(format!("{want}={v}"));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Err(format!(
        "no {want} cookie from {host} after {MAX_SETUP_TRIES} tries"
    ))
}

/// One connection's phase: latencies, unexpected answers, pass renewals.
async fn run_conn(
    mut tx: SendRequest<Full<Bytes>>,
    kind: Kind,
    cookie: String,
    end: Instant,
    per_conn: usize,
) -> (Vec<Duration>, u64, u64) {
    let (mut lat, mut bad, mut renewed) = (Vec::with_capacity(per_conn.min(65_536)), 0, 0);
    while Instant::now() < end && lat.len() < per_conn {
        let t = Instant::now();
        let a = send(&mut tx, kind.host(), &cookie, kind == Kind::Poll).await;
        lat.push(t.elapsed());
        let ok = match kind {
            Kind::Limited => a.through(),
            Kind::Pass => {
                renewed += a.sets("fg_pass_big") as u64;
                a.through()
            }
            Kind::Poll => a.status == 200 && !a.through() && !a.sets("fg_pass_full"),
            Kind::Arrive => a.status == 200 && !a.through() && a.sets("fg_ticket_arrive"),
        };
        bad += !ok as u64;
    }
    (lat, bad, renewed)
}

fn pct(l: &[Duration], p: f64) -> f64 {
    if l.is_empty() {
        return f64::NAN;
    }
    l[((l.len() as f64 * p) as usize).min(l.len() - 1)].as_secs_f64() * 1000.0
}

/// `gen KIND ADDR SECS CONNS`: sets up, says `ready CPUS`, waits for a line on stdin,
/// runs the phase, says `result N ELAPSED_S P50_MS P99_MS MAX_MS BAD RENEWED`.
async fn generator(args: &[String]) {
    let kind = Kind::parse(&args[0]).expect("kind: limited, pass, poll or arrive");
    let gw: SocketAddr = args[1].parse().expect("gateway address");
    assert!(gw.ip().is_loopback(), "loopback only");
    let secs: u64 = args[2].parse::<u64>().expect("seconds").min(60);
    let conns: usize = args[3].parse::<usize>().expect("connections").clamp(1, 512);

    let mut setups = Vec::new();
    for _ in 0..conns {
        setups.push(tokio::spawn(async move {
            let mut tx = connect(gw).await;
            let cookie = match kind {
                Kind::Limited | Kind::Arrive => String::new(),
                Kind::Pass => obtain(&mut tx, kind.host(), "fg_pass_big").await?,
                Kind::Poll => obtain(&mut tx, kind.host(), "fg_ticket_full").await?,
            };
            Ok::<_, String>((tx, cookie))
        }));
    }
    let mut ready = Vec::new();
    for s in setups {
        match s.await.unwrap() {
            Ok(r) => ready.push(r),
            Err(e) => {
                eprintln!("state_bench gen: {e}");
                std::process::exit(2);
            }
        }
    }
    println!("ready {}", cpus_of("self"));
    let mut line = String::new();
    let stdin = BufReader::new(tokio::io::stdin());
    let go = tokio::time::timeout(Duration::from_secs(120), async move {
        let mut stdin = stdin;
        stdin.read_line(&mut line).await
    })
    .await;
    if !matches!(go, Ok(Ok(n)) if n > 0) {
        eprintln!("state_bench gen: no go");
        std::process::exit(2);
    }

    let start = Instant::now();
    let end = start + Duration::from_secs(secs);
    let per_conn = MAX_REQUESTS / conns;
    let tasks: Vec<_> = ready
        .into_iter()
        .map(|(tx, cookie)| tokio::spawn(run_conn(tx, kind, cookie, end, per_conn)))
        .collect();
    let (mut all, mut bad, mut renewed) = (Vec::new(), 0, 0);
    for t in tasks {
        let (l, b, r) = t.await.unwrap();
        all.extend(l);
        bad += b;
        renewed += r;
    }
    let elapsed = start.elapsed().as_secs_f64();
    all.sort();
    println!(
        "result {} {elapsed:.6} {:.6} {:.6} {:.6} {bad} {renewed}",
        all.len(),
        pct(&all, 0.50),
        pct(&all, 0.99),
        pct(&all, 1.0),
    );
}

// ---------------------------------------------------------------- the measuring side

type Stats = Vec<(String, u64)>;

/// Total calls of each command, from `INFO commandstats` (one connection for the run,
/// so connecting costs no command in between).
async fn commandstats(c: &mut redis::aio::MultiplexedConnection) -> Stats {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(c)
        .await
        .unwrap();
    info.lines()
        .filter_map(|l| {
            let (name, rest) = l.strip_prefix("cmdstat_")?.split_once(':')?;
            let calls = rest
                .split(',')
                .next()?
                .strip_prefix("calls=")?
                .parse()
                .ok()?;
            Some((name.to_string(), calls))
        })
        .collect()
}

/// after − before, per command, without our own `info`.
fn delta(before: &Stats, after: &Stats) -> Stats {
    after
        .iter()
        .filter(|(n, _)| n != "info")
        .map(|(n, c)| {
            let was = before.iter().find(|(m, _)| m == n).map_or(0, |x| x.1);
            (n.clone(), c - was)
        })
        .filter(|(_, d)| *d > 0)
        .collect()
}

fn calls(s: &Stats, name: &str) -> u64 {
    s.iter().find(|(n, _)| n == name).map_or(0, |x| x.1)
}

fn total(s: &Stats) -> u64 {
    s.iter().map(|x| x.1).sum()
}

/// How the generator is started: this executable, under taskset if asked.
struct Gen {
    exe: std::path::PathBuf,
    cpu: Option<String>,
}

/// One measured phase.
struct Phase {
    requests: u64,
    rps: f64,
    p50: f64,
    p99: f64,
    max: f64,
    bad: u64,
    renewed: u64,
    gen_cpus: String,
    /// Commands during the phase and the interval they were counted over.
    cmds: Stats,
    interval: Duration,
    /// Samples (every 10 ms) of the Redis gateway's backend gauge, and those at 0.
    samples: (u64, u64),
    /// Commands of an idle interval as long, right after (Redis phases only).
    idle: Option<(Stats, Duration)>,
}

impl Phase {
    /// (raw, net) commands per request of `name` (None: all of them).
    fn per_request(&self, name: Option<&str>) -> (f64, f64) {
        let count = |s: &Stats| name.map_or(total(s), |n| calls(s, n)) as f64;
        let raw = count(&self.cmds);
        let bg = self.idle.as_ref().map_or(0.0, |(s, d)| {
            count(s) * self.interval.as_secs_f64() / d.as_secs_f64()
        });
        let n = self.requests.max(1) as f64;
        (raw / n, (raw - bg) / n)
    }
}

async fn read_line(
    out: &mut tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
    within: Duration,
) -> String {
    match tokio::time::timeout(within, out.next_line()).await {
        Ok(Ok(Some(l))) => l,
        other => panic!("the generator did not answer: {other:?}"),
    }
}

#[allow(clippy::too_many_arguments)]
async fn phase(
    gen: &Gen,
    kind: Kind,
    gw: &Gateway,
    redis_gw: &Gateway,
    secs: u64,
    conns: usize,
    stats: &mut redis::aio::MultiplexedConnection,
    measure_idle: bool,
) -> Phase {
    let args = [
        "gen".to_string(),
        kind.arg().into(),
        gw.addr().to_string(),
        secs.to_string(),
        conns.to_string(),
    ];
    let mut cmd = match &gen.cpu {
        Some(cpu) => {
            let mut c = tokio::process::Command::new("taskset");
            c.arg("-c").arg(cpu).arg(&gen.exe);
            c
        }
        None => tokio::process::Command::new(&gen.exe),
    };
    let mut child = cmd
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("the generator starts");
    let mut stdin = child.stdin.take().unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap()).lines();
    let ready = read_line(&mut out, Duration::from_secs(60)).await;
    let gen_cpus = ready.strip_prefix("ready ").expect("ready").to_string();

    let gauge = redis_gw
        .metrics()
        .state_backend_up
        .with_label_values(&["redis"]);
    let (stop_tx, mut stop_rx) = tokio::sync::oneshot::channel::<()>();
    let sampler = tokio::spawn(async move {
        let (mut n, mut down) = (0u64, 0u64);
        let mut every = tokio::time::interval(Duration::from_millis(10));
        loop {
            tokio::select! {
                _ = every.tick() => {
                    n += 1;
                    down += (gauge.get() == 0) as u64;
                }
                _ = &mut stop_rx => return (n, down),
            }
        }
    });

    let before = commandstats(stats).await;
    let t0 = Instant::now();
    stdin.write_all(b"go\n").await.unwrap();
    stdin.flush().await.unwrap();
    let result = read_line(&mut out, Duration::from_secs(secs + 60)).await;
    let after = commandstats(stats).await;
    let interval = t0.elapsed();
    let _ = stop_tx.send(());
    let samples = sampler.await.unwrap();
    let _ = child.wait().await;

    let f: Vec<f64> = result
        .strip_prefix("result ")
        .expect("result")
        .split(' ')
        .map(|x| x.parse().unwrap())
        .collect();
    let idle = if measure_idle {
        let before = commandstats(stats).await;
        let t = Instant::now();
        tokio::time::sleep(interval).await;
        let after = commandstats(stats).await;
        Some((delta(&before, &after), t.elapsed()))
    } else {
        None
    };
    Phase {
        requests: f[0] as u64,
        rps: f[0] / f[1],
        p50: f[2],
        p99: f[3],
        max: f[4],
        bad: f[5] as u64,
        renewed: f[6] as u64,
        gen_cpus,
        cmds: delta(&before, &after),
        interval,
        samples,
        idle,
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn print_phase(kind: Kind, backend: &str, p: &Phase) {
    let down = if p.samples.1 > 0 {
        format!("   REDIS DOWN in {}/{} samples", p.samples.1, p.samples.0)
    } else {
        String::new()
    };
    let odd = if p.bad > 0 {
        format!("   {} UNEXPECTED ANSWERS", p.bad)
    } else {
        String::new()
    };
    let renew = if p.renewed > 0 {
        format!("   {} pass renewals", p.renewed)
    } else {
        String::new()
    };
    println!(
        "  {:12} {backend:5} {:8.0} req/s  p50 {:.3} ms  p99 {:.3} ms  max {:.1} ms  ({} requests, generator on cpu {}){down}{odd}{renew}",
        kind.label(),
        p.rps,
        p.p50,
        p.p99,
        p.max,
        p.requests,
        p.gen_cpus
    );
}

/// A free-standing gateway to obtain one pass in rooms `full` and `arrive`, so they
/// stay full for the whole run.
async fn take_the_only_place(gw: SocketAddr) {
    for (host, pass) in [
        ("poll.test", "fg_pass_full"),
        ("arrive.test", "fg_pass_arrive"),
    ] {
        let mut tx = connect(gw).await;
        obtain(&mut tx, host, pass)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }
}

async fn bench(secs: u64, conns: usize, gen: Gen) {
    let port = free_port();
    // STATE_BENCH_REDIS_CPU=N runs redis-server on core N (as Redis on a host of its
    // own would not take the gateway's CPU); by default it shares this process's core.
    let mut redis_cmd = match std::env::var("STATE_BENCH_REDIS_CPU") {
        Ok(cpu) => {
            let mut c = std::process::Command::new("taskset");
            c.args(["-c", &cpu, "redis-server"]);
            c
        }
        Err(_) => std::process::Command::new("redis-server"),
    };
    let mut redis_server = redis_cmd
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .stdout(Stdio::null())
        .spawn()
        .expect("redis-server on the PATH");
    let url = format!("redis://127.0.0.1:{port}/0");
    let client = redis::Client::open(url.as_str()).unwrap();
    let mut stats = loop {
        match client.get_multiplexed_async_connection().await {
            Ok(c) => break c,
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    };
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("room.key");
    std::fs::write(&key_file, format!("{KEY}\n")).unwrap();
    let key_file = key_file.to_str().unwrap().to_string();

    let shop = shop::start(
        "127.0.0.1:0".parse().unwrap(),
        ShopProfile {
            capacity: 100_000,
            latency: Duration::ZERO,
            collapse: 1_000_000,
        },
    )
    .await
    .unwrap();
    let local =
        Gateway::start(floodgate::config::parse(&config(shop.addr, &key_file, "")).unwrap())
            .await
            .unwrap();
    let state = format!("[state]\nbackend = \"redis\"\nurl = \"{url}\"\n");
    let shared =
        Gateway::start(floodgate::config::parse(&config(shop.addr, &key_file, &state)).unwrap())
            .await
            .unwrap();
    // Wait for the first heartbeat, so the run measures Redis and not the fallback.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    take_the_only_place(local.addr()).await;
    take_the_only_place(shared.addr()).await;

    println!(
        "{conns} connections, {secs} s per phase, {ROUNDS} rounds; gateways, shop on cpu {}, \
         redis-server on cpu {}, generator: {}",
        cpus_of("self"),
        cpus_of(&redis_server.id().to_string()),
        gen.cpu
            .as_ref()
            .map_or("unpinned".to_string(), |c| format!("taskset -c {c}")),
    );
    let mut results: Vec<(Kind, &str, Phase)> = Vec::new();
    for round in 1..=ROUNDS {
        println!("round {round}/{ROUNDS}");
        for kind in Kind::ALL {
            let backends: &[(&str, &Gateway)] = match kind {
                Kind::Limited | Kind::Pass => &[("local", &local), ("redis", &shared)],
                Kind::Poll | Kind::Arrive => &[("redis", &shared)],
            };
            for (name, gw) in backends {
                let redis = *name == "redis";
                let p = phase(&gen, kind, gw, &shared, secs, conns, &mut stats, redis).await;
                print_phase(kind, name, &p);
                results.push((kind, name, p));
            }
        }
    }

    let of = |kind: Kind, backend: &str| -> Vec<&Phase> {
        results
            .iter()
            .filter(|(k, b, _)| *k == kind && *b == backend)
            .map(|x| &x.2)
            .collect()
    };
    let med = |ps: &[&Phase], f: &dyn Fn(&Phase) -> f64| median(ps.iter().map(|p| f(p)).collect());
    println!("\nmedians of {ROUNDS} rounds");
    println!(
        "  {:12} {:>11} {:>10} {:>11} {:>10} {:>12} {:>10}",
        "kind", "local req/s", "local p99", "redis req/s", "redis p99", "redis/local", "p99 added"
    );
    for kind in [Kind::Limited, Kind::Pass] {
        let (l, r) = (of(kind, "local"), of(kind, "redis"));
        let (lr, lp) = (med(&l, &|p| p.rps), med(&l, &|p| p.p99));
        let (rr, rp) = (med(&r, &|p| p.rps), med(&r, &|p| p.p99));
        println!(
            "  {:12} {lr:11.0} {:>10} {rr:11.0} {:>10} {:>11.1}% {:>10}",
            kind.label(),
            format!("{lp:.3} ms"),
            format!("{rp:.3} ms"),
            100.0 * rr / lr,
            format!("{:+.3} ms", rp - lp),
        );
    }
    for kind in [Kind::Poll, Kind::Arrive] {
        let r = of(kind, "redis");
        println!(
            "  {:12} {:>11} {:>10} {:11.0} {:>10}",
            kind.label(),
            "-",
            "-",
            med(&r, &|p| p.rps),
            format!("{:.3} ms", med(&r, &|p| p.p99)),
        );
    }

    println!(
        "\nRedis commands per request (median of {ROUNDS} rounds; raw: INFO commandstats delta over \
         the phase / requests; net: minus the delta of an idle interval as long, right after; \
         commands run inside scripts count too)"
    );
    println!(
        "  {:12} {:>9} {:>12} {:>12} {:>9} {:>9}  per command, net",
        "kind", "requests", "evalsha raw", "evalsha net", "all raw", "all net"
    );
    for kind in Kind::ALL {
        let r = of(kind, "redis");
        let mut names: Vec<String> = Vec::new();
        for p in &r {
            for (n, _) in p.cmds.iter().chain(p.idle.iter().flat_map(|x| x.0.iter())) {
                if !names.contains(n) {
                    names.push(n.clone());
                }
            }
        }
        names.sort();
        let per: Vec<String> = names
            .iter()
            .filter(|n| n.as_str() != "evalsha")
            .map(|n| format!("{n} {:.3}", med(&r, &|p| p.per_request(Some(n)).1)))
            .collect();
        println!(
            "  {:12} {:9.0} {:12.4} {:12.4} {:9.3} {:9.3}  {}",
            kind.label(),
            med(&r, &|p| p.requests as f64),
            med(&r, &|p| p.per_request(Some("evalsha")).0),
            med(&r, &|p| p.per_request(Some("evalsha")).1),
            med(&r, &|p| p.per_request(None).0),
            med(&r, &|p| p.per_request(None).1),
            per.join(", "),
        );
    }
    let idle: Vec<&Phase> = results
        .iter()
        .filter(|x| x.2.idle.is_some())
        .map(|x| &x.2)
        .collect();
    let rate = |name: Option<&str>| {
        med(&idle, &|p| {
            let (s, d) = p.idle.as_ref().unwrap();
            name.map_or(total(s), |n| calls(s, n)) as f64 / d.as_secs_f64()
        })
    };
    println!(
        "  background (idle intervals, median): {:.1} commands/s, evalsha {:.1}/s",
        rate(None),
        rate(Some("evalsha"))
    );
    let limited = of(Kind::Limited, "redis");
    println!(
        "  rate-limited requests decided from the local share (no evalsha of theirs): {:.1} %",
        100.0 * (1.0 - med(&limited, &|p| p.per_request(Some("evalsha")).1)).max(0.0)
    );

    shared.shutdown().await;
    local.shutdown().await;
    let _ = redis_server.kill();
    let _ = redis_server.wait();
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("gen") {
        return generator(&args[2..]).await;
    }
    let mut rest = Vec::new();
    let mut cpu = None;
    let mut it = args.iter().skip(1);
    while let Some(a) = it.next() {
        if a == "--gen-cpu" {
            cpu = Some(it.next().expect("--gen-cpu N").clone());
        } else {
            rest.push(a.clone());
        }
    }
    let secs: u64 = rest
        .first()
        .and_then(|a| a.parse().ok())
        .unwrap_or(5)
        .clamp(1, 60);
    let conns: usize = rest
        .get(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(32)
        .clamp(1, 512);
    let gen = Gen {
        exe: std::env::current_exe().expect("this executable"),
        cpu,
    };
    bench(secs, conns, gen).await;
}
