//! [Mention Me](https://mention-me.com) access tokens for [authmux]: the
//! client credentials exchange of Mention Me's merchant API.
//!
//! # The exchange
//!
//! ```text
//! POST https://demo.mention-me.com/api/oauth/token
//! content-type: application/json
//! accept: application/json
//!
//! {"client_id":"<client-id>","client_secret":"<client-secret>","grant_type":"client_credentials"}
//! ```
//!
//! ```text
//! HTTP/1.1 200 OK
//!
//! {"access_token":"<jwt>","expires_in":3600,"token_type":"bearer"}
//! ```
//!
//! The lower-case `bearer` is read as `Bearer`, the scheme sent to the API.
//! Tokens last one hour; the expiry used is the earlier of `expires_in` and
//! the JWT's `exp`. The JWT carries the merchant and environment it is bound
//! to: read them with [`MentionMeTokenExt::mention_me_claims`]. Errors such as
//! `{"code":"401","message":"Expired token."}` become [`Error`]s of kind
//! `Refused` carrying the message.
//!
//! # Example
//!
//! ```no_run
//! use authmux_core::{ClientSecret, ManagedToken};
//! use authmux_mention_me::{Environment, MentionMeProvider, MentionMeTokenExt};
//!
//! # async fn run() -> Result<(), authmux_core::Error> {
//! let provider = MentionMeProvider::builder("my-client-id", ClientSecret::Env {
//!     env: "MENTION_ME_CLIENT_SECRET".into(),
//! })
//! .environment(Environment::Demo)
//! .build()?;
//! let cache = ManagedToken::builder(provider).name("mention-me").build();
//! let token = cache.get().await?;
//! let claims = token.mention_me_claims()?;
//! println!("merchant {:?} in {:?}", claims.merchant_id, claims.env);
//! # Ok(())
//! # }
//! ```
//!
//! # Configuration
//!
//! [`MentionMeConfig`] deserializes from the facade's config file:
//!
//! ```toml
//! [clients.referrals]
//! provider = "mention-me"
//! client_id = "m2m-client-test-3191ab24"
//! client_secret = { env = "MENTION_ME_CLIENT_SECRET" }
//! environment = "demo"            # or "production"
//! # base_url = "https://api-demo.mention-me.com"   # overrides environment
//! ```
//!
//! [authmux]: https://github.com/authmux/authmux

use std::fmt;

use async_trait::async_trait;
use authmux_core::wire::{ClientAuth, HttpClient, TokenRequest, join_url, require};
use authmux_core::{ClientSecret, Error, ErrorKind, Token, TokenIdentity, TokenSource};
use serde::Deserialize;
use serde_json::Value;

/// The provider's name in configs, errors and logs.
pub const NAME: &str = "mention-me";

/// The token endpoint's path below the base URL.
pub const TOKEN_PATH: &str = "/api/oauth/token";

/// Which Mention Me environment to get tokens for. Each token is bound to one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Environment {
    /// `https://demo.mention-me.com`, the host of Mention Me's own guide.
    Demo,
    /// `https://mention-me.com`.
    Production,
}

impl Environment {
    /// The environment's base URL.
    pub fn base_url(self) -> &'static str {
        match self {
            Self::Demo => "https://demo.mention-me.com",
            Self::Production => "https://mention-me.com",
        }
    }
}

/// The configuration of a Mention Me client.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MentionMeConfig {
    /// The API key's client id.
    pub client_id: String,
    /// The API key's client secret.
    pub client_secret: ClientSecret,
    /// `demo` or `production`; required unless `base_url` is set.
    #[serde(default)]
    pub environment: Option<Environment>,
    /// A base URL that overrides `environment`.
    #[serde(default)]
    pub base_url: Option<String>,
    /// Allows plain `http` to a non-loopback host.
    #[serde(default)]
    pub allow_insecure_http: bool,
}

impl fmt::Debug for MentionMeConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MentionMeConfig")
            .field("client_id", &self.client_id)
            .field("client_secret", &self.client_secret)
            .field("environment", &self.environment)
            .field("base_url", &self.base_url)
            .field("allow_insecure_http", &self.allow_insecure_http)
            .finish()
    }
}

impl MentionMeConfig {
    /// A builder holding this configuration.
    pub fn builder(&self) -> MentionMeBuilder {
        MentionMeBuilder {
            client_id: self.client_id.clone(),
            client_secret: self.client_secret.clone(),
            environment: self.environment,
            base_url: self.base_url.clone(),
            allow_insecure_http: self.allow_insecure_http,
            http: None,
        }
    }
}

/// Builds a [`MentionMeProvider`]; see [`MentionMeProvider::builder`].
#[derive(Debug)]
pub struct MentionMeBuilder {
    client_id: String,
    client_secret: ClientSecret,
    environment: Option<Environment>,
    base_url: Option<String>,
    allow_insecure_http: bool,
    http: Option<HttpClient>,
}

