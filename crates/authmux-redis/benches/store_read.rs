//! A read from the store: a process without the token in memory (a new
//! cache) adopting the one in the store, through Redis on loopback and
//! through the file store, sealed with AES-256-GCM.
//! `cargo bench -p authmux-redis --bench store_read`.
#![allow(missing_docs, clippy::unwrap_used)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::Duration;

use authmux_core::store::{EncryptionKey, FileStore};
use authmux_core::{ManagedToken, SharedTokenStore};
use authmux_redis::RedisStore;
use common::{CountingSource, RedisServer};
use criterion::{Criterion, criterion_group, criterion_main};

fn adopt(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let server = RedisServer::start();
    let key = EncryptionKey::from_bytes(&[9; 32]);
    let redis = SharedTokenStore::builder(RedisStore::from_url(&server.url()).unwrap())
        .encryption_key(key.clone())
        .build();
    let dir = std::env::temp_dir().join(format!("authmux-bench-store-{}", std::process::id()));
    let file = SharedTokenStore::builder(FileStore::new(&dir))
        .encryption_key(key)
        .build();
    let source = CountingSource::new(Duration::from_secs(3600), Duration::ZERO);
    let mut group = c.benchmark_group("store_read");
    for (name, store) in [("redis_loopback", redis), ("file", file)] {
        let warm = ManagedToken::builder(source.clone())
            .store(store.clone())
            .build();
        runtime.block_on(warm.get()).unwrap();
        let fetches = source.calls();
        group.bench_function(name, |b| {
            b.to_async(&runtime).iter(|| async {
                let cache = ManagedToken::builder(source.clone())
                    .store(store.clone())
                    .build();
                cache.get().await.unwrap().id()
            });
        });
        assert_eq!(source.calls(), fetches, "every read was a store hit");
    }
    group.finish();
    let _ = std::fs::remove_dir_all(&dir);
}

criterion_group!(benches, adopt);
criterion_main!(benches);
