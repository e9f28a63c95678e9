//! TLS on the wire, against real in-process TLS servers: a private CA from
//! `tls_ca` (and the system roots alone refusing it), client certificates
//! checked in the handshake (`tls_client_auth`,
//! `self_signed_tls_client_auth`) and refused, an HTTP CONNECT proxy, and
//! the private key kept out of `Debug` and errors.

#![cfg(feature = "oauth2")]

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use authmux::{Config, ErrorKind, ExposeSecret as _, Registry};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::WebPkiClientVerifier;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

const TOKEN_RESPONSE: &str = r#"{"access_token":"tok-1","token_type":"Bearer","expires_in":3600}"#;

/// A scratch directory, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("authmux-tls-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("scratch dir");
        Self(dir)
    }

    /// Writes `text` to `name` and returns its path, for `{ file = … }`.
    fn write(&self, name: &str, text: &str) -> String {
        let path = self.0.join(name);
        std::fs::write(&path, text).expect("write");
        path.display().to_string()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A certificate authority made for one test.
struct Ca {
    issuer: Issuer<'static, KeyPair>,
    certificate: CertificateDer<'static>,
    pem: String,
}

impl Ca {
    fn new(name: &str) -> Self {
        let key = KeyPair::generate().expect("CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let certificate = params.self_signed(&key).expect("CA certificate");
        Self {
            pem: certificate.pem(),
            certificate: certificate.der().clone(),
            issuer: Issuer::new(params, key),
        }
    }

    /// A leaf certificate and its key, PEM: for 127.0.0.1, or a client's.
    fn leaf(&self, client: bool) -> Leaf {
        Leaf::make(client, Some(&self.issuer))
    }
}

/// A certificate and its private key.
struct Leaf {
    certificate: CertificateDer<'static>,
    certificate_pem: String,
    key_pem: String,
    key_der: Vec<u8>,
}

impl Leaf {
    fn make(client: bool, issuer: Option<&Issuer<'static, KeyPair>>) -> Self {
        let key = KeyPair::generate().expect("key");
        let names = if client {
            Vec::new()
        } else {
            vec!["127.0.0.1".to_owned()]
        };
        let mut params = CertificateParams::new(names).expect("params");
        if client {
            params
                .distinguished_name
                .push(DnType::CommonName, "payments");
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        }
        let certificate = match issuer {
            Some(issuer) => params.signed_by(&key, issuer),
            None => params.self_signed(&key),
        }
        .expect("certificate");
        Self {
            certificate_pem: certificate.pem(),
            certificate: certificate.der().clone(),
            key_pem: key.serialize_pem(),
            key_der: key.serialize_der(),
        }
    }

    fn self_signed_client() -> Self {
        Self::make(true, None)
    }

    /// The chain and the key in one PEM, as `tls_client_certificate` takes it.
    fn combined_pem(&self) -> String {
        format!("{}{}", self.certificate_pem, self.key_pem)
    }
}

/// What a server or proxy saw: one entry per request.
type Seen = Arc<Mutex<Vec<String>>>;

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// A TLS token endpoint on loopback serving `server`'s certificate and,
/// with `clients_from`, requiring a client certificate from those roots.
async fn token_endpoint(server: &Leaf, clients_from: &[CertificateDer<'static>]) -> (u16, Seen) {
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("protocol versions");
    let builder = if clients_from.is_empty() {
        builder.with_no_client_auth()
    } else {
        let mut roots = rustls::RootCertStore::empty();
        for root in clients_from {
            roots.add(root.clone()).expect("client root");
        }
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
            .build()
            .expect("client verifier");
        builder.with_client_cert_verifier(verifier)
    };
    let config = builder
        .with_single_cert(
            vec![server.certificate.clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(server.key_der.clone())),
        )
        .expect("server config");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("address").port();
    let seen = Seen::default();
    let record = seen.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            let record = record.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(stream).await else {
                    return;
                };
                let Some(request) = read_request(&mut tls).await else {
                    return;
                };
                record.lock().expect("lock").push(request);
                let response = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{TOKEN_RESPONSE}",
                    TOKEN_RESPONSE.len()
                );
                let _ = tls.write_all(response.as_bytes()).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    (port, seen)
}

/// Reads one HTTP/1.1 request, head and body, as text.
async fn read_request(stream: &mut (impl tokio::io::AsyncRead + Unpin)) -> Option<String> {
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let read = stream.read(&mut chunk).await.ok()?;
        if read == 0 {
            return None;
        }
        buffer.extend_from_slice(&chunk[..read]);
        let text = String::from_utf8_lossy(&buffer).into_owned();
        if let Some(end) = text.find("\r\n\r\n") {
            let length = text[..end]
                .lines()
                .find_map(|line| {
                    let (name, value) = line.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse::<usize>().ok())?
                })
                .unwrap_or(0);
            if buffer.len() >= end + 4 + length {
                return Some(text);
            }
        }
    }
}

