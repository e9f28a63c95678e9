//! `Retry-After` and the `X-RateLimit-*` headers of a 429 or 503: each
//! line of the input is one header value, given in turn to `Retry-After`,
//! `X-RateLimit-Limit`, `X-RateLimit-Remaining` and `X-RateLimit-Reset`.
//!
//! A `Retry-After` in delay-seconds is read exactly; an HTTP date gives a
//! wait no longer than the time until that date; the rate-limit numbers are
//! read exactly; and the cache's cap on a server's wait holds.

#![no_main]

use std::time::{Duration, SystemTime};

use authmux_core::CachePolicy;
use authmux_core::wire::{EndpointResponse, HeaderMap, HeaderValue};
use authmux_fuzz::{DEFAULT_LIFETIME, assert_no_secret, scrubber};
use libfuzzer_sys::fuzz_target;

const NAMES: [&str; 4] = [
    "retry-after",
    "x-ratelimit-limit",
    "x-ratelimit-remaining",
    "x-ratelimit-reset",
];

fuzz_target!(|data: &[u8]| {
    let status = if data.first().is_some_and(|byte| byte & 1 == 1) {
        503
    } else {
        429
    };
    let mut headers = HeaderMap::new();
    for (name, line) in NAMES.iter().zip(data.split(|&byte| byte == b'\n')) {
        if let Ok(value) = HeaderValue::from_bytes(line) {
            headers.insert(*name, value);
        }
    }
    let text = |name: &str| {
        headers
            .get(name)
            .and_then(|value| value.to_str().ok())
            .map(str::trim)
            .map(str::to_owned)
    };
    let number = |name: &str| text(name).and_then(|text| text.parse::<u64>().ok());
    let retry_after = text("retry-after");
    let (limit, remaining, reset) = (
        number("x-ratelimit-limit"),
        number("x-ratelimit-remaining"),
        number("x-ratelimit-reset"),
    );
    let before = SystemTime::now();
    let error = EndpointResponse::new(status, headers, Vec::new())
        .parse(DEFAULT_LIFETIME, &scrubber())
        .expect_err("an error status");
    assert_no_secret(&error);
    assert!(error.is_transient(), "HTTP {status} is worth retrying");
    let wait = error.retry_after();
    match retry_after.as_deref() {
        Some(text) if text.parse::<u64>().is_ok() => {
            assert_eq!(wait, text.parse().ok().map(Duration::from_secs));
        }
        Some(text) => match httpdate::parse_http_date(text) {
            Ok(date) => {
                let most = date.duration_since(before).unwrap_or(Duration::ZERO);
                let wait = wait.expect("an HTTP date is a wait");
                assert!(wait <= most, "{wait:?} is past the date ({most:?})");
            }
            Err(_) => assert_eq!(wait, None, "neither seconds nor a date"),
        },
        None => assert_eq!(wait, None),
    }
    let rate_limit = error.rate_limit();
    assert_eq!(
        (rate_limit.limit, rate_limit.remaining, rate_limit.reset),
        (limit, remaining, reset)
    );
    if let Some(wait) = wait {
        let policy = CachePolicy::default();
        let honoured = policy.server_wait(wait);
        assert!(honoured <= wait && honoured <= policy.cooldown_max);
    }
});
