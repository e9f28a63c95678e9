//! [Auth0](https://auth0.com) machine-to-machine access tokens for
//! [authmux]: the client credentials exchange at `/oauth/token`, with
//! `audience`, `resource`, `organization` and an optional DPoP proof.
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
//! (`client_auth = "basic"`).
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
//! [authmux]: https://github.com/authmux/authmux

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use authmux_core::wire::{BodyEncoding, ClientAuth, HttpClient, TokenRequest, join_url, require};
use authmux_core::{ClientSecret, Dpop, Error, ErrorKind, Token, TokenIdentity, TokenSource};
use authmux_dpop::DpopConfig;
use serde::Deserialize;

/// The provider's name in configs, errors and logs.
pub const NAME: &str = "auth0";

/// The token endpoint's path below the tenant's base URL.
pub const TOKEN_PATH: &str = "/oauth/token";

/// The longest wait taken from `X-RateLimit-Reset`.
const MAX_RESET_WAIT: Duration = Duration::from_secs(3600);

/// The configuration of an Auth0 client.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Auth0Config {
    /// The tenant's domain (`tenant.eu.auth0.com`), or a base URL such as a
    /// custom domain (`https://login.example.com`).
    pub domain: String,
    /// The application's client id.
    pub client_id: String,
    /// The application's client secret.
    pub client_secret: ClientSecret,
    /// The API identifier; required unless `resource` is set.
    #[serde(default)]
    pub audience: Option<String>,
    /// The API identifier, for tenants in the `compatibility` profile.
    #[serde(default)]
    pub resource: Option<String>,
    /// The organization name or id; the token then carries `org_id`.
    #[serde(default)]
    pub organization: Option<String>,
    /// `json` (default) or `form`.
    #[serde(default = "json")]
    pub body: BodyEncoding,
    /// `post` (default: credentials in the body) or `basic`.
    #[serde(default)]
    pub client_auth: ClientAuth,
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

impl fmt::Debug for Auth0Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Auth0Config")
            .field("domain", &self.domain)
            .field("client_id", &self.client_id)
            .field("client_secret", &self.client_secret)
            .field("audience", &self.audience)
            .field("resource", &self.resource)
            .field("organization", &self.organization)
            .field("body", &self.body)
            .field("client_auth", &self.client_auth)
            .field("allow_insecure_http", &self.allow_insecure_http)
            .field("dpop", &self.dpop)
            .field("accept_bearer_downgrade", &self.accept_bearer_downgrade)
            .finish()
    }
}

impl Auth0Config {
    /// A builder holding this configuration.
    pub fn builder(&self) -> Auth0Builder {
        Auth0Builder {
            domain: self.domain.clone(),
            client_id: self.client_id.clone(),
            client_secret: self.client_secret.clone(),
            audience: self.audience.clone(),
            resource: self.resource.clone(),
            organization: self.organization.clone(),
            body: self.body,
            client_auth: self.client_auth,
            allow_insecure_http: self.allow_insecure_http,
            http: None,
            dpop: None,
            dpop_config: self.dpop.clone(),
            accept_bearer_downgrade: self.accept_bearer_downgrade,
        }
    }
}

/// Builds an [`Auth0Provider`]; see [`Auth0Provider::builder`].
pub struct Auth0Builder {
    domain: String,
    client_id: String,
    client_secret: ClientSecret,
    audience: Option<String>,
    resource: Option<String>,
    organization: Option<String>,
    body: BodyEncoding,
    client_auth: ClientAuth,
    allow_insecure_http: bool,
    http: Option<HttpClient>,
    dpop: Option<Dpop>,
    dpop_config: DpopConfig,
    accept_bearer_downgrade: bool,
}

impl fmt::Debug for Auth0Builder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Auth0Builder")
            .field("domain", &self.domain)
            .field("client_id", &self.client_id)
            .field("client_secret", &self.client_secret)
            .field("audience", &self.audience)
            .field("resource", &self.resource)
            .field(
                "dpop",
                &self.dpop.as_ref().map(|prover| prover.thumbprint()),
            )
            .finish_non_exhaustive()
    }
}

impl Auth0Builder {
    /// The API identifier to get a token for.
    pub fn audience(mut self, audience: impl Into<String>) -> Self {
        self.audience = Some(audience.into());
        self
    }

    /// The API identifier, for tenants in the `compatibility` profile.
    pub fn resource(mut self, resource: impl Into<String>) -> Self {
        self.resource = Some(resource.into());
        self
    }

    /// The organization name or id.
    pub fn organization(mut self, organization: impl Into<String>) -> Self {
        self.organization = Some(organization.into());
        self
    }

    /// The body encoding; JSON unless set.
    pub fn body(mut self, body: BodyEncoding) -> Self {
        self.body = body;
        self
    }

