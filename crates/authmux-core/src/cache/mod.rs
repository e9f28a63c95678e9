//! The per-client token cache: lock-free reads, single-flight fetches,
//! refresh ahead, retries and cool-down.

mod policy;

pub use policy::{CachePolicy, RetryPolicy, Schedule};

use std::fmt;
use std::future::Future;
use std::ops::Deref;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::{Context, Poll};

use arc_swap::{ArcSwapOption, Guard};
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::Instrument as _;

use crate::clock::Clock;
use crate::error::{Error, ErrorKind};
use crate::source::SharedTokenSource;
use crate::token::Token;

/// A cached token and its schedule, in clock ticks for the hot path.
struct Slot {
    token: Token,
    /// Before this tick the token is served with no further work.
    fresh_until: u64,
    /// Before this tick the token is served; after `fresh_until` a
    /// background refresh is started too.
    usable_until: u64,
    schedule: Schedule,
}

type FlightResult = Option<Result<Arc<Slot>, Error>>;

/// What a caller of the slow path wants.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Want {
    /// A usable token, fetching only if there is none.
    Usable,
    /// A token that is not yet due for refresh.
    NotDue,
    /// A new token, whatever is cached.
    New,
}

#[derive(Default)]
struct FlightState {
    /// The fetch in flight, shared by every waiter.
    flight: Option<watch::Receiver<FlightResult>>,
    /// Consecutive failed fetches.
    failures: u32,
    last_error: Option<Error>,
    retry_not_before: Option<Instant>,
}

struct Shared {
    current: ArcSwapOption<Slot>,
    /// Mirrors `state.flight.is_some()`, so the hot path never locks.
    flight_active: AtomicBool,
    /// Mirrors `state.retry_not_before` in clock ticks (0 when none).
    retry_not_before: AtomicU64,
    state: Mutex<FlightState>,
    source: SharedTokenSource,
    client: Arc<str>,
    policy: CachePolicy,
    clock: Clock,
}

/// A token cache for one client: fetches once, shares the token with every
/// caller, refreshes it before it expires, and never serves it past its
/// expiry margin.
///
/// * [`get`](Self::get) on a fresh token takes a few nanoseconds: it does not
///   lock, allocate or read the system clock.
/// * At most one fetch is in flight; every waiter shares its result. A caller
///   that gives up (drops its future) does not cancel it.
/// * Inside the refresh window, `get` returns the cached token at once and
///   starts one background refresh.
/// * Failed fetches are retried, then the cache cools down: a still-valid
///   token keeps being served, and callers without one get the last error
///   at once instead of hammering the provider.
///
/// Cloning is cheap and shares the cache. Needs a tokio runtime.
#[derive(Clone)]
pub struct ManagedToken {
    shared: Arc<Shared>,
}

impl fmt::Debug for ManagedToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ManagedToken")
            .field("client", &self.shared.client)
            .field("provider", &self.shared.source.provider())
            .field(
                "cached",
                &self.shared.current.load().as_ref().map(|slot| &slot.token),
            )
            .finish()
    }
}

/// Builds a [`ManagedToken`]; see [`ManagedToken::builder`].
#[derive(Debug)]
pub struct ManagedTokenBuilder {
    source: SharedTokenSource,
    client: Option<Arc<str>>,
    policy: CachePolicy,
    clock: Clock,
}

impl ManagedTokenBuilder {
    /// The client's configured name, used in errors and logs. Defaults to
    /// the provider's name.
    pub fn name(mut self, name: impl Into<Arc<str>>) -> Self {
        self.client = Some(name.into());
        self
    }

    /// The refresh and retry policy.
    pub fn policy(mut self, policy: CachePolicy) -> Self {
        self.policy = policy;
        self
    }

    /// The clock; [`Clock::coarse`] unless set. Tests pass [`Clock::tokio`].
    pub fn clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// Builds the cache. No network I/O happens until the first `get`.
    pub fn build(self) -> ManagedToken {
        let client = self
            .client
            .unwrap_or_else(|| Arc::from(self.source.provider()));
        ManagedToken {
            shared: Arc::new(Shared {
                current: ArcSwapOption::empty(),
                flight_active: AtomicBool::new(false),
                retry_not_before: AtomicU64::new(0),
                state: Mutex::new(FlightState::default()),
                source: self.source,
                client,
                policy: self.policy,
                clock: self.clock,
            }),
        }
    }
}

impl ManagedToken {
    /// A cache over `source` with the default policy and clock.
    pub fn new(source: impl Into<SharedTokenSource>) -> Self {
        Self::builder(source).build()
    }

