//! [360Learning](https://360learning.com) API v2 access tokens for
//! [authmux]: the `/api/v2/oauth2/token` client credentials exchange.
//!
//! # The exchange
//!
//! ```text
//! POST https://app.360learning.com/api/v2/oauth2/token
//! accept: application/json
//! content-type: application/json
//!
//! {"grant_type":"client_credentials","client_id":"<id>","client_secret":"<secret>"}
//! ```
//!
//! `company_id` and `user_id` are added only when configured: the API
//! rejects any property it does not expect. They change which token you get,
//! so they are part of the token's identity (its cache key).
//!
//! ```text
//! HTTP/1.1 200 OK
//!
//! {"token_type":"Bearer","access_token":"<token>","expires_in":"3600"}
//! ```
//!
//! `expires_in` arrives as a string; a number is accepted too. Errors such as
//! `400 {"error":"invalid_request"}` or `401 {"error":"invalid_client"}` have
//! no description and become [`Error`]s of kind `Refused` with that code.
//! Every API call made with the token also needs the header
//! `360-api-version: v2.0`: [`TokenSource::api_headers`](authmux_core::TokenSource::api_headers) returns it, and
//! authmux's HTTP middleware adds it for you.
//!
//! # Example
//!
//! ```no_run
//! use authmux_360learning::{Region, ThreeSixtyLearningProvider};
//! use authmux_core::{ClientSecret, ManagedToken};
//!
//! # async fn run() -> Result<(), authmux_core::Error> {
//! let provider = ThreeSixtyLearningProvider::builder("my-client-id", ClientSecret::Env {
//!     env: "LEARNING_CLIENT_SECRET".into(),
//! })
//! .region(Region::Eu)
//! .company_id("5d8b5c2b1d4b3e0001a1b2c3")
//! .build()?;
//! let cache = ManagedToken::builder(provider).name("learning").build();
//! let _token = cache.get().await?;
//! # Ok(())
//! # }
//! ```
//!
//! # Configuration
//!
//! ```toml
//! [clients.learning]
//! provider = "360learning"
//! client_id = "my-client-id"
//! client_secret = { file = "/run/secrets/360learning" }
//! region = "eu"                           # or "us"
//! company_id = "5d8b5c2b1d4b3e0001a1b2c3" # optional
//! user_id = "5e9f8a7b6c5d4e3f2a1b0c9d"    # optional, a 24-hex user id
//! # base_url = "https://app.360learning.com"   # overrides region
//! ```
//!
//! [authmux]: https://github.com/authmux/authmux

pub use authmux_core::EndpointBuilder;
use authmux_core::wire::{
    ClientAuth, HeaderMap, HeaderName, HeaderValue, RequestSource, TokenRequest, require,
};
use authmux_core::{
    BuildContext, ClientCredentials, ClientSecret, Endpoint, Error, Provider, SharedTokenSource,
};
use serde::Deserialize;

/// The provider's name in configs, errors and logs.
pub const NAME: &str = "360learning";

/// The token endpoint's path below the base URL.
pub const TOKEN_PATH: &str = "/api/v2/oauth2/token";

/// The header every API v2 call needs, and its value.
pub const API_VERSION_HEADER: (&str, &str) = ("360-api-version", "v2.0");

/// Which 360Learning production region the account lives in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Region {
    /// Production EU: `https://app.360learning.com`.
    Eu,
    /// Production US: `https://app.us.360learning.com`.
    Us,
}

impl Region {
    /// The region's base URL.
    pub fn base_url(self) -> &'static str {
        match self {
            Self::Eu => "https://app.360learning.com",
            Self::Us => "https://app.us.360learning.com",
        }
    }
}

