//! Secretless and delegated identity end to end, through the config and the
//! registry against the testkit: a workload's token as the client
//! assertion, re-read as the kubelet rotates it; the JWT-bearer grant,
//! read or signed; token exchange chained on another client.

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::time::Duration;

use authmux::{Config, ErrorKind, ExposeSecret as _, Registry};
use authmux_testkit::identity::{
    ACCESS_TOKEN_TYPE, JWT_BEARER_ASSERTION, JWT_BEARER_GRANT, JWT_TOKEN_TYPE, TOKEN_EXCHANGE_GRANT,
};
use authmux_testkit::{ExternalIssuer, Recorded, TokenServer, keys};
use serde_json::json;

const SUBJECT: &str = "system:serviceaccount:payments:api";
const HOUR: Duration = Duration::from_secs(3600);

/// A projected token volume as the kubelet lays it out: the token in a
/// timestamped directory, `..data` pointing at it, `token` at
/// `..data/token`. [`rotate`] swaps `..data` as the kubelet does.
fn projected(dir: &Path, token: &str) -> PathBuf {
    let first = dir.join("..2026_12_02_00_00_00.000000001");
    std::fs::create_dir(&first).expect("dir");
    std::fs::write(first.join("token"), token).expect("token");
    symlink("..2026_12_02_00_00_00.000000001", dir.join("..data")).expect("..data");
    symlink("..data/token", dir.join("token")).expect("token link");
    dir.join("token")
}

fn rotate(dir: &Path, token: &str) {
    let next = dir.join("..2026_12_02_00_48_00.000000002");
    std::fs::create_dir(&next).expect("dir");
    std::fs::write(next.join("token"), token).expect("token");
    symlink("..2026_12_02_00_48_00.000000002", dir.join("..data_tmp")).expect("..data_tmp");
    std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).expect("swap");
}

fn registry(toml: &str) -> Registry {
    let config = Config::from_toml_str(toml).expect("valid config");
    Registry::from_config(&config).expect("every client builds")
}

/// The body fields of a request, sorted.
fn field_names(recorded: &Recorded) -> Vec<&str> {
    let mut names: Vec<&str> = recorded.fields.keys().map(String::as_str).collect();
    names.sort_unstable();
    names
}

/// A server that trusts the cluster's issuer and federates `app` to it.
async fn federated() -> (TokenServer, ExternalIssuer) {
    let idp = TokenServer::start().await;
    let cluster = ExternalIssuer::new("https://kubernetes.default.svc");
    idp.trust_issuer(&cluster);
    idp.federate("app", cluster.issuer(), SUBJECT);
    (idp, cluster)
}

#[tokio::test]
async fn a_projected_token_is_the_client_assertion_and_each_rotation_is_followed() {
    let (idp, cluster) = federated().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let first = cluster.mint(SUBJECT, &idp.oauth2_token_url(), HOUR);
    let file = projected(dir.path(), &first);
    let registry = registry(&format!(
        r#"
        [clients.entra]
        provider = "oauth2"
        token_url = "{url}"
        client_id = "app"
        client_auth = "client_assertion"
        client_assertion = {{ file = "{file}" }}
        scopes = ["api://my-api/.default"]
        "#,
        url = idp.oauth2_token_url(),
        file = file.display(),
    ));
    let client = registry.client("entra").expect("client");
    let token = client.token().await.expect("a token");
    let info = idp
        .token_info(token.secret().expose_secret())
        .expect("issued here");
    assert_eq!(info.client_id.as_deref(), Some("app"), "federated to app");

    let sent = &idp.recorded()[0];
    assert_eq!(
        field_names(sent),
        [
            "client_assertion",
            "client_assertion_type",
            "client_id",
            "grant_type",
            "scope"
        ]
    );
    assert_eq!(sent.field("grant_type"), Some("client_credentials"));
    assert_eq!(sent.field("client_id"), Some("app"));
    assert_eq!(
        sent.field("client_assertion_type"),
        Some(JWT_BEARER_ASSERTION)
    );
    assert_eq!(sent.field("client_assertion"), Some(first.as_str()));
    assert_eq!(sent.field("scope"), Some("api://my-api/.default"));
    assert!(
        sent.headers.get("authorization").is_none(),
        "no Basic header"
    );

    let second = cluster.mint(SUBJECT, &idp.oauth2_token_url(), HOUR);
    rotate(dir.path(), &second);
    client.cache().refresh().await.expect("a new token");
    assert_eq!(
        idp.recorded()[1].field("client_assertion"),
        Some(second.as_str()),
        "the token the kubelet swapped in"
    );
}

