//! The config file, environment overrides, validation and the registry.

// figment::Jail fixes the closure's error type; it is only built on failure.
#![allow(clippy::result_large_err)]
// Most tests need every provider; a build with fewer runs the rest.
#![cfg_attr(
    not(all(
        feature = "mention-me",
        feature = "360learning",
        feature = "auth0",
        feature = "oauth2"
    )),
    allow(dead_code, unused_imports)
)]

use std::time::Duration;

use authmux::{Config, ConfigError, Registry};
use figment::Jail;

const ALL_PROVIDERS: &str = r#"
[defaults]
timeout = "20s"
expiry_margin = "30s"
max_attempts = 5

[clients.referrals]
provider = "mention-me"
client_id = "mm-client"
client_secret = "mm-secret-value"
environment = "demo"

[clients.learning]
provider = "360learning"
client_id = "learning-client"
client_secret = "learning-secret-value"
region = "us"
company_id = "company-1"

[clients.api]
provider = "auth0"
domain = "tenant.eu.auth0.com"
client_id = "auth0-client"
client_secret = "auth0-secret-value"
audience = "https://api.example.com"
organization = "org_123"
timeout = "5s"
max_attempts = 1
max_retry_after = "2m"

[clients.okta]
provider = "oauth2"
token_url = "https://example.okta.com/oauth2/default/v1/token"
client_id = "okta-client"
client_secret = "okta-secret-value"
scopes = ["read:things"]
auth_style = "post"
"#;

fn parse(toml: &str) -> Result<Config, ConfigError> {
    Config::from_toml_str(toml)
}

#[cfg(all(
    feature = "mention-me",
    feature = "360learning",
    feature = "auth0",
    feature = "oauth2"
))]
mod all_providers {
    use super::*;

    #[test]
    fn every_provider_builds_without_network_io() {
        let config = parse(ALL_PROVIDERS).expect("valid config");
        let registry = Registry::from_config(&config).expect("valid registry");
        assert_eq!(
            registry.names().collect::<Vec<_>>(),
            ["api", "learning", "okta", "referrals"]
        );
        let urls: Vec<(&str, &str, &str)> = registry
            .clients()
            .map(|client| (client.name(), client.provider(), client.token_url()))
            .collect();
        assert_eq!(
            urls,
            [
                ("api", "auth0", "https://tenant.eu.auth0.com/oauth/token"),
                (
                    "learning",
                    "360learning",
                    "https://app.us.360learning.com/api/v2/oauth2/token"
                ),
                (
                    "okta",
                    "oauth2",
                    "https://example.okta.com/oauth2/default/v1/token"
                ),
                (
                    "referrals",
                    "mention-me",
                    "https://demo.mention-me.com/api/oauth/token"
                ),
            ]
        );
        let learning = registry.client("learning").expect("configured");
        assert_eq!(learning.api_headers()["360-api-version"], "v2.0");
        let debug = format!("{config:?} {registry:?}");
        for secret in [
            "mm-secret-value",
            "learning-secret-value",
            "auth0-secret-value",
            "okta-secret-value",
        ] {
            assert!(!debug.contains(secret), "{debug}");
        }
    }

    #[test]
    fn defaults_apply_and_clients_override_them() {
        let config = parse(ALL_PROVIDERS).expect("valid config");
        assert_eq!(config.defaults.timeout, Duration::from_secs(20));
        let referrals = &config.clients["referrals"].settings;
        assert_eq!(referrals.timeout, Duration::from_secs(20));
        assert_eq!(referrals.expiry_margin, Duration::from_secs(30));
        assert_eq!(referrals.max_attempts, 5);
        assert_eq!(
            referrals.refresh_window,
            Duration::from_secs(60),
            "built-in default"
        );
        let api = &config.clients["api"].settings;
        assert_eq!(api.timeout, Duration::from_secs(5));
        assert_eq!(api.max_attempts, 1);
        assert_eq!(api.expiry_margin, Duration::from_secs(30));
        let registry = Registry::from_config(&config).expect("valid registry");
        let policy = registry.client("api").expect("configured").cache().policy();
        assert_eq!(policy.retry.max_attempts, 1);
        assert_eq!(policy.expiry_margin, Duration::from_secs(30));
        assert_eq!(policy.max_retry_after, Some(Duration::from_secs(120)));
        assert_eq!(
            referrals.max_retry_after,
            Duration::from_secs(30),
            "default"
        );
    }

