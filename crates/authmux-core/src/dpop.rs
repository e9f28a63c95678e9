//! The hook for DPoP (RFC 9449) proofs, so that providers can send them
//! without depending on a JOSE implementation.

use reqwest::header::HeaderValue;
use url::Url;

use crate::error::Error;

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
