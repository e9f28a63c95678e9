//! The cache under tokio's paused time: single flight, refresh ahead,
//! cancellation, stale-on-error, cool-down, retries and invalidation.

mod common;

use std::time::Duration;

use authmux_core::{CachePolicy, Clock, ErrorKind, ManagedToken};
use common::{ScriptedSource, Step, refused, server_error};
use tokio::task::JoinSet;
use tokio::time::{Instant, advance};

const HOUR: Duration = Duration::from_secs(3600);

fn secs(seconds: u64) -> Duration {
    Duration::from_secs(seconds)
}

fn cache(source: &ScriptedSource) -> ManagedToken {
    cache_with(source, CachePolicy::default())
}

fn cache_with(source: &ScriptedSource, policy: CachePolicy) -> ManagedToken {
    ManagedToken::builder(source.clone())
        .name("api")
        .policy(policy)
        .clock(Clock::tokio())
        .build()
}

/// Lets spawned tasks run, moves paused time on by `by`, and lets the tasks
/// that woke up run too.
async fn settle(by: Duration) {
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    advance(by).await;
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
}

fn no_jitter() -> CachePolicy {
    let mut policy = CachePolicy::default();
    policy.jitter_fraction = 0.0;
    policy
}

#[tokio::test(start_paused = true)]
async fn second_get_is_served_from_the_cache() {
    let source = ScriptedSource::tokens(HOUR, Duration::ZERO);
    let cache = cache(&source);
    let first = cache.get().await.expect("token");
    let second = cache.get().await.expect("token");
    assert_eq!(first.id(), second.id());
    assert_eq!(source.calls(), 1);
    assert_eq!(first.secret_str(), "token-1");
}

trait SecretStr {
    fn secret_str(&self) -> &str;
}

impl SecretStr for authmux_core::Token {
    fn secret_str(&self) -> &str {
        use authmux_core::ExposeSecret;
        self.secret().expose_secret()
    }
}

#[tokio::test(start_paused = true)]
async fn ten_thousand_cold_callers_make_one_fetch() {
    let source = ScriptedSource::tokens(HOUR, Duration::from_millis(50));
    let cache = cache(&source);
    let mut callers = JoinSet::new();
    for _ in 0..10_000 {
        let cache = cache.clone();
        callers.spawn(async move { cache.get().await.map(|token| token.id()) });
    }
    let mut ids = std::collections::HashSet::new();
    while let Some(joined) = callers.join_next().await {
        ids.insert(joined.expect("task").expect("token"));
    }
    assert_eq!(source.calls(), 1);
    assert_eq!(ids.len(), 1, "every caller got the same token");
}

#[tokio::test(start_paused = true)]
async fn refresh_ahead_serves_the_old_token_and_refreshes_once_in_the_background() {
    let source = ScriptedSource::tokens(HOUR, secs(5));
    let cache = cache_with(&source, no_jitter());
    let first = cache.get().await.expect("token").into_token();
    assert_eq!(source.calls(), 1);

    // 3600 s token issued now: window 360 s. Step just inside it.
    advance(HOUR - secs(360) + secs(1)).await;
    let before = Instant::now();
    for _ in 0..100 {
        let token = cache.get().await.expect("token");
        assert_eq!(token.id(), first.id(), "the old token is served at once");
    }
    assert_eq!(Instant::now(), before, "nobody waited for the refresh");
    // Let the one background refresh (5 s) finish.
    settle(secs(6)).await;
    let refreshed = cache.get().await.expect("token");
    assert_ne!(refreshed.id(), first.id());
    assert_eq!(source.calls(), 2, "exactly one background refresh");
}

#[tokio::test(start_paused = true)]
async fn background_refresher_keeps_the_token_warm_without_callers() {
    let source = ScriptedSource::tokens(HOUR, Duration::ZERO);
    let cache = cache_with(&source, no_jitter());
    let refresher = cache.spawn_refresher();
    settle(Duration::ZERO).await;
    assert_eq!(source.calls(), 1, "fetched at start");
    let first = cache.cached().expect("warm").id();
    settle(HOUR - secs(360)).await;
    settle(secs(1)).await;
    assert_eq!(source.calls(), 2, "refreshed when the window opened");
    assert_ne!(cache.cached().expect("warm").id(), first);
    drop(refresher);
    settle(HOUR * 3).await;
    assert_eq!(source.calls(), 2, "a dropped refresher stops");
}

