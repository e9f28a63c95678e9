//! Private keys that sign JWTs: RSA or P-256, read from PEM or a JWK,
//! signing with RS256, PS256 or ES256 through aws-lc-rs, the crypto library
//! rustls already links.
//!
//! Keys come in the forms users hand over: PKCS#1, PKCS#8 (RSA-PSS keys
//! included) and SEC1 PEM, also with its newlines written as the two
//! characters `\n` (as env files hold them); a private JWK, or a JWK Set
//! holding one private key. A JWK's `kid` and `alg` are kept as the
//! defaults of the assertion header, and a JWK meant for something other
//! than signing is refused.
//!
//! One parser serves every key authmux reads: the `private_key_jwt` client
//! assertion key ([`ClientAssertion`](crate::ClientAssertion)) and the
//! DPoP key of `authmux-dpop`.

use std::fmt;
use std::sync::Arc;

use aws_lc_rs::error::KeyRejected;
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
    /// An RSA key shorter than 2048 bits.
    RsaTooShort,
    /// An RSA-PSS key bound to a hash other than SHA-256, so not for PS256.
    PssNotSha256,
    /// An RSA JWK without its CRT members `p`, `q`, `dp`, `dq` and `qi`.
    RsaJwkWithoutPrimes,
    /// A JWK whose `use` is not `sig`, or whose `key_ops` lack `sign`.
    NotForSigning,
    /// A JWK whose `alg` is none that its key can sign: RS256 or PS256 for
    /// RSA, ES256 for P-256.
    UnsupportedAlg,
    /// A JWK Set with more than one private key.
    SeveralPrivateKeys,
}

