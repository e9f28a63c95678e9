//! The config file: `[defaults]` and one `[clients.<name>]` table per client.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use authmux_core::{CachePolicy, Error};
use figment::providers::{Format, Serialized, Toml};
use figment::value::{Dict, Map};
use figment::{Figment, Metadata, Profile, Provider};
use serde::Deserialize;
use serde_json::Value;

/// The environment variable naming the config file.
pub const CONFIG_ENV: &str = "AUTHMUX_CONFIG";

/// The config file used when neither a path nor [`CONFIG_ENV`] is given.
pub const DEFAULT_CONFIG_FILE: &str = "authmux.toml";

/// The prefix of environment variables that override the file.
pub const ENV_PREFIX: &str = "AUTHMUX_";

/// Every provider authmux knows, compiled in or not.
pub const PROVIDERS: [&str; 4] = ["mention-me", "360learning", "auth0", "oauth2"];

/// The providers compiled into this build, by feature.
pub fn compiled_providers() -> Vec<&'static str> {
    let compiled = [
        cfg!(feature = "mention-me"),
        cfg!(feature = "360learning"),
        cfg!(feature = "auth0"),
        cfg!(feature = "oauth2"),
    ];
    PROVIDERS
        .iter()
        .zip(compiled)
        .filter_map(|(name, on)| on.then_some(*name))
        .collect()
}

/// Timing settings: the `[defaults]` table, each overridable per client.
///
/// Durations are humantime strings: `"30s"`, `"5m"`, `"1h 30m"`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct Settings {
    /// How long one token request may take (default 30 s).
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// How long to wait for a connection (default 10 s).
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// The smallest refresh window (default 60 s); see [`CachePolicy`].
    #[serde(with = "humantime_serde")]
    pub refresh_window: Duration,
    /// A token is never served with less than this left (default 10 s).
    #[serde(with = "humantime_serde")]
    pub expiry_margin: Duration,
    /// Attempts per fetch, the first included (default 3).
    #[serde(deserialize_with = "number_or_text")]
    pub max_attempts: u32,
    /// How long one fetch, retries included, may take (default 30 s).
    #[serde(with = "humantime_serde")]
    pub fetch_deadline: Duration,
    /// The lifetime assumed when a response gives none (default 5 m).
    #[serde(with = "humantime_serde")]
    pub default_lifetime: Duration,
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
        }
    }
}

/// The keys of [`Settings`], which a client table may also carry.
const SETTING_KEYS: [&str; 7] = [
    "timeout",
    "connect_timeout",
    "refresh_window",
    "expiry_margin",
    "max_attempts",
    "fetch_deadline",
    "default_lifetime",
];

/// Provider keys that are booleans. Environment variables arrive as text,
/// so `"true"` and `"false"` are read as booleans for these keys only.
const BOOLEAN_KEYS: [&str; 3] = ["allow_insecure_http", "dpop", "accept_bearer_downgrade"];

fn number_or_text<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<u32, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum NumberOrText {
        Number(u32),
        Text(String),
    }
    match NumberOrText::deserialize(deserializer)? {
        NumberOrText::Number(number) => Ok(number),
        NumberOrText::Text(text) => text.trim().parse().map_err(|_| {
            serde::de::Error::custom(format!("expected a whole number, got {text:?}"))
        }),
    }
}

impl Settings {
    /// The cache policy these settings give.
    pub fn cache_policy(&self) -> CachePolicy {
        let mut policy = CachePolicy::default();
        policy.refresh_window = self.refresh_window;
        policy.expiry_margin = self.expiry_margin;
        policy.retry.max_attempts = self.max_attempts;
        policy.retry.deadline = self.fetch_deadline;
        policy
    }

