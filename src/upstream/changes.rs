//! What a reload did with an upstream: each changed key, and whether its connection
//! pool, health state and retry budget were carried over (see [`super::Upstream::build`]).

use crate::config::UpstreamConfig;
use crate::reconfigure::{Changes, Outcome};

/// Which of an upstream's states the new generation shares with the old one.
#[derive(Debug, Clone, Copy)]
pub(super) struct Carried {
    /// The pooled client (its open connections to the origin).
    pub pool: bool,
    /// Ejections, breaker and health-check results.
    pub health: bool,
    /// The retry budget spent so far.
    pub retries: bool,
}

/// The changed keys of one upstream, then what became of its state (nothing when no
/// key changed); `added` when there was no `old` one.
pub(super) fn changes(
    old: Option<&UpstreamConfig>,
    new: &UpstreamConfig,
    carried: Option<Carried>,
) -> Changes {
    let mut c = Changes::of("upstream", &new.name);
    let (Some(old), Some(carried)) = (old, carried) else {
        c.say(Outcome::Added);
        return c;
    };
    requests(&mut c, old, new);
    admission(&mut c, old, new);
    if c.is_empty() {
        return c;
    }
    let state = [
        (
            carried.pool,
            "connection pool kept",
            "connection pool rebuilt",
        ),
        (carried.health, "health state kept", "health state reset"),
        (carried.retries, "retry budget kept", "retry budget reset"),
    ];
    for (kept, yes, no) in state {
        c.say(if kept {
            Outcome::Kept(yes)
        } else {
            Outcome::Reset(no)
        });
    }
    c
}

/// Where and how requests are sent.
fn requests(c: &mut Changes, o: &UpstreamConfig, n: &UpstreamConfig) {
    use Outcome::Applied;
    c.compare("servers", &o.servers, &n.servers, Applied);
    c.compare("balance", &o.balance, &n.balance, Applied);
    c.compare(
        "connect_timeout",
        &o.connect_timeout,
        &n.connect_timeout,
        Applied,
    );
    c.compare(
        "response_timeout",
        &o.response_timeout,
        &n.response_timeout,
        Applied,
    );
    c.compare(
        "pool_idle_timeout",
        &o.pool_idle_timeout,
        &n.pool_idle_timeout,
        Applied,
    );
    c.compare(
        "pool_max_idle_per_server",
        &o.pool_max_idle_per_server,
        &n.pool_max_idle_per_server,
        Applied,
    );
    c.compare("health_check", &o.health_check, &n.health_check, Applied);
    c.compare(
        "outlier_detection",
        &o.outlier_detection,
        &n.outlier_detection,
        Applied,
    );
    c.compare(
        "circuit_breaker",
        &o.circuit_breaker,
        &n.circuit_breaker,
        Applied,
    );
    c.compare("retries", &o.retries, &n.retries, Applied);
}

/// The admission queue's keys: applied in place, so requests in flight and waiting
/// keep their places.
fn admission(c: &mut Changes, o: &UpstreamConfig, n: &UpstreamConfig) {
    use Outcome::Applied;
    let (ot, nt) = (&o.admission, &n.admission);
    c.compare(
        "max_concurrency",
        &o.max_concurrency,
        &n.max_concurrency,
        Applied,
    );
    c.compare("queue_size", &o.queue_size, &n.queue_size, Applied);
    c.compare("queue_timeout", &o.queue_timeout, &n.queue_timeout, Applied);
    c.compare(
        "min_concurrency",
        &ot.min_concurrency,
        &nt.min_concurrency,
        Applied,
    );
    c.compare(
        "max_concurrency_limit",
        &ot.max_concurrency_limit,
        &nt.max_concurrency_limit,
        Applied,
    );
    c.compare("codel_target", &ot.codel_target, &nt.codel_target, Applied);
    c.compare(
        "codel_interval",
        &ot.codel_interval,
        &nt.codel_interval,
        Applied,
    );
    c.compare(
        "overload_queue_delay",
        &ot.overload_queue_delay,
        &nt.overload_queue_delay,
        Applied,
    );
}
