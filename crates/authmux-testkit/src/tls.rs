//! TLS for tests: certificates made on the spot, a TLS token endpoint that
//! can require a client certificate, and an HTTP `CONNECT` proxy, all on
//! loopback.
//!
//! ```
//! use authmux_testkit::tls::{TestCa, TestCertificate, TlsTokenEndpoint};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let server_ca = TestCa::new("server CA");
//! let client = TestCertificate::self_signed_client("payments");
//! // Requires `client`'s certificate; trust `server_ca.pem()` with `tls_ca`.
//! let endpoint =
//!     TlsTokenEndpoint::start(&server_ca.server_certificate(), &[client.certificate().clone()]).await;
//! assert!(endpoint.token_url().starts_with("https://127.0.0.1:"));
//! # }
//! ```

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
};
pub use rustls::pki_types::CertificateDer;
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::WebPkiClientVerifier;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// What [`TlsTokenEndpoint`] answers every request it reads.
pub const TLS_TOKEN_RESPONSE: &str =
    r#"{"access_token":"tls-token-1","token_type":"Bearer","expires_in":3600}"#;

/// A certificate authority made for one test.
pub struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    certificate: CertificateDer<'static>,
    pem: String,
}

impl TestCa {
    /// A CA whose common name is `name`.
    pub fn new(name: &str) -> Self {
        let key = KeyPair::generate().expect("a CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let certificate = params.self_signed(&key).expect("the CA certificate");
        Self {
            pem: certificate.pem(),
            certificate: certificate.der().clone(),
            issuer: Issuer::new(params, key),
        }
    }

    /// The CA certificate, PEM: what `tls_ca` takes.
    pub fn pem(&self) -> &str {
        &self.pem
    }

    /// The CA certificate, DER: what a server trusts client certificates by.
    pub fn certificate(&self) -> &CertificateDer<'static> {
        &self.certificate
    }

    /// A server certificate for `127.0.0.1`, signed by this CA.
    pub fn server_certificate(&self) -> TestCertificate {
        TestCertificate::make(None, Some(&self.issuer))
    }

    /// A client certificate (extended key usage `clientAuth`) whose common
    /// name is `name`, signed by this CA.
    pub fn client_certificate(&self, name: &str) -> TestCertificate {
        TestCertificate::make(Some(name), Some(&self.issuer))
    }
}

impl fmt::Debug for TestCa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TestCa").finish_non_exhaustive()
    }
}

/// A certificate and its private key. `Debug` leaves the key out.
pub struct TestCertificate {
    certificate: CertificateDer<'static>,
    certificate_pem: String,
    key_pem: String,
    key_der: Vec<u8>,
}

impl TestCertificate {
    /// A self-signed client certificate whose common name is `name`, as
    /// `self_signed_tls_client_auth` registers one.
    pub fn self_signed_client(name: &str) -> Self {
        Self::make(Some(name), None)
    }

    /// A client certificate named `client`, or a server one for
    /// `127.0.0.1`; signed by `issuer`, else by itself.
    fn make(client: Option<&str>, issuer: Option<&Issuer<'static, KeyPair>>) -> Self {
        let key = KeyPair::generate().expect("a key");
        let names = match client {
            Some(_) => Vec::new(),
            None => vec!["127.0.0.1".to_owned()],
        };
        let mut params = CertificateParams::new(names).expect("certificate params");
        if let Some(name) = client {
            params.distinguished_name.push(DnType::CommonName, name);
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        }
        let certificate = match issuer {
            Some(issuer) => params.signed_by(&key, issuer),
            None => params.self_signed(&key),
        }
        .expect("the certificate");
        Self {
            certificate_pem: certificate.pem(),
            certificate: certificate.der().clone(),
            key_pem: key.serialize_pem(),
            key_der: key.serialize_der(),
        }
    }

