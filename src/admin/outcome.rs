//! What a reload does with each changed key of `[server]`, `[log]` and `[state]`:
//! applied at once, applied to new connections, or needing a restart. (`log.level` is
//! applied here: it is the one key whose application is a call rather than the new
//! config being swapped in.) The components' own keys are reported by their builders;
//! see [`crate::reconfigure`].

use crate::config::{Config, ServerConfig};
use crate::reconfigure::{Changes, Outcome};

/// The changed `[server]`, `[log]` and `[state]` keys between two configs.
pub(crate) fn changes(old: &Config, new: &Config) -> Changes {
    let mut c = Changes::new();
    server(&mut c, &old.server, &new.server);
    connections(&mut c, &old.server, &new.server);
    log_and_state(&mut c, old, new);
    c
}

/// The `[server]` keys in force for the next request, or at the next start.
fn server(c: &mut Changes, o: &ServerConfig, n: &ServerConfig) {
    use Outcome::*;
    c.compare("server.listen", &o.listen, &n.listen, Restart);
    c.compare("server.tls_listen", &o.tls_listen, &n.tls_listen, Restart);
    c.compare(
        "server.admin_listen",
        &o.admin_listen,
        &n.admin_listen,
        Restart,
    );
    c.compare(
        "server.admin_token_file",
        &o.admin_token_file,
        &n.admin_token_file,
        Applied,
    );
    c.compare(
        "server.shutdown_grace",
        &o.shutdown_grace,
        &n.shutdown_grace,
        Applied,
    );
    c.compare(
        "server.trusted_proxies",
        &o.trusted_proxies,
        &n.trusted_proxies,
        Applied,
    );
    c.compare(
        "server.max_connections",
        &o.max_connections,
        &n.max_connections,
        Applied,
    );
    c.compare("server.workers", &o.workers, &n.workers, Restart);
    c.compare(
        "server.max_request_body",
        &o.max_request_body,
        &n.max_request_body,
        Applied,
    );
    c.compare("server.via_name", &o.via_name, &n.via_name, Applied);
    // The edge settings hold header lists without PartialEq.
    c.compare_debug("server edge settings", &o.edge, &n.edge, Applied);
}

/// The `[server]` keys a connection reads when it is accepted.
fn connections(c: &mut Changes, o: &ServerConfig, n: &ServerConfig) {
    use Outcome::NewConnections;
    c.compare(
        "server.header_read_timeout",
        &o.header_read_timeout,
        &n.header_read_timeout,
        NewConnections,
    );
    c.compare(
        "server.idle_timeout",
        &o.idle_timeout,
        &n.idle_timeout,
        NewConnections,
    );
    c.compare(
        "server.max_header_size",
        &o.max_header_size,
        &n.max_header_size,
        NewConnections,
    );
    c.compare(
        "server.max_headers",
        &o.max_headers,
        &n.max_headers,
        NewConnections,
    );
    c.compare(
        "server.http2_max_concurrent_streams",
        &o.http2_max_concurrent_streams,
        &n.http2_max_concurrent_streams,
        NewConnections,
    );
    c.compare(
        "server buffering and send_timeout",
        &o.buffering,
        &n.buffering,
        NewConnections,
    );
}

/// `[log]` and `[state]`; a changed `log.level` is set here.
fn log_and_state(c: &mut Changes, old: &Config, new: &Config) {
    let (o, n) = (&old.log, &new.log);
    c.compare(
        "log.access_log",
        &o.access_log,
        &n.access_log,
        Outcome::Applied,
    );
    c.compare(
        "log.format, log.access_log_file",
        &(o.format, &o.access_log_file),
        &(n.format, &n.access_log_file),
        Outcome::Restart,
    );
    c.compare("[state]", &old.state, &new.state, Outcome::Restart);
    if o.level != n.level {
        use crate::logging::LevelChange;
        let outcome = match crate::logging::set_level(&n.level) {
            Ok(LevelChange::Applied | LevelChange::NoSubscriber) => Outcome::Applied,
            Ok(LevelChange::OverriddenByEnv) => Outcome::NotApplied(
                "RUST_LOG is set and overrides it (unset it to follow the config)".into(),
            ),
            Err(e) => Outcome::NotApplied(e.to_string()),
        };
        c.push("log.level", outcome);
    }
}
