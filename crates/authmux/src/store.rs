//! The `[store]` table: where tokens are kept beyond the process, so that
//! the processes of a machine or a fleet share them.
//!
//! ```toml
//! [store]
//! kind = "redis"                       # "none" | "file" | "redis"
//! url = "redis://127.0.0.1:6379/0"     # redis only; rediss:// for TLS
//! prefix = "authmux"                   # key prefix
//! encryption_key = { env = "TOKEN_STORE_KEY" }   # 32 bytes, base64; inline, env or file
//! # encryption = "none"                # explicit opt-out (redis)
//! # path = "/var/cache/authmux"        # file only
//! timeout = "200ms"                    # each store call
//! ```
//!
//! The library's default is no store; the CLI's is the file store.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use authmux_core::store::{EncryptionKey, FileStore, StoreOptions, redact_url};
use authmux_core::{ClientSecret, SharedTokenStore};
use serde::Deserialize;

/// The default [`StoreConfig::timeout`] of the file store.
pub const FILE_TIMEOUT: Duration = Duration::from_secs(1);

/// Which store holds the tokens.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    /// No store: each process fetches its own tokens.
    None,
    /// Files in a directory: shared by the processes of one machine.
    File,
    /// Redis or Valkey: shared by a fleet (needs the `redis` feature).
    Redis,
}

impl StoreKind {
    /// The name used in the config file.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::File => "file",
            Self::Redis => "redis",
        }
    }
}

/// Whether stored tokens are encrypted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Encryption {
    /// `encryption = "none"`: stored in plaintext, an explicit choice.
    None,
    /// `encryption = "aes-256-gcm"`: sealed with `encryption_key` (the
    /// default whenever a key is given).
    Aes256Gcm,
}

/// The `[store]` table. Every key is optional.
#[derive(Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct StoreConfig {
    /// The kind of store; `None` (not set) means the program's default:
    /// no store for the library, the file store for the CLI.
    pub kind: Option<StoreKind>,
    /// Redis only: `redis://[user:password@]host:port/db`, `rediss://` for
    /// TLS, `redis+cluster://` (or several comma-separated URLs) for a
    /// cluster.
    pub url: Option<String>,
    /// The first part of every key (default `authmux`).
    pub prefix: Option<String>,
    /// The AES-256-GCM key: 32 bytes in base64, inline, `{ env = … }` or
    /// `{ file = … }`.
    pub encryption_key: Option<ClientSecret>,
    /// `"none"` to store tokens in plaintext on purpose; the Redis store
    /// refuses to start without a key otherwise.
    pub encryption: Option<Encryption>,
    /// Redis only: the ACL user, when not in the URL (with `password`).
    pub username: Option<String>,
    /// Redis only: the password, inline, `{ env = … }` or `{ file = … }`,
    /// when not in the URL.
    pub password: Option<ClientSecret>,
    /// Redis only: a PEM file of root certificates to trust for
    /// `rediss://` instead of the system's (a Redis behind a private CA).
    pub tls_ca_file: Option<PathBuf>,
    /// File only: the directory (default `$XDG_CACHE_HOME/authmux`, else
    /// `~/.cache/authmux`).
    pub path: Option<PathBuf>,
    /// The longest one store call may take (default 200 ms; 1 s for the
    /// file store, [`FILE_TIMEOUT`]).
    #[serde(default, deserialize_with = "crate::config::some_duration")]
    pub timeout: Option<Duration>,
    /// How long the fleet's lease lasts unless its holder renews it, which
    /// it does every third of this while it fetches (default 2 s).
    #[serde(default, deserialize_with = "crate::config::some_duration")]
    pub lease_ttl: Option<Duration>,
    /// How long a process waits for a live lease holder's token before
    /// fetching its own (default 20 s, at most half the fetch deadline).
    #[serde(default, deserialize_with = "crate::config::some_duration")]
    pub lease_wait: Option<Duration>,
}

impl fmt::Debug for StoreConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreConfig")
            .field("kind", &self.kind)
            .field("url", &self.url.as_deref().map(redact_url))
            .field("prefix", &self.prefix)
            .field("encryption_key", &self.encryption_key)
            .field("encryption", &self.encryption)
            .field("username", &self.username)
            .field("password", &self.password)
            .field("tls_ca_file", &self.tls_ca_file)
            .field("path", &self.path)
            .field("timeout", &self.timeout)
            .field("lease_ttl", &self.lease_ttl)
            .field("lease_wait", &self.lease_wait)
            .finish()
    }
}

impl StoreConfig {
    /// The options every store shares, from this table.
    pub fn options(&self) -> StoreOptions {
        let mut options = StoreOptions::default();
        if let Some(prefix) = &self.prefix {
            options.prefix = prefix.clone();
        }
        if let Some(timeout) = self.timeout {
            options.timeout = timeout;
        } else if self.kind == Some(StoreKind::File) {
            // A local disk needs no network timeout; a burst of processes
            // on a busy machine (a script starting a hundred runs) can keep
            // a file call waiting for a thread longer than 200 ms.
            options.timeout = FILE_TIMEOUT;
        }
        if let Some(ttl) = self.lease_ttl {
            options.lease_ttl = ttl;
        }
        if let Some(wait) = self.lease_wait {
            options.lease_wait = wait;
        }
        options
    }

