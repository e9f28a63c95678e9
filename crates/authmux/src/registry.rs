//! One managed, cached token per configured client.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use authmux_core::wire::{HeaderMap, HttpClient, HttpConfig};
use authmux_core::{Error, ManagedToken, SharedTokenSource, SharedTokenStore, TokenGuard};

use crate::config::{ClientConfig, Config, ConfigError, Settings, not_compiled_in};

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
/// A config may be shared by programs built with different provider
/// features: a client whose provider is not compiled in does not stop the
/// others. It is listed by [`Registry::unavailable`], and asking for it
/// returns the error that says which feature to enable.
///
/// Cloning is cheap.
#[derive(Clone, Default)]
pub struct Registry {
    clients: Arc<BTreeMap<String, Client>>,
    unavailable: Arc<BTreeMap<String, Error>>,
    store: Option<SharedTokenStore>,
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.clients.iter()).finish()
    }
}

impl Registry {
    /// Builds every client of `config`, reporting every problem at once.
    pub fn new(config: &Config) -> Result<Self, ConfigError> {
        Self::build(config.clients.iter(), store(config)?)
    }

    /// Builds only the client called `name`, so that another client's
    /// problem (say, a secret variable this process does not have) does not
    /// stop it. An unknown name is a problem that lists the configured ones,
    /// and so is a client whose provider is not compiled in.
    pub fn with_client(config: &Config, name: &str) -> Result<Self, ConfigError> {
        match config.clients.get_key_value(name) {
            Some((name, client)) => {
                if let Some(why) = not_compiled_in(&client.provider) {
                    return Err(ConfigError::new(vec![format!(
                        "clients.{name}.provider: {why}"
                    )]));
                }
                Self::build(std::iter::once((name, client)), store(config)?)
            }
            None => {
                let names: Vec<&str> = config.clients.keys().map(String::as_str).collect();
                Err(ConfigError::new(vec![unknown_client(name, &names)]))
            }
        }
    }

    fn build<'a>(
        clients: impl Iterator<Item = (&'a String, &'a ClientConfig)>,
        store: Option<SharedTokenStore>,
    ) -> Result<Self, ConfigError> {
        let mut problems = Vec::new();
        let mut http_clients: HashMap<(Duration, Duration, Duration), HttpClient> = HashMap::new();
        let mut built = BTreeMap::new();
        let mut unavailable = BTreeMap::new();
        for (name, client) in clients {
            let at = format!("clients.{name}");
            if let Some(why) = not_compiled_in(&client.provider) {
                let error = Error::config(why)
                    .with_client(&Arc::from(name.as_str()))
                    .with_provider(&client.provider);
                unavailable.insert(name.clone(), error);
                continue;
            }
            let http = match shared_http(&mut http_clients, &client.settings) {
                Ok(http) => http,
                Err(error) => {
                    problems.push(format!("{at}: {}", error.message()));
                    continue;
                }
            };
            match build_source(client, http) {
                Ok((provider, token_url, source)) => {
                    let mut cache = ManagedToken::builder(source)
                        .name(name.as_str())
                        .policy(client.settings.cache_policy());
                    if let Some(store) = store.as_ref().filter(|_| client.store) {
                        cache = cache.store(store.clone());
                    }
                    let cache = cache.build();
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
                Err(mut found) => problems.append(&mut found),
            }
        }
        if problems.is_empty() {
            Ok(Self {
                clients: Arc::new(built),
                unavailable: Arc::new(unavailable),
                store,
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

    /// The client called `name`. A client whose provider is not compiled
    /// in is an error that names the feature to enable.
    pub fn client(&self, name: &str) -> Result<&Client, Error> {
        if let Some(client) = self.clients.get(name) {
            return Ok(client);
        }
        if let Some(error) = self.unavailable.get(name) {
            return Err(error.clone());
        }
        let names: Vec<&str> = self.names().collect();
        Err(Error::config(unknown_client(name, &names)))
    }

    /// The configured clients this build cannot serve, because their
    /// provider is not compiled in, each with the error that says so.
    pub fn unavailable(&self) -> impl Iterator<Item = (&str, &Error)> {
        self.unavailable
            .iter()
            .map(|(name, error)| (name.as_str(), error))
    }

    /// A usable token for the client called `name`.
    pub async fn token(&self, name: &str) -> Result<TokenGuard, Error> {
        self.client(name)?.token().await
    }

    /// The token store the clients share tokens through, if the config
    /// has one (`[store]`).
    pub fn store(&self) -> Option<&SharedTokenStore> {
        self.store.as_ref()
    }

    /// The names of the clients this build serves, in order.
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

/// The `[store]` of `config`; nothing is connected yet.
fn store(config: &Config) -> Result<Option<SharedTokenStore>, ConfigError> {
    config.store.build().map_err(ConfigError::new)
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

/// Builds the provider a client names. On failure, returns every problem,
/// each with its full key path: `clients.api.audience: required unless …`.
fn build_source(client: &ClientConfig, http: HttpClient) -> Result<Built, Vec<String>> {
    // A builder error starts with the field it is about (`audience: …`).
    let builder_problem =
        |error: Error| vec![format!("clients.{}.{}", client.name(), error.message())];
    let parse_problem = |error: ConfigError| error.problems().to_vec();
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
            // Registry::build sets clients of other providers aside.
            let _ = (http, parse_problem, builder_problem);
            Err(vec![format!(
                "clients.{}.provider: {}",
                client.name(),
                not_compiled_in(other).unwrap_or_default()
            )])
        }
    }
}
