//! A token endpoint that echoes the client secret, in every shape a server
//! may quote it and in every place server text reaches an error, for every
//! provider and every way it sends the secret: neither the error's
//! `Display` nor its `Debug` nor the logs ever hold it.
//!
//! Alone in its test binary, because `tracing` caches callsite interest
//! process-wide and a parallel test without a subscriber would hide
//! callsites from this test's thread-local one.

use authmux_core::ClientAuthBuilder as _;
use authmux_core::EndpointBuilder as _;
use std::io::Write;
use std::sync::{Arc, Mutex};

use authmux_360learning::ThreeSixtyLearningProvider;
use authmux_auth0::Auth0Provider;
use authmux_core::wire::{ClientAuth, HttpClient};
use authmux_core::{CachePolicy, ClientSecret, Error, ManagedToken, SharedTokenSource};
use authmux_mention_me::MentionMeProvider;
use authmux_oauth2::OAuth2Provider;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use httpmock::Method::POST;
use httpmock::MockServer;
use serde_json::json;

/// A secret whose every encoding differs: a space, a quote, a backslash,
/// `+`, `/`, `~`, `*`, `&` and a non-ASCII letter.
const SECRET: &str = r#"s3cr3t é "q" \b+p/s~t*a&z"#;
const CLIENT_ID: &str = "client 1";
const PATH: &str = "/token";

/// A `tracing` writer that appends everything to one buffer.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log buffer").extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Percent-encodes `text`, keeping ASCII letters, digits and `safe`, with
/// a space as `+` or `%20`.
fn percent(text: &str, safe: &str, space: &str) -> String {
    let mut out = String::new();
    for byte in text.bytes() {
        match byte {
            b' ' => out.push_str(space),
            _ if byte.is_ascii_alphanumeric() || safe.as_bytes().contains(&byte) => {
                out.push(char::from(byte));
            }
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}

/// Every shape of `value` as a server may echo it, in a request body.
fn body_shapes(value: &str) -> Vec<(&'static str, String)> {
    let json = serde_json::to_string(value).expect("JSON");
    vec![
        ("raw", value.to_owned()),
        // application/x-www-form-urlencoded, as browsers and serde write it.
        ("form with +", percent(value, "*-._", "+")),
        // encodeURIComponent.
        ("form with %20", percent(value, "-_.!~*'()", "%20")),
        // Python's urllib.parse.quote_plus.
        ("quote_plus", percent(value, "_.-~", "+")),
        ("JSON-escaped", json[1..json.len() - 1].to_owned()),
    ]
}

/// The shapes of the Basic credential on top of those of the secret.
fn basic_shapes() -> Vec<(&'static str, String)> {
    let form = |text: &str| percent(text, "*-._", "+");
    let encoded = STANDARD.encode(format!("{}:{}", form(CLIENT_ID), form(SECRET)));
    vec![
        (
            "base64 of id:secret",
            STANDARD.encode(format!("{CLIENT_ID}:{SECRET}")),
        ),
        ("base64 of the encoded id:secret", encoded.clone()),
        ("the Basic value", format!("Basic {encoded}")),
    ]
}

/// One provider, sending the secret one way.
struct Case {
    name: &'static str,
    basic: bool,
    build: fn(&MockServer, HttpClient) -> SharedTokenSource,
}

fn secret() -> ClientSecret {
    ClientSecret::inline(SECRET)
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            name: "mention-me",
            basic: false,
            build: |server, http| {
                MentionMeProvider::builder(CLIENT_ID, secret())
                    .base_url(server.url(""))
                    .http_client(http)
                    .build()
                    .expect("valid")
                    .into()
            },
        },
        Case {
            name: "360learning",
            basic: false,
            build: |server, http| {
                ThreeSixtyLearningProvider::builder(CLIENT_ID, secret())
                    .base_url(server.url(""))
                    .http_client(http)
                    .build()
                    .expect("valid")
                    .into()
            },
        },
        Case {
            name: "auth0 post",
            basic: false,
            build: |server, http| auth0(server, http, ClientAuth::Body),
        },
        Case {
            name: "auth0 basic",
            basic: true,
            build: |server, http| auth0(server, http, ClientAuth::Basic),
        },
        Case {
            name: "oauth2 post",
            basic: false,
            build: |server, http| oauth2(server, http, ClientAuth::Body),
        },
        Case {
            name: "oauth2 basic",
            basic: true,
            build: |server, http| oauth2(server, http, ClientAuth::Basic),
        },
    ]
}

