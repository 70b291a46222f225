//! Signed tickets and passes: all a visitor's state lives in their cookies.
//!
//! A token is ten `.`-separated fields:
//!
//! ```text
//! v2 . kind . room . ticket . issued_ms . expires_ms . extra . id . key_id . signature
//! ```
//!
//! `kind` is `t` (ticket: a place in line) or `p` (pass: admitted). `extra` is the wait
//! predicted at issue in seconds for a ticket (to measure the estimate's error when it
//! is admitted) and the ticket number's issue time for a pass. `id` is the admission
//! front when a ticket was issued (people ahead at arrival), and a pass's random id
//! (what the room counts, renews and revokes). The signature is
//! HMAC-SHA256 over everything before it, base64url without padding, checked in
//! constant time ([`Mac::verify_slice`]). Room names are restricted to
//! `[A-Za-z0-9_-]` at config time, so no field can contain a separator.

use std::sync::{Arc, OnceLock};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

type HmacSha256 = Hmac<Sha256>;

/// The environment variable holding signing keys, comma-separated, first signs.
pub const KEY_ENV: &str = "FLOODGATE_WAITING_ROOM_KEY";
/// Shorter keys are refused: HMAC-SHA256 wants at least 128 bits of secret.
pub const MIN_KEY_BYTES: usize = 16;
/// Tokens longer than this are not even parsed (a cookie flood costs nothing).
const MAX_TOKEN_LEN: usize = 384;

/// Ticket cookie name prefix; the room's name follows (`fg_ticket_sale`), so two rooms
/// on one host keep their own cookies.
pub const TICKET_COOKIE: &str = "fg_ticket";
/// Pass cookie name prefix (`fg_pass_sale`).
pub const PASS_COOKIE: &str = "fg_pass";

/// The cookie names of one room: (ticket, pass).
pub fn cookie_names(room: &str) -> (String, String) {
    (
        format!("{TICKET_COOKIE}_{room}"),
        format!("{PASS_COOKIE}_{room}"),
    )
}

/// Signing keys: the first signs, every one verifies (rotation).
pub struct Keys {
    keys: Vec<(String, Vec<u8>)>,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print a secret; the ids are enough to tell keys apart.
        let ids: Vec<&str> = self.keys.iter().map(|(id, _)| id.as_str()).collect();
        f.debug_struct("Keys").field("ids", &ids).finish()
    }
}

impl Keys {
    /// Keys from secrets, first signs.
    pub fn new(secrets: Vec<Vec<u8>>) -> Result<Arc<Keys>, String> {
        if secrets.is_empty() {
            return Err("no key".into());
        }
        let mut keys = Vec::new();
        for s in secrets {
            if s.len() < MIN_KEY_BYTES {
                return Err(format!(
                    "a key is {} bytes; at least {MIN_KEY_BYTES} are needed",
                    s.len()
                ));
            }
            let id = Sha256::digest(&s)[..4]
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            keys.push((id, s));
        }
        Ok(Arc::new(Keys { keys }))
    }

    /// A 64-bit secret derived from the signing key for `label`: the same on every
    /// instance that shares the key, unguessable without it.
    pub fn derive_u64(&self, label: &[u8]) -> u64 {
        let mut mac =
            HmacSha256::new_from_slice(&self.keys[0].1).expect("HMAC takes any key length");
        mac.update(label);
        let out = mac.finalize().into_bytes();
        u64::from_le_bytes(out[..8].try_into().expect("32 bytes"))
    }

    /// Keys from the key file if given, else the environment, else the process key.
    pub fn load(key_file: Option<&str>) -> Result<Arc<Keys>, String> {
        if let Some(path) = key_file {
            let text =
                std::fs::read_to_string(path).map_err(|e| format!("{path:?}: cannot read: {e}"))?;
            let secrets: Vec<Vec<u8>> = text
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(|l| l.as_bytes().to_vec())
                .collect();
            return Keys::new(secrets).map_err(|m| format!("{path:?}: {m}"));
        }
        match std::env::var(KEY_ENV) {
            Ok(v) if !v.trim().is_empty() => Keys::new(
                v.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(|s| s.as_bytes().to_vec())
                    .collect(),
            ),
            _ => Ok(Keys::process_default()),
        }
    }

    /// One random key per process, shared by every room and kept across reloads.
    pub fn process_default() -> Arc<Keys> {
        static KEY: OnceLock<Arc<Keys>> = OnceLock::new();
        KEY.get_or_init(|| {
            tracing::warn!(
                "no {KEY_ENV} and no key_file: waiting-room tickets are signed with a random \
                 key and will not survive a restart (nor work across several instances)"
            );
            let secret: [u8; 32] = rand::random();
            Keys::new(vec![secret.to_vec()]).expect("32 random bytes are a valid key")
        })
        .clone()
    }

    /// The signing key's id and secret (also signs proof-of-work challenges).
    pub(crate) fn signer(&self) -> &(String, Vec<u8>) {
        &self.keys[0]
    }

    /// The secret of key `id`, to verify (tokens and proof-of-work challenges).
    pub(crate) fn by_id(&self, id: &str) -> Option<&[u8]> {
        self.keys
            .iter()
            .find(|(k, _)| k == id)
            .map(|(_, s)| s.as_slice())
    }
}

/// What a token is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A numbered place in line.
    Ticket,
    /// Admission: go straight through until it expires.
    Pass,
}

impl Kind {
    fn tag(self) -> &'static str {
        match self {
            Kind::Ticket => "t",
            Kind::Pass => "p",
        }
    }
}