/// The configuration of a 360Learning client. `Debug` leaves out the
/// secret ([`ClientSecret`] redacts itself).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThreeSixtyLearningConfig {
    /// The API client id.
    pub client_id: String,
    /// The API client secret.
    pub client_secret: ClientSecret,
    /// `eu` or `us`; required unless `base_url` is set.
    #[serde(default)]
    pub region: Option<Region>,
    /// A base URL that overrides `region`.
    #[serde(default)]
    pub base_url: Option<String>,
    /// The company, for service-authorized endpoints.
    #[serde(default)]
    pub company_id: Option<String>,
    /// The user (a 24-hex id), for user-authorized endpoints.
    #[serde(default)]
    pub user_id: Option<String>,
    /// Allows plain `http` to a non-loopback host.
    #[serde(default)]
    pub allow_insecure_http: bool,
}

impl ThreeSixtyLearningConfig {
    /// A builder holding this configuration.
    pub fn builder(&self) -> ThreeSixtyLearningBuilder {
        ThreeSixtyLearningBuilder {
            endpoint: Endpoint::new(self.base_url.clone(), self.allow_insecure_http),
            config: self.clone(),
        }
    }
}

/// Builds a 360Learning token source; see
/// [`ThreeSixtyLearningProvider::builder`]. The endpoint setters
/// (`base_url`, `http_client`, …) come from [`EndpointBuilder`].
#[derive(Debug)]
pub struct ThreeSixtyLearningBuilder {
    config: ThreeSixtyLearningConfig,
    endpoint: Endpoint,
}

impl EndpointBuilder for ThreeSixtyLearningBuilder {
    fn endpoint(&mut self) -> &mut Endpoint {
        &mut self.endpoint
    }
}

impl ThreeSixtyLearningBuilder {
    /// The region whose host to use.
    pub fn region(mut self, region: Region) -> Self {
        self.config.region = Some(region);
        self
    }

    /// The company, for service-authorized endpoints.
    pub fn company_id(mut self, company_id: impl Into<String>) -> Self {
        self.config.company_id = Some(company_id.into());
        self
    }

    /// The user, for user-authorized endpoints: a 24-character hex id.
    pub fn user_id(mut self, user_id: impl Into<String>) -> Self {
        self.config.user_id = Some(user_id.into());
        self
    }

    /// Validates the settings, reads the secret and builds the source.
    pub fn build(self) -> Result<RequestSource, Error> {
        let config = self.config;
        require("client_id", &config.client_id)?;
        if let Some(company_id) = &config.company_id {
            require("company_id", company_id)?;
        }
        if let Some(user_id) = &config.user_id
            && (user_id.len() != 24 || !user_id.bytes().all(|byte| byte.is_ascii_hexdigit()))
        {
            return Err(Error::config(
                "user_id: must be a 24-character hexadecimal user id",
            ));
        }
        let region = config.region.map(|region| ("region", region.base_url()));
        let (url, field) = self.endpoint.token_url(
            region,
            TOKEN_PATH,
            "region: required unless base_url is set (\"eu\" or \"us\")",
        )?;
        let credentials =
            ClientCredentials::new(config.client_id, config.client_secret, ClientAuth::Body);
        let request = credentials
            .apply(
                TokenRequest::builder(url)
                    .json()
                    .param("grant_type", "client_credentials"),
            )?
            .param_opt("company_id", config.company_id)
            .param_opt("user_id", config.user_id);
        let (name, value) = API_VERSION_HEADER;
        let mut api_headers = HeaderMap::new();
        api_headers.insert(
            HeaderName::from_static(name),
            HeaderValue::from_static(value),
        );
        Ok(self
            .endpoint
            .source(NAME, field, request)?
            .with_api_headers(api_headers))
    }
}

/// The 360Learning API v2 provider: [`ThreeSixtyLearningProvider::builder`]
/// in code, or `provider = "360learning"` in the facade's config. Both
/// build a [`RequestSource`] whose [`api_headers`](authmux_core::TokenSource::api_headers)
/// carry `360-api-version`; wrap it in a
/// [`ManagedToken`](authmux_core::ManagedToken) to cache its tokens.
#[derive(Clone, Copy, Debug)]
pub struct ThreeSixtyLearningProvider;

