//! RFC 7638 JWK thumbprints.

use authmux_core::Error;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::Value;
use sha2::{Digest as _, Sha256};

/// The RFC 7638 SHA-256 thumbprint of a public JWK, base64url without
/// padding.
///
/// Only the members that RFC 7638 requires for the key type are hashed, so
/// optional ones (`kid`, `alg`, `use`, …) and private ones (`d`, …) make no
/// difference:
///
/// | `kty` | members hashed |
/// |-------|----------------|
/// | `EC`  | `crv`, `kty`, `x`, `y` |
/// | `RSA` | `e`, `kty`, `n` |
/// | `OKP` | `crv`, `kty`, `x` |
///
/// # Errors
///
/// A [`Config`](authmux_core::ErrorKind::Config) error when `jwk` is not an
/// object, its `kty` is none of the above, or a required member is missing
/// or not a string. The message names the member, never its value.
///
/// ```
/// // The Ed25519 key of RFC 8037 §A.3.
/// let jwk = serde_json::json!({
///     "kty": "OKP",
///     "crv": "Ed25519",
///     "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo",
/// });
/// assert_eq!(
///     authmux_dpop::jwk_thumbprint(&jwk)?,
///     "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k",
/// );
/// # Ok::<(), authmux_core::Error>(())
/// ```
pub fn jwk_thumbprint(jwk: &Value) -> Result<String, Error> {
    let object = jwk
        .as_object()
        .ok_or_else(|| Error::config("jwk: not a JSON object"))?;
    let kty = object
        .get("kty")
        .and_then(Value::as_str)
        .ok_or_else(|| Error::config("jwk: no \"kty\" string"))?;
    // RFC 7638 §3.2: the required members of each key type, here already in
    // lexicographic order so that the canonical form can be written as is.
    let names: &[&str] = match kty {
        "EC" => &["crv", "kty", "x", "y"],
        "RSA" => &["e", "kty", "n"],
        "OKP" => &["crv", "kty", "x"],
        _ => {
            return Err(Error::config(
                "jwk: thumbprints are computed for kty EC, RSA and OKP only",
            ));
        }
    };
    let mut members = Vec::with_capacity(names.len());
    for &name in names {
        let value = object
            .get(name)
            .and_then(Value::as_str)
            .ok_or_else(|| Error::config(format!("jwk: kty {kty} needs a \"{name}\" string")))?;
        members.push((name, value));
    }
    Ok(canonical_thumbprint(&members))
}

/// Hashes the canonical JSON object of `members`, which must already be
/// sorted by name: no whitespace, and strings escaped as JSON requires.
pub(crate) fn canonical_thumbprint(members: &[(&str, &str)]) -> String {
    let mut json = String::with_capacity(160);
    json.push('{');
    for (index, (name, value)) in members.iter().enumerate() {
        if index > 0 {
            json.push(',');
        }
        push_json_string(&mut json, name);
        json.push(':');
        push_json_string(&mut json, value);
    }
    json.push('}');
    URL_SAFE_NO_PAD.encode(Sha256::digest(json.as_bytes()))
}

fn push_json_string(json: &mut String, text: &str) {
    // serde_json's escaping is the minimal one RFC 7638 §3.3 asks for; a
    // `String` always serializes.
    match serde_json::to_string(text) {
        Ok(quoted) => json.push_str(&quoted),
        Err(_) => unreachable!("a string always serializes to JSON"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn canonical_form_escapes_and_orders_members() {
        // The hash input is checked through a known digest of a form written
        // out by hand.
        let by_hand = r#"{"crv":"P-256","kty":"EC","x":"a\"b","y":"c"}"#;
        let expected = URL_SAFE_NO_PAD.encode(Sha256::digest(by_hand.as_bytes()));
        let jwk = json!({"y": "c", "x": "a\"b", "kty": "EC", "crv": "P-256", "kid": "ignored"});
        assert_eq!(jwk_thumbprint(&jwk).expect("thumbprint"), expected);
    }

    #[test]
    fn errors_name_the_member_but_not_values() {
        let error = jwk_thumbprint(&json!({"kty": "EC", "crv": "P-256", "x": "secret-x"}))
            .expect_err("no y");
        assert_eq!(error.to_string(), "jwk: kty EC needs a \"y\" string");
        let error = jwk_thumbprint(&json!({"kty": "oct", "k": "c2VjcmV0"})).expect_err("oct");
        assert!(!error.to_string().contains("c2VjcmV0"), "{error}");
        assert!(jwk_thumbprint(&json!(["EC"])).is_err());
        assert!(jwk_thumbprint(&json!({"kty": "RSA", "e": 65537, "n": "x"})).is_err());
    }
}
