//! Optional proof of work before a ticket, hashcash-style (as Friendly Captcha and
//! Queue-it's "proof-of-work challenge" do): a new arrival's page must find a nonce
//! such that `SHA-256(challenge "." nonce)` starts with `difficulty` zero bits. The
//! page's script does it with Web Crypto in about a second on a phone; the gateway
//! checks it with one HMAC and one SHA-256, a few microseconds.
//!
//! A challenge is stateless and expiring, signed with the room's keys:
//!
//! ```text
//! w1 . room . issued_ms . expires_ms . difficulty . random . key_id . signature
//! ```
//!
//! (`w1`, never `v1`: a challenge can never pass for a ticket or a pass.) The answer is
//! `challenge "." nonce`, sent in the cookie `fg_pow_ROOM` (what the page writes) or in
//! the header `X-Floodgate-Pow` (API clients). It is single-use: its random part is
//! remembered in a fixed table ([`REPLAY_SLOTS`]) until it expires.
//!
//! **Visitors without JavaScript** (and browsers without Web Crypto, i.e. plain HTTP
//! off localhost): the challenge page also sets the bare challenge as that cookie and
//! refreshes itself after `no_script_delay` (default [`DEFAULT_NO_SCRIPT_DELAY`]); a
//! bare challenge at least that old is taken instead of a solution, once. They get a
//! place in line, that much later than a visitor whose browser solved it. The cost
//! of that path is time, not CPU: with `no_script_delay = "off"` there is no such
//! path and the page explains that JavaScript is needed.

use std::sync::Mutex;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use http::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE, RETRY_AFTER, SET_COOKIE, VARY};
use http::{HeaderMap, HeaderName, Response};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::page::{self, ChallengeView, Facts, PageState};
use super::token::Keys;
use super::RoomConfig;
use crate::body::{self, Body};
use crate::config::{units, KeyError};

type HmacSha256 = Hmac<Sha256>;

/// Request header carrying a solution (`challenge.nonce`), for clients without cookies.
pub const POW_HEADER: HeaderName = HeaderName::from_static("x-floodgate-pow");
/// 2^15 SHA-256 on average: about a second with Web Crypto on a phone. Headless
/// Chromium on a shared 2-core box ran the page's batched digests at ~50 k/s (16 bits
/// in 1.3 s, tests/waiting_room_browser.rs); phones run a few times slower. A script
/// pays 32 k hashes of real CPU for every ticket it wants.
pub const DEFAULT_DIFFICULTY: u8 = 15;
/// Above this a phone needs minutes (2^24 is already ~3 minutes at 100 k/s).
pub const MAX_DIFFICULTY: u8 = 24;
/// Visitors without JavaScript get their place this much later than a solver: long
/// enough that waiting is a worse deal for a script than solving, short beside a
/// sale's line.
pub const DEFAULT_NO_SCRIPT_DELAY: Duration = Duration::from_secs(30);
/// A challenge is good for this long after it may be used: time to solve on a slow
/// phone, not long enough to stockpile solutions for the opening.
pub const CHALLENGE_TTL: Duration = Duration::from_secs(120);
/// Remembered used challenges per room: 64 Ki × 8 bytes = 512 KiB, fixed. A solution
/// is single-use while fewer than about this many are redeemed per challenge
/// lifetime (some 500 tickets a second); past that the table evicts the entries
/// closest to expiry, which could then be used once more.
pub const REPLAY_SLOTS: usize = 64 * 1024;
/// Random bytes in a challenge: enough that two never meet, and a 64-bit replay key.
const RANDOM_BYTES: usize = 12;
/// Longer answers are not even parsed.
const MAX_ANSWER_LEN: usize = 200;

/// `proof_of_work = { … }` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawProofOfWork {
    /// Leading zero bits asked (1–24).
    pub difficulty: Option<i64>,
    /// `"30s"`, or `"off"`: no ticket without a solution.
    pub no_script_delay: Option<String>,
}

