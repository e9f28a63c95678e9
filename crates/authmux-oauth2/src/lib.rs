//! Access tokens from any standard OAuth 2.0 token endpoint for [authmux]:
//! the client credentials grant of RFC 6749 §4.4, for identity providers
//! that need no provider crate of their own.
//!
//! # The exchange
//!
//! With `auth_style = "basic"` (the default), the client authenticates with
//! an HTTP Basic header whose id and secret are each form-urlencoded before
//! base64, as RFC 6749 §2.3.1 requires:
//!
//! ```text
//! POST https://idp.example.com/oauth2/token
//! content-type: application/x-www-form-urlencoded
//! accept: application/json
//! authorization: Basic base64(urlencode(<client-id>) ":" urlencode(<client-secret>))
//!
//! grant_type=client_credentials&scope=read+write&audience=https%3A%2F%2Fapi.example.com
//! ```
//!
//! `scope` is sent only when scopes are configured, and the extra params
//! (here `audience`) follow in name order. With `auth_style = "post"` there
//! is no `authorization` header and the credentials go in the body:
//!
//! ```text
//! grant_type=client_credentials&scope=read+write&client_id=<client-id>&client_secret=<client-secret>&audience=https%3A%2F%2Fapi.example.com
//! ```
//!
//! A successful answer:
//!
//! ```text
//! HTTP/1.1 200 OK
//! content-type: application/json
//!
//! {"access_token":"<token>","token_type":"Bearer","expires_in":3600,"scope":"read write"}
//! ```
//!
//! Responses are read as leniently as by every other authmux provider: any
//! 2xx status (201 included) is a success, `expires_in` may be a number, a
//! string such as `"3600"` or a float, and `token_type` may be in any case.
//! The expiry used is the earlier of `expires_in` and the JWT's `exp`; a
//! response with neither gets five minutes, never "forever".
//!
//! Errors keep what the server said. A §5.2 body such as
//! `{"error":"invalid_scope","error_description":"…"}` becomes an [`Error`]
//! of kind `Refused` with the OAuth code and description; 5xx and 429
//! answers are transient and carry `Retry-After`; an HTML error page is
//! quoted, cut short and scrubbed of the client secret.
//!
//! # Example
//!
//! ```no_run
//! use authmux_core::{ClientSecret, ManagedToken};
//! use authmux_oauth2::OAuth2Provider;
//!
//! # async fn run() -> Result<(), authmux_core::Error> {
//! let provider = OAuth2Provider::builder(
//!     "https://idp.example.com/oauth2/token",
//!     "my-client-id",
//!     ClientSecret::Env {
//!         env: "IDP_CLIENT_SECRET".into(),
//!     },
//! )
//! .scopes(["read", "write"])
//! .extra_param("audience", "https://api.example.com")
//! .build()?;
//! let cache = ManagedToken::builder(provider).name("api").build();
//! let token = cache.get().await?;
//! let _header = token.authorization(); // `Bearer …`
//! # Ok(())
//! # }
//! ```
//!
//! # Configuration
//!
//! [`OAuth2Config`] deserializes from the facade's config file:
//!
//! ```toml
//! [clients.api]
//! provider = "oauth2"
//! token_url = "https://idp.example.com/oauth2/token"
//! client_id = "my-client-id"
//! client_secret = { env = "IDP_CLIENT_SECRET" }
//! scopes = ["read", "write"]                              # optional
//! auth_style = "basic"                                    # or "post"
//! extra_params = { audience = "https://api.example.com" } # optional
//! # allow_insecure_http = false
//! ```
//!
//! Scopes and extra params are part of the token's identity, the key under
//! which tokens are cached, so clients that differ in any of them never
//! share a token. Extra params are not treated as secrets.
//!
//! # DPoP
//!
//! Given a [`Dpop`] with [`OAuth2Builder::dpop`], every token request
//! carries a fresh `DPoP` proof header, a `use_dpop_nonce` challenge is
//! answered once with the server's nonce, the token must come back as
//! `DPoP` (unless the Bearer downgrade is accepted), and the key's
//! thumbprint becomes part of the token identity.
//!
//! [authmux]: https://github.com/authmux/authmux

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::OnceLock;

