//! Secretless identity at the RFC 6749 endpoint: federated client
//! authentication, the JWT-bearer grant and token exchange, over HTTP.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use authmux_testkit::identity::{
    ACCESS_TOKEN_TYPE, JWT_BEARER_ASSERTION, JWT_BEARER_GRANT, JWT_SPIFFE_ASSERTION,
    JWT_TOKEN_TYPE, TOKEN_EXCHANGE_GRANT,
};
use authmux_testkit::{ExternalIssuer, METADATA_PATH, OAUTH2_PATH, TokenServer, keys};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty, Full};
use hyper::body::Body;
use hyper::header::{CONTENT_TYPE, HOST};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};

const CLIENT: &str = "workload-client";
const SERVICE_ACCOUNT: &str = "system:serviceaccount:default:app";
const HOUR: Duration = Duration::from_secs(3600);

/// A server trusting a Kubernetes issuer whose service account is
/// federated to [`CLIENT`].
async fn federated() -> (TokenServer, ExternalIssuer) {
    let idp = TokenServer::start().await;
    let kubernetes = ExternalIssuer::new("https://kubernetes.default.svc");
    idp.trust_issuer(&kubernetes);
    idp.federate(CLIENT, kubernetes.issuer(), SERVICE_ACCOUNT);
    (idp, kubernetes)
}

/// The status and JSON body of `request` sent to `server`.
async fn send<B>(server: &TokenServer, request: Request<B>) -> (u16, Value)
where
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: std::error::Error + Send + Sync,
{
    let address = server.base_url().replace("http://", "");
    let stream = tokio::net::TcpStream::connect(&address)
        .await
        .unwrap_or_else(|error| panic!("cannot connect: {error}"));
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap_or_else(|error| panic!("no HTTP/1 handshake: {error}"));
    tokio::spawn(connection);
    let response = sender
        .send_request(request)
        .await
        .unwrap_or_else(|error| panic!("no response: {error}"));
    let status = response.status().as_u16();
    let body = response
        .into_body()
        .collect()
        .await
        .unwrap_or_else(|error| panic!("no body: {error}"))
        .to_bytes();
    let body = serde_json::from_slice(&body).unwrap_or_else(|error| panic!("not JSON: {error}"));
    (status, body)
}

/// A form posted to [`OAUTH2_PATH`].
async fn post(server: &TokenServer, fields: &[(&str, &str)]) -> (u16, Value) {
    let form = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(fields)
        .finish();
    let request = Request::builder()
        .method(Method::POST)
        .uri(OAUTH2_PATH)
        .header(HOST, server.base_url().replace("http://", ""))
        .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Full::new(Bytes::from(form)))
        .unwrap_or_else(|error| panic!("bad request: {error}"));
    send(server, request).await
}

/// The RFC 6749 error code of a refusal, with its status.
fn refusal(answer: &(u16, Value)) -> (u16, &str) {
    (answer.0, answer.1["error"].as_str().unwrap_or_default())
}

/// Asserts that the error description says `why`.
#[track_caller]
fn assert_description(answer: &(u16, Value), why: &str) {
    let description = answer.1["error_description"].as_str().unwrap_or_default();
    assert!(description.contains(why), "{why:?} not in {}", answer.1);
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs())
}

fn federated_form<'a>(assertion: &'a str, kind: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("grant_type", "client_credentials"),
        ("client_id", CLIENT),
        ("client_assertion_type", kind),
        ("client_assertion", assertion),
        ("scope", "read"),
    ]
}

