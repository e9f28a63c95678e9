//! `client_auth = "private_key_jwt"` against a standard token endpoint: the
//! exact form body, the assertion verified with jsonwebtoken, and a new
//! assertion for every request, retries included.

use authmux_core::ClientAuthBuilder as _;
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use authmux_core::{
    ClientSecret, Error, ErrorKind, ManagedToken, SigningAlgorithm, TokenSource as _,
};
use authmux_oauth2::{OAuth2Builder, OAuth2Config, OAuth2Provider, OAuth2Source};
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

/// Builds a `private_key_jwt` client of `idp` that signs with `key`, as
/// `configure` adjusts it.
fn jwt_client(
    idp: &TokenServer,
    key: &str,
    configure: fn(OAuth2Builder) -> OAuth2Builder,
) -> Result<OAuth2Source, Error> {
    configure(OAuth2Provider::private_key_jwt(
        idp.oauth2_token_url(),
        CLIENT_ID,
        ClientSecret::inline(key),
    ))
    .build()
}

/// Gets one token from a server that knows `public_jwk`, and returns the
/// header of the assertion it accepted.
async fn accepted_header(source: &OAuth2Source, idp: &TokenServer, public_jwk: &Value) -> Value {
    idp.expect_client_key(CLIENT_ID, public_jwk);
    source
        .fetch_token()
        .await
        .expect("the server accepted the assertion");
    let recorded = idp.recorded();
    let assertion = recorded
        .iter()
        .rev()
        .find_map(|request| request.fields.get("client_assertion"))
        .and_then(Value::as_str)
        .expect("an assertion");
    let header = jsonwebtoken::decode_header(assertion).expect("a JWT");
    serde_json::to_value(header).expect("a header")
}

/// The build error of `key`, checked never to quote the key.
fn key_error(
    idp: &TokenServer,
    key: &str,
    configure: fn(OAuth2Builder) -> OAuth2Builder,
) -> String {
    let error = jwt_client(idp, key, configure)
        .expect_err("refused")
        .to_string();
    for line in key.lines().filter(|line| line.len() > 20) {
        assert!(!error.contains(line.trim()), "{error}");
    }
    error
}

fn jwk_with(jwk: &str, members: Value) -> String {
    let mut jwk: Value = serde_json::from_str(jwk).expect("a JWK");
    for (name, value) in members.as_object().expect("an object") {
        if value.is_null() {
            jwk.as_object_mut().expect("an object").remove(name);
        } else {
            jwk[name] = value.clone();
        }
    }
    jwk.to_string()
}

#[tokio::test]
async fn a_jwk_s_kid_reaches_the_header_unless_one_is_configured() {
    let idp = TokenServer::start().await;
    let rsa = keys::public_jwk(keys::RSA_JWK);
    let source = jwt_client(&idp, keys::RSA_JWK, |builder| builder).expect("valid");
    let header = accepted_header(&source, &idp, &rsa).await;
    assert_eq!(header["kid"], "rsa-1", "{header}");
    assert_eq!(header["alg"], "RS256", "{header}");

    let source = jwt_client(&idp, keys::EC_JWK, |builder| builder).expect("valid");
    let header = accepted_header(&source, &idp, &keys::public_jwk(keys::EC_JWK)).await;
    assert_eq!(header["kid"], "ec-1", "{header}");

    let source = jwt_client(&idp, keys::RSA_JWK, |builder| {
        builder.client_assertion_kid("configured")
    })
    .expect("valid");
    let header = accepted_header(&source, &idp, &rsa).await;
    assert_eq!(header["kid"], "configured", "the setting wins");

    // A PEM has no kid: the header has none either.
    let source = jwt_client(&idp, keys::RSA_PKCS8_PEM, |builder| builder).expect("valid");
    let header = accepted_header(&source, &idp, &rsa).await;
    assert!(header["kid"].is_null(), "{header}");
}