impl KeyProblem {
    /// The problem in words; `not_a_key` describes [`NotAKey`](Self::NotAKey)
    /// for the caller's context.
    pub fn describe(self, not_a_key: &'static str) -> &'static str {
        match self {
            Self::NotAKey => not_a_key,
            Self::Encrypted => "an encrypted private key, which is not supported: decrypt it first",
            Self::PublicOnly => "a public key: the private key is needed to sign",
            Self::RsaTooShort => {
                "an RSA key shorter than 2048 bits, which is too short: RSA keys must have \
                 at least 2048 bits (openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048)"
            }
            Self::PssNotSha256 => {
                "an RSA-PSS key bound to a hash other than SHA-256, which PS256 needs: \
                 make one without that restriction, or with -pkeyopt rsa_pss_keygen_md:sha256"
            }
            Self::RsaJwkWithoutPrimes => {
                "an RSA JWK without p, q, dp, dq and qi, which signing needs \
                 (RFC 7518 §6.3.2 lets them be left out): export the key again with them, \
                 or as a PEM file"
            }
            Self::NotForSigning => {
                "a JWK that is not for signing (its \"use\" is not \"sig\", or its \
                 \"key_ops\" lack \"sign\"): give the client's signing key"
            }
            Self::UnsupportedAlg => {
                "a JWK whose \"alg\" its key cannot sign with (RS256 or PS256 for RSA, \
                 ES256 for P-256): correct \"alg\" or remove it"
            }
            Self::SeveralPrivateKeys => {
                "a JWK Set with several private keys: keep only the one to sign with"
            }
        }
    }
}

#[derive(Clone)]
enum Pair {
    Rsa(Arc<RsaKeyPair>),
    Ec(Arc<EcdsaKeyPair>),
}

/// What an RSA key may sign: any RSA key both, an RSA-PSS key (RFC 4055)
/// PSS only.
const RSA_ALGORITHMS: &[SigningAlgorithm] = &[SigningAlgorithm::RS256, SigningAlgorithm::PS256];
const RSA_PSS_ALGORITHMS: &[SigningAlgorithm] = &[SigningAlgorithm::PS256];
const EC_ALGORITHMS: &[SigningAlgorithm] = &[SigningAlgorithm::ES256];

/// A private key that signs JWTs: RSA (2048 to 8192 bits) or P-256.
///
/// Read it with [`parse`](Self::parse) (PEM or JWK, told apart by content),
/// or generate a P-256 key with [`generate_p256`](Self::generate_p256).
/// Cloning is cheap. `Debug` shows the key type and the RFC 7638
/// thumbprint of the public key, never the private key.
#[derive(Clone)]
pub struct SigningKey {
    pair: Pair,
    algorithms: &'static [SigningAlgorithm],
    public_jwk: Value,
    thumbprint: String,
    /// The JWK's `kid`, for a key read from a JWK that has one.
    kid: Option<Arc<str>>,
    /// The JWK's `alg`, checked to fit the key.
    declared_algorithm: Option<SigningAlgorithm>,
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
    /// (`PRIVATE KEY`: RSA, RSA-PSS or P-256), PKCS#1 (`RSA PRIVATE KEY`)
    /// or SEC1 (`EC PRIVATE KEY`). Other blocks, such as the `EC
    /// PARAMETERS` that `openssl ecparam -genkey` writes first, are skipped.
    /// A document whose line breaks arrive as the two characters `\n` (a
    /// PEM pasted into an env file) is read as if they were line breaks.
    /// Encrypted keys are not supported.
    ///
    /// An RSA-PSS key signs PS256 only; one bound to a hash other than
    /// SHA-256 is refused.
    ///
    /// # Errors
    ///
    /// Why the text is not a key, never the text itself.
    pub fn from_pem(text: &str) -> Result<Self, KeyProblem> {
        // Base64 has no backslash, so a PEM holds one only when its line
        // breaks were escaped on the way.
        if text.contains("-----BEGIN") && text.contains("\\n") {
            let unescaped = Zeroizing::new(text.replace("\\r\\n", "\n").replace("\\n", "\n"));
            return Self::from_pem(&unescaped);
        }
        let mut public_only = false;
        for section in <(SectionKind, Vec<u8>)>::pem_slice_iter(text.as_bytes()) {
            let (kind, der) = section.map_err(|_| KeyProblem::NotAKey)?;
            let der = Zeroizing::new(der);
            let (pair, algorithms) = match kind {
                SectionKind::PrivateKey => {
                    if let Ok(pair) =
                        EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &der)
                    {
                        (Pair::Ec(Arc::new(pair)), EC_ALGORITHMS)
                    } else if let Some(pkcs1) = rsa_pss_private_key(&der) {
                        // aws-lc reads RSA-PSS keys only as PKCS#1, which
                        // forgets that the key is bound to PSS.
                        (rsa_pair(RsaKeyPair::from_der(pkcs1?))?, RSA_PSS_ALGORITHMS)
                    } else {
                        (rsa_pair(RsaKeyPair::from_pkcs8(&der))?, RSA_ALGORITHMS)
                    }
                }
                SectionKind::RsaPrivateKey => {
                    (rsa_pair(RsaKeyPair::from_der(&der))?, RSA_ALGORITHMS)
                }
                SectionKind::EcPrivateKey => (
                    Pair::Ec(Arc::new(
                        EcdsaKeyPair::from_private_key_der(&ECDSA_P256_SHA256_FIXED_SIGNING, &der)
                            .map_err(|_| KeyProblem::NotAKey)?,
                    )),
                    EC_ALGORITHMS,
                ),
                SectionKind::PublicKey => {
                    public_only = true;
                    continue;
                }
                _ => continue,
            };
            return Ok(Self::from_pair(pair, algorithms));
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
    /// RSA (`n`, `e`, `d`, `p`, `q`, `dp`, `dq`, `qi`), or a JWK Set
    /// (`{"keys":[…]}`) holding exactly one private key among public ones.
    /// The public members must belong to the private ones.
    ///
    /// `kid` is kept ([`kid`](Self::kid)), and so is `alg`
    /// ([`declared_algorithm`](Self::declared_algorithm)), which must be
    /// one the key can sign with. A key whose `use` is not `sig`, or whose
    /// `key_ops` lack `sign`, is refused. An RSA JWK without `p`, `q`,
    /// `dp`, `dq` and `qi` is refused too: aws-lc cannot sign without them,
    /// and finding the primes from `n`, `e` and `d` would take a second
    /// crypto library.
    ///
    /// # Errors
    ///
    /// Why the text is not a key, never the text itself.
    pub fn from_jwk(text: &str) -> Result<Self, KeyProblem> {
        let text = text.trim_start_matches('\u{feff}');
        let jwk = match serde_json::from_str::<JwkSet>(text) {
            Ok(set) => {
                let mut private = set.keys.into_iter().filter(|jwk| jwk.d.is_some());
                match (private.next(), private.next()) {
                    (Some(jwk), None) => jwk,
                    (None, _) => return Err(KeyProblem::PublicOnly),
                    (Some(_), Some(_)) => return Err(KeyProblem::SeveralPrivateKeys),
                }
            }
            Err(_) => serde_json::from_str::<PrivateJwk>(text).map_err(|_| KeyProblem::NotAKey)?,
        };
        let signs = jwk.use_.as_deref().is_none_or(|use_| use_ == "sig")
            && jwk
                .key_ops
                .as_ref()
                .is_none_or(|ops| ops.iter().any(|op| op == "sign"));
        if !signs {
            return Err(KeyProblem::NotForSigning);
        }
        let decode = |member: &Option<Member>| -> Result<Zeroizing<Vec<u8>>, KeyProblem> {
            let member = member.as_ref().ok_or(KeyProblem::NotAKey)?;
            URL_SAFE_NO_PAD
                .decode(member.0.as_bytes())
                .map(Zeroizing::new)
                .map_err(|_| KeyProblem::NotAKey)
        };
        let (pair, algorithms) = match jwk.kty.as_str() {
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
                let pair = EcdsaKeyPair::from_private_key_and_public_key(
                    &ECDSA_P256_SHA256_FIXED_SIGNING,
                    &d,
                    &point,
                )
                .map_err(|_| KeyProblem::NotAKey)?;
                (Pair::Ec(Arc::new(pair)), EC_ALGORITHMS)
            }
            "RSA" => {
                let (n, e) = (decode(&jwk.n)?, decode(&jwk.e)?);
                if jwk.d.is_none() {
                    return Err(KeyProblem::PublicOnly);
                }
                if [&jwk.p, &jwk.q, &jwk.dp, &jwk.dq, &jwk.qi]
                    .iter()
                    .any(|member| member.is_none())
                {
                    return Err(KeyProblem::RsaJwkWithoutPrimes);
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
                (
                    rsa_pair(RsaKeyPair::from_components(&components))?,
                    RSA_ALGORITHMS,
                )
            }
            _ => return Err(KeyProblem::NotAKey),
        };
        let declared_algorithm = match jwk.alg.as_deref() {
            None => None,
            Some(alg) => Some(
                algorithms
                    .iter()
                    .copied()
                    .find(|fits| fits.as_str() == alg)
                    .ok_or(KeyProblem::UnsupportedAlg)?,
            ),
        };
        let mut key = Self::from_pair(pair, algorithms);
        key.kid = jwk.kid.as_deref().map(Arc::from);
        key.declared_algorithm = declared_algorithm;
        Ok(key)
    }

    fn from_ec(pair: EcdsaKeyPair) -> Self {
        Self::from_pair(Pair::Ec(Arc::new(pair)), EC_ALGORITHMS)
    }

    fn from_pair(pair: Pair, algorithms: &'static [SigningAlgorithm]) -> Self {
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
            algorithms,
            public_jwk,
            thumbprint,
            kid: None,
            declared_algorithm: None,
        }
    }

