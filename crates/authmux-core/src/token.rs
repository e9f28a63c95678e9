//! Access tokens.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use reqwest::header::HeaderValue;
use secrecy::{ExposeSecret, SecretString};
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};
use tokio::time::Instant;

use crate::error::{Error, ErrorKind};

/// The kind of access token, from the response's `token_type`, compared
/// case-insensitively (RFC 6749 §5.1): Mention Me's `"bearer"` is [`Bearer`](Self::Bearer).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum TokenType {
    /// `Bearer` (RFC 6750).
    Bearer,
    /// `DPoP`: the token is bound to a key (RFC 9449).
    DPoP,
    /// Any other type, as sent.
    Other(String),
}

impl TokenType {
    /// Parses a `token_type` value.
    pub fn parse(value: &str) -> Self {
        if value.eq_ignore_ascii_case("bearer") {
            Self::Bearer
        } else if value.eq_ignore_ascii_case("dpop") {
            Self::DPoP
        } else {
            Self::Other(value.to_owned())
        }
    }

    /// The `Authorization` scheme to send the token with.
    pub fn scheme(&self) -> &str {
        match self {
            Self::Bearer => "Bearer",
            Self::DPoP => "DPoP",
            Self::Other(other) => other,
        }
    }
}

impl fmt::Display for TokenType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.scheme())
    }
}

/// An access token and what is known about it.
///
/// The token itself is a secret: `Debug` redacts it, and [`Token::secret`]
/// is the one way to read it. A [`ManagedToken`](crate::ManagedToken) hands
/// out [`TokenGuard`](crate::TokenGuard)s that borrow its cached token; a
/// clone is a deep copy that keeps the [`id`](Self::id).
#[derive(Clone)]
#[repr(C)] // The text first: the cache's hot path reads it next to its deadline.
pub struct Token {
    access_token: SecretString,
    authorization: HeaderValue,
    id: u64,
    token_type: TokenType,
    issued_at: Instant,
    expires_at: Instant,
    expires_at_utc: SystemTime,
    /// What most tokens do not have, boxed: a token is held per client.
    rare: Option<Box<Rare>>,
}

/// The parts of a [`Token`] that most tokens lack.
#[derive(Clone, Default)]
struct Rare {
    scope: Option<String>,
    extra: Map<String, Value>,
    dpop: Option<crate::dpop::Dpop>,
    /// The `x5t#S256` of the client certificate it is bound to.
    certificate: Option<Arc<str>>,
}

/// What [`Token::extra`] returns for a token with no extra field.
static NO_EXTRA: std::sync::LazyLock<Map<String, Value>> = std::sync::LazyLock::new(Map::new);

static NEXT_TOKEN_ID: AtomicU64 = AtomicU64::new(1);

/// The longest lifetime a token may have; longer ones are capped.
pub const MAX_LIFETIME: Duration = Duration::from_secs(366 * 24 * 3600);

impl Token {
    /// Starts building a token around `access_token`.
    pub fn builder(access_token: impl Into<String>) -> TokenBuilder {
        TokenBuilder {
            access_token: SecretString::from(access_token.into()),
            token_type: TokenType::Bearer,
            lifetime: None,
            issued_at: None,
            scope: None,
            extra: Map::new(),
        }
    }

    /// A process-unique number for this token. Clones keep it.
    #[inline]
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The access token.
    #[inline]
    pub fn secret(&self) -> &SecretString {
        &self.access_token
    }

    /// The ready `Authorization` header value (`Bearer …` or `DPoP …`),
    /// marked sensitive. Built once; cloning it does not allocate.
    #[inline]
    pub fn authorization(&self) -> &HeaderValue {
        &self.authorization
    }

    /// The token type.
    #[inline]
    pub fn token_type(&self) -> &TokenType {
        &self.token_type
    }

    /// When the token was received, on tokio's clock.
    #[inline]
    pub fn issued_at(&self) -> Instant {
        self.issued_at
    }

