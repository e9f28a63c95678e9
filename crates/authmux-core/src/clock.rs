//! Where the cache reads "now" from.
//!
//! The cache hot path compares a `u64` deadline against a `u64` "now". Reading
//! a real clock costs tens of nanoseconds, which is more than the whole hot-path
//! budget, so production caches read a coarse clock: an atomic that a single
//! background thread refreshes every [`COARSE_TICK`]. Deadlines are shifted
//! earlier by [`COARSE_SLACK`] so that the coarse clock's lag can never let a
//! token be served past its expiry margin.
//!
//! Tests use [`Clock::tokio`], which follows tokio's paused time exactly.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

/// How often the coarse clock's background thread updates the shared "now".
pub const COARSE_TICK: Duration = Duration::from_millis(2);

/// How much earlier than computed a coarse-clock deadline is placed, to cover
/// the clock's lag behind real time (one tick plus scheduling delays).
pub const COARSE_SLACK: Duration = Duration::from_millis(50);

/// Nanoseconds since [`coarse_base`], refreshed by the upkeep thread.
static COARSE_NOW: AtomicU64 = AtomicU64::new(0);
/// The base instant, and whether the upkeep thread is running.
static COARSE_BASE: OnceLock<(std::time::Instant, bool)> = OnceLock::new();

fn coarse_base() -> (std::time::Instant, bool) {
    *COARSE_BASE.get_or_init(|| {
        let base = std::time::Instant::now();
        COARSE_NOW.store(nanos(base.elapsed()), Ordering::Relaxed);
        let spawned = std::thread::Builder::new()
            .name("authmux-clock".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(COARSE_TICK);
                    COARSE_NOW.store(nanos(base.elapsed()), Ordering::Relaxed);
                }
            });
        if let Err(error) = &spawned {
            tracing::warn!(%error, "cannot start the coarse clock thread; reading the system clock instead");
        }
        (base, spawned.is_ok())
    })
}

fn nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

/// The time source of a [`ManagedToken`](crate::ManagedToken).
///
/// [`Clock::coarse`] (the default) is for production. [`Clock::tokio`] reads
/// `tokio::time::Instant::now()` on every check, so it follows
/// `tokio::time::pause` and `advance`; use it in tests.
#[derive(Clone, Debug)]
pub struct Clock {
    kind: ClockKind,
}

#[derive(Clone, Copy, Debug)]
enum ClockKind {
    Coarse {
        base: std::time::Instant,
    },
    /// The coarse clock's thread could not start: read the system clock.
    Precise {
        base: std::time::Instant,
    },
    Tokio {
        base: Instant,
    },
}

impl Default for Clock {
    fn default() -> Self {
        Self::coarse()
    }
}

impl Clock {
    /// The production clock: a shared atomic that one background thread
    /// updates every [`COARSE_TICK`]. Reading it is a single relaxed load.
    pub fn coarse() -> Self {
        let (base, running) = coarse_base();
        let kind = if running {
            ClockKind::Coarse { base }
        } else {
            ClockKind::Precise { base }
        };
        Self { kind }
    }

    /// A precise clock on tokio's time, which tests can pause and advance.
    pub fn tokio() -> Self {
        Self {
            kind: ClockKind::Tokio {
                base: Instant::now(),
            },
        }
    }

    /// A recent reading in ticks (nanoseconds since this clock's base).
    #[inline]
    pub(crate) fn recent(&self) -> u64 {
        match self.kind {
            ClockKind::Coarse { .. } => COARSE_NOW.load(Ordering::Relaxed),
            ClockKind::Precise { base } => nanos(base.elapsed()),
            ClockKind::Tokio { base } => nanos(Instant::now().saturating_duration_since(base)),
        }
    }

    /// The tick at which `deadline` falls, shifted earlier by the clock's lag.
    pub(crate) fn deadline(&self, deadline: Instant) -> u64 {
        match self.kind {
            ClockKind::Coarse { base } | ClockKind::Precise { base } => {
                let now = Instant::now();
                let precise = nanos(base.elapsed());
                let ticks = if deadline >= now {
                    precise.saturating_add(nanos(deadline - now))
                } else {
                    precise.saturating_sub(nanos(now - deadline))
                };
                ticks.saturating_sub(nanos(COARSE_SLACK))
            }
            ClockKind::Tokio { base } => nanos(deadline.saturating_duration_since(base)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn tokio_clock_follows_paused_time() {
        let clock = Clock::tokio();
        let start = clock.recent();
        tokio::time::advance(Duration::from_secs(3600)).await;
        assert_eq!(clock.recent() - start, 3600 * 1_000_000_000);
        let deadline = Instant::now() + Duration::from_secs(5);
        assert_eq!(clock.deadline(deadline), clock.recent() + 5_000_000_000);
    }

    #[test]
    fn coarse_clock_advances_and_deadlines_carry_slack() {
        let clock = Clock::coarse();
        let first = clock.recent();
        // A real thread drives this clock, so paused time cannot stand in:
        // poll until it moves, for at most five seconds.
        let moved = (0..5_000).any(|_| {
            std::thread::sleep(Duration::from_millis(1));
            clock.recent() > first
        });
        assert!(moved, "the upkeep thread must advance the reading");
        let now = clock.recent();
        let deadline = clock.deadline(Instant::now() + Duration::from_secs(10));
        assert!(
            deadline < now + 10_000_000_000,
            "deadline must be pulled earlier"
        );
        assert!(deadline > now + 9_000_000_000);
    }
}
