//! Test doubles shared by the integration tests and the benchmarks.
#![allow(dead_code, unreachable_pub)]

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use authmux_core::{Error, ErrorKind, Token, TokenIdentity, TokenSource};

/// One scripted answer of a [`ScriptedSource`].
#[derive(Clone, Debug)]
pub enum Step {
    /// A token that lasts this long.
    Token(Duration),
    /// This error.
    Fail(Error),
    /// A panic inside the source.
    Panic,
    /// A fetch that never completes.
    Hang,
}

/// A token source that answers from a script, after an optional delay, and
/// counts its calls. Tokens are named `token-1`, `token-2`, … by call number.
#[derive(Clone)]
pub struct ScriptedSource {
    inner: Arc<Inner>,
}

struct Inner {
    calls: AtomicUsize,
    script: Mutex<VecDeque<Step>>,
    fallback: Step,
    delay: Duration,
}

impl ScriptedSource {
    /// Answers every call with a token of `lifetime` after `delay`.
    pub fn tokens(lifetime: Duration, delay: Duration) -> Self {
        Self::scripted([], Step::Token(lifetime), delay)
    }

    /// Answers with `script`, then with `fallback` forever.
    pub fn scripted(
        script: impl IntoIterator<Item = Step>,
        fallback: Step,
        delay: Duration,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                calls: AtomicUsize::new(0),
                script: Mutex::new(script.into_iter().collect()),
                fallback,
                delay,
            }),
        }
    }

    /// How many times the source was called.
    pub fn calls(&self) -> usize {
        self.inner.calls.load(Ordering::SeqCst)
    }
}

#[async_trait::async_trait]
impl TokenSource for ScriptedSource {
    fn provider(&self) -> &str {
        "scripted"
    }

    fn identity(&self) -> TokenIdentity {
        TokenIdentity::new("scripted", "memory://")
    }

    async fn fetch_token(&self) -> Result<Token, Error> {
        let call = self.inner.calls.fetch_add(1, Ordering::SeqCst) + 1;
        let step = {
            let mut script = self.inner.script.lock().expect("script lock");
            script
                .pop_front()
                .unwrap_or_else(|| self.inner.fallback.clone())
        };
        if !self.inner.delay.is_zero() {
            tokio::time::sleep(self.inner.delay).await;
        }
        match step {
            Step::Token(lifetime) => Token::builder(format!("token-{call}"))
                .lifetime(lifetime)
                .build(),
            Step::Fail(error) => Err(error),
            Step::Panic => panic!("scripted panic"),
            Step::Hang => std::future::pending().await,
        }
    }
}

/// A transient server error.
pub fn server_error() -> Error {
    Error::new(ErrorKind::Server, "").with_status(503)
}

/// A permanent OAuth refusal.
pub fn refused() -> Error {
    Error::new(ErrorKind::Refused, "")
        .with_status(401)
        .with_oauth(authmux_core::OAuthError {
            code: "invalid_client".into(),
            description: None,
            uri: None,
        })
}

/// How many threads of this process are named `authmux-clock` (Linux; zero
/// where `/proc` cannot be read).
pub fn clock_threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .map(|tasks| {
            tasks
                .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
                .filter(|name| name.trim() == "authmux-clock")
                .count()
        })
        .unwrap_or(0)
}
