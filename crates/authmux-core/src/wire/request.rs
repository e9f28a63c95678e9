//! Describing a token request: URL, body encoding, parameters, client
//! authentication and headers. The body is always serialized with serde.

use std::borrow::Cow;
use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderName, HeaderValue};
use secrecy::{ExposeSecret, SecretString};
use serde::ser::{Serialize, SerializeMap, Serializer};
use url::{Host, Url};

use std::sync::Arc;

use super::fresh::{Fresh, FreshParam, FreshValue};
use crate::assertion::{ClientAssertion, JWT_BEARER_ASSERTION_TYPE};
use crate::error::Error;
use crate::scrub::Scrubber;

/// How the request body is encoded. Deserializes from `"form"` or `"json"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BodyEncoding {
    /// `application/x-www-form-urlencoded`, as RFC 6749 §4.4.2 specifies.
    #[default]
    Form,
    /// `application/json`, as Mention Me, 360Learning and Auth0 accept.
    Json,
}

impl BodyEncoding {
    pub(crate) fn content_type(self) -> &'static str {
        match self {
            Self::Form => "application/x-www-form-urlencoded",
            Self::Json => "application/json",
        }
    }
}

/// How the client authenticates: its secret in the body or in an HTTP Basic
/// header (RFC 6749 §2.3.1), or a JWT signed with its private key
/// (`private_key_jwt`, RFC 7523 §2.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientAuth {
    /// `client_id` and `client_secret` as body parameters (`client_secret_post`).
    #[default]
    #[serde(alias = "post", alias = "client_secret_post")]
    Body,
    /// An HTTP Basic `Authorization` header (`client_secret_basic`), with the
    /// id and secret each form-urlencoded before base64, as §2.3.1 requires.
    #[serde(alias = "client_secret_basic")]
    Basic,
    /// A JWT client assertion signed with the client's private key, sent
    /// with `client_id` as body parameters, and no secret
    /// (`private_key_jwt`); see [`ClientAssertion`].
    PrivateKeyJwt,
    /// An assertion someone else issued (a workload's identity token),
    /// read from a file, a variable or a command and sent as
    /// `client_assertion` with `client_id` (RFC 7521 §4.2, RFC 7523 §2.2):
    /// no secret, no key.
    ClientAssertion,
    /// No client authentication: `client_id`, if any, in the body (RFC
    /// 6749 §3.2.1), for a grant that does not need it, such as the
    /// JWT-bearer grant.
    None,
    /// Mutual TLS with a certificate a CA issued (RFC 8705 §2.1): the
    /// client's TLS certificate authenticates it, and the body carries
    /// `client_id` and no secret or assertion.
    TlsClientAuth,
    /// Mutual TLS with a self-signed certificate registered with the
    /// server (RFC 8705 §2.2); on the wire as
    /// [`TlsClientAuth`](Self::TlsClientAuth).
    SelfSignedTlsClientAuth,
}

impl ClientAuth {
    /// The config spelling: `post`, `basic`, `private_key_jwt`,
    /// `client_assertion`, `none`, `tls_client_auth` or
    /// `self_signed_tls_client_auth`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Body => "post",
            Self::Basic => "basic",
            Self::PrivateKeyJwt => "private_key_jwt",
            Self::ClientAssertion => "client_assertion",
            Self::None => "none",
            Self::TlsClientAuth => "tls_client_auth",
            Self::SelfSignedTlsClientAuth => "self_signed_tls_client_auth",
        }
    }

    /// Whether the client authenticates with its TLS certificate (RFC 8705
    /// §2), which it must then present.
    pub fn uses_certificate(self) -> bool {
        matches!(self, Self::TlsClientAuth | Self::SelfSignedTlsClientAuth)
    }

    /// Whether the client authenticates with a secret (`post` or `basic`).
    pub fn uses_secret(self) -> bool {
        matches!(self, Self::Body | Self::Basic)
    }

    /// The method's name in authorization server metadata (RFC 8414 §2,
    /// `token_endpoint_auth_methods_supported`): `client_secret_post`,
    /// `client_secret_basic`, `private_key_jwt`, `none`, `tls_client_auth`
    /// or `self_signed_tls_client_auth`. A client
    /// assertion issued by someone else travels as a `private_key_jwt`
    /// one does, and servers that accept it (Entra, Keycloak) list it so.
    pub fn metadata_name(self) -> &'static str {
        match self {
            Self::Body => "client_secret_post",
            Self::Basic => "client_secret_basic",
            Self::PrivateKeyJwt | Self::ClientAssertion => "private_key_jwt",
            Self::None => "none",
            Self::TlsClientAuth => "tls_client_auth",
            Self::SelfSignedTlsClientAuth => "self_signed_tls_client_auth",
        }
    }
}

