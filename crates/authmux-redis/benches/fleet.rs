//! Fleet benchmarks against a real `redis-server`: real processes (this
//! binary re-run as children), each with its own cache, Redis connection
//! and callers. Prints a table; figures go to BENCHMARKS.md.
//!
//! * cold start: N processes × 100 concurrent callers start together with
//!   an empty store and a 50 ms provider: token requests, and p99 caller
//!   latency next to one process alone.
//! * rollover: N processes call `get()` every 10 ms for 6 lifetimes of a
//!   3 s token, refreshed in its last 10 %: token requests.
//! * Redis killed: one process, Redis killed 2 s into an 8 s run, a 401
//!   every 250 ms forcing fetches through the store: caller errors and
//!   latency.
//!
//! * slow provider: 40 processes cold with a 2 s fetch, and 6 with a 12 s
//!   fetch (longer than the lease): token requests, and every Redis command
//!   the fleet sent (`INFO commandstats`).
//!
//! `cargo bench -p authmux-redis --bench fleet [-- PROCESSES]` (default 20);
//! `AUTHMUX_FLEET_ONLY=cold|clients|rollover|slow|killed` runs one kind
//! (`clients`: 100 clients as 10 processes of 10 connections, only when
//! asked for).
#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::print_stdout,
    clippy::print_stderr
)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::io::{BufRead as _, BufReader, Write as _};
use std::process::{Command, Stdio};
use std::time::Duration;

use authmux_core::store::EncryptionKey;
use authmux_core::{CachePolicy, ManagedToken, SharedTokenStore};
use authmux_redis::RedisStore;
use common::{CountingSource, RedisServer, redis_cli};
use tokio::time::Instant;

const CHILD: &str = "AUTHMUX_FLEET_CHILD";
const CALLERS: usize = 100;
const PROVIDER: Duration = Duration::from_millis(50);
const LIFETIME: Duration = Duration::from_secs(3);
const LIFETIMES: u32 = 6;

fn store(url: &str) -> SharedTokenStore {
    SharedTokenStore::builder(RedisStore::from_url(url).unwrap())
        .encryption_key(EncryptionKey::from_bytes(&[7; 32]))
        .build()
}

/// The default policy's proportions for a short token: the refresh window
/// is 10 % of the lifetime (as for any token of 10 minutes or more).
fn short_policy() -> CachePolicy {
    let mut policy = CachePolicy::default();
    policy.refresh_window = LIFETIME / 10;
    policy.expiry_margin = Duration::from_millis(100);
    policy
}

