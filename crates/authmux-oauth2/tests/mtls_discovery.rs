//! RFC 8705 in discovery, against in-process TLS token endpoints on
//! loopback: a client that presents a certificate goes to the server's
//! `mtls_endpoint_aliases.token_endpoint`, one without a certificate never
//! does, a certificate meant only to bind tokens needs a server that binds
//! them, and the TLS client authentication methods are checked against the
//! methods the server lists.
//!
//! The metadata is served over plain http on loopback (an issuer there
//! needs no TLS); the token endpoints are TLS ones from the testkit, one
//! that takes any client and one that requires a client certificate.

use authmux_core::wire::{HttpClient, HttpConfig, TlsConfig};
use authmux_core::{ClientSecret, EndpointBuilder as _, Error, ErrorKind, TokenSource as _};
use authmux_oauth2::{OAuth2Config, OAuth2Source, ServerMetadata};
use authmux_testkit::tls::{TestCa, TestCertificate, TlsTokenEndpoint, body};
use httpmock::Method::GET;
use httpmock::MockServer;
use serde_json::{Value, json};

const CLIENT_ID: &str = "payments";
const SECRET: &str = "s3cr3t-value";
const OAUTH_WELL_KNOWN: &str = "/.well-known/oauth-authorization-server";
const ALIAS_FIELD: &str = "mtls_endpoint_aliases.token_endpoint";

/// A server CA, and the client certificates a server may require.
struct Pki {
    server_ca: TestCa,
    client_ca: TestCa,
    /// Issued by `client_ca`, for `tls_client_auth`.
    issued: TestCertificate,
    /// Self-signed, for `self_signed_tls_client_auth`.
    self_signed: TestCertificate,
}

impl Pki {
    fn new() -> Self {
        let client_ca = TestCa::new("authmux client CA");
        Self {
            server_ca: TestCa::new("authmux server CA"),
            issued: client_ca.client_certificate(CLIENT_ID),
            self_signed: TestCertificate::self_signed_client(CLIENT_ID),
            client_ca,
        }
    }

    /// A token endpoint that takes clients with or without a certificate.
    async fn open_endpoint(&self) -> TlsTokenEndpoint {
        TlsTokenEndpoint::start(&self.server_ca.server_certificate(), &[]).await
    }

    /// A token endpoint that refuses, in the handshake, a client without
    /// one of our client certificates.
    async fn mtls_endpoint(&self) -> TlsTokenEndpoint {
        TlsTokenEndpoint::start(
            &self.server_ca.server_certificate(),
            &[
                self.client_ca.certificate().clone(),
                self.self_signed.certificate().clone(),
            ],
        )
        .await
    }

    /// An HTTP client trusting the server CA and presenting `certificate`.
    fn http(&self, certificate: Option<&TestCertificate>) -> HttpClient {
        let mut tls = TlsConfig::default().ca(ClientSecret::inline(self.server_ca.pem()));
        if let Some(certificate) = certificate {
            tls = tls.client_certificate(ClientSecret::inline(certificate.combined_pem()));
        }
        HttpClient::with_config(HttpConfig::default().tls(tls)).expect("an HTTP client")
    }
}

/// A source for `issuer`, configured by `config` (plus the issuer and the
/// client id), sending through `http`.
fn source(issuer: &str, mut config: Value, http: HttpClient) -> OAuth2Source {
    config["issuer"] = json!(issuer);
    config["client_id"] = json!(CLIENT_ID);
    serde_json::from_value::<OAuth2Config>(config)
        .expect("valid config")
        .builder()
        .http_client(http)
        .build()
        .expect("valid provider")
}

/// Serves `document` as the metadata of `server`'s base URL, the issuer.
async fn serve_metadata(server: &MockServer, document: Value) {
    server
        .mock_async(move |when, then| {
            when.method(GET)
                .path(OAUTH_WELL_KNOWN)
                .header("accept", "application/json");
            then.status(200)
                .header("content-type", "application/json")
                .json_body(document);
        })
        .await;
}

/// Metadata naming `token_endpoint` and, if given, its mTLS alias, with
/// every client authentication method the tests use.
fn metadata(issuer: &str, token_endpoint: &str, alias: Option<&str>) -> Value {
    let mut document = json!({
        "issuer": issuer,
        "token_endpoint": token_endpoint,
        "token_endpoint_auth_methods_supported": [
            "client_secret_basic",
            "client_secret_post",
            "tls_client_auth",
            "self_signed_tls_client_auth",
        ],
    });
    if let Some(alias) = alias {
        document["mtls_endpoint_aliases"] = json!({
            "token_endpoint": alias,
            "revocation_endpoint": "https://127.0.0.1:9/revoke",
        });
    }
    document
}