    /// When the token expires, on tokio's clock.
    #[inline]
    pub fn expires_at(&self) -> Instant {
        self.expires_at
    }

    /// When the token expires, on the wall clock.
    #[inline]
    pub fn expires_at_utc(&self) -> SystemTime {
        self.expires_at_utc
    }

    /// The lifetime the token was issued with.
    #[inline]
    pub fn lifetime(&self) -> Duration {
        self.expires_at - self.issued_at
    }

    /// The time left before the token expires, on tokio's clock; zero once
    /// [`is_expired`](Self::is_expired) says so.
    pub fn expires_in(&self) -> Duration {
        if self.is_expired() {
            return Duration::ZERO;
        }
        self.expires_at.saturating_duration_since(Instant::now())
    }

    /// Whether the token has expired, by tokio's monotonic clock or by the
    /// wall clock. The monotonic clock stops while the system is suspended
    /// and the wall clock does not, so a token that expired during a
    /// suspend is expired here as soon as the system resumes.
    pub fn is_expired(&self) -> bool {
        Instant::now() >= self.expires_at || SystemTime::now() >= self.expires_at_utc
    }

    /// The granted scope as sent (space-separated), if the response had one.
    #[inline]
    pub fn scope(&self) -> Option<&str> {
        self.rare.as_ref()?.scope.as_deref()
    }

    /// The granted scopes, one by one.
    pub fn scopes(&self) -> impl Iterator<Item = &str> {
        self.scope().unwrap_or("").split_whitespace()
    }

    /// The response fields other than `access_token`, `token_type`,
    /// `expires_in` and `scope`.
    #[inline]
    pub fn extra(&self) -> &Map<String, Value> {
        self.rare.as_ref().map_or(&*NO_EXTRA, |rare| &rare.extra)
    }

    /// Binds the token to a DPoP prover, as a DPoP-aware provider does with
    /// the tokens it fetches.
    pub fn with_dpop(mut self, dpop: crate::dpop::Dpop) -> Self {
        self.rare.get_or_insert_default().dpop = Some(dpop);
        self
    }

    /// The DPoP prover this token is bound to, if any.
    pub fn dpop(&self) -> Option<&crate::dpop::Dpop> {
        self.rare.as_ref()?.dpop.as_ref()
    }

    /// Ties the token to the TLS client certificate whose RFC 8705
    /// `x5t#S256` thumbprint is `thumbprint`: the one it was obtained
    /// with. It is then presented with that certificate and no other.
    pub fn with_certificate(mut self, thumbprint: Option<Arc<str>>) -> Self {
        match (&mut self.rare, thumbprint) {
            (None, None) => {}
            (rare, thumbprint) => rare.get_or_insert_default().certificate = thumbprint,
        }
        self
    }

    /// The `x5t#S256` thumbprint of the TLS client certificate the token
    /// is bound to, if any: every token obtained with a client certificate
    /// is, whether or not the server says so in a `cnf` claim, since an
    /// opaque token does not tell.
    pub fn certificate(&self) -> Option<&str> {
        self.rare.as_ref()?.certificate.as_deref()
    }

    /// A fresh DPoP proof for presenting this token in a `method` request to
    /// `url`: it carries `ath` (the token's hash) and the origin's latest
    /// nonce. Send it as the `DPoP` header next to
    /// [`authorization`](Self::authorization).
    pub fn dpop_proof(&self, method: &str, url: &url::Url) -> Result<HeaderValue, Error> {
        let dpop = self.dpop().ok_or_else(|| {
            Error::config("the token is not DPoP-bound; configure dpop for its client")
        })?;
        dpop.proof(method, url, Some(self.access_token.expose_secret()))
    }

    /// Whether the access token is a JWT whose payload decodes as JSON.
    pub fn is_jwt(&self) -> bool {
        self.claims::<Map<String, Value>>().is_ok()
    }

    /// Decodes the JWT payload of the access token into `T`, **without
    /// verifying** the signature. Use it to read claims, never to trust them.
    pub fn claims<T: DeserializeOwned>(&self) -> Result<T, Error> {
        decode_jwt_payload(self.access_token.expose_secret())
    }
}

