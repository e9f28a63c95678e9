//! The one wire layer that every provider reuses: a request description
//! ([`TokenRequest`]), a shared HTTP client ([`HttpClient`]) and lenient
//! response parsing.

mod challenge;
mod fresh;
mod prepared;
mod request;
mod response;
mod tls;

pub use challenge::www_authenticate_error;
pub use fresh::FreshValue;
pub use prepared::{Attempt, Attempts, CLIENT_CERTIFICATE_FIELD, PreparedRequest, RequestSource};
pub use request::{
    BodyEncoding, ClientAuth, DEFAULT_LIFETIME, TokenRequest, TokenRequestBuilder, is_loopback,
    validate_url,
};
pub use response::{EndpointResponse, MIN_LIFETIME};
pub use tls::{CertificateInfo, DIRECT, ProxyUrl, TlsConfig, thumbprint};

pub use reqwest::header::{HeaderMap, HeaderName, HeaderValue};

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use arc_swap::ArcSwap;

use crate::error::{Error, ErrorKind};
use crate::external::FileStamp;
use crate::scrub::Scrubber;
use crate::token::Token;

/// The most bytes of a token endpoint response that are read.
pub const MAX_BODY: usize = 256 * 1024;

/// The `User-Agent` of every token request.
pub const USER_AGENT: &str = concat!("authmux/", env!("CARGO_PKG_VERSION"));

/// A shared HTTP client for token endpoints: reqwest with rustls, no
/// redirects, connect and total timeouts, a response body cap, and the
/// client's TLS identity and proxy ([`HttpConfig::tls`],
/// [`HttpConfig::proxy`]).
///
/// Certificate, key and CA files are watched: when one changes (cert-manager
/// replaces them in place), the next request reads them again and goes out
/// on new connections with the new certificate. A change that cannot be
/// read (a file half written) keeps the previous certificate until the
/// files change again.
///
/// Cloning is cheap and shares the connection pool.
#[derive(Clone, Debug)]
pub struct HttpClient {
    /// One pointer: every token source holds a clone.
    inner: Arc<HttpClientInner>,
}

#[derive(Debug)]
struct HttpClientInner {
    config: HttpConfig,
    /// The files of [`HttpConfig::tls`], watched for changes.
    watched: Box<[PathBuf]>,
    transport: ArcSwap<Transport>,
    /// Held while files are read again; the stamps of the last version
    /// that could not be used, so that it is not read at every request.
    reloading: Mutex<Option<Box<[Option<FileStamp>]>>>,
}

/// One reading of the client's TLS files: the clients built from it.
#[derive(Debug)]
struct Transport {
    token: reqwest::Client,
    /// For API calls, built on first use: no total timeout.
    api: OnceLock<reqwest::Client>,
    certificate: Option<Arc<str>>,
    stamps: Box<[Option<FileStamp>]>,
}

/// The HTTP client that API calls with a client's tokens go through: the
/// client's CAs, certificate and proxy, no redirects (the
/// [middleware](https://docs.rs/authmux) follows them itself), its connect
/// timeout and no total one. See [`HttpClient::api_client`].
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ApiClient {
    /// The reqwest client, with the certificate below.
    pub client: reqwest::Client,
    /// The `x5t#S256` thumbprint of the client certificate it presents.
    pub certificate: Option<Arc<str>>,
}

/// Settings for an [`HttpClient`]. Equal settings make equal clients,
/// which is how a registry shares one among the clients that have them.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct HttpConfig {
    /// How long to wait for a connection (default 10 s).
    pub connect_timeout: Duration,
    /// How long a whole request may take, body included (default 30 s).
    pub timeout: Duration,
    /// The response body cap in bytes (default [`MAX_BODY`]).
    pub max_body: usize,
    /// The lifetime assumed when a response has neither `expires_in` nor a
    /// JWT `exp` (default [`DEFAULT_LIFETIME`]). Never "forever".
    pub default_lifetime: Duration,
    /// The CAs to trust and the client certificate to present.
    pub tls: TlsConfig,
    /// The proxy for every request. Unless set, `HTTPS_PROXY`,
    /// `HTTP_PROXY`, `ALL_PROXY` and `NO_PROXY` (or their lower-case
    /// forms) are honoured; when set, it is used for every request and
    /// `NO_PROXY` is not consulted: configuration beats the environment.
    pub proxy: Option<ProxyUrl>,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(10),
            timeout: Duration::from_secs(30),
            max_body: MAX_BODY,
            default_lifetime: DEFAULT_LIFETIME,
            tls: TlsConfig::default(),
            proxy: None,
        }
    }
}