    #[test]
    fn every_problem_is_reported_at_once_with_its_key_path() {
        let toml = r#"
            [defaults]
            timeout = "soon"

            [clients.x]
            provider = "okta2"

            [clients.api]
            provider = "auth0"
            domain = "tenant.eu.auth0.com"
            client_id = "id"
            client_secret = "auth0-secret-value"

            [clients.mm]
            provider = "mention-me"
            client_id = "id"
            client_secret = "s"
            enviroment = "demo"

            [clients.nameless]
            client_id = "id"

            [clients.learning]
            provider = "360learning"
            client_id = "id"
            client_secret = { env = "AUTHMUX_TEST_UNSET_SECRET_VARIABLE" }
            region = "eu"
            max_attempts = 0
        "#;
        let error = parse(toml).expect_err("invalid");
        let problems = error.problems();
        let has = |needle: &str| problems.iter().any(|problem| problem.starts_with(needle));
        assert!(
            problems.contains(
                &"defaults.timeout: expected a duration such as \"5s\", found string \"soon\""
                    .to_owned()
            ),
            "{problems:#?}"
        );
        assert!(
            problems.contains(
                &"clients.x.provider: unknown provider \"okta2\" \
                  (available: mention-me, 360learning, auth0, oauth2)"
                    .to_owned()
            ),
            "{problems:#?}"
        );
        assert!(has("clients.nameless.provider: required"), "{problems:#?}");
        assert!(
            has("clients.learning.max_attempts: must be at least 1"),
            "{problems:#?}"
        );

        // Problems that only the providers can see come from the registry.
        let toml = toml
            .replace("timeout = \"soon\"", "")
            .replace("provider = \"okta2\"", "provider = \"oauth2\"\ntoken_url = \"http://idp.example.com/token\"\nclient_id = \"id\"\nclient_secret = \"s\"")
            .replace("[clients.nameless]\n            client_id = \"id\"", "")
            .replace("max_attempts = 0", "");
        let config = parse(&toml).expect("parses");
        let error = Registry::from_config(&config).expect_err("invalid");
        let problems = error.problems();
        let has = |needle: &str| problems.iter().any(|problem| problem.starts_with(needle));
        assert!(
            has("clients.api.audience: required unless resource is set"),
            "{problems:#?}"
        );
        assert!(
            problems.contains(
                &"clients.mm.enviroment: unknown key; did you mean environment?".to_owned()
            ),
            "{problems:#?}"
        );
        assert!(
            has(
                "clients.learning.client_secret: environment variable AUTHMUX_TEST_UNSET_SECRET_VARIABLE is not set"
            ),
            "{problems:#?}"
        );
        assert!(has("clients.x.token_url: "), "{problems:#?}");
        assert_eq!(problems.len(), 4, "{problems:#?}");
        assert!(!error.to_string().contains("auth0-secret-value"));
        assert!(error.to_string().starts_with("4 configuration problems: "));
    }

    #[test]
    fn environment_variables_override_the_file_and_stay_text() {
        Jail::expect_with(|jail| {
            jail.create_file("authmux.toml", ALL_PROVIDERS)?;
            jail.set_env("AUTHMUX_CLIENTS__API__CLIENT_SECRET", "00123.50");
            jail.set_env("AUTHMUX_CLIENTS__API__TIMEOUT", "7s");
            jail.set_env("AUTHMUX_DEFAULTS__MAX_ATTEMPTS", "2");
            jail.set_env("AUTHMUX_CLIENTS__OKTA__ALLOW_INSECURE_HTTP", "true");
            jail.set_env(
                "AUTHMUX_CLIENTS__OKTA__TOKEN_URL",
                "http://idp.internal/token",
            );
            let config = Config::load(None).expect("valid config");
            let api = &config.clients["api"];
            assert_eq!(api.settings.timeout, Duration::from_secs(7));
            assert_eq!(config.defaults.max_attempts, 2);
            let auth0: authmux::auth0::Auth0Config = api.provider_config().expect("auth0 config");
            let secret = auth0
                .auth
                .client_secret
                .as_ref()
                .expect("a secret")
                .resolve("client_secret")
                .expect("secret");
            use authmux::ExposeSecret as _;
            assert_eq!(secret.expose_secret(), "00123.50", "kept as text");
            let registry = Registry::from_config(&config).expect("insecure http allowed from env");
            assert_eq!(
                registry.client("okta").expect("configured").token_url(),
                "http://idp.internal/token"
            );
            Ok(())
        });
    }

    #[test]
    fn variables_given_as_data_merge_like_the_environment() {
        let config = Config::from_toml_and_env(
            ALL_PROVIDERS,
            [
                ("AUTHMUX_CLIENTS__API__CLIENT_SECRET__ENV", "API_SECRET"),
                ("authmux_clients__api__timeout", "7s"),
                ("AUTHMUX_DEFAULTS__MAX_ATTEMPTS", "2"),
                ("AUTHMUX_LOG", "debug"),
                ("OTHER_CLIENTS__API__TIMEOUT", "1s"),
            ],
        )
        .expect("valid config");
        let api = &config.clients["api"];
        assert_eq!(api.settings.timeout, Duration::from_secs(7));
        assert_eq!(config.defaults.max_attempts, 2);
        let auth0: authmux::auth0::Auth0Config = api.provider_config().expect("auth0 config");
        assert!(
            matches!(&auth0.auth.client_secret, Some(authmux::ClientSecret::Env { env }) if env == "API_SECRET"),
            "the variable's source replaces the text's inline secret: {:?}",
            auth0.auth.client_secret
        );
        let error = Config::from_toml_and_env("", [("AUTHMUX_DEFAULTS__TIMEOUT", "soon")])
            .expect_err("not a duration");
        assert_eq!(
            error.problems(),
            ["defaults.timeout: expected a duration such as \"5s\", found string \"soon\""]
        );
    }

