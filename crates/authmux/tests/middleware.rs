//! The reqwest middleware against httpmock: header injection, one recovery
//! from a rejected token, DPoP nonce retries, scope, and no secret leaks.
#![cfg(all(
    feature = "reqwest-middleware",
    feature = "mention-me",
    feature = "360learning",
    feature = "auth0"
))]

use authmux::middleware::Authenticate;
use authmux::{Config, Registry};
use base64::Engine as _;
use figment::providers::{Format, Toml};
use httpmock::Method::{GET, POST};
use httpmock::MockServer;
use reqwest_middleware::{ClientBuilder, ClientWithMiddleware};
use serde_json::json;

const SECRET: &str = "middleware-secret-3c1d";

fn registry(server: &MockServer) -> Registry {
    let base = server.base_url();
    let config = Config::from(Toml::string(&format!(
        r#"
        [clients.mm]
        provider = "mention-me"
        client_id = "mm"
        client_secret = "{SECRET}"
        base_url = "{base}"

        [clients.learning]
        provider = "360learning"
        client_id = "learning"
        client_secret = "{SECRET}"
        base_url = "{base}"

        [clients.bound]
        provider = "auth0"
        domain = "{base}"
        client_id = "bound"
        client_secret = "{SECRET}"
        audience = "https://api.example.com"
        dpop = true
        "#
    )))
    .expect("valid config");
    Registry::from_config(&config).expect("valid registry")
}

/// An inner client that does not follow redirects, as the middleware needs.
fn inner() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

fn http(registry: &Registry, client: &str) -> ClientWithMiddleware {
    let client = registry.client(client).expect("configured").clone();
    with(Authenticate::new(client))
}

fn with(authenticate: Authenticate) -> ClientWithMiddleware {
    ClientBuilder::new(inner()).with(authenticate).build()
}

fn authenticate(registry: &Registry, client: &str) -> Authenticate {
    Authenticate::new(registry.client(client).expect("configured").clone())
}

/// Mention Me's token endpoint answering `token` at most `times` times.
async fn mention_me_token<'a>(
    server: &'a MockServer,
    token: &str,
    times: Option<usize>,
) -> httpmock::Mock<'a> {
    let body = json!({"access_token": token, "expires_in": 3600, "token_type": "bearer"});
    let mock = server
        .mock_async(|when, then| {
            when.method(POST).path("/api/oauth/token");
            then.status(200).json_body(body);
        })
        .await;
    if let Some(times) = times {
        mock.up_to_n_times_async(times).await;
    }
    mock
}

/// The customer API: 200 for `Bearer good`, 401 `{"code":"401",…}` otherwise.
async fn customers_api<'a>(
    server: &'a MockServer,
    good: &'static str,
) -> (httpmock::Mock<'a>, httpmock::Mock<'a>) {
    let ok = server
        .mock_async(move |when, then| {
            when.method(GET)
                .path("/api/merchant/v2/customers")
                .header("authorization", format!("Bearer {good}"));
            then.status(200)
                .json_body(json!({"customers": [{"id": 1}]}));
        })
        .await;
    let rejected = server
        .mock_async(|when, then| {
            when.method(GET).path("/api/merchant/v2/customers");
            then.status(401)
                .json_body(json!({"code": "401", "message": "Expired token."}));
        })
        .await;
    (ok, rejected)
}

#[tokio::test]
async fn bearer_tokens_and_api_headers_are_attached_and_caller_headers_kept() {
    let server = MockServer::start_async().await;
    mention_me_token(&server, "t-1", None).await;
    let (ok, _) = customers_api(&server, "t-1").await;
    let registry = registry(&server);
    let response = http(&registry, "mm")
        .get(server.url("/api/merchant/v2/customers"))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 200);
    assert_eq!(ok.calls_async().await, 1);

    server
        .mock_async(|when, then| {
            when.method(POST).path("/api/v2/oauth2/token");
            then.status(200).json_body(
                json!({"token_type": "Bearer", "access_token": "l-1", "expires_in": "3600"}),
            );
        })
        .await;
    let versioned = server
        .mock_async(|when, then| {
            when.method(GET)
                .path("/api/v2/users")
                .header("authorization", "Bearer l-1")
                .header("360-api-version", "v2.0");
            then.status(200);
        })
        .await;
    let kept = server
        .mock_async(|when, then| {
            when.method(GET)
                .path("/api/v2/groups")
                .header("360-api-version", "v1.0");
            then.status(200);
        })
        .await;
    let learning = http(&registry, "learning");
    learning
        .get(server.url("/api/v2/users"))
        .send()
        .await
        .expect("sent");
    learning
        .get(server.url("/api/v2/groups"))
        .header("360-api-version", "v1.0")
        .send()
        .await
        .expect("sent");
    assert_eq!(versioned.calls_async().await, 1);
    assert_eq!(kept.calls_async().await, 1, "the caller's header is kept");
}

