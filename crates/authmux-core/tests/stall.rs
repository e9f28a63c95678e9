//! A fetch left on a runtime that stops being polled never hangs callers on
//! other runtimes: every waiter is bounded by the fetch deadline, and an
//! overdue flight is abandoned so that a new one can start.
//!
//! These tests build their runtimes by hand, since the point is a runtime
//! that stops running.

mod common;

use std::time::Duration;

use authmux_core::{CachePolicy, Clock, ExposeSecret, ManagedToken};
use common::{ScriptedSource, Step};
use tokio::runtime::{Builder, Runtime};

const HOUR: Duration = Duration::from_secs(3600);

fn current_thread() -> Runtime {
    Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime")
}

/// Runs `cache.get()` on a new runtime until the fetch has started, then
/// gives up and never polls that runtime again. The runtime is returned
/// alive: dropping it would cancel the fetch, which is not the case here.
fn abandon_a_get_on_a_stalled_runtime(cache: &ManagedToken) -> Runtime {
    let stalled = current_thread();
    stalled.block_on(async {
        let gave_up = tokio::time::timeout(Duration::from_millis(5), cache.get()).await;
        assert!(gave_up.is_err(), "the first fetch hangs");
    });
    stalled
}

fn secret(token: &authmux_core::Token) -> String {
    token.secret().expose_secret().to_owned()
}

#[test]
fn waiters_on_another_runtime_are_bounded_by_the_fetch_deadline_tokio_clock() {
    let source = ScriptedSource::scripted([Step::Hang], Step::Token(HOUR), Duration::ZERO);
    let cache = ManagedToken::builder(source.clone())
        .name("api")
        .clock(Clock::tokio())
        .build();
    let stalled = abandon_a_get_on_a_stalled_runtime(&cache);
    assert_eq!(source.calls(), 1);
    // Paused time: the 30 s deadline passes in no real time.
    let other = Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("runtime");
    let token = other
        .block_on(async { tokio::time::timeout(HOUR, cache.get()).await })
        .expect("bounded by the fetch deadline")
        .expect("a new fetch's token");
    assert_eq!(secret(&token), "token-2");
    drop(stalled);
}

#[test]
fn waiters_on_another_runtime_are_bounded_by_the_fetch_deadline_coarse_clock() {
    let source = ScriptedSource::scripted([Step::Hang], Step::Token(HOUR), Duration::ZERO);
    let mut policy = CachePolicy::default();
    policy.retry.deadline = Duration::from_millis(100);
    let cache = ManagedToken::builder(source.clone())
        .name("api")
        .policy(policy)
        .build();
    let stalled = abandon_a_get_on_a_stalled_runtime(&cache);
    // The coarse clock's upkeep thread abandons the overdue flight, whatever
    // the runtimes do; real time, since that thread does not follow tokio.
    let token = current_thread()
        .block_on(async { tokio::time::timeout(Duration::from_secs(20), cache.get()).await })
        .expect("bounded by the fetch deadline")
        .expect("a new fetch's token");
    assert_eq!(secret(&token), "token-2");
    drop(stalled);
}

#[test]
fn a_refresh_ahead_left_on_a_stalled_runtime_does_not_hang_anyone() {
    // A 1 s token: refreshed ahead from 0.5 s, served until 0.95 s.
    let source = ScriptedSource::scripted(
        [Step::Token(Duration::from_secs(1)), Step::Hang],
        Step::Token(HOUR),
        Duration::ZERO,
    );
    let mut policy = CachePolicy::default();
    policy.jitter_fraction = 0.0;
    policy.expiry_margin = Duration::from_millis(50);
    policy.retry.deadline = Duration::from_millis(100);
    let cache = ManagedToken::builder(source.clone())
        .name("api")
        .policy(policy)
        .build();
    let main = current_thread();
    let first = main.block_on(cache.get()).expect("token").into_token();
    assert_eq!(secret(&first), "token-1");
    // Inside the refresh window, a caller on a runtime that then stalls
    // starts the background refresh, which hangs.
    let stalled = current_thread();
    stalled.block_on(async {
        tokio::time::sleep(Duration::from_millis(600)).await;
        let served = cache.get().await.expect("still usable");
        assert_eq!(served.id(), first.id());
        tokio::task::yield_now().await;
    });
    assert_eq!(source.calls(), 2, "the refresh started and hangs");
    let token = main.block_on(async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        tokio::time::timeout(Duration::from_secs(20), cache.get()).await
    });
    let token = token.expect("never hangs").expect("a new token");
    assert_eq!(secret(&token), "token-3");
    drop(stalled);
}
