//! Self-contained HTML report: inline CSS and SVG, nothing fetched from anywhere.

use super::summary::{comparison_rows, summary};
use super::svg::{esc, render, Chart, Series};
use super::RunReport;
use crate::stats::Class;
use std::fmt::Write as _;

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:24px;color:#222;max-width:920px}\
table{border-collapse:collapse;margin:8px 0 16px}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}\
th:first-child,td:first-child{text-align:left}h2{margin-top:36px;border-bottom:2px solid #444}\
.warn{color:#a00;font-weight:bold}pre{background:#f6f6f6;padding:8px;overflow-x:auto;font-size:12px}\
svg{display:block;margin:6px 0}";

const CLASS_COLORS: [(Class, &str); 7] = [
    (Class::Success, "#2a9d3a"),
    (Class::Redirect, "#3a6fd8"),
    (Class::ClientError, "#e08a00"),
    (Class::ServerError, "#d62728"),
    (Class::Timeout, "#8a2be2"),
    (Class::ConnectError, "#444"),
    (Class::OtherError, "#999"),
];

fn charts(r: &RunReport) -> Vec<Chart> {
    let tl = &r.timeline;
    // Each point stands for a whole second: draw it at the middle of it.
    let x = |t: u64| t as f64 + 0.5;
    let mut thr = vec![Series {
        name: "sent".into(),
        color: "#bbb",
        points: tl.iter().map(|s| (x(s.t), Some(s.sent as f64))).collect(),
    }];
    for (c, color) in CLASS_COLORS {
        if r.class(c) > 0 {
            thr.push(Series {
                name: c.as_str().into(),
                color,
                points: tl
                    .iter()
                    .map(|s| {
                        (
                            x(s.t),
                            Some(s.completed.get(c.as_str()).copied().unwrap_or(0) as f64),
                        )
                    })
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
                .map(|s| (x(s.t), Some(s.dropped as f64)))
                .collect(),
        });
    }
    let mut out = vec![
        Chart {
            title: "Throughput by class (per second)".into(),
            y_unit: "requests/s".into(),
            series: thr,
            y_max: None,
        },
        Chart {
            title: "Latency of responses completed each second".into(),
            y_unit: "ms".into(),
            series: vec![
                Series {
                    name: "p50".into(),
                    color: "#3a6fd8",
                    points: tl.iter().map(|s| (x(s.t), s.p50_ms)).collect(),
                },
                Series {
                    name: "p99".into(),
                    color: "#d62728",
                    points: tl.iter().map(|s| (x(s.t), s.p99_ms)).collect(),
                },
            ],
            y_max: None,
        },
    ];
    let rate = |s: &super::SecondReport, classes: &[Class]| {
        let total: u64 = s.completed.values().sum();
        let bad: u64 = classes
            .iter()
            .map(|c| s.completed.get(c.as_str()).copied().unwrap_or(0))
            .sum();
        (total > 0).then(|| bad as f64 * 100.0 / total as f64)
    };
    out.push(Chart {
        title: "Error rate (share of completions)".into(),
        y_unit: "%".into(),
        series: vec![
            Series {
                name: "5xx+timeouts+errors".into(),
                color: "#d62728",
                points: tl
                    .iter()
                    .map(|s| {
                        (
                            x(s.t),
                            rate(
                                s,
                                &[
                                    Class::ServerError,
                                    Class::Timeout,
                                    Class::ConnectError,
                                    Class::OtherError,
                                ],
                            ),
                        )
                    })
                    .collect(),
            },
            Series {
                name: "4xx".into(),
                color: "#e08a00",
                points: tl
                    .iter()
                    .map(|s| (x(s.t), rate(s, &[Class::ClientError])))
                    .collect(),
            },
        ],
        y_max: Some(100.0),
    });
    let m = &r.metrics;
    if m.iter()
        .any(|p| p.queue_depth.is_some() || p.cache_hit_ratio.is_some())
        || r.gateway.is_some()
    {
        out.push(Chart {
            title: "Gateway queue depth (sum of floodgate_queue_depth)".into(),
            y_unit: "requests".into(),
            series: vec![Series {
                name: "queue depth".into(),
                color: "#3a6fd8",
                points: m.iter().map(|p| (p.t, p.queue_depth)).collect(),
            }],
            y_max: None,
        });
        out.push(Chart {
            title: "Cache hit ratio (per scrape interval)".into(),
            y_unit: "%".into(),
            series: vec![Series {
                name: "hits / lookups".into(),
                color: "#2a9d3a",
                points: m
                    .iter()
                    .map(|p| (p.t, p.cache_hit_ratio.map(|h| h * 100.0)))
                    .collect(),
            }],
            y_max: Some(100.0),
        });
    }
    if m.iter().any(|p| p.origin_in_flight.is_some()) {
        out.push(Chart {
            title: "Origin (simulated shop) requests in flight".into(),
            y_unit: "requests".into(),
            series: vec![Series {
                name: "in flight".into(),
                color: "#8a2be2",
                points: m
                    .iter()
                    .map(|p| (p.t, p.origin_in_flight.map(|v| v as f64)))
                    .collect(),
            }],
            y_max: None,
        });
    }
    out
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
    }
    for r in runs {
        let _ = write!(o, "<h2>{} ({})</h2>", esc(&r.target), esc(&r.url));
        for w in &r.warnings {
            let _ = write!(o, "<p class=\"warn\">WARNING: {}</p>", esc(w));
        }
        for c in charts(r) {
            o.push_str(&render(&c));
        }
        let _ = write!(o, "<pre>{}</pre>", esc(summary(r).trim()));
    }
    o.push_str("</body></html>\n");
    o
}
