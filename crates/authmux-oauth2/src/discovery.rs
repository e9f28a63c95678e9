//! Finding the token endpoint from an issuer: OAuth 2.0 Authorization
//! Server Metadata (RFC 8414) and OpenID Connect Discovery 1.0.
//!
//! The metadata is read once, on the first token fetch (or by
//! [`TokenSource::discover`], which `authmux check` calls), and kept for
//! the life of the source. A failed discovery is tried again on a later
//! fetch, but not before a backoff that doubles from 1 s up to 5 min.

use std::sync::OnceLock;
use std::time::Duration;

use authmux_core::wire::{ClientAuth, HttpClient, RequestSource, validate_url};
use authmux_core::{
    ClientAssertion, Credential, Dpop, Error, ErrorKind, SigningAlgorithm, TokenIdentity,
    TokenSource as _,
};
use serde::Deserialize;
use tokio::time::Instant;
use url::Url;

use crate::OAuth2Builder;

/// RFC 8414 §3's well-known suffix, inserted between host and path.
const OAUTH_WELL_KNOWN: &str = "/.well-known/oauth-authorization-server";
/// OpenID Connect Discovery's well-known suffix, appended to the issuer.
const OIDC_WELL_KNOWN: &str = "/.well-known/openid-configuration";
/// The one algorithm authmux signs DPoP proofs with.
const DPOP_ALG: &str = "ES256";
/// The wait after the first failed discovery; it doubles with each failure.
const BACKOFF_FIRST: Duration = Duration::from_secs(1);
/// The longest wait between two discoveries.
const BACKOFF_MAX: Duration = Duration::from_secs(5 * 60);

/// The parts of an authorization server's metadata (RFC 8414 §2) that a
/// client credentials client needs. Other members are ignored.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServerMetadata {
    /// The issuer identifier; equal to the configured issuer, or the
    /// metadata is refused. The `aud` of a client assertion.
    pub issuer: String,
    /// The token endpoint.
    #[serde(default)]
    pub token_endpoint: Option<String>,
    /// The client authentication methods the token endpoint accepts;
    /// absent means `client_secret_basic` alone (RFC 8414 §2).
    #[serde(default)]
    pub token_endpoint_auth_methods_supported: Option<Vec<String>>,
    /// The algorithms the token endpoint accepts for `private_key_jwt`
    /// assertions (RFC 8414 §2), in the server's order; absent means the
    /// server does not say.
    #[serde(default)]
    pub token_endpoint_auth_signing_alg_values_supported: Option<Vec<String>>,
    /// The DPoP proof algorithms the server accepts (RFC 9449 §5.1);
    /// absent means the server does not announce DPoP.
    #[serde(default)]
    pub dpop_signing_alg_values_supported: Option<Vec<String>>,
}

impl ServerMetadata {
    /// The client authentication methods the token endpoint accepts, with
    /// RFC 8414's default applied.
    pub fn auth_methods(&self) -> Vec<&str> {
        match &self.token_endpoint_auth_methods_supported {
            Some(methods) => methods.iter().map(String::as_str).collect(),
            None => vec![ClientAuth::Basic.metadata_name()],
        }
    }
}

/// The metadata URLs to try for `issuer`, in order: RFC 8414's (the
/// well-known segment between host and path), then OpenID Connect's
/// (appended to the path).
pub(crate) fn metadata_urls(issuer: &Url) -> [Url; 2] {
    let path = issuer.path().trim_end_matches('/');
    let mut oauth = issuer.clone();
    oauth.set_path(&format!("{OAUTH_WELL_KNOWN}{path}"));
    let mut oidc = issuer.clone();
    oidc.set_path(&format!("{path}{OIDC_WELL_KNOWN}"));
    [oauth, oidc]
}

/// Checks a configured issuer: an https URL (loopback or consent aside)
/// without query or fragment, as RFC 8414 §2 requires.
fn checked_issuer(issuer: &str, allow_insecure_http: bool) -> Result<Url, Error> {
    let url = validate_url(issuer, allow_insecure_http)
        .map_err(|error| Error::config(format!("issuer: {}", error.message())))?;
    if url.query().is_some() {
        return Err(Error::config(format!(
            "issuer: {issuer:?} must not have a ?query"
        )));
    }
    Ok(url)
}

/// What a successful discovery found.
#[derive(Debug)]
struct Found {
    metadata: ServerMetadata,
    source: RequestSource,
}

