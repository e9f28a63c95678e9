//! An authenticated request with a token refresh, captured at TRACE level:
//! no secret and no token in the logs. Alone in its test binary, because
//! `tracing` caches callsite interest process-wide.
#![cfg(all(feature = "reqwest-middleware", feature = "mention-me"))]

use std::io::Write;
use std::sync::{Arc, Mutex};

use authmux::middleware::Authenticate;
use authmux::{Config, Registry};
use figment::providers::{Format, Toml};
use httpmock::Method::{GET, POST};
use httpmock::MockServer;
use serde_json::json;

const SECRET: &str = "logs-secret-77aa";

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

#[tokio::test]
async fn a_request_with_a_refresh_logs_no_secret_and_no_token() {
    let logs = Captured::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    let _default = tracing::subscriber::set_default(subscriber);

    let server = MockServer::start_async().await;
    let stale = server
        .mock_async(|when, then| {
            when.method(POST).path("/api/oauth/token");
            then.status(200).json_body(
                json!({"access_token": "stale-token-aa11", "expires_in": 3600, "token_type": "bearer"}),
            );
        })
        .await;
    stale.up_to_n_times_async(1).await;
    server
        .mock_async(|when, then| {
            when.method(POST).path("/api/oauth/token");
            then.status(200).json_body(
                json!({"access_token": "fresh-token-bb22", "expires_in": 3600, "token_type": "bearer"}),
            );
        })
        .await;
    server
        .mock_async(|when, then| {
            when.method(GET)
                .path("/api/merchant/v2/customers")
                .header("authorization", "Bearer fresh-token-bb22");
            then.status(200).body("[]");
        })
        .await;
    server
        .mock_async(|when, then| {
            when.method(GET).path("/api/merchant/v2/customers");
            then.status(401)
                .json_body(json!({"code": "401", "message": "Expired token."}));
        })
        .await;
    let config = Config::from(Toml::string(&format!(
        "[clients.mm]\nprovider = \"mention-me\"\nclient_id = \"mm\"\nclient_secret = \"{SECRET}\"\nbase_url = \"{}\"\n",
        server.base_url()
    )))
    .expect("valid config");
    let registry = Registry::from_config(&config).expect("valid registry");
    let inner = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let http = reqwest_middleware::ClientBuilder::new(inner)
        .with(Authenticate::new(
            registry.client("mm").expect("configured").clone(),
        ))
        .build();
    let response = http
        .get(server.url("/api/merchant/v2/customers"))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 200);

    let text = String::from_utf8_lossy(&logs.0.lock().expect("log buffer")).into_owned();
    assert!(
        text.contains("authmux.request"),
        "the request span was logged: {text}"
    );
    assert!(
        text.contains("retrying once with a fresh token"),
        "the refresh was logged"
    );
    for secret in [SECRET, "stale-token-aa11", "fresh-token-bb22"] {
        assert!(
            !text.contains(secret),
            "{secret} leaked into the logs: {text}"
        );
    }
}
