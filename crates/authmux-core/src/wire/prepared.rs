//! A token request serialized once and sent many times, and the one
//! [`TokenSource`](crate::TokenSource) that every provider builds on.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use reqwest::header::{ACCEPT, CONTENT_TYPE, HeaderMap, HeaderValue};
use reqwest::{Method, Url};

use super::{HttpClient, TokenRequest};
use crate::dpop::Dpop;
use crate::error::Error;
use crate::scrub::Scrubber;
use crate::source::{TokenIdentity, TokenSource};
use crate::token::Token;

/// A token request ready for the wire: URL, headers and body, serialized
/// once. Sending it again costs a clone of its URL and headers and a
/// reference count on its body; whatever changes per request (a DPoP proof)
/// is added to the copy.
///
/// `Debug` shows the URL and header names only: the body and a Basic
/// header hold the secret.
#[derive(Clone)]
pub struct PreparedRequest {
    url: Url,
    headers: HeaderMap,
    body: Bytes,
    timeout: Option<Duration>,
}

impl fmt::Debug for PreparedRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PreparedRequest")
            .field("url", &self.url.as_str())
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .field("body_bytes", &self.body.len())
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl PreparedRequest {
    /// A `POST` of `body` to `url` with `headers`, built elsewhere (by the
    /// `oauth2` crate, say). An `Authorization` header is marked sensitive.
    pub fn new(url: Url, mut headers: HeaderMap, body: impl Into<Bytes>) -> Self {
        if let Some(authorization) = headers.get_mut(reqwest::header::AUTHORIZATION) {
            authorization.set_sensitive(true);
        }
        Self {
            url,
            headers,
            body: body.into(),
            timeout: None,
        }
    }

    /// Overrides the HTTP client's total timeout for this request.
    pub fn with_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.timeout = timeout;
        self
    }

    /// The token endpoint.
    pub fn url(&self) -> &Url {
        &self.url
    }

    /// The headers sent, `Content-Type` and `Accept` included.
    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    /// A fresh copy to send.
    pub fn to_request(&self) -> reqwest::Request {
        let mut request = reqwest::Request::new(Method::POST, self.url.clone());
        *request.headers_mut() = self.headers.clone();
        *request.body_mut() = Some(reqwest::Body::from(self.body.clone()));
        *request.timeout_mut() = self.timeout;
        request
    }
}

impl TokenRequest {
    /// Serializes the request once, for sending many times.
    pub fn prepare(&self) -> Result<PreparedRequest, Error> {
        let mut headers = self.headers().clone();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static(self.content_type()));
        headers.insert(ACCEPT, HeaderValue::from_static("application/json"));
        Ok(PreparedRequest {
            url: self.url().clone(),
            headers,
            body: Bytes::from(self.body()?),
            timeout: self.timeout(),
        })
    }
}

/// The [`TokenSource`] that every provider builds: one prepared request
/// sent through an [`HttpClient`], with an optional DPoP proof added per
/// request, answers read by the lenient parser and every piece of server
/// text scrubbed of the request's secrets.
///
/// Its identity (the cache key) is computed once, when it is built.
#[derive(Clone)]
pub struct RequestSource {
    provider: Arc<str>,
    http: HttpClient,
    request: PreparedRequest,
    identity: TokenIdentity,
    scrubber: Scrubber,
    default_lifetime: Duration,
    dpop: Option<Dpop>,
    api_headers: HeaderMap,
    map_error: Option<fn(Error) -> Error>,
}

impl fmt::Debug for RequestSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequestSource")
            .field("identity", &self.identity)
            .field("request", &self.request)
            .field("dpop", &self.dpop.as_ref().map(Dpop::thumbprint))
            .finish_non_exhaustive()
    }
}

impl RequestSource {
    /// A source named `provider` that sends `request` through `http`. Its
    /// identity is [`TokenIdentity::from_request`].
    pub fn new(provider: &str, http: HttpClient, request: TokenRequest) -> Result<Self, Error> {
        let identity = TokenIdentity::from_request(provider, &request);
        let default_lifetime = request
            .default_lifetime()
            .unwrap_or(http.default_lifetime());
        let prepared = request.prepare()?;
        Ok(
            Self::from_prepared(http, prepared, identity, request.scrubber().clone())
                .with_default_lifetime(default_lifetime),
        )
    }

    /// A source for a request prepared elsewhere. `identity` must name
    /// every parameter that changes the token, and `scrubber` must know
    /// every secret the request carries.
    pub fn from_prepared(
        http: HttpClient,
        request: PreparedRequest,
        identity: TokenIdentity,
        scrubber: Scrubber,
    ) -> Self {
        Self {
            provider: Arc::from(identity.provider()),
            default_lifetime: http.default_lifetime(),
            http,
            request,
            identity,
            scrubber,
            dpop: None,
            api_headers: HeaderMap::new(),
            map_error: None,
        }
    }

    /// Asks for DPoP-bound tokens: each request carries a fresh proof, a
    /// `use_dpop_nonce` challenge is answered once, the answer must be
    /// DPoP-bound (see [`Dpop::bind`]), and the key's thumbprint becomes
    /// part of the identity.
    pub fn with_dpop(mut self, dpop: Option<Dpop>) -> Self {
        if let Some(dpop) = &dpop {
            self.identity = self.identity.with("dpop", dpop.thumbprint());
        }
        self.dpop = dpop;
        self
    }

    /// Adds a field to the identity, for a setting that changes the token
    /// but is not a body parameter.
    pub fn with_identity_field(mut self, key: &str, value: &str) -> Self {
        self.identity = self.identity.with(key, value);
        self
    }

    /// The headers every API call with these tokens needs; see
    /// [`TokenSource::api_headers`].
    pub fn with_api_headers(mut self, headers: HeaderMap) -> Self {
        self.api_headers = headers;
        self
    }

    /// The lifetime assumed when a response gives none.
    pub fn with_default_lifetime(mut self, lifetime: Duration) -> Self {
        self.default_lifetime = lifetime;
        self
    }

    /// A provider's own reading of its errors (Auth0's `X-RateLimit-Reset`,
    /// say), applied to every failed fetch.
    pub fn with_error_map(mut self, map: fn(Error) -> Error) -> Self {
        self.map_error = Some(map);
        self
    }

    /// The token endpoint.
    pub fn token_url(&self) -> &str {
        self.request.url().as_str()
    }

    /// The prepared request.
    pub fn request(&self) -> &PreparedRequest {
        &self.request
    }

    async fn fetch(&self) -> Result<Token, Error> {
        let request = self.request.to_request();
        match &self.dpop {
            None => self
                .http
                .execute(request)
                .await?
                .parse(self.default_lifetime, &self.scrubber),
            Some(dpop) => dpop.bind(
                self.http
                    .execute_dpop(request, dpop)
                    .await?
                    .parse(self.default_lifetime, &self.scrubber)?,
            ),
        }
    }
}

#[async_trait::async_trait]
impl TokenSource for RequestSource {
    fn provider(&self) -> &str {
        &self.provider
    }

    fn identity(&self) -> TokenIdentity {
        self.identity.clone()
    }

    async fn fetch_token(&self) -> Result<Token, Error> {
        let outcome = self.fetch().await;
        match self.map_error {
            Some(map) => outcome.map_err(map),
            None => outcome,
        }
    }

    fn api_headers(&self) -> HeaderMap {
        self.api_headers.clone()
    }

    fn dpop(&self) -> Option<&Dpop> {
        self.dpop.as_ref()
    }
}
