//! Mention Me's documented exchange, replayed exactly against httpmock.

use authmux_core::EndpointBuilder as _;
use std::time::Duration;

use authmux_core::wire::HttpClient;
use authmux_core::{ClientSecret, ErrorKind, ManagedToken, TokenSource, TokenType};
use authmux_mention_me::{MentionMeProvider, MentionMeTokenExt};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use httpmock::Method::POST;
use httpmock::MockServer;
use serde_json::json;

const SECRET: &str = "mm-secret-4f1c";

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs() as i64
}

/// A token shaped like the seed's example payload, expiring in `exp_in` s.
fn seed_jwt(exp_in: i64) -> String {
    let now = unix_now();
    let payload = json!({
        "aud": ["project-test-2da703ca-e983-410e-93d0-442bb05b9b06"],
        "claims": {"env": "demo", "merchantId": "4259"},
        "exp": now + exp_in,
        "iat": now,
        "iss": "stytch.com/project-test-2da703ca-e983-410e-93d0-442bb05b9b06",
        "nbf": now,
        "scope": "customers:list",
        "sub": "m2m-client-test-3191ab24-133b-4634-a02d-0ec6249dd481"
    });
    format!(
        "{}.{}.c2ln",
        URL_SAFE_NO_PAD.encode(r#"{"alg":"RS256","typ":"JWT"}"#),
        URL_SAFE_NO_PAD.encode(payload.to_string())
    )
}

fn provider(server: &MockServer) -> authmux_core::wire::RequestSource {
    MentionMeProvider::builder("m2m-client-test-3191ab24", ClientSecret::inline(SECRET))
        .base_url(server.base_url())
        .http_client(HttpClient::new().expect("client"))
        .build()
        .expect("valid provider")
}

#[tokio::test]
async fn replays_the_documented_exchange() {
    let server = MockServer::start_async().await;
    let jwt = seed_jwt(3600);
    let response = json!({"access_token": jwt, "expires_in": 3600, "token_type": "bearer"});
    let mock = server
        .mock_async(|when, then| {
            when.method(POST)
                .path("/api/oauth/token")
                .header("content-type", "application/json")
                .header("accept", "application/json")
                .header_missing("authorization")
                .json_body(json!({
                    "client_id": "m2m-client-test-3191ab24",
                    "client_secret": SECRET,
                    "grant_type": "client_credentials",
                }));
            then.status(200).json_body(response);
        })
        .await;
    let token = provider(&server).fetch_token().await.expect("token");
    mock.assert_async().await;
    assert_eq!(token.token_type(), &TokenType::Bearer);
    assert!(
        token
            .authorization()
            .to_str()
            .expect("ascii")
            .starts_with("Bearer ey")
    );
    assert!(token.lifetime() <= Duration::from_secs(3600));
    assert!(token.lifetime() >= Duration::from_secs(3595));

    let claims = token.mention_me_claims().expect("claims");
    assert_eq!(claims.env.as_deref(), Some("demo"));
    assert_eq!(claims.merchant_id.as_deref(), Some("4259"));
    assert_eq!(claims.scopes, ["customers:list"]);
    assert_eq!(
        claims.sub.as_deref(),
        Some("m2m-client-test-3191ab24-133b-4634-a02d-0ec6249dd481")
    );
}

#[tokio::test]
async fn expiry_is_the_earlier_of_expires_in_and_the_jwt_exp() {
    let server = MockServer::start_async().await;
    let response =
        json!({"access_token": seed_jwt(600), "expires_in": 3600, "token_type": "bearer"});
    server
        .mock_async(|when, then| {
            when.method(POST).path("/api/oauth/token");
            then.status(200).json_body(response);
        })
        .await;
    let token = provider(&server).fetch_token().await.expect("token");
    assert!(
        token.lifetime() <= Duration::from_secs(600),
        "{:?}",
        token.lifetime()
    );
}

#[tokio::test]
async fn the_documented_401_shape_carries_its_message() {
    let server = MockServer::start_async().await;
    server
        .mock_async(|when, then| {
            when.method(POST).path("/api/oauth/token");
            then.status(401)
                .json_body(json!({"code": "401", "message": "Expired token."}));
        })
        .await;
    let cache = ManagedToken::builder(provider(&server))
        .name("referrals")
        .build();
    let error = cache.get().await.expect_err("refused");
    assert_eq!(error.kind(), ErrorKind::Refused);
    assert!(!error.is_transient());
    assert_eq!(error.oauth_code(), Some("401"));
    assert_eq!(error.oauth_description(), Some("Expired token."));
    assert!(authmux_mention_me::is_reauthentication_needed(&error));
    let text = error.to_string();
    assert!(
        text.starts_with("client \"referrals\" (mention-me): "),
        "{text}"
    );
    assert!(text.contains("Expired token."), "{text}");
    assert!(!text.contains(SECRET) && !format!("{error:?}").contains(SECRET));
}
