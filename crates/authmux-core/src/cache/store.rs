//! The second cache level: a flight reads the token store before the
//! provider, takes the fleet's lease before fetching, renews it while it
//! fetches, and waits for another process's token when the lease is taken:
//! woken by the store's message when that token is stored, looking by
//! itself only about once a second.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use secrecy::ExposeSecret as _;
use tokio::sync::OnceCell;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::{Shared, later};
use crate::dpop::Dpop;
use crate::error::Error;
use crate::source::{SharedTokenSource, TokenIdentity};
use crate::store::{
    Event, SharedTokenStore, StoreError, StoreKeys, StoredEntry, Topic, spawn_background, stored,
};
use crate::token::Token;
use crate::wire::HttpClient;

/// How often a waiting process looks at the store by itself when the store
/// wakes it (a message, a lock): a safety net for a lost message and how a
/// holder that died is noticed, once its lease runs out. Jittered up to
/// half as long again, so that waiters do not ask in step.
const LOOK_EVERY: Duration = Duration::from_secs(1);

/// For a store that cannot wake waiters: the pause between two looks
/// while another process holds the lease, for the first
/// [`POLL_STEADY_FOR`], then a quarter longer each time up to
/// [`POLL_MAX`]; every pause jittered. Short, because a holder's fetch
/// usually takes tens of milliseconds.
const POLL_FIRST: Duration = Duration::from_millis(1);
const POLL_STEADY_FOR: Duration = Duration::from_millis(250);
const POLL_GROWTH: f64 = 1.25;
const POLL_MAX: Duration = Duration::from_millis(200);

/// For a store that cannot wake waiters: how often a waiting process asks
/// for the lease again, to take over from a holder that died or gave up.
const LEASE_RETRY: Duration = Duration::from_millis(100);

/// A cache's token store and where its token lives there.
pub(super) struct StoreBinding {
    pub(super) store: SharedTokenStore,
    identity: TokenIdentity,
    /// The keys and topic, worked out on first use: a credential's
    /// fingerprint may take tens of milliseconds.
    bound: OnceCell<Bound>,
    /// The prover that adopted DPoP-bound tokens are bound to.
    dpop: Option<Dpop>,
    /// The client that fetches the tokens: a stored token bound to a
    /// certificate is adopted only while it presents that certificate.
    http: Option<HttpClient>,
}

/// Where a cache's token lives in the store, and what this process hears
/// about it.
pub(super) struct Bound {
    pub(super) keys: StoreKeys,
    topic: Arc<Topic>,
}

impl StoreBinding {
    /// The binding of `source`'s tokens, or `None` when they must not be
    /// shared: DPoP-bound to a key of this process's own.
    pub(super) fn new(
        store: SharedTokenStore,
        source: &SharedTokenSource,
        client: &str,
    ) -> Option<Self> {
        let identity = source.identity();
        let dpop = source.dpop().cloned();
        let bound = dpop.is_some() || identity.get("dpop").is_some();
        if bound && !dpop.as_ref().is_some_and(Dpop::is_key_shared) {
            tracing::debug!(
                client,
                "DPoP tokens bound to a key of this process only are not stored; use dpop.key_file to share them"
            );
            return None;
        }
        Some(Self {
            store,
            identity,
            bound: OnceCell::new(),
            dpop,
            http: source.http_client().cloned(),
        })
    }

    /// The keys and topic once they are known.
    pub(super) fn bound_now(&self) -> Option<&Bound> {
        self.bound.get()
    }
}

/// What a flight brings back: a token, and the bytes it is stored as, if
/// it may be in the store.
pub(super) struct Obtained {
    pub(super) token: Token,
    pub(super) stored: Option<Arc<[u8]>>,
}

impl Obtained {
    fn unstored(token: Token) -> Self {
        Self {
            token,
            stored: None,
        }
    }
}

/// A fetched token and whether the store has it for sure.
struct Put {
    obtained: Obtained,
    in_store: bool,
}

/// Stored values a flight must not adopt, and how fresh an adopted token
/// must be.
struct Unwanted {
    /// The value of the cached token, which the flight is replacing.
    current: Option<Arc<[u8]>>,
    /// Whether a token is cached: the flight is a refresh, and only a token
    /// outside its refresh window is worth adopting.
    refreshing: bool,
}

/// A SHA-256 of a token's text, base64url: how processes name a rejected
/// token to each other without sending it.
pub(super) fn token_hash(token: &Token) -> String {
    let digest = aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA256,
        token.secret().expose_secret().as_bytes(),
    );
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest.as_ref())
}

