//! Discovery of the token endpoint from an issuer (RFC 8414, OpenID
//! Connect Discovery): the exact metadata request, the path rules, every
//! check of the metadata, fetching it once, and failures that follow the
//! cache's retries and cool-down.

use std::time::Duration;

use authmux_core::EndpointBuilder as _;
use authmux_core::{CachePolicy, ClientSecret, Clock, Error, ErrorKind, ManagedToken, TokenSource};
use authmux_oauth2::{OAuth2Config, OAuth2Provider, OAuth2Source};
use authmux_testkit::{METADATA_PATH, OAUTH2_PATH, TokenServer};
use httpmock::Method::{GET, POST};
use httpmock::MockServer;
use serde_json::{Value, json};

const CLIENT_ID: &str = "client-1";
const SECRET: &str = "s3cr3t-value";
const OAUTH_WELL_KNOWN: &str = "/.well-known/oauth-authorization-server";
const OIDC_WELL_KNOWN: &str = "/.well-known/openid-configuration";

fn source(issuer: &str) -> OAuth2Source {
    OAuth2Provider::from_issuer(issuer, CLIENT_ID, ClientSecret::inline(SECRET))
        .build()
        .expect("valid provider")
}

fn from_config(config: Value) -> OAuth2Source {
    serde_json::from_value::<OAuth2Config>(config)
        .expect("valid config")
        .builder()
        .build()
        .expect("valid provider")
}

fn metadata(issuer: &str, token_endpoint: &str) -> Value {
    json!({
        "issuer": issuer,
        "token_endpoint": token_endpoint,
        "token_endpoint_auth_methods_supported": ["client_secret_basic"],
    })
}

async fn serve_metadata<'a>(
    server: &'a MockServer,
    path: &str,
    status: u16,
    body: Value,
) -> httpmock::Mock<'a> {
    let path = path.to_owned();
    server
        .mock_async(move |when, then| {
            when.method(GET)
                .path(path)
                .header("accept", "application/json");
            then.status(status)
                .header("content-type", "application/json")
                .json_body(body);
        })
        .await
}

async fn serve_token<'a>(server: &'a MockServer, path: &str) -> httpmock::Mock<'a> {
    let path = path.to_owned();
    server
        .mock_async(move |when, then| {
            when.method(POST).path(path);
            then.status(200).json_body(
                json!({"access_token": "from-discovery", "token_type": "Bearer", "expires_in": 3600}),
            );
        })
        .await
}

async fn discovery_error(source: &OAuth2Source) -> Error {
    let error = source.discover().await.expect_err("discovery refused");
    let again = source.fetch_token().await.expect_err("no token either");
    assert_eq!(again.kind(), error.kind());
    error
}

#[tokio::test]
async fn an_issuer_without_a_path_is_read_from_rfc_8414_s_well_known_url() {
    let server = MockServer::start_async().await;
    let issuer = server.base_url();
    let token_url = server.url("/oauth2/v1/token");
    let meta = serve_metadata(
        &server,
        OAUTH_WELL_KNOWN,
        200,
        metadata(&issuer, &token_url),
    )
    .await;
    let token = serve_token(&server, "/oauth2/v1/token").await;
    let source = source(&issuer);
    assert_eq!(source.token_url(), None, "no I/O before the first fetch");
    assert_eq!(source.issuer(), Some(issuer.as_str()));
    assert_eq!(source.identity().get("issuer"), Some(issuer.as_str()));

    let fetched = source.fetch_token().await.expect("a token");
    assert_eq!(fetched.token_type().to_string(), "Bearer");
    // The exact request: a GET of the well-known path asking for JSON
    // (the mock's `when` above), once.
    meta.assert_async().await;
    token.assert_async().await;
    assert_eq!(source.token_url(), Some(token_url.as_str()));
    assert_eq!(
        source.metadata().map(|metadata| metadata.issuer.as_str()),
        Some(issuer.as_str()),
        "the discovered issuer is kept, for a client assertion's audience"
    );
    assert_eq!(
        source.discover().await.expect("discovered"),
        Some(token_url.clone())
    );
    meta.assert_async().await;
}

#[tokio::test]
async fn an_issuer_with_a_path_tries_rfc_8414_then_openid_connect() {
    let server = MockServer::start_async().await;
    let issuer = server.url("/tenant");
    let token_url = server.url("/tenant/token");
    let oauth = serve_metadata(
        &server,
        &format!("{OAUTH_WELL_KNOWN}/tenant"),
        404,
        json!({"error": "not_found"}),
    )
    .await;
    let oidc = serve_metadata(
        &server,
        &format!("/tenant{OIDC_WELL_KNOWN}"),
        200,
        metadata(&issuer, &token_url),
    )
    .await;
    let source = source(&issuer);
    assert_eq!(
        source.discover().await.expect("discovered"),
        Some(token_url)
    );
    oauth.assert_async().await;
    oidc.assert_async().await;
}

