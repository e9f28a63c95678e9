//! Authenticated requests: a [`reqwest_middleware`] layer that attaches a
//! client's token to every request, recovers from a rejected token once,
//! answers DPoP nonce challenges once, and follows redirects itself so that
//! the token never leaves the allowed URLs.
//!
//! The inner reqwest client must not follow redirects: reqwest keeps
//! `Authorization` on a redirect to the same origin, and the middleware
//! cannot see hops the inner client takes on its own. Build it with
//! [`redirect::Policy::none()`](reqwest_middleware::reqwest::redirect::Policy::none):
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use reqwest_middleware::reqwest;
//!
//! let registry = authmux::Registry::load(None)?;
//! let inner = reqwest::Client::builder()
//!     .redirect(reqwest::redirect::Policy::none())
//!     .build()?;
//! let http = reqwest_middleware::ClientBuilder::new(inner)
//!     .with(authmux::middleware::Authenticate::new(registry.client("api")?.clone()))
//!     .build();
//! let response = http.get("https://api.example.com/things").send().await?;
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::sync::Arc;

use authmux_core::dpop::DPOP;
use authmux_core::wire::{ApiClient, HeaderMap};
use authmux_core::{Token, is_resource_nonce_challenge};
use http::Extensions;
use reqwest_middleware::reqwest::header::{
    AUTHORIZATION, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE, COOKIE, LOCATION,
    PROXY_AUTHORIZATION, TRANSFER_ENCODING,
};
use reqwest_middleware::reqwest::{Method, Request, Response, StatusCode};
use reqwest_middleware::{Middleware, Next};
use tracing::Instrument as _;
use url::Url;

use crate::ManagedToken;

/// How many redirects of an authenticated request are followed unless
/// [`Authenticate::max_redirects`] says otherwise; reqwest's own default.
pub const DEFAULT_MAX_REDIRECTS: usize = 10;

/// Which URLs get the token: sending a token to a third party by mistake
/// hands it over.
#[derive(Clone, Debug, Default)]
enum Scope {
    /// HTTPS URLs and loopback hosts only.
    #[default]
    SecureOnly,
    /// URLs under one of these prefixes: the same origin, and a path equal
    /// to the prefix's or below it, whole segments only.
    Prefixes(Vec<Url>),
}

/// A [`Middleware`] that authenticates requests with the token of a
/// [`ManagedToken`]: a registry's [`Client`](crate::Client), or a cache of
/// any source built in code.
///
/// For each request in scope it:
/// * sets `Authorization` from the token's ready header value (`Bearer …` or
///   `DPoP …`), marked sensitive, unless the caller set one;
/// * adds a fresh DPoP proof (with `ath` and the origin's nonce) when the
///   token is DPoP-bound, and keeps the `DPoP-Nonce` of every response, per
///   origin, for the next proof;
/// * adds the provider's API headers (360Learning's `360-api-version`),
///   keeping any the caller set.
///
/// If no token can be had, the request fails with the token error and is
/// never sent unauthenticated. On a 401 that says the token was rejected
/// (any 401 from Mention Me; `WWW-Authenticate: … error="invalid_token"`
/// elsewhere), the token that was sent is invalidated, if it is still the
/// cached one, and the request is retried once with a fresh token; a burst
/// of such 401s leads to one token fetch. A DPoP `use_dpop_nonce` 401 is
/// retried once with the new nonce. Requests whose body cannot be cloned
/// are not retried. There is never more than one retry of each kind.
///
/// # Client certificates, CAs and proxies
///
/// A client with a TLS identity of its own (`tls_client_certificate`,
/// `tls_ca` or `proxy`) uses it for its API calls as for its token
/// endpoint: its authenticated requests are sent with the client's own HTTP
/// client ([`HttpClient::api_client`](authmux_core::wire::HttpClient::api_client)),
/// not with the inner client, so middlewares after this one do not see them.
/// A token obtained with a client certificate is bound to it (RFC 8705
/// §3; see [`Token::certificate`]) and presented with that certificate and
/// no other: when the certificate files have been replaced, the token bound
/// to the old certificate is dropped and a new one fetched, and a token
/// that is still bound to another certificate fails the request unsent.
///
/// # Redirects
///
/// The middleware follows the redirects (301, 302, 303, 307 and 308) of the
/// requests it authenticates, up to [`DEFAULT_MAX_REDIRECTS`] hops, and
/// checks each hop: with [`allow`](Self::allow) prefixes, a hop under one
/// of them gets the token and a proof made for its own URL; without them,
/// only a hop to the origin of the first request does. Any other hop gets
/// neither the token nor the proof, nor the caller's `Cookie` and
/// `Proxy-Authorization` once it leaves the origin.
/// 303, and 301 or 302 after a POST, become a GET without a body, as in
/// browsers and reqwest. A request whose body cannot be cloned is not
/// redirected: its redirect response is returned. Requests the middleware
/// does not authenticate (out of scope, or with the caller's own
/// `Authorization`) are passed on as they are.
///
/// The inner client must be built with `redirect::Policy::none()`;
/// otherwise reqwest follows same-origin redirects with the token before
/// the middleware sees them. When an authenticated request comes back from
/// another URL than the one sent, the inner client followed a redirect, and
/// the request fails with a configuration error saying so.
#[derive(Clone)]
pub struct Authenticate {
    token: ManagedToken,
    scope: Scope,
    max_redirects: usize,
}