use async_trait::async_trait;
use authmux_core::wire::{ClientAuth, EndpointResponse, HttpClient, require, validate_url};
use authmux_core::{
    ClientSecret, Dpop, Error, ExposeSecret, Scrubber, Token, TokenIdentity, TokenSource,
};
use authmux_dpop::DpopConfig;
use oauth2::basic::BasicClient;
use oauth2::{AuthType, EndpointNotSet, EndpointSet, RequestTokenError, Scope, TokenUrl};
use reqwest::header::AUTHORIZATION;
use serde::Deserialize;
use url::Url;

/// The provider's name in configs, errors and logs.
pub const NAME: &str = "oauth2";

/// An `oauth2` client that knows its token endpoint and nothing else.
type CredentialsClient =
    BasicClient<EndpointNotSet, EndpointNotSet, EndpointNotSet, EndpointNotSet, EndpointSet>;

/// The configuration of a client of a standard OAuth 2.0 token endpoint.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OAuth2Config {
    /// The token endpoint. `https` unless the host is loopback or
    /// `allow_insecure_http` is set.
    pub token_url: String,
    /// The client id.
    pub client_id: String,
    /// The client secret: inline, `{ env = "…" }` or `{ file = "…" }`.
    pub client_secret: ClientSecret,
    /// The scopes to ask for, sent space-separated as `scope`; none by default.
    #[serde(default, deserialize_with = "scope_list")]
    pub scopes: Vec<String>,
    /// How the client authenticates: `"basic"` (the default) or `"post"`.
    #[serde(default = "default_auth_style")]
    pub auth_style: ClientAuth,
    /// More body parameters, such as `audience` or `resource`.
    #[serde(default)]
    pub extra_params: BTreeMap<String, String>,
    /// Allows plain `http` to a non-loopback host.
    #[serde(default)]
    pub allow_insecure_http: bool,
    /// DPoP: `false` (default), `true` (a key generated per process) or
    /// `{ key_file = "path" }` (a PEM or JWK private key).
    #[serde(default)]
    pub dpop: DpopConfig,
    /// Accept a Bearer token when DPoP was asked for (an error otherwise).
    #[serde(default)]
    pub accept_bearer_downgrade: bool,
}

/// A list of scopes; a single string is refused with an example of the
/// list it should be.
fn scope_list<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    struct Scopes;
    impl<'de> serde::de::Visitor<'de> for Scopes {
        type Value = Vec<String>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an array of scopes such as [\"read\", \"write\"]")
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(
            self,
            mut seq: A,
        ) -> Result<Vec<String>, A::Error> {
            let mut scopes = Vec::new();
            while let Some(scope) = seq.next_element()? {
                scopes.push(scope);
            }
            Ok(scopes)
        }
    }
    deserializer.deserialize_seq(Scopes)
}

/// RFC 6749 §2.3.1: every server must support Basic, while body
/// credentials are optional for it.
fn default_auth_style() -> ClientAuth {
    ClientAuth::Basic
}

impl fmt::Debug for OAuth2Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OAuth2Config")
            .field("token_url", &self.token_url)
            .field("client_id", &self.client_id)
            .field("client_secret", &self.client_secret)
            .field("scopes", &self.scopes)
            .field("auth_style", &self.auth_style)
            .field("extra_params", &self.extra_params)
            .field("allow_insecure_http", &self.allow_insecure_http)
            .field("dpop", &self.dpop)
            .field("accept_bearer_downgrade", &self.accept_bearer_downgrade)
            .finish()
    }
}

impl OAuth2Config {
    /// A builder holding this configuration.
    pub fn builder(&self) -> OAuth2Builder {
        OAuth2Builder {
            token_url: self.token_url.clone(),
            client_id: self.client_id.clone(),
            client_secret: self.client_secret.clone(),
            scopes: self.scopes.clone(),
            auth_style: self.auth_style,
            extra_params: self.extra_params.clone(),
            allow_insecure_http: self.allow_insecure_http,
            http: None,
            dpop: None,
            dpop_config: self.dpop.clone(),
            accept_bearer_downgrade: self.accept_bearer_downgrade,
        }
    }
}

