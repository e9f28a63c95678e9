//! The `authmux` command line: prints the access token of a client named in
//! an [authmux] config file, for shell scripts, or checks such a file.
//!
//! ```text
//! $ authmux check --config authmux.toml
//! api        auth0       https://tenant.eu.auth0.com/oauth/token
//! referrals  mention-me  https://demo.mention-me.com/api/oauth/token
//! $ curl -H "Authorization: Bearer $(authmux token api)" https://api.example.com/things
//! $ authmux token referrals --json
//! {"client":"referrals","provider":"mention-me","token_type":"Bearer",…}
//! ```
//!
//! The config file is `--config FILE`, else `$AUTHMUX_CONFIG`, else
//! `./authmux.toml`; `AUTHMUX_CLIENTS__<NAME>__<KEY>` variables override it.
//!
//! # Exit codes
//!
//! Scripts branch on these, so each [`Exit`] variant is a stable number:
//!
//! | code | meaning |
//! |---|---|
//! | 0 | success |
//! | 1 | the output could not be written (a closed pipe) |
//! | 2 | a usage or configuration error, an unknown client included |
//! | 3 | the provider refused the request (an OAuth error, HTTP 400/401/403) |
//! | 4 | any other failure to get a token: transport, timeout, rate limit, HTTP 5xx, an invalid response |
//!
//! Errors are written to stderr as one line starting with `authmux: `; they
//! name the client and provider and never contain a secret. The binary is a
//! thin shell around [`run`], so everything here can be driven from tests.
//!
//! [authmux]: https://github.com/authmux/authmux

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use authmux::{Config, ConfigError, ErrorKind, ExposeSecret, Registry, Token};
use clap::{Args, Parser, Subcommand};
use serde::Serialize;

/// Shown under `authmux --help`.
const MAIN_EXAMPLES: &str = "\
Examples:
  authmux check --config authmux.toml
  curl -H \"Authorization: Bearer $(authmux token api)\" https://api.example.com/things
  authmux token api --json --config /etc/authmux.toml

Exit codes:
  0  success
  1  the output could not be written
  2  usage or configuration error (an unknown client included)
  3  the provider refused the request (OAuth error, HTTP 400/401/403)
  4  transport, timeout, rate limit, HTTP 5xx or an invalid response";

/// Shown under `authmux token --help`.
const TOKEN_EXAMPLES: &str = "\
Examples:
  authmux token api
  curl -H \"Authorization: Bearer $(authmux token api)\" https://api.example.com/things
  authmux token api --json | jq -r .expires_at";

/// Shown under `authmux check --help`.
const CHECK_EXAMPLES: &str = "\
Examples:
  authmux check
  authmux check --config deploy/authmux.toml || exit 1";

/// The command line, as parsed by clap.
#[derive(Debug, Parser)]
#[command(
    name = "authmux",
    version,
    about = "Machine-to-machine OAuth 2.0 access tokens from a config file.",
    long_about = "Machine-to-machine OAuth 2.0 access tokens from a config file.\n\n\
        The config file is --config FILE, else $AUTHMUX_CONFIG, else ./authmux.toml. \
        AUTHMUX_CLIENTS__<NAME>__<KEY> environment variables override its keys.",
    after_help = MAIN_EXAMPLES
)]
pub struct Cli {
    /// The config file [default: $AUTHMUX_CONFIG, else ./authmux.toml].
    // Global so that it may come before or after the subcommand, as scripts
    // written either way should keep working.
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print a client's access token on stdout.
    #[command(after_help = TOKEN_EXAMPLES)]
    Token(TokenArgs),
    /// Check the config file and list its clients; no request is sent.
    #[command(after_help = CHECK_EXAMPLES)]
    Check,
}

/// The arguments of `authmux token`.
#[derive(Debug, Args)]
pub struct TokenArgs {
    /// The client's name, as configured under clients.CLIENT.
    pub client: String,

    /// Print one JSON object with the token and what is known about it.
    #[arg(long)]
    pub json: bool,
}

/// How the process ends. The numbers are part of the command line's
/// contract; see the [crate documentation](crate#exit-codes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// 0: the command did what was asked.
    Success = 0,
    /// 1: the output could not be written, typically to a closed pipe.
    Output = 1,
    /// 2: a usage or configuration error, an unknown client included.
    Usage = 2,
    /// 3: the provider refused the request.
    Refused = 3,
    /// 4: no token for any other reason: transport, timeout, rate limit,
    /// server error or an invalid response.
    Unavailable = 4,
}

impl Exit {
    /// The process exit code.
    pub fn code(self) -> u8 {
        self as u8
    }

    /// The exit for a failed token request of this kind.
    pub fn for_kind(kind: ErrorKind) -> Self {
        match kind {
            ErrorKind::Config => Self::Usage,
            ErrorKind::Refused => Self::Refused,
            // ErrorKind is non-exhaustive: a kind added later is a failure to
            // get a token that a script cannot fix by changing its arguments.
            _ => Self::Unavailable,
        }
    }
}

