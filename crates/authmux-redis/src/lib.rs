//! A Redis token store for [authmux]: the processes of a fleet share one
//! token per client and single-flight its fetches and refreshes.
//!
//! ```no_run
//! use authmux_core::store::EncryptionKey;
//! use authmux_core::{ManagedToken, SharedTokenStore};
//! use authmux_redis::RedisStore;
//! # fn run(source: authmux_core::SharedTokenSource, key: EncryptionKey) -> Result<(), Box<dyn std::error::Error>> {
//! let store = SharedTokenStore::builder(RedisStore::from_url("rediss://cache.internal:6380/0")?)
//!     .encryption_key(key)
//!     .build();
//! let cache = ManagedToken::builder(source).name("api").store(store).build();
//! # Ok(())
//! # }
//! ```
//!
//! # Wire
//!
//! With keys `<prefix>:{<identity hash>}:token` and `…:lease` (the braces
//! are a hash tag: a token and its lease share a cluster slot):
//!
//! | operation | command |
//! |---|---|
//! | connect | `HELLO 3` (RESP3, with `AUTH`), then `SUBSCRIBE <prefix>:events` (`SSUBSCRIBE` on a cluster) |
//! | read | `GET token` and `PTTL token`, pipelined: the entry's time left by Redis's clock |
//! | write | `SET token <sealed value> PX <ms until expiry>`, pipelined with `PUBLISH <prefix>:events` |
//! | take the lease | `SET lease <random holder> NX PX <lease time>`, the first time pipelined after the read |
//! | renew it while fetching | `EVALSHA` of `if GET == holder then PEXPIRE` |
//! | give it back, delete an invalidated token | `EVALSHA` of `if GET == expected then DEL` |
//! | wake the waiting processes, retire a rejected token | `PUBLISH <prefix>:events <message>` (`SPUBLISH` on a cluster) |
//! | check | `PING` |
//!
//! Nothing else is used: Valkey (7.2 and later) and Redis 7 and later
//! have every one of these commands, sharded pub/sub included. A message
//! names a token key and carries either the value just stored there (sealed
//! with the encryption key: what anyone who can read the key reads) and its
//! time left, or, for a rejected token, a SHA-256 of it: never the rejected
//! token. Each store handle holds one connection, which carries its
//! commands and its one subscription (RESP3 pushes), and subscribes again
//! after a reconnection.
//!
//! # URLs
//!
//! * `redis://[[user]:password@]host[:port][/db]`, `rediss://…` for TLS
//!   (rustls, with the system's root certificates, or the ones given to
//!   [`RedisStore::root_certificates`] for a private CA);
//! * a cluster: `redis+cluster://host:port` (or `rediss+cluster://`), or
//!   several node URLs separated by commas; the other nodes are discovered.
//!
//! A user and password may come from the URL or from
//! [`RedisStore::credentials`], so that the password need not sit in a
//! URL. [`describe`](authmux_core::TokenStore::describe) and every error
//! leave the password out.
//!
//! # Connections
//!
//! The first call connects; building a store does no I/O. The connection
//! is made by a task of its own, bounded by its own timeout (10 s), so a
//! slow TLS handshake or DNS answer is not cut short by the store's
//! per-call timeout: the calls that give up on it leave it connecting for
//! the next. A single node is reached through a
//! [`redis::aio::ConnectionManager`], which reconnects by itself after
//! Redis restarts; a cluster through a
//! [`redis::cluster_async::ClusterConnection`]. Timeouts and the circuit
//! breaker are [`SharedTokenStore`](authmux_core::SharedTokenStore)'s.
//!
//! [authmux]: https://github.com/authmux/authmux

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use authmux_core::store::{
    MessageSink, StoreError, StoreErrorKind, StoredEntry, TokenStore, redact_url,
};
use futures_util::FutureExt as _;
use futures_util::future::{BoxFuture, Shared};
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::{
    Client, IntoConnectionInfo, ProtocolVersion, PushInfo, PushKind, RedisError, Script, Value,
};
use secrecy::{ExposeSecret as _, SecretString};

/// The name of this store in [`TokenStore::describe`].
pub const NAME: &str = "redis";

/// Deletes `KEYS[1]` only if it still holds `ARGV[1]`.
const COMPARE_AND_DELETE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
";