/// Builds an [`OAuth2Provider`]; see [`OAuth2Provider::builder`].
pub struct OAuth2Builder {
    token_url: String,
    client_id: String,
    client_secret: ClientSecret,
    scopes: Vec<String>,
    auth_style: ClientAuth,
    extra_params: BTreeMap<String, String>,
    allow_insecure_http: bool,
    http: Option<HttpClient>,
    dpop: Option<Dpop>,
    dpop_config: DpopConfig,
    accept_bearer_downgrade: bool,
}

impl fmt::Debug for OAuth2Builder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OAuth2Builder")
            .field("token_url", &self.token_url)
            .field("client_id", &self.client_id)
            .field("client_secret", &self.client_secret)
            .field("scopes", &self.scopes)
            .field("auth_style", &self.auth_style)
            .field("extra_params", &self.extra_params)
            .field("allow_insecure_http", &self.allow_insecure_http)
            .field("dpop", &self.dpop.as_ref().map(Dpop::thumbprint))
            .finish_non_exhaustive()
    }
}

impl OAuth2Builder {
    /// The scopes to ask for, replacing any set before.
    pub fn scopes(mut self, scopes: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.scopes = scopes.into_iter().map(Into::into).collect();
        self
    }

    /// One more scope to ask for.
    pub fn scope(mut self, scope: impl Into<String>) -> Self {
        self.scopes.push(scope.into());
        self
    }

    /// Where the client credentials go: [`ClientAuth::Basic`] (the
    /// default) or [`ClientAuth::Body`].
    pub fn auth_style(mut self, auth_style: ClientAuth) -> Self {
        self.auth_style = auth_style;
        self
    }

    /// The extra body parameters, replacing any set before.
    pub fn extra_params(
        mut self,
        params: impl IntoIterator<Item = (impl Into<String>, impl Into<String>)>,
    ) -> Self {
        self.extra_params = params
            .into_iter()
            .map(|(name, value)| (name.into(), value.into()))
            .collect();
        self
    }

    /// One more body parameter, such as `audience`.
    pub fn extra_param(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.extra_params.insert(name.into(), value.into());
        self
    }

    /// Allows plain `http` to a non-loopback host.
    pub fn allow_insecure_http(mut self, allow: bool) -> Self {
        self.allow_insecure_http = allow;
        self
    }

    /// The HTTP client to share; a new default one unless set.
    pub fn http_client(mut self, http: HttpClient) -> Self {
        self.http = Some(http);
        self
    }

    /// Asks for DPoP-bound tokens, with proofs and nonces from `dpop`.
    pub fn dpop(mut self, dpop: Dpop) -> Self {
        self.dpop = Some(dpop);
        self
    }

    /// Validates the settings, reads the secret and builds the provider.
    pub fn build(self) -> Result<OAuth2Provider, Error> {
        require("token_url", &self.token_url)?;
        let token_url = validate_url(&self.token_url, self.allow_insecure_http)
            .map_err(|error| Error::config(format!("token_url: {}", error.message())))?;
        require("client_id", &self.client_id)?;
        let scopes = checked_scopes(self.scopes)?;
        check_extra_params(&self.extra_params)?;
        let client_secret = self.client_secret.resolve("client_secret")?;
        let auth_type = match self.auth_style {
            ClientAuth::Basic => AuthType::BasicAuth,
            ClientAuth::Body => AuthType::RequestBody,
        };
        let client = BasicClient::new(oauth2::ClientId::new(self.client_id.clone()))
            .set_client_secret(oauth2::ClientSecret::new(
                client_secret.expose_secret().to_owned(),
            ))
            .set_auth_type(auth_type)
            .set_token_uri(TokenUrl::from_url(token_url.clone()));
        // The `oauth2` crate builds the request, so the core never sees the
        // credential: register it here, as Basic, which also covers it sent
        // in the body.
        let mut scrubber = Scrubber::new();
        scrubber.register_basic(&self.client_id, &client_secret);
        let dpop = match self.dpop {
            Some(dpop) => Some(dpop),
            None => self.dpop_config.dpop(self.accept_bearer_downgrade)?,
        };
        let http = match self.http {
            Some(http) => http,
            None => HttpClient::new()?,
        };
        Ok(OAuth2Provider {
            http,
            client,
            token_url,
            client_id: self.client_id,
            scrubber,
            scopes,
            auth_style: self.auth_style,
            extra_params: self.extra_params,
            dpop,
        })
    }
}

