//! The token response parser: the input is the body of a 200 response.
//!
//! A token must have a usable lifetime and must not be expired on arrival;
//! an error must be one line without the client secret.

#![no_main]

use authmux_core::wire::{EndpointResponse, HeaderMap, HeaderValue};
use authmux_fuzz::{DEFAULT_LIFETIME, assert_no_secret, check_token, inspect_error, scrubber};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|body: &[u8]| {
    let mut headers = HeaderMap::new();
    headers.insert("content-type", HeaderValue::from_static("application/json"));
    match EndpointResponse::new(200, headers, body.to_vec()).parse(DEFAULT_LIFETIME, &scrubber()) {
        Ok(token) => check_token(&token),
        Err(error) => {
            inspect_error(&error);
            assert_no_secret(&error);
        }
    }
});
