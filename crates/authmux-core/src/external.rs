//! Tokens issued by someone else, read as they rotate.
//!
//! Secretless authentication sends a workload's identity token, issued by
//! another party, where a client secret would go: as the
//! `client_assertion` (RFC 7523 §2.2), as the `assertion` of the JWT-bearer
//! grant (RFC 7523 §2.1), or as the `subject_token` or `actor_token` of a
//! token exchange (RFC 8693). Such a token is a Kubernetes projected
//! service-account token, a CI job's OIDC token, a SPIFFE JWT-SVID or the
//! file named by Entra's `AZURE_FEDERATED_TOKEN_FILE`, and it comes from a
//! file, an environment variable or a command:
//!
//! ```toml
//! client_assertion = { file = "/var/run/secrets/tokens/token" }
//! client_assertion = { env = "GITHUB_OIDC_TOKEN" }
//! client_assertion = { command = ["/usr/bin/print-token", "--audience", "x"] }
//! client_assertion = { command = ["/usr/bin/print-token"], timeout = "5s" }
//! ```
//!
//! An [`ExternalToken`] reads its [`ExternalSource`] when asked for the
//! token, as often as the source needs:
//!
//! * a file is read again once it changed (device, inode, size or mtime,
//!   symlinks followed: Kubernetes rotates a token by swapping its `..data`
//!   symlink) or a minute after it was last read;
//! * an environment variable is read at every call;
//! * a command runs again once 80 % of its JWT's lifetime has passed or a
//!   minute is left, whichever comes first, and at every call when what it
//!   prints is not a JWT. It runs without a shell, with stdin closed, and is
//!   killed when it runs out of time (10 s unless `timeout` says otherwise).
//!
//! A JWT whose `exp` has passed is never handed out. When a read fails, the
//! last good token is served instead as long as it is a JWT with more than
//! 10 s left. Concurrent callers share one read. No error, `Debug` or log
//! line shows the token, a command's output or its arguments.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwapOption;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use secrecy::{ExposeSecret as _, SecretString};
use serde::de::{self, Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::{Map, Value};
use tokio::io::{AsyncRead, AsyncReadExt as _};
use tokio::process::{ChildStderr, ChildStdout};
use tokio::time::Instant;

use crate::error::{Error, ErrorKind, MAX_SERVER_TEXT};
use crate::scrub::{REDACTED, Scrubber};
use crate::token::decode_jwt_payload;

/// How long a command may run when its source sets no `timeout`.
pub const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(10);

/// The largest token read: a bigger file or command output is refused.
pub const MAX_TOKEN_BYTES: usize = 64 * 1024;

/// How long an unchanged file is served without reading it again. A file
/// rewritten in place within its mtime's grain keeps its stamp; this bounds
/// how long that goes unseen.
const FILE_REREAD_AFTER: Duration = Duration::from_secs(60);

/// A command's JWT is run for again once this share of its lifetime has
/// passed, in fifths…
const COMMAND_REUSE_FIFTHS: u32 = 4;

/// …or once this little of it is left, whichever comes first.
const COMMAND_REUSE_MARGIN: Duration = Duration::from_secs(60);

/// The least time a JWT must have left to be served after a failed read:
/// less would expire on its way to the server.
const FALLBACK_MARGIN: Duration = Duration::from_secs(10);

/// How much of a command's stderr is read. What is shown is shorter still.
const STDERR_KEPT: usize = 4096;

/// The three source forms, for messages.
const FORMS: &str = "{ file = \"path\" }, { env = \"VARIABLE\" } or \
                     { command = [\"program\", \"argument\", …] }";

/// The keys of a source table.
const KEYS: &[&str] = &["file", "env", "command", "timeout"];

/// Where an external token comes from.
///
/// ```toml
/// client_assertion = { file = "/var/run/secrets/tokens/token" }
/// client_assertion = { env = "GITHUB_OIDC_TOKEN" }
/// client_assertion = { command = ["/usr/bin/print-token", "--audience", "x"] }
/// client_assertion = { command = ["/usr/bin/print-token"], timeout = "5s" }
/// ```
///
/// A table names exactly one source. A plain string is refused (it may be
/// a token pasted in by mistake), and no error quotes a value. `Debug` and
/// [`describe`](Self::describe) show a command's program, never its
/// arguments, which may hold secrets.
#[derive(Clone, PartialEq, Eq)]
pub enum ExternalSource {
    /// A file holding the token. Symlinks are followed at every read.
    File(PathBuf),
    /// The name of an environment variable holding the token.
    Env(String),
    /// A command that prints the token: run without a shell, `argv[0]`
    /// being the program.
    Command {
        /// The program and its arguments.
        argv: Vec<String>,
        /// How long it may run before it is killed;
        /// [`DEFAULT_COMMAND_TIMEOUT`] unless configured.
        timeout: Duration,
    },
}

impl ExternalSource {
    /// `"file"`, `"env"` or `"command"`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::File(_) => "file",
            Self::Env(_) => "env",
            Self::Command { .. } => "command",
        }
    }

    /// The source for messages: `file /var/run/x`, `env GITHUB_OIDC_TOKEN`
    /// or `command /usr/bin/print-token` (the program only).
    pub fn describe(&self) -> String {
        match self {
            Self::File(path) => format!("file {}", path.display()),
            Self::Env(var) => format!("env {var}"),
            Self::Command { argv, .. } => match argv.first() {
                Some(program) => format!("command {program}"),
                None => "command".to_owned(),
            },
        }
    }

    /// A stable string that tells sources apart, for cache keys: the kind
    /// and the path (`file:/var/run/x`), the variable (`env:NAME`), or, for
    /// a command, the SHA-256 of its whole argv, NUL-separated, in base64url
    /// (`command:…`). A digest because the identity ends up in store keys
    /// and log lines while a command's arguments may hold secrets. The
    /// timeout is not part of it: it does not change the token.
    pub fn identity(&self) -> String {
        match self {
            Self::File(path) => format!("file:{}", path.display()),
            Self::Env(var) => format!("env:{var}"),
            Self::Command { argv, .. } => {
                // No argument of a process can hold a NUL: the join is unambiguous.
                let joined = argv.join("\0");
                let digest =
                    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, joined.as_bytes());
                format!("command:{}", URL_SAFE_NO_PAD.encode(digest.as_ref()))
            }
        }
    }
}

impl fmt::Debug for ExternalSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::File(path) => f.debug_tuple("File").field(path).finish(),
            Self::Env(var) => f.debug_tuple("Env").field(var).finish(),
            Self::Command { argv, timeout } => f
                .debug_struct("Command")
                .field("program", &argv.first())
                .field(
                    "args",
                    &format_args!("[{} redacted]", argv.len().saturating_sub(1)),
                )
                .field("timeout", timeout)
                .finish(),
        }
    }
}

impl<'de> Deserialize<'de> for ExternalSource {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(SourceVisitor)
    }
}

/// Reads the table forms of [`ExternalSource`]. No error quotes a value:
/// a token pasted where a path belongs must not reach a log.
struct SourceVisitor;

/// Visitor methods that refuse a value of another shape than a table
/// without quoting it.
macro_rules! refuse_unquoted {
    ($($method:ident($value:ty)),* $(,)?) => {$(
        fn $method<E: de::Error>(self, _: $value) -> Result<ExternalSource, E> {
            Err(E::custom(format_args!("expected a table: {FORMS}")))
        }
    )*};
}