/// The refusal of a discovery: by `discover`, and by a token fetch after it.
async fn discovery_error(source: &OAuth2Source) -> Error {
    let error = source.discover().await.expect_err("discovery refused");
    let again = source.fetch_token().await.expect_err("no token either");
    assert_eq!(again.kind(), error.kind());
    assert_eq!(source.token_url(), None);
    error
}

/// The request line of a recorded request.
fn request_line(request: &str) -> &str {
    request.lines().next().unwrap_or_default()
}

#[tokio::test]
async fn a_client_presenting_a_certificate_goes_to_the_mtls_alias() {
    let pki = Pki::new();
    let plain = pki.open_endpoint().await;
    let mtls = pki.mtls_endpoint().await;
    let server = MockServer::start_async().await;
    let issuer = server.base_url();
    let mut document = metadata(&issuer, &plain.token_url(), Some(&mtls.token_url()));
    document["tls_client_certificate_bound_access_tokens"] = json!(true);
    serve_metadata(&server, document).await;

    let clients = [
        // Authenticating with the certificate.
        (json!({"client_auth": "tls_client_auth"}), &pki.issued),
        (
            json!({"client_auth": "self_signed_tls_client_auth"}),
            &pki.self_signed,
        ),
        // Authenticating with a secret; the certificate binds the tokens.
        (
            json!({"client_auth": "basic", "client_secret": SECRET}),
            &pki.issued,
        ),
    ];
    for (sent, (config, certificate)) in clients.into_iter().enumerate() {
        let source = source(&issuer, config.clone(), pki.http(Some(certificate)));
        let token = source.fetch_token().await.expect("a token");
        assert_eq!(token.token_type().to_string(), "Bearer", "{config}");
        assert_eq!(
            source.token_url(),
            Some(mtls.token_url().as_str()),
            "{config}"
        );
        let requests = mtls.requests();
        assert_eq!(requests.len(), sent + 1, "{config}");
        assert!(
            request_line(&requests[sent]).starts_with("POST /token "),
            "{}",
            requests[sent]
        );
        assert!(
            plain.requests().is_empty(),
            "{config}: {:?}",
            plain.requests()
        );
    }

    // The TLS methods send the client id and no secret; the binding-only
    // client authenticated with its secret, on the alias all the same.
    let requests = mtls.requests();
    for request in &requests[..2] {
        assert!(
            !request.to_ascii_lowercase().contains("authorization:"),
            "{request}"
        );
        assert!(
            body(request).contains(&format!("client_id={CLIENT_ID}")),
            "{request}"
        );
    }
    assert!(
        requests[2]
            .to_ascii_lowercase()
            .contains("authorization: basic "),
        "{}",
        requests[2]
    );
}

#[tokio::test]
async fn a_client_without_a_certificate_uses_token_endpoint_despite_an_alias() {
    let pki = Pki::new();
    let plain = pki.open_endpoint().await;
    let mtls = pki.mtls_endpoint().await;
    let server = MockServer::start_async().await;
    let issuer = server.base_url();
    serve_metadata(
        &server,
        metadata(&issuer, &plain.token_url(), Some(&mtls.token_url())),
    )
    .await;

    let source = source(
        &issuer,
        json!({"client_auth": "basic", "client_secret": SECRET}),
        pki.http(None),
    );
    source.fetch_token().await.expect("a token");
    assert_eq!(source.token_url(), Some(plain.token_url().as_str()));
    assert_eq!(plain.requests().len(), 1);
    assert!(mtls.requests().is_empty(), "{:?}", mtls.requests());
    let metadata = source.metadata().expect("discovered");
    assert_eq!(
        metadata
            .mtls_endpoint_aliases
            .as_ref()
            .and_then(|aliases| aliases.token_endpoint.as_deref()),
        Some(mtls.token_url().as_str()),
        "the alias is read, and left unused"
    );
}

