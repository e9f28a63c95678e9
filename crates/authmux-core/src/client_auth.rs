//! Client authentication, declared once for every provider that takes it:
//! the config keys ([`ClientAuthConfig`]), the builder setters
//! ([`ClientAuthBuilder`]) and the code that reads the credential and puts
//! it on a request ([`ClientCredentials`]).
//!
//! A provider's config holds a [`ClientAuthConfig`] beside its own keys,
//! flat in the same table:
//!
//! ```toml
//! [clients.api]
//! provider = "oauth2"
//! token_url = "https://idp.example.com/oauth2/token"
//! client_id = "my-client"
//! client_auth = "private_key_jwt"
//! client_assertion_key = { file = "/etc/authmux/client.pem" }
//! ```
//!
//! Its `Deserialize` routes each key of the table: the provider's own keys
//! to serde's derive (with `#[serde(remote = "Self")]`), the client
//! authentication keys to [`ClientAuthConfig`], and any other key to an
//! `unknown field` error that lists both sets, as `deny_unknown_fields`
//! would. Nothing is buffered, so a deserializer that tracks the key path
//! of an error (figment's) still names the key. See [`WithClientAuth`].

use std::any::TypeId;
use std::collections::HashMap;
use std::fmt;
use std::marker::PhantomData;
use std::sync::{Arc, Mutex, PoisonError};

use secrecy::{ExposeSecret as _, SecretString};
use serde::de::{self, DeserializeSeed, Deserializer, IntoDeserializer as _, MapAccess, Visitor};

use crate::assertion::{ClientAssertion, JWT_BEARER_ASSERTION_TYPE};
use crate::error::Error;
use crate::external::{ExternalSource, ExternalToken};
use crate::grant::GrantConfig;
use crate::secret::ClientSecret;
use crate::signing::{SigningAlgorithm, SigningKey};
use crate::wire::{ClientAuth, TokenRequestBuilder, require};

/// How a client authenticates to the token endpoint: the keys every
/// provider that takes client authentication shares.
///
/// ```toml
/// client_auth = "private_key_jwt"        # or "post", "basic"; the provider's default unless set
/// client_secret = { env = "MY_SECRET" }  # for "post" and "basic": inline, { env } or { file }
/// client_assertion_key = { file = "/etc/authmux/client.pem" } # private_key_jwt: RSA or P-256, PEM or JWK
/// client_assertion_alg = "PS256"         # RS256, PS256 or ES256; default from the key
/// client_assertion_kid = "key-1"         # the header's `kid`; the JWK's `kid` unless set
/// client_assertion_audience = "https://idp.example.com/" # the provider's convention unless set
/// ```
///
/// or, with a token someone else issues and rotates (a Kubernetes projected
/// service-account token, a GitHub Actions OIDC token, a SPIFFE JWT-SVID):
///
/// ```toml
/// client_auth = "client_assertion"
/// client_assertion = { file = "/var/run/secrets/azure/tokens/azure-identity-token" } # or { env }, { command }
/// client_assertion_type = "urn:ietf:params:oauth:client-assertion-type:jwt-spiffe"  # default: …:jwt-bearer
/// ```
///
/// `auth_style`, the former name of `client_auth`, is still read. `Debug`
/// names a secret's or key's variable or file, never its value.
#[derive(Clone, Debug, Default)]
pub struct ClientAuthConfig {
    /// How the client authenticates; the provider's default unless set.
    pub client_auth: Option<ClientAuth>,
    /// The client secret of `post` and `basic`.
    pub client_secret: Option<ClientSecret>,
    /// The private key of `private_key_jwt`, RSA or P-256, PEM (PKCS#1,
    /// PKCS#8, SEC1) or a JWK.
    pub client_assertion_key: Option<ClientSecret>,
    /// The `private_key_jwt` assertion's algorithm; unless set, the JWK's
    /// `alg`, else RS256 for an RSA key (PS256 for an RSA-PSS one) and
    /// ES256 for a P-256 key.
    pub client_assertion_alg: Option<SigningAlgorithm>,
    /// The `kid` header of the `private_key_jwt` assertion; the JWK's
    /// `kid` unless set.
    pub client_assertion_kid: Option<String>,
    /// The `aud` of the `private_key_jwt` assertion; the provider's
    /// convention unless set.
    pub client_assertion_audience: Option<String>,
    /// Where the `client_assertion` method reads its assertion: `{ file =
    /// "…" }` (re-read as it rotates), `{ env = "…" }` or `{ command = […]
    /// }`; see [`ExternalToken`].
    pub client_assertion: Option<ExternalSource>,
    /// The `client_assertion_type` of the `client_assertion` method;
    /// [`JWT_BEARER_ASSERTION_TYPE`] unless set, or SPIFFE's
    /// `urn:ietf:params:oauth:client-assertion-type:jwt-spiffe`.
    pub client_assertion_type: Option<String>,
}

