//! Request coalescing: at most one fill per URL in flight; others wait for it.
//!
//! The fill runs as its own task (see `service`), so the first client's disconnect
//! cannot cancel it (moka#240's trap); each waiter bounds its wait.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use crate::error::GatewayError;

/// Fills in flight at once, at most. Each holds a response in memory until it is
/// stored (moka does not count it, moka#471), so the number is bounded; past it,
/// requests go to the origin uncoalesced (the admission queue still protects it).
pub const MAX_FILLS: usize = 4096;

/// How a fill ended, as waiters see it.
#[derive(Debug, Clone)]
pub enum FillResult {
    /// A response is stored: look it up.
    Stored,
    /// Nothing was stored (uncacheable, too large, aborted): go to the origin.
    NotStored,
    /// The origin failed: the same error, or a stale copy.
    Failed(GatewayError),
    /// The origin answered with this 5xx: a stale copy, or go to the origin.
    OriginError(u16),
}

/// The fills in flight, by primary key.
#[derive(Default)]
pub struct Fills {
    map: Mutex<HashMap<Arc<str>, watch::Receiver<Option<FillResult>>>>,
    gauge: Option<prometheus::IntGauge>,
}

/// A request's part in a fill.
pub enum Role {
    /// Fetch it; finish the guard when done.
    Leader(FillGuard),
    /// Someone else is fetching it.
    Waiter(watch::Receiver<Option<FillResult>>),
    /// Too many fills in flight: go alone.
    Alone,
}

impl Fills {
    /// An empty set with a gauge of its size.
    pub fn new(gauge: prometheus::IntGauge) -> Arc<Self> {
        Arc::new(Fills {
            map: Mutex::default(),
            gauge: Some(gauge),
        })
    }

    /// Joins the fill for `key`, or starts it.
    pub fn begin(self: &Arc<Self>, key: &Arc<str>) -> Role {
        let mut map = self.map.lock().expect("fills lock");
        if let Some(rx) = map.get(key) {
            return Role::Waiter(rx.clone());
        }
        if map.len() >= MAX_FILLS {
            return Role::Alone;
        }
        let (tx, rx) = watch::channel(None);
        map.insert(key.clone(), rx);
        if let Some(g) = &self.gauge {
            g.set(map.len() as i64);
        }
        Role::Leader(FillGuard {
            fills: self.clone(),
            key: key.clone(),
            tx: Some(tx),
        })
    }

    /// Whether a fill for `key` is in flight.
    pub fn in_flight(&self, key: &str) -> bool {
        self.map.lock().expect("fills lock").contains_key(key)
    }
}

/// Held by the leader; ends the fill (with `NotStored` if dropped unfinished).
pub struct FillGuard {
    fills: Arc<Fills>,
    key: Arc<str>,
    tx: Option<watch::Sender<Option<FillResult>>>,
}

impl FillGuard {
    /// Ends the fill with `result`. The store must already hold what it announces:
    /// the key leaves the map first, so a newcomer either sees the stored entry or
    /// becomes the next leader (and re-checks the store).
    pub fn finish(mut self, result: FillResult) {
        self.end(result);
    }

    fn end(&mut self, result: FillResult) {
        if let Some(tx) = self.tx.take() {
            {
                let mut map = self.fills.map.lock().expect("fills lock");
                map.remove(&self.key);
                if let Some(g) = &self.fills.gauge {
                    g.set(map.len() as i64);
                }
            }
            let _ = tx.send(Some(result));
        }
    }
}

impl Drop for FillGuard {
    fn drop(&mut self) {
        self.end(FillResult::NotStored);
    }
}
