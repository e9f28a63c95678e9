//! The metrics every [`ManagedToken`](crate::ManagedToken) records, with
//! the `metrics` feature, through the [`metrics`] facade: install any
//! recorder (Prometheus, StatsD, …) and they appear.
//!
//! | metric | kind | labels | what |
//! |---|---|---|---|
//! | `authmux_token_requests_total` | counter | `client`, `provider`, `outcome` | token requests sent to the provider, each retry included |
//! | `authmux_token_fetch_seconds` | histogram | `client`, `provider` | how long each token request took, failed ones included |
//! | `authmux_metadata_requests_total` | counter | `client`, `provider`, `outcome` | reads of the authorization server's metadata, for a source that discovers its token endpoint (one per attempt, the OpenID Connect URL tried after the RFC 8414 one included) |
//! | `authmux_refreshes_ahead_total` | counter | `client`, `provider` | background refreshes started inside a token's refresh window |
//! | `authmux_cooldowns_total` | counter | `client`, `provider` | cool-downs entered after a failed fetch |
//! | `authmux_store_hits_total` | counter | `client`, `provider` | fetches that found a usable token in the token store |
//! | `authmux_store_misses_total` | counter | `client`, `provider` | fetches that found none there (or could not read it) |
//! | `authmux_token_expires_in_seconds` | gauge | `client`, `provider` | seconds until the cached token expires, **set when it is cached** |
//!
//! `outcome` is one of [`OUTCOMES`]: `ok`, or the error's
//! [`ErrorKind`]: `refused`, `rate_limited`, `server_error`, `transport`,
//! `invalid_response`, and `other` for the rest (timeouts, configuration
//! and internal errors). A [`Discovery`](ErrorKind::Discovery) error is
//! labelled by its HTTP status: `server_error`, `rate_limited`, or
//! `invalid_response` for a document that is not metadata. `client` is the cache's name, `provider` the
//! source's.
//!
//! The gauge is not a countdown: it is set when a token is cached, and a
//! live countdown would need a timer that wakes an idle process. Subtract
//! the time since its last change, or alert on it staying low.
//!
//! Nothing is recorded when a cached token is served: only fetches,
//! refreshes, cool-downs and store reads record. The label handles are
//! registered when the cache is built, so install the recorder before
//! building caches (or the registry); a cache built earlier records
//! nothing.

use crate::error::{Error, ErrorKind};

/// Counter: token requests by `outcome`.
pub const TOKEN_REQUESTS: &str = "authmux_token_requests_total";
/// Counter: metadata requests by `outcome`.
pub const METADATA_REQUESTS: &str = "authmux_metadata_requests_total";
/// Histogram: seconds per token request.
pub const TOKEN_FETCH_SECONDS: &str = "authmux_token_fetch_seconds";
/// Counter: background refreshes started ahead of expiry.
pub const REFRESHES_AHEAD: &str = "authmux_refreshes_ahead_total";
/// Counter: cool-downs entered.
pub const COOLDOWNS: &str = "authmux_cooldowns_total";
/// Counter: fetches served from the token store.
pub const STORE_HITS: &str = "authmux_store_hits_total";
/// Counter: fetches the token store could not serve.
pub const STORE_MISSES: &str = "authmux_store_misses_total";
/// Gauge: seconds until the cached token expires, when it was cached.
pub const TOKEN_EXPIRES_IN: &str = "authmux_token_expires_in_seconds";

/// Every value of the `outcome` label.
pub const OUTCOMES: [&str; 7] = [
    "ok",
    "refused",
    "rate_limited",
    "server_error",
    "transport",
    "invalid_response",
    "other",
];

/// The `outcome` label of a token request's result.
pub fn outcome<T>(result: &Result<T, Error>) -> &'static str {
    match result {
        Ok(_) => "ok",
        Err(error) => match error.kind() {
            ErrorKind::Refused => "refused",
            ErrorKind::RateLimited => "rate_limited",
            ErrorKind::Server => "server_error",
            ErrorKind::Transport => "transport",
            ErrorKind::InvalidResponse => "invalid_response",
            ErrorKind::Discovery => match error.status().map(ErrorKind::from_status) {
                Some(ErrorKind::Server) => "server_error",
                Some(ErrorKind::RateLimited) => "rate_limited",
                Some(ErrorKind::Timeout) => "other",
                _ => "invalid_response",
            },
            _ => "other",
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcome_table() {
        let table = [
            (ErrorKind::Refused, "refused"),
            (ErrorKind::RateLimited, "rate_limited"),
            (ErrorKind::Server, "server_error"),
            (ErrorKind::Transport, "transport"),
            (ErrorKind::InvalidResponse, "invalid_response"),
            (ErrorKind::Timeout, "other"),
            (ErrorKind::Config, "other"),
            (ErrorKind::Internal, "other"),
            (ErrorKind::Discovery, "invalid_response"),
        ];
        for (kind, label) in table {
            assert_eq!(outcome::<()>(&Err(Error::new(kind, ""))), label, "{kind:?}");
            assert!(OUTCOMES.contains(&label));
        }
        assert_eq!(outcome(&Ok::<(), Error>(())), "ok");
    }
}
