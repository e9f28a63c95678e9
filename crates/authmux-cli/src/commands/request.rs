//! `authmux request`: one request authenticated with a client's token.

use std::io::{self, Write};
use std::path::Path;
use std::time::Duration;

use authmux::middleware::Authenticate;

use clap::Args;
use reqwest_middleware::reqwest::header::{
    AUTHORIZATION, COOKIE, HeaderMap, HeaderName, HeaderValue, PROXY_AUTHORIZATION,
};
use reqwest_middleware::reqwest::{self, Method, StatusCode, Url};

use crate::{Exit, fail};

pub(crate) const REQUEST_EXAMPLES: &str = "\
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

/// What `authmux request` sends to the API.
const USER_AGENT: &str = concat!("authmux/", env!("CARGO_PKG_VERSION"));

/// `authmux request`. The outer error is a failure to write the output.
pub(crate) async fn request(
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
    let client = match super::load_client(config, no_store, &args.client, stderr)? {
        Ok(client) => client,
        Err(exit) => return Ok(exit),
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
    let exchange = exchange(&http, &client, outgoing, args.verbose, stdout, stderr);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Cli, Command};
    use clap::Parser as _;

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
}
