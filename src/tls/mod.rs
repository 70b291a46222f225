//! TLS termination on `server.tls_listen`, with rustls (ring provider; no OpenSSL).
//!
//! ```text
//!  TCP accept ──► handshake (≤ header_read_timeout) ──► ALPN h2 | http/1.1 ──► server.rs
//!                   │ SNI ──► Certificates (ArcSwap, swapped by reload)
//!                   └ resumption: TLS 1.3 / 1.2 tickets, and a bounded session-id cache
//! ```
//!
//! - Protocols: TLS 1.3 and 1.2 only. Suites: ring's defaults, which are all AEAD
//!   (AES-GCM and ChaCha20-Poly1305, ECDHE only); rustls has no CBC, RC4 or RSA key
//!   exchange at all, so nothing weaker can be negotiated by mistake.
//! - No 0-RTT: early data can be replayed, and a replayed checkout POST is a double order.
//! - A request that arrived over TLS carries [`OverTls`] in its extensions; the front
//!   handler turns that into `scheme = "https"` for every layer.

pub mod certs;
pub mod redirect;

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use prometheus::{IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry};
use rustls::crypto::CryptoProvider;
use rustls::server::{ResolvesServerCert, ServerSessionMemoryCache};
use rustls::ServerConfig;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

pub use certs::{CertSet, Certificates};

/// Session-id cache entries, for TLS 1.2 clients that resume without tickets (TLS 1.3
/// and most 1.2 clients use tickets, which need no server memory). An entry is a few
/// hundred bytes, so this is a few MiB at most: about the 10k sessions of nginx's
/// common `ssl_session_cache shared:SSL:2m`, enough for a sale's returning shoppers.
pub const DEFAULT_SESSION_CACHE: usize = 10_240;

/// The protocol names we offer by ALPN, preferred first: browsers get HTTP/2.
const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// Marks a request that arrived over a TLS connection (set by the server, never by a
/// client header, so it can be trusted).
#[derive(Debug, Clone, Copy)]
pub struct OverTls;

/// `https` for a request that came over TLS, else `http`.
pub fn scheme(extensions: &http::Extensions) -> &'static str {
    if extensions.get::<OverTls>().is_some() {
        "https"
    } else {
        "http"
    }
}

/// The crypto provider every TLS listener and certificate load uses: ring, built once.
/// ring rather than aws-lc-rs: it needs neither cmake nor nasm to build.
pub fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(rustls::crypto::ring::default_provider()))
        .clone()
}

/// Reads every certificate of `config`; errors name the config file and the
/// `certificate[N].cert|key` they concern (used by reload and `floodgate check`).
pub fn load_certificates(
    config: &crate::config::Config,
) -> Result<CertSet, crate::config::ConfigError> {
    CertSet::load(&config.certificates, &provider()).map_err(|errors| {
        // A file problem has no line in the config file: the key path names it.
        let lines = vec![None; errors.len()];
        crate::config::ConfigError::Invalid {
            lines,
            file: config
                .source
                .as_ref()
                .map_or_else(|| "<inline>".into(), |p| p.display().to_string()),
            errors,
        }
    })
}

/// The rustls server settings: versions, ALPN, resumption, certificates by `resolver`.
pub fn server_config(resolver: Arc<dyn ResolvesServerCert>) -> Result<ServerConfig, rustls::Error> {
    let mut cfg = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    cfg.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
    cfg.session_storage = ServerSessionMemoryCache::new(DEFAULT_SESSION_CACHE);
    // Ticket keys rotate every 6 hours (the previous key still decrypts).
    cfg.ticketer = rustls::crypto::ring::Ticketer::new()?;
    // The client's suite order stands (rustls' default): every suite on offer is
    // strong, and a phone without AES instructions rightly prefers ChaCha20.
    cfg.max_early_data_size = 0;
    Ok(cfg)
}

