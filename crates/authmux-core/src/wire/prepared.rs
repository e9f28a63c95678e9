//! A token request serialized once and sent many times, and the one
//! [`TokenSource`](crate::TokenSource) that every provider builds on.

use std::fmt;
use std::time::Duration;

use bytes::Bytes;
use reqwest::header::{ACCEPT, CONTENT_TYPE, HeaderMap, HeaderValue};
use reqwest::{Method, Url};

use super::fresh::{Fresh, FreshParam, Sent};
use super::{BodyEncoding, HttpClient, TokenRequest};
use crate::assertion::{ClientAssertion, JWT_BEARER_ASSERTION_TYPE};
use crate::dpop::Dpop;
use crate::error::Error;
use crate::scrub::Scrubber;
use crate::source::{TokenIdentity, TokenSource};
use crate::token::Token;

/// A token request ready for the wire: URL, headers and body, serialized
/// once. Sending it again costs a clone of its URL and headers and a
/// reference count on its body; whatever changes per request (a DPoP proof,
/// a client assertion) is added to the copy.
///
/// `Debug` shows the URL and header names only: the body and a Basic
/// header hold the secret.
#[derive(Clone)]
pub struct PreparedRequest {
    url: Url,
    /// The headers besides the standard `Content-Type` and `Accept` (see
    /// `standard`), boxed and without spare capacity: one is held per
    /// client, and most have none.
    headers: Option<Box<HeaderMap>>,
    /// For a request described by a [`TokenRequest`], the encoding whose
    /// `Content-Type`, with `Accept: application/json`, is added to every
    /// copy: the same static values for every client, so not stored.
    standard: Option<BodyEncoding>,
    body: Bytes,
    timeout: Option<Duration>,
    /// The parameters found anew for every copy (a client assertion, a
    /// subject token), in the body's encoding. Boxed: most clients
    /// authenticate with a secret.
    fresh: Option<Box<(Vec<FreshParam>, BodyEncoding)>>,
}

/// One attempt at a token request: what to send, and the scrubber that
/// knows every secret in it, the client assertion minted for it included.
#[derive(Debug)]
pub struct Attempt {
    /// The request to send.
    pub request: reqwest::Request,
    /// Scrubs the request's secrets from the server's answer.
    pub scrubber: Scrubber,
}

impl fmt::Debug for PreparedRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PreparedRequest")
            .field("url", &self.url.as_str())
            .field("headers", &self.headers().keys().collect::<Vec<_>>())
            .field("body_bytes", &self.body.len())
            .field("timeout", &self.timeout)
            .field("fresh", &self.fresh.as_deref().map(|(fresh, _)| fresh))
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
            headers: boxed(&headers),
            standard: None,
            body: body.into(),
            timeout: None,
            fresh: None,
        }
    }

    /// Authenticates every copy with a new assertion from `assertion`:
    /// `client_assertion_type` and `client_assertion` are added to the body,
    /// which is in `encoding` and should already carry `client_id`.
    pub fn with_client_assertion(self, assertion: ClientAssertion, encoding: BodyEncoding) -> Self {
        self.with_fresh(
            [
                FreshParam {
                    name: "client_assertion_type".into(),
                    value: Fresh::Fixed(JWT_BEARER_ASSERTION_TYPE.into()),
                },
                FreshParam {
                    name: "client_assertion".into(),
                    value: Fresh::Minted(assertion),
                },
            ],
            encoding,
        )
    }

    /// Adds `params`, found anew for every copy, to the body, which is in
    /// `encoding`.
    pub(crate) fn with_fresh(
        mut self,
        params: impl IntoIterator<Item = FreshParam>,
        encoding: BodyEncoding,
    ) -> Self {
        let (fresh, _) = &mut **self
            .fresh
            .get_or_insert_with(|| Box::new((Vec::new(), encoding)));
        fresh.extend(params);
        self
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
    pub fn headers(&self) -> HeaderMap {
        let extra = self.headers.as_deref();
        let Some(encoding) = self.standard else {
            return extra.cloned().unwrap_or_default();
        };
        let mut headers = HeaderMap::with_capacity(extra.map_or(0, HeaderMap::len) + 2);
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static(encoding.content_type()),
        );
        headers.insert(ACCEPT, HeaderValue::from_static("application/json"));
        for (name, value) in extra.into_iter().flatten() {
            headers.append(name, value.clone());
        }
        headers
    }

    /// A fresh copy to send, with a new client assertion and the freshest
    /// value of every parameter read anew; `scrubber` plus those secrets
    /// scrubs the answer.
    ///
    /// # Errors
    ///
    /// When a value cannot be minted or read, or added to the body.
    pub async fn attempt(&self, scrubber: &Scrubber) -> Result<Attempt, Error> {
        let mut scrubber = scrubber.clone();
        let body = match self.fresh.as_deref() {
            None => self.body.clone(),
            Some((params, encoding)) => {
                let mut sent = Vec::with_capacity(params.len());
                for param in params {
                    let value = param.value().await?;
                    if let Sent::Secret(secret) = &value {
                        scrubber.register(secret);
                    }
                    sent.push((param.name.as_ref(), value));
                }
                with_fields(&self.body, *encoding, &sent)?
            }
        };
        let mut request = reqwest::Request::new(Method::POST, self.url.clone());
        *request.headers_mut() = self.headers();
        *request.body_mut() = Some(reqwest::Body::from(body));
        *request.timeout_mut() = self.timeout;
        Ok(Attempt { request, scrubber })
    }

    /// A fresh copy to send; see [`attempt`](Self::attempt).
    ///
    /// # Errors
    ///
    /// When a fresh value cannot be minted or read.
    pub async fn to_request(&self) -> Result<reqwest::Request, Error> {
        self.attempt(&Scrubber::new())
            .await
            .map(|attempt| attempt.request)
    }
}

