//! Auth0's documented `/oauth/token` exchange, replayed exactly against
//! httpmock, in every body and client-authentication style.

use std::sync::Arc;
use std::time::Duration;

use authmux_auth0::{Auth0Builder, Auth0Provider};
use authmux_core::wire::{BodyEncoding, ClientAuth, HttpClient};
use authmux_core::{
    ClientSecret, DpopProver, Error, ErrorKind, ExposeSecret, TokenSource, TokenType,
};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use httpmock::Method::POST;
use httpmock::MockServer;
use reqwest::header::HeaderValue;
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
