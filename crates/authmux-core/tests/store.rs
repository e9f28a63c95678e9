//! The token store under tokio's paused time. Two caches over one
//! `MemoryStore` behave as two processes over one Redis: they share one
//! fetch, one refresh and one re-fetch after a 401 storm; a store that
//! hangs, fails or holds garbage costs a bounded wait, never an error.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use authmux_core::store::{EncryptionKey, MemoryStore, StoreError, StoreKeys, TokenStore};
use authmux_core::{
    Clock, Dpop, DpopProver, Error, ExposeSecret, ManagedToken, SharedTokenStore, Token,
    TokenIdentity, TokenSource, TokenType,
};
use common::ScriptedSource;
use tokio::task::JoinSet;
use tokio::time::{Instant, advance};

const HOUR: Duration = Duration::from_secs(3600);
const FETCH: Duration = Duration::from_millis(50);

fn secs(seconds: u64) -> Duration {
    Duration::from_secs(seconds)
}

/// One "process": its own cache and its own store handle (breaker
/// included) over the shared backend.
fn process(source: &ScriptedSource, store: SharedTokenStore) -> ManagedToken {
    ManagedToken::builder(source.clone())
        .name("api")
        .clock(Clock::tokio())
        .store(store)
        .build()
}

fn handle(backend: &MemoryStore) -> SharedTokenStore {
    SharedTokenStore::builder(backend.clone()).build()
}

fn keyed(backend: &MemoryStore, byte: u8) -> SharedTokenStore {
    SharedTokenStore::builder(backend.clone())
        .encryption_key(EncryptionKey::from_bytes(&[byte; 32]))
        .build()
}

fn keys(store: &SharedTokenStore) -> StoreKeys {
    store.keys(&TokenIdentity::new("scripted", "memory://"))
}

async fn settle(by: Duration) {
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }
    advance(by).await;
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }
}

async fn secret(cache: &ManagedToken) -> String {
    cache
        .get()
        .await
        .expect("a token")
        .secret()
        .expose_secret()
        .to_owned()
}

#[tokio::test(start_paused = true)]
async fn a_cold_fleet_fetches_one_token() {
    let source = ScriptedSource::tokens(HOUR, FETCH);
    let backend = MemoryStore::new();
    let processes: Vec<ManagedToken> = (0..5).map(|_| process(&source, handle(&backend))).collect();
    let mut callers = JoinSet::new();
    for cache in &processes {
        for _ in 0..20 {
            let cache = cache.clone();
            callers.spawn(async move { secret(&cache).await });
        }
    }
    let secrets: Vec<String> = callers.join_all().await;
    assert_eq!(source.calls(), 1, "one fetch for the whole fleet");
    assert!(
        secrets.iter().all(|secret| secret == "token-1"),
        "{secrets:?}"
    );
    assert_eq!(backend.keys(), [keys(&handle(&backend)).token]);
}

#[tokio::test(start_paused = true)]
async fn a_later_process_adopts_the_stored_token_with_its_expiry() {
    let source = ScriptedSource::tokens(HOUR, FETCH);
    let backend = MemoryStore::new();
    let first = process(&source, keyed(&backend, 1));
    let token = first.get().await.expect("token").into_token();
    settle(secs(600)).await;
    let second = process(&source, keyed(&backend, 1));
    let adopted = second.get().await.expect("token").into_token();
    assert_eq!(source.calls(), 1);
    assert_eq!(adopted.secret().expose_secret(), "token-1");
    assert_eq!(
        adopted.lifetime(),
        HOUR,
        "the refresh window stays the fleet's"
    );
    let drift = adopted
        .expires_at_utc()
        .duration_since(token.expires_at_utc())
        .unwrap_or_else(|error| error.duration());
    assert!(drift <= Duration::from_millis(1), "{drift:?}");
    // The hot path never asks the store again.
    backend.poke(&keys(&keyed(&backend, 1)).token, b"garbage".to_vec());
    assert_eq!(secret(&second).await, "token-1");
}

