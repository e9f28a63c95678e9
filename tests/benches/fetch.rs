//! One full uncached fetch against a local server, next to a hand-written
//! reqwest POST plus `serde_json` parse of the same response.
//!
//! `fetch_cpu_8_loops` counts process CPU time instead of wall time: eight
//! fetch loops at once, against the same server run as a child process so
//! that its work is not counted. Its floor is the hand-written call through
//! the very reqwest client authmux uses (same timeouts, user agent and
//! redirect policy); a plain client with reqwest's defaults is shown too,
//! and so is `HttpClient::fetch_token`, which prepares the request for
//! every call. The four take turns, `FETCH_CPU_ROUNDS` rounds (default 31)
//! of 3,000 fetches each, so that a change in the machine's load hits them
//! alike; the summary gives the median CPU time per fetch and the median of
//! each round's ratio to the floor.
//!
//! `fetch_cpu_8_loops` counts process CPU time instead of wall time: eight
//! fetch loops at once, against the same server run as a child process so
//! that its work is not counted. Its floor is the hand-written call through
//! the very reqwest client authmux uses (same timeouts, user agent and
//! redirect policy); a plain client with reqwest's defaults is shown too.
//!
//! The server is `authmux_testkit::keep_alive_server`, a minimal keep-alive
//! HTTP/1.1 responder on its own thread. It lives in the unpublished
//! `authmux-tests` crate so that the core does not depend on the testkit,
//! whose conformance suite depends on the core.
#![allow(missing_docs, unsafe_code, clippy::unwrap_used, clippy::print_stdout)]

use std::hint::black_box;
use std::io::BufRead as _;
use std::time::Duration;

use authmux_core::wire::{ClientAuth, HttpClient, RequestSource, TokenRequest};
use authmux_core::{ExposeSecret as _, SecretString, SharedTokenSource};
use criterion::{Criterion, criterion_group};
use serde_json::json;

#[derive(serde::Deserialize)]
struct Response {
    access_token: String,
    token_type: String,
    expires_in: u64,
}

/// The token request both sides send, as authmux describes it and as the
/// hand-written call's JSON body.
fn request_and_body(url: &str) -> (TokenRequest, String) {
    let request = TokenRequest::builder(url)
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
    let body = json!({
        "grant_type": "client_credentials",
        "client_id": "bench-client",
        "client_secret": "bench-secret",
        "audience": "https://api.example.com",
    })
    .to_string();
    (request, body)
}

fn fetch(c: &mut Criterion) {
    let runtime = authmux_testkit::bench::runtime();
    let url = format!(
        "http://{}/oauth/token",
        authmux_testkit::keep_alive_server(authmux_testkit::bench::TOKEN_RESPONSE)
    );
    let http = HttpClient::new().unwrap();
    let (request, body) = request_and_body(&url);
    let plain = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();

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

/// Set in the child process that serves the CPU benchmark.
const SERVER_ENV: &str = "AUTHMUX_FETCH_BENCH_SERVER";

/// The benchmark server in a child process: this binary run again.
struct ChildServer(std::process::Child);

impl ChildServer {
    fn start() -> (Self, std::net::SocketAddr) {
        let mut child = std::process::Command::new(std::env::current_exe().unwrap())
            .env(SERVER_ENV, "1")
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        (Self(child), line.trim().parse().unwrap())
    }
}

impl Drop for ChildServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// User and system CPU time of this process.
fn process_cpu() -> Duration {
    // SAFETY: `getrusage` fills the zeroed struct it is given.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        assert_eq!(libc::getrusage(libc::RUSAGE_SELF, &mut usage), 0);
        usage
    };
    let time = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
    };
    time(usage.ru_utime) + time(usage.ru_stime)
}

const LOOPS: u64 = 8;

/// The process CPU time of `iters` calls of `fetch`, made by eight loops
/// at once.
fn cpu_of<F, Fut>(runtime: &tokio::runtime::Runtime, iters: u64, fetch: F) -> Duration
where
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = usize> + Send,
{
    let before = process_cpu();
    runtime.block_on(async {
        let loops: Vec<_> = (0..LOOPS)
            .map(|index| {
                let fetch = fetch.clone();
                let count = iters / LOOPS + u64::from(index < iters % LOOPS);
                tokio::spawn(async move {
                    for _ in 0..count {
                        black_box(fetch().await);
                    }
                })
            })
            .collect();
        for one in loops {
            one.await.unwrap();
        }
    });
    process_cpu() - before
}