    fn validate(&self, at: &str, problems: &mut Vec<String>) {
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
    /// The provider's name, such as `auth0`.
    pub provider: String,
    /// The defaults with this client's overrides applied.
    pub settings: Settings,
    /// The provider's own keys, as written.
    fields: serde_json::Map<String, Value>,
}

impl fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientConfig")
            .field("provider", &self.provider)
            .field("settings", &self.settings)
            .field("keys", &self.fields.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl ClientConfig {
    /// Deserializes the provider's keys into its config type. Errors are
    /// prefixed with the key path of the client (`clients.api: …`).
    pub fn provider_config<T: serde::de::DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_value(Value::Object(self.fields.clone()))
    }
}

/// The whole configuration: `[defaults]` and `[clients.<name>]`.
#[derive(Debug, Clone, Default)]
pub struct Config {
    /// The `[defaults]` table.
    pub defaults: Settings,
    /// The clients, by name.
    pub clients: BTreeMap<String, ClientConfig>,
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

impl From<ConfigError> for Error {
    fn from(error: ConfigError) -> Self {
        Error::config(error.to_string())
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    defaults: Option<Value>,
    #[serde(default)]
    clients: BTreeMap<String, serde_json::Map<String, Value>>,
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
    /// [`Config::path`], then `AUTHMUX_`-prefixed environment variables with
    /// `__` between keys (`AUTHMUX_CLIENTS__API__CLIENT_SECRET`).
    pub fn figment(explicit: Option<&Path>) -> Figment {
        Figment::new()
            .merge(Toml::file(Self::path(explicit)))
            .merge(EnvText::new(ENV_PREFIX))
    }

    /// Loads [`Config::figment`], requiring the file to exist when a path is
    /// given explicitly or by `$AUTHMUX_CONFIG`.
    pub fn load(explicit: Option<&Path>) -> Result<Self, ConfigError> {
        let path = Self::path(explicit);
        let named = explicit.is_some() || std::env::var_os(CONFIG_ENV).is_some();
        if named && !path.is_file() {
            return Err(ConfigError::new(vec![format!(
                "{}: no such config file",
                path.display()
            )]));
        }
        Self::from(Self::figment(explicit))
    }

    /// Extracts a configuration from any figment provider, checking every
    /// client and reporting every problem at once.
    pub fn from<T: Provider>(provider: T) -> Result<Self, ConfigError> {
        let raw: RawConfig = Figment::from(provider).extract().map_err(|error| {
            ConfigError::new(error.into_iter().map(|e| e.to_string()).collect())
        })?;
        let mut problems = Vec::new();
        let defaults = match raw.defaults {
            None => Settings::default(),
            Some(value) => serde_json::from_value(value).unwrap_or_else(|error| {
                problems.push(format!("defaults: {error}"));
                Settings::default()
            }),
        };
        defaults.validate("defaults", &mut problems);
        let mut clients = BTreeMap::new();
        for (name, table) in raw.clients {
            if let Some(client) = client_config(&name, table, &defaults, &mut problems) {
                clients.insert(name, client);
            }
        }
        if problems.is_empty() {
            Ok(Self { defaults, clients })
        } else {
            Err(ConfigError::new(problems))
        }
    }
}

fn client_config(
    name: &str,
    mut fields: serde_json::Map<String, Value>,
    defaults: &Settings,
    problems: &mut Vec<String>,
) -> Option<ClientConfig> {
    let at = format!("clients.{name}");
    let provider = match fields.remove("provider") {
        Some(Value::String(provider)) => provider,
        Some(_) => {
            problems.push(format!("{at}.provider: must be a string"));
            return None;
        }
        None => {
            problems.push(format!(
                "{at}.provider: required (one of: {})",
                PROVIDERS.join(", ")
            ));
            return None;
        }
    };
    if !PROVIDERS.contains(&provider.as_str()) {
        problems.push(format!(
            "{at}.provider: unknown provider {provider:?} (available: {})",
            compiled_providers().join(", ")
        ));
        return None;
    }
    if !compiled_providers().contains(&provider.as_str()) {
        problems.push(format!(
            "{at}.provider: {provider:?} is not compiled in; enable the {provider:?} feature \
             (compiled in: {})",
            compiled_providers().join(", ")
        ));
        return None;
    }
    let mut overrides = serde_json::Map::new();
    for key in SETTING_KEYS {
        if let Some(value) = fields.remove(key) {
            overrides.insert(key.to_owned(), value);
        }
    }
    for key in BOOLEAN_KEYS {
        if let Some(Value::String(text)) = fields.get(key) {
            match text.trim() {
                "true" => fields.insert(key.to_owned(), Value::Bool(true)),
                "false" => fields.insert(key.to_owned(), Value::Bool(false)),
                _ => None,
            };
        }
    }
    let settings = apply_overrides(defaults, overrides).unwrap_or_else(|error| {
        problems.push(format!("{at}: {error}"));
        defaults.clone()
    });
    settings.validate(&at, problems);
    Some(ClientConfig {
        provider,
        settings,
        fields,
    })
}

/// The defaults with a client's own timing keys laid over them.
fn apply_overrides(
    defaults: &Settings,
    overrides: serde_json::Map<String, Value>,
) -> Result<Settings, serde_json::Error> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Overrides {
        #[serde(default, with = "humantime_serde::option")]
        timeout: Option<Duration>,
        #[serde(default, with = "humantime_serde::option")]
        connect_timeout: Option<Duration>,
        #[serde(default, with = "humantime_serde::option")]
        refresh_window: Option<Duration>,
        #[serde(default, with = "humantime_serde::option")]
        expiry_margin: Option<Duration>,
        #[serde(default, deserialize_with = "some_number_or_text")]
        max_attempts: Option<u32>,
        #[serde(default, with = "humantime_serde::option")]
        fetch_deadline: Option<Duration>,
        #[serde(default, with = "humantime_serde::option")]
        default_lifetime: Option<Duration>,
    }
    fn some_number_or_text<'de, D: serde::Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<u32>, D::Error> {
        number_or_text(deserializer).map(Some)
    }
    let overrides: Overrides = serde_json::from_value(Value::Object(overrides))?;
    let mut settings = defaults.clone();
    let pick = |value: Option<Duration>, default: Duration| value.unwrap_or(default);
    settings.timeout = pick(overrides.timeout, settings.timeout);
    settings.connect_timeout = pick(overrides.connect_timeout, settings.connect_timeout);
    settings.refresh_window = pick(overrides.refresh_window, settings.refresh_window);
    settings.expiry_margin = pick(overrides.expiry_margin, settings.expiry_margin);
    settings.max_attempts = overrides.max_attempts.unwrap_or(settings.max_attempts);
    settings.fetch_deadline = pick(overrides.fetch_deadline, settings.fetch_deadline);
    settings.default_lifetime = pick(overrides.default_lifetime, settings.default_lifetime);
    Ok(settings)
}

/// `AUTHMUX_`-prefixed environment variables, with `__` between keys and
/// every value kept as text: a secret such as `00123` or `1.50` must reach
/// the provider exactly as written, never reparsed as a number.
#[derive(Debug, Clone)]
pub struct EnvText {
    prefix: String,
}

impl EnvText {
    /// Reads variables starting with `prefix` (case-insensitively).
    pub fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_ascii_uppercase(),
        }
    }

    fn values(&self) -> Vec<(String, String)> {
        let mut values = Vec::new();
        for (key, value) in std::env::vars_os() {
            let (Some(key), Some(value)) = (key.to_str(), value.to_str()) else {
                continue;
            };
            let upper = key.to_ascii_uppercase();
            let Some(rest) = upper.strip_prefix(&self.prefix) else {
                continue;
            };
            // The config file's own path is not a config key.
            if key.eq_ignore_ascii_case(CONFIG_ENV) || rest.is_empty() {
                continue;
            }
            let path: Vec<String> = rest
                .split("__")
                .map(|part| part.to_ascii_lowercase())
                .collect();
            if path.iter().any(String::is_empty) {
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