/// Reads the value of `key` into an empty `slot`, with an error that names
/// what was `expected` instead of quoting what was there.
fn read_once<'de, T: Deserialize<'de>, A: MapAccess<'de>>(
    map: &mut A,
    slot: &mut Option<T>,
    key: &'static str,
    expected: &str,
) -> Result<(), A::Error> {
    if slot.is_some() {
        return Err(de::Error::duplicate_field(key));
    }
    let value = map
        .next_value()
        .map_err(|_: A::Error| de::Error::custom(format_args!("{key}: expected {expected}")))?;
    *slot = Some(value);
    Ok(())
}

impl<'de> Visitor<'de> for SourceVisitor {
    type Value = ExternalSource;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a table: {FORMS}")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<ExternalSource, A::Error> {
        let mut file: Option<PathBuf> = None;
        let mut env: Option<String> = None;
        let mut command: Option<Vec<String>> = None;
        let mut timeout: Option<String> = None;
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "file" => read_once(&mut map, &mut file, "file", "a path")?,
                "env" => read_once(&mut map, &mut env, "env", "a variable name")?,
                "command" => read_once(
                    &mut map,
                    &mut command,
                    "command",
                    "an array of strings: [\"program\", \"argument\", …]",
                )?,
                "timeout" => read_once(
                    &mut map,
                    &mut timeout,
                    "timeout",
                    "a duration such as \"5s\"",
                )?,
                other => return Err(de::Error::unknown_field(other, KEYS)),
            }
        }
        if timeout.is_some() && command.is_none() {
            return Err(de::Error::custom("timeout: applies to a command only"));
        }
        match (file, env, command) {
            (Some(file), None, None) if file.as_os_str().is_empty() => {
                Err(de::Error::custom("file: must not be empty"))
            }
            (Some(file), None, None) => Ok(ExternalSource::File(file)),
            (None, Some(env), None) if env.is_empty() || env.contains(['=', '\0']) => Err(
                de::Error::custom("env: must be a variable name, without `=`, and not empty"),
            ),
            (None, Some(env), None) => Ok(ExternalSource::Env(env)),
            (None, None, Some(argv)) => {
                if argv.first().is_none_or(String::is_empty) {
                    return Err(de::Error::custom(
                        "command: must name a program first, as in [\"/usr/bin/print-token\"]",
                    ));
                }
                let timeout = match timeout {
                    None => DEFAULT_COMMAND_TIMEOUT,
                    Some(text) => match humantime::parse_duration(text.trim()) {
                        Ok(timeout) if !timeout.is_zero() => timeout,
                        Ok(_) => return Err(de::Error::custom("timeout: must be more than zero")),
                        Err(_) => {
                            return Err(de::Error::custom(
                                "timeout: expected a duration such as \"5s\"",
                            ));
                        }
                    },
                };
                Ok(ExternalSource::Command { argv, timeout })
            }
            (None, None, None) => Err(de::Error::custom(format_args!("expected {FORMS}"))),
            _ => Err(de::Error::custom(
                "give exactly one of file, env or command",
            )),
        }
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<ExternalSource, E> {
        Err(E::custom(format_args!(
            "a plain string is not a source; expected a table: {FORMS}"
        )))
    }

    // serde's own errors would quote these values.
    refuse_unquoted! {
        visit_bytes(&[u8]),
        visit_bool(bool),
        visit_i64(i64),
        visit_u64(u64),
        visit_i128(i128),
        visit_u128(u128),
        visit_f64(f64),
    }
}

/// The registered claims of a JWT that [`jwt_times`] reads, unverified.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct JwtTimes {
    /// `exp`: when the token expires.
    pub exp: Option<SystemTime>,
    /// `iat`: when the token was issued.
    pub iat: Option<SystemTime>,
    /// `iss`: who issued the token.
    pub iss: Option<String>,
    /// `sub`: whom the token is about.
    pub sub: Option<String>,
}

/// `exp`, `iat`, `iss` and `sub` of `token` when it is a compact JWS (three
/// base64url parts, a JSON object as payload), **without verifying** it;
/// `None` when it is not one. A claim of the wrong type reads as absent; a
/// date may be fractional (RFC 7519 §2, NumericDate).
pub fn jwt_times(token: &str) -> Option<JwtTimes> {
    let claims: Map<String, Value> = decode_jwt_payload(token).ok()?;
    let text = |key: &str| claims.get(key)?.as_str().map(str::to_owned);
    let date = |key: &str| {
        let seconds = claims.get(key)?.as_f64()?;
        UNIX_EPOCH.checked_add(Duration::try_from_secs_f64(seconds.max(0.0)).ok()?)
    };
    Some(JwtTimes {
        exp: date("exp"),
        iat: date("iat"),
        iss: text("iss"),
        sub: text("sub"),
    })
}

/// A reader of one external token; see the [module docs](self).
///
/// Cloning is cheap and clones share what was read. `Debug` shows the
/// source as [`ExternalSource::describe`] does, never the token.
#[derive(Clone)]
pub struct ExternalToken {
    inner: Arc<Inner>,
}

struct Inner {
    source: ExternalSource,
    field: &'static str,
    /// `source.describe()`, made once: every message names it.
    described: String,
    /// Reads finished, good or failed. A caller that waited for the lock
    /// while one finished takes its outcome instead of reading again.
    reads: AtomicU64,
    state: tokio::sync::Mutex<State>,
    /// `iss` and `sub` of the last good token, readable without the lock.
    subject: ArcSwapOption<(String, String)>,
}

#[derive(Default)]
struct State {
    last_good: Option<Good>,
    /// Why the last read failed, when nothing was served instead.
    last_failure: Option<Error>,
}

/// A token read and not refused.
struct Good {
    token: SecretString,
    exp: Option<SystemTime>,
    reuse: Reuse,
}

/// When a good token may be served without reading its source again.
enum Reuse {
    /// Never: an environment variable, or a command that did not print a JWT.
    Never,
    /// While the file is unchanged and was read less than
    /// [`FILE_REREAD_AFTER`] ago.
    WhileUnchanged { stamp: FileStamp, read_at: Instant },
    /// Until `at` on tokio's clock and `wall` on the wall clock: a command's
    /// JWT. The monotonic clock stops while the system is suspended.
    Until { at: Instant, wall: SystemTime },
}

/// What tells a file's versions apart without reading it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct FileStamp {
    device: u64,
    inode: u64,
    size: u64,
    modified: Option<SystemTime>,
}

impl FileStamp {
    pub(crate) fn of(metadata: &std::fs::Metadata) -> Self {
        #[cfg(unix)]
        let (device, inode) = {
            use std::os::unix::fs::MetadataExt as _;
            (metadata.dev(), metadata.ino())
        };
        #[cfg(not(unix))]
        let (device, inode) = (0, 0);
        Self {
            device,
            inode,
            size: metadata.len(),
            modified: metadata.modified().ok(),
        }
    }
}

impl fmt::Debug for ExternalToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("ExternalToken")
            .field(&self.inner.described)
            .finish()
    }
}

impl ExternalToken {
    /// A reader of `source`. `field` is the config key it was set under,
    /// such as `client_assertion`; every error message starts with it.
    /// Nothing is read until [`current`](Self::current).
    pub fn new(source: ExternalSource, field: &'static str) -> Self {
        Self {
            inner: Arc::new(Inner {
                described: source.describe(),
                source,
                field,
                reads: AtomicU64::new(0),
                state: tokio::sync::Mutex::new(State::default()),
                subject: ArcSwapOption::empty(),
            }),
        }
    }

    /// Where the token comes from.
    pub fn source(&self) -> &ExternalSource {
        &self.inner.source
    }

