//! The one scrubber of server-supplied text.
//!
//! A token request registers every secret it carries once, in a
//! [`Scrubber`]; every piece of text a server sends back (an
//! `error_description`, a body snippet, an HTML page, a `Location` header)
//! then passes through [`Scrubber::scrub`] before it reaches an error, and
//! so a log line.
//!
//! A server may echo a secret in many shapes. The scrubber recognises each
//! character of a secret written raw or in any of the encodings a server
//! applies when it quotes a request:
//!
//! * form and URL encoding: `%XX` of each UTF-8 byte in either case, a space
//!   as `+` or `%20` (so the WHATWG form, Python's `quote_plus` and
//!   `encodeURIComponent` shapes all match);
//! * JSON string escapes: `\"`, `\\`, `\/`, `\n`, … and `\uXXXX`, surrogate
//!   pairs included (serde's, PHP's and Python's `ensure_ascii` shapes);
//! * HTML character references: `&amp;`, `&quot;`, `&#39;`, `&#x27;`, ….
//!
//! An HTTP Basic credential is registered with
//! [`Scrubber::register_basic`]: the secret itself and the base64 of
//! `id:secret` with each part raw or form-encoded (RFC 6749 §2.3.1), which
//! also covers the whole `Basic …` header value.

use std::fmt;
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use secrecy::{ExposeSecret, SecretString};

use crate::error::MAX_SERVER_TEXT;

/// What replaces a secret in server text.
pub const REDACTED: &str = "[redacted]";

/// The secrets of one request and the one function that removes them, in
/// any echoed shape, from server text. See the [module docs](self).
///
/// Cloning is cheap. `Debug` shows how many values are registered, never
/// what they are.
#[derive(Clone, Default)]
pub struct Scrubber {
    secrets: Arc<Vec<SecretString>>,
}

impl fmt::Debug for Scrubber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Scrubber")
            .field("secrets", &self.secrets.len())
            .finish()
    }
}

impl Scrubber {
    /// A scrubber that knows no secret yet: it still makes text one line
    /// and cuts it short.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers a secret sent with a request, such as a `client_secret` or
    /// a `client_assertion`. Every encoded shape of it is scrubbed too.
    /// Empty values are ignored.
    pub fn register(&mut self, secret: &SecretString) {
        self.add(secret.expose_secret());
    }

    /// Registers an HTTP Basic credential: the secret, and the base64 of
    /// `client_id:client_secret` with each part raw or form-encoded, which
    /// is what the `Basic …` header value carries.
    pub fn register_basic(&mut self, client_id: &str, client_secret: &SecretString) {
        let secret = client_secret.expose_secret();
        self.add(secret);
        let form =
            |part: &str| form_urlencoded::byte_serialize(part.as_bytes()).collect::<String>();
        for id in [client_id.to_owned(), form(client_id)] {
            for secret in [secret.to_owned(), form(secret)] {
                let credential = format!("{id}:{secret}");
                self.add(&STANDARD.encode(&credential));
                // An echo that drops the `=` padding matches too.
                self.add(&STANDARD_NO_PAD.encode(&credential));
            }
        }
    }

    fn add(&mut self, value: &str) {
        if value.is_empty()
            || self
                .secrets
                .iter()
                .any(|known| known.expose_secret() == value)
        {
            return;
        }
        let secrets = Arc::make_mut(&mut self.secrets);
        secrets.push(SecretString::from(value.to_owned()));
        // Held per client for as long as it lives: no spare capacity.
        secrets.shrink_to_fit();
    }

    /// Whether no secret is registered.
    pub fn is_empty(&self) -> bool {
        self.secrets.is_empty()
    }

    /// Makes server-supplied text safe for a one-line message: every
    /// registered secret, in any shape, becomes `[redacted]`, control
    /// characters become spaces, and the result is cut to
    /// [`MAX_SERVER_TEXT`] characters. Secrets are looked for in the text
    /// as sent, so none is left half in by the cut, and the text past the
    /// cut is never searched.
    pub fn scrub(&self, text: &str) -> String {
        let text = text.trim();
        let mut cut = Cut::default();
        let mut at = 0;
        while let Some(c) = text[at..].chars().next() {
            let kept = match self.echo_at(&text[at..]) {
                Some(len) => {
                    at += len;
                    REDACTED.chars().all(|piece| cut.push(piece))
                }
                None => {
                    at += c.len_utf8();
                    cut.push(if c.is_control() { ' ' } else { c })
                }
            };
            if !kept {
                cut.out.push('…');
                break;
            }
        }
        cut.out
    }