/// The failures so far, and when the next discovery may start.
#[derive(Debug, Default)]
struct Backoff {
    failures: u32,
    retry_at: Option<Instant>,
    last_error: Option<Error>,
}

impl Backoff {
    /// The last error while the backoff lasts, marked with what is left of it.
    fn waiting(&self, now: Instant) -> Option<Error> {
        let retry_at = self.retry_at?;
        let error = self.last_error.as_ref()?;
        (now < retry_at).then(|| error.clone().cooling_down(retry_at - now))
    }

    fn failed(&mut self, now: Instant, error: Error) {
        self.failures = self.failures.saturating_add(1);
        let doublings = self.failures.saturating_sub(1).min(16);
        let wait = BACKOFF_FIRST
            .saturating_mul(1 << doublings)
            .min(BACKOFF_MAX);
        self.retry_at = Some(now + wait);
        self.last_error = Some(error);
    }
}

/// A client of a token endpoint found from its issuer: everything is
/// checked when it is built, except what the metadata says.
#[derive(Debug)]
pub(crate) struct DiscoveringSource {
    /// The issuer as configured: the metadata's must equal it exactly.
    issuer: String,
    issuer_url: Url,
    identity: TokenIdentity,
    dpop: Option<Dpop>,
    http: HttpClient,
    timeout: Option<Duration>,
    allow_insecure_http: bool,
    auth: ClientAuth,
    /// The assertions of a `private_key_jwt` client, read when built: the
    /// metadata may narrow their algorithm.
    assertion: Option<ClientAssertion>,
    /// Builds the token request once the endpoint is known.
    template: OAuth2Builder,
    found: OnceLock<Found>,
    /// Held across one discovery, so that two never run at once (a fetch
    /// and `authmux check`, say); token fetches wait on it only until the
    /// metadata is found.
    backoff: tokio::sync::Mutex<Backoff>,
}

impl DiscoveringSource {
    /// Checks every setting now (the secret is read, the scopes checked,
    /// a DPoP key made), with the issuer standing in for the token
    /// endpoint. No network I/O.
    pub(crate) fn build(mut builder: OAuth2Builder, issuer: String) -> Result<Self, Error> {
        let issuer = issuer.trim().to_owned();
        let allow_insecure_http = builder.endpoint.allow_insecure_http;
        let issuer_url = checked_issuer(&issuer, allow_insecure_http)?;
        let http = builder.endpoint.http_client()?;
        builder.endpoint.http = Some(http.clone());
        builder.config.issuer = None;
        let mut probe = OAuth2Builder {
            config: builder.config.clone(),
            endpoint: builder.endpoint.clone(),
        };
        probe.config.token_url = issuer.clone();
        let probe = probe.build_fixed()?;
        // The token request made later must use the very same DPoP key.
        let dpop = probe.dpop().cloned();
        builder.endpoint.dpop = dpop.clone();
        let identity = probe.identity().with("issuer", &issuer);
        let assertion = match builder.config.client_auth {
            ClientAuth::PrivateKeyJwt => {
                match builder.config.client_credentials().credential(&issuer)? {
                    Credential::Assertion(assertion) => Some(assertion),
                    Credential::Secret(_) => None,
                }
            }
            _ => None,
        };
        Ok(Self {
            issuer,
            issuer_url,
            identity,
            dpop,
            timeout: builder.endpoint.timeout,
            auth: builder.config.client_auth,
            assertion,
            http,
            allow_insecure_http,
            template: builder,
            found: OnceLock::new(),
            backoff: tokio::sync::Mutex::new(Backoff::default()),
        })
    }

    pub(crate) fn issuer(&self) -> &str {
        &self.issuer
    }

    pub(crate) fn identity(&self) -> &TokenIdentity {
        &self.identity
    }

    pub(crate) fn dpop(&self) -> Option<&Dpop> {
        self.dpop.as_ref()
    }

    /// The metadata, once discovered.
    pub(crate) fn metadata(&self) -> Option<&ServerMetadata> {
        self.found.get().map(|found| &found.metadata)
    }

    /// The token request's source, once discovered.
    pub(crate) fn discovered(&self) -> Option<&RequestSource> {
        self.found.get().map(|found| &found.source)
    }

