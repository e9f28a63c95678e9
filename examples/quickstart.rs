//! Fetch and cache a token from a local mock token endpoint.
//!
//! Needs nothing external: it starts an in-process mock of a Mention Me
//! style endpoint (`POST /api/oauth/token`, JSON body, JWT-shaped token),
//! fetches a token, and shows that the second `get()` is served from the
//! cache.
//!
//! ```text
//! cargo run --example quickstart
//! ```
#![allow(clippy::print_stdout)]

use std::time::Instant;

use authmux_core::wire::{ClientAuth, HttpClient, RequestSource, TokenRequest};
use authmux_core::{ManagedToken, SecretString};
use httpmock::{Method::POST, MockServer};
use serde_json::{Value, json};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let server = MockServer::start_async().await;
    let endpoint = server
        .mock_async(|when, then| {
            when.method(POST)
                .path("/api/oauth/token")
                .header("content-type", "application/json")
                .json_body(json!({
                    "client_id": "demo-client",
                    "client_secret": "demo-secret",
                    "grant_type": "client_credentials",
                }));
            then.status(200).json_body(json!({
                "access_token": authmux_examples::demo_jwt(),
                "expires_in": 3600,
                "token_type": "bearer",
            }));
        })
        .await;

    let request = TokenRequest::builder(server.url("/api/oauth/token"))
        .json()
        .client_credentials(
            ClientAuth::Body,
            "demo-client",
            SecretString::from("demo-secret".to_owned()),
        )
        .param("grant_type", "client_credentials")
        .build()?;
    let source = RequestSource::new("mention-me", HttpClient::new()?, request);
    let cache = ManagedToken::builder(source).name("demo").build();

    let started = Instant::now();
    let token = cache.get().await?;
    let first_fetch = started.elapsed();
    let started = Instant::now();
    let again = cache.get().await?;
    let cached = started.elapsed();

    let claims: Value = token.claims()?;
    println!("client:        demo (mention-me)");
    println!(
        "token type:    {} (sent as `{} …`)",
        token.token_type(),
        token.token_type().scheme()
    );
    println!("expires in:    {} s", token.expires_in().as_secs());
    println!("scope (JWT):   {}", claims["scope"]);
    println!("env:           {}", claims["claims"]["env"]);
    println!("merchantId:    {}", claims["claims"]["merchantId"]);
    println!("first get():   {first_fetch:?} (fetched from the endpoint)");
    println!("second get():  {cached:?} (served from the cache)");
    println!("same token:    {}", token.id() == again.id());
    println!("endpoint hits: {}", endpoint.calls_async().await);
    Ok(())
}
