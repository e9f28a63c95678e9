//! Cache benchmarks: the hit path, the hit path under contention, a cold
//! stampede, and caller latency while a refresh is in flight.
#![allow(missing_docs, clippy::unwrap_used, clippy::print_stderr)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use authmux_core::{CachePolicy, ExposeSecret, ManagedToken};
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

/// Polls `get()` once (what `.await` does on a ready future) and reads the
/// token's text: on a fresh token it completes at once.
#[inline(always)]
fn get_now(cache: &ManagedToken, cx: &mut Context<'_>) -> usize {
    let mut future = pin!(cache.get());
    match future.as_mut().poll(cx) {
        Poll::Ready(Ok(token)) => black_box(token.secret().expose_secret()).len(),
        _ => panic!("a fresh token must be served without waiting"),
    }
}

fn warm_cache(runtime: &tokio::runtime::Runtime) -> ManagedToken {
    let cache = ManagedToken::new(ScriptedSource::tokens(HOUR, Duration::ZERO));
    runtime.block_on(cache.get()).unwrap();
    cache
}

/// The bare primitives the hot path is built on: an `ArcSwapOption` load, a
/// relaxed load of a shared "now", one comparison, and the text.
struct FloorSlot {
    fresh_until: u64,
    text: String,
}

static FLOOR_NOW: AtomicU64 = AtomicU64::new(1);

#[inline(always)]
fn floor_now(floor: &ArcSwapOption<FloorSlot>) -> usize {
    let guard = floor.load();
    match guard.as_ref() {
        Some(slot) if FLOOR_NOW.load(Ordering::Relaxed) < slot.fresh_until => {
            black_box(slot.text.as_str()).len()
        }
        _ => panic!("the floor slot is always fresh"),
    }
}

