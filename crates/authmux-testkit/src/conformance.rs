//! The provider conformance suite (feature `conformance`): the behaviours
//! every authmux provider must share, run through a
//! `ManagedToken` against a mock token
//! endpoint that matches on method and path only. Each provider's exact
//! request shape belongs in its own wire tests; this suite checks what a
//! caller sees, whatever the wire format.
//!
//! A provider crate runs it from its own tests, so that adding a provider
//! touches nothing outside its crate:
//!
//! ```
//! use authmux_core::wire::{ClientAuth, RequestSource, TokenRequest};
//! use authmux_testkit::conformance::Subject;
//!
//! // Your provider's builder goes here; this one is a bare RFC 6749 request.
//! fn subject() -> Subject {
//!     Subject::new("my-idp", "/token", |base, http, secret| {
//!         let request = TokenRequest::builder(format!("{base}/token"))
//!             .param("grant_type", "client_credentials")
//!             .client_credentials(ClientAuth::Basic, "client-1", secret.resolve("client_secret")?)
//!             .build()?;
//!         Ok(RequestSource::new("my-idp", http, request)?.into())
//!     })
//! }
//!
//! // In tests/conformance.rs: one #[tokio::test] per check.
//! authmux_testkit::conformance_tests!(subject());
//! # fn main() {}
//! ```
//!
//! The checks:
//!
//! | check | what must hold |
//! |---|---|
//! | [`every_expires_in_form`] | `expires_in` as a number, a string, or absent (the default lifetime) |
//! | [`refusals_are_permanent`] | a 400 or 401 OAuth error is `Refused`, typed, and sent once |
//! | [`rate_limits_wait_for_retry_after`] | a 429 with `Retry-After` is retried after the wait |
//! | [`server_errors_are_retried`] | a 500 is retried, then the token is served |
//! | [`an_html_page_is_a_clear_error`] | a 200 HTML page is `InvalidResponse`, not retried |
//! | [`a_slow_server_times_out`] | a server slower than the timeout is `Timeout` |
//! | [`concurrent_callers_share_one_request`] | 50 callers, one request |
//! | [`invalidate_fetches_a_new_token`] | `invalidate` then `get` fetches again |
//! | [`debug_holds_no_secret`] | the source's `Debug` leaves the secret out |
//!
//! Every error a check provokes must name the client (`api`) and the
//! provider, be one line, and hold neither the secret nor the token.

use std::collections::HashSet;
use std::fmt;
use std::time::{Duration, Instant};

use authmux_core::wire::{HttpClient, HttpConfig};
use authmux_core::{CachePolicy, ClientSecret, Error, ErrorKind, ManagedToken, SharedTokenSource};
use httpmock::Method::POST;
use httpmock::{Mock, MockServer, Then};
use serde_json::{Value, json};

/// The client secret every check builds its provider with, and looks for
/// in every error.
pub const SECRET: &str = "conformance-secret-5a9e";

/// The access token the mock hands out, and looks for in every error.
pub const ACCESS_TOKEN: &str = "conformance-token";

/// Builds a provider's token source against a mock server's base URL
/// (`http://127.0.0.1:port`, loopback, so plain HTTP is allowed), with the
/// HTTP client and the client secret to use.
pub type Build =
    dyn Fn(&str, HttpClient, ClientSecret) -> Result<SharedTokenSource, Error> + Send + Sync;

/// One provider under test: its name, the path of its token endpoint
/// below the base URL, and how to build it.
pub struct Subject {
    name: &'static str,
    path: String,
    build: Box<Build>,
}