#[tokio::test]
async fn a_rejected_token_is_refreshed_once_and_the_request_retried() {
    let server = MockServer::start_async().await;
    let first = mention_me_token(&server, "stale", Some(1)).await;
    let second = mention_me_token(&server, "fresh", None).await;
    let (ok, rejected) = customers_api(&server, "fresh").await;
    let registry = registry(&server);
    let response = http(&registry, "mm")
        .get(server.url("/api/merchant/v2/customers"))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 200);
    assert_eq!(
        (first.calls_async().await, second.calls_async().await),
        (1, 1)
    );
    assert_eq!(
        (rejected.calls_async().await, ok.calls_async().await),
        (1, 1)
    );
}

#[tokio::test]
async fn a_second_401_is_returned_to_the_caller() {
    let server = MockServer::start_async().await;
    let tokens = mention_me_token(&server, "never-good", None).await;
    let (_, rejected) = customers_api(&server, "something-else").await;
    let registry = registry(&server);
    let response = http(&registry, "mm")
        .get(server.url("/api/merchant/v2/customers"))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 401);
    assert_eq!(rejected.calls_async().await, 2, "one retry, no loop");
    assert_eq!(tokens.calls_async().await, 2);
}

#[tokio::test]
async fn a_body_that_cannot_be_sent_again_is_not_retried() {
    let server = MockServer::start_async().await;
    let tokens = mention_me_token(&server, "stale", None).await;
    let rejected = server
        .mock_async(|when, then| {
            when.method(POST).path("/api/merchant/v2/customers");
            then.status(401)
                .json_body(json!({"code": "401", "message": "Expired token."}));
        })
        .await;
    let registry = registry(&server);
    let chunks: Vec<Result<&'static [u8], std::io::Error>> = vec![Ok(b"{\"name\":\"x\"}")];
    let body = reqwest::Body::wrap_stream(futures_util::stream::iter(chunks));
    let response = http(&registry, "mm")
        .post(server.url("/api/merchant/v2/customers"))
        .body(body)
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 401);
    assert_eq!(rejected.calls_async().await, 1);
    assert_eq!(
        tokens.calls_async().await,
        1,
        "nothing to retry with, so no refresh"
    );
}

#[tokio::test]
async fn fifty_concurrent_401s_cause_one_token_fetch() {
    let server = MockServer::start_async().await;
    let first = mention_me_token(&server, "stale", Some(1)).await;
    let second = mention_me_token(&server, "fresh", None).await;
    let (ok, _) = customers_api(&server, "fresh").await;
    let registry = registry(&server);
    let client = http(&registry, "mm");
    // Warm the cache with the stale token first, so all 50 send it.
    registry.token("mm").await.expect("token");
    let mut requests = tokio::task::JoinSet::new();
    for _ in 0..50 {
        let client = client.clone();
        let url = server.url("/api/merchant/v2/customers");
        requests.spawn(async move { client.get(url).send().await.map(|r| r.status().as_u16()) });
    }
    while let Some(status) = requests.join_next().await {
        assert_eq!(status.expect("task").expect("sent"), 200);
    }
    assert_eq!(first.calls_async().await, 1);
    assert_eq!(
        second.calls_async().await,
        1,
        "one refresh for the whole burst"
    );
    assert_eq!(ok.calls_async().await, 50);
}

/// The `nonce` claim of the request's DPoP proof.
fn proof_claims(request: &httpmock::prelude::HttpMockRequest) -> Option<serde_json::Value> {
    let proof = request.headers().get("dpop")?.to_str().ok()?.to_owned();
    let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(proof.split('.').nth(1)?)
        .ok()?;
    serde_json::from_slice(&payload).ok()
}