impl ClientAuthConfig {
    /// The config keys, in the order the docs list them.
    pub const FIELDS: &'static [&'static str] = &[
        "client_auth",
        "client_secret",
        "client_assertion_key",
        "client_assertion_alg",
        "client_assertion_kid",
        "client_assertion_audience",
        "client_assertion",
        "client_assertion_type",
    ];

    /// A client that authenticates with `secret` as `auth` says.
    pub fn secret(auth: ClientAuth, secret: impl Into<ClientSecret>) -> Self {
        Self {
            client_auth: Some(auth),
            client_secret: Some(secret.into()),
            ..Self::default()
        }
    }

    /// A client that sends the assertion read from `source` (RFC 7521
    /// §4.2), of the default type, [`JWT_BEARER_ASSERTION_TYPE`].
    pub fn client_assertion(source: ExternalSource) -> Self {
        Self {
            client_auth: Some(ClientAuth::ClientAssertion),
            client_assertion: Some(source),
            ..Self::default()
        }
    }

    /// A `private_key_jwt` client signing with `key`.
    pub fn private_key_jwt(key: impl Into<ClientSecret>) -> Self {
        Self {
            client_auth: Some(ClientAuth::PrivateKeyJwt),
            client_assertion_key: Some(key.into()),
            ..Self::default()
        }
    }

    /// Reads the value of `key` from `map` into its field. `Ok(false)` for
    /// a key that is not one of [`FIELDS`](Self::FIELDS) (nor an alias),
    /// whose value is then still to be read.
    fn read_value<'de, A: MapAccess<'de>>(
        &mut self,
        key: &str,
        map: &mut A,
    ) -> Result<bool, A::Error> {
        match key {
            "client_auth" | "auth_style" => self.client_auth = Some(map.next_value()?),
            "client_secret" => self.client_secret = Some(map.next_value()?),
            "client_assertion_key" => self.client_assertion_key = Some(map.next_value()?),
            "client_assertion_alg" => self.client_assertion_alg = Some(map.next_value()?),
            "client_assertion_kid" => self.client_assertion_kid = Some(map.next_value()?),
            "client_assertion_audience" => {
                self.client_assertion_audience = Some(map.next_value()?);
            }
            "client_assertion" => self.client_assertion = Some(map.next_value()?),
            "client_assertion_type" => self.client_assertion_type = Some(map.next_value()?),
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// The config key of the first `client_assertion` setting given, if any.
    fn first_assertion_setting(&self) -> Option<&'static str> {
        [
            (self.client_assertion.is_some(), "client_assertion"),
            (
                self.client_assertion_type.is_some(),
                "client_assertion_type",
            ),
        ]
        .into_iter()
        .find_map(|(set, name)| set.then_some(name))
    }

    /// The config key of the first `private_key_jwt` setting given, if any.
    fn first_key_setting(&self) -> Option<&'static str> {
        [
            (self.client_assertion_key.is_some(), "client_assertion_key"),
            (self.client_assertion_alg.is_some(), "client_assertion_alg"),
            (self.client_assertion_kid.is_some(), "client_assertion_kid"),
            (
                self.client_assertion_audience.is_some(),
                "client_assertion_audience",
            ),
        ]
        .into_iter()
        .find_map(|(set, name)| set.then_some(name))
    }
}

