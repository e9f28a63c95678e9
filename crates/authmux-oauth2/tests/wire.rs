//! The provider against a local httpmock server: the exact request in both
//! client authentication styles, the lenient response rules, every error
//! shape, the token identity and the DPoP hook.

use authmux_core::ClientAuthBuilder as _;
use authmux_core::EndpointBuilder as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use authmux_core::wire::ClientAuth;
use authmux_core::wire::HeaderValue;
use authmux_core::{
    ClientSecret, DpopProver, Error, ErrorKind, ExposeSecret, Token, TokenSource, TokenType,
};
use authmux_oauth2::{NAME, OAuth2Builder, OAuth2Provider};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use httpmock::Method::POST;
use httpmock::MockServer;
use serde_json::{Value, json};
use url::Url;

const PATH: &str = "/oauth2/token";
/// A client id and secret that RFC 6749 §2.3.1 encoding changes.
const CLIENT_ID: &str = "client:1";
const SECRET: &str = "p@ss word";
/// `Basic ` + base64("client%3A1:p%40ss+word"): each part form-urlencoded
/// before base64.
const BASIC: &str = "Basic Y2xpZW50JTNBMTpwJTQwc3Mrd29yZA==";
const AUDIENCE_PARAM: &str = "audience=https%3A%2F%2Fapi.example.com";

fn builder(server: &MockServer) -> OAuth2Builder {
    OAuth2Provider::builder(server.url(PATH), CLIENT_ID, ClientSecret::inline(SECRET))
}

fn provider(server: &MockServer) -> authmux_oauth2::OAuth2Source {
    builder(server)
        .scopes(["read", "write"])
        .extra_param("audience", "https://api.example.com")
        .build()
        .expect("valid provider")
}

/// Answers any POST to the token path with `status`, `headers` and `body`.
async fn answer<'a>(
    server: &'a MockServer,
    status: u16,
    headers: &[(&str, &str)],
    body: &str,
) -> httpmock::Mock<'a> {
    let headers: Vec<(String, String)> = headers
        .iter()
        .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
        .collect();
    let body = body.to_owned();
    server
        .mock_async(move |when, then| {
            when.method(POST).path(PATH);
            let mut then = then.status(status);
            for (name, value) in headers {
                then = then.header(name, value);
            }
            then.body(body);
        })
        .await
}

async fn answer_json(server: &MockServer, status: u16, body: Value) {
    answer(
        server,
        status,
        &[("content-type", "application/json")],
        &body.to_string(),
    )
    .await;
}

async fn fetch(server: &MockServer) -> Result<Token, Error> {
    provider(server).fetch_token().await
}

fn assert_no_secret(error: &Error) {
    for text in [error.to_string(), format!("{error:?}")] {
        assert!(!text.contains(SECRET), "secret leaked: {text}");
        assert!(!text.contains("p%40ss"), "encoded secret leaked: {text}");
    }
}

