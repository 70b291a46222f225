//! TLS at the edge: a test CA made here (rcgen), the real gateway on a TLS listener, a
//! real rustls client, and the shop's echo to see what the origin received.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode, Version};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, HandshakeKind, RootCertStore, SignatureScheme};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use common::*;

// === the test CA ===

/// A CA made for one test, and the certificates it signs.
struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    root: CertificateDer<'static>,
}

/// One issued certificate, as files and as DER.
struct Issued {
    der: CertificateDer<'static>,
    cert_pem: String,
    key_pem: String,
}

impl TestCa {
    fn new() -> TestCa {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "floodgate test CA");
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let root = params.self_signed(&key).unwrap().der().clone();
        TestCa {
            issuer: Issuer::new(params, key),
            root,
        }
    }

    /// An ECDSA P-256 leaf for `names`, valid until 1 January of `expires_year`.
    fn issue(&self, names: &[&str], expires_year: i32) -> Issued {
        let key = KeyPair::generate().unwrap();
        let mut params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        params.not_before = rcgen::date_time_ymd(2024, 1, 1);
        params.not_after = rcgen::date_time_ymd(expires_year, 1, 1);
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Issued {
            der: cert.der().clone(),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }
}

impl Issued {
    /// Writes `NAME.pem` and `NAME.key` into `dir`.
    fn write(&self, dir: &Path, name: &str) {
        std::fs::write(dir.join(format!("{name}.pem")), &self.cert_pem).unwrap();
        std::fs::write(dir.join(format!("{name}.key")), &self.key_pem).unwrap();
    }
}

/// Unix seconds of 1 January of `year`, 00:00 UTC.
fn new_year(year: i32) -> i64 {
    time::Date::from_calendar_date(year, time::Month::January, 1)
        .unwrap()
        .midnight()
        .assume_utc()
        .unix_timestamp()
}

// === the gateway ===

/// A gateway with a TLS listener, started from a config file in `dir` whose
/// `[[certificate]]` entries name `certs` (relative paths: `NAME.pem`, `NAME.key`).
struct TlsGateway {
    gw: floodgate::Gateway,
    shop: floodgate::shop::ShopHandle,
}

fn tls_config(shop: SocketAddr, certs: &[&str], server_extra: &str) -> String {
    tls_config_with(shop, certs, server_extra, "")
}

/// As [`tls_config`], with `more` (routes, rooms) added.
fn tls_config_with(shop: SocketAddr, certs: &[&str], server_extra: &str, more: &str) -> String {
    let mut extra = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\ntls_listen = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n{server_extra}\n"
    );
    for c in certs {
        extra.push_str(&format!(
            "\n[[certificate]]\ncert = \"{c}.pem\"\nkey = \"{c}.key\"\n"
        ));
    }
    extra.push_str(more);
    config_text(shop, &extra)
}

async fn start(dir: &Path, certs: &[&str], server_extra: &str) -> TlsGateway {
    start_with(dir, certs, server_extra, "").await
}

async fn start_with(dir: &Path, certs: &[&str], server_extra: &str, more: &str) -> TlsGateway {
    let shop = fast_shop().await;
    let config_file = dir.join("floodgate.toml");
    std::fs::write(
        &config_file,
        tls_config_with(shop.addr, certs, server_extra, more),
    )
    .unwrap();
    let config = floodgate::config::load(&config_file).expect("config loads");
    let gw = floodgate::Gateway::start(config)
        .await
        .expect("gateway starts");
    TlsGateway { gw, shop }
}

/// `POST /admin/reload`.
async fn reload(gw: &floodgate::Gateway) -> Answer {
    send(
        Request::post(format!("http://{}/admin/reload", gw.admin_addr.unwrap()))
            .header("content-type", "application/json")
            .body(Default::default())
            .unwrap(),
    )
    .await
}

// === the client ===

/// A client that trusts `ca`, offers `alpn`, and resumes nothing (a fresh config has its
/// own empty session store).
fn trusting(ca: &TestCa, alpn: &[&[u8]]) -> ClientConfig {
    let mut roots = RootCertStore::empty();
    roots.add(ca.root.clone()).unwrap();
    let mut c = ClientConfig::builder_with_provider(floodgate::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    c.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    c
}

/// A client that accepts any certificate, to look at which one is served for a name
/// that certificate does not cover.
fn inspecting() -> ClientConfig {
    ClientConfig::builder_with_provider(floodgate::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAnything))
        .with_no_client_auth()
}