#[tokio::test]
async fn a_federated_client_gets_tokens_with_its_workload_jwt() {
    let (idp, kubernetes) = federated().await;
    // A secret-based client elsewhere does not stop federated ones.
    idp.expect_client("secret-client", "secret");
    let assertion = kubernetes.mint(SERVICE_ACCOUNT, &idp.oauth2_token_url(), HOUR);

    let (status, body) = post(&idp, &federated_form(&assertion, JWT_BEARER_ASSERTION)).await;

    assert_eq!(status, 200, "{body}");
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 3600);
    assert_eq!(body["scope"], "read");
    assert!(body.get("issued_token_type").is_none());
    let request = &idp.recorded()[0];
    let mut names: Vec<&str> = request.fields.keys().map(String::as_str).collect();
    names.sort_unstable();
    assert_eq!(
        names,
        [
            "client_assertion",
            "client_assertion_type",
            "client_id",
            "grant_type",
            "scope"
        ]
    );
    assert_eq!(request.grant_type(), Some("client_credentials"));
    assert_eq!(request.field("client_assertion"), Some(assertion.as_str()));
    assert_eq!(request.field("assertion"), None);
    let token = body["access_token"].as_str().unwrap_or_default();
    let info = idp
        .token_info(token)
        .unwrap_or_else(|| panic!("{token} is not remembered"));
    assert_eq!(info.grant_type, "client_credentials");
    assert_eq!(info.client_id.as_deref(), Some(CLIENT));
    assert_eq!(info.subject, CLIENT);
    assert_eq!(info.scope.as_deref(), Some("read"));
    assert!(info.expires_at > SystemTime::now() + Duration::from_secs(3500));
    assert_eq!(idp.requests_from(CLIENT), 1);
}

#[tokio::test]
async fn a_federated_assertion_may_be_presented_again_but_a_private_key_jwt_may_not() {
    let (idp, kubernetes) = federated().await;
    let assertion = kubernetes.mint(SERVICE_ACCOUNT, &idp.issuer(), HOUR);
    for _ in 0..3 {
        let answer = post(&idp, &federated_form(&assertion, JWT_BEARER_ASSERTION)).await;
        assert_eq!(answer.0, 200, "{}", answer.1);
    }

    idp.expect_client_key("keyed", &keys::public_jwk(keys::EC_JWK));
    // jsonwebtoken reads no PEM here (its `use_pem` feature is off).
    let der: String = keys::EC_PKCS8_PEM
        .lines()
        .filter(|line| !line.starts_with("-----"))
        .collect();
    let der = STANDARD
        .decode(der)
        .unwrap_or_else(|error| panic!("bad PEM: {error}"));
    let key = jsonwebtoken::EncodingKey::from_ec_der(&der);
    let claims = json!({
        "iss": "keyed", "sub": "keyed", "aud": idp.oauth2_token_url(),
        "iat": unix_now(), "exp": unix_now() + 60, "jti": "once",
    });
    let header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
    let private_key_jwt = jsonwebtoken::encode(&header, &claims, &key)
        .unwrap_or_else(|error| panic!("cannot sign: {error}"));
    let form = [
        ("grant_type", "client_credentials"),
        ("client_id", "keyed"),
        ("client_assertion_type", JWT_BEARER_ASSERTION),
        ("client_assertion", private_key_jwt.as_str()),
    ];
    assert_eq!(post(&idp, &form).await.0, 200);
    assert_eq!(
        refusal(&post(&idp, &form).await),
        (401, "invalid_client"),
        "a private_key_jwt replay"
    );
}

