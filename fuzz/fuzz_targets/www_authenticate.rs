//! `WWW-Authenticate` challenges: each line of the input is one field.
//!
//! Reading never panics, and a match needs an `error` parameter, whose name
//! is a token and so appears in the text as written.

#![no_main]

use authmux_core::wire::{HeaderMap, HeaderValue, www_authenticate_error};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut headers = HeaderMap::new();
    for line in data.split(|&byte| byte == b'\n') {
        if let Ok(value) = HeaderValue::from_bytes(line) {
            headers.append("www-authenticate", value);
        }
    }
    let has_error_param = headers.iter().any(|(_, value)| {
        value
            .as_bytes()
            .windows(5)
            .any(|window| window.eq_ignore_ascii_case(b"error"))
    });
    let nonce = www_authenticate_error(&headers, Some("DPoP"), "use_dpop_nonce");
    let invalid = www_authenticate_error(&headers, None, "invalid_token");
    let bearer = www_authenticate_error(&headers, Some("Bearer"), "invalid_token");
    let resource_nonce = authmux_core::dpop::is_resource_nonce_challenge(401, &headers);
    assert!(!(nonce || invalid || bearer) || has_error_param);
    assert_eq!(resource_nonce, nonce);
    assert!(
        !bearer || invalid,
        "a Bearer match is a match of any scheme"
    );
    assert!(!authmux_core::dpop::is_resource_nonce_challenge(
        403, &headers
    ));
});
