//! The config file: `[defaults]` and one `[clients.<name>]` table per client.
//!
//! Every problem is reported at once, each as one line that starts with its
//! full key path and says what was expected and what was found:
//!
//! ```text
//! clients.gen.timeout: expected a duration such as "5s", found integer 5
//! clients.gen.client_secert: unknown key; did you mean client_secret?
//! authmux.toml: TOML syntax error at line 4, column 17: invalid basic string
//! ```
//!
//! A message never quotes the file's text or a secret's value: a syntax
//! error gives the line and column only, and a wrong value under a secret's
//! key is described by its type alone.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use authmux_core::grant::{GrantAssertion, TokenInput};
use authmux_core::wire::{HttpConfig, ProxyUrl, TlsConfig};
use authmux_core::{CachePolicy, ClientSecret, Error};

use crate::secret_keys;
use crate::store::StoreConfig;
use figment::error::{Actual, Kind};
use figment::providers::{Format, Serialized, Toml};
use figment::value::{Dict, Map, Value};
use figment::{Figment, Metadata, Profile, Provider, Source};
use serde::Deserialize;
use serde::de::{self, DeserializeOwned, Unexpected, Visitor};

/// The environment variable naming the config file.
pub const CONFIG_ENV: &str = "AUTHMUX_CONFIG";

/// The config file used when neither a path nor [`CONFIG_ENV`] is given.
pub const DEFAULT_CONFIG_FILE: &str = "authmux.toml";

/// The prefix of environment variables that override the file.
pub const ENV_PREFIX: &str = "AUTHMUX_";

/// The top-level tables of a config. Only environment variables that start
/// with [`ENV_PREFIX`], one of these in capitals and `__` are config:
/// `AUTHMUX_CLIENTS__API__TIMEOUT`, `AUTHMUX_DEFAULTS__MAX_ATTEMPTS`,
/// `AUTHMUX_STORE__KIND`.
pub const SECTIONS: [&str; 3] = ["clients", "defaults", "store"];

/// Every provider authmux knows, compiled in or not.
pub fn known_providers() -> Vec<&'static str> {
    crate::providers::TABLE
        .iter()
        .map(|entry| entry.name)
        .collect()
}

/// The providers compiled into this build, by feature.
pub fn compiled_providers() -> Vec<&'static str> {
    crate::providers::TABLE
        .iter()
        .filter(|entry| entry.build.is_some())
        .map(|entry| entry.name)
        .collect()
}

/// Why a client's provider cannot be used by this build, if it cannot:
/// `provider "auth0" is not compiled in: enable feature "auth0" (compiled
/// in: mention-me, oauth2)`.
pub fn not_compiled_in(provider: &str) -> Option<String> {
    let compiled = compiled_providers();
    if compiled.contains(&provider) {
        return None;
    }
    let compiled = if compiled.is_empty() {
        "none".to_owned()
    } else {
        compiled.join(", ")
    };
    Some(format!(
        "provider {provider:?} is not compiled in: enable feature {provider:?} (compiled in: {compiled})"
    ))
}

/// Timing, TLS and proxy settings: the `[defaults]` table, each
/// overridable per client.
///
/// Durations are humantime strings: `"30s"`, `"5m"`, `"1h 30m"`. PEM
/// sources are inline, `{ env = "…" }` or `{ file = "…" }`, as a
/// [`ClientSecret`] is; `Debug` never shows an inline one, nor the
/// proxy's password.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct Settings {
    /// How long one token request may take (default 30 s).
    #[serde(deserialize_with = "duration")]
    pub timeout: Duration,
    /// How long to wait for a connection (default 10 s).
    #[serde(deserialize_with = "duration")]
    pub connect_timeout: Duration,
    /// The smallest refresh window (default 60 s); see [`CachePolicy`].
    #[serde(deserialize_with = "duration")]
    pub refresh_window: Duration,
    /// A token is never served with less than this left (default 10 s).
    #[serde(deserialize_with = "duration")]
    pub expiry_margin: Duration,
    /// Attempts per fetch, the first included (default 3).
    #[serde(deserialize_with = "whole_number")]
    pub max_attempts: u32,
    /// How long one fetch, retries included, may take (default 30 s).
    #[serde(deserialize_with = "duration")]
    pub fetch_deadline: Duration,
    /// The lifetime assumed when a response gives none (default 5 m).
    #[serde(deserialize_with = "duration")]
    pub default_lifetime: Duration,
    /// The longest wait honoured from a server's `Retry-After` or rate-limit
    /// reset (default 30 s, the cool-down maximum).
    #[serde(deserialize_with = "duration")]
    pub max_retry_after: Duration,
    /// CA certificates (PEM) trusted for the token endpoint, as well as
    /// the system's roots unless `tls_ca_only` is set.
    pub tls_ca: Option<ClientSecret>,
    /// Whether `tls_ca` replaces the system's roots (default `false`:
    /// adding a private CA must not break the public endpoints).
    #[serde(deserialize_with = "boolean")]
    pub tls_ca_only: bool,
    /// The client certificate chain (PEM), leaf first, and its private
    /// key unless `tls_client_key` is set; presented on every request.
    pub tls_client_certificate: Option<ClientSecret>,
    /// The private key of `tls_client_certificate`, when apart from it.
    pub tls_client_key: Option<ClientSecret>,
    /// The proxy URL (`http://` or `https://`) for every request, or
    /// `"direct"` for none at all; unless set, `HTTPS_PROXY`, `HTTP_PROXY`
    /// and `NO_PROXY` are honoured.
    pub proxy: Option<String>,
}

