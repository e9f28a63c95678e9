//! TLS on the wire, against real in-process TLS servers: a private CA from
//! `tls_ca` (and the system roots alone refusing it), client certificates
//! checked in the handshake (`tls_client_auth`,
//! `self_signed_tls_client_auth`) and refused, an HTTP CONNECT proxy, and
//! the private key kept out of `Debug` and errors.

#![cfg(feature = "oauth2")]

use std::path::PathBuf;

use authmux::{Config, ErrorKind, ExposeSecret as _, Registry};
use authmux_testkit::tls::{ConnectProxy, TestCa, TestCertificate, TlsTokenEndpoint, body};

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

/// A registry with one client, `bank`, of `provider = "oauth2"`.
fn registry(endpoint: &TlsTokenEndpoint, extra: &str) -> Registry {
    let toml = format!(
        r#"
        [clients.bank]
        provider = "oauth2"
        token_url = "{}"
        client_id = "payments"
        max_attempts = 1
        {extra}
        "#,
        endpoint.token_url()
    );
    let config = Config::from_toml_str(&toml).expect("valid");
    Registry::from_config(&config).expect("valid")
}

/// The fields of a form body, sorted.
fn fields(body: &str) -> Vec<&str> {
    let mut fields: Vec<&str> = body.split('&').collect();
    fields.sort_unstable();
    fields
}

/// The first characters of a PEM key's base64, to look for in output.
fn key_marker(certificate: &TestCertificate) -> String {
    certificate
        .key_pem()
        .lines()
        .filter(|line| !line.starts_with("-----"))
        .collect::<String>()[..32]
        .to_owned()
}

#[tokio::test]
async fn a_private_ca_from_tls_ca_is_trusted_and_the_system_roots_alone_refuse_it() {
    let scratch = Scratch::new("ca");
    let ca = TestCa::new("authmux private CA");
    let endpoint = TlsTokenEndpoint::start(&ca.server_certificate(), &[]).await;
    let ca_file = scratch.write("ca.pem", ca.pem());

    let trusted = registry(
        &endpoint,
        &format!("client_secret = \"s\"\ntls_ca = {{ file = {ca_file:?} }}"),
    );
    let token = trusted.token("bank").await.expect("a token");
    assert_eq!(token.secret().expose_secret(), "tls-token-1");

    // Instead of the system roots: still trusted.
    let only = registry(
        &endpoint,
        &format!("client_secret = \"s\"\ntls_ca = {{ file = {ca_file:?} }}\ntls_ca_only = true"),
    );
    only.token("bank").await.expect("a token");
    assert_eq!(endpoint.requests().len(), 2);

    let untrusted = registry(&endpoint, "client_secret = \"s\"");
    let error = untrusted.token("bank").await.expect_err("untrusted");
    assert_eq!(error.kind(), ErrorKind::Transport, "{error}");
    assert!(error.to_string().contains("TLS error"), "{error}");
    assert_eq!(endpoint.requests().len(), 2, "nothing was sent");
}

#[tokio::test]
async fn tls_client_auth_presents_the_certificate_and_sends_only_the_client_id() {
    let scratch = Scratch::new("mtls");
    let ca = TestCa::new("authmux server CA");
    let client_ca = TestCa::new("authmux client CA");
    let client = client_ca.client_certificate("payments");
    let endpoint =
        TlsTokenEndpoint::start(&ca.server_certificate(), &[client_ca.certificate().clone()]).await;
    let ca_file = scratch.write("ca.pem", ca.pem());
    let combined = scratch.write("client.pem", &client.combined_pem());

    let together = registry(
        &endpoint,
        &format!(
            "client_auth = \"tls_client_auth\"\nscopes = [\"payments\"]\n\
             tls_ca = {{ file = {ca_file:?} }}\ntls_client_certificate = {{ file = {combined:?} }}"
        ),
    );
    together.token("bank").await.expect("a token");
    let requests = endpoint.requests();
    assert_eq!(
        fields(body(&requests[0])),
        [
            "client_id=payments",
            "grant_type=client_credentials",
            "scope=payments"
        ]
    );
    assert!(
        !requests[0].to_ascii_lowercase().contains("authorization:"),
        "{}",
        requests[0]
    );

    // The key apart from the certificate.
    let certificate = scratch.write("client.crt", client.certificate_pem());
    let key = scratch.write("client.key", client.key_pem());
    let apart = registry(
        &endpoint,
        &format!(
            "client_auth = \"tls_client_auth\"\ntls_ca = {{ file = {ca_file:?} }}\n\
             tls_client_certificate = {{ file = {certificate:?} }}\ntls_client_key = {{ file = {key:?} }}"
        ),
    );
    apart.token("bank").await.expect("a token");
    assert_eq!(
        fields(body(&endpoint.requests()[1])),
        ["client_id=payments", "grant_type=client_credentials"]
    );
}

