//! The admission tower layer.

use std::sync::Arc;

use tower::Layer;

use super::priority::PriorityRule;
use super::queue::Admission;
use super::service::{AdmissionService, Circuit};
use crate::buffering::ResponseBuffering;

/// Puts an upstream's shared admission controller in front of a service.
#[derive(Clone)]
pub struct AdmissionLayer {
    admission: Arc<Admission>,
    rules: Arc<[PriorityRule]>,
    circuit: Option<Arc<dyn Circuit>>,
    upstream: Arc<str>,
    response: ResponseBuffering,
}

impl AdmissionLayer {
    /// A layer using `admission` (shared by every route of the upstream) and this
    /// route's priority `rules`; `circuit` lets it fail fast when every server is out;
    /// `response` bounds how far the origin's answer is read ahead of the client, so
    /// the slot is released when the origin is done.
    pub fn new(
        admission: Arc<Admission>,
        rules: &[PriorityRule],
        circuit: Option<Arc<dyn Circuit>>,
        upstream: &str,
        response: ResponseBuffering,
    ) -> Self {
        AdmissionLayer {
            admission,
            rules: rules.into(),
            circuit,
            upstream: upstream.into(),
            response,
        }
    }
}

impl<S> Layer<S> for AdmissionLayer {
    type Service = AdmissionService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AdmissionService::new(
            inner,
            self.admission.clone(),
            self.rules.clone(),
            self.circuit.clone(),
            self.upstream.clone(),
            self.response.clone(),
        )
    }
}