/// The requests of one exchange, the first and any retry: each a fresh
/// copy of a prepared request, or one of up to two copies made before.
#[derive(Debug)]
pub enum Attempts<'a> {
    /// A new attempt at `0` for each, scrubbed by `1` and the attempt's
    /// own secrets.
    Prepared(&'a PreparedRequest, &'a Scrubber),
    /// The copies, last first.
    Copies(Box<[Option<reqwest::Request>; 2]>),
}

impl Attempts<'_> {
    /// The next request to send, if there is one.
    pub async fn next(&mut self) -> Option<Result<Attempt, Error>> {
        match self {
            Self::Prepared(request, scrubber) => Some(request.attempt(scrubber).await),
            Self::Copies(copies) => {
                let request = copies.iter_mut().rev().find_map(Option::take)?;
                Some(Ok(Attempt {
                    request,
                    scrubber: Scrubber::new(),
                }))
            }
        }
    }
}

/// A boxed copy of `headers` with no spare capacity, or nothing for none:
/// what a request or source holds for as long as its client lives.
fn boxed(headers: &HeaderMap) -> Option<Box<HeaderMap>> {
    if headers.is_empty() {
        return None;
    }
    let mut copy = HeaderMap::with_capacity(headers.len());
    for (name, value) in headers {
        copy.append(name, value.clone());
    }
    Some(Box::new(copy))
}