fn auth0(server: &MockServer, http: HttpClient, auth: ClientAuth) -> SharedTokenSource {
    Auth0Provider::builder(server.url(""), CLIENT_ID, secret())
        .audience("https://api.example.com")
        .client_auth(auth)
        .http_client(http)
        .build()
        .expect("valid")
        .into()
}

fn oauth2(server: &MockServer, http: HttpClient, auth: ClientAuth) -> SharedTokenSource {
    OAuth2Provider::builder(server.url(PATH), CLIENT_ID, secret())
        .client_auth(auth)
        .http_client(http)
        .build()
        .expect("valid")
        .into()
}

/// Where the server puts the echo.
#[derive(Debug, Clone, Copy)]
enum Place {
    ErrorDescription,
    HtmlPage,
    Location,
    SuccessWithError,
}

async fn echo(server: &MockServer, place: Place, shape: &str) {
    let description = format!("{shape} is not valid");
    let shape = shape.to_owned();
    server
        .mock_async(move |when, then| {
            when.method(POST);
            match place {
                Place::ErrorDescription => {
                    then.status(401).json_body(json!({
                        "error": "invalid_client",
                        "error_description": description,
                    }));
                }
                Place::HtmlPage => {
                    then.status(500)
                        .header("content-type", "text/html")
                        .body(format!("<html><body><p>{shape}</p></body></html>"));
                }
                Place::Location => {
                    then.status(302)
                        .header("location", format!("https://idp.example/retry?{shape}"));
                }
                Place::SuccessWithError => {
                    then.status(200).json_body(json!({
                        "error": "invalid_client",
                        "error_description": description,
                    }));
                }
            }
        })
        .await;
}

fn leaks<'a>(text: &str, shapes: &'a [(&'static str, String)]) -> Vec<&'a str> {
    shapes
        .iter()
        .filter(|(_, shape)| text.contains(shape.as_str()))
        .map(|(name, _)| *name)
        .collect()
}

#[tokio::test]
async fn an_echoed_secret_never_reaches_errors_or_logs() {
    let logs = Captured::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    let _default = tracing::subscriber::set_default(subscriber);

    let mut policy = CachePolicy::default();
    policy.retry.max_attempts = 1;
    let mut all_shapes = body_shapes(SECRET);
    all_shapes.extend(basic_shapes());
    // A JSON request body quoted whole inside a JSON error string.
    let echoed_body = json!({"client_id": CLIENT_ID, "client_secret": SECRET}).to_string();
    // One server and one HTTP client for every combination: starting a
    // server and loading the root store each time made this test slow.
    let server = MockServer::start_async().await;
    let http = HttpClient::new().expect("client");
    let mut checked = 0;
    for case in cases() {
        let mut shapes = body_shapes(SECRET);
        shapes.push(("the JSON request body", echoed_body.clone()));
        if case.basic {
            shapes.extend(basic_shapes());
        }
        for (shape_name, shape) in &shapes {
            for place in [
                Place::ErrorDescription,
                Place::HtmlPage,
                Place::Location,
                Place::SuccessWithError,
            ] {
                // A header value carries visible ASCII only.
                if matches!(place, Place::Location)
                    && !shape
                        .bytes()
                        .all(|byte| byte.is_ascii_graphic() || byte == b' ')
                {
                    continue;
                }
                server.reset_async().await;
                echo(&server, place, shape).await;
                let source = (case.build)(&server, http.clone());
                let cache = ManagedToken::builder(source)
                    .name("api")
                    .policy(policy.clone())
                    .build();
                let error: Error = cache.get().await.expect_err("the echo is an error");
                let what = format!("{} / {shape_name} / {place:?}", case.name);
                let display = error.to_string();
                let debug = format!("{error:?}");
                assert!(
                    display.contains("[redacted]"),
                    "{what}: the echo reached the error: {display}"
                );
                for (form, text) in [("Display", &display), ("Debug", &debug)] {
                    let leaked = leaks(text, &all_shapes);
                    assert!(leaked.is_empty(), "{what}: {leaked:?} in {form}: {text}");
                }
                checked += 1;
            }
        }
    }
    assert!(checked > 100, "only {checked} combinations ran");

    let text = String::from_utf8_lossy(&logs.0.lock().expect("log buffer")).into_owned();
    assert!(text.contains("token fetch failed"), "failures were logged");
    assert!(
        text.contains("[redacted]"),
        "echoes reached the logs scrubbed"
    );
    let leaked = leaks(&text, &all_shapes);
    assert!(leaked.is_empty(), "{leaked:?} in the logs");
}
