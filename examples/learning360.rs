//! A 360Learning API v2 client from config, against an in-process mock.
//!
//! ```text
//! cargo run --example learning360
//! ```
#![allow(clippy::print_stdout)]

use authmux::{Config, Registry};
use figment::providers::{Format, Toml};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let server = httpmock::MockServer::start_async().await;
    authmux_examples::mock_360learning(&server, "learning-client", "learning-secret").await;
    // In production: `region = "eu"` or `"us"` and no base_url.
    let config = Config::from(Toml::string(&format!(
        r#"
        [clients.learning]
        provider = "360learning"
        client_id = "learning-client"
        client_secret = "learning-secret"
        region = "eu"
        base_url = "{}"
        "#,
        server.base_url()
    )))?;
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
