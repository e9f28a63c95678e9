//! A whole fetch, retry included, captured at TRACE level: no secret in
//! the logs. Alone in its test binary, because `tracing` caches callsite
//! interest process-wide and a parallel test without a subscriber would hide
//! callsites from this test's thread-local one.

use std::io::Write;
use std::sync::{Arc, Mutex};

use authmux_core::wire::{ClientAuth, HttpClient, RequestSource, TokenRequest};
use authmux_core::{Clock, ExposeSecret, ManagedToken, SecretString};
use httpmock::Method::POST;
use httpmock::MockServer;
use serde_json::json;

const CLIENT_SECRET: &str = "client-secret-c0ffee";
const ACCESS_TOKEN: &str = "access-token-deadbeef";

/// A `tracing` writer that appends everything to one buffer.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log buffer").extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    /// Captures everything this thread logs, at TRACE level, until the
    /// guard is dropped.
    fn start() -> (Self, tracing::subscriber::DefaultGuard) {
        let logs = Self::default();
        let writer = logs.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        (logs, tracing::subscriber::set_default(subscriber))
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().expect("log buffer")).into_owned()
    }
}

fn request(server: &MockServer, auth: ClientAuth) -> TokenRequest {
    TokenRequest::builder(server.url("/oauth/token"))
        .json()
        .param("grant_type", "client_credentials")
        .client_credentials(
            auth,
            "client-1",
            SecretString::from(CLIENT_SECRET.to_owned()),
        )
        .build()
        .expect("valid request")
}

fn assert_clean(what: &str, text: &str) {
    assert!(
        !text.contains(CLIENT_SECRET),
        "client secret in {what}: {text}"
    );
    assert!(
        !text.contains(ACCESS_TOKEN),
        "access token in {what}: {text}"
    );
}

#[tokio::test]
async fn a_full_fetch_with_a_retry_logs_no_secret() {
    let server = MockServer::start_async().await;
    let failing = server
        .mock_async(|when, then| {
            when.method(POST).path("/oauth/token");
            then.status(503).body(format!(
                "upstream rejected client_secret={CLIENT_SECRET}, retry"
            ));
        })
        .await;
    failing.up_to_n_times_async(1).await;
    server
        .mock_async(|when, then| {
            when.method(POST).path("/oauth/token");
            then.status(200).json_body(json!({
                "access_token": ACCESS_TOKEN,
                "token_type": "Bearer",
                "expires_in": 3600,
                "refresh_token": "refresh-token-should-stay-hidden",
            }));
        })
        .await;

    let (logs, _default) = Captured::start();

    for auth in [ClientAuth::Body, ClientAuth::Basic] {
        let source = RequestSource::new(
            "test-idp",
            HttpClient::new().expect("client"),
            request(&server, auth),
        )
        .expect("source");
        let cache = ManagedToken::builder(source.clone())
            .name("api")
            .clock(Clock::tokio())
            .build();
        let token = cache.get().await.expect("token after one retry");
        assert_eq!(token.authorization(), &format!("Bearer {ACCESS_TOKEN}"));

        assert_clean("Debug of the source", &format!("{source:?}"));
        assert_clean("Debug of the cache", &format!("{cache:?}"));
        assert_clean("Debug of the guard", &format!("{token:?}"));
        assert_clean("Debug of the token", &format!("{:?}", token.clone()));
        assert_clean(
            "Debug of the header",
            &format!("{:?}", token.authorization()),
        );
        assert!(!format!("{token:?}").contains("refresh-token-should-stay-hidden"));
    }

    let text = logs.text();
    assert!(
        text.contains("token fetch failed; retrying"),
        "the retry was logged: {text}"
    );
    assert!(text.contains("token cached"), "the success was logged");
    assert!(text.contains("authmux.fetch"), "the fetch span was logged");
    assert_clean("the logs", &text);
    assert!(!text.contains("refresh-token-should-stay-hidden"));
}

