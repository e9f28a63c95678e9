//! Auth0's Custom Token Exchange (its profile of RFC 8693), replayed exactly
//! against httpmock: the documented request in both body encodings, a
//! subject read from a file or taken from another client, Auth0's answers,
//! and every key Auth0 does not take refused at build.

use std::sync::Arc;

use authmux_auth0::{Auth0Config, Auth0Provider};
use authmux_core::grant::TOKEN_EXCHANGE_GRANT;
use authmux_core::wire::HttpClient;
use authmux_core::{
    BuildContext, ClientSecret, Error, ErrorKind, ExposeSecret as _, ManagedToken, Provider as _,
    Token, TokenSource as _,
};
use httpmock::Method::POST;
use httpmock::{MockServer, When};
use serde_json::{Value, json};

const SECRET: &str = "auth0-secret-5e21";
/// The token the tenant's Action validates: opaque, as a legacy IdP's may be.
const SUBJECT: &str = "t8e7S2D9trQm73e-legacy-subject-iqBR3GjxDtbDVjpfQU";
const SUBJECT_TYPE: &str = "urn:acme:legacy-token";

/// A successful Custom Token Exchange as Auth0's reference describes it:
/// an ID token because `openid` was asked for, `scope` because Auth0
/// granted less than asked, and `issued_token_type`.
fn exchanged() -> Value {
    json!({
        "access_token": "eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9.exchanged",
        "id_token": "eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9.identity",
        "scope": "openid read:data",
        "expires_in": 86400,
        "token_type": "Bearer",
        "issued_token_type": "urn:ietf:params:oauth:token-type:access_token"
    })
}

/// A subject token in a file of its own.
fn subject_file() -> tempfile::NamedTempFile {
    let file = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(file.path(), format!("{SUBJECT}\n")).expect("write");
    file
}

/// The config a facade would read, the grant keys flat beside the others:
/// a token exchange, with `overrides` set (or removed, where `null`).
fn config(server: &MockServer, overrides: Value) -> Auth0Config {
    let mut table = json!({
        "domain": server.base_url(),
        "client_id": "my-client-id",
        "client_secret": SECRET,
        "audience": "https://api.example.com",
        "grant_type": "token_exchange",
        "subject_token_type": SUBJECT_TYPE,
    });
    let keys = table.as_object_mut().expect("a table");
    for (key, value) in overrides.as_object().expect("a table") {
        match value {
            Value::Null => keys.remove(key),
            value => keys.insert(key.clone(), value.clone()),
        };
    }
    serde_json::from_value(table).expect("valid config")
}

/// The request line and headers of every exchange here: no Basic header,
/// no DPoP proof.
fn exchange_request(when: When, content_type: &str) -> When {
    when.method(POST)
        .path("/oauth/token")
        .header("content-type", content_type)
        .header("accept", "application/json")
        .header_missing("authorization")
        .header_missing("dpop")
}

/// Builds the exchange `overrides` describe and fetches a token once.
async fn fetch(server: &MockServer, overrides: Value) -> Result<Token, Error> {
    config(server, overrides)
        .builder()
        .build()
        .expect("valid")
        .fetch_token()
        .await
}

/// Fetches once with the subject read from a file and `overrides`, and
/// checks that the JSON body was exactly `body`.
async fn replay(body: Value, overrides: Value) -> Token {
    let server = MockServer::start_async().await;
    let file = subject_file();
    let mock = server
        .mock_async(|when, then| {
            exchange_request(when, "application/json").json_body(body);
            then.status(200).json_body(exchanged());
        })
        .await;
    let mut overrides = overrides;
    overrides["subject_token"] = json!({"file": file.path()});
    let token = fetch(&server, overrides).await.expect("exchanged");
    mock.assert_async().await;
    token
}

