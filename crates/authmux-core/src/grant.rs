//! The grants a machine uses besides client credentials, declared once for
//! every provider that takes them: the JWT-bearer authorization grant (RFC
//! 7523 §2.1), where a JWT is the grant itself, and token exchange (RFC
//! 8693), where one token is traded for another.
//!
//! ```toml
//! grant_type = "jwt_bearer"
//! assertion = { file = "/run/ci/oidc-token" }           # or { env }, { command }
//! # assertion = { key = { file = "/etc/sa.pem" }, subject = "svc@example.com" }  # signed here
//!
//! grant_type = "token_exchange"
//! subject_token = { client = "entra" }                  # another client's access token; or { file }, { env }, { command }
//! # subject_token_type = "urn:ietf:params:oauth:token-type:access_token"  # default for { client }; …:jwt for the others
//! # actor_token = { file = "/run/actor" }               # with actor_token_type (default as above)
//! # requested_token_type = "urn:ietf:params:oauth:token-type:access_token"
//! ```
//!
//! Every value read from a file, a variable, a command or another client
//! is read again for every request (see [`FreshValue`]).

use std::fmt;
use std::sync::Arc;

use serde::Deserialize;
use serde::de::{self, DeserializeSeed, Deserializer, IntoDeserializer as _, MapAccess, Visitor};

use crate::assertion::ClientAssertion;
use crate::client_auth::read_signing_key;
use crate::error::Error;
use crate::external::{ExternalSource, ExternalToken};
use crate::secret::ClientSecret;
use crate::signing::SigningAlgorithm;
use crate::wire::{FreshValue, TokenRequestBuilder, require};

/// The `grant_type` of the client credentials grant (RFC 6749 §4.4).
pub const CLIENT_CREDENTIALS_GRANT: &str = "client_credentials";
/// The `grant_type` of the JWT-bearer grant (RFC 7523 §2.1).
pub const JWT_BEARER_GRANT: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
/// The `grant_type` of token exchange (RFC 8693 §2.1).
pub const TOKEN_EXCHANGE_GRANT: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
/// The token type of an OAuth 2.0 access token (RFC 8693 §3).
pub const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";
/// The token type of a JWT (RFC 8693 §3).
pub const JWT_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:jwt";

/// Which grant a client's token request uses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
pub enum GrantType {
    /// The client credentials grant (RFC 6749 §4.4), the default.
    #[default]
    #[serde(rename = "client_credentials")]
    ClientCredentials,
    /// The JWT-bearer authorization grant (RFC 7523 §2.1).
    #[serde(
        rename = "jwt_bearer",
        alias = "urn:ietf:params:oauth:grant-type:jwt-bearer"
    )]
    JwtBearer,
    /// Token exchange (RFC 8693).
    #[serde(
        rename = "token_exchange",
        alias = "urn:ietf:params:oauth:grant-type:token-exchange"
    )]
    TokenExchange,
}

impl GrantType {
    /// The config spelling: `client_credentials`, `jwt_bearer` or
    /// `token_exchange`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ClientCredentials => "client_credentials",
            Self::JwtBearer => "jwt_bearer",
            Self::TokenExchange => "token_exchange",
        }
    }

    /// The `grant_type` sent, and listed in RFC 8414's
    /// `grant_types_supported`.
    pub fn wire_name(self) -> &'static str {
        match self {
            Self::ClientCredentials => CLIENT_CREDENTIALS_GRANT,
            Self::JwtBearer => JWT_BEARER_GRANT,
            Self::TokenExchange => TOKEN_EXCHANGE_GRANT,
        }
    }
}

/// A token a request carries that comes from elsewhere: a file, a
/// variable, a command, or another configured client's access token.
///
/// ```toml
/// subject_token = { client = "entra" }
/// subject_token = { file = "/var/run/secrets/tokens/token" }
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TokenInput {
    /// Read from a file, a variable or a command.
    External(ExternalSource),
    /// The access token of the client of this name, as its cache serves it.
    Client(String),
}