impl<'de> de::Deserialize<'de> for ClientAuthConfig {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Keys;
        impl<'de> Visitor<'de> for Keys {
            type Value = ClientAuthConfig;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a table of client authentication settings")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut config = ClientAuthConfig::default();
                while let Some(key) = map.next_key::<String>()? {
                    if !config.read_value(&key, &mut map)? {
                        return Err(refuse(&mut map, &key, ClientAuthConfig::FIELDS));
                    }
                }
                Ok(config)
            }
        }
        deserializer.deserialize_struct("ClientAuthConfig", ClientAuthConfig::FIELDS, Keys)
    }
}

/// A provider config that holds a [`ClientAuthConfig`] among its own keys.
///
/// The provider derives `Deserialize` with `#[serde(remote = "Self")]`
/// (which makes the derived code an inherent `deserialize` function),
/// marks its `ClientAuthConfig` field `#[serde(skip)]`, and implements
/// this trait and `Deserialize` in a few lines:
///
/// ```
/// use authmux_core::client_auth::{ClientAuthConfig, WithClientAuth};
///
/// #[derive(Debug, serde::Deserialize)]
/// #[serde(deny_unknown_fields, remote = "Self")]
/// pub struct MyConfig {
///     pub token_url: String,
///     pub client_id: String,
///     #[serde(skip)]
///     pub auth: ClientAuthConfig,
/// }
///
/// impl<'de> serde::Deserialize<'de> for MyConfig {
///     fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
///         authmux_core::client_auth::deserialize(deserializer)
///     }
/// }
///
/// impl<'de> WithClientAuth<'de> for MyConfig {
///     fn deserialize_own<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
///         Self::deserialize(deserializer)
///     }
///     fn client_auth_mut(&mut self) -> &mut ClientAuthConfig {
///         &mut self.auth
///     }
/// }
///
/// let config: MyConfig = serde_json::from_str(
///     r#"{"token_url": "https://idp.example.com/token", "client_id": "c",
///         "client_auth": "basic", "client_secret": "s"}"#,
/// )
/// .unwrap();
/// assert_eq!(config.auth.client_auth, Some(authmux_core::wire::ClientAuth::Basic));
///
/// let typo = serde_json::from_str::<MyConfig>(r#"{"client_secrt": "s"}"#).expect_err("refused");
/// assert!(typo.to_string().contains("unknown field `client_secrt`"));
/// assert!(typo.to_string().contains("`client_secret`"));
/// ```
pub trait WithClientAuth<'de>: Sized + 'static {
    /// The provider's own keys, deserialized by serde's derive.
    ///
    /// # Errors
    ///
    /// The derive's: a missing key, a value of the wrong shape.
    fn deserialize_own<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error>;

    /// The client authentication settings, filled in after the provider's
    /// own keys.
    fn client_auth_mut(&mut self) -> &mut ClientAuthConfig;

    /// Whether the config also takes the keys of a [`GrantConfig`].
    const GRANTS: bool = false;

    /// The grant settings, filled in after the provider's own keys, for a
    /// config whose [`GRANTS`](Self::GRANTS) is `true`.
    fn grant_mut(&mut self) -> Option<&mut GrantConfig> {
        None
    }
}

/// Implements `Deserialize` and [`WithClientAuth`] for a provider config
/// that derives `Deserialize` with `#[serde(remote = "Self")]` and holds
/// its [`ClientAuthConfig`] in `$field`, marked `#[serde(skip)]`:
///
/// ```
/// use authmux_core::ClientAuthConfig;
///
/// #[derive(Debug, serde::Deserialize)]
/// #[serde(deny_unknown_fields, remote = "Self")]
/// pub struct MyConfig {
///     pub client_id: String,
///     #[serde(skip)]
///     pub auth: ClientAuthConfig,
/// }
///
/// authmux_core::with_client_auth!(MyConfig, auth);
/// // or, for a config that also takes a `grant: GrantConfig`:
/// // authmux_core::with_client_auth!(MyConfig, auth, grant);
///
/// let config: MyConfig =
///     serde_json::from_str(r#"{"client_id": "c", "client_secret": "s"}"#).unwrap();
/// assert!(config.auth.client_secret.is_some());
/// ```
#[macro_export]
macro_rules! with_client_auth {
    ($config:ty, $field:ident) => {
        $crate::with_client_auth!(@impl $config, $field, {});
    };
    ($config:ty, $field:ident, $grant:ident) => {
        $crate::with_client_auth!(@impl $config, $field, {
            const GRANTS: bool = true;

            fn grant_mut(&mut self) -> ::std::option::Option<&mut $crate::grant::GrantConfig> {
                ::std::option::Option::Some(&mut self.$grant)
            }
        });
    };
    (@impl $config:ty, $field:ident, { $($grant:tt)* }) => {
        impl<'de> ::serde::Deserialize<'de> for $config {
            fn deserialize<D: ::serde::Deserializer<'de>>(
                deserializer: D,
            ) -> ::std::result::Result<Self, D::Error> {
                $crate::client_auth::deserialize(deserializer)
            }
        }

        impl<'de> $crate::client_auth::WithClientAuth<'de> for $config {
            fn deserialize_own<D: ::serde::Deserializer<'de>>(
                deserializer: D,
            ) -> ::std::result::Result<Self, D::Error> {
                Self::deserialize(deserializer)
            }

            fn client_auth_mut(&mut self) -> &mut $crate::client_auth::ClientAuthConfig {
                &mut self.$field
            }

            $($grant)*
        }
    };
}