#[derive(Debug)]
struct AcceptAnything;

impl ServerCertVerifier for AcceptAnything {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }
    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        floodgate::tls::provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Connects and handshakes, sending `sni` (a host name, or an IP for no SNI at all).
async fn connect(addr: SocketAddr, sni: &str, cfg: ClientConfig) -> TlsStream<TcpStream> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from(sni.to_string()).unwrap();
    TlsConnector::from(Arc::new(cfg))
        .connect(name, tcp)
        .await
        .unwrap_or_else(|e| panic!("handshake for {sni} failed: {e}"))
}

/// The leaf certificate the server presented.
fn served(tls: &TlsStream<TcpStream>) -> CertificateDer<'static> {
    tls.get_ref().1.peer_certificates().expect("a certificate")[0].clone()
}

/// The DNS names of a certificate.
fn names(der: &CertificateDer<'_>) -> Vec<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).unwrap();
    let san = cert.subject_alternative_name().unwrap().unwrap();
    san.value
        .general_names
        .iter()
        .map(|n| match n {
            x509_parser::extensions::GeneralName::DNSName(d) => d.to_string(),
            other => format!("{other:?}"),
        })
        .collect()
}

/// An HTTP connection over TLS: HTTP/2 when ALPN said `h2`, else HTTP/1.1.
enum Conn {
    H2(hyper::client::conn::http2::SendRequest<Empty<Bytes>>),
    H1(hyper::client::conn::http1::SendRequest<Empty<Bytes>>),
}

impl Conn {
    async fn over(tls: TlsStream<TcpStream>) -> Conn {
        let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
        let io = TokioIo::new(tls);
        if h2 {
            let (send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                .await
                .unwrap();
            tokio::spawn(conn);
            Conn::H2(send)
        } else {
            let (send, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
            tokio::spawn(conn);
            Conn::H1(send)
        }
    }

    /// `GET https://shop.test{path}`, read whole.
    async fn get(&mut self, path: &str) -> (Version, Answer) {
        let resp = match self {
            Conn::H2(s) => {
                let req = Request::get(format!("https://shop.test{path}"))
                    .body(Empty::new())
                    .unwrap();
                s.send_request(req).await
            }
            Conn::H1(s) => {
                let req = Request::get(path)
                    .header(http::header::HOST, "shop.test")
                    .body(Empty::new())
                    .unwrap();
                s.send_request(req).await
            }
        }
        .expect("response");
        let version = resp.version();
        let (parts, body) = resp.into_parts();
        let body = body.collect().await.expect("body").to_bytes();
        (
            version,
            Answer {
                status: parts.status,
                headers: parts.headers,
                body,
            },
        )
    }
}

/// A header the origin received, from the shop's echo.
fn echoed(a: &Answer, name: &str) -> Option<String> {
    a.json()["headers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p[0] == name)
        .map(|p| p[1].as_str().unwrap().to_string())
}

// === handshake and ALPN ===

#[tokio::test]
async fn a_browser_gets_http2_by_alpn_and_the_origin_is_told_https() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new();
    ca.issue(&["shop.test"], 2031).write(dir.path(), "shop");
    let t = start(dir.path(), &["shop"], "").await;

    let tls = connect(
        t.gw.tls_addr(),
        "shop.test",
        trusting(&ca, &[b"h2", b"http/1.1"]),
    )
    .await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let mut conn = Conn::over(tls).await;
    let (version, a) = conn.get("/__shop/echo").await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    assert_eq!(version, Version::HTTP_2);
    assert_eq!(echoed(&a, "x-forwarded-proto").as_deref(), Some("https"));

    // The cleartext listener of the same gateway still says http.
    let plain = get(t.gw.addr(), "/__shop/echo").await;
    assert_eq!(echoed(&plain, "x-forwarded-proto").as_deref(), Some("http"));
}

#[tokio::test]
async fn a_client_that_offers_only_http1_gets_http1_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new();
    ca.issue(&["shop.test"], 2031).write(dir.path(), "shop");
    let t = start(dir.path(), &["shop"], "").await;

    let tls = connect(t.gw.tls_addr(), "shop.test", trusting(&ca, &[b"http/1.1"])).await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    let mut conn = Conn::over(tls).await;
    for _ in 0..2 {
        // Twice on one connection: keep-alive works over TLS.
        let (version, a) = conn.get("/__shop/echo").await;
        assert_eq!(a.status, StatusCode::OK);
        assert_eq!(version, Version::HTTP_11);
        assert_eq!(echoed(&a, "x-forwarded-proto").as_deref(), Some("https"));
    }
}

#[tokio::test]
async fn a_waiting_room_pass_handed_out_over_tls_is_a_secure_cookie() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new();
    ca.issue(&["shop.test"], 2031).write(dir.path(), "shop");
    std::fs::write(
        dir.path().join("room.key"),
        "a test signing key of enough bytes\n",
    )
    .unwrap();
    let room = format!(
        "[[route]]\nname = \"shop\"\nupstream = \"shop\"\nwaiting_room = \"sale\"\n\n\
         [[waiting_room]]\nname = \"sale\"\nkey_file = \"{}\"\nactive_users = 100\nnew_users_per_minute = 6000\n\
         mode = \"passthrough\"\n",
        dir.path().join("room.key").display()
    );
    // Passthrough: every visitor gets a pass at once, so both answers carry one
    // whatever the admission pacing.
    let t = start_with(dir.path(), &["shop"], "", &room).await;
    let pass = |a: &Answer| {
        a.headers
            .get_all("set-cookie")
            .iter()
            .map(|v| v.to_str().unwrap().to_string())
            .find(|c| c.starts_with("fg_pass_sale="))
            .unwrap_or_else(|| panic!("no pass in {:?}", a.headers))
    };