#[tokio::test]
async fn replays_the_documented_exchange_with_the_subject_read_from_a_file() {
    let token = replay(
        json!({
            "grant_type": TOKEN_EXCHANGE_GRANT,
            "subject_token": SUBJECT,
            "subject_token_type": SUBJECT_TYPE,
            "audience": "https://api.example.com",
            "client_id": "my-client-id",
            "client_secret": SECRET,
            "scope": "openid read:data write:data",
            "organization": "org_123",
        }),
        json!({
            "scopes": ["write:data", "openid", "read:data"],
            "organization": "org_123",
        }),
    )
    .await;
    assert_eq!(
        token.secret().expose_secret(),
        "eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9.exchanged"
    );
    assert_eq!(token.lifetime(), std::time::Duration::from_secs(86400));
}

#[tokio::test]
async fn the_same_exchange_form_encoded() {
    let server = MockServer::start_async().await;
    let file = subject_file();
    let mock = server
        .mock_async(|when, then| {
            exchange_request(when, "application/x-www-form-urlencoded")
                .form_urlencoded_tuple("grant_type", TOKEN_EXCHANGE_GRANT)
                .form_urlencoded_tuple("subject_token", SUBJECT)
                .form_urlencoded_tuple("subject_token_type", SUBJECT_TYPE)
                .form_urlencoded_tuple("audience", "https://api.example.com")
                .form_urlencoded_tuple("client_id", "my-client-id")
                .form_urlencoded_tuple("client_secret", SECRET)
                .is_true(|request| form_urlencoded::parse(request.body_ref()).count() == 6);
            then.status(200).json_body(exchanged());
        })
        .await;
    fetch(
        &server,
        json!({"subject_token": {"file": file.path()}, "body": "form"}),
    )
    .await
    .expect("exchanged");
    mock.assert_async().await;
}

