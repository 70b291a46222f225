//! A running gateway: listeners bound, config live, shutdown on request.
//!
//! Used by `floodgate run`, the demo, the tests and the load tests alike, so every one
//! of them exercises the same code.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio::sync::watch;
use tokio_util::task::TaskTracker;

use crate::admin::{self, AdminState};
use crate::config::{self, Config};
use crate::metrics::Metrics;
use crate::proxy::{Compiled, Shared};
use crate::server;
use crate::tls::{self, CertSet, Certificates, Tls};
use crate::workers;

/// Why a gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The admin API would be reachable from other machines without a token.
    #[error("server.admin_listen {addr} is not a loopback address: set FLOODGATE_ADMIN_TOKEN or server.admin_token_file")]
    AdminTokenMissing {
        /// The admin address.
        addr: SocketAddr,
    },
    /// The admin token file could not be read.
    #[error("server.admin_token_file {path}: {source}")]
    AdminTokenFile {
        /// The file.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// A `[[certificate]]` file could not be read or does not fit its key.
    #[error("{}", errors.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("\n"))]
    Certificates {
        /// Every problem, with its key path.
        errors: Vec<config::KeyError>,
    },
    /// The TLS settings were refused by rustls.
    #[error("TLS: {0}")]
    Tls(#[from] rustls::Error),
    /// The serving threads could not be started.
    #[error("cannot start the worker threads: {source}")]
    Workers {
        /// The OS error.
        source: std::io::Error,
    },
    /// A listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
}

/// The admin bearer token: from `server.admin_token_file`, else `FLOODGATE_ADMIN_TOKEN`.
/// Required when the admin listener is not on loopback; never read from the config file
/// itself, so configs can be shared and committed.
pub(crate) fn admin_token(cfg: &crate::config::ServerConfig) -> Result<Option<String>, StartError> {
    let token = match &cfg.admin_token_file {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .map_err(|source| StartError::AdminTokenFile {
                    path: path.display().to_string(),
                    source,
                })?
                .trim()
                .to_string(),
        ),
        None => std::env::var("FLOODGATE_ADMIN_TOKEN")
            .ok()
            .map(|t| t.trim().to_string()),
    }
    .filter(|t| !t.is_empty());
    if let Some(addr) = cfg.admin_listen {
        if token.is_none() && !addr.ip().is_loopback() {
            return Err(StartError::AdminTokenMissing { addr });
        }
    }
    Ok(token)
}

fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener, StartError> {
    server::bind(addr).map_err(|source| StartError::Bind { addr, source })
}

/// A listener for a worker thread: bound here, so a bad address fails the start, and
/// handed over unregistered, so the worker's own runtime drives it.
fn bind_std(addr: SocketAddr) -> Result<std::net::TcpListener, StartError> {
    bind(addr)?
        .into_std()
        .map_err(|source| StartError::Bind { addr, source })
}

/// A started gateway.
pub struct Gateway {
    /// The bound proxy addresses (with real ports when the config said 0).
    pub listen_addrs: Vec<SocketAddr>,
    /// The bound TLS proxy addresses (`server.tls_listen`), with real ports.
    pub tls_addrs: Vec<SocketAddr>,
    /// The bound admin address, if any.
    pub admin_addr: Option<SocketAddr>,
    shared: Arc<Shared>,
    admin: Arc<AdminState>,
    shutdown_tx: watch::Sender<bool>,
    conns: TaskTracker,
    /// The serving threads; they end when the gateway is shut down or dropped.
    workers: workers::Workers,
}

impl Gateway {
    /// Binds every listener and starts serving `config`.
    pub async fn start(config: Config) -> Result<Gateway, StartError> {
        Self::start_with_metrics(config, Metrics::new()).await
    }