impl fmt::Debug for Authenticate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Authenticate")
            .field("client", &self.token.name())
            .field("scope", &self.scope)
            .field("max_redirects", &self.max_redirects)
            .finish()
    }
}

impl Authenticate {
    /// Authenticates every HTTPS or loopback request with `token`: a
    /// registry [`Client`](crate::Client) (`&Client` too) or any
    /// [`ManagedToken`].
    pub fn new(token: impl Into<ManagedToken>) -> Self {
        Self {
            token: token.into(),
            scope: Scope::default(),
            max_redirects: DEFAULT_MAX_REDIRECTS,
        }
    }

    /// Attaches the token only to URLs under `prefix`: its scheme, host and
    /// port, and a path that is the prefix's or below it, by whole segments
    /// (`https://api.example.com/v1` covers `/v1` and `/v1/things`, not
    /// `/v1-internal`). May be given more than once.
    pub fn allow(mut self, prefix: &str) -> Result<Self, crate::Error> {
        let prefix = Url::parse(prefix).map_err(|error| {
            crate::Error::config(format!(
                "middleware prefix {prefix:?} is not a URL: {error}"
            ))
        })?;
        if !matches!(prefix.scheme(), "http" | "https")
            || prefix.query().is_some()
            || prefix.fragment().is_some()
        {
            return Err(crate::Error::config(format!(
                "middleware prefix {:?} must be an http(s) URL without a query or fragment",
                prefix.origin().ascii_serialization()
            )));
        }
        match &mut self.scope {
            Scope::Prefixes(prefixes) => prefixes.push(prefix),
            scope => *scope = Scope::Prefixes(vec![prefix]),
        }
        Ok(self)
    }

    /// Follows at most `max` redirects of an authenticated request
    /// ([`DEFAULT_MAX_REDIRECTS`] unless set); after that, or with 0, the
    /// redirect response itself is returned.
    pub fn max_redirects(mut self, max: usize) -> Self {
        self.max_redirects = max;
        self
    }

    /// Whether a redirect hop to `url`, from a request first sent to
    /// `first`, gets the token. Without an allow-list, HTTPS alone is no
    /// reason to follow a redirect to another host with the token.
    fn hop_in_scope(&self, first: &Url, url: &Url) -> bool {
        match &self.scope {
            Scope::SecureOnly => url.origin() == first.origin(),
            Scope::Prefixes(_) => self.in_scope(url),
        }
    }

    fn in_scope(&self, url: &Url) -> bool {
        match &self.scope {
            Scope::SecureOnly => url.scheme() == "https" || authmux_core::wire::is_loopback(url),
            Scope::Prefixes(prefixes) => prefixes.iter().any(|prefix| under(prefix, url)),
        }
    }

    /// Whether a 401 says the token itself was rejected.
    fn token_rejected(&self, response: &Response) -> bool {
        if response.status() != StatusCode::UNAUTHORIZED {
            return false;
        }
        if self.token.source().provider() == "mention-me" {
            return true;
        }
        authmux_core::wire::www_authenticate_error(response.headers(), None, "invalid_token")
    }

    /// The client's current token; its error fails the request.
    async fn token(&self) -> reqwest_middleware::Result<Token> {
        let token = self
            .token
            .get()
            .await
            .map_err(reqwest_middleware::Error::middleware)?;
        Ok(token.clone())
    }

    /// How requests with the client's tokens go out: through the client's
    /// own HTTP client when it has CAs, a certificate or a proxy of its
    /// own, else through the rest of the stack.
    fn route(&self) -> reqwest_middleware::Result<Option<ApiClient>> {
        match self.token.source().http_client() {
            Some(http) if http.has_own_transport() => http
                .api_client()
                .map(Some)
                .map_err(|error| reqwest_middleware::Error::middleware(self.named(error))),
            _ => Ok(None),
        }
    }

