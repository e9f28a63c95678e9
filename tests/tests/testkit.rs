//! authmux-testkit through authmux itself: each provider's format is accepted
//! by its provider, and each knob changes what authmux sees.

use std::time::Duration;

use authmux::mention_me::MentionMeTokenExt;
use authmux::{Config, ErrorKind, Registry};
use authmux_testkit::{Flavor, TokenServer};

/// One client of every provider, pointed at `server`.
fn clients(server: &TokenServer, extra: &str) -> Registry {
    let base = server.base_url();
    let oauth2 = server.oauth2_token_url();
    let config = Config::from_toml_str(&format!(
        r#"
        [defaults]
        max_attempts = 1

        [clients.mm]
        provider = "mention-me"
        client_id = "id"
        client_secret = "secret"
        base_url = "{base}"

        [clients.learning]
        provider = "360learning"
        client_id = "id"
        client_secret = "secret"
        base_url = "{base}"

        [clients.auth0]
        provider = "auth0"
        domain = "{base}"
        client_id = "id"
        client_secret = "secret"
        audience = "https://api.example.com"
        {extra}

        [clients.generic]
        provider = "oauth2"
        token_url = "{oauth2}"
        client_id = "id"
        client_secret = "secret"
        scopes = ["read"]
        "#
    ))
    .expect("valid config");
    Registry::from_config(&config).expect("every client builds")
}

const CLIENTS: [&str; 4] = ["mm", "learning", "auth0", "generic"];

#[tokio::test]
async fn every_provider_accepts_its_imitation() {
    let server = TokenServer::start().await;
    server.expect_client("id", "secret");
    let registry = clients(&server, "");
    for name in CLIENTS {
        let token = registry.token(name).await.expect(name);
        assert!(token.expires_in() > Duration::from_secs(3000), "{name}");
    }
    let claims = registry
        .token("mm")
        .await
        .expect("cached")
        .mention_me_claims()
        .expect("a JWT");
    assert_eq!(claims.merchant_id.as_deref(), Some("4259"));
    let flavors: Vec<Option<Flavor>> = server.recorded().iter().map(|r| r.flavor).collect();
    assert_eq!(
        flavors,
        [
            Some(Flavor::MentionMe),
            Some(Flavor::Learning360),
            Some(Flavor::Auth0),
            Some(Flavor::OAuth2)
        ]
    );
    assert_eq!(server.requests(), 4);
    assert_eq!(server.issued(), 4);
}

#[tokio::test]
async fn a_wrong_secret_and_deny_are_refused_in_each_format() {
    let server = TokenServer::start().await;
    server.expect_client("id", "another-secret");
    let registry = clients(&server, "");
    for name in CLIENTS {
        let error = registry.token(name).await.expect_err(name);
        assert_eq!(error.kind(), ErrorKind::Refused, "{name}: {error}");
        assert_eq!(error.status(), Some(401), "{name}");
    }
    let server = TokenServer::start().await;
    server.deny(true);
    let error = clients(&server, "")
        .token("auth0")
        .await
        .expect_err("denied");
    assert_eq!(error.oauth_code(), Some("invalid_client"));
}

#[tokio::test]
async fn failures_and_rate_limits_are_transient_and_counted() {
    let server = TokenServer::start().await;
    server.fail_next(1, 503);
    server.rate_limit_next(1, Duration::from_secs(7));
    let registry = clients(&server, "");
    let error = registry.token("generic").await.expect_err("503");
    assert!(error.is_transient(), "{error}");
    assert_eq!(error.status(), Some(503));
    let error = registry.token("learning").await.expect_err("429");
    assert_eq!(error.kind(), ErrorKind::RateLimited);
    assert_eq!(error.retry_after(), Some(Duration::from_secs(7)));
    assert_eq!(server.requests(), 2);
    assert_eq!(server.issued(), 0);
}

#[tokio::test]
async fn expires_in_sets_the_lifetime() {
    let server = TokenServer::start().await;
    server.expires_in(120);
    let token = clients(&server, "").token("learning").await.expect("token");
    assert!(token.expires_in() <= Duration::from_secs(120));
    assert!(token.expires_in() > Duration::from_secs(100));
}

#[tokio::test]
async fn a_required_dpop_nonce_is_answered_once() {
    let server = TokenServer::start().await;
    server.require_dpop_nonce("nonce-1");
    let token = clients(&server, "dpop = true")
        .token("auth0")
        .await
        .expect("a DPoP token after one nonce retry");
    assert_eq!(token.token_type().to_string(), "DPoP");
    assert_eq!(server.requests(), 2);
    assert_eq!(server.issued(), 1);
}

#[tokio::test(start_paused = true)]
async fn delay_follows_tokio_time() {
    let server = TokenServer::start().await;
    server.delay(Duration::from_secs(3600));
    let started = tokio::time::Instant::now();
    let token = clients(&server, "").token("mm").await;
    // The client's 30 s timeout runs out on the same paused clock.
    assert_eq!(token.expect_err("too slow").kind(), ErrorKind::Timeout);
    assert!(started.elapsed() >= Duration::from_secs(30));
}

#[tokio::test]
async fn a_registry_mixes_config_clients_and_sources_built_in_code() {
    use authmux::EndpointBuilder as _;

    let server = TokenServer::start().await;
    let config = Config::from_toml_str(&format!(
        r#"
        [clients.mm]
        provider = "mention-me"
        client_id = "id"
        client_secret = "secret"
        base_url = "{}"
        "#,
        server.base_url()
    ))
    .expect("valid config");
    let built = authmux::learning360::ThreeSixtyLearningProvider::builder(
        "own-id",
        authmux::ClientSecret::inline("secret"),
    )
    .base_url(server.base_url())
    .build()
    .expect("a source");
    let registry = Registry::builder()
        .config(&config)
        .source("own", built.clone())
        .build()
        .expect("a registry");
    assert_eq!(registry.names().collect::<Vec<_>>(), ["mm", "own"]);
    registry.token("own").await.expect("a token");
    assert_eq!(server.requests_from("own-id"), 1);
    assert_eq!(
        registry.client("own").expect("own").api_headers()["360-api-version"],
        "v2.0"
    );
    let taken = Registry::builder()
        .config(&config)
        .source("mm", built)
        .build()
        .expect_err("a name given twice");
    assert_eq!(taken.problems(), ["clients.mm: given twice"]);
}
