//! The token source trait: one round trip to a token endpoint, no caching.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use reqwest::header::HeaderMap;
use secrecy::{ExposeSecret as _, SecretString};

use crate::dpop::Dpop;
use crate::error::Error;
use crate::token::Token;
use crate::wire::{HttpClient, TokenRequest};

/// Something that can get a fresh access token: usually a provider speaking
/// to a token endpoint.
///
/// Implementations make exactly one round trip per call. Caching, single
/// flight, retries and refresh are the job of
/// [`ManagedToken`](crate::ManagedToken).
#[async_trait]
pub trait TokenSource: Send + Sync + 'static {
    /// The provider's name, such as `auth0`.
    fn provider(&self) -> &str;

    /// Everything that decides which token this source gets. Two sources
    /// with equal identities may share one cached token.
    fn identity(&self) -> TokenIdentity;

    /// Requests one new token.
    async fn fetch_token(&self) -> Result<Token, Error>;

    /// Headers that every API call made with this source's tokens needs,
    /// besides `Authorization` (360Learning's `360-api-version`, say).
    fn api_headers(&self) -> HeaderMap {
        HeaderMap::new()
    }

    /// The DPoP prover this source binds its tokens to, if it asks for
    /// DPoP-bound tokens. A [token store](crate::store) shares such tokens
    /// only when every process has the prover's key
    /// ([`Dpop::is_key_shared`]), and binds the tokens it adopts to it. A
    /// source whose identity has a `dpop` field but that returns `None`
    /// here never has its tokens stored.
    fn dpop(&self) -> Option<&Dpop> {
        None
    }

    /// The token endpoint, for a source that finds it at run time (from
    /// an issuer's OAuth 2.0 metadata, say): found now if it was not yet,
    /// then remembered. `Ok(None)`, the default, for a source whose
    /// endpoint is fixed, [`TokenIdentity::endpoint`].
    async fn discover(&self) -> Result<Option<String>, Error> {
        Ok(None)
    }

    /// Identity fields only known once a credential is read, such as the
    /// `iss` and `sub` of a workload's identity token sent as its client
    /// assertion: a [token store](crate::store) adds them to
    /// [`identity`](Self::identity) before its first look, so that
    /// processes of different workloads never share tokens. None by
    /// default.
    ///
    /// # Errors
    ///
    /// When the credential cannot be read; the fetch then fails with it.
    async fn identity_fields(&self) -> Result<Vec<(String, String)>, Error> {
        Ok(Vec::new())
    }

    /// Whether the token endpoint is still to be found by
    /// [`discover`](Self::discover). A [`ManagedToken`](crate::ManagedToken)
    /// then discovers before fetching, so that the metadata request is
    /// retried like a token request and counted as what it is. `false`,
    /// the default, for a source whose endpoint is fixed.
    fn needs_discovery(&self) -> bool {
        false
    }

    /// The HTTP client the tokens are fetched with, if the source has one.
    /// When it has CAs, a client certificate or a proxy of its own
    /// ([`HttpClient::has_own_transport`]), API calls with its tokens go
    /// through its [`api_client`](HttpClient::api_client), and a token
    /// bound to a certificate ([`Token::certificate`]) is presented with
    /// that certificate only. `None` by default.
    fn http_client(&self) -> Option<&HttpClient> {
        None
    }
}

/// A cheap, clonable handle to any [`TokenSource`].
#[derive(Clone)]
pub struct SharedTokenSource(Arc<dyn TokenSource>);

impl SharedTokenSource {
    /// Wraps a source.
    pub fn new(source: impl TokenSource) -> Self {
        Self(Arc::new(source))
    }

    /// See [`TokenSource::provider`].
    pub fn provider(&self) -> &str {
        self.0.provider()
    }

    /// See [`TokenSource::identity`].
    pub fn identity(&self) -> TokenIdentity {
        self.0.identity()
    }

    /// See [`TokenSource::fetch_token`].
    pub async fn fetch_token(&self) -> Result<Token, Error> {
        self.0.fetch_token().await
    }

    /// See [`TokenSource::api_headers`].
    pub fn api_headers(&self) -> HeaderMap {
        self.0.api_headers()
    }

    /// See [`TokenSource::dpop`].
    pub fn dpop(&self) -> Option<&Dpop> {
        self.0.dpop()
    }

    /// See [`TokenSource::discover`].
    pub async fn discover(&self) -> Result<Option<String>, Error> {
        self.0.discover().await
    }

    /// See [`TokenSource::needs_discovery`].
    pub fn needs_discovery(&self) -> bool {
        self.0.needs_discovery()
    }

    /// See [`TokenSource::identity_fields`].
    pub async fn identity_fields(&self) -> Result<Vec<(String, String)>, Error> {
        self.0.identity_fields().await
    }

