//! `private_key_jwt` client authentication (RFC 7523 §2.2, OpenID Connect
//! Core §9): a JWT signed with the client's private key, minted anew for
//! every request and sent in place of a client secret.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::rand::{SecureRandom as _, SystemRandom};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use secrecy::SecretString;
use serde::Serialize;

use crate::error::Error;
use crate::signing::{SigningAlgorithm, SigningKey};

/// The `client_assertion_type` of a JWT client assertion.
pub const JWT_BEARER_ASSERTION_TYPE: &str =
    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// How long an assertion is valid: `exp` is `iat` plus this. Long enough
/// for a server whose clock is a little behind, short enough that a leaked
/// assertion is soon useless.
pub const ASSERTION_LIFETIME: Duration = Duration::from_secs(120);

/// Random bytes in each `jti`: 128 bits.
const JTI_BYTES: usize = 16;

/// Mints the JWT client assertions of one client: `iss` and `sub` are its
/// id, `aud` the server's, and every assertion has a fresh `jti`, `iat`
/// and `exp` and is signed with the client's key.
///
/// ```text
/// {"alg":"RS256","typ":"JWT","kid":"key-1"}
/// {"iss":"<client id>","sub":"<client id>","aud":"<audience>","jti":"<128 random bits>",
///  "iat":1767225600,"exp":1767225720}
/// ```
///
/// Cloning is cheap. `Debug` shows the client, audience, algorithm, `kid`
/// and key thumbprint, never the key.
#[derive(Clone)]
pub struct ClientAssertion {
    client_id: Arc<str>,
    /// `iss`: the client id unless set.
    issuer: Arc<str>,
    /// `sub`: the client id unless set.
    subject: Arc<str>,
    audience: Arc<str>,
    key: SigningKey,
    algorithm: SigningAlgorithm,
    /// Whether the algorithm was set (configured, or the JWK's `alg`)
    /// rather than the key's default.
    algorithm_set: bool,
    kid: Option<Arc<str>>,
    /// The base64url JWS header, the same in every assertion.
    header: Arc<str>,
}

impl fmt::Debug for ClientAssertion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientAssertion")
            .field("client_id", &self.client_id)
            .field("issuer", &self.issuer)
            .field("subject", &self.subject)
            .field("audience", &self.audience)
            .field("algorithm", &self.algorithm)
            .field("kid", &self.kid)
            .field("thumbprint", &self.key.thumbprint())
            .finish()
    }
}

#[derive(Serialize)]
struct Header<'a> {
    alg: &'a str,
    typ: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    kid: Option<&'a str>,
}

#[derive(Serialize)]
struct Claims<'a> {
    iss: &'a str,
    sub: &'a str,
    aud: &'a str,
    jti: &'a str,
    iat: u64,
    exp: u64,
}

impl ClientAssertion {
    /// Assertions for `client_id` to `audience`, signed by `key` with
    /// `algorithm` (the key's default when `None`: its JWK's `alg`, else
    /// the first it can sign), with `kid` in the header: the one given,
    /// else the key's JWK `kid`, if any. OpenID Connect Core §10.1 needs a
    /// `kid` whenever the client registered more than one key.
    ///
    /// # Errors
    ///
    /// A config error when `algorithm` does not fit the key, such as
    /// `client_assertion_alg: ES256 does not fit the RSA key of
    /// client_assertion_key; use RS256 or PS256`, or contradicts the `alg`
    /// of the key's JWK.
    pub fn new(
        client_id: &str,
        audience: &str,
        key: SigningKey,
        algorithm: Option<SigningAlgorithm>,
        kid: Option<&str>,
    ) -> Result<Self, Error> {
        if let (Some(configured), Some(declared)) = (algorithm, key.declared_algorithm())
            && configured != declared
        {
            return Err(Error::config(format!(
                "client_assertion_alg: {configured} contradicts the \"alg\" {declared} of the \
                 JWK in client_assertion_key; remove one of them"
            )));
        }
        let algorithm_set = algorithm.is_some() || key.declared_algorithm().is_some();
        let algorithm = algorithm.unwrap_or(key.default_algorithm());
        if !key.algorithms().contains(&algorithm) {
            let fits: Vec<&str> = key.algorithms().iter().map(|alg| alg.as_str()).collect();
            return Err(Error::config(format!(
                "client_assertion_alg: {algorithm} does not fit the {} key of \
                 client_assertion_key; use {}",
                key.key_type(),
                fits.join(" or ")
            )));
        }
        let kid: Option<Arc<str>> = kid.map(Arc::from).or_else(|| key.kid().map(Arc::from));
        let header = serde_json::to_vec(&Header {
            alg: algorithm.as_str(),
            typ: "JWT",
            kid: kid.as_deref(),
        })
        .map_err(|_| Error::config("client_assertion_kid: cannot be written as JSON"))?;
        Ok(Self {
            client_id: Arc::from(client_id),
            issuer: Arc::from(client_id),
            subject: Arc::from(client_id),
            audience: Arc::from(audience),
            key,
            algorithm,
            algorithm_set,
            kid,
            header: Arc::from(URL_SAFE_NO_PAD.encode(header)),
        })
    }

    /// The client id: `iss` and `sub` unless
    /// [`with_issuer_and_subject`](Self::with_issuer_and_subject) says
    /// otherwise.
    pub fn client_id(&self) -> &str {
        &self.client_id
    }

