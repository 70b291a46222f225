//! The request-buffering layer: the whole body is read before the request moves on to
//! the admission queue, within the request deadline.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures_util::future::BoxFuture;
use http::header::CONTENT_LENGTH;
use http::{HeaderMap, Request, Response};
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::BodyExt;
use tower::{Layer, Service};

use super::SlowClientMetrics;
use crate::body::{self, Body, BoxError};
use crate::config::buffering::Buffering;
use crate::error::GatewayError;

/// When the first byte of the request head arrived; set by the connection task so the
/// request deadline covers the head as well as the body.
#[derive(Debug, Clone, Copy)]
pub struct RequestStart(pub Instant);

/// One route's request-body rule.
#[derive(Debug, Clone, Copy)]
pub struct RequestBuffering {
    /// Read the whole body before moving on (the default), or stream it.
    pub enabled: bool,
    /// Body bytes held in memory at most; more is refused with 413.
    pub limit: usize,
    /// Head plus body within this, or 408.
    pub timeout: Duration,
}

impl RequestBuffering {
    /// The rule for a route: `enabled` from its `request_buffering`, the rest from
    /// `[server]`.
    pub fn new(enabled: bool, server: &Buffering) -> Self {
        RequestBuffering {
            enabled,
            limit: server.request_buffer,
            timeout: server.request_timeout,
        }
    }
}

/// Puts request buffering (or, when off, the request deadline alone) in front of a
/// service.
#[derive(Clone)]
pub struct RequestBufferLayer {
    rule: RequestBuffering,
    metrics: SlowClientMetrics,
}

impl RequestBufferLayer {
    /// A layer applying `rule`, counting refusals in `metrics`.
    pub fn new(rule: RequestBuffering, metrics: SlowClientMetrics) -> Self {
        RequestBufferLayer { rule, metrics }
    }
}

impl<S> Layer<S> for RequestBufferLayer {
    type Service = RequestBufferService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequestBufferService {
            inner,
            rule: self.rule,
            metrics: self.metrics.clone(),
        }
    }
}

/// See [`RequestBufferLayer`].
#[derive(Clone)]
pub struct RequestBufferService<S> {
    inner: S,
    rule: RequestBuffering,
    metrics: SlowClientMetrics,
}

impl<S> Service<Request<Body>> for RequestBufferService<S>
where
    // A named boxed future, as in the admission service (rust#102211).
    S: Service<
            Request<Body>,
            Response = Response<Body>,
            Error = GatewayError,
            Future = BoxFuture<'static, Result<Response<Body>, GatewayError>>,
        > + Clone
        + Send
        + 'static,
{
    type Response = Response<Body>;
    type Error = GatewayError;
    type Future = BoxFuture<'static, Result<Response<Body>, GatewayError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), GatewayError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        // Most requests have no body: they pass untouched, at the cost of this check.
        if req.body().is_end_stream() {
            return self.inner.call(req);
        }
        let rule = self.rule;
        if rule.enabled && declared_length(req.headers()).is_some_and(|n| n > rule.limit as u64) {
            self.metrics.body_too_large.inc();
            return Box::pin(std::future::ready(Err(GatewayError::BodyTooLarge)));
        }
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let metrics = self.metrics.clone();
        Box::pin(async move {
            let deadline = deadline(&req, rule.timeout);
            let res = if rule.enabled {
                match read_whole(req, rule.limit, deadline, rule.timeout).await {
                    Ok(req) => inner.call(req).await,
                    Err(e) => Err(e),
                }
            } else {
                let req = req.map(|b| body::boxed(ClientBody::new(b, deadline, rule.timeout)));
                inner.call(req).await
            };
            // Streamed, a body failure comes back through the upstream as the same errors.
            if let Err(e) = &res {
                metrics.refused(e);
            }
            res
        })
    }
}

fn declared_length(h: &HeaderMap) -> Option<u64> {
    h.get(CONTENT_LENGTH)?.to_str().ok()?.parse().ok()
}

/// The request's deadline: `timeout` after its head started arriving.
fn deadline(req: &Request<Body>, timeout: Duration) -> tokio::time::Instant {
    let start = req
        .extensions()
        .get::<RequestStart>()
        .map_or_else(Instant::now, |s| s.0);
    (start + timeout).into()
}

