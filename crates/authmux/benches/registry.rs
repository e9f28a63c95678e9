//! Building a registry of 10,000 clients: time and memory.
#![allow(missing_docs, clippy::unwrap_used, clippy::print_stderr)]

use std::alloc::System;
use std::hint::black_box;

use authmux::{Config, Registry};
use criterion::{Criterion, criterion_group, criterion_main};
use figment::providers::{Format, Toml};
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};

/// Counts heap allocations, so the registry's own footprint can be read off.
#[global_allocator]
static ALLOCATOR: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

const CLIENTS: usize = 10_000;

/// 10,000 clients across the four providers.
fn config_text() -> String {
    let mut text = String::from("[defaults]\ntimeout = \"10s\"\n");
    for index in 0..CLIENTS {
        let table = match index % 4 {
            0 => format!(
                "provider = \"mention-me\"\nclient_id = \"mm-{index}\"\nclient_secret = \"s-{index}\"\nenvironment = \"demo\"\n"
            ),
            1 => format!(
                "provider = \"360learning\"\nclient_id = \"l-{index}\"\nclient_secret = \"s-{index}\"\nregion = \"eu\"\ncompany_id = \"c-{index}\"\n"
            ),
            2 => format!(
                "provider = \"auth0\"\ndomain = \"tenant-{index}.eu.auth0.com\"\nclient_id = \"a-{index}\"\nclient_secret = \"s-{index}\"\naudience = \"https://api-{index}.example.com\"\n"
            ),
            _ => format!(
                "provider = \"oauth2\"\ntoken_url = \"https://idp-{index}.example.com/token\"\nclient_id = \"o-{index}\"\nclient_secret = \"s-{index}\"\nscopes = [\"read\"]\n"
            ),
        };
        text.push_str(&format!("\n[clients.client-{index}]\n{table}"));
    }
    text
}

fn registry(c: &mut Criterion) {
    let text = config_text();
    let config = Config::from(Toml::string(&text)).unwrap();
    let region = Region::new(ALLOCATOR);
    let built = Registry::from_config(&config).unwrap();
    let change = region.change();
    let live = change
        .bytes_allocated
        .saturating_sub(change.bytes_deallocated);
    assert_eq!(built.len(), CLIENTS);
    eprintln!(
        "registry: {CLIENTS} clients hold {:.1} MiB of heap ({} bytes per client; {} allocations)",
        live as f64 / (1024.0 * 1024.0),
        live / CLIENTS,
        change.allocations
    );
    drop(built);

    let mut group = c.benchmark_group("registry_10k");
    group.sample_size(10);
    group.bench_function("parse_config", |b| {
        b.iter(|| black_box(Config::from(Toml::string(&text)).unwrap().clients.len()))
    });
    group.bench_function("build_registry", |b| {
        b.iter(|| black_box(Registry::from_config(&config).unwrap().len()))
    });
    group.finish();
}

criterion_group!(benches, registry);
criterion_main!(benches);