impl fmt::Debug for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Settings")
            .field("timeout", &self.timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("refresh_window", &self.refresh_window)
            .field("expiry_margin", &self.expiry_margin)
            .field("max_attempts", &self.max_attempts)
            .field("fetch_deadline", &self.fetch_deadline)
            .field("default_lifetime", &self.default_lifetime)
            .field("max_retry_after", &self.max_retry_after)
            .field("tls_ca", &self.tls_ca)
            .field("tls_ca_only", &self.tls_ca_only)
            .field("tls_client_certificate", &self.tls_client_certificate)
            .field("tls_client_key", &self.tls_client_key)
            // A proxy URL may carry a password.
            .field(
                "proxy",
                &self.proxy.as_deref().map(|proxy| {
                    if proxy.trim() == authmux_core::wire::DIRECT {
                        proxy.to_owned()
                    } else {
                        authmux_core::store::redact_url(proxy)
                    }
                }),
            )
            .finish()
    }
}

impl Default for Settings {
    fn default() -> Self {
        let policy = CachePolicy::default();
        Self {
            timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            refresh_window: policy.refresh_window,
            expiry_margin: policy.expiry_margin,
            max_attempts: policy.retry.max_attempts,
            fetch_deadline: policy.retry.deadline,
            default_lifetime: authmux_core::wire::DEFAULT_LIFETIME,
            max_retry_after: policy.max_retry_after.unwrap_or(policy.cooldown_max),
            tls_ca: None,
            tls_ca_only: false,
            tls_client_certificate: None,
            tls_client_key: None,
            proxy: None,
        }
    }
}

/// The keys of [`Settings`], which a client table may also carry.
pub(crate) const SETTING_KEYS: [&str; 13] = [
    "timeout",
    "connect_timeout",
    "refresh_window",
    "expiry_margin",
    "max_attempts",
    "fetch_deadline",
    "default_lifetime",
    "max_retry_after",
    "tls_ca",
    "tls_ca_only",
    "tls_client_certificate",
    "tls_client_key",
    "proxy",
];

/// Provider keys that are booleans. Environment variables arrive as text,
/// so `"true"` and `"false"` are read as booleans for these keys only.
const BOOLEAN_KEYS: [&str; 3] = ["allow_insecure_http", "dpop", "accept_bearer_downgrade"];

/// `true` or `false`, written as a boolean or, from an environment
/// variable, as text.
fn boolean<'de, D: de::Deserializer<'de>>(deserializer: D) -> Result<bool, D::Error> {
    struct Boolean;
    impl Visitor<'_> for Boolean {
        type Value = bool;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("true or false")
        }
        fn visit_bool<E: de::Error>(self, value: bool) -> Result<bool, E> {
            Ok(value)
        }
        fn visit_str<E: de::Error>(self, text: &str) -> Result<bool, E> {
            match text.trim() {
                "true" => Ok(true),
                "false" => Ok(false),
                _ => Err(E::invalid_value(Unexpected::Str(text), &self)),
            }
        }
    }
    deserializer.deserialize_any(Boolean)
}

/// A humantime duration: `"30s"`, `"5m"`, `"1h 30m"`.
fn duration<'de, D: de::Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    struct DurationText;
    impl Visitor<'_> for DurationText {
        type Value = Duration;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a duration such as \"5s\"")
        }
        fn visit_str<E: de::Error>(self, text: &str) -> Result<Duration, E> {
            humantime::parse_duration(text.trim())
                .map_err(|_| E::invalid_value(Unexpected::Str(text), &self))
        }
    }
    deserializer.deserialize_any(DurationText)
}

/// A whole number, written as a number or, from an environment variable,
/// as text.
fn whole_number<'de, D: de::Deserializer<'de>>(deserializer: D) -> Result<u32, D::Error> {
    struct WholeNumber;
    impl Visitor<'_> for WholeNumber {
        type Value = u32;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a whole number such as 3")
        }
        fn visit_u64<E: de::Error>(self, number: u64) -> Result<u32, E> {
            u32::try_from(number).map_err(|_| E::invalid_value(Unexpected::Unsigned(number), &self))
        }
        fn visit_i64<E: de::Error>(self, number: i64) -> Result<u32, E> {
            u32::try_from(number).map_err(|_| E::invalid_value(Unexpected::Signed(number), &self))
        }
        fn visit_str<E: de::Error>(self, text: &str) -> Result<u32, E> {
            text.trim()
                .parse()
                .map_err(|_| E::invalid_value(Unexpected::Str(text), &self))
        }
    }
    deserializer.deserialize_any(WholeNumber)
}

impl Settings {
    /// The cache policy these settings give.
    pub fn cache_policy(&self) -> CachePolicy {
        let mut policy = CachePolicy::default();
        policy.refresh_window = self.refresh_window;
        policy.expiry_margin = self.expiry_margin;
        policy.retry.max_attempts = self.max_attempts;
        policy.retry.deadline = self.fetch_deadline;
        policy.max_retry_after = Some(self.max_retry_after);
        policy
    }

