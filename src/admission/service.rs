//! The admission tower service: classify, wait for a slot, call the upstream, and hold
//! the slot in the response body until the origin has sent all of it.

use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::future::BoxFuture;
use http::{Request, Response};
use tower::Service;

use super::error::ShedReason;
use super::priority::{classify, PriorityRule};
use super::queue::Admission;
use crate::body::{self, Body, Guarded};
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
}

impl<S> AdmissionService<S> {
    /// Wraps `inner` with `admission`, classifying requests by `rules`.
    pub fn new(
        inner: S,
        admission: Arc<Admission>,
        rules: Arc<[PriorityRule]>,
        circuit: Option<Arc<dyn Circuit>>,
        upstream: Arc<str>,
    ) -> Self {
        AdmissionService {
            inner,
            admission,
            rules,
            circuit,
            upstream,
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
                Ok(resp) => Ok(resp.map(|b| body::boxed(Guarded::new(b, permit)))),
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
