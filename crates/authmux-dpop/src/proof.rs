//! DPoP proofs: the claims, their normalisation, and the signed JWS.

use std::time::{SystemTime, UNIX_EPOCH};

use authmux_core::wire::HeaderValue;
use authmux_core::{DpopProver, Error};
use aws_lc_rs::rand::{SecureRandom as _, SystemRandom};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Serialize;
use url::{Position, Url};

use crate::DpopKey;

/// Random bytes in each `jti`: 128 bits, as RFC 9449 §11.1 suggests at least.
const JTI_BYTES: usize = 16;

/// The claims of one proof, serialized in this order.
#[derive(Serialize)]
struct Claims<'a> {
    jti: &'a str,
    htm: &'a str,
    htu: &'a str,
    iat: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    nonce: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ath: Option<&'a str>,
}

impl DpopProver for DpopKey {
    fn proof(
        &self,
        method: &str,
        url: &Url,
        nonce: Option<&str>,
        access_token: Option<&str>,
    ) -> Result<HeaderValue, Error> {
        let htm = http_method(method)?;
        let htu = htu(url)?;
        let jti = new_jti()?;
        let ath = access_token.map(access_token_hash);
        let claims = Claims {
            jti: &jti,
            htm: &htm,
            htu: &htu,
            iat: unix_now(),
            nonce,
            ath: ath.as_deref(),
        };
        let payload = serde_json::to_vec(&claims)
            .map_err(|_| Error::config("dpop: the proof's claims do not serialize"))?;

        let header = self.encoded_header();
        // header '.' payload '.' signature, each base64url (4 characters per
        // 3 bytes, rounded up); the ES256 signature is 64 bytes.
        let mut jws = String::with_capacity(header.len() + payload.len().div_ceil(3) * 4 + 90);
        jws.push_str(header);
        jws.push('.');
        URL_SAFE_NO_PAD.encode_string(&payload, &mut jws);
        let signature = self.sign(jws.as_bytes())?;
        jws.push('.');
        URL_SAFE_NO_PAD.encode_string(signature, &mut jws);
        // Only base64url and dots: always a valid header value.
        HeaderValue::try_from(jws)
            .map_err(|_| Error::config("dpop: the proof is not a valid header value"))
    }

    fn thumbprint(&self) -> &str {
        DpopKey::thumbprint(self)
    }
}

/// The `htu` claim for a request to `url`: its scheme, host, port and path,
/// without the query, the fragment or any user name and password.
///
/// [`Url`] already keeps the scheme and host in lower case and leaves out a
/// default port, so `HTTPS://Server.Example.com:443/token?x=1#f` gives
/// `https://server.example.com/token`.
///
/// # Errors
///
/// A [`Config`](authmux_core::ErrorKind::Config) error unless the scheme is
/// `http` or `https`.
///
/// ```
/// let url = url::Url::parse("HTTPS://user:pw@Server.Example.com:443/token?x=1#f").expect("url");
/// assert_eq!(authmux_dpop::htu(&url)?, "https://server.example.com/token");
/// # Ok::<(), authmux_core::Error>(())
/// ```
pub fn htu(url: &Url) -> Result<String, Error> {
    let scheme = url.scheme();
    if !matches!(scheme, "http" | "https") || !url.has_host() {
        return Err(Error::config(format!(
            "dpop: a proof is for an http or https URL, not {scheme}"
        )));
    }
    // From the host to the end of the path skips the user information, which
    // comes before the host, and the query and fragment, which come after.
    let target = &url[Position::BeforeHost..Position::AfterPath];
    let mut htu = String::with_capacity(scheme.len() + 3 + target.len());
    htu.push_str(scheme);
    htu.push_str("://");
    htu.push_str(target);
    Ok(htu)
}

/// The `ath` claim for presenting `access_token`: the base64url SHA-256 of
/// its ASCII bytes.
///
/// ```
/// // The example of RFC 9449 §7.1.
/// assert_eq!(
///     authmux_dpop::access_token_hash("Kz~8mXK1EalYznwH-LC-1fBAo.4Ljp~zsPE_NeO.gxU"),
///     "fUHyO2r2Z3DZ53EsNrWBb0xWXoaNy59IiKCAqksmQEo",
/// );
/// ```
pub fn access_token_hash(access_token: &str) -> String {
    authmux_core::signing::sha256_b64(access_token.as_bytes())
}

/// `method` in upper case, if it is an HTTP method name (an RFC 9110
/// token).
fn http_method(method: &str) -> Result<String, Error> {
    let is_tchar = |byte: u8| byte.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&byte);
    if method.is_empty() || !method.bytes().all(is_tchar) {
        return Err(Error::config(
            "dpop: the request method must be an HTTP method name such as GET or POST",
        ));
    }
    Ok(method.to_ascii_uppercase())
}

fn new_jti() -> Result<String, Error> {
    let mut bytes = [0_u8; JTI_BYTES];
    // The same generator that signs the proof: one source of randomness.
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| Error::config("dpop: the system's random number generator failed"))?;
    Ok(URL_SAFE_NO_PAD.encode(bytes))
}

/// Wall-clock seconds since the Unix epoch: servers compare `iat` with
/// their own clocks, so a monotonic clock would not do.
fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_are_upper_cased_tokens() {
        assert_eq!(http_method("post").expect("valid"), "POST");
        assert_eq!(http_method("PATCH").expect("valid"), "PATCH");
        for bad in ["", "GET /", "GE\nT", "GÉT"] {
            let error = http_method(bad).expect_err(bad);
            assert!(error.to_string().starts_with("dpop: "), "{error}");
        }
    }

    #[test]
    fn htu_rejects_other_schemes() {
        for url in [
            "ftp://example.com/x",
            "data:text/plain,hi",
            "file:///etc/passwd",
        ] {
            let url = Url::parse(url).expect("url");
            assert!(htu(&url).is_err(), "{url}");
        }
    }
}