fn jwt_expiring_in(seconds: u64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs();
    format!(
        "{}.{}.c2ln",
        URL_SAFE_NO_PAD.encode(r#"{"alg":"RS256","typ":"JWT"}"#),
        URL_SAFE_NO_PAD.encode(json!({"exp": now + seconds, "sub": "client:1"}).to_string())
    )
}

#[tokio::test]
async fn basic_style_sends_the_exact_request() {
    let server = MockServer::start_async().await;
    let mock = server
        .mock_async(|when, then| {
            when.method(POST)
                .path(PATH)
                .header("content-type", "application/x-www-form-urlencoded")
                .header("accept", "application/json")
                .header("authorization", BASIC)
                .header("user-agent", concat!("authmux/", env!("CARGO_PKG_VERSION")))
                .header_missing("dpop")
                .body(format!(
                    "grant_type=client_credentials&scope=read+write&{AUDIENCE_PARAM}"
                ));
            then.status(200).json_body(json!({
                "access_token": "opaque-access-token",
                "token_type": "Bearer",
                "expires_in": 3600,
                "scope": "read write",
            }));
        })
        .await;
    let token = fetch(&server).await.expect("token");
    mock.assert_async().await;
    assert_eq!(token.secret().expose_secret(), "opaque-access-token");
    assert_eq!(token.token_type(), &TokenType::Bearer);
    assert_eq!(token.lifetime(), Duration::from_secs(3600));
    assert_eq!(token.scope(), Some("read write"));
    assert_eq!(token.authorization(), "Bearer opaque-access-token");
}

#[tokio::test]
async fn post_style_sends_the_credentials_in_the_body() {
    let server = MockServer::start_async().await;
    let mock = server
        .mock_async(|when, then| {
            when.method(POST)
                .path(PATH)
                .header("content-type", "application/x-www-form-urlencoded")
                .header("accept", "application/json")
                .header_missing("authorization")
                .body(format!(
                    "grant_type=client_credentials&scope=read&client_id=client%3A1\
                     &client_secret=p%40ss+word&{AUDIENCE_PARAM}&resource=urn%3Aapi"
                ));
            then.status(200)
                .json_body(json!({"access_token": "t", "token_type": "Bearer", "expires_in": 60}));
        })
        .await;
    let token = builder(&server)
        .client_auth(ClientAuth::Body)
        .scope("read")
        .extra_params([
            ("resource", "urn:api"),
            ("audience", "https://api.example.com"),
        ])
        .build()
        .expect("valid provider")
        .fetch_token()
        .await
        .expect("token");
    mock.assert_async().await;
    assert_eq!(token.lifetime(), Duration::from_secs(60));
}

#[tokio::test]
async fn no_scopes_means_no_scope_parameter() {
    let server = MockServer::start_async().await;
    let mock = server
        .mock_async(|when, then| {
            when.method(POST)
                .path(PATH)
                .header("authorization", BASIC)
                .body("grant_type=client_credentials");
            then.status(200)
                .json_body(json!({"access_token": "t", "token_type": "Bearer"}));
        })
        .await;
    builder(&server)
        .build()
        .expect("valid provider")
        .fetch_token()
        .await
        .expect("token");
    mock.assert_async().await;
}

#[tokio::test]
async fn any_2xx_and_any_expires_in_shape_is_accepted() {
    let cases = [
        (200, json!(3600), Duration::from_secs(3600)),
        (201, json!(3600), Duration::from_secs(3600)),
        (200, json!("3600"), Duration::from_secs(3600)),
        (200, json!(" 120 "), Duration::from_secs(120)),
        (200, json!(59.5), Duration::from_millis(59_500)),
        (202, json!(null), Duration::from_secs(300)),
    ];
    for (status, expires_in, lifetime) in cases {
        let server = MockServer::start_async().await;
        answer_json(
            &server,
            status,
            json!({"access_token": "t", "token_type": "Bearer", "expires_in": expires_in}),
        )
        .await;
        let token = fetch(&server).await.expect("token");
        assert_eq!(token.lifetime(), lifetime, "{status} {expires_in}");
    }
}

#[tokio::test]
async fn missing_expires_in_falls_back_to_five_minutes() {
    let server = MockServer::start_async().await;
    answer_json(
        &server,
        200,
        json!({"access_token": "t", "token_type": "Bearer"}),
    )
    .await;
    let token = fetch(&server).await.expect("token");
    assert_eq!(token.lifetime(), Duration::from_secs(300));
}

#[tokio::test]
async fn a_jwt_exp_caps_expires_in() {
    let server = MockServer::start_async().await;
    answer_json(
        &server,
        200,
        json!({"access_token": jwt_expiring_in(600), "token_type": "Bearer", "expires_in": 3600}),
    )
    .await;
    let token = fetch(&server).await.expect("token");
    assert!(token.lifetime() <= Duration::from_secs(600), "{token:?}");
    assert!(token.lifetime() >= Duration::from_secs(590), "{token:?}");
}

#[tokio::test]
async fn lower_case_bearer_is_sent_as_bearer() {
    let server = MockServer::start_async().await;
    answer_json(
        &server,
        200,
        json!({"access_token": "abc", "token_type": "bearer", "expires_in": 3600}),
    )
    .await;
    let token = fetch(&server).await.expect("token");
    assert_eq!(token.token_type(), &TokenType::Bearer);
    assert_eq!(token.authorization(), "Bearer abc");
}

#[tokio::test]
async fn oauth_error_bodies_are_refusals_that_keep_code_and_description() {
    let server = MockServer::start_async().await;
    answer_json(
        &server,
        400,
        json!({"error": "invalid_scope", "error_description": "Scope \"admin\" is not allowed"}),
    )
    .await;
    let error = fetch(&server).await.expect_err("refused");
    assert_eq!(error.kind(), ErrorKind::Refused);
    assert_eq!(error.status(), Some(400));
    assert_eq!(error.oauth_code(), Some("invalid_scope"));
    assert_eq!(
        error.oauth_description(),
        Some("Scope \"admin\" is not allowed")
    );
    assert!(!error.is_transient());
    assert!(error.to_string().contains("invalid_scope"), "{error}");
    assert_no_secret(&error);
}

#[tokio::test]
async fn invalid_client_is_permanent_and_an_echoed_secret_is_scrubbed() {
    let server = MockServer::start_async().await;
    let mock = answer(
        &server,
        401,
        &[
            ("content-type", "application/json"),
            ("www-authenticate", "Basic realm=\"idp\""),
        ],
        &json!({
            "error": "invalid_client",
            "error_description": format!("Client authentication failed for secret {SECRET}"),
        })
        .to_string(),
    )
    .await;
    let error = fetch(&server).await.expect_err("refused");
    assert_eq!(mock.calls_async().await, 1, "one round trip, no retry");
    assert_eq!(error.kind(), ErrorKind::Refused);
    assert_eq!(error.status(), Some(401));
    assert_eq!(error.oauth_code(), Some("invalid_client"));
    assert!(!error.is_transient());
    assert!(
        error
            .oauth_description()
            .is_some_and(|description| description.contains("[redacted]")),
        "{error:?}"
    );
    assert_no_secret(&error);
}

#[tokio::test]
async fn a_quoted_request_body_does_not_leak_the_encoded_secret() {
    let server = MockServer::start_async().await;
    answer(
        &server,
        400,
        &[("content-type", "text/plain")],
        "cannot parse grant_type=client_credentials&client_id=client%3A1&client_secret=p%40ss+word",
    )
    .await;
    let error = builder(&server)
        .client_auth(ClientAuth::Body)
        .build()
        .expect("valid provider")
        .fetch_token()
        .await
        .expect_err("refused");
    assert_eq!(error.kind(), ErrorKind::Refused);
    assert!(error.message().contains("[redacted]"), "{error}");
    assert_no_secret(&error);
}

#[tokio::test]
async fn unavailable_is_transient_with_retry_after() {
    let server = MockServer::start_async().await;
    answer(
        &server,
        503,
        &[("content-type", "application/json"), ("retry-after", "7")],
        r#"{"error":"temporarily_unavailable"}"#,
    )
    .await;
    let error = fetch(&server).await.expect_err("unavailable");
    assert_eq!(error.kind(), ErrorKind::Server);
    assert_eq!(error.status(), Some(503));
    assert!(error.is_transient());
    assert_eq!(error.retry_after(), Some(Duration::from_secs(7)));
    assert_no_secret(&error);
}

#[tokio::test]
async fn an_html_error_page_is_a_server_error() {
    let server = MockServer::start_async().await;
    answer(
        &server,
        502,
        &[("content-type", "text/html")],
        "<html><body><h1>502 Bad Gateway</h1></body></html>",
    )
    .await;
    let error = fetch(&server).await.expect_err("bad gateway");
    assert_eq!(error.kind(), ErrorKind::Server);
    assert_eq!(error.status(), Some(502));
    assert!(error.is_transient());
    assert!(error.message().contains("HTML"), "{error}");
    assert!(!error.to_string().contains('\n'), "{error}");
    assert_no_secret(&error);
}

#[tokio::test]
async fn a_2xx_without_a_token_is_an_invalid_response() {
    let server = MockServer::start_async().await;
    answer(
        &server,
        200,
        &[("content-type", "text/html")],
        "<html>ok</html>",
    )
    .await;
    let error = fetch(&server).await.expect_err("html");
    assert_eq!(error.kind(), ErrorKind::InvalidResponse);
    assert!(!error.is_transient());
}

#[tokio::test]
async fn a_refused_connection_is_a_transport_error() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("address").port()
    };
    let provider = OAuth2Provider::builder(
        format!("http://127.0.0.1:{port}{PATH}"),
        CLIENT_ID,
        ClientSecret::inline(SECRET),
    )
    .build()
    .expect("valid provider");
    let error = provider.fetch_token().await.expect_err("refused");
    assert_eq!(error.kind(), ErrorKind::Transport, "{error:?}");
    assert!(error.is_transient());
    assert_eq!(error.status(), None);
    assert_no_secret(&error);
}

