//! [Auth0](https://auth0.com) machine-to-machine access tokens for
//! [authmux]: the client credentials exchange at `/oauth/token`, with
//! `audience`, `resource`, `organization` and an optional DPoP proof,
//! Auth0's [Custom Token Exchange](#custom-token-exchange), and
//! [mutual TLS](#mutual-tls) on a custom domain.
//!
//! # The exchange
//!
//! ```text
//! POST https://tenant.eu.auth0.com/oauth/token
//! content-type: application/json
//! accept: application/json
//! DPoP: <proof>                       (only when DPoP is configured)
//!
//! {"grant_type":"client_credentials","client_id":"<id>","client_secret":"<secret>",
//!  "audience":"https://api.example.com","organization":"org_123"}
//! ```
//!
//! `resource` replaces `audience` on tenants whose Resource Parameter
//! Compatibility Profile is `compatibility`; `organization` is sent only when
//! set. The body can be form-encoded instead (`body = "form"`), and the
//! client can authenticate with HTTP Basic instead of body parameters
//! (`client_auth = "basic"`), or with a JWT signed by its private key
//! (`client_auth = "private_key_jwt"`), which replaces the secret:
//!
//! ```text
//! {"grant_type":"client_credentials","client_id":"<id>","audience":"https://api.example.com",
//!  "client_assertion_type":"urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
//!  "client_assertion":"<JWT>"}
//! ```
//!
//! The assertion is new for every request (retries included): header
//! `{"alg":"RS256","typ":"JWT","kid":"<client_assertion_kid, if set>"}`,
//! claims `iss` = `sub` = the client id, `aud` = `https://{domain}/`
//! (`client_assertion_audience` overrides), a random `jti`, `iat` and `exp`
//! two minutes later. See [`authmux_core::ClientAssertion`].
//!
//! ```text
//! HTTP/1.1 200 OK
//!
//! {"access_token":"eyJz93a...k4laUWw","token_type":"Bearer","expires_in":86400}
//! ```
//!
//! Errors are `{"error","error_description"}`. Auth0 answers 403
//! `access_denied` or `unauthorized_client` where RFC 6749 says 400: they are
//! permanent and keep their descriptions. `429 too_many_requests` is rate
//! limited and honours `Retry-After`, falling back to `X-RateLimit-Reset`
//! (epoch seconds). Every issued token counts against the tenant's monthly
//! quota, which is why a [`ManagedToken`](authmux_core::ManagedToken) in
//! front of this provider matters.
//!
//! # Custom Token Exchange
//!
//! Auth0's profile of RFC 8693 trades a token (the `subject_token`) for an
//! Auth0 access token at the same `/oauth/token`, after an Action the
//! tenant attaches to a Custom Token Exchange Profile has validated it. The
//! profile is chosen by `subject_token_type`, a URI of the customer's own,
//! so it has no default here. As Auth0's pages "Call Your API Using the
//! Custom Token Exchange Flow" and the Authentication API's "Custom Token
//! Exchange: Get Token" describe it:
//!
//! ```text
//! POST https://tenant.eu.auth0.com/oauth/token
//! content-type: application/json
//! accept: application/json
//!
//! {"grant_type":"urn:ietf:params:oauth:grant-type:token-exchange",
//!  "subject_token":"<token>","subject_token_type":"urn:acme:legacy-token",
//!  "client_id":"<id>","client_secret":"<secret>","audience":"https://api.example.com",
//!  "scope":"openid read:data","organization":"org_123"}
//! ```
//!
//! `audience` is optional there (the tenant's default audience is used
//! without it), and so is `resource` in its place; `scope` and
//! `organization` are sent only when set; `actor_token` and
//! `actor_token_type` go together, for a principal acting for the subject
//! (Auth0 then issues no refresh token). The client authenticates as for
//! client credentials (`post`, `basic`, `private_key_jwt`), or, for a
//! public application whose token endpoint authentication method is
//! `none`, not at all (`client_auth = "none"`: only `client_id` is sent).
//! The subject and actor tokens are read anew for every request; neither
//! appears in a `Debug` or an error (a server's echo of one is scrubbed).
//! The answer:
//!
//! ```text
//! HTTP/1.1 200 OK
//!
//! {"access_token":"eyJhbGciOi...","id_token":"eyJhbGciOi...","scope":"openid read:data",
//!  "expires_in":86400,"token_type":"Bearer",
//!  "issued_token_type":"urn:ietf:params:oauth:token-type:access_token"}
//! ```
//!
//! `id_token` comes with the `openid` scope and `refresh_token` with
//! `offline_access`; only the access token is used. `scope` is in the
//! answer only when Auth0 granted other scopes than asked for. An Action
//! that rejects the subject answers 400
//! `{"error":"invalid_request","error_description":"Invalid subject_token"}`,
//! which is [`ErrorKind::Refused`]; too many rejected subjects from one IP
//! answer 429 `too_many_attempts`.
//!
//! Auth0's reference declares the body form-encoded, as it does for client
//! credentials, whose guides send JSON: the body stays JSON unless
//! `body = "form"`. Its guide's sample request spells the scope parameter
//! `scopes`; its parameter table and reference say `scope`, which is sent.
//!
//! What the Auth0 provider refuses when building, naming the key:
//!
//! * `subject_token_type` unset, or in a namespace Auth0 reserves
//!   ([`RESERVED_TOKEN_TYPE_NAMESPACES`]: `http(s)://auth0.com`,
//!   `http(s)://okta.com`, `urn:ietf`, `urn:auth0`, `urn:okta`), such as
//!   RFC 8693's own `urn:ietf:params:oauth:token-type:jwt`. Auth0's pages
//!   do not say how a namespace is matched; here a type is in one when it
//!   is the namespace or continues it after `/`, `:`, `?` or `#`, case
//!   aside.
//! * `actor_token` without `actor_token_type`, or an `actor_token_type` in
//!   a reserved namespace other than [`ID_TOKEN_TYPE`] (an Auth0 ID token
//!   of the same tenant, which Auth0 validates itself).
//! * `requested_token_type`: not part of the Custom Token Exchange request.
//!   (Auth0's On-Behalf-Of exchange takes it, with an Auth0 access token as
//!   the subject; this provider does not send that exchange.)
//! * `grant_type = "jwt_bearer"` and `assertion`: Auth0 takes the JWT-bearer
//!   grant only for Cross App Access (an enterprise IdP's ID-JAG), which
//!   this provider does not send.
//! * `client_auth = "client_assertion"`: Auth0 authenticates an assertion
//!   only as `private_key_jwt`, signed with a key registered to the
//!   application; a token another party issued is no client credential
//!   there.
//! * `client_auth = "none"` and `scopes` with client credentials, whose
//!   request takes neither.
//!
//! # Mutual TLS
//!
//! Auth0 takes RFC 8705 client authentication, `client_auth =
//! "tls_client_auth"` (a CA-issued certificate) or
//! `"self_signed_tls_client_auth"` (a self-signed one registered with the
//! application), only with the Enterprise plan's Highly Regulated Identity
//! add-on and only on a custom domain of type `self_managed_certs`: the
//! customer's own edge does the TLS handshake, checks the certificate and
//! forwards the request to Auth0 with the certificate in a header, so
//! Auth0's own domains (`tenant.auth0.com`, `tenant.eu.auth0.com`, …) are
//! no way in. On Auth0's side, the application's authentication
//! method (its Credentials tab) is mTLS with the certificate, or its
//! subject DN, registered; the edge must forward `/oauth/token` with the
//! `cname-api-key`, `client-certificate` and
//! `client-certificate-ca-verified` headers Auth0 documents. The request
//! carries the client id and no secret (RFC 8705 §2):
//!
//! ```text
//! POST https://login.example.com/oauth/token
//! content-type: application/json
//!
//! {"grant_type":"client_credentials","client_id":"<id>","audience":"https://api.example.com"}
//! ```
//!
//! When the tenant allows mTLS endpoint aliases (the tenant setting
//! `mtls.enable_endpoint_aliases`), its discovery document lists the mTLS
//! token endpoint under `mtls_endpoint_aliases`, on the custom domain with
//! `mtls.` in front (`https://mtls.login.example.com/oauth/token`), where
//! the edge asks for the certificate. Set `mtls_domain` to that host: a
//! client that presents a certificate then sends its requests there, while
//! `domain` stays the custom domain, which also remains the default `aud`
//! of a `private_key_jwt` assertion (`https://{domain}/`).
//!
//! A certificate also binds tokens to it when the application requires
//! sender constraining (`require_proof_of_possession`) and the API's
//! sender-constraining method is mTLS: Auth0 then puts the certificate's
//! SHA-256 thumbprint in the token's `cnf` claim (`x5t#S256`), whatever the
//! client authenticates with, so a client that keeps `post`, `basic` or
//! `private_key_jwt` and sets `tls_client_certificate` gets bound tokens
//! too. Auth0 answers a bound token with `"token_type":"DPoP"`; the token
//! keeps that type and goes out as `Authorization: DPoP …`, the scheme
//! Auth0 recommends for it, with no DPoP proof (none was asked for).
//!
//! What the Auth0 provider refuses when building, naming the key:
//!
//! * `client_auth = "tls_client_auth"` or `"self_signed_tls_client_auth"`,
//!   or a client certificate with any method, when the token endpoint is
//!   on an Auth0 tenant domain (`auth0.com` or below it): `domain` (or
//!   `base_url`, or `mtls_domain`, whichever gives the host) must be the
//!   custom domain. Sent there, a certificate would bind nothing: tokens
//!   would come back unbound, or, for an application that requires sender
//!   constraining, not at all.
//! * `mtls_domain` without a client certificate, which would never use it.
//!
//! # Example
//!
//! ```no_run
//! use authmux_auth0::Auth0Provider;
//! use authmux_core::{ClientSecret, ManagedToken};
//!
//! # async fn run() -> Result<(), authmux_core::Error> {
//! let provider = Auth0Provider::builder("tenant.eu.auth0.com", "my-client-id", ClientSecret::Env {
//!     env: "AUTH0_CLIENT_SECRET".into(),
//! })
//! .audience("https://api.example.com")
//! .build()?;
//! let cache = ManagedToken::builder(provider).name("api").build();
//! let _token = cache.get().await?;
//! # Ok(())
//! # }
//! ```
//!
//! # Configuration
//!
//! ```toml
//! [clients.api]
//! provider = "auth0"
//! domain = "tenant.eu.auth0.com"       # or "https://login.example.com"
//! client_id = "my-client-id"
//! client_secret = { env = "AUTH0_CLIENT_SECRET" }
//! audience = "https://api.example.com" # required unless resource is set
//! # resource = "https://api.example.com"
//! # organization = "org_123"
//! # body = "form"                      # default "json"
//! # client_auth = "basic"              # default "post"
//! ```
//!
//! With `private_key_jwt`, a key instead of the secret:
//!
//! ```toml
//! [clients.api]
//! provider = "auth0"
//! domain = "tenant.eu.auth0.com"
//! client_id = "my-client-id"
//! audience = "https://api.example.com"
//! client_auth = "private_key_jwt"
//! client_assertion_key = { file = "/etc/authmux/client.pem" } # RSA or P-256, PEM or JWK
//! # client_assertion_alg = "PS256"     # RS256, PS256 or ES256; default from the key
//! # client_assertion_kid = "key-1"
//! # client_assertion_audience = "https://tenant.eu.auth0.com/"
//! ```
//!
//! A Custom Token Exchange, trading a token read from a file (or `{ env }`,
//! `{ command }`, or `{ client = "name" }`: another configured client's
//! access token, which the facade builds first):
//!
//! ```toml
//! [clients.legacy]
//! provider = "auth0"
//! domain = "tenant.eu.auth0.com"
//! client_id = "my-client-id"
//! client_secret = { env = "AUTH0_CLIENT_SECRET" }
//! grant_type = "token_exchange"
//! subject_token = { file = "/run/legacy/token" }
//! subject_token_type = "urn:acme:legacy-token"  # your profile's; required
//! audience = "https://api.example.com"          # optional: the tenant's default
//! # scopes = ["openid", "read:data"]
//! # organization = "org_123"
//! # actor_token = { client = "agent" }
//! # actor_token_type = "urn:acme:agent-token"   # required with actor_token
//! ```
//!
//! Mutual TLS on a custom domain (the certificate and the CA are
//! per-client keys the facade reads; in code, an
//! [`HttpClient`](authmux_core::wire::HttpClient) that presents the
//! certificate):
//!
//! ```toml
//! [clients.payments]
//! provider = "auth0"
//! domain = "login.example.com"         # the custom domain; never *.auth0.com
//! # mtls_domain = "mtls.login.example.com"  # with mTLS endpoint aliases on
//! client_id = "my-client-id"
//! audience = "https://api.example.com"
//! client_auth = "tls_client_auth"      # or "self_signed_tls_client_auth"
//! tls_client_certificate = { file = "/etc/authmux/payments.pem" }
//! ```
//!
//! In code, the same with [`Auth0Builder::grant`] (and
//! [`Auth0Builder::client_token`] to offer a `{ client = "name" }` token):
//!
//! ```no_run
//! use authmux_auth0::Auth0Provider;
//! use authmux_core::grant::{GrantConfig, GrantType, TokenInput};
//! use authmux_core::{ClientSecret, ExternalSource};
//!
//! # fn run() -> Result<(), authmux_core::Error> {
//! let exchange = GrantConfig {
//!     grant_type: Some(GrantType::TokenExchange),
//!     subject_token: Some(TokenInput::External(ExternalSource::File(
//!         "/run/legacy/token".into(),
//!     ))),
//!     subject_token_type: Some("urn:acme:legacy-token".into()),
//!     ..GrantConfig::default()
//! };
//! let provider = Auth0Provider::builder("tenant.eu.auth0.com", "my-client-id", ClientSecret::Env {
//!     env: "AUTH0_CLIENT_SECRET".into(),
//! })
//! .audience("https://api.example.com")
//! .grant(exchange)
//! .build()?;
//! # Ok(())
//! # }
//! ```
//!
//! [authmux]: https://github.com/authmux/authmux

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use std::sync::Arc;

