//! The per-client token cache: lock-free reads, single-flight fetches,
//! refresh ahead, retries and cool-down.

mod metrics;
mod policy;
mod store;

pub use policy::{CachePolicy, RetryPolicy, Schedule};

use std::fmt;
use std::future::Future;
use std::ops::Deref;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, MutexGuard, OnceLock, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use arc_swap::{ArcSwapOption, Guard};
use futures_util::FutureExt as _;
use tokio::sync::Notify;
use tokio::time::Instant;
use tracing::Instrument as _;

use crate::clock::{Clock, Watchdog};
use crate::error::{Error, ErrorKind};
use crate::source::SharedTokenSource;
use crate::store::SharedTokenStore;
use crate::token::Token;

use self::metrics::{CacheMetrics, Stopwatch};
use self::store::{Obtained, StoreBinding};

/// A cached token and its schedule, in clock ticks for the hot path.
///
/// In declaration order: the hot path reads `hot_fresh_until` and the
/// token's text, which [`Token`] keeps first, so that a cold slot costs
/// one cache line rather than two.
#[repr(C)]
struct Slot {
    /// The hot path serves the token with no further work while the
    /// clock's [`recent`](Clock::recent) reading is below this. Zero on
    /// clocks without a coarse reading, so that every check is precise.
    hot_fresh_until: u64,
    token: Token,
    /// Before this tick the token is served with no further work.
    fresh_until: u64,
    /// Before this tick the token is served; after `fresh_until` a
    /// background refresh is started too.
    usable_until: u64,
    schedule: Schedule,
    /// The token's value in the store, if it is there.
    stored: Option<Arc<[u8]>>,
}

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

/// How long past its fetch deadline a flight may stay silent before its
/// waiters give up on it and start another.
const OVERDUE_GRACE: Duration = Duration::from_millis(250);

/// Far enough ahead to mean "never" without overflowing an `Instant`.
const FAR_FUTURE: Duration = Duration::from_secs(30 * 365 * 24 * 3600);

/// `at + by`, saturating at [`FAR_FUTURE`] instead of panicking.
fn later(at: Instant, by: Duration) -> Instant {
    at.checked_add(by)
        .or_else(|| at.checked_add(FAR_FUTURE))
        .unwrap_or(at)
}