/// Decodes the payload of a compact JWT without verifying it.
///
/// Error messages never contain the token or its claims.
pub(crate) fn decode_jwt_payload<T: DeserializeOwned>(jwt: &str) -> Result<T, Error> {
    let mut parts = jwt.split('.');
    let (Some(_header), Some(payload), Some(_signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(Error::new(
            ErrorKind::InvalidResponse,
            "the access token is not a JWT",
        ));
    };
    let bytes = URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .map_err(|_| {
            Error::new(
                ErrorKind::InvalidResponse,
                "the JWT payload is not base64url",
            )
        })?;
    serde_json::from_slice(&bytes).map_err(|error| {
        Error::new(
            ErrorKind::InvalidResponse,
            format!(
                "the JWT payload does not match the expected claims ({:?} error at column {})",
                error.classify(),
                error.column()
            ),
        )
    })
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = &self;
        f.debug_struct("Token")
            .field("id", &inner.id)
            .field("access_token", &"[redacted]")
            .field("token_type", &inner.token_type)
            .field("scope", &inner.scope())
            .field("lifetime", &self.lifetime())
            .field("expires_in", &self.expires_in())
            .field("extra_fields", &inner.extra().keys().collect::<Vec<_>>())
            .field("dpop", &inner.dpop())
            .field("certificate", &inner.certificate())
            .finish()
    }
}

/// Builds a [`Token`]; see [`Token::builder`].
pub struct TokenBuilder {
    access_token: SecretString,
    token_type: TokenType,
    lifetime: Option<Duration>,
    issued_at: Option<Instant>,
    scope: Option<String>,
    extra: Map<String, Value>,
}

impl fmt::Debug for TokenBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenBuilder")
            .field("access_token", &"[redacted]")
            .field("token_type", &self.token_type)
            .field("lifetime", &self.lifetime)
            .finish_non_exhaustive()
    }
}

impl TokenBuilder {
    /// The token type; `Bearer` unless set.
    pub fn token_type(mut self, token_type: TokenType) -> Self {
        self.token_type = token_type;
        self
    }

    /// How long the token lasts from when it was issued. Required; capped
    /// at [`MAX_LIFETIME`].
    pub fn lifetime(mut self, lifetime: Duration) -> Self {
        self.lifetime = Some(lifetime);
        self
    }

    /// When the token's lifetime starts counting; now unless set. The wire
    /// layer passes the moment the request was sent, so a slow answer does
    /// not stretch the lifetime.
    pub fn issued_at(mut self, issued_at: Instant) -> Self {
        self.issued_at = Some(issued_at);
        self
    }

    /// The granted scope, space-separated.
    pub fn scope(mut self, scope: Option<String>) -> Self {
        self.scope = scope;
        self
    }

    /// The other response fields.
    pub fn extra(mut self, extra: Map<String, Value>) -> Self {
        self.extra = extra;
        self
    }