use authmux_core::grant::{GrantConfig, GrantContext, GrantType};
use authmux_core::wire::{
    BodyEncoding, ClientAuth, FreshValue, RequestSource, TokenRequest, require,
};
use authmux_core::{
    BuildContext, ClientAuthConfig, ClientCredentials, ClientSecret, Endpoint, Error, ErrorKind,
    Provider, SharedTokenSource,
};
pub use authmux_core::{ClientAuthBuilder, EndpointBuilder};
use authmux_dpop::DpopConfig;
use serde::Deserialize;

/// The provider's name in configs, errors and logs.
pub const NAME: &str = "auth0";

/// The token endpoint's path below the tenant's base URL.
pub const TOKEN_PATH: &str = "/oauth/token";

/// The namespaces Auth0 reserves: no Custom Token Exchange Profile, and so
/// no `subject_token_type` (nor a custom `actor_token_type`), may be in
/// them.
pub const RESERVED_TOKEN_TYPE_NAMESPACES: &[&str] = &[
    "http://auth0.com",
    "https://auth0.com",
    "http://okta.com",
    "https://okta.com",
    "urn:ietf",
    "urn:auth0",
    "urn:okta",
];

/// The `actor_token_type` of an Auth0 ID token of the same tenant, which
/// Auth0 validates itself: the one reserved URI an actor may carry.
pub const ID_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:id_token";

