//! Certificate-bound tokens (RFC 8705 §3), against real in-process TLS
//! servers: a token endpoint that binds each token to the client
//! certificate it was requested with, and a resource server that accepts a
//! token only with the certificate it is bound to. The middleware presents
//! a bound token with its certificate and no other, a replaced certificate
//! file leads to a new token, and a store hands a bound token only to a
//! process with the same certificate.

#![cfg(all(feature = "oauth2", feature = "reqwest-middleware"))]

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use authmux::core::wire::{HttpClient, HttpConfig, TlsConfig};
use authmux::core::{Error, SecretString, Token, TokenIdentity, TokenSource};
use authmux::middleware::Authenticate;
use authmux::{Config, ManagedToken, Registry};
use authmux_testkit::tls::{
    TestCa, TestCertificate, TlsResourceServer, TlsTokenEndpoint, thumbprint,
};
use reqwest_middleware::reqwest;

/// A scratch directory, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("authmux-bound-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("scratch dir");
        Self(dir)
    }

    fn path(&self, name: &str) -> String {
        self.0.join(name).display().to_string()
    }

    /// Writes `text` to `name` as cert-manager does: a new file renamed
    /// over the old one.
    fn replace(&self, name: &str, text: &str) -> String {
        let staged = self.0.join(format!(".{name}.new"));
        std::fs::write(&staged, text).expect("write");
        std::fs::rename(&staged, self.0.join(name)).expect("rename");
        self.path(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Two CAs (the servers', the clients'), a binding token endpoint and a
/// resource server that checks the binding.
struct Servers {
    server_ca: TestCa,
    client_ca: TestCa,
    endpoint: TlsTokenEndpoint,
    api: TlsResourceServer,
}

impl Servers {
    async fn start() -> Self {
        let server_ca = TestCa::new("authmux server CA");
        let client_ca = TestCa::new("authmux client CA");
        let roots = [client_ca.certificate().clone()];
        let endpoint =
            TlsTokenEndpoint::start_binding(&server_ca.server_certificate(), &roots).await;
        let api = TlsResourceServer::start(&server_ca.server_certificate(), &roots).await;
        Self {
            server_ca,
            client_ca,
            endpoint,
            api,
        }
    }

    /// A registry whose client `bank` authenticates with the certificate in
    /// `certificate_file`, trusting the servers' CA, with `extra` config
    /// after its keys (more keys, or another table).
    fn registry(&self, scratch: &Scratch, certificate_file: &str, extra: &str) -> Registry {
        let ca_file = scratch.replace("ca.pem", self.server_ca.pem());
        let toml = format!(
            r#"
            [clients.bank]
            provider = "oauth2"
            token_url = "{}"
            client_id = "payments"
            client_auth = "tls_client_auth"
            tls_client_certificate = {{ file = {certificate_file:?} }}
            tls_ca = {{ file = {ca_file:?} }}
            max_attempts = 1
            {extra}
            "#,
            self.endpoint.token_url(),
        );
        let config = Config::from_toml_str(&toml).expect("valid");
        Registry::from_config(&config).expect("valid")
    }
}

/// An HTTP client as a service builds one: no client certificate, and the
/// system's roots only, which do not know the test CA. Authenticated calls
/// succeed only if the middleware sends them with the client's own TLS
/// identity.
fn service_http(token: impl Into<ManagedToken>) -> reqwest_middleware::ClientWithMiddleware {
    let inner = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("a client");
    reqwest_middleware::ClientBuilder::new(inner)
        .with(Authenticate::new(token))
        .build()
}

fn x5t(certificate: &TestCertificate) -> String {
    thumbprint(certificate.certificate())
}

#[tokio::test]
async fn the_middleware_presents_a_bound_token_with_its_certificate_and_another_is_refused() {
    let servers = Servers::start().await;
    let scratch = Scratch::new("present");
    let payments = servers.client_ca.client_certificate("payments");
    let file = scratch.replace("client.pem", &payments.combined_pem());
    let registry = servers.registry(&scratch, &file, "");
    let client = registry.client("bank").expect("configured").clone();

    let http = service_http(client.clone());
    let response = http.get(servers.api.url()).send().await.expect("sent");
    assert_eq!(response.status(), 200);
    let bound = x5t(&payments);
    assert_eq!(
        servers.api.answers(),
        [format!("200 bound={bound} presented={bound}")]
    );
    let token = client.token().await.expect("cached").clone();
    assert_eq!(token.certificate(), Some(bound.as_str()));

    // The resource server's check is real: the same token with another
    // certificate, or with none, is refused.
    let other = servers.client_ca.client_certificate("someone else");
    for (identity, presented) in [(Some(&other), x5t(&other)), (None, "none".to_owned())] {
        let mut builder =
            reqwest::Client::builder().tls_certs_only([reqwest::Certificate::from_pem(
                servers.server_ca.pem().as_bytes(),
            )
            .expect("CA")]);
        if let Some(identity) = identity {
            builder = builder.identity(
                reqwest::Identity::from_pem(identity.combined_pem().as_bytes()).expect("identity"),
            );
        }
        let response = builder
            .build()
            .expect("a client")
            .get(servers.api.url())
            .header("authorization", token.authorization().clone())
            .send()
            .await
            .expect("sent");
        assert_eq!(response.status(), 401);
        assert_eq!(
            servers.api.answers().last().map(String::as_str),
            Some(format!("401 bound={bound} presented={presented}").as_str())
        );
    }
    assert_eq!(servers.endpoint.requests().len(), 1, "one token");
}

#[tokio::test]
async fn a_replaced_certificate_file_is_read_again_and_the_token_bound_to_the_old_one_refetched() {
    let servers = Servers::start().await;
    let scratch = Scratch::new("rotate");
    let old = servers.client_ca.client_certificate("payments");
    let new = servers.client_ca.client_certificate("payments");
    let file = scratch.replace("client.pem", &old.combined_pem());
    let registry = servers.registry(&scratch, &file, "");
    let client = registry.client("bank").expect("configured").clone();
    let http = service_http(client.clone());

    let response = http.get(servers.api.url()).send().await.expect("sent");
    assert_eq!(response.status(), 200);

    scratch.replace("client.pem", &new.combined_pem());
    let response = http.get(servers.api.url()).send().await.expect("sent");
    assert_eq!(response.status(), 200);

    let (old, new) = (x5t(&old), x5t(&new));
    assert_ne!(old, new);
    assert_eq!(
        servers.api.answers(),
        [
            format!("200 bound={old} presented={old}"),
            format!("200 bound={new} presented={new}"),
        ],
        "the old token is never presented with the new certificate"
    );
    assert_eq!(
        servers.endpoint.requests().len(),
        2,
        "one token per certificate"
    );
    let token = client.token().await.expect("cached").clone();
    assert_eq!(token.certificate(), Some(new.as_str()));

    // A file that cannot be used keeps the certificate that works.
    scratch.replace("client.pem", "not PEM\n");
    let response = http.get(servers.api.url()).send().await.expect("sent");
    assert_eq!(response.status(), 200);
    assert_eq!(
        servers.api.answers().last().map(String::as_str),
        Some(format!("200 bound={new} presented={new}").as_str())
    );
    assert_eq!(servers.endpoint.requests().len(), 2);
}

#[tokio::test]
async fn a_stored_bound_token_is_adopted_only_with_the_same_certificate() {
    let servers = Servers::start().await;
    let scratch = Scratch::new("store");
    let first = servers.client_ca.client_certificate("payments");
    let second = servers.client_ca.client_certificate("payments");
    let file = scratch.replace("client.pem", &first.combined_pem());
    let store = format!(
        "[store]\nkind = \"file\"\npath = {:?}\n",
        scratch.path("store")
    );

    // One process gets a token and stores it.
    let writer = servers.registry(&scratch, &file, &store);
    let token = writer.token("bank").await.expect("a token");
    assert_eq!(token.certificate(), Some(x5t(&first).as_str()));

    // A process with the same certificate adopts it.
    let same = servers.registry(&scratch, &file, &store);
    let adopted = same.token("bank").await.expect("a token");
    assert_eq!(adopted.certificate(), Some(x5t(&first).as_str()));
    assert_eq!(
        servers.endpoint.requests().len(),
        1,
        "adopted from the store"
    );

    // A process built with the same file, which then holds another
    // certificate, does not: it looks under the same key and fetches.
    let rotated = servers.registry(&scratch, &file, &store);
    scratch.replace("client.pem", &second.combined_pem());
    let fetched = rotated.token("bank").await.expect("a token");
    assert_eq!(fetched.certificate(), Some(x5t(&second).as_str()));
    assert_eq!(servers.endpoint.requests().len(), 2);
}

/// A source whose tokens are bound to a certificate its HTTP client does
/// not present: a token that must never be sent.
struct BoundElsewhere {
    http: HttpClient,
    fetches: Arc<AtomicUsize>,
}

#[async_trait::async_trait]
impl TokenSource for BoundElsewhere {
    fn provider(&self) -> &str {
        "test"
    }

    fn identity(&self) -> TokenIdentity {
        TokenIdentity::new("test", "https://127.0.0.1/token")
    }

    async fn fetch_token(&self) -> Result<Token, Error> {
        self.fetches.fetch_add(1, Ordering::SeqCst);
        Ok(Token::builder("bound-elsewhere")
            .lifetime(Duration::from_secs(3600))
            .build()?
            .with_certificate(Some(Arc::from("another-certificate"))))
    }

    fn http_client(&self) -> Option<&HttpClient> {
        Some(&self.http)
    }
}

#[tokio::test]
async fn a_token_bound_to_a_certificate_the_client_does_not_present_is_never_sent() {
    let servers = Servers::start().await;
    let payments = servers.client_ca.client_certificate("payments");
    let http = HttpClient::with_config(
        HttpConfig::default().tls(
            TlsConfig::default()
                .ca(SecretString::from(servers.server_ca.pem().to_owned()))
                .client_certificate(SecretString::from(payments.combined_pem())),
        ),
    )
    .expect("a client");
    let fetches = Arc::new(AtomicUsize::new(0));
    let token = ManagedToken::new(BoundElsewhere {
        http,
        fetches: Arc::clone(&fetches),
    });

    let error = service_http(token)
        .get(servers.api.url())
        .send()
        .await
        .expect_err("refused");
    let message = format!("{error:#}");
    assert!(
        message.contains(&format!(
            "the token is bound to the client certificate with x5t#S256 another-certificate, \
             but the client presents {}; it is not sent",
            x5t(&payments)
        )),
        "{message}"
    );
    assert!(!message.contains("bound-elsewhere"), "{message}");
    assert_eq!(servers.api.answers(), Vec::<String>::new(), "nothing sent");
    assert_eq!(fetches.load(Ordering::SeqCst), 2, "one new token tried");
}

/// DPoP next to mTLS: the certificate authenticates the client, the DPoP
/// key binds the token, and API calls carry both the proof and the
/// certificate.
#[tokio::test]
async fn a_dpop_client_with_a_certificate_presents_both() {
    let servers = Servers::start().await;
    let scratch = Scratch::new("dpop");
    let payments = servers.client_ca.client_certificate("payments");
    let file = scratch.replace("client.pem", &payments.combined_pem());
    let registry = servers.registry(&scratch, &file, "dpop = true");
    let client = registry.client("bank").expect("configured").clone();

    let response = service_http(client.clone())
        .get(servers.api.url())
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 200);
    let bound = x5t(&payments);
    assert_eq!(
        servers.api.answers(),
        [format!("200 bound={bound} presented={bound} dpop")]
    );
    let token = client.token().await.expect("cached").clone();
    assert_eq!(token.token_type(), &authmux::core::TokenType::DPoP);
    assert!(token.dpop().is_some());
    assert_eq!(token.certificate(), Some(bound.as_str()));
    let request = &servers.endpoint.requests()[0];
    assert!(
        request.to_ascii_lowercase().contains("\r\ndpop: "),
        "the token request carries a proof: {request}"
    );
}