    /// The HTTP client settings these give: timeouts, the assumed
    /// lifetime, TLS and proxy. Errors name the key:
    /// `proxy: must be an http:// or https:// URL…`.
    pub fn http_config(&self) -> Result<HttpConfig, Error> {
        let mut tls = TlsConfig::default().ca_only(self.tls_ca_only);
        tls.ca = self.tls_ca.clone();
        tls.client_certificate = self.tls_client_certificate.clone();
        tls.client_key = self.tls_client_key.clone();
        let mut http = HttpConfig::default()
            .timeout(self.timeout)
            .connect_timeout(self.connect_timeout)
            .default_lifetime(self.default_lifetime)
            .tls(tls);
        if let Some(proxy) = &self.proxy {
            http = http.proxy(ProxyUrl::parse(proxy)?);
        }
        Ok(http)
    }

    fn validate(&self, at: &str, problems: &mut Vec<String>) {
        if let Some(proxy) = &self.proxy
            && let Err(error) = ProxyUrl::parse(proxy)
        {
            problems.push(format!("{at}.{}", error.message()));
        }
        let positive = [
            ("timeout", self.timeout),
            ("connect_timeout", self.connect_timeout),
            ("fetch_deadline", self.fetch_deadline),
            ("default_lifetime", self.default_lifetime),
        ];
        for (key, value) in positive {
            if value.is_zero() {
                problems.push(format!("{at}.{key}: must be longer than zero"));
            }
        }
        if self.max_attempts == 0 {
            problems.push(format!("{at}.max_attempts: must be at least 1"));
        }
    }
}

/// One configured client: its provider, its provider settings (not yet
/// checked by the provider), and its timing settings.
#[derive(Clone)]
pub struct ClientConfig {
    /// The provider's name, such as `auth0`. It may name a provider that is
    /// not compiled in; see [`not_compiled_in`].
    pub provider: String,
    /// The defaults with this client's overrides applied.
    pub settings: Settings,
    /// Whether the client shares tokens through the `[store]`; `store =
    /// false` opts it out.
    pub store: bool,
    /// The client's configured name.
    name: String,
    /// The provider's own keys, as written.
    fields: Dict,
}

impl fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientConfig")
            .field("provider", &self.provider)
            .field("settings", &self.settings)
            .field("store", &self.store)
            .field("keys", &self.fields.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl ClientConfig {
    /// The client's configured name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The clients whose access tokens this one's requests carry, with the
    /// key naming each: `("subject_token", "entra")` for `subject_token =
    /// { client = "entra" }`.
    pub fn client_inputs(&self) -> Vec<(&'static str, String)> {
        ["subject_token", "actor_token"]
            .into_iter()
            .filter_map(|key| {
                let Some(Value::Dict(_, table)) = self.fields.get(key) else {
                    return None;
                };
                match table.get("client") {
                    Some(Value::String(_, name)) => Some((key, name.clone())),
                    _ => None,
                }
            })
            .collect()
    }

    /// The grant the client uses, as configured (`client_credentials`
    /// unless set).
    pub fn grant_type(&self) -> String {
        match self.fields.get("grant_type") {
            Some(Value::String(_, grant)) => grant.clone(),
            _ => "client_credentials".to_owned(),
        }
    }

    /// What the client's requests carry from elsewhere, by key, described
    /// without any value: `("client_assertion", "file /var/run/token")`,
    /// `("subject_token", "client entra")`, `("assertion", "signed here")`.
    /// Keys whose value does not parse are left out (building the client
    /// reports them).
    pub fn token_inputs(&self) -> Vec<(&'static str, String)> {
        let mut inputs = Vec::new();
        for key in [
            "client_assertion",
            "assertion",
            "subject_token",
            "actor_token",
        ] {
            let Some(value) = self.fields.get(key) else {
                continue;
            };
            let described = if key == "assertion" {
                value
                    .deserialize::<GrantAssertion>()
                    .ok()
                    .map(|assertion| match assertion {
                        GrantAssertion::External(source) => source.describe(),
                        GrantAssertion::Signed(_) => "signed here with assertion.key".to_owned(),
                    })
            } else {
                value
                    .deserialize::<TokenInput>()
                    .ok()
                    .map(|input| input.describe())
            };
            if let Some(described) = described {
                inputs.push((key, described));
            }
        }
        inputs
    }

    /// Deserializes the provider's keys into its config type, reporting
    /// every problem at once, each with its full key path
    /// (`clients.api.audience: …`).
    pub fn provider_config<T: DeserializeOwned>(&self) -> Result<T, ConfigError> {
        let mut problems = Vec::new();
        let mut known: Vec<&str> = SETTING_KEYS.to_vec();
        known.extend(["provider", "store"]);
        let at = format!("clients.{}", self.name);
        deserialize_all(&at, self.fields.clone(), &known, &mut problems)
            .ok_or_else(|| ConfigError::new(problems))
    }
}

/// The whole configuration: `[defaults]` and `[clients.<name>]`.
///
/// It deserializes from any serde format, so it can sit inside an
/// application's own config, under `[authmux]` say, and be checked with
/// the same messages as a file of its own:
///
/// ```
/// #[derive(serde::Deserialize)]
/// struct AppConfig {
///     listen: String,
///     authmux: authmux::Config,
/// }
///
/// let app: AppConfig = toml::from_str(r#"
///     listen = "0.0.0.0:8080"
///
///     [authmux.clients.api]
///     provider = "oauth2"
///     token_url = "https://idp.example.com/oauth2/token"
///     client_id = "my-client-id"
///     client_secret = { env = "IDP_CLIENT_SECRET" }
/// "#).expect("a valid config");
/// assert!(app.authmux.clients.contains_key("api"));
/// ```
#[derive(Debug, Clone, Default)]
pub struct Config {
    /// The `[defaults]` table.
    pub defaults: Settings,
    /// The clients, by name.
    pub clients: BTreeMap<String, ClientConfig>,
    /// The `[store]` table.
    pub store: StoreConfig,
    /// The config file that was read, if any.
    file: Option<PathBuf>,
}

/// Every problem found in a configuration, each naming its key path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    problems: Vec<String>,
}

