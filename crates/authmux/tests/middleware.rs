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
    Registry::new(&config).expect("valid registry")
}

fn http(registry: &Registry, client: &str) -> ClientWithMiddleware {
    let client = registry.client(client).expect("configured").clone();
    ClientBuilder::new(reqwest::Client::new())
        .with(Authenticate::new(client))
        .build()
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

#[tokio::test]
async fn tokens_stay_inside_the_scope() {
    let server = MockServer::start_async().await;
    let tokens = mention_me_token(&server, "t-1", None).await;
    let outside = server
        .mock_async(|when, then| {
            when.method(GET)
                .path("/elsewhere")
                .header_missing("authorization");
            then.status(200);
        })
        .await;
    let registry = registry(&server);
    let client = registry.client("mm").expect("configured").clone();
    let scoped = ClientBuilder::new(reqwest::Client::new())
        .with(
            Authenticate::new(client)
                .allow("https://api.mention-me.com/api/")
                .expect("url"),
        )
        .build();
    let response = scoped
        .get(server.url("/elsewhere"))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 200);
    assert_eq!(outside.calls_async().await, 1);
    assert_eq!(tokens.calls_async().await, 0, "no token was even fetched");
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

#[tokio::test]
async fn elsewhere_only_an_invalid_token_challenge_triggers_a_refresh() {
    let server = MockServer::start_async().await;
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
    let challenged = server
        .mock_async(|when, then| {
            when.method(GET).path("/api/v2/users");
            then.status(401).header(
                "www-authenticate",
                r#"Bearer error="invalid_token", error_description="expired""#,
            );
        })
        .await;
    let plain = server
        .mock_async(|when, then| {
            when.method(GET).path("/api/v2/groups");
            then.status(401);
        })
        .await;
    let registry = registry(&server);
    let learning = http(&registry, "learning");

    // A 401 without an invalid_token challenge is not about the token.
    let response = learning
        .get(server.url("/api/v2/groups"))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 401);
    assert_eq!(plain.calls_async().await, 1, "not retried");
    assert_eq!(second.calls_async().await, 0, "no refresh");

    let response = learning
        .get(server.url("/api/v2/users"))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 200);
    assert_eq!(challenged.calls_async().await, 1);
    assert_eq!(fresh.calls_async().await, 1);
    assert_eq!(
        (first.calls_async().await, second.calls_async().await),
        (1, 1)
    );
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
    let server = MockServer::start_async().await;
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
    let challenged = server
        .mock_async(|when, then| {
            when.method(GET).path("/api/v2/users");
            then.status(401)
                .header("www-authenticate", r#"Basic realm="legacy""#)
                .header("www-authenticate", "Bearer realm=api, error=invalid_token");
        })
        .await;
    let registry = registry(&server);
    let response = http(&registry, "learning")
        .get(server.url("/api/v2/users"))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 200);
    assert_eq!(challenged.calls_async().await, 1);
    assert_eq!(fresh.calls_async().await, 1);
    assert_eq!(
        (first.calls_async().await, second.calls_async().await),
        (1, 1)
    );
}
