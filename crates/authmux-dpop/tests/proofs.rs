//! Every proof is checked independently of the signer (aws-lc): RustCrypto's
//! p256 verifies the ES256 signature against the key in the proof's own
//! header, and a separate JOSE implementation (jsonwebtoken) decodes and
//! verifies it too; then each header field and claim is checked.

use std::collections::{BTreeSet, HashSet};
use std::time::{SystemTime, UNIX_EPOCH};

use authmux_core::DpopProver;
use authmux_core::wire::HeaderValue;
use authmux_dpop::DpopKey;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value, json};
use sha2::{Digest as _, Sha256};
use url::Url;

type Claims = Map<String, Value>;

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs()
}

fn url(text: &str) -> Url {
    Url::parse(text).expect("valid URL")
}

fn b64(segment: &str) -> Vec<u8> {
    URL_SAFE_NO_PAD.decode(segment).expect("base64url")
}

fn validation() -> Validation {
    let mut validation = Validation::new(Algorithm::ES256);
    // A proof has no exp, aud or sub: only its signature is checked here,
    // and the claims one by one below.
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    validation.required_spec_claims.clear();
    validation
}

/// Verifies `proof` with the key embedded in its header, and returns the
/// raw header JSON and the claims.
fn verify(proof: &HeaderValue) -> (Value, Claims) {
    let token = proof.to_str().expect("a proof is ASCII");
    let header = jsonwebtoken::decode_header(token).expect("a JWS header");
    assert_eq!(header.alg, Algorithm::ES256);
    assert_eq!(header.typ.as_deref(), Some("dpop+jwt"));
    let jwk = header
        .jwk
        .as_ref()
        .expect("the header carries the public key");
    let key = DecodingKey::from_jwk(jwk).expect("a usable public key");
    let data = jsonwebtoken::decode::<Claims>(token, &key, &validation())
        .expect("the signature verifies against the embedded key");

    let segments: Vec<&str> = token.split('.').collect();
    assert_eq!(segments.len(), 3, "compact JWS");
    // JWS ES256 is the raw r || s, not DER.
    assert_eq!(b64(segments[2]).len(), 64);
    let raw_header: Value = serde_json::from_slice(&b64(segments[0])).expect("header JSON");

    // A second, unrelated implementation (RustCrypto's p256; the proofs are
    // signed with aws-lc) must accept the signature too.
    use p256::ecdsa::signature::Verifier as _;
    let public = p256::PublicKey::from_jwk_str(&raw_header["jwk"].to_string())
        .expect("p256 reads the embedded jwk");
    let signature =
        p256::ecdsa::Signature::from_slice(&b64(segments[2])).expect("a raw r || s signature");
    let signing_input = format!("{}.{}", segments[0], segments[1]);
    p256::ecdsa::VerifyingKey::from(&public)
        .verify(signing_input.as_bytes(), &signature)
        .expect("p256 verifies the signature against the embedded key");
    (raw_header, data.claims)
}

fn names(claims: &Claims) -> BTreeSet<&str> {
    claims.keys().map(String::as_str).collect()
}

fn sha256_b64(text: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(text.as_bytes()))
}