#[test]
fn plain_http_to_a_remote_host_is_a_config_error_naming_token_url() {
    let error = OAuth2Provider::builder(
        "http://idp.example.com/oauth2/token",
        CLIENT_ID,
        ClientSecret::inline(SECRET),
    )
    .build()
    .expect_err("plain http");
    assert_eq!(error.kind(), ErrorKind::Config);
    assert!(error.to_string().starts_with("token_url: "), "{error}");
    assert_no_secret(&error);
}

#[tokio::test]
async fn the_fetch_future_is_send() {
    fn assert_send<T: Send>(_: &T) {}
    let server = MockServer::start_async().await;
    let provider = provider(&server);
    let future = provider.fetch_token();
    assert_send(&future);
}

#[test]
fn debug_never_shows_the_secret() {
    let provider = OAuth2Provider::builder(
        "https://idp.example.com/oauth2/token",
        CLIENT_ID,
        ClientSecret::inline(SECRET),
    )
    .build()
    .expect("valid provider");
    let debug = format!("{provider:?}");
    assert!(!debug.contains(SECRET), "{debug}");
    assert!(debug.contains(CLIENT_ID), "{debug}");
}

fn remote(configure: impl FnOnce(OAuth2Builder) -> OAuth2Builder) -> authmux_oauth2::OAuth2Source {
    let builder = OAuth2Provider::builder(
        "https://idp.example.com/oauth2/token",
        CLIENT_ID,
        ClientSecret::inline(SECRET),
    );
    configure(builder).build().expect("valid provider")
}