impl fmt::Debug for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subject")
            .field("name", &self.name)
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl Subject {
    /// A provider called `name` (its `NAME`) whose token endpoint is
    /// `path` below the base URL `build` gets.
    pub fn new(
        name: &'static str,
        path: impl Into<String>,
        build: impl Fn(&str, HttpClient, ClientSecret) -> Result<SharedTokenSource, Error>
        + Send
        + Sync
        + 'static,
    ) -> Self {
        Self {
            name,
            path: path.into(),
            build: Box::new(build),
        }
    }

    /// The provider's name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    fn source(&self, base: &str, http: HttpClient) -> SharedTokenSource {
        match (self.build)(base, http, ClientSecret::inline(SECRET)) {
            Ok(source) => source,
            Err(error) => panic!("{}: the provider does not build: {error}", self.name),
        }
    }

    /// A cache named `api` over the provider, pointed at `server`.
    fn cache(&self, server: &MockServer, policy: CachePolicy, http: HttpClient) -> ManagedToken {
        ManagedToken::builder(self.source(&server.base_url(), http))
            .name("api")
            .policy(policy)
            .build()
    }

    fn default_cache(&self, server: &MockServer) -> ManagedToken {
        self.cache(server, CachePolicy::default(), http())
    }

    /// Answers POSTs to the token endpoint as `respond` says.
    async fn respond<'a>(
        &self,
        server: &'a MockServer,
        respond: impl FnOnce(Then) + Send + 'static,
    ) -> Mock<'a> {
        let path = self.path.clone();
        server
            .mock_async(move |when, then| {
                when.method(POST).path(path);
                respond(then);
            })
            .await
    }

    /// Answers the token endpoint with `status` and `body`, at most `times`
    /// times when given; later requests fall through to later mocks.
    async fn answer<'a>(
        &self,
        server: &'a MockServer,
        status: u16,
        body: Value,
        times: Option<usize>,
    ) -> Mock<'a> {
        let mock = self
            .respond(server, move |then| {
                then.status(status).json_body(body);
            })
            .await;
        if let Some(times) = times {
            mock.up_to_n_times_async(times).await;
        }
        mock
    }

    /// The error's text and `Debug` hold neither secret nor token, it is one
    /// line, and it names the client and the provider.
    fn assert_clean(&self, error: &Error) {
        let name = self.name;
        for text in [error.to_string(), format!("{error:?}")] {
            assert!(!text.contains(SECRET), "{name}: secret leaked: {text}");
            assert!(!text.contains(ACCESS_TOKEN), "{name}: token leaked: {text}");
        }
        assert!(!error.to_string().contains('\n'), "{name}: not one line");
        assert_eq!(error.client(), Some("api"), "{name}: the client");
        assert_eq!(error.provider(), Some(name), "{name}: the provider");
    }
}

fn http() -> HttpClient {
    HttpClient::new().expect("an HTTP client")
}

fn token_body(expires_in: Value) -> Value {
    let mut body = json!({"access_token": ACCESS_TOKEN, "token_type": "Bearer"});
    if !expires_in.is_null() {
        body["expires_in"] = expires_in;
    }
    body
}

/// `expires_in` as a number, as a string, or absent (the HTTP client's
/// default lifetime, 5 minutes) sets the token's lifetime; one request
/// each.
pub async fn every_expires_in_form(subject: &Subject) {
    let name = subject.name;
    for (expires_in, lifetime) in [
        (json!(3600), 3600),
        (json!("1800"), 1800),
        (Value::Null, 300),
    ] {
        let server = MockServer::start_async().await;
        let mock = subject
            .answer(&server, 200, token_body(expires_in.clone()), None)
            .await;
        let token = subject
            .default_cache(&server)
            .get()
            .await
            .unwrap_or_else(|error| panic!("{name}: {error}"));
        assert_eq!(
            token.lifetime(),
            Duration::from_secs(lifetime),
            "{name}: expires_in {expires_in}"
        );
        assert_eq!(token.authorization(), &format!("Bearer {ACCESS_TOKEN}"));
        assert_eq!(mock.calls_async().await, 1, "{name}");
    }
}

