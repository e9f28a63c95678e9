//! Mention Me's "make your first authenticated request", with the token
//! attached by authmux's middleware.
//!
//! It starts an in-process mock of a Mention Me style API (a token endpoint
//! and `GET /api/merchant/v2/customers`, which checks the bearer token),
//! fetches a customer, then shows a token that the API stops accepting being
//! replaced by one refresh, without the caller noticing.
//!
//! ```text
//! cargo run --example first_request
//! ```
#![allow(clippy::print_stdout)]

use authmux::middleware::Authenticate;
use authmux::{Config, Registry};
use authmux_testkit::jwt as demo_jwt;
use httpmock::Method::{GET, POST};
use httpmock::MockServer;
use serde_json::json;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let server = MockServer::start_async().await;
    let claims =
        json!({"claims": {"env": "demo", "merchantId": "4259"}, "scope": "customers:list"});
    let first_token = demo_jwt(claims.clone(), 3600);
    let second_token = demo_jwt(
        json!({"claims": {"env": "demo", "merchantId": "4259"}, "jti": "2"}),
        3600,
    );

    // The token endpoint issues the first token once, then the second.
    let issue =
        |token: String| json!({"access_token": token, "expires_in": 3600, "token_type": "bearer"});
    let first_issue = server
        .mock_async(|when, then| {
            when.method(POST).path("/api/oauth/token");
            then.status(200).json_body(issue(first_token.clone()));
        })
        .await;
    first_issue.up_to_n_times_async(1).await;
    let second_issue = server
        .mock_async(|when, then| {
            when.method(POST).path("/api/oauth/token");
            then.status(200).json_body(issue(second_token.clone()));
        })
        .await;

    // The API accepts the first token for one call (then, say, it was
    // revoked), and the second token from then on.
    let path = "/api/merchant/v2/customers";
    let customer = json!({"customers": [{"id": 1042, "email": "ada@example.com"}]});
    let accepts_first = server
        .mock_async(|when, then| {
            when.method(GET)
                .path(path)
                .header("authorization", format!("Bearer {first_token}"));
            then.status(200).json_body(customer.clone());
        })
        .await;
    accepts_first.up_to_n_times_async(1).await;
    server
        .mock_async(|when, then| {
            when.method(GET)
                .path(path)
                .header("authorization", format!("Bearer {second_token}"));
            then.status(200).json_body(customer.clone());
        })
        .await;
    let rejects = server
        .mock_async(|when, then| {
            when.method(GET).path(path);
            then.status(401)
                .json_body(json!({"code": "401", "message": "Expired token."}));
        })
        .await;

    let config = Config::from_toml_str(&format!(
        r#"
        [clients.referrals]
        provider = "mention-me"
        client_id = "m2m-client"
        client_secret = "mm-secret"
        base_url = "{}"
        "#,
        server.base_url()
    ))?;
    let registry = Registry::from_config(&config)?;
    // authmux follows redirects itself, checking each hop; the inner client
    // must not follow them with the token on its own.
    let inner = reqwest_middleware::reqwest::Client::builder()
        .redirect(reqwest_middleware::reqwest::redirect::Policy::none())
        .build()?;
    let api = reqwest_middleware::ClientBuilder::new(inner)
        .with(Authenticate::new(registry.client("referrals")?))
        .build();

    let url = server.url(path);
    let response = api.get(&url).send().await?;
    println!("GET {path} -> {}", response.status());
    println!("  {}", response.text().await?);

    let response = api.get(&url).send().await?;
    println!(
        "GET {path} again -> {} (the API rejected the old token once; authmux refreshed it and retried)",
        response.status()
    );
    println!(
        "  token endpoint hits: {}, API 401s: {}",
        first_issue.calls_async().await + second_issue.calls_async().await,
        rejects.calls_async().await
    );
    Ok(())
}
