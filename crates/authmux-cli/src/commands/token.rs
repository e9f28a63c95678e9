//! `authmux token`: print a client's access token.

use std::io::{self, Write};
use std::path::Path;

use authmux::{ExposeSecret, Token};
use clap::Args;
use serde::Serialize;

use crate::{Exit, fail};

pub(crate) const TOKEN_EXAMPLES: &str = "\
Examples:
  authmux token api
  curl -H \"Authorization: Bearer $(authmux token api)\" https://api.example.com/things
  authmux token api --json | jq -r .expires_at
  authmux token api --no-store      # a new token, the store neither read nor written

Tokens are kept in $XDG_CACHE_HOME/authmux (else ~/.cache/authmux), so the
next run reuses the token until its refresh window.";

/// The arguments of `authmux token`.
#[derive(Debug, Args)]
pub struct TokenArgs {
    /// The client's name, as configured under clients.CLIENT.
    pub client: String,

    /// Print one JSON object with the token and what is known about it.
    #[arg(long)]
    pub json: bool,
}

/// What `authmux token --json` prints. The field order is the output's.
#[derive(Debug, Serialize)]
pub struct TokenJson<'a> {
    /// The client's configured name.
    pub client: &'a str,
    /// The provider's name, such as `mention-me`.
    pub provider: &'a str,
    /// `Bearer`, `DPoP`, or another type as sent.
    pub token_type: &'a str,
    /// The access token itself.
    pub access_token: &'a str,
    /// Whole seconds until the token expires.
    pub expires_in: u64,
    /// When the token expires, in RFC 3339 UTC to the second.
    pub expires_at: String,
    /// The granted scope as sent, if the response had one.
    pub scope: Option<&'a str>,
    /// The JWT payload, decoded but not verified; `None` if the token is
    /// not a JWT.
    pub claims: Option<serde_json::Value>,
}

impl<'a> TokenJson<'a> {
    /// Describes `token`, fetched for the client `client` of `provider`.
    pub fn new(client: &'a str, provider: &'a str, token: &'a Token) -> Self {
        Self {
            client,
            provider,
            token_type: token.token_type().scheme(),
            access_token: token.secret().expose_secret(),
            expires_in: token.expires_in().as_secs(),
            expires_at: humantime::format_rfc3339_seconds(token.expires_at_utc()).to_string(),
            scope: token.scope(),
            // Opaque tokens are common; not being a JWT is not an error.
            claims: token.claims().ok(),
        }
    }
}

/// `authmux token`. The outer error is a failure to write the output.
pub(crate) async fn token(
    config: Option<&Path>,
    no_store: bool,
    args: &TokenArgs,
    stdout: &mut impl Write,
    stderr: &mut impl Write,
) -> io::Result<Exit> {
    let client = match super::load_client(config, no_store, &args.client, stderr)? {
        Ok(client) => client,
        Err(exit) => return Ok(exit),
    };
    let token = match client.token().await {
        Ok(token) => token,
        Err(error) => {
            fail(stderr, &error.to_string())?;
            return Ok(Exit::for_kind(error.kind()));
        }
    };
    if args.json {
        let json = TokenJson::new(client.name(), client.provider(), &token);
        serde_json::to_writer(&mut *stdout, &json)?;
        stdout.write_all(b"\n")?;
    } else {
        writeln!(stdout, "{}", token.secret().expose_secret())?;
    }
    stdout.flush()?;
    Ok(Exit::Success)
}