#[test]
fn identity_covers_every_parameter_that_changes_the_token() {
    let base = remote(|builder| {
        builder
            .scopes(["write", "read"])
            .extra_param("audience", "https://api.example.com")
    });
    let identity = base.identity();
    assert_eq!(identity.provider(), NAME);
    assert_eq!(identity.endpoint(), "https://idp.example.com/oauth2/token");
    assert_eq!(identity.get("client_id"), Some(CLIENT_ID));
    assert_eq!(identity.get("scope"), Some("read write"), "sorted");
    assert_eq!(identity.get("client_auth"), Some("basic"));
    assert_eq!(
        identity.get("extra_params.audience"),
        Some("https://api.example.com")
    );
    assert_eq!(identity.get("dpop"), None);

    let same = remote(|builder| {
        builder
            .scopes(["read", "write"])
            .extra_param("audience", "https://api.example.com")
    });
    assert_eq!(identity, same.identity(), "scope order does not matter");

    let variants = [
        remote(|builder| {
            builder
                .scopes(["read"])
                .extra_param("audience", "https://api.example.com")
        }),
        remote(|builder| {
            builder
                .scopes(["read", "write"])
                .extra_param("audience", "https://other.example.com")
        }),
        remote(|builder| {
            builder
                .scopes(["read", "write"])
                .extra_param("audience", "https://api.example.com")
                .extra_param("resource", "urn:api")
        }),
        remote(|builder| {
            builder
                .scopes(["read", "write"])
                .extra_param("audience", "https://api.example.com")
                .client_auth(ClientAuth::Body)
        }),
    ];
    for variant in &variants {
        assert_ne!(identity, variant.identity(), "{}", variant.identity());
    }
    assert_eq!(variants[3].identity().get("client_auth"), Some("post"));

    for text in [identity.to_string(), format!("{identity:?}")] {
        assert!(!text.contains(SECRET), "{text}");
    }
}

/// A prover that hands out one fixed proof and records what it was asked.
struct FixedProver {
    requests: Mutex<Vec<(String, String)>>,
}

const PROOF: &str = "eyJ0eXAiOiJkcG9wK2p3dCJ9.e30.c2ln";
const THUMBPRINT: &str = "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs";

impl DpopProver for FixedProver {
    fn proof(
        &self,
        method: &str,
        url: &Url,
        nonce: Option<&str>,
        access_token: Option<&str>,
    ) -> Result<HeaderValue, Error> {
        assert_eq!((nonce, access_token), (None, None));
        self.requests
            .lock()
            .expect("not poisoned")
            .push((method.to_owned(), url.to_string()));
        Ok(HeaderValue::from_static(PROOF))
    }

    fn thumbprint(&self) -> &str {
        THUMBPRINT
    }
}

#[tokio::test]
async fn a_dpop_prover_adds_a_proof_to_every_request_and_its_key_to_the_identity() {
    let server = MockServer::start_async().await;
    let mock = server
        .mock_async(|when, then| {
            when.method(POST)
                .path(PATH)
                .header("authorization", BASIC)
                .header("dpop", PROOF);
            then.status(200).json_body(
                json!({"access_token": "bound", "token_type": "DPoP", "expires_in": 300}),
            );
        })
        .await;
    let prover = Arc::new(FixedProver {
        requests: Mutex::new(Vec::new()),
    });
    let provider = builder(&server)
        .dpop(authmux_core::Dpop::new(prover.clone()))
        .build()
        .expect("valid provider");
    for _ in 0..2 {
        let token = provider.fetch_token().await.expect("token");
        assert_eq!(token.token_type(), &TokenType::DPoP);
    }
    assert_eq!(mock.calls_async().await, 2);
    let requests = prover.requests.lock().expect("not poisoned").clone();
    assert_eq!(
        requests,
        vec![("POST".to_owned(), server.url(PATH)); 2],
        "a fresh proof for each request"
    );
    assert_eq!(provider.identity().get("dpop"), Some(THUMBPRINT));
    let bearer = builder(&server).build().expect("valid provider");
    assert_ne!(provider.identity(), bearer.identity());
}
