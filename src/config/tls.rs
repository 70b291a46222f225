//! `[[certificate]]`: where the TLS certificate chains and keys are.
//!
//! Only the paths are checked here; the files are read by [`crate::tls`] at start and
//! on every reload, so a renewed certificate is picked up without a config change.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::KeyError;

/// Off: a route may serve clients that cannot do TLS, and a gateway without a TLS
/// listener (or a TLS load balancer in front) would redirect them nowhere.
pub const DEFAULT_HTTPS_REDIRECT: bool = false;

/// `[[certificate]]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCertificate {
    /// PEM file: the leaf certificate first, then its intermediates.
    pub cert: Option<String>,
    /// PEM file: the private key (PKCS#8, SEC1 or PKCS#1).
    pub key: Option<String>,
}

/// `[[certificate]]`, compiled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateConfig {
    /// The PEM chain.
    pub cert: PathBuf,
    /// The PEM private key.
    pub key: PathBuf,
}

/// Compiles every `[[certificate]]`; TLS listeners need at least one.
pub fn compile(
    raw: &[RawCertificate],
    tls_listen: &[std::net::SocketAddr],
    errors: &mut Vec<KeyError>,
) -> Vec<CertificateConfig> {
    let mut out = Vec::with_capacity(raw.len());
    for (i, c) in raw.iter().enumerate() {
        let mut path = |field: &str, value: &Option<String>| match value.as_deref() {
            Some(v) if !v.trim().is_empty() => Some(PathBuf::from(v)),
            _ => {
                errors.push(KeyError {
                    key: format!("certificate[{i}].{field}"),
                    message: "missing: a PEM file path".into(),
                });
                None
            }
        };
        let cert = path("cert", &c.cert);
        let key = path("key", &c.key);
        if let (Some(cert), Some(key)) = (cert, key) {
            out.push(CertificateConfig { cert, key });
        }
    }
    if !tls_listen.is_empty() && raw.is_empty() {
        errors.push(KeyError {
            key: "certificate".into(),
            message: "server.tls_listen is set but no [[certificate]] is configured".into(),
        });
    }
    out
}

/// Makes relative certificate paths relative to the config file's directory, so a
/// config works whatever directory the gateway was started from.
pub fn resolve_paths(certs: &mut [CertificateConfig], config_file: &Path) {
    let Some(dir) = config_file.parent() else {
        return;
    };
    for c in certs {
        for p in [&mut c.cert, &mut c.key] {
            if p.is_relative() {
                *p = dir.join(&*p);
            }
        }
    }
}