    /// Starts building a cache over `source`.
    pub fn builder(source: impl Into<SharedTokenSource>) -> ManagedTokenBuilder {
        ManagedTokenBuilder {
            source: source.into(),
            client: None,
            policy: CachePolicy::default(),
            clock: Clock::default(),
        }
    }

    /// The client's name.
    pub fn name(&self) -> &str {
        &self.shared.client
    }

    /// The source this cache fetches from.
    pub fn source(&self) -> &SharedTokenSource {
        &self.shared.source
    }

    /// The policy.
    pub fn policy(&self) -> &CachePolicy {
        &self.shared.policy
    }

    /// Returns a usable token: the cached one if it is fresh, otherwise the
    /// result of the one fetch in flight (starting it if needed).
    ///
    /// The returned future checks the cache when first polled, so a future
    /// created long before it is awaited never yields a stale token.
    #[inline]
    pub fn get(&self) -> Get<'_> {
        Get {
            cache: self,
            slow: None,
        }
    }

    /// Returns the cached token if it may still be served, without waiting.
    /// Inside the refresh window this starts the background refresh.
    #[inline(always)]
    pub fn cached(&self) -> Option<TokenGuard> {
        let guard = self.shared.current.load();
        let (fresh, usable, seen) = {
            let slot = guard.as_ref()?;
            let now = self.shared.clock.recent();
            (
                now < slot.fresh_until,
                now < slot.usable_until,
                Arc::as_ptr(slot),
            )
        };
        if fresh {
            return Some(TokenGuard(GuardInner::Cached(guard)));
        }
        if usable {
            self.shared.refresh_ahead(seen);
            return Some(TokenGuard(GuardInner::Cached(guard)));
        }
        None
    }

    /// Fetches a new token whatever is cached (joining a fetch already in
    /// flight), and caches it. During a cool-down this returns the last
    /// error at once.
    pub async fn refresh(&self) -> Result<TokenGuard, Error> {
        Box::pin(Shared::acquire(&self.shared, Want::New)).await
    }

    /// Drops the cached token if it is still `token`, typically after an API
    /// answered 401 to it. Returns whether it was dropped. Later
    /// invalidations of the same token do nothing, so a burst of 401s leads
    /// to one refresh.
    pub fn invalidate(&self, token: &Token) -> bool {
        let current = self.shared.current.load();
        let Some(slot) = current.as_ref() else {
            return false;
        };
        if slot.token.id() != token.id() {
            return false;
        }
        let previous = self.shared.current.compare_and_swap(&*current, None);
        let dropped = match (previous.as_ref(), current.as_ref()) {
            (Some(previous), Some(current)) => Arc::ptr_eq(previous, current),
            _ => false,
        };
        if dropped {
            tracing::debug!(client = %self.shared.client, "cached token invalidated");
        }
        dropped
    }

    /// The schedule of the cached token, if there is one.
    pub fn schedule(&self) -> Option<Schedule> {
        self.shared
            .current
            .load()
            .as_ref()
            .map(|slot| slot.schedule)
    }

    /// Starts a task that keeps the token fresh with no callers at all:
    /// it fetches at once, then refreshes each token when its refresh window
    /// opens. The task stops when the handle or the last `ManagedToken`
    /// clone is dropped.
    pub fn spawn_refresher(&self) -> RefresherHandle {
        let weak = Arc::downgrade(&self.shared);
        RefresherHandle(tokio::spawn(refresher(weak)))
    }
}

type SlowGet<'a> = Pin<Box<dyn Future<Output = Result<TokenGuard, Error>> + Send + 'a>>;

/// The future of [`ManagedToken::get`]. A fresh cached token is returned on
/// the first poll without allocating; otherwise it waits for the shared fetch.
#[must_use = "futures do nothing unless awaited"]
pub struct Get<'a> {
    cache: &'a ManagedToken,
    slow: Option<SlowGet<'a>>,
}

impl fmt::Debug for Get<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Get")
            .field("client", &self.cache.shared.client)
            .field("waiting", &self.slow.is_some())
            .finish()
    }
}

impl Future for Get<'_> {
    type Output = Result<TokenGuard, Error>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let slow = match &mut this.slow {
            Some(slow) => slow,
            None => {
                if let Some(token) = this.cache.cached() {
                    return Poll::Ready(Ok(token));
                }
                this.slow
                    .insert(Box::pin(Shared::acquire(&this.cache.shared, Want::Usable)))
            }
        };
        slow.as_mut().poll(cx)
    }
}

/// Stops the background refresher when dropped.
#[derive(Debug)]
pub struct RefresherHandle(tokio::task::JoinHandle<()>);