/// Deserializes a provider config `T`: its own keys, the client
/// authentication keys, and nothing else.
///
/// # Errors
///
/// The derive's errors for the provider's keys; an `unknown field` error
/// listing every key for any other, reported at that key.
pub fn deserialize<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: WithClientAuth<'de>,
{
    struct Config<T>(PhantomData<T>);
    impl<'de, T: WithClientAuth<'de>> Visitor<'de> for Config<T> {
        type Value = T;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a table of client settings")
        }
        fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
            let (own, all) = keys::<T>();
            let mut auth = ClientAuthConfig::default();
            let mut grant = GrantConfig::default();
            let routing = Routing {
                map,
                auth: &mut auth,
                grant: T::GRANTS.then_some(&mut grant),
                own,
                all,
            };
            let mut config = T::deserialize_own(de::value::MapAccessDeserializer::new(routing))?;
            *config.client_auth_mut() = auth;
            if let Some(slot) = config.grant_mut() {
                *slot = grant;
            }
            Ok(config)
        }
    }
    // As a struct with every key, so that whoever inspects the type (to
    // find which keys hold secrets, say) sees them all.
    let all = keys::<T>().1;
    deserializer.deserialize_struct(std::any::type_name::<T>(), all, Config(PhantomData))
}

/// The provider's own keys of `T`, and those plus the client
/// authentication keys; worked out once per type.
fn keys<'de, T: WithClientAuth<'de>>() -> (&'static [&'static str], &'static [&'static str]) {
    type Lists = (&'static [&'static str], &'static [&'static str]);
    static KNOWN: Mutex<Option<HashMap<TypeId, Lists>>> = Mutex::new(None);
    let mut known = KNOWN.lock().unwrap_or_else(PoisonError::into_inner);
    *known
        .get_or_insert_with(HashMap::new)
        .entry(TypeId::of::<T>())
        .or_insert_with(|| {
            let mut own: &'static [&'static str] = &[];
            let _ = T::deserialize_own(Introspect(&mut own));
            let mut all = own.to_vec();
            all.extend(ClientAuthConfig::FIELDS);
            if T::GRANTS {
                all.extend(GrantConfig::FIELDS);
            }
            (own, Vec::leak(all))
        })
}

/// A deserializer that only records the field names a derived struct
/// asks for.
struct Introspect<'a>(&'a mut &'static [&'static str]);

impl<'de> Deserializer<'de> for Introspect<'_> {
    type Error = de::value::Error;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
        Err(de::Error::custom("only struct fields are recorded"))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        fields: &'static [&'static str],
        _: V,
    ) -> Result<V::Value, Self::Error> {
        *self.0 = fields;
        Err(de::Error::custom("only struct fields are recorded"))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct newtype_struct seq tuple
        tuple_struct map enum identifier ignored_any
    }
}

/// The provider's map as its derive sees it: client authentication keys
/// are read on the way into [`ClientAuthConfig`], unknown keys refused.
struct Routing<'a, A> {
    map: A,
    auth: &'a mut ClientAuthConfig,
    grant: Option<&'a mut GrantConfig>,
    own: &'static [&'static str],
    all: &'static [&'static str],
}

