//! What an idle process pays for holding cached tokens: CPU time and
//! voluntary context switches (wake-ups) over 10 s, from `getrusage`, with
//! 1 and 100 fresh cached tokens, then with every cache dropped.
//!
//! Not a criterion benchmark: the figure is a rate over a fixed idle
//! period. `IDLE_SECONDS` shortens the period.
#![allow(missing_docs, unsafe_code, clippy::unwrap_used, clippy::print_stdout)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::Duration;

use authmux_core::ManagedToken;
use common::{ScriptedSource, clock_threads};

struct Usage {
    cpu: Duration,
    voluntary_switches: i64,
}

fn usage() -> Usage {
    // SAFETY: `getrusage` fills the zeroed struct it is given.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        assert_eq!(libc::getrusage(libc::RUSAGE_SELF, &mut usage), 0);
        usage
    };
    let time = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
    };
    Usage {
        cpu: time(usage.ru_utime) + time(usage.ru_stime),
        voluntary_switches: usage.ru_nvcsw,
    }
}

/// Idles for `period` on the calling thread and reports what the whole
/// process did meanwhile. The idling thread's own sleep is one switch.
fn idle(label: &str, period: Duration) {
    let before = usage();
    std::thread::sleep(period);
    let after = usage();
    let switches = (after.voluntary_switches - before.voluntary_switches - 1).max(0);
    let cpu = after.cpu.saturating_sub(before.cpu);
    println!(
        "idle/{label}: {:.2} wake-ups/s, CPU {:.4} % of a core ({} µs over {} s), authmux-clock threads: {}",
        switches as f64 / period.as_secs_f64(),
        100.0 * cpu.as_secs_f64() / period.as_secs_f64(),
        cpu.as_micros(),
        period.as_secs(),
        clock_threads()
    );
}

fn main() {
    if std::env::args().any(|arg| arg == "--list") {
        println!("idle: benchmark");
        return;
    }
    let seconds = std::env::var("IDLE_SECONDS")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(10);
    let period = Duration::from_secs(seconds);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    // The floor: the same process and runtime with no cache at all.
    idle("no_cache_yet", period);
    for count in [1, 100] {
        let caches: Vec<ManagedToken> = (0..count)
            .map(|_| {
                ManagedToken::new(ScriptedSource::tokens(
                    Duration::from_secs(3600),
                    Duration::ZERO,
                ))
            })
            .collect();
        for cache in &caches {
            runtime.block_on(cache.get()).unwrap();
        }
        idle(&format!("{count}_cached_tokens"), period);
    }
    // Every cache above is dropped by now.
    std::thread::sleep(Duration::from_millis(100));
    idle("after_every_cache_dropped", period);
}
