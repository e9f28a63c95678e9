//! The secretless grants and client authentication methods against a local
//! httpmock server: for each, the exact request (method, path, content
//! type, the `authorization` header or its absence, and the body's full
//! field set), a new value for every request and retry, the config errors,
//! and no token read from elsewhere ever shown.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use authmux_core::wire::FreshValue;
use authmux_core::{CachePolicy, Error, ManagedToken, SecretString, TokenSource as _};
use authmux_oauth2::{OAuth2Builder, OAuth2Config, OAuth2Source};
use authmux_testkit::keys;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use httpmock::Method::POST;
use httpmock::prelude::HttpMockRequest;
use httpmock::{Mock, MockServer, Then};
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Value, json};
use tempfile::TempDir;

const PATH: &str = "/oauth2/token";
const CLIENT_ID: &str = "client:1";
const SECRET: &str = "p@ss word";
/// `Basic ` + base64("client%3A1:p%40ss+word"): each part form-urlencoded
/// before base64 (RFC 6749 §2.3.1).
const BASIC: &str = "Basic Y2xpZW50JTNBMTpwJTQwc3Mrd29yZA==";

const CLIENT_CREDENTIALS: &str = "client_credentials";
const JWT_BEARER_GRANT: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
const TOKEN_EXCHANGE_GRANT: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const JWT_BEARER_ASSERTION: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
const SPIFFE_ASSERTION: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-spiffe";
const JWT_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:jwt";
const ID_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:id_token";
const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";

/// A prints-a-new-value-each-run command: the program is `sh`, chosen by
/// the test; authmux itself runs commands without a shell.
const RANDOM_COMMAND: [&str; 3] = ["sh", "-c", "od -An -N8 -tx8 /dev/urandom | tr -d ' \\n'"];

/// A form body's fields, sorted: the comparison is of the full set.
type Fields = Vec<(String, String)>;

/// The sorted fields of `pairs`.
fn form(pairs: &[(&str, &str)]) -> Fields {
    let mut fields: Fields = pairs
        .iter()
        .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
        .collect();
    fields.sort();
    fields
}

/// The value of the one field `name` of `fields`.
fn field(fields: &Fields, name: &str) -> String {
    let mut values = fields.iter().filter(|(key, _)| key == name);
    let (_, value) = values.next().unwrap_or_else(|| panic!("no {name}"));
    assert!(values.next().is_none(), "{name} sent twice: {fields:?}");
    value.clone()
}

/// The requests the token endpoint received, in order.
#[derive(Clone, Default)]
struct Received(Arc<Mutex<Vec<HttpMockRequest>>>);

impl Received {
    fn record(&self, request: &HttpMockRequest) {
        self.0.lock().expect("requests").push(request.clone());
    }

    fn requests(&self) -> Vec<HttpMockRequest> {
        self.0.lock().expect("requests").clone()
    }

    /// Each request's body fields, sorted.
    fn bodies(&self) -> Vec<Fields> {
        self.requests()
            .iter()
            .map(|request| {
                let mut fields: Fields = form_urlencoded::parse(request.body_ref())
                    .into_owned()
                    .collect();
                fields.sort();
                fields
            })
            .collect()
    }

    /// The body of the one request received.
    fn only(&self) -> Fields {
        let bodies = self.bodies();
        assert_eq!(bodies.len(), 1, "{bodies:?}");
        bodies.into_iter().next().expect("one body")
    }
}

/// A token endpoint that takes only a form POST to [`PATH`] with the
/// `authorization` header `basic` (or none), records each request in
/// `received`, and answers as `answer` says. Mocks made earlier answer
/// first.
async fn token_endpoint<'a>(
    server: &'a MockServer,
    received: &Received,
    basic: Option<&str>,
    answer: impl FnOnce(Then),
) -> Mock<'a> {
    let received = received.clone();
    let basic = basic.map(str::to_owned);
    server
        .mock_async(move |when, then| {
            let when = when
                .method(POST)
                .path(PATH)
                .header("content-type", "application/x-www-form-urlencoded");
            let when = match basic {
                Some(basic) => when.header("authorization", basic),
                None => when.header_missing("authorization"),
            };
            when.is_true(move |request| {
                received.record(request);
                true
            });
            answer(then);
        })
        .await
}

