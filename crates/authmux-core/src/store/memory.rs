//! A store in this process's memory.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;

use super::{MessageSink, StoreError, StoredEntry, TokenStore};

/// A [`TokenStore`] in memory, shared by its clones: the reference
/// implementation, for tests (two caches over one `MemoryStore` behave like
/// two processes over one Redis) and for sharing tokens between caches of
/// one process. Expiry follows tokio's clock, so paused-time tests can
/// advance past it.
/// Its messages go to the subscribers of its clones, in this process.
#[derive(Clone, Default)]
pub struct MemoryStore {
    entries: Arc<Mutex<HashMap<String, Entry>>>,
    subscribers: Arc<Mutex<Vec<(String, MessageSink)>>>,
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore")
            .field("keys", &self.lock().len())
            .finish()
    }
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

    async fn get(&self, key: &str) -> Result<Option<StoredEntry>, StoreError> {
        let now = Instant::now();
        Ok(self
            .lock()
            .get(key)
            .filter(|entry| entry.expires_at > now)
            .map(|entry| StoredEntry {
                value: entry.value.clone(),
                ttl: entry.expires_at - now,
            }))
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

    async fn renew_lease(
        &self,
        key: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let now = Instant::now();
        let mut entries = self.lock();
        match entries.get_mut(key) {
            Some(entry) if entry.expires_at > now && entry.value == holder.as_bytes() => {
                entry.expires_at = now + ttl;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn publish(&self, channel: &str, message: &[u8]) -> Result<(), StoreError> {
        let sinks: Vec<MessageSink> = self
            .subscribers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .filter(|(subscribed, _)| subscribed == channel)
            .map(|(_, sink)| Arc::clone(sink))
            .collect();
        for sink in sinks {
            sink(message);
        }
        Ok(())
    }

    fn subscribe(&self, channel: &str, sink: MessageSink) -> bool {
        self.subscribers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push((channel.to_owned(), sink));
        true
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
        let entry = store.get("k").await.expect("get").expect("stored");
        assert_eq!(entry.value, b"v1".to_vec());
        assert_eq!(entry.ttl, Duration::from_secs(10));
        assert!(!store.compare_and_delete("k", b"v2").await.expect("cad"));
        assert!(store.compare_and_delete("k", b"v1").await.expect("cad"));
        assert!(store.get("k").await.expect("get").is_none());

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
        assert!(store.get("e").await.expect("get").is_none());

        assert!(store.try_lease("r", "a", ttl).await.expect("lease"));
        tokio::time::advance(Duration::from_secs(4)).await;
        assert!(store.renew_lease("r", "a", ttl).await.expect("renew"));
        assert!(!store.renew_lease("r", "b", ttl).await.expect("not b's"));
        tokio::time::advance(Duration::from_secs(4)).await;
        assert!(
            !store.try_lease("r", "b", ttl).await.expect("lease"),
            "renewed: still a's"
        );
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(store.try_lease("r", "b", ttl).await.expect("lease"));
        assert!(!store.renew_lease("r", "a", ttl).await.expect("lost"));
    }
}
