//! Where a client secret comes from: inline, an environment variable, or a file.

use std::fmt;
use std::path::PathBuf;

use secrecy::SecretString;
use serde::de::{self, Deserialize, Deserializer, MapAccess, Visitor};

use crate::error::Error;

/// A client secret as configured: inline, from an environment variable, or
/// from a file (a trailing newline is trimmed).
///
/// ```toml
/// client_secret = "inline value"
/// client_secret = { env = "AUTH0_CLIENT_SECRET" }
/// client_secret = { file = "/run/secrets/auth0" }
/// ```
///
/// A table names exactly one source: `{ env = "A", file = "b" }` is an
/// error, never a silent choice. `Debug` names the variable or file, never
/// the value.
#[derive(Clone)]
pub enum ClientSecret {
    /// The secret itself.
    Inline(SecretString),
    /// The name of an environment variable holding the secret.
    Env {
        /// The variable's name.
        env: String,
    },
    /// The path of a file holding the secret.
    File {
        /// The file's path.
        file: PathBuf,
    },
}

impl ClientSecret {
    /// An inline secret.
    pub fn inline(secret: impl Into<String>) -> Self {
        Self::Inline(SecretString::from(secret.into()))
    }

    /// Reads the secret. `field` names the config key in errors, which say
    /// which variable or file failed but never what it held.
    pub fn resolve(&self, field: &str) -> Result<SecretString, Error> {
        self.resolve_file(field, "client secret file")
    }

    /// [`resolve`](Self::resolve), with `file_noun` naming a file that
    /// cannot be read: `cannot read key file /etc/k.pem: …`.
    pub fn resolve_file(&self, field: &str, file_noun: &str) -> Result<SecretString, Error> {
        let value = match self {
            Self::Inline(secret) => return non_empty(secret.clone(), field),
            Self::Env { env } => std::env::var(env).map_err(|error| {
                let why = match error {
                    std::env::VarError::NotPresent => "is not set",
                    std::env::VarError::NotUnicode(_) => "is not valid UTF-8",
                };
                Error::config(format!("{field}: environment variable {env} {why}"))
            })?,
            Self::File { file } => std::fs::read_to_string(file).map_err(|error| {
                // `No such file or directory (os error 2)`: the OS's words,
                // not the terse `entity not found` of the error kind.
                let text = error.to_string();
                let why = text.split(" (os error ").next().unwrap_or(&text);
                Error::config(format!(
                    "{field}: cannot read {file_noun} {}: {why}",
                    file.display()
                ))
            })?,
        };
        let trimmed = value.trim_end_matches(['\r', '\n']);
        non_empty(SecretString::from(trimmed.to_owned()), field)
    }
}

fn non_empty(secret: SecretString, field: &str) -> Result<SecretString, Error> {
    use secrecy::ExposeSecret as _;
    if secret.expose_secret().trim().is_empty() {
        return Err(Error::config(format!("{field}: must not be empty")));
    }
    Ok(secret)
}

impl<'de> Deserialize<'de> for ClientSecret {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(SourceVisitor)
    }
}

/// Reads the three shapes of [`ClientSecret`]. An error never quotes a
/// value that may be the secret.
struct SourceVisitor;

impl<'de> Visitor<'de> for SourceVisitor {
    type Value = ClientSecret;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string, { env = \"VARIABLE\" } or { file = \"path\" }")
    }

    fn visit_str<E: de::Error>(self, secret: &str) -> Result<ClientSecret, E> {
        Ok(ClientSecret::inline(secret))
    }

    fn visit_string<E: de::Error>(self, secret: String) -> Result<ClientSecret, E> {
        Ok(ClientSecret::Inline(SecretString::from(secret)))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<ClientSecret, A::Error> {
        const SOURCES: &[&str] = &["env", "file"];
        let mut env: Option<String> = None;
        let mut file: Option<PathBuf> = None;
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "env" if env.is_none() => env = Some(map.next_value()?),
                "file" if file.is_none() => file = Some(map.next_value()?),
                "env" => return Err(de::Error::duplicate_field("env")),
                "file" => return Err(de::Error::duplicate_field("file")),
                other => return Err(de::Error::unknown_field(other, SOURCES)),
            }
        }
        match (env, file) {
            (Some(env), None) => Ok(ClientSecret::Env { env }),
            (None, Some(file)) => Ok(ClientSecret::File { file }),
            (Some(_), Some(_)) => Err(de::Error::custom(
                "both env and file are set; give one source only",
            )),
            (None, None) => Err(de::Error::custom(
                "an empty table; expected { env = \"VARIABLE\" } or { file = \"path\" }",
            )),
        }
    }
}

impl From<SecretString> for ClientSecret {
    fn from(secret: SecretString) -> Self {
        Self::Inline(secret)
    }
}

