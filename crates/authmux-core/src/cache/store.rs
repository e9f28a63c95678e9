//! The second cache level: a flight reads the token store before the
//! provider, takes the fleet's lease before fetching, waits for another
//! process's token when the lease is taken, and stores what it fetches.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::{Shared, later};
use crate::dpop::Dpop;
use crate::error::Error;
use crate::source::SharedTokenSource;
use crate::store::{SharedTokenStore, StoreError, StoreKeys, stored};
use crate::token::Token;

/// The pause between two looks at the store while another process holds
/// the lease, for the first [`POLL_STEADY_FOR`]: short, because the
/// holder's fetch usually takes tens of milliseconds and a waiter's latency
/// is the fetch plus the pause that straddles its end. One look every
/// 0.5–1 ms per waiting process is a few tens of thousands of GETs a second
/// for a fleet of 20, for the length of one fetch: little to Redis, and it
/// took the fleet's cold-start p99 from 1.24× a lone process's to 1.17×
/// (a 4 ms pause before). After that each pause is a quarter longer, up to
/// [`POLL_MAX`]. Every pause is jittered.
const POLL_FIRST: Duration = Duration::from_millis(1);
const POLL_STEADY_FOR: Duration = Duration::from_millis(250);
const POLL_GROWTH: f64 = 1.25;
const POLL_MAX: Duration = Duration::from_millis(200);

/// How often a waiting process asks for the lease again, to take over from
/// a holder that died or gave up.
const LEASE_RETRY: Duration = Duration::from_millis(100);

/// A cache's token store and where its token lives there.
pub(super) struct StoreBinding {
    pub(super) store: SharedTokenStore,
    pub(super) keys: StoreKeys,
    /// The prover that adopted DPoP-bound tokens are bound to.
    dpop: Option<Dpop>,
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
            keys: store.keys(&identity),
            store,
            dpop,
        })
    }
}

/// What a flight brings back: a token, and the bytes it is stored as, if
/// it is in the store.
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

/// Stored values a flight must not adopt, and how fresh an adopted token
/// must be.
struct Unwanted {
    /// The value of the cached token, which the flight is replacing.
    current: Option<Arc<[u8]>>,
    /// The value of the token invalidated last.
    invalidated: Option<Arc<[u8]>>,
    /// Whether a token is cached: the flight is a refresh, and only a token
    /// outside its refresh window is worth adopting.
    refreshing: bool,
}

impl Unwanted {
    fn includes(&self, value: &[u8]) -> bool {
        [&self.current, &self.invalidated]
            .into_iter()
            .flatten()
            .any(|unwanted| **unwanted == *value)
    }
}

impl Shared {
    /// A token for the flight: through the store when there is one.
    pub(super) async fn obtain(&self, deadline: Instant) -> Result<Obtained, Error> {
        match &self.store {
            None => self
                .fetch_with_retries(deadline)
                .await
                .map(Obtained::unstored),
            Some(binding) => self.obtain_through(binding, deadline).await,
        }
    }

    fn unwanted(&self) -> Unwanted {
        let current = self.current.load_full();
        Unwanted {
            refreshing: current.is_some(),
            current: current.and_then(|slot| slot.stored.clone()),
            invalidated: self.lock_state().invalidated.clone(),
        }
    }