/// A room's compiled proof-of-work step, with its table of used challenges.
pub struct ProofOfWork {
    /// Leading zero bits asked.
    pub difficulty: u8,
    /// A bare challenge this old stands for a solution; None: never.
    pub no_script_delay: Option<Duration>,
    used: ReplayTable,
}

impl std::fmt::Debug for ProofOfWork {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProofOfWork")
            .field("difficulty", &self.difficulty)
            .field("no_script_delay", &self.no_script_delay)
            .finish_non_exhaustive()
    }
}

impl ProofOfWork {
    /// A step asking `difficulty` bits, with the no-script path after `no_script_delay`.
    pub fn new(difficulty: u8, no_script_delay: Option<Duration>) -> Self {
        ProofOfWork {
            difficulty,
            no_script_delay,
            used: ReplayTable::new(REPLAY_SLOTS),
        }
    }

    /// Compiles `proof_of_work`; problems go to `errors` under `key`.
    pub fn compile(key: &str, raw: &RawProofOfWork, errors: &mut Vec<KeyError>) -> Self {
        let mut add = |k: &str, message: String| {
            errors.push(KeyError {
                key: format!("{key}.{k}"),
                message,
            })
        };
        let difficulty = match raw.difficulty {
            None => DEFAULT_DIFFICULTY,
            Some(n) if (1..=MAX_DIFFICULTY as i64).contains(&n) => n as u8,
            Some(n) => {
                add(
                    "difficulty",
                    format!("{n}: expected 1 to {MAX_DIFFICULTY} leading zero bits"),
                );
                DEFAULT_DIFFICULTY
            }
        };
        let no_script_delay = match raw.no_script_delay.as_deref().map(str::trim) {
            None => Some(DEFAULT_NO_SCRIPT_DELAY),
            Some("off") => None,
            Some(s) => match units::duration(s) {
                Ok(d) if !d.is_zero() => Some(d),
                Ok(_) => {
                    add(
                        "no_script_delay",
                        format!("{s:?}: zero would skip the work; use \"off\" or a delay"),
                    );
                    Some(DEFAULT_NO_SCRIPT_DELAY)
                }
                Err(m) => {
                    add("no_script_delay", m);
                    Some(DEFAULT_NO_SCRIPT_DELAY)
                }
            },
        };
        ProofOfWork::new(difficulty, no_script_delay)
    }

    /// A fresh signed challenge for `room`, issued at `now_ms`.
    pub fn challenge(&self, keys: &Keys, room: &str, now_ms: u64) -> String {
        let delay = self.no_script_delay.unwrap_or_default().as_millis() as u64;
        let expires = now_ms + delay + CHALLENGE_TTL.as_millis() as u64;
        let random = URL_SAFE_NO_PAD.encode(rand::random::<[u8; RANDOM_BYTES]>());
        let (id, secret) = keys.signer();
        let payload = format!(
            "w1.{room}.{now_ms}.{expires}.{}.{random}.{id}",
            self.difficulty
        );
        let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC takes any key length");
        mac.update(payload.as_bytes());
        let sig = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        format!("{payload}.{sig}")
    }

    /// Checks an answer: `challenge.nonce` (solved) or a bare `challenge` (the
    /// no-script path). Accepted answers are used up.
    pub fn verify(
        &self,
        keys: &Keys,
        room: &str,
        answer: &str,
        now_ms: u64,
    ) -> Result<Accepted, Refused> {
        if answer.len() > MAX_ANSWER_LEN {
            return Err(Refused::Malformed);
        }
        let fields: Vec<&str> = answer.split('.').collect();
        let (challenge, nonce) = match fields.len() {
            8 => (answer, None),
            9 => {
                let (c, n) = answer.rsplit_once('.').ok_or(Refused::Malformed)?;
                (c, Some(n))
            }
            _ => return Err(Refused::Malformed),
        };
        let c = parse_signed(keys, challenge)?;
        if c.room != room {
            return Err(Refused::OtherRoom);
        }
        if now_ms >= c.expires_ms {
            return Err(Refused::Expired);
        }
        let how = match nonce {
            Some(n) => {
                // The difficulty is the one we signed, never the one we ask today: a
                // challenge keeps its price through a reload.
                if n.is_empty() || n.len() > 20 || !n.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(Refused::Malformed);
                }
                if leading_zero_bits(&Sha256::digest(answer.as_bytes())) < c.difficulty as u32 {
                    return Err(Refused::NotSolved);
                }
                Accepted::Solved
            }
            None => {
                let delay = self.no_script_delay.ok_or(Refused::NotSolved)?;
                let ripe = c.issued_ms + delay.as_millis() as u64;
                if now_ms < ripe {
                    return Err(Refused::TooEarly {
                        wait_ms: ripe - now_ms,
                    });
                }
                Accepted::Waited
            }
        };
        if !self.used.take(c.replay_key, now_ms, c.expires_ms) {
            return Err(Refused::Replayed);
        }
        Ok(how)
    }
}