#[derive(Clone)]
enum ParamValue {
    Plain(String),
    Secret(SecretString),
}

impl ParamValue {
    fn expose(&self) -> &str {
        match self {
            Self::Plain(value) => value,
            Self::Secret(secret) => secret.expose_secret(),
        }
    }
}

#[derive(Clone)]
struct Param {
    name: Cow<'static, str>,
    value: ParamValue,
}

/// A complete, validated description of one token request. Build it once
/// with [`TokenRequest::builder`] and send it as often as needed.
#[derive(Clone)]
pub struct TokenRequest {
    url: Url,
    client_id: Option<String>,
    encoding: BodyEncoding,
    params: Vec<Param>,
    fresh: Vec<FreshParam>,
    headers: HeaderMap,
    timeout: Option<Duration>,
    default_lifetime: Option<Duration>,
    scrubber: Scrubber,
    /// The secret sent in the Basic header, which a token depends on.
    basic_secret: Option<SecretString>,
}

/// The lifetime of a token whose response has neither `expires_in` nor a
/// JWT `exp`. A missing lifetime never means "forever".
pub const DEFAULT_LIFETIME: Duration = Duration::from_secs(300);

impl TokenRequest {
    /// Starts describing a request to the token endpoint at `url`.
    pub fn builder(url: impl Into<String>) -> TokenRequestBuilder {
        TokenRequestBuilder {
            url: url.into(),
            encoding: BodyEncoding::default(),
            params: Vec::new(),
            client_id: None,
            basic: None,
            fresh: Vec::new(),
            headers: HeaderMap::new(),
            timeout: None,
            default_lifetime: None,
            allow_insecure_http: false,
        }
    }

    /// The token endpoint.
    pub fn url(&self) -> &Url {
        &self.url
    }

    /// The authenticated client's id, wherever it is sent.
    pub fn client_id(&self) -> Option<&str> {
        self.client_id.as_deref()
    }

    /// The body encoding.
    pub fn encoding(&self) -> BodyEncoding {
        self.encoding
    }

    /// The names of the body parameters, in order.
    pub fn param_names(&self) -> impl Iterator<Item = &str> {
        self.params.iter().map(|param| param.name.as_ref())
    }

    /// The value of a non-secret body parameter.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params.iter().find_map(|param| match &param.value {
            ParamValue::Plain(value) if param.name == name => Some(value.as_str()),
            _ => None,
        })
    }

    /// The secrets the request authenticates with (a Basic password, secret
    /// body parameters), by name: what a token depends on besides its
    /// visible parameters.
    pub(crate) fn secrets(&self) -> impl Iterator<Item = (&str, &SecretString)> {
        let basic = self
            .basic_secret
            .as_ref()
            .map(|secret| ("client_secret", secret));
        let params = self.params.iter().filter_map(|param| match &param.value {
            ParamValue::Secret(secret) => Some((param.name.as_ref(), secret)),
            ParamValue::Plain(_) => None,
        });
        basic.into_iter().chain(params)
    }

    /// The client assertion minted for each request, with `private_key_jwt`.
    pub fn client_assertion(&self) -> Option<&ClientAssertion> {
        self.fresh.iter().find_map(|param| match &param.value {
            Fresh::Minted(assertion) => Some(assertion),
            _ => None,
        })
    }

    /// The parameters read anew for every request, by name: an external
    /// client assertion, a subject token…
    pub fn fresh_values(&self) -> impl Iterator<Item = (&str, &Arc<dyn FreshValue>)> {
        self.fresh.iter().filter_map(|param| match &param.value {
            Fresh::Read(value) => Some((param.name.as_ref(), value)),
            _ => None,
        })
    }

    pub(crate) fn fresh(&self) -> &[FreshParam] {
        &self.fresh
    }

    /// The extra headers, including a Basic `Authorization` (marked sensitive).
    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    /// The per-request timeout, if one overrides the client's.
    pub fn timeout(&self) -> Option<Duration> {
        self.timeout
    }

    /// The lifetime assumed when the response gives none, if this request
    /// overrides the HTTP client's.
    pub fn default_lifetime(&self) -> Option<Duration> {
        self.default_lifetime
    }

    /// A copy of this request with one more header, such as a fresh `DPoP` proof.
    pub fn with_header(&self, name: HeaderName, value: HeaderValue) -> Self {
        let mut request = self.clone();
        request.headers.insert(name, value);
        request
    }

    /// The serialized body. The one place where secrets are exposed for the wire.
    pub(crate) fn body(&self) -> Result<Vec<u8>, Error> {
        let body = match self.encoding {
            BodyEncoding::Json => serde_json::to_vec(&JsonParams(&self.params))
                .map_err(|_| Error::config("the request body cannot be encoded as JSON"))?,
            BodyEncoding::Form => {
                let pairs: Vec<(&str, &str)> = self
                    .params
                    .iter()
                    .map(|param| (param.name.as_ref(), param.value.expose()))
                    .collect();
                serde_urlencoded::to_string(pairs)
                    .map_err(|_| Error::config("the request body cannot be form-encoded"))?
                    .into_bytes()
            }
        };
        Ok(body)
    }

    /// The scrubber that knows every secret this request carries: its
    /// secret body parameters and its Basic credential. Every piece of text
    /// the server sends back passes through it.
    pub fn scrubber(&self) -> &Scrubber {
        &self.scrubber
    }
}

