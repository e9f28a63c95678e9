//! A token as it is kept in a store: JSON with its original lifetime,
//! rebuilt on another process's clock with the time the store says the
//! entry has left. The writer's wall-clock expiry is kept for readers of
//! the raw value, never trusted: a writer whose clock is fast would
//! otherwise stretch the token past its real expiry.

use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use secrecy::ExposeSecret as _;
use secrecy::zeroize::Zeroizing;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tokio::time::Instant;

use crate::token::{Token, TokenType};

/// The stored fields of a token. Not `Debug`: it holds the token.
#[derive(Serialize, Deserialize)]
struct StoredToken {
    access_token: String,
    token_type: String,
    /// Milliseconds since the Unix epoch.
    expires_at_ms: u64,
    /// The lifetime it was issued with, so every process computes the same
    /// refresh window.
    lifetime_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    scope: Option<String>,
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    extra: Map<String, Value>,
    /// The `x5t#S256` of the client certificate the token is bound to.
    #[serde(default, rename = "x5t#S256", skip_serializing_if = "Option::is_none")]
    certificate: Option<String>,
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// The JSON of `token`.
pub(crate) fn encode(token: &Token) -> Zeroizing<Vec<u8>> {
    let stored = StoredToken {
        access_token: token.secret().expose_secret().to_owned(),
        token_type: token.token_type().scheme().to_owned(),
        expires_at_ms: millis(
            token
                .expires_at_utc()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default(),
        ),
        lifetime_ms: millis(token.lifetime()),
        scope: token.scope().map(str::to_owned),
        extra: token.extra().clone(),
        certificate: token.certificate().map(str::to_owned),
    };
    let json = serde_json::to_vec(&stored).unwrap_or_default();
    let _wiped = Zeroizing::new(stored.access_token);
    Zeroizing::new(json)
}

/// Rebuilds a stored token on this process's clock. It has `store_ttl`
/// left, the time the store keeps the entry by its own clock (the writer
/// set it to the token's time left), and never more than its original
/// lifetime, which it keeps. The error says why a value is not a usable
/// token, without quoting it.
pub(crate) fn decode(json: &[u8], store_ttl: Duration) -> Result<Token, &'static str> {
    let stored: StoredToken =
        serde_json::from_slice(json).map_err(|_| "the stored token is malformed")?;
    let lifetime = Duration::from_millis(stored.lifetime_ms);
    let remaining = store_ttl.min(lifetime);
    if remaining.is_zero() {
        return Err("the stored token has expired");
    }
    let now = Instant::now();
    // Issued `lifetime - remaining` ago; a process younger than that may not
    // reach so far back on its monotonic clock, and then counts from now.
    let (issued_at, lifetime) = match now.checked_sub(lifetime - remaining) {
        Some(issued_at) => (issued_at, lifetime),
        None => (now, remaining),
    };
    Token::builder(stored.access_token)
        .token_type(TokenType::parse(&stored.token_type))
        .issued_at(issued_at)
        .lifetime(lifetime)
        .scope(stored.scope)
        .extra(stored.extra)
        .build()
        .map(|token| token.with_certificate(stored.certificate.map(Arc::from)))
        .map_err(|_| "the stored token is not a valid token")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_token_round_trips_with_its_expiry_and_lifetime() {
        let mut extra = Map::new();
        extra.insert("merchant".into(), Value::from("4259"));
        let token = Token::builder("abc.def")
            .token_type(TokenType::DPoP)
            .lifetime(Duration::from_secs(3600))
            .issued_at(Instant::now() - Duration::from_secs(600))
            .scope(Some("read write".into()))
            .extra(extra)
            .build()
            .expect("token")
            .with_certificate(Some(Arc::from("x5t-of-the-certificate")));
        let json = encode(&token);
        let back = decode(&json, token.expires_in()).expect("decodes");
        assert_eq!(back.secret().expose_secret(), "abc.def");
        assert_eq!(back.token_type(), &TokenType::DPoP);
        assert_eq!(back.scope(), Some("read write"));
        assert_eq!(back.extra()["merchant"], "4259");
        assert_eq!(back.certificate(), Some("x5t-of-the-certificate"));
        assert_eq!(back.lifetime(), Duration::from_secs(3600));
        let drift = back
            .expires_at_utc()
            .duration_since(token.expires_at_utc())
            .unwrap_or_else(|error| error.duration());
        assert!(drift < Duration::from_secs(1), "{drift:?}");
        assert_ne!(back.id(), token.id(), "a rebuilt token is another token");
    }

    #[test]
    fn expired_and_malformed_values_are_not_tokens() {
        let hour = br#"{"access_token":"t","token_type":"Bearer","expires_at_ms":1000,"lifetime_ms":3600000}"#;
        assert_eq!(
            decode(hour, Duration::ZERO).err(),
            Some("the stored token has expired")
        );
        let minute = Duration::from_secs(60);
        assert_eq!(
            decode(b"{", minute).err(),
            Some("the stored token is malformed")
        );
        assert!(decode(br#"{"access_token":"t"}"#, minute).is_err());
        let empty =
            br#"{"access_token":"","token_type":"Bearer","expires_at_ms":1,"lifetime_ms":3600000}"#;
        assert_eq!(
            decode(empty, minute).err(),
            Some("the stored token is not a valid token")
        );
    }

    #[tokio::test]
    async fn the_store_clock_decides_the_time_left_not_the_writers() {
        // A writer ten minutes fast wrote an expiry ten minutes late; the
        // store keeps the entry for the token's real time left.
        let fast = millis(
            (std::time::SystemTime::now() + Duration::from_secs(600 + 60))
                .duration_since(UNIX_EPOCH)
                .expect("after epoch"),
        );
        let planted = format!(
            r#"{{"access_token":"t","token_type":"Bearer","expires_at_ms":{fast},"lifetime_ms":3600000}}"#
        );
        let token = decode(planted.as_bytes(), Duration::from_secs(60)).expect("usable");
        assert!(
            token.expires_in() <= Duration::from_secs(60),
            "{:?}",
            token.expires_in()
        );
        // Nor may an entry outlive the lifetime the token was issued with.
        let short =
            br#"{"access_token":"t","token_type":"Bearer","expires_at_ms":1,"lifetime_ms":30000}"#;
        let token = decode(short, Duration::from_secs(3600)).expect("usable");
        assert!(
            token.expires_in() <= Duration::from_secs(30),
            "{:?}",
            token.expires_in()
        );
        assert_eq!(token.lifetime(), Duration::from_secs(30));
    }
}