impl Drop for RefresherHandle {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn refresher(weak: Weak<Shared>) {
    let mut last_run: Option<Instant> = None;
    loop {
        let wake_at = {
            let Some(shared) = weak.upgrade() else { return };
            let now = Instant::now();
            let due = shared
                .current
                .load()
                .as_ref()
                .map_or(now, |slot| slot.schedule.refresh_at);
            let cooling = shared.lock_state().retry_not_before.unwrap_or(now);
            // Never spin: a token too short-lived to cache would otherwise
            // be fetched back to back.
            let spaced = last_run.map_or(now, |last| last + shared.policy.cooldown);
            due.max(cooling).max(spaced)
        };
        tokio::time::sleep_until(wake_at).await;
        last_run = Some(Instant::now());
        let Some(shared) = weak.upgrade() else { return };
        // The outcome is already logged and recorded by the fetch.
        let _ = Shared::acquire(&shared, Want::NotDue).await;
    }
}

impl Shared {
    fn lock_state(&self) -> MutexGuard<'_, FlightState> {
        // The state is only ever updated in whole steps, so a panic in
        // another holder leaves it consistent: keep going.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Starts the background refresh for the slot at `seen`, unless one is
    /// running, the cache is cooling down, or the slot was replaced.
    #[cold]
    #[inline(never)]
    fn refresh_ahead(self: &Arc<Self>, seen: *const Slot) {
        if self.flight_active.load(Ordering::Acquire)
            || self.clock.recent() < self.retry_not_before.load(Ordering::Acquire)
        {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let mut state = self.lock_state();
        let still_current = self
            .current
            .load()
            .as_ref()
            .is_some_and(|slot| std::ptr::eq(Arc::as_ptr(slot), seen));
        if state.flight.is_none() && still_current {
            tracing::debug!(client = %self.client, "refresh window open; refreshing in the background");
            self.start_flight(&mut state, &runtime);
        }
    }

    /// The slow path: waits for a token, sharing one fetch with every caller.
    async fn acquire(self: &Arc<Self>, want: Want) -> Result<TokenGuard, Error> {
        let mut receiver = {
            let mut state = self.lock_state();
            let now = Instant::now();
            if want != Want::New
                && let Some(slot) = self.current.load_full()
            {
                let acceptable = match want {
                    Want::Usable => now < slot.schedule.stale_at,
                    Want::NotDue | Want::New => now < slot.schedule.refresh_at,
                };
                if acceptable {
                    return Ok(TokenGuard(GuardInner::Owned(slot)));
                }
            }
            match &state.flight {
                Some(receiver) => receiver.clone(),
                None => {
                    if let (Some(until), Some(error)) = (state.retry_not_before, &state.last_error)
                        && now < until
                    {
                        return Err(error.clone().cooling_down(until - now));
                    }
                    let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
                        Error::config("authmux needs a tokio runtime to fetch tokens")
                            .with_client(&self.client)
                    })?;
                    self.start_flight(&mut state, &runtime)
                }
            }
        };
        let outcome = receiver.wait_for(Option::is_some).await;
        match outcome.as_deref() {
            Ok(Some(Ok(slot))) => {
                // Borrow the cached copy when it is this flight's token: no
                // shared reference count to bump for each of many waiters.
                let current = self.current.load();
                if current
                    .as_ref()
                    .is_some_and(|current| Arc::ptr_eq(current, slot))
                {
                    Ok(TokenGuard(GuardInner::Cached(current)))
                } else {
                    Ok(TokenGuard(GuardInner::Owned(Arc::clone(slot))))
                }
            }
            Ok(Some(Err(error))) => Err(error.clone()),
            Ok(None) | Err(_) => Err(Error::new(
                ErrorKind::Transport,
                "the token fetch was abandoned (runtime shutting down, or the source panicked)",
            )
            .with_client(&self.client)
            .with_provider(self.source.provider())),
        }
    }

    /// Starts the one fetch, on its own task so that no caller can cancel it.
    fn start_flight(
        self: &Arc<Self>,
        state: &mut FlightState,
        runtime: &tokio::runtime::Handle,
    ) -> watch::Receiver<FlightResult> {
        let (sender, receiver) = watch::channel(None);
        state.flight = Some(receiver.clone());
        self.flight_active.store(true, Ordering::Release);
        let span = tracing::info_span!(
            "authmux.fetch",
            client = %self.client,
            provider = %self.source.provider(),
        );
        let flight = FlightGuard {
            shared: Arc::clone(self),
            sender: Some(sender),
        };
        runtime.spawn(flight.run().instrument(span));
        receiver
    }