fn issued(then: Then) {
    then.status(200)
        .json_body(json!({"access_token": "issued", "token_type": "Bearer", "expires_in": 300}));
}

/// The builder of `config`, read as the facade reads its file.
fn builder(config: Value) -> OAuth2Builder {
    serde_json::from_value::<OAuth2Config>(config)
        .expect("valid config")
        .builder()
}

fn source(config: Value) -> OAuth2Source {
    builder(config).build().expect("valid source")
}

/// Sends one token request and returns the body the server received.
async fn one_body(config: Value, basic: Option<&str>) -> Fields {
    let server = MockServer::start_async().await;
    let received = Received::default();
    let mock = token_endpoint(&server, &received, basic, issued).await;
    let config = with(config, json!({"token_url": server.url(PATH)}));
    source(config).fetch_token().await.expect("a token");
    assert_eq!(mock.calls_async().await, 1);
    received.only()
}

/// A JWT such as a Kubernetes projected service-account token, unsigned
/// (the server here does not verify it), valid for `lifetime` seconds
/// from now (in the past when negative).
fn workload_jwt_for(subject: &str, lifetime: i64) -> String {
    let claims = json!({"iss": "https://cluster.example.com", "sub": subject, "aud": "idp"});
    authmux_testkit::jwt(claims, lifetime)
}

/// A workload's JWT, valid for another hour.
fn workload_jwt(subject: &str) -> String {
    workload_jwt_for(subject, 3600)
}

/// Writes `contents` to the file `name` in `dir`.
fn write(dir: &TempDir, name: &str, contents: &str) -> PathBuf {
    let path = dir.path().join(name);
    std::fs::write(&path, contents).expect("written");
    path
}

fn file(path: &Path) -> Value {
    json!({"file": path})
}

/// `config` with the settings of `more` added.
fn with(mut config: Value, more: Value) -> Value {
    let fields = config.as_object_mut().expect("a table");
    fields.extend(more.as_object().expect("a table").clone());
    config
}

/// A client authenticated by the assertion `source` gives.
fn client_assertion_client(source: Value) -> Value {
    json!({
        "client_id": CLIENT_ID,
        "client_auth": "client_assertion",
        "client_assertion": source,
    })
}

/// The body of a client credentials request authenticated by `assertion`
/// of `assertion_type`, with the fields `more`.
fn client_assertion_form(assertion_type: &str, assertion: &str, more: &[(&str, &str)]) -> Fields {
    let mut fields = form(more);
    fields.extend(form(&[
        ("grant_type", CLIENT_CREDENTIALS),
        ("client_id", CLIENT_ID),
        ("client_assertion_type", assertion_type),
        ("client_assertion", assertion),
    ]));
    fields.sort();
    fields
}

// 1. Client credentials with a client assertion read from a file.

#[tokio::test]
async fn client_assertion_from_a_file_is_sent_with_the_default_type_and_no_header() {
    let dir = TempDir::new().expect("temp dir");
    let token = workload_jwt("system:serviceaccount:apps:api");
    let path = write(&dir, "token", &format!("{token}\n"));
    let config = with(
        client_assertion_client(file(&path)),
        json!({"scopes": ["read", "write"]}),
    );
    assert_eq!(
        one_body(config, None).await,
        client_assertion_form(JWT_BEARER_ASSERTION, &token, &[("scope", "read write")])
    );
}