#[tokio::test]
async fn an_issuer_mismatch_is_a_config_error_naming_the_issuer() {
    let server = MockServer::start_async().await;
    let issuer = server.url("/tenant");
    serve_metadata(
        &server,
        &format!("{OAUTH_WELL_KNOWN}/tenant"),
        200,
        metadata(&server.base_url(), &server.url("/token")),
    )
    .await;
    let token = serve_token(&server, "/token").await;
    let error = discovery_error(&source(&issuer)).await;
    assert_eq!(error.kind(), ErrorKind::Config);
    let text = error.to_string();
    assert!(text.contains(&format!("issuer {issuer}:")), "{text}");
    assert!(text.contains("must match it exactly"), "{text}");
    assert_eq!(token.calls_async().await, 0);
}

#[tokio::test]
async fn no_metadata_at_either_url_is_a_config_error() {
    let server = MockServer::start_async().await;
    let issuer = server.base_url();
    let oauth = serve_metadata(&server, OAUTH_WELL_KNOWN, 404, json!({})).await;
    let oidc = serve_metadata(&server, OIDC_WELL_KNOWN, 404, json!({})).await;
    let error = source(&issuer).discover().await.expect_err("no metadata");
    assert_eq!(error.kind(), ErrorKind::Config);
    let text = error.to_string();
    assert!(
        text.starts_with(&format!("issuer {issuer}: no metadata at ")),
        "{text}"
    );
    assert!(text.contains("HTTP 404"), "{text}");
    assert_eq!(oauth.calls_async().await, 1);
    assert_eq!(oidc.calls_async().await, 1);
}

#[tokio::test]
async fn a_server_error_stops_discovery_without_trying_the_next_url() {
    let server = MockServer::start_async().await;
    let oauth = serve_metadata(&server, OAUTH_WELL_KNOWN, 503, json!({})).await;
    let oidc = serve_metadata(&server, OIDC_WELL_KNOWN, 200, json!({})).await;
    let error = source(&server.base_url())
        .discover()
        .await
        .expect_err("unavailable");
    assert_eq!(error.kind(), ErrorKind::Discovery);
    assert_eq!(error.status(), Some(503));
    assert!(error.is_transient());
    let text = error.to_string();
    assert!(text.contains("metadata"), "{text}");
    assert!(!text.contains("token endpoint"), "{text}");
    assert_eq!(oauth.calls_async().await, 1);
    assert_eq!(oidc.calls_async().await, 0);
}

#[tokio::test]
async fn an_auth_method_the_server_does_not_support_is_a_config_error() {
    let server = MockServer::start_async().await;
    let issuer = server.base_url();
    let mut document = metadata(&issuer, &server.url("/token"));
    document["token_endpoint_auth_methods_supported"] = json!(["private_key_jwt"]);
    serve_metadata(&server, OAUTH_WELL_KNOWN, 200, document).await;
    let error = source(&issuer).discover().await.expect_err("basic refused");
    assert_eq!(error.kind(), ErrorKind::Config);
    let text = error.to_string();
    assert!(
        text.contains("does not accept client_secret_basic"),
        "{text}"
    );
    assert!(text.contains("private_key_jwt"), "{text}");

    // Without the list, RFC 8414's default is Basic alone: body
    // credentials are refused, Basic ones accepted.
    let server = MockServer::start_async().await;
    let issuer = server.base_url();
    let mut document = metadata(&issuer, &server.url("/token"));
    document
        .as_object_mut()
        .expect("an object")
        .remove("token_endpoint_auth_methods_supported");
    serve_metadata(&server, OAUTH_WELL_KNOWN, 200, document).await;
    let post = from_config(json!({
        "issuer": issuer, "client_id": CLIENT_ID, "client_secret": SECRET, "auth_style": "post",
    }));
    let error = post.discover().await.expect_err("post refused");
    assert!(
        error
            .to_string()
            .contains("does not accept client_secret_post"),
        "{error}"
    );
    assert!(source(&issuer).discover().await.is_ok());
}