#[tokio::test]
async fn the_subject_and_actor_may_be_other_clients_tokens() {
    let server = MockServer::start_async().await;
    // The upstream client: Auth0 client credentials on the same tenant.
    server
        .mock_async(|when, then| {
            when.method(POST)
                .path("/oauth/token")
                .json_body_includes(r#"{"grant_type": "client_credentials"}"#);
            then.status(200).json_body(
                json!({"access_token": "upstream-at", "token_type": "Bearer", "expires_in": 86400}),
            );
        })
        .await;
    let exchange = server
        .mock_async(|when, then| {
            when.method(POST).path("/oauth/token").json_body(json!({
                "grant_type": TOKEN_EXCHANGE_GRANT,
                "subject_token": "upstream-at",
                "subject_token_type": SUBJECT_TYPE,
                "actor_token": "upstream-at",
                "actor_token_type": "urn:acme:agent-token",
                "audience": "https://api.example.com",
                "client_id": "my-client-id",
                "client_secret": SECRET,
            }));
            then.status(200).json_body(exchanged());
        })
        .await;
    let upstream = Auth0Provider::builder(
        server.base_url(),
        "upstream-id",
        ClientSecret::inline("upstream-secret"),
    )
    .audience("https://api.example.com")
    .build()
    .expect("valid");
    let upstream = Arc::new(ManagedToken::builder(upstream).name("upstream").build());
    let config = config(
        &server,
        json!({
            "subject_token": {"client": "upstream"},
            "actor_token": {"client": "upstream"},
            "actor_token_type": "urn:acme:agent-token",
        }),
    );

    // As the facade builds it, from the context…
    let context = BuildContext::new()
        .with_http_client(HttpClient::new().expect("client"))
        .with_client_token("upstream", upstream.clone());
    let source = Auth0Provider::build(config.clone(), &context).expect("valid");
    source.fetch_token().await.expect("exchanged");
    assert_eq!(
        source.identity().get("subject_token.source"),
        Some("client upstream")
    );
    // …and in code, from the builder.
    config
        .builder()
        .client_token("upstream", upstream)
        .build()
        .expect("valid")
        .fetch_token()
        .await
        .expect("exchanged");
    assert_eq!(exchange.calls_async().await, 2);

    let error = config.builder().build().expect_err("no such client");
    assert_eq!(
        error.to_string(),
        "subject_token: no client named \"upstream\" to take it from"
    );
}

#[tokio::test]
async fn a_public_application_sends_only_its_client_id() {
    replay(
        json!({
            "grant_type": TOKEN_EXCHANGE_GRANT,
            "subject_token": SUBJECT,
            "subject_token_type": SUBJECT_TYPE,
            "client_id": "my-client-id",
        }),
        json!({"client_auth": "none", "client_secret": null, "audience": null}),
    )
    .await;
}

/// The message of the config error that `overrides` make.
fn refusal(overrides: Value) -> String {
    let server = MockServer::start();
    let error = config(&server, overrides)
        .builder()
        .build()
        .expect_err("refused");
    assert_eq!(error.kind(), ErrorKind::Config);
    error.to_string()
}

#[test]
fn the_subject_token_type_is_the_customers_own() {
    let subject = json!({"file": "/run/subject"});
    assert_eq!(
        refusal(json!({"subject_token": subject, "subject_token_type": null})),
        "subject_token_type: required with grant_type = \"token_exchange\" for Auth0: the URI of \
         your Custom Token Exchange Profile, such as \"urn:acme:legacy-token\""
    );
    assert_eq!(
        refusal(json!({
            "subject_token": subject,
            "subject_token_type": "urn:ietf:params:oauth:token-type:jwt",
        })),
        "subject_token_type: \"urn:ietf:params:oauth:token-type:jwt\" is in urn:ietf, a \
         namespace Auth0 reserves; use your own profile's URI, such as \"urn:acme:legacy-token\""
    );
    assert_eq!(
        refusal(json!({
            "subject_token": subject,
            "subject_token_type": "https://auth0.com/token/legacy",
        })),
        "subject_token_type: \"https://auth0.com/token/legacy\" is in https://auth0.com, a \
         namespace Auth0 reserves; use your own profile's URI, such as \"urn:acme:legacy-token\""
    );
}

#[test]
fn an_actor_token_type_is_an_auth0_id_token_or_the_customers_own() {
    let subject = json!({"file": "/run/subject"});
    let actor = json!({"env": "AGENT_ID_TOKEN"});
    assert_eq!(
        refusal(json!({"subject_token": subject, "actor_token": actor})),
        "actor_token_type: required with actor_token for Auth0: \
         \"urn:ietf:params:oauth:token-type:id_token\" for an Auth0 ID token, else your own URI"
    );
    assert_eq!(
        refusal(json!({
            "subject_token": subject, "actor_token": actor,
            "actor_token_type": "urn:ietf:params:oauth:token-type:access_token",
        })),
        "actor_token_type: \"urn:ietf:params:oauth:token-type:access_token\" is in urn:ietf, a \
         namespace Auth0 reserves; use \"urn:ietf:params:oauth:token-type:id_token\" for an Auth0 \
         ID token, else your own URI"
    );
    let server = MockServer::start();
    config(
        &server,
        json!({
            "subject_token": subject, "actor_token": actor,
            "actor_token_type": "urn:ietf:params:oauth:token-type:id_token",
        }),
    )
    .builder()
    .build()
    .expect("an Auth0 ID token is a documented actor");
}

#[test]
fn what_auth0_does_not_take_is_refused_naming_the_key() {
    let subject = json!({"file": "/run/subject"});
    let cases = [
        (
            json!({
                "grant_type": "jwt_bearer", "assertion": {"file": "/run/id-jag"},
                "subject_token_type": null,
            }),
            "grant_type: \"jwt_bearer\" is not taken by the Auth0 provider (Auth0's JWT-bearer \
             grant is Cross App Access, for an enterprise IdP's ID-JAG); use \
             \"client_credentials\" or \"token_exchange\"",
        ),
        (
            json!({"subject_token": subject, "assertion": {"file": "/run/id-jag"}}),
            "assertion: not taken by the Auth0 provider, which sends no JWT-bearer grant; \
             remove it",
        ),
        (
            json!({
                "subject_token": subject,
                "requested_token_type": "urn:ietf:params:oauth:token-type:access_token",
            }),
            "requested_token_type: not part of Auth0's Custom Token Exchange request; remove it",
        ),
        (
            json!({
                "subject_token": subject, "client_secret": null,
                "client_auth": "client_assertion", "client_assertion": {"file": "/run/k8s"},
            }),
            "client_auth: Auth0 does not take \"client_assertion\" (a token another party issued \
             is no client credential there); use \"private_key_jwt\" with a key registered to the \
             application",
        ),
        (
            json!({
                "grant_type": "client_credentials", "subject_token_type": null,
                "client_auth": "none", "client_secret": null,
            }),
            "client_auth: \"none\" is only for grant_type = \"token_exchange\" (a public \
             application); client credentials need \"post\", \"basic\" or \"private_key_jwt\"",
        ),
        (
            json!({
                "grant_type": "client_credentials", "subject_token_type": null,
                "scopes": ["read:data"],
            }),
            "scopes: only used with grant_type = \"token_exchange\"; Auth0's client credentials \
             request takes no scope (the application gets what its client grant allows)",
        ),
        (
            json!({"subject_token": subject, "scopes": ["read:data write:data"]}),
            "scopes: \"read:data write:data\" is not one scope; list each scope separately",
        ),
    ];
    for (overrides, message) in cases {
        assert_eq!(refusal(overrides), message);
    }
}

/// A fetch whose answer is `status` with `body`.
async fn answered(status: u16, body: Value) -> Error {
    let server = MockServer::start_async().await;
    let file = subject_file();
    server
        .mock_async(|when, then| {
            when.method(POST).path("/oauth/token");
            then.status(status).json_body(body);
        })
        .await;
    let error = fetch(&server, json!({"subject_token": {"file": file.path()}}))
        .await
        .expect_err("refused");
    assert!(!format!("{error} {error:?}").contains(SUBJECT), "{error:?}");
    error
}

#[tokio::test]
async fn an_action_rejecting_the_subject_is_a_refusal() {
    let error = answered(
        400,
        json!({"error": "invalid_request", "error_description": "Invalid subject_token"}),
    )
    .await;
    assert_eq!(error.kind(), ErrorKind::Refused);
    assert!(!error.is_transient());
    assert_eq!(error.oauth_code(), Some("invalid_request"));
    assert_eq!(error.oauth_description(), Some("Invalid subject_token"));
    // An Action's reason is free text, and may quote the token it refused.
    let error = answered(
        400,
        json!({
            "error": "invalid_request",
            "error_description": format!("subject_token {SUBJECT} has expired"),
        }),
    )
    .await;
    assert_eq!(error.kind(), ErrorKind::Refused);
    // MFA in a post-login Action answers 403 with an `mfa_token`.
    let error = answered(
        403,
        json!({
            "error": "mfa_required",
            "error_description": "Multifactor authentication required",
            "mfa_token": "Fe26.2**mfa-token-value**Ha",
        }),
    )
    .await;
    assert_eq!(error.kind(), ErrorKind::Refused);
    assert!(
        !format!("{error:?}").contains("mfa-token-value"),
        "{error:?}"
    );
}

#[tokio::test]
async fn the_subject_token_never_shows_in_debug() {
    let server = MockServer::start_async().await;
    let file = subject_file();
    server
        .mock_async(|when, then| {
            when.method(POST).path("/oauth/token");
            then.status(200).json_body(exchanged());
        })
        .await;
    let config = config(&server, json!({"subject_token": {"file": file.path()}}));
    let builder = config.builder();
    let builder_debug = format!("{builder:?}");
    let source = builder.build().expect("valid");
    source.fetch_token().await.expect("exchanged");
    let debug = format!("{config:?} {builder_debug} {source:?}");
    assert!(!debug.contains(SUBJECT), "{debug}");
    assert!(!debug.contains(SECRET), "{debug}");
    assert!(debug.contains("subject_token"), "{debug}");
}
