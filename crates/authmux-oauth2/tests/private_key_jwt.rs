//! `client_auth = "private_key_jwt"` against a standard token endpoint: the
//! exact form body, the assertion verified with jsonwebtoken, and a new
//! assertion for every request, retries included.

use authmux_core::ClientAuthBuilder as _;
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use authmux_core::{ClientSecret, ManagedToken, TokenSource as _};
use authmux_oauth2::{OAuth2Config, OAuth2Provider};
use authmux_testkit::{TokenServer, keys};
use httpmock::Method::POST;
use httpmock::MockServer;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Value, json};

const CLIENT_ID: &str = "generic-jwt-client";
/// A form body's fields, in order.
type Fields = Vec<(String, String)>;

const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

fn claims(assertion: &str, public_jwk: &Value, algorithm: Algorithm, aud: &str) -> Value {
    let jwk: Jwk = serde_json::from_value(public_jwk.clone()).expect("a public JWK");
    let key = DecodingKey::from_jwk(&jwk).expect("a usable key");
    let mut validation = Validation::new(algorithm);
    validation.set_audience(&[aud]);
    validation.set_issuer(&[CLIENT_ID]);
    validation.sub = Some(CLIENT_ID.to_owned());
    validation.set_required_spec_claims(&["exp", "iat", "aud", "iss", "sub"]);
    jsonwebtoken::decode::<Value>(assertion, &key, &validation)
        .expect("the assertion verifies")
        .claims
}

#[tokio::test]
async fn the_form_body_carries_client_id_and_an_assertion_for_the_token_url() {
    let server = MockServer::start_async().await;
    let bodies: Arc<Mutex<Vec<Fields>>> = Arc::default();
    let seen = Arc::clone(&bodies);
    let mock = server
        .mock_async(move |when, then| {
            when.method(POST)
                .path("/oauth2/token")
                .header("content-type", "application/x-www-form-urlencoded")
                .header_missing("authorization")
                .is_true(move |request| {
                    let fields = form_urlencoded::parse(request.body_ref())
                        .map(|(name, value)| (name.into_owned(), value.into_owned()))
                        .collect();
                    seen.lock().expect("bodies").push(fields);
                    true
                });
            then.status(200)
                .json_body(json!({"access_token": "at", "token_type": "Bearer", "expires_in": 60}));
        })
        .await;
    let token_url = server.url("/oauth2/token");
    let source =
        OAuth2Provider::private_key_jwt(&token_url, CLIENT_ID, ClientSecret::inline(keys::RSA_JWK))
            .scope("read")
            .build()
            .expect("valid");
    source.fetch_token().await.expect("token");
    mock.assert_async().await;

    let bodies = bodies.lock().expect("bodies").clone();
    let fields = &bodies[0];
    let names: Vec<&str> = fields.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(
        names,
        [
            "grant_type",
            "scope",
            "client_id",
            "client_assertion_type",
            "client_assertion"
        ]
    );
    assert_eq!(fields[0].1, "client_credentials");
    assert_eq!(fields[2].1, CLIENT_ID);
    assert_eq!(fields[3].1, JWT_BEARER);
    let claims = claims(
        &fields[4].1,
        &keys::public_jwk(keys::RSA_JWK),
        Algorithm::RS256,
        &token_url,
    );
    assert_eq!(claims["aud"], token_url.as_str());
}

#[tokio::test]
async fn every_attempt_has_a_new_assertion_even_across_a_retry_after_a_503() {
    let idp = TokenServer::start().await;
    idp.expect_client_key(CLIENT_ID, &keys::public_jwk(keys::EC_JWK));
    idp.fail_next(1, 503);
    let source = OAuth2Provider::private_key_jwt(
        idp.oauth2_token_url(),
        CLIENT_ID,
        ClientSecret::inline(keys::EC_SEC1_PEM),
    )
    .build()
    .expect("valid");
    let cache = ManagedToken::builder(source).name("api").build();
    cache.get().await.expect("a token after one retry");

    let recorded = idp.recorded();
    assert_eq!(recorded.len(), 2);
    let jtis: BTreeSet<String> = recorded
        .iter()
        .map(|request| {
            let assertion = request.fields["client_assertion"]
                .as_str()
                .expect("assertion");
            let claims = claims(
                assertion,
                &keys::public_jwk(keys::EC_JWK),
                Algorithm::ES256,
                &idp.oauth2_token_url(),
            );
            claims["jti"].as_str().expect("jti").to_owned()
        })
        .collect();
    assert_eq!(jtis.len(), 2, "the retry minted a new assertion");
    assert_eq!(idp.issued(), 1, "the server accepted the retry's assertion");
}