    let tls = connect(t.gw.tls_addr(), "shop.test", trusting(&ca, &[b"http/1.1"])).await;
    let (_, over_tls) = Conn::over(tls).await.get("/").await;
    assert!(pass(&over_tls).contains("; Secure"), "{}", pass(&over_tls));
    let cleartext = get(t.gw.addr(), "/").await;
    assert!(!pass(&cleartext).contains("Secure"), "{}", pass(&cleartext));
}

#[tokio::test]
async fn a_route_with_https_redirect_sends_cleartext_requests_to_https_with_308() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new();
    ca.issue(&["shop.test"], 2031).write(dir.path(), "shop");
    let route = "[[route]]\nname = \"shop\"\nupstream = \"shop\"\nhttps_redirect = true\n";
    let t = start_with(
        dir.path(),
        &["shop"],
        "trusted_proxies = [\"10.0.0.0/8\"]",
        route,
    )
    .await;
    let cleartext = |method: http::Method, proto: Option<&str>| {
        let mut b = Request::builder()
            .method(method)
            .uri(format!("http://{}/__shop/echo?item=7", t.gw.addr()))
            .header(http::header::HOST, "shop.test:8080");
        if let Some(p) = proto {
            b = b.header("x-forwarded-proto", p);
        }
        b.body(Default::default()).unwrap()
    };

    for method in [http::Method::GET, http::Method::POST] {
        let a = send(cleartext(method.clone(), None)).await;
        assert_eq!(a.status, StatusCode::PERMANENT_REDIRECT, "{method}");
        assert_eq!(
            a.header("location"),
            Some("https://shop.test/__shop/echo?item=7")
        );
    }
    // An untrusted client cannot talk its way past the redirect.
    let a = send(cleartext(http::Method::GET, Some("https"))).await;
    assert_eq!(a.status, StatusCode::PERMANENT_REDIRECT);
    assert_eq!(
        t.shop.stats.path_count("/__shop/echo"),
        0,
        "the origin saw none of them"
    );

    let tls = connect(t.gw.tls_addr(), "shop.test", trusting(&ca, &[b"h2"])).await;
    let (_, a) = Conn::over(tls).await.get("/__shop/echo").await;
    assert_eq!(a.status, StatusCode::OK, "over TLS the route is served");
    assert_eq!(t.shop.stats.path_count("/__shop/echo"), 1);
}

// === SNI ===

