//! In-process imitations of the token endpoints [authmux] speaks to, for
//! testing a service that uses authmux without a network or a real
//! identity provider.
//!
//! One [`TokenServer`] answers, on a loopback port, at the paths and in the
//! wire formats the providers document:
//!
//! | provider | path | request | success |
//! |---|---|---|---|
//! | Mention Me | [`MENTION_ME_PATH`] | JSON `client_id`, `client_secret`, `grant_type` | a JWT, `"token_type":"bearer"`, `"expires_in":3600` |
//! | 360Learning | [`LEARNING360_PATH`] | JSON, the same fields | `"expires_in":"3600"`, a string |
//! | Auth0 | [`AUTH0_PATH`] | JSON or form, `audience` | a JWT, `"expires_in":86400`, `DPoP` when a proof came |
//! | RFC 6749 | [`OAUTH2_PATH`] | form, Basic or body credentials | `"token_type":"Bearer"`, `scope` echoed |
//! | RFC 7523 §2.2, federated | [`OAUTH2_PATH`] | form, `client_id`, `client_assertion_type` `…:jwt-bearer` or `…:jwt-spiffe`, `client_assertion` from a trusted [`ExternalIssuer`] | as RFC 6749 |
//! | RFC 7523 §2.1 | [`OAUTH2_PATH`] | form, `grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer`, `assertion`, client authentication optional | as RFC 6749, for the assertion's `sub` |
//! | RFC 8693 | [`OAUTH2_PATH`] | form, `grant_type=urn:ietf:params:oauth:grant-type:token-exchange`, `subject_token(_type)`, `actor_token(_type)`, `audience`, `resource`, `scope`, `requested_token_type` | as RFC 6749, with `issued_token_type` |
//!
//! The last three are secretless identity: the [`identity`] module says
//! what they check and how they are refused.
//!
//! The [`tls`] module serves a TLS token endpoint that can require a client
//! certificate, an HTTP `CONNECT` proxy, and certificates made on the spot,
//! for `tls_ca`, `tls_client_auth` and `proxy` configs.
//!
//! [`METADATA_PATH`] serves RFC 8414 metadata naming the RFC 6749 endpoint,
//! for clients configured with an `issuer` ([`TokenServer::issuer`]);
//! [`serve_metadata`](TokenServer::serve_metadata) changes or removes it,
//! and [`fail_metadata_next`](TokenServer::fail_metadata_next) makes it
//! fail.
//!
//! Errors come in each provider's own shape (`{"code":"401","message":…}`
//! for Mention Me, `{"error":…}` for 360Learning, `{"error",
//! "error_description"}` elsewhere). Knobs make the next requests fail
//! ([`fail_next`](TokenServer::fail_next)), rate-limit them with
//! `Retry-After` ([`rate_limit_next`](TokenServer::rate_limit_next)), slow
//! them down ([`delay`](TokenServer::delay), on tokio's clock, so paused
//! time skips it), refuse the client ([`deny`](TokenServer::deny)), set
//! the lifetime ([`expires_in`](TokenServer::expires_in)), demand a DPoP
//! nonce ([`require_dpop_nonce`](TokenServer::require_dpop_nonce)) or
//! accept a `private_key_jwt` client by its public key
//! ([`expect_client_key`](TokenServer::expect_client_key)). For secretless
//! identity, knobs trust an external issuer's JWTs
//! ([`trust_issuer`](TokenServer::trust_issuer),
//! [`trust_issuer_key`](TokenServer::trust_issuer_key)), federate one of
//! its subjects to a client ([`federate`](TokenServer::federate)), accept
//! another `aud` in them
//! ([`assertion_audience`](TokenServer::assertion_audience)) or refuse a
//! target audience ([`refuse_audience`](TokenServer::refuse_audience)).
//! Every request is counted and recorded ([`recorded`](TokenServer::recorded),
//! with [`Recorded::field`] and [`Recorded::grant_type`]), and every
//! issued token remembered with what it was issued for
//! ([`token_info`](TokenServer::token_info)).
//!
//! # Example
//!
//! Point a client's `base_url` (Mention Me, 360Learning), `domain` (Auth0)
//! or `token_url` (`oauth2`, see [`TokenServer::oauth2_token_url`]) at
//! [`TokenServer::base_url`], then turn the knobs:
//!
//! ```
//! use std::time::Duration;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let idp = authmux_testkit::TokenServer::start().await;
//! idp.expect_client("my-client", "my-secret"); // anything else: invalid_client
//! idp.fail_next(2, 503); // then two transient failures
//! idp.rate_limit_next(1, Duration::from_secs(3)); // then a 429 with Retry-After: 3
//! idp.expires_in(60); // short-lived tokens
//! // config: base_url = "{idp.base_url()}", client_id = "my-client", …
//! assert!(idp.base_url().starts_with("http://127.0.0.1:"));
//! assert_eq!(idp.requests(), 0);
//! # }
//! ```
//!
//! The workspace's `tests/tests/testkit.rs` drives every provider through
//! authmux against it.
//!
//! [authmux]: https://github.com/authmux/authmux