/// An HTTP CONNECT proxy on loopback that records each request line.
async fn connect_proxy() -> (u16, Seen) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("address").port();
    let seen = Seen::default();
    let record = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            let record = record.clone();
            tokio::spawn(async move {
                let Some(request) = read_request(&mut client).await else {
                    return;
                };
                let line = request.lines().next().unwrap_or_default().to_owned();
                record.lock().expect("lock").push(line.clone());
                let Some(target) = line
                    .strip_prefix("CONNECT ")
                    .and_then(|rest| rest.split(' ').next())
                else {
                    return;
                };
                let Ok(mut upstream) = TcpStream::connect(target).await else {
                    return;
                };
                let _ = client
                    .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                    .await;
                let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
            });
        }
    });
    (port, seen)
}

/// A registry with one client, `bank`, of `provider = "oauth2"`.
fn registry(port: u16, extra: &str) -> Result<Registry, String> {
    let toml = format!(
        r#"
        [clients.bank]
        provider = "oauth2"
        token_url = "https://127.0.0.1:{port}/token"
        client_id = "payments"
        max_attempts = 1
        {extra}
        "#
    );
    let config = Config::from_toml_str(&toml).map_err(|error| error.to_string())?;
    Registry::from_config(&config).map_err(|error| error.to_string())
}

/// The body of a recorded request.
fn body(request: &str) -> &str {
    request.split_once("\r\n\r\n").map_or("", |(_, body)| body)
}

#[tokio::test]
async fn a_private_ca_from_tls_ca_is_trusted_and_the_system_roots_alone_refuse_it() {
    let scratch = Scratch::new("ca");
    let ca = Ca::new("authmux private CA");
    let (port, seen) = token_endpoint(&ca.leaf(false), &[]).await;
    let ca_file = scratch.write("ca.pem", &ca.pem);

    let trusted = registry(
        port,
        &format!("client_secret = \"s\"\ntls_ca = {{ file = {ca_file:?} }}"),
    )
    .expect("valid");
    let token = trusted.token("bank").await.expect("a token");
    assert_eq!(token.secret().expose_secret(), "tok-1");

    // Instead of the system roots: still trusted.
    let only = registry(
        port,
        &format!("client_secret = \"s\"\ntls_ca = {{ file = {ca_file:?} }}\ntls_ca_only = true"),
    )
    .expect("valid");
    only.token("bank").await.expect("a token");
    assert_eq!(seen.lock().expect("lock").len(), 2);

    let untrusted = registry(port, "client_secret = \"s\"").expect("valid");
    let error = untrusted.token("bank").await.expect_err("untrusted");
    assert_eq!(error.kind(), ErrorKind::Transport, "{error}");
    assert!(error.to_string().contains("TLS error"), "{error}");
    assert_eq!(seen.lock().expect("lock").len(), 2, "nothing was sent");
}

