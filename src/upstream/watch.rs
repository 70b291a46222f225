//! A request body that tells when it was sent whole or failed, so that the upstream
//! can tell the client's slowness or bad body from the origin's failure.
//!
//! Hand-written: `body::Guarded` reports one release at the end but cannot tell a body
//! the client broke from one hyper dropped, and this needs the time the body ended.

use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};

/// What the body watch saw; shared between the body and the request's sender.
#[derive(Debug, Clone, Default)]
pub(crate) struct BodyWatch(Arc<State>);

#[derive(Debug, Default)]
struct State {
    done: OnceLock<Instant>,
    failed: OnceLock<()>,
}

impl BodyWatch {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// When the whole body had been handed to the origin's connection.
    pub(crate) fn done_at(&self) -> Option<Instant> {
        self.0.done.get().copied()
    }

    /// Whether the client's body failed (reset, malformed framing, over the limit).
    pub(crate) fn failed(&self) -> bool {
        self.0.failed.get().is_some()
    }

    fn finish(&self) {
        let _ = self.0.done.set(Instant::now());
    }
}

pin_project_lite::pin_project! {
    /// `inner`, reporting its end and its failure to a [`BodyWatch`].
    pub(crate) struct Watched<B> {
        #[pin]
        inner: B,
        watch: BodyWatch,
    }
}

impl<B: HttpBody> Watched<B> {
    pub(crate) fn new(inner: B, watch: BodyWatch) -> Self {
        // A body with nothing to send (GET) is complete from the start.
        if inner.is_end_stream() {
            watch.finish();
        }
        Watched { inner, watch }
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
        match &res {
            Poll::Ready(None) => this.watch.finish(),
            Poll::Ready(Some(Err(_))) => {
                let _ = this.watch.0.failed.set(());
            }
            Poll::Ready(Some(Ok(_))) if this.inner.is_end_stream() => this.watch.finish(),
            _ => {}
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
