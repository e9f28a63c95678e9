//! The authmux quickstart: needs nothing external.
//!
//! It starts an in-process mock of three providers' token endpoints (Mention
//! Me, 360Learning and Auth0, each speaking its documented wire format), loads
//! a config that points at it, fetches a token for each client, shows that
//! the second `get()` is served from the cache, and prints the Mention Me
//! claims.
//!
//! ```text
//! cargo run --example quickstart
//! ```
#![allow(clippy::print_stdout)]

use std::time::Instant;

use authmux::mention_me::MentionMeTokenExt;
use authmux::{Config, Registry};
use authmux_testkit::TokenServer;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // One in-process server speaks all three providers' formats, each at
    // its own path.
    let server = TokenServer::start().await;

    // The same file a service would keep as authmux.toml, pointed at it.
    let base = server.base_url();
    let config = Config::from_toml_str(&format!(
        r#"
        [defaults]
        timeout = "5s"

        [clients.referrals]
        provider = "mention-me"
        client_id = "mm-client"
        client_secret = "mm-secret"
        base_url = "{base}"

        [clients.learning]
        provider = "360learning"
        client_id = "learning-client"
        client_secret = "learning-secret"
        base_url = "{base}"

        [clients.api]
        provider = "auth0"
        domain = "{base}"
        client_id = "auth0-client"
        client_secret = "auth0-secret"
        audience = "https://api.example.com"
        "#
    ))?;
    let registry = Registry::from_config(&config)?;

    println!(
        "{:<10} {:<12} {:>7} {:>12} {:>12} {:>5}",
        "client", "provider", "type", "first get", "second get", "hits"
    );
    for (name, client_id) in [
        ("referrals", "mm-client"),
        ("learning", "learning-client"),
        ("api", "auth0-client"),
    ] {
        let client = registry.client(name)?;
        let started = Instant::now();
        let first = client.token().await?;
        let fetched = started.elapsed();
        let started = Instant::now();
        let second = client.token().await?;
        let cached = started.elapsed();
        assert_eq!(
            first.id(),
            second.id(),
            "the second get is the cached token"
        );
        println!(
            "{:<10} {:<12} {:>7} {:>12} {:>12} {:>5}",
            name,
            client.provider(),
            first.token_type().to_string(),
            format!("{fetched:.1?}"),
            format!("{cached:.1?}"),
            server.requests_from(client_id),
        );
    }

    let token = registry.token("referrals").await?;
    let claims = token.mention_me_claims()?;
    println!();
    println!(
        "Mention Me token, valid for {} s more:",
        token.expires_in().as_secs()
    );
    println!("  env:        {}", claims.env.as_deref().unwrap_or("-"));
    println!(
        "  merchantId: {}",
        claims.merchant_id.as_deref().unwrap_or("-")
    );
    println!("  scopes:     {}", claims.scopes.join(" "));
    Ok(())
}