#[tokio::test]
async fn without_an_alias_a_client_presenting_a_certificate_uses_token_endpoint() {
    let pki = Pki::new();
    let mtls = pki.mtls_endpoint().await;
    let server = MockServer::start_async().await;
    let issuer = server.base_url();
    serve_metadata(&server, metadata(&issuer, &mtls.token_url(), None)).await;

    let source = source(
        &issuer,
        json!({"client_auth": "tls_client_auth"}),
        pki.http(Some(&pki.issued)),
    );
    source.fetch_token().await.expect("a token");
    assert_eq!(source.token_url(), Some(mtls.token_url().as_str()));
    assert_eq!(mtls.requests().len(), 1);
}

#[tokio::test]
async fn a_certificate_only_for_binding_is_refused_by_a_server_that_does_not_bind_tokens() {
    let pki = Pki::new();
    let plain = pki.open_endpoint().await;
    let mtls = pki.mtls_endpoint().await;
    // Absent, false and null all say the server does not bind tokens.
    for flag in [None, Some(json!(false)), Some(Value::Null)] {
        let server = MockServer::start_async().await;
        let issuer = server.base_url();
        let mut document = metadata(&issuer, &plain.token_url(), Some(&mtls.token_url()));
        if let Some(flag) = flag.clone() {
            document["tls_client_certificate_bound_access_tokens"] = flag;
        }
        serve_metadata(&server, document).await;

        for config in [
            json!({"client_auth": "basic", "client_secret": SECRET}),
            json!({"client_auth": "post", "client_secret": SECRET}),
        ] {
            let binding = source(&issuer, config.clone(), pki.http(Some(&pki.issued)));
            let error = discovery_error(&binding).await;
            assert_eq!(
                error.kind(),
                ErrorKind::Config,
                "{flag:?} {config}: {error}"
            );
            assert_eq!(
                error.message(),
                format!(
                    "issuer {issuer}: the server does not issue certificate-bound tokens (no \
                     \"tls_client_certificate_bound_access_tokens\": true); remove \
                     tls_client_certificate, or authenticate with it: client_auth = \
                     \"tls_client_auth\" or \"self_signed_tls_client_auth\""
                ),
                "{flag:?} {config}"
            );
        }

        // The same server and secret without a certificate: no binding
        // asked for, nothing refused.
        let without = source(
            &issuer,
            json!({"client_auth": "basic", "client_secret": SECRET}),
            pki.http(None),
        );
        without.discover().await.expect("discovered");
    }
    assert!(mtls.requests().is_empty(), "{:?}", mtls.requests());
    assert!(plain.requests().is_empty(), "{:?}", plain.requests());
}

#[tokio::test]
async fn tls_client_auth_is_not_refused_by_a_server_that_does_not_bind_tokens() {
    let pki = Pki::new();
    let plain = pki.open_endpoint().await;
    let mtls = pki.mtls_endpoint().await;
    let server = MockServer::start_async().await;
    let issuer = server.base_url();
    let document = metadata(&issuer, &plain.token_url(), Some(&mtls.token_url()));
    assert!(
        document
            .get("tls_client_certificate_bound_access_tokens")
            .is_none()
    );
    serve_metadata(&server, document).await;

    for (method, certificate) in [
        ("tls_client_auth", &pki.issued),
        ("self_signed_tls_client_auth", &pki.self_signed),
    ] {
        let source = source(
            &issuer,
            json!({ "client_auth": method }),
            pki.http(Some(certificate)),
        );
        source.fetch_token().await.expect("a token");
        assert_eq!(source.token_url(), Some(mtls.token_url().as_str()));
        let metadata = source.metadata().expect("discovered");
        assert!(!metadata.tls_client_certificate_bound_access_tokens);
    }
    assert_eq!(mtls.requests().len(), 2);
    assert!(plain.requests().is_empty(), "{:?}", plain.requests());
}

