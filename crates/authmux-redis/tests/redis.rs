//! Every store behaviour against a real `redis-server` started on a free
//! loopback port (and a 3-node cluster): fleet single flight, refresh,
//! invalidation, encryption, faults and authentication. Time is real here,
//! so waits are short and bounds generous.

mod common;

use std::time::Duration;

use authmux_core::store::{EncryptionKey, StoreKeys, TokenStore};
use authmux_core::{
    CachePolicy, ExposeSecret, ManagedToken, SecretString, SharedTokenStore, TokenIdentity,
};
use authmux_redis::RedisStore;
use common::{CountingSource, RedisCluster, RedisServer};
use tokio::task::JoinSet;
use tokio::time::Instant;

const HOUR: Duration = Duration::from_secs(3600);
const FETCH: Duration = Duration::from_millis(50);

fn redis(url: &str) -> RedisStore {
    RedisStore::from_url(url).expect("a Redis URL")
}

/// A store handle as one process would have it, with a timeout that a
/// loaded test machine meets.
fn store(url: &str, key: Option<u8>) -> SharedTokenStore {
    let builder = SharedTokenStore::builder(redis(url))
        .timeout(Duration::from_secs(1))
        .breaker_period(Duration::from_millis(300));
    match key {
        Some(byte) => builder.encryption_key(EncryptionKey::from_bytes(&[byte; 32])),
        None => builder,
    }
    .build()
}

fn process(source: &CountingSource, store: SharedTokenStore) -> ManagedToken {
    ManagedToken::builder(source.clone())
        .name("api")
        .store(store)
        .build()
}

fn keys(store: &SharedTokenStore) -> StoreKeys {
    store.keys(&TokenIdentity::new("counting", "memory://"))
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

/// A raw connection, to look at and tamper with what is stored.
async fn raw(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url)
        .expect("client")
        .get_multiplexed_async_connection()
        .await
        .expect("connected")
}

#[tokio::test]
async fn store_calls_on_a_real_redis() {
    let server = RedisServer::start();
    let store = redis(&server.url());
    store.ping().await.expect("PING");
    assert!(store.get("k").await.expect("GET").is_none());
    store.put("k", b"v1", HOUR).await.expect("SET");
    let entry = store.get("k").await.expect("GET").expect("stored");
    assert_eq!(entry.value, b"v1".to_vec());
    assert!(
        entry.ttl > Duration::from_secs(3590) && entry.ttl <= HOUR,
        "{:?}: Redis's PTTL, read with the value",
        entry.ttl
    );
    let mut connection = raw(&server.url()).await;
    let ttl: i64 = redis::cmd("PTTL")
        .arg("k")
        .query_async(&mut connection)
        .await
        .expect("PTTL");
    assert!(ttl > 3_590_000 && ttl <= 3_600_000, "{ttl}");
    assert!(!store.compare_and_delete("k", b"v2").await.expect("script"));
    assert!(store.compare_and_delete("k", b"v1").await.expect("script"));
    assert!(store.get("k").await.expect("GET").is_none());

    let lease = Duration::from_millis(300);
    assert!(store.try_lease("l", "a", lease).await.expect("SET NX"));
    assert!(!store.try_lease("l", "b", lease).await.expect("SET NX"));
    assert!(!store.release_lease("l", "b").await.expect("release"));
    assert!(store.release_lease("l", "a").await.expect("release"));
    assert!(store.try_lease("l", "b", lease).await.expect("SET NX"));
    assert!(store.renew_lease("l", "b", lease).await.expect("script"));
    assert!(!store.renew_lease("l", "a", lease).await.expect("not a's"));
    tokio::time::sleep(lease + Duration::from_millis(100)).await;
    assert!(
        store.try_lease("l", "c", lease).await.expect("SET NX"),
        "an expired lease is free"
    );
    assert!(!store.renew_lease("l", "b", lease).await.expect("lost"));
}

