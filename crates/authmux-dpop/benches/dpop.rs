//! The cost of one DPoP proof: claims, `ath`, and an ES256 signature.
#![allow(missing_docs)]

use std::hint::black_box;

use authmux_core::DpopProver as _;
use authmux_dpop::DpopKey;
use criterion::{Criterion, criterion_group, criterion_main};
use url::Url;

fn dpop_proof(c: &mut Criterion) {
    let key = DpopKey::generate();
    let url = Url::parse("https://api.example.com/v1/orders?page=2").expect("url");
    let access_token = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJtMm0tY2xpZW50In0.c2lnbmF0dXJl";
    c.bench_function("dpop_proof", |b| {
        b.iter(|| {
            key.proof(
                black_box("GET"),
                black_box(&url),
                black_box(Some("server-nonce-4f1c")),
                black_box(Some(access_token)),
            )
            .expect("proof")
        });
    });
}

criterion_group!(benches, dpop_proof);
criterion_main!(benches);