fn fetch_cpu(_: &mut Criterion) {
    if !wanted("fetch_cpu_8_loops") {
        return;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (_server, address) = ChildServer::start();
    let url = format!("http://{address}/oauth/token");
    let http = HttpClient::new().unwrap();
    let (request, body) = request_and_body(&url);
    let source = SharedTokenSource::from(
        RequestSource::new("bench", http.clone(), request.clone()).unwrap(),
    );
    let by_hand = |client: reqwest::Client| {
        let url = url.clone();
        let body = body.clone();
        move || {
            let (client, url, body) = (client.clone(), url.clone(), body.clone());
            async move {
                let response = client
                    .post(&url)
                    .header("content-type", "application/json")
                    .header("accept", "application/json")
                    .body(body)
                    .send()
                    .await
                    .unwrap();
                let bytes = response.bytes().await.unwrap();
                let parsed: Response = serde_json::from_slice(&bytes).unwrap();
                parsed.access_token.len() + parsed.token_type.len() + parsed.expires_in as usize
            }
        }
    };
    let same_settings = by_hand(http.reqwest().clone());
    let plain = by_hand(
        reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap(),
    );

    let authmux = move || {
        let source = source.clone();
        async move {
            let token = source.fetch_token().await.unwrap();
            token.secret().expose_secret().len()
        }
    };
    // The one-off call: the request is prepared (its body serialized) for
    // every fetch.
    let one_off = {
        let (http, request) = (http.clone(), std::sync::Arc::new(request));
        move || {
            let (http, request) = (http.clone(), std::sync::Arc::clone(&request));
            async move {
                let token = http.fetch_token(&request).await.unwrap();
                token.secret().expose_secret().len()
            }
        }
    };
    let rounds: usize = std::env::var("FETCH_CPU_ROUNDS")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(31);
    const FETCHES: u64 = 3_000;
    // Warm every connection pool first.
    cpu_of(&runtime, 800, authmux.clone());
    cpu_of(&runtime, 800, same_settings.clone());
    cpu_of(&runtime, 800, plain.clone());
    cpu_of(&runtime, 800, one_off.clone());
    let (mut ours, mut floor, mut defaults) = (Vec::new(), Vec::new(), Vec::new());
    let mut unprepared = Vec::new();
    for _ in 0..rounds {
        ours.push(cpu_of(&runtime, FETCHES, authmux.clone()) / FETCHES as u32);
        unprepared.push(cpu_of(&runtime, FETCHES, one_off.clone()) / FETCHES as u32);
        floor.push(cpu_of(&runtime, FETCHES, same_settings.clone()) / FETCHES as u32);
        defaults.push(cpu_of(&runtime, FETCHES, plain.clone()) / FETCHES as u32);
    }
    let ratio = |of: &[Duration], to: &[Duration]| {
        let mut ratios: Vec<f64> = of
            .iter()
            .zip(to)
            .map(|(of, to)| of.as_secs_f64() / to.as_secs_f64())
            .collect();
        ratios.sort_by(f64::total_cmp);
        ratios[ratios.len() / 2]
    };
    let median = |series: &[Duration]| {
        let mut series = series.to_vec();
        series.sort();
        series[series.len() / 2]
    };
    eprintln!(
        "fetch_cpu_8_loops: CPU per fetch, median of {rounds} rounds: authmux source {:?}, \
         HttpClient::fetch_token {:?}, hand-written with authmux's reqwest client {:?}, \
         hand-written with a default client {:?}; median round ratios: source / same client {:.3}, \
         fetch_token / same client {:.3}, same client / default client {:.3}",
        median(&ours),
        median(&unprepared),
        median(&floor),
        median(&defaults),
        ratio(&ours, &floor),
        ratio(&unprepared, &floor),
        ratio(&floor, &defaults),
    );
}

/// Whether the command line's filter (if any) selects `name`.
fn wanted(name: &str) -> bool {
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|arg| !arg.starts_with('-'))
        .collect();
    filters.is_empty() || filters.iter().any(|filter| name.contains(filter.as_str()))
}

criterion_group!(benches, fetch, fetch_cpu);

fn main() {
    if std::env::var_os(SERVER_ENV).is_some() {
        println!(
            "{}",
            authmux_testkit::keep_alive_server(authmux_testkit::bench::TOKEN_RESPONSE)
        );
        loop {
            std::thread::park();
        }
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
