//! Finding the token endpoint from an issuer: OAuth 2.0 Authorization
//! Server Metadata (RFC 8414) and OpenID Connect Discovery 1.0.
//!
//! The metadata is read once, on the first token fetch (or by
//! [`TokenSource::discover`], which `authmux check` and the cache call),
//! and kept for the life of the source. A failed discovery is tried again
//! on the next fetch: retries and cool-downs are the cache's, as for a
//! token request, so a transient metadata failure is retried within the
//! same fetch.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use authmux_core::assertion::JWT_BEARER_ASSERTION_TYPE;
use authmux_core::grant::GrantType;
use authmux_core::wire::{ClientAuth, HttpClient, RequestSource, validate_url};
use authmux_core::{
    ClientAssertion, Credential, Dpop, Error, ErrorKind, SigningAlgorithm, TokenIdentity,
    TokenSource as _,
};
use serde::Deserialize;
use url::Url;

use crate::OAuth2Builder;

/// RFC 8414 §3's well-known suffix, inserted between host and path.
const OAUTH_WELL_KNOWN: &str = "/.well-known/oauth-authorization-server";
/// OpenID Connect Discovery's well-known suffix, appended to the issuer.
const OIDC_WELL_KNOWN: &str = "/.well-known/openid-configuration";
/// The one algorithm authmux signs DPoP proofs with.
const DPOP_ALG: &str = "ES256";

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
    /// The grant types the server takes; absent means the server does
    /// not say (RFC 8414's default lists no machine grant, so absence is
    /// not a refusal).
    #[serde(default)]
    pub grant_types_supported: Option<Vec<String>>,
    /// The algorithms the token endpoint accepts for `private_key_jwt`
    /// assertions (RFC 8414 §2), in the server's order; absent means the
    /// server does not say.
    #[serde(default)]
    pub token_endpoint_auth_signing_alg_values_supported: Option<Vec<String>>,
    /// The DPoP proof algorithms the server accepts (RFC 9449 §5.1);
    /// absent means the server does not announce DPoP.
    #[serde(default)]
    pub dpop_signing_alg_values_supported: Option<Vec<String>>,
    /// The endpoints that a client presenting a TLS client certificate
    /// uses instead of the usual ones (RFC 8705 §5); absent means the
    /// usual ones serve every client.
    #[serde(default)]
    pub mtls_endpoint_aliases: Option<MtlsEndpointAliases>,
    /// Whether the server binds access tokens to the TLS client
    /// certificate they were requested with (RFC 8705 §3.3); absent (or
    /// `null`) means it does not.
    #[serde(default, deserialize_with = "null_is_false")]
    pub tls_client_certificate_bound_access_tokens: bool,
}

/// The endpoints of an authorization server for clients that present a
/// TLS client certificate (RFC 8705 §5's `mtls_endpoint_aliases`), which
/// such a client uses instead of the usual ones. Only the token endpoint
/// matters to a client credentials client; other members are ignored.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[non_exhaustive]
pub struct MtlsEndpointAliases {
    /// The token endpoint for clients that present a certificate; absent
    /// means they use the metadata's `token_endpoint`.
    #[serde(default)]
    pub token_endpoint: Option<String>,
}

