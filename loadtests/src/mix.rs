//! The request mix: weighted entries, path templates with random ids, cookie jars.

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method};
use rand::Rng;
use std::fmt::Write as _;
use std::time::Duration;

/// A path with `{lo..hi}` holes, each filled with a uniform random integer.
#[derive(Debug, Clone, PartialEq)]
pub struct PathTemplate {
    parts: Vec<Part>,
    source: String,
}

#[derive(Debug, Clone, PartialEq)]
enum Part {
    Lit(String),
    Range(u64, u64),
}

impl PathTemplate {
    /// Parses `/products/{1..500}`; a path without holes is used as is.
    pub fn parse(s: &str) -> Result<Self, String> {
        if !s.starts_with('/') {
            return Err(format!("path {s:?} must start with '/'"));
        }
        let mut parts = Vec::new();
        let mut rest = s;
        while let Some(open) = rest.find('{') {
            if open > 0 {
                parts.push(Part::Lit(rest[..open].to_string()));
            }
            let close = rest[open..]
                .find('}')
                .ok_or_else(|| format!("path {s:?}: '{{' without '}}'"))?
                + open;
            let inner = &rest[open + 1..close];
            let (lo, hi) = inner
                .split_once("..")
                .ok_or_else(|| format!("path {s:?}: expected {{lo..hi}}, got {{{inner}}}"))?;
            let lo: u64 = lo
                .trim()
                .parse()
                .map_err(|_| format!("path {s:?}: {lo:?} is not a non-negative integer"))?;
            let hi: u64 = hi
                .trim()
                .parse()
                .map_err(|_| format!("path {s:?}: {hi:?} is not a non-negative integer"))?;
            if hi < lo {
                return Err(format!("path {s:?}: empty range {lo}..{hi}"));
            }
            parts.push(Part::Range(lo, hi));
            rest = &rest[close + 1..];
        }
        if !rest.is_empty() {
            parts.push(Part::Lit(rest.to_string()));
        }
        Ok(PathTemplate {
            parts,
            source: s.to_string(),
        })
    }

    /// Fills the holes; ranges are inclusive on both ends.
    pub fn render(&self, rng: &mut impl Rng) -> String {
        let mut out = String::with_capacity(self.source.len() + 8);
        for p in &self.parts {
            match p {
                Part::Lit(s) => out.push_str(s),
                Part::Range(lo, hi) => {
                    let _ = write!(out, "{}", rng.random_range(*lo..=*hi));
                }
            }
        }
        out
    }

    /// The template as written in the scenario.
    pub fn as_str(&self) -> &str {
        &self.source
    }
}

/// A single HTTP request kind of the mix.
#[derive(Debug, Clone)]
pub struct RequestSpec {
    /// HTTP method.
    pub method: Method,
    /// Path template.
    pub path: PathTemplate,
    /// Extra headers sent as given.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Request body; empty for none.
    pub body: Bytes,
    /// Whether to send and keep cookies from one of the shared session jars.
    pub cookies: bool,
}

/// A virtual shopper: lands on a page, waits in line if told to, browses, buys.
#[derive(Debug, Clone)]
pub struct ShopperSpec {
    /// The page the shopper lands on (the one a waiting room guards).
    pub entry: PathTemplate,
    /// Pages visited in order once admitted.
    pub browse: Vec<PathTemplate>,
    /// Where the purchase is POSTed; none for window shoppers.
    pub checkout: Option<PathTemplate>,
    /// Body of the purchase.
    pub body: Bytes,
    /// Extra headers on every request of the shopper.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Pause between two steps once admitted.
    pub think_time: Duration,
    /// The whole visit, waiting included, ends after this.
    pub max_session: Duration,
    /// Poll interval when the waiting page does not say.
    pub poll_interval: Duration,
    /// Longest poll interval honoured, whatever the page says.
    pub max_poll_interval: Duration,
}

/// What an entry of the mix does.
#[derive(Debug, Clone)]
pub enum EntryKind {
    /// One request.
    Request(RequestSpec),
    /// A shopper session (a closed sub-loop).
    Shopper(ShopperSpec),
}

/// One weighted entry of the mix.
#[derive(Debug, Clone)]
pub struct MixEntry {
    /// Label used in reports.
    pub name: String,
    /// Relative weight.
    pub weight: u32,
    /// What it does.
    pub kind: EntryKind,
}

