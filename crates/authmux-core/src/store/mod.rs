//! Token stores: a second cache level behind the in-process one, so that a
//! token outlives the process that fetched it and is shared by a fleet.
//!
//! A [`TokenStore`] keeps opaque bytes under string keys, with an expiry
//! it reports with each value, a compare-and-delete, a lease with a
//! compare-and-extend, and optionally messages between processes. It knows
//! nothing about tokens or providers. [`SharedTokenStore`] wraps one with
//! what every store needs:
//!
//! * a short timeout on each call ([`StoreOptions::timeout`], 200 ms);
//! * a circuit breaker: after a failed call, the store is left alone for
//!   [`StoreOptions::breaker_period`], then one call tries it again (what
//!   ends a flight, giving a lease back or telling the fleet, goes around
//!   it, bounded by the timeout alone);
//! * encryption at rest with AES-256-GCM when an [`EncryptionKey`] is given,
//!   the key name bound as additional authenticated data;
//! * the key layout, `<prefix>:{<hash>}:token` and `…:lease`, the hash
//!   covering the token identity and a keyed or memory-hard fingerprint of
//!   its credential (see [`SharedTokenStore::keys`]): the braces are a
//!   Redis Cluster hash tag, so a token and its lease share a slot;
//! * one subscription to `<prefix>:events`, shared by every cache using the
//!   handle: a lease holder publishes the (sealed) value it stored there,
//!   so waiting processes adopt it at once, and a process that got a 401
//!   names the rejected token there (by a SHA-256), so every process drops
//!   it.
//!
//! One process of a fleet fetches while holding the lease, renewing it
//! every third of [`StoreOptions::lease_ttl`] while it fetches; the others
//! wait for its message, and look by themselves about once a second, which
//! also notices a holder that died once its lease runs out. A stored token
//! has the time left the store gives its entry, by the store's clock.
//!
//! A [`ManagedToken`](crate::ManagedToken) built with
//! [`store`](crate::cache::ManagedTokenBuilder::store) consults the store only
//! when its own copy is missing or due for refresh; a fresh token is still
//! served from memory in nanoseconds. A store that fails, is slow or holds
//! garbage never makes a fetch fail: the cache then fetches by itself.
//!
//! Stores here: [`MemoryStore`] (one process, for tests) and [`FileStore`]
//! (one machine). The `authmux-redis` crate has a Redis store for fleets.

mod file;
mod memory;
mod seal;
pub(crate) mod stored;

pub use file::FileStore;
pub use memory::MemoryStore;
pub use seal::EncryptionKey;

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;

use crate::source::TokenIdentity;

/// A value read from a store with the time it has left by the store's own
/// clock, which every process of a fleet shares: a writer whose clock is
/// fast or slow cannot stretch a token's life through it.
#[derive(Clone, PartialEq, Eq)]
pub struct StoredEntry {
    /// The bytes stored.
    pub value: Vec<u8>,
    /// How long the store keeps it from now (Redis `PTTL`).
    pub ttl: Duration,
}

impl fmt::Debug for StoredEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The value may be a plaintext token.
        f.debug_struct("StoredEntry")
            .field("value", &format_args!("[{} bytes]", self.value.len()))
            .field("ttl", &self.ttl)
            .finish()
    }
}

/// Receives the messages published on a store channel this process
/// subscribed to; see [`TokenStore::subscribe`]. It must not block.
pub type MessageSink = Arc<dyn Fn(&[u8]) + Send + Sync>;

