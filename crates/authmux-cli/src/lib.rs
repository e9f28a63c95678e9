//! The `authmux` command line: prints the access token of a client named in
//! an [authmux] config file, for shell scripts, sends one request
//! authenticated with it, or checks such a file.
//!
//! ```text
//! $ authmux check --config authmux.toml
//! file  authmux.toml
//! api        auth0       https://tenant.eu.auth0.com/oauth/token
//! referrals  mention-me  https://demo.mention-me.com/api/oauth/token
//! $ curl -H "Authorization: Bearer $(authmux token api)" https://api.example.com/things
//! $ authmux token referrals --json
//! {"client":"referrals","provider":"mention-me","token_type":"Bearer",…}
//! $ authmux request api https://api.example.com/things --timeout 10s
//! [{"id":1}]
//! ```
//!
//! `authmux request` sends the request through
//! [`authmux::middleware::Authenticate`]: the token goes in `Authorization`
//! (with a DPoP proof when the token is DPoP-bound), the provider's API
//! headers are added, and a 401 that rejects the token is retried once with a
//! fresh one. The response body is written to stdout byte for byte. The
//! token only goes over HTTPS or to a loopback host (another `http://` URL
//! is a usage error), and redirects are not followed. The whole command,
//! token fetch included, has `--timeout` (30 s unless given); running out of
//! it exits 4.
//!
//! # Token store
//!
//! `authmux token` and `authmux request` keep tokens in a file store,
//! `$XDG_CACHE_HOME/authmux` (else `~/.cache/authmux`): a directory of mode
//! 0700 holding files of mode 0600, plaintext unless the config's
//! `[store]` gives an `encryption_key`. A second run reuses the token until
//! its refresh window, and parallel runs make one token request between
//! them. A `[store]` table in the config chooses another store (`kind =
//! "redis"`) or none (`kind = "none"`); `--no-store` bypasses it for one
//! run, and `store = false` for one client. `authmux check` shows the store
//! and whether it can be reached.
//!
//! # Logging
//!
//! `-v` on `authmux request` prints the response's status line and turns on
//! authmux's debug events (token fetches, refreshes, retries) on stderr;
//! `RUST_LOG` (`RUST_LOG=authmux=debug`, say) does so for any command. The
//! events never carry a secret or a token, nor a header.
//!
//! The config file is `--config FILE`, else `$AUTHMUX_CONFIG`, else
//! `./authmux.toml`; `AUTHMUX_CLIENTS__<NAME>__<KEY>` variables override it.
//! Without `--config` and `$AUTHMUX_CONFIG`, a missing `./authmux.toml` is
//! fine when the variables configure a client; otherwise the error names
//! every place tried. `authmux check` names the file, lists every client
//! with its token endpoint or what stops it (a missing secret variable, a
//! provider this build lacks), shows the store, and reports every problem
//! on stderr, one line each.
//!
//! # Exit codes
//!
//! Scripts branch on these, so each [`Exit`] variant is a stable number:
//!
//! | code | meaning |
//! |---|---|
//! | 0 | success |
//! | 1 | the output could not be written (a closed pipe) |
//! | 2 | a usage or configuration error, an unknown client and an issuer without metadata included; a workload identity token (`client_assertion`, `assertion`, `subject_token`) that cannot be read or has expired |
//! | 3 | the provider refused the token request (an OAuth error, HTTP 400/401/403) |
//! | 4 | any other failure to get a token: transport, timeout, rate limit, HTTP 5xx, an invalid response, an issuer's metadata unavailable; or, for `request`, a failure to send the request or read its response |
//! | 5 | `request` only: the response's status was not 2xx (its body is still written) |
//!
//! Errors are written to stderr as one line starting with `authmux: `; they
//! name the client and provider and never contain a secret. The binary is a
//! thin shell around [`run`], so everything here can be driven from tests.
//!
//! [authmux]: https://github.com/authmux/authmux

use std::io::{self, Write};
use std::path::PathBuf;
use std::process::ExitCode;

mod commands;
mod store;

pub use commands::check::CheckArgs;
pub use commands::completions::CompletionsArgs;
pub use commands::request::RequestArgs;
pub use commands::token::{TokenArgs, TokenJson};

use commands::check::{CHECK_EXAMPLES, check};
use commands::request::{REQUEST_EXAMPLES, request};
use commands::token::{TOKEN_EXAMPLES, token};

use authmux::ErrorKind;
use clap::{Parser, Subcommand};

/// Shown under `authmux --help`.
const MAIN_EXAMPLES: &str = "\
Examples:
  authmux check --config authmux.toml
  curl -H \"Authorization: Bearer $(authmux token api)\" https://api.example.com/things
  authmux token api --json --config /etc/authmux.toml
  authmux request api https://api.example.com/things

