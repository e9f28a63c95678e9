//! Access tokens from any standard OAuth 2.0 token endpoint for [authmux]:
//! the client credentials grant of RFC 6749 §4.4, for identity providers
//! that need no provider crate of their own.
//!
//! # The exchange
//!
//! With `client_auth = "basic"` (the default), the client authenticates with
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
//! (here `audience`) follow in name order. With `client_auth = "post"` there
//! is no `authorization` header and the credentials go in the body:
//!
//! ```text
//! grant_type=client_credentials&scope=read+write&client_id=<client-id>&client_secret=<client-secret>&audience=https%3A%2F%2Fapi.example.com
//! ```
//!
//! With `client_auth = "private_key_jwt"` there is no secret: the body
//! carries `client_id` and a JWT client assertion (RFC 7523 §2.2), signed
//! with `client_assertion_key` and new for every request, retries included:
//!
//! ```text
//! grant_type=client_credentials&scope=read+write&client_id=<client-id>&audience=https%3A%2F%2Fapi.example.com&client_assertion_type=urn%3Aietf%3Aparams%3Aoauth%3Aclient-assertion-type%3Ajwt-bearer&client_assertion=<JWT>
//! ```
//!
//! Its claims are `iss` = `sub` = the client id, `aud` = the token URL
//! (or `client_assertion_audience`, such as an issuer learned from
//! discovery, set with [`OAuth2Builder::client_assertion_audience`]), a
//! random `jti`, `iat` and `exp`; see [`authmux_core::ClientAssertion`].
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
//! client_auth = "basic"                                   # or "post"; "auth_style" still works
//! extra_params = { audience = "https://api.example.com" } # optional
//! # allow_insecure_http = false
//! ```
//!
//! With `private_key_jwt`:
//!
//! ```toml
//! [clients.api]
//! provider = "oauth2"
//! token_url = "https://idp.example.com/oauth2/token"
//! client_id = "my-client-id"
//! client_auth = "private_key_jwt"
//! client_assertion_key = { file = "/etc/authmux/client.pem" } # RSA or P-256, PEM or JWK
//! # client_assertion_alg = "ES256"      # RS256, PS256 or ES256; default: the JWK's alg, else
//! #                                     # the first the key signs that discovery allows
//! # client_assertion_kid = "key-1"      # default: the JWK's kid
//! # client_assertion_audience = "https://idp.example.com"     # default: the issuer if discovered, else token_url
//! ```
//!
//! With no secret at all, the workload's own identity token as the
//! client's credential (RFC 7521 §4.2), read as it rotates:
//!
//! ```toml
//! client_auth = "client_assertion"
//! client_assertion = { file = "/var/run/secrets/tokens/token" } # or { env }, { command }
//! # client_assertion_type = "urn:ietf:params:oauth:client-assertion-type:jwt-spiffe"
//! ```
//!
//! Besides client credentials, the JWT-bearer grant (RFC 7523 §2.1) and
//! token exchange (RFC 8693), with the keys of
//! [`GrantConfig`]:
//!
//! ```toml
//! grant_type = "jwt_bearer"
//! assertion = { file = "/run/ci/oidc-token" }   # or signed here: { key = { file = "…" }, subject = "…" }
//!
//! grant_type = "token_exchange"
//! subject_token = { client = "entra" }          # another client's token; or { file }, { env }, { command }
//! audience = "https://downstream.example.com"   # one or a list; resource likewise (RFC 8707)
//! ```
//!
//! A JWT-bearer client needs no client authentication (`client_auth` is
//! `"none"` unless a secret, key or assertion is set); client credentials
//! always do. These grants are sent through the core's request builder;
//! client credentials through the `oauth2` crate.
//!
//! Instead of `token_url`, `issuer = "https://idp.example.com"` discovers
//! the token endpoint; see [Discovery](#discovery). Exactly one of the two
//! is required.
//!
//! Scopes and extra params are part of the token's identity, the key under
//! which tokens are cached, so clients that differ in any of them never
//! share a token. Extra params are not treated as secrets.
//!
//! # Discovery
//!
//! Built with [`OAuth2Provider::from_issuer`] (or `issuer` in a config),
//! the source reads the issuer's metadata on its first fetch: building it
//! does no network I/O. The request is
//!
//! ```text
//! GET https://idp.example.com/.well-known/oauth-authorization-server
//! accept: application/json
//! ```
//!
//! and, if that answers 404 or another 4xx (many servers answer 400, 401
//! or 403 for a path they do not serve), OpenID Connect Discovery's
//! `https://idp.example.com/.well-known/openid-configuration`. For an
//! issuer with a path, `https://idp.example.com/tenant`, RFC 8414 §3 puts
//! the well-known segment between host and path
//! (`/.well-known/oauth-authorization-server/tenant`) while OpenID Connect
//! appends it (`/tenant/.well-known/openid-configuration`). A 4xx at both
//! URLs is an error of kind `Config` naming both answers ("check the
//! issuer"): no token request was sent, so none was refused. A 5xx, 408 or
//! 429 stops there with an error of kind
//! [`Discovery`](authmux_core::ErrorKind::Discovery), which is transient,
//! and so is a document that is not metadata (permanent). The metadata is
//! checked:
//!
//! * its `issuer` must equal the configured issuer exactly;
//! * its `token_endpoint` must be https (loopback or `allow_insecure_http`
//!   aside), like a configured `token_url`;
//! * a client that presents a TLS client certificate (to authenticate, or
//!   only to have its tokens bound to it) sends its token requests to
//!   `mtls_endpoint_aliases.token_endpoint` instead when the server has one
//!   (RFC 8705 §5), checked like `token_endpoint`; a client without a
//!   certificate never does;
//! * a client that presents a certificate without authenticating with it
//!   (`client_auth` other than `tls_client_auth` and
//!   `self_signed_tls_client_auth`) needs
//!   `"tls_client_certificate_bound_access_tokens": true` (RFC 8705 §3.3),
//!   since binding is all the certificate is for;
//! * [`ClientAuth::metadata_name`] of `client_auth` must be in
//!   `token_endpoint_auth_methods_supported`, which RFC 8414 defaults to
//!   `client_secret_basic` alone;
//! * with a JWT-bearer or token-exchange grant, its `grant_type` must be in
//!   `grant_types_supported` when the server lists it;
//! * a client that does not authenticate, or sends an assertion of a type
//!   other than `jwt-bearer` (SPIFFE's), is not checked against the
//!   methods, which have no name for it;
//! * with DPoP, `ES256` must be in `dpop_signing_alg_values_supported`;
//! * with `private_key_jwt`, the assertion's algorithm must be in
//!   `token_endpoint_auth_signing_alg_values_supported` when the server
//!   lists it: unless one was set (`client_assertion_alg`, or the JWK's
//!   `alg`), the first listed that the key can sign is used, so an RSA key
//!   signs PS256 for a FAPI 2.0 server that lists only PS256 and ES256.
//!
//! A mismatch is an error of kind `Config` naming the issuer. Requests use
//! the same HTTP client, timeouts and body cap as the token request. The
//! metadata is kept for the life of the source
//! ([`OAuth2Source::metadata`]). A failed discovery has no backoff of its
//! own: a [`ManagedToken`](authmux_core::ManagedToken) discovers as an
//! attempt of its fetch
//! ([`TokenSource::needs_discovery`](authmux_core::TokenSource::needs_discovery)),
//! so a transient metadata failure is retried like a token request and the
//! cache cools down after the last attempt; the metadata read is counted in
//! `authmux_metadata_requests_total`, not as a token request. Callers that
//! wait while a discovery fails get its error. `authmux check` discovers at
//! once and shows the endpoint found
//! ([`TokenSource::discover`](authmux_core::TokenSource::discover)).
//!
//! # DPoP
//!
//! Given a [`Dpop`](authmux_core::Dpop) with [`EndpointBuilder::dpop`], every token request
//! carries a fresh `DPoP` proof header, a `use_dpop_nonce` challenge is
//! answered once with the server's nonce, the token must come back as
//! `DPoP` (unless the Bearer downgrade is accepted), and the key's
//! thumbprint becomes part of the token identity.
//!
//! [authmux]: https://github.com/authmux/authmux

