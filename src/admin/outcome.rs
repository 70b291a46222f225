//! What a reload does with each changed key of `[server]`, `[log]` and `[state]`:
//! applied at once, applied to new connections, or needing a restart. Every change is
//! named; nothing is silently ignored. (`log.level` is applied here: it is the one
//! key whose application is a call rather than the new config being swapped in.)

use crate::config::Config;

/// What happened to one changed key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// In force for the next request.
    Applied,
    /// In force for connections accepted from now on; open ones keep theirs.
    NewConnections,
    /// Read once at start: restart (or upgrade the binary) to apply.
    Restart,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Outcome::Applied => "applied",
            Outcome::NewConnections => "applied to new connections",
            Outcome::Restart => "restart to apply",
        }
    }
}

/// The changed keys between two configs, each with its outcome, as `key: outcome`.
pub(crate) fn changes(old: &Config, new: &Config) -> Vec<String> {
    use Outcome::*;
    let (o, n) = (&old.server, &new.server);
    // Compared by their Debug form: some settings have no PartialEq, and a reload is
    // no hot path.
    let d = |a: &dyn std::fmt::Debug, b: &dyn std::fmt::Debug| format!("{a:?}") != format!("{b:?}");
    let keys: [(&str, bool, Outcome); 20] = [
        ("server.workers", d(&o.workers, &n.workers), Restart),
        ("server.listen", d(&o.listen, &n.listen), Restart),
        (
            "server.tls_listen",
            d(&o.tls_listen, &n.tls_listen),
            Restart,
        ),
        (
            "server.admin_listen",
            d(&o.admin_listen, &n.admin_listen),
            Restart,
        ),
        (
            "server.admin_token_file",
            d(&o.admin_token_file, &n.admin_token_file),
            Applied,
        ),
        (
            "server.shutdown_grace",
            d(&o.shutdown_grace, &n.shutdown_grace),
            Applied,
        ),
        (
            "server.trusted_proxies",
            d(&o.trusted_proxies, &n.trusted_proxies),
            Applied,
        ),
        (
            "server.max_connections",
            d(&o.max_connections, &n.max_connections),
            Applied,
        ),
        (
            "server.header_read_timeout",
            d(&o.header_read_timeout, &n.header_read_timeout),
            NewConnections,
        ),
        (
            "server.idle_timeout",
            d(&o.idle_timeout, &n.idle_timeout),
            NewConnections,
        ),
        (
            "server.max_header_size",
            d(&o.max_header_size, &n.max_header_size),
            NewConnections,
        ),
        (
            "server.max_headers",
            d(&o.max_headers, &n.max_headers),
            NewConnections,
        ),
        (
            "server.max_request_body",
            d(&o.max_request_body, &n.max_request_body),
            Applied,
        ),
        (
            "server.http2_max_concurrent_streams",
            d(
                &o.http2_max_concurrent_streams,
                &n.http2_max_concurrent_streams,
            ),
            NewConnections,
        ),
        ("server.via_name", d(&o.via_name, &n.via_name), Applied),
        ("server edge settings", d(&o.edge, &n.edge), Applied),
        (
            "server buffering and send_timeout",
            d(&o.buffering, &n.buffering),
            NewConnections,
        ),
        (
            "log.access_log",
            d(&old.log.access_log, &new.log.access_log),
            Applied,
        ),
        (
            "log.format, log.access_log_file",
            d(
                &(old.log.format, &old.log.access_log_file),
                &(new.log.format, &new.log.access_log_file),
            ),
            Restart,
        ),
        ("[state]", old.state != new.state, Restart),
    ];
    let mut said: Vec<String> = keys
        .iter()
        .filter(|(_, changed, _)| *changed)
        .map(|(k, _, outcome)| format!("{k}: {}", outcome.as_str()))
        .collect();
    if old.log.level != new.log.level {
        use crate::logging::LevelChange;
        said.push(match crate::logging::set_level(&new.log.level) {
            Ok(LevelChange::Applied | LevelChange::NoSubscriber) => "log.level: applied".into(),
            Ok(LevelChange::OverriddenByEnv) => {
                "log.level: RUST_LOG is set and overrides it (unset it to follow the config)".into()
            }
            Err(e) => format!("log.level: not applied: {e}"),
        });
    }
    said
}
