//! The fleet under faults, against a real `redis-server`, with real
//! processes (this binary re-run as children), each with its own cache,
//! Redis connection and the store's default options. Prints a table;
//! figures go to BENCHMARKS.md.
//!
//! * holder killed: one process takes the lease and fetches (3 s), five
//!   wait; the holder is `kill -9`ed mid-fetch. Token requests in all, and
//!   how long after the kill each waiter had a token.
//! * Redis blip: a process fetches (2 s); Redis restarts 0.5 s in, losing
//!   the lease; a process started 1 s in: how long it waits.
//! * skewed writer: an entry planted as a writer whose clock is 10 min fast
//!   would write it (its expiry 10 min late, Redis's TTL right): how long
//!   past its real expiry a reader serves it.
//! * 401 in one of two processes: how long the other keeps serving the
//!   rejected token, and token requests in all.
//!
//! `cargo bench -p authmux-redis --bench fleet_faults`.
#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::print_stdout,
    clippy::print_stderr
)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::io::{BufRead as _, BufReader, Write as _};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use authmux_core::{CachePolicy, ExposeSecret, ManagedToken, SharedTokenStore, TokenIdentity};
use authmux_redis::RedisStore;
use common::{CountingSource, RedisServer, redis_cli};
use tokio::time::Instant;

const CHILD: &str = "AUTHMUX_FAULTS_CHILD";

fn store(url: &str) -> SharedTokenStore {
    // Plaintext, so that the skewed-writer run can plant an entry; the
    // options are the defaults.
    SharedTokenStore::builder(RedisStore::from_url(url).unwrap()).build()
}

fn now_micros() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros()
}

fn read_line() -> String {
    let mut line = String::new();
    std::io::stdin().read_line(&mut line).unwrap();
    line.trim().to_owned()
}