#[tokio::test]
async fn client_assertion_type_can_name_a_spiffe_jwt_svid() {
    let dir = TempDir::new().expect("temp dir");
    let token = workload_jwt("spiffe://example.org/api");
    let path = write(&dir, "svid", &token);
    let config = with(
        client_assertion_client(file(&path)),
        json!({"client_assertion_type": SPIFFE_ASSERTION}),
    );
    assert_eq!(
        one_body(config, None).await,
        client_assertion_form(SPIFFE_ASSERTION, &token, &[])
    );
}

// 2. Client credentials with a client assertion a command prints.

#[tokio::test]
async fn client_assertion_from_a_command_is_what_it_prints() {
    let token = workload_jwt("github-actions");
    let config = client_assertion_client(json!({"command": ["printf", "%s", token]}));
    assert_eq!(
        one_body(config, None).await,
        client_assertion_form(JWT_BEARER_ASSERTION, &token, &[])
    );
}

// 3. The JWT-bearer grant with an assertion read from a file.

/// The assertion and the body of a JWT-bearer grant that reads its
/// assertion from a file, with the client settings `client`, sent with
/// the `authorization` header `basic` (or none).
async fn jwt_bearer_body(client: Value, basic: Option<&str>) -> (String, Fields) {
    let dir = TempDir::new().expect("temp dir");
    let token = workload_jwt("ci-job");
    let path = write(&dir, "oidc", &token);
    let config = with(
        client,
        json!({"grant_type": "jwt_bearer", "assertion": file(&path)}),
    );
    let body = one_body(config, basic).await;
    (token, body)
}

#[tokio::test]
async fn jwt_bearer_without_client_authentication_sends_the_grant_alone() {
    let (token, body) = jwt_bearer_body(json!({"scopes": ["deploy"]}), None).await;
    assert_eq!(
        body,
        form(&[
            ("grant_type", JWT_BEARER_GRANT),
            ("assertion", &token),
            ("scope", "deploy"),
        ])
    );
}

#[tokio::test]
async fn jwt_bearer_with_post_sends_the_secret_in_the_body() {
    let client = json!({"client_id": CLIENT_ID, "client_auth": "post", "client_secret": SECRET});
    let (token, body) = jwt_bearer_body(client, None).await;
    assert_eq!(
        body,
        form(&[
            ("grant_type", JWT_BEARER_GRANT),
            ("assertion", &token),
            ("client_id", CLIENT_ID),
            ("client_secret", SECRET),
        ])
    );
}

#[tokio::test]
async fn jwt_bearer_with_basic_sends_the_secret_in_the_header_only() {
    let client = json!({"client_id": CLIENT_ID, "client_auth": "basic", "client_secret": SECRET});
    let (token, body) = jwt_bearer_body(client, Some(BASIC)).await;
    assert_eq!(
        body,
        form(&[("grant_type", JWT_BEARER_GRANT), ("assertion", &token)])
    );
}

// 4. The JWT-bearer grant with an assertion signed here.

