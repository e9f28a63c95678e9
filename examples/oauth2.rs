//! A generic RFC 6749 client (Okta, Keycloak, Entra ID, Cognito…) from
//! config, against an in-process mock.
//!
//! ```text
//! cargo run --example oauth2
//! ```
#![allow(clippy::print_stdout)]

use authmux::{Config, Registry};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let server = authmux_testkit::TokenServer::start().await;
    server.expect_client("okta-client", "okta-secret");
    let config = Config::from_toml_str(&format!(
        r#"
        [clients.okta]
        provider = "oauth2"
        token_url = "{}"
        client_id = "okta-client"
        client_secret = "okta-secret"
        scopes = ["read:things"]
        client_auth = "basic"
        "#,
        server.oauth2_token_url()
    ))?;
    let registry = Registry::from_config(&config)?;
    let token = registry.token("okta").await?;
    println!(
        "scope {:?}, valid for {} s",
        token.scope().unwrap_or("-"),
        token.expires_in().as_secs()
    );
    Ok(())
}