#[tokio::test]
async fn an_expired_or_missing_assertion_is_a_credential_error_that_never_shows_it() {
    let (idp, cluster) = federated().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let expired = cluster.mint_with(json!({
        "sub": SUBJECT, "aud": idp.oauth2_token_url(), "iat": 1_700_000_000, "exp": 1_700_000_600,
    }));
    let file = dir.path().join("token");
    std::fs::write(&file, &expired).expect("write");
    let registry = registry(&format!(
        r#"
        [defaults]
        max_attempts = 1
        [clients.entra]
        provider = "oauth2"
        token_url = "{url}"
        client_id = "app"
        client_auth = "client_assertion"
        client_assertion = {{ file = "{file}" }}
        "#,
        url = idp.oauth2_token_url(),
        file = file.display(),
    ));
    let error = registry.token("entra").await.expect_err("expired");
    assert_eq!(error.kind(), ErrorKind::Credential);
    let text = error.to_string();
    assert!(text.contains("client_assertion"), "{text}");
    assert!(text.contains("expired at 2023-11-14T22:"), "{text}");
    assert!(!text.contains(&expired), "{text}");
    assert_eq!(idp.requests(), 0, "an expired assertion is never sent");

    std::fs::remove_file(&file).expect("remove");
    let error = registry.token("entra").await.expect_err("missing");
    assert_eq!(error.kind(), ErrorKind::Credential);
    assert!(error.to_string().contains(&file.display().to_string()));
    assert_eq!(idp.requests(), 0);
}

#[tokio::test]
async fn the_jwt_bearer_grant_sends_the_assertion_and_only_what_was_asked() {
    let (idp, cluster) = federated().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let oidc = cluster.mint("repo:acme/app:ref:refs/heads/main", &idp.issuer(), HOUR);
    let file = dir.path().join("oidc-token");
    std::fs::write(&file, format!("{oidc}\n")).expect("write");
    let registry = registry(&format!(
        r#"
        [clients.ci]
        provider = "oauth2"
        token_url = "{url}"
        grant_type = "jwt_bearer"
        assertion = {{ file = "{file}" }}
        scopes = ["deploy"]
        "#,
        url = idp.oauth2_token_url(),
        file = file.display(),
    ));
    let token = registry.token("ci").await.expect("a token");
    let info = idp
        .token_info(token.secret().expose_secret())
        .expect("issued here");
    assert_eq!(info.subject, "repo:acme/app:ref:refs/heads/main");
    let sent = &idp.recorded()[0];
    assert_eq!(field_names(sent), ["assertion", "grant_type", "scope"]);
    assert_eq!(sent.grant_type(), Some(JWT_BEARER_GRANT));
    assert_eq!(sent.field("assertion"), Some(oidc.as_str()));
    assert!(sent.headers.get("authorization").is_none());
}

#[tokio::test]
async fn a_jwt_bearer_grant_signed_here_names_its_issuer_and_subject() {
    let idp = TokenServer::start().await;
    let public = keys::public_jwk(keys::EC_JWK);
    idp.trust_issuer_key("svc@example.com", &public);
    let dir = tempfile::tempdir().expect("tempdir");
    let key = dir.path().join("sa.pem");
    std::fs::write(&key, keys::EC_PKCS8_PEM).expect("key");
    let registry = registry(&format!(
        r#"
        [clients.sa]
        provider = "oauth2"
        token_url = "{url}"
        client_id = "sa-client"
        client_secret = "s3cret"
        client_auth = "post"
        grant_type = "jwt_bearer"
        assertion = {{ key = {{ file = "{key}" }}, issuer = "svc@example.com", subject = "user@example.com" }}
        "#,
        url = idp.oauth2_token_url(),
        key = key.display(),
    ));
    registry.token("sa").await.expect("a token");
    registry
        .client("sa")
        .expect("client")
        .cache()
        .refresh()
        .await
        .expect("another");
    let sent = idp.recorded();
    assert_eq!(
        field_names(&sent[0]),
        ["assertion", "client_id", "client_secret", "grant_type"]
    );
    let claims = |recorded: &Recorded| -> serde_json::Value {
        let jwt = recorded.field("assertion").expect("assertion");
        let payload = jwt.split('.').nth(1).expect("payload");
        let bytes =
            base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, payload)
                .expect("base64url");
        serde_json::from_slice(&bytes).expect("JSON")
    };
    let first = claims(&sent[0]);
    assert_eq!(first["iss"], "svc@example.com");
    assert_eq!(first["sub"], "user@example.com");
    assert_eq!(first["aud"], idp.oauth2_token_url());
    assert_ne!(first["jti"], claims(&sent[1])["jti"], "signed anew");
}