#[tokio::test]
async fn jwt_bearer_signs_a_new_assertion_for_the_token_url_on_every_request() {
    let dir = TempDir::new().expect("temp dir");
    let key = write(&dir, "sa.pem", keys::EC_PKCS8_PEM);
    let server = MockServer::start_async().await;
    let received = Received::default();
    token_endpoint(&server, &received, None, issued).await;
    let token_url = server.url(PATH);
    let source = source(json!({
        "token_url": token_url,
        "grant_type": "jwt_bearer",
        "assertion": {
            "key": file(&key),
            "issuer": "svc@project.example.com",
            "subject": "user@example.com",
            "alg": "ES256",
            "kid": "ec-1",
        },
    }));
    source.fetch_token().await.expect("a token");
    source.fetch_token().await.expect("a second token");

    let public: Jwk = serde_json::from_value(keys::public_jwk(keys::EC_JWK)).expect("a JWK");
    let mut validation = Validation::new(Algorithm::ES256);
    validation.set_audience(&[&token_url]);
    validation.set_issuer(&["svc@project.example.com"]);
    validation.sub = Some("user@example.com".to_owned());
    validation.set_required_spec_claims(&["exp", "iat", "aud", "iss", "sub"]);
    let mut jtis = Vec::new();
    for body in received.bodies() {
        let assertion = field(&body, "assertion");
        assert_eq!(
            body,
            form(&[("grant_type", JWT_BEARER_GRANT), ("assertion", &assertion)])
        );
        let header = jsonwebtoken::decode_header(&assertion).expect("a JWT");
        assert_eq!(header.alg, Algorithm::ES256);
        assert_eq!(header.kid.as_deref(), Some("ec-1"));
        let key = DecodingKey::from_jwk(&public).expect("a usable key");
        let claims = jsonwebtoken::decode::<Value>(&assertion, &key, &validation)
            .expect("signed with the configured key")
            .claims;
        assert_eq!(claims["iss"], "svc@project.example.com");
        assert_eq!(claims["sub"], "user@example.com");
        assert_eq!(claims["aud"], token_url.as_str());
        let lifetime = claims["exp"].as_u64().expect("exp") - claims["iat"].as_u64().expect("iat");
        assert_eq!(lifetime, 120, "{claims}");
        jtis.push(claims["jti"].as_str().expect("jti").to_owned());
    }
    assert_eq!(jtis.len(), 2);
    assert_ne!(jtis[0], jtis[1], "each request has its own assertion");
}

// 5. Token exchange with every field.

#[tokio::test]
async fn token_exchange_sends_every_field_once_and_each_target_on_its_own() {
    let dir = TempDir::new().expect("temp dir");
    let subject = workload_jwt("user-7");
    let actor = workload_jwt("gateway");
    let subject_path = write(&dir, "subject", &subject);
    let actor_path = write(&dir, "actor", &actor);
    let body = one_body(
        json!({
            "grant_type": "token_exchange",
            "subject_token": file(&subject_path),
            "actor_token": file(&actor_path),
            "actor_token_type": ID_TOKEN_TYPE,
            "requested_token_type": ACCESS_TOKEN_TYPE,
            "audience": ["https://orders.example.com", "https://billing.example.com"],
            "resource": "https://api.example.com/v1",
            "scopes": ["orders:read", "billing:read"],
            "client_id": CLIENT_ID,
            "client_auth": "post",
            "client_secret": SECRET,
        }),
        None,
    )
    .await;
    assert_eq!(
        body,
        form(&[
            ("grant_type", TOKEN_EXCHANGE_GRANT),
            ("subject_token", &subject),
            ("subject_token_type", JWT_TOKEN_TYPE),
            ("actor_token", &actor),
            ("actor_token_type", ID_TOKEN_TYPE),
            ("requested_token_type", ACCESS_TOKEN_TYPE),
            ("audience", "https://orders.example.com"),
            ("audience", "https://billing.example.com"),
            ("resource", "https://api.example.com/v1"),
            ("scope", "orders:read billing:read"),
            ("client_id", CLIENT_ID),
            ("client_secret", SECRET),
        ])
    );
}

// 6. Token exchange of another client's access token.

/// Another client's access tokens: a new one every time it is asked.
#[derive(Debug, Default)]
struct Upstream {
    issued: AtomicUsize,
}

impl Upstream {
    fn latest(&self) -> String {
        format!("upstream-token-{}", self.issued.load(Ordering::SeqCst))
    }
}

#[async_trait::async_trait]
impl FreshValue for Upstream {
    async fn value(&self) -> Result<SecretString, Error> {
        let issued = self.issued.fetch_add(1, Ordering::SeqCst) + 1;
        Ok(SecretString::from(format!("upstream-token-{issued}")))
    }

    fn describe(&self) -> String {
        "client up".to_owned()
    }
}