struct JsonParams<'a>(&'a [Param]);

impl Serialize for JsonParams<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for param in self.0 {
            map.serialize_entry(param.name.as_ref(), param.value.expose())?;
        }
        map.end()
    }
}

impl fmt::Debug for TokenRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let params: Vec<(&str, &str)> = self
            .params
            .iter()
            .map(|param| match &param.value {
                ParamValue::Plain(value) => (param.name.as_ref(), value.as_str()),
                ParamValue::Secret(_) => (param.name.as_ref(), "[redacted]"),
            })
            .collect();
        f.debug_struct("TokenRequest")
            .field("url", &self.url.as_str())
            .field("encoding", &self.encoding)
            .field("params", &params)
            .field("fresh", &self.fresh)
            .field("headers", &self.headers)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// Builds a [`TokenRequest`]; see [`TokenRequest::builder`].
pub struct TokenRequestBuilder {
    url: String,
    encoding: BodyEncoding,
    params: Vec<Param>,
    client_id: Option<String>,
    basic: Option<(String, SecretString)>,
    fresh: Vec<FreshParam>,
    headers: HeaderMap,
    timeout: Option<Duration>,
    default_lifetime: Option<Duration>,
    allow_insecure_http: bool,
}

impl fmt::Debug for TokenRequestBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenRequestBuilder")
            .field("url", &self.url)
            .field("encoding", &self.encoding)
            .finish_non_exhaustive()
    }
}

impl TokenRequestBuilder {
    /// The token endpoint's URL, as given (it is checked by
    /// [`build`](Self::build)).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Sends the body as `application/json`.
    pub fn json(mut self) -> Self {
        self.encoding = BodyEncoding::Json;
        self
    }

    /// Sends the body as `application/x-www-form-urlencoded` (the default).
    pub fn form(mut self) -> Self {
        self.encoding = BodyEncoding::Form;
        self
    }

    /// Sets the body encoding.
    pub fn encoding(mut self, encoding: BodyEncoding) -> Self {
        self.encoding = encoding;
        self
    }

    /// Appends a body parameter.
    pub fn param(mut self, name: impl Into<Cow<'static, str>>, value: impl Into<String>) -> Self {
        self.params.push(Param {
            name: name.into(),
            value: ParamValue::Plain(value.into()),
        });
        self
    }

    /// Appends a body parameter if `value` is set.
    pub fn param_opt(
        self,
        name: impl Into<Cow<'static, str>>,
        value: Option<impl Into<String>>,
    ) -> Self {
        match value {
            Some(value) => self.param(name, value),
            None => self,
        }
    }

