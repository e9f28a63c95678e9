//! When to refresh, when to stop serving, and how to retry.

use std::time::Duration;

use serde::Deserialize;
use tokio::time::Instant;

use crate::token::Token;

/// How a [`ManagedToken`](crate::ManagedToken) times refreshes and retries.
///
/// Deserializes from humantime strings (`expiry_margin = "10s"`); every
/// field has a default.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct CachePolicy {
    /// The smallest refresh window: a token is refreshed in the background
    /// once it has less than the larger of this and
    /// [`refresh_fraction`](Self::refresh_fraction) of its lifetime left.
    /// The window never exceeds half the lifetime. Default 60 s.
    #[serde(with = "humantime_serde")]
    pub refresh_window: Duration,
    /// The refresh window as a fraction of the token's lifetime. Default 0.1.
    pub refresh_fraction: f64,
    /// Each token's refresh starts earlier by a random amount up to this
    /// fraction of its window, so that a fleet does not refresh in the same
    /// second. Default 0.1.
    pub jitter_fraction: f64,
    /// A token is never served with less than this left; callers then wait
    /// for a new one. Capped at half the token's lifetime. Default 10 s.
    #[serde(with = "humantime_serde")]
    pub expiry_margin: Duration,
    /// Retries within one fetch.
    pub retry: RetryPolicy,
    /// The first pause after a failed fetch, doubled after each further
    /// failure up to [`cooldown_max`](Self::cooldown_max). Default 1 s.
    #[serde(with = "humantime_serde")]
    pub cooldown: Duration,
    /// The longest pause after failed fetches. Default 30 s.
    #[serde(with = "humantime_serde")]
    pub cooldown_max: Duration,
    /// The longest wait taken from a server's `Retry-After` (or a provider's
    /// rate-limit reset), between retries and as a cool-down. A server that
    /// asks for 30 days does not lock the client out for 30 days. Defaults
    /// to [`cooldown_max`](Self::cooldown_max).
    #[serde(with = "humantime_serde")]
    pub max_retry_after: Option<Duration>,
}

impl Default for CachePolicy {
    fn default() -> Self {
        Self {
            refresh_window: Duration::from_secs(60),
            refresh_fraction: 0.1,
            jitter_fraction: 0.1,
            expiry_margin: Duration::from_secs(10),
            retry: RetryPolicy::default(),
            cooldown: Duration::from_secs(1),
            cooldown_max: Duration::from_secs(30),
            max_retry_after: None,
        }
    }
}

/// Retries within one fetch: exponential backoff with full jitter,
/// `Retry-After` honoured, all under one deadline.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct RetryPolicy {
    /// Attempts per fetch, the first included. Default 3.
    pub max_attempts: u32,
    /// The backoff cap before the first retry. Default 200 ms.
    #[serde(with = "humantime_serde")]
    pub initial_backoff: Duration,
    /// The largest backoff cap. Default 5 s.
    #[serde(with = "humantime_serde")]
    pub max_backoff: Duration,
    /// The time a whole fetch, retries included, may take. Default 30 s.
    #[serde(with = "humantime_serde")]
    pub deadline: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            initial_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(5),
            deadline: Duration::from_secs(30),
        }
    }
}

impl RetryPolicy {
    /// The pause before retry number `retry` (1-based): uniform in
    /// `[0, min(max_backoff, initial_backoff × 2^(retry−1))]`, where `unit`
    /// is uniform in `[0, 1)`.
    pub fn backoff(&self, retry: u32, unit: f64) -> Duration {
        exponential(self.initial_backoff, self.max_backoff, retry).mul_f64(unit.clamp(0.0, 1.0))
    }
}

fn exponential(initial: Duration, max: Duration, step: u32) -> Duration {
    let factor = 2u32.saturating_pow(step.saturating_sub(1));
    initial.saturating_mul(factor).min(max)
}

/// When a token is refreshed, when it stops being served, and when it expires.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Schedule {
    /// From here on, `get()` still returns the token but starts one
    /// background refresh.
    pub refresh_at: Instant,
    /// From here on, the token is no longer served (expiry minus margin).
    pub stale_at: Instant,
    /// The token's expiry.
    pub expires_at: Instant,
}

impl CachePolicy {
    /// The refresh window for a token of `lifetime`: the larger of
    /// [`refresh_window`](Self::refresh_window) and
    /// [`refresh_fraction`](Self::refresh_fraction) of the lifetime, but never
    /// more than half the lifetime.
    pub fn refresh_window_for(&self, lifetime: Duration) -> Duration {
        self.refresh_window
            .max(lifetime.mul_f64(self.refresh_fraction.clamp(0.0, 1.0)))
            .min(lifetime / 2)
    }

    /// The expiry margin for a token of `lifetime`, capped at half of it so
    /// that a short-lived token is still served for a while.
    pub fn expiry_margin_for(&self, lifetime: Duration) -> Duration {
        self.expiry_margin.min(lifetime / 2)
    }

