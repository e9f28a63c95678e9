//! Authenticated requests: a [`reqwest_middleware`] layer that attaches a
//! client's token to every request, recovers from a rejected token once,
//! and answers DPoP nonce challenges once.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let registry = authmux::Registry::load(None)?;
//! let http = reqwest_middleware::ClientBuilder::new(reqwest_middleware::reqwest::Client::new())
//!     .with(authmux::middleware::Authenticate::new(registry.client("api")?.clone()))
//!     .build();
//! let response = http.get("https://api.example.com/things").send().await?;
//! # Ok(())
//! # }
//! ```

use std::fmt;

use authmux_core::dpop::DPOP;
use authmux_core::wire::HeaderMap;
use authmux_core::{Token, is_resource_nonce_challenge};
use http::Extensions;
use reqwest_middleware::reqwest::header::AUTHORIZATION;
use reqwest_middleware::reqwest::{Request, Response, StatusCode};
use reqwest_middleware::{Middleware, Next};
use tracing::Instrument as _;
use url::Url;

use crate::Client;

/// Which URLs get the token: sending a token to a third party by mistake
/// hands it over.
#[derive(Clone, Debug, Default)]
enum Scope {
    /// HTTPS URLs and loopback hosts only.
    #[default]
    SecureOnly,
    /// URLs starting with one of these prefixes (origin plus path prefix).
    Prefixes(Vec<Url>),
}

/// A [`Middleware`] that authenticates requests with a [`Client`]'s token.
///
/// For each request in scope it:
/// * sets `Authorization` from the token's ready header value (`Bearer …` or
///   `DPoP …`), marked sensitive, unless the caller set one;
/// * adds a fresh DPoP proof (with `ath` and the origin's nonce) when the
///   token is DPoP-bound;
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
#[derive(Clone)]
pub struct Authenticate {
    client: Client,
    scope: Scope,
}

impl fmt::Debug for Authenticate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Authenticate")
            .field("client", &self.client.name())
            .field("scope", &self.scope)
            .finish()
    }
}

impl Authenticate {
    /// Authenticates with `client`'s token every HTTPS or loopback request.
    pub fn new(client: Client) -> Self {
        Self {
            client,
            scope: Scope::default(),
        }
    }

    /// Attaches the token only to URLs under `prefix` (its scheme, host and
    /// port, and the start of its path). May be given more than once.
    pub fn allow(mut self, prefix: &str) -> Result<Self, crate::Error> {
        let prefix = Url::parse(prefix).map_err(|error| {
            crate::Error::config(format!(
                "middleware prefix {prefix:?} is not a URL: {error}"
            ))
        })?;
        match &mut self.scope {
            Scope::Prefixes(prefixes) => prefixes.push(prefix),
            scope => *scope = Scope::Prefixes(vec![prefix]),
        }
        Ok(self)
    }

    fn in_scope(&self, url: &Url) -> bool {
        match &self.scope {
            Scope::SecureOnly => url.scheme() == "https" || authmux_core::wire::is_loopback(url),
            Scope::Prefixes(prefixes) => prefixes.iter().any(|prefix| {
                prefix.origin() == url.origin() && url.path().starts_with(prefix.path())
            }),
        }
    }

    /// Whether a 401 says the token itself was rejected.
    fn token_rejected(&self, response: &Response) -> bool {
        if response.status() != StatusCode::UNAUTHORIZED {
            return false;
        }
        if self.client.provider() == "mention-me" {
            return true;
        }
        authmux_core::wire::www_authenticate_error(response.headers(), None, "invalid_token")
    }
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
            client = %self.client.name(),
            method = %request.method(),
            host = request.url().host_str().unwrap_or(""),
        );
        async move {
            let api_headers = self.client.api_headers();
            let token = self
                .client
                .token()
                .await
                .map_err(reqwest_middleware::Error::middleware)?
                .clone();
            let mut retry = request.try_clone();
            let mut request = request;
            authorize(&mut request, &token, &api_headers)?;
            let mut response = next.clone().run(request, extensions).await?;

            if let Some(dpop) = token.dpop()
                && is_resource_nonce_challenge(response.status().as_u16(), response.headers())
                && dpop.nonces().remember(response.url(), response.headers())
                && let Some(mut again) = retry.take()
            {
                tracing::debug!("resource server asked for a DPoP nonce; retrying once");
                retry = again.try_clone();
                authorize(&mut again, &token, &api_headers)?;
                response = next.clone().run(again, extensions).await?;
            }

            if self.token_rejected(&response) {
                let Some(mut again) = retry else {
                    tracing::debug!("token rejected, but the request body cannot be sent again");
                    return Ok(response);
                };
                self.client.cache().invalidate(&token);
                tracing::debug!("token rejected; retrying once with a fresh token");
                let fresh = self
                    .client
                    .token()
                    .await
                    .map_err(reqwest_middleware::Error::middleware)?
                    .clone();
                authorize(&mut again, &fresh, &api_headers)?;
                response = next.run(again, extensions).await?;
            }
            tracing::debug!(
                status = response.status().as_u16(),
                "authenticated request done"
            );
            Ok(response)
        }
        .instrument(span)
        .await
    }
}