pub mod bench;
#[cfg(feature = "conformance")]
pub mod conformance;
pub mod identity;
pub mod keys;
pub mod tls;

pub use bench::keep_alive_server;
pub use identity::{ExternalIssuer, TokenInfo};

use std::collections::{HashMap, HashSet, VecDeque};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HOST, HeaderMap, HeaderValue, RETRY_AFTER};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use identity::{
    Grant, JWT_BEARER_ASSERTION, JWT_BEARER_GRANT, JWT_SPIFFE_ASSERTION, Refusal,
    TOKEN_EXCHANGE_GRANT,
};
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{DecodingKey, Validation};
use serde_json::{Map, Value, json};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// Mention Me's token path.
pub const MENTION_ME_PATH: &str = "/api/oauth/token";
/// 360Learning API v2's token path.
pub const LEARNING360_PATH: &str = "/api/v2/oauth2/token";
/// Auth0's token path.
pub const AUTH0_PATH: &str = "/oauth/token";
/// The generic RFC 6749 server's token path.
pub const OAUTH2_PATH: &str = "/oauth2/token";
/// Where the server's RFC 8414 metadata is served, for `oauth2` clients
/// configured with `issuer = `[`TokenServer::issuer`].
pub const METADATA_PATH: &str = "/.well-known/oauth-authorization-server";

/// Which provider's format a path speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Flavor {
    /// Mention Me.
    MentionMe,
    /// 360Learning API v2.
    Learning360,
    /// Auth0.
    Auth0,
    /// Any RFC 6749 server.
    OAuth2,
}

impl Flavor {
    fn of(path: &str) -> Option<Self> {
        match path {
            MENTION_ME_PATH => Some(Self::MentionMe),
            LEARNING360_PATH => Some(Self::Learning360),
            AUTH0_PATH => Some(Self::Auth0),
            OAUTH2_PATH => Some(Self::OAuth2),
            _ => None,
        }
    }

    fn default_lifetime(self) -> u64 {
        match self {
            Self::Auth0 => 86_400,
            _ => 3_600,
        }
    }
}

/// One request the server received.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Recorded {
    /// Which format it was answered in.
    pub flavor: Option<Flavor>,
    /// The request path.
    pub path: String,
    /// The request headers.
    pub headers: HeaderMap,
    /// The body's fields, read from JSON or a form. A form field sent more
    /// than once (RFC 8693's `audience` and `resource`) is an array of its
    /// values.
    pub fields: Map<String, Value>,
    /// The client id and secret, from the body or a Basic header. A
    /// `private_key_jwt` or federated client's secret is its assertion.
    pub credentials: Option<(String, String)>,
}

impl Recorded {
    /// The body field `name` (`client_assertion`, `assertion`,
    /// `subject_token`, `actor_token`, …), when sent once as text.
    pub fn field(&self, name: &str) -> Option<&str> {
        self.fields.get(name).and_then(Value::as_str)
    }

    /// Every value of the body field `name`, in order: none when absent.
    pub fn values(&self, name: &str) -> Vec<&str> {
        match self.fields.get(name) {
            Some(Value::Array(values)) => values.iter().filter_map(Value::as_str).collect(),
            Some(value) => value.as_str().into_iter().collect(),
            None => Vec::new(),
        }
    }

    /// The `grant_type` field.
    pub fn grant_type(&self) -> Option<&str> {
        self.field("grant_type")
    }
}