    /// A token and the route to send it by, such that the token goes out
    /// with the certificate it is bound to, if any, and no other. A token
    /// bound to a certificate the client no longer presents (its files
    /// were replaced) is replaced by a new one; if that one is bound to
    /// another certificate too, the request fails unsent.
    async fn bound_token(&self) -> reqwest_middleware::Result<(Token, Option<ApiClient>)> {
        let token = self.token().await?;
        let route = self.route()?;
        if presentable(&token, route.as_ref()) {
            return Ok((token, route));
        }
        tracing::debug!(
            bound = token.certificate().unwrap_or("none"),
            "the token is bound to another client certificate; fetching a new one"
        );
        // Not `invalidate`: the token was not rejected, and the rest of the
        // fleet, still on the old certificate, may keep using it. Another
        // request may have fetched its successor already.
        let fresh = match self.token.cached() {
            Some(cached) if cached.id() != token.id() => cached.clone(),
            _ => self
                .token
                .refresh()
                .await
                .map_err(reqwest_middleware::Error::middleware)?
                .clone(),
        };
        let route = self.route()?;
        if presentable(&fresh, route.as_ref()) {
            return Ok((fresh, route));
        }
        let presented = route
            .as_ref()
            .and_then(|route| route.certificate.as_deref())
            .unwrap_or("none");
        Err(reqwest_middleware::Error::middleware(self.named(
            crate::Error::config(format!(
                "the token is bound to the client certificate with x5t#S256 {}, but the client \
                 presents {presented}; it is not sent",
                fresh.certificate().unwrap_or("none"),
            )),
        )))
    }

    /// `error`, naming the client and its provider.
    fn named(&self, error: crate::Error) -> crate::Error {
        let name: Arc<str> = Arc::from(self.token.name());
        error
            .with_client(&name)
            .with_provider(self.token.source().provider())
    }

    /// Sends one authenticated request, with its nonce and token retries.
    async fn send_authenticated(
        &self,
        request: Request,
        extensions: &mut Extensions,
        next: &Next<'_>,
    ) -> reqwest_middleware::Result<Response> {
        let api_headers = self.token.source().api_headers();
        let (token, route) = self.bound_token().await?;
        let mut retry = request.try_clone();
        let mut request = request;
        authorize(&mut request, &token, &api_headers)?;
        let mut response = self.send(request, route.as_ref(), extensions, next).await?;
        let learned = remember_nonce(&token, &response);

        if learned
            && is_resource_nonce_challenge(response.status().as_u16(), response.headers())
            && let Some(mut again) = retry.take()
        {
            tracing::debug!("resource server asked for a DPoP nonce; retrying once");
            retry = again.try_clone();
            authorize(&mut again, &token, &api_headers)?;
            response = self.send(again, route.as_ref(), extensions, next).await?;
            remember_nonce(&token, &response);
        }

        if self.token_rejected(&response) {
            let Some(mut again) = retry else {
                tracing::debug!("token rejected, but the request body cannot be sent again");
                return Ok(response);
            };
            self.token.invalidate(&token);
            tracing::debug!("token rejected; retrying once with a fresh token");
            let (fresh, route) = self.bound_token().await?;
            authorize(&mut again, &fresh, &api_headers)?;
            response = self.send(again, route.as_ref(), extensions, next).await?;
            remember_nonce(&fresh, &response);
        }
        Ok(response)
    }

    /// Sends an authenticated request by `route` (the client's own HTTP
    /// client) or through the rest of the stack, and refuses the answer if
    /// the inner client followed a redirect.
    async fn send(
        &self,
        request: Request,
        route: Option<&ApiClient>,
        extensions: &mut Extensions,
        next: &Next<'_>,
    ) -> reqwest_middleware::Result<Response> {
        let sent = request.url().clone();
        let response = match route {
            Some(route) => route.client.execute(request).await?,
            None => next.clone().run(request, extensions).await?,
        };
        if response.url() != &sent {
            let error = crate::Error::config(format!(
                "the inner HTTP client followed a redirect from {} to {} with the token; \
                 build it with redirect::Policy::none() so that authmux checks every hop",
                sent.origin().ascii_serialization(),
                response.url().origin().ascii_serialization()
            ));
            return Err(reqwest_middleware::Error::middleware(self.named(error)));
        }
        Ok(response)
    }
}

/// Whether `token` may go out by `route`: with the certificate it is
/// bound to, or, unbound, by any route.
fn presentable(token: &Token, route: Option<&ApiClient>) -> bool {
    match token.certificate() {
        None => true,
        Some(bound) => route.and_then(|route| route.certificate.as_deref()) == Some(bound),
    }
}

