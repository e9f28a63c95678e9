//! The DPoP token-request flow against httpmock: a proof on every request,
//! one retry on a nonce challenge and never a loop, nonces remembered from
//! any response, and no silent Bearer downgrade.

use std::sync::Arc;

use authmux_core::wire::{ClientAuth, HttpClient, HttpConfig, TokenRequest};
use authmux_core::{Dpop, DpopProver, Error, ErrorKind, SecretString, TokenType};
use httpmock::Method::POST;
use httpmock::MockServer;
use reqwest::header::HeaderValue;
use serde_json::json;
use url::Url;

/// A prover whose proof spells out what it was made for.
struct Spelled;

impl DpopProver for Spelled {
    fn proof(
        &self,
        method: &str,
        url: &Url,
        nonce: Option<&str>,
        access_token: Option<&str>,
    ) -> Result<HeaderValue, Error> {
        let text = format!(
            "{method} {} nonce={} ath={}",
            url.path(),
            nonce.unwrap_or("-"),
            access_token.map_or("-", |_| "yes")
        );
        HeaderValue::try_from(text).map_err(|_| Error::config("bad proof"))
    }

    fn thumbprint(&self) -> &str {
        "spelled"
    }
}

fn request(server: &MockServer) -> TokenRequest {
    TokenRequest::builder(server.url("/oauth/token"))
        .json()
        .param("grant_type", "client_credentials")
        .client_credentials(ClientAuth::Body, "c", SecretString::from("s".to_owned()))
        .build()
        .expect("valid request")
}

fn http() -> HttpClient {
    HttpClient::with_config(HttpConfig::default()).expect("client")
}

const DPOP_TOKEN: &str = r#"{"access_token":"bound","token_type":"DPoP","expires_in":300}"#;

#[tokio::test]
async fn a_nonce_challenge_is_answered_once() {
    let server = MockServer::start_async().await;
    let challenge = server
        .mock_async(|when, then| {
            when.method(POST)
                .path("/oauth/token")
                .header("dpop", "POST /oauth/token nonce=- ath=-");
            then.status(400).header("dpop-nonce", "n-1").json_body(
                json!({"error": "use_dpop_nonce", "error_description": "nonce required"}),
            );
        })
        .await;
    let answered = server
        .mock_async(|when, then| {
            when.method(POST)
                .path("/oauth/token")
                .header("dpop", "POST /oauth/token nonce=n-1 ath=-");
            then.status(200).body(DPOP_TOKEN);
        })
        .await;
    let dpop = Dpop::new(Arc::new(Spelled));
    let token = http()
        .fetch_token_dpop(&request(&server), &dpop)
        .await
        .expect("token after one retry");
    assert_eq!(challenge.calls_async().await, 1);
    assert_eq!(answered.calls_async().await, 1);
    assert_eq!(token.token_type(), &TokenType::DPoP);
    assert_eq!(token.authorization(), "DPoP bound");
    // The token presents itself with a proof carrying `ath`.
    let api = Url::parse("https://api.example.com/things?page=2").expect("url");
    assert_eq!(
        token.dpop_proof("GET", &api).expect("proof"),
        "GET /things nonce=- ath=yes"
    );
}

#[tokio::test]
async fn a_server_that_keeps_demanding_nonces_gets_one_retry_then_an_error() {
    let server = MockServer::start_async().await;
    let path = "/oauth/token";
    let mut counter = 0;
    let mut mocks = Vec::new();
    for nonce in ["-", "n-1", "n-2"] {
        counter += 1;
        let next = format!("n-{counter}");
        mocks.push(
            server
                .mock_async(move |when, then| {
                    when.method(POST)
                        .path(path)
                        .header("dpop", format!("POST /oauth/token nonce={nonce} ath=-"));
                    then.status(400)
                        .header("dpop-nonce", next)
                        .json_body(json!({"error": "use_dpop_nonce"}));
                })
                .await,
        );
    }
    let dpop = Dpop::new(Arc::new(Spelled));
    let error = http()
        .fetch_token_dpop(&request(&server), &dpop)
        .await
        .expect_err("no loop");
    assert_eq!(error.kind(), ErrorKind::Refused);
    assert!(
        error.to_string().contains("again after one retry"),
        "{error}"
    );
    assert_eq!(mocks[0].calls_async().await, 1);
    assert_eq!(mocks[1].calls_async().await, 1);
    assert_eq!(mocks[2].calls_async().await, 0, "exactly one retry");
}

#[tokio::test]
async fn a_nonce_from_a_successful_response_is_used_next_time() {
    let server = MockServer::start_async().await;
    let first = server
        .mock_async(|when, then| {
            when.method(POST)
                .path("/oauth/token")
                .header("dpop", "POST /oauth/token nonce=- ath=-");
            then.status(200)
                .header("dpop-nonce", "fresh")
                .body(DPOP_TOKEN);
        })
        .await;
    let second = server
        .mock_async(|when, then| {
            when.method(POST)
                .path("/oauth/token")
                .header("dpop", "POST /oauth/token nonce=fresh ath=-");
            then.status(200).body(DPOP_TOKEN);
        })
        .await;
    let dpop = Dpop::new(Arc::new(Spelled));
    let http = http();
    http.fetch_token_dpop(&request(&server), &dpop)
        .await
        .expect("first");
    http.fetch_token_dpop(&request(&server), &dpop)
        .await
        .expect("second");
    assert_eq!(first.calls_async().await, 1);
    assert_eq!(second.calls_async().await, 1);
}

#[tokio::test]
async fn a_bearer_answer_to_a_dpop_request_is_refused_unless_accepted() {
    let server = MockServer::start_async().await;
    server
        .mock_async(|when, then| {
            when.method(POST).path("/oauth/token");
            then.status(200)
                .body(r#"{"access_token":"plain","token_type":"Bearer","expires_in":300}"#);
        })
        .await;
    let dpop = Dpop::new(Arc::new(Spelled));
    let error = http()
        .fetch_token_dpop(&request(&server), &dpop)
        .await
        .expect_err("downgrade");
    assert_eq!(error.kind(), ErrorKind::InvalidResponse);
    assert!(!error.is_transient());
    let accepted = http()
        .fetch_token_dpop(&request(&server), &dpop.accept_bearer_downgrade(true))
        .await
        .expect("downgrade accepted");
    assert_eq!(accepted.authorization(), "Bearer plain");
}
