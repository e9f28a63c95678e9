//! Where the cache reads "now" from.
//!
//! The cache hot path compares a `u64` deadline against a `u64` "now".
//! Reading a real clock costs tens of nanoseconds, more than the whole
//! hot-path budget, so production caches read a coarse clock: one shared
//! atomic.
//!
//! That atomic does not tick. Between two cache deadlines no comparison can
//! change its answer, so one background thread (the upkeep) moves "now"
//! forward only when it matters:
//!
//! * at every deadline a cache registers (a token due for refresh, a token
//!   no longer served, the end of a cool-down, an overdue fetch);
//! * at least every [`MAX_IDLE`], to notice time spent in system suspend;
//! * never once the last coarse [`Clock`] is dropped: the thread exits, and
//!   an idle process with no cache costs nothing.
//!
//! Deadlines are read on a clock that counts suspended time
//! (`CLOCK_BOOTTIME` on Linux and Android; elsewhere the monotonic clock).
//! After a laptop or VM sleeps for two hours, a one-hour token is stale as
//! soon as the upkeep wakes, at most [`MAX_IDLE`] after resume.
//!
//! A forked child has no upkeep thread. A `pthread_atfork` handler marks
//! "now" as untrusted in the child, so every read falls to the slow path,
//! which reads the real clock and restarts the upkeep. The same untrusted
//! value is used whenever no upkeep runs (before the first deadline, or if
//! the thread cannot be started), so the coarse clock is never trusted
//! without a thread behind it.
//!
//! Tests use [`Clock::tokio`], which follows tokio's paused time exactly.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use tokio::time::Instant;

/// The longest the upkeep sleeps while caches are alive, so that time spent
/// in system suspend is noticed within this long of resuming.
pub const MAX_IDLE: Duration = Duration::from_secs(1);

/// How much earlier than computed a coarse-clock deadline is placed, to
/// cover the upkeep thread's wake-up latency.
pub const COARSE_SLACK: Duration = Duration::from_millis(50);

/// The grain of the upkeep's wake-ups, in ticks (2^24 ns, about 17 ms): a
/// deadline is kept rounded up to it, so that caches whose deadlines fall
/// in the same grain share one entry. Well inside [`COARSE_SLACK`].
const GRAIN: u64 = 1 << 24;

/// "Now" in ticks (nanoseconds on the boot clock), as last published by the
/// upkeep; [`UNTRUSTED`] when no upkeep runs for this process.
static NOW: AtomicU64 = AtomicU64::new(UNTRUSTED);
/// A reading that every deadline compares below, sending every read to the
/// slow path.
const UNTRUSTED: u64 = u64::MAX;
/// Live [`CoarseUser`]s (one while any coarse clock is alive); the upkeep
/// exits when this reaches zero.
static USERS: AtomicUsize = AtomicUsize::new(0);
/// How many times this process's lineage has forked into this process.
static FORKS: AtomicU64 = AtomicU64::new(0);
/// The upkeep of the current process generation.
static UPKEEP: ArcSwapOption<Upkeep> = ArcSwapOption::const_empty();

/// The time source of a [`ManagedToken`](crate::ManagedToken).
///
/// [`Clock::coarse`] (the default) is for production. [`Clock::tokio`] reads
/// `tokio::time::Instant::now()` on every check, so it follows
/// `tokio::time::pause` and `advance`; use it in tests.
#[derive(Clone, Debug)]
pub struct Clock {
    kind: ClockKind,
}

#[derive(Clone, Debug)]
enum ClockKind {
    Coarse(#[allow(dead_code)] Arc<CoarseUser>),
    Tokio { base: Instant },
}

/// Keeps the upkeep allowed to run while any coarse clock is alive.
#[derive(Debug)]
struct CoarseUser;

impl CoarseUser {
    /// The live user, shared by every coarse clock: one allocation for the
    /// process rather than one per cache. Never waits: when another thread
    /// holds the shared slot (or held it when the process forked), this
    /// clock gets a user of its own, which is as correct.
    fn new() -> Arc<Self> {
        static SHARED: Mutex<Weak<CoarseUser>> = Mutex::new(Weak::new());
        let mut shared = match SHARED.try_lock() {
            Ok(shared) => Some(shared),
            Err(std::sync::TryLockError::Poisoned(poisoned)) => Some(poisoned.into_inner()),
            Err(std::sync::TryLockError::WouldBlock) => None,
        };
        if let Some(user) = shared.as_ref().and_then(|shared| shared.upgrade()) {
            return user;
        }
        fork::watch();
        USERS.fetch_add(1, Ordering::AcqRel);
        let user = Arc::new(Self);
        if let Some(shared) = shared.as_mut() {
            **shared = Arc::downgrade(&user);
        }
        user
    }
}

impl Drop for CoarseUser {
    fn drop(&mut self) {
        if USERS.fetch_sub(1, Ordering::AcqRel) == 1
            && let Some(upkeep) = UPKEEP.load_full()
        {
            // Let the thread notice at once that it has nothing to do.
            let _state = upkeep.lock();
            upkeep.wake.notify_all();
        }
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::coarse()
    }
}

impl Clock {
    /// The production clock: a shared atomic that the upkeep thread moves
    /// forward at the deadlines that matter. Reading it is a single relaxed
    /// load.
    pub fn coarse() -> Self {
        Self {
            kind: ClockKind::Coarse(CoarseUser::new()),
        }
    }