/// Reads the whole body into memory, refusing it past `limit` or after `deadline`.
async fn read_whole(
    req: Request<Body>,
    limit: usize,
    deadline: tokio::time::Instant,
    timeout: Duration,
) -> Result<Request<Body>, GatewayError> {
    let (parts, mut incoming) = req.into_parts();
    let read = async {
        let mut chunks: Vec<Bytes> = Vec::new();
        let mut len = 0usize;
        let mut trailers = None;
        while let Some(frame) = incoming.frame().await {
            let frame =
                frame.map_err(|e| client_body_error(&*e).unwrap_or(GatewayError::MalformedBody))?;
            match frame.into_data() {
                Ok(data) => {
                    len += data.len();
                    if len > limit {
                        return Err(GatewayError::BodyTooLarge);
                    }
                    if !data.is_empty() {
                        chunks.push(data);
                    }
                }
                Err(frame) => trailers = frame.into_trailers().ok(),
            }
        }
        Ok((chunks, len, trailers))
    };
    let (chunks, len, trailers) = tokio::time::timeout_at(deadline, read)
        .await
        .map_err(|_| GatewayError::RequestTimeout { timeout })??;
    Ok(Request::from_parts(parts, complete(chunks, len, trailers)))
}

/// A body of known length (so the origin gets `Content-Length`, not chunks) from what
/// was read.
fn complete(mut chunks: Vec<Bytes>, len: usize, trailers: Option<HeaderMap>) -> Body {
    let data = if chunks.len() == 1 {
        chunks.pop().expect("one chunk")
    } else {
        let mut all = BytesMut::with_capacity(len);
        for c in &chunks {
            all.extend_from_slice(c);
        }
        all.freeze()
    };
    match trailers {
        None => body::full(data),
        Some(t) => {
            let frames = [Ok::<_, BoxError>(Frame::data(data)), Ok(Frame::trailers(t))];
            body::boxed(http_body_util::StreamBody::new(futures_util::stream::iter(
                frames,
            )))
        }
    }
}

/// Why a client's request body failed, as carried inside a body error.
#[derive(Debug, thiserror::Error)]
pub enum ClientBodyError {
    /// The request deadline passed while the body was still arriving.
    #[error("request body not received within {0:?}")]
    TimedOut(Duration),
    /// Reading the client's body failed (broken framing, connection closed).
    #[error("reading the request body failed")]
    Failed(#[source] BoxError),
}

/// The gateway's answer for a request-body failure found anywhere in `e`'s source
/// chain, or `None` when the failure is not the client's body (then it is the origin's).
///
/// The upstream client reports a streamed body's failure as its own error; this tells
/// the two apart, so a slow or broken client never counts against the origin's health.
pub fn client_body_error(e: &(dyn std::error::Error + 'static)) -> Option<GatewayError> {
    let mut found = None;
    let mut src = Some(e);
    while let Some(s) = src {
        if s.is::<http_body_util::LengthLimitError>() {
            return Some(GatewayError::BodyTooLarge);
        }
        match s.downcast_ref::<ClientBodyError>() {
            Some(ClientBodyError::TimedOut(timeout)) => {
                return Some(GatewayError::RequestTimeout { timeout: *timeout })
            }
            Some(ClientBodyError::Failed(_)) => found = Some(GatewayError::MalformedBody),
            None => {}
        }
        src = s.source();
    }
    found
}

pin_project_lite::pin_project! {
    /// A streamed request body under the request deadline, its failures marked as the
    /// client's ([`ClientBodyError`]).
    pub struct ClientBody<B> {
        #[pin]
        inner: B,
        #[pin]
        deadline: tokio::time::Sleep,
        timeout: Duration,
    }
}

impl<B> ClientBody<B> {
    /// Wraps `inner`, failing it at `deadline`.
    pub fn new(inner: B, deadline: tokio::time::Instant, timeout: Duration) -> Self {
        ClientBody {
            inner,
            deadline: tokio::time::sleep_until(deadline),
            timeout,
        }
    }
}

impl<B> HttpBody for ClientBody<B>
where
    B: HttpBody<Data = Bytes, Error = BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        match this.inner.poll_frame(cx) {
            Poll::Ready(Some(Err(e))) => {
                // A length-limit error stays as it is: it already names the client.
                if e.is::<http_body_util::LengthLimitError>() {
                    return Poll::Ready(Some(Err(e)));
                }
                Poll::Ready(Some(Err(ClientBodyError::Failed(e).into())))
            }
            Poll::Pending => match this.deadline.poll(cx) {
                Poll::Ready(()) => {
                    Poll::Ready(Some(Err(ClientBodyError::TimedOut(*this.timeout).into())))
                }
                Poll::Pending => Poll::Pending,
            },
            ready => ready,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
