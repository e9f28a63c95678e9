//! The `metrics` feature: a scripted run under paused time, recorded by a
//! recorder of this test's own, shows every metric with its labels.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use authmux_core::metrics::{
    COOLDOWNS, METADATA_REQUESTS, OUTCOMES, REFRESHES_AHEAD, STORE_HITS, STORE_MISSES,
    TOKEN_EXPIRES_IN, TOKEN_FETCH_SECONDS, TOKEN_REQUESTS,
};
use authmux_core::store::MemoryStore;
use authmux_core::{CachePolicy, Clock, Error, ErrorKind, ManagedToken, SharedTokenStore};
use common::{ScriptedSource, Step, refused};
use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use tokio::time::{Instant, advance};

const HOUR: Duration = Duration::from_secs(3600);
const FETCH: Duration = Duration::from_millis(40);

fn rate_limited() -> Error {
    Error::new(ErrorKind::RateLimited, "")
        .with_status(429)
        .with_retry_after(Duration::from_secs(1))
}

async fn settle(by: Duration) {
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    advance(by).await;
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
}

/// Every metric, by name and sorted labels (`outcome` included), with
/// its value.
fn snapshot(recorder: &DebuggingRecorder) -> BTreeMap<(String, Vec<String>), DebugValue> {
    recorder
        .snapshotter()
        .snapshot()
        .into_vec()
        .into_iter()
        .map(|(key, _, _, value)| {
            let key = key.key();
            let mut labels: Vec<String> = key
                .labels()
                .map(|label| format!("{}={}", label.key(), label.value()))
                .collect();
            labels.sort();
            ((key.name().to_owned(), labels), value)
        })
        .collect()
}

fn labels(client: &str, outcome: Option<&str>) -> Vec<String> {
    let mut labels = vec![format!("client={client}"), "provider=scripted".to_owned()];
    if let Some(outcome) = outcome {
        labels.push(format!("outcome={outcome}"));
    }
    labels.sort();
    labels
}