impl TokenInput {
    /// The token type RFC 8693 names it by unless configured: an access
    /// token for another client's, a JWT for the others.
    pub fn default_type(&self) -> &'static str {
        match self {
            Self::Client(_) => ACCESS_TOKEN_TYPE,
            Self::External(_) => JWT_TOKEN_TYPE,
        }
    }

    /// The client whose token this is, if any.
    pub fn client(&self) -> Option<&str> {
        match self {
            Self::Client(name) => Some(name),
            Self::External(_) => None,
        }
    }

    /// For messages: `client entra`, `file /var/run/x`.
    pub fn describe(&self) -> String {
        match self {
            Self::Client(name) => format!("client {name}"),
            Self::External(source) => source.describe(),
        }
    }

    /// The value to send for `field`: a reader of the external source, or
    /// `clients`' answer for the named client.
    ///
    /// # Errors
    ///
    /// A config error when `clients` knows no such client.
    pub fn resolve(
        &self,
        field: &'static str,
        clients: &dyn Fn(&str) -> Option<Arc<dyn FreshValue>>,
    ) -> Result<Arc<dyn FreshValue>, Error> {
        match self {
            Self::External(source) => Ok(Arc::new(ExternalToken::new(source.clone(), field))),
            Self::Client(name) => clients(name).ok_or_else(|| {
                Error::config(format!("{field}: no client named {name:?} to take it from"))
            }),
        }
    }
}

impl<'de> Deserialize<'de> for TokenInput {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Input;
        impl<'de> Visitor<'de> for Input {
            type Value = TokenInput;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(
                    "a table: { client = \"name\" }, { file = \"path\" }, { env = \"VAR\" } or \
                     { command = [\"program\", …] }",
                )
            }
            // A string may be a token pasted in by mistake: never quoted.
            fn visit_str<E: de::Error>(self, _: &str) -> Result<TokenInput, E> {
                Err(E::custom(format_args!(
                    "a plain string is not a source (it is not shown); expected {}",
                    &self as &dyn de::Expected
                )))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<TokenInput, A::Error> {
                let Some(first) = map.next_key::<String>()? else {
                    return Err(de::Error::invalid_length(0, &self));
                };
                if first == "client" {
                    let name: String = map.next_value()?;
                    if let Some(more) = map.next_key::<String>()? {
                        return Err(de::Error::unknown_field(&more, &["client"]));
                    }
                    return Ok(TokenInput::Client(name));
                }
                ExternalSource::deserialize(de::value::MapAccessDeserializer::new(Prepend {
                    first: Some(first),
                    map,
                }))
                .map(TokenInput::External)
            }
        }
        deserializer.deserialize_any(Input)
    }
}

/// A map whose first key was already read.
struct Prepend<A> {
    first: Option<String>,
    map: A,
}

impl<'de, A: MapAccess<'de>> MapAccess<'de> for Prepend<A> {
    type Error = A::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, A::Error> {
        match self.first.take() {
            Some(first) => seed.deserialize(first.into_deserializer()).map(Some),
            None => self.map.next_key_seed(seed),
        }
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, A::Error> {
        self.map.next_value_seed(seed)
    }
}

/// The assertion of the JWT-bearer grant: read from elsewhere, or signed
/// here for every request.
#[derive(Clone, Debug)]
pub enum GrantAssertion {
    /// A JWT someone else issued, read from a file, a variable or a
    /// command.
    External(ExternalSource),
    /// A JWT signed with the client's key.
    Signed(SignedAssertion),
}

/// A JWT-bearer grant signed here, anew for every request, valid for
/// [`ASSERTION_LIFETIME`](crate::assertion::ASSERTION_LIFETIME):
///
/// ```toml
/// assertion = { key = { file = "/etc/authmux/sa.pem" }, issuer = "svc@example.com", subject = "svc@example.com" }
/// ```
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedAssertion {
    /// The private key, RSA or P-256, PEM or JWK: inline, `{ env }` or
    /// `{ file }`.
    pub key: ClientSecret,
    /// `iss`; the client id unless set.
    #[serde(default)]
    pub issuer: Option<String>,
    /// `sub`; the issuer unless set.
    #[serde(default)]
    pub subject: Option<String>,
    /// `aud`; the issuer when discovered, else the token endpoint, unless
    /// set.
    #[serde(default)]
    pub audience: Option<String>,
    /// RS256, PS256 or ES256; from the key unless set.
    #[serde(default)]
    pub alg: Option<SigningAlgorithm>,
    /// The header's `kid`; the JWK's unless set.
    #[serde(default)]
    pub kid: Option<String>,
}

impl<'de> Deserialize<'de> for GrantAssertion {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Assertion;
        impl<'de> Visitor<'de> for Assertion {
            type Value = GrantAssertion;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(
                    "a table: { file = \"path\" }, { env = \"VAR\" }, { command = [\"program\", …] } \
                     or { key = { file = \"key.pem\" }, subject = \"…\" }",
                )
            }
            // A string may be a token pasted in by mistake: never quoted.
            fn visit_str<E: de::Error>(self, _: &str) -> Result<GrantAssertion, E> {
                Err(E::custom(format_args!(
                    "a plain string is not a source (it is not shown); expected {}",
                    &self as &dyn de::Expected
                )))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<GrantAssertion, A::Error> {
                let Some(first) = map.next_key::<String>()? else {
                    return Err(de::Error::invalid_length(0, &self));
                };
                let external = matches!(first.as_str(), "file" | "env" | "command" | "timeout");
                let rest = de::value::MapAccessDeserializer::new(Prepend {
                    first: Some(first),
                    map,
                });
                if external {
                    ExternalSource::deserialize(rest).map(GrantAssertion::External)
                } else {
                    SignedAssertion::deserialize(rest).map(GrantAssertion::Signed)
                }
            }
        }
        deserializer.deserialize_any(Assertion)
    }
}

