//! The body type every layer speaks, and a wrapper that releases resources at its end.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::{BodyExt, Empty, Full};

/// Errors carried by bodies: whatever the other side's I/O produced.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A streamed body, request or response; boxed so every layer has one type.
pub type Body = http_body_util::combinators::UnsyncBoxBody<Bytes, BoxError>;

/// A complete body from bytes already in memory.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// A body with no bytes.
pub fn empty() -> Body {
    Empty::<Bytes>::new()
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// Boxes any body whose error converts into [`BoxError`].
pub fn boxed<B>(b: B) -> Body
where
    B: HttpBody<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    b.map_err(Into::into).boxed_unsync()
}

/// Something told how many body bytes passed when it is released.
pub trait BodyGuard: Send + 'static {
    /// Called once, when the body ended (`complete`), failed, or was dropped early.
    fn release(self, bytes: u64, complete: bool);
}

pin_project_lite::pin_project! {
    /// A body that holds `guard` until the stream ends, fails, or is dropped.
    ///
    /// Used for everything that is "busy until the body is done": an upstream's
    /// in-flight count, an admission slot, the access-log line with the byte count.
    pub struct Guarded<B, G: BodyGuard> {
        #[pin]
        inner: B,
        guard: Option<G>,
        bytes: u64,
        // The body's announced length: hyper stops polling once that many bytes went
        // out, so reaching it counts as complete even without an end-of-stream poll.
        expected: Option<u64>,
    }

    impl<B, G: BodyGuard> PinnedDrop for Guarded<B, G> {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if let Some(g) = this.guard.take() {
                g.release(*this.bytes, Some(*this.bytes) == *this.expected);
            }
        }
    }
}

impl<B: HttpBody, G: BodyGuard> Guarded<B, G> {
    /// Wraps `inner`, releasing `guard` at its end.
    pub fn new(inner: B, guard: G) -> Self {
        let expected = inner.size_hint().exact();
        let mut g = Guarded {
            inner,
            guard: Some(guard),
            bytes: 0,
            expected,
        };
        // A body that is empty from the start (HEAD, 204, 304) may never be polled.
        if g.inner.is_end_stream() {
            if let Some(guard) = g.guard.take() {
                guard.release(0, true);
            }
        }
        g
    }
}

impl<B, G> HttpBody for Guarded<B, G>
where
    B: HttpBody<Data = Bytes>,
    G: BodyGuard,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let mut this = self.project();
        let res = this.inner.as_mut().poll_frame(cx);
        match &res {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(d) = frame.data_ref() {
                    *this.bytes += d.len() as u64;
                }
                // hyper stops polling a body that says it has ended, so release now.
                if this.inner.is_end_stream() {
                    if let Some(g) = this.guard.take() {
                        g.release(*this.bytes, true);
                    }
                }
            }
            Poll::Ready(None) => {
                if let Some(g) = this.guard.take() {
                    g.release(*this.bytes, true);
                }
            }
            Poll::Ready(Some(Err(_))) => {
                if let Some(g) = this.guard.take() {
                    g.release(*this.bytes, false);
                }
            }
            Poll::Pending => {}
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