    /// See [`TokenSource::http_client`].
    pub fn http_client(&self) -> Option<&HttpClient> {
        self.0.http_client()
    }
}

impl<T: TokenSource> From<T> for SharedTokenSource {
    fn from(source: T) -> Self {
        Self::new(source)
    }
}

impl From<Arc<dyn TokenSource>> for SharedTokenSource {
    fn from(source: Arc<dyn TokenSource>) -> Self {
        Self(source)
    }
}

impl fmt::Debug for SharedTokenSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("SharedTokenSource")
            .field(&self.0.identity())
            .finish()
    }
}

/// The identity field that holds the RFC 7638 thumbprint of a
/// `private_key_jwt` client's key.
pub const CLIENT_ASSERTION_KEY_FIELD: &str = "client_assertion_key";

/// What a token depends on: the provider, the endpoint, every request
/// parameter that changes the token (client id, scope, audience, …) and
/// the credential it was obtained with. Caches and single flights are
/// keyed on it.
///
/// The credential (a client secret) is held, never shown: `Display`,
/// `Debug` and [`fingerprint`](Self::fingerprint) leave it out, and a
/// [token store](crate::store) keys a token by a keyed or memory-hard
/// fingerprint of it, so that a wrong or another tenant's secret never
/// finds a token fetched with the right one.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TokenIdentity {
    provider: Arc<str>,
    endpoint: String,
    fields: Fields,
    credential: Option<Credential>,
}

/// An identity's fields, sorted by key, without spare capacity: an
/// identity is held per client, and a `BTreeMap` node takes half a
/// kilobyte for the three or four fields a client has.
#[derive(Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct Fields(Vec<(Box<str>, Box<str>)>);

impl Fields {
    fn insert(&mut self, key: String, value: String) {
        let value = value.into_boxed_str();
        match self.0.binary_search_by(|(known, _)| (**known).cmp(&key)) {
            Ok(at) => self.0[at].1 = value,
            Err(at) => {
                self.0.reserve_exact(1);
                self.0.insert(at, (key.into_boxed_str(), value));
            }
        }
    }

    fn get(&self, key: &str) -> Option<&str> {
        let at = self
            .0
            .binary_search_by(|(known, _)| (**known).cmp(key))
            .ok()?;
        Some(&self.0[at].1)
    }

    fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(key, value)| (&**key, &**value))
    }
}

impl fmt::Debug for Fields {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

/// A secret a token depends on. Equal when the secrets are (compared by a
/// SHA-256 that stays in memory); `Debug` shows neither.
#[derive(Clone)]
pub(crate) struct Credential {
    secret: Arc<SecretString>,
    digest: [u8; 32],
}

impl Credential {
    fn new(secrets: &[(&str, &SecretString)]) -> Option<Self> {
        if secrets.is_empty() {
            return None;
        }
        // Names and values, length-prefixed: unambiguous.
        let mut material = String::new();
        for (name, secret) in secrets {
            let value = secret.expose_secret();
            material.push_str(&format!("{}:{name}{}:", name.len(), value.len()));
            material.push_str(value);
        }
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, material.as_bytes());
        let mut bytes = [0u8; 32];
        bytes.copy_from_slice(digest.as_ref());
        Some(Self {
            secret: Arc::new(SecretString::from(material)),
            digest: bytes,
        })
    }

    /// Every secret the token depends on, in one string.
    pub(crate) fn secret(&self) -> &SecretString {
        &self.secret
    }
}

impl PartialEq for Credential {
    fn eq(&self, other: &Self) -> bool {
        self.digest == other.digest
    }
}

impl Eq for Credential {}

impl std::hash::Hash for Credential {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.digest.hash(state);
    }
}

