//! Fixed private keys for `private_key_jwt` tests, made once with the
//! `openssl` command line: never use them for anything real.
//!
//! The RSA constants are one 2048-bit key in three forms, the EC constants
//! one P-256 key in three forms; [`OTHER_RSA_PKCS1_PEM`] is an unrelated
//! key, for a client that signs with the wrong one. The others are the
//! forms a user may hand over that need care: an RSA key too short to
//! sign with, and RSA-PSS keys (`openssl genpkey -algorithm RSA-PSS`),
//! unrestricted or bound to one hash. Register a public key
//! with [`TokenServer::expect_client_key`](crate::TokenServer::expect_client_key),
//! using [`public_jwk`].

use serde_json::{Map, Value};

/// The RSA key, PKCS#1 PEM (`RSA PRIVATE KEY`).
pub const RSA_PKCS1_PEM: &str = include_str!("../keys/rsa-pkcs1.pem");
/// The RSA key, PKCS#8 PEM (`PRIVATE KEY`).
pub const RSA_PKCS8_PEM: &str = include_str!("../keys/rsa-pkcs8.pem");
/// The RSA key as a private JWK, with `kid` `rsa-1`.
pub const RSA_JWK: &str = include_str!("../keys/rsa.jwk");
/// The P-256 key, SEC1 PEM (`EC PRIVATE KEY`).
pub const EC_SEC1_PEM: &str = include_str!("../keys/ec-sec1.pem");
/// The P-256 key, PKCS#8 PEM (`PRIVATE KEY`).
pub const EC_PKCS8_PEM: &str = include_str!("../keys/ec-pkcs8.pem");
/// The P-256 key as a private JWK, with `kid` `ec-1`.
pub const EC_JWK: &str = include_str!("../keys/ec.jwk");
/// Another RSA key, PKCS#1 PEM: not the one of [`RSA_JWK`].
pub const OTHER_RSA_PKCS1_PEM: &str = include_str!("../keys/other-rsa-pkcs1.pem");

/// A 1024-bit RSA key, PKCS#8 PEM: too short to sign with.
pub const RSA_1024_TOO_SHORT_PEM: &str = include_str!("../keys/rsa-1024-too-short.pem");
/// A 2048-bit RSA-PSS key without parameters, PKCS#8 PEM
/// (`openssl genpkey -algorithm RSA-PSS`): it signs PS256 only.
pub const RSA_PSS_PKCS8_PEM: &str = include_str!("../keys/rsa-pss-pkcs8.pem");
/// The public JWK of [`RSA_PSS_PKCS8_PEM`], written with `openssl rsa -modulus`.
pub const RSA_PSS_PUBLIC_JWK: &str = include_str!("../keys/rsa-pss-public.jwk");
/// A 2048-bit RSA-PSS key bound to SHA-256 (`-pkeyopt
/// rsa_pss_keygen_md:sha256`), PKCS#8 PEM.
pub const RSA_PSS_SHA256_PKCS8_PEM: &str = include_str!("../keys/rsa-pss-sha256-pkcs8.pem");
/// The public JWK of [`RSA_PSS_SHA256_PKCS8_PEM`].
pub const RSA_PSS_SHA256_PUBLIC_JWK: &str = include_str!("../keys/rsa-pss-sha256-public.jwk");
/// A 2048-bit RSA-PSS key bound to SHA-512, PKCS#8 PEM: PS256 must not
/// use it.
pub const RSA_PSS_SHA512_PKCS8_PEM: &str = include_str!("../keys/rsa-pss-sha512-pkcs8.pem");

/// The public part of a private JWK: its `kty`, `crv`, `x`, `y`, `n` and
/// `e` members.
///
/// # Panics
///
/// If `private_jwk` is not a JSON object.
pub fn public_jwk(private_jwk: &str) -> Value {
    let jwk: Map<String, Value> = serde_json::from_str(private_jwk)
        .unwrap_or_else(|error| panic!("not a JSON object: {error}"));
    let public: Map<String, Value> = jwk
        .into_iter()
        .filter(|(name, _)| matches!(name.as_str(), "kty" | "crv" | "x" | "y" | "n" | "e"))
        .collect();
    Value::Object(public)
}
