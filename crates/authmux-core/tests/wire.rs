//! The wire layer against a local httpmock server: exact requests, every
//! parsing rule, every error shape, and hostile responses.

use std::time::Duration;

use authmux_core::wire::{ClientAuth, HttpClient, HttpConfig, TokenRequest};
use authmux_core::{Error, ErrorKind, ExposeSecret, SecretString, Token, TokenType};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use httpmock::Method::POST;
use httpmock::MockServer;
use serde_json::{Value, json};

const SECRET: &str = "client-secret-7f3a";
const PATH: &str = "/oauth/token";

fn secret() -> SecretString {
    SecretString::from(SECRET.to_owned())
}

/// The request every test sends unless it says otherwise: JSON, credentials
/// in the body.
fn json_request(server: &MockServer) -> TokenRequest {
    TokenRequest::builder(server.url(PATH))
        .json()
        .param("grant_type", "client_credentials")
        .client_credentials(ClientAuth::Body, "client-1", secret())
        .param("audience", "https://api.example.com")
        .build()
        .expect("valid request")
}

fn expected_json_body() -> Value {
    json!({
        "grant_type": "client_credentials",
        "client_id": "client-1",
        "client_secret": SECRET,
        "audience": "https://api.example.com",
    })
}

/// Answers any POST to the token path with `status` and `body`.
async fn answer(server: &MockServer, status: u16, body: &str) {
    let body = body.to_owned();
    server
        .mock_async(move |when, then| {
            when.method(POST).path(PATH);
            then.status(status)
                .header("content-type", "application/json")
                .body(body);
        })
        .await;
}

async fn fetch(server: &MockServer) -> Result<Token, Error> {
    HttpClient::new()
        .expect("client")
        .fetch_token(&json_request(server))
        .await
}

