//! The waiting answer: an HTML page from a template (en + fr strings) or a JSON
//! document with the same facts.
//!
//! The template (default `config/waiting-room/waiting.html`, built in) uses
//! `{{name}}` for facts (`position`, `people_ahead`, `wait`, `updated`, `refresh`, …)
//! and `{{t.key}}` for strings of the visitor's language; values are HTML-escaped.

use std::collections::HashMap;
use std::sync::OnceLock;
use std::time::Duration;

use http::HeaderMap;
use rand::Rng;

/// Poll interval near the front: a few seconds, so the turn is noticed quickly.
pub const MIN_POLL: Duration = Duration::from_secs(2);
/// Poll interval far from the front: a million waiters polling every 20 s cost 50 k
/// requests per second of counters, never the origin.
pub const MAX_POLL: Duration = Duration::from_secs(20);

const DEFAULT_HTML: &str = include_str!("../../config/waiting-room/waiting.html");
const EN: &str = include_str!("../../config/waiting-room/en.toml");
const FR: &str = include_str!("../../config/waiting-room/fr.toml");

/// Languages shipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    /// English (the default).
    En,
    /// French.
    Fr,
}

impl Lang {
    fn code(self) -> &'static str {
        match self {
            Lang::En => "en",
            Lang::Fr => "fr",
        }
    }

    fn strings(self) -> &'static HashMap<String, String> {
        static EN_S: OnceLock<HashMap<String, String>> = OnceLock::new();
        static FR_S: OnceLock<HashMap<String, String>> = OnceLock::new();
        let (cell, text) = match self {
            Lang::En => (&EN_S, EN),
            Lang::Fr => (&FR_S, FR),
        };
        cell.get_or_init(|| toml::from_str(text).expect("shipped strings are valid TOML"))
    }

    fn t(self, key: &str) -> &'static str {
        self.strings()
            .get(key)
            .or_else(|| Lang::En.strings().get(key))
            .map(String::as_str)
            .unwrap_or("")
    }
}

/// The visitor's language from `Accept-Language`: the first of ours it names.
pub fn language(headers: &HeaderMap) -> Lang {
    let Some(v) = headers
        .get(http::header::ACCEPT_LANGUAGE)
        .and_then(|v| v.to_str().ok())
    else {
        return Lang::En;
    };
    let mut best: Option<(f32, Lang)> = None;
    for part in v.split(',') {
        let mut it = part.trim().split(';');
        let tag = it.next().unwrap_or("").trim().to_ascii_lowercase();
        let q = it
            .find_map(|p| p.trim().strip_prefix("q=").and_then(|q| q.parse().ok()))
            .unwrap_or(1.0f32);
        let lang = if tag == "fr" || tag.starts_with("fr-") {
            Lang::Fr
        } else if tag == "en" || tag.starts_with("en-") {
            Lang::En
        } else {
            continue;
        };
        if !matches!(best, Some((bq, _)) if bq >= q) {
            best = Some((q, lang));
        }
    }
    best.map_or(Lang::En, |(_, l)| l)
}

/// A room's page template.
#[derive(Debug)]
pub struct Template {
    html: String,
}

impl Template {
    /// The built-in page.
    pub fn default_template() -> Self {
        Template {
            html: DEFAULT_HTML.to_string(),
        }
    }

    /// A room's own page.
    pub fn with_html(html: String) -> Self {
        Template { html }
    }
}

/// What the visitor is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PageState {
    /// In line with a known place.
    Waiting,
    /// Before opening; the place is drawn at opening.
    PreQueue,
    /// Admitted (answer to a status poll).
    Admitted,
    /// Sold out or closed.
    SoldOut,
    /// Admissions paused by an operator: no expected wait.
    Paused,
}

impl PageState {
    /// The JSON and `data-state` spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            PageState::Waiting => "waiting",
            PageState::PreQueue => "prequeue",
            PageState::Admitted => "admitted",
            PageState::SoldOut => "sold_out",
            PageState::Paused => "paused",
        }
    }
}

/// The facts on a waiting answer.
#[derive(Debug, Clone)]
pub struct Facts {
    /// Room name.
    pub room: String,
    /// What to say.
    pub state: PageState,
    /// Ticket number, if any.
    pub ticket: Option<u64>,
    /// Place in line (people ahead + 1).
    pub position: Option<u64>,
    /// People ahead.
    pub people_ahead: Option<u64>,
    /// People ahead when the ticket was issued (for a progress bar).
    pub ahead_at_arrival: Option<u64>,
    /// Expected wait range, seconds.
    pub wait: Option<(u64, u64)>,
    /// When these facts were computed, unix ms.
    pub updated_ms: u64,
    /// When to ask again, seconds.
    pub poll_after: u64,
    /// Opening time, unix ms (pre-queue).
    pub opens_at_ms: Option<u64>,
}

/// Seconds until the next poll: a tenth of the expected wait, between [`MIN_POLL`] and
/// [`MAX_POLL`], below a third of `abandon_after` (so a present waiter is never taken
/// for gone), with ±20 % jitter so waiters do not poll in waves.
pub fn poll_after(wait_low_s: u64, abandon_after: Duration) -> u64 {
    let cap = (abandon_after.as_secs_f64() / 3.0).max(1.0);
    let base = (wait_low_s as f64 / 10.0)
        .clamp(MIN_POLL.as_secs_f64(), MAX_POLL.as_secs_f64())
        .min(cap);
    let j = rand::rng().random_range(0.8..1.2);
    (base * j).round().max(1.0) as u64
}

