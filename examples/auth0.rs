//! An Auth0 client from config, against an in-process mock.
//!
//! ```text
//! cargo run --example auth0
//! ```
#![allow(clippy::print_stdout)]

use authmux::{Config, Registry};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let server = authmux_testkit::TokenServer::start().await;
    server.expect_client("auth0-client", "auth0-secret");
    // In production: `domain = "tenant.eu.auth0.com"`.
    let config = Config::from_toml_str(&format!(
        r#"
        [clients.api]
        provider = "auth0"
        domain = "{}"
        client_id = "auth0-client"
        client_secret = "auth0-secret"
        audience = "https://api.example.com"
        "#,
        server.base_url()
    ))?;
    let registry = Registry::from_config(&config)?;
    for _ in 0..100 {
        registry.token("api").await?;
    }
    let token = registry.token("api").await?;
    println!(
        "100 calls, {} request to Auth0 (each M2M token counts against the quota); \
         token valid for {} h",
        server.requests(),
        token.expires_in().as_secs() / 3600
    );
    Ok(())
}
