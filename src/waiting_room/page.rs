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

/// The portal's name and logo, shown at the top of every waiting page.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Branding {
    /// The portal's name (e.g. "Cyber Monday"); none: the header shows no name.
    pub portal_name: Option<String>,
    /// The logo's address: `https://…`, `http://…`, a root-relative `/path` or a
    /// `data:image/…` URI. None: no logo.
    pub logo_url: Option<String>,
}

/// Longest portal name shown: a header line, not a paragraph.
pub const MAX_PORTAL_NAME_CHARS: usize = 80;
/// Longest logo address accepted (a small inline SVG fits).
pub const MAX_LOGO_URL_BYTES: usize = 8 * 1024;

impl Branding {
    /// Checks the room keys `portal_name` and `logo_url`; problems go to `errors`
    /// under `key`.
    pub fn compile(
        key: &str,
        portal_name: Option<&str>,
        logo_url: Option<&str>,
        errors: &mut Vec<crate::config::KeyError>,
    ) -> Branding {
        let mut add = |k: &str, message: String| {
            errors.push(crate::config::KeyError {
                key: format!("{key}.{k}"),
                message,
            })
        };
        let portal_name = portal_name.map(str::trim).filter(|n| !n.is_empty());
        if let Some(n) = portal_name {
            if n.chars().count() > MAX_PORTAL_NAME_CHARS {
                add(
                    "portal_name",
                    format!("longer than {MAX_PORTAL_NAME_CHARS} characters"),
                );
            }
        }
        let logo_url = logo_url.map(str::trim).filter(|u| !u.is_empty());
        if let Some(u) = logo_url {
            // Only addresses an <img> loads as a picture: never `javascript:` or
            // a protocol-relative `//host` that changes meaning with the page.
            let lower = u.to_ascii_lowercase();
            let ok = lower.starts_with("https://")
                || lower.starts_with("http://")
                || lower.starts_with("data:image/")
                || (u.starts_with('/') && !u.starts_with("//"));
            if !ok {
                add(
                    "logo_url",
                    format!(
                        "{u:.60?}: expected an https:// or http:// address, a path \
                         starting with \"/\", or a data:image/ URI"
                    ),
                );
            } else if u.len() > MAX_LOGO_URL_BYTES {
                add(
                    "logo_url",
                    format!("longer than {MAX_LOGO_URL_BYTES} bytes"),
                );
            }
        }
        Branding {
            portal_name: portal_name.map(String::from),
            logo_url: logo_url.map(String::from),
        }
    }
}

/// A room's page template, with the portal's branding.
#[derive(Debug, Clone)]
pub struct Template {
    html: String,
    branding: Branding,
}

impl Template {
    /// The built-in page.
    pub fn default_template() -> Self {
        Template {
            html: DEFAULT_HTML.to_string(),
            branding: Branding::default(),
        }
    }

    /// A room's own page.
    pub fn with_html(html: String) -> Self {
        Template {
            html,
            branding: Branding::default(),
        }
    }