/// A key-value store that tokens are shared through.
///
/// Values are opaque bytes (sealed tokens and lease holders); keys are
/// printable ASCII without spaces, such as `authmux:{3q2-…}:token`.
/// Implementations need not add timeouts or retries:
/// [`SharedTokenStore`] bounds every call and stops calling a store that
/// fails.
///
/// Implement it to share tokens through another backend (DynamoDB, etcd, …);
/// [`MemoryStore`] is the reference implementation.
#[async_trait]
pub trait TokenStore: Send + Sync + 'static {
    /// What and where the store is, for `authmux check` and logs: `file
    /// /home/me/.cache/authmux`, `redis redis://cache:6379/0`. Never a
    /// password.
    fn describe(&self) -> String;

    /// The value under `key` and the time it has left by the store's own
    /// clock, unless it is missing or expired. Read together, in one round
    /// trip where the backend allows it.
    async fn get(&self, key: &str) -> Result<Option<StoredEntry>, StoreError>;

    /// Sets `key` to `value`, expiring after `ttl`.
    async fn put(&self, key: &str, value: &[u8], ttl: Duration) -> Result<(), StoreError>;

    /// Deletes `key` if, and only if, it still holds `expected`, atomically.
    /// Returns whether it was deleted.
    async fn compare_and_delete(&self, key: &str, expected: &[u8]) -> Result<bool, StoreError>;

    /// Takes the lease `key` for `holder` unless someone holds it, for at
    /// most `ttl` (Redis: `SET key holder NX PX ttl`). Returns whether it
    /// was taken. A holder that dies loses the lease when `ttl` runs out.
    async fn try_lease(&self, key: &str, holder: &str, ttl: Duration) -> Result<bool, StoreError>;

    /// [`get`](Self::get) `key` and, if it holds nothing, [`try_lease`]
    /// `lease` for `holder`: in one round trip where the backend allows it
    /// (Redis pipelines `GET`, `PTTL` and `SET NX PX`, which run back to
    /// back). Returns the entry and whether the lease was taken; a store
    /// that takes it although the entry was there gets it back from the
    /// caller.
    ///
    /// [`try_lease`]: Self::try_lease
    async fn get_then_lease(
        &self,
        key: &str,
        lease: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<(Option<StoredEntry>, bool), StoreError> {
        let entry = self.get(key).await?;
        if entry.is_some() {
            return Ok((entry, false));
        }
        let taken = self.try_lease(lease, holder, ttl).await?;
        Ok((None, taken))
    }

    /// Extends the lease `key` to `ttl` from now if, and only if, `holder`
    /// still holds it, atomically. Returns whether it was extended.
    async fn renew_lease(&self, key: &str, holder: &str, ttl: Duration)
    -> Result<bool, StoreError>;

    /// Gives the lease `key` back if `holder` still holds it.
    async fn release_lease(&self, key: &str, holder: &str) -> Result<bool, StoreError> {
        self.compare_and_delete(key, holder.as_bytes()).await
    }

    /// Sends `message` to every process subscribed to `channel` (Redis
    /// `PUBLISH`). A store without messages does nothing, the default.
    async fn publish(&self, channel: &str, message: &[u8]) -> Result<(), StoreError> {
        let _ = (channel, message);
        Ok(())
    }

    /// [`put`](Self::put), then [`publish`](Self::publish) `message` on
    /// `channel`: in one round trip where the backend allows it (Redis
    /// pipelines them), so that waiting processes hear of a stored token
    /// as soon as it is there.
    async fn put_and_publish(
        &self,
        key: &str,
        value: &[u8],
        ttl: Duration,
        channel: &str,
        message: &[u8],
    ) -> Result<(), StoreError> {
        self.put(key, value, ttl).await?;
        self.publish(channel, message).await
    }

    /// Hands every message later published on `channel` to `sink`, for the
    /// life of the store, across reconnections (a message published while
    /// disconnected may be lost). Called once per channel, before any other
    /// call; it does no I/O itself. Returns `false`, the default, for a
    /// store without messages: waiting processes then look at it on a
    /// schedule instead.
    fn subscribe(&self, channel: &str, sink: MessageSink) -> bool {
        let _ = (channel, sink);
        false
    }

    /// For a store that can block until a lease is given back or its holder
    /// is gone (a file lock), a future that resolves then; `None`, the
    /// default, otherwise.
    fn lease_freed(&self, key: &str) -> Option<Pin<Box<dyn Future<Output = ()> + Send>>> {
        let _ = key;
        None
    }

    /// Checks that the store can be reached and used.
    async fn ping(&self) -> Result<(), StoreError>;

    /// Opens what the store's calls need (a connection, its subscription),
    /// ahead of the first call, so that the first token request does not
    /// wait for it. Sends no command of its own. [`SharedTokenStore`] calls
    /// it once, in the background, when built inside a tokio runtime. Does
    /// nothing by default.
    async fn connect(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

/// `url` with the credentials in it replaced by `***`
/// (`redis://***@cache:6379/0`), for messages and `describe`. A URL that
/// does not parse is shown by its scheme alone (`redis://…`): a password
/// with an unencoded `/`, `#` or `?` would otherwise show through.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, _)) = url.split_once("://") else {
        return "(not a URL)".to_owned();
    };
    let shown_scheme = if !scheme.is_empty()
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
    {
        scheme
    } else {
        "?"
    };
    let hidden = format!("{shown_scheme}://… (not shown: not a valid URL)");
    // An `@` past the host means the user-info holds a `/`, `?` or `#`
    // that ends it early: what parses as a path or port is password.
    let rest = &url[scheme.len() + 3..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    if rest[authority_end..].contains('@') {
        return hidden;
    }
    let Ok(mut parsed) = url::Url::parse(url) else {
        return hidden;
    };
    if parsed.password().is_some() || !parsed.username().is_empty() {
        let _ = parsed.set_username("");
        let _ = parsed.set_password(None);
        let shown = parsed.to_string();
        // The URL crate drops an empty user-info; put the marker back.
        return match shown.split_once("://") {
            Some((scheme, rest)) => format!("{scheme}://***@{rest}"),
            None => shown,
        };
    }
    parsed.to_string()
}

/// Why a store call failed. Logged, never handed to a token's caller: the
/// cache fetches by itself instead.
#[derive(Clone, Debug)]
pub struct StoreError {
    kind: StoreErrorKind,
    message: Cow<'static, str>,
}

/// What kind of store failure a [`StoreError`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum StoreErrorKind {
    /// The store did not answer within the timeout.
    Timeout,
    /// The store could not be reached or refused the call.
    Unavailable,
    /// The circuit breaker is open: the store failed recently and is left
    /// alone for a while.
    CircuitOpen,
    /// The store is misconfigured: a bad URL, a missing key.
    Config,
}