    /// A precise clock on tokio's time, which tests can pause and advance.
    pub fn tokio() -> Self {
        Self {
            kind: ClockKind::Tokio {
                base: Instant::now(),
            },
        }
    }

    /// The coarse reading in ticks, for the hot path: one relaxed load, no
    /// branch. It lags behind real time, but never past a deadline passed
    /// to [`wake_at`](Self::wake_at). It may be [`UNTRUSTED`], which
    /// compares past every deadline; callers then take
    /// [`trusted_recent`](Self::trusted_recent). Only meaningful against
    /// [`hot_deadline`](Self::hot_deadline)s of this clock.
    #[inline(always)]
    pub(crate) fn recent(&self) -> u64 {
        NOW.load(Ordering::Relaxed)
    }

    /// The deadline the hot path compares [`recent`](Self::recent) with:
    /// `tick` on the coarse clock; zero on the tokio clock, which has no
    /// coarse reading, so that its every check is precise.
    pub(crate) fn hot_deadline(&self, tick: u64) -> u64 {
        match self.kind {
            ClockKind::Coarse(_) => tick,
            ClockKind::Tokio { .. } => 0,
        }
    }

    /// [`recent`](Self::recent) when it can be trusted, otherwise the
    /// precise reading, for the hot path's cold branches.
    pub(crate) fn trusted_recent(&self) -> u64 {
        match (&self.kind, self.recent()) {
            (ClockKind::Coarse(_), recent) if recent != UNTRUSTED => recent,
            _ => self.now(),
        }
    }

    /// The precise reading in ticks, for the slow path. On the coarse clock
    /// this also restarts the upkeep if it is missing (after a fork).
    pub(crate) fn now(&self) -> u64 {
        match &self.kind {
            ClockKind::Coarse(_) => {
                if NOW.load(Ordering::Acquire) == UNTRUSTED {
                    let upkeep = Upkeep::current();
                    upkeep.ensure_running(&mut upkeep.lock());
                }
                boot_ticks()
            }
            ClockKind::Tokio { base } => tokio_ticks(*base),
        }
    }

    /// The tick at which `deadline` falls, shifted earlier by the coarse
    /// clock's wake-up latency.
    pub(crate) fn deadline(&self, deadline: Instant) -> u64 {
        match &self.kind {
            ClockKind::Coarse(_) => {
                let now = Instant::now();
                let ticks = if deadline >= now {
                    boot_ticks().saturating_add(nanos(deadline - now))
                } else {
                    boot_ticks().saturating_sub(nanos(now - deadline))
                };
                ticks.saturating_sub(nanos(COARSE_SLACK))
            }
            ClockKind::Tokio { base } => nanos(deadline.saturating_duration_since(*base)),
        }
    }

    /// Makes [`recent`](Self::recent) reach `tick` no later than real time
    /// does (plus the upkeep's wake-up latency and at most one [`GRAIN`]).
    pub(crate) fn wake_at(&self, tick: u64) {
        if let ClockKind::Coarse(_) = self.kind {
            Upkeep::current().register(tick, None);
        }
    }

    /// Runs `on_due` on the upkeep thread at `tick`, whatever any tokio
    /// runtime is doing, unless [cancelled](Watchdog::cancel) first.
    /// Returns `None` if this clock has no upkeep (the tokio clock); the
    /// caller must then enforce the deadline itself.
    pub(crate) fn watchdog(&self, tick: u64, on_due: Box<dyn FnOnce() + Send>) -> Option<Watchdog> {
        match self.kind {
            ClockKind::Coarse(_) => {
                let upkeep = Upkeep::current();
                let key = upkeep.register(tick, Some(on_due))?;
                Some(Watchdog { upkeep, key })
            }
            ClockKind::Tokio { .. } => None,
        }
    }

