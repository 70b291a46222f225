//! The body a fill's leader streams: frames handed over by the fill task as they
//! arrive, then, if the object outgrew `max_object_size`, the rest of the origin body
//! directly (so backpressure is the client's again and nothing more is buffered).

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame};
use tokio::sync::mpsc;

use crate::body::{Body, BoxError};

/// What the fill task hands to the leader's body.
pub enum Chunk {
    /// A frame, already accumulated for storage.
    Frame(Frame<Bytes>),
    /// The origin body failed.
    Err(BoxError),
    /// The rest of the origin body, unaccumulated.
    Rest(Body),
}

/// The leader's response body during a fill.
pub struct ChannelBody {
    rx: mpsc::UnboundedReceiver<Chunk>,
    rest: Option<Body>,
}

impl ChannelBody {
    /// A body reading from the fill task's channel.
    pub fn new(rx: mpsc::UnboundedReceiver<Chunk>) -> Self {
        ChannelBody { rx, rest: None }
    }
}

impl HttpBody for ChannelBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        loop {
            if let Some(rest) = self.rest.as_mut() {
                return Pin::new(rest).poll_frame(cx);
            }
            return match self.rx.poll_recv(cx) {
                Poll::Ready(Some(Chunk::Frame(f))) => Poll::Ready(Some(Ok(f))),
                Poll::Ready(Some(Chunk::Err(e))) => Poll::Ready(Some(Err(e))),
                Poll::Ready(Some(Chunk::Rest(b))) => {
                    self.rest = Some(b);
                    continue;
                }
                Poll::Ready(None) => Poll::Ready(None),
                Poll::Pending => Poll::Pending,
            };
        }
    }
}