impl HttpConfig {
    /// Sets the connect timeout.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Sets the total request timeout.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sets the response body cap.
    pub fn max_body(mut self, max_body: usize) -> Self {
        self.max_body = max_body;
        self
    }

    /// Sets the lifetime assumed when a response gives none.
    pub fn default_lifetime(mut self, lifetime: Duration) -> Self {
        self.default_lifetime = lifetime;
        self
    }

    /// Sets the CAs to trust and the client certificate to present.
    pub fn tls(mut self, tls: TlsConfig) -> Self {
        self.tls = tls;
        self
    }

    /// Sends every request through `proxy` instead of the environment's.
    pub fn proxy(mut self, proxy: ProxyUrl) -> Self {
        self.proxy = Some(proxy);
        self
    }
}

impl HttpClient {
    /// A client with the default [`HttpConfig`].
    pub fn new() -> Result<Self, Error> {
        Self::with_config(HttpConfig::default())
    }

    /// A client with `config`. Reads every PEM of [`HttpConfig::tls`]
    /// now; errors name the key: `tls_client_certificate: /etc/x.pem: no
    /// certificate in it`.
    pub fn with_config(config: HttpConfig) -> Result<Self, Error> {
        let watched: Box<[PathBuf]> = config.tls.files().map(Path::to_path_buf).collect();
        let transport = Transport::build(&config, stamps(&watched))?;
        Ok(Self {
            inner: Arc::new(HttpClientInner {
                config,
                watched,
                transport: ArcSwap::from_pointee(transport),
                reloading: Mutex::new(None),
            }),
        })
    }

    /// The transport for the next request: the current one, or a new one
    /// if a watched file changed since it was built.
    fn transport(&self) -> Arc<Transport> {
        let current = self.inner.transport.load_full();
        if self.inner.watched.is_empty() {
            return current;
        }
        let now = stamps(&self.inner.watched);
        if now == current.stamps {
            return current;
        }
        let mut failed = self
            .inner
            .reloading
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let current = self.inner.transport.load_full();
        if now == current.stamps || failed.as_ref() == Some(&now) {
            return current;
        }
        match Transport::build(&self.inner.config, now.clone()) {
            Ok(transport) => {
                tracing::info!(
                    certificate = transport.certificate.as_deref().unwrap_or("none"),
                    previous = current.certificate.as_deref().unwrap_or("none"),
                    "TLS files changed; read them again"
                );
                *failed = None;
                let transport = Arc::new(transport);
                self.inner.transport.store(Arc::clone(&transport));
                transport
            }
            Err(error) => {
                tracing::warn!(
                    error = %error,
                    "TLS files changed but cannot be used; keeping the previous ones"
                );
                *failed = Some(now);
                current
            }
        }
    }

    /// Whether the client presents a TLS client certificate, as
    /// `tls_client_auth` and `self_signed_tls_client_auth` need.
    pub fn has_client_certificate(&self) -> bool {
        self.inner.config.tls.client_certificate.is_some()
    }

    /// Whether the client has CAs, a client certificate or a proxy of its
    /// own: API calls with its tokens must then go through
    /// [`api_client`](Self::api_client), not any client.
    pub fn has_own_transport(&self) -> bool {
        self.inner.config.tls != TlsConfig::default() || self.inner.config.proxy.is_some()
    }

