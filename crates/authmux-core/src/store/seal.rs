//! Encryption at rest: AES-256-GCM, the key name as additional
//! authenticated data.
//!
//! A stored value is a 5-byte header, `AMX`, a format version and a mode,
//! followed by either the plaintext (mode 0) or a random 96-bit nonce and
//! the ciphertext with its tag (mode 1).

use std::fmt;
use std::sync::Arc;

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::{hkdf, hmac};
use base64::Engine as _;
use secrecy::zeroize::Zeroizing;
use secrecy::{ExposeSecret as _, SecretString};

use super::{StoreError, StoreErrorKind};

const MAGIC: &[u8; 3] = b"AMX";
const VERSION: u8 = 1;
const PLAINTEXT: u8 = 0;
const AES_256_GCM_MODE: u8 = 1;
const HEADER_LEN: usize = 5;

/// The 32-byte AES-256-GCM key that seals stored tokens. `Debug` never
/// shows it.
#[derive(Clone)]
pub struct EncryptionKey(Arc<LessSafeKey>, Arc<hmac::Key>);

impl fmt::Debug for EncryptionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("EncryptionKey([redacted])")
    }
}

impl EncryptionKey {
    /// A key from its 32 bytes.
    pub fn from_bytes(bytes: &[u8; 32]) -> Self {
        let aead = match UnboundKey::new(&AES_256_GCM, bytes) {
            Ok(key) => LessSafeKey::new(key),
            // AES-256 takes any 32 bytes.
            Err(_) => unreachable!("a 32-byte AES-256 key is always valid"),
        };
        // A key of its own for credential fingerprints (HKDF-SHA256), so the
        // sealing key is never used for two purposes.
        let mut mac_key = Zeroizing::new([0u8; 32]);
        let derived = hkdf::Salt::new(hkdf::HKDF_SHA256, b"authmux")
            .extract(bytes)
            .expand(&[FINGERPRINT_INFO], hkdf::HKDF_SHA256)
            .and_then(|okm| okm.fill(mac_key.as_mut_slice()));
        if derived.is_err() {
            unreachable!("HKDF-SHA256 always yields 32 bytes");
        }
        Self(
            Arc::new(aead),
            Arc::new(hmac::Key::new(hmac::HMAC_SHA256, mac_key.as_slice())),
        )
    }

    /// An HMAC-SHA256 of `secret` under this key's fingerprint key, with
    /// `salt` (the token's identity) first.
    pub(super) fn fingerprint(&self, salt: &[u8], secret: &SecretString) -> [u8; 32] {
        let mut context = hmac::Context::with_key(&self.1);
        context.update(salt);
        context.update(b"\0");
        context.update(secret.expose_secret().as_bytes());
        let mut out = [0u8; 32];
        out.copy_from_slice(context.sign().as_ref());
        out
    }

    /// A key from 32 bytes in standard base64 (`openssl rand -base64 32`).
    /// `field` names the config key in errors, which never quote the value.
    pub fn from_base64(encoded: &SecretString, field: &str) -> Result<Self, StoreError> {
        let bytes = Zeroizing::new(
            base64::engine::general_purpose::STANDARD
                .decode(encoded.expose_secret().trim())
                .map_err(|_| {
                    StoreError::new(
                        StoreErrorKind::Config,
                        format!(
                            "{field}: not base64; expected 32 random bytes in base64, \
                             such as the output of `openssl rand -base64 32`"
                        ),
                    )
                })?,
        );
        let bytes: &[u8; 32] = bytes.as_slice().try_into().map_err(|_| {
            StoreError::new(
                StoreErrorKind::Config,
                format!(
                    "{field}: expected 32 bytes in base64, found {} bytes",
                    bytes.len()
                ),
            )
        })?;
        Ok(Self::from_bytes(bytes))
    }
}

const FINGERPRINT_INFO: &[u8] = b"authmux credential fingerprint v1";

/// A memory-hard fingerprint of `secret` (Argon2id, 19 MiB, 2 passes, the
/// OWASP baseline), salted with `salt`, for stores without an encryption
/// key: testing one guess of the secret against a key name costs as much.
pub(super) fn slow_fingerprint(salt: &[u8], secret: &SecretString) -> [u8; 32] {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, salt);
    let mut out = [0u8; 32];
    let argon = argon2::Argon2::new(
        argon2::Algorithm::Argon2id,
        argon2::Version::V0x13,
        argon2::Params::default(),
    );
    if argon
        .hash_password_into(secret.expose_secret().as_bytes(), digest.as_ref(), &mut out)
        .is_err()
    {
        // Only too long a secret or salt fails; a plain digest then still
        // keeps credentials apart.
        let mut context = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
        context.update(digest.as_ref());
        context.update(secret.expose_secret().as_bytes());
        out.copy_from_slice(context.finish().as_ref());
    }
    out
}