use std::cell::OnceCell;
use std::collections::BTreeMap;
use std::fmt;

use std::sync::Arc;

use authmux_core::grant::{GrantConfig, GrantContext, GrantType};
use authmux_core::source::CLIENT_ASSERTION_KEY_FIELD;
use authmux_core::wire::{
    BodyEncoding, ClientAuth, FreshValue, PreparedRequest, RequestSource, TokenRequest, join_url,
    require, validate_url,
};
use authmux_core::{
    BuildContext, ClientAuthConfig, ClientCredentials, ClientSecret, Credential, Endpoint, Error,
    ExposeSecret, ExternalSource, Provider, Scrubber, SharedTokenSource, TokenIdentity,
};
pub use authmux_core::{ClientAuthBuilder, EndpointBuilder};
use authmux_dpop::DpopConfig;
use oauth2::basic::BasicClient;
use oauth2::{AuthType, Scope, TokenUrl};
use serde::Deserialize;
use url::Url;

mod discovery;
mod source;

use discovery::DiscoveringSource;
pub use discovery::{MtlsEndpointAliases, ServerMetadata};
pub use source::OAuth2Source;

/// The provider's name in configs, errors and logs.
pub const NAME: &str = "oauth2";

/// The configuration of a client of a standard OAuth 2.0 token endpoint.
/// `Debug` leaves out the secret ([`ClientSecret`] redacts itself).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, remote = "Self")]
pub struct OAuth2Config {
    /// The token endpoint. `https` unless the host is loopback or
    /// `allow_insecure_http` is set. Required unless `issuer` is set.
    #[serde(default)]
    pub token_url: String,
    /// The authorization server's issuer identifier, instead of
    /// `token_url`: the token endpoint is then read from the issuer's
    /// metadata on the first fetch (see [Discovery](crate#discovery)).
    #[serde(default)]
    pub issuer: Option<String>,
    /// The client id; required unless `grant_type` is `jwt_bearer` with
    /// `client_auth = "none"`.
    #[serde(default)]
    pub client_id: String,
    /// The scopes to ask for, sent space-separated as `scope`; none by default.
    #[serde(default, deserialize_with = "scope_list")]
    pub scopes: Vec<String>,
    /// The audiences to ask for (RFC 8693 §2.1, and servers that take it
    /// with client credentials): one string or a list, each sent as
    /// `audience`.
    #[serde(default, deserialize_with = "one_or_many")]
    pub audience: Vec<String>,
    /// The resources to ask for (RFC 8707): one URI or a list, each sent
    /// as `resource`.
    #[serde(default, deserialize_with = "one_or_many")]
    pub resource: Vec<String>,
    /// How the client authenticates: `client_auth` (`"basic"` unless set,
    /// `"post"`, `"private_key_jwt"`, `"client_assertion"`, `"none"`), its
    /// secret, key or assertion; see [`ClientAuthConfig`]. These keys sit
    /// flat in the client's table.
    #[serde(skip)]
    pub auth: ClientAuthConfig,
    /// The grant: `grant_type` (`"client_credentials"` unless set,
    /// `"jwt_bearer"`, `"token_exchange"`) and what it carries; see
    /// [`GrantConfig`]. These keys sit flat in the client's table.
    #[serde(skip)]
    pub grant: GrantConfig,
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
const DEFAULT_CLIENT_AUTH: ClientAuth = ClientAuth::Basic;

authmux_core::with_client_auth!(OAuth2Config, auth, grant);

/// One string or a list of them.
fn one_or_many<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    struct OneOrMany;
    impl<'de> serde::de::Visitor<'de> for OneOrMany {
        type Value = Vec<String>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a string or an array of strings")
        }
        fn visit_str<E: serde::de::Error>(self, value: &str) -> Result<Vec<String>, E> {
            Ok(vec![value.to_owned()])
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(
            self,
            mut seq: A,
        ) -> Result<Vec<String>, A::Error> {
            let mut values = Vec::new();
            while let Some(value) = seq.next_element()? {
                values.push(value);
            }
            Ok(values)
        }
    }
    deserializer.deserialize_any(OneOrMany)
}