#[tokio::test]
async fn a_federated_assertion_is_refused_when_any_check_fails() {
    let (idp, kubernetes) = federated().await;
    let token_url = idp.oauth2_token_url();
    let stranger = ExternalIssuer::new("https://untrusted.example");
    let impostor = ExternalIssuer::new("https://kubernetes.default.svc");
    let expired = unix_now() - 3600;
    let cases = [
        (
            "has expired",
            kubernetes.mint_with(json!({"sub": SERVICE_ACCOUNT, "aud": token_url, "exp": expired})),
        ),
        (
            "has an aud none of",
            kubernetes.mint(SERVICE_ACCOUNT, "https://elsewhere.example", HOUR),
        ),
        (
            "has no aud",
            kubernetes.mint_with(json!({"sub": SERVICE_ACCOUNT, "aud": null})),
        ),
        (
            "Invalid client credentials.",
            stranger.mint(SERVICE_ACCOUNT, &token_url, HOUR),
        ),
        (
            "has a bad signature",
            impostor.mint(SERVICE_ACCOUNT, &token_url, HOUR),
        ),
        (
            "is not federated",
            kubernetes.mint("system:serviceaccount:default:other", &token_url, HOUR),
        ),
    ];
    for (case, assertion) in &cases {
        let answer = post(&idp, &federated_form(assertion, JWT_BEARER_ASSERTION)).await;
        assert_eq!(
            refusal(&answer),
            (401, "invalid_client"),
            "{case}: {}",
            answer.1
        );
        assert_description(&answer, case);
    }

    let assertion = kubernetes.mint(SERVICE_ACCOUNT, &token_url, HOUR);
    let mut form = federated_form(&assertion, JWT_BEARER_ASSERTION);
    form[1] = ("client_id", "another-client");
    let answer = post(&idp, &form).await;
    assert_eq!(refusal(&answer), (401, "invalid_client"), "another client");
    assert_description(&answer, "is not federated");
}

#[tokio::test]
async fn a_configured_audience_is_accepted_besides_the_servers_own() {
    let (idp, kubernetes) = federated().await;
    let assertion = kubernetes.mint(SERVICE_ACCOUNT, "api://AzureADTokenExchange", HOUR);
    let form = federated_form(&assertion, JWT_BEARER_ASSERTION);
    assert_eq!(refusal(&post(&idp, &form).await), (401, "invalid_client"));

    idp.assertion_audience("api://AzureADTokenExchange");

    assert_eq!(post(&idp, &form).await.0, 200);
}

#[tokio::test]
async fn a_spiffe_jwt_svid_names_its_issuer_by_its_trust_domain() {
    let idp = TokenServer::start().await;
    let spire = ExternalIssuer::new("spiffe://example.org");
    idp.trust_issuer(&spire);
    let workload = "spiffe://example.org/ns/default/sa/app";
    idp.federate(CLIENT, spire.issuer(), workload);
    let token_url = idp.oauth2_token_url();
    let svid =
        spire.mint_with(json!({"iss": null, "jti": null, "sub": workload, "aud": token_url}));

    let answer = post(&idp, &federated_form(&svid, JWT_SPIFFE_ASSERTION)).await;
    assert_eq!(answer.0, 200, "{}", answer.1);

    let foreign = spire.mint_with(json!({
        "iss": null, "sub": "spiffe://other.org/ns/default/sa/app", "aud": token_url,
    }));
    let answer = post(&idp, &federated_form(&foreign, JWT_SPIFFE_ASSERTION)).await;
    assert_eq!(
        refusal(&answer),
        (401, "invalid_client"),
        "another trust domain"
    );
    let named = spire.mint_with(json!({"sub": "not-a-spiffe-id", "aud": token_url}));
    let answer = post(&idp, &federated_form(&named, JWT_SPIFFE_ASSERTION)).await;
    assert_eq!(refusal(&answer), (401, "invalid_client"), "not a SPIFFE ID");
}

#[tokio::test]
async fn a_jwt_bearer_grant_issues_a_token_for_the_assertions_subject() {
    let (idp, kubernetes) = federated().await;
    let assertion = kubernetes.mint("user-42", &idp.oauth2_token_url(), HOUR);
    let form = [
        ("grant_type", JWT_BEARER_GRANT),
        ("assertion", assertion.as_str()),
        ("scope", "read write"),
    ];

    let (status, body) = post(&idp, &form).await;

    assert_eq!(status, 200, "{body}");
    assert_eq!(body["scope"], "read write");
    let request = &idp.recorded()[0];
    assert_eq!(request.fields.len(), 3);
    assert_eq!(request.grant_type(), Some(JWT_BEARER_GRANT));
    assert_eq!(request.field("assertion"), Some(assertion.as_str()));
    assert_eq!(request.credentials, None);
    let info = idp.token_info(body["access_token"].as_str().unwrap_or_default());
    let info = info.unwrap_or_else(|| panic!("not remembered"));
    assert_eq!(info.grant_type, JWT_BEARER_GRANT);
    assert_eq!(info.subject, "user-42");
    assert_eq!(info.client_id, None);

    // With client authentication too, and the same assertion again.
    idp.expect_client("my-client", "my-secret");
    let authenticated = [
        ("grant_type", JWT_BEARER_GRANT),
        ("assertion", assertion.as_str()),
        ("client_id", "my-client"),
        ("client_secret", "my-secret"),
    ];
    let (status, body) = post(&idp, &authenticated).await;
    assert_eq!(status, 200, "{body}");
    let info = idp.token_info(body["access_token"].as_str().unwrap_or_default());
    assert_eq!(
        info.and_then(|info| info.client_id).as_deref(),
        Some("my-client")
    );
    let mut wrong_secret = authenticated;
    wrong_secret[3] = ("client_secret", "wrong");
    assert_eq!(
        refusal(&post(&idp, &wrong_secret).await),
        (401, "invalid_client")
    );
}