    /// The length of the longest echo of any registered secret at the
    /// start of `text`.
    fn echo_at(&self, text: &str) -> Option<usize> {
        self.secrets
            .iter()
            .filter_map(|secret| echo_len(text, secret.expose_secret()))
            .max()
    }
}

/// Text being cut to [`MAX_SERVER_TEXT`] characters.
#[derive(Default)]
struct Cut {
    out: String,
    kept: usize,
}

impl Cut {
    /// Appends `c`, unless the text is full.
    fn push(&mut self, c: char) -> bool {
        if self.kept == MAX_SERVER_TEXT {
            return false;
        }
        self.out.push(c);
        self.kept += 1;
        true
    }
}

/// The length of the longest echo of `secret` at the start of `text`, if
/// there is one. Each character may be written in several ways, some of
/// them prefixes of others, so every place an echo may have reached so far
/// is followed at once.
fn echo_len(text: &str, secret: &str) -> Option<usize> {
    let first = secret.chars().next()?;
    if !may_start(text, first) {
        return None;
    }
    let mut reached = vec![0];
    let mut next = Vec::new();
    for c in secret.chars() {
        next.clear();
        for &at in &reached {
            each_form(&text[at..], c, |len| {
                if !next.contains(&(at + len)) {
                    next.push(at + len);
                }
            });
        }
        if next.is_empty() {
            return None;
        }
        std::mem::swap(&mut reached, &mut next);
    }
    reached.into_iter().max()
}

/// A cheap test that rules out most places before [`each_form`] runs.
fn may_start(text: &str, c: char) -> bool {
    match text.as_bytes().first() {
        Some(b'%' | b'\\' | b'&' | b'+') => true,
        Some(_) => text.starts_with(c),
        None => false,
    }
}

/// Calls `found` with the length of each way `text` begins with `c`: raw,
/// percent-encoded, `+` for a space, a JSON escape or an HTML reference.
/// Every length ends on a character boundary.
fn each_form(text: &str, c: char, mut found: impl FnMut(usize)) {
    if text.starts_with(c) {
        found(c.len_utf8());
    }
    let bytes = text.as_bytes();
    match bytes.first() {
        Some(b'+') if c == ' ' => found(1),
        Some(b'%') => {
            let mut utf8 = [0; 4];
            let utf8 = c.encode_utf8(&mut utf8).as_bytes();
            let all = utf8.iter().enumerate().all(|(index, byte)| {
                let at = index * 3;
                bytes.get(at) == Some(&b'%')
                    && hex(bytes.get(at + 1..at + 3)) == Some(u32::from(*byte))
            });
            if all {
                found(utf8.len() * 3);
            }
        }
        Some(b'\\') => {
            let short = match c {
                '"' => Some(b'"'),
                '\\' => Some(b'\\'),
                '/' => Some(b'/'),
                '\u{8}' => Some(b'b'),
                '\u{c}' => Some(b'f'),
                '\n' => Some(b'n'),
                '\r' => Some(b'r'),
                '\t' => Some(b't'),
                _ => None,
            };
            if short.is_some() && bytes.get(1) == short.as_ref() {
                found(2);
            }
            let mut units = [0; 2];
            let units = c.encode_utf16(&mut units);
            let all = units.iter().enumerate().all(|(index, unit)| {
                let at = index * 6;
                bytes.get(at..at + 2) == Some(b"\\u".as_slice())
                    && hex(bytes.get(at + 2..at + 6)) == Some(u32::from(*unit))
            });
            if all {
                found(units.len() * 6);
            }
        }
        Some(b'&') => {
            if let Some(len) = html_reference(text, c) {
                found(len);
            }
        }
        _ => {}
    }
}

