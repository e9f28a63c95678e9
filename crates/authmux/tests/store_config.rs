//! The `[store]` table and `store = false`: which clients share tokens,
//! where, and what a mistake in the table says.
#![allow(clippy::result_large_err)]
#![cfg(feature = "mention-me")]

use authmux::{Config, Registry, StoreKind};
use base64::Engine as _;
use figment::Jail;

const KEY_B64: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";

fn clients(store: &str) -> String {
    format!(
        r#"
{store}

[clients.shared]
provider = "mention-me"
client_id = "a"
client_secret = "s"
environment = "demo"

[clients.alone]
provider = "mention-me"
client_id = "b"
client_secret = "s"
environment = "demo"
store = false
"#
    )
}

fn problems(toml: &str) -> Vec<String> {
    match Config::from_toml_str(toml).and_then(|config| Registry::from_config(&config)) {
        Ok(_) => Vec::new(),
        Err(error) => error.problems().to_vec(),
    }
}

#[test]
fn the_library_default_is_no_store() {
    let config = Config::from_toml_str(&clients("")).expect("valid");
    assert_eq!(config.store.kind, None);
    let registry = Registry::from_config(&config).expect("valid");
    assert!(registry.store().is_none());
    assert!(
        registry
            .client("shared")
            .expect("built")
            .cache()
            .store()
            .is_none()
    );
}

#[test]
fn a_file_store_is_shared_by_every_client_but_those_that_opt_out() {
    let dir = std::env::temp_dir().join("authmux-store-config-test");
    let config = Config::from_toml_str(&clients(&format!(
        "[store]\nkind = \"file\"\npath = {:?}\nprefix = \"svc\"\ntimeout = \"50ms\"\nencryption_key = \"{KEY_B64}\"",
        dir.display().to_string()
    )))
    .expect("valid");
    assert!(!config.clients["alone"].store);
    let registry = Registry::from_config(&config).expect("valid");
    let store = registry.store().expect("a store");
    assert_eq!(store.describe(), format!("file {}", dir.display()));
    assert!(store.is_encrypted());
    assert_eq!(store.options().prefix, "svc");
    assert_eq!(
        store.options().timeout,
        std::time::Duration::from_millis(50)
    );
    assert!(
        registry
            .client("shared")
            .expect("built")
            .cache()
            .store()
            .is_some()
    );
    assert!(
        registry
            .client("alone")
            .expect("built")
            .cache()
            .store()
            .is_none()
    );
    assert!(!dir.exists(), "building writes nothing");
}

#[test]
fn store_mistakes_name_their_key() {
    let short_key = base64::engine::general_purpose::STANDARD.encode([1u8; 16]);
    let cases = [
        (
            "[store]\nkid = \"file\"",
            "store.kid: unknown key; did you mean kind?",
        ),
        (
            "[store]\nkind = \"s3\"",
            "store.kind: expected one of \"none\", \"file\", \"redis\", found \"s3\"",
        ),
        (
            "[store]\nkind = \"file\"\nurl = \"redis://x\"",
            "store.url: only for kind = \"redis\" (kind is \"file\")",
        ),
        (
            "[store]\nkind = \"file\"\ntimeout = 5",
            "store.timeout: expected a duration such as \"5s\", found integer 5",
        ),
        (
            &format!("[store]\nkind = \"file\"\nencryption_key = \"{short_key}\""),
            "store.encryption_key: expected 32 bytes in base64, found 16 bytes",
        ),
        (
            "[store]\nkind = \"file\"\nencryption_key = { env = \"AUTHMUX_TEST_NO_SUCH_VARIABLE\" }",
            "store.encryption_key: environment variable AUTHMUX_TEST_NO_SUCH_VARIABLE is not set",
        ),
        (
            &format!(
                "[store]\nkind = \"file\"\nencryption = \"none\"\nencryption_key = \"{KEY_B64}\""
            ),
            "store.encryption: \"none\" contradicts store.encryption_key; remove one",
        ),
    ];
    for (table, expected) in cases {
        let found = problems(&clients(table));
        assert_eq!(found, [expected], "{table}");
    }
    let found = problems(&clients(
        "[clients.x]\nprovider = \"mention-me\"\nstore = \"yes\"",
    ));
    assert!(
        found
            .iter()
            .any(|problem| problem
                == "clients.x.store: expected true or false, found string \"yes\""),
        "{found:?}"
    );
}

