//! The rate-limit probe: one client hammering a rate-limited path, its requests
//! spread round-robin over every instance, its passes against the limit's
//! `burst + rate × t`.
//!
//! Requests are sent on a fixed schedule (open model: a slow answer does not slow
//! the next send), a bounded number of them. "Passed" is every answer but 429. The
//! gateway decided each request somewhere between its send and its answer, so a
//! window from one pass's send to the latest answer of the passes sent up to another
//! holds every decision in between: the bound is checked on each such window, which
//! only ever makes it looser (in the gateway's favour).

use super::http::{get, Ask, Jar};
use serde::Serialize;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// The hammering client's address (no visitor has it: they are 127.1.x.y and 127.2.x.y).
pub const CLIENT: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 3, 0, 1));

/// What to send, and the limit it meets.
#[derive(Debug, Clone, Serialize)]
pub struct Hammer {
    /// The rate-limited path.
    pub path: String,
    /// Requests in all.
    pub requests: usize,
    /// Sent evenly over this long.
    pub over: Duration,
    /// Starting this long after the run's start.
    pub start_after: Duration,
    /// The limit, as the gateway config spells it (`per-ip 5/s burst 10`).
    pub limit: String,
    /// Its burst.
    pub burst: f64,
    /// Its rate, per second.
    pub rate: f64,
}

/// What the probe found.
#[derive(Debug, Clone, Serialize)]
pub struct HammerReport {
    /// The probe.
    pub hammer: Hammer,
    /// Instances hammered.
    pub instances: usize,
    /// Answered requests; of them passed (not 429) and refused (429).
    pub answered: usize,
    /// See `answered`.
    pub passed: usize,
    /// See `answered`.
    pub refused: usize,
    /// Requests without an answer (connection, timeout).
    pub failed: usize,
    /// Passes per instance.
    pub passed_by_instance: Vec<usize>,
    /// From the first pass's send to the last pass's answer, seconds.
    pub span_s: f64,
    /// `burst + rate × span`.
    pub bound: f64,
    /// The window where passes came closest to (or went over) the bound.
    pub worst_count: usize,
    /// See `worst_count`: its length, seconds.
    pub worst_window_s: f64,
    /// See `worst_count`: `burst + rate × window`.
    pub worst_bound: f64,
    /// `worst_count − worst_bound`: above 0 is more than the limit allows.
    pub worst_excess: f64,
}

/// Sends the probe's requests from `start + start_after`; returns when all are answered.
pub async fn run(gateways: Arc<[SocketAddr]>, h: Hammer, start: Instant) -> HammerReport {
    let n = gateways.len();
    let tasks: Vec<_> = (0..h.requests)
        .map(|k| {
            let at = start + h.start_after + h.over.mul_f64(k as f64 / h.requests as f64);
            let (gw, path) = (gateways[k % n], h.path.clone());
            tokio::spawn(async move {
                tokio::time::sleep_until(at).await;
                let sent = Instant::now();
                let r = get(CLIENT, gw, &path, Ask::Page, &mut Jar::default()).await;
                (k % n, sent, Instant::now(), r.map(|r| r.status).ok())
            })
        })
        .collect();
    let mut done = Vec::new();
    for t in tasks {
        if let Ok(r) = t.await {
            done.push(r);
        }
    }
    let mut passes: Vec<(f64, f64)> = Vec::new();
    let mut r = HammerReport {
        hammer: h.clone(),
        instances: n,
        answered: 0,
        passed: 0,
        refused: 0,
        failed: h.requests - done.iter().filter(|d| d.3.is_some()).count(),
        passed_by_instance: vec![0; n],
        span_s: 0.0,
        bound: h.burst,
        worst_count: 0,
        worst_window_s: 0.0,
        worst_bound: h.burst,
        worst_excess: f64::NEG_INFINITY,
    };
    for (i, sent, got, status) in done {
        let Some(status) = status else { continue };
        r.answered += 1;
        if status == 429 {
            r.refused += 1;
        } else {
            r.passed += 1;
            r.passed_by_instance[i] += 1;
            let s = |t: Instant| t.duration_since(start).as_secs_f64();
            passes.push((s(sent), s(got)));
        }
    }
    passes.sort_by(|a, b| a.0.total_cmp(&b.0));
    if let (Some(first), Some(_)) = (passes.first(), passes.last()) {
        let last_answer = passes.iter().map(|p| p.1).fold(f64::MIN, f64::max);
        r.span_s = last_answer - first.0;
        r.bound = h.burst + h.rate * r.span_s;
    }
    for i in 0..passes.len() {
        let mut latest = passes[i].1;
        for (j, p) in passes.iter().enumerate().skip(i) {
            latest = latest.max(p.1);
            let window = latest - passes[i].0;
            let bound = h.burst + h.rate * window;
            let count = j - i + 1;
            if count as f64 - bound > r.worst_excess {
                r.worst_excess = count as f64 - bound;
                r.worst_count = count;
                r.worst_window_s = window;
                r.worst_bound = bound;
            }
        }
    }
    if passes.is_empty() {
        r.worst_excess = -h.burst;
    }
    r
}