impl ConfigError {
    pub(crate) fn new(problems: Vec<String>) -> Self {
        Self { problems }
    }

    /// The problems, one per key, such as
    /// `clients.api.audience: required unless resource is set`.
    pub fn problems(&self) -> &[String] {
        &self.problems
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.problems.as_slice() {
            [one] => f.write_str(one),
            problems => write!(
                f,
                "{} configuration problems: {}",
                problems.len(),
                problems.join("; ")
            ),
        }
    }
}

impl std::error::Error for ConfigError {}

/// Every fallible call of authmux returns [`Error`] or `ConfigError`, and a
/// `ConfigError` converts into an `Error` of kind `Config` with `?`: a
/// function returning `Result<_, authmux::Error>` handles both. The
/// problems stay reachable through [`std::error::Error::source`].
impl From<ConfigError> for Error {
    fn from(error: ConfigError) -> Self {
        Error::config(error.to_string()).with_source(error)
    }
}

impl<'de> Deserialize<'de> for Config {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let root = Dict::deserialize(deserializer)?;
        Self::from(Serialized::defaults(root)).map_err(de::Error::custom)
    }
}

impl Config {
    /// Where the config file is: `explicit` if given, else `$AUTHMUX_CONFIG`,
    /// else `./authmux.toml`.
    pub fn path(explicit: Option<&Path>) -> PathBuf {
        if let Some(path) = explicit {
            return path.to_owned();
        }
        match std::env::var_os(CONFIG_ENV) {
            Some(path) if !path.is_empty() => PathBuf::from(path),
            _ => PathBuf::from(DEFAULT_CONFIG_FILE),
        }
    }

    /// The default sources, merged in order: the TOML file at
    /// [`Config::path`] (if it exists), then the `AUTHMUX_CLIENTS__…`,
    /// `AUTHMUX_DEFAULTS__…` and `AUTHMUX_STORE__…` environment variables
    /// with `__` between keys (`AUTHMUX_CLIENTS__API__CLIENT_SECRET`). A
    /// variable that sets any part of a secret's source (`client_secret`,
    /// `client_assertion_key`, `[store] encryption_key` or `password`: every
    /// key whose type is a [`ClientSecret`])
    /// replaces the file's whole source. A variable's client is the file's
    /// client of that name in any case: `AUTHMUX_CLIENTS__BILLING__…` sets
    /// `[clients.Billing]`.
    pub fn figment(explicit: Option<&Path>) -> Figment {
        Figment::from(Layered {
            file: TomlFile::new(Self::path(explicit)),
            env: EnvText::new(ENV_PREFIX),
        })
    }

    /// Loads [`Config::figment`]. The file must exist when a path is given
    /// explicitly or by `$AUTHMUX_CONFIG`. Without either, a missing
    /// `./authmux.toml` is fine if the environment configures a client;
    /// otherwise the error names every place that was tried.
    pub fn load(explicit: Option<&Path>) -> Result<Self, ConfigError> {
        let path = Self::path(explicit);
        let named_by_variable =
            explicit.is_none() && std::env::var_os(CONFIG_ENV).is_some_and(|path| !path.is_empty());
        let found = path.is_file();
        if !found && explicit.is_some() {
            return Err(ConfigError::new(vec![format!(
                "{}: no such config file",
                path.display()
            )]));
        }
        if !found && named_by_variable {
            return Err(ConfigError::new(vec![format!(
                "{}: no such config file (named by ${CONFIG_ENV})",
                path.display()
            )]));
        }
        let mut config = Self::from(Self::figment(explicit))?;
        if found {
            config.file = Some(path);
        } else if config.clients.is_empty() {
            let here = std::env::current_dir()
                .map(|dir| format!(" in {}", dir.display()))
                .unwrap_or_default();
            return Err(ConfigError::new(vec![format!(
                "no configuration found: tried ${CONFIG_ENV} (not set) and \
                 ./{DEFAULT_CONFIG_FILE} (no such file{here}), \
                 and no {ENV_PREFIX}CLIENTS__<NAME>__<KEY> variable is set"
            )]));
        }
        Ok(config)
    }

    /// The config file that [`Config::load`] read, if it read one.
    pub fn file(&self) -> Option<&Path> {
        self.file.as_deref()
    }

    /// Parses a configuration from TOML text alone. A syntax error gives
    /// its line and column, never the text.
    pub fn from_toml_str(text: &str) -> Result<Self, ConfigError> {
        Self::from(TomlText {
            name: "TOML".to_owned(),
            text: text.to_owned(),
        })
    }