#[tokio::test]
async fn token_exchange_of_a_client_s_token_sends_its_freshest_token_each_time() {
    let server = MockServer::start_async().await;
    let received = Received::default();
    token_endpoint(&server, &received, None, issued).await;
    let upstream = Arc::new(Upstream::default());
    let source = builder(json!({
        "token_url": server.url(PATH),
        "grant_type": "token_exchange",
        "subject_token": {"client": "up"},
        "client_id": CLIENT_ID,
        "client_auth": "none",
    }))
    .client_token("up", Arc::clone(&upstream) as Arc<dyn FreshValue>)
    .build()
    .expect("valid source");
    let mut sent = Vec::new();
    for _ in 0..2 {
        source.fetch_token().await.expect("a token");
        sent.push(upstream.latest());
    }
    assert_eq!(sent, ["upstream-token-1", "upstream-token-2"]);
    let expected: Vec<Fields> = sent
        .iter()
        .map(|subject| {
            form(&[
                ("grant_type", TOKEN_EXCHANGE_GRANT),
                ("subject_token", subject),
                ("subject_token_type", ACCESS_TOKEN_TYPE),
                ("client_id", CLIENT_ID),
            ])
        })
        .collect();
    assert_eq!(received.bodies(), expected);
}

// 7. A new value on every retry.

/// The assertions of `bodies`, checked to differ in nothing else.
fn assertions_of(bodies: &[Fields]) -> Vec<String> {
    let assertions: Vec<String> = bodies
        .iter()
        .map(|body| field(body, "client_assertion"))
        .collect();
    for (body, assertion) in bodies.iter().zip(&assertions) {
        assert_eq!(
            body,
            &client_assertion_form(JWT_BEARER_ASSERTION, assertion, &[])
        );
        assert_eq!(assertion.len(), 16, "{assertion:?}");
    }
    assertions
}

fn random_assertion_client(token_url: String) -> Value {
    with(
        client_assertion_client(json!({"command": RANDOM_COMMAND})),
        json!({"token_url": token_url}),
    )
}

/// Real time, with no backoff to wait for: paused, tokio would jump to
/// the fetch's deadline while `sh` and the server answer in real time.
#[tokio::test]
async fn a_retry_after_a_503_runs_the_command_again() {
    let server = MockServer::start_async().await;
    let received = Received::default();
    let unavailable = token_endpoint(&server, &received, None, |then| {
        then.status(503)
            .json_body(json!({"error": "temporarily_unavailable"}))
            .up_to_n_times(1);
    })
    .await;
    let available = token_endpoint(&server, &received, None, issued).await;
    let mut policy = CachePolicy::default();
    policy.retry.max_attempts = 2;
    policy.retry.initial_backoff = Duration::ZERO;
    let cache = ManagedToken::builder(source(random_assertion_client(server.url(PATH))))
        .name("api")
        .policy(policy)
        .build();
    cache.get().await.expect("a token after one retry");
    assert_eq!(unavailable.calls_async().await, 1);
    assert_eq!(available.calls_async().await, 1);
    let assertions = assertions_of(&received.bodies());
    assert_eq!(assertions.len(), 2);
    assert_ne!(
        assertions[0], assertions[1],
        "the retry read a new assertion"
    );
}

/// The `nonce` claim of a request's DPoP proof.
fn proof_nonce(request: &HttpMockRequest) -> Option<String> {
    let proof = request.headers().get("dpop")?.to_str().ok()?.to_owned();
    let payload = URL_SAFE_NO_PAD.decode(proof.split('.').nth(1)?).ok()?;
    let claims: Value = serde_json::from_slice(&payload).ok()?;
    claims["nonce"].as_str().map(str::to_owned)
}

