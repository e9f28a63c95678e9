//! The provider conformance suite: the same behaviours, run against every
//! provider through a `ManagedToken`, with httpmock standing in for the
//! token endpoint. Exact request shapes are checked in each provider's own
//! tests; here every mock matches on method and path only.

use authmux_core::EndpointBuilder as _;
use std::time::{Duration, Instant};

use authmux_360learning::{Region, ThreeSixtyLearningProvider};
use authmux_auth0::Auth0Provider;
use authmux_core::wire::{HttpClient, HttpConfig};
use authmux_core::{CachePolicy, ClientSecret, Error, ErrorKind, ManagedToken, SharedTokenSource};
use authmux_mention_me::{Environment, MentionMeProvider};
use authmux_oauth2::OAuth2Provider;
use httpmock::Method::POST;
use httpmock::MockServer;
use serde_json::{Value, json};

const SECRET: &str = "conformance-secret-5a9e";

/// One provider under test: how to build it against a mock base URL, and
/// the path of its token endpoint.
struct Case {
    name: &'static str,
    path: &'static str,
    build: fn(&str, HttpClient) -> Result<SharedTokenSource, Error>,
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            name: authmux_mention_me::NAME,
            path: authmux_mention_me::TOKEN_PATH,
            build: |base, http| {
                Ok(
                    MentionMeProvider::builder("client-1", ClientSecret::inline(SECRET))
                        .environment(Environment::Demo)
                        .base_url(base)
                        .http_client(http)
                        .build()?
                        .into(),
                )
            },
        },
        Case {
            name: authmux_360learning::NAME,
            path: authmux_360learning::TOKEN_PATH,
            build: |base, http| {
                Ok(
                    ThreeSixtyLearningProvider::builder("client-1", ClientSecret::inline(SECRET))
                        .region(Region::Eu)
                        .base_url(base)
                        .http_client(http)
                        .build()?
                        .into(),
                )
            },
        },
        Case {
            name: authmux_auth0::NAME,
            path: authmux_auth0::TOKEN_PATH,
            build: |base, http| {
                Ok(
                    Auth0Provider::builder(base, "client-1", ClientSecret::inline(SECRET))
                        .audience("https://api.example.com")
                        .http_client(http)
                        .build()?
                        .into(),
                )
            },
        },
        Case {
            name: authmux_oauth2::NAME,
            path: "/oauth2/v1/token",
            build: |base, http| {
                let token_url = authmux_core::wire::join_url(base, "/oauth2/v1/token");
                Ok(
                    OAuth2Provider::builder(token_url, "client-1", ClientSecret::inline(SECRET))
                        .scopes(["read:things"])
                        .http_client(http)
                        .build()?
                        .into(),
                )
            },
        },
    ]
}

/// A cache named "api" over the case's provider, pointed at `server`.
fn cache(case: &Case, server: &MockServer, policy: CachePolicy) -> ManagedToken {
    cache_with_http(case, server, policy, HttpClient::new().expect("client"))
}

fn cache_with_http(
    case: &Case,
    server: &MockServer,
    policy: CachePolicy,
    http: HttpClient,
) -> ManagedToken {
    let source = (case.build)(&server.base_url(), http).expect("valid provider");
    ManagedToken::builder(source)
        .name("api")
        .policy(policy)
        .build()
}

/// Answers the case's token endpoint with `status` and `body`, at most
/// `times` times when given (later requests fall through to later mocks).
async fn answer<'a>(
    server: &'a MockServer,
    case: &Case,
    status: u16,
    body: Value,
    times: Option<usize>,
) -> httpmock::Mock<'a> {
    let path = case.path;
    let mock = server
        .mock_async(move |when, then| {
            when.method(POST).path(path);
            then.status(status).json_body(body);
        })
        .await;
    if let Some(times) = times {
        mock.up_to_n_times_async(times).await;
    }
    mock
}

fn token_body(expires_in: Value) -> Value {
    let mut body = json!({"access_token": "conformance-token", "token_type": "Bearer"});
    if !expires_in.is_null() {
        body["expires_in"] = expires_in;
    }
    body
}

fn assert_clean(case: &Case, error: &Error) {
    for text in [error.to_string(), format!("{error:?}")] {
        assert!(
            !text.contains(SECRET),
            "{}: secret leaked: {text}",
            case.name
        );
        assert!(
            !text.contains("conformance-token"),
            "{}: token leaked: {text}",
            case.name
        );
    }
    assert!(
        !error.to_string().contains('\n'),
        "{}: not one line",
        case.name
    );
    assert_eq!(error.client(), Some("api"), "{}", case.name);
    assert_eq!(error.provider(), Some(case.name), "{}", case.name);
}

#[tokio::test]
async fn success_and_every_expires_in_form() {
    for case in cases() {
        for (expires_in, lifetime) in [
            (json!(3600), 3600),
            (json!("1800"), 1800),
            (Value::Null, 300),
        ] {
            let server = MockServer::start_async().await;
            let mock = answer(&server, &case, 200, token_body(expires_in.clone()), None).await;
            let cache = cache(&case, &server, CachePolicy::default());
            let token = cache.get().await.expect(case.name);
            assert_eq!(
                token.lifetime(),
                Duration::from_secs(lifetime),
                "{} {expires_in}",
                case.name
            );
            assert_eq!(token.authorization(), "Bearer conformance-token");
            assert_eq!(mock.calls_async().await, 1, "{}", case.name);
        }
    }
}