#[cfg(feature = "redis")]
#[test]
fn the_redis_store_refuses_to_start_without_a_key_unless_told() {
    let without = problems(&clients(
        "[store]\nkind = \"redis\"\nurl = \"redis://127.0.0.1:1/0\"",
    ));
    assert_eq!(without.len(), 1, "{without:?}");
    assert!(without[0].starts_with("store.encryption_key: required for the Redis store"));
    assert!(without[0].contains("encryption = \"none\""));
    let opted_out = problems(&clients(
        "[store]\nkind = \"redis\"\nurl = \"redis://127.0.0.1:1/0\"\nencryption = \"none\"",
    ));
    assert_eq!(opted_out, Vec::<String>::new());
    let password_apart = problems(&clients(
        "[store]\nkind = \"redis\"\nurl = \"redis://127.0.0.1:1/0\"\nencryption = \"none\"\nusername = \"svc\"\npassword = { env = \"AUTHMUX_TEST_NO_SUCH_PASSWORD\" }",
    ));
    assert_eq!(
        password_apart,
        ["store.password: environment variable AUTHMUX_TEST_NO_SUCH_PASSWORD is not set"]
    );
    let no_url = problems(&clients("[store]\nkind = \"redis\"\nencryption = \"none\""));
    assert!(no_url[0].starts_with("store.url: required"), "{no_url:?}");
}

#[cfg(feature = "redis")]
#[test]
fn a_private_ca_for_rediss_is_read_at_build_and_checked() {
    let dir = std::env::temp_dir().join(format!("authmux-store-ca-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch directory");
    let ca = dir.join("ca.pem");
    std::fs::write(
        &ca,
        "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
    )
    .expect("write");
    let not_pem = dir.join("not.pem");
    std::fs::write(&not_pem, "hello").expect("write");
    let table = |file: &std::path::Path| {
        clients(&format!(
            "[store]\nkind = \"redis\"\nurl = \"rediss://cache:6380/0\"\nencryption = \"none\"\ntls_ca_file = {:?}",
            file.display().to_string()
        ))
    };
    assert_eq!(problems(&table(&ca)), Vec::<String>::new());
    let found = problems(&table(&not_pem));
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(
        found[0].starts_with("store.tls_ca_file: ")
            && found[0].ends_with("holds no PEM certificate"),
        "{found:?}"
    );
    let missing = problems(&table(&dir.join("missing.pem")));
    assert!(
        missing[0].starts_with("store.tls_ca_file: cannot read "),
        "{missing:?}"
    );
    let wrong_kind = problems(&clients(&format!(
        "[store]\nkind = \"file\"\ntls_ca_file = {:?}",
        ca.display().to_string()
    )));
    assert!(
        wrong_kind
            .iter()
            .any(|problem| problem
                == "store.tls_ca_file: only for kind = \"redis\" (kind is \"file\")"),
        "{wrong_kind:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_store_is_configured_from_the_environment_too() {
    Jail::expect_with(|jail| {
        jail.create_file("authmux.toml", &clients(""))?;
        jail.set_env("AUTHMUX_STORE__KIND", "file");
        jail.set_env("AUTHMUX_STORE__TIMEOUT", "75ms");
        jail.set_env("AUTHMUX_STORE__ENCRYPTION_KEY__ENV", "THE_STORE_KEY");
        jail.set_env("THE_STORE_KEY", KEY_B64);
        jail.set_env("AUTHMUX_CLIENTS__SHARED__STORE", "false");
        let config = Config::load(None).expect("valid");
        assert_eq!(config.store.kind, Some(StoreKind::File));
        assert_eq!(
            config.store.timeout,
            Some(std::time::Duration::from_millis(75))
        );
        assert!(!config.clients["shared"].store);
        let store = Registry::from_config(&config).expect("valid");
        assert!(store.store().expect("a store").is_encrypted());
        Ok(())
    });
}

#[test]
fn debug_shows_no_store_key_nor_url_password() {
    let config = Config::from_toml_str(&clients(&format!(
        "[store]\nkind = \"redis\"\nurl = \"redis://user:pa55w0rd@cache:6379/0\"\nencryption_key = \"{KEY_B64}\""
    )))
    .expect("valid");
    let debug = format!("{config:?}");
    assert!(!debug.contains(KEY_B64), "{debug}");
    assert!(!debug.contains("pa55w0rd"), "{debug}");
    assert!(debug.contains("redis://***@cache:6379/0"), "{debug}");
}