#[tokio::test]
async fn sni_picks_the_certificate_whose_names_match_and_the_first_is_the_default() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new();
    ca.issue(&["portal.test"], 2031).write(dir.path(), "portal");
    ca.issue(&["shoes.test", "*.shoes.test"], 2032)
        .write(dir.path(), "shoes");
    let t = start(dir.path(), &["portal", "shoes"], "").await;
    let addr = t.gw.tls_addr();

    for (sni, want) in [
        ("portal.test", "portal.test"),
        ("shoes.test", "shoes.test"),
        ("www.shoes.test", "shoes.test"),
    ] {
        // A verifying client: the chain served for the name is valid for it.
        let tls = connect(addr, sni, trusting(&ca, &[b"h2"])).await;
        assert_eq!(names(&served(&tls))[0], want, "SNI {sni}");
    }
    // A name no certificate covers, and no SNI at all (an IP), get the first.
    for sni in ["other.test", "a.b.shoes.test", "127.0.0.1"] {
        let tls = connect(addr, sni, inspecting()).await;
        assert_eq!(names(&served(&tls)), ["portal.test"], "SNI {sni}");
    }
}

// === reload ===

#[tokio::test]
async fn a_reload_gives_new_handshakes_the_new_certificate_and_keeps_open_connections() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new();
    let old = ca.issue(&["shop.test"], 2031);
    old.write(dir.path(), "shop");
    let t = start(dir.path(), &["shop"], "").await;
    let addr = t.gw.tls_addr();

    let open = connect(addr, "shop.test", trusting(&ca, &[b"h2"])).await;
    assert_eq!(served(&open), old.der);
    let mut open = Conn::over(open).await;
    assert_eq!(open.get("/__shop/echo").await.1.status, StatusCode::OK);
    let m = metrics_text(&t.gw).await;
    assert_eq!(
        metric(
            &m,
            "floodgate_certificate_expiry_seconds{certificate=\"shop.test\"}"
        ),
        Some(new_year(2031) as f64)
    );

    let renewed = ca.issue(&["shop.test"], 2032);
    renewed.write(dir.path(), "shop");
    let r = reload(&t.gw).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert!(r.text().contains("1 certificates re-read"), "{}", r.text());

    // The connection opened before the reload is still served.
    let (_, a) = open.get("/__shop/echo").await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(echoed(&a, "x-forwarded-proto").as_deref(), Some("https"));
    // A new handshake gets the renewed certificate.
    let fresh = connect(addr, "shop.test", trusting(&ca, &[b"h2"])).await;
    assert_eq!(served(&fresh), renewed.der);
    let m = metrics_text(&t.gw).await;
    assert_eq!(
        metric(
            &m,
            "floodgate_certificate_expiry_seconds{certificate=\"shop.test\"}"
        ),
        Some(new_year(2032) as f64)
    );
}

#[tokio::test]
async fn a_bad_certificate_file_refuses_the_reload_and_the_old_certificate_stays() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new();
    let good = ca.issue(&["shop.test"], 2031);
    good.write(dir.path(), "shop");
    let t = start(dir.path(), &["shop"], "").await;
    let addr = t.gw.tls_addr();

    // Not PEM at all.
    std::fs::write(dir.path().join("shop.pem"), "this is not a certificate\n").unwrap();
    let r = reload(&t.gw).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text());
    assert!(r.text().contains("certificate[0].cert"), "{}", r.text());
    assert!(r.text().contains("no CERTIFICATE block"), "{}", r.text());
    let tls = connect(addr, "shop.test", trusting(&ca, &[b"h2"])).await;
    assert_eq!(served(&tls), good.der);

    // A valid certificate with somebody else's key.
    let other = ca.issue(&["shop.test"], 2032);
    std::fs::write(dir.path().join("shop.pem"), &other.cert_pem).unwrap();
    let r = reload(&t.gw).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text());
    assert!(r.text().contains("certificate[0].key"), "{}", r.text());
    assert!(r.text().contains("does not fit"), "{}", r.text());
    let tls = connect(addr, "shop.test", trusting(&ca, &[b"h2"])).await;
    assert_eq!(served(&tls), good.der);
    let mut conn = Conn::over(tls).await;
    assert_eq!(conn.get("/__shop/echo").await.1.status, StatusCode::OK);

    let m = metrics_text(&t.gw).await;
    assert_eq!(
        metric(&m, "floodgate_config_reloads_total{result=\"error\"}"),
        Some(2.0)
    );
    assert_eq!(
        metric(
            &m,
            "floodgate_certificate_expiry_seconds{certificate=\"shop.test\"}"
        ),
        Some(new_year(2031) as f64)
    );
}

