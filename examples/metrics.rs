//! Cache metrics exported in the Prometheus text format: a recorder is
//! installed, a client fetches from an in-process mock (a refusal, a 429
//! retried, a token, many cached reads), and the scrape output is printed.
//! No HTTP listener: serve `handle.render()` from your own server.
//!
//! ```text
//! cargo run --example metrics
//! ```
#![allow(clippy::print_stdout)]

use std::time::Duration;

use authmux::{Config, Registry};
use metrics_exporter_prometheus::PrometheusBuilder;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Installed before the registry is built: each cache registers its
    // metrics then.
    let recorder = PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder)?;

    let server = authmux_testkit::TokenServer::start().await;
    server.expect_client("okta-client", "okta-secret");
    let config = Config::from_toml_str(&format!(
        r#"
        [clients.okta]
        provider = "oauth2"
        issuer = "{}"
        client_id = "okta-client"
        client_secret = "okta-secret"
        "#,
        server.issuer()
    ))?;
    let registry = Registry::from_config(&config)?;

    server.fail_next(1, 400);
    let refused = registry.token("okta").await.expect_err("refused");
    println!("first fetch: {refused}");
    // After a failure the cache cools down for a second.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    server.rate_limit_next(1, Duration::from_secs(1));
    for _ in 0..10 {
        registry.token("okta").await?;
    }
    println!("{}", handle.render());
    Ok(())
}
