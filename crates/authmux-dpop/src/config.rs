//! The `dpop` setting of a client.

use std::path::PathBuf;
use std::sync::Arc;

use authmux_core::{Dpop, Error};
use serde::Deserialize;

use crate::DpopKey;

/// Whether a client uses DPoP, and with which key.
///
/// ```toml
/// dpop = false                                   # Bearer tokens (the default)
/// dpop = true                                    # a key generated per process
/// dpop = { key_file = "/etc/authmux/dpop.pem" }  # a key shared through a file
/// ```
///
/// `Debug` shows the file's path, never what it holds; the file is not read
/// until [`key`](Self::key) is called.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(from = "Raw")]
pub enum DpopConfig {
    /// `dpop = false`: no proofs, Bearer tokens.
    #[default]
    Disabled,
    /// `dpop = true`: a key generated in memory when the client is built.
    Generate,
    /// `dpop = { key_file = "path" }`: a key read from a PEM or JWK file
    /// (see [`DpopKey::from_file`]).
    KeyFile(PathBuf),
}

/// The shapes the setting may take in a config file.
#[derive(Deserialize)]
#[serde(untagged, expecting = "true, false or { key_file = \"path\" }")]
enum Raw {
    Switch(bool),
    File(File),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    key_file: PathBuf,
}

impl From<Raw> for DpopConfig {
    fn from(raw: Raw) -> Self {
        match raw {
            Raw::Switch(false) => Self::Disabled,
            Raw::Switch(true) => Self::Generate,
            Raw::File(File { key_file }) => Self::KeyFile(key_file),
        }
    }
}

impl DpopConfig {
    /// Whether the client sends DPoP proofs.
    pub fn is_enabled(&self) -> bool {
        !matches!(self, Self::Disabled)
    }

    /// The key to make proofs with: `None` when DPoP is off, a new key on
    /// every call for [`Generate`](Self::Generate) (so call it once per
    /// client and share the result), the file's key for
    /// [`KeyFile`](Self::KeyFile).
    ///
    /// # Errors
    ///
    /// The errors of [`DpopKey::from_file`], which name the file and never
    /// quote it.
    pub fn key(&self) -> Result<Option<Arc<DpopKey>>, Error> {
        match self {
            Self::Disabled => Ok(None),
            Self::Generate => Ok(Some(Arc::new(DpopKey::generate()))),
            Self::KeyFile(path) => DpopKey::from_file(path).map(|key| Some(Arc::new(key))),
        }
    }

    /// What a provider needs: `None` when DPoP is off, else a [`Dpop`] over
    /// this setting's key. Errors carry the config key path
    /// (`dpop.key_file: …`).
    pub fn dpop(&self, accept_bearer_downgrade: bool) -> Result<Option<Dpop>, Error> {
        let key = self
            .key()
            .map_err(|error| Error::config(format!("dpop.{}", error.message())))?;
        // Only a key file is the same key in every process.
        let key_shared = matches!(self, Self::KeyFile(_));
        Ok(key.map(|key| {
            Dpop::new(key)
                .accept_bearer_downgrade(accept_bearer_downgrade)
                .key_shared(key_shared)
        }))
    }
}