impl StoreError {
    /// A new error; the message is one line without secrets.
    pub fn new(kind: StoreErrorKind, message: impl Into<Cow<'static, str>>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }

    /// The store could not be reached or refused the call.
    pub fn unavailable(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StoreErrorKind::Unavailable, message)
    }

    /// What kind of failure this is.
    pub fn kind(&self) -> StoreErrorKind {
        self.kind
    }

    /// The message, without a kind prefix.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for StoreError {}

/// How a [`SharedTokenStore`] calls its store and how caches use it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct StoreOptions {
    /// The first part of every key (default `authmux`), so that several
    /// deployments can share one Redis.
    pub prefix: String,
    /// The longest one store call may take (default 200 ms).
    pub timeout: Duration,
    /// How long a failing store is left alone before one call tries it
    /// again (default 5 s).
    pub breaker_period: Duration,
    /// How long a lease lasts unless renewed (default 2 s). The holder
    /// renews it every third of this while it fetches, up to its fetch
    /// deadline, so a slow fetch keeps its lease and a holder that died is
    /// noticed within this time plus one look (about a second).
    pub lease_ttl: Duration,
    /// How long a process waits for the token of another one that holds
    /// the lease before fetching its own, at most half the fetch deadline
    /// (default 20 s: a live holder keeps its lease, so waiting is the
    /// rule and this only bounds a holder stuck without dying).
    pub lease_wait: Duration,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            prefix: "authmux".to_owned(),
            timeout: Duration::from_millis(200),
            breaker_period: Duration::from_secs(5),
            lease_ttl: Duration::from_secs(2),
            lease_wait: Duration::from_secs(20),
        }
    }
}

/// A cheap, clonable handle to a [`TokenStore`] with timeouts, a circuit
/// breaker and, given a key, encryption. Hand one to every
/// [`ManagedToken`](crate::ManagedToken) that should share tokens.
#[derive(Clone)]
pub struct SharedTokenStore {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn TokenStore>,
    options: StoreOptions,
    key: Option<EncryptionKey>,
    breaker: Breaker,
    /// Where the store's messages are dispatched to the waiting flights and
    /// caches of this process.
    topics: Arc<Topics>,
    /// Whether the store delivers messages (else waiters look on a
    /// schedule).
    subscribed: bool,
    /// The channel every process of this prefix publishes on.
    channel: String,
}

impl fmt::Debug for SharedTokenStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedTokenStore")
            .field("store", &self.inner.store.describe())
            .field("options", &self.inner.options)
            .field("encrypted", &self.inner.key.is_some())
            .finish()
    }
}

/// Builds a [`SharedTokenStore`]; see [`SharedTokenStore::builder`].
pub struct SharedTokenStoreBuilder {
    store: Arc<dyn TokenStore>,
    options: StoreOptions,
    key: Option<EncryptionKey>,
}

impl fmt::Debug for SharedTokenStoreBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedTokenStoreBuilder")
            .field("store", &self.store.describe())
            .field("options", &self.options)
            .field("encrypted", &self.key.is_some())
            .finish()
    }
}

impl SharedTokenStoreBuilder {
    /// All the options at once.
    pub fn options(mut self, options: StoreOptions) -> Self {
        self.options = options;
        self
    }

    /// See [`StoreOptions::prefix`].
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.options.prefix = prefix.into();
        self
    }

    /// See [`StoreOptions::timeout`].
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.options.timeout = timeout;
        self
    }

    /// See [`StoreOptions::breaker_period`].
    pub fn breaker_period(mut self, period: Duration) -> Self {
        self.options.breaker_period = period;
        self
    }

    /// See [`StoreOptions::lease_ttl`].
    pub fn lease_ttl(mut self, ttl: Duration) -> Self {
        self.options.lease_ttl = ttl;
        self
    }

    /// See [`StoreOptions::lease_wait`].
    pub fn lease_wait(mut self, wait: Duration) -> Self {
        self.options.lease_wait = wait;
        self
    }

    /// Seals every value with `key` (AES-256-GCM). Values that do not open
    /// with it, plaintext ones included, are misses.
    pub fn encryption_key(mut self, key: EncryptionKey) -> Self {
        self.key = Some(key);
        self
    }

    /// Builds the handle, and subscribes it to the store's messages: one
    /// subscription per handle, shared by every cache using it. Inside a
    /// tokio runtime, the store connects in the background now
    /// ([`TokenStore::connect`]), once; a failure is left to the first call,
    /// which tries again.
    pub fn build(self) -> SharedTokenStore {
        let topics = Arc::new(Topics::default());
        let channel = format!("{}:events", self.options.prefix);
        let sink_topics = Arc::clone(&topics);
        let subscribed = self.store.subscribe(
            &channel,
            Arc::new(move |message: &[u8]| sink_topics.dispatch(message)),
        );
        let shared = SharedTokenStore {
            inner: Arc::new(Inner {
                breaker: Breaker::new(self.options.breaker_period),
                store: self.store,
                options: self.options,
                key: self.key,
                topics,
                subscribed,
                channel,
            }),
        };
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let store = Arc::clone(&shared.inner.store);
            runtime.spawn(async move {
                if let Err(error) = store.connect().await {
                    tracing::debug!(error = %error, "the store is not connected yet");
                }
            });
        }
        shared
    }
}