fn exchange_chain(idp: &TokenServer, file: &Path, extra: &str) -> Registry {
    registry(&format!(
        r#"
        [defaults]
        max_attempts = 1

        [clients.entra]
        provider = "oauth2"
        token_url = "{url}"
        client_id = "app"
        client_auth = "client_assertion"
        client_assertion = {{ file = "{file}" }}

        [clients.downstream]
        provider = "oauth2"
        token_url = "{url}"
        grant_type = "token_exchange"
        subject_token = {{ client = "entra" }}
        audience = "https://downstream.example.com"
        client_id = "exchanger"
        client_secret = "exchanger-secret"
        {extra}
        "#,
        url = idp.oauth2_token_url(),
        file = file.display(),
    ))
}

#[tokio::test]
async fn a_token_exchange_carries_the_other_clients_token_and_follows_its_refresh() {
    let (idp, cluster) = federated().await;
    idp.expect_client("exchanger", "exchanger-secret");
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("token");
    std::fs::write(&file, cluster.mint(SUBJECT, &idp.oauth2_token_url(), HOUR)).expect("write");
    let registry = exchange_chain(&idp, &file, "");

    let exchanged = registry.token("downstream").await.expect("exchanged");
    let upstream = registry.token("entra").await.expect("cached");
    assert_eq!(
        idp.requests(),
        2,
        "the subject's token once, the exchange once"
    );
    let sent = &idp.recorded()[1];
    assert_eq!(
        field_names(sent),
        [
            "audience",
            "grant_type",
            "subject_token",
            "subject_token_type"
        ]
    );
    assert_eq!(sent.grant_type(), Some(TOKEN_EXCHANGE_GRANT));
    assert_eq!(
        sent.field("subject_token"),
        Some(upstream.secret().expose_secret())
    );
    assert_eq!(sent.field("subject_token_type"), Some(ACCESS_TOKEN_TYPE));
    assert_eq!(
        sent.field("audience"),
        Some("https://downstream.example.com")
    );
    assert!(
        sent.headers.get("authorization").is_some(),
        "Basic, the default"
    );
    let info = idp
        .token_info(exchanged.secret().expose_secret())
        .expect("issued here");
    assert_eq!(info.audience, ["https://downstream.example.com"]);

    // The subject's client refreshes; the exchange's next request, at its
    // own refresh, carries the new token.
    let refreshed = registry
        .client("entra")
        .expect("client")
        .cache()
        .refresh()
        .await
        .expect("refreshed");
    assert_ne!(
        refreshed.secret().expose_secret(),
        upstream.secret().expose_secret()
    );
    registry
        .client("downstream")
        .expect("client")
        .cache()
        .refresh()
        .await
        .expect("exchanged again");
    let last = idp.recorded().pop().expect("a request");
    assert_eq!(last.grant_type(), Some(TOKEN_EXCHANGE_GRANT));
    assert_eq!(
        last.field("subject_token"),
        Some(refreshed.secret().expose_secret())
    );
}

#[tokio::test]
async fn a_refused_subject_token_is_the_provider_refusing() {
    let idp = TokenServer::start().await;
    idp.expect_client("exchanger", "exchanger-secret");
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("subject");
    let stranger = ExternalIssuer::new("https://stranger.example");
    std::fs::write(&file, stranger.mint("x", &idp.issuer(), HOUR)).expect("write");
    let registry = registry(&format!(
        r#"
        [defaults]
        max_attempts = 1
        [clients.downstream]
        provider = "oauth2"
        token_url = "{url}"
        grant_type = "token_exchange"
        subject_token = {{ file = "{file}" }}
        client_id = "exchanger"
        client_secret = "exchanger-secret"
        "#,
        url = idp.oauth2_token_url(),
        file = file.display(),
    ));
    let error = registry.token("downstream").await.expect_err("refused");
    assert_eq!(error.kind(), ErrorKind::Refused);
    assert_eq!(error.oauth_code(), Some("invalid_request"));
    assert_eq!(
        idp.recorded()[0].field("subject_token_type"),
        Some(JWT_TOKEN_TYPE)
    );
}