impl From<Exit> for ExitCode {
    fn from(exit: Exit) -> Self {
        ExitCode::from(exit.code())
    }
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

/// Runs a parsed command line, writing its output to `stdout` and its
/// errors to `stderr`, and returns how the process should exit.
///
/// Needs a tokio runtime with I/O and time enabled; one thread is enough.
pub async fn run(cli: Cli, mut stdout: impl Write, mut stderr: impl Write) -> Exit {
    let config = cli.config.as_deref();
    let result = match &cli.command {
        Command::Token(args) => token(config, args, &mut stdout, &mut stderr).await,
        Command::Check => check(config, &mut stdout, &mut stderr),
    };
    match result {
        Ok(exit) => exit,
        Err(error) => {
            // Nothing can be done if stderr is gone too.
            let _ = writeln!(
                stderr,
                "authmux: cannot write the output: {}",
                one_line(&error.to_string())
            );
            Exit::Output
        }
    }
}

/// `authmux token`. The outer error is a failure to write the output.
async fn token(
    config: Option<&Path>,
    args: &TokenArgs,
    stdout: &mut impl Write,
    stderr: &mut impl Write,
) -> io::Result<Exit> {
    let registry = match Registry::load(config) {
        Ok(registry) => registry,
        Err(error) => {
            // One line, as for every other error of this command: a script
            // logging stderr gets one record. `check` lists them one by one.
            fail(stderr, &error.to_string())?;
            return Ok(Exit::Usage);
        }
    };
    let client = match registry.client(&args.client) {
        Ok(client) => client,
        Err(error) => {
            fail(stderr, &error.to_string())?;
            return Ok(Exit::for_kind(error.kind()));
        }
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

/// `authmux check`. The outer error is a failure to write the output.
fn check(
    config: Option<&Path>,
    stdout: &mut impl Write,
    stderr: &mut impl Write,
) -> io::Result<Exit> {
    // Building the registry is the part that catches a missing secret
    // variable or a bad URL; it sends nothing.
    let registry = match Config::load(config).and_then(|config| Registry::new(&config)) {
        Ok(registry) => registry,
        Err(error) => {
            report_problems(stderr, &error)?;
            return Ok(Exit::Usage);
        }
    };
    if registry.is_empty() {
        // With no file named, a missing ./authmux.toml reads as an empty
        // config; a check that passes on it would hide a wrong directory.
        let path = Config::path(config);
        fail(
            stderr,
            &format!("no clients configured (read {})", path.display()),
        )?;
        return Ok(Exit::Usage);
    }
    let name_width = registry.names().map(str::len).max().unwrap_or(0);
    let provider_width = registry
        .clients()
        .map(|client| client.provider().len())
        .max()
        .unwrap_or(0);
    for client in registry.clients() {
        writeln!(
            stdout,
            "{:name_width$}  {:provider_width$}  {}",
            one_line(client.name()),
            client.provider(),
            client.token_url(),
        )?;
    }
    stdout.flush()?;
    Ok(Exit::Success)
}

/// Writes every problem of `error` on its own line.
fn report_problems(stderr: &mut impl Write, error: &ConfigError) -> io::Result<()> {
    for problem in error.problems() {
        fail(stderr, problem)?;
    }
    Ok(())
}

/// Writes one error line.
fn fail(stderr: &mut impl Write, message: &str) -> io::Result<()> {
    writeln!(stderr, "authmux: {}", one_line(message))
}

/// `text` with line breaks and other control characters made spaces, so
/// that each message stays one line whatever a server or parser put in it.
fn one_line(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn config_is_accepted_before_or_after_the_subcommand() {
        for args in [
            ["authmux", "--config", "a.toml", "token", "api"],
            ["authmux", "token", "api", "--config", "a.toml"],
        ] {
            let cli = Cli::try_parse_from(args).expect("valid arguments");
            assert_eq!(cli.config.as_deref(), Some(Path::new("a.toml")));
            assert!(
                matches!(cli.command, Command::Token(TokenArgs { ref client, json: false }) if client == "api")
            );
        }
    }

    #[test]
    fn error_kinds_map_to_the_documented_exit_codes() {
        let cases = [
            (ErrorKind::Config, 2),
            (ErrorKind::Refused, 3),
            (ErrorKind::Transport, 4),
            (ErrorKind::Timeout, 4),
            (ErrorKind::RateLimited, 4),
            (ErrorKind::Server, 4),
            (ErrorKind::InvalidResponse, 4),
        ];
        for (kind, code) in cases {
            assert_eq!(Exit::for_kind(kind).code(), code, "{kind:?}");
        }
    }

    #[test]
    fn messages_are_kept_to_one_line() {
        assert_eq!(one_line("a\nb\r\tc"), "a b  c");
    }
}