#[tokio::test]
async fn tls_client_auth_presents_the_certificate_and_sends_only_the_client_id() {
    let scratch = Scratch::new("mtls");
    let ca = Ca::new("authmux server CA");
    let client_ca = Ca::new("authmux client CA");
    let client = client_ca.leaf(true);
    let (port, seen) = token_endpoint(&ca.leaf(false), &[client_ca.certificate.clone()]).await;
    let ca_file = scratch.write("ca.pem", &ca.pem);
    let combined = scratch.write("client.pem", &client.combined_pem());

    let registry_ = registry(
        port,
        &format!(
            "client_auth = \"tls_client_auth\"\nscopes = [\"payments\"]\n\
             tls_ca = {{ file = {ca_file:?} }}\ntls_client_certificate = {{ file = {combined:?} }}"
        ),
    )
    .expect("valid");
    registry_.token("bank").await.expect("a token");
    let requests = seen.lock().expect("lock").clone();
    assert_eq!(requests.len(), 1);
    let mut fields: Vec<(String, String)> = form_urlencoded_pairs(body(&requests[0]));
    fields.sort();
    assert_eq!(
        fields,
        [
            ("client_id".to_owned(), "payments".to_owned()),
            ("grant_type".to_owned(), "client_credentials".to_owned()),
            ("scope".to_owned(), "payments".to_owned()),
        ]
    );
    assert!(
        !requests[0].to_ascii_lowercase().contains("authorization:"),
        "{}",
        requests[0]
    );

    // The key apart from the certificate.
    let certificate = scratch.write("client.crt", &client.certificate_pem);
    let key = scratch.write("client.key", &client.key_pem);
    let apart = registry(
        port,
        &format!(
            "client_auth = \"tls_client_auth\"\ntls_ca = {{ file = {ca_file:?} }}\n\
             tls_client_certificate = {{ file = {certificate:?} }}\ntls_client_key = {{ file = {key:?} }}"
        ),
    )
    .expect("valid");
    apart.token("bank").await.expect("a token");
    let requests = seen.lock().expect("lock").clone();
    let mut fields = form_urlencoded_pairs(body(&requests[1]));
    fields.sort();
    assert_eq!(
        fields,
        [
            ("client_id".to_owned(), "payments".to_owned()),
            ("grant_type".to_owned(), "client_credentials".to_owned()),
        ]
    );
}

#[tokio::test]
async fn self_signed_tls_client_auth_presents_the_registered_certificate() {
    let scratch = Scratch::new("self-signed");
    let ca = Ca::new("authmux server CA");
    let client = Leaf::self_signed_client();
    let (port, seen) = token_endpoint(&ca.leaf(false), &[client.certificate.clone()]).await;
    let ca_file = scratch.write("ca.pem", &ca.pem);
    let combined = scratch.write("client.pem", &client.combined_pem());
    let registry_ = registry(
        port,
        &format!(
            "client_auth = \"self_signed_tls_client_auth\"\ntls_ca = {{ file = {ca_file:?} }}\n\
             tls_client_certificate = {{ file = {combined:?} }}"
        ),
    )
    .expect("valid");
    registry_.token("bank").await.expect("a token");
    let requests = seen.lock().expect("lock").clone();
    assert_eq!(
        body(&requests[0]),
        "grant_type=client_credentials&client_id=payments"
    );
}

#[tokio::test]
async fn a_missing_or_other_certificate_is_refused_in_the_handshake() {
    let scratch = Scratch::new("refused");
    let ca = Ca::new("authmux server CA");
    let client_ca = Ca::new("authmux client CA");
    let (port, seen) = token_endpoint(&ca.leaf(false), &[client_ca.certificate.clone()]).await;
    let ca_file = scratch.write("ca.pem", &ca.pem);

    // No certificate: a secret only.
    let without = registry(
        port,
        &format!("client_secret = \"s\"\ntls_ca = {{ file = {ca_file:?} }}"),
    )
    .expect("valid");
    let error = without.token("bank").await.expect_err("refused");
    assert_eq!(error.kind(), ErrorKind::Refused, "{error}");
    assert!(
        error.to_string().contains("TLS alert certificate_required"),
        "{error}"
    );
    assert!(!error.is_transient(), "{error}");

    // A certificate from another CA.
    let other = Ca::new("someone else").leaf(true);
    let combined = scratch.write("other.pem", &other.combined_pem());
    let wrong = registry(
        port,
        &format!(
            "client_auth = \"tls_client_auth\"\ntls_ca = {{ file = {ca_file:?} }}\n\
             tls_client_certificate = {{ file = {combined:?} }}"
        ),
    )
    .expect("valid");
    let error = wrong.token("bank").await.expect_err("refused");
    assert_eq!(error.kind(), ErrorKind::Refused, "{error}");
    assert!(error.to_string().contains("TLS alert "), "{error}");
    assert!(seen.lock().expect("lock").is_empty());
}

