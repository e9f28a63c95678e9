//! DPoP ([RFC 9449]) for [authmux]: ES256 keys and the proofs that bind
//! access tokens to them.
//!
//! Keys are parsed, generated and used through aws-lc-rs (the crypto
//! library rustls already links), with the same parser as every other key
//! authmux reads ([`authmux_core::signing`]); `jti`s come from its random
//! number generator.
//!
//! A [`DpopKey`] is a P-256 key pair. It implements
//! [`authmux_core::DpopProver`], so a provider that is handed one sends a
//! fresh proof in the `DPoP` header of every token request, and a caller
//! presents a DPoP-bound token with a fresh proof (carrying `ath`) on every
//! API call.
//!
//! # Proofs
//!
//! A proof is a compact JWS signed with ES256 (the raw 64-byte `r || s`
//! signature), with this header and these claims:
//!
//! ```text
//! {"typ":"dpop+jwt","alg":"ES256","jwk":{"kty":"EC","crv":"P-256","x":"…","y":"…"}}
//! {"jti":"<128 random bits>","htm":"POST","htu":"https://idp.example.com/oauth/token",
//!  "iat":1767225600,"nonce":"<when the server gave one>","ath":"<when presenting a token>"}
//! ```
//!
//! `htu` is the request URL without its query, fragment and user
//! information, with the scheme and host in lower case and a default port
//! left out (see [`htu`]). `ath` is the base64url SHA-256 of the access token
//! (see [`access_token_hash`]). Every proof is made and signed anew: nothing
//! in it but the key is reused.
//!
//! The key's [RFC 7638] thumbprint ([`DpopKey::thumbprint`], computed by
//! [`jwk_thumbprint`]) is part of the token identity, so tokens bound to
//! different keys, and Bearer tokens, are cached apart.
//!
//! # Example
//!
//! ```
//! use authmux_core::DpopProver as _;
//! use authmux_dpop::DpopKey;
//! use url::Url;
//!
//! # fn main() -> Result<(), authmux_core::Error> {
//! let key = DpopKey::generate();
//! let token_url = Url::parse("https://idp.example.com/oauth/token?audience=x").expect("url");
//! // The token request: no nonce yet, no token to present.
//! let proof = key.proof("POST", &token_url, None, None)?;
//! assert_eq!(proof.to_str().expect("ascii").split('.').count(), 3);
//!
//! // An API call with the DPoP-bound token, after the server asked for a nonce.
//! let api_url = Url::parse("https://api.example.com/v1/orders").expect("url");
//! let _proof = key.proof("GET", &api_url, Some("server-nonce"), Some("the-access-token"))?;
//! println!("key {}", key.thumbprint()); // 43 base64url characters
//! # Ok(())
//! # }
//! ```
//!
//! # Configuration
//!
//! [`DpopConfig`] deserializes from a client's `dpop` setting:
//!
//! ```toml
//! dpop = false                           # the default: Bearer tokens
//! dpop = true                            # a key generated in memory, per process
//! dpop = { key_file = "/etc/authmux/dpop.pem" }  # PKCS#8 or SEC1 PEM, or a private JWK
//! ```
//!
//! A generated key never leaves the process, so tokens bound to it die with
//! it; a key file lets several processes, or restarts, share DPoP-bound
//! tokens. Errors about a key file name the file, never what it holds.
//!
//! [authmux]: https://github.com/authmux/authmux
//! [RFC 9449]: https://www.rfc-editor.org/rfc/rfc9449
//! [RFC 7638]: https://www.rfc-editor.org/rfc/rfc7638

mod config;
mod key;
mod proof;

pub use authmux_core::signing::jwk_thumbprint;
pub use config::DpopConfig;
pub use key::DpopKey;
pub use proof::{access_token_hash, htu};

/// The JWS `alg` of every proof: ECDSA on P-256 with SHA-256.
pub const ALGORITHM: &str = "ES256";

/// The JWS `typ` of every proof, which tells it apart from other JWTs.
pub const PROOF_TYPE: &str = "dpop+jwt";