impl<T: TokenStore> From<T> for SharedTokenStore {
    fn from(store: T) -> Self {
        Self::builder(store).build()
    }
}

/// Where a token and its lease live in a store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreKeys {
    /// The sealed token.
    pub token: String,
    /// The lease of the process fetching it.
    pub lease: String,
}

impl SharedTokenStore {
    /// Starts building a handle to `store`, with default options and no
    /// encryption.
    pub fn builder(store: impl TokenStore) -> SharedTokenStoreBuilder {
        Self::builder_arc(Arc::new(store))
    }

    /// [`builder`](Self::builder) for a store already behind an `Arc`.
    pub fn builder_arc(store: Arc<dyn TokenStore>) -> SharedTokenStoreBuilder {
        SharedTokenStoreBuilder {
            store,
            options: StoreOptions::default(),
            key: None,
        }
    }

    /// What and where the store is.
    pub fn describe(&self) -> String {
        self.inner.store.describe()
    }

    /// The options.
    pub fn options(&self) -> &StoreOptions {
        &self.inner.options
    }

    /// Whether values are sealed with an encryption key.
    pub fn is_encrypted(&self) -> bool {
        self.inner.key.is_some()
    }

    /// Checks that the store answers, within the timeout (the breaker is
    /// bypassed, so that a check always really asks).
    pub async fn ping(&self) -> Result<(), StoreError> {
        match tokio::time::timeout(self.inner.options.timeout, self.inner.store.ping()).await {
            Ok(result) => result,
            Err(_) => Err(self.timed_out()),
        }
    }

    /// The keys of the token `identity` describes: a SHA-256 of every part
    /// of the identity and of the credential's fingerprint, under the
    /// prefix, in a Redis Cluster hash tag.
    ///
    /// The credential's fingerprint is an HMAC-SHA256 under a key derived
    /// from the encryption key when there is one; without one it is
    /// Argon2id (19 MiB, 2 passes), salted with the identity, so that
    /// nobody who reads key names can test guesses of the secret cheaply.
    /// That costs tens of milliseconds of CPU: call this once per client,
    /// off the async threads.
    pub fn keys(&self, identity: &TokenIdentity) -> StoreKeys {
        let prefix = &self.inner.options.prefix;
        let hash = match identity.credential() {
            None => identity.fingerprint(),
            Some(credential) => {
                let salt = identity.fingerprint();
                let fingerprint = match &self.inner.key {
                    Some(key) => key.fingerprint(salt.as_bytes(), credential.secret()),
                    None => seal::slow_fingerprint(salt.as_bytes(), credential.secret()),
                };
                combine(&salt, &fingerprint)
            }
        };
        StoreKeys {
            token: format!("{prefix}:{{{hash}}}:token"),
            lease: format!("{prefix}:{{{hash}}}:lease"),
        }
    }

    /// Whether the store delivers messages to waiting processes.
    pub(crate) fn is_subscribed(&self) -> bool {
        self.inner.subscribed
    }

    /// The topic of `token_key`: where this process learns that a token was
    /// stored or invalidated there.
    pub(crate) fn topic(&self, token_key: &str) -> Arc<Topic> {
        self.inner.topics.topic(token_key)
    }

    /// A future that resolves when `lease` may be free, for stores that
    /// can tell.
    pub(crate) fn lease_freed(
        &self,
        lease: &str,
    ) -> Option<Pin<Box<dyn Future<Output = ()> + Send>>> {
        self.inner.store.lease_freed(lease)
    }

    fn timed_out(&self) -> StoreError {
        StoreError::new(
            StoreErrorKind::Timeout,
            format!(
                "the token store did not answer within {} ms",
                self.inner.options.timeout.as_millis()
            ),
        )
    }

    /// Runs one store call under the breaker and the timeout.
    async fn call<T>(
        &self,
        call: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        if !self.inner.breaker.admit() {
            return Err(StoreError::new(
                StoreErrorKind::CircuitOpen,
                "the token store failed recently; not asking it for a while",
            ));
        }
        self.call_unguarded(call).await
    }

