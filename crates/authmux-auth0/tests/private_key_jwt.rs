//! `client_auth = "private_key_jwt"` against Auth0's `/oauth/token`: the
//! exact request, and every assertion verified independently with
//! jsonwebtoken against the public key.

use authmux_core::ClientAuthBuilder as _;
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use authmux_auth0::{Auth0Config, Auth0Provider};
use authmux_core::EndpointBuilder as _;
use authmux_core::wire::{BodyEncoding, ClientAuth, HttpClient};
use authmux_core::{ClientSecret, Dpop, SigningAlgorithm, TokenSource as _, TokenType};
use authmux_dpop::DpopKey;
use authmux_testkit::keys;
use httpmock::Method::POST;
use httpmock::MockServer;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value, json};

const CLIENT_ID: &str = "jwt-client-7c1e";
const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// Every body the mock received, as JSON or form fields.
#[derive(Clone, Default)]
struct Bodies(Arc<Mutex<Vec<Map<String, Value>>>>);

impl Bodies {
    fn all(&self) -> Vec<Map<String, Value>> {
        self.0.lock().expect("bodies").clone()
    }
}

async fn token_endpoint(server: &MockServer, content_type: &'static str) -> Bodies {
    let bodies = Bodies::default();
    let seen = bodies.clone();
    server
        .mock_async(move |when, then| {
            when.method(POST)
                .path("/oauth/token")
                .header("content-type", content_type)
                .header_missing("authorization")
                .is_true(move |request| {
                    let body = request.body_ref();
                    let fields: Map<String, Value> = if content_type == "application/json" {
                        serde_json::from_slice(body).unwrap_or_default()
                    } else {
                        form_urlencoded::parse(body)
                            .map(|(name, value)| (name.into_owned(), value.into_owned().into()))
                            .collect()
                    };
                    seen.0.lock().expect("bodies").push(fields);
                    true
                });
            then.status(200).json_body(json!({
                "access_token": "at-1", "token_type": "Bearer", "expires_in": 86400
            }));
        })
        .await;
    bodies
}

/// Verifies `assertion` with `public_jwk` and `algorithm`; returns the
/// header and claims.
fn verify(assertion: &str, public_jwk: &Value, algorithm: Algorithm, aud: &str) -> (Value, Value) {
    let jwk: Jwk = serde_json::from_value(public_jwk.clone()).expect("a public JWK");
    let key = DecodingKey::from_jwk(&jwk).expect("a usable key");
    let mut validation = Validation::new(algorithm);
    validation.set_audience(&[aud]);
    validation.set_issuer(&[CLIENT_ID]);
    validation.sub = Some(CLIENT_ID.to_owned());
    validation.set_required_spec_claims(&["exp", "iat", "aud", "iss", "sub"]);
    let claims = jsonwebtoken::decode::<Value>(assertion, &key, &validation)
        .expect("the assertion verifies")
        .claims;
    let header = assertion.split('.').next().expect("a header");
    let header: Value = serde_json::from_slice(
        &base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, header)
            .expect("base64url"),
    )
    .expect("JSON");
    let lifetime = claims["exp"].as_u64().expect("exp") - claims["iat"].as_u64().expect("iat");
    assert!((60..=300).contains(&lifetime), "{lifetime}");
    (header, claims)
}

fn names(fields: &Map<String, Value>) -> BTreeSet<&str> {
    fields.keys().map(String::as_str).collect()
}

#[tokio::test]
async fn an_rs256_assertion_from_a_pkcs1_key_replaces_the_secret_in_the_json_body() {
    let server = MockServer::start_async().await;
    let bodies = token_endpoint(&server, "application/json").await;
    let source = Auth0Provider::private_key_jwt(
        server.base_url(),
        CLIENT_ID,
        ClientSecret::inline(keys::RSA_PKCS1_PEM),
    )
    .audience("https://api.example.com")
    .client_assertion_kid("key-1")
    .http_client(HttpClient::new().expect("client"))
    .build()
    .expect("valid");
    for _ in 0..2 {
        source.fetch_token().await.expect("token");
    }

    let bodies = bodies.all();
    assert_eq!(bodies.len(), 2);
    let mut jtis = BTreeSet::new();
    for body in &bodies {
        assert_eq!(
            names(body),
            BTreeSet::from([
                "grant_type",
                "client_id",
                "audience",
                "client_assertion_type",
                "client_assertion"
            ])
        );
        assert_eq!(body["grant_type"], "client_credentials");
        assert_eq!(body["client_id"], CLIENT_ID);
        assert_eq!(body["audience"], "https://api.example.com");
        assert_eq!(body["client_assertion_type"], JWT_BEARER);
        let (header, claims) = verify(
            body["client_assertion"].as_str().expect("a string"),
            &keys::public_jwk(keys::RSA_JWK),
            Algorithm::RS256,
            &format!("{}/", server.base_url()),
        );
        assert_eq!(
            header,
            json!({"alg": "RS256", "typ": "JWT", "kid": "key-1"})
        );
        jtis.insert(claims["jti"].as_str().expect("jti").to_owned());
    }
    assert_eq!(jtis.len(), 2, "a new jti for every request");
}