#[tokio::test]
async fn a_configured_proxy_sees_the_token_request() {
    let scratch = Scratch::new("proxy");
    let ca = Ca::new("authmux private CA");
    let (port, seen) = token_endpoint(&ca.leaf(false), &[]).await;
    let (proxy_port, tunnelled) = connect_proxy().await;
    let ca_file = scratch.write("ca.pem", &ca.pem);
    let registry_ = registry(
        port,
        &format!(
            "client_secret = \"s\"\ntls_ca = {{ file = {ca_file:?} }}\n\
             proxy = \"http://127.0.0.1:{proxy_port}\""
        ),
    )
    .expect("valid");
    registry_
        .token("bank")
        .await
        .expect("a token through the proxy");
    assert_eq!(
        *tunnelled.lock().expect("lock"),
        [format!("CONNECT 127.0.0.1:{port} HTTP/1.1")]
    );
    assert_eq!(seen.lock().expect("lock").len(), 1);
}

#[tokio::test]
async fn the_private_key_is_never_in_debug_or_errors() {
    let ca = Ca::new("authmux client CA");
    let client = ca.leaf(true);
    let key_body: String = client
        .key_pem
        .lines()
        .filter(|line| !line.starts_with("-----"))
        .collect();
    let marker = &key_body[..32];
    let inline = format!("{:?}", client.combined_pem());
    let config = Config::from_toml_str(&format!(
        r#"
        [defaults]
        tls_client_certificate = {inline}

        [clients.bank]
        provider = "oauth2"
        token_url = "https://127.0.0.1:1/token"
        client_id = "payments"
        client_auth = "tls_client_auth"
        "#
    ))
    .expect("valid");
    assert!(!format!("{config:?}").contains(marker));
    let registry_ = Registry::from_config(&config).expect("valid");
    assert!(!format!("{registry_:?}").contains(marker));
    let http =
        authmux::core::wire::HttpClient::with_config(config.defaults.http_config().expect("valid"))
            .expect("a client");
    assert!(http.has_client_certificate());
    assert!(!format!("{http:?}").contains(marker));
    assert!(!format!("{:?}", config.defaults.http_config()).contains(marker));

    // A key that does not match its certificate: the error says so
    // without quoting either.
    let other = ca.leaf(true);
    let other_marker: String = other
        .key_pem
        .lines()
        .filter(|line| !line.starts_with("-----"))
        .collect::<String>()[..32]
        .to_owned();
    let mismatched = format!(
        "{:?}",
        format!("{}{}", client.certificate_pem, other.key_pem)
    );
    let config = Config::from_toml_str(&format!(
        r#"
        [clients.bank]
        provider = "oauth2"
        token_url = "https://127.0.0.1:1/token"
        client_id = "payments"
        client_auth = "tls_client_auth"
        tls_client_certificate = {mismatched}
        "#
    ))
    .expect("valid");
    let error = Registry::from_config(&config)
        .expect_err("mismatched")
        .to_string();
    assert!(!error.contains(&other_marker), "{error}");
    assert_eq!(
        error,
        "clients.bank.tls_client_certificate: its private key is not the certificate's"
    );
}

/// The fields of a form body, decoded.
fn form_urlencoded_pairs(body: &str) -> Vec<(String, String)> {
    body.split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            (name.to_owned(), value.replace('+', " "))
        })
        .collect()
}
