//! The certificates the TLS listeners serve: read from PEM files, chosen by SNI, swapped
//! whole on reload.
//!
//! rustls asks [`Certificates`] for a certificate once per full handshake; the answer
//! comes from one `ArcSwap` load, so a reload never blocks a handshake and an open
//! connection keeps the certificate it was handshaken with.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use std::sync::Arc;

use arc_swap::ArcSwap;
use prometheus::IntGaugeVec;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::config::tls::CertificateConfig;
use crate::config::KeyError;

/// A PEM chain or key is a few KiB; anything this big is the wrong file, and reading
/// it whole on every reload would be a needless cost.
pub const MAX_PEM_FILE: u64 = 1024 * 1024;

/// One loaded `[[certificate]]`.
struct Loaded {
    /// DNS names of the leaf (subjectAltName, else the common name), lower-cased.
    names: Vec<String>,
    /// The chain and signing key rustls serves.
    key: Arc<CertifiedKey>,
    /// The leaf's notAfter, Unix seconds.
    not_after: i64,
    /// The `certificate` label of the expiry metric: the first name, else the file name.
    label: String,
}

/// Every certificate of one config, in file order; the first is the default.
pub struct CertSet {
    certs: Vec<Loaded>,
}

impl CertSet {
    /// Reads every certificate and key; every file that fails is reported, with the
    /// key path of its `[[certificate]]`.
    pub fn load(
        configs: &[CertificateConfig],
        provider: &CryptoProvider,
    ) -> Result<CertSet, Vec<KeyError>> {
        let mut certs = Vec::with_capacity(configs.len());
        let mut errors = Vec::new();
        for (i, c) in configs.iter().enumerate() {
            match load_one(c, provider) {
                Ok(l) => certs.push(l),
                Err((field, message)) => errors.push(KeyError {
                    key: format!("certificate[{i}].{field}"),
                    message,
                }),
            }
        }
        if errors.is_empty() {
            Ok(CertSet { certs })
        } else {
            Err(errors)
        }
    }

    /// How many certificates the set holds.
    pub fn len(&self) -> usize {
        self.certs.len()
    }

    /// Whether the set is empty (no TLS configured).
    pub fn is_empty(&self) -> bool {
        self.certs.is_empty()
    }

    /// The names of each certificate, in file order (for logs and the reload answer).
    pub fn names(&self) -> Vec<&[String]> {
        self.certs.iter().map(|c| &c.names[..]).collect()
    }

    /// The certificate for `sni`: an exact name first, then a wildcard, then the
    /// default. Among equal matches, the first whose key the client can verify (so an
    /// ECDSA and an RSA certificate for one name can be served side by side).
    fn pick(&self, sni: Option<&str>, schemes: &[rustls::SignatureScheme]) -> Option<&Loaded> {
        if let Some(host) = sni.map(|h| h.trim_end_matches('.').to_ascii_lowercase()) {
            let exact = self.certs.iter().filter(|c| c.names.contains(&host));
            if let Some(c) = first_usable(exact, schemes) {
                return Some(c);
            }
            let wild = self
                .certs
                .iter()
                .filter(|c| c.names.iter().any(|n| wildcard_matches(n, &host)));
            if let Some(c) = first_usable(wild, schemes) {
                return Some(c);
            }
        }
        first_usable(self.certs.iter(), schemes)
    }

    /// The earliest notAfter per metric label (two certificates for one name, say
    /// ECDSA and RSA, report the one that expires first: that is the one to renew).
    fn expiries(&self) -> HashMap<&str, i64> {
        let mut out: HashMap<&str, i64> = HashMap::new();
        for c in &self.certs {
            let e = out.entry(&c.label).or_insert(c.not_after);
            *e = (*e).min(c.not_after);
        }
        out
    }
}

/// The first candidate the client can verify, else the first at all (rustls then
/// refuses the handshake with a clear alert rather than us guessing).
fn first_usable<'a>(
    candidates: impl Iterator<Item = &'a Loaded> + Clone,
    schemes: &[rustls::SignatureScheme],
) -> Option<&'a Loaded> {
    let mut rest = candidates.clone();
    let first = rest.next()?;
    if rest.next().is_none() {
        // One candidate, the common case: no need to ask its key.
        return Some(first);
    }
    let mut all = candidates;
    all.find(|c| c.key.key.choose_scheme(schemes).is_some())
        .or(Some(first))
}

/// `*.example.com` matches `shop.example.com`, not `example.com` nor `a.b.example.com`
/// (RFC 6125 §6.4.3: the wildcard covers one label).
fn wildcard_matches(pattern: &str, host: &str) -> bool {
    let Some(suffix) = pattern.strip_prefix("*.") else {
        return false;
    };
    match host.split_once('.') {
        Some((label, rest)) => !label.is_empty() && rest == suffix,
        None => false,
    }
}

