//! Lenient parsing of token endpoint responses, and one model for the
//! error bodies that providers send.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

use reqwest::header::{CONTENT_TYPE, HeaderMap, LOCATION, RETRY_AFTER};
use serde_json::{Map, Value};

use super::TokenRequest;
use crate::error::{Error, ErrorKind, OAuthError, RateLimit};
use crate::scrub::Scrubber;
use crate::token::{Token, TokenType, decode_jwt_payload};

use crate::token::MAX_LIFETIME;

/// The shortest lifetime a response may give a token. Anything shorter
/// would expire before a caller could use it, so it is an error.
pub const MIN_LIFETIME: Duration = Duration::from_secs(1);

/// A token endpoint's raw answer: status, headers and body.
///
/// The body of a successful response holds the access token, so `Debug`
/// shows its length only.
pub struct EndpointResponse {
    status: u16,
    headers: HeaderMap,
    body: Vec<u8>,
    sent_at: Option<Instant>,
    /// The `x5t#S256` of the client certificate the request was sent with.
    certificate: Option<Arc<str>>,
}

impl fmt::Debug for EndpointResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EndpointResponse")
            .field("status", &self.status)
            .field("body_bytes", &self.body.len())
            .finish_non_exhaustive()
    }
}

impl EndpointResponse {
    /// Wraps a response that was read elsewhere.
    pub fn new(status: u16, headers: HeaderMap, body: Vec<u8>) -> Self {
        Self {
            status,
            headers,
            body,
            sent_at: None,
            certificate: None,
        }
    }

    /// Records the `x5t#S256` thumbprint of the TLS client certificate the
    /// request was sent with. The token is then bound to it (see
    /// [`Token::certificate`]), and a JWT whose `cnf.x5t#S256` names
    /// another certificate is refused.
    pub fn with_certificate(mut self, thumbprint: Option<Arc<str>>) -> Self {
        self.certificate = thumbprint;
        self
    }

    /// The thumbprint of the client certificate the request was sent with.
    pub fn certificate(&self) -> Option<&str> {
        self.certificate.as_deref()
    }

    /// Records when the request was sent. A token's lifetime counts from
    /// then, so a slow answer does not stretch it; without it, the lifetime
    /// counts from when the response is parsed.
    pub fn with_sent_at(mut self, sent_at: Instant) -> Self {
        self.sent_at = Some(sent_at);
        self
    }

    /// When the request was sent, if recorded.
    pub fn sent_at(&self) -> Option<Instant> {
        self.sent_at
    }

    /// The HTTP status.
    pub fn status(&self) -> u16 {
        self.status
    }

    /// The response headers.
    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    /// The response body, as read (at most the body cap).
    pub fn body(&self) -> &[u8] {
        &self.body
    }

    /// Interprets the response: any 2xx whose JSON body has `access_token` is
    /// a token; everything else becomes a typed [`Error`].
    pub fn into_token(self, request: &TokenRequest) -> Result<Token, Error> {
        self.parse(
            request
                .default_lifetime()
                .unwrap_or(super::DEFAULT_LIFETIME),
            request.scrubber(),
        )
    }