#[tokio::test]
async fn a_store_backed_fetch_adoption_and_invalidation_log_no_secret() {
    use authmux_core::SharedTokenStore;
    use authmux_core::store::{EncryptionKey, MemoryStore};
    use base64::Engine as _;

    const STORE_KEY: &str = "c3RvcmUta2V5LWMwZmZlZS1zdG9yZS1rZXktYzBmZmU=";
    let server = MockServer::start_async().await;
    server
        .mock_async(|when, then| {
            when.method(POST).path("/oauth/token");
            then.status(200).json_body(json!({
                "access_token": ACCESS_TOKEN,
                "token_type": "Bearer",
                "expires_in": 3600,
            }));
        })
        .await;
    let (logs, _default) = Captured::start();

    let backend = MemoryStore::new();
    let key = EncryptionKey::from_base64(&SecretString::from(STORE_KEY.to_owned()), "key")
        .expect("32 bytes");
    let process = || {
        let source = RequestSource::new(
            "test-idp",
            HttpClient::new().expect("client"),
            request(&server, ClientAuth::Body),
        )
        .expect("source");
        let store = SharedTokenStore::builder(backend.clone())
            .encryption_key(key.clone())
            .build();
        ManagedToken::builder(source)
            .name("api")
            .clock(Clock::tokio())
            .store(store)
            .build()
    };
    let fetched = process().get().await.expect("fetched").into_token();
    let adopter = process();
    let adopted = adopter.get().await.expect("adopted").into_token();
    assert_eq!(adopted.secret().expose_secret(), ACCESS_TOKEN);
    adopter.invalidate(&adopted);
    // A garbage value: a miss, logged.
    for stored in backend.keys() {
        backend.poke(&stored, b"AMX\x01\x01garbage-value-0123456789".to_vec());
    }
    process().get().await.expect("fetched again");
    tokio::task::yield_now().await;

    let text = logs.text();
    assert!(text.contains("token stored"), "{text}");
    assert!(text.contains("token adopted from the store"), "{text}");
    assert!(text.contains("stored token ignored"), "{text}");
    assert_clean("the logs", &text);
    assert!(!text.contains(STORE_KEY), "the store key in the logs");
    let raw = base64::engine::general_purpose::STANDARD
        .decode(STORE_KEY)
        .expect("base64");
    assert!(
        !text.contains(&*String::from_utf8_lossy(&raw)),
        "the raw store key in the logs"
    );
    assert_clean("Debug of the token", &format!("{fetched:?}"));
    assert_clean("Debug of the cache", &format!("{adopter:?}"));
}

#[tokio::test]
async fn an_external_token_served_after_a_failed_read_is_not_logged() {
    use authmux_core::{ExternalSource, ExternalToken};
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;

    const MARK: &str = "external-token-f00dcafe";
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs()
        + 3600;
    let claims = json!({"iss": "https://issuer.example", "sub": MARK, "exp": exp});
    let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
    let jwt = format!(
        "{}.{payload}.{MARK}",
        URL_SAFE_NO_PAD.encode(r#"{"alg":"none"}"#)
    );
    let dir = tempfile::tempdir().expect("a temp dir");
    let path = dir.path().join("token");
    std::fs::write(&path, &jwt).expect("write");

    let (logs, _default) = Captured::start();

    let reader = ExternalToken::new(ExternalSource::File(path.clone()), "client_assertion");
    assert_eq!(reader.current().await.expect("read").expose_secret(), jwt);
    std::fs::remove_file(&path).expect("rm");
    assert_eq!(reader.current().await.expect("kept").expose_secret(), jwt);

    let text = logs.text();
    assert!(
        text.contains("serving the last good token"),
        "the failed read was logged: {text}"
    );
    assert!(text.contains("client_assertion"), "{text}");
    assert!(!text.contains(MARK), "the token in the logs: {text}");
    assert!(!text.contains(&payload), "the token in the logs: {text}");
}