/// How an answer was accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accepted {
    /// The work was done.
    Solved,
    /// No solution, but the no-script delay has passed.
    Waited,
}

/// Why an answer was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// Not a challenge at all.
    #[error("malformed")]
    Malformed,
    /// Altered, or signed with a key we do not have.
    #[error("bad signature")]
    BadSignature,
    /// Another room's challenge.
    #[error("other room")]
    OtherRoom,
    /// Too old.
    #[error("expired")]
    Expired,
    /// The nonce does not give enough zero bits (or no nonce and no no-script path).
    #[error("not solved")]
    NotSolved,
    /// A bare challenge, younger than the no-script delay.
    #[error("too early")]
    TooEarly {
        /// Until it ripens.
        wait_ms: u64,
    },
    /// Already used.
    #[error("replayed")]
    Replayed,
}

impl Refused {
    /// Metric and log spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Refused::Malformed => "malformed",
            Refused::BadSignature => "bad_signature",
            Refused::OtherRoom => "other_room",
            Refused::Expired => "expired",
            Refused::NotSolved => "not_solved",
            Refused::TooEarly { .. } => "too_early",
            Refused::Replayed => "replayed",
        }
    }
}

struct Challenge<'a> {
    room: &'a str,
    issued_ms: u64,
    expires_ms: u64,
    difficulty: u8,
    replay_key: u64,
}

fn parse_signed<'a>(keys: &Keys, challenge: &'a str) -> Result<Challenge<'a>, Refused> {
    let (payload, sig) = challenge.rsplit_once('.').ok_or(Refused::Malformed)?;
    let f: Vec<&str> = payload.split('.').collect();
    if f.len() != 7 || f[0] != "w1" {
        return Err(Refused::Malformed);
    }
    let secret = keys.by_id(f[6]).ok_or(Refused::BadSignature)?;
    let sig = URL_SAFE_NO_PAD
        .decode(sig)
        .map_err(|_| Refused::BadSignature)?;
    let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(payload.as_bytes());
    mac.verify_slice(&sig).map_err(|_| Refused::BadSignature)?;
    // Signed by us: the fields are ours.
    let random = URL_SAFE_NO_PAD
        .decode(f[5])
        .map_err(|_| Refused::Malformed)?;
    let mut key = [0u8; 8];
    key.copy_from_slice(random.get(..8).ok_or(Refused::Malformed)?);
    Ok(Challenge {
        room: f[1],
        issued_ms: f[2].parse().map_err(|_| Refused::Malformed)?,
        expires_ms: f[3].parse().map_err(|_| Refused::Malformed)?,
        difficulty: f[4].parse().map_err(|_| Refused::Malformed)?,
        replay_key: u64::from_le_bytes(key),
    })
}

/// Leading zero bits of a digest.
pub fn leading_zero_bits(digest: &[u8]) -> u32 {
    let mut n = 0;
    for b in digest {
        if *b == 0 {
            n += 8;
        } else {
            return n + b.leading_zeros();
        }
    }
    n
}

