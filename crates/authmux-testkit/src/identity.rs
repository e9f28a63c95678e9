//! Secretless identity at [`OAUTH2_PATH`](crate::OAUTH2_PATH): JWTs from
//! an issuer the server trusts, as client authentication (RFC 7523 §2.2,
//! federated), as a grant (RFC 7523 §2.1), and tokens traded for tokens
//! (RFC 8693).
//!
//! An [`ExternalIssuer`] stands for the workload's identity provider (a
//! Kubernetes API server, a SPIFFE trust domain, GitHub Actions): it has a
//! fresh P-256 key and mints ES256 JWTs. Tell the server to trust it with
//! [`TokenServer::trust_issuer`](crate::TokenServer::trust_issuer); then
//!
//! | flow | request | refused as |
//! |---|---|---|
//! | federated client | `client_id`, `client_assertion_type` [`JWT_BEARER_ASSERTION`] or [`JWT_SPIFFE_ASSERTION`], `client_assertion`, any grant | 401 `invalid_client` |
//! | JWT-bearer grant | `grant_type` [`JWT_BEARER_GRANT`], `assertion`, client authentication optional | 400 `invalid_grant` |
//! | token exchange | `grant_type` [`TOKEN_EXCHANGE_GRANT`], `subject_token(_type)`, `actor_token(_type)` | 400 `invalid_request` |
//!
//! A JWT from an external issuer passes when its issuer is trusted, its
//! signature checks, it has `sub`, `exp` not past (with jsonwebtoken's 60 s
//! leeway for clock skew) and an `aud` among the server's issuer, its token
//! URL and the audiences added with
//! [`assertion_audience`](crate::TokenServer::assertion_audience). It may be
//! presented again and again until it expires: unlike a `private_key_jwt`
//! assertion, its `jti` is not remembered. A SPIFFE JWT-SVID may leave out
//! `iss`: its trust domain, `spiffe://<domain>` of its `sub`, names the
//! issuer.
//!
//! A federated client is the `client_id` its (issuer, subject) pair is
//! federated to with [`federate`](crate::TokenServer::federate). Every
//! token the server issues is remembered with what it was issued for
//! ([`token_info`](crate::TokenServer::token_info)), which lets a token
//! exchange take it as a subject or actor token until it expires.
//!
//! ```
//! use std::time::Duration;
//! use authmux_testkit::ExternalIssuer;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let idp = authmux_testkit::TokenServer::start().await;
//! let kubernetes = ExternalIssuer::new("https://kubernetes.default.svc");
//! idp.trust_issuer(&kubernetes);
//! idp.federate("my-client", kubernetes.issuer(), "system:serviceaccount:default:app");
//! let assertion = kubernetes.mint(
//!     "system:serviceaccount:default:app",
//!     &idp.oauth2_token_url(),
//!     Duration::from_secs(3600),
//! );
//! // send client_id=my-client, client_assertion_type=JWT_BEARER_ASSERTION,
//! // client_assertion=<assertion>, grant_type=client_credentials
//! # assert_eq!(assertion.split('.').count(), 3);
//! # }
//! ```

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde_json::{Map, Value, json};

use crate::{Knobs, Recorded};

/// RFC 7523 §2.2's `client_assertion_type`: a JWT authenticates the client.
pub const JWT_BEARER_ASSERTION: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// The `client_assertion_type` of a SPIFFE JWT-SVID
/// (draft-ietf-oauth-spiffe-client-auth; Keycloak 26).
pub const JWT_SPIFFE_ASSERTION: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-spiffe";
/// RFC 7523 §2.1's `grant_type`: a JWT is the authorization grant.
pub const JWT_BEARER_GRANT: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
/// RFC 8693's `grant_type`: a token traded for another.
pub const TOKEN_EXCHANGE_GRANT: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
/// RFC 8693 §3: an OAuth 2.0 access token, the only type the server issues.
pub const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";
/// RFC 8693 §3: a JWT.
pub const JWT_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:jwt";
/// RFC 8693 §3: an OpenID Connect ID token.
pub const ID_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:id_token";