    /// The config key named in errors.
    pub fn field(&self) -> &'static str {
        self.inner.field
    }

    /// The token to send now: the last one read while its source needs no
    /// new read (see the [module docs](self)), else a new one.
    ///
    /// # Errors
    ///
    /// A [`Credential`](ErrorKind::Credential) error when the source cannot
    /// be read, holds nothing, holds more than [`MAX_TOKEN_BYTES`] or holds
    /// a JWT that has expired, and the last good token cannot stand in; a
    /// [`Timeout`](ErrorKind::Timeout) error when a command ran out of time.
    /// Messages start with the field and name the source:
    /// `client_assertion: file /var/run/x: No such file or directory (os error 2)`.
    pub async fn current(&self) -> Result<SecretString, Error> {
        let inner = &*self.inner;
        let reads_seen = inner.reads.load(Ordering::Acquire);
        let mut state = inner.state.lock().await;
        if inner.reads.load(Ordering::Acquire) != reads_seen {
            if let Some(failure) = &state.last_failure {
                return Err(failure.clone());
            }
            if let Some(good) = &state.last_good {
                return self.serve(good);
            }
        }
        if let Some(good) = &state.last_good
            && self.still_good(good).await
        {
            return self.serve(good);
        }
        let outcome = match self.read(state.last_good.as_ref()).await {
            Ok((good, subject)) => {
                inner.subject.store(subject.map(Arc::new));
                let token = good.token.clone();
                state.last_good = Some(good);
                state.last_failure = None;
                Ok(token)
            }
            Err(error) => self.fall_back(&mut state, error),
        };
        inner.reads.fetch_add(1, Ordering::Release);
        outcome
    }

    /// `iss` and `sub` of the last good token read, when it is a JWT that
    /// has both (the payload decoded, not verified). `None` before the
    /// first [`current`](Self::current).
    pub fn subject(&self) -> Option<(String, String)> {
        self.inner
            .subject
            .load()
            .as_deref()
            .map(|(iss, sub)| (iss.clone(), sub.clone()))
    }

    /// An error of the credential kind: `{field}: {source}{why}`.
    fn fail(&self, why: impl fmt::Display) -> Error {
        Error::new(
            ErrorKind::Credential,
            format!("{}: {}{why}", self.inner.field, self.inner.described),
        )
    }

    fn expired(&self, exp: SystemTime) -> Error {
        Error::new(
            ErrorKind::Credential,
            format!(
                "{}: the token from {} expired at {}",
                self.inner.field,
                self.inner.described,
                humantime::format_rfc3339_seconds(exp)
            ),
        )
    }

    /// `good`'s token, unless it is a JWT that has expired.
    fn serve(&self, good: &Good) -> Result<SecretString, Error> {
        match good.exp {
            Some(exp) if exp <= SystemTime::now() => Err(self.expired(exp)),
            _ => Ok(good.token.clone()),
        }
    }

    /// Whether `good` may be served without reading its source again.
    async fn still_good(&self, good: &Good) -> bool {
        match &good.reuse {
            Reuse::Never => false,
            Reuse::Until { at, wall } => Instant::now() < *at && SystemTime::now() < *wall,
            Reuse::WhileUnchanged { stamp, read_at } => {
                let ExternalSource::File(path) = &self.inner.source else {
                    return false;
                };
                if read_at.elapsed() >= FILE_REREAD_AFTER {
                    return false;
                }
                let path = path.clone();
                let now = tokio::task::spawn_blocking(move || std::fs::metadata(path)).await;
                matches!(now, Ok(Ok(metadata)) if FileStamp::of(&metadata) == *stamp)
            }
        }
    }

    /// After a failed read: the last good token if it is a JWT with more
    /// than [`FALLBACK_MARGIN`] left, else `error`.
    fn fall_back(&self, state: &mut State, error: Error) -> Result<SecretString, Error> {
        if let Some(good) = &state.last_good
            && let Some(exp) = good.exp
            && SystemTime::now()
                .checked_add(FALLBACK_MARGIN)
                .is_some_and(|soon| exp > soon)
        {
            tracing::warn!(
                field = self.inner.field,
                source = %self.inner.described,
                %error,
                "serving the last good token until it is read again"
            );
            state.last_failure = None;
            return Ok(good.token.clone());
        }
        // Not a JWT, or about to expire: nothing says it is still good.
        state.last_good = None;
        state.last_failure = Some(error.clone());
        Err(error)
    }

    /// Reads the source once and checks what it held, with the token's
    /// `iss` and `sub`. `last` is the last good token, which a command's
    /// stderr is scrubbed of.
    async fn read(&self, last: Option<&Good>) -> Result<(Good, Option<(String, String)>), Error> {
        let (token, mut reuse) = match &self.inner.source {
            ExternalSource::File(path) => {
                let (token, stamp) = self.read_file(path).await?;
                let read_at = Instant::now();
                (token, Reuse::WhileUnchanged { stamp, read_at })
            }
            ExternalSource::Env(var) => (self.read_env(var)?, Reuse::Never),
            ExternalSource::Command { argv, timeout } => {
                let last = last.map(|good| &good.token);
                (self.run(argv, *timeout, last).await?, Reuse::Never)
            }
        };
        let claims = jwt_times(token.expose_secret());
        let exp = claims.as_ref().and_then(|claims| claims.exp);
        if let Some(exp) = exp
            && exp <= SystemTime::now()
        {
            return Err(self.expired(exp));
        }
        if let (ExternalSource::Command { .. }, Some(claims)) = (&self.inner.source, &claims) {
            reuse = command_reuse(claims);
        }
        let subject = claims.and_then(|claims| Some((claims.iss?, claims.sub?)));
        Ok((Good { token, exp, reuse }, subject))
    }

    async fn read_file(&self, path: &Path) -> Result<(SecretString, FileStamp), Error> {
        let path = path.to_owned();
        let read = tokio::task::spawn_blocking(move || read_token_file(&path))
            .await
            .map_err(|_| self.fail(": the read was cancelled"))?;
        let (bytes, stamp) = read.map_err(|unread| self.explain(unread))?;
        Ok((self.token_text(bytes)?, stamp))
    }

    fn read_env(&self, var: &str) -> Result<SecretString, Error> {
        let value = env_var(var).ok_or_else(|| self.fail(" is not set"))?;
        let value = value
            .into_string()
            .map_err(|_| self.fail(": the token is not UTF-8"))?;
        self.token_text(value.into_bytes())
    }

    /// Runs the command and returns what it printed. `last` is the last
    /// good token, which its stderr is scrubbed of.
    async fn run(
        &self,
        argv: &[String],
        timeout: Duration,
        last: Option<&SecretString>,
    ) -> Result<SecretString, Error> {
        let Some((program, args)) = argv.split_first() else {
            return Err(self.fail(": no program to run"));
        };
        let mut child = tokio::process::Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|error| self.fail(format_args!(": {error}")))?;
        let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
            return Err(self.fail(": its output could not be read"));
        };
        let work = async {
            let (stdout, stderr) = tokio::try_join!(read_output(stdout), read_stderr(stderr))?;
            let status = child.wait().await.map_err(Unread::Io)?;
            Ok((status, stdout, stderr))
        };
        let ran = tokio::time::timeout(timeout, work)
            .await
            .unwrap_or(Err(Unread::TimedOut(timeout)));
        let (status, stdout, (stderr, stderr_cut)) = match ran {
            Ok(ran) => ran,
            Err(failure) => {
                // Killed and reaped now rather than left to the orphan reaper.
                let _ = child.kill().await;
                return Err(self.explain(failure));
            }
        };
        if !status.success() {
            let mut scrubber = Scrubber::new();
            scrubber.register(&SecretString::from(
                String::from_utf8_lossy(&stdout).trim().to_owned(),
            ));
            if let Some(last) = last {
                scrubber.register(last);
            }
            let note = stderr_note(&stderr, stderr_cut, &scrubber);
            return Err(self.fail(format_args!(" failed ({status}){note}")));
        }
        self.token_text(stdout)
    }

    /// The error for a source that gave no token to look at.
    fn explain(&self, unread: Unread) -> Error {
        match unread {
            Unread::Io(error) => self.fail(format_args!(": {error}")),
            Unread::NotAFile => self.fail(": not a regular file"),
            Unread::TooLarge => self.fail(format_args!(
                ": the token is larger than {} KiB",
                MAX_TOKEN_BYTES / 1024
            )),
            Unread::TimedOut(timeout) => Error::new(
                ErrorKind::Timeout,
                format!(
                    "{}: {} ran longer than {} and was killed",
                    self.inner.field,
                    self.inner.described,
                    humantime::format_duration(timeout)
                ),
            ),
        }
    }

    /// The token in `bytes`, trimmed: UTF-8 and not empty.
    fn token_text(&self, bytes: Vec<u8>) -> Result<SecretString, Error> {
        let text = String::from_utf8(bytes).map_err(|_| self.fail(": the token is not UTF-8"))?;
        let trimmed = text.trim();
        if trimmed.is_empty() {
            return Err(self.fail(": the token is empty"));
        }
        Ok(SecretString::from(trimmed.to_owned()))
    }
}