/// The longest wait taken from `X-RateLimit-Reset`.
const MAX_RESET_WAIT: Duration = Duration::from_secs(3600);

/// The configuration of an Auth0 client. `Debug` leaves out the secret
/// ([`ClientSecret`] redacts itself).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, remote = "Self")]
pub struct Auth0Config {
    /// The tenant's domain (`tenant.eu.auth0.com`), or a base URL such as a
    /// custom domain (`https://login.example.com`). Mutual TLS needs the
    /// custom domain.
    pub domain: String,
    /// The host of the mTLS token endpoint when the tenant allows mTLS
    /// endpoint aliases: the custom domain with `mtls.` in front
    /// (`mtls.login.example.com`), or a base URL. A client that presents a
    /// certificate sends its requests there; see
    /// [Mutual TLS](crate#mutual-tls).
    #[serde(default)]
    pub mtls_domain: Option<String>,
    /// The application's client id.
    pub client_id: String,
    /// The API identifier; required unless `resource` is set, or the
    /// grant is a token exchange (Auth0 then uses the tenant's default
    /// audience).
    #[serde(default)]
    pub audience: Option<String>,
    /// The API identifier, for tenants in the `compatibility` profile.
    #[serde(default)]
    pub resource: Option<String>,
    /// The organization name or id; the token then carries `org_id`.
    #[serde(default)]
    pub organization: Option<String>,
    /// The scopes a token exchange asks for, sent space-separated as
    /// `scope`. Auth0's client credentials request takes none.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// `json` (default) or `form`.
    #[serde(default = "json")]
    pub body: BodyEncoding,
    /// How the application authenticates: `client_auth` (`"post"` unless
    /// set: credentials in the body; `"basic"`, `"private_key_jwt"`, or
    /// `"none"` for a public application's token exchange), its
    /// secret or key; see [`ClientAuthConfig`]. The assertion's `aud` is
    /// `https://{domain}/` unless `client_assertion_audience` is set. These
    /// keys sit flat in the client's table.
    #[serde(skip)]
    pub auth: ClientAuthConfig,
    /// The grant: `grant_type` (`"client_credentials"` unless set, or
    /// `"token_exchange"`), `subject_token`, `subject_token_type`,
    /// `actor_token` and `actor_token_type`; see [`GrantConfig`] and the
    /// [crate docs](crate#custom-token-exchange) for what Auth0 takes.
    /// These keys sit flat in the client's table.
    #[serde(skip)]
    pub grant: GrantConfig,
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

fn json() -> BodyEncoding {
    BodyEncoding::Json
}

/// Auth0's documented default: the credentials in the body.
const DEFAULT_CLIENT_AUTH: ClientAuth = ClientAuth::Body;

authmux_core::with_client_auth!(Auth0Config, auth, grant);

impl Auth0Config {
    /// How the application authenticates: the configured method or the
    /// default, `post`.
    pub fn client_auth(&self) -> ClientAuth {
        self.auth.client_auth.unwrap_or(DEFAULT_CLIENT_AUTH)
    }