    async fn obtain_through(
        &self,
        binding: &StoreBinding,
        deadline: Instant,
    ) -> Result<Obtained, Error> {
        let store = &binding.store;
        let unwanted = self.unwanted();
        match store.get(&binding.keys.token).await {
            Ok(value) => {
                let adopted = self.adopt(binding, value, &unwanted);
                self.metrics.store_read(adopted.is_some());
                if let Some(adopted) = adopted {
                    return Ok(adopted);
                }
            }
            Err(error) => {
                self.metrics.store_read(false);
                return self.fetch_alone(&error, deadline).await;
            }
        }
        let holder = format!("{:032x}", rand::random::<u128>());
        // Leave the fetch itself at least half of its deadline.
        let wait = store
            .options()
            .lease_wait
            .min(self.policy.retry.deadline / 2);
        let waiting_since = Instant::now();
        let wait_until = later(waiting_since, wait);
        let mut pause = POLL_FIRST;
        let mut lease_tried_at: Option<Instant> = None;
        loop {
            // The lease changes hands rarely (its holder died, or gave it
            // back without a token): asking for it at every look would
            // double the load of a waiting fleet for nothing.
            if lease_tried_at.is_none_or(|at| at.elapsed() >= LEASE_RETRY) {
                lease_tried_at = Some(Instant::now());
                match store.try_lease(&binding.keys.lease, &holder).await {
                    Ok(true) => {
                        return self
                            .fetch_as_holder(binding, &holder, &unwanted, deadline)
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
                return self.fetch_and_put(binding, deadline).await;
            }
            // Jittered, so that waiting processes do not ask in step.
            let nap = pause.mul_f64(0.5 + rand::random::<f64>() / 2.0);
            tokio::time::sleep_until(later(now, nap).min(wait_until)).await;
            if now.duration_since(waiting_since) >= POLL_STEADY_FOR {
                pause = pause.mul_f64(POLL_GROWTH).min(POLL_MAX);
            }
            match store.get(&binding.keys.token).await {
                Ok(value) => {
                    if let Some(adopted) = self.adopt(binding, value, &unwanted) {
                        return Ok(adopted);
                    }
                }
                Err(error) => return self.fetch_alone(&error, deadline).await,
            }
        }
    }

    /// Fetches while holding the fleet's lease, unless a token was stored
    /// between the first look and the lease; then stores it and gives the
    /// lease back.
    async fn fetch_as_holder(
        &self,
        binding: &StoreBinding,
        holder: &str,
        unwanted: &Unwanted,
        deadline: Instant,
    ) -> Result<Obtained, Error> {
        let stored_meanwhile = binding.store.get(&binding.keys.token).await.ok().flatten();
        let outcome = match self.adopt(binding, stored_meanwhile, unwanted) {
            Some(adopted) => Ok(adopted),
            None => self.fetch_and_put(binding, deadline).await,
        };
        // Given back in the background: the caller need not wait for it.
        let store = binding.store.clone();
        let lease = binding.keys.lease.clone();
        let holder = holder.to_owned();
        tokio::spawn(async move {
            if let Err(error) = store.release_lease(&lease, &holder).await {
                tracing::debug!(error = %error, "lease not released; it expires by itself");
            }
        });
        outcome
    }

    async fn fetch_and_put(
        &self,
        binding: &StoreBinding,
        deadline: Instant,
    ) -> Result<Obtained, Error> {
        let token = self.fetch_with_retries(deadline).await?;
        let stored = self.put(binding, &token).await;
        Ok(Obtained { token, stored })
    }

    /// Fetches without the store, which just failed.
    async fn fetch_alone(&self, error: &StoreError, deadline: Instant) -> Result<Obtained, Error> {
        tracing::debug!(error = %error, "fetching without the token store");
        self.fetch_with_retries(deadline)
            .await
            .map(Obtained::unstored)
    }

    /// Stores `token` until it expires. Returns the stored bytes.
    async fn put(&self, binding: &StoreBinding, token: &Token) -> Option<Arc<[u8]>> {
        let ttl = token.expires_in();
        if ttl.is_zero() {
            return None;
        }
        let json = stored::encode(token);
        let value = match binding.store.seal(&binding.keys.token, &json) {
            Ok(value) => value,
            Err(error) => {
                tracing::warn!(error = %error, "token not stored");
                return None;
            }
        };
        match binding.store.put(&binding.keys.token, &value, ttl).await {
            Ok(()) => {
                tracing::debug!(ttl_s = ttl.as_secs(), "token stored");
                Some(Arc::from(value))
            }
            Err(error) => {
                tracing::debug!(error = %error, "token not stored");
                None
            }
        }
    }

    /// The token a stored value holds, if it is one this flight may hand
    /// out: it opens with the key under its own name, is well formed, is
    /// not the token being replaced or invalidated, and is usable (or, for
    /// a refresh, not yet due for one itself).
    fn adopt(
        &self,
        binding: &StoreBinding,
        value: Option<Vec<u8>>,
        unwanted: &Unwanted,
    ) -> Option<Obtained> {
        let value = value?;
        if unwanted.includes(&value) {
            return None;
        }
        let token = binding
            .store
            .open(&binding.keys.token, &value)
            .and_then(|json| stored::decode(&json));
        let token = match token {
            Ok(token) => token,
            Err(why) => {
                tracing::warn!(reason = why, "stored token ignored");
                return None;
            }
        };
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

    /// Deletes `stored` from the store if it still holds it, in the
    /// background; called when the token it holds was rejected.
    pub(super) fn forget_stored(&self, stored: Arc<[u8]>) {
        let Some(binding) = &self.store else { return };
        self.lock_state().invalidated = Some(Arc::clone(&stored));
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let store = binding.store.clone();
        let key = binding.keys.token.clone();
        let client = Arc::clone(&self.client);
        runtime.spawn(async move {
            match store.compare_and_delete(&key, &stored).await {
                Ok(deleted) => {
                    tracing::debug!(client = %client, deleted, "invalidated token removed from the store");
                }
                Err(error) => {
                    tracing::debug!(client = %client, error = %error, "invalidated token left in the store");
                }
            }
        });
    }
}
