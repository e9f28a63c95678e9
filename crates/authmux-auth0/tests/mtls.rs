//! Mutual TLS against Auth0: refused on a tenant domain (Auth0 takes it
//! only on a custom domain), sent to a custom domain (or its `mtls.`
//! alias) over a real TLS handshake that requires the certificate, with
//! the exact body, and a certificate-bound answer typed `DPoP` kept so.

use authmux_auth0::{Auth0Builder, Auth0Config, Auth0Provider};
use authmux_core::wire::{BodyEncoding, ClientAuth, HttpClient, HttpConfig, TlsConfig};
use authmux_core::{
    ClientAuthBuilder as _, ClientSecret, EndpointBuilder as _, ExposeSecret as _,
    TokenSource as _, TokenType,
};
use authmux_testkit::keys;
use authmux_testkit::tls::{TestCa, TestCertificate, TlsTokenEndpoint, body};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use httpmock::Method::POST;
use httpmock::MockServer;
use serde_json::{Value, json};

const CLIENT_ID: &str = "mtls-client-5e2a";
const AUDIENCE: &str = "https://api.example.com";

/// An HTTP client that presents `client` and trusts `server_ca` (if any).
fn presenting(client: &TestCertificate, server_ca: Option<&TestCa>) -> HttpClient {
    let mut tls =
        TlsConfig::default().client_certificate(ClientSecret::inline(client.combined_pem()));
    if let Some(ca) = server_ca {
        tls = tls.ca(ClientSecret::inline(ca.pem()));
    }
    HttpClient::with_config(HttpConfig::default().tls(tls)).expect("an HTTP client")
}

/// A client of the tenant at `domain` that authenticates with `client_auth`,
/// as a config would give it.
fn tls_config(domain: &str, client_auth: &str) -> Auth0Config {
    serde_json::from_value(json!({
        "domain": domain, "client_id": CLIENT_ID, "audience": AUDIENCE,
        "client_auth": client_auth,
    }))
    .expect("valid config")
}

/// The exact error `domain` (or another key) gets for `what` on `host`.
fn tenant_error(key: &str, host: &str, what: &str) -> String {
    format!(
        "{key}: {host:?} is an Auth0 tenant domain; Auth0 takes {what} only on your custom \
         domain (self-managed certificates, an edge that checks the certificate), such as \
         \"login.example.com\""
    )
}

/// The request line of a recorded request.
fn request_line(request: &str) -> &str {
    request.lines().next().unwrap_or_default()
}

#[test]
fn tls_methods_on_a_tenant_domain_are_a_config_error_naming_domain() {
    let client = TestCertificate::self_signed_client(CLIENT_ID);
    for (domain, host) in [
        ("tenant.auth0.com", "tenant.auth0.com"),
        ("tenant.eu.auth0.com", "tenant.eu.auth0.com"),
        ("tenant.us.auth0.com", "tenant.us.auth0.com"),
        ("https://Tenant.AU.auth0.com/", "tenant.au.auth0.com"),
    ] {
        for method in ["tls_client_auth", "self_signed_tls_client_auth"] {
            let what = format!("client_auth = {method:?}");
            // Refused with the certificate, and before asking for one.
            for http in [Some(presenting(&client, None)), None] {
                let mut builder = tls_config(domain, method).builder();
                if let Some(http) = http {
                    builder = builder.http_client(http);
                }
                let error = builder.build().expect_err("a tenant domain");
                assert_eq!(error.to_string(), tenant_error("domain", host, &what));
                assert!(!error.to_string().contains('\n'), "{error}");
            }
        }
    }

    // A base_url on a tenant domain is named as the key that gave the host.
    let error = tls_config("login.example.com", "tls_client_auth")
        .builder()
        .http_client(presenting(&client, None))
        .base_url("https://tenant.eu.auth0.com")
        .build()
        .expect_err("a tenant domain");
    assert_eq!(
        error.to_string(),
        tenant_error(
            "base_url",
            "tenant.eu.auth0.com",
            "client_auth = \"tls_client_auth\""
        )
    );
}