    /// The RFC 8705 `x5t#S256` thumbprint of the client certificate this
    /// client presents now, if any: part of the identity of every token it
    /// gets, so that tokens a server binds to different certificates are
    /// cached and stored apart, and the certificate the tokens it gets are
    /// bound to (see [`Token::certificate`]).
    pub fn client_certificate_thumbprint(&self) -> Option<Arc<str>> {
        self.transport().certificate.clone()
    }

    /// The client for API calls with this client's tokens: its CAs,
    /// certificate and proxy (read again if their files changed), no
    /// redirects, its connect timeout and no total timeout.
    pub fn api_client(&self) -> Result<ApiClient, Error> {
        // The files are read again for the API client; should they change
        // in between, the certificate read is not the transport's, and the
        // transport is built anew first.
        for _ in 0..3 {
            let transport = self.transport();
            if let Some(client) = transport.api.get() {
                return Ok(ApiClient {
                    client: client.clone(),
                    certificate: transport.certificate.clone(),
                });
            }
            let (builder, certificate) = builder(&self.inner.config)?;
            if certificate != transport.certificate {
                continue;
            }
            let client = builder
                .build()
                .map_err(|error| build_error(&self.inner.config, error))?;
            return Ok(ApiClient {
                client: transport.api.get_or_init(|| client).clone(),
                certificate,
            });
        }
        Err(Error::new(
            ErrorKind::Transport,
            "the TLS files keep changing while they are read",
        ))
    }

    /// The reqwest client of token requests, for plugging into other
    /// crates: the current one, which changes when the TLS files do.
    pub fn reqwest(&self) -> reqwest::Client {
        self.transport().token.clone()
    }

    /// Sends one token request and parses the response into a [`Token`].
    pub async fn fetch_token(&self, request: &TokenRequest) -> Result<Token, Error> {
        let default_lifetime = request
            .default_lifetime()
            .unwrap_or(self.inner.config.default_lifetime);
        let attempt = request.prepare()?.attempt(request.scrubber()).await?;
        self.execute(attempt.request)
            .await?
            .parse(default_lifetime, &attempt.scrubber)
    }

    /// The lifetime this client assumes when a response gives none.
    pub fn default_lifetime(&self) -> Duration {
        self.inner.config.default_lifetime
    }

    /// Sends one token request and reads the response, capped at the body
    /// limit, without interpreting it. Providers that need the raw response
    /// (a DPoP nonce, say) call this, then [`EndpointResponse::into_token`].
    /// A client assertion minted for the request is not known to
    /// `request.scrubber()`: use [`PreparedRequest::attempt`] to get a
    /// scrubber that knows it.
    pub async fn send(&self, request: &TokenRequest) -> Result<EndpointResponse, Error> {
        self.execute(request.prepare()?.to_request().await?).await
    }

    /// Sends one token request with a fresh DPoP proof, retrying once with
    /// the server's nonce when it answers `use_dpop_nonce`, and checks that
    /// the token is DPoP-bound (see [`Dpop::bind`](crate::dpop::Dpop::bind)).
    pub async fn fetch_token_dpop(
        &self,
        request: &TokenRequest,
        dpop: &crate::dpop::Dpop,
    ) -> Result<Token, Error> {
        let default_lifetime = request
            .default_lifetime()
            .unwrap_or(self.inner.config.default_lifetime);
        let prepared = request.prepare()?;
        let (response, scrubber) = self
            .exchange_dpop(Attempts::Prepared(&prepared, request.scrubber()), dpop)
            .await?;
        dpop.bind(response.parse(default_lifetime, &scrubber)?)
    }

    /// Sends a prepared token request with a fresh DPoP proof for its method
    /// and URL. Every response's `DPoP-Nonce` is remembered; a 400
    /// `use_dpop_nonce` is retried exactly once with the new nonce, and a
    /// second one is returned as the answer, never looped on.
    pub async fn execute_dpop(
        &self,
        request: reqwest::Request,
        dpop: &crate::dpop::Dpop,
    ) -> Result<EndpointResponse, Error> {
        let copies = Attempts::Copies(Box::new([request.try_clone(), Some(request)]));
        Ok(self.exchange_dpop(copies, dpop).await?.0)
    }