    /// Appends a secret body parameter, such as a `client_secret` or a
    /// `client_assertion`. It is redacted from `Debug` and registered with
    /// the request's [`Scrubber`], so that any shape of it the server
    /// echoes back is scrubbed from error text.
    pub fn secret_param(mut self, name: impl Into<Cow<'static, str>>, value: SecretString) -> Self {
        self.params.push(Param {
            name: name.into(),
            value: ParamValue::Secret(value),
        });
        self
    }

    /// Authenticates the client with `private_key_jwt`: `client_id` is
    /// appended to the body here, and every time the request is sent a new
    /// assertion from `assertion` follows as `client_assertion_type` and
    /// `client_assertion`.
    pub fn client_assertion(mut self, assertion: ClientAssertion) -> Self {
        let client_id = assertion.client_id().to_owned();
        self.client_id = Some(client_id.clone());
        self.fresh.push(FreshParam {
            name: Cow::Borrowed("client_assertion_type"),
            value: Fresh::Fixed(Cow::Borrowed(JWT_BEARER_ASSERTION_TYPE)),
        });
        self.fresh.push(FreshParam {
            name: Cow::Borrowed("client_assertion"),
            value: Fresh::Minted(assertion),
        });
        self.param("client_id", client_id)
    }

    /// Authenticates the client with an assertion someone else issued
    /// (RFC 7521 §4.2): `client_id` is appended to the body here, and
    /// every time the request is sent `client_assertion_type` and the
    /// freshest `client_assertion` from `assertion` follow.
    pub fn external_client_assertion(
        mut self,
        client_id: impl Into<String>,
        assertion_type: impl Into<Cow<'static, str>>,
        assertion: Arc<dyn FreshValue>,
    ) -> Self {
        let client_id = client_id.into();
        self.client_id = Some(client_id.clone());
        self.fresh.push(FreshParam {
            name: Cow::Borrowed("client_assertion_type"),
            value: Fresh::Fixed(assertion_type.into()),
        });
        self.fresh.push(FreshParam {
            name: Cow::Borrowed("client_assertion"),
            value: Fresh::Read(assertion),
        });
        self.param("client_id", client_id)
    }

    /// Names the client without authenticating it: `client_id` in the
    /// body (RFC 6749 §3.2.1), for a grant whose client authentication is
    /// optional.
    pub fn client_id(mut self, client_id: impl Into<String>) -> Self {
        let client_id = client_id.into();
        self.client_id = Some(client_id.clone());
        self.param("client_id", client_id)
    }

    /// Appends a JWT signed anew by `assertion` for every request sent as
    /// the body parameter `name`, such as the `assertion` of an RFC 7523
    /// JWT-bearer grant.
    pub fn signed_param(
        mut self,
        name: impl Into<Cow<'static, str>>,
        assertion: ClientAssertion,
    ) -> Self {
        self.fresh.push(FreshParam {
            name: name.into(),
            value: Fresh::Minted(assertion),
        });
        self
    }

    /// Appends a secret body parameter read anew from `value` for every
    /// request sent (after the parameters set with [`param`](Self::param)):
    /// an RFC 7523 `assertion`, an RFC 8693 `subject_token`…
    pub fn fresh_param(
        mut self,
        name: impl Into<Cow<'static, str>>,
        value: Arc<dyn FreshValue>,
    ) -> Self {
        self.fresh.push(FreshParam {
            name: name.into(),
            value: Fresh::Read(value),
        });
        self
    }

    /// Authenticates the client with a secret: `client_id` and
    /// `client_secret` appended to the body here
    /// ([`ClientAuth::Body`]), or an HTTP Basic header
    /// ([`ClientAuth::Basic`]). [`ClientAuth::PrivateKeyJwt`] takes no
    /// secret: use [`client_assertion`](Self::client_assertion); here it
    /// sends the secret in the body.
    pub fn client_credentials(
        mut self,
        auth: ClientAuth,
        client_id: impl Into<String>,
        client_secret: SecretString,
    ) -> Self {
        let client_id = client_id.into();
        self.client_id = Some(client_id.clone());
        match auth {
            ClientAuth::Body
            | ClientAuth::PrivateKeyJwt
            | ClientAuth::ClientAssertion
            | ClientAuth::None
            | ClientAuth::TlsClientAuth
            | ClientAuth::SelfSignedTlsClientAuth => self
                .param("client_id", client_id)
                .secret_param("client_secret", client_secret),
            ClientAuth::Basic => {
                self.basic = Some((client_id, client_secret));
                self
            }
        }
    }

