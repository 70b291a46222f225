//! Shoppers: virtual users that wait in a waiting room, then browse and buy.
//!
//! A shopper is a closed sub-loop inside an open-model run: its arrival is on
//! the schedule, but each of its requests waits for the previous answer, as a
//! person's browser does. Its whole visit is bounded by `max_session` and by
//! the run's hard stop.

use crate::client::{Req, Resp, Want};
use crate::engine::{Ctx, Failure};
use crate::mix::{CookieJar, EntryKind, PathTemplate, ShopperSpec};
use crate::stats::is_refusal;
use bytes::Bytes;
use http::Method;
use rand::rngs::SmallRng;
use rand::SeedableRng;
use std::time::Duration;
use tokio::time::{sleep_until, Instant};

/// What a page told the shopper.
#[derive(Debug, Clone, PartialEq)]
pub enum PageKind {
    /// A waiting-room page: come back after `after` (if said), maybe at `url`.
    Waiting {
        /// Suggested delay.
        after: Option<Duration>,
        /// Where to poll next, if the page says.
        url: Option<String>,
    },
    /// Anything else.
    Content,
}

/// Recognises a waiting page: HTML with `<meta http-equiv="refresh">`, or JSON with `"status":"waiting"`.
pub fn classify_page(
    content_type: Option<&str>,
    body: &[u8],
    retry_after: Option<&str>,
) -> PageKind {
    let header_delay = retry_after
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map(secs);
    let ct = content_type.unwrap_or("").to_ascii_lowercase();
    let text = String::from_utf8_lossy(body);
    let looks_json = ct.contains("json") || text.trim_start().starts_with('{');
    if looks_json {
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) {
            if v.get("status").and_then(|s| s.as_str()) == Some("waiting") {
                let hint = [
                    "retry_after",
                    "refresh",
                    "refresh_after",
                    "poll_after",
                    "poll_interval",
                ]
                .iter()
                .find_map(|k| v.get(*k).and_then(serde_json::Value::as_f64))
                .map(secs);
                return PageKind::Waiting {
                    after: hint.or(header_delay),
                    url: None,
                };
            }
        }
        return PageKind::Content;
    }
    let lower = text.to_ascii_lowercase();
    let Some(at) = lower
        .find("http-equiv=\"refresh\"")
        .or_else(|| lower.find("http-equiv='refresh'"))
        .or_else(|| lower.find("http-equiv=refresh"))
    else {
        return PageKind::Content;
    };
    // The meta tag's attributes may come in any order: look inside the tag.
    let tag_start = lower[..at].rfind('<').unwrap_or(at);
    let tag_end = lower[at..].find('>').map_or(lower.len(), |e| at + e);
    let tag = &text[tag_start..tag_end];
    let tag_lower = &lower[tag_start..tag_end];
    let (after, url) = match tag_lower.find("content=") {
        Some(c) => {
            let v = tag[c + 8..].trim_start_matches(['"', '\'']);
            let v = &v[..v.find(['"', '\'']).unwrap_or(v.len())];
            let mut parts = v.splitn(2, [';', ',']);
            let delay = parts
                .next()
                .and_then(|d| d.trim().parse::<f64>().ok())
                .map(secs);
            let url = parts.next().and_then(|u| {
                let u = u.trim();
                let u = u
                    .get(..4)
                    .filter(|p| p.eq_ignore_ascii_case("url="))
                    .map_or(u, |_| &u[4..]);
                (!u.is_empty()).then(|| u.trim_matches(['"', '\'']).to_string())
            });
            (delay, url)
        }
        None => (None, None),
    };
    PageKind::Waiting {
        after: after.or(header_delay),
        url,
    }
}

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s.clamp(0.0, 3600.0))
}

struct Visit<'a> {
    ctx: &'a Ctx,
    spec: &'a ShopperSpec,
    entry: usize,
    jar: CookieJar,
    end: Instant,
    admitted: bool,
    thrown_out: bool,
}

enum Step {
    Done,
    GaveUp,
}

