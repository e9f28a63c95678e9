//! Private keys that sign JWTs: RSA or P-256, read from PEM or a JWK,
//! signing with RS256, PS256 or ES256 through aws-lc-rs, the crypto library
//! rustls already links.
//!
//! One parser serves every key authmux reads: the `private_key_jwt` client
//! assertion key ([`ClientAssertion`](crate::ClientAssertion)) and the
//! DPoP key of `authmux-dpop`.

use std::fmt;
use std::sync::Arc;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::{KeyPairComponents, PublicKeyComponents};
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _, RSA_PKCS1_SHA256, RSA_PSS_SHA256,
    RsaKeyPair,
};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rustls_pki_types::pem::{PemObject as _, SectionKind};
use secrecy::zeroize::Zeroizing;
use serde_json::Value;

use crate::error::Error;

/// A JWS signature algorithm that a [`SigningKey`] can sign with.
/// Deserializes from its JOSE name: `"RS256"`, `"PS256"` or `"ES256"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Deserialize, serde::Serialize)]
pub enum SigningAlgorithm {
    /// RSASSA-PKCS1-v1_5 with SHA-256.
    RS256,
    /// RSASSA-PSS with SHA-256 (and MGF1 with SHA-256).
    PS256,
    /// ECDSA on P-256 with SHA-256; the signature is `r || s`, 64 bytes.
    ES256,
}

impl SigningAlgorithm {
    /// The JOSE name: `RS256`, `PS256` or `ES256`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::RS256 => "RS256",
            Self::PS256 => "PS256",
            Self::ES256 => "ES256",
        }
    }
}

impl fmt::Display for SigningAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why text is not a usable private key, in words that never quote it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyProblem {
    /// Not an RSA or P-256 private key in any accepted form.
    NotAKey,
    /// An encrypted PKCS#8 key.
    Encrypted,
    /// A public key, with no private part.
    PublicOnly,
}

impl KeyProblem {
    /// The problem in words; `not_a_key` describes [`NotAKey`](Self::NotAKey)
    /// for the caller's context.
    pub fn describe(self, not_a_key: &'static str) -> &'static str {
        match self {
            Self::NotAKey => not_a_key,
            Self::Encrypted => "an encrypted private key, which is not supported: decrypt it first",
            Self::PublicOnly => "a public key: the private key is needed to sign",
        }
    }
}

#[derive(Clone)]
enum Pair {
    Rsa(Arc<RsaKeyPair>),
    Ec(Arc<EcdsaKeyPair>),
}

/// A private key that signs JWTs: RSA (2048 to 8192 bits) or P-256.
///
/// Read it with [`parse`](Self::parse) (PEM or JWK, told apart by content),
/// or generate a P-256 key with [`generate_p256`](Self::generate_p256).
/// Cloning is cheap. `Debug` shows the key type and the RFC 7638
/// thumbprint of the public key, never the private key.
#[derive(Clone)]
pub struct SigningKey {
    pair: Pair,
    public_jwk: Value,
    thumbprint: String,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("kty", &self.key_type())
            .field("thumbprint", &self.thumbprint)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// A new random P-256 key.
    ///
    /// # Errors
    ///
    /// When the operating system's random number generator fails.
    pub fn generate_p256() -> Result<Self, Error> {
        let pair = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING)
            .map_err(|_| Error::config("the system's random number generator failed"))?;
        Ok(Self::from_ec(pair))
    }

    /// Reads a private key: a JSON object is a JWK
    /// ([`from_jwk`](Self::from_jwk)), anything else PEM
    /// ([`from_pem`](Self::from_pem)).
    ///
    /// # Errors
    ///
    /// Why the text is not a key, never the text itself.
    pub fn parse(text: &str) -> Result<Self, KeyProblem> {
        let text = text.trim_start_matches('\u{feff}');
        if text.trim_start().starts_with('{') {
            Self::from_jwk(text)
        } else {
            Self::from_pem(text)
        }
    }

