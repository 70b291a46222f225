//! The admission tower service: classify, wait for a slot, call the upstream, and hold
//! the slot until the origin has sent all of its response, whether or not the client
//! has read it yet (the response buffer, [`crate::buffering::response`], reads ahead).

use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::future::BoxFuture;
use http::{Request, Response};
use tower::Service;

use super::error::ShedReason;
use super::priority::{classify, PriorityRule};
use super::queue::Admission;
use crate::body::Body;
use crate::buffering::{self, ResponseBuffering};
use crate::error::GatewayError;

/// Whether an upstream can take requests at all; the admission layer fails fast when
/// it cannot, instead of queueing requests that would fail anyway.
pub trait Circuit: Send + Sync + 'static {
    /// `Some(retry_after)` while every server is out.
    fn open_for(&self) -> Option<std::time::Duration>;
}

/// Admission in front of an upstream service.
#[derive(Clone)]
pub struct AdmissionService<S> {
    inner: S,
    admission: Arc<Admission>,
    rules: Arc<[PriorityRule]>,
    circuit: Option<Arc<dyn Circuit>>,
    upstream: Arc<str>,
    response: ResponseBuffering,
}

impl<S> AdmissionService<S> {
    /// Wraps `inner` with `admission`, classifying requests by `rules`; `response` says
    /// how far the origin's answer is read ahead of the client.
    pub fn new(
        inner: S,
        admission: Arc<Admission>,
        rules: Arc<[PriorityRule]>,
        circuit: Option<Arc<dyn Circuit>>,
        upstream: Arc<str>,
        response: ResponseBuffering,
    ) -> Self {
        AdmissionService {
            inner,
            admission,
            rules,
            circuit,
            upstream,
            response,
        }
    }
}

/// The answer-side error for a shed request.
fn shed_error(upstream: &str, reason: ShedReason) -> GatewayError {
    let upstream = upstream.to_string();
    match reason {
        ShedReason::QueueFull => GatewayError::QueueFull { upstream },
        ShedReason::Codel => GatewayError::QueueOverloaded { upstream },
        ShedReason::CircuitOpen => GatewayError::CircuitOpen {
            upstream,
            retry_after: std::time::Duration::from_secs(1),
        },
        // Nobody reads the answer to a client that left; the timeout error is as good as any.
        ShedReason::QueueTimeout | ShedReason::ClientGone => {
            GatewayError::QueueTimeout { upstream }
        }
    }
}

impl<S> Service<Request<Body>> for AdmissionService<S>
where
    // A named boxed future rather than `S::Future: Send`: rustc cannot prove the latter
    // for bodies with boxed `dyn Error` inside an async block (rust#102211).
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
        let class = classify(&self.rules, &req);
        // The ready clone goes into the future; a fresh clone stays (tower's contract).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let admission = self.admission.clone();
        let circuit = self.circuit.clone();
        let upstream = self.upstream.clone();
        let response = self.response.clone();
        Box::pin(async move {
            if let Some(retry_after) = circuit.as_ref().and_then(|c| c.open_for()) {
                admission.metrics().shed(ShedReason::CircuitOpen);
                return Err(GatewayError::CircuitOpen {
                    upstream: upstream.to_string(),
                    retry_after,
                });
            }
            let permit = admission
                .clone()
                .acquire(class)
                .await
                .map_err(|r| shed_error(&upstream, r))?;
            match inner.call(req).await {
                Ok(resp) => Ok(buffering::detach(resp, permit, &response)),
                Err(e) => {
                    if matches!(e, GatewayError::CircuitOpen { .. }) {
                        admission.metrics().shed(ShedReason::CircuitOpen);
                    }
                    Err(e)
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admission::{AdmissionMetrics, Settings};
    use crate::body;
    use crate::config::admission::AdmissionTuning;
    use crate::config::Concurrency;
    use crate::metrics::Metrics;
    use bytes::Bytes;
    use http_body::Frame;
    use http_body_util::BodyExt;
    use std::pin::Pin;
    use std::time::Duration;
    use tokio::sync::mpsc;

    /// A response body the test feeds chunk by chunk; it ends when the sender is dropped.
    struct Fed(mpsc::Receiver<Bytes>);

    impl http_body::Body for Fed {
        type Data = Bytes;
        type Error = std::convert::Infallible;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            self.0.poll_recv(cx).map(|c| c.map(|b| Ok(Frame::data(b))))
        }
    }

    #[tokio::test]
    async fn the_slot_is_held_until_the_origin_body_has_been_fully_received() {
        let metrics = Metrics::new();
        let settings = Settings {
            max_concurrency: Concurrency::Fixed(1),
            queue_size: 10,
            queue_timeout: Duration::from_secs(10),
            tuning: AdmissionTuning {
                codel_target: Duration::from_millis(50),
                codel_interval: Duration::from_millis(500),
                overload_queue_delay: Duration::from_millis(5),
                min_concurrency: 1,
                max_concurrency_limit: 10,
            },
        };
        let adm = Admission::new(settings, AdmissionMetrics::new(&metrics, "t"));
        let (tx, rx) = mpsc::channel(4);
        let body = std::sync::Arc::new(std::sync::Mutex::new(Some(Fed(rx))));
        let origin = tower::service_fn(
            move |_req: Request<Body>| -> BoxFuture<'static, Result<Response<Body>, GatewayError>> {
                let b = body.lock().unwrap().take().expect("one request");
                Box::pin(async move { Ok(Response::new(body::boxed(b))) })
            },
        );
        let mut svc = AdmissionService::new(
            origin,
            adm.clone(),
            Arc::from(Vec::new()),
            None,
            "t".into(),
            ResponseBuffering {
                limit: 1024,
                send_timeout: Duration::from_secs(10),
                abandoned: prometheus::IntCounter::new("t", "t").unwrap(),
            },
        );
        let resp = svc.call(Request::new(body::empty())).await.unwrap();
        assert_eq!(adm.in_flight(), 1, "head received, body not: still busy");
        let mut body = resp.into_body();
        tx.send(Bytes::from_static(b"part")).await.unwrap();
        assert!(body.frame().await.is_some());
        assert_eq!(adm.in_flight(), 1, "half the body: still busy");
        drop(tx);
        assert!(body.frame().await.is_none());
        assert_eq!(adm.in_flight(), 0, "body done: slot free");
    }
}