/// A boolean member of the metadata, `null` read as absent: `false`.
fn null_is_false<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<bool, D::Error> {
    Option::<bool>::deserialize(deserializer).map(Option::unwrap_or_default)
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

/// Whether a metadata URL's error answer means "no metadata here", so
/// that the next URL is tried: 404, and the other 4xx that servers give
/// for a path they do not serve (400, 401, 403, …), but not 408 or 429.
fn not_here(status: u16) -> bool {
    (400..500).contains(&status) && !matches!(status, 408 | 429)
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
    /// and `authmux check`, say), with the last failure's error; token
    /// fetches wait on it only until the metadata is found.
    discovering: tokio::sync::Mutex<Option<Error>>,
    /// Failed discoveries so far: a caller that waited while one failed
    /// shares its error rather than sending the same request again.
    failures: AtomicU64,
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
        let mut probe = builder.clone();
        probe.config.token_url = issuer.clone();
        let probe = probe.build_fixed()?;
        // The token request made later must use the very same DPoP key.
        let dpop = probe.dpop().cloned();
        builder.endpoint.dpop = dpop.clone();
        let identity = probe.identity().with("issuer", &issuer);
        let assertion = match builder.config.client_auth() {
            ClientAuth::PrivateKeyJwt => {
                match builder.config.client_credentials().credential(&issuer)? {
                    Credential::Assertion(assertion) => Some(assertion),
                    _ => None,
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
            auth: builder.config.client_auth(),
            assertion,
            http,
            allow_insecure_http,
            template: builder,
            found: OnceLock::new(),
            discovering: tokio::sync::Mutex::new(None),
            failures: AtomicU64::new(0),
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

    pub(crate) fn http(&self) -> &HttpClient {
        &self.http
    }

    /// The metadata, once discovered.
    pub(crate) fn metadata(&self) -> Option<&ServerMetadata> {
        self.found.get().map(|found| &found.metadata)
    }

    /// The token request's source, once discovered.
    pub(crate) fn discovered(&self) -> Option<&RequestSource> {
        self.found.get().map(|found| &found.source)
    }

    /// Whether the token endpoint is still to be found.
    pub(crate) fn pending(&self) -> bool {
        self.found.get().is_none()
    }

    /// The token request's source: discovered already, or now. A caller
    /// that waited while another's discovery failed gets that error.
    pub(crate) async fn source(&self) -> Result<&RequestSource, Error> {
        if let Some(found) = self.found.get() {
            return Ok(&found.source);
        }
        let failures_seen = self.failures.load(Ordering::Acquire);
        let mut last_error = self.discovering.lock().await;
        if let Some(found) = self.found.get() {
            return Ok(&found.source);
        }
        if self.failures.load(Ordering::Acquire) != failures_seen
            && let Some(error) = last_error.as_ref()
        {
            return Err(error.clone());
        }
        match self.discover().await {
            Ok(found) => {
                *last_error = None;
                Ok(&self.found.get_or_init(|| found).source)
            }
            Err(error) => {
                tracing::warn!(issuer = %self.issuer, error = %error, "discovery failed");
                *last_error = Some(error.clone());
                self.failures.fetch_add(1, Ordering::AcqRel);
                Err(error)
            }
        }
    }

    async fn discover(&self) -> Result<Found, Error> {
        let metadata = self.fetch_metadata().await?;
        let token_url = self.check(&metadata)?;
        let mut builder = self.template.clone();
        builder.config.token_url = token_url.into();
        builder.assertion_audience = Some(self.issuer.clone());
        if let Some(assertion) = &self.assertion {
            builder.config.auth.client_assertion_alg =
                Some(self.assertion_algorithm(assertion, &metadata)?);
        }
        // A private_key_jwt assertion names the issuer as its audience once
        // it is known (RFC 7523 §3 allows it, and servers that discover
        // expect it), unless one was configured.
        if builder.config.client_auth() == ClientAuth::PrivateKeyJwt
            && builder.config.auth.client_assertion_audience.is_none()
        {
            builder.config.auth.client_assertion_audience = Some(self.issuer.clone());
        }
        let source = builder.build_fixed()?;
        tracing::debug!(issuer = %self.issuer, token_url = source.token_url(), "token endpoint discovered");
        Ok(Found { metadata, source })
    }

    /// Reads the first metadata document there is. A 4xx answer other
    /// than 408 and 429 means "not here" and moves on to the next URL:
    /// servers answer 400, 401 or 403 as well as 404 for a path they do not
    /// serve. Any other failure stops, as a [`Discovery`](ErrorKind::Discovery)
    /// error (transient for 5xx, 408 and 429) or, unreached, a transport
    /// one. No URL with metadata is a config error.
    async fn fetch_metadata(&self) -> Result<ServerMetadata, Error> {
        let issuer = &self.issuer;
        let urls = metadata_urls(&self.issuer_url);
        let mut answers = Vec::with_capacity(urls.len());
        for url in &urls {
            let response = self
                .http
                .get_json(url, self.timeout)
                .await
                .map_err(|error| {
                    Error::new(
                        error.kind(),
                        format!("issuer {issuer}: reading the metadata: {}", error.message()),
                    )
                    .with_endpoint(url)
                    .with_source(error)
                })?;
            let status = response.status();
            if not_here(status) {
                answers.push(format!("{url} (HTTP {status})"));
                continue;
            }
            if !(200..300).contains(&status) {
                return Err(Error::new(
                    ErrorKind::Discovery,
                    format!("issuer {issuer}: the metadata at {url} is unavailable"),
                )
                .with_status(status));
            }
            return serde_json::from_slice(response.body()).map_err(|error| {
                Error::new(
                    ErrorKind::Discovery,
                    format!(
                        "issuer {issuer}: the document at {url} is not authorization server metadata: {error}"
                    ),
                )
                .with_status(status)
            });
        }
        Err(Error::config(format!(
            "issuer {issuer}: no metadata at {}; check the issuer",
            answers.join(" nor at ")
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
    /// endpoint: the mTLS alias of it for a client that presents a TLS
    /// client certificate, when the server has one.
    fn check<'m>(&self, metadata: &'m ServerMetadata) -> Result<&'m str, Error> {
        let issuer = &self.issuer;
        if metadata.issuer != *issuer {
            return Err(Error::config(format!(
                "issuer {issuer}: the metadata names the issuer {:?}; the configured issuer must match it exactly",
                metadata.issuer
            )));
        }
        // A client that presents a certificate, to authenticate or only to
        // have its tokens bound to it, goes to the server's mTLS alias of
        // the token endpoint when there is one (RFC 8705 §5).
        let certificate = self.http.has_client_certificate();
        let alias = metadata
            .mtls_endpoint_aliases
            .as_ref()
            .and_then(|aliases| aliases.token_endpoint.as_deref())
            .filter(|_| certificate);
        let (field, token_url) = match (alias, metadata.token_endpoint.as_deref()) {
            (Some(alias), _) => ("mtls_endpoint_aliases.token_endpoint", alias),
            (None, Some(token_url)) => ("token_endpoint", token_url),
            (None, None) => {
                return Err(Error::config(format!(
                    "issuer {issuer}: the metadata has no token_endpoint"
                )));
            }
        };
        validate_url(token_url, self.allow_insecure_http).map_err(|error| {
            Error::config(format!("issuer {issuer}: {field}: {}", error.message()))
        })?;
        let grant = self.template.config.grant.grant();
        if grant != GrantType::ClientCredentials
            && let Some(grants) = &metadata.grant_types_supported
            && !grants.iter().any(|listed| listed == grant.wire_name())
        {
            return Err(Error::config(format!(
                "issuer {issuer}: the server does not take grant_type = {:?} ({}) (grant_types_supported: {}); change grant_type",
                grant.as_str(),
                grant.wire_name(),
                grants.join(", ")
            )));
        }
        let methods = metadata.auth_methods();
        let wanted = self.auth.metadata_name();
        let checked = match self.auth {
            // A client that does not authenticate has nothing to check, and
            // a SPIFFE or other assertion type has no method name of its own.
            ClientAuth::None => false,
            ClientAuth::ClientAssertion => self
                .template
                .config
                .auth
                .client_assertion_type
                .as_deref()
                .is_none_or(|kind| kind.trim() == JWT_BEARER_ASSERTION_TYPE),
            _ => true,
        };
        if checked && !methods.contains(&wanted) {
            return Err(Error::config(format!(
                "issuer {issuer}: the token endpoint does not accept {wanted} (token_endpoint_auth_methods_supported: {}); change client_auth",
                methods.join(", ")
            )));
        }
        // A certificate that does not authenticate the client is there only
        // to bind its tokens (RFC 8705 §3): pointless, and misleading, with
        // a server that does not bind them.
        if certificate
            && !self.auth.uses_certificate()
            && !metadata.tls_client_certificate_bound_access_tokens
        {
            return Err(Error::config(format!(
                "issuer {issuer}: the server does not issue certificate-bound tokens (no \"tls_client_certificate_bound_access_tokens\": true); remove tls_client_certificate, or authenticate with it: client_auth = \"tls_client_auth\" or \"self_signed_tls_client_auth\""
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

    #[test]
    fn a_4xx_but_408_and_429_means_no_metadata_at_that_url() {
        for (status, moves_on) in [
            (400, true),
            (401, true),
            (403, true),
            (404, true),
            (410, true),
            (408, false),
            (429, false),
            (500, false),
            (503, false),
            (200, false),
            (302, false),
        ] {
            assert_eq!(not_here(status), moves_on, "{status}");
        }
    }
}
