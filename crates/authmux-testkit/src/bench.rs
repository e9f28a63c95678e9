//! The server of benchmarks.

use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The token response the benchmarks' server sends.
pub const TOKEN_RESPONSE: &str = r#"{"access_token":"eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJtMm0ifQ.c2ln","token_type":"Bearer","expires_in":86400}"#;

/// The client side's runtime in benchmarks: one worker thread, like a
/// small service.
///
/// # Panics
///
/// If the runtime cannot start.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap_or_else(|error| panic!("benchmark runtime: {error}"))
}

/// A minimal keep-alive HTTP/1.1 responder on its own thread that answers
/// every request with `200 OK` and the JSON `body`: the server of
/// benchmarks, whose own cost and noise stay small next to the client's.
///
/// # Panics
///
/// If no loopback port can be bound.
pub fn keep_alive_server(body: &str) -> std::net::SocketAddr {
    let response = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let response: Arc<str> = Arc::from(response);
    let listener = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap_or_else(|error| panic!("benchmark server: {error}"));
    let address = listener
        .local_addr()
        .unwrap_or_else(|error| panic!("benchmark server: {error}"));
    listener
        .set_nonblocking(true)
        .unwrap_or_else(|error| panic!("benchmark server: {error}"));
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap_or_else(|error| panic!("benchmark server: {error}"));
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener)
                .unwrap_or_else(|error| panic!("benchmark server: {error}"));
            loop {
                let (stream, _) = listener
                    .accept()
                    .await
                    .unwrap_or_else(|error| panic!("benchmark server: {error}"));
                tokio::spawn(serve(stream, Arc::clone(&response)));
            }
        });
    });
    address
}

async fn serve(mut stream: tokio::net::TcpStream, response: Arc<str>) {
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
                    .map_or(0, |value| value.trim().parse::<usize>().unwrap_or(0));
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