#[tokio::test]
async fn a_jwt_bearer_grant_is_refused_as_invalid_grant() {
    let (idp, kubernetes) = federated().await;
    let token_url = idp.oauth2_token_url();
    let stranger = ExternalIssuer::new("https://untrusted.example");
    let cases = [
        (
            "the assertion has expired",
            kubernetes
                .mint_with(json!({"sub": "user-42", "aud": token_url, "exp": unix_now() - 3600})),
        ),
        (
            "the assertion has an aud none of",
            kubernetes.mint("user-42", "https://elsewhere.example", HOUR),
        ),
        (
            "the assertion is not a JWT from a trusted issuer",
            stranger.mint("user-42", &token_url, HOUR),
        ),
        (
            "the assertion has no sub",
            kubernetes.mint_with(json!({"aud": token_url})),
        ),
        ("not a JWT from a trusted issuer", "opaque".to_owned()),
    ];
    for (case, assertion) in &cases {
        let form = [("grant_type", JWT_BEARER_GRANT), ("assertion", assertion)];
        let answer = post(&idp, &form).await;
        assert_eq!(
            refusal(&answer),
            (400, "invalid_grant"),
            "{case}: {}",
            answer.1
        );
        assert_description(&answer, case);
    }
    let answer = post(&idp, &[("grant_type", JWT_BEARER_GRANT)]).await;
    assert_eq!(refusal(&answer), (400, "invalid_request"), "no assertion");
    assert_description(&answer, "assertion is missing");
    assert_eq!(idp.issued(), 0);
}

/// A client-credentials token of `my-client`'s.
async fn issued_token(idp: &TokenServer) -> String {
    let form = [
        ("grant_type", "client_credentials"),
        ("client_id", "my-client"),
        ("client_secret", "my-secret"),
    ];
    let (status, body) = post(idp, &form).await;
    assert_eq!(status, 200, "{body}");
    body["access_token"].as_str().unwrap_or_default().to_owned()
}

const EXCHANGER: [(&str, &str); 2] = [("client_id", "exchanger"), ("client_secret", "secret")];