fn jwt(payload: &Value) -> String {
    format!(
        "{}.{}.c2ln",
        URL_SAFE_NO_PAD.encode(r#"{"alg":"RS256","typ":"JWT"}"#),
        URL_SAFE_NO_PAD.encode(payload.to_string())
    )
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs()
}

fn assert_no_secret(error: &Error, extra: &str) {
    for text in [error.to_string(), format!("{error:?}")] {
        assert!(!text.contains(SECRET), "secret leaked: {text}");
        assert!(
            extra.is_empty() || !text.contains(extra),
            "leaked {extra}: {text}"
        );
        assert!(!text.contains('\n'), "not one line: {text}");
    }
}

#[tokio::test]
async fn sends_the_exact_json_request() {
    let server = MockServer::start_async().await;
    let mock = server
        .mock_async(|when, then| {
            when.method(POST)
                .path(PATH)
                .header("content-type", "application/json")
                .header("accept", "application/json")
                .header("user-agent", concat!("authmux/", env!("CARGO_PKG_VERSION")))
                .header_missing("authorization")
                .json_body(expected_json_body());
            then.status(200).json_body(json!({
                "access_token": "opaque-access-token",
                "token_type": "Bearer",
                "expires_in": 86400,
                "scope": "read:things write:things",
                "org_id": "org_123",
            }));
        })
        .await;
    let token = fetch(&server).await.expect("token");
    mock.assert_async().await;
    assert_eq!(token.secret().expose_secret(), "opaque-access-token");
    assert_eq!(token.token_type(), &TokenType::Bearer);
    assert_eq!(token.lifetime(), Duration::from_secs(86400));
    assert_eq!(token.scope(), Some("read:things write:things"));
    assert_eq!(token.scopes().count(), 2);
    assert_eq!(token.extra().get("org_id"), Some(&json!("org_123")));
    assert_eq!(token.authorization(), "Bearer opaque-access-token");
}

#[tokio::test]
async fn sends_the_exact_form_request_with_basic_auth() {
    let server = MockServer::start_async().await;
    let basic = format!("Basic {}", STANDARD.encode(format!("client%3A1:{SECRET}")));
    let mock = server
        .mock_async(move |when, then| {
            when.method(POST)
                .path(PATH)
                .header("content-type", "application/x-www-form-urlencoded")
                .header("authorization", basic)
                .body("grant_type=client_credentials&scope=a+b");
            then.status(200)
                .json_body(json!({"access_token": "t", "token_type": "bearer", "expires_in": 60}));
        })
        .await;
    let request = TokenRequest::builder(server.url(PATH))
        .param("grant_type", "client_credentials")
        .param("scope", "a b")
        .client_credentials(ClientAuth::Basic, "client:1", secret())
        .build()
        .expect("valid request");
    let token = HttpClient::new()
        .expect("client")
        .fetch_token(&request)
        .await
        .expect("token");
    mock.assert_async().await;
    assert_eq!(token.token_type(), &TokenType::Bearer, "lower-case bearer");
}

#[tokio::test]
async fn expires_in_as_string_float_or_number() {
    for (expires_in, expected) in [
        (json!("3600"), Duration::from_secs(3600)),
        (json!(3599.5), Duration::from_millis(3_599_500)),
        (json!(120), Duration::from_secs(120)),
    ] {
        let server = MockServer::start_async().await;
        let body = json!({"access_token": "t", "token_type": "Bearer", "expires_in": expires_in});
        answer(&server, 200, &body.to_string()).await;
        let token = fetch(&server).await.expect("token");
        assert_eq!(token.lifetime(), expected, "{expires_in}");
    }
}

#[tokio::test]
async fn missing_expires_in_falls_back_to_jwt_exp_then_to_the_default() {
    let server = MockServer::start_async().await;
    let access_token = jwt(&json!({"sub": "m2m", "exp": unix_now() + 900}));
    answer(
        &server,
        200,
        &json!({"access_token": access_token}).to_string(),
    )
    .await;
    let token = fetch(&server).await.expect("token");
    let lifetime = token.lifetime().as_secs();
    assert!((895..=900).contains(&lifetime), "from exp: {lifetime}");

    let server = MockServer::start_async().await;
    answer(
        &server,
        200,
        r#"{"access_token":"opaque","token_type":"Bearer"}"#,
    )
    .await;
    let token = fetch(&server).await.expect("token");
    assert_eq!(token.lifetime(), Duration::from_secs(300), "never forever");

    let request = TokenRequest::builder(server.url(PATH))
        .default_lifetime(Duration::from_secs(42))
        .build()
        .expect("valid request");
    let token = HttpClient::new()
        .expect("client")
        .fetch_token(&request)
        .await
        .expect("token");
    assert_eq!(token.lifetime(), Duration::from_secs(42));
}

#[tokio::test]
async fn jwt_exp_caps_a_longer_expires_in() {
    let server = MockServer::start_async().await;
    let access_token = jwt(&json!({"exp": unix_now() + 600}));
    let body = json!({"access_token": access_token, "token_type": "bearer", "expires_in": 3600});
    answer(&server, 200, &body.to_string()).await;
    let token = fetch(&server).await.expect("token");
    assert!(token.lifetime() <= Duration::from_secs(600));
    assert!(token.lifetime() >= Duration::from_secs(595));
}

#[tokio::test]
async fn a_token_expired_on_arrival_is_an_invalid_response() {
    let past_jwt = jwt(&json!({"exp": unix_now() - 60}));
    for body in [
        json!({"access_token": "t", "expires_in": 0}),
        json!({"access_token": "t", "expires_in": -3600}),
        json!({"access_token": "t", "expires_in": "0"}),
        json!({"access_token": "t", "expires_in": 0.001}),
        json!({"access_token": past_jwt, "token_type": "bearer"}),
        json!({"access_token": past_jwt, "token_type": "bearer", "expires_in": 3600}),
    ] {
        let server = MockServer::start_async().await;
        answer(&server, 200, &body.to_string()).await;
        let error = fetch(&server).await.expect_err("unusable token");
        assert_eq!(error.kind(), ErrorKind::InvalidResponse, "{body}");
        assert_eq!(error.status(), Some(200));
        assert!(!error.is_transient(), "{error}");
    }
}

#[tokio::test]
async fn a_slow_answer_does_not_stretch_the_lifetime() {
    let server = MockServer::start_async().await;
    server
        .mock_async(|when, then| {
            when.method(POST).path(PATH);
            then.status(200)
                .delay(Duration::from_millis(600))
                .json_body(json!({"access_token": "t", "expires_in": 60}));
        })
        .await;
    let token = fetch(&server).await.expect("token");
    let arrived = tokio::time::Instant::now();
    // The lifetime counts from when the request left, at least the
    // server's delay before the answer arrived.
    assert_eq!(token.lifetime(), Duration::from_secs(60));
    assert!(
        arrived.duration_since(token.issued_at()) >= Duration::from_millis(600),
        "issued_at is the request's departure"
    );
}

#[tokio::test]
async fn any_2xx_with_an_access_token_is_a_token() {
    let server = MockServer::start_async().await;
    answer(&server, 201, r#"{"access_token":"t","expires_in":60}"#).await;
    assert_eq!(
        fetch(&server).await.expect("201 accepted").lifetime(),
        Duration::from_secs(60)
    );
}

#[tokio::test]
async fn dpop_token_type_gets_a_dpop_header() {
    let server = MockServer::start_async().await;
    answer(
        &server,
        200,
        r#"{"access_token":"t","token_type":"DPoP","expires_in":60}"#,
    )
    .await;
    let token = fetch(&server).await.expect("token");
    assert_eq!(token.token_type(), &TokenType::DPoP);
    assert_eq!(token.authorization(), "DPoP t");
}

#[tokio::test]
async fn a_200_with_an_error_body_is_an_error() {
    let server = MockServer::start_async().await;
    answer(
        &server,
        200,
        r#"{"error":"invalid_scope","error_description":"bad scope"}"#,
    )
    .await;
    let error = fetch(&server).await.expect_err("error body");
    assert_eq!(error.kind(), ErrorKind::Refused);
    assert_eq!(error.oauth_code(), Some("invalid_scope"));
    assert_eq!(error.oauth_description(), Some("bad scope"));
    assert!(!error.is_transient());
}

#[tokio::test]
async fn a_2xx_without_access_token_is_invalid() {
    let server = MockServer::start_async().await;
    answer(&server, 200, r#"{"token_type":"Bearer","expires_in":60}"#).await;
    let error = fetch(&server).await.expect_err("no token");
    assert_eq!(error.kind(), ErrorKind::InvalidResponse);
    assert!(!error.is_transient());
}

#[tokio::test]
async fn every_error_shape_becomes_one_model() {
    let cases: &[(u16, &str, &str, Option<&str>, ErrorKind)] = &[
        (
            400,
            r#"{"error":"invalid_request","error_description":"Missing audience","error_uri":"https://docs/x"}"#,
            "invalid_request",
            Some("Missing audience"),
            ErrorKind::Refused,
        ),
        (
            403,
            r#"{"code":"access_denied","description":"No client grant"}"#,
            "access_denied",
            Some("No client grant"),
            ErrorKind::Refused,
        ),
        (
            401,
            r#"{"code":"401","message":"Expired token."}"#,
            "401",
            Some("Expired token."),
            ErrorKind::Refused,
        ),
        (
            401,
            r#"{"error":"invalid_client"}"#,
            "invalid_client",
            None,
            ErrorKind::Refused,
        ),
        (
            503,
            r#"{"error":{"code":"temporarily_unavailable","message":"try later"}}"#,
            "temporarily_unavailable",
            Some("try later"),
            ErrorKind::Server,
        ),
    ];
    for &(status, body, code, description, kind) in cases {
        let server = MockServer::start_async().await;
        answer(&server, status, body).await;
        let error = fetch(&server).await.expect_err(body);
        assert_eq!(error.kind(), kind, "{body}");
        assert_eq!(error.status(), Some(status));
        assert_eq!(error.oauth_code(), Some(code), "{body}");
        assert_eq!(error.oauth_description(), description, "{body}");
        assert_no_secret(&error, "");
    }
    let server = MockServer::start_async().await;
    answer(
        &server,
        400,
        r#"{"error":"invalid_request","error_uri":"https://docs/x"}"#,
    )
    .await;
    let error = fetch(&server).await.expect_err("uri");
    assert_eq!(
        error.oauth().and_then(|oauth| oauth.uri.as_deref()),
        Some("https://docs/x")
    );
}

#[tokio::test]
async fn rate_limits_keep_retry_after_and_the_rate_limit_headers() {
    let server = MockServer::start_async().await;
    server
        .mock_async(|when, then| {
            when.method(POST).path(PATH);
            then.status(429)
                .header("retry-after", "7")
                .header("x-ratelimit-limit", "30")
                .header("x-ratelimit-remaining", "0")
                .header("x-ratelimit-reset", "1706201080")
                .json_body(json!({"error": "too_many_requests", "error_description": "Global limit has been reached"}));
        })
        .await;
    let error = fetch(&server).await.expect_err("rate limited");
    assert_eq!(error.kind(), ErrorKind::RateLimited);
    assert!(error.is_transient());
    assert_eq!(error.retry_after(), Some(Duration::from_secs(7)));
    let rate_limit = error.rate_limit();
    assert_eq!(rate_limit.limit, Some(30));
    assert_eq!(rate_limit.remaining, Some(0));
    assert_eq!(rate_limit.reset, Some(1_706_201_080));
    assert!(error.to_string().contains("retry after 7s"), "{error}");
}

#[tokio::test]
async fn retry_after_as_an_http_date() {
    let server = MockServer::start_async().await;
    let date = httpdate::fmt_http_date(std::time::SystemTime::now() + Duration::from_secs(120));
    server
        .mock_async(move |when, then| {
            when.method(POST).path(PATH);
            then.status(503).header("retry-after", date).body("");
        })
        .await;
    let error = fetch(&server).await.expect_err("unavailable");
    assert_eq!(error.kind(), ErrorKind::Server);
    let retry_after = error.retry_after().expect("parsed date");
    assert!(retry_after > Duration::from_secs(110) && retry_after <= Duration::from_secs(120));
}

#[tokio::test]
async fn an_html_error_page_is_a_short_one_line_error() {
    let server = MockServer::start_async().await;
    let page = format!(
        "<html>\n<head><title>502 Bad Gateway</title></head>\n<body>{}</body></html>",
        "lorem ipsum ".repeat(200)
    );
    server
        .mock_async(move |when, then| {
            when.method(POST).path(PATH);
            then.status(502)
                .header("content-type", "text/html")
                .body(page);
        })
        .await;
    let error = fetch(&server).await.expect_err("html");
    assert_eq!(error.kind(), ErrorKind::Server);
    assert!(error.is_transient());
    let text = error.to_string();
    assert!(text.contains("an HTML page"), "{text}");
    assert!(text.contains("502 Bad Gateway"), "{text}");
    assert!(text.len() < 400, "truncated: {} chars", text.len());
    assert_no_secret(&error, "");
}

#[tokio::test]
async fn an_html_200_is_permanent_and_not_quoted() {
    let server = MockServer::start_async().await;
    server
        .mock_async(|when, then| {
            when.method(POST).path(PATH);
            then.status(200)
                .header("content-type", "text/html")
                .body("<html>login page</html>");
        })
        .await;
    let error = fetch(&server).await.expect_err("html");
    assert_eq!(error.kind(), ErrorKind::InvalidResponse);
    assert!(!error.is_transient());
    assert!(!error.to_string().contains("login page"));
}

#[tokio::test]
async fn truncated_json_never_quotes_the_token() {
    let server = MockServer::start_async().await;
    answer(
        &server,
        200,
        r#"{"access_token":"eyJ.partial-token-9d2c","expires_in":36"#,
    )
    .await;
    let error = fetch(&server).await.expect_err("truncated");
    assert_eq!(error.kind(), ErrorKind::InvalidResponse);
    assert!(error.to_string().contains("not a JSON object"), "{error}");
    assert_no_secret(&error, "partial-token-9d2c");
}

#[tokio::test]
async fn a_body_over_the_cap_is_refused() {
    let server = MockServer::start_async().await;
    let huge = format!(
        r#"{{"access_token":"t","padding":"{}"}}"#,
        "x".repeat(300 * 1024)
    );
    answer(&server, 200, &huge).await;
    let error = fetch(&server).await.expect_err("too large");
    assert_eq!(error.kind(), ErrorKind::InvalidResponse);
    assert!(error.to_string().contains("256 KiB"), "{error}");

    // The cap is configurable, and applies to error bodies too.
    let server = MockServer::start_async().await;
    answer(&server, 500, &"y".repeat(2048)).await;
    let small = HttpClient::with_config(HttpConfig::default().max_body(1024)).expect("client");
    let error = small
        .fetch_token(&json_request(&server))
        .await
        .expect_err("too large");
    assert!(error.to_string().contains("1 KiB"), "{error}");
}

#[tokio::test]
async fn a_slow_server_hits_the_timeout() {
    let server = MockServer::start_async().await;
    server
        .mock_async(|when, then| {
            when.method(POST).path(PATH);
            then.status(200)
                .delay(Duration::from_secs(30))
                .json_body(json!({"access_token": "late"}));
        })
        .await;
    // A real socket and a real server thread: paused time cannot drive
    // them, so this waits 200 ms of real time.
    let request = TokenRequest::builder(server.url(PATH))
        .timeout(Duration::from_millis(200))
        .build()
        .expect("valid request");
    let error = HttpClient::new()
        .expect("client")
        .fetch_token(&request)
        .await
        .expect_err("timeout");
    assert_eq!(error.kind(), ErrorKind::Timeout);
    assert!(error.is_transient());
    assert!(
        error
            .to_string()
            .starts_with(&format!("timed out waiting for {}: ", server.base_url())),
        "{error}"
    );
}

#[tokio::test]
async fn redirects_are_not_followed() {
    let server = MockServer::start_async().await;
    let target = server
        .mock_async(|when, then| {
            when.path("/elsewhere");
            then.status(200)
                .json_body(json!({"access_token": "stolen"}));
        })
        .await;
    let location = server.url("/elsewhere");
    server
        .mock_async(move |when, then| {
            when.method(POST).path(PATH);
            then.status(307).header("location", location);
        })
        .await;
    let error = fetch(&server).await.expect_err("redirect");
    assert_eq!(error.kind(), ErrorKind::InvalidResponse);
    assert_eq!(error.status(), Some(307));
    assert!(error.to_string().contains("/elsewhere"), "{error}");
    assert_eq!(
        target.calls_async().await,
        0,
        "the redirect was not followed"
    );
}

#[tokio::test]
async fn plain_http_to_a_remote_host_is_refused_before_any_request() {
    let error = TokenRequest::builder("http://idp.example.com/oauth/token")
        .build()
        .expect_err("insecure");
    assert_eq!(error.kind(), ErrorKind::Config);
    assert!(error.to_string().contains("https"), "{error}");
}

#[tokio::test]
async fn connection_refused_is_a_transient_transport_error() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let address = listener.local_addr().expect("address");
    drop(listener);
    let request = TokenRequest::builder(format!("http://{address}/oauth/token"))
        .build()
        .expect("valid request");
    let error = HttpClient::new()
        .expect("client")
        .fetch_token(&request)
        .await
        .expect_err("refused");
    assert_eq!(error.kind(), ErrorKind::Transport);
    assert!(error.is_transient());
}

#[tokio::test]
async fn a_server_echoing_the_secret_is_scrubbed() {
    let server = MockServer::start_async().await;
    let body = json!({
        "error": "invalid_client",
        "error_description": format!("client_secret {SECRET} is wrong"),
    });
    answer(&server, 401, &body.to_string()).await;
    let error = fetch(&server).await.expect_err("refused");
    assert!(
        error
            .oauth_description()
            .is_some_and(|text| text.contains("[redacted]"))
    );
    assert_no_secret(&error, "");

    let server = MockServer::start_async().await;
    answer(&server, 500, &format!("oops, got secret={SECRET}")).await;
    assert_no_secret(&fetch(&server).await.expect_err("echo"), "");
}

#[tokio::test]
async fn the_http_clients_default_lifetime_applies_unless_the_request_overrides_it() {
    let server = MockServer::start_async().await;
    answer(&server, 200, r#"{"access_token":"opaque"}"#).await;
    let http =
        HttpClient::with_config(HttpConfig::default().default_lifetime(Duration::from_secs(90)))
            .expect("client");
    let token = http
        .fetch_token(&json_request(&server))
        .await
        .expect("token");
    assert_eq!(token.lifetime(), Duration::from_secs(90));
    let overriding = TokenRequest::builder(server.url(PATH))
        .default_lifetime(Duration::from_secs(30))
        .build()
        .expect("valid request");
    let token = http.fetch_token(&overriding).await.expect("token");
    assert_eq!(token.lifetime(), Duration::from_secs(30));
}

#[tokio::test]
async fn a_secret_echoed_in_its_form_encoded_shape_is_scrubbed_too() {
    let special = "p@ss w&rd=9";
    let server = MockServer::start_async().await;
    answer(
        &server,
        400,
        r#"{"error":"invalid_request","error_description":"bad body: client_secret=p%40ss+w%26rd%3D9"}"#,
    )
    .await;
    let request = TokenRequest::builder(server.url(PATH))
        .param("grant_type", "client_credentials")
        .client_credentials(
            ClientAuth::Body,
            "client-1",
            SecretString::from(special.to_owned()),
        )
        .build()
        .expect("valid request");
    let error = HttpClient::new()
        .expect("client")
        .fetch_token(&request)
        .await
        .expect_err("refused");
    let text = format!("{error} {error:?}");
    assert!(!text.contains("p%40ss+w%26rd%3D9"), "{text}");
    assert!(!text.contains(special), "{text}");
    assert!(text.contains("client_secret=[redacted]"), "{text}");
}

/// A token URL whose path and query look like credentials, as some
/// deployments' do; no error may show either.
fn secret_looking_url(origin: &str) -> String {
    format!("{origin}/tenant-s3cr3t-path/oauth/token?key=s3cr3t-query")
}

fn assert_origin_only(error: &Error, origin: &str) {
    let text = error.to_string();
    assert!(
        text.starts_with(&format!("could not reach {origin}: ")),
        "{text}"
    );
    assert_eq!(error.endpoint(), Some(origin));
    let all = format!("{error} {error:?}");
    assert!(!all.contains("s3cr3t"), "{all}");
    assert!(!all.contains("/oauth/token"), "{all}");
}

/// The transport error of a token request to `origin`, checked to name the
/// origin and nothing more of the URL.
async fn unreachable(origin: &str) -> Error {
    let request = TokenRequest::builder(secret_looking_url(origin))
        .build()
        .expect("valid request");
    let error = HttpClient::new()
        .expect("client")
        .fetch_token(&request)
        .await
        .expect_err("unreachable");
    assert_eq!(error.kind(), ErrorKind::Transport);
    assert_origin_only(&error, origin);
    error
}

#[tokio::test]
async fn a_refused_connection_names_the_origin_and_the_cause() {
    let address = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port");
    let origin = format!("http://{address}");
    let error = unreachable(&origin).await;
    assert!(
        error
            .to_string()
            .to_ascii_lowercase()
            .contains("connection refused"),
        "{error}"
    );
    assert!(!error.to_string().contains("connection failed"), "{error}");
}

/// A resolver that knows no name.
struct NoSuchHost;

impl reqwest::dns::Resolve for NoSuchHost {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let message = format!("no such host {}", name.as_str());
        Box::pin(async move { Err(message.into()) })
    }
}

#[tokio::test]
async fn a_dns_failure_names_the_origin_and_the_cause() {
    let client = reqwest::Client::builder()
        .dns_resolver(NoSuchHost)
        .build()
        .expect("client");
    let failure = client
        .get(secret_looking_url("https://tenant.auth0.com"))
        .send()
        .await
        .expect_err("no such host");
    let error = authmux_core::wire::transport_error(failure);
    assert_eq!(error.kind(), ErrorKind::Transport);
    assert!(error.is_transient());
    assert_origin_only(&error, "https://tenant.auth0.com");
    assert!(
        error
            .to_string()
            .contains(": dns error: error resolving DNS: no such host tenant.auth0.com"),
        "{error}"
    );
}

#[tokio::test]
async fn a_tls_failure_names_the_origin_and_the_cause() {
    // httpmock speaks plain HTTP, so a TLS handshake with it fails.
    let server = MockServer::start_async().await;
    let origin = format!("https://{}", server.address());
    let error = unreachable(&origin).await;
    assert!(error.to_string().contains(": TLS error: "), "{error}");
}