/// How a waiting process was woken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Woken {
    /// A message about its key: a token stored, or a lease given back.
    Message,
    /// The store says the lease is free.
    LeaseFreed,
    /// Its own look, on schedule.
    Look,
}

/// The lease this process holds while it fetches: renewed in the
/// background up to the fetch deadline, and given back however the flight
/// ends (a token, an error, a panic, a cancelled task), bounded by the
/// store's timeout alone, never by its circuit breaker.
struct HeldLease {
    store: SharedTokenStore,
    token_key: String,
    lease_key: String,
    holder: String,
    renewer: Option<JoinHandle<()>>,
    finished: bool,
}

impl HeldLease {
    fn hold(store: &SharedTokenStore, keys: &StoreKeys, holder: String, deadline: Instant) -> Self {
        let renewer = {
            let store = store.clone();
            let lease = keys.lease.clone();
            let holder = holder.clone();
            let every = store.options().lease_ttl / 3;
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(every).await;
                    if Instant::now() >= deadline {
                        break;
                    }
                    match store.renew_lease(&lease, &holder).await {
                        Ok(true) => {}
                        Ok(false) => {
                            tracing::warn!(
                                "the lease ran out while fetching; another process may fetch too"
                            );
                            break;
                        }
                        Err(error) => {
                            tracing::debug!(error = %error, "lease not renewed; trying again");
                        }
                    }
                }
            })
        };
        Self {
            store: store.clone(),
            token_key: keys.token.clone(),
            lease_key: keys.lease.clone(),
            holder,
            renewer: Some(renewer),
            finished: false,
        }
    }

    /// Gives the lease back in the background (counted for
    /// [`settle`](crate::store::settle), which a short-lived process awaits
    /// before it exits), and, unless `stored` (the put announced the token
    /// already), tells the waiting processes that the lease is free.
    fn finish(mut self, stored: bool) {
        self.finished = true;
        self.give_back(stored);
    }

    fn give_back(&mut self, stored: bool) {
        if let Some(renewer) = self.renewer.take() {
            renewer.abort();
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let store = self.store.clone();
        let token_key = std::mem::take(&mut self.token_key);
        let lease_key = std::mem::take(&mut self.lease_key);
        let holder = std::mem::take(&mut self.holder);
        spawn_background(&runtime, async move {
            if let Err(error) = store.release_lease(&lease_key, &holder).await {
                tracing::debug!(error = %error, "lease not released; it expires by itself");
            }
            if !stored && let Err(error) = store.publish(&Event::Released(&token_key)).await {
                tracing::debug!(error = %error, "waiting processes not told; they look by themselves");
            }
        });
    }
}

impl Drop for HeldLease {
    fn drop(&mut self) {
        if !self.finished {
            // The flight panicked or its task was dropped mid-fetch.
            self.give_back(false);
        }
    }
}

impl Shared {
    /// A token for the flight: through the store when there is one.
    pub(super) async fn obtain(self: &Arc<Self>, deadline: Instant) -> Result<Obtained, Error> {
        match &self.store {
            None => self
                .fetch_with_retries(deadline)
                .await
                .map(Obtained::unstored),
            Some(binding) => {
                let bound = match self.bind(binding).await {
                    Ok(bound) => bound,
                    Err(error) => return Err(error),
                };
                let outcome = self.obtain_through(binding, bound, deadline).await;
                // Counted at the flight's outcome: a process that waited
                // for another one's token and took it from the store hit.
                self.metrics.store_read(matches!(outcome, Ok((_, true))));
                outcome.map(|(obtained, _)| obtained)
            }
        }
    }