    /// Like [`into_token`](Self::into_token), for a response to a request
    /// that was not described by a [`TokenRequest`]: `default_lifetime` is
    /// assumed when the response gives none, and every piece of server
    /// text in an error passes through `scrubber`, which must know every
    /// secret the request carried.
    pub fn parse(self, default_lifetime: Duration, scrubber: &Scrubber) -> Result<Token, Error> {
        if !(200..300).contains(&self.status) {
            return Err(self.error(scrubber));
        }
        let fields: TokenFields = match serde_json::from_slice(&self.body) {
            Ok(fields) => fields,
            Err(error) => {
                // Never quote a 2xx body: a truncated one may hold the token.
                let what = if self.is_html() {
                    "an HTML page instead of JSON".to_owned()
                } else if self.body.is_empty() {
                    "an empty body".to_owned()
                } else {
                    format!(
                        "a body that is not a JSON object ({:?} error at line {} column {})",
                        error.classify(),
                        error.line(),
                        error.column()
                    )
                };
                return Err(Error::new(ErrorKind::InvalidResponse, what).with_status(self.status));
            }
        };
        if fields.error {
            // Rare: read the body again, whole, for the error's shape.
            let all: Map<String, Value> = serde_json::from_slice(&self.body).unwrap_or_default();
            let oauth = oauth_error(&all, scrubber);
            return Err(
                Error::new(ErrorKind::Refused, "a success status with an error body")
                    .with_status(self.status)
                    .with_oauth(oauth.unwrap_or_default()),
            );
        }
        let access_token = match fields.access_token {
            Some(Value::String(token)) if !token.is_empty() => token,
            Some(_) => {
                return Err(Error::new(
                    ErrorKind::InvalidResponse,
                    "access_token is empty or not a string",
                )
                .with_status(self.status));
            }
            None => {
                return Err(Error::new(
                    ErrorKind::InvalidResponse,
                    "the response has no access_token",
                )
                .with_status(self.status));
            }
        };
        let token_type = match fields.token_type {
            Some(Value::String(token_type)) => TokenType::parse(&token_type),
            _ => TokenType::Bearer,
        };
        let expires_in = fields.expires_in.and_then(|value| {
            let seconds = parse_seconds(&value);
            if seconds.is_none() {
                tracing::warn!("ignoring an expires_in that is not a number");
            }
            seconds
        });
        let scope = match fields.scope {
            Some(Value::String(scope)) => Some(scope),
            Some(Value::Array(scopes)) => Some(
                scopes
                    .iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join(" "),
            ),
            _ => None,
        };
        let received = Instant::now();
        let sent_at = self.sent_at.unwrap_or(received).min(received);
        let lifetime = lifetime(
            expires_in,
            jwt_remaining(&access_token),
            default_lifetime,
            received - sent_at,
        )
        .map_err(|what| Error::new(ErrorKind::InvalidResponse, what).with_status(self.status))?;
        check_binding(&access_token, self.certificate.as_deref())
            .map_err(|error| error.with_status(self.status))?;
        Token::builder(access_token)
            .token_type(token_type)
            .issued_at(sent_at)
            .lifetime(lifetime)
            .scope(scope)
            .extra(fields.extra)
            .build()
            .map(|token| token.with_certificate(self.certificate))
            .map_err(|error| error.with_status(self.status))
    }

    fn is_html(&self) -> bool {
        let content_type_html = self
            .headers
            .get(CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .is_some_and(|value| value.to_ascii_lowercase().contains("html"));
        content_type_html || self.body.trim_ascii_start().starts_with(b"<")
    }

    fn error(&self, scrubber: &Scrubber) -> Error {
        let status = self.status;
        if (300..400).contains(&status) {
            let location = self
                .headers
                .get(LOCATION)
                .and_then(|value| value.to_str().ok())
                .map(|location| scrubber.scrub(location))
                .unwrap_or_default();
            return Error::new(
                ErrorKind::InvalidResponse,
                format!("redirect to {location:?} not followed; configure the final token URL"),
            )
            .with_status(status);
        }
        let kind = ErrorKind::from_status(status);
        let fields: Option<Map<String, Value>> = serde_json::from_slice(&self.body).ok();
        let mut error = match fields
            .as_ref()
            .and_then(|fields| oauth_error(fields, scrubber))
        {
            Some(oauth) => Error::new(kind, "").with_oauth(oauth),
            None => {
                let text = String::from_utf8_lossy(&self.body);
                let what = if self.is_html() {
                    "an HTML page"
                } else {
                    "body"
                };
                let message = if text.trim().is_empty() {
                    "empty body".to_owned()
                } else {
                    format!("{what}: {:?}", scrubber.scrub(&text))
                };
                Error::new(kind, message)
            }
        };
        error = error.with_status(status);
        if let Some(retry_after) = retry_after(&self.headers) {
            error = error.with_retry_after(retry_after);
        }
        let rate_limit = RateLimit {
            limit: header_u64(&self.headers, "x-ratelimit-limit"),
            remaining: header_u64(&self.headers, "x-ratelimit-remaining"),
            reset: header_u64(&self.headers, "x-ratelimit-reset"),
        };
        if !rate_limit.is_empty() {
            error = error.with_rate_limit(rate_limit);
        }
        error
    }
}

/// A token response's fields, read in one pass: the known ones kept as
/// sent (their types are checked leniently afterwards), any other in
/// `extra`. Unlike a whole `Map`, this allocates nothing for the names of
/// the known fields and no map at all when there is no other field.
#[derive(Default)]
struct TokenFields {
    access_token: Option<Value>,
    token_type: Option<Value>,
    expires_in: Option<Value>,
    scope: Option<Value>,
    /// Whether the body has an `error` field: an error despite the status.
    error: bool,
    extra: Map<String, Value>,
}

impl<'de> serde::Deserialize<'de> for TokenFields {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Fields;

