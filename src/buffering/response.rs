//! The response buffer: the origin's body is read on its own task, up to
//! `response_buffer` bytes ahead of the client, so that whatever holds the origin busy
//! (the admission slot) is released when the origin has finished, not when a slow
//! client has.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::Response;
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::BodyExt;
use tokio::sync::{mpsc, Semaphore};

use prometheus::IntCounter;

use super::SlowClientMetrics;
use crate::body::{self, Body, BoxError};
use crate::config::buffering::Buffering;

/// The response-buffer rule of the gateway.
#[derive(Clone)]
pub struct ResponseBuffering {
    /// Bytes read from the origin ahead of the client, per request.
    pub limit: usize,
    /// How long the pump waits for the client to make room before giving up.
    pub send_timeout: Duration,
    /// Counts answers given up on because the client stalled.
    pub abandoned: IntCounter,
}

impl ResponseBuffering {
    /// The rule from `[server]`, counting into `metrics`.
    pub fn new(b: &Buffering, metrics: &SlowClientMetrics) -> Self {
        ResponseBuffering {
            limit: b.response_buffer,
            send_timeout: b.send_timeout,
            abandoned: metrics.response_abandoned.clone(),
        }
    }
}

/// The client stopped taking the response for `send_timeout` while the origin still
/// had more: the rest is dropped and the client's connection is cut.
#[derive(Debug, thiserror::Error)]
#[error("the client took no response data for {0:?}")]
pub struct SendTimedOut(pub Duration);

/// Returns `resp` with its body read from the origin ahead of the client; `busy` (an
/// admission slot) is dropped as soon as the origin's body has ended, failed, or been
/// given up on, whether or not the client has read it.
///
/// What the origin has already sent is taken at once; most answers are complete by
/// then and need nothing more. The rest is read on a task of its own.
pub fn detach<G: Send + 'static>(
    resp: Response<Body>,
    busy: G,
    rule: &ResponseBuffering,
) -> Response<Body> {
    if resp.body().is_end_stream() {
        // HEAD, 204, 304, empty bodies: the origin is done already.
        drop(busy);
        return resp;
    }
    let (parts, mut origin) = resp.into_parts();
    let hint = origin.size_hint();
    let mut early = Early::new(rule.limit);
    match early.take(&mut origin) {
        Taken::All => {
            drop(busy);
            Response::from_parts(parts, early.into_body())
        }
        Taken::Some => {
            let space = Arc::new(Semaphore::new(early.room));
            let (tx, rx) = mpsc::unbounded_channel();
            for item in early.frames {
                let _ = tx.send(item);
            }
            tokio::spawn(pump(origin, busy, tx, space.clone(), rule.clone()));
            let client = Buffered {
                rx,
                space,
                hint,
                ended: false,
            };
            Response::from_parts(parts, body::boxed(client))
        }
    }
}

/// A frame for the client, with the buffer space it holds until the client takes it.
type Item = (Result<Frame<Bytes>, BoxError>, u32);

/// The buffer space a frame takes: its data, capped at the whole buffer so that a frame
/// larger than the buffer still fits once the client has taken everything before it.
fn cost(frame: &Frame<Bytes>, limit: usize) -> u32 {
    frame.data_ref().map_or(0, |d| d.len().min(limit)) as u32
}

/// What the origin had sent by the time its head arrived.
struct Early {
    frames: Vec<Item>,
    /// Buffer space left.
    room: usize,
}

enum Taken {
    /// The body has ended (or failed): nothing more will come.
    All,
    /// More is to come, or the buffer is full.
    Some,
}

impl Early {
    fn new(limit: usize) -> Self {
        Early {
            frames: Vec::new(),
            room: limit,
        }
    }

    /// Takes the frames that are ready now, without waiting, within the buffer.
    fn take(&mut self, origin: &mut Body) -> Taken {
        use futures_util::FutureExt;
        while self.room > 0 {
            if origin.is_end_stream() {
                return Taken::All;
            }
            match origin.frame().now_or_never() {
                None => return Taken::Some,
                Some(None) => return Taken::All,
                Some(Some(Err(e))) => {
                    self.frames.push((Err(e), 0));
                    return Taken::All;
                }
                Some(Some(Ok(frame))) => {
                    let held = cost(&frame, self.room);
                    self.room -= held as usize;
                    self.frames.push((Ok(frame), held));
                }
            }
        }
        if origin.is_end_stream() {
            Taken::All
        } else {
            Taken::Some
        }
    }

    /// The whole answer as a body: one chunk in memory in the common case.
    fn into_body(mut self) -> Body {
        match self.frames.len() {
            0 => body::empty(),
            1 if matches!(&self.frames[0].0, Ok(f) if f.is_data()) => {
                let (frame, _) = self.frames.pop().expect("one frame");
                let data = frame.ok().and_then(|f| f.into_data().ok());
                body::full(data.unwrap_or_default())
            }
            _ => body::boxed(http_body_util::StreamBody::new(futures_util::stream::iter(
                self.frames.into_iter().map(|(item, _)| item),
            ))),
        }
    }
}

