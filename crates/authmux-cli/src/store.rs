//! The CLI's token store: the file store unless the config says otherwise
//! or `--no-store` is given, so that a script calling `authmux token` in a
//! loop makes one token request per token lifetime.

use std::path::Path;

use authmux::{Config, ConfigError, Registry, StoreKind};

/// Loads the config with the CLI's store default applied: the `[store]`
/// table's kind if it sets one, else the file store; no store at all with
/// `--no-store`.
pub(crate) fn load(path: Option<&Path>, no_store: bool) -> Result<Config, ConfigError> {
    let mut config = Config::load(path)?;
    if no_store {
        config.store.kind = Some(StoreKind::None);
    } else if config.store.kind.is_none() {
        config.store.kind = Some(StoreKind::File);
    }
    Ok(config)
}

/// What `authmux check` says about the store: `store  file /home/me/.cache/authmux
/// (reachable, plaintext)`, or why it cannot be used.
pub(crate) async fn describe(registry: &Registry) -> Result<String, String> {
    let Some(store) = registry.store() else {
        return Ok("store  none".to_owned());
    };
    let sealing = if store.is_encrypted() {
        "encrypted"
    } else {
        "plaintext"
    };
    match store.ping().await {
        Ok(()) => Ok(format!(
            "store  {} (reachable, {sealing})",
            store.describe()
        )),
        Err(error) => Err(format!(
            "store: {} cannot be reached: {error}; tokens are fetched without it",
            store.describe()
        )),
    }
}