impl OAuth2Config {
    /// A builder holding this configuration.
    pub fn builder(&self) -> OAuth2Builder {
        OAuth2Builder {
            endpoint: Endpoint::new(None, self.allow_insecure_http),
            config: self.clone(),
            clients: BuildContext::new(),
            assertion_audience: None,
        }
    }

    /// The client's id and secret or assertion settings, not yet read.
    fn client_credentials(&self) -> ClientCredentials {
        ClientCredentials::from_config(&self.client_id, self.auth.clone(), self.client_auth())
    }

    /// How the client authenticates: the configured method; else `none`
    /// for a JWT-bearer grant given no secret, key or assertion (RFC 7523
    /// §2.1 makes client authentication optional there); else `basic`.
    pub fn client_auth(&self) -> ClientAuth {
        self.auth.client_auth.unwrap_or_else(|| {
            let auth = &self.auth;
            let nothing = auth.client_secret.is_none()
                && auth.client_assertion_key.is_none()
                && auth.client_assertion.is_none();
            if self.grant.grant() == GrantType::JwtBearer && nothing {
                ClientAuth::None
            } else {
                DEFAULT_CLIENT_AUTH
            }
        })
    }
}

/// Builds a token source for a standard OAuth 2.0 endpoint; see
/// [`OAuth2Provider::builder`]. The endpoint setters come from
/// [`EndpointBuilder`]; there, `base_url` replaces the scheme, host and
/// port of `token_url` and keeps its path.
#[derive(Clone, Debug)]
pub struct OAuth2Builder {
    config: OAuth2Config,
    endpoint: Endpoint,
    /// The other clients whose tokens a token exchange may carry.
    clients: BuildContext,
    /// The `aud` of a JWT-bearer grant signed here: the issuer, once
    /// discovered; else the token endpoint.
    assertion_audience: Option<String>,
}

