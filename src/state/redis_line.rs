//! A room's line in Redis: the scripts of `lua/line_*.lua` behind [`SharedLine`].
//!
//! Keys, with `P` the prefix and every key of one room under the hash tag
//! `{room:NAME}` (one Cluster slot, so each script touches one node):
//!
//! | key                    | what                                                     |
//! |------------------------|----------------------------------------------------------|
//! | `P{room:R}:line`       | hash: next, next2, front, tokens, last, pn, sn, base, perm, totals, revgen |
//! | `…:granted`, `…:redeemed` | bitmaps over the last `ADMITTED_WINDOW` places        |
//! | `…:passes`             | sorted set: pass id → expiry (Redis ms)                  |
//! | `…:resv`               | sorted set: admitted, unclaimed place → deadline         |
//! | `…:blocks`             | hash: block → when one of its holders last polled        |
//! | `…:prefixes`           | set: client prefixes holding a pre-queue ticket          |
//! | `…:revoked`, `…:revlog`| revoked ids → until; the last 1000 revocations, by generation |
//! | `…:prered`             | places exchanged on an instance while Redis was away     |

use std::sync::Arc;

use redis::aio::ConnectionManager;
use redis::{ScriptInvocation, Value};

use super::line::{AdvanceParams, Call, Exchange, Issue, LineView, Seed, SharedLine};
use super::redis::RedisState;
use super::{SharedState, StateError};
use crate::waiting_room::state::{
    ADMITTED_WINDOW, BLOCK, MAX_PREQUEUE_PREFIXES, MAX_STEPS_PER_ADVANCE, MAX_TRACKED_PASSES,
    SECONDARY_BASE,
};

/// The keys of one room, built once.
struct Keys {
    line: String,
    granted: String,
    redeemed: String,
    passes: String,
    resv: String,
    blocks: String,
    prefixes: String,
    revoked: String,
    revlog: String,
    prered: String,
}

/// One room's line in Redis.
pub struct RedisLine {
    state: Arc<RedisState>,
    keys: Arc<Keys>,
}

impl RedisLine {
    /// The line of `room`.
    pub(super) fn new(state: Arc<RedisState>, room: &str) -> Self {
        let k = |what: &str| state.key(&format!("{{room:{room}}}:{what}"));
        let keys = Keys {
            line: k("line"),
            granted: k("granted"),
            redeemed: k("redeemed"),
            passes: k("passes"),
            resv: k("resv"),
            blocks: k("blocks"),
            prefixes: k("prefixes"),
            revoked: k("revoked"),
            revlog: k("revlog"),
            prered: k("prered"),
        };
        RedisLine {
            state,
            keys: Arc::new(keys),
        }
    }

    /// Runs `build`'s invocation on Redis within `state.timeout`; a failure marks the
    /// backend down (the room then runs on its mirror until the next heartbeat).
    fn run<T, F>(&self, build: F) -> Call<T>
    where
        T: redis::FromRedisValue + Send + 'static,
        F: for<'a> FnOnce(&'a RedisState, &'a Keys) -> ScriptInvocation<'a> + Send + 'static,
    {
        let state = self.state.clone();
        let keys = self.keys.clone();
        Box::pin(async move {
            let mut conn: ConnectionManager = state.conn()?;
            let invocation = build(&state, &keys);
            let r = state.call(invocation.invoke_async(&mut conn)).await;
            if let Err(e) = &r {
                state.failed(e);
            }
            r
        })
    }
}

/// An invocation of the pass script (`lua/line_pass.lua`) for operation `op`.
fn pass_op<'a>(s: &'a RedisState, k: &'a Keys, op: &str) -> ScriptInvocation<'a> {
    let mut i = s.scripts.line_pass.key(&k.line);
    i.key(&k.passes)
        .key(&k.resv)
        .key(&k.revoked)
        .key(&k.revlog)
        .arg(op);
    i
}