/// Which grant a client uses and what it carries: the keys every provider
/// that takes more than client credentials shares. They sit flat in the
/// client's table, beside its client authentication; see the
/// [module](self).
#[derive(Clone, Debug, Default)]
pub struct GrantConfig {
    /// The grant; client credentials unless set.
    pub grant_type: Option<GrantType>,
    /// The JWT of the JWT-bearer grant.
    pub assertion: Option<GrantAssertion>,
    /// The token to exchange.
    pub subject_token: Option<TokenInput>,
    /// Its type; [`TokenInput::default_type`] unless set.
    pub subject_token_type: Option<String>,
    /// The token of whoever acts for the subject (RFC 8693 §1.1).
    pub actor_token: Option<TokenInput>,
    /// Its type; [`TokenInput::default_type`] unless set.
    pub actor_token_type: Option<String>,
    /// The type of token wanted (RFC 8693 §2.1); the server's choice
    /// unless set.
    pub requested_token_type: Option<String>,
}

/// What a [`GrantConfig`] needs from where it is applied.
pub struct GrantContext<'a> {
    /// The client id, the default `iss` of a signed assertion.
    pub client_id: &'a str,
    /// The default `aud` of a signed assertion: the issuer, else the token
    /// endpoint.
    pub audience: &'a str,
    /// The access token of another configured client, by name.
    pub clients: &'a dyn Fn(&str) -> Option<Arc<dyn FreshValue>>,
}

impl fmt::Debug for GrantContext<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GrantContext")
            .field("client_id", &self.client_id)
            .field("audience", &self.audience)
            .finish_non_exhaustive()
    }
}