/// Moves the origin's frames into the buffer, waiting for room at most `send_timeout`.
async fn pump<G>(
    mut origin: Body,
    busy: G,
    tx: mpsc::UnboundedSender<Item>,
    space: Arc<Semaphore>,
    rule: ResponseBuffering,
) {
    loop {
        let next = tokio::select! {
            f = origin.frame() => f,
            // The client left: stop reading, free the slot.
            _ = tx.closed() => return,
        };
        let frame = match next {
            None => break,
            Some(Ok(frame)) => frame,
            Some(Err(e)) => {
                drop(busy);
                let _ = tx.send((Err(e), 0));
                return;
            }
        };
        let need = cost(&frame, rule.limit);
        if need > 0 {
            let room = tokio::select! {
                r = tokio::time::timeout(rule.send_timeout, space.acquire_many(need)) => r,
                _ = tx.closed() => return,
            };
            match room {
                Ok(Ok(permit)) => permit.forget(),
                // The semaphore is never closed; a timeout means the client is not reading.
                Ok(Err(_)) | Err(_) => {
                    drop(busy);
                    rule.abandoned.inc();
                    let _ = tx.send((Err(SendTimedOut(rule.send_timeout).into()), 0));
                    return;
                }
            }
        }
        if tx.send((Ok(frame), need)).is_err() {
            return;
        }
    }
    // The origin has finished: free its slot before the client can see the end.
    drop(busy);
    drop(tx);
}

/// The client's side of the buffer.
struct Buffered {
    rx: mpsc::UnboundedReceiver<Item>,
    space: Arc<Semaphore>,
    hint: SizeHint,
    ended: bool,
}

impl HttpBody for Buffered {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let item = std::task::ready!(self.rx.poll_recv(cx));
        let item = item.map(|(frame, held)| {
            self.space.add_permits(held as usize);
            frame
        });
        match &item {
            Some(Ok(frame)) => {
                if let Some(d) = frame.data_ref() {
                    self.hint = remaining(&self.hint, d.len() as u64);
                    // A body of known length is over with its last byte; saying so lets
                    // hyper finish without waiting for the pump to close the channel.
                    if self.hint.upper() == Some(0) {
                        self.ended = true;
                    }
                }
            }
            None | Some(Err(_)) => self.ended = true,
        }
        Poll::Ready(item)
    }

    fn is_end_stream(&self) -> bool {
        self.ended
    }

    fn size_hint(&self) -> SizeHint {
        self.hint
    }
}

/// What `hint` says is left after `taken` more bytes.
fn remaining(hint: &SizeHint, taken: u64) -> SizeHint {
    match hint.exact() {
        Some(n) => SizeHint::with_exact(n.saturating_sub(taken)),
        None => {
            let mut h = SizeHint::new();
            h.set_lower(hint.lower().saturating_sub(taken));
            h
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};

    /// Dropped when the origin is no longer busy.
    struct Busy(Arc<AtomicBool>);

    impl Drop for Busy {
        fn drop(&mut self) {
            self.0.store(false, Ordering::SeqCst);
        }
    }

    fn origin(chunks: usize, size: usize) -> Response<Body> {
        let frames =
            (0..chunks).map(move |_| Ok::<_, BoxError>(Frame::data(Bytes::from(vec![1u8; size]))));
        Response::new(body::boxed(http_body_util::StreamBody::new(
            futures_util::stream::iter(frames),
        )))
    }

    fn rule(limit: usize) -> ResponseBuffering {
        ResponseBuffering {
            limit,
            send_timeout: Duration::from_secs(5),
            abandoned: IntCounter::new("t", "t").unwrap(),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn an_answer_within_the_buffer_frees_the_origin_though_nobody_reads_it() {
        let busy = Arc::new(AtomicBool::new(true));
        let resp = detach(origin(4, 1000), Busy(busy.clone()), &rule(8192));
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert!(
            !busy.load(Ordering::SeqCst),
            "the slot waited for the client"
        );
        let all = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(all.len(), 4000, "the client still gets every byte");
    }

    #[tokio::test(start_paused = true)]
    async fn past_the_buffer_a_client_that_reads_nothing_frees_the_origin_after_the_send_timeout() {
        let busy = Arc::new(AtomicBool::new(true));
        let resp = detach(origin(10, 1000), Busy(busy.clone()), &rule(2048));
        tokio::time::sleep(Duration::from_secs(4)).await;
        assert!(
            busy.load(Ordering::SeqCst),
            "given up before the send timeout"
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(!busy.load(Ordering::SeqCst), "held past the send timeout");
        let mut body = resp.into_body();
        let mut got = 0;
        let err = loop {
            match body.frame().await {
                Some(Ok(f)) => got += f.into_data().unwrap().len(),
                Some(Err(e)) => break e,
                None => panic!("a cut answer ended as if complete"),
            }
        };
        assert!(err.is::<SendTimedOut>(), "{err}");
        // What was buffered (the buffer, plus the frame that filled it) is delivered.
        assert!((2000..10_000).contains(&got), "{got}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_that_reads_steadily_gets_an_answer_larger_than_the_buffer() {
        let busy = Arc::new(AtomicBool::new(true));
        let resp = detach(origin(50, 1000), Busy(busy.clone()), &rule(2048));
        let all = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(all.len(), 50_000);
        assert!(!busy.load(Ordering::SeqCst));
    }
}
