//! One file per command, as cargo keeps its `commands/`.

pub(crate) mod check;
pub(crate) mod completions;
pub(crate) mod request;
pub(crate) mod token;

use std::io::{self, Write};
use std::path::Path;

use authmux::{Client, Registry};

use crate::{Exit, fail};

/// Loads the config and builds only the client `name`: another client's
/// problem (a secret variable this script does not have, say) must not stop
/// it. On failure the one-line error is written and the exit code returned.
pub(crate) fn load_client(
    config: Option<&Path>,
    no_store: bool,
    name: &str,
    stderr: &mut impl Write,
) -> io::Result<Result<Client, Exit>> {
    let registry = match crate::store::load(config, no_store)
        .and_then(|loaded| Registry::with_client(&loaded, name))
    {
        Ok(registry) => registry,
        Err(error) => {
            fail(stderr, &error.to_string())?;
            return Ok(Err(Exit::Usage));
        }
    };
    match registry.client(name) {
        Ok(client) => Ok(Ok(client.clone())),
        Err(error) => {
            fail(stderr, &error.to_string())?;
            Ok(Err(Exit::for_kind(error.kind())))
        }
    }
}