#[tokio::test]
async fn ps256_from_pkcs8_and_es256_from_sec1_and_jwk_in_a_form_body() {
    let cases = [
        (
            keys::RSA_PKCS8_PEM,
            keys::RSA_JWK,
            Some(SigningAlgorithm::PS256),
            Algorithm::PS256,
        ),
        (keys::EC_SEC1_PEM, keys::EC_JWK, None, Algorithm::ES256),
        (keys::EC_PKCS8_PEM, keys::EC_JWK, None, Algorithm::ES256),
        (keys::EC_JWK, keys::EC_JWK, None, Algorithm::ES256),
        (keys::RSA_JWK, keys::RSA_JWK, None, Algorithm::RS256),
    ];
    for (key, jwk, chosen, expected) in cases {
        let server = MockServer::start_async().await;
        let bodies = token_endpoint(&server, "application/x-www-form-urlencoded").await;
        let mut builder =
            Auth0Provider::private_key_jwt(server.base_url(), CLIENT_ID, ClientSecret::inline(key))
                .audience("https://api.example.com")
                .body(BodyEncoding::Form)
                .http_client(HttpClient::new().expect("client"));
        if let Some(algorithm) = chosen {
            builder = builder.client_assertion_alg(algorithm);
        }
        builder
            .build()
            .expect("valid")
            .fetch_token()
            .await
            .expect("token");
        let bodies = bodies.all();
        assert_eq!(bodies.len(), 1);
        assert!(!bodies[0].contains_key("client_secret"));
        let (header, _) = verify(
            bodies[0]["client_assertion"].as_str().expect("a string"),
            &keys::public_jwk(jwk),
            expected,
            &format!("{}/", server.base_url()),
        );
        // A JWK's kid names the key in the header (OpenID Connect Core §10.1).
        let mut expected_header = json!({"alg": format!("{expected:?}"), "typ": "JWT"});
        if key.starts_with('{') {
            let kid = serde_json::from_str::<Value>(key).expect("a JWK")["kid"].clone();
            expected_header["kid"] = kid;
        }
        assert_eq!(header, expected_header);
    }
}

#[tokio::test]
async fn private_key_jwt_with_dpop_mints_a_new_assertion_for_the_nonce_retry() {
    let idp = authmux_testkit::TokenServer::start().await;
    idp.expect_client_key(CLIENT_ID, &keys::public_jwk(keys::EC_JWK));
    idp.require_dpop_nonce("nonce-1");
    let key = Arc::new(DpopKey::generate());
    let source = Auth0Provider::private_key_jwt(
        idp.base_url(),
        CLIENT_ID,
        ClientSecret::inline(keys::EC_JWK),
    )
    .audience("https://api.example.com")
    .dpop(Dpop::new(key))
    .build()
    .expect("valid");
    let token = source.fetch_token().await.expect("a DPoP token");
    assert_eq!(token.token_type(), &TokenType::DPoP);
    let recorded = idp.recorded();
    assert_eq!(recorded.len(), 2, "the nonce challenge, then the retry");
    let assertion = |index: usize| recorded[index].fields["client_assertion"].clone();
    assert_ne!(
        assertion(0),
        assertion(1),
        "the retry carries a new assertion"
    );
    assert!(
        recorded
            .iter()
            .all(|request| request.headers.contains_key("dpop"))
    );
}

#[tokio::test]
async fn a_key_the_server_does_not_know_is_refused() {
    let idp = authmux_testkit::TokenServer::start().await;
    idp.expect_client_key(CLIENT_ID, &keys::public_jwk(keys::RSA_JWK));
    let source = Auth0Provider::private_key_jwt(
        idp.base_url(),
        CLIENT_ID,
        ClientSecret::inline(keys::OTHER_RSA_PKCS1_PEM),
    )
    .audience("https://api.example.com")
    .build()
    .expect("valid");
    let error = source.fetch_token().await.expect_err("refused");
    assert_eq!(error.oauth_code(), Some("invalid_client"));
}