#[tokio::test]
async fn a_dpop_nonce_retry_runs_the_command_again() {
    let server = MockServer::start_async().await;
    let received = Received::default();
    let challenge = token_endpoint(&server, &received, None, |then| {
        then.status(400)
            .header("dpop-nonce", "server-nonce-1")
            .json_body(json!({"error": "use_dpop_nonce"}))
            .up_to_n_times(1);
    })
    .await;
    let bound = token_endpoint(&server, &received, None, |then| {
        then.status(200)
            .json_body(json!({"access_token": "bound", "token_type": "DPoP", "expires_in": 300}));
    })
    .await;
    let mut config = random_assertion_client(server.url(PATH));
    config["dpop"] = true.into();
    let token = source(config).fetch_token().await.expect("a bound token");
    assert_eq!(token.authorization(), "DPoP bound");
    assert_eq!(challenge.calls_async().await, 1);
    assert_eq!(bound.calls_async().await, 1);
    let requests = received.requests();
    assert!(
        requests
            .iter()
            .all(|request| request.headers().contains_key("dpop")),
        "every request carries a proof"
    );
    let nonces: Vec<Option<String>> = requests.iter().map(proof_nonce).collect();
    assert_eq!(nonces, [None, Some("server-nonce-1".to_owned())]);
    let assertions = assertions_of(&received.bodies());
    assert_eq!(assertions.len(), 2);
    assert_ne!(
        assertions[0], assertions[1],
        "the nonce retry read a new assertion"
    );
}

// 8. Config errors.

/// The error of building `config`, a client of a remote token endpoint,
/// from JSON.
fn build_error(config: Value) -> String {
    let config = with(
        config,
        json!({"token_url": "https://idp.example.com/oauth2/token"}),
    );
    builder(config).build().expect_err("refused").to_string()
}

#[test]
fn misplaced_and_missing_grant_keys_are_named_with_the_fix() {
    assert_eq!(
        build_error(json!({
            "client_id": CLIENT_ID,
            "client_secret": SECRET,
            "subject_token": {"file": "/run/token"},
        })),
        "subject_token: only used with grant_type = \"token_exchange\", not \"client_credentials\""
    );
    assert_eq!(
        build_error(json!({"grant_type": "jwt_bearer"})),
        "assertion: required with grant_type = \"jwt_bearer\": { file = \"…\" }, \
         { env = \"…\" }, { command = [\"…\"] } or { key = { file = \"…\" } }"
    );
    assert_eq!(
        build_error(json!({"client_id": CLIENT_ID, "client_auth": "none"})),
        "client_auth: \"none\" is only for grant_type = \"jwt_bearer\" or \"token_exchange\"; \
         client credentials need the client to authenticate (RFC 6749 §4.4.2)"
    );
}

#[test]
fn a_client_assertion_needs_its_method() {
    assert_eq!(
        build_error(json!({
            "client_id": CLIENT_ID,
            "client_assertion": {"file": "/run/token"},
        })),
        "client_assertion: only used with client_auth = \"client_assertion\", not client_auth = \"basic\" (the default)"
    );
    assert_eq!(
        build_error(json!({
            "client_id": CLIENT_ID,
            "client_auth": "post",
            "client_secret": SECRET,
            "client_assertion": {"file": "/run/token"},
        })),
        "client_assertion: only used with client_auth = \"client_assertion\", not client_auth = \"post\""
    );
}

#[test]
fn extra_params_do_not_take_what_has_a_key_of_its_own() {
    assert_eq!(
        build_error(json!({
            "grant_type": "token_exchange",
            "subject_token": {"file": "/run/token"},
            "client_id": CLIENT_ID,
            "client_secret": SECRET,
            "extra_params": {"subject_token": "pasted"},
        })),
        "extra_params.subject_token: sent by the provider itself; set subject_token instead"
    );
    assert_eq!(
        build_error(json!({
            "client_id": CLIENT_ID,
            "client_secret": SECRET,
            "audience": "https://api.example.com",
            "extra_params": {"audience": "https://other.example.com"},
        })),
        "extra_params.audience: audience is set too; keep one of them"
    );
}

// 9. No token read from elsewhere is ever shown.

/// Asserts that neither the text nor the `Debug` of `error` shows `token`.
fn assert_hidden(error: &Error, token: &str) {
    for text in [error.to_string(), format!("{error:?}")] {
        assert!(!text.contains(token), "token shown: {text}");
    }
}