/// Reads one certificate and its key; the error names the field (`cert` or `key`).
fn load_one(
    c: &CertificateConfig,
    provider: &CryptoProvider,
) -> Result<Loaded, (&'static str, String)> {
    let cert_pem = read_pem(&c.cert).map_err(|m| ("cert", m))?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| {
            (
                "cert",
                format!("{}: not a PEM certificate: {e}", c.cert.display()),
            )
        })?;
    if chain.is_empty() {
        return Err((
            "cert",
            format!("{}: no CERTIFICATE block", c.cert.display()),
        ));
    }
    let (names, not_after) = leaf_facts(&chain[0]).map_err(|m| {
        (
            "cert",
            format!("{}: cannot parse the certificate: {m}", c.cert.display()),
        )
    })?;
    let key_pem = read_pem(&c.key).map_err(|m| ("key", m))?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
        (
            "key",
            format!("{}: not a PEM private key: {e}", c.key.display()),
        )
    })?;
    let certified = CertifiedKey::from_der(chain, key, provider).map_err(|e| {
        (
            "key",
            format!(
                "{}: does not fit {}: {e}",
                c.key.display(),
                c.cert.display()
            ),
        )
    })?;
    let label = names.first().cloned().unwrap_or_else(|| {
        c.cert
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default()
    });
    Ok(Loaded {
        names,
        key: Arc::new(certified),
        not_after,
        label,
    })
}

fn read_pem(path: &Path) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut buf = Vec::new();
    file.take(MAX_PEM_FILE + 1)
        .read_to_end(&mut buf)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if buf.len() as u64 > MAX_PEM_FILE {
        return Err(format!(
            "{}: larger than {MAX_PEM_FILE} bytes; not a PEM certificate or key",
            path.display()
        ));
    }
    Ok(buf)
}

/// The leaf's DNS names and notAfter. Parsed with x509-parser: rustls checks the chain
/// only on the client side and exposes neither field.
fn leaf_facts(der: &CertificateDer<'_>) -> Result<(Vec<String>, i64), String> {
    use x509_parser::extensions::GeneralName;
    let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(|e| e.to_string())?;
    let mut names: Vec<String> = match cert.subject_alternative_name() {
        Ok(Some(san)) => san
            .value
            .general_names
            .iter()
            .filter_map(|n| match n {
                GeneralName::DNSName(d) => Some(d.to_ascii_lowercase()),
                _ => None,
            })
            .collect(),
        Ok(None) => Vec::new(),
        Err(e) => return Err(format!("subjectAltName: {e}")),
    };
    if names.is_empty() {
        // Old certificates carry the host only in the common name.
        names.extend(
            cert.subject()
                .iter_common_name()
                .filter_map(|cn| cn.as_str().ok())
                .map(|s| s.to_ascii_lowercase()),
        );
    }
    Ok((names, cert.validity().not_after.timestamp()))
}

/// The live certificate set, read by every handshake and replaced by reloads.
pub struct Certificates {
    current: ArcSwap<CertSet>,
    expiry: IntGaugeVec,
}

impl fmt::Debug for Certificates {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Certificates")
            .field("names", &self.current.load().names())
            .finish()
    }
}

impl Certificates {
    /// Starts with `set` and publishes its expiry times on `expiry`.
    pub fn new(set: CertSet, expiry: IntGaugeVec) -> Self {
        let me = Certificates {
            current: ArcSwap::from_pointee(CertSet { certs: Vec::new() }),
            expiry,
        };
        me.install(set);
        me
    }

    /// Makes `set` the one new handshakes get; connections already open keep theirs.
    pub fn install(&self, set: CertSet) {
        // Reset first, so a certificate removed from the config stops being reported.
        self.expiry.reset();
        for (label, not_after) in set.expiries() {
            self.expiry.with_label_values(&[label]).set(not_after);
        }
        self.current.store(Arc::new(set));
    }
}

impl ResolvesServerCert for Certificates {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let set = self.current.load();
        set.pick(hello.server_name(), hello.signature_schemes())
            .map(|c| c.key.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::wildcard_matches;

    #[test]
    fn a_wildcard_covers_exactly_one_label() {
        assert!(wildcard_matches("*.example.com", "shop.example.com"));
        assert!(!wildcard_matches("*.example.com", "example.com"));
        assert!(!wildcard_matches("*.example.com", "a.b.example.com"));
        assert!(!wildcard_matches("*.example.com", ".example.com"));
        assert!(!wildcard_matches("shop.example.com", "shop.example.com"));
    }
}