    /// `"RSA"` or `"EC"`: the JWK `kty` of the key.
    pub fn key_type(&self) -> &'static str {
        match self.pair {
            Pair::Rsa(_) => "RSA",
            Pair::Ec(_) => "EC",
        }
    }

    /// The algorithm used unless another is chosen: the JWK's `alg` if it
    /// has one, else the first of [`algorithms`](Self::algorithms): RS256
    /// for an RSA key, PS256 for an RSA-PSS key, ES256 for a P-256 key.
    pub fn default_algorithm(&self) -> SigningAlgorithm {
        self.declared_algorithm.unwrap_or(self.algorithms[0])
    }

    /// The algorithms this key can sign with, the default first.
    pub fn algorithms(&self) -> &'static [SigningAlgorithm] {
        self.algorithms
    }

    /// The `alg` of the JWK the key was read from, if it had one.
    pub fn declared_algorithm(&self) -> Option<SigningAlgorithm> {
        self.declared_algorithm
    }

    /// The `kid` of the JWK the key was read from, if it had one.
    pub fn kid(&self) -> Option<&str> {
        self.kid.as_deref()
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
        if !self.algorithms.contains(&algorithm) {
            return Err(Error::config(format!(
                "{algorithm} does not fit this {} key",
                self.key_type()
            )));
        }
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
                "{algorithm} does not fit this {} key",
                self.key_type()
            ))),
        }
    }
}

