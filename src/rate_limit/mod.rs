//! Rate limiting: per-client, per-site and global limits, with allow and deny lists.
//!
//! ```text
//!  request ──► deny list? ──403──► allow list? ──bypass──► per-client limits ──► global limits ──► inner
//!                                                          (client_ip, header, cookie; first refusal answers 429)
//! ```
//!
//! Each limit is a GCRA bucket per key (governor), built as exactly `burst` at once and
//! one request per `1/rate` after that. Per-client limits are checked before route-wide
//! ones: a check spends a cell, so an abuser refused by its own limit never reaches,
//! and never drains, the budget everyone shares. Keyed state is bounded ([`store`]).
//! Limits whose rule did not change keep their buckets across a reload.

pub mod config;
pub mod error;
pub mod keys;
pub mod layer;
pub mod metrics;
pub mod route;
pub mod service;
pub mod shared;
pub mod store;

pub use config::RouteRateLimits;
pub use error::RateLimited;
pub use layer::RateLimitLayer;
pub use metrics::RateLimitMetrics;
pub use route::RouteLimits;
pub use service::RateLimitService;