    /// The same page with the portal's name and logo.
    pub fn branded(&self, branding: Branding) -> Self {
        Template {
            html: self.html.clone(),
            branding,
        }
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
    /// In line, but an operator paused admissions: no expected wait is shown.
    Paused,
    /// Proof of work asked before a ticket (see [`super::pow`]).
    Challenge,
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
            PageState::Challenge => "challenge",
        }
    }

    /// Whether the page shows a place in line.
    fn in_line(self) -> bool {
        matches!(self, PageState::Waiting | PageState::Paused)
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
    /// People ahead when this visitor took the ticket (the progress bar's full length).
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

/// What the challenge page needs besides the facts (see [`super::pow`]).
#[derive(Debug, Clone)]
pub struct ChallengeView {
    /// The signed challenge the page's script solves.
    pub challenge: String,
    /// Leading zero bits asked of SHA-256(challenge "." nonce).
    pub difficulty: u8,
    /// The cookie the script writes its solution to.
    pub cookie: String,
    /// Seconds until a visitor without JavaScript gets a ticket anyway; None: never.
    pub no_script_after: Option<u64>,
}

impl Facts {
    /// Share of the line ahead at arrival that has gone in, 0–100; None when unknown.
    pub fn progress_percent(&self) -> Option<u64> {
        let arrival = self.ahead_at_arrival?;
        let now = self.people_ahead?;
        if arrival == 0 {
            return Some(100);
        }
        let done = arrival.saturating_sub(now.min(arrival));
        Some(done * 100 / arrival)
    }
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

fn wait_text(lang: Lang, state: PageState, wait: Option<(u64, u64)>) -> String {
    if state == PageState::Paused {
        // A paused line has no honest expected wait: say so instead of a number.
        return lang.t("wait_paused").to_string();
    }
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

/// The expected wait a state may show: none while paused.
fn shown_wait(f: &Facts) -> Option<(u64, u64)> {
    if f.state == PageState::Paused {
        None
    } else {
        f.wait
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

/// The no-JavaScript spelling of a time: UTC, and labelled so.
fn utc_text(ms: u64) -> String {
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

/// Heading, introduction and "what happens next" for a state.
fn texts(lang: Lang, state: PageState) -> (&'static str, &'static str, &'static str) {
    let key = match state {
        PageState::Waiting => "waiting",
        PageState::PreQueue => "prequeue",
        PageState::Admitted => "admitted",
        PageState::SoldOut => "soldout",
        PageState::Paused => "paused",
        PageState::Challenge => "challenge",
    };
    let t = |part: &str| lang.t(&format!("{key}_{part}"));
    (t("heading"), t("intro"), t("next"))
}

fn hidden(show: bool) -> String {
    if show {
        String::new()
    } else {
        "hidden".to_string()
    }
}

/// The template's variables for `f`.
fn vars(
    template: &Template,
    lang: Lang,
    f: &Facts,
    challenge: Option<&ChallengeView>,
) -> Vec<(&'static str, String)> {
    let num = |v: Option<u64>| v.map_or("–".to_string(), |n| n.to_string());
    let (heading, intro, next) = texts(lang, f.state);
    let progress = f.progress_percent();
    let brand = &template.branding;
    let portal = brand.portal_name.clone().unwrap_or_default();
    let title = if portal.is_empty() {
        heading.to_string()
    } else {
        format!("{heading} · {portal}")
    };
    let refresh = match challenge {
        // One second past the no-script delay, so the claim is ripe when it comes
        // back; with no such path, a slow refresh that shows the explanation again.
        Some(c) => c.no_script_after.map_or(60, |s| s + 1),
        None => f.poll_after.max(1),
    };
    let noscript = match (f.state, challenge) {
        (PageState::Challenge, Some(c)) => match c.no_script_after {
            Some(s) => lang
                .t("challenge_noscript")
                .replace("{time}", &s.to_string()),
            None => lang.t("challenge_noscript_off").to_string(),
        },
        (PageState::SoldOut | PageState::Admitted, _) => String::new(),
        _ => lang
            .t("noscript")
            .replace("{time}", &f.poll_after.to_string()),
    };
    vec![
        ("lang", lang.code().to_string()),
        ("state", f.state.as_str().to_string()),
        ("room", f.room.clone()),
        ("title", title),
        ("portal_name", portal.clone()),
        ("logo_url", brand.logo_url.clone().unwrap_or_default()),
        ("hide_logo", hidden(brand.logo_url.is_some())),
        ("hide_portal", hidden(!portal.is_empty())),
        ("position", num(f.position)),
        ("people_ahead", num(f.people_ahead)),
        ("ahead_at_arrival", num(f.ahead_at_arrival)),
        (
            "progress",
            progress.map_or(String::new(), |p| p.to_string()),
        ),
        ("progress_width", progress.unwrap_or(0).to_string()),
        (
            "progress_text",
            match (f.people_ahead, f.ahead_at_arrival) {
                (Some(now), Some(then)) => lang
                    .t(if now == 1 {
                        "progress_text_one"
                    } else {
                        "progress_text"
                    })
                    .replace("{now}", &now.to_string())
                    .replace("{then}", &then.max(now).to_string()),
                (Some(now), None) => lang
                    .t(if now == 1 {
                        "progress_now_one"
                    } else {
                        "progress_now"
                    })
                    .replace("{now}", &now.to_string()),
                _ => String::new(),
            },
        ),
        ("wait", wait_text(lang, f.state, shown_wait(f))),
        ("updated", utc_text(f.updated_ms)),
        ("updated_iso", iso(f.updated_ms)),
        ("opens", f.opens_at_ms.map(utc_text).unwrap_or_default()),
        ("opens_iso", f.opens_at_ms.map(iso).unwrap_or_default()),
        ("refresh", refresh.to_string()),
        ("poll_ms", (f.poll_after * 1000).to_string()),
        ("heading", heading.to_string()),
        ("intro", intro.to_string()),
        ("next", next.to_string()),
        ("noscript", noscript),
        ("hide_numbers", hidden(f.state.in_line())),
        (
            "hide_opens",
            hidden(f.state == PageState::PreQueue && f.opens_at_ms.is_some()),
        ),
        ("hide_challenge", hidden(challenge.is_some())),
        (
            "challenge",
            challenge.map(|c| c.challenge.clone()).unwrap_or_default(),
        ),
        (
            "difficulty",
            challenge.map_or(String::new(), |c| c.difficulty.to_string()),
        ),
        (
            "pow_cookie",
            challenge.map(|c| c.cookie.clone()).unwrap_or_default(),
        ),
        ("ticket", num(f.ticket)),
    ]
}

/// Fills `{{name}}` and `{{t.key}}` in `src`, HTML-escaped.
fn render(src: &str, lang: Lang, vars: &[(&'static str, String)]) -> String {
    let mut out = String::with_capacity(src.len() + 512);
    let mut rest = src;
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

/// The HTML page for `facts` in `lang`.
pub fn html(template: &Template, lang: Lang, f: &Facts) -> String {
    render(&template.html, lang, &vars(template, lang, f, None))
}

/// The proof-of-work page: the script solves `challenge`, then asks again.
pub fn challenge_html(template: &Template, lang: Lang, f: &Facts, c: &ChallengeView) -> String {
    render(&template.html, lang, &vars(template, lang, f, Some(c)))
}

fn json_value(lang: Lang, f: &Facts) -> serde_json::Value {
    let wait = shown_wait(f);
    serde_json::json!({
        "room": f.room,
        "state": f.state.as_str(),
        "ticket": f.ticket,
        "position": f.position,
        "people_ahead": f.people_ahead,
        "ahead_at_arrival": f.ahead_at_arrival,
        "progress_percent": f.progress_percent(),
        "expected_wait_seconds": wait.map(|(low, high)| serde_json::json!({"low": low, "high": high})),
        "expected_wait_text": wait_text(lang, f.state, wait),
        "last_update": iso(f.updated_ms),
        "poll_after": f.poll_after,
        "opens_at": f.opens_at_ms.map(iso),
    })
}

/// The JSON document for `facts`.
pub fn json(lang: Lang, f: &Facts) -> String {
    format!("{}\n", json_value(lang, f))
}

/// The JSON answer asking for proof of work: the facts plus what to solve and how.
pub fn challenge_json(lang: Lang, f: &Facts, c: &ChallengeView) -> String {
    let mut v = json_value(lang, f);
    v["challenge"] = serde_json::json!({
        "value": c.challenge,
        "difficulty_bits": c.difficulty,
        "algorithm": "sha256-leading-zero-bits",
        "solve": "find a decimal nonce such that SHA-256(value + \".\" + nonce) starts with difficulty_bits zero bits",
        "send": format!("cookie {}=value.nonce, or header x-floodgate-pow: value.nonce", c.cookie),
        "no_script_after_seconds": c.no_script_after,
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

    fn waiting(ahead: u64, at_arrival: Option<u64>) -> Facts {
        Facts {
            room: "sale<x>".into(),
            state: PageState::Waiting,
            ticket: Some(9),
            position: Some(ahead + 1),
            people_ahead: Some(ahead),
            ahead_at_arrival: at_arrival,
            wait: Some((120, 300)),
            updated_ms: 3_600_000,
            poll_after: 7,
            opens_at_ms: None,
        }
    }

    #[test]
    fn the_page_shows_the_facts_escaped_with_a_meta_refresh() {
        let page = html(
            &Template::default_template(),
            Lang::Fr,
            &waiting(2, Some(8)),
        );
        assert!(page.contains("<html lang=\"fr\">"));
        assert!(page.contains("<dd id=\"position\">3</dd>"));
        assert!(page.contains("de 2 à 5 minutes"));
        assert!(page.contains("content=\"7\""));
        assert!(page.contains("aria-live=\"polite\""));
        assert!(page.contains("sale&lt;x&gt;"));
        assert!(!page.contains("{{"));
    }

    #[test]
    fn the_progress_bar_measures_people_ahead_now_against_at_arrival() {
        let page = html(
            &Template::default_template(),
            Lang::En,
            &waiting(2, Some(8)),
        );
        assert!(page.contains("style=\"width: 75%\""), "6 of 8 gone in");
        assert!(page.contains("aria-valuenow=\"75\""));
        assert!(page.contains("2 people ahead of you, 8 when you arrived"));
        assert_eq!(waiting(0, Some(0)).progress_percent(), Some(100));
        assert_eq!(waiting(9, Some(8)).progress_percent(), Some(0));
        assert_eq!(waiting(3, None).progress_percent(), None);
    }

    #[test]
    fn the_heading_appears_once_with_a_what_happens_next_line() {
        for lang in [Lang::En, Lang::Fr] {
            let page = html(&Template::default_template(), lang, &waiting(2, Some(8)));
            let heading = escape(lang.t("waiting_heading"));
            let visible = page.split("<body>").nth(1).unwrap();
            assert_eq!(visible.matches(&heading).count(), 1, "{lang:?}");
            assert_eq!(page.matches("<h1>").count(), 1);
            assert!(!page.contains("<h2"));
            assert!(page.contains(&escape(lang.t("waiting_next"))));
        }
    }

    #[test]
    fn a_paused_line_says_paused_and_shows_no_expected_wait() {
        let mut f = waiting(4, Some(10));
        f.state = PageState::Paused;
        let page = html(&Template::default_template(), Lang::En, &f);
        assert!(page.contains("data-state=\"paused\""));
        assert!(page.contains("The line is paused"));
        assert!(page.contains("<dd id=\"wait\">paused</dd>"));
        assert!(!page.contains("minutes"), "no expected wait while paused");
        let j: serde_json::Value = serde_json::from_str(&json(Lang::Fr, &f)).unwrap();
        assert_eq!(j["state"], "paused");
        assert_eq!(j["expected_wait_seconds"], serde_json::Value::Null);
        assert_eq!(j["expected_wait_text"], "en pause");
        assert_eq!(j["ahead_at_arrival"], 10);
        assert_eq!(j["progress_percent"], 60);
    }

    #[test]
    fn times_are_iso_for_the_script_and_labelled_utc_without_it() {
        let mut f = waiting(2, None);
        f.state = PageState::PreQueue;
        f.position = None;
        f.people_ahead = None;
        f.opens_at_ms = Some(1_795_766_400_000);
        let page = html(&Template::default_template(), Lang::En, &f);
        assert!(page.contains("datetime=\"2026-11-27T08:00:00Z\""), "{page}");
        assert!(page.contains(">08:00:00 UTC</time>"));
        assert!(page.contains("datetime=\"1970-01-01T01:00:00Z\""));
        assert!(page.contains("Times are in UTC."));
    }

    #[test]
    fn the_portal_name_and_logo_come_from_the_room() {
        let mut errors = Vec::new();
        let b = Branding::compile(
            "waiting_room[0]",
            Some("Cyber \"Monday\""),
            Some("https://cdn.example/logo.svg"),
            &mut errors,
        );
        assert!(errors.is_empty(), "{errors:?}");
        let t = Template::default_template().branded(b);
        let page = html(&t, Lang::En, &waiting(2, Some(8)));
        assert!(page.contains(
            "<img src=\"https://cdn.example/logo.svg\" alt=\"Cyber &quot;Monday&quot;\" >"
        ));
        assert!(page.contains("<title>You are in line · Cyber &quot;Monday&quot;</title>"));
        let plain = html(
            &Template::default_template(),
            Lang::En,
            &waiting(2, Some(8)),
        );
        assert!(
            plain.contains("alt=\"\" hidden>"),
            "no logo configured: none shown"
        );
        for bad in ["javascript:alert(1)", "//evil.example/x.png", "logo.png"] {
            let mut errors = Vec::new();
            Branding::compile("waiting_room[0]", None, Some(bad), &mut errors);
            assert_eq!(errors.len(), 1, "{bad}");
            assert_eq!(errors[0].key, "waiting_room[0].logo_url");
        }
    }

    #[test]
    fn the_challenge_page_carries_what_the_script_solves_and_the_no_script_delay() {
        let mut f = waiting(0, None);
        f.state = PageState::Challenge;
        let c = ChallengeView {
            challenge: "w1.sale.1.2.16.abc.id.sig".into(),
            difficulty: 16,
            cookie: "fg_pow_sale".into(),
            no_script_after: Some(30),
        };
        let page = challenge_html(&Template::default_template(), Lang::En, &f, &c);
        assert!(page.contains("data-challenge=\"w1.sale.1.2.16.abc.id.sig\""));
        assert!(page.contains("data-difficulty=\"16\""));
        assert!(
            page.contains("content=\"31\""),
            "refresh just after the delay"
        );
        assert!(page.contains("in 30 seconds"));
        let j: serde_json::Value = serde_json::from_str(&challenge_json(Lang::En, &f, &c)).unwrap();
        assert_eq!(j["state"], "challenge");
        assert_eq!(j["challenge"]["difficulty_bits"], 16);
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