    /// A builder holding this configuration.
    pub fn builder(&self) -> Auth0Builder {
        Auth0Builder {
            endpoint: Endpoint::new(None, self.allow_insecure_http),
            config: self.clone(),
            clients: BuildContext::new(),
        }
    }
}

/// Builds an Auth0 token source; see [`Auth0Provider::builder`]. The
/// endpoint setters (`base_url`, which replaces the domain, `http_client`,
/// …) come from [`EndpointBuilder`].
#[derive(Debug)]
pub struct Auth0Builder {
    config: Auth0Config,
    endpoint: Endpoint,
    /// The other clients whose tokens a token exchange may carry.
    clients: BuildContext,
}

impl EndpointBuilder for Auth0Builder {
    fn endpoint(&mut self) -> &mut Endpoint {
        &mut self.endpoint
    }
}

impl ClientAuthBuilder for Auth0Builder {
    fn client_auth_config(&mut self) -> &mut ClientAuthConfig {
        &mut self.config.auth
    }
}

impl Auth0Builder {
    /// The API identifier to get a token for.
    pub fn audience(mut self, audience: impl Into<String>) -> Self {
        self.config.audience = Some(audience.into());
        self
    }

    /// The API identifier, for tenants in the `compatibility` profile.
    pub fn resource(mut self, resource: impl Into<String>) -> Self {
        self.config.resource = Some(resource.into());
        self
    }

    /// The host (or base URL) of the mTLS token endpoint, for a tenant
    /// that allows mTLS endpoint aliases: `mtls.login.example.com`. Used
    /// when the HTTP client presents a certificate, which it must.
    pub fn mtls_domain(mut self, mtls_domain: impl Into<String>) -> Self {
        self.config.mtls_domain = Some(mtls_domain.into());
        self
    }

    /// The organization name or id.
    pub fn organization(mut self, organization: impl Into<String>) -> Self {
        self.config.organization = Some(organization.into());
        self
    }

    /// The body encoding; JSON unless set.
    pub fn body(mut self, body: BodyEncoding) -> Self {
        self.config.body = body;
        self
    }

    /// The scopes a token exchange asks for, replacing any set before.
    pub fn scopes(mut self, scopes: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.config.scopes = scopes.into_iter().map(Into::into).collect();
        self
    }

    /// The grant and what it carries; client credentials unless set.
    pub fn grant(mut self, grant: GrantConfig) -> Self {
        self.config.grant = grant;
        self
    }

    /// Offers `token` as the access tokens of the client `name`, for a
    /// token exchange whose `subject_token` or `actor_token` is `{ client =
    /// "name" }`: a [`ManagedToken`](authmux_core::ManagedToken), say.
    pub fn client_token(mut self, name: impl Into<String>, token: Arc<dyn FreshValue>) -> Self {
        self.clients = self.clients.with_client_token(name, token);
        self
    }