#[tokio::test]
async fn dpop_tokens_carry_proofs_and_a_resource_nonce_challenge_is_retried_once() {
    let server = MockServer::start_async().await;
    server
        .mock_async(|when, then| {
            when.method(POST).path("/oauth/token").header_exists("dpop");
            then.status(200).json_body(
                json!({"access_token": "bound", "token_type": "DPoP", "expires_in": 3600}),
            );
        })
        .await;
    let challenge = server
        .mock_async(|when, then| {
            when.method(GET)
                .path("/v1/things")
                .is_true(|request| proof_claims(request).is_some_and(|claims| claims.get("nonce").is_none()));
            then.status(401)
                .header("www-authenticate", r#"DPoP error="use_dpop_nonce", error_description="Resource server requires nonce""#)
                .header("dpop-nonce", "rs-nonce-1");
        })
        .await;
    let answered = server
        .mock_async(|when, then| {
            when.method(GET)
                .path("/v1/things")
                .header("authorization", "DPoP bound")
                .is_true(|request| {
                    proof_claims(request).is_some_and(|claims| {
                        claims["nonce"] == "rs-nonce-1"
                            && claims["htm"] == "GET"
                            && claims["ath"].is_string()
                    })
                });
            then.status(200);
        })
        .await;
    let registry = registry(&server);
    let response = http(&registry, "bound")
        .get(server.url("/v1/things?page=2"))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 200);
    assert_eq!(challenge.calls_async().await, 1);
    assert_eq!(answered.calls_async().await, 1);
}

/// Sends a GET for `/elsewhere` on `server` through the client that
/// `http` builds, to `url` (`/elsewhere` itself unless given), and checks
/// that it went without a token and that none was even fetched.
async fn assert_sent_without_a_token(
    server: &MockServer,
    url: Option<String>,
    http: impl FnOnce(&Registry) -> ClientWithMiddleware,
) {
    let tokens = mention_me_token(server, "t-1", None).await;
    let outside = server
        .mock_async(|when, then| {
            when.method(GET)
                .path("/elsewhere")
                .header_missing("authorization");
            then.status(200);
        })
        .await;
    let registry = registry(server);
    let url = url.unwrap_or_else(|| server.url("/elsewhere"));
    let response = http(&registry).get(url).send().await.expect("sent");
    assert_eq!(response.status(), 200);
    assert_eq!(outside.calls_async().await, 1);
    assert_eq!(tokens.calls_async().await, 0, "no token was even fetched");
}

#[tokio::test]
async fn tokens_stay_inside_the_scope() {
    let server = MockServer::start_async().await;
    assert_sent_without_a_token(&server, None, |registry| {
        with(
            authenticate(registry, "mm")
                .allow("https://api.mention-me.com/api/")
                .expect("url"),
        )
    })
    .await;
}

#[tokio::test]
async fn a_token_failure_fails_the_request_without_sending_it_or_a_secret() {
    let server = MockServer::start_async().await;
    server
        .mock_async(|when, then| {
            when.method(POST).path("/api/oauth/token");
            then.status(401).json_body(
                json!({"error": "invalid_client", "error_description": format!("bad {SECRET}")}),
            );
        })
        .await;
    let api = server
        .mock_async(|when, then| {
            when.method(GET).path("/api/merchant/v2/customers");
            then.status(200);
        })
        .await;
    let registry = registry(&server);
    let error = http(&registry, "mm")
        .get(server.url("/api/merchant/v2/customers"))
        .send()
        .await
        .expect_err("no token, no request");
    assert_eq!(api.calls_async().await, 0, "never sent unauthenticated");
    let text = format!("{error} {error:?}");
    assert!(text.contains("mention-me"), "{text}");
    assert!(!text.contains(SECRET), "{text}");
}

/// 360Learning's token endpoint issuing `l-old` once, then `l-new`, and
/// `/api/v2/users` accepting `l-new`: (first issue, second issue, accepted).
async fn learning_refresh(
    server: &MockServer,
) -> (httpmock::Mock<'_>, httpmock::Mock<'_>, httpmock::Mock<'_>) {
    let issue =
        |token: &str| json!({"token_type": "Bearer", "access_token": token, "expires_in": "3600"});
    let first = server
        .mock_async(|when, then| {
            when.method(POST).path("/api/v2/oauth2/token");
            then.status(200).json_body(issue("l-old"));
        })
        .await;
    first.up_to_n_times_async(1).await;
    let second = server
        .mock_async(|when, then| {
            when.method(POST).path("/api/v2/oauth2/token");
            then.status(200).json_body(issue("l-new"));
        })
        .await;
    let fresh = server
        .mock_async(|when, then| {
            when.method(GET)
                .path("/api/v2/users")
                .header("authorization", "Bearer l-new");
            then.status(200);
        })
        .await;
    (first, second, fresh)
}

