//! Auth0's documented `/oauth/token` exchange, replayed exactly against
//! httpmock, in every body and client-authentication style.

use authmux_core::ClientAuthBuilder as _;
use authmux_core::EndpointBuilder as _;
use std::sync::Arc;
use std::time::Duration;

use authmux_auth0::{Auth0Builder, Auth0Provider};
use authmux_core::wire::HeaderValue;
use authmux_core::wire::{BodyEncoding, ClientAuth, HttpClient};
use authmux_core::{
    ClientSecret, DpopProver, Error, ErrorKind, ExposeSecret, TokenSource, TokenType,
};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use httpmock::Method::POST;
use httpmock::MockServer;
use serde_json::json;
use url::Url;

const SECRET: &str = "auth0-secret-91d0";

fn builder(server: &MockServer) -> Auth0Builder {
    Auth0Provider::builder(
        server.base_url(),
        "my-client-id",
        ClientSecret::inline(SECRET),
    )
    .audience("https://api.example.com")
    .http_client(HttpClient::new().expect("client"))
}

fn seed_response() -> serde_json::Value {
    json!({"access_token": "eyJz93a...k4laUWw", "token_type": "Bearer", "expires_in": 86400})
}

#[tokio::test]
async fn replays_the_documented_json_exchange() {
    let server = MockServer::start_async().await;
    let mock = server
        .mock_async(|when, then| {
            when.method(POST)
                .path("/oauth/token")
                .header("content-type", "application/json")
                .header("accept", "application/json")
                .header_missing("authorization")
                .header_missing("dpop")
                .json_body(json!({
                    "grant_type": "client_credentials",
                    "client_id": "my-client-id",
                    "client_secret": SECRET,
                    "audience": "https://api.example.com",
                    "organization": "org_123",
                }));
            then.status(200).json_body(seed_response());
        })
        .await;
    let token = builder(&server)
        .organization("org_123")
        .build()
        .expect("valid")
        .fetch_token()
        .await
        .expect("token");
    mock.assert_async().await;
    assert_eq!(token.secret().expose_secret(), "eyJz93a...k4laUWw");
    assert_eq!(token.token_type(), &TokenType::Bearer);
    assert_eq!(token.lifetime(), Duration::from_secs(86400));
}

#[tokio::test]
async fn resource_replaces_audience() {
    let server = MockServer::start_async().await;
    let mock = server
        .mock_async(|when, then| {
            when.method(POST).path("/oauth/token").json_body(json!({
                "grant_type": "client_credentials",
                "client_id": "my-client-id",
                "client_secret": SECRET,
                "resource": "https://api.example.com",
            }));
            then.status(200).json_body(seed_response());
        })
        .await;
    Auth0Provider::builder(
        server.base_url(),
        "my-client-id",
        ClientSecret::inline(SECRET),
    )
    .resource("https://api.example.com")
    .build()
    .expect("valid")
    .fetch_token()
    .await
    .expect("token");
    mock.assert_async().await;
}

#[tokio::test]
async fn form_body_with_basic_authentication() {
    let server = MockServer::start_async().await;
    let basic = format!(
        "Basic {}",
        STANDARD.encode(format!("my-client-id:{SECRET}"))
    );
    let mock = server
        .mock_async(move |when, then| {
            when.method(POST)
                .path("/oauth/token")
                .header("content-type", "application/x-www-form-urlencoded")
                .header("authorization", basic)
                .body("grant_type=client_credentials&audience=https%3A%2F%2Fapi.example.com");
            then.status(200).json_body(seed_response());
        })
        .await;
    builder(&server)
        .body(BodyEncoding::Form)
        .client_auth(ClientAuth::Basic)
        .build()
        .expect("valid")
        .fetch_token()
        .await
        .expect("token");
    mock.assert_async().await;
}

#[tokio::test]
async fn form_body_with_credentials_in_the_body() {
    let server = MockServer::start_async().await;
    let body = format!(
        "grant_type=client_credentials&client_id=my-client-id&client_secret={SECRET}\
         &audience=https%3A%2F%2Fapi.example.com"
    );
    let mock = server
        .mock_async(move |when, then| {
            when.method(POST)
                .path("/oauth/token")
                .header("content-type", "application/x-www-form-urlencoded")
                .header_missing("authorization")
                .body(body);
            then.status(200).json_body(seed_response());
        })
        .await;
    builder(&server)
        .body(BodyEncoding::Form)
        .build()
        .expect("valid")
        .fetch_token()
        .await
        .expect("token");
    mock.assert_async().await;
}

