//! Send timeout: a client connection that takes no response data for `send_timeout`
//! while some is waiting for it is cut off (nginx's `send_timeout`).
//!
//! A client that stops reading stops hyper from polling the response body, so no
//! timer inside the body could fire. The connection task in [`crate::server`] watches
//! instead, for two kinds of stall:
//! - the socket will not take bytes (a write returned `Pending` and none has gone out
//!   since): HTTP/1 clients that stop reading, and HTTP/2 ones past the TCP window;
//! - a response body handed hyper a frame and hyper has neither come back for the
//!   next nor finished with the body: an HTTP/2 stream whose flow-control window the
//!   client keeps at zero.

use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};

use crate::stamp::Stamp;

/// What one client connection is waiting on its client for.
#[derive(Debug, Default)]
pub struct SendWatch {
    /// Set when a socket write could not proceed; cleared when bytes go out.
    write_blocked: Stamp,
    /// Each open response body's "waiting for the client since", unset while the body
    /// waits for its own data. At most one per open request (HTTP/2 streams are capped).
    bodies: Mutex<Vec<Weak<Stamp>>>,
}

impl SendWatch {
    /// A socket write could not proceed.
    pub fn write_blocked(&self) {
        self.write_blocked.touch_if_unset();
    }

    /// Bytes went out on the socket.
    pub fn wrote(&self) {
        self.write_blocked.clear();
    }

    /// Since when the client has taken nothing that was waiting for it, if it is
    /// stalling now.
    pub fn stalled_since(&self) -> Option<Instant> {
        let mut oldest = self.write_blocked.get();
        let bodies = self.bodies.lock().expect("send watch lock");
        for stamp in bodies.iter().filter_map(Weak::upgrade) {
            oldest = match (oldest, stamp.get()) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
        oldest
    }

    /// When the connection task should look again: when the current stall (if any)
    /// reaches `timeout`, else half a timeout from now, so a stall that starts later
    /// is cut between one and one and a half timeouts after it began.
    pub fn next_check(&self, timeout: Duration) -> Instant {
        match self.stalled_since() {
            Some(t) => t + timeout,
            None => Instant::now() + timeout / 2,
        }
    }

    /// Whether the client has stalled for `timeout` or longer.
    pub fn expired(&self, timeout: Duration) -> bool {
        self.stalled_since().is_some_and(|t| t.elapsed() >= timeout)
    }

    fn register(&self, waiting: bool) -> Arc<Stamp> {
        let stamp = Arc::new(Stamp::default());
        // Handed to hyper, a body with data waits for hyper to poll it.
        if waiting {
            stamp.touch();
        }
        let mut bodies = self.bodies.lock().expect("send watch lock");
        bodies.retain(|w| w.strong_count() > 0);
        bodies.push(Arc::downgrade(&stamp));
        stamp
    }
}

pin_project_lite::pin_project! {
    /// A response body that tells its connection's [`SendWatch`] when it waits for the
    /// client.
    pub struct Watched<B> {
        #[pin]
        inner: B,
        stamp: Option<Arc<Stamp>>,
    }
}

impl<B: HttpBody> Watched<B> {
    /// Wraps `inner`, registering it with `watch`. Only HTTP/2 bodies are watched: an
    /// HTTP/1 body waits behind its socket, whose stalls the watch sees directly, and
    /// a slow but steady HTTP/1 reader must not be cut while hyper's write queue drains.
    pub fn new(inner: B, watch: &SendWatch, version: http::Version) -> Self {
        let stamp =
            (version == http::Version::HTTP_2).then(|| watch.register(!inner.is_end_stream()));
        Watched { inner, stamp }
    }
}

impl<B: HttpBody<Data = Bytes>> HttpBody for Watched<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let mut this = self.project();
        let res = this.inner.as_mut().poll_frame(cx);
        if let Some(stamp) = this.stamp {
            match &res {
                // A frame for the client: waiting for hyper to come back for the next.
                // After the last, hyper keeps the body until the frame has window to
                // go out, so the stall still shows until the body is dropped.
                Poll::Ready(Some(Ok(_))) => stamp.touch(),
                _ => stamp.clear(),
            }
        }
        res
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
