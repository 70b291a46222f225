//! Plain-text renderings for the terminal: one run's summary, and a comparison table.

use super::{Percentiles, RunReport};
use crate::stats::Class;
use std::fmt::Write as _;

fn ms(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

fn row(out: &mut String, label: &str, p: Option<&Percentiles>) {
    match p {
        Some(p) => {
            let _ = writeln!(
                out,
                "    {label:<18}{:>9}{:>9}{:>9}{:>9}{:>9}{:>9}",
                p.count,
                ms(p.p50_ms),
                ms(p.p90_ms),
                ms(p.p99_ms),
                ms(p.p999_ms),
                ms(p.max_ms)
            );
        }
        None => {
            let _ = writeln!(out, "    {label:<18}{:>9}", 0);
        }
    }
}

/// The end-of-run summary of one run.
pub fn summary(r: &RunReport) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "\n== {} -> {} ({}) | {} model, {:.1} s planned, {:.1} s wall, client {:?}",
        r.scenario, r.target, r.url, r.model, r.planned_s, r.wall_s, r.client
    );
    let e = &r.environment;
    let _ = writeln!(
        o,
        "  machine    commit {}  host {} ({})  cores {}  load average {}",
        e.commit,
        e.host,
        e.os,
        e.cores,
        e.load_average.map_or("unknown".into(), |l| format!(
            "{:.2} {:.2} {:.2}",
            l[0], l[1], l[2]
        ))
    );
    let _ = writeln!(
        o,
        "  requests   scheduled {}  sent {}  completed {}  dropped {}  cut at stop {}",
        r.scheduled,
        r.sent,
        r.completed,
        r.dropped,
        r.unfinished + r.stopped
    );
    let peak = r
        .peak_rate
        .map(|p| format!("peak planned {p:.0}/s  "))
        .unwrap_or_default();
    let _ = writeln!(
        o,
        "  rate       {peak}sent {:.0}/s  goodput (2xx) {:.0}/s  connections opened {}",
        r.send_rate, r.goodput, r.connections_opened
    );
    let _ = write!(o, "  classes   ");
    for c in Class::ALL {
        let _ = write!(o, " {} {}", c.as_str(), r.class(c));
    }
    let _ = writeln!(o);
    let statuses: Vec<String> = r
        .statuses
        .iter()
        .map(|(k, v)| format!("{k}: {v}"))
        .collect();
    let _ = writeln!(
        o,
        "  statuses   {}",
        if statuses.is_empty() {
            "-".into()
        } else {
            statuses.join("  ")
        }
    );
    let _ = writeln!(
        o,
        "  latency ms {:<14}{:>9}{:>9}{:>9}{:>9}{:>9}{:>9}",
        "", "count", "p50", "p90", "p99", "p99.9", "max"
    );
    row(&mut o, "all", r.latency_all.as_ref());
    row(&mut o, "2xx (success)", r.latency_2xx.as_ref());
    row(&mut o, "429/503 (refused)", r.latency_refusals.as_ref());
    if let Some(sus) = &r.sustained {
        let after = format!("{}s", sus.after_s);
        row(
            &mut o,
            &format!("2xx after {after}"),
            sus.latency_2xx.as_ref(),
        );
        row(
            &mut o,
            &format!("refused after {after}"),
            sus.latency_refusals.as_ref(),
        );
    }
    for c in [Class::ClientError, Class::ServerError, Class::Timeout] {
        if let Some(p) = r.latency_by_class.get(c.as_str()) {
            row(&mut o, c.as_str(), Some(p));
        }
    }
    if let Some(l) = &r.dispatch_lag {
        let _ = writeln!(
            o,
            "  send lag   p50 {} ms  p99 {} ms  max {} ms (behind schedule; included in latencies)",
            ms(l.p50_ms),
            ms(l.p99_ms),
            ms(l.max_ms)
        );
    }
    let cpu: Vec<String> = r
        .cpu
        .iter()
        .map(|c| {
            format!(
                "{} {:.2} cores ({:.1} s CPU)",
                c.name, c.cores, c.cpu_seconds
            )
        })
        .collect();
    if !cpu.is_empty() {
        let _ = writeln!(o, "  cpu        {}", cpu.join(", "));
    }
    if let Some(g) = &r.gateway {
        let _ = writeln!(
            o,
            "  gateway    max queue depth {}  cache hit ratio {}  scrape errors {}",
            g.max_queue_depth
                .map_or("n/a".into(), |q| format!("{q:.0}")),
            g.cache_hit_ratio
                .map_or("n/a".into(), |h| format!("{:.1} %", h * 100.0)),
            g.scrape_errors
        );
    }
    if let Some(s) = &r.origin {
        let _ = writeln!(
            o,
            "  origin     peak in-flight {}  served {}  errors {}",
            s.peak_in_flight, s.served, s.errors
        );
    }
    if let Some(s) = &r.shoppers {
        let _ = writeln!(
            o,
            "  shoppers   started {}  admitted {}  purchased {}  gave up {}  thrown out {}  polls {}  wait p50 {} p99 {} ms",
            s.started,
            s.admitted,
            s.purchased,
            s.gave_up,
            s.thrown_out,
            s.polls,
            s.wait.map_or("-".into(), |w| ms(w.p50_ms)),
            s.wait.map_or("-".into(), |w| ms(w.p99_ms)),
        );
    }
    if r.entries.len() > 1 {
        for e in &r.entries {
            let _ = writeln!(
                o,
                "  entry      {:<28} {:>8} done {:>8} 2xx  p99 {} ms",
                e.name,
                e.count,
                e.ok,
                e.latency.map_or("-".into(), |l| ms(l.p99_ms))
            );
        }
    }
    for (e, n) in &r.errors {
        let _ = writeln!(o, "  error x{n:<6} {e}");
    }
    for w in &r.warnings {
        let _ = writeln!(o, "  !! WARNING: {w}");
    }
    o
}