/// Sets `KEYS[1]` to expire in `ARGV[2]` ms only if it still holds `ARGV[1]`.
const COMPARE_AND_EXTEND: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
";

/// How long making the connection may take: its own bound, longer than a
/// store call's, since a connection is made once and outlives the call
/// that asked for it.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A [`TokenStore`] on Redis or Valkey: a single node or a cluster, plain
/// or TLS. Cloning is cheap and shares the connection.
#[derive(Clone)]
pub struct RedisStore {
    inner: Arc<Inner>,
}

struct Inner {
    /// The node, or the cluster's seed nodes.
    nodes: Vec<redis::ConnectionInfo>,
    cluster: bool,
    /// The URLs as shown: passwords replaced by `***`.
    shown: String,
    username: Option<String>,
    password: Option<SecretString>,
    /// PEM root certificates that replace the system's for TLS.
    root_certificates: Option<Vec<u8>>,
    connection: Mutex<ConnectionState>,
    compare_and_delete: Script,
    compare_and_extend: Script,
    /// The channels this store is subscribed to, and where their messages
    /// go: one entry per store handle built on it.
    subscriptions: Subscriptions,
}

/// The connection, made once by a task of its own.
enum ConnectionState {
    Idle,
    Connecting(Shared<BoxFuture<'static, Result<Connection, StoreError>>>),
    Ready(Connection),
}

#[derive(Clone)]
enum Connection {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("url", &self.inner.shown)
            .field("username", &self.inner.username)
            .field(
                "password",
                &self.inner.password.as_ref().map(|_| "[redacted]"),
            )
            .field(
                "root_certificates",
                &self.inner.root_certificates.as_ref().map(|_| "[given]"),
            )
            .finish()
    }
}

fn config_error(message: String) -> StoreError {
    StoreError::new(StoreErrorKind::Config, message)
}

/// A Redis error as one line; Redis never echoes a password in one.
fn failure(error: &RedisError) -> StoreError {
    let text = error.to_string();
    let line = text.lines().next().unwrap_or("unknown error");
    let kind = if error.is_timeout() {
        StoreErrorKind::Timeout
    } else {
        StoreErrorKind::Unavailable
    };
    StoreError::new(kind, format!("redis: {line}"))
}

impl RedisStore {
    /// A store at `url`; see the [crate documentation](crate#urls) for the
    /// forms it takes. Nothing is connected until the first call. The
    /// error names what is wrong, never the password.
    pub fn from_url(url: &str) -> Result<Self, StoreError> {
        let urls: Vec<&str> = url
            .split(',')
            .map(str::trim)
            .filter(|url| !url.is_empty())
            .collect();
        let shown = urls
            .iter()
            .map(|url| redact_url(url))
            .collect::<Vec<_>>()
            .join(",");
        let parse = |url: &str| -> Result<redis::ConnectionInfo, StoreError> {
            let scheme = url.split_once("://").map_or("", |(scheme, _)| scheme);
            if !matches!(scheme, "redis" | "rediss") {
                return Err(config_error(format!(
                    "{} is not a redis://, rediss://, redis+cluster:// or rediss+cluster:// URL",
                    redact_url(url)
                )));
            }
            url.into_connection_info().map_err(|error| {
                config_error(format!(
                    "{} is not a usable Redis URL: {}",
                    redact_url(url),
                    error.to_string().lines().next().unwrap_or("invalid")
                ))
            })
        };
        let (nodes, cluster) = match urls.as_slice() {
            [] => return Err(config_error("no Redis URL given".to_owned())),
            [one] => {
                let seed = one
                    .strip_prefix("redis+cluster://")
                    .map(|rest| format!("redis://{rest}"))
                    .or_else(|| {
                        one.strip_prefix("rediss+cluster://")
                            .map(|rest| format!("rediss://{rest}"))
                    });
                match seed {
                    Some(seed) => (vec![parse(&seed)?], true),
                    None => (vec![parse(one)?], false),
                }
            }
            several => (
                several
                    .iter()
                    .map(|url| parse(url))
                    .collect::<Result<_, _>>()?,
                true,
            ),
        };
        Ok(Self {
            inner: Arc::new(Inner {
                nodes,
                cluster,
                shown,
                username: None,
                password: None,
                root_certificates: None,
                connection: Mutex::new(ConnectionState::Idle),
                compare_and_delete: Script::new(COMPARE_AND_DELETE),
                compare_and_extend: Script::new(COMPARE_AND_EXTEND),
                subscriptions: Subscriptions::default(),
            }),
        })
    }