/// Finds a nonce for `challenge` (what the page's script does; for tests, examples
/// and the load generator's honest visitors).
pub fn solve(challenge: &str) -> Option<String> {
    let difficulty: u32 = challenge.split('.').nth(4)?.parse().ok()?;
    (0u64..).find_map(|n| {
        let answer = format!("{challenge}.{n}");
        (leading_zero_bits(&Sha256::digest(answer.as_bytes())) >= difficulty).then_some(answer)
    })
}

/// Slots per bucket of the replay table: a bucket is full only when sixteen live
/// challenges share it. With 8 ways, 20 k live challenges (a third of the table) let
/// 18 of 20 k replays through (`examples/waiting_room_pow.rs`); with 16, a bucket
/// overflows about once in 10^5 at that load.
const WAYS: usize = 16;

/// Used challenges: fixed buckets of [`WAYS`] slots, each `fingerprint << 32 |
/// expiry_s`. A new entry takes an empty or expired slot; only when all of them are
/// live does it evict the one expiring first (that one could then be used once more:
/// bounded, see [`REPLAY_SLOTS`]).
struct ReplayTable {
    buckets: Vec<Mutex<[u64; WAYS]>>,
}

impl ReplayTable {
    fn new(slots: usize) -> Self {
        ReplayTable {
            buckets: (0..slots / WAYS).map(|_| Mutex::new([0; WAYS])).collect(),
        }
    }

    /// True the first time `key` is seen before `expires_ms`; false for a replay.
    fn take(&self, key: u64, now_ms: u64, expires_ms: u64) -> bool {
        // The key is uniformly random: high bits pick the bucket, low bits (never
        // zero, which marks a free slot) are the fingerprint.
        let bucket = &self.buckets[((key >> 32) as usize) % self.buckets.len()];
        let fp = (key as u32).max(1) as u64;
        let now_s = (now_ms / 1000) as u32 as u64;
        let entry = fp << 32 | (expires_ms.div_ceil(1000) as u32 as u64);
        let mut slots = bucket.lock().unwrap_or_else(|e| e.into_inner());
        if slots
            .iter()
            .any(|s| s >> 32 == fp && (s & 0xFFFF_FFFF) > now_s)
        {
            return false;
        }
        let free = slots
            .iter()
            .position(|s| (s & 0xFFFF_FFFF) <= now_s)
            .unwrap_or_else(|| {
                (0..WAYS)
                    .min_by_key(|i| slots[*i] & 0xFFFF_FFFF)
                    .expect("WAYS > 0")
            });
        slots[free] = entry;
        true
    }
}

/// The proof-of-work step in front of ticket issue: `None` to go on and issue a
/// ticket, or the answer that asks for work (or says to wait a little longer).
pub(crate) fn gate(
    pow: &ProofOfWork,
    cfg: &RoomConfig,
    headers: &HeaderMap,
    lang: page::Lang,
    json: bool,
    now_ms: u64,
    secure: bool,
) -> Option<Response<Body>> {
    let cookie_name = cookie_name(&cfg.name);
    let answer = headers
        .get(POW_HEADER)
        .and_then(|v| v.to_str().ok())
        .or_else(|| super::token::cookie(headers, &cookie_name));
    let mut wait_left = None;
    let mut challenge = None;
    if let Some(a) = answer {
        match pow.verify(&cfg.keys, &cfg.name, a.trim(), now_ms) {
            Ok(how) => {
                tracing::debug!(room = %cfg.name, how = ?how, "proof of work accepted");
                return None;
            }
            Err(Refused::TooEarly { wait_ms }) => {
                // Keep the same challenge: the page may still solve it meanwhile.
                wait_left = Some(wait_ms.div_ceil(1000));
                challenge = Some(a.trim().to_string());
            }
            Err(why) => {
                tracing::debug!(room = %cfg.name, why = why.as_str(), "proof of work refused");
            }
        }
    }
    let fresh = challenge.is_none();
    let challenge = challenge.unwrap_or_else(|| pow.challenge(&cfg.keys, &cfg.name, now_ms));
    let no_script_after = match wait_left {
        Some(s) => Some(s),
        None => pow.no_script_delay.map(|d| d.as_secs().max(1)),
    };
    let view = ChallengeView {
        challenge: challenge.clone(),
        difficulty: pow.difficulty,
        cookie: cookie_name.clone(),
        no_script_after,
    };
    let facts = Facts {
        room: cfg.name.clone(),
        state: PageState::Challenge,
        ticket: None,
        position: None,
        people_ahead: None,
        ahead_at_arrival: None,
        wait: None,
        updated_ms: now_ms,
        poll_after: no_script_after.unwrap_or(60),
        opens_at_ms: cfg.opens_at,
    };
    let (content_type, text) = if json {
        (
            "application/json",
            page::challenge_json(lang, &facts, &view),
        )
    } else {
        (
            "text/html; charset=utf-8",
            page::challenge_html(&cfg.template, lang, &facts, &view),
        )
    };
    let mut resp = Response::new(body::full(text));
    *resp.status_mut() = cfg.waiting_status;
    let h = resp.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        VARY,
        HeaderValue::from_static("Accept, Accept-Language, Cookie"),
    );
    if let Some(s) = no_script_after {
        h.insert(RETRY_AFTER, HeaderValue::from(s.max(1)));
    }
    if fresh && pow.no_script_delay.is_some() {
        // The no-script claim: the bare challenge, brought back by the meta refresh.
        // Not HttpOnly: the page's script overwrites it with its solution.
        let max_age = CHALLENGE_TTL.as_secs() + no_script_after.unwrap_or(0);
        let c = format!(
            "{cookie_name}={challenge}; Path=/; Max-Age={max_age}; SameSite=Lax{}",
            if secure { "; Secure" } else { "" }
        );
        if let Ok(v) = HeaderValue::from_str(&c) {
            h.append(SET_COOKIE, v);
        }
    }
    Some(resp)
}

