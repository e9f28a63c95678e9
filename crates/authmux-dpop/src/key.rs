//! ES256 key pairs: generated in memory or read from PEM or JWK.

use std::fmt;
use std::io::Read as _;
use std::path::Path;

use authmux_core::Error;
use authmux_core::signing::{KeyProblem, SigningAlgorithm, SigningKey};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use secrecy::zeroize::Zeroizing;
use serde_json::Value;

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
    /// A P-256 key, parsed and signing through aws-lc-rs.
    key: SigningKey,
    /// The base64url JWS header. It depends on the public key alone, so it
    /// is the same in every proof and is encoded once.
    header: String,
}

impl DpopKey {
    /// A new random key, kept in memory only: it dies with the process, and
    /// so do the tokens bound to it.
    ///
    /// # Panics
    ///
    /// If the operating system's random number generator fails.
    pub fn generate() -> Self {
        match SigningKey::generate_p256() {
            Ok(key) => Self::from_key(key),
            Err(error) => panic!("cannot generate a DPoP key: {error}"),
        }
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
        p256(SigningKey::parse(text)).map_err(|problem| fail(describe(problem, NOT_A_KEY)))
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
        p256(SigningKey::from_pem(pem)).map_err(|problem| {
            Error::config(format!(
                "dpop key: {}",
                describe(problem, "not a P-256 private key in PEM form")
            ))
        })
    }

    /// Reads a P-256 private key from a JSON Web Key:
    /// `{"kty":"EC","crv":"P-256","x":"…","y":"…","d":"…"}`. `x` and `y`
    /// must be the public key of `d`. `kid` is ignored; an `alg` must be
    /// ES256, a `use` `sig`, and `key_ops` must hold `sign`.
    ///
    /// # Errors
    ///
    /// A [`Config`](authmux_core::ErrorKind::Config) error that never
    /// quotes `jwk`.
    pub fn from_jwk(jwk: &str) -> Result<Self, Error> {
        p256(SigningKey::from_jwk(jwk)).map_err(|problem| {
            Error::config(format!(
                "dpop key: {}",
                describe(problem, "not a P-256 private key in JWK form")
            ))
        })
    }

    fn from_key(key: SigningKey) -> Self {
        // base64url needs no JSON escaping, so the header can be written out.
        let jwk = key.public_jwk();
        let text = |member: &str| jwk[member].as_str().unwrap_or_default().to_owned();
        let (x, y) = (text("x"), text("y"));
        let header_json = format!(
            r#"{{"typ":"{PROOF_TYPE}","alg":"{ALGORITHM}","jwk":{{"kty":"EC","crv":"P-256","x":"{x}","y":"{y}"}}}}"#
        );
        Self {
            key,
            header: URL_SAFE_NO_PAD.encode(header_json),
        }
    }

    /// The public key as a JWK with exactly `kty`, `crv`, `x` and `y`: the
    /// `jwk` of every proof's header.
    pub fn public_jwk(&self) -> Value {
        self.key.public_jwk().clone()
    }

    /// The RFC 7638 SHA-256 thumbprint of [`public_jwk`](Self::public_jwk),
    /// base64url: the `jkt` a server binds tokens to.
    pub fn thumbprint(&self) -> &str {
        self.key.thumbprint()
    }

    /// The base64url JWS header of this key's proofs.
    pub(crate) fn encoded_header(&self) -> &str {
        &self.header
    }

    /// The ES256 signature of `input`: `r || s`, 32 bytes each.
    pub(crate) fn sign(&self, input: &[u8]) -> Result<Vec<u8>, Error> {
        self.key
            .sign(SigningAlgorithm::ES256, input)
            .map_err(|_| Error::config("dpop key: signing failed (no system randomness)"))
    }
}

impl fmt::Debug for DpopKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DpopKey")
            .field("thumbprint", &self.thumbprint())
            .finish_non_exhaustive()
    }
}

const NOT_A_KEY: &str = "not a P-256 private key in PEM or JWK form";

/// Only a P-256 key makes ES256 proofs.
fn p256(parsed: Result<SigningKey, KeyProblem>) -> Result<DpopKey, KeyProblem> {
    match parsed? {
        key if key.key_type() == "EC" => Ok(DpopKey::from_key(key)),
        _ => Err(KeyProblem::NotAKey),
    }
}

fn describe(problem: KeyProblem, not_a_key: &'static str) -> &'static str {
    match problem {
        KeyProblem::PublicOnly => "a public key: the private key is needed to sign proofs",
        // Whatever is wrong with an RSA key, proofs need a P-256 one.
        KeyProblem::RsaTooShort | KeyProblem::PssNotSha256 | KeyProblem::RsaJwkWithoutPrimes => {
            not_a_key
        }
        other => other.describe(not_a_key),
    }
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
