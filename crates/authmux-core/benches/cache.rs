//! Cache benchmarks: the hit path, the hit path under contention, a cold
//! stampede, and caller latency while a refresh is in flight.
#![allow(missing_docs, clippy::unwrap_used, clippy::print_stderr)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::sync::{Arc, Barrier};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use authmux_core::{CachePolicy, ManagedToken};
use common::ScriptedSource;
use criterion::{Criterion, criterion_group, criterion_main};

const HOUR: Duration = Duration::from_secs(3600);

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Polls `get()` once: on a fresh token it completes at once.
#[inline]
fn get_now(cache: &ManagedToken, cx: &mut Context<'_>) -> u64 {
    let mut future = pin!(cache.get());
    match future.as_mut().poll(cx) {
        Poll::Ready(Ok(token)) => token.id(),
        _ => panic!("a fresh token must be served without waiting"),
    }
}

fn warm_cache(runtime: &tokio::runtime::Runtime) -> ManagedToken {
    let cache = ManagedToken::new(ScriptedSource::tokens(HOUR, Duration::ZERO));
    runtime.block_on(cache.get()).unwrap();
    cache
}

fn cache_hit(c: &mut Criterion) {
    let runtime = runtime();
    let cache = warm_cache(&runtime);
    let mut cx = Context::from_waker(Waker::noop());
    c.bench_function("cache_hit", |b| {
        b.iter(|| black_box(get_now(black_box(&cache), &mut cx)))
    });
}

fn cache_hit_contended(c: &mut Criterion) {
    let runtime = runtime();
    let cache = warm_cache(&runtime);
    // Each iteration is one get() on each of two threads at once, so the
    // time per iteration equals the 1-thread time under perfect scaling.
    c.bench_function("cache_hit_contended", |b| {
        b.iter_custom(|iters| {
            let barrier = Arc::new(Barrier::new(2));
            let workers: Vec<_> = (0..2)
                .map(|_| {
                    let cache = cache.clone();
                    let barrier = Arc::clone(&barrier);
                    std::thread::spawn(move || {
                        let mut cx = Context::from_waker(Waker::noop());
                        barrier.wait();
                        let started = Instant::now();
                        for _ in 0..iters {
                            black_box(get_now(&cache, &mut cx));
                        }
                        started.elapsed()
                    })
                })
                .collect();
            workers
                .into_iter()
                .map(|worker| worker.join().unwrap())
                .max()
                .unwrap()
        })
    });
}

fn stampede(c: &mut Criterion) {
    let runtime = runtime();
    let mut group = c.benchmark_group("stampede");
    group.sample_size(10);
    let mut fetches = Vec::new();
    let mut p99s = Vec::new();
    group.bench_function("10k_cold_callers_50ms_source", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let source = ScriptedSource::tokens(HOUR, Duration::from_millis(50));
                let cache = ManagedToken::new(source.clone());
                let (elapsed, mut latencies) = runtime.block_on(async {
                    let started = Instant::now();
                    let callers: Vec<_> = (0..10_000)
                        .map(|_| {
                            let cache = cache.clone();
                            tokio::spawn(async move {
                                cache.get().await.unwrap();
                                started.elapsed()
                            })
                        })
                        .collect();
                    let mut latencies = Vec::with_capacity(callers.len());
                    for caller in callers {
                        latencies.push(caller.await.unwrap());
                    }
                    (started.elapsed(), latencies)
                });
                latencies.sort();
                p99s.push(latencies[latencies.len() * 99 / 100]);
                fetches.push(source.calls());
                total += elapsed;
            }
            total
        })
    });
    group.finish();
    p99s.sort();
    eprintln!(
        "stampede: fetches per run {:?}..={:?}, median p99 caller latency {:?} (source takes 50 ms)",
        fetches.iter().min().unwrap(),
        fetches.iter().max().unwrap(),
        p99s[p99s.len() / 2]
    );
}

fn rollover(c: &mut Criterion) {
    let runtime = runtime();
    let mut group = c.benchmark_group("rollover");
    group.sample_size(10);
    let mut worst = Vec::new();
    group.bench_function("max_caller_latency_during_200ms_refresh", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                // A 2 s token with a 100 ms margin: the refresh window opens
                // after 1 s and the token stays usable until 1.9 s.
                let mut policy = CachePolicy::default();
                policy.expiry_margin = Duration::from_millis(100);
                policy.jitter_fraction = 0.0;
                let source =
                    ScriptedSource::tokens(Duration::from_secs(2), Duration::from_millis(200));
                let cache = ManagedToken::builder(source.clone()).policy(policy).build();
                let max = runtime.block_on(async {
                    cache.get().await.unwrap();
                    tokio::time::sleep(Duration::from_millis(1_050)).await;
                    let callers: Vec<_> = (0..2)
                        .map(|_| {
                            let cache = cache.clone();
                            tokio::spawn(async move {
                                let until = Instant::now() + Duration::from_millis(250);
                                let mut max = Duration::ZERO;
                                while Instant::now() < until {
                                    let started = Instant::now();
                                    black_box(cache.get().await.unwrap().id());
                                    max = max.max(started.elapsed());
                                    tokio::task::yield_now().await;
                                }
                                max
                            })
                        })
                        .collect();
                    let mut max = Duration::ZERO;
                    for caller in callers {
                        max = max.max(caller.await.unwrap());
                    }
                    max
                });
                assert_eq!(source.calls(), 2, "one background refresh per run");
                worst.push(max);
                total += max;
            }
            total
        })
    });
    group.finish();
    worst.sort();
    eprintln!(
        "rollover: highest caller latency while a 200 ms refresh was in flight: median {:?}, worst {:?}",
        worst[worst.len() / 2],
        worst.last().unwrap()
    );
}

criterion_group!(benches, cache_hit, cache_hit_contended, stampede, rollover);
criterion_main!(benches);
