//! JWT payload decoding, without verification.
//!
//! The input is used twice: as the payload of a JWT (base64url-encoded
//! here, so the fuzzer works on the JSON), and as a whole access token as
//! written. Each token is read with `Token::claims`, with Mention Me's
//! claims reader, and through the token response parser, which reads the
//! JWT's `exp` for the lifetime.

#![no_main]

use std::time::Duration;

use authmux::mention_me::MentionMeTokenExt as _;
use authmux_core::Token;
use authmux_core::wire::{EndpointResponse, HeaderMap};
use authmux_fuzz::{DEFAULT_LIFETIME, check_token, scrubber};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use libfuzzer_sys::fuzz_target;

const HEADER: &str = "eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9";

fuzz_target!(|data: &[u8]| {
    let encoded = format!("{HEADER}.{}.c2ln", URL_SAFE_NO_PAD.encode(data));
    read(&encoded, true);
    if let Ok(raw) = std::str::from_utf8(data) {
        read(raw, false);
    }
});

fn read(access_token: &str, is_jwt_shaped: bool) {
    let Ok(token) = Token::builder(access_token)
        .lifetime(Duration::from_secs(60))
        .build()
    else {
        // Not a valid header value; the parser refuses it the same way.
        return;
    };
    let claims = token.claims::<serde_json::Value>();
    if is_jwt_shaped {
        assert_eq!(
            claims.is_ok(),
            serde_json::from_slice::<serde_json::Value>(&payload(access_token)).is_ok(),
            "claims decode exactly when the payload is JSON"
        );
    }
    // The messages have no `.`, so a token with one is never part of them.
    if let Err(error) = &claims
        && access_token.len() >= 8
        && access_token.contains('.')
    {
        assert!(
            !error.to_string().contains(access_token),
            "a claims error quoted the token"
        );
    }
    let _ = token.claims::<serde_json::Map<String, serde_json::Value>>();
    let _ = token.mention_me_claims();
    let body = serde_json::json!({ "access_token": access_token, "token_type": "bearer" });
    let response = EndpointResponse::new(200, HeaderMap::new(), body.to_string().into_bytes());
    if let Ok(token) = response.parse(DEFAULT_LIFETIME, &scrubber()) {
        check_token(&token);
    }
}

fn payload(jwt: &str) -> Vec<u8> {
    let payload = jwt.split('.').nth(1).unwrap_or_default();
    URL_SAFE_NO_PAD.decode(payload).unwrap_or_default()
}