fn wait_text(lang: Lang, wait: Option<(u64, u64)>) -> String {
    match wait {
        None => lang.t("wait_unknown").to_string(),
        Some((_, high)) if high <= 1 => lang.t("wait_soon").to_string(),
        Some((low, high)) if high < 120 => lang
            .t("wait_seconds")
            .replace("{low}", &low.to_string())
            .replace("{high}", &high.to_string()),
        Some((low, high)) => lang
            .t("wait_minutes")
            .replace("{low}", &(low / 60).to_string())
            .replace("{high}", &high.div_ceil(60).to_string()),
    }
}

fn iso(ms: u64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

fn hms(ms: u64) -> String {
    let s = ms / 1000;
    format!(
        "{:02}:{:02}:{:02} UTC",
        (s / 3600) % 24,
        (s / 60) % 60,
        s % 60
    )
}

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The HTML page for `facts` in `lang`.
pub fn html(template: &Template, lang: Lang, f: &Facts) -> String {
    let num = |v: Option<u64>| v.map_or("–".to_string(), |n| n.to_string());
    let (heading, intro) = match f.state {
        PageState::PreQueue => (
            lang.t("prequeue_heading").to_string(),
            lang.t("prequeue_intro")
                .replace("{time}", &f.opens_at_ms.map(hms).unwrap_or_default()),
        ),
        PageState::SoldOut => (
            lang.t("soldout_heading").to_string(),
            lang.t("soldout_intro").to_string(),
        ),
        PageState::Admitted => (
            lang.t("heading").to_string(),
            lang.t("admitted").to_string(),
        ),
        PageState::Waiting | PageState::Paused => {
            (lang.t("heading").to_string(), lang.t("intro").to_string())
        }
    };
    let vars: [(&str, String); 15] = [
        ("lang", lang.code().to_string()),
        ("state", f.state.as_str().to_string()),
        ("room", f.room.clone()),
        ("position", num(f.position)),
        ("people_ahead", num(f.people_ahead)),
        ("wait", wait_text(lang, f.wait)),
        ("updated", hms(f.updated_ms)),
        ("updated_iso", iso(f.updated_ms)),
        ("refresh", f.poll_after.to_string()),
        ("poll_ms", (f.poll_after * 1000).to_string()),
        ("heading", heading),
        ("intro", intro),
        (
            "noscript",
            lang.t("noscript")
                .replace("{time}", &f.poll_after.to_string()),
        ),
        (
            "hide_numbers",
            if f.state == PageState::Waiting {
                String::new()
            } else {
                "hidden".to_string()
            },
        ),
        ("ticket", num(f.ticket)),
    ];
    let src = &template.html;
    let mut out = String::with_capacity(src.len() + 512);
    let mut rest = src.as_str();
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else {
            out.push_str(&rest[start..]);
            rest = "";
            break;
        };
        let name = after[..end].trim();
        if let Some(key) = name.strip_prefix("t.") {
            out.push_str(&escape(lang.t(key)));
        } else if let Some((_, v)) = vars.iter().find(|(k, _)| *k == name) {
            out.push_str(&escape(v));
        }
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    out
}

/// The JSON document for `facts`.
pub fn json(lang: Lang, f: &Facts) -> String {
    let v = serde_json::json!({
        "room": f.room,
        "state": f.state.as_str(),
        "ticket": f.ticket,
        "position": f.position,
        "people_ahead": f.people_ahead,
        "expected_wait_seconds": f.wait.map(|(low, high)| serde_json::json!({"low": low, "high": high})),
        "expected_wait_text": wait_text(lang, f.wait),
        "last_update": iso(f.updated_ms),
        "poll_after": f.poll_after,
        "opens_at": f.opens_at_ms.map(iso),
    });
    format!("{v}\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn french_is_chosen_by_accept_language_and_english_is_the_default() {
        let mut h = HeaderMap::new();
        assert_eq!(language(&h), Lang::En);
        h.insert(
            http::header::ACCEPT_LANGUAGE,
            "de-DE, fr-FR;q=0.9, en;q=0.8".parse().unwrap(),
        );
        assert_eq!(language(&h), Lang::Fr);
        h.insert(
            http::header::ACCEPT_LANGUAGE,
            "en-GB, fr;q=0.5".parse().unwrap(),
        );
        assert_eq!(language(&h), Lang::En);
    }

    #[test]
    fn the_page_shows_the_facts_escaped_with_a_meta_refresh() {
        let f = Facts {
            room: "sale<x>".into(),
            state: PageState::Waiting,
            ticket: Some(9),
            position: Some(3),
            people_ahead: Some(2),
            ahead_at_arrival: Some(5),
            wait: Some((120, 300)),
            updated_ms: 3_600_000,
            poll_after: 7,
            opens_at_ms: None,
        };
        let page = html(&Template::default_template(), Lang::Fr, &f);
        assert!(page.contains("<html lang=\"fr\">"));
        assert!(page.contains("<dd id=\"position\">3</dd>"));
        assert!(page.contains("de 2 à 5 minutes"));
        assert!(page.contains("content=\"7\""));
        assert!(page.contains("aria-live=\"polite\""));
        assert!(page.contains("sale&lt;x&gt;"));
        assert!(!page.contains("{{"));
    }

    #[test]
    fn polls_are_rarer_far_from_the_front_and_never_exceed_a_third_of_abandon_after() {
        let far = poll_after(100_000, Duration::from_secs(600));
        let near = poll_after(3, Duration::from_secs(600));
        assert!((16..=24).contains(&far), "{far}");
        assert!(near <= 3, "{near}");
        assert!(poll_after(100_000, Duration::from_secs(3)) <= 2);
    }
}