/// Two sources are equal when they name the same variable or file, or hold
/// the same inline value: what tells apart the HTTP clients (and their
/// connection pools) of clients with different TLS identities.
impl PartialEq for ClientSecret {
    fn eq(&self, other: &Self) -> bool {
        use secrecy::ExposeSecret as _;
        match (self, other) {
            (Self::Inline(a), Self::Inline(b)) => a.expose_secret() == b.expose_secret(),
            (Self::Env { env: a }, Self::Env { env: b }) => a == b,
            (Self::File { file: a }, Self::File { file: b }) => a == b,
            _ => false,
        }
    }
}

impl Eq for ClientSecret {}

impl std::hash::Hash for ClientSecret {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        use secrecy::ExposeSecret as _;
        std::mem::discriminant(self).hash(state);
        match self {
            Self::Inline(secret) => secret.expose_secret().hash(state),
            Self::Env { env } => env.hash(state),
            Self::File { file } => file.hash(state),
        }
    }
}

impl fmt::Debug for ClientSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Inline(_) => f.write_str("ClientSecret::Inline([redacted])"),
            Self::Env { env } => write!(f, "ClientSecret::Env({env})"),
            Self::File { file } => write!(f, "ClientSecret::File({})", file.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret as _;

    #[derive(serde::Deserialize)]
    struct Config {
        client_secret: ClientSecret,
    }

    fn parse(json: &str) -> Result<ClientSecret, serde_json::Error> {
        serde_json::from_str::<Config>(json).map(|config| config.client_secret)
    }

    #[test]
    fn inline_env_and_file_sources() {
        let inline = parse(r#"{"client_secret":"s3cr3t-inline"}"#).expect("inline");
        assert_eq!(
            inline
                .resolve("client_secret")
                .expect("value")
                .expose_secret(),
            "s3cr3t-inline"
        );
        assert!(!format!("{inline:?}").contains("s3cr3t"));

        let path = std::env::temp_dir().join(format!("authmux-secret-{}", std::process::id()));
        std::fs::write(&path, "s3cr3t-file\n").expect("write");
        let file = parse(&format!(
            r#"{{"client_secret":{{"file":{:?}}}}}"#,
            path.display()
        ))
        .expect("file");
        assert_eq!(
            file.resolve("client_secret")
                .expect("value")
                .expose_secret(),
            "s3cr3t-file"
        );
        std::fs::remove_file(&path).expect("remove");
        let error = file.resolve("client_secret").expect_err("gone");
        assert!(
            error.to_string().starts_with("client_secret: cannot read"),
            "{error}"
        );

        // PATH is always set; its value must not show up anywhere.
        let env = parse(r#"{"client_secret":{"env":"AUTHMUX_TEST_SURELY_UNSET_VARIABLE"}}"#)
            .expect("env");
        let error = env.resolve("client_secret").expect_err("unset");
        assert_eq!(
            error.to_string(),
            "client_secret: environment variable AUTHMUX_TEST_SURELY_UNSET_VARIABLE is not set"
        );
        assert_eq!(
            format!("{env:?}"),
            "ClientSecret::Env(AUTHMUX_TEST_SURELY_UNSET_VARIABLE)"
        );
    }

    #[test]
    fn bad_shapes_and_empty_values_are_clear_errors() {
        let error = |json: &str| match parse(json) {
            Ok(_) => panic!("{json} must not parse"),
            Err(error) => error.to_string(),
        };
        let unknown = error(r#"{"client_secret":{"vault":"x"}}"#);
        assert!(unknown.contains("unknown field `vault`"), "{unknown}");
        let number = error(r#"{"client_secret":12345}"#);
        assert!(number.contains(r#"{ env = "VARIABLE" }"#), "{number}");
        let both = error(r#"{"client_secret":{"env":"OLD","file":"/run/new"}}"#);
        assert!(both.contains("both env and file are set"), "{both}");
        let empty = error(r#"{"client_secret":{}}"#);
        assert!(empty.contains("an empty table"), "{empty}");
        let empty = parse(r#"{"client_secret":"  "}"#).expect("parses");
        assert_eq!(
            empty
                .resolve("client_secret")
                .expect_err("empty")
                .to_string(),
            "client_secret: must not be empty"
        );
    }

    #[test]
    fn a_missing_secret_file_is_named_with_the_cause() {
        let path = std::env::temp_dir()
            .join(format!("authmux-missing-{}", std::process::id()))
            .join("secret");
        let missing = ClientSecret::File { file: path.clone() };
        let error = missing
            .resolve("clients.api.client_secret")
            .expect_err("missing")
            .to_string();
        let expected = format!(
            "clients.api.client_secret: cannot read client secret file {}: ",
            path.display()
        );
        assert!(error.starts_with(&expected), "{error}");
        #[cfg(target_os = "linux")]
        assert!(error.ends_with(": No such file or directory"), "{error}");
        assert!(!error.contains("entity not found"), "{error}");
        assert!(!error.contains("os error"), "{error}");
    }
}