        impl<'de> serde::de::Visitor<'de> for Fields {
            type Value = TokenFields;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<TokenFields, A::Error> {
                let mut fields = TokenFields::default();
                while let Some(name) = map.next_key::<FieldName<'de>>()? {
                    let value = map.next_value::<Value>()?;
                    let slot = match &*name.0 {
                        "access_token" => &mut fields.access_token,
                        "token_type" => &mut fields.token_type,
                        "expires_in" => &mut fields.expires_in,
                        "scope" => &mut fields.scope,
                        _ => {
                            fields.error |= name.0 == "error";
                            fields.extra.insert(name.0.into_owned(), value);
                            continue;
                        }
                    };
                    *slot = Some(value);
                }
                Ok(fields)
            }
        }

        deserializer.deserialize_map(Fields)
    }
}

/// A field name, borrowed from the body unless it has escapes.
struct FieldName<'de>(std::borrow::Cow<'de, str>);

impl<'de> serde::Deserialize<'de> for FieldName<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Name;

        impl<'de> serde::de::Visitor<'de> for Name {
            type Value = FieldName<'de>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a field name")
            }

            fn visit_borrowed_str<E>(self, name: &'de str) -> Result<FieldName<'de>, E> {
                Ok(FieldName(std::borrow::Cow::Borrowed(name)))
            }

            fn visit_str<E>(self, name: &str) -> Result<FieldName<'de>, E> {
                Ok(FieldName(std::borrow::Cow::Owned(name.to_owned())))
            }

            fn visit_string<E>(self, name: String) -> Result<FieldName<'de>, E> {
                Ok(FieldName(std::borrow::Cow::Owned(name)))
            }
        }

        deserializer.deserialize_str(Name)
    }
}

/// Reads the error shapes that providers use into one model:
/// `{error, error_description, error_uri}` (RFC 6749 §5.2),
/// `{error: {code, message}}`, `{code, description}` and `{code, message}`.
fn oauth_error(fields: &Map<String, Value>, scrubber: &Scrubber) -> Option<OAuthError> {
    let text = |value: Option<&Value>| -> Option<String> {
        match value? {
            Value::String(text) => Some(scrubber.scrub(text)),
            Value::Number(number) => Some(scrubber.scrub(&number.to_string())),
            _ => None,
        }
    };
    match fields.get("error") {
        Some(Value::Object(nested)) => return oauth_error(nested, scrubber),
        Some(code @ Value::String(_)) => {
            return Some(OAuthError {
                code: text(Some(code))?,
                description: text(fields.get("error_description"))
                    .or_else(|| text(fields.get("message"))),
                uri: text(fields.get("error_uri")),
            });
        }
        _ => {}
    }
    let code = text(fields.get("code"))?;
    Some(OAuthError {
        code,
        description: text(fields.get("description"))
            .or_else(|| text(fields.get("message")))
            .or_else(|| text(fields.get("error_description"))),
        uri: None,
    })
}

/// `expires_in` as a number, a numeric string or a float, in seconds.
fn parse_seconds(value: &Value) -> Option<f64> {
    let seconds = match value {
        Value::Number(number) => number.as_f64()?,
        Value::String(text) => text.trim().parse::<f64>().ok()?,
        _ => return None,
    };
    seconds.is_finite().then_some(seconds)
}

/// The seconds left on a JWT's `exp`, by the local wall clock.
/// Refuses a JWT access token whose `cnf.x5t#S256` (RFC 8705 §3.1) names
/// another certificate than `presented`, the one the request was sent with
/// (or any, when none was). Thumbprints are public: the error shows them.
fn check_binding(access_token: &str, presented: Option<&str>) -> Result<(), Error> {
    #[derive(serde::Deserialize)]
    struct Claims {
        cnf: Option<Cnf>,
    }
    #[derive(serde::Deserialize)]
    struct Cnf {
        #[serde(rename = "x5t#S256")]
        x5t: Option<String>,
    }
    let Some(bound) = decode_jwt_payload::<Claims>(access_token)
        .ok()
        .and_then(|claims| claims.cnf?.x5t)
    else {
        return Ok(());
    };
    if presented == Some(bound.as_str()) {
        return Ok(());
    }
    let presented = match presented {
        Some(thumbprint) => format!("the one presented has {thumbprint}"),
        None => "none was presented".to_owned(),
    };
    Err(Error::new(
        ErrorKind::InvalidResponse,
        format!(
            "the token is bound to the client certificate with x5t#S256 {bound}, but {presented}"
        ),
    ))
}