#[tokio::test]
async fn the_audience_can_be_set_for_an_issuer() {
    let idp = TokenServer::start().await;
    idp.expect_client_key(CLIENT_ID, &keys::public_jwk(keys::RSA_JWK));
    let source = OAuth2Provider::private_key_jwt(
        idp.oauth2_token_url(),
        CLIENT_ID,
        ClientSecret::inline(keys::RSA_PKCS8_PEM),
    )
    .client_assertion_audience("https://issuer.example.com")
    .build()
    .expect("valid");
    let error = source.fetch_token().await.expect_err("another audience");
    assert_eq!(error.oauth_code(), Some("invalid_client"));
    let assertion = idp.recorded()[0].fields["client_assertion"].clone();
    let claims = claims(
        assertion.as_str().expect("assertion"),
        &keys::public_jwk(keys::RSA_JWK),
        Algorithm::RS256,
        "https://issuer.example.com",
    );
    assert_eq!(claims["aud"], "https://issuer.example.com");
}

#[tokio::test]
async fn with_an_issuer_the_assertion_names_the_issuer_as_its_audience() {
    let idp = TokenServer::start().await;
    idp.expect_client_key(CLIENT_ID, &keys::public_jwk(keys::EC_JWK));
    let config: OAuth2Config = serde_json::from_value(json!({
        "issuer": idp.issuer(),
        "client_id": CLIENT_ID,
        "client_auth": "private_key_jwt",
        "client_assertion_key": keys::EC_JWK,
    }))
    .expect("valid config");
    let source = config.builder().build().expect("valid");
    source.fetch_token().await.expect("a token");

    let recorded = idp.recorded();
    let token_request = recorded
        .iter()
        .find(|request| request.fields.get("client_assertion").is_some())
        .expect("a token request");
    assert_eq!(token_request.path, authmux_testkit::OAUTH2_PATH);
    let claims = claims(
        token_request.fields["client_assertion"]
            .as_str()
            .expect("assertion"),
        &keys::public_jwk(keys::EC_JWK),
        Algorithm::ES256,
        &idp.issuer(),
    );
    assert_eq!(claims["aud"], idp.issuer().as_str());
    assert_eq!(idp.issued(), 1);
}

#[test]
fn config_reads_client_auth_and_the_assertion_keys() {
    let config: OAuth2Config = serde_json::from_value(json!({
        "token_url": "https://idp.example.com/oauth2/token",
        "client_id": CLIENT_ID,
        "client_auth": "private_key_jwt",
        "client_assertion_key": keys::EC_PKCS8_PEM,
        "client_assertion_kid": "ec-1",
    }))
    .expect("valid config");
    let source = config.builder().build().expect("valid");
    assert_eq!(
        source.identity().get("client_auth"),
        Some("private_key_jwt")
    );
    assert!(source.identity().get("client_assertion_key").is_some());
    assert!(!format!("{config:?}").contains(keys::EC_PKCS8_PEM.lines().nth(1).expect("line")));
    let error = OAuth2Provider::private_key_jwt(
        "https://idp.example.com/oauth2/token",
        CLIENT_ID,
        ClientSecret::inline(keys::EC_JWK),
    )
    .extra_param("client_assertion", "x")
    .build()
    .expect_err("reserved");
    assert!(
        error
            .to_string()
            .starts_with("extra_params.client_assertion: "),
        "{error}"
    );
}