impl ThreeSixtyLearningProvider {
    /// Starts building a source for one API client.
    pub fn builder(
        client_id: impl Into<String>,
        client_secret: impl Into<ClientSecret>,
    ) -> ThreeSixtyLearningBuilder {
        ThreeSixtyLearningConfig {
            client_id: client_id.into(),
            client_secret: client_secret.into(),
            region: None,
            base_url: None,
            company_id: None,
            user_id: None,
            allow_insecure_http: false,
        }
        .builder()
    }
}

impl Provider for ThreeSixtyLearningProvider {
    const NAME: &'static str = NAME;
    type Config = ThreeSixtyLearningConfig;

    fn build(
        config: ThreeSixtyLearningConfig,
        context: &BuildContext,
    ) -> Result<SharedTokenSource, Error> {
        Ok(config.builder().context(context).build()?.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use authmux_core::TokenSource as _;
    use serde_json::json;

    fn builder() -> ThreeSixtyLearningBuilder {
        ThreeSixtyLearningProvider::builder("id", ClientSecret::inline("s3cr3t-value"))
    }

    #[test]
    fn regions_map_to_the_documented_hosts() {
        let url = |region| {
            builder()
                .region(region)
                .build()
                .expect("valid")
                .token_url()
                .to_owned()
        };
        assert_eq!(
            url(Region::Eu),
            "https://app.360learning.com/api/v2/oauth2/token"
        );
        assert_eq!(
            url(Region::Us),
            "https://app.us.360learning.com/api/v2/oauth2/token"
        );
        let custom = builder()
            .region(Region::Us)
            .base_url("https://learn.example.com/")
            .build();
        assert_eq!(
            custom.expect("valid").token_url(),
            "https://learn.example.com/api/v2/oauth2/token"
        );
    }

    #[test]
    fn builder_errors_name_the_field() {
        let message =
            |builder: ThreeSixtyLearningBuilder| builder.build().expect_err("invalid").to_string();
        assert!(message(builder()).starts_with("region: required unless base_url"));
        assert_eq!(
            message(builder().region(Region::Eu).user_id("not-hex")),
            "user_id: must be a 24-character hexadecimal user id"
        );
        assert_eq!(
            message(builder().region(Region::Eu).company_id(" ")),
            "company_id: must not be empty"
        );
        assert!(message(builder().base_url("http://learn.example.com")).starts_with("base_url: "));
    }

    #[test]
    fn api_headers_carry_the_version() {
        let provider = builder().region(Region::Eu).build().expect("valid");
        assert_eq!(provider.api_headers()["360-api-version"], "v2.0");
    }

    #[test]
    fn identity_covers_company_and_user() {
        let plain = builder()
            .region(Region::Eu)
            .build()
            .expect("valid")
            .identity();
        let company = builder()
            .region(Region::Eu)
            .company_id("c1")
            .build()
            .expect("valid")
            .identity();
        let user = builder()
            .region(Region::Eu)
            .company_id("c1")
            .user_id("5e9f8a7b6c5d4e3f2a1b0c9d")
            .build()
            .expect("valid")
            .identity();
        assert_ne!(plain, company);
        assert_ne!(company, user);
        assert_eq!(user.get("user_id"), Some("5e9f8a7b6c5d4e3f2a1b0c9d"));
        assert!(!user.to_string().contains("s3cr3t-value"));
    }

    #[test]
    fn config_parses_and_debug_leaves_out_the_secret() {
        let config: ThreeSixtyLearningConfig = serde_json::from_value(json!({
            "client_id": "id", "client_secret": "s3cr3t-value", "region": "us", "company_id": "c1"
        }))
        .expect("valid config");
        assert_eq!(config.region, Some(Region::Us));
        assert!(!format!("{config:?}").contains("s3cr3t-value"));
        let provider = config.builder().build().expect("valid");
        assert!(!format!("{provider:?}").contains("s3cr3t-value"));
    }
}