impl EndpointBuilder for OAuth2Builder {
    fn endpoint(&mut self) -> &mut Endpoint {
        &mut self.endpoint
    }
}

impl ClientAuthBuilder for OAuth2Builder {
    fn client_auth_config(&mut self) -> &mut ClientAuthConfig {
        &mut self.config.auth
    }
}

impl OAuth2Builder {
    /// The scopes to ask for, replacing any set before.
    pub fn scopes(mut self, scopes: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.config.scopes = scopes.into_iter().map(Into::into).collect();
        self
    }

    /// One more scope to ask for.
    pub fn scope(mut self, scope: impl Into<String>) -> Self {
        self.config.scopes.push(scope.into());
        self
    }

    /// The grant and what it carries; client credentials unless set.
    pub fn grant(mut self, grant: GrantConfig) -> Self {
        self.config.grant = grant;
        self
    }

    /// The audiences to ask for, each sent as `audience`.
    pub fn audience(mut self, audience: impl Into<String>) -> Self {
        self.config.audience.push(audience.into());
        self
    }

    /// The resources to ask for (RFC 8707), each sent as `resource`.
    pub fn resource(mut self, resource: impl Into<String>) -> Self {
        self.config.resource.push(resource.into());
        self
    }

    /// Offers `token` as the access tokens of the client `name`, for a
    /// token exchange whose `subject_token` or `actor_token` is `{ client =
    /// "name" }`: a [`ManagedToken`](authmux_core::ManagedToken), say.
    pub fn client_token(mut self, name: impl Into<String>, token: Arc<dyn FreshValue>) -> Self {
        self.clients = self.clients.with_client_token(name, token);
        self
    }

    /// The former name of [`ClientAuthBuilder::client_auth`].
    #[deprecated(since = "0.1.0", note = "use client_auth")]
    pub fn auth_style(self, auth_style: ClientAuth) -> Self {
        self.client_auth(auth_style)
    }

