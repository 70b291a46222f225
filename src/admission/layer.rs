//! The admission tower layer.

use std::sync::Arc;

use tower::Layer;

use super::priority::PriorityRule;
use super::queue::Admission;
use super::service::{AdmissionService, Circuit};

/// Puts an upstream's shared admission controller in front of a service.
#[derive(Clone)]
pub struct AdmissionLayer {
    admission: Arc<Admission>,
    rules: Arc<[PriorityRule]>,
    circuit: Option<Arc<dyn Circuit>>,
    upstream: Arc<str>,
}

impl AdmissionLayer {
    /// A layer using `admission` (shared by every route of the upstream) and this
    /// route's priority `rules`; `circuit` lets it fail fast when every server is out.
    pub fn new(
        admission: Arc<Admission>,
        rules: &[PriorityRule],
        circuit: Option<Arc<dyn Circuit>>,
        upstream: &str,
    ) -> Self {
        AdmissionLayer {
            admission,
            rules: rules.into(),
            circuit,
            upstream: upstream.into(),
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
        )
    }
}