#[tokio::test]
async fn self_signed_tls_client_auth_presents_the_registered_certificate() {
    let scratch = Scratch::new("self-signed");
    let ca = TestCa::new("authmux server CA");
    let client = TestCertificate::self_signed_client("payments");
    let endpoint =
        TlsTokenEndpoint::start(&ca.server_certificate(), &[client.certificate().clone()]).await;
    let ca_file = scratch.write("ca.pem", ca.pem());
    let combined = scratch.write("client.pem", &client.combined_pem());
    let registry_ = registry(
        &endpoint,
        &format!(
            "client_auth = \"self_signed_tls_client_auth\"\ntls_ca = {{ file = {ca_file:?} }}\n\
             tls_client_certificate = {{ file = {combined:?} }}"
        ),
    );
    registry_.token("bank").await.expect("a token");
    assert_eq!(
        fields(body(&endpoint.requests()[0])),
        ["client_id=payments", "grant_type=client_credentials"]
    );

    // The certificate's thumbprint is part of the token identity: tokens
    // got with another certificate are cached and stored apart.
    let field = authmux::core::wire::CLIENT_CERTIFICATE_FIELD;
    let identity = |registry: &Registry| {
        registry
            .client("bank")
            .expect("client")
            .cache()
            .source()
            .identity()
    };
    let ours = identity(&registry_);
    assert_eq!(
        ours.get(field),
        Some(authmux::core::wire::thumbprint(client.certificate()).as_str())
    );
    let other = TestCertificate::self_signed_client("payments");
    let other_file = scratch.write("other.pem", &other.combined_pem());
    let theirs = identity(&registry(
        &endpoint,
        &format!(
            "client_auth = \"self_signed_tls_client_auth\"\ntls_ca = {{ file = {ca_file:?} }}\n\
             tls_client_certificate = {{ file = {other_file:?} }}"
        ),
    ));
    assert_ne!(ours.get(field), theirs.get(field));
    assert_ne!(ours, theirs);
}

#[tokio::test]
async fn a_missing_or_other_certificate_is_refused_in_the_handshake() {
    let scratch = Scratch::new("refused");
    let ca = TestCa::new("authmux server CA");
    let client_ca = TestCa::new("authmux client CA");
    let endpoint =
        TlsTokenEndpoint::start(&ca.server_certificate(), &[client_ca.certificate().clone()]).await;
    let ca_file = scratch.write("ca.pem", ca.pem());

    // No certificate: a secret only.
    let without = registry(
        &endpoint,
        &format!("client_secret = \"s\"\ntls_ca = {{ file = {ca_file:?} }}"),
    );
    let error = without.token("bank").await.expect_err("refused");
    assert_eq!(error.kind(), ErrorKind::Refused, "{error}");
    assert!(
        error.to_string().contains("TLS alert certificate_required"),
        "{error}"
    );
    assert!(!error.is_transient(), "{error}");

    // A certificate from another CA.
    let other = TestCa::new("someone else").client_certificate("payments");
    let combined = scratch.write("other.pem", &other.combined_pem());
    let wrong = registry(
        &endpoint,
        &format!(
            "client_auth = \"tls_client_auth\"\ntls_ca = {{ file = {ca_file:?} }}\n\
             tls_client_certificate = {{ file = {combined:?} }}"
        ),
    );
    let error = wrong.token("bank").await.expect_err("refused");
    assert_eq!(error.kind(), ErrorKind::Refused, "{error}");
    assert!(error.to_string().contains("TLS alert "), "{error}");
    assert!(!error.to_string().contains(&key_marker(&other)), "{error}");
    assert!(endpoint.requests().is_empty());
}

#[tokio::test]
async fn a_configured_proxy_sees_the_token_request() {
    let scratch = Scratch::new("proxy");
    let ca = TestCa::new("authmux private CA");
    let endpoint = TlsTokenEndpoint::start(&ca.server_certificate(), &[]).await;
    let proxy = ConnectProxy::start().await;
    let ca_file = scratch.write("ca.pem", ca.pem());
    let registry_ = registry(
        &endpoint,
        &format!(
            "client_secret = \"s\"\ntls_ca = {{ file = {ca_file:?} }}\nproxy = \"{}\"",
            proxy.url()
        ),
    );
    registry_
        .token("bank")
        .await
        .expect("a token through the proxy");
    assert_eq!(
        proxy.requests(),
        [format!("CONNECT 127.0.0.1:{} HTTP/1.1", endpoint.port())]
    );
    assert_eq!(endpoint.requests().len(), 1);
}

#[tokio::test]
async fn the_private_key_is_never_in_debug_or_errors() {
    let ca = TestCa::new("authmux client CA");
    let client = ca.client_certificate("payments");
    let marker = key_marker(&client);
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
    assert!(!format!("{config:?}").contains(&marker));
    let registry_ = Registry::from_config(&config).expect("valid");
    assert!(!format!("{registry_:?}").contains(&marker));
    let http_config = config.defaults.http_config().expect("valid");
    assert!(!format!("{http_config:?}").contains(&marker));
    let http = authmux::core::wire::HttpClient::with_config(http_config).expect("a client");
    assert!(http.has_client_certificate());
    assert!(!format!("{http:?}").contains(&marker));

    // A key that is not the certificate's: the error says so without
    // quoting either.
    let other = ca.client_certificate("payments");
    let mismatched = format!(
        "{:?}",
        format!("{}{}", client.certificate_pem(), other.key_pem())
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
    assert_eq!(
        error,
        "clients.bank.tls_client_certificate: its private key is not the certificate's"
    );
}