/// An RSA key pair, or why aws-lc refused it.
fn rsa_pair(parsed: Result<RsaKeyPair, KeyRejected>) -> Result<Pair, KeyProblem> {
    match parsed {
        Ok(pair) => Ok(Pair::Rsa(Arc::new(pair))),
        // aws-lc's name for a modulus under 2048 bits.
        Err(rejected) if rejected.description_() == "TooSmall" => Err(KeyProblem::RsaTooShort),
        Err(_) => Err(KeyProblem::NotAKey),
    }
}

/// `id-RSASSA-PSS` (RFC 4055 §3.1), DER content octets.
const RSASSA_PSS_OID: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0a];
/// `id-sha256` (RFC 5754 §2.2), DER content octets.
const SHA256_OID: &[u8] = &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01];

/// The PKCS#1 `RSAPrivateKey` inside a PKCS#8 `PrivateKeyInfo` whose
/// algorithm is RSASSA-PSS, which RFC 4055 §3.1 keeps in the same form as
/// any RSA key; `None` for another algorithm. Without parameters the key
/// may sign with any hash; with them, only with their `hashAlgorithm`
/// (SHA-1 when absent), which must be SHA-256 for PS256.
///
/// Only the outer structure is walked here; aws-lc parses the key itself.
fn rsa_pss_private_key(pkcs8: &[u8]) -> Option<Result<&[u8], KeyProblem>> {
    const SEQUENCE: u8 = 0x30;
    let (info, _) = der_take(pkcs8, SEQUENCE)?;
    let (_version, rest) = der_take(info, 0x02)?;
    let (algorithm, rest) = der_take(rest, SEQUENCE)?;
    let (private_key, _) = der_take(rest, 0x04)?;
    let (oid, parameters) = der_take(algorithm, 0x06)?;
    if oid != RSASSA_PSS_OID {
        return None;
    }
    if parameters.is_empty() {
        return Some(Ok(private_key));
    }
    // RSASSA-PSS-params ::= SEQUENCE { hashAlgorithm [0] AlgorithmIdentifier, … }
    let hash = der_take(parameters, SEQUENCE)
        .and_then(|(params, _)| der_take(params, 0xa0))
        .and_then(|(hash, _)| der_take(hash, SEQUENCE))
        .and_then(|(hash_algorithm, _)| der_take(hash_algorithm, 0x06));
    Some(match hash {
        Some((SHA256_OID, _)) => Ok(private_key),
        _ => Err(KeyProblem::PssNotSha256),
    })
}

/// The contents of the first DER element of `input` if its tag is `tag`,
/// and what follows it.
fn der_take(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (found, contents, rest) = der_next(input)?;
    (found == tag).then_some((contents, rest))
}

/// Splits the first DER element off `input`: its tag, its contents and
/// what follows it.
fn der_next(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (length, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        // The long form: the low bits count the length's bytes.
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 || rest.len() < count {
            return None;
        }
        let (bytes, rest) = rest.split_at(count);
        let length = bytes
            .iter()
            .fold(0_usize, |length, &byte| (length << 8) | usize::from(byte));
        (length, rest)
    };
    (rest.len() >= length).then(|| {
        let (contents, rest) = rest.split_at(length);
        (tag, contents, rest)
    })
}

/// A JWK Set (RFC 7517 §5).
#[derive(serde::Deserialize)]
struct JwkSet {
    keys: Vec<PrivateJwk>,
}