/// `body` with `fields` added.
fn with_fields(
    body: &Bytes,
    encoding: BodyEncoding,
    fields: &[(&str, Sent<'_>)],
) -> Result<Bytes, Error> {
    use secrecy::ExposeSecret as _;
    let fields = fields.iter().map(|(name, value)| {
        let value = match value {
            Sent::Plain(value) => *value,
            Sent::Secret(secret) => secret.expose_secret(),
        };
        (*name, value)
    });
    let cannot = || Error::config("a fresh parameter cannot be added to the request body");
    match encoding {
        BodyEncoding::Form => {
            let mut form = body.to_vec();
            if !form.is_empty() {
                form.push(b'&');
            }
            let mut serializer = form_urlencoded::Serializer::new(String::new());
            serializer.extend_pairs(fields);
            form.extend_from_slice(serializer.finish().as_bytes());
            Ok(Bytes::from(form))
        }
        BodyEncoding::Json => {
            let mut object: serde_json::Map<String, serde_json::Value> = if body.is_empty() {
                serde_json::Map::new()
            } else {
                serde_json::from_slice(body).map_err(|_| cannot())?
            };
            for (name, value) in fields {
                object.insert(name.to_owned(), value.into());
            }
            serde_json::to_vec(&object)
                .map(Bytes::from)
                .map_err(|_| cannot())
        }
    }
}

impl TokenRequest {
    /// Serializes the request once, for sending many times.
    pub fn prepare(&self) -> Result<PreparedRequest, Error> {
        let mut headers = self.headers().clone();
        headers.remove(CONTENT_TYPE);
        headers.remove(ACCEPT);
        Ok(PreparedRequest {
            url: self.url().clone(),
            headers: boxed(&headers),
            standard: Some(self.encoding()),
            body: Bytes::from(self.body()?),
            timeout: self.timeout(),
            fresh: (!self.fresh().is_empty())
                .then(|| Box::new((self.fresh().to_vec(), self.encoding()))),
        })
    }
}

/// The identity field naming the client certificate a token was obtained
/// with: its `x5t#S256` thumbprint.
pub const CLIENT_CERTIFICATE_FIELD: &str = "tls_client_certificate.x5t#S256";

/// The [`TokenSource`] that every provider builds: one prepared request
/// sent through an [`HttpClient`], with an optional DPoP proof added per
/// request, answers read by the lenient parser and every piece of server
/// text scrubbed of the request's secrets.
///
/// Its identity (the cache key) is computed once, when it is built.
#[derive(Clone)]
pub struct RequestSource {
    http: HttpClient,
    request: PreparedRequest,
    identity: TokenIdentity,
    scrubber: Scrubber,
    default_lifetime: Duration,
    dpop: Option<Dpop>,
    /// Boxed and compact: most sources have none.
    api_headers: Option<Box<HeaderMap>>,
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
    /// every secret the request carries. The thumbprint of the client
    /// certificate `http` presents, if any, is added to it.
    pub fn from_prepared(
        http: HttpClient,
        request: PreparedRequest,
        identity: TokenIdentity,
        scrubber: Scrubber,
    ) -> Self {
        let identity = match http.client_certificate_thumbprint() {
            Some(thumbprint) => identity.with(CLIENT_CERTIFICATE_FIELD, &*thumbprint),
            None => identity,
        };
        Self {
            default_lifetime: http.default_lifetime(),
            http,
            request,
            identity,
            scrubber,
            dpop: None,
            api_headers: None,
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
        self.api_headers = boxed(&headers);
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

    /// One fetch. A client assertion is minted for every request sent,
    /// the retry after a DPoP nonce challenge included.
    async fn fetch(&self) -> Result<Token, Error> {
        match &self.dpop {
            None => {
                let attempt = self.request.attempt(&self.scrubber).await?;
                self.http
                    .execute(attempt.request)
                    .await?
                    .parse(self.default_lifetime, &attempt.scrubber)
            }
            Some(dpop) => {
                let (response, scrubber) = self
                    .http
                    .exchange_dpop(Attempts::Prepared(&self.request, &self.scrubber), dpop)
                    .await?;
                dpop.bind(response.parse(self.default_lifetime, &scrubber)?)
            }
        }
    }
}

#[async_trait::async_trait]
impl TokenSource for RequestSource {
    fn provider(&self) -> &str {
        self.identity.provider()
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
        self.api_headers.as_deref().cloned().unwrap_or_default()
    }

    fn dpop(&self) -> Option<&Dpop> {
        self.dpop.as_ref()
    }

    fn http_client(&self) -> Option<&HttpClient> {
        Some(&self.http)
    }

    async fn identity_fields(&self) -> Result<Vec<(String, String)>, Error> {
        let mut fields = Vec::new();
        for param in self.request.fresh.iter().flat_map(|fresh| &fresh.0) {
            if let Fresh::Read(value) = &param.value {
                for (key, value) in value.identity_fields().await? {
                    fields.push((format!("{}.{key}", param.name), value));
                }
            }
        }
        Ok(fields)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signing::SigningKey;

    fn request(encoding: BodyEncoding) -> TokenRequest {
        let key = SigningKey::generate_p256().expect("key");
        let assertion =
            ClientAssertion::new("client-1", "https://idp.example/", key, None, None).expect("ok");
        TokenRequest::builder("https://idp.example/token")
            .encoding(encoding)
            .param("grant_type", "client_credentials")
            .client_assertion(assertion)
            .build()
            .expect("valid")
    }

    fn body_fields(attempt: &Attempt, encoding: BodyEncoding) -> Vec<(String, String)> {
        let body = attempt
            .request
            .body()
            .and_then(reqwest::Body::as_bytes)
            .expect("a body");
        match encoding {
            BodyEncoding::Form => form_urlencoded::parse(body).into_owned().collect(),
            BodyEncoding::Json => {
                let object: serde_json::Map<String, serde_json::Value> =
                    serde_json::from_slice(body).expect("JSON");
                let mut fields: Vec<(String, String)> = object
                    .into_iter()
                    .map(|(name, value)| (name, value.as_str().unwrap_or_default().to_owned()))
                    .collect();
                fields.sort();
                fields
            }
        }
    }

    #[tokio::test]
    async fn each_attempt_mints_an_assertion_that_its_scrubber_knows() {
        for encoding in [BodyEncoding::Form, BodyEncoding::Json] {
            let request = request(encoding);
            let prepared = request.prepare().expect("prepared");
            let first = prepared.attempt(request.scrubber()).await.expect("attempt");
            let second = prepared.attempt(request.scrubber()).await.expect("attempt");
            let assertion = |attempt: &Attempt| {
                body_fields(attempt, encoding)
                    .into_iter()
                    .find(|(name, _)| name == "client_assertion")
                    .map(|(_, value)| value)
                    .expect("an assertion")
            };
            let names: Vec<String> = body_fields(&first, encoding)
                .into_iter()
                .map(|(name, _)| name)
                .collect();
            let mut expected = vec![
                "grant_type",
                "client_id",
                "client_assertion_type",
                "client_assertion",
            ];
            if encoding == BodyEncoding::Json {
                expected.sort_unstable();
            }
            assert_eq!(names, expected);
            let jwt = assertion(&first);
            assert_ne!(jwt, assertion(&second), "a new assertion per attempt");
            let echoed = format!("rejected assertion {jwt}");
            assert_eq!(
                first.scrubber.scrub(&echoed),
                "rejected assertion [redacted]"
            );
            assert!(!format!("{prepared:?} {request:?}").contains(&jwt));
        }
    }
}
