//! Admission: the queue in front of each upstream that keeps the origin at its capacity.
//!
//! ```text
//!  request ─► classify (route rules, or a `Priority` extension set by an earlier layer)
//!          ─► slot free and nobody waiting? ─► upstream
//!          ─► else queue, highest class first:
//!             draining normally (FIFO, up to queue_size)
//!               ├─ full: a higher-class arrival evicts the newest lowest-class waiter,
//!               │        otherwise the arrival is refused ─► 503 queue_full
//!               ├─ full and its oldest waiter past codel_target ─► overloaded now
//!               └─ waited queue_timeout ─► 503 queue_timeout
//!             overloaded (CoDel: standing queue; LIFO, short queue)
//!               ├─ keeps what the origin starts in overload_queue_delay (5 ms)
//!               ├─ an arrival takes the place of the oldest waiter ─► 503 codel, at once
//!               ├─ waited 2 × codel_target (arrivals stopped) ─► 503 codel
//!               └─ ends after codel_interval without anyone refused
//!             client gone ─► leaves the queue at once (client_gone)
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
