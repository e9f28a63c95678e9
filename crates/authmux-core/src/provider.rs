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
//! [`ClientCredentials`].

use std::time::Duration;

use secrecy::{ExposeSecret as _, SecretString};
use serde::de::DeserializeOwned;

use crate::assertion::ClientAssertion;
use crate::dpop::Dpop;
use crate::error::Error;
use crate::secret::ClientSecret;
use crate::signing::{SigningAlgorithm, SigningKey};
use crate::source::SharedTokenSource;
use crate::wire::{ClientAuth, HttpClient, RequestSource, TokenRequestBuilder, join_url, require};

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

/// What the facade shares between the providers it builds: for now, the
/// HTTP client (and so its connection pool and timeouts).
#[derive(Clone, Debug, Default)]
pub struct BuildContext {
    http: Option<HttpClient>,
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

/// A provider builder's client-authentication settings, borrowed by
/// [`ClientAuthBuilder`]'s setters: the fields of the provider's config
/// that hold `client_auth` and the `client_assertion_*` keys.
#[derive(Debug)]
pub struct ClientAuthFields<'a> {
    /// `client_auth`.
    pub auth: &'a mut ClientAuth,
    /// `client_assertion_alg`.
    pub algorithm: &'a mut Option<SigningAlgorithm>,
    /// `client_assertion_kid`.
    pub kid: &'a mut Option<String>,
    /// `client_assertion_audience`.
    pub audience: &'a mut Option<String>,
}

/// The client-authentication setters every provider builder that supports
/// more than one method shares, as [`EndpointBuilder`] shares the endpoint
/// ones. A builder implements [`client_auth_fields`](Self::client_auth_fields);
/// the setters come with it.
///
/// ```
/// use authmux_core::ClientAuthBuilder as _; // brings the setters into scope
/// # fn run<B: authmux_core::ClientAuthBuilder>(builder: B) -> B {
/// builder
///     .client_auth(authmux_core::wire::ClientAuth::PrivateKeyJwt)
///     .client_assertion_kid("key-1")
/// # }
/// ```
pub trait ClientAuthBuilder: Sized {
    /// The builder's client-authentication settings.
    fn client_auth_fields(&mut self) -> ClientAuthFields<'_>;

    /// How the client authenticates; the provider's default unless set.
    fn client_auth(mut self, client_auth: ClientAuth) -> Self {
        *self.client_auth_fields().auth = client_auth;
        self
    }

    /// The `private_key_jwt` assertion's algorithm; unless set, the key's
    /// JWK `alg`, else RS256 for an RSA key, ES256 for a P-256 key.
    fn client_assertion_alg(mut self, algorithm: SigningAlgorithm) -> Self {
        *self.client_auth_fields().algorithm = Some(algorithm);
        self
    }

    /// The `kid` header of the `private_key_jwt` assertion; the key's JWK
    /// `kid` unless set.
    fn client_assertion_kid(mut self, kid: impl Into<String>) -> Self {
        *self.client_auth_fields().kid = Some(kid.into());
        self
    }

    /// The `aud` of the `private_key_jwt` assertion, replacing the
    /// provider's convention (Auth0: `https://{domain}/`; a standard
    /// server: its issuer when discovered, else the token endpoint URL).
    fn client_assertion_audience(mut self, audience: impl Into<String>) -> Self {
        *self.client_auth_fields().audience = Some(audience.into());
        self
    }
}

/// The `private_key_jwt` settings of a client, the same keys in every
/// provider's config:
///
/// ```toml
/// client_auth = "private_key_jwt"
/// client_assertion_key = { file = "/etc/authmux/client.pem" } # or inline, or { env = … }
/// client_assertion_alg = "PS256"         # RS256, PS256 or ES256; default from the key
/// client_assertion_kid = "key-1"         # the header's `kid`, if the server wants one
/// client_assertion_audience = "https://idp.example.com/" # the provider's convention unless set
/// ```
///
/// `Debug` names a key's variable or file, never the key.
#[derive(Clone, Debug, Default)]
pub struct AssertionSettings {
    /// The private key, RSA or P-256, PEM (PKCS#1, PKCS#8, SEC1) or a JWK.
    pub key: Option<ClientSecret>,
    /// The signature algorithm; unless set, the JWK's `alg`, else RS256
    /// for an RSA key (PS256 for an RSA-PSS one) and ES256 for a P-256 key.
    pub algorithm: Option<SigningAlgorithm>,
    /// The `kid` header; the JWK's `kid` unless set.
    pub kid: Option<String>,
    /// The `aud` claim; the provider's convention unless set.
    pub audience: Option<String>,
}

impl AssertionSettings {
    /// Assertions signed with `key`.
    pub fn new(key: impl Into<ClientSecret>) -> Self {
        Self {
            key: Some(key.into()),
            ..Self::default()
        }
    }

    /// The config key of the first setting given, if any.
    fn first_set(&self) -> Option<&'static str> {
        [
            (self.key.is_some(), "client_assertion_key"),
            (self.algorithm.is_some(), "client_assertion_alg"),
            (self.kid.is_some(), "client_assertion_kid"),
            (self.audience.is_some(), "client_assertion_audience"),
        ]
        .into_iter()
        .find_map(|(set, name)| set.then_some(name))
    }
}