impl<'de, A: MapAccess<'de>> MapAccess<'de> for Routing<'_, A> {
    type Error = A::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, A::Error> {
        while let Some(key) = self.map.next_key::<String>()? {
            if self.own.contains(&key.as_str()) {
                return seed.deserialize(key.into_deserializer()).map(Some);
            }
            if self.auth.read_value(&key, &mut self.map)? {
                continue;
            }
            let grant = match self.grant.as_deref_mut() {
                Some(grant) => grant.read_value(&key, &mut self.map)?,
                None => false,
            };
            if !grant {
                return Err(refuse(&mut self.map, &key, self.all));
            }
        }
        Ok(None)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, A::Error> {
        self.map.next_value_seed(seed)
    }
}

/// The error for the unknown `key`, raised where its value is read.
fn refuse<'de, A: MapAccess<'de>>(
    map: &mut A,
    key: &str,
    expected: &'static [&'static str],
) -> A::Error {
    match map.next_value_seed(Unknown { key, expected }) {
        Err(error) => error,
        Ok(_) => de::Error::unknown_field(key, expected),
    }
}

/// Refuses an unknown key where its value is read, so that a deserializer
/// that tracks paths reports the error at the key.
struct Unknown<'a> {
    key: &'a str,
    expected: &'static [&'static str],
}

impl<'de> DeserializeSeed<'de> for Unknown<'_> {
    type Value = de::IgnoredAny;

    fn deserialize<D: Deserializer<'de>>(self, _: D) -> Result<de::IgnoredAny, D::Error> {
        Err(de::Error::unknown_field(self.key, self.expected))
    }
}

/// The client-authentication setters every provider builder that takes
/// client authentication shares, as
/// [`EndpointBuilder`](crate::EndpointBuilder) shares the endpoint ones. A
/// builder implements [`client_auth_config`](Self::client_auth_config); the
/// setters come with it.
///
/// ```
/// use authmux_core::ClientAuthBuilder as _; // brings the setters into scope
/// # fn run<B: authmux_core::ClientAuthBuilder>(builder: B) -> B {
/// builder
///     .client_auth(authmux_core::wire::ClientAuth::PrivateKeyJwt)
///     .client_assertion_kid("key-1")
/// # }
/// ```
pub trait ClientAuthBuilder: Sized {
    /// The builder's client-authentication settings.
    fn client_auth_config(&mut self) -> &mut ClientAuthConfig;

    /// How the client authenticates; the provider's default unless set.
    fn client_auth(mut self, client_auth: ClientAuth) -> Self {
        self.client_auth_config().client_auth = Some(client_auth);
        self
    }

    /// The client secret of `post` and `basic`.
    fn client_secret(mut self, secret: impl Into<ClientSecret>) -> Self {
        self.client_auth_config().client_secret = Some(secret.into());
        self
    }

    /// The private key of `private_key_jwt`, RSA or P-256, PEM or JWK.
    fn client_assertion_key(mut self, key: impl Into<ClientSecret>) -> Self {
        self.client_auth_config().client_assertion_key = Some(key.into());
        self
    }

    /// The `private_key_jwt` assertion's algorithm; unless set, the key's
    /// JWK `alg`, else RS256 for an RSA key, ES256 for a P-256 key.
    fn client_assertion_alg(mut self, algorithm: SigningAlgorithm) -> Self {
        self.client_auth_config().client_assertion_alg = Some(algorithm);
        self
    }

    /// The `kid` header of the `private_key_jwt` assertion; the key's JWK
    /// `kid` unless set.
    fn client_assertion_kid(mut self, kid: impl Into<String>) -> Self {
        self.client_auth_config().client_assertion_kid = Some(kid.into());
        self
    }

    /// Where the `client_assertion` method reads its assertion.
    fn client_assertion(mut self, source: ExternalSource) -> Self {
        self.client_auth_config().client_assertion = Some(source);
        self
    }

    /// The `client_assertion_type` of the `client_assertion` method;
    /// [`JWT_BEARER_ASSERTION_TYPE`] unless set.
    fn client_assertion_type(mut self, assertion_type: impl Into<String>) -> Self {
        self.client_auth_config().client_assertion_type = Some(assertion_type.into());
        self
    }