    /// Parses a configuration from TOML text and environment variables
    /// given as data, merged as [`Config::load`] merges the file and the
    /// process environment: only `AUTHMUX_CLIENTS__…`, `AUTHMUX_DEFAULTS__…`
    /// and `AUTHMUX_STORE__…` pairs are read, their values as text, and a
    /// pair that sets a secret's source replaces the text's. For tests and
    /// tools that must not touch the process environment.
    pub fn from_toml_and_env<K, V>(
        text: &str,
        vars: impl IntoIterator<Item = (K, V)>,
    ) -> Result<Self, ConfigError>
    where
        K: Into<String>,
        V: Into<String>,
    {
        Self::from(Layered {
            file: TomlText {
                name: "TOML".to_owned(),
                text: text.to_owned(),
            },
            env: EnvText::from_vars(ENV_PREFIX, vars),
        })
    }

    /// Extracts a configuration from any figment provider, checking every
    /// client and reporting every problem at once.
    pub fn from<T: Provider>(provider: T) -> Result<Self, ConfigError> {
        let root: Dict = Figment::from(provider)
            .extract()
            .map_err(|error| ConfigError::new(error.into_iter().map(source_problem).collect()))?;
        let mut problems = Vec::new();
        let mut defaults = Settings::default();
        let mut clients = Dict::new();
        let mut store = StoreConfig::default();
        for (key, value) in root {
            match key.as_str() {
                "defaults" => {
                    if let Some(settings) = table(&key, value, &mut problems)
                        .and_then(|table| deserialize_all(&key, table, &[], &mut problems))
                    {
                        defaults = settings;
                    }
                }
                "clients" => clients = table(&key, value, &mut problems).unwrap_or_default(),
                "store" => {
                    if let Some(table) = table(&key, value, &mut problems)
                        .and_then(|table| deserialize_all(&key, table, &[], &mut problems))
                    {
                        store = table;
                    }
                }
                _ => problems.push(format!(
                    "{key}: unknown section{} (known: [clients.<name>], [defaults], [store])",
                    suggestion(&key, &SECTIONS)
                        .map(|known| format!("; did you mean [{known}]?"))
                        .unwrap_or_default()
                )),
            }
        }
        defaults.validate("defaults", &mut problems);
        let mut built = BTreeMap::new();
        for (name, value) in clients {
            if let Some(client) = client_config(&name, value, &defaults, &mut problems) {
                built.insert(name, client);
            }
        }
        if problems.is_empty() {
            Ok(Self {
                defaults,
                clients: built,
                store,
                file: None,
            })
        } else {
            Err(ConfigError::new(problems))
        }
    }
}

/// A problem of a source as a whole, such as a file that cannot be parsed.
/// Other sources' multi-line messages may quote the file, so only their
/// first line is kept.
fn source_problem(error: figment::Error) -> String {
    match error.kind {
        Kind::Message(message) => message.lines().next().unwrap_or_default().to_owned(),
        kind => problem(&[], &kind),
    }
}

/// `value` as a table, or a problem at `at`.
fn table(at: &str, value: Value, problems: &mut Vec<String>) -> Option<Dict> {
    match value {
        Value::Dict(_, table) => Some(table),
        other => {
            let kind = Kind::InvalidType(other.to_actual(), "a table".to_owned());
            problems.push(problem(&[at.to_owned()], &kind));
            None
        }
    }
}

fn client_config(
    name: &str,
    value: Value,
    defaults: &Settings,
    problems: &mut Vec<String>,
) -> Option<ClientConfig> {
    let at = format!("clients.{name}");
    let mut fields = table(&at, value, problems)?;
    let provider = match fields.remove("provider") {
        Some(Value::String(_, provider)) => provider,
        Some(other) => {
            let kind = Kind::InvalidType(other.to_actual(), "a provider name".to_owned());
            problems.push(problem(&[at, "provider".to_owned()], &kind));
            return None;
        }
        None => {
            problems.push(format!(
                "{at}.provider: required (one of: {})",
                known_providers().join(", ")
            ));
            return None;
        }
    };
    if !known_providers().contains(&provider.as_str()) {
        problems.push(format!(
            "{at}.provider: unknown provider {provider:?}{} (available: {})",
            suggestion(&provider, &known_providers())
                .map(|known| format!("; did you mean {known:?}?"))
                .unwrap_or_default(),
            known_providers().join(", ")
        ));
        return None;
    }
    let store = match fields.remove("store") {
        None => true,
        Some(Value::Bool(_, store)) => store,
        // From an environment variable.
        Some(Value::String(_, text)) if matches!(text.trim(), "true" | "false") => {
            text.trim() == "true"
        }
        Some(other) => {
            let kind = Kind::InvalidType(other.to_actual(), "true or false".to_owned());
            problems.push(problem(&[at.clone(), "store".to_owned()], &kind));
            true
        }
    };
    let mut overrides = Dict::new();
    for key in SETTING_KEYS {
        if let Some(value) = fields.remove(key) {
            overrides.insert(key.to_owned(), value);
        }
    }
    for key in BOOLEAN_KEYS {
        if let Some(Value::String(tag, text)) = fields.get(key) {
            let tag = *tag;
            match text.trim() {
                "true" => fields.insert(key.to_owned(), Value::Bool(tag, true)),
                "false" => fields.insert(key.to_owned(), Value::Bool(tag, false)),
                _ => None,
            };
        }
    }
    let settings = deserialize_all::<Overrides>(&at, overrides, &[], problems)
        .map(|overrides| overrides.apply(defaults))
        .unwrap_or_else(|| defaults.clone());
    settings.validate(&at, problems);
    Some(ClientConfig {
        provider,
        settings,
        store,
        name: name.to_owned(),
        fields,
    })
}

