//! What an idle process pays for holding cached tokens: CPU time and
//! voluntary context switches (wake-ups) over 10 s, from `getrusage`, with
//! 1 and 100 fresh cached tokens, then with every cache dropped; then the
//! same with a token fetched over HTTP, so that a keep-alive connection to
//! a plain HTTP/1.1 server on loopback sits in the connection pool, and
//! after that cache and its HTTP client are dropped. Each line names the
//! threads that woke, from `/proc/self/task`.
//!
//! Not a criterion benchmark: the figure is a rate over a fixed idle
//! period. `IDLE_SECONDS` shortens the period.
#![allow(missing_docs, unsafe_code, clippy::unwrap_used, clippy::print_stdout)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::time::Duration;

use authmux_core::ManagedToken;
use authmux_core::wire::{HttpClient, RequestSource, TokenRequest};
use common::{ScriptedSource, clock_threads};

struct Usage {
    cpu: Duration,
    voluntary_switches: i64,
}

fn usage() -> Usage {
    // SAFETY: `getrusage` fills the zeroed struct it is given.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        assert_eq!(libc::getrusage(libc::RUSAGE_SELF, &mut usage), 0);
        usage
    };
    let time = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
    };
    Usage {
        cpu: time(usage.ru_utime) + time(usage.ru_stime),
        voluntary_switches: usage.ru_nvcsw,
    }
}

/// Idles for `period` on the calling thread and reports what the whole
/// process did meanwhile. The idling thread's own sleep is one switch.
fn idle(label: &str, period: Duration) {
    let threads_before = switches_by_thread();
    let before = usage();
    std::thread::sleep(period);
    let after = usage();
    let threads_after = switches_by_thread();
    let switches = (after.voluntary_switches - before.voluntary_switches - 1).max(0);
    let cpu = after.cpu.saturating_sub(before.cpu);
    // The idling thread is the main one, whose id is the process's.
    let idler = std::process::id().to_string();
    let mut woken: BTreeMap<String, i64> = BTreeMap::new();
    for (tid, (name, count)) in &threads_after {
        let earlier = threads_before.get(tid).map_or(0, |(_, count)| *count);
        if *count > earlier && *tid != idler {
            *woken.entry(name.clone()).or_default() += count - earlier;
        }
    }
    let woken: Vec<String> = woken
        .iter()
        .map(|(name, count)| format!("{name} {count}"))
        .collect();
    println!(
        "idle/{label}: {:.2} wake-ups/s, CPU {:.4} % of a core ({} µs over {} s), authmux-clock threads: {}, woken: [{}]",
        switches as f64 / period.as_secs_f64(),
        100.0 * cpu.as_secs_f64() / period.as_secs_f64(),
        cpu.as_micros(),
        period.as_secs(),
        clock_threads(),
        woken.join(", ")
    );
}

/// Each live thread's name and voluntary context switches (Linux; empty
/// where `/proc` cannot be read).
fn switches_by_thread() -> BTreeMap<String, (String, i64)> {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return BTreeMap::new();
    };
    tasks
        .filter_map(|task| {
            let path = task.ok()?.path();
            let name = std::fs::read_to_string(path.join("comm")).ok()?;
            let status = std::fs::read_to_string(path.join("status")).ok()?;
            let count = status
                .lines()
                .find_map(|line| line.strip_prefix("voluntary_ctxt_switches:"))?
                .trim()
                .parse()
                .ok()?;
            let tid = path.file_name()?.to_string_lossy().into_owned();
            Some((tid, (name.trim().to_owned(), count)))
        })
        .collect()
}

/// A plain HTTP/1.1 server on loopback, on blocking threads (which cost
/// nothing while idle), that keeps connections open and answers every
/// request with one token.
fn keep_alive_server() -> std::net::SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    let body = r#"{"access_token":"idle-token","token_type":"Bearer","expires_in":3600}"#;
    let response = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    std::thread::Builder::new()
        .name("idle-server".into())
        .spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let response = response.clone();
                std::thread::spawn(move || {
                    let mut request = Vec::new();
                    let mut chunk = [0u8; 4096];
                    while let Ok(read) = stream.read(&mut chunk) {
                        if read == 0 {
                            return;
                        }
                        request.extend_from_slice(&chunk[..read]);
                        // One request: the head, then its (small) body.
                        if let Some(end) = request.windows(4).position(|w| w == b"\r\n\r\n") {
                            let head =
                                String::from_utf8_lossy(&request[..end]).to_ascii_lowercase();
                            let length: usize = head
                                .lines()
                                .find_map(|line| line.strip_prefix("content-length:"))
                                .map_or(0, |value| value.trim().parse().unwrap_or(0));
                            if request.len() >= end + 4 + length {
                                request.clear();
                                if stream.write_all(response.as_bytes()).is_err() {
                                    return;
                                }
                            }
                        }
                    }
                });
            }
        })
        .unwrap();
    address
}

fn main() {
    if std::env::args().any(|arg| arg == "--list") {
        println!("idle: benchmark");
        return;
    }
    let seconds = std::env::var("IDLE_SECONDS")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(10);
    let period = Duration::from_secs(seconds);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    // The floor: the same process and runtime with no cache at all.
    idle("no_cache_yet", period);
    for count in [1, 100] {
        let caches: Vec<ManagedToken> = (0..count)
            .map(|_| {
                ManagedToken::new(ScriptedSource::tokens(
                    Duration::from_secs(3600),
                    Duration::ZERO,
                ))
            })
            .collect();
        for cache in &caches {
            runtime.block_on(cache.get()).unwrap();
        }
        idle(&format!("{count}_cached_tokens"), period);
    }
    // Every cache above is dropped by now.
    std::thread::sleep(Duration::from_millis(100));
    idle("after_every_cache_dropped", period);

    // A token fetched over HTTP: its connection stays in the pool.
    let address = keep_alive_server();
    let http = HttpClient::new().unwrap();
    let request = TokenRequest::builder(format!("http://{address}/oauth/token"))
        .json()
        .param("grant_type", "client_credentials")
        .build()
        .unwrap();
    let cache = ManagedToken::new(RequestSource::new("idle", http.clone(), request).unwrap());
    runtime.block_on(cache.get()).unwrap();
    idle("1_cached_token_keep_alive_connection", period);
    drop(cache);
    drop(http);
    std::thread::sleep(Duration::from_millis(100));
    idle("after_the_http_cache_dropped", period);
}
