//! One full uncached fetch of the generic provider against a local
//! keep-alive server, next to a hand-written reqwest POST of the same form
//! body and Basic header plus a `serde_json` parse of the same response, in
//! the same run.
#![allow(missing_docs, clippy::unwrap_used)]

use std::hint::black_box;

use authmux_core::{ClientSecret, TokenSource};
use authmux_oauth2::OAuth2Provider;
use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::json;

#[derive(serde::Deserialize)]
struct Response {
    access_token: String,
    token_type: String,
    expires_in: u64,
}

fn fetch(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let body = json!({
        "access_token": "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJtMm0ifQ.c2ln",
        "token_type": "Bearer",
        "expires_in": 86400,
    })
    .to_string();
    let url = format!(
        "http://{}/oauth2/token",
        authmux_testkit::keep_alive_server(&body)
    );
    let provider =
        OAuth2Provider::builder(&url, "bench-client", ClientSecret::inline("bench-secret"))
            .scopes(["read", "write"])
            .extra_param("audience", "https://api.example.com")
            .build()
            .unwrap();
    let plain = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let form =
        "grant_type=client_credentials&scope=read+write&audience=https%3A%2F%2Fapi.example.com";
    // base64("bench-client:bench-secret")
    let basic = "Basic YmVuY2gtY2xpZW50OmJlbmNoLXNlY3JldA==";

    let mut group = c.benchmark_group("oauth2_fetch");
    group.bench_function("authmux_oauth2", |b| {
        b.to_async(&runtime)
            .iter(|| async { black_box(provider.fetch_token().await.unwrap().id()) })
    });
    group.bench_function("hand_written_reqwest", |b| {
        b.to_async(&runtime).iter(|| async {
            let response = plain
                .post(&url)
                .header("content-type", "application/x-www-form-urlencoded")
                .header("accept", "application/json")
                .header("authorization", basic)
                .body(form)
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