#[tokio::test(start_paused = true)]
async fn cancelled_callers_do_not_cancel_the_fetch() {
    let source = ScriptedSource::tokens(HOUR, secs(2));
    let cache = cache(&source);
    for _ in 0..10 {
        let gave_up = tokio::time::timeout(Duration::from_millis(100), cache.get()).await;
        assert!(
            gave_up.is_err(),
            "the caller gives up before the fetch ends"
        );
    }
    // Every waiter is gone; the fetch still completes and is cached.
    settle(secs(3)).await;
    assert_eq!(source.calls(), 1);
    let token = cache.cached().expect("the abandoned fetch was cached");
    assert_eq!(token.secret_str(), "token-1");
}

#[tokio::test(start_paused = true)]
async fn aborted_tasks_never_leave_the_cache_stuck() {
    let source = ScriptedSource::tokens(HOUR, secs(2));
    let cache = cache(&source);
    let mut tasks = JoinSet::new();
    for _ in 0..50 {
        let cache = cache.clone();
        tasks.spawn(async move { cache.get().await.map(|token| token.id()) });
    }
    tokio::task::yield_now().await;
    tasks.abort_all();
    while tasks.join_next().await.is_some() {}
    let token = cache.get().await.expect("token");
    assert_eq!(token.secret_str(), "token-1");
    assert_eq!(source.calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_panicking_source_is_a_failed_fetch_that_cools_down() {
    let source = ScriptedSource::scripted([Step::Panic], Step::Token(HOUR), Duration::ZERO);
    let cache = cache(&source);
    let error = cache.get().await.expect_err("the fetch panicked");
    assert_eq!(error.kind(), ErrorKind::Internal);
    assert_eq!(error.client(), Some("api"));
    assert_eq!(error.provider(), Some("scripted"));
    // Cooling down: the source is not asked again at once.
    let cooled = cache.get().await.expect_err("cooling down");
    assert_eq!(cooled.cooldown_remaining(), Some(secs(1)));
    assert_eq!(source.calls(), 1);
    settle(secs(1)).await;
    let token = cache.get().await.expect("fetched after the cool-down");
    assert_eq!(token.secret_str(), "token-2");
}

#[tokio::test(start_paused = true)]
async fn stale_on_error_within_the_lifetime_and_never_past_it() {
    let source = ScriptedSource::scripted(
        [Step::Token(HOUR)],
        Step::Fail(server_error()),
        Duration::ZERO,
    );
    let cache = cache_with(&source, no_jitter());
    let first = cache.get().await.expect("token").id();
    // Into the refresh window: every refresh fails, the token is still served.
    advance(HOUR - secs(300)).await;
    let stale_at = cache.schedule().expect("cached").stale_at;
    while Instant::now() + secs(1) < stale_at {
        let token = cache.get().await.expect("still valid, still served");
        assert_eq!(token.id(), first);
        advance(secs(7)).await;
    }
    assert!(source.calls() > 3, "refreshes kept being attempted");
    // Past the expiry margin: never served again.
    advance(stale_at - Instant::now()).await;
    let error = cache.get().await.expect_err("no token past the margin");
    assert_eq!(error.kind(), ErrorKind::Server);
    assert!(cache.cached().is_none());
}

#[tokio::test(start_paused = true)]
async fn cool_down_hands_out_the_last_error_without_asking_the_provider() {
    let source = ScriptedSource::scripted([], Step::Fail(refused()), Duration::ZERO);
    let cache = cache(&source);
    let error = cache.get().await.expect_err("refused");
    assert_eq!(error.oauth_code(), Some("invalid_client"));
    assert!(!error.is_transient());
    assert_eq!(source.calls(), 1, "permanent errors are not retried");

    let cooled = cache.get().await.expect_err("cooling down");
    assert_eq!(source.calls(), 1, "the provider was not asked again");
    assert!(cooled.is_transient());
    assert_eq!(cooled.cooldown_remaining(), Some(secs(1)));
    assert_eq!(cooled.oauth_code(), Some("invalid_client"));

    // A permanent error never stops later attempts for good; the cool-down doubles.
    advance(secs(1)).await;
    cache.get().await.expect_err("refused again");
    assert_eq!(source.calls(), 2);
    let cooled = cache.get().await.expect_err("cooling down");
    assert_eq!(cooled.cooldown_remaining(), Some(secs(2)));
    advance(secs(2)).await;
    cache.get().await.expect_err("refused again");
    assert_eq!(source.calls(), 3);
}

#[tokio::test(start_paused = true)]
async fn cool_down_ends_with_a_success() {
    let source =
        ScriptedSource::scripted([Step::Fail(refused())], Step::Token(HOUR), Duration::ZERO);
    let cache = cache(&source);
    cache.get().await.expect_err("refused");
    advance(secs(1)).await;
    let token = cache.get().await.expect("recovered");
    assert_eq!(token.secret_str(), "token-2");
}

#[tokio::test(start_paused = true)]
async fn transient_errors_are_retried_within_one_fetch() {
    let source = ScriptedSource::scripted(
        [Step::Fail(server_error()), Step::Fail(server_error())],
        Step::Token(HOUR),
        Duration::ZERO,
    );
    let cache = cache(&source);
    let token = cache.get().await.expect("third attempt succeeds");
    assert_eq!(token.secret_str(), "token-3");
    assert_eq!(source.calls(), 3);
}

#[tokio::test(start_paused = true)]
async fn attempts_are_capped() {
    let source = ScriptedSource::scripted([], Step::Fail(server_error()), Duration::ZERO);
    let cache = cache(&source);
    let error = cache.get().await.expect_err("always failing");
    assert_eq!(error.status(), Some(503));
    assert_eq!(source.calls(), 3);
}

#[tokio::test(start_paused = true)]
async fn retry_after_is_honoured() {
    let limited = server_error().with_retry_after(secs(4));
    let source = ScriptedSource::scripted([Step::Fail(limited)], Step::Token(HOUR), Duration::ZERO);
    let cache = cache(&source);
    let started = Instant::now();
    cache.get().await.expect("second attempt succeeds");
    assert!(
        Instant::now() - started >= secs(4),
        "waited for Retry-After"
    );
    assert_eq!(source.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_retry_after_past_the_deadline_ends_the_fetch_and_sets_the_cool_down() {
    let limited = server_error().with_retry_after(secs(120));
    let source = ScriptedSource::scripted([Step::Fail(limited)], Step::Token(HOUR), Duration::ZERO);
    let mut policy = CachePolicy::default();
    policy.max_retry_after = Some(secs(600));
    let cache = cache_with(&source, policy);
    let started = Instant::now();
    let error = cache.get().await.expect_err("gives up at once");
    assert_eq!(Instant::now(), started);
    assert_eq!(error.retry_after(), Some(secs(120)));
    let cooled = cache.get().await.expect_err("cooling down for Retry-After");
    assert_eq!(cooled.cooldown_remaining(), Some(secs(120)));
    assert_eq!(source.calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_retry_after_of_any_size_is_capped_and_never_panics() {
    for requested in [Duration::MAX, secs(u64::MAX), secs(30 * 24 * 3600)] {
        let limited = server_error().with_retry_after(requested);
        let source =
            ScriptedSource::scripted([Step::Fail(limited)], Step::Token(HOUR), Duration::ZERO);
        let cache = cache(&source);
        let error = cache.get().await.expect_err("503");
        assert_eq!(error.retry_after(), Some(requested), "kept as sent");
        // The cool-down is capped at cooldown_max (30 s), not 30 days.
        let cooled = cache.get().await.expect_err("cooling down");
        assert_eq!(cooled.cooldown_remaining(), Some(secs(30)));
        assert_eq!(source.calls(), 1);
        settle(secs(30)).await;
        let token = cache.get().await.expect("asks again after the cap");
        assert_eq!(token.secret_str(), "token-2");
    }
}

#[tokio::test(start_paused = true)]
async fn a_huge_retry_after_does_not_lock_out_a_client_whose_token_expired() {
    let mut policy = no_jitter();
    policy.expiry_margin = secs(10);
    let limited = server_error().with_retry_after(secs(30 * 24 * 3600));
    let source = ScriptedSource::scripted(
        [Step::Token(secs(120)), Step::Fail(limited)],
        Step::Token(HOUR),
        Duration::ZERO,
    );
    let cache = cache_with(&source, policy);
    assert_eq!(cache.get().await.expect("token").secret_str(), "token-1");
    // Past the token's expiry: the refresh fails with a 30-day Retry-After.
    settle(secs(125)).await;
    cache.get().await.expect_err("the refresh failed");
    settle(secs(31)).await;
    let token = cache.get().await.expect("a new token within the cap");
    assert_eq!(token.secret_str(), "token-3");
}

#[tokio::test(start_paused = true)]
async fn the_fetch_deadline_bounds_a_hanging_source() {
    let source = ScriptedSource::tokens(HOUR, secs(600));
    let cache = cache(&source);
    let started = Instant::now();
    let error = cache.get().await.expect_err("deadline");
    assert_eq!(error.kind(), ErrorKind::Timeout);
    assert_eq!(Instant::now() - started, secs(30));
    assert!(
        error.to_string().contains("client \"api\" (scripted)"),
        "{error}"
    );
}

#[tokio::test(start_paused = true)]
async fn invalidate_drops_only_the_current_token() {
    let source = ScriptedSource::tokens(HOUR, Duration::ZERO);
    let cache = cache(&source);
    let first = cache.get().await.expect("token").into_token();
    assert!(cache.invalidate(&first), "current token dropped");
    assert!(!cache.invalidate(&first), "second invalidation is a no-op");
    let second = cache.get().await.expect("token").into_token();
    assert_eq!(source.calls(), 2);
    assert!(
        !cache.invalidate(&first),
        "an old token does not drop the new one"
    );
    assert_eq!(cache.get().await.expect("token").id(), second.id());
    assert_eq!(source.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_burst_of_401s_causes_one_refresh() {
    let source = ScriptedSource::tokens(HOUR, Duration::from_millis(20));
    let cache = cache(&source);
    let rejected = cache.get().await.expect("token").into_token();
    let mut tasks = JoinSet::new();
    for _ in 0..50 {
        let cache = cache.clone();
        let rejected = rejected.clone();
        tasks.spawn(async move {
            cache.invalidate(&rejected);
            cache.get().await.map(|token| token.id())
        });
    }
    while let Some(joined) = tasks.join_next().await {
        assert_ne!(joined.expect("task").expect("token"), rejected.id());
    }
    assert_eq!(source.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_token_expired_on_arrival_is_never_handed_out() {
    let source = ScriptedSource::tokens(Duration::ZERO, Duration::ZERO);
    let cache = cache(&source);
    let error = cache.get().await.expect_err("expired on arrival");
    assert_eq!(error.kind(), ErrorKind::InvalidResponse);
    assert!(
        error.to_string().starts_with("client \"api\" (scripted): "),
        "{error}"
    );
    assert!(cache.cached().is_none());
    // A failed fetch like any other: it cools down.
    cache.get().await.expect_err("cooling down");
    assert_eq!(source.calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn refresh_ahead_is_spaced_by_the_cool_down_whatever_the_answer() {
    let source = ScriptedSource::scripted(
        [Step::Token(secs(100))],
        Step::Token(Duration::ZERO),
        Duration::ZERO,
    );
    let cache = cache_with(&source, no_jitter());
    let first = cache.get().await.expect("token").id();
    // Inside the refresh window (it opens at 50 s for a 100 s token).
    settle(secs(60)).await;
    for _ in 0..50 {
        assert_eq!(cache.get().await.expect("still usable").id(), first);
        tokio::task::yield_now().await;
    }
    assert_eq!(source.calls(), 2, "one refresh attempt, not one per call");
    settle(secs(1)).await;
    cache.get().await.expect("still usable");
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    assert_eq!(source.calls(), 3, "the next attempt after the cool-down");
}

#[tokio::test(start_paused = true)]
async fn refresh_forces_a_new_token() {
    let source = ScriptedSource::tokens(HOUR, Duration::ZERO);
    let cache = cache(&source);
    let first = cache.get().await.expect("token").id();
    let forced = cache.refresh().await.expect("token").id();
    assert_ne!(first, forced);
    assert_eq!(cache.get().await.expect("token").id(), forced);
}