    /// Runs one store call under the timeout whatever the breaker says:
    /// for what ends a flight (giving a lease back, renewing it, telling
    /// the fleet), which must not be skipped because another call failed.
    async fn call_unguarded<T>(
        &self,
        call: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let outcome = match tokio::time::timeout(self.inner.options.timeout, call).await {
            Ok(outcome) => outcome,
            Err(_) => Err(self.timed_out()),
        };
        match &outcome {
            Ok(_) => self.inner.breaker.succeeded(&self.describe()),
            Err(error) => self.inner.breaker.failed(&self.describe(), error),
        }
        outcome
    }

    pub(crate) async fn get(&self, key: &str) -> Result<Option<StoredEntry>, StoreError> {
        self.call(self.inner.store.get(key)).await
    }

    pub(crate) async fn put(
        &self,
        key: &str,
        value: &[u8],
        ttl: Duration,
    ) -> Result<(), StoreError> {
        self.call(self.inner.store.put(key, value, ttl)).await
    }

    pub(crate) async fn compare_and_delete(
        &self,
        key: &str,
        expected: &[u8],
    ) -> Result<bool, StoreError> {
        self.call(self.inner.store.compare_and_delete(key, expected))
            .await
    }

    /// The first look at a token and the lease attempt, under the breaker
    /// and the timeout.
    pub(crate) async fn get_then_lease(
        &self,
        keys: &StoreKeys,
        holder: &str,
    ) -> Result<(Option<StoredEntry>, bool), StoreError> {
        let ttl = self.inner.options.lease_ttl;
        self.call(
            self.inner
                .store
                .get_then_lease(&keys.token, &keys.lease, holder, ttl),
        )
        .await
    }

    pub(crate) async fn try_lease(&self, key: &str, holder: &str) -> Result<bool, StoreError> {
        let ttl = self.inner.options.lease_ttl;
        self.call(self.inner.store.try_lease(key, holder, ttl))
            .await
    }

    /// Gives a lease back, whatever the breaker says.
    pub(crate) async fn release_lease(&self, key: &str, holder: &str) -> Result<bool, StoreError> {
        self.call_unguarded(self.inner.store.release_lease(key, holder))
            .await
    }

    /// Extends a lease this process holds, whatever the breaker says.
    pub(crate) async fn renew_lease(&self, key: &str, holder: &str) -> Result<bool, StoreError> {
        let ttl = self.inner.options.lease_ttl;
        self.call_unguarded(self.inner.store.renew_lease(key, holder, ttl))
            .await
    }

    /// Stores `value` and, for a store with messages, tells every process
    /// that it is there, in one round trip where the store allows it.
    pub(crate) async fn put_and_announce(
        &self,
        key: &str,
        value: &[u8],
        ttl: Duration,
    ) -> Result<(), StoreError> {
        if !self.inner.subscribed {
            return self.put(key, value, ttl).await;
        }
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
        let message = Event::Stored(key, ttl_ms, value).encode();
        self.call(
            self.inner
                .store
                .put_and_publish(key, value, ttl, &self.inner.channel, &message),
        )
        .await
    }

    /// Tells every subscribed process about `event`, whatever the breaker
    /// says; nothing for a store without messages.
    pub(crate) async fn publish(&self, event: &Event<'_>) -> Result<(), StoreError> {
        if !self.inner.subscribed {
            return Ok(());
        }
        let message = event.encode();
        self.call_unguarded(self.inner.store.publish(&self.inner.channel, &message))
            .await
    }

    /// The bytes to store for `plaintext` under `key`: sealed if there is a
    /// key, else marked plaintext.
    pub(crate) fn seal(&self, key: &str, plaintext: &[u8]) -> Result<Vec<u8>, StoreError> {
        seal::seal(self.inner.key.as_ref(), key, plaintext)
    }

    /// The plaintext of a stored value, or why it is unusable (tampered,
    /// another key, malformed).
    pub(crate) fn open(
        &self,
        key: &str,
        value: &[u8],
    ) -> Result<secrecy::zeroize::Zeroizing<Vec<u8>>, &'static str> {
        seal::open(self.inner.key.as_ref(), key, value)
    }
}

/// Store work left to run in the background (a lease given back, the
/// fleet told), counted across the process so that a short-lived one can
/// wait for it before it exits: see [`settle`].
struct Background {
    running: std::sync::atomic::AtomicUsize,
    idle: tokio::sync::Notify,
}

static BACKGROUND: Background = Background {
    running: std::sync::atomic::AtomicUsize::new(0),
    idle: tokio::sync::Notify::const_new(),
};

/// Counts one piece of background work while it lives, however it ends.
struct Running;

impl Running {
    fn start() -> Self {
        BACKGROUND.running.fetch_add(1, Ordering::AcqRel);
        Self
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if BACKGROUND.running.fetch_sub(1, Ordering::AcqRel) == 1 {
            BACKGROUND.idle.notify_waiters();
        }
    }
}

/// Runs store work in the background on `runtime`, counted for [`settle`].
pub(crate) fn spawn_background(
    runtime: &tokio::runtime::Handle,
    work: impl Future<Output = ()> + Send + 'static,
) {
    let running = Running::start();
    runtime.spawn(async move {
        work.await;
        drop(running);
    });
}