    /// Validates the settings, reads the secret and builds the source.
    pub fn build(self) -> Result<RequestSource, Error> {
        let Self {
            config,
            endpoint,
            clients,
        } = self;
        require("domain", &config.domain)?;
        require("client_id", &config.client_id)?;
        let grant = checked_grant(&config.grant)?;
        checked_client_auth(config.client_auth(), grant)?;
        match (&config.audience, &config.resource) {
            (None, None) if grant == GrantType::TokenExchange => {}
            (None, None) => {
                return Err(Error::config("audience: required unless resource is set"));
            }
            (Some(_), Some(_)) => {
                return Err(Error::config(
                    "resource: set either audience or resource, not both",
                ));
            }
            (Some(value), None) => require("audience", value)?,
            (None, Some(value)) => require("resource", value)?,
        }
        let scope = scope(&config.scopes, grant)?;
        let certificate = endpoint.has_client_certificate();
        let (issuer_url, issuer_field) = endpoint.token_url(
            Some(("domain", &base_url(&config.domain))),
            TOKEN_PATH,
            "domain: required",
        )?;
        let (url, field) = match config.mtls_domain.as_deref() {
            Some(mtls_domain) => {
                require("mtls_domain", mtls_domain)?;
                if !certificate {
                    return Err(Error::config(
                        "mtls_domain: only used when the client presents a certificate; set \
                         tls_client_certificate, or remove mtls_domain",
                    ));
                }
                endpoint.token_url(
                    Some(("mtls_domain", &base_url(mtls_domain))),
                    TOKEN_PATH,
                    "domain: required",
                )?
            }
            None => (issuer_url.clone(), issuer_field),
        };
        checked_mtls_host(&url, field, config.client_auth(), certificate)?;
        // Auth0 wants the tenant's own URL, with its trailing slash, as the
        // assertion's audience: the custom domain's, not its mTLS alias's.
        let tenant = format!(
            "{}/",
            issuer_url.strip_suffix(TOKEN_PATH).unwrap_or(&issuer_url)
        );
        let client_token = |name: &str| clients.client_token(name);
        let context = GrantContext {
            client_id: config.client_id.trim(),
            audience: &tenant,
            clients: &client_token,
        };
        let request = config.grant.apply(
            TokenRequest::builder(url.as_str()).encoding(config.body),
            &context,
        )?;
        let credentials =
            ClientCredentials::from_config(&config.client_id, config.auth, DEFAULT_CLIENT_AUTH)
                .default_audience(tenant.as_str())
                .with_client_certificate(endpoint.has_client_certificate());
        let request = credentials
            .apply(request)?
            .param_opt("audience", config.audience)
            .param_opt("resource", config.resource)
            .param_opt("scope", scope)
            .param_opt("organization", config.organization);
        let mut endpoint = endpoint;
        if endpoint.dpop.is_none() {
            endpoint.dpop = config.dpop.dpop(config.accept_bearer_downgrade)?;
        }
        Ok(endpoint
            .source(NAME, field, request)?
            .with_identity_field("client_auth", credentials.auth.as_str())
            .with_error_map(retry_after_from_reset))
    }
}

/// `domain` as a base URL: `https://` in front of a bare host.
fn base_url(domain: &str) -> String {
    let domain = domain.trim();
    if domain.contains("://") {
        domain.to_owned()
    } else {
        format!("https://{domain}")
    }
}

/// The host of `url`, lower-case and without a trailing dot, if it is an
/// Auth0 tenant domain: `auth0.com` or a name below it, which covers every
/// public cloud tenant (`tenant.auth0.com`, `tenant.eu.auth0.com`,
/// `tenant.us.auth0.com`, …) and Private Cloud's
/// (`identity.example-co.auth0.com`).
fn tenant_domain(url: &str) -> Option<String> {
    let parsed = url::Url::parse(url).ok()?;
    let host = parsed
        .host_str()?
        .trim_end_matches('.')
        .to_ascii_lowercase();
    (host == "auth0.com" || host.ends_with(".auth0.com")).then_some(host)
}

/// Mutual TLS reaches Auth0 only through a custom domain's own edge: a
/// TLS method, or a certificate presented for token binding, against a
/// tenant domain is refused, naming `field`, the key that gave the host.
fn checked_mtls_host(
    url: &str,
    field: &str,
    client_auth: ClientAuth,
    certificate: bool,
) -> Result<(), Error> {
    if !client_auth.uses_certificate() && !certificate {
        return Ok(());
    }
    let Some(host) = tenant_domain(url) else {
        return Ok(());
    };
    let what = if client_auth.uses_certificate() {
        format!("client_auth = {:?}", client_auth.as_str())
    } else {
        "a client certificate (tls_client_certificate)".to_owned()
    };
    Err(Error::config(format!(
        "{field}: {host:?} is an Auth0 tenant domain; Auth0 takes {what} only on your custom \
         domain (self-managed certificates, an edge that checks the certificate), such as \
         \"login.example.com\""
    )))
}

/// The grant, once it is one Auth0 takes: client credentials, or a Custom
/// Token Exchange whose token types are the customer's own.
fn checked_grant(grant: &GrantConfig) -> Result<GrantType, Error> {
    if grant.grant() == GrantType::JwtBearer {
        return Err(Error::config(
            "grant_type: \"jwt_bearer\" is not taken by the Auth0 provider (Auth0's JWT-bearer \
             grant is Cross App Access, for an enterprise IdP's ID-JAG); use \"client_credentials\" \
             or \"token_exchange\"",
        ));
    }
    if grant.assertion.is_some() {
        return Err(Error::config(
            "assertion: not taken by the Auth0 provider, which sends no JWT-bearer grant; remove it",
        ));
    }
    if grant.requested_token_type.is_some() {
        return Err(Error::config(
            "requested_token_type: not part of Auth0's Custom Token Exchange request; remove it",
        ));
    }
    grant.check()?;
    if grant.grant() != GrantType::TokenExchange {
        return Ok(grant.grant());
    }
    let Some(subject_type) = grant.subject_token_type.as_deref().map(str::trim) else {
        return Err(Error::config(
            "subject_token_type: required with grant_type = \"token_exchange\" for Auth0: the URI \
             of your Custom Token Exchange Profile, such as \"urn:acme:legacy-token\"",
        ));
    };
    if let Some(namespace) = reserved_namespace(subject_type) {
        return Err(Error::config(format!(
            "subject_token_type: {subject_type:?} is in {namespace}, a namespace Auth0 reserves; \
             use your own profile's URI, such as \"urn:acme:legacy-token\""
        )));
    }
    const ACTOR_TYPES: &str =
        "\"urn:ietf:params:oauth:token-type:id_token\" for an Auth0 ID token, else your own URI";
    match grant.actor_token_type.as_deref().map(str::trim) {
        None if grant.actor_token.is_some() => Err(Error::config(format!(
            "actor_token_type: required with actor_token for Auth0: {ACTOR_TYPES}"
        ))),
        Some(actor_type) if actor_type != ID_TOKEN_TYPE => match reserved_namespace(actor_type) {
            Some(namespace) => Err(Error::config(format!(
                "actor_token_type: {actor_type:?} is in {namespace}, a namespace Auth0 reserves; \
                 use {ACTOR_TYPES}"
            ))),
            None => Ok(GrantType::TokenExchange),
        },
        _ => Ok(GrantType::TokenExchange),
    }
}

/// The reserved namespace `token_type` is in, if any: the namespace
/// itself, or it followed by a path, a port or a further URN segment
/// (`urn:ietf:…`, but not `urn:ietfx:…`, and `https://auth0.com/…`, but
/// not `https://auth0.company.com/…`). Scheme, host and URN namespace are
/// compared without regard to case, as URIs define them.
fn reserved_namespace(token_type: &str) -> Option<&'static str> {
    RESERVED_TOKEN_TYPE_NAMESPACES
        .iter()
        .copied()
        .find(|namespace| {
            let Some(head) = token_type.get(..namespace.len()) else {
                return false;
            };
            let rest = &token_type[namespace.len()..];
            head.eq_ignore_ascii_case(namespace)
                && rest
                    .chars()
                    .next()
                    .is_none_or(|next| matches!(next, '/' | ':' | '?' | '#'))
        })
}