    /// One fetch: attempts with backoff under the overall deadline.
    async fn fetch_with_retries(&self) -> Result<Token, Error> {
        let retry = &self.policy.retry;
        let deadline = Instant::now() + retry.deadline;
        let mut attempt = 1;
        loop {
            let outcome = tokio::time::timeout_at(deadline, self.source.fetch_token())
                .await
                .unwrap_or_else(|_| {
                    Err(Error::new(
                        ErrorKind::Timeout,
                        format!(
                            "no token within the {} s fetch deadline",
                            retry.deadline.as_secs_f64()
                        ),
                    ))
                });
            let error = match outcome {
                Ok(token) => return Ok(token),
                Err(error) => error
                    .with_client(&self.client)
                    .with_provider(self.source.provider()),
            };
            if !error.is_transient() || attempt >= retry.max_attempts.max(1) {
                return Err(error);
            }
            let delay = retry
                .backoff(attempt, rand::random::<f64>())
                .max(error.retry_after().unwrap_or_default());
            if Instant::now() + delay >= deadline {
                return Err(error);
            }
            tracing::warn!(
                attempt,
                delay_ms = delay.as_millis() as u64,
                error = %error,
                "token fetch failed; retrying"
            );
            tokio::time::sleep(delay).await;
            attempt += 1;
        }
    }

    /// Records a fetch's outcome in the cache and the cool-down state.
    fn record(&self, outcome: Result<Token, Error>) -> Result<Arc<Slot>, Error> {
        let now = Instant::now();
        let mut state = self.lock_state();
        match outcome {
            Ok(token) => {
                let schedule = self.policy.schedule(&token, rand::random::<f64>());
                let slot = Arc::new(Slot {
                    fresh_until: self.clock.deadline(schedule.refresh_at),
                    usable_until: self.clock.deadline(schedule.stale_at),
                    schedule,
                    token,
                });
                if schedule.stale_at > now {
                    self.current.store(Some(Arc::clone(&slot)));
                    tracing::debug!(
                        lifetime_s = slot.token.lifetime().as_secs(),
                        refresh_in_s = schedule.refresh_at.saturating_duration_since(now).as_secs(),
                        "token cached"
                    );
                } else {
                    tracing::debug!("token too short-lived to cache; handed to waiters only");
                }
                state.failures = 0;
                state.last_error = None;
                state.retry_not_before = None;
                self.retry_not_before.store(0, Ordering::Release);
                Ok(slot)
            }
            Err(error) => {
                state.failures = state.failures.saturating_add(1);
                let pause = self
                    .policy
                    .cooldown_for(state.failures)
                    .max(error.retry_after().unwrap_or_default());
                let until = now + pause;
                state.retry_not_before = Some(until);
                state.last_error = Some(error.clone());
                self.retry_not_before
                    .store(self.clock.deadline(until).max(1), Ordering::Release);
                tracing::warn!(
                    error = %error,
                    failures = state.failures,
                    cooldown_ms = pause.as_millis() as u64,
                    "token fetch failed"
                );
                Err(error)
            }
        }
    }
}

/// Owns a flight: runs the fetch, publishes the result, and clears the
/// flight even if the task is dropped or the source panics.
struct FlightGuard {
    shared: Arc<Shared>,
    sender: Option<watch::Sender<FlightResult>>,
}

impl FlightGuard {
    async fn run(mut self) {
        let outcome = self.shared.fetch_with_retries().await;
        let result = self.shared.record(outcome);
        self.clear();
        if let Some(sender) = self.sender.take() {
            sender.send_replace(Some(result));
        }
    }

    fn clear(&self) {
        let mut state = self.shared.lock_state();
        state.flight = None;
        self.shared.flight_active.store(false, Ordering::Release);
    }
}

impl Drop for FlightGuard {
    fn drop(&mut self) {
        if self.sender.is_some() {
            // Abandoned mid-fetch: free the cache for the next caller. The
            // dropped sender wakes every waiter with an error.
            self.clear();
        }
    }
}

/// A token borrowed from a [`ManagedToken`]. Dereferences to [`Token`].
///
/// Holding it is cheap and keeps the token alive even if the cache moves on;
/// for long-term storage, call [`into_token`](Self::into_token).
pub struct TokenGuard(GuardInner);

enum GuardInner {
    Cached(Guard<Option<Arc<Slot>>>),
    Owned(Arc<Slot>),
}

impl TokenGuard {
    /// An owned handle to the token (one reference-count increment).
    pub fn into_token(self) -> Token {
        self.deref().clone()
    }
}

impl Deref for TokenGuard {
    type Target = Token;

    #[inline(always)]
    fn deref(&self) -> &Token {
        match &self.0 {
            GuardInner::Cached(guard) => match guard.as_ref() {
                Some(slot) => &slot.token,
                None => unreachable!("a cached guard always holds a slot"),
            },
            GuardInner::Owned(slot) => &slot.token,
        }
    }
}

impl fmt::Debug for TokenGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.deref().fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handles_are_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<ManagedToken>();
        assert_send_sync::<TokenGuard>();
    }
}
