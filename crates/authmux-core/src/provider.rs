//! The provider contract: what every provider crate implements, and the
//! settings every provider shares, written once.
//!
//! A provider crate has a serde config, a builder, and one [`Provider`]
//! implementation that turns the config into a [`SharedTokenSource`]. The
//! facade keeps a table of the compiled-in providers and calls
//! [`Provider::build`] for each configured client; a user builds one in
//! code with the builder. The endpoint options every builder takes (a base
//! URL, the plain-http opt-in, a shared HTTP client, a timeout) come from
//! [`EndpointBuilder`], and client authentication from
//! [`client_auth`](crate::client_auth).

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;

use crate::dpop::Dpop;
use crate::error::Error;
use crate::source::SharedTokenSource;
use crate::wire::{FreshValue, HttpClient, RequestSource, TokenRequestBuilder, join_url};

/// One kind of token endpoint, such as Auth0's: its name in configs, its
/// config type, and how a config becomes a token source.
///
/// This is the whole contract between a provider crate and the facade:
/// adding a provider is a crate that implements it plus one line in the
/// facade's table.
pub trait Provider {
    /// The provider's name in configs, errors and logs: `provider = "auth0"`.
    const NAME: &'static str;

    /// The provider's keys of a `[clients.<name>]` table. Unknown keys
    /// should be refused (`#[serde(deny_unknown_fields)]`).
    type Config: DeserializeOwned;

    /// Validates `config`, reads its secret and builds the source, using
    /// what `context` shares between clients. Does no network I/O. An
    /// error's message starts with the key it is about: `audience: …`.
    fn build(config: Self::Config, context: &BuildContext) -> Result<SharedTokenSource, Error>;
}

/// What the facade shares between the providers it builds: the HTTP
/// client (and so its connection pool and timeouts), and the access tokens
/// of the clients built before, for a token exchange that trades one
/// (`subject_token = { client = "entra" }`).
#[derive(Clone, Default)]
pub struct BuildContext {
    http: Option<HttpClient>,
    clients: HashMap<String, Arc<dyn FreshValue>>,
}