/// A client's own timing keys, laid over the defaults.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Overrides {
    #[serde(default, deserialize_with = "some_duration")]
    timeout: Option<Duration>,
    #[serde(default, deserialize_with = "some_duration")]
    connect_timeout: Option<Duration>,
    #[serde(default, deserialize_with = "some_duration")]
    refresh_window: Option<Duration>,
    #[serde(default, deserialize_with = "some_duration")]
    expiry_margin: Option<Duration>,
    #[serde(default, deserialize_with = "some_whole_number")]
    max_attempts: Option<u32>,
    #[serde(default, deserialize_with = "some_duration")]
    fetch_deadline: Option<Duration>,
    #[serde(default, deserialize_with = "some_duration")]
    default_lifetime: Option<Duration>,
    #[serde(default, deserialize_with = "some_duration")]
    max_retry_after: Option<Duration>,
    tls_ca: Option<ClientSecret>,
    #[serde(default, deserialize_with = "some_boolean")]
    tls_ca_only: Option<bool>,
    tls_client_certificate: Option<ClientSecret>,
    tls_client_key: Option<ClientSecret>,
    proxy: Option<String>,
}

fn some_boolean<'de, D: de::Deserializer<'de>>(deserializer: D) -> Result<Option<bool>, D::Error> {
    boolean(deserializer).map(Some)
}

pub(crate) fn some_duration<'de, D: de::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Duration>, D::Error> {
    duration(deserializer).map(Some)
}

fn some_whole_number<'de, D: de::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<u32>, D::Error> {
    whole_number(deserializer).map(Some)
}

impl Overrides {
    fn apply(self, defaults: &Settings) -> Settings {
        let mut settings = defaults.clone();
        let pick = |value: Option<Duration>, default: Duration| value.unwrap_or(default);
        settings.timeout = pick(self.timeout, settings.timeout);
        settings.connect_timeout = pick(self.connect_timeout, settings.connect_timeout);
        settings.refresh_window = pick(self.refresh_window, settings.refresh_window);
        settings.expiry_margin = pick(self.expiry_margin, settings.expiry_margin);
        settings.max_attempts = self.max_attempts.unwrap_or(settings.max_attempts);
        settings.fetch_deadline = pick(self.fetch_deadline, settings.fetch_deadline);
        settings.default_lifetime = pick(self.default_lifetime, settings.default_lifetime);
        settings.max_retry_after = pick(self.max_retry_after, settings.max_retry_after);
        settings.tls_ca_only = self.tls_ca_only.unwrap_or(settings.tls_ca_only);
        // A client's own certificate comes with its own key, or none: the
        // default key of another certificate never pairs with it.
        if self.tls_client_certificate.is_some() {
            settings.tls_client_key = None;
        }
        for (own, slot) in [
            (self.tls_ca, &mut settings.tls_ca),
            (
                self.tls_client_certificate,
                &mut settings.tls_client_certificate,
            ),
            (self.tls_client_key, &mut settings.tls_client_key),
        ] {
            if own.is_some() {
                *slot = own;
            }
        }
        settings.proxy = self.proxy.or(settings.proxy);
        settings
    }
}

/// Deserializes `table`, found at key path `at`, as a `T`, reporting every
/// problem rather than the first: a key that is unknown or has the wrong
/// shape is reported and left out, a missing key is reported and filled
/// with a stand-in, and the rest is tried again. `also_known` are keys
/// that are valid here though `T` does not take them, for suggestions.
/// Returns `T` only if there was no problem.
fn deserialize_all<T: DeserializeOwned>(
    at: &str,
    mut table: Dict,
    also_known: &[&str],
    problems: &mut Vec<String>,
) -> Option<T> {
    let before = problems.len();
    let mut left_out: Vec<String> = Vec::new();
    let mut stand_ins: Vec<String> = Vec::new();
    // Each round leaves a key out or fills one in, so this ends.
    loop {
        let error = match Value::from(table.clone()).deserialize::<T>() {
            Ok(value) => return (problems.len() == before).then_some(value),
            Err(error) => error,
        };
        let mut path = vec![at.to_owned()];
        path.extend(error.path.iter().cloned());
        match (error.path.first(), error.kind) {
            (None, Kind::MissingField(field)) => {
                let field = field.into_owned();
                if left_out.contains(&field) || stand_ins.contains(&field) {
                    return None;
                }
                problems.push(format!("{at}.{field}: required"));
                // Every required provider key takes a string.
                table.insert(field.clone(), Value::from(String::new()));
                stand_ins.push(field);
            }
            (Some(key), kind) => {
                let key = key.clone();
                if stand_ins.contains(&key) {
                    return None;
                }
                problems.push(match kind {
                    Kind::UnknownField(field, expected) => {
                        let mut known: Vec<&str> = expected.to_vec();
                        known.extend(also_known);
                        unknown_key(&path, &field, &known)
                    }
                    kind => problem(&path, &kind),
                });
                table.remove(&key);
                left_out.push(key);
            }
            (None, kind) => {
                problems.push(problem(&path, &kind));
                return None;
            }
        }
    }
}

/// An unknown key, with the known key it most likely misspells.
fn unknown_key(path: &[String], field: &str, known: &[&str]) -> String {
    let key = path.join(".");
    match suggestion(field, known) {
        Some(known) => format!("{key}: unknown key; did you mean {known}?"),
        None => {
            let mut known = known.to_vec();
            known.sort_unstable();
            known.dedup();
            format!("{key}: unknown key (known keys: {})", known.join(", "))
        }
    }
}