    /// The `aud` of the `private_key_jwt` assertion, replacing the
    /// provider's convention (Auth0: `https://{domain}/`; a standard
    /// server: its issuer when discovered, else the token endpoint URL).
    fn client_assertion_audience(mut self, audience: impl Into<String>) -> Self {
        self.client_auth_config().client_assertion_audience = Some(audience.into());
        self
    }
}

/// Reads the private key that `field` names: RSA or P-256, PEM or JWK.
/// Errors name the field and, for a file, its path, never the key.
pub(crate) fn read_signing_key(source: &ClientSecret, field: &str) -> Result<SigningKey, Error> {
    let text = source.resolve_file(field, "key file")?;
    SigningKey::parse(text.expose_secret()).map_err(|problem| {
        let why = problem.describe("not an RSA or P-256 private key in PEM or JWK form");
        match source {
            ClientSecret::File { file } => {
                Error::config(format!("{field}: {}: {why}", file.display()))
            }
            _ => Error::config(format!("{field}: {why}")),
        }
    })
}

/// What a client authenticates with, read and checked: a secret, the
/// assertions it mints, or those someone else issues.
#[derive(Clone, Debug)]
pub enum Credential {
    /// A client secret, for `post` and `basic`.
    Secret(SecretString),
    /// A `private_key_jwt` client's assertions.
    Assertion(ClientAssertion),
    /// Assertions read from their source for every request, and their
    /// `client_assertion_type`.
    External(ExternalToken, String),
    /// Nothing: the client does not authenticate.
    None,
    /// The client's TLS certificate (RFC 8705 §2): nothing in the request
    /// but `client_id`; the HTTP client presents the certificate.
    Certificate,
}

/// How a client proves who it is to the token endpoint: its id, its
/// settings and the method they come to. The one place that reads the
/// credential and attaches it to a request.
#[derive(Clone, Debug)]
pub struct ClientCredentials {
    /// The client id.
    pub client_id: String,
    /// The method: the configured one, else the provider's default.
    pub auth: ClientAuth,
    /// The settings.
    pub config: ClientAuthConfig,
    /// Whether the HTTP client presents a TLS client certificate, which
    /// `tls_client_auth` and `self_signed_tls_client_auth` need; see
    /// [`with_client_certificate`](Self::with_client_certificate).
    pub client_certificate: bool,
}

const PRIVATE_KEY_JWT: &str = "client_auth = \"private_key_jwt\"";
const CLIENT_ASSERTION: &str = "client_auth = \"client_assertion\"";

impl ClientCredentials {
    /// Credentials sent as `auth` says.
    pub fn new(
        client_id: impl Into<String>,
        client_secret: impl Into<ClientSecret>,
        auth: ClientAuth,
    ) -> Self {
        Self::from_config(
            client_id,
            ClientAuthConfig::secret(auth, client_secret),
            auth,
        )
    }

    /// The credentials `config` describes; `default` is the method when
    /// `config` names none.
    pub fn from_config(
        client_id: impl Into<String>,
        config: ClientAuthConfig,
        default: ClientAuth,
    ) -> Self {
        Self {
            client_id: client_id.into(),
            auth: config.client_auth.unwrap_or(default),
            config,
            client_certificate: false,
        }
    }

    /// Tells whether the HTTP client the requests go through presents a
    /// TLS client certificate: a provider builder passes
    /// [`HttpClient::has_client_certificate`](crate::wire::HttpClient::has_client_certificate)
    /// of its endpoint's client.
    pub fn with_client_certificate(mut self, present: bool) -> Self {
        self.client_certificate = present;
        self
    }

    /// Sets the assertion's audience unless the settings already give one
    /// (or the client does not use `private_key_jwt`): a provider's
    /// convention, such as Auth0's `https://{domain}/`.
    pub fn default_audience(mut self, audience: impl Into<String>) -> Self {
        if self.auth == ClientAuth::PrivateKeyJwt && self.config.client_assertion_audience.is_none()
        {
            self.config.client_assertion_audience = Some(audience.into());
        }
        self
    }