fn jwt_remaining(access_token: &str) -> Option<f64> {
    #[derive(serde::Deserialize)]
    struct Exp {
        exp: Option<Value>,
    }
    let exp = decode_jwt_payload::<Exp>(access_token).ok()?.exp?;
    let exp = parse_seconds(&exp)?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .ok()?
        .as_secs_f64();
    Some(exp - now)
}

/// The token's lifetime, counted from when the request was sent, which was
/// `in_transit` before the response arrived: `expires_in`, capped by the
/// JWT's `exp`; without `expires_in`, the JWT's `exp`; without either,
/// `default`.
///
/// A token that would expire within [`MIN_LIFETIME`] of arriving cannot be
/// used, so it is an error, as is a JWT whose `exp` has passed.
fn lifetime(
    expires_in: Option<f64>,
    jwt_remaining: Option<f64>,
    default: Duration,
    in_transit: Duration,
) -> Result<Duration, String> {
    let min = MIN_LIFETIME.as_secs_f64();
    if let Some(remaining) = jwt_remaining
        && remaining < min
    {
        return Err(format!(
            "the token's JWT exp is {:.0} s in the past by the local clock; it cannot be used (if the token is new, check this machine's clock)",
            (-remaining).max(0.0).ceil()
        ));
    }
    if let Some(expires_in) = expires_in
        && expires_in < min
    {
        return Err(format!(
            "expires_in {expires_in} leaves no time to use the token"
        ));
    }
    // The JWT's `exp` is read now, on arrival; `expires_in` counts from
    // when the request left.
    let in_transit_s = in_transit.as_secs_f64();
    let seconds = match (expires_in, jwt_remaining) {
        (Some(expires_in), Some(jwt)) => expires_in.min(jwt + in_transit_s),
        (Some(expires_in), None) => expires_in,
        (None, Some(jwt)) => jwt + in_transit_s,
        (None, None) => default.as_secs_f64(),
    };
    if seconds - in_transit_s < min {
        return Err(format!(
            "the token expired in transit: expires_in {seconds} but the answer took {in_transit_s:.1} s"
        ));
    }
    Ok(Duration::try_from_secs_f64(seconds)
        .unwrap_or(MAX_LIFETIME)
        .min(MAX_LIFETIME))
}

fn header_u64(headers: &HeaderMap, name: &str) -> Option<u64> {
    headers.get(name)?.to_str().ok()?.trim().parse().ok()
}