    /// The binding's keys and topic, worked out once; the topic tells this
    /// cache about tokens the fleet rejects. The identity takes the fields
    /// only known once the credential is read.
    ///
    /// # Errors
    ///
    /// When the credential cannot be read: tried again by the next flight.
    async fn bind<'a>(self: &Arc<Self>, binding: &'a StoreBinding) -> Result<&'a Bound, Error> {
        binding
            .bound
            .get_or_try_init(|| async {
                let store = binding.store.clone();
                let identity = self
                    .source
                    .identity_fields()
                    .await?
                    .into_iter()
                    .fold(binding.identity.clone(), |identity, (key, value)| {
                        identity.with(key, value)
                    });
                let slow = identity.has_secret() && !store.is_encrypted();
                let keys = if slow {
                    let blocking_store = store.clone();
                    let moved = identity.clone();
                    match tokio::task::spawn_blocking(move || blocking_store.keys(&moved)).await {
                        Ok(keys) => keys,
                        Err(_) => store.keys(&identity),
                    }
                } else {
                    store.keys(&identity)
                };
                let topic = store.topic(&keys.token);
                let weak = Arc::downgrade(self);
                topic.on_invalidated(Box::new(move |hash: &str| {
                    if let Some(shared) = weak.upgrade() {
                        shared.invalidated_elsewhere(hash);
                    }
                }));
                Ok(Bound { keys, topic })
            })
            .await
    }

    fn unwanted(&self) -> Unwanted {
        let current = self.current.load_full();
        Unwanted {
            refreshing: current.is_some(),
            current: current.and_then(|slot| slot.stored.clone()),
        }
    }

    /// The token and whether it came from the store.
    async fn obtain_through(
        &self,
        binding: &StoreBinding,
        bound: &Bound,
        deadline: Instant,
    ) -> Result<(Obtained, bool), Error> {
        let store = &binding.store;
        let keys = &bound.keys;
        // Counted before the look: a message that arrives after it wakes
        // the wait below.
        let mut seen = bound.topic.changes();
        let unwanted = self.unwanted();
        let holder = format!("{:032x}", rand::random::<u128>());
        // The first look and the lease attempt in one round trip.
        let (entry, taken) = match store.get_then_lease(keys, &holder).await {
            Ok(looked) => looked,
            Err(error) => return self.fetch_alone(&error, deadline).await,
        };
        // A store that looks and leases apart asks for the lease only when
        // it found nothing; with a value that is not usable (the token being
        // refreshed), the lease is asked for now.
        let lease_tried = taken || entry.is_none();
        if let Some(adopted) = self.adopt(binding, keys, entry, &unwanted) {
            if taken {
                // Nobody waits on a lease that was free: give it back quietly.
                let store = store.clone();
                let lease = keys.lease.clone();
                if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                    spawn_background(&runtime, async move {
                        let _ = store.release_lease(&lease, &holder).await;
                    });
                }
            }
            return Ok((adopted, true));
        }
        if taken {
            // Taken right after the look that found nothing usable.
            return self
                .fetch_as_holder(binding, keys, holder, &unwanted, deadline, false)
                .await;
        }
        // Leave the fetch itself at least half of its deadline.
        let wait = store
            .options()
            .lease_wait
            .min(self.policy.retry.deadline / 2);
        let waiting_since = Instant::now();
        let wait_until = later(waiting_since, wait);
        let mut lease_freed: Option<Pin<Box<dyn Future<Output = ()> + Send>>> = None;
        let woken_by_store = store.is_subscribed() || store.lease_freed(&keys.lease).is_some();
        let mut pause = POLL_FIRST;
        // When the lease was just asked for, wait before asking again.
        let mut lease_tried_at = lease_tried.then(Instant::now);
        let mut woken = if lease_tried {
            Woken::Message
        } else {
            Woken::Look
        };
        // A lock that frees at once (its holder keeps no lock) is not waited
        // on again until the next look: no spinning on it.
        let mut lock_is_telling = true;
        loop {
            // A store that wakes waiters is asked for the lease at each
            // wake-up that is not a stored token: a message that the lease
            // is free, the lock's release, its own look. One that cannot is
            // polled, and asked for the lease now and then.
            let try_lease = if woken_by_store {
                woken != Woken::Message
            } else {
                lease_tried_at.is_none_or(|at| at.elapsed() >= LEASE_RETRY)
            };
            if try_lease {
                lease_tried_at = Some(Instant::now());
                match store.try_lease(&keys.lease, &holder).await {
                    Ok(true) => {
                        return self
                            .fetch_as_holder(binding, keys, holder, &unwanted, deadline, true)
                            .await;
                    }
                    Ok(false) => {}
                    Err(error) => return self.fetch_alone(&error, deadline).await,
                }
            }
            let now = Instant::now();
            if now >= wait_until {
                tracing::info!(
                    waited_ms = wait.as_millis() as u64,
                    "no token from the process holding the lease; fetching one here"
                );
                return self
                    .fetch_and_put(binding, keys, deadline)
                    .await
                    .map(|put| (put.obtained, false));
            }
            let look_at = if woken_by_store {
                later(now, LOOK_EVERY.mul_f64(1.0 + rand::random::<f64>() / 2.0))
            } else {
                let nap = pause.mul_f64(0.5 + rand::random::<f64>() / 2.0);
                if now.duration_since(waiting_since) >= POLL_STEADY_FOR {
                    pause = pause.mul_f64(POLL_GROWTH).min(POLL_MAX);
                }
                later(now, nap)
            }
            .min(wait_until);
            if lease_freed.is_none() && lock_is_telling {
                lease_freed = store.lease_freed(&keys.lease);
            }
            let armed_at = Instant::now();
            woken = tokio::select! {
                () = bound.topic.changed_since(seen) => Woken::Message,
                () = async {
                    match lease_freed.as_mut() {
                        Some(freed) => freed.await,
                        None => std::future::pending().await,
                    }
                } => {
                    lease_freed = None;
                    lock_is_telling = armed_at.elapsed() >= Duration::from_millis(5);
                    Woken::LeaseFreed
                }
                () = tokio::time::sleep_until(look_at) => {
                    lock_is_telling = true;
                    Woken::Look
                }
            };
            seen = bound.topic.changes();
            // A stored token is looked for when a message says so, or on
            // every look of a store that cannot say.
            if woken == Woken::Message
                && let Some(adopted) = self.adopt(binding, keys, bound.topic.latest(), &unwanted)
            {
                // The message carried the value: no round trip.
                return Ok((adopted, true));
            }
            if woken == Woken::Message || !woken_by_store {
                match store.get(&keys.token).await {
                    Ok(entry) => {
                        if let Some(adopted) = self.adopt(binding, keys, entry, &unwanted) {
                            return Ok((adopted, true));
                        }
                    }
                    Err(error) => return self.fetch_alone(&error, deadline).await,
                }
                if woken == Woken::Message {
                    // No token after all (the lease was given back without
                    // one): ask for the lease at once.
                    woken = Woken::LeaseFreed;
                }
            }
        }
    }

    /// Fetches while holding the fleet's lease, unless (with `look_first`,
    /// when the lease was taken apart from the look that found nothing) a
    /// token was stored meanwhile; then stores it, tells the fleet, and
    /// gives the lease back.
    async fn fetch_as_holder(
        &self,
        binding: &StoreBinding,
        keys: &StoreKeys,
        holder: String,
        unwanted: &Unwanted,
        deadline: Instant,
        look_first: bool,
    ) -> Result<(Obtained, bool), Error> {
        let lease = HeldLease::hold(&binding.store, keys, holder, deadline);
        if look_first {
            let stored_meanwhile = binding.store.get(&keys.token).await.ok().flatten();
            if let Some(adopted) = self.adopt(binding, keys, stored_meanwhile, unwanted) {
                lease.finish(false);
                return Ok((adopted, true));
            }
        }
        match self.fetch_and_put(binding, keys, deadline).await {
            Ok(put) => {
                lease.finish(put.in_store);
                Ok((put.obtained, false))
            }
            Err(error) => {
                lease.finish(false);
                Err(error)
            }
        }
    }

    async fn fetch_and_put(
        &self,
        binding: &StoreBinding,
        keys: &StoreKeys,
        deadline: Instant,
    ) -> Result<Put, Error> {
        let token = self.fetch_with_retries(deadline).await?;
        let (stored, in_store) = self.put(binding, keys, &token).await;
        Ok(Put {
            obtained: Obtained { token, stored },
            in_store,
        })
    }

    /// Fetches without the store, which just failed.
    async fn fetch_alone(
        &self,
        error: &StoreError,
        deadline: Instant,
    ) -> Result<(Obtained, bool), Error> {
        tracing::debug!(error = %error, "fetching without the token store");
        self.fetch_with_retries(deadline)
            .await
            .map(|token| (Obtained::unstored(token), false))
    }

    /// Stores `token` until it expires. Returns the bytes it was stored as,
    /// also when the store's answer was lost (it may hold them all the
    /// same, and an invalidation must then delete them), and whether the
    /// store said it has them.
    async fn put(
        &self,
        binding: &StoreBinding,
        keys: &StoreKeys,
        token: &Token,
    ) -> (Option<Arc<[u8]>>, bool) {
        let ttl = token.expires_in();
        if ttl.is_zero() {
            return (None, false);
        }
        let json = stored::encode(token);
        let value: Arc<[u8]> = match binding.store.seal(&keys.token, &json) {
            Ok(value) => Arc::from(value),
            Err(error) => {
                tracing::warn!(error = %error, "token not stored");
                return (None, false);
            }
        };
        match binding
            .store
            .put_and_announce(&keys.token, &value, ttl)
            .await
        {
            Ok(()) => {
                tracing::debug!(ttl_s = ttl.as_secs(), "token stored");
                (Some(value), true)
            }
            Err(error) => {
                tracing::debug!(error = %error, "token perhaps not stored");
                (Some(value), false)
            }
        }
    }

    /// The token a stored value holds, if it is one this flight may hand
    /// out: it opens with the key under its own name, is well formed, is
    /// not the token being replaced or one the fleet rejected, and is
    /// usable (or, for a refresh, not yet due for one itself) for the time
    /// the store gives it.
    fn adopt(
        &self,
        binding: &StoreBinding,
        keys: &StoreKeys,
        entry: Option<StoredEntry>,
        unwanted: &Unwanted,
    ) -> Option<Obtained> {
        let StoredEntry { value, ttl } = entry?;
        if unwanted
            .current
            .as_ref()
            .is_some_and(|current| **current == *value)
        {
            return None;
        }
        let token = binding
            .store
            .open(&keys.token, &value)
            .and_then(|json| stored::decode(&json, ttl));
        let token = match token {
            Ok(token) => token,
            Err(why) => {
                tracing::warn!(reason = why, "stored token ignored");
                return None;
            }
        };
        // The hash of the token rejected last, here or anywhere in the
        // fleet; read now, since a message may have come while waiting.
        let rejected = self.lock_state().invalidated.clone();
        if rejected.is_some_and(|hash| *hash == *token_hash(&token)) {
            tracing::debug!("stored token was rejected; not adopted");
            return None;
        }
        let presented = binding
            .http
            .as_ref()
            .and_then(HttpClient::client_certificate_thumbprint);
        if token.certificate() != presented.as_deref() {
            tracing::debug!(
                bound = token.certificate().unwrap_or("none"),
                presented = presented.as_deref().unwrap_or("none"),
                "stored token is bound to another client certificate; not adopted"
            );
            return None;
        }
        let token = match &binding.dpop {
            None => token,
            Some(dpop) => match dpop.bind(token) {
                Ok(token) => token,
                Err(error) => {
                    tracing::warn!(error = %error, "stored token ignored");
                    return None;
                }
            },
        };
        let schedule = self.policy.schedule(&token, rand::random::<f64>());
        let good_until = if unwanted.refreshing {
            schedule.refresh_at
        } else {
            schedule.stale_at
        };
        if Instant::now() >= good_until || token.is_expired() {
            tracing::debug!("stored token too close to its expiry; not adopted");
            return None;
        }
        tracing::debug!(
            expires_in_s = token.expires_in().as_secs(),
            "token adopted from the store"
        );
        Some(Obtained {
            token,
            stored: Some(Arc::from(value)),
        })
    }

    /// Called when `token` was rejected here: no flight adopts it from the
    /// store again, its stored copy is deleted if the store still holds
    /// it, and the fleet is told to drop it too (by its hash), all in the
    /// background.
    pub(super) fn forget_stored(&self, token: &Token, stored: Option<Arc<[u8]>>) {
        let Some(binding) = &self.store else { return };
        let hash: Arc<str> = Arc::from(token_hash(token));
        self.lock_state().invalidated = Some(Arc::clone(&hash));
        let Some(bound) = binding.bound_now() else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let store = binding.store.clone();
        let key = bound.keys.token.clone();
        let client = Arc::clone(&self.client);
        spawn_background(&runtime, async move {
            if let Some(stored) = stored {
                match store.compare_and_delete(&key, &stored).await {
                    Ok(deleted) => {
                        tracing::debug!(client = %client, deleted, "invalidated token removed from the store");
                    }
                    Err(error) => {
                        tracing::debug!(client = %client, error = %error, "invalidated token left in the store");
                    }
                }
            }
            if let Err(error) = store.publish(&Event::Invalidated(&key, &hash)).await {
                tracing::debug!(client = %client, error = %error, "the fleet was not told of the invalidated token");
            }
        });
    }

    /// Another process rejected the token with this hash: drop it here if
    /// it is the cached one, and never adopt it again.
    fn invalidated_elsewhere(&self, hash: &str) {
        self.lock_state().invalidated = Some(Arc::from(hash));
        let current = self.current.load();
        let Some(slot) = current.as_ref() else {
            return;
        };
        if token_hash(&slot.token) != hash {
            return;
        }
        let previous = self.current.compare_and_swap(&*current, None);
        if previous
            .as_ref()
            .zip(current.as_ref())
            .is_some_and(|(previous, current)| Arc::ptr_eq(previous, current))
        {
            tracing::info!(client = %self.client, "token rejected by another process; dropped");
        }
    }
}