Exit codes:
  0  success
  1  the output could not be written
  2  usage or configuration error (an unknown client included)
  3  the provider refused the token request (OAuth error, HTTP 400/401/403)
  4  transport, timeout, rate limit, HTTP 5xx or an invalid response
     (for request: also a failure to send the request or read its response)
  5  request: the response's HTTP status was not 2xx";

/// Shown under `authmux token --help`.
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

    /// Neither read nor write the token store: fetch a new token.
    #[arg(long, global = true)]
    pub no_store: bool,

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
    /// Send one request authenticated with a client's token; print the
    /// response body on stdout.
    #[command(after_help = REQUEST_EXAMPLES)]
    Request(RequestArgs),
    /// Check the config and list its clients with their token endpoints;
    /// reads each issuer's metadata and pings the token store.
    #[command(after_help = CHECK_EXAMPLES)]
    Check(CheckArgs),
    /// Print a shell completion script on stdout.
    Completions(CompletionsArgs),
}

/// Sends log events to stderr: those `RUST_LOG` selects, and with `-v` on
/// `authmux request`, authmux's own at debug level. Without either nothing is
/// logged, so an error stays the one line on stderr. Does nothing if a
/// global subscriber is set already.
pub fn init_logging(cli: &Cli) {
    use tracing_subscriber::EnvFilter;
    use tracing_subscriber::filter::LevelFilter;

    let verbose = matches!(&cli.command, Command::Request(args) if args.verbose);
    let mut filter = EnvFilter::builder()
        .with_default_directive(LevelFilter::OFF.into())
        .from_env_lossy();
    if verbose {
        // Every authmux crate's target starts with "authmux".
        if let Ok(directive) = "authmux=debug".parse() {
            filter = filter.add_directive(directive);
        }
    }
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(io::stderr)
        .try_init();
}

/// How the process ends. The numbers are part of the command line's
/// contract; see the [crate documentation](crate#exit-codes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// 0: the command did what was asked.
    Success = 0,
    /// 1: the output could not be written, typically to a closed pipe.
    Output = 1,
    /// 2: a usage or configuration error, an unknown client included, or
    /// the client's own credential (a workload identity token) that cannot
    /// be read or has expired.
    Usage = 2,
    /// 3: the provider refused the request.
    Refused = 3,
    /// 4: no token for any other reason: transport, timeout, rate limit,
    /// server error or an invalid response; for `authmux request`, also a
    /// failure to send the request or to read its response.
    Unavailable = 4,
    /// 5: `authmux request` got a response whose status was not 2xx.
    HttpStatus = 5,
}

impl Exit {
    /// The process exit code.
    pub fn code(self) -> u8 {
        self as u8
    }

    /// The exit for a failed token request of this kind.
    pub fn for_kind(kind: ErrorKind) -> Self {
        match kind {
            // A workload's own credential that cannot be read or has
            // expired is, like a secret variable that is not set, the
            // setup's to fix.
            ErrorKind::Config | ErrorKind::Credential => Self::Usage,
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

/// Runs a parsed command line, writing its output to `stdout` and its
/// errors to `stderr`, and returns how the process should exit.
///
/// Needs a tokio runtime with I/O and time enabled; one thread is enough.
pub async fn run(cli: Cli, mut stdout: impl Write, mut stderr: impl Write) -> Exit {
    let config = cli.config.as_deref();
    let no_store = cli.no_store;
    let result = match &cli.command {
        Command::Token(args) => token(config, no_store, args, &mut stdout, &mut stderr).await,
        Command::Request(args) => request(config, no_store, args, &mut stdout, &mut stderr).await,
        Command::Check(args) => check(config, no_store, args, &mut stdout, &mut stderr).await,
        Command::Completions(args) => commands::completions::completions(args, &mut stdout),
    };
    // Give the fleet's lease back and tell it of a stored or rejected
    // token before exiting; each piece is bounded by the store's timeout.
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        authmux::core::store::settle(),
    )
    .await;
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

/// Writes one error line.
pub(crate) fn fail(stderr: &mut impl Write, message: &str) -> io::Result<()> {
    writeln!(stderr, "authmux: {}", one_line(message))
}

/// `text` with line breaks and other control characters made spaces, so
/// that each message stays one line whatever a server or parser put in it.
pub(crate) fn one_line(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;
    use std::path::Path;

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
            (ErrorKind::Discovery, 4),
        ];
        for (kind, code) in cases {
            assert_eq!(Exit::for_kind(kind).code(), code, "{kind:?}");
        }
    }

    #[test]
    fn a_non_2xx_status_has_its_own_exit_code() {
        assert_eq!(Exit::HttpStatus.code(), 5);
    }

    #[test]
    fn messages_are_kept_to_one_line() {
        assert_eq!(one_line("a\nb\r\tc"), "a b  c");
    }
}
