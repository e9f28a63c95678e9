//! The documents at the root of the repository against the code: the
//! example config builds, the README embeds it, and every Rust snippet of
//! the README is one the facade's doctests compile.

// figment::Jail fixes the closure's error type; it is only built on failure.
#![allow(clippy::result_large_err)]

use std::time::Duration;

use authmux::{Config, Registry};
use figment::Jail;

const EXAMPLE: &str = include_str!("../../authmux.example.toml");
const README: &str = include_str!("../../README.md");

#[test]
fn the_example_config_uses_every_option_of_the_real_types() {
    Jail::expect_with(|jail| {
        jail.create_file("360learning-secret", "from-a-file\n")?;
        let example = EXAMPLE.replace("/run/secrets/360learning", "360learning-secret");
        jail.create_file("authmux.toml", &example)?;
        jail.set_env("MENTION_ME_CLIENT_SECRET", "from-the-environment");
        jail.set_env("AUTH0_CLIENT_SECRET", "from-the-environment");
        jail.set_env("EXCHANGER_SECRET", "from-the-environment");
        jail.set_env(
            "TOKEN_STORE_KEY",
            "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
        );
        let config = Config::load(None).expect("the example parses");
        assert_eq!(
            config.defaults,
            authmux::Settings::default(),
            "documented defaults"
        );
        let registry = Registry::from_config(&config).expect("the example builds");
        assert_eq!(
            registry.names().collect::<Vec<_>>(),
            [
                "api",
                "ci",
                "downstream",
                "entra",
                "learning",
                "okta",
                "referrals"
            ]
        );
        assert_eq!(
            config.clients["api"].settings.timeout,
            Duration::from_secs(5)
        );
        let store = registry.store().expect("the example has a store");
        assert!(
            store.describe().starts_with("file "),
            "{}",
            store.describe()
        );
        assert!(store.is_encrypted());
        assert!(!config.clients["api"].store, "store = false");
        assert!(config.clients["okta"].store, "stored by default");
        Ok(())
    });
}

#[test]
fn the_readme_config_reference_is_the_example_file() {
    assert!(
        README.contains(EXAMPLE.trim()),
        "README.md must embed authmux.example.toml verbatim"
    );
}

const FACADE_README: &str = include_str!("../../crates/authmux/README.md");

#[test]
fn every_rust_snippet_of_the_readme_is_compiled_by_the_facade_doctests() {
    let snippets: Vec<&str> = README
        .split("```rust")
        .skip(1)
        .filter_map(|block| block.split_once('\n').map(|(_, rest)| rest))
        .filter_map(|block| block.split("```").next())
        .collect();
    assert!(snippets.len() >= 3, "the README shows its snippets");
    for snippet in snippets {
        assert!(
            FACADE_README.contains(snippet),
            "README.md's snippet is not in crates/authmux/README.md, which doctests compile:\n{snippet}"
        );
    }
}

#[test]
fn every_secretless_config_of_the_readme_builds() {
    let section = README
        .split("## Secretless and delegated identity")
        .nth(1)
        .and_then(|rest| rest.split("\n## ").next())
        .expect("the README has the section");
    let configs: Vec<&str> = section
        .split("```toml\n")
        .skip(1)
        .filter_map(|block| block.split("```").next())
        .collect();
    assert!(configs.len() >= 4, "the section shows its configs");
    Jail::expect_with(|jail| {
        jail.set_env("ORDERS_EXCHANGER_SECRET", "from-the-environment");
        for toml in &configs {
            let config = Config::from_toml_str(toml).expect("a README config parses");
            Registry::from_config(&config).expect("a README config builds");
        }
        Ok(())
    });
}