/// An environment variable. Tests fake some: setting a real one is
/// `unsafe` while other test threads run.
fn env_var(name: &str) -> Option<std::ffi::OsString> {
    #[cfg(test)]
    if let Some(fake) = tests::fake_env(name) {
        return fake;
    }
    std::env::var_os(name)
}

/// When a command's JWT is to be run for again: once
/// [`COMMAND_REUSE_FIFTHS`] of its `iat` to `exp` lifetime has passed
/// (from now when it has no `iat`), or [`COMMAND_REUSE_MARGIN`] before
/// `exp`, whichever is first. [`Reuse::Never`] without an `exp`.
fn command_reuse(claims: &JwtTimes) -> Reuse {
    let now = SystemTime::now();
    let Some(exp) = claims.exp else {
        return Reuse::Never;
    };
    let iat = claims.iat.unwrap_or(now).min(exp);
    let lifetime = exp.duration_since(iat).unwrap_or_default();
    let by_share = iat.checked_add(lifetime * COMMAND_REUSE_FIFTHS / 5);
    let by_margin = exp.checked_sub(COMMAND_REUSE_MARGIN);
    let Some(wall) = by_share
        .zip(by_margin)
        .map(|(share, margin)| share.min(margin))
    else {
        return Reuse::Never;
    };
    match wall.duration_since(now) {
        Ok(left) if !left.is_zero() => Reuse::Until {
            at: Instant::now() + left,
            wall,
        },
        _ => Reuse::Never,
    }
}

/// Why a file or a command gave no token to look at.
enum Unread {
    Io(io::Error),
    NotAFile,
    TooLarge,
    TimedOut(Duration),
}

