//! The `authmux` command line: prints the access token of a client named in
//! an [authmux] config file, for shell scripts, sends one request
//! authenticated with it, or checks such a file.
//!
//! ```text
//! $ authmux check --config authmux.toml
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
//! every place tried. `authmux check` lists the clients it could build and
//! reports, one line each, every problem, such as a client whose provider
//! this build lacks.
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
//! | 3 | the provider refused the token request (an OAuth error, HTTP 400/401/403) |
//! | 4 | any other failure to get a token: transport, timeout, rate limit, HTTP 5xx, an invalid response; or, for `request`, a failure to send the request or read its response |
//! | 5 | `request` only: the response's status was not 2xx (its body is still written) |
//!
//! Errors are written to stderr as one line starting with `authmux: `; they
//! name the client and provider and never contain a secret. The binary is a
//! thin shell around [`run`], so everything here can be driven from tests.
//!
//! [authmux]: https://github.com/authmux/authmux

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use authmux::middleware::Authenticate;
use authmux::{ConfigError, ErrorKind, ExposeSecret, Registry, Token};
use clap::{Args, Parser, Subcommand};
use reqwest_middleware::reqwest::header::{
    AUTHORIZATION, COOKIE, HeaderMap, HeaderName, HeaderValue, PROXY_AUTHORIZATION,
};
use reqwest_middleware::reqwest::{self, Method, StatusCode, Url};
use serde::Serialize;

mod store;

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
const TOKEN_EXAMPLES: &str = "\
Examples:
  authmux token api
  curl -H \"Authorization: Bearer $(authmux token api)\" https://api.example.com/things
  authmux token api --json | jq -r .expires_at
  authmux token api --no-store      # a new token, the store neither read nor written

Tokens are kept in $XDG_CACHE_HOME/authmux (else ~/.cache/authmux), so the
next run reuses the token until its refresh window.";

/// Shown under `authmux request --help`.
const REQUEST_EXAMPLES: &str = "\
Examples:
  authmux request api https://api.example.com/things
  authmux request api https://api.example.com/things -X POST \\
      -H 'Content-Type: application/json' -d '{\"name\":\"x\"}'
  authmux request api https://api.example.com/import -d @batch.json -v
  authmux request api https://api.example.com/slow --timeout 2m
  RUST_LOG=authmux=trace authmux request api https://api.example.com/things

The token is only sent over HTTPS, or over plain HTTP to a loopback host
(localhost, 127.0.0.0/8, ::1). A token rejected with a 401 is replaced and the
request sent once more. Redirects are not followed. No Content-Type is
added: give one with -H. An Authorization header given with -H is sent
as is, and no token is fetched. The whole command, token fetch included,
gives up after --timeout. Neither the token nor the secret is ever
printed, not even with -v or RUST_LOG.

Exit codes:
  0  the response's status was 2xx
  1  the output could not be written
  2  usage or configuration error (an unknown client included)
  3  the provider refused the token request
  4  no token for another reason, the request could not be sent or its
     response read, or --timeout ran out
  5  the response's status was not 2xx (its body is still printed)";

/// Shown under `authmux check --help`.
const CHECK_EXAMPLES: &str = "\
Examples:
  authmux check
  authmux check --config deploy/authmux.toml || exit 1

The last line names the token store and whether it can be reached.";

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

/// The arguments of `authmux request`, spelled like curl's.
#[derive(Debug, Args)]
pub struct RequestArgs {
    /// The client's name, as configured under clients.CLIENT.
    pub client: String,

    /// The URL to request: https://, or http:// to a loopback host.
    pub url: String,

    /// The HTTP method [default: GET, or POST with -d].
    #[arg(short = 'X', long = "request", value_name = "METHOD")]
    pub method: Option<String>,

    /// A request header, 'Name: value'; may be repeated.
    #[arg(short = 'H', long = "header", value_name = "NAME: VALUE")]
    pub headers: Vec<String>,