/// One child: `mode` decides what it does; it prints `ready`, waits for a
/// line, and prints its results as one line.
fn child(mode: &str, url: &str) {
    if std::env::var_os("AUTHMUX_FAULTS_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::DEBUG)
            .with_writer(std::io::stderr)
            .init();
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    println!("ready");
    read_line();
    runtime.block_on(async {
        match mode {
            "fetch-3000" | "fetch-2000" | "fetch-50" => {
                let delay: u64 = mode.trim_start_matches("fetch-").parse().unwrap();
                let source =
                    CountingSource::new(Duration::from_secs(3600), Duration::from_millis(delay));
                let cache = ManagedToken::builder(source.clone())
                    .store(store(url))
                    .build();
                let ok = cache.get().await.is_ok();
                println!("{} {} {}", source.calls(), u8::from(!ok), now_micros());
            }
            "skewed" => {
                // Reads the planted token every 10 ms for 12 s; reports the
                // last moment it was served.
                let mut policy = CachePolicy::default();
                policy.expiry_margin = Duration::from_millis(100);
                let source =
                    CountingSource::new(Duration::from_secs(3600), Duration::from_millis(50));
                let cache = ManagedToken::builder(source.clone())
                    .policy(policy)
                    .store(store(url))
                    .build();
                let until = Instant::now() + Duration::from_secs(12);
                let mut last_planted = 0;
                while Instant::now() < until {
                    if let Ok(token) = cache.get().await
                        && token.secret().expose_secret() == "planted"
                    {
                        last_planted = now_micros();
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                println!("{} 0 {last_planted}", source.calls());
            }
            "rejecting" | "watching" => {
                let source =
                    CountingSource::new(Duration::from_secs(3600), Duration::from_millis(50))
                        .unique_to_this_process();
                let cache = ManagedToken::builder(source.clone())
                    .store(store(url))
                    .build();
                let token = cache.get().await.unwrap().into_token();
                println!("have");
                let at = if mode == "rejecting" {
                    read_line();
                    let at = now_micros();
                    cache.invalidate(&token);
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    at
                } else {
                    let until = Instant::now() + Duration::from_secs(3);
                    let mut dropped = 0;
                    while Instant::now() < until {
                        if cache
                            .cached()
                            .is_none_or(|cached| cached.id() != token.id())
                        {
                            dropped = now_micros();
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                    dropped
                };
                let next = cache.get().await.unwrap();
                assert_ne!(next.id(), token.id());
                println!("{} 0 {at}", source.calls());
            }
            other => panic!("unknown mode {other}"),
        }
    });
}

struct Proc {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Proc {
    fn spawn(mode: &str, url: &str) -> Self {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .env(CHILD, format!("{mode} {url}"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "ready");
        Self {
            child,
            stdin,
            stdout,
        }
    }

    fn say(&mut self) {
        self.stdin.write_all(b"go\n").unwrap();
        self.stdin.flush().unwrap();
    }

    fn line(&mut self) -> String {
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        line.trim().to_owned()
    }

    /// `<token requests> <errors> <micros>`.
    fn result(mut self) -> (usize, usize, u128) {
        let line = self.line();
        self.child.wait().unwrap();
        let mut parts = line.split(' ');
        (
            parts.next().unwrap().parse().unwrap(),
            parts.next().unwrap().parse().unwrap(),
            parts.next().unwrap().parse().unwrap(),
        )
    }
}

fn lease_held(url: &str) -> bool {
    let identity = TokenIdentity::new("counting", "memory://");
    let lease = store(url).keys(&identity).lease;
    redis_cli(url, &["EXISTS", &lease]).trim() == "1"
}

fn secs(micros: u128) -> String {
    format!("{:.2} s", micros as f64 / 1e6)
}

fn holder_killed(run: u32) {
    let server = RedisServer::start();
    let url = server.url();
    let mut holder = Proc::spawn("fetch-3000", &url);
    holder.say();
    while !lease_held(&url) {
        std::thread::sleep(Duration::from_millis(5));
    }
    let mut waiters: Vec<Proc> = (0..5).map(|_| Proc::spawn("fetch-3000", &url)).collect();
    for waiter in &mut waiters {
        waiter.say();
    }
    std::thread::sleep(Duration::from_millis(500));
    holder.child.kill().unwrap();
    let killed_at = now_micros();
    holder.child.wait().unwrap();
    let mut requests = 1; // the holder's, sent before it died
    let mut errors = 0;
    let mut slowest = 0;
    for waiter in waiters {
        let (calls, failed, done_at) = waiter.result();
        requests += calls;
        errors += failed;
        slowest = slowest.max(done_at.saturating_sub(killed_at));
    }
    println!(
        "| holder killed mid-fetch (3 s), 5 waiting | {run} | {requests} (goal 2) | {errors} | slowest waiter {} after the kill (goal ≤ 2 s lease + 3 s fetch + 1 s) |",
        secs(slowest)
    );
}

fn blip(run: u32) {
    let mut server = RedisServer::start();
    let url = server.url();
    let mut holder = Proc::spawn("fetch-2000", &url);
    holder.say();
    while !lease_held(&url) {
        std::thread::sleep(Duration::from_millis(5));
    }
    std::thread::sleep(Duration::from_millis(500));
    server.restart();
    std::thread::sleep(Duration::from_millis(500));
    let mut next = Proc::spawn("fetch-2000", &url);
    let started = now_micros();
    next.say();
    let (next_calls, next_errors, done_at) = next.result();
    let (holder_calls, holder_errors, _) = holder.result();
    println!(
        "| Redis restarted while a holder fetches (2 s) | {run} | {} | {} | the next process waited {} (one fetch: 2 s; a lease TTL would add 2 s) |",
        next_calls + holder_calls,
        next_errors + holder_errors,
        secs(done_at.saturating_sub(started))
    );
}

fn skewed(run: u32) {
    let server = RedisServer::start();
    let url = server.url();
    let identity = TokenIdentity::new("counting", "memory://");
    let key = store(&url).keys(&identity).token;
    let real_ttl = Duration::from_secs(5);
    let fast_by = Duration::from_secs(600);
    let claimed_expiry = SystemTime::now() + fast_by + real_ttl;
    let json = serde_json::json!({
        "access_token": "planted",
        "token_type": "Bearer",
        "expires_at_ms": claimed_expiry.duration_since(UNIX_EPOCH).unwrap().as_millis() as u64,
        // Issued for 6 s: a reader refreshes it in the last part of that,
        // so a time left stretched by the writer's clock would keep it
        // served long past its real expiry.
        "lifetime_ms": 6_000u64,
    });
    let mut value = b"AMX\x01\x00".to_vec();
    value.extend_from_slice(json.to_string().as_bytes());
    let mut connection = redis::Client::open(url.as_str())
        .unwrap()
        .get_connection()
        .unwrap();
    let planted_at = now_micros();
    redis::cmd("SET")
        .arg(&key)
        .arg(value)
        .arg("PX")
        .arg(real_ttl.as_millis() as u64)
        .query::<()>(&mut connection)
        .unwrap();
    let real_expiry = planted_at + real_ttl.as_micros();
    let mut reader = Proc::spawn("skewed", &url);
    reader.say();
    let (calls, _, last_planted) = reader.result();
    let past = last_planted.saturating_sub(real_expiry);
    println!(
        "| a writer's clock 10 min fast (planted entry, 5 s left) | {run} | {calls} | 0 | served {} past its real expiry (last served {} after planting) |",
        secs(past),
        secs(last_planted.saturating_sub(planted_at))
    );
}

fn rejected(run: u32) {
    let server = RedisServer::start();
    let url = server.url();
    let mut rejecting = Proc::spawn("rejecting", &url);
    let mut watching = Proc::spawn("watching", &url);
    rejecting.say();
    watching.say();
    assert_eq!(rejecting.line(), "have");
    assert_eq!(watching.line(), "have");
    rejecting.say();
    let (rejecting_calls, _, rejected_at) = rejecting.result();
    let (watching_calls, _, dropped_at) = watching.result();
    println!(
        "| 401 in one of 2 processes | {run} | {} in all, goal 2 ({rejecting_calls} by the one that got the 401, {watching_calls} by the other) | 0 | the other dropped the token {} after the 401 (goal ≤ 100 ms) |",
        rejecting_calls + watching_calls,
        if dropped_at == 0 {
            "never".to_owned()
        } else {
            format!(
                "{:.1} ms",
                dropped_at.saturating_sub(rejected_at) as f64 / 1000.0
            )
        }
    );
}

fn main() {
    if let Ok(child_args) = std::env::var(CHILD) {
        let (mode, url) = child_args.split_once(' ').unwrap();
        child(mode, url);
        return;
    }
    let only = std::env::var("AUTHMUX_FAULTS_ONLY").unwrap_or_default();
    println!("| benchmark | run | token requests | caller errors | figure |");
    println!("|---|---|---|---|---|");
    for run in 1..=3 {
        if only.is_empty() || only == "killed" {
            holder_killed(run);
        }
        if only.is_empty() || only == "blip" {
            blip(run);
        }
        if only.is_empty() || only == "skewed" {
            skewed(run);
        }
        if only.is_empty() || only == "rejected" {
            rejected(run);
        }
    }
}
