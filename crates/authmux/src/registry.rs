//! One managed, cached token per named client: from a config, or built by
//! the user.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::Arc;

use authmux_core::wire::{HeaderMap, HttpClient, HttpConfig};
use authmux_core::{
    BuildContext, CachePolicy, Error, ManagedToken, SharedTokenSource, SharedTokenStore, TokenGuard,
};

use crate::config::{ClientConfig, Config, ConfigError, Settings, not_compiled_in};

/// A named client: its token cache, and what it says about itself.
/// Cloning is cheap and shares the cache.
///
/// A `Client` is a named [`ManagedToken`] and converts into one, so that
/// anything taking a `ManagedToken` (the middleware, say) takes a client.
#[derive(Clone)]
pub struct Client {
    /// The name, unless it is the cache's own (as for every configured
    /// client): one copy of it per client is enough.
    name: Option<Arc<str>>,
    token_url: Arc<str>,
    issuer: Option<Arc<str>>,
    cache: ManagedToken,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("name", &self.name())
            .field("provider", &self.provider())
            .field("token_url", &self.token_url)
            .field("issuer", &self.issuer)
            .finish()
    }
}

impl Client {
    /// A client called `name` around a cache built elsewhere.
    pub fn new(name: &str, cache: ManagedToken) -> Self {
        let identity = cache.source().identity();
        let issuer: Option<Arc<str>> = identity.get("issuer").map(Arc::from);
        let token_url = issuer
            .clone()
            .unwrap_or_else(|| Arc::from(identity.endpoint()));
        Self {
            name: (name != cache.name()).then(|| Arc::from(name)),
            token_url,
            issuer,
            cache,
        }
    }

    /// The client's name.
    pub fn name(&self) -> &str {
        self.name.as_deref().unwrap_or_else(|| self.cache.name())
    }

    /// The provider's name, such as `auth0`.
    pub fn provider(&self) -> &str {
        self.cache.source().provider()
    }

    /// The token endpoint URL, as configured. For a client configured
    /// with an `issuer`, the issuer: its endpoint is known only once
    /// discovered, see [`token_endpoint`](Self::token_endpoint).
    pub fn token_url(&self) -> &str {
        &self.token_url
    }

    /// The issuer the token endpoint is discovered from, if the client is
    /// configured with one.
    pub fn issuer(&self) -> Option<&str> {
        self.issuer.as_deref()
    }

    /// The token endpoint: [`token_url`](Self::token_url), or for a client
    /// configured with an issuer, the endpoint its metadata names, read now
    /// if no fetch has read it yet. An error names the client and the
    /// issuer.
    pub async fn token_endpoint(&self) -> Result<String, Error> {
        match self.cache.source().discover().await {
            Ok(Some(found)) => Ok(found),
            Ok(None) => Ok(self.token_url.to_string()),
            Err(error) => Err(error
                .with_client(&Arc::from(self.name()))
                .with_provider(self.provider())),
        }
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

impl From<Client> for ManagedToken {
    fn from(client: Client) -> Self {
        client.cache
    }
}

impl From<&Client> for ManagedToken {
    fn from(client: &Client) -> Self {
        client.cache.clone()
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
    /// Sorted by name, each name once: a map's nodes and keys would cost
    /// more than the clients themselves.
    clients: Arc<[Client]>,
    unavailable: Arc<BTreeMap<String, Error>>,
    store: Option<SharedTokenStore>,
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.clients.iter().map(|client| (client.name(), client)))
            .finish()
    }
}

impl Registry {
    /// Builds every client of `config`, reporting every problem at once.
    pub fn from_config(config: &Config) -> Result<Self, ConfigError> {
        let ordered = in_build_order(config, config.clients.keys())?;
        Self::build(ordered.into_iter(), store(config)?)
    }

