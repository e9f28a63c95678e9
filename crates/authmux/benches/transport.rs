//! What watching a client's certificate costs each API call: the
//! middleware asks `HttpClient::api_client()` before every authenticated
//! request, which looks at the certificate file's stamp (device, inode,
//! size, modification time) so that a replaced certificate is used at
//! once. The floor is the bare `stat` of the same file; the reference is
//! the same call for a client with no file to watch.
#![allow(missing_docs, clippy::unwrap_used)]

use std::hint::black_box;

use authmux::core::wire::{HttpClient, HttpConfig, TlsConfig};
use authmux::core::{ClientSecret, SecretString};
use authmux_testkit::tls::TestCa;
use criterion::{Criterion, criterion_group, criterion_main};

fn transport(c: &mut Criterion) {
    let dir = std::env::temp_dir().join(format!("authmux-bench-transport-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("client.pem");
    let certificate = TestCa::new("bench CA").client_certificate("payments");
    std::fs::write(&path, certificate.combined_pem()).unwrap();
    let watched =
        HttpClient::with_config(HttpConfig::default().tls(
            TlsConfig::default().client_certificate(ClientSecret::File { file: path.clone() }),
        ))
        .unwrap();
    let inline = HttpClient::with_config(HttpConfig::default().tls(
        TlsConfig::default().client_certificate(SecretString::from(certificate.combined_pem())),
    ))
    .unwrap();
    // Built once, as the first call does.
    watched.api_client().unwrap();
    inline.api_client().unwrap();

    let mut group = c.benchmark_group("api_client");
    group.bench_function("floor_stat_of_the_certificate_file", |b| {
        b.iter(|| black_box(std::fs::metadata(black_box(&path)).unwrap()));
    });
    group.bench_function("certificate_file_watched", |b| {
        b.iter(|| black_box(watched.api_client().unwrap()));
    });
    group.bench_function("inline_certificate_nothing_to_watch", |b| {
        b.iter(|| black_box(inline.api_client().unwrap()));
    });
    group.finish();
    let _ = std::fs::remove_dir_all(&dir);
}

criterion_group!(benches, transport);
criterion_main!(benches);
