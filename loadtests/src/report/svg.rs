//! Small inline-SVG line charts, so HTML reports need no script or stylesheet from anywhere.

use std::fmt::Write as _;

/// One line of a chart; `None` values leave a gap.
#[derive(Debug, Clone)]
pub struct Series {
    /// Legend text.
    pub name: String,
    /// CSS colour.
    pub color: &'static str,
    /// (x, y) points in x order.
    pub points: Vec<(f64, Option<f64>)>,
}

/// A chart to draw.
#[derive(Debug, Clone)]
pub struct Chart {
    /// Title above the plot.
    pub title: String,
    /// Unit shown by the y axis.
    pub y_unit: String,
    /// Lines.
    pub series: Vec<Series>,
    /// Fixed top of the y axis (e.g. 100 for percentages).
    pub y_max: Option<f64>,
    /// Fixed right end of the x axis, so that the charts of a report line up.
    pub x_max: Option<f64>,
    /// What the x axis shows.
    pub x_axis: XAxis,
    /// Vertical marker lines with a label (e.g. where the load ends).
    pub markers: Vec<(f64, String)>,
}

/// The x axis of a chart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum XAxis {
    /// Seconds since the start of the run.
    #[default]
    Seconds,
    /// Percentiles on HDR's log scale: x = log10(1 / (1 - q)), so 1 is p90, 2 p99,
    /// 3 p99.9 (see [`percentile_x`]).
    Percentile,
}

/// Where quantile `q` (0..1) sits on an [`XAxis::Percentile`] axis.
pub fn percentile_x(q: f64) -> f64 {
    (1.0 / (1.0 - q).max(1e-9)).log10()
}

fn percentile_label(x: f64) -> String {
    match x.round() as i64 {
        0 => "0%".into(),
        1 => "90%".into(),
        2 => "99%".into(),
        n => format!("99.{}%", "9".repeat((n - 2) as usize)),
    }
}

const W: f64 = 860.0;
const H: f64 = 240.0;
const LEFT: f64 = 64.0;
const RIGHT: f64 = 16.0;
const TOP: f64 = 34.0;
const BOTTOM: f64 = 28.0;

/// Escapes text for XML/HTML.
pub fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A "nice" tick step (1, 2 or 5 times a power of ten) for about `n` ticks.
fn nice_step(max: f64, n: f64) -> f64 {
    let raw = (max / n).max(1e-12);
    let mag = 10f64.powf(raw.log10().floor());
    let f = raw / mag;
    let m = if f <= 1.0 {
        1.0
    } else if f <= 2.0 {
        2.0
    } else if f <= 5.0 {
        5.0
    } else {
        10.0
    };
    m * mag
}