    /// Assertions with their own `iss` and `sub`, such as the grant of an
    /// RFC 7523 §2.1 JWT-bearer request on behalf of a service account.
    pub fn with_issuer_and_subject(mut self, issuer: &str, subject: &str) -> Self {
        self.issuer = Arc::from(issuer);
        self.subject = Arc::from(subject);
        self
    }

    /// The `iss` of every assertion.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The `sub` of every assertion.
    pub fn subject(&self) -> &str {
        &self.subject
    }

    /// The `aud` of every assertion.
    pub fn audience(&self) -> &str {
        &self.audience
    }

    /// The signature algorithm.
    pub fn algorithm(&self) -> SigningAlgorithm {
        self.algorithm
    }

    /// The algorithms the key can sign with; see
    /// [`SigningKey::algorithms`].
    pub fn key_algorithms(&self) -> &'static [SigningAlgorithm] {
        self.key.algorithms()
    }

    /// The algorithm to use with a server that accepts only `accepted`
    /// (RFC 8414's `token_endpoint_auth_signing_alg_values_supported`, in
    /// the server's order): the one that was set, configured or as the
    /// JWK's `alg`, if the server lists it; else the first the server
    /// lists that the key can sign. `None` when nothing fits.
    pub fn algorithm_for<S: AsRef<str>>(&self, accepted: &[S]) -> Option<SigningAlgorithm> {
        let listed = |algorithm: SigningAlgorithm| {
            accepted
                .iter()
                .any(|name| name.as_ref() == algorithm.as_str())
        };
        if self.algorithm_set {
            return listed(self.algorithm).then_some(self.algorithm);
        }
        accepted.iter().find_map(|name| {
            self.key
                .algorithms()
                .iter()
                .copied()
                .find(|algorithm| algorithm.as_str() == name.as_ref())
        })
    }

    /// Whether the algorithm was set, in the configuration or as the
    /// JWK's `alg`, rather than taken from the key type.
    pub fn is_algorithm_set(&self) -> bool {
        self.algorithm_set
    }

    /// The key type, `"RSA"` or `"EC"`.
    pub fn key_type(&self) -> &'static str {
        self.key.key_type()
    }

    /// The `kid` of the header, if any.
    pub fn kid(&self) -> Option<&str> {
        self.kid.as_deref()
    }

    /// The RFC 7638 thumbprint of the signing key's public part. It is part
    /// of the token identity.
    pub fn thumbprint(&self) -> &str {
        self.key.thumbprint()
    }

    /// A new signed assertion, valid for [`ASSERTION_LIFETIME`] from now.
    ///
    /// # Errors
    ///
    /// When the system's random number generator or the signature fails.
    pub fn mint(&self) -> Result<SecretString, Error> {
        let mut random = [0_u8; JTI_BYTES];
        SystemRandom::new().fill(&mut random).map_err(|_| {
            Error::config("client_assertion: the system's random number generator failed")
        })?;
        let jti = URL_SAFE_NO_PAD.encode(random);
        let iat = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| since.as_secs());
        let claims = serde_json::to_vec(&Claims {
            iss: &self.issuer,
            sub: &self.subject,
            aud: &self.audience,
            jti: &jti,
            iat,
            exp: iat + ASSERTION_LIFETIME.as_secs(),
        })
        .map_err(|_| Error::config("client_assertion: the claims do not serialize"))?;
        let mut jwt = String::with_capacity(self.header.len() + claims.len() * 4 / 3 + 400);
        jwt.push_str(&self.header);
        jwt.push('.');
        URL_SAFE_NO_PAD.encode_string(&claims, &mut jwt);
        let signature = self
            .key
            .sign(self.algorithm, jwt.as_bytes())
            .map_err(|error| Error::config(format!("client_assertion: {}", error.message())))?;
        jwt.push('.');
        URL_SAFE_NO_PAD.encode_string(signature, &mut jwt);
        Ok(SecretString::from(jwt))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret as _;

    #[test]
    fn every_assertion_is_new_and_names_the_client() {
        let key = SigningKey::generate_p256().expect("key");
        let assertion =
            ClientAssertion::new("client-1", "https://idp/", key, None, Some("k1")).expect("ok");
        let first = assertion.mint().expect("mint");
        let second = assertion.mint().expect("mint");
        assert_ne!(first.expose_secret(), second.expose_secret());
        let part = |jwt: &SecretString, index: usize| -> serde_json::Value {
            let segment = jwt.expose_secret().split('.').nth(index).expect("segment");
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(segment).expect("b64")).expect("json")
        };
        assert_eq!(
            part(&first, 0),
            serde_json::json!({"alg": "ES256", "typ": "JWT", "kid": "k1"})
        );
        let claims = part(&first, 1);
        assert_eq!(claims["iss"], "client-1");
        assert_eq!(claims["sub"], "client-1");
        assert_eq!(claims["aud"], "https://idp/");
        assert_eq!(
            claims["exp"].as_u64().expect("exp") - claims["iat"].as_u64().expect("iat"),
            ASSERTION_LIFETIME.as_secs()
        );
        assert!(!format!("{assertion:?}").contains(first.expose_secret()));
    }

    #[test]
    fn an_algorithm_that_does_not_fit_the_key_is_a_config_error() {
        let key = SigningKey::generate_p256().expect("key");
        let error = ClientAssertion::new("c", "a", key, Some(SigningAlgorithm::PS256), None)
            .expect_err("PS256 with an EC key");
        assert_eq!(
            error.to_string(),
            "client_assertion_alg: PS256 does not fit the EC key of client_assertion_key; use ES256"
        );
    }
}
