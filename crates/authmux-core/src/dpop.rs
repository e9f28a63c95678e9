//! DPoP (RFC 9449) without cryptography: the [`DpopProver`] hook that a JOSE
//! implementation fills in (`authmux-dpop`), the per-origin nonce memory, and
//! [`Dpop`], which ties them together for token requests and API calls.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use url::Url;

use crate::error::{Error, ErrorKind};
use crate::token::{Token, TokenType};

/// The `DPoP` request header.
pub const DPOP: HeaderName = HeaderName::from_static("dpop");

/// The `DPoP-Nonce` response header.
pub const DPOP_NONCE: HeaderName = HeaderName::from_static("dpop-nonce");

/// Makes DPoP proofs: compact JWS values for the `DPoP` request header.
///
/// A provider that is given a prover sends a fresh proof with every token
/// request; a DPoP-bound token is then presented with a fresh proof for
/// every API call.
pub trait DpopProver: Send + Sync + 'static {
    /// A new proof for one `method` request to `url` (its query and
    /// fragment are not part of the proof), with the server's `nonce` if it
    /// gave one, and the hash of `access_token` when presenting a token.
    fn proof(
        &self,
        method: &str,
        url: &Url,
        nonce: Option<&str>,
        access_token: Option<&str>,
    ) -> Result<HeaderValue, Error>;

    /// The RFC 7638 thumbprint of the public key. It is part of the token
    /// identity, so DPoP and Bearer tokens are cached apart.
    fn thumbprint(&self) -> &str;
}

/// The latest `DPoP-Nonce` of each server origin (scheme, host and port).
#[derive(Debug, Default)]
pub struct DpopNonces {
    by_origin: Mutex<HashMap<String, String>>,
}

impl DpopNonces {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, String>> {
        self.by_origin
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The latest nonce `url`'s origin gave, if any.
    pub fn get(&self, url: &Url) -> Option<String> {
        self.lock()
            .get(&url.origin().ascii_serialization())
            .cloned()
    }

    /// Remembers the `DPoP-Nonce` of a response from `url`, if it has one.
    /// Returns whether it did.
    pub fn remember(&self, url: &Url, headers: &HeaderMap) -> bool {
        let Some(nonce) = headers
            .get(DPOP_NONCE)
            .and_then(|value| value.to_str().ok())
            .map(str::trim)
            .filter(|nonce| !nonce.is_empty())
        else {
            return false;
        };
        self.lock()
            .insert(url.origin().ascii_serialization(), nonce.to_owned());
        true
    }
}

/// A DPoP prover with its nonce memory: what a DPoP-bound client carries.
/// Cloning is cheap and shares the nonces.
#[derive(Clone)]
pub struct Dpop {
    prover: Arc<dyn DpopProver>,
    nonces: Arc<DpopNonces>,
    accept_bearer: bool,
    key_shared: bool,
}

impl fmt::Debug for Dpop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Dpop")
            .field("thumbprint", &self.prover.thumbprint())
            .field("accept_bearer", &self.accept_bearer)
            .field("key_shared", &self.key_shared)
            .finish()
    }
}

impl Dpop {
    /// DPoP with `prover`; a server that answers with a Bearer token is an
    /// error unless [`accept_bearer_downgrade`](Self::accept_bearer_downgrade).
    pub fn new(prover: Arc<dyn DpopProver>) -> Self {
        Self {
            prover,
            nonces: Arc::new(DpopNonces::default()),
            accept_bearer: false,
            key_shared: false,
        }
    }

    /// Says that every process that shares tokens has this key (it was
    /// read from a key file, say), so tokens bound to it may be shared
    /// through a [token store](crate::store). Off by default: a key
    /// generated in one process makes tokens that are useless elsewhere.
    pub fn key_shared(mut self, shared: bool) -> Self {
        self.key_shared = shared;
        self
    }

    /// Whether every process has this key; see [`key_shared`](Self::key_shared).
    pub fn is_key_shared(&self) -> bool {
        self.key_shared
    }

    /// Accepts a Bearer token from a server that ignored the DPoP proof.
    pub fn accept_bearer_downgrade(mut self, accept: bool) -> Self {
        self.accept_bearer = accept;
        self
    }

    /// The public key's RFC 7638 thumbprint.
    pub fn thumbprint(&self) -> &str {
        self.prover.thumbprint()
    }

    /// The nonce memory.
    pub fn nonces(&self) -> &DpopNonces {
        &self.nonces
    }

    /// A fresh proof for `method` `url`, with the origin's latest nonce and,
    /// when presenting a token, its hash.
    pub fn proof(
        &self,
        method: &str,
        url: &Url,
        access_token: Option<&str>,
    ) -> Result<HeaderValue, Error> {
        let nonce = self.nonces.get(url);
        self.prover
            .proof(method, url, nonce.as_deref(), access_token)
    }

    /// Checks that a token answered to a DPoP request is DPoP-bound, and
    /// binds it to this prover so that [`Token::dpop_proof`] works.
    pub fn bind(&self, token: Token) -> Result<Token, Error> {
        match token.token_type() {
            TokenType::DPoP => Ok(token.with_dpop(self.clone())),
            TokenType::Bearer if self.accept_bearer => {
                tracing::warn!("DPoP was requested but the server issued a Bearer token; accepted");
                Ok(token)
            }
            other => Err(Error::new(
                ErrorKind::InvalidResponse,
                format!(
                    "DPoP was requested but the server issued a {other} token; \
                     set accept_bearer_downgrade = true to allow it"
                ),
            )),
        }
    }
}