    /// The token request's source: discovered already, or now, unless a
    /// recent failure's backoff still runs.
    pub(crate) async fn source(&self) -> Result<&RequestSource, Error> {
        if let Some(found) = self.found.get() {
            return Ok(&found.source);
        }
        let mut backoff = self.backoff.lock().await;
        if let Some(found) = self.found.get() {
            return Ok(&found.source);
        }
        if let Some(error) = backoff.waiting(Instant::now()) {
            return Err(error);
        }
        match self.discover().await {
            Ok(found) => {
                *backoff = Backoff::default();
                Ok(&self.found.get_or_init(|| found).source)
            }
            Err(error) => {
                tracing::warn!(issuer = %self.issuer, error = %error, "discovery failed");
                backoff.failed(Instant::now(), error.clone());
                Err(error)
            }
        }
    }

    async fn discover(&self) -> Result<Found, Error> {
        let metadata = self.fetch_metadata().await?;
        let token_url = self.check(&metadata)?;
        let mut builder = OAuth2Builder {
            config: self.template.config.clone(),
            endpoint: self.template.endpoint.clone(),
        };
        builder.config.token_url = token_url.into();
        if let Some(assertion) = &self.assertion {
            builder.config.client_assertion_alg =
                Some(self.assertion_algorithm(assertion, &metadata)?);
        }
        // A private_key_jwt assertion names the issuer as its audience once
        // it is known (RFC 7523 §3 allows it, and servers that discover
        // expect it), unless one was configured.
        if builder.config.client_auth == ClientAuth::PrivateKeyJwt
            && builder.config.client_assertion_audience.is_none()
        {
            builder.config.client_assertion_audience = Some(self.issuer.clone());
        }
        let source = builder.build_fixed()?;
        tracing::debug!(issuer = %self.issuer, token_url = source.token_url(), "token endpoint discovered");
        Ok(Found { metadata, source })
    }

    /// Reads the first metadata document there is: a 404 moves on to the
    /// next URL, any other failure stops.
    async fn fetch_metadata(&self) -> Result<ServerMetadata, Error> {
        let urls = metadata_urls(&self.issuer_url);
        for url in &urls {
            let response = self
                .http
                .get_json(url, self.timeout)
                .await
                .map_err(|error| {
                    Error::new(
                        error.kind(),
                        format!("issuer {}: {}", self.issuer, error.message()),
                    )
                    .with_endpoint(url)
                    .with_source(error)
                })?;
            let status = response.status();
            if status == 404 {
                continue;
            }
            if !(200..300).contains(&status) {
                return Err(Error::new(
                    ErrorKind::from_status(status),
                    format!(
                        "issuer {}: the metadata at {url} is unavailable",
                        self.issuer
                    ),
                )
                .with_status(status));
            }
            return serde_json::from_slice(response.body()).map_err(|error| {
                Error::new(
                    ErrorKind::InvalidResponse,
                    format!(
                        "issuer {}: the document at {url} is not authorization server metadata: {error}",
                        self.issuer
                    ),
                )
                .with_status(status)
            });
        }
        let [oauth, oidc] = &urls;
        Err(Error::config(format!(
            "issuer {}: no metadata at {oauth} nor at {oidc} (HTTP 404); check the issuer",
            self.issuer
        )))
    }

    /// The algorithm of the assertions: the one chosen, or the first the
    /// server lists that the key can sign (RFC 8414 §2's
    /// `token_endpoint_auth_signing_alg_values_supported`; a FAPI 2.0
    /// server takes PS256 and ES256 only).
    fn assertion_algorithm(
        &self,
        assertion: &ClientAssertion,
        metadata: &ServerMetadata,
    ) -> Result<SigningAlgorithm, Error> {
        let Some(accepted) = &metadata.token_endpoint_auth_signing_alg_values_supported else {
            return Ok(assertion.algorithm());
        };
        if let Some(algorithm) = assertion.algorithm_for(accepted) {
            return Ok(algorithm);
        }
        let issuer = &self.issuer;
        let listed = accepted.join(", ");
        Err(Error::config(if assertion.is_algorithm_set() {
            format!(
                "issuer {issuer}: the server does not accept assertions signed with {} \
                 (token_endpoint_auth_signing_alg_values_supported: {listed}); change \
                 client_assertion_alg or the \"alg\" of the key's JWK",
                assertion.algorithm()
            )
        } else {
            let signs: Vec<&str> = assertion
                .key_algorithms()
                .iter()
                .map(|algorithm| algorithm.as_str())
                .collect();
            format!(
                "issuer {issuer}: the {} key of client_assertion_key signs {}, which the server \
                 does not accept (token_endpoint_auth_signing_alg_values_supported: {listed}); \
                 use a key of another type",
                assertion.key_type(),
                signs.join(" or ")
            )
        }))
    }