/// Waits until this process's background store work has finished: leases
/// given back, the fleet told of a stored or rejected token. Each piece is
/// bounded by its store's timeout. A process that exits right after getting
/// a token (one `authmux token` run) calls this first, so that it leaves no
/// lease behind for the fleet to wait out; a long-lived one never needs to.
pub async fn settle() {
    loop {
        let idle = BACKGROUND.idle.notified();
        let mut idle = std::pin::pin!(idle);
        idle.as_mut().enable();
        if BACKGROUND.running.load(Ordering::Acquire) == 0 {
            return;
        }
        idle.await;
    }
}

/// The hash in a key of a token that depends on a secret: the identity's
/// fingerprint and the credential's, hashed together.
fn combine(identity: &str, credential: &[u8; 32]) -> String {
    use base64::Engine as _;
    let mut context = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    context.update(b"authmux store key v2\0");
    context.update(identity.as_bytes());
    context.update(b"\0");
    context.update(credential);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(context.finish().as_ref())
}

/// What one process tells the others through the store's channel. The
/// message names a token key; a stored token's message carries the value
/// just stored (sealed, when there is a key: the same bytes anyone who can
/// read the key reads) and its time left, so a waiting process adopts it
/// without another round trip; an invalidation carries a SHA-256 of the
/// rejected token, never the token.
#[derive(Clone, PartialEq, Eq)]
pub(crate) enum Event<'a> {
    /// This value was stored under the key, to expire in this many
    /// milliseconds.
    Stored(&'a str, u64, &'a [u8]),
    /// The key's lease was given back without a token.
    Released(&'a str),
    /// The token with this hash, stored under the key, was rejected.
    Invalidated(&'a str, &'a str),
}

impl<'a> Event<'a> {
    fn encode(&self) -> Vec<u8> {
        match self {
            Self::Stored(key, ttl_ms, value) => {
                let mut message = format!("v {key} {ttl_ms} ").into_bytes();
                message.extend_from_slice(value);
                message
            }
            Self::Released(key) => format!("r {key}").into_bytes(),
            Self::Invalidated(key, hash) => format!("i {key} {hash}").into_bytes(),
        }
    }

    fn decode(message: &'a [u8]) -> Option<Self> {
        let mut parts = message.splitn(4, |byte| *byte == b' ');
        let kind = parts.next()?;
        let key = std::str::from_utf8(parts.next()?).ok()?;
        match kind {
            b"v" => {
                let ttl_ms = std::str::from_utf8(parts.next()?).ok()?.parse().ok()?;
                Some(Self::Stored(key, ttl_ms, parts.next()?))
            }
            b"r" => Some(Self::Released(key)),
            b"i" => {
                let hash = std::str::from_utf8(parts.next()?).ok()?;
                Some(Self::Invalidated(key, hash))
            }
            _ => None,
        }
    }
}

impl fmt::Debug for Event<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            // The value may be a plaintext token.
            Self::Stored(key, ttl_ms, value) => f
                .debug_tuple("Stored")
                .field(key)
                .field(ttl_ms)
                .field(&format_args!("[{} bytes]", value.len()))
                .finish(),
            Self::Released(key) => f.debug_tuple("Released").field(key).finish(),
            Self::Invalidated(key, hash) => {
                f.debug_tuple("Invalidated").field(key).field(hash).finish()
            }
        }
    }
}

/// The topics of one store handle, by token key.
#[derive(Default)]
struct Topics {
    topics: Mutex<HashMap<String, Weak<Topic>>>,
}

impl Topics {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Weak<Topic>>> {
        self.topics
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn topic(&self, key: &str) -> Arc<Topic> {
        let mut topics = self.lock();
        if let Some(topic) = topics.get(key).and_then(Weak::upgrade) {
            return topic;
        }
        topics.retain(|_, topic| topic.strong_count() > 0);
        let topic = Arc::new(Topic::default());
        topics.insert(key.to_owned(), Arc::downgrade(&topic));
        topic
    }