    /// Starts a registry that mixes clients from a config with sources and
    /// caches built in code.
    ///
    /// ```no_run
    /// # fn run(config: &authmux::Config, mine: authmux::SharedTokenSource) -> Result<(), authmux::Error> {
    /// let registry = authmux::Registry::builder()
    ///     .config(config)
    ///     .source("internal", mine) // cached with the default policy
    ///     .build()?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn builder() -> RegistryBuilder {
        RegistryBuilder::default()
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
                let ordered = in_build_order(config, std::iter::once(name))?;
                Self::build(ordered.into_iter(), store(config)?)
            }
            None => {
                let names: Vec<&str> = config.clients.keys().map(String::as_str).collect();
                Err(ConfigError::new(vec![unknown_client(name, &names)]))
            }
        }
    }

    /// Builds each client of `config` on its own and without the store:
    /// each client's name with the client, or with every problem that
    /// stops it (a provider that is not compiled in included). For
    /// validators such as `authmux check`, which report on every client;
    /// [`Registry::from_config`] builds all of them or none.
    pub fn each_client(
        config: &Config,
    ) -> impl Iterator<Item = (&str, Result<Client, ConfigError>)> + '_ {
        config.clients.keys().map(|name| {
            let built = in_build_order(config, std::iter::once(name))
                .and_then(|ordered| Self::build(ordered.into_iter(), None))
                .and_then(|registry| {
                    registry.client(name).cloned().map_err(|error| {
                        ConfigError::new(vec![format!(
                            "clients.{name}.provider: {}",
                            error.message()
                        )])
                    })
                });
            (name.as_str(), built)
        })
    }

    fn build<'a>(
        clients: impl Iterator<Item = (&'a String, &'a ClientConfig)>,
        store: Option<SharedTokenStore>,
    ) -> Result<Self, ConfigError> {
        let mut problems = Vec::new();
        let mut http_clients: HashMap<HttpConfig, HttpClient> = HashMap::new();
        let mut policies: HashMap<String, Arc<CachePolicy>> = HashMap::new();
        let mut built = Vec::new();
        let mut unavailable = BTreeMap::new();
        // Each client built so far, for the clients after it whose token
        // exchange carries its tokens.
        let mut offered: HashMap<String, ManagedToken> = HashMap::new();
        for (name, client) in clients {
            let at = format!("clients.{name}");
            if let Some(why) = not_compiled_in(&client.provider) {
                let error = Error::config(why)
                    .with_client(&Arc::from(name.as_str()))
                    .with_provider(&client.provider);
                unavailable.insert(name.clone(), error);
                continue;
            }
            let mut context = match shared_http(&mut http_clients, &client.settings) {
                Ok(http) => BuildContext::new().with_http_client(http),
                Err(error) => {
                    // `tls_ca: /etc/ca.pem: no certificate in it` names its key.
                    let message = error.message();
                    let keyed = crate::config::SETTING_KEYS
                        .iter()
                        .any(|key| message.starts_with(&format!("{key}:")));
                    problems.push(if keyed {
                        format!("{at}.{message}")
                    } else {
                        format!("{at}: {message}")
                    });
                    continue;
                }
            };
            let mut inputs_ready = true;
            for (field, input) in client.client_inputs() {
                match offered.get(&input) {
                    Some(cache) => {
                        context = context.with_client_token(input, Arc::new(cache.clone()));
                    }
                    None => {
                        inputs_ready = false;
                        problems.push(format!(
                            "{at}.{field}: client {input:?} is not available (see its own problems)"
                        ));
                    }
                }
            }
            if !inputs_ready {
                continue;
            }
            match build_source(client, &context) {
                Ok(source) => {
                    let mut cache = ManagedToken::builder(source)
                        .name(name.as_str())
                        .policy(shared_policy(&mut policies, &client.settings));
                    if let Some(store) = store.as_ref().filter(|_| client.store) {
                        cache = cache.store(store.clone());
                    }
                    let cache = cache.build();
                    offered.insert(name.clone(), cache.clone());
                    built.push(Client::new(name, cache));
                }
                Err(mut found) => problems.append(&mut found),
            }
        }
        if problems.is_empty() {
            built.sort_by(|a, b| a.name().cmp(b.name()));
            Ok(Self {
                clients: Arc::from(built),
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
        Self::from_config(&Config::load(path)?)
    }

    /// The client called `name`. A client whose provider is not compiled
    /// in is an error that names the feature to enable.
    pub fn client(&self, name: &str) -> Result<&Client, Error> {
        if let Some(client) = self.find(name) {
            return Ok(client);
        }
        if let Some(error) = self.unavailable.get(name) {
            return Err(error.clone());
        }
        let names: Vec<&str> = self.names().collect();
        Err(Error::config(unknown_client(name, &names)))
    }

    fn find(&self, name: &str) -> Option<&Client> {
        let at = self
            .clients
            .binary_search_by(|client| client.name().cmp(name))
            .ok()?;
        self.clients.get(at)
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

    /// The token store the configured clients share tokens through, if
    /// the config has one (`[store]`).
    pub fn store(&self) -> Option<&SharedTokenStore> {
        self.store.as_ref()
    }

    /// The names of the clients this build serves, in order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.clients.iter().map(Client::name)
    }

    /// The clients, in name order.
    pub fn clients(&self) -> impl Iterator<Item = &Client> {
        self.clients.iter()
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

/// Builds a [`Registry`] from a config and from sources built in code;
/// see [`Registry::builder`].
#[derive(Default)]
pub struct RegistryBuilder {
    config: Option<Config>,
    custom: Vec<Client>,
}

impl fmt::Debug for RegistryBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegistryBuilder")
            .field("config", &self.config)
            .field("custom", &self.custom)
            .finish()
    }
}

impl RegistryBuilder {
    /// Every client of `config`.
    pub fn config(mut self, config: &Config) -> Self {
        self.config = Some(config.clone());
        self
    }

    /// A client called `name` for any token source (a provider built in
    /// code, or your own [`TokenSource`](crate::TokenSource)), cached with
    /// the default [`CachePolicy`](crate::CachePolicy).
    pub fn source(self, name: &str, source: impl Into<SharedTokenSource>) -> Self {
        let cache = ManagedToken::builder(source).name(name).build();
        self.managed(name, cache)
    }

    /// A client called `name` around a cache you built, with your policy.
    pub fn managed(mut self, name: &str, cache: ManagedToken) -> Self {
        self.custom.push(Client::new(name, cache));
        self
    }

    /// Builds the config's clients and adds the others. A name given twice
    /// is a problem, like any in the config.
    pub fn build(self) -> Result<Registry, ConfigError> {
        let built = match &self.config {
            Some(config) => Registry::from_config(config),
            None => Ok(Registry::default()),
        };
        let mut problems = match &built {
            Ok(_) => Vec::new(),
            Err(error) => error.problems().to_vec(),
        };
        let mut clients = built
            .as_ref()
            .map(|registry| registry.clients.to_vec())
            .unwrap_or_default();
        for client in self.custom {
            let at = clients.binary_search_by(|known| known.name().cmp(client.name()));
            let in_config = self
                .config
                .as_ref()
                .is_some_and(|config| config.clients.contains_key(client.name()));
            match at {
                Err(at) if !in_config => clients.insert(at, client),
                _ => problems.push(format!("clients.{}: given twice", client.name())),
            }
        }
        if !problems.is_empty() {
            return Err(ConfigError::new(problems));
        }
        let (unavailable, store) = built
            .map(|registry| (registry.unavailable, registry.store))
            .unwrap_or_default();
        Ok(Registry {
            clients: Arc::from(clients),
            unavailable,
            store,
        })
    }
}

/// The clients `names` and every client whose tokens their requests carry
/// (`subject_token = { client = "entra" }`), each after those it needs. A
/// client that names an unknown client, or a chain that comes back to
/// where it started, is a problem.
fn in_build_order<'a>(
    config: &'a Config,
    names: impl IntoIterator<Item = &'a String>,
) -> Result<Vec<(&'a String, &'a ClientConfig)>, ConfigError> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Visiting,
        Done,
    }
    fn visit<'a>(
        config: &'a Config,
        name: &'a String,
        marks: &mut HashMap<&'a str, Mark>,
        path: &mut Vec<&'a str>,
        ordered: &mut Vec<(&'a String, &'a ClientConfig)>,
        problems: &mut Vec<String>,
    ) {
        let Some((name, client)) = config.clients.get_key_value(name) else {
            return;
        };
        match marks.get(name.as_str()) {
            Some(Mark::Done) => return,
            Some(Mark::Visiting) => {
                let start = path.iter().position(|step| *step == name).unwrap_or(0);
                let mut cycle: Vec<&str> = path[start..].to_vec();
                cycle.push(name);
                let field = config.clients[path[path.len() - 1]]
                    .client_inputs()
                    .into_iter()
                    .find(|(_, input)| input == name)
                    .map_or("subject_token", |(field, _)| field);
                problems.push(format!(
                    "clients.{}.{field}: a cycle of token exchanges: {}",
                    path[path.len() - 1],
                    cycle.join(" -> ")
                ));
                return;
            }
            None => {}
        }
        marks.insert(name, Mark::Visiting);
        path.push(name);
        for (field, input) in client.client_inputs() {
            match config.clients.get_key_value(&input) {
                Some((input, _)) => visit(config, input, marks, path, ordered, problems),
                None => {
                    let names: Vec<&str> = config.clients.keys().map(String::as_str).collect();
                    problems.push(format!(
                        "clients.{name}.{field}: {}",
                        unknown_client(&input, &names)
                    ));
                }
            }
        }
        path.pop();
        marks.insert(name, Mark::Done);
        ordered.push((name, client));
    }
    let mut marks = HashMap::new();
    let mut ordered = Vec::new();
    let mut problems = Vec::new();
    for name in names {
        visit(
            config,
            name,
            &mut marks,
            &mut Vec::new(),
            &mut ordered,
            &mut problems,
        );
    }
    if problems.is_empty() {
        Ok(ordered)
    } else {
        problems.dedup();
        Err(ConfigError::new(problems))
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
/// client that uses them: clients with the same certificate, CA and proxy
/// share a connection pool, and others never do.
fn shared_http(
    pool: &mut HashMap<HttpConfig, HttpClient>,
    settings: &Settings,
) -> Result<HttpClient, Error> {
    let config = settings.http_config()?;
    if let Some(http) = pool.get(&config) {
        return Ok(http.clone());
    }
    let http = HttpClient::with_config(config.clone())?;
    pool.insert(config, http.clone());
    Ok(http)
}

/// One policy per distinct set of settings, shared by every client that
/// has it. Policies are told apart by their `Debug` text, which shows every
/// field.
fn shared_policy(
    pool: &mut HashMap<String, Arc<CachePolicy>>,
    settings: &Settings,
) -> Arc<CachePolicy> {
    let policy = settings.cache_policy();
    Arc::clone(
        pool.entry(format!("{policy:?}"))
            .or_insert_with(|| Arc::new(policy)),
    )
}

/// Builds the source a client's provider makes. On failure, returns every
/// problem, each with its full key path: `clients.api.audience: required
/// unless …`.
fn build_source(
    client: &ClientConfig,
    context: &BuildContext,
) -> Result<SharedTokenSource, Vec<String>> {
    let Some(build) = crate::providers::find(&client.provider).and_then(|entry| entry.build) else {
        // Registry::build sets clients of other providers aside.
        return Err(vec![format!(
            "clients.{}.provider: {}",
            client.name(),
            not_compiled_in(&client.provider).unwrap_or_default()
        )]);
    };
    build(client, context)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clients_share_an_http_client_only_with_the_same_tls_and_proxy() {
        let mut pool = HashMap::new();
        let plain = Settings::default();
        shared_http(&mut pool, &plain).expect("plain");
        shared_http(&mut pool, &plain.clone()).expect("the same");
        assert_eq!(pool.len(), 1);
        let mut proxied = plain.clone();
        proxied.proxy = Some("http://proxy.corp:3128".to_owned());
        shared_http(&mut pool, &proxied).expect("proxied");
        assert_eq!(pool.len(), 2);
        let mut other_proxy = proxied.clone();
        other_proxy.proxy = Some("http://proxy.corp:8080".to_owned());
        shared_http(&mut pool, &other_proxy).expect("another proxy");
        assert_eq!(pool.len(), 3);
    }
}