    /// The extra body parameters, replacing any set before.
    pub fn extra_params(
        mut self,
        params: impl IntoIterator<Item = (impl Into<String>, impl Into<String>)>,
    ) -> Self {
        self.config.extra_params = params
            .into_iter()
            .map(|(name, value)| (name.into(), value.into()))
            .collect();
        self
    }

    /// One more body parameter, such as `audience`.
    pub fn extra_param(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.config.extra_params.insert(name.into(), value.into());
        self
    }

    /// Validates the settings, reads the secret and builds the source.
    /// Does no network I/O: with an issuer, the token endpoint is
    /// discovered on the first fetch.
    pub fn build(self) -> Result<OAuth2Source, Error> {
        match self.config.issuer.clone() {
            None => self.build_fixed().map(OAuth2Source::from),
            Some(_) if !self.config.token_url.trim().is_empty() => Err(Error::config(
                "issuer: set either issuer or token_url, not both",
            )),
            Some(issuer) => DiscoveringSource::build(self, issuer).map(OAuth2Source::from),
        }
    }

    /// The source for a known token endpoint.
    ///
    /// The `oauth2` crate builds the request here, once; each fetch sends
    /// a copy of it, with a fresh DPoP proof when DPoP is on.
    fn build_fixed(self) -> Result<RequestSource, Error> {
        let config = self.config;
        if config.token_url.trim().is_empty() {
            return Err(Error::config("token_url: required unless issuer is set"));
        }
        let mut token_url = validate_url(&config.token_url, self.endpoint.allow_insecure_http)
            .map_err(|error| Error::config(format!("token_url: {}", error.message())))?;
        if let Some(base_url) = &self.endpoint.base_url {
            token_url = validate_url(
                &join_url(base_url, token_url.path()),
                self.endpoint.allow_insecure_http,
            )
            .map_err(|error| Error::config(format!("base_url: {}", error.message())))?;
        }
        let credentials = config
            .client_credentials()
            .with_client_certificate(self.endpoint.has_client_certificate());
        let credential = credentials.credential(token_url.as_str())?;
        let scopes = checked_scopes(config.scopes.clone())?;
        check_extra_params(&config.extra_params)?;
        check_targets(&config)?;
        config.grant.check()?;
        let grant = config.grant.grant();
        if grant == GrantType::ClientCredentials && credentials.auth == ClientAuth::None {
            return Err(Error::config(
                "client_auth: \"none\" is only for grant_type = \"jwt_bearer\" or \"token_exchange\"; \
                 client credentials need the client to authenticate (RFC 6749 §4.4.2)",
            ));
        }
        let by_oauth2_crate = grant == GrantType::ClientCredentials
            && matches!(credential, Credential::Secret(_) | Credential::Assertion(_));
        if !by_oauth2_crate {
            let audience = self
                .assertion_audience
                .clone()
                .unwrap_or_else(|| token_url.to_string());
            let clients = |name: &str| self.clients.client_token(name);
            let context = GrantContext {
                client_id: config.client_id.trim(),
                audience: &audience,
                clients: &clients,
            };
            let mut request = config
                .grant
                .apply(TokenRequest::builder(token_url.as_str()).form(), &context)?;
            if !scopes.is_empty() {
                request = request.param("scope", scopes.join(" "));
            }
            for (name, values) in [
                ("audience", &config.audience),
                ("resource", &config.resource),
            ] {
                for value in values {
                    request = request.param(name, value.trim());
                }
            }
            for (name, value) in &config.extra_params {
                request = request.param(name.clone(), value.clone());
            }
            let request = credentials.apply(request)?;
            let mut endpoint = self.endpoint;
            if endpoint.dpop.is_none() {
                endpoint.dpop = config.dpop.dpop(config.accept_bearer_downgrade)?;
            }
            return Ok(endpoint
                .source(NAME, "token_url", request)?
                .with_identity_field("client_auth", credentials.auth.as_str()));
        }
        let mut extra_params: Vec<(String, String)> = config
            .extra_params
            .iter()
            .map(|(name, value)| (name.clone(), value.clone()))
            .collect();
        for (name, values) in [
            ("audience", &config.audience),
            ("resource", &config.resource),
        ] {
            extra_params.extend(
                values
                    .iter()
                    .map(|value| (name.to_owned(), value.trim().to_owned())),
            );
        }
        let request = prepare(
            &credentials,
            &credential,
            &token_url,
            &scopes,
            &extra_params,
        )?
        .with_timeout(self.endpoint.timeout);
        // The `oauth2` crate put the credential on the request, so the core
        // never saw it: register it here, as Basic, which also covers it
        // sent in the body. An assertion is registered as each is minted.
        let mut scrubber = Scrubber::new();
        if let Credential::Secret(client_secret) = &credential {
            scrubber.register_basic(&credentials.client_id, client_secret);
        }
        let mut endpoint = self.endpoint;
        if endpoint.dpop.is_none() {
            endpoint.dpop = config.dpop.dpop(config.accept_bearer_downgrade)?;
        }
        let mut identity = identity(&token_url, &credentials, &scopes, &extra_params);
        match &credential {
            Credential::Assertion(assertion) => {
                identity = identity.with(CLIENT_ASSERTION_KEY_FIELD, assertion.thumbprint());
            }
            Credential::Secret(client_secret) => {
                identity = identity.with_secret("client_secret", client_secret);
            }
            Credential::External(..) | Credential::None | Credential::Certificate => {}
        }
        Ok(
            RequestSource::from_prepared(endpoint.http_client()?, request, identity, scrubber)
                .with_dpop(endpoint.dpop),
        )
    }
}