/// Whether `url` is under `prefix`: the same origin, and the prefix's path
/// or a path below it, by whole segments.
fn under(prefix: &Url, url: &Url) -> bool {
    if prefix.origin() != url.origin() {
        return false;
    }
    let base = prefix.path().trim_end_matches('/');
    url.path()
        .strip_prefix(base)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// Keeps the response's `DPoP-Nonce` for its origin, if the token is
/// DPoP-bound (RFC 9449 §8.2 and §9: a server may send a new one with any
/// response). Returns whether the response had one.
fn remember_nonce(token: &Token, response: &Response) -> bool {
    token
        .dpop()
        .is_some_and(|dpop| dpop.nonces().remember(response.url(), response.headers()))
}

/// The request that follows `response` if it is a redirect: `template` (a
/// copy of the request as the caller made it, before any token) sent to
/// the `Location`, with the method and headers a redirect calls for.
fn redirected(mut template: Request, response: &Response) -> Option<Request> {
    let status = response.status();
    let becomes_get = match status {
        StatusCode::SEE_OTHER => template.method() != Method::HEAD,
        StatusCode::MOVED_PERMANENTLY | StatusCode::FOUND => template.method() == Method::POST,
        StatusCode::TEMPORARY_REDIRECT | StatusCode::PERMANENT_REDIRECT => false,
        _ => return None,
    };
    let location = response.headers().get(LOCATION)?.to_str().ok()?;
    let target = response.url().join(location).ok()?;
    if !matches!(target.scheme(), "http" | "https") {
        return None;
    }
    let headers = template.headers_mut();
    if becomes_get {
        for name in [
            CONTENT_TYPE,
            CONTENT_LENGTH,
            CONTENT_ENCODING,
            TRANSFER_ENCODING,
        ] {
            headers.remove(name);
        }
    }
    if target.origin() != response.url().origin() {
        for name in [COOKIE, PROXY_AUTHORIZATION] {
            headers.remove(name);
        }
    }
    if becomes_get {
        *template.method_mut() = Method::GET;
        *template.body_mut() = None;
    }
    *template.url_mut() = target;
    Some(template)
}

/// Sets the token's headers on `request`, keeping headers the caller set.
fn authorize(
    request: &mut Request,
    token: &Token,
    api_headers: &HeaderMap,
) -> reqwest_middleware::Result<()> {
    if let Some(dpop) = token.dpop() {
        let proof = dpop
            .proof(
                request.method().as_str(),
                request.url(),
                Some(expose(token)),
            )
            .map_err(reqwest_middleware::Error::middleware)?;
        request.headers_mut().insert(DPOP, proof);
    }
    let headers = request.headers_mut();
    headers.insert(AUTHORIZATION, token.authorization().clone());
    for (name, value) in api_headers {
        if !headers.contains_key(name) {
            headers.insert(name.clone(), value.clone());
        }
    }
    Ok(())
}

fn expose(token: &Token) -> &str {
    use authmux_core::ExposeSecret as _;
    token.secret().expose_secret()
}

#[async_trait::async_trait]
impl Middleware for Authenticate {
    async fn handle(
        &self,
        request: Request,
        extensions: &mut Extensions,
        next: Next<'_>,
    ) -> reqwest_middleware::Result<Response> {
        if request.headers().contains_key(AUTHORIZATION) || !self.in_scope(request.url()) {
            return next.run(request, extensions).await;
        }
        let span = tracing::debug_span!(
            "authmux.request",
            client = %self.token.name(),
            method = %request.method(),
            host = request.url().host_str().unwrap_or(""),
        );
        async move {
            let first = request.url().clone();
            let mut request = request;
            let mut hops = 0;
            loop {
                let template = if hops < self.max_redirects {
                    request.try_clone()
                } else {
                    None
                };
                let response = if self.hop_in_scope(&first, request.url()) {
                    self.send_authenticated(request, extensions, &next).await?
                } else {
                    tracing::debug!(
                        host = request.url().host_str().unwrap_or(""),
                        "redirected outside the allowed URLs; sent without the token"
                    );
                    next.clone().run(request, extensions).await?
                };
                let Some(following) = template.and_then(|template| redirected(template, &response))
                else {
                    tracing::debug!(
                        status = response.status().as_u16(),
                        "authenticated request done"
                    );
                    return Ok(response);
                };
                hops += 1;
                tracing::debug!(
                    status = response.status().as_u16(),
                    hop = hops,
                    host = following.url().host_str().unwrap_or(""),
                    "following a redirect"
                );
                request = following;
            }
        }
        .instrument(span)
        .await
    }
}