/// Reads a regular file of at most [`MAX_TOKEN_BYTES`], following
/// symlinks, with the stamp of what was read. Blocking.
fn read_token_file(path: &Path) -> Result<(Vec<u8>, FileStamp), Unread> {
    use std::io::Read as _;
    let file = std::fs::File::open(path).map_err(Unread::Io)?;
    let metadata = file.metadata().map_err(Unread::Io)?;
    if !metadata.is_file() {
        // A FIFO or a device could block a read forever.
        return Err(Unread::NotAFile);
    }
    if metadata.len() > MAX_TOKEN_BYTES as u64 {
        return Err(Unread::TooLarge);
    }
    let mut bytes = Vec::with_capacity(metadata.len() as usize);
    // The file may grow between the stat and the read.
    file.take(MAX_TOKEN_BYTES as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(Unread::Io)?;
    if bytes.len() > MAX_TOKEN_BYTES {
        return Err(Unread::TooLarge);
    }
    Ok((bytes, FileStamp::of(&metadata)))
}

/// A command's stdout, refused when over [`MAX_TOKEN_BYTES`] without
/// waiting for the rest: the command is killed then.
async fn read_output(mut stdout: ChildStdout) -> Result<Vec<u8>, Unread> {
    match read_prefix(&mut stdout, MAX_TOKEN_BYTES).await {
        Ok((bytes, false)) => Ok(bytes),
        Ok((_, true)) => Err(Unread::TooLarge),
        Err(error) => Err(Unread::Io(error)),
    }
}

/// The first [`STDERR_KEPT`] bytes of a command's stderr, and whether
/// there was more. The rest is read to its end, so the command never
/// blocks on a full pipe.
async fn read_stderr(mut stderr: ChildStderr) -> Result<(Vec<u8>, bool), Unread> {
    let kept = read_prefix(&mut stderr, STDERR_KEPT)
        .await
        .map_err(Unread::Io)?;
    tokio::io::copy(&mut stderr, &mut tokio::io::sink())
        .await
        .map_err(Unread::Io)?;
    Ok(kept)
}

/// The first `keep` bytes of `pipe`, and whether there was more.
async fn read_prefix(
    pipe: &mut (impl AsyncRead + Unpin),
    keep: usize,
) -> io::Result<(Vec<u8>, bool)> {
    let mut bytes = Vec::new();
    pipe.take(keep as u64 + 1).read_to_end(&mut bytes).await?;
    let more = bytes.len() > keep;
    bytes.truncate(keep);
    Ok((bytes, more))
}

/// What an error says of a failed command's stderr: nothing when it was
/// empty; ` (stderr withheld)` when it is longer than one short line, cut
/// or not UTF-8; else `: ` and the line, scrubbed of what `scrubber` knows
/// and of anything that looks like a token.
fn stderr_note(stderr: &[u8], cut: bool, scrubber: &Scrubber) -> String {
    let Ok(text) = std::str::from_utf8(stderr) else {
        return " (stderr withheld)".to_owned();
    };
    let line = text.trim();
    if line.is_empty() {
        return String::new();
    }
    if cut || line.len() > MAX_SERVER_TEXT || line.contains(['\n', '\r']) {
        return " (stderr withheld)".to_owned();
    }
    format!(": {}", redact_token_like(&scrubber.scrub(line)))
}

/// Replaces each run of base64 and JWT characters that looks like a token
/// with [`REDACTED`]: one that holds `eyJ` (the start of every JWT header
/// and of most base64-encoded JSON), or one of 24 characters or more with
/// both letters and digits (a key, a long base64 value).
fn redact_token_like(text: &str) -> String {
    fn in_token(c: char) -> bool {
        c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '+' | '/' | '=')
    }
    fn looks_like_token(run: &str) -> bool {
        run.contains("eyJ")
            || (run.len() >= 24
                && run.bytes().any(|byte| byte.is_ascii_digit())
                && run.bytes().any(|byte| byte.is_ascii_alphabetic()))
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find(in_token) {
        out.push_str(&rest[..start]);
        let run_len = rest[start..]
            .find(|c| !in_token(c))
            .unwrap_or(rest.len() - start);
        let run = &rest[start..start + run_len];
        out.push_str(if looks_like_token(run) { REDACTED } else { run });
        rest = &rest[start + run_len..];
    }
    out.push_str(rest);
    out
}

#[async_trait::async_trait]
impl crate::wire::FreshValue for ExternalToken {
    async fn value(&self) -> Result<SecretString, Error> {
        self.current().await
    }

    /// The source's [`identity`](ExternalSource::identity): a command's
    /// arguments hashed, never shown.
    fn describe(&self) -> String {
        self.source().identity()
    }

    /// The `iss` and `sub` of the token, if it is a JWT that has them.
    async fn identity_fields(&self) -> Result<Vec<(String, String)>, Error> {
        if self.subject().is_none() {
            self.current().await?;
        }
        Ok(self
            .subject()
            .map(|(iss, sub)| vec![("iss".to_owned(), iss), ("sub".to_owned(), sub)])
            .unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::ffi::OsString;
    use std::sync::{Mutex, PoisonError};

    use futures_util::future::join_all;
    use serde_json::json;

    use super::*;

    /// Fake environment variables, by name; `None` is a fake unset one.
    static FAKE_ENV: Mutex<BTreeMap<String, Option<String>>> = Mutex::new(BTreeMap::new());

    pub(super) fn fake_env(name: &str) -> Option<Option<OsString>> {
        let fakes = FAKE_ENV.lock().unwrap_or_else(PoisonError::into_inner);
        fakes
            .get(name)
            .map(|value| value.clone().map(OsString::from))
    }

    fn set_fake_env(name: &str, value: Option<&str>) {
        let mut fakes = FAKE_ENV.lock().unwrap_or_else(PoisonError::into_inner);
        fakes.insert(name.to_owned(), value.map(str::to_owned));
    }

    const FIELD: &str = "client_assertion";
    const ISSUER: &str = "https://issuer.example";
    const SUBJECT: &str = "system:serviceaccount:ns:api";

    fn b64(text: &str) -> String {
        URL_SAFE_NO_PAD.encode(text)
    }

    fn unix_now() -> i64 {
        let since = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("after 1970");
        i64::try_from(since.as_secs()).expect("a sane clock")
    }

    /// An unsigned compact JWS of `claims`, with `signature` as its third part.
    fn jwt_signed(claims: &Value, signature: &str) -> String {
        format!(
            "{}.{}.{signature}",
            b64(r#"{"alg":"RS256","typ":"JWT"}"#),
            b64(&claims.to_string())
        )
    }

    fn jwt(claims: &Value) -> String {
        jwt_signed(claims, &b64("not a signature"))
    }

    /// A JWT issued `issued_ago` seconds ago that expires in `expires_in`
    /// seconds (in the past when negative).
    fn jwt_lasting(issued_ago: i64, expires_in: i64) -> String {
        let now = unix_now();
        jwt(&json!({
            "iss": ISSUER,
            "sub": SUBJECT,
            "iat": now - issued_ago,
            "exp": now + expires_in,
        }))
    }

    fn file_reader(path: &Path) -> ExternalToken {
        ExternalToken::new(ExternalSource::File(path.to_owned()), FIELD)
    }

    fn command_reader(argv: &[&str], timeout: Duration) -> ExternalToken {
        let argv = argv.iter().map(|arg| (*arg).to_owned()).collect();
        ExternalToken::new(ExternalSource::Command { argv, timeout }, FIELD)
    }

    /// `/bin/sh -c script`, with `args` as `$1`, `$2`, …: only tests use a
    /// shell, to script what a command does.
    fn sh(script: &str, args: &[&Path]) -> ExternalToken {
        let mut argv = vec!["/bin/sh".to_owned(), "-c".to_owned(), script.to_owned()];
        argv.push("sh".to_owned());
        argv.extend(args.iter().map(|arg| arg.display().to_string()));
        let source = ExternalSource::Command {
            argv,
            timeout: DEFAULT_COMMAND_TIMEOUT,
        };
        ExternalToken::new(source, FIELD)
    }

    async fn token(reader: &ExternalToken) -> String {
        match reader.current().await {
            Ok(token) => token.expose_secret().to_owned(),
            Err(error) => panic!("no token: {error}"),
        }
    }

    async fn failure(reader: &ExternalToken) -> Error {
        reader.current().await.expect_err("an error")
    }

    /// How many times a test command ran: the lines it appended to `counter`.
    fn runs(counter: &Path) -> usize {
        std::fs::read_to_string(counter).map_or(0, |text| text.lines().count())
    }

    fn parse(json: &str) -> Result<ExternalSource, String> {
        serde_json::from_str(json).map_err(|error| error.to_string())
    }

    #[test]
    fn the_three_source_forms_parse() {
        assert_eq!(
            parse(r#"{"file":"/var/run/secrets/tokens/token"}"#),
            Ok(ExternalSource::File("/var/run/secrets/tokens/token".into()))
        );
        assert_eq!(
            parse(r#"{"env":"GITHUB_OIDC_TOKEN"}"#),
            Ok(ExternalSource::Env("GITHUB_OIDC_TOKEN".into()))
        );
        assert_eq!(
            parse(r#"{"command":["/usr/bin/print-token","--audience","x"]}"#),
            Ok(ExternalSource::Command {
                argv: vec![
                    "/usr/bin/print-token".into(),
                    "--audience".into(),
                    "x".into()
                ],
                timeout: DEFAULT_COMMAND_TIMEOUT,
            })
        );
        assert_eq!(
            parse(r#"{"command":["/usr/bin/print-token"],"timeout":"5s"}"#),
            Ok(ExternalSource::Command {
                argv: vec!["/usr/bin/print-token".into()],
                timeout: Duration::from_secs(5),
            })
        );
    }

    #[test]
    fn bad_shapes_are_refused_without_quoting_a_value() {
        let pasted = jwt_lasting(0, 3600);
        let cases = [
            (format!("{pasted:?}"), "a plain string is not a source"),
            (format!("{pasted:?}"), r#"{ env = "VARIABLE" }"#),
            (
                format!("{pasted:?}"),
                r#"{ command = ["program", "argument", …] }"#,
            ),
            (
                r#"{"vault":"x"}"#.to_owned(),
                "unknown field `vault`, expected one of `file`, `env`, `command`, `timeout`",
            ),
            (
                r#"{"file":"/a","env":"B"}"#.to_owned(),
                "give exactly one of file, env or command",
            ),
            (r#"{}"#.to_owned(), r#"expected { file = "path" }"#),
            (
                r#"{"file":"/a","file":"/b"}"#.to_owned(),
                "duplicate field `file`",
            ),
            (r#"{"file":""}"#.to_owned(), "file: must not be empty"),
            (r#"{"env":""}"#.to_owned(), "env: must be a variable name"),
            (
                r#"{"env":"A=s3cr3t"}"#.to_owned(),
                "env: must be a variable name",
            ),
            (
                r#"{"command":[]}"#.to_owned(),
                "command: must name a program",
            ),
            (
                r#"{"command":[""]}"#.to_owned(),
                "command: must name a program",
            ),
            (
                r#"{"command":"print-token --key s3cr3t"}"#.to_owned(),
                "command: expected an array of strings",
            ),
            (
                r#"{"env":12345}"#.to_owned(),
                "env: expected a variable name",
            ),
            (r#"{"file":["s3cr3t"]}"#.to_owned(), "file: expected a path"),
            (
                r#"{"file":"/a","timeout":"5s"}"#.to_owned(),
                "timeout: applies to a command only",
            ),
            (
                r#"{"command":["x"],"timeout":"s3cr3t"}"#.to_owned(),
                "timeout: expected a duration",
            ),
            (
                r#"{"command":["x"],"timeout":"0s"}"#.to_owned(),
                "timeout: must be more than zero",
            ),
            ("12345".to_owned(), "expected a table"),
        ];
        for (json, expected) in cases {
            let error = match parse(&json) {
                Ok(source) => panic!("{json} parsed as {source:?}"),
                Err(error) => error,
            };
            assert!(error.contains(expected), "{json}: {error}");
            for value in [pasted.as_str(), "s3cr3t", "12345"] {
                assert!(!error.contains(value), "{json}: {error}");
            }
        }
    }

    #[test]
    fn describe_kind_and_identity_never_show_a_commands_arguments() {
        let argv = |secret: &str| ExternalSource::Command {
            argv: vec!["/usr/bin/print-token".into(), "--key".into(), secret.into()],
            timeout: DEFAULT_COMMAND_TIMEOUT,
        };
        let command = argv("s3cr3t-arg");
        assert_eq!(command.kind(), "command");
        assert_eq!(command.describe(), "command /usr/bin/print-token");
        let identity = command.identity();
        assert!(identity.starts_with("command:"), "{identity}");
        assert_eq!(identity.len(), "command:".len() + 43);
        assert_ne!(identity, argv("other-arg").identity());
        let slower = ExternalSource::Command {
            argv: vec![
                "/usr/bin/print-token".into(),
                "--key".into(),
                "s3cr3t-arg".into(),
            ],
            timeout: Duration::from_secs(30),
        };
        assert_eq!(
            identity,
            slower.identity(),
            "the timeout does not change the token"
        );
        let reader = ExternalToken::new(command.clone(), FIELD);
        assert_eq!(
            format!("{reader:?}"),
            r#"ExternalToken("command /usr/bin/print-token")"#
        );
        let shown = format!("{identity} {command:?} {reader:?}");
        assert!(!shown.contains("s3cr3t"), "{shown}");

        let plain = [
            (
                ExternalSource::File("/var/run/x".into()),
                "file",
                "file /var/run/x",
                "file:/var/run/x",
            ),
            (
                ExternalSource::Env("GITHUB_OIDC_TOKEN".into()),
                "env",
                "env GITHUB_OIDC_TOKEN",
                "env:GITHUB_OIDC_TOKEN",
            ),
        ];
        for (source, kind, described, identity) in plain {
            assert_eq!(source.kind(), kind);
            assert_eq!(source.describe(), described);
            assert_eq!(source.identity(), identity);
        }
    }

    #[test]
    fn jwt_times_reads_claims_without_verifying() {
        let times = jwt_times(&jwt(&json!({
            "iss": ISSUER,
            "sub": SUBJECT,
            "iat": 1_767_225_600,
            "exp": 1_767_229_200.5,
        })))
        .expect("a JWT");
        assert_eq!(
            times,
            JwtTimes {
                exp: Some(UNIX_EPOCH + Duration::from_millis(1_767_229_200_500)),
                iat: Some(UNIX_EPOCH + Duration::from_secs(1_767_225_600)),
                iss: Some(ISSUER.to_owned()),
                sub: Some(SUBJECT.to_owned()),
            }
        );
        let odd = jwt_times(&jwt(&json!({"exp": "tomorrow", "sub": 7}))).expect("a JWT");
        assert_eq!(
            odd,
            JwtTimes::default(),
            "claims of the wrong type are absent"
        );
        assert_eq!(jwt_times("opaque-token"), None);
        assert_eq!(jwt_times("a.b.c"), None);
        assert_eq!(jwt_times(&jwt(&json!(["not", "an", "object"]))), None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_file_is_read_again_when_it_changes_or_a_minute_later() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let path = dir.path().join("token");
        std::fs::write(&path, "first-token\n").expect("write");
        let reader = file_reader(&path);
        assert_eq!(token(&reader).await, "first-token");

        // Rewritten in place at the same size, its mtime put back: the
        // stamp is the same, so the last read is served for a minute.
        let modified = std::fs::metadata(&path)
            .and_then(|metadata| metadata.modified())
            .expect("an mtime");
        std::fs::write(&path, "other-token\n").expect("write");
        std::fs::File::options()
            .write(true)
            .open(&path)
            .and_then(|file| file.set_modified(modified))
            .expect("mtime put back");
        assert_eq!(token(&reader).await, "first-token");
        tokio::time::advance(Duration::from_secs(59)).await;
        assert_eq!(token(&reader).await, "first-token");
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(token(&reader).await, "other-token");

        // A new size is seen at once.
        std::fs::write(&path, "a-longer-token\n").expect("write");
        assert_eq!(token(&reader).await, "a-longer-token");
        assert_eq!(reader.inner.reads.load(Ordering::Relaxed), 3);
    }

    #[cfg(unix)]
    #[tokio::test(start_paused = true)]
    async fn a_kubernetes_symlink_swap_is_seen_at_the_next_read() {
        use std::os::unix::fs::symlink;
        let dir = tempfile::tempdir().expect("a temp dir");
        let root = dir.path();
        let write_version = |name: &str, token: &str| {
            std::fs::create_dir(root.join(name)).expect("mkdir");
            std::fs::write(root.join(name).join("token"), token).expect("write");
        };
        write_version("..2026_12_02_00_00_00.123", "token-one\n");
        symlink("..2026_12_02_00_00_00.123", root.join("..data")).expect("symlink");
        symlink("..data/token", root.join("token")).expect("symlink");
        let reader = file_reader(&root.join("token"));
        assert_eq!(token(&reader).await, "token-one");
        assert_eq!(token(&reader).await, "token-one");
        assert_eq!(reader.inner.reads.load(Ordering::Relaxed), 1, "unchanged");

        // The kubelet's rotation: a new version, a new symlink to it
        // renamed over `..data` at once, the old version removed. The
        // `token` symlink and the size stay the same.
        write_version("..2026_12_02_00_10_00.456", "token-two\n");
        symlink("..2026_12_02_00_10_00.456", root.join("..data_tmp")).expect("symlink");
        std::fs::rename(root.join("..data_tmp"), root.join("..data")).expect("rename");
        std::fs::remove_dir_all(root.join("..2026_12_02_00_00_00.123")).expect("rm");
        assert_eq!(token(&reader).await, "token-two");
        assert_eq!(reader.inner.reads.load(Ordering::Relaxed), 2);
    }

    #[tokio::test]
    async fn a_missing_empty_or_oversized_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let missing = dir.path().join("missing");
        let gone = failure(&file_reader(&missing)).await;
        assert_eq!(gone.kind(), ErrorKind::Credential);
        assert!(!gone.is_transient());
        #[cfg(target_os = "linux")]
        assert_eq!(
            gone.to_string(),
            format!(
                "client_assertion: file {}: No such file or directory (os error 2)",
                missing.display()
            )
        );

        let path = dir.path().join("token");
        let message = |why: &str| format!("client_assertion: file {}: {why}", path.display());
        std::fs::write(&path, " \n").expect("write");
        assert_eq!(
            failure(&file_reader(&path)).await.to_string(),
            message("the token is empty")
        );
        std::fs::write(&path, "a".repeat(MAX_TOKEN_BYTES + 1)).expect("write");
        assert_eq!(
            failure(&file_reader(&path)).await.to_string(),
            message("the token is larger than 64 KiB")
        );
        std::fs::write(&path, [0xff, 0xfe]).expect("write");
        assert_eq!(
            failure(&file_reader(&path)).await.to_string(),
            message("the token is not UTF-8")
        );
        std::fs::write(&path, "a".repeat(MAX_TOKEN_BYTES)).expect("write");
        assert_eq!(token(&file_reader(&path)).await.len(), MAX_TOKEN_BYTES);

        #[cfg(unix)]
        assert_eq!(
            failure(&file_reader(dir.path())).await.to_string(),
            format!(
                "client_assertion: file {}: not a regular file",
                dir.path().display()
            )
        );
    }

    #[tokio::test]
    async fn an_env_var_is_read_at_every_call() {
        const VAR: &str = "AUTHMUX_TEST_EXTERNAL_TOKEN";
        let reader = ExternalToken::new(ExternalSource::Env(VAR.into()), FIELD);
        set_fake_env(VAR, Some("env-token-1\n"));
        assert_eq!(token(&reader).await, "env-token-1");
        set_fake_env(VAR, Some("env-token-2"));
        assert_eq!(token(&reader).await, "env-token-2");
        set_fake_env(VAR, Some("  "));
        assert_eq!(
            failure(&reader).await.to_string(),
            "client_assertion: env AUTHMUX_TEST_EXTERNAL_TOKEN: the token is empty"
        );
        set_fake_env(VAR, None);
        let unset = failure(&reader).await;
        assert_eq!(unset.kind(), ErrorKind::Credential);
        assert_eq!(
            unset.to_string(),
            "client_assertion: env AUTHMUX_TEST_EXTERNAL_TOKEN is not set"
        );

        // The real environment.
        let path = ExternalToken::new(ExternalSource::Env("PATH".into()), FIELD);
        assert!(path.current().await.is_ok());
        let unset = ExternalSource::Env("AUTHMUX_TEST_SURELY_UNSET_VARIABLE".into());
        assert_eq!(
            failure(&ExternalToken::new(unset, FIELD)).await.to_string(),
            "client_assertion: env AUTHMUX_TEST_SURELY_UNSET_VARIABLE is not set"
        );
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn a_command_runs_without_a_shell_and_again_for_each_opaque_token() {
        let literal = command_reader(&["printf", "%s\n", "$HOME;`id`"], DEFAULT_COMMAND_TIMEOUT);
        assert_eq!(token(&literal).await, "$HOME;`id`");

        let dir = tempfile::tempdir().expect("a temp dir");
        let counter = dir.path().join("runs");
        let opaque = sh(r#"echo run >> "$1"; echo opaque-token"#, &[&counter]);
        assert_eq!(token(&opaque).await, "opaque-token");
        assert_eq!(token(&opaque).await, "opaque-token");
        assert_eq!(runs(&counter), 2);

        // A JWT without `exp` says nothing of how long it lasts.
        let counter = dir.path().join("runs-no-exp");
        let no_exp = jwt(&json!({"sub": SUBJECT}));
        let script = format!(r#"echo run >> "$1"; echo {no_exp}"#);
        let endless = sh(&script, &[&counter]);
        assert_eq!(token(&endless).await, no_exp);
        assert_eq!(token(&endless).await, no_exp);
        assert_eq!(runs(&counter), 2);
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn a_commands_jwt_is_reused_until_80_percent_of_its_life_or_a_minute_before_exp() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let counter = dir.path().join("runs");
        let printed = dir.path().join("printed");
        let reader = sh(r#"echo run >> "$1"; cat "$2""#, &[&counter, &printed]);

        // 1000 s: reused for 800 s; 200 s: reused for 140 s, not 160.
        for (ran, (lasts, reused_for)) in [(1000, 800), (200, 140)].into_iter().enumerate() {
            std::fs::write(&printed, jwt_lasting(0, lasts)).expect("write");
            let printed_token = token(&reader).await;
            assert_eq!(runs(&counter), ran + 1);
            // Paused only between runs: while a command runs, paused time
            // would jump to its timeout.
            tokio::time::pause();
            tokio::time::advance(Duration::from_secs(reused_for - 1)).await;
            assert_eq!(token(&reader).await, printed_token);
            assert_eq!(runs(&counter), ran + 1);
            tokio::time::advance(Duration::from_secs(2)).await;
            tokio::time::resume();
        }
        token(&reader).await;
        assert_eq!(runs(&counter), 3);
    }

    #[cfg(unix)]
    #[tokio::test(start_paused = true)]
    async fn a_hanging_command_is_killed_at_its_timeout() {
        let hanging = command_reader(&["sleep", "3600"], Duration::from_secs(5));
        let error = failure(&hanging).await;
        assert_eq!(error.kind(), ErrorKind::Timeout);
        assert!(error.is_transient());
        assert_eq!(
            error.message(),
            "client_assertion: command sleep ran longer than 5s and was killed"
        );

        let source = parse(r#"{"command":["sleep","3600"]}"#).expect("a source");
        let error = failure(&ExternalToken::new(source, "subject_token")).await;
        assert_eq!(
            error.message(),
            "subject_token: command sleep ran longer than 10s and was killed"
        );
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn a_failed_command_shows_its_status_and_only_a_short_scrubbed_stderr() {
        let failed =
            |script: &'static str| async move { failure(&sh(script, &[])).await.to_string() };
        assert_eq!(
            failed(r#"echo "no token for audience x" >&2; exit 3"#).await,
            "client_assertion: command /bin/sh failed (exit status: 3): no token for audience x"
        );
        assert_eq!(
            failed(r#"printf 'line one\nline two\n' >&2; exit 1"#).await,
            "client_assertion: command /bin/sh failed (exit status: 1) (stderr withheld)"
        );
        assert_eq!(
            failed(r#"printf '%0201d' 0 >&2; exit 1"#).await,
            "client_assertion: command /bin/sh failed (exit status: 1) (stderr withheld)"
        );
        assert_eq!(
            failed("exit 2").await,
            "client_assertion: command /bin/sh failed (exit status: 2)"
        );
        assert!(
            failed("kill -9 $$").await.contains("failed (signal: 9"),
            "killed by a signal"
        );
        assert_eq!(
            failed(
                r#"echo "refused eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.c2ln, key 0123456789abcdefABCDEF0123" >&2; exit 1"#
            )
            .await,
            "client_assertion: command /bin/sh failed (exit status: 1): refused [redacted], key [redacted]"
        );
        let echoed = failed(r#"echo printed-token; echo "bad printed-token" >&2; exit 1"#).await;
        assert_eq!(
            echoed,
            "client_assertion: command /bin/sh failed (exit status: 1): bad [redacted]"
        );

        let missing = command_reader(&["/nonexistent/print-token"], DEFAULT_COMMAND_TIMEOUT);
        let missing = failure(&missing).await;
        assert_eq!(missing.kind(), ErrorKind::Credential);
        #[cfg(target_os = "linux")]
        assert_eq!(
            missing.to_string(),
            "client_assertion: command /nonexistent/print-token: No such file or directory (os error 2)"
        );
        assert_eq!(
            failure(&command_reader(&["true"], DEFAULT_COMMAND_TIMEOUT))
                .await
                .to_string(),
            "client_assertion: command true: the token is empty"
        );
        // Endless output is refused at the cap, the command killed.
        assert_eq!(
            failure(&command_reader(&["yes"], DEFAULT_COMMAND_TIMEOUT))
                .await
                .to_string(),
            "client_assertion: command yes: the token is larger than 64 KiB"
        );
    }

    #[tokio::test]
    async fn an_expired_jwt_is_refused_with_its_expiry() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let path = dir.path().join("token");
        std::fs::write(&path, jwt_lasting(3600, -100)).expect("write");
        let error = failure(&file_reader(&path)).await;
        assert_eq!(error.kind(), ErrorKind::Credential);
        let exp = jwt_times(&std::fs::read_to_string(&path).expect("read"))
            .and_then(|times| times.exp)
            .expect("an exp");
        assert_eq!(
            error.to_string(),
            format!(
                "client_assertion: the token from file {} expired at {}",
                path.display(),
                humantime::format_rfc3339_seconds(exp)
            )
        );
        assert!(error.to_string().ends_with('Z'), "{error}");

        const VAR: &str = "AUTHMUX_TEST_EXPIRED_TOKEN";
        set_fake_env(VAR, Some(&jwt_lasting(3600, -1)));
        let env = ExternalToken::new(ExternalSource::Env(VAR.into()), "actor_token");
        let error = failure(&env).await;
        assert!(
            error.to_string().starts_with(
                "actor_token: the token from env AUTHMUX_TEST_EXPIRED_TOKEN expired at "
            ),
            "{error}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_served_jwt_that_expired_meanwhile_is_refused() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let path = dir.path().join("token");
        std::fs::write(&path, jwt_lasting(0, 3600)).expect("write");
        let reader = file_reader(&path);
        token(&reader).await;
        // As if the wall clock had passed `exp` while the file stood still.
        let exp = SystemTime::now() - Duration::from_secs(1);
        if let Some(good) = reader.inner.state.lock().await.last_good.as_mut() {
            good.exp = Some(exp);
        }
        let error = failure(&reader).await;
        assert_eq!(
            reader.inner.reads.load(Ordering::Relaxed),
            1,
            "not read again"
        );
        assert!(error.to_string().contains(" expired at "), "{error}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_read_keeps_the_last_jwt_while_it_has_more_than_10s_left() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let path = dir.path().join("token");
        let reader = file_reader(&path);

        let good = jwt_lasting(0, 3600);
        std::fs::write(&path, &good).expect("write");
        assert_eq!(reader.subject(), None);
        assert_eq!(token(&reader).await, good);
        let subject = Some((ISSUER.to_owned(), SUBJECT.to_owned()));
        assert_eq!(reader.subject(), subject);
        std::fs::remove_file(&path).expect("rm");
        assert_eq!(token(&reader).await, good, "the file is gone");
        // An expired JWT read in its place does not replace it either.
        std::fs::write(&path, jwt_lasting(3600, -100)).expect("write");
        assert_eq!(token(&reader).await, good, "the new one has expired");
        assert_eq!(reader.subject(), subject);

        // Not a JWT: not kept past a failed read.
        std::fs::write(&path, "opaque-token").expect("write");
        assert_eq!(token(&reader).await, "opaque-token");
        assert_eq!(reader.subject(), None);
        std::fs::remove_file(&path).expect("rm");
        assert!(
            failure(&reader)
                .await
                .to_string()
                .starts_with("client_assertion: file ")
        );
        std::fs::write(&path, " ").expect("write");
        assert_eq!(
            failure(&reader).await.to_string(),
            format!(
                "client_assertion: file {}: the token is empty",
                path.display()
            )
        );

        // A JWT with 10 s or less left: not kept either.
        std::fs::write(&path, jwt_lasting(0, 9)).expect("write");
        token(&reader).await;
        std::fs::remove_file(&path).expect("rm");
        assert_eq!(failure(&reader).await.kind(), ErrorKind::Credential);
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn a_failed_command_keeps_the_last_jwt() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let printed = dir.path().join("printed");
        // Past 80 % of its life, so the command runs at every call.
        let good = jwt_lasting(1000, 100);
        std::fs::write(&printed, &good).expect("write");
        let reader = sh(r#"cat "$1""#, &[&printed]);
        assert_eq!(token(&reader).await, good);
        std::fs::remove_file(&printed).expect("rm");
        assert_eq!(token(&reader).await, good, "cat failed");
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn concurrent_callers_share_one_read() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let counter = dir.path().join("runs");
        let opaque = sh(r#"echo run >> "$1"; echo opaque-token"#, &[&counter]);
        let tokens = join_all((0..10).map(|_| opaque.current())).await;
        for token in tokens {
            assert_eq!(token.expect("a token").expose_secret(), "opaque-token");
        }
        assert_eq!(runs(&counter), 1);

        let counter = dir.path().join("failures");
        let failing = sh(r#"echo run >> "$1"; exit 1"#, &[&counter]);
        let failures = join_all((0..10).map(|_| failing.current())).await;
        assert!(failures.iter().all(Result::is_err));
        assert_eq!(runs(&counter), 1);

        let path = dir.path().join("token");
        std::fs::write(&path, "file-token").expect("write");
        let file = file_reader(&path);
        let clones: Vec<ExternalToken> = (0..10).map(|_| file.clone()).collect();
        let tokens = join_all(clones.iter().map(ExternalToken::current)).await;
        assert!(tokens.iter().all(Result::is_ok));
        assert_eq!(file.inner.reads.load(Ordering::Relaxed), 1);
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn no_token_shows_in_debug_or_in_any_error() {
        const MARK: &str = "tok3nSECRETmark";
        let now = unix_now();
        let live = jwt_signed(&json!({"sub": MARK, "exp": now + 3600}), MARK);
        let expired = jwt_signed(&json!({"sub": MARK, "exp": now - 60}), MARK);
        let payloads: Vec<&str> = [&live, &expired]
            .iter()
            .filter_map(|jwt| jwt.split('.').nth(1))
            .collect();
        let dir = tempfile::tempdir().expect("a temp dir");
        let mut shown = Vec::new();
        let mut show = |reader: &ExternalToken, error: Error| {
            shown.push(format!(
                "{reader:?} {:?} {error:?} {error}",
                reader.source()
            ));
        };

        let path = dir.path().join("expired");
        std::fs::write(&path, &expired).expect("write");
        let reader = file_reader(&path);
        show(&reader, failure(&reader).await);
        let path = dir.path().join("large");
        std::fs::write(&path, live.repeat(MAX_TOKEN_BYTES / live.len() + 1)).expect("write");
        let reader = file_reader(&path);
        show(&reader, failure(&reader).await);

        set_fake_env("AUTHMUX_TEST_MARKED_TOKEN", Some(&expired));
        let reader = ExternalToken::new(
            ExternalSource::Env("AUTHMUX_TEST_MARKED_TOKEN".into()),
            FIELD,
        );
        show(&reader, failure(&reader).await);

        let printed = dir.path().join("printed");
        std::fs::write(&printed, &live).expect("write");
        for script in [
            r#"cat "$1"; cat "$1" >&2; exit 1"#,
            r#"cat "$1"; echo "refused: $(cat "$1")" >&2; exit 1"#,
            r#"cat "$1"; printf 'refused:\n%s\n' "$(cat "$1")" >&2; exit 1"#,
        ] {
            let reader = sh(script, &[&printed]);
            show(&reader, failure(&reader).await);
        }
        let argv = ["/nonexistent/print-token", "--token", live.as_str()];
        let reader = command_reader(&argv, DEFAULT_COMMAND_TIMEOUT);
        show(&reader, failure(&reader).await);

        assert_eq!(shown.len(), 7);
        for text in shown {
            assert!(!text.contains(MARK), "{text}");
            for payload in &payloads {
                assert!(!text.contains(payload), "{text}");
            }
        }
    }

    #[test]
    fn a_reader_is_send_sync_and_cheap_to_clone() {
        fn assert_traits<T: Send + Sync + Clone + 'static>() {}
        fn assert_send<T: Send>(_: &T) {}
        assert_traits::<ExternalToken>();
        let reader = ExternalToken::new(ExternalSource::Env("X".into()), FIELD);
        assert_send(&reader.current());
        assert_eq!(reader.field(), FIELD);
        assert_eq!(reader.source(), &ExternalSource::Env("X".into()));
    }
}
