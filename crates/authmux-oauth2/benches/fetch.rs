//! One full uncached fetch of the generic provider against a local
//! keep-alive server, next to a hand-written reqwest POST of the same form
//! body and Basic header plus a `serde_json` parse of the same response, in
//! the same run.
//!
//! On Linux the time reported is the process's CPU time, not wall time: on
//! a shared machine, wall time mostly measures the neighbours. The server
//! runs in-process and does the same work for both, so its share is the
//! same on each side (it makes the ratio lean towards 1, never away).
#![allow(missing_docs, clippy::unwrap_used)]

use std::hint::black_box;

use authmux_core::{ClientSecret, TokenSource};
use authmux_oauth2::OAuth2Provider;
use criterion::{Criterion, criterion_group, criterion_main};

#[derive(serde::Deserialize)]
struct Response {
    access_token: String,
    token_type: String,
    expires_in: u64,
}

fn fetch(c: &mut Criterion) {
    let runtime = authmux_testkit::bench::runtime();
    let url = format!(
        "http://{}/oauth2/token",
        authmux_testkit::keep_alive_server(authmux_testkit::bench::TOKEN_RESPONSE)
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
        b.to_async(&runtime).iter_custom(|iterations| {
            let provider = &provider;
            async move {
                let started = cpu_time();
                for _ in 0..iterations {
                    black_box(provider.fetch_token().await.unwrap().id());
                }
                cpu_time() - started
            }
        })
    });
    let hand_written = || async {
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
        ));
    };
    group.bench_function("hand_written_reqwest", |b| {
        b.to_async(&runtime).iter_custom(|iterations| async move {
            let started = cpu_time();
            for _ in 0..iterations {
                hand_written().await;
            }
            cpu_time() - started
        })
    });
    group.finish();
}

/// The CPU time of the whole process so far.
#[cfg(any(target_os = "linux", target_os = "android"))]
fn cpu_time() -> std::time::Duration {
    let now = rustix::time::clock_gettime(rustix::time::ClockId::ProcessCPUTime);
    std::time::Duration::new(now.tv_sec as u64, now.tv_nsec as u32)
}

/// Elsewhere, wall time.
#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn cpu_time() -> std::time::Duration {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    START.get_or_init(std::time::Instant::now).elapsed()
}

criterion_group!(benches, fetch);
criterion_main!(benches);
