//! Admission: the queue in front of each upstream that keeps the origin at its capacity.
//!
//! ```text
//!  request ─► classify (route rules, or a `Priority` extension set by an earlier layer)
//!          ─► slot free and nobody waiting? ─► upstream
//!          ─► else queue (bounded): highest class first; FIFO, or LIFO under CoDel overload
//!               ├─ full: a higher-class arrival evicts the newest lowest-class waiter,
//!               │        otherwise the arrival is refused ─► 503 queue_full
//!               ├─ waited queue_timeout ─► 503 queue_timeout
//!               ├─ waited 2 × codel_target while overloaded ─► 503 codel
//!               └─ client gone ─► leaves the queue at once (client_gone)
//!  response body ─► the slot is released when the origin's body has been fully received
//! ```
//!
//! One [`Admission`] per upstream, shared by all its routes and kept across reloads
//! (its settings are updated in place), so at most `max_concurrency` requests are in
//! flight to an origin whatever route they came by. The limit sits in front of the
//! connection pool, never below it: hyper's pool has no per-host cap (hyper#4134).

pub mod codel;
pub mod error;
pub mod layer;
pub mod limit;
pub mod priority;
pub mod queue;
pub mod service;

pub use error::ShedReason;
pub use layer::AdmissionLayer;
pub use priority::{Priority, PriorityRule};
pub use queue::{Admission, AdmissionMetrics, Permit, Settings};
pub use service::{AdmissionService, Circuit};
