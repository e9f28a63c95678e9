//! Helpers for the runnable examples of authmux: in-process mocks of the
//! providers' token endpoints, each speaking its documented wire format.
//! See the `[[example]]` targets of this crate.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use httpmock::Method::POST;
use httpmock::{Mock, MockServer};
use serde_json::{Value, json};

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs())
}

/// An unsigned JWT-shaped token whose payload is `claims` plus `iat`, `nbf`
/// and `exp` (`lifetime` seconds from now). The examples never verify it.
pub fn demo_jwt(mut claims: Value, lifetime: u64) -> String {
    let now = unix_now();
    claims["iat"] = json!(now);
    claims["nbf"] = json!(now);
    claims["exp"] = json!(now + lifetime);
    format!(
        "{}.{}.c2lnbmF0dXJl",
        URL_SAFE_NO_PAD.encode(r#"{"alg":"RS256","typ":"JWT"}"#),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    )
}

/// Mention Me's `POST /api/oauth/token`: a JSON body with `client_id`,
/// `client_secret` and `grant_type`; a JWT bound to merchant 4259 in the
/// demo environment, `"token_type":"bearer"` in lower case.
pub async fn mock_mention_me<'a>(
    server: &'a MockServer,
    client_id: &str,
    secret: &str,
) -> Mock<'a> {
    let body = json!({"client_id": client_id, "client_secret": secret, "grant_type": "client_credentials"});
    let token = demo_jwt(
        json!({
            "aud": ["project-test-2da703ca-e983-410e-93d0-442bb05b9b06"],
            "claims": {"env": "demo", "merchantId": "4259"},
            "iss": "stytch.com/project-test-2da703ca-e983-410e-93d0-442bb05b9b06",
            "scope": "customers:list",
            "sub": "m2m-client-test-3191ab24-133b-4634-a02d-0ec6249dd481",
        }),
        3600,
    );
    server
        .mock_async(|when, then| {
            when.method(POST)
                .path("/api/oauth/token")
                .header("content-type", "application/json")
                .json_body(body);
            then.status(200).json_body(json!({
                "access_token": token, "expires_in": 3600, "token_type": "bearer",
            }));
        })
        .await
}

/// 360Learning's `POST /api/v2/oauth2/token`: a JSON body, `expires_in`
/// answered as the string `"3600"`.
pub async fn mock_360learning<'a>(
    server: &'a MockServer,
    client_id: &str,
    secret: &str,
) -> Mock<'a> {
    let body = json!({"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret});
    let token = demo_jwt(json!({"sub": client_id}), 3600);
    server
        .mock_async(|when, then| {
            when.method(POST)
                .path("/api/v2/oauth2/token")
                .header("accept", "application/json")
                .header("content-type", "application/json")
                .json_body(body);
            then.status(200).json_body(json!({
                "token_type": "Bearer", "access_token": token, "expires_in": "3600",
            }));
        })
        .await
}

/// Auth0's `POST /oauth/token` for one `audience`: a 24-hour token.
pub async fn mock_auth0<'a>(
    server: &'a MockServer,
    client_id: &str,
    secret: &str,
    audience: &str,
) -> Mock<'a> {
    let body = json!({
        "grant_type": "client_credentials", "client_id": client_id,
        "client_secret": secret, "audience": audience,
    });
    let token = demo_jwt(
        json!({"aud": audience, "azp": client_id, "gty": "client-credentials"}),
        86400,
    );
    server
        .mock_async(|when, then| {
            when.method(POST)
                .path("/oauth/token")
                .header("content-type", "application/json")
                .json_body(body);
            then.status(200).json_body(json!({
                "access_token": token, "token_type": "Bearer", "expires_in": 86400,
            }));
        })
        .await
}

/// A standard RFC 6749 token endpoint at `path`: form body, HTTP Basic.
pub async fn mock_oauth2<'a>(server: &'a MockServer, path: &str) -> Mock<'a> {
    let path = path.to_owned();
    server
        .mock_async(move |when, then| {
            when.method(POST)
                .path(path)
                .header("content-type", "application/x-www-form-urlencoded")
                .header_exists("authorization");
            then.status(200).json_body(json!({
                "access_token": "opaque-oauth2-token", "token_type": "Bearer",
                "expires_in": 3600, "scope": "read:things",
            }));
        })
        .await
}