/// Each scope must be one RFC 6749 §3.3 scope-token: a space would silently
/// turn it into two. Repeats are dropped, keeping the configured order.
fn checked_scopes(scopes: Vec<String>) -> Result<Vec<String>, Error> {
    let mut checked: Vec<String> = Vec::with_capacity(scopes.len());
    for scope in scopes {
        if scope.is_empty() {
            return Err(Error::config("scopes: a scope must not be empty"));
        }
        if scope.chars().any(char::is_whitespace) {
            return Err(Error::config(format!(
                "scopes: {scope:?} contains whitespace; list each scope separately"
            )));
        }
        if !checked.contains(&scope) {
            checked.push(scope);
        }
    }
    Ok(checked)
}

/// Extra params must not override what the grant itself sends.
fn check_extra_params(params: &BTreeMap<String, String>) -> Result<(), Error> {
    for name in params.keys() {
        let fix = match name.as_str() {
            "" => return Err(Error::config("extra_params: a name must not be empty")),
            "grant_type" => "it is always client_credentials",
            "scope" => "set scopes instead",
            "client_id" | "client_secret" => "set client_id, client_secret and auth_style instead",
            _ => continue,
        };
        return Err(Error::config(format!(
            "extra_params.{name}: sent by the provider itself; {fix}"
        )));
    }
    Ok(())
}

/// Gets access tokens from a standard OAuth 2.0 token endpoint. Wrap it in
/// a [`ManagedToken`](authmux_core::ManagedToken) to cache them.
#[derive(Clone)]
pub struct OAuth2Provider {
    http: HttpClient,
    client: CredentialsClient,
    token_url: Url,
    client_id: String,
    /// Knows the client secret and the Basic credential, in every shape a
    /// server may echo them.
    scrubber: Scrubber,
    scopes: Vec<String>,
    auth_style: ClientAuth,
    extra_params: BTreeMap<String, String>,
    dpop: Option<Dpop>,
}

impl fmt::Debug for OAuth2Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OAuth2Provider")
            .field("token_url", &self.token_url.as_str())
            .field("client_id", &self.client_id)
            .field("scopes", &self.scopes)
            .field("auth_style", &self.auth_style)
            .field("extra_params", &self.extra_params)
            .field("dpop", &self.dpop.as_ref().map(Dpop::thumbprint))
            .finish_non_exhaustive()
    }
}

impl OAuth2Provider {
    /// Starts building a provider for one client of the token endpoint at
    /// `token_url`.
    pub fn builder(
        token_url: impl Into<String>,
        client_id: impl Into<String>,
        client_secret: impl Into<ClientSecret>,
    ) -> OAuth2Builder {
        OAuth2Builder {
            token_url: token_url.into(),
            client_id: client_id.into(),
            client_secret: client_secret.into(),
            scopes: Vec::new(),
            auth_style: default_auth_style(),
            extra_params: BTreeMap::new(),
            allow_insecure_http: false,
            http: None,
            dpop: None,
            dpop_config: DpopConfig::Disabled,
            accept_bearer_downgrade: false,
        }
    }

    /// Builds a provider from its configuration.
    pub fn from_config(config: &OAuth2Config) -> Result<Self, Error> {
        config.builder().build()
    }

    /// The token endpoint.
    pub fn token_url(&self) -> &str {
        self.token_url.as_str()
    }
}