    /// The encryption key, read from its source; `None` without one or with
    /// `encryption = "none"`.
    pub fn key(&self) -> Result<Option<EncryptionKey>, Vec<String>> {
        match (self.encryption, &self.encryption_key) {
            (Some(Encryption::None), Some(_)) => Err(vec![
                "store.encryption: \"none\" contradicts store.encryption_key; remove one"
                    .to_owned(),
            ]),
            (Some(Encryption::Aes256Gcm), None) => Err(vec![
                "store.encryption_key: required with encryption = \"aes-256-gcm\" \
                 (32 random bytes in base64: `openssl rand -base64 32`)"
                    .to_owned(),
            ]),
            (_, None) => Ok(None),
            (_, Some(source)) => {
                let encoded = source
                    .resolve("store.encryption_key")
                    .map_err(|error| vec![error.message().to_owned()])?;
                EncryptionKey::from_base64(&encoded, "store.encryption_key")
                    .map(Some)
                    .map_err(|error| vec![error.to_string()])
            }
        }
    }

    /// Builds the store this table describes; `None` for no store (or no
    /// kind set). Nothing is connected or written yet. Each problem names
    /// its key.
    pub fn build(&self) -> Result<Option<SharedTokenStore>, Vec<String>> {
        let kind = self.kind.unwrap_or(StoreKind::None);
        let mut problems = Vec::new();
        if kind != StoreKind::Redis && self.url.is_some() {
            problems.push(format!(
                "store.url: only for kind = \"redis\" (kind is {:?})",
                kind.as_str()
            ));
        }
        if kind != StoreKind::Redis && (self.username.is_some() || self.password.is_some()) {
            problems.push(format!(
                "store.password: only for kind = \"redis\" (kind is {:?})",
                kind.as_str()
            ));
        }
        if kind != StoreKind::Redis && self.tls_ca_file.is_some() {
            problems.push(format!(
                "store.tls_ca_file: only for kind = \"redis\" (kind is {:?})",
                kind.as_str()
            ));
        }
        if kind != StoreKind::File && self.path.is_some() {
            problems.push(format!(
                "store.path: only for kind = \"file\" (kind is {:?})",
                kind.as_str()
            ));
        }
        if self.timeout.is_some_and(|timeout| timeout.is_zero()) {
            problems.push("store.timeout: must be longer than zero".to_owned());
        }
        let key = match kind {
            StoreKind::None => Ok(None),
            _ => self.key(),
        };
        let key = key.unwrap_or_else(|mut found| {
            problems.append(&mut found);
            None
        });
        if !problems.is_empty() {
            return Err(problems);
        }
        let builder = match kind {
            StoreKind::None => return Ok(None),
            StoreKind::File => {
                let dir = match self.path.clone().or_else(FileStore::default_dir) {
                    Some(dir) => dir,
                    None => {
                        return Err(vec![
                            "store.path: required: neither $XDG_CACHE_HOME nor $HOME is set"
                                .to_owned(),
                        ]);
                    }
                };
                SharedTokenStore::builder(FileStore::new(dir))
            }
            StoreKind::Redis => redis_store(self, key.is_some())?,
        };
        let builder = builder.options(self.options());
        Ok(Some(
            match key {
                Some(key) => builder.encryption_key(key),
                None => builder,
            }
            .build(),
        ))
    }
}

#[cfg(feature = "redis")]
fn redis_store(
    config: &StoreConfig,
    has_key: bool,
) -> Result<authmux_core::store::SharedTokenStoreBuilder, Vec<String>> {
    if !has_key && config.encryption != Some(Encryption::None) {
        return Err(vec![
            "store.encryption_key: required for the Redis store (32 random bytes in base64: \
             `openssl rand -base64 32`), or set encryption = \"none\" to store tokens in plaintext"
                .to_owned(),
        ]);
    }
    let Some(url) = &config.url else {
        return Err(vec![
            "store.url: required for kind = \"redis\" (such as \"redis://127.0.0.1:6379/0\")"
                .to_owned(),
        ]);
    };
    let mut store = authmux_redis::RedisStore::from_url(url)
        .map_err(|error| vec![format!("store.url: {error}")])?;
    if let Some(password) = &config.password {
        let password = password
            .resolve("store.password")
            .map_err(|error| vec![error.message().to_owned()])?;
        store = store.credentials(config.username.clone(), password);
    } else if config.username.is_some() {
        return Err(vec![
            "store.username: needs store.password (inline, { env = … } or { file = … })".to_owned(),
        ]);
    }
    if let Some(file) = &config.tls_ca_file {
        let pem = std::fs::read(file).map_err(|error| {
            vec![format!(
                "store.tls_ca_file: cannot read {}: {error}",
                file.display()
            )]
        })?;
        if !pem
            .windows(b"-----BEGIN CERTIFICATE-----".len())
            .any(|window| window == b"-----BEGIN CERTIFICATE-----")
        {
            return Err(vec![format!(
                "store.tls_ca_file: {} holds no PEM certificate",
                file.display()
            )]);
        }
        store = store.root_certificates(pem);
    }
    Ok(SharedTokenStore::builder(store))
}

#[cfg(not(feature = "redis"))]
fn redis_store(
    _config: &StoreConfig,
    _has_key: bool,
) -> Result<authmux_core::store::SharedTokenStoreBuilder, Vec<String>> {
    Err(vec![
        "store.kind: the Redis store is not compiled in: enable feature \"redis\"".to_owned(),
    ])
}