/// Auth0 takes no assertion issued by another party as a client credential,
/// and a client that does not authenticate only for a token exchange.
fn checked_client_auth(client_auth: ClientAuth, grant: GrantType) -> Result<(), Error> {
    match client_auth {
        ClientAuth::ClientAssertion => Err(Error::config(
            "client_auth: Auth0 does not take \"client_assertion\" (a token another party issued \
             is no client credential there); use \"private_key_jwt\" with a key registered to \
             the application",
        )),
        ClientAuth::None if grant != GrantType::TokenExchange => Err(Error::config(
            "client_auth: \"none\" is only for grant_type = \"token_exchange\" (a public \
             application); client credentials need \"post\", \"basic\" or \"private_key_jwt\"",
        )),
        _ => Ok(()),
    }
}

/// The `scope` to send: each scope once, in name order, so that neither
/// repeats nor order split the token cache.
fn scope(scopes: &[String], grant: GrantType) -> Result<Option<String>, Error> {
    if scopes.is_empty() {
        return Ok(None);
    }
    if grant != GrantType::TokenExchange {
        return Err(Error::config(
            "scopes: only used with grant_type = \"token_exchange\"; Auth0's client credentials \
             request takes no scope (the application gets what its client grant allows)",
        ));
    }
    if let Some(bad) = scopes
        .iter()
        .find(|scope| scope.is_empty() || scope.chars().any(char::is_whitespace))
    {
        return Err(Error::config(format!(
            "scopes: {bad:?} is not one scope; list each scope separately"
        )));
    }
    let mut sorted: Vec<&str> = scopes.iter().map(String::as_str).collect();
    sorted.sort_unstable();
    sorted.dedup();
    Ok(Some(sorted.join(" ")))
}

/// The Auth0 provider: [`Auth0Provider::builder`] in code, or
/// `provider = "auth0"` in the facade's config. Both build a
/// [`RequestSource`]; wrap it in a
/// [`ManagedToken`](authmux_core::ManagedToken) to cache its tokens.
#[derive(Clone, Copy, Debug)]
pub struct Auth0Provider;

impl Auth0Provider {
    /// Starts building a source for one application of the tenant at
    /// `domain`, which authenticates with its client secret.
    pub fn builder(
        domain: impl Into<String>,
        client_id: impl Into<String>,
        client_secret: impl Into<ClientSecret>,
    ) -> Auth0Builder {
        Self::config(domain.into(), client_id.into(), Some(client_secret.into())).builder()
    }

