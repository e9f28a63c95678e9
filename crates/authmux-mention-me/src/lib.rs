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

pub use authmux_core::EndpointBuilder;
use authmux_core::wire::{ClientAuth, RequestSource, TokenRequest};
use authmux_core::{
    BuildContext, ClientCredentials, ClientSecret, Endpoint, Error, ErrorKind, Provider,
    SharedTokenSource, Token,
};
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

/// The configuration of a Mention Me client. `Debug` leaves out the
/// secret ([`ClientSecret`] redacts itself).
#[derive(Clone, Debug, Deserialize)]
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

impl MentionMeConfig {
    /// A builder holding this configuration.
    pub fn builder(&self) -> MentionMeBuilder {
        MentionMeBuilder {
            endpoint: Endpoint::new(self.base_url.clone(), self.allow_insecure_http),
            config: self.clone(),
        }
    }
}

/// Builds a Mention Me token source; see [`MentionMeProvider::builder`].
/// The endpoint setters (`base_url`, `http_client`, …) come from
/// [`EndpointBuilder`].
#[derive(Debug)]
pub struct MentionMeBuilder {
    config: MentionMeConfig,
    endpoint: Endpoint,
}

impl EndpointBuilder for MentionMeBuilder {
    fn endpoint(&mut self) -> &mut Endpoint {
        &mut self.endpoint
    }
}

impl MentionMeBuilder {
    /// The environment whose host to use.
    pub fn environment(mut self, environment: Environment) -> Self {
        self.config.environment = Some(environment);
        self
    }

    /// Validates the settings, reads the secret and builds the source.
    pub fn build(self) -> Result<RequestSource, Error> {
        let environment = self
            .config
            .environment
            .map(|environment| ("environment", environment.base_url()));
        let (url, field) = self.endpoint.token_url(
            environment,
            TOKEN_PATH,
            "environment: required unless base_url is set (\"demo\" or \"production\")",
        )?;
        let credentials = ClientCredentials::new(
            self.config.client_id,
            self.config.client_secret,
            ClientAuth::Body,
        );
        let request = credentials
            .apply(TokenRequest::builder(url).json())?
            .param("grant_type", "client_credentials");
        self.endpoint.source(NAME, field, request)
    }
}

/// The Mention Me provider: [`MentionMeProvider::builder`] in code, or
/// `provider = "mention-me"` in the facade's config. Both build a
/// [`RequestSource`]; wrap it in a
/// [`ManagedToken`](authmux_core::ManagedToken) to cache its tokens.
#[derive(Clone, Copy, Debug)]
pub struct MentionMeProvider;

impl MentionMeProvider {
    /// Starts building a source for one API key.
    pub fn builder(
        client_id: impl Into<String>,
        client_secret: impl Into<ClientSecret>,
    ) -> MentionMeBuilder {
        MentionMeConfig {
            client_id: client_id.into(),
            client_secret: client_secret.into(),
            environment: None,
            base_url: None,
            allow_insecure_http: false,
        }
        .builder()
    }
}

impl Provider for MentionMeProvider {
    const NAME: &'static str = NAME;
    type Config = MentionMeConfig;

    fn build(config: MentionMeConfig, context: &BuildContext) -> Result<SharedTokenSource, Error> {
        Ok(config.builder().context(context).build()?.into())
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
        let provider = config.builder().build().expect("valid");
        assert!(!format!("{provider:?}").contains("s3cr3t-value"));
        let unknown = serde_json::from_value::<MentionMeConfig>(json!({
            "client_id": "id", "client_secret": "s", "enviroment": "demo"
        }));
        assert!(unknown.is_err());
    }
}