/// Answers `/api/v2/users` with a 401 and these `WWW-Authenticate` fields
/// unless the token is `l-new`, sends one GET through the `learning`
/// client, and checks that the token was refreshed and the request retried,
/// once each.
async fn assert_refreshed_after(challenges: &'static [&'static str]) {
    let server = MockServer::start_async().await;
    let (first, second, fresh) = learning_refresh(&server).await;
    let challenged = server
        .mock_async(|when, then| {
            when.method(GET).path("/api/v2/users");
            let mut then = then.status(401);
            for challenge in challenges {
                then = then.header("www-authenticate", *challenge);
            }
        })
        .await;
    let registry = registry(&server);
    let response = http(&registry, "learning")
        .get(server.url("/api/v2/users"))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 200, "{challenges:?}");
    assert_eq!(challenged.calls_async().await, 1, "{challenges:?}");
    assert_eq!(fresh.calls_async().await, 1, "{challenges:?}");
    assert_eq!(
        (first.calls_async().await, second.calls_async().await),
        (1, 1),
        "{challenges:?}"
    );
}

#[tokio::test]
async fn elsewhere_only_an_invalid_token_challenge_triggers_a_refresh() {
    let server = MockServer::start_async().await;
    let (_, second, _) = learning_refresh(&server).await;
    let plain = server
        .mock_async(|when, then| {
            when.method(GET).path("/api/v2/groups");
            then.status(401);
        })
        .await;
    let registry = registry(&server);

    // A 401 without an invalid_token challenge is not about the token.
    let response = http(&registry, "learning")
        .get(server.url("/api/v2/groups"))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 401);
    assert_eq!(plain.calls_async().await, 1, "not retried");
    assert_eq!(second.calls_async().await, 0, "no refresh");

    assert_refreshed_after(&[r#"Bearer error="invalid_token", error_description="expired""#]).await;
}

/// Auth0's token endpoint on `server`, answering a DPoP-bound token.
async fn bound_token(server: &MockServer) -> httpmock::Mock<'_> {
    server
        .mock_async(|when, then| {
            when.method(POST).path("/oauth/token").header_exists("dpop");
            then.status(200).json_body(
                json!({"access_token": "bound", "token_type": "DPoP", "expires_in": 3600}),
            );
        })
        .await
}

#[tokio::test]
async fn a_nonce_challenge_after_another_challenge_in_the_field_is_retried() {
    let server = MockServer::start_async().await;
    bound_token(&server).await;
    let challenge = server
        .mock_async(|when, then| {
            when.method(GET).path("/v1/things").is_true(|request| {
                proof_claims(request).is_some_and(|claims| claims.get("nonce").is_none())
            });
            then.status(401)
                .header(
                    "www-authenticate",
                    r#"Bearer realm="api", DPoP algs="ES256", error=use_dpop_nonce"#,
                )
                .header("dpop-nonce", "rs-nonce-2");
        })
        .await;
    let answered = server
        .mock_async(|when, then| {
            when.method(GET).path("/v1/things").is_true(|request| {
                proof_claims(request).is_some_and(|claims| claims["nonce"] == "rs-nonce-2")
            });
            then.status(200);
        })
        .await;
    let registry = registry(&server);
    let response = http(&registry, "bound")
        .get(server.url("/v1/things"))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 200);
    assert_eq!(challenge.calls_async().await, 1);
    assert_eq!(answered.calls_async().await, 1);
}

#[tokio::test]
async fn an_unquoted_invalid_token_challenge_triggers_a_refresh() {
    assert_refreshed_after(&[
        r#"Basic realm="legacy""#,
        "Bearer realm=api, error=invalid_token",
    ])
    .await;
    assert_refreshed_after(&["Basic realm=legacy, Bearer error=invalid_token"]).await;
}

#[tokio::test]
async fn a_name_under_localhost_is_not_loopback_and_gets_no_token() {
    let server = MockServer::start_async().await;
    let url = format!(
        "http://api.attacker.localhost:{}/elsewhere",
        server.address().port()
    );
    assert_sent_without_a_token(&server, Some(url), |registry| {
        // The name resolves to the mock server here; elsewhere it goes to DNS.
        let inner = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .resolve("api.attacker.localhost", *server.address())
            .build()
            .expect("client");
        ClientBuilder::new(inner)
            .with(authenticate(registry, "mm"))
            .build()
    })
    .await;
}