/// Lets the `oauth2` crate build the client credentials request, and keeps
/// it instead of sending it.
fn prepare(
    credentials: &ClientCredentials,
    credential: &Credential,
    token_url: &Url,
    scopes: &[String],
    extra_params: &[(String, String)],
) -> Result<PreparedRequest, Error> {
    let auth_type = match credentials.auth {
        ClientAuth::Basic => AuthType::BasicAuth,
        // Without a secret, the `oauth2` crate sends `client_id` in the body.
        _ => AuthType::RequestBody,
    };
    let mut client = BasicClient::new(oauth2::ClientId::new(credentials.client_id.clone()))
        .set_auth_type(auth_type)
        .set_token_uri(TokenUrl::from_url(token_url.clone()));
    if let Credential::Secret(client_secret) = credential {
        client = client.set_client_secret(oauth2::ClientSecret::new(
            client_secret.expose_secret().to_owned(),
        ));
    }
    let mut exchange = client
        .exchange_client_credentials()
        .add_scopes(scopes.iter().cloned().map(Scope::new));
    for (name, value) in extra_params {
        exchange = exchange.add_extra_param(name.as_str(), value.as_str());
    }
    let built = OnceCell::new();
    let keep = |request: oauth2::HttpRequest| -> Result<oauth2::HttpResponse, Error> {
        let _ = built.set(request);
        Err(Error::config("kept, not sent"))
    };
    let outcome = exchange.request(&keep);
    let Some(request) = built.into_inner() else {
        let error = Error::config("cannot build the token request");
        return Err(match outcome {
            Err(cause) => error.with_source(cause),
            Ok(_) => error,
        });
    };
    let (parts, body) = request.into_parts();
    let prepared = PreparedRequest::new(token_url.clone(), parts.headers, body);
    Ok(match credential {
        Credential::Assertion(assertion) => {
            prepared.with_client_assertion(assertion.clone(), BodyEncoding::Form)
        }
        _ => prepared,
    })
}