fn counter(
    metrics: &BTreeMap<(String, Vec<String>), DebugValue>,
    name: &str,
    client: &str,
    outcome: Option<&str>,
) -> u64 {
    match metrics.get(&(name.to_owned(), labels(client, outcome))) {
        Some(DebugValue::Counter(value)) => *value,
        other => panic!("{name} {client} {outcome:?}: {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn every_metric_is_recorded_with_client_and_provider_labels() {
    let recorder = DebuggingRecorder::new();
    let backend = MemoryStore::new();
    let store = || SharedTokenStore::builder(backend.clone()).build();
    // A refusal, then a 429 retried into a token, then tokens.
    let source = ScriptedSource::scripted(
        [Step::Fail(refused()), Step::Fail(rate_limited())],
        Step::Token(HOUR),
        FETCH,
    );
    let mut policy = CachePolicy::default();
    policy.jitter_fraction = 0.0;
    let build = |name: &str| {
        ManagedToken::builder(source.clone())
            .name(name)
            .policy(policy.clone())
            .clock(Clock::tokio())
            .store(store())
            .build()
    };
    // The handles are registered when the caches are built: the recorder
    // needs to be current only then.
    let (api, peer) = metrics::with_local_recorder(&recorder, || (build("api"), build("peer")));

    // A store miss, then a refusal and a cool-down.
    let error = api.get().await.expect_err("refused");
    assert_eq!(error.kind(), ErrorKind::Refused);
    settle(Duration::from_secs(2)).await;
    // A store miss, a 429 and a token after its Retry-After.
    let token = api.get().await.expect("a token after the 429");
    // Served from memory: no metric moves.
    for _ in 0..100 {
        assert_eq!(api.get().await.expect("cached").id(), token.id());
    }
    // Another process finds the token in the store: a hit, no request.
    let adopted = peer.get().await.expect("from the store");
    assert_eq!(adopted.secret_str_for_test(), token.secret_str_for_test());
    assert_eq!(source.calls(), 3);

    // Into the refresh window: one refresh ahead, whose look in the store
    // finds only the token it replaces (a miss), then a request.
    let refresh_at = api.schedule().expect("scheduled").refresh_at;
    advance(refresh_at - Instant::now()).await;
    let served = api.get().await.expect("still served");
    assert_eq!(served.id(), token.id());
    settle(FETCH * 2).await;
    assert_eq!(source.calls(), 4);
    assert_ne!(api.get().await.expect("refreshed").id(), token.id());

    let metrics = snapshot(&recorder);
    let requests = |outcome: &str| counter(&metrics, TOKEN_REQUESTS, "api", Some(outcome));
    assert_eq!(requests("ok"), 2);
    assert_eq!(requests("refused"), 1);
    assert_eq!(requests("rate_limited"), 1);
    for outcome in ["server_error", "transport", "invalid_response", "other"] {
        assert_eq!(requests(outcome), 0, "{outcome}");
    }
    assert_eq!(counter(&metrics, COOLDOWNS, "api", None), 1);
    assert_eq!(counter(&metrics, REFRESHES_AHEAD, "api", None), 1);
    assert_eq!(counter(&metrics, STORE_MISSES, "api", None), 3);
    assert_eq!(counter(&metrics, STORE_HITS, "api", None), 0);
    assert_eq!(counter(&metrics, STORE_HITS, "peer", None), 1);
    assert_eq!(counter(&metrics, STORE_MISSES, "peer", None), 0);
    assert_eq!(
        counter(&metrics, TOKEN_REQUESTS, "peer", Some("ok")),
        0,
        "a store hit sends no request"
    );
    match metrics.get(&(TOKEN_FETCH_SECONDS.to_owned(), labels("api", None))) {
        Some(DebugValue::Histogram(seconds)) => {
            assert_eq!(seconds.len(), 4, "one sample per request");
            assert!(
                seconds.iter().all(|s| s.0 >= FETCH.as_secs_f64()),
                "{seconds:?}"
            );
        }
        other => panic!("{other:?}"),
    }
    // Set when the refreshed token was cached: a full hour ahead.
    match metrics.get(&(TOKEN_EXPIRES_IN.to_owned(), labels("api", None))) {
        Some(DebugValue::Gauge(seconds)) => assert_eq!(seconds.0, HOUR.as_secs_f64()),
        other => panic!("{other:?}"),
    }
    match metrics.get(&(TOKEN_EXPIRES_IN.to_owned(), labels("peer", None))) {
        Some(DebugValue::Gauge(seconds)) => {
            assert!(
                seconds.0 > 0.0 && seconds.0 <= HOUR.as_secs_f64(),
                "{seconds:?}"
            )
        }
        other => panic!("{other:?}"),
    }
}

trait SecretStr {
    fn secret_str_for_test(&self) -> String;
}

impl SecretStr for authmux_core::Token {
    fn secret_str_for_test(&self) -> String {
        use authmux_core::ExposeSecret as _;
        self.secret().expose_secret().to_owned()
    }
}

/// A source that must read its token endpoint from metadata first, as the
/// `oauth2` provider's issuer sources do: each discovery takes the next
/// scripted result.
#[derive(Clone)]
struct Discovering {
    tokens: ScriptedSource,
    discoveries: std::sync::Arc<std::sync::Mutex<std::collections::VecDeque<Result<(), Error>>>>,
    found: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

#[async_trait::async_trait]
impl authmux_core::TokenSource for Discovering {
    fn provider(&self) -> &str {
        "scripted"
    }

    fn identity(&self) -> authmux_core::TokenIdentity {
        self.tokens.identity()
    }

    async fn fetch_token(&self) -> Result<authmux_core::Token, Error> {
        if self.needs_discovery() {
            self.discover().await?;
        }
        self.tokens.fetch_token().await
    }

    async fn discover(&self) -> Result<Option<String>, Error> {
        let next = self.discoveries.lock().expect("script").pop_front();
        next.unwrap_or(Ok(()))?;
        self.found.store(true, std::sync::atomic::Ordering::SeqCst);
        Ok(Some("https://idp.example/token".to_owned()))
    }

    fn needs_discovery(&self) -> bool {
        !self.found.load(std::sync::atomic::Ordering::SeqCst)
    }
}

#[tokio::test(start_paused = true)]
async fn metadata_reads_are_counted_apart_from_token_requests() {
    let recorder = DebuggingRecorder::new();
    let unavailable =
        Error::new(ErrorKind::Discovery, "the metadata is unavailable").with_status(503);
    let source = Discovering {
        tokens: ScriptedSource::tokens(HOUR, FETCH),
        discoveries: std::sync::Arc::new(std::sync::Mutex::new([Err(unavailable)].into())),
        found: std::sync::Arc::default(),
    };
    let cache = metrics::with_local_recorder(&recorder, || {
        ManagedToken::builder(source.clone())
            .name("api")
            .clock(Clock::tokio())
            .build()
    });
    cache
        .get()
        .await
        .expect("a token once the metadata was read");
    assert_eq!(source.tokens.calls(), 1);

    let metrics = snapshot(&recorder);
    let metadata = |outcome: &str| counter(&metrics, METADATA_REQUESTS, "api", Some(outcome));
    assert_eq!(metadata("server_error"), 1);
    assert_eq!(metadata("ok"), 1);
    let requests = |outcome: &str| counter(&metrics, TOKEN_REQUESTS, "api", Some(outcome));
    assert_eq!(requests("ok"), 1, "the one token request sent");
    for outcome in OUTCOMES.into_iter().filter(|outcome| *outcome != "ok") {
        assert_eq!(requests(outcome), 0, "{outcome}: no token request failed");
    }
    match metrics.get(&(TOKEN_FETCH_SECONDS.to_owned(), labels("api", None))) {
        Some(DebugValue::Histogram(seconds)) => assert_eq!(seconds.len(), 1, "{seconds:?}"),
        other => panic!("{other:?}"),
    }
}
