//! A store in this process's memory.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;

use super::{StoreError, TokenStore};

/// A [`TokenStore`] in memory, shared by its clones: the reference
/// implementation, for tests (two caches over one `MemoryStore` behave like
/// two processes over one Redis) and for sharing tokens between caches of
/// one process. Expiry follows tokio's clock, so paused-time tests can
/// advance past it.
#[derive(Clone, Debug, Default)]
pub struct MemoryStore {
    entries: Arc<Mutex<HashMap<String, Entry>>>,
}

#[derive(Debug)]
struct Entry {
    value: Vec<u8>,
    expires_at: Instant,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The live value under `key`, without any wrapper around the call:
    /// for tests that look at or tamper with what is stored.
    pub fn peek(&self, key: &str) -> Option<Vec<u8>> {
        let now = Instant::now();
        self.lock()
            .get(key)
            .filter(|entry| entry.expires_at > now)
            .map(|entry| entry.value.clone())
    }

    /// Sets `key` for an hour, bypassing everything: for tests.
    pub fn poke(&self, key: &str, value: Vec<u8>) {
        self.lock().insert(
            key.to_owned(),
            Entry {
                value,
                expires_at: Instant::now() + Duration::from_secs(3600),
            },
        );
    }

    /// The live keys, sorted.
    pub fn keys(&self) -> Vec<String> {
        let now = Instant::now();
        let mut keys: Vec<String> = self
            .lock()
            .iter()
            .filter(|(_, entry)| entry.expires_at > now)
            .map(|(key, _)| key.clone())
            .collect();
        keys.sort_unstable();
        keys
    }
}

#[async_trait]
impl TokenStore for MemoryStore {
    fn describe(&self) -> String {
        "memory".to_owned()
    }

    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.peek(key))
    }

    async fn put(&self, key: &str, value: &[u8], ttl: Duration) -> Result<(), StoreError> {
        self.lock().insert(
            key.to_owned(),
            Entry {
                value: value.to_vec(),
                expires_at: Instant::now() + ttl,
            },
        );
        Ok(())
    }

    async fn compare_and_delete(&self, key: &str, expected: &[u8]) -> Result<bool, StoreError> {
        let now = Instant::now();
        let mut entries = self.lock();
        let matches = entries
            .get(key)
            .is_some_and(|entry| entry.expires_at > now && entry.value == expected);
        if matches {
            entries.remove(key);
        }
        Ok(matches)
    }

    async fn try_lease(&self, key: &str, holder: &str, ttl: Duration) -> Result<bool, StoreError> {
        let now = Instant::now();
        let mut entries = self.lock();
        if entries.get(key).is_some_and(|entry| entry.expires_at > now) {
            return Ok(false);
        }
        entries.insert(
            key.to_owned(),
            Entry {
                value: holder.as_bytes().to_vec(),
                expires_at: now + ttl,
            },
        );
        Ok(true)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn values_expire_leases_exclude_and_deletes_compare() {
        let store = MemoryStore::new();
        store
            .put("k", b"v1", Duration::from_secs(10))
            .await
            .expect("put");
        assert_eq!(store.get("k").await.expect("get"), Some(b"v1".to_vec()));
        assert!(!store.compare_and_delete("k", b"v2").await.expect("cad"));
        assert!(store.compare_and_delete("k", b"v1").await.expect("cad"));
        assert_eq!(store.get("k").await.expect("get"), None);

        let ttl = Duration::from_secs(5);
        assert!(store.try_lease("l", "a", ttl).await.expect("lease"));
        assert!(!store.try_lease("l", "b", ttl).await.expect("lease"));
        assert!(!store.release_lease("l", "b").await.expect("release"));
        assert!(store.release_lease("l", "a").await.expect("release"));
        assert!(store.try_lease("l", "b", ttl).await.expect("lease"));
        tokio::time::advance(ttl).await;
        assert!(
            store
                .try_lease("l", "c", ttl)
                .await
                .expect("an expired lease is free")
        );

        store
            .put("e", b"v", Duration::from_secs(1))
            .await
            .expect("put");
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(store.get("e").await.expect("get"), None);
    }
}