    /// The DPoP exchange of [`execute_dpop`](Self::execute_dpop), with each
    /// request, the retry included, made by `next` (so that whatever must
    /// be new in every request, such as a client assertion, is). `next`
    /// returns `None` when the request cannot be sent again. Returns the
    /// answer and the scrubber of the request it answers.
    pub(crate) async fn exchange_dpop(
        &self,
        mut attempts: Attempts<'_>,
        dpop: &crate::dpop::Dpop,
    ) -> Result<(EndpointResponse, Scrubber), Error> {
        let first = attempts
            .next()
            .await
            .ok_or_else(|| Error::config("no request to send"))??;
        let url = first.request.url().clone();
        let response = self.execute(with_proof(first.request, dpop)?).await?;
        let learned = dpop.nonces().remember(&url, response.headers());
        let challenged = crate::dpop::is_nonce_challenge(response.status(), response.body());
        if !(challenged && learned) {
            return Ok((response, first.scrubber));
        }
        let Some(retry) = attempts.next().await else {
            return Ok((response, first.scrubber));
        };
        let retry = retry?;
        tracing::debug!("token endpoint asked for a DPoP nonce; retrying once");
        let response = self.execute(with_proof(retry.request, dpop)?).await?;
        dpop.nonces().remember(&url, response.headers());
        if crate::dpop::is_nonce_challenge(response.status(), response.body()) {
            return Err(Error::new(
                ErrorKind::Refused,
                "the server demanded a new DPoP nonce again after one retry",
            )
            .with_status(response.status()));
        }
        Ok((response, retry.scrubber))
    }

    /// Sends a `GET` of `url` with `Accept: application/json` (an OAuth 2.0
    /// metadata document, say) under this client's rules: no redirects,
    /// its timeouts (`timeout` overriding the total one) and the body cap.
    /// The response is read, not interpreted; the caller checks the URL's
    /// scheme with [`validate_url`] first.
    pub async fn get_json(
        &self,
        url: &url::Url,
        timeout: Option<Duration>,
    ) -> Result<EndpointResponse, Error> {
        let mut request = reqwest::Request::new(reqwest::Method::GET, url.clone());
        request.headers_mut().insert(
            reqwest::header::ACCEPT,
            HeaderValue::from_static("application/json"),
        );
        *request.timeout_mut() = timeout;
        self.execute(request).await
    }

