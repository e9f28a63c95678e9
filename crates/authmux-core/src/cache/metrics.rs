//! The cache's metric handles, registered once per cache. Without the
//! `metrics` feature every method is empty and the types have no size.

use std::time::Duration;

use crate::error::Error;

/// When a token request started; nothing without the feature.
pub(super) struct Stopwatch {
    #[cfg(feature = "metrics")]
    started: tokio::time::Instant,
}

impl Stopwatch {
    #[inline]
    pub(super) fn start() -> Self {
        Self {
            #[cfg(feature = "metrics")]
            started: tokio::time::Instant::now(),
        }
    }
}

#[cfg(feature = "metrics")]
struct Handles {
    /// One counter per value of [`OUTCOMES`](crate::metrics::OUTCOMES), in order.
    requests: [metrics::Counter; 7],
    /// The same, for metadata requests.
    metadata_requests: [metrics::Counter; 7],
    fetch_seconds: metrics::Histogram,
    refreshes_ahead: metrics::Counter,
    cooldowns: metrics::Counter,
    store_hits: metrics::Counter,
    store_misses: metrics::Counter,
    expires_in: metrics::Gauge,
}

/// The index of `result`'s label in [`OUTCOMES`](crate::metrics::OUTCOMES).
#[cfg(feature = "metrics")]
fn outcome_index<T>(result: &Result<T, Error>) -> usize {
    let outcome = crate::metrics::outcome(result);
    crate::metrics::OUTCOMES
        .iter()
        .position(|known| *known == outcome)
        .unwrap_or(crate::metrics::OUTCOMES.len() - 1)
}

/// A cache's metrics, labelled with its client and provider.
pub(super) struct CacheMetrics {
    #[cfg(feature = "metrics")]
    handles: Handles,
}

impl CacheMetrics {
    /// Registers the handles with the recorder installed now (the
    /// thread's local one, else the global one).
    #[cfg_attr(not(feature = "metrics"), allow(unused_variables))]
    pub(super) fn new(client: &str, provider: &str) -> Self {
        #[cfg(feature = "metrics")]
        {
            use crate::metrics as names;
            let labels = [
                ("client", client.to_owned()),
                ("provider", provider.to_owned()),
            ];
            let by_outcome = |name: &'static str| {
                names::OUTCOMES.map(|outcome| {
                    let mut labels = labels.to_vec();
                    labels.push(("outcome", outcome.to_owned()));
                    metrics::counter!(name, &labels)
                })
            };
            Self {
                handles: Handles {
                    requests: by_outcome(names::TOKEN_REQUESTS),
                    metadata_requests: by_outcome(names::METADATA_REQUESTS),
                    fetch_seconds: metrics::histogram!(names::TOKEN_FETCH_SECONDS, &labels),
                    refreshes_ahead: metrics::counter!(names::REFRESHES_AHEAD, &labels),
                    cooldowns: metrics::counter!(names::COOLDOWNS, &labels),
                    store_hits: metrics::counter!(names::STORE_HITS, &labels),
                    store_misses: metrics::counter!(names::STORE_MISSES, &labels),
                    expires_in: metrics::gauge!(names::TOKEN_EXPIRES_IN, &labels),
                },
            }
        }
        #[cfg(not(feature = "metrics"))]
        Self {}
    }

    /// One token request ended with `result`.
    #[cfg_attr(not(feature = "metrics"), allow(unused_variables))]
    #[inline]
    pub(super) fn token_request<T>(&self, stopwatch: Stopwatch, result: &Result<T, Error>) {
        #[cfg(feature = "metrics")]
        {
            self.handles.requests[outcome_index(result)].increment(1);
            self.handles
                .fetch_seconds
                .record(stopwatch.started.elapsed().as_secs_f64());
        }
    }

    /// One read of the token endpoint's metadata ended with `result`.
    #[cfg_attr(not(feature = "metrics"), allow(unused_variables))]
    #[inline]
    pub(super) fn metadata_request<T>(&self, result: &Result<T, Error>) {
        #[cfg(feature = "metrics")]
        self.handles.metadata_requests[outcome_index(result)].increment(1);
    }

    #[inline]
    pub(super) fn refresh_ahead(&self) {
        #[cfg(feature = "metrics")]
        self.handles.refreshes_ahead.increment(1);
    }

    #[inline]
    pub(super) fn cooldown(&self) {
        #[cfg(feature = "metrics")]
        self.handles.cooldowns.increment(1);
    }

    /// A flight's first look in the token store found a usable token, or not.
    #[cfg_attr(not(feature = "metrics"), allow(unused_variables))]
    #[inline]
    pub(super) fn store_read(&self, hit: bool) {
        #[cfg(feature = "metrics")]
        if hit {
            self.handles.store_hits.increment(1);
        } else {
            self.handles.store_misses.increment(1);
        }
    }

    /// A token that expires in `expires_in` was cached.
    #[cfg_attr(not(feature = "metrics"), allow(unused_variables))]
    #[inline]
    pub(super) fn installed(&self, expires_in: Duration) {
        #[cfg(feature = "metrics")]
        self.handles.expires_in.set(expires_in.as_secs_f64());
    }
}