    /// A copy with `change` applied and no connection yet.
    fn with(self, change: impl FnOnce(&mut Inner)) -> Self {
        let mut inner = Inner {
            nodes: self.inner.nodes.clone(),
            cluster: self.inner.cluster,
            shown: self.inner.shown.clone(),
            username: self.inner.username.clone(),
            password: self.inner.password.clone(),
            root_certificates: self.inner.root_certificates.clone(),
            connection: Mutex::new(ConnectionState::Idle),
            compare_and_delete: Script::new(COMPARE_AND_DELETE),
            compare_and_extend: Script::new(COMPARE_AND_EXTEND),
            subscriptions: Subscriptions::default(),
        };
        change(&mut inner);
        Self {
            inner: Arc::new(inner),
        }
    }

    /// Authenticates with `username` (the default user when `None`) and
    /// `password`, overriding any the URL gives. Call it before the first
    /// use.
    pub fn credentials(self, username: Option<String>, password: SecretString) -> Self {
        self.with(|inner| {
            inner.username = username;
            inner.password = Some(password);
        })
    }

    /// Trusts the root certificates in `pem` (one or more PEM
    /// `CERTIFICATE` blocks), instead of the system's, for `rediss://`: a
    /// Redis behind a private CA. Call it before the first use; a `pem`
    /// without a certificate is an error when connecting.
    pub fn root_certificates(self, pem: impl Into<Vec<u8>>) -> Self {
        let pem = pem.into();
        self.with(|inner| inner.root_certificates = Some(pem))
    }