    /// The request body, or @FILE to send a file's bytes as they are.
    #[arg(
        short = 'd',
        long = "data",
        value_name = "BODY|@FILE",
        allow_hyphen_values = true
    )]
    pub data: Option<String>,

    /// Print the response's status line, such as `HTTP 200 OK`, and
    /// authmux's debug events (fetches, refreshes, retries) on stderr.
    #[arg(short, long)]
    pub verbose: bool,

    /// Give up after this long, token fetch included: "500ms", "30s", "2m".
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
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
    /// 2: a usage or configuration error, an unknown client included.
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
    let no_store = cli.no_store;
    let result = match &cli.command {
        Command::Token(args) => token(config, no_store, args, &mut stdout, &mut stderr).await,
        Command::Request(args) => request(config, no_store, args, &mut stdout, &mut stderr).await,
        Command::Check => check(config, no_store, &mut stdout, &mut stderr).await,
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
    no_store: bool,
    args: &TokenArgs,
    stdout: &mut impl Write,
    stderr: &mut impl Write,
) -> io::Result<Exit> {
    // Only this client is built: another client's problem (a secret
    // variable this script does not have, say) must not stop it.
    let registry = match store::load(config, no_store)
        .and_then(|loaded| Registry::with_client(&loaded, &args.client))
    {
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

/// What `authmux request` sends to the API.
const USER_AGENT: &str = concat!("authmux/", env!("CARGO_PKG_VERSION"));

/// `authmux request`. The outer error is a failure to write the output.
async fn request(
    config: Option<&Path>,
    no_store: bool,
    args: &RequestArgs,
    stdout: &mut impl Write,
    stderr: &mut impl Write,
) -> io::Result<Exit> {
    let outgoing = match Outgoing::from_args(args) {
        Ok(outgoing) => outgoing,
        Err(message) => {
            fail(stderr, &message)?;
            return Ok(Exit::Usage);
        }
    };
    let registry = match store::load(config, no_store)
        .and_then(|loaded| Registry::with_client(&loaded, &args.client))
    {
        Ok(registry) => registry,
        Err(error) => {
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
    let shown_url = shown(&outgoing.url);
    // The middleware would send such a request without a token, silently;
    // this command exists to send one, so say so instead.
    if !outgoing.headers.contains_key(AUTHORIZATION) && !token_may_go_to(&outgoing.url) {
        fail(
            stderr,
            &format!(
                "client {:?}: not sending its token over plain HTTP to {shown_url}; \
                 use https:// (http:// is for loopback hosts only)",
                client.name()
            ),
        )?;
        return Ok(Exit::Usage);
    }
    let http = match reqwest::Client::builder()
        .user_agent(USER_AGENT)
        // Like curl without -L: a redirect is the answer, and the token and
        // the DPoP proof never follow it to another place.
        .redirect(reqwest::redirect::Policy::none())
        .build()
    {
        Ok(http) => http,
        Err(error) => {
            fail(
                stderr,
                &format!("cannot set up the HTTP client: {}", chain(&error)),
            )?;
            return Ok(Exit::Unavailable);
        }
    };
    let http = reqwest_middleware::ClientBuilder::new(http)
        // Not followed by the middleware either: like curl without -L.
        .with(Authenticate::new(client.clone()).max_redirects(0))
        .build();
    let origin = outgoing.url.origin().ascii_serialization();
    let exchange = exchange(&http, client, outgoing, args.verbose, stdout, stderr);
    match tokio::time::timeout(args.timeout, exchange).await {
        Ok(result) => result,
        Err(_) => {
            stdout.flush()?;
            fail(
                stderr,
                &format!(
                    "client {:?} ({}): no complete answer from {origin} within {} (--timeout)",
                    client.name(),
                    client.provider(),
                    humantime::format_duration(args.timeout)
                ),
            )?;
            Ok(Exit::Unavailable)
        }
    }
}

/// Sends the request, token fetch included, and writes the response out.
async fn exchange(
    http: &reqwest_middleware::ClientWithMiddleware,
    client: &authmux::Client,
    outgoing: Outgoing,
    verbose: bool,
    stdout: &mut impl Write,
    stderr: &mut impl Write,
) -> io::Result<Exit> {
    let Outgoing {
        method,
        url,
        headers,
        body,
    } = outgoing;
    let mut builder = http.request(method, url.clone()).headers(headers);
    if let Some(body) = body {
        // Bytes in memory can be sent again, so a rejected token is retried.
        builder = builder.body(body);
    }
    let mut response = match builder.send().await {
        Ok(response) => response,
        Err(error) => {
            let (exit, message) = send_failure(client, error);
            fail(stderr, &message)?;
            return Ok(exit);
        }
    };
    let status = response.status();
    if verbose {
        writeln!(stderr, "{}", status_line(status))?;
    }
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => stdout.write_all(&chunk)?,
            Ok(None) => break,
            Err(error) => {
                stdout.flush()?;
                fail(
                    stderr,
                    &format!(
                        "client {:?}: reading the response from {} failed: {}",
                        client.name(),
                        url.origin().ascii_serialization(),
                        chain(&error.without_url())
                    ),
                )?;
                return Ok(Exit::Unavailable);
            }
        }
    }
    stdout.flush()?;
    Ok(if status.is_success() {
        Exit::Success
    } else {
        Exit::HttpStatus
    })
}

/// The request that `authmux request`'s arguments describe.
#[derive(Debug)]
struct Outgoing {
    method: Method,
    url: Url,
    headers: HeaderMap,
    body: Option<Vec<u8>>,
}

impl Outgoing {
    /// Checks the arguments and reads the body file, if any. The error is
    /// the message of a usage error; it never repeats a header's value.
    fn from_args(args: &RequestArgs) -> Result<Self, String> {
        let url = Url::parse(&args.url)
            .map_err(|error| format!("{:?} is not a URL: {error}", args.url))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(format!("{:?} is not an http:// or https:// URL", args.url));
        }
        let mut headers = HeaderMap::new();
        for (index, raw) in args.headers.iter().enumerate() {
            let (name, value) = parse_header(raw)
                .map_err(|problem| format!("-H number {}: {problem}", index + 1))?;
            headers.append(name, value);
        }
        let body = match args.data.as_deref() {
            None => None,
            Some(data) => Some(match data.strip_prefix('@') {
                Some(path) => std::fs::read(path)
                    .map_err(|error| format!("cannot read the -d file {path:?}: {error}"))?,
                None => data.as_bytes().to_vec(),
            }),
        };
        let method = match args.method.as_deref() {
            Some(method) => Method::from_bytes(method.as_bytes())
                .map_err(|_| format!("-X {method:?} is not an HTTP method"))?,
            // As curl does: data makes it a POST unless told otherwise.
            None if body.is_some() => Method::POST,
            None => Method::GET,
        };
        Ok(Self {
            method,
            url,
            headers,
            body,
        })
    }
}

/// Parses one `-H 'Name: value'`. The error leaves out the text given, which
/// may well be a credential with its colon missing.
fn parse_header(raw: &str) -> Result<(HeaderName, HeaderValue), String> {
    const EXPECTED: &str = "expected 'Name: value'";
    let (name, value) = raw
        .split_once(':')
        .ok_or_else(|| format!("no colon; {EXPECTED}"))?;
    let name = HeaderName::from_bytes(name.trim().as_bytes())
        .map_err(|_| format!("not a valid header name; {EXPECTED}"))?;
    let mut value = HeaderValue::from_str(value.trim())
        .map_err(|_| format!("the value of {name} is not a valid header value"))?;
    if [AUTHORIZATION, PROXY_AUTHORIZATION, COOKIE].contains(&name) {
        value.set_sensitive(true);
    }
    Ok((name, value))
}

/// Whether [`Authenticate::new`] attaches the token to `url`: HTTPS, or a
/// loopback host.
fn token_may_go_to(url: &Url) -> bool {
    url.scheme() == "https" || authmux::core::wire::is_loopback(url)
}

/// `url` as messages show it: without user info, query or fragment, which
/// may carry credentials of their own.
fn shown(url: &Url) -> String {
    format!("{}{}", url.origin().ascii_serialization(), url.path())
}

/// The exit and the message for a request that got no response. A
/// transport failure names the API's origin and the cause, never the path
/// or query, which may carry credentials.
fn send_failure(client: &authmux::Client, error: reqwest_middleware::Error) -> (Exit, String) {
    let error = match error {
        // The middleware's own failures: above all, no token to be had.
        reqwest_middleware::Error::Middleware(error) => {
            match error.downcast_ref::<authmux::Error>() {
                Some(error) => error.clone(),
                None => {
                    return (
                        Exit::Unavailable,
                        format!("client {:?}: {error:#}", client.name()),
                    );
                }
            }
        }
        reqwest_middleware::Error::Reqwest(error) => authmux::core::wire::transport_error(error),
    };
    let name: std::sync::Arc<str> = std::sync::Arc::from(client.name());
    let error = error.with_client(&name).with_provider(client.provider());
    (Exit::for_kind(error.kind()), error.to_string())
}

/// `HTTP 200 OK`, or `HTTP 599` for a status without a standard reason.
fn status_line(status: StatusCode) -> String {
    match status.canonical_reason() {
        Some(reason) => format!("HTTP {} {reason}", status.as_u16()),
        None => format!("HTTP {}", status.as_u16()),
    }
}

/// `error` and its sources, joined by `: `.
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        // Some errors repeat their source in their own message.
        if !text.ends_with(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// `authmux check`. The outer error is a failure to write the output.
async fn check(
    config: Option<&Path>,
    no_store: bool,
    stdout: &mut impl Write,
    stderr: &mut impl Write,
) -> io::Result<Exit> {
    // Building the registry is the part that catches a missing secret
    // variable or a bad URL; it sends nothing.
    let built = store::load(config, no_store)
        .and_then(|loaded| Registry::new(&loaded).map(|registry| (loaded, registry)));
    let (loaded, registry) = match built {
        Ok(built) => built,
        Err(error) => {
            report_problems(stderr, &error)?;
            return Ok(Exit::Usage);
        }
    };
    if registry.is_empty() && registry.unavailable().next().is_none() {
        // A file was read (a missing one is an error that names the paths
        // tried), but a check that passes on no client would hide a mistake.
        let message = match loaded.file() {
            Some(file) => format!("no clients configured in {}", file.display()),
            None => "no clients configured".to_owned(),
        };
        fail(stderr, &message)?;
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
    // A store that cannot be reached costs sharing, not tokens: reported,
    // but the check still passes.
    match store::describe(&registry).await {
        Ok(line) => writeln!(stdout, "{line}")?,
        Err(problem) => fail(stderr, &problem)?,
    }
    stdout.flush()?;
    // A client this build cannot serve is reported for itself; the others
    // are listed above.
    let mut exit = Exit::Success;
    for (name, error) in registry.unavailable() {
        fail(
            stderr,
            &format!("clients.{name}.provider: {}", error.message()),
        )?;
        exit = Exit::Usage;
    }
    Ok(exit)
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

    fn request_args(args: &[&str]) -> RequestArgs {
        let cli = Cli::try_parse_from(["authmux", "request"].iter().chain(args))
            .expect("valid arguments");
        match cli.command {
            Command::Request(args) => args,
            command => panic!("not a request: {command:?}"),
        }
    }

    #[test]
    fn request_parses_curl_style_options() {
        let args = request_args(&[
            "api",
            "https://api.example.com/x",
            "-X",
            "PUT",
            "-H",
            "A: 1",
            "--header",
            "B:2",
            "-d",
            "-5",
            "-v",
            "--timeout",
            "2m 5s",
        ]);
        assert_eq!(args.client, "api");
        assert_eq!(args.url, "https://api.example.com/x");
        assert_eq!(args.method.as_deref(), Some("PUT"));
        assert_eq!(args.headers, ["A: 1", "B:2"]);
        assert_eq!(
            args.data.as_deref(),
            Some("-5"),
            "data may start with a dash"
        );
        assert!(args.verbose);
        assert_eq!(args.timeout, Duration::from_secs(125));
        let defaults = request_args(&["api", "https://api.example.com/x"]);
        assert_eq!(defaults.timeout, Duration::from_secs(30));
        assert!(!defaults.verbose);
    }

    #[test]
    fn the_method_is_get_or_post_with_data_unless_given() {
        let method = |args: &[&str]| {
            Outgoing::from_args(&request_args(args))
                .expect("valid request")
                .method
        };
        assert_eq!(method(&["api", "https://a.example"]), Method::GET);
        assert_eq!(
            method(&["api", "https://a.example", "-d", ""]),
            Method::POST
        );
        assert_eq!(
            method(&["api", "https://a.example", "-d", "x", "-X", "PUT"]),
            Method::PUT
        );
        assert_eq!(
            method(&["api", "https://a.example", "-X", "PATCH"]),
            Method::PATCH
        );
    }

    #[test]
    fn headers_are_parsed_and_repeated_names_kept() {
        let outgoing = Outgoing::from_args(&request_args(&[
            "api",
            "https://a.example",
            "-H",
            "X-Trace:  1 ",
            "-H",
            "Accept: a/b",
            "-H",
            "accept: c/d",
            "-H",
            "X-Empty:",
        ]))
        .expect("valid request");
        assert_eq!(outgoing.headers["x-trace"], "1");
        let accept: Vec<_> = outgoing.headers.get_all("accept").iter().collect();
        assert_eq!(accept, ["a/b", "c/d"]);
        assert_eq!(outgoing.headers["x-empty"], "");
    }

    #[test]
    fn a_credential_in_a_header_is_marked_sensitive() {
        let (name, value) = parse_header("Authorization: Bearer abc").expect("valid");
        assert_eq!(name, AUTHORIZATION);
        assert!(value.is_sensitive());
        let (_, value) = parse_header("X-Trace: 1").expect("valid");
        assert!(!value.is_sensitive());
    }

    #[test]
    fn malformed_requests_are_usage_errors_that_do_not_echo_header_values() {
        for (args, expected) in [
            (vec!["api", "not a url"], "not a URL"),
            (vec!["api", "ftp://a.example/x"], "http:// or https://"),
            (
                vec!["api", "https://a.example", "-X", "GE T"],
                "HTTP method",
            ),
            (
                vec!["api", "https://a.example", "-H", "Bearer s3cr3t"],
                "-H number 1: no colon",
            ),
            (
                vec![
                    "api",
                    "https://a.example",
                    "-H",
                    "A: 1",
                    "-H",
                    "Bad Name s3cr3t: x",
                ],
                "-H number 2: not a valid header name",
            ),
            (
                vec!["api", "https://a.example", "-H", "X-Key: s3cr3t\u{7f}"],
                "the value of x-key",
            ),
        ] {
            let error = Outgoing::from_args(&request_args(&args)).expect_err("malformed");
            assert!(error.contains(expected), "{args:?}: {error}");
            assert!(!error.contains("s3cr3t"), "{args:?}: {error}");
        }
    }

    #[test]
    fn the_token_only_goes_over_https_or_to_loopback() {
        for (url, allowed) in [
            ("https://api.example.com/x", true),
            ("http://127.0.0.1:8080/x", true),
            ("http://localhost/x", true),
            ("http://[::1]/x", true),
            ("http://api.attacker.localhost/x", false),
            ("http://api.example.com/x", false),
            ("http://10.0.0.1/x", false),
        ] {
            let url = Url::parse(url).expect("a URL");
            assert_eq!(token_may_go_to(&url), allowed, "{url}");
        }
    }

    #[test]
    fn urls_in_messages_leave_out_credentials_and_queries() {
        let url =
            Url::parse("https://user:pw@api.example.com:8443/a/b?key=s3cr3t#f").expect("a URL");
        assert_eq!(shown(&url), "https://api.example.com:8443/a/b");
    }

    #[test]
    fn status_lines_carry_the_reason_when_there_is_one() {
        assert_eq!(status_line(StatusCode::OK), "HTTP 200 OK");
        assert_eq!(status_line(StatusCode::NOT_FOUND), "HTTP 404 Not Found");
        let odd = StatusCode::from_u16(599).expect("a status");
        assert_eq!(status_line(odd), "HTTP 599");
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