fn cache_hit(c: &mut Criterion) {
    let runtime = runtime();
    let cache = warm_cache(&runtime);
    let floor = ArcSwapOption::from_pointee(FloorSlot {
        fresh_until: u64::MAX - 1,
        text: "token-1".to_owned(),
    });
    let mut cx = Context::from_waker(Waker::noop());
    let mut group = c.benchmark_group("cache_hit");
    group.bench_function("get_await_then_text", |b| {
        b.iter(|| black_box(get_now(black_box(&cache), &mut cx)))
    });
    // The same hit with a token store configured: the store is consulted
    // only on a miss or a refresh, so this must match the line above.
    let stored = ManagedToken::builder(ScriptedSource::tokens(HOUR, Duration::ZERO))
        .store(authmux_core::SharedTokenStore::from(
            authmux_core::store::MemoryStore::new(),
        ))
        .build();
    runtime.block_on(stored.get()).unwrap();
    group.bench_function("get_await_then_text_with_store", |b| {
        b.iter(|| black_box(get_now(black_box(&stored), &mut cx)))
    });
    group.bench_function("floor_arcswap_load_relaxed_load_compare", |b| {
        b.iter(|| black_box(floor_now(black_box(&floor))))
    });
    // The same primitives behind a clonable handle, as any cache shared by
    // many callers holds them: an `Arc` to the `ArcSwapOption`.
    let shared_floor = Arc::new(ArcSwapOption::from_pointee(FloorSlot {
        fresh_until: u64::MAX - 1,
        text: "token-1".to_owned(),
    }));
    group.bench_function("floor_behind_a_shared_handle", |b| {
        b.iter(|| black_box(floor_now(black_box(&shared_floor))))
    });
    // The mechanism of aliri_tokens' `TokenWatcher::token()`: a borrow of a
    // `tokio::sync::watch` channel, with no expiry check at all.
    let (_publisher, watcher) = tokio::sync::watch::channel("token-1".to_owned());
    group.bench_function("peer_mechanism_watch_borrow", |b| {
        b.iter(|| black_box(black_box(&watcher).borrow().as_str()).len())
    });
    group.finish();
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
                                let called = Instant::now();
                                cache.get().await.unwrap();
                                called.elapsed()
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
    // The floor: 10,000 bare tokio tasks waiting on one watch channel that a
    // task fills after 50 ms, with no cache at all.
    let mut floor_p99s = Vec::new();
    group.bench_function("10k_bare_watch_waiters_50ms", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let (sender, receiver) = tokio::sync::watch::channel(None::<u64>);
                let (elapsed, mut latencies) = runtime.block_on(async {
                    let started = Instant::now();
                    let mut sender = Some(sender);
                    let callers: Vec<_> = (0..10_000)
                        .map(|_| {
                            let mut receiver = receiver.clone();
                            let sender = sender.take();
                            tokio::spawn(async move {
                                let called = Instant::now();
                                if let Some(sender) = sender {
                                    tokio::spawn(async move {
                                        tokio::time::sleep(Duration::from_millis(50)).await;
                                        sender.send_replace(Some(1));
                                    });
                                }
                                black_box(*receiver.wait_for(Option::is_some).await.unwrap());
                                called.elapsed()
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
                floor_p99s.push(latencies[latencies.len() * 99 / 100]);
                total += elapsed;
            }
            total
        })
    });
    // tokio's own floor for waking many waiters: 10,000 tasks that take a
    // `tokio::sync::Mutex` in turn, the first holding it for 50 ms.
    let mut mutex_p99s = Vec::new();
    group.bench_function("10k_tokio_mutex_waiters_50ms", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let cell = Arc::new(tokio::sync::Mutex::new(None::<u64>));
                let (elapsed, mut latencies) = runtime.block_on(async {
                    let started = Instant::now();
                    let callers: Vec<_> = (0..10_000)
                        .map(|_| {
                            let cell = Arc::clone(&cell);
                            tokio::spawn(async move {
                                let called = Instant::now();
                                let mut value = cell.lock().await;
                                if value.is_none() {
                                    tokio::time::sleep(Duration::from_millis(50)).await;
                                    *value = Some(1);
                                }
                                black_box(*value);
                                drop(value);
                                called.elapsed()
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
                mutex_p99s.push(latencies[latencies.len() * 99 / 100]);
                total += elapsed;
            }
            total
        })
    });
    group.finish();
    if p99s.is_empty() || floor_p99s.is_empty() || mutex_p99s.is_empty() {
        return;
    }
    p99s.sort();
    floor_p99s.sort();
    mutex_p99s.sort();
    eprintln!(
        "stampede: fetches per run {:?}..={:?}, median p99 caller latency {:?} (source takes 50 ms); \
         10k waiters on a bare tokio watch: median p99 {:?}; on a tokio Mutex: median p99 {:?}",
        fetches.iter().min().unwrap(),
        fetches.iter().max().unwrap(),
        p99s[p99s.len() / 2],
        floor_p99s[floor_p99s.len() / 2],
        mutex_p99s[mutex_p99s.len() / 2]
    );
}

fn rollover(c: &mut Criterion) {
    let runtime = runtime();
    let mut group = c.benchmark_group("rollover");
    group.sample_size(10);
    let mut in_flight_max = Vec::new();
    let mut all_calls_max = Vec::new();
    let mut noise_floor = Vec::new();
    let mut calls_in_flight = 0usize;
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
                let (overall, max, count, floor) = runtime.block_on(async {
                    let first = cache.get().await.unwrap().id();
                    // One caller loops from just before the window opens
                    // until after the 200 ms refresh has landed.
                    tokio::time::sleep(Duration::from_millis(950)).await;
                    let cache = cache.clone();
                    let source = source.clone();
                    tokio::spawn(async move {
                        let until = Instant::now() + Duration::from_millis(400);
                        let (mut overall, mut max, mut count) = (Duration::ZERO, Duration::ZERO, 0);
                        while Instant::now() < until {
                            let fetches_before = source.calls();
                            let started = Instant::now();
                            let id = cache.get().await.unwrap().id();
                            let latency = started.elapsed();
                            overall = overall.max(latency);
                            if fetches_before == 2 && id == first {
                                max = max.max(latency);
                                count += 1;
                            }
                            tokio::task::yield_now().await;
                        }
                        // The machine's own noise: the same loop doing nothing.
                        let until = Instant::now() + Duration::from_millis(200);
                        let mut floor = Duration::ZERO;
                        while Instant::now() < until {
                            let started = Instant::now();
                            black_box(());
                            floor = floor.max(started.elapsed());
                            tokio::task::yield_now().await;
                        }
                        (overall, max, count, floor)
                    })
                    .await
                    .unwrap()
                });
                assert_eq!(source.calls(), 2, "one background refresh per run");
                in_flight_max.push(max);
                all_calls_max.push(overall);
                noise_floor.push(floor);
                calls_in_flight += count;
                total += max;
            }
            total
        })
    });
    group.finish();
    if in_flight_max.is_empty() {
        return;
    }
    for series in [&mut in_flight_max, &mut all_calls_max, &mut noise_floor] {
        series.sort();
    }
    let summary = |series: &[Duration]| {
        format!(
            "median {:?}, worst {:?}",
            series[series.len() / 2],
            series[series.len() - 1]
        )
    };
    eprintln!(
        "rollover: {} calls made while the 200 ms refresh was in flight; highest latency per run: {}; \
         including the call that started the refresh: {}; an empty loop on this machine: {}",
        calls_in_flight,
        summary(&in_flight_max),
        summary(&all_calls_max),
        summary(&noise_floor)
    );
}

criterion_group!(benches, cache_hit, cache_hit_contended, stampede, rollover);
criterion_main!(benches);