    /// Reads the first private key of a PEM document: PKCS#8
    /// (`PRIVATE KEY`, RSA or P-256), PKCS#1 (`RSA PRIVATE KEY`) or SEC1
    /// (`EC PRIVATE KEY`). Other blocks, such as the `EC PARAMETERS` that
    /// `openssl ecparam -genkey` writes first, are skipped. Encrypted keys
    /// are not supported.
    ///
    /// # Errors
    ///
    /// Why the text is not a key, never the text itself.
    pub fn from_pem(text: &str) -> Result<Self, KeyProblem> {
        let mut public_only = false;
        for section in <(SectionKind, Vec<u8>)>::pem_slice_iter(text.as_bytes()) {
            let (kind, der) = section.map_err(|_| KeyProblem::NotAKey)?;
            let der = Zeroizing::new(der);
            let pair = match kind {
                SectionKind::PrivateKey => {
                    match EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &der) {
                        Ok(pair) => Pair::Ec(Arc::new(pair)),
                        Err(_) => Pair::Rsa(Arc::new(
                            RsaKeyPair::from_pkcs8(&der).map_err(|_| KeyProblem::NotAKey)?,
                        )),
                    }
                }
                SectionKind::RsaPrivateKey => Pair::Rsa(Arc::new(
                    RsaKeyPair::from_der(&der).map_err(|_| KeyProblem::NotAKey)?,
                )),
                SectionKind::EcPrivateKey => Pair::Ec(Arc::new(
                    EcdsaKeyPair::from_private_key_der(&ECDSA_P256_SHA256_FIXED_SIGNING, &der)
                        .map_err(|_| KeyProblem::NotAKey)?,
                )),
                SectionKind::PublicKey => {
                    public_only = true;
                    continue;
                }
                _ => continue,
            };
            return Ok(Self::from_pair(pair));
        }
        // The PEM reader skips labels it does not know, such as this one.
        if text.contains("-----BEGIN ENCRYPTED PRIVATE KEY-----") {
            return Err(KeyProblem::Encrypted);
        }
        Err(if public_only {
            KeyProblem::PublicOnly
        } else {
            KeyProblem::NotAKey
        })
    }

    /// Reads a private JSON Web Key: EC on P-256 (`crv`, `x`, `y`, `d`) or
    /// RSA (`n`, `e`, `d`, `p`, `q`, `dp`, `dq`, `qi`). The public members
    /// must belong to the private ones; others such as `kid`, `alg` or `use`
    /// are ignored.
    ///
    /// # Errors
    ///
    /// Why the text is not a key, never the text itself.
    pub fn from_jwk(text: &str) -> Result<Self, KeyProblem> {
        let text = text.trim_start_matches('\u{feff}');
        let jwk: PrivateJwk = serde_json::from_str(text).map_err(|_| KeyProblem::NotAKey)?;
        let decode = |member: &Option<Member>| -> Result<Zeroizing<Vec<u8>>, KeyProblem> {
            let member = member.as_ref().ok_or(KeyProblem::NotAKey)?;
            URL_SAFE_NO_PAD
                .decode(member.0.as_bytes())
                .map(Zeroizing::new)
                .map_err(|_| KeyProblem::NotAKey)
        };
        let pair = match jwk.kty.as_str() {
            "EC" => {
                if jwk.crv.as_deref() != Some("P-256") {
                    return Err(KeyProblem::NotAKey);
                }
                let (x, y) = (decode(&jwk.x)?, decode(&jwk.y)?);
                if jwk.d.is_none() {
                    return Err(KeyProblem::PublicOnly);
                }
                let d = decode(&jwk.d)?;
                // RFC 7518 §6.2: each is exactly as long as the curve's order.
                if [d.len(), x.len(), y.len()] != [32, 32, 32] {
                    return Err(KeyProblem::NotAKey);
                }
                let mut point = Vec::with_capacity(65);
                point.push(0x04);
                point.extend_from_slice(&x);
                point.extend_from_slice(&y);
                // aws-lc checks that the point is the public key of `d`.
                Pair::Ec(Arc::new(
                    EcdsaKeyPair::from_private_key_and_public_key(
                        &ECDSA_P256_SHA256_FIXED_SIGNING,
                        &d,
                        &point,
                    )
                    .map_err(|_| KeyProblem::NotAKey)?,
                ))
            }
            "RSA" => {
                let (n, e) = (decode(&jwk.n)?, decode(&jwk.e)?);
                if jwk.d.is_none() {
                    return Err(KeyProblem::PublicOnly);
                }
                let components = KeyPairComponents {
                    public_key: PublicKeyComponents {
                        n: n.as_slice(),
                        e: e.as_slice(),
                    },
                    d: decode(&jwk.d)?,
                    p: decode(&jwk.p)?,
                    q: decode(&jwk.q)?,
                    dP: decode(&jwk.dp)?,
                    dQ: decode(&jwk.dq)?,
                    qInv: decode(&jwk.qi)?,
                };
                // aws-lc checks that the components are one consistent key.
                Pair::Rsa(Arc::new(
                    RsaKeyPair::from_components(&components).map_err(|_| KeyProblem::NotAKey)?,
                ))
            }
            _ => return Err(KeyProblem::NotAKey),
        };
        Ok(Self::from_pair(pair))
    }

    fn from_ec(pair: EcdsaKeyPair) -> Self {
        Self::from_pair(Pair::Ec(Arc::new(pair)))
    }

    fn from_pair(pair: Pair) -> Self {
        let b64 = |bytes: &[u8]| URL_SAFE_NO_PAD.encode(bytes);
        let (public_jwk, thumbprint) = match &pair {
            Pair::Ec(ec) => {
                // The uncompressed point: 0x04, then x and y, 32 bytes each.
                let point = ec.public_key().as_ref();
                let (x, y) = (b64(&point[1..33]), b64(&point[33..65]));
                let thumbprint =
                    canonical_thumbprint(&[("crv", "P-256"), ("kty", "EC"), ("x", &x), ("y", &y)]);
                let jwk = serde_json::json!({"kty": "EC", "crv": "P-256", "x": x, "y": y});
                (jwk, thumbprint)
            }
            Pair::Rsa(rsa) => {
                let public = rsa.public_key();
                let n = b64(public.modulus().big_endian_without_leading_zero());
                let e = b64(public.exponent().big_endian_without_leading_zero());
                let thumbprint = canonical_thumbprint(&[("e", &e), ("kty", "RSA"), ("n", &n)]);
                (
                    serde_json::json!({"kty": "RSA", "n": n, "e": e}),
                    thumbprint,
                )
            }
        };
        Self {
            pair,
            public_jwk,
            thumbprint,
        }
    }

    /// `"RSA"` or `"EC"`: the JWK `kty` of the key.
    pub fn key_type(&self) -> &'static str {
        match self.pair {
            Pair::Rsa(_) => "RSA",
            Pair::Ec(_) => "EC",
        }
    }

    /// The algorithm used unless another is chosen: RS256 for an RSA key,
    /// ES256 for a P-256 key.
    pub fn default_algorithm(&self) -> SigningAlgorithm {
        match self.pair {
            Pair::Rsa(_) => SigningAlgorithm::RS256,
            Pair::Ec(_) => SigningAlgorithm::ES256,
        }
    }

    /// The algorithms this key can sign with.
    pub fn algorithms(&self) -> &'static [SigningAlgorithm] {
        match self.pair {
            Pair::Rsa(_) => &[SigningAlgorithm::RS256, SigningAlgorithm::PS256],
            Pair::Ec(_) => &[SigningAlgorithm::ES256],
        }
    }

    /// The public key as a JWK with exactly its required members: `kty`,
    /// `crv`, `x` and `y`, or `kty`, `n` and `e`.
    pub fn public_jwk(&self) -> &Value {
        &self.public_jwk
    }

    /// The RFC 7638 SHA-256 thumbprint of [`public_jwk`](Self::public_jwk),
    /// base64url.
    pub fn thumbprint(&self) -> &str {
        &self.thumbprint
    }

    /// The JWS signature of `input` with `algorithm`.
    ///
    /// # Errors
    ///
    /// When the key cannot sign with `algorithm`, or aws-lc fails (no
    /// system randomness).
    pub fn sign(&self, algorithm: SigningAlgorithm, input: &[u8]) -> Result<Vec<u8>, Error> {
        let failed = || Error::config(format!("signing with {algorithm} failed"));
        let rng = SystemRandom::new();
        match (&self.pair, algorithm) {
            (Pair::Ec(ec), SigningAlgorithm::ES256) => ec
                .sign(&rng, input)
                .map(|signature| signature.as_ref().to_vec())
                .map_err(|_| failed()),
            (Pair::Rsa(rsa), SigningAlgorithm::RS256 | SigningAlgorithm::PS256) => {
                let padding: &'static dyn aws_lc_rs::signature::RsaEncoding =
                    if algorithm == SigningAlgorithm::RS256 {
                        &RSA_PKCS1_SHA256
                    } else {
                        &RSA_PSS_SHA256
                    };
                let mut signature = vec![0; rsa.public_modulus_len()];
                rsa.sign(padding, &rng, input, &mut signature)
                    .map_err(|_| failed())?;
                Ok(signature)
            }
            _ => Err(Error::config(format!(
                "{algorithm} does not fit an {} key",
                self.key_type()
            ))),
        }
    }
}

