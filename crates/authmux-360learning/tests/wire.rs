//! 360Learning's documented `/api/v2/oauth2/token` exchange, replayed
//! exactly against httpmock.

use authmux_core::EndpointBuilder as _;
use std::time::Duration;

use authmux_360learning::{Region, ThreeSixtyLearningProvider};
use authmux_core::wire::HttpClient;
use authmux_core::{ClientSecret, ErrorKind, ExposeSecret, TokenSource, TokenType};
use httpmock::Method::POST;
use httpmock::MockServer;
use serde_json::{Value, json};

const SECRET: &str = "360-secret-b7e2";
const USER: &str = "5e9f8a7b6c5d4e3f2a1b0c9d";

fn builder(server: &MockServer) -> authmux_360learning::ThreeSixtyLearningBuilder {
    ThreeSixtyLearningProvider::builder("your_client_ID", ClientSecret::inline(SECRET))
        .region(Region::Eu)
        .base_url(server.base_url())
        .http_client(HttpClient::new().expect("client"))
}

/// Mocks the token endpoint for exactly `body`, answering with the seed's
/// response (`expires_in` as the string "3600").
async fn expect_body(server: &MockServer, body: Value) -> httpmock::Mock<'_> {
    server
        .mock_async(|when, then| {
            when.method(POST)
                .path("/api/v2/oauth2/token")
                .header("accept", "application/json")
                .header("content-type", "application/json")
                .header_missing("authorization")
                .json_body(body);
            then.status(200).json_body(json!({
                "token_type": "Bearer",
                "access_token": "your_access_token",
                "expires_in": "3600",
            }));
        })
        .await
}

#[tokio::test]
async fn replays_the_documented_exchange() {
    let server = MockServer::start_async().await;
    let mock = expect_body(
        &server,
        json!({
            "grant_type": "client_credentials",
            "client_id": "your_client_ID",
            "client_secret": SECRET,
        }),
    )
    .await;
    let provider = builder(&server).build().expect("valid provider");
    let token = provider.fetch_token().await.expect("token");
    mock.assert_async().await;
    assert_eq!(token.secret().expose_secret(), "your_access_token");
    assert_eq!(token.token_type(), &TokenType::Bearer);
    assert_eq!(
        token.lifetime(),
        Duration::from_secs(3600),
        "string expires_in"
    );
    assert_eq!(provider.api_headers()["360-api-version"], "v2.0");
}

#[tokio::test]
async fn company_and_user_ids_are_sent_only_when_configured() {
    let server = MockServer::start_async().await;
    let mock = expect_body(
        &server,
        json!({
            "grant_type": "client_credentials",
            "client_id": "your_client_ID",
            "client_secret": SECRET,
            "company_id": "company-1",
            "user_id": USER,
        }),
    )
    .await;
    builder(&server)
        .company_id("company-1")
        .user_id(USER)
        .build()
        .expect("valid provider")
        .fetch_token()
        .await
        .expect("token");
    mock.assert_async().await;
}

#[tokio::test]
async fn a_numeric_expires_in_is_accepted_too() {
    let server = MockServer::start_async().await;
    server
        .mock_async(|when, then| {
            when.method(POST).path("/api/v2/oauth2/token");
            then.status(200).json_body(
                json!({"token_type": "Bearer", "access_token": "t", "expires_in": 1800}),
            );
        })
        .await;
    let token = builder(&server)
        .build()
        .expect("valid")
        .fetch_token()
        .await
        .expect("token");
    assert_eq!(token.lifetime(), Duration::from_secs(1800));
}

#[tokio::test]
async fn documented_errors_have_a_code_and_no_description() {
    for (status, code) in [
        (400, "invalid_request"),
        (400, "unsupported_grant_type"),
        (400, "non_existing_user"),
        (401, "invalid_client"),
    ] {
        let server = MockServer::start_async().await;
        server
            .mock_async(|when, then| {
                when.method(POST).path("/api/v2/oauth2/token");
                then.status(status).json_body(json!({"error": code}));
            })
            .await;
        let error = builder(&server)
            .build()
            .expect("valid")
            .fetch_token()
            .await
            .expect_err("refused");
        assert_eq!(error.kind(), ErrorKind::Refused, "{code}");
        assert_eq!(error.status(), Some(status));
        assert_eq!(error.oauth_code(), Some(code));
        assert_eq!(error.oauth_description(), None);
        assert!(!error.is_transient());
        assert!(!error.to_string().contains(SECRET));
    }
}