    fn dispatch(&self, message: &[u8]) {
        let Some(event) = Event::decode(message) else {
            return;
        };
        let key = match &event {
            Event::Stored(key, _, _) | Event::Released(key) | Event::Invalidated(key, _) => *key,
        };
        let Some(topic) = self.lock().get(key).and_then(Weak::upgrade) else {
            return;
        };
        match event {
            Event::Invalidated(_, hash) => {
                if let Some(invalidated) = topic.on_invalidated.get() {
                    invalidated(hash);
                }
            }
            Event::Stored(_, ttl_ms, value) => {
                *topic.lock_latest() = Some(Heard {
                    value: value.to_vec(),
                    ttl: Duration::from_millis(ttl_ms),
                    at: Instant::now(),
                });
            }
            Event::Released(_) => {}
        }
        topic.changes.fetch_add(1, Ordering::AcqRel);
        topic.changed.notify_waiters();
    }
}

/// What this process hears about one token key.
#[derive(Default)]
pub(crate) struct Topic {
    changes: AtomicU64,
    changed: tokio::sync::Notify,
    on_invalidated: OnceLock<InvalidatedHook>,
    /// The value another process said it stored last.
    latest: Mutex<Option<Heard>>,
}

/// A stored value as a message told of it, and when.
struct Heard {
    value: Vec<u8>,
    ttl: Duration,
    at: Instant,
}

/// What a cache does when another process rejects a token: given its hash.
pub(crate) type InvalidatedHook = Box<dyn Fn(&str) + Send + Sync>;

impl Topic {
    /// A count of the messages heard so far: take it before a look at the
    /// store, and [`changed_since`](Self::changed_since) misses nothing.
    pub(crate) fn changes(&self) -> u64 {
        self.changes.load(Ordering::Acquire)
    }

    /// Resolves once a message has been heard since `seen`.
    pub(crate) async fn changed_since(&self, seen: u64) {
        loop {
            let notified = self.changed.notified();
            let mut notified = std::pin::pin!(notified);
            notified.as_mut().enable();
            if self.changes() != seen {
                return;
            }
            notified.await;
        }
    }

    fn lock_latest(&self) -> std::sync::MutexGuard<'_, Option<Heard>> {
        self.latest
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The value another process said it stored last, with the time it has
    /// left now, if any is left: what a waiter adopts without asking the
    /// store.
    pub(crate) fn latest(&self) -> Option<StoredEntry> {
        let latest = self.lock_latest();
        let heard = latest.as_ref()?;
        let ttl = heard.ttl.checked_sub(heard.at.elapsed())?;
        Some(StoredEntry {
            value: heard.value.clone(),
            ttl,
        })
    }