/// An identity provider outside the server, with its own signing key: the
/// issuer of the JWTs a workload presents instead of a secret.
///
/// Each one has a fresh P-256 key, so two issuers never verify each
/// other's tokens.
#[derive(Clone)]
pub struct ExternalIssuer {
    issuer: String,
    kid: String,
    key: EncodingKey,
    public_jwk: Value,
}

impl std::fmt::Debug for ExternalIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExternalIssuer")
            .field("issuer", &self.issuer)
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl ExternalIssuer {
    /// An issuer named `issuer` (its tokens' `iss`; a SPIFFE trust domain
    /// is `spiffe://<domain>`) with a new ES256 key.
    ///
    /// # Panics
    ///
    /// If aws-lc cannot generate a key.
    pub fn new(issuer: &str) -> Self {
        let pkcs8 = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING)
            .and_then(|pair| pair.to_pkcs8v1())
            .unwrap_or_else(|error| panic!("cannot generate a P-256 key: {error}"));
        let key = EncodingKey::from_ec_der(pkcs8.as_ref());
        let kid = random_id();
        let mut public_jwk = Jwk::from_encoding_key(&key, Algorithm::ES256)
            .ok()
            .and_then(|jwk| serde_json::to_value(jwk).ok())
            .unwrap_or_else(|| panic!("no public JWK for the generated key"));
        public_jwk["kid"] = json!(kid);
        Self {
            issuer: issuer.to_owned(),
            kid,
            key,
            public_jwk,
        }
    }

    /// The issuer identifier, its tokens' `iss`.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The public JWK (`kty`, `crv`, `x`, `y`, `alg`, `kid`), as the
    /// issuer's JWKS would serve it.
    pub fn jwk(&self) -> Value {
        self.public_jwk.clone()
    }

    /// A signed JWT with `iss` this issuer, `sub` `subject`, `aud`
    /// `audience`, `iat` now, `exp` `lifetime` from now and a fresh `jti`.
    pub fn mint(&self, subject: &str, audience: &str, lifetime: Duration) -> String {
        self.mint_with(json!({
            "sub": subject,
            "aud": audience,
            "exp": now() + lifetime.as_secs(),
        }))
    }

    /// A signed JWT whose claims are `claims` over the defaults: `iss`
    /// this issuer, `iat` now, `exp` five minutes from now and a fresh
    /// `jti`. A `null` member leaves that claim out, so
    /// `json!({"sub": "app", "aud": url, "exp": 1})` is long expired and
    /// `json!({"iss": null, …})` has no issuer.
    ///
    /// # Panics
    ///
    /// If `claims` is not a JSON object.
    pub fn mint_with(&self, claims: Value) -> String {
        let Value::Object(chosen) = claims else {
            panic!("the claims are not a JSON object: {claims}");
        };
        let mut payload = Map::new();
        payload.insert("iss".to_owned(), json!(self.issuer));
        payload.insert("iat".to_owned(), json!(now()));
        payload.insert("exp".to_owned(), json!(now() + 300));
        payload.insert("jti".to_owned(), json!(random_id()));
        for (name, value) in chosen {
            if value.is_null() {
                payload.remove(&name);
            } else {
                payload.insert(name, value);
            }
        }
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, &payload, &self.key)
            .unwrap_or_else(|error| panic!("cannot sign a JWT: {error}"))
    }
}

/// What an issued access token was issued for, as
/// [`TokenServer::token_info`](crate::TokenServer::token_info) tells.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct TokenInfo {
    /// The grant it was issued on: `client_credentials`,
    /// [`JWT_BEARER_GRANT`] or [`TOKEN_EXCHANGE_GRANT`].
    pub grant_type: String,
    /// The authenticated client, if one was.
    pub client_id: Option<String>,
    /// Whom it stands for: the client for client credentials, the
    /// assertion's `sub` for a JWT-bearer grant, the subject token's
    /// subject for a token exchange.
    pub subject: String,
    /// The actor token's subject, for a token exchange with one (the
    /// `act` claim of RFC 8693 §4.1).
    pub actor: Option<String>,
    /// What it is for: the request's `audience` values, then its
    /// `resource` values.
    pub audience: Vec<String>,
    /// The requested `scope`.
    pub scope: Option<String>,
    /// When it expires, to the second.
    pub expires_at: SystemTime,
}