fn fmt_tick(v: f64) -> String {
    if v == 0.0 {
        "0".into()
    } else if v.abs() >= 10_000.0 {
        format!("{:.0}k", v / 1000.0)
    } else if v.fract().abs() < 1e-9 {
        format!("{v:.0}")
    } else if v.abs() >= 1.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// Renders a chart as an `<svg>` element.
pub fn render(chart: &Chart) -> String {
    let xmax = chart.x_max.unwrap_or_else(|| {
        chart
            .series
            .iter()
            .flat_map(|s| s.points.iter().map(|p| p.0))
            .fold(1.0_f64, f64::max)
    });
    let xmax = match chart.x_axis {
        XAxis::Seconds => xmax.max(1.0),
        // Whole decades of nines.
        XAxis::Percentile => xmax.ceil().max(1.0),
    };
    let data_max = chart
        .series
        .iter()
        .flat_map(|s| s.points.iter().filter_map(|p| p.1))
        .filter(|v| v.is_finite())
        .fold(0.0_f64, f64::max);
    // An all-zero or empty chart still gets a readable 0..1 axis.
    let ymax_raw = chart.y_max.unwrap_or(data_max);
    let ymax_raw = if ymax_raw > 0.0 { ymax_raw } else { 1.0 };
    let ystep = nice_step(ymax_raw, 4.0);
    let ymax = (ymax_raw / ystep).ceil().max(1.0) * ystep;
    let xstep = match chart.x_axis {
        XAxis::Seconds => nice_step(xmax, 10.0).max(1.0),
        XAxis::Percentile => 1.0,
    };
    let pw = W - LEFT - RIGHT;
    let ph = H - TOP - BOTTOM;
    let sx = |x: f64| LEFT + (x / xmax).clamp(0.0, 1.0) * pw;
    let sy = |y: f64| TOP + ph - (y / ymax).clamp(0.0, 1.05) * ph;

    let mut o = String::new();
    let _ = write!(
        o,
        r##"<svg viewBox="0 0 {W} {H}" width="{W}" height="{H}" role="img" aria-label="{t}"><rect width="{W}" height="{H}" fill="#fff"/><text x="{LEFT}" y="18" font-size="14" font-weight="bold">{t}</text>"##,
        t = esc(&chart.title)
    );
    let mut lx = W - RIGHT;
    for s in chart.series.iter().rev() {
        let label = esc(&s.name);
        lx -= 16.0 + 7.0 * s.name.len() as f64;
        let _ = write!(
            o,
            r#"<rect x="{lx:.0}" y="9" width="10" height="10" fill="{c}"/><text x="{tx:.0}" y="18" font-size="12">{label}</text>"#,
            c = s.color,
            tx = lx + 13.0
        );
    }
    let mut y = 0.0;
    while y <= ymax + ystep * 0.01 {
        let py = sy(y);
        let _ = write!(
            o,
            r##"<line x1="{LEFT}" x2="{x2}" y1="{py:.1}" y2="{py:.1}" stroke="#e3e3e3"/><text x="{tx}" y="{ty:.1}" font-size="11" text-anchor="end">{v}</text>"##,
            x2 = W - RIGHT,
            tx = LEFT - 6.0,
            ty = py + 4.0,
            v = fmt_tick(y)
        );
        y += ystep;
    }
    let mut x = 0.0;
    while x <= xmax + 1e-9 {
        let px = sx(x);
        let label = match chart.x_axis {
            XAxis::Seconds => format!("{}s", fmt_tick(x)),
            XAxis::Percentile => percentile_label(x),
        };
        // The last label would stick out of the picture if centred on its tick.
        let (tx, anchor) = if px > W - RIGHT - 24.0 {
            (W - 2.0, "end")
        } else {
            (px, "middle")
        };
        let _ = write!(
            o,
            r##"<line x1="{px:.1}" x2="{px:.1}" y1="{TOP}" y2="{b}" stroke="#f0f0f0"/><text x="{tx:.1}" y="{ty}" font-size="11" text-anchor="{anchor}">{label}</text>"##,
            b = TOP + ph,
            ty = H - 10.0,
        );
        x += xstep;
    }
    for (mx, label) in &chart.markers {
        let px = sx(*mx);
        let _ = write!(
            o,
            r##"<line x1="{px:.1}" x2="{px:.1}" y1="{TOP}" y2="{b}" stroke="#666" stroke-dasharray="4 3"/><text x="{tx:.1}" y="{ty}" font-size="11" fill="#666" text-anchor="end">{l}</text>"##,
            b = TOP + ph,
            tx = px - 3.0,
            ty = TOP + 12.0,
            l = esc(label)
        );
    }
    let _ = write!(
        o,
        r##"<text x="12" y="{my}" font-size="11" transform="rotate(-90 12 {my})" text-anchor="middle">{u}</text><rect x="{LEFT}" y="{TOP}" width="{pw}" height="{ph}" fill="none" stroke="#999"/>"##,
        my = TOP + ph / 2.0,
        u = esc(&chart.y_unit)
    );
    for s in &chart.series {
        let mut seg = String::new();
        let flush = |seg: &mut String, o: &mut String| {
            if !seg.is_empty() {
                let _ = write!(
                    o,
                    r#"<polyline fill="none" stroke="{c}" stroke-width="1.8" points="{p}"/>"#,
                    c = s.color,
                    p = seg.trim_end()
                );
                seg.clear();
            }
        };
        for (x, y) in &s.points {
            match y {
                Some(y) if y.is_finite() => {
                    let _ = write!(seg, "{:.1},{:.1} ", sx(*x), sy(*y));
                }
                _ => flush(&mut seg, &mut o),
            }
        }
        flush(&mut seg, &mut o);
    }
    if chart
        .series
        .iter()
        .all(|s| s.points.iter().all(|p| p.1.is_none()))
    {
        let _ = write!(
            o,
            r##"<text x="{x}" y="{y}" font-size="13" fill="#888" text-anchor="middle">no data</text>"##,
            x = LEFT + pw / 2.0,
            y = TOP + ph / 2.0
        );
    }
    o.push_str("</svg>");
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chart_draws_each_series_and_splits_gaps() {
        let c = Chart {
            title: "t <x>".into(),
            y_unit: "ms".into(),
            series: vec![Series {
                name: "a".into(),
                color: "#123",
                points: vec![
                    (0.0, Some(1.0)),
                    (1.0, Some(2.0)),
                    (2.0, None),
                    (3.0, Some(1.0)),
                    (4.0, Some(0.5)),
                ],
            }],
            y_max: None,
            x_max: None,
            x_axis: XAxis::Seconds,
            markers: vec![],
        };
        let s = render(&c);
        assert_eq!(s.matches("<polyline").count(), 2);
        assert!(s.contains("t &lt;x&gt;"));
        assert!(s.starts_with("<svg") && s.ends_with("</svg>"));
    }

    #[test]
    fn charts_with_the_same_x_max_share_their_time_ticks() {
        let chart = |last: f64| Chart {
            title: "t".into(),
            y_unit: "ms".into(),
            series: vec![Series {
                name: "a".into(),
                color: "#123",
                points: vec![(0.5, Some(1.0)), (last, Some(1.0))],
            }],
            y_max: None,
            x_max: Some(30.0),
            x_axis: XAxis::Seconds,
            markers: vec![(20.0, "load ends".into())],
        };
        let ticks = |s: &str| {
            s.match_indices("\">")
                .filter(|(i, _)| s[..*i].ends_with("middle") || s[..*i].ends_with("end"))
                .map(|(i, _)| s[i..].split('<').next().unwrap().to_string())
                .collect::<Vec<_>>()
        };
        let (a, b) = (render(&chart(3.0)), render(&chart(29.0)));
        assert_eq!(ticks(&a), ticks(&b));
        assert!(a.contains("30s") && a.contains("load ends"));
    }

    #[test]
    fn a_percentile_axis_is_labelled_in_nines() {
        assert!((percentile_x(0.99) - 2.0).abs() < 1e-9);
        let c = Chart {
            title: "hdr".into(),
            y_unit: "ms".into(),
            series: vec![Series {
                name: "all".into(),
                color: "#123",
                points: vec![(0.0, Some(1.0)), (percentile_x(0.999), Some(9.0))],
            }],
            y_max: None,
            x_max: None,
            x_axis: XAxis::Percentile,
            markers: vec![],
        };
        let s = render(&c);
        for l in ["0%", "90%", "99%", "99.9%"] {
            assert!(s.contains(&format!(">{l}<")), "{l}");
        }
    }

    #[test]
    fn ticks_are_round_numbers() {
        assert_eq!(nice_step(1000.0, 4.0), 500.0);
        assert_eq!(nice_step(7.0, 4.0), 2.0);
        assert_eq!(nice_step(0.9, 4.0), 0.5);
    }
}