/// Everything that changes the token. Scopes are sorted, so that their
/// order does not split the cache; extra params are prefixed, so that no
/// name can overwrite the fields before them.
fn identity(
    token_url: &Url,
    credentials: &ClientCredentials,
    scopes: &[String],
    extra_params: &[(String, String)],
) -> TokenIdentity {
    let mut sorted: Vec<&str> = scopes.iter().map(String::as_str).collect();
    sorted.sort_unstable();
    let mut identity = TokenIdentity::new(NAME, token_url.as_str())
        .with("client_id", &credentials.client_id)
        .with("scope", sorted.join(" "))
        .with("client_auth", credentials.auth.as_str());
    for (name, value) in extra_params {
        identity = identity.with(format!("extra_params.{name}"), value);
    }
    identity
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

/// `audience` and `resource` are set once: as keys of their own, or (as
/// before they were) in `extra_params`.
fn check_targets(config: &OAuth2Config) -> Result<(), Error> {
    for (name, values) in [
        ("audience", &config.audience),
        ("resource", &config.resource),
    ] {
        if !values.is_empty() && config.extra_params.contains_key(name) {
            return Err(Error::config(format!(
                "extra_params.{name}: {name} is set too; keep one of them"
            )));
        }
        for value in values {
            require(name, value)?;
        }
    }
    Ok(())
}

/// Extra params must not override what the grant itself sends.
fn check_extra_params(params: &BTreeMap<String, String>) -> Result<(), Error> {
    for name in params.keys() {
        let fix = match name.as_str() {
            "" => return Err(Error::config("extra_params: a name must not be empty")),
            "grant_type"
            | "assertion"
            | "subject_token"
            | "subject_token_type"
            | "actor_token"
            | "actor_token_type"
            | "requested_token_type" => format!("set {name} instead"),
            "scope" => "set scopes instead".to_owned(),
            "client_id" | "client_secret" | "client_assertion" | "client_assertion_type" => {
                "set client_id and client_auth with its secret or key instead".to_owned()
            }
            _ => continue,
        };
        return Err(Error::config(format!(
            "extra_params.{name}: sent by the provider itself; {fix}"
        )));
    }
    Ok(())
}

/// The generic RFC 6749 provider: [`OAuth2Provider::builder`] in code, or
/// `provider = "oauth2"` in the facade's config. Both build a
/// [`RequestSource`]; wrap it in a
/// [`ManagedToken`](authmux_core::ManagedToken) to cache its tokens.
#[derive(Clone, Copy, Debug)]
pub struct OAuth2Provider;

impl OAuth2Provider {
    /// Starts building a source for one client of the token endpoint at
    /// `token_url`, which authenticates with its client secret.
    pub fn builder(
        token_url: impl Into<String>,
        client_id: impl Into<String>,
        client_secret: impl Into<ClientSecret>,
    ) -> OAuth2Builder {
        Self::config(
            token_url.into(),
            client_id.into(),
            Some(client_secret.into()),
        )
        .builder()
    }

    /// Starts building a source for one client that authenticates with a
    /// token someone else issues and rotates (a Kubernetes projected
    /// service-account token, say), read from `source` for every request
    /// and sent as its `client_assertion` (RFC 7521 §4.2).
    pub fn client_assertion(
        token_url: impl Into<String>,
        client_id: impl Into<String>,
        source: ExternalSource,
    ) -> OAuth2Builder {
        let mut config = Self::config(token_url.into(), client_id.into(), None);
        config.auth = ClientAuthConfig::client_assertion(source);
        config.builder()
    }

    /// Starts building a source for one client of the token endpoint at
    /// `token_url`, which authenticates with `private_key_jwt`: a JWT signed
    /// with `key` (RSA or P-256, PEM or JWK).
    pub fn private_key_jwt(
        token_url: impl Into<String>,
        client_id: impl Into<String>,
        key: impl Into<ClientSecret>,
    ) -> OAuth2Builder {
        let mut config = Self::config(token_url.into(), client_id.into(), None);
        config.auth = ClientAuthConfig::private_key_jwt(key);
        config.builder()
    }

    fn config(
        token_url: String,
        client_id: String,
        client_secret: Option<ClientSecret>,
    ) -> OAuth2Config {
        OAuth2Config {
            token_url,
            issuer: None,
            client_id,
            scopes: Vec::new(),
            audience: Vec::new(),
            resource: Vec::new(),
            grant: GrantConfig::default(),
            auth: ClientAuthConfig {
                client_secret,
                ..ClientAuthConfig::default()
            },
            extra_params: BTreeMap::new(),
            allow_insecure_http: false,
            dpop: DpopConfig::Disabled,
            accept_bearer_downgrade: false,
        }
    }

    /// Starts building a source for one client of the authorization server
    /// `issuer`, whose token endpoint is discovered on the first fetch.
    pub fn from_issuer(
        issuer: impl Into<String>,
        client_id: impl Into<String>,
        client_secret: impl Into<ClientSecret>,
    ) -> OAuth2Builder {
        let mut builder = Self::builder("", client_id, client_secret);
        builder.config.issuer = Some(issuer.into());
        builder
    }
}

impl Provider for OAuth2Provider {
    const NAME: &'static str = NAME;
    type Config = OAuth2Config;

    fn build(config: OAuth2Config, context: &BuildContext) -> Result<SharedTokenSource, Error> {
        let mut builder = config.builder().context(context);
        builder.clients = context.clone();
        Ok(builder.build()?.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use authmux_core::TokenSource as _;

    fn builder(token_url: &str) -> OAuth2Builder {
        OAuth2Provider::builder(token_url, "client-1", ClientSecret::inline("s3cr3t-value"))
    }

    fn config_error(builder: OAuth2Builder) -> String {
        builder.build().expect_err("invalid").to_string()
    }

    #[test]
    fn builder_errors_name_the_field() {
        let https = "https://idp.example/token";
        assert_eq!(
            config_error(builder("")),
            "token_url: required unless issuer is set"
        );
        let mut both =
            OAuth2Provider::from_issuer("https://idp.example", "id", ClientSecret::inline("s"));
        both.config.token_url = https.to_owned();
        assert_eq!(
            config_error(both),
            "issuer: set either issuer or token_url, not both"
        );
        let error = config_error(OAuth2Provider::from_issuer(
            "http://idp.example",
            "id",
            ClientSecret::inline("s"),
        ));
        assert!(error.starts_with("issuer: "), "{error}");
        assert!(error.contains("allow_insecure_http"), "{error}");
        let error = config_error(OAuth2Provider::from_issuer(
            "https://idp.example",
            "id",
            ClientSecret::inline(""),
        ));
        assert_eq!(error, "client_secret: must not be empty");
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
            assert_eq!(provider.token_url(), Some(url));
        }
        let provider = builder("http://idp.internal/token")
            .allow_insecure_http(true)
            .build()
            .expect("allowed");
        assert_eq!(provider.token_url(), Some("http://idp.internal/token"));
    }

    #[test]
    fn repeated_scopes_are_sent_once() {
        let provider = builder("https://idp.example/token")
            .scopes(["read", "write", "read"])
            .build()
            .expect("valid");
        assert_eq!(provider.identity().get("scope"), Some("read write"));
    }

    #[test]
    fn config_defaults_and_client_auth_names() {
        let parse = |client_auth: Option<&str>| {
            let mut config = serde_json::json!({
                "token_url": "https://idp.example/token",
                "client_id": "id",
                "client_secret": {"env": "IDP_SECRET"},
            });
            if let Some(client_auth) = client_auth {
                config["client_auth"] = client_auth.into();
            }
            serde_json::from_value::<OAuth2Config>(config)
        };
        let config = parse(None).expect("minimal config");
        assert_eq!(config.client_auth(), ClientAuth::Basic);
        assert!(config.scopes.is_empty());
        assert!(config.extra_params.is_empty());
        assert!(!config.allow_insecure_http);
        assert_eq!(
            parse(Some("basic")).expect("basic").client_auth(),
            ClientAuth::Basic
        );
        assert_eq!(
            parse(Some("post")).expect("post").client_auth(),
            ClientAuth::Body
        );
        assert_eq!(
            parse(Some("private_key_jwt")).expect("jwt").client_auth(),
            ClientAuth::PrivateKeyJwt
        );
        assert!(parse(Some("header")).is_err());
        // The former name still works.
        let old: OAuth2Config = serde_json::from_value(serde_json::json!({
            "token_url": "https://idp.example/token",
            "client_id": "id",
            "client_secret": "s",
            "auth_style": "post",
        }))
        .expect("auth_style is an alias");
        assert_eq!(old.client_auth(), ClientAuth::Body);
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
