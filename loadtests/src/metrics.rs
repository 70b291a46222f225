//! Scraping the gateway's Prometheus endpoint and the simulated shop's stats.

use serde::{Deserialize, Serialize};

/// One sample of the Prometheus text format.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Metric name (with any `_total`/`_bucket` suffix as written).
    pub name: String,
    /// Label pairs in order.
    pub labels: Vec<(String, String)>,
    /// Value.
    pub value: f64,
}

impl Sample {
    /// Value of a label, if present.
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// Parses the Prometheus text exposition format; lines that do not parse are skipped,
/// since one odd line must not cost the whole scrape.
pub fn parse_prometheus(text: &str) -> Vec<Sample> {
    text.lines().filter_map(parse_line).collect()
}

fn parse_line(line: &str) -> Option<Sample> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let name_end = line.find(|c: char| c == '{' || c.is_whitespace())?;
    let name = line[..name_end].to_string();
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if rest.starts_with('{') {
        rest = &rest[1..];
        loop {
            rest = rest.trim_start_matches([' ', ',']);
            if let Some(r) = rest.strip_prefix('}') {
                rest = r;
                break;
            }
            let eq = rest.find('=')?;
            let key = rest[..eq].trim().to_string();
            rest = rest[eq + 1..].trim_start().strip_prefix('"')?;
            let mut value = String::new();
            let mut chars = rest.char_indices();
            let end = loop {
                let (i, c) = chars.next()?;
                match c {
                    '\\' => match chars.next()?.1 {
                        'n' => value.push('\n'),
                        other => value.push(other),
                    },
                    '"' => break i,
                    c => value.push(c),
                }
            };
            labels.push((key, value));
            rest = &rest[end + 1..];
        }
    }
    let value = rest.split_whitespace().next()?;
    let value = match value {
        "+Inf" | "Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    Some(Sample {
        name,
        labels,
        value,
    })
}

/// What the reports use from one gateway scrape.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct GatewayReading {
    /// Sum of `floodgate_queue_depth` over all label sets, if exposed.
    pub queue_depth: Option<f64>,
    /// Cumulative cache hits, if exposed.
    pub cache_hits: Option<f64>,
    /// Cumulative cache lookups of any result, if exposed.
    pub cache_lookups: Option<f64>,
}

/// Extracts the queue depth and cache counters; absent metrics stay `None`.
pub fn gateway_reading(samples: &[Sample]) -> GatewayReading {
    let mut r = GatewayReading::default();
    for s in samples {
        if !s.value.is_finite() {
            continue;
        }
        match s.name.as_str() {
            "floodgate_queue_depth" => *r.queue_depth.get_or_insert(0.0) += s.value,
            "floodgate_cache_lookups_total" => {
                *r.cache_lookups.get_or_insert(0.0) += s.value;
                if s.label("result") == Some("hit") {
                    *r.cache_hits.get_or_insert(0.0) += s.value;
                } else {
                    r.cache_hits.get_or_insert(0.0);
                }
            }
            _ => {}
        }
    }
    r
}

/// Hit ratio between two cumulative readings; None when no lookup happened.
pub fn hit_ratio(prev: &GatewayReading, now: &GatewayReading) -> Option<f64> {
    let lookups = now.cache_lookups? - prev.cache_lookups.unwrap_or(0.0);
    let hits = now.cache_hits? - prev.cache_hits.unwrap_or(0.0);
    (lookups > 0.0).then(|| (hits / lookups).clamp(0.0, 1.0))
}

/// `GET /__shop/stats` of the simulated shop.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ShopStats {
    /// Requests being served now.
    pub in_flight: u64,
    /// Highest concurrency seen.
    pub peak_in_flight: u64,
    /// Requests served.
    pub served: u64,
    /// Origin-side 5xx (collapse).
    pub errors: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"
# HELP floodgate_queue_depth Requests waiting.
# TYPE floodgate_queue_depth gauge
floodgate_queue_depth{upstream="a"} 3
floodgate_queue_depth{upstream="b"} 4
floodgate_cache_lookups_total{route="r",result="hit"} 90
floodgate_cache_lookups_total{route="r",result="miss"} 8
floodgate_cache_lookups_total{route="r",result="stale"} 2
weird{a="x\"y",b="z"} 1.5e3 1700000000
up +Inf
garbage line
"#;

    #[test]
    fn the_text_format_is_parsed_with_labels_and_escapes() {
        let s = parse_prometheus(TEXT);
        let w = s.iter().find(|s| s.name == "weird").unwrap();
        assert_eq!(w.label("a"), Some("x\"y"));
        assert_eq!(w.value, 1500.0);
        assert!(s.iter().any(|s| s.name == "up" && s.value.is_infinite()));
    }

    #[test]
    fn queue_depth_is_summed_and_the_hit_ratio_uses_all_results() {
        let r = gateway_reading(&parse_prometheus(TEXT));
        assert_eq!(r.queue_depth, Some(7.0));
        assert_eq!(hit_ratio(&GatewayReading::default(), &r), Some(0.9));
    }

    #[test]
    fn absent_metrics_are_tolerated() {
        let r = gateway_reading(&parse_prometheus("other_metric 1\n"));
        assert_eq!(r, GatewayReading::default());
        assert_eq!(hit_ratio(&r, &r), None);
    }
}