/// What a grant stands for, before a token is issued.
pub(crate) struct Grant {
    pub(crate) subject: String,
    pub(crate) actor: Option<String>,
    /// RFC 8693's `issued_token_type`, for a token exchange.
    pub(crate) issued_token_type: Option<&'static str>,
}

/// Why a JWT from outside was refused.
pub(crate) enum Refusal {
    /// No trusted issuer names it: it may be a `private_key_jwt` assertion.
    Untrusted,
    /// The issuer is trusted but the JWT fails a check: the description.
    Invalid(String),
}

impl Refusal {
    fn describe(self, what: &str) -> String {
        match self {
            Self::Untrusted => format!("{what} is not a JWT from a trusted issuer"),
            Self::Invalid(why) => format!("{what} {why}"),
        }
    }
}

/// The client id a federated client assertion authenticates.
pub(crate) fn federated_client(
    knobs: &Knobs,
    request: &Recorded,
    assertion: &str,
    audiences: &[String],
) -> Result<String, Refusal> {
    let spiffe = request.field("client_assertion_type") == Some(JWT_SPIFFE_ASSERTION);
    let (issuer, subject) = verify(knobs, assertion, audiences, spiffe)?;
    let mut clients = knobs
        .federated
        .iter()
        .filter(|(_, iss, sub)| *iss == issuer && *sub == subject)
        .map(|(client_id, _, _)| client_id);
    let chosen = match request.field("client_id") {
        Some(client_id) => clients.find(|federated| *federated == client_id),
        None => clients.next(),
    };
    chosen.cloned().ok_or_else(|| {
        Refusal::Invalid(format!(
            "is from {issuer} for {subject}, who is not federated to the client"
        ))
    })
}

/// RFC 7523 §2.1: the grant of the request's `assertion`.
pub(crate) fn jwt_bearer(
    knobs: &Knobs,
    request: &Recorded,
    audiences: &[String],
) -> Result<Grant, String> {
    let assertion = request.field("assertion").ok_or("assertion is missing")?;
    let (_, subject) =
        verify(knobs, assertion, audiences, false).map_err(|why| why.describe("the assertion"))?;
    Ok(Grant {
        subject,
        actor: None,
        issued_token_type: None,
    })
}

/// RFC 8693 §2.1: the grant of the request's subject and actor tokens.
pub(crate) fn token_exchange(
    knobs: &Knobs,
    request: &Recorded,
    audiences: &[String],
) -> Result<Grant, String> {
    let token_subject = |token: &str, kind: Option<&str>, what: &str| {
        let kind = kind.ok_or_else(|| format!("{what}_type is missing"))?;
        presented_subject(knobs, token, kind, audiences).map_err(|why| why.describe(what))
    };
    let subject_token = request
        .field("subject_token")
        .ok_or("subject_token is missing")?;
    let subject = token_subject(
        subject_token,
        request.field("subject_token_type"),
        "subject_token",
    )?;
    let actor = match (
        request.field("actor_token"),
        request.field("actor_token_type"),
    ) {
        (None, None) => None,
        (Some(token), kind @ Some(_)) => Some(token_subject(token, kind, "actor_token")?),
        (Some(_), None) => return Err("actor_token_type is missing".to_owned()),
        (None, Some(_)) => return Err("actor_token_type came without actor_token".to_owned()),
    };
    match request.field("requested_token_type") {
        None | Some(ACCESS_TOKEN_TYPE) => Ok(Grant {
            subject,
            actor,
            issued_token_type: Some(ACCESS_TOKEN_TYPE),
        }),
        Some(other) => Err(format!(
            "requested_token_type {other} is not issued here: ask for {ACCESS_TOKEN_TYPE}"
        )),
    }
}