#[derive(Default)]
struct Knobs {
    failures: VecDeque<(u16, Option<Duration>)>,
    delay: Duration,
    deny: bool,
    expires_in: Option<i64>,
    dpop_nonce: Option<String>,
    client: Option<(String, String)>,
    client_key: Option<(String, DecodingKey)>,
    assertion_ids: HashSet<String>,
    /// Public keys of trusted external issuers, by issuer identifier.
    trusted: HashMap<String, DecodingKey>,
    /// (client id, issuer, subject) federations.
    federated: Vec<(String, String, String)>,
    /// Accepted audiences of external JWTs besides the server's own.
    assertion_audiences: Vec<String>,
    /// Audiences and resources answered `invalid_target`.
    refused_audiences: HashSet<String>,
    /// Every token issued, by its access token.
    tokens: HashMap<String, TokenInfo>,
    /// What the metadata path answers when not the default document:
    /// `Some(None)` is a 404.
    metadata: Option<Option<Value>>,
    /// Statuses the next metadata requests get instead of the document.
    metadata_failures: VecDeque<u16>,
    recorded: Vec<Recorded>,
    issued: u64,
}

impl std::fmt::Debug for Knobs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Knobs")
            .field("failures", &self.failures)
            .field("deny", &self.deny)
            .field("client_key", &self.client_key.as_ref().map(|(id, _)| id))
            .field("trusted", &self.trusted.keys().collect::<Vec<_>>())
            .field("federated", &self.federated)
            .field("recorded", &self.recorded.len())
            .field("issued", &self.issued)
            .finish_non_exhaustive()
    }
}

