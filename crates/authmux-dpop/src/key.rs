//! ES256 key pairs: generated in memory or read from PEM or JWK.

use std::fmt;
use std::io::Read as _;
use std::path::Path;

use authmux_core::Error;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use std::sync::Arc;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _};
use p256::SecretKey;
use p256::elliptic_curve::rand_core::OsRng;
use p256::elliptic_curve::sec1::ToEncodedPoint as _;
use p256::elliptic_curve::zeroize::Zeroizing;
use p256::pkcs8::DecodePrivateKey as _;
use serde_json::Value;

use crate::thumbprint::canonical_thumbprint;
use crate::{ALGORITHM, PROOF_TYPE};

/// The largest key file read. A P-256 key in any of the accepted forms is
/// a few hundred bytes; the cap keeps a wrong path (a log, a device) from
/// being read whole into memory.
const MAX_KEY_FILE_BYTES: usize = 64 * 1024;

/// A DPoP key pair: ECDSA on P-256, signing proofs with ES256.
///
/// It implements [`authmux_core::DpopProver`]: see the
/// [crate documentation](crate) for the proofs it makes. Share one key
/// behind an [`Arc`](std::sync::Arc) by every client that should present
/// tokens bound to it.
///
/// `Debug` shows the key's thumbprint and never the private key.
#[derive(Clone)]
pub struct DpopKey {
    /// The signer, built once from the private scalar and public point.
    signer: Arc<EcdsaKeyPair>,
    /// The public key's coordinates, base64url.
    x: String,
    y: String,
    /// The base64url JWS header. It depends on the public key alone, so it
    /// is the same in every proof and is encoded once.
    header: String,
    thumbprint: String,
}

impl DpopKey {
    /// A new random key, kept in memory only: it dies with the process, and
    /// so do the tokens bound to it.
    ///
    /// # Panics
    ///
    /// If the operating system's random number generator fails.
    pub fn generate() -> Self {
        Self::from_secret(&SecretKey::random(&mut OsRng))
    }