/// The subject of a token presented for exchange: an unexpired access
/// token of this server's, or a JWT from a trusted issuer.
fn presented_subject(
    knobs: &Knobs,
    token: &str,
    kind: &str,
    audiences: &[String],
) -> Result<String, Refusal> {
    if let Some(info) = knobs.tokens.get(token) {
        return if kind != ACCESS_TOKEN_TYPE {
            Err(Refusal::Invalid(format!(
                "is an access token, not of type {kind}"
            )))
        } else if info.expires_at <= SystemTime::now() {
            Err(Refusal::Invalid("has expired".to_owned()))
        } else {
            Ok(info.subject.clone())
        };
    }
    if !matches!(kind, JWT_TOKEN_TYPE | ID_TOKEN_TYPE | ACCESS_TOKEN_TYPE) {
        return Err(Refusal::Invalid(format!("has an unknown type {kind}")));
    }
    match verify(knobs, token, audiences, false) {
        Ok((_, subject)) => Ok(subject),
        Err(Refusal::Untrusted) => Err(Refusal::Invalid(
            "is neither a live token of this server's nor a JWT from a trusted issuer".to_owned(),
        )),
        Err(invalid) => Err(invalid),
    }
}

/// The issuer and subject of a JWT from a trusted issuer that passes every
/// check.
fn verify(
    knobs: &Knobs,
    jwt: &str,
    audiences: &[String],
    spiffe: bool,
) -> Result<(String, String), Refusal> {
    let unverified = jsonwebtoken::dangerous::insecure_decode::<Map<String, Value>>(jwt)
        .map_err(|_| Refusal::Untrusted)?;
    let claim = |name: &str| unverified.claims.get(name).and_then(Value::as_str);
    let trust_domain = || {
        let id = claim("sub")?.strip_prefix("spiffe://")?;
        Some(format!("spiffe://{}", id.split('/').next()?))
    };
    let issuer = match claim("iss") {
        Some(iss) => iss.to_owned(),
        None if spiffe => trust_domain().ok_or(Refusal::Untrusted)?,
        None => return Err(Refusal::Untrusted),
    };
    let key: &DecodingKey = knobs.trusted.get(&issuer).ok_or(Refusal::Untrusted)?;
    let mut validation = Validation::new(unverified.header.alg);
    validation.set_audience(audiences);
    if claim("iss").is_some() {
        validation.set_issuer(&[&issuer]);
    }
    validation.set_required_spec_claims(&["exp", "aud", "sub"]);
    let claims = jsonwebtoken::decode::<Map<String, Value>>(jwt, key, &validation)
        .map_err(|error| Refusal::Invalid(refusal(error.kind(), audiences)))?
        .claims;
    let subject = claims
        .get("sub")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    if spiffe && trust_domain().as_ref() != Some(&issuer) {
        return Err(Refusal::Invalid(format!(
            "has sub {subject}, not a SPIFFE ID of {issuer}"
        )));
    }
    Ok((issuer, subject))
}

fn refusal(kind: &ErrorKind, audiences: &[String]) -> String {
    match kind {
        ErrorKind::ExpiredSignature => "has expired".to_owned(),
        ErrorKind::ImmatureSignature => "is not valid yet".to_owned(),
        ErrorKind::InvalidAudience => format!("has an aud none of {}", audiences.join(", ")),
        ErrorKind::InvalidIssuer => "has the wrong iss".to_owned(),
        ErrorKind::InvalidSignature => "has a bad signature".to_owned(),
        ErrorKind::MissingRequiredClaim(claim) => format!("has no {claim}"),
        other => format!("is not a valid JWT ({other:?})"),
    }
}

/// Seconds since the Unix epoch.
pub(crate) fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs())
}

fn random_id() -> String {
    let mut bytes = [0_u8; 12];
    aws_lc_rs::rand::fill(&mut bytes).unwrap_or_else(|error| panic!("no randomness: {error}"));
    URL_SAFE_NO_PAD.encode(bytes)
}