    /// Adds a request header.
    pub fn header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.insert(name, value);
        self
    }

    /// Overrides the HTTP client's total timeout for this request.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// The lifetime assumed when a response has neither `expires_in` nor a
    /// JWT `exp`, overriding the HTTP client's ([`DEFAULT_LIFETIME`] unless
    /// either sets one).
    pub fn default_lifetime(mut self, lifetime: Duration) -> Self {
        self.default_lifetime = Some(lifetime);
        self
    }

    /// Allows a plain `http` URL to a host that is not loopback. Tokens and
    /// secrets then cross the network in clear text: use it only inside a
    /// trusted network.
    pub fn allow_insecure_http(mut self, allow: bool) -> Self {
        self.allow_insecure_http = allow;
        self
    }

    /// Validates the URL and builds the request.
    pub fn build(self) -> Result<TokenRequest, Error> {
        let url = validate_url(&self.url, self.allow_insecure_http)?;
        let mut headers = self.headers;
        // The one place where the secrets a request carries are registered.
        let mut scrubber = Scrubber::new();
        for param in &self.params {
            if let ParamValue::Secret(secret) = &param.value {
                scrubber.register(secret);
            }
        }
        if let Some((client_id, client_secret)) = &self.basic {
            headers.insert(
                AUTHORIZATION,
                basic_authorization(client_id, client_secret)?,
            );
            scrubber.register_basic(client_id, client_secret);
        }
        Ok(TokenRequest {
            url,
            client_id: self.client_id,
            encoding: self.encoding,
            params: self.params,
            fresh: self.fresh,
            headers,
            timeout: self.timeout,
            default_lifetime: self.default_lifetime,
            scrubber,
            basic_secret: self.basic.map(|(_, secret)| secret),
        })
    }
}

/// The RFC 6749 §2.3.1 Basic header: each part form-urlencoded, then base64.
fn basic_authorization(
    client_id: &str,
    client_secret: &SecretString,
) -> Result<HeaderValue, Error> {
    let encode = |part: &str| form_urlencoded::byte_serialize(part.as_bytes()).collect::<String>();
    let credentials = format!(
        "{}:{}",
        encode(client_id),
        encode(client_secret.expose_secret())
    );
    let mut value = HeaderValue::try_from(format!("Basic {}", STANDARD.encode(credentials)))
        .map_err(|_| Error::config("client credentials cannot form a Basic header"))?;
    value.set_sensitive(true);
    Ok(value)
}

/// Whether `url` names a loopback host: `localhost` itself, 127.0.0.0/8 or
/// `::1`.
///
/// A name under `.localhost` (`idp.example.localhost`) is not loopback:
/// unless the resolver special-cases it (glibc without nss-myhostname does
/// not), it is looked up in DNS like any other name, and plain HTTP to it
/// would carry the secret across the network in clear text.
pub fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(Host::Domain(domain)) => domain.eq_ignore_ascii_case("localhost"),
        Some(Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
        Some(Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
        None => false,
    }
}