/// The cookie carrying a room's answer: one per room, so two rooms on one host do not
/// overwrite each other's.
pub fn cookie_name(room: &str) -> String {
    format!("fg_pow_{room}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn keys() -> Arc<Keys> {
        Keys::new(vec![b"0123456789abcdef0123".to_vec()]).unwrap()
    }

    const T0: u64 = 1_800_000_000_000;

    #[test]
    fn a_solved_challenge_is_accepted_once() {
        let (k, pow) = (keys(), ProofOfWork::new(8, None));
        let answer = solve(&pow.challenge(&k, "sale", T0)).unwrap();
        assert_eq!(
            pow.verify(&k, "sale", &answer, T0 + 500),
            Ok(Accepted::Solved)
        );
        assert_eq!(
            pow.verify(&k, "sale", &answer, T0 + 600),
            Err(Refused::Replayed)
        );
    }

    #[test]
    fn thousands_of_used_challenges_are_all_remembered_until_they_expire() {
        let table = ReplayTable::new(REPLAY_SLOTS);
        let keys: Vec<u64> = (0..REPLAY_SLOTS / 8).map(|_| rand::random()).collect();
        let exp = T0 + 120_000;
        assert!(keys.iter().all(|k| table.take(*k, T0, exp)));
        assert!(keys.iter().all(|k| !table.take(*k, T0 + 1000, exp)));
        // Expired entries make room; an expired challenge is refused before this.
        assert!(keys
            .iter()
            .all(|k| table.take(*k, exp + 1000, exp + 120_000)));
    }

    #[test]
    fn a_wrong_nonce_is_refused() {
        let (k, pow) = (keys(), ProofOfWork::new(12, None));
        let c = pow.challenge(&k, "sale", T0);
        let good = solve(&c).unwrap();
        let good_n: u64 = good.rsplit_once('.').unwrap().1.parse().unwrap();
        // Some nonce below the first solution: by construction not a solution.
        let wrong = format!("{c}.{}", good_n.saturating_sub(1));
        if good_n > 0 {
            assert_eq!(pow.verify(&k, "sale", &wrong, T0), Err(Refused::NotSolved));
        }
        assert_eq!(
            pow.verify(&k, "sale", &format!("{c}.x1"), T0),
            Err(Refused::Malformed)
        );
        // A refused answer does not use the challenge up.
        assert_eq!(pow.verify(&k, "sale", &good, T0), Ok(Accepted::Solved));
    }

    #[test]
    fn an_expired_challenge_is_refused_even_when_solved() {
        let (k, pow) = (keys(), ProofOfWork::new(8, None));
        let answer = solve(&pow.challenge(&k, "sale", T0)).unwrap();
        let late = T0 + CHALLENGE_TTL.as_millis() as u64;
        assert_eq!(pow.verify(&k, "sale", &answer, late), Err(Refused::Expired));
    }

    #[test]
    fn a_tampered_challenge_is_refused() {
        let (k, pow) = (keys(), ProofOfWork::new(16, None));
        let c = pow.challenge(&k, "sale", T0);
        // Cheaper difficulty, later expiry, another room's name: the signature breaks.
        let cheap = solve(&c.replacen(".16.", ".1.", 1)).unwrap();
        assert_eq!(
            pow.verify(&k, "sale", &cheap, T0),
            Err(Refused::BadSignature)
        );
        let fields: Vec<&str> = c.split('.').collect();
        let later = c.replacen(fields[3], &(T0 + 10_000_000).to_string(), 1);
        assert_eq!(
            pow.verify(&k, "sale", &solve(&later).unwrap(), T0),
            Err(Refused::BadSignature)
        );
        let other = Keys::new(vec![b"another key of 16+ bytes".to_vec()]).unwrap();
        let foreign = solve(&pow.challenge(&other, "sale", T0)).unwrap();
        assert_eq!(
            pow.verify(&k, "sale", &foreign, T0),
            Err(Refused::BadSignature)
        );
        let elsewhere = solve(&pow.challenge(&k, "other", T0)).unwrap();
        assert_eq!(
            pow.verify(&k, "sale", &elsewhere, T0),
            Err(Refused::OtherRoom)
        );
    }

    #[test]
    fn a_bare_challenge_counts_only_after_the_no_script_delay_and_only_once() {
        let k = keys();
        let pow = ProofOfWork::new(20, Some(Duration::from_secs(30)));
        let c = pow.challenge(&k, "sale", T0);
        assert_eq!(
            pow.verify(&k, "sale", &c, T0 + 29_000),
            Err(Refused::TooEarly { wait_ms: 1000 })
        );
        assert_eq!(
            pow.verify(&k, "sale", &c, T0 + 30_000),
            Ok(Accepted::Waited)
        );
        assert_eq!(
            pow.verify(&k, "sale", &c, T0 + 31_000),
            Err(Refused::Replayed)
        );
        let off = ProofOfWork::new(20, None);
        let c = off.challenge(&k, "sale", T0);
        assert_eq!(
            off.verify(&k, "sale", &c, T0 + 60_000),
            Err(Refused::NotSolved)
        );
    }

    #[test]
    fn a_challenge_never_passes_for_a_ticket() {
        use super::super::token::{Kind, Token};
        let (k, pow) = (keys(), ProofOfWork::new(8, Some(Duration::from_secs(1))));
        let c = pow.challenge(&k, "sale", T0);
        assert_eq!(Token::verify(&c, &k, "sale", Kind::Ticket, T0), None);
        assert_eq!(Token::verify(&c, &k, "sale", Kind::Pass, T0), None);
    }

    #[test]
    fn config_errors_name_the_key() {
        let mut errors = Vec::new();
        let raw = RawProofOfWork {
            difficulty: Some(40),
            no_script_delay: Some("0s".into()),
        };
        let _ = ProofOfWork::compile("waiting_room[0].proof_of_work", &raw, &mut errors);
        let keys: Vec<&str> = errors.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "waiting_room[0].proof_of_work.difficulty",
                "waiting_room[0].proof_of_work.no_script_delay"
            ]
        );
        let off = ProofOfWork::compile(
            "k",
            &RawProofOfWork {
                difficulty: None,
                no_script_delay: Some("off".into()),
            },
            &mut errors,
        );
        assert_eq!(
            (off.difficulty, off.no_script_delay),
            (DEFAULT_DIFFICULTY, None)
        );
    }
}