/// The weighted mix; picking is a binary search over cumulative weights.
#[derive(Debug, Clone)]
pub struct Mix {
    entries: Vec<MixEntry>,
    cumulative: Vec<u64>,
}

impl Mix {
    /// Builds a mix; entries of weight 0 are kept (for reports) but never picked.
    pub fn new(entries: Vec<MixEntry>) -> Self {
        let mut acc = 0u64;
        let cumulative = entries
            .iter()
            .map(|e| {
                acc += u64::from(e.weight);
                acc
            })
            .collect();
        Mix {
            entries,
            cumulative,
        }
    }

    /// The entries, in scenario order.
    pub fn entries(&self) -> &[MixEntry] {
        &self.entries
    }

    /// Picks an entry index by weight.
    pub fn pick(&self, rng: &mut impl Rng) -> usize {
        let total = *self.cumulative.last().unwrap_or(&0);
        if total == 0 {
            return 0;
        }
        let x = rng.random_range(0..total);
        self.cumulative.partition_point(|&c| c <= x)
    }
}

/// A minimal cookie jar: one host, so only name=value pairs matter.
#[derive(Debug, Default, Clone)]
pub struct CookieJar {
    cookies: Vec<(String, String)>,
}

impl CookieJar {
    /// The `Cookie` header value, if any cookie is held.
    pub fn header(&self) -> Option<String> {
        if self.cookies.is_empty() {
            return None;
        }
        let mut s = String::new();
        for (i, (k, v)) in self.cookies.iter().enumerate() {
            if i > 0 {
                s.push_str("; ");
            }
            s.push_str(k);
            s.push('=');
            s.push_str(v);
        }
        Some(s)
    }

    /// Applies one `Set-Cookie` header value; `Max-Age=0` or an empty value deletes.
    pub fn store(&mut self, set_cookie: &str) {
        let mut attrs = set_cookie.split(';');
        let Some((name, value)) = attrs.next().and_then(|p| p.split_once('=')) else {
            return;
        };
        let name = name.trim();
        if name.is_empty() {
            return;
        }
        let value = value.trim().trim_matches('"');
        let expired = attrs.any(|a| {
            let a = a.trim();
            a.len() > 8
                && a[..8].eq_ignore_ascii_case("max-age=")
                && a[8..].trim().starts_with(['0', '-'])
        });
        self.cookies.retain(|(k, _)| k != name);
        if !expired && !value.is_empty() {
            self.cookies.push((name.to_string(), value.to_string()));
        }
    }

    /// Whether the jar holds nothing.
    pub fn is_empty(&self) -> bool {
        self.cookies.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{rngs::SmallRng, SeedableRng};

    #[test]
    fn a_template_fills_its_ranges_inclusively() {
        let t = PathTemplate::parse("/products/{1..3}/x").unwrap();
        let mut rng = SmallRng::seed_from_u64(1);
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..200 {
            seen.insert(t.render(&mut rng));
        }
        let want: std::collections::BTreeSet<String> =
            (1..=3).map(|i| format!("/products/{i}/x")).collect();
        assert_eq!(seen, want);
        assert!(PathTemplate::parse("/a/{3..1}").is_err());
        assert!(PathTemplate::parse("/a/{x}").is_err());
        assert!(PathTemplate::parse("a").is_err());
    }

    #[test]
    fn the_mix_respects_weights() {
        let e = |w| MixEntry {
            name: String::new(),
            weight: w,
            kind: EntryKind::Request(RequestSpec {
                method: Method::GET,
                path: PathTemplate::parse("/").unwrap(),
                headers: vec![],
                body: Bytes::new(),
                cookies: false,
            }),
        };
        let mix = Mix::new(vec![e(1), e(0), e(3)]);
        let mut rng = SmallRng::seed_from_u64(7);
        let mut counts = [0u32; 3];
        for _ in 0..40_000 {
            counts[mix.pick(&mut rng)] += 1;
        }
        assert_eq!(counts[1], 0);
        let ratio = f64::from(counts[2]) / f64::from(counts[0]);
        assert!((2.8..3.2).contains(&ratio), "{counts:?}");
    }

    #[test]
    fn the_jar_keeps_replaces_and_expires_cookies() {
        let mut j = CookieJar::default();
        j.store("a=1; Path=/; HttpOnly");
        j.store("b=2");
        j.store("a=3");
        assert_eq!(j.header().unwrap(), "b=2; a=3");
        j.store("b=; Max-Age=0");
        assert_eq!(j.header().unwrap(), "a=3");
    }
}