/// What a client authenticates with, read and checked: a secret, or the
/// assertions it mints.
#[derive(Clone, Debug)]
pub enum Credential {
    /// A client secret, for `post` and `basic`.
    Secret(SecretString),
    /// A `private_key_jwt` client's assertions.
    Assertion(ClientAssertion),
}

/// How a client proves who it is to the token endpoint: its id, its
/// secret or private key, and how they are sent. The one place that reads
/// them and attaches them to a request.
#[derive(Clone, Debug)]
pub struct ClientCredentials {
    /// The client id.
    pub client_id: String,
    /// The client secret's source; needed unless `auth` is
    /// [`ClientAuth::PrivateKeyJwt`].
    pub client_secret: Option<ClientSecret>,
    /// Body parameters, HTTP Basic, or a JWT client assertion.
    pub auth: ClientAuth,
    /// The assertion settings, for [`ClientAuth::PrivateKeyJwt`].
    pub assertion: AssertionSettings,
}

const PRIVATE_KEY_JWT: &str = "client_auth = \"private_key_jwt\"";

impl ClientCredentials {
    /// Credentials sent as `auth` says.
    pub fn new(
        client_id: impl Into<String>,
        client_secret: impl Into<ClientSecret>,
        auth: ClientAuth,
    ) -> Self {
        Self {
            client_id: client_id.into(),
            client_secret: Some(client_secret.into()),
            auth,
            assertion: AssertionSettings::default(),
        }
    }

    /// `private_key_jwt` credentials: the id and the assertion settings,
    /// no secret.
    pub fn private_key_jwt(client_id: impl Into<String>, assertion: AssertionSettings) -> Self {
        Self {
            client_id: client_id.into(),
            client_secret: None,
            auth: ClientAuth::PrivateKeyJwt,
            assertion,
        }
    }

    /// Sets the assertion's audience unless the settings already give one
    /// (or the client does not use `private_key_jwt`): a provider's
    /// convention, such as Auth0's `https://{domain}/`.
    pub fn default_audience(mut self, audience: impl Into<String>) -> Self {
        if self.auth == ClientAuth::PrivateKeyJwt && self.assertion.audience.is_none() {
            self.assertion.audience = Some(audience.into());
        }
        self
    }

    /// Checks the settings and reads the secret or the key. Assertions go
    /// to the configured audience, else to `default_audience`.
    ///
    /// Errors name the key and the fix:
    /// `client_secret: required unless client_auth = "private_key_jwt"`,
    /// `client_assertion_key: /etc/k.pem: not an RSA or P-256 private key in
    /// PEM or JWK form`, `client_secret: environment variable … is not set`.
    pub fn credential(&self, default_audience: &str) -> Result<Credential, Error> {
        require("client_id", &self.client_id)?;
        if self.auth.uses_secret() {
            if let Some(name) = self.assertion.first_set() {
                return Err(Error::config(format!(
                    "{name}: only used with {PRIVATE_KEY_JWT}"
                )));
            }
            let secret = self.client_secret.as_ref().ok_or_else(|| {
                Error::config(format!("client_secret: required unless {PRIVATE_KEY_JWT}"))
            })?;
            return secret.resolve("client_secret").map(Credential::Secret);
        }
        if self.client_secret.is_some() {
            return Err(Error::config(format!(
                "client_secret: not used with {PRIVATE_KEY_JWT}; remove it"
            )));
        }
        let source = self.assertion.key.as_ref().ok_or_else(|| {
            Error::config(format!(
                "client_assertion_key: required with {PRIVATE_KEY_JWT}"
            ))
        })?;
        let field = "client_assertion_key";
        let text = source.resolve_file(field, "key file")?;
        let key = SigningKey::parse(text.expose_secret()).map_err(|problem| {
            let why = problem.describe("not an RSA or P-256 private key in PEM or JWK form");
            match source {
                ClientSecret::File { file } => {
                    Error::config(format!("{field}: {}: {why}", file.display()))
                }
                _ => Error::config(format!("{field}: {why}")),
            }
        })?;
        let audience = self
            .assertion
            .audience
            .as_deref()
            .unwrap_or(default_audience);
        require("client_assertion_audience", audience)?;
        ClientAssertion::new(
            &self.client_id,
            audience.trim(),
            key,
            self.assertion.algorithm,
            self.assertion.kid.as_deref(),
        )
        .map(Credential::Assertion)
    }

    /// Reads the secret of a `post` or `basic` client: `client_id: must not
    /// be empty`, `client_secret: environment variable … is not set`.
    pub fn resolve(&self) -> Result<SecretString, Error> {
        match self.credential("")? {
            Credential::Secret(secret) => Ok(secret),
            Credential::Assertion(_) => Err(Error::config(format!(
                "client_auth: a secret is needed, not {PRIVATE_KEY_JWT}"
            ))),
        }
    }

    /// Attaches the credentials to `request`: body parameters appended
    /// here, a Basic header, or a client assertion minted per request (to
    /// the request's URL unless an audience is set).
    pub fn apply(&self, request: TokenRequestBuilder) -> Result<TokenRequestBuilder, Error> {
        let default_audience = request.url().trim().to_owned();
        Ok(match self.credential(&default_audience)? {
            Credential::Secret(secret) => {
                request.client_credentials(self.auth, self.client_id.clone(), secret)
            }
            Credential::Assertion(assertion) => request.client_assertion(assertion),
        })
    }
}