/// The stored form of `plaintext` under `name`.
pub(super) fn seal(
    key: Option<&EncryptionKey>,
    name: &str,
    plaintext: &[u8],
) -> Result<Vec<u8>, StoreError> {
    let Some(key) = key else {
        let mut value = Vec::with_capacity(HEADER_LEN + plaintext.len());
        value.extend_from_slice(MAGIC);
        value.extend_from_slice(&[VERSION, PLAINTEXT]);
        value.extend_from_slice(plaintext);
        return Ok(value);
    };
    // rand's thread-local CSPRNG (ChaCha, seeded from the OS): a random
    // 96-bit nonce per value, as many per key as tokens are ever stored.
    let nonce: [u8; NONCE_LEN] = rand::random();
    let mut sealed = Vec::with_capacity(plaintext.len() + AES_256_GCM.tag_len());
    sealed.extend_from_slice(plaintext);
    key.0
        .seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(name.as_bytes()),
            &mut sealed,
        )
        .map_err(|_| StoreError::unavailable("cannot seal the token"))?;
    let mut value = Vec::with_capacity(HEADER_LEN + NONCE_LEN + sealed.len());
    value.extend_from_slice(MAGIC);
    value.extend_from_slice(&[VERSION, AES_256_GCM_MODE]);
    value.extend_from_slice(&nonce);
    value.extend_from_slice(&sealed);
    Ok(value)
}

/// The plaintext of a value stored under `name`, or why it is unusable.
/// With a key, only values sealed with that key under that name open; a
/// plaintext value is refused too, so nobody with write access to the store
/// can plant a token.
pub(super) fn open(
    key: Option<&EncryptionKey>,
    name: &str,
    value: &[u8],
) -> Result<Zeroizing<Vec<u8>>, &'static str> {
    let (header, body) = value
        .split_at_checked(HEADER_LEN)
        .ok_or("the stored value is too short")?;
    if &header[..3] != MAGIC || header[3] != VERSION {
        return Err("the stored value is not in a known format");
    }
    match (header[4], key) {
        (PLAINTEXT, None) => Ok(Zeroizing::new(body.to_vec())),
        (PLAINTEXT, Some(_)) => Err("the stored value is not encrypted, but a key is configured"),
        (AES_256_GCM_MODE, None) => Err("the stored value is encrypted, but no key is configured"),
        (AES_256_GCM_MODE, Some(key)) => {
            let (nonce, sealed) = body
                .split_at_checked(NONCE_LEN)
                .ok_or("the stored value is too short")?;
            let nonce = Nonce::try_assume_unique_for_key(nonce)
                .map_err(|_| "the stored value is too short")?;
            let mut buffer = Zeroizing::new(sealed.to_vec());
            let plaintext = key
                .0
                .open_in_place(nonce, Aad::from(name.as_bytes()), &mut buffer)
                .map_err(|_| {
                    "the stored value does not decrypt: another key, another entry's value, or tampered with"
                })?;
            let length = plaintext.len();
            buffer.truncate(length);
            Ok(buffer)
        }
        _ => Err("the stored value is not in a known format"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> EncryptionKey {
        EncryptionKey::from_bytes(&[byte; 32])
    }

    #[test]
    fn sealed_values_open_only_with_their_key_and_name() {
        let plaintext = b"{\"access_token\":\"secret-token\"}";
        let sealed = seal(Some(&key(1)), "a:{x}:token", plaintext).expect("sealed");
        assert!(
            !sealed.windows(12).any(|window| window == b"secret-token"),
            "the token is not readable at rest"
        );
        assert_eq!(
            open(Some(&key(1)), "a:{x}:token", &sealed)
                .expect("opens")
                .as_slice(),
            plaintext
        );
        assert!(
            open(Some(&key(2)), "a:{x}:token", &sealed).is_err(),
            "wrong key"
        );
        assert!(
            open(Some(&key(1)), "a:{y}:token", &sealed).is_err(),
            "swapped entry"
        );
        assert!(open(None, "a:{x}:token", &sealed).is_err(), "no key");
        for index in HEADER_LEN..sealed.len() {
            let mut tampered = sealed.clone();
            tampered[index] ^= 1;
            assert!(
                open(Some(&key(1)), "a:{x}:token", &tampered).is_err(),
                "byte {index}"
            );
        }
        assert!(open(Some(&key(1)), "a:{x}:token", &sealed[..HEADER_LEN + 3]).is_err());
        assert!(open(Some(&key(1)), "a:{x}:token", b"").is_err());
        assert_ne!(
            seal(Some(&key(1)), "a:{x}:token", plaintext).expect("sealed"),
            sealed,
            "every seal has its own nonce"
        );
    }

    #[test]
    fn plaintext_values_are_refused_when_a_key_is_configured() {
        let plain = seal(None, "k", b"{}").expect("plain");
        assert_eq!(open(None, "k", &plain).expect("opens").as_slice(), b"{}");
        assert!(open(Some(&key(1)), "k", &plain).is_err());
    }

    #[test]
    fn base64_keys_are_checked_and_never_quoted() {
        let secret = |text: &str| SecretString::from(text.to_owned());
        let encoded = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
        assert!(EncryptionKey::from_base64(&secret(&format!("{encoded}\n")), "k").is_ok());
        let short = base64::engine::general_purpose::STANDARD.encode([7u8; 16]);
        let error = EncryptionKey::from_base64(&secret(&short), "store.encryption_key")
            .expect_err("16 bytes");
        assert_eq!(
            error.to_string(),
            "store.encryption_key: expected 32 bytes in base64, found 16 bytes"
        );
        let error =
            EncryptionKey::from_base64(&secret("not base64 at all!"), "k").expect_err("not base64");
        assert!(!error.to_string().contains("not base64 at all"), "{error}");
        assert_eq!(format!("{:?}", key(9)), "EncryptionKey([redacted])");
    }
}