/// The members of a private JWK that matter here.
#[derive(serde::Deserialize)]
struct PrivateJwk {
    kty: String,
    crv: Option<String>,
    x: Option<Member>,
    y: Option<Member>,
    n: Option<Member>,
    e: Option<Member>,
    d: Option<Member>,
    p: Option<Member>,
    q: Option<Member>,
    dp: Option<Member>,
    dq: Option<Member>,
    qi: Option<Member>,
}

/// A base64url JWK member, wiped when dropped: most of them are private.
struct Member(Zeroizing<String>);

impl<'de> serde::Deserialize<'de> for Member {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(|member| Self(Zeroizing::new(member)))
    }
}

/// The RFC 7638 SHA-256 thumbprint of a public JWK, base64url without
/// padding.
///
/// Only the members that RFC 7638 requires for the key type are hashed, so
/// optional ones (`kid`, `alg`, `use`, …) and private ones (`d`, …) make no
/// difference:
///
/// | `kty` | members hashed |
/// |-------|----------------|
/// | `EC`  | `crv`, `kty`, `x`, `y` |
/// | `RSA` | `e`, `kty`, `n` |
/// | `OKP` | `crv`, `kty`, `x` |
///
/// # Errors
///
/// A [`Config`](crate::ErrorKind::Config) error when `jwk` is not an
/// object, its `kty` is none of the above, or a required member is missing
/// or not a string. The message names the member, never its value.
///
/// ```
/// // The Ed25519 key of RFC 8037 §A.3.
/// let jwk = serde_json::json!({
///     "kty": "OKP",
///     "crv": "Ed25519",
///     "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo",
/// });
/// assert_eq!(
///     authmux_core::signing::jwk_thumbprint(&jwk)?,
///     "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k",
/// );
/// # Ok::<(), authmux_core::Error>(())
/// ```
pub fn jwk_thumbprint(jwk: &Value) -> Result<String, Error> {
    let object = jwk
        .as_object()
        .ok_or_else(|| Error::config("jwk: not a JSON object"))?;
    let kty = object
        .get("kty")
        .and_then(Value::as_str)
        .ok_or_else(|| Error::config("jwk: no \"kty\" string"))?;
    // RFC 7638 §3.2: the required members of each key type, here already in
    // lexicographic order so that the canonical form can be written as is.
    let names: &[&str] = match kty {
        "EC" => &["crv", "kty", "x", "y"],
        "RSA" => &["e", "kty", "n"],
        "OKP" => &["crv", "kty", "x"],
        _ => {
            return Err(Error::config(
                "jwk: thumbprints are computed for kty EC, RSA and OKP only",
            ));
        }
    };
    let mut members = Vec::with_capacity(names.len());
    for &name in names {
        let value = object
            .get(name)
            .and_then(Value::as_str)
            .ok_or_else(|| Error::config(format!("jwk: kty {kty} needs a \"{name}\" string")))?;
        members.push((name, value));
    }
    Ok(canonical_thumbprint(&members))
}