    /// Checks the settings and reads the secret or the key. Assertions go
    /// to the configured audience, else to `default_audience`.
    ///
    /// Errors name the key and the fix:
    /// `client_secret: required with client_auth = "post" or "basic"`,
    /// `client_assertion_key: /etc/k.pem: not an RSA or P-256 private key in
    /// PEM or JWK form`, `client_secret: environment variable … is not set`.
    /// An external assertion is not read here but for each request.
    pub fn credential(&self, default_audience: &str) -> Result<Credential, Error> {
        let config = &self.config;
        let method = match self.config.client_auth {
            Some(_) => format!("client_auth = {:?}", self.auth.as_str()),
            None => format!("client_auth = {:?} (the default)", self.auth.as_str()),
        };
        if self.auth != ClientAuth::None {
            require("client_id", &self.client_id)?;
        }
        if self.auth != ClientAuth::PrivateKeyJwt
            && let Some(name) = config.first_key_setting()
        {
            return Err(Error::config(format!(
                "{name}: only used with {PRIVATE_KEY_JWT}, not {method}"
            )));
        }
        if self.auth != ClientAuth::ClientAssertion
            && let Some(name) = config.first_assertion_setting()
        {
            return Err(Error::config(format!(
                "{name}: only used with {CLIENT_ASSERTION}, not {method}"
            )));
        }
        if self.auth.uses_secret() {
            let secret = config.client_secret.as_ref().ok_or_else(|| {
                Error::config(format!(
                    "client_secret: required with {method}; or authenticate without one: \
                     {PRIVATE_KEY_JWT} or {CLIENT_ASSERTION}"
                ))
            })?;
            return secret.resolve("client_secret").map(Credential::Secret);
        }
        if config.client_secret.is_some() {
            return Err(Error::config(format!(
                "client_secret: not used with {method}; remove it"
            )));
        }
        match self.auth {
            ClientAuth::ClientAssertion => {
                let source = config.client_assertion.clone().ok_or_else(|| {
                    Error::config(format!(
                        "client_assertion: required with {CLIENT_ASSERTION}: \
                         {{ file = \"…\" }}, {{ env = \"…\" }} or {{ command = [\"…\"] }}"
                    ))
                })?;
                let assertion_type = config
                    .client_assertion_type
                    .as_deref()
                    .unwrap_or(JWT_BEARER_ASSERTION_TYPE)
                    .trim();
                require("client_assertion_type", assertion_type)?;
                if assertion_type.chars().any(char::is_whitespace) || !assertion_type.contains(':')
                {
                    return Err(Error::config(format!(
                        "client_assertion_type: {assertion_type:?} is not a URI such as \
                         {JWT_BEARER_ASSERTION_TYPE:?}"
                    )));
                }
                Ok(Credential::External(
                    ExternalToken::new(source, "client_assertion"),
                    assertion_type.to_owned(),
                ))
            }
            ClientAuth::None => Ok(Credential::None),
            ClientAuth::TlsClientAuth | ClientAuth::SelfSignedTlsClientAuth => {
                if !self.client_certificate {
                    return Err(Error::config(format!(
                        "tls_client_certificate: required with {method}: the certificate \
                         (and its key) the client authenticates with"
                    )));
                }
                Ok(Credential::Certificate)
            }
            _ => self.private_key_jwt(default_audience),
        }
    }

    /// Reads the key of a `private_key_jwt` client.
    fn private_key_jwt(&self, default_audience: &str) -> Result<Credential, Error> {
        let config = &self.config;
        let source = config.client_assertion_key.as_ref().ok_or_else(|| {
            Error::config(format!(
                "client_assertion_key: required with {PRIVATE_KEY_JWT}"
            ))
        })?;
        let key = read_signing_key(source, "client_assertion_key")?;
        let audience = config
            .client_assertion_audience
            .as_deref()
            .unwrap_or(default_audience);
        require("client_assertion_audience", audience)?;
        ClientAssertion::new(
            &self.client_id,
            audience.trim(),
            key,
            config.client_assertion_alg,
            config.client_assertion_kid.as_deref(),
        )
        .map(Credential::Assertion)
    }