/// A 400 `invalid_request` and a 401 `invalid_client` are `Refused`, keep
/// their status and OAuth code, are not transient, and are sent once.
pub async fn refusals_are_permanent(subject: &Subject) {
    let name = subject.name;
    for (status, code) in [(400, "invalid_request"), (401, "invalid_client")] {
        let server = MockServer::start_async().await;
        let body = json!({"error": code, "error_description": "refused by the test"});
        let mock = subject.answer(&server, status, body, None).await;
        let error = subject
            .default_cache(&server)
            .get()
            .await
            .expect_err("a refusal");
        assert_eq!(error.kind(), ErrorKind::Refused, "{name}: {error}");
        assert_eq!(error.status(), Some(status), "{name}");
        assert_eq!(error.oauth_code(), Some(code), "{name}");
        assert!(!error.is_transient(), "{name}");
        assert_eq!(mock.calls_async().await, 1, "{name}: not retried");
        subject.assert_clean(&error);
    }
}

/// A 429 with `Retry-After: 1` is retried, and not before the second.
///
/// A real server and socket: paused time cannot drive them, so this waits
/// one real second.
pub async fn rate_limits_wait_for_retry_after(subject: &Subject) {
    let name = subject.name;
    let server = MockServer::start_async().await;
    let limited = subject
        .respond(&server, |then| {
            then.status(429)
                .header("retry-after", "1")
                .json_body(json!({"error": "too_many_requests"}));
        })
        .await;
    limited.up_to_n_times_async(1).await;
    let ok = subject
        .answer(&server, 200, token_body(json!(3600)), None)
        .await;
    let started = Instant::now();
    subject
        .default_cache(&server)
        .get()
        .await
        .unwrap_or_else(|error| panic!("{name}: {error}"));
    // Not a speed assertion: the wait is the behaviour under test.
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "{name}: retried before Retry-After"
    );
    assert_eq!(limited.calls_async().await, 1, "{name}");
    assert_eq!(ok.calls_async().await, 1, "{name}");
}

/// A 500 is retried and the next answer's token served.
pub async fn server_errors_are_retried(subject: &Subject) {
    let name = subject.name;
    let server = MockServer::start_async().await;
    let failing = subject
        .answer(&server, 500, json!({"error": "server_error"}), Some(1))
        .await;
    let ok = subject
        .answer(&server, 200, token_body(json!(3600)), None)
        .await;
    let token = subject
        .default_cache(&server)
        .get()
        .await
        .unwrap_or_else(|error| panic!("{name}: {error}"));
    assert_eq!(token.lifetime(), Duration::from_secs(3600), "{name}");
    assert_eq!(failing.calls_async().await, 1, "{name}");
    assert_eq!(ok.calls_async().await, 1, "{name}");
}

/// A 200 HTML page (a login page, a proxy's) is an `InvalidResponse` that
/// says so, and is not retried.
pub async fn an_html_page_is_a_clear_error(subject: &Subject) {
    let name = subject.name;
    let server = MockServer::start_async().await;
    let mock = subject
        .respond(&server, |then| {
            then.status(200)
                .header("content-type", "text/html")
                .body("<html><body>Sign in</body></html>");
        })
        .await;
    let error = subject
        .default_cache(&server)
        .get()
        .await
        .expect_err("an HTML page");
    assert_eq!(error.kind(), ErrorKind::InvalidResponse, "{name}: {error}");
    assert!(error.to_string().contains("HTML"), "{name}: {error}");
    assert_eq!(mock.calls_async().await, 1, "{name}: permanent");
    subject.assert_clean(&error);
}

/// A server slower than the HTTP client's timeout (200 ms here) is a
/// transient `Timeout`.
pub async fn a_slow_server_times_out(subject: &Subject) {
    let name = subject.name;
    let server = MockServer::start_async().await;
    subject
        .respond(&server, |then| {
            then.status(200)
                .delay(Duration::from_secs(30))
                .json_body(token_body(json!(3600)));
        })
        .await;
    let http = HttpClient::with_config(HttpConfig::default().timeout(Duration::from_millis(200)))
        .expect("an HTTP client");
    let mut policy = CachePolicy::default();
    policy.retry.max_attempts = 1;
    let error = subject
        .cache(&server, policy, http)
        .get()
        .await
        .expect_err("a timeout");
    assert_eq!(error.kind(), ErrorKind::Timeout, "{name}: {error}");
    assert!(error.is_transient(), "{name}");
    subject.assert_clean(&error);
}