fn config(extra: Value) -> Result<Auth0Config, serde_json::Error> {
    let mut config = json!({
        "domain": "tenant.eu.auth0.com",
        "client_id": CLIENT_ID,
        "audience": "https://api.example.com",
    });
    for (name, value) in extra.as_object().expect("an object") {
        config[name] = value.clone();
    }
    serde_json::from_value(config)
}

fn build_error(extra: Value) -> String {
    config(extra)
        .expect("parses")
        .builder()
        .build()
        .expect_err("invalid")
        .to_string()
}

#[test]
fn configuration_errors_name_the_key_and_never_quote_it() {
    assert_eq!(
        build_error(json!({})),
        r#"client_secret: required with client_auth = "post" (the default); or authenticate without one: client_auth = "private_key_jwt" or client_auth = "client_assertion""#
    );
    assert_eq!(
        build_error(json!({"client_auth": "private_key_jwt"})),
        r#"client_assertion_key: required with client_auth = "private_key_jwt""#
    );
    assert_eq!(
        build_error(json!({
            "client_auth": "private_key_jwt", "client_secret": "s",
            "client_assertion_key": keys::EC_JWK,
        })),
        r#"client_secret: not used with client_auth = "private_key_jwt"; remove it"#
    );
    assert_eq!(
        build_error(json!({"client_secret": "s", "client_assertion_kid": "k"})),
        r#"client_assertion_kid: only used with client_auth = "private_key_jwt", not client_auth = "post" (the default)"#
    );
    assert_eq!(
        build_error(json!({
            "client_auth": "private_key_jwt", "client_assertion_key": keys::RSA_PKCS1_PEM,
            "client_assertion_alg": "ES256",
        })),
        "client_assertion_alg: ES256 does not fit the RSA key of client_assertion_key; \
         use RS256 or PS256"
    );
    let garbled = keys::RSA_PKCS1_PEM.replace('M', "#");
    let error = build_error(json!({
        "client_auth": "private_key_jwt", "client_assertion_key": garbled,
    }));
    assert_eq!(
        error,
        "client_assertion_key: not an RSA or P-256 private key in PEM or JWK form"
    );
    let error = build_error(json!({
        "client_auth": "private_key_jwt",
        "client_assertion_key": {"file": "/surely/missing/key.pem"},
    }));
    assert!(
        error.starts_with("client_assertion_key: cannot read key file /surely/missing/key.pem: "),
        "{error}"
    );
    assert!(config(json!({"client_assertion_alg": "HS256"})).is_err());
}

#[test]
fn debug_and_identity_show_the_key_by_its_thumbprint_only() {
    let build = |key: &str, auth: Option<&str>| {
        let mut extra = json!({"client_assertion_key": key, "client_auth": "private_key_jwt"});
        if let Some(auth) = auth {
            extra = json!({"client_secret": "s", "client_auth": auth});
        }
        let config = config(extra).expect("parses");
        let debug = format!("{config:?}");
        let source = config.builder().build().expect("valid");
        (debug, source)
    };
    let (debug, rsa) = build(keys::RSA_PKCS1_PEM, None);
    let (_, ec) = build(keys::EC_JWK, None);
    let (_, post) = build("", Some("post"));
    let private: Map<String, Value> = serde_json::from_str(keys::RSA_JWK).expect("JWK");
    for shown in [debug, format!("{rsa:?}"), format!("{:?}", rsa.identity())] {
        for member in ["d", "p", "q", "dp", "dq", "qi"] {
            let value = private[member].as_str().expect("a member");
            assert!(!shown.contains(&value[..24]), "{member} in {shown}");
        }
        for line in keys::RSA_PKCS1_PEM
            .lines()
            .filter(|line| !line.starts_with("-----"))
        {
            assert!(!shown.contains(line), "{shown}");
        }
    }
    let thumbprint = authmux_core::signing::jwk_thumbprint(&keys::public_jwk(keys::RSA_JWK))
        .expect("thumbprint");
    assert_eq!(
        rsa.identity().get("client_assertion_key"),
        Some(thumbprint.as_str())
    );
    assert_eq!(rsa.identity().get("client_auth"), Some("private_key_jwt"));
    assert_ne!(rsa.identity(), ec.identity());
    assert_ne!(rsa.identity(), post.identity());
    assert_eq!(ClientAuth::PrivateKeyJwt.as_str(), "private_key_jwt");
}