/// The members of a private JWK that matter here.
#[derive(serde::Deserialize)]
struct PrivateJwk {
    kty: String,
    kid: Option<String>,
    alg: Option<String>,
    #[serde(rename = "use")]
    use_: Option<String>,
    key_ops: Option<Vec<String>>,
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
        assert_eq!(error.to_string(), "RS256 does not fit this EC key");
        assert_eq!(
            key.thumbprint(),
            jwk_thumbprint(key.public_jwk()).expect("thumbprint")
        );
    }

    const TESTKIT_RSA_JWK: &str = include_str!("../../authmux-testkit/keys/rsa.jwk");
    const TESTKIT_RSA_PEM: &str = include_str!("../../authmux-testkit/keys/rsa-pkcs8.pem");

    #[test]
    fn rsa_pss_keys_sign_ps256_only_and_short_keys_are_named() {
        let pss = SigningKey::parse(include_str!(
            "../../authmux-testkit/keys/rsa-pss-sha256-pkcs8.pem"
        ))
        .expect("an RSA-PSS key bound to SHA-256");
        assert_eq!(pss.algorithms(), [SigningAlgorithm::PS256]);
        assert_eq!(pss.default_algorithm(), SigningAlgorithm::PS256);
        let error = pss
            .sign(SigningAlgorithm::RS256, b"x")
            .expect_err("PSS only");
        assert_eq!(error.to_string(), "RS256 does not fit this RSA key");
        assert_eq!(
            SigningKey::parse(include_str!(
                "../../authmux-testkit/keys/rsa-pss-sha512-pkcs8.pem"
            ))
            .err(),
            Some(KeyProblem::PssNotSha256)
        );
        assert_eq!(
            SigningKey::parse(include_str!(
                "../../authmux-testkit/keys/rsa-1024-too-short.pem"
            ))
            .err(),
            Some(KeyProblem::RsaTooShort)
        );
        let rsa = SigningKey::parse(TESTKIT_RSA_PEM).expect("a plain RSA key");
        assert_eq!(rsa.algorithms(), RSA_ALGORITHMS);
        assert_eq!(rsa.kid(), None);
    }

    #[test]
    fn der_elements_are_split_and_truncation_is_refused() {
        assert_eq!(
            der_next(&[0x04, 0x01, 0xaa, 0xbb]),
            Some((0x04, &[0xaa][..], &[0xbb][..]))
        );
        let long = [&[0x04, 0x81, 0x80][..], &[0; 0x80]].concat();
        assert_eq!(
            der_next(&long).map(|(_, contents, _)| contents.len()),
            Some(0x80)
        );
        assert_eq!(der_next(&[0x04, 0x02, 0xaa]), None);
        assert_eq!(
            der_next(&[0x04, 0x80]),
            None,
            "indefinite length is not DER"
        );
        assert_eq!(der_next(&[0x04]), None);
        assert_eq!(rsa_pss_private_key(b"not DER"), None);
    }

    #[test]
    fn a_jwk_keeps_its_kid_and_alg_and_a_set_gives_its_private_key() {
        let mut jwk: Value = serde_json::from_str(TESTKIT_RSA_JWK).expect("a JWK");
        jwk["alg"] = json!("PS256");
        let key = SigningKey::parse(&jwk.to_string()).expect("a key");
        assert_eq!(key.kid(), Some("rsa-1"));
        assert_eq!(key.declared_algorithm(), Some(SigningAlgorithm::PS256));
        assert_eq!(key.default_algorithm(), SigningAlgorithm::PS256);
        assert!(!format!("{key:?}").contains(jwk["d"].as_str().expect("d")));
        let set = json!({"keys": [{"kty": "EC", "crv": "P-256", "x": "AA", "y": "AA"}, jwk]});
        let from_set = SigningKey::parse(&set.to_string()).expect("one private key");
        assert_eq!(from_set.thumbprint(), key.thumbprint());
        assert_eq!(
            SigningKey::parse(r#"{"keys":[]}"#).err(),
            Some(KeyProblem::PublicOnly)
        );
    }

    #[test]
    fn every_problem_is_described_without_the_key() {
        for problem in [
            KeyProblem::NotAKey,
            KeyProblem::Encrypted,
            KeyProblem::PublicOnly,
            KeyProblem::RsaTooShort,
            KeyProblem::PssNotSha256,
            KeyProblem::RsaJwkWithoutPrimes,
            KeyProblem::NotForSigning,
            KeyProblem::UnsupportedAlg,
            KeyProblem::SeveralPrivateKeys,
        ] {
            let text = problem.describe("not a key");
            assert!(!text.is_empty() && !text.contains('\n'), "{problem:?}");
        }
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