/// A token server on a loopback port; it stops when dropped.
#[derive(Debug)]
pub struct TokenServer {
    addr: SocketAddr,
    knobs: Arc<Mutex<Knobs>>,
    task: JoinHandle<()>,
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TokenServer {
    /// Starts a server on `127.0.0.1` and a free port. Needs a tokio runtime.
    ///
    /// # Panics
    ///
    /// If no loopback port can be bound.
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|error| panic!("cannot bind a loopback port: {error}"));
        let addr = listener
            .local_addr()
            .unwrap_or_else(|error| panic!("no local address: {error}"));
        let knobs = Arc::new(Mutex::new(Knobs::default()));
        let shared = Arc::clone(&knobs);
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let knobs = Arc::clone(&shared);
                tokio::spawn(async move {
                    let service = service_fn(move |request| answer(Arc::clone(&knobs), request));
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self { addr, knobs, task }
    }

    fn knobs(&self) -> MutexGuard<'_, Knobs> {
        self.knobs.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// `http://127.0.0.1:<port>`: the `base_url` of Mention Me and
    /// 360Learning clients, and the `domain` of Auth0 clients.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The generic RFC 6749 endpoint: `token_url` of `oauth2` clients.
    pub fn oauth2_token_url(&self) -> String {
        format!("{}{OAUTH2_PATH}", self.base_url())
    }

    /// The issuer identifier, `http://127.0.0.1:<port>`: the `issuer` of
    /// `oauth2` clients that discover the token endpoint.
    pub fn issuer(&self) -> String {
        self.base_url()
    }

    /// The metadata document served at [`METADATA_PATH`] by default: this
    /// issuer, [`oauth2_token_url`](Self::oauth2_token_url) as the token
    /// endpoint, Basic, body and `private_key_jwt` client authentication,
    /// the client-credentials, JWT-bearer and token-exchange grants, and
    /// ES256 DPoP proofs.
    pub fn default_metadata(&self) -> Value {
        default_metadata(&self.issuer())
    }

    /// Serves `metadata` at [`METADATA_PATH`] instead of the default
    /// document; `None` answers 404 there.
    pub fn serve_metadata(&self, metadata: Option<Value>) {
        self.knobs().metadata = Some(metadata);
    }

    /// The next `count` requests to [`METADATA_PATH`] get `status` with an
    /// RFC 6749 error body instead of the metadata; token requests are not
    /// affected.
    pub fn fail_metadata_next(&self, count: usize, status: u16) {
        let mut knobs = self.knobs();
        knobs.metadata_failures.extend((0..count).map(|_| status));
    }

    /// Only `client_id` with `client_secret` gets tokens; anything else is
    /// refused as `invalid_client` in the provider's shape.
    pub fn expect_client(&self, client_id: &str, client_secret: &str) {
        self.knobs().client = Some((client_id.to_owned(), client_secret.to_owned()));
    }

    /// The next `count` requests get `status` with the provider's error
    /// body (`temporarily_unavailable` for 5xx).
    pub fn fail_next(&self, count: usize, status: u16) {
        let mut knobs = self.knobs();
        knobs.failures.extend((0..count).map(|_| (status, None)));
    }

    /// The next `count` requests get 429 with `Retry-After: <seconds>`.
    pub fn rate_limit_next(&self, count: usize, retry_after: Duration) {
        let mut knobs = self.knobs();
        knobs
            .failures
            .extend((0..count).map(|_| (429, Some(retry_after))));
    }

    /// Every answer waits `delay` first, on tokio's clock.
    pub fn delay(&self, delay: Duration) {
        self.knobs().delay = delay;
    }

    /// Only `client_id` with a `private_key_jwt` assertion signed by the
    /// private key of `public_jwk` gets tokens, and each assertion only
    /// once (by its `jti`). The assertion must be a JWT with `iss` and `sub`
    /// the client id, `exp` in the future and `aud` the provider's: Auth0's
    /// `{base_url}/`, the token URL elsewhere. Anything else is refused as
    /// `invalid_client`.
    ///
    /// # Panics
    ///
    /// If `public_jwk` is not an RSA or EC public JWK.
    pub fn expect_client_key(&self, client_id: &str, public_jwk: &Value) {
        self.knobs().client_key = Some((client_id.to_owned(), decoding_key(public_jwk)));
    }

    /// Trusts JWTs signed by `issuer`: as federated client assertions,
    /// JWT-bearer grants and subject or actor tokens of a token exchange,
    /// at [`OAUTH2_PATH`]. See [`identity`] for the checks.
    pub fn trust_issuer(&self, issuer: &ExternalIssuer) {
        self.trust_issuer_key(issuer.issuer(), &issuer.jwk());
    }

    /// Trusts JWTs whose `iss` is `issuer` (for a SPIFFE JWT-SVID, whose
    /// trust domain is) signed by the private key of `public_jwk`, which
    /// replaces any key trusted for `issuer` before.
    ///
    /// # Panics
    ///
    /// If `public_jwk` is not an RSA or EC public JWK.
    pub fn trust_issuer_key(&self, issuer: &str, public_jwk: &Value) {
        let key = decoding_key(public_jwk);
        self.knobs().trusted.insert(issuer.to_owned(), key);
    }

    /// A client assertion from the trusted `issuer` whose `sub` is
    /// `subject` authenticates `client_id` (Entra's federated identity
    /// credential, Keycloak's federated client authentication).
    pub fn federate(&self, client_id: &str, issuer: &str, subject: &str) {
        self.knobs()
            .federated
            .push((client_id.to_owned(), issuer.to_owned(), subject.to_owned()));
    }

    /// JWTs from trusted issuers may also have `audience` as their `aud`
    /// (Entra's `api://AzureADTokenExchange`), besides the server's issuer
    /// and token URL.
    pub fn assertion_audience(&self, audience: &str) {
        self.knobs().assertion_audiences.push(audience.to_owned());
    }

    /// A request to [`OAUTH2_PATH`] with `audience` among its `audience`
    /// or `resource` values gets 400 `invalid_target`.
    pub fn refuse_audience(&self, audience: &str) {
        self.knobs().refused_audiences.insert(audience.to_owned());
    }

    /// What `access_token`, issued by this server, was issued for; `None`
    /// for a token it never issued.
    pub fn token_info(&self, access_token: &str) -> Option<TokenInfo> {
        self.knobs().tokens.get(access_token).cloned()
    }

    /// Refuses every client (`true`) or stops refusing them (`false`).
    pub fn deny(&self, deny: bool) {
        self.knobs().deny = deny;
    }

    /// Issued tokens say `expires_in` seconds (the provider's own by default).
    pub fn expires_in(&self, seconds: i64) {
        self.knobs().expires_in = Some(seconds);
    }

    /// A request whose DPoP proof does not carry `nonce` gets 400
    /// `use_dpop_nonce` with `DPoP-Nonce: <nonce>`.
    pub fn require_dpop_nonce(&self, nonce: &str) {
        self.knobs().dpop_nonce = Some(nonce.to_owned());
    }

    /// How many requests arrived, answered or not.
    pub fn requests(&self) -> usize {
        self.knobs().recorded.len()
    }

    /// How many requests came with the client id `client_id`.
    pub fn requests_from(&self, client_id: &str) -> usize {
        self.knobs()
            .recorded
            .iter()
            .filter(|request| {
                request
                    .credentials
                    .as_ref()
                    .is_some_and(|(id, _)| id == client_id)
            })
            .count()
    }

    /// How many tokens were issued.
    pub fn issued(&self) -> u64 {
        self.knobs().issued
    }

    /// Every request so far, oldest first.
    pub fn recorded(&self) -> Vec<Recorded> {
        self.knobs().recorded.clone()
    }
}

async fn answer(
    knobs: Arc<Mutex<Knobs>>,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (parts, body) = request.into_parts();
    let body = body
        .collect()
        .await
        .map(|collected| collected.to_bytes())
        .unwrap_or_default();
    let recorded = record(parts.uri.path(), parts.headers.clone(), &body);
    let delay = knobs.lock().unwrap_or_else(PoisonError::into_inner).delay;
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let mut knobs = knobs.lock().unwrap_or_else(PoisonError::into_inner);
    let response = if recorded.path == METADATA_PATH {
        match knobs.metadata_failures.pop_front() {
            Some(status) => error(Flavor::OAuth2, status, failure_code(status)),
            None => metadata(&knobs, &parts.headers),
        }
    } else {
        respond(&mut knobs, &recorded)
    };
    knobs.recorded.push(recorded);
    Ok(response)
}

fn record(path: &str, headers: HeaderMap, body: &[u8]) -> Recorded {
    let json = headers
        .get(CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("application/json"));
    let fields = if json {
        serde_json::from_slice(body).unwrap_or_default()
    } else {
        form_fields(body)
    };
    let text = |name: &str| fields.get(name).and_then(Value::as_str).map(str::to_owned);
    let credentials = basic(&headers)
        .or_else(|| text("client_id").zip(text("client_secret")))
        .or_else(|| text("client_id").zip(text("client_assertion")));
    Recorded {
        flavor: Flavor::of(path),
        path: path.to_owned(),
        headers,
        fields,
        credentials,
    }
}

/// A form's fields; one sent more than once becomes an array of its values.
fn form_fields(body: &[u8]) -> Map<String, Value> {
    let mut fields = Map::new();
    for (name, value) in form_urlencoded::parse(body) {
        let value = Value::String(value.into_owned());
        match fields.entry(name.into_owned()) {
            serde_json::map::Entry::Vacant(slot) => {
                slot.insert(value);
            }
            serde_json::map::Entry::Occupied(mut slot) => match slot.get_mut() {
                Value::Array(values) => values.push(value),
                first => *first = Value::Array(vec![first.take(), value]),
            },
        }
    }
    fields
}

/// The id and secret of an RFC 6749 §2.3.1 Basic header.
fn basic(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let encoded = value.strip_prefix("Basic ")?;
    let decoded = String::from_utf8(STANDARD.decode(encoded).ok()?).ok()?;
    let (id, secret) = decoded.split_once(':')?;
    let unescape = |part: &str| {
        form_urlencoded::parse(format!("x={part}").as_bytes())
            .next()
            .map(|(_, value)| value.into_owned())
    };
    Some((unescape(id)?, unescape(secret)?))
}

/// A verifying key from a public JWK.
///
/// # Panics
///
/// If `public_jwk` is not an RSA or EC public JWK.
fn decoding_key(public_jwk: &Value) -> DecodingKey {
    let jwk: Jwk = serde_json::from_value(public_jwk.clone())
        .unwrap_or_else(|error| panic!("not a public JWK: {error}"));
    DecodingKey::from_jwk(&jwk).unwrap_or_else(|error| panic!("not a usable public JWK: {error}"))
}

/// The metadata document, whose URLs name the host the request was sent to.
fn metadata(knobs: &Knobs, headers: &HeaderMap) -> Response<Full<Bytes>> {
    let document = match &knobs.metadata {
        Some(chosen) => chosen.clone(),
        None => headers
            .get(hyper::header::HOST)
            .and_then(|host| host.to_str().ok())
            .map(|host| default_metadata(&format!("http://{host}"))),
    };
    match document {
        Some(document) => reply(200, document),
        None => reply(404, json!({"error": "not_found"})),
    }
}

fn respond(knobs: &mut Knobs, request: &Recorded) -> Response<Full<Bytes>> {
    let Some(flavor) = request.flavor else {
        return reply(404, json!({"error": "not_found"}));
    };
    if let Some((status, retry_after)) = knobs.failures.pop_front() {
        let mut response = error(flavor, status, failure_code(status));
        if let Some(wait) = retry_after {
            response
                .headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from(wait.as_secs()));
        }
        return response;
    }
    let client = match authenticate(knobs, flavor, request) {
        Ok(client) => client,
        Err(description) => return described(flavor, 401, "invalid_client", &description),
    };
    let grant = match grant(knobs, flavor, request, client.as_deref()) {
        Ok(grant) => grant,
        Err((code, description)) => return described(flavor, 400, code, &description),
    };
    let proof = request.headers.get("dpop").and_then(proof_claims);
    if let Some(nonce) = &knobs.dpop_nonce
        && proof.is_some()
        && proof_nonce(proof.as_ref()) != Some(nonce.as_str())
    {
        let mut response = error(flavor, 400, "use_dpop_nonce");
        if let Ok(value) = HeaderValue::from_str(nonce) {
            response.headers_mut().insert("dpop-nonce", value);
        }
        return response;
    }
    knobs.issued += 1;
    let lifetime = knobs.expires_in.unwrap_or(flavor.default_lifetime() as i64);
    let mut body = success(flavor, request, knobs.issued, lifetime, proof.is_some());
    if let Some(issued_token_type) = grant.issued_token_type {
        body["issued_token_type"] = json!(issued_token_type);
    }
    if let Some(access_token) = body["access_token"].as_str() {
        let info = TokenInfo {
            grant_type: request.grant_type().unwrap_or_default().to_owned(),
            client_id: client,
            subject: grant.subject,
            actor: grant.actor,
            audience: targets(request).map(str::to_owned).collect(),
            scope: request.field("scope").map(str::to_owned),
            expires_at: UNIX_EPOCH
                + Duration::from_secs(identity::now().saturating_add_signed(lifetime)),
        };
        knobs.tokens.insert(access_token.to_owned(), info);
    }
    reply(200, body)
}

