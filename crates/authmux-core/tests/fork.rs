//! A forked child does not trust the coarse clock it inherited: the thread
//! that moved it on did not survive the fork.
#![cfg(unix)]
#![allow(unsafe_code)]

mod common;

use std::time::Duration;

use authmux_core::{CachePolicy, ManagedToken};
use common::ScriptedSource;

#[test]
fn a_forked_child_sees_time_pass() {
    // A 2 s token, served until 1 s.
    let source = ScriptedSource::tokens(Duration::from_secs(2), Duration::ZERO);
    let mut policy = CachePolicy::default();
    policy.jitter_fraction = 0.0;
    let cache = ManagedToken::builder(source.clone())
        .name("api")
        .policy(policy)
        .build();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let first = runtime.block_on(cache.get()).expect("token").id();

    // SAFETY: the child only sleeps, reads the cache, runs a fresh runtime
    // and leaves with `_exit`; it never returns into the test harness.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        std::thread::sleep(Duration::from_millis(1_300));
        let code = if cache.cached().is_some() {
            1 // the frozen clock still calls the token fresh
        } else {
            match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map(|runtime| runtime.block_on(cache.get()).map(|token| token.id()))
            {
                Ok(Ok(id)) if id != first => 0,
                Ok(Ok(_)) => 2,
                _ => 3,
            }
        };
        // SAFETY: ends the child without running the parent's exit hooks.
        unsafe { libc::_exit(code) };
    }
    let mut status = 0;
    // SAFETY: waits for the child forked above.
    let waited = unsafe { libc::waitpid(pid, &mut status, 0) };
    assert_eq!(waited, pid);
    assert!(libc::WIFEXITED(status), "the child crashed: {status}");
    match libc::WEXITSTATUS(status) {
        0 => {}
        1 => panic!("the child served a stale token: its clock stood still"),
        2 => panic!("the child was handed the stale token"),
        other => panic!("the child could not fetch: code {other}"),
    }
}