    /// The process generation: it changes in a forked child.
    pub(crate) fn generation() -> u64 {
        FORKS.load(Ordering::Acquire)
    }
}

fn tokio_ticks(base: Instant) -> u64 {
    nanos(Instant::now().saturating_duration_since(base))
}

fn nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

/// Nanoseconds on a clock that keeps counting while the system is suspended.
#[cfg(any(target_os = "linux", target_os = "android"))]
fn boot_ticks() -> u64 {
    let now = rustix::time::clock_gettime(rustix::time::ClockId::Boottime);
    u64::try_from(now.tv_sec)
        .unwrap_or(0)
        .saturating_mul(1_000_000_000)
        .saturating_add(u64::try_from(now.tv_nsec).unwrap_or(0))
        .saturating_add(tests::suspended())
        // Keep clear of the untrusted marker.
        .min(UNTRUSTED - 1)
}

/// Nanoseconds on the monotonic clock (no boot clock on this platform).
#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn boot_ticks() -> u64 {
    static BASE: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    nanos(BASE.get_or_init(std::time::Instant::now).elapsed())
        .saturating_add(tests::suspended())
        .min(UNTRUSTED - 1)
}

/// A registered [`Clock::watchdog`], which the caller cancels once its
/// deadline no longer matters (the fetch landed), so that it holds no
/// memory until the deadline.
pub(crate) struct Watchdog {
    upkeep: Arc<Upkeep>,
    key: (u64, u64),
}

impl Watchdog {
    /// Forgets the watchdog unless it has run. In a forked child the
    /// parent's upkeep is left alone: its lock may never be released there,
    /// and the child's upkeep never had the watchdog.
    pub(crate) fn cancel(&self) {
        if self.upkeep.generation == Clock::generation() {
            self.upkeep.lock().watchdogs.remove(&self.key);
        }
    }
}

/// The upkeep of one process generation: the deadlines to wake at, and
/// whether its thread runs.
struct Upkeep {
    generation: u64,
    state: Mutex<UpkeepState>,
    wake: Condvar,
}

#[derive(Default)]
struct UpkeepState {
    /// Ticks to publish "now" at, each rounded up to a [`GRAIN`]. A set:
    /// one entry serves every cache with a deadline in the same grain.
    ticks: BTreeSet<u64>,
    /// What to run, by tick and registration order.
    watchdogs: BTreeMap<(u64, u64), Box<dyn FnOnce() + Send>>,
    running: bool,
    registered: u64,
}

impl UpkeepState {
    /// The earliest tick the upkeep must wake at, if any.
    fn earliest(&self) -> Option<u64> {
        let tick = self.ticks.first().copied();
        let watchdog = self.watchdogs.first_key_value().map(|((at, _), _)| *at);
        match (tick, watchdog) {
            (Some(tick), Some(watchdog)) => Some(tick.min(watchdog)),
            (tick, watchdog) => tick.or(watchdog),
        }
    }
}

impl Upkeep {
    /// The upkeep of this process generation, created on first use. In a
    /// forked child this is a new one that inherits the parent's deadlines
    /// (not its watchdogs, whose fetches do not exist in the child).
    fn current() -> Arc<Self> {
        let generation = FORKS.load(Ordering::Acquire);
        loop {
            let current = UPKEEP.load_full();
            if let Some(upkeep) = &current
                && upkeep.generation == generation
            {
                return Arc::clone(upkeep);
            }
            let mut state = UpkeepState::default();
            // The parent's thread may have held the lock when the process
            // forked; then it never unlocks, and the deadlines are lost.
            if let Some(parent) = &current
                && let Ok(parent) = parent.state.try_lock()
            {
                state.ticks = parent.ticks.clone();
                state
                    .ticks
                    .extend(parent.watchdogs.keys().map(|(at, _)| *at));
                state.registered = parent.registered;
            }
            let fresh = Arc::new(Self {
                generation,
                state: Mutex::new(state),
                wake: Condvar::new(),
            });
            let previous = UPKEEP.compare_and_swap(&current, Some(Arc::clone(&fresh)));
            let swapped = match (&*previous, &current) {
                (Some(previous), Some(current)) => Arc::ptr_eq(previous, current),
                (None, None) => true,
                _ => false,
            };
            if swapped {
                return fresh;
            }
        }
    }