/// A token's fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    /// Ticket or pass.
    pub kind: Kind,
    /// The room it belongs to.
    pub room: String,
    /// The ticket number (a pass keeps the number it was admitted with; 0 when the
    /// visitor never queued).
    pub ticket: u64,
    /// When it was issued, unix ms.
    pub issued_ms: u64,
    /// When it stops being valid, unix ms.
    pub expires_ms: u64,
    /// Ticket: predicted wait at issue, seconds. Pass: when its ticket was issued.
    pub extra: u64,
    /// Ticket: the admission front at issue. Pass: its id.
    pub id: u64,
}

impl Token {
    fn payload(&self, key_id: &str) -> String {
        format!(
            "v2.{}.{}.{}.{}.{}.{}.{}.{}",
            self.kind.tag(),
            self.room,
            self.ticket,
            self.issued_ms,
            self.expires_ms,
            self.extra,
            self.id,
            key_id
        )
    }

    /// The signed cookie value.
    pub fn sign(&self, keys: &Keys) -> String {
        let (id, secret) = keys.signer();
        let payload = self.payload(id);
        let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC takes any key length");
        mac.update(payload.as_bytes());
        let sig = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        format!("{payload}.{sig}")
    }

    /// Parses and verifies a cookie value. `None` for anything forged, altered,
    /// expired, of another room or kind, or signed with an unknown key.
    pub fn verify(value: &str, keys: &Keys, room: &str, kind: Kind, now_ms: u64) -> Option<Token> {
        if value.len() > MAX_TOKEN_LEN {
            return None;
        }
        let (payload, sig) = value.rsplit_once('.')?;
        let fields: Vec<&str> = payload.split('.').collect();
        if fields.len() != 9 || fields[0] != "v2" {
            return None;
        }
        let secret = keys.by_id(fields[8])?;
        let sig = URL_SAFE_NO_PAD.decode(sig).ok()?;
        let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC takes any key length");
        mac.update(payload.as_bytes());
        mac.verify_slice(&sig).ok()?;
        // Signed by us: the fields are ours, but still check what they say.
        if fields[1] != kind.tag() || fields[2] != room {
            return None;
        }
        let t = Token {
            kind,
            room: room.to_string(),
            ticket: fields[3].parse().ok()?,
            issued_ms: fields[4].parse().ok()?,
            expires_ms: fields[5].parse().ok()?,
            extra: fields[6].parse().ok()?,
            id: fields[7].parse().ok()?,
        };
        (t.expires_ms > now_ms).then_some(t)
    }
}

/// The value of cookie `name` in a request's `Cookie` headers, if any.
pub fn cookie<'a>(headers: &'a http::HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim_matches('"'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> Arc<Keys> {
        Keys::new(vec![b"0123456789abcdef0123".to_vec()]).unwrap()
    }

    fn ticket() -> Token {
        Token {
            kind: Kind::Ticket,
            room: "sale".into(),
            ticket: 42,
            issued_ms: 1000,
            expires_ms: 10_000,
            extra: 7,
            id: 3,
        }
    }

    #[test]
    fn a_signed_token_verifies_and_round_trips() {
        let k = keys();
        let v = ticket().sign(&k);
        assert_eq!(
            Token::verify(&v, &k, "sale", Kind::Ticket, 5000),
            Some(ticket())
        );
    }

    #[test]
    fn altered_expired_other_room_other_kind_and_unknown_key_tokens_are_no_tokens() {
        let k = keys();
        let v = ticket().sign(&k);
        let altered = v.replacen(".42.", ".1.", 1);
        assert_eq!(
            Token::verify(&altered, &k, "sale", Kind::Ticket, 5000),
            None
        );
        assert_eq!(Token::verify(&v, &k, "sale", Kind::Ticket, 10_000), None);
        assert_eq!(Token::verify(&v, &k, "other", Kind::Ticket, 5000), None);
        assert_eq!(Token::verify(&v, &k, "sale", Kind::Pass, 5000), None);
        let other = Keys::new(vec![b"another key of 16+ bytes".to_vec()]).unwrap();
        assert_eq!(Token::verify(&v, &other, "sale", Kind::Ticket, 5000), None);
        let mut bad_sig = v.clone();
        bad_sig.pop();
        bad_sig.push('A');
        assert_eq!(
            Token::verify(&bad_sig, &k, "sale", Kind::Ticket, 5000),
            None
        );
    }

    #[test]
    fn rotated_keys_still_verify_tokens_signed_with_the_old_one() {
        let old = keys();
        let v = ticket().sign(&old);
        let rotated = Keys::new(vec![
            b"the new signing key 1234".to_vec(),
            b"0123456789abcdef0123".to_vec(),
        ])
        .unwrap();
        assert!(Token::verify(&v, &rotated, "sale", Kind::Ticket, 5000).is_some());
        assert!(ticket().sign(&rotated).contains(&rotated.keys[0].0));
    }

    #[test]
    fn cookies_are_found_among_several_headers() {
        let mut h = http::HeaderMap::new();
        h.append(http::header::COOKIE, "a=1; fg_ticket=xyz".parse().unwrap());
        h.append(http::header::COOKIE, "fg_pass=p".parse().unwrap());
        assert_eq!(cookie(&h, TICKET_COOKIE), Some("xyz"));
        assert_eq!(cookie(&h, PASS_COOKIE), Some("p"));
        assert_eq!(cookie(&h, "none"), None);
    }
}