#[test]
fn a_certificate_for_token_binding_alone_is_refused_on_a_tenant_domain() {
    let client = TestCertificate::self_signed_client(CLIENT_ID);
    let secret = |domain: &str| {
        Auth0Provider::builder(domain, CLIENT_ID, ClientSecret::inline("s3cr3t")).audience(AUDIENCE)
    };
    let error = secret("tenant.eu.auth0.com")
        .http_client(presenting(&client, None))
        .build()
        .expect_err("a certificate on a tenant domain");
    assert_eq!(
        error.to_string(),
        tenant_error(
            "domain",
            "tenant.eu.auth0.com",
            "a client certificate (tls_client_certificate)"
        )
    );
    let error = Auth0Provider::private_key_jwt(
        "tenant.us.auth0.com",
        CLIENT_ID,
        ClientSecret::inline(keys::RSA_PKCS1_PEM),
    )
    .audience(AUDIENCE)
    .http_client(presenting(&client, None))
    .build()
    .expect_err("a certificate on a tenant domain");
    assert!(
        error
            .to_string()
            .starts_with("domain: \"tenant.us.auth0.com\""),
        "{error}"
    );

    // Without a certificate the tenant domain is as good as ever, and with
    // one a custom domain is.
    let plain = secret("tenant.eu.auth0.com")
        .http_client(HttpClient::new().expect("an HTTP client"))
        .build()
        .expect("no certificate, no mutual TLS");
    assert_eq!(plain.token_url(), "https://tenant.eu.auth0.com/oauth/token");
    let bound = secret("login.example.com")
        .http_client(presenting(&client, None))
        .build()
        .expect("a custom domain");
    assert_eq!(bound.token_url(), "https://login.example.com/oauth/token");
}

#[test]
fn mtls_domain_is_where_a_certificate_goes_and_needs_one() {
    let client = TestCertificate::self_signed_client(CLIENT_ID);
    let with_alias = |mtls_domain: &str| {
        tls_config("login.example.com", "tls_client_auth")
            .builder()
            .mtls_domain(mtls_domain)
    };
    let source = with_alias("mtls.login.example.com")
        .http_client(presenting(&client, None))
        .build()
        .expect("valid");
    assert_eq!(
        source.token_url(),
        "https://mtls.login.example.com/oauth/token"
    );

    let error = with_alias("mtls.login.example.com")
        .client_auth(ClientAuth::Body)
        .client_secret(ClientSecret::inline("s3cr3t"))
        .http_client(HttpClient::new().expect("an HTTP client"))
        .build()
        .expect_err("no certificate");
    assert_eq!(
        error.to_string(),
        "mtls_domain: only used when the client presents a certificate; set \
         tls_client_certificate, or remove mtls_domain"
    );

    let error = with_alias("tenant.eu.auth0.com")
        .http_client(presenting(&client, None))
        .build()
        .expect_err("a tenant domain");
    assert_eq!(
        error.to_string(),
        tenant_error(
            "mtls_domain",
            "tenant.eu.auth0.com",
            "client_auth = \"tls_client_auth\""
        )
    );

    let config: Auth0Config = serde_json::from_value(json!({
        "domain": "login.example.com", "mtls_domain": "mtls.login.example.com",
        "client_id": CLIENT_ID, "audience": AUDIENCE, "client_auth": "self_signed_tls_client_auth",
    }))
    .expect("valid config");
    assert_eq!(
        config.mtls_domain.as_deref(),
        Some("mtls.login.example.com")
    );
}

/// A TLS endpoint (standing in for a custom domain's edge) that requires
/// the self-signed certificate `client_root`, and the CA to trust it by.
async fn requiring(client_root: &TestCertificate) -> (TlsTokenEndpoint, TestCa) {
    let server_ca = TestCa::new("auth0 custom domain edge CA");
    let endpoint = TlsTokenEndpoint::start(
        &server_ca.server_certificate(),
        &[client_root.certificate().clone()],
    )
    .await;
    (endpoint, server_ca)
}

fn custom_domain(endpoint: &TlsTokenEndpoint) -> String {
    format!("https://127.0.0.1:{}", endpoint.port())
}

#[tokio::test]
async fn tls_client_auth_on_a_custom_domain_sends_the_client_id_and_the_grant_only() {
    let client_ca = TestCa::new("payments client CA");
    let client = client_ca.client_certificate(CLIENT_ID);
    let server_ca = TestCa::new("auth0 custom domain edge CA");
    let endpoint = TlsTokenEndpoint::start(
        &server_ca.server_certificate(),
        &[client_ca.certificate().clone()],
    )
    .await;
    let token = tls_config(&custom_domain(&endpoint), "tls_client_auth")
        .builder()
        .organization("org_123")
        .http_client(presenting(&client, Some(&server_ca)))
        .build()
        .expect("valid")
        .fetch_token()
        .await
        .expect("a token over mutual TLS");
    assert_eq!(token.secret().expose_secret(), "tls-token-1");
    let requests = endpoint.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(request_line(&requests[0]), "POST /oauth/token HTTP/1.1");
    let head = requests[0].to_ascii_lowercase();
    assert!(
        head.contains("\r\ncontent-type: application/json\r\n"),
        "{head}"
    );
    assert!(!head.contains("\r\nauthorization:"), "{head}");
    let sent: Value = serde_json::from_str(body(&requests[0])).expect("a JSON body");
    assert_eq!(
        sent,
        json!({
            "grant_type": "client_credentials",
            "client_id": CLIENT_ID,
            "audience": AUDIENCE,
            "organization": "org_123",
        })
    );
}