    /// Reads the secret of a `post` or `basic` client: `client_id: must not
    /// be empty`, `client_secret: environment variable … is not set`.
    pub fn resolve(&self) -> Result<SecretString, Error> {
        match self.credential("")? {
            Credential::Secret(secret) => Ok(secret),
            _ => Err(Error::config(format!(
                "client_auth: a secret is needed, not client_auth = {:?}",
                self.auth.as_str()
            ))),
        }
    }

    /// Attaches the credentials to `request`: body parameters appended
    /// here, a Basic header, or a client assertion minted per request (to
    /// the request's URL unless an audience is set).
    pub fn apply(&self, request: TokenRequestBuilder) -> Result<TokenRequestBuilder, Error> {
        let default_audience = request.url().trim().to_owned();
        Ok(match self.credential(&default_audience)? {
            Credential::Secret(secret) => {
                request.client_credentials(self.auth, self.client_id.clone(), secret)
            }
            Credential::Assertion(assertion) => request.client_assertion(assertion),
            Credential::External(assertion, assertion_type) => request.external_client_assertion(
                self.client_id.clone(),
                assertion_type,
                Arc::new(assertion),
            ),
            Credential::None if self.client_id.trim().is_empty() => request,
            Credential::None | Credential::Certificate => request.client_id(self.client_id.clone()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields, remote = "Self")]
    struct Config {
        token_url: String,
        #[serde(default)]
        scopes: Vec<String>,
        #[serde(skip)]
        auth: ClientAuthConfig,
    }

    impl<'de> de::Deserialize<'de> for Config {
        fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            deserialize(deserializer)
        }
    }

    impl<'de> WithClientAuth<'de> for Config {
        fn deserialize_own<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            Self::deserialize(deserializer)
        }
        fn client_auth_mut(&mut self) -> &mut ClientAuthConfig {
            &mut self.auth
        }
    }

    fn parse(json: &str) -> Result<Config, String> {
        serde_json::from_str(json).map_err(|error| error.to_string())
    }

    #[test]
    fn each_key_goes_where_it_belongs_in_any_order() {
        let config = parse(
            r#"{"client_auth": "private_key_jwt", "token_url": "https://idp/t",
                "client_assertion_kid": "k1", "scopes": ["a"],
                "client_assertion_key": {"env": "KEY"}}"#,
        )
        .expect("valid");
        assert_eq!(config.token_url, "https://idp/t");
        assert_eq!(config.scopes, ["a"]);
        assert_eq!(config.auth.client_auth, Some(ClientAuth::PrivateKeyJwt));
        assert_eq!(config.auth.client_assertion_kid.as_deref(), Some("k1"));
        assert!(matches!(
            config.auth.client_assertion_key,
            Some(ClientSecret::Env { .. })
        ));
    }

    #[test]
    fn the_former_name_of_client_auth_is_still_read() {
        let config = parse(r#"{"token_url": "u", "auth_style": "post"}"#).expect("alias");
        assert_eq!(config.auth.client_auth, Some(ClientAuth::Body));
    }

    #[test]
    fn an_unknown_key_lists_the_providers_keys_and_the_client_auth_ones() {
        let error = parse(r#"{"token_url": "u", "client_secrt": "s"}"#).expect_err("refused");
        assert!(error.contains("unknown field `client_secrt`"), "{error}");
        for key in [
            "token_url",
            "scopes",
            "client_secret",
            "client_assertion_key",
        ] {
            assert!(error.contains(&format!("`{key}`")), "{key}: {error}");
        }
    }

    #[test]
    fn a_missing_own_key_and_a_bad_auth_value_are_the_derives_errors() {
        let missing = parse(r#"{"client_auth": "basic"}"#).expect_err("refused");
        assert!(missing.contains("missing field `token_url`"), "{missing}");
        let bad = parse(r#"{"token_url": "u", "client_auth": "kerberos"}"#).expect_err("refused");
        assert!(bad.contains("unknown variant `kerberos`"), "{bad}");
    }

    #[test]
    fn the_auth_table_alone_refuses_other_keys() {
        let error = serde_json::from_str::<ClientAuthConfig>(r#"{"token_url": "u"}"#)
            .expect_err("refused")
            .to_string();
        assert!(error.contains("unknown field `token_url`"), "{error}");
    }
}
