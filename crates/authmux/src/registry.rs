//! One managed, cached token per configured client.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use authmux_core::wire::{HeaderMap, HttpClient, HttpConfig};
use authmux_core::{Error, ManagedToken, SharedTokenSource, TokenGuard};

use crate::config::{ClientConfig, Config, ConfigError, Settings};

/// A configured client: its name, provider, token endpoint and cache.
/// Cloning is cheap and shares the cache.
#[derive(Clone)]
pub struct Client {
    name: Arc<str>,
    provider: &'static str,
    token_url: Arc<str>,
    cache: ManagedToken,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("name", &self.name)
            .field("provider", &self.provider)
            .field("token_url", &self.token_url)
            .finish()
    }
}

impl Client {
    /// The client's configured name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The provider's name, such as `auth0`.
    pub fn provider(&self) -> &'static str {
        self.provider
    }

    /// The token endpoint URL.
    pub fn token_url(&self) -> &str {
        &self.token_url
    }

    /// The client's token cache.
    pub fn cache(&self) -> &ManagedToken {
        &self.cache
    }

    /// A usable token: cached, or fetched once for every caller.
    pub async fn token(&self) -> Result<TokenGuard, Error> {
        self.cache.get().await
    }

    /// Headers every API call with this client's tokens needs besides
    /// `Authorization`.
    pub fn api_headers(&self) -> HeaderMap {
        self.cache.source().api_headers()
    }
}

/// Every configured client, each with its own cached token, sharing HTTP
/// connection pools. Building it does no network I/O: secrets are read from
/// their variables and files, URLs are checked, and nothing is fetched until
/// a token is asked for.
///
/// Cloning is cheap.
#[derive(Clone, Default)]
pub struct Registry {
    clients: Arc<BTreeMap<String, Client>>,
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.clients.iter()).finish()
    }
}

impl Registry {
    /// Builds every client of `config`, reporting every problem at once.
    pub fn new(config: &Config) -> Result<Self, ConfigError> {
        Self::build(config.clients.iter())
    }

    /// Builds only the client called `name`, so that another client's
    /// problem (say, a secret variable this process does not have) does not
    /// stop it. An unknown name is a problem that lists the configured ones.
    pub fn with_client(config: &Config, name: &str) -> Result<Self, ConfigError> {
        match config.clients.get_key_value(name) {
            Some(client) => Self::build(std::iter::once(client)),
            None => {
                let names: Vec<&str> = config.clients.keys().map(String::as_str).collect();
                Err(ConfigError::new(vec![unknown_client(name, &names)]))
            }
        }
    }

    fn build<'a>(
        clients: impl Iterator<Item = (&'a String, &'a ClientConfig)>,
    ) -> Result<Self, ConfigError> {
        let mut problems = Vec::new();
        let mut http_clients: HashMap<(Duration, Duration, Duration), HttpClient> = HashMap::new();
        let mut built = BTreeMap::new();
        for (name, client) in clients {
            let at = format!("clients.{name}");
            let http = match shared_http(&mut http_clients, &client.settings) {
                Ok(http) => http,
                Err(error) => {
                    problems.push(format!("{at}: {}", error.message()));
                    continue;
                }
            };
            match build_source(client, http) {
                Ok((provider, token_url, source)) => {
                    let cache = ManagedToken::builder(source)
                        .name(name.as_str())
                        .policy(client.settings.cache_policy())
                        .build();
                    built.insert(
                        name.clone(),
                        Client {
                            name: Arc::from(name.as_str()),
                            provider,
                            token_url: Arc::from(token_url),
                            cache,
                        },
                    );
                }
                Err(problem) => problems.push(format!("{at}{problem}")),
            }
        }
        if problems.is_empty() {
            Ok(Self {
                clients: Arc::new(built),
            })
        } else {
            Err(ConfigError::new(problems))
        }
    }

    /// Loads the configuration from its default sources and builds it;
    /// see [`Config::load`].
    pub fn load(path: Option<&std::path::Path>) -> Result<Self, ConfigError> {
        Self::new(&Config::load(path)?)
    }

    /// The client called `name`.
    pub fn client(&self, name: &str) -> Result<&Client, Error> {
        self.clients.get(name).ok_or_else(|| {
            let names: Vec<&str> = self.names().collect();
            Error::config(unknown_client(name, &names))
        })
    }

    /// A usable token for the client called `name`.
    pub async fn token(&self, name: &str) -> Result<TokenGuard, Error> {
        self.client(name)?.token().await
    }

    /// The configured client names, in order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.clients.keys().map(String::as_str)
    }

    /// The clients, in name order.
    pub fn clients(&self) -> impl Iterator<Item = &Client> {
        self.clients.values()
    }

    /// How many clients there are.
    pub fn len(&self) -> usize {
        self.clients.len()
    }

    /// Whether there are no clients.
    pub fn is_empty(&self) -> bool {
        self.clients.is_empty()
    }
}