    /// Starts building a source for one application of the tenant at
    /// `domain`, which authenticates with `private_key_jwt`: a JWT signed
    /// with `key` (RSA or P-256, PEM or JWK).
    pub fn private_key_jwt(
        domain: impl Into<String>,
        client_id: impl Into<String>,
        key: impl Into<ClientSecret>,
    ) -> Auth0Builder {
        let mut config = Self::config(domain.into(), client_id.into(), None);
        config.auth = ClientAuthConfig::private_key_jwt(key);
        config.builder()
    }

    fn config(
        domain: String,
        client_id: String,
        client_secret: Option<ClientSecret>,
    ) -> Auth0Config {
        Auth0Config {
            domain,
            mtls_domain: None,
            client_id,
            audience: None,
            resource: None,
            organization: None,
            scopes: Vec::new(),
            body: BodyEncoding::Json,
            auth: ClientAuthConfig {
                client_secret,
                ..ClientAuthConfig::default()
            },
            grant: GrantConfig::default(),
            allow_insecure_http: false,
            dpop: DpopConfig::Disabled,
            accept_bearer_downgrade: false,
        }
    }
}

impl Provider for Auth0Provider {
    const NAME: &'static str = NAME;
    type Config = Auth0Config;

    /// Builds the source; a token exchange takes the other clients'
    /// tokens from `context`.
    fn build(config: Auth0Config, context: &BuildContext) -> Result<SharedTokenSource, Error> {
        let mut builder = config.builder().context(context);
        builder.clients = context.clone();
        Ok(builder.build()?.into())
    }
}

/// Auth0's 429s may carry only `X-RateLimit-Reset`, in epoch seconds: turn
/// it into the wait that `Retry-After` would have given.
fn retry_after_from_reset(error: Error) -> Error {
    if error.kind() != ErrorKind::RateLimited || error.retry_after().is_some() {
        return error;
    }
    let Some(reset) = error.rate_limit().reset else {
        return error;
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs());
    let wait = Duration::from_secs(reset.saturating_sub(now)).min(MAX_RESET_WAIT);
    error.with_retry_after(wait)
}

#[cfg(test)]
mod tests {
    use super::*;
    use authmux_core::RateLimit;
    use authmux_core::TokenSource as _;
    use serde_json::json;

    fn builder() -> Auth0Builder {
        Auth0Provider::builder(
            "tenant.eu.auth0.com",
            "id",
            ClientSecret::inline("s3cr3t-value"),
        )
    }

    #[test]
    fn domains_and_base_urls() {
        let url = |domain: &str| {
            Auth0Provider::builder(domain, "id", ClientSecret::inline("s"))
                .audience("https://api")
                .build()
                .expect("valid")
                .token_url()
                .to_owned()
        };
        assert_eq!(
            url("tenant.eu.auth0.com"),
            "https://tenant.eu.auth0.com/oauth/token"
        );
        assert_eq!(
            url("https://login.example.com/"),
            "https://login.example.com/oauth/token"
        );
        assert_eq!(
            url("http://127.0.0.1:8080"),
            "http://127.0.0.1:8080/oauth/token"
        );
        let error =
            Auth0Provider::builder("http://login.example.com", "id", ClientSecret::inline("s"))
                .audience("https://api")
                .build()
                .expect_err("plain http");
        assert!(error.to_string().starts_with("domain: "), "{error}");
    }

    #[test]
    fn audience_or_resource_is_required() {
        assert_eq!(
            builder().build().expect_err("missing").to_string(),
            "audience: required unless resource is set"
        );
        assert!(builder().resource("https://api").build().is_ok());
        assert!(builder().audience("a").resource("b").build().is_err());
    }

    #[test]
    fn identity_covers_every_parameter_and_the_auth_style() {
        let base = builder()
            .audience("https://a")
            .build()
            .expect("valid")
            .identity();
        let other_audience = builder()
            .audience("https://b")
            .build()
            .expect("valid")
            .identity();
        let organization = builder()
            .audience("https://a")
            .organization("org_1")
            .build()
            .expect("valid")
            .identity();
        let resource = builder()
            .resource("https://a")
            .build()
            .expect("valid")
            .identity();
        let basic = builder()
            .audience("https://a")
            .client_auth(ClientAuth::Basic)
            .build()
            .expect("valid")
            .identity();
        for other in [&other_audience, &organization, &resource, &basic] {
            assert_ne!(&base, other);
        }
        assert_eq!(
            basic.get("client_id"),
            Some("id"),
            "a Basic client id still counts"
        );
        assert!(!format!("{basic:?}").contains("s3cr3t-value"));
    }

    fn exchange(subject: &str, subject_type: &str) -> GrantConfig {
        GrantConfig {
            grant_type: Some(GrantType::TokenExchange),
            subject_token: Some(authmux_core::grant::TokenInput::External(
                authmux_core::ExternalSource::File(subject.into()),
            )),
            subject_token_type: Some(subject_type.into()),
            ..GrantConfig::default()
        }
    }

