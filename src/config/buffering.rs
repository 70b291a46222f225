//! `[server]` keys for request buffering and client deadlines
//! (docs/hardening-buffering.md): what a slow or broken client may cost the gateway,
//! and never the origin.

use std::time::Duration;

use super::{positive_duration, raw, units, Problems};

/// Head plus body within this, or 408. nginx gives 60 s to the head and 60 s between
/// two body reads, which lets a dripping client live for ever; a total deadline does
/// not. A shop's form post or JSON body (well under 1 MiB) arrives in under a second
/// even on a poor mobile link, so 30 s only ever cuts off clients that drip on purpose.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Request bodies read into memory before an admission slot is taken. nginx keeps
/// 8–16 KiB in memory and spills the rest to disk; a shop's sale path takes form posts
/// and JSON, never uploads, so 1 MiB in memory covers every real body, and a larger
/// one is refused with 413 rather than spilled (routes that take uploads turn
/// `request_buffering` off).
pub const DEFAULT_REQUEST_BUFFER: u64 = 1024 * 1024;
/// A client that takes no response data for this long is cut off (nginx's
/// `send_timeout`, 60 s). Half nginx's: past the response buffer the origin's slot is
/// held while the client stalls, and on event day a slot is worth more than one
/// client's patience; a phone in a tunnel comes back within it.
pub const DEFAULT_SEND_TIMEOUT: Duration = Duration::from_secs(30);
/// Response bytes read from the origin ahead of the client, per request. Shop pages are
/// tens of KiB, so almost every answer fits and its slot is released at origin speed
/// whatever the client does; 256 KiB × a few hundred stalled clients stays in the tens
/// of MiB. Larger answers stream, the stall bounded by `send_timeout`.
pub const DEFAULT_RESPONSE_BUFFER: u64 = 256 * 1024;
/// The largest buffer accepted: the response buffer is counted in `u32` permits, and
/// a gigabyte per request in memory is a typo, not a setting.
const MAX_BUFFER: u64 = 1024 * 1024 * 1024;

/// Buffering and client deadlines, compiled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Buffering {
    /// From the first byte of the request head to the end of its body.
    pub request_timeout: Duration,
    /// Request body bytes held in memory on a buffering route; more gets 413.
    pub request_buffer: usize,
    /// Longest a client may take no response data while some is waiting for it.
    pub send_timeout: Duration,
    /// Response bytes read from the origin ahead of the client, per request.
    pub response_buffer: usize,
}

impl Default for Buffering {
    fn default() -> Self {
        Buffering {
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            request_buffer: DEFAULT_REQUEST_BUFFER as usize,
            send_timeout: DEFAULT_SEND_TIMEOUT,
            response_buffer: DEFAULT_RESPONSE_BUFFER as usize,
        }
    }
}

fn buffer_size(s: &str) -> Result<u64, String> {
    let n = units::size(s)?;
    if !(1024..=MAX_BUFFER).contains(&n) {
        return Err(format!("{s:?} must be between 1KiB and 1GiB"));
    }
    Ok(n)
}

/// Reads the buffering keys of `[server]`.
pub(super) fn compile(s: &raw::RawServer, p: &mut Problems) -> Buffering {
    Buffering {
        request_timeout: p.parse(
            "server.request_timeout",
            s.request_timeout.as_deref(),
            DEFAULT_REQUEST_TIMEOUT,
            positive_duration,
        ),
        request_buffer: p.parse(
            "server.request_buffer",
            s.request_buffer.as_deref(),
            DEFAULT_REQUEST_BUFFER,
            buffer_size,
        ) as usize,
        send_timeout: p.parse(
            "server.send_timeout",
            s.send_timeout.as_deref(),
            DEFAULT_SEND_TIMEOUT,
            positive_duration,
        ),
        response_buffer: p.parse(
            "server.response_buffer",
            s.response_buffer.as_deref(),
            DEFAULT_RESPONSE_BUFFER,
            buffer_size,
        ) as usize,
    }
}

#[cfg(test)]
mod tests {
    use crate::config::parse;

    #[test]
    fn the_buffering_keys_have_their_defaults_and_name_themselves_when_wrong() {
        let c = parse("[[upstream]]\nname = \"u\"\nservers = [\"127.0.0.1:1\"]\n[[route]]\nname = \"r\"\nupstream = \"u\"\n").unwrap();
        assert_eq!(c.server.buffering, super::Buffering::default());
        assert!(c.routes[0].request_buffering);
        let errs = parse("[server]\nrequest_timeout = \"0s\"\nrequest_buffer = \"12\"\nresponse_buffer = \"2GiB\"\nsend_timeout = \"x\"\n").unwrap_err();
        let keys: Vec<&str> = errs.iter().map(|e| e.key.as_str()).collect();
        for k in [
            "server.request_timeout",
            "server.request_buffer",
            "server.response_buffer",
            "server.send_timeout",
        ] {
            assert!(keys.contains(&k), "missing {k} in {errs:?}");
        }
    }
}