/// A mock answering `status` on `path` whether or not a token came with it,
/// and counting the calls that had one.
async fn counted<'a>(
    server: &'a MockServer,
    path: &'static str,
    status: u16,
) -> (httpmock::Mock<'a>, httpmock::Mock<'a>) {
    let with_token = server
        .mock_async(move |when, then| {
            when.path(path).header_exists("authorization");
            then.status(status);
        })
        .await;
    let without = server
        .mock_async(move |when, then| {
            when.path(path)
                .header_missing("authorization")
                .header_missing("dpop");
            then.status(status);
        })
        .await;
    (with_token, without)
}

#[tokio::test]
async fn the_allow_list_matches_whole_path_segments() {
    let server = MockServer::start_async().await;
    mention_me_token(&server, "t-1", None).await;
    let registry = registry(&server);
    let http = with(
        authenticate(&registry, "mm")
            .allow(&server.url("/v1"))
            .expect("url")
            .allow(&server.url("/v2/"))
            .expect("url"),
    );
    for (path, authenticated) in [
        ("/v1", true),
        ("/v1/", true),
        ("/v1/things", true),
        ("/v2", true),
        ("/v2/things", true),
        ("/v1-internal", false),
        ("/v1apiary", false),
        ("/v1-internal/things", false),
        ("/v2beta/things", false),
        ("/v", false),
    ] {
        server.reset_async().await;
        mention_me_token(&server, "t-1", None).await;
        let (with_token, without) = counted(&server, path, 200).await;
        let response = http.get(server.url(path)).send().await.expect("sent");
        assert_eq!(response.status(), 200, "{path}");
        let calls = (with_token.calls_async().await, without.calls_async().await);
        let expected = if authenticated { (1, 0) } else { (0, 1) };
        assert_eq!(calls, expected, "{path}");
    }
}

#[tokio::test]
async fn a_same_origin_redirect_outside_the_allow_list_gets_no_token() {
    let server = MockServer::start_async().await;
    mention_me_token(&server, "t-1", None).await;
    let registry = registry(&server);
    let start = server
        .mock_async(|when, then| {
            when.method(GET)
                .path("/v1/things")
                .header("authorization", "Bearer t-1");
            then.status(302)
                .header("location", "/v1-internal/admin?x=1");
        })
        .await;
    let (stolen, landed) = counted(&server, "/v1-internal/admin", 200).await;
    let http = with(
        authenticate(&registry, "mm")
            .allow(&server.url("/v1"))
            .expect("url"),
    );
    let response = http
        .get(server.url("/v1/things"))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 200);
    assert_eq!(start.calls_async().await, 1);
    assert_eq!(stolen.calls_async().await, 0, "the token stayed in /v1");
    assert_eq!(landed.calls_async().await, 1, "the redirect was followed");
}

#[tokio::test]
async fn a_cross_origin_redirect_gets_neither_the_token_nor_the_proof() {
    let server = MockServer::start_async().await;
    let elsewhere = MockServer::start_async().await;
    bound_token(&server).await;
    let registry = registry(&server);
    let target = elsewhere.url("/collect");
    let start = server
        .mock_async(move |when, then| {
            when.method(GET)
                .path("/v1/things")
                .header("authorization", "DPoP bound")
                .header_exists("dpop")
                .header("cookie", "session=1");
            then.status(307).header("location", target);
        })
        .await;
    let (stolen, landed) = counted(&elsewhere, "/collect", 200).await;
    let cookie_kept = elsewhere
        .mock_async(|when, then| {
            when.header_exists("cookie");
            then.status(500);
        })
        .await;
    // Both origins are loopback, so both are in the default scope: only
    // the origin of the first request gets the token on a redirect.
    let response = http(&registry, "bound")
        .get(server.url("/v1/things"))
        .header("cookie", "session=1")
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 200);
    assert_eq!(start.calls_async().await, 1);
    assert_eq!(
        cookie_kept.calls_async().await,
        0,
        "no cookie across origins"
    );
    assert_eq!(stolen.calls_async().await, 0, "no token across origins");
    assert_eq!(landed.calls_async().await, 1, "the redirect was followed");
}