#[tokio::test]
async fn a_gateway_with_a_missing_key_file_does_not_start_and_names_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new();
    ca.issue(&["shop.test"], 2031).write(dir.path(), "shop");
    std::fs::remove_file(dir.path().join("shop.key")).unwrap();
    let shop = fast_shop().await;
    let file = dir.path().join("floodgate.toml");
    std::fs::write(&file, tls_config(shop.addr, &["shop"], "")).unwrap();
    let config = floodgate::config::load(&file).unwrap();
    let err = match floodgate::Gateway::start(config).await {
        Ok(_) => panic!("started without its key"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("certificate[0].key"), "{err}");
    assert!(err.contains("shop.key"), "{err}");
}

#[test]
fn tls_config_errors_name_their_keys() {
    let base = "[[upstream]]\nname = \"shop\"\nservers = [\"127.0.0.1:1\"]\n[[route]]\nname = \"r\"\nupstream = \"shop\"\n";
    let errs = floodgate::config::parse(&format!(
        "[server]\ntls_listen = \"127.0.0.1:8443\"\n{base}"
    ))
    .unwrap_err();
    assert!(errs.iter().any(|e| e.key == "certificate"), "{errs:?}");

    let errs = floodgate::config::parse(&format!(
        "[server]\ntls_listen = [\"127.0.0.1:8443\", \"nope\"]\n{base}[[certificate]]\ncert = \"a.pem\"\n"
    ))
    .unwrap_err();
    let keys: Vec<&str> = errs.iter().map(|e| e.key.as_str()).collect();
    assert!(keys.contains(&"server.tls_listen[1]"), "{errs:?}");
    assert!(keys.contains(&"certificate[0].key"), "{errs:?}");

    let errs = floodgate::config::parse(&format!(
        "[server]\nlisten = \"127.0.0.1:8443\"\ntls_listen = \"127.0.0.1:8443\"\n{base}[[certificate]]\ncert = \"a.pem\"\nkey = \"a.key\"\n"
    ))
    .unwrap_err();
    assert!(
        errs.iter()
            .any(|e| e.key == "server.tls_listen" && e.message.contains("overlaps")),
        "{errs:?}"
    );
}

// === protocol versions, suites, resumption, timeouts ===

/// A ClientHello as bytes on the wire, offering `version` and `suites`.
fn client_hello(version: u16, suites: &[u16]) -> Vec<u8> {
    fn ext(out: &mut Vec<u8>, kind: u16, data: &[u8]) {
        out.extend(kind.to_be_bytes());
        out.extend((data.len() as u16).to_be_bytes());
        out.extend(data);
    }
    let mut body = version.to_be_bytes().to_vec();
    body.extend([7u8; 32]); // random
    body.push(0); // no session id
    body.extend(((suites.len() * 2) as u16).to_be_bytes());
    for s in suites {
        body.extend(s.to_be_bytes());
    }
    body.extend([1, 0]); // compression: null
    let mut exts = Vec::new();
    ext(&mut exts, 0x000a, &[0, 4, 0x00, 0x1d, 0x00, 0x17]); // groups: x25519, P-256
    ext(&mut exts, 0x000b, &[1, 0]); // point formats: uncompressed
    ext(&mut exts, 0x000d, &[0, 4, 0x04, 0x03, 0x08, 0x04]); // sigalgs
    body.extend((exts.len() as u16).to_be_bytes());
    body.extend(exts);
    let mut hs = vec![1]; // client_hello
    hs.extend(&(body.len() as u32).to_be_bytes()[1..]);
    hs.extend(body);
    let mut record = vec![0x16, 0x03, 0x01];
    record.extend((hs.len() as u16).to_be_bytes());
    record.extend(hs);
    record
}

/// Sends `hello` and returns the first record's content type and first two bytes.
async fn first_answer(addr: SocketAddr, hello: &[u8]) -> (u8, [u8; 2]) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(hello).await.unwrap();
    let mut head = [0u8; 7];
    tokio::time::timeout(Duration::from_secs(10), s.read_exact(&mut head))
        .await
        .expect("an answer")
        .expect("a record");
    (head[0], [head[5], head[6]])
}

const ALERT: u8 = 0x15;
const HANDSHAKE: u8 = 0x16;
const FATAL_PROTOCOL_VERSION: [u8; 2] = [2, 70];
const FATAL_HANDSHAKE_FAILURE: [u8; 2] = [2, 40];