/// Whether a resource server's response is RFC 9449's nonce challenge:
/// HTTP 401 with `WWW-Authenticate: DPoP error="use_dpop_nonce"` (§9).
/// Remember the response's nonce with [`DpopNonces::remember`], then retry
/// the request exactly once with a new proof.
pub fn is_resource_nonce_challenge(status: u16, headers: &HeaderMap) -> bool {
    status == 401 && crate::wire::www_authenticate_error(headers, Some("DPoP"), "use_dpop_nonce")
}

/// Whether a token endpoint response is RFC 9449's nonce challenge: HTTP 400
/// with `"error":"use_dpop_nonce"`.
pub(crate) fn is_nonce_challenge(status: u16, body: &[u8]) -> bool {
    #[derive(serde::Deserialize)]
    struct ErrorBody {
        error: Option<String>,
    }
    status == 400
        && serde_json::from_slice::<ErrorBody>(body)
            .ok()
            .and_then(|body| body.error)
            .is_some_and(|error| error == "use_dpop_nonce")
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Echo;

    impl DpopProver for Echo {
        fn proof(
            &self,
            method: &str,
            _url: &Url,
            nonce: Option<&str>,
            access_token: Option<&str>,
        ) -> Result<HeaderValue, Error> {
            HeaderValue::try_from(format!(
                "{method}|{}|{}",
                nonce.unwrap_or("-"),
                access_token.map_or("-", |_| "ath")
            ))
            .map_err(|_| Error::config("bad"))
        }

        fn thumbprint(&self) -> &str {
            "jkt"
        }
    }

    #[test]
    fn nonces_are_kept_per_origin() {
        let dpop = Dpop::new(Arc::new(Echo));
        let token_url = Url::parse("https://idp.example.com/oauth/token").expect("url");
        let same_origin = Url::parse("https://idp.example.com:443/other?x=1").expect("url");
        let api = Url::parse("https://api.example.com/things").expect("url");
        assert_eq!(
            dpop.proof("POST", &token_url, None).expect("proof"),
            "POST|-|-"
        );
        let mut headers = HeaderMap::new();
        headers.insert(DPOP_NONCE, HeaderValue::from_static("n-1"));
        assert!(dpop.nonces().remember(&token_url, &headers));
        assert_eq!(
            dpop.proof("POST", &same_origin, None).expect("proof"),
            "POST|n-1|-"
        );
        assert_eq!(
            dpop.proof("GET", &api, Some("t")).expect("proof"),
            "GET|-|ath"
        );
        assert!(!dpop.nonces().remember(&api, &HeaderMap::new()));
    }

    #[test]
    fn resource_server_challenges_are_read_from_www_authenticate() {
        let challenge = |status: u16, value: &'static str| {
            let mut headers = HeaderMap::new();
            headers.insert(
                reqwest::header::WWW_AUTHENTICATE,
                HeaderValue::from_static(value),
            );
            is_resource_nonce_challenge(status, &headers)
        };
        assert!(challenge(
            401,
            r#"DPoP error="use_dpop_nonce", error_description="fresh nonce""#
        ));
        assert!(challenge(
            401,
            r#"dpop algs="ES256", error = "use_dpop_nonce""#
        ));
        assert!(challenge(
            401,
            r#"Bearer realm="x", DPoP algs="ES256", error="use_dpop_nonce""#
        ));
        assert!(challenge(401, "DPoP error=use_dpop_nonce"));
        assert!(!challenge(400, r#"DPoP error="use_dpop_nonce""#));
        assert!(!challenge(401, r#"Bearer error="invalid_token""#));
        assert!(!challenge(401, r#"DPoP error="invalid_token""#));
        assert!(!is_resource_nonce_challenge(401, &HeaderMap::new()));
    }

    #[test]
    fn only_the_documented_challenge_counts() {
        assert!(is_nonce_challenge(400, br#"{"error":"use_dpop_nonce"}"#));
        assert!(!is_nonce_challenge(401, br#"{"error":"use_dpop_nonce"}"#));
        assert!(!is_nonce_challenge(
            400,
            br#"{"error":"invalid_dpop_proof"}"#
        ));
        assert!(!is_nonce_challenge(400, b"<html>"));
    }

    #[tokio::test(start_paused = true)]
    async fn bearer_downgrades_are_refused_unless_accepted() {
        let bearer = || {
            Token::builder("t")
                .lifetime(std::time::Duration::from_secs(60))
                .build()
                .expect("token")
        };
        let dpop = Dpop::new(Arc::new(Echo));
        let error = dpop.bind(bearer()).expect_err("downgrade");
        assert!(
            error.to_string().contains("accept_bearer_downgrade"),
            "{error}"
        );
        let accepted = dpop.clone().accept_bearer_downgrade(true).bind(bearer());
        assert!(
            accepted
                .expect("accepted")
                .dpop_proof("GET", &Url::parse("https://a/").expect("url"))
                .is_err()
        );
        let bound = Token::builder("t")
            .token_type(TokenType::DPoP)
            .lifetime(std::time::Duration::from_secs(60))
            .build()
            .expect("token");
        let bound = dpop.bind(bound).expect("bound");
        let url = Url::parse("https://api.example.com/x").expect("url");
        assert_eq!(bound.dpop_proof("GET", &url).expect("proof"), "GET|-|ath");
        assert_eq!(bound.authorization(), "DPoP t");
    }
}