#[tokio::test]
async fn a_token_this_server_issued_is_exchanged_with_an_actor() {
    let (idp, kubernetes) = federated().await;
    let subject_token = issued_token(&idp).await;
    let actor_token = kubernetes.mint("gateway", &idp.issuer(), HOUR);
    let mut form = vec![
        ("grant_type", TOKEN_EXCHANGE_GRANT),
        ("subject_token", subject_token.as_str()),
        ("subject_token_type", ACCESS_TOKEN_TYPE),
        ("actor_token", actor_token.as_str()),
        ("actor_token_type", JWT_TOKEN_TYPE),
        ("audience", "orders"),
        ("audience", "billing"),
        ("resource", "https://orders.example/"),
        ("scope", "orders:read"),
        ("requested_token_type", ACCESS_TOKEN_TYPE),
    ];
    form.extend(EXCHANGER);

    let (status, body) = post(&idp, &form).await;

    assert_eq!(status, 200, "{body}");
    assert_eq!(body["issued_token_type"], ACCESS_TOKEN_TYPE);
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 3600);
    assert!(body["access_token"].is_string());
    let request = &idp.recorded()[1];
    assert_eq!(request.grant_type(), Some(TOKEN_EXCHANGE_GRANT));
    assert_eq!(request.field("subject_token"), Some(subject_token.as_str()));
    assert_eq!(request.field("actor_token"), Some(actor_token.as_str()));
    assert_eq!(request.values("audience"), ["orders", "billing"]);
    let info = idp.token_info(body["access_token"].as_str().unwrap_or_default());
    let info = info.unwrap_or_else(|| panic!("not remembered"));
    assert_eq!(info.grant_type, TOKEN_EXCHANGE_GRANT);
    assert_eq!(info.subject, "my-client");
    assert_eq!(info.actor.as_deref(), Some("gateway"));
    assert_eq!(info.client_id.as_deref(), Some("exchanger"));
    assert_eq!(
        info.audience,
        ["orders", "billing", "https://orders.example/"]
    );
    assert_eq!(info.scope.as_deref(), Some("orders:read"));
}

#[tokio::test]
async fn an_external_jwt_is_exchanged_for_a_token_of_its_subject() {
    let (idp, kubernetes) = federated().await;
    let subject_token = kubernetes.mint(SERVICE_ACCOUNT, &idp.oauth2_token_url(), HOUR);
    let mut form = vec![
        ("grant_type", TOKEN_EXCHANGE_GRANT),
        ("subject_token", subject_token.as_str()),
        ("subject_token_type", JWT_TOKEN_TYPE),
    ];
    form.extend(EXCHANGER);

    let (status, body) = post(&idp, &form).await;

    assert_eq!(status, 200, "{body}");
    assert_eq!(body["issued_token_type"], ACCESS_TOKEN_TYPE);
    let info = idp.token_info(body["access_token"].as_str().unwrap_or_default());
    assert_eq!(
        info.map(|info| info.subject).as_deref(),
        Some(SERVICE_ACCOUNT)
    );
}