fn unknown_client(name: &str, configured: &[&str]) -> String {
    let configured = if configured.is_empty() {
        "none".to_owned()
    } else {
        configured.join(", ")
    };
    format!("unknown client {name:?} (configured: {configured})")
}

/// One HTTP client per distinct set of HTTP settings, shared by every
/// client that uses them.
fn shared_http(
    pool: &mut HashMap<(Duration, Duration, Duration), HttpClient>,
    settings: &Settings,
) -> Result<HttpClient, Error> {
    let key = (
        settings.timeout,
        settings.connect_timeout,
        settings.default_lifetime,
    );
    if let Some(http) = pool.get(&key) {
        return Ok(http.clone());
    }
    let http = HttpClient::with_config(
        HttpConfig::default()
            .timeout(settings.timeout)
            .connect_timeout(settings.connect_timeout)
            .default_lifetime(settings.default_lifetime),
    )?;
    pool.insert(key, http.clone());
    Ok(http)
}

type Built = (&'static str, String, SharedTokenSource);

/// Builds the provider a client names. On failure, returns the rest of the
/// problem's key path and its text: `.audience: required unless …`.
fn build_source(client: &ClientConfig, http: HttpClient) -> Result<Built, String> {
    // A builder error starts with the field it is about (`audience: …`);
    // a deserialization error names no field.
    fn builder_problem(error: Error) -> String {
        format!(".{}", error.message())
    }
    fn parse_problem(error: serde_json::Error) -> String {
        format!(": {error}")
    }
    match client.provider.as_str() {
        #[cfg(feature = "mention-me")]
        "mention-me" => {
            use authmux_mention_me::{MentionMeConfig, MentionMeProvider, NAME};
            let config: MentionMeConfig = client.provider_config().map_err(parse_problem)?;
            let provider: MentionMeProvider = config
                .builder()
                .http_client(http)
                .build()
                .map_err(builder_problem)?;
            Ok((NAME, provider.token_url().to_owned(), provider.into()))
        }
        #[cfg(feature = "360learning")]
        "360learning" => {
            use authmux_360learning::{NAME, ThreeSixtyLearningConfig};
            let config: ThreeSixtyLearningConfig =
                client.provider_config().map_err(parse_problem)?;
            let provider = config
                .builder()
                .http_client(http)
                .build()
                .map_err(builder_problem)?;
            Ok((NAME, provider.token_url().to_owned(), provider.into()))
        }
        #[cfg(feature = "auth0")]
        "auth0" => {
            use authmux_auth0::{Auth0Config, NAME};
            let config: Auth0Config = client.provider_config().map_err(parse_problem)?;
            let provider = config
                .builder()
                .http_client(http)
                .build()
                .map_err(builder_problem)?;
            Ok((NAME, provider.token_url().to_owned(), provider.into()))
        }
        #[cfg(feature = "oauth2")]
        "oauth2" => {
            use authmux_oauth2::{NAME, OAuth2Config};
            let config: OAuth2Config = client.provider_config().map_err(parse_problem)?;
            let provider = config
                .builder()
                .http_client(http)
                .build()
                .map_err(builder_problem)?;
            Ok((NAME, provider.token_url().to_owned(), provider.into()))
        }
        other => {
            // Config::from only lets compiled-in providers through.
            let _ = http;
            Err(format!(".provider: {other:?} is not compiled in"))
        }
    }
}