/// TLS metric families.
#[derive(Clone)]
pub struct TlsMetrics {
    /// `floodgate_certificate_expiry_seconds{certificate}`: notAfter, Unix seconds.
    pub certificate_expiry: IntGaugeVec,
    /// `floodgate_tls_handshakes_total{result}`: full, resumed, failed, timeout.
    pub handshakes: IntCounterVec,
}

impl TlsMetrics {
    /// Creates and registers the families.
    pub fn register(registry: &Registry) -> Self {
        let certificate_expiry = IntGaugeVec::new(
            Opts::new(
                "floodgate_certificate_expiry_seconds",
                "When each served certificate expires (notAfter), Unix time in seconds",
            ),
            &["certificate"],
        )
        .expect("valid metric");
        let handshakes = IntCounterVec::new(
            Opts::new(
                "floodgate_tls_handshakes_total",
                "TLS handshakes on the proxy listeners, by result",
            ),
            &["result"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(certificate_expiry.clone()))
            .expect("metric registered once");
        registry
            .register(Box::new(handshakes.clone()))
            .expect("metric registered once");
        TlsMetrics {
            certificate_expiry,
            handshakes,
        }
    }
}

/// Handshake results, pre-resolved so the accept path does no label lookup.
struct Handshakes {
    full: IntCounter,
    resumed: IntCounter,
    failed: IntCounter,
    timeout: IntCounter,
}

/// What the TLS listeners share: the acceptor and its counters.
pub struct Tls {
    acceptor: TlsAcceptor,
    handshakes: Handshakes,
}

impl Tls {
    /// An acceptor serving `certificates`; reloads swap them underneath.
    pub fn new(
        certificates: Arc<Certificates>,
        metrics: &TlsMetrics,
    ) -> Result<Self, rustls::Error> {
        let cfg = server_config(certificates)?;
        let h = &metrics.handshakes;
        Ok(Tls {
            acceptor: TlsAcceptor::from(Arc::new(cfg)),
            handshakes: Handshakes {
                full: h.with_label_values(&["full"]),
                resumed: h.with_label_values(&["resumed"]),
                failed: h.with_label_values(&["failed"]),
                timeout: h.with_label_values(&["timeout"]),
            },
        })
    }

    /// Runs the server handshake within `timeout`; `None` when it failed or took too
    /// long (the socket is then closed: a client that cannot finish a handshake in the
    /// header timeout is either broken or a slowloris).
    pub async fn handshake<S>(&self, stream: S, timeout: Duration) -> Option<TlsStream<S>>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        match tokio::time::timeout(timeout, self.acceptor.accept(stream)).await {
            Ok(Ok(s)) => {
                let resumed =
                    s.get_ref().1.handshake_kind() == Some(rustls::HandshakeKind::Resumed);
                if resumed {
                    self.handshakes.resumed.inc();
                } else {
                    self.handshakes.full.inc();
                }
                Some(s)
            }
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "TLS handshake failed");
                self.handshakes.failed.inc();
                None
            }
            Err(_) => {
                tracing::debug!(?timeout, "TLS handshake timed out");
                self.handshakes.timeout.inc();
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_aead_suites_with_forward_secrecy_are_offered() {
        for s in &provider().cipher_suites {
            let name = format!("{:?}", s.suite());
            assert!(
                name.contains("GCM") || name.contains("CHACHA20_POLY1305"),
                "{name} is not an AEAD suite"
            );
            assert!(!name.contains("CBC"), "{name}");
            assert!(
                name.starts_with("TLS13_") || name.contains("ECDHE"),
                "{name} has no forward secrecy"
            );
        }
    }

    #[test]
    fn the_scheme_is_https_only_for_requests_marked_by_the_server() {
        let mut ext = http::Extensions::new();
        assert_eq!(scheme(&ext), "http");
        ext.insert(OverTls);
        assert_eq!(scheme(&ext), "https");
    }
}