#[tokio::test]
async fn a_tls_auth_method_the_server_does_not_list_is_refused() {
    let pki = Pki::new();
    let mtls = pki.mtls_endpoint().await;
    for (listed, method, certificate) in [
        (
            Some(json!(["client_secret_basic", "private_key_jwt"])),
            "tls_client_auth",
            &pki.issued,
        ),
        (
            Some(json!(["tls_client_auth"])),
            "self_signed_tls_client_auth",
            &pki.self_signed,
        ),
        (
            Some(json!(["self_signed_tls_client_auth"])),
            "tls_client_auth",
            &pki.issued,
        ),
        // RFC 8414's default: client_secret_basic alone.
        (None, "tls_client_auth", &pki.issued),
    ] {
        let server = MockServer::start_async().await;
        let issuer = server.base_url();
        let mut document = metadata(&issuer, &mtls.token_url(), Some(&mtls.token_url()));
        document["tls_client_certificate_bound_access_tokens"] = json!(true);
        let object = document.as_object_mut().expect("an object");
        match listed.clone() {
            Some(methods) => {
                object.insert("token_endpoint_auth_methods_supported".into(), methods);
            }
            None => {
                object.remove("token_endpoint_auth_methods_supported");
            }
        }
        serve_metadata(&server, document).await;

        let source = source(
            &issuer,
            json!({ "client_auth": method }),
            pki.http(Some(certificate)),
        );
        let error = discovery_error(&source).await;
        assert_eq!(error.kind(), ErrorKind::Config, "{error}");
        let text = error.message();
        assert!(text.starts_with(&format!("issuer {issuer}: ")), "{text}");
        assert!(
            text.contains(&format!("does not accept {method} ")),
            "{listed:?}: {text}"
        );
        assert!(text.ends_with("change client_auth"), "{text}");
    }
    assert!(mtls.requests().is_empty(), "{:?}", mtls.requests());
}

#[tokio::test]
async fn an_mtls_alias_is_checked_like_token_endpoint_and_named() {
    let pki = Pki::new();
    let plain = pki.open_endpoint().await;
    let server = MockServer::start_async().await;
    let issuer = server.base_url();
    let mut document = metadata(
        &issuer,
        &plain.token_url(),
        Some("http://idp.example/mtls/token"),
    );
    document["tls_client_certificate_bound_access_tokens"] = json!(true);
    serve_metadata(&server, document).await;

    for (config, certificate) in [
        (json!({"client_auth": "tls_client_auth"}), &pki.issued),
        (
            json!({"client_auth": "basic", "client_secret": SECRET}),
            &pki.issued,
        ),
    ] {
        let source = source(&issuer, config.clone(), pki.http(Some(certificate)));
        let error = discovery_error(&source).await;
        assert_eq!(error.kind(), ErrorKind::Config, "{config}: {error}");
        let text = error.message();
        assert!(
            text.starts_with(&format!("issuer {issuer}: {ALIAS_FIELD}: ")),
            "{text}"
        );
        assert!(text.contains("allow_insecure_http"), "{text}");
    }

    // A client without a certificate never uses the alias, so never
    // minds it.
    let without = source(
        &issuer,
        json!({"client_auth": "basic", "client_secret": SECRET}),
        pki.http(None),
    );
    without.fetch_token().await.expect("a token");
    assert_eq!(plain.requests().len(), 1);
}

#[test]
fn rfc_8705_metadata_members_are_read_with_their_defaults() {
    let bare: ServerMetadata = serde_json::from_value(json!({
        "issuer": "https://idp.example",
        "token_endpoint": "https://idp.example/token",
    }))
    .expect("metadata");
    assert_eq!(bare.mtls_endpoint_aliases, None);
    assert!(!bare.tls_client_certificate_bound_access_tokens);

    let full: ServerMetadata = serde_json::from_value(json!({
        "issuer": "https://idp.example",
        "token_endpoint": "https://idp.example/token",
        "mtls_endpoint_aliases": {
            "token_endpoint": "https://mtls.idp.example/token",
            "introspection_endpoint": "https://mtls.idp.example/introspect",
        },
        "tls_client_certificate_bound_access_tokens": true,
    }))
    .expect("metadata");
    let aliases = full.mtls_endpoint_aliases.expect("aliases");
    assert_eq!(
        aliases.token_endpoint.as_deref(),
        Some("https://mtls.idp.example/token")
    );
    assert!(full.tls_client_certificate_bound_access_tokens);

    // Aliases without a token endpoint, and an explicit null.
    let other: ServerMetadata = serde_json::from_value(json!({
        "issuer": "https://idp.example",
        "mtls_endpoint_aliases": {"revocation_endpoint": "https://mtls.idp.example/revoke"},
        "tls_client_certificate_bound_access_tokens": null,
    }))
    .expect("metadata");
    assert_eq!(
        other
            .mtls_endpoint_aliases
            .and_then(|aliases| aliases.token_endpoint),
        None
    );
    assert!(!other.tls_client_certificate_bound_access_tokens);
}