impl fmt::Debug for BuildContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BuildContext")
            .field("http", &self.http)
            .field("clients", &self.clients.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl BuildContext {
    /// A context that shares nothing: each provider makes its own client.
    pub fn new() -> Self {
        Self::default()
    }

    /// Shares `http` between every provider built with this context.
    pub fn with_http_client(mut self, http: HttpClient) -> Self {
        self.http = Some(http);
        self
    }

    /// The shared HTTP client, if any.
    pub fn http_client(&self) -> Option<&HttpClient> {
        self.http.as_ref()
    }

    /// Offers the access tokens `token` serves as those of the client
    /// `name`, to the clients built after it.
    pub fn with_client_token(
        mut self,
        name: impl Into<String>,
        token: Arc<dyn FreshValue>,
    ) -> Self {
        self.clients.insert(name.into(), token);
        self
    }

    /// The access tokens of the client `name`, if it was offered.
    pub fn client_token(&self, name: &str) -> Option<Arc<dyn FreshValue>> {
        self.clients.get(name).cloned()
    }
}

/// The endpoint options every provider builder takes; see
/// [`EndpointBuilder`].
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct Endpoint {
    /// A base URL that replaces the provider's default host (its
    /// environment, region or tenant domain).
    pub base_url: Option<String>,
    /// Allows plain `http` to a non-loopback host.
    pub allow_insecure_http: bool,
    /// The HTTP client to share; a new default one unless set.
    pub http: Option<HttpClient>,
    /// A total timeout for each token request, overriding the client's.
    pub timeout: Option<Duration>,
    /// DPoP proofs and nonces, for DPoP-bound tokens.
    pub dpop: Option<Dpop>,
}

impl Endpoint {
    /// The options a config gives: its `base_url` and `allow_insecure_http`.
    pub fn new(base_url: Option<String>, allow_insecure_http: bool) -> Self {
        Self {
            base_url,
            allow_insecure_http,
            ..Self::default()
        }
    }

    /// The token URL: `path` below the base URL if one is set, else below
    /// `default`, the provider's own choice with the key it comes from
    /// (`("region", "https://app.360learning.com")`). Returns the URL and
    /// the key to name in errors; without either base, `missing` is the
    /// error.
    pub fn token_url(
        &self,
        default: Option<(&'static str, &str)>,
        path: &str,
        missing: &'static str,
    ) -> Result<(String, &'static str), Error> {
        match (&self.base_url, default) {
            (Some(base_url), _) => Ok((join_url(base_url, path), "base_url")),
            (None, Some((field, base))) => Ok((join_url(base, path), field)),
            (None, None) => Err(Error::config(missing)),
        }
    }

    /// Builds the request (refusing plain http unless allowed, its URL
    /// errors prefixed by `url_field`) and the source that sends it.
    pub fn source(
        &self,
        provider: &str,
        url_field: &str,
        request: TokenRequestBuilder,
    ) -> Result<RequestSource, Error> {
        let mut request = request.allow_insecure_http(self.allow_insecure_http);
        if let Some(timeout) = self.timeout {
            request = request.timeout(timeout);
        }
        let request = request
            .build()
            .map_err(|error| Error::config(format!("{url_field}: {}", error.message())))?;
        Ok(
            RequestSource::new(provider, self.http_client()?, request)?
                .with_dpop(self.dpop.clone()),
        )
    }

    /// Whether the shared HTTP client presents a TLS client certificate
    /// (a new default one presents none); see
    /// [`ClientCredentials::with_client_certificate`](crate::ClientCredentials::with_client_certificate).
    pub fn has_client_certificate(&self) -> bool {
        self.http
            .as_ref()
            .is_some_and(HttpClient::has_client_certificate)
    }

    /// The shared HTTP client, or a new default one.
    pub fn http_client(&self) -> Result<HttpClient, Error> {
        match &self.http {
            Some(http) => Ok(http.clone()),
            None => HttpClient::new(),
        }
    }
}

/// The setters every provider builder shares. A builder implements
/// [`endpoint`](Self::endpoint) and gets the rest.
///
/// ```no_run
/// use authmux_core::EndpointBuilder as _; // brings the setters into scope
/// # fn run<B: authmux_core::EndpointBuilder>(builder: B) -> B {
/// builder.base_url("http://127.0.0.1:8080").timeout(std::time::Duration::from_secs(5))
/// # }
/// ```
pub trait EndpointBuilder: Sized {
    /// The builder's endpoint options.
    fn endpoint(&mut self) -> &mut Endpoint;

    /// A base URL that replaces the provider's default host.
    fn base_url(mut self, base_url: impl Into<String>) -> Self {
        self.endpoint().base_url = Some(base_url.into());
        self
    }

    /// Allows plain `http` to a non-loopback host. Tokens and secrets then
    /// cross the network in clear text: only inside a trusted network.
    fn allow_insecure_http(mut self, allow: bool) -> Self {
        self.endpoint().allow_insecure_http = allow;
        self
    }

    /// The HTTP client to share; a new default one unless set.
    fn http_client(mut self, http: HttpClient) -> Self {
        self.endpoint().http = Some(http);
        self
    }

    /// A total timeout for each token request, overriding the client's.
    fn timeout(mut self, timeout: Duration) -> Self {
        self.endpoint().timeout = Some(timeout);
        self
    }

    /// Asks for DPoP-bound tokens: every token request carries a fresh
    /// proof from `dpop`, a `use_dpop_nonce` challenge is answered once, and
    /// a Bearer answer is an error unless the downgrade is accepted.
    fn dpop(mut self, dpop: Dpop) -> Self {
        self.endpoint().dpop = Some(dpop);
        self
    }

    /// Takes what `context` shares (its HTTP client), if anything.
    fn context(mut self, context: &BuildContext) -> Self {
        if let Some(http) = context.http_client() {
            self.endpoint().http = Some(http.clone());
        }
        self
    }
}