/// The length of an HTML character reference to `c` at the start of
/// `text`: `&amp;`, `&#38;` or `&#x26;`, say.
fn html_reference(text: &str, c: char) -> Option<usize> {
    let end = text.bytes().take(12).position(|byte| byte == b';')?;
    let name = &text[1..end];
    let named = match c {
        '&' => "amp",
        '<' => "lt",
        '>' => "gt",
        '"' => "quot",
        '\'' => "apos",
        _ => "",
    };
    let matches = if let Some(number) = name.strip_prefix('#') {
        let code = match number.strip_prefix(['x', 'X']) {
            Some(hex_digits) => u32::from_str_radix(hex_digits, 16).ok(),
            None => number.parse::<u32>().ok(),
        };
        code == Some(u32::from(c))
    } else {
        !named.is_empty() && name.eq_ignore_ascii_case(named)
    };
    matches.then_some(end + 1)
}

/// The value of hexadecimal digits, in either case.
fn hex(digits: Option<&[u8]>) -> Option<u32> {
    let digits = std::str::from_utf8(digits?).ok()?;
    if digits.bytes().all(|byte| byte.is_ascii_hexdigit()) {
        u32::from_str_radix(digits, 16).ok()
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "p@ss w/rd\"+é&1";

    fn scrubber() -> Scrubber {
        let mut scrubber = Scrubber::new();
        scrubber.register_basic("my id", &SecretString::from(SECRET.to_owned()));
        scrubber
    }

    #[test]
    fn every_echoed_shape_is_scrubbed() {
        let json_escaped = serde_json::to_string(SECRET).expect("JSON");
        let json_escaped = &json_escaped[1..json_escaped.len() - 1];
        let shapes = [
            SECRET.to_owned(),
            // WHATWG form encoding, as serde_urlencoded writes it.
            form_urlencoded::byte_serialize(SECRET.as_bytes()).collect(),
            // The same with %20 for the space.
            "p%40ss%20w%2Frd%22%2B%C3%A9%261".to_owned(),
            // Lower-case hex.
            "p%40ss+w%2frd%22%2b%c3%a9%261".to_owned(),
            // Python's quote_plus.
            "p%40ss+w%2Frd%22%2B%C3%A9%261".to_owned(),
            json_escaped.to_owned(),
            // PHP's json_encode: escaped slash, \u escapes.
            r#"p@ss w\/rd\"+\u00e9&1"#.to_owned(),
            // Python's json.dumps with ensure_ascii.
            r#"p@ss w/rd\"+\u00E9&1"#.to_owned(),
            // HTML.
            "p@ss w/rd&quot;+&#233;&amp;1".to_owned(),
            STANDARD.encode(format!("my+id:{}", "p%40ss+w%2Frd%22%2B%C3%A9%261")),
            STANDARD.encode(format!("my id:{SECRET}")),
            format!(
                "Basic {}",
                STANDARD.encode(format!("my+id:{}", "p%40ss+w%2Frd%22%2B%C3%A9%261"))
            ),
        ];
        let scrubber = scrubber();
        for shape in shapes {
            let text = format!("before {shape} after");
            let clean = scrubber.scrub(&text);
            assert!(!clean.contains(&shape), "{shape} left in {clean}");
            assert!(clean.starts_with("before "), "{clean}");
            assert!(clean.ends_with(" after"), "{clean}");
            assert!(clean.contains(REDACTED), "{clean}");
        }
    }

    #[test]
    fn other_text_is_left_alone() {
        let scrubber = scrubber();
        let text = "invalid_client: p@ss is not the secret, nor is 100% & more";
        assert_eq!(scrubber.scrub(text), text);
        assert_eq!(Scrubber::new().scrub("a\nb"), "a b");
    }

    #[test]
    fn a_secret_is_removed_before_the_text_is_cut() {
        let mut scrubber = Scrubber::new();
        scrubber.register(&SecretString::from("s3cr3t-value".to_owned()));
        let text = format!("{}s3cr3t-value", "x".repeat(MAX_SERVER_TEXT - 4));
        let clean = scrubber.scrub(&text);
        assert!(!clean.contains("s3cr"), "{clean}");
        assert!(clean.ends_with('…'), "{clean}");
    }

    #[test]
    fn overlapping_escapes_cannot_blow_up() {
        let mut scrubber = Scrubber::new();
        scrubber.register(&SecretString::from("\\".repeat(64)));
        let text = "\\".repeat(10_000);
        let clean = scrubber.scrub(&text);
        assert!(clean.starts_with(REDACTED), "{clean}");
        assert!(!format!("{scrubber:?}").contains('\\'));
    }
}