    /// Calls `invalidated` with the hash of every token another process
    /// rejects (the first caller's function stays).
    pub(crate) fn on_invalidated(&self, invalidated: InvalidatedHook) {
        let _ = self.on_invalidated.set(invalidated);
    }
}

/// A circuit breaker: closed while calls succeed; open for one period after
/// a failure, refusing calls at once; then half-open, letting one call try.
struct Breaker {
    period: Duration,
    /// `None` when closed; otherwise calls are refused until this instant,
    /// after which the first caller moves it one period on and tries.
    open_until: Mutex<Option<Instant>>,
}

impl Breaker {
    fn new(period: Duration) -> Self {
        Self {
            period,
            open_until: Mutex::new(None),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Instant>> {
        self.open_until
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn admit(&self) -> bool {
        let mut open_until = self.lock();
        match *open_until {
            None => true,
            Some(until) => {
                let now = Instant::now();
                if now < until {
                    return false;
                }
                // Half-open: this caller tries; the others keep waiting.
                *open_until = Some(now + self.period);
                true
            }
        }
    }

    fn succeeded(&self, store: &str) {
        let mut open_until = self.lock();
        if open_until.take().is_some() {
            tracing::info!(store, "the token store answers again; sharing tokens");
        }
    }

    fn failed(&self, store: &str, error: &StoreError) {
        let mut open_until = self.lock();
        if open_until.is_none() {
            tracing::warn!(
                store,
                error = %error,
                pause_ms = self.period.as_millis() as u64,
                "the token store failed; fetching tokens without it for a while"
            );
        }
        *open_until = Some(Instant::now() + self.period);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A memory store that reports when it is asked to connect.
    struct Connects {
        memory: MemoryStore,
        connected: std::sync::Mutex<Option<tokio::sync::oneshot::Sender<()>>>,
    }

    #[async_trait]
    impl TokenStore for Connects {
        fn describe(&self) -> String {
            "connects".to_owned()
        }

        async fn get(&self, key: &str) -> Result<Option<StoredEntry>, StoreError> {
            self.memory.get(key).await
        }

        async fn put(&self, key: &str, value: &[u8], ttl: Duration) -> Result<(), StoreError> {
            self.memory.put(key, value, ttl).await
        }

        async fn compare_and_delete(&self, key: &str, expected: &[u8]) -> Result<bool, StoreError> {
            self.memory.compare_and_delete(key, expected).await
        }

        async fn try_lease(
            &self,
            key: &str,
            holder: &str,
            ttl: Duration,
        ) -> Result<bool, StoreError> {
            self.memory.try_lease(key, holder, ttl).await
        }

        async fn renew_lease(
            &self,
            key: &str,
            holder: &str,
            ttl: Duration,
        ) -> Result<bool, StoreError> {
            self.memory.renew_lease(key, holder, ttl).await
        }

        async fn ping(&self) -> Result<(), StoreError> {
            Ok(())
        }

        async fn connect(&self) -> Result<(), StoreError> {
            if let Some(connected) = self.connected.lock().expect("lock").take() {
                let _ = connected.send(());
            }
            Ok(())
        }
    }

    #[tokio::test]
    async fn a_store_built_in_a_runtime_connects_before_its_first_call() {
        let (sender, connected) = tokio::sync::oneshot::channel();
        let store = SharedTokenStore::from(Connects {
            memory: MemoryStore::new(),
            connected: std::sync::Mutex::new(Some(sender)),
        });
        tokio::time::timeout(Duration::from_secs(30), connected)
            .await
            .expect("connected without a call")
            .expect("sent");
        drop(store);

        // Outside a runtime there is nothing to connect in: the first call does.
        let (sender, mut connected) = tokio::sync::oneshot::channel();
        let outside = std::thread::spawn(move || {
            SharedTokenStore::from(Connects {
                memory: MemoryStore::new(),
                connected: std::sync::Mutex::new(Some(sender)),
            })
        })
        .join()
        .expect("built");
        tokio::task::yield_now().await;
        assert!(connected.try_recv().is_err(), "not connected");
        drop(outside);
    }

    #[test]
    fn urls_lose_their_credentials() {
        assert_eq!(
            redact_url("redis://user:pa55@cache:6379/0"),
            "redis://***@cache:6379/0"
        );
        assert_eq!(
            redact_url("rediss://:pa55@cache/0?x=y"),
            "rediss://***@cache/0?x=y"
        );
        assert_eq!(redact_url("redis://cache:6379"), "redis://cache:6379");
        assert_eq!(redact_url("pa55"), "(not a URL)");
    }

    #[test]
    fn a_password_with_a_slash_hash_or_question_mark_is_never_shown() {
        // `openssl rand -base64` passwords hold `/`; people paste them unencoded.
        for (url, secret) in [
            ("redis://:ab/cd+ef@cache:6379/0", "cd+ef"),
            ("redis://:12/3456@cache:6379/0", "3456"),
            ("redis://user:pa#qwe@cache:6379", "qwe"),
            ("rediss://user:pa?qwe@cache", "qwe"),
            ("redis://:x@y/zyx@cache", "zyx"),
            ("rediss://:pa55@cache/0?x=@", "pa55"),
        ] {
            let shown = redact_url(url);
            assert!(!shown.contains(secret), "{url} shown as {shown}");
            assert!(shown.starts_with("redis"), "{shown}");
        }
    }

    #[test]
    fn keys_share_a_hash_tag_and_differ_by_identity() {
        let store = SharedTokenStore::builder(MemoryStore::new())
            .prefix("fleet-a")
            .build();
        let identity = TokenIdentity::new("auth0", "https://t.example/oauth/token")
            .with("client_id", "c1")
            .with("audience", "https://api");
        let keys = store.keys(&identity);
        let tag = |key: &str| {
            let start = key.find('{').expect("tag start");
            let end = key.find('}').expect("tag end");
            key[start..=end].to_owned()
        };
        assert!(keys.token.starts_with("fleet-a:{"), "{}", keys.token);
        assert!(keys.token.ends_with("}:token"));
        assert!(keys.lease.ends_with("}:lease"));
        assert_eq!(tag(&keys.token), tag(&keys.lease));
        assert_eq!(keys, store.keys(&identity.clone()));
        for other in [
            identity.clone().with("audience", "https://other"),
            identity.clone().with("organization", "org_1"),
            identity.clone().with("dpop", "thumbprint"),
            TokenIdentity::new("oauth2", "https://t.example/oauth/token")
                .with("client_id", "c1")
                .with("audience", "https://api"),
        ] {
            assert_ne!(store.keys(&other).token, keys.token, "{other}");
        }
    }

    #[test]
    fn messages_round_trip_and_a_stored_value_is_never_shown() {
        let value = b"AMX\x01\x00{\"access_token\":\"tok en\"} \x00\xff".to_vec();
        for event in [
            Event::Stored("p:{h}:token", 3_599_000, &value),
            Event::Released("p:{h}:token"),
            Event::Invalidated("p:{h}:token", "hash-of-it"),
        ] {
            let message = event.encode();
            assert_eq!(Event::decode(&message), Some(event.clone()));
            assert!(!format!("{event:?}").contains("tok en"), "{event:?}");
        }
        assert_eq!(Event::decode(b"v p:{h}:token notanumber x"), None);
        assert_eq!(Event::decode(b"x p:{h}:token"), None);
        assert_eq!(Event::decode(b""), None);
    }

    #[tokio::test(start_paused = true)]
    async fn the_breaker_opens_on_failure_and_lets_one_call_try_after_its_period() {
        let breaker = Breaker::new(Duration::from_secs(5));
        assert!(breaker.admit());
        breaker.failed("memory", &StoreError::unavailable("down"));
        assert!(!breaker.admit());
        tokio::time::advance(Duration::from_millis(4_999)).await;
        assert!(!breaker.admit());
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(breaker.admit(), "half-open: one call tries");
        assert!(!breaker.admit(), "the others keep waiting");
        breaker.succeeded("memory");
        assert!(breaker.admit());
        assert!(breaker.admit());
    }
}