    fn tls_certificates(&self) -> Option<redis::TlsCertificates> {
        self.inner
            .root_certificates
            .as_ref()
            .map(|pem| redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(pem.clone()),
            })
    }

    /// Whether this store talks to a cluster.
    pub fn is_cluster(&self) -> bool {
        self.inner.cluster
    }

    /// The node's settings as connected: the credentials, RESP3 (so one
    /// connection carries commands and pushed messages alike), and no
    /// `CLIENT SETINFO`, two commands per connection that serve nothing
    /// here.
    fn settings(&self, info: &redis::ConnectionInfo) -> redis::ConnectionInfo {
        let mut settings = info
            .redis_settings()
            .clone()
            .set_protocol(ProtocolVersion::RESP3)
            .set_skip_set_lib_name();
        if let Some(password) = &self.inner.password {
            settings = settings.set_password(password.expose_secret());
            if let Some(username) = &self.inner.username {
                settings = settings.set_username(username);
            }
        }
        info.clone().set_redis_settings(settings)
    }

    /// Where pushed messages go: the sinks of their channel.
    fn push_sender(&self) -> PushToSink {
        PushToSink(self.inner.subscriptions.clone())
    }

    async fn connect(&self) -> Result<Connection, StoreError> {
        let nodes: Vec<redis::ConnectionInfo> = self
            .inner
            .nodes
            .iter()
            .map(|info| self.settings(info))
            .collect();
        let channels = self.inner.subscriptions.channels();
        match nodes.as_slice() {
            [node] if !self.inner.cluster => {
                let client = match self.tls_certificates() {
                    Some(certificates) => Client::build_with_tls(node.clone(), certificates),
                    None => Client::open(node.clone()),
                }
                .map_err(|error| failure(&error))?;
                let mut config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(CONNECT_TIMEOUT))
                    // One attempt per call while Redis is away: a call fails
                    // at once (connection refused) instead of after a
                    // backoff, and the breaker takes it from there.
                    .set_number_of_retries(0)
                    .set_push_sender(self.push_sender());
                if !channels.is_empty() {
                    config = config.set_automatic_resubscription();
                }
                let manager = ConnectionManager::new_with_config(client, config)
                    .await
                    .map_err(|error| failure(&error))?;
                if !channels.is_empty() {
                    // Queued now, answered later: its first poll hands the
                    // SUBSCRIBE to the connection, which keeps one order, so
                    // the first look and the lease attempt reach Redis after
                    // it without waiting a round trip for its answer. Were
                    // it ever queued later, a waiter that missed the
                    // holder's message would find the token at its next look.
                    let mut subscriber = manager.clone();
                    let mut subscribing = Box::pin(async move {
                        if let Err(error) = subscriber.subscribe(&channels).await {
                            tracing::warn!(error = %failure(&error), "not subscribed to the store's messages");
                        }
                    });
                    if (&mut subscribing).now_or_never().is_none() {
                        tokio::spawn(subscribing);
                    }
                }
                Ok(Connection::Single(manager))
            }
            _ => {
                let mut builder = ClusterClient::builder(nodes)
                    .connection_timeout(CONNECT_TIMEOUT)
                    .retries(1)
                    .use_protocol(ProtocolVersion::RESP3)
                    .push_sender(self.push_sender());
                if let Some(certificates) = self.tls_certificates() {
                    builder = builder.certs(certificates);
                }
                let client = builder.build().map_err(|error| failure(&error))?;
                let mut connection = client
                    .get_async_connection()
                    .await
                    .map_err(|error| failure(&error))?;
                for channel in &channels {
                    connection
                        .ssubscribe(channel)
                        .await
                        .map_err(|error| failure(&error))?;
                }
                Ok(Connection::Cluster(connection))
            }
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, ConnectionState> {
        self.inner
            .connection
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The connection, made on first use by a task of its own that a
    /// cancelled call does not stop. A failed attempt is tried again by the
    /// next call.
    async fn connection(&self) -> Result<Connection, StoreError> {
        let connecting = {
            let mut state = self.state();
            match &*state {
                ConnectionState::Ready(connection) => return Ok(connection.clone()),
                ConnectionState::Connecting(connecting) => connecting.clone(),
                ConnectionState::Idle => {
                    let store = self.clone();
                    let task = tokio::spawn(async move {
                        let outcome = tokio::time::timeout(CONNECT_TIMEOUT, store.connect())
                            .await
                            .unwrap_or_else(|_| {
                                Err(StoreError::new(
                                    StoreErrorKind::Timeout,
                                    format!(
                                        "redis: no connection within {} s",
                                        CONNECT_TIMEOUT.as_secs()
                                    ),
                                ))
                            });
                        *store.state() = match &outcome {
                            Ok(connection) => ConnectionState::Ready(connection.clone()),
                            Err(_) => ConnectionState::Idle,
                        };
                        outcome
                    });
                    let connecting = async move {
                        task.await.unwrap_or_else(|_| {
                            Err(StoreError::unavailable("redis: the connecting task failed"))
                        })
                    }
                    .boxed()
                    .shared();
                    *state = ConnectionState::Connecting(connecting.clone());
                    connecting
                }
            }
        };
        connecting.await
    }

    async fn query<T: redis::FromRedisValue>(&self, command: &redis::Cmd) -> Result<T, StoreError> {
        let result = match self.connection().await? {
            Connection::Single(mut connection) => command.query_async(&mut connection).await,
            Connection::Cluster(mut connection) => command.query_async(&mut connection).await,
        };
        result.map_err(|error| failure(&error))
    }

    async fn pipelined<T: redis::FromRedisValue>(
        &self,
        pipeline: &redis::Pipeline,
    ) -> Result<T, StoreError> {
        match self.connection().await? {
            Connection::Single(mut connection) => pipeline.query_async(&mut connection).await,
            Connection::Cluster(mut connection) => pipeline.query_async(&mut connection).await,
        }
        .map_err(|error| failure(&error))
    }

    async fn compare_and_delete_script(
        &self,
        key: &str,
        expected: &[u8],
    ) -> Result<bool, StoreError> {
        let mut invocation = self.inner.compare_and_delete.key(key);
        invocation.arg(expected);
        let deleted: i64 = match self.connection().await? {
            Connection::Single(mut connection) => invoke(&invocation, &mut connection).await,
            Connection::Cluster(mut connection) => invoke(&invocation, &mut connection).await,
        }
        .map_err(|error| failure(&error))?;
        Ok(deleted == 1)
    }
}

async fn invoke<C: ConnectionLike + Send>(
    invocation: &redis::ScriptInvocation<'_>,
    connection: &mut C,
) -> Result<i64, RedisError> {
    invocation.invoke_async(connection).await
}

/// A value and its `PTTL`: -2, gone between the two, is no value; -1, no
/// expiry (which this store never sets), leaves the token's own lifetime
/// to bound it.
fn entry(value: Option<Vec<u8>>, ttl_ms: i64) -> Option<StoredEntry> {
    let ttl = match ttl_ms {
        -1 => Duration::MAX,
        ms => Duration::from_millis(u64::try_from(ms).unwrap_or(0)),
    };
    value
        .filter(|_| !ttl.is_zero())
        .map(|value| StoredEntry { value, ttl })
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis())
        .unwrap_or(u64::MAX)
        .max(1)
}