#[tokio::test(start_paused = true)]
async fn the_fleet_refreshes_once_ahead_of_expiry() {
    let source = ScriptedSource::tokens(HOUR, FETCH);
    let backend = MemoryStore::new();
    let processes: Vec<ManagedToken> = (0..4).map(|_| process(&source, handle(&backend))).collect();
    for cache in &processes {
        assert_eq!(secret(cache).await, "token-1");
    }
    // Past every process's jittered refresh point (window 360 s + 10 %),
    // before the expiry margin.
    settle(HOUR - secs(300)).await;
    for cache in &processes {
        assert_eq!(secret(cache).await, "token-1", "served while refreshing");
    }
    for _ in 0..20 {
        settle(Duration::from_millis(100)).await;
    }
    assert_eq!(source.calls(), 2, "one refresh for the fleet");
    for cache in &processes {
        assert_eq!(secret(cache).await, "token-2");
    }
}

#[tokio::test(start_paused = true)]
async fn a_401_storm_across_the_fleet_fetches_once() {
    let source = ScriptedSource::tokens(HOUR, FETCH);
    let backend = MemoryStore::new();
    let processes: Vec<ManagedToken> = (0..4)
        .map(|_| process(&source, keyed(&backend, 3)))
        .collect();
    let mut rejected = Vec::new();
    for cache in &processes {
        rejected.push(cache.get().await.expect("token").into_token());
    }
    assert_eq!(source.calls(), 1);
    for (cache, token) in processes.iter().zip(&rejected) {
        assert!(cache.invalidate(token));
        assert!(!cache.invalidate(token), "a second 401 does nothing");
    }
    let mut callers = JoinSet::new();
    for cache in &processes {
        let cache = cache.clone();
        callers.spawn(async move { secret(&cache).await });
    }
    let secrets = callers.join_all().await;
    assert_eq!(source.calls(), 2, "one fetch after the storm");
    assert!(
        secrets.iter().all(|secret| secret == "token-2"),
        "{secrets:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn invalidate_deletes_the_stored_token_only_if_it_is_still_there() {
    let source = ScriptedSource::tokens(HOUR, FETCH);
    let backend = MemoryStore::new();
    let store = handle(&backend);
    let cache = process(&source, store.clone());
    let token = cache.get().await.expect("token").into_token();
    let key = keys(&store).token;
    assert!(backend.peek(&key).is_some());
    cache.invalidate(&token);
    settle(Duration::from_millis(1)).await;
    assert_eq!(backend.peek(&key), None, "deleted");

    // Another process has replaced it meanwhile: that one stays.
    let token = cache.get().await.expect("token").into_token();
    let replacement = backend.peek(&key).expect("stored");
    let other = process(&source, store.clone());
    assert_eq!(secret(&other).await, "token-2");
    backend.poke(&key, b"someone else's".to_vec());
    cache.invalidate(&token);
    settle(Duration::from_millis(1)).await;
    assert_eq!(backend.peek(&key), Some(b"someone else's".to_vec()));
    assert_ne!(replacement, b"someone else's".to_vec());
}

#[tokio::test(start_paused = true)]
async fn tampered_and_wrongly_keyed_values_are_misses() {
    let source = ScriptedSource::tokens(HOUR, FETCH);
    let backend = MemoryStore::new();
    let key = keys(&keyed(&backend, 1)).token;
    process(&source, keyed(&backend, 1))
        .get()
        .await
        .expect("token");
    let sealed = backend.peek(&key).expect("stored");
    assert!(
        !String::from_utf8_lossy(&sealed).contains("token-1"),
        "sealed at rest"
    );

    let other_key = process(&source, keyed(&backend, 2));
    assert_eq!(secret(&other_key).await, "token-2", "another key: a miss");

    let mut tampered = backend.peek(&key).expect("stored");
    let last = tampered.len() - 1;
    tampered[last] ^= 0x01;
    backend.poke(&key, tampered);
    assert_eq!(
        secret(&process(&source, keyed(&backend, 2))).await,
        "token-3",
        "tampered: a miss"
    );

    // A value moved from another entry does not open under this name.
    let elsewhere = SharedTokenStore::builder(backend.clone())
        .prefix("elsewhere")
        .encryption_key(EncryptionKey::from_bytes(&[2; 32]))
        .build();
    backend.poke(&keys(&elsewhere).token, backend.peek(&key).expect("stored"));
    let swapped = ManagedToken::builder(source.clone())
        .clock(Clock::tokio())
        .store(elsewhere)
        .build();
    assert_eq!(secret(&swapped).await, "token-4", "swapped: a miss");

    backend.poke(&key, b"AMX\x01\x00{not json".to_vec());
    assert_eq!(secret(&process(&source, handle(&backend))).await, "token-5");
    assert_eq!(source.calls(), 5);
}

#[tokio::test(start_paused = true)]
async fn a_plaintext_value_is_refused_when_a_key_is_set() {
    let source = ScriptedSource::tokens(HOUR, FETCH);
    let backend = MemoryStore::new();
    process(&source, handle(&backend))
        .get()
        .await
        .expect("token");
    assert_eq!(
        secret(&process(&source, keyed(&backend, 1))).await,
        "token-2",
        "nobody can plant a token in an encrypted store"
    );
}

/// A plaintext stored value for `token`, expiring `expires_in` from now on
/// the wall clock (which paused tokio time does not move).
fn stored_value(token: &str, expires_in: Duration) -> Vec<u8> {
    let expires_at_ms = (std::time::SystemTime::now() + expires_in)
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after the epoch")
        .as_millis();
    let json = serde_json::json!({
        "access_token": token,
        "token_type": "Bearer",
        "expires_at_ms": expires_at_ms as u64,
        "lifetime_ms": HOUR.as_millis() as u64,
    });
    let mut value = b"AMX\x01\x00".to_vec();
    value.extend_from_slice(json.to_string().as_bytes());
    value
}

#[tokio::test(start_paused = true)]
async fn a_stored_token_near_its_expiry_is_not_adopted() {
    let source = ScriptedSource::tokens(HOUR, FETCH);
    let backend = MemoryStore::new();
    let key = keys(&handle(&backend)).token;
    backend.poke(&key, stored_value("stored-early", secs(1800)));
    assert_eq!(
        secret(&process(&source, handle(&backend))).await,
        "stored-early"
    );
    // Inside the 10 s expiry margin.
    backend.poke(&key, stored_value("stored-late", secs(5)));
    assert_eq!(secret(&process(&source, handle(&backend))).await, "token-1");
    // Usable, but inside its refresh window: a cold process takes it, and
    // refreshes it in the background.
    backend.poke(&key, stored_value("stored-due", secs(200)));
    let cold = process(&source, handle(&backend));
    assert_eq!(secret(&cold).await, "stored-due");
    assert_eq!(secret(&cold).await, "stored-due", "served while refreshing");
    settle(Duration::from_millis(200)).await;
    assert_eq!(secret(&cold).await, "token-2");
    assert_eq!(source.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_dead_lease_holder_is_taken_over_when_its_lease_expires() {
    let source = ScriptedSource::tokens(HOUR, FETCH);
    let backend = MemoryStore::new();
    let store = SharedTokenStore::builder(backend.clone())
        .lease_ttl(secs(10))
        .lease_wait(secs(14))
        .build();
    // A process took the lease and was killed with -9.
    assert!(
        backend
            .try_lease(&keys(&store).lease, "dead", secs(10))
            .await
            .expect("lease")
    );
    let started = Instant::now();
    let cache = process(&source, store.clone());
    assert_eq!(secret(&cache).await, "token-1");
    let waited = started.elapsed();
    assert!(waited >= secs(10), "waited for the lease: {waited:?}");
    assert!(
        waited < secs(14),
        "took the lease over, did not give up: {waited:?}"
    );
    assert!(
        backend.peek(&keys(&store).token).is_some(),
        "stored for the fleet"
    );
    assert_eq!(source.calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_waiter_fetches_by_itself_when_no_token_comes() {
    let source = ScriptedSource::tokens(HOUR, FETCH);
    let backend = MemoryStore::new();
    let store = SharedTokenStore::builder(backend.clone())
        .lease_wait(secs(2))
        .build();
    // A holder that hangs with a lease far longer than the wait.
    backend.poke(&keys(&store).lease, b"stuck".to_vec());
    let started = Instant::now();
    assert_eq!(secret(&process(&source, store)).await, "token-1");
    let waited = started.elapsed();
    assert!(waited >= secs(2) && waited < secs(3), "{waited:?}");
}

/// A store that answers, fails, or never answers, and counts its calls.
#[derive(Clone, Default)]
struct Faulty {
    inner: MemoryStore,
    calls: Arc<AtomicUsize>,
    hang: Arc<AtomicBool>,
    fail: Arc<AtomicBool>,
}

impl Faulty {
    async fn enter(&self) -> Result<(), StoreError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if self.hang.load(Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
        if self.fail.load(Ordering::SeqCst) {
            return Err(StoreError::unavailable("connection refused"));
        }
        Ok(())
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl TokenStore for Faulty {
    fn describe(&self) -> String {
        "faulty".into()
    }
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.enter().await?;
        self.inner.get(key).await
    }
    async fn put(&self, key: &str, value: &[u8], ttl: Duration) -> Result<(), StoreError> {
        self.enter().await?;
        self.inner.put(key, value, ttl).await
    }
    async fn compare_and_delete(&self, key: &str, expected: &[u8]) -> Result<bool, StoreError> {
        self.enter().await?;
        self.inner.compare_and_delete(key, expected).await
    }
    async fn try_lease(&self, key: &str, holder: &str, ttl: Duration) -> Result<bool, StoreError> {
        self.enter().await?;
        self.inner.try_lease(key, holder, ttl).await
    }
    async fn ping(&self) -> Result<(), StoreError> {
        self.enter().await
    }
}

#[tokio::test(start_paused = true)]
async fn a_store_that_never_answers_costs_one_timeout_per_breaker_period() {
    let source = ScriptedSource::tokens(HOUR, FETCH);
    let faulty = Faulty::default();
    faulty.hang.store(true, Ordering::SeqCst);
    let store = SharedTokenStore::builder(faulty.clone())
        .timeout(Duration::from_millis(200))
        .breaker_period(secs(5))
        .build();
    let started = Instant::now();
    assert_eq!(secret(&process(&source, store.clone())).await, "token-1");
    assert_eq!(
        started.elapsed(),
        Duration::from_millis(200) + FETCH,
        "one store timeout, then the fetch"
    );
    assert_eq!(
        faulty.calls(),
        1,
        "the flight leaves the store alone after a failure"
    );

    // The breaker is open: another cache does not wait for the store.
    let started = Instant::now();
    assert_eq!(secret(&process(&source, store.clone())).await, "token-2");
    assert_eq!(started.elapsed(), FETCH);
    assert_eq!(faulty.calls(), 1);
    assert!(store.ping().await.is_err(), "a check always really asks");

    // The store comes back: after the period, sharing resumes.
    faulty.hang.store(false, Ordering::SeqCst);
    settle(secs(5)).await;
    let fresh = process(&source, store.clone());
    assert_eq!(secret(&fresh).await, "token-3");
    assert_eq!(
        secret(&process(&source, store.clone())).await,
        "token-3",
        "shared again"
    );
    assert_eq!(source.calls(), 3);
}

#[tokio::test(start_paused = true)]
async fn a_failing_store_never_fails_a_caller() {
    let source = ScriptedSource::tokens(HOUR, FETCH);
    let faulty = Faulty::default();
    let store = SharedTokenStore::builder(faulty.clone()).build();
    let first = process(&source, store.clone());
    assert_eq!(secret(&first).await, "token-1");
    // Redis dies mid-run.
    faulty.fail.store(true, Ordering::SeqCst);
    let token = first.get().await.expect("cached").into_token();
    first.invalidate(&token);
    let mut callers = JoinSet::new();
    for _ in 0..50 {
        let cache = first.clone();
        callers.spawn(async move { cache.get().await.map(|token| token.id()) });
    }
    let outcomes = callers.join_all().await;
    assert!(outcomes.iter().all(Result::is_ok), "no caller error");
    assert_eq!(source.calls(), 2);
    let second = process(&source, store);
    assert_eq!(secret(&second).await, "token-3");
}

/// A prover whose key is or is not shared between processes.
struct Prover;

impl DpopProver for Prover {
    fn proof(
        &self,
        method: &str,
        _url: &url::Url,
        _nonce: Option<&str>,
        _access_token: Option<&str>,
    ) -> Result<reqwest::header::HeaderValue, Error> {
        reqwest::header::HeaderValue::try_from(format!("proof-{method}"))
            .map_err(|_| Error::config("proof"))
    }
    fn thumbprint(&self) -> &str {
        "jkt-1"
    }
}

struct DpopSource {
    dpop: Dpop,
    calls: Arc<AtomicUsize>,
}

#[async_trait]
impl TokenSource for DpopSource {
    fn provider(&self) -> &str {
        "dpop"
    }
    fn identity(&self) -> TokenIdentity {
        TokenIdentity::new("dpop", "memory://").with("dpop", self.dpop.thumbprint())
    }
    async fn fetch_token(&self) -> Result<Token, Error> {
        let call = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        let token = Token::builder(format!("dpop-{call}"))
            .token_type(TokenType::DPoP)
            .lifetime(HOUR)
            .build()?;
        self.dpop.bind(token)
    }
    fn dpop(&self) -> Option<&Dpop> {
        Some(&self.dpop)
    }
}

#[tokio::test(start_paused = true)]
async fn dpop_tokens_are_stored_only_when_their_key_is_shared() {
    let backend = MemoryStore::new();
    let calls = Arc::new(AtomicUsize::new(0));
    let cache = |shared: bool| {
        ManagedToken::builder(DpopSource {
            dpop: Dpop::new(Arc::new(Prover)).key_shared(shared),
            calls: Arc::clone(&calls),
        })
        .clock(Clock::tokio())
        .store(handle(&backend))
        .build()
    };
    let own_key = cache(false);
    assert!(own_key.store().is_none());
    own_key.get().await.expect("token");
    assert!(
        backend.keys().is_empty(),
        "a per-process key's token is not stored"
    );

    cache(true).get().await.expect("token");
    assert_eq!(backend.keys().len(), 1);
    let adopted = cache(true).get().await.expect("token").into_token();
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert_eq!(adopted.secret().expose_secret(), "dpop-2");
    let url = url::Url::parse("https://api.example.com/x").expect("url");
    assert_eq!(
        adopted
            .dpop_proof("GET", &url)
            .expect("bound to the prover"),
        "proof-GET"
    );
}

#[tokio::test(start_paused = true)]
async fn no_store_call_is_made_on_the_hot_path() {
    let source = ScriptedSource::tokens(HOUR, FETCH);
    let faulty = Faulty::default();
    let cache = process(&source, SharedTokenStore::builder(faulty.clone()).build());
    cache.get().await.expect("token");
    let after_fetch = faulty.calls();
    for _ in 0..1000 {
        cache.get().await.expect("token");
    }
    settle(secs(60)).await;
    cache.get().await.expect("token");
    assert_eq!(faulty.calls(), after_fetch);
}

#[test]
fn no_key_is_shown_by_debug() {
    let store = SharedTokenStore::builder(MemoryStore::new())
        .encryption_key(EncryptionKey::from_bytes(&[0x41; 32]))
        .build();
    let debug = format!("{store:?}");
    assert!(debug.contains("encrypted: true"), "{debug}");
    assert!(
        !debug.contains("AAAA") && !debug.contains("65, 65"),
        "{debug}"
    );
}