/// The known name that `unknown` most likely misspells, if any is close.
fn suggestion<'a>(unknown: &str, known: &[&'a str]) -> Option<&'a str> {
    known
        .iter()
        .map(|candidate| (strsim::damerau_levenshtein(unknown, candidate), *candidate))
        .filter(|(distance, _)| *distance <= (unknown.chars().count() / 3).max(1))
        .min()
        .map(|(_, candidate)| candidate)
}

/// One line for a deserialization problem at `path`: what was expected and
/// what was found. Under a key that takes a secret's source the value found
/// is not shown, whatever its type; nor under a key named like a secret
/// (an `extra_params` entry, say).
fn problem(path: &[String], kind: &Kind) -> String {
    let key = path.join(".");
    let secret = path
        .iter()
        .any(|part| secret_keys::is_secret(part) || part.contains("secret"));
    match kind {
        Kind::InvalidType(actual, expected) | Kind::InvalidValue(actual, expected) => format!(
            "{key}: expected {}, found {}",
            expectation(expected),
            found(actual, secret)
        ),
        Kind::UnknownVariant(variant, expected) => {
            let expected: Vec<String> = expected.iter().map(|name| format!("{name:?}")).collect();
            format!(
                "{key}: expected one of {}, found {variant:?}",
                expected.join(", ")
            )
        }
        Kind::MissingField(field) => format!("{key}.{field}: required"),
        Kind::InvalidLength(length, expected) => {
            format!(
                "{key}: expected {}, found {length} items",
                expectation(expected)
            )
        }
        Kind::DuplicateField(field) => format!("{key}.{field}: given twice"),
        Kind::Message(message) => {
            let message: Vec<&str> = message.lines().collect();
            format!("{key}: {}", message.join("; "))
        }
        _ if secret => format!("{key}: not a usable value"),
        other => format!("{key}: {other}"),
    }
}

/// serde's names of shapes in the words of a TOML file.
fn expectation(expected: &str) -> String {
    let words = match expected {
        "a sequence" => "an array",
        "a map" => "a table",
        "a boolean" => "true or false",
        "u8" | "u16" | "u32" | "u64" | "usize" => "a whole number",
        other if other.starts_with("struct ") => "a table",
        other => other,
    };
    words.to_owned()
}

/// What was found, as a TOML user would name it; without the value under a
/// secret's key.
fn found(actual: &Actual, secret: bool) -> String {
    let (kind, value) = match actual {
        Actual::Bool(value) => ("boolean", value.to_string()),
        Actual::Unsigned(value) => ("integer", value.to_string()),
        Actual::Signed(value) => ("integer", value.to_string()),
        Actual::Float(value) => ("float", value.to_string()),
        Actual::Char(value) => ("string", format!("{:?}", value.to_string())),
        Actual::Str(value) => ("string", format!("{value:?}")),
        Actual::Seq => return "an array".to_owned(),
        Actual::Map => return "a table".to_owned(),
        _ if secret => return "a value of another kind".to_owned(),
        other => return other.to_string(),
    };
    if secret {
        kind.to_owned()
    } else {
        format!("{kind} {value}")
    }
}

/// The config file and the environment, with a secret's source in the
/// environment replacing the file's whole source rather than merging into
/// it.
struct Layered<F = TomlFile> {
    file: F,
    env: EnvText,
}

impl<F: Provider> Provider for Layered<F> {
    fn metadata(&self) -> Metadata {
        Metadata::named("the config file and `AUTHMUX_` environment variables")
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        let mut file = self
            .file
            .data()?
            .remove(&Profile::Default)
            .unwrap_or_default();
        let mut env = self
            .env
            .data()?
            .remove(&Profile::Default)
            .unwrap_or_default();
        if let (Some(Value::Dict(_, file_clients)), Some(Value::Dict(_, env_clients))) =
            (file.get("clients"), env.get_mut("clients"))
        {
            *env_clients = named_as_in_file(std::mem::take(env_clients), file_clients)
                .map_err(figment::Error::from)?;
        }
        if let (Some(Value::Dict(_, file_clients)), Some(Value::Dict(_, env_clients))) =
            (file.get_mut("clients"), env.get("clients"))
        {
            for (name, env_client) in env_clients {
                if let Some(file_client) = file_clients.get_mut(name) {
                    drop_replaced_secrets(file_client, env_client, secret_keys::in_clients());
                }
            }
        }
        if let (Some(file_store), Some(env_store)) = (file.get_mut("store"), env.get("store")) {
            drop_replaced_secrets(file_store, env_store, secret_keys::in_store());
        }
        Figment::new()
            .merge(Serialized::defaults(file))
            .merge(Serialized::defaults(env))
            .data()
    }
}

/// The environment's clients under the names the file gives them.
/// Variables are read lower-cased, so `AUTHMUX_CLIENTS__BILLING__…` names
/// `[clients.Billing]`: a name the file has exactly is kept, else the one
/// file client whose name differs only in case is meant. Two such clients
/// make the variable ambiguous, which is an error.
fn named_as_in_file(env: Dict, file: &Dict) -> Result<Dict, String> {
    let mut named = Dict::new();
    for (name, value) in env {
        let name = if file.contains_key(&name) {
            name
        } else {
            let same: Vec<&str> = file
                .keys()
                .filter(|known| known.eq_ignore_ascii_case(&name))
                .map(String::as_str)
                .collect();
            match same.as_slice() {
                [] => name,
                [known] => (*known).to_owned(),
                several => {
                    return Err(format!(
                        "{ENV_PREFIX}CLIENTS__{}__…: matches clients {}; rename one so \
                         that their names differ in more than case",
                        name.to_ascii_uppercase(),
                        several.join(" and ")
                    ));
                }
            }
        };
        named.insert(name, value);
    }
    Ok(named)
}