    /// The cooldown after `failures` consecutive failed fetches.
    pub fn cooldown_for(&self, failures: u32) -> Duration {
        exponential(self.cooldown, self.cooldown_max, failures)
    }

    /// How much of a server's requested wait is honoured: at most
    /// [`max_retry_after`](Self::max_retry_after).
    pub fn server_wait(&self, requested: Duration) -> Duration {
        requested.min(self.max_retry_after.unwrap_or(self.cooldown_max))
    }

    /// Schedules `token`; `unit` is uniform in `[0, 1)` and picks the jitter.
    pub fn schedule(&self, token: &Token, unit: f64) -> Schedule {
        let issued_at = token.issued_at();
        let expires_at = token.expires_at();
        let lifetime = token.lifetime();
        let window = self.refresh_window_for(lifetime);
        let jitter = window.mul_f64(self.jitter_fraction.clamp(0.0, 1.0) * unit.clamp(0.0, 1.0));
        let stale_at = expires_at
            .checked_sub(self.expiry_margin_for(lifetime))
            .unwrap_or(issued_at)
            .max(issued_at);
        let refresh_at = expires_at
            .checked_sub(window.saturating_add(jitter))
            .unwrap_or(issued_at)
            .max(issued_at)
            .min(stale_at);
        Schedule {
            refresh_at,
            stale_at,
            expires_at,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(lifetime: u64) -> Token {
        Token::builder("t")
            .lifetime(Duration::from_secs(lifetime))
            .build()
            .expect("valid token")
    }

    #[test]
    fn refresh_window_rules() {
        let policy = CachePolicy::default();
        let secs = Duration::from_secs;
        assert_eq!(policy.refresh_window_for(secs(3600)), secs(360));
        assert_eq!(policy.refresh_window_for(secs(86_400)), secs(8640));
        assert_eq!(policy.refresh_window_for(secs(300)), secs(60));
        // A 60 s token must not be refreshed on every call.
        assert_eq!(policy.refresh_window_for(secs(60)), secs(30));
        assert_eq!(policy.expiry_margin_for(secs(3600)), secs(10));
        assert_eq!(policy.expiry_margin_for(secs(8)), secs(4));
    }

    #[tokio::test(start_paused = true)]
    async fn jitter_stays_within_ten_percent_of_the_window() {
        let policy = CachePolicy::default();
        let token = token(3600);
        let window = Duration::from_secs(360);
        let latest = token.expires_at() - window;
        let earliest = latest - window / 10;
        let mut seen_spread = Duration::ZERO;
        for step in 0..=1000 {
            let schedule = policy.schedule(&token, f64::from(step) / 1000.0);
            assert!(schedule.refresh_at <= latest, "step {step}");
            assert!(schedule.refresh_at >= earliest, "step {step}");
            assert_eq!(
                schedule.stale_at,
                token.expires_at() - Duration::from_secs(10)
            );
            seen_spread = seen_spread.max(latest - schedule.refresh_at);
        }
        assert_eq!(seen_spread, window / 10);
        for _ in 0..1000 {
            let schedule = policy.schedule(&token, rand::random::<f64>());
            assert!(schedule.refresh_at <= latest && schedule.refresh_at >= earliest);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn zero_lifetime_is_stale_at_once() {
        let token = token(0);
        let schedule = CachePolicy::default().schedule(&token, 0.5);
        assert_eq!(schedule.stale_at, token.issued_at());
        assert_eq!(schedule.refresh_at, token.issued_at());
    }

    #[test]
    fn backoff_and_cooldown_grow_and_cap() {
        let retry = RetryPolicy::default();
        assert_eq!(retry.backoff(1, 1.0), Duration::from_millis(200));
        assert_eq!(retry.backoff(2, 1.0), Duration::from_millis(400));
        assert_eq!(retry.backoff(2, 0.5), Duration::from_millis(200));
        assert_eq!(retry.backoff(10, 1.0), Duration::from_secs(5));
        assert_eq!(retry.backoff(3, 0.0), Duration::ZERO);
        let policy = CachePolicy::default();
        assert_eq!(policy.cooldown_for(1), Duration::from_secs(1));
        assert_eq!(policy.cooldown_for(3), Duration::from_secs(4));
        assert_eq!(policy.cooldown_for(40), Duration::from_secs(30));
    }

    #[test]
    fn server_waits_are_capped_by_cooldown_max_unless_configured() {
        let mut policy = CachePolicy::default();
        assert_eq!(
            policy.server_wait(Duration::from_secs(5)),
            Duration::from_secs(5)
        );
        assert_eq!(policy.server_wait(Duration::MAX), Duration::from_secs(30));
        assert_eq!(
            policy.server_wait(Duration::from_secs(30 * 24 * 3600)),
            Duration::from_secs(30)
        );
        policy.cooldown_max = Duration::from_secs(90);
        assert_eq!(policy.server_wait(Duration::MAX), Duration::from_secs(90));
        policy.max_retry_after = Some(Duration::from_secs(600));
        assert_eq!(policy.server_wait(Duration::MAX), Duration::from_secs(600));
    }
}
