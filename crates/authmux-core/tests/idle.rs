//! The coarse clock's upkeep thread exists only while caches do: an idle
//! process with no cache runs no authmux thread at all.
#![cfg(target_os = "linux")]

mod common;

use std::time::Duration;

use authmux_core::ManagedToken;
use common::{ScriptedSource, clock_threads};

#[test]
fn the_clock_thread_stops_when_the_last_cache_is_dropped() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let caches: Vec<ManagedToken> = (0..100)
        .map(|_| {
            ManagedToken::new(ScriptedSource::tokens(
                Duration::from_secs(3600),
                Duration::ZERO,
            ))
        })
        .collect();
    for cache in &caches {
        runtime.block_on(cache.get()).expect("token");
    }
    let started = (0..5_000).any(|_| {
        std::thread::sleep(Duration::from_millis(1));
        clock_threads() == 1
    });
    assert!(started, "one upkeep thread for every cache");
    drop(caches);
    // The thread exits on its own once told; poll for it, bounded.
    let stopped = (0..5_000).any(|_| {
        std::thread::sleep(Duration::from_millis(1));
        clock_threads() == 0
    });
    assert!(stopped, "the upkeep thread must stop with the last cache");
    // A new cache starts it again.
    let cache = ManagedToken::new(ScriptedSource::tokens(
        Duration::from_secs(3600),
        Duration::ZERO,
    ));
    runtime.block_on(cache.get()).expect("token");
    assert!(cache.cached().is_some());
    // A new thread names itself once it runs: poll for it, bounded.
    let restarted = (0..5_000).any(|_| {
        std::thread::sleep(Duration::from_millis(1));
        clock_threads() == 1
    });
    assert!(restarted, "a new cache restarts the upkeep");
}