/// `"5/s"`, `"600/m"`, `"10/5s"`, `"1000/h"` as events per second (the gateway's syntax).
pub fn rate_per_second(s: &str) -> anyhow::Result<f64> {
    let (n, per) = s
        .trim()
        .split_once('/')
        .ok_or_else(|| anyhow::anyhow!("{s:?} is not a rate like \"5/s\""))?;
    let n: f64 = n.trim().parse()?;
    let per = match per.trim() {
        "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        d => humantime::parse_duration(d)?.as_secs_f64(),
    };
    anyhow::ensure!(n > 0.0 && per > 0.0, "{s:?}: a rate must be above 0");
    Ok(n / per)
}

/// The per-client (`key = "client_ip"`) limit of the route a gateway `config` sends
/// `path` to (the longest `path_prefix`): (its spelling, burst, rate per second).
pub fn client_limit(config: &toml::Value, path: &str) -> anyhow::Result<(String, f64, f64)> {
    let routes = config
        .get("route")
        .and_then(toml::Value::as_array)
        .ok_or_else(|| anyhow::anyhow!("the gateway config has no [[route]]"))?;
    let route = routes
        .iter()
        .filter(|r| {
            path.starts_with(
                r.get("path_prefix")
                    .and_then(toml::Value::as_str)
                    .unwrap_or("/"),
            )
        })
        .max_by_key(|r| {
            r.get("path_prefix")
                .and_then(toml::Value::as_str)
                .unwrap_or("/")
                .len()
        })
        .ok_or_else(|| anyhow::anyhow!("no route of the gateway config takes {path}"))?;
    let limit = route
        .get("rate_limits")
        .and_then(toml::Value::as_array)
        .into_iter()
        .flatten()
        .find(|l| l.get("key").and_then(toml::Value::as_str) == Some("client_ip"))
        .ok_or_else(|| anyhow::anyhow!("the route taking {path} has no client_ip rate limit"))?;
    let rate = limit
        .get("rate")
        .and_then(toml::Value::as_str)
        .ok_or_else(|| anyhow::anyhow!("the limit on {path} has no rate"))?;
    let burst = limit
        .get("burst")
        .and_then(toml::Value::as_integer)
        .ok_or_else(|| anyhow::anyhow!("the limit on {path} has no burst"))?;
    let name = limit
        .get("name")
        .and_then(toml::Value::as_str)
        .unwrap_or("client_ip");
    Ok((
        format!("{name} {rate} burst {burst}"),
        burst as f64,
        rate_per_second(rate)?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_and_the_routes_limit_are_read_as_the_gateway_reads_them() {
        assert_eq!(rate_per_second("5/s").unwrap(), 5.0);
        assert_eq!(rate_per_second("600/m").unwrap(), 10.0);
        assert_eq!(rate_per_second("10/5s").unwrap(), 2.0);
        assert!(rate_per_second("fast").is_err());
        let cfg: toml::Value = toml::from_str(
            r#"
            [[route]]
            name = "shop"
            path_prefix = "/"
            [[route]]
            name = "api"
            path_prefix = "/api/"
            rate_limits = [{ key = "global", rate = "100/s", burst = 100 },
                           { name = "per-ip", key = "client_ip", rate = "5/s", burst = 10 }]
            "#,
        )
        .unwrap();
        let (name, burst, rate) = client_limit(&cfg, "/api/stock").unwrap();
        assert_eq!(
            (name.as_str(), burst, rate),
            ("per-ip 5/s burst 10", 10.0, 5.0)
        );
        assert!(client_limit(&cfg, "/products/1").is_err());
    }
}
