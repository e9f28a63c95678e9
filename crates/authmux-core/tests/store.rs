//! The token store under tokio's paused time. Two caches over one
//! `MemoryStore` behave as two processes over one Redis: they share one
//! fetch, one refresh and one re-fetch after a 401 storm; a store that
//! hangs, fails or holds garbage costs a bounded wait, never an error.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use authmux_core::store::{
    EncryptionKey, MemoryStore, MessageSink, StoreError, StoreKeys, StoredEntry, TokenStore,
};
use authmux_core::{
    Clock, Dpop, DpopProver, Error, ExposeSecret, ManagedToken, SharedTokenStore, Token,
    TokenIdentity, TokenSource, TokenType,
};
use common::{ScriptedSource, Step};
use secrecy::SecretString;
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
    // Its time left is the store's, on the store's clock.
    let drift = adopted.expires_in().abs_diff(token.expires_in());
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
    let plant = |token: &'static str, left: Duration| {
        let backend = backend.clone();
        let key = key.clone();
        async move {
            backend
                .put(&key, &stored_value(token, left), left)
                .await
                .expect("put");
        }
    };
    plant("stored-early", secs(1800)).await;
    assert_eq!(
        secret(&process(&source, handle(&backend))).await,
        "stored-early"
    );
    // Inside the 10 s expiry margin.
    plant("stored-late", secs(5)).await;
    assert_eq!(secret(&process(&source, handle(&backend))).await, "token-1");
    // Usable, but inside its refresh window: a cold process takes it, and
    // refreshes it in the background.
    plant("stored-due", secs(200)).await;
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
    /// Puts are written, but their answer is lost.
    lose_put_replies: Arc<AtomicBool>,
    /// Puts fail without being written.
    fail_puts: Arc<AtomicBool>,
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
    async fn get(&self, key: &str) -> Result<Option<StoredEntry>, StoreError> {
        self.enter().await?;
        self.inner.get(key).await
    }
    async fn put(&self, key: &str, value: &[u8], ttl: Duration) -> Result<(), StoreError> {
        self.enter().await?;
        if self.fail_puts.load(Ordering::SeqCst) {
            return Err(StoreError::unavailable("OOM command not allowed"));
        }
        self.inner.put(key, value, ttl).await?;
        if self.lose_put_replies.load(Ordering::SeqCst) {
            return Err(StoreError::unavailable("connection reset"));
        }
        Ok(())
    }
    async fn renew_lease(
        &self,
        key: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        self.enter().await?;
        self.inner.renew_lease(key, holder, ttl).await
    }
    async fn publish(&self, channel: &str, message: &[u8]) -> Result<(), StoreError> {
        self.enter().await?;
        self.inner.publish(channel, message).await
    }
    fn subscribe(&self, channel: &str, sink: MessageSink) -> bool {
        self.inner.subscribe(channel, sink)
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

/// A source whose tokens depend on a client secret, as a provider's do.
#[derive(Clone)]
struct WithSecret {
    source: ScriptedSource,
    secret: &'static str,
}

#[async_trait]
impl TokenSource for WithSecret {
    fn provider(&self) -> &str {
        "scripted"
    }
    fn identity(&self) -> TokenIdentity {
        TokenIdentity::new("scripted", "memory://")
            .with("client_id", "c1")
            .with_secret("client_secret", &SecretString::from(self.secret.to_owned()))
    }
    async fn fetch_token(&self) -> Result<Token, Error> {
        self.source.fetch_token().await
    }
}

#[tokio::test(start_paused = true)]
async fn a_different_secret_never_finds_the_token_of_another() {
    let source = ScriptedSource::tokens(HOUR, FETCH);
    let backend = MemoryStore::new();
    for store in [handle(&backend), keyed(&backend, 7)] {
        let with = |secret| {
            ManagedToken::builder(WithSecret {
                source: source.clone(),
                secret,
            })
            .clock(Clock::tokio())
            .store(store.clone())
            .build()
        };
        let right = secret(&with("right-secret")).await;
        let calls = source.calls();
        // Same endpoint, same client id, another secret: a wrong, revoked
        // or another tenant's secret must reach the provider.
        let wrong = secret(&with("wrong-secret")).await;
        assert_ne!(right, wrong);
        assert_eq!(source.calls(), calls + 1, "the provider was asked");
        // The right secret still shares its token.
        assert_eq!(secret(&with("right-secret")).await, right);
        assert_eq!(source.calls(), calls + 1);
    }
    // No key name holds the secret, nor an unkeyed hash of it.
    for key in backend.keys() {
        assert!(!key.contains("secret"), "{key}");
    }
}

#[tokio::test(start_paused = true)]
async fn the_lease_is_given_back_when_the_store_failed_during_the_flight() {
    // The holder's put fails, which opens its breaker: giving the lease
    // back must not go through that breaker, or the fleet waits for the
    // lease to run out.
    let source = ScriptedSource::tokens(HOUR, FETCH);
    let faulty = Faulty::default();
    faulty.fail_puts.store(true, Ordering::SeqCst);
    let holder_store = SharedTokenStore::builder(faulty.clone()).build();
    assert_eq!(secret(&process(&source, holder_store)).await, "token-1");
    faulty.fail_puts.store(false, Ordering::SeqCst);
    settle(Duration::from_millis(1)).await;
    let started = Instant::now();
    let next = process(&source, SharedTokenStore::builder(faulty.clone()).build());
    assert_eq!(secret(&next).await, "token-2");
    assert_eq!(started.elapsed(), FETCH, "no wait for a lease left behind");
}

#[tokio::test(start_paused = true)]
async fn the_lease_is_given_back_when_the_source_panics() {
    let source = ScriptedSource::scripted([Step::Panic], Step::Token(HOUR), FETCH);
    let backend = MemoryStore::new();
    let panicked = process(&source, handle(&backend));
    assert!(panicked.get().await.is_err());
    settle(Duration::from_millis(1)).await;
    assert!(
        backend.keys().iter().all(|key| !key.ends_with(":lease")),
        "{:?}",
        backend.keys()
    );
    let started = Instant::now();
    assert_eq!(secret(&process(&source, handle(&backend))).await, "token-2");
    assert_eq!(started.elapsed(), FETCH);
}

#[tokio::test(start_paused = true)]
async fn a_fetch_longer_than_the_lease_keeps_it_and_the_fleet_fetches_once() {
    // 12 s at the provider, a 2 s lease renewed while it fetches.
    let source = ScriptedSource::tokens(HOUR, secs(12));
    let backend = MemoryStore::new();
    let fleet: Vec<ManagedToken> = (0..6).map(|_| process(&source, handle(&backend))).collect();
    let mut callers = JoinSet::new();
    for cache in fleet {
        callers.spawn(async move { secret(&cache).await });
    }
    let tokens = callers.join_all().await;
    assert!(tokens.iter().all(|token| token == "token-1"), "{tokens:?}");
    assert_eq!(source.calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn waiters_are_woken_by_the_stored_token_not_by_polling() {
    let source = ScriptedSource::tokens(HOUR, secs(2));
    let faulty = Faulty::default();
    let fleet: Vec<ManagedToken> = (0..10)
        .map(|_| process(&source, SharedTokenStore::builder(faulty.clone()).build()))
        .collect();
    let started = Instant::now();
    let mut callers = JoinSet::new();
    for cache in fleet {
        callers.spawn(async move { secret(&cache).await });
    }
    let tokens = callers.join_all().await;
    assert!(tokens.iter().all(|token| token == "token-1"));
    assert_eq!(started.elapsed(), secs(2), "woken as soon as it is stored");
    assert_eq!(source.calls(), 1);
    settle(Duration::from_millis(1)).await;
    // Each waiter: a look, a lease attempt, one or two looks of its own
    // during the 2 s, and the read it was woken for; the holder renews
    // its lease and tells the others.
    assert!(
        faulty.calls() <= 10 * 7,
        "{} store calls for 10 processes",
        faulty.calls()
    );
}

#[tokio::test(start_paused = true)]
async fn a_put_whose_answer_was_lost_is_still_invalidated() {
    let source = ScriptedSource::tokens(HOUR, FETCH);
    let faulty = Faulty::default();
    faulty.lose_put_replies.store(true, Ordering::SeqCst);
    let store = SharedTokenStore::builder(faulty.clone())
        .breaker_period(Duration::from_millis(1))
        .build();
    let cache = process(&source, store.clone());
    let rejected = cache.get().await.expect("token").into_token();
    faulty.lose_put_replies.store(false, Ordering::SeqCst);
    settle(Duration::from_millis(10)).await;
    assert!(cache.invalidate(&rejected));
    settle(Duration::from_millis(10)).await;
    assert!(
        faulty.inner.peek(&keys(&store).token).is_none(),
        "the rejected token was deleted from the store"
    );
    let next = cache.get().await.expect("a new token");
    assert_ne!(next.id(), rejected.id());
    assert_eq!(next.secret().expose_secret(), "token-2");
}

#[tokio::test(start_paused = true)]
async fn a_rejected_token_is_never_adopted_again_even_if_still_stored() {
    // The compare-and-delete is lost: the store still holds the rejected
    // token, and the next flight must not take it back.
    let source = ScriptedSource::tokens(HOUR, FETCH);
    let faulty = Faulty::default();
    let store = SharedTokenStore::builder(faulty.clone()).build();
    let cache = process(&source, store.clone());
    let rejected = cache.get().await.expect("token").into_token();
    faulty.fail.store(true, Ordering::SeqCst);
    assert!(cache.invalidate(&rejected));
    settle(Duration::from_millis(10)).await;
    faulty.fail.store(false, Ordering::SeqCst);
    settle(secs(6)).await;
    assert!(faulty.inner.peek(&keys(&store).token).is_some());
    let next = cache.get().await.expect("a new token");
    assert_eq!(next.secret().expose_secret(), "token-2");
}

#[tokio::test(start_paused = true)]
async fn a_401_in_one_process_retires_the_token_in_every_other() {
    let source = ScriptedSource::tokens(HOUR, FETCH);
    let backend = MemoryStore::new();
    let first = process(&source, handle(&backend));
    let second = process(&source, handle(&backend));
    let rejected = first.get().await.expect("token").into_token();
    assert_eq!(secret(&second).await, rejected.secret().expose_secret());
    assert!(second.cached().is_some());
    assert!(first.invalidate(&rejected));
    settle(Duration::from_millis(1)).await;
    assert!(
        second.cached().is_none(),
        "the other process stopped serving the rejected token"
    );
    let (a, b) = tokio::join!(secret(&first), secret(&second));
    assert_eq!(a, "token-2");
    assert_eq!(b, "token-2");
    assert_eq!(source.calls(), 2, "one fetch for the fleet");
}
