//! The one error type of authmux.
//!
//! An [`Error`] is cheap to clone (one `Arc`), so a single failed fetch can be
//! handed to every caller that waited on it. Its `Display` is one line that
//! names the client and the provider; server-supplied text has passed
//! through the request's [`Scrubber`](crate::Scrubber): cut short, made one
//! line and scrubbed of every secret the request carried.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// What went wrong, coarsely. Match on it to decide what to tell a user; ask
/// [`Error::is_transient`] to decide whether to retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The configuration is invalid: a missing field, a bad URL, an insecure
    /// scheme. Retrying cannot help.
    Config,
    /// The request did not complete: DNS, connect, TLS or a broken connection.
    Transport,
    /// The request, or the whole fetch with its retries, ran out of time.
    Timeout,
    /// The provider refused the request with an OAuth error, such as
    /// `invalid_client` or `access_denied`.
    Refused,
    /// The provider is rate limiting this client (HTTP 429).
    RateLimited,
    /// The provider failed (HTTP 5xx).
    Server,
    /// The provider answered with something that is not a usable token
    /// response: HTML, truncated JSON, a body over the size cap, a redirect,
    /// a token that had expired on arrival.
    InvalidResponse,
    /// A bug outside the provider: the token source panicked. The cache
    /// treats it as a failed fetch and cools down.
    Internal,
    /// The authorization server's metadata (RFC 8414, OpenID Connect
    /// Discovery), read to find the token endpoint, could not be had: its
    /// URL failed (HTTP 5xx, 429, 408: transient, retried like a token
    /// request) or answered with something that is not metadata. No token
    /// request was sent. A metadata URL that cannot be reached is a
    /// `Transport` or `Timeout` error, and no metadata at either URL a
    /// `Config` one.
    Discovery,
    /// The client's own credential could not be read or has expired: a
    /// token issued by someone else (a Kubernetes service-account token, a
    /// CI OIDC token) whose file, environment variable or command failed,
    /// or that had expired when read. No token request was sent. Retrying
    /// at once cannot help; the cache's cool-down reads it again later. A
    /// command that runs out of time is a `Timeout` error.
    Credential,
}

impl ErrorKind {
    /// The kind that an HTTP error status implies.
    pub fn from_status(status: u16) -> Self {
        match status {
            408 => Self::Timeout,
            429 => Self::RateLimited,
            500..=599 => Self::Server,
            400..=499 => Self::Refused,
            _ => Self::InvalidResponse,
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Self::Config => "invalid configuration",
            Self::Transport => "could not reach the token endpoint",
            Self::Timeout => "timed out",
            Self::Refused => "the token endpoint refused the request",
            Self::RateLimited => "rate limited by the token endpoint",
            Self::Server => "the token endpoint failed",
            Self::InvalidResponse => "invalid response from the token endpoint",
            Self::Internal => "internal error",
            Self::Discovery => "could not read the authorization server's metadata",
            Self::Credential => "could not read the client's credential",
        }
    }
}

/// Whether a failure may go away if the same request is sent again.
///
/// This is the one place where authmux decides what to retry:
/// connect errors, timeouts, 408, 429 and 5xx are transient, and so is the
/// OAuth code `temporarily_unavailable` whatever its status. Every other 4xx
/// (`invalid_client`, `access_denied`, …), unparseable 2xx responses and
/// configuration errors are permanent.
pub fn is_transient(kind: ErrorKind, status: Option<u16>, oauth_code: Option<&str>) -> bool {
    if oauth_code == Some("temporarily_unavailable") {
        return true;
    }
    match (kind, status) {
        (_, Some(408 | 429 | 500..=599)) => true,
        (ErrorKind::Transport | ErrorKind::Timeout, _) => true,
        (ErrorKind::RateLimited | ErrorKind::Server, _) => true,
        (
            ErrorKind::Config
            | ErrorKind::Refused
            | ErrorKind::InvalidResponse
            | ErrorKind::Internal
            | ErrorKind::Discovery
            | ErrorKind::Credential,
            _,
        ) => false,
    }
}