/// The authenticated client's id, `None` for a JWT-bearer grant without
/// client authentication, or why the client is refused.
fn authenticate(
    knobs: &mut Knobs,
    flavor: Flavor,
    request: &Recorded,
) -> Result<Option<String>, String> {
    const REFUSED: &str = "Invalid client credentials.";
    if knobs.deny {
        return Err(REFUSED.to_owned());
    }
    let client = match request.field("client_assertion_type") {
        Some(kind @ (JWT_BEARER_ASSERTION | JWT_SPIFFE_ASSERTION)) => {
            let assertion = request
                .field("client_assertion")
                .ok_or_else(|| "client_assertion is missing".to_owned())?;
            let federated = match flavor {
                Flavor::OAuth2 => {
                    let audiences = external_audiences(knobs, request);
                    identity::federated_client(knobs, request, assertion, &audiences)
                }
                _ => Err(Refusal::Untrusted),
            };
            match federated {
                Ok(client_id) => Some(client_id),
                Err(Refusal::Invalid(why)) => return Err(format!("client_assertion {why}")),
                Err(Refusal::Untrusted)
                    if kind == JWT_BEARER_ASSERTION
                        && accepts_assertion(knobs, flavor, request) =>
                {
                    request.credentials.as_ref().map(|(id, _)| id.clone())
                }
                Err(Refusal::Untrusted) => return Err(REFUSED.to_owned()),
            }
        }
        Some(_) => return Err(REFUSED.to_owned()),
        None => {
            let wrong = knobs.client_key.is_some()
                || knobs
                    .client
                    .as_ref()
                    .is_some_and(|expected| request.credentials.as_ref() != Some(expected));
            if wrong && request.credentials.is_some() {
                return Err(REFUSED.to_owned());
            }
            request.credentials.as_ref().map(|(id, _)| id.clone())
        }
    };
    // RFC 7523 §2.1: the JWT-bearer grant may come without client
    // authentication; every other grant needs it.
    let anonymous_allowed =
        flavor == Flavor::OAuth2 && request.grant_type() == Some(JWT_BEARER_GRANT);
    if client.is_none() && !anonymous_allowed {
        return Err(REFUSED.to_owned());
    }
    Ok(client)
}