/// Clients that send `token`, read from the file at `path` or printed by
/// a command, as each kind of value: a client assertion, a JWT-bearer
/// grant's assertion, a token exchange's subject and actor tokens.
fn clients_sending(token: &str, path: &Path) -> [Value; 4] {
    let command = json!({"command": ["printf", "%s", token]});
    [
        client_assertion_client(file(path)),
        client_assertion_client(command.clone()),
        json!({"grant_type": "jwt_bearer", "assertion": file(path)}),
        json!({
            "grant_type": "token_exchange",
            "subject_token": command,
            "actor_token": file(path),
            "client_id": CLIENT_ID,
            "client_auth": "none",
        }),
    ]
}

#[tokio::test]
async fn debug_never_shows_a_token_read_from_a_file_or_a_command() {
    let server = MockServer::start_async().await;
    let received = Received::default();
    token_endpoint(&server, &received, None, issued).await;
    let dir = TempDir::new().expect("temp dir");
    let token = workload_jwt("never-shown");
    let path = write(&dir, "token", &token);
    for client in clients_sending(&token, &path) {
        let client = with(client, json!({"token_url": server.url(PATH)}));
        let config: OAuth2Config = serde_json::from_value(client).expect("valid config");
        let builder = config.builder();
        let source = builder.clone().build().expect("valid source");
        source.fetch_token().await.expect("a token");
        for text in [
            format!("{config:?}"),
            format!("{builder:?}"),
            format!("{source:?}"),
        ] {
            assert!(!text.contains(&token), "token shown: {text}");
        }
    }
    assert_eq!(received.requests().len(), 4);
}

#[tokio::test]
async fn a_token_the_server_echoes_is_scrubbed_from_the_error() {
    let dir = TempDir::new().expect("temp dir");
    let token = workload_jwt("echoed");
    let path = write(&dir, "token", &token);
    let answers = [
        (401, "invalid_client"),
        (401, "invalid_client"),
        (400, "invalid_grant"),
        (400, "invalid_request"),
    ];
    for (client, (status, code)) in clients_sending(&token, &path).into_iter().zip(answers) {
        let server = MockServer::start_async().await;
        let received = Received::default();
        let description = format!("bad assertion {token}");
        token_endpoint(&server, &received, None, |then| {
            then.status(status)
                .json_body(json!({"error": code, "error_description": description}));
        })
        .await;
        let client = with(client, json!({"token_url": server.url(PATH)}));
        let error = source(client).fetch_token().await.expect_err("refused");
        assert_eq!(error.status(), Some(status));
        assert_eq!(error.oauth_code(), Some(code));
        assert_eq!(error.oauth_description(), Some("bad assertion [redacted]"));
        assert!(error.to_string().contains("[redacted]"), "{error}");
        assert_hidden(&error, &token);
    }
}

#[tokio::test]
async fn a_failing_source_s_error_does_not_quote_the_token() {
    let dir = TempDir::new().expect("temp dir");
    let token = workload_jwt("failing");
    let expired = workload_jwt_for("expired", -60);
    let path = write(&dir, "expired", &expired);
    let cases = [
        (
            token.clone(),
            json!({"command": ["sh", "-c", "printf 'refused %s' \"$0\" >&2; exit 3", token]}),
        ),
        (expired.clone(), file(&path)),
    ];
    for (shown, assertion) in cases {
        let server = MockServer::start_async().await;
        let received = Received::default();
        let mock = token_endpoint(&server, &received, None, issued).await;
        let client = with(
            client_assertion_client(assertion),
            json!({"token_url": server.url(PATH)}),
        );
        let error = source(client)
            .fetch_token()
            .await
            .expect_err("no assertion to send");
        assert_eq!(mock.calls_async().await, 0, "nothing sent");
        assert!(
            error.to_string().starts_with("client_assertion: "),
            "{error}"
        );
        assert_hidden(&error, &shown);
    }
}