#[async_trait]
impl TokenStore for RedisStore {
    fn describe(&self) -> String {
        if self.inner.cluster {
            format!("{NAME} cluster {}", self.inner.shown)
        } else {
            format!("{NAME} {}", self.inner.shown)
        }
    }

    async fn get(&self, key: &str) -> Result<Option<StoredEntry>, StoreError> {
        let mut pipeline = redis::pipe();
        pipeline.cmd("GET").arg(key).cmd("PTTL").arg(key);
        let (value, ttl_ms) = self.pipelined(&pipeline).await?;
        Ok(entry(value, ttl_ms))
    }

    async fn put(&self, key: &str, value: &[u8], ttl: Duration) -> Result<(), StoreError> {
        self.query::<()>(
            redis::cmd("SET")
                .arg(key)
                .arg(value)
                .arg("PX")
                .arg(millis(ttl)),
        )
        .await
    }

    async fn compare_and_delete(&self, key: &str, expected: &[u8]) -> Result<bool, StoreError> {
        self.compare_and_delete_script(key, expected).await
    }

    async fn get_then_lease(
        &self,
        key: &str,
        lease: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<(Option<StoredEntry>, bool), StoreError> {
        // The token and its lease share a hash tag, so a cluster runs the
        // three on one node too.
        let mut pipeline = redis::pipe();
        pipeline
            .cmd("GET")
            .arg(key)
            .cmd("PTTL")
            .arg(key)
            .cmd("SET")
            .arg(lease)
            .arg(holder)
            .arg("NX")
            .arg("PX")
            .arg(millis(ttl));
        let (value, ttl_ms, taken): (Option<Vec<u8>>, i64, Option<String>) =
            self.pipelined(&pipeline).await?;
        Ok((entry(value, ttl_ms), taken.is_some()))
    }

    async fn put_and_publish(
        &self,
        key: &str,
        value: &[u8],
        ttl: Duration,
        channel: &str,
        message: &[u8],
    ) -> Result<(), StoreError> {
        if self.inner.cluster {
            // The token's slot and the channel's are apart: two calls.
            self.put(key, value, ttl).await?;
            return self.publish(channel, message).await;
        }
        let mut pipeline = redis::pipe();
        pipeline
            .cmd("SET")
            .arg(key)
            .arg(value)
            .arg("PX")
            .arg(millis(ttl))
            .ignore()
            .cmd("PUBLISH")
            .arg(channel)
            .arg(message)
            .ignore();
        self.pipelined(&pipeline).await
    }

    async fn try_lease(&self, key: &str, holder: &str, ttl: Duration) -> Result<bool, StoreError> {
        let taken: Option<String> = self
            .query(
                redis::cmd("SET")
                    .arg(key)
                    .arg(holder)
                    .arg("NX")
                    .arg("PX")
                    .arg(millis(ttl)),
            )
            .await?;
        Ok(taken.is_some())
    }

    async fn renew_lease(
        &self,
        key: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let mut invocation = self.inner.compare_and_extend.key(key);
        invocation.arg(holder).arg(millis(ttl));
        let extended: i64 = match self.connection().await? {
            Connection::Single(mut connection) => invoke(&invocation, &mut connection).await,
            Connection::Cluster(mut connection) => invoke(&invocation, &mut connection).await,
        }
        .map_err(|error| failure(&error))?;
        Ok(extended == 1)
    }

    async fn publish(&self, channel: &str, message: &[u8]) -> Result<(), StoreError> {
        let command = if self.inner.cluster {
            "SPUBLISH"
        } else {
            "PUBLISH"
        };
        let _receivers: i64 = self
            .query(redis::cmd(command).arg(channel).arg(message))
            .await?;
        Ok(())
    }

    fn subscribe(&self, channel: &str, sink: MessageSink) -> bool {
        let fresh = self.inner.subscriptions.add(channel, sink);
        if fresh {
            // Connected already (a `ping` came first): subscribe that
            // connection now, in the background.
            let connected = match &*self.state() {
                ConnectionState::Ready(connection) => Some(connection.clone()),
                _ => None,
            };
            if let Some(connection) = connected
                && let Ok(runtime) = tokio::runtime::Handle::try_current()
            {
                let channel = channel.to_owned();
                runtime.spawn(async move {
                    let subscribed = match connection {
                        Connection::Single(mut connection) => connection.subscribe(&channel).await,
                        Connection::Cluster(mut connection) => {
                            connection.ssubscribe(&channel).await
                        }
                    };
                    if let Err(error) = subscribed {
                        tracing::warn!(error = %failure(&error), "not subscribed to the store's messages");
                    }
                });
            }
        }
        true
    }

    /// Connects, `HELLO` and the queued `SUBSCRIBE` included, in the task
    /// a first call would otherwise start.
    async fn connect(&self) -> Result<(), StoreError> {
        self.connection().await.map(drop)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let _pong: String = self.query(&redis::cmd("PING")).await?;
        Ok(())
    }
}

/// The channels a store is subscribed to and their sinks.
#[derive(Clone, Default)]
struct Subscriptions(Arc<Mutex<Vec<(String, MessageSink)>>>);

impl Subscriptions {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(String, MessageSink)>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Adds a sink; returns whether its channel is new.
    fn add(&self, channel: &str, sink: MessageSink) -> bool {
        let mut subscriptions = self.lock();
        let fresh = subscriptions.iter().all(|(known, _)| known != channel);
        subscriptions.push((channel.to_owned(), sink));
        fresh
    }