/// An OAuth 2.0 error body (RFC 6749 §5.2), or one of the shapes that
/// providers use instead (`{code, description}`, `{code, message}`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OAuthError {
    /// The error code, such as `invalid_client`. For `{code, message}`
    /// bodies, the `code` value as a string (Mention Me sends `"401"`).
    pub code: String,
    /// The human-readable description, if the provider sent one.
    pub description: Option<String>,
    /// A URI with more information, if the provider sent one.
    pub uri: Option<String>,
}

/// The rate-limit headers of a response, kept as sent.
///
/// Providers disagree on `X-RateLimit-Reset`: Auth0 sends epoch seconds,
/// Mention Me seconds until the reset. Provider crates interpret it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RateLimit {
    /// `X-RateLimit-Limit`.
    pub limit: Option<u64>,
    /// `X-RateLimit-Remaining`.
    pub remaining: Option<u64>,
    /// `X-RateLimit-Reset`, as sent.
    pub reset: Option<u64>,
}

impl RateLimit {
    /// Whether no header was present.
    pub fn is_empty(&self) -> bool {
        self.limit.is_none() && self.remaining.is_none() && self.reset.is_none()
    }
}

type Source = Arc<dyn std::error::Error + Send + Sync>;

/// The error of every authmux operation.
#[derive(Clone)]
pub struct Error {
    inner: Arc<Inner>,
}

#[derive(Clone)]
struct Inner {
    kind: ErrorKind,
    message: Cow<'static, str>,
    client: Option<Arc<str>>,
    provider: Option<Arc<str>>,
    status: Option<u16>,
    oauth: Option<OAuthError>,
    retry_after: Option<Duration>,
    rate_limit: RateLimit,
    cooling_down: Option<Duration>,
    endpoint: Option<Arc<str>>,
    source: Option<Source>,
}

/// The most characters of server-supplied text that an error keeps; see
/// [`Scrubber::scrub`](crate::Scrubber::scrub).
pub const MAX_SERVER_TEXT: usize = 200;

impl Error {
    /// A new error of `kind` with a short, secret-free message.
    pub fn new(kind: ErrorKind, message: impl Into<Cow<'static, str>>) -> Self {
        Self {
            inner: Arc::new(Inner {
                kind,
                message: message.into(),
                client: None,
                provider: None,
                status: None,
                oauth: None,
                retry_after: None,
                rate_limit: RateLimit::default(),
                cooling_down: None,
                endpoint: None,
                source: None,
            }),
        }
    }

