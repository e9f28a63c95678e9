//! Helpers for the runnable examples of authmux; see the `[[example]]`
//! targets in this crate.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::json;

/// A JWT-shaped token like the ones Mention Me issues (unsigned: the
/// examples never verify it), valid for one hour from now.
pub fn demo_jwt() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs());
    let header = json!({"alg": "RS256", "typ": "JWT"});
    let payload = json!({
        "aud": ["project-test-2da703ca-e983-410e-93d0-442bb05b9b06"],
        "claims": {"env": "demo", "merchantId": "4259"},
        "exp": now + 3600,
        "iat": now,
        "iss": "stytch.com/project-test-2da703ca-e983-410e-93d0-442bb05b9b06",
        "nbf": now,
        "scope": "customers:list",
        "sub": "m2m-client-test-3191ab24-133b-4634-a02d-0ec6249dd481",
    });
    format!(
        "{}.{}.c2lnbmF0dXJl",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(payload.to_string())
    )
}