impl Visit<'_> {
    async fn request(
        &mut self,
        method: &Method,
        path: &str,
        body: &Bytes,
    ) -> Result<Resp, Failure> {
        let cookie = self.jar.header();
        let req = Req {
            method,
            path,
            headers: &self.spec.headers,
            cookie: cookie.as_deref(),
            body,
        };
        let sent = Instant::now();
        self.ctx.rec().dispatched(sent, None);
        let out = self
            .ctx
            .send(
                &req,
                Want {
                    headers: true,
                    body: true,
                },
            )
            .await;
        let now = Instant::now();
        if let Ok(r) = &out {
            for c in &r.set_cookies {
                self.jar.store(c);
            }
        }
        self.ctx.record(now, self.entry, &out, now - sent);
        out
    }

    /// Repeats one step until it gets real content, honouring waiting pages and refusals.
    async fn step(&mut self, method: &Method, path: &str, body: &Bytes) -> Step {
        let mut target = path.to_string();
        loop {
            if !self.ctx.may_send() || Instant::now() >= self.end || !self.ctx.take_request() {
                return Step::GaveUp;
            }
            let out = self.request(method, &target, body).await;
            let pause = match out {
                Ok(r) => {
                    let page = classify_page(
                        r.content_type.as_deref(),
                        r.body.as_deref().unwrap_or(&[]),
                        r.retry_after.as_deref(),
                    );
                    match page {
                        PageKind::Waiting { after, url } => {
                            if self.admitted && !self.thrown_out {
                                self.thrown_out = true;
                                self.ctx.rec().shoppers.thrown_out += 1;
                            }
                            self.ctx.rec().shoppers.polls += 1;
                            if let Some(u) = url.filter(|u| u.starts_with('/')) {
                                target = format!("{}{u}", self.ctx.base_path);
                            }
                            after.unwrap_or(self.spec.poll_interval)
                        }
                        PageKind::Content if (200..300).contains(&r.status) => return Step::Done,
                        PageKind::Content if is_refusal(r.status) => r
                            .retry_after
                            .as_deref()
                            .and_then(|v| v.trim().parse::<f64>().ok())
                            .map(secs)
                            .unwrap_or(self.spec.poll_interval),
                        PageKind::Content => self.spec.poll_interval,
                    }
                }
                Err(_) => self.spec.poll_interval,
            };
            let wake = Instant::now() + pause.min(self.spec.max_poll_interval);
            if wake >= self.end {
                return Step::GaveUp;
            }
            sleep_until(wake).await;
        }
    }
}

/// One shopper's visit, from arrival to purchase or giving up.
pub(crate) async fn visit(ctx: &Ctx, arrived: Instant, entry: usize, seed: u64) {
    let EntryKind::Shopper(spec) = &ctx.mix.entries()[entry].kind else {
        return;
    };
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut v = Visit {
        ctx,
        spec,
        entry,
        jar: CookieJar::default(),
        end: (arrived + spec.max_session).min(ctx.hard_stop),
        admitted: false,
        thrown_out: false,
    };
    let render =
        |t: &PathTemplate, rng: &mut SmallRng| format!("{}{}", ctx.base_path, t.render(rng));
    let empty = Bytes::new();

    let landing = render(&spec.entry, &mut rng);
    if let Step::GaveUp = v.step(&Method::GET, &landing, &empty).await {
        ctx.rec().shoppers.gave_up += 1;
        return;
    }
    v.admitted = true;
    {
        let mut rec = ctx.rec();
        rec.shoppers.admitted += 1;
        rec.shoppers.wait.saturating_record(us(arrived.elapsed()));
    }
    for page in &spec.browse {
        let wake = (Instant::now() + spec.think_time).min(v.end);
        sleep_until(wake).await;
        let path = render(page, &mut rng);
        if let Step::GaveUp = v.step(&Method::GET, &path, &empty).await {
            ctx.rec().shoppers.gave_up += 1;
            return;
        }
    }
    if let Some(checkout) = &spec.checkout {
        sleep_until((Instant::now() + spec.think_time).min(v.end)).await;
        let path = render(checkout, &mut rng);
        match v.step(&Method::POST, &path, &spec.body).await {
            Step::Done => {
                let mut rec = ctx.rec();
                rec.shoppers.purchased += 1;
                rec.shoppers
                    .session
                    .saturating_record(us(arrived.elapsed()));
            }
            Step::GaveUp => ctx.rec().shoppers.gave_up += 1,
        }
    }
}

fn us(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_html_refresh_page_is_a_waiting_page() {
        let html =
            br#"<html><head><meta content="5; url=/queue?t=1" http-equiv="Refresh"></head></html>"#;
        assert_eq!(
            classify_page(Some("text/html"), html, None),
            PageKind::Waiting {
                after: Some(Duration::from_secs(5)),
                url: Some("/queue?t=1".into())
            }
        );
        let plain = br#"<meta http-equiv="refresh" content="3">"#;
        assert_eq!(
            classify_page(Some("text/html; charset=utf-8"), plain, None),
            PageKind::Waiting {
                after: Some(Duration::from_secs(3)),
                url: None
            }
        );
    }

    #[test]
    fn a_json_waiting_answer_is_a_waiting_page_and_other_json_is_content() {
        let j = br#"{"status":"waiting","position":12,"retry_after":2}"#;
        assert_eq!(
            classify_page(Some("application/json"), j, None),
            PageKind::Waiting {
                after: Some(Duration::from_secs(2)),
                url: None
            }
        );
        let j2 = br#"{"status":"waiting"}"#;
        assert_eq!(
            classify_page(None, j2, Some("4")),
            PageKind::Waiting {
                after: Some(Duration::from_secs(4)),
                url: None
            }
        );
        assert_eq!(
            classify_page(Some("application/json"), br#"{"status":"ok"}"#, None),
            PageKind::Content
        );
        assert_eq!(
            classify_page(Some("text/html"), b"<h1>Product</h1>", None),
            PageKind::Content
        );
    }
}