impl MentionMeBuilder {
    /// The environment whose host to use.
    pub fn environment(mut self, environment: Environment) -> Self {
        self.environment = Some(environment);
        self
    }

    /// A base URL that overrides the environment's host.
    pub fn base_url(mut self, base_url: impl Into<String>) -> Self {
        self.base_url = Some(base_url.into());
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

    /// Validates the settings, reads the secret and builds the provider.
    pub fn build(self) -> Result<MentionMeProvider, Error> {
        require("client_id", &self.client_id)?;
        let base = match (&self.base_url, self.environment) {
            (Some(base_url), _) => base_url.as_str(),
            (None, Some(environment)) => environment.base_url(),
            (None, None) => {
                return Err(Error::config(
                    "environment: required unless base_url is set (\"demo\" or \"production\")",
                ));
            }
        };
        let client_secret = self.client_secret.resolve("client_secret")?;
        let request = TokenRequest::builder(join_url(base, TOKEN_PATH))
            .json()
            .client_credentials(ClientAuth::Body, self.client_id, client_secret)
            .param("grant_type", "client_credentials")
            .allow_insecure_http(self.allow_insecure_http)
            .build()
            .map_err(|error| prefix_url_error(error, self.base_url.is_some()))?;
        let http = match self.http {
            Some(http) => http,
            None => HttpClient::new()?,
        };
        Ok(MentionMeProvider { http, request })
    }
}

fn prefix_url_error(error: Error, from_base_url: bool) -> Error {
    let field = if from_base_url {
        "base_url"
    } else {
        "environment"
    };
    Error::config(format!("{field}: {}", error.message()))
}

/// Gets Mention Me access tokens. Wrap it in a
/// [`ManagedToken`](authmux_core::ManagedToken) to cache them.
#[derive(Clone, Debug)]
pub struct MentionMeProvider {
    http: HttpClient,
    request: TokenRequest,
}

impl MentionMeProvider {
    /// Starts building a provider for one API key.
    pub fn builder(
        client_id: impl Into<String>,
        client_secret: impl Into<ClientSecret>,
    ) -> MentionMeBuilder {
        MentionMeBuilder {
            client_id: client_id.into(),
            client_secret: client_secret.into(),
            environment: None,
            base_url: None,
            allow_insecure_http: false,
            http: None,
        }
    }

    /// Builds a provider from its configuration.
    pub fn from_config(config: &MentionMeConfig) -> Result<Self, Error> {
        config.builder().build()
    }

    /// The token endpoint.
    pub fn token_url(&self) -> &str {
        self.request.url().as_str()
    }
}

#[async_trait]
impl TokenSource for MentionMeProvider {
    fn provider(&self) -> &str {
        NAME
    }

    fn identity(&self) -> TokenIdentity {
        TokenIdentity::from_request(NAME, &self.request)
    }

    async fn fetch_token(&self) -> Result<Token, Error> {
        self.http.fetch_token(&self.request).await
    }
}

/// What a Mention Me access token says about itself (its JWT payload).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct MentionMeClaims {
    /// `claims.env`: the environment the token is for, such as `demo`.
    pub env: Option<String>,
    /// `claims.merchantId`, as a string whether it was sent as a string or
    /// a number.
    pub merchant_id: Option<String>,
    /// `scope`, split on spaces, such as `customers:list`.
    pub scopes: Vec<String>,
    /// `aud`, as a list whether it was sent as a string or a list.
    pub aud: Vec<String>,
    /// `exp`, in seconds since the Unix epoch.
    pub exp: Option<i64>,
    /// `iat`, in seconds since the Unix epoch.
    pub iat: Option<i64>,
    /// `iss`.
    pub iss: Option<String>,
    /// `nbf`, in seconds since the Unix epoch.
    pub nbf: Option<i64>,
    /// `sub`: the API key's machine-to-machine client.
    pub sub: Option<String>,
}

/// Reads [`MentionMeClaims`] from a token.
pub trait MentionMeTokenExt {
    /// Decodes the token's JWT payload (without verifying it) into
    /// [`MentionMeClaims`].
    fn mention_me_claims(&self) -> Result<MentionMeClaims, Error>;
}

impl MentionMeTokenExt for Token {
    fn mention_me_claims(&self) -> Result<MentionMeClaims, Error> {
        let payload: serde_json::Map<String, Value> = self.claims()?;
        Ok(MentionMeClaims::from_payload(&payload))
    }
}