    /// The certificate, DER.
    pub fn certificate(&self) -> &CertificateDer<'static> {
        &self.certificate
    }

    /// The certificate, PEM.
    pub fn certificate_pem(&self) -> &str {
        &self.certificate_pem
    }

    /// The private key, PKCS#8 PEM.
    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    /// The certificate and its key in one PEM, as `tls_client_certificate`
    /// takes them.
    pub fn combined_pem(&self) -> String {
        format!("{}{}", self.certificate_pem, self.key_pem)
    }
}

impl fmt::Debug for TestCertificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TestCertificate").finish_non_exhaustive()
    }
}

/// Requests recorded by a server or proxy, one entry per request.
type Seen = Arc<Mutex<Vec<String>>>;

/// A loopback listener, its connections' record, and the task accepting
/// them, stopped when dropped.
#[derive(Debug)]
struct Listening {
    port: u16,
    seen: Seen,
    task: JoinHandle<()>,
}

impl Listening {
    fn requests(&self) -> Vec<String> {
        self.seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl Drop for Listening {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// A TLS token endpoint on loopback: answers every request it reads with
/// [`TLS_TOKEN_RESPONSE`] and records it, head and body. Requiring a client
/// certificate, it refuses one that none of its roots issued (or the
/// absence of one) in the handshake, and then reads nothing. Stops when
/// dropped.
#[derive(Debug)]
pub struct TlsTokenEndpoint {
    listening: Listening,
}

impl TlsTokenEndpoint {
    /// Serves `server` (see [`TestCa::server_certificate`]); with
    /// `client_roots`, requires a client certificate issued by one of them
    /// (a self-signed certificate is its own root).
    pub async fn start(server: &TestCertificate, client_roots: &[CertificateDer<'static>]) -> Self {
        let listening = serve(server, client_roots, Client::Required, |_, _| {
            ("200 OK", String::new(), TLS_TOKEN_RESPONSE.to_owned())
        })
        .await;
        Self { listening }
    }

    /// Like [`start`](Self::start), but each token is a JWT bound to the
    /// client certificate it was requested with, as RFC 8705 §3.1 says:
    /// its `cnf` claim carries the certificate's `x5t#S256` thumbprint
    /// (and `jti` counts the tokens issued); a request with a `DPoP` header
    /// gets a token of type `DPoP`. The JWT is not signed: the
    /// [`TlsResourceServer`] reads its claims as a server that introspects
    /// would.
    pub async fn start_binding(
        server: &TestCertificate,
        client_roots: &[CertificateDer<'static>],
    ) -> Self {
        let issued = Arc::new(AtomicU64::new(0));
        let listening = serve(
            server,
            client_roots,
            Client::Required,
            move |request, presented| {
                let jti = issued.fetch_add(1, Ordering::Relaxed) + 1;
                let mut claims = serde_json::json!({
                    "iss": "https://127.0.0.1",
                    "sub": "payments",
                    "exp": unix_now() + 3600,
                    "jti": jti.to_string(),
                });
                if let Some(thumbprint) = presented {
                    claims["cnf"] = serde_json::json!({ "x5t#S256": thumbprint });
                }
                // A request with a DPoP proof gets a DPoP token (its proof is
                // not checked here).
                let dpop = header(request, "dpop").is_some();
                let body = serde_json::json!({
                    "access_token": unsigned_jwt(&claims),
                    "token_type": if dpop { "DPoP" } else { "Bearer" },
                    "expires_in": 3600,
                });
                ("200 OK", String::new(), body.to_string())
            },
        )
        .await;
        Self { listening }
    }

    /// The loopback port.
    pub fn port(&self) -> u16 {
        self.listening.port
    }

    /// `https://127.0.0.1:{port}/token`.
    pub fn token_url(&self) -> String {
        format!("https://127.0.0.1:{}/token", self.port())
    }

    /// Every request read so far, head and body, as text.
    pub fn requests(&self) -> Vec<String> {
        self.listening.requests()
    }
}

/// What a TLS test server answers a request (its text, and the
/// `x5t#S256` of the client certificate presented): a status line's code
/// and reason, extra header lines (each ending in `\r\n`), and a JSON body.
type Answer = (&'static str, String, String);

/// Whether a server with client roots requires a client certificate.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Client {
    Required,
    Optional,
}

/// Serves `server` over TLS on loopback, asking for a client certificate
/// from one of `client_roots` if there are any (and refusing its absence
/// if `client` says so), and answers each request (one per connection)
/// with `respond`, recording it.
async fn serve<R>(
    server: &TestCertificate,
    client_roots: &[CertificateDer<'static>],
    client: Client,
    respond: R,
) -> Listening
where
    R: Fn(&str, Option<&str>) -> Answer + Send + Sync + 'static,
{
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("TLS versions");
    let builder = if client_roots.is_empty() {
        builder.with_no_client_auth()
    } else {
        let mut roots = rustls::RootCertStore::empty();
        for root in client_roots {
            roots.add(root.clone()).expect("a client root");
        }
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider());
        let verifier = match client {
            Client::Required => verifier,
            Client::Optional => verifier.allow_unauthenticated(),
        };
        builder.with_client_cert_verifier(verifier.build().expect("the client verifier"))
    };
    let config = builder
        .with_single_cert(
            vec![server.certificate.clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(server.key_der.clone())),
        )
        .expect("the server config");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let respond = Arc::new(respond);
    listen(move |stream, record| {
        let acceptor = acceptor.clone();
        let respond = Arc::clone(&respond);
        async move {
            let Ok(mut tls) = acceptor.accept(stream).await else {
                return;
            };
            let presented = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(<[_]>::first)
                .map(|leaf| thumbprint(leaf));
            let Some(request) = read_request(&mut tls).await else {
                return;
            };
            let (status, headers, body) = respond(&request, presented.as_deref());
            record
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(request);
            let response = format!(
                "HTTP/1.1 {status}\r\ncontent-type: application/json\r\n{headers}content-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = tls.write_all(response.as_bytes()).await;
            let _ = tls.shutdown().await;
        }
    })
    .await
}

/// An API on loopback that checks certificate-bound tokens as an RFC 8705
/// §3 resource server does: a request's `Authorization` (`Bearer` or
/// `DPoP`) JWT must
/// carry in `cnf.x5t#S256` the thumbprint of the client certificate the
/// request came with. It answers 200 `{"ok":true}` if so, and otherwise
/// 401 with `WWW-Authenticate: Bearer error="invalid_token"`. It accepts
/// a client certificate from `client_roots` but requires none, so that a
/// request without one is refused by the check, not the handshake. Stops
/// when dropped.
#[derive(Debug)]
pub struct TlsResourceServer {
    listening: Listening,
    answers: Seen,
}

impl TlsResourceServer {
    /// Serves `server` on loopback; see the type's documentation.
    pub async fn start(server: &TestCertificate, client_roots: &[CertificateDer<'static>]) -> Self {
        let answers = Seen::default();
        let record = Arc::clone(&answers);
        let listening = serve(server, client_roots, Client::Optional, move |request, presented| {
            let bound = access_token(request).and_then(|jwt| bound_thumbprint(&jwt));
            let accepted = bound.is_some() && bound.as_deref() == presented;
            let dpop = if header(request, "dpop").is_some() { " dpop" } else { "" };
            record.lock().unwrap_or_else(PoisonError::into_inner).push(format!(
                "{} bound={} presented={}{dpop}",
                if accepted { 200 } else { 401 },
                bound.as_deref().unwrap_or("none"),
                presented.unwrap_or("none"),
            ));
            if accepted {
                ("200 OK", String::new(), r#"{"ok":true}"#.to_owned())
            } else {
                (
                    "401 Unauthorized",
                    "www-authenticate: Bearer error=\"invalid_token\", error_description=\"the token is not bound to the certificate presented\"\r\n".to_owned(),
                    r#"{"ok":false}"#.to_owned(),
                )
            }
        })
        .await;
        Self { listening, answers }
    }

    /// `https://127.0.0.1:{port}/things`.
    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}/things", self.listening.port)
    }

    /// Each request's answer, in order: `200 bound=<x5t#S256 of the
    /// token's cnf> presented=<x5t#S256 of the client certificate>`, or
    /// `401 …`; `none` where there was none, and ` dpop` at the end when
    /// the request carried a `DPoP` proof (not checked here).
    pub fn answers(&self) -> Vec<String> {
        self.answers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// The base64url (unpadded) SHA-256 of a DER certificate: its RFC 8705
/// `x5t#S256` thumbprint, computed here apart from authmux's own.
pub fn thumbprint(der: &[u8]) -> String {
    use base64::Engine as _;
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, der);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest.as_ref())
}

/// The value of a request's header `name`, if it has one.
fn header<'a>(request: &'a str, name: &str) -> Option<&'a str> {
    let head = request.split("\r\n\r\n").next().unwrap_or_default();
    head.lines().skip(1).find_map(|line| {
        let (key, value) = line.split_once(':')?;
        key.trim()
            .eq_ignore_ascii_case(name)
            .then_some(value.trim())
    })
}

/// The access token of a request's `Authorization` header (`Bearer` or
/// `DPoP`), if it has one.
fn access_token(request: &str) -> Option<String> {
    let (scheme, token) = header(request, "authorization")?.split_once(' ')?;
    (scheme.eq_ignore_ascii_case("bearer") || scheme.eq_ignore_ascii_case("dpop"))
        .then(|| token.trim().to_owned())
}

/// The `cnf.x5t#S256` claim of a JWT, read without verifying it.
fn bound_thumbprint(jwt: &str) -> Option<String> {
    use base64::Engine as _;
    let payload = jwt.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    claims["cnf"]["x5t#S256"].as_str().map(str::to_owned)
}

/// A JWT with `claims` and no real signature.
fn unsigned_jwt(claims: &serde_json::Value) -> String {
    use base64::Engine as _;
    let encode = |value: &serde_json::Value| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(value.to_string())
    };
    format!(
        "{}.{}.unsigned",
        encode(&serde_json::json!({ "alg": "ES256", "typ": "at+jwt" })),
        encode(claims)
    )
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs())
}

/// Listens on a loopback port and runs `connection` for each connection
/// in a task of its own, with the list it records requests in.
async fn listen<F, Fut>(connection: F) -> Listening
where
    F: Fn(TcpStream, Seen) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("the address").port();
    let seen = Seen::default();
    let record = seen.clone();
    let task = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(connection(stream, record.clone()));
        }
    });
    Listening { port, seen, task }
}

/// The body of a request [`TlsTokenEndpoint::requests`] recorded.
pub fn body(request: &str) -> &str {
    request.split_once("\r\n\r\n").map_or("", |(_, body)| body)
}

/// Reads one HTTP/1.1 request, head and body, as text.
async fn read_request(stream: &mut (impl AsyncRead + Unpin)) -> Option<String> {
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

/// An HTTP `CONNECT` proxy on loopback that records each request line
/// (`CONNECT 127.0.0.1:443 HTTP/1.1`) and tunnels it. Stops when dropped.
#[derive(Debug)]
pub struct ConnectProxy {
    listening: Listening,
}

impl ConnectProxy {
    /// Starts the proxy.
    pub async fn start() -> Self {
        let listening = listen(|mut client, record| async move {
            let Some(request) = read_request(&mut client).await else {
                return;
            };
            let line = request.lines().next().unwrap_or_default().to_owned();
            record
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(line.clone());
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
        })
        .await;
        Self { listening }
    }

    /// `http://127.0.0.1:{port}`, for `proxy`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.listening.port)
    }

    /// Every request line received so far.
    pub fn requests(&self) -> Vec<String> {
        self.listening.requests()
    }
}