    /// Reads a P-256 private key from a file, in any of the forms
    /// [`from_pem`](Self::from_pem) and [`from_jwk`](Self::from_jwk) accept,
    /// told apart by content: a JSON object is a JWK, anything else PEM.
    ///
    /// # Errors
    ///
    /// A [`Config`](authmux_core::ErrorKind::Config) error that names the
    /// file and says what is wrong, such as
    /// `key_file: /etc/k.pem: not a P-256 private key in PEM or JWK form`
    /// or `key_file: /etc/k.pem: cannot read: not found`. It never quotes
    /// the file.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, Error> {
        let path = path.as_ref();
        let fail = |why: &str| Error::config(format!("key_file: {}: {why}", path.display()));
        let bytes = read_capped(path).map_err(|error| {
            let why = match error.kind() {
                std::io::ErrorKind::NotFound => "not found".to_owned(),
                kind => kind.to_string(),
            };
            fail(&format!("cannot read: {why}"))
        })?;
        if bytes.len() > MAX_KEY_FILE_BYTES {
            return Err(fail("too large for a key file (over 64 KiB)"));
        }
        let text = std::str::from_utf8(&bytes).map_err(|_| fail(NOT_A_KEY))?;
        let parsed = if looks_like_jwk(text) {
            parse_jwk(text)
        } else {
            parse_pem(text)
        };
        parsed
            .map(|secret| Self::from_secret(&secret))
            .map_err(|problem| fail(problem.describe(NOT_A_KEY)))
    }

    /// Reads a P-256 private key in PEM form: PKCS#8 (`PRIVATE KEY`) or
    /// SEC1 (`EC PRIVATE KEY`). Text around the PEM block, such as the
    /// `EC PARAMETERS` block that `openssl ecparam -genkey` writes first, is
    /// skipped. Encrypted keys are not supported.
    ///
    /// # Errors
    ///
    /// A [`Config`](authmux_core::ErrorKind::Config) error that never
    /// quotes `pem`.
    pub fn from_pem(pem: &str) -> Result<Self, Error> {
        parse_pem(pem)
            .map(|secret| Self::from_secret(&secret))
            .map_err(|problem| {
                Error::config(format!(
                    "dpop key: {}",
                    problem.describe("not a P-256 private key in PEM form")
                ))
            })
    }

    /// Reads a P-256 private key from a JSON Web Key:
    /// `{"kty":"EC","crv":"P-256","x":"…","y":"…","d":"…"}`. `x` and `y`
    /// must be the public key of `d`; other members such as `kid`, `alg` or
    /// `use` are ignored.
    ///
    /// # Errors
    ///
    /// A [`Config`](authmux_core::ErrorKind::Config) error that never
    /// quotes `jwk`.
    pub fn from_jwk(jwk: &str) -> Result<Self, Error> {
        parse_jwk(jwk)
            .map(|secret| Self::from_secret(&secret))
            .map_err(|problem| {
                Error::config(format!(
                    "dpop key: {}",
                    problem.describe("not a P-256 private key in JWK form")
                ))
            })
    }

    fn from_secret(secret: &SecretKey) -> Self {
        let point = secret.public_key().to_encoded_point(false);
        let scalar = Zeroizing::new(secret.to_bytes());
        // p256 has already checked the scalar and derived the point, so
        // aws-lc accepting them is an invariant, not an input check.
        let signer = match EcdsaKeyPair::from_private_key_and_public_key(
            &ECDSA_P256_SHA256_FIXED_SIGNING,
            scalar.as_slice(),
            point.as_bytes(),
        ) {
            Ok(signer) => Arc::new(signer),
            Err(_) => unreachable!("a valid P-256 key pair is accepted by aws-lc"),
        };
        debug_assert_eq!(signer.public_key().as_ref(), point.as_bytes());
        // An uncompressed point always has both coordinates.
        let (x, y) = match (point.x(), point.y()) {
            (Some(x), Some(y)) => (URL_SAFE_NO_PAD.encode(x), URL_SAFE_NO_PAD.encode(y)),
            _ => unreachable!("an uncompressed P-256 point has x and y"),
        };
        // base64url needs no JSON escaping, so the header can be written out.
        let header_json = format!(
            r#"{{"typ":"{PROOF_TYPE}","alg":"{ALGORITHM}","jwk":{{"kty":"EC","crv":"P-256","x":"{x}","y":"{y}"}}}}"#
        );
        let header = URL_SAFE_NO_PAD.encode(header_json);
        let thumbprint =
            canonical_thumbprint(&[("crv", "P-256"), ("kty", "EC"), ("x", &x), ("y", &y)]);
        Self {
            signer,
            x,
            y,
            header,
            thumbprint,
        }
    }

    /// The public key as a JWK with exactly `kty`, `crv`, `x` and `y`: the
    /// `jwk` of every proof's header.
    pub fn public_jwk(&self) -> Value {
        serde_json::json!({"kty": "EC", "crv": "P-256", "x": self.x, "y": self.y})
    }

    /// The RFC 7638 SHA-256 thumbprint of [`public_jwk`](Self::public_jwk),
    /// base64url: the `jkt` a server binds tokens to.
    pub fn thumbprint(&self) -> &str {
        &self.thumbprint
    }

    /// The base64url JWS header of this key's proofs.
    pub(crate) fn encoded_header(&self) -> &str {
        &self.header
    }

    /// The ES256 signature of `input`: `r || s`, 32 bytes each.
    pub(crate) fn sign(&self, input: &[u8]) -> Result<[u8; 64], Error> {
        let signature = self
            .signer
            .sign(&SystemRandom::new(), input)
            .map_err(|_| Error::config("dpop key: signing failed (no system randomness)"))?;
        signature
            .as_ref()
            .try_into()
            .map_err(|_| Error::config("dpop key: unexpected signature length"))
    }
}

impl fmt::Debug for DpopKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DpopKey")
            .field("thumbprint", &self.thumbprint)
            .finish_non_exhaustive()
    }
}

const NOT_A_KEY: &str = "not a P-256 private key in PEM or JWK form";

/// Why text is not a usable key, in words that never quote the text.
enum Problem {
    NotAKey,
    Encrypted,
    PublicOnly,
}