#[tokio::test]
async fn a_jwk_s_alg_is_the_default_and_a_contradicting_setting_is_a_config_error() {
    let idp = TokenServer::start().await;
    let rsa = keys::public_jwk(keys::RSA_JWK);
    let ps256 = jwk_with(keys::RSA_JWK, json!({"alg": "PS256", "use": "sig"}));
    let source = OAuth2Provider::private_key_jwt(
        idp.oauth2_token_url(),
        CLIENT_ID,
        ClientSecret::inline(ps256.clone()),
    )
    .build()
    .expect("valid");
    let header = accepted_header(&source, &idp, &rsa).await;
    assert_eq!(header["alg"], "PS256", "{header}");

    let agreeing = OAuth2Provider::private_key_jwt(
        idp.oauth2_token_url(),
        CLIENT_ID,
        ClientSecret::inline(ps256.clone()),
    )
    .client_assertion_alg(SigningAlgorithm::PS256)
    .build();
    assert!(agreeing.is_ok(), "the same alg twice is fine");
    let error = OAuth2Provider::private_key_jwt(
        idp.oauth2_token_url(),
        CLIENT_ID,
        ClientSecret::inline(ps256),
    )
    .client_assertion_alg(SigningAlgorithm::RS256)
    .build()
    .expect_err("a contradiction");
    assert_eq!(error.kind(), ErrorKind::Config);
    assert_eq!(
        error.to_string(),
        "client_assertion_alg: RS256 contradicts the \"alg\" PS256 of the JWK in \
         client_assertion_key; remove one of them"
    );

    for (members, why) in [
        (json!({"use": "enc"}), "\"use\""),
        (json!({"key_ops": ["verify"]}), "\"key_ops\""),
        (json!({"alg": "RSA-OAEP"}), "\"alg\""),
        (json!({"alg": "ES256"}), "\"alg\""),
    ] {
        let jwk = jwk_with(keys::RSA_JWK, members.clone());
        let error = key_error(&idp, &jwk, |builder| builder);
        assert!(error.starts_with("client_assertion_key: "), "{error}");
        assert!(error.contains(why), "{members}: {error}");
    }
    let signing = jwk_with(keys::RSA_JWK, json!({"key_ops": ["sign"], "use": "sig"}));
    assert!(jwt_client(&idp, &signing, |builder| builder).is_ok());
}

#[tokio::test]
async fn an_rsa_key_under_2048_bits_is_refused_as_too_short() {
    let idp = TokenServer::start().await;
    let error = key_error(&idp, keys::RSA_1024_TOO_SHORT_PEM, |builder| builder);
    assert!(error.starts_with("client_assertion_key: "), "{error}");
    assert!(error.contains("too short"), "{error}");
    assert!(error.contains("at least 2048 bits"), "{error}");
    assert!(!error.contains("not an RSA or P-256"), "{error}");
}

#[tokio::test]
async fn an_rsa_pss_key_signs_ps256() {
    let idp = TokenServer::start().await;
    for (key, public) in [
        (keys::RSA_PSS_PKCS8_PEM, keys::RSA_PSS_PUBLIC_JWK),
        (
            keys::RSA_PSS_SHA256_PKCS8_PEM,
            keys::RSA_PSS_SHA256_PUBLIC_JWK,
        ),
    ] {
        let source = jwt_client(&idp, key, |builder| builder).expect("an RSA-PSS key");
        let public: Value = serde_json::from_str(public).expect("a JWK");
        let header = accepted_header(&source, &idp, &public).await;
        assert_eq!(header["alg"], "PS256", "{header}");
    }
    // Such a key is bound to PSS: RS256 does not fit it.
    let error = key_error(&idp, keys::RSA_PSS_PKCS8_PEM, |builder| {
        builder.client_assertion_alg(SigningAlgorithm::RS256)
    });
    assert_eq!(
        error,
        "client_assertion_alg: RS256 does not fit the RSA key of client_assertion_key; use PS256"
    );
    // One bound to another hash cannot sign PS256 at all.
    let error = key_error(&idp, keys::RSA_PSS_SHA512_PKCS8_PEM, |builder| builder);
    assert!(error.contains("SHA-256"), "{error}");
    assert!(error.contains("rsa_pss_keygen_md:sha256"), "{error}");
}