async fn refusal(status: u16, body: serde_json::Value) -> Error {
    let server = MockServer::start_async().await;
    server
        .mock_async(|when, then| {
            when.method(POST).path("/oauth/token");
            then.status(status).json_body(body);
        })
        .await;
    builder(&server)
        .build()
        .expect("valid")
        .fetch_token()
        .await
        .expect_err("refused")
}

#[tokio::test]
async fn forbidden_errors_are_permanent_and_keep_their_descriptions() {
    for code in ["access_denied", "unauthorized_client", "invalid_grant"] {
        let error = refusal(
            403,
            json!({"error": code, "error_description": "Client has not been granted scopes"}),
        )
        .await;
        assert_eq!(error.kind(), ErrorKind::Refused);
        assert!(!error.is_transient(), "{code}");
        assert_eq!(error.oauth_code(), Some(code));
        assert_eq!(
            error.oauth_description(),
            Some("Client has not been granted scopes")
        );
    }
    let error = refusal(
        401,
        json!({"error": "invalid_client", "error_description": "x"}),
    )
    .await;
    assert!(!error.is_transient());
    let error = refusal(503, json!({"error": "temporarily_unavailable"})).await;
    assert!(error.is_transient());
}

#[tokio::test]
async fn too_many_requests_honours_retry_after_then_the_reset_header() {
    let server = MockServer::start_async().await;
    server
        .mock_async(|when, then| {
            when.method(POST).path("/oauth/token");
            then.status(429)
                .header("retry-after", "12")
                .header("x-ratelimit-reset", "99999999999")
                .json_body(
                    json!({"error": "too_many_requests", "error_description": "Global limit"}),
                );
        })
        .await;
    let error = builder(&server)
        .build()
        .expect("valid")
        .fetch_token()
        .await
        .expect_err("429");
    assert_eq!(error.kind(), ErrorKind::RateLimited);
    assert_eq!(error.retry_after(), Some(Duration::from_secs(12)));

    let server = MockServer::start_async().await;
    let reset = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs()
        + 30;
    server
        .mock_async(move |when, then| {
            when.method(POST).path("/oauth/token");
            then.status(429)
                .header("x-ratelimit-limit", "30")
                .header("x-ratelimit-remaining", "0")
                .header("x-ratelimit-reset", reset.to_string())
                .json_body(json!({"error": "too_many_requests"}));
        })
        .await;
    let error = builder(&server)
        .build()
        .expect("valid")
        .fetch_token()
        .await
        .expect_err("429");
    let retry_after = error.retry_after().expect("from X-RateLimit-Reset");
    assert!(retry_after > Duration::from_secs(25) && retry_after <= Duration::from_secs(30));
    assert_eq!(error.rate_limit().remaining, Some(0));
}

struct FixedProver;

impl DpopProver for FixedProver {
    fn proof(
        &self,
        method: &str,
        url: &Url,
        nonce: Option<&str>,
        access_token: Option<&str>,
    ) -> Result<HeaderValue, Error> {
        assert_eq!(method, "POST");
        assert!(url.path().ends_with("/oauth/token"));
        assert_eq!((nonce, access_token), (None, None));
        Ok(HeaderValue::from_static("proof.jwt.value"))
    }

    fn thumbprint(&self) -> &str {
        "thumbprint-1"
    }
}

#[tokio::test]
async fn the_dpop_hook_adds_a_proof_header() {
    let server = MockServer::start_async().await;
    let mock = server
        .mock_async(|when, then| {
            when.method(POST)
                .path("/oauth/token")
                .header("dpop", "proof.jwt.value");
            then.status(200).json_body(
                json!({"access_token": "bound", "token_type": "DPoP", "expires_in": 86400}),
            );
        })
        .await;
    let provider = builder(&server)
        .dpop(authmux_core::Dpop::new(Arc::new(FixedProver)))
        .build()
        .expect("valid");
    let token = provider.fetch_token().await.expect("token");
    mock.assert_async().await;
    assert_eq!(token.token_type(), &TokenType::DPoP);
    assert_eq!(provider.identity().get("dpop"), Some("thumbprint-1"));
    let bearer = builder(&server).build().expect("valid").identity();
    assert_ne!(
        provider.identity(),
        bearer,
        "DPoP and Bearer are cached apart"
    );
}

/// The nonce claim of a DPoP proof (decoded, not verified: the proofs
/// themselves are verified independently in authmux-dpop's tests).
fn proof_nonce(request: &httpmock::prelude::HttpMockRequest) -> Option<String> {
    let proof = request.headers().get("dpop")?.to_str().ok()?.to_owned();
    let payload = proof.split('.').nth(1)?;
    let claims: serde_json::Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .ok()?,
    )
    .ok()?;
    claims["nonce"].as_str().map(str::to_owned)
}