#[tokio::test]
async fn oauth_refusals_are_permanent_and_not_retried() {
    for case in cases() {
        for (status, code) in [(400, "invalid_request"), (401, "invalid_client")] {
            let server = MockServer::start_async().await;
            let body = json!({"error": code, "error_description": "refused by the test"});
            let mock = answer(&server, &case, status, body, None).await;
            let error = cache(&case, &server, CachePolicy::default())
                .get()
                .await
                .expect_err(case.name);
            assert_eq!(error.kind(), ErrorKind::Refused, "{}", case.name);
            assert_eq!(error.status(), Some(status));
            assert_eq!(error.oauth_code(), Some(code));
            assert!(!error.is_transient());
            assert_eq!(mock.calls_async().await, 1, "{}: not retried", case.name);
            assert_clean(&case, &error);
        }
    }
}

#[tokio::test]
async fn rate_limits_are_retried_after_the_delay() {
    for case in cases() {
        let server = MockServer::start_async().await;
        let path = case.path;
        let limited = server
            .mock_async(move |when, then| {
                when.method(POST).path(path);
                then.status(429)
                    .header("retry-after", "1")
                    .json_body(json!({"error": "too_many_requests"}));
            })
            .await;
        limited.up_to_n_times_async(1).await;
        let ok = answer(&server, &case, 200, token_body(json!(3600)), None).await;
        // A real server and socket: paused time cannot drive them, so this
        // waits one real second per provider.
        let started = Instant::now();
        cache(&case, &server, CachePolicy::default())
            .get()
            .await
            .expect(case.name);
        assert!(started.elapsed() >= Duration::from_secs(1), "{}", case.name);
        assert_eq!(limited.calls_async().await, 1);
        assert_eq!(ok.calls_async().await, 1);
    }
}

#[tokio::test]
async fn a_server_error_is_retried_then_succeeds() {
    for case in cases() {
        let server = MockServer::start_async().await;
        let failing = answer(
            &server,
            &case,
            500,
            json!({"error": "server_error"}),
            Some(1),
        )
        .await;
        let ok = answer(&server, &case, 200, token_body(json!(3600)), None).await;
        let token = cache(&case, &server, CachePolicy::default())
            .get()
            .await
            .expect(case.name);
        assert_eq!(token.lifetime(), Duration::from_secs(3600));
        assert_eq!(failing.calls_async().await, 1, "{}", case.name);
        assert_eq!(ok.calls_async().await, 1, "{}", case.name);
    }
}

#[tokio::test]
async fn an_html_body_is_a_clear_error() {
    for case in cases() {
        let server = MockServer::start_async().await;
        let path = case.path;
        let mock = server
            .mock_async(move |when, then| {
                when.method(POST).path(path);
                then.status(200)
                    .header("content-type", "text/html")
                    .body("<html><body>Sign in</body></html>");
            })
            .await;
        let error = cache(&case, &server, CachePolicy::default())
            .get()
            .await
            .expect_err(case.name);
        assert_eq!(error.kind(), ErrorKind::InvalidResponse, "{}", case.name);
        assert!(error.to_string().contains("HTML"), "{error}");
        assert_eq!(mock.calls_async().await, 1, "{}: permanent", case.name);
        assert_clean(&case, &error);
    }
}

#[tokio::test]
async fn a_slow_server_times_out() {
    for case in cases() {
        let server = MockServer::start_async().await;
        let path = case.path;
        server
            .mock_async(move |when, then| {
                when.method(POST).path(path);
                then.status(200)
                    .delay(Duration::from_secs(30))
                    .json_body(token_body(json!(3600)));
            })
            .await;
        let http =
            HttpClient::with_config(HttpConfig::default().timeout(Duration::from_millis(200)))
                .expect("client");
        let mut policy = CachePolicy::default();
        policy.retry.max_attempts = 1;
        let error = cache_with_http(&case, &server, policy, http)
            .get()
            .await
            .expect_err(case.name);
        assert_eq!(error.kind(), ErrorKind::Timeout, "{}", case.name);
        assert!(error.is_transient());
        assert_clean(&case, &error);
    }
}

#[tokio::test]
async fn concurrent_callers_make_one_request() {
    for case in cases() {
        let server = MockServer::start_async().await;
        let path = case.path;
        let mock = server
            .mock_async(move |when, then| {
                when.method(POST).path(path);
                then.status(200)
                    .delay(Duration::from_millis(100))
                    .json_body(token_body(json!(3600)));
            })
            .await;
        let cache = cache(&case, &server, CachePolicy::default());
        let mut callers = tokio::task::JoinSet::new();
        for _ in 0..50 {
            let cache = cache.clone();
            callers.spawn(async move { cache.get().await.map(|token| token.id()) });
        }
        let mut ids = std::collections::HashSet::new();
        while let Some(joined) = callers.join_next().await {
            ids.insert(joined.expect("task").expect(case.name));
        }
        assert_eq!(ids.len(), 1, "{}", case.name);
        assert_eq!(mock.calls_async().await, 1, "{}", case.name);
    }
}

#[tokio::test]
async fn invalidate_then_get_fetches_again() {
    for case in cases() {
        let server = MockServer::start_async().await;
        let mock = answer(&server, &case, 200, token_body(json!(3600)), None).await;
        let cache = cache(&case, &server, CachePolicy::default());
        let first = cache.get().await.expect(case.name).clone();
        assert!(cache.invalidate(&first));
        let second = cache.get().await.expect(case.name);
        assert_ne!(first.id(), second.id(), "{}", case.name);
        assert_eq!(mock.calls_async().await, 2, "{}", case.name);
    }
}

#[tokio::test]
async fn provider_debug_output_has_no_secret() {
    for case in cases() {
        let source = (case.build)(
            "https://idp.example.com",
            HttpClient::new().expect("client"),
        )
        .expect("valid provider");
        let debug = format!("{source:?}");
        assert!(!debug.contains(SECRET), "{}: {debug}", case.name);
    }
}