    /// Sends any prepared request with this client's settings (no
    /// redirects, timeouts, the body cap) and reads the response. For glue
    /// code that builds requests elsewhere, such as the `oauth2` crate.
    pub async fn execute(&self, request: reqwest::Request) -> Result<EndpointResponse, Error> {
        let started = tokio::time::Instant::now();
        let transport = self.transport();
        let max_body = self.inner.config.max_body;
        let mut response = transport
            .token
            .execute(request)
            .await
            .map_err(transport_error)?;
        let status = response.status().as_u16();
        let headers = std::mem::take(response.headers_mut());
        if response
            .content_length()
            .is_some_and(|length| length > max_body as u64)
        {
            return Err(body_too_large(status, max_body));
        }
        // Sized by the announced length (checked against the cap above), so
        // that a body in one chunk is copied once.
        let announced = response.content_length().unwrap_or(0) as usize;
        let mut body = Vec::with_capacity(announced);
        while let Some(chunk) = response.chunk().await.map_err(transport_error)? {
            if body.len() + chunk.len() > max_body {
                return Err(body_too_large(status, max_body));
            }
            body.extend_from_slice(&chunk);
        }
        tracing::debug!(
            url = %response.url(),
            status,
            bytes = body.len(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "token endpoint answered"
        );
        Ok(EndpointResponse::new(status, headers, body)
            .with_sent_at(started)
            .with_certificate(transport.certificate.clone()))
    }
}

impl Transport {
    /// Reads the TLS files of `config` and builds the token client.
    fn build(config: &HttpConfig, stamps: Box<[Option<FileStamp>]>) -> Result<Self, Error> {
        let (builder, certificate) = builder(config)?;
        let token = builder
            .timeout(config.timeout)
            .build()
            .map_err(|error| build_error(config, error))?;
        Ok(Self {
            token,
            api: OnceLock::new(),
            certificate,
            stamps,
        })
    }
}

/// A reqwest builder with what token requests and API calls share: no
/// redirects, the connect timeout, the TLS identity and the proxy.
fn builder(config: &HttpConfig) -> Result<(reqwest::ClientBuilder, Option<Arc<str>>), Error> {
    let builder = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(config.connect_timeout)
        .user_agent(USER_AGENT);
    let (mut builder, certificate) = config.tls.apply(builder)?;
    match config.proxy.as_ref().map(ProxyUrl::as_url) {
        None => {}
        Some(None) => builder = builder.no_proxy(),
        Some(Some(url)) => {
            let proxy = reqwest::Proxy::all(url.as_str())
                .map_err(|_| Error::config("proxy: not a proxy URL reqwest takes"))?;
            builder = builder.proxy(proxy);
        }
    }
    Ok((builder, certificate))
}

/// A failed build, named by what is wrong: the cause (a rustls error)
/// never holds a key.
fn build_error(config: &HttpConfig, error: reqwest::Error) -> Error {
    let (cause, tls) = root_cause(&error);
    let message = match (tls, &config.tls.client_key) {
        (Some(rustls::Error::InconsistentKeys(_)), Some(_)) => {
            "tls_client_key: not the key of tls_client_certificate".to_owned()
        }
        (Some(rustls::Error::InconsistentKeys(_)), None) => {
            "tls_client_certificate: its private key is not the certificate's".to_owned()
        }
        _ => join("cannot build the HTTP client", &cause),
    };
    Error::new(ErrorKind::Config, message).with_source(error.without_url())
}

/// The stamps of `files` now; `None` for one that cannot be read.
fn stamps(files: &[PathBuf]) -> Box<[Option<FileStamp>]> {
    files
        .iter()
        .map(|file| {
            std::fs::metadata(file)
                .ok()
                .map(|meta| FileStamp::of(&meta))
        })
        .collect()
}

/// Adds a fresh DPoP proof for the request's own method and URL.
fn with_proof(
    mut request: reqwest::Request,
    dpop: &crate::dpop::Dpop,
) -> Result<reqwest::Request, Error> {
    let proof = dpop.proof(request.method().as_str(), request.url(), None)?;
    request.headers_mut().insert(crate::dpop::DPOP, proof);
    Ok(request)
}

fn body_too_large(status: u16, max_body: usize) -> Error {
    Error::new(
        ErrorKind::InvalidResponse,
        format!("the response body exceeds the {} KiB cap", max_body / 1024),
    )
    .with_status(status)
}

/// Turns a reqwest failure into a one-line [`Error`]: a timeout, a
/// refusal of the client certificate, or a transport error that names the
/// server by its origin (never the path or query, which may carry
/// credentials) and the root cause, read down the
/// [`source`](std::error::Error::source) chain:
///
/// ```text
/// could not reach https://tenant.auth0.com: dns error: failed to lookup address information: …
/// could not reach http://127.0.0.1:8080: tcp connect error: Connection refused (os error 111)
/// could not reach https://tenant.auth0.com: TLS error: invalid peer certificate: UnknownIssuer
/// the token endpoint refused the request: TLS alert certificate_required: the server does not accept the client certificate
/// ```
///
/// A TLS alert about the client's certificate (`bad_certificate`,
/// `certificate_required`, `unknown_ca`…), which a server sends when it
/// refuses the certificate in the handshake, is [`ErrorKind::Refused`]:
/// the credentials were refused, and retrying cannot help. A server
/// certificate the client does not trust stays a transport error.
///
/// The reqwest error stays reachable as the source, without its URL.
pub fn transport_error(error: reqwest::Error) -> Error {
    let (cause, tls) = root_cause(&error);
    let (kind, message) = if let Some(alert) = tls.and_then(refusal) {
        (
            ErrorKind::Refused,
            format!("TLS alert {alert}: the server does not accept the client certificate"),
        )
    } else if error.is_timeout() {
        (
            ErrorKind::Timeout,
            "no complete response in time".to_owned(),
        )
    } else if error.is_body() || error.is_decode() {
        (
            ErrorKind::Transport,
            join("the connection broke while reading the response", &cause),
        )
    } else if tls.is_some() {
        (ErrorKind::Transport, join("TLS error", &cause))
    } else if cause.is_empty() {
        (ErrorKind::Transport, "the request failed".to_owned())
    } else {
        (ErrorKind::Transport, cause)
    };
    let mut converted = Error::new(kind, message);
    if let Some(url) = error.url() {
        converted = converted.with_endpoint(url);
    }
    converted.with_source(error.without_url())
}

/// The RFC 8446 name of an alert by which a server refuses the client's
/// certificate (or its absence), if `error` received one.
fn refusal(error: &rustls::Error) -> Option<String> {
    use rustls::AlertDescription as Alert;
    let rustls::Error::AlertReceived(alert) = error else {
        return None;
    };
    let refused = matches!(
        alert,
        Alert::BadCertificate
            | Alert::UnsupportedCertificate
            | Alert::CertificateRevoked
            | Alert::CertificateExpired
            | Alert::CertificateUnknown
            | Alert::UnknownCA
            | Alert::AccessDenied
            | Alert::CertificateRequired
    );
    // `UnknownCA` to `unknown_ca`, `CertificateRequired` to
    // `certificate_required`: the names the RFC and servers' logs use.
    let mut name = String::new();
    let mut after_upper = true;
    for c in format!("{alert:?}").chars() {
        if c.is_ascii_uppercase() && !after_upper {
            name.push('_');
        }
        after_upper = c.is_ascii_uppercase();
        name.push(c.to_ascii_lowercase());
    }
    refused.then_some(name)
}

fn join(what: &str, cause: &str) -> String {
    if cause.is_empty() {
        what.to_owned()
    } else {
        format!("{what}: {cause}")
    }
}

/// The causes below a reqwest error, joined by `: `, and the rustls error
/// among them, if any. hyper's `client error (…)` layer, which only names
/// the stage, is left out, and so is a cause that its parent's text
/// already ends with.
fn root_cause(error: &reqwest::Error) -> (String, Option<&rustls::Error>) {
    use std::error::Error as _;
    let mut text = String::new();
    let mut tls = None;
    let mut source = error.source();
    while let Some(cause) = source {
        tls = tls.or_else(|| as_tls(cause));
        let cause_text = cause.to_string();
        if !cause_text.starts_with("client error (") && !text.ends_with(&cause_text) {
            if !text.is_empty() {
                text.push_str(": ");
            }
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    let text = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    (text, tls)
}

/// `error` as a rustls error, or the rustls error an I/O error wraps (as
/// the TLS stream and the connector report them).
fn as_tls<'a>(mut error: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    loop {
        if let Some(tls) = error.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        error = error
            .downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::get_ref)?;
    }
}

/// Joins a configured base URL and an endpoint path, tolerating a trailing
/// slash on the base: `https://host/` + `/oauth/token`.
pub fn join_url(base: &str, path: &str) -> String {
    format!(
        "{}/{}",
        base.trim().trim_end_matches('/'),
        path.trim_start_matches('/')
    )
}

/// Checks that a required text setting is present: `client_id: must not be empty`.
pub fn require(field: &str, value: &str) -> Result<(), Error> {
    if value.trim().is_empty() {
        return Err(Error::config(format!("{field}: must not be empty")));
    }
    Ok(())
}
