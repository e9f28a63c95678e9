//! One full uncached fetch against a local server, next to a hand-written
//! reqwest POST plus `serde_json` parse of the same response.
//!
//! The server is `authmux_testkit::keep_alive_server`, a minimal keep-alive
//! HTTP/1.1 responder on its own thread. It lives in the unpublished
//! `authmux-tests` crate so that the core does not depend on the testkit,
//! whose conformance suite depends on the core.
#![allow(missing_docs, clippy::unwrap_used)]

use std::hint::black_box;

use authmux_core::SecretString;
use authmux_core::wire::{ClientAuth, HttpClient, TokenRequest};
use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::json;

#[derive(serde::Deserialize)]
struct Response {
    access_token: String,
    token_type: String,
    expires_in: u64,
}

fn fetch(c: &mut Criterion) {
    let runtime = authmux_testkit::bench::runtime();
    let url = format!(
        "http://{}/oauth/token",
        authmux_testkit::keep_alive_server(authmux_testkit::bench::TOKEN_RESPONSE)
    );
    let http = HttpClient::new().unwrap();
    let request = TokenRequest::builder(url.clone())
        .json()
        .param("grant_type", "client_credentials")
        .client_credentials(
            ClientAuth::Body,
            "bench-client",
            SecretString::from("bench-secret".to_owned()),
        )
        .param("audience", "https://api.example.com")
        .build()
        .unwrap();
    let plain = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let body = json!({
        "grant_type": "client_credentials",
        "client_id": "bench-client",
        "client_secret": "bench-secret",
        "audience": "https://api.example.com",
    })
    .to_string();

    let mut group = c.benchmark_group("fetch");
    group.bench_function("authmux", |b| {
        b.to_async(&runtime)
            .iter(|| async { black_box(http.fetch_token(&request).await.unwrap().id()) })
    });
    group.bench_function("hand_written_reqwest", |b| {
        b.to_async(&runtime).iter(|| async {
            let response = plain
                .post(&url)
                .header("content-type", "application/json")
                .header("accept", "application/json")
                .body(body.clone())
                .send()
                .await
                .unwrap();
            let bytes = response.bytes().await.unwrap();
            let parsed: Response = serde_json::from_slice(&bytes).unwrap();
            black_box((
                parsed.access_token.len(),
                parsed.token_type.len(),
                parsed.expires_in,
            ))
        })
    });
    group.finish();
}

criterion_group!(benches, fetch);
criterion_main!(benches);
