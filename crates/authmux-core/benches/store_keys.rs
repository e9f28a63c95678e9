//! What a store key costs for a client that authenticates with a secret:
//! the credential's fingerprint, paid once per client per process (each
//! `authmux token` run pays it once). Without an encryption key it is
//! Argon2id, so that key names cannot be used to test guesses of the
//! secret; with one, an HMAC. The floors are the bare primitives.
#![allow(missing_docs, clippy::unwrap_used)]

use std::hint::black_box;

use authmux_core::store::{EncryptionKey, MemoryStore};
use authmux_core::{SecretString, SharedTokenStore, TokenIdentity};
use criterion::{Criterion, criterion_group, criterion_main};

fn identity() -> TokenIdentity {
    TokenIdentity::new("oauth2", "https://idp.example.com/oauth2/token")
        .with("client_id", "bench-client")
        .with("scope", "read write")
        .with_secret(
            "client_secret",
            &SecretString::from("a-client-secret-of-typical-length-3f9a1c".to_owned()),
        )
}

fn store_keys(c: &mut Criterion) {
    let mut group = c.benchmark_group("store_keys");
    group.sample_size(20);
    let identity = identity();
    let plain = SharedTokenStore::from(MemoryStore::new());
    let keyed = SharedTokenStore::builder(MemoryStore::new())
        .encryption_key(EncryptionKey::from_bytes(&[7; 32]))
        .build();
    group.bench_function("keys_secret_argon2id_no_encryption_key", |b| {
        b.iter(|| black_box(plain.keys(black_box(&identity))))
    });
    group.bench_function("floor_argon2id_default_params", |b| {
        let argon = argon2::Argon2::default();
        let mut out = [0u8; 32];
        b.iter(|| {
            argon
                .hash_password_into(
                    black_box(b"a-client-secret-of-typical-length-3f9a1c"),
                    black_box(&[1u8; 32]),
                    &mut out,
                )
                .unwrap();
            black_box(out)
        })
    });
    group.bench_function("keys_secret_hmac_with_encryption_key", |b| {
        b.iter(|| black_box(keyed.keys(black_box(&identity))))
    });
    group.bench_function("floor_hmac_sha256", |b| {
        let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, &[7; 32]);
        b.iter(|| {
            black_box(aws_lc_rs::hmac::sign(
                &key,
                black_box(b"identity and secret"),
            ))
        })
    });
    group.finish();
}

criterion_group!(benches, store_keys);
criterion_main!(benches);
