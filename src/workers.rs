//! Thread-per-core serving: `server.workers` threads, each a current-thread tokio
//! runtime with a listener of its own on every address (`SO_REUSEPORT`), nginx's
//! process model in one process.
//!
//! The kernel spreads new connections over the listeners, and a connection lives on
//! the worker that accepted it: its requests, its origin connections (the upstream
//! pool keeps a stack per thread) and its timers never cross threads. A current-thread
//! runtime also skips the work-stealing scheduler's cross-thread wakeups, which were
//! the biggest single kernel cost of a proxied request in the profile (README §
//! Performance). The control plane (admin API, tickers, Redis) stays on the main
//! runtime.

use std::sync::Arc;

use tokio::sync::{watch, Semaphore};
use tokio_util::task::TaskTracker;

use crate::proxy::Shared;
use crate::server;
use crate::tls::Tls;

/// A bound listener waiting for its worker, and whether it speaks TLS.
pub(crate) struct Listener {
    /// Bound and listening; registered with its worker's runtime there.
    pub(crate) socket: std::net::TcpListener,
    /// The TLS acceptor, on a `tls_listen` address.
    pub(crate) tls: Option<Arc<Tls>>,
}

/// What every worker shares.
#[derive(Clone)]
pub(crate) struct Serving {
    /// The live config.
    pub(crate) shared: Arc<Shared>,
    /// `server.max_connections`, across all workers.
    pub(crate) limit: Arc<Semaphore>,
    /// Every connection task, for the drain at shutdown.
    pub(crate) tracker: TaskTracker,
    /// Turns true when the gateway stops accepting.
    pub(crate) shutdown: watch::Receiver<bool>,
}

/// The running worker threads; dropping this ends them (and any connection still
/// open on them).
pub(crate) struct Workers {
    stop: watch::Sender<bool>,
}

impl Drop for Workers {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// The worker count `server.workers` leaves to us: one per core this process may run
/// on (its CPU affinity, so `taskset -c 0` means one).
pub(crate) fn default_count() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Starts one thread per entry of `listeners`, each serving its own listeners.
pub(crate) fn start(listeners: Vec<Vec<Listener>>, serving: &Serving) -> std::io::Result<Workers> {
    let (stop, stopped) = watch::channel(false);
    for (i, mine) in listeners.into_iter().enumerate() {
        let serving = serving.clone();
        let mut stopped = stopped.clone();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        std::thread::Builder::new()
            .name(format!("floodgate-w{i}"))
            .spawn(move || {
                runtime.block_on(async move {
                    for l in mine {
                        match tokio::net::TcpListener::from_std(l.socket) {
                            Ok(listener) => {
                                tokio::spawn(server::accept_loop(
                                    listener,
                                    l.tls,
                                    serving.shared.clone(),
                                    serving.limit.clone(),
                                    serving.tracker.clone(),
                                    serving.shutdown.clone(),
                                ));
                            }
                            Err(e) => tracing::error!(error = %e, "worker cannot serve a listener"),
                        }
                    }
                    // Serves until the gateway has drained (or given up on) its
                    // connections; dropping the runtime then ends what is left.
                    let _ = stopped.wait_for(|s| *s).await;
                });
            })?;
    }
    Ok(Workers { stop })
}