impl MentionMeClaims {
    fn from_payload(payload: &serde_json::Map<String, Value>) -> Self {
        let text = |value: Option<&Value>| match value? {
            Value::String(text) => Some(text.clone()),
            Value::Number(number) => Some(number.to_string()),
            _ => None,
        };
        let seconds = |key: &str| match payload.get(key)? {
            Value::Number(number) => number
                .as_i64()
                .or_else(|| number.as_f64().map(|value| value as i64)),
            Value::String(text) => text.trim().parse().ok(),
            _ => None,
        };
        let inner = payload.get("claims");
        Self {
            env: text(inner.and_then(|claims| claims.get("env"))),
            merchant_id: text(inner.and_then(|claims| claims.get("merchantId"))),
            scopes: payload
                .get("scope")
                .and_then(Value::as_str)
                .map(|scope| scope.split_whitespace().map(str::to_owned).collect())
                .unwrap_or_default(),
            aud: match payload.get("aud") {
                Some(Value::String(aud)) => vec![aud.clone()],
                Some(Value::Array(auds)) => auds
                    .iter()
                    .filter_map(|aud| aud.as_str().map(str::to_owned))
                    .collect(),
                _ => Vec::new(),
            },
            exp: seconds("exp"),
            iat: seconds("iat"),
            iss: text(payload.get("iss")),
            nbf: seconds("nbf"),
            sub: text(payload.get("sub")),
        }
    }
}

/// Whether `error` means the client must re-authenticate: Mention Me
/// answers any API call made with a bad or expired token with 401.
pub fn is_reauthentication_needed(error: &Error) -> bool {
    error.kind() == ErrorKind::Refused && error.status() == Some(401)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn claims_accept_string_or_number_merchant_ids_and_audiences() {
        let payload = json!({
            "aud": ["project-test-2da703ca"],
            "claims": {"env": "demo", "merchantId": "4259"},
            "exp": 1706201080, "iat": 1706197480, "nbf": 1706197480,
            "iss": "stytch.com/project-test-2da703ca",
            "scope": "customers:list customers:write",
            "sub": "m2m-client-test-3191ab24"
        });
        let claims = MentionMeClaims::from_payload(payload.as_object().expect("object"));
        assert_eq!(claims.env.as_deref(), Some("demo"));
        assert_eq!(claims.merchant_id.as_deref(), Some("4259"));
        assert_eq!(claims.scopes, ["customers:list", "customers:write"]);
        assert_eq!(claims.aud, ["project-test-2da703ca"]);
        assert_eq!(claims.exp, Some(1_706_201_080));
        assert_eq!(claims.iat, Some(1_706_197_480));
        assert_eq!(claims.nbf, Some(1_706_197_480));
        assert_eq!(claims.sub.as_deref(), Some("m2m-client-test-3191ab24"));

        let payload = json!({"claims": {"merchantId": 4259}, "aud": "single"});
        let claims = MentionMeClaims::from_payload(payload.as_object().expect("object"));
        assert_eq!(claims.merchant_id.as_deref(), Some("4259"));
        assert_eq!(claims.aud, ["single"]);
        assert!(claims.scopes.is_empty());
    }

    #[test]
    fn builder_errors_name_the_field() {
        let error = MentionMeProvider::builder("", ClientSecret::inline("s"))
            .environment(Environment::Demo)
            .build()
            .expect_err("empty id");
        assert_eq!(error.to_string(), "client_id: must not be empty");
        let error = MentionMeProvider::builder("id", ClientSecret::inline("s"))
            .build()
            .expect_err("no environment");
        assert!(
            error
                .to_string()
                .starts_with("environment: required unless base_url")
        );
        let error = MentionMeProvider::builder("id", ClientSecret::inline("s"))
            .base_url("http://mention-me.example")
            .build()
            .expect_err("plain http");
        assert!(error.to_string().starts_with("base_url: "), "{error}");
    }

    #[test]
    fn environments_map_to_the_documented_hosts() {
        let url = |environment| {
            MentionMeProvider::builder("id", ClientSecret::inline("s"))
                .environment(environment)
                .build()
                .expect("valid")
                .token_url()
                .to_owned()
        };
        assert_eq!(
            url(Environment::Demo),
            "https://demo.mention-me.com/api/oauth/token"
        );
        assert_eq!(
            url(Environment::Production),
            "https://mention-me.com/api/oauth/token"
        );
    }

    #[test]
    fn config_debug_leaves_out_the_secret() {
        let config: MentionMeConfig = serde_json::from_value(json!({
            "client_id": "id", "client_secret": "s3cr3t-value", "environment": "demo"
        }))
        .expect("valid config");
        assert!(!format!("{config:?}").contains("s3cr3t-value"));
        let provider = MentionMeProvider::from_config(&config).expect("valid");
        assert!(!format!("{provider:?}").contains("s3cr3t-value"));
        let unknown = serde_json::from_value::<MentionMeConfig>(json!({
            "client_id": "id", "client_secret": "s", "enviroment": "demo"
        }));
        assert!(unknown.is_err());
    }
}