#[test]
fn a_proof_verifies_and_carries_every_header_field_and_claim() {
    let key = DpopKey::generate();
    let access_token = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJtMm0ifQ.c2ln";
    let before = unix_now();
    let proof = key
        .proof(
            "post",
            &url("https://IdP.Example.com/oauth/token?audience=api#top"),
            Some("eyJ7S_zG.eyJH0-Z.HX4w-7v"),
            Some(access_token),
        )
        .expect("proof");
    let after = unix_now();
    let (header, claims) = verify(&proof);

    assert_eq!(
        header,
        json!({"typ": "dpop+jwt", "alg": "ES256", "jwk": key.public_jwk()})
    );
    let jwk = header["jwk"].as_object().expect("jwk object");
    assert_eq!(
        jwk.keys().map(String::as_str).collect::<BTreeSet<_>>(),
        BTreeSet::from(["crv", "kty", "x", "y"])
    );
    assert_eq!(jwk["kty"], "EC");
    assert_eq!(jwk["crv"], "P-256");

    assert_eq!(
        names(&claims),
        BTreeSet::from(["ath", "htm", "htu", "iat", "jti", "nonce"])
    );
    assert_eq!(claims["htm"], "POST");
    assert_eq!(claims["htu"], "https://idp.example.com/oauth/token");
    let iat = claims["iat"].as_u64().expect("iat is a number");
    assert!(
        (before..=after).contains(&iat),
        "{before} <= {iat} <= {after}"
    );
    assert_eq!(claims["nonce"], "eyJ7S_zG.eyJH0-Z.HX4w-7v");
    assert_eq!(claims["ath"], sha256_b64(access_token).as_str());
    let jti = claims["jti"].as_str().expect("jti is a string");
    assert!(b64(jti).len() >= 16, "at least 128 random bits");
}

#[test]
fn nonce_and_ath_appear_only_when_given() {
    let key = DpopKey::generate();
    let target = url("https://api.example.com/v1/orders");
    let cases = [
        (None, None, vec!["htm", "htu", "iat", "jti"]),
        (Some("n-1"), None, vec!["htm", "htu", "iat", "jti", "nonce"]),
        (
            None,
            Some("token-1"),
            vec!["ath", "htm", "htu", "iat", "jti"],
        ),
        (
            Some("n-2"),
            Some("token-2"),
            vec!["ath", "htm", "htu", "iat", "jti", "nonce"],
        ),
    ];
    for (nonce, access_token, expected) in cases {
        let proof = key
            .proof("GET", &target, nonce, access_token)
            .expect("proof");
        let (_, claims) = verify(&proof);
        assert_eq!(
            names(&claims),
            expected.into_iter().collect::<BTreeSet<_>>(),
            "nonce {nonce:?}, token {access_token:?}"
        );
        if let Some(nonce) = nonce {
            assert_eq!(claims["nonce"], nonce);
        }
        if let Some(access_token) = access_token {
            assert_eq!(claims["ath"], sha256_b64(access_token).as_str());
        }
    }
}

#[test]
fn htu_is_the_normalised_url_without_query_or_fragment() {
    let key = DpopKey::generate();
    let cases = [
        (
            "HTTPS://Server.Example.com:443/token?x=1#f",
            "https://server.example.com/token",
        ),
        ("http://Example.COM:80/a/b/?q=1", "http://example.com/a/b/"),
        (
            "https://example.com:8443/Path/Keeps/Case?x",
            "https://example.com:8443/Path/Keeps/Case",
        ),
        (
            "https://client:s3cr3t@example.com/token",
            "https://example.com/token",
        ),
        ("https://example.com", "https://example.com/"),
        (
            "https://example.com#only-a-fragment",
            "https://example.com/",
        ),
        ("http://[::1]:8080/x?y#z", "http://[::1]:8080/x"),
        ("http://127.0.0.1:80/t", "http://127.0.0.1/t"),
        (
            "https://example.com/a%20b/c?d",
            "https://example.com/a%20b/c",
        ),
    ];
    for (input, expected) in cases {
        let proof = key.proof("GET", &url(input), None, None).expect(input);
        let (_, claims) = verify(&proof);
        assert_eq!(claims["htu"], expected, "{input}");
        assert_eq!(authmux_dpop::htu(&url(input)).expect(input), expected);
    }
    let error = key
        .proof("GET", &url("ftp://example.com/x"), None, None)
        .expect_err("not HTTP");
    assert!(error.to_string().starts_with("dpop: "), "{error}");
}

#[test]
fn htm_is_the_method_in_upper_case() {
    let key = DpopKey::generate();
    let target = url("https://api.example.com/");
    for (method, expected) in [("get", "GET"), ("Post", "POST"), ("PATCH", "PATCH")] {
        let (_, claims) = verify(&key.proof(method, &target, None, None).expect(method));
        assert_eq!(claims["htm"], expected);
    }
    for bad in ["", "GET POST", "GET\r\n"] {
        assert!(key.proof(bad, &target, None, None).is_err(), "{bad:?}");
    }
}