#[test]
fn a_cycle_of_exchanges_and_an_unknown_client_are_config_errors() {
    let cycle = Config::from_toml_str(
        r#"
        [clients.a]
        provider = "oauth2"
        token_url = "https://idp.example.com/token"
        client_id = "a"
        client_secret = "s"
        grant_type = "token_exchange"
        subject_token = { client = "b" }

        [clients.b]
        provider = "oauth2"
        token_url = "https://idp.example.com/token"
        client_id = "b"
        client_secret = "s"
        grant_type = "token_exchange"
        subject_token = { client = "a" }

        [clients.c]
        provider = "oauth2"
        token_url = "https://idp.example.com/token"
        client_id = "c"
        client_secret = "s"
        grant_type = "token_exchange"
        actor_token = { client = "nobody" }
        subject_token = { file = "/run/t" }
        "#,
    )
    .expect("the file is valid");
    let error = Registry::from_config(&cycle).expect_err("a cycle");
    let problems = error.problems().join("\n");
    assert!(
        problems.contains("clients.b.subject_token: a cycle of token exchanges: a -> b -> a"),
        "{problems}"
    );
    assert!(
        problems.contains(r#"clients.c.actor_token: unknown client "nobody""#),
        "{problems}"
    );
}

/// Two processes of one workload share tokens through a store; a process
/// of another workload, whose token file sits at the same path, never
/// adopts theirs: the identity names the assertion's `iss` and `sub`.
#[tokio::test]
async fn a_store_shares_tokens_between_processes_of_one_workload_only() {
    use authmux::core::store::MemoryStore;
    use authmux::core::{ExternalSource, ManagedToken, SharedTokenStore};
    use authmux::oauth2::OAuth2Provider;

    let (idp, cluster) = federated().await;
    idp.federate("app", cluster.issuer(), "system:serviceaccount:other:api");
    let store = SharedTokenStore::from(MemoryStore::new());
    // Every process reads the same path, as pods of one deployment do.
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("token");
    let process = || {
        let source = OAuth2Provider::client_assertion(
            idp.oauth2_token_url(),
            "app",
            ExternalSource::File(file.clone()),
        );
        ManagedToken::builder(source.build().expect("builds"))
            .store(store.clone())
            .build()
    };
    let ours = cluster.mint(SUBJECT, &idp.oauth2_token_url(), HOUR);
    std::fs::write(&file, &ours).expect("write");
    let (first, second) = (process(), process());
    let token = first.get().await.expect("a token");
    assert_eq!(idp.requests(), 1);
    let adopted = second.get().await.expect("from the store");
    assert_eq!(
        adopted.secret().expose_secret(),
        token.secret().expose_secret()
    );
    assert_eq!(
        idp.requests(),
        1,
        "the second process took the stored token"
    );

    // A pod of another service account, its token at the same path.
    let theirs = cluster.mint(
        "system:serviceaccount:other:api",
        &idp.oauth2_token_url(),
        HOUR,
    );
    std::fs::write(&file, &theirs).expect("write");
    let other = process();
    let own = other.get().await.expect("its own token");
    assert_ne!(own.secret().expose_secret(), token.secret().expose_secret());
    assert_eq!(idp.requests(), 2, "another workload asked for its own");
}

#[test]
fn a_token_pasted_where_a_source_belongs_is_never_quoted() {
    let pasted = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl";
    for key in [
        "client_assertion",
        "assertion",
        "subject_token",
        "actor_token",
    ] {
        let toml = format!(
            r#"
            [clients.api]
            provider = "oauth2"
            token_url = "https://idp.example.com/token"
            client_id = "c"
            client_secret = "s"
            {key} = "{pasted}"
            "#
        );
        let error = Config::from_toml_str(&toml)
            .and_then(|config| Registry::from_config(&config).map(|_| ()))
            .expect_err("a string is not a source");
        let text = error.to_string();
        assert!(text.contains(&format!("clients.api.{key}")), "{text}");
        assert!(!text.contains("eyJ"), "{key}: {text}");
    }
}

#[tokio::test]
async fn discovery_checks_that_the_server_takes_the_grant() {
    let (idp, cluster) = federated().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("oidc-token");
    std::fs::write(&file, cluster.mint("repo:acme/app", &idp.issuer(), HOUR)).expect("write");
    let config = format!(
        r#"
        [defaults]
        max_attempts = 1
        [clients.ci]
        provider = "oauth2"
        issuer = "{issuer}"
        grant_type = "jwt_bearer"
        assertion = {{ file = "{file}" }}
        allow_insecure_http = true
        "#,
        issuer = idp.issuer(),
        file = file.display(),
    );
    let listed = registry(&config);
    listed
        .token("ci")
        .await
        .expect("the testkit lists the grant");

    let mut metadata = idp.default_metadata();
    metadata["grant_types_supported"] = json!(["client_credentials", TOKEN_EXCHANGE_GRANT]);
    idp.serve_metadata(Some(metadata));
    let unlisted = registry(&config);
    let error = unlisted.token("ci").await.expect_err("not taken");
    assert_eq!(error.kind(), ErrorKind::Config);
    assert!(
        error
            .to_string()
            .contains("does not take grant_type = \"jwt_bearer\""),
        "{error}"
    );
}