/// The `oauth2` crate's transport for one exchange: sends the request it
/// built through authmux's HTTP client and keeps the raw answer.
///
/// A named type rather than a closure: with a closure, the compiler cannot
/// prove the exchange's future `Send` for every lifetime.
struct Transport<'a> {
    http: &'a HttpClient,
    dpop: Option<&'a Dpop>,
    received: OnceLock<EndpointResponse>,
}

impl Transport<'_> {
    async fn send(&self, request: oauth2::HttpRequest) -> Result<oauth2::HttpResponse, Error> {
        let mut request = reqwest::Request::try_from(request).map_err(|error| {
            Error::config("cannot build the token request").with_source(error.without_url())
        })?;
        let headers = request.headers_mut();
        if let Some(authorization) = headers.get_mut(AUTHORIZATION) {
            authorization.set_sensitive(true);
        }
        let response = match self.dpop {
            Some(dpop) => self.http.execute_dpop(request, dpop).await?,
            None => self.http.execute(request).await?,
        };
        // One exchange makes one call, so the cell is always empty here.
        let _ = self.received.set(response);
        // authmux's lenient parser is the one judge of the answer, so the
        // `oauth2` crate gets no body and its verdict is ignored: it would
        // reject a 201 or a string `expires_in`.
        Ok(oauth2::HttpResponse::new(Vec::new()))
    }
}

impl<'c> oauth2::AsyncHttpClient<'c> for Transport<'_> {
    type Error = Error;
    type Future = Pin<Box<dyn Future<Output = Result<oauth2::HttpResponse, Error>> + Send + 'c>>;

    fn call(&'c self, request: oauth2::HttpRequest) -> Self::Future {
        Box::pin(self.send(request))
    }
}

#[async_trait]
impl TokenSource for OAuth2Provider {
    fn provider(&self) -> &str {
        NAME
    }

    fn identity(&self) -> TokenIdentity {
        let mut scopes: Vec<&str> = self.scopes.iter().map(String::as_str).collect();
        scopes.sort_unstable();
        let mut identity = TokenIdentity::new(NAME, self.token_url.as_str())
            .with("client_id", &self.client_id)
            .with("scope", scopes.join(" "))
            .with("auth_style", self.auth_style.as_str());
        // Prefixed so that no param name can overwrite the fields above.
        for (name, value) in &self.extra_params {
            identity = identity.with(format!("extra_params.{name}"), value);
        }
        if let Some(dpop) = &self.dpop {
            identity = identity.with("dpop", dpop.thumbprint());
        }
        identity
    }

    fn dpop(&self) -> Option<&Dpop> {
        self.dpop.as_ref()
    }