#[tokio::test]
async fn dpop_needs_es256_in_the_metadata() {
    for algs in [Some(json!(["RS256", "PS256"])), None] {
        let server = MockServer::start_async().await;
        let issuer = server.base_url();
        let mut document = metadata(&issuer, &server.url("/token"));
        if let Some(algs) = algs.clone() {
            document["dpop_signing_alg_values_supported"] = algs;
        }
        serve_metadata(&server, OAUTH_WELL_KNOWN, 200, document).await;
        let dpop = from_config(json!({
            "issuer": issuer, "client_id": CLIENT_ID, "client_secret": SECRET, "dpop": true,
        }));
        assert!(dpop.dpop().is_some(), "the key is made when built");
        let error = dpop.discover().await.expect_err("no ES256");
        assert_eq!(error.kind(), ErrorKind::Config);
        assert!(error.to_string().contains("turn dpop off"), "{error}");
        // The same metadata is fine for a client without DPoP.
        assert!(source(&issuer).discover().await.is_ok(), "{algs:?}");
    }
}

#[tokio::test]
async fn a_token_endpoint_over_plain_http_to_a_remote_host_is_refused() {
    let server = MockServer::start_async().await;
    let issuer = server.base_url();
    serve_metadata(
        &server,
        OAUTH_WELL_KNOWN,
        200,
        metadata(&issuer, "http://idp.example/token"),
    )
    .await;
    let error = source(&issuer).discover().await.expect_err("plain http");
    assert_eq!(error.kind(), ErrorKind::Config);
    assert!(error.to_string().contains("allow_insecure_http"), "{error}");
}

#[test]
fn an_http_issuer_to_a_remote_host_is_refused_when_built() {
    let error = OAuth2Provider::from_issuer(
        "http://idp.example",
        CLIENT_ID,
        ClientSecret::inline(SECRET),
    )
    .build()
    .expect_err("plain http");
    assert_eq!(error.kind(), ErrorKind::Config);
    assert!(error.message().starts_with("issuer: "), "{error}");
    assert!(
        OAuth2Provider::from_issuer(
            "http://idp.example",
            CLIENT_ID,
            ClientSecret::inline(SECRET)
        )
        .allow_insecure_http(true)
        .build()
        .is_ok()
    );
}

#[tokio::test(start_paused = true)]
async fn metadata_is_fetched_once_across_many_token_fetches() {
    let server = TokenServer::start().await;
    let source = source(&server.issuer());
    for _ in 0..5 {
        source.fetch_token().await.expect("a token");
    }
    let paths: Vec<String> = server.recorded().into_iter().map(|r| r.path).collect();
    let metadata_reads = paths.iter().filter(|path| *path == METADATA_PATH).count();
    assert_eq!(metadata_reads, 1, "{paths:?}");
    assert_eq!(server.issued(), 5);
    assert_eq!(source.token_url(), Some(server.oauth2_token_url().as_str()));
    assert!(paths[1..].iter().all(|path| path == OAUTH2_PATH));
}

#[tokio::test(start_paused = true)]
async fn without_a_cache_each_fetch_tries_discovery_again() {
    let server = TokenServer::start().await;
    server.serve_metadata(None);
    let source = source(&server.issuer());
    let first = source.fetch_token().await.expect_err("no metadata");
    assert_eq!(first.kind(), ErrorKind::Config);
    assert_eq!(first.cooldown_remaining(), None);
    assert_eq!(server.requests(), 2, "both well-known URLs tried");

    // Retries and cool-downs are the cache's: the source itself asks again.
    server.serve_metadata(Some(server.default_metadata()));
    source
        .fetch_token()
        .await
        .expect("discovered, then a token");
    assert_eq!(server.requests(), 4, "one metadata read, one token request");
}

fn paths(server: &TokenServer) -> Vec<String> {
    server.recorded().into_iter().map(|r| r.path).collect()
}

#[tokio::test(start_paused = true)]
async fn a_transient_metadata_failure_is_retried_by_the_cache_like_a_token_failure() {
    let server = TokenServer::start().await;
    server.fail_metadata_next(1, 503);
    let cache = ManagedToken::builder(source(&server.issuer()))
        .name("api")
        .build();
    cache.get().await.expect("a token after one retry");
    assert_eq!(paths(&server), [METADATA_PATH, METADATA_PATH, OAUTH2_PATH]);
}

