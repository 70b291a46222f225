//! The local backend: everything stays in this process, as a single gateway needs.

use futures_util::future::BoxFuture;
use tokio::sync::broadcast;

use super::{Consumed, Event, Gcra, SharedState, StateError};

/// One process, nobody to tell: rate limits stay in governor, admin actions apply
/// where they were taken.
pub struct LocalState {
    // Never sent on: subscribers simply wait for the gateway to stop.
    events: broadcast::Sender<Event>,
}

impl LocalState {
    /// The local backend.
    pub fn new() -> Self {
        LocalState {
            events: broadcast::channel(1).0,
        }
    }
}

impl Default for LocalState {
    fn default() -> Self {
        Self::new()
    }
}

impl SharedState for LocalState {
    fn backend(&self) -> &'static str {
        crate::metrics::LOCAL_STATE_BACKEND
    }
    fn is_up(&self) -> bool {
        true
    }
    fn live_instances(&self) -> u32 {
        1
    }
    fn consume(
        &self,
        _key: String,
        _gcra: Gcra,
    ) -> Option<BoxFuture<'static, Result<Consumed, StateError>>> {
        None
    }
    fn bucket_prefix(&self) -> String {
        String::new()
    }
    fn broadcast(&self, _event: Event) {}
    fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }
    fn track_rooms(&self, _rooms: Vec<String>) {}
    fn leave(&self) -> BoxFuture<'static, ()> {
        Box::pin(std::future::ready(()))
    }
}