#[tokio::test]
async fn self_signed_tls_client_auth_sends_the_same_fields_in_a_form() {
    let client = TestCertificate::self_signed_client(CLIENT_ID);
    let (endpoint, server_ca) = requiring(&client).await;
    tls_config(&custom_domain(&endpoint), "self_signed_tls_client_auth")
        .builder()
        .body(BodyEncoding::Form)
        .http_client(presenting(&client, Some(&server_ca)))
        .build()
        .expect("valid")
        .fetch_token()
        .await
        .expect("a token over mutual TLS");
    let requests = endpoint.requests();
    let mut fields: Vec<&str> = body(&requests[0]).split('&').collect();
    fields.sort_unstable();
    assert_eq!(
        fields,
        [
            "audience=https%3A%2F%2Fapi.example.com",
            &format!("client_id={CLIENT_ID}"),
            "grant_type=client_credentials",
        ]
    );
}

#[tokio::test]
async fn the_mtls_alias_gets_the_request_and_the_assertion_stays_for_the_custom_domain() {
    // Token binding with private_key_jwt: the certificate goes to the
    // alias, the assertion's audience is the custom domain.
    let client = TestCertificate::self_signed_client(CLIENT_ID);
    let (endpoint, server_ca) = requiring(&client).await;
    let source = Auth0Provider::private_key_jwt(
        "login.example.com",
        CLIENT_ID,
        ClientSecret::inline(keys::RSA_PKCS1_PEM),
    )
    .audience(AUDIENCE)
    .mtls_domain(custom_domain(&endpoint))
    .http_client(presenting(&client, Some(&server_ca)))
    .build()
    .expect("valid");
    assert_eq!(
        source.token_url(),
        format!("{}/oauth/token", custom_domain(&endpoint))
    );
    source.fetch_token().await.expect("a token from the alias");
    let requests = endpoint.requests();
    assert_eq!(request_line(&requests[0]), "POST /oauth/token HTTP/1.1");
    let sent: Value = serde_json::from_str(body(&requests[0])).expect("a JSON body");
    assert_eq!(sent["client_id"], CLIENT_ID);
    assert!(sent.get("client_secret").is_none(), "{sent}");
    let assertion = sent["client_assertion"].as_str().expect("an assertion");
    let claims = assertion.split('.').nth(1).expect("claims");
    let claims: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(claims).expect("base64url"))
        .expect("JSON claims");
    assert_eq!(claims["aud"], "https://login.example.com/");
}

/// Over plain http to a loopback mock: the certificate is configured (so
/// `tls_client_auth` builds) though no handshake asks for it.
fn over_http(server: &MockServer) -> Auth0Builder {
    let client = TestCertificate::self_signed_client(CLIENT_ID);
    tls_config(&server.base_url(), "tls_client_auth")
        .builder()
        .http_client(presenting(&client, None))
}

#[tokio::test]
async fn a_certificate_bound_token_typed_dpop_is_kept_and_presented_as_dpop() {
    let server = MockServer::start_async().await;
    let mock = server
        .mock_async(|when, then| {
            when.method(POST)
                .path("/oauth/token")
                .header_missing("authorization")
                .header_missing("dpop")
                .json_body(json!({
                    "grant_type": "client_credentials",
                    "client_id": CLIENT_ID,
                    "audience": AUDIENCE,
                }));
            then.status(200).json_body(json!({
                "access_token": "bound-at-1", "token_type": "DPoP", "expires_in": 86400
            }));
        })
        .await;
    let token = over_http(&server)
        .build()
        .expect("valid")
        .fetch_token()
        .await
        .expect("a bound token");
    mock.assert_async().await;
    assert_eq!(token.token_type(), &TokenType::DPoP);
    assert_eq!(token.authorization(), "DPoP bound-at-1");
    assert!(token.dpop().is_none(), "no DPoP key was asked for");
}
