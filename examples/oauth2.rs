//! A generic RFC 6749 client (Okta, Keycloak, Entra ID, Cognito…) from
//! config, against an in-process mock.
//!
//! ```text
//! cargo run --example oauth2
//! ```
#![allow(clippy::print_stdout)]

use authmux::{Config, Registry};
use figment::providers::{Format, Toml};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let server = httpmock::MockServer::start_async().await;
    authmux_examples::mock_oauth2(&server, "/oauth2/default/v1/token").await;
    let config = Config::from(Toml::string(&format!(
        r#"
        [clients.okta]
        provider = "oauth2"
        token_url = "{}"
        client_id = "okta-client"
        client_secret = "okta-secret"
        scopes = ["read:things"]
        auth_style = "basic"
        "#,
        server.url("/oauth2/default/v1/token")
    )))?;
    let registry = Registry::from_config(&config)?;
    let token = registry.token("okta").await?;
    println!(
        "scope {:?}, valid for {} s",
        token.scope().unwrap_or("-"),
        token.expires_in().as_secs()
    );
    Ok(())
}