    fn channels(&self) -> Vec<String> {
        let mut channels: Vec<String> = self
            .lock()
            .iter()
            .map(|(channel, _)| channel.clone())
            .collect();
        channels.sort_unstable();
        channels.dedup();
        channels
    }
}

/// Hands pushed messages to the sinks of their channel.
struct PushToSink(Subscriptions);

impl redis::aio::AsyncPushSender for PushToSink {
    fn send(&self, info: PushInfo) -> Result<(), redis::aio::SendError> {
        if !matches!(info.kind, PushKind::Message | PushKind::SMessage) {
            return Ok(());
        }
        if let [Value::BulkString(channel), Value::BulkString(message)] = info.data.as_slice() {
            let sinks: Vec<MessageSink> = self
                .0
                .lock()
                .iter()
                .filter(|(subscribed, _)| subscribed.as_bytes() == channel.as_slice())
                .map(|(_, sink)| Arc::clone(sink))
                .collect();
            for sink in sinks {
                sink(message);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked_and_shown_without_their_password() {
        let store = RedisStore::from_url("redis://user:s3cr3t@cache:6379/2").expect("valid");
        assert_eq!(store.describe(), "redis redis://***@cache:6379/2");
        assert!(!format!("{store:?}").contains("s3cr3t"));
        assert!(!store.is_cluster());

        let tls = RedisStore::from_url("rediss://cache:6380").expect("valid");
        assert_eq!(tls.describe(), "redis rediss://cache:6380");

        let cluster = RedisStore::from_url("redis+cluster://:pw@a:7000").expect("valid");
        assert!(cluster.is_cluster());
        assert_eq!(
            cluster.describe(),
            "redis cluster redis+cluster://***@a:7000"
        );
        let nodes = RedisStore::from_url("redis://a:7000, redis://b:7001").expect("valid");
        assert!(nodes.is_cluster());

        let error = RedisStore::from_url("http://user:s3cr3t@cache").expect_err("not redis");
        assert_eq!(error.kind(), StoreErrorKind::Config);
        assert!(!error.to_string().contains("s3cr3t"), "{error}");
        assert!(RedisStore::from_url("").is_err());

        let with_password = RedisStore::from_url("redis://cache")
            .expect("valid")
            .credentials(
                Some("svc".into()),
                SecretString::from("pw-from-env".to_owned()),
            );
        let debug = format!("{with_password:?}");
        assert!(
            !debug.contains("pw-from-env") && debug.contains("[redacted]"),
            "{debug}"
        );
    }
}