/// What the request's grant stands for, or the RFC 6749 error code and
/// description of a 400 refusing it.
fn grant(
    knobs: &Knobs,
    flavor: Flavor,
    request: &Recorded,
    client: Option<&str>,
) -> Result<Grant, (&'static str, String)> {
    let audiences = || external_audiences(knobs, request);
    let grant = match (flavor, request.grant_type()) {
        (_, Some("client_credentials")) => Grant {
            subject: client.unwrap_or_default().to_owned(),
            actor: None,
            issued_token_type: None,
        },
        (Flavor::OAuth2, Some(JWT_BEARER_GRANT)) if request.field("assertion").is_none() => {
            return Err(("invalid_request", "assertion is missing".to_owned()));
        }
        (Flavor::OAuth2, Some(JWT_BEARER_GRANT)) => {
            identity::jwt_bearer(knobs, request, &audiences())
                .map_err(|why| ("invalid_grant", why))?
        }
        (Flavor::OAuth2, Some(TOKEN_EXCHANGE_GRANT)) => {
            identity::token_exchange(knobs, request, &audiences())
                .map_err(|why| ("invalid_request", why))?
        }
        (_, other) => {
            let description = format!("grant_type {} is not supported", other.unwrap_or("(none)"));
            return Err(("unsupported_grant_type", description));
        }
    };
    let refused = targets(request).find(|target| knobs.refused_audiences.contains(*target));
    if flavor == Flavor::OAuth2
        && let Some(target) = refused
    {
        let description = format!("{target} is not a target of this server");
        return Err(("invalid_target", description));
    }
    Ok(grant)
}

