//! Self-contained HTML report: inline CSS and SVG, nothing fetched from anywhere.

use super::summary::{comparison_rows, summary};
use super::svg::{esc, percentile_x, render, Chart, Series, XAxis};
use super::{CurvePoint, RunReport, SecondReport};
use crate::stats::Class;
use std::fmt::Write as _;

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:24px;color:#222;max-width:920px}\
table{border-collapse:collapse;margin:8px 0 16px}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}\
th:first-child,td:first-child{text-align:left}h2{margin-top:36px;border-bottom:2px solid #444}\
.warn{color:#a00;font-weight:bold}pre{background:#f6f6f6;padding:8px;overflow-x:auto;font-size:12px}\
svg{display:block;margin:6px 0}.env td{text-align:left}";

const CLASS_COLORS: [(Class, &str); 7] = [
    (Class::Success, "#2a9d3a"),
    (Class::Redirect, "#3a6fd8"),
    (Class::ClientError, "#e08a00"),
    (Class::ServerError, "#d62728"),
    (Class::Timeout, "#8a2be2"),
    (Class::ConnectError, "#444"),
    (Class::OtherError, "#999"),
];

/// Colours of the targets of a comparison, in order.
const TARGET_COLORS: [&str; 6] = [
    "#3a6fd8", "#d62728", "#2a9d3a", "#e08a00", "#8a2be2", "#444",
];

/// Each point stands for a whole second: drawn at the middle of the part of it that
/// the load covered, so a partial last second sits where its requests were.
fn x_of(s: &SecondReport) -> f64 {
    s.t as f64 + if s.load_s > 0.0 { s.load_s / 2.0 } else { 0.5 }
}

/// A time chart with the report's common time axis and the end-of-load marker.
fn time_chart(r: &RunReport, x_max: f64, title: &str, y_unit: &str, series: Vec<Series>) -> Chart {
    Chart {
        title: title.into(),
        y_unit: y_unit.into(),
        series,
        y_max: None,
        x_max: Some(x_max),
        x_axis: XAxis::Seconds,
        markers: end_marker(r, x_max),
    }
}

fn end_marker(r: &RunReport, x_max: f64) -> Vec<(f64, String)> {
    let end = r.planned_s.min(r.wall_s);
    (end > 0.0 && end < x_max - 0.05)
        .then(|| (end, "load ends".to_string()))
        .into_iter()
        .collect()
}

fn error_rate(s: &SecondReport, classes: &[Class]) -> Option<f64> {
    let total: u64 = s.completed.values().sum();
    let bad: u64 = classes
        .iter()
        .map(|c| s.completed.get(c.as_str()).copied().unwrap_or(0))
        .sum();
    (total > 0 && s.load_s >= super::MIN_SPAN_S).then(|| bad as f64 * 100.0 / total as f64)
}

const FAILURES: [Class; 4] = [
    Class::ServerError,
    Class::Timeout,
    Class::ConnectError,
    Class::OtherError,
];

fn curve_series(name: String, color: &'static str, curve: &[CurvePoint]) -> Series {
    Series {
        name,
        color,
        points: curve
            .iter()
            .map(|p| (percentile_x(p.percentile / 100.0), Some(p.ms)))
            .collect(),
    }
}

fn hdr_chart(title: &str, series: Vec<Series>) -> Chart {
    Chart {
        title: title.into(),
        y_unit: "ms".into(),
        series,
        y_max: None,
        x_max: None,
        x_axis: XAxis::Percentile,
        markers: vec![],
    }
}

fn charts(r: &RunReport, x_max: f64) -> Vec<Chart> {
    let tl = &r.timeline;
    let x = x_of;
    let mut thr = vec![Series {
        name: "sent".into(),
        color: "#bbb",
        points: tl.iter().map(|s| (x(s), s.send_rate())).collect(),
    }];
    for (c, color) in CLASS_COLORS {
        if r.class(c) > 0 {
            thr.push(Series {
                name: c.as_str().into(),
                color,
                points: tl
                    .iter()
                    .map(|s| (x(s), s.completion_rate(c.as_str())))
                    .collect(),
            });
        }
    }
    if r.dropped > 0 {
        thr.push(Series {
            name: "dropped".into(),
            color: "#000",
            points: tl
                .iter()
                .map(|s| {
                    (
                        x(s),
                        (s.load_s >= super::MIN_SPAN_S).then(|| s.dropped as f64 / s.load_s),
                    )
                })
                .collect(),
        });
    }
    let mut out = vec![
        time_chart(
            r,
            x_max,
            "Throughput by class (per second of load)",
            "requests/s",
            thr,
        ),
        Chart {
            title: "Latency of responses completed each second".into(),
            y_unit: "ms".into(),
            series: vec![
                Series {
                    name: "p50".into(),
                    color: "#3a6fd8",
                    points: tl.iter().map(|s| (x(s), s.p50_ms)).collect(),
                },
                Series {
                    name: "p99".into(),
                    color: "#d62728",
                    points: tl.iter().map(|s| (x(s), s.p99_ms)).collect(),
                },
            ],
            y_max: None,
            x_max: Some(x_max),
            x_axis: XAxis::Seconds,
            markers: end_marker(r, x_max),
        },
    ];
    let mut errors = time_chart(
        r,
        x_max,
        "Error rate (share of completions)",
        "%",
        vec![
            Series {
                name: "5xx+timeouts+errors".into(),
                color: "#d62728",
                points: tl
                    .iter()
                    .map(|s| (x(s), error_rate(s, &FAILURES)))
                    .collect(),
            },
            Series {
                name: "4xx".into(),
                color: "#e08a00",
                points: tl
                    .iter()
                    .map(|s| (x(s), error_rate(s, &[Class::ClientError])))
                    .collect(),
            },
        ],
    );
    errors.y_max = Some(100.0);
    out.push(errors);
    if !r.latency_curve.is_empty() {
        out.push(hdr_chart(
            "Latency by percentile (HDR; responses and timeouts)",
            vec![
                curve_series("all".into(), "#3a6fd8", &r.latency_curve),
                curve_series("2xx".into(), "#2a9d3a", &r.latency_curve_2xx),
            ],
        ));
    }
    let m = &r.metrics;
    if m.iter()
        .any(|p| p.queue_depth.is_some() || p.cache_hit_ratio.is_some())
        || r.gateway.is_some()
    {
        out.push(time_chart(
            r,
            x_max,
            "Gateway queue depth (sum of floodgate_queue_depth)",
            "requests",
            vec![Series {
                name: "queue depth".into(),
                color: "#3a6fd8",
                points: m.iter().map(|p| (p.t, p.queue_depth)).collect(),
            }],
        ));
        let mut hits = time_chart(
            r,
            x_max,
            "Cache hit ratio (per scrape interval)",
            "%",
            vec![Series {
                name: "hits / lookups".into(),
                color: "#2a9d3a",
                points: m
                    .iter()
                    .map(|p| (p.t, p.cache_hit_ratio.map(|h| h * 100.0)))
                    .collect(),
            }],
        );
        hits.y_max = Some(100.0);
        out.push(hits);
    }
    if m.iter().any(|p| p.origin_in_flight.is_some()) {
        out.push(time_chart(
            r,
            x_max,
            "Origin (simulated shop) requests in flight",
            "requests",
            vec![Series {
                name: "in flight".into(),
                color: "#8a2be2",
                points: m
                    .iter()
                    .map(|p| (p.t, p.origin_in_flight.map(|v| v as f64)))
                    .collect(),
            }],
        ));
    }
    out
}

/// The compared targets overlaid, one line per target, on the common time axis.
fn comparison_charts(runs: &[RunReport], x_max: f64) -> Vec<Chart> {
    let per_target = |f: &dyn Fn(&SecondReport) -> Option<f64>| -> Vec<Series> {
        runs.iter()
            .enumerate()
            .map(|(i, r)| Series {
                name: r.target.clone(),
                color: TARGET_COLORS[i % TARGET_COLORS.len()],
                points: r.timeline.iter().map(|s| (x_of(s), f(s))).collect(),
            })
            .collect()
    };
    // Every run of a comparison runs the same scenario: the first one's end stands
    // for all.
    let first = &runs[0];
    let mut errors = time_chart(
        first,
        x_max,
        "Error rate by target (5xx, timeouts, errors)",
        "%",
        per_target(&|s| error_rate(s, &FAILURES)),
    );
    errors.y_max = Some(100.0);
    vec![
        time_chart(
            first,
            x_max,
            "Goodput by target (2xx per second of load)",
            "requests/s",
            per_target(&|s| s.completion_rate(Class::Success.as_str())),
        ),
        time_chart(
            first,
            x_max,
            "p99 latency by target (responses completed each second)",
            "ms",
            per_target(&|s| s.p99_ms),
        ),
        errors,
        hdr_chart(
            "Latency by percentile by target (HDR; responses and timeouts)",
            runs.iter()
                .enumerate()
                .map(|(i, r)| {
                    curve_series(
                        r.target.clone(),
                        TARGET_COLORS[i % TARGET_COLORS.len()],
                        &r.latency_curve,
                    )
                })
                .collect(),
        ),
    ]
}

/// The table of where the run ran: scenario, commit, host, cores, load.
fn environment_table(o: &mut String, r: &RunReport) {
    let e = &r.environment;
    let load = e.load_average.map_or("unknown".to_string(), |l| {
        format!(
            "{:.2} {:.2} {:.2} (1, 5, 15 min, at the end of the run)",
            l[0], l[1], l[2]
        )
    });
    let rows = [
        ("scenario", r.scenario.clone()),
        (
            "load",
            format!(
                "{} model, {:.1} s planned, {:.1} s wall",
                r.model, r.planned_s, r.wall_s
            ),
        ),
        ("commit", e.commit.clone()),
        ("host", format!("{} ({})", e.host, e.os)),
        ("cores", e.cores.to_string()),
        ("load average", load),
    ];
    o.push_str("<table class=\"env\">");
    for (k, v) in rows {
        let _ = write!(o, "<tr><th>{}</th><td>{}</td></tr>", esc(k), esc(&v));
    }
    o.push_str("</table>");
}

/// The whole report for one run or a comparison of several.
pub fn render_report(runs: &[RunReport]) -> String {
    let mut o = String::new();
    let title = match runs {
        [one] => format!("floodgate-load: {} -> {}", one.scenario, one.target),
        _ => format!(
            "floodgate-load: {} compared on {}",
            runs.first().map_or("", |r| r.scenario.as_str()),
            runs.iter()
                .map(|r| r.target.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let _ = write!(
        o,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{t}</title><style>{STYLE}</style></head><body><h1>{t}</h1><p>Generated {when} by {tool}.</p>",
        t = esc(&title),
        when = humantime::format_rfc3339_seconds(std::time::SystemTime::now()),
        tool = esc(runs.first().map_or("", |r| r.tool.as_str())),
    );
    // One time axis for every chart of the report, so that seconds line up down the
    // page and across targets.
    let x_max = runs
        .iter()
        .map(RunReport::time_span_s)
        .fold(1.0, f64::max)
        .ceil();
    if let Some(first) = runs.first() {
        environment_table(&mut o, first);
    }
    if runs.len() > 1 {
        o.push_str("<h2>Comparison</h2><table><tr><th></th>");
        for r in runs {
            let _ = write!(o, "<th>{}</th>", esc(&r.target));
        }
        o.push_str("</tr>");
        for (label, vals) in comparison_rows(runs) {
            let _ = write!(o, "<tr><td>{}</td>", esc(&label));
            for v in vals {
                let _ = write!(o, "<td>{}</td>", esc(&v));
            }
            o.push_str("</tr>");
        }
        o.push_str("</table>");
        for c in comparison_charts(runs, x_max) {
            o.push_str(&render(&c));
        }
    }
    for (i, r) in runs.iter().enumerate() {
        let _ = write!(o, "<h2>{} ({})</h2>", esc(&r.target), esc(&r.url));
        if i > 0 {
            // Each run's own figures: the load average differs from run to run.
            environment_table(&mut o, r);
        }
        for w in &r.warnings {
            let _ = write!(o, "<p class=\"warn\">WARNING: {}</p>", esc(w));
        }
        for c in charts(r, x_max) {
            o.push_str(&render(&c));
        }
        let _ = write!(o, "<pre>{}</pre>", esc(summary(r).trim()));
    }
    o.push_str("</body></html>\n");
    o
}
