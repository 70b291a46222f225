//! floodgate-load: the load generator of floodgate.
//!
//! Scenarios (TOML) describe arrivals (open model, coordinated-omission
//! corrected) or users (closed model), a weighted request mix and, in spawn
//! mode, the simulated shop and gateway to start. Runs produce a
//! [`report::RunReport`] rendered as a terminal summary, JSON or HTML.
//! Load goes to loopback addresses only unless explicitly allowed.

#![warn(missing_docs)]

pub mod cheat;
pub mod client;
pub mod cpu;
pub mod engine;
pub mod metrics;
pub mod mix;
pub mod report;
pub mod runner;
pub mod scenario;
pub mod schedule;
pub mod shopper;
pub mod spawn;
pub mod stats;
pub mod target;

pub use engine::{run, RunOptions};
pub use report::RunReport;
pub use scenario::Scenario;
