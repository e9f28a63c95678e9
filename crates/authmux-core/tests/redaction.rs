//! No secret ever reaches `Debug`, `Display`, errors or logs.

use authmux_core::wire::{ClientAuth, HttpClient, RequestSource, TokenRequest};
use authmux_core::{ManagedToken, SecretString};
use httpmock::Method::POST;
use httpmock::MockServer;
use serde_json::json;

const CLIENT_SECRET: &str = "client-secret-c0ffee";
const ACCESS_TOKEN: &str = "access-token-deadbeef";

fn request(server: &MockServer, auth: ClientAuth) -> TokenRequest {
    TokenRequest::builder(server.url("/oauth/token"))
        .json()
        .param("grant_type", "client_credentials")
        .client_credentials(
            auth,
            "client-1",
            SecretString::from(CLIENT_SECRET.to_owned()),
        )
        .build()
        .expect("valid request")
}

fn assert_clean(what: &str, text: &str) {
    assert!(
        !text.contains(CLIENT_SECRET),
        "client secret in {what}: {text}"
    );
    assert!(
        !text.contains(ACCESS_TOKEN),
        "access token in {what}: {text}"
    );
}

#[tokio::test]
async fn errors_carry_no_secret() {
    let server = MockServer::start_async().await;
    server
        .mock_async(|when, then| {
            when.method(POST).path("/oauth/token");
            then.status(401).json_body(json!({
                "error": "invalid_client",
                "error_description": format!("{CLIENT_SECRET} does not match"),
            }));
        })
        .await;
    let source = RequestSource::new(
        "test-idp",
        HttpClient::new().expect("client"),
        request(&server, ClientAuth::Body),
    )
    .expect("source");
    let cache = ManagedToken::builder(source).name("api").build();
    let error = cache.get().await.expect_err("refused");
    assert_eq!(error.client(), Some("api"));
    assert_eq!(error.provider(), Some("test-idp"));
    assert_clean("Display", &error.to_string());
    assert_clean("Debug", &format!("{error:?}"));
    let cooled = cache.get().await.expect_err("cooling down");
    assert_clean("Display", &cooled.to_string());
}

#[test]
fn raw_responses_and_builders_redact() {
    let body = format!(r#"{{"access_token":"{ACCESS_TOKEN}"}}"#).into_bytes();
    let response = authmux_core::wire::EndpointResponse::new(200, Default::default(), body);
    assert_clean("Debug of a raw response", &format!("{response:?}"));
    let builder = TokenRequest::builder("https://idp.example/token").client_credentials(
        ClientAuth::Basic,
        "client-1",
        SecretString::from(CLIENT_SECRET.to_owned()),
    );
    assert_clean("Debug of a request builder", &format!("{builder:?}"));
    let request = builder.build().expect("valid request");
    assert_clean("Debug of a Basic request", &format!("{request:?}"));
    let token = authmux_core::Token::builder(ACCESS_TOKEN);
    assert_clean("Debug of a token builder", &format!("{token:?}"));
}
