//! The configuration file as written: serde structs that mirror the TOML.
//!
//! Values that need parsing (durations, sizes, rates, CIDRs, addresses) stay strings
//! here so that `compile` can check them all and report every error with its key path,
//! instead of serde stopping at the first one. Unknown keys are errors everywhere.

use serde::Deserialize;

/// The whole file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    pub server: RawServer,
    #[serde(default)]
    pub log: RawLog,
    #[serde(default)]
    pub upstream: Vec<RawUpstream>,
    #[serde(default)]
    pub route: Vec<RawRoute>,
    #[serde(default)]
    pub waiting_room: Vec<crate::waiting_room::config::RawWaitingRoom>,
    #[serde(default)]
    pub state: Option<crate::state::config::RawState>,
    /// `[cache]`: the process-wide HTTP cache store.
    pub cache: Option<crate::cache::config::RawCacheSettings>,
    /// `[[certificate]]`: TLS certificate chains and keys, the first is the default.
    #[serde(default)]
    pub certificate: Vec<super::tls::RawCertificate>,
}

/// One address or a list of them.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    /// The addresses as a list, whichever way they were written.
    pub fn to_vec(&self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s.clone()],
            OneOrMany::Many(v) => v.clone(),
        }
    }
}

/// `[server]`: listeners and connection limits.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    pub listen: Option<OneOrMany>,
    pub tls_listen: Option<OneOrMany>,
    pub admin_listen: Option<String>,
    pub admin_token_file: Option<String>,
    pub shutdown_grace: Option<String>,
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
    pub max_connections: Option<i64>,
    pub workers: Option<i64>,
    pub header_read_timeout: Option<String>,
    pub idle_timeout: Option<String>,
    pub max_header_size: Option<String>,
    pub max_headers: Option<i64>,
    pub max_request_body: Option<String>,
    pub http2_max_concurrent_streams: Option<i64>,
    pub via_name: Option<String>,
    /// Edge keys: see [`crate::edge`].
    pub normalize_path: Option<bool>,
    pub merge_slashes: Option<bool>,
    pub refused_methods: Option<Vec<String>>,
    pub untrusted_headers: Option<Vec<String>>,
    pub strip_headers: Option<Vec<String>>,
    pub request_timeout: Option<String>,
    pub request_buffer: Option<String>,
    pub send_timeout: Option<String>,
    pub response_buffer: Option<String>,
}

/// `[log]`: format and verbosity.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLog {
    pub format: Option<String>,
    pub level: Option<String>,
    pub access_log: Option<bool>,
    pub access_log_file: Option<String>,
}

/// `[[upstream]]`: an origin and how to reach it.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstream {
    pub name: Option<String>,
    #[serde(default)]
    pub servers: Vec<String>,
    pub balance: Option<String>,
    pub connect_timeout: Option<String>,
    pub response_timeout: Option<String>,
    pub pool_idle_timeout: Option<String>,
    pub pool_max_idle_per_server: Option<i64>,
    pub max_concurrency: Option<toml::Value>,
    pub queue_size: Option<i64>,
    pub queue_timeout: Option<String>,
    pub min_concurrency: Option<i64>,
    pub max_concurrency_limit: Option<i64>,
    pub codel_target: Option<String>,
    pub codel_interval: Option<String>,
    pub overload_queue_delay: Option<String>,
    pub health_check: Option<super::admission::RawHealthCheck>,
    pub outlier_detection: Option<super::admission::RawOutlier>,
    pub circuit_breaker: Option<super::admission::RawCircuitBreaker>,
    pub retries: Option<super::admission::RawRetries>,
}

/// `[[route]]`: which requests go where, through which protections.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    pub name: Option<String>,
    #[serde(default)]
    pub hosts: Vec<String>,
    pub path_prefix: Option<String>,
    pub upstream: Option<String>,
    #[serde(default)]
    pub rate_limits: Vec<toml::Table>,
    /// CIDRs that bypass the route's rate limits.
    #[serde(default)]
    pub allow: Vec<String>,
    /// CIDRs answered 403.
    #[serde(default)]
    pub deny: Vec<String>,
    pub cache: Option<crate::cache::config::RawRouteCache>,
    pub waiting_room: Option<String>,
    #[serde(default)]
    pub priority: Vec<super::admission::RawPriorityRule>,
    /// Read the whole request body before the origin sees it (default true).
    pub request_buffering: Option<bool>,
    /// Answer cleartext requests with a 308 to the same URL over https.
    pub https_redirect: Option<bool>,
}
