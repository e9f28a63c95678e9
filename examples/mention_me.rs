//! A Mention Me client from config, against an in-process mock.
//!
//! ```text
//! cargo run --example mention_me
//! ```
#![allow(clippy::print_stdout)]

use authmux::mention_me::MentionMeTokenExt;
use authmux::{Config, Registry};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let server = authmux_testkit::TokenServer::start().await;
    server.expect_client("m2m-client", "mm-secret");
    // In production: `environment = "production"` and no base_url, and the
    // secret from `{ env = "MENTION_ME_CLIENT_SECRET" }`.
    let config = Config::from_toml_str(&format!(
        r#"
        [clients.referrals]
        provider = "mention-me"
        client_id = "m2m-client"
        client_secret = "mm-secret"
        environment = "demo"
        base_url = "{}"
        "#,
        server.base_url()
    ))?;
    let registry = Registry::from_config(&config)?;
    let token = registry.token("referrals").await?;
    let claims = token.mention_me_claims()?;
    println!(
        "merchant {} in {} with scopes {:?}",
        claims.merchant_id.unwrap_or_default(),
        claims.env.unwrap_or_default(),
        claims.scopes
    );
    Ok(())
}