    /// Checks the metadata against the configuration; returns the token
    /// endpoint.
    fn check<'m>(&self, metadata: &'m ServerMetadata) -> Result<&'m str, Error> {
        let issuer = &self.issuer;
        if metadata.issuer != *issuer {
            return Err(Error::config(format!(
                "issuer {issuer}: the metadata names the issuer {:?}; the configured issuer must match it exactly",
                metadata.issuer
            )));
        }
        let Some(token_url) = metadata.token_endpoint.as_deref() else {
            return Err(Error::config(format!(
                "issuer {issuer}: the metadata has no token_endpoint"
            )));
        };
        validate_url(token_url, self.allow_insecure_http).map_err(|error| {
            Error::config(format!(
                "issuer {issuer}: token_endpoint: {}",
                error.message()
            ))
        })?;
        let methods = metadata.auth_methods();
        let wanted = self.auth.metadata_name();
        if !methods.contains(&wanted) {
            return Err(Error::config(format!(
                "issuer {issuer}: the token endpoint does not accept {wanted} (token_endpoint_auth_methods_supported: {}); change client_auth",
                methods.join(", ")
            )));
        }
        if self.dpop.is_some() {
            match &metadata.dpop_signing_alg_values_supported {
                Some(algs) if algs.iter().any(|alg| alg == DPOP_ALG) => {}
                Some(algs) => {
                    return Err(Error::config(format!(
                        "issuer {issuer}: DPoP proofs are signed with {DPOP_ALG}, which the server does not accept (dpop_signing_alg_values_supported: {}); turn dpop off",
                        algs.join(", ")
                    )));
                }
                None => {
                    return Err(Error::config(format!(
                        "issuer {issuer}: the server does not announce DPoP (no dpop_signing_alg_values_supported); turn dpop off"
                    )));
                }
            }
        }
        Ok(token_url)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn urls(issuer: &str) -> [String; 2] {
        metadata_urls(&Url::parse(issuer).expect("a URL")).map(String::from)
    }

    #[test]
    fn well_known_urls_follow_rfc_8414_and_oidc_path_rules() {
        assert_eq!(
            urls("https://h.example"),
            [
                "https://h.example/.well-known/oauth-authorization-server",
                "https://h.example/.well-known/openid-configuration",
            ]
        );
        assert_eq!(
            urls("https://h.example/tenant"),
            [
                "https://h.example/.well-known/oauth-authorization-server/tenant",
                "https://h.example/tenant/.well-known/openid-configuration",
            ]
        );
        assert_eq!(
            urls("https://h.example:8443/a/b/"),
            [
                "https://h.example:8443/.well-known/oauth-authorization-server/a/b",
                "https://h.example:8443/a/b/.well-known/openid-configuration",
            ]
        );
    }

    #[test]
    fn issuers_are_https_without_query() {
        assert!(checked_issuer("https://idp.example", false).is_ok());
        assert!(checked_issuer("http://127.0.0.1:9", false).is_ok());
        let error = checked_issuer("http://idp.example", false).expect_err("plain http");
        assert!(error.message().starts_with("issuer: "), "{error}");
        assert!(error.message().contains("allow_insecure_http"), "{error}");
        assert!(checked_issuer("http://idp.example", true).is_ok());
        let error = checked_issuer("https://idp.example?x=1", false).expect_err("query");
        assert!(error.message().starts_with("issuer: "), "{error}");
    }

    #[tokio::test(start_paused = true)]
    async fn backoff_doubles_from_one_second_to_five_minutes() {
        let mut backoff = Backoff::default();
        let start = Instant::now();
        assert!(backoff.waiting(start).is_none());
        let mut waits = Vec::new();
        for _ in 0..12 {
            let now = Instant::now();
            backoff.failed(now, Error::config("down"));
            let retry_at = backoff.retry_at.expect("a retry time");
            waits.push((retry_at - now).as_secs());
            let left = backoff
                .waiting(now)
                .and_then(|error| error.cooldown_remaining());
            assert_eq!(left, Some(retry_at - now));
            tokio::time::advance(retry_at - now - Duration::from_millis(1)).await;
            assert!(backoff.waiting(Instant::now()).is_some());
            tokio::time::advance(Duration::from_millis(1)).await;
            assert!(backoff.waiting(Instant::now()).is_none());
        }
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300]);
    }
}
