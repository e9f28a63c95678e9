//! `authmux token` runs sharing the file store: 100 parallel runs, and
//! sequential runs over several token lifetimes, against a mock token
//! endpoint that counts its requests. Prints a table; figures go to
//! BENCHMARKS.md. `cargo bench -p authmux-cli --bench store`.
#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::print_stdout,
    clippy::print_stderr
)]

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use httpmock::{Method, MockServer};
use serde_json::json;

fn config(dir: &Path, server: &MockServer) -> String {
    let path = dir.join("authmux.toml");
    std::fs::write(
        &path,
        format!(
            r#"
[defaults]
expiry_margin = "100ms"

[clients.mm]
provider = "mention-me"
client_id = "bench-client"
client_secret = "bench-secret"
base_url = "{}"
"#,
            server.base_url()
        ),
    )
    .unwrap();
    path.to_str().unwrap().to_owned()
}

fn authmux(dir: &Path, config: &str) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_authmux"));
    command
        .args(["token", "mm", "--config", config])
        .env("XDG_CACHE_HOME", dir.join("cache"))
        .env("RUST_LOG", "authmux=warn");
    command
}

async fn run(command: Command) -> Output {
    let mut command = command;
    tokio::task::spawn_blocking(move || command.output().unwrap())
        .await
        .unwrap()
}

fn scratch(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("authmux-cli-bench-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    println!("| benchmark | run | token requests | runs | failed runs | wall time |");
    println!("|---|---|---|---|---|---|");
    for attempt in 1..=3 {
        let server = MockServer::start_async().await;
        let mock = server
            .mock_async(|when, then| {
                when.method(Method::POST).path("/api/oauth/token");
                then.status(200)
                    .delay(Duration::from_millis(50))
                    .json_body(json!({"access_token": "bench-token", "expires_in": 3600}));
            })
            .await;
        let dir = scratch("parallel");
        let config = config(&dir, &server);
        let started = Instant::now();
        let runs: Vec<_> = (0..100)
            .map(|_| tokio::spawn(run(authmux(&dir, &config))))
            .collect();
        let mut failed = 0;
        for run in runs {
            let output = run.await.unwrap();
            failed += usize::from(!output.status.success());
            let stderr = String::from_utf8_lossy(&output.stderr);
            if !stderr.trim().is_empty() {
                eprintln!("{}", stderr.trim());
            }
        }
        println!(
            "| 100 parallel `authmux token` runs, file store, 50 ms provider | {attempt} | {} | 100 | {failed} | {:.2} s |",
            mock.calls_async().await,
            started.elapsed().as_secs_f64()
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
    for attempt in 1..=2 {
        let server = MockServer::start_async().await;
        let lifetime = Duration::from_secs(3);
        let mock = server
            .mock_async(|when, then| {
                when.method(Method::POST).path("/api/oauth/token");
                then.status(200)
                    .json_body(json!({"access_token": "bench-token", "expires_in": 3}));
            })
            .await;
        let dir = scratch("sequential");
        let config = config(&dir, &server);
        let started = Instant::now();
        let lifetimes = 4;
        let mut runs = 0;
        let mut failed = 0;
        while started.elapsed() < lifetime * lifetimes {
            failed += usize::from(!run(authmux(&dir, &config)).await.status.success());
            runs += 1;
        }
        println!(
            "| sequential runs for {lifetimes} lifetimes of a {} s token | {attempt} | {} | {runs} | {failed} | {:.2} s |",
            lifetime.as_secs(),
            mock.calls_async().await,
            started.elapsed().as_secs_f64()
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