impl GrantConfig {
    /// The config keys.
    pub const FIELDS: &'static [&'static str] = &[
        "grant_type",
        "assertion",
        "subject_token",
        "subject_token_type",
        "actor_token",
        "actor_token_type",
        "requested_token_type",
    ];

    /// The grant: client credentials unless set.
    pub fn grant(&self) -> GrantType {
        self.grant_type.unwrap_or_default()
    }

    /// The clients whose tokens this grant carries, with the key naming
    /// each: `("subject_token", "entra")`.
    pub fn client_inputs(&self) -> impl Iterator<Item = (&'static str, &str)> {
        [
            ("subject_token", &self.subject_token),
            ("actor_token", &self.actor_token),
        ]
        .into_iter()
        .filter_map(|(field, input)| input.as_ref()?.client().map(|name| (field, name)))
    }

    /// Reads the value of `key` from `map` into its field. `Ok(false)` for
    /// a key that is not one of [`FIELDS`](Self::FIELDS).
    pub(crate) fn read_value<'de, A: MapAccess<'de>>(
        &mut self,
        key: &str,
        map: &mut A,
    ) -> Result<bool, A::Error> {
        match key {
            "grant_type" => self.grant_type = Some(map.next_value()?),
            "assertion" => self.assertion = Some(map.next_value()?),
            "subject_token" => self.subject_token = Some(map.next_value()?),
            "subject_token_type" => self.subject_token_type = Some(map.next_value()?),
            "actor_token" => self.actor_token = Some(map.next_value()?),
            "actor_token_type" => self.actor_token_type = Some(map.next_value()?),
            "requested_token_type" => self.requested_token_type = Some(map.next_value()?),
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// Checks that every key set belongs to the grant: `subject_token:
    /// only used with grant_type = "token_exchange"`.
    ///
    /// # Errors
    ///
    /// The first key that does not belong, or a missing one.
    pub fn check(&self) -> Result<(), Error> {
        let grant = self.grant();
        let belongs = |key: &str| match key {
            "assertion" => grant == GrantType::JwtBearer,
            _ => grant == GrantType::TokenExchange,
        };
        let set = [
            ("assertion", self.assertion.is_some()),
            ("subject_token", self.subject_token.is_some()),
            ("subject_token_type", self.subject_token_type.is_some()),
            ("actor_token", self.actor_token.is_some()),
            ("actor_token_type", self.actor_token_type.is_some()),
            ("requested_token_type", self.requested_token_type.is_some()),
        ];
        if let Some((key, _)) = set.iter().find(|(key, set)| *set && !belongs(key)) {
            let wanted = if *key == "assertion" {
                "jwt_bearer"
            } else {
                "token_exchange"
            };
            return Err(Error::config(format!(
                "{key}: only used with grant_type = \"{wanted}\", not {:?}",
                grant.as_str()
            )));
        }
        match grant {
            GrantType::JwtBearer if self.assertion.is_none() => Err(Error::config(
                "assertion: required with grant_type = \"jwt_bearer\": { file = \"…\" }, \
                 { env = \"…\" }, { command = [\"…\"] } or { key = { file = \"…\" } }",
            )),
            GrantType::TokenExchange if self.subject_token.is_none() => Err(Error::config(
                "subject_token: required with grant_type = \"token_exchange\": \
                 { client = \"…\" }, { file = \"…\" }, { env = \"…\" } or { command = [\"…\"] }",
            )),
            GrantType::TokenExchange
                if self.actor_token_type.is_some() && self.actor_token.is_none() =>
            {
                Err(Error::config(
                    "actor_token_type: only used with actor_token (RFC 8693 §2.1)",
                ))
            }
            _ => {
                for (key, value) in [
                    ("subject_token_type", &self.subject_token_type),
                    ("actor_token_type", &self.actor_token_type),
                    ("requested_token_type", &self.requested_token_type),
                ] {
                    if let Some(value) = value {
                        token_type_uri(key, value)?;
                    }
                }
                Ok(())
            }
        }
    }

    /// Adds `grant_type` and the grant's parameters to `request`; values
    /// read from elsewhere are read anew for every request.
    ///
    /// # Errors
    ///
    /// What [`check`](Self::check) finds, an unknown client, or a signing
    /// key that cannot be read.
    pub fn apply(
        &self,
        request: TokenRequestBuilder,
        context: &GrantContext<'_>,
    ) -> Result<TokenRequestBuilder, Error> {
        self.check()?;
        let grant = self.grant();
        let mut request = request.param("grant_type", grant.wire_name());
        match grant {
            GrantType::ClientCredentials => {}
            GrantType::JwtBearer => {
                request = match self.assertion.as_ref() {
                    Some(GrantAssertion::External(source)) => request.fresh_param(
                        "assertion",
                        Arc::new(ExternalToken::new(source.clone(), "assertion")),
                    ),
                    Some(GrantAssertion::Signed(signed)) => {
                        request.signed_param("assertion", signed_assertion(signed, context)?)
                    }
                    None => request,
                };
            }
            GrantType::TokenExchange => {
                if let Some(subject) = &self.subject_token {
                    let kind = self
                        .subject_token_type
                        .as_deref()
                        .unwrap_or(subject.default_type());
                    request = request
                        .fresh_param(
                            "subject_token",
                            subject.resolve("subject_token", context.clients)?,
                        )
                        .param("subject_token_type", kind.trim());
                }
                if let Some(actor) = &self.actor_token {
                    let kind = self
                        .actor_token_type
                        .as_deref()
                        .unwrap_or(actor.default_type());
                    request = request
                        .fresh_param(
                            "actor_token",
                            actor.resolve("actor_token", context.clients)?,
                        )
                        .param("actor_token_type", kind.trim());
                }
                request = request.param_opt(
                    "requested_token_type",
                    self.requested_token_type.as_deref().map(str::trim),
                );
            }
        }
        Ok(request)
    }
}

/// A token type must be a URI (RFC 8693 §3), such as
/// `urn:ietf:params:oauth:token-type:jwt`.
fn token_type_uri(key: &str, value: &str) -> Result<(), Error> {
    let value = value.trim();
    require(key, value)?;
    if value.chars().any(char::is_whitespace) || !value.contains(':') {
        return Err(Error::config(format!(
            "{key}: {value:?} is not a URI such as {JWT_TOKEN_TYPE:?}"
        )));
    }
    Ok(())
}

/// The assertions `signed` describes.
fn signed_assertion(
    signed: &SignedAssertion,
    context: &GrantContext<'_>,
) -> Result<ClientAssertion, Error> {
    let key = read_signing_key(&signed.key, "assertion.key")?;
    let issuer = signed.issuer.as_deref().unwrap_or(context.client_id).trim();
    require("assertion.issuer", issuer)?;
    let subject = signed.subject.as_deref().unwrap_or(issuer).trim();
    require("assertion.subject", subject)?;
    let audience = signed
        .audience
        .as_deref()
        .unwrap_or(context.audience)
        .trim();
    require("assertion.audience", audience)?;
    ClientAssertion::new(issuer, audience, key, signed.alg, signed.kid.as_deref())
        .map_err(|error| {
            Error::config(
                error
                    .message()
                    .replace("client_assertion_alg", "assertion.alg")
                    .replace("client_assertion_key", "assertion.key"),
            )
        })
        .map(|assertion| assertion.with_issuer_and_subject(issuer, subject))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_input_is_a_client_or_an_external_source() {
        let client: TokenInput = serde_json::from_str(r#"{"client": "entra"}"#).expect("client");
        assert_eq!(client, TokenInput::Client("entra".into()));
        assert_eq!(client.default_type(), ACCESS_TOKEN_TYPE);
        let file: TokenInput = serde_json::from_str(r#"{"file": "/run/t"}"#).expect("file");
        assert_eq!(
            file,
            TokenInput::External(ExternalSource::File("/run/t".into()))
        );
        assert_eq!(file.default_type(), JWT_TOKEN_TYPE);
        let mixed = serde_json::from_str::<TokenInput>(r#"{"client": "a", "file": "/x"}"#)
            .expect_err("one source");
        assert!(
            mixed.to_string().contains("unknown field `file`"),
            "{mixed}"
        );
        let pasted =
            serde_json::from_str::<TokenInput>(r#""eyJhbGciOi.e30.sig""#).expect_err("a table");
        assert!(!pasted.to_string().contains("eyJ"), "{pasted}");
    }

    #[test]
    fn a_grant_assertion_is_read_or_signed() {
        let read: GrantAssertion =
            serde_json::from_str(r#"{"env": "CI_TOKEN"}"#).expect("external");
        assert!(matches!(
            read,
            GrantAssertion::External(ExternalSource::Env(_))
        ));
        let signed: GrantAssertion =
            serde_json::from_str(r#"{"subject": "svc", "key": {"file": "/k.pem"}}"#)
                .expect("signed");
        assert!(
            matches!(signed, GrantAssertion::Signed(SignedAssertion { ref subject, .. }) if subject.as_deref() == Some("svc"))
        );
        let typo =
            serde_json::from_str::<GrantAssertion>(r#"{"key": {"file": "/k"}, "subjet": "x"}"#)
                .expect_err("typo");
        assert!(
            typo.to_string().contains("unknown field `subjet`"),
            "{typo}"
        );
    }

    #[test]
    fn keys_of_another_grant_and_missing_ones_are_named() {
        let exchange_key = GrantConfig {
            subject_token: Some(TokenInput::Client("a".into())),
            ..GrantConfig::default()
        };
        assert_eq!(
            exchange_key.check().expect_err("not used").message(),
            "subject_token: only used with grant_type = \"token_exchange\", not \"client_credentials\""
        );
        let missing = GrantConfig {
            grant_type: Some(GrantType::TokenExchange),
            ..GrantConfig::default()
        };
        assert!(
            missing
                .check()
                .expect_err("required")
                .message()
                .starts_with("subject_token: required")
        );
        let bearer = GrantConfig {
            grant_type: Some(GrantType::JwtBearer),
            ..GrantConfig::default()
        };
        assert!(
            bearer
                .check()
                .expect_err("required")
                .message()
                .starts_with("assertion: required")
        );
        let bad_type = GrantConfig {
            grant_type: Some(GrantType::TokenExchange),
            subject_token: Some(TokenInput::Client("a".into())),
            subject_token_type: Some("jwt".into()),
            ..GrantConfig::default()
        };
        assert!(
            bad_type
                .check()
                .expect_err("a URI")
                .message()
                .contains("not a URI")
        );
        let lone_actor_type = GrantConfig {
            grant_type: Some(GrantType::TokenExchange),
            subject_token: Some(TokenInput::Client("a".into())),
            actor_token_type: Some(JWT_TOKEN_TYPE.into()),
            ..GrantConfig::default()
        };
        assert!(
            lone_actor_type
                .check()
                .expect_err("pair")
                .message()
                .starts_with("actor_token_type")
        );
    }

    #[test]
    fn the_grant_type_reads_its_short_name_or_its_urn() {
        for (text, grant) in [
            ("\"jwt_bearer\"", GrantType::JwtBearer),
            (&format!("{JWT_BEARER_GRANT:?}"), GrantType::JwtBearer),
            ("\"token_exchange\"", GrantType::TokenExchange),
            ("\"client_credentials\"", GrantType::ClientCredentials),
        ] {
            assert_eq!(serde_json::from_str::<GrantType>(text).expect(text), grant);
        }
    }
}