/// 50 concurrent callers of a cold cache get one token from one request.
pub async fn concurrent_callers_share_one_request(subject: &Subject) {
    let name = subject.name;
    let server = MockServer::start_async().await;
    let mock = subject
        .respond(&server, |then| {
            then.status(200)
                .delay(Duration::from_millis(100))
                .json_body(token_body(json!(3600)));
        })
        .await;
    let cache = subject.default_cache(&server);
    let mut callers = tokio::task::JoinSet::new();
    for _ in 0..50 {
        let cache = cache.clone();
        callers.spawn(async move { cache.get().await.map(|token| token.id()) });
    }
    let mut ids = HashSet::new();
    while let Some(joined) = callers.join_next().await {
        let id = joined
            .expect("a caller task")
            .unwrap_or_else(|error| panic!("{name}: {error}"));
        ids.insert(id);
    }
    assert_eq!(ids.len(), 1, "{name}: one token");
    assert_eq!(mock.calls_async().await, 1, "{name}: one request");
}

/// `invalidate` drops the token, and the next `get` fetches a new one.
pub async fn invalidate_fetches_a_new_token(subject: &Subject) {
    let name = subject.name;
    let server = MockServer::start_async().await;
    let mock = subject
        .answer(&server, 200, token_body(json!(3600)), None)
        .await;
    let cache = subject.default_cache(&server);
    let first = cache
        .get()
        .await
        .unwrap_or_else(|error| panic!("{name}: {error}"))
        .clone();
    assert!(cache.invalidate(&first), "{name}");
    let second = cache
        .get()
        .await
        .unwrap_or_else(|error| panic!("{name}: {error}"));
    assert_ne!(first.id(), second.id(), "{name}");
    assert_eq!(mock.calls_async().await, 2, "{name}");
}

/// The source's `Debug` does not hold the secret.
pub async fn debug_holds_no_secret(subject: &Subject) {
    let source = subject.source("https://idp.example.com", http());
    let debug = format!("{source:?}");
    assert!(!debug.contains(SECRET), "{}: {debug}", subject.name);
}

/// Every check in order, for a caller that wants one test.
pub async fn run_all(subject: &Subject) {
    every_expires_in_form(subject).await;
    refusals_are_permanent(subject).await;
    rate_limits_wait_for_retry_after(subject).await;
    server_errors_are_retried(subject).await;
    an_html_page_is_a_clear_error(subject).await;
    a_slow_server_times_out(subject).await;
    concurrent_callers_share_one_request(subject).await;
    invalidate_fetches_a_new_token(subject).await;
    debug_holds_no_secret(subject).await;
}

/// One `#[tokio::test]` per [conformance](crate::conformance) check, each
/// over the [`Subject`](crate::conformance::Subject) the expression builds.
/// The calling crate needs `tokio` (features `macros`, `rt`) as a
/// dev-dependency.
#[macro_export]
macro_rules! conformance_tests {
    ($subject:expr) => {
        $crate::conformance_tests!(@each $subject;
            every_expires_in_form,
            refusals_are_permanent,
            rate_limits_wait_for_retry_after,
            server_errors_are_retried,
            an_html_page_is_a_clear_error,
            a_slow_server_times_out,
            concurrent_callers_share_one_request,
            invalidate_fetches_a_new_token,
            debug_holds_no_secret,
        );
    };
    (@each $subject:expr; $($check:ident),* $(,)?) => {
        $(
            #[::tokio::test]
            async fn $check() {
                $crate::conformance::$check(&$subject).await;
            }
        )*
    };
}
