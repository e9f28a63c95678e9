//! The CLI's token store: the file store unless the config says otherwise
//! or `--no-store` is given, so that a script calling `authmux token` in a
//! loop makes one token request per token lifetime.

use std::path::Path;

use authmux::core::SharedTokenStore;
use authmux::core::store::FileStore;
use authmux::{Config, ConfigError, StoreKind};
use serde::Serialize;

/// Loads the config with the CLI's store default applied: the `[store]`
/// table's kind if it sets one, else the file store; no store at all with
/// `--no-store`. The default file store steps aside, with one line on
/// stderr, where there is no directory for it (neither `$XDG_CACHE_HOME`
/// nor `$HOME`, as under systemd or `env -i`): a store nobody asked for
/// must not stop the command. An explicit `kind = "file"` without a path
/// stays an error.
pub(crate) fn load(path: Option<&Path>, no_store: bool) -> Result<Config, ConfigError> {
    let mut config = Config::load(path)?;
    if no_store {
        config.store.kind = Some(StoreKind::None);
    } else if config.store.kind.is_none() {
        if config.store.path.is_some() || FileStore::default_dir().is_some() {
            config.store.kind = Some(StoreKind::File);
        } else {
            eprintln!(
                "authmux: no token store: neither $XDG_CACHE_HOME nor $HOME is set (set [store] path to share tokens between runs)"
            );
            config.store.kind = Some(StoreKind::None);
        }
    }
    Ok(config)
}

/// What `authmux check` found out about the store.
#[derive(Debug, Serialize)]
pub(crate) struct StoreStatus {
    /// The store, as its `describe` gives it (`file /home/me/.cache/authmux`,
    /// `redis redis://cache:6379/0`), or `none`.
    pub(crate) store: String,
    /// Whether it answered a ping; always true for no store.
    pub(crate) reachable: bool,
    /// Whether values are sealed with an encryption key.
    pub(crate) encrypted: bool,
    /// Why it cannot be used, if it cannot.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) problem: Option<String>,
}

impl StoreStatus {
    /// The line `authmux check` prints: `store  file /home/me/.cache/authmux
    /// (reachable, plaintext)`.
    pub(crate) fn line(&self) -> String {
        if self.store == "none" {
            return "store  none".to_owned();
        }
        let sealing = if self.encrypted {
            "encrypted"
        } else {
            "plaintext"
        };
        let reach = if self.reachable {
            "reachable"
        } else {
            "unreachable"
        };
        format!("store  {} ({reach}, {sealing})", self.store)
    }
}

/// Pings `store`, if there is one.
pub(crate) async fn status(store: Option<&SharedTokenStore>) -> StoreStatus {
    let Some(store) = store else {
        return StoreStatus {
            store: "none".to_owned(),
            reachable: true,
            encrypted: false,
            problem: None,
        };
    };
    let problem = store.ping().await.err().map(|error| {
        format!(
            "store: {} cannot be reached: {error}; tokens are fetched without it",
            store.describe()
        )
    });
    StoreStatus {
        store: store.describe(),
        reachable: problem.is_none(),
        encrypted: store.is_encrypted(),
        problem,
    }
}
