//! One full uncached fetch against a local server, next to a hand-written
//! reqwest POST plus `serde_json` parse of the same response.
//!
//! The server is a minimal keep-alive HTTP/1.1 responder on its own thread,
//! so that its own cost and noise stay small next to the client's.
#![allow(missing_docs, clippy::unwrap_used)]

use std::hint::black_box;

use authmux_core::SecretString;
use authmux_core::wire::{ClientAuth, HttpClient, TokenRequest};
use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

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
    let url = format!("http://{}/oauth/token", start_server());
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

/// Serves the same token response to every request, with keep-alive.
fn start_server() -> std::net::SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    listener.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                tokio::spawn(serve(stream));
            }
        });
    });
    address
}

async fn serve(mut stream: tokio::net::TcpStream) {
    let body = json!({
        "access_token": "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJtMm0ifQ.c2ln",
        "token_type": "Bearer",
        "expires_in": 86400,
    })
    .to_string();
    let response = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        // Read one request: headers, then content-length bytes of body.
        let (head_end, length) = loop {
            if let Some(end) = buffer.windows(4).position(|window| window == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buffer[..end]).to_ascii_lowercase();
                let length = head
                    .lines()
                    .find_map(|line| line.strip_prefix("content-length:"))
                    .map_or(0, |value| value.trim().parse::<usize>().unwrap());
                break (end + 4, length);
            }
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(read) => buffer.extend_from_slice(&chunk[..read]),
            }
        };
        while buffer.len() < head_end + length {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(read) => buffer.extend_from_slice(&chunk[..read]),
            }
        }
        buffer.drain(..head_end + length);
        if stream.write_all(response.as_bytes()).await.is_err() {
            return;
        }
    }
}

criterion_group!(benches, fetch);
criterion_main!(benches);