#[tokio::test]
async fn a_jwk_set_of_one_private_key_and_a_pem_with_escaped_newlines_are_read() {
    let idp = TokenServer::start().await;
    let rsa = keys::public_jwk(keys::RSA_JWK);
    let private: Value = serde_json::from_str(keys::RSA_JWK).expect("a JWK");
    let set = json!({"keys": [keys::public_jwk(keys::EC_JWK), private]}).to_string();
    let source = jwt_client(&idp, &set, |builder| builder).expect("a set of one private key");
    let header = accepted_header(&source, &idp, &rsa).await;
    assert_eq!(header["kid"], "rsa-1", "the set's key names itself");

    let escaped = keys::RSA_PKCS8_PEM.trim_end().replace('\n', "\\n");
    assert!(!escaped.contains('\n'));
    let source = jwt_client(&idp, &escaped, |builder| builder).expect("an env-file PEM");
    accepted_header(&source, &idp, &rsa).await;

    let ec: Value = serde_json::from_str(keys::EC_JWK).expect("a JWK");
    let two = json!({"keys": [ec, serde_json::from_str::<Value>(keys::RSA_JWK).expect("a JWK")]});
    let error = key_error(&idp, &two.to_string(), |builder| builder);
    assert!(error.contains("several private keys"), "{error}");
    let none = json!({"keys": [keys::public_jwk(keys::EC_JWK)]}).to_string();
    let error = key_error(&idp, &none, |builder| builder);
    assert!(error.contains("a public key"), "{error}");
}

#[tokio::test]
async fn an_rsa_jwk_without_its_primes_is_refused_with_what_to_do() {
    let idp = TokenServer::start().await;
    let bare = jwk_with(
        keys::RSA_JWK,
        json!({"p": null, "q": null, "dp": null, "dq": null, "qi": null}),
    );
    let error = key_error(&idp, &bare, |builder| builder);
    assert!(
        error.starts_with("client_assertion_key: an RSA JWK without"),
        "{error}"
    );
    assert!(error.contains("p, q, dp, dq and qi"), "{error}");
    let d: Value = serde_json::from_str(keys::RSA_JWK).expect("a JWK");
    assert!(!error.contains(d["d"].as_str().expect("d")), "{error}");
}

/// An issuer whose metadata lists `algs` as the assertion algorithms it
/// accepts, and a client of it that signs with `key`.
async fn discovering_client(
    algs: Value,
    key: &str,
    alg: Option<SigningAlgorithm>,
) -> (TokenServer, OAuth2Source) {
    let idp = TokenServer::start().await;
    let mut metadata = idp.default_metadata();
    metadata["token_endpoint_auth_signing_alg_values_supported"] = algs;
    idp.serve_metadata(Some(metadata));
    let mut config: OAuth2Config = serde_json::from_value(json!({
        "issuer": idp.issuer(),
        "client_id": CLIENT_ID,
        "client_auth": "private_key_jwt",
        "client_assertion_key": key,
    }))
    .expect("valid config");
    config.auth.client_assertion_alg = alg;
    let source = config.builder().build().expect("valid");
    (idp, source)
}

#[tokio::test]
async fn discovery_picks_the_first_listed_algorithm_the_key_can_sign() {
    let rsa = keys::public_jwk(keys::RSA_JWK);
    let (idp, source) =
        discovering_client(json!(["PS256", "ES256"]), keys::RSA_PKCS8_PEM, None).await;
    let header = accepted_header(&source, &idp, &rsa).await;
    assert_eq!(header["alg"], "PS256", "FAPI 2.0 servers refuse RS256");

    let (idp, source) = discovering_client(
        json!(["ES256", "RS256", "PS256"]),
        keys::RSA_PKCS8_PEM,
        None,
    )
    .await;
    let header = accepted_header(&source, &idp, &rsa).await;
    assert_eq!(header["alg"], "RS256", "the server's order");

    let (_idp, source) = discovering_client(json!(["ES256"]), keys::RSA_PKCS8_PEM, None).await;
    let error = source.discover().await.expect_err("nothing fits");
    assert_eq!(error.kind(), ErrorKind::Config);
    let text = error.to_string();
    assert!(
        text.contains("token_endpoint_auth_signing_alg_values_supported: ES256"),
        "{text}"
    );

    let (_idp, source) = discovering_client(
        json!(["PS256", "ES256"]),
        keys::RSA_PKCS8_PEM,
        Some(SigningAlgorithm::RS256),
    )
    .await;
    let error = source.discover().await.expect_err("RS256 was asked for");
    assert_eq!(error.kind(), ErrorKind::Config);
    let text = error.to_string();
    assert!(text.contains("RS256"), "{text}");
    assert!(
        text.contains("token_endpoint_auth_signing_alg_values_supported: PS256, ES256"),
        "{text}"
    );
}