/// `Retry-After` as delay-seconds or an HTTP date.
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let date = httpdate::parse_http_date(value).ok()?;
    Some(
        date.duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifetime_rules() {
        let default = Duration::from_secs(300);
        let secs = Duration::from_secs;
        let now = Duration::ZERO;
        let ok = |expires_in, jwt| lifetime(expires_in, jwt, default, now).expect("usable");
        assert_eq!(ok(Some(3600.0), None), secs(3600));
        assert_eq!(ok(Some(3600.0), Some(1800.0)), secs(1800));
        assert_eq!(ok(Some(60.0), Some(1800.0)), secs(60));
        assert_eq!(ok(None, Some(900.0)), secs(900));
        assert_eq!(ok(None, None), default);
        assert_eq!(ok(Some(1e30), None), MAX_LIFETIME);
        assert_eq!(ok(Some(59.5), None), Duration::from_millis(59_500));
    }

    #[test]
    fn tokens_expired_on_arrival_are_errors() {
        let default = Duration::from_secs(300);
        for (expires_in, jwt) in [
            (Some(0.0), None),
            (Some(-3600.0), None),
            (Some(0.001), None),
            (Some(0.999), Some(3600.0)),
            (None, Some(-1.0)),
            (None, Some(0.5)),
            (Some(3600.0), Some(-5.0)),
        ] {
            let error =
                lifetime(expires_in, jwt, default, Duration::ZERO).expect_err("expired on arrival");
            assert!(!error.is_empty());
        }
    }

    #[test]
    fn lifetime_counts_from_the_request() {
        let default = Duration::from_secs(300);
        let transit = Duration::from_millis(2500);
        // expires_in counts from the request: 4 s, of which 2.5 s are gone.
        assert_eq!(
            lifetime(Some(4.0), None, default, transit),
            Ok(Duration::from_secs(4))
        );
        // A JWT's exp is read on arrival: 100 s left then is 102.5 s from
        // the request.
        assert_eq!(
            lifetime(None, Some(100.0), default, transit),
            Ok(Duration::from_millis(102_500))
        );
        assert!(lifetime(Some(3.0), None, default, transit).is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn the_lifetime_starts_when_the_request_left() {
        let sent = Instant::now();
        tokio::time::advance(Duration::from_millis(2500)).await;
        let body = br#"{"access_token":"t","expires_in":4}"#.to_vec();
        let token = EndpointResponse::new(200, HeaderMap::new(), body)
            .with_sent_at(sent)
            .parse(Duration::from_secs(300), &crate::scrub::Scrubber::new())
            .expect("token");
        assert_eq!(token.issued_at(), sent);
        assert_eq!(token.expires_at(), sent + Duration::from_secs(4));
        assert_eq!(token.expires_in(), Duration::from_millis(1500));
    }

    #[tokio::test(start_paused = true)]
    async fn fields_are_read_in_one_pass_escaped_names_included() {
        let parse = |body: &str| {
            EndpointResponse::new(200, HeaderMap::new(), body.as_bytes().to_vec())
                .parse(Duration::from_secs(300), &crate::scrub::Scrubber::new())
        };
        let token =
            parse(r#"{"acc\u0065ss_token":"t","expires_in":"60","o\u0072g":1,"scope":["a","b"]}"#)
                .expect("token");
        assert_eq!(token.lifetime(), Duration::from_secs(60));
        assert_eq!(token.scope(), Some("a b"));
        assert_eq!(token.extra().len(), 1);
        assert_eq!(token.extra()["org"], 1);
        let token = parse(r#"{"access_token":"t"}"#).expect("token");
        assert!(token.extra().is_empty());
        assert_eq!(token.scope(), None);

        let refused = parse(r#"{"access_token":"t","error":"invalid_client"}"#)
            .expect_err("an error body despite the status");
        assert_eq!(refused.kind(), ErrorKind::Refused);
        assert_eq!(
            refused.oauth().map(|oauth| oauth.code.as_str()),
            Some("invalid_client")
        );
        let not_an_object = parse("[1]").expect_err("not an object");
        assert_eq!(not_an_object.kind(), ErrorKind::InvalidResponse);
    }

    #[test]
    fn seconds_accept_numbers_strings_and_floats() {
        assert_eq!(parse_seconds(&serde_json::json!(3600)), Some(3600.0));
        assert_eq!(parse_seconds(&serde_json::json!("3600")), Some(3600.0));
        assert_eq!(parse_seconds(&serde_json::json!(" 3600 ")), Some(3600.0));
        assert_eq!(parse_seconds(&serde_json::json!(3599.5)), Some(3599.5));
        assert_eq!(parse_seconds(&serde_json::json!("soon")), None);
        assert_eq!(parse_seconds(&serde_json::json!(null)), None);
    }

    #[tokio::test]
    async fn a_token_is_bound_to_the_certificate_it_was_requested_with() {
        use base64::Engine as _;
        let jwt = |claims: &str| {
            let encode = |text: &str| {
                base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(text.as_bytes())
            };
            format!("{}.{}.sig", encode(r#"{"alg":"ES256"}"#), encode(claims))
        };
        let answer = |token: &str, presented: Option<&str>| {
            let body = format!(r#"{{"access_token":"{token}","expires_in":3600}}"#);
            EndpointResponse::new(200, HeaderMap::new(), body.into_bytes())
                .with_certificate(presented.map(Arc::from))
                .parse(Duration::from_secs(60), &Scrubber::default())
        };
        let bound = jwt(r#"{"cnf":{"x5t#S256":"AAA"}}"#);

        let token = answer(&bound, Some("AAA")).expect("bound to the one presented");
        assert_eq!(token.certificate(), Some("AAA"));
        let error = answer(&bound, Some("BBB")).expect_err("bound to another");
        assert_eq!(error.kind(), ErrorKind::InvalidResponse);
        assert_eq!(
            error.message(),
            "the token is bound to the client certificate with x5t#S256 AAA, but the one presented has BBB"
        );
        let error = answer(&bound, None).expect_err("none presented");
        assert!(
            error.message().ends_with("but none was presented"),
            "{error}"
        );

        // An opaque token, or a JWT without `cnf.x5t#S256`, is tied to the
        // certificate it was obtained with: nothing says it is not bound.
        let opaque = answer("opaque", Some("AAA")).expect("a token");
        assert_eq!(opaque.certificate(), Some("AAA"));
        let dpop_bound = answer(&jwt(r#"{"cnf":{"jkt":"K"}}"#), Some("AAA")).expect("a token");
        assert_eq!(dpop_bound.certificate(), Some("AAA"));
        assert_eq!(answer("opaque", None).expect("a token").certificate(), None);
    }
}