    /// Like [`Gateway::start`], with metric families the caller already owns.
    pub async fn start_with_metrics(
        config: Config,
        metrics: Arc<Metrics>,
    ) -> Result<Gateway, StartError> {
        let server_cfg = Arc::new(config.server.clone());
        let source: Option<PathBuf> = config.source.clone();
        let certificates = Arc::new(Certificates::new(
            CertSet::load(&config.certificates, &tls::provider())
                .map_err(|errors| StartError::Certificates { errors })?,
            metrics.tls.certificate_expiry.clone(),
        ));
        let state = crate::state::start(&config.state, &metrics);
        state.track_rooms(
            config
                .waiting_rooms
                .iter()
                .map(|r| r.name.clone())
                .collect(),
        );
        let compiled = Compiled::build_with_state(config, &metrics, state.clone(), None);
        let shared = Arc::new(Shared {
            current: ArcSwap::from_pointee(compiled),
            metrics: metrics.clone(),
        });
        tokio::spawn(crate::state::apply_events(
            shared.clone(),
            state.subscribe(),
        ));
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let conns = TaskTracker::new();

        let tls = match server_cfg.tls_listen.is_empty() {
            true => None,
            false => Some(Arc::new(Tls::new(certificates.clone(), &metrics.tls)?)),
        };
        let workers = server_cfg.workers;
        let mut per_worker: Vec<Vec<workers::Listener>> =
            (0..workers).map(|_| Vec::new()).collect();
        let mut listen_addrs = Vec::new();
        let mut tls_addrs = Vec::new();
        let addrs = server_cfg.listen.iter().map(|a| (a, None));
        let tls_addrs_cfg = server_cfg.tls_listen.iter().map(|a| (a, tls.clone()));
        for (addr, tls) in addrs.chain(tls_addrs_cfg) {
            // The first bind resolves port 0; the other workers join its port.
            let first = bind_std(*addr)?;
            let bound = first.local_addr().expect("bound socket has an address");
            if tls.is_some() {
                tls_addrs.push(bound);
                tracing::info!(addr = %bound, workers, "listening (TLS)");
            } else {
                listen_addrs.push(bound);
                tracing::info!(addr = %bound, workers, "listening");
            }
            per_worker[0].push(workers::Listener {
                socket: first,
                tls: tls.clone(),
            });
            for mine in &mut per_worker[1..] {
                let socket = bind_std(bound)?;
                mine.push(workers::Listener {
                    socket,
                    tls: tls.clone(),
                });
            }
        }
        let admin_listener = match server_cfg.admin_listen {
            Some(addr) => Some(bind(addr)?),
            None => None,
        };

        let admin_token = admin_token(&server_cfg)?;
        let admin = Arc::new(AdminState {
            shared: shared.clone(),
            ready: AtomicBool::new(false),
            config_path: source,
            token: arc_swap::ArcSwap::from_pointee(admin_token),
            certificates,
            connections: admin::ConnectionLimit::new(server_cfg.max_connections),
        });
        let serving = workers::Serving {
            shared: shared.clone(),
            limit: admin.connections.semaphore.clone(),
            tracker: conns.clone(),
            shutdown: shutdown_rx.clone(),
        };
        let workers = workers::start(per_worker, &serving)
            .map_err(|source| StartError::Workers { source })?;
        let admin_addr = admin_listener.map(|l| {
            let addr = l.local_addr().expect("bound socket has an address");
            tracing::info!(%addr, "admin listening");
            tokio::spawn(admin::serve(l, admin.clone(), shutdown_rx.clone()));
            addr
        });
        admin.ready.store(true, Ordering::Release);
        Ok(Gateway {
            listen_addrs,
            tls_addrs,
            admin_addr,
            shared,
            admin,
            shutdown_tx,
            conns,
            workers,
        })
    }

    /// The first proxy address, for tests and the demo.
    pub fn addr(&self) -> SocketAddr {
        self.listen_addrs[0]
    }

    /// The first TLS proxy address, for tests.
    pub fn tls_addr(&self) -> SocketAddr {
        self.tls_addrs[0]
    }

    /// Process-wide metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.shared.metrics
    }

    /// Re-reads the config file and swaps it in; the old one stays on any error.
    pub fn reload(&self) -> Result<String, config::ConfigError> {
        admin::reload(&self.admin)
    }

    /// Stops accepting, lets in-flight requests finish within the grace period.
    /// Returns whether everything finished in time.
    pub async fn shutdown(self) -> bool {
        self.admin.ready.store(false, Ordering::Release);
        let _ = self.shutdown_tx.send(true);
        // The grace of the running config: a reload may have changed it.
        let grace = self.shared.current.load().config.server.shutdown_grace;
        let clean = server::drain(&self.conns, grace).await;
        self.shared.current.load().state.leave().await;
        if !clean {
            tracing::warn!(
                ?grace,
                "shutdown grace expired with requests still in flight"
            );
        }
        // Once no request can change it any more: the line's last word to its file.
        for room in &self.shared.current.load().waiting_rooms {
            room.shutdown();
        }
        drop(self.workers);
        clean
    }
}