    async fn fetch_token(&self) -> Result<Token, Error> {
        let transport = Transport {
            http: &self.http,
            dpop: self.dpop.as_ref(),
            received: OnceLock::new(),
        };
        let mut exchange = self
            .client
            .exchange_client_credentials()
            .add_scopes(self.scopes.iter().cloned().map(Scope::new));
        for (name, value) in &self.extra_params {
            exchange = exchange.add_extra_param(name.as_str(), value.as_str());
        }
        let outcome = exchange.request_async(&transport).await;
        match (transport.received.into_inner(), outcome) {
            (Some(response), _) => {
                let token = response.parse(self.http.default_lifetime(), &self.scrubber)?;
                match &self.dpop {
                    Some(dpop) => dpop.bind(token),
                    None => Ok(token),
                }
            }
            (None, Err(RequestTokenError::Request(error))) => Err(error),
            (None, outcome) => {
                let error = Error::config("cannot build the token request");
                Err(match outcome {
                    Err(cause) => error.with_source(cause),
                    Ok(_) => error,
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn builder(token_url: &str) -> OAuth2Builder {
        OAuth2Provider::builder(token_url, "client-1", ClientSecret::inline("s3cr3t-value"))
    }

    fn config_error(builder: OAuth2Builder) -> String {
        builder.build().expect_err("invalid").to_string()
    }

    #[test]
    fn builder_errors_name_the_field() {
        let https = "https://idp.example/token";
        assert_eq!(config_error(builder("")), "token_url: must not be empty");
        let error = config_error(builder("http://idp.example/token"));
        assert!(error.starts_with("token_url: "), "{error}");
        assert!(error.contains("allow_insecure_http"), "{error}");
        let error = config_error(builder("not a url"));
        assert!(error.starts_with("token_url: "), "{error}");
        let error = config_error(OAuth2Provider::builder(
            https,
            " ",
            ClientSecret::inline("s"),
        ));
        assert_eq!(error, "client_id: must not be empty");
        let error = config_error(OAuth2Provider::builder(
            https,
            "id",
            ClientSecret::inline(""),
        ));
        assert_eq!(error, "client_secret: must not be empty");
        let error = config_error(builder(https).scopes(["read write"]));
        assert!(error.starts_with("scopes: \"read write\""), "{error}");
        let error = config_error(builder(https).scope(""));
        assert_eq!(error, "scopes: a scope must not be empty");
        let error = config_error(builder(https).extra_param("scope", "read"));
        assert_eq!(
            error,
            "extra_params.scope: sent by the provider itself; set scopes instead"
        );
        let error = config_error(builder(https).extra_param("client_secret", "x"));
        assert!(error.starts_with("extra_params.client_secret: "), "{error}");
    }

    #[test]
    fn plain_http_needs_loopback_or_consent() {
        for url in ["http://127.0.0.1:8080/token", "http://localhost/token"] {
            let provider = builder(url).build().expect("loopback");
            assert_eq!(provider.token_url(), url);
        }
        let provider = builder("http://idp.internal/token")
            .allow_insecure_http(true)
            .build()
            .expect("allowed");
        assert_eq!(provider.token_url(), "http://idp.internal/token");
    }

    #[test]
    fn repeated_scopes_are_sent_once() {
        let provider = builder("https://idp.example/token")
            .scopes(["read", "write", "read"])
            .build()
            .expect("valid");
        assert_eq!(provider.scopes, ["read", "write"]);
    }

    #[test]
    fn config_defaults_and_auth_style_names() {
        let parse = |auth_style: Option<&str>| {
            let mut config = serde_json::json!({
                "token_url": "https://idp.example/token",
                "client_id": "id",
                "client_secret": {"env": "IDP_SECRET"},
            });
            if let Some(auth_style) = auth_style {
                config["auth_style"] = auth_style.into();
            }
            serde_json::from_value::<OAuth2Config>(config)
        };
        let config = parse(None).expect("minimal config");
        assert_eq!(config.auth_style, ClientAuth::Basic);
        assert!(config.scopes.is_empty());
        assert!(config.extra_params.is_empty());
        assert!(!config.allow_insecure_http);
        assert_eq!(
            parse(Some("basic")).expect("basic").auth_style,
            ClientAuth::Basic
        );
        assert_eq!(
            parse(Some("post")).expect("post").auth_style,
            ClientAuth::Body
        );
        assert!(parse(Some("header")).is_err());
    }

    #[test]
    fn config_rejects_unknown_fields() {
        let unknown = serde_json::from_value::<OAuth2Config>(serde_json::json!({
            "token_url": "https://idp.example/token",
            "client_id": "id",
            "client_secret": "s",
            "scope": "read",
        }));
        assert!(unknown.is_err());
    }

    #[test]
    fn debug_leaves_out_the_secret() {
        let config: OAuth2Config = serde_json::from_value(serde_json::json!({
            "token_url": "https://idp.example/token",
            "client_id": "id",
            "client_secret": "s3cr3t-value",
            "scopes": ["read"],
            "extra_params": {"audience": "https://api.example"},
        }))
        .expect("valid config");
        assert!(!format!("{config:?}").contains("s3cr3t-value"));
        let builder = config.builder();
        assert!(!format!("{builder:?}").contains("s3cr3t-value"));
        let provider = builder.build().expect("valid");
        let debug = format!("{provider:?}");
        assert!(!debug.contains("s3cr3t-value"), "{debug}");
        assert!(debug.contains("audience"), "{debug}");
    }
}