#[tokio::test]
async fn a_token_exchange_is_refused_as_invalid_request() {
    let (idp, kubernetes) = federated().await;
    let subject_token = issued_token(&idp).await;
    let external = kubernetes.mint(SERVICE_ACCOUNT, &idp.issuer(), HOUR);
    let exchange = |extra: &[(&'static str, &str)]| {
        let mut form: Vec<(&str, String)> = EXCHANGER
            .iter()
            .map(|(name, value)| (*name, (*value).to_owned()))
            .collect();
        form.push(("grant_type", TOKEN_EXCHANGE_GRANT.to_owned()));
        form.extend(
            extra
                .iter()
                .map(|(name, value)| (*name, (*value).to_owned())),
        );
        form
    };
    let subject = [
        ("subject_token", subject_token.as_str()),
        ("subject_token_type", ACCESS_TOKEN_TYPE),
    ];
    let with_subject = |extra: &[(&'static str, &str)]| {
        let mut fields = subject.to_vec();
        fields.extend_from_slice(extra);
        exchange(&fields)
    };
    let cases = [
        (
            "subject_token is missing",
            exchange(&[("subject_token_type", ACCESS_TOKEN_TYPE)]),
        ),
        (
            "subject_token_type is missing",
            exchange(&[("subject_token", subject_token.as_str())]),
        ),
        (
            "subject_token is neither a live token",
            exchange(&[
                ("subject_token", "never-issued"),
                ("subject_token_type", ACCESS_TOKEN_TYPE),
            ]),
        ),
        (
            "subject_token is an access token, not of type",
            exchange(&[
                ("subject_token", subject_token.as_str()),
                ("subject_token_type", JWT_TOKEN_TYPE),
            ]),
        ),
        (
            "subject_token has an unknown type",
            exchange(&[
                ("subject_token", external.as_str()),
                ("subject_token_type", "urn:example:unknown"),
            ]),
        ),
        (
            "actor_token_type is missing",
            with_subject(&[("actor_token", external.as_str())]),
        ),
        (
            "actor_token_type came without actor_token",
            with_subject(&[("actor_token_type", JWT_TOKEN_TYPE)]),
        ),
        (
            "actor_token is neither a live token",
            with_subject(&[
                ("actor_token", "never-issued"),
                ("actor_token_type", ACCESS_TOKEN_TYPE),
            ]),
        ),
        (
            "requested_token_type urn:ietf:params:oauth:token-type:saml2 is not issued here",
            with_subject(&[(
                "requested_token_type",
                "urn:ietf:params:oauth:token-type:saml2",
            )]),
        ),
    ];
    for (case, form) in &cases {
        let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let answer = post(&idp, &form).await;
        assert_eq!(
            refusal(&answer),
            (400, "invalid_request"),
            "{case}: {}",
            answer.1
        );
        assert_description(&answer, case);
    }
    assert_eq!(idp.issued(), 1);
}

#[tokio::test]
async fn an_expired_issued_token_or_a_refused_audience_is_not_exchanged() {
    let idp = TokenServer::start().await;
    idp.expires_in(0);
    let expired = issued_token(&idp).await;
    let mut form = vec![
        ("grant_type", TOKEN_EXCHANGE_GRANT),
        ("subject_token", expired.as_str()),
        ("subject_token_type", ACCESS_TOKEN_TYPE),
    ];
    form.extend(EXCHANGER);
    let answer = post(&idp, &form).await;
    assert_eq!(refusal(&answer), (400, "invalid_request"), "{}", answer.1);
    assert_description(&answer, "subject_token has expired");

    idp.expires_in(600);
    let live = issued_token(&idp).await;
    form[1] = ("subject_token", live.as_str());
    form.push(("audience", "forbidden-api"));
    idp.refuse_audience("forbidden-api");
    let answer = post(&idp, &form).await;
    assert_eq!(refusal(&answer), (400, "invalid_target"), "{}", answer.1);
    assert_description(&answer, "forbidden-api");

    form.pop();
    let (status, body) = post(&idp, &form).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["expires_in"], 600);
    // Token exchange needs client authentication, unlike the JWT-bearer grant.
    let anonymous: Vec<_> = form.iter().copied().take(3).collect();
    assert_eq!(
        refusal(&post(&idp, &anonymous).await),
        (401, "invalid_client")
    );
}

#[tokio::test]
async fn metadata_lists_the_grants_and_private_key_jwt() {
    let idp = TokenServer::start().await;
    let request = Request::builder()
        .uri(METADATA_PATH)
        .header(HOST, idp.base_url().replace("http://", ""))
        .body(Empty::<Bytes>::new())
        .unwrap_or_else(|error| panic!("bad request: {error}"));

    let (status, metadata) = send(&idp, request).await;

    assert_eq!(status, 200);
    assert_eq!(
        metadata["grant_types_supported"],
        json!(["client_credentials", JWT_BEARER_GRANT, TOKEN_EXCHANGE_GRANT])
    );
    let methods = &metadata["token_endpoint_auth_methods_supported"];
    assert!(
        methods
            .as_array()
            .is_some_and(|methods| methods.contains(&json!("private_key_jwt"))),
        "{methods}"
    );
    assert_eq!(metadata, idp.default_metadata());
}

#[test]
fn an_external_issuer_shows_no_private_key() {
    let issuer = ExternalIssuer::new("https://kubernetes.default.svc");
    let jwk = issuer.jwk();
    assert_eq!(jwk["kty"], "EC");
    assert_eq!(jwk["crv"], "P-256");
    assert!(jwk.get("d").is_none(), "{jwk}");
    let debug = format!("{issuer:?}");
    assert!(debug.contains("https://kubernetes.default.svc"), "{debug}");
    assert!(!debug.to_lowercase().contains("key"), "{debug}");
    let other = ExternalIssuer::new("https://kubernetes.default.svc");
    assert_ne!(other.jwk()["x"], jwk["x"], "each issuer has its own key");
}