    #[test]
    fn the_config_file_is_found_by_path_then_variable_then_default() {
        Jail::expect_with(|jail| {
            jail.create_file("authmux.toml", "[clients.default]\nprovider = \"mention-me\"\nclient_id = \"a\"\nclient_secret = \"s\"\nenvironment = \"demo\"\n")?;
            jail.create_file("other.toml", "[clients.from_variable]\nprovider = \"mention-me\"\nclient_id = \"a\"\nclient_secret = \"s\"\nenvironment = \"demo\"\n")?;
            jail.create_file("explicit.toml", "[clients.explicit]\nprovider = \"mention-me\"\nclient_id = \"a\"\nclient_secret = \"s\"\nenvironment = \"demo\"\n")?;
            let names = |config: Config| config.clients.into_keys().collect::<Vec<_>>();
            assert_eq!(
                names(Config::load(None).expect("default file")),
                ["default"]
            );
            jail.set_env("AUTHMUX_CONFIG", "other.toml");
            assert_eq!(
                names(Config::load(None).expect("variable")),
                ["from_variable"]
            );
            let explicit = std::path::Path::new("explicit.toml");
            assert_eq!(
                names(Config::load(Some(explicit)).expect("explicit")),
                ["explicit"]
            );
            let missing =
                Config::load(Some(std::path::Path::new("nope.toml"))).expect_err("missing");
            assert_eq!(missing.to_string(), "nope.toml: no such config file");
            Ok(())
        });
    }

    #[test]
    fn malformed_toml_is_one_clear_problem() {
        let error = parse("[clients.api\nprovider = ").expect_err("malformed");
        assert_eq!(error.problems().len(), 1, "{error}");
        assert!(
            error
                .to_string()
                .starts_with("TOML: TOML syntax error at line 1, column 13: "),
            "{error}"
        );
    }

    #[test]
    fn one_client_can_be_built_while_another_is_broken() {
        let toml = r#"
            [clients.good]
            provider = "mention-me"
            client_id = "a"
            client_secret = "s"
            environment = "demo"

            [clients.broken]
            provider = "mention-me"
            client_id = "b"
            client_secret = { env = "AUTHMUX_TEST_NEVER_SET_VARIABLE" }
            environment = "demo"
        "#;
        let config = parse(toml).expect("parses");
        assert!(
            Registry::from_config(&config).is_err(),
            "the whole registry needs every secret"
        );
        let one = Registry::with_client(&config, "good").expect("the good client alone builds");
        assert_eq!(one.names().collect::<Vec<_>>(), ["good"]);
        let broken = Registry::with_client(&config, "broken").expect_err("still reported");
        assert!(
            broken
                .to_string()
                .starts_with("clients.broken.client_secret: "),
            "{broken}"
        );
        let unknown = Registry::with_client(&config, "nope").expect_err("unknown");
        assert_eq!(
            unknown.to_string(),
            "unknown client \"nope\" (configured: broken, good)"
        );
        // A validator sees every client: each built, or with its problems.
        let each: Vec<(&str, Result<String, Vec<String>>)> = Registry::each_client(&config)
            .map(|(name, built)| {
                let built = built
                    .map(|client| client.token_url().to_owned())
                    .map_err(|error| error.problems().to_vec());
                (name, built)
            })
            .collect();
        assert_eq!(
            each,
            [
                (
                    "broken",
                    Err(vec![
                        "clients.broken.client_secret: environment variable \
                         AUTHMUX_TEST_NEVER_SET_VARIABLE is not set"
                            .to_owned()
                    ])
                ),
                (
                    "good",
                    Ok("https://demo.mention-me.com/api/oauth/token".to_owned())
                ),
            ]
        );
    }

    #[tokio::test]
    async fn the_registry_hands_out_cached_tokens_and_names_unknown_clients() {
        let server = httpmock::MockServer::start_async().await;
        let mock = server
            .mock_async(|when, then| {
                when.method(httpmock::Method::POST).path("/api/oauth/token");
                then.status(200).json_body(serde_json::json!({
                    "access_token": "registry-token", "expires_in": 3600, "token_type": "bearer"
                }));
            })
            .await;
        let toml = format!(
            "[clients.referrals]\nprovider = \"mention-me\"\nclient_id = \"a\"\nclient_secret = \"s\"\nbase_url = \"{}\"\n",
            server.base_url()
        );
        let registry = Registry::from_config(&parse(&toml).expect("valid")).expect("valid");
        let first = registry.token("referrals").await.expect("token").id();
        let second = registry.token("referrals").await.expect("token").id();
        assert_eq!(first, second);
        assert_eq!(mock.calls_async().await, 1);
        let error = registry.token("nope").await.expect_err("unknown");
        assert_eq!(
            error.to_string(),
            "unknown client \"nope\" (configured: referrals)"
        );
    }
}

#[test]
fn an_empty_config_has_no_clients() {
    let config = parse("").expect("empty is valid");
    assert!(config.clients.is_empty());
    assert!(Registry::from_config(&config).expect("valid").is_empty());
}