#[tokio::test]
async fn dpop_from_config_answers_the_nonce_challenge_and_binds_the_token() {
    use base64::Engine as _;
    let server = MockServer::start_async().await;
    let challenge = server
        .mock_async(|when, then| {
            when.method(POST)
                .path("/oauth/token")
                .header_exists("dpop")
                .is_true(|request| proof_nonce(request).is_none());
            then.status(400)
                .header("dpop-nonce", "server-nonce-7")
                .json_body(json!({"error": "use_dpop_nonce", "error_description": "Authorization server requires nonce in DPoP proof"}));
        })
        .await;
    let answered = server
        .mock_async(|when, then| {
            when.method(POST)
                .path("/oauth/token")
                .is_true(|request| proof_nonce(request).as_deref() == Some("server-nonce-7"));
            then.status(200).json_body(
                json!({"access_token": "bound-token", "token_type": "DPoP", "expires_in": 86400}),
            );
        })
        .await;
    let config: authmux_auth0::Auth0Config = serde_json::from_value(json!({
        "domain": server.base_url(), "client_id": "my-client-id",
        "client_secret": SECRET, "audience": "https://api.example.com", "dpop": true,
    }))
    .expect("valid config");
    let provider = config.builder().build().expect("valid");
    let token = provider.fetch_token().await.expect("bound token");
    assert_eq!(challenge.calls_async().await, 1);
    assert_eq!(answered.calls_async().await, 1);
    assert_eq!(token.authorization(), "DPoP bound-token");
    let api = Url::parse("https://api.example.com/v1/things").expect("url");
    let proof = token
        .dpop_proof("GET", &api)
        .expect("a proof for the API call");
    let claims: serde_json::Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(
                proof
                    .to_str()
                    .expect("ascii")
                    .split('.')
                    .nth(1)
                    .expect("payload"),
            )
            .expect("base64url"),
    )
    .expect("json");
    assert_eq!(claims["htm"], "GET");
    assert_eq!(claims["htu"], "https://api.example.com/v1/things");
    assert!(claims["ath"].is_string());
    assert!(provider.identity().get("dpop").is_some());
    assert!(!format!("{provider:?} {config:?}").contains(SECRET));
}

#[tokio::test]
async fn a_bearer_answer_to_a_dpop_client_is_an_error_unless_accepted() {
    let server = MockServer::start_async().await;
    server
        .mock_async(|when, then| {
            when.method(POST).path("/oauth/token").header_exists("dpop");
            then.status(200).json_body(seed_response());
        })
        .await;
    let config = |accept: bool| -> authmux_auth0::Auth0Config {
        serde_json::from_value(json!({
            "domain": server.base_url(), "client_id": "my-client-id", "client_secret": SECRET,
            "audience": "https://api.example.com", "dpop": true, "accept_bearer_downgrade": accept,
        }))
        .expect("valid config")
    };
    let error = config(false)
        .builder()
        .build()
        .expect("valid")
        .fetch_token()
        .await
        .expect_err("downgrade");
    assert!(
        error.to_string().contains("accept_bearer_downgrade"),
        "{error}"
    );
    let token = config(true)
        .builder()
        .build()
        .expect("valid")
        .fetch_token()
        .await
        .expect("accepted");
    assert_eq!(token.token_type(), &TokenType::Bearer);
}

#[test]
fn a_bad_dpop_key_file_names_the_file_and_not_its_contents() {
    let path = std::env::temp_dir().join(format!("authmux-auth0-bad-key-{}", std::process::id()));
    std::fs::write(
        &path,
        "-----BEGIN PRIVATE KEY-----\nc2VjcmV0LWtleS1tYXRlcmlhbA==\n-----END PRIVATE KEY-----\n",
    )
    .expect("write");
    let config: authmux_auth0::Auth0Config = serde_json::from_value(json!({
        "domain": "tenant.eu.auth0.com", "client_id": "id", "client_secret": SECRET,
        "audience": "https://api", "dpop": {"key_file": path},
    }))
    .expect("valid config");
    let error = config.builder().build().expect_err("bad key");
    std::fs::remove_file(&path).expect("remove");
    let text = error.to_string();
    assert!(text.starts_with("dpop.key_file: "), "{text}");
    assert!(text.contains(&path.display().to_string()), "{text}");
    assert!(!text.contains("c2VjcmV0"), "{text}");
}