/// The request's `audience` values, then its `resource` values.
fn targets(request: &Recorded) -> impl Iterator<Item = &str> {
    let audience = request.values("audience");
    let resource = request.values("resource");
    audience.into_iter().chain(resource)
}

/// The `aud` a client assertion for this server carries: Auth0 wants its
/// tenant URL; a standard server takes its token endpoint URL or, as RFC
/// 7523 §3 allows, its issuer identifier.
fn server_audiences(flavor: Flavor, request: &Recorded) -> Vec<String> {
    let Some(host) = request
        .headers
        .get(HOST)
        .and_then(|host| host.to_str().ok())
    else {
        return Vec::new();
    };
    match flavor {
        Flavor::Auth0 => vec![format!("http://{host}/")],
        _ => vec![
            format!("http://{host}{}", request.path),
            format!("http://{host}"),
        ],
    }
}

/// The `aud` a JWT from an external issuer may carry.
fn external_audiences(knobs: &Knobs, request: &Recorded) -> Vec<String> {
    let mut audiences = server_audiences(Flavor::OAuth2, request);
    audiences.extend(knobs.assertion_audiences.iter().cloned());
    audiences
}

/// Whether the request's assertion is signed by the expected client's key,
/// is for this server, and was never seen before.
fn accepts_assertion(knobs: &mut Knobs, flavor: Flavor, request: &Recorded) -> bool {
    let Some((client_id, key)) = &knobs.client_key else {
        return false;
    };
    let Some(assertion) = request.field("client_assertion") else {
        return false;
    };
    let audiences = server_audiences(flavor, request);
    if audiences.is_empty() {
        return false;
    }
    let Ok(header) = jsonwebtoken::decode_header(assertion) else {
        return false;
    };
    let mut validation = Validation::new(header.alg);
    validation.set_audience(&audiences);
    validation.set_issuer(&[client_id]);
    validation.sub = Some(client_id.clone());
    validation.set_required_spec_claims(&["exp", "iat", "aud", "iss", "sub"]);
    let Ok(data) = jsonwebtoken::decode::<Map<String, Value>>(assertion, key, &validation) else {
        return false;
    };
    let jti = data
        .claims
        .get("jti")
        .and_then(Value::as_str)
        .map(str::to_owned);
    request.field("client_id") == Some(client_id.as_str())
        && header.typ.as_deref() == Some("JWT")
        && jti.is_some_and(|jti| knobs.assertion_ids.insert(jti))
}