/// Rows of the comparison table: (label, value per run).
pub fn comparison_rows(runs: &[RunReport]) -> Vec<(String, Vec<String>)> {
    let opt = |v: Option<f64>| v.map_or("-".to_string(), ms);
    let mut rows: Vec<(String, Vec<String>)> = vec![
        (
            "goodput (2xx/s)".into(),
            runs.iter().map(|r| format!("{:.0}", r.goodput)).collect(),
        ),
        (
            "sent/s".into(),
            runs.iter().map(|r| format!("{:.0}", r.send_rate)).collect(),
        ),
        (
            "p50 of 2xx (ms)".into(),
            runs.iter()
                .map(|r| opt(r.latency_2xx.map(|p| p.p50_ms)))
                .collect(),
        ),
        (
            "p99 of 2xx (ms)".into(),
            runs.iter()
                .map(|r| opt(r.latency_2xx.map(|p| p.p99_ms)))
                .collect(),
        ),
        (
            "p99 of refusals (ms)".into(),
            runs.iter()
                .map(|r| opt(r.latency_refusals.map(|p| p.p99_ms)))
                .collect(),
        ),
        (
            "refusals (429+503)".into(),
            runs.iter()
                .map(|r| {
                    let n = r.statuses.get("429").copied().unwrap_or(0)
                        + r.statuses.get("503").copied().unwrap_or(0);
                    n.to_string()
                })
                .collect(),
        ),
        (
            "5xx".into(),
            runs.iter()
                .map(|r| r.class(Class::ServerError).to_string())
                .collect(),
        ),
        (
            "timeouts".into(),
            runs.iter()
                .map(|r| r.class(Class::Timeout).to_string())
                .collect(),
        ),
        (
            "conn/other errors".into(),
            runs.iter()
                .map(|r| (r.class(Class::ConnectError) + r.class(Class::OtherError)).to_string())
                .collect(),
        ),
        (
            "dropped by generator".into(),
            runs.iter().map(|r| r.dropped.to_string()).collect(),
        ),
    ];
    if runs.iter().any(|r| r.origin.is_some()) {
        rows.push((
            "origin peak concurrency".into(),
            runs.iter()
                .map(|r| {
                    r.origin
                        .map_or("-".into(), |o| o.peak_in_flight.to_string())
                })
                .collect(),
        ));
        rows.push((
            "origin errors".into(),
            runs.iter()
                .map(|r| r.origin.map_or("-".into(), |o| o.errors.to_string()))
                .collect(),
        ));
    }
    if runs.iter().any(|r| r.gateway.is_some()) {
        rows.push((
            "cache hit ratio".into(),
            runs.iter()
                .map(|r| {
                    r.gateway
                        .as_ref()
                        .and_then(|g| g.cache_hit_ratio)
                        .map_or("-".into(), |h| format!("{:.1} %", h * 100.0))
                })
                .collect(),
        ));
        rows.push((
            "max queue depth".into(),
            runs.iter()
                .map(|r| {
                    r.gateway
                        .as_ref()
                        .and_then(|g| g.max_queue_depth)
                        .map_or("-".into(), |q| format!("{q:.0}"))
                })
                .collect(),
        ));
    }
    rows.push((
        "load average (1 min, at end)".into(),
        runs.iter()
            .map(|r| {
                r.environment
                    .load_average
                    .map_or("-".into(), |l| format!("{:.2}", l[0]))
            })
            .collect(),
    ));
    rows.push((
        "generator cores".into(),
        runs.iter()
            .map(|r| {
                r.generator_cpu()
                    .map_or("-".into(), |c| format!("{:.2}", c.cores))
            })
            .collect(),
    ));
    rows
}

/// Side-by-side table, one column per target.
pub fn comparison(runs: &[RunReport]) -> String {
    let mut o = String::new();
    let rows = comparison_rows(runs);
    let width = runs
        .iter()
        .map(|r| r.target.len())
        .max()
        .unwrap_or(8)
        .max(10)
        + 2;
    let _ = write!(
        o,
        "\n{:<26}",
        runs.first().map_or("", |r| r.scenario.as_str())
    );
    for r in runs {
        let _ = write!(o, "{:>width$}", r.target);
    }
    let _ = writeln!(o);
    for (label, vals) in rows {
        let _ = write!(o, "{label:<26}");
        for v in vals {
            let _ = write!(o, "{v:>width$}");
        }
        let _ = writeln!(o);
    }
    o
}