/// How long a merged line admits nobody: two heartbeats (every instance notices
/// Redis is back within one and merges at its next tick) and a little more.
fn hold_ms(s: &RedisState) -> u64 {
    (2 * s.settings.heartbeat_interval.as_millis() as u64) + 100
}

fn hex(key: &[u8; 16]) -> String {
    key.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<[u8; 16]> {
    let mut out = [0u8; 16];
    if s.len() != 32 {
        return None;
    }
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

fn int(v: &Value) -> Result<i64, StateError> {
    match v {
        Value::Int(n) => Ok(*n),
        Value::BulkString(b) => std::str::from_utf8(b)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| StateError::Backend("line script: not a number".into())),
        _ => Err(StateError::Backend(format!(
            "line script: unexpected {v:?}"
        ))),
    }
}

fn text(v: &Value) -> String {
    match v {
        Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
        Value::SimpleString(s) => s.clone(),
        Value::Int(n) => n.to_string(),
        _ => String::new(),
    }
}

/// Reads the advance script's answer (see `lua/line_advance.lua`).
fn view_of(values: &[Value]) -> Result<Option<LineView>, StateError> {
    if values.first().map(int).transpose()? != Some(1) {
        return Ok(None);
    }
    if values.len() < 16 {
        return Err(StateError::Backend("line script: short view".into()));
    }
    let n = |i: usize| int(&values[i]);
    let (pn, sn) = (n(5)?, n(6)?);
    let revocations = values[16..]
        .iter()
        .filter_map(|v| {
            let t = text(v);
            let mut f = t.split(' ');
            let (_gen, id, ms) = (f.next()?, f.next()?, f.next()?);
            Some((id.parse().ok()?, ms.parse().ok()?))
        })
        .collect();
    Ok(Some(LineView {
        now_ms: n(1)? as u64,
        next_ticket: n(2)? as u64,
        next_secondary: n(3)? as u64,
        front: n(4)? as u64,
        prequeue: (pn >= 0).then_some((pn as u64, sn.max(0) as u64)),
        active: n(7)? as u64,
        admitted_total: n(8)? as u64,
        skipped_total: n(9)? as u64,
        issued_total: n(10)? as u64,
        revocation_gen: n(11)? as u64,
        perm_key: unhex(&text(&values[12])),
        epoch: n(15)? as u64,
        revocations,
    }))
}

impl SharedLine for RedisLine {
    fn is_up(&self) -> bool {
        self.state.is_up()
    }

    fn is_decided(&self) -> bool {
        self.state.is_decided()
    }

    fn membership(&self) -> (u32, u32) {
        let n = self.state.live_instances();
        (n, self.state.rank().min(n - 1))
    }

    fn issue(&self, prefix: Option<u64>) -> Call<Issue> {
        let call: Call<Option<Vec<u64>>> = self.run(move |s, k| {
            let mut i = s.scripts.line_issue.key(&k.line);
            i.key(&k.prefixes)
                .key(&k.blocks)
                .arg(prefix.map(|p| p.to_string()).unwrap_or_default())
                .arg(MAX_PREQUEUE_PREFIXES)
                .arg(BLOCK)
                .arg(SECONDARY_BASE);
            i
        });
        Box::pin(async move {
            Ok(match call.await?.as_deref() {
                None => Issue::NoLine,
                Some([ticket, front]) => Issue::Number {
                    ticket: *ticket,
                    front: *front,
                },
                Some(_) => Issue::Held,
            })
        })
    }

    fn claim(
        &self,
        position: u64,
        pass_id: u64,
        session_ms: u64,
        active_users: u64,
    ) -> Call<Exchange> {
        let call: Call<Vec<i64>> = self.run(move |s, k| {
            let mut i = s.scripts.line_claim.key(&k.line);
            i.key(&k.granted)
                .key(&k.redeemed)
                .key(&k.passes)
                .key(&k.resv)
                .arg(position)
                .arg(pass_id.to_string())
                .arg(session_ms)
                .arg(active_users)
                .arg(ADMITTED_WINDOW);
            i
        });
        Box::pin(async move {
            let r = call.await?;
            Ok(match r.first().copied() {
                Some(1) => Exchange::Claimed,
                Some(0) => Exchange::Waiting {
                    ahead: r.get(1).copied().unwrap_or(0).max(0) as u64,
                },
                Some(2) => Exchange::Lost,
                Some(3) => Exchange::Redeemed,
                Some(4) => Exchange::Full,
                _ => Exchange::NoLine,
            })
        })
    }

    fn enter(
        &self,
        pass_id: u64,
        session_ms: u64,
        active_users: u64,
        empty_line: bool,
    ) -> Call<bool> {
        self.run(move |s, k| {
            let mut i = pass_op(s, k, "enter");
            i.arg(pass_id.to_string())
                .arg(session_ms)
                .arg(active_users)
                .arg(if empty_line { "1" } else { "0" })
                .arg(MAX_TRACKED_PASSES);
            i
        })
    }

    fn keep(&self, id: u64, ms: u64) -> Call<bool> {
        self.run(move |s, k| {
            let mut i = pass_op(s, k, "keep");
            i.arg(id.to_string()).arg(ms).arg(MAX_TRACKED_PASSES);
            i
        })
    }

    fn revoke(&self, id: u64, ms: u64) -> Call<u64> {
        self.run(move |s, k| {
            let mut i = pass_op(s, k, "revoke");
            i.arg(id.to_string()).arg(ms);
            i
        })
    }

    fn advance(&self, p: AdvanceParams) -> Call<Option<LineView>> {
        let call: Call<Vec<Value>> = self.run(move |s, k| {
            let mut i = s.scripts.line_advance.key(&k.line);
            i.key(&k.granted)
                .key(&k.redeemed)
                .key(&k.passes)
                .key(&k.resv)
                .key(&k.blocks)
                .key(&k.revlog)
                .key(&k.prered)
                .key(&k.prefixes)
                .key(&k.revoked)
                .arg(p.active_users)
                .arg(p.new_users_per_minute)
                .arg(p.abandon_after_ms)
                .arg(if p.paused { "1" } else { "0" })
                .arg(p.opens_at_ms.map(|o| o.to_string()).unwrap_or_default())
                .arg(MAX_STEPS_PER_ADVANCE)
                .arg(p.revocation_gen)
                .arg(ADMITTED_WINDOW)
                .arg(BLOCK)
                .arg(p.known_next.0)
                .arg(p.known_next.1);
            for b in &p.polled_blocks {
                i.arg(*b);
            }
            i
        });
        Box::pin(async move { view_of(&call.await?) })
    }

    fn merge(&self, seed: Seed) -> Call<bool> {
        let call: Call<i64> = self.run(move |s, k| {
            let mut i = s.scripts.line_merge.key(&k.line);
            let (pn, sn) = seed.prequeue.map_or((-1, 0), |(a, b)| (a as i64, b));
            i.key(&k.granted)
                .key(&k.redeemed)
                .key(&k.passes)
                .key(&k.resv)
                .key(&k.prered)
                .key(&k.revoked)
                .arg(seed.next_ticket)
                .arg(seed.next_secondary)
                .arg(seed.front)
                .arg(pn)
                .arg(sn)
                .arg(hex(&seed.perm_key))
                .arg(seed.admitted_total)
                .arg(seed.skipped_total)
                .arg(seed.issued_total)
                .arg(seed.granted_from)
                .arg(ADMITTED_WINDOW)
                .arg(if seed.is_blank() { 0 } else { hold_ms(s) })
                .arg(seed.claimed.len());
            for p in &seed.claimed {
                i.arg(*p);
            }
            for (id, ms) in &seed.passes {
                i.arg(id.to_string()).arg(*ms);
            }
            i
        });
        Box::pin(async move { Ok(call.await? == 1) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shuffle_key_goes_to_redis_and_back_unchanged() {
        let key: [u8; 16] = *b"0123456789abcdef";
        assert_eq!(unhex(&hex(&key)), Some(key));
        assert_eq!(unhex("zz"), None);
    }
}