impl PartialOrd for Credential {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Credential {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.digest.cmp(&other.digest)
    }
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl TokenIdentity {
    /// An identity for `provider` at `endpoint`, with no fields yet.
    pub fn new(provider: &str, endpoint: &str) -> Self {
        Self {
            provider: Arc::from(provider),
            endpoint: endpoint.to_owned(),
            fields: Fields::default(),
            credential: None,
        }
    }

    /// The identity of a request: its URL, the client id (in the body or in
    /// a Basic header), every non-secret body parameter and, with
    /// `private_key_jwt`, the thumbprint of the assertion key.
    pub fn from_request(provider: &str, request: &TokenRequest) -> Self {
        let mut identity = Self::new(provider, request.url().as_str());
        if let Some(client_id) = request.client_id() {
            identity = identity.with("client_id", client_id);
        }
        if let Some(assertion) = request.client_assertion() {
            identity = identity.with(CLIENT_ASSERTION_KEY_FIELD, assertion.thumbprint());
        }
        for (name, value) in request.fresh_values() {
            identity = identity.with(format!("{name}.source"), value.describe());
        }
        for name in request.param_names() {
            if let Some(value) = request.param(name) {
                identity = identity.with(name, value);
            }
        }
        let secrets: Vec<(&str, &SecretString)> = request.secrets().collect();
        identity.credential = Credential::new(&secrets);
        identity
    }

    /// Makes the token depend on `secret` too (a client secret sent some
    /// way [`from_request`](Self::from_request) cannot see). Never shown.
    pub fn with_secret(mut self, name: &str, secret: &SecretString) -> Self {
        let mut secrets: Vec<(&str, &SecretString)> = Vec::new();
        let previous = self.credential.take();
        let previous_secret = previous.as_ref().map(Credential::secret);
        if let Some(previous) = previous_secret {
            secrets.push(("", previous));
        }
        secrets.push((name, secret));
        self.credential = Credential::new(&secrets);
        self
    }

    /// Whether the token depends on a secret.
    pub fn has_secret(&self) -> bool {
        self.credential.is_some()
    }

    pub(crate) fn credential(&self) -> Option<&Credential> {
        self.credential.as_ref()
    }

    /// Adds a field.
    pub fn with(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.fields.insert(key.into(), value.into());
        self
    }

    /// The provider's name.
    pub fn provider(&self) -> &str {
        &self.provider
    }

    /// The token endpoint.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The value of a field.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.fields.get(key)
    }

    /// A SHA-256 of every part of the identity (provider, endpoint and every
    /// field), base64url without padding: 43 characters that are safe in
    /// file names and store keys. Equal identities, and only they, have
    /// equal fingerprints.
    pub fn fingerprint(&self) -> String {
        use base64::Engine as _;
        // An unambiguous encoding: JSON strings are quoted and escaped, and
        // the fields come in key order.
        let fields: BTreeMap<&str, &str> = self.fields.iter().collect();
        let canonical = serde_json::json!([1, &*self.provider, self.endpoint, fields]);
        let digest =
            aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, canonical.to_string().as_bytes());
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest.as_ref())
    }
}

impl fmt::Display for TokenIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.provider, self.endpoint)?;
        for (key, value) in self.fields.iter() {
            write!(f, " {key}={value:?}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::ClientAuth;

    #[test]
    fn a_secret_in_the_identity_tells_identities_apart_and_is_never_shown() {
        let with = |secret: &str| {
            TokenIdentity::new("oauth2", "https://idp.example/token")
                .with("client_id", "c1")
                .with_secret("client_secret", &SecretString::from(secret.to_owned()))
        };
        let right = with("s3cr3t-right");
        assert!(right.has_secret());
        assert_eq!(right, with("s3cr3t-right"));
        assert_ne!(right, with("s3cr3t-wrong"));
        let shown = format!("{right} {right:?}");
        assert!(!shown.contains("s3cr3t"), "{shown}");
        // The public fingerprint is the identity's alone: the store mixes
        // the secret in through a keyed or memory-hard fingerprint.
        assert_eq!(right.fingerprint(), with("s3cr3t-wrong").fingerprint());
    }

    #[test]
    fn identity_covers_every_non_secret_param_and_no_secret() {
        let request = |scope: &str| {
            TokenRequest::builder("https://idp.example/token")
                .param("grant_type", "client_credentials")
                .param("scope", scope)
                .client_credentials(
                    ClientAuth::Body,
                    "client-1",
                    SecretString::from("s3cr3t".to_owned()),
                )
                .build()
                .expect("valid request")
        };
        let read = TokenIdentity::from_request("oauth2", &request("read"));
        let write = TokenIdentity::from_request("oauth2", &request("write"));
        assert_ne!(read, write);
        assert_eq!(
            read,
            TokenIdentity::from_request("oauth2", &request("read"))
        );
        assert_eq!(read.get("client_id"), Some("client-1"));
        assert_eq!(read.get("client_secret"), None);
        assert!(!read.to_string().contains("s3cr3t"));
        assert_eq!(read.fingerprint().len(), 43);
        assert_eq!(
            read.fingerprint(),
            TokenIdentity::from_request("oauth2", &request("read")).fingerprint()
        );
        assert_ne!(read.fingerprint(), write.fingerprint());
        assert_ne!(
            TokenIdentity::new("a", "b").with("c", "d").fingerprint(),
            TokenIdentity::new("a", "b").with("c=d", "").fingerprint(),
            "field boundaries are part of the fingerprint"
        );
        assert!(!format!("{read:?}").contains("s3cr3t"));

        let basic = |client_id: &str| {
            let request = TokenRequest::builder("https://idp.example/token")
                .client_credentials(
                    ClientAuth::Basic,
                    client_id,
                    SecretString::from("s3cr3t".to_owned()),
                )
                .build()
                .expect("valid request");
            TokenIdentity::from_request("oauth2", &request)
        };
        assert_ne!(
            basic("a"),
            basic("b"),
            "a Basic client id is part of the identity"
        );
    }
}