#[tokio::test(start_paused = true)]
async fn metadata_failures_follow_the_cache_s_retries_and_cool_down_and_say_metadata() {
    let server = TokenServer::start().await;
    let policy = CachePolicy::default();
    server.fail_metadata_next(1000, 503);
    let cache = ManagedToken::builder(source(&server.issuer()))
        .name("api")
        .policy(policy.clone())
        .clock(Clock::tokio())
        .build();
    let error = cache.get().await.expect_err("the metadata keeps failing");
    assert_eq!(
        paths(&server),
        vec![METADATA_PATH; policy.retry.max_attempts as usize],
        "every attempt reads the metadata"
    );
    assert_eq!(error.kind(), ErrorKind::Discovery);
    assert!(error.is_transient());
    let text = error.to_string();
    assert!(text.contains("metadata"), "{text}");
    assert!(!text.contains("token endpoint"), "{text}");
    assert!(text.starts_with("client \"api\" (oauth2): "), "{text}");

    // The cache's cool-down, never longer than its cooldown_max, and then
    // every attempt again.
    let mut longest = Duration::ZERO;
    for _ in 0..8 {
        let before = server.requests();
        let waiting = cache.get().await.expect_err("cooling down");
        let remaining = waiting.cooldown_remaining().expect("a cool-down");
        longest = longest.max(remaining);
        assert_eq!(server.requests(), before, "nothing sent while cooling down");
        tokio::time::advance(remaining).await;
        cache.get().await.expect_err("still failing");
        assert_eq!(
            server.requests() - before,
            policy.retry.max_attempts as usize
        );
    }
    assert!(longest <= policy.cooldown_max, "{longest:?}");
    assert!(longest > policy.cooldown, "{longest:?}");
}

#[tokio::test(start_paused = true)]
async fn callers_waiting_on_a_failing_discovery_share_its_error() {
    let server = TokenServer::start().await;
    server.delay(Duration::from_millis(100));
    server.fail_metadata_next(1, 503);
    let source = source(&server.issuer());
    let (first, second) = tokio::join!(source.discover(), source.discover());
    let (first, second) = (first.expect_err("503"), second.expect_err("503"));
    assert_eq!(first.status(), Some(503));
    assert_eq!(second.status(), Some(503));
    assert_eq!(paths(&server), [METADATA_PATH], "one request for both");
    // A caller that comes later asks again.
    assert!(source.discover().await.is_ok());
    assert_eq!(paths(&server), [METADATA_PATH, METADATA_PATH]);
}

#[tokio::test]
async fn a_4xx_at_the_rfc_8414_url_falls_back_to_openid_connect() {
    for status in [400, 401, 403] {
        let server = MockServer::start_async().await;
        let issuer = server.base_url();
        let token_url = server.url("/token");
        let oauth = serve_metadata(&server, OAUTH_WELL_KNOWN, status, json!({})).await;
        let oidc =
            serve_metadata(&server, OIDC_WELL_KNOWN, 200, metadata(&issuer, &token_url)).await;
        let found = source(&issuer)
            .discover()
            .await
            .expect("found at the OpenID URL");
        assert_eq!(found, Some(token_url));
        assert_eq!(oauth.calls_async().await, 1, "{status}");
        assert_eq!(oidc.calls_async().await, 1, "{status}");
    }
}

#[tokio::test]
async fn a_4xx_at_both_urls_is_a_config_error_naming_both_answers() {
    let server = MockServer::start_async().await;
    let issuer = server.base_url();
    serve_metadata(
        &server,
        OAUTH_WELL_KNOWN,
        403,
        json!({"error": "access_denied"}),
    )
    .await;
    serve_metadata(
        &server,
        OIDC_WELL_KNOWN,
        401,
        json!({"error": "invalid_client"}),
    )
    .await;
    let token = serve_token(&server, "/token").await;
    let error = discovery_error(&source(&issuer)).await;
    assert_eq!(
        error.kind(),
        ErrorKind::Config,
        "no token request was refused"
    );
    assert!(!error.is_transient());
    let text = error.to_string();
    assert!(text.contains("HTTP 403"), "{text}");
    assert!(text.contains("HTTP 401"), "{text}");
    assert!(text.contains("check the issuer"), "{text}");
    assert_eq!(token.calls_async().await, 0);
}

#[tokio::test]
async fn a_document_that_is_not_metadata_is_a_discovery_error() {
    let server = MockServer::start_async().await;
    let issuer = server.base_url();
    serve_metadata(&server, OAUTH_WELL_KNOWN, 200, json!("not metadata")).await;
    let error = discovery_error(&source(&issuer)).await;
    assert_eq!(error.kind(), ErrorKind::Discovery);
    assert!(!error.is_transient());
    let text = error.to_string();
    assert!(text.contains("not authorization server metadata"), "{text}");
    assert!(!text.contains("token endpoint"), "{text}");
}

#[tokio::test]
async fn an_issuer_source_shows_no_secret_before_or_after_discovery() {
    let idp = TokenServer::start().await;
    let source = source(&idp.issuer());
    assert!(!format!("{source:?}").contains(SECRET), "{source:?}");
    source.fetch_token().await.expect("a token");
    assert!(
        source.token_url().is_some(),
        "the token endpoint was discovered"
    );
    assert!(!format!("{source:?}").contains(SECRET), "{source:?}");
}
