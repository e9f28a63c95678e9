//! A whole token endpoint response: status, headers and body, written as
//! text (see `authmux_fuzz::RawResponse`). Any status goes, so this covers
//! the error-body shapes, `Retry-After`, `X-RateLimit-*`, redirects and
//! HTML pages as well as tokens.
//!
//! The client secret never reaches an error, and a `Retry-After` in
//! delay-seconds is read exactly.

#![no_main]

use std::time::Duration;

use authmux_core::wire::EndpointResponse;
use authmux_fuzz::{
    DEFAULT_LIFETIME, RawResponse, assert_no_secret, check_token, inspect_error, scrubber,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let RawResponse {
        status,
        headers,
        body,
    } = RawResponse::parse(data);
    let seconds: Option<u64> = headers
        .get("retry-after")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.trim().parse().ok());
    let response = EndpointResponse::new(status, headers, body);
    let _ = authmux_core::dpop::is_resource_nonce_challenge(response.status(), response.headers());
    match response.parse(DEFAULT_LIFETIME, &scrubber()) {
        Ok(token) => {
            assert!((200..300).contains(&status), "a token from HTTP {status}");
            check_token(&token);
        }
        Err(error) => {
            inspect_error(&error);
            assert_no_secret(&error);
            if let Some(seconds) = seconds
                && !(200..400).contains(&status)
            {
                assert_eq!(error.retry_after(), Some(Duration::from_secs(seconds)));
            }
        }
    }
});