    fn lock(&self) -> MutexGuard<'_, UpkeepState> {
        // Every update is a whole step; a panic elsewhere leaves it sound.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Adds a deadline, waking or starting the thread if it must wake
    /// earlier. Returns the watchdog's key (a plain tick's is its grain) if
    /// a thread will honour it.
    fn register(
        self: &Arc<Self>,
        at: u64,
        on_due: Option<Box<dyn FnOnce() + Send>>,
    ) -> Option<(u64, u64)> {
        let mut state = self.lock();
        let earliest = state.earliest();
        let key = match on_due {
            Some(on_due) => {
                state.registered = state.registered.wrapping_add(1);
                let key = (at, state.registered);
                state.watchdogs.insert(key, on_due);
                key
            }
            None => {
                let grain = at.div_ceil(GRAIN).saturating_mul(GRAIN).max(at);
                state.ticks.insert(grain);
                (grain, 0)
            }
        };
        if !self.ensure_running(&mut state) {
            return None;
        }
        // Publish a current reading now: a deadline registered in the past
        // must not wait for the thread to be seen.
        NOW.fetch_max(boot_ticks(), Ordering::AcqRel);
        if earliest.is_none_or(|earliest| key.0 < earliest) {
            self.wake.notify_all();
        }
        Some(key)
    }

    /// Starts the thread unless it runs. Returns whether it runs.
    fn ensure_running(self: &Arc<Self>, state: &mut UpkeepState) -> bool {
        if state.running {
            return true;
        }
        let upkeep = Arc::clone(self);
        let spawned = std::thread::Builder::new()
            .name("authmux-clock".into())
            .spawn(move || upkeep.run());
        match spawned {
            Ok(_) => state.running = true,
            Err(error) => tracing::warn!(
                %error,
                "cannot start the clock thread; every token check reads the system clock instead"
            ),
        }
        state.running
    }

    fn run(self: Arc<Self>) {
        let mut state = self.lock();
        loop {
            let now = boot_ticks();
            NOW.store(now, Ordering::Release);
            while state.ticks.first().is_some_and(|&tick| tick <= now) {
                state.ticks.pop_first();
            }
            let mut due = Vec::new();
            while let Some(entry) = state.watchdogs.first_entry()
                && entry.key().0 <= now
            {
                due.push(entry.remove());
            }
            if USERS.load(Ordering::Acquire) == 0 || self.generation != Clock::generation() {
                state.ticks.clear();
                state.watchdogs.clear();
                state.running = false;
                NOW.store(UNTRUSTED, Ordering::Release);
                return;
            }
            if !due.is_empty() {
                drop(state);
                for on_due in due {
                    on_due();
                }
                state = self.lock();
                continue;
            }
            let wait = state.earliest().map_or(MAX_IDLE, |next| {
                Duration::from_nanos(next - now).min(MAX_IDLE)
            });
            state = self
                .wake
                .wait_timeout(state, wait)
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .0;
        }
    }
}

#[cfg(unix)]
mod fork {
    //! Marks the coarse clock untrusted in a forked child, whose upkeep
    //! thread did not survive the fork.
    #![allow(unsafe_code)]

    use std::sync::Once;
    use std::sync::atomic::Ordering;

    extern "C" fn in_child() {
        // Only async-signal-safe work here: two atomic stores.
        super::FORKS.fetch_add(1, Ordering::AcqRel);
        super::NOW.store(super::UNTRUSTED, Ordering::Release);
    }

    pub(super) fn watch() {
        static REGISTERED: Once = Once::new();
        REGISTERED.call_once(|| {
            // SAFETY: `in_child` is an `extern "C" fn()` that lives for the
            // whole program and only performs atomic stores, which are
            // async-signal-safe as a fork handler requires.
            let status = unsafe { libc::pthread_atfork(None, None, Some(in_child)) };
            if status != 0 {
                tracing::warn!(
                    status,
                    "cannot watch for fork(); a forked child keeps a frozen clock"
                );
            }
        });
    }
}

#[cfg(not(unix))]
mod fork {
    pub(super) fn watch() {}
}

#[cfg(not(test))]
mod tests {
    /// Simulated suspended time, for the suspend test; none outside tests.
    #[inline(always)]
    pub(super) fn suspended() -> u64 {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Error, ManagedToken, Token, TokenIdentity, TokenSource};