/// Parses a token endpoint URL and enforces `https` (loopback excepted).
pub fn validate_url(raw: &str, allow_insecure_http: bool) -> Result<Url, Error> {
    let url = Url::parse(raw.trim())
        .map_err(|error| Error::config(format!("token URL {raw:?} is not a valid URL: {error}")))?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err(Error::config(
            "token URL must not carry credentials; configure client_id and client_secret instead",
        ));
    }
    if url.fragment().is_some() {
        return Err(Error::config(format!(
            "token URL {raw:?} must not have a #fragment"
        )));
    }
    match url.scheme() {
        "https" => Ok(url),
        "http" if is_loopback(&url) || allow_insecure_http => Ok(url),
        "http" => Err(Error::config(format!(
            "token URL {raw:?} uses plain http to a non-loopback host; use https, \
             or set allow_insecure_http = true if the network is trusted"
        ))),
        scheme => Err(Error::config(format!(
            "token URL {raw:?} has unsupported scheme {scheme:?}; use https"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(value: &str) -> SecretString {
        SecretString::from(value.to_owned())
    }

    #[test]
    fn metadata_names_are_rfc_8414_s() {
        assert_eq!(ClientAuth::Body.metadata_name(), "client_secret_post");
        assert_eq!(ClientAuth::Basic.metadata_name(), "client_secret_basic");
        for auth in [ClientAuth::Body, ClientAuth::Basic] {
            let parsed: ClientAuth =
                serde_json::from_value(serde_json::json!(auth.metadata_name())).expect("alias");
            assert_eq!(parsed, auth);
        }
    }

    #[test]
    fn json_body_keeps_order_and_exposes_secret_only_on_the_wire() {
        let request = TokenRequest::builder("https://demo.mention-me.com/api/oauth/token")
            .json()
            .client_credentials(ClientAuth::Body, "id-1", secret("s3cr3t"))
            .param("grant_type", "client_credentials")
            .build()
            .expect("valid request");
        let body = String::from_utf8(request.body().expect("body")).expect("utf-8");
        assert_eq!(
            body,
            r#"{"client_id":"id-1","client_secret":"s3cr3t","grant_type":"client_credentials"}"#
        );
        assert_eq!(request.encoding().content_type(), "application/json");
        let debug = format!("{request:?}");
        assert!(!debug.contains("s3cr3t"), "{debug}");
        assert_eq!(request.param("client_secret"), None);
        assert_eq!(request.param("client_id"), Some("id-1"));
    }

    #[test]
    fn form_body_is_url_encoded() {
        let request = TokenRequest::builder("https://idp.example/token")
            .param("grant_type", "client_credentials")
            .param("scope", "a b&c=d")
            .build()
            .expect("valid request");
        let body = String::from_utf8(request.body().expect("body")).expect("utf-8");
        assert_eq!(body, "grant_type=client_credentials&scope=a+b%26c%3Dd");
    }

    #[test]
    fn basic_auth_form_encodes_each_part_before_base64() {
        let request = TokenRequest::builder("https://idp.example/token")
            .client_credentials(ClientAuth::Basic, "my id:1", secret("p@ss w%rd"))
            .build()
            .expect("valid request");
        let header = request.headers().get(AUTHORIZATION).expect("basic header");
        assert!(header.is_sensitive());
        // "my+id%3A1:p%40ss+w%25rd" in base64.
        assert_eq!(
            header,
            &format!("Basic {}", STANDARD.encode("my+id%3A1:p%40ss+w%25rd"))
        );
        assert!(!format!("{request:?}").contains("p@ss"));
        // The request registered the credential: an echo of the header is
        // scrubbed whole.
        let echoed = format!("you sent {}", header.to_str().expect("ASCII"));
        assert_eq!(
            request.scrubber().scrub(&echoed),
            "you sent Basic [redacted]"
        );
    }

    #[test]
    fn https_is_required_except_for_loopback() {
        for ok in [
            "https://tenant.eu.auth0.com/oauth/token",
            "http://127.0.0.1:8080/token",
            "http://127.5.5.5/token",
            "http://localhost:1234/token",
            "http://LocalHost:1234/token",
            "http://[::1]:9/token",
        ] {
            assert!(validate_url(ok, false).is_ok(), "{ok}");
        }
        let error = validate_url("http://idp.example/token", false).expect_err("plain http");
        assert!(error.to_string().contains("allow_insecure_http"), "{error}");
        assert!(validate_url("http://idp.example/token", true).is_ok());
        assert!(validate_url("ftp://idp.example/token", true).is_err());
        assert!(validate_url("not a url", false).is_err());
        let error = validate_url("https://user:hunter2@idp.example/token", false)
            .expect_err("credentials in URL");
        assert!(!error.to_string().contains("hunter2"));
    }

    #[test]
    fn only_localhost_itself_and_loopback_addresses_are_loopback() {
        for remote in [
            "http://idp.attacker.localhost/token",
            "http://LOCALHOST.attacker.localhost/token",
            "http://localhost.attacker.example/token",
            "http://127.0.0.1.nip.io/token",
            "http://[::2]/token",
            "http://0.0.0.0/token",
        ] {
            let url = Url::parse(remote).expect("a URL");
            assert!(!is_loopback(&url), "{remote}");
            let error = validate_url(remote, false).expect_err("not loopback");
            assert!(error.to_string().contains("allow_insecure_http"), "{error}");
        }
        for local in ["http://localhost/", "http://127.0.0.9/", "http://[::1]/"] {
            assert!(is_loopback(&Url::parse(local).expect("a URL")), "{local}");
        }
    }
}
