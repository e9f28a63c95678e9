//! Heap per client: 10,000 clients, each with one token fetched from a
//! local keep-alive server, counted by an instrumented global allocator.
//!
//! Three ways to hold 10,000 tokens, each measured on its own:
//!
//! * `floor`: the bare minimum a cache needs, a [`Token`] parsed from the
//!   same response behind an `ArcSwapOption` behind an `Arc`;
//! * `core`: a [`RequestSource`] per client over one shared [`HttpClient`],
//!   a [`ManagedToken`] over it, and one `get()` each, measured stage by
//!   stage: the source (in its shared handle), the cache around it, the
//!   fetched token;
//! * `registry`: a [`Registry`] of 10,000 configured clients across the four
//!   providers, all pointed at the local server, and one `token()` each.
//!
//! Not a criterion benchmark: the figure is a count of bytes, the same in
//! every run. `MEMORY_CLIENTS` changes the number of clients.
#![allow(missing_docs, clippy::unwrap_used, clippy::print_stdout)]

use std::alloc::System;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use authmux::{Config, Registry};
use authmux_core::wire::{
    ClientAuth, EndpointResponse, HeaderMap, HttpClient, RequestSource, TokenRequest,
};
use authmux_core::{ManagedToken, Scrubber, SecretString, SharedTokenSource, Token};
use figment::providers::{Format, Toml};
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};

#[global_allocator]
static ALLOCATOR: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// Live heap bytes and allocations since a point.
struct Meter(Region<'static, System>);

impl Meter {
    fn start() -> Self {
        Self(Region::new(ALLOCATOR))
    }

    /// (bytes still allocated, allocations still live) since `start`.
    fn live(&self) -> (isize, isize) {
        let change = self.0.change();
        (
            change.bytes_allocated as isize - change.bytes_deallocated as isize,
            change.allocations as isize - change.deallocations as isize,
        )
    }
}

fn report(label: &str, clients: usize, (bytes, allocations): (isize, isize)) {
    println!(
        "memory/{label}: {:>6} bytes per client, {:>5.1} live allocations per client ({:.1} MiB for {clients})",
        bytes / clients as isize,
        allocations as f64 / clients as f64,
        bytes as f64 / (1024.0 * 1024.0),
    );
}

fn floor(clients: usize) {
    let meter = Meter::start();
    let held: Vec<Arc<ArcSwapOption<Token>>> = (0..clients)
        .map(|_| {
            let token = EndpointResponse::new(
                200,
                HeaderMap::new(),
                authmux_testkit::bench::TOKEN_RESPONSE.as_bytes().to_vec(),
            )
            .parse(Duration::from_secs(300), &Scrubber::new())
            .unwrap();
            Arc::new(ArcSwapOption::from_pointee(token))
        })
        .collect();
    let (bytes, allocations) = meter.live();
    let vector = (held.capacity() * size_of::<Arc<ArcSwapOption<Token>>>()) as isize;
    report(
        "floor_token_in_arcswap",
        clients,
        (bytes - vector, allocations - 1),
    );
}

fn core(clients: usize, url: &str) {
    let runtime = authmux_testkit::bench::runtime();
    let http = HttpClient::new().unwrap();
    // Warm the connection pool and the clock, which every client shares.
    let warm = ManagedToken::new(source(&http, url, usize::MAX));
    runtime.block_on(warm.get()).unwrap();

    let meter = Meter::start();
    let mut sources = Vec::with_capacity(clients);
    let mut caches = Vec::with_capacity(clients);
    let vectors = meter.live();
    for index in 0..clients {
        sources.push(SharedTokenSource::from(source(&http, url, index)));
    }
    let after_sources = meter.live();
    for source in sources.drain(..) {
        caches.push(
            ManagedToken::builder(source)
                .name(format!("client-{}", caches.len()))
                .build(),
        );
    }
    let after_caches = meter.live();
    runtime.block_on(async {
        for cache in &caches {
            cache.get().await.unwrap();
        }
    });
    let after_fetch = meter.live();
    let minus = |a: (isize, isize), b: (isize, isize)| (a.0 - b.0, a.1 - b.1);
    report("core_source", clients, minus(after_sources, vectors));
    report("core_cache", clients, minus(after_caches, after_sources));
    report(
        "core_fetched_token",
        clients,
        minus(after_fetch, after_caches),
    );
    report("core_total", clients, minus(after_fetch, vectors));
    drop(caches);
}

/// A source like a provider's: JSON body, the secret in the body, an
/// audience.
fn source(http: &HttpClient, url: &str, index: usize) -> RequestSource {
    let request = TokenRequest::builder(url)
        .json()
        .param("grant_type", "client_credentials")
        .client_credentials(
            ClientAuth::Body,
            format!("client-{index}"),
            SecretString::from(format!("secret-{index}")),
        )
        .param("audience", "https://api.example.com")
        .build()
        .unwrap();
    RequestSource::new("bench", http.clone(), request).unwrap()
}

/// 10,000 clients across the four providers, all answered by `base`.
fn config_text(clients: usize, base: &str) -> String {
    let mut text = String::from("[defaults]\ntimeout = \"10s\"\n");
    for index in 0..clients {
        let table = match index % 4 {
            0 => format!(
                "provider = \"mention-me\"\nclient_id = \"mm-{index}\"\nclient_secret = \"s-{index}\"\nbase_url = \"{base}\"\n"
            ),
            1 => format!(
                "provider = \"360learning\"\nclient_id = \"l-{index}\"\nclient_secret = \"s-{index}\"\nbase_url = \"{base}\"\ncompany_id = \"c-{index}\"\n"
            ),
            2 => format!(
                "provider = \"auth0\"\ndomain = \"{base}\"\nclient_id = \"a-{index}\"\nclient_secret = \"s-{index}\"\naudience = \"https://api-{index}.example.com\"\n"
            ),
            _ => format!(
                "provider = \"oauth2\"\ntoken_url = \"{base}/token\"\nclient_id = \"o-{index}\"\nclient_secret = \"s-{index}\"\nscopes = [\"read\"]\n"
            ),
        };
        text.push_str(&format!("\n[clients.client-{index}]\n{table}"));
    }
    text
}

fn registry(clients: usize, base: &str) {
    let runtime = authmux_testkit::bench::runtime();
    let config = Config::from(Toml::string(&config_text(clients, base))).unwrap();
    // Warm the clock and a connection with a registry of its own.
    let warm =
        Registry::from_config(&Config::from(Toml::string(&config_text(1, base))).unwrap()).unwrap();
    runtime.block_on(warm.token("client-0")).unwrap();

    let meter = Meter::start();
    let built = Registry::from_config(&config).unwrap();
    let after_build = meter.live();
    runtime.block_on(async {
        for client in built.clients() {
            client.token().await.unwrap();
        }
    });
    let after_fetch = meter.live();
    assert_eq!(built.len(), clients);
    report("registry_built", clients, after_build);
    report(
        "registry_fetched_token",
        clients,
        (after_fetch.0 - after_build.0, after_fetch.1 - after_build.1),
    );
    report("registry_total", clients, after_fetch);
    drop(built);
}

fn main() {
    if std::env::args().any(|arg| arg == "--list") {
        println!("memory: benchmark");
        return;
    }
    let clients = std::env::var("MEMORY_CLIENTS")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(10_000);
    let address = authmux_testkit::keep_alive_server(authmux_testkit::bench::TOKEN_RESPONSE);
    let base = format!("http://{address}");
    floor(clients);
    core(clients, &format!("{base}/oauth/token"));
    registry(clients, &base);
}