    /// Builds the token and its `Authorization` header value.
    pub fn build(self) -> Result<Token, Error> {
        let lifetime = self
            .lifetime
            .ok_or_else(|| Error::new(ErrorKind::InvalidResponse, "the token has no lifetime"))?;
        let secret = self.access_token.expose_secret();
        if secret.is_empty() {
            return Err(Error::new(
                ErrorKind::InvalidResponse,
                "the access token is empty",
            ));
        }
        let mut authorization =
            HeaderValue::try_from(format!("{} {}", self.token_type.scheme(), secret)).map_err(
                |_| {
                    Error::new(
                        ErrorKind::InvalidResponse,
                        "the access token has characters that are not allowed in an HTTP header",
                    )
                },
            )?;
        authorization.set_sensitive(true);
        let issued_at = self.issued_at.unwrap_or_else(Instant::now);
        let lifetime = lifetime.min(MAX_LIFETIME);
        let expires_at = issued_at.checked_add(lifetime).unwrap_or(issued_at);
        let now = Instant::now();
        let wall_now = SystemTime::now();
        let expires_at_utc = if expires_at >= now {
            wall_now.checked_add(expires_at - now)
        } else {
            wall_now.checked_sub(now - expires_at)
        }
        .unwrap_or(wall_now);
        Ok(Token {
            id: NEXT_TOKEN_ID.fetch_add(1, Ordering::Relaxed),
            access_token: self.access_token,
            authorization,
            token_type: self.token_type,
            issued_at,
            expires_at,
            expires_at_utc,
            // A map emptied by `remove` keeps its node: a token with no
            // extra field drops it rather than hold half a kilobyte for none.
            rare: (self.scope.is_some() || !self.extra.is_empty()).then(|| {
                Box::new(Rare {
                    scope: self.scope,
                    extra: if self.extra.is_empty() {
                        Map::new()
                    } else {
                        self.extra
                    },
                    dpop: None,
                    certificate: None,
                })
            }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwt(payload: &str) -> String {
        format!(
            "{}.{}.sig",
            URL_SAFE_NO_PAD.encode(r#"{"alg":"RS256"}"#),
            URL_SAFE_NO_PAD.encode(payload)
        )
    }

    #[test]
    fn token_type_is_case_insensitive() {
        assert_eq!(TokenType::parse("bearer"), TokenType::Bearer);
        assert_eq!(TokenType::parse("BEARER"), TokenType::Bearer);
        assert_eq!(TokenType::parse("dpop"), TokenType::DPoP);
        assert_eq!(TokenType::parse("DPoP"), TokenType::DPoP);
        assert_eq!(TokenType::parse("mac"), TokenType::Other("mac".into()));
        assert_eq!(TokenType::parse("bearer").scheme(), "Bearer");
    }

    #[tokio::test(start_paused = true)]
    async fn token_fields_and_header() {
        let token = Token::builder("abc.def")
            .token_type(TokenType::parse("bearer"))
            .lifetime(Duration::from_secs(3600))
            .scope(Some("customers:list  orders:read".into()))
            .build()
            .expect("valid token");
        assert_eq!(token.authorization(), "Bearer abc.def");
        assert!(token.authorization().is_sensitive());
        assert_eq!(
            token.scopes().collect::<Vec<_>>(),
            ["customers:list", "orders:read"]
        );
        assert_eq!(token.expires_in(), Duration::from_secs(3600));
        tokio::time::advance(Duration::from_secs(3599)).await;
        assert!(!token.is_expired());
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(token.is_expired());
        assert_eq!(token.clone().id(), token.id());
    }

    #[test]
    fn debug_redacts_the_token() {
        let token = Token::builder("super-secret-token")
            .lifetime(Duration::from_secs(60))
            .build()
            .expect("valid token");
        let debug = format!("{token:?} {:?}", Token::builder("super-secret-token"));
        assert!(!debug.contains("super-secret-token"), "{debug}");
        assert!(debug.contains("[redacted]"));
    }

    #[test]
    fn claims_decode_without_verification() {
        let token = Token::builder(jwt(r#"{"sub":"m2m","claims":{"merchantId":"4259"}}"#))
            .lifetime(Duration::from_secs(60))
            .build()
            .expect("valid token");
        let claims: Value = token.claims().expect("claims");
        assert_eq!(claims["claims"]["merchantId"], "4259");
        assert!(token.is_jwt());

        let opaque = Token::builder("opaque-token-value")
            .lifetime(Duration::from_secs(60))
            .build()
            .expect("valid token");
        let error = opaque.claims::<Value>().expect_err("not a JWT");
        assert!(!error.to_string().contains("opaque-token-value"));
    }

    #[test]
    fn header_rejects_bad_characters_without_echoing_them() {
        let error = Token::builder("bad\ntoken")
            .lifetime(Duration::from_secs(60))
            .build()
            .expect_err("newline is not allowed");
        assert_eq!(error.kind(), ErrorKind::InvalidResponse);
        assert!(!error.to_string().contains("bad"));
    }
}