#[tokio::test]
async fn tls_1_1_and_cbc_only_clients_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new();
    ca.issue(&["shop.test"], 2031).write(dir.path(), "shop");
    let t = start(dir.path(), &["shop"], "").await;
    let addr = t.gw.tls_addr();
    const ECDHE_ECDSA_AES128_GCM: u16 = 0xc02b;
    const ECDHE_ECDSA_AES128_CBC_SHA: u16 = 0xc009;
    const ECDHE_RSA_AES128_CBC_SHA: u16 = 0xc013;

    // The same hello, as TLS 1.2 with an AEAD suite, is answered by a ServerHello: the
    // refusals below are about the version and the suites, not a malformed hello.
    let (kind, body) = first_answer(addr, &client_hello(0x0303, &[ECDHE_ECDSA_AES128_GCM])).await;
    assert_eq!((kind, body[0]), (HANDSHAKE, 2), "a ServerHello");

    let tls11 = client_hello(
        0x0302,
        &[ECDHE_ECDSA_AES128_CBC_SHA, ECDHE_RSA_AES128_CBC_SHA],
    );
    assert_eq!(
        first_answer(addr, &tls11).await,
        (ALERT, FATAL_PROTOCOL_VERSION)
    );
    let cbc = client_hello(
        0x0303,
        &[ECDHE_ECDSA_AES128_CBC_SHA, ECDHE_RSA_AES128_CBC_SHA],
    );
    assert_eq!(
        first_answer(addr, &cbc).await,
        (ALERT, FATAL_HANDSHAKE_FAILURE)
    );
    // Counted in the server's worker thread, just after the alert went out.
    let failed = || async {
        let m = metrics_text(&t.gw).await;
        metric(&m, "floodgate_tls_handshakes_total{result=\"failed\"}") >= Some(2.0)
    };
    eventually(
        "two failed handshakes counted",
        Duration::from_secs(5),
        failed,
    )
    .await;
}

#[tokio::test]
async fn a_returning_client_resumes_its_session_with_tls_1_3_and_1_2() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new();
    ca.issue(&["shop.test"], 2031).write(dir.path(), "shop");
    let t = start(dir.path(), &["shop"], "").await;
    let addr = t.gw.tls_addr();

    for version in [&rustls::version::TLS13, &rustls::version::TLS12] {
        let mut roots = RootCertStore::empty();
        roots.add(ca.root.clone()).unwrap();
        let mut cfg = ClientConfig::builder_with_provider(floodgate::tls::provider())
            .with_protocol_versions(&[version])
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        cfg.alpn_protocols = vec![b"h2".to_vec()];
        let first = connect(addr, "shop.test", cfg.clone()).await;
        assert_eq!(
            first.get_ref().1.handshake_kind(),
            Some(HandshakeKind::Full)
        );
        // A request, so the TLS 1.3 tickets sent after the handshake are read.
        let mut conn = Conn::over(first).await;
        assert_eq!(conn.get("/__shop/echo").await.1.status, StatusCode::OK);
        let again = connect(addr, "shop.test", cfg).await;
        assert_eq!(
            again.get_ref().1.handshake_kind(),
            Some(HandshakeKind::Resumed),
            "{version:?}"
        );
    }
    // The server counts a handshake in its worker thread, a moment after the client
    // has seen it finish.
    let resumed = || async {
        let m = metrics_text(&t.gw).await;
        metric(&m, "floodgate_tls_handshakes_total{result=\"resumed\"}") == Some(2.0)
    };
    eventually(
        "two resumed handshakes counted",
        Duration::from_secs(5),
        resumed,
    )
    .await;
}

#[tokio::test]
async fn a_client_that_never_finishes_its_handshake_is_closed_after_the_header_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new();
    ca.issue(&["shop.test"], 2031).write(dir.path(), "shop");
    let t = start(dir.path(), &["shop"], "header_read_timeout = \"1s\"").await;

    let mut silent = TcpStream::connect(t.gw.tls_addr()).await.unwrap();
    // Half a ClientHello, then nothing.
    let hello = client_hello(0x0303, &[0xc02b]);
    silent.write_all(&hello[..20]).await.unwrap();
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(30), silent.read(&mut buf))
        .await
        .expect("closed within the deadline")
        .unwrap_or(0);
    assert_eq!(n, 0, "closed without an answer");
    let timed_out = || async {
        let m = metrics_text(&t.gw).await;
        metric(&m, "floodgate_tls_handshakes_total{result=\"timeout\"}") == Some(1.0)
    };
    eventually(
        "the timed-out handshake counted",
        Duration::from_secs(5),
        timed_out,
    )
    .await;
}
