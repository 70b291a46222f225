//! floodgate: a flash-sale traffic gateway.
//!
//! A reverse proxy that keeps promotion sites up on event day. Each request meets one
//! tower stack per route (see [`stack`]): rate limit → waiting room → cache →
//! admission queue → upstream. Configuration is compiled once ([`config`]) and read on
//! the hot path through one `ArcSwap` ([`proxy::Shared`]).

pub mod admin;
pub mod admission;
pub mod alloc;
pub mod body;
pub mod buffering;
pub mod cache;
pub mod config;
pub mod context;
pub mod demo;
pub mod edge;
pub mod error;
pub mod forwarding;
pub mod gateway;
pub mod logging;
pub mod metrics;
pub mod proxy;
pub mod rate_limit;
pub(crate) mod reconfigure;
pub mod respond;
pub mod router;
pub mod server;
pub mod shop;
pub mod stack;
pub mod stamp;
pub mod state;
pub mod tls;
pub mod upstream;
pub mod waiting_room;
mod workers;

pub use gateway::Gateway;