/// Removes from the file's `table` each secret source that the
/// environment's `table` sets too: a secret's source is one whole value,
/// so that `AUTHMUX_CLIENTS__API__CLIENT_SECRET__FILE` replaces `{ env =
/// "OLD" }` instead of merging into a table with both.
fn drop_replaced_secrets(file: &mut Value, env: &Value, secret_keys: &BTreeSet<&'static str>) {
    if let (Value::Dict(_, file), Value::Dict(_, env)) = (file, env) {
        file.retain(|key, _| !(secret_keys.contains(key.as_str()) && env.contains_key(key)));
    }
}

/// A TOML config file. A missing file is empty; a syntax error gives its
/// line and column, never the line itself, which may hold a secret.
#[derive(Debug, Clone)]
pub struct TomlFile {
    path: PathBuf,
}

impl TomlFile {
    /// The file at `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }
}

impl Provider for TomlFile {
    fn metadata(&self) -> Metadata {
        Metadata::from("TOML file", Source::File(self.path.clone()))
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(text) => text,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Map::new()),
            Err(error) => {
                return Err(figment::Error::from(format!(
                    "{}: cannot read: {}",
                    self.path.display(),
                    error.kind()
                )));
            }
        };
        if let Some(problem) = syntax_error(&self.path.display().to_string(), &text) {
            return Err(figment::Error::from(problem));
        }
        Toml::string(&text).data()
    }
}

/// TOML text given directly, named `name` in errors.
struct TomlText {
    name: String,
    text: String,
}

impl Provider for TomlText {
    fn metadata(&self) -> Metadata {
        Metadata::named(self.name.clone())
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        if let Some(problem) = syntax_error(&self.name, &self.text) {
            return Err(figment::Error::from(problem));
        }
        Toml::string(&self.text).data()
    }
}

/// The syntax error of TOML text, if any, as one line that gives its line
/// and column but never quotes the text.
fn syntax_error(name: &str, text: &str) -> Option<String> {
    let error = toml::from_str::<toml::Table>(text).err()?;
    let at = error.span().map(|span| span.start).unwrap_or_default();
    let before = text.get(..at).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before
        .rsplit('\n')
        .next()
        .unwrap_or_default()
        .chars()
        .count()
        + 1;
    let message: Vec<&str> = error
        .message()
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .collect();
    Some(format!(
        "{name}: TOML syntax error at line {line}, column {column}: {}",
        message.join("; ")
    ))
}

/// `AUTHMUX_`-prefixed environment variables, with `__` between keys and
/// every value kept as text: a secret such as `00123` or `1.50` must reach
/// the provider exactly as written, never reparsed as a number.
///
/// Only variables for a config section ([`SECTIONS`]) are read, so that
/// `AUTHMUX_LOG` or `AUTHMUX_BIN`, meant for something else, never break
/// loading.
#[derive(Debug, Clone)]
pub struct EnvText {
    prefix: String,
    /// Variables given as data; the process environment when `None`.
    vars: Option<Vec<(String, String)>>,
}

impl EnvText {
    /// Reads variables starting with `prefix` (case-insensitively).
    pub fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_ascii_uppercase(),
            vars: None,
        }
    }

    /// Reads `vars` instead of the process environment, by the same rules.
    pub fn from_vars<K, V>(prefix: &str, vars: impl IntoIterator<Item = (K, V)>) -> Self
    where
        K: Into<String>,
        V: Into<String>,
    {
        Self {
            prefix: prefix.to_ascii_uppercase(),
            vars: Some(
                vars.into_iter()
                    .map(|(key, value)| (key.into(), value.into()))
                    .collect(),
            ),
        }
    }

    fn values(&self) -> Vec<(String, String)> {
        let vars: Vec<(String, String)> = match &self.vars {
            Some(vars) => vars.clone(),
            None => std::env::vars_os()
                .filter_map(|(key, value)| {
                    Some((key.into_string().ok()?, value.into_string().ok()?))
                })
                .collect(),
        };
        let mut values = Vec::new();
        for (key, value) in &vars {
            let upper = key.to_ascii_uppercase();
            let Some(rest) = upper.strip_prefix(&self.prefix) else {
                continue;
            };
            let path: Vec<String> = rest
                .split("__")
                .map(|part| part.to_ascii_lowercase())
                .collect();
            let is_config = path.len() > 1 && SECTIONS.contains(&path[0].as_str());
            // A `.` in a part would split it into keys of its own and put
            // the value under another key than the variable names: a
            // secret's value under a key that is not a secret's.
            if !is_config
                || path
                    .iter()
                    .any(|part| part.is_empty() || part.contains('.'))
            {
                continue;
            }
            values.push((path.join("."), value.to_owned()));
        }
        values.sort();
        values
    }
}

impl Provider for EnvText {
    fn metadata(&self) -> Metadata {
        Metadata::named(format!("`{}*` environment variables", self.prefix))
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        let mut figment = Figment::new();
        for (key, value) in self.values() {
            figment = figment.merge(Serialized::default(&key, value));
        }
        figment.data()
    }
}
