//! Request buffering and client deadlines: a slow or broken client costs the gateway a
//! connection and a bounded buffer, never an origin slot (docs/hardening-buffering.md).
//!
//! ```text
//!  client ─► head (header_read_timeout) ─► … ─► request buffer ─► admission ─► origin
//!            └──────── request_timeout: head plus body, else 408 ────┘
//!            body read whole into memory (request_buffer, else 413; broken framing 400)
//!            before a slot is taken, so the origin only ever sees complete requests
//!
//!  origin ─► response buffer (response_buffer bytes ahead of the client) ─► client
//!            the slot is released when the origin has sent everything, whether or not
//!            the client has read it; past the buffer, a client that takes nothing for
//!            send_timeout loses the response and the slot is released
//!  client connection ─► cut when no response data was taken for send_timeout
//! ```
//!
//! - [`request`]: the tower layer that reads the body before admission (or, on a route
//!   with `request_buffering = false`, streams it under the same deadline);
//! - [`response`]: the pump that reads the origin's body into a bounded buffer on its
//!   own task, holding the admission slot only as long as the origin works;
//! - [`send`]: per-connection watch of responses the client is not taking, used by the
//!   connection task in [`crate::server`] to cut stalled clients off.

pub mod metrics;
pub mod request;
pub mod response;
pub mod send;

pub use metrics::SlowClientMetrics;
pub use request::{client_body_error, RequestBufferLayer, RequestBuffering, RequestStart};
pub use response::{detach, ResponseBuffering};
pub use send::{SendWatch, Watched};