fn failure_code(status: u16) -> &'static str {
    match status {
        429 => "too_many_requests",
        500..=599 => "temporarily_unavailable",
        401 => "invalid_client",
        403 => "access_denied",
        _ => "invalid_request",
    }
}

fn proof_claims(value: &HeaderValue) -> Option<Value> {
    let payload = value.to_str().ok()?.split('.').nth(1)?;
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).ok()?).ok()
}

fn proof_nonce(claims: Option<&Value>) -> Option<&str> {
    claims?.get("nonce")?.as_str()
}

/// The body of a token response.
fn success(flavor: Flavor, request: &Recorded, serial: u64, lifetime: i64, dpop: bool) -> Value {
    let client_id = request
        .credentials
        .as_ref()
        .map(|(id, _)| id.clone())
        .unwrap_or_default();
    let field = |name: &str| request.fields.get(name).cloned().unwrap_or(Value::Null);
    match flavor {
        Flavor::MentionMe => json!({
            "access_token": jwt(json!({
                "aud": ["project-test-2da703ca-e983-410e-93d0-442bb05b9b06"],
                "claims": {"env": "demo", "merchantId": "4259"},
                "iss": "stytch.com/project-test-2da703ca-e983-410e-93d0-442bb05b9b06",
                "scope": "customers:list",
                "sub": client_id,
                "jti": serial,
            }), lifetime),
            "expires_in": lifetime,
            "token_type": "bearer",
        }),
        Flavor::Learning360 => json!({
            "token_type": "Bearer",
            "access_token": jwt(json!({"sub": client_id, "jti": serial}), lifetime),
            "expires_in": lifetime.to_string(),
        }),
        Flavor::Auth0 => json!({
            "access_token": jwt(json!({
                "aud": field("audience"), "azp": client_id,
                "gty": "client-credentials", "jti": serial,
            }), lifetime),
            "token_type": if dpop { "DPoP" } else { "Bearer" },
            "expires_in": lifetime,
        }),
        Flavor::OAuth2 => json!({
            "access_token": format!("opaque-token-{serial}"),
            "token_type": if dpop { "DPoP" } else { "Bearer" },
            "expires_in": lifetime,
            "scope": field("scope"),
        }),
    }
}

fn error(flavor: Flavor, status: u16, code: &str) -> Response<Full<Bytes>> {
    let description = match code {
        "invalid_client" => "Invalid client credentials.",
        "use_dpop_nonce" => "Authorization server requires nonce in DPoP proof.",
        "too_many_requests" => "Too many requests.",
        _ => "The request failed.",
    };
    described(flavor, status, code, description)
}

/// An error body in the provider's shape, saying `description` where the
/// shape has room for it.
fn described(flavor: Flavor, status: u16, code: &str, description: &str) -> Response<Full<Bytes>> {
    let body = match flavor {
        Flavor::MentionMe => json!({"code": status.to_string(), "message": description}),
        Flavor::Learning360 if code != "use_dpop_nonce" => json!({"error": code}),
        _ => json!({"error": code, "error_description": description}),
    };
    reply(status, body)
}

fn default_metadata(issuer: &str) -> Value {
    json!({
        "issuer": issuer,
        "token_endpoint": format!("{issuer}{OAUTH2_PATH}"),
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "private_key_jwt"],
        "token_endpoint_auth_signing_alg_values_supported": ["RS256", "PS256", "ES256"],
        "grant_types_supported": ["client_credentials", JWT_BEARER_GRANT, TOKEN_EXCHANGE_GRANT],
        "dpop_signing_alg_values_supported": ["ES256"],
    })
}

/// An unsigned JWT-shaped token whose payload is `claims` plus `iat`,
/// `nbf` and `exp`, `lifetime` seconds from now.
pub fn jwt(mut claims: Value, lifetime: i64) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs() as i64);
    claims["iat"] = json!(now);
    claims["nbf"] = json!(now);
    claims["exp"] = json!(now + lifetime);
    format!(
        "{}.{}.c2lnbmF0dXJl",
        URL_SAFE_NO_PAD.encode(r#"{"alg":"RS256","typ":"JWT"}"#),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    )
}

fn reply(status: u16, body: Value) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}