    #[test]
    fn identity_covers_the_grant() {
        let identity = |grant: GrantConfig| {
            builder()
                .audience("https://a")
                .grant(grant)
                .build()
                .expect("valid")
                .identity()
        };
        let credentials = identity(GrantConfig::default());
        let exchanged = identity(exchange("/run/a", "urn:acme:legacy"));
        assert_eq!(
            exchanged.get("grant_type"),
            Some(authmux_core::grant::TOKEN_EXCHANGE_GRANT)
        );
        assert_eq!(exchanged.get("subject_token_type"), Some("urn:acme:legacy"));
        assert_eq!(exchanged.get("subject_token.source"), Some("file:/run/a"));
        for other in [
            &credentials,
            &identity(exchange("/run/b", "urn:acme:legacy")),
            &identity(exchange("/run/a", "urn:acme:other")),
        ] {
            assert_ne!(&exchanged, other);
        }
        let scoped = builder()
            .audience("https://a")
            .grant(exchange("/run/a", "urn:acme:legacy"))
            .scopes(["read", "openid", "read"])
            .build()
            .expect("valid")
            .identity();
        assert_eq!(scoped.get("scope"), Some("openid read"), "sorted, once");
    }

    #[test]
    fn a_token_exchange_needs_no_audience() {
        let provider = builder()
            .grant(exchange("/run/a", "urn:acme:legacy"))
            .build()
            .expect("the tenant's default audience");
        assert_eq!(provider.identity().get("audience"), None);
    }

    #[test]
    fn reserved_namespaces_are_matched_by_segment() {
        for reserved in [
            "urn:ietf:params:oauth:token-type:jwt",
            "URN:IETF:params:oauth:token-type:access_token",
            "urn:auth0",
            "urn:okta:x",
            "https://auth0.com/token",
            "http://auth0.com",
            "https://Okta.com:443/x",
            "https://auth0.com?x",
        ] {
            assert!(reserved_namespace(reserved).is_some(), "{reserved}");
        }
        for own in [
            "urn:acme:legacy-token",
            "urn:ietfx:token",
            "https://auth0.company.com/token",
            "https://tenant.auth0.com.example/token",
            "http://acme.com/legacy-token",
            "urn:auth",
        ] {
            assert_eq!(reserved_namespace(own), None, "{own}");
        }
    }

    #[test]
    fn tenant_domains_are_auth0_com_and_below() {
        for (url, host) in [
            ("https://tenant.auth0.com/oauth/token", "tenant.auth0.com"),
            (
                "https://tenant.eu.auth0.com/oauth/token",
                "tenant.eu.auth0.com",
            ),
            (
                "https://tenant.us.auth0.com/oauth/token",
                "tenant.us.auth0.com",
            ),
            (
                "https://Tenant.JP.Auth0.com:443/oauth/token",
                "tenant.jp.auth0.com",
            ),
            (
                "https://tenant.uk.auth0.com./oauth/token",
                "tenant.uk.auth0.com",
            ),
            (
                "https://user@tenant.au.auth0.com/x?y#z",
                "tenant.au.auth0.com",
            ),
            ("http://auth0.com", "auth0.com"),
        ] {
            assert_eq!(tenant_domain(url).as_deref(), Some(host), "{url}");
        }
        for url in [
            "https://login.example.com/oauth/token",
            "https://mtls.login.example.com/oauth/token",
            "https://myauth0.com/oauth/token",
            "https://tenant.auth0.com.example.com/oauth/token",
            "https://example.com/tenant.auth0.com",
            "https://example.com/?next=a.auth0.com",
            "http://127.0.0.1:8080/oauth/token",
            "https://[::1]:8443/oauth/token",
        ] {
            assert_eq!(tenant_domain(url), None, "{url}");
        }
    }

    #[test]
    fn rate_limit_reset_becomes_retry_after() {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("after 1970")
            .as_secs();
        let error = Error::new(ErrorKind::RateLimited, "")
            .with_status(429)
            .with_rate_limit(RateLimit {
                reset: Some(now + 20),
                ..RateLimit::default()
            });
        let retry_after = retry_after_from_reset(error)
            .retry_after()
            .expect("derived");
        assert!(retry_after <= Duration::from_secs(20) && retry_after >= Duration::from_secs(18));
        let explicit = Error::new(ErrorKind::RateLimited, "")
            .with_retry_after(Duration::from_secs(3))
            .with_rate_limit(RateLimit {
                reset: Some(now + 20),
                ..RateLimit::default()
            });
        assert_eq!(
            retry_after_from_reset(explicit).retry_after(),
            Some(Duration::from_secs(3)),
            "Retry-After wins"
        );
    }

    #[test]
    fn config_defaults_and_debug() {
        let config: Auth0Config = serde_json::from_value(json!({
            "domain": "tenant.eu.auth0.com", "client_id": "id",
            "client_secret": "s3cr3t-value", "audience": "https://api"
        }))
        .expect("valid config");
        assert_eq!(config.body, BodyEncoding::Json);
        assert_eq!(config.client_auth(), ClientAuth::Body);
        assert!(!format!("{config:?}").contains("s3cr3t-value"));
        let form: Auth0Config = serde_json::from_value(json!({
            "domain": "d", "client_id": "id", "client_secret": "s",
            "audience": "a", "body": "form", "client_auth": "basic"
        }))
        .expect("valid config");
        assert_eq!(form.body, BodyEncoding::Form);
        assert_eq!(form.client_auth(), ClientAuth::Basic);
        let provider = config.builder().build().expect("valid");
        assert!(!format!("{provider:?}").contains("s3cr3t-value"));
    }
}