    /// How the client authenticates; body parameters unless set.
    pub fn client_auth(mut self, client_auth: ClientAuth) -> Self {
        self.client_auth = client_auth;
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

    /// Asks for DPoP-bound tokens: every token request carries a fresh
    /// proof from `dpop`, a `use_dpop_nonce` challenge is answered once, and
    /// a Bearer answer is an error unless the downgrade is accepted.
    pub fn dpop(mut self, dpop: Dpop) -> Self {
        self.dpop = Some(dpop);
        self
    }

    /// Validates the settings, reads the secret and builds the provider.
    pub fn build(self) -> Result<Auth0Provider, Error> {
        require("domain", &self.domain)?;
        require("client_id", &self.client_id)?;
        match (&self.audience, &self.resource) {
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
        let domain = self.domain.trim();
        let base = if domain.contains("://") {
            domain.to_owned()
        } else {
            format!("https://{domain}")
        };
        let client_secret = self.client_secret.resolve("client_secret")?;
        let request = TokenRequest::builder(join_url(&base, TOKEN_PATH))
            .encoding(self.body)
            .param("grant_type", "client_credentials")
            .client_credentials(self.client_auth, self.client_id, client_secret)
            .param_opt("audience", self.audience)
            .param_opt("resource", self.resource)
            .param_opt("organization", self.organization)
            .allow_insecure_http(self.allow_insecure_http)
            .build()
            .map_err(|error| Error::config(format!("domain: {}", error.message())))?;
        let dpop = match self.dpop {
            Some(dpop) => Some(dpop),
            None => self.dpop_config.dpop(self.accept_bearer_downgrade)?,
        };
        let http = match self.http {
            Some(http) => http,
            None => HttpClient::new()?,
        };
        Ok(Auth0Provider {
            http,
            request,
            client_auth: self.client_auth,
            dpop,
        })
    }
}

/// Gets Auth0 access tokens. Wrap it in a
/// [`ManagedToken`](authmux_core::ManagedToken) to cache them.
#[derive(Clone)]
pub struct Auth0Provider {
    http: HttpClient,
    request: TokenRequest,
    client_auth: ClientAuth,
    dpop: Option<Dpop>,
}

impl fmt::Debug for Auth0Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Auth0Provider")
            .field("request", &self.request)
            .field(
                "dpop",
                &self.dpop.as_ref().map(|prover| prover.thumbprint()),
            )
            .finish()
    }
}

impl Auth0Provider {
    /// Starts building a provider for one application of the tenant at
    /// `domain`.
    pub fn builder(
        domain: impl Into<String>,
        client_id: impl Into<String>,
        client_secret: impl Into<ClientSecret>,
    ) -> Auth0Builder {
        Auth0Builder {
            domain: domain.into(),
            client_id: client_id.into(),
            client_secret: client_secret.into(),
            audience: None,
            resource: None,
            organization: None,
            body: BodyEncoding::Json,
            client_auth: ClientAuth::Body,
            allow_insecure_http: false,
            http: None,
            dpop: None,
            dpop_config: DpopConfig::Disabled,
            accept_bearer_downgrade: false,
        }
    }

    /// Builds a provider from its configuration.
    pub fn from_config(config: &Auth0Config) -> Result<Self, Error> {
        config.builder().build()
    }

    /// The token endpoint.
    pub fn token_url(&self) -> &str {
        self.request.url().as_str()
    }
}

#[async_trait]
impl TokenSource for Auth0Provider {
    fn provider(&self) -> &str {
        NAME
    }

    fn identity(&self) -> TokenIdentity {
        let identity = TokenIdentity::from_request(NAME, &self.request)
            .with("client_auth", self.client_auth.as_str());
        match &self.dpop {
            Some(dpop) => identity.with("dpop", dpop.thumbprint()),
            None => identity,
        }
    }

    async fn fetch_token(&self) -> Result<Token, Error> {
        let outcome = match &self.dpop {
            None => self.http.fetch_token(&self.request).await,
            Some(dpop) => self.http.fetch_token_dpop(&self.request, dpop).await,
        };
        outcome.map_err(retry_after_from_reset)
    }

    fn dpop(&self) -> Option<&Dpop> {
        self.dpop.as_ref()
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
        assert_eq!(config.client_auth, ClientAuth::Body);
        assert!(!format!("{config:?}").contains("s3cr3t-value"));
        let form: Auth0Config = serde_json::from_value(json!({
            "domain": "d", "client_id": "id", "client_secret": "s",
            "audience": "a", "body": "form", "client_auth": "basic"
        }))
        .expect("valid config");
        assert_eq!(form.body, BodyEncoding::Form);
        assert_eq!(form.client_auth, ClientAuth::Basic);
        let provider = Auth0Provider::from_config(&config).expect("valid");
        assert!(!format!("{provider:?}").contains("s3cr3t-value"));
    }
}
