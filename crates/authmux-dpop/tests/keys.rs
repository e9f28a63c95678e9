//! Where keys come from, their thumbprints, the `dpop` setting, and what
//! `Debug` and errors may show.

use std::path::{Path, PathBuf};

use authmux_core::ErrorKind;
use authmux_dpop::{DpopConfig, DpopKey, jwk_thumbprint};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use figment::Figment;
use figment::providers::{Format as _, Toml};
use p256::SecretKey;
use p256::elliptic_curve::rand_core::OsRng;
use p256::pkcs8::{EncodePrivateKey as _, LineEnding};
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

/// A scratch file that is removed when dropped.
struct TempFile(PathBuf);

impl TempFile {
    fn new(name: &str, contents: &[u8]) -> Self {
        let path = std::env::temp_dir().join(format!("authmux-dpop-{}-{name}", std::process::id()));
        std::fs::write(&path, contents).expect("write the test file");
        Self(path)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The public JWK that `secret` should give, from p256's own encoding.
fn expected_public_jwk(secret: &SecretKey) -> Value {
    let jwk: Value =
        serde_json::from_str(&secret.public_key().to_jwk_string()).expect("p256 public JWK");
    json!({"kty": "EC", "crv": "P-256", "x": jwk["x"], "y": jwk["y"]})
}

fn d_of(secret: &SecretKey) -> String {
    URL_SAFE_NO_PAD.encode(secret.to_bytes())
}

fn sha256_b64(text: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(text.as_bytes()))
}

/// The base64 lines between a PEM document's boundaries.
fn pem_body_lines(pem: &str) -> Vec<&str> {
    pem.lines()
        .filter(|line| !line.starts_with("-----") && !line.trim().is_empty())
        .collect()
}

#[test]
fn generated_keys_are_distinct_and_publish_four_members() {
    let first = DpopKey::generate();
    let second = DpopKey::generate();
    assert_ne!(first.thumbprint(), second.thumbprint());
    let jwk = first.public_jwk();
    let object = jwk.as_object().expect("object");
    assert_eq!(object.len(), 4, "{jwk}");
    assert_eq!(object["kty"], "EC");
    assert_eq!(object["crv"], "P-256");
    for coordinate in ["x", "y"] {
        let encoded = object[coordinate].as_str().expect("string");
        assert_eq!(
            URL_SAFE_NO_PAD.decode(encoded).expect("base64url").len(),
            32
        );
    }
    assert!(object.get("d").is_none());
}

#[test]
fn pkcs8_and_sec1_pem_files_load() {
    let secret = SecretKey::random(&mut OsRng);
    let pkcs8 = secret.to_pkcs8_pem(LineEnding::LF).expect("PKCS#8 PEM");
    let sec1 = secret.to_sec1_pem(LineEnding::CRLF).expect("SEC1 PEM");
    assert!(pkcs8.starts_with("-----BEGIN PRIVATE KEY-----"));
    assert!(sec1.starts_with("-----BEGIN EC PRIVATE KEY-----"));
    // What `openssl ecparam -genkey` writes: the curve's parameters first.
    let with_parameters = format!(
        "-----BEGIN EC PARAMETERS-----\nBggqhkjOPQMBBw==\n-----END EC PARAMETERS-----\n{}",
        sec1.as_str()
    );

    let expected = expected_public_jwk(&secret);
    for (name, text) in [
        ("pkcs8.pem", pkcs8.as_str()),
        ("sec1.pem", sec1.as_str()),
        ("params.pem", with_parameters.as_str()),
    ] {
        let file = TempFile::new(name, text.as_bytes());
        let key = DpopKey::from_file(file.path()).expect(name);
        assert_eq!(key.public_jwk(), expected, "{name}");
        assert_eq!(
            DpopKey::from_pem(text).expect(name).thumbprint(),
            key.thumbprint()
        );
    }
}

#[test]
fn jwk_files_load() {
    let secret = SecretKey::random(&mut OsRng);
    let mut jwk: Value = serde_json::from_str(&secret.to_jwk_string()).expect("p256 JWK");
    assert_eq!(jwk["d"], d_of(&secret).as_str());
    jwk["kid"] = json!("signing-1");
    jwk["use"] = json!("sig");
    let text = format!("\n{jwk:#}\n");
    let file = TempFile::new("key.jwk", text.as_bytes());
    let key = DpopKey::from_file(file.path()).expect("JWK file");
    assert_eq!(key.public_jwk(), expected_public_jwk(&secret));
    assert_eq!(
        DpopKey::from_jwk(&text).expect("JWK").thumbprint(),
        key.thumbprint()
    );
}

#[test]
fn a_jwk_whose_public_part_does_not_match_d_is_refused() {
    let secret = SecretKey::random(&mut OsRng);
    let other = DpopKey::generate().public_jwk();
    let jwk = json!({
        "kty": "EC", "crv": "P-256", "x": other["x"], "y": other["y"], "d": d_of(&secret)
    });
    let error = DpopKey::from_jwk(&jwk.to_string()).expect_err("mismatch");
    assert_eq!(error.kind(), ErrorKind::Config);
    assert_eq!(
        error.to_string(),
        "dpop key: not a P-256 private key in JWK form"
    );
    assert!(!error.to_string().contains(&d_of(&secret)));
}

#[test]
fn a_bad_key_file_is_named_but_never_quoted() {
    let secret = SecretKey::random(&mut OsRng);
    let d = d_of(&secret);
    let pem = secret.to_pkcs8_pem(LineEnding::LF).expect("PEM");
    let body = pem_body_lines(&pem).join("");
    // A PEM block whose base64 body was cut in half.
    let truncated = format!(
        "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
        &body[..body.len() / 2]
    );
    let cases: [(&str, String); 6] = [
        ("text.pem", format!("hunter2 {d}")),
        ("truncated.pem", truncated),
        (
            "p384.jwk",
            json!({"kty": "EC", "crv": "P-384", "x": "eA", "y": "eQ", "d": d}).to_string(),
        ),
        ("broken.jwk", format!("{{\"kty\":\"EC\",\"d\":\"{d}\"")),
        (
            "rsa.jwk",
            json!({"kty": "RSA", "n": "bg", "e": "AQAB", "d": d}).to_string(),
        ),
        ("empty.pem", String::new()),
    ];
    for (name, contents) in &cases {
        let file = TempFile::new(name, contents.as_bytes());
        let error = DpopKey::from_file(file.path()).expect_err(name);
        assert_eq!(error.kind(), ErrorKind::Config, "{name}");
        let message = error.to_string();
        assert_eq!(
            message,
            format!(
                "key_file: {}: not a P-256 private key in PEM or JWK form",
                file.path().display()
            )
        );
        assert!(!message.contains(&d), "{name}: {message}");
        assert!(!message.contains("hunter2"), "{name}: {message}");
        assert!(!format!("{error:?}").contains(&d), "{name}");
    }

    let binary = TempFile::new("binary.der", &[0x30, 0x81, 0xff, 0xfe, 0x00]);
    let error = DpopKey::from_file(binary.path()).expect_err("binary");
    assert!(
        error
            .to_string()
            .ends_with(": not a P-256 private key in PEM or JWK form")
    );
}

#[test]
fn public_and_encrypted_keys_get_their_own_messages() {
    let public = TempFile::new(
        "public.jwk",
        DpopKey::generate().public_jwk().to_string().as_bytes(),
    );
    let error = DpopKey::from_file(public.path()).expect_err("public");
    assert_eq!(
        error.to_string(),
        format!(
            "key_file: {}: a public key: the private key is needed to sign proofs",
            public.path().display()
        )
    );
    let encrypted = TempFile::new(
        "encrypted.pem",
        b"-----BEGIN ENCRYPTED PRIVATE KEY-----\nTUlJQg==\n-----END ENCRYPTED PRIVATE KEY-----\n",
    );
    let error = DpopKey::from_file(encrypted.path()).expect_err("encrypted");
    assert!(
        error
            .to_string()
            .ends_with(": an encrypted private key, which is not supported: decrypt it first"),
        "{error}"
    );
    assert!(!error.to_string().contains("TUlJQg"));
}

#[test]
fn unreadable_key_files_are_named() {
    let missing = std::env::temp_dir().join("authmux-dpop-surely-missing/key.pem");
    let error = DpopKey::from_file(&missing).expect_err("missing");
    assert_eq!(error.kind(), ErrorKind::Config);
    assert_eq!(
        error.to_string(),
        format!("key_file: {}: cannot read: not found", missing.display())
    );

    let directory = std::env::temp_dir();
    let error = DpopKey::from_file(&directory).expect_err("a directory");
    assert!(
        error
            .to_string()
            .starts_with(&format!("key_file: {}: cannot read: ", directory.display())),
        "{error}"
    );

    let large = TempFile::new("large.pem", &vec![b'A'; 64 * 1024 + 1]);
    let error = DpopKey::from_file(large.path()).expect_err("too large");
    assert_eq!(
        error.to_string(),
        format!(
            "key_file: {}: too large for a key file (over 64 KiB)",
            large.path().display()
        )
    );
}

#[test]
fn the_rfc_7638_example_thumbprint() {
    // RFC 7638 §3.1, with the optional members the example carries.
    let jwk = json!({
        "kty": "RSA",
        "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw",
        "e": "AQAB",
        "alg": "RS256",
        "kid": "2011-04-29"
    });
    assert_eq!(
        jwk_thumbprint(&jwk).expect("thumbprint"),
        "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
    );
}

#[test]
fn an_ec_thumbprint_is_the_hash_of_the_canonical_jwk() {
    let key = DpopKey::generate();
    let jwk = key.public_jwk();
    let canonical = format!(
        r#"{{"crv":"P-256","kty":"EC","x":"{}","y":"{}"}}"#,
        jwk["x"].as_str().expect("x"),
        jwk["y"].as_str().expect("y")
    );
    let by_hand = sha256_b64(&canonical);
    assert_eq!(key.thumbprint(), by_hand);
    assert_eq!(authmux_core::DpopProver::thumbprint(&key), by_hand);
    assert_eq!(jwk_thumbprint(&jwk).expect("thumbprint"), by_hand);
    // A private JWK has the same thumbprint: `d` is not hashed.
    let secret = SecretKey::random(&mut OsRng);
    let private: Value = serde_json::from_str(&secret.to_jwk_string()).expect("JWK");
    assert_eq!(
        jwk_thumbprint(&private).expect("thumbprint"),
        jwk_thumbprint(&expected_public_jwk(&secret)).expect("thumbprint")
    );
}

#[test]
fn debug_shows_the_thumbprint_and_never_the_private_key() {
    let secret = SecretKey::random(&mut OsRng);
    let pem = secret.to_pkcs8_pem(LineEnding::LF).expect("PEM");
    let key = DpopKey::from_pem(&pem).expect("key");
    let debug = format!("{key:?}");
    let pretty = format!("{key:#?}");
    assert!(debug.contains(key.thumbprint()), "{debug}");
    for shown in [&debug, &pretty] {
        assert!(!shown.contains(&d_of(&secret)), "{shown}");
        for line in pem_body_lines(&pem) {
            assert!(!shown.contains(line), "{shown}");
        }
        // Nor the raw scalar in any integer or hex form.
        let hex: String = secret
            .to_bytes()
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect();
        assert!(!shown.to_lowercase().contains(&hex));
        assert!(!shown.contains(&format!("{:?}", secret.to_bytes().as_slice())));
    }
    assert_eq!(
        debug,
        format!("DpopKey {{ thumbprint: {:?}, .. }}", key.thumbprint())
    );
}

#[derive(Debug, Deserialize)]
struct Client {
    #[serde(default)]
    dpop: DpopConfig,
}

/// The setting as read from a TOML config, or figment's error message.
fn parse(toml: &str) -> Result<DpopConfig, String> {
    Figment::from(Toml::string(toml))
        .extract::<Client>()
        .map(|client| client.dpop)
        .map_err(|error| error.to_string())
}

#[test]
fn the_dpop_setting_takes_true_false_or_a_key_file() {
    assert_eq!(parse("").expect("absent"), DpopConfig::Disabled);
    let disabled = parse("dpop = false").expect("false");
    assert_eq!(disabled, DpopConfig::Disabled);
    assert!(!disabled.is_enabled());
    assert!(disabled.key().expect("no key").is_none());

    let generate = parse("dpop = true").expect("true");
    assert_eq!(generate, DpopConfig::Generate);
    assert!(generate.is_enabled());
    let first = generate.key().expect("key").expect("generated");
    let second = generate.key().expect("key").expect("generated");
    assert_ne!(first.thumbprint(), second.thumbprint());

    let secret = SecretKey::random(&mut OsRng);
    let pem = secret.to_pkcs8_pem(LineEnding::LF).expect("PEM");
    let file = TempFile::new("config.pem", pem.as_bytes());
    let config = parse(&format!("dpop = {{ key_file = {:?} }}", file.path())).expect("key_file");
    assert_eq!(config, DpopConfig::KeyFile(file.path().to_owned()));
    let key = config.key().expect("key").expect("from the file");
    assert_eq!(key.public_jwk(), expected_public_jwk(&secret));

    // The same forms from JSON.
    let json: DpopConfig = serde_json::from_str("true").expect("JSON true");
    assert_eq!(json, DpopConfig::Generate);
    let json: DpopConfig =
        serde_json::from_value(json!({"key_file": "/k.pem"})).expect("JSON key_file");
    assert_eq!(json, DpopConfig::KeyFile("/k.pem".into()));
}

#[test]
fn a_bad_dpop_setting_says_what_is_expected() {
    for bad in [
        "dpop = \"yes\"",
        "dpop = 1",
        "dpop = { file = \"/k.pem\" }",
        "dpop = { key_file = \"/k.pem\", algorithm = \"ES384\" }",
        "dpop = [true]",
    ] {
        let error = parse(bad).expect_err(bad);
        assert!(
            error.contains("true, false or { key_file = \"path\" }"),
            "{bad}: {error}"
        );
    }
}

#[test]
fn a_key_file_setting_names_the_file_and_never_its_contents() {
    let file = TempFile::new("config-bad.pem", b"not-a-key s3cr3t-material");
    let config = DpopConfig::KeyFile(file.path().to_owned());
    let debug = format!("{config:?}");
    assert!(
        debug.contains(&file.path().display().to_string()),
        "{debug}"
    );
    let error = config.key().expect_err("not a key");
    let message = error.to_string();
    assert!(
        message.starts_with(&format!("key_file: {}: ", file.path().display())),
        "{message}"
    );
    for shown in [&debug, &message, &format!("{error:?}")] {
        assert!(!shown.contains("s3cr3t"), "{shown}");
    }

    let secret = SecretKey::random(&mut OsRng);
    let pem = secret.to_pkcs8_pem(LineEnding::LF).expect("PEM");
    let good = TempFile::new("config-good.pem", pem.as_bytes());
    let config = DpopConfig::KeyFile(good.path().to_owned());
    let key = config.key().expect("key").expect("loaded");
    for shown in [format!("{config:?}"), format!("{key:?}")] {
        assert!(!shown.contains(&d_of(&secret)), "{shown}");
        for line in pem_body_lines(&pem) {
            assert!(!shown.contains(line), "{shown}");
        }
    }
}

#[test]
fn only_a_key_file_is_shared_with_other_processes() {
    let secret = SecretKey::random(&mut OsRng);
    let pem = secret.to_pkcs8_pem(LineEnding::LF).expect("PEM");
    let file = TempFile::new("shared.pem", pem.as_bytes());
    let from_file = DpopConfig::KeyFile(file.path().to_owned())
        .dpop(false)
        .expect("key file")
        .expect("enabled");
    assert!(
        from_file.is_key_shared(),
        "a key file is the same key everywhere"
    );
    let generated = DpopConfig::Generate
        .dpop(false)
        .expect("generated")
        .expect("enabled");
    assert!(
        !generated.is_key_shared(),
        "a generated key makes tokens no other process can use"
    );
}