#[test]
fn jti_is_unique_across_a_thousand_proofs() {
    let key = DpopKey::generate();
    let target = url("https://idp.example.com/oauth/token");
    let halves: Vec<Vec<String>> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..2)
            .map(|_| {
                scope.spawn(|| {
                    (0..500)
                        .map(|_| {
                            let proof = key.proof("POST", &target, None, None).expect("proof");
                            // Signatures are checked by the other tests; here
                            // only the claims are read, so that the test
                            // stays fast in a debug build.
                            let payload = proof
                                .to_str()
                                .expect("ASCII")
                                .split('.')
                                .nth(1)
                                .expect("a payload");
                            let claims: Value =
                                serde_json::from_slice(&b64(payload)).expect("JSON claims");
                            claims["jti"].as_str().expect("jti").to_owned()
                        })
                        .collect()
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|worker| worker.join().expect("worker"))
            .collect()
    });
    let mut seen = HashSet::new();
    for jti in halves.into_iter().flatten() {
        assert!(b64(&jti).len() >= 16, "at least 128 bits");
        assert!(seen.insert(jti), "a jti was repeated");
    }
    assert_eq!(seen.len(), 1_000);
}

#[test]
fn every_call_makes_a_new_proof() {
    let key = DpopKey::generate();
    let target = url("https://api.example.com/v1/orders");
    let first = key
        .proof("GET", &target, Some("n"), Some("t"))
        .expect("first");
    let second = key
        .proof("GET", &target, Some("n"), Some("t"))
        .expect("second");
    assert_ne!(first, second);
    let (_, first_claims) = verify(&first);
    let (_, second_claims) = verify(&second);
    assert_ne!(first_claims["jti"], second_claims["jti"]);
}

#[test]
fn the_verifier_rejects_altered_proofs_and_other_keys() {
    let key = DpopKey::generate();
    let proof = key
        .proof("POST", &url("https://idp.example.com/token"), None, None)
        .expect("proof");
    let token = proof.to_str().expect("ascii");
    let segments: Vec<&str> = token.split('.').collect();
    let own_key = DecodingKey::from_jwk(
        &serde_json::from_value(key.public_jwk()).expect("a jsonwebtoken Jwk"),
    )
    .expect("key");

    // The same signature over claims for another URL.
    let mut claims: Value = serde_json::from_slice(&b64(segments[1])).expect("claims");
    claims["htu"] = json!("https://attacker.example.com/token");
    let forged = format!(
        "{}.{}.{}",
        segments[0],
        URL_SAFE_NO_PAD.encode(claims.to_string()),
        segments[2]
    );
    assert!(jsonwebtoken::decode::<Claims>(&forged, &own_key, &validation()).is_err());

    // A proof signed by another key does not verify with this one.
    let other = DpopKey::generate()
        .proof("POST", &url("https://idp.example.com/token"), None, None)
        .expect("proof");
    let other = other.to_str().expect("ascii");
    assert!(jsonwebtoken::decode::<Claims>(other, &own_key, &validation()).is_err());
    assert!(jsonwebtoken::decode::<Claims>(token, &own_key, &validation()).is_ok());
}

#[test]
fn the_trait_object_reports_the_keys_thumbprint() {
    let key = DpopKey::generate();
    let prover: std::sync::Arc<dyn DpopProver> = std::sync::Arc::new(key.clone());
    assert_eq!(prover.thumbprint(), key.thumbprint());
    let proof = prover
        .proof("GET", &url("https://api.example.com/"), None, Some("t"))
        .expect("proof");
    let (header, _) = verify(&proof);
    assert_eq!(
        authmux_dpop::jwk_thumbprint(&header["jwk"]).expect("thumbprint"),
        key.thumbprint()
    );
}