impl Problem {
    fn describe(self, not_a_key: &'static str) -> &'static str {
        match self {
            Self::NotAKey => not_a_key,
            Self::Encrypted => "an encrypted private key, which is not supported: decrypt it first",
            Self::PublicOnly => "a public key: the private key is needed to sign proofs",
        }
    }
}

fn looks_like_jwk(text: &str) -> bool {
    text.trim_start_matches('\u{feff}')
        .trim_start()
        .starts_with('{')
}

fn parse_pem(text: &str) -> Result<SecretKey, Problem> {
    if let Some(block) = pem_block(text, "PRIVATE KEY") {
        return SecretKey::from_pkcs8_pem(block).map_err(|_| Problem::NotAKey);
    }
    if let Some(block) = pem_block(text, "EC PRIVATE KEY") {
        return SecretKey::from_sec1_pem(block).map_err(|_| Problem::NotAKey);
    }
    if pem_block(text, "ENCRYPTED PRIVATE KEY").is_some() {
        return Err(Problem::Encrypted);
    }
    if pem_block(text, "PUBLIC KEY").is_some() {
        return Err(Problem::PublicOnly);
    }
    Err(Problem::NotAKey)
}

/// The first complete PEM block labelled `label`, boundaries included.
fn pem_block<'a>(text: &'a str, label: &str) -> Option<&'a str> {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let start = text.find(&begin)?;
    let length = text[start..].find(&end)? + end.len();
    Some(&text[start..start + length])
}

/// The members of a private EC JWK that matter here; others, such as
/// `kid`, `alg` or `use`, are ignored.
#[derive(serde::Deserialize)]
struct PrivateJwk {
    kty: String,
    crv: Option<String>,
    x: Option<String>,
    y: Option<String>,
    #[serde(default, deserialize_with = "secret_member")]
    d: Option<Zeroizing<String>>,
}

fn secret_member<'de, D>(deserializer: D) -> Result<Option<Zeroizing<String>>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    let d: Option<String> = serde::Deserialize::deserialize(deserializer)?;
    Ok(d.map(Zeroizing::new))
}

fn parse_jwk(text: &str) -> Result<SecretKey, Problem> {
    let text = text.trim_start_matches('\u{feff}');
    let jwk: PrivateJwk = serde_json::from_str(text).map_err(|_| Problem::NotAKey)?;
    if jwk.kty != "EC" || jwk.crv.as_deref() != Some("P-256") {
        return Err(Problem::NotAKey);
    }
    let (Some(x), Some(y)) = (&jwk.x, &jwk.y) else {
        return Err(Problem::NotAKey);
    };
    let d = jwk.d.as_ref().ok_or(Problem::PublicOnly)?;
    let decode = |member: &str| URL_SAFE_NO_PAD.decode(member).map_err(|_| Problem::NotAKey);
    let d = Zeroizing::new(decode(d)?);
    // RFC 7518 §6.2.2.1: `d` is exactly as long as the curve's order.
    if d.len() != 32 {
        return Err(Problem::NotAKey);
    }
    // p256 refuses zero and values past the order.
    let secret = SecretKey::from_slice(&d).map_err(|_| Problem::NotAKey)?;
    // The public members must be the key of `d`: a proof's header carries
    // the public key, and a mismatch would make every proof fail.
    let point = secret.public_key().to_encoded_point(false);
    if point.x().map(|x| x.as_slice()) != Some(decode(x)?.as_slice())
        || point.y().map(|y| y.as_slice()) != Some(decode(y)?.as_slice())
    {
        return Err(Problem::NotAKey);
    }
    Ok(secret)
}

/// Reads at most one byte past the cap, into a buffer that is wiped when
/// dropped and never reallocated (so no copy of the key is left behind).
fn read_capped(path: &Path) -> std::io::Result<Zeroizing<Vec<u8>>> {
    let file = std::fs::File::open(path)?;
    let mut bytes = Zeroizing::new(Vec::with_capacity(MAX_KEY_FILE_BYTES + 1));
    file.take(MAX_KEY_FILE_BYTES as u64 + 1)
        .read_to_end(&mut bytes)?;
    Ok(bytes)
}