    /// A configuration error. By convention the message starts with the key
    /// path and says how to fix it: `audience: required unless resource is set`.
    pub fn config(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorKind::Config, message)
    }

    fn edit(mut self, change: impl FnOnce(&mut Inner)) -> Self {
        change(Arc::make_mut(&mut self.inner));
        self
    }

    /// Attaches the underlying cause, reachable through
    /// [`std::error::Error::source`]. It is not repeated in `Display`.
    ///
    /// The cause must not carry secrets in its own `Display` or `Debug`.
    pub fn with_source(self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.edit(|inner| inner.source = Some(Arc::new(source)))
    }

    /// Names the server that could not be reached: `url`'s origin only
    /// (`https://tenant.auth0.com`, a port when it is not the default),
    /// never its path or query, which may carry credentials. A transport
    /// error or a timeout then reads `could not reach https://…: …`.
    pub fn with_endpoint(self, url: &url::Url) -> Self {
        let origin = url.origin();
        if !origin.is_tuple() {
            return self;
        }
        self.edit(|inner| inner.endpoint = Some(Arc::from(origin.ascii_serialization())))
    }

    /// Attaches the HTTP status of the response.
    pub fn with_status(self, status: u16) -> Self {
        self.edit(|inner| inner.status = Some(status))
    }

    /// Attaches the parsed OAuth error body.
    pub fn with_oauth(self, oauth: OAuthError) -> Self {
        self.edit(|inner| inner.oauth = Some(oauth))
    }

    /// Attaches how long the server asked the client to wait.
    pub fn with_retry_after(self, retry_after: Duration) -> Self {
        self.edit(|inner| inner.retry_after = Some(retry_after))
    }

    /// Attaches the response's rate-limit headers.
    pub fn with_rate_limit(self, rate_limit: RateLimit) -> Self {
        self.edit(|inner| inner.rate_limit = rate_limit)
    }

    /// Names the client (the configured name) this error belongs to, unless
    /// one is named already.
    pub fn with_client(self, client: &Arc<str>) -> Self {
        if self.inner.client.is_some() {
            return self;
        }
        self.edit(|inner| inner.client = Some(Arc::clone(client)))
    }

    /// Names the provider (`auth0`, `mention-me`, …), unless one is named already.
    pub fn with_provider(self, provider: &str) -> Self {
        if self.inner.provider.is_some() {
            return self;
        }
        self.edit(|inner| inner.provider = Some(Arc::from(provider)))
    }

    /// Marks this error as the remembered result of a recent failure: the
    /// cache is cooling down and will not ask the provider again for `remaining`.
    pub fn cooling_down(self, remaining: Duration) -> Self {
        self.edit(|inner| inner.cooling_down = Some(remaining))
    }

    /// What went wrong.
    pub fn kind(&self) -> ErrorKind {
        self.inner.kind
    }

    /// Whether retrying later may succeed; see [`is_transient`]. An error
    /// handed out during a cool-down is always transient.
    pub fn is_transient(&self) -> bool {
        self.inner.cooling_down.is_some()
            || is_transient(self.inner.kind, self.inner.status, self.oauth_code())
    }

    /// The HTTP status of the response, if there was one.
    pub fn status(&self) -> Option<u16> {
        self.inner.status
    }

    /// The parsed OAuth error body, if the response had one.
    pub fn oauth(&self) -> Option<&OAuthError> {
        self.inner.oauth.as_ref()
    }

    /// The OAuth error code, such as `invalid_client`.
    pub fn oauth_code(&self) -> Option<&str> {
        self.inner.oauth.as_ref().map(|oauth| oauth.code.as_str())
    }

    /// The OAuth error description, if the provider sent one.
    pub fn oauth_description(&self) -> Option<&str> {
        self.inner.oauth.as_ref()?.description.as_deref()
    }

    /// How long the server asked the client to wait (`Retry-After`).
    pub fn retry_after(&self) -> Option<Duration> {
        self.inner.retry_after
    }

    /// The response's rate-limit headers.
    pub fn rate_limit(&self) -> RateLimit {
        self.inner.rate_limit
    }

    /// If this error was handed out by a cooling-down cache, the time left
    /// until the cache asks the provider again.
    pub fn cooldown_remaining(&self) -> Option<Duration> {
        self.inner.cooling_down
    }

    /// The origin of the server the error is about, if one was named with
    /// [`with_endpoint`](Self::with_endpoint): scheme, host and port only.
    pub fn endpoint(&self) -> Option<&str> {
        self.inner.endpoint.as_deref()
    }

    /// The configured client name, once the error has passed through a cache.
    pub fn client(&self) -> Option<&str> {
        self.inner.client.as_deref()
    }

    /// The provider name, once the error has passed through a cache.
    pub fn provider(&self) -> Option<&str> {
        self.inner.provider.as_deref()
    }

    /// The short message, without the context that `Display` adds.
    pub fn message(&self) -> &str {
        &self.inner.message
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = &*self.inner;
        match (&inner.client, &inner.provider) {
            (Some(client), Some(provider)) => write!(f, "client \"{client}\" ({provider}): ")?,
            (Some(client), None) => write!(f, "client \"{client}\": ")?,
            (None, Some(provider)) => write!(f, "{provider}: ")?,
            (None, None) => {}
        }
        match (inner.kind, &inner.endpoint) {
            // Their messages start with the config key, which says enough.
            (ErrorKind::Config | ErrorKind::Credential, _) => write!(f, "{}", inner.message)?,
            (ErrorKind::Transport, Some(endpoint)) => write!(f, "could not reach {endpoint}")?,
            (ErrorKind::Timeout, Some(endpoint)) => write!(f, "timed out waiting for {endpoint}")?,
            (kind, _) => write!(f, "{}", kind.describe())?,
        }
        if !matches!(inner.kind, ErrorKind::Config | ErrorKind::Credential)
            && !inner.message.is_empty()
        {
            write!(f, ": {}", inner.message)?;
        }
        if let Some(status) = inner.status {
            write!(f, " (HTTP {status}")?;
            if let Some(oauth) = &inner.oauth {
                // Mention Me's `{"code":"401",…}` would read `HTTP 401 401`.
                if oauth.code != status.to_string() {
                    write!(f, " {}", oauth.code)?;
                }
                if let Some(description) = &oauth.description {
                    write!(f, ": {description}")?;
                }
            }
            write!(f, ")")?;
        } else if let Some(oauth) = &inner.oauth {
            write!(f, " ({})", oauth.code)?;
        }
        if let Some(retry_after) = inner.retry_after {
            write!(f, "; retry after {}s", retry_after.as_secs_f64().ceil())?;
        }
        if let Some(remaining) = inner.cooling_down {
            write!(f, "; not retrying for {}s", remaining.as_secs_f64().ceil())?;
        }
        Ok(())
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = &*self.inner;
        let mut debug = f.debug_struct("Error");
        debug
            .field("kind", &inner.kind)
            .field("message", &inner.message)
            .field("client", &inner.client)
            .field("provider", &inner.provider)
            .field("status", &inner.status)
            .field("oauth", &inner.oauth);
        if inner.retry_after.is_some() {
            debug.field("retry_after", &inner.retry_after);
        }
        if !inner.rate_limit.is_empty() {
            debug.field("rate_limit", &inner.rate_limit);
        }
        if inner.cooling_down.is_some() {
            debug.field("cooling_down", &inner.cooling_down);
        }
        if inner.endpoint.is_some() {
            debug.field("endpoint", &inner.endpoint);
        }
        debug.field("source", &inner.source).finish()
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.inner
            .source
            .as_deref()
            .map(|source| source as &(dyn std::error::Error + 'static))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_classification_table() {
        use ErrorKind::*;
        let table: &[(ErrorKind, Option<u16>, Option<&str>, bool)] = &[
            (Transport, None, None, true),
            (Timeout, None, None, true),
            (Timeout, Some(408), None, true),
            (RateLimited, Some(429), Some("too_many_requests"), true),
            (Server, Some(500), None, true),
            (Server, Some(502), None, true),
            (Server, Some(503), Some("temporarily_unavailable"), true),
            (Refused, Some(400), Some("temporarily_unavailable"), true),
            (Refused, Some(400), Some("invalid_request"), false),
            (Refused, Some(401), Some("invalid_client"), false),
            (Refused, Some(403), Some("access_denied"), false),
            (Refused, Some(403), Some("unauthorized_client"), false),
            (Refused, Some(404), None, false),
            (InvalidResponse, Some(200), None, false),
            (InvalidResponse, Some(302), None, false),
            (InvalidResponse, Some(502), None, true),
            (Config, None, None, false),
            (Internal, None, None, false),
            (Discovery, Some(503), None, true),
            (Discovery, Some(429), None, true),
            (Discovery, Some(200), None, false),
            (Discovery, None, None, false),
            (Credential, None, None, false),
        ];
        for &(kind, status, code, transient) in table {
            assert_eq!(
                is_transient(kind, status, code),
                transient,
                "{kind:?} {status:?} {code:?}"
            );
        }
    }

    #[test]
    fn kind_from_status() {
        assert_eq!(ErrorKind::from_status(408), ErrorKind::Timeout);
        assert_eq!(ErrorKind::from_status(429), ErrorKind::RateLimited);
        assert_eq!(ErrorKind::from_status(503), ErrorKind::Server);
        assert_eq!(ErrorKind::from_status(401), ErrorKind::Refused);
        assert_eq!(ErrorKind::from_status(302), ErrorKind::InvalidResponse);
    }

    #[test]
    fn display_is_one_line_with_context() {
        let client: Arc<str> = Arc::from("api");
        let error = Error::new(ErrorKind::Refused, "")
            .with_status(403)
            .with_oauth(OAuthError {
                code: "access_denied".into(),
                description: Some("Client has not been granted scopes".into()),
                uri: None,
            })
            .with_client(&client)
            .with_provider("auth0");
        assert_eq!(
            error.to_string(),
            "client \"api\" (auth0): the token endpoint refused the request \
             (HTTP 403 access_denied: Client has not been granted scopes)"
        );
        assert!(!error.is_transient());
        let cooled = error.cooling_down(Duration::from_millis(4_200));
        assert!(cooled.is_transient());
        assert!(cooled.to_string().ends_with("; not retrying for 5s"));
    }

    #[test]
    fn a_status_is_not_repeated_as_the_oauth_code() {
        let error = Error::new(ErrorKind::Refused, "")
            .with_status(401)
            .with_oauth(OAuthError {
                code: "401".into(),
                description: Some("Expired token.".into()),
                uri: None,
            })
            .with_provider("mention-me");
        assert_eq!(
            error.to_string(),
            "mention-me: the token endpoint refused the request (HTTP 401: Expired token.)"
        );
        let bare = Error::new(ErrorKind::Refused, "")
            .with_status(403)
            .with_oauth(OAuthError {
                code: "403".into(),
                ..OAuthError::default()
            });
        assert_eq!(
            bare.to_string(),
            "the token endpoint refused the request (HTTP 403)"
        );
    }

    #[test]
    fn an_endpoint_is_named_by_its_origin_only() {
        let url = url::Url::parse("https://user:pw@tenant.auth0.com/oauth/token?key=s3cr3t#x")
            .expect("a URL");
        let client: Arc<str> = Arc::from("api");
        let error = Error::new(ErrorKind::Transport, "dns error: no such host")
            .with_endpoint(&url)
            .with_client(&client)
            .with_provider("auth0");
        assert_eq!(
            error.to_string(),
            "client \"api\" (auth0): could not reach https://tenant.auth0.com: dns error: no such host"
        );
        assert_eq!(error.endpoint(), Some("https://tenant.auth0.com"));
        let debug = format!("{error:?}");
        for hidden in ["/oauth", "s3cr3t", "pw@"] {
            assert!(!debug.contains(hidden), "{debug}");
        }
        let port = url::Url::parse("http://127.0.0.1:8080/a/b").expect("a URL");
        let timeout =
            Error::new(ErrorKind::Timeout, "no complete response in time").with_endpoint(&port);
        assert_eq!(
            timeout.to_string(),
            "timed out waiting for http://127.0.0.1:8080: no complete response in time"
        );
        let opaque = url::Url::parse("data:text/plain,secret").expect("a URL");
        assert_eq!(
            Error::new(ErrorKind::Transport, "x")
                .with_endpoint(&opaque)
                .endpoint(),
            None
        );
    }

    #[test]
    fn errors_are_send_sync_clone() {
        fn assert_traits<T: Send + Sync + Clone + 'static>() {}
        assert_traits::<Error>();
    }
}