/// Hashes the canonical JSON object of `members`, which must already be
/// sorted by name: no whitespace, and strings escaped as JSON requires.
fn canonical_thumbprint(members: &[(&str, &str)]) -> String {
    let mut json = String::with_capacity(160);
    json.push('{');
    for (index, (name, value)) in members.iter().enumerate() {
        if index > 0 {
            json.push(',');
        }
        push_json_string(&mut json, name);
        json.push(':');
        push_json_string(&mut json, value);
    }
    json.push('}');
    sha256_b64(json.as_bytes())
}

/// The base64url SHA-256 of `bytes`.
pub fn sha256_b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes))
}

fn push_json_string(json: &mut String, text: &str) {
    // serde_json's escaping is the minimal one RFC 7638 §3.3 asks for; a
    // `String` always serializes.
    match serde_json::to_string(text) {
        Ok(quoted) => json.push_str(&quoted),
        Err(_) => unreachable!("a string always serializes to JSON"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn canonical_form_escapes_and_orders_members() {
        let by_hand = r#"{"crv":"P-256","kty":"EC","x":"a\"b","y":"c"}"#;
        let expected = sha256_b64(by_hand.as_bytes());
        let jwk = json!({"y": "c", "x": "a\"b", "kty": "EC", "crv": "P-256", "kid": "ignored"});
        assert_eq!(jwk_thumbprint(&jwk).expect("thumbprint"), expected);
    }

    #[test]
    fn thumbprint_errors_name_the_member_but_not_values() {
        let error = jwk_thumbprint(&json!({"kty": "EC", "crv": "P-256", "x": "secret-x"}))
            .expect_err("no y");
        assert_eq!(error.to_string(), "jwk: kty EC needs a \"y\" string");
        let error = jwk_thumbprint(&json!({"kty": "oct", "k": "c2VjcmV0"})).expect_err("oct");
        assert!(!error.to_string().contains("c2VjcmV0"), "{error}");
        assert!(jwk_thumbprint(&json!(["EC"])).is_err());
        assert!(jwk_thumbprint(&json!({"kty": "RSA", "e": 65537, "n": "x"})).is_err());
    }

    #[test]
    fn a_generated_key_signs_es256_only() {
        let key = SigningKey::generate_p256().expect("key");
        assert_eq!(key.default_algorithm(), SigningAlgorithm::ES256);
        assert_eq!(
            key.sign(SigningAlgorithm::ES256, b"x").expect("sig").len(),
            64
        );
        let error = key
            .sign(SigningAlgorithm::RS256, b"x")
            .expect_err("RSA alg");
        assert_eq!(error.to_string(), "RS256 does not fit an EC key");
        assert_eq!(
            key.thumbprint(),
            jwk_thumbprint(key.public_jwk()).expect("thumbprint")
        );
    }

    #[test]
    fn problems_are_told_apart() {
        assert_eq!(SigningKey::parse("").err(), Some(KeyProblem::NotAKey));
        assert_eq!(
            SigningKey::parse(r#"{"kty":"EC","crv":"P-256","x":"AA","y":"AA"}"#).err(),
            Some(KeyProblem::PublicOnly)
        );
        assert_eq!(
            SigningKey::parse("-----BEGIN ENCRYPTED PRIVATE KEY-----\nTUlJQg==\n-----END ENCRYPTED PRIVATE KEY-----\n").err(),
            Some(KeyProblem::Encrypted)
        );
    }
}