fn ticks(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

/// How a flight ended.
enum Outcome {
    /// The fetch finished (or failed) and was recorded.
    Done(Result<Arc<Slot>, Error>),
    /// Nobody will finish it: its task was dropped, or it is overdue (its
    /// runtime stopped being polled, or the process forked).
    Abandoned,
}

/// One fetch in flight, shared by every waiter.
struct Flight {
    /// A process-unique number, by which its watchdog finds it without
    /// keeping it allocated once it has landed.
    id: u64,
    /// The process generation it started in; a forked child abandons it.
    generation: u64,
    /// When waiters stop waiting for it.
    overdue_at: Instant,
    /// The upkeep's watchdog that abandons the flight once overdue, cancelled
    /// when it lands. Without one (the clock has no upkeep thread), waiters
    /// enforce `overdue_at` themselves.
    watchdog: Option<Watchdog>,
    outcome: OnceLock<Outcome>,
    finished: Notify,
}

impl Flight {
    fn is_live(&self) -> bool {
        self.outcome.get().is_none() && self.generation == Clock::generation()
    }

    /// Publishes the outcome unless one is already published. Returns
    /// whether this call published it.
    fn finish(&self, outcome: Outcome) -> bool {
        let published = self.outcome.set(outcome).is_ok();
        if published {
            self.finished.notify_waiters();
        }
        published
    }

    async fn wait(&self) -> &Outcome {
        loop {
            // Checked before registering: a woken waiter leaves without
            // touching the waiter list again.
            if let Some(outcome) = self.outcome.get() {
                return outcome;
            }
            let notified = self.finished.notified();
            let mut notified = std::pin::pin!(notified);
            notified.as_mut().enable();
            if let Some(outcome) = self.outcome.get() {
                return outcome;
            }
            if self.generation != Clock::generation() {
                self.finish(Outcome::Abandoned);
                continue;
            }
            if self.watchdog.is_none() {
                if tokio::time::timeout_at(self.overdue_at, notified)
                    .await
                    .is_err()
                {
                    self.finish(Outcome::Abandoned);
                }
            } else {
                notified.await;
            }
        }
    }
}

#[derive(Default)]
struct FlightState {
    /// The fetch in flight, shared by every waiter.
    flight: Option<Arc<Flight>>,
    /// Consecutive failed fetches.
    failures: u32,
    last_error: Option<Error>,
    /// The end of the cool-down, in clock ticks.
    retry_not_before: Option<u64>,
    /// The hash of the token invalidated last, here or by another process,
    /// which no flight may adopt from the store again.
    invalidated: Option<Arc<str>>,
}

struct Shared {
    current: ArcSwapOption<Slot>,
    /// Whether a flight may be live, so the hot path never locks when one
    /// is. It may say `true` for a flight that was just abandoned; the
    /// locked check decides.
    flight_active: AtomicBool,
    /// No refresh ahead starts before this tick: the end of the cool-down,
    /// and one cool-down after the last refresh ahead started, whatever its
    /// answer.
    refresh_quiet_until: AtomicU64,
    state: Mutex<FlightState>,
    source: SharedTokenSource,
    client: Arc<str>,
    /// Shared by every cache with the default policy.
    policy: Arc<CachePolicy>,
    clock: Clock,
    /// Boxed: most caches have no store.
    store: Option<Box<StoreBinding>>,
    /// Recorded on the slow path only: never by a `get` served from memory.
    metrics: CacheMetrics,
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
/// * Given a [token store](crate::store) with
///   [`ManagedTokenBuilder::store`], a fetch first looks for a token there,
///   and one process of a fleet fetches while the others wait for its token.
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
    policy: Arc<CachePolicy>,
    clock: Clock,
    store: Option<SharedTokenStore>,
}

/// The default policy, shared by every cache that has it.
static DEFAULT_POLICY: LazyLock<Arc<CachePolicy>> = LazyLock::new(Arc::default);

impl ManagedTokenBuilder {
    /// The client's configured name, used in errors and logs. Defaults to
    /// the provider's name.
    pub fn name(mut self, name: impl Into<Arc<str>>) -> Self {
        self.client = Some(name.into());
        self
    }

    /// The refresh and retry policy. Many caches may share one
    /// `Arc<CachePolicy>`; a policy equal to the default shares the
    /// default's.
    pub fn policy(mut self, policy: impl Into<Arc<CachePolicy>>) -> Self {
        self.policy = policy.into();
        self
    }

    /// The clock; [`Clock::coarse`] unless set. Tests pass [`Clock::tokio`].
    pub fn clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// Shares tokens through `store`: a second cache level that outlives
    /// the process and is shared by every process using the same store.
    /// The store is read only when this cache has no token or its token is
    /// due for refresh; a fresh token is still served from memory.
    ///
    /// Tokens bound to a DPoP key of this process alone are never stored
    /// (see [`Dpop::key_shared`](crate::Dpop::key_shared)).
    pub fn store(mut self, store: SharedTokenStore) -> Self {
        self.store = Some(store);
        self
    }

    /// Builds the cache. No network I/O happens until the first `get`.
    pub fn build(self) -> ManagedToken {
        let client = self
            .client
            .unwrap_or_else(|| Arc::from(self.source.provider()));
        let store = self
            .store
            .and_then(|store| StoreBinding::new(store, &self.source, &client))
            .map(Box::new);
        let policy = if *self.policy == **DEFAULT_POLICY {
            Arc::clone(&DEFAULT_POLICY)
        } else {
            self.policy
        };
        let metrics = CacheMetrics::new(&client, self.source.provider());
        ManagedToken {
            shared: Arc::new(Shared {
                current: ArcSwapOption::empty(),
                flight_active: AtomicBool::new(false),
                refresh_quiet_until: AtomicU64::new(0),
                state: Mutex::new(FlightState::default()),
                source: self.source,
                client,
                policy,
                clock: self.clock,
                store,
                metrics,
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
            policy: Arc::clone(&DEFAULT_POLICY),
            clock: Clock::default(),
            store: None,
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

    /// The token store this cache shares tokens through, if it has one.
    /// `None` too when its tokens may not be shared (DPoP-bound to a key of
    /// this process only).
    pub fn store(&self) -> Option<&SharedTokenStore> {
        self.shared.store.as_ref().map(|binding| &binding.store)
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
        if let Some(slot) = guard.as_ref()
            && self.shared.clock.recent() < slot.hot_fresh_until
        {
            return Some(TokenGuard(guard));
        }
        self.shared.cached_not_fresh(guard)
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
    ///
    /// With a token store, the stored copy is deleted too (in the
    /// background) if the store still holds that very token, and every
    /// process sharing the store is told (by a hash of the token) to drop
    /// it, so the fleet stops sending it and a 401 storm across it leads
    /// to one fetch.
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
            self.shared.forget_stored(&slot.token, slot.stored.clone());
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

    #[inline(always)]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        if this.slow.is_none()
            && let Some(token) = this.cache.cached()
        {
            return Poll::Ready(Ok(token));
        }
        this.poll_slow(cx)
    }
}

impl<'a> Get<'a> {
    /// Waits for the shared fetch, starting to wait on the first call. Kept
    /// out of line so that the ready path stays a few instructions.
    #[cold]
    #[inline(never)]
    fn poll_slow(&mut self, cx: &mut Context<'_>) -> Poll<Result<TokenGuard, Error>> {
        let cache: &'a ManagedToken = self.cache;
        self.slow
            .get_or_insert_with(|| Box::pin(Shared::acquire(&cache.shared, Want::Usable)))
            .as_mut()
            .poll(cx)
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
            let cooling = match shared.lock_state().retry_not_before {
                Some(until) => later(
                    now,
                    Duration::from_nanos(until.saturating_sub(shared.clock.now())),
                ),
                None => now,
            };
            // Never spin: a token too short-lived to cache would otherwise
            // be fetched back to back.
            let spaced = last_run.map_or(now, |last| later(last, shared.policy.cooldown));
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

    /// The hot path's other cases: a token in its refresh window (served,
    /// and refreshed in the background), or none that may be served.
    #[cold]
    #[inline(never)]
    fn cached_not_fresh(self: &Arc<Self>, guard: Guard<Option<Arc<Slot>>>) -> Option<TokenGuard> {
        let slot = guard.as_ref()?;
        let now = self.clock.trusted_recent();
        if now >= slot.usable_until {
            return None;
        }
        if now >= slot.fresh_until {
            self.refresh_ahead(Arc::as_ptr(slot));
        }
        Some(TokenGuard(guard))
    }

    /// Starts the background refresh for the slot at `seen`, unless one is
    /// running, refreshes are spaced out, or the slot was replaced.
    fn refresh_ahead(self: &Arc<Self>, seen: *const Slot) {
        if self.flight_active.load(Ordering::Acquire)
            || self.clock.trusted_recent() < self.refresh_quiet_until.load(Ordering::Acquire)
        {
            return;
        }
        let mut state = self.lock_state();
        let still_current = self
            .current
            .load()
            .as_ref()
            .is_some_and(|slot| std::ptr::eq(Arc::as_ptr(slot), seen));
        if still_current {
            self.refresh_ahead_locked(&mut state, self.clock.now());
        }
    }

    /// Starts a background refresh unless a flight is live or refreshes
    /// are spaced out.
    fn refresh_ahead_locked(self: &Arc<Self>, state: &mut FlightState, now: u64) {
        let live = state.flight.as_ref().is_some_and(|flight| flight.is_live());
        if live || now < self.refresh_quiet_until.load(Ordering::Acquire) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        tracing::debug!(client = %self.client, "refresh window open; refreshing in the background");
        self.start_flight(state, &runtime, now);
        self.metrics.refresh_ahead();
        // Whatever this refresh brings, the next one waits a cool-down.
        self.refresh_quiet_until.fetch_max(
            now.saturating_add(ticks(self.policy.cooldown)),
            Ordering::AcqRel,
        );
    }

    /// The slow path: waits for a token, sharing one fetch with every caller.
    async fn acquire(self: &Arc<Self>, want: Want) -> Result<TokenGuard, Error> {
        let mut abandoned = 0;
        loop {
            let flight = {
                let mut state = self.lock_state();
                let now = self.clock.now();
                if want != Want::New
                    && let Some(slot) = self.current.load_full()
                {
                    let acceptable = match want {
                        Want::Usable => now < slot.usable_until,
                        Want::NotDue | Want::New => now < slot.fresh_until,
                    };
                    if acceptable {
                        if now >= slot.fresh_until {
                            // Reached when the coarse clock is not trusted
                            // (no upkeep yet, or just after a fork).
                            self.refresh_ahead_locked(&mut state, now);
                        }
                        return Ok(TokenGuard::owned(slot));
                    }
                }
                match state.flight.as_ref().filter(|flight| flight.is_live()) {
                    Some(flight) => Arc::clone(flight),
                    None => {
                        if let (Some(until), Some(error)) =
                            (state.retry_not_before, &state.last_error)
                            && now < until
                        {
                            return Err(error
                                .clone()
                                .cooling_down(Duration::from_nanos(until - now)));
                        }
                        let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
                            Error::config("authmux needs a tokio runtime to fetch tokens")
                                .with_client(&self.client)
                        })?;
                        self.start_flight(&mut state, &runtime, now)
                    }
                }
            };
            match flight.wait().await {
                Outcome::Done(Ok(slot)) => {
                    // Borrow the cached copy when it is this flight's token:
                    // no shared reference count to bump for each of many
                    // waiters.
                    let current = self.current.load();
                    return Ok(
                        if current
                            .as_ref()
                            .is_some_and(|current| Arc::ptr_eq(current, slot))
                        {
                            TokenGuard(current)
                        } else {
                            TokenGuard::owned(Arc::clone(slot))
                        },
                    );
                }
                Outcome::Done(Err(error)) => return Err(error.clone()),
                Outcome::Abandoned => {
                    abandoned += 1;
                    if abandoned > 1 {
                        return Err(self.abandoned_error());
                    }
                    tracing::warn!(
                        client = %self.client,
                        "the token fetch in flight was abandoned; starting another"
                    );
                }
            }
        }
    }

    fn abandoned_error(&self) -> Error {
        Error::new(
            ErrorKind::Timeout,
            format!(
                "the token fetch was abandoned: its runtime stopped running it, or it outlived the {} s fetch deadline",
                self.policy.retry.deadline.as_secs_f64()
            ),
        )
        .with_client(&self.client)
        .with_provider(self.source.provider())
    }

    /// Starts the one fetch, on its own task so that no caller can cancel
    /// it, with a watchdog that abandons it once overdue.
    fn start_flight(
        self: &Arc<Self>,
        state: &mut FlightState,
        runtime: &tokio::runtime::Handle,
        now: u64,
    ) -> Arc<Flight> {
        let overdue_after = self.policy.retry.deadline.saturating_add(OVERDUE_GRACE);
        let overdue_tick = now.saturating_add(ticks(overdue_after));
        static NEXT_FLIGHT_ID: AtomicU64 = AtomicU64::new(0);
        let id = NEXT_FLIGHT_ID.fetch_add(1, Ordering::Relaxed);
        let weak_shared = Arc::downgrade(self);
        let watchdog = self.clock.watchdog(
            overdue_tick,
            Box::new(move || {
                let Some(shared) = weak_shared.upgrade() else {
                    return;
                };
                let flight = shared
                    .lock_state()
                    .flight
                    .clone()
                    .filter(|flight| flight.id == id);
                if let Some(flight) = flight
                    && flight.finish(Outcome::Abandoned)
                {
                    tracing::warn!(client = %shared.client, "the token fetch is overdue; abandoning it");
                    shared.flight_active.store(false, Ordering::Release);
                }
            }),
        );
        let flight = Arc::new(Flight {
            id,
            generation: Clock::generation(),
            overdue_at: later(Instant::now(), overdue_after),
            watchdog,
            outcome: OnceLock::new(),
            finished: Notify::new(),
        });
        state.flight = Some(Arc::clone(&flight));
        self.flight_active.store(true, Ordering::Release);
        let span = tracing::info_span!(
            "authmux.fetch",
            client = %self.client,
            provider = %self.source.provider(),
        );
        let guard = FlightGuard {
            shared: Arc::clone(self),
            flight: Arc::clone(&flight),
            published: false,
        };
        runtime.spawn(guard.run().instrument(span));
        flight
    }

    /// One fetch: attempts with backoff until `deadline`.
    async fn fetch_with_retries(&self, deadline: Instant) -> Result<Token, Error> {
        let retry = &self.policy.retry;
        let mut attempt = 1;
        let timed_out = || {
            Error::new(
                ErrorKind::Timeout,
                format!(
                    "no token within the {} s fetch deadline",
                    retry.deadline.as_secs_f64()
                ),
            )
        };
        loop {
            // A source that reads its token endpoint from metadata does so
            // as an attempt of its own, counted apart from token requests.
            let discovered = if self.source.needs_discovery() {
                let outcome = tokio::time::timeout_at(deadline, self.source.discover())
                    .await
                    .unwrap_or_else(|_| Err(timed_out()));
                self.metrics.metadata_request(&outcome);
                outcome.map(drop)
            } else {
                Ok(())
            };
            let outcome = match discovered {
                Ok(()) => {
                    let stopwatch = Stopwatch::start();
                    let outcome = tokio::time::timeout_at(deadline, self.source.fetch_token())
                        .await
                        .unwrap_or_else(|_| Err(timed_out()));
                    self.metrics.token_request(stopwatch, &outcome);
                    outcome
                }
                Err(error) => Err(error),
            };
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
                .max(self.server_wait(&error));
            if later(Instant::now(), delay) >= deadline {
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

    /// The part of the server's requested wait that is honoured.
    fn server_wait(&self, error: &Error) -> Duration {
        error
            .retry_after()
            .map_or(Duration::ZERO, |wait| self.policy.server_wait(wait))
    }

    /// Records a fetch's outcome in the cache and the cool-down state.
    fn record(
        &self,
        flight: &Arc<Flight>,
        outcome: Result<Obtained, Error>,
    ) -> Result<Arc<Slot>, Error> {
        let outcome = outcome.and_then(|obtained| {
            if obtained.token.is_expired() {
                Err(Error::new(
                    ErrorKind::InvalidResponse,
                    "the token had already expired when it arrived",
                )
                .with_client(&self.client)
                .with_provider(self.source.provider()))
            } else {
                Ok(obtained)
            }
        });
        let mut state = self.lock_state();
        let now = self.clock.now();
        let latest = state
            .flight
            .as_ref()
            .is_some_and(|current| Arc::ptr_eq(current, flight));
        match outcome {
            Ok(Obtained { token, stored }) => {
                let schedule = self.policy.schedule(&token, rand::random::<f64>());
                let fresh_until = self.clock.deadline(schedule.refresh_at);
                let slot = Arc::new(Slot {
                    hot_fresh_until: self.clock.hot_deadline(fresh_until),
                    fresh_until,
                    usable_until: self.clock.deadline(schedule.stale_at),
                    schedule,
                    token,
                    stored,
                });
                // A flight that was given up on may still land; it must not
                // replace a token that lasts longer.
                let outlived = self
                    .current
                    .load()
                    .as_ref()
                    .is_some_and(|current| current.schedule.expires_at > schedule.expires_at);
                if now >= slot.usable_until {
                    tracing::debug!("token too short-lived to cache; handed to waiters only");
                } else if latest || !outlived {
                    self.clock.wake_at(slot.fresh_until);
                    self.clock.wake_at(slot.usable_until);
                    self.current.store(Some(Arc::clone(&slot)));
                    self.metrics.installed(slot.token.expires_in());
                    tracing::debug!(
                        lifetime_s = slot.token.lifetime().as_secs(),
                        refresh_in_s = schedule
                            .refresh_at
                            .saturating_duration_since(Instant::now())
                            .as_secs(),
                        "token cached"
                    );
                }
                if latest {
                    state.failures = 0;
                    state.last_error = None;
                    state.retry_not_before = None;
                }
                Ok(slot)
            }
            Err(error) => {
                if latest {
                    state.failures = state.failures.saturating_add(1);
                    let pause = self
                        .policy
                        .cooldown_for(state.failures)
                        .max(self.server_wait(&error));
                    let until = now.saturating_add(ticks(pause));
                    state.retry_not_before = Some(until);
                    state.last_error = Some(error.clone());
                    self.refresh_quiet_until.fetch_max(until, Ordering::AcqRel);
                    self.clock.wake_at(until);
                    self.metrics.cooldown();
                    tracing::warn!(
                        error = %error,
                        failures = state.failures,
                        cooldown_ms = pause.as_millis() as u64,
                        "token fetch failed"
                    );
                }
                Err(error)
            }
        }
    }

    /// Clears the flight if it is still the current one.
    fn clear_flight(&self, flight: &Arc<Flight>) {
        let mut state = self.lock_state();
        if state
            .flight
            .as_ref()
            .is_some_and(|current| Arc::ptr_eq(current, flight))
        {
            state.flight = None;
            self.flight_active.store(false, Ordering::Release);
        }
    }
}

/// Owns a flight: runs the fetch, records and publishes the result, and
/// frees the cache for the next flight even if the task is dropped.
struct FlightGuard {
    shared: Arc<Shared>,
    flight: Arc<Flight>,
    published: bool,
}

impl FlightGuard {
    async fn run(mut self) {
        let deadline = later(Instant::now(), self.shared.policy.retry.deadline);
        let outcome = AssertUnwindSafe(self.shared.obtain(deadline))
            .catch_unwind()
            .await
            .unwrap_or_else(|_| {
                Err(Error::new(
                    ErrorKind::Internal,
                    "the token source panicked while fetching",
                )
                .with_client(&self.shared.client)
                .with_provider(self.shared.source.provider()))
            });
        let result = self.shared.record(&self.flight, outcome);
        self.shared.clear_flight(&self.flight);
        self.published = true;
        self.flight.finish(Outcome::Done(result));
        if let Some(watchdog) = &self.flight.watchdog {
            watchdog.cancel();
        }
    }
}

impl Drop for FlightGuard {
    fn drop(&mut self) {
        if !self.published {
            // Dropped mid-fetch (its runtime shut down): free the cache for
            // the next caller and release every waiter.
            self.shared.clear_flight(&self.flight);
            self.flight.finish(Outcome::Abandoned);
            if let Some(watchdog) = &self.flight.watchdog {
                watchdog.cancel();
            }
        }
    }
}

/// A token borrowed from a [`ManagedToken`]. Dereferences to [`Token`].
///
/// Holding it is cheap and keeps the token alive even if the cache moves on;
/// for long-term storage, call [`into_token`](Self::into_token).
pub struct TokenGuard(Guard<Option<Arc<Slot>>>);

impl TokenGuard {
    /// A guard that owns a reference to `slot` rather than borrowing the
    /// cache's.
    fn owned(slot: Arc<Slot>) -> Self {
        Self(Guard::from_inner(Some(slot)))
    }

    /// An owned handle to the token (one reference-count increment).
    pub fn into_token(self) -> Token {
        self.deref().clone()
    }
}

impl Deref for TokenGuard {
    type Target = Token;

    #[inline(always)]
    fn deref(&self) -> &Token {
        match self.0.as_ref() {
            Some(slot) => &slot.token,
            None => unreachable!("a token guard always holds a slot"),
        }
    }
}

impl fmt::Debug for TokenGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.deref().fmt(f)
    }
}

/// A cache serves its access tokens to a request that carries them, such
/// as a token exchange whose `subject_token` is another client's token:
/// each request takes the token the cache serves then, so a refreshed
/// token is the one sent.
#[async_trait::async_trait]
impl crate::wire::FreshValue for ManagedToken {
    async fn value(&self) -> Result<secrecy::SecretString, Error> {
        Ok(self.get().await?.secret().clone())
    }

    fn describe(&self) -> String {
        format!("client {}", self.name())
    }

    /// The identity of the tokens served: the provider, endpoint and
    /// every field, and those learned once the credential is read.
    async fn identity_fields(&self) -> Result<Vec<(String, String)>, Error> {
        let mut fields = vec![("identity".to_owned(), self.source().identity().to_string())];
        for (key, value) in self.source().identity_fields().await? {
            fields.push((format!("identity.{key}"), value));
        }
        Ok(fields)
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