#[tokio::test]
async fn a_redirect_inside_the_scope_gets_the_token_and_a_proof_for_its_own_url() {
    let server = MockServer::start_async().await;
    bound_token(&server).await;
    let registry = registry(&server);
    let moved = server
        .mock_async(|when, then| {
            when.method(POST).path("/v1/old").body("payload");
            then.status(308).header("location", "/v1/new");
        })
        .await;
    let new_url = server.url("/v1/new");
    let landed = server
        .mock_async(move |when, then| {
            when.method(POST)
                .path("/v1/new")
                .body("payload")
                .header("authorization", "DPoP bound")
                .is_true(move |request| {
                    proof_claims(request).is_some_and(|claims| {
                        claims["htu"] == new_url.as_str() && claims["htm"] == "POST"
                    })
                });
            then.status(201);
        })
        .await;
    let see_other = server
        .mock_async(|when, then| {
            when.method(POST).path("/v1/create");
            then.status(303).header("location", "/v1/created/7");
        })
        .await;
    let created = server
        .mock_async(|when, then| {
            when.method(GET)
                .path("/v1/created/7")
                .header("authorization", "DPoP bound")
                .header_missing("content-type")
                .is_true(|request| request.body().is_empty());
            then.status(200);
        })
        .await;
    let http = http(&registry, "bound");
    let response = http
        .post(server.url("/v1/old"))
        .body("payload")
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 201);
    assert_eq!(
        (moved.calls_async().await, landed.calls_async().await),
        (1, 1)
    );
    let response = http
        .post(server.url("/v1/create"))
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 200, "303 becomes a GET without a body");
    assert_eq!(
        (see_other.calls_async().await, created.calls_async().await),
        (1, 1)
    );
}

#[tokio::test]
async fn redirects_stop_at_the_limit_and_can_be_turned_off() {
    let server = MockServer::start_async().await;
    mention_me_token(&server, "t-1", None).await;
    let registry = registry(&server);
    let looping = server
        .mock_async(|when, then| {
            when.method(GET).path("/loop");
            then.status(302).header("location", "/loop");
        })
        .await;
    let response = http(&registry, "mm")
        .get(server.url("/loop"))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 302, "the last redirect is the answer");
    assert_eq!(
        looping.calls_async().await,
        authmux::middleware::DEFAULT_MAX_REDIRECTS + 1
    );

    looping.delete_async().await;
    let (with_token, _) = counted(&server, "/next", 200).await;
    server
        .mock_async(|when, then| {
            when.method(GET).path("/start");
            then.status(301).header("location", "/next");
        })
        .await;
    let response = with(authenticate(&registry, "mm").max_redirects(0))
        .get(server.url("/start"))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 301);
    assert_eq!(with_token.calls_async().await, 0);
}

#[tokio::test]
async fn an_inner_client_that_follows_redirects_is_refused() {
    let server = MockServer::start_async().await;
    mention_me_token(&server, "t-1", None).await;
    let registry = registry(&server);
    server
        .mock_async(|when, then| {
            when.method(GET).path("/api/start");
            then.status(302).header("location", "/api/next");
        })
        .await;
    server
        .mock_async(|when, then| {
            when.method(GET).path("/api/next");
            then.status(200).body("followed");
        })
        .await;
    // reqwest's default client follows up to 10 redirects on its own.
    let following = ClientBuilder::new(reqwest::Client::new())
        .with(authenticate(&registry, "mm"))
        .build();
    let error = following
        .get(server.url("/api/start"))
        .send()
        .await
        .expect_err("refused");
    let reqwest_middleware::Error::Middleware(error) = error else {
        panic!("not the middleware's error: {error}");
    };
    let error = error
        .downcast_ref::<authmux::Error>()
        .expect("an authmux error");
    assert_eq!(error.kind(), authmux::ErrorKind::Config);
    assert!(error.to_string().contains("Policy::none()"), "{error}");
    assert!(error.to_string().contains("\"mm\""), "{error}");
}

#[tokio::test]
async fn a_dpop_nonce_from_any_resource_response_is_used_next() {
    let server = MockServer::start_async().await;
    bound_token(&server).await;
    let registry = registry(&server);
    let first = server
        .mock_async(|when, then| {
            when.method(GET).path("/v1/first");
            then.status(200).header("dpop-nonce", "rs-nonce-from-200");
        })
        .await;
    let second = server
        .mock_async(|when, then| {
            when.method(GET).path("/v1/second").is_true(|request| {
                proof_claims(request).is_some_and(|claims| claims["nonce"] == "rs-nonce-from-200")
            });
            then.status(200);
        })
        .await;
    let http = http(&registry, "bound");
    for path in ["/v1/first", "/v1/second"] {
        let response = http.get(server.url(path)).send().await.expect("sent");
        assert_eq!(response.status(), 200, "{path}");
    }
    assert_eq!(
        (first.calls_async().await, second.calls_async().await),
        (1, 1)
    );
}
