//! Throughput and p99 of a rate-limited route with the local state backend and with
//! Redis, in the same run, and the Redis commands each request costs.
//!
//! `cargo run --example state_bench [-- SECONDS CONNECTIONS]` (loopback only; needs
//! `redis-server` on the PATH; each phase is bounded by SECONDS and by MAX_REQUESTS).
//!
//! Closed model: CONNECTIONS keep-alive connections, each sending its next request
//! when the previous answer is in. Both gateways run in this process, beside the
//! shop and the generator, so compare the two figures, not either one with a
//! dedicated machine's.

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use floodgate::shop::{self, ShopProfile};
use floodgate::Gateway;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;

/// A hard bound on each phase, whatever the duration asked.
const MAX_REQUESTS: usize = 200_000;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn config(shop: SocketAddr, state: &str) -> String {
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n[log]\naccess_log = false\n\
         [[upstream]]\nname = \"shop\"\nservers = [\"{shop}\"]\n\
         [[route]]\nname = \"shop\"\nupstream = \"shop\"\n\
         rate_limits = [{{ name = \"per-ip\", key = \"client_ip\", rate = \"1000000/s\", burst = 1000000 }}]\n{state}"
    )
}

/// One closed-loop phase: requests per second and latencies (sorted).
async fn load(gw: SocketAddr, secs: u64, conns: usize) -> (f64, Vec<Duration>) {
    let start = Instant::now();
    let end = start + Duration::from_secs(secs);
    let per_conn = MAX_REQUESTS / conns;
    let mut tasks = Vec::new();
    for _ in 0..conns {
        tasks.push(tokio::spawn(async move {
            let stream = tokio::net::TcpStream::connect(gw).await.unwrap();
            let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .unwrap();
            tokio::spawn(conn);
            let mut lat = Vec::new();
            while Instant::now() < end && lat.len() < per_conn {
                let t = Instant::now();
                let req = Request::get("/fast")
                    .header("host", "shop.test")
                    .body(Full::<Bytes>::default())
                    .unwrap();
                let resp = tx.send_request(req).await.unwrap();
                assert_eq!(resp.status(), 200);
                resp.into_body().collect().await.unwrap();
                lat.push(t.elapsed());
            }
            lat
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let rps = all.len() as f64 / start.elapsed().as_secs_f64();
    all.sort();
    (rps, all)
}

fn pct(l: &[Duration], p: f64) -> f64 {
    l[((l.len() as f64 * p) as usize).min(l.len() - 1)].as_secs_f64() * 1000.0
}

/// Total calls of each command, from `INFO commandstats`.
async fn commandstats(client: &redis::Client) -> Vec<(String, u64)> {
    let mut c = client.get_multiplexed_async_connection().await.unwrap();
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut c)
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

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let secs: u64 = args
        .get(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(5)
        .min(60);
    let conns: usize = args
        .get(2)
        .and_then(|a| a.parse().ok())
        .unwrap_or(32)
        .min(512);

    let port = free_port();
    let mut redis_server = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .stdout(Stdio::null())
        .spawn()
        .expect("redis-server on the PATH");
    let url = format!("redis://127.0.0.1:{port}/0");
    let client = redis::Client::open(url.as_str()).unwrap();
    while client.get_multiplexed_async_connection().await.is_err() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

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
    let local = Gateway::start(floodgate::config::parse(&config(shop.addr, "")).unwrap())
        .await
        .unwrap();
    let state = format!("[state]\nbackend = \"redis\"\nurl = \"{url}\"\n");
    let shared = Gateway::start(floodgate::config::parse(&config(shop.addr, &state)).unwrap())
        .await
        .unwrap();
    // Wait for the first heartbeat, so the run measures Redis and not the fallback.
    tokio::time::sleep(Duration::from_millis(1500)).await;

    println!("rate-limited route, {conns} connections, {secs} s per backend");
    let (l_rps, l_lat) = load(local.addr(), secs, conns).await;
    let before = commandstats(&client).await;
    let (r_rps, r_lat) = load(shared.addr(), secs, conns).await;
    let after = commandstats(&client).await;
    for (name, rps, lat) in [("local", l_rps, &l_lat), ("redis", r_rps, &r_lat)] {
        println!(
            "  {name:5}  {rps:8.0} req/s   p50 {:.3} ms   p99 {:.3} ms   ({} requests)",
            pct(lat, 0.50),
            pct(lat, 0.99),
            lat.len()
        );
    }
    println!(
        "  redis/local throughput {:.0} %, p99 added {:.3} ms",
        100.0 * r_rps / l_rps,
        pct(&r_lat, 0.99) - pct(&l_lat, 0.99)
    );
    println!("  Redis commands per request (INFO commandstats, during the redis phase):");
    for (name, calls) in &after {
        let was = before.iter().find(|(n, _)| n == name).map_or(0, |x| x.1);
        let d = calls - was;
        if d > 0 && name != "info" {
            println!("    {name:10} {:.3}", d as f64 / r_lat.len() as f64);
        }
    }
    let evalsha = |stats: &[(String, u64)]| {
        stats
            .iter()
            .find(|(n, _)| n == "evalsha")
            .map_or(0, |x| x.1)
    };
    let calls = evalsha(&after) - evalsha(&before);
    println!(
        "  decided from the local share (a call over state.timeout): {:.1} % of requests",
        100.0 * (1.0 - calls as f64 / r_lat.len() as f64).max(0.0)
    );
    shared.shutdown().await;
    local.shutdown().await;
    let _ = redis_server.kill();
    let _ = redis_server.wait();
}
