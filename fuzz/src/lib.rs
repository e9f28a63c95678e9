//! Helpers shared by the fuzz targets: a plain-text response format that
//! the seed corpora are written in, the secrets the targets register, and
//! the checks every target makes on what it gets back.

use std::time::Duration;

use authmux_core::scrub::Scrubber;
use authmux_core::wire::{HeaderMap, HeaderName, HeaderValue};
use authmux_core::{Error, SecretString, Token};

/// The client secret every target registers with its scrubber. Its raw
/// form must never reach an error's text. It has no space, `:`, `"` or
/// `\`, so it cannot be formed by the text an error puts around the
/// server's words or by `Debug` escapes.
pub const SECRET: &str = "s3cr3t/V\u{e4}lue+42&x=";

/// The client id registered with [`SECRET`] as an HTTP Basic credential.
pub const CLIENT_ID: &str = "fuzz-client";

/// The lifetime assumed when a response gives none.
pub const DEFAULT_LIFETIME: Duration = Duration::from_secs(300);

/// A scrubber that knows [`SECRET`], alone and as a Basic credential.
pub fn scrubber() -> Scrubber {
    let mut scrubber = Scrubber::new();
    scrubber.register_basic(CLIENT_ID, &SecretString::from(SECRET.to_owned()));
    scrubber
}

/// A response written as text: a status line, header lines up to an empty
/// line, then the body.
///
/// ```text
/// HTTP/1.1 429
/// Retry-After: 30
///
/// {"error":"too_many_requests"}
/// ```
///
/// The status is the first number on the first line after the version
/// (200 if none, as a `u16` with wrap-around so that every value can be
/// reached); a header line is `name: value`, and one that is not a valid
/// header is skipped.
/// Lines may end with `\n` or `\r\n`.
pub struct RawResponse {
    /// The status.
    pub status: u16,
    /// The headers, in order.
    pub headers: HeaderMap,
    /// The body, every byte after the empty line.
    pub body: Vec<u8>,
}

impl RawResponse {
    /// Reads `data`; never fails.
    pub fn parse(data: &[u8]) -> Self {
        let mut lines = Lines { rest: data };
        let status = lines.next().map_or(200, status);
        let mut headers = HeaderMap::new();
        for line in lines.by_ref() {
            if line.is_empty() {
                break;
            }
            if let Some((name, value)) = header(line) {
                headers.append(name, value);
            }
        }
        Self {
            status,
            headers,
            body: lines.rest.to_vec(),
        }
    }
}

/// Splits on `\n`, dropping a `\r` before it; `rest` is what is left.
struct Lines<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for Lines<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        if self.rest.is_empty() {
            return None;
        }
        let (line, rest) = match self.rest.iter().position(|&byte| byte == b'\n') {
            Some(end) => (&self.rest[..end], &self.rest[end + 1..]),
            None => (self.rest, &[][..]),
        };
        self.rest = rest;
        Some(line.strip_suffix(b"\r").unwrap_or(line))
    }
}

/// The first run of digits on the status line after an `HTTP/…` version,
/// wrapped into a `u16`.
fn status(line: &[u8]) -> u16 {
    let line = match line.strip_prefix(b"HTTP/") {
        Some(rest) => rest
            .iter()
            .position(|&byte| byte == b' ')
            .map_or(&[][..], |space| &rest[space..]),
        None => line,
    };
    let mut digits = line
        .iter()
        .skip_while(|byte| !byte.is_ascii_digit())
        .take_while(|byte| byte.is_ascii_digit())
        .peekable();
    if digits.peek().is_none() {
        return 200;
    }
    digits.fold(0u16, |status, digit| {
        status
            .wrapping_mul(10)
            .wrapping_add(u16::from(digit - b'0'))
    })
}

/// `name: value`, if both make a valid header.
fn header(line: &[u8]) -> Option<(HeaderName, HeaderValue)> {
    let colon = line.iter().position(|&byte| byte == b':')?;
    let name = HeaderName::from_bytes(line[..colon].trim_ascii()).ok()?;
    let value = HeaderValue::from_bytes(line[colon + 1..].trim_ascii()).ok()?;
    Some((name, value))
}

/// Checks that nothing the caller may log or show carries [`SECRET`]: the
/// error's `Display` and `Debug`, and its OAuth fields.
pub fn assert_no_secret(error: &Error) {
    let display = error.to_string();
    let debug = format!("{error:?}");
    for text in [display.as_str(), debug.as_str()] {
        assert!(
            !text.contains(SECRET),
            "the client secret reached an error: {display}"
        );
    }
    assert!(
        !display.contains('\n') && !display.contains('\r'),
        "an error is one line: {display:?}"
    );
}

/// Checks what holds for every token a response gives: a usable lifetime,
/// not expired on arrival, and an `Authorization` value in its scheme.
pub fn check_token(token: &Token) {
    let lifetime = token.lifetime();
    assert!(
        lifetime >= authmux_core::wire::MIN_LIFETIME,
        "a token with no usable lifetime: {lifetime:?}"
    );
    assert!(
        lifetime <= authmux_core::token::MAX_LIFETIME,
        "a lifetime past the cap: {lifetime:?}"
    );
    assert!(!token.is_expired(), "a token expired on arrival");
    assert!(token.authorization().is_sensitive());
    let scheme = token.token_type().scheme();
    assert!(
        token
            .authorization()
            .as_bytes()
            .starts_with(format!("{scheme} ").as_bytes()),
        "the Authorization value starts with its scheme"
    );
    let _ = token.scopes().count();
    let _ = token.is_jwt();
    let _ = format!("{token:?}");
}

/// Reads every accessor of an error, as a caller deciding what to do would.
pub fn inspect_error(error: &Error) {
    let _ = (
        error.kind(),
        error.is_transient(),
        error.status(),
        error.oauth_code(),
        error.oauth_description(),
        error.retry_after(),
        error.rate_limit(),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_text_format_reads_status_headers_and_body() {
        let response = RawResponse::parse(
            b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 30\r\nbad header\r\nX-A: 1\r\n\r\n{\"error\":\"x\"}\n",
        );
        assert_eq!(response.status, 429);
        assert_eq!(response.headers.len(), 2);
        assert_eq!(response.headers["retry-after"], "30");
        assert_eq!(response.body, b"{\"error\":\"x\"}\n");
        assert_eq!(RawResponse::parse(b"").status, 200);
        assert_eq!(RawResponse::parse(b"HTTP 65537").status, 1);
        assert_eq!(RawResponse::parse(b"HTTP/2 503\n\n").status, 503);
        assert_eq!(RawResponse::parse(b"HTTP/1.1\n\n").status, 200);
        assert_eq!(RawResponse::parse(b"302\nLocation: /x\n").status, 302);
    }
}