#[tokio::test]
async fn rediss_with_a_private_ca_works_and_an_untrusted_server_is_refused() {
    let files = common::TlsFiles::new();
    let (_server, tls_port) = common::tls_server(&files);
    let url = format!("rediss://127.0.0.1:{tls_port}/0");

    let trusted = redis(&url).root_certificates(files.ca_pem.clone());
    assert!(
        format!("{trusted:?}").contains("root_certificates: Some(\"[given]\")"),
        "{trusted:?}"
    );
    trusted.ping().await.expect("PING over TLS");
    trusted.put("k", b"over tls", HOUR).await.expect("SET");
    assert_eq!(
        trusted
            .get("k")
            .await
            .expect("GET")
            .map(|entry| entry.value),
        Some(b"over tls".to_vec())
    );

    // The system's roots do not know the private CA: the handshake fails,
    // as a store error (a miss for callers), never a panic.
    let untrusted = redis(&url);
    let error = untrusted.ping().await.expect_err("an unknown issuer");
    assert!(!error.to_string().contains('\n'), "{error}");
    // Plain text to the TLS port fails too: the scheme is what picks TLS.
    let plain = redis(&format!("redis://127.0.0.1:{tls_port}/0"));
    assert!(plain.ping().await.is_err(), "plain text to a TLS port");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cold_fleet_fetches_one_token() {
    let server = RedisServer::start();
    let source = CountingSource::new(HOUR, FETCH);
    let processes: Vec<ManagedToken> = (0..5)
        .map(|_| process(&source, store(&server.url(), Some(1))))
        .collect();
    let mut callers = JoinSet::new();
    for cache in &processes {
        for _ in 0..20 {
            let cache = cache.clone();
            callers.spawn(async move { secret(&cache).await });
        }
    }
    let secrets = callers.join_all().await;
    assert_eq!(source.calls(), 1, "one fetch for the fleet");
    assert!(
        secrets.iter().all(|secret| secret == "token-1"),
        "{secrets:?}"
    );
    let value: Vec<u8> = redis::cmd("GET")
        .arg(keys(&store(&server.url(), None)).token)
        .query_async(&mut raw(&server.url()).await)
        .await
        .expect("stored");
    assert!(
        !String::from_utf8_lossy(&value).contains("token-1"),
        "sealed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fleet_refreshes_once() {
    let server = RedisServer::start();
    // A 3 s token refreshed in its last second, served until 200 ms before.
    let source = CountingSource::new(Duration::from_secs(3), FETCH);
    let mut policy = CachePolicy::default();
    policy.refresh_window = Duration::from_secs(1);
    policy.expiry_margin = Duration::from_millis(200);
    let processes: Vec<ManagedToken> = (0..4)
        .map(|_| {
            ManagedToken::builder(source.clone())
                .policy(policy.clone())
                .store(store(&server.url(), Some(1)))
                .build()
        })
        .collect();
    for cache in &processes {
        assert_eq!(secret(cache).await, "token-1");
    }
    tokio::time::sleep(Duration::from_millis(2_200)).await;
    for cache in &processes {
        assert_eq!(secret(cache).await, "token-1", "served while refreshing");
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(source.calls(), 2, "one refresh for the fleet");
    for cache in &processes {
        assert_eq!(secret(cache).await, "token-2");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_401_storm_fetches_once_and_deletes_by_comparison() {
    let server = RedisServer::start();
    let source = CountingSource::new(HOUR, FETCH);
    let processes: Vec<ManagedToken> = (0..4)
        .map(|_| process(&source, store(&server.url(), Some(1))))
        .collect();
    let mut rejected = Vec::new();
    for cache in &processes {
        rejected.push(cache.get().await.expect("token").into_token());
    }
    for (cache, token) in processes.iter().zip(&rejected) {
        assert!(cache.invalidate(token));
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
    // Late compare-and-deletes of token-1 leave token-2 in place.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        secret(&process(&source, store(&server.url(), Some(1)))).await,
        "token-2"
    );
    assert_eq!(source.calls(), 2);
}

#[tokio::test]
async fn tampered_and_wrongly_keyed_values_are_misses() {
    let server = RedisServer::start();
    let source = CountingSource::new(HOUR, FETCH);
    process(&source, store(&server.url(), Some(1)))
        .get()
        .await
        .expect("token");
    assert_eq!(
        secret(&process(&source, store(&server.url(), Some(2)))).await,
        "token-2",
        "another key: a miss"
    );
    let key = keys(&store(&server.url(), None)).token;
    let mut connection = raw(&server.url()).await;
    let _: () = redis::cmd("SETRANGE")
        .arg(&key)
        .arg(30)
        .arg("tampered")
        .query_async(&mut connection)
        .await
        .expect("SETRANGE");
    assert_eq!(
        secret(&process(&source, store(&server.url(), Some(2)))).await,
        "token-3",
        "tampered: a miss"
    );
    let _: () = redis::cmd("SET")
        .arg(&key)
        .arg("not a token at all")
        .query_async(&mut connection)
        .await
        .expect("SET");
    assert_eq!(
        secret(&process(&source, store(&server.url(), Some(2)))).await,
        "token-4",
        "malformed: a miss"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_mid_run_costs_no_caller_error_and_sharing_resumes() {
    let mut server = RedisServer::start();
    let source = CountingSource::new(HOUR, FETCH);
    let shared = store(&server.url(), Some(1));
    let first = process(&source, shared.clone());
    assert_eq!(secret(&first).await, "token-1");

    server.kill();
    let rejected = first.get().await.expect("cached").into_token();
    first.invalidate(&rejected);
    let mut callers = JoinSet::new();
    for _ in 0..50 {
        let cache = first.clone();
        callers.spawn(async move { cache.get().await.map(|token| token.id()) });
    }
    let outcomes = callers.join_all().await;
    assert!(
        outcomes.iter().all(Result::is_ok),
        "no caller error: {outcomes:?}"
    );
    let second = process(&source, shared.clone());
    assert_eq!(
        secret(&second).await,
        "token-3",
        "fetched alone while Redis is down"
    );
    assert_eq!(source.calls(), 3);

    server.restart();
    // After the breaker period, the store is tried again and shared.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let mut shared_again = false;
    for _ in 0..20 {
        let before = source.calls();
        let writer = process(&source, shared.clone());
        writer.get().await.expect("token");
        let reader = process(&source, shared.clone());
        reader.get().await.expect("token");
        if source.calls() == before + 1 {
            shared_again = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(shared_again, "sharing resumes once Redis is back");
}

#[tokio::test]
async fn a_redis_that_never_answers_is_bounded_by_the_store_timeout() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("redis://{}/0", listener.local_addr().expect("address"));
    // Accepts connections and never says a word.
    let silent = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let source = CountingSource::new(HOUR, FETCH);
    let timeout = Duration::from_millis(200);
    let silent_store = SharedTokenStore::builder(redis(&url))
        .timeout(timeout)
        .build();
    let started = Instant::now();
    let token = tokio::time::timeout(
        Duration::from_secs(10),
        process(&source, silent_store.clone()).get(),
    )
    .await
    .expect("bounded by the store timeout, not hung")
    .expect("a token");
    assert_eq!(token.secret().expose_secret(), "token-1");
    assert!(started.elapsed() < Duration::from_secs(5));
    let error = silent_store.ping().await.expect_err("never answers");
    assert!(error.to_string().contains("200 ms"), "{error}");
    silent.abort();
}

/// The child side of the kill -9 test: takes the fleet's lease, then hangs
/// in a fetch that never ends, until the parent kills it.
const HOLDER_ENV: &str = "AUTHMUX_REDIS_TEST_LEASE_HOLDER_URL";

struct Hanging;

#[async_trait::async_trait]
impl authmux_core::TokenSource for Hanging {
    fn provider(&self) -> &str {
        "counting"
    }
    fn identity(&self) -> TokenIdentity {
        TokenIdentity::new("counting", "memory://")
    }
    async fn fetch_token(&self) -> Result<authmux_core::Token, authmux_core::Error> {
        std::future::pending().await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_holder_killed_with_sigkill_is_taken_over_within_the_lease_time() {
    let lease_ttl = Duration::from_secs(2);
    if let Ok(url) = std::env::var(HOLDER_ENV) {
        let store = SharedTokenStore::builder(redis(&url))
            .timeout(Duration::from_secs(1))
            .lease_ttl(lease_ttl)
            .build();
        let _ = ManagedToken::builder(Hanging)
            .store(store)
            .build()
            .get()
            .await;
        unreachable!("the fetch never ends; the parent kills this process");
    }
    let server = RedisServer::start();
    let lease_key = keys(&store(&server.url(), None)).lease;
    let mut holder = std::process::Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "--exact",
            "a_lease_holder_killed_with_sigkill_is_taken_over_within_the_lease_time",
            "--nocapture",
        ])
        .env(HOLDER_ENV, server.url())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("the lease holder");
    let mut connection = raw(&server.url()).await;
    let mut held = false;
    for _ in 0..200 {
        let exists: bool = redis::cmd("EXISTS")
            .arg(&lease_key)
            .query_async(&mut connection)
            .await
            .expect("EXISTS");
        if exists {
            held = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(held, "the child took the lease");
    holder.kill().expect("kill -9");
    holder.wait().expect("reaped");

    let source = CountingSource::new(HOUR, FETCH);
    let lease_wait = Duration::from_secs(10);
    let taker = SharedTokenStore::builder(redis(&server.url()))
        .timeout(Duration::from_secs(1))
        .lease_ttl(lease_ttl)
        .lease_wait(lease_wait)
        .build();
    let started = Instant::now();
    assert_eq!(secret(&process(&source, taker)).await, "token-1");
    assert!(
        started.elapsed() < lease_wait,
        "took the lease over when it expired, instead of giving up waiting"
    );
    assert_eq!(source.calls(), 1);
    assert_eq!(
        secret(&process(&source, store(&server.url(), None))).await,
        "token-1",
        "and stored the token for the fleet"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_shares_tokens_with_the_lease_in_the_same_slot() {
    let cluster = RedisCluster::start();
    let source = CountingSource::new(HOUR, FETCH);
    let cluster_store = |key| {
        SharedTokenStore::builder(redis(&cluster.url()))
            .timeout(Duration::from_secs(2))
            .encryption_key(EncryptionKey::from_bytes(&[key; 32]))
            .build()
    };
    let processes: Vec<ManagedToken> = (0..3).map(|_| process(&source, cluster_store(1))).collect();
    let mut callers = JoinSet::new();
    for cache in &processes {
        for _ in 0..10 {
            let cache = cache.clone();
            callers.spawn(async move { secret(&cache).await });
        }
    }
    let secrets = callers.join_all().await;
    assert_eq!(source.calls(), 1);
    assert!(secrets.iter().all(|secret| secret == "token-1"));
    let keys = keys(&cluster_store(1));
    assert_eq!(cluster.slot(&keys.token), cluster.slot(&keys.lease));
    let multi_node = RedisStore::from_url(
        &cluster
            .nodes
            .iter()
            .map(|node| node.url())
            .collect::<Vec<_>>()
            .join(","),
    )
    .expect("node list");
    assert!(multi_node.is_cluster());
    assert!(multi_node.get(&keys.token).await.expect("GET").is_some());
    let cluster_handle = cluster_store(1);
    cluster_handle.ping().await.expect("PING");
    assert!(
        cluster_handle
            .describe()
            .starts_with("redis cluster redis+cluster://")
    );
}

#[tokio::test]
async fn passwords_from_the_url_or_given_apart_authenticate_and_are_never_shown() {
    let server = RedisServer::start_with(&["--requirepass", "pa55-w0rd"]);
    let with_url = redis(&format!("redis://:pa55-w0rd@127.0.0.1:{}/0", server.port));
    with_url.ping().await.expect("the URL's password");
    assert!(
        !with_url.describe().contains("pa55"),
        "{}",
        with_url.describe()
    );
    let given = redis(&server.url()).credentials(None, SecretString::from("pa55-w0rd".to_owned()));
    given.ping().await.expect("the given password");

    let wrong = redis(&format!("redis://:wrong-pa55@127.0.0.1:{}/0", server.port));
    let error = wrong.ping().await.expect_err("wrong password");
    assert!(!error.to_string().contains("wrong-pa55"), "{error}");
    let none = redis(&server.url());
    let error = none.ping().await.expect_err("no password");
    assert!(!error.to_string().is_empty());

    // A store that refuses every call still leaves callers their tokens.
    let source = CountingSource::new(HOUR, FETCH);
    let refused = SharedTokenStore::builder(wrong).build();
    assert_eq!(secret(&process(&source, refused)).await, "token-1");
}

/// A TCP proxy to `upstream` that holds back the server's first answer on
/// each connection for `delay`: a slow TLS handshake or first DNS answer,
/// as far as the client can tell.
async fn slow_first_answer_proxy(upstream: u16, delay: Duration) -> u16 {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("address").port();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(server) = tokio::net::TcpStream::connect(("127.0.0.1", upstream)).await
                else {
                    return;
                };
                let (mut client_read, mut client_write) = client.into_split();
                let (mut server_read, mut server_write) = server.into_split();
                let up = tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut client_read, &mut server_write).await;
                });
                let mut buffer = vec![0u8; 16 * 1024];
                let mut first = true;
                while let Ok(read) = server_read.read(&mut buffer).await {
                    if read == 0 {
                        break;
                    }
                    if first {
                        tokio::time::sleep(delay).await;
                        first = false;
                    }
                    if client_write.write_all(&buffer[..read]).await.is_err() {
                        break;
                    }
                }
                up.abort();
            });
        }
    });
    port
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_slower_than_the_call_timeout_is_still_made_for_later_calls() {
    let server = RedisServer::start();
    let port = slow_first_answer_proxy(server.port, Duration::from_millis(500)).await;
    let store = SharedTokenStore::builder(redis(&format!("redis://127.0.0.1:{port}/0")))
        .timeout(Duration::from_millis(200))
        .build();
    let mut answered = 0;
    for _ in 0..10 {
        if store.ping().await.is_ok() {
            answered += 1;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The first calls give up on the connection; it is made all the same,
    // and the later calls use it.
    assert!(answered >= 5, "{answered} of 10 calls answered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_401_retires_the_token_in_every_process_and_every_handle() {
    let server = RedisServer::start();
    let source = CountingSource::new(HOUR, FETCH).unique_to_this_process();
    let shared = redis(&server.url());
    let handle = |store: RedisStore| {
        SharedTokenStore::builder(store)
            .timeout(Duration::from_secs(1))
            .build()
    };
    // Another connection (another process, as Redis sees it), and two
    // handles built on one store (one connection, two subscribers).
    let rejecting = process(&source, handle(redis(&server.url())));
    let first = process(&source, handle(shared.clone()));
    let second = process(&source, handle(shared));
    let rejected = rejecting.get().await.expect("token").into_token();
    for cache in [&first, &second] {
        assert_eq!(secret(cache).await, rejected.secret().expose_secret());
    }
    assert_eq!(source.calls(), 1);
    assert!(rejecting.invalidate(&rejected));
    for cache in [&first, &second] {
        let started = Instant::now();
        while cache.cached().is_some() {
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "the rejected token is still served"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    let mut tokens = Vec::new();
    for cache in [&rejecting, &first, &second] {
        tokens.push(secret(cache).await);
    }
    assert!(tokens.iter().all(|token| token == &tokens[0]), "{tokens:?}");
    assert_ne!(tokens[0], rejected.secret().expose_secret());
    assert_eq!(source.calls(), 2, "one fetch after the 401");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_settle_no_lease_is_left_for_the_fleet() {
    // A short-lived process (one CLI run) waits for the background work
    // before it exits: the lease is given back, not left to run out.
    let server = RedisServer::start();
    let source = CountingSource::new(HOUR, FETCH);
    let shared = store(&server.url(), None);
    let cache = process(&source, shared.clone());
    assert_eq!(secret(&cache).await, "token-1");
    authmux_core::store::settle().await;
    let mut connection = raw(&server.url()).await;
    let exists: bool = redis::cmd("EXISTS")
        .arg(&keys(&shared).lease)
        .query_async(&mut connection)
        .await
        .expect("EXISTS");
    assert!(!exists, "the lease was given back");
}