    static SUSPENDED: AtomicU64 = AtomicU64::new(0);
    /// The coarse clock is process-wide: its tests take turns.
    static SERIAL: Mutex<()> = Mutex::new(());

    pub(super) fn suspended() -> u64 {
        SUSPENDED.load(Ordering::Relaxed)
    }

    fn serial() -> MutexGuard<'static, ()> {
        SERIAL
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    #[tokio::test(start_paused = true)]
    async fn tokio_clock_follows_paused_time() {
        let clock = Clock::tokio();
        assert_eq!(
            clock.hot_deadline(u64::MAX - 1),
            0,
            "the hot path always checks precisely"
        );
        let start = clock.now();
        tokio::time::advance(Duration::from_secs(3600)).await;
        assert_eq!(clock.now() - start, 3600 * 1_000_000_000);
        assert_eq!(clock.trusted_recent(), clock.now());
        let deadline = Instant::now() + Duration::from_secs(5);
        assert_eq!(clock.deadline(deadline), clock.now() + 5_000_000_000);
    }

    #[test]
    fn coarse_deadlines_carry_slack_and_reach_the_reading() {
        let _serial = serial();
        let clock = Clock::coarse();
        let now = clock.now();
        let deadline = clock.deadline(Instant::now() + Duration::from_secs(10));
        assert!(deadline < now + 10_000_000_000, "pulled earlier");
        assert!(deadline > now + 9_000_000_000);
        // A deadline a few milliseconds away: the reading must pass it
        // without any other activity. Bounded poll, since a real thread
        // drives this clock.
        let soon = clock.deadline(Instant::now() + Duration::from_millis(60));
        clock.wake_at(soon);
        let reached = (0..5_000).any(|_| {
            std::thread::sleep(Duration::from_millis(1));
            let recent = clock.recent();
            recent >= soon && recent != UNTRUSTED
        });
        assert!(reached, "the upkeep must wake at a registered deadline");
    }

    #[test]
    fn deadlines_in_one_grain_share_an_entry() {
        let _serial = serial();
        let _clock = Clock::coarse();
        let upkeep = Upkeep::current();
        let start = (boot_ticks() / GRAIN + 1_000) * GRAIN + 1;
        let first = upkeep.register(start, None).expect("an upkeep runs");
        let second = upkeep
            .register(start + GRAIN / 2, None)
            .expect("an upkeep runs");
        assert_eq!(first, second, "one entry for the grain");
        assert!(first.0 >= start + GRAIN / 2, "rounded up, never earlier");
        let next = upkeep
            .register(start + GRAIN, None)
            .expect("an upkeep runs");
        assert_ne!(next, first, "the next grain has its own");
    }

    #[test]
    fn a_cancelled_watchdog_is_forgotten() {
        let _serial = serial();
        let clock = Clock::coarse();
        let far = boot_ticks() + 3_600_000_000_000;
        let watchdog = clock
            .watchdog(far, Box::new(|| panic!("cancelled")))
            .expect("the coarse clock has an upkeep");
        assert!(watchdog.upkeep.lock().watchdogs.contains_key(&watchdog.key));
        watchdog.cancel();
        assert!(!watchdog.upkeep.lock().watchdogs.contains_key(&watchdog.key));
    }

    struct HourTokens;

    #[async_trait::async_trait]
    impl TokenSource for HourTokens {
        fn provider(&self) -> &str {
            "memory"
        }
        fn identity(&self) -> TokenIdentity {
            TokenIdentity::new("memory", "memory://")
        }
        async fn fetch_token(&self) -> Result<Token, Error> {
            Token::builder("t")
                .lifetime(Duration::from_secs(3600))
                .build()
        }
    }

    #[test]
    fn time_spent_in_suspend_counts_towards_expiry() {
        let _serial = serial();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let cache = ManagedToken::builder(HourTokens)
            .clock(Clock::coarse())
            .build();
        runtime.block_on(cache.get()).expect("token");
        assert!(cache.cached().is_some());
        // Two hours asleep: the boot clock moves on, the monotonic clock
        // (and so the token's own `Instant`s) does not.
        SUSPENDED.fetch_add(2 * 3600 * 1_000_000_000, Ordering::Relaxed);
        let noticed = (0..3_000).any(|_| {
            std::thread::sleep(Duration::from_millis(1));
            cache.cached().is_none()
        });
        assert!(
            noticed,
            "the upkeep must notice the suspend within MAX_IDLE"
        );
        assert!(cache.schedule().expect("cached").expires_at > Instant::now());
    }
}