/// One process of the fleet: waits for "go" on stdin, runs, prints
/// `<token requests> <caller errors> <latency µs>,<latency µs>,…`.
fn child(mode: &str, url: &str) {
    if std::env::var_os("AUTHMUX_FLEET_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::DEBUG)
            .with_writer(std::io::stderr)
            .init();
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (calls, errors, latencies) = runtime.block_on(async {
        // Each process builds its caches as a service does when it starts,
        // before its first token request: the store connects meanwhile.
        let slow = mode
            .strip_prefix("slow-")
            .map(|delay_ms| Duration::from_millis(delay_ms.parse().unwrap()));
        let (lifetime, delay) = match slow {
            Some(delay) => (Duration::from_secs(3600), delay),
            None if mode == "clients" || mode.starts_with("cold") => {
                (Duration::from_secs(3600), PROVIDER)
            }
            None => (LIFETIME, PROVIDER),
        };
        let source = CountingSource::new(lifetime, delay);
        let caches: Vec<ManagedToken> = (0..if mode == "clients" { 10 } else { 1 })
            .map(|_| {
                // `clients`: ten clients in this process, each with its own
                // cache and its own Redis connection (its own store).
                let mut cache = ManagedToken::builder(source.clone());
                if mode != "cold-no-store" {
                    cache = cache.store(store(url));
                }
                if slow.is_none() && !(mode == "clients" || mode.starts_with("cold")) {
                    cache = cache.policy(short_policy());
                }
                cache.build()
            })
            .collect();
        println!("ready");
        tokio::task::spawn_blocking(|| {
            let mut line = String::new();
            std::io::stdin().read_line(&mut line).unwrap();
        })
        .await
        .unwrap();
        tracing::debug!("go");
        if slow.is_some() {
            // A slow provider: one caller per process, the default options.
            let started = Instant::now();
            let ok = caches[0].get().await.is_ok();
            (source.calls(), usize::from(!ok), vec![started.elapsed()])
        } else if mode == "clients" {
            let (errors, latencies) = call_all(&caches, CALLERS / 10).await;
            (source.calls(), errors, latencies)
        } else if mode.starts_with("cold") {
            let (errors, latencies) = call_all(&caches, CALLERS).await;
            (source.calls(), errors, latencies)
        } else {
            let cache = &caches[0];
            let until = Instant::now() + LIFETIME * LIFETIMES;
            let mut errors = 0;
            while Instant::now() < until {
                errors += usize::from(cache.get().await.is_err());
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            (source.calls(), errors, Vec::new())
        }
    });
    let latencies: Vec<String> = latencies
        .iter()
        .map(|latency| latency.as_micros().to_string())
        .collect();
    println!("{calls} {errors} {}", latencies.join(","));
}

/// `each` concurrent callers of each cache: caller errors and latencies.
async fn call_all(caches: &[ManagedToken], each: usize) -> (usize, Vec<Duration>) {
    let callers: Vec<_> = caches
        .iter()
        .flat_map(|cache| (0..each).map(move |_| cache.clone()))
        .map(|cache| {
            tokio::spawn(async move {
                let started = Instant::now();
                let ok = cache.get().await.is_ok();
                (ok, started.elapsed())
            })
        })
        .collect();
    let mut latencies = Vec::new();
    let mut errors = 0;
    for caller in callers {
        let (ok, latency) = caller.await.unwrap();
        errors += usize::from(!ok);
        latencies.push(latency);
    }
    (errors, latencies)
}

struct FleetRun {
    token_requests: usize,
    errors: usize,
    latencies: Vec<Duration>,
}

/// Runs `processes` children in `mode` against `url`, started together.
fn fleet(mode: &str, url: &str, processes: usize) -> FleetRun {
    let exe = std::env::current_exe().unwrap();
    let mut children: Vec<_> = (0..processes)
        .map(|_| {
            Command::new(&exe)
                .env(CHILD, format!("{mode} {url}"))
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut readers: Vec<_> = children
        .iter_mut()
        .map(|child| BufReader::new(child.stdout.take().unwrap()))
        .collect();
    for reader in &mut readers {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "ready");
    }
    for child in &mut children {
        child.stdin.as_mut().unwrap().write_all(b"go\n").unwrap();
    }
    let mut run = FleetRun {
        token_requests: 0,
        errors: 0,
        latencies: Vec::new(),
    };
    for (mut reader, mut child) in readers.into_iter().zip(children) {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        let mut parts = line.trim().split(' ');
        run.token_requests += parts.next().unwrap().parse::<usize>().unwrap();
        run.errors += parts.next().unwrap().parse::<usize>().unwrap();
        if let Some(latencies) = parts.next() {
            run.latencies.extend(
                latencies
                    .split(',')
                    .filter(|text| !text.is_empty())
                    .map(|micros| Duration::from_micros(micros.parse().unwrap())),
            );
        }
        child.wait().unwrap();
    }
    run
}

/// Every command the server ran since its stats were reset (Lua scripts'
/// inner commands included, as Redis counts them), less this bench's own
/// `CONFIG` and `INFO`.
fn command_count(url: &str) -> u64 {
    redis_cli(url, &["INFO", "commandstats"])
        .lines()
        .filter_map(|line| line.strip_prefix("cmdstat_"))
        .filter(|line| !line.starts_with("config") && !line.starts_with("info"))
        .filter_map(|line| {
            line.split_once("calls=")
                .and_then(|(_, rest)| rest.split(',').next())
                .and_then(|calls| calls.parse::<u64>().ok())
        })
        .sum()
}

fn percentile(latencies: &mut [Duration], fraction: f64) -> Duration {
    latencies.sort_unstable();
    let index = ((latencies.len() as f64 * fraction).ceil() as usize).saturating_sub(1);
    latencies[index.min(latencies.len() - 1)]
}

fn ms(duration: Duration) -> String {
    format!("{:.1} ms", duration.as_secs_f64() * 1000.0)
}

struct KilledRun {
    calls: usize,
    errors: usize,
    p99: Duration,
    max: Duration,
    slow: usize,
    token_requests: usize,
}

/// One process, Redis killed 2 s into an 8 s run; a 401 every 250 ms makes
/// a fetch through the store.
async fn redis_killed() -> KilledRun {
    let mut server = RedisServer::start();
    let source = CountingSource::new(Duration::from_secs(3600), PROVIDER);
    let cache = ManagedToken::builder(source.clone())
        .store(store(&server.url()))
        .build();
    cache.get().await.unwrap();
    let started = Instant::now();
    let run_for = Duration::from_secs(8);
    let callers: Vec<_> = (0..50)
        .map(|_| {
            let cache = cache.clone();
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut errors = 0;
                while started.elapsed() < run_for {
                    let at = Instant::now();
                    errors += usize::from(cache.get().await.is_err());
                    latencies.push(at.elapsed());
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                (latencies, errors)
            })
        })
        .collect();
    let rejecter = {
        let cache = cache.clone();
        tokio::spawn(async move {
            while started.elapsed() < run_for {
                tokio::time::sleep(Duration::from_millis(250)).await;
                if let Some(token) = cache.cached() {
                    cache.invalidate(&token);
                }
            }
        })
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    server.kill();
    let mut latencies = Vec::new();
    let mut errors = 0;
    for caller in callers {
        let (mut these, failed) = caller.await.unwrap();
        latencies.append(&mut these);
        errors += failed;
    }
    rejecter.await.unwrap();
    let slow = latencies
        .iter()
        .filter(|latency| **latency > Duration::from_millis(100))
        .count();
    let calls = latencies.len();
    let p99 = percentile(&mut latencies, 0.99);
    let max = latencies.iter().copied().max().unwrap();
    KilledRun {
        calls,
        errors,
        p99,
        max,
        slow,
        token_requests: source.calls(),
    }
}

fn main() {
    if let Ok(child_args) = std::env::var(CHILD) {
        let (mode, url) = child_args.split_once(' ').unwrap();
        child(mode, url);
        return;
    }
    let processes: usize = std::env::args()
        .skip(1)
        .find_map(|arg| arg.parse().ok())
        .unwrap_or(20);
    println!("| benchmark | run | token requests | caller errors | p50 | p99 | max |");
    println!("|---|---|---|---|---|---|---|");
    let only = std::env::var("AUTHMUX_FLEET_ONLY").unwrap_or_default();
    for run in 1..=5 {
        if !only.is_empty() && only != "cold" {
            break;
        }
        let server = RedisServer::start();
        let mut alone = fleet("cold", &server.url(), 1);
        drop(server);
        let server = RedisServer::start();
        let mut together = fleet("cold", &server.url(), processes);
        drop(server);
        let server = RedisServer::start();
        let mut floor = fleet("cold-no-store", &server.url(), processes);
        drop(server);
        let floor_p99 = percentile(&mut floor.latencies, 0.99);
        let alone_p99 = percentile(&mut alone.latencies, 0.99);
        let together_p99 = percentile(&mut together.latencies, 0.99);
        println!(
            "| cold start, 1 process × {CALLERS} | {run} | {} | {} | {} | {} | {} |",
            alone.token_requests,
            alone.errors,
            ms(percentile(&mut alone.latencies, 0.5)),
            ms(alone_p99),
            ms(alone.latencies.iter().copied().max().unwrap()),
        );
        println!(
            "| cold start, {processes} processes × {CALLERS} | {run} | {} | {} | {} | {} ({:.2}×) | {} |",
            together.token_requests,
            together.errors,
            ms(percentile(&mut together.latencies, 0.5)),
            ms(together_p99),
            together_p99.as_secs_f64() / alone_p99.as_secs_f64(),
            ms(together.latencies.iter().copied().max().unwrap()),
        );
        println!(
            "| cold start, {processes} processes × {CALLERS}, no store (the machine's floor) | {run} | {} | {} | {} | {} ({:.2}× alone; store run {:.2}× this) | {} |",
            floor.token_requests,
            floor.errors,
            ms(percentile(&mut floor.latencies, 0.5)),
            ms(floor_p99),
            floor_p99.as_secs_f64() / alone_p99.as_secs_f64(),
            together_p99.as_secs_f64() / floor_p99.as_secs_f64(),
            ms(floor.latencies.iter().copied().max().unwrap()),
        );
    }
    for run in 1..=5 {
        if only != "clients" {
            break;
        }
        // 100 clients as 10 processes of 10, each client with its own
        // connection: 100 processes are more than 2 vCPUs can start at once
        // (their floor without a store is itself 1.2-1.7x one process).
        let server = RedisServer::start();
        let mut alone = fleet("cold", &server.url(), 1);
        drop(server);
        let server = RedisServer::start();
        let mut together = fleet("clients", &server.url(), 10);
        drop(server);
        let alone_p99 = percentile(&mut alone.latencies, 0.99);
        let together_p99 = percentile(&mut together.latencies, 0.99);
        println!(
            "| cold start, 100 clients (10 processes × 10 connections) × 10 callers | {run} | {} | {} | {} | {} ({:.2}× one process's {}) | {} |",
            together.token_requests,
            together.errors,
            ms(percentile(&mut together.latencies, 0.5)),
            ms(together_p99),
            together_p99.as_secs_f64() / alone_p99.as_secs_f64(),
            ms(alone_p99),
            ms(together.latencies.iter().copied().max().unwrap()),
        );
    }
    for run in 1..=3 {
        if !only.is_empty() && only != "rollover" {
            break;
        }
        let server = RedisServer::start();
        let rollover = fleet("rollover", &server.url(), processes);
        println!(
            "| rollover, {processes} processes, {LIFETIMES} lifetimes of {} s | {run} | {} (goal ≤ {}) | {} | | | |",
            LIFETIME.as_secs(),
            rollover.token_requests,
            LIFETIMES + 1,
            rollover.errors
        );
    }
    for (processes, fetch_ms) in [(40, 2_000), (6, 12_000)] {
        if !only.is_empty() && only != "slow" {
            break;
        }
        for run in 1..=3 {
            let server = RedisServer::start();
            redis_cli(&server.url(), &["CONFIG", "RESETSTAT"]);
            let mut slow = fleet(&format!("slow-{fetch_ms}"), &server.url(), processes);
            let commands = command_count(&server.url());
            println!(
                "| slow provider ({} s), {processes} processes cold | {run} | {} | {} | {} | {} | {} ({} Redis commands, {:.1} per process) |",
                fetch_ms / 1000,
                slow.token_requests,
                slow.errors,
                ms(percentile(&mut slow.latencies, 0.5)),
                ms(percentile(&mut slow.latencies, 0.99)),
                ms(slow.latencies.iter().copied().max().unwrap()),
                commands,
                commands as f64 / processes as f64,
            );
        }
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    for run in 1..=3 {
        if !only.is_empty() && only != "killed" {
            break;
        }
        let killed = runtime.block_on(redis_killed());
        println!(
            "| Redis killed mid-run, 50 callers, a 401 every 250 ms | {run} | {} | {} of {} | | {} | {} ({} calls > 100 ms) |",
            killed.token_requests,
            killed.errors,
            killed.calls,
            ms(killed.p99),
            ms(killed.max),
            killed.slow
        );
    }
}
