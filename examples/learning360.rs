//! A 360Learning API v2 client from config, against an in-process mock.
//!
//! ```text
//! cargo run --example learning360
//! ```
#![allow(clippy::print_stdout)]

use authmux::{Config, Registry};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let server = authmux_testkit::TokenServer::start().await;
    server.expect_client("learning-client", "learning-secret");
    // In production: `region = "eu"` or `"us"` and no base_url.
    let config = Config::from_toml_str(&format!(
        r#"
        [clients.learning]
        provider = "360learning"
        client_id = "learning-client"
        client_secret = "learning-secret"
        region = "eu"
        base_url = "{}"
        "#,
        server.base_url()
    ))?;
    let registry = Registry::from_config(&config)?;
    let client = registry.client("learning")?;
    let token = client.token().await?;
    println!(
        "token for {} s; every API call also sends:",
        token.expires_in().as_secs()
    );
    for (name, value) in &client.api_headers() {
        println!("  {name}: {}", value.to_str().unwrap_or("?"));
    }
    Ok(())
}
